//! Scale bench of the push path: N simulated containers, each pushing the `orders` action's
//! real SDK body, (a) straight into one Pushgateway, (b) through `whisk-gateway` (API-key auth
//! against the emulator's controller, cache warm) into 1 Pushgateway and (c) into 3. Every
//! Pushgateway runs with `--push.disable-consistency-check`, as deployed. Prints a table.
//!
//! ```text
//! cargo build -p whisk-actions --release          # the body comes from the real `orders`
//! cargo bench -p whisk-gateway                    # 10 000 containers
//! WHISK_BENCH_CONTAINERS=1000 cargo bench -p whisk-gateway   # a quick run
//! ```
//!
//! Knobs: `WHISK_BENCH_CONTAINERS` (10000), `WHISK_BENCH_CONCURRENCY` (16 pushing threads),
//! `WHISK_BENCH_NAMESPACES` (100 namespaces, one API key each), `WHISK_GATEWAY_BIN` (the
//! gateway executable; default: the one cargo built for this bench). Each setup runs two rounds: the
//! first creates every group (and warms the auth cache), the second — the measured one — is
//! every container pushing again into the full store. Then each Pushgateway is scraped once
//! (`/metrics`: time and size) and its RSS read from /proc. Gateway CPU per push is its
//! utime+stime over the measured round divided by the pushes.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use base64::Engine as _;
use whisk_emulator::controller::{Controller, new_api_key};
use whisk_emulator::{ActionSpec, Invoker, InvokerConfig, MemorySink, example_params};
use whisk_grouping::GroupingKey;
use whisk_testkit::{Pushgateway, ServiceProcess, free_port, http_get};

const PGW_FLAGS: [&str; 1] = ["--push.disable-consistency-check"];

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
                &body,
                containers,
                concurrency,
            )
        })
        .collect();

    println!();
    println!(
        "| setup | pushes/s | push p50 | push p99 | per Pushgateway: groups, scrape time, scrape size, RSS | gateway CPU/push | gateway RSS |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{}", r.line());
    }
    let direct = &rows[0];
    let one = &rows[1];
    let three = &rows[2];
    println!();
    println!(
        "gateway p50 / direct p50 = {:.2}x (target <= 1.3x)",
        one.p50_ms / direct.p50_ms
    );
    let third_rss = one.pgws[0].rss_mb / 3.0;
    let third_size = one.pgws[0].scrape_mb / 3.0;
    for (i, p) in three.pgws.iter().enumerate() {
        println!(
            "3 shards, shard {i}: RSS {:.0} MB = {:.2}x a third of one ({:.0} MB); scrape {:.1} MB = {:.2}x a third ({:.1} MB) (target <= 1.2x)",
            p.rss_mb,
            p.rss_mb / third_rss,
            third_rss,
            p.scrape_mb,
            p.scrape_mb / third_size,
            third_size
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
}

struct Row {
    setup: String,
    pushes_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    pgws: Vec<PgwFigures>,
    gateway_cpu_us: Option<f64>,
    gateway_rss_mb: Option<f64>,
}

impl Row {
    fn line(&self) -> String {
        let pgws: Vec<String> = self
            .pgws
            .iter()
            .map(|p| {
                format!(
                    "{} groups, {:.2} s, {:.1} MB, {:.0} MB",
                    p.groups, p.scrape_s, p.scrape_mb, p.rss_mb
                )
            })
            .collect();
        format!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {} | {} | {} |",
            self.setup,
            self.pushes_per_s,
            self.p50_ms,
            self.p99_ms,
            pgws.join("; "),
            self.gateway_cpu_us
                .map_or("–".to_string(), |c| format!("{c:.0} µs")),
            self.gateway_rss_mb
                .map_or("–".to_string(), |m| format!("{m:.0} MB")),
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
    body: &str,
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
    let target = match &gateway {
        Some((_, port)) => format!("http://127.0.0.1:{port}"),
        None => pgws[0].url(),
    };
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

    let (_, warm_s) = round(&target, &requests, body, concurrency);
    eprintln!("   round 1 (creates the groups): {:.1} s", warm_s);
    let gw_pid = gateway.as_mut().map(|(p, _)| p.pid());
    let cpu_before = gw_pid.map(cpu_ticks);
    let (latencies, secs) = round(&target, &requests, body, concurrency);
    let cpu_after = gw_pid.map(cpu_ticks);
    eprintln!("   round 2 (measured): {:.1} s", secs);

    let mut lat = latencies;
    lat.sort_unstable();
    let pct = |p: f64| {
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1000.0
    };
    let figures: Vec<PgwFigures> = pgws.iter().map(pgw_figures).collect();
    let total: usize = figures.iter().map(|f| f.groups).sum();
    assert_eq!(total, containers, "every container's group is stored once");
    let ticks_per_s = clock_ticks();
    let gateway_cpu_us = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some((b - a) as f64 / ticks_per_s * 1e6 / lat.len() as f64),
        _ => None,
    };
    let gateway_rss_mb = gw_pid.map(rss_mb);
    Row {
        setup: name.to_string(),
        pushes_per_s: lat.len() as f64 / secs,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        pgws: figures,
        gateway_cpu_us,
        gateway_rss_mb,
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

fn gateway_bin() -> String {
    std::env::var("WHISK_GATEWAY_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_whisk-gateway").to_string())
}

/// Every container pushes once; returns each push's latency and the round's wall time.
fn round(
    target: &str,
    requests: &Arc<Vec<(String, String)>>,
    body: &str,
    concurrency: usize,
) -> (Vec<Duration>, f64) {
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(Vec::with_capacity(requests.len())));
    let started = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, out, requests) = (Arc::clone(&next), Arc::clone(&out), Arc::clone(requests));
            let (target, body) = (target.to_string(), body.to_string());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build()
                    .into();
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((path, auth)) = requests.get(i) else {
                        break;
                    };
                    let t = Instant::now();
                    let resp = agent
                        .put(&format!("{target}{path}"))
                        .header("Authorization", auth)
                        .header("Content-Type", "text/plain; version=0.0.4")
                        .send(body.as_bytes());
                    let elapsed = t.elapsed();
                    match resp {
                        Ok(mut r) if r.status().is_success() => {
                            let _ = r.body_mut().read_to_vec();
                            mine.push(elapsed);
                        }
                        Ok(mut r) => panic!(
                            "push answered {}: {}",
                            r.status(),
                            r.body_mut().read_to_string().unwrap_or_default()
                        ),
                        Err(e) => panic!("push failed: {e}"),
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
            };
        }
        last_groups = groups;
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("the Pushgateway's group count did not settle");
}

