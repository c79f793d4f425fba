//! The containers of one action: an idle warm one reused (most recently used first, thawed if
//! frozen), a reservation for a cold start up to the action's maximum, a bounded wait beyond
//! it; a container returned after its activation, or removed after a developer or whisk error;
//! and the maintenance that freezes idle containers after the pause grace and removes them after
//! the idle timeout.

use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Inner, lock};
use crate::container::Container;
use crate::spec::ActionSpec;
use crate::stats::{ActionStats, Counters};
use crate::verdict;

#[derive(Debug)]
struct Idle {
    container: Container,
    since: Instant,
}

#[derive(Debug, Default)]
struct PoolState {
    idle: Vec<Idle>,
    busy: usize,
    next_id: u64,
}

/// One action's containers and counters.
#[derive(Debug)]
pub(crate) struct ActionSlot {
    pub(crate) spec: ActionSpec,
    pool: Mutex<PoolState>,
    freed: Condvar,
    pub(super) counters: Mutex<Counters>,
}

impl ActionSlot {
    pub(super) fn new(spec: ActionSpec) -> Self {
        Self {
            spec,
            pool: Mutex::new(PoolState::default()),
            freed: Condvar::new(),
            counters: Mutex::new(Counters::default()),
        }
    }

    /// Removes every idle container (shutdown) and wakes the requests waiting for one.
    pub(super) fn remove_idle(&self) {
        let idle: Vec<Idle> = lock(&self.pool).idle.drain(..).collect();
        lock(&self.counters).removed += idle.len() as u64;
        drop(idle);
        self.freed.notify_all();
    }

    pub(super) fn stats(&self) -> ActionStats {
        let (alive, frozen) = {
            let pool = lock(&self.pool);
            (
                pool.busy + pool.idle.len(),
                pool.idle
                    .iter()
                    .filter(|i| i.container.process.is_frozen())
                    .count(),
            )
        };
        lock(&self.counters).snapshot(&self.spec.name, alive, frozen)
    }
}

/// What [`Inner::acquire`] found.
pub(super) enum Acquired {
    Warm(Container),
    Cold(u64),
    TimedOut,
}

impl Inner {
    /// A warm container, a reservation for a cold one, or a timeout.
    pub(super) fn acquire(&self, slot: &ActionSlot, submitted: Instant) -> Acquired {
        let deadline = submitted + self.config.queue_timeout;
        let mut pool = lock(&slot.pool);
        loop {
            // Most recently used first, so the others age towards removal.
            if let Some(idle) = pool.idle.pop() {
                pool.busy += 1;
                drop(pool);
                let mut c = idle.container;
                if c.process.is_frozen() {
                    c.process.thaw();
                    lock(&slot.counters).thaws += 1;
                }
                return Acquired::Warm(c);
            }
            if pool.busy + pool.idle.len() < slot.spec.max_containers {
                pool.busy += 1;
                pool.next_id += 1;
                let id = pool.next_id;
                drop(pool);
                lock(&slot.counters).created += 1;
                return Acquired::Cold(id);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stopping.load(Ordering::SeqCst) {
                return Acquired::TimedOut;
            }
            pool = slot
                .freed
                .wait_timeout(pool, left.min(Duration::from_millis(100)))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Returns the container to the pool, or removes it after a developer/whisk error or during
    /// shutdown. Returns whether a container was removed.
    pub(super) fn release(
        &self,
        slot: &ActionSlot,
        container: Option<Container>,
        status_code: u8,
        cold: bool,
    ) -> bool {
        let mut pool = lock(&slot.pool);
        pool.busy = pool.busy.saturating_sub(1);
        let Some(c) = container else {
            // The reservation of a failed cold start is given back.
            drop(pool);
            slot.freed.notify_one();
            return cold;
        };
        let remove =
            verdict::removes_container(status_code) || self.stopping.load(Ordering::SeqCst);
        if !remove {
            pool.idle.push(Idle {
                container: c,
                since: Instant::now(),
            });
            drop(pool);
            slot.freed.notify_one();
            return false;
        }
        drop(pool);
        drop(c); // SIGKILL + reap, then the cgroup goes
        slot.freed.notify_one();
        true
    }

    /// Freezes containers idle for the pause grace, removes those idle for the idle timeout or
    /// found dead. Runs until shutdown.
    pub(super) fn maintain(&self) {
        let tick = (self.config.pause_grace / 5)
            .clamp(Duration::from_millis(2), Duration::from_millis(50));
        while !self.stopping.load(Ordering::SeqCst) {
            std::thread::sleep(tick);
            for slot in self.actions.values() {
                self.maintain_slot(slot);
            }
        }
    }

    fn maintain_slot(&self, slot: &ActionSlot) {
        let mut doomed = Vec::new();
        let mut frozen = 0;
        {
            let mut pool = lock(&slot.pool);
            let mut i = 0;
            while i < pool.idle.len() {
                let idle = &mut pool.idle[i];
                let age = idle.since.elapsed();
                if age >= self.config.idle_timeout || idle.container.process.has_exited() {
                    doomed.push(pool.idle.remove(i));
                    continue;
                }
                if age >= self.config.pause_grace
                    && !idle.container.process.is_frozen()
                    && idle.container.process.freeze()
                {
                    frozen += 1;
                }
                i += 1;
            }
        }
        if frozen > 0 || !doomed.is_empty() {
            let mut c = lock(&slot.counters);
            c.freezes += frozen;
            c.removed += doomed.len() as u64;
        }
        if !doomed.is_empty() {
            drop(doomed); // SIGKILL + reap, outside the pool lock
            slot.freed.notify_all();
        }
    }
}
