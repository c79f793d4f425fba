//! The `flaky` action: `{"mode": "ok|error|panic|sleep", "sleep_ms": n}`, for error paths and
//! timeouts.
// Product code: no function over 100 lines (clippy.toml); tests and benches are exempt.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

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
