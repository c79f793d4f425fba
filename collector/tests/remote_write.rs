//! `--remote-write-url` end to end: librdkafka's MockCluster (a Kafka-protocol broker in this
//! process; what is tested here is the sink, the real broker path is tested on tansu
//! elsewhere), the collector binary and a real receiver (Prometheus 2.42 as a remote-write
//! receiver, VictoriaMetrics 1.79), faults from testkit's `WriteProxy`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// An activation of `guest/hello` with id `id`, `duration_ms`, stamped `ts` (ms).
fn activation_with_id(id: &str, duration_ms: u64, ts: i64) -> Option<Vec<u8>> {
    Some(
        format!(
            r#"{{"body":{{"activationId":"{id}","name":"guest/hello","kind":"nodejs:20","memory":256,"statusCode":0,"duration":{duration_ms},"waitTime":1,"initTime":0,"conductor":false}},"eventType":"Activation","source":"invoker0","subject":"s","userId":"u","namespace":"guest","timestamp":{ts}}}"#
        )
        .into_bytes(),
    )
}

/// The `le` a duration (ms) belongs to, as a scrape stores it.
fn le_of(duration_ms: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let v = duration_ms as f64 / 1000.0;
    whisk_grouping::TIME_BUCKETS
        .iter()
        .find(|b| v <= **b)
        .map_or_else(|| "+Inf".to_string(), ToString::to_string)
}

/// Duration exemplars in the acknowledged writes: (le, activation id) → times sent.
fn sent_duration_exemplars(proxy: &WriteProxy) -> BTreeMap<(String, String), usize> {
    let mut sent = BTreeMap::new();
    for w in proxy.recorded().iter().filter(|w| w.status / 100 == 2) {
        for ts in w.request.iter().flat_map(|r| &r.timeseries) {
            let label = |n: &str| {
                ts.labels
                    .iter()
                    .find(|l| l.name == n)
                    .map(|l| l.value.clone())
            };
            for e in &ts.exemplars {
                assert_eq!(e.labels.len(), 1);
                assert_eq!(e.labels[0].name, "activation_id");
                if label("__name__").as_deref() == Some("openwhisk_action_duration_seconds_bucket")
                {
                    *sent
                        .entry((label("le").unwrap(), e.labels[0].value.clone()))
                        .or_default() += 1;
                }
            }
        }
    }
    sent
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Prometheus's stored duration exemplars of the platform group: (le, id, value).
fn stored_duration_exemplars(prometheus: &Prometheus) -> BTreeSet<(String, String, String)> {
    let now = now_ms() / 1000;
    let q = r#"openwhisk_action_duration_seconds_bucket{job="openwhisk_platform"}"#;
    let url = format!(
        "{}/api/v1/query_exemplars?query={}&start={}&end={}",
        prometheus.url(),
        percent_encode(q),
        now - 900,
        now + 60
    );
    let body: serde_json::Value =
        serde_json::from_str(&whisk_testkit::http_get(&url).unwrap()).unwrap();
    let mut out = BTreeSet::new();
    for s in body["data"].as_array().into_iter().flatten() {
        let le = s["seriesLabels"]["le"].as_str().unwrap().to_string();
        for e in s["exemplars"].as_array().into_iter().flatten() {
            let id = e["labels"]["activation_id"].as_str().unwrap().to_string();
            out.insert((le.clone(), id, e["value"].as_str().unwrap().to_string()));
        }
    }
    out
}

/// Activations with ids written through a proxy that fails the first write: each duration
/// bucket's latest activation rides on that `_bucket` series, once over many acknowledged
/// writes of unchanged buckets; a later activation in a bucket is sent once more. Returns the
/// (le, id) pairs sent and the proxy, once every activation is counted in `db`.
fn exemplars_written(db: &dyn QueryApi, group: &str) -> BTreeMap<(String, String), u64> {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let t0 = now_ms();
    // (id, duration ms): the 3 ms one is replaced in le="0.005" by the later 4 ms one.
    let first: Vec<(String, u64)> = [3, 40, 700, 4_000, 45_000, 4]
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("{:032x}", 0xa0 + i), *d))
        .collect();
    let events: Vec<Option<Vec<u8>>> = first
        .iter()
        .zip(0..)
        .map(|((id, d), i)| activation_with_id(id, *d, t0 + i))
        .collect();
    produce(&bootstrap, "events", 0, &events);
    let proxy = WriteProxy::failing_first(&db.write_url(), 1, 503).unwrap();
    let collector = Collector::start(&args(&bootstrap, &proxy.url(), group));
    let q = r#"sum(openwhisk_action_activations_total{job="openwhisk_platform"})"#;
    let counted = |n: f64| {
        wait_for(Duration::from_secs(60), || {
            (db.query_sum(q).ok()? == n && proxy.recorded().len() >= 6).then_some(())
        })
        .is_some()
    };
    assert!(counted(6.0), "log:\n{}", collector.log());
    let expected: BTreeMap<(String, String), usize> = first[1..]
        .iter()
        .map(|(id, d)| ((le_of(*d), id.clone()), 1))
        .collect();
    assert_eq!(expected.len(), 5);
    assert_eq!(sent_duration_exemplars(&proxy), expected);
    assert!(proxy.recorded()[0].status == 503);
    // A later activation in le="1": sent once more, on the same series.
    let later = format!("{:032x}", 0xff);
    produce(
        &bootstrap,
        "events",
        0,
        &[activation_with_id(&later, 800, now_ms())],
    );
    assert!(counted(7.0), "log:\n{}", collector.log());
    let writes = proxy.recorded().len();
    assert!(
        wait_for(Duration::from_secs(30), || (proxy.recorded().len()
            >= writes + 3)
            .then_some(()))
        .is_some()
    );
    let mut expected = expected;
    expected.insert((le_of(800), later.clone()), 1);
    assert_eq!(sent_duration_exemplars(&proxy), expected);
    assert!(
        proxy
            .recorded()
            .iter()
            .all(|w| w.status / 100 == 2 || w.status == 503)
    );
    let durations: BTreeMap<String, u64> = first
        .into_iter()
        .chain(std::iter::once((later, 800)))
        .collect();
    expected
        .into_keys()
        .map(|(le, id)| {
            let d = durations[&id];
            ((le, id), d)
        })
        .collect()
}

#[test]
fn prometheus_stores_each_activation_id_as_an_exemplar_of_its_duration_bucket() {
    let prometheus = Prometheus::start_receiver(&[]).unwrap();
    let sent = exemplars_written(&prometheus, "rw-ex-prom");
    let expected: BTreeSet<(String, String, String)> = sent
        .into_iter()
        .map(|((le, id), d)| {
            #[allow(clippy::cast_precision_loss)]
            let v = (d as f64 / 1000.0).to_string();
            (le, id, v)
        })
        .collect();
    let stored = wait_for(Duration::from_secs(30), || {
        let s = stored_duration_exemplars(&prometheus);
        (s == expected).then_some(s)
    });
    assert_eq!(
        stored,
        Some(expected.clone()),
        "stored: {:?}",
        stored_duration_exemplars(&prometheus)
    );
}

#[test]
fn victoriametrics_accepts_every_write_that_carries_exemplars() {
    // VictoriaMetrics 1.79 drops exemplars; every write must still be acknowledged and every
    // activation counted (checked inside).
    let vm = VictoriaMetrics::start().unwrap();
    assert_eq!(exemplars_written(&vm, "rw-ex-vm").len(), 6);
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
