//! `/metrics` (text format 0.0.4: platform metrics then the collector's own, streamed in
//! chunks), `/healthz`,
//! `/readyz` (200 once partitions are assigned and the consumer is polling).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use bytes::Bytes;
use http_body::Frame;

use crate::shared::Shared;

/// The HTTP routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    // Rendered on a blocking thread in chunks; at most two chunks wait for the socket.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let _render = tokio::task::spawn_blocking(move || {
        shared.stream_all(|chunk| tx.blocking_send(Bytes::from(chunk)).is_ok());
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        Body::new(Chunks(rx)),
    )
}

/// A response body fed chunk by chunk from the render thread.
struct Chunks(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if shared.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no partitions assigned yet\n",
        )
    }
}
