//! The stores the scale bench pushes into (its backend dimension): Pushgateway shards, or a
//! remote-write receiver (Prometheus, VictoriaMetrics) behind the gateway; their processes'
//! figures and the containers dashboard's main query against each.

use std::time::{Duration, Instant};

use whisk_testkit::{Prometheus, Pushgateway, QueryApi, VictoriaMetrics, sum_of};

use crate::common::pgw_pid;

/// Where the pushes end up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// One Pushgateway, pushed to without the gateway.
    Direct,
    /// The gateway in front of this many Pushgateways.
    Pushgateways(usize),
    /// The gateway writing to Prometheus (`--web.enable-remote-write-receiver`).
    Prometheus,
    /// The gateway writing to VictoriaMetrics (`/api/v1/write`).
    Victoria,
}

impl Store {
    /// Every setup, in the order they run, with the name `WHISK_BENCH_SETUPS` selects it by.
    pub const ALL: [(&'static str, Store); 5] = [
        ("direct", Store::Direct),
        ("pgw1", Store::Pushgateways(1)),
        ("pgw3", Store::Pushgateways(3)),
        ("prometheus", Store::Prometheus),
        ("victoria", Store::Victoria),
    ];

    pub fn name(self) -> String {
        match self {
            Store::Direct => "direct, 1 Pushgateway".into(),
            Store::Pushgateways(1) => "gateway → 1 Pushgateway".into(),
            Store::Pushgateways(n) => format!("gateway → {n} Pushgateways"),
            Store::Prometheus => "gateway → Prometheus (remote write)".into(),
            Store::Victoria => "gateway → VictoriaMetrics (remote write)".into(),
        }
    }

    /// Its name in `WHISK_BENCH_SETUPS`.
    pub fn tag(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("store", |(n, _)| n)
    }

    pub fn through_gateway(self) -> bool {
        self != Store::Direct
    }

    pub fn is_remote_write(self) -> bool {
        matches!(self, Store::Prometheus | Store::Victoria)
    }
}

/// The store's running processes.
pub enum Running {
    Pushgateways(Vec<Pushgateway>),
    Prometheus(Prometheus),
    Victoria(VictoriaMetrics),
}

impl Running {
    pub fn start(store: Store, pgw_flags: &[&str]) -> Self {
        match store {
            Store::Direct => Self::start(Store::Pushgateways(1), pgw_flags),
            Store::Pushgateways(n) => Running::Pushgateways(
                (0..n)
                    .map(|_| Pushgateway::start(pgw_flags).expect("Pushgateway"))
                    .collect(),
            ),
            Store::Prometheus => {
                Running::Prometheus(Prometheus::start_receiver(&[]).expect("Prometheus receiver"))
            }
            Store::Victoria => {
                Running::Victoria(VictoriaMetrics::start().expect("VictoriaMetrics"))
            }
        }
    }

    pub fn pushgateways(&self) -> &[Pushgateway] {
        match self {
            Running::Pushgateways(p) => p,
            _ => &[],
        }
    }

    /// The gateway's flags that point it at this store.
    pub fn gateway_args(&self) -> Vec<String> {
        match self {
            Running::Pushgateways(pgws) => pgws
                .iter()
                .flat_map(|p| ["--pushgateway-url".to_string(), p.url()])
                .collect(),
            Running::Prometheus(p) => vec!["--remote-write-url".into(), p.write_url()],
            Running::Victoria(v) => vec!["--remote-write-url".into(), v.write_url()],
        }
    }

    pub fn pids(&mut self) -> Vec<u32> {
        match self {
            Running::Pushgateways(pgws) => pgws.iter().map(pgw_pid).collect(),
            Running::Prometheus(p) => vec![p.process().pid()],
            Running::Victoria(v) => vec![v.process().pid()],
        }
    }

    /// The base URL of each store process (all serve Go's `/debug/pprof`).
    fn base_urls(&self) -> Vec<String> {
        match self {
            Running::Pushgateways(pgws) => pgws.iter().map(Pushgateway::url).collect(),
            Running::Prometheus(p) => vec![p.url()],
            Running::Victoria(v) => vec![v.base_url()],
        }
    }

