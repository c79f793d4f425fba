//! Collector benchmarks; prints a table. Run with `cargo bench -p whisk-collector`.
//!
//! 1. parse + aggregate in memory, one thread, on a realistic mix;
//! 2. end to end from a local tansu broker: the collector binary against a minimal raw
//!    librdkafka consumer that only counts messages, same topic, same run; CPU per event from
//!    the process's utime + stime (/proc/<pid>/stat, what getrusage reports);
//! 3. RSS of the collector process holding 10 000 distinct actions.
//!
//! `WHISK_BENCH_EVENTS` sets the end-to-end message count (default 300 000).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use whisk_collector::{Aggregator, parse};
use whisk_testkit::Tansu;

const KINDS: [&str; 4] = ["nodejs:20", "python:3.11", "rust:1.34", "blackbox"];

/// A current-schema event like the ones invokers send (about 400 bytes), or 1 in 21 a Metric.
fn event(i: usize, actions: usize) -> String {
    let a = i.wrapping_mul(2_654_435_761) % actions;
    let ns = format!("ns{}", a % 50);
    if i % 21 == 20 {
        return format!(
            r#"{{"body":{{"metricName":"ConcurrentInvocations","metricValue":{}}},"eventType":"Metric","source":"controller{}","subject":"{ns}","timestamp":{},"userId":"23bc46b1-71f6-4ed5-8c54-816aa4f8c502","namespace":"{ns}"}}"#,
            i % 30,
            i % 2,
            1_700_000_000_000u64 + i as u64
        );
    }
    format!(
        r#"{{"body":{{"activationId":"841e3f99f40346429e3f99f4{:08x}","causedBy":"sequence","conductor":false,"duration":{},"initTime":{},"kind":"{}","memory":256,"name":"{ns}/pkg{}/action{a}","size":{},"statusCode":{},"waitTime":{}}},"eventType":"Activation","namespace":"{ns}","source":"invoker{}","subject":"{ns}","timestamp":{},"userId":"23bc46b1-71f6-4ed5-8c54-816aa4f8c502"}}"#,
        i,
        (i * 37) % 5000,
        if i % 10 == 0 { 400 + i % 300 } else { 0 },
        KINDS[a % 4],
        a % 7,
        (i * 13) % 20_000,
        if i % 50 == 0 { 2 } else { 0 },
        (i * 7) % 900,
        i % 4,
        1_700_000_000_000u64 + i as u64
    )
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

fn status_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn in_memory(rows: &mut Vec<[String; 3]>) {
    let msgs: Vec<String> = (0..200_000).map(|i| event(i, 500)).collect();
    let bytes: usize = msgs.iter().map(String::len).sum();
    let mut agg = Aggregator::new(10_000);
    // warm up
    for m in &msgs {
        let _ = agg.apply(&parse(m.as_bytes()).unwrap());
    }
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        for m in &msgs {
            if let Ok(e) = parse(black_box(m.as_bytes())) {
                black_box(agg.apply(&e));
            }
        }
        n += msgs.len() as u64;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    rows.push([
        "parse + aggregate, in memory, 1 thread (500 actions)".into(),
        format!("{:.2} M events/s ({:.0} ns/event)", rate / 1e6, 1e9 / rate),
        format!("≥ 1 M events/s; avg {} B/event", bytes / msgs.len()),
    ]);

    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        for m in &msgs {
            black_box(parse(black_box(m.as_bytes())).is_ok());
        }
        n += msgs.len() as u64;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    rows.push([
        "parse only, 1 thread".into(),
        format!("{:.2} M events/s", rate / 1e6),
        "–".into(),
    ]);

    let mut agg = Aggregator::new(10_000);
    for i in 0..30_000 {
        let _ = agg.apply(&parse(event(i, 10_000).as_bytes()).unwrap());
    }
    let start = Instant::now();
    let text = agg.render_to_string();
    let took = start.elapsed();
    rows.push([
        "render 10 000 actions (text exposition)".into(),
        format!(
            "{:.1} ms, {:.1} MB",
            took.as_secs_f64() * 1e3,
            text.len() as f64 / 1e6
        ),
        "–".into(),
    ]);
}

fn produce(bootstrap: &str, topic: &str, n: usize, actions: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .unwrap();
    for i in 0..n {
        let payload = event(i, actions);
        loop {
            match producer.send(
                BaseRecord::<(), str>::to(topic)
                    .partition(0)
                    .payload(&payload),
            ) {
                Ok(()) => break,
                Err((_, _)) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
}

/// Minimal raw consumer: assign partition 0 from the beginning, count messages.
fn raw_consume(bootstrap: &str, topic: &str, n: usize) -> (f64, f64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-raw")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let cpu0 = cpu_seconds(std::process::id());
    let mut count = 0;
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while count < n && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(Instant::now);
            black_box(m.payload());
            count += 1;
        }
    }
    let secs = first.map_or(f64::NAN, |f| f.elapsed().as_secs_f64());
    let cpu = cpu_seconds(std::process::id()) - cpu0;
    assert_eq!(count, n, "raw consumer read {count} of {n}");
    (count as f64 / secs, cpu / n as f64)
}

/// GET over HTTP/1.0 without a body size limit (the testkit's client caps bodies at 10 MB).
fn get_large(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        eprintln!("GET {path}: {e} after {} bytes", raw.len());
    }
    let text = String::from_utf8_lossy(&raw);
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Extra collector flags from `WHISK_BENCH_COLLECTOR_ARGS` (whitespace-separated).
fn extra_args() -> Vec<String> {
    std::env::var("WHISK_BENCH_COLLECTOR_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Offset committed by `group` on partition 0 (cheap to ask, unlike a large /metrics).
fn committed(bootstrap: &str, group: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    match consumer.committed_offsets(tpl, Duration::from_secs(5)) {
        Ok(t) => match t.find_partition(topic, 0).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => 0,
        },
        Err(_) => 0,
    }
}

/// CPU seconds of the threads of `pid` whose name does not start with `skip` (the HTTP/tokio
/// threads that render scrapes), and of the whole process.
fn cpu_split(pid: u32, skip: &str) -> (f64, f64) {
    let mut consume = 0.0;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.starts_with(skip) {
                continue;
            }
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            let f: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
                + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            consume += ticks / 100.0;
        }
    }
    (consume, cpu_seconds(pid))
}

/// Runs the collector binary on the topic until it has applied `n` events.
/// Returns (events/s from the first to the last event, CPU s/event over the whole process,
/// the process's id while still running).
fn collector_consume(bootstrap: &str, group: &str, n: usize) -> (f64, (f64, f64), Proc, u16) {
    let port = whisk_testkit::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_whisk-collector"))
        .args([
            "--brokers",
            bootstrap,
            "--group-id",
            group,
            "--log-level",
            "warn",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let series = r#"whisk_collector_events_total{type="activation"}"#;
    let series_m = r#"whisk_collector_events_total{type="metric"}"#;
    let count = || {
        let body = whisk_testkit::http_get(&url).unwrap_or_default();
        metric(&body, series).unwrap_or(0.0) + metric(&body, series_m).unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut first = None;
    let mut last = 0.0;
    while Instant::now() < deadline {
        last = count();
        if last > 0.0 && first.is_none() {
            first = Some((Instant::now(), last));
        }
        if last as usize >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(last as usize, n, "collector applied {last} of {n}");
    let (t0, c0) = first.unwrap();
    let rate = (n as f64 - c0) / t0.elapsed().as_secs_f64();
    let (consume, total) = cpu_split(proc.0.id(), "whisk-collector");
    (rate, (consume / n as f64, total / n as f64), proc, port)
}

fn end_to_end(rows: &mut Vec<[String; 3]>) {
    let n: usize = std::env::var("WHISK_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let tansu = Tansu::start().unwrap();
    tansu.create_topic("events", 1).unwrap();
    let start = Instant::now();
    produce(&tansu.bootstrap(), "events", n, 100);
    eprintln!(
        "produced {n} events in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    let (raw_rate, raw_cpu) = raw_consume(&tansu.bootstrap(), "events", n);
    let (rate, cpu, proc, _) = collector_consume(&tansu.bootstrap(), "bench-e2e", n);
    let rss = status_kb(proc.0.id(), "VmRSS:");
    drop(proc);
    // Raw again, after the collector, to see the broker's variance within the run.
    let (raw_rate2, _) = raw_consume(&tansu.bootstrap(), "events", n);
    let raw_best = raw_rate.max(raw_rate2);
    rows.push([
        format!("raw librdkafka consumer, {n} msgs (2 runs)"),
        format!(
            "{:.0} / {:.0} msg/s, {:.2} µs CPU/msg",
            raw_rate,
            raw_rate2,
            raw_cpu * 1e6
        ),
        "baseline".into(),
    ]);
    rows.push([
        "collector end to end (group, parse, aggregate, offsets)".into(),
        format!("{:.0} events/s = {:.2}× raw (best)", rate, rate / raw_best),
        "≥ 0.9× raw".into(),
    ]);
    rows.push([
        "collector CPU per event (whole process, incl. librdkafka)".into(),
        format!("{:.2} µs consumer + librdkafka threads; {:.2} µs whole process incl. /metrics scrapes every 200 ms", cpu.0 * 1e6, cpu.1 * 1e6),
        "≤ 3 µs".into(),
    ]);
    rows.push([
        "collector RSS after the run (100 actions)".into(),
        format!("{:.1} MB", rss as f64 / 1024.0),
        "–".into(),
    ]);
}

fn rss_10k(rows: &mut Vec<[String; 3]>) {
    let tansu = Tansu::start().unwrap();
    tansu.create_topic("events", 1).unwrap();
    // Every one of 10 000 actions gets activations (i*2654435761 mod 10000 visits them all).
    let n = 60_000;
    produce(&tansu.bootstrap(), "events", n, 10_000);
    let port = whisk_testkit::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_whisk-collector"))
        .args([
            "--brokers",
            &tansu.bootstrap(),
            "--group-id",
            "bench-rss",
            "--log-level",
            "warn",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(300);
    while committed(&tansu.bootstrap(), "bench-rss", "events") < n as i64
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "committed {} of {n}",
        committed(&tansu.bootstrap(), "bench-rss", "events")
    );
    let rss_before = status_kb(proc.0.id(), "VmRSS:");
    let anon_before = status_kb(proc.0.id(), "RssAnon:");
    let file_before = status_kb(proc.0.id(), "RssFile:");
    let scrape = Instant::now();
    let pid = proc.0.id();
    let body = get_large(port, "/metrics");
    let live = metric(&body, "whisk_collector_live_series").unwrap_or(0.0);
    let distinct = body
        .lines()
        .filter(|l| l.starts_with("openwhisk_action_memory{"))
        .count();
    let scrape_secs = scrape.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let rss = status_kb(pid, "VmRSS:");
    let hwm = status_kb(pid, "VmHWM:");
    rows.push([
        format!("collector RSS, {distinct} distinct actions ({live} series), all consumed"),
        format!(
            "{:.1} MB before any scrape (anon {:.1}, file {:.1})",
            rss_before as f64 / 1024.0,
            anon_before as f64 / 1024.0,
            file_before as f64 / 1024.0
        ),
        "≤ 25 MB".into(),
    ]);
    rows.push([
        "same, after one /metrics scrape".into(),
        format!(
            "{:.1} MB now, {:.1} MB peak; scrape of {:.1} MB took {:.2} s",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0,
            body.len() as f64 / 1e6,
            scrape_secs
        ),
        "–".into(),
    ]);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run only when benched.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let only = std::env::var("WHISK_BENCH_ONLY").unwrap_or_default();
    let mut rows = Vec::new();
    if only.is_empty() || only == "memory" {
        in_memory(&mut rows);
        eprintln!("{rows:?}");
    }
    if only.is_empty() || only == "e2e" {
        end_to_end(&mut rows);
        eprintln!("{rows:?}");
    }
    if only.is_empty() || only == "rss" {
        rss_10k(&mut rows);
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("\nwhisk-collector benchmarks ({cpus} cores, tansu memory storage)\n");
    println!("| measurement | result | target |");
    println!("|---|---|---|");
    for [a, b, c] in rows {
        println!("| {a} | {b} | {c} |");
    }
}
