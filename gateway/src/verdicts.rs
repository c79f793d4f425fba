//! Validation verdicts remembered by the body's *shape*, so that a container's next push, which
//! differs from its last one only in the sample values, is not parsed again.
//!
//! A container pushes the same families with the same labels after every activation; only the
//! values move. Parsing with the maintained parser ([`crate::validate`]) is most of the
//! gateway's CPU per push (docs/benchmarks.md, "Gateway"), so an accepted body's shape — the
//! body with each sample line's value cut out — is kept with what its validation found. A later
//! body whose shape is byte-for-byte one of those, and whose every cut-out value is a plain
//! float literal, gets that verdict without a parse.
//!
//! Why the verdict carries over (the cache never accepts what [`crate::validate::validate`]
//! would refuse, tested against it in `tests/verdicts.rs`):
//! - A line is cut only if it starts like a sample line (a metric-name character; the parser's
//!   only reading of such a line) and ends in a whitespace and a value token of
//!   `[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?`, `NaN`, `+Inf`, `-Inf` or `Inf` (at most
//!   [`MAX_VALUE_LEN`] bytes): a token the parser reads whole as the value, and one that holds no
//!   whitespace, newline, quote or brace. Any other line is part of the shape as it is; a line
//!   that starts any other way makes the body not cacheable at all.
//! - Such a line must also end outside a quoted label value, or the body is not cacheable: the
//!   parser lets a label value run over a raw newline, and a token cut there would be part of a
//!   series' identity (two series told apart only by it would become duplicates unseen). So in
//!   a cacheable body the parser's lines are the body's `\n`-separated lines.
//! - In an accepted body no sample has a timestamp, and a cut line has no trailing whitespace
//!   (the parser allows it, but then the last token is empty, not a value), so the token after
//!   a sample line's last whitespace *is* its value. Two bodies of one shape are therefore the
//!   same text but for their values, and the parser reads them into the same families, types,
//!   labels and series; no check of [`crate::validate`] looks at a value.
//! - Shapes are compared byte for byte; the hash (keyed per process) only finds the candidate.
//!
//! Only accepted bodies are kept, within `--validation-cache-bytes` of shapes, family names and
//! a fixed overhead per entry (arbitrary entries are evicted past it): a refusal is always the parser's. The type check
//! against the other groups ([`crate::families`]) runs on every push.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use crate::telemetry::Telemetry;
use crate::validate::{Family, Invalid, Validated, validate};

/// Longest value token cut out of a line; a longer one leaves the body to the parser.
pub(crate) const MAX_VALUE_LEN: usize = 40;

/// Bytes an entry holds besides its shape and family names (the map slot, the two `Arc`s, the
/// `Validated` and the allocator's rounding), counted against `--validation-cache-bytes`.
pub(crate) const ENTRY_OVERHEAD: usize = 256;

/// Remembered verdicts of accepted bodies, by shape.
#[derive(Debug)]
pub(crate) struct Verdicts {
    max_series: usize,
    max_bytes: usize,
    hasher: RandomState,
    inner: Mutex<Inner>,
    telemetry: Telemetry,
}

#[derive(Debug, Default)]
struct Inner {
    by_hash: HashMap<u64, Arc<Entry>>,
    bytes: usize,
}

#[derive(Debug)]
struct Entry {
    shape: Box<[u8]>,
    validated: Arc<Validated>,
    /// Bytes it holds: the shape, the verdict's family names and [`ENTRY_OVERHEAD`].
    cost: usize,
}

impl Verdicts {
    /// Verdicts for bodies checked against `max_series` (`--max-series-per-group`), holding at
    /// most `max_bytes` of shapes and their verdicts' family names (`--validation-cache-bytes`;
    /// 0: every body is parsed).
    pub(crate) fn new(max_series: usize, max_bytes: usize, telemetry: Telemetry) -> Self {
        Self {
            max_series,
            max_bytes,
            hasher: RandomState::new(),
            inner: Mutex::new(Inner::default()),
            telemetry,
        }
    }

    /// Validates `body` as [`validate`] does: from a remembered verdict when its shape is
    /// known, else by parsing it (and remembering the verdict if it is accepted).
    pub(crate) fn validate(&self, body: &[u8]) -> Result<Arc<Validated>, Invalid> {
        if self.max_bytes == 0 {
            self.telemetry.validation_cache_misses.inc();
            return validate(body, self.max_series).map(Arc::new);
        }
        let mut buf = Vec::new();
        let shape = shape_of(body, &mut buf).then_some(buf);
        let hash = shape.as_ref().map(|s| self.hasher.hash_one(s.as_slice()));
        if let (Some(shape), Some(hash)) = (&shape, hash) {
            let known = self.lock().by_hash.get(&hash).cloned();
            if let Some(entry) = known.filter(|e| *e.shape == **shape) {
                self.telemetry.validation_cache_hits.inc();
                return Ok(Arc::clone(&entry.validated));
            }
        }
        self.telemetry.validation_cache_misses.inc();
        let validated = Arc::new(validate(body, self.max_series)?);
        if let (Some(shape), Some(hash)) = (shape, hash) {
            self.remember(hash, shape, Arc::clone(&validated));
        }
        Ok(validated)
    }

