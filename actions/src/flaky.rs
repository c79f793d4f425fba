//! `flaky`: succeeds, fails, panics or sleeps on request, to exercise error paths and timeouts.

use std::time::Duration;

use serde_json::{Value, json};
use whisk_metrics::IntCounterVec;

use crate::params::{self, ParamError};

/// Upper bound of `sleep_ms` (OpenWhisk's largest action timeout, 5 minutes).
pub const MAX_SLEEP_MS: u64 = 300_000;

/// What `flaky` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlakyMode {
    /// Return `{"ok": true}`.
    Ok,
    /// Return an error (an application error).
    Error,
    /// Panic inside the handler.
    Panic,
    /// Sleep `sleep_ms`, then return `{"ok": true}` (past its deadline if the timeout is shorter).
    Sleep,
}

impl FlakyMode {
    /// The `mode` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Panic => "panic",
            Self::Sleep => "sleep",
        }
    }

    fn parse(s: &str) -> Result<Self, ParamError> {
        match s {
            "ok" => Ok(Self::Ok),
            "error" => Ok(Self::Error),
            "panic" => Ok(Self::Panic),
            "sleep" => Ok(Self::Sleep),
            other => Err(ParamError(format!(
                "parameter `mode` must be one of ok, error, panic, sleep; got {other:?}"
            ))),
        }
    }
}

/// The `flaky` action and its metric `flaky_calls_total{mode}`.
#[derive(Debug, Clone)]
pub struct Flaky {
    calls: IntCounterVec,
}

impl Flaky {
    /// Registers `flaky_calls_total` in the SDK's registry (once per process).
    pub fn register() -> Result<Self, whisk_metrics::Error> {
        Ok(Self::with_metrics(whisk_metrics::counter_vec(
            "flaky_calls_total",
            "Calls of the flaky action by requested mode",
            &["mode"],
        )?))
    }

    /// Uses an existing counter (tests).
    pub fn with_metrics(calls: IntCounterVec) -> Self {
        Self { calls }
    }

    /// `{"mode": "ok|error|panic|sleep" (default ok), "sleep_ms": n (default 1000)}`. Counts the
    /// call by mode before acting, so panics and timeouts are counted too.
    ///
    /// # Panics
    ///
    /// On purpose, in mode `panic`.
    pub fn handle(&self, params: &Value) -> Result<Value, ParamError> {
        let mode = FlakyMode::parse(params::string(params, "mode", "ok")?)?;
        let sleep_ms = params::count(params, "sleep_ms", 1000)?.min(MAX_SLEEP_MS);
        self.calls.with_label_values(&[mode.as_str()]).inc();
        match mode {
            FlakyMode::Ok => Ok(json!({ "ok": true })),
            FlakyMode::Error => Err(ParamError("flaky failed as asked (mode=error)".into())),
            FlakyMode::Panic => panic!("flaky panicked as asked (mode=panic)"),
            FlakyMode::Sleep => {
                std::thread::sleep(Duration::from_millis(sleep_ms));
                Ok(json!({ "ok": true, "slept_ms": sleep_ms }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    fn flaky() -> Flaky {
        Flaky::with_metrics(
            IntCounterVec::new(Opts::new("flaky_calls_total", "c"), &["mode"]).unwrap(),
        )
    }

    #[test]
    fn each_mode_does_what_it_says_and_is_counted() {
        let f = flaky();
        assert_eq!(f.handle(&json!({})).unwrap(), json!({"ok": true}));
        assert!(
            f.handle(&json!({"mode": "error"}))
                .unwrap_err()
                .0
                .contains("mode=error")
        );
        let slept = f.handle(&json!({"mode": "sleep", "sleep_ms": 20})).unwrap();
        assert_eq!(slept["slept_ms"], 20);
        let g = f.clone();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            g.handle(&json!({"mode": "panic"}))
        }));
        assert!(panicked.is_err());
        for mode in ["ok", "error", "sleep", "panic"] {
            assert_eq!(f.calls.with_label_values(&[mode]).get(), 1, "{mode}");
        }
    }

    #[test]
    fn unknown_mode_is_an_error_and_not_counted() {
        let f = flaky();
        assert!(
            f.handle(&json!({"mode": "explode"}))
                .unwrap_err()
                .0
                .contains("one of ok")
        );
        assert_eq!(f.calls.with_label_values(&["ok"]).get(), 0);
    }
}
