//! A text-format body (one the gateway's validation accepted, or the collector's own
//! rendering) → the series a Prometheus scraping the Pushgateway (with `honor_labels: true`)
//! would have stored for it, without the grouping key (the caller adds it per write, first, so
//! that it overrides pushed labels of the same name: [`crate::normalize_labels`]).
//!
//! What the Pushgateway does to a body before its `/metrics` page (Go's expfmt; checked against
//! Debian's Pushgateway 1.5.1) and a scrape does after it, done here:
//! - counters, gauges and untyped samples keep their names and labels;
//! - a histogram's or summary's samples are grouped by their labels (without `le`/`quantile`);
//!   each group gets `_sum` and `_count` (0 when the body has none), a histogram `le="+Inf"`
//!   with the `_count` value when the body has no such bucket;
//! - `le` and `quantile` are rewritten as Go writes a float (`strconv` 'g', shortest):
//!   `1.0` → `1`, `1000000` → `1e+06`, `0.00001` → `1e-05`;
//! - a label with an empty value is dropped (a scrape stores none); the first of two series
//!   that then have the same labels is kept, as a scrape keeps the first.

use std::collections::HashSet;

use prom_text_format_parser::{Metric, Sample, ScrapeParseError, Type, ValueType, parse_scrape};

use crate::{Label, normalize_labels};

/// One series of a push: its labels but the grouping key's (sorted, `__name__` included).
pub type SeriesLabels = Vec<Label>;

/// A push, translated: one value per series, in the order of [`Translated::series`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Translated {
    /// The series' labels.
    pub series: Vec<SeriesLabels>,
    /// Their values.
    pub values: Vec<f64>,
}

