//! Events → the platform metrics of docs/design.md, rendered as Prometheus text format 0.0.4.
//!
//! One hash lookup per activation: the key is (namespace, initiator, action) and the entry holds
//! every per-action series; `kind`/`memory` of `openwhisk_action_activations_total` live in a
//! tiny list inside the entry. Labels come from each event and are never frozen.

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};

use hashbrown::hash_map::EntryRef;
use hashbrown::{Equivalent, HashMap};

use crate::event::{Activation, Body, EventMessage, Metric, MetricKind};

/// Upper bounds (seconds) of the wait/init/duration histograms.
pub const TIME_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Upper bounds (bytes) of the response size histogram.
pub const SIZE_BUCKETS: [f64; 9] = [
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
];

/// Action label of the events of actions beyond `--max-actions`.
pub const OVERFLOW_ACTION: &str = "__overflow__";

const STATUS_LABELS: [&str; 5] = [
    "success",
    "application_error",
    "action_developer_error",
    "whisk_internal_error",
    "unknown",
];

/// What applying one event did, for the collector's own metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// An activation was counted under its own action.
    Activation,
    /// An activation was counted under [`OVERFLOW_ACTION`] because of `--max-actions`.
    OverflowActivation,
    /// A Metric event was applied.
    Metric,
}

/// The aggregated platform metrics.
#[derive(Debug)]
pub struct Aggregator {
    max_actions: usize,
    actions: HashMap<ActionKey, ActionSeries>,
    /// Entries under their own action name (overflow entries excluded).
    distinct_actions: usize,
    limit_concurrent: HashMap<Box<str>, u64>,
    limit_timed: HashMap<Box<str>, u64>,
    concurrent_invocations: HashMap<Box<str>, HashMap<Box<str>, i64>>,
    /// Partition of the latest `ConcurrentInvocations` of each (namespace, controller).
    concurrent_partition: HashMap<Box<str>, HashMap<Box<str>, i32>>,
    newest_timestamp_ms: Option<i64>,
}

/// Partition of events applied without one ([`Aggregator::apply`]).
const NO_PARTITION: i32 = -1;
/// Marks a gauge dropped by [`Aggregator::retain_partitions`] (not rendered until set again).
const DROPPED: i32 = i32::MIN;

impl Default for Aggregator {
    fn default() -> Self {
        Self::new(10_000)
    }
}

impl Aggregator {
    /// An empty aggregate holding at most `max_actions` distinct actions.
    pub fn new(max_actions: usize) -> Self {
        Self {
            max_actions,
            actions: HashMap::new(),
            distinct_actions: 0,
            limit_concurrent: HashMap::new(),
            limit_timed: HashMap::new(),
            concurrent_invocations: HashMap::new(),
            concurrent_partition: HashMap::new(),
            newest_timestamp_ms: None,
        }
    }

    /// Applies one event.
    pub fn apply(&mut self, event: &EventMessage<'_>) -> Applied {
        self.apply_from(event, NO_PARTITION)
    }

    /// Applies one event read from `partition`; the gauges it sets remember the partition
    /// (see [`Aggregator::retain_partitions`]).
    pub fn apply_from(&mut self, event: &EventMessage<'_>, partition: i32) -> Applied {
        if let Some(ts) = event.timestamp_ms {
            self.newest_timestamp_ms = Some(self.newest_timestamp_ms.map_or(ts, |t| t.max(ts)));
        }
        match &event.body {
            Body::Activation(a) => self.apply_activation(&event.namespace, a, partition),
            Body::Metric(m) => {
                self.apply_metric(&event.namespace, &event.source, m, partition);
                Applied::Metric
            }
        }
    }

    /// Drops the gauges (`openwhisk_action_memory`, `openwhisk_namespace_concurrent_invocations`)
    /// last set by an event of a partition not in `owned`: after a rebalance their new owner
    /// reports them, and two replicas must not both push one. Counters stay (they are the
    /// counts of the events this replica applied).
    pub fn retain_partitions(&mut self, owned: &[i32]) {
        for s in self.actions.values_mut() {
            if s.memory_partition != DROPPED && !owned.contains(&s.memory_partition) {
                s.memory_partition = DROPPED;
            }
        }
        let concurrent = &mut self.concurrent_invocations;
        self.concurrent_partition.retain(|ns, owners| {
            owners.retain(|controller, p| {
                if owned.contains(p) {
                    return true;
                }
                if let Some(per_controller) = concurrent.get_mut(ns) {
                    let _ = per_controller.remove(controller);
                }
                false
            });
            if owners.is_empty() {
                let _ = concurrent.remove(ns);
            }
            !owners.is_empty()
        });
    }

