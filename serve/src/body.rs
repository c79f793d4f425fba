//! Request bodies with a deadline (`--body-timeout` after the head), and answers that tell the
//! connection's slot when they have been written.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Duration, Instant, Sleep};

use crate::metrics::{Closed, ConnectionMetrics};
use crate::table::Slot;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body that did not arrive within `--body-timeout`; find it in an error's source
/// chain with [`body_timeout_in`].
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the body did not arrive within {0:?} of its head (--body-timeout)")]
pub struct BodyTimeout(pub Duration);

/// The [`BodyTimeout`] that is `error` or in its source chain (e.g. in the error of
/// `axum::body::to_bytes` on a body cut off by it).
pub fn body_timeout_in(error: &(dyn std::error::Error + 'static)) -> Option<BodyTimeout> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<BodyTimeout>() {
            return Some(*t);
        }
        next = e.source();
    }
    None
}

pin_project_lite::pin_project! {
    /// `inner` until `deadline`, then a [`BodyTimeout`] error (checked on every frame, so a body
    /// that trickles a byte at a time is cut off too).
    pub(crate) struct TimedBody<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Sleep,
        deadline: Instant,
        limit: Duration,
        metrics: ConnectionMetrics,
        timed_out: bool,
    }
}

impl<B> TimedBody<B> {
    pub(crate) fn new(inner: B, limit: Duration, metrics: ConnectionMetrics) -> Self {
        let deadline = Instant::now() + limit;
        Self {
            inner,
            sleep: tokio::time::sleep_until(deadline),
            deadline,
            limit,
            metrics,
            timed_out: false,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if *this.timed_out {
            return Poll::Ready(None);
        }
        let expired = Instant::now() >= *this.deadline
            || match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(frame) => {
                    return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
                }
                Poll::Pending => this.sleep.as_mut().poll(cx).is_ready(),
            };
        if !expired {
            return Poll::Pending;
        }
        *this.timed_out = true;
        this.metrics.closed(Closed::BodyTimeout);
        Poll::Ready(Some(Err(BodyTimeout(*this.limit).into())))
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// An answer's body; once hyper has written and dropped it, the connection is idle.
    pub(crate) struct Answer<B> {
        #[pin]
        inner: B,
        done: Done,
    }
}

impl<B> Answer<B> {
    pub(crate) fn new(inner: B, slot: Arc<Slot>) -> Self {
        Self {
            inner,
            done: Done(slot),
        }
    }
}

struct Done(Arc<Slot>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

impl<B: Body> Body for Answer<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
