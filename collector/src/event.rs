//! OpenWhisk `EventMessage`s as published on the Kafka `events` topic, for every schema
//! generation since 2018 (see docs/design.md and the platform reference §1).
//!
//! [`parse`] reads one message value in one pass ([`json`]). Strings are borrowed from the input
//! when they contain no JSON escapes, so parsing allocates nothing for a typical event.

use std::borrow::Cow;

use whisk_grouping::ActionName;

mod json;

/// One event of the `events` topic: the envelope plus an Activation or a Metric body.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMessage<'a> {
    /// The emitter, e.g. `invoker0` or `controller0` (empty when absent).
    pub source: Cow<'a, str>,
    /// The invoking (initiating) namespace.
    pub namespace: Cow<'a, str>,
    /// Epoch milliseconds when the producer built the message, if present.
    pub timestamp_ms: Option<i64>,
    /// The body.
    pub body: Body<'a>,
}

/// The body of an event; a body is a [`Metric`] iff it has the key `metricName`.
#[derive(Debug, Clone, PartialEq)]
pub enum Body<'a> {
    /// One finished activation.
    Activation(Activation<'a>),
    /// A throttle or concurrency metric from a controller or scheduler.
    Metric(Metric),
}

/// An Activation body. Durations are in milliseconds, never negative.
#[derive(Debug, Clone, PartialEq)]
pub struct Activation<'a> {
    /// `name`: the fully qualified action name, `ns/action` or `ns/pkg/action`.
    pub name: Cow<'a, str>,
    /// Byte range of the namespace in `name` (a leading `/` is skipped).
    ns_end: usize,
    ns_start: usize,
    /// The activation id (absent before April 2020).
    pub activation_id: Option<Cow<'a, str>>,
    /// OpenWhisk status code; 0..=3 are known, anything else is reported as `unknown`.
    pub status_code: i64,
    /// Run time in ms (init + run on cold starts).
    pub duration_ms: f64,
    /// Time from the controller's transaction start to init/run, in ms.
    pub wait_time_ms: f64,
    /// Init time in ms; > 0 means a cold start.
    pub init_time_ms: f64,
    /// Runtime kind, e.g. `nodejs:20` or `blackbox`.
    pub kind: Cow<'a, str>,
    /// Whether this is a conductor composition.
    pub conductor: bool,
    /// Memory limit in MB (0 when unknown).
    pub memory: u64,
    /// `causedBy` (`"sequence"` for sequence components; older events carry a bool).
    pub caused_by: Option<CausedBy<'a>>,
    /// Response size, when the emitter reported it.
    pub size: Option<u64>,
    /// Status code the action set in its result, when present.
    pub user_defined_status_code: Option<i64>,
}

impl Activation<'_> {
    /// Namespace label: the first path segment of `name`.
    pub fn namespace(&self) -> &str {
        &self.name[self.ns_start..self.ns_end]
    }

    /// Action label: the rest of `name` after the namespace (may contain `/` for packages).
    pub fn action(&self) -> &str {
        &self.name[self.ns_end + 1..]
    }

    /// True when the activation needed an init (a cold start).
    pub fn is_cold_start(&self) -> bool {
        self.init_time_ms > 0.0
    }

    /// GB-seconds of this activation: duration (s) × memory limit (MB) / 1024, the unit
    /// serverless platforms bill in.
    pub fn gb_seconds(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let gb = self.memory as f64 / 1024.0;
        (self.duration_ms / 1000.0) * gb
    }

    /// The `caused_by` label of `openwhisk_action_caused_activations_total`: `conductor` for a
    /// conductor composition, else `causedBy` (`sequence` for the old boolean form); `None`
    /// for an activation nobody caused.
    pub fn caused_by_label(&self) -> Option<&str> {
        if self.conductor {
            return Some("conductor");
        }
        match &self.caused_by {
            Some(CausedBy::Name(name)) if !name.is_empty() => Some(name),
            Some(CausedBy::Flag(true)) => Some("sequence"),
            _ => None,
        }
    }
}

/// `causedBy` as written by the two schema generations.
#[derive(Debug, Clone, PartialEq)]
pub enum CausedBy<'a> {
    /// Pre-2018-09 boolean form.
    Flag(bool),
    /// Current form, e.g. `"sequence"`.
    Name(Cow<'a, str>),
}

/// A Metric body.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Which metric.
    pub kind: MetricKind,
    /// `metricValue` (1 for rate limits; in-flight count for ConcurrentInvocations).
    pub value: i64,
}

/// The known `metricName`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A namespace exceeded its concurrent invocation limit.
    ConcurrentRateLimit,
    /// A namespace exceeded its per-minute invocation limit.
    TimedRateLimit,
    /// In-flight invocations of a namespace as seen by one controller.
    ConcurrentInvocations,
}

/// Why a message is not a valid event; [`InvalidReason::as_str`] is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidReason {
    /// The value is not UTF-8.
    NotUtf8,
    /// The value is not JSON.
    NotJson,
    /// JSON, but a required field is missing or has the wrong type.
    Schema,
    /// `eventType` is neither `Activation` nor `Metric`.
    UnknownEventType,
    /// `metricName` is not one of the known metrics.
    UnknownMetricName,
    /// The message has no value (or only whitespace).
    Empty,
}

