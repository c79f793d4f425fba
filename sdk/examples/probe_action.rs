//! An action on the SDK for the integration tests and benchmarks. Params:
//! `{"mode": "ok|error|panic|sleep|text|work", "sleep_ms": n, "mib": n, "cpu_ms": n}`; counts
//! `probe_calls_total{mode}`. `text` returns a JSON string (not an object); `work` allocates
//! `mib` MiB (touching every page) and burns `cpu_ms` ms of CPU time.
//!
//! Build: `cargo build --release -p whisk-metrics --example probe_action`, zip the binary as
//! `exec` and deploy it as a native action, or drive it over pipes like the tests do.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

fn main() -> ExitCode {
    let calls =
        match whisk_metrics::counter_vec("probe_calls_total", "Calls to the probe", &["mode"]) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
    whisk_metrics::run_with_context(move |params: Value, ctx| -> Result<Value, String> {
        let mode = params["mode"].as_str().unwrap_or("ok").to_string();
        if let Ok(c) = calls.get_metric_with_label_values(&[&mode]) {
            c.inc();
        }
        match mode.as_str() {
            "error" => Err("asked to fail".to_string()),
            "panic" => panic!("asked to panic"),
            "text" => Ok(json!("just text")),
            "sleep" => {
                let ms = params["sleep_ms"].as_u64().unwrap_or(10);
                std::thread::sleep(Duration::from_millis(ms));
                Ok(json!({ "ok": true, "slept_ms": ms }))
            }
            "work" => {
                let mib = params["mib"].as_u64().unwrap_or(0).min(1024);
                let cpu_ms = params["cpu_ms"].as_u64().unwrap_or(0).min(60_000);
                let touched = allocate(mib);
                burn(Duration::from_millis(cpu_ms));
                Ok(json!({ "ok": true, "touched_pages": touched }))
            }
            _ => Ok(json!({ "ok": true, "activation_id": ctx.activation_id })),
        }
    })
}

/// Allocates `mib` MiB and writes one byte per 4 KiB page, so every page is resident; returns
/// the pages touched. The memory is freed on return.
fn allocate(mib: u64) -> usize {
    let mut block = vec![0u8; usize::try_from(mib).unwrap_or(0) << 20];
    for page in block.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(&block)
        .iter()
        .step_by(4096)
        .filter(|b| **b == 1)
        .count()
}

/// Spins until this thread has used `cpu` of CPU time (`/proc/thread-self/schedstat`, ns), or,
/// where that cannot be read, for `cpu` of wall time.
fn burn(cpu: Duration) {
    fn thread_cpu() -> Option<Duration> {
        let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        let ns = text.split_whitespace().next()?.parse().ok()?;
        Some(Duration::from_nanos(ns))
    }
    let start_cpu = thread_cpu();
    let start = std::time::Instant::now();
    let mut x = 1u64;
    loop {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
        let used = match (start_cpu, thread_cpu()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => start.elapsed(),
        };
        if used >= cpu {
            break;
        }
    }
}
