//! End to end on real services: the example actions (with the SDK) run in the emulator's
//! containers and push through the real `whisk-gateway`, authenticated with their namespace's
//! API key (handed to them by the emulator's invoker as `__OW_API_KEY`, checked by the gateway
//! against the emulator's controller endpoint), into two Pushgateway shards; the emulator's
//! Activation events go through a real tansu broker to real whisk-collector processes, which
//! push the platform metrics to the first shard and serve every shard with their janitor; a real
//! Prometheus scrapes every shard with `honor_labels: true`, the gateway and the collectors.
//! Every number is checked exactly, summed over the shards and through PromQL.
//!
//! Prerequisites: `cargo build -p whisk-actions --release`, `cargo build -p whisk-collector
//! -p whisk-gateway` (see common/mod.rs); tansu, prometheus-pushgateway and prometheus installed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::{SHARDS, Sample, Stack, action_exec, eventually, promql_by, sum, sum_by};
use serde_json::{Value, json};
use whisk_emulator::{
    ActionSpec, Invocation, Invoker, KafkaSink, LoadPlan, LoadSpec, LoadSummary, SequenceSpec,
    run_plan,
};

const SETTLE: Duration = Duration::from_secs(30);

fn short(action: &str) -> String {
    action.rsplit('/').next().unwrap_or(action).to_string()
}

fn invoker(stack: &Stack, sink: Arc<KafkaSink>, idle: Duration, max: usize) -> Invoker {
    // OpenWhisk ≤ 1.0.0's 50 ms pause grace. With the SDK's default push (after the result), a
    // push still running at the freeze on a loaded machine resumes only at the next thaw, and is
    // lost if the container is removed while frozen: real behaviour, measured with the real
    // proxy in conformance.rs. Here the point is exact totals, so the actions push before their
    // result (WHISK_METRICS_PUSH_MODE=before-result): nothing can be lost to a freeze or a kill.
    let config = stack
        .invoker_config()
        .with_pause_grace(Duration::from_millis(50))
        .with_idle_timeout(idle)
        .with_namespace_concurrency(1000)
        .with_init_param("WHISK_METRICS_PUSH_MODE", "before-result");
    let specs = vec![
        ActionSpec::new("/guest/hello", action_exec("hello")).with_max_containers(max),
        ActionSpec::new("/guest/orders", action_exec("orders")).with_max_containers(max),
        ActionSpec::new("/guest/flaky", action_exec("flaky"))
            .with_max_containers(max)
            .with_timeout(Duration::from_secs(1)),
    ];
    Invoker::new(config, sink, specs).expect("invoker")
}

/// What the SDK should report, derived from the plan and the activation records.
#[derive(Debug, Default)]
struct Expected {
    activations: BTreeMap<String, f64>,
    cold_starts: BTreeMap<String, f64>,
    platform_status: BTreeMap<(String, String), f64>,
    sdk_activations: BTreeMap<String, f64>,
    sdk_status: BTreeMap<(String, String), f64>,
    groups: BTreeMap<String, f64>,
    /// Σ `whisk_container_memory_limit_bytes` per action: every group's container limit, read
    /// from the cgroup the emulator started it in (none where the emulator has no cgroups).
    memory_limits: BTreeMap<String, f64>,
    greetings: f64,
    orders_placed: BTreeMap<String, f64>,
    orders_items: BTreeMap<String, f64>,
    orders_value_sum: BTreeMap<String, f64>,
    flaky_calls: BTreeMap<String, f64>,
}

