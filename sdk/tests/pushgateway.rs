//! The SDK on a real Pushgateway, driving the probe action over real pipes the way the Go
//! actionloop proxy does (stdin lines in, result lines from fd 3).
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Action, example_exe, signal};
use serde_json::json;
use whisk_testkit::{Pushgateway, free_port, wait_until};

const ACTION: &str = "/guest/pkg/probe";
const LONG: Duration = Duration::from_secs(60);

/// Sum of the samples of `name` whose labels include all of `want`, from the exposition text.
fn sample_sum(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        let map: HashMap<&str, &str> = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if want.iter().all(|(k, v)| map.get(k) == Some(v)) {
            *found.get_or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(f64::NAN);
        }
    }
    found
}

fn count(pgw: &Pushgateway, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    sample_sum(&pgw.metrics_text().ok()?, name, want)
}

fn instances(pgw: &Pushgateway) -> Vec<String> {
    let mut ids: Vec<String> = pgw
        .groups()
        .unwrap()
        .iter()
        .filter(|g| g.pointer("/labels/job").and_then(|j| j.as_str()) == Some("openwhisk_actions"))
        .filter_map(|g| {
            g.pointer("/labels/instance")
                .and_then(|i| i.as_str())
                .map(String::from)
        })
        .collect();
    ids.sort();
    ids
}

fn probe(url: &str, extra: &[(&str, &str)]) -> Action {
    let mut env = vec![("WHISK_METRICS_PUSHGATEWAY_URL", url)];
    env.extend_from_slice(extra);
    Action::spawn(&example_exe("probe_action"), ACTION, &env)
}

