//! The collector's own health metrics (`whisk_collector_*`, docs/design.md), served on
//! `/metrics` and never pushed, plus the rate-limited log of invalid events.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::aggregate::Applied;
use crate::event::{InvalidReason, ParseError};

/// Handles to every own metric, resolved once so the hot path is a single atomic add.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    events_activation: IntCounter,
    events_metric: IntCounter,
    invalid: [IntCounter; 6],
    /// Envelope timestamp of the newest applied event (seconds).
    pub last_event_timestamp: Gauge,
    consumer_lag: IntGaugeVec,
    pushes_ok: IntCounter,
    pushes_failed: IntCounter,
    /// Duration of pushes to the Pushgateway.
    pub push_duration: Histogram,
    /// Series currently held for platform metrics.
    pub live_series: IntGauge,
    overflow_events: IntCounter,
    janitor_pruned: IntCounter,
    janitor_ok: IntCounter,
    janitor_failed: IntCounter,
    /// Partitions currently assigned to this replica.
    pub assigned_partitions: IntGauge,
    kafka_errors: IntCounterVec,
    guard_type_clash: IntCounter,
    revocations_committed: IntCounter,
    revocations_failed: IntCounter,
    invalid_log: Mutex<LogBudget>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Registers every metric in a fresh registry.
    // The names and labels below are constants; registering them cannot fail.
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            registry
                .register(c)
                .expect("constant metric definitions are valid and unique");
        };
        let counter_vec = |name: &str, help: &str, label: &str| {
            let v = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            reg(Box::new(v.clone()));
            v
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            reg(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            reg(Box::new(g.clone()));
            g
        };

        let events = counter_vec(
            "whisk_collector_events_total",
            "Valid events applied, by event type",
            "type",
        );
        let invalid_vec = counter_vec(
            "whisk_collector_invalid_events_total",
            "Messages skipped because they are not valid events, by reason",
            "reason",
        );
        let invalid = InvalidReason::ALL.map(|r| invalid_vec.with_label_values(&[r.as_str()]));
        let last_event_timestamp = Gauge::new(
            "whisk_collector_last_event_timestamp_seconds",
            "Envelope timestamp of the newest applied event",
        )
        .expect("valid metric");
        reg(Box::new(last_event_timestamp.clone()));
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "whisk_collector_consumer_lag_messages",
                "Messages between the high watermark and the next offset to apply",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        reg(Box::new(consumer_lag.clone()));
        let pushes = counter_vec(
            "whisk_collector_pushes_total",
            "Pushes to the Pushgateway, by result",
            "result",
        );
        let push_duration = Histogram::with_opts(
            HistogramOpts::new(
                "whisk_collector_push_duration_seconds",
                "Duration of pushes to the Pushgateway",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("valid metric");
        reg(Box::new(push_duration.clone()));
        let live_series = gauge(
            "whisk_collector_live_series",
            "Series currently held for platform metrics",
        );
        let overflow_events = counter(
            "whisk_collector_overflow_events_total",
            "Activations counted under action=\"__overflow__\" because of --max-actions",
        );
        let janitor_pruned = counter(
            "whisk_collector_janitor_pruned_groups_total",
            "Stale Pushgateway groups deleted (or, in dry-run, found) by the janitor",
        );
        let janitor_runs = counter_vec(
            "whisk_collector_janitor_runs_total",
            "Janitor runs, by result",
            "result",
        );
        let assigned_partitions = gauge(
            "whisk_collector_assigned_partitions",
            "Partitions of the events topic assigned to this replica",
        );
        let kafka_errors = counter_vec(
            "whisk_collector_kafka_errors_total",
            "Errors reported by librdkafka (broker unreachable, transport, authentication, ...), by kind; logged only when the state changes and once a minute while it lasts",
            "kind",
        );
        for kind in crate::source::broker_health::ErrorKind::ALL {
            let _ = kafka_errors.with_label_values(&[kind.as_str()]);
        }
        let revocations = counter_vec(
            "whisk_collector_revocations_total",
            "Partition revocations, by result: committed (pushed and committed before release) or failed (the next owner re-reads since the last commit)",
            "result",
        );
        let guard_deleted = counter_vec(
            "whisk_collector_guard_deleted_groups_total",
            "Pushgateway groups deleted by the guard so the Pushgateway's /metrics answers again, by reason",
            "reason",
        );
        Self {
            guard_type_clash: guard_deleted.with_label_values(&[crate::janitor::guard::TYPE_CLASH]),
            kafka_errors,
            revocations_committed: revocations.with_label_values(&["committed"]),
            revocations_failed: revocations.with_label_values(&["failed"]),
            events_activation: events.with_label_values(&["activation"]),
            events_metric: events.with_label_values(&["metric"]),
            invalid,
            last_event_timestamp,
            consumer_lag,
            pushes_ok: pushes.with_label_values(&["ok"]),
            pushes_failed: pushes.with_label_values(&["failed"]),
            push_duration,
            live_series,
            overflow_events,
            janitor_pruned,
            janitor_ok: janitor_runs.with_label_values(&["ok"]),
            janitor_failed: janitor_runs.with_label_values(&["failed"]),
            assigned_partitions,
            registry,
            invalid_log: Mutex::new(LogBudget::new(10, Duration::from_secs(10))),
        }
    }

    /// Counts an applied event.
    pub fn event_applied(&self, applied: Applied) {
        match applied {
            Applied::Activation => self.events_activation.inc(),
            Applied::OverflowActivation => {
                self.events_activation.inc();
                self.overflow_events.inc();
            }
            Applied::Metric => self.events_metric.inc(),
        }
    }

    /// Counts a skipped message and logs it (at most 10 lines per 10 s, then a summary).
    pub fn invalid_event(&self, err: &ParseError, topic: &str, partition: i32, offset: i64) {
        let idx = InvalidReason::ALL
            .iter()
            .position(|r| *r == err.reason)
            .unwrap_or(0);
        self.invalid[idx].inc();
        let Ok(mut budget) = self.invalid_log.lock() else {
            return;
        };
        match budget.take() {
            Take::Log { suppressed } => {
                if suppressed > 0 {
                    tracing::warn!(suppressed, "invalid events not logged in the last window");
                }
                tracing::warn!(
                    topic,
                    partition,
                    offset,
                    reason = err.reason.as_str(),
                    "skipping invalid event: {}",
                    err.detail
                );
            }
            Take::Suppress => {}
        }
    }

    /// Invalid messages counted for `reason` so far.
    pub fn invalid_count(&self, reason: InvalidReason) -> u64 {
        let idx = InvalidReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.invalid[idx].get()
    }

    /// Sets the lag of one partition.
    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        if let Ok(g) = self
            .consumer_lag
            .get_metric_with_label_values(&[topic, &partition.to_string()])
        {
            g.set(lag);
        }
    }

    /// Drops the lag series of a partition that is no longer assigned.
    pub fn remove_lag(&self, topic: &str, partition: i32) {
        let _ = self
            .consumer_lag
            .remove_label_values(&[topic, &partition.to_string()]);
    }

    /// Counts groups the guard deleted because of a type clash (each is logged by the janitor).
    pub(crate) fn guard_deleted(&self, groups: u64) {
        self.guard_type_clash.inc_by(groups);
    }

    /// Counts one librdkafka error of `kind` (an [`ErrorKind`](crate::source::broker_health::ErrorKind) label).
    pub(crate) fn kafka_error(&self, kind: &str) {
        self.kafka_errors.with_label_values(&[kind]).inc();
    }

    /// Counts one revocation: whether what was applied was pushed and committed first.
    pub(crate) fn revocation(&self, committed: bool) {
        if committed {
            self.revocations_committed.inc();
        } else {
            self.revocations_failed.inc();
        }
    }

    /// Records a push and its duration.
    pub fn push_done(&self, ok: bool, took: Duration) {
        if ok {
            self.pushes_ok.inc()
        } else {
            self.pushes_failed.inc()
        }
        self.push_duration.observe(took.as_secs_f64());
    }

    /// Records one janitor run and how many groups it pruned.
    pub fn janitor_run(&self, ok: bool, pruned: u64) {
        if ok {
            self.janitor_ok.inc()
        } else {
            self.janitor_failed.inc()
        }
        self.janitor_pruned.inc_by(pruned);
    }

    /// Appends the own metrics in text format 0.0.4.
    pub fn render(&self, out: &mut String) {
        let mut buf = Vec::new();
        match TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            Ok(()) => out.push_str(&String::from_utf8_lossy(&buf)),
            Err(e) => tracing::error!("cannot encode own metrics: {e}"),
        }
    }
}

