//! Replicas in one consumer group on a real tansu broker: readiness does not depend on holding
//! a partition, and a rebalance in the middle of a load neither loses nor double-counts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Collector, activation, produce, sample, wait_for};
use whisk_testkit::{Pushgateway, Tansu};

fn replica_args(
    tansu: &Tansu,
    pgw: Option<&Pushgateway>,
    group: &str,
    instance: &str,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "--brokers",
        &tansu.bootstrap(),
        "--group-id",
        group,
        "--instance",
        instance,
        "--prune-after",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(pgw) = pgw {
        // A long interval leaves many applied-but-unpushed events at any rebalance: without
        // the push before revocation they would be counted by both owners.
        args.extend(
            ["--pushgateway-url", &pgw.url(), "--push-interval", "2s"]
                .iter()
                .map(|s| s.to_string()),
        );
    }
    args
}

fn ready(c: &Collector) -> bool {
    whisk_testkit::http_get(&c.url("/readyz")).is_ok()
}

#[test]
fn two_replicas_on_a_one_partition_topic_are_both_ready_within_30_s() {
    let tansu = Tansu::start().unwrap();
    // OpenWhisk creates `events` with a single partition.
    tansu.create_topic("events", 1).unwrap();
    let a = Collector::start(&replica_args(&tansu, None, "ready-1p", "a"));
    let b = Collector::start(&replica_args(&tansu, None, "ready-1p", "b"));
    let started = Instant::now();
    let both = wait_for(Duration::from_secs(30), || {
        (ready(&a) && ready(&b)).then_some(())
    });
    assert!(
        both.is_some(),
        "not both Ready within 30 s (a: {}, b: {})\n--- a:\n{}\n--- b:\n{}",
        ready(&a),
        ready(&b),
        a.log(),
        b.log()
    );
    eprintln!("both Ready after {:?}", started.elapsed());
    // Exactly one of them owns the partition; ownership is a metric, not readiness.
    let owned = wait_for(Duration::from_secs(30), || {
        let sum: f64 = [&a, &b]
            .iter()
            .filter_map(|c| sample(&c.metrics(), "whisk_collector_assigned_partitions"))
            .sum();
        (sum == 1.0).then_some(())
    });
    assert!(
        owned.is_some(),
        "assigned partitions: a {:?}, b {:?}",
        sample(&a.metrics(), "whisk_collector_assigned_partitions"),
        sample(&b.metrics(), "whisk_collector_assigned_partitions")
    );
    assert!(
        ready(&a) && ready(&b),
        "Ready must hold with the partition on one replica"
    );
}

/// Sum of every `openwhisk_action_activations_total` sample the platform groups hold.
fn platform_total(pgw: &Pushgateway) -> f64 {
    pgw.metrics_text()
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.starts_with("openwhisk_action_activations_total{")
                && l.contains(r#"job="openwhisk_platform""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn counter(c: &Collector, series: &str) -> f64 {
    sample(&c.metrics(), series).unwrap_or(0.0)
}

#[test]
fn a_third_replica_joining_mid_load_leaves_the_pushgateway_totals_exact() {
    let tansu = Tansu::start().unwrap();
    tansu.create_topic("events", 2).unwrap();
    let pgw = Pushgateway::start(&["--push.disable-consistency-check"]).unwrap();
    let group = "rebalance-3";
    let a = Collector::start(&replica_args(&tansu, Some(&pgw), group, "a"));
    let b = Collector::start(&replica_args(&tansu, Some(&pgw), group, "b"));
    wait_for(Duration::from_secs(60), || {
        (ready(&a) && ready(&b)).then_some(())
    })
    .unwrap_or_else(|| panic!("a and b not Ready\n{}\n{}", a.log(), b.log()));

    // The load: batches to both partitions until the third replica has joined and a few more
    // batches after, so the rebalance happens while events arrive.
    let produced = Arc::new(AtomicU64::new(0));
    let c_joined = Arc::new(AtomicBool::new(false));
    let load = {
        let (produced, c_joined, bootstrap) = (
            Arc::clone(&produced),
            Arc::clone(&c_joined),
            tansu.bootstrap(),
        );
        std::thread::spawn(move || {
            let batch: Vec<_> = (0..50)
                .map(|_| Some(activation("guest", "guest/load", r#","statusCode":0"#)))
                .collect();
            let mut after_join = 0;
            for i in 0..2000 {
                produce(&bootstrap, "events", i % 2, &batch);
                let _ = produced.fetch_add(batch.len() as u64, Ordering::SeqCst);
                if c_joined.load(Ordering::SeqCst) {
                    after_join += 1;
                    if after_join >= 20 {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // Join in the middle: once a and b have pushed part of the load.
    wait_for(Duration::from_secs(60), || {
        (platform_total(&pgw) >= 500.0).then_some(())
    })
    .unwrap_or_else(|| panic!("the load is not counted\n{}\n{}", a.log(), b.log()));
    let c = Collector::start(&replica_args(&tansu, Some(&pgw), group, "c"));
    wait_for(Duration::from_secs(60), || ready(&c).then_some(()))
        .unwrap_or_else(|| panic!("c not Ready\n{}", c.log()));
    c_joined.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let n = produced.load(Ordering::SeqCst);
    let replicas = [&a, &b, &c];

    // Every event is pushed by someone...
    let reached = wait_for(Duration::from_secs(90), || {
        (platform_total(&pgw) >= n as f64).then_some(())
    });
    assert!(
        reached.is_some(),
        "pushed {} of {n}\n--- a:\n{}\n--- c:\n{}",
        platform_total(&pgw),
        a.log(),
        c.log()
    );
    // ...and, once every replica has pushed twice more (so nothing is still on its way),
    // by exactly one replica.
    let pushes: Vec<f64> = replicas
        .iter()
        .map(|r| counter(r, r#"whisk_collector_pushes_total{result="ok"}"#))
        .collect();
    wait_for(Duration::from_secs(60), || {
        replicas
            .iter()
            .zip(&pushes)
            .all(|(r, p)| counter(r, r#"whisk_collector_pushes_total{result="ok"}"#) >= p + 2.0)
            .then_some(())
    })
    .expect("replicas keep pushing");
    assert_eq!(
        platform_total(&pgw),
        n as f64,
        "sum over the platform groups"
    );
    let revoked: f64 = [&a, &b]
        .iter()
        .map(|r| {
            counter(
                r,
                r#"whisk_collector_revocations_total{result="committed"}"#,
            )
        })
        .sum();
    assert!(
        revoked >= 1.0,
        "the join must have revoked partitions of a or b (pushed and committed first)"
    );
    let owned: f64 = replicas
        .iter()
        .map(|r| counter(r, "whisk_collector_assigned_partitions"))
        .sum();
    assert_eq!(owned, 2.0, "each partition has exactly one owner");
    eprintln!("N = {n}, revocations committed on a and b: {revoked}");
}
