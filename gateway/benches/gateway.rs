//! Scale bench of the push path: N simulated containers, each pushing the `orders` action's
//! real SDK body, (a) straight into one Pushgateway, (b) through `whisk-gateway` (API-key auth
//! against the emulator's controller, cache warm) into 1 Pushgateway and (c) into 3. Every
//! Pushgateway runs with `--push.disable-consistency-check`, as deployed. Prints a table.
//!
//! ```text
//! cargo build --release -p whisk-gateway && cargo build -p whisk-actions
//! GOMAXPROCS=1 WHISK_GATEWAY_WORKER_THREADS=1 \
//! WHISK_GATEWAY_BIN=target/release/whisk-gateway WHISK_BENCH_CONTAINERS=10000 \
//!     cargo bench -p whisk-gateway --profile dev --bench gateway
//! ```
//!
//! The processes inherit the environment: `GOMAXPROCS=1 WHISK_GATEWAY_WORKER_THREADS=1` give
//! each Pushgateway and the gateway one CPU's worth of threads, as the manifests' CPU limits do
//! (without them every process may use both cores of this machine); the header says which.
//!
//! Knobs: `WHISK_BENCH_CONTAINERS` (10000), `WHISK_BENCH_CONCURRENCY` (16 pushing threads),
//! `WHISK_BENCH_NAMESPACES` (100 namespaces, one API key each), `WHISK_GATEWAY_BIN` (the
//! gateway executable, absolute or relative to the workspace root; default: the one cargo
//! built for this bench, in the bench's profile). Each setup runs two rounds: the first creates
//! every group (and warms the auth cache), the second — the measured one — is every container
//! pushing again into the full store. Then up to 1 000 containers push once more from a single
//! thread (the latency without queueing behind other pushes), and each Pushgateway is scraped
//! once (`/metrics`: time and size, and its Go heap's size at the last collection) and its RSS
//! read from /proc. The gateway's peak RSS (VmHWM)
//! is read after it has rebuilt its family table (every shard's whole `/api/v1/metrics`, every
//! 60 s by default) at least once over the full store, so it includes that read. CPU per push (gateway, all
//! Pushgateways together, and this process's pushing threads) is utime+stime over the measured
//! round divided by the pushes: unlike the wall-clock figures it barely moves with the load of
//! other processes on the machine.
//!
//! The pushing threads use a minimal keep-alive HTTP/1.1 client ([`RawClient`]): the bench runs
//! on the same cores as what it measures, and a general-purpose client built in the dev
//! profile took a sizeable share of them.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use whisk_emulator::controller::{Controller, new_api_key};
use whisk_testkit::{Pushgateway, ServiceProcess, free_port, http_get};

mod common;
use common::{
    RawClient, Target, container_requests, gateway_bin, orders_body, pgw_pid, value_variants,
};

