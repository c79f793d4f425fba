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
//! `--push.disable-consistency-check` scrapeable (the name rules are `whisk_grouping`'s, shared
//! with the SDK): reserved family names, labels that belong to
//! the grouping key, label names Prometheus refuses, timestamps, a family given twice, a series
//! given twice, and the per-group series budget. Comment lines are checked as the Pushgateway's
//! parser (Go's expfmt) reads them, where this parser reads them otherwise (HELP escapes, HELP
//! and TYPE names, a TYPE line's end, a second HELP or TYPE line, `# TYPEx counter`).

use std::collections::HashSet;

use prom_text_format_parser::{Sample, Scrape, ScrapeParseError, Type, ValueType};

pub(crate) use whisk_grouping::FamilyType;

/// The family type of the parser's reading.
fn family_type(t: Type) -> FamilyType {
    match t {
        Type::Counter => FamilyType::Counter,
        Type::Gauge => FamilyType::Gauge,
        Type::Histogram => FamilyType::Histogram,
        Type::Summary => FamilyType::Summary,
        Type::Untyped => FamilyType::Untyped,
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
    /// A reserved family name ([`whisk_grouping::reserved_in_push`]).
    #[error(
        "family `{0}` is reserved (push_time_seconds, push_failure_time_seconds, labels, \
         last_push_successful, pushgateway_*, go_*, process_*, openwhisk_*, and whisk_* but \
         the SDK's built-in families under their own type)"
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

/// Checks a push body (the size limit is enforced while reading it; see [`Invalid::TooLarge`]).
/// An empty body is valid: the Pushgateway then empties the group.
pub fn validate(body: &[u8], max_series: usize) -> Result<Validated, Invalid> {
    let text = std::str::from_utf8(body).map_err(|_| Invalid::NotUtf8)?;
    if text.trim().is_empty() {
        return Ok(Validated::default());
    }
    let lines = check_lines(text)?;
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
        let kind = family_type(metric.kind);
        if whisk_grouping::reserved_in_push(&metric.name, kind).is_some() {
            return Err(Invalid::Reserved(metric.name.clone()));
        }
        if !names.insert(metric.name.as_str()) {
            return Err(Invalid::DuplicateFamily(metric.name.clone()));
        }
        check_family(metric, kind, &mut identities)?;
        out.series += metric.samples.len();
    }
    drop(names);
    out.families
        .extend(scrape.metrics.into_iter().map(|m| Family {
            kind: family_type(m.kind),
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

/// Reads the body line by line as the Pushgateway's parser (Go's expfmt) does, before the
/// gateway's parser sees it; returns the number of sample lines (a cheap bound: every series is
/// a line).
///
/// Comment lines are read here as expfmt reads them, because the gateway's parser reads some of
/// them otherwise: it takes a `# TYPE` line it cannot read (an unknown type, `counter\r`) as a
/// plain comment, `# TYPEx counter` as a TYPE line, and accepts HELP escapes and names that
/// expfmt refuses, and a second HELP or TYPE line for a name once a TYPE or HELP line comes
/// between them.
fn check_lines(text: &str) -> Result<usize, Invalid> {
    // expfmt wants every line ended, the last one too.
    if !text.trim_end_matches([' ', '\t']).ends_with('\n') {
        return Err(Invalid::Malformed(
            "the last line does not end with a line break".to_string(),
        ));
    }
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
    Ok(lines)
}

/// Checks one parsed family's samples: no timestamp, values and bounds within a float64,
/// label names, grouping labels, the bound label of buckets and quantiles, no series twice.
fn check_family(
    metric: &prom_text_format_parser::Metric,
    kind: FamilyType,
    identities: &mut Vec<(u64, usize)>,
) -> Result<(), Invalid> {
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
        check_labels(&metric.name, sample)?;
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
    Ok(())
}

/// Checks a sample's label names: valid, given once, none of the grouping key's; and its
/// label values: no raw line break.
fn check_labels(family: &str, sample: &Sample) -> Result<(), Invalid> {
    for (i, label) in sample.labels.iter().enumerate() {
        let name = label.key.as_str();
        if whisk_grouping::is_grouping_label(name) {
            return Err(Invalid::GroupingLabel {
                family: family.to_string(),
                label: label.key.clone(),
            });
        }
        // The parser lets a quoted label value run over a raw newline; the Pushgateway refuses
        // it (400), and the body's lines would not be its samples. A raw carriage return is no
        // line end to either (the Pushgateway stores it, and the SDK writes it as it is: the
        // format has no escape for it).
        if label.value.contains('\n') {
            return Err(Invalid::Malformed(format!(
                "label `{}` of family `{family}` holds a raw line break; write it as \\n",
                label.key
            )));
        }
        if !whisk_grouping::is_label_name(name) || sample.labels[..i].iter().any(|l| l.key == name)
        {
            return Err(Invalid::BadLabelName {
                family: family.to_string(),
                label: label.key.clone(),
            });
        }
    }
    Ok(())
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
        Some(&c) if whisk_grouping::is_metric_name_start(c) => rest
            .bytes()
            .position(|c| !whisk_grouping::is_metric_name_char(c))
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
pub(crate) fn within_float64(token: &str) -> bool {
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
mod tests;
