//! Command-line flags and their `WHISK_COLLECTOR_*` environment equivalents (docs/design.md).

use std::net::SocketAddr;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use whisk_grouping::{parse_duration, parse_duration_nonzero};

use whisk_serve::{EnvPrefix, ListenerFlags};

use crate::aggregate::Limits;

/// The collector's environment prefix, for the listener's flags.
#[derive(Debug, Clone, Copy)]
pub struct Env;

impl EnvPrefix for Env {
    const PREFIX: &'static str = "WHISK_COLLECTOR_";
}

/// whisk-collector: OpenWhisk `events` (Kafka) → user-events compatible platform metrics on
/// /metrics and, optionally, pushed to a Prometheus Pushgateway; prunes stale SDK groups.
///
/// Every flag can also be set through the environment variable shown. Durations accept
/// `250ms`, `15s`, `15m`, `1h` or a bare number of seconds.
#[derive(Debug, Clone, Parser)]
#[command(name = "whisk-collector", version, about, long_about)]
pub struct Config {
    /// Kafka bootstrap servers, comma-separated [default: 127.0.0.1:9092; the environment
    /// variable KAFKA_HOSTS is used when this flag and WHISK_COLLECTOR_BROKERS are unset].
    #[arg(long, env = "WHISK_COLLECTOR_BROKERS", value_name = "HOST:PORT,...")]
    pub brokers: Option<String>,

