//! Pushing the registry to a Pushgateway: the grouping key (`whisk_grouping::GroupingKey`, `@base64`
//! for every value), a PUT
//! of the text exposition with a bounded timeout over one reused connection, failure
//! accounting, and the best-effort DELETE of the group when the action loop ends.
//!
//! The HTTP client is `ureq` 3 without default features: blocking, no async runtime, no threads
//! of its own, so it works in an action without a runtime and does not panic in one that runs
//! tokio (unlike `reqwest::blocking`). Its pool keeps the one connection alive between
//! activations. TLS (rustls, ring provider) is added by the `tls` feature only.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use whisk_grouping::GroupingKey;

use crate::builtins::PushFailure;
use crate::config::Config;
use crate::error::Error;
use crate::exposition::TextWriter;
use crate::identity::{ActionIdentity, instance_id};
use crate::registry::Metrics;
use crate::resolve::{CachingResolver, ResolverCache};

/// Pushes shorter than this are not attempted: there is no time left before the deadline.
const MIN_BUDGET: Duration = Duration::from_millis(1);
/// At most one stderr line about failing pushes per this period.
const NOTICE_EVERY: Duration = Duration::from_secs(60);
/// Keep the idle connection this long (the Pushgateway's Go server keeps it open).
const MAX_IDLE_AGE: Duration = Duration::from_secs(600);
/// Cap on the error body read from the Pushgateway.
const ERROR_BODY_LIMIT: u64 = 1024;
/// Longest reason quoted from an error body in the notice.
const REASON_LIMIT: usize = 200;
/// After a failed push, pushes are skipped for this long; the interval doubles with every
/// further failure in a row, up to [`BACKOFF_MAX`]. The state is kept meanwhile, so the next
/// push that succeeds carries everything.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Longest interval between push attempts while they keep failing.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Why a push did not succeed.
#[derive(Debug)]
pub(crate) enum PushError {
    NoTimeLeft,
    Status { status: u16, body: String },
    Transport(ureq::Error),
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoTimeLeft => write!(f, "no time left before the activation deadline"),
            Self::Status { status, body } => {
                // the gateway's reason is one line of text; quote the first, bounded
                let line = body.lines().map(str::trim).find(|l| !l.is_empty());
                match line {
                    Some(l) if l.len() > REASON_LIMIT => {
                        let mut end = REASON_LIMIT;
                        while !l.is_char_boundary(end) {
                            end -= 1;
                        }
                        write!(f, "the Pushgateway answered {status}: {}…", &l[..end])
                    }
                    Some(l) => write!(f, "the Pushgateway answered {status}: {l}"),
                    None => write!(f, "the Pushgateway answered {status}"),
                }
            }
            Self::Transport(e) => write!(f, "{e}"),
        }
    }
}

impl PushError {
    /// The `reason` label this failure is counted with.
    pub(crate) fn reason(&self) -> PushFailure {
        match self {
            Self::NoTimeLeft | Self::Transport(_) => PushFailure::Transport,
            Self::Status { status, .. } => PushFailure::of_status(*status),
        }
    }
}

/// What [`Pusher::push`] did.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum PushOutcome {
    Pushed,
    Skipped,
    Failed,
}

/// The `Authorization` header of pushes.
#[derive(Debug)]
enum Auth {
    None,
    /// Fixed basic-auth credentials (`WHISK_METRICS_USERNAME` / `WHISK_METRICS_PASSWORD`).
    Fixed(String),
    /// The activation's API key as basic auth; the header follows the key of each activation.
    ApiKey {
        key: Option<String>,
        header: Option<String>,
    },
}

/// The `Authorization` value for an OpenWhisk API key `uuid:key` (user `uuid`, password `key`:
/// split at the first `:`), or `None` for a key without `:`.
fn api_key_header(key: &str) -> Option<String> {
    let (user, pass) = key.split_once(':')?;
    Some(format!(
        "Basic {}",
        STANDARD.encode(format!("{user}:{pass}"))
    ))
}

