//! Command-line flags and their `WHISK_GATEWAY_*` environment equivalents (docs/design.md).
//! Every default lives here.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use clap::{Parser, ValueEnum};
use whisk_grouping::{parse_duration, parse_duration_nonzero};
use whisk_serve::{EnvPrefix, ListenerFlags};

/// Negative results of the controller (a key it refused) are cached this long.
pub(crate) const NEGATIVE_AUTH_TTL: Duration = Duration::from_secs(10);

/// whisk-gateway: the front door for whisk-metrics SDK pushes. Authenticates every push with the
/// activation's OpenWhisk API key (asking the controller which namespaces the key may act in),
/// validates the body, refuses a family whose type clashes with what is already stored, and
/// forwards the group to one of N Pushgateways (rendezvous hashing of the instance id), or,
/// with --remote-write-url, writes it into a Prometheus remote-write receiver.
///
/// Every flag can also be set through the environment variable shown. Durations accept
/// `250ms`, `15s`, `5m`, `1h` or a bare number of seconds.
#[derive(Debug, Clone, Parser)]
#[command(name = "whisk-gateway", version, about, long_about)]
pub struct Config {
    /// Address of the HTTP server (the push API, /metrics, /healthz, /readyz).
    #[arg(long, env = "WHISK_GATEWAY_LISTEN", default_value = "0.0.0.0:9096")]
    pub listen: SocketAddr,

