//! The remote-write 1.0 messages (Prometheus `prompb/types.proto`, `remote.proto`), written by
//! hand with `prost`'s derive: no `protoc` at build time for five messages.
//!
//! Only what a 1.0 sender writes: `WriteRequest.timeseries` (field 1; 2 and 3 are reserved in
//! the 1.0 text) and, in a `TimeSeries`, labels, samples and exemplars (field 3, which
//! Prometheus stores with `--enable-feature=exemplar-storage`). Native histograms (field 4)
//! are not written.

/// One request: the series it carries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series, each with its samples in timestamp order.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// One series: its labels (`__name__` included, sorted by name, no empty value) and samples.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Sorted by name, no duplicates, no empty names or values.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// In timestamp order.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Exemplars of this series (kept by receivers that store them).
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
}

/// A label pair.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Label {
    /// Its name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its value.
    #[prost(string, tag = "2")]
    pub value: String,
}

impl Label {
    /// A label `name="value"`.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A sample: a value at a time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Its value ([`crate::STALE_NAN`] ends the series).
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// An exemplar: labels (e.g. the activation id), a value and a time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    /// Its labels (names and values together at most 128 characters).
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Its value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}
