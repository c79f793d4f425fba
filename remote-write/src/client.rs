//! Sending one write: POST, retries within a total bound, the answer read to a bounded size.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};

use crate::HEADERS;

/// Most bytes of a receiver's answer that are read (its first line is what a refusal reports).
pub const MAX_ANSWER_BYTES: usize = 4096;

/// First pause before a retry; it doubles per attempt up to [`MAX_BACKOFF`], each drawn
/// uniformly from its upper half (jitter, so replicas that failed together do not retry together).
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// How a [`Client`] sends.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The receiver's write endpoint, e.g. `http://prometheus:9090/api/v1/write`.
    pub url: reqwest::Url,
    /// Headers sent with every write (`Authorization`, a static tenant id), after the spec's.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Everything — every attempt, every pause — ends within this after [`Client::send`] starts.
    pub total_bound: Duration,
    /// `User-Agent`, e.g. `whisk-gateway/0.1.0`.
    pub user_agent: String,
}

/// Why a write was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A 4xx other than 429: the receiver will refuse this body again, so it is not retried.
    #[error("the receiver refused the write with {status}: {message}")]
    Refused {
        /// Its status.
        status: u16,
        /// The first line of its answer (at most 200 characters).
        message: String,
    },
    /// No 2xx within the total bound (5xx, 429, timeouts, connection errors).
    #[error(
        "the receiver did not acknowledge within {bound_ms} ms ({attempts} attempts; last: {last})"
    )]
    Unavailable {
        /// The bound, in milliseconds.
        bound_ms: u128,
        /// Attempts made.
        attempts: u32,
        /// What the last attempt got.
        last: String,
    },
    /// The caller withdrew the write before an attempt (a newer write replaces it).
    #[error("superseded by a newer write before the receiver acknowledged it")]
    Superseded,
}

impl ClientError {
    /// A short label for metrics: `refused`, `unavailable` or `superseded`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Refused { .. } => "refused",
            Self::Unavailable { .. } => "unavailable",
            Self::Superseded => "superseded",
        }
    }
}

/// What an acknowledged write took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Attempts made (1: no retry).
    pub attempts: u32,
}

/// A remote-write sender (cheap to clone: one connection pool).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    total_bound: Duration,
}

/// What one attempt got (see [`Client::attempt`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// A 2xx.
    Acknowledged,
    /// A 4xx but 429: the receiver will refuse this body again.
    Refused {
        /// Its status.
        status: u16,
        /// The first line of its answer (at most 200 characters).
        message: String,
    },
    /// A 5xx, a 429, a timeout or a connection error: worth another attempt.
    Retry {
        /// What it got, for the error report.
        last: String,
        /// The receiver's `Retry-After` (seconds), if it sent one.
        after: Option<Duration>,
    },
}

/// The pauses between attempts: from `FIRST_BACKOFF`, doubling up to `MAX_BACKOFF`, each
/// drawn from the upper half of its step (jitter); a receiver's `Retry-After` wins.
#[derive(Debug, Clone)]
pub struct Backoff {
    step: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            step: FIRST_BACKOFF,
        }
    }
}

impl Backoff {
    /// The pause before the next attempt (`retry_after`: the receiver's `Retry-After`).
    pub fn next_pause(&mut self, retry_after: Option<Duration>) -> Duration {
        let pause = retry_after.unwrap_or_else(|| jittered(self.step));
        self.step = (self.step * 2).min(MAX_BACKOFF);
        pause
    }
}

