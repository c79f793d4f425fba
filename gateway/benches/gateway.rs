//! Scale bench of the push path: N simulated containers, each pushing the `orders` action's
//! real SDK body, side by side in one run, one setup per store (the backend dimension):
//! (a) straight into one Pushgateway, through `whisk-gateway` (API-key auth against the
//! emulator's controller, cache warm) (b) into 1 Pushgateway, (c) into 3, and in remote-write
//! mode (`--remote-write-url`) (d) into Prometheus (`--web.enable-remote-write-receiver`) and
//! (e) into VictoriaMetrics. Every Pushgateway runs with `--push.disable-consistency-check`, as
//! deployed. Prints a table.
//!
//! ```text
//! cargo build --release -p whisk-gateway && cargo build -p whisk-actions
//! GOMAXPROCS=1 WHISK_GATEWAY_WORKER_THREADS=1 \
//! WHISK_GATEWAY_BIN=target/release/whisk-gateway WHISK_BENCH_CONTAINERS=10000 \
//!     cargo bench -p whisk-gateway --profile dev --bench gateway
//! ```
//!
//! The processes inherit the environment: `GOMAXPROCS=1 WHISK_GATEWAY_WORKER_THREADS=1` give
//! each Go process (Pushgateways, receivers) and the gateway one CPU's worth of threads, as the
//! manifests' CPU limits do (without them every process may use both cores of this machine);
//! the header says which.
//!
//! Knobs: `WHISK_BENCH_CONTAINERS` (10000), `WHISK_BENCH_CONCURRENCY` (16 pushing threads),
//! `WHISK_BENCH_NAMESPACES` (100 namespaces, one API key each), `WHISK_BENCH_SETUPS` (which
//! setups, comma-separated: `direct,pgw1,pgw3,prometheus,victoria`, the default),
//! `WHISK_GATEWAY_BIN` (the gateway executable, absolute or relative to the workspace root;
//! default: the one cargo built for this bench, in the bench's profile),
//! `WHISK_BENCH_PPROF_SECONDS` (unset: none; N: a Go CPU profile of each store process over
//! the measured round's first N seconds, in `target/bench-pprof/`). Each setup runs two
//! rounds: the first creates every group (and warms the auth cache), the second — the measured
//! one — is every container pushing again into the full store. Then up to 1 000 containers push
//! once more from a single thread (the latency without queueing behind other pushes). Each
//! Pushgateway is scraped once (`/metrics`: time and size, and its Go heap's size at the last
//! collection) and its RSS read from /proc. The gateway's peak RSS (VmHWM) is read, in
//! Pushgateway mode after it has rebuilt its family table (every shard's whole
//! `/api/v1/metrics`, every 60 s by default) at least once over the full store, so it includes
//! that read; in remote-write mode the gateway reads no store (asserted: no family-table
//! rebuild). CPU per push (gateway, the store's processes together, and this process's pushing
//! threads) is utime+stime over the measured round divided by the pushes: unlike the
//! wall-clock figures it barely moves with the load of other processes on the machine, whose
//! 1-minute load average (`/proc/loadavg`, as `uptime`) is printed at the round's start and end.
//!
//! Last, the containers dashboard's main query ("Containers alive", read from
//! `dashboards/grafana/dashboards/containers.json`) is timed against the store once it counts
//! every container: against the receiver in remote-write mode, and in Pushgateway mode against a
//! Prometheus started to scrape the shards (`honor_labels: true`), whose longest scrape and RSS
//! are reported beside it.
//!
//! The pushing threads use a minimal keep-alive HTTP/1.1 client ([`RawClient`]): the bench runs
//! on the same cores as what it measures, and a general-purpose client built in the dev
//! profile took a sizeable share of them.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use whisk_emulator::controller::{Controller, new_api_key};
use whisk_testkit::{Pushgateway, ServiceProcess, free_port, http_get};

mod common;
mod stores;
use common::{
    CLIENT_CPU, RawClient, STORE_CPU, Target, clock_ticks, container_requests, cpu_ticks,
    env_usize, gateway_bin, orders_body, pgw_pid, pin, pinning, value_variants,
};
use stores::{QueryFigures, Running, Store};