    /// Prefix of the events topic: the collector consumes `<prefix>events`.
    #[arg(
        long,
        env = "WHISK_COLLECTOR_TOPIC_PREFIX",
        default_value = "",
        value_name = "PREFIX"
    )]
    pub topic_prefix: String,

    /// Kafka consumer group. Replicas in one group share the topic's partitions.
    #[arg(
        long,
        env = "WHISK_COLLECTOR_GROUP_ID",
        default_value = "whisk-collector"
    )]
    pub group_id: String,

    /// librdkafka property passed through as is (repeatable), e.g. `-X security.protocol=SASL_SSL`;
    /// the value is taken whole (`-X ssl.cipher.suites=A,B` keeps its comma). The environment
    /// variable takes a comma-separated list of key=value.
    #[arg(
        short = 'X',
        long = "kafka-property",
        env = KAFKA_PROPERTIES_ENV,
        value_name = "KEY=VALUE",
        value_parser = parse_property
    )]
    pub kafka_properties: Vec<(String, String)>,

    /// Address of the HTTP server (/metrics, /healthz, /readyz).
    #[arg(long, env = "WHISK_COLLECTOR_LISTEN", default_value = "0.0.0.0:9095")]
    pub listen: SocketAddr,

    /// The listener's timeouts and connection limits (docs/design.md, "Listeners").
    #[command(flatten)]
    pub listener: ListenerFlags<Env>,

    /// Base URL of a Pushgateway (http or https), e.g. `http://pushgateway:9091`; repeat it
    /// (or comma-separate it in the environment variable) for every shard of a sharded store:
    /// the platform group goes to the first, the janitor and its guard serve all. Unset: no
    /// pushing; offsets are then committed as soon as events are applied.
    #[arg(long, env = "WHISK_COLLECTOR_PUSHGATEWAY_URL", value_name = "URL", value_delimiter = ',', value_parser = parse_url)]
    pub pushgateway_url: Vec<reqwest::Url>,

    /// Instead of a Pushgateway: a Prometheus remote-write receiver's write URL (e.g.
    /// `http://prometheus:9090/api/v1/write`); the platform snapshot is written there as
    /// samples every --push-interval, no janitor runs, and `/metrics` carries only the
    /// collector's own `whisk_collector_*` metrics. Not together with --pushgateway-url.
    #[arg(long, env = "WHISK_COLLECTOR_REMOTE_WRITE_URL", value_name = "URL", value_parser = parse_url, conflicts_with = "pushgateway_url")]
    pub remote_write_url: Option<reqwest::Url>,

    /// A header sent with every remote write, `NAME=VALUE` (`Authorization`, a static tenant
    /// id such as `X-Scope-OrgID=platform`: platform series span every namespace); repeat the
    /// flag for several (the environment variable takes one per line).
    #[arg(long = "remote-write-header", env = "WHISK_COLLECTOR_REMOTE_WRITE_HEADER", value_name = "NAME=VALUE", value_delimiter = '\n', value_parser = whisk_remote_write::parse_header)]
    pub remote_write_headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,

    /// Every attempt and retry of one snapshot's write ends within this (then it is retried
    /// on the next interval, its offsets not committed).
    #[arg(long, env = "WHISK_COLLECTOR_REMOTE_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration_nonzero)]
    pub remote_write_timeout: Duration,

    /// Delete this replica's platform group from the Pushgateway on graceful shutdown (after the
    /// final push and commit), so a rollout leaves no frozen group behind.
    #[arg(long, env = "WHISK_COLLECTOR_DELETE_ON_SHUTDOWN", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub delete_on_shutdown: bool,

    /// How often the `openwhisk_*` metrics are PUT to the Pushgateway.
    #[arg(long, env = "WHISK_COLLECTOR_PUSH_INTERVAL", default_value = "15s", value_parser = parse_duration_nonzero)]
    pub push_interval: Duration,

    /// `job` of the collector's Pushgateway group.
    #[arg(long, env = "WHISK_COLLECTOR_PUSH_JOB", default_value = "openwhisk_platform", value_parser = parse_nonempty)]
    pub push_job: String,

    /// `instance` of the collector's Pushgateway group: this replica's id [default: hostname].
    #[arg(long, env = "WHISK_COLLECTOR_INSTANCE", value_parser = parse_nonempty)]
    pub instance: Option<String>,

    /// Basic-auth user for the Pushgateway.
    #[arg(long, env = "WHISK_COLLECTOR_PUSHGATEWAY_USERNAME")]
    pub pushgateway_username: Option<String>,

    /// Basic-auth password for the Pushgateway (for every shard).
    #[arg(
        long,
        env = "WHISK_COLLECTOR_PUSHGATEWAY_PASSWORD",
        hide_env_values = true
    )]
    pub pushgateway_password: Option<String>,

    /// File holding the basic-auth password (a mounted secret; one trailing newline is
    /// ignored). Read once at start; instead of --pushgateway-password.
    #[arg(
        long,
        env = "WHISK_COLLECTOR_PUSHGATEWAY_PASSWORD_FILE",
        value_name = "PATH",
        conflicts_with = "pushgateway_password"
    )]
    pub pushgateway_password_file: Option<std::path::PathBuf>,

    /// PEM file of the CA certificates to trust for an https Pushgateway, instead of the
    /// built-in roots (for a Pushgateway whose certificate a private CA signed).
    #[arg(long, env = "WHISK_COLLECTOR_PUSHGATEWAY_CA_FILE", value_name = "PATH")]
    pub pushgateway_ca_file: Option<std::path::PathBuf>,

    /// Janitor: delete groups of --prune-job whose last push is older than this (`0` disables).
    #[arg(long, env = "WHISK_COLLECTOR_PRUNE_AFTER", default_value = "15m", value_parser = parse_duration)]
    pub prune_after: Duration,

    /// Janitor: the only job whose groups are pruned (the SDK's job).
    #[arg(long, env = "WHISK_COLLECTOR_PRUNE_JOB", default_value = "openwhisk_actions", value_parser = parse_nonempty)]
    pub prune_job: String,

    /// Janitor: how often the Pushgateway's groups are checked.
    #[arg(long, env = "WHISK_COLLECTOR_PRUNE_INTERVAL", default_value = "60s", value_parser = parse_duration_nonzero)]
    pub prune_interval: Duration,

    /// Janitor: base URL of the Prometheus that scrapes every Pushgateway shard with
    /// `honor_labels: true`, e.g. `http://prometheus:9090`. Set: each round asks it for the
    /// stale groups (`push_time_seconds`) and for each shard's `up` instead of listing every
    /// Pushgateway (a full encode of its store) and gathering its `/metrics`; a shard whose
    /// `up` is not 1 or that it does not scrape (target `instance` ≠ the shard's `host:port`)
    /// is still checked directly. A round where Prometheus fails, and every 60th round (groups
    /// Prometheus cannot name), uses the listing. Unset: the listing only.
    #[arg(long, env = "WHISK_COLLECTOR_PROMETHEUS_URL", value_name = "URL", value_parser = parse_url)]
    pub prometheus_url: Option<reqwest::Url>,

    /// Janitor: log and count stale groups but do not DELETE them.
    #[arg(long, env = "WHISK_COLLECTOR_PRUNE_DRY_RUN")]
    pub prune_dry_run: bool,

    /// Cardinality guard: at most this many distinct actions; events of further actions are
    /// counted under action="__overflow__" (namespace kept).
    #[arg(long, env = "WHISK_COLLECTOR_MAX_ACTIONS", default_value_t = 10_000)]
    pub max_actions: usize,

    /// Cardinality guard: at most this many distinct `status_code` values per action (the code
    /// comes from the action's own result); further codes count as status_code="other".
    #[arg(
        long,
        env = "WHISK_COLLECTOR_MAX_STATUS_CODES_PER_ACTION",
        default_value_t = 20
    )]
    pub max_status_codes_per_action: usize,

    /// Cardinality guard: series budget over every platform family. New keys beyond it are
    /// counted under "other"/"__overflow__" (gauges: dropped) and in
    /// whisk_collector_capped_events_total. The default fits 10 000 actions.
    #[arg(long, env = "WHISK_COLLECTOR_MAX_SERIES", default_value_t = 400_000)]
    pub max_series: usize,

    /// Actions, namespaces and controllers without an event for this long are forgotten, so
    /// churn frees room under --max-actions and --max-series (`0` keeps them forever).
    #[arg(long, env = "WHISK_COLLECTOR_EVICT_AFTER", default_value = "1h", value_parser = parse_duration)]
    pub evict_after: Duration,

    /// Log filter: error, warn, info, debug, trace or a tracing directive such as
    /// `whisk_collector=debug,rdkafka=warn`.
    #[arg(long, env = "WHISK_COLLECTOR_LOG_LEVEL", default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,
}

