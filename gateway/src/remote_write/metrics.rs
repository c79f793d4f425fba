//! The remote-write backend's own metrics (`whisk_gateway_remote_write_*`, docs/design.md).

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use whisk_remote_write::{ClientError, Outcome};

/// Write-duration buckets (seconds): the bound is below the SDK's 250 ms.
const BUCKETS: [f64; 10] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25,
];

/// Handles to the backend's metrics.
#[derive(Debug, Clone)]
pub(crate) struct RemoteWriteMetrics {
    writes: IntCounterVec,
    /// Requests sent (each carries the writes of one or more groups).
    pub requests: IntCounter,
    retries: IntCounter,
    duration: Histogram,
    /// DELETEs of a group this replica does not remember.
    pub unknown_deletes: IntCounter,
    evictions: IntCounter,
    /// Groups remembered.
    pub groups: IntGauge,
    /// Bytes of groups and shapes remembered.
    pub memory_bytes: IntGauge,
}

impl RemoteWriteMetrics {
    /// Registers the metrics in `registry`.
    // The names and labels below are constants; registering them cannot fail.
    #[allow(clippy::expect_used)]
    pub(crate) fn new(registry: &Registry) -> Self {
        const VALID: &str = "constant metric definitions are valid and unique";
        let reg = |c: Box<dyn prometheus::core::Collector>| registry.register(c).expect(VALID);
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect(VALID);
            reg(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect(VALID);
            reg(Box::new(g.clone()));
            g
        };
        let writes = IntCounterVec::new(
            Opts::new(
                "whisk_gateway_remote_writes_total",
                "Writes to the remote-write receiver by result (acknowledged, refused, unavailable, superseded)",
            ),
            &["result"],
        )
        .expect(VALID);
        reg(Box::new(writes.clone()));
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "whisk_gateway_remote_write_duration_seconds",
                "Duration of one write to the receiver, retries included",
            )
            .buckets(BUCKETS.to_vec()),
        )
        .expect(VALID);
        reg(Box::new(duration.clone()));
        Self {
            writes,
            requests: counter(
                "whisk_gateway_remote_write_requests_total",
                "Requests sent to the receiver; one carries the writes of every group ready at once",
            ),
            retries: counter(
                "whisk_gateway_remote_write_retries_total",
                "Attempts beyond the first of writes to the receiver (5xx, 429, timeouts)",
            ),
            duration,
            unknown_deletes: counter(
                "whisk_gateway_remote_write_unknown_deletes_total",
                "DELETEs of a group this replica does not remember (answered 202, nothing written)",
            ),
            evictions: counter(
                "whisk_gateway_remote_write_evicted_groups_total",
                "Groups forgotten before their expiry to stay within the memory bounds",
            ),
            groups: gauge(
                "whisk_gateway_remote_write_groups",
                "Groups remembered (write order, last series for stale markers)",
            ),
            memory_bytes: gauge(
                "whisk_gateway_remote_write_memory_bytes",
                "Bytes held for remembered groups and their shared series shapes",
            ),
        }
    }

    /// Records one write's result.
    pub(crate) fn record(&self, result: &Result<Outcome, ClientError>, took: Duration) {
        self.duration.observe(took.as_secs_f64());
        match result {
            Ok(o) => {
                self.writes.with_label_values(&["acknowledged"]).inc();
                self.retries.inc_by(u64::from(o.attempts.saturating_sub(1)));
            }
            Err(e) => self.writes.with_label_values(&[e.kind()]).inc(),
        }
    }

    /// Counts groups forgotten to make room.
    pub(crate) fn evicted(&self, n: usize) {
        self.evictions.inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }
}