fn expected(waves: &[(LoadPlan, LoadSummary)], invoker: &Invoker) -> Expected {
    let mut e = Expected::default();
    let mut containers: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let names = [
        "success",
        "application_error",
        "action_developer_error",
        "whisk_internal_error",
    ];
    let records = waves
        .iter()
        .flat_map(|(plan, summary)| summary.records.iter().map(move |r| (plan, r)));
    for (plan, (i, rec)) in records {
        let a = short(&rec.action);
        let params: &Value = &plan.requests[*i].params;
        *e.activations.entry(a.clone()).or_default() += 1.0;
        *e.platform_status
            .entry((a.clone(), names[usize::from(rec.status_code)].into()))
            .or_default() += 1.0;
        let mode = params["mode"].as_str();
        if rec.status_code >= 2 && mode != Some("panic") {
            continue; // a timeout: the container was killed before the SDK could count it
        }
        containers
            .entry(a.clone())
            .or_default()
            .insert(rec.container);
        *e.sdk_activations.entry(a.clone()).or_default() += 1.0;
        let sdk_status = match (rec.status_code, params["mode"].as_str()) {
            (0, _) => "success",
            (_, Some("panic")) => "developer_error",
            _ => "application_error",
        };
        *e.sdk_status
            .entry((a.clone(), sdk_status.into()))
            .or_default() += 1.0;
        match a.as_str() {
            "hello" => e.greetings += 1.0,
            "orders" => {
                let region = params["region"].as_str().unwrap_or("eu").to_string();
                *e.orders_placed.entry(region.clone()).or_default() += 1.0;
                *e.orders_items.entry(region.clone()).or_default() +=
                    params["items"].as_f64().unwrap_or(1.0);
                *e.orders_value_sum.entry(region).or_default() +=
                    params["value"].as_f64().unwrap_or(10.0);
            }
            "flaky" => {
                *e.flaky_calls
                    .entry(params["mode"].as_str().unwrap_or("ok").to_string())
                    .or_default() += 1.0;
            }
            _ => {}
        }
    }
    e.groups = containers
        .into_iter()
        .map(|(a, c)| (a, c.len() as f64))
        .collect();
    if invoker.cgroup_dir().is_some() {
        // Every action here has the default limit.
        let limit = f64::from(ActionSpec::new("/guest/any", "any").memory_mb) * 1_048_576.0;
        e.memory_limits = e
            .groups
            .iter()
            .map(|(a, g)| (a.clone(), g * limit))
            .collect();
    }
    for s in invoker.stats() {
        e.cold_starts
            .insert(short(&s.action), s.containers_created as f64);
    }
    e
}

fn pairs(
    samples: &[Sample],
    name: &str,
    a: &str,
    b: &str,
    filter: &[(&str, &str)],
) -> BTreeMap<(String, String), f64> {
    let mut m = BTreeMap::new();
    for s in samples.iter().filter(|s| {
        s.name == name
            && filter
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    }) {
        let key = (
            s.labels.get(a).cloned().unwrap_or_default(),
            s.labels.get(b).cloned().unwrap_or_default(),
        );
        *m.entry(key).or_insert(0.0) += s.value;
    }
    m.retain(|_, v| *v != 0.0);
    m
}

fn count_groups(samples: &[Sample]) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == "whisk_container_info") {
        *m.entry(s.labels.get("action").cloned().unwrap_or_default())
            .or_insert(0.0) += 1.0;
    }
    m
}

const SDK: &[(&str, &str)] = &[("job", "openwhisk_actions"), ("namespace", "guest")];
const PLATFORM: &[(&str, &str)] = &[("job", "openwhisk_platform")];

/// Asserts every expected number on the Pushgateway (waiting for the last pushes).
fn check_pushgateway(stack: &Stack, n: f64, e: &Expected) {
    let total = eventually(SETTLE, &n, || {
        sum(
            &stack.pushgateway_samples(),
            "openwhisk_action_activations_total",
            PLATFORM,
        )
    });
    assert_eq!(
        total,
        n,
        "platform activations on the Pushgateway; collector logs:\n{}",
        stack.collector_logs()
    );
    let s = stack.pushgateway_samples();
    assert_eq!(
        sum_by(&s, "openwhisk_action_activations_total", "action", PLATFORM),
        e.activations
    );
    assert_eq!(
        sum_by(&s, "openwhisk_action_coldStarts_total", "action", PLATFORM),
        e.cold_starts,
        "cold starts = containers created"
    );
    assert_eq!(
        pairs(&s, "openwhisk_action_status", "action", "status", PLATFORM),
        e.platform_status
    );

    let sdk = eventually(SETTLE, &e.sdk_activations, || {
        sum_by(
            &stack.pushgateway_samples(),
            "whisk_activations_total",
            "action",
            SDK,
        )
    });
    assert_eq!(
        sdk, e.sdk_activations,
        "SDK activations per action (summed over containers)"
    );
    let s = stack.pushgateway_samples();
    assert_eq!(
        pairs(&s, "whisk_activations_total", "action", "status", SDK),
        e.sdk_status
    );
    assert_eq!(
        count_groups(&s),
        e.groups,
        "one SDK group per container that served an activation"
    );
    assert_eq!(
        sum_by(&s, "whisk_container_memory_limit_bytes", "action", SDK),
        e.memory_limits,
        "each container reports its own cgroup's limit"
    );
    assert_eq!(sum(&s, "hello_greetings_total", SDK), e.greetings);
    assert_eq!(
        sum_by(&s, "orders_placed_total", "region", SDK),
        e.orders_placed
    );
    assert_eq!(
        sum_by(&s, "orders_items_total", "region", SDK),
        e.orders_items
    );
    assert_eq!(
        sum_by(&s, "orders_value_sum", "region", SDK),
        e.orders_value_sum
    );
    assert_eq!(
        sum_by(&s, "orders_value_count", "region", SDK),
        e.orders_placed
    );
    assert_eq!(sum_by(&s, "flaky_calls_total", "mode", SDK), e.flaky_calls);
}

