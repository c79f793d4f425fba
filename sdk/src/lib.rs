//! Per-container Prometheus metrics for Rust OpenWhisk actions, pushed to a Pushgateway at the
//! end of every activation, and the action loop that runs the action.
//!
//! # Usage
//!
//! Register metrics once at start, then hand the handler to [`run`]. The action is a normal
//! release-built executable named `exec`, zipped and deployed as a native (`--native` /
//! blackbox) action: the loop speaks the actionloop protocol of the OpenWhisk Go proxy itself.
//!
//! ```no_run
//! use serde_json::{Value, json};
//!
//! fn main() -> std::process::ExitCode {
//!     let greetings = whisk_metrics::counter("hello_greetings_total", "Greetings sent").unwrap();
//!     whisk_metrics::run(move |params: Value| -> Result<Value, String> {
//!         let name = params["name"].as_str().unwrap_or("stranger");
//!         greetings.inc();
//!         Ok(json!({ "greeting": format!("Hello, {name}!") }))
//!     })
//! }
//! ```
//!
//! Registration fails (at start, not at push time) for invalid names or label names, duplicates,
//! and names starting with the reserved prefixes `whisk_` (the SDK's built-ins) and `openwhisk_`
//! (the platform): the Pushgateway rejects a whole push when one name has two types anywhere on
//! it, so such clashes are refused up front. Label names `job`, `instance`, `namespace` and
//! `action` belong to the grouping key. Updating a metric is an atomic operation, cheap from any
//! thread.
//!
//! # The action loop
//!
//! [`run`] (or [`run_with_context`], whose handler also gets the [`Context`]) reads one JSON
//! line per activation from stdin, sets the `__OW_*` environment variables (`__OW_ACTION_NAME`,
//! `__OW_DEADLINE`, …) on the loop's thread before calling the handler, and writes exactly one
//! JSON line to fd 3: the handler's object or array, or `{"error": "..."}` for an `Err`, a
//! panic (caught; the process keeps serving), a non-object result or a malformed input line.
//! stdout and stderr are flushed after each activation. With `__OW_WAIT_FOR_ACK` set, the loop
//! first writes `{"ok":true}` to fd 3. When stdin closes, the container's group is deleted
//! from the Pushgateway (best effort) and the process exits. The handler runs on the main
//! thread; an action that starts its own threads must not read the environment from them while
//! the loop runs (`set_var` is not thread-safe). The loop needs no async runtime; an action
//! that uses tokio can `block_on` inside the handler. A panic is only caught with
//! `panic = "unwind"` (the default).
//!
//! # Push
//!
//! The whole registry is PUT in the text format (LF endings, no timestamps) to
//! `/metrics/job@base64/<job>/instance@base64/<id>/namespace@base64/<ns>/action@base64/<action>`,
//! every value URL-safe base64 (`=` for an empty value). `<id>` is 32 random hex characters made
//! once per process from the OS RNG; `<ns>` and `<action>` come from `__OW_ACTION_NAME`
//! (`/ns/pkg/a` → `ns`, `pkg/a`), as the platform metrics split it.
//!
//! - **When.** By default ([`PushMode::AfterResult`]) right after the result line is written to
//!   fd 3 (and the CPU yielded once, so the proxy takes the result first) and before the next
//!   stdin line is read: off the response path, and inside OpenWhisk's pause grace (≥ 50 ms)
//!   before the container is frozen; a push cut by a freeze completes after the thaw. [`PushMode::BeforeResult`] pushes before writing the result: nothing can
//!   be lost, but the push is on the response path.
//! - **Timeout.** `WHISK_METRICS_TIMEOUT_MS` (default 250 ms). In strict mode it is also bounded
//!   by `__OW_DEADLINE` minus a 20 ms margin, so the result is never late. In the default mode
//!   the result is already delivered, so the deadline no longer applies.
//! - **Failures** (anything but 200/202, a timeout, no connection) keep the state, count
//!   `whisk_push_failures_total`, print at most one line a minute on stderr and push again
//!   after the next activation. The action's result never changes because of metrics.
//! - **Minimum push interval** (`WHISK_METRICS_MIN_PUSH_INTERVAL_MS`, default 0): skips pushes
//!   closer together than this for hot containers. Its price: a container that is frozen for
//!   good or removed inside the interval loses the increments since its last push.
//! - **HTTP.** One keep-alive connection reused across activations; the host is resolved once
//!   (again after a failed request), not before every push. The client is `ureq` 3
//!   without default features: blocking, no async runtime, no threads of its own, so it works
//!   in an action without a runtime and does not panic in one that runs tokio (unlike
//!   `reqwest::blocking`), and keeps the executable small. HTTPS needs the `tls` cargo feature
//!   (rustls with the ring provider and webpki roots; no cmake). Basic auth from
//!   `WHISK_METRICS_USERNAME` / `WHISK_METRICS_PASSWORD`.
//! - **Pushgateway cost.** With its consistency check on, a Pushgateway re-checks everything it
//!   stores on every PUT (milliseconds at 10 groups, ~180 ms at 2 000 groups): prune stale groups
//!   or run it with `--push.disable-consistency-check`. The SDK stays bounded either way.
//!
//! # Configuration
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `WHISK_METRICS_PUSHGATEWAY_URL` | unset | base URL, e.g. `http://pushgateway:9091`; unset = keep metrics, never push (one notice on stderr) |
//! | `WHISK_METRICS_JOB` | `openwhisk_actions` | job of the grouping key |
//! | `WHISK_METRICS_TIMEOUT_MS` | `250` | push timeout |
//! | `WHISK_METRICS_PUSH_MODE` | `after-result` | `after-result` or `before-result` (strict) |
//! | `WHISK_METRICS_MIN_PUSH_INTERVAL_MS` | `0` | skip pushes closer together than this |
//! | `WHISK_METRICS_USERNAME` / `WHISK_METRICS_PASSWORD` | unset | basic auth |
//! | `WHISK_METRICS_DISABLED` | `false` | `true` turns pushing off |
//!
//! A malformed value is reported once on stderr and the default used. [`Config::from_env`] reads
//! them; its `with_*` setters override them: `ActionLoop::new(config).run(handler)`.
//!
//! # Built-in metrics
//!
//! | name | type | labels | help |
//! |---|---|---|---|
//! | `whisk_activations_total` | counter | `status` ∈ success, application_error, developer_error | Activations served by this container, by outcome |
//! | `whisk_activation_duration_seconds` | histogram | – | Handler run time per activation |
//! | `whisk_cold_start_seconds` | gauge | – | Process start to first result written |
//! | `whisk_container_start_time_seconds` | gauge | – | Unix time the process started |
//! | `whisk_last_activation_time_seconds` | gauge | – | Unix time the last activation finished |
//! | `whisk_push_failures_total` | counter | – | Pushes to the Pushgateway that failed |
//! | `whisk_push_duration_seconds` | histogram | – | Duration of pushes |
//! | `whisk_container_info` | gauge (=1) | `action_version`, `sdk_version` | identity of the container |
//!
//! Duration buckets: 0.005 … 300 s (the platform's time buckets); push buckets 0.001 … 1 s.
//! "Process start" is the first time the SDK is used (registering a metric or entering the
//! loop), i.e. the top of `main`. `status`: `application_error` is an `Err` from the handler,
//! `developer_error` a panic or a result that is not an object or array.