impl Config {
    /// Bootstrap servers: the flag, else `KAFKA_HOSTS`, else `127.0.0.1:9092`.
    pub fn brokers(&self) -> String {
        self.brokers
            .clone()
            .or_else(|| {
                std::env::var("KAFKA_HOSTS")
                    .ok()
                    .filter(|s| !s.trim().is_empty())
            })
            .unwrap_or_else(|| "127.0.0.1:9092".to_string())
    }

    /// The aggregate's bounds.
    pub fn limits(&self) -> Limits {
        Limits {
            max_actions: self.max_actions,
            max_series: self.max_series,
            max_status_codes_per_action: self.max_status_codes_per_action,
            evict_after: self.evict_after,
        }
    }

    /// The consumed topic, `<prefix>events`.
    pub fn topic(&self) -> String {
        format!("{}events", self.topic_prefix)
    }

    /// This replica's id: the flag, else the hostname.
    pub fn instance(&self) -> String {
        self.instance.clone().unwrap_or_else(hostname)
    }

    /// Parses the process's flags and environment; exits with status 2 and a message naming the
    /// flag on an invalid value.
    pub fn from_env_and_args() -> Self {
        Self::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// Parses flags from an iterator (and the environment), as [`Config::from_env_and_args`].
    pub fn try_parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(args)?;
        let mut config = Self::from_arg_matches(&matches)?;
        // The comma split belongs to the environment variable only: a `-X` value is one
        // property, commas and all.
        if matches.value_source("kafka_properties") == Some(ValueSource::EnvVariable) {
            let raw = std::env::var(KAFKA_PROPERTIES_ENV).unwrap_or_default();
            config.kafka_properties = parse_property_list(&raw).map_err(|e| {
                Self::command().error(
                    clap::error::ErrorKind::ValueValidation,
                    format!("invalid value for '--kafka-property' ({KAFKA_PROPERTIES_ENV}): {e}"),
                )
            })?;
        }
        Ok(config)
    }
}

/// The machine's hostname (`unknown` if it cannot be read).
pub(crate) fn hostname() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().trim().to_string();
    if name.is_empty() {
        "unknown".to_string()
    } else {
        name
    }
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// The environment variable of `-X`: a comma-separated list of key=value.
const KAFKA_PROPERTIES_ENV: &str = "WHISK_COLLECTOR_KAFKA_PROPERTIES";

/// Splits the environment variable's `k=v,k=v` list (empty items skipped).
fn parse_property_list(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(parse_property)
        .collect()
}

