//! Child processes that die with their owner, free ports and bounded waiting.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// A port that was free a moment ago on 127.0.0.1 (the OS picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A non-blocking listener on a free 127.0.0.1 port and that port, for the in-process proxies
/// (`what` names it in errors).
pub(crate) fn loopback_listener(what: &str) -> Result<(TcpListener, u16)> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| Error::Io {
        what: format!("binding the {what}"),
        source,
    })?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    listener.set_nonblocking(true).map_err(|source| Error::Io {
        what: format!("setting the {what} non-blocking"),
        source,
    })?;
    Ok((listener, port))
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes. Returns whether it did.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// GET `url` and return the body of a 2xx answer.
pub fn http_get(url: &str) -> Result<String> {
    let agent = agent();
    let mut resp = agent.get(url).call().map_err(|e| http_err("GET", url, e))?;
    resp.body_mut()
        .read_to_string()
        .map_err(|e| http_err("GET", url, e))
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(true)
        .build()
        .into()
}

pub(crate) fn http_err(method: &'static str, url: &str, e: impl std::fmt::Display) -> Error {
    Error::Http {
        method,
        url: url.to_string(),
        message: e.to_string(),
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped. Its stdout and stderr go
/// to a log file in a private temporary directory, shown when it fails to start.
#[derive(Debug)]
pub struct ServiceProcess {
    name: String,
    child: Child,
    dir: PathBuf,
    /// Whether `dir` is this process's own (removed on drop) or the caller's.
    owns_dir: bool,
    log: PathBuf,
}

impl ServiceProcess {
    /// Spawns `binary args…` with a fresh working directory.
    pub fn spawn(name: &str, binary: &str, args: &[String], hint: &'static str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "whisk-testkit-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        Self::spawn_with_dir(name, binary, args, hint, dir, true)
    }

    /// Spawns `binary args…` in the caller's working directory `dir` (created if missing, kept
    /// on drop), so a restarted process finds the files of the previous one. The log is
    /// appended to `dir/log.txt`.
    pub fn spawn_in(
        name: &str,
        binary: &str,
        args: &[String],
        hint: &'static str,
        dir: &Path,
    ) -> Result<Self> {
        Self::spawn_with_dir(name, binary, args, hint, dir.to_path_buf(), false)
    }

    fn spawn_with_dir(
        name: &str,
        binary: &str,
        args: &[String],
        hint: &'static str,
        dir: PathBuf,
        owns_dir: bool,
    ) -> Result<Self> {
        let path = which(binary).ok_or_else(|| Error::MissingBinary {
            binary: binary.to_string(),
            hint,
        })?;
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let log = dir.join("log.txt");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|source| Error::Io {
                what: format!("creating {}", log.display()),
                source,
            })?;
        let err = out.try_clone().map_err(|source| Error::Io {
            what: "duplicating log handle".into(),
            source,
        })?;
        let child = Command::new(path)
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Io {
                what: format!("starting {binary}"),
                source,
            })?;
        Ok(Self {
            name: name.to_string(),
            child,
            dir,
            owns_dir,
            log,
        })
    }

    /// The private working directory of the process (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last 4 KiB of the process's output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4096);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text[start..].to_string()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until `ready` is true, or fails with the log after `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration, ready: impl FnMut() -> bool) -> Result<()> {
        if wait_until(timeout, ready) {
            return Ok(());
        }
        Err(Error::NotReady {
            service: self.name.clone(),
            secs: timeout.as_secs(),
            log: self.log_tail(),
        })
    }

    /// Kills the process now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Finds `binary` on PATH (or takes it as a path when it contains a `/`).
pub(crate) fn which(binary: &str) -> Option<PathBuf> {
    if binary.contains('/') {
        let p = PathBuf::from(binary);
        return p.is_file().then_some(p);
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    // cargo install puts tansu here; a shell that never sourced ~/.cargo/env still finds it.
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
}
