//! The Kafka consumer: a consumer-group member on `<prefix>events`, run on its own thread.
//!
//! At-least-once: `enable.auto.commit=true` with `enable.auto.offset.store=false`, so only
//! offsets we store are committed. Without a Pushgateway the offsets of applied events are
//! stored every [`HOUSEKEEPING`]; with one, only the offsets of a snapshot that was pushed
//! successfully are stored ([`Command::Store`]). Transient broker errors are logged and polling
//! goes on: librdkafka reconnects by itself; its errors are counted and logged on state
//! changes only ([`broker_health`](super::broker_health)).
//!
//! Ready means "joined the consumer group and polling": a replica that holds no partition (the
//! standby, when `events` has one partition) is Ready too; ownership is the metric
//! `whisk_collector_assigned_partitions`.
//!
//! Rebalances: before partitions are released ([`ConsumerContext::pre_rebalance`], revoke),
//! what was applied is pushed and its offsets committed, so the next owner starts exactly after
//! it. After an assignment, the gauges, lag series and applied offsets of partitions this
//! replica no longer owns are dropped. Offsets of a push that raced with a rebalance are
//! discarded (a generation counter), so a stale snapshot never moves a commit backwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::broker_health::{BrokerHealth, ErrorKind, REMIND_EVERY, Report};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::event::{self, ParseError};
use crate::shared::{Offsets, Shared};

/// How often assignment, lag and (without a Pushgateway) offsets are refreshed.
pub(crate) const HOUSEKEEPING: Duration = Duration::from_millis(500);

const POLL: Duration = Duration::from_millis(100);

/// Bound of the committed-offsets lookup during a rebalance.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(5);

/// Pushes the current snapshot now (blocking) and returns the offsets it covers when the push
/// succeeded. Called on the consumer thread before partitions are revoked.
pub(crate) type Flush = Box<dyn Fn() -> Option<Offsets> + Send + Sync>;

/// Messages to the consumer thread.
#[derive(Debug)]
pub(crate) enum Command {
    /// Store these offsets (they are covered by a successful push) unless a rebalance happened
    /// since `generation` was read (see [`KafkaSource::generation`]).
    Store {
        /// Offsets covered by the push.
        offsets: Offsets,
        /// The rebalance generation read before the snapshot was taken.
        generation: u64,
    },
    /// Shutting down: store these offsets if any (else, without a Pushgateway, the applied
    /// ones), commit synchronously and leave the group.
    Finish(Option<Offsets>),
}

/// The consumer's callbacks: statistics (high watermarks, broker state), errors, logs and
/// rebalances.
struct Context {
    topic: String,
    high_watermarks: std::sync::Mutex<Vec<(i32, i64)>>,
    /// Some broker connection was up at the last statistics.
    broker_up: AtomicBool,
    shared: Arc<Shared>,
    /// With a Pushgateway: pushes before a revocation. Without: the applied offsets are committed.
    flush: Option<Flush>,
    /// Bumped by every rebalance; offsets of a push that started before it are stale.
    generation: Arc<AtomicU64>,
    /// Set when the consumer is being closed: the final push and commit are already done.
    closing: AtomicBool,
    health: BrokerHealth,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let up = statistics.brokers.values().any(|b| b.state == "UP");
        self.broker_up.store(up, Ordering::Relaxed);
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let highs: Vec<(i32, i64)> = topic
            .partitions
            .iter()
            .filter(|(p, part)| **p >= 0 && part.hi_offset >= 0)
            .map(|(p, part)| (*p, part.hi_offset))
            .collect();
        if let Ok(mut h) = self.high_watermarks.lock() {
            *h = highs;
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.kafka_error(&error, reason);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        // While in trouble, librdkafka's own lines repeat what the error report says.
        let quiet = self.health.in_trouble();
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
                if !quiet =>
            {
                tracing::error!(target: "librdkafka", "librdkafka: {fac} {log_message}")
            }
            RDKafkaLogLevel::Warning if !quiet => {
                tracing::warn!(target: "librdkafka", "librdkafka: {fac} {log_message}")
            }
            RDKafkaLogLevel::Notice => {
                tracing::info!(target: "librdkafka", "librdkafka: {fac} {log_message}")
            }
            _ => tracing::debug!(target: "librdkafka", "librdkafka: {fac} {log_message}"),
        }
    }
}

