//! Authentication of a push with the activation's own OpenWhisk API key.
//!
//! The SDK sends HTTP basic auth `uuid:key` (`__OW_API_KEY`). The gateway asks the controller
//! which namespaces that key may act in — `GET <api-host>/api/v1/namespaces` with the same
//! header, OpenWhisk's own API, which answers a JSON array of namespace names — and accepts the
//! push only if the grouping key's `namespace` is one of them.
//!
//! Answers are cached under the SHA-256 of the header (the key itself is never kept):
//! namespaces for `--auth-cache-ttl`, a refusal (401/403 from the controller) for 10 s. The
//! cache holds at most `--auth-cache-size` keys. An unreachable controller, a timeout or a 5xx
//! is not cached and makes the push fail with 503 (the SDK keeps its state and pushes again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use crate::config::NEGATIVE_AUTH_TTL;
use crate::telemetry::Telemetry;

/// Largest controller answer read (bytes).
const MAX_CONTROLLER_BODY: usize = 256 * 1024;
/// Most namespaces kept for one key.
const MAX_NAMESPACES: usize = 1000;
/// Longest `Authorization` header considered.
const MAX_HEADER: usize = 1024;

/// The outcome for one push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The key may act in the namespace.
    Allowed,
    /// The key is valid but not for this namespace (403).
    Forbidden,
    /// No usable credentials, or the controller refused the key (401). One-line reason.
    Unauthorized(&'static str),
    /// The controller could not answer (503). One-line reason.
    Unavailable(String),
}

#[derive(Debug, Clone)]
enum Cached {
    Namespaces(Arc<[String]>),
    Refused,
}

#[derive(Debug)]
struct Entry {
    value: Cached,
    expires: Instant,
}

/// Checks keys against the controller, with the cache.
#[derive(Debug)]
pub(crate) struct Authenticator {
    client: reqwest::Client,
    namespaces_url: String,
    cache: Mutex<HashMap<[u8; 32], Entry>>,
    ttl: Duration,
    max_entries: usize,
    telemetry: Telemetry,
}

