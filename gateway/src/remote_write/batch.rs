//! Writes of different groups that are ready at the same time leave as one request.
//!
//! Up to [`MAX_IN_FLIGHT`] requests are in flight; a write that finds them all busy waits in a
//! queue, and the next request takes every waiting write of its tenant (up to [`MAX_WRITES`]
//! and [`MAX_RAW_BYTES`]). So a lone push is sent at once, and under load the receiver gets
//! fewer, larger requests (its cost per request — HTTP, decompression, a WAL commit — is
//! shared). A group's writes stay in order: a write holds its group's lane until the receiver
//! answered it (see [`Write::finished`]), so one group never has two writes queued or in flight.
//!
//! Each write has its own deadline (the retry bound from its push's arrival): its pusher is
//! answered 503 then at the latest ([`Batcher::write`]). A request, though, is not cut at a
//! deadline: it holds its slot until the receiver answers (at most [`ABANDON_AFTER`]). A
//! receiver that falls behind thus never has more than [`MAX_IN_FLIGHT`] requests of this
//! replica to work on — abandoning late requests would leave it finishing them anyway while
//! new ones arrive — and writes that wait past their deadline for a slot are answered without
//! being sent. Before each attempt the writes a newer push superseded or whose deadline passed
//! are answered so and left out; 5xx and 429 are retried while a write has time left. A
//! request the receiver refuses (a 4xx but 429: Prometheus refuses a whole request for one bad
//! sample) is split in halves, each sent on its own, so one bad push fails only itself.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue};
use prometheus::IntCounter;
use tokio::sync::oneshot;
use whisk_remote_write::{Attempt, Backoff, Client, ClientError, Outcome};

/// Requests in flight at once. Two, not more: a receiver's cost per request is large
/// (VictoriaMetrics ~0.3 ms of CPU for a request of one write against ~0.1 ms a write in
/// requests of eight; Prometheus ~1.2 against ~0.8 ms: `--bench receiver`), and with four
/// slots the bench's 16 pushers left as 2.6 writes a request on average; two still overlap one
/// request's transfer with the receiver's work on the other.
pub(super) const MAX_IN_FLIGHT: usize = 2;
/// Most writes in one request: a receiver slow per sample (Prometheus, 1.2–1.8 ms of its CPU
/// per SDK push, most of it garbage collection: docs/benchmarks.md) must still answer a request
/// well within the retry bound, or every write in it fails together.
pub(super) const MAX_WRITES: usize = 8;
/// Most uncompressed bytes in one request (a single larger write still goes alone).
pub(super) const MAX_RAW_BYTES: usize = 4 * 1024 * 1024;
/// A request the receiver has not answered in this is abandoned (its connection closed).
pub(super) const ABANDON_AFTER: Duration = Duration::from_secs(10);

/// Whether a write is still the latest of its group.
pub(super) type StillLatest = Box<dyn Fn() -> bool + Send + Sync>;

/// Called once when the receiver's answer to a write is known (`true`: acknowledged), or when
/// the write was given up: it updates the group's lane and releases it.
pub(super) type Finished = Box<dyn FnOnce(bool) + Send>;

/// One group's write, waiting or in flight.
pub(super) struct Write {
    raw: Vec<u8>,
    tenant: Option<HeaderValue>,
    deadline: Instant,
    still_latest: StillLatest,
    finished: Option<Finished>,
    done: Option<oneshot::Sender<Result<Outcome, ClientError>>>,
}

impl Write {
    /// Answers the pusher (if it still waits) and runs [`Write::finished`].
    fn answer(mut self, result: Result<Outcome, ClientError>) {
        if let Some(finished) = self.finished.take() {
            finished(result.is_ok());
        }
        if let Some(done) = self.done.take() {
            // The pusher may have gone (its deadline passed, or its connection closed).
            let _ = done.send(result);
        }
    }
}

