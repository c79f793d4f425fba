//! Remote-write receivers for tests: Prometheus as a receiver, VictoriaMetrics, and a small
//! HTTP proxy ([`WriteProxy`]) that records every write it gets (headers and decoded
//! `WriteRequest`), fails the first N with a chosen status, and passes the rest on to a real
//! receiver (or answers 204 itself, as a recording receiver).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Result;
use crate::process::{ServiceProcess, agent, free_port, http_err, http_get, loopback_listener};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest write body the proxy reads.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// A service with the Prometheus query API (`/api/v1/query`).
pub trait QueryApi {
    /// Its base URL.
    fn base_url(&self) -> String;

    /// Its remote-write endpoint.
    fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base_url())
    }

    /// Runs an instant PromQL query and returns `data.result`.
    fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>> {
        query_at(&self.base_url(), promql, None)
    }

    /// Runs an instant query at `time` (Unix seconds) and returns `data.result`.
    fn query_at(&self, promql: &str, time: f64) -> Result<Vec<serde_json::Value>> {
        query_at(&self.base_url(), promql, Some(time))
    }

    /// Sum of the values an instant query returns (0 when empty).
    fn query_sum(&self, promql: &str) -> Result<f64> {
        Ok(sum_of(&self.query(promql)?))
    }

    /// How long after a write acknowledged it the write may take to show in queries: zero for
    /// Prometheus; VictoriaMetrics 1.79 shows a further sample (or a stale marker) of a known
    /// series after ~1 s and a new series after ~10 s (measured here).
    fn visibility_delay(&self) -> Duration {
        Duration::ZERO
    }
}

/// Sum of the values of a query's `data.result`.
pub fn sum_of(result: &[serde_json::Value]) -> f64 {
    result
        .iter()
        .filter_map(|s| s.pointer("/value/1").and_then(|v| v.as_str()))
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

pub(crate) fn query_at(
    base: &str,
    promql: &str,
    time: Option<f64>,
) -> Result<Vec<serde_json::Value>> {
    let url = format!("{base}/api/v1/query");
    let mut request = agent().get(&url).query("query", promql);
    if let Some(t) = time {
        request = request.query("time", format!("{t:.3}"));
    }
    let mut resp = request
        .call()
        .map_err(|e| http_err("GET", &url, format!("{promql}: {e}")))?;
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| http_err("GET", &url, e))?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| http_err("GET", &url, e))?;
    Ok(v.pointer("/data/result")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default())
}

/// Debian's VictoriaMetrics (single node), queried through its Prometheus API; fresh samples
/// are visible at once (`-search.latencyOffset=0s`).
#[derive(Debug)]
pub struct VictoriaMetrics {
    process: ServiceProcess,
    port: u16,
}

impl VictoriaMetrics {
    /// Starts it on a free port with its data in a private directory and waits for `/health`.
    pub fn start() -> Result<Self> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("whisk-vm-{}-{port}", std::process::id()));
        let args = vec![
            format!("-httpListenAddr=127.0.0.1:{port}"),
            format!("-storageDataPath={}", dir.display()),
            "-search.latencyOffset=0s".to_string(),
            "-search.disableCache".to_string(),
            "-retentionPeriod=1d".to_string(),
        ];
        let mut process = ServiceProcess::spawn(
            "victoria-metrics",
            "victoria-metrics",
            &args,
            "apt-get install -y victoria-metrics",
        )?;
        let ready = format!("http://127.0.0.1:{port}/health");
        process.wait_ready(READY_TIMEOUT, || http_get(&ready).is_ok())?;
        Ok(Self { process, port })
    }

    /// The underlying process.
    pub fn process(&mut self) -> &mut ServiceProcess {
        &mut self.process
    }
}

impl QueryApi for VictoriaMetrics {
    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn visibility_delay(&self) -> Duration {
        Duration::from_secs(20)
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        self.process.kill();
        let dir =
            std::env::temp_dir().join(format!("whisk-vm-{}-{}", std::process::id(), self.port));
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// One write the proxy got.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Its headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// Its body, decoded (`None`: not a remote-write body).
    pub request: Option<whisk_remote_write::WriteRequest>,
    /// The status it was answered with.
    pub status: u16,
}

impl Recorded {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A recording, fault-injecting remote-write proxy on a free loopback port.
#[derive(Debug)]
pub struct WriteProxy {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    upstream: Option<String>,
    fail_first: AtomicUsize,
    fail_status: u16,
    stop: AtomicBool,
    recorded: Mutex<Vec<Recorded>>,
}

impl WriteProxy {
    /// A recording receiver: answers every write 204 after recording it.
    pub fn recording() -> Result<Self> {
        Self::start(None, 0, 204)
    }

    /// Passes writes on to `upstream` (a write URL), but answers the first `fail_first` with
    /// `fail_status` itself (they never reach `upstream`).
    pub fn failing_first(upstream: &str, fail_first: usize, fail_status: u16) -> Result<Self> {
        Self::start(Some(upstream.to_string()), fail_first, fail_status)
    }

    fn start(upstream: Option<String>, fail_first: usize, fail_status: u16) -> Result<Self> {
        let (listener, port) = loopback_listener("write proxy")?;
        let shared = Arc::new(Shared {
            upstream,
            fail_first: AtomicUsize::new(fail_first),
            fail_status,
            stop: AtomicBool::new(false),
            recorded: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let accept = std::thread::spawn(move || accept_loop(&listener, &s));
        Ok(Self {
            port,
            shared,
            accept: Some(accept),
        })
    }

    /// Its write URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// Every write so far.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.shared
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Fails the next `n` writes with the configured status.
    pub fn fail_next(&self, n: usize) {
        self.shared.fail_first.store(n, Ordering::SeqCst);
    }
}

impl Drop for WriteProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let s = Arc::clone(shared);
                std::thread::spawn(move || serve(stream, &s));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Serves the requests of one keep-alive connection.
fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while !shared.stop.load(Ordering::SeqCst) {
        let Some((_, headers, body)) = read_request(&mut reader) else {
            return;
        };
        let (status, text) = answer(shared, &headers, &body);
        let reply = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A request's line (`PUT /path HTTP/1.1`), headers (names in lower case) and body.
pub(crate) type Request = (String, Vec<(String, String)>, Vec<u8>);

/// Reads one request of a keep-alive connection (`None` at its end or on a malformed request).
pub(crate) fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok().filter(|n| *n > 0)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_BODY);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((line.trim_end().to_string(), headers, body))
}

fn answer(shared: &Shared, headers: &[(String, String)], body: &[u8]) -> (u16, String) {
    let failing = shared
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let (status, text) = if failing {
        (shared.fail_status, "injected failure\n".to_string())
    } else if let Some(up) = &shared.upstream {
        forward(up, headers, body)
    } else {
        (204, String::new())
    };
    shared
        .recorded
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Recorded {
            headers: headers.to_vec(),
            request: whisk_remote_write::decode(body).ok(),
            status,
        });
    (status, text)
}

fn forward(upstream: &str, headers: &[(String, String)], body: &[u8]) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.post(upstream);
    for (n, v) in headers {
        if !matches!(n.as_str(), "host" | "content-length" | "connection") {
            request = request.header(n.as_str(), v.as_str());
        }
    }
    match request.send(body) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            (status, text)
        }
        Err(e) => (502, format!("proxy: {e}\n")),
    }
}