/// The SDK groups `(action, instance)` stored on shard `i`.
fn sdk_groups_on(stack: &Stack, i: usize) -> BTreeSet<(String, String)> {
    stack
        .shard_samples(i)
        .into_iter()
        .filter(|s| {
            s.name == "whisk_container_info"
                && s.labels.get("job").map(String::as_str) == Some("openwhisk_actions")
        })
        .map(|s| {
            let label = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            (label("action"), label("instance"))
        })
        .collect()
}

/// Sharding: every SDK group is stored on exactly one shard, the shards together hold one group
/// per container, the platform groups are on the first shard only, and the gateway forwarded
/// to every shard that holds a group.
fn check_shards(stack: &Stack, e: &Expected) {
    let per_shard: Vec<BTreeSet<(String, String)>> =
        (0..SHARDS).map(|i| sdk_groups_on(stack, i)).collect();
    for i in 0..SHARDS {
        for j in i + 1..SHARDS {
            let both: Vec<_> = per_shard[i].intersection(&per_shard[j]).collect();
            assert!(both.is_empty(), "groups on shards {i} and {j}: {both:?}");
        }
    }
    let mut by_action: BTreeMap<String, f64> = BTreeMap::new();
    for (action, _) in per_shard.iter().flatten() {
        *by_action.entry(action.clone()).or_default() += 1.0;
    }
    assert_eq!(by_action, e.groups, "SDK groups over the shards");
    for i in 1..SHARDS {
        assert_eq!(
            sum(
                &stack.shard_samples(i),
                "openwhisk_action_activations_total",
                PLATFORM
            ),
            0.0,
            "platform groups go to the first shard only"
        );
    }
    let own = stack.gateway_samples();
    for (i, groups) in per_shard.iter().enumerate() {
        let forwarded = sum(
            &own,
            "whisk_gateway_forwarded_total",
            &[("shard", &i.to_string())],
        );
        assert!(
            groups.is_empty() || forwarded >= groups.len() as f64,
            "shard {i} holds {} groups but the gateway forwarded {forwarded} pushes to it",
            groups.len()
        );
    }
    println!(
        "SDK groups per shard: {:?}",
        per_shard.iter().map(BTreeSet::len).collect::<Vec<_>>()
    );
}