fn pgw_pid(pgw: &Pushgateway) -> u32 {
    // testkit keeps the process; find it by its listen port in /proc (our own child).
    let needle = format!("127.0.0.1:{}", pgw.port());
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd);
            if cmd.contains("pushgateway") && cmd.contains(&needle) {
                return pid;
            }
        }
    }
    panic!("no process for {}", pgw.url());
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
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

/// The body the real `orders` action pushes after three activations, captured by a one-shot
/// HTTP listener standing in for the Pushgateway.
fn orders_body() -> String {
    let exec = action_exec("orders");
    let listener = TcpListener::bind("127.0.0.1:0").expect("capture listener");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let is_put = line.starts_with("PUT ");
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let mut s = reader.get_ref();
                    let _ = s.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
                    if is_put {
                        let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
                    }
                }
            });
        }
    });
    let config = InvokerConfig::new().with_pushgateway_url(&url);
    let spec = ActionSpec::new("/shop/orders", exec);
    let mut invoker =
        Invoker::new(config, Arc::new(MemorySink::default()), vec![spec]).expect("invoker");
    let mut last = None;
    for params in example_params("orders") {
        invoker
            .invoke("shop/orders", params, Instant::now())
            .expect("orders runs");
        last = Some(
            rx.recv_timeout(Duration::from_secs(10))
                .expect("orders pushed"),
        );
    }
    invoker.shutdown();
    last.expect("a captured body")
}

fn action_exec(name: &str) -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("WHISK_ACTIONS_DIR") {
        return std::path::PathBuf::from(dir).join(name);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let candidates = [
        target.join("release").join(name),
        target.join("debug").join(name),
    ];
    candidates
        .iter()
        .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p.clone())))
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| {
            panic!("`{name}` is not built: run `cargo build -p whisk-actions --release` first")
        })
}
