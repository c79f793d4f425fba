//! When the SDK pushes: the minimum interval between pushes, the back-off after failures and the
//! rate of failure notices. Every decision takes the time it is made at (`now`), as the
//! collector's `Aggregator::apply_at` does, so the rules are tested on a fake clock.

use std::time::{Duration, Instant};

/// At most one stderr line about failing pushes per this period.
const NOTICE_EVERY: Duration = Duration::from_secs(60);
/// After a failed push, pushes are skipped for this long; the interval doubles with every
/// further failure in a row, up to [`BACKOFF_MAX`]. The state is kept meanwhile, so the next
/// push that succeeds carries everything.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Longest interval between push attempts while they keep failing.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The push schedule of one process.
#[derive(Debug)]
pub(super) struct Schedule {
    min_interval: Duration,
    last_success: Option<Instant>,
    /// Failed pushes in a row, and when the next attempt may be made.
    failures_in_a_row: u32,
    retry_at: Option<Instant>,
    last_notice: Option<Instant>,
    failures_since_notice: u64,
    /// Whether a freeze was already let off the back-off since the last success.
    exempted: bool,
}

impl Schedule {
    /// A schedule that pushes at most once per `min_interval` (zero: every time).
    pub(super) fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last_success: None,
            failures_in_a_row: 0,
            retry_at: None,
            last_notice: None,
            failures_since_notice: 0,
            exempted: false,
        }
    }

    /// Whether a push at `now` is due: not inside the back-off after a failure, nor within the
    /// minimum interval after a success. `force` pushes anyway.
    pub(super) fn due(&self, now: Instant, force: bool) -> bool {
        if force {
            return true;
        }
        if self.retry_at.is_some_and(|t| now < t) {
            return false;
        }
        !(self.min_interval > Duration::ZERO
            && self
                .last_success
                .is_some_and(|t| now.saturating_duration_since(t) < self.min_interval))
    }

    /// A push finished successfully at `now`: the back-off ends.
    pub(super) fn succeeded(&mut self, now: Instant) {
        self.last_success = Some(now);
        self.failures_in_a_row = 0;
        self.retry_at = None;
        self.exempted = false;
    }

    /// A push failed at `now`: returns the back-off before the next attempt.
    pub(super) fn failed(&mut self, now: Instant) -> Duration {
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        let backoff = backoff(self.failures_in_a_row);
        self.retry_at = now.checked_add(backoff);
        self.failures_since_notice += 1;
        backoff
    }

    /// A push was cut at `now` by a freeze of the container: noticed like a failure, but
    /// without back-off (the Pushgateway may be fine), once until the next success; a second
    /// one in a row backs off like [`Schedule::failed`]. Returns the back-off.
    pub(super) fn interrupted(&mut self, now: Instant) -> Duration {
        if self.exempted {
            return self.failed(now);
        }
        self.exempted = true;
        self.failures_since_notice += 1;
        self.retry_at = None;
        Duration::ZERO
    }

    /// Failed pushes in a row.
    #[cfg(test)]
    pub(super) fn failures_in_a_row(&self) -> u32 {
        self.failures_in_a_row
    }

    /// Whether a failure notice is due at `now` (at most one a minute): `Some(failures since the
    /// last notice)`, which starts the next minute; `None` when the last one is too recent.
    pub(super) fn notice_due(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last_notice
            .is_none_or(|t| now.saturating_duration_since(t) >= NOTICE_EVERY);
        if !due {
            return None;
        }
        self.last_notice = Some(now);
        Some(std::mem::take(&mut self.failures_since_notice))
    }
}

/// How long to skip pushes after `failures` failed pushes in a row: 1 s doubling to 60 s.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn back_off_doubles_from_one_second_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn a_push_cut_by_a_freeze_is_let_off_the_back_off_once_until_a_success() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Duration::ZERO);
        assert_eq!(s.interrupted(t0), Duration::ZERO);
        assert!(s.due(t0, false));
        assert_eq!(s.failures_in_a_row(), 0);
        assert_eq!(s.notice_due(t0), Some(1));
        // a second one in a row (a thaw that keeps coming late) backs off
        assert_eq!(s.interrupted(t0), Duration::from_secs(1));
        assert!(!s.due(t0, false));
        s.succeeded(t0 + 1000 * MS);
        assert_eq!(s.interrupted(t0 + 1000 * MS), Duration::ZERO);
    }

    #[test]
    fn after_failures_pushes_wait_for_the_back_off_on_the_given_clock() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Duration::ZERO);
        assert!(s.due(t0, false));
        assert_eq!(s.failed(t0), Duration::from_secs(1));
        assert!(!s.due(t0, false));
        assert!(!s.due(t0 + 999 * MS, false));
        assert!(s.due(t0 + 999 * MS, true), "a forced push goes anyway");
        assert!(s.due(t0 + Duration::from_secs(1), false));
        // the second failure in a row backs off 2 s from when it happened
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(s.failed(t1), Duration::from_secs(2));
        assert_eq!(s.failures_in_a_row(), 2);
        assert!(!s.due(t1 + 1999 * MS, false));
        assert!(s.due(t1 + Duration::from_secs(2), false));
        // a success ends the back-off
        s.succeeded(t1 + Duration::from_secs(2));
        assert_eq!(s.failures_in_a_row(), 0);
        assert!(s.due(t1 + Duration::from_secs(2), false));
    }

    #[test]
    fn within_the_minimum_interval_after_a_success_pushes_wait() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Duration::from_secs(1));
        assert!(s.due(t0, false), "the first push goes at once");
        s.succeeded(t0);
        assert!(!s.due(t0 + 999 * MS, false));
        assert!(s.due(t0 + 999 * MS, true));
        assert!(s.due(t0 + Duration::from_secs(1), false));
        let mut every = Schedule::new(Duration::ZERO);
        every.succeeded(t0);
        assert!(every.due(t0, false), "no interval: every activation pushes");
    }

    #[test]
    fn a_failure_notice_is_due_at_most_once_a_minute_and_counts_the_failures_between() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Duration::ZERO);
        s.failed(t0);
        assert_eq!(s.notice_due(t0), Some(1));
        s.failed(t0 + Duration::from_secs(1));
        assert_eq!(s.notice_due(t0 + Duration::from_secs(1)), None);
        s.failed(t0 + Duration::from_secs(30));
        assert_eq!(s.notice_due(t0 + Duration::from_secs(59)), None);
        s.failed(t0 + Duration::from_secs(60));
        assert_eq!(s.notice_due(t0 + Duration::from_secs(60)), Some(3));
    }
}
