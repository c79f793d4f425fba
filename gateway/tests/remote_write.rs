//! The remote-write backend on real receivers: Debian's Prometheus 2.42
//! (`--web.enable-remote-write-receiver`) and VictoriaMetrics 1.79, through the real
//! `whisk-gateway` binary; faults from testkit's `WriteProxy`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod corpus;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Gateway, PGW_FLAGS, group, send};
use whisk_testkit::{Prometheus, Pushgateway, QueryApi, VictoriaMetrics, WriteProxy, wait_until};

const JOB: &str = "openwhisk_actions";

/// An SDK-like body: counters, a gauge, a histogram (buckets written as the SDK writes them,
/// one with `le="1.0"`), a summary, a label with an empty value.
fn sdk_body(activations: u64) -> String {
    format!(
        "# HELP whisk_activations_total Activations served by this container, by outcome\n\
         # TYPE whisk_activations_total counter\n\
         whisk_activations_total{{status=\"success\"}} {activations}\n\
         whisk_activations_total{{status=\"application_error\"}} 0\n\
         # TYPE whisk_container_memory_bytes gauge\n\
         whisk_container_memory_bytes 1.2e+07\n\
         # TYPE whisk_activation_duration_seconds histogram\n\
         whisk_activation_duration_seconds_bucket{{le=\"0.005\"}} 1\n\
         whisk_activation_duration_seconds_bucket{{le=\"1.0\"}} {activations}\n\
         whisk_activation_duration_seconds_sum 0.5\n\
         whisk_activation_duration_seconds_count {activations}\n\
         # TYPE orders_seconds summary\n\
         orders_seconds{{quantile=\"0.50\",shop=\"\"}} 0.25\n\
         orders_seconds_sum{{shop=\"\"}} 1\n\
         orders_seconds_count{{shop=\"\"}} 4\n"
    )
}

