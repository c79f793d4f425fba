//! Support for the workspace's cross-crate tests (`tests/tests/`): the Grafana dashboards and the
//! Prometheus config of `dashboards/` as data ([`dashboards`]).
//!
//! - `tests/e2e.rs`: the whole pipeline on real services — the invoker emulator running the
//!   example actions, tansu, the collector, the Pushgateway and Prometheus — with exact counts and
//!   every dashboard query returning data.
//! - `tests/deploy.rs`: the Kubernetes manifests rendered and validated offline, the collector
//!   run with the Deployment's flags.
//! - `tests/dashboards.rs`: the dashboards, the catalog and the scrape config checked against a
//!   real Prometheus.

pub mod dashboards;
