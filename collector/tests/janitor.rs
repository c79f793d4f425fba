//! The janitor against a real Pushgateway: exactly the stale groups of the SDK's job go.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{all_pushed_at_least, instances, pushgateway_client};
use whisk_collector::{ClashOrder, Janitor, JanitorRound, PushgatewayClient};
use whisk_grouping::GroupingKey;
use whisk_testkit::Pushgateway;

/// The janitor's prune-after in the staleness tests: groups last pushed longer ago are stale.
const PRUNE_AFTER: Duration = Duration::from_secs(2);

fn put(
    rt: &tokio::runtime::Runtime,
    client: &PushgatewayClient,
    job: &str,
    labels: &[(&str, &str)],
) {
    let key = labels
        .iter()
        .fold(GroupingKey::new(job), |k, (n, v)| k.with(*n, *v));
    rt.block_on(client.put_group(&key, "some_counter_total 1\n", Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("PUT {}: {e}", key.path()));
}

#[test]
fn deletes_exactly_the_stale_groups_of_the_sdk_job() {
    let pgw = Pushgateway::start(&[]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = pushgateway_client(&pgw.url(), Duration::from_secs(5));
    // A job name of this test only: on a shared machine, other tests' SDK processes may push to
    // a reused port, so the real default `openwhisk_actions` could hold foreign groups.
    let sdk = &format!("openwhisk_actions_jt{}", std::process::id());
    // Stale: label values with '/', an empty value and characters needing base64.
    put(
        &rt,
        &client,
        sdk,
        &[
            ("instance", "old-1"),
            ("namespace", "guest"),
            ("action", "pkg/hello"),
        ],
    );
    put(
        &rt,
        &client,
        sdk,
        &[
            ("instance", "old-2"),
            ("namespace", ""),
            ("action", "a b@c"),
        ],
    );
    put(&rt, &client, "other_job", &[("instance", "old-other")]);
    put(
        &rt,
        &client,
        "openwhisk_platform",
        &[("instance", "collector")],
    );
    // The old groups become stale (prune-after 2 s) by the Pushgateway's own push times.
    assert!(
        whisk_testkit::wait_until(Duration::from_secs(10), || {
            all_pushed_at_least(&pgw, sdk, PRUNE_AFTER)
        }),
        "the old groups never aged past {PRUNE_AFTER:?}: {:?}",
        pgw.groups()
    );
    put(
        &rt,
        &client,
        sdk,
        &[
            ("instance", "fresh"),
            ("namespace", "guest"),
            ("action", "hello"),
        ],
    );
    assert_eq!(instances(&pgw, sdk), vec!["fresh", "old-1", "old-2"]);

    let dry = Janitor::new(client.clone(), sdk, PRUNE_AFTER, true);
    assert_eq!(rt.block_on(dry.run_once()).unwrap().pruned(), 2);
    assert_eq!(
        instances(&pgw, sdk),
        vec!["fresh", "old-1", "old-2"],
        "dry run deletes nothing"
    );

    let janitor = Janitor::new(client, sdk, PRUNE_AFTER, false);
    assert_eq!(rt.block_on(janitor.run_once()).unwrap().pruned(), 2);
    // DELETE is queued by the Pushgateway; wait (bounded) for it to apply.
    assert!(whisk_testkit::wait_until(
        Duration::from_secs(5),
        || instances(&pgw, sdk) == vec!["fresh"]
    ));
    assert_eq!(instances(&pgw, "other_job"), vec!["old-other"]);
    assert_eq!(instances(&pgw, "openwhisk_platform"), vec!["collector"]);
    assert_eq!(
        rt.block_on(janitor.run_once()).unwrap().pruned(),
        0,
        "nothing left to prune"
    );
}

#[test]
fn one_round_serves_every_shard_and_a_dead_one_does_not_stop_the_others() {
    let shards = [
        Pushgateway::start(&[]).unwrap(),
        Pushgateway::start(&[]).unwrap(),
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = |base: &str| pushgateway_client(base, Duration::from_secs(5));
    let mut clients: Vec<PushgatewayClient> = shards.iter().map(|p| client(&p.url())).collect();
    let dead = format!("http://127.0.0.1:{}", whisk_testkit::free_port());
    clients.insert(1, client(&dead));
    let sdk = &format!("openwhisk_actions_js{}", std::process::id());
    for c in [&clients[0], &clients[2]] {
        put(&rt, c, sdk, &[("instance", "old")]);
    }
    for pgw in &shards {
        assert!(
            whisk_testkit::wait_until(Duration::from_secs(10), || {
                all_pushed_at_least(pgw, sdk, PRUNE_AFTER)
            }),
            "the old groups never aged past {PRUNE_AFTER:?}"
        );
    }
    for c in [&clients[0], &clients[2]] {
        put(&rt, c, sdk, &[("instance", "fresh")]);
    }
    let janitor = Janitor::for_pushgateways(clients, sdk, PRUNE_AFTER, false);
    let round = rt.block_on(janitor.run_once()).unwrap();
    assert_eq!(round.groups, 4);
    assert_eq!(round.pruned(), 2);
    assert_eq!(round.unserved.len(), 1, "{:?}", round.unserved);
    assert!(round.unserved[0].contains(&dead), "{:?}", round.unserved);
    for pgw in &shards {
        assert!(whisk_testkit::wait_until(
            Duration::from_secs(5),
            || instances(pgw, sdk) == vec!["fresh"]
        ));
    }
}

#[test]
fn janitor_run_fails_cleanly_without_a_pushgateway() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let port = whisk_testkit::free_port();
    let client = pushgateway_client(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2));
    let err = rt.block_on(
        Janitor::new(client, "openwhisk_actions", Duration::from_secs(1), false).run_once(),
    );
    assert!(err.is_err());
}

fn put_body(
    rt: &tokio::runtime::Runtime,
    client: &PushgatewayClient,
    job: &str,
    labels: &[(&str, &str)],
    body: &str,
) {
    let key = labels
        .iter()
        .fold(GroupingKey::new(job), |k, (n, v)| k.with(*n, *v));
    rt.block_on(client.put_group(&key, body.to_string(), Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("PUT {}: {e}", key.path()));
}

fn metrics_status(pgw: &Pushgateway) -> u16 {
    let url = format!("{}/metrics", pgw.url());
    ureq_status(&url).unwrap_or_default()
}

fn ureq_status(url: &str) -> Option<u16> {
    // 2xx answers come back as Ok; the testkit helper reports others as errors naming the status.
    match whisk_testkit::http_get(url) {
        Ok(_) => Some(200),
        Err(e) => e
            .to_string()
            .split(|c: char| !c.is_ascii_digit())
            .find(|w| w.len() == 3 && w.starts_with('5'))
            .and_then(|w| w.parse().ok()),
    }
}

/// A Pushgateway that accepts clashing types (as deployed), a runtime for the janitor, and a
/// client of it.
fn clashing_store() -> (Pushgateway, tokio::runtime::Runtime, PushgatewayClient) {
    let pgw = Pushgateway::start(&["--push.disable-consistency-check"]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = pushgateway_client(&pgw.url(), Duration::from_secs(5));
    (pgw, rt, client)
}

#[test]
fn guard_deletes_the_clashing_minority_groups_and_restores_metrics_in_one_round() {
    let (pgw, rt, client) = clashing_store();
    let sdk = &format!("openwhisk_actions_guard{}", std::process::id());
    let counter = "# TYPE jobs counter\njobs 1\n# TYPE ok_total counter\nok_total 1\n";
    for i in ["a", "b", "c"] {
        put_body(
            &rt,
            &client,
            sdk,
            &[("instance", i), ("namespace", "guest"), ("action", "good")],
            counter,
        );
    }
    put_body(
        &rt,
        &client,
        "openwhisk_platform",
        &[("instance", "collector-0")],
        "# TYPE openwhisk_action_status counter\nopenwhisk_action_status 3\n",
    );
    assert!(whisk_testkit::wait_until(
        Duration::from_secs(5),
        || metrics_status(&pgw) == 200
    ));
    // A tenant pushes `jobs` as a gauge straight into the Pushgateway: every scrape now fails.
    put_body(
        &rt,
        &client,
        sdk,
        &[
            ("instance", "evil"),
            ("namespace", "other"),
            ("action", "bad"),
        ],
        "# TYPE jobs gauge\njobs 7\n",
    );
    assert!(
        whisk_testkit::wait_until(Duration::from_secs(5), || metrics_status(&pgw) == 500),
        "the clash must break /metrics (status {})",
        metrics_status(&pgw)
    );

    // One round; nothing is stale (prune-after 1 h): only the guard acts.
    let janitor = Janitor::new(client, sdk, Duration::from_secs(3600), false)
        .with_platform("openwhisk_platform", "collector-0");
    let round = rt.block_on(janitor.run_once()).unwrap();
    assert_eq!(round.guard_deleted.len(), 1, "{round:?}");
    assert!(
        round.guard_deleted[0].why.contains("family `jobs`"),
        "{round:?}"
    );
    assert_eq!(round.pruned(), 0);
    assert!(
        whisk_testkit::wait_until(Duration::from_secs(10), || metrics_status(&pgw) == 200),
        "/metrics still {}",
        metrics_status(&pgw)
    );
    assert_eq!(
        instances(&pgw, sdk),
        vec!["a", "b", "c"],
        "healthy groups untouched"
    );
    assert_eq!(instances(&pgw, "openwhisk_platform"), vec!["collector-0"]);
    let text = pgw.metrics_text().unwrap();
    assert!(text.contains("jobs{") && text.contains(r#"instance="c""#));
}

/// Each group of `job` by instance, with its `push_time_seconds`.
fn push_times(pgw: &Pushgateway, job: &str) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = pgw
        .groups()
        .unwrap()
        .iter()
        .filter(|g| g["labels"]["job"] == job)
        .filter_map(|g| {
            let instance = g["labels"]["instance"].as_str()?.to_string();
            let time = g["push_time_seconds"]["metrics"][0]["value"].as_str()?;
            Some((instance, time.parse().ok()?))
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn guard_keeps_the_family_seen_first_though_its_tenant_pushed_last_and_has_fewer_groups() {
    let (pgw, rt, client) = clashing_store();
    let sdk = &format!("openwhisk_actions_first{}", std::process::id());
    put_body(&rt, &client, sdk, &clash_labels("first"), COUNTER);
    assert!(wait_until_instances(&pgw, sdk, &["first"]));
    // A round while the shard is healthy: nothing to do, the guard learns the counter.
    let janitor = Janitor::new(client.clone(), sdk, Duration::from_secs(3600), false);
    let round = rt.block_on(janitor.run_once()).unwrap();
    assert!(round.guard_deleted.is_empty(), "{round:?}");
    assert_eq!(round.first_seen_full, 0);
    assert_eq!(metrics_status(&pgw), 200);
    // Another tenant's gauge in three groups, then the earlier tenant pushes again.
    three_gauges_then_the_counter_again(&rt, &client, &pgw, sdk);
    // By last push times alone (`push_time_seconds`) the earlier tenant's group, pushed last,
    // would go (the guard's unit tests cover that ordering).

    // One guard round: the later family's groups go, however many, and /metrics answers.
    let round = one_round_deletes_exactly_the_later_gauges(&rt, &janitor, &pgw, sdk);
    assert!(
        round.guard_deleted[0]
            .why
            .contains("a gauge in this group but a counter"),
        "{round:?}"
    );
}

/// Waits (bounded) until the Pushgateway holds exactly `expected` instances of `job`.
fn wait_until_instances(pgw: &Pushgateway, job: &str, expected: &[&str]) -> bool {
    whisk_testkit::wait_until(Duration::from_secs(10), || instances(pgw, job) == expected)
}

/// The counter the earlier tenant pushes, and the same name as a gauge of the later one.
const COUNTER: &str = "# TYPE jobs_total counter\njobs_total 5\n";
const GAUGE: &str = "# TYPE jobs_total gauge\njobs_total 9\n";

/// The clash of the two tests below: `first` pushes a counter, then
/// [`three_gauges_then_the_counter_again`].
fn counter_then_three_gauges_then_the_counter_again(
    rt: &tokio::runtime::Runtime,
    client: &PushgatewayClient,
    pgw: &Pushgateway,
    sdk: &str,
) {
    put_body(rt, client, sdk, &clash_labels("first"), COUNTER);
    three_gauges_then_the_counter_again(rt, client, pgw, sdk);
}

fn clash_labels(instance: &str) -> [(&str, &str); 3] {
    [
        ("instance", instance),
        ("namespace", "guest"),
        ("action", "clash"),
    ]
}

/// Three groups of another tenant push `first`'s counter name as a gauge, then `first` pushes
/// again until its push is the newest of all, so that by last pushes (`push_time_seconds`)
/// `first` would be the later one; the clash breaks `/metrics`.
fn three_gauges_then_the_counter_again(
    rt: &tokio::runtime::Runtime,
    client: &PushgatewayClient,
    pgw: &Pushgateway,
    sdk: &str,
) {
    for i in ["late-1", "late-2", "late-3"] {
        put_body(rt, client, sdk, &clash_labels(i), GAUGE);
    }
    assert!(wait_until_instances(
        pgw,
        sdk,
        &["first", "late-1", "late-2", "late-3"]
    ));
    let newest_late = push_times(pgw, sdk)
        .iter()
        .filter(|(i, _)| i != "first")
        .map(|(_, t)| *t)
        .fold(f64::MIN, f64::max);
    assert!(
        whisk_testkit::wait_until(Duration::from_secs(10), || {
            put_body(rt, client, sdk, &clash_labels("first"), COUNTER);
            push_times(pgw, sdk)
                .iter()
                .any(|(i, t)| i == "first" && *t > newest_late)
        }),
        "the earlier tenant's push must be the newest: {:?}",
        push_times(pgw, sdk)
    );
    assert!(
        whisk_testkit::wait_until(Duration::from_secs(5), || metrics_status(pgw) == 500),
        "the clash must break /metrics (status {})",
        metrics_status(pgw)
    );
}

/// One guard round deletes exactly the three gauge groups and `/metrics` answers right after;
/// returns the round.
fn one_round_deletes_exactly_the_later_gauges(
    rt: &tokio::runtime::Runtime,
    janitor: &Janitor,
    pgw: &Pushgateway,
    sdk: &str,
) -> JanitorRound {
    let round = rt.block_on(janitor.run_once()).unwrap();
    let mut deleted: Vec<&str> = round
        .guard_deleted
        .iter()
        .map(|d| d.path.as_str())
        .collect();
    deleted.sort_unstable();
    let expected: Vec<String> = ["late-1", "late-2", "late-3"]
        .iter()
        .map(|i| {
            // The guard names a group by its labels sorted, as the listing gives them.
            GroupingKey::new(sdk)
                .with("action", "clash")
                .with("instance", *i)
                .with("namespace", "guest")
                .path()
        })
        .collect();
    assert_eq!(deleted, expected, "{round:?}");
    assert_eq!(
        metrics_status(pgw),
        200,
        "200 right after the guard's round"
    );
    assert!(wait_until_instances(pgw, sdk, &["first"]));
    assert!(pgw.metrics_text().unwrap().contains("jobs_total{"));
    round
}

/// One guard round deletes exactly the three gauge groups, ordered by the Pushgateway's
/// first-push stamps, and `/metrics` answers right after.
fn one_round_deletes_the_later_gauges(
    rt: &tokio::runtime::Runtime,
    janitor: &Janitor,
    pgw: &Pushgateway,
    sdk: &str,
) {
    let round = one_round_deletes_exactly_the_later_gauges(rt, janitor, pgw, sdk);
    assert_eq!(round.guard_clashes, [ClashOrder::FirstPush], "{round:?}");
    assert!(
        round
            .guard_deleted
            .iter()
            .all(|d| d.ordered_by == ClashOrder::FirstPush)
    );
}

#[test]
fn guard_keeps_the_family_pushed_first_when_both_appeared_within_one_round() {
    let (pgw, rt, client) = clashing_store();
    let sdk = &format!("openwhisk_actions_oneround{}", std::process::id());
    // A round before either family exists: the next read is the first to see both.
    let janitor = Janitor::new(client.clone(), sdk, Duration::from_secs(3600), false);
    let round = rt.block_on(janitor.run_once()).unwrap();
    assert!(round.guard_deleted.is_empty(), "{round:?}");
    counter_then_three_gauges_then_the_counter_again(&rt, &client, &pgw, sdk);
    one_round_deletes_the_later_gauges(&rt, &janitor, &pgw, sdk);
}

#[test]
fn guard_keeps_the_family_pushed_first_after_a_collector_restart() {
    let (pgw, rt, client) = clashing_store();
    let sdk = &format!("openwhisk_actions_restart{}", std::process::id());
    counter_then_three_gauges_then_the_counter_again(&rt, &client, &pgw, sdk);
    // A collector started now: its memory of first sightings is empty.
    let restarted = Janitor::new(client, sdk, Duration::from_secs(3600), false);
    one_round_deletes_the_later_gauges(&rt, &restarted, &pgw, sdk);
}
