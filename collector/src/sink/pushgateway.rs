//! HTTP access to one Pushgateway, and nothing else: PUT and DELETE of groups, its
//! `/api/v1/metrics` listing and the status of its own `/metrics`. Group paths come from
//! [`GroupingKey::path`] (every segment `@base64`). What to push, when, and what to count is the
//! caller's business (the push loop and the janitor).

use std::time::Duration;

use whisk_grouping::GroupingKey;

use crate::error::{Error, Result};

/// Longest prefix of an error answer kept for the log.
const ERROR_BODY_CHARS: usize = 500;

/// Why one request to the Pushgateway failed.
#[derive(Debug, thiserror::Error)]
pub enum PushgatewayError {
    /// No answer (connection refused, timeout, TLS).
    #[error("{method} {url} failed: {source}")]
    Transport {
        /// HTTP method.
        method: reqwest::Method,
        /// Request URL.
        url: String,
        /// reqwest's error.
        source: reqwest::Error,
    },
    /// A streamed request was given up because it stopped making progress.
    #[error("{method} {url} given up: {source}")]
    Overdue {
        /// HTTP method.
        method: reqwest::Method,
        /// Request URL.
        url: String,
        /// How it fell behind.
        source: crate::body::Overdue,
    },
    /// The Pushgateway answered with an unexpected status.
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        /// HTTP method.
        method: reqwest::Method,
        /// Request URL.
        url: String,
        /// HTTP status.
        status: reqwest::StatusCode,
        /// Start of the answer's body.
        body: String,
    },
}

/// A client of one Pushgateway (cheap to clone; clones share the connection pool).
#[derive(Debug, Clone)]
pub struct PushgatewayClient {
    client: reqwest::Client,
    base: String,
    auth: Option<(String, Option<String>)>,
    timeout: Duration,
}

impl PushgatewayClient {
    /// A client for `base` with optional basic auth; requests time out after `timeout` unless a
    /// method takes its own timeout.
    pub fn new(
        base: &reqwest::Url,
        username: Option<String>,
        password: Option<String>,
        timeout: Duration,
    ) -> Result<Self> {
        Self::with_ca(base, username, password, None, timeout)
    }

    /// [`PushgatewayClient::new`] trusting only the CA certificates of `ca_pem` (a PEM bundle)
    /// for https, when given.
    pub fn with_ca(
        base: &reqwest::Url,
        username: Option<String>,
        password: Option<String>,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self> {
        let mut builder =
            whisk_remote_write::http_client().connect_timeout(timeout.min(Duration::from_secs(5)));
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(Error::HttpClient)?;
            builder = builder.tls_certs_only(certs);
        }
        let client = builder.build().map_err(Error::HttpClient)?;
        Ok(Self {
            client,
            base: base.as_str().trim_end_matches('/').to_string(),
            auth: username.map(|u| (u, password)),
            timeout,
        })
    }

    /// Base URL without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The default per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The URL of a group.
    pub fn group_url(&self, key: &GroupingKey) -> String {
        format!("{}{}", self.base, key.path())
    }

    /// PUTs `body` (text format 0.0.4) to the group, replacing it; gives up after `timeout`.
    pub async fn put_group(
        &self,
        key: &GroupingKey,
        body: impl Into<reqwest::Body>,
        timeout: Duration,
    ) -> Result<(), PushgatewayError> {
        let req = self
            .request(reqwest::Method::PUT, &key.path())
            .header(reqwest::header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(body)
            .timeout(timeout);
        self.expect_success(reqwest::Method::PUT, &key.path(), req)
            .await
            .map(drop)
    }

    /// PUTs a streamed body (chunked transfer encoding) to the group, replacing it, with no
    /// timeout of its own: the caller bounds it on progress (see `push_loop`), since a large
    /// group takes as long as it takes to send.
    pub(crate) async fn put_group_stream(
        &self,
        key: &GroupingKey,
        body: reqwest::Body,
    ) -> Result<(), PushgatewayError> {
        let req = self
            .request(reqwest::Method::PUT, &key.path())
            .header(reqwest::header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(body);
        self.expect_success(reqwest::Method::PUT, &key.path(), req)
            .await
            .map(drop)
    }

    /// DELETEs the group.
    pub async fn delete_group(&self, key: &GroupingKey) -> Result<(), PushgatewayError> {
        let path = key.path();
        let req = self
            .request(reqwest::Method::DELETE, &path)
            .timeout(self.timeout);
        self.expect_success(reqwest::Method::DELETE, &path, req)
            .await
            .map(drop)
    }

    /// GETs `/api/v1/metrics` (every group with its metrics, JSON) and returns the answer
    /// unread, so the caller can stream it; the whole exchange gives up after `timeout`.
    pub async fn list_groups(
        &self,
        timeout: Duration,
    ) -> Result<reqwest::Response, PushgatewayError> {
        let req = self
            .request(reqwest::Method::GET, "/api/v1/metrics")
            .timeout(timeout);
        self.expect_success(reqwest::Method::GET, "/api/v1/metrics", req)
            .await
    }

    /// The status the Pushgateway's own `/metrics` answers (500 means a stored family is
    /// inconsistent and every scrape fails). The body is not read.
    pub async fn metrics_status(&self) -> Result<reqwest::StatusCode, PushgatewayError> {
        let resp = self
            .request(reqwest::Method::GET, "/metrics")
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|source| self.transport(reqwest::Method::GET, "/metrics", source))?;
        Ok(resp.status())
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match &self.auth {
            Some((u, p)) => req.basic_auth(u, p.as_deref()),
            None => req,
        }
    }

    fn transport(
        &self,
        method: reqwest::Method,
        path: &str,
        source: reqwest::Error,
    ) -> PushgatewayError {
        PushgatewayError::Transport {
            method,
            url: format!("{}{path}", self.base),
            source,
        }
    }

    async fn expect_success(
        &self,
        method: reqwest::Method,
        path: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, PushgatewayError> {
        let resp = req
            .send()
            .await
            .map_err(|source| self.transport(method.clone(), path, source))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(PushgatewayError::Status {
            method,
            url: format!("{}{path}", self.base),
            status,
            body: body.chars().take(ERROR_BODY_CHARS).collect(),
        })
    }
}