    fn apply_activation(&mut self, initiator: &str, a: &Activation<'_>, partition: i32) -> Applied {
        let mut key = KeyRef {
            namespace: a.namespace(),
            initiator,
            action: a.action(),
        };
        match self.actions.entry_ref(&key) {
            EntryRef::Occupied(o) => {
                o.into_mut().observe(a, partition);
                return Applied::Activation;
            }
            EntryRef::Vacant(v) if self.distinct_actions < self.max_actions => {
                self.distinct_actions += 1;
                v.insert(ActionSeries::default()).observe(a, partition);
                return Applied::Activation;
            }
            EntryRef::Vacant(_) => {}
        }
        key.action = OVERFLOW_ACTION;
        self.actions
            .entry_ref(&key)
            .or_default()
            .observe(a, partition);
        Applied::OverflowActivation
    }

    fn apply_metric(&mut self, namespace: &str, source: &str, m: &Metric, partition: i32) {
        match m.kind {
            MetricKind::ConcurrentRateLimit => bump(&mut self.limit_concurrent, namespace),
            MetricKind::TimedRateLimit => bump(&mut self.limit_timed, namespace),
            MetricKind::ConcurrentInvocations => {
                let per_controller = match self.concurrent_invocations.get_mut(namespace) {
                    Some(m) => m,
                    None => self
                        .concurrent_invocations
                        .entry(namespace.into())
                        .or_default(),
                };
                match per_controller.get_mut(source) {
                    Some(v) => *v = m.value,
                    None => {
                        let _ = per_controller.insert(source.into(), m.value);
                    }
                }
                let owners = match self.concurrent_partition.get_mut(namespace) {
                    Some(m) => m,
                    None => self
                        .concurrent_partition
                        .entry(namespace.into())
                        .or_default(),
                };
                match owners.get_mut(source) {
                    Some(p) => *p = partition,
                    None => {
                        let _ = owners.insert(source.into(), partition);
                    }
                }
            }
        }
    }

    /// Envelope timestamp (ms) of the newest applied event.
    pub fn newest_timestamp_ms(&self) -> Option<i64> {
        self.newest_timestamp_ms
    }

    /// Number of series currently held (a histogram counts once per label set).
    pub fn live_series(&self) -> usize {
        let per_action: usize = self.actions.values().map(ActionSeries::series).sum();
        per_action
            + self.limit_concurrent.len()
            + self.limit_timed.len()
            + self
                .concurrent_invocations
                .values()
                .map(HashMap::len)
                .sum::<usize>()
    }

    /// Distinct actions held under their own name.
    pub fn distinct_actions(&self) -> usize {
        self.distinct_actions
    }

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

fn bump(map: &mut HashMap<Box<str>, u64>, key: &str) {
    match map.get_mut(key) {
        Some(v) => *v += 1,
        None => {
            let _ = map.insert(key.into(), 1);
        }
    }
}

/// Owned key of the per-action map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ActionKey {
    namespace: Box<str>,
    initiator: Box<str>,
    action: Box<str>,
}

/// Borrowed form of [`ActionKey`], hashing identically.
#[derive(Debug, Clone, Copy)]
struct KeyRef<'a> {
    namespace: &'a str,
    initiator: &'a str,
    action: &'a str,
}

impl KeyRef<'_> {
    fn to_key(self) -> ActionKey {
        ActionKey {
            namespace: self.namespace.into(),
            initiator: self.initiator.into(),
            action: self.action.into(),
        }
    }
}

impl Hash for ActionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        KeyRef {
            namespace: &self.namespace,
            initiator: &self.initiator,
            action: &self.action,
        }
        .hash(state);
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.namespace.hash(state);
        self.initiator.hash(state);
        self.action.hash(state);
    }
}

impl Equivalent<ActionKey> for KeyRef<'_> {
    fn equivalent(&self, key: &ActionKey) -> bool {
        *key.namespace == *self.namespace
            && *key.action == *self.action
            && *key.initiator == *self.initiator
    }
}

impl From<&KeyRef<'_>> for ActionKey {
    fn from(k: &KeyRef<'_>) -> Self {
        k.to_key()
    }
}

