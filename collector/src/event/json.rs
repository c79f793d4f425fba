//! The JSON reader of [`super::parse`]: one pass over the message, the fields of the event
//! schema read straight into [`RawEnvelope`]/[`RawBody`], every other value checked for
//! JSON syntax and skipped ([`lexer`] holds JSON's grammar).
//!
//! It keeps the verdicts of the serde_json reader it replaced (tested side by side against it
//! in `event/tests.rs`): a syntax error (including a control character in a string, a lone
//! surrogate escape in a field read, a number out of range) is `not_json`; a field of the wrong
//! type, a duplicate field or a message that is not an object is `schema`. It exists because
//! serde's derived deserializer took most of an event's CPU in the collector
//! (docs/benchmarks.md, Collector).
//!
//! Keys are predicted: OpenWhisk's spray-json writes an object's keys sorted (platform reference
//! §1.6 E), so each object's [`Keys`] are listed sorted and the reader first checks whether the
//! key at the cursor is one of the next few after the last one it found. A hit costs one short
//! comparison instead of reading the key as a string and looking it up; any other order, an
//! escaped key or an unknown key takes the general path with the same verdicts.

mod lexer;
mod scan;

use std::borrow::Cow;

use lexer::{Num, Reader, Value};

use super::{CausedBy, ParseError, RawBody, RawEnvelope, schema};

