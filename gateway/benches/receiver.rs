//! What a remote-write receiver costs per push, by writes per request: is Prometheus's CPU per
//! SDK push a cost per request (HTTP, decompression, an appender's commit), which larger
//! batches share, or per sample, which they do not?
//!
//! `WHISK_BENCH_CONTAINERS` (2000) groups, each the `orders` action's real SDK push translated
//! and encoded as the gateway does it (`whisk_remote_write::translate` and `GroupWrite`, the
//! grouping key and `push_time_seconds` included), are written to each receiver
//! (`WHISK_BENCH_RECEIVERS`: `prometheus,victoria`, the default): first once to create every
//! series (8 groups a request), then rounds in which every group writes once more, in requests
//! of N groups for each N of `WHISK_BENCH_BATCHES` (`1,8,32,128`), taking turns twice so that
//! a change in the machine's load hits every N alike. Requests are encoded and compressed
//! before a round and sent from `WHISK_BENCH_CONCURRENCY` (4) threads; the receiver's CPU per
//! push is its utime+stime over the round ÷ groups. The receiver runs pinned to one CPU and
//! this process to the other (`WHISK_BENCH_PIN`, as `--bench gateway`). Prints a table.
//!
//! ```text
//! cargo build -p whisk-actions
//! GOMAXPROCS=1 cargo bench -p whisk-gateway --profile dev --bench receiver
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use whisk_remote_write::{GroupWrite, Label, translate};
use whisk_testkit::{Prometheus, QueryApi, VictoriaMetrics};

mod common;
use common::{CLIENT_CPU, STORE_CPU, clock_ticks, cpu_ticks, env_usize, orders_body, pin, pinning};

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// One group's write: its series under its grouping key, one sample each at `ts`.
fn group_write(group: usize, series: &[Vec<Label>], values: &[f64], ts: i64) -> Vec<u8> {
    let grouping = [
        Label::new("job", "openwhisk_actions"),
        Label::new(
            "instance",
            format!(
                "{:032x}",
                (group as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ),
        ),
        Label::new("namespace", format!("ns{}", group % 100)),
        Label::new("action", "orders"),
    ];
    let mut write = GroupWrite::new(&grouping, ts);
    for (labels, value) in series.iter().zip(values) {
        write.series(labels, *value + (ts % 1000) as f64);
    }
    write.series(
        &[Label::new("__name__", "push_time_seconds")],
        ts as f64 / 1000.0,
    );
    write.into_raw()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What one round cost.
struct Round {
    batch: usize,
    cpu_us_per_push: f64,
    pushes_per_s: f64,
    request_p50_ms: f64,
    bytes_per_push: f64,
    failed: usize,
    load: f64,
}

struct Receiver {
    name: &'static str,
    url: String,
    pid: u32,
}

fn round(
    receiver: &Receiver,
    groups: usize,
    batch: usize,
    series: &[Vec<Label>],
    values: &[f64],
    concurrency: usize,
) -> Round {
    let ts = now_ms();
    let bodies: Vec<Vec<u8>> = (0..groups)
        .collect::<Vec<_>>()
        .chunks(batch)
        .map(|chunk| {
            let mut raw = Vec::new();
            for g in chunk {
                raw.extend(group_write(*g, series, values, ts));
            }
            whisk_remote_write::compress(&raw)
        })
        .collect();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let load = common_load();
    let before = cpu_ticks(receiver.pid);
    let started = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (bodies, next, failed) = (bodies.clone(), next.clone(), failed.clone());
            let url = receiver.url.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(60)))
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut took = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    let t = Instant::now();
                    let mut request = agent.post(&url);
                    for (name, value) in whisk_remote_write::HEADERS {
                        request = request.header(name, value);
                    }
                    let ok = request
                        .send(&body[..])
                        .is_ok_and(|a| a.status().is_success());
                    if ok {
                        took.push(t.elapsed());
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                took
            })
        })
        .collect();
    let mut took: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("sender"))
        .collect();
    let secs = started.elapsed().as_secs_f64();
    let after = cpu_ticks(receiver.pid);
    took.sort_unstable();
    let p50 = took
        .get(took.len() / 2)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    Round {
        batch,
        cpu_us_per_push: (after - before) as f64 / clock_ticks() * 1e6 / groups as f64,
        pushes_per_s: groups as f64 / secs,
        request_p50_ms: p50,
        bytes_per_push: bytes as f64 / groups as f64,
        failed: failed.load(Ordering::Relaxed),
        load,
    }
}

fn common_load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn main() {
    let groups = env_usize("WHISK_BENCH_CONTAINERS", 2000);
    let concurrency = env_usize("WHISK_BENCH_CONCURRENCY", 4);
    let batches: Vec<usize> = env_list("WHISK_BENCH_BATCHES", "1,8,32,128")
        .iter()
        .map(|b| b.parse().expect("WHISK_BENCH_BATCHES: numbers"))
        .collect();
    let receivers = env_list("WHISK_BENCH_RECEIVERS", "prometheus,victoria");
    let body = orders_body();
    let translated = translate(body.as_bytes()).expect("the SDK's body translates");
    println!(
        "remote-write receiver cost by writes per request: {groups} groups of {} series, {concurrency} sending threads",
        translated.series.len() + 1
    );
    println!("{}", common::cpu_settings());
    println!("{}", common::pinning_note());
    if pinning() {
        pin(std::process::id(), CLIENT_CPU);
    }
    println!();
    println!(
        "| receiver | writes a request | receiver CPU per push | pushes/s | request p50 | bytes a push (snappy) | failed | load 1m |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for name in &receivers {
        let (_keep, receiver): (Box<dyn std::any::Any>, Receiver) = match name.as_str() {
            "prometheus" => {
                let mut p = Prometheus::start_receiver(&[]).expect("Prometheus receiver");
                let r = Receiver {
                    name: "Prometheus",
                    url: p.write_url(),
                    pid: p.process().pid(),
                };
                (Box::new(p), r)
            }
            "victoria" => {
                let mut v = VictoriaMetrics::start().expect("VictoriaMetrics");
                let r = Receiver {
                    name: "VictoriaMetrics",
                    url: v.write_url(),
                    pid: v.process().pid(),
                };
                (Box::new(v), r)
            }
            other => panic!("WHISK_BENCH_RECEIVERS: unknown receiver {other:?}"),
        };
        if pinning() {
            pin(receiver.pid, STORE_CPU);
        }
        let created = round(
            &receiver,
            groups,
            8,
            &translated.series,
            &translated.values,
            concurrency,
        );
        eprintln!(
            "   {}: series created ({:.0} µs of its CPU per push, {} failed)",
            receiver.name, created.cpu_us_per_push, created.failed
        );
        for _turn in 0..2 {
            for &batch in &batches {
                std::thread::sleep(Duration::from_millis(5));
                let r = round(
                    &receiver,
                    groups,
                    batch,
                    &translated.series,
                    &translated.values,
                    concurrency,
                );
                println!(
                    "| {} | {} | {:.0} µs | {:.0} | {:.2} ms | {:.0} | {} | {:.2} |",
                    receiver.name,
                    r.batch,
                    r.cpu_us_per_push,
                    r.pushes_per_s,
                    r.request_p50_ms,
                    r.bytes_per_push,
                    r.failed,
                    r.load
                );
            }
        }
    }
}