/// Whether the URL's host is loopback (`127.0.0.0/8`, `::1`, `localhost`): there plain http
/// does not expose credentials to the network.
fn is_loopback_host(rest: &str) -> bool {
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The Pushgateway client of one process.
#[derive(Debug)]
pub(crate) struct Pusher {
    agent: ureq::Agent,
    resolved: ResolverCache,
    base: String,
    job: String,
    auth: Auth,
    timeout: Duration,
    min_interval: Duration,
    last_success: Option<Instant>,
    /// Failed pushes in a row, and when the next attempt may be made.
    failures_in_a_row: u32,
    retry_at: Option<Instant>,
    last_notice: Option<Instant>,
    failures_since_notice: u64,
    /// A failure notice not printed yet: it goes to stderr right before the next result line.
    pending_notice: Option<String>,
    body: Vec<u8>,
    text: TextWriter,
    url: String,
    url_for: Option<ActionIdentity>,
}

impl Pusher {
    /// A client for `config`, or `None` when pushing is off or no URL is configured.
    pub(crate) fn from_config(config: &Config) -> Result<Option<Self>, Error> {
        let Some(url) = config.pushgateway_url.as_deref() else {
            return Ok(None);
        };
        if config.disabled {
            return Ok(None);
        }
        let base = url.trim().trim_end_matches('/').to_string();
        let invalid = |reason| Error::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        let rest = if let Some(rest) = base.strip_prefix("http://") {
            rest
        } else if let Some(rest) = base.strip_prefix("https://") {
            if !cfg!(feature = "tls") {
                return Err(invalid(
                    "https needs whisk-metrics built with the `tls` feature",
                ));
            }
            rest
        } else {
            return Err(invalid("the URL must start with http:// or https://"));
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(invalid("the URL has no host"));
        }
        if config.job.is_empty() {
            return Err(invalid("the job of the grouping key must not be empty"));
        }
        let agent_config = ureq::Agent::config_builder();
        #[cfg(feature = "tls")]
        let agent_config = match &config.ca_file {
            Some(path) => agent_config.tls_config(tls_with_ca(path)?),
            None => agent_config,
        };
        let agent_config = agent_config
            .http_status_as_error(false)
            .max_idle_connections(1)
            .max_idle_connections_per_host(1)
            .max_idle_age(MAX_IDLE_AGE)
            .proxy(None)
            .user_agent(concat!("whisk-metrics/", env!("CARGO_PKG_VERSION")))
            .build();
        // The host is looked up on the loop's thread, once, and again only after a transport
        // failure (see `resolve`): no lookup thread can outlive a push.
        let (resolver, resolved) = CachingResolver::new();
        let agent = ureq::Agent::with_parts(
            agent_config,
            ureq::unversioned::transport::DefaultConnector::new(),
            resolver,
        );
        let insecure = base.starts_with("http://") && !is_loopback_host(rest);
        let auth = if config.api_key_auth {
            if insecure && !config.allow_insecure_auth {
                eprintln!(
                    "whisk-metrics: WHISK_METRICS_AUTH=api-key: not sending the API key over plain \
                     http to {base} (not a loopback host); use https, or set \
                     WHISK_METRICS_ALLOW_INSECURE_AUTH=true. Pushing without credentials."
                );
                Auth::None
            } else {
                if insecure {
                    eprintln!(
                        "whisk-metrics: sending the API key over plain http to {base} \
                         (WHISK_METRICS_ALLOW_INSECURE_AUTH=true)"
                    );
                }
                Auth::ApiKey {
                    key: None,
                    header: None,
                }
            }
        } else {
            match config.username.as_ref() {
                Some(user) => {
                    let pass = config.password.as_deref().unwrap_or("");
                    Auth::Fixed(format!(
                        "Basic {}",
                        STANDARD.encode(format!("{user}:{pass}"))
                    ))
                }
                None => Auth::None,
            }
        };
        // First lookup now, at start: on the main thread, before the loop reads a line or sets
        // a variable (an IP literal needs no query).
        resolved.lookup_now(&base);
        Ok(Some(Self {
            agent,
            resolved,
            base,
            job: config.job.clone(),
            auth,
            timeout: config.timeout,
            min_interval: config.min_push_interval,
            last_success: None,
            failures_in_a_row: 0,
            retry_at: None,
            last_notice: None,
            failures_since_notice: 0,
            pending_notice: None,
            body: Vec::with_capacity(8 * 1024),
            text: TextWriter::default(),
            url: String::new(),
            url_for: None,
        }))
    }

    /// The full URL of the group (cached; the identity of a container does not change).
    pub(crate) fn group_url(&mut self, identity: &ActionIdentity) -> &str {
        if self.url_for.as_ref() != Some(identity) {
            let key = GroupingKey::new(self.job.as_str())
                .with("instance", instance_id())
                .with("namespace", identity.namespace.as_str())
                .with("action", identity.action.as_str());
            self.url = format!("{}{}", self.base, key.path());
            self.url_for = Some(identity.clone());
        }
        &self.url
    }

    /// The activation's API key (`__OW_API_KEY`), for [`Config::with_api_key_auth`]; it arrives
    /// with every run line and may change. Cheap when it did not.
    pub(crate) fn set_api_key(&mut self, api_key: Option<&str>) {
        if let Auth::ApiKey { key, header } = &mut self.auth {
            if key.as_deref() != api_key {
                *header = api_key.and_then(api_key_header);
                if api_key.is_some() && header.is_none() {
                    self.pending_notice = Some(
                        "whisk-metrics: __OW_API_KEY is not `uuid:key`; pushing without credentials"
                            .to_string(),
                    );
                }
                *key = api_key.map(str::to_string);
            }
        }
    }

    /// Whether pushes authenticate with the activation's API key ([`Pusher::set_api_key`]).
    pub(crate) fn wants_api_key(&self) -> bool {
        matches!(self.auth, Auth::ApiKey { .. })
    }

    /// A failure notice to print now (before the result line), if one is due.
    pub(crate) fn take_notice(&mut self) -> Option<String> {
        self.pending_notice.take()
    }

    /// Pushes the whole registry unless the minimum interval or the back-off after failures
    /// says to wait. `deadline` bounds the timeout further (strict mode). Failures are counted,
    /// noticed at most once a minute (see [`Pusher::take_notice`]), and never returned: the next
    /// push sends the state again. `activation` is the id of the activation the push follows
    /// (empty when none): a notice names it, because in the default mode the notice can only be
    /// printed in the log of a later activation.
    pub(crate) fn push(
        &mut self,
        metrics: &Metrics,
        identity: &ActionIdentity,
        activation: &str,
        deadline: Option<Instant>,
        force: bool,
    ) -> PushOutcome {
        if !force {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return PushOutcome::Skipped;
            }
            if self.min_interval > Duration::ZERO
                && self
                    .last_success
                    .is_some_and(|t| t.elapsed() < self.min_interval)
            {
                return PushOutcome::Skipped;
            }
        }
        let started = Instant::now();
        // A push with a deadline (strict mode, before the result) never waits for a lookup.
        self.resolved.allow_lookups(deadline.is_none());
        let result = self.put(metrics, identity, started, deadline);
        self.resolved.allow_lookups(true);
        match result {
            Ok(()) => {
                metrics.builtins.push_done(started.elapsed());
                self.last_success = Some(Instant::now());
                self.failures_in_a_row = 0;
                self.retry_at = None;
                PushOutcome::Pushed
            }
            Err(e) => {
                metrics.builtins.push_failed(e.reason(), started.elapsed());
                self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
                let backoff = backoff(self.failures_in_a_row);
                self.retry_at = Some(Instant::now() + backoff);
                self.notice(&e, backoff, activation);
                PushOutcome::Failed
            }
        }
    }

    fn put(
        &mut self,
        metrics: &Metrics,
        identity: &ActionIdentity,
        started: Instant,
        deadline: Option<Instant>,
    ) -> Result<(), PushError> {
        let end = after(started, self.timeout);
        let end = deadline.map_or(end, |d| end.min(d));
        self.encode_body(metrics);
        let body = std::mem::take(&mut self.body);
        let mut result = self.send("PUT", identity, &body, end);
        // A pooled connection the server closed while the container was frozen fails at once:
        // retry once on a fresh connection (and a fresh lookup of the host, which may have
        // moved) if there is time left.
        if let Err(PushError::Transport(e)) = &result {
            self.resolved.forget();
            if !matches!(e, ureq::Error::Timeout(_)) {
                result = self.send("PUT", identity, &body, end);
                if matches!(result, Err(PushError::Transport(_))) {
                    self.resolved.forget();
                }
            }
        }
        self.body = body;
        result
    }

    /// After the result is written: looks the host up if nothing is cached (on this, the loop's,
    /// thread, before the next line is read and its `__OW_*` variables are set).
    pub(crate) fn after_result(&mut self, identity: &ActionIdentity) {
        if !self.resolved.is_cached() {
            let url = self.group_url(identity).to_string();
            self.resolved.lookup_now(&url);
        }
    }

    /// Renders the registry into the reused body buffer; returns its length.
    pub(crate) fn encode_body(&mut self, metrics: &Metrics) -> usize {
        if let Err(e) = metrics.encode_with(&mut self.text, &mut self.body) {
            // Only a metric without samples can fail to encode; push what there is.
            eprintln!("whisk-metrics: encoding metrics failed: {e}");
        }
        self.body.len()
    }

    /// Best-effort DELETE of the container's group (when stdin closes).
    pub(crate) fn delete(&mut self, identity: &ActionIdentity) -> bool {
        let end = after(Instant::now(), self.timeout);
        self.send("DELETE", identity, &[], end).is_ok()
    }

    fn send(
        &mut self,
        method: &str,
        identity: &ActionIdentity,
        body: &[u8],
        end: Instant,
    ) -> Result<(), PushError> {
        let budget = end.saturating_duration_since(Instant::now());
        if budget < MIN_BUDGET {
            return Err(PushError::NoTimeLeft);
        }
        let url = self.group_url(identity).to_string();
        let auth = match &self.auth {
            Auth::None => None,
            Auth::Fixed(h) => Some(h.clone()),
            Auth::ApiKey { header, .. } => header.clone(),
        };
        let response = if method == "DELETE" {
            let mut req = self
                .agent
                .delete(&url)
                .config()
                .timeout_global(Some(budget))
                .build();
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.call()
        } else {
            let mut req = self
                .agent
                .put(&url)
                .config()
                .timeout_global(Some(budget))
                .build()
                .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.send(body)
        };
        let mut response = response.map_err(PushError::Transport)?;
        let status = response.status().as_u16();
        // Read the (tiny) body so the connection goes back to the pool.
        let text = response
            .body_mut()
            .with_config()
            .limit(ERROR_BODY_LIMIT)
            .read_to_string()
            .unwrap_or_default();
        if status == 200 || status == 202 {
            Ok(())
        } else {
            Err(PushError::Status { status, body: text })
        }
    }

    /// Counts toward the next notice and prepares it when one is due (at most one a minute).
    fn notice(&mut self, e: &PushError, backoff: Duration, activation: &str) {
        self.failures_since_notice += 1;
        let due = self.last_notice.is_none_or(|t| t.elapsed() >= NOTICE_EVERY);
        if due {
            let after = if activation.is_empty() {
                String::new()
            } else {
                format!(" after activation {activation}")
            };
            self.pending_notice = Some(format!(
                "whisk-metrics: push to {}{after} failed ({}): {e} ({} failure(s) since the last \
                 notice; the metrics are kept; next attempt in {} s or later; this notice repeats \
                 at most once a minute)",
                self.url,
                e.reason().label(),
                self.failures_since_notice,
                backoff.as_secs(),
            ));
            self.last_notice = Some(Instant::now());
            self.failures_since_notice = 0;
        }
    }
}

