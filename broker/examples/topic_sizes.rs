//! Reads a topic from the start and prints, per partition, its messages and their payload sizes:
//! how the demo's limit on the embedded broker was measured (docs/benchmarks.md, "Demo").
//!
//!   cargo run -p whisk-embedded-broker --example topic_sizes -- 127.0.0.1:PORT [events]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(bootstrap) = args.next() else {
        eprintln!("usage: topic_sizes HOST:PORT [TOPIC]");
        return ExitCode::from(2);
    };
    let topic = args.next().unwrap_or_else(|| "events".to_string());
    let consumer: BaseConsumer = match ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "whisk-topic-sizes")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("consumer for {bootstrap}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = consumer.subscribe(&[topic.as_str()]) {
        eprintln!("subscribe {topic}: {e}");
        return ExitCode::FAILURE;
    }
    // partition -> (messages, payload bytes, largest payload)
    let mut sizes: BTreeMap<i32, (u64, u64, usize)> = BTreeMap::new();
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(5) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let len = m.payload().map_or(0, <[u8]>::len);
            let e = sizes.entry(m.partition()).or_default();
            e.0 += 1;
            e.1 += len as u64;
            e.2 = e.2.max(len);
            last = Instant::now();
        }
    }
    println!("| partition | messages | payload bytes | mean | largest |");
    println!("|---|---|---|---|---|");
    for (p, (n, bytes, max)) in &sizes {
        println!(
            "| {p} | {n} | {bytes} | {:.0} | {max} |",
            *bytes as f64 / (*n).max(1) as f64
        );
    }
    ExitCode::SUCCESS
}
