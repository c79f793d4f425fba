//! What the remote-write backend remembers per group: a lane that orders its writes, its last
//! timestamp, and the series it last wrote (for the stale markers of a DELETE or of series a
//! later push no longer has).
//!
//! Bounded by count (`--remote-write-max-groups`) and bytes (`--remote-write-memory-bytes`):
//! a group costs its key plus [`GROUP_OVERHEAD`]; the series it wrote are a [`Shape`] shared by
//! every group whose push had the same series (one action's containers share one), counted once.
//! Groups not written for [`super::IDLE_EXPIRY`] are forgotten by [`Groups::sweep`]; when full,
//! a new group first sweeps, then forgets an eighth of the groups (counted): the cost is only
//! that a later DELETE of a forgotten group finds nothing to mark stale (the receiver's lookback
//! still ends its series after 5 minutes).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use whisk_remote_write::SeriesLabels;

/// Bytes a group costs besides its key: the map slot, the `Arc<Group>` with its lane and
/// mutexes, and the allocator's rounding (measured layout ~150 bytes, rounded up).
pub(crate) const GROUP_OVERHEAD: usize = 192;

/// Bytes a shape costs besides its labels' strings (the `Arc`, the map slot, the vectors).
const SHAPE_OVERHEAD: usize = 96;

/// The series a push wrote, without the grouping key and values.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Sorted label sets, `__name__` included.
    pub series: Vec<SeriesLabels>,
    bytes: usize,
}

impl Shape {
    /// Bytes it is counted for.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    fn new(series: Vec<SeriesLabels>) -> Self {
        let labels: usize = series
            .iter()
            .map(|s| {
                24 + s
                    .iter()
                    .map(|l| 48 + l.name.len() + l.value.len())
                    .sum::<usize>()
            })
            .sum();
        Self {
            series,
            bytes: SHAPE_OVERHEAD + labels,
        }
    }
}

/// One group's ordering state; the lane is held while a write of the group is in flight.
#[derive(Debug, Default)]
pub(crate) struct Group {
    /// Incremented by every push; a write whose number is no longer the latest is dropped.
    pub latest: AtomicU64,
    /// Milliseconds since [`Groups`] started at the last push (for expiry).
    touched: AtomicU64,
    /// The write lane, held from a push's stamping until the receiver answered its write.
    pub lane: Arc<tokio::sync::Mutex<Lane>>,
}

/// What a group's writes need in order.
#[derive(Debug, Default)]
pub(crate) struct Lane {
    /// The last timestamp used (ms); the next is strictly later.
    pub last_ms: i64,
    /// The series last acknowledged, if any.
    pub written: Option<Arc<Shape>>,
}

impl Lane {
    /// The next timestamp: now, or 1 ms after the last one if the clock has not moved on.
    pub(crate) fn next_ms(&mut self, now_ms: i64) -> i64 {
        self.last_ms = now_ms.max(self.last_ms + 1);
        self.last_ms
    }
}

/// Every group's state, bounded.
#[derive(Debug)]
pub(crate) struct Groups {
    max_groups: usize,
    max_bytes: usize,
    expiry: Duration,
    started: Instant,
    hasher: RandomState,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    groups: HashMap<Box<str>, Arc<Group>>,
    shapes: HashMap<u64, Vec<Arc<Shape>>>,
    group_bytes: usize,
    shape_bytes: usize,
}

/// What a caller learns when it registers a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Forgotten {
    /// Groups forgotten to make room (not expired ones).
    pub evicted: usize,
}

