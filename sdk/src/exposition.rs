//! The text exposition (format 0.0.4) of gathered metric families, written straight into the
//! push buffer.
//!
//! Byte for byte what `prometheus::TextEncoder` writes (a test compares the two), without its
//! per-sample allocations: `TextEncoder` formats every value and every `le` bound into a new
//! `String`, and formatting floats was the largest single cost of a push. Here integral values
//! (counters, bucket counts) are written as integers, `le` bounds are formatted once and
//! cached, and nothing is allocated per sample. Families of other types than counter, gauge
//! and histogram (the SDK's API makes no others) are left to `TextEncoder`.

use std::collections::HashMap;
use std::io::Write;

use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

/// Largest magnitude below which every integral `f64` is written exactly as an integer by both
/// `f64`'s and `i64`'s `Display` (2^53).
const EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// Encodes families into a buffer; keeps the formatted bucket bounds between calls.
#[derive(Debug, Default)]
pub(crate) struct TextWriter {
    bounds: HashMap<u64, Box<str>>,
}

impl TextWriter {
    /// Appends the exposition of `families` to `buf`. Errors like `TextEncoder` (a family
    /// without metrics or name, which `Registry::gather` never returns).
    pub(crate) fn encode(
        &mut self,
        families: &[MetricFamily],
        buf: &mut Vec<u8>,
    ) -> prometheus::Result<()> {
        let supported = |mf: &MetricFamily| {
            matches!(
                mf.get_field_type(),
                MetricType::COUNTER | MetricType::GAUGE | MetricType::HISTOGRAM
            )
        };
        if !families.iter().all(supported) {
            return TextEncoder::new().encode(families, buf);
        }
        for mf in families {
            if mf.get_metric().is_empty() {
                return Err(prometheus::Error::Msg(format!(
                    "MetricFamily has no metrics: {mf:?}"
                )));
            }
            if mf.name().is_empty() {
                return Err(prometheus::Error::Msg(format!(
                    "MetricFamily has no name: {mf:?}"
                )));
            }
            self.family(mf, buf);
        }
        Ok(())
    }

