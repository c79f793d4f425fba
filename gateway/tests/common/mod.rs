//! Shared helpers of the gateway's tests: the real `whisk-gateway` binary, real Pushgateways
//! (testkit) and the emulator's controller endpoint.

#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use whisk_emulator::controller::{Controller, new_api_key};
use whisk_grouping::GroupingKey;
use whisk_testkit::{Pushgateway, ServiceProcess, free_port, http_get};

/// Flags every test Pushgateway gets (the deploy's mode, whose clashes the gateway prevents).
pub const PGW_FLAGS: [&str; 1] = ["--push.disable-consistency-check"];

/// A running `whisk-gateway`.
pub struct Gateway {
    pub process: ServiceProcess,
    pub port: u16,
}

impl Gateway {
    /// Starts the gateway binary with `args` on a free port and waits for `/readyz`.
    pub fn start(args: &[String]) -> Gateway {
        let port = free_port();
        let mut all = vec![
            "--listen".to_string(),
            format!("127.0.0.1:{port}"),
            "--log-level".to_string(),
            "info".to_string(),
        ];
        all.extend(args.iter().cloned());
        let mut process = ServiceProcess::spawn(
            "whisk-gateway",
            env!("CARGO_BIN_EXE_whisk-gateway"),
            &all,
            "cargo build -p whisk-gateway",
        )
        .expect("the gateway binary starts");
        let ready = format!("http://127.0.0.1:{port}/readyz");
        process
            .wait_ready(Duration::from_secs(30), || http_get(&ready).is_ok())
            .expect("the gateway becomes ready");
        Gateway { process, port }
    }

    /// Starts a gateway in front of `pgws`, authenticating against `controller`.
    pub fn with_controller(
        pgws: &[&Pushgateway],
        controller: &Controller,
        extra: &[&str],
    ) -> Gateway {
        let mut args = shard_args(pgws);
        args.extend(["--openwhisk-api-host".to_string(), controller.url()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::start(&args)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The gateway's own `/metrics`.
    pub fn own_metrics(&self) -> String {
        http_get(&format!("{}/metrics", self.url())).expect("own metrics")
    }

    /// The value of one own series, `0` when absent.
    pub fn own_value(&self, series: &str) -> f64 {
        self.own_metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

pub fn shard_args(pgws: &[&Pushgateway]) -> Vec<String> {
    pgws.iter()
        .flat_map(|p| ["--pushgateway-url".to_string(), p.url()])
        .collect()
}

/// Starts `n` Pushgateways in the deploy's mode.
pub fn pushgateways(n: usize) -> Vec<Pushgateway> {
    (0..n)
        .map(|_| Pushgateway::start(&PGW_FLAGS).expect("Pushgateway starts"))
        .collect()
}

/// A controller that knows one fresh key per namespace; returns it with the keys.
pub fn controller(namespaces: &[&str]) -> (Controller, Vec<String>) {
    let keys: Vec<String> = namespaces.iter().map(|_| new_api_key()).collect();
    let table: Vec<(String, Vec<String>)> = keys
        .iter()
        .zip(namespaces)
        .map(|(k, ns)| (k.clone(), vec![ns.to_string()]))
        .collect();
    (Controller::start(&table).expect("controller starts"), keys)
}

/// `Authorization` value for an API key.
pub fn basic(key: &str) -> String {
    format!("Basic {}", STANDARD.encode(key))
}

/// The SDK's group path.
pub fn group(job: &str, instance: &str, namespace: &str, action: &str) -> String {
    GroupingKey::new(job)
        .with("instance", instance)
        .with("namespace", namespace)
        .with("action", action)
        .path()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// Sends `method path` to `base` with an optional auth header and body: (status, body).
pub fn send(method: &str, base: &str, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let url = format!("{base}{path}");
    let agent = agent();
    let result = match method {
        "PUT" => {
            let mut r = agent.put(&url);
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r.header("Content-Type", "text/plain; version=0.0.4")
                .send(body)
        }
        "POST" => {
            let mut r = agent.post(&url);
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r.send(body)
        }
        "DELETE" => {
            let mut r = agent.delete(&url);
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        _ => {
            let mut r = agent.get(&url);
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
    };
    let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

/// The groups of a Pushgateway whose label `name` is `value`.
pub fn groups_with(pgw: &Pushgateway, name: &str, value: &str) -> Vec<serde_json::Value> {
    pgw.groups()
        .expect("groups")
        .into_iter()
        .filter(|g| g["labels"][name] == value)
        .collect()
}

/// Polls until `pgw` holds exactly `n` groups with label `name` = `value` (the Pushgateway
/// applies writes asynchronously), or fails.
pub fn wait_for_groups(pgw: &Pushgateway, name: &str, value: &str, n: usize) {
    let ok = whisk_testkit::wait_until(Duration::from_secs(20), || {
        groups_with(pgw, name, value).len() == n
    });
    assert!(
        ok,
        "expected {n} groups with {name}={value} on {}, have {:?}",
        pgw.url(),
        groups_with(pgw, name, value)
    );
}

/// A small SDK-like body with one custom family of type `kind`.
pub fn body(family: &str, kind: &str, value: u64) -> String {
    format!(
        "# HELP whisk_activations_total Activations served by this container, by outcome\n\
         # TYPE whisk_activations_total counter\n\
         whisk_activations_total{{status=\"success\"}} {value}\n\
         # HELP {family} custom\n\
         # TYPE {family} {kind}\n\
         {family}{{region=\"eu\"}} {value}\n"
    )
}

/// The sum of every sample of `series` (a name and optional `{` label prefix) on the
/// Pushgateways whose line contains all of `labels`.
pub fn sum_on(pgws: &[&Pushgateway], series: &str, labels: &[&str]) -> f64 {
    pgws.iter()
        .filter_map(|p| p.metrics_text().ok())
        .flat_map(|text| {
            text.lines()
                .filter(|l| l.starts_with(series) && labels.iter().all(|x| l.contains(x)))
                .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
                .collect::<Vec<_>>()
        })
        .sum()
}
