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
//! What is pushed is exactly what [`render`] returns; for one counter:
//!
//! ```
//! let jobs = whisk_metrics::counter("doc_jobs_total", "Jobs done").unwrap();
//! jobs.inc_by(3);
//! let text = whisk_metrics::render();
//! let family: Vec<&str> = text
//!     .lines()
//!     .skip_while(|l| !l.ends_with(" doc_jobs_total Jobs done"))
//!     .take(3)
//!     .collect();
//! assert_eq!(
//!     family.join("\n"),
//!     "# HELP doc_jobs_total Jobs done\n# TYPE doc_jobs_total counter\ndoc_jobs_total 3"
//! );
//! ```
//!
//! Registration fails (at start, not at push time) for invalid names or label names, duplicates,
//! and reserved names: the prefixes `whisk_` (the SDK's built-ins), `openwhisk_` (the platform),
//! `pushgateway_`, `go_` and `process_` (the Pushgateway's own metrics), and the names
//! `push_time_seconds`, `push_failure_time_seconds` (added by the Pushgateway to every group),
//! `labels` and `last_push_successful` (keys of the Pushgateway's `/api/v1/metrics` that such a
//! family would overwrite). A name with two types in one Pushgateway makes its `/metrics` fail
//! for everyone, so such clashes are refused up front. Label names `job`, `instance`,
//! `namespace` and `action` belong to the grouping key. Updating a metric is an atomic
//! operation, cheap from any thread.
//!
//! # The action loop
//!
//! [`run`] (or [`run_with_context`], whose handler also gets the [`Context`]) reads one JSON
//! line per activation from stdin, sets the `__OW_*` environment variables (`__OW_ACTION_NAME`,
//! `__OW_DEADLINE`, …) on the loop's thread before calling the handler, and answers on fd 3 the
//! way the platform will judge the activation (the Go proxy's `runHandler` and `executor`):
//!
//! | handler | line on fd 3 | platform verdict | `whisk_activations_total{status}` |
//! |---|---|---|---|
//! | `Ok(object or array)` | the value | success | `success` |
//! | `Err(e)` | `{"error": "<e>"}` | application error | `application_error` |
//! | `Ok(string, number, boolean, null)` | the value as it is, after the push (the platform removes the container right after) | developer error (the proxy answers 502 "did not return a dictionary or array") | `developer_error` |
//! | panic (default, [`OnPanic::Exit`]) | none: the metrics are pushed, then the process exits with code 101 | developer error ("command exited"); the container is destroyed | `developer_error` |
//! | panic, `WHISK_METRICS_ON_PANIC=error-result` | `{"error": "the action panicked: <msg>"}`, serving goes on | application error; the container is kept | `developer_error` |
//! | malformed run line (not JSON, not an object, no `value`, any unusable field) | `{"error": "malformed activation input…"}` | application error | not counted |
//!
//! Between reading the line and writing the result the loop does only what the handler needs:
//! it reads the run line without building a JSON tree of it (only `value` becomes a
//! [`serde_json::Value`]), rewrites the `__OW_*` variables whose value changed in place (each
//! lives in a buffer of the loop's own, put into the environment once: no `setenv` per
//! activation, so no copy of every activation id kept by glibc either), and serialises the
//! result into a reused buffer. Counting the activation, its duration, CPU and peak memory, the
//! container's figures and the push all follow the result line (they precede it only when the
//! push must, see below) and always precede the push, so each push carries the activation it
//! follows. A variable the handler set or removed itself is noticed then and set again before
//! the next handler.
//!
//! No run line, however malformed, crashes the loop (a property test feeds it arbitrary JSON
//! objects and bytes). stdout and stderr are flushed after each activation. With
//! `__OW_WAIT_FOR_ACK` set, the loop first writes `{"ok":true}` to fd 3. When stdin closes, the
//! container's group is deleted from the Pushgateway (best effort) and the process exits; after
//! a panic the group stays (it carries the panic; the collector's janitor prunes it). The
//! handler runs on the main thread; an action that starts its own threads must not read the
//! environment from them while the loop runs (the loop changes it between activations without
//! a lock other threads would see). The loop needs no
//! async runtime; an action that uses tokio can `block_on` inside the handler. A panic is only
//! caught with `panic = "unwind"` (the default).
//!
//! # Push
//!
//! The whole registry is PUT in the text format (LF endings, no timestamps) to
//! `/metrics/job@base64/<job>/instance@base64/<id>/namespace@base64/<ns>/action@base64/<action>`,
//! every value URL-safe base64 (`=` for an empty value), written by
//! `whisk_grouping::GroupingKey::path`. `<id>` is 32 random hex characters made once per process
//! from the OS RNG; `<ns>` and `<action>` come from `__OW_ACTION_NAME` (`/ns/pkg/a` → `ns`,
//! `pkg/a`) by `whisk_grouping::ActionName::parse`, the rule the platform metrics use too; a name
//! that is not qualified (`a`, `/a`, `ns/`) gets an empty namespace and the whole name without
//! its leading `/` as the action.
//!
//! - **When.** By default ([`PushMode::AfterResult`]) right after the result line is written to
//!   fd 3 (and the CPU yielded once, so the proxy takes the result first) and before the next
//!   stdin line is read: off the response path, and inside OpenWhisk's pause grace (≥ 50 ms)
//!   before the container is frozen; a push cut by a freeze completes after the thaw, or, if
//!   it times out ≥ 1 s late (no host lookup in it), is counted `reason="frozen"` without
//!   back-off (once until a success), so the thawing activation pushes again (a PUT replaces
//!   the group: nothing doubles), unless within the minimum interval.
//!   [`PushMode::BeforeResult`] pushes before writing the result: nothing can be lost, but the
//!   push is on the response path.
//! - **Timeout.** `WHISK_METRICS_TIMEOUT_MS` (default 250 ms). In strict mode it is also bounded
//!   by `__OW_DEADLINE` minus a 20 ms margin, so the result is never late. In the default mode
//!   the result is already delivered, so the deadline no longer applies.
//! - **Failures** (anything but 200/202, a timeout, no connection) keep the state, count
//!   `whisk_push_failures_total{reason}` and **back off**: after a failure, pushes are skipped
//!   for 1 s, doubling with every further failure in a row up to 60 s, so a black-holed
//!   Pushgateway costs one timeout per interval instead of one per activation (a freeze is let
//!   off once, see above); the first push
//!   that succeeds carries everything. At most one notice a minute goes to stderr, with the
//!   reason and the gateway's one-line answer (e.g. `failed (rejected): the Pushgateway answered
//!   409: family jobs is a gauge elsewhere`), naming the activation whose push failed. It is
//!   printed right before a result line (the one of the same activation in strict mode; in the
//!   default mode, where the push follows the result, the next one: the proxy ends an
//!   activation's log as soon as its result line arrives), so it lands inside an activation's
//!   log instead of racing the proxy's end-of-log marker. The action's result never changes
//!   because of metrics.
//! - **Minimum push interval** (`WHISK_METRICS_MIN_PUSH_INTERVAL_MS`, default 0): skips pushes
//!   closer together than this for hot containers. Its price: a container that is frozen for
//!   good or removed inside the interval loses the increments since its last push.
//! - **Name resolution.** Every lookup of the Pushgateway's host runs on the loop's own thread
//!   (no resolver thread that could outlive a push and call `getaddrinfo` while the loop calls
//!   `set_var` for the next activation: undefined behaviour with glibc). The host is looked up at
//!   start, before the first line is read, and again only after a transport failure; lookups happen after the result
//!   is written (a strict-mode push before the result never waits for one: with nothing cached it
//!   fails as `transport` and the host is looked up once the result is out). A lookup is bounded
//!   by the system resolver's limits (`/etc/resolv.conf`), not by the push timeout.
//! - **HTTP.** One keep-alive connection reused across activations. The client is `ureq` 3
//!   without default features: blocking, no async runtime, no threads of its own, so it works
//!   in an action without a runtime and does not panic in one that runs tokio (unlike
//!   `reqwest::blocking`), and keeps the executable small. HTTPS needs the `tls` cargo feature
//!   (rustls with the ring provider; the webpki roots, or exactly the certificates of
//!   `WHISK_METRICS_CA_FILE`; no cmake).
//! - **Authentication.** Basic auth from `WHISK_METRICS_USERNAME` / `WHISK_METRICS_PASSWORD`, or,
//!   with `WHISK_METRICS_AUTH=api-key` (for a `whisk-gateway` in front of the Pushgateway), from
//!   the activation's own API key (`api_key` of the run line, else `__OW_API_KEY`; `uuid:key`
//!   split at the first `:`), re-read on every activation. The key is not sent over plain
//!   `http://` to a host that is not loopback unless `WHISK_METRICS_ALLOW_INSECURE_AUTH=true`;
//!   either way the process says so once on stderr.
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
//! | `WHISK_METRICS_AUTH` | `basic` | `api-key`: basic auth from the activation's API key |
//! | `WHISK_METRICS_ALLOW_INSECURE_AUTH` | `false` | `true` sends the API key over plain http to a non-loopback host |
//! | `WHISK_METRICS_CA_FILE` | unset | PEM file of the CA certificates to trust for https (`tls` feature) |
//! | `WHISK_METRICS_ON_PANIC` | `exit` | `exit` or `error-result` (see the table above) |
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
//! | `whisk_push_failures_total` | counter | `reason` ∈ rejected, unauthorized, unavailable, transport, frozen | Pushes to the Pushgateway that failed, by reason |
//! | `whisk_last_push_duration_seconds` | gauge | – | Duration of the last push attempt |
//! | `whisk_container_info` | gauge (=1) | `action_version`, `sdk_version` | identity of the container |
//! | `whisk_activation_cpu_seconds` | histogram | – | CPU time (user + system) the process used during each activation; buckets 0.001, 0.01, 0.1, 1, 10, 60 s |
//! | `whisk_activation_memory_peak_bytes` | histogram | – | Peak resident memory of the process during each activation; buckets 16, 32, 64, 128, 256, 512, 1024, 2048 MiB |
//! | `whisk_container_memory_bytes` | gauge | – | Memory the container uses now: cgroup v2 `memory.current`, v1 `memory.usage_in_bytes`, else the process's `VmRSS` |
//! | `whisk_container_memory_limit_bytes` | gauge | – | The cgroup's memory limit (`memory.max` / `memory.limit_in_bytes`); absent when unlimited |
//! | `whisk_container_cpu_seconds_total` | counter | – | CPU time of the container since it started: cgroup v2 `cpu.stat` `usage_usec`, v1 `cpuacct.usage`, else the process |
//! | `whisk_container_cpu_throttled_seconds_total` | counter | – | Time throttled by the CPU quota: cgroup v2 `cpu.stat` `throttled_usec`, v1 `throttled_time`; absent without a cgroup |
//!
//! Duration buckets: 0.005 … 300 s (the platform's time buckets). **Series per container: at
//! most 55** — 31 for the activity and push figures (activations 3, duration histogram 18, the
//! three time gauges 3, push failures 5, last push duration 1, info 1) and 24 for the resource
//! figures (CPU histogram 9, memory-peak histogram 11, the four container figures 1 each, when
//! readable); every series is multiplied by the number of live containers in the Pushgateway
//! and in Prometheus.
//!
//! How the resource figures are measured (`resources`): CPU per activation is the growth of
//! `getrusage(RUSAGE_SELF)` user + system time (all threads) from the moment the loop starts
//! waiting for the activation's line (blocked, it uses none) until the result line is written:
//! the handler plus the loop's few µs of reading the line and writing the result, with no
//! syscall on the response path. The peak is `VmHWM` from
//! `/proc/self/status`, read after the result is written; the high-water mark is reset after
//! every activation's push by writing `5` to `/proc/self/clear_refs`, so each observation is
//! that activation's peak (plus the little the loop touches). Where that write is refused (one
//! notice on stderr at start), the observation is the process's peak since it started. The
//! container's cgroup is found once at start from `/proc/self/cgroup` (v1 when it lists a
//! `memory` controller, else v2); its files are read after the result is written, with the push.
//! A file that is missing or unreadable makes its figure absent, never an error; a v1 CPU
//! controller left at the host's root `/` while memory is in a child cgroup is not the
//! container's and is ignored. Push failure reasons: `unauthorized` = 401/403, `rejected` =
//! any other 4xx (e.g. 400 malformed or reserved, 409 type clash), `unavailable` = 5xx or another
//! unexpected status, `transport` = no answer (refused, reset, unresolved, TLS handshake failed,
//! timed out, or no time left before the deadline in strict mode).
//!
//! "Process start" is the first time the SDK is used (registering a metric or entering the
//! loop), i.e. the top of `main`. `status`: see the action loop's table.
// Product code: no function over 100 lines (clippy.toml); tests and benches are exempt.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]
#![warn(missing_docs)]