    fn family(&mut self, mf: &MetricFamily, buf: &mut Vec<u8>) {
        let name = mf.name();
        let help = mf.help();
        if !help.is_empty() {
            buf.extend_from_slice(b"# HELP ");
            buf.extend_from_slice(name.as_bytes());
            buf.push(b' ');
            escape(help, false, buf);
            buf.push(b'\n');
        }
        let kind = mf.get_field_type();
        let kind_name: &[u8] = match kind {
            MetricType::COUNTER => b"counter",
            MetricType::GAUGE => b"gauge",
            _ => b"histogram",
        };
        buf.extend_from_slice(b"# TYPE ");
        buf.extend_from_slice(name.as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(kind_name);
        buf.push(b'\n');
        for m in mf.get_metric() {
            match kind {
                MetricType::COUNTER => {
                    sample(buf, name, "", m, None, m.get_counter().get_value());
                }
                MetricType::GAUGE => sample(buf, name, "", m, None, m.get_gauge().get_value()),
                _ => self.histogram(buf, name, m),
            }
        }
    }

    fn histogram(&mut self, buf: &mut Vec<u8>, name: &str, m: &Metric) {
        let h = m.get_histogram();
        let mut inf_seen = false;
        for b in h.get_bucket() {
            let bound = b.upper_bound();
            let text = self
                .bounds
                .entry(bound.to_bits())
                .or_insert_with(|| bound.to_string().into_boxed_str());
            sample(
                buf,
                name,
                "_bucket",
                m,
                Some(text),
                b.cumulative_count() as f64,
            );
            if bound.is_sign_positive() && bound.is_infinite() {
                inf_seen = true;
            }
        }
        let count = h.get_sample_count() as f64;
        if !inf_seen {
            sample(buf, name, "_bucket", m, Some("+Inf"), count);
        }
        sample(buf, name, "_sum", m, None, h.get_sample_sum());
        sample(buf, name, "_count", m, None, count);
    }
}

/// `name{labels,le="bound"} value[ timestamp]\n`
fn sample(buf: &mut Vec<u8>, name: &str, suffix: &str, m: &Metric, le: Option<&str>, value: f64) {
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(suffix.as_bytes());
    labels(m.get_label(), le, buf);
    buf.push(b' ');
    number(value, buf);
    let timestamp = m.timestamp_ms();
    if timestamp != 0 {
        buf.push(b' ');
        // Writing into a Vec cannot fail.
        let _ = write!(buf, "{timestamp}");
    }
    buf.push(b'\n');
}

fn labels(pairs: &[LabelPair], le: Option<&str>, buf: &mut Vec<u8>) {
    if pairs.is_empty() && le.is_none() {
        return;
    }
    let mut separator = b'{';
    for lp in pairs {
        buf.push(separator);
        buf.extend_from_slice(lp.name().as_bytes());
        buf.extend_from_slice(b"=\"");
        escape(lp.value(), true, buf);
        buf.push(b'"');
        separator = b',';
    }
    if let Some(bound) = le {
        buf.push(separator);
        buf.extend_from_slice(b"le=\"");
        escape(bound, true, buf);
        buf.push(b'"');
    }
    buf.push(b'}');
}

/// A value as `f64`'s `Display` writes it (what `TextEncoder` uses), integers the fast way.
fn number(value: f64, buf: &mut Vec<u8>) {
    let integral = value.fract() == 0.0 && value.abs() < EXACT_INTEGER;
    // `-0.0` displays as `-0`, which the integer path would lose.
    if integral && !(value == 0.0 && value.is_sign_negative()) {
        if value < 0.0 {
            buf.push(b'-');
        }
        // |value| < 2^53: the cast is exact
        integer(value.abs() as u64, buf);
    } else {
        let _ = write!(buf, "{value}");
    }
}

/// Decimal digits of `n` (what `Display` writes, without the formatter machinery).
fn integer(mut n: u64, buf: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// Escapes `\` and newline (and `"` in label values) with a backslash, as `TextEncoder` does
/// (the rule is `whisk_grouping`'s, shared with the collector's exposition).
fn escape(text: &str, quote: bool, buf: &mut Vec<u8>) {
    let escaped = if quote {
        whisk_grouping::escape_label_value(text)
    } else {
        whisk_grouping::escape_help(text)
    };
    buf.extend_from_slice(escaped.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{
        Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry,
    };

    fn both(families: &[MetricFamily]) -> (String, String) {
        let mut ours = Vec::new();
        TextWriter::default().encode(families, &mut ours).unwrap();
        let mut theirs = Vec::new();
        TextEncoder::new().encode(families, &mut theirs).unwrap();
        (
            String::from_utf8(ours).unwrap(),
            String::from_utf8(theirs).unwrap(),
        )
    }

    #[test]
    fn writes_exactly_what_the_prometheus_text_encoder_writes() {
        let r = Registry::new();
        let c = IntCounterVec::new(
            Opts::new("c_total", "help with \\ backslash\nand \"quotes\""),
            &["l", "m"],
        )
        .unwrap();
        c.with_label_values(&["a\"b\\c\nd", ""]).inc_by(7);
        c.with_label_values(&["名前 🚀", "x"]).inc_by(u64::MAX / 2);
        r.register(Box::new(c)).unwrap();
        let plain = IntCounter::new("plain_total", "p").unwrap();
        r.register(Box::new(plain)).unwrap();
        let g = GaugeVec::new(Opts::new("g", "gauges"), &["v"]).unwrap();
        let values = [
            0.0,
            -0.0,
            1.5,
            -2.0,
            1e-9,
            1e21,
            123_456_789.0,
            10.0,
            -7.0,
            4_503_599_627_370_497.0,
            9_007_199_254_740_993.0,
            -9_007_199_254_740_991.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::MIN_POSITIVE,
            0.1 + 0.2,
        ];
        for (i, v) in values.iter().enumerate() {
            g.with_label_values(&[&i.to_string()]).set(*v);
        }
        r.register(Box::new(g)).unwrap();
        let unlabelled = Gauge::new("u", "u").unwrap();
        unlabelled.set(1_700_000_000.123);
        r.register(Box::new(unlabelled)).unwrap();
        let h = Histogram::with_opts(
            HistogramOpts::new("h_seconds", "h").buckets(vec![0.005, 0.25, 1.0, 300.0]),
        )
        .unwrap();
        for v in [0.001, 0.3, 1000.0] {
            h.observe(v);
        }
        r.register(Box::new(h)).unwrap();
        let with_inf = prometheus::HistogramVec::new(
            HistogramOpts::new("hi", "with an explicit +Inf bound")
                .buckets(vec![1.0, f64::INFINITY]),
            &["k"],
        )
        .unwrap();
        with_inf.with_label_values(&["x"]).observe(2.0);
        r.register(Box::new(with_inf)).unwrap();

        let families = r.gather();
        let (ours, theirs) = both(&families);
        // the explicit +Inf bound is not repeated
        assert_eq!(theirs.matches("hi_bucket{").count(), 2, "{theirs}");
        assert_eq!(ours, theirs);
        // the second call uses the cached bounds
        let mut writer = TextWriter::default();
        let mut first = Vec::new();
        writer.encode(&families, &mut first).unwrap();
        let mut second = Vec::new();
        writer.encode(&families, &mut second).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn refuses_a_family_without_metrics_like_the_text_encoder() {
        let mut mf = MetricFamily::default();
        mf.set_name("empty".to_string());
        mf.set_field_type(MetricType::COUNTER);
        let mut buf = Vec::new();
        assert!(
            TextWriter::default()
                .encode(&[mf.clone()], &mut buf)
                .is_err()
        );
        assert!(TextEncoder::new().encode(&[mf], &mut Vec::new()).is_err());
    }

    #[test]
    fn leaves_summaries_to_the_text_encoder() {
        let mut q = prometheus::proto::Quantile::default();
        q.set_quantile(0.5);
        q.set_value(3.0);
        let mut s = prometheus::proto::Summary::default();
        s.set_sample_count(2);
        s.set_sample_sum(6.5);
        s.set_quantile(vec![q]);
        let mut m = Metric::default();
        m.set_summary(s);
        let mut mf = MetricFamily::default();
        mf.set_name("s".to_string());
        mf.set_help("summary".to_string());
        mf.set_field_type(MetricType::SUMMARY);
        mf.set_metric(vec![m]);
        let (ours, theirs) = both(&[mf]);
        assert_eq!(ours, theirs);
        assert!(ours.contains("s{quantile=\"0.5\"} 3\n"), "{ours}");
    }
}