    /// `WHISK_BENCH_PPROF_SECONDS=N`: a Go CPU profile of each store process over the next N
    /// seconds, written to `target/bench-pprof/<tag>-<i>.pb.gz` (read with `go tool pprof -top
    /// <the store's executable> <file>`); join the handles after the measured round. Unset:
    /// nothing. Profiling costs the store ~1 % of its CPU.
    pub fn start_profiles(&self, tag: &str) -> Vec<std::thread::JoinHandle<()>> {
        let Some(seconds) = std::env::var("WHISK_BENCH_PPROF_SECONDS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|s| *s > 0)
        else {
            return Vec::new();
        };
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-pprof");
        std::fs::create_dir_all(&dir).expect("target/bench-pprof");
        self.base_urls()
            .into_iter()
            .enumerate()
            .map(|(i, base)| {
                let path = dir.join(format!("{tag}-{i}.pb.gz"));
                let url = format!("{base}/debug/pprof/profile?seconds={seconds}");
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .timeout_global(Some(Duration::from_secs(seconds + 30)))
                        .build()
                        .into();
                    let got = agent
                        .get(&url)
                        .call()
                        .map_err(|e| e.to_string())
                        .and_then(|mut a| a.body_mut().read_to_vec().map_err(|e| e.to_string()));
                    match got.map(|bytes| std::fs::write(&path, bytes)) {
                        Ok(Ok(())) => eprintln!("   profile ({seconds} s): {}", path.display()),
                        Ok(Err(e)) => {
                            eprintln!("   profile not written to {}: {e}", path.display())
                        }
                        Err(e) => eprintln!("   profile {url} failed: {e}"),
                    }
                })
            })
            .collect()
    }

    /// The remote-write receiver's query API, if the store is one.
    pub fn query_api(&self) -> Option<&dyn QueryApi> {
        match self {
            Running::Pushgateways(_) => None,
            Running::Prometheus(p) => Some(p),
            Running::Victoria(v) => Some(v),
        }
    }
}

/// The containers dashboard's main query ("Containers alive") as the dashboard holds it, every
/// namespace and action selected (Grafana's "All": `.*`).
pub fn containers_query() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dashboards/grafana/dashboards/containers.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let expr = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["title"] == "Containers alive")
        .and_then(|p| p["targets"][0]["expr"].as_str())
        .expect("the containers dashboard has a \"Containers alive\" panel");
    expr.replace("$namespace", ".*").replace("$action", ".*")
}

/// What the dashboard's query cost against one store.
pub struct QueryFigures {
    /// Median of five runs of the query, once it answered every container.
    pub median_ms: f64,
    /// Pushgateway mode: the longest scrape of a shard by the Prometheus the query ran on.
    pub scrape_s: Option<f64>,
    /// Pushgateway mode: that Prometheus's RSS.
    pub prometheus_rss_mb: Option<f64>,
}

/// Runs `promql` against `api` until it answers at least `containers` and the same twice in a
/// row (bounded by `wait`), then times it five times.
pub fn time_query(api: &dyn QueryApi, promql: &str, containers: usize, wait: Duration) -> f64 {
    let deadline = Instant::now() + wait;
    let mut last = -1.0;
    loop {
        let got = api.query(promql).map(|r| sum_of(&r)).unwrap_or(-1.0);
        if got >= containers as f64 && got == last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the containers query answered {got}, not at least {containers}, within {wait:?}"
        );
        last = got;
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut ms: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            api.query(promql).expect("query");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[2]
}

/// Pushgateway mode: a Prometheus scraping every shard (`honor_labels: true`, as
/// dashboards/prometheus/prometheus.yml), the query run once it holds every container.
pub fn query_through_scrape(pgws: &[Pushgateway], promql: &str, containers: usize) -> QueryFigures {
    let targets: Vec<String> = pgws
        .iter()
        .map(|p| format!("'127.0.0.1:{}'", p.port()))
        .collect();
    // A 10 000-group shard's page takes seconds to scrape: interval and timeout leave room.
    let config = format!(
        "global:\n  scrape_interval: 60s\n  scrape_timeout: 60s\nscrape_configs:\n  - job_name: pushgateway\n    honor_labels: true\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    let mut prometheus = Prometheus::start(&config).expect("Prometheus scraping the shards");
    if crate::common::pinning() {
        crate::common::pin(prometheus.process().pid(), crate::common::STORE_CPU);
    }
    let median_ms = time_query(&prometheus, promql, containers, Duration::from_secs(240));
    let scrape_s = prometheus
        .query("scrape_duration_seconds")
        .expect("scrape durations")
        .iter()
        .filter_map(|s| s.pointer("/value/1").and_then(|v| v.as_str()))
        .filter_map(|v| v.parse::<f64>().ok())
        .fold(0.0, f64::max);
    let rss = crate::rss_mb(prometheus.process().pid());
    QueryFigures {
        median_ms,
        scrape_s: Some(scrape_s),
        prometheus_rss_mb: Some(rss),
    }
}
