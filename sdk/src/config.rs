//! Configuration from the environment (OpenWhisk init parameters arrive there) and a builder
//! whose setters override it. Every default lives in [`Config::new`].

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

/// When the push happens relative to the activation's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PushMode {
    /// Push right after the result line is written to fd 3 and before the next stdin line is
    /// read: off the response path, inside OpenWhisk's pause grace. A push cut by a freeze
    /// completes after the thaw. `WHISK_METRICS_PUSH_MODE=after-result` (the default).
    #[default]
    AfterResult,
    /// Push before the result is written: nothing can be lost to a freeze or a kill, but the
    /// push is on the response path and counts toward the activation's duration.
    /// `WHISK_METRICS_PUSH_MODE=before-result`.
    BeforeResult,
}

/// What the loop does when the handler panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnPanic {
    /// Push the metrics (the activation counted `developer_error`), then end the process with
    /// exit code 101 without writing a result line, as an uncaught panic would: the proxy
    /// answers "command exited", the invoker records a developer error and destroys the
    /// (possibly poisoned) container. `WHISK_METRICS_ON_PANIC=exit` (the default).
    #[default]
    Exit,
    /// Write `{"error": "the action panicked: <message>"}` and keep serving: the platform
    /// records an application error and keeps the container.
    /// `WHISK_METRICS_ON_PANIC=error-result`.
    ErrorResult,
}

/// How the SDK pushes. Build it with [`Config::from_env`] (or [`Config::new`] for the defaults
/// without the environment) and override fields with the `with_*` setters.
///
/// ```
/// use std::time::Duration;
/// let config = whisk_metrics::Config::new()
///     .with_pushgateway_url("http://127.0.0.1:9091")
///     .with_timeout(Duration::from_millis(100));
/// assert_eq!(config.timeout(), Duration::from_millis(100));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub(crate) pushgateway_url: Option<String>,
    pub(crate) job: String,
    pub(crate) timeout: Duration,
    pub(crate) push_mode: PushMode,
    pub(crate) min_push_interval: Duration,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) disabled: bool,
    pub(crate) on_panic: OnPanic,
    pub(crate) api_key_auth: bool,
    pub(crate) allow_insecure_auth: bool,
    pub(crate) ca_file: Option<std::path::PathBuf>,
}

/// Default job of the grouping key.
pub(crate) const DEFAULT_JOB: &str = "openwhisk_actions";
/// Default push timeout.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

impl Config {
    /// The defaults: no Pushgateway (metrics are kept, never pushed), job `openwhisk_actions`,
    /// timeout 250 ms, push after the result, no minimum push interval, no auth, enabled, exit
    /// on a panic.
    pub fn new() -> Self {
        Self {
            pushgateway_url: None,
            job: DEFAULT_JOB.to_string(),
            timeout: DEFAULT_TIMEOUT,
            push_mode: PushMode::AfterResult,
            min_push_interval: Duration::ZERO,
            username: None,
            password: None,
            disabled: false,
            on_panic: OnPanic::Exit,
            api_key_auth: false,
            allow_insecure_auth: false,
            ca_file: None,
        }
    }