mod builtins;
mod config;
mod context;
mod error;
mod exposition;
mod identity;
mod push;
mod registry;
mod resolve;
mod resources;
mod runline;
mod runtime;

pub use config::{Config, OnPanic, PushMode};
pub use context::Context;
pub use error::{Error, Result};
pub use prometheus::{Gauge, GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec};
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

    /// The group of `namespace`/`action` in this process.
    fn identity(namespace: &str, action: &str) -> ActionIdentity {
        ActionIdentity {
            namespace: namespace.to_string(),
            action: action.to_string(),
        }
    }

    impl BenchPusher {
        /// Builds the pusher.
        pub fn new(config: &Config) -> Option<Self> {
            Pusher::from_config(config).ok().flatten().map(Self)
        }

        /// One encode + PUT of the whole registry, as after an activation, to the group of
        /// `namespace`/`action`. True when it succeeded.
        pub fn push(&mut self, namespace: &str, action: &str) -> bool {
            let id = identity(namespace, action);
            self.0.push(crate::registry::global(), &id, "", None, true) == PushOutcome::Pushed
        }

        /// Only the gather + text encoding of a push (into the pusher's reused buffer); returns
        /// the body length.
        pub fn encode(&mut self) -> usize {
            self.0.encode_body(crate::registry::global())
        }

        /// The URL of the group of `namespace`/`action`.
        pub fn url(&mut self, namespace: &str, action: &str) -> String {
            self.0.group_url(&identity(namespace, action)).to_string()
        }
    }
}
