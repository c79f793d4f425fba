//! The demo's embedded Kafka-protocol broker.
//!
//! librdkafka (which the collector and the emulator already link) contains a mock cluster: real
//! Kafka-protocol brokers on loopback TCP with topics, produce/fetch, consumer groups and offset
//! commits. [`EmbeddedBroker::start`] runs one in this process and creates the topic with the
//! partitions asked for (the mock has no CreateTopics API; unknown topics are auto-created with
//! four partitions). Clients connect to [`EmbeddedBroker::bootstrap`] exactly as to a real broker.
//!
//! It is a broker for one machine's demo, not for production: it keeps everything in memory and
//! keeps at most [`PARTITION_MAX_BYTES`] or [`PARTITION_MAX_MESSAGE_SETS`] per partition,
//! dropping the oldest message sets silently. [`EmbeddedBroker::check`] makes that loud: it
//! compares each partition's oldest kept offset with the watched consumer group's committed
//! offset and reports the messages dropped before the group read them.
//!
//! The binary `whisk-embedded-broker` (`--help`) runs it until SIGINT/SIGTERM.
// Product code: no function over 100 lines (clippy.toml); tests and benches are exempt.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// librdkafka's mock keeps at most this many bytes of message sets per partition
/// (`rd_kafka_mock_partition_init`: 5 MiB) and drops the oldest beyond it.
pub const PARTITION_MAX_BYTES: u64 = 5 * 1024 * 1024;
/// librdkafka's mock keeps at most this many message sets (produce batches) per partition.
pub const PARTITION_MAX_MESSAGE_SETS: u64 = 100_000;

/// How long one metadata, watermark or offset request to the mock may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong starting or checking the embedded broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// librdkafka refused to create the mock cluster.
    #[error("cannot start librdkafka's mock cluster: {0}")]
    Start(rdkafka::error::KafkaError),
    /// The topic could not be created in the mock.
    #[error(
        "cannot create topic {topic:?} with {partitions} partitions in the mock cluster: {source}"
    )]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The partitions asked for.
        partitions: i32,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
    /// The checking client could not be created or a request to the mock failed.
    #[error("checking the mock cluster at {bootstrap}: {source}")]
    Check {
        /// The mock's bootstrap address.
        bootstrap: String,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
}

/// One partition as [`EmbeddedBroker::check`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// The partition.
    pub partition: i32,
    /// The oldest offset the mock still keeps.
    pub low: i64,
    /// The next offset to be written (the number of messages ever appended).
    pub high: i64,
    /// The watched group's committed offset, if it committed one.
    pub committed: Option<i64>,
}

impl PartitionState {
    /// Messages the mock dropped before the watched group committed past them: those the group
    /// can never read. A group that has committed nothing yet reads from the start, so every
    /// dropped message counts.
    pub fn lost(&self) -> i64 {
        (self.low - self.committed.unwrap_or(0)).max(0)
    }
}

/// A running mock cluster with its topic; dropping it stops the brokers.
pub struct EmbeddedBroker {
    /// Never read: holding it keeps the brokers running, its `Drop` stops them.
    _cluster: MockCluster<'static, DefaultProducerContext>,
    bootstrap: String,
    topic: String,
    partitions: i32,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("bootstrap", &self.bootstrap)
            .field("topic", &self.topic)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl EmbeddedBroker {
    /// Starts a mock cluster of `brokers` brokers on loopback and creates `topic` with
    /// `partitions` partitions (replication factor 1).
    pub fn start(brokers: i32, topic: &str, partitions: i32) -> Result<Self, Error> {
        let cluster = MockCluster::new(brokers).map_err(Error::Start)?;
        cluster
            .create_topic(topic, partitions, 1)
            .map_err(|source| Error::CreateTopic {
                topic: topic.to_string(),
                partitions,
                source,
            })?;
        let bootstrap = cluster.bootstrap_servers();
        Ok(Self {
            _cluster: cluster,
            bootstrap,
            topic: topic.to_string(),
            partitions,
        })
    }

    /// The `bootstrap.servers` value for clients: `127.0.0.1:<port>[,…]`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The topic created at start.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// A client for watermark and committed-offset requests as consumer group `group` (it never
    /// joins the group, so it takes no partition from its members).
    pub fn checker(&self, group: &str) -> Result<BaseConsumer, Error> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("client.id", "whisk-embedded-broker-check")
            .create()
            .map_err(|source| self.check_error(source))
    }

    /// Each partition's kept offsets and the group's (of `checker`) committed offset.
    pub fn check(&self, checker: &BaseConsumer) -> Result<Vec<PartitionState>, Error> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition(&self.topic, p);
        }
        let committed = checker
            .committed_offsets(tpl, REQUEST_TIMEOUT)
            .map_err(|source| self.check_error(source))?;
        (0..self.partitions)
            .map(|partition| {
                let (low, high) = checker
                    .fetch_watermarks(&self.topic, partition, REQUEST_TIMEOUT)
                    .map_err(|source| self.check_error(source))?;
                let committed = committed
                    .find_partition(&self.topic, partition)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
                Ok(PartitionState {
                    partition,
                    low,
                    high,
                    committed,
                })
            })
            .collect()
    }

    fn check_error(&self, source: rdkafka::error::KafkaError) -> Error {
        Error::Check {
            bootstrap: self.bootstrap.clone(),
            source,
        }
    }
}
