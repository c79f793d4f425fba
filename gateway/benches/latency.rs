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
//! A second gateway runs with `--validation-cache-bytes 0`: every body parsed, as for a
//! container's first push (or a body whose shape changed).
//!
//! A further setup is the floor of any proxy: a **relay** in this process that copies bytes
//! between the pusher and the same Pushgateway (one blocking thread per direction, no parsing):
//! what one extra loopback hop each way costs by itself on this machine.
//!
//! `WHISK_GATEWAY_BASELINE_BIN` (optional) adds a second gateway build (e.g. an older commit's)
//! as a further setup taking turns with the others: a before/after comparison in one run.
//!
//! Every push is the `orders` action's real SDK body (16 versions that differ in their values,
//! as a container's pushes after successive activations do) under its own container's grouping
//! key, into `WHISK_BENCH_CONTAINERS` (1000) groups created beforehand (the Pushgateway runs with
//! `--push.disable-consistency-check`, whose push cost does not grow with the groups). The
//! gateway's CPU per push is read from /proc's per-thread schedstat (nanoseconds) over its
//! 1-pusher blocks. Prints a table and the ratios.
//!
//! The processes inherit the environment; the header prints `GOMAXPROCS` and
//! `WHISK_GATEWAY_WORKER_THREADS`. With `GOMAXPROCS=1` a lone Pushgateway's own latency turns
//! erratic here (direct pushes slower than through the relay), so the ratios are taken with
//! Go's default (docs/benchmarks.md, "Gateway").
//!
//! ```text
//! cargo build --release -p whisk-gateway && cargo build -p whisk-actions
//! WHISK_GATEWAY_BIN=target/release/whisk-gateway cargo bench -p whisk-gateway --profile dev --bench latency
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use whisk_emulator::controller::{Controller, new_api_key};
use whisk_testkit::{Pushgateway, ServiceProcess, free_port, http_get};

mod common;
use common::{
    RawClient, Target, container_requests, env_usize, gateway_bin, orders_body, pgw_pid,
    resolve_bin, value_variants,
};