impl Translated {
    fn push(
        &mut self,
        name: String,
        labels: &[prom_text_format_parser::Label],
        bound: Option<(&'static str, String)>,
        value: f64,
    ) {
        let skip = bound.as_ref().map(|(n, _)| *n);
        let mut all = Vec::with_capacity(labels.len() + 2);
        all.push(Label::new("__name__", name));
        all.extend(
            labels
                .iter()
                .filter(|l| Some(l.key.as_str()) != skip)
                .map(|l| Label::new(l.key.clone(), l.value.clone())),
        );
        if let Some((label, v)) = bound {
            all.push(Label::new(label, v));
        }
        normalize_labels(&mut all);
        self.series.push(all);
        self.values.push(value);
    }

    /// Drops every series whose labels equal an earlier one's.
    fn dedup(&mut self) {
        let mut seen = HashSet::with_capacity(self.series.len());
        let mut keep = Vec::with_capacity(self.series.len());
        for s in &self.series {
            keep.push(seen.insert(s.clone()));
        }
        let mut k = keep.iter();
        self.values.retain(|_| *k.next().unwrap_or(&false));
        let mut k = keep.iter();
        self.series.retain(|_| *k.next().unwrap_or(&false));
    }
}

/// Why a body cannot be translated (not the text format; for a validated body a bug).
#[derive(Debug, thiserror::Error)]
#[error("cannot translate the body: {0}")]
pub struct Untranslatable(String);

/// Translates a text-format body.
pub fn translate(body: &[u8]) -> Result<Translated, Untranslatable> {
    let text = std::str::from_utf8(body).map_err(|e| Untranslatable(e.to_string()))?;
    let mut out = Translated::default();
    if text.trim().is_empty() {
        return Ok(out);
    }
    let metrics = parse(text)?;
    for metric in &metrics {
        match metric.kind {
            Type::Histogram => expand(&mut out, metric, "le")?,
            Type::Summary => expand(&mut out, metric, "quantile")?,
            Type::Counter | Type::Gauge | Type::Untyped => {
                for s in &metric.samples {
                    out.push(metric.name.clone(), &s.labels, None, value(s)?);
                }
            }
        }
    }
    out.dedup();
    Ok(out)
}

/// The families of `text`. A family with a HELP or TYPE line and no sample (the collector
/// renders those) has nothing to store, as on the Pushgateway's page; any other error fails.
fn parse(text: &str) -> Result<Vec<Metric>, Untranslatable> {
    let (metrics, error) = parse_scrape(text);
    match error {
        None => Ok(metrics),
        Some(ScrapeParseError::Collect(errors))
            if errors.iter().all(|e| {
                e.error.ends_with("has only HELP")
                    || e.error.ends_with("has only TYPE")
                    || e.error.ends_with("has no samples")
            }) =>
        {
            Ok(metrics)
        }
        Some(e) => Err(Untranslatable(format!("{e:?}"))),
    }
}

/// A histogram (`bound` = `le`) or summary (`quantile`) expanded as a scrape stores it.
fn expand(
    out: &mut Translated,
    metric: &Metric,
    bound: &'static str,
) -> Result<(), Untranslatable> {
    // One entry per label set (without the bound): its labels, sum, count and whether a
    // `+Inf` bucket was given, in the order of first appearance (as expfmt groups them).
    struct Group<'a> {
        labels: Vec<&'a prom_text_format_parser::Label>,
        sum: f64,
        count: f64,
        inf: bool,
    }
    let mut groups: Vec<Group<'_>> = Vec::new();
    let name = &metric.name;
    for s in &metric.samples {
        let labels: Vec<&prom_text_format_parser::Label> =
            s.labels.iter().filter(|l| l.key != bound).collect();
        let at = match groups.iter().position(|g| same_labels(&g.labels, &labels)) {
            Some(at) => at,
            None => {
                groups.push(Group {
                    labels,
                    sum: 0.0,
                    count: 0.0,
                    inf: false,
                });
                groups.len() - 1
            }
        };
        let v = value(s)?;
        let group = &mut groups[at];
        match s.value.value_type {
            ValueType::Sum => group.sum = v,
            ValueType::Count => group.count = v,
            ValueType::Sample => {
                let raw = s
                    .labels
                    .iter()
                    .find(|l| l.key == bound)
                    .map(|l| l.value.as_str())
                    .ok_or_else(|| {
                        Untranslatable(format!("`{name}` has a sample without `{bound}`"))
                    })?;
                let b: f64 = raw
                    .trim()
                    .parse()
                    .map_err(|_| Untranslatable(format!("`{name}` has {bound}=\"{raw}\"")))?;
                group.inf |= b == f64::INFINITY;
                let suffix = if bound == "le" { "_bucket" } else { "" };
                out.push(
                    format!("{name}{suffix}"),
                    &s.labels,
                    Some((bound, go_float(b))),
                    v,
                );
            }
        }
    }
    for g in &groups {
        let labels: Vec<prom_text_format_parser::Label> =
            g.labels.iter().map(|l| (*l).clone()).collect();
        if bound == "le" && !g.inf {
            out.push(
                format!("{name}_bucket"),
                &labels,
                Some(("le", "+Inf".to_string())),
                g.count,
            );
        }
        out.push(format!("{name}_sum"), &labels, None, g.sum);
        out.push(format!("{name}_count"), &labels, None, g.count);
    }
    Ok(())
}

fn same_labels(
    a: &[&prom_text_format_parser::Label],
    b: &[&prom_text_format_parser::Label],
) -> bool {
    a.len() == b.len() && a.iter().all(|l| b.contains(l))
}

fn value(s: &Sample) -> Result<f64, Untranslatable> {
    s.value
        .value
        .trim()
        .parse::<f64>()
        .map_err(|_| Untranslatable(format!("value `{}`", s.value.value.as_str())))
}

