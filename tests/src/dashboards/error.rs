//! Errors of the dashboard helpers.

use std::path::PathBuf;

/// What went wrong while loading, rendering or checking dashboards.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A file is not valid JSON.
    #[error("{path} is not valid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: serde_json::Error,
    },
    /// A file is valid JSON but not shaped as expected.
    #[error("{path}: {message}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
    /// An expression uses a variable the caller gave no value for.
    #[error(
        "variable `${name}` has no value (used in `{expr}`); give one with Vars::with(\"{name}\", …)"
    )]
    UnknownVariable {
        /// Variable name without `$`.
        name: String,
        /// The expression.
        expr: String,
    },
    /// The Prometheus config template lacks a target marker.
    #[error(
        "prometheus config template has no line with `{marker}` and its default `{default}`; keep the markers in dashboards/prometheus/prometheus.yml"
    )]
    MissingMarker {
        /// The marker comment.
        marker: &'static str,
        /// The default value (target or path) expected on that line.
        default: &'static str,
    },
    /// Talking to Prometheus failed (not a query error).
    #[error("HTTP GET {url} failed: {message}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// Some queries failed: Prometheus rejected them, or they returned no data.
    #[error("{} of {checked} dashboard queries failed:\n{}", failures.len(), failures.join("\n"))]
    Queries {
        /// How many queries were run.
        checked: usize,
        /// One line per failing query: dashboard, panel, expression and why.
        failures: Vec<String>,
    },
}
