//! The gateway on real services: the `whisk-gateway` binary, real Pushgateways (run with
//! `--push.disable-consistency-check`, as deployed) and the emulator's controller endpoint.
//! Needs `prometheus-pushgateway` on PATH (scripts/setup.sh).

mod common;

use std::time::Duration;

use common::*;
use whisk_gateway::Shards;
use whisk_testkit::wait_until;

const JOB: &str = "openwhisk_actions";

#[test]
fn a_forged_namespace_is_refused_and_nothing_is_stored() {
    let pgws = pushgateways(1);
    let (controller, keys) = controller(&["guest", "other"]);
    let gw = Gateway::with_controller(&[&pgws[0]], &controller, &[]);
    let guest = basic(&keys[0]);

    let forged = group(JOB, "c1", "other", "hello");
    let (status, text) = send(
        "PUT",
        &gw.url(),
        &forged,
        Some(&guest),
        &body("jobs", "counter", 1),
    );
    assert_eq!(status, 403, "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    assert!(text.contains("namespace `other`"), "{text}");
    let (status, _) = send("DELETE", &gw.url(), &forged, Some(&guest), "");
    assert_eq!(status, 403);

    // The guest's own group goes through; once it is stored, the forged one is still absent.
    let own = group(JOB, "c1", "guest", "hello");
    let (status, text) = send(
        "PUT",
        &gw.url(),
        &own,
        Some(&guest),
        &body("jobs", "counter", 1),
    );
    assert!(status == 200 || status == 202, "{status} {text}");
    wait_for_groups(&pgws[0], "namespace", "guest", 1);
    assert!(groups_with(&pgws[0], "namespace", "other").is_empty());

    // The guest's DELETE of its own group works.
    let (status, _) = send("DELETE", &gw.url(), &own, Some(&guest), "");
    assert_eq!(status, 202);
    wait_for_groups(&pgws[0], "namespace", "guest", 0);

    let forbidden = gw.own_value(
        "whisk_gateway_requests_total{method=\"PUT\",reason=\"forbidden_namespace\",result=\"rejected\"}",
    );
    assert_eq!(forbidden, 1.0);
    assert_eq!(gw.own_value("whisk_gateway_auth_cache_misses_total"), 1.0);
    assert!(gw.own_value("whisk_gateway_auth_cache_hits_total") >= 2.0);
}

#[test]
fn a_wrong_or_missing_key_is_unauthorized_and_nothing_is_stored() {
    let pgws = pushgateways(1);
    let (controller, keys) = controller(&["guest"]);
    let gw = Gateway::with_controller(&[&pgws[0]], &controller, &[]);
    let path = group(JOB, "c1", "guest", "hello");
    let uuid = keys[0].split(':').next().unwrap_or_default();
    for auth in [
        None,
        Some(basic(&format!("{uuid}:wrong"))),
        Some("Bearer token".to_string()),
        Some(basic("no-colon")),
    ] {
        let (status, text) = send(
            "PUT",
            &gw.url(),
            &path,
            auth.as_deref(),
            &body("jobs", "counter", 1),
        );
        assert_eq!(status, 401, "{auth:?}: {text}");
        assert_eq!(text.trim().lines().count(), 1);
    }
    // Only the well-formed wrong key reached the controller.
    assert_eq!(controller.requests(), 1);
    let sentinel = group(JOB, "c2", "guest", "hello");
    let (status, _) = send(
        "PUT",
        &gw.url(),
        &sentinel,
        Some(&basic(&keys[0])),
        &body("jobs", "counter", 1),
    );
    assert_eq!(status, 202);
    wait_for_groups(&pgws[0], "instance", "c2", 1);
    assert!(groups_with(&pgws[0], "instance", "c1").is_empty());
}

#[test]
fn the_platform_job_cannot_be_pushed_or_deleted_through_the_gateway() {
    let pgws = pushgateways(1);
    let pgw = &pgws[0];
    let (controller, keys) = controller(&["guest"]);
    let gw = Gateway::with_controller(&[pgw], &controller, &[]);
    let guest = basic(&keys[0]);

    // The collector's group, written directly.
    let platform = "# TYPE openwhisk_action_activations_total counter\n\
        openwhisk_action_activations_total{namespace=\"guest\",action=\"hello\"} 41\n";
    let (status, _) = send(
        "PUT",
        &pgw.url(),
        "/metrics/job/openwhisk_platform/instance/collector-0",
        None,
        platform,
    );
    assert_eq!(status, 202);
    wait_for_groups(pgw, "job", "openwhisk_platform", 1);

    let fake = "# TYPE fake_total counter\nfake_total 1\n";
    let sdk_shaped = group("openwhisk_platform", "collector-0", "guest", "hello");
    for (method, path, want) in [
        ("PUT", sdk_shaped.as_str(), 403),
        ("DELETE", sdk_shaped.as_str(), 403),
        (
            "PUT",
            "/metrics/job/openwhisk_platform/instance/collector-0",
            404,
        ),
        (
            "DELETE",
            "/metrics/job/openwhisk_platform/instance/collector-0",
            404,
        ),
        ("PUT", &group("other_job", "c", "guest", "hello"), 403),
    ] {
        let (status, text) = send(method, &gw.url(), path, Some(&guest), fake);
        assert_eq!(status, want, "{method} {path}: {text}");
        assert_eq!(text.trim().lines().count(), 1);
    }
    // A planted platform family inside an SDK group is refused too.
    let planted = "# TYPE openwhisk_action_activations_total counter\n\
        openwhisk_action_activations_total{namespace=\"guest\",action=\"hello\"} 1000\n";
    let (status, text) = send(
        "PUT",
        &gw.url(),
        &group(JOB, "c1", "guest", "hello"),
        Some(&guest),
        planted,
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("reserved"), "{text}");

    // Sentinel, then the platform group is intact and alone with its series.
    let (status, _) = send(
        "PUT",
        &gw.url(),
        &group(JOB, "c9", "guest", "hello"),
        Some(&guest),
        &body("jobs", "counter", 1),
    );
    assert_eq!(status, 202);
    wait_for_groups(pgw, "instance", "c9", 1);
    let platform_groups = groups_with(pgw, "job", "openwhisk_platform");
    assert_eq!(platform_groups.len(), 1);
    let text = pgw.metrics_text().unwrap();
    assert!(text.contains("openwhisk_action_activations_total{action=\"hello\",instance=\"collector-0\",job=\"openwhisk_platform\",namespace=\"guest\"} 41"), "{text}");
    assert!(!text.contains("fake_total"));
    assert!(!text.contains("} 1000"));
}

#[test]
fn a_type_clash_is_refused_with_409_and_every_pushgateway_stays_scrapeable() {
    let pgws = pushgateways(2);
    let refs: Vec<_> = pgws.iter().collect();
    let (controller, keys) = controller(&["guest", "shop"]);
    let gw = Gateway::with_controller(&refs, &controller, &[]);

    let a = group(JOB, "container-a", "guest", "counter-action");
    let (status, text) = send(
        "PUT",
        &gw.url(),
        &a,
        Some(&basic(&keys[0])),
        &body("jobs", "counter", 5),
    );
    assert_eq!(status, 202, "{text}");
    let b = group(JOB, "container-b", "shop", "gauge-action");
    let (status, text) = send(
        "PUT",
        &gw.url(),
        &b,
        Some(&basic(&keys[1])),
        &body("jobs", "gauge", 7),
    );
    assert_eq!(status, 409, "{text}");
    assert_eq!(
        text.trim(),
        "family `jobs` is a counter in another group; this push has it as a gauge"
    );

    // A second replica, started once A is stored, learns its type from the Pushgateways.
    let a_stored = wait_until(Duration::from_secs(20), || {
        pgws.iter()
            .any(|p| !groups_with(p, "instance", "container-a").is_empty())
    });
    assert!(a_stored);
    let replica = Gateway::with_controller(&refs, &controller, &[]);
    let (status, text) = send(
        "PUT",
        &replica.url(),
        &b,
        Some(&basic(&keys[1])),
        &body("jobs", "gauge", 7),
    );
    assert_eq!(status, 409, "{text}");
    assert!(replica.own_value("whisk_gateway_known_families") >= 2.0);
    // Neither refused push reached a Pushgateway (one without the consistency check would
    // have stored the clash): nothing is stored and every shard still renders.
    for p in &pgws {
        assert!(groups_with(p, "instance", "container-b").is_empty());
        assert!(p.metrics_text().is_ok(), "{} /metrics answers 200", p.url());
    }

    // B with a consistent body is fine; then every shard's /metrics answers 200 and holds A's.
    let (status, _) = send(
        "PUT",
        &gw.url(),
        &b,
        Some(&basic(&keys[1])),
        &body("jobs", "counter", 7),
    );
    assert_eq!(status, 202);
    let all_there = wait_until(Duration::from_secs(20), || {
        pgws.iter()
            .map(|p| groups_with(p, "job", JOB).len())
            .sum::<usize>()
            == 2
    });
    assert!(all_there);
    let mut scraped = String::new();
    for p in &pgws {
        scraped.push_str(
            &p.metrics_text()
                .expect("every Pushgateway's /metrics answers 200"),
        );
    }
    for instance in ["container-a", "container-b"] {
        let label = format!("instance=\"{instance}\"");
        assert!(
            scraped
                .lines()
                .any(|l| l.starts_with("jobs{") && l.contains(&label)),
            "{instance}: {scraped}"
        );
    }
    assert_eq!(
        gw.own_value("whisk_gateway_requests_total{method=\"PUT\",reason=\"type_conflict\",result=\"rejected\"}"),
        1.0
    );
}

#[test]
fn a_containers_next_push_is_judged_from_its_shape_stored_whole_and_still_type_checked() {
    let pgws = pushgateways(1);
    let refs = [&pgws[0]];
    let (controller, keys) = controller(&["guest"]);
    let gw = Gateway::with_controller(&refs, &controller, &["--family-resync-interval", "1s"]);
    let auth = basic(&keys[0]);
    let hits = || gw.own_value("whisk_gateway_validation_cache_hits_total");
    let misses = || gw.own_value("whisk_gateway_validation_cache_misses_total");

    // The first push is parsed; the next ones differ only in values: judged from the shape,
    // and stored with their own values.
    let a = group(JOB, "container-a", "guest", "counting");
    for (value, expected_hits) in [(1, 0.0), (2, 1.0), (3, 2.0)] {
        let (status, text) = send(
            "PUT",
            &gw.url(),
            &a,
            Some(&auth),
            &body("jobs", "counter", value),
        );
        assert_eq!(status, 202, "{text}");
        assert_eq!(hits(), expected_hits);
        let stored = wait_until(Duration::from_secs(20), || {
            sum_on(&refs, "jobs{", &["instance=\"container-a\""]) == value as f64
        });
        assert!(stored, "value {value} of container-a is stored");
    }
    assert_eq!(misses(), 1.0);
    assert_eq!(gw.own_value("whisk_gateway_validation_cache_entries"), 1.0);

    // `jobs` becomes a gauge in the store (pushed straight into the Pushgateway once the
    // counter's group is gone); after a rebuild of the family table, the counter body's known
    // shape still meets the type check.
    let (status, _) = send("DELETE", &gw.url(), &a, Some(&auth), "");
    assert_eq!(status, 202);
    wait_for_groups(&pgws[0], "instance", "container-a", 0);
    let direct = group(JOB, "container-b", "guest", "gauging");
    let (status, text) = send(
        "PUT",
        &pgws[0].url(),
        &direct,
        None,
        &body("jobs", "gauge", 9),
    );
    assert_eq!(status, 202, "{text}");
    wait_for_groups(&pgws[0], "instance", "container-b", 1);
    let resyncs = || gw.own_value("whisk_gateway_family_resyncs_total{result=\"ok\"}");
    let after = resyncs() + 2.0;
    assert!(wait_until(Duration::from_secs(20), || resyncs() >= after));
    let c = group(JOB, "container-c", "guest", "counting");
    let (status, text) = send(
        "PUT",
        &gw.url(),
        &c,
        Some(&auth),
        &body("jobs", "counter", 4),
    );
    assert_eq!(status, 409, "{text}");
    assert_eq!(hits(), 3.0, "the refused body was judged from its shape");
    assert!(groups_with(&pgws[0], "instance", "container-c").is_empty());
}

#[test]
fn groups_spread_over_three_shards_and_an_instance_stays_on_its_shard() {
    let pgws = pushgateways(3);
    let refs: Vec<_> = pgws.iter().collect();
    let (controller, keys) = controller(&["guest"]);
    let gw = Gateway::with_controller(&refs, &controller, &[]);
    let auth = basic(&keys[0]);
    let urls: Vec<String> = pgws.iter().map(|p| p.url()).collect();
    let shards = Shards::new(&urls);

    let instances: Vec<String> = (0..30).map(|i| format!("{:032x}", i * 7919)).collect();
    for round in 1..=2u64 {
        for id in &instances {
            let (status, text) = send(
                "PUT",
                &gw.url(),
                &group(JOB, id, "guest", "hello"),
                Some(&auth),
                &body("jobs", "counter", round),
            );
            assert_eq!(status, 202, "{text}");
        }
    }
    let mut expected = [0usize; 3];
    for id in &instances {
        expected[shards.pick(id)] += 1;
    }
    assert!(expected.iter().all(|n| *n > 0), "{expected:?}");
    for (i, p) in pgws.iter().enumerate() {
        wait_for_groups(p, "job", JOB, expected[i]);
        for id in &instances {
            let here = groups_with(p, "instance", id).len();
            assert_eq!(here, usize::from(shards.pick(id) == i), "{id} on shard {i}");
        }
    }
    // The second round replaced the first, on the same shard.
    let has_round_two = wait_until(Duration::from_secs(20), || {
        pgws.iter().all(|p| {
            let text = p.metrics_text().unwrap_or_default();
            text.lines()
                .filter(|l| l.starts_with("jobs{"))
                .all(|l| l.ends_with(" 2"))
        })
    });
    assert!(has_round_two);
}

#[test]
fn an_unreachable_or_failing_controller_is_503_and_pushes_succeed_after_it_returns() {
    let pgws = pushgateways(1);
    let (mut controller, keys) = controller(&["guest"]);
    let port = controller.port();
    let gw = Gateway::with_controller(&[&pgws[0]], &controller, &["--controller-timeout", "1s"]);
    let auth = basic(&keys[0]);
    let path = group(JOB, "c1", "guest", "hello");

    controller.set_failing(true);
    let (status, text) = send(
        "PUT",
        &gw.url(),
        &path,
        Some(&auth),
        &body("jobs", "counter", 1),
    );
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("503"), "{text}");

    controller.stop();
    let (status, text) = send(
        "PUT",
        &gw.url(),
        &path,
        Some(&auth),
        &body("jobs", "counter", 1),
    );
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("unreachable"), "{text}");
    assert!(groups_with(&pgws[0], "instance", "c1").is_empty());

    let back = whisk_emulator::controller::Controller::start_on(
        port,
        &[(keys[0].clone(), vec!["guest".to_string()])],
    )
    .expect("the controller comes back on its port");
    let (status, text) = send(
        "PUT",
        &gw.url(),
        &path,
        Some(&auth),
        &body("jobs", "counter", 2),
    );
    assert_eq!(status, 202, "{text}");
    wait_for_groups(&pgws[0], "instance", "c1", 1);
    assert_eq!(back.requests(), 1);
    assert_eq!(
        gw.own_value("whisk_gateway_requests_total{method=\"PUT\",reason=\"controller_unavailable\",result=\"failed\"}"),
        2.0
    );
}