#[test]
fn group_holds_exactly_n_activations_after_n_invocations() {
    let pgw = Pushgateway::start(&[]).unwrap();
    let mut action = probe(&pgw.url(), &[("WHISK_METRICS_ON_PANIC", "error-result")]);
    let modes = [
        "ok", "ok", "error", "ok", "panic", "ok", "sleep", "ok", "ok", "error",
    ];
    for mode in modes {
        let (result, _) = action.invoke(json!({ "mode": mode, "sleep_ms": 5 }), LONG);
        match mode {
            "error" => assert_eq!(result, json!({"error": "asked to fail"})),
            "panic" => assert_eq!(
                result,
                json!({"error": "the action panicked: asked to panic"})
            ),
            _ => assert_eq!(result["ok"], json!(true), "{result}"),
        }
    }
    // The last push happens right after the last result: wait for it, bounded.
    let key = [
        ("namespace", "guest"),
        ("action", "pkg/probe"),
        ("job", "openwhisk_actions"),
    ];
    let total = |status: &str| {
        let mut want = key.to_vec();
        want.push(("status", status));
        count(&pgw, "whisk_activations_total", &want)
    };
    // (the ninth push already shows 7 successes; the tenth, an error, is the last)
    assert!(
        wait_until(Duration::from_secs(5), || total("success") == Some(7.0)
            && total("application_error") == Some(2.0)),
        "the tenth push never arrived:\n{}",
        pgw.metrics_text().unwrap()
    );
    assert_eq!(total("application_error"), Some(2.0));
    assert_eq!(total("developer_error"), Some(1.0));
    assert_eq!(count(&pgw, "probe_calls_total", &key), Some(10.0));
    assert_eq!(
        count(&pgw, "probe_calls_total", &[("mode", "ok")]),
        Some(6.0)
    );
    assert_eq!(
        count(&pgw, "probe_calls_total", &[("mode", "sleep")]),
        Some(1.0)
    );
    assert_eq!(
        count(&pgw, "whisk_activation_duration_seconds_count", &key),
        Some(10.0)
    );
    assert_eq!(count(&pgw, "whisk_push_failures_total", &key), Some(0.0));
    // the ninth push's duration is recorded by the time the tenth is sent
    assert!(
        count(&pgw, "whisk_last_push_duration_seconds", &key).is_some_and(|s| s > 0.0 && s < 1.0)
    );
    let info = [
        ("action_version", "0.0.1"),
        ("sdk_version", env!("CARGO_PKG_VERSION")),
    ];
    assert_eq!(count(&pgw, "whisk_container_info", &info), Some(1.0));
    assert!(count(&pgw, "whisk_cold_start_seconds", &key).is_some_and(|s| s > 0.0 && s < 10.0));
    let ids = instances(&pgw);
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(ids[0].len(), 32);
    assert!(
        ids[0]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    // Still exactly 10 after a later push: nothing is pushed twice or late. A malformed line
    // runs no handler but is answered and followed by a push; once the Pushgateway shows that
    // push (a newer push time), every push before it has landed too.
    let pushed_at = || count(&pgw, "push_time_seconds", &key);
    let before = pushed_at().expect("the group's push time");
    action.send_raw("not an activation\n");
    let answer = action
        .read_result(LONG)
        .expect("a malformed line gets a result line");
    assert!(answer.contains("error"), "{answer}");
    assert!(
        wait_until(Duration::from_secs(5), || pushed_at()
            .is_some_and(|t| t > before)),
        "the push after the malformed line never arrived:\n{}",
        pgw.metrics_text().unwrap()
    );
    assert_eq!(count(&pgw, "probe_calls_total", &key), Some(10.0));
}

#[test]
fn pushgateway_down_every_activation_answers_within_deadline_and_next_push_carries_all() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    for mode in ["after-result", "before-result"] {
        let mut action = probe(&url, &[("WHISK_METRICS_PUSH_MODE", mode)]);
        for _ in 0..5 {
            // A refused connection fails at once; the 2 s deadline leaves a loaded machine room
            // to schedule the action and is still far below LONG.
            let deadline = Duration::from_secs(2);
            let (result, took) = action.invoke(json!({"mode": "ok"}), deadline);
            assert_eq!(result["ok"], json!(true));
            assert!(
                took < deadline,
                "{mode}: answered after {took:?}, deadline {deadline:?}"
            );
        }
        let (_, _) = action.invoke(json!({"mode": "ok"}), LONG);
        let stderr = action.stderr();
        assert_eq!(
            stderr.matches("push to").count(),
            1,
            "{mode}: expected one failure notice per minute:\n{stderr}"
        );
        assert!(stderr.contains("failed (transport)"), "{mode}: {stderr}");
        // The Pushgateway comes back on the same address: once the back-off (1 s after the
        // first failure, longer after more) has passed, the next push carries everything.
        let pgw = Pushgateway::start_on(port, &[]).unwrap();
        let mut invoked = 6.0;
        let ok = wait_until(Duration::from_secs(20), || {
            action.invoke(json!({"mode": "ok"}), LONG);
            invoked += 1.0;
            std::thread::sleep(Duration::from_millis(100));
            count(&pgw, "probe_calls_total", &[("mode", "ok")]) == Some(invoked)
        });
        assert!(
            ok,
            "{mode}: counts not pushed after recovery:\n{}",
            pgw.metrics_text().unwrap()
        );
        let failures = count(
            &pgw,
            "whisk_push_failures_total",
            &[("reason", "transport")],
        );
        assert!(
            failures.is_some_and(|f| (1.0..=6.0).contains(&f)),
            "{mode}: {failures:?}"
        );
        drop(pgw);
    }
}

