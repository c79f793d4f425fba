//! A streamed HTTP body fed chunk by chunk by a render on a blocking thread: the `/metrics`
//! answer and the platform push's request body.
//!
//! At most `depth` chunks wait for the socket, so a render holds a few chunks, never the whole
//! text. The render says when it is complete ([`ChunkSink::finish`]); a render that stops
//! early (its thread panicked, or it gave up) ends the body with [`Incomplete`] instead of a
//! clean end, so the peer (hyper on the other side) sees a broken chunked body and never takes
//! a truncated text for a whole one. [`Progress`] tells how far the body has been taken by the
//! connection, for a timeout on progress rather than on the whole transfer.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;

/// The render stopped before the end of the text: the body is broken off, not ended.
#[derive(Debug, thiserror::Error)]
#[error("the render stopped before the end of the text (body broken off)")]
pub(crate) struct Incomplete;

enum Msg {
    Data(Bytes),
    End,
}

/// The render's end of the channel (used from a blocking thread).
pub(crate) struct ChunkSink(mpsc::Sender<Msg>);

impl ChunkSink {
    /// Hands a chunk on, waiting while `depth` chunks are queued. `false` once the body is
    /// gone (the connection was closed or the request given up): stop rendering.
    pub(crate) fn send(&mut self, chunk: String) -> bool {
        chunk.is_empty() || self.0.blocking_send(Msg::Data(Bytes::from(chunk))).is_ok()
    }

    /// The text is complete: the body ends cleanly after the queued chunks.
    pub(crate) fn finish(self) {
        let _ = self.0.blocking_send(Msg::End);
    }
}

/// How far the connection has taken the body.
#[derive(Debug)]
pub(crate) struct Progress {
    started: Instant,
    /// Bytes handed to the connection.
    bytes: AtomicU64,
    /// When a chunk (or the end) was last handed on, in ms since `started`.
    last_ms: AtomicU64,
    ended: AtomicBool,
}

impl Progress {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            bytes: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            ended: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn advanced(&self, bytes: usize) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Bytes handed to the connection so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether the whole body has been handed on.
    pub(crate) fn ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// Why the transfer should be given up now, if it should: while the body is being sent,
    /// no chunk taken for `stall`; at any time (the answer included, since the peer may only
    /// process the body once it has all of it), the whole exchange taking longer than `stall`
    /// plus one second per `min_bytes_per_sec` bytes sent.
    pub(crate) fn overdue(&self, stall: Duration, min_bytes_per_sec: u64) -> Option<Overdue> {
        self.overdue_at(self.now_ms(), stall, min_bytes_per_sec)
    }

    fn overdue_at(&self, now: u64, stall: Duration, min_bytes_per_sec: u64) -> Option<Overdue> {
        let idle = Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)));
        if idle >= stall && !self.ended() {
            return Some(Overdue::Stalled {
                idle,
                bytes: self.bytes(),
            });
        }
        let elapsed = Duration::from_millis(now);
        #[allow(clippy::cast_precision_loss)]
        let allowed =
            stall + Duration::from_secs_f64(self.bytes() as f64 / min_bytes_per_sec.max(1) as f64);
        (elapsed > allowed).then(|| Overdue::TooSlow {
            elapsed,
            bytes: self.bytes(),
        })
    }
}

/// Why a streamed transfer was given up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Overdue {
    /// No chunk was taken for `idle` while the body was being sent.
    #[error("no progress for {idle:?} ({bytes} bytes sent)")]
    Stalled {
        /// Time since the last chunk was taken.
        idle: Duration,
        /// Bytes taken by the connection.
        bytes: u64,
    },
    /// The average rate fell below the floor.
    #[error("too slow: {bytes} bytes sent, no answer after {elapsed:?}")]
    TooSlow {
        /// Time since the transfer started.
        elapsed: Duration,
        /// Bytes taken by the connection.
        bytes: u64,
    },
}

