//! The platform push: every `--push-interval`, a snapshot of the `openwhisk_*` families is PUT
//! to this replica's own group `{job=<--push-job>, instance=<replica>}`.
//!
//! The state is cumulative, so a failed push loses nothing: it is counted, logged and simply
//! retried on the next interval. Offsets are committed only for snapshots that were pushed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use whisk_grouping::GroupingKey;

use crate::body;
use crate::render::{ACTIONS_PER_LOCK, CHUNK_BYTES, render_chunked};
use crate::shared::{Offsets, Shared};
use crate::sink::pushgateway::{PushgatewayClient, PushgatewayError};
use crate::source::kafka::Command;

/// Pushes this replica's platform group.
#[derive(Debug, Clone)]
pub(crate) struct PlatformPush {
    client: PushgatewayClient,
    key: GroupingKey,
}

impl PlatformPush {
    /// Pushes to group `{job, instance}`.
    pub(crate) fn new(client: PushgatewayClient, job: &str, instance: &str) -> Self {
        Self {
            client,
            key: GroupingKey::new(job).with("instance", instance),
        }
    }

    /// The group URL.
    pub(crate) fn url(&self) -> String {
        self.client.group_url(&self.key)
    }

    /// DELETEs this replica's group (on graceful shutdown).
    pub(crate) async fn delete(&self) -> Result<(), crate::sink::pushgateway::PushgatewayError> {
        self.client.delete_group(&self.key).await
    }

