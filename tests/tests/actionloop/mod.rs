//! OpenWhisk's own actionloop proxy (the Go binary every actionloop runtime image runs as PID 1),
//! run as the invoker runs a container, for the conformance suite.
//!
//! The proxy always listens on `:8080`, so each "container" gets its own network namespace
//! (`unshare --net`, root only): the proxy and the action run in it; the test reaches the proxy
//! through a socket created inside that namespace (a short-lived thread `setns`es into it), and
//! the action reaches the test's Pushgateway through a forwarder listening inside the namespace
//! on the Pushgateway's port. Nothing leaves loopback; the namespace goes away with the
//! container. Freezing is `SIGSTOP` of the proxy and the action (what `docker pause` does to the
//! cgroup), removal `SIGKILL` of both (`docker rm -f`).
//!
//! The binary is `.tools/actionloop-proxy`, built by scripts/setup.sh from the upstream source
//! (`WHISK_ACTIONLOOP_PROXY` overrides); without it, or without permission to create a network
//! namespace, [`available`] gives the one-line reason (`whisk_testkit::require` fails the test with
//! it under `CI=true`, else prints it and skips).

#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// The port the Go proxy listens on, in its namespace.
pub const PROXY_PORT: u16 = 8080;

/// How long the proxy gets to start listening, and an `/init` to answer.
const START_LIMIT: Duration = Duration::from_secs(60);

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The proxy binary, or why the conformance tests cannot run here (one line).
pub fn available() -> Result<PathBuf, String> {
    let bin = std::env::var_os("WHISK_ACTIONLOOP_PROXY")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/actionloop-proxy"));
    if !bin.is_file() {
        let why =
            std::fs::read_to_string(workspace_root().join(".tools/actionloop-proxy.unavailable"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "scripts/setup.sh has not built it".into());
        return Err(format!(
            "no OpenWhisk actionloop proxy at {} ({why})",
            bin.display()
        ));
    }
    let probe = Command::new("unshare")
        .args(["--net", "/usr/sbin/ip", "link", "set", "lo", "up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Ok(s) if s.success() => Ok(bin),
        _ => Err("cannot create a network namespace (`unshare --net` needs root)".into()),
    }
}

/// The init body the invoker sends (`WhiskAction.containerInitializer`): a binary zip, `main`,
/// and `env` with every value a string.
pub fn init_body(name: &str, zip: &[u8], env: &[(String, String)]) -> Value {
    let env: serde_json::Map<String, Value> = env
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({"value": {
        "name": name,
        "main": "main",
        "binary": true,
        "code": base64::engine::general_purpose::STANDARD.encode(zip),
        "env": env,
    }})
}

/// One HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// A container: the Go proxy (and, after `/init`, its action) in a network namespace.
pub struct Container {
    dir: PathBuf,
    proxy: Child,
    netns: File,
    forwarder: Option<Forwarder>,
}

impl Container {
    /// Starts the proxy in `dir` (its `./action` goes there) with the container environment
    /// the invoker gives it (`__OW_API_HOST`, and `OW_WAIT_FOR_ACK` when `wait_for_ack`), and
    /// a forwarder to the test's Pushgateway on `pushgateway_port`.
    pub fn start(
        bin: &Path,
        dir: &Path,
        wait_for_ack: bool,
        api_host: &str,
        pushgateway_port: u16,
    ) -> Self {
        std::fs::create_dir_all(dir).expect("container dir");
        let out = File::create(dir.join("stdout.log")).expect("stdout log");
        let err = File::create(dir.join("stderr.log")).expect("stderr log");
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--net",
            "/bin/sh",
            "-c",
            "/usr/sbin/ip link set lo up && exec \"$0\"",
        ])
        .arg(bin)
        .current_dir(dir)
        .env_clear()
        .env("__OW_API_HOST", api_host)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
        if wait_for_ack {
            cmd.env("OW_WAIT_FOR_ACK", "1");
        }
        let proxy = cmd.spawn().expect("start unshare + actionloop proxy");
        let ns_path = format!("/proc/{}/ns/net", proxy.id());
        let mut c = Self {
            dir: dir.to_path_buf(),
            proxy,
            netns: File::open("/proc/self/ns/net").expect("own netns"),
            forwarder: None,
        };
        // unshare(2) happens before the exec of sh: wait until the process is in a namespace
        // of its own, then keep a handle on it.
        let own = std::fs::read_link("/proc/self/ns/net").ok();
        let start = Instant::now();
        loop {
            let ns = std::fs::read_link(&ns_path).ok();
            if ns.is_some() && ns != own {
                break;
            }
            assert!(
                start.elapsed() < START_LIMIT,
                "the proxy never got a network namespace; stderr: {}",
                c.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        c.netns = File::open(&ns_path).expect("open the proxy's netns");
        let start = Instant::now();
        while c.connect().is_err() {
            assert!(
                start.elapsed() < START_LIMIT,
                "the proxy is not listening on :{PROXY_PORT}; stderr: {}",
                c.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        c.forwarder = Some(Forwarder::start(&c.netns, pushgateway_port));
        c
    }

    /// A TCP connection to the proxy, made from inside its namespace.
    fn connect(&self) -> std::io::Result<TcpStream> {
        let fd = self.netns.try_clone()?;
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(&fd, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                TcpStream::connect(("127.0.0.1", PROXY_PORT))
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("connect thread panicked")))
        })
    }

    /// `POST /init`.
    pub fn init(&self, body: &Value) -> Answer {
        self.post("/init", &body.to_string(), START_LIMIT)
            .expect("the proxy answers /init")
    }

    /// `POST /run` with the invoker's body; `None` when no answer came within `limit` (the
    /// invoker's request timeout: the caller then removes the container).
    pub fn run(&self, body: &str, limit: Duration) -> Option<Answer> {
        self.post("/run", body, limit)
    }

    fn post(&self, path: &str, body: &str, limit: Duration) -> Option<Answer> {
        let mut s = self.connect().ok()?;
        s.set_read_timeout(Some(limit)).ok()?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes()).ok()?;
        let deadline = Instant::now() + limit;
        let mut raw = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(_) => return None, // the read timeout: no answer in time
            }
            if Instant::now() > deadline {
                return None;
            }
        }
        parse_response(&raw)
    }

    /// The proxy's process id and its descendants' (the action and what it started).
    pub fn pids(&self) -> Vec<i32> {
        let mut all = vec![self.proxy.id() as i32];
        let mut i = 0;
        while i < all.len() {
            let pid = all[i];
            if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
                for t in tasks.flatten() {
                    let children =
                        std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                    all.extend(
                        children
                            .split_whitespace()
                            .filter_map(|c| c.parse::<i32>().ok()),
                    );
                }
            }
            i += 1;
        }
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The action process (the proxy's child), once started.
    pub fn action_pid(&self) -> Option<i32> {
        self.pids()
            .into_iter()
            .find(|p| *p != self.proxy.id() as i32)
    }

    /// `docker pause`: SIGSTOP to every process of the container.
    pub fn freeze(&self) {
        for pid in self.pids() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
        }
    }

    /// `docker unpause`.
    pub fn thaw(&self) {
        for pid in self.pids() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
    }

    /// Whether every process of the container is stopped (state `T`).
    pub fn is_frozen(&self) -> bool {
        self.pids().iter().all(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit(')').next().map(|r| r.trim().starts_with('T')))
                .unwrap_or(true)
        })
    }

    /// `docker rm -f`: SIGKILL to every process, frozen or not. Every process is stopped
    /// first, so none sees another die (an action whose proxy died first would read the end of
    /// its stdin, and the SDK deletes its group then: a cgroup kill gives it no such chance).
    pub fn kill(&mut self) {
        let pids = self.pids();
        for pid in pids.iter().rev() {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGSTOP);
        }
        for pid in &pids {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        let _ = self.proxy.wait();
        // The action is reparented to init and reaped there; wait for it to be gone.
        let start = Instant::now();
        while pids
            .iter()
            .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            && start.elapsed() < START_LIMIT
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.forwarder = None;
    }

    /// What the proxy and the action wrote to stdout.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }

    /// What the proxy and the action wrote to stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn parse_response(raw: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                break;
            }
            out.push_str(after.get(..n)?);
            rest = after.get(n + 2..)?;
        }
        out
    } else {
        body.to_string()
    };
    Some(Answer { status, body })
}

/// Accepts connections on `127.0.0.1:<port>` inside a namespace and relays each to the same
/// port on the test's loopback (where the Pushgateway listens).
struct Forwarder {
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Forwarder {
    fn start(netns: &File, port: u16) -> Self {
        let fd = netns.try_clone().expect("netns handle");
        // Only the listening socket is made inside the namespace; the relaying threads live in
        // the test's namespace, so their outgoing connections reach the real Pushgateway.
        let listener = std::thread::scope(|s| {
            s.spawn(move || {
                setns(&fd, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                TcpListener::bind(("127.0.0.1", port))
            })
            .join()
            .expect("bind thread")
        })
        .expect("listen in the container's namespace");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let accept = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((inside, _)) => {
                        let _ = inside.set_nonblocking(false);
                        if let Ok(outside) = TcpStream::connect(("127.0.0.1", port)) {
                            relay(inside, outside);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self {
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn relay(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    };
    pipe(a, b2);
    pipe(b, a2);
}
