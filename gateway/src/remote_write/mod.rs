//! The remote-write backend (`--remote-write-url`): a validated push becomes remote-write
//! samples in any Prometheus remote-write receiver, instead of a PUT to a Pushgateway.
//!
//! Per push, in its group's lane (one write of a group at a time, in arrival order):
//! 1. translate the body ([`whisk_remote_write::translate()`]) into the series a Prometheus
//!    scraping the Pushgateway would store — by its shape's remembered plan ([`plans`], found
//!    by the validation cache's verdict) after a shape's first push, without a parse —, add the grouping key (`job`, `instance`,
//!    `namespace`, `action`, overriding pushed labels) and `push_time_seconds`, encoded
//!    straight from the shared series ([`whisk_remote_write::GroupWrite`]);
//! 2. stamp every sample with the gateway's clock, strictly later than the group's last write
//!    ([`groups::Lane::next_ms`]), and a stale marker for each series the group's last write
//!    had and this one has not (a scrape of the Pushgateway would end them so);
//! 3. send it ([`whisk_remote_write::Client`]), in one request with other groups' writes
//!    ready at the same time ([`batch`]: 5xx and 429 retried); the push is answered within
//!    `--remote-write-retry-bound` from its arrival at the gateway: 200 when acknowledged, 503
//!    when not by then or when a newer push of the group superseded it before an attempt (it
//!    is never sent after that one), 400 with the receiver's first line for another 4xx. The
//!    group's lane stays held until the receiver answered, even after a 503.
//!
//! A DELETE writes stale markers for every series of the group's last acknowledged write, so
//! the container leaves instant queries at once; a group not remembered ([`groups`]) is
//! answered 202 and counted.

mod batch;
pub(crate) mod groups;
mod metrics;
pub(crate) mod plans;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderName, HeaderValue};
use tokio::sync::OwnedMutexGuard;
use whisk_grouping::GroupingKey;
use whisk_remote_write::{Client, ClientConfig, ClientError, GroupWrite, Label};

use batch::{Batcher, Finished, StillLatest};

use crate::forward::Answer;
use crate::validate::Validated;
use groups::Groups;
pub(crate) use metrics::RemoteWriteMetrics;
use plans::Plans;

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
    /// `--remote-write-memory-bytes`: three quarters for groups and shapes, a quarter for
    /// translation plans ([`plans`]).
    pub memory_bytes: usize,
}

