//! Validation of a push body before anything is stored.
//!
//! The body is parsed with [`prom_text_format_parser`] (MIT OR Apache-2.0), a strict
//! parser of the Prometheus text format 0.0.4 built on `winnow`: every line must be a valid
//! HELP, TYPE, comment or sample line (a CRLF ending, a bad float, an unknown type, an unclosed
//! label value are errors, not skipped lines), and samples are assembled into families with
//! their `_bucket`/`_sum`/`_count` samples attached, which is what the type checks need. The
//! alternatives were rejected: `prometheus-parse` silently drops lines it cannot read and
//! splits label values on `,` and `=` (a push could smuggle series past the checks), and
//! `openmetrics-parser` is LGPL-3.0, which the project's Apache-2.0, statically linked binaries
//! avoid.
//!
//! On top of the grammar the checks are the ones that keep a Pushgateway run with
//! `--push.disable-consistency-check` scrapeable: reserved family names, labels that belong to
//! the grouping key, label names Prometheus refuses, timestamps, a family given twice, a series
//! given twice, and the per-group series budget. Comment lines are checked as the Pushgateway's
//! parser (Go's expfmt) reads them, where this parser reads them otherwise (HELP escapes, HELP
//! and TYPE names, a TYPE line's end, a second HELP or TYPE line, `# TYPEx counter`).

use std::collections::HashSet;
use std::fmt;

use prom_text_format_parser::{Sample, Scrape, ScrapeParseError, Type, ValueType};

/// Family names a push may not use: the Pushgateway's own families and the keys of its
/// `/api/v1/metrics` JSON (`labels`, `last_push_successful`).
pub const RESERVED_NAMES: [&str; 4] = [
    "push_time_seconds",
    "push_failure_time_seconds",
    "labels",
    "last_push_successful",
];

/// Family-name prefixes a push may not use: the Pushgateway's own (`pushgateway_`, `go_`,
/// `process_`) and the platform's (`openwhisk_`, written only by the collector).
pub const RESERVED_PREFIXES: [&str; 4] = ["pushgateway_", "go_", "process_", "openwhisk_"];

/// Labels of the grouping key; a sample carrying one would be overwritten by the Pushgateway
/// (or, with `honor_labels`, forge another group's identity).
pub const GROUPING_LABELS: [&str; 4] = ["job", "instance", "namespace", "action"];

/// A metric family's type, as the Pushgateway and Prometheus see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FamilyType {
    /// `counter`
    Counter,
    /// `gauge`
    Gauge,
    /// `histogram`
    Histogram,
    /// `summary`
    Summary,
    /// `untyped` (no `# TYPE` line)
    Untyped,
}

impl FamilyType {
    /// The lower-case name of the text format.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Summary => "summary",
            Self::Untyped => "untyped",
        }
    }

    /// Reads the Pushgateway's JSON spelling (`COUNTER`, …) or the text format's.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "counter" => Some(Self::Counter),
            "gauge" => Some(Self::Gauge),
            "histogram" => Some(Self::Histogram),
            "summary" => Some(Self::Summary),
            "untyped" => Some(Self::Untyped),
            _ => None,
        }
    }

    /// The suffixes whose names this type's samples use (`_bucket`, `_sum`, `_count`).
    pub fn suffixes(self) -> &'static [&'static str] {
        match self {
            Self::Histogram => &["_bucket", "_sum", "_count"],
            Self::Summary => &["_sum", "_count"],
            _ => &[],
        }
    }

    fn from_parser(t: Type) -> Self {
        match t {
            Type::Counter => Self::Counter,
            Type::Gauge => Self::Gauge,
            Type::Histogram => Self::Histogram,
            Type::Summary => Self::Summary,
            Type::Untyped => Self::Untyped,
        }
    }
}

impl fmt::Display for FamilyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One family of a valid push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// Its name.
    pub name: String,
    /// Its type.
    pub kind: FamilyType,
}

/// What a valid push holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Validated {
    /// Its families, in body order.
    pub families: Vec<Family>,
    /// Its series (sample lines).
    pub series: usize,
}

