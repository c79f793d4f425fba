//! The example actions (and a probe action on the SDK) under OpenWhisk's own actionloop proxy,
//! driven as the invoker drives a container: each action zipped as the README tells users
//! (`xtask::package::zip_exec`: one top-level `exec`), `POST /init` with the invoker's body
//! (`binary`, `main`, `env` with the `__OW_*` values and the init parameters), then `POST /run`
//! with the invoker's exact run body (`RunInput::to_line`, the same the emulator writes). Each
//! test asserts the proxy's HTTP status and body, the verdict OpenWhisk derives from it
//! (`whisk_emulator::verdict`, a transcription of `processRunResponseContent`), the SDK's counts
//! on a real Pushgateway and its grouping key; the differential test runs the same lines through
//! the emulator's own driver and demands the same.
//!
//! Prerequisites: the proxy built by scripts/setup.sh into `.tools/actionloop-proxy` (else every
//! test here fails under `CI=true` saying why, and elsewhere prints one `SKIPPED …` line saying
//! why and passes: `whisk_testkit::require`), root (network namespaces),
//! `prometheus-pushgateway`, and `cargo build -p whisk-actions` (the glibc debug or release build
//! is used, whichever is newer: the musl static build of `cargo xtask package` is slower to make
//! and behaves the same under the proxy).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod actionloop;
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actionloop::{Answer, Container};
use common::{Sample, action_exec, parse_exposition};
use serde_json::{Value, json};
use whisk_emulator::proxy::{
    ActionProcess, PROXY_VERSION, ProxyAnswer, RunInput, RunOutcome, StartCheck, proxy_env,
};
use whisk_emulator::verdict::{self, status_name};
use whisk_testkit::Pushgateway;

const API_HOST: &str = "https://openwhisk.test:443";
const API_KEY: &str = "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:secret";
/// OpenWhisk ≤ 1.0.0's pause grace: the container is frozen this long after an answer.
const PAUSE_GRACE: Duration = Duration::from_millis(50);
/// Generous bound for things that happen on their own (a push landing on the Pushgateway).
const PATIENCE: Duration = Duration::from_secs(30);

fn probe_exec() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_conformance-probe"))
}

/// The proxy, or `None` after printing why the test is skipped (a failure under `CI=true`).
fn proxy_or_skip(test: &str) -> Option<PathBuf> {
    whisk_testkit::require(test, actionloop::available())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "whisk-conformance-{}-{name}-{:x}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The zip a user deploys: `exec` at the top level (`cargo xtask package` does the same with the
/// static release build). The debug build is stripped first, as the release profile strips
/// symbols: a debug binary's 20 MB of debug info would only slow every `/init` (and OpenWhisk
/// refuses zips over 48 MB). Made once per executable.
fn zip_of(exec: &Path, dir: &Path) -> Vec<u8> {
    static ZIPS: OnceLock<Mutex<HashMap<PathBuf, Vec<u8>>>> = OnceLock::new();
    let zips = ZIPS.get_or_init(Default::default);
    if let Some(z) = zips.lock().unwrap().get(exec) {
        return z.clone();
    }
    let stripped = dir.join(format!("exec-{}", hex32()));
    let ok = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(exec)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        std::fs::copy(exec, &stripped).expect("copy the executable");
    }
    let out = dir.join(format!("action-{}.zip", hex32()));
    xtask::package::zip_exec(&stripped, &out).expect("zip the action");
    let zip = std::fs::read(out).unwrap();
    zips.lock().unwrap().insert(exec.to_path_buf(), zip.clone());
    zip
}

fn hex32() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = u128::from(NEXT.fetch_add(1, Ordering::Relaxed));
    format!(
        "{:032x}",
        nanos ^ (u128::from(std::process::id()) << 64) ^ (n << 100)
    )
}

/// The invoker's run body for `action` (the values the emulator uses too).
fn input(action: &str, params: Value, limit: Duration) -> RunInput {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    RunInput {
        value: params,
        namespace: "guest".into(),
        action_name: format!("/guest/{action}"),
        action_version: "0.0.1".into(),
        activation_id: hex32(),
        transaction_id: format!("tid_{}", hex32()),
        deadline_ms: now + limit.as_millis(),
        api_key: Some(API_KEY.into()),
    }
}

