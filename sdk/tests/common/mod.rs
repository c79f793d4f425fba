//! Drives an action executable the way the OpenWhisk Go proxy does: an empty environment plus
//! the given variables, one JSON line per activation on stdin, the result read from a pipe
//! passed as fd 3. Shared by the integration tests and the benchmark.
#![allow(
    dead_code,
    unreachable_pub,
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// `target/<profile>/examples/<name>`, built by `cargo test` / `cargo bench` with the package.
pub fn example_exe(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: `cargo test -p whisk-metrics` builds the examples for the tests; for the benchmark run `cargo build --release -p whisk-metrics --examples` first",
        path.display()
    );
    path
}

/// One action process.
pub struct Action {
    child: Child,
    stdin: Option<ChildStdin>,
    results: Receiver<String>,
    pub stderr_path: PathBuf,
    pub action_name: String,
    /// The `api_key` of the run lines (default `user:key`).
    pub api_key: String,
    n: u64,
}

impl Action {
    /// Starts `exe` with exactly `env` (the proxy starts the action with an empty environment).
    pub fn spawn(exe: &std::path::Path, action_name: &str, env: &[(&str, &str)]) -> Self {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two new descriptors, owned below.
        assert_eq!(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
            0,
            "pipe2"
        );
        // SAFETY: fresh descriptors from pipe2, owned by nothing else.
        let reader = unsafe { std::fs::File::from_raw_fd(fds[0]) };
        let writer = unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[1]) };
        let writer_fd = writer.as_raw_fd();
        let stderr_path = std::env::temp_dir().join(format!(
            "whisk-sdk-test-{}-{}.stderr",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = Command::new(exe);
        cmd.env_clear()
            .env("__OW_ACTION_NAME", action_name)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if writer_fd == 3 {
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                } else if libc::dup2(writer_fd, 3) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn action");
        drop(writer);
        let stdin = child.stdin.take();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            results: rx,
            stderr_path,
            action_name: action_name.to_string(),
            api_key: "user:key".to_string(),
            n: 0,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next line on fd 3, waiting at most `timeout`.
    pub fn read_result(&self, timeout: Duration) -> Option<String> {
        self.results.recv_timeout(timeout).ok()
    }

    /// Sends one activation (deadline `deadline_in` from now) and waits for its result line.
    /// Returns the result and the time from writing the line to reading the result.
    pub fn invoke(&mut self, value: Value, deadline_in: Duration) -> (Value, Duration) {
        self.n += 1;
        let deadline = SystemTime::now() + deadline_in;
        let deadline_ms = deadline.duration_since(UNIX_EPOCH).unwrap().as_millis();
        let line = json!({
            "value": value,
            "namespace": "guest",
            "action_name": self.action_name,
            "action_version": "0.0.1",
            "activation_id": format!("{:032x}", self.n),
            "transaction_id": "tid",
            "deadline": deadline_ms.to_string(),
            "api_key": self.api_key,
        });
        let started = Instant::now();
        self.send_raw(&format!("{line}\n"));
        let result = self
            .read_result(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("no result line within 20 s; stderr:\n{}", self.stderr()));
        let elapsed = started.elapsed();
        (
            serde_json::from_str(&result).expect("result is JSON"),
            elapsed,
        )
    }

    pub fn send_raw(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(text.as_bytes()).expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Waits (bounded) for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Sends one activation and returns the time until its result line, `None` when the
    /// process answered nothing within `timeout`.
    pub fn invoke_raw(&mut self, value: Value, timeout: Duration) -> Option<String> {
        self.n += 1;
        let deadline_ms = (SystemTime::now() + Duration::from_secs(60))
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let line = json!({
            "value": value,
            "action_name": self.action_name,
            "action_version": "0.0.1",
            "activation_id": format!("{:032x}", self.n),
            "deadline": deadline_ms.to_string(),
            "api_key": self.api_key,
        });
        self.send_raw(&format!("{line}\n"));
        self.read_result(timeout)
    }

    /// Closes stdin and waits (bounded) for the exit status.
    pub fn close(&mut self) -> Option<std::process::ExitStatus> {
        self.stdin = None;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn freeze(&self) {
        unsafe { libc::kill(self.pid(), libc::SIGSTOP) };
    }

    pub fn thaw(&self) {
        unsafe { libc::kill(self.pid(), libc::SIGCONT) };
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Drop for Action {
    fn drop(&mut self) {
        self.thaw();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

/// Sends SIGSTOP / SIGCONT to any pid (used on the Pushgateway).
pub fn signal(pid: u32, sig: i32) {
    unsafe { libc::kill(pid as i32, sig) };
}
