//! SDK benchmarks, printed as a table. Run (the bench drives the release-built examples):
//! `cargo build --release -p whisk-metrics --examples && cargo bench -p whisk-metrics --bench sdk`.
//! For the TLS size: `cargo build --release -p whisk-metrics --examples --features tls &&
//! cargo bench -p whisk-metrics --bench sdk --features tls -- --size-only`.
//! Needs `prometheus-pushgateway` on PATH.
//!
//! `WHISK_BENCH_BASELINE_EXE=<path>[,<path>…]`: probe_action executables built from other
//! commits (see docs/benchmarks.md), measured in the same run as further configurations of the
//! response-path rounds (pushing disabled and default mode each), with the body each pushes.
//! `-- --response-only` measures the response path and the pushed bodies only;
//! `WHISK_BENCH_ROUNDS=<n>` sets the rounds per placement (default 1000).
//!
//! 1. counter increment (ns)
//! 2. time the SDK adds to the activation's response path (default mode), against the same
//!    handler in a minimal loop without the SDK, both driven over pipes like the Go proxy;
//!    also with pushing disabled (the SDK's own work) and in strict mode. The configurations
//!    are interleaved and each activation starts only once every action is idle in `read(0)`.
//! 3. encode + PUT per activation against a local Pushgateway, with and without its
//!    consistency check, next to a minimal raw HTTP PUT of the same body and headers in the
//!    same run (alternating which goes first), and gather+encode alone
//! 4. process start to ready (`{"ok":true}` on fd 3)
//! 5. size of the example action executable
// A bench is exempt from the product rules on unwraps and function length.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    unreachable_pub
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Action, example_exe};
use serde_json::json;
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

/// True when `pid`'s main thread is blocked in `read(0, …)`: waiting for the next activation,
/// so the previous push (which runs on that thread) has finished. None when /proc cannot tell.
fn blocked_on_stdin(pid: i32) -> Option<bool> {
    std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .ok()
        .map(|s| s.starts_with("0 0x0 "))
}

