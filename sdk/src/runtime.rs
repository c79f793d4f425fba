//! The OpenWhisk action loop, as the Go actionloop proxy drives it: one JSON line per activation
//! on stdin, `__OW_*` variables set for the handler, exactly one JSON result line on fd 3,
//! stdout and stderr flushed, then the push (or the push first, in strict mode).

//!
//! [`ActionLoop`] is the entry point; `serving` holds the loop's state and answers one run line
//! at a time, `answer` decides what the handler's return means to the platform, and `owenv` keeps
//! the `__OW_*` variables.

mod answer;
mod owenv;
mod serving;

use std::fs::File;
use std::io::Write;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use serde_json::Value;

use crate::config::Config;
use crate::context::Context;
use answer::Flow;
use serving::Serving;

/// Exit code after a panic under [`crate::OnPanic::Exit`]: the code of an uncaught Rust panic.
const PANIC_EXIT_CODE: u8 = 101;

/// When the process started, as far as the SDK can tell: the first time the SDK is touched
/// (registering a metric or entering the loop), which is at the top of `main` in practice.
pub(crate) fn process_start() -> (Instant, SystemTime) {
    static START: OnceLock<(Instant, SystemTime)> = OnceLock::new();
    *START.get_or_init(|| (Instant::now(), SystemTime::now()))
}

/// Runs the action loop with the configuration from the environment. See the crate docs.
pub fn run<F, E>(handler: F) -> ExitCode
where
    F: FnMut(Value) -> Result<Value, E>,
    E: std::fmt::Display,
{
    ActionLoop::new(Config::from_env()).run(handler)
}

/// Like [`run`], with the activation's [`Context`] passed to the handler.
pub fn run_with_context<F, E>(handler: F) -> ExitCode
where
    F: FnMut(Value, &Context) -> Result<Value, E>,
    E: std::fmt::Display,
{
    ActionLoop::new(Config::from_env()).run_with_context(handler)
}

/// The action loop with an explicit [`Config`]:
/// `ActionLoop::new(Config::from_env().with_job("x")).run(handler)`.
#[derive(Debug)]
pub struct ActionLoop {
    config: Config,
}

/// The handler as the loop calls it (its error already a message).
type Handler<'a> = dyn FnMut(Value, &Context) -> Result<Value, String> + 'a;

impl ActionLoop {
    /// A loop that pushes according to `config`.
    pub fn new(config: Config) -> Self {
        Self { config }
    }

    /// Serves activations with `handler` until stdin closes. Returns success then, failure when
    /// fd 3 or stdin breaks.
    pub fn run<F, E>(self, mut handler: F) -> ExitCode
    where
        F: FnMut(Value) -> Result<Value, E>,
        E: std::fmt::Display,
    {
        self.run_dyn(&mut |value, _ctx: &Context| handler(value).map_err(|e| e.to_string()))
    }

    /// Like [`ActionLoop::run`], with the activation's [`Context`] passed to the handler.
    pub fn run_with_context<F, E>(self, mut handler: F) -> ExitCode
    where
        F: FnMut(Value, &Context) -> Result<Value, E>,
        E: std::fmt::Display,
    {
        self.run_dyn(&mut |value, ctx: &Context| handler(value, ctx).map_err(|e| e.to_string()))
    }

    fn run_dyn(self, handler: &mut Handler<'_>) -> ExitCode {
        let mut out = result_channel();
        if std::env::var_os("__OW_WAIT_FOR_ACK").is_some_and(|v| !v.is_empty()) {
            if let Err(e) = out.write_all(b"{\"ok\":true}\n").and_then(|()| out.flush()) {
                eprintln!("whisk-metrics: cannot write the start acknowledgement on fd 3: {e}");
                return ExitCode::FAILURE;
            }
        }
        let mut serving = Serving::new(&self.config);
        let stdin = std::io::stdin();
        match serving.serve(stdin.lock(), &mut out, handler) {
            Ok(Flow::Next) => ExitCode::SUCCESS,
            Ok(Flow::Exit) => {
                eprintln!(
                    "whisk-metrics: the action panicked; exiting without a result, as an uncaught \
                     panic would (WHISK_METRICS_ON_PANIC=error-result answers with an error instead)"
                );
                ExitCode::from(PANIC_EXIT_CODE)
            }
            Err(e) => {
                eprintln!("whisk-metrics: action loop stopped: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

/// fd 3 as the proxy passes it; stdout (with one notice) when the action runs without a proxy.
#[allow(unsafe_code)]
fn result_channel() -> Box<dyn Write> {
    // SAFETY: fcntl(F_GETFD) only queries the descriptor; it is valid to call on any number.
    let open = unsafe { libc::fcntl(3, libc::F_GETFD) } != -1;
    if open {
        use std::os::fd::FromRawFd;
        // SAFETY: fd 3 is open (checked above) and, by the actionloop protocol, is the result
        // pipe the proxy gave this process; nothing else in the process owns it.
        Box::new(unsafe { File::from_raw_fd(3) })
    } else {
        eprintln!(
            "whisk-metrics: fd 3 is not open (not run by an actionloop proxy); results go to stdout"
        );
        Box::new(std::io::stdout())
    }
}
