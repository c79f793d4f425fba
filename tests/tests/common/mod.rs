//! Shared support of the end-to-end tests: the real stack (tansu, sharded Pushgateways, the
//! emulator's controller endpoint, whisk-gateway, Prometheus and whisk-collector replicas, all
//! on free loopback ports, all killed on drop), the locations of the prebuilt executables, and
//! a small parser of the Prometheus text format.
//!
//! Prerequisites (scripts/test.sh builds them; a missing one fails the test with the command):
//! the example actions (target/release/{hello,orders,flaky}, or the running test's own build
//! when that is newer), whisk-collector and whisk-gateway of the running test's build
//! (`whisk_testkit::profile_dir`). `WHISK_ACTIONS_DIR` / `WHISK_COLLECTOR_BIN` /
//! `WHISK_GATEWAY_BIN` override them.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use whisk_emulator::InvokerConfig;
use whisk_emulator::controller::{Controller, new_api_key};
use whisk_testkit::{
    Prometheus, Pushgateway, ServiceProcess, Tansu, free_port, http_get, wait_until,
};
pub use whisk_testkit::{action_exec, workspace_bin};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// whisk-collector of the running test's build (`WHISK_COLLECTOR_BIN` overrides it).
pub fn collector_bin() -> PathBuf {
    workspace_bin("whisk-collector", "WHISK_COLLECTOR_BIN")
}

/// whisk-gateway of the running test's build (`WHISK_GATEWAY_BIN` overrides it).
pub fn gateway_bin() -> PathBuf {
    workspace_bin("whisk-gateway", "WHISK_GATEWAY_BIN")
}

/// Pushgateway shards of every stack: the e2e sums cover sharding.
pub const SHARDS: usize = 2;

/// The namespace whose API key the stack's controller knows.
pub const NAMESPACE: &str = "guest";

/// The real services of one test.
pub struct Stack {
    pub collectors: Vec<ServiceProcess>,
    pub collector_ports: Vec<u16>,
    pub prometheus: Prometheus,
    pub gateway: ServiceProcess,
    pub gateway_port: u16,
    pub controller: Controller,
    /// The API key of [`NAMESPACE`] (`uuid:key`), known to the controller.
    pub guest_key: String,
    pub pushgateways: Vec<Pushgateway>,
    pub tansu: Tansu,
}

