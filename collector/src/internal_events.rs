//! Everything the collector reports about itself, as events: each thing that happens is one
//! method of [`Telemetry`] that logs it (when worth a line) and counts it, together, as
//! Vector's internal events do. The counters are the `whisk_collector_*` families of
//! docs/design.md, served on `/metrics` and never pushed. No other module touches a metric.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::aggregate::{Applied, Capped};
use crate::event::{Body, EventMessage, InvalidReason, ParseError};
use crate::janitor::JanitorRound;

/// What the aggregate looks like at a render, for the gauges that describe it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AggregateStats {
    /// Series held for platform metrics.
    pub(crate) live_series: usize,
    /// Envelope timestamp (ms) of the newest applied event.
    pub(crate) newest_timestamp_ms: Option<i64>,
    /// Events counted under a catch-all because a limit was reached, so far.
    pub(crate) capped: Capped,
    /// Activations whose id was too long for an exemplar, so far.
    pub(crate) exemplar_ids_too_long: u64,
}

/// Handles to every own metric, resolved once so the hot path is a single atomic add.
#[derive(Debug)]
pub(crate) struct Telemetry {
    registry: Registry,
    events_activation: IntCounter,
    events_metric: IntCounter,
    invalid: [IntCounter; 6],
    last_event_timestamp: Gauge,
    consumer_lag: IntGaugeVec,
    pushes_ok: IntCounter,
    pushes_failed: IntCounter,
    push_duration: Histogram,
    live_series: IntGauge,
    overflow_events: IntCounter,
    capped_status_codes: IntCounter,
    capped_series: IntCounter,
    evicted_keys: IntCounter,
    exemplar_ids_too_long: IntCounter,
    janitor_pruned: IntCounter,
    janitor_ok: IntCounter,
    janitor_failed: IntCounter,
    assigned_partitions: IntGauge,
    kafka_errors: IntCounterVec,
    guard_type_clash: IntCounter,
    guard_first_seen_full: IntCounter,
    guard_clashes: IntCounterVec,
    janitor_rounds: IntCounterVec,
    janitor_prometheus_failures: IntCounterVec,
    janitor_deletes_ok: IntCounter,
    janitor_deletes_failed: IntCounter,
    janitor_shard_checks: IntCounterVec,
    revocations_committed: IntCounter,
    revocations_failed: IntCounter,
    /// Last assignment size logged (-1: none yet), so only changes are logged.
    assigned_logged: AtomicI64,
    invalid_log: Mutex<LogBudget>,
    overflow_log: Mutex<LogBudget>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// The registry behind `/metrics`, for metrics registered elsewhere (the listener's).
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// Registers metric definitions in one registry.
struct Registrar<'a>(&'a Registry);

// The names and labels are constants; registering them cannot fail.
#[allow(clippy::expect_used)]
impl Registrar<'_> {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.0
            .register(Box::new(c.clone()))
            .expect("constant metric definitions are valid and unique");
        c
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid metric"))
    }

    fn counter_vec(&self, name: &str, help: &str, label: &str) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid metric"))
    }

    fn float_gauge(&self, name: &str, help: &str) -> Gauge {
        self.register(Gauge::new(name, help).expect("valid metric"))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets);
        self.register(Histogram::with_opts(opts).expect("valid metric"))
    }
}

/// The families of the event path: consuming, applying, pushing, the broker.
struct PathFamilies {
    events: IntCounterVec,
    invalid: IntCounterVec,
    last_event_timestamp: Gauge,
    consumer_lag: IntGaugeVec,
    pushes: IntCounterVec,
    push_duration: Histogram,
    live_series: IntGauge,
    overflow_events: IntCounter,
    capped: IntCounterVec,
    evicted_keys: IntCounter,
    exemplar_ids_too_long: IntCounter,
    assigned_partitions: IntGauge,
    kafka_errors: IntCounterVec,
    revocations: IntCounterVec,
}

