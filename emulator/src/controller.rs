//! The controller endpoints the gateway and the dashboards need, answered as OpenWhisk's
//! controller answers them, with HTTP basic auth by API key (`uuid:key`; `401 {"error":"The
//! supplied authentication is invalid","code":…}` without a known one):
//!
//! - `GET /api/v1/namespaces`: a JSON array of the namespaces the key may act in;
//! - `GET /api/v1/namespaces/{ns}/activations/{id}`: the activation record (what
//!   `wsk activation get` shows: activationId, namespace, name, start, end, duration, response
//!   with status and result, annotations with waitTime, initTime, kind, limits, path). `{ns}`
//!   is one of the key's namespaces or `_` (the key's own); an id the controller does not hold,
//!   or one of another namespace, is `404`. The dashboards' exemplar link opens this.
//!
//! Records come from the invoker: [`Controller::recording`] wraps the invoker's event sink and
//! keeps the last [`ACTIVATIONS_KEPT`] activations (and at most [`ACTIVATION_BYTES_KEPT`] bytes
//! of records), oldest dropped first.
//!
//! A std `TcpListener` with one thread per connection (at most [`MAX_CONNECTIONS`] at once; a
//! connection that sends nothing for 5 s is dropped); every answer closes its connection, so
//! stopping the server really cuts the gateway off (no pooled connection keeps answering).
//! [`Controller::set_failing`] makes it answer 503 for fault tests.
//!
//! ```no_run
//! use whisk_emulator::controller::{Controller, new_api_key};
//!
//! let guest = new_api_key();
//! let controller = Controller::start(&[(guest.clone(), vec!["guest".to_string()])]).unwrap();
//! println!("{} knows {guest}", controller.url());
//! ```

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64_lite::decode_basic;
use serde_json::{Value, json};

use crate::events::{EventBody, EventMessage, EventSink};

/// Activation records kept for `GET …/activations/{id}` (the oldest go first).
pub const ACTIVATIONS_KEPT: usize = 10_000;
/// Bytes of activation records kept at most (results can be large).
pub const ACTIVATION_BYTES_KEPT: usize = 64 * 1024 * 1024;
/// Connections served at once; further ones are closed unanswered.
pub const MAX_CONNECTIONS: usize = 64;

/// Longest request head read.
const MAX_HEAD: usize = 16 * 1024;
/// A client that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A new random OpenWhisk-style API key: `<uuid>:<64 alphanumeric characters>`.
pub fn new_api_key() -> String {
    let hex = |n: usize| -> String {
        (0..n)
            .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
            .collect()
    };
    let uuid = format!("{}-{}-{}-{}-{}", hex(8), hex(4), hex(4), hex(4), hex(12));
    let key: String = (0..64).map(|_| fastrand::alphanumeric()).collect();
    format!("{uuid}:{key}")
}

#[derive(Debug)]
struct Shared {
    keys: Mutex<HashMap<String, Vec<String>>>,
    stop: AtomicBool,
    failing: AtomicBool,
    requests: AtomicU64,
    connections: AtomicUsize,
    activations: Mutex<ActivationLog>,
}

/// A running controller endpoint on 127.0.0.1; stopped when dropped.
#[derive(Debug)]
pub struct Controller {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Controller {
    /// Starts on a free loopback port. `keys`: each API key (`uuid:key`) with its namespaces.
    pub fn start(keys: &[(String, Vec<String>)]) -> std::io::Result<Self> {
        Self::start_on(0, keys)
    }