    /// Takes a snapshot (a copy of the aggregate and the offsets it covers, under one hold
    /// of the lock) and PUTs it as a stream rendered chunk by chunk from the copy, so the
    /// whole text never exists in memory. Returns the offsets the pushed snapshot covers when
    /// the push succeeded.
    ///
    /// The PUT is bounded by progress, not by a fixed time: it is given up when the
    /// Pushgateway takes no chunk for the client's timeout while the body is sent, or when the
    /// whole exchange (the answer included) takes longer than that timeout plus one second per
    /// [`MIN_PUSH_BYTES_PER_SEC`] bytes sent.
    pub(crate) async fn push_snapshot(&self, shared: &Arc<Shared>) -> Option<Offsets> {
        let s = Arc::clone(shared);
        let (snapshot, offsets) =
            match tokio::task::spawn_blocking(move || s.platform_snapshot()).await {
                Ok(snapshot) => snapshot,
                Err(e) => {
                    shared.telemetry.push_render_failed(&e);
                    return None;
                }
            };
        let (mut sink, body) = body::channel(2);
        let progress = body.progress();
        let render = tokio::task::spawn_blocking(move || {
            if render_chunked(
                || &snapshot,
                |agg| *agg,
                |chunk| sink.send(chunk),
                CHUNK_BYTES,
                ACTIONS_PER_LOCK,
            ) {
                sink.finish();
            }
        });
        let start = Instant::now();
        // Boxed so it can be dropped before the render is awaited.
        let mut put = Box::pin(
            self.client
                .put_group_stream(&self.key, reqwest::Body::wrap(body)),
        );
        let mut check = tokio::time::interval(PROGRESS_CHECK);
        let stall = self.client.timeout();
        let result = loop {
            tokio::select! {
                r = &mut put => break r,
                _ = check.tick() => {
                    if let Some(source) = progress.overdue(stall, MIN_PUSH_BYTES_PER_SEC) {
                        break Err(PushgatewayError::Overdue {
                            method: reqwest::Method::PUT,
                            url: self.url(),
                            source,
                        });
                    }
                }
            }
        };
        // Dropping the request (on failure) stops the render at its next chunk.
        drop(put);
        if let Err(e) = render.await {
            shared.telemetry.push_render_failed(&e);
            return None;
        }
        // The snapshot and the chunks are freed now.
        crate::allocator::give_back_freed_memory();
        match result {
            Ok(()) => {
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
}

/// How often a running push's progress is checked.
const PROGRESS_CHECK: Duration = Duration::from_millis(250);

/// Slowest average rate a push may fall to once the client's timeout has passed (the
/// Pushgateway takes tens of MB/s on loopback; a 10 000-action group is about 60 MB).
pub(crate) const MIN_PUSH_BYTES_PER_SEC: u64 = 1_000_000;

/// Pushes every `every` until the consumer thread is gone, handing the offsets of each pushed
/// snapshot to it.
pub(crate) async fn push_loop(
    push: crate::sink::remote_write::PlatformSink,
    shared: Arc<Shared>,
    commands: Sender<Command>,
    generation: Arc<AtomicU64>,
    every: Duration,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let _ = ticker.tick().await;
        // Read before the snapshot: a rebalance after it makes these offsets stale.
        let generation = generation.load(Ordering::Acquire);
        if let Some(offsets) = push.push_snapshot(&shared).await {
            if commands
                .send(Command::Store {
                    offsets,
                    generation,
                })
                .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::aggregate::Limits;
    use crate::event::parse;
    use std::sync::atomic::AtomicBool;

    fn activation(action: usize) -> String {
        format!(
            r#"{{"body":{{"name":"guest/a{action}","statusCode":0,"kind":"nodejs:20","memory":256,"duration":12,"waitTime":3,"initTime":0}},"eventType":"Activation","source":"invoker0","namespace":"guest","timestamp":1700000000000}}"#
        )
    }

    /// Applies event number `offset` (one activation) from partition 0 and marks it applied.
    fn apply(shared: &Shared, action: usize, offset: i64) {
        let text = activation(action);
        let event = parse(text.as_bytes()).unwrap();
        let mut state = shared.lock();
        state.aggregator.apply_from(&event, 0);
        state.mark_applied(0, offset + 1);
    }

    /// Σ of `openwhisk_action_activations_total` and its series count in a text exposition.
    fn activations(text: &str) -> (u64, usize) {
        text.lines()
            .filter(|l| l.starts_with("openwhisk_action_activations_total{"))
            .filter(|l| l.contains(r#"job="openwhisk_platform""#))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .fold((0, 0), |(sum, n), v| (sum + v as u64, n + 1))
    }

    /// A 10 000-action group (about 60 MB of text) is streamed to a real Pushgateway while
    /// events keep arriving: the push outlives the client's 1 s timeout without failing, and
    /// what the Pushgateway stores is exactly the events the returned offsets cover.
    #[test]
    fn a_large_push_streams_past_the_timeout_and_its_offsets_cover_exactly_what_was_sent() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let pgw = whisk_testkit::Pushgateway::start(&[]).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Shared::new(Limits::default()));
        const ACTIONS: usize = 10_000;
        for i in 0..ACTIONS {
            apply(&shared, i, i as i64);
        }
        let timeout = Duration::from_secs(1);
        let client =
            PushgatewayClient::new(&pgw.url().parse().unwrap(), None, None, timeout).unwrap();
        let push = PlatformPush::new(client, "openwhisk_platform", "r1");

        // Events keep arriving (on existing actions) during the push.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut offset = ACTIONS as i64;
                while !stop.load(Ordering::Relaxed) {
                    apply(&shared, offset as usize % ACTIONS, offset);
                    offset += 1;
                    std::thread::sleep(Duration::from_micros(200));
                }
                offset
            })
        };
        let start = Instant::now();
        let offsets = rt.block_on(push.push_snapshot(&shared));
        let took = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        let applied_in_all = writer.join().unwrap();

        let offsets = offsets.unwrap_or_else(|| panic!("the push failed after {took:?}"));
        assert!(
            took > timeout,
            "a 10 000-action push took {took:?}: it no longer tests a push longer than the timeout"
        );
        let covered = offsets
            .iter()
            .find(|(p, _)| *p == 0)
            .map(|(_, o)| *o)
            .unwrap();
        assert!(covered >= ACTIONS as i64 && covered <= applied_in_all);
        // Read in full here (the testkit's GET is capped at 10 MB).
        let text = rt
            .block_on(async {
                whisk_remote_write::http_client()
                    .build()?
                    .get(format!("{}/metrics", pgw.url()))
                    .send()
                    .await?
                    .text()
                    .await
            })
            .unwrap();
        let (sum, series) = activations(&text);
        assert_eq!(series, ACTIONS);
        assert_eq!(
            sum, covered as u64,
            "the pushed group holds exactly the events its offsets cover"
        );
    }

    /// A Pushgateway that accepts the connection and never reads: the push is given up after
    /// the client's timeout without progress, counted as failed, and its render stops.
    #[test]
    fn a_push_to_a_peer_that_stops_reading_is_given_up_and_counted() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hold = std::thread::spawn(move || listener.accept().map(|(socket, _)| socket));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Shared::new(Limits::default()));
        // Far more text than the socket buffers hold.
        for i in 0..2_000 {
            apply(&shared, i, i as i64);
        }
        let timeout = Duration::from_millis(500);
        let client = PushgatewayClient::new(&url.parse().unwrap(), None, None, timeout).unwrap();
        let push = PlatformPush::new(client, "openwhisk_platform", "r1");
        let start = Instant::now();
        let pushed = rt.block_on(push.push_snapshot(&shared));
        assert_eq!(pushed, None);
        assert!(start.elapsed() >= timeout);
        let mut own = String::new();
        shared.telemetry.render(&mut own, Default::default());
        assert!(
            own.contains(r#"whisk_collector_pushes_total{result="failed"} 1"#),
            "{own}"
        );
        drop(hold.join().unwrap());
    }
}
