//! Fault injection with librdkafka's MockCluster (a real Kafka-protocol broker in this test
//! process): the collector binary survives the broker going away and resumes when it returns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Collector, activation, produce, sample, wait_for};
use rdkafka::mocking::MockCluster;

#[test]
fn keeps_running_through_a_broker_outage_and_resumes_counting() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let batch: Vec<_> = (0..10)
        .map(|_| Some(activation("guest", "guest/a", r#","statusCode":0"#)))
        .collect();
    produce(&bootstrap, "events", 0, &batch);

    let args: Vec<String> = ["--brokers", &bootstrap, "--group-id", "outage"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut collector = Collector::start(&args);
    let count = |c: &Collector| {
        sample(
            &c.metrics(),
            r#"whisk_collector_events_total{type="activation"}"#,
        )
    };
    wait_for(Duration::from_secs(60), || {
        (count(&collector) == Some(10.0)).then_some(())
    })
    .unwrap_or_else(|| panic!("first batch not counted:\n{}", collector.log()));

    cluster.broker_down(1).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        collector.child.try_wait().unwrap().is_none(),
        "exited during the outage:\n{}",
        collector.log()
    );
    assert_eq!(
        whisk_testkit::http_get(&collector.url("/healthz")).unwrap(),
        "ok\n"
    );

    cluster.broker_up(1).unwrap();
    produce(&bootstrap, "events", 0, &batch);
    wait_for(Duration::from_secs(60), || {
        (count(&collector) == Some(20.0)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "not resumed after the outage:\n{}\n{}",
            collector.metrics(),
            collector.log()
        )
    });
    assert!(collector.child.try_wait().unwrap().is_none());
}
