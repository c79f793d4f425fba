//! The `hello` action: `{"name": "…"}` → `{"greeting": "Hello, …!"}`, counting greetings.

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