impl InvalidReason {
    /// All reasons, in label order.
    pub const ALL: [InvalidReason; 6] = [
        Self::NotUtf8,
        Self::NotJson,
        Self::Schema,
        Self::UnknownEventType,
        Self::UnknownMetricName,
        Self::Empty,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotUtf8 => "not_utf8",
            Self::NotJson => "not_json",
            Self::Schema => "schema",
            Self::UnknownEventType => "unknown_event_type",
            Self::UnknownMetricName => "unknown_metric_name",
            Self::Empty => "empty",
        }
    }
}

/// A message that could not be read as an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid event ({}): {detail}", reason.as_str())]
pub struct ParseError {
    /// The class of problem (the metric label).
    pub reason: InvalidReason,
    /// Human-readable detail for the log line.
    pub detail: String,
}

impl ParseError {
    fn new(reason: InvalidReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// Parses one Kafka message value into an event.
pub fn parse(bytes: &[u8]) -> Result<EventMessage<'_>, ParseError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::new(
            InvalidReason::Empty,
            "message has no value",
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ParseError::new(InvalidReason::NotUtf8, format!("value is not UTF-8: {e}")))?;
    json::read(text)?.validate()
}

fn schema(detail: impl Into<String>) -> ParseError {
    ParseError::new(InvalidReason::Schema, detail)
}

/// The envelope's fields as read, before [`RawEnvelope::validate`].
#[derive(Default)]
struct RawEnvelope<'a> {
    event_type: Option<Cow<'a, str>>,
    source: Option<Cow<'a, str>>,
    namespace: Option<Cow<'a, str>>,
    timestamp: Option<i64>,
    body: Option<RawBody<'a>>,
}

/// Every field either body kind can have; which kind it is follows from `metricName`.
#[derive(Default)]
struct RawBody<'a> {
    metric_name: Option<Cow<'a, str>>,
    metric_value: Option<i64>,
    name: Option<Cow<'a, str>>,
    activation_id: Option<Cow<'a, str>>,
    status_code: Option<i64>,
    duration: Option<f64>,
    wait_time: Option<f64>,
    init_time: Option<f64>,
    kind: Option<Cow<'a, str>>,
    conductor: Option<bool>,
    memory: Option<i64>,
    caused_by: Option<CausedBy<'a>>,
    size: Option<i64>,
    user_defined_status_code: Option<i64>,
}

impl<'a> RawEnvelope<'a> {
    fn validate(self) -> Result<EventMessage<'a>, ParseError> {
        let event_type = self
            .event_type
            .ok_or_else(|| schema("missing field `eventType`"))?;
        if event_type != "Activation" && event_type != "Metric" {
            return Err(ParseError::new(
                InvalidReason::UnknownEventType,
                format!("unknown eventType {event_type:?}"),
            ));
        }
        let namespace = self
            .namespace
            .ok_or_else(|| schema("missing field `namespace`"))?;
        let raw = self.body.ok_or_else(|| schema("missing field `body`"))?;
        let body = match raw.metric_name {
            Some(_) => Body::Metric(raw.into_metric()?),
            None => Body::Activation(raw.into_activation()?),
        };
        Ok(EventMessage {
            source: self.source.unwrap_or(Cow::Borrowed("")),
            namespace,
            timestamp_ms: self.timestamp,
            body,
        })
    }
}

impl<'a> RawBody<'a> {
    fn into_metric(self) -> Result<Metric, ParseError> {
        let name = self.metric_name.unwrap_or_default();
        let kind = match name.as_ref() {
            "ConcurrentRateLimit" => MetricKind::ConcurrentRateLimit,
            "TimedRateLimit" => MetricKind::TimedRateLimit,
            "ConcurrentInvocations" => MetricKind::ConcurrentInvocations,
            other => {
                return Err(ParseError::new(
                    InvalidReason::UnknownMetricName,
                    format!("unknown metricName {other:?}"),
                ));
            }
        };
        let value = self
            .metric_value
            .ok_or_else(|| schema("missing field `body.metricValue`"))?;
        Ok(Metric { kind, value })
    }

    fn into_activation(self) -> Result<Activation<'a>, ParseError> {
        let name = self
            .name
            .ok_or_else(|| schema("missing field `body.name`"))?;
        let status_code = self
            .status_code
            .ok_or_else(|| schema("missing field `body.statusCode`"))?;
        let kind = self
            .kind
            .ok_or_else(|| schema("missing field `body.kind`"))?;
        // The one split rule of the workspace; a name without namespace and action is invalid.
        let parsed = ActionName::parse(&name)
            .ok_or_else(|| schema(format!("body.name {name:?} is not `namespace/action`")))?;
        let ns_start = usize::from(name.starts_with('/'));
        let ns_end = ns_start + parsed.namespace().len();
        let memory = self.memory.unwrap_or(0);
        let memory = u64::try_from(memory)
            .map_err(|_| schema(format!("body.memory {memory} is negative")))?;
        let size = match self.size {
            Some(s) => {
                Some(u64::try_from(s).map_err(|_| schema(format!("body.size {s} is negative")))?)
            }
            None => None,
        };
        Ok(Activation {
            name,
            ns_start,
            ns_end,
            activation_id: self.activation_id,
            status_code,
            duration_ms: self.duration.unwrap_or(0.0),
            wait_time_ms: self.wait_time.unwrap_or(0.0),
            init_time_ms: self.init_time.unwrap_or(0.0),
            kind,
            conductor: self.conductor.unwrap_or(false),
            memory,
            caused_by: self.caused_by,
            size,
            user_defined_status_code: self.user_defined_status_code,
        })
    }
}

#[cfg(test)]
mod serde_reference;
#[cfg(test)]
mod tests;
