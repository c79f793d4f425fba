//! `whisk-embedded-broker`: librdkafka's mock Kafka cluster on loopback, with the topic the demo
//! needs, until SIGINT/SIGTERM. See the crate guide (lib.rs).
// Product code: no function over 100 lines (clippy.toml); tests and benches are exempt.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::Parser;
use whisk_embedded_broker::{
    EmbeddedBroker, PARTITION_MAX_BYTES, PARTITION_MAX_MESSAGE_SETS, PartitionState,
};

/// An embedded Kafka-protocol broker for the demo: librdkafka's mock cluster on 127.0.0.1.
///
/// Creates the topic, prints its bootstrap address on stdout (and into --address-file), then
/// runs until SIGINT or SIGTERM. Everything is in memory; each partition keeps at most 5 MiB or
/// 100 000 message sets, dropping the oldest: the broker checks the watched group's committed
/// offsets every --check-interval and reports, on stderr, messages dropped before the group
/// read them. Not a production broker.
#[derive(Debug, Parser)]
#[command(name = "whisk-embedded-broker", version)]
struct Args {
    /// Topic to create.
    #[arg(long, default_value = "events")]
    topic: String,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(i32).range(1..=64))]
    partitions: i32,
    /// Brokers in the mock cluster.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=8))]
    brokers: i32,
    /// Consumer group whose committed offsets are checked against what the mock dropped.
    #[arg(long, default_value = "whisk-collector")]
    group: String,
    /// Seconds between two checks.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    check_interval: u64,
    /// Also write the bootstrap address (one line) into this file, once the topic exists.
    #[arg(long)]
    address_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("whisk-embedded-broker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<ExitCode, String> {
    let broker = EmbeddedBroker::start(args.brokers, &args.topic, args.partitions)
        .map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    if let Some(path) = &args.address_file {
        write_address(path, broker.bootstrap())
            .map_err(|e| format!("--address-file {}: {e}", path.display()))?;
    }
    println!("{}", broker.bootstrap());
    let _ = std::io::stdout().flush();
    eprintln!(
        "whisk-embedded-broker: {} (librdkafka mock, {} broker(s)), topic {} with {} partitions; \
         keeps at most {} MiB or {} message sets per partition, in memory",
        broker.bootstrap(),
        args.brokers,
        broker.topic(),
        args.partitions,
        PARTITION_MAX_BYTES / (1024 * 1024),
        PARTITION_MAX_MESSAGE_SETS
    );
    let checker = broker.checker(&args.group).map_err(|e| e.to_string())?;
    let mut reported_lost = 0;
    let mut last = Vec::new();
    let interval = Duration::from_secs(args.check_interval);
    while stop_rx.recv_timeout(interval) == Err(mpsc::RecvTimeoutError::Timeout) {
        match broker.check(&checker) {
            Ok(states) => {
                reported_lost = report_losses(&args.group, &states, reported_lost);
                last = states;
            }
            Err(e) => eprintln!("whisk-embedded-broker: {e}"),
        }
    }
    if let Ok(states) = broker.check(&checker) {
        last = states;
    }
    eprintln!(
        "whisk-embedded-broker: stopping; {}",
        summary(&args.group, &last)
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints a warning when more messages were lost than already reported; returns the new total.
fn report_losses(group: &str, states: &[PartitionState], reported: i64) -> i64 {
    let lost: i64 = states.iter().map(PartitionState::lost).sum();
    if lost > reported {
        eprintln!(
            "whisk-embedded-broker: WARNING: the mock dropped {lost} message(s) before group \
             {group} read them (it keeps 5 MiB or 100 000 message sets per partition): lower \
             the load or use a real broker; {}",
            summary(group, states)
        );
    }
    lost.max(reported)
}

fn summary(group: &str, states: &[PartitionState]) -> String {
    let parts: Vec<String> = states
        .iter()
        .map(|s| {
            format!(
                "p{} offsets {}..{} {group} at {}",
                s.partition,
                s.low,
                s.high,
                s.committed.map_or("-".to_string(), |c| c.to_string())
            )
        })
        .collect();
    parts.join(", ")
}

fn write_address(path: &std::path::Path, address: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{address}\n"))?;
    std::fs::rename(&tmp, path)
}