impl Stack {
    /// tansu with an `events` topic of `partitions`; [`SHARDS`] Pushgateways (the deploy's
    /// mode: consistency check off, memory only); the emulator's controller endpoint knowing
    /// one API key, [`NAMESPACE`]'s; `whisk-gateway` in front of every shard, authenticating
    /// pushes against that controller; `replicas` collectors in one consumer group pushing
    /// every second and told every shard; Prometheus scraping every shard
    /// (`honor_labels: true`), the gateway and the collectors every second. Actions push
    /// through the gateway: see [`Stack::invoker_config`].
    pub fn start(replicas: usize, partitions: u32) -> Self {
        let collector = collector_bin();
        let gateway_exe = gateway_bin();
        let tansu = Tansu::start().expect("start tansu");
        tansu
            .create_topic("events", partitions)
            .expect("create the events topic");
        // Debian's Pushgateway persists to /var/lib/prometheus/pushgateway.data by default, shared by
        // every instance on the machine: memory only, or groups of earlier runs come back.
        let pushgateways: Vec<Pushgateway> = (0..SHARDS)
            .map(|_| {
                Pushgateway::start(&["--persistence.file=", "--push.disable-consistency-check"])
                    .expect("start a Pushgateway")
            })
            .collect();
        let shard_args: Vec<String> = pushgateways
            .iter()
            .flat_map(|p| ["--pushgateway-url".to_string(), p.url()])
            .collect();
        let guest_key = new_api_key();
        let controller = Controller::start(&[(guest_key.clone(), vec![NAMESPACE.to_string()])])
            .expect("start the controller endpoint");
        let gateway_port = free_port();
        let mut args = vec![
            "--listen".to_string(),
            format!("127.0.0.1:{gateway_port}"),
            "--openwhisk-api-host".to_string(),
            controller.url(),
            "--auth".to_string(),
            "api-key".to_string(),
        ];
        args.extend(shard_args.iter().cloned());
        let mut gateway = ServiceProcess::spawn(
            "whisk-gateway",
            &gateway_exe.to_string_lossy(),
            &args,
            "cargo build -p whisk-gateway",
        )
        .expect("start whisk-gateway");
        let ready = format!("http://127.0.0.1:{gateway_port}/readyz");
        gateway
            .wait_ready(Duration::from_secs(30), || http_get(&ready).is_ok())
            .expect("gateway ready");
        let mut collectors = Vec::new();
        let mut collector_ports = Vec::new();
        for i in 0..replicas {
            let port = free_port();
            let mut args: Vec<String> = [
                "--brokers",
                &tansu.bootstrap(),
                "--group-id",
                "whisk-collector-e2e",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--push-interval",
                "1s",
                "--instance",
                &format!("replica{i}"),
                "--prune-after",
                "0",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(shard_args.iter().cloned());
            let mut p = ServiceProcess::spawn(
                &format!("collector{i}"),
                &collector.to_string_lossy(),
                &args,
                "cargo build -p whisk-collector",
            )
            .expect("start whisk-collector");
            let ready = format!("http://127.0.0.1:{port}/readyz");
            p.wait_ready(Duration::from_secs(30), || http_get(&ready).is_ok())
                .expect("collector ready");
            collectors.push(p);
            collector_ports.push(port);
        }
        // Several targets on one marked line: `a', 'b` inside the line's quotes.
        let targets = collector_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join("', '");
        let shards = pushgateways
            .iter()
            .map(|p| format!("127.0.0.1:{}", p.port()))
            .collect::<Vec<_>>()
            .join("', '");
        let config = whisk_tests::dashboards::prometheus_config_for(&shards, &targets)
            .and_then(|c| {
                whisk_tests::dashboards::with_gateway_target(
                    &c,
                    &format!("127.0.0.1:{gateway_port}"),
                )
            })
            .expect("render dashboards/prometheus/prometheus.yml");
        assert!(config.contains("scrape_interval: 5s") && config.contains("scrape_timeout: 4s"));
        let config = config
            .replace("scrape_interval: 5s", "scrape_interval: 1s")
            .replace("scrape_timeout: 4s", "scrape_timeout: 1s");
        let prometheus = Prometheus::start(&config).expect("start Prometheus");
        Self {
            collectors,
            collector_ports,
            prometheus,
            gateway,
            gateway_port,
            controller,
            guest_key,
            pushgateways,
            tansu,
        }
    }

    /// The running Prometheus: what the dashboards check queries.
    pub fn prometheus_url(&self) -> String {
        self.prometheus.url()
    }

    /// The gateway's base URL: where the actions push.
    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_port)
    }

    /// An invoker configuration whose actions push through the gateway with their namespace's
    /// API key (`WHISK_METRICS_AUTH=api-key`; the invoker hands [`NAMESPACE`]'s activations the
    /// key as `__OW_API_KEY`, as OpenWhisk does).
    pub fn invoker_config(&self) -> InvokerConfig {
        InvokerConfig::new()
            .with_pushgateway_url(&self.gateway_url())
            .with_init_param("WHISK_METRICS_AUTH", "api-key")
            .with_api_key(NAMESPACE, &self.guest_key)
    }

    /// Parsed `/metrics` of every Pushgateway shard, concatenated.
    pub fn pushgateway_samples(&self) -> Vec<Sample> {
        self.pushgateways
            .iter()
            .flat_map(|p| parse_exposition(&p.metrics_text().expect("Pushgateway /metrics")))
            .collect()
    }

    /// Parsed `/metrics` of shard `i` only.
    pub fn shard_samples(&self, i: usize) -> Vec<Sample> {
        parse_exposition(
            &self.pushgateways[i]
                .metrics_text()
                .expect("Pushgateway /metrics"),
        )
    }

    /// Parsed own `/metrics` of the gateway.
    pub fn gateway_samples(&self) -> Vec<Sample> {
        parse_exposition(
            &http_get(&format!("{}/metrics", self.gateway_url())).expect("gateway /metrics"),
        )
    }

    /// Parsed `/metrics` of collector `i`.
    pub fn collector_samples(&self, i: usize) -> Vec<Sample> {
        let url = format!("http://127.0.0.1:{}/metrics", self.collector_ports[i]);
        parse_exposition(&http_get(&url).expect("collector /metrics"))
    }

    /// The collectors' and the gateway's logs (for failure messages).
    pub fn collector_logs(&self) -> String {
        self.collectors
            .iter()
            .chain(std::iter::once(&self.gateway))
            .map(ServiceProcess::log_tail)
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

/// One sample of the text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text exposition format (comments skipped, label values unescaped).
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name_end, mut labels, rest) = match line.find('{') {
            Some(i) if line[..i].find(' ').is_none() => {
                let mut labels = BTreeMap::new();
                let mut chars = line[i + 1..].char_indices().peekable();
                let base = i + 1;
                let mut end = None;
                loop {
                    while matches!(chars.peek(), Some((_, ' ' | ','))) {
                        chars.next();
                    }
                    match chars.peek() {
                        Some((j, '}')) => {
                            end = Some(base + j + 1);
                            break;
                        }
                        None => break,
                        _ => {}
                    }
                    let mut key = String::new();
                    for (_, c) in chars.by_ref() {
                        if c == '=' {
                            break;
                        }
                        key.push(c);
                    }
                    chars.next(); // opening quote
                    let mut value = String::new();
                    let mut escaped = false;
                    for (_, c) in chars.by_ref() {
                        match (escaped, c) {
                            (true, 'n') => {
                                value.push('\n');
                                escaped = false;
                            }
                            (true, c) => {
                                value.push(c);
                                escaped = false;
                            }
                            (false, '\\') => escaped = true,
                            (false, '"') => break,
                            (false, c) => value.push(c),
                        }
                    }
                    labels.insert(key.trim().to_string(), value);
                }
                let Some(end) = end else { continue };
                (i, labels, &line[end..])
            }
            _ => {
                let i = line.find(' ').unwrap_or(line.len());
                (i, BTreeMap::new(), &line[i..])
            }
        };
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        labels.retain(|k, _| !k.is_empty());
        out.push(Sample {
            name: line[..name_end].to_string(),
            labels,
            value,
        });
    }
    out
}

