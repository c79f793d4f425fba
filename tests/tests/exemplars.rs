//! Exemplars end to end on the real pipeline: the emulator runs the example actions and keeps
//! their activation records in its controller; a real collector consumes their events from
//! tansu and answers Prometheus's OpenMetrics scrape with the activation ids as exemplars; a
//! real Prometheus (exemplar storage on, the shipped scrape config) stores them on the
//! collector job's `openwhisk_exemplar_*` copy. Checked: every exemplar Prometheus returns is
//! an activation the emulator ran, in the bucket its observed value belongs to; the link the
//! Grafana provisioning builds from it, filled in, fetches that activation's record from the
//! controller with the namespace's key; an id too long for an exemplar is counted and never
//! stored; a scrape without OpenMetrics in `Accept` stays text format.
//!
//! Prerequisites as for e2e.rs (see common/mod.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::{NAMESPACE, Stack, action_exec, wait};
use serde_json::{Value, json};
use whisk_emulator::{
    ActionSpec, ActivationBody, ActivationRecord, EventMessage, EventSink, Invocation, Invoker,
    KafkaSink,
};

/// What Prometheus sends in its scrape `Accept` header (2.42).
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Status, `Content-Type` and body of a GET.
fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (
        status,
        ctype,
        resp.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// One stored exemplar: its series' labels, its `activation_id`, value and timestamp (s).
#[derive(Debug, Clone)]
struct Stored {
    series: BTreeMap<String, String>,
    id: String,
    value: f64,
    timestamp: f64,
}

/// Prometheus's `/api/v1/query_exemplars` for `query` over the last 15 minutes.
fn query_exemplars(stack: &Stack, query: &str) -> Vec<Stored> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let url = format!("{}/api/v1/query_exemplars", stack.prometheus_url());
    let mut resp = agent()
        .get(&url)
        .query("query", query)
        .query("start", (now - 900).to_string())
        .query("end", (now + 60).to_string())
        .call()
        .expect("query_exemplars");
    let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["status"], "success", "{body}");
    let mut out = Vec::new();
    for s in body["data"].as_array().into_iter().flatten() {
        let series: BTreeMap<String, String> =
            serde_json::from_value(s["seriesLabels"].clone()).unwrap();
        for e in s["exemplars"].as_array().into_iter().flatten() {
            out.push(Stored {
                series: series.clone(),
                id: e["labels"]["activation_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                value: e["value"].as_str().unwrap().parse().unwrap(),
                timestamp: e["timestamp"].as_f64().unwrap(),
            });
        }
    }
    out
}

/// The `le` bounds of a histogram's buckets as Prometheus stores them, ascending (`+Inf` last).
fn bounds(stack: &Stack, bucket: &str) -> Vec<(f64, String)> {
    let mut les: Vec<(f64, String)> = stack
        .prometheus
        .query(&format!("count by (le) ({bucket})"))
        .unwrap()
        .iter()
        .filter_map(|s| s["metric"]["le"].as_str().map(str::to_string))
        .map(|le| (le.parse::<f64>().unwrap(), le))
        .collect();
    les.sort_by(|a, b| a.0.total_cmp(&b.0));
    les
}

/// The `le` of the bucket `v` falls into: the smallest bound ≥ `v`.
fn bucket_of(bounds: &[(f64, String)], v: f64) -> String {
    bounds
        .iter()
        .find(|(b, _)| v <= *b)
        .map(|(_, le)| le.clone())
        .expect("+Inf bounds everything")
}

/// The activation link template of the Grafana provisioning, as Grafana reads it: `$$` is a
/// literal `$`, `${OPENWHISK_API_HOST}` comes from Grafana's environment.
fn provisioned_link(api_host: &str) -> String {
    let path = common::workspace_root()
        .join("dashboards/grafana/provisioning/datasources/prometheus.yaml");
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let dest = &yaml["datasources"][0]["jsonData"]["exemplarTraceIdDestinations"][0];
    assert_eq!(dest["name"].as_str(), Some("activation_id"));
    let raw = dest["url"].as_str().expect("a URL template");
    assert!(
        raw.contains("${OPENWHISK_API_HOST}"),
        "the API host is a provisioning variable: {raw}"
    );
    raw.replace("${OPENWHISK_API_HOST}", api_host)
        .replace("$$", "$")
}

