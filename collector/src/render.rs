//! The platform metrics as Prometheus text format 0.0.4: LF only, no timestamps, families in a
//! fixed order, series sorted by labels, written straight into the output buffer.

use std::fmt::Write as _;

use hashbrown::HashMap;
use whisk_grouping::TIME_BUCKETS;

use crate::aggregate::{
    ActionKey, ActionSeries, Aggregator, Histogram, OTHER_LABEL, SIZE_BUCKETS, STATUS_LABELS,
    Stamped,
};

impl Aggregator {
    /// Renders every `openwhisk_*` family in text format 0.0.4 (LF only, no timestamps,
    /// families in a fixed order, series sorted by labels).
    pub fn render(&self, out: &mut String) {
        let mut keys: Vec<(&ActionKey, &ActionSeries)> = self.actions.iter().collect();
        keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let r = Renderer { out, keys: &keys };
        r.render_all(self);
    }

    /// [`Aggregator::render`] into a new string.
    pub fn render_to_string(&self) -> String {
        let mut s = String::with_capacity(4096 + self.actions.len() * 6000);
        self.render(&mut s);
        s
    }
}

struct Renderer<'a, 'k> {
    out: &'a mut String,
    keys: &'a [(&'k ActionKey, &'k ActionSeries)],
}