#[test]
fn black_holed_pushgateway_costs_the_timeout_once_then_pushes_back_off() {
    // A listener that never accepts: connections complete in the kernel's backlog and then
    // nothing ever answers, like a black-holed Pushgateway.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", hole.local_addr().unwrap());
    let timeout_ms = 2000u64;
    let timeout = Duration::from_millis(timeout_ms);
    let mut action = probe(
        &url,
        &[("WHISK_METRICS_TIMEOUT_MS", &timeout_ms.to_string())],
    );
    action.invoke(json!({"mode": "ok"}), LONG); // its push now hangs for the timeout
    let started = Instant::now();
    action.invoke(json!({"mode": "ok"}), LONG); // read only after that push timed out
    let first_wait = started.elapsed();
    let stderr = action.stderr();
    assert!(
        stderr.contains("failed (transport)"),
        "the notice must be printed before the next result line:\n{stderr}"
    );
    // It names the activation whose push failed (the first; this log is the second's).
    assert!(
        stderr.contains(&format!("after activation {:032x} failed", 1)),
        "the notice must name the activation whose push failed:\n{stderr}"
    );
    let next = Instant::now();
    for _ in 0..3 {
        action.invoke(json!({"mode": "ok"}), LONG);
    }
    let three_more = next.elapsed();
    // Without the back-off each of these would wait for another timed-out push (≥ 3 × 2 s).
    assert!(
        three_more < timeout,
        "three activations took {three_more:?} after a failed push (first wait {first_wait:?})"
    );
    assert_eq!(action.stderr().matches("push to").count(), 1);
    drop(hole);
}

#[test]
fn panic_pushes_developer_error_then_exits_without_a_result() {
    let pgw = Pushgateway::start(&[]).unwrap();
    let mut action = probe(&pgw.url(), &[]);
    action.invoke(json!({"mode": "ok"}), LONG);
    let answer = action.invoke_raw(json!({"mode": "panic"}), Duration::from_secs(10));
    assert_eq!(answer, None, "no result line after a panic");
    let status = action
        .wait_exit(Duration::from_secs(10))
        .expect("the process exits after a panic");
    assert_eq!(status.code(), Some(101), "{status:?}");
    let key = [("namespace", "guest"), ("action", "pkg/probe")];
    let total = |status: &str| {
        let mut want = key.to_vec();
        want.push(("status", status));
        count(&pgw, "whisk_activations_total", &want)
    };
    assert!(
        wait_until(Duration::from_secs(5), || total("developer_error")
            == Some(1.0)),
        "{}",
        pgw.metrics_text().unwrap()
    );
    assert_eq!(total("success"), Some(1.0));
    // the group stays (it carries the panic); the janitor prunes it later
    assert_eq!(instances(&pgw).len(), 1);
    assert!(action.stderr().contains("asked to panic"));
}

