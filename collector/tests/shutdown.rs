//! A replica stops within its grace period even when its store never answers: the final push
//! and the group's delete are bounded, in both Pushgateway and remote-write mode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::{Collector, activation, produce, sample, wait_for};
use rdkafka::mocking::MockCluster;

/// Kubernetes' default `terminationGracePeriodSeconds`, which the manifests keep.
const GRACE: Duration = Duration::from_secs(30);

/// Stops a collector whose store accepts connections and never answers (the kernel completes
/// the handshakes into the backlog; nothing reads them): it exits, successfully, before the
/// grace period ends and says why its final push was not made.
fn stops_against_a_silent_store(store_flag: &str, path: &str) {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let store = format!("http://{}{path}", silent.local_addr().unwrap());
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let batch: Vec<_> = (0..5)
        .map(|_| Some(activation("guest", "guest/a", r#","statusCode":0"#)))
        .collect();
    produce(&bootstrap, "events", 0, &batch);

    let args: Vec<String> = [
        "--brokers",
        &bootstrap,
        "--group-id",
        "silent-store",
        store_flag,
        &store,
        "--push-interval",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut collector = Collector::start(&args);
    wait_for(Duration::from_secs(60), || {
        let counted = sample(
            &collector.metrics(),
            r#"whisk_collector_events_total{type="activation"}"#,
        );
        (counted == Some(5.0)).then_some(())
    })
    .unwrap_or_else(|| panic!("events not counted:\n{}", collector.log()));

    let status = collector.terminate(GRACE).unwrap_or_else(|| {
        panic!(
            "still running {GRACE:?} after SIGTERM:\n{}",
            collector.log()
        )
    });
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        collector.log()
    );
    assert!(
        collector.log().contains("final push got no answer"),
        "the bounded final push is logged:\n{}",
        collector.log()
    );
    drop(silent);
}

#[test]
fn stops_within_the_grace_period_when_the_pushgateway_never_answers() {
    stops_against_a_silent_store("--pushgateway-url", "");
}

#[test]
fn stops_within_the_grace_period_when_the_remote_write_receiver_never_answers() {
    stops_against_a_silent_store("--remote-write-url", "/api/v1/write");
}
