//! The HTTP API: the push paths (`PUT`/`DELETE` on an SDK group), `/metrics`, `/healthz`,
//! `/readyz`. Every refusal is a status and a one-line text body.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use whisk_grouping::GroupingKey;

use crate::auth::{Authenticator, Decision};
use crate::families::FamilyTable;
use crate::forward::Forwarder;
use crate::telemetry::Telemetry;
use crate::validate::Invalid;
use crate::verdicts::Verdicts;

/// Longest time a client may take to send its body (a slow sender holds a connection).
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The labels of an SDK group besides `job`, in the SDK's order.
pub const GROUP_LABELS: [&str; 3] = ["instance", "namespace", "action"];

/// Everything a request needs.
#[derive(Debug)]
pub struct AppState {
    /// The only job accepted.
    pub job: String,
    /// `None` with `--auth none`.
    pub auth: Option<Authenticator>,
    /// The family → type table.
    pub families: Arc<FamilyTable>,
    /// The shards.
    pub forwarder: Forwarder,
    /// Own metrics.
    pub telemetry: Telemetry,
    /// `--max-body-bytes`.
    pub max_body_bytes: usize,
    /// Validation with remembered verdicts (`--max-series-per-group`,
    /// `--validation-cache-bytes`).
    pub verdicts: Verdicts,
    /// `--remote-write-url`: the store instead of the shards (no family table then).
    pub remote_write: Option<crate::remote_write::RemoteWrite>,
}

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(push)
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state
        .telemetry
        .known_families
        .set(i64::try_from(state.families.len()).unwrap_or(i64::MAX));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.telemetry.render(),
    )
        .into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.families.is_seeded() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the family table is not yet seeded from every Pushgateway\n",
        )
            .into_response()
    }
}

/// A refusal: status, `reason` label, one-line text.
struct Refusal {
    status: StatusCode,
    reason: &'static str,
    text: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str, text: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            text: text.into(),
        }
    }
}

async fn push(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let method = request.method().clone();
    let method_label = match method {
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "other",
    };
    match handle(&state, request).await {
        Ok(answer) => {
            let (result, reason) = if (200..300).contains(&answer.status()) {
                ("forwarded", "ok")
            } else {
                ("failed", "pushgateway_error")
            };
            state.telemetry.request(method_label, result, reason);
            answer.into_response()
        }
        Err(refusal) => {
            let result = if refusal.status.is_server_error() {
                "failed"
            } else {
                "rejected"
            };
            state
                .telemetry
                .request(method_label, result, refusal.reason);
            if refusal.status.is_server_error() {
                tracing::warn!(status = %refusal.status, reason = refusal.reason, "{}", refusal.text);
            } else {
                tracing::debug!(status = %refusal.status, reason = refusal.reason, "{}", refusal.text);
            }
            let mut resp = (refusal.status, format!("{}\n", refusal.text)).into_response();
            let headers = resp.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            if refusal.status == StatusCode::UNAUTHORIZED {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"whisk-gateway\""),
                );
            }
            if refusal.status == StatusCode::METHOD_NOT_ALLOWED {
                headers.insert(header::ALLOW, HeaderValue::from_static("PUT, DELETE"));
            }
            resp
        }
    }
}

/// The Pushgateway's answer, passed back.
struct Passed(crate::forward::Answer);

impl Passed {
    fn status(&self) -> u16 {
        self.0.status
    }
}

impl IntoResponse for Passed {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut resp = Response::new(Body::from(self.0.body));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}

