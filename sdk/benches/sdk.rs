//! SDK benchmarks, printed as a table. Run (the bench drives the release-built examples):
//! `cargo build --release -p whisk-metrics --examples && cargo bench -p whisk-metrics --bench sdk`.
//! For the TLS size: `cargo build --release -p whisk-metrics --examples --features tls &&
//! cargo bench -p whisk-metrics --bench sdk --features tls -- --size-only`.
//! Needs `prometheus-pushgateway` on PATH.
//!
//! 1. counter increment (ns)
//! 2. time the SDK adds to the activation's response path (default mode), against the same
//!    handler in a minimal loop without the SDK, both driven over pipes like the Go proxy
//! 3. encode + PUT per activation against a local Pushgateway, with and without its
//!    consistency check, next to a minimal raw HTTP PUT of the same body in the same run
//! 4. process start to ready (`{"ok":true}` on fd 3)
//! 5. size of the example action executable
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Action, example_exe};
use serde_json::json;
use whisk_metrics::ActionIdentity;
use whisk_testkit::Pushgateway;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn row(what: &str, value: String, target: &str) {
    println!("| {what} | {value} | {target} |");
}

fn counter_increment() -> f64 {
    let c = whisk_metrics::counter("bench_increments_total", "Benchmark counter").unwrap();
    let n = 50_000_000u64;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        for _ in 0..n {
            black_box(&c).inc();
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e9 / n as f64);
    }
    best
}

fn labelled_increment() -> f64 {
    let v = whisk_metrics::counter_vec("bench_labelled_total", "Benchmark", &["region"]).unwrap();
    let n = 5_000_000u64;
    let start = Instant::now();
    for _ in 0..n {
        v.with_label_values(black_box(&["eu"])).inc();
    }
    start.elapsed().as_secs_f64() * 1e9 / n as f64
}

/// Write-line → read-result latency over `n` activations, spaced so each push completes first.
fn response_path(exe: &str, env: &[(&str, &str)], n: usize) -> Vec<Duration> {
    let mut action = Action::spawn(&example_exe(exe), "/guest/bench", env);
    for _ in 0..50 {
        action.invoke(json!({"mode": "ok"}), Duration::from_secs(60));
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let (_, took) = action.invoke(json!({"mode": "ok"}), Duration::from_secs(60));
        samples.push(took);
        // let the previous push finish: this measures the response path alone
        std::thread::sleep(Duration::from_millis(10));
    }
    samples.sort();
    samples
}

/// A minimal keep-alive HTTP/1.1 PUT client: the baseline for the SDK's push.
struct RawPut {
    stream: BufReader<TcpStream>,
    host: String,
    path: String,
}

impl RawPut {
    fn new(url: &str) -> Self {
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        let stream = TcpStream::connect(host).unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream: BufReader::new(stream),
            host: host.to_string(),
            path: path.to_string(),
        }
    }

    fn put(&mut self, body: &[u8]) -> u16 {
        let head = format!(
            "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
            self.path,
            self.host,
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut status = 0;
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if status == 0 {
                status = l
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            } else if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut sink = vec![0; length];
        self.stream.read_exact(&mut sink).unwrap();
        status
    }
}

/// p50 / p99 of SDK encode+push and of a raw PUT of the same body, interleaved.
fn push_vs_raw(pgw_flags: &[&str], n: usize) -> (Duration, Duration, Duration, Duration) {
    let pgw = Pushgateway::start(pgw_flags).unwrap();
    let config = whisk_metrics::Config::new().with_pushgateway_url(pgw.url());
    let mut pusher = whisk_metrics::__bench::BenchPusher::new(&config).unwrap();
    let id = ActionIdentity {
        namespace: "guest".into(),
        action: "bench".into(),
    };
    // 10 other containers' groups stored, as in a small deployment
    for i in 0..10 {
        let other = ActionIdentity {
            namespace: "guest".into(),
            action: format!("other{i}"),
        };
        assert!(pusher.push(&other));
    }
    let mut raw = RawPut::new(&pusher.url(&id));
    let (mut sdk, mut base) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + 20 {
        let t = Instant::now();
        assert!(pusher.push(&id), "SDK push failed");
        let sdk_t = t.elapsed();
        let body = whisk_metrics::render();
        let t = Instant::now();
        let status = raw.put(body.as_bytes());
        let raw_t = t.elapsed();
        assert!(status == 200 || status == 202, "raw PUT answered {status}");
        if i >= 20 {
            sdk.push(sdk_t);
            base.push(raw_t);
        }
    }
    sdk.sort();
    base.sort();
    (
        percentile(&sdk, 0.5),
        percentile(&sdk, 0.99),
        percentile(&base, 0.5),
        percentile(&base, 0.99),
    )
}

