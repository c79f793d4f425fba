//! Collector benchmarks; prints a table. Run with `cargo bench -p whisk-collector`.
//!
//! 1. parse + aggregate in memory, one thread, on a realistic mix; at 10 000 actions with and
//!    without activation ids (exemplars), and the render of 10 000 actions in text format and
//!    in OpenMetrics with exemplars;
//! 2. end to end from a local tansu broker: the collector binary against a minimal raw
//!    librdkafka consumer that only counts messages, same topic, same run; CPU per event from
//!    the process's utime + stime (/proc/<pid>/stat, what getrusage reports); then CPU per event
//!    at 10 000 actions with and without activation ids (`WHISK_BENCH_EXEMPLAR_EVENTS`, default
//!    100 000);
//! 3. RSS of the collector process holding 10 000 distinct actions and pushing them to a real
//!    Pushgateway: steady, and the peak during a `/metrics` scrape, a platform push and both;
//!    with exemplars (the events carry activation ids) and without (the same events without
//!    ids); then a real Prometheus (exemplar storage on) scraping the collector with the
//!    shipped scrape config: the series and exemplars the exemplar copy costs it;
//! 4. a janitor round over 10 000 SDK groups (each the SDK's realistic push body, ~78 series) on
//!    one real Pushgateway and over three (consistency check off): round time, CPU of the round
//!    here and in the Pushgateways, and extra RSS during the round, beside the old way (the
//!    whole listing parsed into a `serde_json::Value`), in this process; then the same shards
//!    scraped by a real Prometheus and the round from it (`--prometheus-url`): nothing, about
//!    half and all of the groups stale, with the query time and Prometheus's CPU.
//!
//! `WHISK_BENCH_ONLY=memory|e2e|rss|janitor` runs one part (`instructions`: a fixed in-memory
//! run for callgrind, see [`instructions`]); `WHISK_BENCH_GROUPS` sets the
//! janitor's group count (default 10 000), `WHISK_BENCH_SHARDS` the Pushgateway counts it is
//! measured with (default `1,3`).
//! `WHISK_BENCH_EVENTS` sets the end-to-end message count (default 300 000).
//! `WHISK_BENCH_COLLECTOR_EXE` runs another build of the collector binary in parts 2 and 3
//! (e.g. the static musl build the image ships) instead of this workspace's release build.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use whisk_collector::{Aggregator, Exposition, parse};
use whisk_testkit::Tansu;

/// The collector binary run in parts 2 and 3: `WHISK_BENCH_COLLECTOR_EXE`, else this build's.
fn collector_exe() -> std::ffi::OsString {
    std::env::var_os("WHISK_BENCH_COLLECTOR_EXE")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_whisk-collector").into())
}

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

/// `event(i, actions)` without its `activationId` (so without exemplars), else unchanged.
fn event_without_id(i: usize, actions: usize) -> String {
    let e = event(i, actions);
    match e.find(r#""activationId":""#) {
        Some(start) => {
            let end = start + e[start..].find(r#"","#).unwrap() + 2;
            format!("{}{}", &e[..start], &e[end..])
        }
        None => e,
    }
}

/// ns per event of parse + aggregate over `msgs`, on a warmed-up aggregate, for ~2 s.
fn ns_per_event(msgs: &[String]) -> f64 {
    let mut agg = Aggregator::new(10_000);
    for m in msgs {
        let _ = agg.apply(&parse(m.as_bytes()).unwrap());
    }
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        for m in msgs {
            if let Ok(e) = parse(black_box(m.as_bytes())) {
                black_box(agg.apply(&e));
            }
        }
        n += msgs.len() as u64;
    }
    start.elapsed().as_secs_f64() * 1e9 / n as f64
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// CPU seconds this thread has run (`/proc/thread-self/schedstat`): the in-memory rates per
/// core, which the machine's load moves far less than wall time.
fn thread_cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns: f64 = s
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    ns / 1e9
}

