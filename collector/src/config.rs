//! Command-line flags and their `WHISK_COLLECTOR_*` environment equivalents (docs/design.md).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

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

    /// librdkafka property passed through as is (repeatable), e.g. `-X security.protocol=SASL_SSL`.
    /// The environment variable takes a comma-separated list of key=value.
    #[arg(
        short = 'X',
        long = "kafka-property",
        env = "WHISK_COLLECTOR_KAFKA_PROPERTIES",
        value_name = "KEY=VALUE",
        value_delimiter = ',',
        value_parser = parse_property
    )]
    pub kafka_properties: Vec<(String, String)>,

    /// Address of the HTTP server (/metrics, /healthz, /readyz).
    #[arg(long, env = "WHISK_COLLECTOR_LISTEN", default_value = "0.0.0.0:9095")]
    pub listen: SocketAddr,

    /// Base URL of a Pushgateway (http or https), e.g. `http://pushgateway:9091`; repeat it
    /// (or comma-separate it in the environment variable) for every shard of a sharded store:
    /// the platform group goes to the first, the janitor and its guard serve all. Unset: no
    /// pushing; offsets are then committed as soon as events are applied.
    #[arg(long, env = "WHISK_COLLECTOR_PUSHGATEWAY_URL", value_name = "URL", value_delimiter = ',', value_parser = parse_url)]
    pub pushgateway_url: Vec<reqwest::Url>,

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

    /// Basic-auth password for the Pushgateway.
    #[arg(
        long,
        env = "WHISK_COLLECTOR_PUSHGATEWAY_PASSWORD",
        hide_env_values = true
    )]
    pub pushgateway_password: Option<String>,

    /// Janitor: delete groups of --prune-job whose last push is older than this (`0` disables).
    #[arg(long, env = "WHISK_COLLECTOR_PRUNE_AFTER", default_value = "15m", value_parser = parse_duration)]
    pub prune_after: Duration,

    /// Janitor: the only job whose groups are pruned (the SDK's job).
    #[arg(long, env = "WHISK_COLLECTOR_PRUNE_JOB", default_value = "openwhisk_actions", value_parser = parse_nonempty)]
    pub prune_job: String,

    /// Janitor: how often the Pushgateway's groups are checked.
    #[arg(long, env = "WHISK_COLLECTOR_PRUNE_INTERVAL", default_value = "60s", value_parser = parse_duration_nonzero)]
    pub prune_interval: Duration,

    /// Janitor: log and count stale groups but do not DELETE them.
    #[arg(long, env = "WHISK_COLLECTOR_PRUNE_DRY_RUN")]
    pub prune_dry_run: bool,

    /// Cardinality guard: at most this many distinct actions; events of further actions are
    /// counted under action="__overflow__" (namespace kept).
    #[arg(long, env = "WHISK_COLLECTOR_MAX_ACTIONS", default_value_t = 10_000)]
    pub max_actions: usize,

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

    /// The consumed topic, `<prefix>events`.
    pub fn topic(&self) -> String {
        format!("{}events", self.topic_prefix)
    }

    /// This replica's id: the flag, else the hostname.
    pub fn instance(&self) -> String {
        self.instance.clone().unwrap_or_else(hostname)
    }

    /// Parses flags from an iterator (for tests and embedding).
    pub fn try_parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args)
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

/// Parses `250ms`, `15s`, `15m`, `1h` or a bare number of seconds (fractions allowed).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (use e.g. 250ms, 15s, 15m, 1h or 30)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn parse_duration_nonzero(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        Err(format!("{s:?}: must be greater than zero"))
    } else {
        Ok(d)
    }
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
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
    fn parses_durations_in_every_documented_form() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("15x").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("-3s").is_err());
    }

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
        assert_eq!(c.log_level, "info");
        assert!(c.pushgateway_url.is_empty());
        assert!(c.delete_on_shutdown);
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
    fn invalid_value_names_the_flag_and_exits_2() {
        for (args, flag) in [
            (vec!["x", "--push-interval", "soon"], "--push-interval"),
            (vec!["x", "--prune-after", "5y"], "--prune-after"),
            (
                vec!["x", "--pushgateway-url", "ftp://h"],
                "--pushgateway-url",
            ),
            (vec!["x", "--max-actions", "lots"], "--max-actions"),
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
