//! Pushing the registry to a Pushgateway: the grouping key (`@base64` for every value), a PUT
//! of the text exposition with a bounded timeout over one reused connection, failure
//! accounting, and the best-effort DELETE of the group when the action loop ends.
//!
//! The HTTP client is `ureq` 3 without default features: blocking, no async runtime, no threads
//! of its own, so it works in an action without a runtime and does not panic in one that runs
//! tokio (unlike `reqwest::blocking`). Its pool keeps the one connection alive between
//! activations. TLS (rustls, ring provider) is added by the `tls` feature only.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

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

/// Encodes a grouping-key value for a `<label>@base64/<value>` path segment: RFC 4648 URL-safe
/// base64 without padding, and `=` for the empty value (the Pushgateway requires exactly that).
pub fn encode_value(value: &str) -> String {
    if value.is_empty() {
        "=".to_string()
    } else {
        URL_SAFE_NO_PAD.encode(value)
    }
}

/// The path of the container's group:
/// `/metrics/job@base64/<job>/instance@base64/<id>/namespace@base64/<ns>/action@base64/<action>`.
pub fn group_path(job: &str, instance: &str, identity: &ActionIdentity) -> String {
    format!(
        "/metrics/job@base64/{}/instance@base64/{}/namespace@base64/{}/action@base64/{}",
        encode_value(job),
        encode_value(instance),
        encode_value(&identity.namespace),
        encode_value(&identity.action),
    )
}

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
                write!(f, "the Pushgateway answered {status}: {}", body.trim())
            }
            Self::Transport(e) => write!(f, "{e}"),
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

