//! The JSON reader of [`super::parse`]: one pass over the message, the fields of the event
//! schema read straight into [`RawEnvelope`]/[`RawBody`], every other value checked for
//! JSON syntax and skipped.
//!
//! It keeps the verdicts of the serde_json reader it replaced (tested side by side against it
//! in `event/tests.rs`): a syntax error (including a control character in a string, a lone
//! surrogate escape in a field read, a number out of range) is `not_json`; a field of the wrong
//! type, a duplicate field or a message that is not an object is `schema`. Skipped values nest
//! without recursion. It exists because serde's derived deserializer took most of an event's
//! CPU in the collector (docs/benchmarks.md, Collector).

use std::borrow::Cow;

use super::{CausedBy, InvalidReason, ParseError, RawBody, RawEnvelope, schema};

/// A JSON number as serde_json hands it to a visitor.
#[derive(Debug, Clone, Copy)]
enum Num {
    /// An integer ≥ 0 that fits a `u64`.
    Unsigned(u64),
    /// A negative integer that fits an `i64`.
    Signed(i64),
    /// Anything else (fraction, exponent, or an integer out of the ranges above).
    Float(f64),
}

/// A scalar value, or the start of a container (not consumed).
#[derive(Debug)]
enum Value<'a> {
    Null,
    Bool(bool),
    Str(Cow<'a, str>),
    Num(Num),
    Object,
    Array,
}

impl Value<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Str(_) => "a string",
            Self::Num(_) => "a number",
            Self::Object => "an object",
            Self::Array => "an array",
        }
    }
}