fn ran(inv: &Invoker, action: &str, params: Value) -> ActivationRecord {
    match inv.invoke(action, params, Instant::now()) {
        Ok(Invocation::Completed(r)) => r,
        other => panic!("{action}: {other:?}"),
    }
}

#[test]
fn exemplars_link_each_latency_bucket_to_the_activation_record_it_came_from() {
    let stack = Stack::start(1, 1);
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let kafka =
        Arc::new(KafkaSink::new(&stack.tansu.bootstrap(), "events", &[]).expect("producer"));
    let sink = stack.controller.recording(kafka.clone());
    let specs = vec![
        ActionSpec::new("/guest/hello", action_exec("hello")),
        ActionSpec::new("/guest/orders", action_exec("orders")),
    ];
    let mut inv = Invoker::new(
        stack
            .invoker_config()
            .with_idle_timeout(Duration::from_secs(60)),
        sink,
        specs,
    )
    .expect("invoker");
    let mut records: HashMap<String, ActivationRecord> = HashMap::new();
    for i in 0..12 {
        let r = ran(&inv, "guest/hello", json!({"name": format!("n{i}")}));
        records.insert(r.activation_id.clone(), r);
        let r = ran(&inv, "guest/orders", json!({"items": i % 4 + 1}));
        records.insert(r.activation_id.clone(), r);
    }
    inv.shutdown();
    // An event whose id would take the exemplar past 128 characters.
    let long_id = "f".repeat(200);
    kafka.publish(&EventMessage::activation(
        0,
        NAMESPACE,
        ActivationBody {
            name: "guest/hello".into(),
            activation_id: long_id.clone(),
            status_code: 0,
            duration: 3,
            wait_time: 1,
            init_time: 0,
            kind: "rust:1.34".into(),
            conductor: false,
            memory: 256,
            caused_by: None,
            size: Some(10),
            user_defined_status_code: None,
        },
    ));
    kafka.flush(Duration::from_secs(10)).expect("flush");

    // Every bucket some activation fell into must come to carry an exemplar in Prometheus.
    let expected_buckets = |stored: &[Stored]| -> bool {
        let les = bounds(&stack, "openwhisk_exemplar_duration_seconds_bucket");
        if les.is_empty() {
            return false;
        }
        let want: BTreeSet<(String, String)> = records
            .values()
            .map(|r| {
                (
                    r.action.rsplit('/').next().unwrap().to_string(),
                    bucket_of(&les, r.duration_ms as f64 / 1000.0),
                )
            })
            .collect();
        let got: BTreeSet<(String, String)> = stored
            .iter()
            .map(|s| (s.series["action"].clone(), s.series["le"].clone()))
            .collect();
        want.is_subset(&got)
    };
    let duration_query = r#"openwhisk_exemplar_duration_seconds_bucket{namespace="guest"}"#;
    let mut stored = Vec::new();
    let complete = wait(Duration::from_secs(60), || {
        stored = query_exemplars(&stack, duration_query);
        expected_buckets(&stored)
    });
    assert!(
        complete,
        "exemplars for every bucket used did not reach Prometheus; got {stored:#?}\nlogs:\n{}",
        stack.collector_logs()
    );

    let les = bounds(&stack, "openwhisk_exemplar_duration_seconds_bucket");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let link = provisioned_link(&stack.controller.url());
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(&stack.guest_key)
    );
    let mut fetched = 0;
    for s in &stored {
        let r = records
            .get(&s.id)
            .unwrap_or_else(|| panic!("exemplar {s:?} is no activation the emulator ran"));
        assert_eq!(s.series["job"], "whisk-collector");
        assert_eq!(s.series["action"], r.action.rsplit('/').next().unwrap());
        assert_eq!(s.value, r.duration_ms as f64 / 1000.0, "{s:?}");
        assert_eq!(
            s.series["le"],
            bucket_of(&les, s.value),
            "{s:?} in its bucket"
        );
        assert!(
            (started - 1.0..=now + 1.0).contains(&s.timestamp),
            "{s:?}: event timestamp within the run"
        );
        // What Grafana's data link opens for this dot.
        let url = link.replace("${__value.raw}", &s.id);
        let (status, _, body) = get(&url, &[("Authorization", &auth)]);
        assert_eq!(status, 200, "{url}: {body}");
        let rec: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(rec["activationId"], s.id.as_str());
        assert_eq!(rec["namespace"], NAMESPACE);
        assert_eq!(rec["duration"], r.duration_ms);
        assert_eq!(rec["response"]["result"], r.result);
        let wait_time = rec["annotations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == "waitTime")
            .map(|a| a["value"].clone());
        assert_eq!(wait_time, Some(json!(r.wait_ms)));
        // Without the key, no record.
        assert_eq!(get(&url, &[]).0, 401);
        fetched += 1;
    }
    assert!(fetched >= 2, "{fetched} records fetched");

    // Wait and init time carry exemplars too, each in its own bucket.
    for (family, observed) in [
        (
            "waitTime",
            (|r: &ActivationRecord| r.wait_ms) as fn(&ActivationRecord) -> u64,
        ),
        ("initTime", |r: &ActivationRecord| r.init_ms),
    ] {
        let bucket = format!("openwhisk_exemplar_{family}_seconds_bucket");
        let les = bounds(&stack, &bucket);
        let stored = query_exemplars(&stack, &format!(r#"{bucket}{{namespace="guest"}}"#));
        assert!(!stored.is_empty(), "{family}: no exemplar stored");
        for s in &stored {
            let r = &records[&s.id];
            assert_eq!(s.value, observed(r) as f64 / 1000.0, "{family} {s:?}");
            assert_eq!(s.series["le"], bucket_of(&les, s.value), "{family} {s:?}");
        }
    }

    // The long id: counted, the activation still counted, no exemplar anywhere.
    let collector = format!("http://127.0.0.1:{}/metrics", stack.collector_ports[0]);
    let (_, _, om) = get(&collector, &[("Accept", PROMETHEUS_ACCEPT)]);
    assert!(
        om.lines()
            .any(|l| l == "whisk_collector_exemplar_ids_too_long_total 1"),
        "{om}"
    );
    assert!(!om.contains(&long_id[..120]));
    for family in ["duration", "waitTime", "initTime"] {
        let q = format!("openwhisk_exemplar_{family}_seconds_bucket");
        assert!(
            query_exemplars(&stack, &q)
                .iter()
                .all(|s| s.id.len() <= 115 && records.contains_key(&s.id)),
            "{family}"
        );
    }
    // The platform group reaches Prometheus through the Pushgateway: one push and one scrape
    // after the collector applied the event.
    let activations = || {
        stack
            .prometheus
            .query_sum(r#"sum(openwhisk_action_activations_total{job="openwhisk_platform", action="hello"})"#)
            .unwrap_or(0.0)
    };
    wait(Duration::from_secs(60), || activations() >= 13.0);
    assert_eq!(
        activations(),
        13.0,
        "the long-id activation is counted like any other"
    );

    // Two expositions of the same numbers: OpenMetrics with exemplars, text without.
    let (status, ctype, text) = get(&collector, &[]);
    assert_eq!(status, 200);
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!text.contains("# EOF") && !text.contains(" # {"));
    let (_, ctype, om) = get(&collector, &[("Accept", PROMETHEUS_ACCEPT)]);
    assert_eq!(
        ctype,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.ends_with("# EOF\n"));
    let platform = |body: &str| -> Vec<String> {
        body.lines()
            .filter(|l| l.starts_with("openwhisk_"))
            .map(|l| l.split(" # {").next().unwrap().to_string())
            .collect()
    };
    assert_eq!(platform(&om), platform(&text), "same series, same values");
    assert!(om.contains(" # {activation_id=\""));
}