impl Drop for Write {
    fn drop(&mut self) {
        // A write dropped unanswered (a panicking task) still releases its group's lane.
        if let Some(finished) = self.finished.take() {
            finished(false);
        }
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

    /// The retry bound: a write's deadline is this after its push arrived.
    pub(super) fn bound(&self) -> Duration {
        self.client.total_bound()
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `raw` (an uncompressed request of one group) for `tenant`; answers by `deadline`
    /// at the latest (503 if the receiver has not acknowledged it by then), or when
    /// `still_latest` says a newer push replaced it before an attempt. `finished` runs once the
    /// receiver's answer is known, which may be after this returned.
    pub(super) async fn write(
        self: &Arc<Self>,
        raw: Vec<u8>,
        tenant: Option<HeaderValue>,
        deadline: Instant,
        still_latest: StillLatest,
        finished: Finished,
    ) -> Result<Outcome, ClientError> {
        let (done, answer) = oneshot::channel();
        let start = {
            let mut queue = self.lock();
            queue.waiting.push_back(Write {
                raw,
                tenant,
                deadline,
                still_latest,
                finished: Some(finished),
                done: Some(done),
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
        match tokio::time::timeout_at(deadline.into(), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.unavailable(0, "the write was dropped before it was sent")),
            Err(_) => Err(self.unavailable(0, "no acknowledgment yet (the receiver is behind)")),
        }
    }

    fn unavailable(&self, attempts: u32, last: &str) -> ClientError {
        ClientError::Unavailable {
            bound_ms: self.bound().as_millis(),
            attempts,
            last: last.to_string(),
        }
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

    /// Sends `batch` (writes of one tenant) until each write is answered; a refused request's
    /// writes go again in halves, one after the other, so a bad write ends up alone.
    async fn send(&self, batch: Vec<Write>) {
        let mut pending = vec![batch];
        while let Some(writes) = pending.pop() {
            if let Some((status, message, writes)) = self.send_one(writes).await {
                if writes.len() == 1 {
                    if let Some(w) = writes.into_iter().next() {
                        w.answer(Err(ClientError::Refused { status, message }));
                    }
                } else {
                    let mut first = writes;
                    let second = first.split_off(first.len() / 2);
                    pending.push(second);
                    pending.push(first);
                }
            }
        }
    }

    /// One request of `writes`, retried while one of them has time left; answers them, or
    /// hands them back with the receiver's refusal.
    async fn send_one(&self, mut writes: Vec<Write>) -> Option<(u16, String, Vec<Write>)> {
        let mut backoff = Backoff::default();
        let mut attempts = 0u32;
        let mut last = String::from("not sent before the deadline");
        loop {
            let now = Instant::now();
            let mut live = Vec::with_capacity(writes.len());
            for w in writes {
                if !(w.still_latest)() {
                    w.answer(Err(ClientError::Superseded));
                } else if now >= w.deadline {
                    w.answer(Err(self.unavailable(attempts, &last)));
                } else {
                    live.push(w);
                }
            }
            let latest = live.iter().map(|w| w.deadline).max()?;
            let mut raw = Vec::with_capacity(live.iter().map(|w| w.raw.len()).sum());
            for w in &live {
                raw.extend_from_slice(&w.raw);
            }
            let body = whisk_remote_write::compress(&raw);
            let extra = self.extra(live[0].tenant.as_ref());
            attempts += 1;
            self.requests.inc();
            let after = match self.client.attempt(body, &extra, ABANDON_AFTER).await {
                Attempt::Acknowledged => {
                    for w in live {
                        w.answer(Ok(Outcome { attempts }));
                    }
                    return None;
                }
                Attempt::Refused { status, message } => return Some((status, message, live)),
                Attempt::Retry { last: got, after } => {
                    last = got;
                    after
                }
            };
            let pause = backoff.next_pause(after);
            if Instant::now() + pause >= latest {
                for w in live {
                    w.answer(Err(self.unavailable(attempts, &last)));
                }
                return None;
            }
            tracing::debug!(
                attempts,
                ?pause,
                "remote write not acknowledged ({last}); retrying"
            );
            tokio::time::sleep(pause).await;
            writes = live;
        }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use whisk_remote_write::ClientConfig;

    use super::*;

    /// A receiver answering every request 204 after `delay`: the requests it got and the most
    /// it worked on at once.
    async fn slow_receiver(delay: Duration) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/v1/write", listener.local_addr().unwrap());
        let (got, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let busy = Arc::new(AtomicUsize::new(0));
        let (g, m) = (Arc::clone(&got), Arc::clone(&most));
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (got, most, busy) = (Arc::clone(&g), Arc::clone(&m), Arc::clone(&busy));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let mut headers = [httparse::EMPTY_HEADER; 32];
                        let mut request = httparse::Request::new(&mut headers);
                        if let Ok(httparse::Status::Complete(head)) = request.parse(&buf) {
                            let length: usize = request
                                .headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                                .unwrap_or(0);
                            if buf.len() >= head + length {
                                buf.drain(..head + length);
                                got.fetch_add(1, Ordering::SeqCst);
                                let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
                                most.fetch_max(now, Ordering::SeqCst);
                                tokio::time::sleep(delay).await;
                                busy.fetch_sub(1, Ordering::SeqCst);
                                let answer = b"HTTP/1.1 204 No Content\r\n\r\n";
                                if socket.write_all(answer).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                        }
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        (url, got, most)
    }

    #[tokio::test]
    async fn a_receiver_that_falls_behind_gets_no_more_requests_and_late_writes_are_not_sent() {
        let (url, got, most) = slow_receiver(Duration::from_secs(2)).await;
        let bound = Duration::from_millis(100);
        let client = Client::new(ClientConfig {
            url: url.parse().unwrap(),
            headers: vec![],
            total_bound: bound,
            user_agent: "test".into(),
        })
        .unwrap();
        let batcher = Batcher::new(client, None, IntCounter::new("r", "r").unwrap());
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let writes = MAX_IN_FLIGHT * MAX_WRITES + 8;
        let started = Instant::now();
        let tasks: Vec<_> = (0..writes)
            .map(|_| {
                let (batcher, acknowledged) = (Arc::clone(&batcher), Arc::clone(&acknowledged));
                tokio::spawn(async move {
                    let finished: Finished = Box::new(move |ok| {
                        if ok {
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                    let deadline = Instant::now() + bound;
                    let result = batcher
                        .write(
                            vec![0x0a, 0x00],
                            None,
                            deadline,
                            Box::new(|| true),
                            finished,
                        )
                        .await;
                    (result, started.elapsed())
                })
            })
            .collect();
        for task in tasks {
            let (result, answered_after) = task.await.unwrap();
            assert!(
                matches!(result, Err(ClientError::Unavailable { .. })),
                "{result:?}"
            );
            // Answered at its deadline, not when the receiver answers (2 s).
            assert!(
                answered_after < Duration::from_secs(1),
                "{answered_after:?}"
            );
        }
        // The requests in flight are not abandoned: the receiver answers them, and the writes
        // they carried are recorded as acknowledged (their lanes updated and released).
        let until = Instant::now() + Duration::from_secs(10);
        while acknowledged.load(Ordering::SeqCst) < MAX_IN_FLIGHT * MAX_WRITES
            && Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            acknowledged.load(Ordering::SeqCst),
            MAX_IN_FLIGHT * MAX_WRITES
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The 8 writes that waited for a slot past their deadline were never sent.
        assert_eq!(got.load(Ordering::SeqCst), MAX_IN_FLIGHT);
        assert!(most.load(Ordering::SeqCst) <= MAX_IN_FLIGHT);
    }
}