const PGW_FLAGS: [&str; 1] = ["--push.disable-consistency-check"];
/// The gateway's default `--family-resync-interval`.
const RESYNC_INTERVAL: Duration = Duration::from_secs(60);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let containers = env_usize("WHISK_BENCH_CONTAINERS", 10_000);
    let concurrency = env_usize("WHISK_BENCH_CONCURRENCY", 16);
    let namespaces = env_usize("WHISK_BENCH_NAMESPACES", 100);
    let body = orders_body();
    let series = body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    println!(
        "whisk-gateway scale bench: {containers} containers, {concurrency} pushing threads, \
         {namespaces} namespaces; body: the `orders` action's real push, {} bytes, {series} series",
        body.len()
    );
    println!("{}", common::cpu_settings());
    // Successive pushes of a container differ in their values (its validation-cache hits).
    let bodies = value_variants(&body, 16);

    let keys: Vec<(String, String)> = (0..namespaces)
        .map(|i| (format!("ns{i}"), new_api_key()))
        .collect();
    let controller = Controller::start(
        &keys
            .iter()
            .map(|(ns, k)| (k.clone(), vec![ns.clone()]))
            .collect::<Vec<_>>(),
    )
    .expect("controller");

    let setups = [
        ("direct, 1 Pushgateway", 1, false),
        ("gateway, 1 Pushgateway", 1, true),
        ("gateway, 3 Pushgateways", 3, true),
    ];
    let rows: Vec<Row> = setups
        .iter()
        .map(|(name, shards, through)| {
            run_setup(
                name,
                *shards,
                *through,
                &controller,
                &keys,
                &bodies,
                containers,
                concurrency,
            )
        })
        .collect();

    println!();
    println!(
        "| setup | pushes/s | push p50 | push p99 | push mean | p50, 1 pusher | per Pushgateway: groups, scrape time, scrape size, RSS, live heap | gateway CPU/push | gateway peak RSS | Pushgateways' CPU/push | bench client CPU/push |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{}", r.line());
    }
    let direct = &rows[0];
    let one = &rows[1];
    let three = &rows[2];
    println!();
    println!(
        "gateway p50 / direct p50 = {:.2}x (target <= 1.3x); mean {:.2}x; with 1 pusher (no queueing, measured minutes apart: see --bench latency): {:.2}x",
        one.p50_ms / direct.p50_ms,
        one.mean_ms / direct.mean_ms,
        one.single_p50_ms / direct.single_p50_ms
    );
    let cpu = |r: &Row| r.client_cpu_us + r.pgw_cpu_us + r.gateway_cpu_us.unwrap_or(0.0);
    println!(
        "CPU per push, all processes on the 2 shared cores: direct {:.0} µs, gateway->1 {:.0} µs ({:.2}x), gateway->3 {:.0} µs",
        cpu(direct),
        cpu(one),
        cpu(one) / cpu(direct),
        cpu(three)
    );
    let third_rss = one.pgws[0].rss_mb / 3.0;
    let third_size = one.pgws[0].scrape_mb / 3.0;
    let third_heap = one.pgws[0].live_heap_mb / 3.0;
    for (i, p) in three.pgws.iter().enumerate() {
        println!(
            "3 shards, shard {i}: RSS {:.0} MB = {:.2}x a third of one ({:.0} MB); scrape {:.1} MB = {:.2}x a third ({:.1} MB) (target <= 1.2x); live heap {:.0} MB = {:.2}x a third ({:.0} MB)",
            p.rss_mb,
            p.rss_mb / third_rss,
            third_rss,
            p.scrape_mb,
            p.scrape_mb / third_size,
            third_size,
            p.live_heap_mb,
            p.live_heap_mb / third_heap,
            third_heap
        );
    }
    println!(
        "pushes/s with 3 shards / with 1 = {:.2} (target >= 1.0)",
        three.pushes_per_s / one.pushes_per_s
    );
}

struct PgwFigures {
    groups: usize,
    scrape_s: f64,
    scrape_mb: f64,
    rss_mb: f64,
    /// The Go heap live at the last collection: `go_memstats_next_gc_bytes` (the heap goal) ÷ 2
    /// with the default `GOGC=100`. RSS also holds the garbage of however long ago the collector
    /// last ran, so it swings between runs; this does not.
    live_heap_mb: f64,
}

