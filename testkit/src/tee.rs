//! A tee for pushes ([`PushTee`]): one loopback address the SDK pushes to; every request
//! (method, path, headers, body) is forwarded to several gateways at once and answered with
//! what they answered. Tests that compare two storage modes run one load whose pushes reach both:
//! the same containers, the same instance ids, the same values.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Result;
use crate::process::loopback_listener;
use crate::receivers::read_request;

/// How long one forwarded request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(20);

/// Forwards every request to each of its upstreams (base URLs) in parallel; answers with the
/// first upstream's status when every upstream answered 2xx, else with the first non-2xx one
/// (so the client sees any mode's refusal). Every non-2xx answer is kept for the test.
#[derive(Debug)]
pub struct PushTee {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    upstreams: Vec<String>,
    stop: AtomicBool,
    requests: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl PushTee {
    /// Starts the tee on a free loopback port in front of `upstreams` (base URLs such as
    /// `http://127.0.0.1:9096`).
    pub fn start(upstreams: &[String]) -> Result<Self> {
        let (listener, port) = loopback_listener("push tee")?;
        let shared = Arc::new(Shared {
            upstreams: upstreams.to_vec(),
            stop: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
            failures: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let accept = std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let s = Arc::clone(&s);
                        std::thread::spawn(move || serve(stream, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self {
            port,
            shared,
            accept: Some(accept),
        })
    }

    /// Its base URL: what the clients push to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests forwarded so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Every non-2xx answer of an upstream so far: `upstream request-line -> status body`.
    pub fn failures(&self) -> Vec<String> {
        self.shared
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for PushTee {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
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
        let Some((line, headers, body)) = read_request(&mut reader) else {
            return;
        };
        shared.requests.fetch_add(1, Ordering::SeqCst);
        let answers: Vec<(u16, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = shared
                .upstreams
                .iter()
                .map(|up| s.spawn(|| forward(up, &line, &headers, &body)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or((502, "tee: forward panicked".into())))
                .collect()
        });
        let mut failed = answers.iter().filter(|(st, _)| !(200..300).contains(st));
        let (status, text) = failed
            .next()
            .or(answers.first())
            .cloned()
            .unwrap_or((502, "tee: no upstream".into()));
        for ((st, text), up) in answers.iter().zip(&shared.upstreams) {
            if !(200..300).contains(st) {
                shared
                    .failures
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(format!("{up} {line} -> {st} {}", text.trim()));
            }
        }
        let reply = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Sends one request (`line` is `METHOD /path HTTP/1.1`) to `upstream`: its status and body.
fn forward(upstream: &str, line: &str, headers: &[(String, String)], body: &[u8]) -> (u16, String) {
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return (400, format!("tee: malformed request line {line:?}"));
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(FORWARD_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{upstream}{path}");
    let mut request = ureq::http::Request::builder().method(method).uri(&url);
    for (n, v) in headers {
        if !matches!(n.as_str(), "host" | "content-length" | "connection") {
            request = request.header(n.as_str(), v.as_str());
        }
    }
    // A request without a body (a DELETE) is sent without one.
    let answer = if body.is_empty() {
        request.body(()).map(|r| agent.run(r))
    } else {
        request.body(body.to_vec()).map(|r| agent.run(r))
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => return (400, format!("tee: {e}")),
    };
    match answer {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            (status, text)
        }
        Err(e) => (502, format!("tee: {url}: {e}")),
    }
}