/// Reads one message (already known to be UTF-8) into the raw envelope.
pub(super) fn read(text: &str) -> Result<RawEnvelope<'_>, ParseError> {
    let mut r = Reader {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    r.ws();
    match r.value()? {
        Value::Object => {}
        other => {
            return Err(schema(format!(
                "expected an event object, found {}",
                other.kind()
            )));
        }
    }
    let envelope = r.envelope()?;
    r.end()?;
    Ok(envelope)
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

/// Marks a field read; a second occurrence is a schema error (as serde's), found before its
/// value is read.
#[inline]
fn first(seen: &mut bool, field: &str) -> Result<(), ParseError> {
    if std::mem::replace(seen, true) {
        return Err(duplicate(field));
    }
    Ok(())
}

#[cold]
#[inline(never)]
fn duplicate(field: &str) -> ParseError {
    schema(format!("duplicate field `{field}`"))
}

impl<'a> Reader<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    #[cold]
    #[inline(never)]
    fn syntax(&self, what: &str) -> ParseError {
        ParseError::new(
            InvalidReason::NotJson,
            format!("{what} at byte {}", self.pos),
        )
    }

    /// Only whitespace may follow the value.
    fn end(&mut self) -> Result<(), ParseError> {
        self.ws();
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.syntax("trailing characters")),
        }
    }

    #[inline]
    fn expect(&mut self, b: u8, what: &str) -> Result<(), ParseError> {
        self.ws();
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else if self.peek().is_none() {
            Err(self.syntax("unexpected end of input"))
        } else {
            Err(self.syntax(what))
        }
    }

    /// Walks the members of the object at the cursor, handing each key to `member` with the
    /// cursor on its value (which `member` must consume).
    fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, &str) -> Result<(), ParseError>,
    ) -> Result<(), ParseError> {
        self.expect(b'{', "expected `{`")?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.expect(b'"', "expected a key")?;
            let key = self.string()?;
            self.expect(b':', "expected `:`")?;
            self.ws();
            member(self, &key)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                None => return Err(self.syntax("unexpected end of input")),
                Some(_) => return Err(self.syntax("expected `,` or `}`")),
            }
            self.ws();
        }
    }

    fn envelope(&mut self) -> Result<RawEnvelope<'a>, ParseError> {
        let mut e = RawEnvelope::default();
        let mut seen = [false; 5];
        self.object(|r, key| {
            match key {
                "eventType" => {
                    first(&mut seen[0], key)?;
                    e.event_type = r.string_or_null(key)?;
                }
                "source" => {
                    first(&mut seen[1], key)?;
                    e.source = r.string_or_null(key)?;
                }
                "namespace" => {
                    first(&mut seen[2], key)?;
                    e.namespace = r.string_or_null(key)?;
                }
                "timestamp" => {
                    first(&mut seen[3], key)?;
                    e.timestamp = r.int(key, false)?;
                }
                "body" => {
                    first(&mut seen[4], key)?;
                    match r.value()? {
                        Value::Null => e.body = None,
                        // Filled in place: the body is most of the envelope's bytes.
                        Value::Object => r.body(e.body.insert(RawBody::default()))?,
                        other => return Err(expected(key, "an object", &other)),
                    }
                }
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(e)
    }

    fn body(&mut self, b: &mut RawBody<'a>) -> Result<(), ParseError> {
        let mut seen = [false; 14];
        self.object(|r, key| {
            let i = match key {
                "metricName" => 0,
                "metricValue" => 1,
                "name" => 2,
                "activationId" => 3,
                "statusCode" => 4,
                "duration" => 5,
                "waitTime" => 6,
                "initTime" => 7,
                "kind" => 8,
                "conductor" => 9,
                "memory" => 10,
                "causedBy" => 11,
                "size" => 12,
                "userDefinedStatusCode" => 13,
                _ => return r.skip(),
            };
            first(&mut seen[i], key)?;
            match i {
                0 => b.metric_name = r.string_or_null(key)?,
                1 => b.metric_value = r.int(key, false)?,
                2 => b.name = r.string_or_null(key)?,
                3 => b.activation_id = r.string_or_null(key)?,
                4 => b.status_code = r.int(key, false)?,
                5 => b.duration = r.millis(key)?,
                6 => b.wait_time = r.millis(key)?,
                7 => b.init_time = r.millis(key)?,
                8 => b.kind = r.string_or_null(key)?,
                9 => {
                    b.conductor = match r.value()? {
                        Value::Null => None,
                        Value::Bool(v) => Some(v),
                        other => return Err(expected(key, "a boolean", &other)),
                    }
                }
                10 => b.memory = r.int(key, false)?,
                11 => {
                    b.caused_by = match r.value()? {
                        Value::Null => None,
                        Value::Bool(v) => Some(CausedBy::Flag(v)),
                        Value::Str(s) => Some(CausedBy::Name(s)),
                        other => return Err(expected(key, "a string or a boolean", &other)),
                    }
                }
                12 => b.size = r.int(key, false)?,
                _ => b.user_defined_status_code = r.int(key, true)?,
            }
            Ok(())
        })
    }

    #[inline]
    fn string_or_null(&mut self, field: &str) -> Result<Option<Cow<'a, str>>, ParseError> {
        if self.peek() == Some(b'"') {
            self.pos += 1;
            return self.string().map(Some);
        }
        match self.value()? {
            Value::Null => Ok(None),
            Value::Str(s) => Ok(Some(s)),
            other => Err(expected(field, "a string", &other)),
        }
    }

    /// An integer (an integral float counts; with `allow_str`, a numeric string too).
    #[inline]
    fn int(&mut self, field: &str, allow_str: bool) -> Result<Option<i64>, ParseError> {
        let what = if allow_str {
            "an integer or a numeric string"
        } else {
            "an integer"
        };
        match self.scalar()? {
            Value::Null => Ok(None),
            Value::Num(Num::Signed(v)) => Ok(Some(v)),
            Value::Num(Num::Unsigned(v)) => i64::try_from(v)
                .map(Some)
                .map_err(|_| schema(format!("`{field}`: integer {v} out of range"))),
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
                .map_err(|_| schema(format!("`{field}`: {s:?} is not {what}"))),
            other => Err(expected(field, what, &other)),
        }
    }

    /// Milliseconds: negative, zero or non-finite count as 0.
    #[allow(clippy::cast_precision_loss)]
    #[inline]
    fn millis(&mut self, field: &str) -> Result<Option<f64>, ParseError> {
        match self.scalar()? {
            Value::Null => Ok(None),
            Value::Num(Num::Unsigned(v)) => Ok(Some(v as f64)),
            Value::Num(Num::Signed(_)) => Ok(Some(0.0)),
            Value::Num(Num::Float(v)) => Ok(Some(if v > 0.0 && v.is_finite() { v } else { 0.0 })),
            other => Err(expected(field, "a number of milliseconds", &other)),
        }
    }

    /// [`Reader::value`], a plain unsigned integer (what numeric fields mostly hold) read
    /// without the general dispatch.
    #[inline]
    fn scalar(&mut self) -> Result<Value<'a>, ParseError> {
        match plain_unsigned(&self.bytes[self.pos..]) {
            Some((v, len)) => {
                self.pos += len;
                Ok(Value::Num(Num::Unsigned(v)))
            }
            None => self.value(),
        }
    }

    /// The value at the cursor: a scalar is consumed, a container only recognised.
    #[inline]
    fn value(&mut self) -> Result<Value<'a>, ParseError> {
        match self.peek() {
            None => Err(self.syntax("unexpected end of input")),
            Some(b'{') => Ok(Value::Object),
            Some(b'[') => Ok(Value::Array),
            Some(b'"') => {
                self.pos += 1;
                self.string().map(Value::Str)
            }
            Some(b'-' | b'0'..=b'9') => self.number().map(Value::Num),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(_) => Err(self.syntax("expected a value")),
        }
    }

    #[inline]
    fn literal(&mut self, word: &str, v: Value<'a>) -> Result<Value<'a>, ParseError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(self.syntax("expected a value"))
        }
    }

    /// Skips the value at the cursor: any JSON, its syntax checked as serde_json checks what
    /// it ignores; nesting costs a byte of `open` per level, never recursion.
    fn skip(&mut self) -> Result<(), ParseError> {
        let mut open: Vec<u8> = Vec::new();
        loop {
            self.ws();
            if let Some(b @ (b'{' | b'[')) = self.peek() {
                self.pos += 1;
                self.ws();
                let close = if b == b'{' { b'}' } else { b']' };
                if self.peek() == Some(close) {
                    self.pos += 1;
                } else {
                    open.push(b);
                    if b == b'{' {
                        self.skip_key()?;
                    }
                    continue;
                }
            } else if self.peek() == Some(b'"') {
                self.pos += 1;
                self.skip_string()?;
            } else if let Some(b'-' | b'0'..=b'9') = self.peek() {
                // Grammar only: serde_json ignores a number without converting it.
                let _ = self.number_text()?;
            } else {
                let _ = self.value()?;
            }
            // After a value: close what ends here, or go on after a comma.
            loop {
                let Some(&b) = open.last() else {
                    return Ok(());
                };
                self.ws();
                let close = if b == b'{' { b'}' } else { b']' };
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        if b == b'{' {
                            self.skip_key()?;
                        }
                        break;
                    }
                    Some(c) if c == close => {
                        self.pos += 1;
                        let _ = open.pop();
                    }
                    None => return Err(self.syntax("unexpected end of input")),
                    Some(_) => return Err(self.syntax("expected `,` or the container's end")),
                }
            }
        }
    }

    /// A skipped member's key and its colon.
    fn skip_key(&mut self) -> Result<(), ParseError> {
        self.expect(b'"', "expected a key")?;
        self.skip_string()?;
        self.expect(b':', "expected `:`")
    }

    /// A skipped string after its opening quote: escapes are checked for form only (a lone
    /// surrogate passes, as in serde_json).
    fn skip_string(&mut self) -> Result<(), ParseError> {
        loop {
            self.pos += plain_run(&self.bytes[self.pos..]);
            match self.peek() {
                None => return Err(self.syntax("unexpected end of input in a string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 1
                        }
                        Some(b'u') => {
                            self.pos += 1;
                            let _ = self.hex4()?;
                        }
                        None => return Err(self.syntax("unexpected end of input in a string")),
                        Some(_) => return Err(self.syntax("invalid escape")),
                    }
                }
                Some(0..=0x1f) => return Err(self.syntax("control character in a string")),
                Some(_) => self.pos += 1,
            }
        }
    }

    /// A number at the cursor, JSON's grammar checked, as serde_json hands it to a visitor.
    #[inline]
    fn number(&mut self) -> Result<Num, ParseError> {
        if let Some((v, len)) = plain_unsigned(&self.bytes[self.pos..]) {
            self.pos += len;
            return Ok(Num::Unsigned(v));
        }
        self.number_slow()
    }

    /// [`Reader::number`] beyond a plain unsigned integer.
    #[inline(never)]
    fn number_slow(&mut self) -> Result<Num, ParseError> {
        let (text, integral) = self.number_text()?;
        if integral {
            let negative = text.starts_with('-');
            let digits = if negative { &text[1..] } else { text };
            if let Ok(u) = digits.parse::<u64>() {
                if !negative {
                    return Ok(Num::Unsigned(u));
                }
                // `-0` is the float -0.0, as serde_json reads it.
                if let Some(i) = 0i64.checked_sub_unsigned(u).filter(|_| u != 0) {
                    return Ok(Num::Signed(i));
                }
            }
        }
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Num::Float(f)),
            _ => Err(self.syntax("number out of range")),
        }
    }

    /// The text of the number at the cursor (its grammar checked, not its range) and whether
    /// it is an integer (no fraction, no exponent).
    fn number_text(&mut self) -> Result<(&'a str, bool), ParseError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.syntax("invalid number")),
        }
        if let Some(b'0'..=b'9') = self.peek() {
            return Err(self.syntax("invalid number"));
        }
        let mut integral = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.some_digits()?;
            integral = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.some_digits()?;
            integral = false;
        }
        Ok((&self.text[start..self.pos], integral))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), ParseError> {
        match self.peek() {
            Some(b'0'..=b'9') => {
                self.digits();
                Ok(())
            }
            _ => Err(self.syntax("invalid number")),
        }
    }

    /// The string whose opening quote was just consumed: borrowed when it has no escapes.
    #[inline]
    fn string(&mut self) -> Result<Cow<'a, str>, ParseError> {
        let start = self.pos;
        let end = start + plain_run(&self.bytes[start..]);
        if self.bytes.get(end) == Some(&b'"') {
            self.pos = end + 1;
            return Ok(Cow::Borrowed(&self.text[start..end]));
        }
        self.pos = end;
        self.string_slow(start)
    }

    /// [`Reader::string`] from its first escape, control character or the end of input
    /// (at the cursor), `start` being where the string's text began.
    #[cold]
    #[inline(never)]
    fn string_slow(&mut self, start: usize) -> Result<Cow<'a, str>, ParseError> {
        match self.peek() {
            None => return Err(self.syntax("unexpected end of input in a string")),
            Some(b'\\') => {}
            Some(_) => return Err(self.syntax("control character in a string")),
        }
        let mut owned = String::from(&self.text[start..self.pos]);
        loop {
            match self.peek() {
                None => return Err(self.syntax("unexpected end of input in a string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(owned));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(&mut owned)?;
                }
                Some(0..=0x1f) => return Err(self.syntax("control character in a string")),
                Some(_) => {
                    let run = self.pos;
                    self.pos += plain_run(&self.bytes[run..]);
                    owned.push_str(&self.text[run..self.pos]);
                }
            }
        }
    }

    /// One escape after its backslash, decoded onto `out`.
    fn escape(&mut self, out: &mut String) -> Result<(), ParseError> {
        let c = match self.peek() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.pos += 1;
                let c = self.unicode_escape()?;
                out.push(c);
                return Ok(());
            }
            None => return Err(self.syntax("unexpected end of input in a string")),
            Some(_) => return Err(self.syntax("invalid escape")),
        };
        self.pos += 1;
        out.push(c);
        Ok(())
    }

    /// The character of `\uXXXX` (a surrogate pair takes a second escape).
    fn unicode_escape(&mut self) -> Result<char, ParseError> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if !self.bytes[self.pos..].starts_with(b"\\u") {
                    return Err(self.syntax("lone leading surrogate in hex escape"));
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.syntax("lone leading surrogate in hex escape"));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.syntax("unexpected end of hex escape")),
            c => c,
        };
        char::from_u32(code).ok_or_else(|| self.syntax("invalid unicode code point"))
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                None => return Err(self.syntax("unexpected end of input in a string")),
                Some(_) => return Err(self.syntax("invalid escape")),
            };
            v = v << 4 | u32::from(d);
            self.pos += 1;
        }
        Ok(v)
    }
}

