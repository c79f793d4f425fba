//! The `flaky` action: `{"mode": "ok|error|panic|sleep", "sleep_ms": n}`, for error paths and
//! timeouts.

use std::process::ExitCode;

fn main() -> ExitCode {
    let flaky = match whisk_actions::Flaky::register() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("flaky: cannot register metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    whisk_metrics::run(move |params| flaky.handle(&params))
}
