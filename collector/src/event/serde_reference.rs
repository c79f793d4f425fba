//! The serde_json reader [`super::json`] replaced, kept as the reference its verdicts are
//! tested against (`event/tests.rs`).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::{CausedBy, EventMessage, InvalidReason, ParseError, RawBody, RawEnvelope};

/// What [`super::parse`] answered before [`super::json`].
pub(super) fn parse(bytes: &[u8]) -> Result<EventMessage<'_>, ParseError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::new(
            InvalidReason::Empty,
            "message has no value",
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ParseError::new(InvalidReason::NotUtf8, format!("value is not UTF-8: {e}")))?;
    let raw: SerdeEnvelope<'_> = serde_json::from_str(text).map_err(|e| {
        let reason = match e.classify() {
            serde_json::error::Category::Data => InvalidReason::Schema,
            _ => InvalidReason::NotJson,
        };
        ParseError::new(reason, e.to_string())
    })?;
    RawEnvelope::from(raw).validate()
}

#[derive(Deserialize)]
struct SerdeEnvelope<'a> {
    #[serde(default, borrow, rename = "eventType", deserialize_with = "de_opt_cow")]
    event_type: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "de_opt_cow")]
    source: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "de_opt_cow")]
    namespace: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "de_opt_int")]
    timestamp: Option<i64>,
    #[serde(borrow)]
    body: Option<SerdeBody<'a>>,
}

/// Every field either body kind can have; which kind it is follows from `metricName`.
#[derive(Deserialize)]
struct SerdeBody<'a> {
    #[serde(
        default,
        borrow,
        rename = "metricName",
        deserialize_with = "de_opt_cow"
    )]
    metric_name: Option<Cow<'a, str>>,
    #[serde(default, rename = "metricValue", deserialize_with = "de_opt_int")]
    metric_value: Option<i64>,
    #[serde(default, borrow, deserialize_with = "de_opt_cow")]
    name: Option<Cow<'a, str>>,
    #[serde(
        default,
        borrow,
        rename = "activationId",
        deserialize_with = "de_opt_cow"
    )]
    activation_id: Option<Cow<'a, str>>,
    #[serde(default, rename = "statusCode", deserialize_with = "de_opt_int")]
    status_code: Option<i64>,
    #[serde(default, deserialize_with = "de_opt_millis")]
    duration: Option<f64>,
    #[serde(default, rename = "waitTime", deserialize_with = "de_opt_millis")]
    wait_time: Option<f64>,
    #[serde(default, rename = "initTime", deserialize_with = "de_opt_millis")]
    init_time: Option<f64>,
    #[serde(default, borrow, deserialize_with = "de_opt_cow")]
    kind: Option<Cow<'a, str>>,
    conductor: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_int")]
    memory: Option<i64>,
    #[serde(
        default,
        borrow,
        rename = "causedBy",
        deserialize_with = "de_caused_by"
    )]
    caused_by: Option<CausedBy<'a>>,
    #[serde(default, deserialize_with = "de_opt_int")]
    size: Option<i64>,
    #[serde(
        default,
        rename = "userDefinedStatusCode",
        deserialize_with = "de_opt_int_or_str"
    )]
    user_defined_status_code: Option<i64>,
}

impl<'a> From<SerdeEnvelope<'a>> for RawEnvelope<'a> {
    fn from(e: SerdeEnvelope<'a>) -> Self {
        Self {
            event_type: e.event_type,
            source: e.source,
            namespace: e.namespace,
            timestamp: e.timestamp,
            body: e.body.map(|b| RawBody {
                metric_name: b.metric_name,
                metric_value: b.metric_value,
                name: b.name,
                activation_id: b.activation_id,
                status_code: b.status_code,
                duration: b.duration,
                wait_time: b.wait_time,
                init_time: b.init_time,
                kind: b.kind,
                conductor: b.conductor,
                memory: b.memory,
                caused_by: b.caused_by,
                size: b.size,
                user_defined_status_code: b.user_defined_status_code,
            }),
        }
    }
}

// ---- lenient scalar readers -------------------------------------------------------------

struct IntVisitor {
    allow_str: bool,
}

impl Visitor<'_> for IntVisitor {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.allow_str {
            f.write_str("an integer or a numeric string")
        } else {
            f.write_str("an integer")
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        i64::try_from(v)
            .map(Some)
            .map_err(|_| E::custom(format!("integer {v} out of range")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // An integral float (e.g. `256.0`) is still an integer; anything else is not.
        if v.fract() == 0.0 && v.abs() < 9.0e15 {
            #[allow(clippy::cast_possible_truncation)]
            Ok(Some(v as i64))
        } else {
            Err(E::invalid_type(de::Unexpected::Float(v), &self))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if self.allow_str {
            v.trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
        } else {
            Err(E::invalid_type(de::Unexpected::Str(v), &self))
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

fn de_opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_any(IntVisitor { allow_str: false })
}

fn de_opt_int_or_str<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_any(IntVisitor { allow_str: true })
}

struct MillisVisitor;

impl Visitor<'_> for MillisVisitor {
    type Value = Option<f64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number of milliseconds")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        #[allow(clippy::cast_precision_loss)]
        Ok(Some(if v <= 0 { 0.0 } else { v as f64 }))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        #[allow(clippy::cast_precision_loss)]
        Ok(Some(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(if v > 0.0 && v.is_finite() { v } else { 0.0 }))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

fn de_opt_millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    d.deserialize_any(MillisVisitor)
}

struct CowVisitor;

impl<'de> Visitor<'de> for CowVisitor {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_owned())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// `Option<Cow<str>>` that borrows from the input when the string has no escapes (serde's own
/// `Option<Cow>` impl always allocates).
fn de_opt_cow<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    d.deserialize_any(CowVisitor)
}

struct CausedByVisitor;

impl<'de> Visitor<'de> for CausedByVisitor {
    type Value = Option<CausedBy<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a boolean")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(CausedBy::Flag(v)))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(CausedBy::Name(Cow::Borrowed(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(CausedBy::Name(Cow::Owned(v.to_owned()))))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

fn de_caused_by<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CausedBy<'de>>, D::Error> {
    d.deserialize_any(CausedByVisitor)
}