/// Why a push body is refused (400). `Display` is the one-line reason sent back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Larger than `--max-body-bytes`.
    #[error("body is larger than --max-body-bytes ({max} bytes)")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// Not UTF-8.
    #[error("body is not UTF-8 text")]
    NotUtf8,
    /// Not the text format.
    #[error("malformed text format: {0}")]
    Malformed(String),
    /// More series than `--max-series-per-group`.
    #[error("{series} series in one group; at most {max} are accepted (--max-series-per-group)")]
    TooManySeries {
        /// Series in the push.
        series: usize,
        /// The limit.
        max: usize,
    },
    /// A reserved family name.
    #[error(
        "family `{0}` is reserved (push_time_seconds, push_failure_time_seconds, labels, \
         last_push_successful, pushgateway_*, go_*, process_*, openwhisk_*)"
    )]
    Reserved(String),
    /// A sample label that belongs to the grouping key.
    #[error("family `{family}` has label `{label}`, which belongs to the grouping key")]
    GroupingLabel {
        /// The family.
        family: String,
        /// The label.
        label: String,
    },
    /// A label name Prometheus refuses, or one given twice in a sample.
    #[error("family `{family}` has an invalid or repeated label name `{label}`")]
    BadLabelName {
        /// The family.
        family: String,
        /// The label.
        label: String,
    },
    /// A sample with a timestamp (the Pushgateway refuses them).
    #[error("family `{0}` has a sample with a timestamp; pushed samples must not have one")]
    Timestamp(String),
    /// A family given twice in the body.
    #[error("family `{0}` appears twice in the body")]
    DuplicateFamily(String),
    /// A series given twice in the body.
    #[error("family `{0}` has the same series twice")]
    DuplicateSeries(String),
    /// A histogram bucket without `le` or a summary quantile without `quantile`.
    #[error("{kind} `{family}` has a sample without its `{label}` label")]
    MissingBucketLabel {
        /// The family.
        family: String,
        /// Its type.
        kind: FamilyType,
        /// `le` or `quantile`.
        label: &'static str,
    },
}

impl Invalid {
    /// The `reason` label of `whisk_gateway_requests_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "body_too_large",
            Self::NotUtf8 | Self::Malformed(_) => "malformed",
            Self::TooManySeries { .. } => "too_many_series",
            Self::Reserved(_) => "reserved_name",
            Self::GroupingLabel { .. } => "grouping_label",
            Self::BadLabelName { .. } => "bad_label_name",
            Self::Timestamp(_) => "timestamp",
            Self::DuplicateFamily(_) | Self::DuplicateSeries(_) => "duplicate",
            Self::MissingBucketLabel { .. } => "malformed",
        }
    }
}