/// A log budget of `per_window` lines per `window`.
#[derive(Debug)]
struct LogBudget {
    per_window: u32,
    window: Duration,
    started: Instant,
    used: u32,
    suppressed: u64,
}

enum Take {
    Log { suppressed: u64 },
    Suppress,
}

impl LogBudget {
    fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window,
            started: Instant::now(),
            used: 0,
            suppressed: 0,
        }
    }

    fn take(&mut self) -> Take {
        if self.started.elapsed() >= self.window {
            self.started = Instant::now();
            self.used = 0;
        }
        if self.used < self.per_window {
            self.used += 1;
            let suppressed = std::mem::take(&mut self.suppressed);
            Take::Log { suppressed }
        } else {
            self.suppressed += 1;
            Take::Suppress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_budget_suppresses_beyond_the_window_allowance_and_reports_it() {
        let mut b = LogBudget::new(2, Duration::from_secs(3600));
        assert!(matches!(b.take(), Take::Log { suppressed: 0 }));
        assert!(matches!(b.take(), Take::Log { suppressed: 0 }));
        assert!(matches!(b.take(), Take::Suppress));
        assert!(matches!(b.take(), Take::Suppress));
        b.started -= Duration::from_secs(3601);
        assert!(matches!(b.take(), Take::Log { suppressed: 2 }));
    }

    #[test]
    fn renders_every_own_family() {
        let t = Telemetry::new();
        t.event_applied(Applied::OverflowActivation);
        t.set_lag("events", 0, 5);
        let mut s = String::new();
        t.render(&mut s);
        for name in [
            "whisk_collector_events_total{type=\"activation\"} 1",
            "whisk_collector_events_total{type=\"metric\"} 0",
            "whisk_collector_invalid_events_total{reason=\"not_utf8\"} 0",
            "whisk_collector_invalid_events_total{reason=\"empty\"} 0",
            "whisk_collector_last_event_timestamp_seconds 0",
            "whisk_collector_consumer_lag_messages{partition=\"0\",topic=\"events\"} 5",
            "whisk_collector_pushes_total{result=\"failed\"} 0",
            "whisk_collector_push_duration_seconds_count 0",
            "whisk_collector_live_series 0",
            "whisk_collector_overflow_events_total 1",
            "whisk_collector_janitor_pruned_groups_total 0",
            "whisk_collector_janitor_runs_total{result=\"ok\"} 0",
            "whisk_collector_assigned_partitions 0",
        ] {
            assert!(s.contains(name), "{name} missing in\n{s}");
        }
    }
}
