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
    // Wait until the collector has seen the outage (counted a broker error), then check it
    // lived through it.
    let kafka_errors = |c: &Collector| -> f64 {
        c.metrics()
            .lines()
            .filter(|l| l.starts_with("whisk_collector_kafka_errors_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    wait_for(Duration::from_secs(60), || {
        (kafka_errors(&collector) > 0.0).then_some(())
    })
    .unwrap_or_else(|| panic!("the outage was never noticed:\n{}", collector.log()));
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

/// Lines of the collector's log at WARN or ERROR.
fn loud_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .collect()
}

#[test]
fn with_the_broker_unreachable_logs_state_changes_only_and_counts_every_error() {
    // Nothing listens on this port: every connection attempt fails.
    let port = whisk_testkit::free_port();
    let args: Vec<String> = [
        "--brokers",
        &format!("127.0.0.1:{port}"),
        "--group-id",
        "unreachable",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let collector = Collector::start(&args);
    let errors = |c: &Collector| -> f64 {
        c.metrics()
            .lines()
            .filter(|l| l.starts_with("whisk_collector_kafka_errors_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // Wait on the event itself: many errors counted.
    let counted = wait_for(Duration::from_secs(120), || {
        let n = errors(&collector);
        (n >= 40.0).then_some(n)
    })
    .unwrap_or_else(|| {
        panic!(
            "errors not counted: {}\n{}",
            errors(&collector),
            collector.log()
        )
    });
    let log = collector.log();
    let loud = loud_lines(&log);
    // One line when the trouble starts; librdkafka's own first failure line; at most a few
    // reminders (one a minute) in the two minutes this may take.
    assert!(
        loud.len() <= 5,
        "{} WARN/ERROR lines for {counted} errors:\n{}",
        loud.len(),
        loud.join("\n")
    );
    assert!(
        log.contains("whisk_collector_kafka_errors_total"),
        "the first line says where the rest is counted:\n{log}"
    );
    let later = wait_for(Duration::from_secs(60), || {
        let n = errors(&collector);
        (n > counted).then_some(n)
    });
    assert!(later.is_some(), "the counter keeps growing");
    assert!(
        collector
            .metrics()
            .contains(r#"whisk_collector_kafka_errors_total{kind="all_brokers_down"}"#)
    );
}
