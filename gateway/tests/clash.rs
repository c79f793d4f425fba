//! Clashes between families pushed through two gateway replicas, on real services: two
//! `whisk-gateway` processes (each with its own family table, no resync during the test) in
//! front of one real Pushgateway run with `--push.disable-consistency-check`, and the
//! collector's janitor (its guard) against that Pushgateway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Gateway, basic, controller, group, groups_with, pushgateways, send};
use whisk_collector::{Janitor, PushgatewayClient};
use whisk_testkit::{Pushgateway, wait_until};

const JOB: &str = "openwhisk_actions";

/// No resync while a test runs: each replica knows only what it pushed or read itself; every
/// first sight reads (no spacing between reads).
const NO_RESYNC: [&str; 4] = [
    "--family-resync-interval",
    "1h",
    "--first-sight-min-interval",
    "0s",
];

const HISTOGRAM_X: &str = "# TYPE x histogram\n\
    x_bucket{le=\"1\"} 1\nx_bucket{le=\"+Inf\"} 2\nx_sum 3\nx_count 2\n";
const GAUGE_X_COUNT: &str = "# TYPE x_count gauge\nx_count 7\n";
const COUNTER_JOBS: &str = "# TYPE jobs_total counter\njobs_total 5\n";
const GAUGE_JOBS: &str = "# TYPE jobs_total gauge\njobs_total 9\n";

/// `/metrics` of the Pushgateway: its status (0 when it does not answer).
fn metrics_status(pgw: &Pushgateway) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    agent
        .get(&format!("{}/metrics", pgw.url()))
        .call()
        .map_or(0, |r| r.status().as_u16())
}