/// Whether `name` is a reserved family name.
pub fn is_reserved(name: &str) -> bool {
    RESERVED_NAMES.contains(&name) || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Checks a push body (the size limit is enforced while reading it; see [`Invalid::TooLarge`]).
/// An empty body is valid: the Pushgateway then empties the group.
pub fn validate(body: &[u8], max_series: usize) -> Result<Validated, Invalid> {
    let text = std::str::from_utf8(body).map_err(|_| Invalid::NotUtf8)?;
    if text.trim().is_empty() {
        return Ok(Validated::default());
    }
    // The Pushgateway's parser (Go's expfmt) wants every line ended, the last one too.
    if !text.trim_end_matches([' ', '\t']).ends_with('\n') {
        return Err(Invalid::Malformed(
            "the last line does not end with a line break".to_string(),
        ));
    }
    // Cheap bound before parsing: every series is a line. Comment lines are read here as
    // expfmt (the Pushgateway's parser) reads them, because the gateway's parser reads some of
    // them otherwise: it takes a `# TYPE` line it cannot read (an unknown type, `counter\r`)
    // as a plain comment, `# TYPEx counter` as a TYPE line, and accepts HELP escapes and names
    // that expfmt refuses, and a second HELP or TYPE line for a name once a TYPE or HELP line
    // comes between them.
    let mut lines = 0usize;
    let mut described: HashSet<(bool, &str)> = HashSet::new();
    for line in text.split('\n') {
        let t = line.trim_start_matches([' ', '\t']);
        if t.is_empty() {
            continue;
        }
        if let Some(comment) = t.strip_prefix('#') {
            if let Some((is_type, name)) = check_comment(comment)? {
                // A second HELP or TYPE line for a name: expfmt refuses it even where the
                // gateway's parser does not (HELP, TYPE, HELP).
                if !described.insert((is_type, name)) {
                    return Err(Invalid::DuplicateFamily(name.to_string()));
                }
            }
            continue;
        }
        // expfmt reads a sample's value, and a timestamp, up to the line break: white space
        // after the last word is an error there, not padding.
        if t.ends_with([' ', '\t']) {
            return Err(Invalid::Malformed(format!(
                "sample line `{}` ends in white space",
                t.trim_end().chars().take(100).collect::<String>()
            )));
        }
        lines += 1;
    }
    if lines > max_series {
        return Err(Invalid::TooManySeries {
            series: lines,
            max: max_series,
        });
    }
    let scrape = Scrape::parse(text).map_err(|e| Invalid::Malformed(one_line(&e)))?;
    let mut out = Validated {
        families: Vec::with_capacity(scrape.metrics.len()),
        series: 0,
    };
    let mut names = HashSet::with_capacity(scrape.metrics.len());
    // One (hash of the series' identity, sample index) per sample, reused across families:
    // duplicates are found by sorting, with no allocation per sample.
    let mut identities: Vec<(u64, usize)> = Vec::new();
    for metric in &scrape.metrics {
        let kind = FamilyType::from_parser(metric.kind);
        if is_reserved(&metric.name) {
            return Err(Invalid::Reserved(metric.name.clone()));
        }
        if !names.insert(metric.name.as_str()) {
            return Err(Invalid::DuplicateFamily(metric.name.clone()));
        }
        identities.clear();
        // The label holding a bucket's or quantile's bound: a number, as expfmt reads it.
        let bound = match kind {
            FamilyType::Histogram => Some("le"),
            FamilyType::Summary => Some("quantile"),
            _ => None,
        };
        for (index, sample) in metric.samples.iter().enumerate() {
            if sample.value.timestamp.is_some() {
                return Err(Invalid::Timestamp(metric.name.clone()));
            }
            if !within_float64(&sample.value.value) {
                return Err(Invalid::Malformed(format!(
                    "family `{}` has the value `{}`, beyond the range of a 64-bit float",
                    metric.name,
                    sample.value.value.chars().take(50).collect::<String>()
                )));
            }
            for (i, label) in sample.labels.iter().enumerate() {
                let name = label.key.as_str();
                if GROUPING_LABELS.contains(&name) {
                    return Err(Invalid::GroupingLabel {
                        family: metric.name.clone(),
                        label: label.key.clone(),
                    });
                }
                // The parser lets a quoted label value run over a raw newline; the
                // Pushgateway refuses it (400), and the body's lines would not be its samples.
                // A raw carriage return is no line end to either (the Pushgateway stores it, and
                // the SDK writes it as it is: the format has no escape for it).
                if label.value.contains('\n') {
                    return Err(Invalid::Malformed(format!(
                        "label `{}` of family `{}` holds a raw line break; write it as \\n",
                        label.key, metric.name
                    )));
                }
                if !valid_label_name(name) || sample.labels[..i].iter().any(|l| l.key == name) {
                    return Err(Invalid::BadLabelName {
                        family: metric.name.clone(),
                        label: label.key.clone(),
                    });
                }
            }
            if let Some(l) = sample
                .labels
                .iter()
                .find(|l| Some(l.key.as_str()) == bound && !within_float64(&l.value))
            {
                return Err(Invalid::Malformed(format!(
                    "{kind} `{}` has {}=\"{}\", which is not a number",
                    metric.name,
                    l.key,
                    l.value.chars().take(50).collect::<String>()
                )));
            }
            // A bucket or quantile sample (not `_sum`/`_count`) must carry its bound.
            let needs = bound.filter(|_| sample.value.value_type == ValueType::Sample);
            if let Some(label) = needs.filter(|l| !sample.labels.iter().any(|k| k.key == *l)) {
                return Err(Invalid::MissingBucketLabel {
                    family: metric.name.clone(),
                    kind,
                    label,
                });
            }
            identities.push((series_hash(sample), index));
        }
        identities.sort_unstable();
        let duplicate = identities.windows(2).any(|w| {
            w[0].0 == w[1].0 && {
                // Equal hashes: compare the series themselves (every pair with that hash).
                let same_hash = identities.iter().filter(|(h, _)| *h == w[0].0);
                let samples: Vec<&Sample> = same_hash.map(|(_, i)| &metric.samples[*i]).collect();
                samples
                    .iter()
                    .enumerate()
                    .any(|(i, a)| samples[i + 1..].iter().any(|b| same_series(a, b)))
            }
        });
        if duplicate {
            return Err(Invalid::DuplicateSeries(metric.name.clone()));
        }
        out.series += metric.samples.len();
    }
    drop(names);
    out.families
        .extend(scrape.metrics.into_iter().map(|m| Family {
            kind: FamilyType::from_parser(m.kind),
            name: m.name,
        }));
    if out.series > max_series {
        return Err(Invalid::TooManySeries {
            series: out.series,
            max: max_series,
        });
    }
    Ok(out)
}

/// Checks a comment line (the text after its `#`) as expfmt reads it: a first word of exactly
/// `HELP` or `TYPE` makes a HELP or TYPE line, any other word a free comment. Returns the
/// keyword (true: TYPE) and name of a HELP line with text or of a TYPE line.
fn check_comment(comment: &str) -> Result<Option<(bool, &str)>, Invalid> {
    let malformed = |what: &str, name: &str| {
        Err(Invalid::Malformed(format!(
            "{what} (`{}`)",
            name.chars().take(100).collect::<String>()
        )))
    };
    let comment = comment.trim_start_matches([' ', '\t']);
    let keyword_end = comment.find([' ', '\t']).unwrap_or(comment.len());
    let (keyword, rest) = comment.split_at(keyword_end);
    let is_type = match keyword {
        "TYPE" => true,
        "HELP" => false,
        // The gateway's parser reads `# TYPEx counter` as the TYPE of `x`, expfmt as a comment.
        k if k.starts_with("TYPE") || k.starts_with("HELP") => {
            return malformed("a comment whose first word starts with TYPE or HELP", k);
        }
        _ => return Ok(None),
    };
    let rest = rest.trim_start_matches([' ', '\t']);
    let name_len = match rest.as_bytes().first() {
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' || *c == b':' => rest
            .bytes()
            .position(|c| !(c.is_ascii_alphanumeric() || c == b'_' || c == b':'))
            .unwrap_or(rest.len()),
        _ => 0,
    };
    let (name, after) = rest.split_at(name_len);
    let text = after.trim_start_matches([' ', '\t']);
    if !after.is_empty() && !after.starts_with([' ', '\t']) {
        return malformed(&format!("{keyword} line with an invalid metric name"), rest);
    }
    if is_type {
        if name.is_empty() || FamilyType::parse(text).is_none() {
            return malformed(
                "TYPE line must name a family and end with counter, gauge, histogram, summary \
                 or untyped",
                rest,
            );
        }
        return Ok(Some((true, name)));
    }
    // expfmt knows two escapes in HELP text, `\\` and `\n`.
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'\\' && !matches!(bytes.next(), Some(b'\\' | b'n')) {
            return malformed("HELP text with an escape other than \\\\ and \\n", name);
        }
    }
    Ok((!text.is_empty()).then_some((false, name)))
}