/// Sum of `name` over the samples whose labels include every `filter` pair.
pub fn sum(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && filter
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// Sum of `name` grouped by `label`, over the samples whose labels include every `filter` pair;
/// groups summing to 0 are left out (a label value never incremented is "none").
pub fn sum_by(
    samples: &[Sample],
    name: &str,
    label: &str,
    filter: &[(&str, &str)],
) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for s in samples.iter().filter(|s| {
        s.name == name
            && filter
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    }) {
        *m.entry(s.labels.get(label).cloned().unwrap_or_default())
            .or_insert(0.0) += s.value;
    }
    m
}

/// Polls `get` until it equals `want` (or `timeout` passes) and returns the last value, so the
/// caller's assert_eq shows the difference.
pub fn eventually<T: PartialEq + Clone>(
    timeout: Duration,
    want: &T,
    mut get: impl FnMut() -> T,
) -> T {
    let start = Instant::now();
    let mut last = get();
    while &last != want && start.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(250));
        last = get();
    }
    last
}

/// `wait_until` re-exported for the tests.
pub fn wait(timeout: Duration, check: impl FnMut() -> bool) -> bool {
    wait_until(timeout, check)
}

/// The result of an instant PromQL query as `label value → sample value` (by `label`; "" when
/// the label is absent); zero values are left out.
pub fn promql_by(stack: &Stack, query: &str, label: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for s in stack.prometheus.query(query).unwrap_or_default() {
        let key = s
            .pointer(&format!("/metric/{label}"))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let value = s
            .pointer("/value/1")
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        m.insert(key, value);
    }
    m.retain(|_, v| *v != 0.0);
    m
}

#[test]
fn parses_labels_with_escapes_and_plain_samples() {
    let text = "# HELP x y\nx_total{a=\"1\",b=\"q\\\"u,o}te\"} 3\nplain 2.5\nempty{} 1\n";
    let s = parse_exposition(text);
    assert_eq!(s.len(), 3);
    assert_eq!(s[0].labels["b"], "q\"u,o}te");
    assert_eq!(sum(&s, "x_total", &[("a", "1")]), 3.0);
    assert_eq!(sum(&s, "plain", &[]), 2.5);
    assert_eq!(s[2].name, "empty");
}
