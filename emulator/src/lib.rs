//! An OpenWhisk invoker emulator, for demos and end-to-end tests without an OpenWhisk.
//!
//! It runs real action executables (the `exec` of an OpenWhisk zip) exactly as the Go actionloop
//! proxy of the Rust runtime does ([`proxy`]), derives each activation's status and result from
//! the proxy's answer as the invoker does ([`verdict`]), keeps a container pool per action that
//! cold-starts, reuses, freezes (`SIGSTOP`), thaws (`SIGCONT`) and removes (`SIGKILL`) processes
//! as the invoker does ([`Invoker`]), each in its own memory cgroup where it can, runs sequences
//! as the controller does ([`SequenceSpec`]), and publishes one `Activation` event per
//! activation (and `ConcurrentRateLimit` events on throttling) to the broker's `events` topic in
//! OpenWhisk's exact format ([`EventMessage`], through an [`EventSink`]: [`KafkaSink`] or
//! [`MemorySink`]). [`ActionSpec`] and [`InvokerConfig`] hold the settings and their defaults,
//! [`ActionStats`] the per-action counters. [`LoadSpec`] and [`run_plan`] drive it with a rate,
//! an action mix and bursts; [`table`] renders the live per-action table; [`controller`] serves
//! the controller's namespaces endpoint. (Packaging the example actions as OpenWhisk zips is
//! `cargo xtask package`.)
//!
//! Each item has one path: the invoker's types at the crate root, the proxy driver, the verdicts,
//! the table and the controller in their modules.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Instant;
//! use whisk_emulator::{ActionSpec, Invocation, Invoker, InvokerConfig, KafkaSink};
//!
//! let sink = Arc::new(KafkaSink::new("127.0.0.1:9092", "events", &[]).unwrap());
//! let config = InvokerConfig::new().with_pushgateway_url("http://127.0.0.1:9091");
//! let hello = ActionSpec::new("/guest/hello", "target/release/hello");
//! let invoker = Invoker::new(config, sink.clone(), vec![hello]).unwrap();
//! let answer = invoker.invoke("guest/hello", serde_json::json!({"name": "you"}), Instant::now());
//! if let Ok(Invocation::Completed(a)) = answer {
//!     println!("{} {} cold={}", a.activation_id, a.result, a.cold);
//! }
//! ```
//!
//! # The binary
//!
//! `whisk-emulator run` is the demo's load with a live table (Ctrl-C or `--duration` stops it and
//! removes every container, frozen ones included):
//!
//! ```text
//! whisk-emulator run --brokers 127.0.0.1:9092 --pushgateway-url http://127.0.0.1:9091 \
//!     --action hello=target/release/hello --action orders=target/release/orders \
//!     --action flaky=target/release/flaky --action-timeout flaky=1s \
//!     --rate 20 --duration 120s --burst-every 15s --burst-size 30 --idle-timeout 10s
//! ```
//!
//! `--sequence pipeline=hello,flaky` adds a sequence (usable in `--mix` and `--params`),
//! `--wait-for-ack` runs the proxy as with `OW_WAIT_FOR_ACK`, `--no-cgroups` turns the
//! per-container memory cgroups off. `--controller-port 3233` serves the controller's
//! `GET /api/v1/namespaces` ([`controller`]) for a fresh API key per namespace and hands each
//! activation its namespace's key: with `--pushgateway-url` pointing at a `whisk-gateway
//! --openwhisk-api-host http://127.0.0.1:3233` and `--init-param WHISK_METRICS_AUTH=api-key`, the
//! actions push through the gateway with real authentication (what `scripts/demo.sh` does).
//!
//! # Tests
//!
//! `tests/pool.rs` runs the pool on real processes (shell actions), no services needed; every
//! wait there is on an event (a process state, a file the test creates, a count), never a fixed
//! sleep. The workspace's `tests/` crate holds the tests that drive the emulator with services:
//! `conformance.rs` holds the proxy driver and the verdicts to OpenWhisk's own actionloop proxy
//! (the same run lines through both give the same answers, verdicts and SDK counts); `e2e.rs`
//! needs tansu, `prometheus-pushgateway` and `prometheus` installed, and the
//! executables built first: `cargo build -p whisk-actions --release` (the newer of
//! `target/release` and the running test's own build is used; `WHISK_ACTIONS_DIR` overrides)
//! and whisk-collector of the running test's build (`WHISK_COLLECTOR_BIN` overrides). A
//! missing one fails the test with the command to run.
// Product code: no function over 100 lines (clippy.toml); tests and benches are exempt.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod cgroup;
mod container;
pub mod controller;
mod error;
mod events;
mod load;
mod pool;
pub mod proxy;
mod sequence;
mod spec;
mod stats;
pub mod table;
pub mod verdict;

pub use error::{Error, Result};
pub use events::{
    ActivationBody, DeliveryStats, EventBody, EventMessage, EventSink, KafkaSink, MemorySink,
    MetricBody,
};
pub use load::{
    LoadPlan, LoadSpec, LoadSummary, PlannedRequest, Progress, example_params, run_plan,
};
pub use pool::{ActivationRecord, Invocation, Invoker};
pub use sequence::SequenceSpec;
pub use spec::{ActionSpec, InvokerConfig};
pub use stats::ActionStats;