fn instances(pgw: &Pushgateway) -> Vec<String> {
    let mut v: Vec<String> = groups_with(pgw, "job", JOB)
        .iter()
        .filter_map(|g| g["labels"]["instance"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// Each group of the SDK's job by instance, with its `push_time_seconds`.
fn push_times(pgw: &Pushgateway) -> Vec<(String, f64)> {
    groups_with(pgw, "job", JOB)
        .iter()
        .filter_map(|g| {
            let instance = g["labels"]["instance"].as_str()?.to_string();
            let time = g["push_time_seconds"]["metrics"][0]["value"].as_str()?;
            Some((instance, time.parse().ok()?))
        })
        .collect()
}

/// Waits until the Pushgateway holds exactly `expected` instances of the SDK's job.
fn wait_instances(pgw: &Pushgateway, expected: &[&str]) {
    let ok = wait_until(Duration::from_secs(20), || instances(pgw) == expected);
    assert!(ok, "expected {expected:?}, have {:?}", instances(pgw));
}

struct Setup {
    pgw: Pushgateway,
    a: Gateway,
    b: Gateway,
    key: String,
    _controller: whisk_emulator::controller::Controller,
    /// The collector's janitor over the Pushgateway, one for the whole test (its guard
    /// remembers, round to round, when each family first appeared), and its runtime.
    janitor: Janitor,
    rt: tokio::runtime::Runtime,
}

impl Setup {
    fn start() -> Setup {
        let pgw = pushgateways(1).pop().unwrap();
        let (controller, keys) = controller(&["guest"]);
        let a = Gateway::with_controller(&[&pgw], &controller, &NO_RESYNC);
        let b = Gateway::with_controller(&[&pgw], &controller, &NO_RESYNC);
        let janitor = Self::new_janitor(&pgw);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Setup {
            pgw,
            a,
            b,
            key: keys[0].clone(),
            _controller: controller,
            janitor,
            rt,
        }
    }

    /// The collector's janitor over `pgw`, as a freshly started collector has it (no memory
    /// of first sightings). Nothing is stale (prune-after 1 h): only the guard can act.
    fn new_janitor(pgw: &Pushgateway) -> Janitor {
        let url = reqwest::Url::parse(&pgw.url()).unwrap();
        let client = PushgatewayClient::new(&url, None, None, Duration::from_secs(5)).unwrap();
        Janitor::new(client, JOB, Duration::from_secs(3600), false)
    }

    /// The collector restarts: what its janitor remembered is gone.
    fn restart_collector(&mut self) {
        self.janitor = Self::new_janitor(&self.pgw);
    }

    fn put(&self, via: &Gateway, instance: &str, body: &str) -> (u16, String) {
        let path = group(JOB, instance, "guest", "clash");
        send("PUT", &via.url(), &path, Some(&basic(&self.key)), body)
    }

    fn delete(&self, via: &Gateway, instance: &str) -> u16 {
        let path = group(JOB, instance, "guest", "clash");
        send("DELETE", &via.url(), &path, Some(&basic(&self.key)), "").0
    }

    /// Replica B learns `body`'s family from a push of its own, whose group is then deleted:
    /// B still knows the name (until its next resync), the Pushgateway holds it no more. This
    /// is the window that first sight leaves open.
    fn teach_b_then_forget(&self, body: &str) {
        assert_eq!(self.put(&self.b, "b-teacher", body).0, 202);
        wait_instances(&self.pgw, &["b-teacher"]);
        assert_eq!(self.delete(&self.b, "b-teacher"), 202);
        wait_instances(&self.pgw, &[]);
    }

    /// One round of the collector's janitor over the Pushgateway (nothing is stale: only the
    /// guard can act); returns the paths it deleted.
    fn guard_round(&self) -> Vec<String> {
        let round = self
            .rt
            .block_on(self.janitor.run_once())
            .expect("a janitor round");
        round.guard_deleted.into_iter().map(|d| d.path).collect()
    }

    /// `instance`'s group pushes `body` again through `via` until its push time is the newest
    /// of the shard (bounded).
    fn push_again_until_newest(&self, via: &Gateway, instance: &str, body: &str) {
        let newest_other = push_times(&self.pgw)
            .into_iter()
            .filter(|(i, _)| i != instance)
            .map(|(_, t)| t)
            .fold(f64::MIN, f64::max);
        let newest = wait_until(Duration::from_secs(20), || {
            assert_eq!(self.put(via, instance, body).0, 202);
            push_times(&self.pgw)
                .iter()
                .any(|(i, t)| i == instance && *t > newest_other)
        });
        assert!(
            newest,
            "{instance} never pushed last: {:?}",
            push_times(&self.pgw)
        );
    }

    /// The clash is stored: `/metrics` answers 500; one guard round later it answers 200 again,
    /// holding exactly `kept`, and the guard deleted exactly `deleted`.
    fn one_guard_round_repairs(&self, kept: &[&str], deleted: &[&str]) {
        assert!(
            wait_until(Duration::from_secs(20), || metrics_status(&self.pgw) == 500),
            "the stored clash must break /metrics (status {})",
            metrics_status(&self.pgw)
        );
        let paths = self.guard_round();
        let mut expected: Vec<String> = deleted
            .iter()
            .map(|i| {
                whisk_grouping::GroupingKey::new(JOB)
                    .with("action", "clash")
                    .with("instance", *i)
                    .with("namespace", "guest")
                    .path()
            })
            .collect();
        let mut paths_sorted = paths.clone();
        paths_sorted.sort();
        expected.sort();
        assert_eq!(paths_sorted, expected, "the guard deleted {paths:?}");
        assert_eq!(metrics_status(&self.pgw), 200, "200 right after one round");
        wait_instances(&self.pgw, kept);
    }
}

#[test]
fn a_name_new_to_a_replica_is_checked_against_the_shard_so_a_clash_is_refused() {
    let s = Setup::start();
    assert_eq!(s.put(&s.a, "tenant-a", HISTOGRAM_X).0, 202);
    wait_instances(&s.pgw, &["tenant-a"]);
    // B has never seen `x_count`: it reads the shard first and learns A's histogram.
    let (status, text) = s.put(&s.b, "tenant-b", GAUGE_X_COUNT);
    assert_eq!(status, 409, "{text}");
    assert!(
        text.contains("x_count") && text.contains("histogram"),
        "{text}"
    );
    assert_eq!(
        s.b.own_value("whisk_gateway_first_sight_reads_total{result=\"read\"}"),
        1.0
    );
    // The same for an exact clash, and a known name costs no read.
    assert_eq!(s.put(&s.a, "tenant-c", COUNTER_JOBS).0, 202);
    wait_instances(&s.pgw, &["tenant-a", "tenant-c"]);
    assert_eq!(s.put(&s.b, "tenant-d", GAUGE_JOBS).0, 409);
    // A's read for `jobs_total` may outlast its push's wait (it is counted when it ends).
    let a_reads = || {
        s.a.own_value("whisk_gateway_first_sight_reads_total{result=\"read\"}")
    };
    assert!(wait_until(Duration::from_secs(10), || a_reads() >= 2.0));
    assert_eq!(s.put(&s.a, "tenant-c", COUNTER_JOBS).0, 202);
    assert_eq!(
        s.a.own_value("whisk_gateway_first_sight_reads_total{result=\"read\"}"),
        2.0,
        "A read once per new name, not for the repeated push"
    );
    assert_eq!(metrics_status(&s.pgw), 200);
    assert_eq!(instances(&s.pgw), ["tenant-a", "tenant-c"]);
}

#[test]
fn a_suffix_clash_through_two_replicas_is_repaired_in_one_guard_round_and_the_later_push_loses() {
    let s = Setup::start();
    s.teach_b_then_forget(GAUGE_X_COUNT);
    // Tenant A's histogram through A first, then three gauge groups `x_count` through B, which
    // knows the name and not A's histogram: all accepted, the shard's /metrics breaks.
    assert_eq!(s.put(&s.a, "tenant-a", HISTOGRAM_X).0, 202);
    wait_instances(&s.pgw, &["tenant-a"]);
    for i in ["late-1", "late-2", "late-3"] {
        assert_eq!(s.put(&s.b, i, GAUGE_X_COUNT).0, 202, "{i}");
    }
    wait_instances(&s.pgw, &["late-1", "late-2", "late-3", "tenant-a"]);
    s.one_guard_round_repairs(&["tenant-a"], &["late-1", "late-2", "late-3"]);
}

#[test]
fn an_exact_clash_through_two_replicas_deletes_the_later_groups_even_when_they_are_more() {
    let s = Setup::start();
    s.teach_b_then_forget(GAUGE_JOBS);
    assert_eq!(s.put(&s.a, "first", COUNTER_JOBS).0, 202);
    wait_instances(&s.pgw, &["first"]);
    for i in ["more-1", "more-2", "more-3"] {
        assert_eq!(s.put(&s.b, i, GAUGE_JOBS).0, 202, "{i}");
    }
    wait_instances(&s.pgw, &["first", "more-1", "more-2", "more-3"]);
    s.one_guard_round_repairs(&["first"], &["more-1", "more-2", "more-3"]);
}

#[test]
fn the_family_pushed_first_wins_though_its_tenant_pushes_again_after_more_later_groups() {
    let s = Setup::start();
    s.teach_b_then_forget(GAUGE_JOBS);
    assert_eq!(s.put(&s.a, "first", COUNTER_JOBS).0, 202);
    wait_instances(&s.pgw, &["first"]);
    // The janitor's round while the shard is healthy (one every --prune-interval): nothing to
    // repair; the guard notes the counter.
    assert_eq!(s.guard_round(), Vec::<String>::new());
    for i in ["more-1", "more-2", "more-3"] {
        assert_eq!(s.put(&s.b, i, GAUGE_JOBS).0, 202, "{i}");
    }
    wait_instances(&s.pgw, &["first", "more-1", "more-2", "more-3"]);
    // The earlier tenant keeps pushing through A (which knows its counter): by push time it
    // is now the latest of all.
    // By last push times alone (`push_time_seconds`) `first` would now lose; what the
    // janitor remembers from its earlier round must decide instead.
    s.push_again_until_newest(&s.a, "first", COUNTER_JOBS);
    s.one_guard_round_repairs(&["first"], &["more-1", "more-2", "more-3"]);
}

#[test]
fn the_histogram_pushed_first_wins_a_suffix_clash_though_its_tenant_pushes_again() {
    let s = Setup::start();
    s.teach_b_then_forget(GAUGE_X_COUNT);
    assert_eq!(s.put(&s.a, "tenant-a", HISTOGRAM_X).0, 202);
    wait_instances(&s.pgw, &["tenant-a"]);
    assert_eq!(s.guard_round(), Vec::<String>::new());
    for i in ["late-1", "late-2"] {
        assert_eq!(s.put(&s.b, i, GAUGE_X_COUNT).0, 202, "{i}");
    }
    wait_instances(&s.pgw, &["late-1", "late-2", "tenant-a"]);
    s.push_again_until_newest(&s.a, "tenant-a", HISTOGRAM_X);
    s.one_guard_round_repairs(&["tenant-a"], &["late-1", "late-2"]);
}

#[test]
fn the_family_pushed_first_wins_though_both_appeared_within_one_guard_round() {
    let s = Setup::start();
    s.teach_b_then_forget(GAUGE_JOBS);
    // The janitor's round before either family exists: its next read sees both at once.
    assert_eq!(s.guard_round(), Vec::<String>::new());
    assert_eq!(s.put(&s.a, "first", COUNTER_JOBS).0, 202);
    wait_instances(&s.pgw, &["first"]);
    for i in ["more-1", "more-2", "more-3"] {
        assert_eq!(s.put(&s.b, i, GAUGE_JOBS).0, 202, "{i}");
    }
    wait_instances(&s.pgw, &["first", "more-1", "more-2", "more-3"]);
    // By last pushes `first` is now the latest; the Pushgateway's first-push stamps decide.
    s.push_again_until_newest(&s.a, "first", COUNTER_JOBS);
    // A replica started now reads the stored clash and learns the type of the group pushed
    // first, as the guard will keep it: it takes the earlier tenant's push, refuses the other.
    let c = Gateway::with_controller(&[&s.pgw], &s._controller, &NO_RESYNC);
    assert_eq!(s.put(&c, "first", COUNTER_JOBS).0, 202);
    assert_eq!(s.put(&c, "more-4", GAUGE_JOBS).0, 409);
    s.one_guard_round_repairs(&["first"], &["more-1", "more-2", "more-3"]);
}

#[test]
fn a_replica_reading_a_stored_suffix_clash_takes_the_earlier_tenants_pushes_and_refuses_the_later()
{
    let s = Setup::start();
    // C is up before the clash and knows neither name: it learns them by first sight.
    let c = Gateway::with_controller(&[&s.pgw], &s._controller, &NO_RESYNC);
    s.teach_b_then_forget(GAUGE_X_COUNT);
    assert_eq!(s.put(&s.a, "tenant-a", HISTOGRAM_X).0, 202);
    wait_instances(&s.pgw, &["tenant-a"]);
    for i in ["late-1", "late-2"] {
        assert_eq!(s.put(&s.b, i, GAUGE_X_COUNT).0, 202, "{i}");
    }
    wait_instances(&s.pgw, &["late-1", "late-2", "tenant-a"]);
    // By last pushes the histogram is now the latest; its first-push stamp is the earliest.
    s.push_again_until_newest(&s.a, "tenant-a", HISTOGRAM_X);
    // The shard holds both names. A replica that learns them from the listing keeps only the
    // side the guard keeps (the histogram, pushed first): the earlier tenant's pushes go on,
    // the later tenant's clashing pushes are refused until the guard repairs.
    let d = Gateway::with_controller(&[&s.pgw], &s._controller, &NO_RESYNC);
    let replicas = [
        ("first sight", &c),
        ("seeded on the clash", &d),
        // B took the later gauge itself; its first sight of `x` makes it forget that gauge.
        ("first sight where the later side was taken", &s.b),
    ];
    for (name, via) in replicas {
        let (status, text) = s.put(via, "tenant-a", HISTOGRAM_X);
        assert_eq!(status, 202, "{name}: {text}");
        let (status, text) = s.put(via, "late-3", GAUGE_X_COUNT);
        assert_eq!(status, 409, "{name}: {text}");
        assert!(
            text.contains("x_count") && text.contains("histogram"),
            "{name}: {text}"
        );
    }
    assert!(
        c.own_value("whisk_gateway_first_sight_reads_total{result=\"read\"}") >= 1.0,
        "C learnt the shard's names by first sight"
    );
    s.one_guard_round_repairs(&["tenant-a"], &["late-1", "late-2"]);
}

#[test]
fn the_histogram_pushed_first_wins_a_suffix_clash_after_a_collector_restart() {
    let mut s = Setup::start();
    s.teach_b_then_forget(GAUGE_X_COUNT);
    assert_eq!(s.put(&s.a, "tenant-a", HISTOGRAM_X).0, 202);
    wait_instances(&s.pgw, &["tenant-a"]);
    // The janitor learns the histogram, then the collector restarts and forgets it.
    assert_eq!(s.guard_round(), Vec::<String>::new());
    s.restart_collector();
    for i in ["late-1", "late-2"] {
        assert_eq!(s.put(&s.b, i, GAUGE_X_COUNT).0, 202, "{i}");
    }
    wait_instances(&s.pgw, &["late-1", "late-2", "tenant-a"]);
    s.push_again_until_newest(&s.a, "tenant-a", HISTOGRAM_X);
    s.one_guard_round_repairs(&["tenant-a"], &["late-1", "late-2"]);
}

#[test]
fn a_tenant_pushing_ever_new_names_gets_one_first_sight_read_per_interval() {
    let pgw = pushgateways(1).pop().unwrap();
    let (controller, keys) = controller(&["guest"]);
    let spaced = [
        "--family-resync-interval",
        "1h",
        "--first-sight-min-interval",
        "1h",
    ];
    let gw = Gateway::with_controller(&[&pgw], &controller, &spaced);
    let path = group(JOB, "hostile", "guest", "clash");
    for i in 0..20 {
        let body = format!("# TYPE new_{i} gauge\nnew_{i} 1\n");
        let (status, text) = send("PUT", &gw.url(), &path, Some(&basic(&keys[0])), &body);
        assert_eq!(status, 202, "{text}");
    }
    let reads = |result: &str| {
        gw.own_value(&format!(
            "whisk_gateway_first_sight_reads_total{{result=\"{result}\"}}"
        ))
    };
    assert!(
        wait_until(Duration::from_secs(10), || reads("read") + reads("spaced")
            >= 20.0),
        "every new name is counted: read {}, spaced {}",
        reads("read"),
        reads("spaced")
    );
    assert_eq!(reads("read"), 1.0, "one listing of the shard, not twenty");
    assert_eq!(reads("spaced"), 19.0);
}
