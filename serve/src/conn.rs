//! One connection: hyper's HTTP/1.1 state machine over an IO that reports the first byte of
//! each head, and a watchdog in the same task that closes the connection at its deadline
//! (head or idle timeout) or when the table shed it.

use std::convert::Infallible;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower_service::Service as _;

use crate::body::{Answer, TimedBody};
use crate::metrics::Closed;
use crate::table::{Slot, Table};

/// Largest read buffer of a connection, and so the largest request head (an SDK's is < 1 KiB;
/// hyper's default would let each slow head hold ~400 KiB).
const MAX_BUFFER_BYTES: usize = 16 * 1024;

/// Serves `stream` until it closes, times out, is shed, or `stop` asks to finish.
pub(crate) async fn run(
    stream: TcpStream,
    peer: IpAddr,
    slot: Arc<Slot>,
    table: Arc<Table>,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let io = TokioIo::new(Watched {
        inner: stream,
        slot: Arc::clone(&slot),
    });
    let service = {
        let (slot, table) = (Arc::clone(&slot), Arc::clone(&table));
        hyper::service::service_fn(move |request: Request<Incoming>| {
            serve_request(
                request,
                Arc::clone(&slot),
                Arc::clone(&table),
                router.clone(),
            )
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(MAX_BUFFER_BYTES)
        // The watchdog below times heads (hyper's timer would need its own clock and restart
        // at every poll of an idle connection).
        .header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let deadline = slot.deadline(table.limits());
        tokio::select! {
            biased;
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                break;
            }
            () = slot.wake.notified() => {}
            () = sleep_until(deadline) => {
                if let Some((at, why)) = slot.deadline(table.limits()) {
                    if at <= tokio::time::Instant::now() {
                        if why != Closed::Shed {
                            table.metrics().closed(why);
                        }
                        tracing::debug!(%peer, reason = ?why, "closing the connection");
                        break;
                    }
                }
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    table.release(peer, &slot);
}

async fn sleep_until(deadline: Option<(tokio::time::Instant, Closed)>) {
    match deadline {
        Some((at, _)) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn serve_request(
    request: Request<Incoming>,
    slot: Arc<Slot>,
    table: Arc<Table>,
    mut router: Router,
) -> Result<Response<Body>, Infallible> {
    if !slot.begin_request() {
        // Shed between its head and now: the watchdog closes it; nothing is served.
        let mut refused = Response::new(Body::from("the connection was closed to make room\n"));
        *refused.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return Ok(refused);
    }
    let limits = table.limits();
    let request = request.map(|b| {
        Body::new(TimedBody::new(
            b,
            limits.body_timeout,
            table.metrics().clone(),
        ))
    });
    let answer = router.call(request).await?;
    Ok(answer.map(|b| Body::new(Answer::new(b, slot))))
}

/// The connection's stream; a read that brings bytes tells the slot (a head's first byte).
struct Watched {
    inner: TcpStream,
    slot: Arc<Slot>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.slot.saw_bytes();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