const PGW_FLAGS: [&str; 1] = ["--push.disable-consistency-check"];
/// The gateway's default `--family-resync-interval`.
const RESYNC_INTERVAL: Duration = Duration::from_secs(60);

/// The setups `WHISK_BENCH_SETUPS` names (all by default), in the order of [`Store::ALL`].
fn selected_stores() -> Vec<Store> {
    let wanted = std::env::var("WHISK_BENCH_SETUPS").unwrap_or_default();
    let wanted: Vec<&str> = wanted
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    for w in &wanted {
        assert!(
            Store::ALL.iter().any(|(n, _)| n == w),
            "WHISK_BENCH_SETUPS: unknown setup {w:?} (known: direct, pgw1, pgw3, prometheus, victoria)"
        );
    }
    Store::ALL
        .iter()
        .filter(|(n, _)| wanted.is_empty() || wanted.contains(n))
        .map(|(_, s)| *s)
        .collect()
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
    println!("{}", common::pinning_note());
    if pinning() {
        // Before any thread or child starts: they inherit it (the stores are moved after).
        pin(std::process::id(), CLIENT_CPU);
    }
    let query = stores::containers_query();
    println!("containers dashboard query: {query}");
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

    let bench = Bench {
        controller: &controller,
        keys: &keys,
        bodies: &bodies,
        containers,
        concurrency,
        query: &query,
    };
    let rows: Vec<Row> = selected_stores()
        .into_iter()
        .map(|store| bench.run(store))
        .collect();
    print_table(&rows);
    print_pushgateway_ratios(&rows);
    print_remote_write_targets(&rows);
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| setup | pushes/s | push p50 | push p99 | push mean | failed | p50, 1 pusher | gateway CPU/push | gateway peak RSS | store CPU/push | store RSS | containers query | bench client CPU/push | load 1m (round start–end) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{}", r.line());
    }
    for r in rows.iter().filter(|r| !r.pgws.is_empty()) {
        let pgws: Vec<String> = r
            .pgws
            .iter()
            .map(|p| {
                format!(
                    "{} groups, scrape {:.2} s, {:.1} MB, RSS {:.0} MB, live heap {:.0} MB",
                    p.groups, p.scrape_s, p.scrape_mb, p.rss_mb, p.live_heap_mb
                )
            })
            .collect();
        println!("{}: per Pushgateway: {}", r.setup, pgws.join("; "));
    }
}

fn find(rows: &[Row], store: Store) -> Option<&Row> {
    rows.iter().find(|r| r.store == store)
}