/// `f` as Go's expfmt writes a float in a label: `strconv.FormatFloat(f, 'g', -1, 64)`, with
/// `+Inf`, `-Inf` and `NaN` spelled so.
pub fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if f == 0.0 {
        return "0".to_string();
    }
    // Rust's `{:e}` writes the shortest digits that read back as `f`, as Go's -1 precision does.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if f < 0.0 { "-" } else { "" };
    let nd = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{dot}{rest}e{esign}{:02}", exp.abs());
    }
    let dp = exp + 1; // digits before the decimal point
    let body = if dp <= 0 {
        format!(
            "0.{}{digits}",
            "0".repeat(usize::try_from(-dp).unwrap_or(0))
        )
    } else if dp >= nd {
        format!(
            "{digits}{}",
            "0".repeat(usize::try_from(dp - nd).unwrap_or(0))
        )
    } else {
        let (int, frac) = digits.split_at(usize::try_from(dp).unwrap_or(0));
        format!("{int}.{frac}")
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(t: &Translated) -> Vec<String> {
        let mut lines: Vec<String> = t
            .series
            .iter()
            .zip(&t.values)
            .map(|(labels, v)| {
                let l: Vec<String> = labels
                    .iter()
                    .map(|l| format!("{}={}", l.name, l.value))
                    .collect();
                format!("{} {v}", l.join(","))
            })
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn floats_in_bounds_are_written_as_go_writes_them() {
        for (f, s) in [
            (1.0, "1"),
            (0.0, "0"),
            (-1.0, "-1"),
            (1_000_000.0, "1e+06"),
            (100_000.0, "100000"),
            (0.00001, "1e-05"),
            (0.0001, "0.0001"),
            (123_456_789.0, "1.23456789e+08"),
            (0.005, "0.005"),
            (2.5, "2.5"),
            (0.25, "0.25"),
            (1e21, "1e+21"),
            (-0.5, "-0.5"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(go_float(f), s, "{f}");
        }
    }

    #[test]
    fn a_histogram_is_expanded_as_the_pushgateway_exposes_it() {
        // The case tried against Pushgateway 1.5.1: le rewritten, +Inf added with the count.
        let body = b"# TYPE h histogram\nh_bucket{le=\"1000000\"} 1\nh_bucket{le=\"1.0\"} 1\nh_sum 3\nh_count 2\n# TYPE h2 histogram\nh2_bucket{le=\"+Inf\"} 4\n";
        let t = translate(body).unwrap();
        assert_eq!(
            rendered(&t),
            [
                "__name__=h2_bucket,le=+Inf 4",
                "__name__=h2_count 0",
                "__name__=h2_sum 0",
                "__name__=h_bucket,le=+Inf 2",
                "__name__=h_bucket,le=1 1",
                "__name__=h_bucket,le=1e+06 1",
                "__name__=h_count 2",
                "__name__=h_sum 3",
            ]
        );
    }

    #[test]
    fn a_summary_gets_sum_and_count_per_label_set_and_empty_labels_are_dropped() {
        let body = b"# TYPE s summary\ns{quantile=\"0.50\",k=\"a\"} 1\ns_sum{k=\"a\"} 1\ns_count{k=\"a\"} 3\ns{quantile=\"1e-1\",k=\"\"} 2\n";
        let t = translate(body).unwrap();
        assert_eq!(
            rendered(&t),
            [
                "__name__=s,k=a,quantile=0.5 1",
                "__name__=s,quantile=0.1 2",
                "__name__=s_count 0",
                "__name__=s_count,k=a 3",
                "__name__=s_sum 0",
                "__name__=s_sum,k=a 1",
            ]
        );
    }

    #[test]
    fn plain_samples_keep_names_labels_and_values_sorted() {
        let body = b"# TYPE jobs_total counter\njobs_total{z=\"1\",a=\"2\"} 3\nup NaN\n# TYPE g gauge\ng{e=\"\"} -Inf\n";
        let t = translate(body).unwrap();
        assert_eq!(t.series[0][1].name, "a");
        assert_eq!(t.series[0][2].name, "z");
        let r = rendered(&t);
        assert!(r.contains(&"__name__=g -inf".to_string()), "{r:?}");
        assert!(
            r.contains(&"__name__=jobs_total,a=2,z=1 3".to_string()),
            "{r:?}"
        );
        assert!(r.contains(&"__name__=up NaN".to_string()), "{r:?}");
    }

    #[test]
    fn families_without_samples_are_skipped_and_bad_text_is_refused() {
        let body =
            b"# HELP a_total x\n# TYPE a_total counter\n# TYPE b gauge\nb 1\n# TYPE c gauge\n";
        let t = translate(body).unwrap();
        assert_eq!(rendered(&t), ["__name__=b 1"]);
        assert!(translate(b"b{ 1\n").is_err());
    }

    #[test]
    fn an_empty_body_has_no_series() {
        assert_eq!(translate(b"").unwrap(), Translated::default());
        assert_eq!(translate(b"\n").unwrap(), Translated::default());
    }
}