fn body(input: &RunInput) -> String {
    input.to_line().trim_end().to_string()
}

/// The SDK's init parameters in every test: the Pushgateway, and a push timeout far above the
/// default 250 ms. A push that times out is a real loss the SDK accepts (and counts); on a loaded
/// machine, through the namespace forwarder, it would make exact counts a matter of luck.
fn sdk_env(pg: &Pushgateway) -> Vec<(String, String)> {
    vec![
        ("WHISK_METRICS_PUSHGATEWAY_URL".into(), pg.url()),
        ("WHISK_METRICS_TIMEOUT_MS".into(), "10000".into()),
    ]
}

/// Starts a container and sends `/init` as the invoker does: the `__OW_*` values of `first` (the
/// activation that caused the cold start), the Pushgateway URL and `extra` as init parameters.
#[allow(clippy::too_many_arguments)]
fn deploy(
    bin: &Path,
    pg: &Pushgateway,
    dir: &Path,
    action: &str,
    exec: &Path,
    wait_for_ack: bool,
    first: &RunInput,
    extra: &[(&str, &str)],
) -> Container {
    let cdir = dir.join(format!("c-{}", hex32()));
    let container = Container::start(bin, &cdir, wait_for_ack, API_HOST, pg.port());
    let mut env = first.init_env();
    env.extend(sdk_env(pg));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let zip = zip_of(exec, dir);
    let init = container.init(&actionloop::init_body(action, &zip, &env));
    assert_eq!(
        init,
        Answer {
            status: 200,
            body: "{\"ok\":true}\n".into()
        },
        "/init of {action}; stderr: {}",
        container.stderr()
    );
    container
}

fn sdk_samples(pg: &Pushgateway) -> Vec<Sample> {
    parse_exposition(&pg.metrics_text().expect("Pushgateway /metrics"))
        .into_iter()
        .filter(|s| s.labels.get("namespace").map(String::as_str) == Some("guest"))
        .collect()
}

/// `whisk_activations_total` of `action` by status, for the groups of `instances` (all when
/// empty); zero values left out.
fn sdk_statuses(pg: &Pushgateway, action: &str, instance: Option<&str>) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for s in sdk_samples(pg) {
        if s.name == "whisk_activations_total"
            && s.labels.get("action").map(String::as_str) == Some(action)
            && instance.is_none_or(|i| s.labels.get("instance").map(String::as_str) == Some(i))
        {
            *m.entry(s.labels.get("status").cloned().unwrap_or_default())
                .or_insert(0.0) += s.value;
        }
    }
    m.retain(|_, v| *v != 0.0);
    m
}

/// The instance labels of `action`'s groups on the Pushgateway.
fn instances(pg: &Pushgateway, action: &str) -> BTreeSet<String> {
    sdk_samples(pg)
        .iter()
        .filter(|s| {
            s.name == "whisk_container_info"
                && s.labels.get("action").map(String::as_str) == Some(action)
        })
        .filter_map(|s| s.labels.get("instance").cloned())
        .collect()
}