#[test]
fn invalid_bodies_are_400_with_a_one_line_reason_and_nothing_is_stored() {
    let pgws = pushgateways(1);
    let (controller, keys) = controller(&["guest"]);
    let gw = Gateway::with_controller(
        &[&pgws[0]],
        &controller,
        &["--max-body-bytes", "2000", "--max-series-per-group", "10"],
    );
    let auth = basic(&keys[0]);
    let many: String = (0..11).map(|i| format!("s{{i=\"{i}\"}} 1\n")).collect();
    let big = format!("# HELP x {}\nx 1\n", "h".repeat(3000));
    let cases = [
        ("push_time_seconds 1\n".to_string(), "reserved"),
        ("go_goroutines 1\n".to_string(), "reserved"),
        ("labels 1\n".to_string(), "reserved"),
        ("jobs{namespace=\"other\"} 1\n".to_string(), "grouping key"),
        ("jobs{instance=\"x\"} 1\n".to_string(), "grouping key"),
        ("jobs 1\r\n".to_string(), "malformed"),
        ("jobs{a=\"1\" 1\n".to_string(), "malformed"),
        (many, "--max-series-per-group"),
        (big, "--max-body-bytes"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = group(JOB, &format!("bad-{i}"), "guest", "hello");
        let (status, answer) = send("PUT", &gw.url(), &path, Some(&auth), text);
        assert_eq!(status, 400, "{text:?}: {answer}");
        assert_eq!(answer.trim_end().lines().count(), 1, "{answer}");
        assert!(answer.contains(want), "{text:?}: {answer}");
    }
    let (status, _) = send(
        "PUT",
        &gw.url(),
        &group(JOB, "good", "guest", "hello"),
        Some(&auth),
        &body("jobs", "counter", 1),
    );
    assert_eq!(status, 202);
    wait_for_groups(&pgws[0], "job", JOB, 1);
    assert_eq!(groups_with(&pgws[0], "instance", "good").len(), 1);
    // The refused bodies were sent to the Pushgateway but for their last byte while they were
    // validated (most would be accepted by a Pushgateway without consistency check); the
    // reset connections left it with truncated bodies, and it stored none of them.
    assert_eq!(
        groups_with(&pgws[0], "job", JOB).len(),
        1,
        "only the valid push is stored"
    );
    assert!(pgws[0].metrics_text().is_ok());
}

#[test]
fn an_empty_instance_namespace_or_action_is_400_and_nothing_is_stored() {
    let pgws = pushgateways(1);
    let (controller, keys) = controller(&["guest"]);
    let gw = Gateway::with_controller(&[&pgws[0]], &controller, &[]);
    let auth = basic(&keys[0]);
    for (instance, namespace, action) in [("", "guest", "a"), ("c1", "", "a"), ("c1", "guest", "")]
    {
        let path = group(JOB, instance, namespace, action);
        let (status, text) = send(
            "PUT",
            &gw.url(),
            &path,
            Some(&auth),
            &body("jobs", "counter", 1),
        );
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains("must not be empty"), "{path}: {text}");
    }
    // The same push with every value set is stored, and is the only group.
    let (status, text) = send(
        "PUT",
        &gw.url(),
        &group(JOB, "c1", "guest", "a"),
        Some(&auth),
        &body("jobs", "counter", 1),
    );
    assert_eq!(status, 202, "{text}");
    wait_for_groups(&pgws[0], "job", JOB, 1);
    assert_eq!(groups_with(&pgws[0], "job", JOB).len(), 1);
}

