//! A group's write encoded as it is built: one sample per series, every series under the same
//! grouping key and timestamp, written straight from borrowed labels into one reused buffer.
//!
//! The bytes equal [`crate::encode`] of the [`crate::grouped_series`] of the same arguments
//! (tested), without the owned `TimeSeries` of each series: a push of 90 series under a
//! 4-label key would otherwise allocate ~1 600 strings.

use crate::{Label, STALE_NAN};

/// Wire types of the fields written here (protobuf encoding).
const LEN: u8 = 2;
const FIXED64: u8 = 1;
const VARINT: u8 = 0;

/// A `WriteRequest` being written, one series at a time.
#[derive(Debug)]
pub struct GroupWrite<'a> {
    /// The grouping key's labels, sorted by name, each with its `Label` field already encoded
    /// (every series repeats them: they are copied, not encoded again).
    grouping: Vec<(&'a str, Vec<u8>)>,
    timestamp: i64,
    raw: Vec<u8>,
    /// One series' label fields, before its length is known (reused).
    labels: Vec<u8>,
}

impl<'a> GroupWrite<'a> {
    /// A write whose every series carries `grouping` (its labels override pushed ones of the
    /// same name; empty values dropped) and one sample at `timestamp` (ms).
    pub fn new(grouping: &'a [Label], timestamp: i64) -> Self {
        let mut sorted: Vec<&Label> = grouping.iter().filter(|l| !l.value.is_empty()).collect();
        // Stable: of two grouping labels with one name, the first wins, as in normalize_labels.
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        sorted.dedup_by(|later, earlier| later.name == earlier.name);
        let grouping = sorted
            .into_iter()
            .map(|l| {
                let mut field = Vec::with_capacity(field_len(label_len(l)));
                label_field(&mut field, l);
                (l.name.as_str(), field)
            })
            .collect();
        Self {
            grouping,
            timestamp,
            raw: Vec::with_capacity(16 * 1024),
            labels: Vec::with_capacity(512),
        }
    }

    /// Adds a series: `labels` — sorted by name, unique, no empty value, as
    /// [`crate::translate()`] and [`crate::normalize_labels`] leave them — under the grouping key.
    pub fn series(&mut self, labels: &[Label], value: f64) {
        debug_assert!(labels.windows(2).all(|w| w[0].name < w[1].name));
        // The label fields, merged by name; the grouping key's wins a tie.
        let out = &mut self.labels;
        out.clear();
        let mut g = self.grouping.iter().peekable();
        for l in labels.iter().filter(|l| !l.value.is_empty()) {
            while let Some((_, field)) = g.next_if(|(name, _)| *name < l.name.as_str()) {
                out.extend_from_slice(field);
            }
            if let Some((_, field)) = g.next_if(|(name, _)| *name == l.name.as_str()) {
                out.extend_from_slice(field);
            } else {
                label_field(out, l);
            }
        }
        for (_, field) in g {
            out.extend_from_slice(field);
        }
        let sample = sample_len(value, self.timestamp);
        key(&mut self.raw, 1, LEN);
        varint(&mut self.raw, (out.len() + field_len(sample)) as u64);
        self.raw.extend_from_slice(out);
        key(&mut self.raw, 2, LEN);
        varint(&mut self.raw, sample as u64);
        // proto3: a field at its default value is not written (as prost does).
        if value != 0.0 {
            key(&mut self.raw, 1, FIXED64);
            self.raw.extend_from_slice(&value.to_bits().to_le_bytes());
        }
        if self.timestamp != 0 {
            key(&mut self.raw, 2, VARINT);
            varint(&mut self.raw, self.timestamp as u64);
        }
    }

    /// Adds the stale marker of a series (it ends at this write's timestamp).
    pub fn stale(&mut self, labels: &[Label]) {
        self.series(labels, STALE_NAN);
    }

    /// The request as sent: protobuf, then snappy block compression.
    pub fn finish(self) -> Vec<u8> {
        crate::compress(&self.raw)
    }

    /// The protobuf `WriteRequest`, uncompressed. The concatenation of such requests is one
    /// request with all their series (a repeated field), to be [`crate::compress`]ed.
    pub fn into_raw(self) -> Vec<u8> {
        self.raw
    }
}

/// A `TimeSeries.labels` field: its key, length and the label's name and value fields.
fn label_field(buf: &mut Vec<u8>, l: &Label) {
    key(buf, 1, LEN);
    varint(buf, label_len(l) as u64);
    string_field(buf, 1, &l.name);
    string_field(buf, 2, &l.value);
}

fn label_len(l: &Label) -> usize {
    string_field_len(&l.name) + string_field_len(&l.value)
}

fn string_field_len(s: &str) -> usize {
    if s.is_empty() { 0 } else { field_len(s.len()) }
}

/// A length-delimited field's bytes after its key: the length's varint and the payload.
fn field_len(payload: usize) -> usize {
    1 + varint_len(payload as u64) + payload
}

fn sample_len(value: f64, timestamp: i64) -> usize {
    let v = if value != 0.0 { 1 + 8 } else { 0 };
    let t = if timestamp != 0 {
        1 + varint_len(timestamp as u64)
    } else {
        0
    };
    v + t
}

fn string_field(buf: &mut Vec<u8>, tag: u8, s: &str) {
    if !s.is_empty() {
        key(buf, tag, LEN);
        varint(buf, s.len() as u64);
        buf.extend_from_slice(s.as_bytes());
    }
}

/// A field key (tags here are below 16: one byte).
fn key(buf: &mut Vec<u8>, tag: u8, wire_type: u8) {
    buf.push((tag << 3) | wire_type);
}

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    // 7 bits a byte; at least one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{WriteRequest, encode, grouped_series};

    fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
        pairs.iter().map(|(n, v)| Label::new(*n, *v)).collect()
    }

    #[test]
    fn the_bytes_equal_the_prost_encoding_of_the_grouped_series() {
        let grouping = labels(&[
            ("job", "openwhisk_actions"),
            ("instance", "0f"),
            ("namespace", "ns"),
            ("action", "orders"),
        ]);
        let series = [
            (labels(&[("__name__", "a_total"), ("kind", "x")]), 3.5),
            // a pushed `job` is overridden by the grouping key's
            (
                labels(&[("__name__", "b"), ("job", "pushed"), ("z", "1")]),
                0.0,
            ),
            (labels(&[("Upper", "u"), ("__name__", "c")]), f64::NAN),
            (labels(&[("__name__", &"long".repeat(100))]), -1e300),
            (labels(&[("__name__", "d")]), STALE_NAN),
        ];
        for ts in [0, 1, 1_700_000_000_123, -5] {
            let mut write = GroupWrite::new(&grouping, ts);
            for (l, v) in &series {
                write.series(l, *v);
            }
            let expected = WriteRequest {
                timeseries: series
                    .iter()
                    .map(|(l, v)| grouped_series(&grouping, l, *v, ts))
                    .collect(),
            };
            assert_eq!(write.finish(), encode(&expected), "timestamp {ts}");
        }
    }

    #[test]
    fn varint_lengths_match_the_encoding() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::MAX, 1 << 63] {
            let mut buf = Vec::new();
            varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v), "{v}");
        }
    }
}
