//! The SDK's private Prometheus registry: validated registration of user metrics next to the
//! built-ins (`builtins`).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry,
};

use crate::builtins::{Builtins, Kind};
use crate::error::{Error, Result};
use crate::exposition::TextWriter;

/// Label names the grouping key owns (the Pushgateway overwrites them) or the exposition format
/// reserves.
const RESERVED_LABELS: [&str; 4] = ["job", "instance", "namespace", "action"];

/// Metric name prefixes owned by others, and who owns them. A family named like one of these
/// would clash with theirs in the shared Pushgateway (a type clash there makes its `/metrics`
/// answer 500 for everyone).
const RESERVED_PREFIXES: [(&str, &str); 5] = [
    (
        "whisk_",
        "the `whisk_` prefix belongs to the SDK's built-in metrics",
    ),
    (
        "openwhisk_",
        "the `openwhisk_` prefix belongs to the platform metrics",
    ),
    (
        "pushgateway_",
        "the Pushgateway exposes its own `pushgateway_*` metrics",
    ),
    (
        "go_",
        "the Pushgateway exposes its Go runtime's `go_*` metrics",
    ),
    (
        "process_",
        "the Pushgateway exposes its own `process_*` metrics",
    ),
];

/// Whole names owned by others, and why.
const RESERVED_NAMES: [(&str, &str); 4] = [
    (
        "push_time_seconds",
        "the Pushgateway adds this metric to every group",
    ),
    (
        "push_failure_time_seconds",
        "the Pushgateway adds this metric to every group",
    ),
    (
        "labels",
        "a family named `labels` overwrites the group's labels in the Pushgateway's /api/v1/metrics (the janitor could no longer see the group)",
    ),
    (
        "last_push_successful",
        "a family named `last_push_successful` overwrites that key of the Pushgateway's /api/v1/metrics",
    ),
];

/// A registry plus the table of every sample name it exposes, to refuse collisions up front.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// exposed sample name (`x`, `x_bucket`, `x_sum`, `x_count`) → family that owns it
    names: Mutex<HashMap<String, String>>,
    pub(crate) builtins: Builtins,
}

/// The process-wide registry every public registration function uses.
pub(crate) fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    /// A registry holding only the built-ins.
    // Registering the constant built-ins in a fresh registry cannot fail; the builtins tests
    // exercise every one of them.
    #[allow(clippy::expect_used)]
    pub(crate) fn new() -> Self {
        let (builtins, registrations) = Builtins::new();
        let metrics = Self {
            registry: Registry::new(),
            names: Mutex::new(HashMap::new()),
            builtins,
        };
        for (name, kind, collector) in registrations {
            metrics
                .register(name, kind, collector)
                .expect("built-in metric names are distinct and valid");
        }
        metrics
    }

    /// The text exposition (format 0.0.4: LF line endings, no timestamps) of every metric.
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) -> std::result::Result<(), prometheus::Error> {
        self.encode_with(&mut TextWriter::default(), buf)
    }

    /// Like [`Metrics::encode`], with a writer that keeps its caches between pushes.
    pub(crate) fn encode_with(
        &self,
        writer: &mut TextWriter,
        buf: &mut Vec<u8>,
    ) -> std::result::Result<(), prometheus::Error> {
        buf.clear();
        writer.encode(&self.registry.gather(), buf)
    }

    pub(crate) fn counter(&self, name: &str, help: &str) -> Result<IntCounter> {
        check_user(name, help, &[], Kind::Plain)?;
        let m = IntCounter::with_opts(Opts::new(name, help)).map_err(|e| prom(name, e))?;
        self.register(name, Kind::Plain, Box::new(m.clone()))?;
        Ok(m)
    }

    pub(crate) fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec> {
        check_user(name, help, labels, Kind::Plain)?;
        let m = IntCounterVec::new(Opts::new(name, help), labels).map_err(|e| prom(name, e))?;
        self.register(name, Kind::Plain, Box::new(m.clone()))?;
        Ok(m)
    }

    pub(crate) fn gauge(&self, name: &str, help: &str) -> Result<Gauge> {
        check_user(name, help, &[], Kind::Plain)?;
        let m = Gauge::with_opts(Opts::new(name, help)).map_err(|e| prom(name, e))?;
        self.register(name, Kind::Plain, Box::new(m.clone()))?;
        Ok(m)
    }

    pub(crate) fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> Result<GaugeVec> {
        check_user(name, help, labels, Kind::Plain)?;
        let m = GaugeVec::new(Opts::new(name, help), labels).map_err(|e| prom(name, e))?;
        self.register(name, Kind::Plain, Box::new(m.clone()))?;
        Ok(m)
    }

    pub(crate) fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Result<Histogram> {
        check_user(name, help, &[], Kind::Histogram)?;
        let opts = histogram_opts(name, help, buckets)?;
        let m = Histogram::with_opts(opts).map_err(|e| prom(name, e))?;
        self.register(name, Kind::Histogram, Box::new(m.clone()))?;
        Ok(m)
    }

    pub(crate) fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<HistogramVec> {
        check_user(name, help, labels, Kind::Histogram)?;
        let opts = histogram_opts(name, help, buckets)?;
        let m = HistogramVec::new(opts, labels).map_err(|e| prom(name, e))?;
        self.register(name, Kind::Histogram, Box::new(m.clone()))?;
        Ok(m)
    }

    /// Registers `collector` after checking that none of the sample names it exposes is taken.
    fn register(&self, name: &str, kind: Kind, collector: Box<dyn Collector>) -> Result<()> {
        let exposed: Vec<String> = match kind {
            Kind::Plain => vec![name.to_string()],
            Kind::Histogram => ["", "_bucket", "_sum", "_count"]
                .iter()
                .map(|suffix| format!("{name}{suffix}"))
                .collect(),
        };
        let mut names = self
            .names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = exposed.iter().find_map(|n| names.get(n)) {
            return Err(Error::Duplicate {
                name: name.to_string(),
                existing: existing.clone(),
            });
        }
        // A plain metric named like another histogram's sample (`h_count`) collides too.
        if let Kind::Plain = kind {
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    if let Some(existing) = names.get(base).filter(|f| f.as_str() == base) {
                        if names.contains_key(&format!("{base}_bucket")) {
                            return Err(Error::Duplicate {
                                name: name.to_string(),
                                existing: existing.clone(),
                            });
                        }
                    }
                }
            }
        }
        self.registry.register(collector).map_err(|e| match e {
            prometheus::Error::AlreadyReg => Error::Duplicate {
                name: name.to_string(),
                existing: name.to_string(),
            },
            other => prom(name, other),
        })?;
        for n in exposed {
            names.insert(n, name.to_string());
        }
        Ok(())
    }
}