    /// Base URL of a Pushgateway (http or https); repeat the flag for several shards (the
    /// environment variable takes a comma-separated list). Each group goes to one shard, chosen
    /// by rendezvous hashing of its instance id over these URLs.
    #[arg(
        long = "pushgateway-url",
        env = "WHISK_GATEWAY_PUSHGATEWAY_URL",
        value_name = "URL",
        value_delimiter = ',',
        value_parser = parse_url
    )]
    pub pushgateway_urls: Vec<reqwest::Url>,

    /// Instead of Pushgateways: the write URL of a Prometheus remote-write receiver (Prometheus
    /// with `--web.enable-remote-write-receiver`, Mimir, Cortex, Thanos Receive, VictoriaMetrics),
    /// e.g. `http://prometheus:9090/api/v1/write`. Exactly one of this and --pushgateway-url.
    #[arg(long, env = "WHISK_GATEWAY_REMOTE_WRITE_URL", value_name = "URL", value_parser = parse_url)]
    pub remote_write_url: Option<reqwest::Url>,

    /// A header sent with every remote write, `NAME=VALUE` (e.g. `Authorization=Bearer …`, a
    /// static tenant id); repeat the flag for several (the environment variable takes one per
    /// line).
    #[arg(long = "remote-write-header", env = "WHISK_GATEWAY_REMOTE_WRITE_HEADER", value_name = "NAME=VALUE", value_delimiter = '\n', value_parser = whisk_remote_write::parse_header)]
    pub remote_write_headers: Vec<(HeaderName, HeaderValue)>,

    /// A header that carries the push's authenticated OpenWhisk namespace as the tenant id
    /// (e.g. `X-Scope-OrgID` for Mimir and Cortex), so each namespace's series stay apart.
    #[arg(long, env = "WHISK_GATEWAY_REMOTE_WRITE_TENANT_HEADER", value_name = "NAME", value_parser = whisk_remote_write::parse_header_name)]
    pub remote_write_tenant_header: Option<HeaderName>,

    /// A push is answered within this from its arrival: 503 if the receiver has not
    /// acknowledged its write by then (5xx and 429 are retried with jittered backoff,
    /// `Retry-After` honoured, while it lasts). Keep it below the SDK's
    /// WHISK_METRICS_TIMEOUT_MS (250 ms by default).
    #[arg(long, env = "WHISK_GATEWAY_REMOTE_WRITE_RETRY_BOUND", default_value = "200ms", value_parser = parse_duration_nonzero)]
    pub remote_write_retry_bound: Duration,

    /// Most groups whose write order and last series (for a DELETE's stale markers) a replica
    /// remembers in remote-write mode; idle groups are forgotten after 10 minutes.
    #[arg(long, env = "WHISK_GATEWAY_REMOTE_WRITE_MAX_GROUPS", default_value_t = 100_000, value_parser = parse_positive)]
    pub remote_write_max_groups: usize,

    /// Most bytes of remembered groups, their (shared) series shapes and translation plans (a
    /// quarter of it) in remote-write mode.
    #[arg(long, env = "WHISK_GATEWAY_REMOTE_WRITE_MEMORY_BYTES", default_value_t = 32 * 1024 * 1024, value_parser = parse_positive)]
    pub remote_write_memory_bytes: usize,

    /// OpenWhisk API host whose controller answers `GET /api/v1/namespaces`, e.g.
    /// `https://openwhisk.example.com` (a bare host means https). Required with `--auth api-key`.
    #[arg(long, env = "WHISK_GATEWAY_OPENWHISK_API_HOST", value_name = "URL", value_parser = parse_api_host)]
    pub openwhisk_api_host: Option<reqwest::Url>,

    /// How pushes are authenticated: `api-key` (HTTP basic auth with the activation's
    /// `__OW_API_KEY`, checked against the controller) or `none` (anyone may push any
    /// namespace: local use only; logged as a warning and exported as
    /// `whisk_gateway_auth_disabled 1`).
    #[arg(long, env = "WHISK_GATEWAY_AUTH", value_enum, default_value_t = AuthMode::ApiKey)]
    pub auth: AuthMode,

    /// How long the controller's answer for a key is cached (refusals: 10 s).
    #[arg(long, env = "WHISK_GATEWAY_AUTH_CACHE_TTL", default_value = "5m", value_parser = parse_duration)]
    pub auth_cache_ttl: Duration,

    /// Most keys held in the auth cache (only as SHA-256 hashes); beyond it expired entries and
    /// then arbitrary ones are evicted.
    #[arg(long, env = "WHISK_GATEWAY_AUTH_CACHE_SIZE", default_value_t = 10_000, value_parser = parse_positive)]
    pub auth_cache_size: usize,

    /// Timeout of one request to the controller (connect included).
    #[arg(long, env = "WHISK_GATEWAY_CONTROLLER_TIMEOUT", default_value = "2s", value_parser = parse_duration_nonzero)]
    pub controller_timeout: Duration,

    /// Largest accepted push body in bytes (larger: 400).
    #[arg(long, env = "WHISK_GATEWAY_MAX_BODY_BYTES", default_value_t = 256 * 1024, value_parser = parse_positive)]
    pub max_body_bytes: usize,

    /// Bytes of body shapes (a push body without its sample values) whose verdict is kept, so
    /// that a container's next push, differing only in values, is not parsed again
    /// (docs/design.md, "Validation cache"); 0 parses every body.
    #[arg(long, env = "WHISK_GATEWAY_VALIDATION_CACHE_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub validation_cache_bytes: usize,

    /// Most series (sample lines, histogram buckets included) in one push (more: 400).
    #[arg(long, env = "WHISK_GATEWAY_MAX_SERIES_PER_GROUP", default_value_t = 500, value_parser = parse_positive)]
    pub max_series_per_group: usize,

    /// The only job accepted: the SDK's (`WHISK_METRICS_JOB`). Every other job, the collector's
    /// `openwhisk_platform` included, is refused with 403.
    #[arg(long, env = "WHISK_GATEWAY_JOB", default_value = "openwhisk_actions", value_parser = parse_nonempty)]
    pub job: String,

    /// Most distinct family names in the cluster-wide family → type table (a push that would add
    /// one beyond it: 503 until a resync frees room).
    #[arg(long, env = "WHISK_GATEWAY_MAX_FAMILIES", default_value_t = 50_000, value_parser = parse_positive)]
    pub max_families: usize,

    /// How often the family → type table is rebuilt from every Pushgateway's `/api/v1/metrics`
    /// (so replicas converge and families of pruned groups are forgotten).
    #[arg(long, env = "WHISK_GATEWAY_FAMILY_RESYNC_INTERVAL", default_value = "60s", value_parser = parse_duration_nonzero)]
    pub family_resync_interval: Duration,

    /// Reads of one Pushgateway's `/api/v1/metrics` at first sight of a family name new to this
    /// replica start at most once per this interval, or ten times the last read's duration when
    /// longer (docs/design.md, "First sight"); `0s` turns spacing off (every first sight reads).
    #[arg(long, env = "WHISK_GATEWAY_FIRST_SIGHT_MIN_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub first_sight_min_interval: Duration,

    /// Timeout of one forwarded PUT/DELETE to a Pushgateway.
    #[arg(long, env = "WHISK_GATEWAY_FORWARD_TIMEOUT", default_value = "5s", value_parser = parse_duration_nonzero)]
    pub forward_timeout: Duration,

    /// Timeout of reading one Pushgateway's `/api/v1/metrics` for the family table.
    #[arg(long, env = "WHISK_GATEWAY_RESYNC_TIMEOUT", default_value = "30s", value_parser = parse_duration_nonzero)]
    pub resync_timeout: Duration,

    /// Threads serving requests [default: the CPUs this process may use, its cgroup's CPU quota
    /// included]. One per CPU of the container's limit: more threads on the same CPUs only take
    /// turns and wake each other (docs/benchmarks.md, "Gateway").
    #[arg(long, env = "WHISK_GATEWAY_WORKER_THREADS", value_name = "N", value_parser = parse_positive)]
    pub worker_threads: Option<usize>,

    /// The listener's timeouts and connection limits (docs/design.md, "Listeners").
    #[command(flatten)]
    pub listener: ListenerFlags<Env>,

    /// Log filter: error, warn, info, debug, trace or a tracing directive.
    #[arg(long, env = "WHISK_GATEWAY_LOG_LEVEL", default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,
}