/// The backend.
#[derive(Debug)]
pub(crate) struct RemoteWrite {
    batcher: Arc<Batcher>,
    tenant_header: Option<HeaderName>,
    groups: Groups,
    plans: Plans,
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
        let metrics = RemoteWriteMetrics::new(registry);
        Ok(Self {
            batcher: Batcher::new(
                client,
                settings.tenant_header.clone(),
                metrics.requests.clone(),
            ),
            tenant_header: settings.tenant_header,
            groups: Groups::new(
                settings.max_groups,
                settings.memory_bytes - settings.memory_bytes / 4,
                IDLE_EXPIRY,
            ),
            plans: Plans::new(settings.memory_bytes / 4),
            metrics,
        })
    }

    /// Writes a push of group `key` (`canonical`: its path) that validation judged `verdict`;
    /// answers within the retry bound from the push's arrival at the gateway (`arrived`).
    pub(crate) async fn put(
        &self,
        key: &GroupingKey,
        canonical: &str,
        body: &[u8],
        verdict: &Arc<Validated>,
        arrived: Instant,
    ) -> Answer {
        let deadline = arrived + self.batcher.bound();
        let translated = match self.plans.translate(body, verdict, &self.groups) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("{e}");
                return answer(500, format!("{e}"));
            }
        };
        let (group, forgotten) = self.groups.get_or_insert(canonical);
        self.metrics.evicted(forgotten.evicted);
        let mine = group.latest.fetch_add(1, Ordering::SeqCst) + 1;
        let mut lane = match self.lane(key, &group, deadline).await {
            Ok(lane) => lane,
            Err(e) => return outcome(Err(e), 200, ""),
        };
        let ts = lane.next_ms(now_ms());
        let grouping = grouping_labels(key);
        let shape = translated.shape;
        let mut write = GroupWrite::new(&grouping, ts);
        for (labels, value) in shape.series.iter().zip(&translated.values) {
            write.series(labels, *value);
        }
        if let Some(last) = lane.written.as_ref().filter(|w| !Arc::ptr_eq(w, &shape)) {
            let now: std::collections::HashSet<&Vec<Label>> = shape.series.iter().collect();
            for gone in last.series.iter().filter(|s| !now.contains(s)) {
                write.stale(gone);
            }
        }
        write.series(&[push_time_name()], push_time_value(ts));
        let raw = write.into_raw();
        let finished: Finished = Box::new(move |acknowledged| {
            if acknowledged {
                lane.written = Some(shape);
            }
        });
        let result = self
            .write(key, raw, deadline, still_latest(&group, mine), finished)
            .await;
        self.publish_usage();
        outcome(result, 200, "")
    }

    /// Ends group `key`'s series with stale markers (202), or counts a DELETE of a group this
    /// replica does not remember (202); within the retry bound from `arrived`.
    pub(crate) async fn delete(
        &self,
        key: &GroupingKey,
        canonical: &str,
        arrived: Instant,
    ) -> Answer {
        let deadline = arrived + self.batcher.bound();
        let Some(group) = self.groups.get(canonical) else {
            self.metrics.unknown_deletes.inc();
            return answer(202, String::new());
        };
        let mine = group.latest.fetch_add(1, Ordering::SeqCst) + 1;
        let mut lane = match self.lane(key, &group, deadline).await {
            Ok(lane) => lane,
            Err(e) => return outcome(Err(e), 202, ""),
        };
        let Some(last) = lane.written.clone() else {
            self.metrics.unknown_deletes.inc();
            return answer(202, String::new());
        };
        let ts = lane.next_ms(now_ms());
        let grouping = grouping_labels(key);
        let mut write = GroupWrite::new(&grouping, ts);
        for s in &last.series {
            write.stale(s);
        }
        write.stale(&[push_time_name()]);
        let raw = write.into_raw();
        let finished: Finished = Box::new(move |acknowledged| {
            if acknowledged {
                lane.written = None;
            }
        });
        let result = self
            .write(key, raw, deadline, still_latest(&group, mine), finished)
            .await;
        outcome(result, 202, "")
    }

    /// The group's lane, once its earlier write is answered by the receiver, or 503 if that
    /// does not happen by `deadline`.
    async fn lane(
        &self,
        key: &GroupingKey,
        group: &Arc<groups::Group>,
        deadline: Instant,
    ) -> Result<OwnedMutexGuard<groups::Lane>, ClientError> {
        let lane = Arc::clone(&group.lane).lock_owned();
        match tokio::time::timeout_at(deadline.into(), lane).await {
            Ok(lane) => Ok(lane),
            Err(_) => {
                let e = ClientError::Unavailable {
                    bound_ms: self.batcher.bound().as_millis(),
                    attempts: 0,
                    last: "the receiver has not yet answered this group's previous write".into(),
                };
                self.metrics.record(&Err(e.clone()), self.batcher.bound());
                tracing::warn!(group = %key.path(), "remote write: {e}");
                Err(e)
            }
        }
    }

    async fn write(
        &self,
        key: &GroupingKey,
        raw: Vec<u8>,
        deadline: Instant,
        still_latest: StillLatest,
        finished: Finished,
    ) -> Result<(), ClientError> {
        // A namespace is validated ASCII by OpenWhisk; a value that is no header stays out.
        let tenant = self
            .tenant_header
            .as_ref()
            .and_then(|_| HeaderValue::from_str(key.get("namespace").unwrap_or_default()).ok());
        let started = Instant::now();
        let result = self
            .batcher
            .write(raw, tenant, deadline, still_latest, finished)
            .await;
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
        let bytes = bytes + self.plans.bytes();
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

/// Whether write number `mine` is still the latest push of `group`.
fn still_latest(group: &Arc<groups::Group>, mine: u64) -> StillLatest {
    let group = Arc::clone(group);
    Box::new(move || group.latest.load(Ordering::SeqCst) == mine)
}

fn push_time_name() -> Label {
    Label::new("__name__", "push_time_seconds")
}

/// `push_time_seconds` of the group: the write's time in seconds, as the Pushgateway writes it.
fn push_time_value(ts: i64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let seconds = ts as f64 / 1000.0;
    seconds
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