fn print_pushgateway_ratios(rows: &[Row]) {
    let cpu = |r: &Row| r.client_cpu_us + r.store_cpu_us + r.gateway_cpu_us.unwrap_or(0.0);
    println!();
    if let (Some(direct), Some(one)) = (
        find(rows, Store::Direct),
        find(rows, Store::Pushgateways(1)),
    ) {
        println!(
            "gateway p50 / direct p50 = {:.2}x (target <= 1.3x); mean {:.2}x; with 1 pusher (no queueing, measured minutes apart: see --bench latency): {:.2}x",
            one.p50_ms / direct.p50_ms,
            one.mean_ms / direct.mean_ms,
            one.single_p50_ms / direct.single_p50_ms
        );
        println!(
            "CPU per push, all processes on the 2 shared cores: direct {:.0} µs, gateway->1 {:.0} µs ({:.2}x)",
            cpu(direct),
            cpu(one),
            cpu(one) / cpu(direct),
        );
    }
    let (Some(one), Some(three)) = (
        find(rows, Store::Pushgateways(1)),
        find(rows, Store::Pushgateways(3)),
    ) else {
        return;
    };
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

fn print_remote_write_targets(rows: &[Row]) {
    let Some(one) = find(rows, Store::Pushgateways(1)) else {
        return;
    };
    let three = find(rows, Store::Pushgateways(3));
    let met = |ok: bool| if ok { "met" } else { "MISSED" };
    for r in rows.iter().filter(|r| r.store.is_remote_write()) {
        let gw_cpu = r.gateway_cpu_us.unwrap_or(f64::NAN);
        let pgw_cpu = one.gateway_cpu_us.unwrap_or(f64::NAN);
        let rss = r.gateway_rss_mb.unwrap_or(f64::NAN);
        println!(
            "{}: pushes/s {:.2}x gateway->1 (target >= 1: {}); gateway CPU/push {:.2}x gateway->1{} (target <= 1.5x: {}); gateway peak RSS {:.0} MB (target <= 64 MB: {}); family-table rebuilds (store reads) {}, failed pushes {} (first pushes: {}); {:.1} writes a request",
            r.setup,
            r.pushes_per_s / one.pushes_per_s,
            met(r.pushes_per_s >= one.pushes_per_s),
            gw_cpu / pgw_cpu,
            three
                .and_then(|t| t.gateway_cpu_us)
                .map_or(String::new(), |t| format!(
                    ", {:.2}x gateway->3",
                    gw_cpu / t
                )),
            met(gw_cpu <= 1.5 * pgw_cpu),
            rss,
            met(rss <= 64.0),
            r.store_reads,
            r.failed,
            r.warm_failed,
            r.writes_per_request.unwrap_or(f64::NAN),
        );
    }
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
    store: Store,
    setup: String,
    pushes_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Mean latency (the saturated p50 alone misleads: the direct Pushgateway's latency under
    /// 16 pushers is bimodal).
    mean_ms: f64,
    /// Pushes of the measured round not answered 2xx.
    failed: usize,
    pgws: Vec<PgwFigures>,
    gateway_cpu_us: Option<f64>,
    gateway_rss_mb: Option<f64>,
    /// p50 with a single pusher (no queueing behind other pushes).
    single_p50_ms: f64,
    /// CPU per push of the store's processes together (Pushgateways or receiver).
    store_cpu_us: f64,
    /// RSS of the store's processes together, after the pushes.
    store_rss_mb: f64,
    /// CPU per push of this process (the pushing threads).
    client_cpu_us: f64,
    query: QueryFigures,
    /// The gateway's family-table rebuilds (whole reads of a shard) over the setup.
    store_reads: u64,
    /// 1-minute load average at the measured round's start and end.
    load: (f64, f64),
    /// Remote-write mode: writes acknowledged per request sent in the measured round.
    writes_per_request: Option<f64>,
    /// Pushes of round 1 (every container's first) not answered 2xx.
    warm_failed: usize,
}

impl Row {
    fn line(&self) -> String {
        let query = match (&self.query.scrape_s, &self.query.prometheus_rss_mb) {
            (Some(s), Some(rss)) => format!(
                "{:.0} ms (Prometheus scraping the shards: longest scrape {s:.1} s, RSS {rss:.0} MB)",
                self.query.median_ms
            ),
            _ => format!("{:.0} ms", self.query.median_ms),
        };
        format!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {} | {:.2} ms | {} | {} | {:.0} µs | {:.0} MB | {} | {:.0} µs | {:.2}–{:.2} |",
            self.setup,
            self.pushes_per_s,
            self.p50_ms,
            self.p99_ms,
            self.mean_ms,
            self.failed,
            self.single_p50_ms,
            self.gateway_cpu_us
                .map_or("–".to_string(), |c| format!("{c:.0} µs")),
            self.gateway_rss_mb
                .map_or("–".to_string(), |m| format!("{m:.0} MB")),
            self.store_cpu_us,
            self.store_rss_mb,
            query,
            self.client_cpu_us,
            self.load.0,
            self.load.1,
        )
    }
}

/// What every setup shares.
struct Bench<'a> {
    controller: &'a Controller,
    keys: &'a [(String, String)],
    bodies: &'a [String],
    containers: usize,
    concurrency: usize,
    query: &'a str,
}

