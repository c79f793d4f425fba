//! The janitor's Prometheus source (`--prometheus-url`) against real Pushgateway shards scraped
//! by a real Prometheus with `honor_labels: true`: stale groups found by a query and deleted
//! from the shard that holds them, the guard told by `up`, and the listing when Prometheus
//! cannot answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{instances, pushgateway_client};
use whisk_collector::{ClashOrder, Janitor, JanitorSource, PrometheusClient, PushgatewayClient};
use whisk_grouping::GroupingKey;
use whisk_testkit::{Prometheus, Pushgateway, wait_until};

/// Long enough for a loaded machine.
const WAIT: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn client(base: &str) -> PushgatewayClient {
    pushgateway_client(base, Duration::from_secs(5))
}

fn put(rt: &tokio::runtime::Runtime, pgw: &Pushgateway, job: &str, instance: &str, body: &str) {
    let key = GroupingKey::new(job)
        .with("instance", instance)
        .with("namespace", "guest")
        .with("action", "pkg/hello");
    rt.block_on(client(&pgw.url()).put_group(&key, body.to_string(), Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("PUT {}: {e}", key.path()));
}

/// A Prometheus scraping every shard every second, as dashboards/prometheus/prometheus.yml does.
fn prometheus_for(shards: &[&Pushgateway]) -> Prometheus {
    let targets = shards
        .iter()
        .map(|p| format!("'127.0.0.1:{}'", p.port()))
        .collect::<Vec<_>>()
        .join(", ");
    Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
         - job_name: pushgateway\n    honor_labels: true\n    static_configs:\n      \
         - targets: [{targets}]\n"
    ))
    .unwrap()
}

/// How many series `promql` returns now.
fn count(prom: &Prometheus, promql: &str) -> usize {
    prom.query(promql).map(|r| r.len()).unwrap_or(0)
}

fn janitor_of(shards: &[&Pushgateway], job: &str, max_age: Duration) -> Janitor {
    Janitor::for_pushgateways(
        shards.iter().map(|p| client(&p.url())).collect(),
        job,
        max_age,
        false,
    )
}

const BODY: &str = "# TYPE jobs counter\njobs 1\n";

#[test]
fn prunes_stale_groups_found_by_prometheus_from_the_shard_that_holds_them_only() {
    let (a, b) = (
        Pushgateway::start(&[]).unwrap(),
        Pushgateway::start(&[]).unwrap(),
    );
    let prom = prometheus_for(&[&a, &b]);
    let rt = runtime();
    let pid = std::process::id();
    let (sdk, platform, other) = (
        format!("openwhisk_actions_jp{pid}"),
        format!("openwhisk_platform_jp{pid}"),
        format!("other_job_jp{pid}"),
    );
    put(&rt, &a, &sdk, "old-a", BODY);
    put(&rt, &b, &sdk, "old-b", BODY);
    put(&rt, &b, &other, "old-other", BODY);
    put(&rt, &a, &platform, "gone-replica", BODY);
    put(&rt, &a, &platform, "me", BODY);
    // The event itself: Prometheus holds those push times, and they are older than 2 s.
    let old = format!("push_time_seconds{{job=~\"{sdk}|{platform}|{other}\"}} < (time() - 2)");
    assert!(
        wait_until(WAIT, || count(&prom, &old) == 5),
        "Prometheus never saw the five old groups: {:?}",
        prom.query(&old)
    );
    put(&rt, &a, &sdk, "fresh-a", BODY);
    put(&rt, &b, &sdk, "fresh-b", BODY);
    let fresh = format!("push_time_seconds{{job=\"{sdk}\", instance=~\"fresh-.*\"}}");
    assert!(wait_until(WAIT, || count(&prom, &fresh) == 2));

    let prometheus = PrometheusClient::new(&reqwest::Url::parse(&prom.url()).unwrap()).unwrap();
    let janitor = janitor_of(&[&a, &b], &sdk, Duration::from_secs(2))
        .with_platform(&platform, "me")
        .with_prometheus(prometheus);
    let round = rt.block_on(janitor.run_once()).unwrap();
    assert_eq!(round.source, JanitorSource::Prometheus, "{round:?}");
    assert!(round.prometheus_failure.is_none(), "{round:?}");
    let mut pruned: Vec<&str> = round.pruned.iter().map(|g| g.path.as_str()).collect();
    pruned.sort_unstable();
    assert_eq!(pruned.len(), 3, "{round:?}");
    assert!(round.failed.is_empty(), "{round:?}");
    // Each stale group DELETEd on both shards; the one that does not hold it answers 202 too.
    assert_eq!(round.deletes_ok, 6, "{round:?}");
    assert_eq!(round.deletes_failed, 0);
    assert_eq!(
        round.health_via_prometheus, 2,
        "both shards up: no direct check"
    );
    assert_eq!(round.health_direct, 0);

    assert!(wait_until(WAIT, || instances(&a, &sdk) == ["fresh-a"]));
    assert!(wait_until(WAIT, || instances(&b, &sdk) == ["fresh-b"]));
    assert_eq!(instances(&b, &other), ["old-other"], "other jobs untouched");
    assert_eq!(
        instances(&a, &platform),
        ["me"],
        "the gone replica's platform group pruned, never our own"
    );
}