#[test]
fn non_object_result_is_passed_through_and_counted_as_developer_error() {
    let pgw = Pushgateway::start(&[]).unwrap();
    let mut action = probe(&pgw.url(), &[]);
    let line = action.invoke_raw(json!({"mode": "text"}), Duration::from_secs(20));
    assert_eq!(line.as_deref(), Some(r#""just text""#));
    // The platform removes the container right after this developer error, so the SDK pushes
    // before writing the line: frozen the moment the line is read, the count is already there.
    action.freeze();
    let pushed_first = count(
        &pgw,
        "whisk_activations_total",
        &[("status", "developer_error")],
    );
    action.thaw();
    assert_eq!(pushed_first, Some(1.0), "pushed before the result line");
    let (result, _) = action.invoke(json!({"mode": "ok"}), LONG);
    assert_eq!(result["ok"], json!(true), "the process keeps serving");
    assert!(wait_until(Duration::from_secs(5), || {
        count(&pgw, "whisk_activations_total", &[("status", "success")]) == Some(1.0)
    }));
    assert_eq!(
        count(
            &pgw,
            "whisk_activations_total",
            &[("status", "developer_error")]
        ),
        Some(1.0)
    );
}

#[test]
fn rejected_push_is_counted_with_the_gateways_reason_and_carried_by_the_next_good_push() {
    // The Pushgateway (consistency check on) answers 400 when `probe_calls_total` is a gauge in
    // another group: the clash a whisk-gateway answers with 409.
    let pgw = Pushgateway::start(&[]).unwrap();
    let clash = format!("{}/metrics/job/other", pgw.url());
    let put = |body: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "PUT",
                "--data-binary",
            ])
            .arg(body)
            .arg(&clash)
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).to_string())
    };
    let status = put("# TYPE probe_calls_total gauge\nprobe_calls_total{mode=\"ok\"} 1\n");
    assert_eq!(status.ok().as_deref(), Some("200"));
    let mut action = probe(&pgw.url(), &[]);
    action.invoke(json!({"mode": "ok"}), LONG);
    action.invoke(json!({"mode": "ok"}), LONG); // prints the notice of the first push
    let stderr = action.stderr();
    assert!(
        stderr.contains("failed (rejected): the Pushgateway answered 400: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("probe_calls_total"),
        "the gateway's reason: {stderr}"
    );
    let deleted = std::process::Command::new("curl")
        .args(["-s", "-X", "DELETE"])
        .arg(&clash)
        .status();
    assert!(deleted.is_ok_and(|s| s.success()));
    let mut invoked = 2.0;
    let ok = wait_until(Duration::from_secs(20), || {
        action.invoke(json!({"mode": "ok"}), LONG);
        invoked += 1.0;
        std::thread::sleep(Duration::from_millis(100));
        count(
            &pgw,
            "probe_calls_total",
            &[("mode", "ok"), ("job", "openwhisk_actions")],
        ) == Some(invoked)
    });
    assert!(ok, "{}", pgw.metrics_text().unwrap());
    assert!(
        count(&pgw, "whisk_push_failures_total", &[("reason", "rejected")])
            .is_some_and(|f| f >= 1.0)
    );
}

