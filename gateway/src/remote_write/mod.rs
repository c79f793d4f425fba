//! The remote-write backend (`--remote-write-url`): a validated push becomes remote-write
//! samples in any Prometheus remote-write receiver, instead of a PUT to a Pushgateway.
//!
//! Per push, in its group's lane (one write of a group at a time, in arrival order):
//! 1. translate the body ([`whisk_remote_write::translate()`]) into the series a Prometheus scraping the Pushgateway would store,
//!    add the grouping key (`job`, `instance`, `namespace`, `action`, overriding pushed
//!    labels) and `push_time_seconds`;
//! 2. stamp every sample with the gateway's clock, strictly later than the group's last write
//!    ([`groups::Lane::next_ms`]), and a stale marker for each series the group's last write
//!    had and this one has not (a scrape of the Pushgateway would end them so);
//! 3. send it ([`whisk_remote_write::Client`]: 5xx and 429 retried within
//!    `--remote-write-retry-bound`); the push is answered only then: 200 when acknowledged,
//!    503 when not within the bound or when a newer push of the group superseded it before an
//!    attempt (it is never sent after that one), 400 with the receiver's first line for
//!    another 4xx.
//!
//! A DELETE writes stale markers for every series of the group's last acknowledged write, so
//! the container leaves instant queries at once; a group not remembered ([`groups`]) is
//! answered 202 and counted.

pub(crate) mod groups;
mod metrics;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderName, HeaderValue};
use whisk_grouping::GroupingKey;
use whisk_remote_write::{
    Client, ClientConfig, ClientError, Label, STALE_NAN, TimeSeries, WriteRequest,
};

use crate::forward::Answer;
use groups::Groups;
pub(crate) use metrics::RemoteWriteMetrics;

/// OpenWhisk removes a container idle this long; its group is forgotten after it.
pub(crate) const IDLE_EXPIRY: Duration = Duration::from_secs(600);

/// How often idle groups are swept.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// How the backend is set up (from the gateway's flags).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The receiver's write URL.
    pub url: reqwest::Url,
    /// Static headers (`--remote-write-header`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `--remote-write-tenant-header`: carries the push's namespace.
    pub tenant_header: Option<HeaderName>,
    /// `--remote-write-retry-bound`.
    pub retry_bound: Duration,
    /// `--remote-write-max-groups`.
    pub max_groups: usize,
    /// `--remote-write-memory-bytes`.
    pub memory_bytes: usize,
}

/// The backend.
#[derive(Debug)]
pub(crate) struct RemoteWrite {
    client: Client,
    tenant_header: Option<HeaderName>,
    groups: Groups,
    metrics: RemoteWriteMetrics,
}

impl RemoteWrite {
    /// The backend for `settings`, its metrics registered in `registry`.
    pub(crate) fn new(
        settings: Settings,
        registry: &prometheus::Registry,
    ) -> Result<Self, reqwest::Error> {
        let client = Client::new(ClientConfig {
            url: settings.url,
            headers: settings.headers,
            total_bound: settings.retry_bound,
            user_agent: format!("whisk-gateway/{}", env!("CARGO_PKG_VERSION")),
        })?;
        Ok(Self {
            client,
            tenant_header: settings.tenant_header,
            groups: Groups::new(settings.max_groups, settings.memory_bytes, IDLE_EXPIRY),
            metrics: RemoteWriteMetrics::new(registry),
        })
    }