/// One request to the gateway with the test's client: its status.
fn gateway_request(stack: &Stack, method: &str, path: &str, key: Option<&str>) -> u16 {
    use base64::Engine as _;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let url = format!("{}{path}", stack.gateway_url());
    let auth = key.map(|k| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(k)
        )
    });
    let body = "# TYPE whisk_activations_total counter\nwhisk_activations_total{status=\"success\"} 1000\n# TYPE openwhisk_action_activations_total counter\nopenwhisk_action_activations_total{namespace=\"guest\",action=\"hello\"} 1000\n";
    let answer = match method {
        "PUT" => {
            let mut r = agent.put(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.send(body)
        }
        _ => {
            let mut r = agent.delete(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
    };
    answer
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
        .status()
        .as_u16()
}

/// A tenant's attempts to forge or erase what is not its own, through the gateway: each is
/// refused with the documented status and counted by reason; the exact counts checked after
/// them prove nothing was stored or deleted.
fn push_forged_and_platform_groups(stack: &Stack) {
    let key = stack.guest_key.as_str();
    let forged = "/metrics/job/openwhisk_actions/instance/forged0/namespace/other/action/hello";
    let platform = "/metrics/job/openwhisk_platform/instance/replica0/namespace/guest/action/hello";
    assert_eq!(gateway_request(stack, "PUT", forged, Some(key)), 403);
    assert_eq!(gateway_request(stack, "PUT", platform, Some(key)), 403);
    assert_eq!(gateway_request(stack, "DELETE", platform, Some(key)), 403);
    let wrong = format!("{}x", key);
    let own_ns = "/metrics/job/openwhisk_actions/instance/forged1/namespace/guest/action/hello";
    assert_eq!(gateway_request(stack, "PUT", own_ns, Some(&wrong)), 401);
    assert_eq!(gateway_request(stack, "PUT", own_ns, None), 401);
    let own = stack.gateway_samples();
    let rejected = |reason: &str| {
        sum(
            &own,
            "whisk_gateway_requests_total",
            &[("result", "rejected"), ("reason", reason)],
        )
    };
    assert_eq!(
        (
            rejected("forbidden_namespace"),
            rejected("forbidden_job"),
            rejected("unauthorized")
        ),
        (1.0, 2.0, 2.0),
        "gateway rejections by reason"
    );
    let s = stack.pushgateway_samples();
    assert!(
        s.iter().all(|x| {
            x.labels.get("namespace").map(String::as_str) != Some("other")
                && !x
                    .labels
                    .get("instance")
                    .is_some_and(|i| i.starts_with("forged"))
        }),
        "a refused push reached a Pushgateway"
    );
}

/// The same numbers through PromQL.
fn check_promql(stack: &Stack, n: f64, e: &Expected) {
    let total = eventually(SETTLE, &BTreeMap::from([(String::new(), n)]), || {
        promql_by(stack, "sum(openwhisk_action_activations_total)", "")
    });
    assert_eq!(
        total,
        BTreeMap::from([(String::new(), n)]),
        "sum(openwhisk_action_activations_total)"
    );
    let sdk = eventually(SETTLE, &e.sdk_activations, || {
        promql_by(
            stack,
            "sum by (action) (whisk_activations_total{namespace=\"guest\"})",
            "action",
        )
    });
    assert_eq!(sdk, e.sdk_activations);
    let q = |query: &str, label: &str| promql_by(stack, query, label);
    assert_eq!(
        q(
            "sum by (action) (openwhisk_action_activations_total)",
            "action"
        ),
        e.activations
    );
    assert_eq!(
        q(
            "sum by (action) (openwhisk_action_coldStarts_total)",
            "action"
        ),
        e.cold_starts
    );
    assert_eq!(
        q(
            "count by (action) (whisk_container_info{namespace=\"guest\"})",
            "action"
        ),
        e.groups
    );
    let in_flight = q(
        "max(openwhisk_namespace_concurrent_invocations{namespace=\"guest\"})",
        "",
    );
    assert!(
        in_flight.get("").is_some_and(|v| *v >= 1.0),
        "ConcurrentInvocations gauge: {in_flight:?}"
    );
    assert_eq!(
        q("sum(hello_greetings_total)", ""),
        BTreeMap::from([(String::new(), e.greetings)])
    );
    assert_eq!(
        q("sum by (region) (orders_items_total)", "region"),
        e.orders_items
    );
    assert_eq!(
        q("sum by (mode) (flaky_calls_total)", "mode"),
        e.flaky_calls
    );
    let flaky_platform: BTreeMap<String, f64> = e
        .platform_status
        .iter()
        .filter(|((a, _), _)| a == "flaky")
        .map(|((_, s), v)| (s.clone(), *v))
        .collect();
    assert_eq!(
        q(
            "sum by (status) (openwhisk_action_status{action=\"flaky\"})",
            "status"
        ),
        flaky_platform
    );
    let flaky_sdk: BTreeMap<String, f64> = e
        .sdk_status
        .iter()
        .filter(|((a, _), _)| a == "flaky")
        .map(|((_, s), v)| (s.clone(), *v))
        .collect();
    assert_eq!(
        q(
            "sum by (status) (whisk_activations_total{action=\"flaky\"})",
            "status"
        ),
        flaky_sdk
    );
}

fn load_spec() -> LoadSpec {
    let actions = [
        "guest/hello".to_string(),
        "guest/orders".into(),
        "guest/flaky".into(),
    ];
    let mut spec = LoadSpec::new(&actions);
    spec.rate = 30.0;
    spec.duration = Duration::from_secs(6);
    spec.burst_every = Some(Duration::from_millis(1500));
    spec.burst_size = 12;
    spec.mix = vec![
        ("guest/hello".into(), 3),
        ("guest/orders".into(), 2),
        ("guest/flaky".into(), 2),
    ];
    spec.params
        .insert("guest/hello".into(), vec![json!({"name": "e2e"})]);
    spec.params.insert(
        "guest/orders".into(),
        vec![
            json!({"items": 1, "value": 5.0, "region": "eu"}),
            json!({"items": 4, "value": 120.5, "region": "us"}),
            json!({"items": 2, "value": 30.0, "region": "eu"}),
        ],
    );
    spec.params.insert(
        "guest/flaky".into(),
        vec![
            json!({"mode": "ok"}),
            json!({"mode": "ok"}),
            json!({"mode": "error"}),
            json!({"mode": "panic"}),
            json!({"mode": "sleep", "sleep_ms": 20}),
            json!({"mode": "sleep", "sleep_ms": 3000}), // past the 1 s timeout: developer error
        ],
    );
    spec
}

#[test]
fn platform_and_sdk_metrics_match_a_bursty_load_exactly() {
    let stack = Stack::start(1, 2);
    let sink = Arc::new(KafkaSink::new(&stack.tansu.bootstrap(), "events", &[]).expect("producer"));
    let mut inv = invoker(&stack, sink.clone(), Duration::from_millis(800), 3);
    // Two waves with a pause longer than the idle timeout between them: every container is
    // frozen, then killed, and the second wave cold-starts new ones after Prometheus has seen
    // the first (so init-time rates are not zero).
    let mut waves = Vec::new();
    for seed in [1, 2] {
        let mut spec = load_spec();
        spec.seed = seed;
        spec.duration = Duration::from_secs(3);
        let plan = LoadPlan::generate(&spec);
        let summary = run_plan(&inv, &plan, 32, &AtomicBool::new(false), |_| {});
        assert_eq!(
            (summary.completed as usize, summary.rejected, summary.failed),
            (plan.requests.len(), 0, 0),
            "{}",
            summary.render()
        );
        waves.push((plan, summary));
        if seed == 1 {
            let removed = common::wait(SETTLE, || {
                inv.stats().iter().all(|a| a.containers_alive == 0)
            });
            assert!(removed, "all idle containers removed: {:?}", inv.stats());
            // The second wave's cold starts must land in a later Prometheus sample than the
            // first's, or init-time rates are zero: wait until Prometheus has the first wave's.
            let seen = common::wait(SETTLE, || {
                !promql_by(
                    &stack,
                    "openwhisk_action_initTime_seconds_count{action=\"hello\"}",
                    "",
                )
                .is_empty()
            });
            assert!(seen, "Prometheus never saw the first wave's init times");
        }
    }
    let n: usize = waves.iter().map(|(p, _)| p.requests.len()).sum();
    let stats = inv.stats();
    inv.shutdown();
    let delivery = sink.flush(Duration::from_secs(10)).expect("flush");
    // One Activation and one ConcurrentInvocations event per activation.
    assert_eq!((delivery.delivered, delivery.failed), (2 * n as u64, 0));

    // The load did what it is meant to exercise.
    let by = |a: &str| {
        stats
            .iter()
            .find(|s| s.action == a)
            .cloned()
            .expect("stats")
    };
    // Freezes and thaws happen wherever a container sits idle past the grace, which depends on
    // the schedule: required of the load as a whole, not of every action.
    assert!(
        stats.iter().map(|s| s.freezes).sum::<u64>() > 0
            && stats.iter().map(|s| s.thaws).sum::<u64>() > 0,
        "{stats:?}"
    );
    assert!(
        stats.iter().map(|s| s.containers_removed).sum::<u64>() > 0,
        "{stats:?}"
    );
    let flaky = by("guest/flaky");
    assert!(flaky.statuses[1] > 0 && flaky.statuses[2] > 0, "{flaky:?}");
    for a in ["guest/hello", "guest/orders"] {
        assert_eq!(by(a).statuses[1..], [0, 0, 0], "{a}");
    }

    let e = expected(&waves, &inv);
    assert_eq!(e.activations.values().sum::<f64>(), n as f64);
    for a in ["hello", "orders"] {
        assert_eq!(
            e.groups[a], e.cold_starts[a],
            "{a}: every container served and pushed"
        );
    }
    push_forged_and_platform_groups(&stack);
    check_pushgateway(&stack, n as f64, &e);
    check_shards(&stack, &e);
    check_promql(&stack, n as f64, &e);
    // Prometheus scrapes the gateway: its refusals by reason, and forwards to every shard that
    // holds a group.
    let refused = BTreeMap::from([
        ("forbidden_job".to_string(), 2.0),
        ("forbidden_namespace".to_string(), 1.0),
        ("unauthorized".to_string(), 2.0),
    ]);
    let got = eventually(SETTLE, &refused, || {
        promql_by(
            &stack,
            "sum by (reason) (whisk_gateway_requests_total{result=\"rejected\"})",
            "reason",
        )
    });
    assert_eq!(got, refused, "gateway refusals through PromQL");

    // The hook for the dashboards: every panel query returns data from this Prometheus.
    let vars = whisk_tests::dashboards::Vars::new()
        .with("namespace", "guest")
        .with("action", "hello")
        .with_rate_interval_secs(300)
        .with_range_secs(300);
    // Recording rules (dashboards/prometheus/rules.yml) are evaluated every 5 s, after the
    // scrapes they read: poll until every query has data, with a bound a loaded machine meets.
    let give_up = Instant::now() + Duration::from_secs(90);
    let checked = loop {
        let checked =
            whisk_tests::dashboards::check_all_queries_return_data(&stack.prometheus_url(), &vars);
        if checked.is_ok() || Instant::now() > give_up {
            break checked;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    assert!(
        checked.is_ok(),
        "dashboard queries without data: {checked:?}"
    );
}

#[test]
fn freezing_thawing_and_killing_lose_no_completed_activation() {
    let stack = Stack::start(1, 1);
    let sink = Arc::new(KafkaSink::new(&stack.tansu.bootstrap(), "events", &[]).expect("producer"));
    // Idle timeout long enough that "all frozen, none removed" can be observed on a loaded
    // machine; the removals are then waited for.
    let mut inv = invoker(&stack, sink.clone(), Duration::from_secs(3), 5);
    let wave = |inv: &Invoker| -> Vec<u32> {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..5)
                .map(|_| {
                    s.spawn(|| {
                        match inv.invoke("guest/hello", json!({"name": "wave"}), Instant::now()) {
                            Ok(Invocation::Completed(r)) => {
                                assert_eq!(r.status_code, 0);
                                r.pid
                            }
                            other => panic!("{other:?}"),
                        }
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("join")).collect()
        })
    };
    // How many containers a wave of five concurrent requests needs depends on how the threads
    // are scheduled (a loaded machine may serialise them); every check below uses that number.
    let first: BTreeSet<u32> = wave(&inv).into_iter().collect();
    let k = first.len();
    common::wait(SETTLE, || inv.stats()[0].containers_frozen == k);
    let s = inv.stats()[0].clone();
    assert_eq!((s.containers_alive, s.containers_frozen), (k, k), "{s:?}");
    let second: BTreeSet<u32> = wave(&inv).into_iter().collect();
    assert!(second.is_subset(&first), "thawed containers are reused");
    // The idle timeout: all killed while frozen.
    common::wait(SETTLE, || inv.stats()[0].containers_removed == k as u64);
    let s = inv.stats()[0].clone();
    assert_eq!(
        (s.containers_alive, s.containers_removed),
        (0, k as u64),
        "{s:?}"
    );
    let third: BTreeSet<u32> = wave(&inv).into_iter().collect();
    assert!(third.is_disjoint(&first), "new containers after the kills");
    let created = inv.stats()[0].containers_created as f64;
    inv.shutdown();
    assert_eq!(
        sink.flush(Duration::from_secs(10))
            .expect("flush")
            .delivered,
        30
    );

    let want = BTreeMap::from([("hello".to_string(), 15.0)]);
    let sdk = eventually(SETTLE, &want, || {
        sum_by(
            &stack.pushgateway_samples(),
            "whisk_activations_total",
            "action",
            SDK,
        )
    });
    assert_eq!(
        sdk, want,
        "every completed activation reached the Pushgateway"
    );
    let s = stack.pushgateway_samples();
    assert_eq!(
        count_groups(&s),
        BTreeMap::from([("hello".to_string(), created)])
    );
    assert!(
        created >= 2.0,
        "containers of the first and the third wave: {created}"
    );
    assert_eq!(sum(&s, "hello_greetings_total", SDK), 15.0);
    let platform = eventually(SETTLE, &15.0, || {
        sum(
            &stack.pushgateway_samples(),
            "openwhisk_action_activations_total",
            PLATFORM,
        )
    });
    assert_eq!(platform, 15.0);
    assert_eq!(
        sum(
            &stack.pushgateway_samples(),
            "openwhisk_action_coldStarts_total",
            PLATFORM
        ),
        created
    );
}

#[test]
fn two_collector_replicas_in_one_group_total_exactly_n() {
    let stack = Stack::start(2, 2);
    // Both replicas own a partition before any event is produced.
    let assigned = eventually(SETTLE, &2.0, || {
        (0..2)
            .map(|i| {
                sum(
                    &stack.collector_samples(i),
                    "whisk_collector_assigned_partitions",
                    &[],
                )
            })
            .sum::<f64>()
    });
    assert_eq!(
        assigned,
        2.0,
        "partitions assigned across the replicas; logs:\n{}",
        stack.collector_logs()
    );
    let sink = Arc::new(KafkaSink::new(&stack.tansu.bootstrap(), "events", &[]).expect("producer"));
    let mut inv = invoker(&stack, sink.clone(), Duration::from_secs(5), 3);
    let mut spec = load_spec();
    spec.duration = Duration::from_secs(4);
    spec.params.insert(
        "guest/flaky".into(),
        vec![json!({"mode": "ok"}), json!({"mode": "error"})],
    );
    let plan = LoadPlan::generate(&spec);
    let n = plan.requests.len();
    let summary = run_plan(&inv, &plan, 32, &AtomicBool::new(false), |_| {});
    assert_eq!(summary.completed as usize, n);
    inv.shutdown();
    assert_eq!(
        sink.flush(Duration::from_secs(10))
            .expect("flush")
            .delivered,
        2 * n as u64
    );

    let total = eventually(SETTLE, &(n as f64), || {
        sum(
            &stack.pushgateway_samples(),
            "openwhisk_action_activations_total",
            PLATFORM,
        )
    });
    assert_eq!(total, n as f64, "logs:\n{}", stack.collector_logs());
    let per_replica = sum_by(
        &stack.pushgateway_samples(),
        "openwhisk_action_activations_total",
        "instance",
        PLATFORM,
    );
    assert_eq!(
        per_replica.len(),
        2,
        "both replicas consumed a share: {per_replica:?}"
    );
    let promql = eventually(SETTLE, &BTreeMap::from([(String::new(), n as f64)]), || {
        promql_by(&stack, "sum(openwhisk_action_activations_total)", "")
    });
    assert_eq!(promql, BTreeMap::from([(String::new(), n as f64)]));
}

#[test]
fn namespace_limit_rejections_reach_the_platform_metrics() {
    let stack = Stack::start(1, 1);
    let sink = Arc::new(KafkaSink::new(&stack.tansu.bootstrap(), "events", &[]).expect("producer"));
    let config = stack.invoker_config().with_namespace_concurrency(2);
    let flaky = ActionSpec::new("/guest/flaky", action_exec("flaky")).with_max_containers(6);
    let mut inv = Invoker::new(config, sink.clone(), vec![flaky]).expect("invoker");
    let answers: Vec<Invocation> = std::thread::scope(|s| {
        // Two activations that stay in flight while the other four arrive: both are in their
        // containers (admitted) before the four are sent, one after the other.
        let hs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let params = json!({"mode": "sleep", "sleep_ms": 8000});
                    inv.invoke("guest/flaky", params, Instant::now())
                        .expect("invoke")
                })
            })
            .collect();
        assert!(common::wait(SETTLE, || inv.stats()[0].containers_alive == 2));
        let mut answers: Vec<Invocation> = (0..4)
            .map(|_| {
                inv.invoke("guest/flaky", json!({"mode": "ok"}), Instant::now())
                    .expect("invoke")
            })
            .collect();
        answers.extend(hs.into_iter().map(|h| h.join().expect("join")));
        answers
    });
    let rejected = answers
        .iter()
        .filter(|a| matches!(a, Invocation::Rejected { .. }))
        .count();
    let completed = answers.len() - rejected;
    assert_eq!((completed, rejected), (2, 4), "{answers:?}");
    inv.shutdown();
    // 2 Activations + 2 ConcurrentInvocations + 4 ConcurrentRateLimit.
    assert_eq!(
        sink.flush(Duration::from_secs(10))
            .expect("flush")
            .delivered,
        8
    );

    let limited = eventually(SETTLE, &4.0, || {
        sum(
            &stack.pushgateway_samples(),
            "openwhisk_action_limit_concurrent_total",
            PLATFORM,
        )
    });
    assert_eq!(limited, 4.0, "logs:\n{}", stack.collector_logs());
    let activations = eventually(SETTLE, &2.0, || {
        sum(
            &stack.pushgateway_samples(),
            "openwhisk_action_activations_total",
            PLATFORM,
        )
    });
    assert_eq!(activations, 2.0);
    let s = stack.pushgateway_samples();
    assert_eq!(
        sum(
            &s,
            "openwhisk_action_limit_concurrent_total",
            &[("namespace", "guest")]
        ),
        4.0
    );
    let promql = eventually(SETTLE, &BTreeMap::from([(String::new(), 4.0)]), || {
        promql_by(&stack, "sum(openwhisk_action_limit_concurrent_total)", "")
    });
    assert_eq!(promql, BTreeMap::from([(String::new(), 4.0)]));
}