/// One object's keys, sorted, each with the field it fills; `None` marks a key that is skipped
/// like any unknown key and listed only so that it is predicted.
type Keys<F> = [(&'static str, Option<F>)];

/// How many keys after the last one found a prediction tries: enough to pass over the
/// optional keys an Activation or a Metric body leaves out.
const LOOKAHEAD: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EnvelopeField {
    Body,
    EventType,
    Namespace,
    Source,
    Timestamp,
}

const ENVELOPE_KEYS: &Keys<EnvelopeField> = &[
    ("body", Some(EnvelopeField::Body)),
    ("eventType", Some(EnvelopeField::EventType)),
    ("namespace", Some(EnvelopeField::Namespace)),
    ("source", Some(EnvelopeField::Source)),
    ("subject", None),
    ("timestamp", Some(EnvelopeField::Timestamp)),
    ("userId", None),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyField {
    ActivationId,
    CausedBy,
    Conductor,
    Duration,
    InitTime,
    Kind,
    Memory,
    MetricName,
    MetricValue,
    Name,
    Size,
    StatusCode,
    UserDefinedStatusCode,
    WaitTime,
}

const BODY_KEYS: &Keys<BodyField> = &[
    ("activationId", Some(BodyField::ActivationId)),
    ("causedBy", Some(BodyField::CausedBy)),
    ("conductor", Some(BodyField::Conductor)),
    ("duration", Some(BodyField::Duration)),
    ("initTime", Some(BodyField::InitTime)),
    ("kind", Some(BodyField::Kind)),
    ("memory", Some(BodyField::Memory)),
    ("metricName", Some(BodyField::MetricName)),
    ("metricValue", Some(BodyField::MetricValue)),
    ("name", Some(BodyField::Name)),
    ("size", Some(BodyField::Size)),
    ("statusCode", Some(BodyField::StatusCode)),
    (
        "userDefinedStatusCode",
        Some(BodyField::UserDefinedStatusCode),
    ),
    ("waitTime", Some(BodyField::WaitTime)),
];

/// A failed read, boxed while it travels up the reader: the success paths' results then fit
/// in registers (an unboxed [`ParseError`] made every return go through memory).
type Fail = Box<ParseError>;

/// Reads one message (already known to be UTF-8) into the raw envelope.
pub(super) fn read(text: &str) -> Result<RawEnvelope<'_>, ParseError> {
    let mut envelope = RawEnvelope::default();
    let mut r = Reader::new(text);
    r.ws();
    match r.value().map_err(|e| *e)? {
        Value::Object => {}
        other => {
            return Err(schema(format!(
                "expected an event object, found {}",
                other.kind()
            )));
        }
    }
    r.envelope(&mut envelope).map_err(|e| *e)?;
    r.end().map_err(|e| *e)?;
    Ok(envelope)
}

/// Whether `text` starts with `key` and its closing quote, compared a word at a time (the
/// last word overlapping the one before): a key is 4 to 21 bytes long.
#[inline]
fn is_key(text: &[u8], key: &[u8]) -> bool {
    let n = key.len();
    let Some(text) = text.get(..n).filter(|_| text.get(n) == Some(&b'"')) else {
        return false;
    };
    if n < 8 {
        return match n.checked_sub(4) {
            Some(last) => word4(text, 0) == word4(key, 0) && word4(text, last) == word4(key, last),
            None => text == key,
        };
    }
    let mut at = 0;
    while at + 8 < n {
        if word8(text, at) != word8(key, at) {
            return false;
        }
        at += 8;
    }
    word8(text, n - 8) == word8(key, n - 8)
}

/// The 4 bytes of `b` from `at` (in range: checked by the caller).
#[inline]
fn word4(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// The 8 bytes of `b` from `at` (in range: checked by the caller).
#[inline]
fn word8(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

#[cold]
#[inline(never)]
fn duplicate(field: &str) -> Fail {
    Box::new(schema(format!("duplicate field `{field}`")))
}

impl<'a> Reader<'a> {
    /// Walks the members of the object at the cursor, handing each key of `keys` that names a
    /// field to `field` with the cursor on its value (which `field` must consume), and skipping
    /// every other value. A field's second occurrence is a schema error (as serde's), found
    /// before its value is read.
    fn fields<F: Copy>(
        &mut self,
        keys: &'static Keys<F>,
        mut field: impl FnMut(&mut Self, F, &'static str) -> Result<(), Fail>,
    ) -> Result<(), Fail> {
        self.expect(b'{', "expected `{`")?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        let (mut next, mut seen) = (0, 0u32);
        loop {
            let found = match self.predicted_key(keys, next) {
                Some(i) => Some(i),
                None => self.key(keys)?,
            };
            self.expect(b':', "expected `:`")?;
            self.ws();
            match found {
                Some(i) => {
                    next = i + 1;
                    let (name, target) = keys[i];
                    match target {
                        Some(_) if seen & 1 << i != 0 => return Err(duplicate(name)),
                        Some(f) => {
                            seen |= 1 << i;
                            field(self, f, name)?;
                        }
                        None => self.skip()?,
                    }
                }
                None => self.skip()?,
            }
            if !self.member_end()? {
                return Ok(());
            }
        }
    }

    /// The index in `keys` of the key at the cursor when it is, as written, one of the
    /// [`LOOKAHEAD`] keys from `next` on; the cursor is then after its closing quote.
    #[inline]
    fn predicted_key<F>(&mut self, keys: &Keys<F>, next: usize) -> Option<usize> {
        let text = self.bytes.get(self.pos + 1..)?;
        if self.bytes[self.pos] != b'"' {
            return None;
        }
        let first = *text.first()?;
        let (mut i, end) = (next, keys.len().min(next + LOOKAHEAD));
        while i < end {
            let key = keys[i].0.as_bytes();
            if key[0] == first && is_key(text, key) {
                self.pos += key.len() + 2;
                return Some(i);
            }
            i += 1;
        }
        None
    }

    /// The key at the cursor read as a string (the general path), and its index in `keys`.
    #[inline(never)]
    fn key<F>(&mut self, keys: &Keys<F>) -> Result<Option<usize>, Fail> {
        self.expect(b'"', "expected a key")?;
        let key = self.string()?;
        Ok(keys.iter().position(|(k, _)| *k == key))
    }

    /// After a member: `true` after a comma (another member follows), `false` after the
    /// object's closing brace.
    #[inline]
    fn member_end(&mut self) -> Result<bool, Fail> {
        if self.peek() != Some(b',') {
            self.ws();
        }
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                if self.peek() != Some(b'"') {
                    self.ws();
                }
                Ok(true)
            }
            Some(b'}') => {
                self.pos += 1;
                Ok(false)
            }
            None => Err(self.syntax("unexpected end of input")),
            Some(_) => Err(self.syntax("expected `,` or `}`")),
        }
    }

    fn envelope(&mut self, e: &mut RawEnvelope<'a>) -> Result<(), Fail> {
        self.fields(ENVELOPE_KEYS, |r, field, key| {
            match field {
                EnvelopeField::EventType => e.event_type = r.string_or_null(key)?,
                EnvelopeField::Source => e.source = r.string_or_null(key)?,
                EnvelopeField::Namespace => e.namespace = r.string_or_null(key)?,
                EnvelopeField::Timestamp => e.timestamp = r.int(key, false)?,
                EnvelopeField::Body => match r.value()? {
                    Value::Null => e.body = None,
                    // Filled in place: the body is most of the envelope's bytes.
                    Value::Object => r.body(e.body.insert(RawBody::default()))?,
                    other => return Err(expected(key, "an object", &other)),
                },
            }
            Ok(())
        })
    }

    fn body(&mut self, b: &mut RawBody<'a>) -> Result<(), Fail> {
        self.fields(BODY_KEYS, |r, field, key| {
            match field {
                BodyField::MetricName => b.metric_name = r.string_or_null(key)?,
                BodyField::MetricValue => b.metric_value = r.int(key, false)?,
                BodyField::Name => b.name = r.string_or_null(key)?,
                BodyField::ActivationId => b.activation_id = r.string_or_null(key)?,
                BodyField::StatusCode => b.status_code = r.int(key, false)?,
                BodyField::Duration => b.duration = r.millis(key)?,
                BodyField::WaitTime => b.wait_time = r.millis(key)?,
                BodyField::InitTime => b.init_time = r.millis(key)?,
                BodyField::Kind => b.kind = r.string_or_null(key)?,
                BodyField::Conductor => {
                    b.conductor = match r.value()? {
                        Value::Null => None,
                        Value::Bool(v) => Some(v),
                        other => return Err(expected(key, "a boolean", &other)),
                    }
                }
                BodyField::Memory => b.memory = r.int(key, false)?,
                BodyField::CausedBy => {
                    b.caused_by = match r.value()? {
                        Value::Null => None,
                        Value::Bool(v) => Some(CausedBy::Flag(v)),
                        Value::Str(s) => Some(CausedBy::Name(s)),
                        other => return Err(expected(key, "a string or a boolean", &other)),
                    }
                }
                BodyField::Size => b.size = r.int(key, false)?,
                BodyField::UserDefinedStatusCode => {
                    b.user_defined_status_code = r.int(key, true)?
                }
            }
            Ok(())
        })
    }

    #[inline(always)]
    fn string_or_null(&mut self, field: &str) -> Result<Option<Cow<'a, str>>, Fail> {
        if self.peek() == Some(b'"') {
            self.pos += 1;
            let start = self.pos;
            return match self.plain_string() {
                Some(s) => Ok(Some(Cow::Borrowed(s))),
                None => self.string_slow(start).map(Some),
            };
        }
        match self.value()? {
            Value::Null => Ok(None),
            Value::Str(s) => Ok(Some(s)),
            other => Err(expected(field, "a string", &other)),
        }
    }

    /// An integer (an integral float counts; with `allow_str`, a numeric string too).
    #[inline(always)]
    fn int(&mut self, field: &str, allow_str: bool) -> Result<Option<i64>, Fail> {
        if let Some((v, len)) = self.plain_unsigned() {
            if let Ok(v) = i64::try_from(v) {
                self.pos += len;
                return Ok(Some(v));
            }
        }
        self.any_int(field, allow_str)
    }

    /// [`Reader::int`] beyond a plain unsigned integer.
    #[inline(never)]
    fn any_int(&mut self, field: &str, allow_str: bool) -> Result<Option<i64>, Fail> {
        let what = if allow_str {
            "an integer or a numeric string"
        } else {
            "an integer"
        };
        match self.value()? {
            Value::Null => Ok(None),
            Value::Num(Num::Signed(v)) => Ok(Some(v)),
            Value::Num(Num::Unsigned(v)) => i64::try_from(v)
                .map(Some)
                .map_err(|_| Box::new(schema(format!("`{field}`: integer {v} out of range")))),
            // An integral float (e.g. `256.0`) is still an integer; anything else is not.
            Value::Num(Num::Float(v)) if v.fract() == 0.0 && v.abs() < 9.0e15 =>
            {
                #[allow(clippy::cast_possible_truncation)]
                Ok(Some(v as i64))
            }
            Value::Str(s) if allow_str => s
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| Box::new(schema(format!("`{field}`: {s:?} is not {what}")))),
            other => Err(expected(field, what, &other)),
        }
    }

    /// Milliseconds: negative, zero or non-finite count as 0.
    #[allow(clippy::cast_precision_loss)]
    #[inline(always)]
    fn millis(&mut self, field: &str) -> Result<Option<f64>, Fail> {
        if let Some((v, len)) = self.plain_unsigned() {
            self.pos += len;
            return Ok(Some(v as f64));
        }
        match self.value()? {
            Value::Null => Ok(None),
            Value::Num(Num::Unsigned(v)) => Ok(Some(v as f64)),
            Value::Num(Num::Signed(_)) => Ok(Some(0.0)),
            Value::Num(Num::Float(v)) => Ok(Some(if v > 0.0 && v.is_finite() { v } else { 0.0 })),
            other => Err(expected(field, "a number of milliseconds", &other)),
        }
    }
}

/// A field of the wrong type.
#[cold]
#[inline(never)]
fn expected(field: &str, what: &str, found: &Value<'_>) -> Fail {
    Box::new(schema(format!(
        "`{field}`: expected {what}, found {}",
        found.kind()
    )))
}

#[cfg(test)]
mod tests {
    use super::{BODY_KEYS, ENVELOPE_KEYS, Keys};

    fn sorted_and_distinct<F>(keys: &Keys<F>) -> bool {
        keys.windows(2).all(|w| w[0].0 < w[1].0) && keys.len() <= 32
    }

    #[test]
    fn key_tables_are_sorted_as_openwhisk_writes_them_and_fit_the_seen_mask() {
        assert!(sorted_and_distinct(ENVELOPE_KEYS));
        assert!(sorted_and_distinct(BODY_KEYS));
    }
}
