//! The janitor against a real Pushgateway: exactly the stale groups of the SDK's job go.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use whisk_collector::{GroupingKey, Janitor, PushgatewayClient};
use whisk_testkit::Pushgateway;

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

fn instances(pgw: &Pushgateway, job: &str) -> Vec<String> {
    let mut v: Vec<String> = pgw
        .groups()
        .unwrap()
        .iter()
        .filter(|g| g["labels"]["job"] == job)
        .map(|g| {
            g["labels"]["instance"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn deletes_exactly_the_stale_groups_of_the_sdk_job() {
    let pgw = Pushgateway::start(&[]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = reqwest::Url::parse(&pgw.url()).unwrap();
    let client = PushgatewayClient::new(&url, None, None, Duration::from_secs(5)).unwrap();
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
    std::thread::sleep(Duration::from_millis(2500));
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

    let dry = Janitor::new(client.clone(), sdk, Duration::from_secs(2), true);
    assert_eq!(rt.block_on(dry.run_once()).unwrap().pruned(), 2);
    assert_eq!(
        instances(&pgw, sdk),
        vec!["fresh", "old-1", "old-2"],
        "dry run deletes nothing"
    );

    let janitor = Janitor::new(client, sdk, Duration::from_secs(2), false);
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
fn janitor_run_fails_cleanly_without_a_pushgateway() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let port = whisk_testkit::free_port();
    let url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let client = PushgatewayClient::new(&url, None, None, Duration::from_secs(2)).unwrap();
    let err = rt.block_on(
        Janitor::new(client, "openwhisk_actions", Duration::from_secs(1), false).run_once(),
    );
    assert!(err.is_err());
}
