//! Events → the platform metrics of docs/design.md (rendered by [`crate::render`]).
//!
//! One hash lookup per activation: the key is (namespace, initiator, action) and the entry holds
//! every per-action series; `kind`/`memory` of `openwhisk_action_activations_total` live in a
//! tiny sorted list inside the entry. Labels come from each event and are never frozen.
//!
//! Bounded under hostile input ([`Limits`]): at most `--max-actions` actions, at most
//! `--max-status-codes-per-action` codes per action (the rest count as `status_code="other"`),
//! every new key charged against one series budget (`--max-series`), and keys idle longer than
//! `--evict-after` evicted by [`Aggregator::evict_idle`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use hashbrown::hash_map::EntryRef;

use crate::event::{Activation, Body, EventMessage, Metric, MetricKind};

mod exemplar;
mod series;

pub(crate) use exemplar::{ActivationId, Exemplar, LABEL as EXEMPLAR_LABEL, Timed};
pub(crate) use series::{ActionKey, ActionSeries, Histogram};
use series::{Ctx, KeyRef};

/// Upper bounds (bytes) of the response size histogram.
pub(crate) const SIZE_BUCKETS: [f64; 9] = [
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
pub(crate) const OVERFLOW_ACTION: &str = "__overflow__";

pub(crate) const STATUS_LABELS: [&str; 5] = [
    "success",
    "application_error",
    "action_developer_error",
    "whisk_internal_error",
    "unknown",
];

/// Label value under which capped keys are counted (`status_code`, `kind`/`memory`,
/// `caused_by`).
pub(crate) const OTHER_LABEL: &str = "other";

/// Series charged to the budget when an action entry is created: one of every per-action
/// series that is not keyed by something else (first kind/memory pair, the `other` rows,
/// cold starts, five statuses, the histograms, memory, GB-seconds).
const FIXED_SERIES_PER_ACTION: usize = 16;

/// Bounds of the aggregate: every map keyed by something a tenant controls is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Distinct actions held under their own name; further ones go to `__overflow__`.
    pub max_actions: usize,
    /// Series budget over every family (new keys beyond it are folded into `other` or
    /// `__overflow__`, or dropped for gauges, and counted).
    pub max_series: usize,
    /// Distinct `status_code` values per action; further codes count as `status_code="other"`.
    pub max_status_codes_per_action: usize,
    /// Keys idle longer than this are evicted (`Duration::ZERO`: never).
    pub evict_after: Duration,
}

impl Default for Limits {
    /// The flags' defaults: 10 000 actions, 400 000 series (10 000 actions with every status
    /// code slot used fit), 20 status codes per action, eviction after 1 h idle.
    fn default() -> Self {
        Self {
            max_actions: 10_000,
            max_series: 400_000,
            max_status_codes_per_action: 20,
            evict_after: Duration::from_secs(3600),
        }
    }
}

/// Events counted under a catch-all because a limit was reached, by limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capped {
    /// Status codes beyond `--max-status-codes-per-action` (counted as `other`).
    pub status_codes: u64,
    /// Keys refused by `--max-series` (folded into `other`/`__overflow__`, or dropped).
    pub series: u64,
}

/// What applying one event did, for the collector's own metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// An activation was counted under its own action.
    Activation,
    /// An activation was counted under the action `__overflow__` because of `--max-actions`
    /// (or the series budget).
    OverflowActivation,
    /// A Metric event was applied.
    Metric,
}

/// The series budget: how many series are charged against `max`.
#[derive(Debug, Clone, Copy)]
struct Budget {
    charged: usize,
    max: usize,
}

impl Budget {
    fn try_take(&mut self, n: usize) -> bool {
        if self.charged + n <= self.max {
            self.charged += n;
            true
        } else {
            false
        }
    }

    fn release(&mut self, n: usize) {
        self.charged = self.charged.saturating_sub(n);
    }
}

