//! First sight: before a push with a family name this replica's table does not hold is
//! checked ([`crate::families`]), the replica reads the target shard's `/api/v1/metrics` and
//! learns the names stored there.
//!
//! Each replica's table is rebuilt from the Pushgateways only every
//! `--family-resync-interval` (60 s), so a family another replica accepted meanwhile is unknown
//! here: a clashing push through this replica would be accepted and blank the shard's
//! `/metrics` until the collector's guard repairs it. The first push of a new name is rare (a
//! container's pushes repeat its action's names), so paying one listing read for it narrows
//! that window to the time between the other replica's forward and this read — milliseconds —
//! at no cost to the pushes of known names (the figures are in docs/benchmarks.md).
//!
//! Bounds, so that a tenant pushing ever-new names cannot turn this against the others: at
//! most one read per shard is in flight in a replica, and every push that arrived before that
//! read started is served by it (a push that arrived meanwhile waits for the next one); reads
//! of one shard start at most once per [`spacing`] — `--first-sight-min-interval`, or ten times
//! the previous read's duration when that is longer — so a replica's first-sight listings take
//! at most a tenth of a shard's time whatever is pushed (a push that finds its shard's read
//! spaced out goes on at once with what the table knows; the guard repairs what gets through);
//! a push waits at most [`FIRST_SIGHT_WAIT`] and then goes on with what the table knows (the
//! read finishes in the background and serves later pushes; the guard still repairs). Every
//! outcome is counted (`whisk_gateway_first_sight_reads_total{result}`), a failed read logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::families::{FamilyTable, StoredSides};
use crate::forward::Forwarder;
use crate::telemetry::Telemetry;
use crate::validate::Family;

/// Longest a push waits for its shard's listing before it is checked against the table as it
/// is: well inside the SDK's default push timeout (250 ms), so a slow listing never costs a
/// container its push. The read itself goes on in the background and the table learns from it.
pub(crate) const FIRST_SIGHT_WAIT: Duration = Duration::from_millis(150);

/// A shard's last read: when it started and how long it took.
#[derive(Debug, Clone, Copy)]
struct LastRead {
    started: Instant,
    took: Duration,
}

/// How long after a read of a shard started the next one may start: `min_interval`, or ten
/// times that read's duration when longer (a shard spends at most a tenth of its time serving
/// one replica's first-sight listings); a zero `min_interval` turns spacing off.
pub(crate) fn spacing(min_interval: Duration, took: Duration) -> Duration {
    if min_interval.is_zero() {
        return Duration::ZERO;
    }
    min_interval.max(took.saturating_mul(10))
}

/// Per shard: its last read. One lock per shard makes the reads single-flight.
#[derive(Debug, Default)]
pub(crate) struct ShardReads {
    shards: Mutex<HashMap<usize, Arc<tokio::sync::Mutex<Option<LastRead>>>>>,
    min_interval: Duration,
}

impl ShardReads {
    /// Reads of one shard at most once per `min_interval` (see [`spacing`]).
    pub(crate) fn new(min_interval: Duration) -> Self {
        Self {
            shards: Mutex::default(),
            min_interval,
        }
    }

    fn slot(&self, shard: usize) -> Arc<tokio::sync::Mutex<Option<LastRead>>> {
        // Keyed by the shard index (at most the configured shards), never by tenant input.
        let mut shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(shards.entry(shard).or_default())
    }
}

/// [`learn_new_names`] with the request's state: the push path's call before its type check.
pub(crate) async fn before_check(state: &crate::http::AppState, shard: usize, families: &[Family]) {
    learn_new_names(
        &state.families,
        &state.forwarder,
        &state.telemetry,
        shard,
        families,
    )
    .await;
}

/// Makes `table` learn shard `shard`'s stored names if any of `families` is new to it (see
/// the module doc). Never fails the push: the read runs in its own task, and a push whose read
/// fails or takes longer than [`FIRST_SIGHT_WAIT`] is checked against the table as it is.
pub(crate) async fn learn_new_names(
    table: &Arc<FamilyTable>,
    forwarder: &Forwarder,
    telemetry: &Telemetry,
    shard: usize,
    families: &[Family],
) {
    if !table.has_new_name(families) {
        return;
    }
    let arrived = Instant::now();
    let read = tokio::spawn(read_once(
        Arc::clone(table),
        forwarder.clone(),
        telemetry.clone(),
        shard,
        arrived,
    ));
    if tokio::time::timeout(FIRST_SIGHT_WAIT, read).await.is_err() {
        tracing::debug!(
            shard,
            "first sight: no listing within {FIRST_SIGHT_WAIT:?}; checked against the table as it is"
        );
        telemetry.first_sight("timeout");
    }
}

/// Reads shard `shard`'s listing into `table` unless a read that started after `arrived`
/// already did, or the shard's last read is too recent ([`spacing`]); counts the outcome.
async fn read_once(
    table: Arc<FamilyTable>,
    forwarder: Forwarder,
    telemetry: Telemetry,
    shard: usize,
    arrived: Instant,
) {
    let reads = table.shard_reads();
    let slot = reads.slot(shard);
    let mut last = slot.lock().await;
    if let Some(prev) = *last {
        if prev.started >= arrived {
            telemetry.first_sight("shared");
            return;
        }
        if prev.started.elapsed() < spacing(reads.min_interval, prev.took) {
            telemetry.first_sight("spaced");
            return;
        }
    }
    let started = Instant::now();
    let mut sides = StoredSides::default();
    let result = forwarder.snapshot(shard, &mut sides).await;
    // A failed read is spaced like a successful one: an unreachable shard is not hammered.
    *last = Some(LastRead {
        started,
        took: started.elapsed(),
    });
    match result {
        Ok(()) => {
            let dropped = table.learn(sides.keep_first_pushed());
            if dropped > 0 {
                tracing::warn!(
                    shard,
                    dropped,
                    "first sight: the family table is full (--max-families)"
                );
            }
            telemetry.first_sight("read");
        }
        Err(e) => {
            tracing::warn!(
                shard,
                "first sight: reading the shard's listing failed: {e}"
            );
            telemetry.first_sight("failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_spaced_by_the_floor_or_ten_times_the_last_read_unless_turned_off() {
        let floor = Duration::from_secs(1);
        assert_eq!(spacing(floor, Duration::from_millis(20)), floor);
        assert_eq!(
            spacing(floor, Duration::from_millis(700)),
            Duration::from_secs(7)
        );
        assert_eq!(
            spacing(Duration::ZERO, Duration::from_secs(3)),
            Duration::ZERO
        );
    }
}
