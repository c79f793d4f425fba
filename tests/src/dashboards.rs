//! Grafana dashboards of `dashboards/` as data: load them, list their panels and queries,
//! substitute template variables, extract metric names, check every query against a real
//! Prometheus, render the Prometheus scrape config for dynamic ports, and read the metric catalog.
//!
//! Files (relative to the repository root, see [`repo_dashboards_dir`]):
//! - `dashboards/grafana/dashboards/*.json`: the dashboards (Grafana schemaVersion 39).
//! - `dashboards/grafana/provisioning/`: datasource and dashboard provider for Grafana.
//! - `dashboards/prometheus/prometheus.yml`: scrape config, a template for tests and the demo
//!   (see [`render_prometheus_config`], [`with_gateway_target`]), loading
//!   `dashboards/prometheus/rules.yml`, the recording rules the dashboards use (see
//!   [`with_rules_file`]).
//! - `dashboards/catalog.json`: every exported family, plotted or not (see [`Catalog`]).
//!
//! The end-to-end test calls [`check_all_queries_return_data`] after its load:
//!
//! ```no_run
//! use whisk_tests::dashboards::{Vars, check_all_queries_return_data};
//! # fn main() -> Result<(), whisk_tests::dashboards::DashboardError> {
//! let vars = Vars::new().with("namespace", "guest").with("action", "hello");
//! let checked = check_all_queries_return_data("http://127.0.0.1:9090", &vars)?;
//! println!("{} queries returned data", checked.queries);
//! # Ok(()) }
//! ```

mod catalog;
mod check;
mod error;
mod model;
mod prometheus_config;
mod promql;
mod vars;

pub use catalog::{Catalog, CatalogEntry, PlotStatus};
pub use check::{
    CheckSummary, QueryOutcome, check_all_queries_parse, check_all_queries_return_data,
    check_queries, run_instant_query,
};
pub use error::DashboardError;
pub use model::{Dashboard, Query, QueryOrigin, load_dashboards, repo_dashboards_dir};
pub use prometheus_config::{
    COLLECTOR_MARKER, GATEWAY_MARKER, PUSHGATEWAY_MARKER, RULES_MARKER, prometheus_config_for,
    render_prometheus_config, with_gateway_target, with_rules_file,
};
pub use promql::{label_values_to_promql, metric_names};
pub use vars::{BUILTIN_VARIABLES, Vars, substitute, variable_references};
