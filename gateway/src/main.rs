//! `whisk-gateway`: flags/env → [`Config`] → [`run`] until SIGINT/SIGTERM.
// Product code: no function over 100 lines (clippy.toml); tests and benches are exempt.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

use std::io::IsTerminal;
use std::process::ExitCode;

use whisk_gateway::{Config, run, shutdown_signal};

/// Every push allocates a few hundred small strings while it is parsed: mimalloc's thread-local
/// free lists make that a fraction of what glibc's (or, in the static image, musl's) malloc
/// costs (docs/benchmarks.md, "Gateway").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A bad configuration exits here with status 2 and a message naming the flag.
    let config = Config::parse_or_exit();
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.runtime_threads())
        .enable_all()
        .thread_name("whisk-gateway")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
