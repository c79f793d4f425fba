//! Latency of one push, straight into a Pushgateway and through `whisk-gateway` (API-key auth
//! against the emulator's controller, cache warm) into the same Pushgateway, measured in the
//! same run and interleaved so that a change in the machine's load hits both alike:
//!
//! 1. **1 pusher**: one thread, one keep-alive connection, pushes back to back (blocks of 50
//!    direct, then 50 through the gateway, and so on): the latency without any queueing.
//! 2. **Equal offered load**: the same paced total rate (`WHISK_BENCH_RATE` pushes/s, default
//!    300, below both setups' capacity on 2 cores) from `WHISK_BENCH_PACED_THREADS` (4)
//!    threads, open loop: push k of a thread is due at a fixed time, and its latency counts from
//!    then (a push delayed by the previous one's slowness is charged for it). Segments of
//!    `WHISK_BENCH_SEGMENT_S` (3 s) alternate direct / gateway, 2 each.
//!
//! A third setup is the floor of any proxy: a **relay** in this process that copies bytes
//! between the pusher and the same Pushgateway (one blocking thread per direction, no parsing):
//! what one extra loopback hop each way costs by itself on this machine.
//!
//! Every push is the `orders` action's real SDK body under its own container's grouping key,
//! into `WHISK_BENCH_CONTAINERS` (1000) groups created beforehand (the Pushgateway runs with
//! `--push.disable-consistency-check`, whose push cost does not grow with the groups). The
//! gateway's CPU per push is read from /proc's per-thread schedstat (nanoseconds) over its
//! 1-pusher blocks. Prints a table and the ratios.
//!
//! ```text
//! cargo build --release -p whisk-gateway && cargo build -p whisk-actions
//! WHISK_GATEWAY_BIN=target/release/whisk-gateway cargo bench -p whisk-gateway --profile dev --bench latency
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use whisk_emulator::controller::{Controller, new_api_key};
use whisk_grouping::GroupingKey;
use whisk_testkit::{Pushgateway, ServiceProcess, free_port, http_get};

mod common;
use common::{RawClient, Target, gateway_bin, orders_body, pgw_pid};

/// Pushes per block of the 1-pusher phase before switching setups.
const BLOCK: usize = 50;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