    /// Shapes held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().by_hash.len()
    }

    /// Whether no shape is held.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remember(&self, hash: u64, shape: Vec<u8>, validated: Arc<Validated>) {
        let cost = ENTRY_OVERHEAD
            + shape.len()
            + validated
                .families
                .iter()
                .map(|f| f.name.len() + std::mem::size_of::<Family>())
                .sum::<usize>();
        if cost > self.max_bytes {
            return;
        }
        let mut inner = self.lock();
        if let Some(old) = inner.by_hash.remove(&hash) {
            inner.bytes -= old.cost;
        }
        while inner.bytes + cost > self.max_bytes {
            let Some(victim) = inner.by_hash.keys().next().copied() else {
                break;
            };
            if let Some(old) = inner.by_hash.remove(&victim) {
                inner.bytes -= old.cost;
            }
        }
        inner.bytes += cost;
        inner.by_hash.insert(
            hash,
            Arc::new(Entry {
                shape: shape.into_boxed_slice(),
                validated,
                cost,
            }),
        );
        self.telemetry
            .validation_cache_entries
            .set(i64::try_from(inner.by_hash.len()).unwrap_or(i64::MAX));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map is consistent between statements; a panic elsewhere cannot leave it torn.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes `body`'s shape into `out` (each sample line's value token cut out, everything else
/// kept, newlines included); false if the body is not cacheable (see the module doc).
pub(crate) fn shape_of(body: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    out.reserve(body.len());
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        match line.first() {
            None | Some(b'#') => out.extend_from_slice(line),
            Some(&c) if whisk_grouping::is_metric_name_start(c) => {
                let Some(cut) = line.iter().rposition(|&b| b == b' ' || b == b'\t') else {
                    return false;
                };
                if !is_plain_float(&line[cut + 1..]) || ends_in_label_value(line) {
                    return false;
                }
                out.extend_from_slice(&line[..=cut]);
            }
            Some(_) => return false,
        }
    }
    true
}

/// Whether `line`, read from a sample's start, ends inside a quoted label value (`\` escapes
/// the next byte there, as in the parser's label-value grammar). The parser lets a label value
/// run over a raw newline, so such a line is not a whole sample, and its last token is not a
/// sample value but part of a label value: a series' identity.
fn ends_in_label_value(line: &[u8]) -> bool {
    let mut quoted = false;
    let mut bytes = line.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'"' => quoted = !quoted,
            b'\\' if quoted => {
                bytes.next();
            }
            _ => {}
        }
    }
    quoted
}

/// `[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?` within a 64-bit float's range, `NaN`, `+Inf`,
/// `-Inf` or `Inf`, at most [`MAX_VALUE_LEN`] bytes.
pub(crate) fn is_plain_float(token: &[u8]) -> bool {
    if token.len() > MAX_VALUE_LEN {
        return false;
    }
    if matches!(token, b"NaN" | b"+Inf" | b"-Inf" | b"Inf") {
        return true;
    }
    let mut s = token;
    let digits = |s: &mut &[u8]| {
        let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
        *s = &s[n..];
        n
    };
    if let [b'+' | b'-', tail @ ..] = s {
        s = tail;
    }
    if digits(&mut s) == 0 {
        return false;
    }
    if let [b'.', tail @ ..] = s {
        s = tail;
        if digits(&mut s) == 0 {
            return false;
        }
    }
    let mut exponent = false;
    if let [b'e' | b'E', tail @ ..] = s {
        s = tail;
        if let [b'+' | b'-', tail @ ..] = s {
            s = tail;
        }
        if digits(&mut s) == 0 {
            return false;
        }
        exponent = true;
    }
    // Within MAX_VALUE_LEN only an exponent can take a literal past a 64-bit float's range.
    s.is_empty()
        && (!exponent || std::str::from_utf8(token).is_ok_and(crate::validate::within_float64))
}

#[cfg(test)]
mod agreement;

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(body: &str) -> Option<String> {
        let mut out = Vec::new();
        shape_of(body.as_bytes(), &mut out).then(|| String::from_utf8(out).unwrap())
    }

    #[test]
    fn the_shape_is_the_body_without_its_values() {
        let body = "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"x y\"} 12\n\nb 1.5e-3";
        assert_eq!(
            shape(body).as_deref(),
            Some("# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"x y\"} \n\nb ")
        );
        assert_eq!(shape("a\t-7\n").as_deref(), Some("a\t\n"));
        // Escaped quotes and backslashes inside a label value do not end it.
        assert_eq!(
            shape("a{k=\"\\\"x\\\" 1\",j=\"y\\\\\"} 2\n").as_deref(),
            Some("a{k=\"\\\"x\\\" 1\",j=\"y\\\\\"} \n")
        );
    }

    #[test]
    fn bodies_that_differ_in_more_than_values_are_not_cacheable() {
        for body in [
            "a 1 1700000000\nb x\n",
            "a 1 \n",
            "a 1\r\n",
            " a 1\n",
            "a{k=\"v\"}1\n",
            "a 0x10\n",
            "a 1.\n",
            "a .5\n",
            "a inf\n",
            "a 1_000\n",
            "\ta 1\n",
            // A label value running over a newline: "1" is part of it, not a value.
            "a{k=\"x 1\nb\"} 3\n",
            "a{k=\"\\\" 1\nb\"} 3\n",
        ] {
            assert_eq!(shape(body), None, "{body:?}");
        }
        let long = format!("a {}\n", "1".repeat(MAX_VALUE_LEN + 1));
        assert_eq!(shape(&long), None);
    }

    #[test]
    fn plain_floats_are_what_both_parsers_read_whole() {
        for ok in [
            "0", "-0", "+12", "3.25", "1e9", "1E-9", "-2.5e+3", "NaN", "+Inf", "-Inf", "1e308",
            "1e-400",
        ] {
            assert!(is_plain_float(ok.as_bytes()), "{ok}");
            assert!(ok.parse::<f64>().is_ok(), "{ok}");
        }
        for bad in [
            "", "+", "1.", ".5", "1e", "e5", "nan", "infinity", "1-2", "٣", "1e400", "-1e309",
        ] {
            assert!(!is_plain_float(bad.as_bytes()), "{bad}");
        }
    }
}
