//! State shared by the consumer thread, the HTTP server and the push loop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::aggregate::{Aggregator, Limits};
use crate::internal_events::{AggregateStats, Telemetry};
use crate::openmetrics::{self, Exposition};
use crate::render::{ACTIONS_PER_LOCK, CHUNK_BYTES, render_chunked_as};

/// Next offset to consume per partition (the offset to commit), for one topic.
pub(crate) type Offsets = Vec<(i32, i64)>;

/// Aggregated metrics plus the offsets they cover; always locked together so a rendering and
/// its offsets are one consistent snapshot.
#[derive(Debug)]
pub(crate) struct State {
    /// The platform metrics.
    pub(crate) aggregator: Aggregator,
    /// Per partition, the offset after the last applied (or skipped) message.
    pub(crate) applied: Offsets,
}

impl State {
    /// Records that every message of `partition` before `next` has been applied or skipped.
    pub(crate) fn mark_applied(&mut self, partition: i32, next: i64) {
        match self.applied.iter_mut().find(|(p, _)| *p == partition) {
            Some((_, o)) => *o = (*o).max(next),
            None => self.applied.push((partition, next)),
        }
    }
}

/// Everything the collector's parts share.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// One `/metrics` render at a time (concurrent scrapes wait; each streams, so a scrape
    /// and a push overlapping cost a few chunks each, plus the push's copy of the numbers).
    render_gate: Mutex<()>,
    /// Whether `/metrics` carries the platform metrics (not in remote-write mode, where the
    /// receiver holds them and the page carries only `whisk_collector_*`).
    platform_on_metrics: AtomicBool,
    /// The collector's own events (log and count).
    pub(crate) telemetry: Telemetry,
    ready: AtomicBool,
    consuming: AtomicBool,
    /// When the consumer loop last polled, in ms since `started`.
    last_poll_ms: AtomicU64,
    started: Instant,
}

/// A consumer loop that has not polled for this long is not Ready (it polls every 100 ms; a
/// push before a revocation may hold it for one push timeout).
const POLL_STALE: Duration = Duration::from_secs(30);

impl Shared {
    /// Fresh state with the aggregate bounded by `limits`.
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            state: Mutex::new(State {
                aggregator: Aggregator::with_limits(limits),
                applied: Vec::new(),
            }),
            render_gate: Mutex::new(()),
            platform_on_metrics: AtomicBool::new(true),
            telemetry: Telemetry::new(),
            ready: AtomicBool::new(false),
            consuming: AtomicBool::new(false),
            last_poll_ms: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Locks the state (a poisoned lock is recovered: the state is counters only).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy of the aggregate plus the offsets it covers, taken under one hold of the lock:
    /// the push renders and streams the copy with the lock free, and its offsets cover
    /// exactly what it sends. The copy shares each action's series with the live aggregate
    /// (copy on write: an event applied meanwhile copies only the action it changes), so it
    /// costs the keys and a pointer per action, not the text (about 6 kB per action).
    pub(crate) fn platform_snapshot(&self) -> (Aggregator, Offsets) {
        let state = self.lock();
        (state.aggregator.clone(), state.applied.clone())
    }

    /// Everything `/metrics` serves in `exposition`, platform metrics then the collector's
    /// own (then `# EOF` in OpenMetrics), handed to `emit` in chunks (see
    /// [`crate::render::render_chunked`]); one render at a time, and the aggregate's lock is
    /// never held while `emit` runs. Stops when `emit` returns `false`; returns whether the
    /// whole text was handed on.
    pub(crate) fn stream_all(
        &self,
        exposition: Exposition,
        mut emit: impl FnMut(String) -> bool,
    ) -> bool {
        let _one_at_a_time = self.render_gate();
        let stats = {
            let state = self.lock();
            let agg = &state.aggregator;
            AggregateStats {
                live_series: agg.live_series(),
                newest_timestamp_ms: agg.newest_timestamp_ms(),
                capped: agg.capped(),
                exemplar_ids_too_long: agg.exemplar_ids_too_long(),
            }
        };
        if self.platform_on_metrics.load(Ordering::Relaxed)
            && !render_chunked_as(
                exposition,
                || self.lock(),
                |state| &state.aggregator,
                &mut emit,
                CHUNK_BYTES,
                ACTIONS_PER_LOCK,
            )
        {
            return false;
        }
        let mut own = String::new();
        self.telemetry.render(&mut own, stats);
        if exposition == Exposition::OpenMetrics {
            let mut om = String::with_capacity(own.len() + 1024);
            openmetrics::from_text(&own, &mut om);
            om.push_str(openmetrics::EOF);
            own = om;
        }
        emit(own)
    }

    /// Leaves the platform metrics off `/metrics` (remote-write mode).
    pub(crate) fn serve_platform_metrics(&self, on: bool) {
        self.platform_on_metrics.store(on, Ordering::Relaxed);
    }

    fn render_gate(&self) -> MutexGuard<'_, ()> {
        self.render_gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the consumer has joined its group and is polling. Holding a partition is not
    /// required: a standby replica (more replicas than partitions) is Ready too.
    pub(crate) fn is_ready(&self) -> bool {
        let since_poll = self
            .elapsed_ms()
            .saturating_sub(self.last_poll_ms.load(Ordering::Relaxed));
        self.ready.load(Ordering::Relaxed) && since_poll < POLL_STALE.as_millis() as u64
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The consumer loop is polling now.
    pub(crate) fn polled(&self) {
        self.last_poll_ms
            .store(self.elapsed_ms(), Ordering::Relaxed);
    }

    /// Joined the consumer group (an assignment arrived, possibly empty) or left it.
    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the consumer loop is still taking messages.
    pub(crate) fn is_consuming(&self) -> bool {
        self.consuming.load(Ordering::Acquire)
    }

    pub(crate) fn set_consuming(&self, consuming: bool) {
        self.consuming.store(consuming, Ordering::Release);
    }
}