    /// Writes a validated push of group `key` (`canonical`: its path).
    pub(crate) async fn put(&self, key: &GroupingKey, canonical: &str, body: &[u8]) -> Answer {
        let translated = match whisk_remote_write::translate(body) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("{e}");
                return answer(500, format!("{e}"));
            }
        };
        let (group, forgotten) = self.groups.get_or_insert(canonical);
        self.metrics.evicted(forgotten.evicted);
        let mine = group.latest.fetch_add(1, Ordering::SeqCst) + 1;
        let mut lane = group.lane.lock().await;
        let ts = lane.next_ms(now_ms());
        let grouping = grouping_labels(key);
        let shape = self.groups.intern(translated.series);
        let mut timeseries = Vec::with_capacity(shape.series.len() + 1);
        for (labels, value) in shape.series.iter().zip(&translated.values) {
            timeseries.push(series(labels, &grouping, *value, ts));
        }
        if let Some(last) = lane.written.as_ref().filter(|w| !Arc::ptr_eq(w, &shape)) {
            let now: std::collections::HashSet<&Vec<Label>> = shape.series.iter().collect();
            for gone in last.series.iter().filter(|s| !now.contains(s)) {
                timeseries.push(series(gone, &grouping, STALE_NAN, ts));
            }
        }
        timeseries.push(push_time(&grouping, ts));
        let still_latest = || group.latest.load(Ordering::SeqCst) == mine;
        let result = self.write(key, timeseries, still_latest).await;
        if result.is_ok() {
            lane.written = Some(shape);
        }
        self.publish_usage();
        outcome(result, 200, "")
    }

    /// Ends group `key`'s series with stale markers (202), or counts a DELETE of a group this
    /// replica does not remember (202).
    pub(crate) async fn delete(&self, key: &GroupingKey, canonical: &str) -> Answer {
        let Some(group) = self.groups.get(canonical) else {
            self.metrics.unknown_deletes.inc();
            return answer(202, String::new());
        };
        let mine = group.latest.fetch_add(1, Ordering::SeqCst) + 1;
        let mut lane = group.lane.lock().await;
        let Some(last) = lane.written.clone() else {
            self.metrics.unknown_deletes.inc();
            return answer(202, String::new());
        };
        let ts = lane.next_ms(now_ms());
        let grouping = grouping_labels(key);
        let mut timeseries: Vec<TimeSeries> = last
            .series
            .iter()
            .map(|s| series(s, &grouping, STALE_NAN, ts))
            .collect();
        timeseries.push(series(&[push_time_name()], &grouping, STALE_NAN, ts));
        let still_latest = || group.latest.load(Ordering::SeqCst) == mine;
        let result = self.write(key, timeseries, still_latest).await;
        if result.is_ok() {
            lane.written = None;
        }
        outcome(result, 202, "")
    }

    async fn write(
        &self,
        key: &GroupingKey,
        timeseries: Vec<TimeSeries>,
        still_latest: impl Fn() -> bool,
    ) -> Result<(), ClientError> {
        let body = whisk_remote_write::encode(&WriteRequest { timeseries });
        let mut extra = Vec::new();
        if let Some(name) = &self.tenant_header {
            let namespace = key.get("namespace").unwrap_or_default();
            // A namespace is validated ASCII by OpenWhisk; a value that is no header stays out.
            if let Ok(v) = HeaderValue::from_str(namespace) {
                extra.push((name.clone(), v));
            }
        }
        let started = Instant::now();
        let result = self.client.send(body, &extra, still_latest).await;
        self.metrics.record(&result, started.elapsed());
        match &result {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(group = %key.path(), "remote write: {e}");
                Err(e.clone())
            }
        }
    }

    /// Forgets idle groups (run every [`SWEEP_INTERVAL`]).
    pub(crate) fn sweep(&self) {
        let expired = self.groups.sweep();
        if expired > 0 {
            tracing::debug!(expired, "forgot idle remote-write groups");
        }
        self.publish_usage();
    }

    fn publish_usage(&self) {
        let (count, bytes) = self.groups.usage();
        self.metrics
            .groups
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        self.metrics
            .memory_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

/// The group's labels, in the SDK's order: `job` then the key's own.
fn grouping_labels(key: &GroupingKey) -> Vec<Label> {
    let mut labels = vec![Label::new("job", key.job())];
    labels.extend(
        key.labels()
            .iter()
            .map(|(n, v)| Label::new(n.as_str(), v.as_str())),
    );
    labels
}

fn push_time_name() -> Label {
    Label::new("__name__", "push_time_seconds")
}

/// `push_time_seconds` of the group: the write's time in seconds, as the Pushgateway writes it.
fn push_time(grouping: &[Label], ts: i64) -> TimeSeries {
    #[allow(clippy::cast_precision_loss)]
    let seconds = ts as f64 / 1000.0;
    series(&[push_time_name()], grouping, seconds, ts)
}

/// One series: the pushed labels under the grouping key.
fn series(labels: &[Label], grouping: &[Label], value: f64, ts: i64) -> TimeSeries {
    whisk_remote_write::grouped_series(grouping, labels, value, ts)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn answer(status: u16, text: String) -> Answer {
    Answer {
        status,
        body: text.into_bytes(),
    }
}

/// The SDK's answer for a write's result.
fn outcome(result: Result<(), ClientError>, ok: u16, text: &str) -> Answer {
    match result {
        Ok(()) => answer(ok, text.to_string()),
        Err(ClientError::Refused { status, message }) => answer(
            400,
            format!("the time-series database refused this push ({status}): {message}\n"),
        ),
        Err(e) => answer(503, format!("{e}\n")),
    }
}
