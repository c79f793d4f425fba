//! The whole push path with real authentication: the real `hello` example action (built on the
//! SDK, `WHISK_METRICS_AUTH=api-key`), driven by the emulator's invoker, which hands each
//! activation its namespace's API key as OpenWhisk does; the emulator's controller endpoint;
//! `whisk-gateway`; real Pushgateways. Needs the actions built (`cargo build -p whisk-actions`)
//! and `prometheus-pushgateway` on PATH.

#![allow(clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use whisk_emulator::{ActionSpec, Invocation, Invoker, InvokerConfig, MemorySink};
use whisk_testkit::action_exec;
use whisk_testkit::wait_until;

fn invoker(gateway: &Gateway, keys: &[(&str, &str)], actions: &[&str]) -> Invoker {
    let mut config = InvokerConfig::new()
        .with_pushgateway_url(&gateway.url())
        .with_init_param("WHISK_METRICS_AUTH", "api-key");
    for (ns, key) in keys {
        config = config.with_api_key(ns, key);
    }
    let specs = actions
        .iter()
        .map(|a| ActionSpec::new(a, action_exec("hello")))
        .collect();
    Invoker::new(config, Arc::new(MemorySink::default()), specs).expect("invoker starts")
}

fn greet(invoker: &Invoker, action: &str, name: &str) {
    let answer = invoker
        .invoke(action, json!({ "name": name }), Instant::now())
        .expect("the action runs");
    match answer {
        Invocation::Completed(a) => {
            assert_eq!(
                a.result["greeting"],
                format!("Hello, {name}!"),
                "{:?}",
                a.result
            );
        }
        other => panic!("not completed: {other:?}"),
    }
}

#[test]
fn an_action_pushes_through_the_gateway_with_its_namespace_key_and_the_counts_arrive() {
    let pgws = pushgateways(3);
    let refs: Vec<_> = pgws.iter().collect();
    let (controller, keys) = controller(&["guest", "shop"]);
    let gw = Gateway::with_controller(&refs, &controller, &[]);
    let mut inv = invoker(
        &gw,
        &[("guest", &keys[0]), ("shop", &keys[1])],
        &["/guest/hello", "/shop/hello"],
    );
    for i in 0..5 {
        greet(&inv, "guest/hello", &format!("g{i}"));
    }
    for i in 0..3 {
        greet(&inv, "shop/hello", &format!("s{i}"));
    }
    let counted = |ns: &str| {
        sum_on(
            &refs,
            "whisk_activations_total{",
            &[
                &format!("namespace=\"{ns}\""),
                "status=\"success\"",
                "action=\"hello\"",
            ],
        )
    };
    let arrived = wait_until(Duration::from_secs(30), || {
        counted("guest") == 5.0 && counted("shop") == 3.0
    });
    assert!(
        arrived,
        "guest {} shop {}",
        counted("guest"),
        counted("shop")
    );
    assert!(
        gw.own_value(
            "whisk_gateway_requests_total{method=\"PUT\",reason=\"ok\",result=\"forwarded\"}"
        ) >= 8.0
    );
    inv.shutdown();
}

#[test]
fn an_action_given_another_namespaces_key_is_refused_and_its_answer_is_unchanged() {
    let pgws = pushgateways(1);
    let (controller, keys) = controller(&["guest", "other"]);
    let gw = Gateway::with_controller(&[&pgws[0]], &controller, &[]);
    // "other"'s activations carry the guest's key: every push names namespace "other".
    let mut inv = invoker(
        &gw,
        &[("other", &keys[0]), ("guest", &keys[0])],
        &["/other/hello", "/guest/hello"],
    );
    for i in 0..3 {
        greet(&inv, "other/hello", &format!("o{i}"));
    }
    // The SDK backs off after a refusal, so at least the first push was refused.
    let refused = wait_until(Duration::from_secs(30), || {
        gw.own_value(
            "whisk_gateway_requests_total{method=\"PUT\",reason=\"forbidden_namespace\",result=\"rejected\"}",
        ) >= 1.0
    });
    assert!(refused);
    // A legitimate push afterwards lands; the forged namespace never did.
    greet(&inv, "guest/hello", "g");
    wait_for_groups(&pgws[0], "namespace", "guest", 1);
    assert!(groups_with(&pgws[0], "namespace", "other").is_empty());
    inv.shutdown();
}