/// `f()` once it equals `expected`, polling for at most `db`'s visibility delay (once, for
/// Prometheus): what a query sees right after the acknowledged write.
fn seen<T: PartialEq + std::fmt::Debug>(db: &dyn QueryApi, f: impl Fn() -> T, expected: T) {
    let deadline = Instant::now() + db.visibility_delay();
    loop {
        let got = f();
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected {expected:?}, got {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rw_gateway(url: &str, extra: &[&str]) -> Gateway {
    let mut args: Vec<String> = ["--auth", "none", "--remote-write-url", url]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
    args.extend(extra.iter().map(|s| (*s).to_string()));
    Gateway::start(&args)
}

fn path(instance: &str, namespace: &str) -> String {
    group(JOB, instance, namespace, "hello")
}

fn put(gw: &Gateway, instance: &str, body: &str) -> (u16, String) {
    send("PUT", &gw.url(), &path(instance, "guest"), None, body)
}

/// The stored series of a query as `labels → value` (labels without `__name__` order issues:
/// a sorted map), push times and `push_failure_time_seconds` left out.
fn stored(db: &dyn QueryApi, selector: &str) -> BTreeMap<String, String> {
    db.query(selector)
        .unwrap()
        .into_iter()
        .filter(|s| s["metric"]["__name__"] != "push_failure_time_seconds")
        .map(|s| {
            let labels: BTreeMap<String, String> =
                serde_json::from_value(s["metric"].clone()).unwrap();
            let value = if labels["__name__"] == "push_time_seconds" {
                "(time)".to_string()
            } else {
                let v: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
                format!("{v}")
            };
            (format!("{labels:?}"), value)
        })
        .collect()
}

#[test]
fn the_same_bodies_store_the_same_series_as_a_scraped_pushgateway() {
    let pgw = Pushgateway::start(&PGW_FLAGS).unwrap();
    let scraper = Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: pushgateway\n    honor_labels: true\n    static_configs:\n      - targets: ['{}']\n",
        pgw.url().trim_start_matches("http://")
    ))
    .unwrap();
    let prom = Prometheus::start_receiver(&[]).unwrap();
    let vm = VictoriaMetrics::start().unwrap();
    let via_pgw = Gateway::start(&[
        "--auth".into(),
        "none".into(),
        "--pushgateway-url".into(),
        pgw.url(),
    ]);
    let via_prom = rw_gateway(&prom.write_url(), &[]);
    let via_vm = rw_gateway(&vm.write_url(), &[]);
    for gw in [&via_pgw, &via_prom, &via_vm] {
        for (instance, n) in [("c1", 3), ("c2", 7)] {
            let (status, text) = put(gw, instance, &sdk_body(n));
            // The Pushgateway answers a PUT 202, the remote-write backend 200.
            assert!(status == 200 || status == 202, "{status} {text}");
        }
    }
    let selector = format!("{{job=\"{JOB}\"}}");
    let expected_series = 2 * (2 + 1 + 5 + 3 + 1);
    assert!(
        wait_until(Duration::from_secs(30), || stored(&scraper, &selector)
            .len()
            == expected_series),
        "the scrape never stored {expected_series} series: {:?}",
        stored(&scraper, &selector)
    );
    let scraped = stored(&scraper, &selector);
    assert!(
        scraped.keys().any(|k| k.contains("le\": \"1\"")),
        "{scraped:?}"
    );
    assert_eq!(stored(&prom, &selector), scraped, "Prometheus receiver");
    seen(&vm, || stored(&vm, &selector), scraped);
}

fn faults_lose_and_double_nothing(db: &dyn QueryApi) {
    let proxy = WriteProxy::failing_first(&db.write_url(), 2, 503).unwrap();
    let gw = rw_gateway(&proxy.url(), &["--remote-write-retry-bound", "2s"]);
    for n in 1..=5 {
        let (status, text) = put(&gw, "f1", &sdk_body(n));
        assert_eq!(status, 200, "push {n}: {text}");
    }
    let count = "count_over_time(whisk_activations_total{instance=\"f1\",status=\"success\"}[1h])";
    seen(db, || db.query_sum(count).unwrap(), 5.0);
    seen(
        db,
        || {
            db.query_sum("whisk_activations_total{instance=\"f1\",status=\"success\"}")
                .unwrap()
        },
        5.0,
    );
    let statuses: Vec<u16> = proxy.recorded().iter().map(|r| r.status).collect();
    assert_eq!(statuses[..2], [503, 503]);
    assert_eq!(statuses.len(), 7, "{statuses:?}");

    // Failing beyond the bound: 503 to the SDK, within the bound, nothing stored.
    proxy.fail_next(1000);
    let started = Instant::now();
    let (status, text) = put(&gw, "f1", &sdk_body(6));
    assert_eq!(status, 503, "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(text.contains("did not acknowledge"), "{text}");
    std::thread::sleep(db.visibility_delay());
    assert_eq!(db.query_sum(count).unwrap(), 5.0);
    assert!(gw.own_value("whisk_gateway_remote_writes_total{result=\"unavailable\"}") >= 1.0);
}

#[test]
fn a_receiver_failing_the_first_writes_loses_and_doubles_nothing_on_prometheus() {
    faults_lose_and_double_nothing(&Prometheus::start_receiver(&[]).unwrap());
}

#[test]
fn a_receiver_failing_the_first_writes_loses_and_doubles_nothing_on_victoriametrics() {
    faults_lose_and_double_nothing(&VictoriaMetrics::start().unwrap());
}

#[test]
fn a_4xx_is_not_retried_and_reaches_the_sdk_as_400_with_the_receivers_line() {
    let recorder = WriteProxy::recording().unwrap();
    let proxy = WriteProxy::failing_first(&recorder.url(), 1, 422).unwrap();
    let gw = rw_gateway(&proxy.url(), &["--remote-write-retry-bound", "2s"]);
    let (status, text) = put(&gw, "r1", &sdk_body(1));
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("422") && text.contains("injected failure"),
        "{text}"
    );
    assert_eq!(proxy.recorded().len(), 1);
    assert!(recorder.recorded().is_empty());
    let (status, _) = put(&gw, "r1", &sdk_body(2));
    assert_eq!(status, 200);
    assert_eq!(recorder.recorded().len(), 1);
}

/// Writes a sample of group `instance` ten minutes ahead straight into `prom`: the gateway's
/// next write of that group is out of order there.
fn write_ahead(prom: &Prometheus, instance: &str) {
    let future = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
        + 10 * 60 * 1000;
    let ahead = whisk_remote_write::WriteRequest {
        timeseries: vec![whisk_remote_write::TimeSeries {
            labels: [
                ("__name__", "push_time_seconds"),
                ("action", "hello"),
                ("instance", instance),
                ("job", JOB),
                ("namespace", "guest"),
            ]
            .iter()
            .map(|(n, v)| whisk_remote_write::Label::new(*n, *v))
            .collect(),
            samples: vec![whisk_remote_write::Sample {
                value: 1.0,
                timestamp: future,
            }],
            exemplars: vec![],
        }],
    };
    let mut headers: Vec<(&str, &str)> = whisk_remote_write::HEADERS.to_vec();
    headers.push(("User-Agent", "test"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.post(&prom.write_url());
    for (n, v) in headers {
        req = req.header(n, v);
    }
    let resp = req.send(&whisk_remote_write::encode(&ahead)[..]).unwrap();
    assert_eq!(resp.status().as_u16(), 204);
}

/// Prometheus refuses a whole request for one out-of-order sample: a container whose series
/// already has a later sample is refused (400, Prometheus's reason), the others are stored.
#[test]
fn a_400_for_one_containers_push_leaves_the_others_stored() {
    let prom = Prometheus::start_receiver(&[]).unwrap();
    write_ahead(&prom, "bad");

    let gw = rw_gateway(&prom.write_url(), &[]);
    let (status, text) = put(&gw, "bad", &sdk_body(1));
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("out of order"), "{text}");
    let (status, text) = put(&gw, "good", &sdk_body(1));
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        prom.query_sum("whisk_activations_total{instance=\"good\",status=\"success\"}")
            .unwrap(),
        1.0
    );
    assert!(
        prom.query("whisk_activations_total{instance=\"bad\"}")
            .unwrap()
            .is_empty()
    );
}

/// Pushes of many containers at once leave in shared requests (fewer requests than writes),
/// and the one push among them that Prometheus refuses fails alone: its request is split and
/// every other push of it is stored.
#[test]
fn batched_pushes_fail_only_the_refused_one() {
    let prom = Prometheus::start_receiver(&[]).unwrap();
    write_ahead(&prom, "bad");
    // A bound for a loaded test machine: this is about what is batched, not how fast.
    let gw = rw_gateway(&prom.write_url(), &["--remote-write-retry-bound", "5s"]);
    let url = gw.url();
    for round in 1..=5u64 {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(33));
        let threads: Vec<_> = (0..33)
            .map(|i| {
                let (barrier, url) = (std::sync::Arc::clone(&barrier), url.clone());
                std::thread::spawn(move || {
                    let instance = if i == 0 {
                        "bad".to_string()
                    } else {
                        format!("c{i}")
                    };
                    barrier.wait();
                    let (status, text) = send(
                        "PUT",
                        &url,
                        &path(&instance, "guest"),
                        None,
                        &sdk_body(round),
                    );
                    (i, status, text)
                })
            })
            .collect();
        for t in threads {
            let (i, status, text) = t.join().unwrap();
            let want = if i == 0 { 400 } else { 200 };
            assert_eq!(status, want, "round {round}, container {i}: {text}");
        }
        assert_eq!(
            prom.query_sum("whisk_activations_total{status=\"success\"}")
                .unwrap(),
            32.0 * round as f64,
            "round {round}"
        );
    }
    let metrics = whisk_testkit::http_get(&format!("{url}/metrics")).unwrap();
    let counter = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    let requests = counter("whisk_gateway_remote_write_requests_total ");
    let acknowledged = counter("whisk_gateway_remote_writes_total{result=\"acknowledged\"} ");
    assert_eq!(acknowledged, 5.0 * 32.0);
    assert!(
        requests < acknowledged,
        "{requests} requests for {acknowledged} acknowledged writes: nothing was batched"
    );
    assert!(
        prom.query("whisk_activations_total{instance=\"bad\"}")
            .unwrap()
            .is_empty()
    );
}