/// The gateway's environment prefix, for the listener's flags.
#[derive(Debug, Clone, Copy)]
pub struct Env;

impl EnvPrefix for Env {
    const PREFIX: &'static str = "WHISK_GATEWAY_";
}

/// How pushes are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Basic auth with the activation's OpenWhisk API key, checked against the controller.
    ApiKey,
    /// No authentication (local use only).
    None,
}

impl Config {
    /// Parses flags from an iterator (for tests and embedding), then checks what clap cannot:
    /// `--auth api-key` needs `--openwhisk-api-host`. Errors exit with status 2.
    pub fn try_parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args)?.checked()
    }

    /// Parses the process's flags and environment; exits with status 2 on a bad configuration.
    pub fn parse_or_exit() -> Self {
        match Self::try_parse().and_then(Self::checked) {
            Ok(c) => c,
            Err(e) => e.exit(),
        }
    }

    /// `--worker-threads`, or one per CPU this process may use (its CPU quota included).
    pub fn runtime_threads(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    fn checked(self) -> Result<Self, clap::Error> {
        use clap::CommandFactory as _;
        match (self.pushgateway_urls.is_empty(), &self.remote_write_url) {
            (true, None) => {
                return Err(Self::command().error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "a store is needed: --pushgateway-url (WHISK_GATEWAY_PUSHGATEWAY_URL) or \
                     --remote-write-url (WHISK_GATEWAY_REMOTE_WRITE_URL)",
                ));
            }
            (false, Some(_)) => {
                return Err(Self::command().error(
                    clap::error::ErrorKind::ArgumentConflict,
                    "--pushgateway-url and --remote-write-url are alternatives: give one of them, \
                     not both",
                ));
            }
            _ => {}
        }
        if self.auth == AuthMode::ApiKey && self.openwhisk_api_host.is_none() {
            return Err(Self::command().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--auth api-key (the default) needs --openwhisk-api-host \
                 (WHISK_GATEWAY_OPENWHISK_API_HOST); use --auth none only for local use",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for url in &self.pushgateway_urls {
            if !seen.insert(url.as_str()) {
                return Err(Self::command().error(
                    clap::error::ErrorKind::ValueValidation,
                    format!("--pushgateway-url {url} is given twice"),
                ));
            }
        }
        Ok(self)
    }
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err(format!("{s:?}: must be at least 1")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a positive whole number")),
    }
}

fn parse_url(s: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s.trim()).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err(format!("{s:?} has no host")),
        other => Err(format!("{s:?}: scheme {other:?} is not http or https")),
    }
}

/// `__OW_API_HOST` style: a URL, or a bare `host[:port]` meaning https.
fn parse_api_host(s: &str) -> Result<reqwest::Url, String> {
    let t = s.trim();
    if t.contains("://") {
        parse_url(t)
    } else {
        parse_url(&format!("https://{t}"))
    }
}

fn parse_nonempty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".to_string())
    } else {
        Ok(s.to_string())
    }
}

