//! `/metrics` (platform metrics then the collector's own, streamed in chunks: text format
//! 0.0.4, or OpenMetrics with exemplars when `Accept` asks for it), `/healthz`, `/readyz` (200 once the consumer has joined its group and is polling,
//! with or without a partition: partition ownership is `whisk_collector_assigned_partitions`).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::body;
use crate::openmetrics::Exposition;
use crate::shared::Shared;

/// The HTTP routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> impl IntoResponse {
    let exposition =
        Exposition::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    // Rendered on a blocking thread in chunks; at most two chunks wait for the socket.
    let (mut sink, chunks) = body::channel(2);
    let _render = tokio::task::spawn_blocking(move || {
        if shared.stream_all(exposition, |chunk| sink.send(chunk)) {
            sink.finish();
        }
        // Every chunk but the last two is freed now (those are, once the socket takes them).
        crate::allocator::give_back_freed_memory();
    });
    (
        [(header::CONTENT_TYPE, exposition.content_type())],
        Body::new(chunks),
    )
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if shared.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not (yet) a polling member of the consumer group\n",
        )
    }
}