impl PathFamilies {
    fn register(r: &Registrar<'_>) -> Self {
        let kafka_errors = r.counter_vec(
            "whisk_collector_kafka_errors_total",
            "Errors reported by librdkafka (broker unreachable, transport, authentication, ...), by kind; logged only when the state changes and once a minute while it lasts",
            "kind",
        );
        for kind in crate::source::broker_health::ErrorKind::ALL {
            let _ = kafka_errors.with_label_values(&[kind.as_str()]);
        }
        Self {
            events: r.counter_vec(
                "whisk_collector_events_total",
                "Valid events applied, by event type",
                "type",
            ),
            invalid: r.counter_vec(
                "whisk_collector_invalid_events_total",
                "Messages skipped because they are not valid events, by reason",
                "reason",
            ),
            last_event_timestamp: r.float_gauge(
                "whisk_collector_last_event_timestamp_seconds",
                "Envelope timestamp of the newest applied event",
            ),
            consumer_lag: r.gauge_vec(
                "whisk_collector_consumer_lag_messages",
                "Messages between the high watermark and the next offset to apply",
                &["topic", "partition"],
            ),
            pushes: r.counter_vec(
                "whisk_collector_pushes_total",
                "Pushes to the Pushgateway, by result",
                "result",
            ),
            push_duration: r.histogram(
                "whisk_collector_push_duration_seconds",
                "Duration of pushes to the Pushgateway",
                vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            ),
            live_series: r.gauge(
                "whisk_collector_live_series",
                "Series currently held for platform metrics",
            ),
            overflow_events: r.counter(
                "whisk_collector_overflow_events_total",
                "Activations counted under action=\"__overflow__\" because of --max-actions",
            ),
            capped: r.counter_vec(
                "whisk_collector_capped_events_total",
                "Events counted under status_code/kind/caused_by=\"other\" or action=\"__overflow__\", or dropped (gauges), because a limit was reached, by limit",
                "limit",
            ),
            evicted_keys: r.counter(
                "whisk_collector_evicted_keys_total",
                "Actions, namespaces and controllers forgotten after --evict-after without events",
            ),
            exemplar_ids_too_long: r.counter(
                "whisk_collector_exemplar_ids_too_long_total",
                "Activations carried as no exemplar because activation_id=\"<id>\" would exceed OpenMetrics' 128 characters (never truncated; the activation is counted as usual)",
            ),
            assigned_partitions: r.gauge(
                "whisk_collector_assigned_partitions",
                "Partitions of the events topic assigned to this replica",
            ),
            kafka_errors,
            revocations: r.counter_vec(
                "whisk_collector_revocations_total",
                "Partition revocations, by result: committed (pushed and committed before release) or failed (the next owner re-reads since the last commit)",
                "result",
            ),
        }
    }
}

/// The families of the janitor and the guard.
struct JanitorFamilies {
    pruned: IntCounter,
    runs: IntCounterVec,
    guard_deleted: IntCounterVec,
    first_seen_full: IntCounter,
    clashes: IntCounterVec,
    rounds: IntCounterVec,
    prometheus_failures: IntCounterVec,
    deletes: IntCounterVec,
    shard_checks: IntCounterVec,
}

impl JanitorFamilies {
    fn register(r: &Registrar<'_>) -> Self {
        let f = Self {
            pruned: r.counter(
                "whisk_collector_janitor_pruned_groups_total",
                "Stale Pushgateway groups deleted (or, in dry-run, found) by the janitor",
            ),
            runs: r.counter_vec(
                "whisk_collector_janitor_runs_total",
                "Janitor runs, by result",
                "result",
            ),
            guard_deleted: r.counter_vec(
                "whisk_collector_guard_deleted_groups_total",
                "Pushgateway groups deleted by the guard so the Pushgateway's /metrics answers again, by reason",
                "reason",
            ),
            first_seen_full: r.counter(
                "whisk_collector_guard_first_seen_full_total",
                "Shard listings that held a family the guard's memory of first sightings had no room for (such families are ordered by first push in a clash)",
            ),
            clashes: r.counter_vec(
                "whisk_collector_guard_clashes_total",
                "Clashes the guard found on a shard whose /metrics answered 500 (one per later family, whose groups it deletes), by what told which family came first: platform, first_seen (an earlier janitor read), first_push (the Pushgateway's first-push stamps) or unordered (only last pushes)",
                "ordered_by",
            ),
            rounds: r.counter_vec(
                "whisk_collector_janitor_rounds_total",
                "Janitor rounds that completed, by where the stale groups came from: prometheus (--prometheus-url) or listing (each Pushgateway's /api/v1/metrics)",
                "source",
            ),
            prometheus_failures: r.counter_vec(
                "whisk_collector_janitor_prometheus_failures_total",
                "Janitor rounds where Prometheus (--prometheus-url) gave no usable answer, so the round fell back to the listing, by reason",
                "reason",
            ),
            deletes: r.counter_vec(
                "whisk_collector_janitor_deletes_total",
                "DELETE requests the janitor's Prometheus source sent (each stale group on every shard), by result",
                "result",
            ),
            shard_checks: r.counter_vec(
                "whisk_collector_janitor_shard_checks_total",
                "Per shard and round, how the guard learnt the shard's health: prometheus (up of its scrape is 1) or direct (its /metrics status checked)",
                "via",
            ),
        };
        for order in crate::janitor::ClashOrder::ALL {
            let _ = f.clashes.with_label_values(&[order.as_str()]);
        }
        for reason in crate::janitor::prometheus::PrometheusError::REASONS {
            let _ = f.prometheus_failures.with_label_values(&[reason]);
        }
        for source in ["listing", "prometheus"] {
            let _ = f.rounds.with_label_values(&[source]);
            let _ = f.shard_checks.with_label_values(&[if source == "listing" {
                "direct"
            } else {
                source
            }]);
        }
        f
    }
}

