//! The container pool on real processes (small shell actions speaking the actionloop protocol);
//! events go to an in-memory sink. No broker needed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use whisk_emulator::{
    ActionSpec, ActivationRecord, EventBody, Invocation, Invoker, InvokerConfig, MemorySink,
};

/// A shell action: answers each stdin line on fd 3. `mode` in the params selects behaviour:
/// `exit` exits, `hang` never answers, `error` returns an application error, `slow` sleeps 300 ms.
const ACTION: &str = r#"#!/bin/sh
echo "started" >&2
while read -r line; do
  case "$line" in
    *'"mode":"exit"'*) exit 1 ;;
    *'"mode":"hang"'*) /bin/sleep 30 ;;
    *'"mode":"error"'*) echo '{"error":"asked to fail"}' >&3 ;;
    *'"mode":"slow"'*) /bin/sleep 0.3; echo '{"slow":true}' >&3 ;;
    *) echo "hello from $$"; echo '{"ok":true}' >&3 ;;
  esac
done
"#;

struct Fixture {
    dir: PathBuf,
    exec: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!(
            "whisk-emu-pool-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let exec = dir.join("exec");
        std::fs::write(&exec, ACTION).unwrap();
        std::fs::set_permissions(&exec, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir, exec }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn invoker(
    fx: &Fixture,
    config: InvokerConfig,
    spec: impl FnOnce(ActionSpec) -> ActionSpec,
) -> (Invoker, Arc<MemorySink>) {
    let sink = Arc::new(MemorySink::default());
    let spec = spec(ActionSpec::new("/guest/test", &fx.exec));
    (
        Invoker::new(config, sink.clone(), vec![spec]).unwrap(),
        sink,
    )
}

fn run(inv: &Invoker, params: serde_json::Value) -> ActivationRecord {
    match inv.invoke("guest/test", params, Instant::now()).unwrap() {
        Invocation::Completed(r) => r,
        other => panic!("expected a completed activation, got {other:?}"),
    }
}

/// The process state letter from /proc (R, S, T = stopped, Z …), None once it is gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim().chars().next()
}

#[test]
fn warm_container_is_frozen_after_pause_grace_and_thawed_for_reuse() {
    let fx = Fixture::new();
    let cfg = InvokerConfig::new().with_pause_grace(Duration::from_millis(30));
    let (inv, _) = invoker(&fx, cfg, |s| s);
    let first = run(&inv, json!({}));
    assert!(first.cold && first.init_ms > 0);
    assert_eq!(first.result, json!({"ok": true}));
    assert!(
        first
            .logs
            .iter()
            .any(|l| l.starts_with("stdout: hello from")),
        "{:?}",
        first.logs
    );
    assert!(
        first.logs.contains(&"stderr: started".to_string()),
        "{:?}",
        first.logs
    );

    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        proc_state(first.pid),
        Some('T'),
        "idle container should be stopped"
    );
    let s = &inv.stats()[0];
    assert_eq!(
        (s.containers_alive, s.containers_frozen, s.freezes),
        (1, 1, 1)
    );

    let second = run(&inv, json!({}));
    assert!(!second.cold);
    assert_eq!(second.init_ms, 0);
    assert_eq!(second.pid, first.pid);
    assert_eq!(second.result, json!({"ok": true}));
    let s = &inv.stats()[0];
    assert_eq!(
        (s.activations, s.cold_starts, s.containers_created, s.thaws),
        (2, 1, 1, 1)
    );
}

#[test]
fn idle_container_is_removed_after_the_idle_timeout() {
    let fx = Fixture::new();
    let cfg = InvokerConfig::new()
        .with_pause_grace(Duration::from_millis(20))
        .with_idle_timeout(Duration::from_millis(200));
    let (inv, _) = invoker(&fx, cfg, |s| s);
    let first = run(&inv, json!({}));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        proc_state(first.pid),
        None,
        "frozen container must be killed and reaped"
    );
    let s = &inv.stats()[0];
    assert_eq!((s.containers_alive, s.containers_removed), (0, 1));
    assert!(
        run(&inv, json!({})).cold,
        "the next activation starts a new container"
    );
}

#[test]
fn exit_and_timeout_are_developer_errors_that_remove_the_container() {
    let fx = Fixture::new();
    let cfg = InvokerConfig::new().with_concurrent_invocations_events(false);
    let (inv, sink) = invoker(&fx, cfg, |s| s.with_timeout(Duration::from_millis(300)));
    let exited = run(&inv, json!({"mode": "exit"}));
    assert_eq!(exited.status_code, 2);
    assert_eq!(exited.result, json!({"error": "command exited"}));

    let hung = run(&inv, json!({"mode": "hang"}));
    assert_eq!(hung.status_code, 2);
    assert!(
        hung.result["error"]
            .as_str()
            .unwrap()
            .contains("300 milliseconds")
    );
    assert!(hung.duration_ms >= 300);
    assert!(
        hung.cold,
        "the container of the exited activation was removed"
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        proc_state(hung.pid),
        None,
        "a timed-out container is killed"
    );

    let app = run(&inv, json!({"mode": "error"}));
    assert_eq!((app.status_code, app.cold), (1, true));
    let again = run(&inv, json!({}));
    assert_eq!(
        (again.status_code, again.cold, again.pid),
        (0, false, app.pid),
        "kept after status 1"
    );

    let s = &inv.stats()[0];
    assert_eq!(s.statuses, [1, 1, 2, 0]);
    assert_eq!(
        (s.containers_created, s.cold_starts, s.containers_removed),
        (3, 3, 2)
    );
    let codes: Vec<u8> = sink
        .events()
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Activation(a) => Some(a.status_code),
            EventBody::Metric(_) => None,
        })
        .collect();
    assert_eq!(codes, [2, 2, 1, 0]);
}

