//! Real services for tests: a tansu Kafka broker, a Prometheus Pushgateway (also one with basic
//! auth and TLS), a Prometheus server (also as a remote-write receiver) and VictoriaMetrics,
//! each started as a child process on a free loopback port and killed when dropped; and a
//! recording, fault-injecting remote-write proxy ([`WriteProxy`]) and a tee that forwards each
//! push to several gateways ([`PushTee`]).
//!
//! No mocks: the binaries are the ones `scripts/setup.sh` installs (`tansu` from crates.io,
//! `prometheus-pushgateway` and `prometheus` from Debian). A missing binary is an error that
//! says how to install it, never a silently skipped test. A test that needs something only
//! some machines have (root, podman, a cgroup v1 controller) asks [`require`], which fails it
//! under `CI=true` and otherwise skips it with one `SKIPPED` line that says why.
//!
//! ```no_run
//! let pgw = whisk_testkit::Pushgateway::start(&[]).unwrap();
//! let body = whisk_testkit::http_get(&format!("{}/metrics", pgw.url())).unwrap();
//! assert!(body.contains("pushgateway_build_info"));
//! ```

mod binaries;
mod process;
mod receivers;
mod require;
mod secure;
mod services;
mod tee;

pub use binaries::{action_exec, profile_dir, target_dir, workspace_bin};
pub use process::{ServiceProcess, free_port, http_get, wait_until};
pub use receivers::{QueryApi, Recorded, VictoriaMetrics, WriteProxy, sum_of};
pub use require::{in_ci, require};
pub use secure::SecurePushgateway;
pub use services::{Prometheus, Pushgateway, Tansu};
pub use tee::PushTee;

/// Why a service could not be started or queried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binary is not on `PATH`.
    #[error("`{binary}` is not installed or not on PATH; run scripts/setup.sh ({hint})")]
    MissingBinary {
        /// Binary name.
        binary: String,
        /// How to install it.
        hint: &'static str,
    },
    /// Spawning or talking to the process failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The service did not become ready in time.
    #[error("{service} did not become ready within {secs} s; its log:\n{log}")]
    NotReady {
        /// Service name.
        service: String,
        /// Seconds waited.
        secs: u64,
        /// Tail of the service's log.
        log: String,
    },
    /// An HTTP request failed.
    #[error("HTTP {method} {url} failed: {message}")]
    Http {
        /// Method.
        method: &'static str,
        /// URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A command run against a service failed.
    #[error("`{command}` failed: {output}")]
    Command {
        /// The command line.
        command: String,
        /// Its output.
        output: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
