//! The platform metrics as Prometheus text format 0.0.4 or OpenMetrics 1.0.0 (with the time
//! histograms' exemplars, see [`crate::openmetrics`]): LF only, no sample timestamps, families
//! in a fixed order, series sorted by labels, written straight into the output buffer.

use std::fmt::Write as _;

use hashbrown::HashMap;
use whisk_grouping::TIME_BUCKETS;

use crate::aggregate::{
    ActionKey, ActionSeries, Aggregator, Histogram, OTHER_LABEL, SIZE_BUCKETS, STATUS_LABELS,
    Stamped, Timed,
};
use crate::openmetrics::{self, Exposition};

impl Aggregator {
    /// Renders every `openwhisk_*` family in text format 0.0.4 (LF only, no timestamps,
    /// families in a fixed order, series sorted by labels).
    pub fn render(&self, out: &mut String) {
        self.render_as(Exposition::Text, out);
    }

    /// Renders every `openwhisk_*` family in `exposition`; OpenMetrics adds the exemplars
    /// (the `# EOF` that ends a whole answer is the caller's: more families may follow).
    pub fn render_as(&self, exposition: Exposition, out: &mut String) {
        let mut keys: Vec<(&ActionKey, &ActionSeries)> =
            self.actions.iter().map(|(k, s)| (k, &**s)).collect();
        keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let r = Renderer {
            out,
            keys: &keys,
            headers: true,
            exposition,
        };
        r.render_all(self);
    }

    /// [`Aggregator::render`] into a new string.
    pub fn render_to_string(&self) -> String {
        let mut s = String::with_capacity(4096 + self.actions.len() * 6000);
        self.render(&mut s);
        s
    }
}

/// A chunk is handed on once it holds this many bytes.
pub(crate) const CHUNK_BYTES: usize = 64 * 1024;

/// Actions rendered per hold of the aggregate's lock.
pub(crate) const ACTIONS_PER_LOCK: usize = 64;

/// Renders the `openwhisk_*` families in chunks of about `chunk_bytes`, so no render holds the
/// whole text: the sorted key list is taken once, then each family is rendered
/// `actions_per_lock` actions per hold of the lock (`lock()`), and every full chunk goes to
/// `emit` with the lock released. Actions evicted meanwhile are skipped; actions added
/// meanwhile appear in the next render. Returns `false` when `emit` refused a chunk.
pub(crate) fn render_chunked<G>(
    lock: impl Fn() -> G,
    agg_of: impl Fn(&G) -> &Aggregator,
    emit: impl FnMut(String) -> bool,
    chunk_bytes: usize,
    actions_per_lock: usize,
) -> bool {
    render_chunked_as(
        Exposition::Text,
        lock,
        agg_of,
        emit,
        chunk_bytes,
        actions_per_lock,
    )
}

/// [`render_chunked`] in `exposition`.
pub(crate) fn render_chunked_as<G>(
    exposition: Exposition,
    lock: impl Fn() -> G,
    agg_of: impl Fn(&G) -> &Aggregator,
    mut emit: impl FnMut(String) -> bool,
    chunk_bytes: usize,
    actions_per_lock: usize,
) -> bool {
    let mut keys: Vec<ActionKey> = {
        let guard = lock();
        agg_of(&guard).actions.keys().cloned().collect()
    };
    keys.sort_unstable();
    let fresh = || String::with_capacity(chunk_bytes + chunk_bytes / 2);
    let mut buf = fresh();
    for f in Family::ALL {
        let groups: Vec<&[ActionKey]> = if keys.is_empty() || !f.per_action() {
            vec![&[]]
        } else {
            keys.chunks(actions_per_lock.max(1)).collect()
        };
        for (i, group) in groups.into_iter().enumerate() {
            {
                let guard = lock();
                let agg = agg_of(&guard);
                let pairs: Vec<(&ActionKey, &ActionSeries)> = group
                    .iter()
                    .filter_map(|k| agg.actions.get_key_value(k))
                    .map(|(k, s)| (k, &**s))
                    .collect();
                let mut r = Renderer {
                    out: &mut buf,
                    keys: &pairs,
                    headers: i == 0,
                    exposition,
                };
                r.family(f, agg);
            }
            if buf.len() >= chunk_bytes && !emit(std::mem::replace(&mut buf, fresh())) {
                return false;
            }
        }
    }
    buf.is_empty() || emit(buf)
}

/// The families in the order they are rendered: the per-action ones, then the
/// namespace-level ones (rendered whole, never split across lock holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Activations,
    ColdStarts,
    Status,
    StatusCode,
    WaitTime,
    InitTime,
    Duration,
    ResponseSize,
    Memory,
    GbSeconds,
    Caused,
    /// `openwhisk_action_limit_*_total` and `openwhisk_namespace_concurrent_invocations`.
    Namespace,
}