impl ConsumerContext for Context {
    /// librdkafka's default rebalance (pre hook, assign/unassign, post hook) with one change:
    /// a partition assigned back to this replica resumes after what this replica already
    /// applied (and holds in its counters) rather than at the last commit, unless another
    /// replica committed further meanwhile. So a rebalance whose commit failed (a lost
    /// session, a restarted broker) does not count events twice.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.resume_after_applied(consumer, tpl);
                let assigned = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = assigned {
                    self.kafka_error(&e, "assigning partitions");
                }
                self.post_rebalance(consumer, &Rebalance::Assign(tpl));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.pre_rebalance(consumer, &Rebalance::Revoke(tpl));
                let released = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = released {
                    self.kafka_error(&e, "releasing partitions");
                }
                self.post_rebalance(consumer, &Rebalance::Revoke(tpl));
            }
            other => {
                let e = KafkaError::Rebalance(other.into());
                if let Err(e) = consumer.unassign() {
                    tracing::debug!("unassign after a failed rebalance: {e}");
                }
                self.post_rebalance(consumer, &Rebalance::Error(e));
            }
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let _ = self.generation.fetch_add(1, Ordering::AcqRel);
            if self.closing.load(Ordering::Acquire) {
                return;
            }
            let revoked = partitions_of(tpl, &self.topic);
            self.release(consumer, &revoked);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let _ = self.generation.fetch_add(1, Ordering::AcqRel);
        match rebalance {
            Rebalance::Assign(_) => {
                let owned = match consumer.assignment() {
                    Ok(tpl) => partitions_of(&tpl, &self.topic),
                    Err(e) => {
                        tracing::warn!("cannot read the assignment after a rebalance: {e}");
                        return;
                    }
                };
                self.keep_only(&owned);
                self.shared.set_ready(true);
                tracing::info!(partitions = ?owned, "joined the consumer group");
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = ?partitions_of(tpl, &self.topic), "partitions revoked");
            }
            Rebalance::Error(e) => {
                self.shared.set_ready(false);
                self.kafka_error(e, "rebalance failed");
            }
        }
    }
}

impl Context {
    /// Counts a librdkafka error and logs it when the state changes (or as a reminder).
    fn kafka_error(&self, error: &KafkaError, reason: &str) {
        let kind = ErrorKind::of(error);
        self.shared.telemetry.kafka_error(kind.as_str());
        match self.health.error(Instant::now()) {
            Report::Trouble => tracing::error!(
                kind = kind.as_str(),
                "Kafka: {error}: {reason} (retrying; repeats are counted in \
                 whisk_collector_kafka_errors_total and logged once a minute)"
            ),
            Report::Reminder { suppressed, since } => tracing::error!(
                kind = kind.as_str(),
                suppressed,
                "Kafka still failing after {}s: {error}: {reason}",
                since.as_secs()
            ),
            Report::Quiet => tracing::debug!(kind = kind.as_str(), "Kafka: {error}: {reason}"),
        }
    }

    /// Sets the start offset of each newly assigned partition this replica has applied events
    /// of to the offset after them, when no replica committed further.
    fn resume_after_applied(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let assigned = partitions_of(tpl, &self.topic);
        let mine: Offsets = self
            .shared
            .lock()
            .applied
            .iter()
            .filter(|(p, _)| assigned.contains(p))
            .copied()
            .collect();
        if mine.is_empty() {
            return;
        }
        let committed = match consumer.committed_offsets(tpl.clone(), COMMITTED_TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot read committed offsets, resuming at them: {e}");
                return;
            }
        };
        let mut behind = Vec::new();
        for (p, applied) in mine {
            let committed =
                committed
                    .find_partition(&self.topic, p)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
            if committed.is_some_and(|c| c > applied) {
                // Another replica owned it meanwhile and went further.
                behind.push(p);
                continue;
            }
            if committed != Some(applied) {
                tracing::info!(
                    partition = p,
                    ?committed,
                    applied,
                    "resuming after the events already applied"
                );
            }
            if let Err(e) = tpl.set_partition_offset(&self.topic, p, Offset::Offset(applied)) {
                tracing::warn!(partition = p, "cannot set the start offset: {e}");
            }
        }
        if !behind.is_empty() {
            self.shared
                .lock()
                .applied
                .retain(|(p, _)| !behind.contains(p));
        }
    }

    /// Revocation: push what was applied and commit it, so the next owner starts after it.
    fn release(&self, consumer: &BaseConsumer<Self>, revoked: &[i32]) {
        if revoked.is_empty() {
            return;
        }
        let offsets = match &self.flush {
            Some(flush) => match flush() {
                Some(offsets) => offsets,
                None => {
                    self.shared.telemetry.revocation(false);
                    tracing::warn!(
                        partitions = ?revoked,
                        "push before revocation failed: the next owner re-reads the events since \
                         the last commit (they may be counted twice)"
                    );
                    return;
                }
            },
            None => self.shared.lock().applied.clone(),
        };
        store(consumer, &self.topic, &offsets);
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(())
            | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {
                self.shared.telemetry.revocation(true);
                tracing::info!(partitions = ?revoked, ?offsets, "pushed and committed before revocation");
            }
            Err(e) => {
                self.shared.telemetry.revocation(false);
                tracing::warn!(partitions = ?revoked, "commit before revocation failed: {e}");
            }
        }
    }

    /// Drops what belongs to partitions this replica no longer owns: their gauges, applied
    /// offsets and lag series.
    fn keep_only(&self, owned: &[i32]) {
        let gone: Vec<i32> = {
            let mut state = self.shared.lock();
            let gone = state
                .applied
                .iter()
                .map(|(p, _)| *p)
                .filter(|p| !owned.contains(p))
                .collect();
            state.applied.retain(|(p, _)| owned.contains(p));
            state.aggregator.retain_partitions(owned);
            gone
        };
        for p in gone {
            self.shared.telemetry.partition_revoked(&self.topic, p);
        }
        self.shared.telemetry.partitions_assigned(owned.len());
    }
}

fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect()
}

fn store(consumer: &BaseConsumer<Context>, topic: &str, offsets: &Offsets) {
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        if let Err(e) = tpl.add_partition_offset(topic, *p, Offset::Offset(*o)) {
            tracing::warn!("cannot store offset {o} of partition {p}: {e}");
        }
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        // Typically a partition revoked since: its new owner re-reads from the last commit.
        tracing::debug!("storing offsets {offsets:?} failed: {e}");
    }
}

/// The consumer and what it feeds.
pub(crate) struct KafkaSource {
    consumer: BaseConsumer<Context>,
    topic: String,
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    push_gated: bool,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// The librdkafka configuration the collector uses; `-X` properties override it.
pub(crate) fn client_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    let _ = c
        .set("bootstrap.servers", config.brokers())
        .set("group.id", &config.group_id)
        .set(
            "client.id",
            format!("whisk-collector-{}", config.instance()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "1000")
        // Bounded prefetch keeps RSS small (librdkafka's default is 64 MB). Measured on tansu:
        // 8 MB keeps up with the broker; 4 MB or less cuts throughput to ~10 k events/s.
        .set("queued.max.messages.kbytes", "8192")
        .set("statistics.interval.ms", "1000");
    for (k, v) in &config.kafka_properties {
        let _ = c.set(k, v);
    }
    c
}

impl KafkaSource {
    /// Creates the consumer and subscribes to the topic (no network round trip yet). With
    /// `flush` (a Pushgateway is configured) offsets are committed only for pushed snapshots,
    /// and `flush` pushes before partitions are revoked.
    pub(crate) fn new(
        config: &Config,
        shared: Arc<Shared>,
        commands: Receiver<Command>,
        flush: Option<Flush>,
    ) -> Result<Self> {
        let topic = config.topic();
        let push_gated = flush.is_some();
        let context = Context {
            topic: topic.clone(),
            high_watermarks: std::sync::Mutex::new(Vec::new()),
            broker_up: AtomicBool::new(false),
            shared: Arc::clone(&shared),
            flush,
            generation: Arc::new(AtomicU64::new(0)),
            closing: AtomicBool::new(false),
            health: BrokerHealth::new(REMIND_EVERY),
        };
        let consumer: BaseConsumer<Context> = client_config(config)
            .create_with_context(context)
            .map_err(|source| Error::KafkaConfig {
                brokers: config.brokers(),
                source,
            })?;
        consumer
            .subscribe(&[&topic])
            .map_err(|source| Error::Subscribe {
                topic: topic.clone(),
                source,
            })?;
        Ok(Self {
            consumer,
            topic,
            shared,
            commands,
            push_gated,
        })
    }

    /// The rebalance generation: read it before taking a snapshot to push, and send it with
    /// the snapshot's offsets in [`Command::Store`].
    pub(crate) fn generation(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.consumer.context().generation)
    }