#[test]
fn requests_queue_beyond_max_containers_and_wait_time_shows_it() {
    let fx = Fixture::new();
    let (inv, _) = invoker(&fx, InvokerConfig::new(), |s| s.with_max_containers(1));
    let records: Vec<ActivationRecord> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| run(&inv, json!({"mode": "slow"}))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(records.iter().filter(|r| r.cold).count(), 1);
    assert!(records.iter().all(|r| r.pid == records[0].pid));
    let max_wait = records.iter().map(|r| r.wait_ms).max().unwrap();
    assert!(
        max_wait >= 500,
        "third request waited for two 300 ms runs, got {max_wait} ms"
    );
    assert_eq!(inv.stats()[0].containers_created, 1);
}

#[test]
fn namespace_limit_rejects_and_emits_concurrent_rate_limit() {
    let fx = Fixture::new();
    let cfg = InvokerConfig::new().with_namespace_concurrency(1);
    let (inv, sink) = invoker(&fx, cfg, |s| s);
    let answers: Vec<Invocation> = std::thread::scope(|s| {
        let slow = s.spawn(|| inv.invoke("/guest/test", json!({"mode": "slow"}), Instant::now()));
        std::thread::sleep(Duration::from_millis(100));
        let second = inv.invoke("guest/test", json!({}), Instant::now());
        vec![slow.join().unwrap().unwrap(), second.unwrap()]
    });
    assert!(matches!(answers[0], Invocation::Completed(_)));
    assert_eq!(
        answers[1],
        Invocation::Rejected {
            namespace: "guest".into()
        }
    );
    let events = sink.events();
    let metrics: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Metric(m) => Some((
                e.source.as_str(),
                e.namespace.as_str(),
                m.metric_name.as_str(),
                m.metric_value,
            )),
            EventBody::Activation(_) => None,
        })
        .collect();
    assert_eq!(
        metrics,
        [
            ("controller0", "guest", "ConcurrentInvocations", 1),
            ("controller0", "guest", "ConcurrentRateLimit", 1)
        ]
    );
    assert_eq!(
        events.len(),
        3,
        "an Activation, its ConcurrentInvocations, a ConcurrentRateLimit"
    );
    assert_eq!(inv.stats()[0].rejected, 1);
}

#[test]
fn activation_events_carry_openwhisk_fields() {
    let fx = Fixture::new();
    let cfg = InvokerConfig::new()
        .with_invoker_id(3)
        .with_kind("rust:1.34")
        .with_concurrent_invocations_events(false);
    let (inv, sink) = invoker(&fx, cfg, |s| s.with_memory_mb(128));
    let cold = run(&inv, json!({}));
    let warm = run(&inv, json!({}));
    let events = sink.events();
    assert_eq!(events.len(), 2);
    for (e, rec) in events.iter().zip([&cold, &warm]) {
        assert_eq!(
            (
                e.source.as_str(),
                e.event_type.as_str(),
                e.namespace.as_str()
            ),
            ("invoker3", "Activation", "guest")
        );
        let EventBody::Activation(a) = &e.body else {
            panic!("not an activation")
        };
        assert_eq!(a.name, "guest/test");
        assert_eq!(a.activation_id, rec.activation_id);
        assert_eq!(a.activation_id.len(), 32);
        assert!(a.activation_id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            (a.kind.as_str(), a.memory, a.conductor),
            ("rust:1.34", 128, false)
        );
        assert_eq!(a.size, Some(r#"{"ok":true}"#.len() as u64));
        assert!(a.duration >= a.init_time);
    }
    let (EventBody::Activation(c), EventBody::Activation(w)) = (&events[0].body, &events[1].body)
    else {
        panic!("not activations")
    };
    assert!(c.init_time > 0);
    assert_eq!(w.init_time, 0);
}

#[test]
fn shutdown_kills_frozen_and_idle_containers() {
    let fx = Fixture::new();
    let cfg = InvokerConfig::new().with_pause_grace(Duration::from_millis(10));
    let (mut inv, _) = invoker(&fx, cfg, |s| s.with_max_containers(2));
    let recs: Vec<ActivationRecord> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| s.spawn(|| run(&inv, json!({"mode": "slow"}))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_ne!(recs[0].pid, recs[1].pid);
    std::thread::sleep(Duration::from_millis(100));
    inv.shutdown();
    for r in &recs {
        assert_eq!(proc_state(r.pid), None);
    }
    assert_eq!(inv.stats()[0].containers_alive, 0);
}
