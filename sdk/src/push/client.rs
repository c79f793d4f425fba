//! The HTTP side of pushing: the Pushgateway URL checked, the `ureq` agent that keeps one
//! connection alive between activations, the `Authorization` header, and one request bounded by
//! the time left.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::builtins::PushFailure;
use crate::config::Config;
use crate::error::Error;
use crate::resolve::{CachingResolver, ResolverCache};

/// Pushes shorter than this are not attempted: there is no time left before the deadline.
const MIN_BUDGET: Duration = Duration::from_millis(1);
/// Keep the idle connection this long (the Pushgateway's Go server keeps it open).
const MAX_IDLE_AGE: Duration = Duration::from_secs(600);
/// A push that ends this long after its timeout did not time out on a running process: the
/// container was frozen (paused) while it was in flight.
const FROZEN_AFTER: Duration = Duration::from_secs(1);
/// Cap on the error body read from the Pushgateway.
const ERROR_BODY_LIMIT: u64 = 1024;
/// Longest reason quoted from an error body in the notice.
const REASON_LIMIT: usize = 200;

/// Why a push did not succeed.
#[derive(Debug)]
pub(crate) enum PushError {
    NoTimeLeft,
    Status {
        status: u16,
        body: String,
    },
    Transport(ureq::Error),
    /// `cause`, seen `late` after the push's end: the container was frozen meanwhile.
    Frozen {
        late: Duration,
        cause: Box<PushError>,
    },
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
            Self::Frozen { late, cause } => write!(
                f,
                "the container was frozen while the push was in flight ({cause}, seen {} ms \
                 after its timeout); whether it arrived is unknown, the next activation pushes \
                 again",
                late.as_millis()
            ),
        }
    }
}

impl PushError {
    /// The `reason` label this failure is counted with.
    pub(crate) fn reason(&self) -> PushFailure {
        match self {
            Self::NoTimeLeft | Self::Transport(_) => PushFailure::Transport,
            Self::Status { status, .. } => PushFailure::of_status(*status),
            Self::Frozen { .. } => PushFailure::Frozen,
        }
    }

    /// This failure as seen at `finished` by a push that was to end at `end`, with no host
    /// lookup in between (the system resolver ignores the timeout): a timeout, or no time left
    /// for the retry, seen [`FROZEN_AFTER`] or more past the end was the process being stopped
    /// meanwhile (a running process's timeout fires on time). An answer is never the freeze's.
    pub(crate) fn seen_at(self, finished: Instant, end: Instant) -> Self {
        let timed_out = matches!(
            self,
            Self::NoTimeLeft | Self::Transport(ureq::Error::Timeout(_))
        );
        match finished.checked_duration_since(end) {
            Some(late) if timed_out && late >= FROZEN_AFTER => Self::Frozen {
                late,
                cause: Box::new(self),
            },
            _ => self,
        }
    }
}

/// The `Authorization` header of pushes.
#[derive(Debug)]
pub(super) enum Auth {
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
pub(super) fn api_key_header(key: &str) -> Option<String> {
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

/// The HTTP client of one Pushgateway: its checked base URL, the agent and the credentials.
#[derive(Debug)]
pub(super) struct Client {
    agent: ureq::Agent,
    /// The cached lookup of the host (see `resolve`).
    pub(super) resolved: ResolverCache,
    /// The URL without a trailing `/`.
    pub(super) base: String,
    pub(super) auth: Auth,
}

impl Client {
    /// A client for the Pushgateway at `url` with `config`'s timeouts, CA and credentials; an
    /// unusable URL is [`Error::InvalidUrl`].
    pub(super) fn new(url: &str, config: &Config) -> Result<Self, Error> {
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
        let auth = Auth::from_config(config, &base, insecure);
        Ok(Self {
            agent,
            resolved,
            base,
            auth,
        })
    }

    /// One `method` request (`PUT` with `body`, or `DELETE`) to `url`, given up at `end`.
    pub(super) fn send(
        &self,
        method: &str,
        url: &str,
        body: &[u8],
        end: Instant,
    ) -> Result<(), PushError> {
        let budget = end.saturating_duration_since(Instant::now());
        if budget < MIN_BUDGET {
            return Err(PushError::NoTimeLeft);
        }
        let auth = match &self.auth {
            Auth::None => None,
            Auth::Fixed(h) => Some(h.clone()),
            Auth::ApiKey { header, .. } => header.clone(),
        };
        let response = if method == "DELETE" {
            let mut req = self
                .agent
                .delete(url)
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
                .put(url)
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
}

impl Auth {
    /// The credentials `config` asks for. The API key is not sent over plain http to a host
    /// that is not loopback (`insecure`) unless the configuration allows it.
    fn from_config(config: &Config, base: &str, insecure: bool) -> Self {
        if config.api_key_auth {
            if insecure && !config.allow_insecure_auth {
                eprintln!(
                    "whisk-metrics: WHISK_METRICS_AUTH=api-key: not sending the API key over plain \
                     http to {base} (not a loopback host); use https, or set \
                     WHISK_METRICS_ALLOW_INSECURE_AUTH=true. Pushing without credentials."
                );
                return Self::None;
            }
            if insecure {
                eprintln!(
                    "whisk-metrics: sending the API key over plain http to {base} \
                     (WHISK_METRICS_ALLOW_INSECURE_AUTH=true)"
                );
            }
            return Self::ApiKey {
                key: None,
                header: None,
            };
        }
        match config.username.as_ref() {
            Some(user) => {
                let pass = config.password.as_deref().unwrap_or("");
                Self::Fixed(format!(
                    "Basic {}",
                    STANDARD.encode(format!("{user}:{pass}"))
                ))
            }
            None => Self::None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_seen_a_second_past_its_end_is_the_freezes_an_answer_never() {
        let end = Instant::now();
        let on_time = PushError::NoTimeLeft.seen_at(end + Duration::from_millis(999), end);
        assert_eq!(on_time.reason(), PushFailure::Transport);
        let early = PushError::NoTimeLeft.seen_at(end, end + Duration::from_secs(5));
        assert_eq!(early.reason(), PushFailure::Transport);
        let answered = PushError::Status {
            status: 503,
            body: String::new(),
        }
        .seen_at(end + Duration::from_millis(2500), end);
        assert_eq!(answered.reason(), PushFailure::Unavailable);
        let late = PushError::Transport(ureq::Error::Timeout(ureq::Timeout::Global))
            .seen_at(end + Duration::from_millis(2500), end);
        assert_eq!(late.reason(), PushFailure::Frozen);
        let text = late.to_string();
        assert!(
            text.contains("frozen while the push was in flight"),
            "{text}"
        );
        assert!(
            text.contains("timeout") && text.contains("2500 ms"),
            "{text}"
        );
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
}
