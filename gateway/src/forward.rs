//! Forwarding to the Pushgateways: keep-alive connection pools, the group path always written
//! in the `@base64` form, the Pushgateway's answer passed back; and the family-table snapshots
//! read from each shard's `/api/v1/metrics`.
//!
//! Pushes to a plain-`http` shard go through [`crate::upstream`] (lean, in the request's own
//! task); `https` shards, and the snapshots, use the general-purpose `reqwest` client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use whisk_grouping::listing::{ListingLimits, read_listing};

use crate::families::StoredSides;
use crate::shard::Shards;
use crate::telemetry::Telemetry;
use crate::upstream::{MAX_ANSWER_BYTES, Reply, Upstream};

/// Largest `/api/v1/metrics` answer read for a snapshot (10 000 SDK groups are ~60 MB).
const MAX_SNAPSHOT_BYTES: u64 = 512 * 1024 * 1024;

/// What a Pushgateway answered.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// Its status.
    pub status: u16,
    /// Its body (at most 64 KiB).
    pub body: Vec<u8>,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
#[error("Pushgateway {url}: {message}")]
pub(crate) struct ForwardError {
    /// The shard's URL.
    pub url: String,
    /// What went wrong.
    pub message: String,
}

/// The shards and the client.
#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    client: reqwest::Client,
    /// Shard i's lean client, when it is plain `http`.
    upstreams: Arc<Vec<Option<Upstream>>>,
    timeout: Duration,
    urls: Vec<String>,
    shards: Shards,
    snapshot_timeout: Duration,
    telemetry: Telemetry,
}

impl Forwarder {
    /// A forwarder to `urls` (shard i is `urls[i]`).
    pub(crate) fn new(
        urls: &[reqwest::Url],
        timeout: Duration,
        snapshot_timeout: Duration,
        telemetry: Telemetry,
    ) -> Result<Self, reqwest::Error> {
        let client = whisk_remote_write::http_client()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()?;
        let upstreams = Arc::new(urls.iter().map(Upstream::new).collect());
        let urls: Vec<String> = urls
            .iter()
            .map(|u| u.as_str().trim_end_matches('/').to_string())
            .collect();
        Ok(Self {
            client,
            upstreams,
            timeout,
            shards: Shards::new(&urls),
            urls,
            snapshot_timeout,
            telemetry,
        })
    }

    /// The shards' base URLs.
    pub(crate) fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The shard that owns `instance`.
    pub(crate) fn shard_of(&self, instance: &str) -> usize {
        self.shards.pick(instance)
    }

    /// PUTs `body` (text format) to `path` on shard `shard`.
    pub(crate) async fn put(
        &self,
        shard: usize,
        path: &str,
        body: axum::body::Bytes,
    ) -> Result<Answer, ForwardError> {
        let started = Instant::now();
        if let Some(up) = self.upstream(shard) {
            let result = self.timed(up.request("PUT", path, &body)).await;
            return self.finish(shard, started.elapsed(), result);
        }
        let req = self
            .client
            .put(self.url(shard, path))
            .header(
                reqwest::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .body(body);
        self.send(shard, req).await
    }

    /// DELETEs the group at `path` on shard `shard`.
    pub(crate) async fn delete(&self, shard: usize, path: &str) -> Result<Answer, ForwardError> {
        if let Some(up) = self.upstream(shard) {
            let started = Instant::now();
            let result = self.timed(up.request("DELETE", path, b"")).await;
            return self.finish(shard, started.elapsed(), result);
        }
        let req = self.client.delete(self.url(shard, path));
        self.send(shard, req).await
    }

    fn upstream(&self, shard: usize) -> Option<&Upstream> {
        self.upstreams.get(shard).and_then(Option::as_ref)
    }

    /// `exchange` within the forward timeout.
    async fn timed(
        &self,
        exchange: impl std::future::Future<Output = std::io::Result<Reply>>,
    ) -> Result<Reply, String> {
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_string()),
        }
    }

    fn finish(
        &self,
        shard: usize,
        took: Duration,
        result: Result<Reply, String>,
    ) -> Result<Answer, ForwardError> {
        match result {
            Ok(reply) => {
                self.telemetry
                    .forward(shard, Some(reply.status), took.as_secs_f64());
                Ok(Answer {
                    status: reply.status,
                    body: reply.body,
                })
            }
            Err(message) => {
                self.telemetry.forward(shard, None, took.as_secs_f64());
                Err(ForwardError {
                    url: self.urls[shard].clone(),
                    message,
                })
            }
        }
    }

    fn url(&self, shard: usize, path: &str) -> String {
        format!("{}{path}", self.urls[shard])
    }

    async fn send(
        &self,
        shard: usize,
        req: reqwest::RequestBuilder,
    ) -> Result<Answer, ForwardError> {
        let started = Instant::now();
        let result = async {
            let mut resp = req.send().await?;
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok::<_, reqwest::Error>(Answer { status, body })
        }
        .await;
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(answer) => {
                self.telemetry.forward(shard, Some(answer.status), seconds);
                Ok(answer)
            }
            Err(e) => {
                self.telemetry.forward(shard, None, seconds);
                Err(ForwardError {
                    url: self.urls[shard].clone(),
                    message: if e.is_timeout() {
                        "timed out".to_string()
                    } else {
                        e.to_string()
                    },
                })
            }
        }
    }

    /// Adds shard `shard`'s `/api/v1/metrics` to `into` (every stored family's sides) with the
    /// shared streamed reader: parsed on a blocking thread while it arrives, never held whole.
    /// On an error `into` is left empty (the caller discards it).
    pub(crate) async fn snapshot(
        &self,
        shard: usize,
        into: &mut StoredSides,
    ) -> Result<(), ForwardError> {
        let url = self.url(shard, "/api/v1/metrics");
        let err = |message: String| ForwardError {
            url: self.urls[shard].clone(),
            message,
        };
        let resp = self
            .client
            .get(&url)
            .timeout(self.snapshot_timeout)
            .send()
            .await
            .map_err(|e| err(format!("GET /api/v1/metrics: {e}")))?;
        if !resp.status().is_success() {
            return Err(err(format!(
                "GET /api/v1/metrics answered {}",
                resp.status()
            )));
        }
        let limits = ListingLimits {
            max_bytes: MAX_SNAPSHOT_BYTES,
            base_timeout: self.snapshot_timeout,
            // The request's own timeout bounds the whole read; no growth with the bytes.
            bytes_per_second: u64::MAX,
        };
        let sides = std::mem::take(into);
        let (sides, _) = read_listing(resp, limits, true, sides, StoredSides::add_group)
            .await
            .map_err(|e| err(format!("/api/v1/metrics: {e}")))?;
        *into = sides;
        Ok(())
    }
}
