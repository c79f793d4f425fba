//! Events → the platform metrics of docs/design.md (rendered by [`crate::render`]).
//!
//! One hash lookup per activation: the key is (namespace, initiator, action) and the entry holds
//! every per-action series; `kind`/`memory` of `openwhisk_action_activations_total` live in a
//! tiny list inside the entry. Labels come from each event and are never frozen.

use std::hash::{Hash, Hasher};

use hashbrown::hash_map::EntryRef;
use hashbrown::{Equivalent, HashMap};

use whisk_grouping::TIME_BUCKETS;

use crate::event::{Activation, Body, EventMessage, Metric, MetricKind};

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

pub(crate) const STATUS_LABELS: [&str; 5] = [
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
    pub(crate) actions: HashMap<ActionKey, ActionSeries>,
    /// Entries under their own action name (overflow entries excluded).
    distinct_actions: usize,
    pub(crate) limit_concurrent: HashMap<Box<str>, u64>,
    pub(crate) limit_timed: HashMap<Box<str>, u64>,
    pub(crate) concurrent_invocations: HashMap<Box<str>, HashMap<Box<str>, i64>>,
    newest_timestamp_ms: Option<i64>,
}

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
            newest_timestamp_ms: None,
        }
    }

    /// Applies one event.
    pub fn apply(&mut self, event: &EventMessage<'_>) -> Applied {
        if let Some(ts) = event.timestamp_ms {
            self.newest_timestamp_ms = Some(self.newest_timestamp_ms.map_or(ts, |t| t.max(ts)));
        }
        match &event.body {
            Body::Activation(a) => self.apply_activation(&event.namespace, a),
            Body::Metric(m) => {
                self.apply_metric(&event.namespace, &event.source, m);
                Applied::Metric
            }
        }
    }

    fn apply_activation(&mut self, initiator: &str, a: &Activation<'_>) -> Applied {
        let mut key = KeyRef {
            namespace: a.namespace(),
            initiator,
            action: a.action(),
        };
        match self.actions.entry_ref(&key) {
            EntryRef::Occupied(o) => {
                o.into_mut().observe(a);
                return Applied::Activation;
            }
            EntryRef::Vacant(v) if self.distinct_actions < self.max_actions => {
                self.distinct_actions += 1;
                v.insert(ActionSeries::default()).observe(a);
                return Applied::Activation;
            }
            EntryRef::Vacant(_) => {}
        }
        key.action = OVERFLOW_ACTION;
        self.actions.entry_ref(&key).or_default().observe(a);
        Applied::OverflowActivation
    }

    fn apply_metric(&mut self, namespace: &str, source: &str, m: &Metric) {
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
pub(crate) struct ActionKey {
    pub(crate) namespace: Box<str>,
    pub(crate) initiator: Box<str>,
    pub(crate) action: Box<str>,
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
pub(crate) struct Histogram<const N: usize> {
    pub(crate) counts: [u64; N],
    pub(crate) overflow: u64,
    pub(crate) sum: f64,
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

    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.overflow
    }
}

#[derive(Debug, Clone)]
pub(crate) struct KindCount {
    pub(crate) kind: Box<str>,
    pub(crate) memory: u64,
    pub(crate) count: u64,
}

/// Every series of one (namespace, initiator, action).
#[derive(Debug, Clone, Default)]
pub(crate) struct ActionSeries {
    pub(crate) activations: Vec<KindCount>,
    pub(crate) cold_starts: u64,
    pub(crate) status: [u64; 5],
    pub(crate) status_codes: Vec<(i64, u64)>,
    pub(crate) wait: Histogram<15>,
    pub(crate) init: Histogram<15>,
    pub(crate) duration: Histogram<15>,
    pub(crate) size: Option<Box<Histogram<9>>>,
    pub(crate) memory: u64,
}

impl ActionSeries {
    fn observe(&mut self, a: &Activation<'_>) {
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

#[cfg(test)]
mod tests;