/// The platform's status label for the SDK's.
fn platform_status(sdk: &str) -> &str {
    match sdk {
        "developer_error" => "action_developer_error",
        other => other,
    }
}

#[test]
fn sdk_and_platform_statuses_agree_for_every_outcome() {
    let stack = Stack::start(1, 1);
    let sink = Arc::new(KafkaSink::new(&stack.tansu.bootstrap(), "events", &[]).expect("producer"));
    // Pushes before the result: a container the invoker removes right after a developer error
    // would otherwise race its own after-result push (conformance.rs covers that mode).
    let config = stack
        .invoker_config()
        .with_namespace_concurrency(1000)
        .with_concurrent_invocations_events(false)
        .with_init_param("WHISK_METRICS_PUSH_MODE", "before-result");
    let specs = vec![
        ActionSpec::new("/guest/flaky", action_exec("flaky")).with_timeout(Duration::from_secs(1)),
        ActionSpec::new("/guest/probe", env!("CARGO_BIN_EXE_conformance-probe")),
    ];
    let mut inv = Invoker::new(config, sink.clone(), specs).expect("invoker");
    // (action, params, times): ok, Err, panic, non-object (a number, null), timeout.
    let outcomes = [
        ("guest/flaky", json!({"mode": "ok"}), 3),
        ("guest/flaky", json!({"mode": "error"}), 2),
        ("guest/flaky", json!({"mode": "panic"}), 2),
        ("guest/probe", json!({"mode": "number"}), 2),
        ("guest/probe", json!({"mode": "null"}), 1),
        ("guest/flaky", json!({"mode": "sleep", "sleep_ms": 3000}), 1),
    ];
    let mut timeouts: BTreeMap<String, f64> = BTreeMap::new();
    let mut n = 0;
    for (action, params, times) in &outcomes {
        for _ in 0..*times {
            let Ok(Invocation::Completed(r)) = inv.invoke(action, params.clone(), Instant::now())
            else {
                panic!("{action} not completed")
            };
            n += 1;
            if r.result["error"]
                .as_str()
                .is_some_and(|e| e.contains("exceeded its time limits"))
            {
                *timeouts.entry(short(action)).or_default() += 1.0;
            }
        }
    }
    inv.shutdown();
    assert_eq!(
        sink.flush(Duration::from_secs(10))
            .expect("flush")
            .delivered,
        n
    );
    assert_eq!(timeouts, BTreeMap::from([("flaky".to_string(), 1.0)]));

    let platform_total = eventually(SETTLE, &(n as f64), || {
        sum(
            &stack.pushgateway_samples(),
            "openwhisk_action_activations_total",
            PLATFORM,
        )
    });
    assert_eq!(
        platform_total,
        n as f64,
        "logs:\n{}",
        stack.collector_logs()
    );
    let s = stack.pushgateway_samples();
    let platform = pairs(&s, "openwhisk_action_status", "action", "status", PLATFORM);
    assert_eq!(
        platform,
        BTreeMap::from([
            (("flaky".into(), "success".into()), 3.0),
            (("flaky".into(), "application_error".into()), 2.0),
            (("flaky".into(), "action_developer_error".into()), 3.0),
            (("probe".into(), "action_developer_error".into()), 3.0),
        ])
    );
    // The SDK counted every outcome but the timeout (killed mid-handler) with the platform's
    // verdict.
    let sdk = pairs(&s, "whisk_activations_total", "action", "status", SDK);
    let mut from_sdk: BTreeMap<(String, String), f64> = sdk
        .iter()
        .map(|((a, st), v)| ((a.clone(), platform_status(st).to_string()), *v))
        .collect();
    for (a, t) in &timeouts {
        *from_sdk
            .entry((a.clone(), "action_developer_error".into()))
            .or_default() += t;
    }
    assert_eq!(from_sdk, platform, "SDK {sdk:?} vs platform {platform:?}");
}

