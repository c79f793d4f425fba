//! The push path's step order, socket-free: requests handed to the router with
//! `tower::ServiceExt::oneshot`. Each case fails in exactly one step, or in two where the
//! earlier must answer. The forwarding step needs a Pushgateway: `tests/gateway.rs` covers it.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt as _;

use super::*;
use crate::validate::FamilyType;

const JOB: &str = "openwhisk_actions";

/// A gateway whose family table knows `jobs` as a counter; `auth` asks a controller nobody
/// listens for (only checks that need no answer are made here). Nothing is ever forwarded.
fn app(auth: bool) -> Router {
    let telemetry = Telemetry::new();
    let nowhere = reqwest::Url::parse("http://127.0.0.1:9").unwrap();
    let families = Arc::new(FamilyTable::new(100));
    let generation = families.begin_resync();
    families.replace(
        HashMap::from([("jobs".to_string(), FamilyType::Counter)]),
        generation,
    );
    let second = Duration::from_secs(1);
    let auth = auth.then(|| {
        crate::auth::Authenticator::new(&nowhere, second, second, 10, telemetry.clone()).unwrap()
    });
    router(Arc::new(AppState {
        job: JOB.to_string(),
        auth,
        families,
        forwarder: Forwarder::new(&[nowhere], second, second, telemetry.clone()).unwrap(),
        telemetry: telemetry.clone(),
        max_body_bytes: 1024,
        verdicts: Verdicts::new(500, 0, telemetry),
        remote_write: None,
    }))
}

fn group(job: &str) -> String {
    GroupingKey::new(job)
        .with("instance", "c1")
        .with("namespace", "guest")
        .with("action", "hello")
        .path()
}

/// The answer's status and its one-line text.
async fn send(app: Router, method: &str, path: &str, body: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::from(body.to_string()))
        .unwrap();
    let answer = app.oneshot(request).await.unwrap();
    let status = answer.status();
    let text = axum::body::to_bytes(answer.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&text).into_owned())
}

#[tokio::test]
async fn a_path_that_is_not_an_sdk_group_is_404_whatever_the_method() {
    for (method, path) in [
        ("GET", "/elsewhere"),
        ("POST", "/metrics/job/openwhisk_actions/instance/c1"),
        (
            "PUT",
            "/metrics/job/openwhisk_actions/namespace/guest/instance/c1/action/a",
        ),
    ] {
        let (status, text) = send(app(true), method, path, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {text}");
    }
}

#[tokio::test]
async fn a_method_other_than_put_or_delete_is_405_before_the_job_is_looked_at() {
    let request = Request::builder()
        .method("POST")
        .uri(group("openwhisk_platform"))
        .body(Body::empty())
        .unwrap();
    let answer = app(true).oneshot(request).await.unwrap();
    assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.headers()[header::ALLOW], "PUT, DELETE");
}

#[tokio::test]
async fn another_job_is_403_before_authentication() {
    let (status, text) = send(app(true), "PUT", &group("openwhisk_platform"), "x 1\n").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("openwhisk_platform"), "{text}");
}

#[tokio::test]
async fn a_push_without_credentials_is_401_before_its_body_is_read() {
    let request = Request::builder()
        .method("PUT")
        .uri(group(JOB))
        .body(Body::from("not the text format"))
        .unwrap();
    let answer = app(true).oneshot(request).await.unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.headers()[header::WWW_AUTHENTICATE],
        "Basic realm=\"whisk-gateway\""
    );
}

#[tokio::test]
async fn an_invalid_body_is_400_and_a_body_over_the_limit_too() {
    let (status, text) = send(app(false), "PUT", &group(JOB), "jobs{a=\"1\" 1\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let big = format!("# HELP x {}\nx 1\n", "h".repeat(2000));
    let (status, text) = send(app(false), "PUT", &group(JOB), &big).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("--max-body-bytes"), "{text}");
}

#[tokio::test]
async fn a_family_clashing_with_the_stored_type_is_409_after_validation() {
    let body = "# TYPE jobs gauge\njobs 1\n";
    let (status, text) = send(app(false), "PUT", &group(JOB), body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert_eq!(
        text.trim(),
        "family `jobs` is a counter in another group; this push has it as a gauge"
    );
    // An invalid body with the clash in it is refused by validation first.
    let (status, _) = send(
        app(false),
        "PUT",
        &group(JOB),
        "# TYPE jobs gauge\njobs x\n",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
