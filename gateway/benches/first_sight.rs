//! What first sight costs a push: the latency of a push whose family names the replica knows
//! against one carrying a family name new to it (which first reads the target shard's
//! `/api/v1/metrics`), through one `whisk-gateway` (`--auth none`, no resync during the run)
//! into one real Pushgateway holding `G` SDK-sized groups (`WHISK_BENCH_GROUPS`, default
//! `100,1000,5000`). The two kinds of push alternate, one each, `WHISK_BENCH_PUSHES` (40) times
//! per size, on one keep-alive connection. Prints a table: median and p90 of each kind, the
//! difference (the cost of first sight for that push), and the listing's size.
//!
//! ```text
//! cargo bench -p whisk-gateway --profile dev --bench first_sight
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::time::{Duration, Instant};

use whisk_testkit::{Pushgateway, ServiceProcess, free_port, http_get};

mod common;
use common::{RawClient, Target, gateway_bin};

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

/// An SDK-sized body: 3 + 18 + 6 series, like the built-ins' activity part.
fn sdk_like(extra_family: Option<&str>) -> String {
    let mut b = String::from("# TYPE whisk_activations_total counter\n");
    for s in ["success", "application_error", "developer_error"] {
        b.push_str(&format!("whisk_activations_total{{status=\"{s}\"}} 3\n"));
    }
    b.push_str("# TYPE whisk_activation_duration_seconds histogram\n");
    for le in whisk_grouping::TIME_BUCKETS {
        b.push_str(&format!(
            "whisk_activation_duration_seconds_bucket{{le=\"{le}\"}} 1\n"
        ));
    }
    b.push_str("whisk_activation_duration_seconds_bucket{le=\"+Inf\"} 1\n");
    b.push_str("whisk_activation_duration_seconds_sum 0.2\n");
    b.push_str("whisk_activation_duration_seconds_count 1\n");
    for g in [
        "whisk_cold_start_seconds",
        "whisk_container_start_time_seconds",
        "whisk_last_activation_time_seconds",
        "whisk_container_memory_bytes",
        "whisk_container_memory_limit_bytes",
        "whisk_last_push_duration_seconds",
    ] {
        b.push_str(&format!("# TYPE {g} gauge\n{g} 1\n"));
    }
    if let Some(f) = extra_family {
        b.push_str(&format!("# TYPE {f} counter\n{f}{{region=\"eu\"}} 1\n"));
    }
    b
}

fn path(instance: &str) -> String {
    whisk_grouping::GroupingKey::new("openwhisk_actions")
        .with("instance", instance)
        .with("namespace", "guest")
        .with("action", "bench")
        .path()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let sizes = env_list("WHISK_BENCH_GROUPS", &[100, 1000, 5000]);
    let pushes = env_list("WHISK_BENCH_PUSHES", &[40])[0];
    println!("first sight: latency of a push through one gateway, known names vs one new name");
    println!(
        "| groups stored | listing bytes | known: median ms | p90 | new name: median ms | p90 | cost (median) ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for groups in sizes {
        let pgw = Pushgateway::start(&["--push.disable-consistency-check"]).expect("Pushgateway");
        let mut direct = RawClient::new(Target::of(&pgw.url()));
        let body = sdk_like(None);
        for i in 0..groups {
            let (status, _) = direct
                .put(&path(&format!("filler-{i}")), "x", body.as_bytes())
                .expect("fill");
            assert_eq!(status, 202);
        }
        let listing = format!("{}/api/v1/metrics", pgw.url());
        let filled = whisk_testkit::wait_until(Duration::from_secs(300), || {
            http_get(&listing)
                .map(|t| t.matches("\"push_time_seconds\"").count() >= groups)
                .unwrap_or(false)
        });
        assert!(filled, "the Pushgateway holds {groups} groups");
        let listing_bytes = http_get(&listing).map(|t| t.len()).unwrap_or(0);

        let port = free_port();
        let args: Vec<String> = [
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--pushgateway-url",
            &pgw.url(),
            "--auth",
            "none",
            "--family-resync-interval",
            "1h",
            // The worst case: every new name reads (the deployed default spaces reads out).
            "--first-sight-min-interval",
            "0s",
            "--log-level",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut gw = ServiceProcess::spawn("whisk-gateway", &gateway_bin(), &args, "cargo build")
            .expect("gateway starts");
        let ready = format!("http://127.0.0.1:{port}/readyz");
        gw.wait_ready(Duration::from_secs(60), || http_get(&ready).is_ok())
            .expect("gateway ready");
        let mut client = RawClient::new(Target::of(&format!("http://127.0.0.1:{port}")));
        let (mut known, mut new) = (Vec::new(), Vec::new());
        for k in 0..pushes {
            let t = Instant::now();
            let (s, _) = client
                .put(&path("known"), "x", body.as_bytes())
                .expect("push");
            known.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(s, 202);
            let fresh = sdk_like(Some(&format!("bench_new_{k}_total")));
            let t = Instant::now();
            let (s, _) = client
                .put(&path("new"), "x", fresh.as_bytes())
                .expect("push");
            new.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(s, 202);
        }
        known.sort_by(f64::total_cmp);
        new.sort_by(f64::total_cmp);
        println!(
            "| {groups} | {listing_bytes} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            quantile(&known, 0.5),
            quantile(&known, 0.9),
            quantile(&new, 0.5),
            quantile(&new, 0.9),
            quantile(&new, 0.5) - quantile(&known, 0.5)
        );
        drop(gw);
        drop(pgw);
    }
}