    /// Starts on `port` (0: any free one), e.g. to come back on the same address.
    pub fn start_on(port: u16, keys: &[(String, Vec<String>)]) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            keys: Mutex::new(keys.iter().cloned().collect()),
            stop: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            activations: Mutex::new(ActivationLog::new(ACTIVATIONS_KEPT, ACTIVATION_BYTES_KEPT)),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("controller".into())
                .spawn(move || accept_loop(&listener, &shared))?
        };
        Ok(Self {
            addr,
            shared,
            thread: Some(thread),
        })
    }

    /// Base URL, e.g. `http://127.0.0.1:41234` (the gateway's `--openwhisk-api-host`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Adds (or replaces) a key and its namespaces.
    pub fn add_key(&self, key: &str, namespaces: &[&str]) {
        lock(&self.shared.keys).insert(
            key.to_string(),
            namespaces.iter().map(|s| s.to_string()).collect(),
        );
    }

    /// While true, every request is answered `503` (an overloaded controller).
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::Relaxed);
    }

    /// `inner` plus the activation records: every activation the invoker reports through
    /// the returned sink can be fetched from this controller until it is among the oldest
    /// beyond [`ACTIVATIONS_KEPT`]. Events go on to `inner` unchanged.
    pub fn recording(&self, inner: Arc<dyn EventSink>) -> Arc<dyn EventSink> {
        Arc::new(RecordingSink {
            inner,
            shared: Arc::clone(&self.shared),
        })
    }

    /// Activation records held now.
    pub fn activations_held(&self) -> usize {
        lock(&self.shared.activations).len()
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Stops accepting and waits for the accept thread.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(stream) = stream else { continue };
        if shared.connections.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!("controller: {MAX_CONNECTIONS} connections open, closing a new one");
            continue;
        }
        let shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("controller-conn".into())
            .spawn(move || {
                if let Err(e) = serve(stream, &shared) {
                    tracing::debug!("controller connection: {e}");
                }
                shared.connections.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            tracing::warn!("controller: cannot start a connection thread: {e}");
        }
    }
}

fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    // The head is read through a cap: a line without an end cannot grow past it.
    let mut reader = BufReader::new(stream.try_clone()?.take(MAX_HEAD as u64));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    let mut read = request_line.len();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        read += n;
        if n == 0 || line == "\r\n" || line == "\n" || read > MAX_HEAD {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_string());
            }
        }
    }
    if shared.stop.load(Ordering::Relaxed) {
        return Ok(());
    }
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let key = authorization.as_deref().and_then(decode_basic);
    let (status, body) = answer(shared, method, path, key.as_deref());
    let mut stream = reader.into_inner().into_inner();
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

const NOT_FOUND: &str = r#"{"error":"The requested resource does not exist.","code":"emulated"}"#;
const UNAUTHORIZED: &str =
    r#"{"error":"The supplied authentication is invalid.","code":"emulated"}"#;

/// Status line and JSON body for `method path` asked with `key` (the decoded basic auth).
fn answer(shared: &Shared, method: &str, path: &str, key: Option<&str>) -> (&'static str, String) {
    if shared.failing.load(Ordering::Relaxed) {
        return ("503 Service Unavailable", r#"{"error":"The server is currently unavailable (because it is overloaded or down for maintenance).","code":"emulated"}"#.to_string());
    }
    let path = path.trim_end_matches('/');
    let activation = path
        .strip_prefix("/api/v1/namespaces/")
        .and_then(|rest| rest.split_once("/activations/"))
        .filter(|(ns, id)| !ns.is_empty() && !id.is_empty() && !id.contains('/'));
    if path != "/api/v1/namespaces" && activation.is_none() {
        return ("404 Not Found", NOT_FOUND.to_string());
    }
    if method != "GET" {
        return (
            "405 Method Not Allowed",
            r#"{"error":"Method not allowed.","code":"emulated"}"#.to_string(),
        );
    }
    let Some(namespaces) = key.and_then(|k| lock(&shared.keys).get(k).cloned()) else {
        return ("401 Unauthorized", UNAUTHORIZED.to_string());
    };
    let Some((ns, id)) = activation else {
        return (
            "200 OK",
            serde_json::to_string(&namespaces).unwrap_or_else(|_| "[]".into()),
        );
    };
    // `_` is the key's own namespace; any other must be one the key may act in.
    let ns = if ns == "_" {
        namespaces.first().map(String::as_str)
    } else {
        namespaces.iter().map(String::as_str).find(|n| *n == ns)
    };
    let Some(ns) = ns else {
        return (
            "403 Forbidden",
            r#"{"error":"The supplied authentication is not authorized to access this resource.","code":"emulated"}"#.to_string(),
        );
    };
    match lock(&shared.activations).get(ns, id) {
        Some(record) => ("200 OK", record.to_string()),
        None => ("404 Not Found", NOT_FOUND.to_string()),
    }
}

/// The invoker's sink with the controller's activation records beside it.
struct RecordingSink {
    inner: Arc<dyn EventSink>,
    shared: Arc<Shared>,
}

impl EventSink for RecordingSink {
    fn publish(&self, event: &EventMessage) {
        self.inner.publish(event);
    }

    fn activation_ended(&self, event: &EventMessage, result: &Value, timeout: Duration) {
        if let Some((id, record)) = activation_record(event, result, timeout) {
            lock(&self.shared.activations).insert(&event.namespace, id, record);
        }
        self.inner.activation_ended(event, result, timeout);
    }
}

/// OpenWhisk's activation response status of a status code.
fn response_status(code: u8) -> &'static str {
    match code {
        0 => "success",
        1 => "application error",
        2 => "action developer error",
        _ => "whisk internal error",
    }
}