#[test]
fn an_activation_that_allocates_64_mib_and_burns_200_ms_is_measured_per_activation() {
    let pgw = Pushgateway::start(&[]).unwrap();
    let mut action = probe(&pgw.url(), &[]);
    let activations = |n: f64| {
        wait_until(Duration::from_secs(10), || {
            count(&pgw, "whisk_activations_total", &[("status", "success")]) == Some(n)
        })
    };
    let get = |name: &str, want: &[(&str, &str)]| count(&pgw, name, want).unwrap_or(f64::NAN);
    const MIB: f64 = 1024.0 * 1024.0;
    // 1: allocate and touch 64 MiB
    action.invoke(json!({"mode": "work", "mib": 64}), LONG);
    assert!(activations(1.0));
    let peak_sum = get("whisk_activation_memory_peak_bytes_sum", &[]);
    assert!(peak_sum >= 64.0 * MIB, "peak {peak_sum}");
    // 2: a light activation after it
    action.invoke(json!({"mode": "ok"}), LONG);
    assert!(activations(2.0));
    let light_peak = get("whisk_activation_memory_peak_bytes_sum", &[]) - peak_sum;
    let clear_refs_allowed = std::fs::write("/proc/self/clear_refs", b"5").is_ok();
    if clear_refs_allowed {
        assert!(
            light_peak < 32.0 * MIB,
            "the light activation's peak is small again: {light_peak}"
        );
        assert_eq!(
            get(
                "whisk_activation_memory_peak_bytes_bucket",
                &[("le", "3.3554432e+07")] // 32 MiB as the Pushgateway writes it
            ),
            1.0
        );
    } else {
        eprintln!(
            "/proc/self/clear_refs is not writable here: the peak is the process's since start \
             (the documented fallback)"
        );
        assert!(
            light_peak >= 64.0 * MIB,
            "fallback: peak since start, {light_peak}"
        );
    }
    // 3: burn 200 ms of CPU time
    let cpu_before = get("whisk_activation_cpu_seconds_sum", &[]);
    action.invoke(json!({"mode": "work", "cpu_ms": 200}), LONG);
    assert!(activations(3.0));
    let cpu = get("whisk_activation_cpu_seconds_sum", &[]) - cpu_before;
    // tolerance: at least what was burned, at most 100 ms more (the loop's own work)
    assert!(
        (0.2..0.3).contains(&cpu),
        "CPU observation {cpu} s for 200 ms burned"
    );
    assert_eq!(get("whisk_activation_cpu_seconds_count", &[]), 3.0);
    eprintln!(
        "measured: 64 MiB activation peak {:.1} MiB, light activation peak {:.1} MiB, 200 ms burn \
         observed {:.1} ms CPU",
        peak_sum / MIB,
        light_peak / MIB,
        cpu * 1e3
    );
    // container figures are present (cgroup or process fallback)
    assert!(get("whisk_container_memory_bytes", &[]) > 0.0);
    assert!(get("whisk_container_cpu_seconds_total", &[]) > 0.0);
}
#[test]
fn strict_mode_answers_before_deadline_when_the_pushgateway_hangs() {
    // A frozen Pushgateway accepts connections (kernel backlog) but never answers: the
    // timeout must stop at the deadline minus the margin.
    let mut pgw = Pushgateway::start(&[]).unwrap();
    let pid = pgw.process().pid();
    let mut action = probe(
        &pgw.url(),
        &[
            ("WHISK_METRICS_PUSH_MODE", "before-result"),
            ("WHISK_METRICS_TIMEOUT_MS", "5000"),
        ],
    );
    action.invoke(json!({"mode": "ok"}), LONG); // connection established
    signal(pid, libc::SIGSTOP);
    // The push stops at the deadline minus the SDK's 20 ms margin, long before the 5 s timeout.
    // The bound allows a loaded machine 1.5 s to write the answer after that (a tighter one
    // raced the scheduler) and still proves the deadline, not the timeout, ended the push.
    let deadline = Duration::from_millis(300);
    let slack = Duration::from_millis(1500);
    let (result, took) = action.invoke(json!({"mode": "ok"}), deadline);
    signal(pid, libc::SIGCONT);
    assert_eq!(result["ok"], json!(true));
    assert!(
        took < deadline + slack,
        "answered after {took:?}, deadline {deadline:?}"
    );
    // the Pushgateway answers again: once the back-off after the timed-out push has passed
    // (1 s), the next push carries everything
    let mut invoked = 2.0;
    let ok = wait_until(Duration::from_secs(20), || {
        action.invoke(json!({"mode": "ok"}), LONG);
        invoked += 1.0;
        std::thread::sleep(Duration::from_millis(100));
        count(&pgw, "probe_calls_total", &[("mode", "ok")]) == Some(invoked)
    });
    assert!(ok, "{}", pgw.metrics_text().unwrap());
}

#[test]
fn frozen_50ms_after_answering_has_its_counts_pushed_and_loses_nothing_after_thaw() {
    let pgw = Pushgateway::start(&[]).unwrap();
    let mut action = probe(&pgw.url(), &[]);
    // The 50 ms pause grace is real time: on a loaded machine a push can still be on the wire at
    // the freeze. Such a push must complete after the thaw (nothing lost); how many were late is
    // printed, and at least one of the five must have made it within the grace.
    let mut on_time = 0;
    for i in 1..=5u32 {
        action.invoke(json!({"mode": "ok"}), LONG);
        std::thread::sleep(Duration::from_millis(50));
        action.freeze();
        let frozen_at = Instant::now();
        let pushed = count(&pgw, "probe_calls_total", &[("mode", "ok")]);
        let success = count(&pgw, "whisk_activations_total", &[("status", "success")]);
        // hold the freeze a while, as a paused container would be
        std::thread::sleep(Duration::from_millis(100).saturating_sub(frozen_at.elapsed()));
        action.thaw();
        if pushed == Some(f64::from(i)) && success == Some(f64::from(i)) {
            on_time += 1;
        }
        assert!(
            wait_until(Duration::from_secs(30), || {
                count(&pgw, "probe_calls_total", &[("mode", "ok")]) == Some(f64::from(i))
                    && count(&pgw, "whisk_activations_total", &[("status", "success")])
                        == Some(f64::from(i))
            }),
            "activation {i}: never pushed"
        );
    }
    eprintln!("pushed within the 50 ms grace: {on_time} of 5");
    assert!(on_time >= 1, "no push completed within the 50 ms grace");
    action.invoke(json!({"mode": "ok"}), LONG);
    assert!(wait_until(Duration::from_secs(5), || {
        count(&pgw, "probe_calls_total", &[("mode", "ok")]) == Some(6.0)
    }));
}

