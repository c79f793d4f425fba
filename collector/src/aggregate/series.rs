//! One action's series ([`ActionSeries`]), the key they are held under ([`ActionKey`]) and
//! the fixed-bound [`Histogram`]: what one activation changes in its own entry.

use std::hash::{Hash, Hasher};
use std::time::Instant;

use hashbrown::Equivalent;
use whisk_grouping::TIME_BUCKETS;

use super::exemplar::{ActivationId, Exemplar, Exemplars, Timed};
use super::{Budget, Capped, NO_PARTITION, OTHER_LABEL, SIZE_BUCKETS};
use crate::event::Activation;

/// What observing one activation may change besides its own entry.
pub(super) struct Ctx<'a> {
    pub(super) budget: &'a mut Budget,
    pub(super) capped: &'a mut Capped,
    pub(super) max_codes: usize,
    pub(super) now: Instant,
    pub(super) partition: i32,
    /// The activation's exemplar id and timestamp (ms), when it carries a usable id.
    pub(super) exemplar: Option<(ActivationId, i64)>,
}

/// Owned key of the per-action map: namespace, initiator and action in one allocation (the
/// lookup of every activation reads one heap line of it, not three).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ActionKey {
    /// `namespace`, `initiator` and `action`, one after the other.
    text: Box<str>,
    /// Where `initiator` starts and `action` starts in `text`.
    ends: [usize; 2],
}

impl ActionKey {
    /// The namespace of the action (label `namespace`).
    pub(crate) fn namespace(&self) -> &str {
        &self.text[..self.ends[0]]
    }

    /// The namespace that invoked it (label `initiator`).
    pub(crate) fn initiator(&self) -> &str {
        &self.text[self.ends[0]..self.ends[1]]
    }

    /// The action, with its package (label `action`).
    pub(crate) fn action(&self) -> &str {
        &self.text[self.ends[1]..]
    }

    /// The three labels, borrowed: what hashing, equality and order go by.
    fn labels(&self) -> KeyRef<'_> {
        KeyRef {
            namespace: self.namespace(),
            initiator: self.initiator(),
            action: self.action(),
        }
    }
}

/// Ordered as (namespace, initiator, action): the render's order.
impl Ord for ActionKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let (a, b) = (self.labels(), other.labels());
        (a.namespace, a.initiator, a.action).cmp(&(b.namespace, b.initiator, b.action))
    }
}

impl PartialOrd for ActionKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Borrowed form of [`ActionKey`], hashing identically.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyRef<'a> {
    pub(super) namespace: &'a str,
    pub(super) initiator: &'a str,
    pub(super) action: &'a str,
}

impl KeyRef<'_> {
    fn to_key(self) -> ActionKey {
        let mut text =
            String::with_capacity(self.namespace.len() + self.initiator.len() + self.action.len());
        text.push_str(self.namespace);
        let initiator = text.len();
        text.push_str(self.initiator);
        let action = text.len();
        text.push_str(self.action);
        ActionKey {
            text: text.into_boxed_str(),
            ends: [initiator, action],
        }
    }
}