/// Two gateway replicas (as deployed), two containers pinned to one replica each (the
/// overlay's `sessionAffinity: ClientIP`) and a third alternating between them (what affinity
/// prevents; on one clock it holds as well), pushing concurrently: every push acknowledged,
/// none refused as out of order, every sample stored once.
#[test]
fn two_replicas_and_concurrent_containers_get_no_out_of_order_refusal() {
    let prom = Prometheus::start_receiver(&[]).unwrap();
    let replicas = [
        rw_gateway(&prom.write_url(), &[]),
        rw_gateway(&prom.write_url(), &[]),
    ];
    let urls: Vec<String> = replicas.iter().map(Gateway::url).collect();
    let run_for = Duration::from_secs(20);
    let pushes: Vec<(String, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = [("pinned-a", 0usize), ("pinned-b", 1), ("alternating", 2)]
            .into_iter()
            .map(|(instance, replica)| {
                let urls = &urls;
                s.spawn(move || {
                    let started = Instant::now();
                    let mut n = 0u64;
                    while started.elapsed() < run_for {
                        n += 1;
                        let url = &urls[if replica == 2 {
                            (n % 2) as usize
                        } else {
                            replica
                        }];
                        let (status, text) =
                            send("PUT", url, &path(instance, "guest"), None, &sdk_body(n));
                        assert_eq!(status, 200, "{instance} push {n}: {text}");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    (instance.to_string(), n)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (instance, n) in pushes {
        let q = format!(
            "count_over_time(whisk_activations_total{{instance=\"{instance}\",status=\"success\"}}[1h])"
        );
        assert_eq!(prom.query_sum(&q).unwrap(), n as f64, "{instance}");
        assert!(n > 50, "{instance} pushed only {n} times");
    }
    for gw in &replicas {
        assert_eq!(
            gw.own_value("whisk_gateway_remote_writes_total{result=\"refused\"}"),
            0.0
        );
    }
}

fn delete_ends_the_series_at_once(db: &dyn QueryApi) {
    let gw = rw_gateway(&db.write_url(), &[]);
    let (status, _) = put(&gw, "d1", &sdk_body(2));
    assert_eq!(status, 200);
    let (status, _) = put(&gw, "d2", &sdk_body(3));
    assert_eq!(status, 200);
    let of = |instance: &str| format!("{{instance=\"{instance}\",job=\"{JOB}\"}}");
    seen(db, || db.query(&of("d1")).unwrap().len(), 12);
    let (status, text) = send("DELETE", &gw.url(), &path("d1", "guest"), None, "");
    assert_eq!(status, 202, "{text}");
    seen(db, || db.query(&of("d1")).unwrap().len(), 0);
    seen(db, || db.query(&of("d2")).unwrap().len(), 12);
    // A DELETE of a group this replica never wrote: 202, counted.
    let (status, _) = send("DELETE", &gw.url(), &path("never", "guest"), None, "");
    assert_eq!(status, 202);
    assert_eq!(
        gw.own_value("whisk_gateway_remote_write_unknown_deletes_total"),
        1.0
    );
}

#[test]
fn delete_writes_stale_markers_so_the_container_leaves_instant_queries_on_prometheus() {
    delete_ends_the_series_at_once(&Prometheus::start_receiver(&[]).unwrap());
}

#[test]
fn delete_writes_stale_markers_so_the_container_leaves_instant_queries_on_victoriametrics() {
    delete_ends_the_series_at_once(&VictoriaMetrics::start().unwrap());
}

#[test]
fn a_series_a_later_push_drops_gets_a_stale_marker() {
    let prom = Prometheus::start_receiver(&[]).unwrap();
    let gw = rw_gateway(&prom.write_url(), &[]);
    assert_eq!(put(&gw, "s1", "gone_total 1\nkept_total 1\n").0, 200);
    assert_eq!(prom.query("gone_total{instance=\"s1\"}").unwrap().len(), 1);
    assert_eq!(put(&gw, "s1", "kept_total 2\n").0, 200);
    assert!(
        prom.query("gone_total{instance=\"s1\"}")
            .unwrap()
            .is_empty()
    );
    assert_eq!(prom.query_sum("kept_total{instance=\"s1\"}").unwrap(), 2.0);
}

#[test]
fn the_tenant_header_carries_each_pushs_namespace_and_static_headers_go_along() {
    let recorder = WriteProxy::recording().unwrap();
    let gw = rw_gateway(
        &recorder.url(),
        &[
            "--remote-write-tenant-header",
            "X-Scope-OrgID",
            "--remote-write-header",
            "Authorization=Bearer s3cret",
        ],
    );
    for ns in ["alpha", "beta"] {
        let (status, _) = send("PUT", &gw.url(), &path("t1", ns), None, &sdk_body(1));
        assert_eq!(status, 200);
    }
    let got = recorder.recorded();
    assert_eq!(got.len(), 2);
    for (write, ns) in got.iter().zip(["alpha", "beta"]) {
        assert_eq!(write.header("x-scope-orgid"), Some(ns));
        assert_eq!(write.header("authorization"), Some("Bearer s3cret"));
        assert_eq!(write.header("content-encoding"), Some("snappy"));
        assert_eq!(write.header("content-type"), Some("application/x-protobuf"));
        assert_eq!(
            write.header("x-prometheus-remote-write-version"),
            Some("0.1.0")
        );
        assert!(
            write
                .header("user-agent")
                .unwrap()
                .starts_with("whisk-gateway/")
        );
        let request = write.request.as_ref().expect("a remote-write body");
        for series in &request.timeseries {
            let names: Vec<&str> = series.labels.iter().map(|l| l.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted);
            assert!(series.labels.iter().all(|l| !l.value.is_empty()));
            assert!(
                series
                    .labels
                    .iter()
                    .any(|l| l.name == "namespace" && l.value == ns)
            );
        }
    }
}

#[test]
fn bad_input_is_refused_exactly_as_in_pushgateway_mode() {
    let pgw = Pushgateway::start(&PGW_FLAGS).unwrap();
    let recorder = WriteProxy::recording().unwrap();
    let via_pgw = Gateway::start(&[
        "--auth".into(),
        "none".into(),
        "--pushgateway-url".into(),
        pgw.url(),
        "--max-series-per-group".into(),
        "50".into(),
    ]);
    let via_rw = rw_gateway(&recorder.url(), &["--max-series-per-group", "50"]);
    let mut rng = corpus::Rng(0x5eed_cafe);
    let mut bodies: Vec<String> = corpus::BODIES.iter().map(|b| (*b).to_string()).collect();
    for i in 0..120 {
        let base = corpus::BODIES[i % corpus::BODIES.len()];
        bodies.push(if i % 2 == 0 {
            corpus::mutated(base, &mut rng)
        } else {
            corpus::generated(&mut rng)
        });
    }
    bodies.push("# TYPE push_time_seconds gauge\npush_time_seconds 1\n".into());
    bodies.push("x{instance=\"forged\"} 1\n".into());
    let (mut refused, mut accepted) = (0, 0);
    for (i, body) in bodies.iter().enumerate() {
        let instance = format!("v{i}");
        let expected = whisk_gateway::validate(body.as_bytes(), 50);
        let (rw_status, rw_text) = put(&via_rw, &instance, body);
        if expected.is_err() {
            let (pgw_status, pgw_text) = put(&via_pgw, &instance, body);
            assert_eq!((rw_status, &rw_text), (pgw_status, &pgw_text), "{body:?}");
            assert_eq!(rw_status, 400, "{body:?}");
            refused += 1;
        } else {
            assert_eq!(rw_status, 200, "{body:?}: {rw_text}");
            accepted += 1;
        }
    }
    assert!(
        refused > 20 && accepted > 5,
        "refused {refused}, accepted {accepted}"
    );
}