impl Authenticator {
    /// An authenticator asking `api_host`'s controller.
    pub(crate) fn new(
        api_host: &reqwest::Url,
        timeout: Duration,
        ttl: Duration,
        max_entries: usize,
        telemetry: Telemetry,
    ) -> Result<Self, reqwest::Error> {
        let client = whisk_remote_write::http_client()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            client,
            namespaces_url: format!(
                "{}/api/v1/namespaces",
                api_host.as_str().trim_end_matches('/')
            ),
            cache: Mutex::new(HashMap::new()),
            ttl,
            max_entries,
            telemetry,
        })
    }

    /// May the holder of `authorization` push to `namespace`?
    pub(crate) async fn check(&self, authorization: Option<&[u8]>, namespace: &str) -> Decision {
        let Some(header) = authorization.filter(|h| is_basic_api_key(h)) else {
            return Decision::Unauthorized(
                "HTTP basic auth with the activation's OpenWhisk API key (uuid:key) is required",
            );
        };
        let hash: [u8; 32] = Sha256::digest(header).into();
        let cached = self.cached(&hash);
        let value = match cached {
            Some(v) => {
                self.telemetry.auth_cache_hits.inc();
                v
            }
            None => {
                self.telemetry.auth_cache_misses.inc();
                match self.ask_controller(header).await {
                    Ok(v) => {
                        self.store(hash, v.clone());
                        v
                    }
                    Err(reason) => return Decision::Unavailable(reason),
                }
            }
        };
        match value {
            Cached::Refused => Decision::Unauthorized("the controller refused this API key"),
            Cached::Namespaces(list) if list.iter().any(|n| n == namespace) => Decision::Allowed,
            Cached::Namespaces(_) => Decision::Forbidden,
        }
    }

    fn cached(&self, hash: &[u8; 32]) -> Option<Cached> {
        let cache = self.lock();
        cache
            .get(hash)
            .filter(|e| e.expires > Instant::now())
            .map(|e| e.value.clone())
    }

    fn store(&self, hash: [u8; 32], value: Cached) {
        let now = Instant::now();
        let ttl = match value {
            Cached::Namespaces(_) => self.ttl,
            Cached::Refused => NEGATIVE_AUTH_TTL,
        };
        let mut cache = self.lock();
        if cache.len() >= self.max_entries && !cache.contains_key(&hash) {
            cache.retain(|_, e| e.expires > now);
            // Still full: drop arbitrary entries (a quarter, so this scan stays rare).
            if cache.len() >= self.max_entries {
                let drop: Vec<[u8; 32]> = cache
                    .keys()
                    .take((self.max_entries / 4).max(1))
                    .copied()
                    .collect();
                for k in drop {
                    cache.remove(&k);
                }
            }
        }
        cache.insert(
            hash,
            Entry {
                value,
                expires: now + ttl,
            },
        );
        self.telemetry
            .auth_cache_entries
            .set(i64::try_from(cache.len()).unwrap_or(i64::MAX));
    }

    async fn ask_controller(&self, header: &[u8]) -> Result<Cached, String> {
        let answer = self
            .client
            .get(&self.namespaces_url)
            .header(reqwest::header::AUTHORIZATION, header)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await;
        let mut resp = match answer {
            Ok(r) => r,
            Err(e) => {
                self.telemetry.controller("unavailable");
                tracing::warn!(url = %self.namespaces_url, "controller unreachable: {e}");
                return Err(format!(
                    "the OpenWhisk controller is unreachable ({})",
                    kind(&e)
                ));
            }
        };
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            self.telemetry.controller("refused");
            return Ok(Cached::Refused);
        }
        if !status.is_success() {
            self.telemetry.controller("unavailable");
            tracing::warn!(url = %self.namespaces_url, %status, "controller answered an error");
            return Err(format!("the OpenWhisk controller answered {status}"));
        }
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_CONTROLLER_BODY {
                        self.telemetry.controller("unavailable");
                        return Err("the OpenWhisk controller's answer is too large".into());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    self.telemetry.controller("unavailable");
                    return Err(format!(
                        "reading the OpenWhisk controller's answer failed ({})",
                        kind(&e)
                    ));
                }
            }
        }
        match serde_json::from_slice::<Vec<String>>(&body) {
            Ok(mut names) => {
                self.telemetry.controller("ok");
                names.truncate(MAX_NAMESPACES);
                Ok(Cached::Namespaces(names.into()))
            }
            Err(e) => {
                self.telemetry.controller("unavailable");
                tracing::warn!(url = %self.namespaces_url, "controller answer is not a list of namespaces: {e}");
                Err("the OpenWhisk controller's answer is not a list of namespaces".into())
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `Basic <base64 of uuid:key>` with both parts non-empty (checked before asking anyone).
pub(crate) fn is_basic_api_key(header: &[u8]) -> bool {
    if header.len() > MAX_HEADER {
        return false;
    }
    let Ok(text) = std::str::from_utf8(header) else {
        return false;
    };
    let Some((scheme, token)) = text.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = STANDARD.decode(token.trim()) else {
        return false;
    };
    match decoded.iter().position(|b| *b == b':') {
        Some(i) => i > 0 && i + 1 < decoded.len(),
        None => false,
    }
}

/// A short, key-free description of a client error.
fn kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(user_pass)).into_bytes()
    }

    #[test]
    fn only_basic_auth_with_uuid_and_key_is_considered() {
        assert!(is_basic_api_key(&basic(
            "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:abc"
        )));
        assert!(is_basic_api_key(b"basic dTpr"));
        assert!(!is_basic_api_key(&basic("nocolon")));
        assert!(!is_basic_api_key(&basic(":key")));
        assert!(!is_basic_api_key(&basic("uuid:")));
        assert!(!is_basic_api_key(b"Bearer abc"));
        assert!(!is_basic_api_key(b"Basic !!!"));
        assert!(!is_basic_api_key(&vec![b'a'; 2000]));
    }

    #[tokio::test]
    async fn missing_or_malformed_credentials_are_unauthorized_without_asking() {
        let host = reqwest::Url::parse("http://127.0.0.1:9").unwrap();
        let t = Telemetry::new();
        let auth = Authenticator::new(
            &host,
            Duration::from_secs(1),
            Duration::from_secs(60),
            10,
            t.clone(),
        )
        .unwrap();
        assert!(matches!(
            auth.check(None, "guest").await,
            Decision::Unauthorized(_)
        ));
        assert!(matches!(
            auth.check(Some(b"Bearer x"), "guest").await,
            Decision::Unauthorized(_)
        ));
        assert_eq!(t.auth_cache_misses.get(), 0);
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_only_hashes() {
        let host = reqwest::Url::parse("http://127.0.0.1:9").unwrap();
        let auth = Authenticator::new(
            &host,
            Duration::from_secs(1),
            Duration::from_secs(60),
            8,
            Telemetry::new(),
        )
        .unwrap();
        for i in 0..100u8 {
            auth.store([i; 32], Cached::Refused);
            assert!(auth.lock().len() <= 8);
        }
        assert!(auth.cached(&[99; 32]).is_some());
    }
}
