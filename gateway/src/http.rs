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
use crate::families::{Conflict, FamilyTable};
use crate::forward::Forwarder;
use crate::telemetry::Telemetry;
use crate::validate::{Family, Invalid, Validated};
use crate::verdicts::Verdicts;

/// The labels of an SDK group besides `job`, in the SDK's order.
pub(crate) const GROUP_LABELS: [&str; 3] = ["instance", "namespace", "action"];

/// Everything a request needs.
#[derive(Debug)]
pub(crate) struct AppState {
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
pub(crate) fn router(state: Arc<AppState>) -> Router {
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

/// The push path, step by step (the crate's docs list them): the first step that fails answers.
async fn handle(state: &AppState, request: Request) -> Result<Passed, Refusal> {
    let arrived = std::time::Instant::now();
    let key = push_path(state, request.uri().path(), request.method())?;
    authenticate(state, request.headers().get(header::AUTHORIZATION), &key).await?;
    let shard = state
        .forwarder
        .shard_of(key.get("instance").unwrap_or_default());
    let path = key.path();
    if request.method() == Method::DELETE {
        if let Some(rw) = &state.remote_write {
            return Ok(Passed(rw.delete(&key, &path, arrived).await));
        }
        return forward_result(state.forwarder.delete(shard, &path).await);
    }
    let body = read_body(state, request).await?;
    let validated = validate(state, &body)?;
    if let Some(rw) = &state.remote_write {
        // No cross-group type table: a database keeps each series apart (docs/design.md).
        return Ok(Passed(
            rw.put(&key, &path, &body, &validated, arrived).await,
        ));
    }
    check_types(state, shard, &validated.families).await?;
    forward_result(state.forwarder.put(shard, &path, body).await)
}

/// Step 1: an SDK group's path (404), `PUT` or `DELETE` (405), the accepted job (403), no
/// empty label value (400).
fn push_path(state: &AppState, path: &str, method: &Method) -> Result<GroupingKey, Refusal> {
    let key = GroupingKey::from_path(path).map_err(|e| {
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
    // An empty label value cannot be told from an absent one in Prometheus, so such a group
    // could never be named by the janitor's Prometheus source; the SDK never sends one.
    if GROUP_LABELS
        .iter()
        .any(|l| key.get(l).unwrap_or_default().is_empty())
    {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_grouping_key",
            "instance, namespace and action must not be empty",
        ));
    }
    Ok(key)
}

/// Step 2: the activation's API key may act in the path's namespace (401, 403; 503 when the
/// controller cannot say). Nothing to check with `--auth none`.
async fn authenticate(
    state: &AppState,
    authorization: Option<&HeaderValue>,
    key: &GroupingKey,
) -> Result<(), Refusal> {
    let Some(auth) = &state.auth else {
        return Ok(());
    };
    let namespace = key.get("namespace").unwrap_or_default();
    match auth
        .check(authorization.map(HeaderValue::as_bytes), namespace)
        .await
    {
        Decision::Allowed => Ok(()),
        Decision::Forbidden => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden_namespace",
            format!("this API key may not push metrics of namespace `{namespace}`"),
        )),
        Decision::Unauthorized(text) => {
            Err(Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", text))
        }
        Decision::Unavailable(text) => Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "controller_unavailable",
            text,
        )),
    }
}

/// Step 3, first half: a PUT's body, uncompressed text (415), within `--max-body-bytes` (400),
/// arrived within the listener's `--body-timeout` (408).
async fn read_body(state: &AppState, request: Request) -> Result<Bytes, Refusal> {
    let headers = request.headers();
    if headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|enc| enc.as_bytes() != b"identity")
    {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            "compressed bodies are not accepted; send the text format uncompressed",
        ));
    }
    if headers.get(header::CONTENT_TYPE).is_some_and(|ct| {
        ct.as_bytes()
            .starts_with(b"application/vnd.google.protobuf")
    }) {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_format",
            "the protobuf format is not accepted; send the text format",
        ));
    }
    let too_large = || {
        let e = Invalid::TooLarge {
            max: state.max_body_bytes,
        };
        Refusal::new(StatusCode::BAD_REQUEST, e.reason(), e.to_string())
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes) {
        return Err(too_large());
    }
    axum::body::to_bytes(request.into_body(), state.max_body_bytes)
        .await
        .map_err(|e| match whisk_serve::body_timeout_in(&e) {
            Some(t) => Refusal::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", t.to_string()),
            None => too_large(),
        })
}

/// Step 3: the body is valid text format within the limits (400), by its remembered verdict
/// when its shape was accepted before.
fn validate(state: &AppState, body: &[u8]) -> Result<Arc<Validated>, Refusal> {
    state
        .verdicts
        .validate(body)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.reason(), e.to_string()))
}

/// Step 4: no family clashes with a type stored under its name or suffix (409); recorded. A
/// name new to this replica is first looked up on its shard ([`crate::first_sight`]).
async fn check_types(state: &AppState, shard: usize, families: &[Family]) -> Result<(), Refusal> {
    crate::first_sight::before_check(state, shard, families).await;
    state.families.check_and_record(families).map_err(|c| {
        let status = match c {
            Conflict::Type { .. } | Conflict::Suffix { .. } => StatusCode::CONFLICT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Refusal::new(status, c.reason(), c.to_string())
    })
}

/// Step 5's answer: the Pushgateway's, passed back, or 502 when it gave none.
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

#[cfg(test)]
mod tests;
