//! PUTs the `openwhisk_*` families to this replica's own Pushgateway group.
//!
//! The state is cumulative, so a failed push loses nothing: it is counted, logged and simply
//! retried on the next interval. Offsets are committed only for snapshots that were pushed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Error, Result};
use crate::shared::{Offsets, Shared};

/// Why one push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// No answer (connection refused, timeout, TLS).
    #[error("PUT {url} failed: {source}")]
    Transport {
        /// Group URL.
        url: String,
        /// reqwest's error.
        source: reqwest::Error,
    },
    /// The Pushgateway answered with something other than 200/202.
    #[error("PUT {url} answered {status}: {body}")]
    Status {
        /// Group URL.
        url: String,
        /// HTTP status.
        status: reqwest::StatusCode,
        /// Start of the answer's body.
        body: String,
    },
}

/// Encodes a grouping-key value for a `name@base64/<value>` path segment (`=` when empty).
pub(crate) fn base64_segment(value: &str) -> String {
    if value.is_empty() {
        "=".to_string()
    } else {
        URL_SAFE_NO_PAD.encode(value)
    }
}

/// Path of a group: `/metrics/job/<job>` (or `job@base64` when needed) then
/// `/<label>@base64/<value>` for every other label.
pub fn group_path(job: &str, labels: &[(&str, &str)]) -> String {
    let plain = !job.is_empty()
        && job
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    let mut path = if plain {
        format!("/metrics/job/{job}")
    } else {
        format!("/metrics/job@base64/{}", base64_segment(job))
    };
    for (name, value) in labels {
        path.push('/');
        path.push_str(name);
        path.push_str("@base64/");
        path.push_str(&base64_segment(value));
    }
    path
}

/// HTTP access to one Pushgateway (shared by the push loop and the janitor).
#[derive(Debug, Clone)]
pub struct PushgatewayClient {
    client: reqwest::Client,
    base: String,
    auth: Option<(String, Option<String>)>,
}

impl PushgatewayClient {
    /// A client for `base` with optional basic auth; each request times out after `timeout`.
    pub fn new(
        base: &reqwest::Url,
        username: Option<String>,
        password: Option<String>,
        timeout: Duration,
    ) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(Error::HttpClient)?;
        let auth = username.map(|u| (u, password));
        Ok(Self {
            client,
            base: base.as_str().trim_end_matches('/').to_string(),
            auth,
        })
    }

    /// Base URL without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` with auth applied.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match &self.auth {
            Some((u, p)) => req.basic_auth(u, p.as_deref()),
            None => req,
        }
    }
}

/// Pushes this replica's group.
#[derive(Debug, Clone)]
pub struct Pusher {
    client: PushgatewayClient,
    path: String,
}

impl Pusher {
    /// Pushes to group `{job, instance}`.
    pub fn new(client: PushgatewayClient, job: &str, instance: &str) -> Self {
        Self {
            client,
            path: group_path(job, &[("instance", instance)]),
        }
    }

    /// The group URL.
    pub fn url(&self) -> String {
        format!("{}{}", self.client.base(), self.path)
    }

    /// PUTs `body` (text format 0.0.4), replacing the group.
    pub async fn push(&self, body: String) -> Result<(), PushError> {
        let resp = self
            .client
            .request(reqwest::Method::PUT, &self.path)
            .header(reqwest::header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(body)
            .send()
            .await
            .map_err(|source| PushError::Transport {
                url: self.url(),
                source,
            })?;
        let status = resp.status();
        if status == reqwest::StatusCode::OK || status == reqwest::StatusCode::ACCEPTED {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        let body: String = body.chars().take(500).collect();
        Err(PushError::Status {
            url: self.url(),
            status,
            body,
        })
    }

    /// DELETEs this replica's group.
    pub async fn delete(&self) -> Result<(), PushError> {
        let resp = self
            .client
            .request(reqwest::Method::DELETE, &self.path)
            .send()
            .await
            .map_err(|source| PushError::Transport {
                url: self.url(),
                source,
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        Err(PushError::Status {
            url: self.url(),
            status,
            body: resp
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(500)
                .collect(),
        })
    }

    /// Renders a snapshot, pushes it and counts the result. Returns the offsets the pushed
    /// snapshot covers when the push succeeded.
    pub async fn push_snapshot(&self, shared: &Arc<Shared>) -> Option<Offsets> {
        let s = Arc::clone(shared);
        let (body, offsets) = match tokio::task::spawn_blocking(move || s.platform_snapshot()).await
        {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::error!("rendering for the push failed: {e}");
                return None;
            }
        };
        let start = Instant::now();
        let result = self.push(body).await;
        shared.telemetry.push_done(result.is_ok(), start.elapsed());
        match result {
            Ok(()) => {
                tracing::debug!(url = %self.url(), "pushed");
                Some(offsets)
            }
            Err(e) => {
                tracing::warn!("push failed, retrying next interval: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_grouping_key_values_url_safe_and_empty_as_equals() {
        assert_eq!(base64_segment(""), "=");
        assert_eq!(base64_segment("/var/tmp"), "L3Zhci90bXA");
        assert_eq!(
            group_path("openwhisk_platform", &[("instance", "host-1")]),
            "/metrics/job/openwhisk_platform/instance@base64/aG9zdC0x"
        );
        assert_eq!(group_path("a/b", &[]), "/metrics/job@base64/YS9i");
    }
}