#[test]
fn without_a_usable_prometheus_the_round_falls_back_to_the_listing_and_says_why() {
    let pgw = Pushgateway::start(&[]).unwrap();
    let rt = runtime();
    let sdk = format!("openwhisk_actions_jf{}", std::process::id());
    for (prometheus_url, reason) in [
        (
            format!("http://127.0.0.1:{}", whisk_testkit::free_port()),
            "unreachable",
        ),
        // A Pushgateway has no /api/v1/query: an error status, not a vector.
        (pgw.url(), "status"),
    ] {
        put(&rt, &pgw, &sdk, "old", BODY);
        // Age is the event here: the group must be older than --prune-after.
        let stale_since = std::time::Instant::now();
        assert!(wait_until(WAIT, || stale_since.elapsed() > Duration::from_secs(2)));
        let prometheus =
            PrometheusClient::new(&reqwest::Url::parse(&prometheus_url).unwrap()).unwrap();
        let janitor = janitor_of(&[&pgw], &sdk, Duration::from_secs(2)).with_prometheus(prometheus);
        let round = rt.block_on(janitor.run_once()).unwrap();
        assert_eq!(round.source, JanitorSource::Listing, "{round:?}");
        let failure = round
            .prometheus_failure
            .as_ref()
            .expect("the failure is reported");
        assert_eq!(failure.reason(), reason, "{failure}");
        assert_eq!(round.pruned(), 1, "the listing still prunes: {round:?}");
        assert!(wait_until(WAIT, || instances(&pgw, &sdk).is_empty()));
    }
}

#[test]
fn a_shard_whose_scrape_fails_gets_the_direct_guard_which_repairs_it() {
    let healthy = Pushgateway::start(&["--push.disable-consistency-check"]).unwrap();
    let broken = Pushgateway::start(&["--push.disable-consistency-check"]).unwrap();
    let prom = prometheus_for(&[&healthy, &broken]);
    let rt = runtime();
    let sdk = format!("openwhisk_actions_jg{}", std::process::id());
    for i in ["a", "b"] {
        put(&rt, &healthy, &sdk, i, BODY);
        put(&rt, &broken, &sdk, i, BODY);
    }
    // A tenant pushes `jobs` as a gauge straight into one shard: its scrapes now fail.
    put(&rt, &broken, &sdk, "evil", "# TYPE jobs gauge\njobs 7\n");
    // The earlier tenant's groups push again: by last pushes the counter is now the later
    // family, and the janitor (first round) has never read the shard: first pushes decide.
    for i in ["a", "b"] {
        put(&rt, &broken, &sdk, i, BODY);
    }
    let up = |pgw: &Pushgateway| {
        prom.query(&format!("up{{instance=\"127.0.0.1:{}\"}}", pgw.port()))
            .ok()
            .and_then(|r| r.first().cloned())
            .and_then(|s| {
                s.pointer("/value/1")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            })
    };
    assert!(
        wait_until(WAIT, || up(&broken).as_deref() == Some("0")
            && up(&healthy).as_deref() == Some("1")),
        "Prometheus must see the broken shard down: {:?} {:?}",
        up(&broken),
        up(&healthy)
    );

    let prometheus = PrometheusClient::new(&reqwest::Url::parse(&prom.url()).unwrap()).unwrap();
    let janitor = janitor_of(&[&healthy, &broken], &sdk, Duration::from_secs(3600))
        .with_prometheus(prometheus);
    let round = rt.block_on(janitor.run_once()).unwrap();
    assert_eq!(round.source, JanitorSource::Prometheus, "{round:?}");
    assert_eq!(round.health_via_prometheus, 1, "{round:?}");
    assert_eq!(round.health_direct, 1, "{round:?}");
    assert_eq!(round.pruned(), 0, "nothing stale");
    assert_eq!(round.guard_deleted.len(), 1, "{round:?}");
    assert!(
        round.guard_deleted[0].why.contains("family `jobs`"),
        "{round:?}"
    );
    assert_eq!(round.guard_clashes, [ClashOrder::FirstPush], "{round:?}");
    assert!(
        wait_until(WAIT, || up(&broken).as_deref() == Some("1")),
        "Prometheus scrapes the repaired shard again"
    );
    assert_eq!(
        instances(&broken, &sdk),
        ["a", "b"],
        "healthy groups untouched"
    );
    assert_eq!(instances(&healthy, &sdk), ["a", "b"]);
}