struct Row {
    setup: String,
    pushes_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Mean latency (the saturated p50 alone misleads: the direct Pushgateway's latency under
    /// 16 pushers is bimodal).
    mean_ms: f64,
    pgws: Vec<PgwFigures>,
    gateway_cpu_us: Option<f64>,
    gateway_rss_mb: Option<f64>,
    /// p50 with a single pusher (no queueing behind other pushes).
    single_p50_ms: f64,
    /// CPU per push of every Pushgateway together.
    pgw_cpu_us: f64,
    /// CPU per push of this process (the pushing threads).
    client_cpu_us: f64,
}

impl Row {
    fn line(&self) -> String {
        let pgws: Vec<String> = self
            .pgws
            .iter()
            .map(|p| {
                format!(
                    "{} groups, {:.2} s, {:.1} MB, {:.0} MB, {:.0} MB",
                    p.groups, p.scrape_s, p.scrape_mb, p.rss_mb, p.live_heap_mb
                )
            })
            .collect();
        format!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {} | {} | {} | {:.0} µs | {:.0} µs |",
            self.setup,
            self.pushes_per_s,
            self.p50_ms,
            self.p99_ms,
            self.mean_ms,
            self.single_p50_ms,
            pgws.join("; "),
            self.gateway_cpu_us
                .map_or("–".to_string(), |c| format!("{c:.0} µs")),
            self.gateway_rss_mb
                .map_or("–".to_string(), |m| format!("{m:.0} MB")),
            self.pgw_cpu_us,
            self.client_cpu_us,
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn run_setup(
    name: &str,
    shards: usize,
    through_gateway: bool,
    controller: &Controller,
    keys: &[(String, String)],
    bodies: &[String],
    containers: usize,
    concurrency: usize,
) -> Row {
    eprintln!("== {name}");
    if through_gateway {
        eprintln!("   gateway: {}", gateway_bin());
    }
    let pgws: Vec<Pushgateway> = (0..shards)
        .map(|_| Pushgateway::start(&PGW_FLAGS).expect("Pushgateway"))
        .collect();
    let mut gateway = through_gateway.then(|| start_gateway(&pgws, controller));
    let target = Target::of(&match &gateway {
        Some((_, port)) => format!("http://127.0.0.1:{port}"),
        None => pgws[0].url(),
    });
    let requests = Arc::new(container_requests(containers, keys));

    let (_, warm_s) = round(&target, &requests, bodies, 0, concurrency);
    eprintln!("   round 1 (creates the groups): {:.1} s", warm_s);
    let gw_pid = gateway.as_mut().map(|(p, _)| p.pid());
    let pgw_pids: Vec<u32> = pgws.iter().map(pgw_pid).collect();
    let ticks = |pids: &[u32]| pids.iter().map(|p| cpu_ticks(*p)).sum::<u64>();
    let gw_before = gw_pid.map(cpu_ticks);
    let pgw_before = ticks(&pgw_pids);
    let own_before = cpu_ticks(std::process::id());
    let (latencies, secs) = round(&target, &requests, bodies, 1, concurrency);
    let own_after = cpu_ticks(std::process::id());
    let pgw_after = ticks(&pgw_pids);
    let gw_after = gw_pid.map(cpu_ticks);
    eprintln!("   round 2 (measured): {:.1} s", secs);
    // The peak RSS must include a family-table rebuild over the full store: wait (bounded)
    // until every shard has been read once more after the measured round.
    if let Some((_, port)) = &gateway {
        // Two rounds' worth of shard reads: at least one whole round began after this read.
        let target = resyncs_ok(*port) + 2 * shards as u64;
        let deadline = Instant::now() + RESYNC_INTERVAL * 3;
        while resyncs_ok(*port) < target && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            resyncs_ok(*port) >= target,
            "no family-table rebuild over the full store within {:?}",
            RESYNC_INTERVAL * 3
        );
    }
    // Latency without queueing: one pusher, the first containers pushing once more.
    let (mut single, _) = round_of(&target, &requests, containers.min(1000), bodies, 2, 1);
    single.sort_unstable();

    let mut lat = latencies;
    lat.sort_unstable();
    let pct = |lat: &[Duration], p: f64| {
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1000.0
    };
    let figures: Vec<PgwFigures> = pgws.iter().map(pgw_figures).collect();
    let total: usize = figures.iter().map(|f| f.groups).sum();
    assert_eq!(total, containers, "every container's group is stored once");
    let ticks_per_s = clock_ticks();
    let per_push_us = |t: u64| t as f64 / ticks_per_s * 1e6 / lat.len() as f64;
    let gateway_cpu_us = match (gw_before, gw_after) {
        (Some(a), Some(b)) => Some(per_push_us(b - a)),
        _ => None,
    };
    let gateway_rss_mb = gw_pid.map(peak_rss_mb);
    Row {
        setup: name.to_string(),
        pushes_per_s: lat.len() as f64 / secs,
        p50_ms: pct(&lat, 0.5),
        p99_ms: pct(&lat, 0.99),
        mean_ms: lat.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0 / lat.len() as f64,
        single_p50_ms: pct(&single, 0.5),
        pgws: figures,
        gateway_cpu_us,
        gateway_rss_mb,
        pgw_cpu_us: per_push_us(pgw_after - pgw_before),
        client_cpu_us: per_push_us(own_after - own_before),
    }
}

fn start_gateway(pgws: &[Pushgateway], controller: &Controller) -> (ServiceProcess, u16) {
    let port = free_port();
    let mut args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--openwhisk-api-host".to_string(),
        controller.url(),
        "--log-level".to_string(),
        "warn".to_string(),
    ];
    for p in pgws {
        args.extend(["--pushgateway-url".to_string(), p.url()]);
    }
    let bin = gateway_bin();
    let mut process =
        ServiceProcess::spawn("whisk-gateway", &bin, &args, "cargo build -p whisk-gateway")
            .expect("gateway starts");
    let ready = format!("http://127.0.0.1:{port}/readyz");
    process
        .wait_ready(Duration::from_secs(30), || http_get(&ready).is_ok())
        .expect("gateway ready");
    (process, port)
}

/// Every container pushes once with `concurrency` threads; returns each push's latency and the
/// round's wall time.
fn round(
    target: &Target,
    requests: &Arc<Vec<(String, String)>>,
    bodies: &[String],
    round_no: usize,
    concurrency: usize,
) -> (Vec<Duration>, f64) {
    round_of(
        target,
        requests,
        requests.len(),
        bodies,
        round_no,
        concurrency,
    )
}

/// The first `count` requests, pushed by `concurrency` threads over keep-alive connections of
/// [`RawClient`]; container `i` pushes `bodies[(i + round_no) % bodies.len()]`, so its pushes
/// in successive rounds differ in their values, as after successive activations.
fn round_of(
    target: &Target,
    requests: &Arc<Vec<(String, String)>>,
    count: usize,
    bodies: &[String],
    round_no: usize,
    concurrency: usize,
) -> (Vec<Duration>, f64) {
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let started = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, out, requests) = (Arc::clone(&next), Arc::clone(&out), Arc::clone(requests));
            let (target, bodies) = (target.clone(), bodies.to_vec());
            std::thread::spawn(move || {
                let mut client = RawClient::new(target);
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((path, auth)) = requests.get(i).filter(|_| i < count) else {
                        break;
                    };
                    let body = &bodies[(i + round_no) % bodies.len()];
                    let t = Instant::now();
                    let (status, answer) = client
                        .put(path, auth, body.as_bytes())
                        .unwrap_or_else(|e| panic!("push failed: {e}"));
                    let elapsed = t.elapsed();
                    assert!(
                        (200..300).contains(&status),
                        "push answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                    mine.push(elapsed);
                }
                out.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("pusher thread");
    }
    let secs = started.elapsed().as_secs_f64();
    let lat = std::mem::take(&mut *out.lock().unwrap());
    (lat, secs)
}

/// Scrapes `/metrics` until every queued write is applied (the group count is stable), then
/// reports the last scrape's time and size, the group count and the RSS.
fn pgw_figures(pgw: &Pushgateway) -> PgwFigures {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let url = format!("{}/metrics", pgw.url());
    let mut last_groups = usize::MAX;
    for _ in 0..30 {
        let t = Instant::now();
        let text = agent
            .get(&url)
            .call()
            .expect("scrape answers 200")
            .body_mut()
            .with_config()
            .limit(2_000_000_000)
            .read_to_string()
            .expect("scrape body");
        let scrape_s = t.elapsed().as_secs_f64();
        let groups = text
            .lines()
            .filter(|l| {
                l.starts_with("push_time_seconds{") && l.contains("job=\"openwhisk_actions\"")
            })
            .count();
        if groups == last_groups {
            return PgwFigures {
                groups,
                scrape_s,
                scrape_mb: text.len() as f64 / 1e6,
                rss_mb: rss_mb(pgw_pid(pgw)),
                live_heap_mb: text
                    .lines()
                    .find_map(|l| l.strip_prefix("go_memstats_next_gc_bytes "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .map_or(0.0, |goal| goal / 2.0 / 1e6),
            };
        }
        last_groups = groups;
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("the Pushgateway's group count did not settle");
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The gateway's `whisk_gateway_family_resyncs_total{result="ok"}`.
fn resyncs_ok(port: u16) -> u64 {
    let text = http_get(&format!("http://127.0.0.1:{port}/metrics")).expect("gateway /metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("whisk_gateway_family_resyncs_total{result=\"ok\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Peak RSS (VmHWM) of `pid`.
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let get = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