/// A loopback relay in front of a real Pushgateway that holds each request until the test
/// releases one: a slow network, so that a push is surely in flight when the container freezes.
struct HoldingRelay {
    url: String,
    arrived: Receiver<()>,
    release: Sender<()>,
}

fn holding_relay(pgw: &Pushgateway) -> HoldingRelay {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let target = pgw.url().trim_start_matches("http://").to_string();
    let (arrived_tx, arrived) = channel();
    let (release, release_rx) = channel();
    let release_rx = Arc::new(Mutex::new(release_rx));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let (target, arrived, release) =
                (target.clone(), arrived_tx.clone(), Arc::clone(&release_rx));
            std::thread::spawn(move || relay_connection(client, &target, &arrived, &release));
        }
    });
    HoldingRelay {
        url,
        arrived,
        release,
    }
}

fn relay_connection(
    mut client: TcpStream,
    target: &str,
    arrived: &Sender<()>,
    release: &Mutex<Receiver<()>>,
) {
    let mut from_client = BufReader::new(client.try_clone().unwrap());
    while let Some(request) = read_http_message(&mut from_client) {
        let _ = arrived.send(());
        if release.lock().unwrap().recv().is_err() {
            return;
        }
        let mut upstream = TcpStream::connect(target).unwrap();
        upstream.write_all(&request).unwrap();
        let answer = read_http_message(&mut BufReader::new(upstream)).unwrap();
        if client.write_all(&answer).is_err() {
            return; // the SDK gave up on this connection
        }
    }
}

/// One HTTP/1.1 message with a `Content-Length` body (or none), as bytes.
fn read_http_message(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut message = Vec::new();
    let mut body_len = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            body_len = v.trim().parse().ok()?;
        }
        message.extend_from_slice(line.as_bytes());
        if line == "\r\n" {
            break;
        }
    }
    let head = message.len();
    message.resize(head + body_len, 0);
    reader.read_exact(&mut message[head..]).ok()?;
    Some(message)
}

#[test]
fn a_push_frozen_past_its_timeout_is_counted_frozen_and_the_thawing_activation_pushes_at_once() {
    let pgw = Pushgateway::start(&[]).unwrap();
    let relay = holding_relay(&pgw);
    // A 1 s timeout, so that the freeze surely lands before it on a loaded machine; the
    // container stays frozen well past it and the second more that marks a freeze.
    let mut action = probe(&relay.url, &[("WHISK_METRICS_TIMEOUT_MS", "1000")]);
    action.invoke(json!({"mode": "ok"}), LONG);
    relay
        .arrived
        .recv_timeout(Duration::from_secs(30))
        .expect("the first push reaches the relay");
    action.freeze();
    std::thread::sleep(Duration::from_millis(2500));
    action.thaw();
    // The held push reaches the Pushgateway after all (its answer finds the connection closed)
    // before the next one is let through, so that it cannot overwrite the next one's group.
    relay.release.send(()).unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        count(&pgw, "probe_calls_total", &[("mode", "ok")]) == Some(1.0)
    }));
    relay.release.send(()).unwrap();
    action.invoke(json!({"mode": "ok"}), LONG);
    let pushed = |calls: f64, frozen: f64| {
        count(&pgw, "probe_calls_total", &[("mode", "ok")]) == Some(calls)
            && count(&pgw, "whisk_push_failures_total", &[("reason", "frozen")]) == Some(frozen)
    };
    // With a back-off after the cut push, the thawing activation's push would be skipped.
    assert!(
        wait_until(Duration::from_secs(20), || pushed(2.0, 1.0)),
        "the activation that thawed the container pushed at once, its counts and the freeze: {}",
        pgw.metrics_text().unwrap()
    );
    for reason in ["transport", "unavailable", "rejected", "unauthorized"] {
        assert_eq!(
            count(&pgw, "whisk_push_failures_total", &[("reason", reason)]),
            Some(0.0),
            "{reason}"
        );
    }
    let stderr = action.stderr();
    assert!(
        stderr.contains(&format!("after activation {:032x} failed (frozen)", 1)),
        "the notice names the cut push:\n{stderr}"
    );
}