impl Family {
    pub(crate) const ALL: [Family; 12] = [
        Family::Activations,
        Family::ColdStarts,
        Family::Status,
        Family::StatusCode,
        Family::WaitTime,
        Family::InitTime,
        Family::Duration,
        Family::ResponseSize,
        Family::Memory,
        Family::GbSeconds,
        Family::Caused,
        Family::Namespace,
    ];

    /// Whether the family is keyed by action (rendered a group of actions per lock hold).
    fn per_action(self) -> bool {
        self != Family::Namespace
    }
}

struct Renderer<'a, 'k> {
    out: &'a mut String,
    keys: &'a [(&'k ActionKey, &'k ActionSeries)],
    /// Whether `# HELP`/`# TYPE` lines are written (only for a family's first chunk).
    headers: bool,
    exposition: Exposition,
}

impl Renderer<'_, '_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        if !self.headers {
            return;
        }
        let (name, kind) = match self.exposition {
            Exposition::Text => (name, kind),
            Exposition::OpenMetrics => openmetrics::family(name, kind),
        };
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
        escape_into(self.out, key.namespace());
        self.out.push_str("\",initiator=\"");
        escape_into(self.out, key.initiator());
        self.out.push_str("\",action=\"");
        escape_into(self.out, key.action());
        self.out.push('"');
    }

    fn value_u64(&mut self, v: u64) {
        let _ = writeln!(self.out, "}} {v}");
    }

    /// Renders every family.
    fn render_all(mut self, agg: &Aggregator) {
        for f in Family::ALL {
            self.family(f, agg);
        }
    }

    /// Renders family `f` for `self.keys` (the namespace-level families from `agg`).
    fn family(&mut self, f: Family, agg: &Aggregator) {
        match f {
            Family::Activations => self.activations(),
            Family::ColdStarts => self.cold_starts(),
            Family::Status => self.status(),
            Family::StatusCode => self.status_codes(),
            Family::WaitTime => self.histograms("Internal system hold time", Timed::Wait),
            Family::InitTime => self.histograms(
                "Time it took to initialize an action, e.g. docker init",
                Timed::Init,
            ),
            Family::Duration => {
                self.histograms("Actual time the action code was running", Timed::Duration);
            }
            Family::ResponseSize => self.response_sizes(),
            Family::Memory => self.memory(),
            Family::GbSeconds => self.gb_seconds(),
            Family::Caused => self.caused(),
            Family::Namespace => self.namespace_families(agg),
        }
    }

    fn activations(&mut self) {
        const NAME: &str = "openwhisk_action_activations_total";
        self.header(NAME, "counter", "Activation Count");
        for (key, s) in self.keys {
            for k in &s.activations {
                self.open(NAME, key);
                self.out.push_str(",kind=\"");
                escape_into(self.out, &k.kind);
                let _ = write!(self.out, "\",memory=\"{}\"", k.memory);
                self.value_u64(k.count);
            }
            if s.activations_other > 0 {
                self.open(NAME, key);
                let _ = write!(self.out, ",kind=\"{OTHER_LABEL}\",memory=\"{OTHER_LABEL}\"");
                self.value_u64(s.activations_other);
            }
        }
    }

    fn cold_starts(&mut self) {
        const NAME: &str = "openwhisk_action_coldStarts_total";
        self.header(NAME, "counter", "Cold start counts");
        for (key, s) in self.keys.iter().filter(|(_, s)| s.cold_starts > 0) {
            self.open(NAME, key);
            self.value_u64(s.cold_starts);
        }
    }

    fn status(&mut self) {
        const NAME: &str = "openwhisk_action_status";
        self.header(NAME, "counter", "Activation failure status type");
        for (key, s) in self.keys {
            for (i, label) in STATUS_LABELS
                .iter()
                .enumerate()
                .filter(|(i, _)| s.status[*i] > 0)
            {
                self.open(NAME, key);
                let _ = write!(self.out, ",status=\"{label}\"");
                self.value_u64(s.status[i]);
            }
        }
    }

    fn status_codes(&mut self) {
        const NAME: &str = "openwhisk_action_status_code";
        self.header(
            NAME,
            "counter",
            "status code returned in action result response set by developer",
        );
        for (key, s) in self.keys {
            for (code, n) in &s.status_codes {
                self.open(NAME, key);
                let _ = write!(self.out, ",status_code=\"{code}\"");
                self.value_u64(*n);
            }
            if s.status_code_other > 0 {
                self.open(NAME, key);
                let _ = write!(self.out, ",status_code=\"{OTHER_LABEL}\"");
                self.value_u64(s.status_code_other);
            }
        }
    }

    fn response_sizes(&mut self) {
        const NAME: &str = "openwhisk_action_response_size_bytes";
        self.header(NAME, "histogram", "Activation Response size");
        for (key, s) in self.keys {
            if let Some(h) = &s.size {
                self.histogram(NAME, key, &SIZE_BUCKETS, h, None);
            }
        }
    }

    fn memory(&mut self) {
        const NAME: &str = "openwhisk_action_memory";
        self.header(
            NAME,
            "gauge",
            "Memory limit (MB) of the action containers, from the latest event",
        );
        for (key, s) in self
            .keys
            .iter()
            .filter(|(_, s)| s.memory_partition != crate::aggregate::DROPPED)
        {
            self.open(NAME, key);
            self.value_u64(s.memory);
        }
    }

    fn gb_seconds(&mut self) {
        const NAME: &str = "openwhisk_action_gb_seconds_total";
        self.header(
            NAME,
            "counter",
            "Duration (s) times memory limit (MB) / 1024, summed over activations",
        );
        for (key, s) in self.keys {
            self.open(NAME, key);
            self.out.push_str("} ");
            push_f64(self.out, s.gb_seconds);
            self.out.push('\n');
        }
    }

    fn caused(&mut self) {
        const NAME: &str = "openwhisk_action_caused_activations_total";
        self.header(
            NAME,
            "counter",
            "Activations caused by a sequence or a conductor composition",
        );
        for (key, s) in self.keys {
            for (cause, n) in &s.caused {
                self.open(NAME, key);
                self.out.push_str(",caused_by=\"");
                escape_into(self.out, cause);
                self.out.push('"');
                self.value_u64(*n);
            }
        }
    }

    fn namespace_families(&mut self, agg: &Aggregator) {
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
        const NAME: &str = "openwhisk_namespace_concurrent_invocations";
        self.header(
            NAME,
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
            self.out.push_str(NAME);
            self.out.push_str("{namespace=\"");
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

    /// One time histogram per action (`init` only for actions that had a cold start), with
    /// its exemplars in OpenMetrics.
    fn histograms(&mut self, help: &str, which: Timed) {
        let name = timed_family(which);
        self.header(name, "histogram", help);
        for (key, s) in self.keys {
            let h = s.timed(which);
            if which == Timed::Init && h.count() == 0 {
                continue;
            }
            let exemplars = (self.exposition == Exposition::OpenMetrics).then_some((*s, which));
            self.histogram(name, key, &TIME_BUCKETS, h, exemplars);
        }
    }

    /// `_bucket` lines (each followed by its exemplar when `exemplars` names the series and
    /// histogram to take them from), `_sum`, `_count`.
    fn histogram<const N: usize>(
        &mut self,
        name: &str,
        key: &ActionKey,
        bounds: &[f64; N],
        h: &Histogram<N>,
        exemplars: Option<(&ActionSeries, Timed)>,
    ) {
        let mut bucket = String::with_capacity(name.len() + 7);
        bucket.push_str(name);
        bucket.push_str("_bucket");
        let mut cumulative = 0;
        let counts = h.counts.iter().chain(std::iter::once(&h.overflow));
        for (i, n) in counts.enumerate() {
            cumulative += n;
            self.open(&bucket, key);
            match bounds.get(i) {
                Some(bound) => {
                    let _ = write!(self.out, ",le=\"{bound}\"}} {cumulative}");
                }
                None => {
                    let _ = write!(self.out, ",le=\"+Inf\"}} {cumulative}");
                }
            }
            if let Some(ex) = exemplars.and_then(|(s, which)| s.exemplar(which, i)) {
                openmetrics::push_exemplar(self.out, ex);
            }
            self.out.push('\n');
        }
        self.open(&format!("{name}_sum"), key);
        self.out.push_str("} ");
        push_f64(self.out, h.sum);
        self.out.push('\n');
        self.open(&format!("{name}_count"), key);
        self.value_u64(cumulative);
    }
}

/// The family name of a time histogram (its `_bucket` series carry the exemplars, here and in
/// a remote write).
pub(crate) fn timed_family(which: Timed) -> &'static str {
    match which {
        Timed::Wait => "openwhisk_action_waitTime_seconds",
        Timed::Init => "openwhisk_action_initTime_seconds",
        Timed::Duration => "openwhisk_action_duration_seconds",
    }
}

/// Appends `v` escaped for a label value: `\` → `\\`, `"` → `\"`, newline → `\n` (the
/// rule is `whisk_grouping`'s, shared with the SDK's exposition).
pub(crate) fn escape_into(out: &mut String, v: &str) {
    out.push_str(&whisk_grouping::escape_label_value(v));
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

#[cfg(test)]
mod tests;