    /// Consumes until `stop` is set, then finishes as told by [`Command::Finish`] (or after
    /// `finish_timeout` without one).
    pub(crate) fn run(self, stop: &AtomicBool, finish_timeout: Duration) {
        self.shared.set_consuming(true);
        tracing::info!(topic = %self.topic, "consuming");
        let mut last_housekeeping = Instant::now() - HOUSEKEEPING;
        let mut received = false;
        let mut finish = None;
        while !stop.load(Ordering::Relaxed) {
            let polled = self.consumer.poll(POLL);
            // One clock read per message: the event's time and the housekeeping check (which
            // also tells readiness that the loop polls: at most every POLL + HOUSEKEEPING).
            let now = Instant::now();
            match polled {
                None => {}
                Some(Ok(msg)) => {
                    received = true;
                    let partition = msg.partition();
                    let offset = msg.offset();
                    self.apply(msg.payload().unwrap_or(&[]), partition, offset, now);
                }
                // Broker down, unknown topic, rebalance hiccups: librdkafka retries.
                Some(Err(e)) => self.consumer.context().kafka_error(&e, "consumer poll"),
            }
            while let Ok(cmd) = self.commands.try_recv() {
                match cmd {
                    Command::Store {
                        offsets,
                        generation,
                    } => self.store_if_current(&offsets, generation),
                    Command::Finish(o) => finish = Some(o),
                }
            }
            if finish.is_some() {
                break;
            }
            if now.saturating_duration_since(last_housekeeping) >= HOUSEKEEPING {
                last_housekeeping = now;
                self.shared.polled();
                self.housekeeping(std::mem::take(&mut received));
            }
        }
        self.shared.set_consuming(false);
        self.shared.set_ready(false);
        tracing::info!("stopped consuming");
        let finish = match finish {
            Some(f) => f,
            None => self.wait_finish(finish_timeout),
        };
        match finish {
            Some(offsets) => self.store(&offsets),
            None if !self.push_gated => {
                let applied = self.shared.lock().applied.clone();
                self.store(&applied);
            }
            None => {
                tracing::warn!("final push failed: offsets since the last push stay uncommitted")
            }
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("offsets committed"),
            // Nothing stored since the last commit is not a problem.
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!("final commit failed: {e}"),
        }
        // Leaving the group revokes the partitions: the final push and commit are done.
        self.consumer
            .context()
            .closing
            .store(true, Ordering::Release);
    }

    fn wait_finish(&self, timeout: Duration) -> Option<Offsets> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.commands.recv_timeout(left) {
                Ok(Command::Store {
                    offsets,
                    generation,
                }) => self.store_if_current(&offsets, generation),
                Ok(Command::Finish(o)) => return o,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Parses and applies one message, then marks its offset as applied.
    fn apply(&self, payload: &[u8], partition: i32, offset: i64, now: Instant) {
        match event::parse(payload) {
            Ok(event) => {
                let applied = {
                    let mut state = self.shared.lock();
                    let applied = state.aggregator.apply_from_at(&event, partition, now);
                    state.mark_applied(partition, offset + 1);
                    applied
                };
                self.shared.telemetry.event_applied(applied, &event);
            }
            Err(err) => self.skip(&err, partition, offset),
        }
    }

    fn skip(&self, err: &ParseError, partition: i32, offset: i64) {
        self.shared
            .telemetry
            .invalid_event(err, &self.topic, partition, offset);
        self.shared.lock().mark_applied(partition, offset + 1);
    }

    fn store(&self, offsets: &Offsets) {
        store(&self.consumer, &self.topic, offsets);
    }

    /// Stores the offsets of a push unless a rebalance happened since its snapshot: the
    /// partitions may have moved and come back, and a stale offset would move the commit back.
    fn store_if_current(&self, offsets: &Offsets, generation: u64) {
        let current = self.consumer.context().generation.load(Ordering::Acquire);
        if generation == current {
            self.store(offsets);
        } else {
            tracing::debug!(
                generation,
                current,
                "offsets of a push that raced with a rebalance discarded"
            );
        }
    }

    fn housekeeping(&self, received: bool) {
        let context = self.consumer.context();
        if received || context.broker_up.load(Ordering::Relaxed) {
            if let Some(recovered) = context.health.healthy(Instant::now()) {
                tracing::info!(
                    errors = recovered.errors,
                    "Kafka connection restored after {}s",
                    recovered.lasted.as_secs()
                );
            }
        }
        let assigned: Vec<i32> = match self.consumer.assignment() {
            Ok(tpl) => partitions_of(&tpl, &self.topic),
            Err(e) => {
                tracing::debug!("cannot read assignment: {e}");
                return;
            }
        };
        let telemetry = &self.shared.telemetry;
        telemetry.partitions_assigned(assigned.len());
        let applied = self.shared.lock().applied.clone();
        let highs = match context.high_watermarks.lock() {
            Ok(h) => h.clone(),
            Err(_) => Vec::new(),
        };
        for (p, high) in &highs {
            if !assigned.contains(p) {
                telemetry.partition_revoked(&self.topic, *p);
                continue;
            }
            let next = applied.iter().find(|(ap, _)| ap == p).map(|(_, o)| *o);
            let next = next.or_else(|| self.position(*p));
            if let Some(next) = next {
                telemetry.partition_lag(&self.topic, *p, (high - next).max(0));
            }
        }
        if !self.push_gated {
            let own: Offsets = applied
                .into_iter()
                .filter(|(p, _)| assigned.contains(p))
                .collect();
            self.store(&own);
        }
    }

    fn position(&self, partition: i32) -> Option<i64> {
        let tpl = self.consumer.position().ok()?;
        match tpl.find_partition(&self.topic, partition)?.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    }
}
