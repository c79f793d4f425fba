//! JSON's grammar for [`super`]: the [`Reader`] over one message, its scalars, strings and
//! numbers read as serde_json hands them to a visitor, and any value skipped with its syntax
//! checked. Skipped values nest without recursion.

use std::borrow::Cow;

use super::super::{InvalidReason, ParseError};
use super::Fail;
use super::scan::{plain_run, plain_unsigned};

/// A JSON number as serde_json hands it to a visitor.
#[derive(Debug, Clone, Copy)]
pub(super) enum Num {
    /// An integer ≥ 0 that fits a `u64`.
    Unsigned(u64),
    /// A negative integer that fits an `i64`.
    Signed(i64),
    /// Anything else (fraction, exponent, or an integer out of the ranges above).
    Float(f64),
}

/// A scalar value, or the start of a container (not consumed).
#[derive(Debug)]
pub(super) enum Value<'a> {
    Null,
    Bool(bool),
    Str(Cow<'a, str>),
    Num(Num),
    Object,
    Array,
}

impl Value<'_> {
    pub(super) fn kind(&self) -> &'static str {
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

/// A cursor over one message, already known to be UTF-8.
pub(super) struct Reader<'a> {
    text: &'a str,
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Self {
            text,
            bytes: text.as_bytes(),
            pos: 0,
        }
    }

    #[inline]
    pub(super) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline]
    pub(super) fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    #[cold]
    #[inline(never)]
    pub(super) fn syntax(&self, what: &str) -> Fail {
        Box::new(ParseError::new(
            InvalidReason::NotJson,
            format!("{what} at byte {}", self.pos),
        ))
    }

    /// Only whitespace may follow the value.
    pub(super) fn end(&mut self) -> Result<(), Fail> {
        self.ws();
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.syntax("trailing characters")),
        }
    }

    #[inline]
    pub(super) fn expect(&mut self, b: u8, what: &str) -> Result<(), Fail> {
        // Compact JSON (what OpenWhisk writes) has no whitespace: look at the byte first.
        if self.peek() == Some(b) {
            self.pos += 1;
            return Ok(());
        }
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

    /// A plain unsigned integer at the cursor (what numeric fields mostly hold): its value
    /// and length in bytes, not consumed; `None` for any other value.
    #[inline]
    pub(super) fn plain_unsigned(&self) -> Option<(u64, usize)> {
        plain_unsigned(self.bytes.get(self.pos..)?)
    }

    /// The value at the cursor: a scalar is consumed, a container only recognised.
    #[inline]
    pub(super) fn value(&mut self) -> Result<Value<'a>, Fail> {
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
    fn literal(&mut self, word: &str, v: Value<'a>) -> Result<Value<'a>, Fail> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(self.syntax("expected a value"))
        }
    }

    /// Skips the value at the cursor: any JSON, its syntax checked as serde_json checks what
    /// it ignores; nesting costs a byte of `open` per level, never recursion.
    pub(super) fn skip(&mut self) -> Result<(), Fail> {
        // A string, what an event's skipped members mostly hold, without the nesting stack.
        if self.peek() == Some(b'"') {
            self.pos += 1;
            return self.skip_string();
        }
        self.skip_nested()
    }

    /// [`Reader::skip`] of any value.
    fn skip_nested(&mut self) -> Result<(), Fail> {
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
    fn skip_key(&mut self) -> Result<(), Fail> {
        self.expect(b'"', "expected a key")?;
        self.skip_string()?;
        self.expect(b':', "expected `:`")
    }

    /// A skipped string after its opening quote: escapes are checked for form only (a lone
    /// surrogate passes, as in serde_json).
    fn skip_string(&mut self) -> Result<(), Fail> {
        if self.plain_string().is_some() {
            return Ok(());
        }
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
    fn number(&mut self) -> Result<Num, Fail> {
        if let Some((v, len)) = plain_unsigned(&self.bytes[self.pos..]) {
            self.pos += len;
            return Ok(Num::Unsigned(v));
        }
        self.number_slow()
    }

    /// [`Reader::number`] beyond a plain unsigned integer.
    #[inline(never)]
    fn number_slow(&mut self) -> Result<Num, Fail> {
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
    fn number_text(&mut self) -> Result<(&'a str, bool), Fail> {
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

    fn some_digits(&mut self) -> Result<(), Fail> {
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
    pub(super) fn string(&mut self) -> Result<Cow<'a, str>, Fail> {
        let start = self.pos;
        match self.plain_string() {
            Some(s) => Ok(Cow::Borrowed(s)),
            None => self.string_slow(start),
        }
    }

    /// [`Reader::string`] when the string has no escape and no control character: borrowed,
    /// returned in registers, the cursor after its closing quote. `None` leaves the cursor on
    /// the first byte the string cannot hold as is (or at the end of input), where
    /// [`Reader::string_slow`] goes on.
    #[inline(always)]
    pub(super) fn plain_string(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let end = start + plain_run(self.bytes.get(start..)?);
        self.pos = end;
        if self.bytes.get(end) != Some(&b'"') {
            return None;
        }
        let s = self.text.get(start..end)?;
        self.pos = end + 1;
        Some(s)
    }

    /// [`Reader::string`] from its first escape, control character or the end of input
    /// (at the cursor), `start` being where the string's text began.
    #[cold]
    #[inline(never)]
    pub(super) fn string_slow(&mut self, start: usize) -> Result<Cow<'a, str>, Fail> {
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
    fn escape(&mut self, out: &mut String) -> Result<(), Fail> {
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
    fn unicode_escape(&mut self) -> Result<char, Fail> {
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

    fn hex4(&mut self) -> Result<u32, Fail> {
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