/// A counter of a namespace-keyed family and when it last moved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamped<T> {
    pub(crate) value: T,
    last_seen: Instant,
    charged: bool,
    /// Partition of the event that set a gauge ([`NO_PARTITION`] for counters).
    partition: i32,
}

/// Partition of events applied without one ([`Aggregator::apply`]).
const NO_PARTITION: i32 = -1;
/// Marks a gauge dropped by [`Aggregator::retain_partitions`] (not rendered until set again).
pub(crate) const DROPPED: i32 = i32::MIN;

/// The aggregated platform metrics.
#[derive(Debug, Clone)]
pub struct Aggregator {
    limits: Limits,
    budget: Budget,
    capped: Capped,
    /// Each entry's series behind an `Arc`: a snapshot for the push ([`Clone`]) shares them,
    /// and an event applied while the push streams copies only the entry it changes.
    pub(crate) actions: HashMap<ActionKey, Arc<ActionSeries>>,
    /// Entries under their own action name (overflow entries excluded).
    distinct_actions: usize,
    pub(crate) limit_concurrent: HashMap<Box<str>, Stamped<u64>>,
    pub(crate) limit_timed: HashMap<Box<str>, Stamped<u64>>,
    pub(crate) concurrent_invocations: HashMap<Box<str>, HashMap<Box<str>, Stamped<i64>>>,
    newest_timestamp_ms: Option<i64>,
    /// Activations whose id was too long to be an exemplar.
    exemplar_ids_too_long: u64,
}

impl Default for Aggregator {
    fn default() -> Self {
        Self::with_limits(Limits::default())
    }
}

impl Aggregator {
    /// An empty aggregate holding at most `max_actions` distinct actions (other limits at
    /// their defaults).
    pub fn new(max_actions: usize) -> Self {
        Self::with_limits(Limits {
            max_actions,
            ..Limits::default()
        })
    }