fn parse_url(s: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!("{s:?}: scheme {other:?} is not http or https")),
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

    #[test]
    fn defaults_match_the_design() {
        let c = Config::try_parse_args(["whisk-collector"]).unwrap();
        assert_eq!(c.topic(), "events");
        assert_eq!(c.group_id, "whisk-collector");
        assert_eq!(c.listen.to_string(), "0.0.0.0:9095");
        assert_eq!(c.push_interval, Duration::from_secs(15));
        assert_eq!(c.push_job, "openwhisk_platform");
        assert_eq!(c.prune_after, Duration::from_secs(900));
        assert_eq!(c.prune_job, "openwhisk_actions");
        assert_eq!(c.prune_interval, Duration::from_secs(60));
        assert!(!c.prune_dry_run);
        assert_eq!(c.max_actions, 10_000);
        assert_eq!(c.limits(), Limits::default());
        assert_eq!(c.log_level, "info");
        assert!(c.pushgateway_url.is_empty());
        assert!(c.delete_on_shutdown);
        assert!(c.prometheus_url.is_none());
    }

    #[test]
    fn reads_the_prometheus_url() {
        let c = Config::try_parse_args(["x", "--prometheus-url", "http://prom:9090/p"]).unwrap();
        assert_eq!(
            c.prometheus_url.as_ref().map(|u| u.as_str()),
            Some("http://prom:9090/p")
        );
    }

    #[test]
    fn reads_every_pushgateway_url_from_flags_or_one_comma_separated_variable() {
        let c = Config::try_parse_args([
            "x",
            "--pushgateway-url",
            "http://a:9091",
            "--pushgateway-url",
            "http://b:9091,http://c:9091",
        ])
        .unwrap();
        let urls: Vec<&str> = c.pushgateway_url.iter().map(|u| u.as_str()).collect();
        assert_eq!(urls, ["http://a:9091/", "http://b:9091/", "http://c:9091/"]);
    }

    #[test]
    fn reads_repeated_kafka_properties_and_prefix() {
        let c = Config::try_parse_args([
            "x",
            "-X",
            "security.protocol=SASL_SSL",
            "-X",
            "sasl.password=a=b",
            "--topic-prefix",
            "prod-",
        ])
        .unwrap();
        assert_eq!(
            c.kafka_properties,
            vec![
                ("security.protocol".to_string(), "SASL_SSL".to_string()),
                ("sasl.password".to_string(), "a=b".to_string())
            ]
        );
        assert_eq!(c.topic(), "prod-events");
    }

    #[test]
    fn a_kafka_property_flag_keeps_its_commas() {
        let c = Config::try_parse_args([
            "x",
            "-X",
            "ssl.cipher.suites=ECDHE-RSA-AES128-GCM-SHA256,ECDHE-RSA-AES256-GCM-SHA384",
            "--kafka-property",
            "sasl.mechanisms=PLAIN",
        ])
        .unwrap();
        assert_eq!(
            c.kafka_properties,
            vec![
                (
                    "ssl.cipher.suites".to_string(),
                    "ECDHE-RSA-AES128-GCM-SHA256,ECDHE-RSA-AES256-GCM-SHA384".to_string()
                ),
                ("sasl.mechanisms".to_string(), "PLAIN".to_string())
            ]
        );
    }

    #[test]
    fn the_environment_list_is_split_at_commas() {
        assert_eq!(
            parse_property_list("security.protocol=SSL, ssl.ca.location=/ca.pem,"),
            Ok(vec![
                ("security.protocol".to_string(), "SSL".to_string()),
                ("ssl.ca.location".to_string(), "/ca.pem".to_string())
            ])
        );
        assert!(parse_property_list("a=1,novalue").is_err());
    }

    #[test]
    fn invalid_value_names_the_flag_and_exits_2() {
        for (args, flag) in [
            (vec!["x", "--push-interval", "soon"], "--push-interval"),
            (vec!["x", "--prune-after", "5y"], "--prune-after"),
            (
                vec!["x", "--pushgateway-url", "ftp://h"],
                "--pushgateway-url",
            ),
            (
                vec!["x", "--prometheus-url", "prom:9090"],
                "--prometheus-url",
            ),
            (vec!["x", "--max-actions", "lots"], "--max-actions"),
            (vec!["x", "--max-series", "lots"], "--max-series"),
            (vec!["x", "--evict-after", "soon"], "--evict-after"),
            (vec!["x", "-X", "novalue"], "--kafka-property"),
            (vec!["x", "--listen", "nowhere"], "--listen"),
            (vec!["x", "--log-level", "[["], "--log-level"),
        ] {
            let err = Config::try_parse_args(args.clone()).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
        }
    }
}
