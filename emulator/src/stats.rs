//! Per-action counters of the invoker and their public snapshot, [`ActionStats`].

use std::collections::VecDeque;

/// How many recent durations per action the p95 is computed over.
const DURATION_WINDOW: usize = 1000;

/// A snapshot of one action's counters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ActionStats {
    /// Action name.
    pub action: String,
    /// Activations completed (all statuses).
    pub activations: u64,
    /// Activations by status code 0..3.
    pub statuses: [u64; 4],
    /// Cold starts (= containers created).
    pub cold_starts: u64,
    /// Containers created.
    pub containers_created: u64,
    /// Containers removed (idle timeout, errors, crashes, shutdown).
    pub containers_removed: u64,
    /// Containers alive now.
    pub containers_alive: usize,
    /// Of those, frozen now.
    pub containers_frozen: usize,
    /// Times a container was frozen.
    pub freezes: u64,
    /// Times a container was thawed for reuse.
    pub thaws: u64,
    /// Requests rejected by the namespace limit.
    pub rejected: u64,
    /// 95th percentile of the last 1000 durations, ms.
    pub p95_duration_ms: Option<u64>,
}

impl ActionStats {
    /// Activations with a non-zero status.
    pub fn errors(&self) -> u64 {
        self.statuses[1..].iter().sum()
    }
}

/// The counters behind [`ActionStats`] (the pool adds the live container figures).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) activations: u64,
    pub(crate) statuses: [u64; 4],
    pub(crate) cold_starts: u64,
    pub(crate) created: u64,
    pub(crate) removed: u64,
    pub(crate) freezes: u64,
    pub(crate) thaws: u64,
    pub(crate) rejected: u64,
    durations: VecDeque<u64>,
}

impl Counters {
    /// Counts one completed activation.
    pub(crate) fn activation(&mut self, status_code: u8, cold: bool, removed: bool, duration: u64) {
        self.activations += 1;
        self.statuses[usize::from(status_code.min(3))] += 1;
        if cold {
            self.cold_starts += 1;
        }
        if removed {
            self.removed += 1;
        }
        if self.durations.len() == DURATION_WINDOW {
            self.durations.pop_front();
        }
        self.durations.push_back(duration);
    }

    /// The snapshot, with the live container figures.
    pub(crate) fn snapshot(&self, action: &str, alive: usize, frozen: usize) -> ActionStats {
        ActionStats {
            action: action.to_string(),
            activations: self.activations,
            statuses: self.statuses,
            cold_starts: self.cold_starts,
            containers_created: self.created,
            containers_removed: self.removed,
            containers_alive: alive,
            containers_frozen: frozen,
            freezes: self.freezes,
            thaws: self.thaws,
            rejected: self.rejected,
            p95_duration_ms: percentile(&self.durations, 0.95),
        }
    }
}

/// Nearest-rank percentile.
fn percentile(values: &VecDeque<u64>, q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<u64> = values.iter().copied().collect();
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_is_the_nearest_rank() {
        let v: VecDeque<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.95), Some(95));
        assert_eq!(percentile(&VecDeque::new(), 0.95), None);
        assert_eq!(percentile(&VecDeque::from([7]), 0.95), Some(7));
    }

    #[test]
    fn counts_by_status_and_keeps_a_window_of_durations() {
        let mut c = Counters::default();
        for i in 0..1500 {
            c.activation((i % 4) as u8, i == 0, i % 4 >= 2, i);
        }
        let s = c.snapshot("guest/a", 2, 1);
        assert_eq!(s.statuses, [375; 4]);
        assert_eq!(
            (s.activations, s.cold_starts, s.containers_removed),
            (1500, 1, 750)
        );
        assert_eq!(s.errors(), 1125);
        // The window holds the last 1000 durations (500..1500).
        assert_eq!(s.p95_duration_ms, Some(1449));
    }
}