fn status_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `name` from the environment as a count, else `default`.
fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
    let (start, cpu0) = (Instant::now(), thread_cpu_s());
    while start.elapsed() < Duration::from_secs(3) {
        for m in &msgs {
            if let Ok(e) = parse(black_box(m.as_bytes())) {
                black_box(agg.apply(&e));
            }
        }
        n += msgs.len() as u64;
    }
    let (rate, cpu) = (
        n as f64 / start.elapsed().as_secs_f64(),
        n as f64 / (thread_cpu_s() - cpu0),
    );
    rows.push([
        "parse + aggregate, in memory, 1 thread (500 actions): per CPU second / wall".into(),
        format!(
            "{:.2} M events/s ({:.0} ns/event) / {:.2} M events/s",
            cpu / 1e6,
            1e9 / cpu,
            rate / 1e6
        ),
        format!(
            "≥ 1.2 M events/s per core; avg {} B/event",
            bytes / msgs.len()
        ),
    ]);

    let mut n = 0u64;
    let (start, cpu0) = (Instant::now(), thread_cpu_s());
    while start.elapsed() < Duration::from_secs(2) {
        for m in &msgs {
            black_box(parse(black_box(m.as_bytes())).is_ok());
        }
        n += msgs.len() as u64;
    }
    let cpu = n as f64 / (thread_cpu_s() - cpu0);
    rows.push([
        "parse only, 1 thread, per CPU second".into(),
        format!("{:.2} M events/s", cpu / 1e6),
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
    drop(text);
    let mut om = String::with_capacity(64 << 20);
    let start = Instant::now();
    agg.render_as(Exposition::OpenMetrics, &mut om);
    let took = start.elapsed();
    rows.push([
        format!(
            "render 10 000 actions (OpenMetrics, {} bucket lines with an exemplar)",
            om.lines().filter(|l| l.contains(" # {")).count()
        ),
        format!(
            "{:.1} ms, {:.1} MB",
            took.as_secs_f64() * 1e3,
            om.len() as f64 / 1e6
        ),
        "–".into(),
    ]);
    drop(om);
    let mut without = Aggregator::new(10_000);
    for i in 0..30_000 {
        let _ = without.apply(&parse(event_without_id(i, 10_000).as_bytes()).unwrap());
    }
    let start = Instant::now();
    let text = without.render_to_string();
    rows.push([
        "render 10 000 actions (text exposition), events without activation ids".into(),
        format!(
            "{:.1} ms, {:.1} MB",
            start.elapsed().as_secs_f64() * 1e3,
            text.len() as f64 / 1e6
        ),
        "–".into(),
    ]);

    let with_ids: Vec<String> = (0..100_000).map(|i| event(i, 10_000)).collect();
    let without_ids: Vec<String> = (0..100_000).map(|i| event_without_id(i, 10_000)).collect();
    let (a, b) = (ns_per_event(&with_ids), ns_per_event(&without_ids));
    rows.push([
        "parse + aggregate, in memory, 1 thread, 10 000 actions: with activation ids (exemplars) / without".into(),
        format!("{a:.0} ns/event / {b:.0} ns/event ({:+.0} ns)", a - b),
        "–".into(),
    ]);
}

/// `WHISK_BENCH_ONLY=instructions`: the in-memory events of [`in_memory`] (500 actions)
/// parsed and applied once to warm the aggregate, then `WHISK_BENCH_EVENTS` (default 100 000)
/// more in [`instr_parse_and_apply`] and again in [`instr_parse_only`], each message with
/// its own clock read as the consumer does. Meant for
/// `valgrind --tool=callgrind --toggle-collect='*instr_parse_and_apply*'`: instructions per
/// event are then the same whatever else runs on the machine.
fn instructions() {
    let n: usize = env_usize("WHISK_BENCH_EVENTS", 100_000);
    let msgs: Vec<String> = (0..n).map(|i| event(i, 500)).collect();
    let mut agg = Aggregator::new(10_000);
    for m in &msgs {
        let _ = agg.apply(&parse(m.as_bytes()).unwrap());
    }
    let applied = instr_parse_and_apply(&msgs, &mut agg);
    let parsed = instr_parse_only(&msgs);
    assert_eq!((applied, parsed), (n, n));
    println!("{n} events parsed and applied, then parsed only");
}

#[inline(never)]
fn instr_parse_and_apply(msgs: &[String], agg: &mut Aggregator) -> usize {
    let mut applied = 0;
    for m in msgs {
        if let Ok(e) = parse(black_box(m.as_bytes())) {
            black_box(agg.apply_at(&e, Instant::now()));
            applied += 1;
        }
    }
    applied
}

#[inline(never)]
fn instr_parse_only(msgs: &[String]) -> usize {
    msgs.iter()
        .filter(|m| black_box(parse(black_box(m.as_bytes()))).is_ok())
        .count()
}

fn produce(bootstrap: &str, topic: &str, n: usize, actions: usize) {
    produce_with(bootstrap, topic, n, actions, true);
}

/// [`produce`], the activations with (`ids`) or without their activation ids.
fn produce_with(bootstrap: &str, topic: &str, n: usize, actions: usize, ids: bool) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .unwrap();
    for i in 0..n {
        let payload = if ids {
            event(i, actions)
        } else {
            event_without_id(i, actions)
        };
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
    collector_consume_from(bootstrap, "", group, n)
}

/// [`collector_consume`] of the topic `<prefix>events`.
fn collector_consume_from(
    bootstrap: &str,
    prefix: &str,
    group: &str,
    n: usize,
) -> (f64, (f64, f64), Proc, u16) {
    let port = whisk_testkit::free_port();
    let child = Command::new(collector_exe())
        .args([
            "--brokers",
            bootstrap,
            "--group-id",
            group,
            "--log-level",
            "warn",
            "--topic-prefix",
            prefix,
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
    let rate = applied_rate(n, count);
    let (consume, total) = cpu_split(proc.0.id(), "whisk-collector");
    (rate, (consume / n as f64, total / n as f64), proc, port)
}

/// Runs the collector binary (no Pushgateway: applied offsets are committed every second) on
/// `<prefix>events` until its group committed `n`, polling the committed offset, not
/// `/metrics` (61 MB at 10 000 actions: polling it would be most of the CPU measured).
/// Returns (events/s from the first commit to the last, CPU s/event of the consumer +
/// librdkafka threads and of the whole process).
fn collector_consume_committed(
    bootstrap: &str,
    prefix: &str,
    group: &str,
    n: usize,
) -> (f64, (f64, f64)) {
    let topic = format!("{prefix}events");
    let child = Command::new(collector_exe())
        .args(["--brokers", bootstrap, "--group-id", group])
        .args(["--log-level", "warn", "--topic-prefix", prefix])
        .args([
            "--listen",
            &format!("127.0.0.1:{}", whisk_testkit::free_port()),
        ])
        .args(extra_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut first, mut last) = (None, 0);
    while Instant::now() < deadline && last < n as i64 {
        std::thread::sleep(Duration::from_millis(250));
        last = committed(bootstrap, group, &topic);
        if last > 0 && first.is_none() {
            first = Some((Instant::now(), last));
        }
    }
    assert_eq!(last, n as i64, "collector committed {last} of {n}");
    let (t0, c0) = first.unwrap();
    let rate = (n as i64 - c0) as f64 / t0.elapsed().as_secs_f64().max(1e-3);
    let (consume, total) = cpu_split(proc.0.id(), "whisk-collector");
    (rate, (consume / n as f64, total / n as f64))
}

fn end_to_end(rows: &mut Vec<[String; 3]>) {
    let n: usize = env_usize("WHISK_BENCH_EVENTS", 300_000);
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

    // CPU per event at 10 000 actions, with and without activation ids (exemplars).
    let m: usize = env_usize("WHISK_BENCH_EXEMPLAR_EVENTS", 100_000);
    let cpu_of = |prefix: &str, ids: bool| {
        let topic = format!("{prefix}events");
        tansu.create_topic(&topic, 1).unwrap();
        produce_with(&tansu.bootstrap(), &topic, m, 10_000, ids);
        collector_consume_committed(&tansu.bootstrap(), prefix, &format!("bench-{prefix}"), m)
    };
    let (rate_ids, cpu_ids) = cpu_of("ids", true);
    let (rate_none, cpu_none) = cpu_of("noids", false);
    rows.push([
        format!("collector CPU per event, 10 000 actions, {m} events: with activation ids (exemplars) / without"),
        format!(
            "{:.2} / {:.2} µs consumer + librdkafka threads; {:.2} / {:.2} µs whole process; {:.0} / {:.0} events/s",
            cpu_ids.0 * 1e6,
            cpu_none.0 * 1e6,
            cpu_ids.1 * 1e6,
            cpu_none.1 * 1e6,
            rate_ids,
            rate_none
        ),
        "–".into(),
    ]);
}

/// Resets the VmHWM of `pid` to its current RSS (Linux `clear_refs` 5).
fn reset_peak_of(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Waits (bounded) for the next "pushed" line of the collector's log.
fn next_push(log: &std::sync::mpsc::Receiver<String>, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while let Some(left) = within.checked_sub(start.elapsed()) {
        match log.recv_timeout(left) {
            Ok(line) if line.contains("pushed") => return Some(start.elapsed()),
            Ok(line) if line.contains("push failed") => eprintln!("{line}"),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

/// The collector holding 10 000 distinct actions and pushing them to a real Pushgateway:
/// steady RSS, and the peak (VmHWM, reset before each) during a `/metrics` scrape, during a
/// platform push, and during a scrape overlapping a push.
fn rss_10k(rows: &mut Vec<[String; 3]>, ids: bool) {
    let tansu = Tansu::start().unwrap();
    tansu.create_topic("events", 1).unwrap();
    let pgw = whisk_testkit::Pushgateway::start(&["--push.disable-consistency-check"]).unwrap();
    // Every one of 10 000 actions gets activations (i*2654435761 mod 10000 visits them all).
    let n = 60_000;
    produce_with(&tansu.bootstrap(), "events", n, 10_000, ids);
    let with = if ids {
        "with exemplars"
    } else {
        "without exemplars (events without activation ids)"
    };
    let port = whisk_testkit::free_port();
    // Long enough that a scrape fits between two pushes.
    let interval = Duration::from_secs(20);
    let mut child = Command::new(collector_exe())
        .args([
            "--brokers",
            &tansu.bootstrap(),
            "--group-id",
            "bench-rss",
            "--log-level",
            "warn,whisk_collector::internal_events=debug",
            "--pushgateway-url",
            &pgw.url(),
            "--push-interval",
            &format!("{}s", interval.as_secs()),
            "--instance",
            "bench",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (log_tx, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if log_tx.send(line).is_err() {
                break;
            }
        }
    });
    let proc = Proc(child);
    let pid = proc.0.id();
    // Offsets are committed only after a push that covers them: all consumed and pushed.
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
    // Right after a push: the quiet part of the interval.
    let _ = next_push(&log, interval * 2).expect("no push within two intervals");
    std::thread::sleep(Duration::from_secs(1));
    let rss_steady = status_kb(pid, "VmRSS:");
    let anon = status_kb(pid, "RssAnon:");
    let file = status_kb(pid, "RssFile:");

    // A scrape alone.
    let peak_ok = reset_peak_of(pid);
    let scrape = Instant::now();
    let body = get_large(port, "/metrics");
    let scrape_secs = scrape.elapsed().as_secs_f64();
    let hwm_scrape = status_kb(pid, "VmHWM:");
    let live = metric(&body, "whisk_collector_live_series").unwrap_or(0.0);
    let distinct = body
        .lines()
        .filter(|l| l.starts_with("openwhisk_action_memory{"))
        .count();
    let scraped_mb = body.len() as f64 / 1e6;
    drop(body);
    let rss_after_scrape = status_kb(pid, "VmRSS:");

    // A push alone.
    let _ = reset_peak_of(pid);
    let push_took = next_push(&log, interval * 2);
    let hwm_push = status_kb(pid, "VmHWM:");
    let rss_after_push = status_kb(pid, "VmRSS:");

    // A scrape started while a push runs (the push starts `interval` after the last one).
    let _ = reset_peak_of(pid);
    std::thread::sleep(interval.saturating_sub(Duration::from_millis(1500)));
    let overlap = std::thread::spawn(move || get_large(port, "/metrics").len());
    let overlap_push = next_push(&log, interval * 2);
    let overlap_bytes = overlap.join().unwrap_or(0);
    let hwm_both = status_kb(pid, "VmHWM:");
    let pushed_mb = {
        let text = get_large(pgw.port(), "/metrics");
        text.lines()
            .filter(|l| l.contains(r#"job="openwhisk_platform""#))
            .map(|l| l.len() + 1)
            .sum::<usize>() as f64
            / 1e6
    };

    let peak = |hwm: u64| {
        if peak_ok {
            mb(hwm)
        } else {
            "not measured (clear_refs not writable)".to_string()
        }
    };
    rows.push([
        format!(
            "collector RSS, {distinct} distinct actions ({live} series), all consumed and pushed, between pushes, {with}"
        ),
        format!(
            "{} steady (anon {}, file {})",
            mb(rss_steady),
            mb(anon),
            mb(file)
        ),
        if ids { "≤ 35 MB" } else { "≤ 25 MB" }.into(),
    ]);
    rows.push([
        format!(
            "peak RSS during a /metrics scrape ({scraped_mb:.1} MB of text, {scrape_secs:.2} s), {with}"
        ),
        format!("{} (RSS after: {})", peak(hwm_scrape), mb(rss_after_scrape)),
        "≤ 40 MB".into(),
    ]);
    rows.push([
        format!(
            "peak RSS during a platform push (streamed; {pushed_mb:.1} MB of text as the Pushgateway serves it)"
        ),
        if push_took.is_some() {
            format!("{} (RSS after: {})", peak(hwm_push), mb(rss_after_push))
        } else {
            "no push seen".to_string()
        },
        "≤ 40 MB".into(),
    ]);
    rows.push([
        format!(
            "peak RSS, a scrape ({:.1} MB) overlapping a push",
            overlap_bytes as f64 / 1e6
        ),
        if overlap_push.is_some() {
            peak(hwm_both)
        } else {
            "no push seen".to_string()
        },
        "≤ 40 MB".into(),
    ]);
    if ids {
        prometheus_series_cost(rows, pgw.port(), port);
    }
}

/// A real Prometheus (exemplar storage on) scraping the Pushgateway and the collector with the
/// shipped scrape config (dashboards/prometheus/prometheus.yml, every 5 s): the series of the
/// collector job's exemplar copy beside the Pushgateway's, the exemplars stored, and
/// Prometheus's RSS.
fn prometheus_series_cost(rows: &mut Vec<[String; 3]>, pgw_port: u16, collector_port: u16) {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dashboards/prometheus/prometheus.yml"
    ))
    .unwrap();
    let config: String = shipped
        .lines()
        .filter(|l| !l.contains("# RULES_FILE") && !l.trim_start().starts_with("rule_files"))
        .map(|l| {
            // 10 000 actions are ~61 MB of OpenMetrics: a scrape of the collector takes longer
            // than the shipped 4 s timeout on this loaded machine.
            l.replace("scrape_interval: 5s", "scrape_interval: 20s")
                .replace("scrape_timeout: 4s", "scrape_timeout: 19s")
                .replace("'localhost:9091'", &format!("'127.0.0.1:{pgw_port}'"))
                .replace("'localhost:9095'", &format!("'127.0.0.1:{collector_port}'"))
                .replace("'localhost:9096'", "'127.0.0.1:1'")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut prom = whisk_testkit::Prometheus::start(&config).unwrap();
    // Counting ~900 000 series takes longer than testkit's 10 s query timeout under load.
    let prom_port: u16 = prom.url().rsplit(':').next().unwrap().parse().unwrap();
    let count = |q: &str| {
        let encoded: String = q
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let body = get_large(prom_port, &format!("/api/v1/query?query={encoded}"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        whisk_testkit::sum_of(
            v["data"]["result"]
                .as_array()
                .map_or(&[][..], Vec::as_slice),
        )
    };
    let copy = r#"count({__name__=~"openwhisk_exemplar_.+"})"#;
    let pushed = r#"count({__name__=~"openwhisk_.+", job="openwhisk_platform"})"#;
    // Until two scrapes of each target have landed and the copy stopped growing.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = -1.0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(25));
        let now = count(copy);
        if now > 0.0 && now == last && count(pushed) > 0.0 {
            break;
        }
        last = now;
    }
    let (copy_n, pushed_n) = (count(copy), count(pushed));
    // Prometheus's own figures from its /metrics: the shipped config has no self-scrape job.
    let own = whisk_testkit::http_get(&format!("{}/metrics", prom.url())).unwrap_or_default();
    let tsdb = |name: &str| metric(&own, name).unwrap_or(f64::NAN);
    let head = tsdb("prometheus_tsdb_head_series");
    let exemplars = tsdb("prometheus_tsdb_exemplar_exemplars_in_storage");
    let with_exemplars = tsdb("prometheus_tsdb_exemplar_series_with_exemplars_in_storage");
    let up = count(r#"up{job="whisk-collector"}"#);
    let took = count(r#"scrape_duration_seconds{job="whisk-collector"}"#);
    let rss = status_kb(prom.process().pid(), "VmRSS:");
    rows.push([
        "Prometheus scraping the Pushgateway and the collector (shipped config, exemplar storage on), 10 000 actions: series of the collector job's exemplar copy (openwhisk_exemplar_*) / pushed openwhisk_* series / head series in all".into(),
        format!(
            "{copy_n:.0} / {pushed_n:.0} / {head:.0} (copy = {:.0}% more than the platform series); {with_exemplars:.0} series with exemplars, {exemplars:.0} exemplars stored (default buffer 100 000); collector scrape {took:.1} s (up {up}); Prometheus RSS {}",
            100.0 * copy_n / pushed_n.max(1.0),
            mb(rss)
        ),
        "measure".into(),
    ]);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run only when benched.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let only = std::env::var("WHISK_BENCH_ONLY").unwrap_or_default();
    if only == "instructions" {
        instructions();
        return;
    }
    let mut rows = Vec::new();
    if only.is_empty() || only == "memory" {
        in_memory(&mut rows);
        eprintln!("{rows:?}");
    }
    if only.is_empty() || only == "e2e" {
        match baseline_exes() {
            b if b.is_empty() => end_to_end(&mut rows),
            b => side_by_side(&mut rows, &b),
        }
        eprintln!("{rows:?}");
    }
    if only.is_empty() || only == "rss" {
        rss_10k(&mut rows, true);
        eprintln!("{rows:?}");
        rss_10k(&mut rows, false);
    }
    if only.is_empty() || only == "janitor" {
        let shards: Vec<usize> = std::env::var("WHISK_BENCH_SHARDS")
            .unwrap_or_else(|_| "1,3".into())
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect();
        for n in shards {
            janitor_rounds(&mut rows, n);
            eprintln!("{rows:?}");
        }
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("\nwhisk-collector benchmarks ({cpus} cores, tansu memory storage)\n");
    println!("collector binary: {}\n", collector_exe().to_string_lossy());
    println!("| measurement | result | target |");
    println!("|---|---|---|");
    for [a, b, c] in rows {
        println!("| {a} | {b} | {c} |");
    }
}

/// The push body of one `orders` container as the SDK writes it: the built-ins (activation
/// counts, duration histogram, start/last times, push failures and duration, info) plus the
/// action's own families, ~78 series, ~4.6 KB.
fn sdk_body(i: usize) -> String {
    use std::fmt::Write as _;
    let mut b = String::with_capacity(5000);
    let hist = |b: &mut String, name: &str, help: &str, labels: &str, bounds: &[f64], n: usize| {
        // One HELP/TYPE per family (a second family block is a parse error for the Pushgateway).
        if !b.contains(&format!("# TYPE {name} ")) {
            let _ = writeln!(b, "# HELP {name} {help}\n# TYPE {name} histogram");
        }
        let sep = if labels.is_empty() { "" } else { "," };
        for (k, le) in bounds.iter().enumerate() {
            let _ = writeln!(
                b,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {}",
                n * (k + 1) / bounds.len()
            );
        }
        let _ = writeln!(b, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {n}");
        let _ = writeln!(b, "{name}_sum{{{labels}}} {}.25", n * 3);
        let _ = writeln!(b, "{name}_count{{{labels}}} {n}");
    };
    let time = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    ];
    let n = 10 + i % 90;
    b.push_str("# HELP whisk_activations_total Activations served by this container, by outcome\n# TYPE whisk_activations_total counter\n");
    for s in ["success", "application_error", "developer_error"] {
        let _ = writeln!(
            b,
            "whisk_activations_total{{status=\"{s}\"}} {}",
            if s == "success" { n } else { i % 3 }
        );
    }
    hist(
        &mut b,
        "whisk_activation_duration_seconds",
        "Handler run time per activation",
        "",
        &time,
        n,
    );
    for (name, v) in [
        ("whisk_cold_start_seconds", 0.183),
        ("whisk_container_start_time_seconds", 1.7e9),
        ("whisk_last_activation_time_seconds", 1.7e9 + 60.0),
    ] {
        let _ = writeln!(b, "# HELP {name} x\n# TYPE {name} gauge\n{name} {v}");
    }
    b.push_str("# HELP whisk_push_failures_total Pushes that failed\n# TYPE whisk_push_failures_total counter\nwhisk_push_failures_total 0\n");
    hist(
        &mut b,
        "whisk_push_duration_seconds",
        "Duration of pushes",
        "",
        &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0],
        n,
    );
    b.push_str("# HELP whisk_container_info identity\n# TYPE whisk_container_info gauge\nwhisk_container_info{action_version=\"0.0.1\",sdk_version=\"0.1.0\"} 1\n");
    for (name, help) in [
        ("orders_placed_total", "Orders"),
        ("orders_items_total", "Items"),
    ] {
        let _ = writeln!(b, "# HELP {name} {help}\n# TYPE {name} counter");
        for r in ["eu", "us", "ap"] {
            let _ = writeln!(b, "{name}{{region=\"{r}\"}} {}", n + r.len());
        }
    }
    for r in ["eu", "us"] {
        hist(
            &mut b,
            "orders_value",
            "Order value",
            &format!("region=\"{r}\""),
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
            n,
        );
    }
    b
}

fn self_status_kb(key: &str) -> u64 {
    status_kb(std::process::id(), key)
}

/// Resets this process's VmHWM to its current RSS (Linux `clear_refs` 5).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn janitor_rounds(rows: &mut Vec<[String; 3]>, shards: usize) {
    let groups: usize = env_usize("WHISK_BENCH_GROUPS", 10_000);
    let mut pgws: Vec<whisk_testkit::Pushgateway> = (0..shards)
        .map(|_| whisk_testkit::Pushgateway::start(&["--push.disable-consistency-check"]).unwrap())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let clients: Vec<whisk_collector::PushgatewayClient> = pgws
        .iter()
        .map(|p| {
            let url = reqwest::Url::parse(&p.url()).unwrap();
            whisk_collector::PushgatewayClient::new(&url, None, None, Duration::from_secs(30))
                .unwrap()
        })
        .collect();
    let body = sdk_body(7);
    let series = body.lines().filter(|l| !l.starts_with('#')).count();
    eprintln!(
        "filling {groups} groups in {shards} Pushgateway(s) ({series} series, {} bytes each)",
        body.len()
    );
    let fill = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..16 {
            let clients = clients.clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..groups).step_by(16) {
                    let key = whisk_grouping::GroupingKey::new("openwhisk_actions")
                        .with("instance", format!("{i:032x}").as_str())
                        .with("namespace", format!("ns{}", i % 50).as_str())
                        .with("action", format!("pkg/orders{}", i % 400).as_str());
                    clients[i % clients.len()]
                        .put_group(&key, sdk_body(i), Duration::from_secs(30))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    eprintln!("filled in {:?}", fill.elapsed());
    let fill_window = (fill, Instant::now());
    // The listings' size and a plain GET of each (in parallel), as the janitor reads them.
    let (bytes, list_time) = rt.block_on(async {
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for client in clients.clone() {
            set.spawn(async move {
                let mut resp = client.list_groups(Duration::from_secs(600)).await.unwrap();
                let mut n = 0usize;
                while let Some(c) = resp.chunk().await.unwrap() {
                    n += c.len();
                }
                n
            });
        }
        let mut n = 0;
        while let Some(b) = set.join_next().await {
            n += b.unwrap();
        }
        (n, start.elapsed())
    });
    // The other possible source: each Pushgateway's own /metrics text read whole (it holds a
    // push_time_seconds line per group), in parallel, with the Pushgateways' CPU for it.
    let pids: Vec<u32> = pgws.iter_mut().map(|p| p.process().pid()).collect();
    let ports: Vec<u16> = pgws.iter().map(whisk_testkit::Pushgateway::port).collect();
    let cpu0: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
    let start = Instant::now();
    let texts: Vec<(usize, usize)> = ports
        .iter()
        .map(|&port| {
            std::thread::spawn(move || {
                let text = get_large(port, "/metrics");
                let groups = text
                    .lines()
                    .filter(|l| l.starts_with("push_time_seconds{"))
                    .count();
                (text.len(), groups)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let text_time = start.elapsed();
    let text_cpu = pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - cpu0;
    let text_bytes: usize = texts.iter().map(|t| t.0).sum();
    let text_groups: usize = texts.iter().map(|t| t.1).sum();
    // The guard's check: the status of each Pushgateway's own /metrics (a full gather there).
    let status_time = rt.block_on(async {
        let start = Instant::now();
        for client in &clients {
            assert!(client.metrics_status().await.unwrap().is_success());
        }
        start.elapsed()
    });
    let janitor = whisk_collector::Janitor::for_pushgateways(
        clients.clone(),
        "openwhisk_actions",
        Duration::from_secs(3600),
        false,
    );
    let mut times = Vec::new();
    let mut cpus = Vec::new();
    let mut extras = Vec::new();
    let pgw_pids: Vec<u32> = pgws.iter_mut().map(|p| p.process().pid()).collect();
    let pgw_cpu = || pgw_pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    for _ in 0..3 {
        let base = self_status_kb("VmRSS");
        let peak_ok = reset_peak();
        let (cpu0, pcpu0) = (cpu_seconds(std::process::id()), pgw_cpu());
        let start = Instant::now();
        let round = rt.block_on(janitor.run_once()).unwrap();
        times.push(start.elapsed());
        cpus.push((cpu_seconds(std::process::id()) - cpu0, pgw_cpu() - pcpu0));
        assert_eq!(round.groups, groups as u64);
        let peak = self_status_kb("VmHWM");
        if peak_ok {
            extras.push(peak.saturating_sub(base));
        }
    }
    let pgw_rss: u64 = pgw_pids.iter().map(|p| status_kb(*p, "VmRSS")).sum();
    times.sort();
    extras.sort_unstable();
    let median = times[times.len() / 2];
    let (our_cpu, their_cpu) = cpus[cpus.len() / 2];
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_string();
    rows.push([
        format!("janitor round, {groups} SDK groups × {series} series in {shards} Pushgateway(s) (listings {:.1} MB, plain GET of them {:.2} s; guard's /metrics status check {:.2} s; Pushgateway RSS {} MB in all; load {load})", bytes as f64 / 1e6, list_time.as_secs_f64(), status_time.as_secs_f64(), pgw_rss / 1024),
        format!("median {:.2} s (max {:.2} s) of 3; CPU of a round: collector {:.2} s, Pushgateway(s) {:.2} s", median.as_secs_f64(), times[times.len() - 1].as_secs_f64(), our_cpu, their_cpu),
        "≤ 2 s".to_string(),
    ]);
    rows.push([
        format!("janitor round, {shards} Pushgateway(s): extra RSS of the collector process during the round (VmHWM − RSS before)"),
        if !extras.is_empty() {
            format!(
                "max {:.1} MB of 3 rounds",
                *extras.last().unwrap_or(&0) as f64 / 1024.0
            )
        } else {
            "not measured (/proc/self/clear_refs not writable)".to_string()
        },
        "≤ 20 MB".to_string(),
    ]);
    rows.push([
        format!("{shards} Pushgateway(s), another source: their own /metrics text read whole ({:.1} MB, {text_groups} push_time_seconds lines)", text_bytes as f64 / 1e6),
        format!("{:.2} s, Pushgateway CPU {text_cpu:.2} s", text_time.as_secs_f64()),
        "–".to_string(),
    ]);
    if shards > 1 {
        prometheus_rounds(rows, &mut pgws, &clients, &rt, groups, fill_window);
        return;
    }
    // Before: the whole listing in memory, parsed into a serde_json::Value.
    let base = self_status_kb("VmRSS");
    let _ = reset_peak();
    let start = Instant::now();
    let n = rt.block_on(async {
        let text = clients[0]
            .list_groups(Duration::from_secs(600))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["data"].as_array().map_or(0, Vec::len)
    });
    let before_time = start.elapsed();
    let before_extra = self_status_kb("VmHWM").saturating_sub(base);
    assert_eq!(n, groups);
    rows.push([
        "before: the listing read whole and parsed into serde_json::Value".to_string(),
        format!(
            "{:.2} s, extra RSS {:.0} MB",
            before_time.as_secs_f64(),
            before_extra as f64 / 1024.0
        ),
        "–".to_string(),
    ]);
    // Last: its rounds delete the groups.
    prometheus_rounds(rows, &mut pgws, &clients, &rt, groups, fill_window);
}

/// The janitor's Prometheus source (`--prometheus-url`) over the same filled shards: a real
/// Prometheus scrapes every shard (a long interval and timeout: a shard of 10 000 groups is a
/// ~115 MB scrape), and once each shard's first scrape succeeded, rounds where nothing is stale
/// (3, median), then about half, then all of the groups stale (one each; DELETEs included).
fn prometheus_rounds(
    rows: &mut Vec<[String; 3]>,
    pgws: &mut [whisk_testkit::Pushgateway],
    clients: &[whisk_collector::PushgatewayClient],
    rt: &tokio::runtime::Runtime,
    groups: usize,
    (fill_start, fill_end): (Instant, Instant),
) {
    let shards = pgws.len();
    let targets = pgws
        .iter()
        .map(|p| format!("'127.0.0.1:{}'", p.port()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut prom = whisk_testkit::Prometheus::start(&format!(
        "global:\n  scrape_interval: 45s\n  scrape_timeout: 45s\nscrape_configs:\n  \
         - job_name: pushgateway\n    honor_labels: true\n    static_configs:\n      \
         - targets: [{targets}]\n"
    ))
    .unwrap();
    let scraped = Instant::now();
    let all_scraped = || {
        prom.query_sum("sum(scrape_samples_scraped{job=\"pushgateway\"} > 0 and up == 1)")
            .unwrap_or(0.0)
            > 0.0
            && prom
                .query("up{job=\"pushgateway\"} == 1")
                .map(|r| r.len())
                .unwrap_or(0)
                == shards
            && prom
                .query_sum("count(push_time_seconds{job=\"openwhisk_actions\"})")
                .unwrap_or(0.0)
                >= groups as f64
    };
    assert!(
        whisk_testkit::wait_until(Duration::from_secs(600), all_scraped),
        "Prometheus did not scrape every shard whole within 10 min: {}",
        prom.process().log_tail()
    );
    let scrape_secs = prom
        .query_sum("max(scrape_duration_seconds{job=\"pushgateway\"})")
        .unwrap_or(f64::NAN);
    eprintln!(
        "Prometheus scraped {shards} shard(s) after {:?} (scrape {scrape_secs:.1} s)",
        scraped.elapsed()
    );
    let prom_pid = prom.process().pid();
    let prom_rss = status_kb(prom_pid, "VmRSS");
    let pgw_pids: Vec<u32> = pgws.iter_mut().map(|p| p.process().pid()).collect();
    let url = reqwest::Url::parse(&prom.url()).unwrap();
    let janitor_for = |max_age: Duration| {
        whisk_collector::Janitor::for_pushgateways(
            clients.to_vec(),
            "openwhisk_actions",
            max_age,
            false,
        )
        .with_prometheus(whisk_collector::PrometheusClient::new(&url).unwrap())
    };
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_string()
    };
    struct Measured {
        time: Duration,
        query: Duration,
        extra_kb: Option<u64>,
        prom_cpu: f64,
        pgw_cpu: f64,
        our_cpu: f64,
        pruned: usize,
        deletes: u64,
    }
    let measure = |janitor: &whisk_collector::Janitor| {
        let base = self_status_kb("VmRSS");
        let peak_ok = reset_peak();
        let pgw_cpu = || pgw_pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
        let (c0, p0, g0) = (
            cpu_seconds(std::process::id()),
            cpu_seconds(prom_pid),
            pgw_cpu(),
        );
        let start = Instant::now();
        let round = rt.block_on(janitor.run_once()).unwrap();
        let time = start.elapsed();
        assert_eq!(
            round.source,
            whisk_collector::JanitorSource::Prometheus,
            "{:?}",
            round.prometheus_failure
        );
        assert_eq!(round.health_via_prometheus, shards as u64, "{round:?}");
        assert!(round.failed.is_empty(), "{:?}", round.failed.first());
        Measured {
            time,
            query: round.query_time.unwrap_or_default(),
            extra_kb: peak_ok.then(|| self_status_kb("VmHWM").saturating_sub(base)),
            prom_cpu: cpu_seconds(prom_pid) - p0,
            pgw_cpu: pgw_cpu() - g0,
            our_cpu: cpu_seconds(std::process::id()) - c0,
            pruned: round.pruned(),
            deletes: round.deletes_ok,
        }
    };
    let row = |rows: &mut Vec<[String; 3]>, what: String, m: &[Measured]| {
        let median = &m[m.len() / 2];
        let max_time = m.iter().map(|x| x.time).max().unwrap_or_default();
        let extra = m.iter().filter_map(|x| x.extra_kb).max();
        rows.push([
            format!("janitor round from Prometheus (--prometheus-url), {groups} SDK groups in {shards} Pushgateway(s), {what} (load {})", load()),
            format!(
                "{}{:.3} s (max {:.3} s); Prometheus queries {:.3} s; {} pruned, {} DELETEs; CPU: collector {:.2} s, Prometheus {:.2} s, Pushgateway(s) {:.2} s; extra RSS {}",
                if m.len() > 1 { format!("median of {}: ", m.len()) } else { String::new() },
                median.time.as_secs_f64(),
                max_time.as_secs_f64(),
                median.query.as_secs_f64(),
                median.pruned,
                median.deletes,
                median.our_cpu,
                median.prom_cpu,
                median.pgw_cpu,
                extra.map_or("not measured".to_string(), |kb| format!("{:.1} MB", kb as f64 / 1024.0)),
            ),
            "≤ 2 s, ≤ 20 MB".to_string(),
        ]);
    };
    let mut none: Vec<Measured> = (0..3)
        .map(|_| measure(&janitor_for(Duration::from_secs(3600))))
        .collect();
    none.sort_by_key(|m| m.time);
    assert_eq!(none[0].pruned, 0);
    row(rows, "nothing stale".into(), &none);
    // About half: groups pushed in the first half of the fill are older than this.
    let middle = fill_start + (fill_end - fill_start) / 2;
    let half = measure(&janitor_for(middle.elapsed()));
    row(
        rows,
        "about half stale (DELETE on every shard)".into(),
        &[half],
    );
    let all = measure(&janitor_for(
        fill_end
            .elapsed()
            .saturating_sub(Duration::from_secs(1))
            .max(Duration::from_secs(1)),
    ));
    row(
        rows,
        "all stale (at most 5 000 a round, oldest first: those are the half deleted just before, still in Prometheus until its next scrape, so their DELETEs are no-ops)".into(),
        &[all],
    );
    rows.push([
        format!("Prometheus scraping {shards} Pushgateway(s) of {groups} groups"),
        format!(
            "scrape {scrape_secs:.1} s, Prometheus RSS {} MB",
            prom_rss / 1024
        ),
        "–".to_string(),
    ]);
}

/// Collector builds of other commits compared with this one in the e2e part
/// (`WHISK_BENCH_BASELINE_EXE`, comma-separated paths), run by run in the same bench.
fn baseline_exes() -> Vec<std::ffi::OsString> {
    std::env::var("WHISK_BENCH_BASELINE_EXE")
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.trim().into())
        .collect()
}

/// CPU seconds of the threads of `pid`, summed by thread name (`kafka-consumer`, librdkafka's
/// `rdk:*`, the runtime's `whisk-collector`, …), largest first.
fn cpu_by_thread(pid: u32) -> Vec<(String, f64)> {
    let mut by: Vec<(String, f64)> = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let f: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let name = comm.trim().to_string();
        match by.iter_mut().find(|(n, _)| *n == name) {
            Some((_, s)) => *s += ticks / 100.0,
            None => by.push((name, ticks / 100.0)),
        }
    }
    by.sort_by(|a, b| b.1.total_cmp(&a.1));
    by
}

/// One run of the collector binary `exe` over `<prefix>events` until it has applied `n`
/// events, progress read from `/metrics` every 200 ms as in [`collector_consume`]. Returns
/// events/s, CPU s/event of the whole process, and the CPU by thread name.
fn collector_run(
    exe: &std::ffi::OsStr,
    bootstrap: &str,
    group: &str,
    n: usize,
) -> (f64, f64, Vec<(String, f64)>) {
    let port = whisk_testkit::free_port();
    let child = Command::new(exe)
        .args(["--brokers", bootstrap, "--group-id", group])
        .args([
            "--log-level",
            "warn",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(extra_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let count = || {
        let body = whisk_testkit::http_get(&url).unwrap_or_default();
        [r#"{type="activation"}"#, r#"{type="metric"}"#]
            .iter()
            .map(|t| metric(&body, &format!("whisk_collector_events_total{t}")).unwrap_or(0.0))
            .sum::<f64>()
    };
    let rate = applied_rate(n, count);
    let pid = proc.0.id();
    (rate, cpu_seconds(pid) / n as f64, cpu_by_thread(pid))
}

/// Events/s from the first time `count` (events applied, read from `/metrics`) is above zero
/// until it reaches `n`. Counted every 200 ms until there is a rate, then after half the time
/// the rate says is left (at most 500 ms, at least 20 ms): the end is seen within ~20 ms even
/// if the rate doubles, not up to a whole interval late (200 ms cut a 4 s run's rate by up to
/// 5 %), with no more scrapes of the collector than before (each costs it CPU, and its CPU is
/// measured).
fn applied_rate(n: usize, count: impl Fn() -> f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut first, mut last, mut scrapes) = (None, 0.0, 0);
    while Instant::now() < deadline {
        last = count();
        scrapes += 1;
        if last > 0.0 && first.is_none() {
            first = Some((Instant::now(), last));
        }
        if last as usize >= n {
            break;
        }
        let rate = first.map_or(0.0, |(t0, c0): (Instant, f64)| {
            (last - c0) / t0.elapsed().as_secs_f64()
        });
        let wait = if rate > 0.0 {
            ((n as f64 - last) / rate / 2.0).clamp(0.02, 0.5)
        } else {
            0.2
        };
        std::thread::sleep(Duration::from_secs_f64(wait));
    }
    assert_eq!(last as usize, n, "collector applied {last} of {n}");
    let (t0, c0) = first.expect("counted above zero");
    let elapsed = t0.elapsed().as_secs_f64();
    eprintln!("{n} events applied in {elapsed:.2} s, /metrics scraped {scrapes} times");
    (n as f64 - c0) / elapsed
}

/// e2e with `WHISK_BENCH_BASELINE_EXE`: one topic of `WHISK_BENCH_EVENTS` events (100
/// actions), read by every build in turn (`WHISK_BENCH_ROUNDS` rounds, default 3), each run
/// a fresh consumer group; the raw consumer before and after. Judging builds side by side is
/// the only fair way here: the machine's load moves a single run's figures.
fn side_by_side(rows: &mut Vec<[String; 3]>, baselines: &[std::ffi::OsString]) {
    let n: usize = env_usize("WHISK_BENCH_EVENTS", 300_000);
    let rounds: usize = env_usize("WHISK_BENCH_ROUNDS", 3);
    let tansu = Tansu::start().unwrap();
    tansu.create_topic("events", 1).unwrap();
    produce(&tansu.bootstrap(), "events", n, 100);
    let mut builds: Vec<std::ffi::OsString> = baselines.to_vec();
    builds.push(collector_exe());
    let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new(); builds.len()];
    let raw_before = raw_consume(&tansu.bootstrap(), "events", n);
    for round in 0..rounds {
        for (b, exe) in builds.iter().enumerate() {
            let group = format!("bench-ab-{round}-{b}");
            let (rate, cpu, threads) = collector_run(exe, &tansu.bootstrap(), &group, n);
            let threads: Vec<String> = threads
                .iter()
                .map(|(t, s)| format!("{t} {:.2}", s * 1e6 / n as f64))
                .collect();
            eprintln!(
                "round {round} {}: {:.2} µs/event, {rate:.0} events/s; by thread (µs/event): {}",
                exe.to_string_lossy(),
                cpu * 1e6,
                threads.join(", ")
            );
            runs[b].push((rate, cpu));
        }
    }
    let raw_after = raw_consume(&tansu.bootstrap(), "events", n);
    rows.push([
        format!("raw librdkafka consumer, {n} msgs (before / after)"),
        format!(
            "{:.0} / {:.0} msg/s, {:.2} µs CPU/msg",
            raw_before.0,
            raw_after.0,
            raw_before.1 * 1e6
        ),
        "baseline".into(),
    ]);
    for (exe, r) in builds.iter().zip(&runs) {
        let cpu: Vec<String> = r.iter().map(|(_, c)| format!("{:.2}", c * 1e6)).collect();
        let rate: Vec<String> = r.iter().map(|(x, _)| format!("{x:.0}")).collect();
        rows.push([
            format!(
                "{}: CPU per event, whole process (runs)",
                exe.to_string_lossy()
            ),
            format!("{} µs; {} events/s", cpu.join(" / "), rate.join(" / ")),
            "≤ 3 µs".into(),
        ]);
    }
}
