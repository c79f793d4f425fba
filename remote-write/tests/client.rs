//! The client against a scripted HTTP peer: what is retried, for how long, what is not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use whisk_remote_write::{Client, ClientConfig, ClientError};

/// A peer answering request i with `script[i]` (the last one repeated); counts requests.
async fn peer(script: Vec<&'static str>) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1/write", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let seen = Arc::clone(&seen);
            let script = script.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    // One request per read is enough for these small bodies.
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let i = seen.fetch_add(1, Ordering::SeqCst);
                    let head = script[i.min(script.len() - 1)];
                    let reply = format!("{head}\r\ncontent-length: 12\r\n\r\nfirst line\n\n");
                    if socket.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, count)
}

fn client(url: &str, bound: Duration) -> Client {
    Client::new(ClientConfig {
        url: url.parse().unwrap(),
        headers: vec![],
        total_bound: bound,
        user_agent: "test".into(),
    })
    .unwrap()
}

#[tokio::test]
async fn server_errors_and_429_are_retried_until_acknowledged() {
    let (url, count) = peer(vec![
        "HTTP/1.1 503 Unavailable",
        "HTTP/1.1 429 Too Many",
        "HTTP/1.1 204 No Content",
    ])
    .await;
    let outcome = client(&url, Duration::from_secs(2))
        .send(vec![1, 2, 3], &[], || true)
        .await
        .unwrap();
    assert_eq!(outcome.attempts, 3);
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn another_4xx_is_not_retried_and_reports_the_first_line() {
    let (url, count) = peer(vec!["HTTP/1.1 400 Bad Request"]).await;
    let err = client(&url, Duration::from_secs(2))
        .send(vec![1], &[], || true)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ClientError::Refused {
            status: 400,
            message: "first line".into()
        }
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn retries_end_within_the_total_bound() {
    let (url, count) = peer(vec!["HTTP/1.1 500 Internal"]).await;
    let client = client(&url, Duration::from_millis(150));
    let started = Instant::now();
    let err = client.send(vec![1], &[], || true).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, ClientError::Unavailable { .. }), "{err}");
    assert!(count.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn a_retry_after_beyond_the_bound_gives_up_at_once_and_one_within_is_waited() {
    let (url, count) = peer(vec!["HTTP/1.1 429 Slow down\r\nretry-after: 5"]).await;
    let slow = client(&url, Duration::from_millis(500));
    let started = Instant::now();
    let err = slow.send(vec![1], &[], || true).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Unavailable { attempts: 1, .. }),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_millis(400));
    assert_eq!(count.load(Ordering::SeqCst), 1);

    let (url, count) = peer(vec![
        "HTTP/1.1 503 Later\r\nretry-after: 1",
        "HTTP/1.1 200 OK",
    ])
    .await;
    let started = Instant::now();
    client(&url, Duration::from_secs(3))
        .send(vec![1], &[], || true)
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_write_no_longer_wanted_is_not_sent_again() {
    let (url, count) = peer(vec!["HTTP/1.1 503 Unavailable"]).await;
    let asked = AtomicUsize::new(0);
    let err = client(&url, Duration::from_secs(2))
        .send(vec![1], &[], || asked.fetch_add(1, Ordering::SeqCst) == 0)
        .await
        .unwrap_err();
    assert_eq!(err, ClientError::Superseded);
    assert_eq!(count.load(Ordering::SeqCst), 1);
}
