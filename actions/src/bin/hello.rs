//! The `hello` action: `{"name": "…"}` → `{"greeting": "Hello, …!"}`, counting greetings.
// Product code: no function over 100 lines (clippy.toml); tests and benches are exempt.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

use std::process::ExitCode;

fn main() -> ExitCode {
    let hello = match whisk_actions::Hello::register() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("hello: cannot register metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    whisk_metrics::run(move |params| hello.handle(&params))
}