async fn handle(state: &AppState, request: Request) -> Result<Passed, Refusal> {
    let path = request.uri().path().to_string();
    let key = GroupingKey::from_path(&path).map_err(|e| {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("not a push path: {e}"),
        )
    })?;
    let names: Vec<&str> = key.labels().iter().map(|(n, _)| n.as_str()).collect();
    if names != GROUP_LABELS {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "not an SDK group: the path must be /metrics/job/<job>/instance/<id>/namespace/<ns>/action/<action>",
        ));
    }
    let method = request.method().clone();
    if method != Method::PUT && method != Method::DELETE {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed; use PUT or DELETE"),
        ));
    }
    if key.job() != state.job {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden_job",
            format!(
                "job `{}` is not accepted here; only `{}` may be pushed through the gateway",
                key.job(),
                state.job
            ),
        ));
    }
    let instance = key.get("instance").unwrap_or_default();
    let namespace = key.get("namespace").unwrap_or_default();
    // An empty label value cannot be told from an absent one in Prometheus, so such a group
    // could never be named by the janitor's Prometheus source; the SDK never sends one.
    if instance.is_empty()
        || namespace.is_empty()
        || key.get("action").unwrap_or_default().is_empty()
    {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_grouping_key",
            "instance, namespace and action must not be empty",
        ));
    }

    if let Some(auth) = &state.auth {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        match auth.check(header, namespace).await {
            Decision::Allowed => {}
            Decision::Forbidden => {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "forbidden_namespace",
                    format!("this API key may not push metrics of namespace `{namespace}`"),
                ));
            }
            Decision::Unauthorized(text) => {
                return Err(Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", text));
            }
            Decision::Unavailable(text) => {
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "controller_unavailable",
                    text,
                ));
            }
        }
    }

    let shard = state.forwarder.shard_of(instance);
    let canonical = key.path();
    if method == Method::DELETE {
        if let Some(rw) = &state.remote_write {
            return Ok(Passed(rw.delete(&key, &canonical).await));
        }
        return forward_result(state.forwarder.delete(shard, &canonical).await);
    }

    if let Some(enc) = request.headers().get(header::CONTENT_ENCODING) {
        if enc.as_bytes() != b"identity" {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                "compressed bodies are not accepted; send the text format uncompressed",
            ));
        }
    }
    if let Some(ct) = request.headers().get(header::CONTENT_TYPE) {
        if ct
            .as_bytes()
            .starts_with(b"application/vnd.google.protobuf")
        {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_format",
                "the protobuf format is not accepted; send the text format",
            ));
        }
    }
    let too_large = |max: usize| {
        let e = Invalid::TooLarge { max };
        Refusal::new(StatusCode::BAD_REQUEST, e.reason(), e.to_string())
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes) {
        return Err(too_large(state.max_body_bytes));
    }
    let body: Bytes = tokio::time::timeout(
        BODY_TIMEOUT,
        axum::body::to_bytes(request.into_body(), state.max_body_bytes),
    )
    .await
    .map_err(|_| {
        Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the body did not arrive within 10 s",
        )
    })?
    .map_err(|_| too_large(state.max_body_bytes))?;
    // With --stage-puts, sent now but for the body's last byte: the Pushgateway can parse while
    // this validates (when it runs on another core or node: docs/benchmarks.md, "Gateway").
    // Returning a refusal below drops `staged`, which resets that connection: the Pushgateway
    // then holds a truncated body, and stores nothing. Without it, nothing is sent yet.
    let staged = state.forwarder.stage_put(shard, &canonical, &body).await;
    let validated = state
        .verdicts
        .validate(&body)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.reason(), e.to_string()))?;
    if let Some(rw) = &state.remote_write {
        // No cross-group type table: a database keeps each series apart (docs/design.md).
        return Ok(Passed(rw.put(&key, &canonical, &body).await));
    }
    state
        .families
        .check_and_record(&validated.families)
        .map_err(|c| {
            let status = match c {
                crate::families::Conflict::Type { .. }
                | crate::families::Conflict::Suffix { .. } => StatusCode::CONFLICT,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            Refusal::new(status, c.reason(), c.to_string())
        })?;
    forward_result(
        state
            .forwarder
            .commit_put(staged, shard, &canonical, body)
            .await,
    )
}

fn forward_result(
    result: Result<crate::forward::Answer, crate::forward::ForwardError>,
) -> Result<Passed, Refusal> {
    result.map(Passed).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_GATEWAY,
            "pushgateway_unreachable",
            e.to_string(),
        )
    })
}