fn start_to_ready(n: usize) -> Vec<Duration> {
    let exe = example_exe("probe_action");
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let action = Action::spawn(&exe, "/guest/bench", &[("__OW_WAIT_FOR_ACK", "true")]);
        let ack = action.read_result(Duration::from_secs(10)).expect("ack");
        samples.push(t.elapsed());
        assert_eq!(ack, r#"{"ok":true}"#);
    }
    samples.sort();
    samples
}

fn main() {
    let size_only = std::env::args().any(|a| a == "--size-only");
    let tls = if cfg!(feature = "tls") {
        "with tls"
    } else {
        "without tls"
    };
    let exe = example_exe("probe_action");
    let size = std::fs::metadata(&exe).map(|m| m.len()).unwrap_or(0);
    println!("| measure | value | target |");
    println!("|---|---|---|");
    row(
        &format!("probe_action exec size ({tls}, {})", exe.display()),
        format!("{:.2} MB", size as f64 / 1e6),
        "≤ 6 MB",
    );
    if size_only {
        return;
    }
    // user metrics like an example action's, so the pushed body is realistic (~60 series)
    let orders = whisk_metrics::counter_vec("orders_placed_total", "Orders", &["region"]).unwrap();
    let value = whisk_metrics::histogram_vec("orders_value", "Value", &["region"], &[]).unwrap();
    for r in ["eu", "us", "ap"] {
        orders.with_label_values(&[r]).inc();
        value.with_label_values(&[r]).observe(12.0);
    }
    row(
        "counter increment (IntCounter::inc)",
        format!("{:.2} ns", counter_increment()),
        "≤ 20 ns",
    );
    row(
        "labelled increment (with_label_values + inc)",
        format!("{:.1} ns", labelled_increment()),
        "–",
    );

    let pgw = Pushgateway::start(&[]).unwrap();
    let url = pgw.url();
    let n = 1000;
    let raw = response_path("raw_action", &[], n);
    let sdk = response_path(
        "probe_action",
        &[("WHISK_METRICS_PUSHGATEWAY_URL", &url)],
        n,
    );
    let strict = response_path(
        "probe_action",
        &[
            ("WHISK_METRICS_PUSHGATEWAY_URL", &url),
            ("WHISK_METRICS_PUSH_MODE", "before-result"),
        ],
        n,
    );
    drop(pgw);
    let (r50, r99) = (percentile(&raw, 0.5), percentile(&raw, 0.99));
    let (s50, s99) = (percentile(&sdk, 0.5), percentile(&sdk, 0.99));
    row(
        "response path, no SDK (raw loop) p50 / p99",
        format!("{} / {}", us(r50), us(r99)),
        "–",
    );
    row(
        "response path, SDK default mode p50 / p99",
        format!("{} / {}", us(s50), us(s99)),
        "–",
    );
    row(
        "added by the SDK (default mode) p50 / p99",
        format!(
            "{} / {}",
            us(s50.saturating_sub(r50)),
            us(s99.saturating_sub(r99))
        ),
        "≤ 50 µs p50",
    );
    let (t50, t99) = (percentile(&strict, 0.5), percentile(&strict, 0.99));
    row(
        "response path, SDK strict mode p50 / p99",
        format!("{} / {}", us(t50), us(t99)),
        "–",
    );

    for (label, flags) in [
        ("consistency check on", &[][..]),
        (
            "--push.disable-consistency-check",
            &["--push.disable-consistency-check"][..],
        ),
    ] {
        let (s50, s99, b50, b99) = push_vs_raw(flags, 500);
        row(
            &format!("encode+push p50 / p99, {label}"),
            format!("{} / {}", us(s50), us(s99)),
            "–",
        );
        row(
            &format!("raw PUT p50 / p99, {label}"),
            format!("{} / {}", us(b50), us(b99)),
            "–",
        );
        row(
            &format!("push / raw PUT (p50), {label}"),
            format!("{:.2}×", s50.as_secs_f64() / b50.as_secs_f64()),
            "≤ 1.2×",
        );
    }
    let ready = start_to_ready(50);
    row(
        "process start to ready p50 / p99",
        format!(
            "{} / {}",
            us(percentile(&ready, 0.5)),
            us(percentile(&ready, 0.99))
        ),
        "≤ 5 ms",
    );
    println!(
        "\nbody pushed per activation: {} bytes",
        whisk_metrics::render().len()
    );
}