#[test]
fn paths_and_methods_outside_the_sdk_api_are_404_or_405() {
    let pgws = pushgateways(1);
    let (controller, keys) = controller(&["guest"]);
    let gw = Gateway::with_controller(&[&pgws[0]], &controller, &[]);
    let auth = basic(&keys[0]);
    let sdk = group(JOB, "c1", "guest", "hello");
    for (method, path, want) in [
        ("GET", sdk.as_str(), 405),
        ("POST", sdk.as_str(), 405),
        ("PUT", "/api/v1/admin/wipe", 404),
        ("GET", "/api/v1/metrics", 404),
        ("PUT", "/metrics/job/openwhisk_actions/instance/c1", 404),
        (
            "PUT",
            "/metrics/job/openwhisk_actions/instance/c1/namespace/guest/action/a/extra/x",
            404,
        ),
        (
            "PUT",
            "/metrics/job/openwhisk_actions/namespace/guest/instance/c1/action/a",
            404,
        ),
    ] {
        let (status, text) = send(method, &gw.url(), path, Some(&auth), "x 1\n");
        assert_eq!(status, want, "{method} {path}: {text}");
    }
    // Plain segments are read like @base64 ones.
    let (status, text) = send(
        "PUT",
        &gw.url(),
        "/metrics/job/openwhisk_actions/instance/c1/namespace/guest/action/hello",
        Some(&auth),
        &body("jobs", "counter", 1),
    );
    assert_eq!(status, 202, "{text}");
    wait_for_groups(&pgws[0], "instance", "c1", 1);
    let healthz = send("GET", &gw.url(), "/healthz", None, "");
    assert_eq!(healthz.0, 200);
}