fn parse_log_level(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("{s:?} is not a log filter: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PGW: [&str; 3] = ["x", "--pushgateway-url", "http://pgw:9091"];

    #[test]
    fn defaults_match_the_design() {
        let c = Config::try_parse_args(PGW.iter().chain(&["--auth", "none"])).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9096");
        assert_eq!(c.auth, AuthMode::None);
        assert_eq!(c.auth_cache_ttl, Duration::from_secs(300));
        assert_eq!(c.auth_cache_size, 10_000);
        assert_eq!(c.controller_timeout, Duration::from_secs(2));
        assert_eq!(c.max_body_bytes, 262_144);
        assert_eq!(c.max_series_per_group, 500);
        assert_eq!(c.validation_cache_bytes, 8 * 1024 * 1024);
        assert_eq!(c.job, "openwhisk_actions");
        assert_eq!(c.max_families, 50_000);
        assert_eq!(c.family_resync_interval, Duration::from_secs(60));
        assert_eq!(c.forward_timeout, Duration::from_secs(5));
        assert_eq!(c.listener.limits, whisk_serve::Limits::default());
        assert_eq!(c.worker_threads, None);
        assert_eq!(
            c.runtime_threads(),
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        );
        assert_eq!(c.pushgateway_urls.len(), 1);
    }

    #[test]
    fn pushgateway_url_repeats_and_api_host_defaults_to_https() {
        let c = Config::try_parse_args([
            "x",
            "--pushgateway-url",
            "http://a:9091",
            "--pushgateway-url",
            "http://b:9091",
            "--openwhisk-api-host",
            "openwhisk.example.com",
        ])
        .unwrap();
        assert_eq!(c.pushgateway_urls.len(), 2);
        assert_eq!(c.auth, AuthMode::ApiKey);
        assert_eq!(
            c.openwhisk_api_host.map(|u| u.to_string()),
            Some("https://openwhisk.example.com/".to_string())
        );
    }

    #[test]
    fn bad_configuration_names_the_flag_and_exits_2() {
        for (args, flag) in [
            (vec!["x"], "--pushgateway-url"),
            (PGW.to_vec(), "--openwhisk-api-host"),
            (
                vec!["x", "--pushgateway-url", "ftp://h", "--auth", "none"],
                "--pushgateway-url",
            ),
            (
                [
                    &PGW[..],
                    &["--pushgateway-url", "http://pgw:9091", "--auth", "none"],
                ]
                .concat(),
                "--pushgateway-url",
            ),
            ([&PGW[..], &["--auth", "maybe"]].concat(), "--auth"),
            (
                [&PGW[..], &["--auth", "none", "--auth-cache-ttl", "soon"]].concat(),
                "--auth-cache-ttl",
            ),
            (
                [&PGW[..], &["--auth", "none", "--max-body-bytes", "0"]].concat(),
                "--max-body-bytes",
            ),
            (
                [&PGW[..], &["--auth", "none", "--listen", "nowhere"]].concat(),
                "--listen",
            ),
            (
                [&PGW[..], &["--auth", "none", "--worker-threads", "0"]].concat(),
                "--worker-threads",
            ),
            (
                [&PGW[..], &["--auth", "none", "--head-timeout", "0"]].concat(),
                "--head-timeout",
            ),
            (
                [
                    &PGW[..],
                    &["--auth", "none", "--max-connections-per-peer", "x"],
                ]
                .concat(),
                "--max-connections-per-peer",
            ),
        ] {
            let err = Config::try_parse_args(args.clone()).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn remote_write_is_an_alternative_to_pushgateways_never_both() {
        let rw = [
            "x",
            "--auth",
            "none",
            "--remote-write-url",
            "http://prom:9090/api/v1/write",
        ];
        let c = Config::try_parse_args(rw).unwrap();
        assert!(c.pushgateway_urls.is_empty());
        assert_eq!(c.remote_write_retry_bound, Duration::from_millis(200));
        assert_eq!(c.remote_write_max_groups, 100_000);
        assert_eq!(c.remote_write_memory_bytes, 32 * 1024 * 1024);
        let both = [&rw[..], &["--pushgateway-url", "http://pgw:9091"]].concat();
        let err = Config::try_parse_args(both).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("not both"), "{err}");
        let err = Config::try_parse_args(["x", "--auth", "none"]).unwrap_err();
        assert!(err.to_string().contains("--remote-write-url"), "{err}");
    }

    #[test]
    fn remote_write_headers_are_name_value_pairs_and_protocol_headers_are_refused() {
        let c = Config::try_parse_args([
            "x",
            "--auth",
            "none",
            "--remote-write-url",
            "http://mimir/api/v1/push",
            "--remote-write-header",
            "Authorization=Bearer abc=",
            "--remote-write-header",
            "X-Scope-OrgID=platform",
            "--remote-write-tenant-header",
            "X-Scope-OrgID",
        ])
        .unwrap();
        let pairs: Vec<(String, String)> = c
            .remote_write_headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("authorization".to_string(), "Bearer abc=".to_string()),
                ("x-scope-orgid".to_string(), "platform".to_string())
            ]
        );
        assert_eq!(
            c.remote_write_tenant_header.unwrap().as_str(),
            "x-scope-orgid"
        );
        for bad in ["Content-Encoding=gzip", "novalue", "bad name=x"] {
            let err = Config::try_parse_args([
                "x",
                "--auth",
                "none",
                "--remote-write-url",
                "http://mimir/api/v1/push",
                "--remote-write-header",
                bad,
            ])
            .unwrap_err();
            assert!(
                err.to_string().contains("--remote-write-header"),
                "{bad}: {err}"
            );
        }
    }
}