#[test]
fn every_sixtieth_round_lists_the_pushgateways_even_with_prometheus() {
    let pgw = Pushgateway::start(&[]).unwrap();
    let rt = runtime();
    let sdk = format!("openwhisk_actions_jl{}", std::process::id());
    let dead = format!("http://127.0.0.1:{}", whisk_testkit::free_port());
    let prometheus = PrometheusClient::new(&reqwest::Url::parse(&dead).unwrap()).unwrap();
    let janitor = janitor_of(&[&pgw], &sdk, Duration::from_secs(3600)).with_prometheus(prometheus);
    for i in 1..=120 {
        let round = rt.block_on(janitor.run_once()).unwrap();
        assert_eq!(round.source, JanitorSource::Listing);
        assert_eq!(
            round.prometheus_failure.is_none(),
            i % 60 == 0,
            "round {i}: Prometheus asked (and failing) except every 60th round"
        );
    }
}

/// The collector binary with `--prometheus-url`: its janitor prunes through Prometheus, and
/// another one pointed at a dead Prometheus falls back to the listing; both count it on
/// `/metrics`.
#[test]
fn the_collector_binary_prunes_through_prometheus_and_counts_a_fallback() {
    let pgw = Pushgateway::start(&[]).unwrap();
    let prom = prometheus_for(&[&pgw]);
    let rt = runtime();
    let pid = std::process::id();
    let (sdk, platform) = (
        format!("openwhisk_actions_jb{pid}"),
        format!("openwhisk_platform_jb{pid}"),
    );
    put(&rt, &pgw, &sdk, "old", BODY);
    let old = format!("push_time_seconds{{job=\"{sdk}\"}} < (time() - 2)");
    assert!(wait_until(WAIT, || count(&prom, &old) == 1));
    let nowhere = format!("http://127.0.0.1:{}", whisk_testkit::free_port());
    let start = |prometheus: &str, instance: &str| {
        common::Collector::start(
            &[
                "--brokers",
                &format!("127.0.0.1:{}", whisk_testkit::free_port()),
                "--pushgateway-url",
                &pgw.url(),
                "--push-job",
                &platform,
                "--instance",
                instance,
                "--prune-job",
                &sdk,
                "--prune-after",
                "2s",
                "--prune-interval",
                "1s",
                "--prometheus-url",
                prometheus,
            ]
            .map(str::to_string),
        )
    };
    let via_prometheus = start(&prom.url(), "c1");
    let counted = |c: &common::Collector, series: &str| {
        common::sample(&c.metrics(), series).is_some_and(|v| v >= 1.0)
    };
    assert!(
        wait_until(WAIT, || counted(
            &via_prometheus,
            "whisk_collector_janitor_deletes_total{result=\"ok\"}"
        )),
        "{}",
        via_prometheus.log()
    );
    assert!(counted(
        &via_prometheus,
        "whisk_collector_janitor_rounds_total{source=\"prometheus\"}"
    ));
    assert!(wait_until(WAIT, || instances(&pgw, &sdk).is_empty()));
    drop(via_prometheus);

    put(&rt, &pgw, &sdk, "old-again", BODY);
    let fallback = start(&nowhere, "c2");
    assert!(
        wait_until(WAIT, || counted(
            &fallback,
            "whisk_collector_janitor_prometheus_failures_total{reason=\"unreachable\"}"
        ) && counted(
            &fallback,
            "whisk_collector_janitor_rounds_total{source=\"listing\"}"
        )),
        "{}",
        fallback.log()
    );
    assert!(
        wait_until(WAIT, || instances(&pgw, &sdk).is_empty()),
        "the fallback listing prunes the stale group: {}",
        fallback.log()
    );
}