#[test]
fn auth_none_is_loud_and_bad_configuration_exits_2() {
    let pgws = pushgateways(1);
    let mut args = shard_args(&[&pgws[0]]);
    args.extend(["--auth".to_string(), "none".to_string()]);
    let gw = Gateway::start(&args);
    assert_eq!(gw.own_value("whisk_gateway_auth_disabled"), 1.0);
    assert!(gw.process.log_tail().contains("AUTHENTICATION IS OFF"));
    let (status, _) = send(
        "PUT",
        &gw.url(),
        &group(JOB, "c1", "anyone", "a"),
        None,
        &body("jobs", "counter", 1),
    );
    assert_eq!(status, 202);

    let bin = env!("CARGO_BIN_EXE_whisk-gateway");
    for args in [
        vec![],
        vec!["--pushgateway-url", "http://127.0.0.1:1"],
        vec!["--pushgateway-url", "nota url", "--auth", "none"],
    ] {
        let out = std::process::Command::new(bin)
            .args(&args)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
    let help = std::process::Command::new(bin)
        .arg("--help")
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--pushgateway-url",
        "--openwhisk-api-host",
        "--auth ",
        "--auth-cache-ttl",
        "--max-body-bytes",
        "--max-series-per-group",
        "--validation-cache-bytes",
        "--job",
        "WHISK_GATEWAY_PUSHGATEWAY_URL",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn sigterm_stops_the_gateway_gracefully() {
    let pgws = pushgateways(1);
    let mut args = shard_args(&[&pgws[0]]);
    args.extend(["--auth".to_string(), "none".to_string()]);
    let mut gw = Gateway::start(&args);
    let pid = gw.process.pid().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    assert!(wait_until(Duration::from_secs(10), || !gw
        .process
        .is_running()));
    assert!(gw.process.log_tail().contains("SIGTERM received"));
}
