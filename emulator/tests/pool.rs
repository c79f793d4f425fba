//! The container pool on real processes (small shell actions speaking the actionloop protocol);
//! events go to an in-memory sink. No broker needed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use whisk_emulator::{
    ActionSpec, ActivationRecord, EventBody, Invocation, Invoker, InvokerConfig, MemorySink,
    SequenceSpec,
};

/// A shell action: answers each stdin line on fd 3. `mode` in the params selects behaviour:
/// `exit` exits, `hang` never answers, `error` returns an application error, `slow` sleeps 300 ms,
/// `block` answers once the file `release` exists in its directory (the test's gate, so nothing
/// depends on how fast the machine is), `number` answers `42` (not an object), `pass` answers
/// its whole input line's `value` unchanged, `cgroup` answers the `/proc/self/cgroup` the shell
/// read first thing at its start.
const ACTION: &str = r#"#!/bin/sh
started_in=""; while read -r l; do started_in="$started_in $l"; done < /proc/self/cgroup
echo "started" >&2
while read -r line; do
  case "$line" in
    *'"mode":"exit"'*) exit 1 ;;
    *'"mode":"hang"'*) /bin/sleep 30 ;;
    *'"mode":"error"'*) echo '{"error":"asked to fail"}' >&3 ;;
    *'"mode":"slow"'*) /bin/sleep 0.3; echo '{"slow":true}' >&3 ;;
    *'"mode":"block"'*) while [ ! -e release ]; do /bin/sleep 0.01; done; echo '{"ok":true}' >&3 ;;
    *'"mode":"number"'*) echo 42 >&3 ;;
    *'"mode":"cgroup"'*) echo "{\"started_in\":\"$started_in\"}" >&3 ;;
    *) echo "hello from $$"; echo '{"ok":true}' >&3 ;;
  esac
done
"#;

/// Generous bound for waiting on something that happens on its own (a freeze, a removal).
const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `check` until it holds or [`PATIENCE`] passes.
fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    check()
}

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