#[test]
fn sequence_components_are_counted_as_caused_by_the_sequence() {
    let stack = Stack::start(1, 1);
    let sink = Arc::new(KafkaSink::new(&stack.tansu.bootstrap(), "events", &[]).expect("producer"));
    let config = stack
        .invoker_config()
        .with_concurrent_invocations_events(false);
    let specs = vec![
        ActionSpec::new("/guest/hello", action_exec("hello")),
        ActionSpec::new("/guest/flaky", action_exec("flaky")),
    ];
    let seqs = vec![SequenceSpec::new(
        "/guest/pipeline",
        &["guest/hello", "guest/flaky"],
    )];
    let mut inv = Invoker::with_sequences(config, sink.clone(), specs, seqs).expect("invoker");
    for _ in 0..3 {
        let Ok(Invocation::Completed(r)) =
            inv.invoke("guest/pipeline", json!({"name": "seq"}), Instant::now())
        else {
            panic!("pipeline not completed")
        };
        assert_eq!((r.status_code, r.components.len()), (0, 2), "{r:?}");
    }
    // One standalone activation: not caused by anything.
    let _ = inv.invoke("guest/hello", json!({}), Instant::now());
    inv.shutdown();
    // 3 sequences × (2 components + the sequence's own event) + 1.
    assert_eq!(
        sink.flush(Duration::from_secs(10))
            .expect("flush")
            .delivered,
        10
    );
    let by_action = BTreeMap::from([
        ("flaky".to_string(), 3.0),
        ("hello".to_string(), 4.0),
        ("pipeline".to_string(), 3.0),
    ]);
    let got = eventually(SETTLE, &by_action, || {
        sum_by(
            &stack.pushgateway_samples(),
            "openwhisk_action_activations_total",
            "action",
            PLATFORM,
        )
    });
    assert_eq!(got, by_action, "logs:\n{}", stack.collector_logs());
    let s = stack.pushgateway_samples();
    assert_eq!(
        pairs(
            &s,
            "openwhisk_action_caused_activations_total",
            "action",
            "caused_by",
            PLATFORM
        ),
        BTreeMap::from([
            (("flaky".into(), "sequence".into()), 3.0),
            (("hello".into(), "sequence".into()), 3.0),
        ])
    );
}
