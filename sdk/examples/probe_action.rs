//! An action on the SDK for the integration tests and benchmarks. Params:
//! `{"mode": "ok|error|panic|sleep", "sleep_ms": n}`; counts `probe_calls_total{mode}`.
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
            "sleep" => {
                let ms = params["sleep_ms"].as_u64().unwrap_or(10);
                std::thread::sleep(Duration::from_millis(ms));
                Ok(json!({ "ok": true, "slept_ms": ms }))
            }
            _ => Ok(json!({ "ok": true, "activation_id": ctx.activation_id })),
        }
    })
}