impl Bench<'_> {
    fn run(&self, store: Store) -> Row {
        let name = store.name();
        eprintln!("== {name}");
        if store.through_gateway() {
            eprintln!("   gateway: {}", gateway_bin());
        }
        let mut running = Running::start(store, &PGW_FLAGS);
        if pinning() {
            for pid in running.pids() {
                pin(pid, STORE_CPU);
            }
        }
        let mut gateway = store
            .through_gateway()
            .then(|| start_gateway(&running, self.controller));
        let target = Target::of(&match &gateway {
            Some((_, port)) => format!("http://127.0.0.1:{port}"),
            None => running.pushgateways()[0].url(),
        });
        let requests = Arc::new(container_requests(self.containers, self.keys));
        let acked: Arc<Vec<AtomicBool>> = Arc::new(
            (0..self.containers)
                .map(|_| AtomicBool::new(false))
                .collect(),
        );

        let (_, warm_s, warm_failed) =
            round(&target, &requests, self.bodies, 0, self.concurrency, &acked);
        eprintln!("   round 1 (creates the groups): {warm_s:.1} s, {warm_failed} failed");
        let gw_pid = gateway.as_mut().map(|(p, _)| p.pid());
        let store_pids = running.pids();
        let ticks = |pids: &[u32]| pids.iter().map(|p| cpu_ticks(*p)).sum::<u64>();
        let gw_port = gateway.as_ref().map(|(_, port)| *port);
        let writes_before = gw_port.map(remote_writes);
        let load_before = load_1m();
        let gw_before = gw_pid.map(cpu_ticks);
        let store_before = ticks(&store_pids);
        let own_before = cpu_ticks(std::process::id());
        let profiles = running.start_profiles(store.tag());
        let (latencies, secs, failed) =
            round(&target, &requests, self.bodies, 1, self.concurrency, &acked);
        let own_after = cpu_ticks(std::process::id());
        let store_after = ticks(&store_pids);
        let gw_after = gw_pid.map(cpu_ticks);
        let load_after = load_1m();
        let writes_after = gw_port.map(remote_writes);
        eprintln!("   round 2 (measured): {secs:.1} s, {failed} failed");
        for p in profiles {
            let _ = p.join();
        }
        if let (Some((_, port)), Store::Pushgateways(shards)) = (&gateway, store) {
            wait_for_rebuild(*port, shards);
        }
        // Latency without queueing: one pusher, the first containers pushing once more.
        let (mut single, _, _) = round_of(
            &target,
            &requests,
            self.containers.min(1000),
            self.bodies,
            2,
            1,
            &acked,
        );
        single.sort_unstable();

        let mut lat = latencies;
        lat.sort_unstable();
        let pct = |lat: &[Duration], p: f64| {
            let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
            lat[i].as_secs_f64() * 1000.0
        };
        let figures: Vec<PgwFigures> = running.pushgateways().iter().map(pgw_figures).collect();
        if !figures.is_empty() {
            let total: usize = figures.iter().map(|f| f.groups).sum();
            assert_eq!(
                total, self.containers,
                "every container's group is stored once"
            );
        }
        let store_rss_mb = store_pids.iter().map(|p| rss_mb(*p)).sum();
        let query = match (running.query_api(), store) {
            (Some(api), _) => QueryFigures {
                // A container none of whose pushes was acknowledged may be missing (or stored:
                // a write answered 503 at its deadline may still be acknowledged later).
                median_ms: stores::time_query(
                    api,
                    self.query,
                    acked.iter().filter(|a| a.load(Ordering::Relaxed)).count(),
                    Duration::from_secs(90),
                ),
                scrape_s: None,
                prometheus_rss_mb: None,
            },
            (None, Store::Pushgateways(_)) => {
                stores::query_through_scrape(running.pushgateways(), self.query, self.containers)
            }
            // Direct: the same store as gateway -> 1 Pushgateway; not queried twice.
            (None, _) => QueryFigures {
                median_ms: f64::NAN,
                scrape_s: None,
                prometheus_rss_mb: None,
            },
        };
        let store_reads = gateway.as_ref().map_or(0, |(_, port)| resyncs_ok(*port));
        if store.is_remote_write() {
            assert_eq!(store_reads, 0, "remote-write mode reads no store");
        }
        let ticks_per_s = clock_ticks();
        let pushes = lat.len().max(1);
        let per_push_us = |t: u64| t as f64 / ticks_per_s * 1e6 / pushes as f64;
        let gateway_cpu_us = match (gw_before, gw_after) {
            (Some(a), Some(b)) => Some(per_push_us(b - a)),
            _ => None,
        };
        let gateway_rss_mb = gw_pid.map(peak_rss_mb);
        Row {
            store,
            setup: name,
            pushes_per_s: lat.len() as f64 / secs,
            p50_ms: pct(&lat, 0.5),
            p99_ms: pct(&lat, 0.99),
            mean_ms: lat.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0 / pushes as f64,
            failed,
            single_p50_ms: pct(&single, 0.5),
            pgws: figures,
            gateway_cpu_us,
            gateway_rss_mb,
            store_cpu_us: per_push_us(store_after - store_before),
            store_rss_mb,
            client_cpu_us: per_push_us(own_after - own_before),
            query,
            store_reads,
            load: (load_before, load_after),
            writes_per_request: match (writes_before, writes_after) {
                (Some((r0, w0)), Some((r1, w1))) if r1 > r0 => Some((w1 - w0) / (r1 - r0)),
                _ => None,
            },
            warm_failed,
        }
    }
}

