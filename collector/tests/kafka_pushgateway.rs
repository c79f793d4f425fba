//! End to end on real services: a tansu broker and a Debian Pushgateway, started by the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Collector, activation, metric, produce, sample, wait_for};
use whisk_testkit::{Pushgateway, Tansu};

/// Names promtool's linter flags only because user-events chose them (kept for dashboard
/// compatibility); anything else it reports fails the test.
const ACCEPTED_LINT: &[(&str, &str)] = &[
    ("openwhisk_action_coldStarts_total", "camelCase"),
    ("openwhisk_action_waitTime_seconds", "camelCase"),
    ("openwhisk_action_initTime_seconds", "camelCase"),
    ("openwhisk_action_status", "_total"),
    ("openwhisk_action_status_code", "_total"),
    // "GB-seconds" is the unit serverless platforms bill in; the name is fixed in docs/design.md.
    ("openwhisk_action_gb_seconds_total", "abbreviated units"),
];

type Messages = Vec<Option<Vec<u8>>>;

/// One message of each kind, malformed ones between valid ones (partition 0, partition 1).
fn mix() -> (Messages, Messages) {
    let p0 = vec![
        Some(activation("guest", "guest/hello", r#","statusCode":0,"duration":150,"waitTime":20,"initTime":0,"size":100"#)),
        Some(b"\xff\xfe not utf8".to_vec()),
        Some(activation("guest", "guest/hello", r#","statusCode":0,"duration":700,"waitTime":5,"initTime":400"#)),
        Some(b"this is not json".to_vec()),
        Some(activation("guest", "guest/hello", r#","statusCode":1,"duration":20,"waitTime":1,"initTime":0,"userDefinedStatusCode":"404""#)),
        None,
        Some(activation("alice", "shared/pkg/act", r#","statusCode":2,"duration":30000,"waitTime":10"#)),
        Some(br#"{"body":{"name":"guest/x","statusCode":0},"eventType":"Activation","namespace":"guest"}"#.to_vec()),
    ];
    let p1 = vec![
        Some(metric("guest", "controller0", "ConcurrentRateLimit", 1)),
        Some(br#"{"body":{"name":"a/b","statusCode":0,"kind":"k"},"eventType":"Trigger","namespace":"n"}"#.to_vec()),
        Some(metric("alice", "controller1", "TimedRateLimit", 1)),
        Some(metric("guest", "controller0", "Mystery", 1)),
        Some(metric("guest", "controller0", "ConcurrentInvocations", 3)),
        // docs/metrics.md example A, pre-2020 schema with boolean causedBy
        Some(br#"{"body":{"statusCode":0,"duration":3,"name":"whisk.system/invokerHealthTestAction0","waitTime":583915671,"conductor":false,"kind":"nodejs:6","initTime":0,"memory":256,"size":463,"causedBy":false},"eventType":"Activation","source":"invoker0","subject":"whisk.system","timestamp":1524476122676,"userId":"d0888ad5-5a92-435e-888a-d55a92935e54","namespace":"whisk.system"}"#.to_vec()),
    ];
    (p0, p1)
}

fn collector_args(tansu: &Tansu, pgw: &Pushgateway, group: &str, instance: &str) -> Vec<String> {
    [
        "--brokers",
        &tansu.bootstrap(),
        "--group-id",
        group,
        "--pushgateway-url",
        &pgw.url(),
        "--push-interval",
        "500ms",
        "--instance",
        instance,
        "--prune-after",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn counts_known_mix_on_metrics_and_pushgateway_skipping_malformed() {
    let tansu = Tansu::start().unwrap();
    tansu.create_topic("events", 2).unwrap();
    let pgw = Pushgateway::start(&[]).unwrap();
    let (p0, p1) = mix();
    produce(&tansu.bootstrap(), "events", 0, &p0);
    produce(&tansu.bootstrap(), "events", 1, &p1);

    let collector = Collector::start(&collector_args(&tansu, &pgw, "it-mix", "replica-1"));
    let counted = wait_for(Duration::from_secs(60), || {
        let t = collector.metrics();
        let done = sample(&t, r#"whisk_collector_events_total{type="activation"}"#) == Some(5.0)
            && sample(&t, r#"whisk_collector_events_total{type="metric"}"#) == Some(3.0)
            && sample(
                &t,
                r#"whisk_collector_invalid_events_total{reason="schema"}"#,
            ) == Some(1.0)
            && sample(
                &t,
                r#"whisk_collector_invalid_events_total{reason="unknown_metric_name"}"#,
            ) == Some(1.0);
        done.then_some(t)
    })
    .unwrap_or_else(|| {
        panic!(
            "collector never counted the mix:\n{}\n{}",
            collector.metrics(),
            collector.log()
        )
    });
    // One answer renders the platform families before the collector's own counters, so the
    // answer whose counters reached the totals may predate the last events' series: a render
    // started after it holds every counted event.
    let text = collector.metrics();
    for counter in [
        r#"whisk_collector_events_total{type="activation"}"#,
        r#"whisk_collector_events_total{type="metric"}"#,
    ] {
        assert_eq!(
            sample(&text, counter),
            sample(&counted, counter),
            "{counter}"
        );
    }

    let g = r#"namespace="guest",initiator="guest",action="hello""#;
    let expect = [
        (format!(r#"openwhisk_action_activations_total{{{g},kind="nodejs:20",memory="256"}}"#), 3.0),
        (format!("openwhisk_action_coldStarts_total{{{g}}}"), 1.0),
        (format!(r#"openwhisk_action_status{{{g},status="success"}}"#), 2.0),
        (format!(r#"openwhisk_action_status{{{g},status="application_error"}}"#), 1.0),
        (format!(r#"openwhisk_action_status_code{{{g},status_code="404"}}"#), 1.0),
        (format!(r#"openwhisk_action_waitTime_seconds_bucket{{{g},le="0.005"}}"#), 2.0),
        (format!(r#"openwhisk_action_waitTime_seconds_bucket{{{g},le="0.025"}}"#), 3.0),
        (format!(r#"openwhisk_action_duration_seconds_bucket{{{g},le="0.25"}}"#), 2.0),
        (format!(r#"openwhisk_action_duration_seconds_count{{{g}}}"#), 3.0),
        (format!(r#"openwhisk_action_initTime_seconds_bucket{{{g},le="0.5"}}"#), 1.0),
        (format!(r#"openwhisk_action_response_size_bytes_bucket{{{g},le="256"}}"#), 1.0),
        (format!(r#"openwhisk_action_response_size_bytes_count{{{g}}}"#), 1.0),
        (format!("openwhisk_action_memory{{{g}}}"), 256.0),
        (
            r#"openwhisk_action_status{namespace="shared",initiator="alice",action="pkg/act",status="action_developer_error"}"#.to_string(),
            1.0,
        ),
        (
            r#"openwhisk_action_duration_seconds_bucket{namespace="shared",initiator="alice",action="pkg/act",le="30"}"#.to_string(),
            1.0,
        ),
        (
            r#"openwhisk_action_activations_total{namespace="whisk.system",initiator="whisk.system",action="invokerHealthTestAction0",kind="nodejs:6",memory="256"}"#.to_string(),
            1.0,
        ),
        (r#"openwhisk_action_limit_concurrent_total{namespace="guest"}"#.to_string(), 1.0),
        (r#"openwhisk_action_limit_timed_total{namespace="alice"}"#.to_string(), 1.0),
        (
            r#"openwhisk_namespace_concurrent_invocations{namespace="guest",controller="controller0"}"#.to_string(),
            3.0,
        ),
    ];
    for (series, value) in &expect {
        assert_eq!(sample(&text, series), Some(*value), "{series} in\n{text}");
    }
    for reason in [
        "not_utf8",
        "not_json",
        "schema",
        "unknown_event_type",
        "unknown_metric_name",
        "empty",
    ] {
        let series = format!(r#"whisk_collector_invalid_events_total{{reason="{reason}"}}"#);
        assert_eq!(sample(&text, &series), Some(1.0), "{series}");
    }
    assert_eq!(
        sample(&text, "whisk_collector_last_event_timestamp_seconds"),
        Some(1_700_000_001.0)
    );
    assert_eq!(
        sample(&text, "whisk_collector_assigned_partitions"),
        Some(2.0)
    );
    assert!(whisk_testkit::http_get(&collector.url("/readyz")).is_ok());
    assert_eq!(
        whisk_testkit::http_get(&collector.url("/healthz")).unwrap(),
        "ok\n"
    );
    let log = collector.log();
    assert!(
        log.contains("partition=0") && log.contains("offset=1"),
        "invalid events are logged with partition/offset:\n{log}"
    );

    // The Pushgateway group of this replica holds the same values, and only openwhisk_* families.
    let pushed = wait_for(Duration::from_secs(20), || {
        let t = pgw.metrics_text().ok()?;
        let line = r#"openwhisk_action_activations_total{action="hello",initiator="guest",instance="replica-1",job="openwhisk_platform",kind="nodejs:20",memory="256",namespace="guest"}"#;
        (sample(&t, line) == Some(3.0)).then_some(t)
    })
    .unwrap_or_else(|| panic!("group never pushed:\n{}\n{}", pgw.metrics_text().unwrap_or_default(), collector.log()));
    for (series, value) in [
        (
            r#"openwhisk_action_limit_timed_total{instance="replica-1",job="openwhisk_platform",namespace="alice"}"#,
            1.0,
        ),
        (
            r#"openwhisk_namespace_concurrent_invocations{controller="controller0",instance="replica-1",job="openwhisk_platform",namespace="guest"}"#,
            3.0,
        ),
        (
            r#"openwhisk_action_status{action="pkg/act",initiator="alice",instance="replica-1",job="openwhisk_platform",namespace="shared",status="action_developer_error"}"#,
            1.0,
        ),
    ] {
        assert_eq!(
            sample(&pushed, series),
            Some(value),
            "{series} in\n{pushed}"
        );
    }
    assert!(
        !pushed.contains("whisk_collector_"),
        "own metrics must not be pushed"
    );
    // Exactly one group of the platform job: this replica's (other tests' SDK pushers may
    // reuse a freed port and add groups of their own job).
    let groups = pgw.groups().unwrap();
    let ours: Vec<_> = groups
        .iter()
        .filter(|g| g["labels"]["job"] == "openwhisk_platform")
        .collect();
    assert_eq!(ours.len(), 1, "{groups:?}");
    assert_eq!(ours[0]["labels"]["instance"], "replica-1");

    check_with_promtool(&text);
}

/// Runs `promtool check metrics` on the exposition and fails on any finding not listed in
/// [`ACCEPTED_LINT`].
fn check_with_promtool(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed with Debian's prometheus package");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut flagged = Vec::new();
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        let accepted = ACCEPTED_LINT
            .iter()
            .any(|(name, what)| line.starts_with(&format!("{name} ")) && line.contains(what));
        assert!(
            accepted,
            "promtool finding not accepted: {line}\nfull report:\n{report}"
        );
        flagged.push(line.to_string());
    }
    // Every accepted finding is really reported (the list is not stale).
    for (name, _) in ACCEPTED_LINT {
        assert!(
            flagged.iter().any(|l| l.starts_with(&format!("{name} "))),
            "{name} not flagged:\n{report}"
        );
    }
}

#[test]
fn resumes_after_committed_offsets_when_restarted_gracefully() {
    let tansu = Tansu::start().unwrap();
    tansu.create_topic("events", 1).unwrap();
    let pgw = Pushgateway::start(&[]).unwrap();
    let first: Vec<_> = (0..20)
        .map(|i| {
            Some(activation(
                "guest",
                &format!("guest/a{}", i % 3),
                r#","statusCode":0"#,
            ))
        })
        .collect();
    produce(&tansu.bootstrap(), "events", 0, &first);
    let args = collector_args(&tansu, &pgw, "it-restart", "replica-r");
    // Kept on shutdown here, to read what the final push held.
    let mut keep = args.clone();
    keep.extend(["--delete-on-shutdown".to_string(), "false".to_string()]);

    let mut c1 = Collector::start(&keep);
    wait_for(Duration::from_secs(60), || {
        (sample(
            &c1.metrics(),
            r#"whisk_collector_events_total{type="activation"}"#,
        ) == Some(20.0))
        .then_some(())
    })
    .unwrap_or_else(|| panic!("first run never counted 20:\n{}", c1.log()));
    let start = Instant::now();
    let status = c1
        .terminate(Duration::from_secs(10))
        .expect("exits within 10 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}\n{}", c1.log());
    assert!(start.elapsed() < Duration::from_secs(10));
    // The final push holds everything consumed before the exit.
    let t = pgw.metrics_text().unwrap();
    let total: f64 = t
        .lines()
        .filter(|l| {
            l.starts_with("openwhisk_action_activations_total{")
                && l.contains(r#"instance="replica-r""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(total, 20.0, "{t}");

    let second: Vec<_> = (0..7)
        .map(|_| Some(activation("guest", "guest/late", r#","statusCode":0"#)))
        .collect();
    produce(&tansu.bootstrap(), "events", 0, &second);
    let mut c2 = Collector::start(&args);
    let text = wait_for(Duration::from_secs(60), || {
        let t = c2.metrics();
        (sample(&t, r#"whisk_collector_events_total{type="activation"}"#) == Some(7.0)).then_some(t)
    })
    .unwrap_or_else(|| {
        panic!(
            "second run did not resume after the commit:\n{}\n{}",
            c2.metrics(),
            c2.log()
        )
    });
    // Nothing before the committed offset is replayed: one more event, produced after, is
    // counted, and by then (one partition, read in order) a replay would have been too. So the
    // count is the 7 plus that one, and no event of the first run shows up.
    produce(
        &tansu.bootstrap(),
        "events",
        0,
        &[Some(activation(
            "guest",
            "guest/marker",
            r#","statusCode":0"#,
        ))],
    );
    let again = wait_for(Duration::from_secs(60), || {
        let t = c2.metrics();
        let counted = sample(&t, r#"whisk_collector_events_total{type="activation"}"#);
        (t.contains(r#"action="marker""#) && counted.is_some_and(|n| n >= 8.0)).then_some(t)
    })
    .unwrap_or_else(|| panic!("the marker event was never counted:\n{}", c2.log()));
    assert_eq!(
        sample(&again, r#"whisk_collector_events_total{type="activation"}"#),
        Some(7.0 + 1.0),
        "{text}"
    );
    assert!(!again.contains(r#"action="a0""#));

    // By default a graceful stop deletes the replica's own group (after its final push).
    let status = c2.terminate(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{}", c2.log());
    let own_group = || {
        pgw.groups().unwrap().iter().any(|g| {
            g["labels"]["job"] == "openwhisk_platform" && g["labels"]["instance"] == "replica-r"
        })
    };
    // The Pushgateway applies a DELETE asynchronously: wait (bounded) for it.
    assert!(
        whisk_testkit::wait_until(Duration::from_secs(5), || !own_group()),
        "own group left behind\n{}",
        c2.log()
    );
}
