//! The embedded broker as its clients see it: over TCP, with the topic's partitions, consumer
//! group commits, and the mock's silent retention limit made visible.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use whisk_embedded_broker::{EmbeddedBroker, PARTITION_MAX_BYTES};

const TIMEOUT: Duration = Duration::from_secs(10);

fn producer(broker: &EmbeddedBroker) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("message.max.bytes", "2000000")
        .create()
        .expect("producer")
}

fn produce(broker: &EmbeddedBroker, partition: i32, payloads: &[Vec<u8>]) {
    let p = producer(broker);
    for payload in payloads {
        p.send(
            BaseRecord::<(), [u8]>::to(broker.topic())
                .partition(partition)
                .payload(payload),
        )
        .map_err(|(e, _)| e)
        .expect("queued");
    }
    p.flush(TIMEOUT).expect("every message delivered");
}

#[test]
fn topic_has_the_asked_partitions_and_a_group_reads_and_commits_over_tcp() {
    let broker = EmbeddedBroker::start(1, "events", 3).expect("mock cluster");
    assert!(
        broker.bootstrap().starts_with("127.0.0.1:"),
        "loopback TCP: {}",
        broker.bootstrap()
    );
    for p in 0..3 {
        produce(&broker, p, &[format!("m{p}").into_bytes()]);
    }

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "readers")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some("events"), TIMEOUT)
        .expect("metadata");
    assert_eq!(metadata.topics()[0].partitions().len(), 3);
    consumer.subscribe(&["events"]).expect("subscribe");
    let mut read = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while read.len() < 3 && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            read.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    read.sort();
    assert_eq!(read, ["m0", "m1", "m2"]);
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");

    let states = broker
        .check(&broker.checker("readers").expect("checker"))
        .expect("check");
    assert_eq!(states.len(), 3);
    for s in &states {
        assert_eq!((s.low, s.high, s.committed), (0, 1, Some(1)), "{s:?}");
        assert_eq!(s.lost(), 0);
    }
}

#[test]
fn messages_dropped_beyond_the_partition_limit_before_the_group_read_them_are_reported_lost() {
    let broker = EmbeddedBroker::start(1, "events", 1).expect("mock cluster");
    // Seven ~0.9 MB message sets: more than the mock keeps per partition.
    let big = vec![b'x'; 900_000];
    let payloads = vec![big; 7];
    let produced: u64 = payloads.iter().map(|p| p.len() as u64).sum();
    assert!(produced > PARTITION_MAX_BYTES);
    produce(&broker, 0, &payloads);

    let states = broker
        .check(&broker.checker("late-readers").expect("checker"))
        .expect("check");
    let s = &states[0];
    assert_eq!(s.high, 7);
    assert!(s.low > 0, "the mock kept everything: {s:?}");
    assert_eq!(s.committed, None);
    assert_eq!(
        s.lost(),
        s.low,
        "nothing read yet, every dropped message is lost"
    );
}