#[test]
fn with_the_controller_down_answers_are_unchanged_and_the_counts_arrive_after_recovery() {
    let pgws = pushgateways(1);
    let (mut controller, keys) = controller(&["guest"]);
    let port = controller.port();
    let gw = Gateway::with_controller(&[&pgws[0]], &controller, &["--controller-timeout", "1s"]);
    let mut inv = invoker(&gw, &[("guest", &keys[0])], &["/guest/hello"]);
    controller.stop();
    for i in 0..3 {
        greet(&inv, "guest/hello", &format!("d{i}"));
    }
    // The SDK backs off after a failure, so at least the first push failed.
    let failed = wait_until(Duration::from_secs(30), || {
        gw.own_value(
            "whisk_gateway_requests_total{method=\"PUT\",reason=\"controller_unavailable\",result=\"failed\"}",
        ) >= 1.0
    });
    assert!(failed);
    assert!(groups_with(&pgws[0], "namespace", "guest").is_empty());

    let _back = whisk_emulator::controller::Controller::start_on(
        port,
        &[(keys[0].clone(), vec!["guest".to_string()])],
    )
    .expect("the controller comes back on its port");
    // Activations go on; once the SDK's back-off (1 s doubling) has passed, the next push
    // carries every activation so far, the ones during the outage included.
    let mut served = 3.0;
    let mut arrived = false;
    for i in 0..40 {
        greet(&inv, "guest/hello", &format!("after{i}"));
        served += 1.0;
        arrived = wait_until(Duration::from_secs(1), || {
            sum_on(
                &[&pgws[0]],
                "whisk_activations_total{",
                &["namespace=\"guest\"", "status=\"success\""],
            ) == served
        });
        if arrived {
            break;
        }
    }
    assert!(
        arrived,
        "the SDK kept its counts and pushed all {served} after recovery"
    );
    inv.shutdown();
}

#[test]
fn a_paused_container_whose_idle_connection_the_gateway_closed_pushes_on_its_next_activation() {
    let pgws = pushgateways(1);
    let (controller, keys) = controller(&["guest"]);
    let gw = Gateway::with_controller(&[&pgws[0]], &controller, &["--idle-timeout", "1s"]);
    // A push timeout far above the SDK's 250 ms, and a pause grace of 500 ms instead of 50: on a
    // loaded machine a slow push would fail for its time, or be cut by the freeze (the SDK's
    // tests cover that), not for the closed connection this is about.
    let config = InvokerConfig::new()
        .with_pause_grace(Duration::from_millis(500))
        .with_pushgateway_url(&gw.url())
        .with_init_param("WHISK_METRICS_AUTH", "api-key")
        .with_init_param("WHISK_METRICS_TIMEOUT_MS", "5000")
        .with_api_key("guest", &keys[0]);
    let spec = ActionSpec::new("/guest/hello", action_exec("hello"));
    let mut inv =
        Invoker::new(config, Arc::new(MemorySink::default()), vec![spec]).expect("invoker starts");
    let counted = || {
        sum_on(
            &[&pgws[0]],
            "whisk_activations_total{",
            &["namespace=\"guest\"", "status=\"success\""],
        )
    };
    greet(&inv, "guest/hello", "first");
    assert!(wait_until(Duration::from_secs(30), || counted() == 1.0));
    // The container is frozen after its activation (pause grace 500 ms) and its kept-alive
    // connection idles; the gateway closes it after 1 s (only the SDK keeps one alive here).
    let closed = wait_until(Duration::from_secs(30), || {
        gw.own_value("whisk_gateway_connections_closed_total{reason=\"idle_timeout\"}") >= 1.0
    });
    assert!(closed, "the gateway closed the idle connection");
    // The next activation's push lands at once: had it failed, the SDK would back off and
    // send the second count only with a later activation.
    greet(&inv, "guest/hello", "second");
    let arrived = wait_until(Duration::from_secs(30), || counted() == 2.0);
    assert!(arrived, "the push after the pause arrived: {}", counted());
    assert_eq!(
        sum_on(
            &[&pgws[0]],
            "whisk_push_failures_total",
            &["namespace=\"guest\""]
        ),
        0.0
    );
    inv.shutdown();
}