impl Groups {
    /// At most `max_groups` groups and `max_bytes` of keys and shapes; groups idle for
    /// `expiry` are forgotten.
    pub(crate) fn new(max_groups: usize, max_bytes: usize, expiry: Duration) -> Self {
        Self {
            max_groups,
            max_bytes,
            expiry,
            started: Instant::now(),
            hasher: RandomState::new(),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The group `key`, registered if new (making room first when full).
    pub(crate) fn get_or_insert(&self, key: &str) -> (Arc<Group>, Forgotten) {
        let now = self.now();
        let mut inner = self.lock();
        if let Some(g) = inner.groups.get(key) {
            g.touched.store(now, Ordering::Relaxed);
            return (Arc::clone(g), Forgotten::default());
        }
        let cost = key.len() + GROUP_OVERHEAD;
        let mut forgotten = Forgotten::default();
        if inner.groups.len() >= self.max_groups || inner.bytes() + cost > self.max_bytes {
            self.sweep_locked(&mut inner, now);
            while !inner.groups.is_empty()
                && (inner.groups.len() >= self.max_groups || inner.bytes() + cost > self.max_bytes)
            {
                forgotten.evicted += evict_some(&mut inner);
            }
        }
        let group = Arc::new(Group::default());
        group.touched.store(now, Ordering::Relaxed);
        inner.groups.insert(key.into(), Arc::clone(&group));
        inner.group_bytes += cost;
        (group, forgotten)
    }

    /// The group `key` if it is remembered.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<Group>> {
        self.lock().groups.get(key).cloned()
    }

    /// The shared copy of `series` (interned: groups with the same series share one).
    pub(crate) fn intern(&self, series: Vec<SeriesLabels>) -> Arc<Shape> {
        let hash = self.hasher.hash_one(&series);
        let mut inner = self.lock();
        let bucket = inner.shapes.entry(hash).or_default();
        if let Some(known) = bucket.iter().find(|s| s.series == series) {
            return Arc::clone(known);
        }
        let shape = Arc::new(Shape::new(series));
        bucket.push(Arc::clone(&shape));
        inner.shape_bytes += shape.bytes;
        shape
    }

    /// Forgets groups idle for the expiry and shapes no group holds; returns how many groups.
    pub(crate) fn sweep(&self) -> usize {
        let now = self.now();
        let mut inner = self.lock();
        self.sweep_locked(&mut inner, now)
    }

    fn sweep_locked(&self, inner: &mut Inner, now: u64) -> usize {
        let expiry = u64::try_from(self.expiry.as_millis()).unwrap_or(u64::MAX);
        let before = inner.groups.len();
        let mut freed = 0;
        inner.groups.retain(|key, g| {
            let keep = now.saturating_sub(g.touched.load(Ordering::Relaxed)) < expiry;
            if !keep {
                freed += key.len() + GROUP_OVERHEAD;
            }
            keep
        });
        inner.group_bytes -= freed;
        drop_unused_shapes(inner);
        before - inner.groups.len()
    }

    /// Groups remembered and the bytes they and their shapes hold.
    pub(crate) fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.groups.len(), inner.bytes())
    }
}

impl Inner {
    fn bytes(&self) -> usize {
        self.group_bytes + self.shape_bytes
    }
}

/// Forgets about an eighth of the groups (at least one), whichever the map yields first.
fn evict_some(inner: &mut Inner) -> usize {
    let n = (inner.groups.len() / 8).max(1);
    let victims: Vec<Box<str>> = inner.groups.keys().take(n).cloned().collect();
    for key in &victims {
        inner.groups.remove(key);
        inner.group_bytes -= key.len() + GROUP_OVERHEAD;
    }
    drop_unused_shapes(inner);
    victims.len()
}

/// Drops shapes only the map holds (a lane holding one keeps it alive and counted).
fn drop_unused_shapes(inner: &mut Inner) {
    let mut freed = 0;
    inner.shapes.retain(|_, bucket| {
        bucket.retain(|s| {
            let used = Arc::strong_count(s) > 1;
            if !used {
                freed += s.bytes;
            }
            used
        });
        !bucket.is_empty()
    });
    inner.shape_bytes -= freed;
}

#[cfg(test)]
mod tests {
    use whisk_remote_write::Label;

    use super::*;

    fn series(name: &str) -> Vec<SeriesLabels> {
        vec![vec![Label::new("__name__", name)]]
    }

    #[test]
    fn timestamps_of_a_group_strictly_increase_even_when_the_clock_does_not() {
        let mut lane = Lane::default();
        assert_eq!(lane.next_ms(1000), 1000);
        assert_eq!(lane.next_ms(1000), 1001);
        assert_eq!(lane.next_ms(900), 1002);
        assert_eq!(lane.next_ms(2000), 2000);
    }

    #[test]
    fn groups_with_the_same_series_share_one_shape() {
        let groups = Groups::new(10, 1 << 20, Duration::from_secs(600));
        let a = groups.intern(series("m"));
        let b = groups.intern(series("m"));
        assert!(Arc::ptr_eq(&a, &b));
        let c = groups.intern(series("n"));
        assert!(!Arc::ptr_eq(&a, &c));
        let (_, bytes) = groups.usage();
        assert_eq!(bytes, a.bytes + c.bytes);
    }

    #[test]
    fn the_count_bound_forgets_old_groups_and_says_so() {
        let groups = Groups::new(8, 1 << 20, Duration::from_secs(600));
        let mut evicted = 0;
        for i in 0..20 {
            evicted += groups.get_or_insert(&format!("g{i}")).1.evicted;
        }
        let (count, _) = groups.usage();
        assert!(count <= 8, "{count}");
        assert_eq!(evicted + count, 20);
    }

    #[test]
    fn the_byte_bound_holds_keys_and_shapes() {
        let max = 4 * (GROUP_OVERHEAD + 4);
        let groups = Groups::new(1000, max, Duration::from_secs(600));
        for i in 0..50 {
            groups.get_or_insert(&format!("g{i:03}"));
            assert!(groups.usage().1 <= max);
        }
    }

    #[test]
    fn idle_groups_expire_and_their_unused_shapes_go_with_them() {
        let groups = Groups::new(10, 1 << 20, Duration::ZERO);
        let (g, _) = groups.get_or_insert("a");
        let shape = groups.intern(series("m"));
        g.lane.try_lock().unwrap().written = Some(shape);
        drop(g);
        assert_eq!(groups.sweep(), 1);
        assert_eq!(groups.usage(), (0, 0));
    }
}
