//! Helpers for the collector's integration tests: a produced event mix, the collector binary as
//! a child process, and bounded waiting.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// A collector process killed on drop (SIGKILL) unless stopped gracefully before.
pub struct Collector {
    pub child: Child,
    pub port: u16,
    log: std::path::PathBuf,
}

impl Collector {
    pub fn start(args: &[String]) -> Self {
        let port = whisk_testkit::free_port();
        let log = std::env::temp_dir().join(format!(
            "whisk-collector-test-{}-{port}.log",
            std::process::id()
        ));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_whisk-collector"))
            .args(args)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--log-level",
                "info",
            ])
            .env_remove("KAFKA_HOSTS")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Self { child, port, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn metrics(&self) -> String {
        whisk_testkit::http_get(&self.url("/metrics")).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (at most `within`) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Produces `values` (None = a message without value) to partition `partition` of `topic`.
pub fn produce(bootstrap: &str, topic: &str, partition: i32, values: &[Option<Vec<u8>>]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for v in values {
        let mut rec: BaseRecord<'_, (), [u8]> = BaseRecord::to(topic).partition(partition);
        if let Some(v) = v {
            rec = rec.payload(v.as_slice());
        }
        producer.send(rec).map_err(|(e, _)| e).unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

pub fn activation(initiator: &str, name: &str, body_extra: &str) -> Vec<u8> {
    format!(
        r#"{{"body":{{"name":"{name}","kind":"nodejs:20","memory":256,"conductor":false{body_extra}}},"eventType":"Activation","source":"invoker0","subject":"s","userId":"u","namespace":"{initiator}","timestamp":1700000000000}}"#
    )
    .into_bytes()
}

pub fn metric(namespace: &str, source: &str, name: &str, value: i64) -> Vec<u8> {
    format!(
        r#"{{"body":{{"metricName":"{name}","metricValue":{value}}},"eventType":"Metric","source":"{source}","subject":"s","userId":"u","namespace":"{namespace}","timestamp":1700000001000}}"#
    )
    .into_bytes()
}

/// Polls `f` every 100 ms until it returns `Some`, at most `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the sample line starting with `series` (exact label set), if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

/// The sorted `instance` labels of `job`'s groups in `pgw`.
pub fn instances(pgw: &whisk_testkit::Pushgateway, job: &str) -> Vec<String> {
    let mut v: Vec<String> = pgw
        .groups()
        .unwrap()
        .iter()
        .filter(|g| g["labels"]["job"] == job)
        .map(|g| {
            g["labels"]["instance"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

/// Whether every group of `job` on `pgw` was last pushed at least `age` ago, by the Pushgateway's
/// own `push_time_seconds` (what the janitor judges staleness by). False while it has none.
pub fn all_pushed_at_least(pgw: &whisk_testkit::Pushgateway, job: &str, age: Duration) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let groups = pgw.groups().unwrap();
    let times: Vec<Option<f64>> = groups
        .iter()
        .filter(|g| g["labels"]["job"] == job)
        .map(|g| {
            g["push_time_seconds"]["metrics"][0]["value"]
                .as_str()?
                .parse()
                .ok()
        })
        .collect();
    !times.is_empty()
        && times
            .iter()
            .all(|t| t.is_some_and(|t| now - t >= age.as_secs_f64()))
}

/// A Pushgateway client for `base` (no auth, no CA) with `timeout` per request.
pub fn pushgateway_client(base: &str, timeout: Duration) -> whisk_collector::PushgatewayClient {
    let url = reqwest::Url::parse(base).expect("a test Pushgateway URL");
    whisk_collector::PushgatewayClient::new(&url, None, None, timeout).expect("client")
}