mod config;
mod context;
mod error;
mod exposition;
mod identity;
mod push;
mod registry;
mod resolve;
mod runtime;

pub use config::{Config, PushMode};
pub use context::Context;
pub use error::{Error, Result};
pub use identity::{ActionIdentity, instance_id};
pub use prometheus::{Gauge, GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec};
pub use push::{encode_value, group_path};
pub use registry::TIME_BUCKETS;
pub use runtime::{ActionLoop, run, run_with_context};

/// Registers a counter. Errors on invalid or reserved names and duplicates.
pub fn counter(name: &str, help: &str) -> Result<IntCounter> {
    touch().counter(name, help)
}

/// Registers a counter with labels.
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec> {
    touch().counter_vec(name, help, labels)
}

/// Registers a gauge.
pub fn gauge(name: &str, help: &str) -> Result<Gauge> {
    touch().gauge(name, help)
}

/// Registers a gauge with labels.
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> Result<GaugeVec> {
    touch().gauge_vec(name, help, labels)
}

/// Registers a histogram; empty `buckets` = the Prometheus default buckets.
pub fn histogram(name: &str, help: &str, buckets: &[f64]) -> Result<Histogram> {
    touch().histogram(name, help, buckets)
}

/// Registers a histogram with labels; empty `buckets` = the Prometheus default buckets.
pub fn histogram_vec(
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> Result<HistogramVec> {
    touch().histogram_vec(name, help, labels, buckets)
}

/// The text exposition of everything the SDK would push now (for logs and tests).
pub fn render() -> String {
    let mut buf = Vec::new();
    if let Err(e) = touch().encode(&mut buf) {
        eprintln!("whisk-metrics: encoding metrics failed: {e}");
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn touch() -> &'static registry::Metrics {
    runtime::process_start();
    registry::global()
}

/// Internals for the SDK's own benchmark (`benches/sdk.rs`); not a stable API.
#[doc(hidden)]
pub mod __bench {
    use crate::config::Config;
    use crate::identity::ActionIdentity;
    use crate::push::{PushOutcome, Pusher};

    /// A pusher for `config` (None when no URL is configured).
    pub struct BenchPusher(Pusher);

    impl BenchPusher {
        /// Builds the pusher.
        pub fn new(config: &Config) -> Option<Self> {
            Pusher::from_config(config).ok().flatten().map(Self)
        }

        /// One encode + PUT of the whole registry, as after an activation. True when it succeeded.
        pub fn push(&mut self, identity: &ActionIdentity) -> bool {
            self.0.push(crate::registry::global(), identity, None, true) == PushOutcome::Pushed
        }

        /// Only the gather + text encoding of a push (into the pusher's reused buffer); returns
        /// the body length.
        pub fn encode(&mut self) -> usize {
            self.0.encode_body(crate::registry::global())
        }

        /// The URL of the group.
        pub fn url(&mut self, identity: &ActionIdentity) -> String {
            self.0.group_url(identity).to_string()
        }
    }
}