impl Hash for ActionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.labels().hash(state);
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
        let k = key.labels();
        k.namespace == self.namespace && k.action == self.action && k.initiator == self.initiator
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
    /// Counts `v`; returns its bucket (0..N, N = `+Inf`).
    fn observe(&mut self, bounds: &[f64; N], v: f64) -> usize {
        self.sum += v;
        match bounds.iter().position(|b| v <= *b) {
            Some(i) => {
                self.counts[i] += 1;
                i
            }
            None => {
                self.overflow += 1;
                N
            }
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
#[derive(Debug, Clone)]
pub(crate) struct ActionSeries {
    /// Sorted by (kind, memory).
    pub(crate) activations: Vec<KindCount>,
    /// Activations whose (kind, memory) pair found no room in the budget.
    pub(crate) activations_other: u64,
    pub(crate) cold_starts: u64,
    pub(crate) status: [u64; 5],
    /// Sorted by code; at most `--max-status-codes-per-action` entries.
    pub(crate) status_codes: Vec<(i64, u64)>,
    /// Activations with a status code beyond the cap (or the budget).
    pub(crate) status_code_other: u64,
    pub(crate) wait: Histogram<15>,
    pub(crate) init: Histogram<15>,
    pub(crate) duration: Histogram<15>,
    pub(crate) size: Option<Box<Histogram<9>>>,
    pub(crate) memory: u64,
    /// Partition of the event that set `memory` ([`DROPPED`]: not rendered).
    pub(crate) memory_partition: i32,
    /// Σ duration (s) × memory limit (MB) / 1024.
    pub(crate) gb_seconds: f64,
    /// Activations with a cause, by `caused_by` label, sorted.
    pub(crate) caused: Vec<(Box<str>, u64)>,
    /// The latest exemplar of each bucket of `wait`, `init` and `duration`.
    pub(crate) exemplars: Exemplars,
    pub(super) last_seen: Instant,
    /// An `__overflow__` entry (not counted against `--max-actions`).
    pub(super) overflow: bool,
    /// Series charged to the budget for this entry.
    pub(super) charged: usize,
}

impl ActionSeries {
    pub(super) fn new(now: Instant, overflow: bool, charged: usize) -> Self {
        Self {
            activations: Vec::new(),
            activations_other: 0,
            cold_starts: 0,
            status: [0; 5],
            status_codes: Vec::new(),
            status_code_other: 0,
            wait: Histogram::default(),
            init: Histogram::default(),
            duration: Histogram::default(),
            size: None,
            memory: 0,
            memory_partition: NO_PARTITION,
            gb_seconds: 0.0,
            caused: Vec::new(),
            exemplars: Exemplars::default(),
            last_seen: now,
            overflow,
            charged,
        }
    }

    /// Takes one more series from the budget for a new key of this entry.
    fn take(&mut self, ctx: &mut Ctx<'_>) -> bool {
        // The catch-all entry (charged nothing) stays outside the budget entirely: it only
        // ever uses its `other` rows.
        if self.charged > 0 && ctx.budget.try_take(1) {
            self.charged += 1;
            true
        } else {
            ctx.capped.series += 1;
            false
        }
    }

    pub(super) fn observe(&mut self, a: &Activation<'_>, ctx: &mut Ctx<'_>) {
        self.last_seen = ctx.now;
        let pair = self
            .activations
            .binary_search_by(|k| (&*k.kind, k.memory).cmp(&(&*a.kind, a.memory)));
        match pair {
            Ok(i) => self.activations[i].count += 1,
            // The first pair is part of the fixed charge.
            Err(i) if self.activations.is_empty() || self.take(ctx) => {
                self.activations.insert(
                    i,
                    KindCount {
                        kind: a.kind.as_ref().into(),
                        memory: a.memory,
                        count: 1,
                    },
                );
            }
            Err(_) => self.activations_other += 1,
        }
        let status = usize::try_from(a.status_code)
            .ok()
            .filter(|s| *s < 4)
            .unwrap_or(4);
        self.status[status] += 1;
        if let Some(code) = a.user_defined_status_code {
            match self.status_codes.binary_search_by_key(&code, |(c, _)| *c) {
                Ok(i) => self.status_codes[i].1 += 1,
                Err(_) if self.status_codes.len() >= ctx.max_codes => {
                    ctx.capped.status_codes += 1;
                    self.status_code_other += 1;
                }
                Err(i) if self.take(ctx) => self.status_codes.insert(i, (code, 1)),
                Err(_) => self.status_code_other += 1,
            }
        }
        self.observe_time(Timed::Wait, a.wait_time_ms / 1000.0, ctx);
        self.observe_time(Timed::Duration, a.duration_ms / 1000.0, ctx);
        if a.is_cold_start() {
            self.cold_starts += 1;
            self.observe_time(Timed::Init, a.init_time_ms / 1000.0, ctx);
        }
        if let Some(size) = a.size {
            #[allow(clippy::cast_precision_loss)]
            self.size
                .get_or_insert_with(Box::default)
                .observe(&SIZE_BUCKETS, size as f64);
        }
        self.memory = a.memory;
        self.memory_partition = ctx.partition;
        self.gb_seconds += a.gb_seconds();
        if let Some(cause) = a.caused_by_label() {
            match self.caused.binary_search_by(|(c, _)| (**c).cmp(cause)) {
                Ok(i) => self.caused[i].1 += 1,
                Err(i) if self.take(ctx) => self.caused.insert(i, (cause.into(), 1)),
                // `other` is part of the fixed charge.
                Err(_) => match self
                    .caused
                    .binary_search_by(|(c, _)| (**c).cmp(OTHER_LABEL))
                {
                    Ok(i) => self.caused[i].1 += 1,
                    Err(i) => self.caused.insert(i, (OTHER_LABEL.into(), 1)),
                },
            }
        }
    }

    /// Counts `v` in one time histogram and makes it its bucket's exemplar.
    fn observe_time(&mut self, which: Timed, v: f64, ctx: &Ctx<'_>) {
        let h = match which {
            Timed::Wait => &mut self.wait,
            Timed::Init => &mut self.init,
            Timed::Duration => &mut self.duration,
        };
        let bucket = h.observe(&TIME_BUCKETS, v);
        if let Some((id, timestamp_ms)) = &ctx.exemplar {
            self.exemplars.set(
                which,
                bucket,
                Exemplar {
                    id: id.clone(),
                    value: v,
                    timestamp_ms: *timestamp_ms,
                },
            );
        }
    }

    /// The exemplar of `bucket` (0..N of the bounds, N = `+Inf`) of one time histogram:
    /// what the exposition writes after that bucket's line, and what a sink sends with it.
    pub(crate) fn exemplar(&self, which: Timed, bucket: usize) -> Option<&Exemplar> {
        self.exemplars.get(which, bucket)
    }

    /// The time histogram `which`.
    pub(crate) fn timed(&self, which: Timed) -> &Histogram<15> {
        match which {
            Timed::Wait => &self.wait,
            Timed::Init => &self.init,
            Timed::Duration => &self.duration,
        }
    }

    pub(super) fn series(&self) -> usize {
        self.activations.len()
            + usize::from(self.activations_other > 0)
            + usize::from(self.cold_starts > 0)
            + self.status.iter().filter(|s| **s > 0).count()
            + self.status_codes.len()
            + usize::from(self.status_code_other > 0)
            + 2 // wait, duration
            + usize::from(self.init.count() > 0)
            + usize::from(self.size.is_some())
            + 2 // memory, GB-seconds
            + self.caused.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn key(namespace: &str, initiator: &str, action: &str) -> (KeyRef<'static>, ActionKey) {
        let r = KeyRef {
            namespace: namespace.to_string().leak(),
            initiator: initiator.to_string().leak(),
            action: action.to_string().leak(),
        };
        (r, ActionKey::from(&r))
    }

    #[test]
    fn an_action_key_keeps_its_three_labels_apart() {
        let (r, k) = key("ns", "guest", "pkg/a");
        assert_eq!(
            (k.namespace(), k.initiator(), k.action()),
            ("ns", "guest", "pkg/a")
        );
        let hasher = hashbrown::DefaultHashBuilder::default();
        assert_eq!(
            hasher.hash_one(r),
            hasher.hash_one(&k),
            "borrowed and owned hash alike"
        );
        assert!(r.equivalent(&k));
        // Same text, other boundaries: another key.
        let (shifted, other) = key("nsg", "uest", "pkg/a");
        assert!(!shifted.equivalent(&k) && !r.equivalent(&other));
        assert_ne!(k, other);
        assert_ne!(hasher.hash_one(&k), hasher.hash_one(&other));
    }

    #[test]
    fn action_keys_sort_by_namespace_then_initiator_then_action() {
        let (_, a) = key("a", "z", "x");
        let (_, b) = key("ab", "", "");
        // By concatenation "azx" > "ab"; by label, "a" < "ab".
        assert!(a < b);
        let (_, c) = key("a", "z", "y");
        assert!(a < c);
    }
}
