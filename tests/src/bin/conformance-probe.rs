//! A test-only action on the SDK for the conformance suite (tests/tests/conformance.rs). Params
//! `{"mode": …}`:
//!
//! | mode | answer |
//! |---|---|
//! | `ok` (default) | `{"ok": true}` |
//! | `echo` | the parameters, unchanged |
//! | `env` | `{"env": {NAME: value, …}}`, every variable of the process's environment |
//! | `number` / `null` / `string` | `42` / `null` / `"text"` (not an object) |
//! | `error` | an `Err` (an application error) |
//! | `panic` | a panic in the handler |
//! | `sleep` | `{"ok": true}` after `sleep_ms` (default 10) |
//!
//! Counts `probe_calls_total{mode}`. Cargo builds it for the crate's integration tests
//! (`CARGO_BIN_EXE_conformance-probe`); it is not an example for users (see `actions/`).

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Map, Value, json};

fn main() -> ExitCode {
    let calls = match whisk_metrics::counter_vec(
        "probe_calls_total",
        "Calls of the conformance probe by mode",
        &["mode"],
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    whisk_metrics::run(move |params: Value| -> Result<Value, String> {
        let mode = params["mode"].as_str().unwrap_or("ok").to_string();
        calls.with_label_values(&[&mode]).inc();
        match mode.as_str() {
            "echo" => Ok(params),
            "env" => {
                let env: Map<String, Value> = std::env::vars_os()
                    .map(|(k, v)| {
                        let k = k.to_string_lossy().into_owned();
                        (k, Value::String(v.to_string_lossy().into_owned()))
                    })
                    .collect();
                Ok(json!({ "env": env }))
            }
            "number" => Ok(json!(42)),
            "null" => Ok(Value::Null),
            "string" => Ok(json!("text")),
            "error" => Err("the probe failed as asked".to_string()),
            "panic" => panic!("the probe panicked as asked"),
            "sleep" => {
                let ms = params["sleep_ms"].as_u64().unwrap_or(10);
                std::thread::sleep(Duration::from_millis(ms));
                Ok(json!({ "ok": true, "slept_ms": ms }))
            }
            _ => Ok(json!({ "ok": true })),
        }
    })
}
