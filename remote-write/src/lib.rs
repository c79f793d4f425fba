//! # whisk-remote-write
//!
//! Prometheus remote write 1.0, as whisk-metrics writes it (the gateway's remote-write backend
//! and the collector's remote-write sink both use this crate):
//!
//! - [`proto`]: the `WriteRequest` messages (`prost`), exemplars (field 3) included;
//! - [`encode`] / [`decode`]: protobuf plus snappy **block** compression (`snap::raw`, not the
//!   framed format); [`GroupWrite`]: the same bytes for one group's series, written straight
//!   from borrowed labels (the gateway's per-push path);
//! - [`translate()`]: a text-format body → the series a scrape of the Pushgateway would store;
//! - [`HEADERS`]: the spec's request headers; [`STALE_NAN`]: the stale marker;
//! - [`Client`]: one POST per write with a timeout per attempt, retries of 5xx and 429 with
//!   jittered backoff and `Retry-After` honoured, all inside one total bound; other 4xx are not
//!   retried; the answer's body is read to at most [`MAX_ANSWER_BYTES`]. A caller with its own
//!   retry loop (the gateway's batcher) drives [`Client::attempt`] and [`Backoff`] itself.
//!
//! ```
//! use whisk_remote_write::{Label, Sample, TimeSeries, WriteRequest, decode, encode};
//!
//! let request = WriteRequest {
//!     timeseries: vec![TimeSeries {
//!         labels: vec![Label::new("__name__", "up"), Label::new("job", "a")],
//!         samples: vec![Sample { value: 1.0, timestamp: 1_700_000_000_000 }],
//!         exemplars: vec![],
//!     }],
//! };
//! let body = encode(&request);
//! assert_eq!(decode(&body).unwrap(), request);
//! ```
// Product code: no function over 100 lines (clippy.toml); tests and benches are exempt.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod client;
mod grouped;
pub mod proto;
mod tls;
pub mod translate;

pub use client::{Attempt, Backoff, Client, ClientConfig, ClientError, MAX_ANSWER_BYTES, Outcome};
pub use grouped::GroupWrite;
pub use proto::{Exemplar, Label, Sample, TimeSeries, WriteRequest};
pub use tls::http_client;
pub use translate::{SeriesLabels, Translated, Untranslatable, translate};

use prost::Message as _;

/// The float that marks a series as ended (a Prometheus "stale marker"): a NaN with these bits.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The stale marker as a value (compare with [`is_stale`], never with `==`: it is a NaN).
pub const STALE_NAN: f64 = f64::from_bits(STALE_NAN_BITS);

/// The version this crate speaks, sent as `X-Prometheus-Remote-Write-Version`.
pub const PROTOCOL_VERSION: &str = "0.1.0";

/// The request headers remote write 1.0 requires (a `User-Agent` is set by the [`Client`]).
pub const HEADERS: [(&str, &str); 3] = [
    ("Content-Encoding", "snappy"),
    ("Content-Type", "application/x-protobuf"),
    ("X-Prometheus-Remote-Write-Version", PROTOCOL_VERSION),
];

/// Whether `value` is the stale marker (by its bits).
pub fn is_stale(value: f64) -> bool {
    value.to_bits() == STALE_NAN_BITS
}

/// A request as sent: protobuf, then snappy block compression.
pub fn encode(request: &WriteRequest) -> Vec<u8> {
    compress(&request.encode_to_vec())
}

/// Snappy block compression of an encoded (protobuf) request.
pub fn compress(raw: &[u8]) -> Vec<u8> {
    // Compressing a slice into a buffer of `max_compress_len` cannot fail; if it ever did, the
    // receiver would refuse the empty body with a 400 that says so.
    snap::raw::Encoder::new()
        .compress_vec(raw)
        .unwrap_or_default()
}

