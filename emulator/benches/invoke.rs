//! Emulator overhead per activation, on the release-built `hello` action (pushes disabled, so
//! this measures the proxy protocol, the pool and the action loop, not the Pushgateway).
//! Prints a table. Prerequisite: `cargo build -p whisk-actions --release`.
//!
//! `cargo bench -p whisk-emulator --bench invoke`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde_json::json;
use whisk_emulator::{
    ActionSpec, Invocation, Invoker, InvokerConfig, LoadPlan, LoadSpec, MemorySink, run_plan,
};

fn hello() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/hello");
    assert!(
        p.is_file(),
        "{} missing: cargo build -p whisk-actions --release",
        p.display()
    );
    p
}

fn invoker(max: usize, pause: Duration) -> Invoker {
    let config = InvokerConfig::new()
        .with_pause_grace(pause)
        .with_init_param("WHISK_METRICS_DISABLED", "true")
        .with_concurrent_invocations_events(false);
    let spec = ActionSpec::new("/guest/hello", hello()).with_max_containers(max);
    Invoker::new(config, Arc::new(MemorySink::default()), vec![spec]).unwrap()
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

fn row(name: &str, n: usize, secs: f64, lat_ms: &mut [f64]) {
    println!(
        "{:<40} {:>7} {:>10.0} {:>9.3} {:>9.3} {:>9.3}",
        name,
        n,
        n as f64 / secs,
        pct(lat_ms, 0.5),
        pct(lat_ms, 0.95),
        pct(lat_ms, 0.99)
    );
}

fn one(inv: &Invoker) -> (f64, bool) {
    let t = Instant::now();
    match inv
        .invoke("guest/hello", json!({"name": "bench"}), Instant::now())
        .unwrap()
    {
        Invocation::Completed(r) => {
            assert_eq!(r.status_code, 0);
            (t.elapsed().as_secs_f64() * 1000.0, r.cold)
        }
        other => panic!("{other:?}"),
    }
}

fn main() {
    println!(
        "{:<40} {:>7} {:>10} {:>9} {:>9} {:>9}",
        "case", "n", "act/s", "p50 ms", "p95 ms", "p99 ms"
    );

    // Warm, never frozen (pause grace longer than the run).
    let inv = invoker(1, Duration::from_secs(600));
    one(&inv);
    let n = 2000;
    let start = Instant::now();
    let mut lat: Vec<f64> = (0..n).map(|_| one(&inv).0).collect();
    row(
        "warm, sequential",
        n,
        start.elapsed().as_secs_f64(),
        &mut lat,
    );
    drop(inv);

    // Warm with a freeze/thaw between activations (pause grace 0).
    let inv = invoker(1, Duration::ZERO);
    one(&inv);
    let n = 500;
    let start = Instant::now();
    let mut lat = Vec::new();
    for _ in 0..n {
        std::thread::sleep(Duration::from_millis(3)); // let the freezer stop it
        lat.push(one(&inv).0);
    }
    let busy = start.elapsed().as_secs_f64() - n as f64 * 0.003;
    row("thaw + run (SIGCONT each time)", n, busy, &mut lat);
    let s = inv.stats();
    assert!(s[0].thaws > 0, "{s:?}");
    drop(inv);

    // Cold starts: a new invoker (and container) each time.
    let n = 50;
    let start = Instant::now();
    let mut lat = Vec::new();
    for _ in 0..n {
        let inv = invoker(1, Duration::from_secs(600));
        let (ms, cold) = one(&inv);
        assert!(cold);
        lat.push(ms);
    }
    row(
        "cold start + run",
        n,
        start.elapsed().as_secs_f64(),
        &mut lat,
    );

    // Load generator, 4 containers, 16 workers, offered far beyond capacity (20 000/s for 1 s):
    // the achieved rate is the emulator's throughput on this machine; latency is wait + run in
    // whole ms as the events report it.
    let inv = invoker(4, Duration::from_millis(50));
    let mut spec = LoadSpec::new(&["guest/hello".to_string()]);
    spec.rate = 20_000.0;
    spec.duration = Duration::from_secs(1);
    let plan = LoadPlan::generate(&spec);
    let summary = run_plan(&inv, &plan, 16, &AtomicBool::new(false), |_| {});
    assert_eq!(summary.completed as usize, plan.requests.len());
    let mut lat: Vec<f64> = summary
        .records
        .iter()
        .map(|(_, r)| (r.wait_ms + r.duration_ms) as f64)
        .collect();
    row(
        "saturated: 4 containers, 16 workers",
        summary.completed as usize,
        summary.elapsed.as_secs_f64(),
        &mut lat,
    );
}
