//! The SDK's private Prometheus registry: validated registration of user metrics next to the
//! built-ins (`builtins`).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry,
};

use whisk_grouping::{
    Clash, FamilyType, check_label_name, check_metric_name, find_clash, is_grouping_label, reserved,
};

use crate::builtins::{Builtins, Kind};
use crate::error::{Error, Result};
use crate::exposition::TextWriter;

/// A registry plus the table of every family it holds, to refuse clashes up front.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// family name → its type, for the shared clash rule ([`whisk_grouping::find_clash`])
    names: Mutex<HashMap<String, FamilyType>>,
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

    /// Registers `collector` after checking that its name is free and clashes with no
    /// registered family (the rule the Pushgateway's `/metrics` applies: `x_count` beside a
    /// histogram `x` fails it).
    fn register(&self, name: &str, kind: Kind, collector: Box<dyn Collector>) -> Result<()> {
        let family_type = match kind {
            Kind::Plain => FamilyType::Untyped,
            Kind::Histogram => FamilyType::Histogram,
        };
        let mut names = self
            .names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let existing = if names.contains_key(name) {
            Some(name.to_string())
        } else {
            // A plain family's own type does not matter here: its name is new, so only the
            // series names of histograms can clash with it.
            find_clash(name, family_type, |n| names.get(n).copied()).map(|clash| match clash {
                Clash::Type { name, .. } => name,
                Clash::Suffix { name: n, stem, .. } => {
                    if n == name {
                        stem
                    } else {
                        n
                    }
                }
            })
        };
        if let Some(existing) = existing {
            return Err(Error::Duplicate {
                name: name.to_string(),
                existing,
            });
        }
        self.registry.register(collector).map_err(|e| match e {
            prometheus::Error::AlreadyReg => Error::Duplicate {
                name: name.to_string(),
                existing: name.to_string(),
            },
            other => prom(name, other),
        })?;
        names.insert(name.to_string(), family_type);
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

/// Checks a user metric's name, help and label names (the rules are `whisk_grouping`'s, the
/// ones the gateway applies to a push).
fn check_user(name: &str, help: &str, labels: &[&str], kind: Kind) -> Result<()> {
    check_metric_name(name).map_err(|e| Error::InvalidName {
        name: name.to_string(),
        reason: e.reason(),
    })?;
    if let Some(reason) = reserved(name) {
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
        check_label_name(label).map_err(|e| bad(e.reason()))?;
        if is_grouping_label(label) {
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
    fn the_builtins_are_the_families_the_gateway_lets_through() {
        let m = Metrics::new();
        let mut registered: Vec<String> = m.names.lock().unwrap().keys().cloned().collect();
        let mut listed: Vec<String> = whisk_grouping::SDK_BUILTINS
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        registered.sort();
        listed.sort();
        assert_eq!(registered, listed);
        let text = text(&m);
        for (name, kind) in whisk_grouping::SDK_BUILTINS {
            let line = format!("# TYPE {name} {kind}\n");
            let typed = text.contains(&format!("# TYPE {name} "));
            assert!(
                !typed || text.contains(&line),
                "{name} is not a {kind}:\n{text}"
            );
        }
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
