//! The janitor's Prometheus source: instant queries to the Prometheus that scrapes every shard.
//!
//! Listing a Pushgateway costs it a full encode of its store (~8 s of its CPU at 10 000 SDK
//! groups) and checking its `/metrics` a full gather (~2.6 s). Prometheus already scrapes every
//! shard with `honor_labels: true` and holds every group's `push_time_seconds` with the grouping
//! labels on it, and the `up` of every shard's scrape: asking it only for the stale groups and
//! for `up` costs milliseconds on both sides. Each query is a form POST to `/api/v1/query` with
//! a timeout (also handed to Prometheus as `timeout`) and a cap on the answer's size; the answer
//! is parsed into typed structs keeping only each series' label map and value. An answer that
//! is not a complete `success` vector (error, `warnings` = partial data, too large, timed out)
//! is an error: the janitor then falls back to the listing for that round and deletes nothing
//! on the strength of it.
//!
//! The round that asks these queries and acts on the answers is [`super::prometheus_round`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// At most this many stale groups per round (`bottomk`, oldest first); the rest go next round.
/// Each is DELETEd on every shard: 5 000 groups over 3 shards is ~15 000 DELETEs, ~1.5 s on
/// 2 cores (docs/benchmarks.md), and at one round a minute still 300 000 groups an hour.
pub(super) const MAX_GROUPS_PER_ROUND: usize = 5_000;

/// An answer larger than this is refused (5 000 series of SDK groups are ~1.3 MB).
const MAX_ANSWER_BYTES: u64 = 32 << 20;

/// Time allowed for one query, answer read included.
const QUERY_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest prefix of an error answer kept for the log.
const ERROR_BODY_CHARS: usize = 300;

/// A client of the Prometheus HTTP API (cheap to clone).
#[derive(Debug, Clone)]
pub struct PrometheusClient {
    client: reqwest::Client,
    query_url: String,
    timeout: Duration,
    max_bytes: u64,
}

/// One series of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSample {
    /// Its labels, sorted by name, `__name__` left out.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

impl VectorSample {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a query gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    /// No answer (connection refused, TLS, reset).
    #[error("POST {url} failed: {message}")]
    Unreachable {
        /// Query URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The exchange took longer than its timeout.
    #[error("POST {url}: no complete answer after {secs:.1} s")]
    TimedOut {
        /// Query URL.
        url: String,
        /// Seconds waited.
        secs: f64,
    },
    /// Prometheus answered with an error status.
    #[error("POST {url} answered {status}: {body}")]
    Status {
        /// Query URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Start of the answer.
        body: String,
    },
    /// The answer is larger than the cap.
    #[error("POST {url}: answer larger than {max_bytes} bytes")]
    TooLarge {
        /// Query URL.
        url: String,
        /// The cap.
        max_bytes: u64,
    },
    /// The answer is not a complete instant vector (bad JSON, `status` not `success`, another
    /// result type, or `warnings`: partial data).
    #[error("POST {url}: {message}")]
    BadAnswer {
        /// Query URL.
        url: String,
        /// What is wrong with it.
        message: String,
    },
}

impl PrometheusError {
    /// The `reason` label of `whisk_collector_janitor_prometheus_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::TimedOut { .. } => "timeout",
            Self::Status { .. } => "status",
            Self::TooLarge { .. } => "too_large",
            Self::BadAnswer { .. } => "bad_answer",
        }
    }

    /// Every `reason` label value.
    pub const REASONS: [&'static str; 5] = [
        "unreachable",
        "timeout",
        "status",
        "too_large",
        "bad_answer",
    ];
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

impl PrometheusClient {
    /// A client of the Prometheus at `base` (e.g. `http://prometheus:9090`, a path prefix
    /// such as `/prometheus` kept) with the default timeout and answer cap.
    pub fn new(base: &reqwest::Url) -> Result<Self, crate::error::Error> {
        Self::with_limits(base, QUERY_TIMEOUT, MAX_ANSWER_BYTES)
    }

    /// [`PrometheusClient::new`] with a given query timeout and answer cap.
    pub fn with_limits(
        base: &reqwest::Url,
        timeout: Duration,
        max_bytes: u64,
    ) -> Result<Self, crate::error::Error> {
        let client = whisk_remote_write::http_client()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(crate::error::Error::HttpClient)?;
        Ok(Self {
            client,
            query_url: format!("{}/api/v1/query", base.as_str().trim_end_matches('/')),
            timeout,
            max_bytes,
        })
    }

    /// The query endpoint.
    pub fn query_url(&self) -> &str {
        &self.query_url
    }

    /// Runs the instant query `promql` now; the series of the answer's vector.
    pub async fn query(&self, promql: &str) -> Result<Vec<VectorSample>, PrometheusError> {
        let start = Instant::now();
        match tokio::time::timeout(self.timeout, self.exchange(promql)).await {
            Ok(answer) => answer,
            Err(_) => Err(PrometheusError::TimedOut {
                url: self.query_url.clone(),
                secs: start.elapsed().as_secs_f64(),
            }),
        }
    }