#[test]
fn strict_mode_frozen_right_after_answering_has_its_counts_pushed() {
    let pgw = Pushgateway::start(&[]).unwrap();
    let mut action = probe(&pgw.url(), &[("WHISK_METRICS_PUSH_MODE", "before-result")]);
    for i in 1..=5u32 {
        action.invoke(json!({"mode": "ok"}), LONG);
        action.freeze();
        let pushed = count(&pgw, "probe_calls_total", &[("mode", "ok")]);
        let success = count(&pgw, "whisk_activations_total", &[("status", "success")]);
        action.thaw();
        assert_eq!(
            pushed,
            Some(f64::from(i)),
            "activation {i}: not pushed before the result"
        );
        assert_eq!(success, Some(f64::from(i)));
    }
}

#[test]
fn a_host_name_is_looked_up_on_the_loop_thread_and_the_action_stays_single_threaded() {
    let pgw = Pushgateway::start(&[]).unwrap();
    let url = format!("http://localhost:{}", pgw.port());
    let mut action = probe(&url, &[]);
    for _ in 0..3 {
        action.invoke(json!({"mode": "ok"}), LONG);
    }
    assert!(wait_until(Duration::from_secs(5), || {
        count(&pgw, "probe_calls_total", &[("mode", "ok")]) == Some(3.0)
    }));
    // no resolver (or any other) thread of the SDK next to the loop's
    let threads = std::fs::read_dir(format!("/proc/{}/task", action.pid()))
        .unwrap()
        .count();
    assert_eq!(threads, 1);
}

/// This process's cgroup v1 memory directory, if it has one and it can hold a child.
fn own_memory_cgroup() -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    })?;
    let dir = std::path::Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
    dir.join("cgroup.procs").is_file().then_some(dir)
}

#[test]
fn in_a_memory_cgroup_the_container_figures_are_the_cgroups() {
    const TEST: &str = "in_a_memory_cgroup_the_container_figures_are_the_cgroups";
    let parent = own_memory_cgroup().ok_or("no cgroup v1 memory controller for this process");
    let Some(parent) = whisk_testkit::require(TEST, parent) else {
        return;
    };
    let child = parent.join(format!("whisk-sdk-test-{}", std::process::id()));
    let made = std::fs::create_dir(&child)
        .map_err(|e| format!("cannot create a child cgroup in {}: {e}", parent.display()));
    if whisk_testkit::require(TEST, made).is_none() {
        return;
    }
    let limit: u64 = 256 << 20;
    std::fs::write(child.join("memory.limit_in_bytes"), limit.to_string()).unwrap();
    // the action enters the cgroup before it starts (the SDK finds its cgroup at start)
    let wrapper = std::env::temp_dir().join(format!("whisk-sdk-cgroup-{}.sh", std::process::id()));
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho $$ > {}/cgroup.procs && exec {}\n",
            child.display(),
            example_exe("probe_action").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let pgw = Pushgateway::start(&[]).unwrap();
    let url = pgw.url();
    let mut action = Action::spawn(
        &wrapper,
        ACTION,
        &[("WHISK_METRICS_PUSHGATEWAY_URL", url.as_str())],
    );
    action.invoke(json!({"mode": "work", "mib": 32}), LONG);
    let got = wait_until(Duration::from_secs(5), || {
        count(&pgw, "whisk_container_memory_limit_bytes", &[]) == Some(limit as f64)
    });
    let usage = count(&pgw, "whisk_container_memory_bytes", &[]);
    let text = pgw.metrics_text().unwrap();
    drop(action);
    // the cgroup can be removed once its process is gone
    let _ = wait_until(Duration::from_secs(5), || {
        std::fs::remove_dir(&child).is_ok()
    });
    let _ = std::fs::remove_file(&wrapper);
    assert!(got, "limit not {limit}:\n{text}");
    assert!(
        usage.is_some_and(|u| u > 0.0 && u < limit as f64),
        "{usage:?}"
    );
}