impl Client {
    /// A client for `config`.
    pub fn new(config: ClientConfig) -> Result<Self, reqwest::Error> {
        let mut headers = HeaderMap::new();
        for (name, value) in HEADERS {
            headers.insert(name, HeaderValue::from_static(value));
        }
        if let Ok(agent) = HeaderValue::from_str(&config.user_agent) {
            headers.insert(USER_AGENT, agent);
        }
        for (name, value) in config.headers {
            headers.append(name, value);
        }
        let http = crate::http_client()
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            url: config.url,
            headers,
            total_bound: config.total_bound,
        })
    }

    /// The endpoint written to.
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// The total bound of a [`Client::send`].
    pub fn total_bound(&self) -> Duration {
        self.total_bound
    }

    /// POSTs `body` (an [`crate::encode`]d request) with `extra` headers (a tenant id) until the
    /// receiver acknowledges it, it refuses it (4xx but 429: not retried), the total bound
    /// passes, or `still_wanted` — asked before every attempt — says no.
    pub async fn send(
        &self,
        body: Vec<u8>,
        extra: &[(HeaderName, HeaderValue)],
        still_wanted: impl Fn() -> bool,
    ) -> Result<Outcome, ClientError> {
        let deadline = Instant::now() + self.total_bound;
        self.send_until(body, extra, deadline, still_wanted).await
    }

    /// [`Client::send`], ending by `deadline` instead of the total bound from now.
    async fn send_until(
        &self,
        body: Vec<u8>,
        extra: &[(HeaderName, HeaderValue)],
        deadline: Instant,
        still_wanted: impl Fn() -> bool,
    ) -> Result<Outcome, ClientError> {
        let body = bytes::Bytes::from(body);
        let mut backoff = Backoff::default();
        let mut attempts = 0u32;
        loop {
            if !still_wanted() {
                return Err(ClientError::Superseded);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let unavailable = |attempts, last: String| ClientError::Unavailable {
                bound_ms: self.total_bound.as_millis(),
                attempts,
                last,
            };
            if left.is_zero() {
                return Err(unavailable(attempts, "no time left for an attempt".into()));
            }
            attempts += 1;
            let (last, after) = match self.attempt(body.clone(), extra, left).await {
                Attempt::Acknowledged => return Ok(Outcome { attempts }),
                Attempt::Refused { status, message } => {
                    return Err(ClientError::Refused { status, message });
                }
                Attempt::Retry { last, after } => (last, after),
            };
            let pause = backoff.next_pause(after);
            if Instant::now() + pause >= deadline {
                return Err(unavailable(attempts, last));
            }
            tracing::debug!(
                attempts,
                ?pause,
                "remote write not acknowledged ({last}); retrying"
            );
            tokio::time::sleep(pause).await;
        }
    }

    /// One POST of `body` (an [`crate::encode`]d request) with `extra` headers, given up after
    /// `timeout` (its connection is then closed); what it got.
    pub async fn attempt(
        &self,
        body: impl Into<bytes::Bytes>,
        extra: &[(HeaderName, HeaderValue)],
        timeout: Duration,
    ) -> Attempt {
        let mut request = self
            .http
            .post(self.url.clone())
            .headers(self.headers.clone())
            .timeout(timeout)
            .body(body.into());
        for (name, value) in extra {
            request = request.header(name, value);
        }
        let mut answer = match request.send().await {
            Ok(a) => a,
            Err(e) if e.is_timeout() => return retry("timed out".into(), None),
            Err(e) => return retry(format!("no answer: {e}"), None),
        };
        let status = answer.status();
        let after = answer
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut text = Vec::new();
        while text.len() < MAX_ANSWER_BYTES {
            match answer.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_ANSWER_BYTES - text.len();
                    text.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let first_line = first_line(&text);
        if status.is_success() {
            Attempt::Acknowledged
        } else if status.as_u16() == 429 || status.is_server_error() {
            retry(format!("{status}: {first_line}"), after)
        } else {
            Attempt::Refused {
                status: status.as_u16(),
                message: first_line,
            }
        }
    }
}

fn retry(last: String, after: Option<Duration>) -> Attempt {
    Attempt::Retry { last, after }
}

/// A pause drawn uniformly from `[d/2, d]`.
fn jittered(d: Duration) -> Duration {
    let half = d / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(fastrand::u64(0..=nanos))
}

/// The first line of an answer, lossily decoded, at most 200 characters.
fn first_line(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    line.trim().chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_the_upper_half() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(40));
            assert!(d >= Duration::from_millis(20) && d <= Duration::from_millis(40));
        }
    }

    #[test]
    fn the_first_non_empty_line_is_reported() {
        assert_eq!(
            first_line(b"\nout of order sample\nmore"),
            "out of order sample"
        );
        assert_eq!(first_line(&[b'x'; 300]).len(), 200);
    }
}
