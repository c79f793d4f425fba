//! The SDK's error type: what went wrong at registration or configuration, and how to fix it.

/// Why a metric could not be registered or the SDK could not be configured.
///
/// Registration errors happen when the action starts, never later at push time: a name the
/// Pushgateway would reject is refused here, so one bad metric cannot make every push fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The metric name is not a valid Prometheus name.
    #[error(
        "invalid metric name {name:?}: {reason}; use letters, digits, `_` and `:` and do not start with a digit"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The metric name uses a prefix or a name the SDK, the platform or the Pushgateway owns.
    #[error(
        "metric name {name:?} is reserved ({reason}); pick a name with your action's own prefix, e.g. `myaction_{name}`"
    )]
    ReservedName {
        /// The rejected name.
        name: String,
        /// Who owns it.
        reason: &'static str,
    },
    /// A label name is invalid or reserved.
    #[error("invalid label name {label:?} on metric {metric:?}: {reason}")]
    InvalidLabelName {
        /// The metric being registered.
        metric: String,
        /// The rejected label name.
        label: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A metric with this name (or a name it would collide with in the exposition) exists.
    #[error(
        "metric {name:?} is already registered (or collides with {existing:?}); register each metric once at start and keep the handle"
    )]
    Duplicate {
        /// The rejected name.
        name: String,
        /// The existing metric it collides with.
        existing: String,
    },
    /// The help text is empty.
    #[error("metric {name:?} needs a non-empty help text")]
    EmptyHelp {
        /// The metric being registered.
        name: String,
    },
    /// Histogram buckets are not finite and strictly increasing.
    #[error("invalid buckets for histogram {name:?}: {reason}")]
    InvalidBuckets {
        /// The histogram being registered.
        name: String,
        /// What is wrong with them.
        reason: String,
    },
    /// The `prometheus` crate refused the metric for another reason.
    #[error("metric {name:?} rejected by the prometheus registry: {source}")]
    Prometheus {
        /// The metric being registered.
        name: String,
        /// The underlying error.
        source: prometheus::Error,
    },
    /// The Pushgateway URL cannot be used.
    #[error("invalid Pushgateway URL {url:?}: {reason}; expected e.g. `http://pushgateway:9091`")]
    InvalidUrl {
        /// The rejected URL.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The CA file for `https://` cannot be used.
    #[error("cannot use the CA file {path:?} (WHISK_METRICS_CA_FILE): {reason}")]
    InvalidCaFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Result with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