fn prom(name: &str, source: prometheus::Error) -> Error {
    Error::Prometheus {
        name: name.to_string(),
        source,
    }
}

fn histogram_opts(name: &str, help: &str, buckets: &[f64]) -> Result<HistogramOpts> {
    let opts = HistogramOpts::new(name, help);
    if buckets.is_empty() {
        return Ok(opts);
    }
    if buckets.iter().any(|b| !b.is_finite()) {
        return Err(Error::InvalidBuckets {
            name: name.to_string(),
            reason: "bucket bounds must be finite (+Inf is added automatically)".into(),
        });
    }
    if buckets.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::InvalidBuckets {
            name: name.to_string(),
            reason: format!("bucket bounds must be strictly increasing, got {buckets:?}"),
        });
    }
    Ok(opts.buckets(buckets.to_vec()))
}

/// Checks a user metric's name, help and label names.
fn check_user(name: &str, help: &str, labels: &[&str], kind: Kind) -> Result<()> {
    validate_metric_name(name)?;
    let reserved = RESERVED_PREFIXES
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .or_else(|| RESERVED_NAMES.iter().find(|(n, _)| *n == name));
    if let Some((_, reason)) = reserved {
        return Err(Error::ReservedName {
            name: name.to_string(),
            reason,
        });
    }
    if help.trim().is_empty() {
        return Err(Error::EmptyHelp {
            name: name.to_string(),
        });
    }
    for (i, label) in labels.iter().enumerate() {
        let bad = |reason| Error::InvalidLabelName {
            metric: name.to_string(),
            label: label.to_string(),
            reason,
        };
        validate_label_name(label).map_err(bad)?;
        if RESERVED_LABELS.contains(label) {
            return Err(bad(
                "job, instance, namespace and action form the grouping key and are set by the SDK",
            ));
        }
        if matches!(kind, Kind::Histogram) && *label == "le" {
            return Err(bad("`le` is the bucket label of histograms"));
        }
        if labels[..i].contains(label) {
            return Err(bad("the label is listed twice"));
        }
    }
    Ok(())
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub(crate) fn validate_metric_name(name: &str) -> Result<()> {
    let bad = |reason| Error::InvalidName {
        name: name.to_string(),
        reason,
    };
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(bad("the name is empty")),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_' || c == ':') => {
            return Err(bad("the first character must be a letter, `_` or `:`"));
        }
        Some(_) => {}
    }
    if chars.any(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        return Err(bad("only ASCII letters, digits, `_` and `:` are allowed"));
    }
    Ok(())
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`.
fn validate_label_name(label: &str) -> std::result::Result<(), &'static str> {
    let mut chars = label.chars();
    match chars.next() {
        None => return Err("the label name is empty"),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            return Err("the first character must be a letter or `_`");
        }
        Some(_) => {}
    }
    if chars.any(|c| !(c.is_ascii_alphanumeric() || c == '_')) {
        return Err("only ASCII letters, digits and `_` are allowed");
    }
    if label.starts_with("__") {
        return Err("names starting with `__` are reserved for Prometheus");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        let mut buf = Vec::new();
        m.encode(&mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn rejects_invalid_metric_names() {
        let m = Metrics::new();
        for name in ["", "1abc", "a-b", "a b", "a.b", "ünïcode", "a\nb"] {
            let err = m.counter(name, "h").unwrap_err();
            assert!(matches!(err, Error::InvalidName { .. }), "{name:?}: {err}");
        }
        assert!(m.counter("ok_name:sub_total", "h").is_ok());
        assert!(m.counter("_leading_underscore", "h").is_ok());
    }

    #[test]
    fn rejects_reserved_prefixes_and_pushgateway_names() {
        let m = Metrics::new();
        for name in [
            "whisk_mine",
            "openwhisk_action_x",
            "push_time_seconds",
            "push_failure_time_seconds",
            "pushgateway_build_info",
            "go_goroutines",
            "process_resident_memory_bytes",
            "labels",
            "last_push_successful",
        ] {
            let err = m.gauge(name, "h").unwrap_err();
            assert!(matches!(err, Error::ReservedName { .. }), "{name}: {err}");
            let err = m.histogram(name, "h", &[]).unwrap_err();
            assert!(matches!(err, Error::ReservedName { .. }), "{name}: {err}");
        }
        for name in [
            "whiskey_bottles",
            "labels_total",
            "gopher_count",
            "processed_total",
        ] {
            assert!(m.gauge(name, "h").is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_invalid_and_reserved_label_names() {
        let m = Metrics::new();
        for labels in [
            &["__x"][..],
            &["1x"],
            &["a-b"],
            &[""],
            &["instance"],
            &["job"],
            &["action"],
            &["namespace"],
            &["region", "region"],
        ] {
            let err = m.counter_vec("c_total", "h", labels).unwrap_err();
            assert!(
                matches!(err, Error::InvalidLabelName { .. }),
                "{labels:?}: {err}"
            );
        }
        let err = m.histogram_vec("h_seconds", "h", &["le"], &[]).unwrap_err();
        assert!(matches!(err, Error::InvalidLabelName { .. }), "{err}");
        assert!(m.counter_vec("c_total", "h", &["region", "_kind"]).is_ok());
    }

    #[test]
    fn rejects_duplicates_and_histogram_sample_collisions() {
        let m = Metrics::new();
        m.counter("orders_total", "h").unwrap();
        assert!(matches!(
            m.counter("orders_total", "h"),
            Err(Error::Duplicate { .. })
        ));
        assert!(matches!(
            m.gauge("orders_total", "h"),
            Err(Error::Duplicate { .. })
        ));
        m.histogram("latency_seconds", "h", &[]).unwrap();
        assert!(matches!(
            m.counter("latency_seconds_count", "h"),
            Err(Error::Duplicate { .. })
        ));
        m.gauge("size_sum", "h").unwrap();
        assert!(matches!(
            m.histogram("size", "h", &[]),
            Err(Error::Duplicate { .. })
        ));
    }

    #[test]
    fn rejects_empty_help_and_bad_buckets() {
        let m = Metrics::new();
        assert!(matches!(
            m.counter("a_total", " "),
            Err(Error::EmptyHelp { .. })
        ));
        assert!(matches!(
            m.histogram("b", "h", &[1.0, 1.0]),
            Err(Error::InvalidBuckets { .. })
        ));
        assert!(matches!(
            m.histogram("c", "h", &[2.0, 1.0]),
            Err(Error::InvalidBuckets { .. })
        ));
        let err = m.histogram("d", "h", &[1.0, f64::INFINITY]).unwrap_err();
        assert!(matches!(err, Error::InvalidBuckets { .. }));
        assert!(m.histogram("e", "h", &[0.1, 1.0]).is_ok());
    }

    #[test]
    fn escapes_label_values_so_they_cannot_inject_samples() {
        let m = Metrics::new();
        let c = m
            .counter_vec("inj_total", "help with \\ and\nnewline", &["v"])
            .unwrap();
        c.with_label_values(&["a\"} 1\nevil_total 99\n# x \\"])
            .inc();
        let t = text(&m);
        assert!(
            t.contains("inj_total{v=\"a\\\"} 1\\nevil_total 99\\n# x \\\\\"} 1"),
            "label value not escaped:\n{t}"
        );
        assert!(
            t.contains("# HELP inj_total help with \\\\ and\\nnewline"),
            "{t}"
        );
        assert!(
            !t.lines().any(|l| l.starts_with("evil_total")),
            "injected a sample:\n{t}"
        );
        assert!(!t.contains('\r'));
    }

    #[test]
    fn user_metrics_appear_in_the_exposition() {
        let m = Metrics::new();
        let c = m
            .counter_vec("orders_placed_total", "Orders placed", &["region"])
            .unwrap();
        c.with_label_values(&["eu"]).inc_by(3);
        let h = m
            .histogram("orders_value", "Order value", &[10.0, 100.0])
            .unwrap();
        h.observe(12.0);
        let t = text(&m);
        assert!(t.contains("orders_placed_total{region=\"eu\"} 3\n"), "{t}");
        assert!(t.contains("orders_value_bucket{le=\"100\"} 1\n"), "{t}");
    }
}