impl Telemetry {
    /// Registers every metric in a fresh registry.
    pub(crate) fn new() -> Self {
        let registry = Registry::new();
        let r = Registrar(&registry);
        let p = PathFamilies::register(&r);
        let j = JanitorFamilies::register(&r);
        let invalid = InvalidReason::ALL.map(|r| p.invalid.with_label_values(&[r.as_str()]));
        Self {
            janitor_rounds: j.rounds,
            janitor_prometheus_failures: j.prometheus_failures,
            janitor_deletes_ok: j.deletes.with_label_values(&["ok"]),
            janitor_deletes_failed: j.deletes.with_label_values(&["failed"]),
            janitor_shard_checks: j.shard_checks,
            kafka_errors: p.kafka_errors,
            guard_type_clash: j
                .guard_deleted
                .with_label_values(&[crate::janitor::guard::TYPE_CLASH]),
            guard_first_seen_full: j.first_seen_full,
            guard_clashes: j.clashes,
            revocations_committed: p.revocations.with_label_values(&["committed"]),
            revocations_failed: p.revocations.with_label_values(&["failed"]),
            events_activation: p.events.with_label_values(&["activation"]),
            events_metric: p.events.with_label_values(&["metric"]),
            invalid,
            last_event_timestamp: p.last_event_timestamp,
            consumer_lag: p.consumer_lag,
            pushes_ok: p.pushes.with_label_values(&["ok"]),
            pushes_failed: p.pushes.with_label_values(&["failed"]),
            push_duration: p.push_duration,
            live_series: p.live_series,
            overflow_events: p.overflow_events,
            capped_status_codes: p.capped.with_label_values(&["max_status_codes_per_action"]),
            capped_series: p.capped.with_label_values(&["max_series"]),
            evicted_keys: p.evicted_keys,
            exemplar_ids_too_long: p.exemplar_ids_too_long,
            janitor_pruned: j.pruned,
            janitor_ok: j.runs.with_label_values(&["ok"]),
            janitor_failed: j.runs.with_label_values(&["failed"]),
            assigned_partitions: p.assigned_partitions,
            assigned_logged: AtomicI64::new(-1),
            registry,
            invalid_log: Mutex::new(LogBudget::new(10, Duration::from_secs(10))),
            overflow_log: Mutex::new(LogBudget::new(1, Duration::from_secs(60))),
        }
    }

    /// An event was applied to the aggregate (an activation beyond `--max-actions` is also
    /// counted as overflow and logged at most once a minute).
    pub(crate) fn event_applied(&self, applied: Applied, event: &EventMessage<'_>) {
        match applied {
            Applied::Activation => self.events_activation.inc(),
            Applied::OverflowActivation => {
                self.events_activation.inc();
                self.overflow_events.inc();
                if let Take::Log { suppressed } = take(&self.overflow_log) {
                    tracing::warn!(
                        action = %overflowed_name(event),
                        suppressed,
                        "--max-actions reached: activations of new actions are counted under \
                         action=\"__overflow__\" (raise --max-actions to keep them apart)"
                    );
                }
            }
            Applied::Metric => self.events_metric.inc(),
        }
    }