/// The activation record of `event` as OpenWhisk's controller returns it (the event is built
/// when the activation ends, so its timestamp is `end`).
fn activation_record(
    event: &EventMessage,
    result: &Value,
    timeout: Duration,
) -> Option<(String, String)> {
    let EventBody::Activation(a) = &event.body else {
        return None;
    };
    let name = a.name.rsplit('/').next().unwrap_or(&a.name);
    let mut annotations = vec![
        json!({"key": "path", "value": a.name}),
        json!({"key": "waitTime", "value": a.wait_time}),
        json!({"key": "kind", "value": a.kind}),
        json!({"key": "timeout", "value": false}),
        json!({"key": "limits", "value": {
            "concurrency": 1,
            "logs": 10,
            "memory": a.memory,
            "timeout": u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }}),
    ];
    if a.init_time > 0 {
        annotations.push(json!({"key": "initTime", "value": a.init_time}));
    }
    if let Some(cause) = &a.caused_by {
        annotations.push(json!({"key": "causedBy", "value": cause}));
    }
    let record = json!({
        "namespace": event.namespace,
        "name": name,
        "version": "0.0.1",
        "subject": event.subject,
        "activationId": a.activation_id,
        "start": event.timestamp.saturating_sub(a.duration),
        "end": event.timestamp,
        "duration": a.duration,
        "statusCode": a.status_code,
        "response": {
            "status": response_status(a.status_code),
            "statusCode": a.status_code,
            "success": a.status_code == 0,
            "result": result,
            "size": a.size,
        },
        "logs": [],
        "annotations": annotations,
        "publish": false,
    });
    Some((a.activation_id.clone(), record.to_string()))
}

/// The last activations, by namespace and id, bounded in count and bytes.
#[derive(Debug)]
struct ActivationLog {
    by_id: HashMap<String, (String, String)>,
    order: VecDeque<String>,
    bytes: usize,
    max: usize,
    max_bytes: usize,
}

impl ActivationLog {
    fn new(max: usize, max_bytes: usize) -> Self {
        Self {
            by_id: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            max,
            max_bytes,
        }
    }

    fn len(&self) -> usize {
        self.by_id.len()
    }

    fn insert(&mut self, namespace: &str, id: String, record: String) {
        let cost = id.len() + namespace.len() + record.len();
        if cost > self.max_bytes || self.by_id.contains_key(&id) {
            return;
        }
        while self.by_id.len() >= self.max || self.bytes + cost > self.max_bytes {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((ns, rec)) = self.by_id.remove(&old) {
                self.bytes -= old.len() + ns.len() + rec.len();
            }
        }
        self.bytes += cost;
        self.order.push_back(id.clone());
        self.by_id.insert(id, (namespace.to_string(), record));
    }

    /// The record of `id` if it belongs to `namespace`.
    fn get(&self, namespace: &str, id: &str) -> Option<&str> {
        self.by_id
            .get(id)
            .filter(|(ns, _)| ns == namespace)
            .map(|(_, rec)| rec.as_str())
    }
}

/// Just enough base64 to read a basic-auth header (no extra dependency).
mod base64_lite {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    /// `Basic <base64>` → the decoded `user:password`, if well formed.
    pub(super) fn decode_basic(header: &str) -> Option<String> {
        let (scheme, token) = header.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in token.trim().trim_end_matches('=').bytes() {
            let v = ALPHABET.iter().position(|a| *a == c)?;
            bits = (bits << 6) | u32::try_from(v).ok()?;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push(u8::try_from((bits >> n) & 0xff).ok()?);
            }
        }
        String::from_utf8(out).ok()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn reads_basic_auth() {
            assert_eq!(
                super::decode_basic("Basic dXNlcjpwYXNz").as_deref(),
                Some("user:pass")
            );
            assert_eq!(super::decode_basic("Bearer dXNlcjpwYXNz"), None);
            assert_eq!(super::decode_basic("Basic ***"), None);
        }
    }
}

#[cfg(test)]
mod tests;