    async fn exchange(&self, promql: &str) -> Result<Vec<VectorSample>, PrometheusError> {
        let url = || self.query_url.clone();
        // Prometheus stops evaluating a little before we stop waiting.
        let eval = self.timeout.saturating_sub(self.timeout / 10).as_millis();
        let body = format!("query={}&timeout={eval}ms", form_encode(promql));
        let mut resp = self
            .client
            .post(&self.query_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| PrometheusError::Unreachable {
                url: url(),
                message: e.to_string(),
            })?;
        let status = resp.status();
        if resp.content_length().is_some_and(|n| n > self.max_bytes) {
            return Err(PrometheusError::TooLarge {
                url: url(),
                max_bytes: self.max_bytes,
            });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| PrometheusError::Unreachable {
                url: url(),
                message: format!("reading the answer: {e}"),
            })?
        {
            if (bytes.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(PrometheusError::TooLarge {
                    url: url(),
                    max_bytes: self.max_bytes,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(PrometheusError::Status {
                url: url(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(ERROR_BODY_CHARS)
                    .collect(),
            });
        }
        parse_vector(&bytes).map_err(|message| PrometheusError::BadAnswer {
            url: url(),
            message,
        })
    }
}

/// Reads an `/api/v1/query` answer: the series of a complete `success` vector, or why not.
pub(crate) fn parse_vector(body: &[u8]) -> Result<Vec<VectorSample>, String> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| format!("not Prometheus's JSON: {e}"))?;
    if answer.status != "success" {
        return Err(format!(
            "status {:?} ({}: {})",
            answer.status,
            answer.error_type.unwrap_or_default(),
            answer.error.unwrap_or_default()
        ));
    }
    if !answer.warnings.is_empty() {
        return Err(format!(
            "partial answer (warnings: {})",
            answer.warnings.join("; ")
        ));
    }
    let data = answer.data.ok_or("no `data`")?;
    if data.result_type != "vector" {
        return Err(format!("result type {:?}, not a vector", data.result_type));
    }
    data.result
        .into_iter()
        .map(|s| {
            let value = s
                .value
                .1
                .trim()
                .parse::<f64>()
                .map_err(|e| format!("sample value {:?} is not a number: {e}", s.value.1))?;
            let labels = s
                .metric
                .into_iter()
                .filter(|(k, _)| k != "__name__")
                .collect();
            Ok(VectorSample { labels, value })
        })
        .collect()
}

/// `s` as a PromQL double-quoted string literal.
pub(super) fn promql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `s` matched literally inside a PromQL (RE2) regular expression.
pub(super) fn regex_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `application/x-www-form-urlencoded` encoding of a value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot HTTP server on a free loopback port that answers `head` and then `body`
    /// chunks of `chunk` bytes until `total` bytes went out (or the reader went away).
    fn one_answer(head: String, total: usize, chunk: usize) -> reqwest::Url {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url =
            reqwest::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        std::thread::spawn(move || {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            if s.write_all(head.as_bytes()).is_err() {
                return;
            }
            let mut sent = 0;
            while sent < total {
                let n = chunk.min(total - sent);
                let piece = if head.contains("chunked") {
                    format!("{n:x}\r\n{}\r\n", "x".repeat(n))
                } else {
                    "x".repeat(n)
                };
                if s.write_all(piece.as_bytes()).is_err() {
                    return;
                }
                sent += n;
            }
            let _ = s.write_all(b"0\r\n\r\n");
        });
        url
    }

    #[tokio::test]
    async fn an_answer_over_the_cap_is_refused_whether_announced_or_streamed() {
        let cap = 10_000u64;
        let announced = one_answer(
            "HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n".to_string(),
            20_000,
            4096,
        );
        let streamed = one_answer(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
            1 << 20,
            4096,
        );
        for url in [announced, streamed] {
            let client = PrometheusClient::with_limits(&url, Duration::from_secs(10), cap).unwrap();
            let answer = client.query("up").await;
            assert!(
                matches!(answer, Err(PrometheusError::TooLarge { max_bytes, .. }) if max_bytes == cap),
                "{url}: {answer:?}"
            );
        }
    }

    #[test]
    fn reads_the_label_maps_and_values_of_a_vector_without_the_name() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"push_time_seconds","job":"sdk","instance":"a","namespace":"guest"},"value":[1700000000.5,"1699990000"]},
            {"metric":{"job":"sdk","instance":"b"},"value":[1700000000.5,"12.5"]}]}}"#;
        let v = parse_vector(body).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0].labels,
            vec![
                ("instance".to_string(), "a".to_string()),
                ("job".to_string(), "sdk".to_string()),
                ("namespace".to_string(), "guest".to_string())
            ]
        );
        assert_eq!(v[0].value, 1_699_990_000.0);
        assert_eq!(v[1].label("instance"), Some("b"));
    }

    #[test]
    fn an_error_a_partial_answer_or_another_type_is_refused() {
        for (body, says) in [
            (
                &br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#[..],
                "parse error",
            ),
            (
                br#"{"status":"success","warnings":["partial"],"data":{"resultType":"vector","result":[]}}"#,
                "partial",
            ),
            (
                br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
                "matrix",
            ),
            (br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#, "not a number"),
            (b"<html>", "not Prometheus's JSON"),
        ] {
            let err = parse_vector(body).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn quotes_and_escapes_for_promql() {
        assert_eq!(promql_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(regex_literal("127.0.0.1:9091"), r"127\.0\.0\.1:9091");
        assert_eq!(regex_literal("[::1]:80"), r"\[::1\]:80");
        assert_eq!(form_encode("a b{c=\"d\"}"), "a%20b%7Bc%3D%22d%22%7D");
    }
}