/// How long to skip pushes after `failures` failed pushes in a row: 1 s doubling to 60 s.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

/// TLS that trusts exactly the certificates of the PEM file at `path`.
#[cfg(feature = "tls")]
fn tls_with_ca(path: &std::path::Path) -> Result<ureq::tls::TlsConfig, Error> {
    use ureq::tls::{PemItem, RootCerts, TlsConfig, parse_pem};
    let invalid = |reason: String| Error::InvalidCaFile {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
    let certs: Vec<_> = parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(invalid("no PEM certificate in it".to_string()));
    }
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&certs))
        .build())
}

/// `start + timeout`, saturating at a day (a configured timeout of `u64::MAX` ms must not
/// overflow the `Instant`).
fn after(start: Instant, timeout: Duration) -> Instant {
    start
        .checked_add(timeout)
        .unwrap_or(start + Duration::from_secs(86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_url_is_the_shared_grouping_key_path() {
        let config = Config::new().with_pushgateway_url("http://127.0.0.1:9091/");
        let mut p = Pusher::from_config(&config).unwrap().unwrap();
        let id = ActionIdentity {
            namespace: String::new(),
            action: "pkg/a".into(),
        };
        let url = p.group_url(&id).to_string();
        let path = url.strip_prefix("http://127.0.0.1:9091").unwrap();
        let key = GroupingKey::from_path(path).unwrap();
        assert_eq!(key.job(), "openwhisk_actions");
        assert_eq!(key.get("instance"), Some(instance_id()));
        assert_eq!(key.get("namespace"), Some(""));
        assert_eq!(key.get("action"), Some("pkg/a"));
        assert!(path.starts_with("/metrics/job@base64/"), "{path}");
    }

    #[test]
    fn the_group_path_in_design_md_is_the_one_the_sdk_pushes_to() {
        let config = Config::new().with_pushgateway_url("http://127.0.0.1:9091");
        let mut p = Pusher::from_config(&config).unwrap().unwrap();
        let id = ActionIdentity {
            namespace: "guest".into(),
            action: "hello".into(),
        };
        let url = p.group_url(&id).to_string();
        let key =
            GroupingKey::from_path(url.strip_prefix("http://127.0.0.1:9091").unwrap()).unwrap();
        // The documented template: each label's value replaced by its placeholder.
        let placeholder = |label: &str| match label {
            "job" => "<job>",
            "instance" => "<id>",
            "namespace" => "<ns>",
            "action" => "<action>",
            other => panic!("label {other} is not in design.md's grouping key"),
        };
        let mut template = format!("/metrics/job@base64/{}", placeholder("job"));
        for (label, _) in key.labels() {
            template.push_str(&format!("/{label}@base64/{}", placeholder(label)));
        }
        let design = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/design.md"),
        )
        .unwrap();
        let data_flow = design
            .lines()
            .find(|l| l.starts_with("action exec + whisk-metrics"))
            .expect("design.md's data-flow line of the SDK");
        assert!(
            data_flow.contains(&format!("PUT {template}")),
            "design.md shows {data_flow:?}; the SDK pushes to {template}"
        );
    }

    #[test]
    fn api_key_is_not_sent_over_plain_http_to_a_remote_host_unless_allowed() {
        let pusher = |url: &str, allow: bool| {
            let config = Config::new()
                .with_pushgateway_url(url)
                .with_api_key_auth(true)
                .with_allow_insecure_auth(allow);
            Pusher::from_config(&config).unwrap().unwrap()
        };
        let mut remote = pusher("http://192.0.2.1:9091", false);
        remote.set_api_key(Some("uuid:secret"));
        assert!(matches!(remote.auth, Auth::None), "{:?}", remote.auth);
        let mut allowed = pusher("http://192.0.2.1:9091", true);
        allowed.set_api_key(Some("uuid:secret"));
        assert!(
            matches!(&allowed.auth, Auth::ApiKey { header: Some(h), .. } if h == "Basic dXVpZDpzZWNyZXQ="),
            "{:?}",
            allowed.auth
        );
        for url in [
            "http://127.0.0.1:9091",
            "http://localhost:9091",
            "http://[::1]:9091",
        ] {
            let mut local = pusher(url, false);
            local.set_api_key(Some("a:b:c"));
            // split at the first `:`: user `a`, password `b:c`
            assert!(
                matches!(&local.auth, Auth::ApiKey { header: Some(h), .. } if *h == format!("Basic {}", STANDARD.encode("a:b:c"))),
                "{url}: {:?}",
                local.auth
            );
        }
        // a key without `:` is not sent, and says so before the next result
        let mut local = pusher("http://127.0.0.1:9091", false);
        local.set_api_key(Some("nocolon"));
        assert!(matches!(&local.auth, Auth::ApiKey { header: None, .. }));
        assert!(local.take_notice().is_some_and(|n| n.contains("uuid:key")));
    }

    #[test]
    fn back_off_doubles_from_one_second_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn after_a_failure_pushes_are_skipped_until_the_back_off_passes() {
        let metrics = Metrics::new();
        let config = Config::new().with_pushgateway_url("http://127.0.0.1:1");
        let mut p = Pusher::from_config(&config).unwrap().unwrap();
        let id = ActionIdentity::default();
        assert_eq!(p.push(&metrics, &id, "", None, false), PushOutcome::Failed);
        assert_eq!(p.push(&metrics, &id, "", None, false), PushOutcome::Skipped);
        assert_eq!(metrics.builtins.push_failures(PushFailure::Transport), 1);
        assert!(
            p.take_notice()
                .is_some_and(|n| n.contains("next attempt in 1 s"))
        );
        assert_eq!(p.take_notice(), None);
        // the back-off over: tried again (and failed again, now for 2 s)
        p.retry_at = Some(Instant::now());
        assert_eq!(p.push(&metrics, &id, "", None, false), PushOutcome::Failed);
        assert_eq!(p.failures_in_a_row, 2);
        assert_eq!(p.take_notice(), None, "at most one notice a minute");
    }

    #[test]
    fn status_reason_quotes_the_first_line_of_the_body_bounded() {
        let e = PushError::Status {
            status: 409,
            body: "\nfamily `jobs` is a gauge elsewhere\nmore detail\n".into(),
        };
        assert_eq!(
            e.to_string(),
            "the Pushgateway answered 409: family `jobs` is a gauge elsewhere"
        );
        assert_eq!(e.reason(), PushFailure::Rejected);
        let long = PushError::Status {
            status: 400,
            body: "é".repeat(300),
        };
        assert!(long.to_string().chars().count() < 160, "{long}");
    }

    #[test]
    fn rejects_unusable_urls_and_skips_when_unset_or_disabled() {
        let bad = |url: &str| Pusher::from_config(&Config::new().with_pushgateway_url(url));
        assert!(matches!(bad("pgw:9091"), Err(Error::InvalidUrl { .. })));
        assert!(matches!(bad("http://"), Err(Error::InvalidUrl { .. })));
        if !cfg!(feature = "tls") {
            assert!(matches!(
                bad("https://pgw:9091"),
                Err(Error::InvalidUrl { .. })
            ));
        }
        assert!(bad("http://127.0.0.1:9091/").unwrap().is_some());
        assert!(Pusher::from_config(&Config::new()).unwrap().is_none());
        let off = Config::new()
            .with_pushgateway_url("http://127.0.0.1:1")
            .with_disabled(true);
        assert!(Pusher::from_config(&off).unwrap().is_none());
    }

    #[test]
    fn failed_push_is_counted_and_state_is_kept() {
        let metrics = Metrics::new();
        // port 1 on loopback: connection refused at once
        let config = Config::new().with_pushgateway_url("http://127.0.0.1:1");
        let mut p = Pusher::from_config(&config).unwrap().unwrap();
        let id = ActionIdentity {
            namespace: "ns".into(),
            action: "a".into(),
        };
        assert_eq!(p.push(&metrics, &id, "", None, false), PushOutcome::Failed);
        assert_eq!(metrics.builtins.push_failures(PushFailure::Transport), 1);
    }

    #[test]
    fn push_with_no_time_left_fails_without_trying() {
        let metrics = Metrics::new();
        let config = Config::new().with_pushgateway_url("http://127.0.0.1:1");
        let mut p = Pusher::from_config(&config).unwrap().unwrap();
        let id = ActionIdentity::default();
        let outcome = p.push(&metrics, &id, "", Some(Instant::now()), false);
        assert_eq!(outcome, PushOutcome::Failed);
        assert_eq!(metrics.builtins.push_failures(PushFailure::Transport), 1);
    }
}
