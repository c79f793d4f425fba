//! What both benches share: the pushing threads' HTTP client and the processes' figures.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use whisk_emulator::{ActionSpec, Invoker, InvokerConfig, MemorySink, example_params};

use whisk_testkit::Pushgateway;

/// The positive integer in the environment variable `name`, else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// Where pushes go: `host:port`.
#[derive(Clone)]
pub struct Target {
    /// `host:port`.
    pub addr: String,
}

impl Target {
    pub fn of(url: &str) -> Self {
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        Self { addr }
    }
}

/// A minimal HTTP/1.1 keep-alive client for the pushing threads: one `write` of a request
/// assembled in a reused buffer, and a read of the status line, the headers and a
/// `Content-Length` body. The bench shares the 2 cores with the gateway and the
/// Pushgateways, so its own CPU per push must stay small whatever profile it is built in (a
/// general-purpose client built in the dev profile cost a sizeable share of the cores).
pub struct RawClient {
    target: Target,
    stream: Option<std::net::TcpStream>,
    request: Vec<u8>,
    answer: Vec<u8>,
}

impl RawClient {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            stream: None,
            request: Vec::with_capacity(16 * 1024),
            answer: Vec::with_capacity(4096),
        }
    }

    /// PUTs `body` to `path`; the status and the answer's body. A kept-alive connection the
    /// server closed meanwhile is reopened once.
    pub fn put(&mut self, path: &str, auth: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        self.request.clear();
        write!(
            self.request,
            "PUT {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\n\
             Content-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
            self.target.addr,
            body.len()
        )?;
        self.request.extend_from_slice(body);
        let reused = self.stream.is_some();
        match self.exchange() {
            Ok(answer) => Ok(answer),
            Err(_) if reused => {
                self.stream = None;
                self.exchange()
            }
            Err(e) => Err(e),
        }
    }

    fn exchange(&mut self) -> std::io::Result<(u16, Vec<u8>)> {
        use std::io::{Error, ErrorKind};
        let result = (|| {
            if self.stream.is_none() {
                let s = std::net::TcpStream::connect(&self.target.addr)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(30)))?;
                self.stream = Some(s);
            }
            let stream = self.stream.as_mut().expect("connected above");
            stream.write_all(&self.request)?;
            self.answer.clear();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                if let Some(i) = find(&self.answer, b"\r\n\r\n") {
                    break i + 4;
                }
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(Error::new(ErrorKind::UnexpectedEof, "connection closed"));
                }
                self.answer.extend_from_slice(&chunk[..n]);
            };
            let head = std::str::from_utf8(&self.answer[..head_end])
                .map_err(|_| Error::new(ErrorKind::InvalidData, "non-UTF-8 answer head"))?;
            let status: u16 = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Error::new(ErrorKind::InvalidData, "no status line"))?;
            let mut length = None;
            let mut close = false;
            for line in head.split("\r\n").skip(1) {
                let Some((k, v)) = line.split_once(':') else {
                    continue;
                };
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(Error::new(
                        ErrorKind::InvalidData,
                        "chunked answers are not read",
                    ));
                } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
            let length = length.ok_or_else(|| {
                Error::new(ErrorKind::InvalidData, "answer without Content-Length")
            })?;
            while self.answer.len() < head_end + length {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(Error::new(ErrorKind::UnexpectedEof, "connection closed"));
                }
                self.answer.extend_from_slice(&chunk[..n]);
            }
            if close {
                self.stream = None;
            }
            Ok((status, self.answer[head_end..head_end + length].to_vec()))
        })();
        if result.is_err() {
            self.stream = None;
        }
        result
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The pid of `pgw` (our own child), found by its listen port in /proc.
pub fn pgw_pid(pgw: &Pushgateway) -> u32 {
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

/// The CPU settings the bench's processes inherit from its environment, for its header: the
/// manifests give each Pushgateway shard and each gateway replica one CPU, which
/// `GOMAXPROCS=1 WHISK_GATEWAY_WORKER_THREADS=1` reproduce here.
pub fn cpu_settings() -> String {
    let var = |name: &str, unset: &str| {
        std::env::var(name)
            .map(|v| format!("{name}={v}"))
            .unwrap_or_else(|_| format!("{name} unset ({unset})"))
    };
    format!(
        "Pushgateways: {}; gateway: {}",
        var("GOMAXPROCS", "Go uses every CPU"),
        var("WHISK_GATEWAY_WORKER_THREADS", "one worker per CPU")
    )
}

/// `WHISK_GATEWAY_BIN`, a relative path read against the workspace root (where the documented
/// command runs; `cargo bench` itself runs in `gateway/`), else the binary cargo built.
pub fn gateway_bin() -> String {
    match std::env::var_os("WHISK_GATEWAY_BIN") {
        Some(bin) => resolve_bin(std::path::PathBuf::from(bin)),
        None => env!("CARGO_BIN_EXE_whisk-gateway").to_string(),
    }
}

/// An executable's path given absolute or relative to the workspace root (else to the current
/// directory).
pub fn resolve_bin(bin: std::path::PathBuf) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = if bin.is_absolute() {
        bin
    } else if root.join(&bin).is_file() {
        root.join(&bin)
    } else {
        std::env::current_dir().expect("current dir").join(&bin)
    };
    let path = path
        .canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path.to_string_lossy().into_owned()
}