/// Length of the run of `bytes` up to the first byte a string cannot hold as is: a quote, a
/// backslash or a control character (all of `bytes` when there is none). Eight bytes a step:
/// strings are most of an event's bytes.
#[inline]
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let mut i = 0;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        // A byte of `x` is zero iff its high bit is set in `(x - ONES) & !x` (lowest hit exact).
        let zero_in = |x: u64| x.wrapping_sub(ONES) & !x;
        let hits = (w.wrapping_sub(ONES * 0x20) & !w)
            | zero_in(w ^ (ONES * u64::from(b'"')))
            | zero_in(w ^ (ONES * u64::from(b'\\')));
        let hits = hits & HIGH;
        if hits != 0 {
            return i + hits.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    i + bytes[i..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(bytes.len() - i)
}

/// A non-negative integer of at most 19 digits at the start of `bytes` that JSON's grammar
/// accepts and that ends there (no fraction, no exponent): its value and length. Anything
/// else is left to the general number reader.
#[inline]
fn plain_unsigned(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    let mut len = 0;
    for &b in bytes.iter().take(19) {
        if !b.is_ascii_digit() {
            break;
        }
        v = v * 10 + u64::from(b - b'0');
        len += 1;
    }
    let leading_zero = len > 1 && bytes[0] == b'0';
    let ends = !matches!(bytes.get(len), Some(b'.' | b'e' | b'E' | b'0'..=b'9'));
    (len > 0 && !leading_zero && ends).then_some((v, len))
}

/// A field of the wrong type.
#[cold]
#[inline(never)]
fn expected(field: &str, what: &str, found: &Value<'_>) -> ParseError {
    schema(format!(
        "`{field}`: expected {what}, found {}",
        found.kind()
    ))
}
