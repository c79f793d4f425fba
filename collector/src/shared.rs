//! State shared by the consumer thread, the HTTP server and the push loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::aggregate::{Aggregator, Limits};
use crate::internal_events::{AggregateStats, Telemetry};
use crate::render::{ACTIONS_PER_LOCK, CHUNK_BYTES, render_chunked};

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
    /// One render at a time (a scrape and a push render never overlap, bounding peak memory).
    render_gate: Mutex<()>,
    /// The collector's own events (log and count).
    pub(crate) telemetry: Telemetry,
    ready: AtomicBool,
    consuming: AtomicBool,
}

impl Shared {
    /// Fresh state with the aggregate bounded by `limits`.
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            state: Mutex::new(State {
                aggregator: Aggregator::with_limits(limits),
                applied: Vec::new(),
            }),
            render_gate: Mutex::new(()),
            telemetry: Telemetry::new(),
            ready: AtomicBool::new(false),
            consuming: AtomicBool::new(false),
        }
    }

    /// Locks the state (a poisoned lock is recovered: the state is counters only).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `openwhisk_*` text plus the offsets it covers, taken atomically.
    pub(crate) fn platform_snapshot(&self) -> (String, Offsets) {
        let _one_at_a_time = self.render_gate();
        let state = self.lock();
        let text = state.aggregator.render_to_string();
        (text, state.applied.clone())
    }

    /// Everything `/metrics` serves, platform metrics then the collector's own, handed to
    /// `emit` in chunks (see [`render_chunked`]); one render at a time, and the aggregate's
    /// lock is never held while `emit` runs. Stops when `emit` returns `false`.
    pub(crate) fn stream_all(&self, mut emit: impl FnMut(String) -> bool) {
        let _one_at_a_time = self.render_gate();
        let stats = {
            let state = self.lock();
            let agg = &state.aggregator;
            AggregateStats {
                live_series: agg.live_series(),
                newest_timestamp_ms: agg.newest_timestamp_ms(),
                capped: agg.capped(),
            }
        };
        if !render_chunked(
            || self.lock(),
            |state| &state.aggregator,
            &mut emit,
            CHUNK_BYTES,
            ACTIONS_PER_LOCK,
        ) {
            return;
        }
        let mut own = String::new();
        self.telemetry.render(&mut own, stats);
        let _ = emit(own);
    }

    fn render_gate(&self) -> MutexGuard<'_, ()> {
        self.render_gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether partitions are assigned and the consumer is polling.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

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