fn main() {
    let containers = env_usize("WHISK_BENCH_CONTAINERS", 1000);
    let samples = env_usize("WHISK_BENCH_SAMPLES", 2000);
    let rate = env_usize("WHISK_BENCH_RATE", 300);
    let paced_threads = env_usize("WHISK_BENCH_PACED_THREADS", 4);
    let segment = Duration::from_secs(env_usize("WHISK_BENCH_SEGMENT_S", 3) as u64);
    let body = orders_body();
    println!(
        "whisk-gateway latency bench: {containers} groups, {samples} 1-pusher pushes per setup, \
         paced {rate} pushes/s from {paced_threads} threads; body {} bytes",
        body.len()
    );

    let keys: Vec<(String, String)> = (0..10).map(|i| (format!("ns{i}"), new_api_key())).collect();
    let controller = Controller::start(
        &keys
            .iter()
            .map(|(ns, k)| (k.clone(), vec![ns.clone()]))
            .collect::<Vec<_>>(),
    )
    .expect("controller");
    let pgw = Pushgateway::start(&["--push.disable-consistency-check"]).expect("Pushgateway");
    let (gateway, port) = start_gateway(&pgw, &controller);
    let direct = Target::of(&pgw.url());
    let through = Target::of(&format!("http://127.0.0.1:{port}"));
    let relayed = Target::of(&relay(&direct.addr));
    let requests: Arc<Vec<(String, String)>> = Arc::new(
        (0..containers)
            .map(|i| {
                let (ns, key) = &keys[i % keys.len()];
                let path = GroupingKey::new("openwhisk_actions")
                    .with(
                        "instance",
                        format!("{:032x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                    )
                    .with("namespace", ns.as_str())
                    .with("action", "orders")
                    .path();
                let auth = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(key)
                );
                (path, auth)
            })
            .collect(),
    );

    // Create every group through the gateway (warms its auth cache and connection pool).
    let mut client = RawClient::new(through.clone());
    for (path, auth) in requests.iter() {
        push(&mut client, path, auth, &body);
    }

    // 1 pusher, interleaved blocks.
    let gw_pid = gateway.pid();
    let pgw_pid = pgw_pid(&pgw);
    let mut direct_client = RawClient::new(direct.clone());
    let mut gw_client = RawClient::new(through.clone());
    let mut relay_client = RawClient::new(relayed.clone());
    let mut single = [
        Vec::with_capacity(samples),
        Vec::with_capacity(samples),
        Vec::with_capacity(samples),
    ];
    let mut gw_cpu_ns = 0u64;
    let mut pgw_cpu_ns = [0u64; 3];
    let mut i = 0usize;
    while single[1].len() < samples {
        for (setup, client) in [
            (0, &mut direct_client),
            (1, &mut gw_client),
            (2, &mut relay_client),
        ] {
            let gw_before = cpu_ns(gw_pid);
            let pgw_before = cpu_ns(pgw_pid);
            for k in 0..BLOCK {
                let (path, auth) = &requests[(i + k) % requests.len()];
                let t = Instant::now();
                push(client, path, auth, &body);
                single[setup].push(t.elapsed());
            }
            pgw_cpu_ns[setup] += cpu_ns(pgw_pid) - pgw_before;
            if setup == 1 {
                gw_cpu_ns += cpu_ns(gw_pid) - gw_before;
            }
        }
        i += BLOCK;
    }
    let gw_cpu_us = gw_cpu_ns as f64 / 1e3 / single[1].len() as f64;
    let pgw_cpu_us = pgw_cpu_ns.map(|n| n as f64 / 1e3 / samples as f64);

    // Equal offered load, alternating segments.
    let mut paced = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..2 {
        for (setup, target) in [(0, &direct), (1, &through), (2, &relayed)] {
            paced[setup].extend(paced_segment(
                target,
                &requests,
                &body,
                rate,
                paced_threads,
                segment,
            ));
        }
    }

    for v in single.iter_mut().chain(paced.iter_mut()) {
        v.sort_unstable();
    }
    let pct = |lat: &[Duration], p: f64| {
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1000.0
    };
    println!();
    println!(
        "| setup | p50, 1 pusher | p99, 1 pusher | p50 at {rate}/s | p99 at {rate}/s | gateway CPU/push | Pushgateway CPU/push (1 pusher) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (setup, name) in [
        "direct, 1 Pushgateway",
        "gateway, 1 Pushgateway",
        "relay (copies bytes, no work), 1 Pushgateway",
    ]
    .iter()
    .enumerate()
    {
        println!(
            "| {name} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {} | {:.0} µs |",
            pct(&single[setup], 0.5),
            pct(&single[setup], 0.99),
            pct(&paced[setup], 0.5),
            pct(&paced[setup], 0.99),
            if setup == 1 {
                format!("{gw_cpu_us:.0} µs")
            } else {
                "–".to_string()
            },
            pgw_cpu_us[setup],
        );
    }
    println!();
    println!(
        "gateway / direct, 1 pusher: p50 {:.2}x (target <= 1.3x), p99 {:.2}x; at {rate}/s: p50 {:.2}x, p99 {:.2}x; added p50 {:.3} ms (1 pusher), {:.3} ms (paced)",
        pct(&single[1], 0.5) / pct(&single[0], 0.5),
        pct(&single[1], 0.99) / pct(&single[0], 0.99),
        pct(&paced[1], 0.5) / pct(&paced[0], 0.5),
        pct(&paced[1], 0.99) / pct(&paced[0], 0.99),
        pct(&single[1], 0.5) - pct(&single[0], 0.5),
        pct(&paced[1], 0.5) - pct(&paced[0], 0.5),
    );
    println!(
        "the relay alone (one extra loopback hop each way, no work): 1 pusher p50 {:.2}x direct (added {:.3} ms); at {rate}/s p50 {:.2}x",
        pct(&single[2], 0.5) / pct(&single[0], 0.5),
        pct(&single[2], 0.5) - pct(&single[0], 0.5),
        pct(&paced[2], 0.5) / pct(&paced[0], 0.5),
    );
    drop(gateway);
}

fn push(client: &mut RawClient, path: &str, auth: &str, body: &str) {
    let (status, answer) = client
        .put(path, auth, body.as_bytes())
        .unwrap_or_else(|e| panic!("push failed: {e}"));
    assert!(
        (200..300).contains(&status),
        "push answered {status}: {}",
        String::from_utf8_lossy(&answer)
    );
}

/// `threads` threads push at `rate` pushes/s in total for `length`; each push's latency counts
/// from the time it was due.
fn paced_segment(
    target: &Target,
    requests: &Arc<Vec<(String, String)>>,
    body: &str,
    rate: usize,
    threads: usize,
    length: Duration,
) -> Vec<Duration> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now() + Duration::from_millis(50);
    let interval = Duration::from_secs_f64(threads as f64 / rate as f64);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (out, requests) = (Arc::clone(&out), Arc::clone(requests));
            let (target, body) = (target.clone(), body.to_string());
            std::thread::spawn(move || {
                let mut client = RawClient::new(target);
                let offset = interval.mul_f64(t as f64 / threads as f64);
                let mut mine = Vec::new();
                for k in 0.. {
                    let due = start + offset + interval * k;
                    if due > start + length {
                        break;
                    }
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let (path, auth) = &requests[(k as usize * threads + t) % requests.len()];
                    push(&mut client, path, auth, &body);
                    mine.push(due.elapsed());
                }
                out.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("paced pusher");
    }
    std::mem::take(&mut *out.lock().unwrap())
}

fn start_gateway(pgw: &Pushgateway, controller: &Controller) -> (ServiceProcess, u16) {
    let port = free_port();
    let args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--openwhisk-api-host".to_string(),
        controller.url(),
        "--log-level".to_string(),
        "warn".to_string(),
        "--pushgateway-url".to_string(),
        pgw.url(),
    ];
    let mut process = ServiceProcess::spawn(
        "whisk-gateway",
        &gateway_bin(),
        &args,
        "cargo build -p whisk-gateway",
    )
    .expect("gateway starts");
    let ready = format!("http://127.0.0.1:{port}/readyz");
    process
        .wait_ready(Duration::from_secs(30), || http_get(&ready).is_ok())
        .expect("gateway ready");
    (process, port)
}

/// Starts a relay to `upstream` (`host:port`): each accepted connection gets a connection to
/// `upstream` and two threads copying bytes, one each way. Returns its URL.
fn relay(upstream: &str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("relay listener");
    let url = format!("http://{}", listener.local_addr().expect("relay addr"));
    let upstream = upstream.to_string();
    std::thread::spawn(move || {
        for inbound in listener.incoming().flatten() {
            let Ok(outbound) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            for s in [&inbound, &outbound] {
                s.set_nodelay(true).expect("nodelay");
            }
            let pairs = [
                (
                    inbound.try_clone().expect("clone"),
                    outbound.try_clone().expect("clone"),
                ),
                (outbound, inbound),
            ];
            for (mut from, mut to) in pairs {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    url
}

/// CPU time of every thread of `pid` so far, in nanoseconds (/proc/<pid>/task/*/schedstat).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}