/// A histogram with fixed bounds; `counts[i]` counts observations in bucket i only (not
/// cumulative), the last slot is above every bound.
#[derive(Debug, Clone)]
struct Histogram<const N: usize> {
    counts: [u64; N],
    overflow: u64,
    sum: f64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Self {
            counts: [0; N],
            overflow: 0,
            sum: 0.0,
        }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&mut self, bounds: &[f64; N], v: f64) {
        self.sum += v;
        match bounds.iter().position(|b| v <= *b) {
            Some(i) => self.counts[i] += 1,
            None => self.overflow += 1,
        }
    }

    fn count(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.overflow
    }
}

#[derive(Debug, Clone)]
struct KindCount {
    kind: Box<str>,
    memory: u64,
    count: u64,
}

/// Every series of one (namespace, initiator, action).
#[derive(Debug, Clone, Default)]
struct ActionSeries {
    activations: Vec<KindCount>,
    cold_starts: u64,
    status: [u64; 5],
    status_codes: Vec<(i64, u64)>,
    wait: Histogram<15>,
    init: Histogram<15>,
    duration: Histogram<15>,
    size: Option<Box<Histogram<9>>>,
    memory: u64,
    /// Partition of the event that set `memory` ([`DROPPED`]: not rendered).
    memory_partition: i32,
}

impl ActionSeries {
    fn observe(&mut self, a: &Activation<'_>, partition: i32) {
        match self
            .activations
            .iter_mut()
            .find(|k| k.memory == a.memory && *k.kind == *a.kind)
        {
            Some(k) => k.count += 1,
            None => self.activations.push(KindCount {
                kind: a.kind.as_ref().into(),
                memory: a.memory,
                count: 1,
            }),
        }
        let status = usize::try_from(a.status_code)
            .ok()
            .filter(|s| *s < 4)
            .unwrap_or(4);
        self.status[status] += 1;
        if let Some(code) = a.user_defined_status_code {
            match self.status_codes.iter_mut().find(|(c, _)| *c == code) {
                Some((_, n)) => *n += 1,
                None => self.status_codes.push((code, 1)),
            }
        }
        self.wait.observe(&TIME_BUCKETS, a.wait_time_ms / 1000.0);
        self.duration.observe(&TIME_BUCKETS, a.duration_ms / 1000.0);
        if a.is_cold_start() {
            self.cold_starts += 1;
            self.init.observe(&TIME_BUCKETS, a.init_time_ms / 1000.0);
        }
        if let Some(size) = a.size {
            #[allow(clippy::cast_precision_loss)]
            self.size
                .get_or_insert_with(Box::default)
                .observe(&SIZE_BUCKETS, size as f64);
        }
        self.memory = a.memory;
        self.memory_partition = partition;
    }

    fn series(&self) -> usize {
        self.activations.len()
            + usize::from(self.cold_starts > 0)
            + self.status.iter().filter(|s| **s > 0).count()
            + self.status_codes.len()
            + 2 // wait, duration
            + usize::from(self.init.count() > 0)
            + usize::from(self.size.is_some())
            + 1 // memory
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
            let mut kinds: Vec<&KindCount> = s.activations.iter().collect();
            kinds.sort_unstable_by(|a, b| (&a.kind, a.memory).cmp(&(&b.kind, b.memory)));
            for k in kinds {
                self.open("openwhisk_action_activations_total", key);
                self.out.push_str(",kind=\"");
                escape_into(self.out, &k.kind);
                let _ = write!(self.out, "\",memory=\"{}\"", k.memory);
                self.value_u64(k.count);
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
            let mut codes = s.status_codes.clone();
            codes.sort_unstable();
            for (code, n) in codes {
                self.open("openwhisk_action_status_code", key);
                let _ = write!(self.out, ",status_code=\"{code}\"");
                self.value_u64(n);
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
        for (key, s) in keys.iter().filter(|(_, s)| s.memory_partition != DROPPED) {
            self.open("openwhisk_action_memory", key);
            self.value_u64(s.memory);
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
            .flat_map(|(ns, m)| m.iter().map(move |(c, v)| (&**ns, &**c, *v)))
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

    fn namespace_counters(&mut self, name: &str, help: &str, map: &HashMap<Box<str>, u64>) {
        self.header(name, "counter", help);
        let mut rows: Vec<_> = map.iter().collect();
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

#[cfg(test)]
mod tests;
