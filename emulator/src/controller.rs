//! The one controller endpoint the gateway needs: `GET /api/v1/namespaces`, answered as
//! OpenWhisk's controller answers it — HTTP basic auth with an API key (`uuid:key`), a JSON
//! array of the namespaces that key may act in, `401 {"error":"The supplied authentication is
//! invalid","code":…}` otherwise.
//!
//! A std `TcpListener` with one thread per connection; every answer closes its connection, so
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

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64_lite::decode_basic;

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
        let shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("controller-conn".into())
            .spawn(move || {
                if let Err(e) = serve(stream, &shared) {
                    tracing::debug!("controller connection: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("controller: cannot start a connection thread: {e}");
        }
    }
}

fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
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
    let (status, body) = if shared.failing.load(Ordering::Relaxed) {
        ("503 Service Unavailable", r#"{"error":"The server is currently unavailable (because it is overloaded or down for maintenance).","code":"emulated"}"#.to_string())
    } else if path.trim_end_matches('/') != "/api/v1/namespaces" {
        (
            "404 Not Found",
            r#"{"error":"The requested resource does not exist.","code":"emulated"}"#.to_string(),
        )
    } else if method != "GET" {
        (
            "405 Method Not Allowed",
            r#"{"error":"Method not allowed.","code":"emulated"}"#.to_string(),
        )
    } else {
        let namespaces = authorization
            .as_deref()
            .and_then(decode_basic)
            .and_then(|key| lock(&shared.keys).get(&key).cloned());
        match namespaces {
            Some(list) => (
                "200 OK",
                serde_json::to_string(&list).unwrap_or_else(|_| "[]".into()),
            ),
            None => (
                "401 Unauthorized",
                r#"{"error":"The supplied authentication is invalid.","code":"emulated"}"#
                    .to_string(),
            ),
        }
    };
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
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
mod tests {
    use super::*;

    fn get(url: &str, auth: Option<&str>) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut req = agent.get(url);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let mut resp = req.call().expect("controller answers");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    }

    #[test]
    fn answers_the_namespaces_of_a_known_key_and_401_otherwise() {
        let key = new_api_key();
        let c = Controller::start(&[(key.clone(), vec!["guest".into()])]).unwrap();
        c.add_key("u:k", &["a", "b"]);
        let url = format!("{}/api/v1/namespaces", c.url());
        let basic = |s: &str| {
            // Tiny encoder for the test only.
            let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let bytes = s.as_bytes();
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let b = [
                    chunk[0],
                    *chunk.get(1).unwrap_or(&0),
                    *chunk.get(2).unwrap_or(&0),
                ];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for i in 0..4 {
                    if i <= chunk.len() {
                        out.push(char::from(table[((n >> (18 - 6 * i)) & 63) as usize]));
                    } else {
                        out.push('=');
                    }
                }
            }
            format!("Basic {out}")
        };
        assert_eq!(
            get(&url, Some(&basic(&key))),
            (200, r#"["guest"]"#.to_string())
        );
        assert_eq!(get(&url, Some(&basic("u:k"))).1, r#"["a","b"]"#);
        assert_eq!(get(&url, Some(&basic("u:wrong"))).0, 401);
        assert_eq!(get(&url, None).0, 401);
        assert_eq!(get(&format!("{}/api/v1/other", c.url()), None).0, 404);
        c.set_failing(true);
        assert_eq!(get(&url, Some(&basic(&key))).0, 503);
        assert_eq!(c.requests(), 6);
    }

    #[test]
    fn a_stopped_controller_refuses_connections_and_can_come_back_on_its_port() {
        let mut c = Controller::start(&[]).unwrap();
        let port = c.port();
        c.stop();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        let back = Controller::start_on(port, &[]).unwrap();
        assert_eq!(back.port(), port);
    }
}
