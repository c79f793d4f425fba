//! Writes of different groups that are ready at the same time leave as one request.
//!
//! Up to [`MAX_IN_FLIGHT`] requests are in flight; a write that finds them all busy waits in a
//! queue, and the next request takes every waiting write of its tenant (up to [`MAX_WRITES`]
//! and [`MAX_RAW_BYTES`]). So a lone push is sent at once, and under load the receiver gets
//! fewer, larger requests (its cost per request — HTTP, decompression, a WAL commit — is
//! shared). A group's writes stay in order: its lane holds it until its write is answered, so
//! one group never has two writes queued or in flight.
//!
//! Each write keeps its own deadline (the retry bound from when it was made) and its own
//! "still latest" check: a request ends by the earliest deadline of its writes, and before
//! each attempt the writes a newer push superseded are answered so and left out. A request
//! the receiver refuses (a 4xx but 429: Prometheus refuses a whole request for one bad
//! sample) is split: each of its writes is sent alone, so one bad push fails only itself.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use axum::http::{HeaderName, HeaderValue};
use prometheus::IntCounter;
use tokio::sync::oneshot;
use whisk_remote_write::{Client, ClientError, Outcome};

/// Requests in flight at once.
pub(super) const MAX_IN_FLIGHT: usize = 4;
/// Most writes in one request: a receiver slow per sample (Prometheus, ~1.7 ms of its CPU per
/// SDK push at 10 000 containers: docs/benchmarks.md) must still answer a request well within
/// the retry bound, or every write in it fails together.
pub(super) const MAX_WRITES: usize = 8;
/// Most uncompressed bytes in one request (a single larger write still goes alone).
pub(super) const MAX_RAW_BYTES: usize = 4 * 1024 * 1024;

/// Whether a write is still the latest of its group.
pub(super) type StillLatest = Box<dyn Fn() -> bool + Send + Sync>;

/// One group's write, waiting or in flight.
struct Write {
    raw: Vec<u8>,
    tenant: Option<HeaderValue>,
    deadline: Instant,
    still_latest: StillLatest,
    done: oneshot::Sender<Result<Outcome, ClientError>>,
}

impl Write {
    fn answer(self, result: Result<Outcome, ClientError>) {
        // The pusher may have gone (its connection closed): nobody to tell.
        let _ = self.done.send(result);
    }
}

/// The queue of writes and the requests in flight.
pub(super) struct Batcher {
    client: Client,
    tenant_header: Option<HeaderName>,
    requests: IntCounter,
    queue: Mutex<Queue>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Write>,
    in_flight: usize,
}

impl Batcher {
    /// Writes through `client`; the tenant of a write goes in `tenant_header`; `requests`
    /// counts the requests sent.
    pub(super) fn new(
        client: Client,
        tenant_header: Option<HeaderName>,
        requests: IntCounter,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            tenant_header,
            requests,
            queue: Mutex::new(Queue::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `raw` (an uncompressed request of one group) for `tenant`, within the client's
    /// bound from now, unless `still_latest` says a newer push replaced it first.
    pub(super) async fn write(
        self: &Arc<Self>,
        raw: Vec<u8>,
        tenant: Option<HeaderValue>,
        still_latest: StillLatest,
    ) -> Result<Outcome, ClientError> {
        let bound = self.client.total_bound();
        let (done, answer) = oneshot::channel();
        let start = {
            let mut queue = self.lock();
            queue.waiting.push_back(Write {
                raw,
                tenant,
                deadline: Instant::now() + bound,
                still_latest,
                done,
            });
            let start = queue.in_flight < MAX_IN_FLIGHT;
            if start {
                queue.in_flight += 1;
            }
            start
        };
        if start {
            let me = Arc::clone(self);
            tokio::spawn(async move { me.drain().await });
        }
        answer.await.unwrap_or_else(|_| {
            Err(ClientError::Unavailable {
                bound_ms: bound.as_millis(),
                attempts: 0,
                last: "the write was dropped before it was sent".into(),
            })
        })
    }

    /// Sends requests while writes wait.
    async fn drain(self: Arc<Self>) {
        loop {
            let batch = {
                let mut queue = self.lock();
                let batch = take_batch(&mut queue.waiting);
                if batch.is_empty() {
                    queue.in_flight -= 1;
                    return;
                }
                batch
            };
            self.send(batch).await;
        }
    }

    /// Sends one request of `batch` (writes of one tenant) and answers each write; a refused
    /// request's writes are sent again each alone, at once.
    async fn send(self: &Arc<Self>, mut batch: Vec<Write>) {
        loop {
            let (live, superseded): (Vec<Write>, Vec<Write>) =
                batch.into_iter().partition(|w| (w.still_latest)());
            for w in superseded {
                w.answer(Err(ClientError::Superseded));
            }
            let Some(deadline) = live.iter().map(|w| w.deadline).min() else {
                return;
            };
            let mut raw = Vec::with_capacity(live.iter().map(|w| w.raw.len()).sum());
            for w in &live {
                raw.extend_from_slice(&w.raw);
            }
            let extra = self.extra(live[0].tenant.as_ref());
            let all_latest = || live.iter().all(|w| (w.still_latest)());
            let body = whisk_remote_write::compress(&raw);
            self.requests.inc();
            let result = self
                .client
                .send_until(body, &extra, deadline, all_latest)
                .await;
            match result {
                // One of them was replaced before an attempt: the others go again without it.
                Err(ClientError::Superseded) if live.len() > 1 => batch = live,
                Err(ClientError::Refused { .. }) if live.len() > 1 => {
                    let alone: Vec<_> = live
                        .into_iter()
                        .map(|w| {
                            let me = Arc::clone(self);
                            tokio::spawn(async move { me.send_alone(w).await })
                        })
                        .collect();
                    for task in alone {
                        // A task that panicked dropped its write: its pusher gets a 503.
                        let _ = task.await;
                    }
                    return;
                }
                result => {
                    for w in live {
                        w.answer(result.clone());
                    }
                    return;
                }
            }
        }
    }

    /// Sends one write in a request of its own.
    async fn send_alone(&self, w: Write) {
        let extra = self.extra(w.tenant.as_ref());
        let body = whisk_remote_write::compress(&w.raw);
        self.requests.inc();
        let result = self
            .client
            .send_until(body, &extra, w.deadline, || (w.still_latest)())
            .await;
        w.answer(result);
    }

    fn extra(&self, tenant: Option<&HeaderValue>) -> Vec<(HeaderName, HeaderValue)> {
        match (&self.tenant_header, tenant) {
            (Some(name), Some(value)) => vec![(name.clone(), value.clone())],
            _ => Vec::new(),
        }
    }
}

/// The first waiting write and every later one of its tenant, within the request's limits.
fn take_batch(waiting: &mut VecDeque<Write>) -> Vec<Write> {
    let Some(first) = waiting.pop_front() else {
        return Vec::new();
    };
    let mut bytes = first.raw.len();
    let mut batch = vec![first];
    let mut i = 0;
    while i < waiting.len() && batch.len() < MAX_WRITES {
        let w = &waiting[i];
        if w.tenant == batch[0].tenant && bytes + w.raw.len() <= MAX_RAW_BYTES {
            bytes += w.raw.len();
            if let Some(w) = waiting.remove(i) {
                batch.push(w);
            }
        } else {
            i += 1;
        }
    }
    batch
}