    /// A message was skipped because it is not a valid event: counted by reason, logged (at
    /// most 10 lines per 10 s, then a summary).
    pub(crate) fn invalid_event(&self, err: &ParseError, topic: &str, partition: i32, offset: i64) {
        self.invalid[reason_index(err.reason)].inc();
        if let Take::Log { suppressed } = take(&self.invalid_log) {
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
    }

    /// The assignment was read: `partitions` partitions of the topic are ours (a change is
    /// logged).
    pub(crate) fn partitions_assigned(&self, partitions: usize) {
        let n = i64::try_from(partitions).unwrap_or(i64::MAX);
        self.assigned_partitions.set(n);
        if self.assigned_logged.swap(n, Ordering::Relaxed) != n {
            tracing::info!(partitions, "partition assignment changed");
        }
    }

    /// The lag of one assigned partition was measured.
    pub(crate) fn partition_lag(&self, topic: &str, partition: i32, lag: i64) {
        if let Ok(g) = self
            .consumer_lag
            .get_metric_with_label_values(&[topic, &partition.to_string()])
        {
            g.set(lag);
        }
    }

    /// A partition is no longer ours: its lag series goes.
    pub(crate) fn partition_revoked(&self, topic: &str, partition: i32) {
        let _ = self
            .consumer_lag
            .remove_label_values(&[topic, &partition.to_string()]);
    }

    /// Counts one librdkafka error of `kind` (an
    /// [`ErrorKind`](crate::source::broker_health::ErrorKind) label); the caller logs state
    /// changes only.
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

    /// The platform group was pushed.
    pub(crate) fn push_succeeded(&self, url: &str, took: Duration) {
        self.pushes_ok.inc();
        self.push_duration.observe(took.as_secs_f64());
        tracing::debug!(url, ?took, "pushed");
    }

    /// A push of the platform group failed (retried next interval: the state is cumulative).
    pub(crate) fn push_failed(&self, err: &dyn std::fmt::Display, took: Duration) {
        self.pushes_failed.inc();
        self.push_duration.observe(took.as_secs_f64());
        tracing::warn!(?took, "push failed, retrying next interval: {err}");
    }

    /// Rendering the platform metrics for a push failed (the push is skipped).
    pub(crate) fn push_render_failed(&self, err: &dyn std::fmt::Display) {
        self.pushes_failed.inc();
        tracing::error!("rendering for the push failed, retrying next interval: {err}");
    }

    /// The clashes of one round, counted by what ordered them; those only last pushes ordered
    /// are logged.
    fn guard_clashes_done(&self, clashes: &[crate::janitor::ClashOrder]) {
        for order in clashes {
            self.guard_clashes
                .with_label_values(&[order.as_str()])
                .inc();
        }
        let unordered = clashes
            .iter()
            .filter(|o| **o == crate::janitor::ClashOrder::Unordered)
            .count();
        if unordered > 0 {
            tracing::warn!(
                clashes = unordered,
                "the guard could not tell which of two clashing families came first (a group of \
                 the later one has no first-push stamp: a push to it failed); the one pushed last \
                 lost"
            );
        }
    }

    /// One janitor round finished: each pruned (or, in dry-run, found) group is logged and
    /// counted; each refused DELETE is logged.
    pub(crate) fn janitor_round_done(&self, round: &JanitorRound) {
        self.janitor_ok.inc();
        for g in &round.pruned {
            if round.dry_run {
                tracing::info!(path = %g.path, age_secs = g.age_secs, "dry run: would delete stale group");
            } else {
                tracing::info!(path = %g.path, age_secs = g.age_secs, "deleted stale group");
            }
        }
        for (g, err) in &round.failed {
            tracing::warn!(path = %g.path, age_secs = g.age_secs, "DELETE of stale group failed: {err}");
        }
        self.janitor_pruned.inc_by(round.pruned() as u64);
        for g in &round.guard_deleted {
            tracing::warn!(
                path = %g.path,
                reason = crate::janitor::guard::TYPE_CLASH,
                ordered_by = g.ordered_by.as_str(),
                "guard deleted a Pushgateway group so its /metrics answers again: {}",
                g.why
            );
        }
        self.guard_clashes_done(&round.guard_clashes);
        if !round.dry_run {
            self.guard_type_clash
                .inc_by(round.guard_deleted.len() as u64);
        }
        if round.first_seen_full > 0 {
            tracing::warn!(
                shards = round.first_seen_full,
                "the guard's memory of when each family first appeared is full on some shards: \
                 families new to it are ordered by first push in a clash"
            );
        }
        self.guard_first_seen_full.inc_by(round.first_seen_full);
        for e in &round.unserved {
            tracing::warn!("janitor: a Pushgateway could not be served this round: {e}");
        }
        if let Some(e) = &round.prometheus_failure {
            self.janitor_prometheus_fallback(e);
        }
        self.janitor_rounds
            .with_label_values(&[round.source.as_str()])
            .inc();
        self.janitor_deletes_ok.inc_by(round.deletes_ok);
        self.janitor_deletes_failed.inc_by(round.deletes_failed);
        self.janitor_shard_checks
            .with_label_values(&["prometheus"])
            .inc_by(round.health_via_prometheus);
        self.janitor_shard_checks
            .with_label_values(&["direct"])
            .inc_by(round.health_direct);
        if round.capped {
            tracing::info!(
                groups = round.groups,
                "janitor: Prometheus answered the per-round cap of stale groups; the rest go next round"
            );
        }
    }

    /// Prometheus gave no usable answer; the round used the listing.
    fn janitor_prometheus_fallback(&self, err: &crate::janitor::prometheus::PrometheusError) {
        self.janitor_prometheus_failures
            .with_label_values(&[err.reason()])
            .inc();
        tracing::warn!(
            "janitor: Prometheus not usable this round, listing the Pushgateways instead: {err}"
        );
    }

    /// A janitor round could not list the groups (retried next interval).
    pub(crate) fn janitor_round_failed(&self, err: &crate::janitor::JanitorError) {
        if let crate::janitor::JanitorError::Fallback { prometheus, .. } = err {
            self.janitor_prometheus_fallback(prometheus);
        }
        self.janitor_failed.inc();
        tracing::warn!("janitor run failed, retrying next interval: {err}");
    }

    /// An eviction pass forgot `keys` idle keys (logged when any).
    pub(crate) fn keys_evicted(&self, keys: usize) {
        if keys > 0 {
            self.evicted_keys.inc_by(keys as u64);
            tracing::info!(keys, "evicted idle keys (--evict-after)");
        }
    }

    /// Appends the own metrics in text format 0.0.4; `stats` describes the aggregate now.
    pub(crate) fn render(&self, out: &mut String, stats: AggregateStats) {
        self.live_series
            .set(i64::try_from(stats.live_series).unwrap_or(i64::MAX));
        // The aggregate counts capped events itself (no lock on the hot path); bring the
        // counters up to its totals.
        catch_up(&self.capped_status_codes, stats.capped.status_codes);
        catch_up(&self.capped_series, stats.capped.series);
        let too_long = stats.exemplar_ids_too_long;
        if too_long > self.exemplar_ids_too_long.get() {
            tracing::warn!(
                since_last_render = too_long - self.exemplar_ids_too_long.get(),
                "activation ids too long for an exemplar (over 128 characters with the label name): \
                 those activations carry no exemplar"
            );
            catch_up(&self.exemplar_ids_too_long, too_long);
        }
        if let Some(ts) = stats.newest_timestamp_ms {
            #[allow(clippy::cast_precision_loss)]
            self.last_event_timestamp.set(ts as f64 / 1000.0);
        }
        let mut buf = Vec::new();
        match TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            Ok(()) => out.push_str(&String::from_utf8_lossy(&buf)),
            Err(e) => tracing::error!("cannot encode own metrics: {e}"),
        }
    }
}

fn overflowed_name<'a>(event: &'a EventMessage<'_>) -> &'a str {
    match &event.body {
        Body::Activation(a) => &a.name,
        Body::Metric(_) => "",
    }
}

fn catch_up(counter: &IntCounter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

fn reason_index(reason: InvalidReason) -> usize {
    InvalidReason::ALL
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(0)
}

fn take(budget: &Mutex<LogBudget>) -> Take {
    match budget.lock() {
        Ok(mut b) => b.take(),
        Err(_) => Take::Suppress,
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
mod tests;