/// A hash of a sample's identity: its value type and its label set, independent of the labels'
/// order (each pair is hashed alone and the pair hashes are summed). Equal series have equal
/// hashes; equal hashes are compared with [`same_series`].
fn series_hash(sample: &Sample) -> u64 {
    let value_type = match sample.value.value_type {
        ValueType::Sample => 0u64,
        ValueType::Sum => 1,
        ValueType::Count => 2,
    };
    sample.labels.iter().fold(value_type, |acc, l| {
        let key = crate::shard::mix64(crate::shard::fnv1a64(l.key.as_bytes()));
        acc.wrapping_add(crate::shard::mix64(
            key ^ crate::shard::fnv1a64(l.value.as_bytes()),
        ))
    })
}

/// Whether `token` is a float the Pushgateway reads (Go's `strconv.ParseFloat`): Rust reads the
/// same spellings (`1.`, `.5`, `1e5`, `NaN`, `+Inf`, `inf`, `Infinity`, no hex, no `_`), but
/// reads `1e400` as infinity where Go reports it out of range, so only a spelled-out infinity
/// may be infinite.
pub fn within_float64(token: &str) -> bool {
    let spells_infinity = || {
        token
            .trim_start_matches(['+', '-'])
            .get(..3)
            .is_some_and(|head| head.eq_ignore_ascii_case("inf"))
    };
    token
        .parse::<f64>()
        .is_ok_and(|v| !v.is_infinite() || spells_infinity())
}

