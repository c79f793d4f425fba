//! The janitor against a real Pushgateway: exactly the stale groups of the SDK's job go.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{all_pushed_at_least, instances, pushgateway_client};
use whisk_collector::{Janitor, PushgatewayClient};
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

#[test]
fn guard_deletes_the_clashing_minority_groups_and_restores_metrics_in_one_round() {
    let pgw = Pushgateway::start(&["--push.disable-consistency-check"]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = pushgateway_client(&pgw.url(), Duration::from_secs(5));
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
