//! `whisk-collector`: flags/env → [`Config`] → [`run`] until SIGINT/SIGTERM.

use std::io::IsTerminal;
use std::process::ExitCode;

use whisk_collector::{Config, run, shutdown_signal};

fn main() -> ExitCode {
    tune_glibc_malloc();
    // Invalid flags or env values exit here with status 2 and a message naming the flag.
    let config = Config::from_env_and_args();
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("whisk-collector")
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

/// glibc's malloc keeps memory freed by the render and HTTP threads in per-thread arenas: at
/// 10 000 actions that is ~10 MB of steady RSS and ~15 MB more when a scrape overlaps a push
/// (docs/benchmarks.md, "Memory at 10 000 actions"). One arena and a 128 KiB trim threshold give
/// it back; the same as `MALLOC_ARENA_MAX=1 MALLOC_TRIM_THRESHOLD_=131072`, which still win when
/// set. Called first, before any thread exists. The static musl build (the image) has another
/// allocator, which these parameters do not apply to (its memory is not measured yet).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_glibc_malloc() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator parameters; called before any other thread
        // runs. A 0 return (refused) leaves glibc's defaults, which are correct, only larger.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
    if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
        // SAFETY: as above.
        unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_glibc_malloc() {}