impl Renderer<'_, '_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(help);
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind);
        self.out.push('\n');
    }

    /// Writes `name{namespace="…",initiator="…",action="…"` (without the closing brace).
    fn open(&mut self, name: &str, key: &ActionKey) {
        self.out.push_str(name);
        self.out.push_str("{namespace=\"");
        escape_into(self.out, &key.namespace);
        self.out.push_str("\",initiator=\"");
        escape_into(self.out, &key.initiator);
        self.out.push_str("\",action=\"");
        escape_into(self.out, &key.action);
        self.out.push('"');
    }

    fn value_u64(&mut self, v: u64) {
        let _ = writeln!(self.out, "}} {v}");
    }

    fn render_all(mut self, agg: &Aggregator) {
        let keys = self.keys;

        self.header(
            "openwhisk_action_activations_total",
            "counter",
            "Activation Count",
        );
        for (key, s) in keys {
            for k in &s.activations {
                self.open("openwhisk_action_activations_total", key);
                self.out.push_str(",kind=\"");
                escape_into(self.out, &k.kind);
                let _ = write!(self.out, "\",memory=\"{}\"", k.memory);
                self.value_u64(k.count);
            }
            if s.activations_other > 0 {
                self.open("openwhisk_action_activations_total", key);
                let _ = write!(self.out, ",kind=\"{OTHER_LABEL}\",memory=\"{OTHER_LABEL}\"");
                self.value_u64(s.activations_other);
            }
        }

        self.header(
            "openwhisk_action_coldStarts_total",
            "counter",
            "Cold start counts",
        );
        for (key, s) in keys.iter().filter(|(_, s)| s.cold_starts > 0) {
            self.open("openwhisk_action_coldStarts_total", key);
            self.value_u64(s.cold_starts);
        }

        self.header(
            "openwhisk_action_status",
            "counter",
            "Activation failure status type",
        );
        for (key, s) in keys {
            for (i, label) in STATUS_LABELS
                .iter()
                .enumerate()
                .filter(|(i, _)| s.status[*i] > 0)
            {
                self.open("openwhisk_action_status", key);
                let _ = write!(self.out, ",status=\"{label}\"");
                self.value_u64(s.status[i]);
            }
        }

        self.header(
            "openwhisk_action_status_code",
            "counter",
            "status code returned in action result response set by developer",
        );
        for (key, s) in keys {
            for (code, n) in &s.status_codes {
                self.open("openwhisk_action_status_code", key);
                let _ = write!(self.out, ",status_code=\"{code}\"");
                self.value_u64(*n);
            }
            if s.status_code_other > 0 {
                self.open("openwhisk_action_status_code", key);
                let _ = write!(self.out, ",status_code=\"{OTHER_LABEL}\"");
                self.value_u64(s.status_code_other);
            }
        }

        self.histograms(
            "openwhisk_action_waitTime_seconds",
            "Internal system hold time",
            |s| Some(&s.wait),
        );
        self.histograms(
            "openwhisk_action_initTime_seconds",
            "Time it took to initialize an action, e.g. docker init",
            |s| (s.init.count() > 0).then_some(&s.init),
        );
        self.histograms(
            "openwhisk_action_duration_seconds",
            "Actual time the action code was running",
            |s| Some(&s.duration),
        );

        self.header(
            "openwhisk_action_response_size_bytes",
            "histogram",
            "Activation Response size",
        );
        for (key, s) in keys {
            if let Some(h) = &s.size {
                self.histogram(
                    "openwhisk_action_response_size_bytes",
                    key,
                    &SIZE_BUCKETS,
                    h,
                );
            }
        }

        self.header(
            "openwhisk_action_memory",
            "gauge",
            "Memory limit (MB) of the action containers, from the latest event",
        );
        for (key, s) in keys {
            self.open("openwhisk_action_memory", key);
            self.value_u64(s.memory);
        }

        self.header(
            "openwhisk_action_gb_seconds_total",
            "counter",
            "Duration (s) times memory limit (MB) / 1024, summed over activations",
        );
        for (key, s) in keys {
            self.open("openwhisk_action_gb_seconds_total", key);
            self.out.push_str("} ");
            push_f64(self.out, s.gb_seconds);
            self.out.push('\n');
        }

        self.header(
            "openwhisk_action_caused_activations_total",
            "counter",
            "Activations caused by a sequence or a conductor composition",
        );
        for (key, s) in keys {
            for (cause, n) in &s.caused {
                self.open("openwhisk_action_caused_activations_total", key);
                self.out.push_str(",caused_by=\"");
                escape_into(self.out, cause);
                self.out.push('"');
                self.value_u64(*n);
            }
        }

        self.namespace_counters(
            "openwhisk_action_limit_concurrent_total",
            "a user has exceeded its limit for concurrent invocations",
            &agg.limit_concurrent,
        );
        self.namespace_counters(
            "openwhisk_action_limit_timed_total",
            "the user has reached its per minute limit for the number of invocations",
            &agg.limit_timed,
        );

        self.header(
            "openwhisk_namespace_concurrent_invocations",
            "gauge",
            "In-flight invocations of a namespace as last reported by each controller",
        );
        let mut ci: Vec<(&str, &str, i64)> = agg
            .concurrent_invocations
            .iter()
            .flat_map(|(ns, m)| m.iter().map(move |(c, v)| (&**ns, &**c, v.value)))
            .collect();
        ci.sort_unstable();
        for (ns, controller, v) in ci {
            self.out
                .push_str("openwhisk_namespace_concurrent_invocations{namespace=\"");
            escape_into(self.out, ns);
            self.out.push_str("\",controller=\"");
            escape_into(self.out, controller);
            let _ = writeln!(self.out, "\"}} {v}");
        }
    }

    fn namespace_counters(
        &mut self,
        name: &str,
        help: &str,
        map: &HashMap<Box<str>, Stamped<u64>>,
    ) {
        self.header(name, "counter", help);
        let mut rows: Vec<(&str, u64)> = map.iter().map(|(ns, v)| (&**ns, v.value)).collect();
        rows.sort_unstable();
        for (ns, v) in rows {
            self.out.push_str(name);
            self.out.push_str("{namespace=\"");
            escape_into(self.out, ns);
            let _ = writeln!(self.out, "\"}} {v}");
        }
    }

    fn histograms(
        &mut self,
        name: &str,
        help: &str,
        pick: impl Fn(&ActionSeries) -> Option<&Histogram<15>>,
    ) {
        self.header(name, "histogram", help);
        let keys = self.keys;
        for (key, s) in keys {
            if let Some(h) = pick(s) {
                self.histogram(name, key, &TIME_BUCKETS, h);
            }
        }
    }

    fn histogram<const N: usize>(
        &mut self,
        name: &str,
        key: &ActionKey,
        bounds: &[f64; N],
        h: &Histogram<N>,
    ) {
        let mut bucket = String::with_capacity(name.len() + 7);
        bucket.push_str(name);
        bucket.push_str("_bucket");
        let mut cumulative = 0;
        for (bound, n) in bounds.iter().zip(h.counts.iter()) {
            cumulative += n;
            self.open(&bucket, key);
            let _ = writeln!(self.out, ",le=\"{bound}\"}} {cumulative}");
        }
        cumulative += h.overflow;
        self.open(&bucket, key);
        let _ = writeln!(self.out, ",le=\"+Inf\"}} {cumulative}");
        self.open(&format!("{name}_sum"), key);
        self.out.push_str("} ");
        push_f64(self.out, h.sum);
        self.out.push('\n');
        self.open(&format!("{name}_count"), key);
        self.value_u64(cumulative);
    }
}

/// Appends `v` escaped for a label value: `\` → `\\`, `"` → `\"`, newline → `\n`.
pub(crate) fn escape_into(out: &mut String, v: &str) {
    if !v.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends a sample value in the text format (`+Inf`, `-Inf`, `NaN` spelled as Prometheus
/// expects them).
pub(crate) fn push_f64(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}