fn wait_for(mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// The platform's status label for an SDK status label (`developer_error` is
/// `action_developer_error` on the platform side).
fn platform_name(sdk_status: &str) -> &str {
    match sdk_status {
        "developer_error" => "action_developer_error",
        other => other,
    }
}

#[test]
fn every_example_action_answers_and_is_counted_with_the_container_frozen_after_each_answer() {
    let Some(bin) = proxy_or_skip("conformance::every_example_action…") else {
        return;
    };
    let pg = Pushgateway::start(&["--persistence.file="]).expect("Pushgateway");
    let dir = scratch("examples");
    const RUNS: usize = 20;
    let cases: [(&str, Value, Value); 3] = [
        (
            "hello",
            json!({"name": "line one\nline two — ünïcødé ✓ \"quoted\""}),
            json!({"greeting": "Hello, line one\nline two — ünïcødé ✓ \"quoted\"!"}),
        ),
        (
            "orders",
            json!({"items": 3, "value": 99.5, "region": "us"}),
            Value::Null,
        ),
        ("flaky", json!({"mode": "ok"}), json!({"ok": true})),
    ];
    let mut late = 0;
    for wait_for_ack in [false, true] {
        for (action, params, want) in &cases {
            let first = input(action, params.clone(), Duration::from_secs(60));
            let d = deploy(
                &bin,
                &pg,
                &dir,
                action,
                &action_exec(action),
                wait_for_ack,
                &first,
                &[],
            );
            let before = sdk_statuses(&pg, action, None)
                .get("success")
                .copied()
                .unwrap_or(0.0);
            for i in 1..=RUNS {
                let run = if i == 1 {
                    first.clone()
                } else {
                    input(action, params.clone(), Duration::from_secs(60))
                };
                let a = d
                    .run(&body(&run), Duration::from_secs(60))
                    .expect("an answer");
                assert_eq!(a.status, 200, "{action} run {i}: {a:?}");
                assert!(a.body.ends_with('\n') && a.body.matches('\n').count() == 1);
                let v = verdict::of_answer(a.status, &a.body);
                assert_eq!(v.status_code, 0, "{action}: {a:?}");
                if *want != Value::Null {
                    assert_eq!(v.result, *want);
                } else {
                    assert_eq!(v.result["items"], 3, "{v:?}");
                }
                // The invoker pauses the container after the grace; what the SDK pushed after
                // the result must be on the Pushgateway while it is frozen. Slack for a loaded
                // machine: a push still on the wire at the freeze completes after the thaw (it
                // is counted as late, and checked below not to be lost).
                std::thread::sleep(PAUSE_GRACE);
                d.freeze();
                assert!(wait_for(|| d.is_frozen()));
                let want_total = before + i as f64;
                let got = |pg: &Pushgateway| {
                    sdk_statuses(pg, action, None)
                        .get("success")
                        .copied()
                        .unwrap_or(0.0)
                };
                if got(&pg) != want_total {
                    late += 1;
                }
                d.thaw();
                assert!(
                    wait_for(|| got(&pg) == want_total),
                    "{action}: {} after run {i}, want {want_total}",
                    got(&pg)
                );
            }
            // One sentinel per activation on each stream, after the action's own output.
            let sentinels = |s: String| s.matches("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX").count();
            assert_eq!(sentinels(d.stdout()), RUNS);
            assert_eq!(sentinels(d.stderr()), RUNS);
            // Removal after a freeze (docker rm -f of a paused container): what was pushed
            // stays.
            let mut d = d;
            d.freeze();
            d.kill();
            assert_eq!(
                sdk_statuses(&pg, action, None).get("success").copied(),
                Some(before + RUNS as f64)
            );
        }
    }
    // The grouping key: job/namespace/action/instance, one group per container (six here:
    // three actions, with and without the acknowledgement).
    let groups = pg.groups().expect("groups");
    let keys: Vec<BTreeMap<String, String>> = groups
        .iter()
        .filter_map(|g| serde_json::from_value(g["labels"].clone()).ok())
        .collect();
    assert_eq!(keys.len(), 6, "{keys:?}");
    for k in &keys {
        let names: Vec<&str> = k.keys().map(String::as_str).collect();
        assert_eq!(names, ["action", "instance", "job", "namespace"], "{k:?}");
        assert_eq!(
            (k["job"].as_str(), k["namespace"].as_str()),
            ("openwhisk_actions", "guest")
        );
        assert!(k["instance"].len() == 32 && k["instance"].chars().all(|c| c.is_ascii_hexdigit()));
    }
    for (action, _, _) in &cases {
        assert_eq!(instances(&pg, action).len(), 2, "{action}");
    }
    eprintln!(
        "pushes still on the wire at the 50 ms freeze: {late} of {}",
        6 * RUNS
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_action_sees_exactly_the_ow_variables_and_the_init_env_and_large_parameters_pass() {
    let Some(bin) = proxy_or_skip("conformance::the_action_sees_exactly…") else {
        return;
    };
    let pg = Pushgateway::start(&["--persistence.file="]).expect("Pushgateway");
    let dir = scratch("env");
    for wait_for_ack in [false, true] {
        let first = input("probe", json!({"mode": "env"}), Duration::from_secs(60));
        let d = deploy(
            &bin,
            &pg,
            &dir,
            "probe",
            &probe_exec(),
            wait_for_ack,
            &first,
            &[("WHISK_METRICS_JOB", "conformance_job"), ("GREETING", "hi")],
        );
        // The second activation: the SDK sets its values before the handler runs.
        let _ = d.run(&body(&first), Duration::from_secs(60)).unwrap();
        let second = input("probe", json!({"mode": "env"}), Duration::from_secs(60));
        let a = d.run(&body(&second), Duration::from_secs(60)).unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        let env: BTreeMap<String, String> =
            serde_json::from_value(verdict::of_answer(a.status, &a.body).result["env"].clone())
                .unwrap();
        let mut want: BTreeMap<String, String> = [
            ("__OW_ACTION_NAME", "/guest/probe".to_string()),
            ("__OW_ACTION_VERSION", "0.0.1".into()),
            ("__OW_ACTIVATION_ID", second.activation_id.clone()),
            ("__OW_API_HOST", API_HOST.into()),
            ("__OW_API_KEY", API_KEY.into()),
            ("__OW_DEADLINE", second.deadline_ms.to_string()),
            ("__OW_NAMESPACE", "guest".into()),
            ("__OW_PROXY_VERSION", PROXY_VERSION.into()),
            ("__OW_TRANSACTION_ID", second.transaction_id.clone()),
            ("GREETING", "hi".into()),
            ("WHISK_METRICS_JOB", "conformance_job".into()),
            ("WHISK_METRICS_PUSHGATEWAY_URL", pg.url()),
            ("WHISK_METRICS_TIMEOUT_MS", "10000".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if wait_for_ack {
            want.insert("__OW_WAIT_FOR_ACK".into(), "1".into());
        }
        assert_eq!(env, want, "exactly these, no PATH, HOME or HOSTNAME");

        // The init env's WHISK_METRICS_JOB is the SDK's job.
        assert!(wait_for(|| {
            sdk_samples(&pg).iter().any(|s| {
                s.name == "whisk_activations_total"
                    && s.labels.get("job").map(String::as_str) == Some("conformance_job")
            })
        }));

        // A 1 MB parameter with newlines and unicode goes through and comes back whole.
        let blob = "ü\n✓ ".repeat(1_000_000 / 8);
        let big = input(
            "probe",
            json!({"mode": "echo", "blob": blob}),
            Duration::from_secs(60),
        );
        assert!(body(&big).len() > 1_000_000);
        let a = d.run(&body(&big), Duration::from_secs(60)).unwrap();
        let v = verdict::of_answer(a.status, &a.body);
        assert_eq!((a.status, v.status_code), (200, 0));
        assert_eq!(v.result["blob"].as_str(), Some(blob.as_str()));
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// One activation outcome, as a test of the real proxy and of the emulator.
struct Outcome {
    name: &'static str,
    action: &'static str,
    params: Value,
    /// The proxy's status and body (`None`: no answer before the time limit).
    answer: Option<(u16, &'static str)>,
    /// OpenWhisk's status label for it.
    platform: &'static str,
    /// The SDK's status label for it (`None`: the container is killed before it counts).
    sdk: Option<&'static str>,
}

const LIMIT: Duration = Duration::from_secs(2);

fn outcomes() -> Vec<Outcome> {
    vec![
        Outcome {
            name: "ok",
            action: "flaky",
            params: json!({"mode": "ok"}),
            answer: Some((200, "{\"ok\":true}\n")),
            platform: "success",
            sdk: Some("success"),
        },
        Outcome {
            name: "Err",
            action: "flaky",
            params: json!({"mode": "error"}),
            answer: Some((200, "{\"error\":\"flaky failed as asked (mode=error)\"}\n")),
            platform: "application_error",
            sdk: Some("application_error"),
        },
        Outcome {
            name: "panic",
            action: "flaky",
            params: json!({"mode": "panic"}),
            answer: Some((400, "{\"error\":\"command exited\"}\n")),
            platform: "action_developer_error",
            sdk: Some("developer_error"),
        },
        Outcome {
            name: "non-object",
            action: "probe",
            params: json!({"mode": "number"}),
            answer: Some((
                502,
                "{\"error\":\"The action did not return a dictionary or array.\"}\n",
            )),
            platform: "action_developer_error",
            sdk: Some("developer_error"),
        },
        Outcome {
            name: "timeout",
            action: "flaky",
            params: json!({"mode": "sleep", "sleep_ms": 30_000}),
            answer: None,
            platform: "action_developer_error",
            sdk: None,
        },
    ]
}

fn exec_of(action: &str) -> PathBuf {
    if action == "probe" {
        probe_exec()
    } else {
        action_exec(action)
    }
}

#[test]
fn errors_panics_non_objects_and_timeouts_get_the_platforms_verdicts_and_the_sdk_agrees() {
    let Some(bin) = proxy_or_skip("conformance::errors_panics…") else {
        return;
    };
    let pg = Pushgateway::start(&["--persistence.file="]).expect("Pushgateway");
    let dir = scratch("outcomes");
    for o in outcomes() {
        // A fresh container per outcome, one ok activation first (what the SDK pushed before
        // a kill must stay).
        let warm = input(o.action, json!({"mode": "ok"}), LIMIT);
        let had = instances(&pg, o.action);
        // Default push mode: where the platform removes the container right after the answer
        // (panic, non-object result) the SDK pushes before answering on its own.
        let mut d = deploy(
            &bin,
            &pg,
            &dir,
            o.action,
            &exec_of(o.action),
            false,
            &warm,
            &[],
        );
        // Its own deadline, counted from now (the init took part of the first one's).
        let warm = input(o.action, json!({"mode": "ok"}), LIMIT);
        let a = d.run(&body(&warm), LIMIT).unwrap();
        assert_eq!(a.status, 200, "{}: {a:?}", o.name);
        assert!(
            wait_for(|| instances(&pg, o.action).len() == had.len() + 1),
            "{}: groups before {had:?}, now {:?}; stderr: {}",
            o.name,
            instances(&pg, o.action),
            d.stderr()
        );
        let instance = instances(&pg, o.action)
            .difference(&had)
            .next()
            .cloned()
            .unwrap();

        let run = input(o.action, o.params.clone(), LIMIT);
        let started = Instant::now();
        let answer = d.run(&body(&run), LIMIT);
        let elapsed = started.elapsed();
        assert_eq!(
            answer.as_ref().map(|a| (a.status, a.body.as_str())),
            o.answer,
            "{}: stderr {}",
            o.name,
            d.stderr()
        );
        let answer = answer.map(|a| ProxyAnswer {
            status: a.status,
            body: a.body,
        });
        let v = verdict::of_run(answer.as_ref(), elapsed, LIMIT);
        assert_eq!(status_name(v.status_code), o.platform, "{}: {v:?}", o.name);
        if verdict::removes_container(v.status_code) {
            // The invoker destroys the container (a timeout: at the deadline).
            d.kill();
        }
        let mut want = BTreeMap::from([("success".to_string(), 1.0)]);
        if let Some(s) = o.sdk {
            *want.entry(s.to_string()).or_insert(0.0) += 1.0;
            assert_eq!(
                platform_name(s),
                o.platform,
                "{}: SDK and platform agree",
                o.name
            );
        }
        let got = if wait_for(|| sdk_statuses(&pg, o.action, Some(&instance)) == want) {
            want.clone()
        } else {
            sdk_statuses(&pg, o.action, Some(&instance))
        };
        assert_eq!(got, want, "{}: the SDK's counts of its container", o.name);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The same run lines through the real proxy and through the emulator's driver
/// (`whisk_emulator::proxy`), the proxy started without `OW_WAIT_FOR_ACK`: the same answers,
/// verdicts and SDK counts.
#[test]
fn the_emulator_answers_like_the_real_proxy() {
    emulator_answers_like_the_real_proxy(
        "conformance::the_emulator_answers_like_the_real_proxy",
        false,
    );
}

/// As above, with the proxy and the emulator both waiting for the action's start ack
/// (`OW_WAIT_FOR_ACK`). A test of its own, so that the two halves run side by side.
#[test]
fn the_emulator_answers_like_the_real_proxy_when_both_wait_for_the_ack() {
    emulator_answers_like_the_real_proxy(
        "conformance::the_emulator_answers_like_the_real_proxy_when_both_wait_for_the_ack",
        true,
    );
}

fn emulator_answers_like_the_real_proxy(test: &str, wait_for_ack: bool) {
    let Some(bin) = proxy_or_skip(test) else {
        return;
    };
    let real_pg = Pushgateway::start(&["--persistence.file="]).expect("Pushgateway");
    let emu_pg = Pushgateway::start(&["--persistence.file="]).expect("Pushgateway");
    let dir = scratch(if wait_for_ack {
        "differential-ack"
    } else {
        "differential"
    });
    let mut lines: Vec<(&str, Value)> = vec![
        ("hello", json!({"name": "a\nb ✓"})),
        ("hello", json!({"name": 5})),
        ("probe", json!({"mode": "echo", "x": [1, {"y": null}]})),
        ("probe", json!({"mode": "env"})),
        ("probe", json!({"mode": "null"})),
        ("probe", json!({"mode": "string"})),
        ("probe", json!({"mode": "error"})),
        ("probe", json!({"mode": "sleep", "sleep_ms": 30_000})),
    ];
    for o in outcomes() {
        lines.push((o.action, o.params));
    }
    let mut counted: BTreeMap<&str, f64> = BTreeMap::new();
    for (action, params) in &lines {
        let run = input(action, params.clone(), LIMIT);
        let exec = exec_of(action);
        let t0 = Instant::now();

        let mut real = deploy(&bin, &real_pg, &dir, action, &exec, wait_for_ack, &run, &[]);
        let started = Instant::now();
        let real_answer = real.run(&body(&run), LIMIT).map(|a| ProxyAnswer {
            status: a.status,
            body: a.body,
        });
        let real_verdict = verdict::of_run(real_answer.as_ref(), started.elapsed(), LIMIT);
        // An answered activation was counted by the SDK; wait for its push (after the
        // result, or before the exit of a panic) before the container goes.
        if real_answer.is_some() {
            *counted.entry(*action).or_insert(0.0) += 1.0;
        }
        let want = counted.get(action).copied().unwrap_or(0.0);
        let total = |pg: &Pushgateway| sdk_statuses(pg, action, None).values().sum::<f64>();
        assert!(
            wait_for(|| total(&real_pg) == want),
            "{action} {params}: real push; {:?}; stderr: {}",
            sdk_statuses(&real_pg, action, None),
            real.stderr()
        );
        let t_real = t0.elapsed();
        real.kill();

        // The child's environment as the proxy builds it, then the emulator's driver.
        let mut env = proxy_env(wait_for_ack, Some(API_HOST));
        env.extend(run.init_env());
        env.extend(sdk_env(&emu_pg));
        let check = if wait_for_ack {
            StartCheck::Ack(LIMIT)
        } else {
            StartCheck::default()
        };
        let mut emu = ActionProcess::start(&exec, &env, check).expect("emulator start");
        let (outcome, _) = emu.run(&run, LIMIT);
        let emu_verdict = verdict::of_outcome(&outcome, LIMIT);

        // The env echo differs only in the Pushgateway URL each side was given.
        let normalize = |s: String| s.replace(&real_pg.url(), "PG").replace(&emu_pg.url(), "PG");
        let ra = real_answer.map(|a| (a.status, normalize(a.body)));
        let ea = outcome
            .proxy_answer()
            .map(|a| (a.status, normalize(a.body)));
        assert_eq!(ea, ra, "{action} {params}: the proxy's answer");
        assert_eq!(
            (
                emu_verdict.status_code,
                normalize(emu_verdict.result.to_string())
            ),
            (
                real_verdict.status_code,
                normalize(real_verdict.result.to_string())
            ),
            "{action} {params}: the verdict"
        );
        if outcome == RunOutcome::TimedOut {
            assert_eq!(real_verdict.status_code, 2);
        }
        assert!(
            wait_for(|| total(&emu_pg) == want),
            "{action} {params}: emulator push"
        );
        emu.kill();
        eprintln!(
            "{action} {params}: real {t_real:?}, both {:?}",
            t0.elapsed()
        );
    }
    // The SDK's counts, per action and status, summed over the containers of each side.
    for action in ["hello", "probe", "flaky"] {
        let real = sdk_statuses(&real_pg, action, None);
        let emu = sdk_statuses(&emu_pg, action, None);
        let same = wait_for(|| {
            sdk_statuses(&real_pg, action, None) == sdk_statuses(&emu_pg, action, None)
        });
        assert!(same, "{action}: real {real:?} vs emulator {emu:?}");
        assert!(!real.is_empty(), "{action}: counted");
    }
    let _ = std::fs::remove_dir_all(dir);
}