/// Why a body is not a remote-write request.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not snappy block format.
    #[error("the body is not snappy-compressed (block format): {0}")]
    Snappy(#[from] snap::Error),
    /// Larger than the caller allows once decompressed.
    #[error("the body decompresses to {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// Its decompressed size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not a `WriteRequest`.
    #[error("the body is not a protobuf WriteRequest: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

/// Reads a body written by [`encode`] (or any 1.0 sender), decompressed to at most 64 MiB.
pub fn decode(body: &[u8]) -> Result<WriteRequest, DecodeError> {
    decode_within(body, 64 * 1024 * 1024)
}

/// Reads a body, refusing one that decompresses to more than `max` bytes.
pub fn decode_within(body: &[u8], max: usize) -> Result<WriteRequest, DecodeError> {
    let size = snap::raw::decompress_len(body)?;
    if size > max {
        return Err(DecodeError::TooLarge { size, max });
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body)?;
    Ok(WriteRequest::decode(raw.as_slice())?)
}

/// Headers the protocol sets itself; a configured extra header may not be one of them.
pub const PROTOCOL_HEADERS: [&str; 5] = [
    "content-type",
    "content-encoding",
    "content-length",
    "host",
    "x-prometheus-remote-write-version",
];

/// Reads a header name for an extra header (`--remote-write-tenant-header`).
pub fn parse_header_name(s: &str) -> Result<reqwest::header::HeaderName, String> {
    let name = reqwest::header::HeaderName::from_bytes(s.trim().as_bytes())
        .map_err(|_| format!("{s:?} is not a header name"))?;
    if PROTOCOL_HEADERS.contains(&name.as_str()) {
        return Err(format!("{s:?} is set by the remote-write protocol itself"));
    }
    Ok(name)
}

/// Reads an extra header given as `NAME=VALUE` (`--remote-write-header`).
pub fn parse_header(
    s: &str,
) -> Result<(reqwest::header::HeaderName, reqwest::header::HeaderValue), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| "expected NAME=VALUE (e.g. X-Scope-OrgID=platform)".to_string())?;
    let name = parse_header_name(name)?;
    let value = reqwest::header::HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of header {name} is not a valid header value"))?;
    Ok((name, value))
}

/// Sorts a series' labels by name and drops those with an empty value (a scrape stores no
/// empty label). Where a name is repeated, the first one wins: put the overriding labels first.
pub fn normalize_labels(labels: &mut Vec<Label>) {
    labels.retain(|l| !l.value.is_empty());
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels.dedup_by(|later, earlier| later.name == earlier.name);
}

/// One series of one sample at `timestamp` (ms): `labels` under the `grouping` key, whose labels
/// override pushed ones of the same name (as a scrape with `honor_labels: true` stores them),
/// then [`normalize_labels`]. The gateway's pushes and the collector's platform group both
/// become series so.
pub fn grouped_series(
    grouping: &[Label],
    labels: &[Label],
    value: f64,
    timestamp: i64,
) -> TimeSeries {
    let mut all: Vec<Label> = Vec::with_capacity(labels.len() + grouping.len());
    all.extend(grouping.iter().cloned());
    all.extend(labels.iter().cloned());
    normalize_labels(&mut all);
    TimeSeries {
        labels: all,
        samples: vec![Sample { value, timestamp }],
        exemplars: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stale_marker_has_the_prometheus_bits_and_is_a_nan() {
        assert!(STALE_NAN.is_nan());
        assert!(is_stale(STALE_NAN));
        assert!(!is_stale(f64::NAN));
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label::new("__name__", "x")],
                samples: vec![Sample {
                    value: STALE_NAN,
                    timestamp: 5,
                }],
                exemplars: vec![],
            }],
        };
        let back = decode(&encode(&request)).unwrap();
        assert!(is_stale(back.timeseries[0].samples[0].value));
    }

    #[test]
    fn the_body_is_snappy_block_format_of_the_protobuf() {
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label::new("__name__", "a"), Label::new("b", "c")],
                samples: vec![Sample {
                    value: 2.5,
                    timestamp: 1000,
                }],
                exemplars: vec![Exemplar {
                    labels: vec![Label::new("activation_id", "0f")],
                    value: 0.4,
                    timestamp: 999,
                }],
            }],
        };
        let body = encode(&request);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert_eq!(raw, request.encode_to_vec());
        // Field 1 (timeseries), wire type 2: the first byte of the message is 0x0a.
        assert_eq!(raw[0], 0x0a);
        assert_eq!(decode(&body).unwrap(), request);
    }

    #[test]
    fn decoding_refuses_what_is_not_a_request() {
        assert!(matches!(decode(b"not snappy"), Err(DecodeError::Snappy(_))));
        let big = snap::raw::Encoder::new()
            .compress_vec(&[0u8; 4096])
            .unwrap();
        assert!(matches!(
            decode_within(&big, 100),
            Err(DecodeError::TooLarge { size: 4096, .. })
        ));
        let junk = snap::raw::Encoder::new().compress_vec(&[0xff; 8]).unwrap();
        assert!(matches!(decode(&junk), Err(DecodeError::Protobuf(_))));
    }

    #[test]
    fn labels_are_sorted_without_empty_values_and_the_first_of_a_name_wins() {
        let mut labels = vec![
            Label::new("job", "override"),
            Label::new("__name__", "m"),
            Label::new("empty", ""),
            Label::new("job", "pushed"),
            Label::new("a", "1"),
        ];
        normalize_labels(&mut labels);
        let pairs: Vec<(&str, &str)> = labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(pairs, [("__name__", "m"), ("a", "1"), ("job", "override")]);
    }
}
