//! The three real services the end-to-end tests run against.

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::process::{ServiceProcess, free_port, http_err, http_get, which};
use crate::{Error, Result};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How tests install tansu (memory and libsql storage engines).
const TANSU_HINT: &str = "cargo install tansu --version 0.6.0 --locked --features dynostore,libsql";

/// A tansu Kafka-protocol broker: memory storage ([`Tansu::start`]) or a libsql (SQLite) file
/// that survives a restart on the same port ([`Tansu::start_persistent`], [`Tansu::restart`]).
#[derive(Debug)]
pub struct Tansu {
    process: ServiceProcess,
    port: u16,
    /// The data directory of a persistent broker (removed on drop).
    data: Option<std::path::PathBuf>,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.process.kill();
        if let Some(dir) = &self.data {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Tansu {
    /// Starts a broker with memory storage on a free port and waits until it accepts
    /// connections.
    pub fn start() -> Result<Self> {
        let port = free_port();
        let process = Self::spawn(port, None)?;
        Ok(Self {
            process,
            port,
            data: None,
        })
    }

    /// Starts a broker on a free port that keeps its topics, messages and committed offsets in
    /// a libsql file (`--storage-engine sqlite://tansu.db`, relative to its own data
    /// directory), so [`Tansu::restart`] brings it back with the same data.
    pub fn start_persistent() -> Result<Self> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "whisk-testkit-tansu-data-{}-{port}",
            std::process::id()
        ));
        let process = Self::spawn(port, Some(&dir))?;
        Ok(Self {
            process,
            port,
            data: Some(dir),
        })
    }

    fn spawn(port: u16, data: Option<&std::path::Path>) -> Result<ServiceProcess> {
        let url = format!("tcp://127.0.0.1:{port}");
        let storage = match data {
            // tansu resolves a sqlite:// URL against its working directory.
            Some(_) => "sqlite://tansu.db",
            None => "memory://tansu/",
        };
        let args = vec![
            "broker".to_string(),
            "--listener-url".into(),
            url.clone(),
            "--advertised-listener-url".into(),
            url,
            "--storage-engine".into(),
            storage.into(),
        ];
        let mut process = match data {
            Some(dir) => ServiceProcess::spawn_in("tansu", "tansu", &args, TANSU_HINT, dir)?,
            None => ServiceProcess::spawn("tansu", "tansu", &args, TANSU_HINT)?,
        };
        let mut exited = false;
        let up = crate::process::wait_until(READY_TIMEOUT, || {
            exited = !process.is_running();
            exited || TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if up && !exited {
            return Ok(process);
        }
        let log = process.log_tail();
        Err(Error::NotReady {
            service: if exited {
                format!("tansu ({storage}) exited at start; is it built with {TANSU_HINT:?}?")
            } else {
                format!("tansu ({storage})")
            },
            secs: READY_TIMEOUT.as_secs(),
            log,
        })
    }

    /// Stops the broker (SIGKILL, as a crash would); [`Tansu::start_again`] brings it back.
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Starts the broker again on the same port, with the same data when it is persistent
    /// (memory storage comes back empty).
    pub fn start_again(&mut self) -> Result<()> {
        self.process.kill();
        self.process = Self::spawn(self.port, self.data.as_deref())?;
        Ok(())
    }

    /// [`Tansu::stop`] then [`Tansu::start_again`].
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.start_again()
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates a topic (tansu does not auto-create them).
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        let broker = format!("tcp://127.0.0.1:{}", self.port);
        let partitions = partitions.to_string();
        let args = [
            "topic",
            "create",
            name,
            "--broker",
            &broker,
            "--partitions",
            &partitions,
        ];
        let binary = which("tansu").ok_or_else(|| Error::MissingBinary {
            binary: "tansu".into(),
            hint: TANSU_HINT,
        })?;
        let out = Command::new(binary)
            .args(args)
            .output()
            .map_err(|source| Error::Io {
                what: "running tansu topic create".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(Error::Command {
                command: format!("tansu {}", args.join(" ")),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(())
    }

    /// The underlying process (to stop it for fault tests).
    pub fn process(&mut self) -> &mut ServiceProcess {
        &mut self.process
    }
}

/// A Prometheus Pushgateway (Debian's `prometheus-pushgateway`).
#[derive(Debug)]
pub struct Pushgateway {
    process: ServiceProcess,
    port: u16,
}

impl Pushgateway {
    /// Starts a Pushgateway on a free port with `extra` flags (for example
    /// `--push.disable-consistency-check`) and waits for `/-/ready`. It keeps its groups in
    /// memory only (`--persistence.file=`) unless `extra` sets a persistence file.
    pub fn start(extra: &[&str]) -> Result<Self> {
        Self::start_on(free_port(), extra)
    }

    /// Starts a Pushgateway on `port` (to bring one back on the same address).
    pub fn start_on(port: u16, extra: &[&str]) -> Result<Self> {
        let mut args = vec![format!("--web.listen-address=127.0.0.1:{port}")];
        // Debian's build defaults to a persistence file under /var/lib: every test Pushgateway
        // would reload the groups of earlier runs. Memory only, unless the caller says otherwise.
        if !extra.iter().any(|a| a.starts_with("--persistence.file")) {
            args.push("--persistence.file=".to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut process = ServiceProcess::spawn(
            "pushgateway",
            "prometheus-pushgateway",
            &args,
            "apt-get install -y prometheus-pushgateway",
        )?;
        let ready = format!("http://127.0.0.1:{port}/-/ready");
        process.wait_ready(READY_TIMEOUT, || http_get(&ready).is_ok())?;
        Ok(Self { process, port })
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `GET /api/v1/metrics` parsed: one entry per group.
    pub fn groups(&self) -> Result<Vec<serde_json::Value>> {
        let url = format!("{}/api/v1/metrics", self.url());
        let body = http_get(&url)?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| http_err("GET", &url, e))?;
        Ok(v.get("data")
            .and_then(|d| d.as_array())
            .cloned()
            .unwrap_or_default())
    }

    /// The text exposition of `/metrics`.
    pub fn metrics_text(&self) -> Result<String> {
        http_get(&format!("{}/metrics", self.url()))
    }

    /// The underlying process (to stop it for fault tests).
    pub fn process(&mut self) -> &mut ServiceProcess {
        &mut self.process
    }
}

/// A Prometheus server (Debian's `prometheus`) with a given configuration file and exemplar
/// storage on.
#[derive(Debug)]
pub struct Prometheus {
    process: ServiceProcess,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl crate::receivers::QueryApi for Prometheus {
    fn base_url(&self) -> String {
        self.url()
    }
}

impl Prometheus {
    /// Writes `config_yaml` to its working directory and starts Prometheus on a free port.
    pub fn start(config_yaml: &str) -> Result<Self> {
        Self::start_with(config_yaml, &[])
    }

    /// A Prometheus that scrapes nothing and takes remote writes on `/api/v1/write`
    /// (`--web.enable-remote-write-receiver`), with `extra` flags.
    pub fn start_receiver(extra: &[&str]) -> Result<Self> {
        let mut flags = vec!["--web.enable-remote-write-receiver"];
        flags.extend_from_slice(extra);
        Self::start_with("global:\n  scrape_interval: 15s\n", &flags)
    }

    /// Like [`Prometheus::start`], with `extra` flags.
    pub fn start_with(config_yaml: &str, extra: &[&str]) -> Result<Self> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("whisk-prom-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, config_yaml).map_err(|source| Error::Io {
            what: format!("writing {}", config.display()),
            source,
        })?;
        let args = vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            // Exemplars, as the demo and the shipped config expect (docs/design.md).
            "--enable-feature=exemplar-storage".to_string(),
        ];
        let args: Vec<String> = args
            .into_iter()
            .chain(extra.iter().map(|s| (*s).to_string()))
            .collect();
        let mut process = ServiceProcess::spawn(
            "prometheus",
            "prometheus",
            &args,
            "apt-get install -y prometheus",
        )?;
        let ready = format!("http://127.0.0.1:{port}/-/ready");
        process.wait_ready(READY_TIMEOUT, || http_get(&ready).is_ok())?;
        Ok(Self { process, port, dir })
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs an instant PromQL query and returns `data.result`.
    pub fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>> {
        crate::receivers::query_at(&self.url(), promql, None)
    }

    /// Sum of the values an instant query returns (0 when empty).
    pub fn query_sum(&self, promql: &str) -> Result<f64> {
        Ok(crate::receivers::sum_of(&self.query(promql)?))
    }

    /// The underlying process.
    pub fn process(&mut self) -> &mut ServiceProcess {
        &mut self.process
    }
}