/// The peak RSS must include a family-table rebuild over the full store: waits (bounded)
/// until every shard has been read once more after the measured round.
fn wait_for_rebuild(port: u16, shards: usize) {
    // Two rounds' worth of shard reads: at least one whole round began after this read.
    let target = resyncs_ok(port) + 2 * shards as u64;
    let deadline = Instant::now() + RESYNC_INTERVAL * 3;
    while resyncs_ok(port) < target && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        resyncs_ok(port) >= target,
        "no family-table rebuild over the full store within {:?}",
        RESYNC_INTERVAL * 3
    );
}

fn start_gateway(store: &Running, controller: &Controller) -> (ServiceProcess, u16) {
    let port = free_port();
    let mut args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--openwhisk-api-host".to_string(),
        controller.url(),
        "--log-level".to_string(),
        "warn".to_string(),
    ];
    args.extend(store.gateway_args());
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

/// The 1-minute load average (`/proc/loadavg`, as `uptime` prints it).
fn load_1m() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Every container pushes once with `concurrency` threads; returns each acknowledged push's
/// latency, the round's wall time and how many pushes were not answered 2xx.
fn round(
    target: &Target,
    requests: &Arc<Vec<(String, String)>>,
    bodies: &[String],
    round_no: usize,
    concurrency: usize,
    acked: &Arc<Vec<AtomicBool>>,
) -> (Vec<Duration>, f64, usize) {
    round_of(
        target,
        requests,
        requests.len(),
        bodies,
        round_no,
        concurrency,
        acked,
    )
}

/// The first `count` requests, pushed by `concurrency` threads over keep-alive connections of
/// [`RawClient`]; container `i` pushes `bodies[(i + round_no) % bodies.len()]`, so its pushes
/// in successive rounds differ in their values, as after successive activations. A push not
/// answered 2xx is counted (the first one's answer printed), not timed; one answered 2xx marks
/// its container in `acked`.
fn round_of(
    target: &Target,
    requests: &Arc<Vec<(String, String)>>,
    count: usize,
    bodies: &[String],
    round_no: usize,
    concurrency: usize,
    acked: &Arc<Vec<AtomicBool>>,
) -> (Vec<Duration>, f64, usize) {
    let failed = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let started = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, out, requests) = (Arc::clone(&next), Arc::clone(&out), Arc::clone(requests));
            let (failed, acked) = (Arc::clone(&failed), Arc::clone(acked));
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
                    if (200..300).contains(&status) {
                        mine.push(elapsed);
                        acked[i].store(true, Ordering::Relaxed);
                    } else if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!(
                            "   a push answered {status}: {}",
                            String::from_utf8_lossy(&answer).trim()
                        );
                    }
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
    (lat, secs, failed.load(Ordering::Relaxed))
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
    gateway_counter(port, "whisk_gateway_family_resyncs_total{result=\"ok\"}") as u64
}

/// A sample of the gateway's own `/metrics` (0 when absent).
fn gateway_counter(port: u16, series: &str) -> f64 {
    let text = http_get(&format!("http://127.0.0.1:{port}/metrics")).expect("gateway /metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Remote-write requests sent and writes acknowledged, so far.
fn remote_writes(port: u16) -> (f64, f64) {
    (
        gateway_counter(port, "whisk_gateway_remote_write_requests_total"),
        gateway_counter(
            port,
            "whisk_gateway_remote_writes_total{result=\"acknowledged\"}",
        ),
    )
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
