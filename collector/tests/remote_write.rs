//! `--remote-write-url` end to end: librdkafka's MockCluster (a Kafka-protocol broker in this
//! process; what is tested here is the sink, the real broker path is tested on tansu
//! elsewhere), the collector binary and a real receiver (Prometheus 2.42 as a remote-write
//! receiver, VictoriaMetrics 1.79), faults from testkit's `WriteProxy`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Collector, activation, produce, wait_for};
use rdkafka::mocking::MockCluster;
use whisk_testkit::{Prometheus, QueryApi, VictoriaMetrics, WriteProxy};

fn args(bootstrap: &str, url: &str, group: &str) -> Vec<String> {
    [
        "--brokers",
        bootstrap,
        "--group-id",
        group,
        "--remote-write-url",
        url,
        "--remote-write-header",
        "X-Scope-OrgID=platform",
        "--push-interval",
        "500ms",
        "--instance",
        "replica-1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Activations produced, the platform snapshot written through a proxy that fails the first
/// writes: every activation counted exactly once in the receiver, the group's
/// `push_time_seconds` there, the tenant header sent, and `/metrics` without platform series.
fn platform_snapshot_reaches(db: &dyn QueryApi, group: &str) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let events: Vec<Option<Vec<u8>>> = (0..7)
        .map(|i| {
            Some(activation(
                "guest",
                "guest/hello",
                &format!(
                    r#","statusCode":0,"duration":{},"waitTime":1,"initTime":0"#,
                    10 + i
                ),
            ))
        })
        .collect();
    produce(&bootstrap, "events", 0, &events);
    let proxy = WriteProxy::failing_first(&db.write_url(), 3, 503).unwrap();
    let collector = Collector::start(&args(&bootstrap, &proxy.url(), group));
    let q = "sum(openwhisk_action_activations_total{job=\"openwhisk_platform\",instance=\"replica-1\"})";
    let seen = wait_for(Duration::from_secs(60), || {
        let v = db.query_sum(q).ok()?;
        (v == 7.0).then_some(v)
    });
    assert_eq!(seen, Some(7.0), "log:\n{}", collector.log());
    assert_eq!(
        db.query("push_time_seconds{job=\"openwhisk_platform\",instance=\"replica-1\"}")
            .unwrap()
            .len(),
        1
    );
    let writes = proxy.recorded();
    assert!(writes.iter().take(3).all(|w| w.status == 503));
    assert!(
        writes
            .iter()
            .all(|w| w.header("x-scope-orgid") == Some("platform"))
    );
    let own = collector.metrics();
    assert!(own.contains("whisk_collector_"), "{own}");
    assert!(!own.lines().any(|l| l.starts_with("openwhisk_")), "{own}");
    assert!(!collector.log().contains("janitor"), "{}", collector.log());
}

#[test]
fn the_platform_snapshot_is_written_to_prometheus_through_failures_exactly_once() {
    platform_snapshot_reaches(&Prometheus::start_receiver(&[]).unwrap(), "rw-prom");
}

#[test]
fn the_platform_snapshot_is_written_to_victoriametrics_through_failures_exactly_once() {
    platform_snapshot_reaches(&VictoriaMetrics::start().unwrap(), "rw-vm");
}

#[test]
fn pushgateway_and_remote_write_urls_are_alternatives() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_whisk-collector"))
        .args([
            "--pushgateway-url",
            "http://pgw:9091",
            "--remote-write-url",
            "http://prom:9090/api/v1/write",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--remote-write-url") && err.contains("--pushgateway-url"),
        "{err}"
    );
}