impl Fixture {
    /// Lets every `block` activation answer.
    fn release(&self) {
        std::fs::write(self.dir.join("release"), "").unwrap();
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

    assert!(
        eventually(|| proc_state(first.pid) == Some('T')),
        "idle container should be stopped"
    );
    assert!(eventually(|| inv.stats()[0].containers_frozen == 1));
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
    assert!(
        eventually(|| proc_state(first.pid).is_none()),
        "frozen container must be killed and reaped"
    );
    assert!(eventually(|| inv.stats()[0].containers_removed == 1));
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
    // The time limit is what `hang` overruns; it is long enough for the other modes to answer
    // on a loaded machine (a shell's start and one echo).
    let (inv, sink) = invoker(&fx, cfg, |s| s.with_timeout(Duration::from_secs(3)));
    let exited = run(&inv, json!({"mode": "exit"}));
    assert_eq!(exited.status_code, 2);
    assert_eq!(exited.result, json!({"error": "command exited"}));

    let hung = run(&inv, json!({"mode": "hang"}));
    assert_eq!(hung.status_code, 2);
    assert!(
        hung.result["error"]
            .as_str()
            .unwrap()
            .contains("3000 milliseconds")
    );
    assert!(hung.duration_ms >= 3000);
    assert!(
        hung.cold,
        "the container of the exited activation was removed"
    );
    // Removed (killed and reaped) before the activation was reported.
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
    // One submission instant for all three: whichever thread runs last, the request served
    // last waited for two full runs of at least 300 ms each.
    let submitted = Instant::now();
    let records: Vec<ActivationRecord> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(
                    || match inv.invoke("guest/test", json!({"mode": "slow"}), submitted) {
                        Ok(Invocation::Completed(r)) => r,
                        other => panic!("{other:?}"),
                    },
                )
            })
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
    let admitted = |sink: &MemorySink| {
        sink.events().iter().any(
            |e| matches!(&e.body, EventBody::Metric(m) if m.metric_name == "ConcurrentInvocations"),
        )
    };
    let answers: Vec<Invocation> = std::thread::scope(|s| {
        // Blocks until released: in flight for as long as the test needs.
        let blocked =
            s.spawn(|| inv.invoke("/guest/test", json!({"mode": "block"}), Instant::now()));
        assert!(eventually(|| admitted(&sink)), "the first request admitted");
        let second = inv.invoke("guest/test", json!({}), Instant::now());
        fx.release();
        vec![blocked.join().unwrap().unwrap(), second.unwrap()]
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
        // The proxy's answer with its trailing newline, as the invoker measures it.
        assert_eq!(a.size, Some(r#"{"ok":true}"#.len() as u64 + 1));
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
            .map(|_| s.spawn(|| run(&inv, json!({"mode": "block"}))))
            .collect();
        // Both in a container of their own before either answers.
        assert!(eventually(|| inv.stats()[0].containers_alive == 2));
        fx.release();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_ne!(recs[0].pid, recs[1].pid);
    assert!(eventually(|| inv.stats()[0].containers_frozen == 2));
    inv.shutdown();
    for r in &recs {
        assert_eq!(proc_state(r.pid), None);
    }
    assert_eq!(inv.stats()[0].containers_alive, 0);
}

#[test]
fn a_non_object_result_is_the_proxys_502_a_developer_error_and_removes_the_container() {
    let fx = Fixture::new();
    let (inv, _) = invoker(&fx, InvokerConfig::new(), |s| s);
    let r = run(&inv, json!({"mode": "number"}));
    assert_eq!(r.status_code, 2);
    assert_eq!(
        r.result,
        json!({"error": "The action did not return a dictionary or array."})
    );
    assert_eq!(
        proc_state(r.pid),
        None,
        "removed before the activation was reported"
    );
    assert!(run(&inv, json!({})).cold);
}

#[test]
fn with_wait_for_ack_a_child_that_never_acknowledges_fails_its_init() {
    // ACTION writes no acknowledgement, so with OW_WAIT_FOR_ACK its init times out (the proxy
    // waits forever; the invoker's /init gives up at the time limit); an acknowledging wrapper
    // starts fine.
    let fx = Fixture::new();
    let cfg = InvokerConfig::new().with_wait_for_ack(true);
    let (inv, _) = invoker(&fx, cfg, |s| s.with_timeout(Duration::from_millis(500)));
    let r = run(&inv, json!({}));
    assert_eq!((r.status_code, r.cold), (2, true));
    assert_eq!(
        r.result,
        json!({"error": "The action exceeded its time limits of 500 milliseconds during initialization."})
    );

    let acking = fx.dir.join("acking");
    std::fs::write(
        &acking,
        format!(
            "#!/bin/sh\n[ \"$__OW_WAIT_FOR_ACK\" = 1 ] && echo '{{\"ok\":true}}' >&3\nexec {}\n",
            fx.exec.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&acking, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sink = Arc::new(MemorySink::default());
    let spec = ActionSpec::new("/guest/acking", &acking);
    let cfg = InvokerConfig::new().with_wait_for_ack(true);
    let inv = Invoker::new(cfg, sink, vec![spec]).unwrap();
    match inv
        .invoke("guest/acking", json!({}), Instant::now())
        .unwrap()
    {
        Invocation::Completed(r) => assert_eq!((r.status_code, r.result), (0, json!({"ok": true}))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_sequence_runs_its_components_in_order_with_caused_by_and_its_own_event() {
    let fx = Fixture::new();
    let sink = Arc::new(MemorySink::default());
    let specs = vec![
        ActionSpec::new("/guest/a", &fx.exec).with_memory_mb(128),
        ActionSpec::new("/guest/b", &fx.exec).with_memory_mb(512),
    ];
    let seqs = vec![
        SequenceSpec::new("/guest/ab", &["guest/a", "guest/b"]),
        SequenceSpec::new("/guest/failing", &["guest/a", "guest/b"]),
    ];
    let cfg = InvokerConfig::new().with_concurrent_invocations_events(false);
    let inv = Invoker::with_sequences(cfg, sink.clone(), specs, seqs).unwrap();

    let Invocation::Completed(seq) = inv.invoke("guest/ab", json!({}), Instant::now()).unwrap()
    else {
        panic!("rejected")
    };
    assert_eq!((seq.action.as_str(), seq.status_code), ("guest/ab", 0));
    assert_eq!(seq.components.len(), 2);
    assert_eq!(seq.result, json!({"ok": true}));
    assert_eq!(
        seq.duration_ms,
        seq.components.iter().map(|c| c.duration_ms).sum::<u64>()
    );
    assert!(
        seq.components
            .iter()
            .all(|c| c.caused_by.as_deref() == Some("sequence"))
    );
    assert_eq!(
        seq.logs,
        seq.components
            .iter()
            .map(|c| c.activation_id.clone())
            .collect::<Vec<_>>()
    );

    // The first component fails: the sequence stops there and takes its status.
    let Invocation::Completed(failed) = inv
        .invoke("guest/failing", json!({"mode": "error"}), Instant::now())
        .unwrap()
    else {
        panic!("rejected")
    };
    assert_eq!((failed.status_code, failed.components.len()), (1, 1));

    let events = sink.events();
    let bodies: Vec<(&str, &str, Option<&str>, &str, u32)> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Activation(a) => Some((
                e.source.as_str(),
                a.name.as_str(),
                a.caused_by.as_deref(),
                a.kind.as_str(),
                a.memory,
            )),
            EventBody::Metric(_) => None,
        })
        .collect();
    assert_eq!(
        bodies,
        [
            ("invoker0", "guest/a", Some("sequence"), "rust:1.34", 128),
            ("invoker0", "guest/b", Some("sequence"), "rust:1.34", 512),
            ("controller0", "guest/ab", None, "sequence", 512),
            ("invoker0", "guest/a", Some("sequence"), "rust:1.34", 128),
            ("controller0", "guest/failing", None, "sequence", 128),
        ]
    );
    let seq_event = events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::Activation(a) if a.name == "guest/ab" => Some(a.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (
            seq_event.init_time,
            seq_event.duration,
            seq_event.status_code
        ),
        (0, seq.duration_ms, 0)
    );
    assert!(
        Invoker::with_sequences(
            InvokerConfig::new(),
            Arc::new(MemorySink::default()),
            vec![ActionSpec::new("/guest/a", &fx.exec)],
            vec![SequenceSpec::new("/guest/s", &["guest/missing"])],
        )
        .is_err()
    );
}

#[test]
fn each_container_starts_inside_a_memory_cgroup_with_the_action_limit_removed_with_it() {
    let fx = Fixture::new();
    let (inv, _) = invoker(&fx, InvokerConfig::new(), |s| s.with_memory_mb(192));
    // Said once by the emulator (a warning) and here: this machine gives no cgroup.
    let root = inv
        .cgroup_dir()
        .map(std::path::Path::to_path_buf)
        .ok_or("no usable memory cgroup on this machine (see the emulator's warning)");
    let Some(root) = whisk_testkit::require(
        "each_container_starts_inside_a_memory_cgroup_with_the_action_limit_removed_with_it",
        root,
    ) else {
        return;
    };
    let r = run(&inv, json!({"mode": "cgroup"}));
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", r.pid)).unwrap();
    let cg = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            std::fs::read_to_string(p.join("cgroup.procs"))
                .is_ok_and(|procs| procs.split_whitespace().any(|x| x == r.pid.to_string()))
        })
        .unwrap_or_else(|| panic!("no cgroup under {} holds {}: {own}", root.display(), r.pid));
    let name = cg.file_name().unwrap().to_str().unwrap();
    assert!(own.contains(name), "{own}");
    // In it from its first instruction, as `docker run` starts it: an action reads its cgroup
    // at start.
    let started_in = r.result["started_in"].as_str().unwrap();
    assert!(started_in.contains(name), "{started_in}");
    let limit = ["memory.limit_in_bytes", "memory.max"]
        .iter()
        .find_map(|f| std::fs::read_to_string(cg.join(f)).ok())
        .unwrap();
    assert_eq!(limit.trim(), (192u64 << 20).to_string());

    // A developer error removes the container, and its cgroup with it.
    let exited = run(&inv, json!({"mode": "exit"}));
    assert_eq!((exited.status_code, exited.pid), (2, r.pid));
    assert!(!cg.exists(), "{} removed with the container", cg.display());
}