/// The body the real `orders` action pushes after three activations, captured by a one-shot
/// HTTP listener standing in for the Pushgateway.
pub fn orders_body() -> String {
    let exec = whisk_testkit::action_exec("orders");
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

/// Per simulated container `i` of `containers`: its group path (job `openwhisk_actions`, a
/// spread instance id, the namespace of `keys[i % keys.len()]`, action `orders`) and the basic
/// auth header with that namespace's API key.
pub fn container_requests(containers: usize, keys: &[(String, String)]) -> Vec<(String, String)> {
    use base64::Engine as _;
    (0..containers)
        .map(|i| {
            let (ns, key) = &keys[i % keys.len()];
            let path = whisk_grouping::GroupingKey::new("openwhisk_actions")
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
        .collect()
}

/// `n` versions of `body` that differ only in their sample values, as a container's pushes after
/// successive activations do (version 0 is `body`): each sample line's value is raised by the
/// version number.
pub fn value_variants(body: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|j| {
            let mut out = String::with_capacity(body.len() + 64);
            for line in body.split_inclusive('\n') {
                let (text, end) = line.strip_suffix('\n').map_or((line, ""), |t| (t, "\n"));
                match text.rsplit_once(' ') {
                    Some((head, value)) if j > 0 && !text.starts_with('#') => {
                        match value.parse::<f64>() {
                            Ok(v) if v.is_finite() => {
                                out.push_str(head);
                                out.push(' ');
                                out.push_str(&(v + j as f64).to_string());
                            }
                            _ => out.push_str(text),
                        }
                    }
                    _ => out.push_str(text),
                }
                out.push_str(end);
            }
            out
        })
        .collect()
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
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

pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The CPU the store's processes (Pushgateways, receivers) run on when pinned; the gateway and
/// the bench itself run on [`CLIENT_CPU`].
pub const STORE_CPU: usize = 1;
/// The CPU of the gateway and of the bench's pushing threads when pinned.
pub const CLIENT_CPU: usize = 0;

/// Whether processes are pinned (`WHISK_BENCH_PIN`, on unless `0`, and only with 2 CPUs or
/// more): each store on [`STORE_CPU`], the gateway and the pushers on [`CLIENT_CPU`], so a
/// receiver's own CPU does not eat the gateway's and every setup is measured alike.
pub fn pinning() -> bool {
    let wanted = std::env::var("WHISK_BENCH_PIN").map_or(true, |v| v != "0");
    wanted && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

/// Pins every thread of `pid` (threads it starts later inherit it) to `cpu`, with `taskset`.
/// `taskset -a` fails when a thread it listed exits before it is pinned (the body capture's
/// threads end as the bench starts): tried again, a few times.
pub fn pin(pid: u32, cpu: usize) {
    let ok = (0..5).any(|_| {
        std::process::Command::new("taskset")
            .args(["-a", "-c", "-p", &cpu.to_string(), &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("taskset (util-linux) runs")
            .success()
    });
    assert!(ok, "taskset could not pin {pid} to CPU {cpu}");
}

/// The header line that says how processes are placed.
pub fn pinning_note() -> String {
    if pinning() {
        format!(
            "pinned (WHISK_BENCH_PIN): stores on CPU {STORE_CPU}; gateway and pushers on CPU {CLIENT_CPU}"
        )
    } else {
        "not pinned (WHISK_BENCH_PIN=0 or one CPU): every process may use every CPU".to_string()
    }
}