/// Pushes per block of the 1-pusher phase before switching setups.
const BLOCK: usize = 50;

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
    println!("{}", common::cpu_settings());
    // Successive pushes differ in their values, as a container's after successive activations.
    let bodies = Arc::new(value_variants(&body, 16));
    let body_of = |i: usize| bodies[i % bodies.len()].as_str();

    let keys: Vec<(String, String)> = (0..10).map(|i| (format!("ns{i}"), new_api_key())).collect();
    let controller = Controller::start(
        &keys
            .iter()
            .map(|(ns, k)| (k.clone(), vec![ns.clone()]))
            .collect::<Vec<_>>(),
    )
    .expect("controller");
    let pgw = Pushgateway::start(&["--push.disable-consistency-check"]).expect("Pushgateway");
    let direct = Target::of(&pgw.url());
    // The setups, in the order they take turns: (name, target, the gateway process).
    let mut setups: Vec<(String, Target, Option<ServiceProcess>)> =
        vec![("direct, 1 Pushgateway".to_string(), direct.clone(), None)];
    let (gateway, port) = start_gateway(&gateway_bin(), &pgw, &controller, &[]);
    setups.push((
        "gateway, 1 Pushgateway".to_string(),
        Target::of(&format!("http://127.0.0.1:{port}")),
        Some(gateway),
    ));
    let (gateway, port) = start_gateway(
        &gateway_bin(),
        &pgw,
        &controller,
        &["--validation-cache-bytes", "0"],
    );
    setups.push((
        "gateway, validation cache off (every body parsed), 1 Pushgateway".to_string(),
        Target::of(&format!("http://127.0.0.1:{port}")),
        Some(gateway),
    ));
    setups.push((
        "relay (copies bytes, no work), 1 Pushgateway".to_string(),
        Target::of(&relay(&direct.addr)),
        None,
    ));
    if let Some(baseline) = std::env::var_os("WHISK_GATEWAY_BASELINE_BIN") {
        let bin = resolve_bin(std::path::PathBuf::from(baseline));
        let (gateway, port) = start_gateway(&bin, &pgw, &controller, &[]);
        setups.push((
            format!("gateway (baseline {}), 1 Pushgateway", short(&bin)),
            Target::of(&format!("http://127.0.0.1:{port}")),
            Some(gateway),
        ));
    }
    let requests = Arc::new(container_requests(containers, &keys));

    // Create every group through each gateway (warms its auth cache and connection pool).
    for (_, target, process) in &setups {
        if process.is_some() {
            let mut client = RawClient::new(target.clone());
            for (j, (path, auth)) in requests.iter().enumerate() {
                push(&mut client, path, auth, body_of(j));
            }
        }
    }

    // 1 pusher, interleaved blocks.
    let pgw_pid = pgw_pid(&pgw);
    let n = setups.len();
    let mut clients: Vec<RawClient> = setups
        .iter()
        .map(|(_, t, _)| RawClient::new(t.clone()))
        .collect();
    let mut single: Vec<Vec<Duration>> = vec![Vec::with_capacity(samples); n];
    let mut gw_cpu_ns = vec![0u64; n];
    let mut pgw_cpu_ns = vec![0u64; n];
    let mut i = 0usize;
    while single[0].len() < samples {
        for (setup, client) in clients.iter_mut().enumerate() {
            let gw_pid = setups[setup].2.as_ref().map(ServiceProcess::pid);
            let gw_before = gw_pid.map_or(0, cpu_ns);
            let pgw_before = cpu_ns(pgw_pid);
            for k in 0..BLOCK {
                let (path, auth) = &requests[(i + k) % requests.len()];
                let t = Instant::now();
                push(client, path, auth, body_of(i + k + 1));
                single[setup].push(t.elapsed());
            }
            pgw_cpu_ns[setup] += cpu_ns(pgw_pid) - pgw_before;
            gw_cpu_ns[setup] += gw_pid.map_or(0, cpu_ns) - gw_before;
        }
        i += BLOCK;
    }
    let per_push_us = |ns: u64| ns as f64 / 1e3 / samples as f64;

    // Equal offered load, alternating segments.
    let mut paced: Vec<Vec<Duration>> = vec![Vec::new(); n];
    for _ in 0..2 {
        for (setup, (_, target, _)) in setups.iter().enumerate() {
            paced[setup].extend(paced_segment(
                target,
                &requests,
                &bodies,
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
    for (setup, (name, _, process)) in setups.iter().enumerate() {
        println!(
            "| {name} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {} | {:.0} µs |",
            pct(&single[setup], 0.5),
            pct(&single[setup], 0.99),
            pct(&paced[setup], 0.5),
            pct(&paced[setup], 0.99),
            if process.is_some() {
                format!("{:.0} µs", per_push_us(gw_cpu_ns[setup]))
            } else {
                "–".to_string()
            },
            per_push_us(pgw_cpu_ns[setup]),
        );
    }
    println!();
    for setup in 1..n {
        println!(
            "{} / direct: 1 pusher p50 {:.2}x (target <= 1.3x; added {:.3} ms), p99 {:.2}x; at {rate}/s p50 {:.2}x (added {:.3} ms), p99 {:.2}x",
            setups[setup].0,
            pct(&single[setup], 0.5) / pct(&single[0], 0.5),
            pct(&single[setup], 0.5) - pct(&single[0], 0.5),
            pct(&single[setup], 0.99) / pct(&single[0], 0.99),
            pct(&paced[setup], 0.5) / pct(&paced[0], 0.5),
            pct(&paced[setup], 0.5) - pct(&paced[0], 0.5),
            pct(&paced[setup], 0.99) / pct(&paced[0], 0.99),
        );
    }
    drop(setups);
}

/// The last two components of `path` (enough to tell two builds apart).
fn short(path: &str) -> String {
    let parts: Vec<&str> = path.rsplit('/').take(3).collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
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
    bodies: &Arc<Vec<String>>,
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
            let (target, bodies) = (target.clone(), Arc::clone(bodies));
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
                    let n = k as usize * threads + t;
                    let (path, auth) = &requests[n % requests.len()];
                    push(&mut client, path, auth, &bodies[(n + 1) % bodies.len()]);
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

fn start_gateway(
    bin: &str,
    pgw: &Pushgateway,
    controller: &Controller,
    extra: &[&str],
) -> (ServiceProcess, u16) {
    let port = free_port();
    let mut args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--openwhisk-api-host".to_string(),
        controller.url(),
        "--log-level".to_string(),
        "warn".to_string(),
        "--pushgateway-url".to_string(),
        pgw.url(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut process =
        ServiceProcess::spawn("whisk-gateway", bin, &args, "cargo build -p whisk-gateway")
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