#[test]
fn two_processes_of_the_same_action_get_two_groups() {
    let pgw = Pushgateway::start(&["--push.disable-consistency-check"]).unwrap();
    let mut a = probe(&pgw.url(), &[]);
    let mut b = probe(&pgw.url(), &[]);
    for _ in 0..3 {
        a.invoke(json!({"mode": "ok"}), LONG);
    }
    for _ in 0..5 {
        b.invoke(json!({"mode": "ok"}), LONG);
    }
    assert!(wait_until(Duration::from_secs(5), || instances(&pgw).len() == 2));
    let ids = instances(&pgw);
    assert_ne!(ids[0], ids[1]);
    let mut per_instance: Vec<f64> = ids
        .iter()
        .map(|id| count(&pgw, "probe_calls_total", &[("instance", id.as_str())]).unwrap())
        .collect();
    per_instance.sort_by(f64::total_cmp);
    assert_eq!(per_instance, vec![3.0, 5.0]);
}

#[test]
fn closing_stdin_deletes_the_group_and_exits_cleanly() {
    let pgw = Pushgateway::start(&[]).unwrap();
    let mut action = probe(&pgw.url(), &[]);
    action.invoke(json!({"mode": "ok"}), LONG);
    assert!(wait_until(Duration::from_secs(5), || instances(&pgw).len() == 1));
    let status = action.close().expect("exits after stdin closes");
    assert!(status.success(), "{status:?}");
    assert!(
        wait_until(Duration::from_secs(5), || instances(&pgw).is_empty()),
        "group not deleted: {:?}",
        instances(&pgw)
    );
}

#[test]
fn acknowledges_start_and_answers_malformed_lines_with_an_error() {
    let pgw = Pushgateway::start(&[]).unwrap();
    let mut action = probe(&pgw.url(), &[("__OW_WAIT_FOR_ACK", "true")]);
    let ack = action
        .read_result(Duration::from_secs(10))
        .expect("ack line");
    assert_eq!(ack, r#"{"ok":true}"#);
    action.send_raw("{this is not json\n");
    let line = action
        .read_result(Duration::from_secs(10))
        .expect("error line");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed activation input"),
        "{v}"
    );
    let (result, _) = action.invoke(json!({"mode": "ok"}), LONG);
    assert_eq!(result["ok"], json!(true));
}

#[test]
fn without_a_pushgateway_url_the_action_still_serves_and_says_so_once() {
    let mut action = Action::spawn(&example_exe("probe_action"), ACTION, &[]);
    for _ in 0..3 {
        let (result, _) = action.invoke(json!({"mode": "ok"}), LONG);
        assert_eq!(result["ok"], json!(true));
    }
    let stderr = action.stderr();
    assert_eq!(
        stderr
            .matches("WHISK_METRICS_PUSHGATEWAY_URL is not set")
            .count(),
        1,
        "{stderr}"
    );
}
