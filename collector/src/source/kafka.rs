//! The Kafka consumer: a consumer-group member on `<prefix>events`, run on its own thread.
//!
//! At-least-once: `enable.auto.commit=true` with `enable.auto.offset.store=false`, so only
//! offsets we store are committed. Without a Pushgateway the offsets of applied events are
//! stored every [`HOUSEKEEPING`]; with one, only the offsets of a snapshot that was pushed
//! successfully are stored ([`Command::Store`]). Transient broker errors are logged and polling
//! goes on: librdkafka reconnects by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::event::{self, ParseError};
use crate::shared::{Offsets, Shared};

/// How often assignment, lag and (without a Pushgateway) offsets are refreshed.
pub(crate) const HOUSEKEEPING: Duration = Duration::from_millis(500);

const POLL: Duration = Duration::from_millis(100);

/// Messages to the consumer thread.
#[derive(Debug)]
pub(crate) enum Command {
    /// Store these offsets (they are covered by a successful push).
    Store(Offsets),
    /// Shutting down: store these offsets if any (else, without a Pushgateway, the applied
    /// ones), commit synchronously and leave the group.
    Finish(Option<Offsets>),
}

/// Receives librdkafka's statistics (every second) to learn each partition's high watermark.
struct StatsContext {
    topic: String,
    high_watermarks: std::sync::Mutex<Vec<(i32, i64)>>,
}

impl ClientContext for StatsContext {
    fn stats(&self, statistics: Statistics) {
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
}

impl ConsumerContext for StatsContext {}

/// The consumer and what it feeds.
pub(crate) struct KafkaSource {
    consumer: BaseConsumer<StatsContext>,
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
    /// Creates the consumer and subscribes to the topic (no network round trip yet).
    pub(crate) fn new(
        config: &Config,
        shared: Arc<Shared>,
        commands: Receiver<Command>,
        push_gated: bool,
    ) -> Result<Self> {
        let topic = config.topic();
        let context = StatsContext {
            topic: topic.clone(),
            high_watermarks: std::sync::Mutex::new(Vec::new()),
        };
        let consumer: BaseConsumer<StatsContext> = client_config(config)
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

    /// Consumes until `stop` is set, then finishes as told by [`Command::Finish`] (or after
    /// `finish_timeout` without one).
    pub(crate) fn run(self, stop: &AtomicBool, finish_timeout: Duration) {
        self.shared.set_consuming(true);
        tracing::info!(topic = %self.topic, "consuming");
        let mut last_housekeeping = Instant::now() - HOUSEKEEPING;
        let mut error_log = Instant::now() - Duration::from_secs(60);
        let mut finish = None;
        while !stop.load(Ordering::Relaxed) {
            match self.consumer.poll(POLL) {
                None => {}
                Some(Ok(msg)) => {
                    let partition = msg.partition();
                    let offset = msg.offset();
                    self.apply(msg.payload().unwrap_or(&[]), partition, offset);
                }
                // Broker down, unknown topic, rebalance hiccups: librdkafka retries.
                Some(Err(e)) if error_log.elapsed() >= Duration::from_secs(5) => {
                    tracing::warn!("Kafka consumer error (retrying): {e}");
                    error_log = Instant::now();
                }
                Some(Err(e)) => tracing::debug!("Kafka consumer error (retrying): {e}"),
            }
            while let Ok(cmd) = self.commands.try_recv() {
                match cmd {
                    Command::Store(offsets) => self.store(&offsets),
                    Command::Finish(o) => finish = Some(o),
                }
            }
            if finish.is_some() {
                break;
            }
            if last_housekeeping.elapsed() >= HOUSEKEEPING {
                last_housekeeping = Instant::now();
                self.housekeeping();
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
    }

    fn wait_finish(&self, timeout: Duration) -> Option<Offsets> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.commands.recv_timeout(left) {
                Ok(Command::Store(o)) => self.store(&o),
                Ok(Command::Finish(o)) => return o,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Parses and applies one message, then marks its offset as applied.
    fn apply(&self, payload: &[u8], partition: i32, offset: i64) {
        match event::parse(payload) {
            Ok(event) => {
                let applied = {
                    let mut state = self.shared.lock();
                    let applied = state.aggregator.apply(&event);
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
        if offsets.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            if let Err(e) = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*o)) {
                tracing::warn!("cannot store offset {o} of partition {p}: {e}");
            }
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            // Typically a partition revoked since: its new owner re-reads from the last commit.
            tracing::debug!("storing offsets {offsets:?} failed: {e}");
        }
    }

    fn housekeeping(&self) {
        let assigned: Vec<i32> = match self.consumer.assignment() {
            Ok(tpl) => tpl
                .elements_for_topic(&self.topic)
                .iter()
                .map(|e| e.partition())
                .collect(),
            Err(e) => {
                tracing::debug!("cannot read assignment: {e}");
                return;
            }
        };
        let telemetry = &self.shared.telemetry;
        telemetry.partitions_assigned(assigned.len());
        self.shared.set_ready(!assigned.is_empty());
        let applied = self.shared.lock().applied.clone();
        let highs = match self.consumer.context().high_watermarks.lock() {
            Ok(h) => h.clone(),
            Err(_) => Vec::new(),
        };
        for p in &assigned {
            let Some(high) = highs.iter().find(|(hp, _)| hp == p).map(|(_, h)| *h) else {
                continue;
            };
            let next = applied.iter().find(|(ap, _)| ap == p).map(|(_, o)| *o);
            let next = next.or_else(|| self.position(*p));
            if let Some(next) = next {
                telemetry.partition_lag(&self.topic, *p, (high - next).max(0));
            }
        }
        for (p, _) in applied.iter().filter(|(p, _)| !assigned.contains(p)) {
            telemetry.partition_revoked(&self.topic, *p);
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