    /// An empty aggregate with these bounds.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            budget: Budget {
                charged: 0,
                max: limits.max_series,
            },
            capped: Capped::default(),
            actions: HashMap::new(),
            distinct_actions: 0,
            limit_concurrent: HashMap::new(),
            limit_timed: HashMap::new(),
            concurrent_invocations: HashMap::new(),
            newest_timestamp_ms: None,
            exemplar_ids_too_long: 0,
        }
    }

    /// Applies one event.
    pub fn apply(&mut self, event: &EventMessage<'_>) -> Applied {
        self.apply_at(event, Instant::now())
    }

    /// Applies one event seen at `now` (for eviction).
    pub fn apply_at(&mut self, event: &EventMessage<'_>, now: Instant) -> Applied {
        self.apply_from_at(event, NO_PARTITION, now)
    }

    /// Applies one event read from `partition`; the gauges it sets remember the partition
    /// (see [`Aggregator::retain_partitions`]).
    pub fn apply_from(&mut self, event: &EventMessage<'_>, partition: i32) -> Applied {
        self.apply_from_at(event, partition, Instant::now())
    }

    /// [`Aggregator::apply_from`] of an event seen at `now` (the consumer reads the clock once
    /// per message).
    pub(crate) fn apply_from_at(
        &mut self,
        event: &EventMessage<'_>,
        partition: i32,
        now: Instant,
    ) -> Applied {
        if let Some(ts) = event.timestamp_ms {
            self.newest_timestamp_ms = Some(self.newest_timestamp_ms.map_or(ts, |t| t.max(ts)));
        }
        match &event.body {
            Body::Activation(a) => {
                let exemplar = self.exemplar_of(a, event.timestamp_ms);
                self.apply_activation(&event.namespace, a, now, partition, exemplar)
            }
            Body::Metric(m) => {
                self.apply_metric(&event.namespace, &event.source, m, now, partition);
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
                Arc::make_mut(s).memory_partition = DROPPED;
            }
        }
        let budget = &mut self.budget;
        self.concurrent_invocations.retain(|_, per| {
            per.retain(|_, v| {
                if owned.contains(&v.partition) {
                    return true;
                }
                budget.release(usize::from(v.charged));
                false
            });
            !per.is_empty()
        });
    }

    /// The exemplar id and timestamp of an activation: none without an id, none (and
    /// counted) for an id past the exemplar label limit.
    fn exemplar_of(
        &mut self,
        a: &Activation<'_>,
        timestamp_ms: Option<i64>,
    ) -> Option<(ActivationId, i64)> {
        let id = match ActivationId::new(a.activation_id.as_deref()?) {
            Ok(id) => id?,
            Err(exemplar::IdTooLong) => {
                self.exemplar_ids_too_long += 1;
                return None;
            }
        };
        let ts = timestamp_ms.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        });
        Some((id, ts))
    }

    fn apply_activation(
        &mut self,
        initiator: &str,
        a: &Activation<'_>,
        now: Instant,
        partition: i32,
        exemplar: Option<(ActivationId, i64)>,
    ) -> Applied {
        let mut key = KeyRef {
            namespace: a.namespace(),
            initiator,
            action: a.action(),
        };
        let mut ctx = Ctx {
            budget: &mut self.budget,
            capped: &mut self.capped,
            max_codes: self.limits.max_status_codes_per_action,
            now,
            partition,
            exemplar,
        };
        if let Some(s) = self.actions.get_mut(&key) {
            Arc::make_mut(s).observe(a, &mut ctx);
            return Applied::Activation;
        }
        if self.distinct_actions < self.limits.max_actions {
            if ctx.budget.try_take(FIXED_SERIES_PER_ACTION) {
                self.distinct_actions += 1;
                let s = ActionSeries::new(now, false, FIXED_SERIES_PER_ACTION);
                insert(&mut self.actions, &key, s).observe(a, &mut ctx);
                return Applied::Activation;
            }
            ctx.capped.series += 1;
        }
        key.action = OVERFLOW_ACTION;
        if let Some(s) = self.actions.get_mut(&key) {
            Arc::make_mut(s).observe(a, &mut ctx);
            return Applied::OverflowActivation;
        }
        if ctx.budget.try_take(FIXED_SERIES_PER_ACTION) {
            let s = ActionSeries::new(now, true, FIXED_SERIES_PER_ACTION);
            insert(&mut self.actions, &key, s).observe(a, &mut ctx);
            return Applied::OverflowActivation;
        }
        // Not even room for this namespace's overflow entry: one catch-all entry, outside the
        // budget, keeps every activation counted.
        ctx.capped.series += 1;
        let all = KeyRef {
            namespace: OVERFLOW_ACTION,
            initiator: OVERFLOW_ACTION,
            action: OVERFLOW_ACTION,
        };
        match self.actions.entry_ref(&all) {
            EntryRef::Occupied(o) => Arc::make_mut(o.into_mut()).observe(a, &mut ctx),
            EntryRef::Vacant(v) => {
                Arc::make_mut(v.insert(Arc::new(ActionSeries::new(now, true, 0))))
                    .observe(a, &mut ctx);
            }
        }
        Applied::OverflowActivation
    }

    fn apply_metric(
        &mut self,
        namespace: &str,
        source: &str,
        m: &Metric,
        now: Instant,
        partition: i32,
    ) {
        let (budget, capped) = (&mut self.budget, &mut self.capped);
        match m.kind {
            MetricKind::ConcurrentRateLimit => {
                bump(&mut self.limit_concurrent, namespace, now, budget, capped);
            }
            MetricKind::TimedRateLimit => {
                bump(&mut self.limit_timed, namespace, now, budget, capped);
            }
            MetricKind::ConcurrentInvocations => {
                if let Some(v) = self
                    .concurrent_invocations
                    .get_mut(namespace)
                    .and_then(|per| per.get_mut(source))
                {
                    v.value = m.value;
                    v.last_seen = now;
                    v.partition = partition;
                    return;
                }
                // A gauge cannot be folded into a catch-all: beyond the budget it is dropped.
                if !budget.try_take(1) {
                    capped.series += 1;
                    return;
                }
                let per_controller = match self.concurrent_invocations.get_mut(namespace) {
                    Some(per) => per,
                    None => self
                        .concurrent_invocations
                        .entry(namespace.into())
                        .or_default(),
                };
                let _ = per_controller.insert(
                    source.into(),
                    Stamped {
                        value: m.value,
                        last_seen: now,
                        charged: true,
                        partition,
                    },
                );
            }
        }
    }

    /// Drops every key idle for longer than `--evict-after` at `now`; returns how many went.
    pub fn evict_idle(&mut self, now: Instant) -> usize {
        let max_idle = self.limits.evict_after;
        if max_idle.is_zero() {
            return 0;
        }
        let idle = |last: Instant| now.saturating_duration_since(last) > max_idle;
        let mut evicted = 0;
        let (budget, distinct) = (&mut self.budget, &mut self.distinct_actions);
        self.actions.retain(|_, s| {
            if !idle(s.last_seen) {
                return true;
            }
            budget.release(s.charged);
            if !s.overflow {
                *distinct -= 1;
            }
            evicted += 1;
            false
        });
        for map in [&mut self.limit_concurrent, &mut self.limit_timed] {
            map.retain(|_, v| {
                if !idle(v.last_seen) {
                    return true;
                }
                budget.release(usize::from(v.charged));
                evicted += 1;
                false
            });
        }
        self.concurrent_invocations.retain(|_, per| {
            per.retain(|_, v| {
                if !idle(v.last_seen) {
                    return true;
                }
                budget.release(usize::from(v.charged));
                evicted += 1;
                false
            });
            !per.is_empty()
        });
        evicted
    }

    /// Envelope timestamp (ms) of the newest applied event.
    pub fn newest_timestamp_ms(&self) -> Option<i64> {
        self.newest_timestamp_ms
    }

    /// Number of series currently held (a histogram counts once per label set).
    pub fn live_series(&self) -> usize {
        let per_action: usize = self.actions.values().map(|s| s.series()).sum();
        per_action
            + self.limit_concurrent.len()
            + self.limit_timed.len()
            + self
                .concurrent_invocations
                .values()
                .map(HashMap::len)
                .sum::<usize>()
    }

    /// Series charged against `--max-series` (never above it).
    pub fn charged_series(&self) -> usize {
        self.budget.charged
    }

    /// Events counted under a catch-all because a limit was reached, so far.
    pub fn capped(&self) -> Capped {
        self.capped
    }

    /// Activations carried as no exemplar because `activation_id="<id>"` would exceed
    /// OpenMetrics' 128 characters, so far (their samples are counted as usual).
    pub fn exemplar_ids_too_long(&self) -> u64 {
        self.exemplar_ids_too_long
    }

    /// Distinct actions held under their own name.
    pub fn distinct_actions(&self) -> usize {
        self.distinct_actions
    }
}

fn insert<'m>(
    map: &'m mut HashMap<ActionKey, Arc<ActionSeries>>,
    key: &KeyRef<'_>,
    s: ActionSeries,
) -> &'m mut ActionSeries {
    match map.entry_ref(key) {
        EntryRef::Occupied(o) => Arc::make_mut(o.into_mut()),
        EntryRef::Vacant(v) => Arc::make_mut(v.insert(Arc::new(s))),
    }
}

fn bump(
    map: &mut HashMap<Box<str>, Stamped<u64>>,
    key: &str,
    now: Instant,
    budget: &mut Budget,
    capped: &mut Capped,
) {
    if let Some(v) = map.get_mut(key) {
        v.value += 1;
        v.last_seen = now;
        return;
    }
    let (key, charged) = if budget.try_take(1) {
        (key, true)
    } else {
        capped.series += 1;
        (OVERFLOW_ACTION, false)
    };
    let v = map.entry(key.into()).or_insert(Stamped {
        value: 0,
        last_seen: now,
        charged,
        partition: NO_PARTITION,
    });
    v.value += 1;
    v.last_seen = now;
}

#[cfg(test)]
mod tests;