/// Whether two samples of one family are the same series (same value type, same label set).
fn same_series(a: &Sample, b: &Sample) -> bool {
    a.value.value_type == b.value.value_type
        && a.labels.len() == b.labels.len()
        && a.labels.iter().all(|l| b.labels.iter().any(|m| m == l))
}

/// Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`.
fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// The parser's error on one short line.
fn one_line(e: &ScrapeParseError) -> String {
    let text = match e {
        ScrapeParseError::Parse(s) => {
            let mut parts = s.lines().map(str::trim).filter(|l| !l.is_empty());
            let first = parts.next().unwrap_or("unparsable line");
            format!("cannot parse: {first}")
        }
        ScrapeParseError::Collect(errors) => errors
            .first()
            .map(|m| m.error.clone())
            .unwrap_or_else(|| "cannot assemble families".to_string()),
    };
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if text.chars().count() > 200 {
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDK_LIKE: &str = "# HELP whisk_activations_total Activations\n\
        # TYPE whisk_activations_total counter\n\
        whisk_activations_total{status=\"success\"} 3\n\
        whisk_activations_total{status=\"application_error\"} 0\n\
        # HELP whisk_push_duration_seconds Duration of pushes\n\
        # TYPE whisk_push_duration_seconds histogram\n\
        whisk_push_duration_seconds_bucket{le=\"0.001\"} 1\n\
        whisk_push_duration_seconds_bucket{le=\"+Inf\"} 2\n\
        whisk_push_duration_seconds_sum 0.003\n\
        whisk_push_duration_seconds_count 2\n\
        # HELP orders_placed_total Orders placed\n\
        # TYPE orders_placed_total counter\n\
        orders_placed_total{region=\"eu \\\"west\\\"\"} 7\n";

    #[test]
    fn an_sdk_body_yields_its_families_types_and_series() {
        let v = validate(SDK_LIKE.as_bytes(), 100).unwrap();
        assert_eq!(v.series, 7);
        let fams: Vec<_> = v
            .families
            .iter()
            .map(|f| (f.name.as_str(), f.kind))
            .collect();
        assert_eq!(
            fams,
            [
                ("whisk_activations_total", FamilyType::Counter),
                ("whisk_push_duration_seconds", FamilyType::Histogram),
                ("orders_placed_total", FamilyType::Counter)
            ]
        );
    }

    #[test]
    fn a_raw_line_break_in_a_label_value_is_malformed_and_an_escaped_one_is_not() {
        let err = validate(b"notes{text=\"line 1\nline\"} 1\n", 10).unwrap_err();
        assert_eq!(err.reason(), "malformed");
        assert!(err.to_string().contains("raw line break"), "{err}");
        assert!(validate(b"notes{text=\"line 1\\nline\"} 1\n", 10).is_ok());
    }

    #[test]
    fn what_the_pushgateways_parser_refuses_is_malformed_here_too() {
        for (body, says) in [
            ("x 1 \n", "ends in white space"),
            ("x 1\t\n", "ends in white space"),
            ("x 1", "line break"),
            ("x 1\n# done", "line break"),
            ("# TYPE x counter \nx 1\n", "TYPE line"),
            (
                "# TYPE h histogram\nh_bucket{le=\"1e400\"} 1\nh_sum 1\nh_count 1\n",
                "not a number",
            ),
            (
                "# TYPE s summary\ns{quantile=\"median\"} 1\ns_sum 1\ns_count 1\n",
                "not a number",
            ),
        ] {
            let err = validate(body.as_bytes(), 10).unwrap_err();
            assert_eq!(err.reason(), "malformed", "{body:?}");
            assert!(err.to_string().contains(says), "{body:?}: {err}");
        }
        for ok in [
            "x 1\n\n",
            "# HELP x padded help \nx 1\n",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        ] {
            assert!(validate(ok.as_bytes(), 10).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn comment_lines_are_read_as_the_pushgateways_parser_reads_them() {
        for (body, reason) in [
            ("# HELP x a\\tb\nx 1\n", "malformed"),
            ("# HELP x a\\\nx 1\n", "malformed"),
            ("# HELP x a\\\"b\nx 1\n", "malformed"),
            ("# HELP x-y text\nx 1\n", "malformed"),
            ("# HELP é text\nx 1\n", "malformed"),
            ("# HELP x\u{a0}text\nx 1\n", "malformed"),
            ("# TYPE x counter\r\nx 1\n", "malformed"),
            ("# TYPE x counter\u{a0}\nx 1\n", "malformed"),
            ("# TYPE x\u{a0}counter\nx 1\n", "malformed"),
            ("# TYPE x-y counter\nx 1\n", "malformed"),
            ("# TYPEx counter\nx 1\n", "malformed"),
            ("# HELPx text\nx 1\n", "malformed"),
            (
                "# HELP x a\n# TYPE x counter\n# HELP x b\nx 1\n",
                "duplicate",
            ),
            (
                "# TYPE x counter\n# HELP x a\n# TYPE x gauge\nx 1\n",
                "duplicate",
            ),
        ] {
            match validate(body.as_bytes(), 10) {
                Ok(v) => panic!("{body:?} was accepted: {v:?}"),
                Err(e) => assert_eq!(e.reason(), reason, "{body:?}: {e}"),
            }
        }
        // Why a glued keyword is refused: the gateway's parser reads a counter here, the
        // Pushgateway's parser a comment (it stores an untyped `x`).
        let glued = Scrape::parse("# TYPEx counter\nx 1\n").unwrap();
        assert_eq!(
            (glued.metrics[0].name.as_str(), glued.metrics[0].kind),
            ("x", Type::Counter)
        );
        for ok in [
            "# HELP x a\\\\tb \\n c\nx 1\n",
            "# HELP x text\r\nx 1\n",
            "# HELP x \u{a0}text\nx 1\n",
            "#\tTYPE\tx\tcounter\nx 1\n",
            "# type x counter\nx 1\n",
            "# HELP x   \nx 1\n",
        ] {
            assert!(validate(ok.as_bytes(), 10).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn what_the_prometheus_text_encoder_writes_for_the_sdk_is_valid() {
        use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
        let r = Registry::new();
        for (i, help) in [
            "trailing spaces   ",
            " leading space",
            "back\\slash, new\nline, \"quotes\", tab\t, cr\r",
            "ends in a backslash\\",
            "\u{a0}no-break space",
        ]
        .into_iter()
        .enumerate()
        {
            let c = IntCounterVec::new(Opts::new(format!("c{i}_total"), help), &["l"]).unwrap();
            for value in ["", "a\nb", "back\\", "\"q\"", "cr\r", "tab\t", "é 🚀", " "] {
                c.with_label_values(&[value]).inc();
            }
            r.register(Box::new(c)).unwrap();
        }
        let h = HistogramVec::new(HistogramOpts::new("h_seconds", "h\\"), &["l"]).unwrap();
        h.with_label_values(&["x\ny"]).observe(0.3);
        r.register(Box::new(h)).unwrap();
        let mut body = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&r.gather(), &mut body)
            .unwrap();
        let v = validate(&body, 1000).unwrap_or_else(|e| {
            panic!("{e}\n{}", String::from_utf8_lossy(&body));
        });
        assert_eq!(v.families.len(), 6);
    }

    #[test]
    fn a_value_beyond_a_float64_is_malformed_and_infinity_spelled_out_is_not() {
        for bad in ["1e400", "-1e309", "1.7976931348623159e308"] {
            let err = validate(format!("x {bad}\n").as_bytes(), 10).unwrap_err();
            assert_eq!(err.reason(), "malformed", "{bad}");
            assert!(err.to_string().contains("64-bit float"), "{bad}: {err}");
        }
        for ok in ["+Inf", "-Inf", "Inf", "1.7976931348623157e308", "1e-400"] {
            assert!(validate(format!("x {ok}\n").as_bytes(), 10).is_ok(), "{ok}");
        }
    }

    #[test]
    fn an_empty_body_is_valid_and_empty() {
        assert_eq!(validate(b"", 10).unwrap(), Validated::default());
    }

    #[test]
    fn reserved_names_are_refused() {
        for name in [
            "push_time_seconds",
            "push_failure_time_seconds",
            "labels",
            "last_push_successful",
            "pushgateway_build_info",
            "go_goroutines",
            "process_resident_memory_bytes",
            "openwhisk_action_activations_total",
        ] {
            let body = format!("# TYPE {name} gauge\n{name} 1\n");
            assert_eq!(
                validate(body.as_bytes(), 10),
                Err(Invalid::Reserved(name.into())),
                "{name}"
            );
        }
        assert!(validate(b"labelsx 1\n", 10).is_ok());
    }

    #[test]
    fn grouping_key_labels_in_samples_are_refused() {
        for label in GROUPING_LABELS {
            let body = format!("jobs{{{label}=\"x\"}} 1\n");
            let err = validate(body.as_bytes(), 10).unwrap_err();
            assert_eq!(err.reason(), "grouping_label", "{label}");
            assert!(err.to_string().contains(label));
        }
    }

    #[test]
    fn malformed_text_is_refused_with_one_line() {
        for body in [
            "jobs 1\r\n",
            "jobs{a=\"1\" 1\n",
            "jobs one\n",
            "# TYPE jobs countre\njobs 1\n",
            "jobs{a=\"1\"} 1 2 3\n",
        ] {
            let err = match validate(body.as_bytes(), 10) {
                Ok(v) => panic!("{body:?} was accepted: {v:?}"),
                Err(e) => e,
            };
            assert_eq!(err.reason(), "malformed", "{body:?}: {err}");
            assert!(!err.to_string().contains('\n'), "{body:?}: {err}");
        }
        assert_eq!(validate(&[0xff, 0xfe], 10), Err(Invalid::NotUtf8));
    }

    #[test]
    fn series_budget_counts_every_sample() {
        let err = validate(SDK_LIKE.as_bytes(), 6).unwrap_err();
        assert_eq!(err, Invalid::TooManySeries { series: 7, max: 6 });
        assert!(validate(SDK_LIKE.as_bytes(), 7).is_ok());
    }

    #[test]
    fn things_the_pushgateway_cannot_render_are_refused() {
        let cases = [
            ("jobs 1 1700000000000\n", "timestamp"),
            ("jobs{a=\"1\"} 1\njobs{a=\"1\"} 2\n", "duplicate"),
            (
                "jobs{a=\"1\",b=\"2\"} 1\njobs{a=\"3\"} 1\njobs{b=\"2\",a=\"1\"} 2\n",
                "duplicate",
            ),
            (
                "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# TYPE a gauge\na 2\n",
                "duplicate",
            ),
            ("jobs{__x=\"1\"} 1\n", "bad_label_name"),
            ("jobs{a:b=\"1\"} 1\n", "bad_label_name"),
            ("jobs{a=\"1\",a=\"2\"} 1\n", "bad_label_name"),
            ("# TYPE h histogram\nh_bucket{x=\"1\"} 1\n", "malformed"),
        ];
        for (body, reason) in cases {
            let err = validate(body.as_bytes(), 10).unwrap_err();
            assert_eq!(err.reason(), reason, "{body:?}: {err}");
        }
    }

    #[test]
    fn series_that_differ_in_one_label_or_swap_names_and_values_are_distinct() {
        let body = "jobs{a=\"b\"} 1\njobs{b=\"a\"} 1\njobs{a=\"b\",c=\"d\"} 1\n\
                    jobs{a=\"d\",c=\"b\"} 1\njobs 1\n\
                    # TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 1\ns_count 1\n";
        let v = validate(body.as_bytes(), 100).unwrap();
        assert_eq!(v.series, 8);
    }
}