    /// The defaults overridden by the `WHISK_METRICS_*` environment variables. A malformed value
    /// is reported once on stderr and the default is used.
    pub fn from_env() -> Self {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Like [`Config::from_env`] with the variables read from `lookup` (used by tests).
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let mut c = Self::new();
        let get = |key: &str| {
            lookup(key)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if let Some(url) = get("WHISK_METRICS_PUSHGATEWAY_URL") {
            c.pushgateway_url = Some(url);
        }
        if let Some(job) = get("WHISK_METRICS_JOB") {
            c.job = job;
        }
        if let Some(v) = get("WHISK_METRICS_TIMEOUT_MS") {
            match v.parse::<u64>() {
                Ok(ms) if ms > 0 => c.timeout = Duration::from_millis(ms),
                _ => report_malformed(
                    "WHISK_METRICS_TIMEOUT_MS",
                    &v,
                    "a positive number of ms",
                    "250",
                ),
            }
        }
        if let Some(v) = get("WHISK_METRICS_PUSH_MODE") {
            match v.as_str() {
                "after-result" => c.push_mode = PushMode::AfterResult,
                "before-result" => c.push_mode = PushMode::BeforeResult,
                _ => report_malformed(
                    "WHISK_METRICS_PUSH_MODE",
                    &v,
                    "`after-result` or `before-result`",
                    "after-result",
                ),
            }
        }
        if let Some(v) = get("WHISK_METRICS_MIN_PUSH_INTERVAL_MS") {
            match v.parse::<u64>() {
                Ok(ms) => c.min_push_interval = Duration::from_millis(ms),
                _ => report_malformed(
                    "WHISK_METRICS_MIN_PUSH_INTERVAL_MS",
                    &v,
                    "a number of ms",
                    "0",
                ),
            }
        }
        c.username = get("WHISK_METRICS_USERNAME");
        c.password = lookup("WHISK_METRICS_PASSWORD").filter(|p| !p.is_empty());
        if let Some(v) = get("WHISK_METRICS_DISABLED") {
            match parse_bool(&v) {
                Some(b) => c.disabled = b,
                None => {
                    report_malformed("WHISK_METRICS_DISABLED", &v, "`true` or `false`", "false")
                }
            }
        }
        if let Some(v) = get("WHISK_METRICS_AUTH") {
            match v.as_str() {
                "api-key" => c.api_key_auth = true,
                "basic" => c.api_key_auth = false,
                _ => report_malformed(
                    "WHISK_METRICS_AUTH",
                    &v,
                    "`api-key` or `basic`",
                    "basic (WHISK_METRICS_USERNAME / WHISK_METRICS_PASSWORD when set)",
                ),
            }
        }
        if let Some(v) = get("WHISK_METRICS_ALLOW_INSECURE_AUTH") {
            match parse_bool(&v) {
                Some(b) => c.allow_insecure_auth = b,
                None => report_malformed(
                    "WHISK_METRICS_ALLOW_INSECURE_AUTH",
                    &v,
                    "`true` or `false`",
                    "false",
                ),
            }
        }
        c.ca_file = get("WHISK_METRICS_CA_FILE").map(std::path::PathBuf::from);
        if let Some(v) = get("WHISK_METRICS_ON_PANIC") {
            match v.as_str() {
                "exit" => c.on_panic = OnPanic::Exit,
                "error-result" => c.on_panic = OnPanic::ErrorResult,
                _ => report_malformed(
                    "WHISK_METRICS_ON_PANIC",
                    &v,
                    "`exit` or `error-result`",
                    "exit",
                ),
            }
        }
        c
    }

    /// Base URL of the Pushgateway, e.g. `http://pushgateway:9091` (`https://` needs the `tls`
    /// feature). Defaults to `WHISK_METRICS_PUSHGATEWAY_URL`, else none: metrics are kept but
    /// never pushed.
    #[must_use]
    pub fn with_pushgateway_url(mut self, url: impl Into<String>) -> Self {
        self.pushgateway_url = Some(url.into());
        self
    }

    /// Job of the grouping key. Defaults to `openwhisk_actions`.
    #[must_use]
    pub fn with_job(mut self, job: impl Into<String>) -> Self {
        self.job = job.into();
        self
    }

    /// Push timeout (connect + send + answer). Defaults to 250 ms. In
    /// [`PushMode::BeforeResult`] it is also bounded by the activation's `__OW_DEADLINE`.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// When to push. Defaults to [`PushMode::AfterResult`].
    #[must_use]
    pub fn with_push_mode(mut self, mode: PushMode) -> Self {
        self.push_mode = mode;
        self
    }

    /// Skip pushes closer together than `interval` after a successful push. Defaults to zero (push
    /// after every activation). The price: a container frozen for good or removed inside the
    /// interval loses the increments made since the last push.
    #[must_use]
    pub fn with_min_push_interval(mut self, interval: Duration) -> Self {
        self.min_push_interval = interval;
        self
    }

    /// Basic auth for the Pushgateway. Defaults to `WHISK_METRICS_USERNAME` /
    /// `WHISK_METRICS_PASSWORD`, else none.
    #[must_use]
    pub fn with_basic_auth(
        mut self,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// Turns pushing off (`true`) or on. Defaults to `WHISK_METRICS_DISABLED`, else `false`.
    #[must_use]
    pub fn with_disabled(mut self, disabled: bool) -> Self {
        self.disabled = disabled;
        self
    }

    /// Authenticate pushes with the activation's own OpenWhisk API key (`__OW_API_KEY`,
    /// `uuid:key`, sent as HTTP basic auth user `uuid`, password `key`; re-read on every
    /// activation) instead of [`Config::with_basic_auth`]'s fixed credentials. For a
    /// `whisk-gateway` in front of the Pushgateway. Refused (with one notice on stderr) over
    /// plain `http://` to a host that is not loopback unless
    /// [`Config::with_allow_insecure_auth`]. Defaults to `WHISK_METRICS_AUTH=api-key`, else off.
    #[must_use]
    pub fn with_api_key_auth(mut self, on: bool) -> Self {
        self.api_key_auth = on;
        self
    }

    /// Allow sending the API key over plain `http://` to a non-loopback host (one notice on
    /// stderr). Defaults to `WHISK_METRICS_ALLOW_INSECURE_AUTH`, else `false`.
    #[must_use]
    pub fn with_allow_insecure_auth(mut self, allow: bool) -> Self {
        self.allow_insecure_auth = allow;
        self
    }

    /// Trust only the CA certificates in this PEM file for `https://` (e.g. a private CA or a
    /// self-signed Pushgateway certificate) instead of the webpki roots. Needs the `tls`
    /// feature. Defaults to `WHISK_METRICS_CA_FILE`, else the webpki roots.
    #[must_use]
    pub fn with_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Whether pushes authenticate with the activation's API key.
    pub fn api_key_auth(&self) -> bool {
        self.api_key_auth
    }

    /// What to do when the handler panics. Defaults to `WHISK_METRICS_ON_PANIC`, else
    /// [`OnPanic::Exit`].
    #[must_use]
    pub fn with_on_panic(mut self, on_panic: OnPanic) -> Self {
        self.on_panic = on_panic;
        self
    }

    /// What the loop does when the handler panics.
    pub fn on_panic(&self) -> OnPanic {
        self.on_panic
    }

    /// The Pushgateway base URL, if any.
    pub fn pushgateway_url(&self) -> Option<&str> {
        self.pushgateway_url.as_deref()
    }

    /// The job of the grouping key.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The configured push timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The push mode.
    pub fn push_mode(&self) -> PushMode {
        self.push_mode
    }

    /// The minimum interval between pushes.
    pub fn min_push_interval(&self) -> Duration {
        self.min_push_interval
    }

    /// Whether pushing is turned off.
    pub fn disabled(&self) -> bool {
        self.disabled
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// One stderr line per malformed variable per process.
fn report_malformed(key: &str, value: &str, expected: &str, default: &str) {
    static REPORTED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut reported = REPORTED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if reported
        .get_or_insert_with(HashSet::new)
        .insert(key.to_string())
    {
        eprintln!(
            "whisk-metrics: ignoring {key}={value:?}: expected {expected}; using the default {default}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Config {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn empty_environment_gives_the_defaults() {
        assert_eq!(from(&[]), Config::new());
        assert_eq!(Config::new().job(), "openwhisk_actions");
        assert_eq!(Config::new().timeout(), Duration::from_millis(250));
        assert_eq!(Config::new().pushgateway_url(), None);
    }

    #[test]
    fn reads_every_variable() {
        let c = from(&[
            ("WHISK_METRICS_PUSHGATEWAY_URL", "http://pgw:9091"),
            ("WHISK_METRICS_JOB", "myjob"),
            ("WHISK_METRICS_TIMEOUT_MS", "100"),
            ("WHISK_METRICS_PUSH_MODE", "before-result"),
            ("WHISK_METRICS_MIN_PUSH_INTERVAL_MS", "1000"),
            ("WHISK_METRICS_USERNAME", "u"),
            ("WHISK_METRICS_PASSWORD", "p w"),
            ("WHISK_METRICS_DISABLED", "true"),
            ("WHISK_METRICS_ON_PANIC", "error-result"),
            ("WHISK_METRICS_AUTH", "api-key"),
            ("WHISK_METRICS_ALLOW_INSECURE_AUTH", "true"),
        ]);
        assert!(c.api_key_auth() && c.allow_insecure_auth);
        assert_eq!(c.on_panic(), OnPanic::ErrorResult);
        assert_eq!(c.pushgateway_url(), Some("http://pgw:9091"));
        assert_eq!(c.job(), "myjob");
        assert_eq!(c.timeout(), Duration::from_millis(100));
        assert_eq!(c.push_mode(), PushMode::BeforeResult);
        assert_eq!(c.min_push_interval(), Duration::from_secs(1));
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (Some("u"), Some("p w"))
        );
        assert!(c.disabled());
    }

    #[test]
    fn malformed_values_fall_back_to_defaults() {
        let c = from(&[
            ("WHISK_METRICS_TIMEOUT_MS", "fast"),
            ("WHISK_METRICS_PUSH_MODE", "sometimes"),
            ("WHISK_METRICS_MIN_PUSH_INTERVAL_MS", "-5"),
            ("WHISK_METRICS_DISABLED", "maybe"),
            ("WHISK_METRICS_ON_PANIC", "shrug"),
            ("WHISK_METRICS_AUTH", "kerberos"),
            ("WHISK_METRICS_ALLOW_INSECURE_AUTH", "perhaps"),
        ]);
        assert_eq!(c, Config::new());
        assert_eq!(
            from(&[("WHISK_METRICS_TIMEOUT_MS", "0")]).timeout(),
            DEFAULT_TIMEOUT
        );
    }

    #[test]
    fn builder_overrides_environment() {
        let c = from(&[
            ("WHISK_METRICS_PUSHGATEWAY_URL", "http://env:9091"),
            ("WHISK_METRICS_JOB", "envjob"),
            ("WHISK_METRICS_DISABLED", "true"),
        ])
        .with_pushgateway_url("http://builder:9091")
        .with_job("builderjob")
        .with_disabled(false)
        .with_push_mode(PushMode::BeforeResult);
        assert_eq!(c.pushgateway_url(), Some("http://builder:9091"));
        assert_eq!(c.job(), "builderjob");
        assert!(!c.disabled());
        assert_eq!(c.push_mode(), PushMode::BeforeResult);
    }
}