/// The connection's end: an [`http_body::Body`] of the rendered chunks.
pub(crate) struct ChunkBody {
    rx: mpsc::Receiver<Msg>,
    progress: Arc<Progress>,
    done: bool,
}

impl ChunkBody {
    /// Shared view of how far this body has been taken.
    pub(crate) fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }
}

/// A body and the sink that feeds it; at most `depth` chunks are queued between them.
pub(crate) fn channel(depth: usize) -> (ChunkSink, ChunkBody) {
    let (tx, rx) = mpsc::channel(depth.max(1));
    (
        ChunkSink(tx),
        ChunkBody {
            rx,
            progress: Arc::new(Progress::new()),
            done: false,
        },
    )
}

impl http_body::Body for ChunkBody {
    type Data = Bytes;
    type Error = Incomplete;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Msg::Data(b))) => {
                self.progress.advanced(b.len());
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Msg::End)) => {
                self.done = true;
                self.progress.advanced(0);
                self.progress.ended.store(true, Ordering::Relaxed);
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err(Incomplete)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn a_finished_render_ends_the_body_cleanly_with_every_chunk() {
        let (mut sink, body) = channel(2);
        let progress = body.progress();
        let render = tokio::task::spawn_blocking(move || {
            for i in 0..10 {
                assert!(sink.send(format!("line {i}\n")));
            }
            sink.finish();
        });
        let collected = body.collect().await.unwrap().to_bytes();
        render.await.unwrap();
        let text = String::from_utf8(collected.to_vec()).unwrap();
        assert_eq!(text.lines().count(), 10);
        assert!(text.ends_with("line 9\n"));
        assert!(progress.ended());
        assert_eq!(progress.bytes(), text.len() as u64);
    }

    #[tokio::test]
    async fn a_render_that_stops_early_breaks_the_body_off_instead_of_ending_it() {
        let (mut sink, body) = channel(2);
        let render = tokio::task::spawn_blocking(move || {
            assert!(sink.send("half of it\n".into()));
            // Dropped without finish(): a panic or an early return.
        });
        let result = body.collect().await;
        render.await.unwrap();
        assert!(result.is_err(), "a truncated render must not end cleanly");
    }

    #[tokio::test]
    async fn the_render_stops_once_the_body_is_gone() {
        let (mut sink, body) = channel(1);
        drop(body);
        let sent = tokio::task::spawn_blocking(move || sink.send("x\n".into()))
            .await
            .unwrap();
        assert!(!sent);
    }

    #[test]
    fn a_transfer_is_overdue_when_it_stalls_or_falls_below_the_rate_floor() {
        let stall = Duration::from_secs(5);
        let p = Progress::new();
        assert_eq!(p.overdue_at(4_999, stall, 1_000_000), None);
        assert_eq!(
            p.overdue_at(5_000, stall, 1_000_000),
            Some(Overdue::Stalled {
                idle: stall,
                bytes: 0
            })
        );
        // 10 MB taken by t = 12 s, the last chunk at t = 11 s: at 1 MB/s that is allowed
        // until 5 s + 10 s = 15 s, at 2 MB/s until 10 s.
        p.bytes.store(10_000_000, Ordering::Relaxed);
        p.last_ms.store(11_000, Ordering::Relaxed);
        assert_eq!(p.overdue_at(12_000, stall, 1_000_000), None);
        assert_eq!(
            p.overdue_at(12_000, stall, 2_000_000),
            Some(Overdue::TooSlow {
                elapsed: Duration::from_secs(12),
                bytes: 10_000_000
            })
        );
        // Once the body is complete, waiting for the answer is no stall (the peer may only
        // process the body once it has all of it), but the rate floor still holds.
        p.ended.store(true, Ordering::Relaxed);
        assert_eq!(p.overdue_at(14_999, stall, 1_000_000), None);
        assert!(matches!(
            p.overdue_at(15_001, stall, 1_000_000),
            Some(Overdue::TooSlow { .. })
        ));
    }
}
