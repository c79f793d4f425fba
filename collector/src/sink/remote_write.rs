//! The platform snapshot as remote-write samples (`--remote-write-url`), instead of a PUT to
//! the Pushgateway: the same text the Pushgateway would get is rendered from the snapshot,
//! translated into the series a scrape of the Pushgateway would store
//! ([`whisk_remote_write::translate`]), labelled with this replica's group (`job`, `instance`)
//! plus `push_time_seconds`, and written in requests of at most [`SERIES_PER_WRITE`] series.
//!
//! Same at-least-once contract as the Pushgateway push: the snapshot's offsets are returned
//! (and so committed) only when the receiver acknowledged every request of it. Samples carry
//! this process's clock, strictly increasing from one snapshot to the next; series the previous
//! snapshot had and this one has not (evicted actions) get a stale marker, and so does every
//! series of the last snapshot on a graceful shutdown ([`RemoteWritePush::delete`]).
//!
//! The time histograms' exemplars (activation ids) ride on their `_bucket` series, each sent
//! once ([`exemplars`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use whisk_remote_write::{Client, Label, STALE_NAN, SeriesLabels, TimeSeries, WriteRequest};

use crate::render::{ACTIONS_PER_LOCK, CHUNK_BYTES, render_chunked};
use crate::shared::{Offsets, Shared};

mod exemplars;

/// Most series in one write request (a 10 000-action snapshot is several requests).
pub(crate) const SERIES_PER_WRITE: usize = 5_000;

/// Writes this replica's platform group to a remote-write receiver.
#[derive(Debug, Clone)]
pub(crate) struct RemoteWritePush {
    client: Client,
    grouping: Vec<Label>,
    state: Arc<Mutex<Written>>,
    /// The exemplars acknowledged writes carried.
    sent: Arc<Mutex<exemplars::Sent>>,
}

#[derive(Debug, Default)]
struct Written {
    last_ms: i64,
    series: Vec<SeriesLabels>,
}

impl RemoteWritePush {
    /// Writes group `{job, instance}` through `client`.
    pub(crate) fn new(client: Client, job: &str, instance: &str) -> Self {
        Self {
            client,
            grouping: vec![Label::new("job", job), Label::new("instance", instance)],
            state: Arc::default(),
            sent: Arc::default(),
        }
    }

    /// The receiver's URL.
    pub(crate) fn url(&self) -> String {
        self.client.url().to_string()
    }

    fn next_ms(&self) -> i64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.last_ms = now.max(state.last_ms + 1);
        state.last_ms
    }

    /// Writes a snapshot; returns the offsets it covers once every request was acknowledged.
    pub(crate) async fn push_snapshot(&self, shared: &Arc<Shared>) -> Option<Offsets> {
        let s = Arc::clone(shared);
        let sent = Arc::clone(&self.sent);
        let rendered = tokio::task::spawn_blocking(move || {
            let (snapshot, offsets) = s.platform_snapshot();
            let mut text = String::new();
            render_chunked(
                || &snapshot,
                |agg| *agg,
                |chunk| {
                    text.push_str(&chunk);
                    true
                },
                CHUNK_BYTES,
                ACTIONS_PER_LOCK,
            );
            let translated = whisk_remote_write::translate(text.as_bytes())?;
            drop(text);
            let picked = sent
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pick(&snapshot, &translated.series);
            Ok::<_, whisk_remote_write::Untranslatable>((translated, picked, offsets))
        })
        .await;
        let (translated, mut picked, offsets) = match rendered {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                shared.telemetry.push_render_failed(&e);
                return None;
            }
            Err(e) => {
                shared.telemetry.push_render_failed(&e);
                return None;
            }
        };
        let start = Instant::now();
        let ts = self.next_ms();
        let mut series: Vec<TimeSeries> = translated
            .series
            .iter()
            .zip(&translated.values)
            .map(|(labels, v)| self.series(labels, *v, ts))
            .collect();
        for (i, exemplar) in picked.exemplars.drain(..) {
            series[i].exemplars.push(exemplar);
        }
        let gone = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let now: HashSet<&SeriesLabels> = translated.series.iter().collect();
            state
                .series
                .iter()
                .filter(|s| !now.contains(s))
                .map(|s| self.series(s, STALE_NAN, ts))
                .collect::<Vec<_>>()
        };
        series.extend(gone);
        #[allow(clippy::cast_precision_loss)]
        series.push(self.series(&push_time(), ts as f64 / 1000.0, ts));
        match self.write_all(series).await {
            Ok(()) => {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.series = translated.series;
                drop(state);
                self.sent
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .acknowledged(picked);
                shared
                    .telemetry
                    .push_succeeded(&self.url(), start.elapsed());
                Some(offsets)
            }
            Err(e) => {
                shared.telemetry.push_failed(&e, start.elapsed());
                None
            }
        }
    }

    /// Ends every series of the last acknowledged snapshot with a stale marker (on shutdown).
    pub(crate) async fn delete(&self) -> Result<(), whisk_remote_write::ClientError> {
        let last = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.series.clone()
        };
        let ts = self.next_ms();
        let mut series: Vec<TimeSeries> =
            last.iter().map(|s| self.series(s, STALE_NAN, ts)).collect();
        series.push(self.series(&push_time(), STALE_NAN, ts));
        self.write_all(series).await
    }

    async fn write_all(
        &self,
        series: Vec<TimeSeries>,
    ) -> Result<(), whisk_remote_write::ClientError> {
        let mut series = series.into_iter().peekable();
        while series.peek().is_some() {
            let timeseries: Vec<TimeSeries> = series.by_ref().take(SERIES_PER_WRITE).collect();
            let body = whisk_remote_write::encode(&WriteRequest { timeseries });
            self.client.send(body, &[], || true).await?;
        }
        Ok(())
    }

    fn series(&self, labels: &[Label], value: f64, ts: i64) -> TimeSeries {
        whisk_remote_write::grouped_series(&self.grouping, labels, value, ts)
    }
}

fn push_time() -> Vec<Label> {
    vec![Label::new("__name__", "push_time_seconds")]
}

/// Where the platform snapshot goes.
#[derive(Debug, Clone)]
pub(crate) enum PlatformSink {
    /// A PUT of the group to the (first) Pushgateway.
    Pushgateway(crate::push_loop::PlatformPush),
    /// Remote-write samples.
    RemoteWrite(RemoteWritePush),
}

impl PlatformSink {
    /// Where it goes.
    pub(crate) fn url(&self) -> String {
        match self {
            Self::Pushgateway(p) => p.url(),
            Self::RemoteWrite(r) => r.url(),
        }
    }

    /// Pushes or writes a snapshot; its offsets when the store acknowledged all of it.
    pub(crate) async fn push_snapshot(&self, shared: &Arc<Shared>) -> Option<Offsets> {
        match self {
            Self::Pushgateway(p) => p.push_snapshot(shared).await,
            Self::RemoteWrite(r) => r.push_snapshot(shared).await,
        }
    }

    /// Removes this replica's group (Pushgateway) or ends its series (remote write).
    pub(crate) async fn delete(&self) -> Result<(), String> {
        match self {
            Self::Pushgateway(p) => p.delete().await.map_err(|e| e.to_string()),
            Self::RemoteWrite(r) => r.delete().await.map_err(|e| e.to_string()),
        }
    }
}