/// Sets the CPU affinity of task `tid` (0 = the calling thread; processes and threads it
/// starts afterwards inherit it) to `cpus`, or to all CPUs when `cpus` is empty.
#[allow(unsafe_code)]
fn set_affinity(tid: i32, cpus: &[usize]) -> bool {
    let all: Vec<usize> =
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in if cpus.is_empty() { &all[..] } else { cpus } {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Sets the affinity of every thread of process `pid`.
fn set_process_affinity(pid: u32, cpus: &[usize]) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks
        .filter_map(|t| t.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .all(|tid| set_affinity(tid, cpus))
}

/// Waits (bounded) until `action` is back in `read(0)`; true when it was still busy.
fn wait_idle(action: &Action) -> bool {
    let waited = Instant::now();
    let mut busy = false;
    while blocked_on_stdin(action.pid()) == Some(false) && waited.elapsed() < Duration::from_secs(2)
    {
        busy = true;
        std::thread::sleep(Duration::from_micros(200));
    }
    busy
}

/// Write-line → read-result latency over `n` activations of each configuration, interleaved
/// (one activation of each per round, the order rotating) so drifting load on the machine hits
/// all of them alike. Before each activation the driver waits until every action is back in
/// `read(0)` (its push done), then 1 ms more so the Pushgateway settles too: this measures the
/// response path alone. Returns per configuration the samples in round order and how often the
/// action was still busy (pushing) 5 ms after its previous result.
fn response_paths(configs: &[Config], n: usize) -> Vec<(Vec<Duration>, usize)> {
    let mut actions: Vec<Action> = configs
        .iter()
        .map(|(exe, env)| {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Action::spawn(exe, "/guest/bench", &env)
        })
        .collect();
    for a in &mut actions {
        for _ in 0..50 {
            a.invoke(json!({"mode": "ok"}), Duration::from_secs(60));
        }
    }
    let mut out: Vec<(Vec<Duration>, usize)> =
        configs.iter().map(|_| (Vec::with_capacity(n), 0)).collect();
    for round in 0..n {
        for k in 0..actions.len() {
            let i = (round + k) % actions.len();
            std::thread::sleep(Duration::from_millis(5));
            for (j, a) in actions.iter().enumerate() {
                if wait_idle(a) && j == i {
                    out[i].1 += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
            let (_, took) = actions[i].invoke(json!({"mode": "ok"}), Duration::from_secs(60));
            out[i].0.push(took);
        }
    }
    out
}

/// One response-path configuration: the executable and its environment.
type Config = (PathBuf, Vec<(&'static str, String)>);

/// The executables of `WHISK_BENCH_BASELINE_EXE` (comma-separated), each with its label (the
/// file name).
fn baselines() -> Vec<(String, PathBuf)> {
    std::env::var("WHISK_BENCH_BASELINE_EXE")
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let path = PathBuf::from(p.trim());
            assert!(
                path.is_file(),
                "WHISK_BENCH_BASELINE_EXE: {} is not a file",
                path.display()
            );
            let label = path.file_name().map_or_else(
                || path.display().to_string(),
                |f| f.to_string_lossy().into_owned(),
            );
            (label, path)
        })
        .collect()
}

/// The body `exe` pushes after its `n`th activation: the action is pointed at a one-shot
/// HTTP listener here that answers every PUT with 200 and keeps the last body's length.
fn pushed_body_bytes(exe: &Path, n: usize) -> usize {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let last = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = last.clone();
    let server = std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let mut reader = BufReader::new(stream);
            loop {
                let mut length = None;
                let mut line = String::new();
                let mut head_ok = false;
                while reader.read_line(&mut line).is_ok_and(|r| r > 0) {
                    let l = line.trim_end().to_string();
                    line.clear();
                    if l.is_empty() {
                        head_ok = true;
                        break;
                    }
                    if let Some((k, v)) = l.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse::<usize>().ok();
                        }
                    }
                    if l == "STOP" {
                        return;
                    }
                }
                if !head_ok {
                    break;
                }
                let mut body = vec![0; length.unwrap_or(0)];
                if reader.read_exact(&mut body).is_err() {
                    break;
                }
                seen.store(body.len(), std::sync::atomic::Ordering::SeqCst);
                let s = reader.get_mut();
                if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    let mut action = Action::spawn(
        exe,
        "/guest/bench",
        &[("WHISK_METRICS_PUSHGATEWAY_URL", url.as_str())],
    );
    for _ in 0..n {
        action.invoke(json!({"mode": "ok"}), Duration::from_secs(60));
        // the push runs after the result: wait until the action is back in read(0)
        wait_idle(&action);
    }
    drop(action);
    let mut stop = TcpStream::connect(url.strip_prefix("http://").unwrap()).unwrap();
    stop.write_all(b"STOP\r\n").unwrap();
    server.join().unwrap();
    last.load(std::sync::atomic::Ordering::SeqCst)
}

/// Median over rounds of `a[round] - b[round]` (signed, in µs): robust against load that
/// changes during the run, since both samples of a round saw the same machine.
fn paired_median_us(a: &[Duration], b: &[Duration]) -> f64 {
    let mut d: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x.as_secs_f64() - y.as_secs_f64()) * 1e6)
        .collect();
    d.sort_by(f64::total_cmp);
    d[d.len() / 2]
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
        // the same header lines, in the same order, as the SDK's requests (ureq 3)
        let head = format!(
            "PUT {} HTTP/1.1\r\ncontent-length: {}\r\nuser-agent: whisk-metrics/{}\r\naccept: */*\r\nhost: {}\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\n\r\n",
            self.path,
            body.len(),
            env!("CARGO_PKG_VERSION"),
            self.host,
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

/// p50 / p99 of one kind of sample.
#[derive(Clone, Copy)]
struct P50P99(Duration, Duration);

impl P50P99 {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Self(percentile(&samples, 0.5), percentile(&samples, 0.99))
    }

    fn text(self) -> String {
        format!("{} / {}", us(self.0), us(self.1))
    }
}

/// SDK encode+push, raw PUT of the same body (interleaved, alternating which goes first) and
/// the SDK's gather+encode alone.
fn push_vs_raw(pgw_flags: &[&str], n: usize) -> (P50P99, P50P99, P50P99) {
    let pgw = Pushgateway::start(pgw_flags).unwrap();
    let config = whisk_metrics::Config::new().with_pushgateway_url(pgw.url());
    let mut pusher = whisk_metrics::__bench::BenchPusher::new(&config).unwrap();
    // 10 other containers' groups stored, as in a small deployment
    for i in 0..10 {
        assert!(pusher.push("guest", &format!("other{i}")));
    }
    let mut raw = RawPut::new(&pusher.url("guest", "bench"));
    let (mut sdk, mut base, mut enc) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut body = whisk_metrics::render();
    for i in 0..n + 20 {
        let mut sdk_push = || {
            let t = Instant::now();
            assert!(pusher.push("guest", "bench"), "SDK push failed");
            t.elapsed()
        };
        let mut raw_put = |body: &str| {
            let t = Instant::now();
            let status = raw.put(body.as_bytes());
            let took = t.elapsed();
            assert!(status == 200 || status == 202, "raw PUT answered {status}");
            took
        };
        let (sdk_t, raw_t) = if i % 2 == 0 {
            let s = sdk_push();
            body = whisk_metrics::render();
            (s, raw_put(&body))
        } else {
            let r = raw_put(&body);
            let s = sdk_push();
            body = whisk_metrics::render();
            (s, r)
        };
        let t = Instant::now();
        black_box(pusher.encode());
        let enc_t = t.elapsed();
        if i >= 20 {
            sdk.push(sdk_t);
            base.push(raw_t);
            enc.push(enc_t);
        }
    }
    (P50P99::of(sdk), P50P99::of(base), P50P99::of(enc))
}

/// Prints the response-path rows of one run of [`response_paths`] (raw, SDK with pushing
/// disabled, SDK default mode, SDK strict mode).
fn response_table(
    placement: &str,
    results: Vec<(Vec<Duration>, usize)>,
    n: usize,
    baselines: &[(String, PathBuf)],
) {
    let mut results = results.into_iter();
    let mut next = || results.next().unwrap();
    let ((mut raw, _), (mut quiet, _), (mut sdk, busy), (mut strict, _)) =
        (next(), next(), next(), next());
    let paired_quiet = paired_median_us(&quiet, &raw);
    let paired_sdk = paired_median_us(&sdk, &raw);
    // per baseline: its samples pushing disabled and in default mode, and the paired medians
    let baseline_results: Vec<_> = baselines
        .iter()
        .map(|(label, _)| {
            let ((b_quiet, _), (b_sdk, _)) = (next(), next());
            let paired = (
                paired_median_us(&b_quiet, &raw),
                paired_median_us(&b_sdk, &raw),
            );
            (label, b_quiet, b_sdk, paired)
        })
        .collect();
    for samples in [&mut raw, &mut quiet, &mut sdk, &mut strict] {
        samples.sort();
    }
    let (r50, r99) = (percentile(&raw, 0.5), percentile(&raw, 0.99));
    let (q50, q99) = (percentile(&quiet, 0.5), percentile(&quiet, 0.99));
    let (s50, s99) = (percentile(&sdk, 0.5), percentile(&sdk, 0.99));
    let added = |a: Duration, b: Duration| us(a.saturating_sub(b));
    row(
        &format!("{placement}: response path, no SDK (raw loop) p50 / p99"),
        format!("{} / {}", us(r50), us(r99)),
        "–",
    );
    row(
        &format!("{placement}: response path, SDK, pushing disabled p50 / p99"),
        format!("{} / {}", us(q50), us(q99)),
        "–",
    );
    row(
        &format!("{placement}: response path, SDK default mode p50 / p99"),
        format!("{} / {}", us(s50), us(s99)),
        "–",
    );
    row(
        &format!("{placement}: added by the SDK's own work (pushing disabled) p50 / p99"),
        format!("{} / {}", added(q50, r50), added(q99, r99)),
        "–",
    );
    row(
        &format!("{placement}: added by the SDK (default mode) p50 / p99"),
        format!("{} / {}", added(s50, r50), added(s99, r99)),
        if placement.starts_with("pinned") {
            "≤ 20 µs p50"
        } else {
            "≤ 50 µs p50"
        },
    );
    row(
        &format!(
            "{placement}: added, median of per-round differences: pushing disabled / default mode"
        ),
        format!("{paired_quiet:.1} µs / {paired_sdk:.1} µs"),
        "–",
    );
    row(
        &format!("{placement}: default mode: push still running 5 ms after the previous result"),
        format!("{busy} of {n}"),
        "–",
    );
    let (t50, t99) = (percentile(&strict, 0.5), percentile(&strict, 0.99));
    row(
        &format!("{placement}: response path, SDK strict mode p50 / p99"),
        format!("{} / {}", us(t50), us(t99)),
        "–",
    );
    for (label, mut b_quiet, mut b_sdk, paired) in baseline_results {
        b_quiet.sort();
        b_sdk.sort();
        let (bq50, bq99) = (percentile(&b_quiet, 0.5), percentile(&b_quiet, 0.99));
        let (bs50, bs99) = (percentile(&b_sdk, 0.5), percentile(&b_sdk, 0.99));
        row(
            &format!(
                "{placement}: baseline {label}: added by the SDK's own work (pushing disabled) p50 / p99"
            ),
            format!("{} / {}", added(bq50, r50), added(bq99, r99)),
            "–",
        );
        row(
            &format!("{placement}: baseline {label}: added by the SDK (default mode) p50 / p99"),
            format!("{} / {}", added(bs50, r50), added(bs99, r99)),
            "–",
        );
        row(
            &format!(
                "{placement}: baseline {label}: added, median of per-round differences: pushing disabled / default mode"
            ),
            format!("{:.1} µs / {:.1} µs", paired.0, paired.1),
            "–",
        );
    }
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
    let n = std::env::var("WHISK_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1000);
    let probe = example_exe("probe_action");
    let pushing = |exe: &Path, extra: &[(&'static str, &str)]| -> Config {
        let mut env = vec![("WHISK_METRICS_PUSHGATEWAY_URL", url.clone())];
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        (exe.to_path_buf(), env)
    };
    let baselines = baselines();
    let mut configs: Vec<Config> = vec![
        (example_exe("raw_action"), vec![]),
        pushing(&probe, &[("WHISK_METRICS_DISABLED", "true")]),
        pushing(&probe, &[]),
        pushing(&probe, &[("WHISK_METRICS_PUSH_MODE", "before-result")]),
    ];
    for (_, exe) in &baselines {
        configs.push(pushing(exe, &[("WHISK_METRICS_DISABLED", "true")]));
        configs.push(pushing(exe, &[]));
    }
    let unpinned = response_paths(&configs, n);
    // Same again with the driver and the actions on CPU 0 and the Pushgateway on CPU 1: no
    // wakeup crosses CPUs (a cross-CPU wakeup costs ~100 µs on this VM, and how often one
    // happens depends on how long a process runs after its write), like a proxy and an
    // action sharing a one-core container.
    let two_cpus = std::thread::available_parallelism().is_ok_and(|c| c.get() >= 2);
    let mut pgw = pgw;
    let pinned =
        (two_cpus && set_process_affinity(pgw.process().pid(), &[1]) && set_affinity(0, &[0]))
            .then(|| response_paths(&configs, n));
    set_affinity(0, &[]);
    drop(pgw);
    response_table("unpinned", unpinned, n, &baselines);
    match pinned {
        Some(p) => response_table(
            "pinned (driver+action CPU 0, Pushgateway CPU 1)",
            p,
            n,
            &baselines,
        ),
        None => row(
            "pinned response path",
            "not measured (needs 2 CPUs and sched_setaffinity)".to_string(),
            "–",
        ),
    }

    row(
        "probe_action push body after 20 activations (this build)",
        format!("{} bytes", pushed_body_bytes(&probe, 20)),
        "–",
    );
    for (label, exe) in &baselines {
        row(
            &format!("probe_action push body after 20 activations (baseline {label})"),
            format!("{} bytes", pushed_body_bytes(exe, 20)),
            "–",
        );
    }
    if std::env::args().any(|a| a == "--response-only") {
        return;
    }
    for (label, flags) in [
        ("consistency check on", &[][..]),
        (
            "--push.disable-consistency-check",
            &["--push.disable-consistency-check"][..],
        ),
    ] {
        let (sdk, base, enc) = push_vs_raw(flags, 500);
        row(&format!("encode+push p50 / p99, {label}"), sdk.text(), "–");
        row(
            &format!("  of which gather+encode alone p50 / p99, {label}"),
            enc.text(),
            "–",
        );
        row(&format!("raw PUT p50 / p99, {label}"), base.text(), "–");
        row(
            &format!("push / raw PUT (p50), {label}"),
            format!("{:.2}×", sdk.0.as_secs_f64() / base.0.as_secs_f64()),
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
