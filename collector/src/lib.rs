//! # whisk-collector
//!
//! Consumes OpenWhisk's Kafka `events` topic (every schema generation of `EventMessage`) and
//! turns it into the platform metrics of OpenWhisk's user-events service (same names and
//! labels, so its dashboards keep working), with better buckets, labels taken from every
//! event, `ConcurrentInvocations` as a gauge per controller and a cardinality guard.
//!
//! The metrics are served on `/metrics` together with the collector's own `whisk_collector_*`
//! health metrics (text format 0.0.4, or OpenMetrics with the activation id as exemplar on the
//! duration, wait and init time buckets when the scraper's `Accept` asks for it, see
//! [`Exposition`]), and, with `--pushgateway-url`, PUT every `--push-interval` to this replica's
//! own group `job=openwhisk_platform, instance=<replica>`. A janitor deletes stale groups of
//! the SDK's job (learnt from each Pushgateway's listing or, with `--prometheus-url`, from the
//! Prometheus that scrapes them). Offsets are committed at least once: only after the event is applied and,
//! with a Pushgateway, only once a push that includes it succeeded.
//!
//! Names, flags and environment variables are the contracts of docs/design.md.
//!
//! ```
//! use whisk_collector::{Aggregator, parse};
//!
//! let msg = br#"{"body":{"name":"guest/hello","statusCode":0,"kind":"nodejs:20","memory":256,
//!   "duration":12,"waitTime":3,"initTime":0},"eventType":"Activation","source":"invoker0",
//!   "namespace":"guest","timestamp":1700000000000}"#;
//! let mut agg = Aggregator::new(10_000);
//! agg.apply(&parse(msg).unwrap());
//! assert!(agg.render_to_string().contains(
//!     r#"openwhisk_action_activations_total{namespace="guest",initiator="guest",action="hello",kind="nodejs:20",memory="256"} 1"#
//! ));
//! ```
//!
//! The binary is `config → run(config, shutdown)`; embedders call [`run`] the same way.
// Product code: no function over 100 lines (clippy.toml); tests and benches are exempt.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod aggregate;
mod allocator;
mod body;
mod config;
mod error;
mod event;
mod http;
mod internal_events;
mod janitor;
mod openmetrics;
mod push_loop;
mod render;
mod service;
mod shared;
mod sink;
mod source;

pub use aggregate::{Aggregator, Applied, Capped, Limits};
pub use allocator::tune_allocator;
pub use config::Config;
pub use error::{Error, Result};
pub use event::{
    Activation, Body, CausedBy, EventMessage, InvalidReason, Metric, MetricKind, ParseError, parse,
};
pub use janitor::prometheus::{PrometheusClient, PrometheusError};
pub use janitor::{
    ClashOrder, GuardDeleted, Janitor, JanitorError, JanitorRound, JanitorSource, PrunedGroup,
};
pub use openmetrics::Exposition;
pub use service::{run, shutdown_signal};
pub use sink::pushgateway::{PushgatewayClient, PushgatewayError};