/// The Pushgateway client of one process.
#[derive(Debug)]
pub(crate) struct Pusher {
    agent: ureq::Agent,
    resolved: ResolverCache,
    base: String,
    job: String,
    auth: Option<String>,
    timeout: Duration,
    min_interval: Duration,
    last_success: Option<Instant>,
    last_notice: Option<Instant>,
    failures_since_notice: u64,
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
        let agent_config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections(1)
            .max_idle_connections_per_host(1)
            .max_idle_age(MAX_IDLE_AGE)
            .proxy(None)
            .user_agent(concat!("whisk-metrics/", env!("CARGO_PKG_VERSION")))
            .build();
        // The host is resolved once, not before every push (see `resolve`).
        let (resolver, resolved) = CachingResolver::new();
        let agent = ureq::Agent::with_parts(
            agent_config,
            ureq::unversioned::transport::DefaultConnector::new(),
            resolver,
        );
        let auth = config.username.as_ref().map(|user| {
            let pass = config.password.as_deref().unwrap_or("");
            format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")))
        });
        Ok(Some(Self {
            agent,
            resolved,
            base,
            job: config.job.clone(),
            auth,
            timeout: config.timeout,
            min_interval: config.min_push_interval,
            last_success: None,
            last_notice: None,
            failures_since_notice: 0,
            body: Vec::with_capacity(8 * 1024),
            text: TextWriter::default(),
            url: String::new(),
            url_for: None,
        }))
    }

    /// The full URL of the group (cached; the identity of a container does not change).
    pub(crate) fn group_url(&mut self, identity: &ActionIdentity) -> &str {
        if self.url_for.as_ref() != Some(identity) {
            self.url = format!(
                "{}{}",
                self.base,
                group_path(&self.job, instance_id(), identity)
            );
            self.url_for = Some(identity.clone());
        }
        &self.url
    }

    /// Pushes the whole registry unless the minimum interval says to wait. `deadline` bounds
    /// the timeout further (strict mode). Failures are counted, noticed on stderr at most once
    /// a minute, and never returned: the next activation pushes the state again.
    pub(crate) fn push(
        &mut self,
        metrics: &Metrics,
        identity: &ActionIdentity,
        deadline: Option<Instant>,
        force: bool,
    ) -> PushOutcome {
        if !force && self.min_interval > Duration::ZERO {
            if let Some(last) = self.last_success {
                if last.elapsed() < self.min_interval {
                    return PushOutcome::Skipped;
                }
            }
        }
        let started = Instant::now();
        let result = self.put(metrics, identity, started, deadline);
        metrics
            .builtins
            .push_duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                self.last_success = Some(Instant::now());
                PushOutcome::Pushed
            }
            Err(e) => {
                metrics.builtins.push_failures.inc();
                self.notice(&e);
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
        let end = match deadline {
            Some(d) => (started + self.timeout).min(d),
            None => started + self.timeout,
        };
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
        let end = Instant::now() + self.timeout;
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
        let auth = self.auth.clone();
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

    fn notice(&mut self, e: &PushError) {
        self.failures_since_notice += 1;
        let due = self.last_notice.is_none_or(|t| t.elapsed() >= NOTICE_EVERY);
        if due {
            eprintln!(
                "whisk-metrics: push to {} failed: {e} ({} failure(s) since the last notice; the \
                 metrics are kept and pushed again after the next activation; this notice repeats \
                 at most once a minute)",
                self.url, self.failures_since_notice
            );
            self.last_notice = Some(Instant::now());
            self.failures_since_notice = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(segment: &str) -> String {
        let raw = URL_SAFE_NO_PAD
            .decode(segment.trim_end_matches('='))
            .unwrap();
        String::from_utf8(raw).unwrap()
    }

    #[test]
    fn encodes_values_with_slashes_url_safe_without_slashes() {
        let e = encode_value("pkg/a");
        assert!(
            !e.contains('/') && !e.contains('+') && !e.contains('='),
            "{e}"
        );
        assert_eq!(decode(&e), "pkg/a");
        // `??>` and `???` are `Pz8+` and `Pz8/` in standard base64
        assert_eq!(encode_value("??>"), "Pz8-");
        assert_eq!(encode_value("???"), "Pz8_");
    }

    #[test]
    fn encodes_the_empty_value_as_a_single_equals_sign() {
        assert_eq!(encode_value(""), "=");
    }

    #[test]
    fn encodes_unicode_values_losslessly() {
        for v in ["grüße/ñ", "名前", "🚀 rocket", "a@b=c"] {
            let e = encode_value(v);
            assert!(
                e.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{e}"
            );
            assert_eq!(decode(&e), v);
        }
    }

    #[test]
    fn group_path_encodes_every_grouping_value() {
        let id = ActionIdentity {
            namespace: String::new(),
            action: "pkg/a".into(),
        };
        let p = group_path("openwhisk_actions", "00ff", &id);
        assert_eq!(
            p,
            format!(
                "/metrics/job@base64/{}/instance@base64/{}/namespace@base64/=/action@base64/{}",
                URL_SAFE_NO_PAD.encode("openwhisk_actions"),
                URL_SAFE_NO_PAD.encode("00ff"),
                URL_SAFE_NO_PAD.encode("pkg/a"),
            )
        );
        assert_eq!(p.matches('/').count(), 9, "{p}");
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
        metrics.builtins.success.inc();
        assert_eq!(p.push(&metrics, &id, None, false), PushOutcome::Failed);
        assert_eq!(metrics.builtins.push_failures.get(), 1);
        assert_eq!(metrics.builtins.success.get(), 1);
        assert_eq!(metrics.builtins.push_duration.get_sample_count(), 1);
    }

    #[test]
    fn push_with_no_time_left_fails_without_trying() {
        let metrics = Metrics::new();
        let config = Config::new().with_pushgateway_url("http://127.0.0.1:1");
        let mut p = Pusher::from_config(&config).unwrap().unwrap();
        let id = ActionIdentity::default();
        let outcome = p.push(&metrics, &id, Some(Instant::now()), false);
        assert_eq!(outcome, PushOutcome::Failed);
        assert_eq!(metrics.builtins.push_failures.get(), 1);
    }
}
