//! The two expositions `/metrics` answers in: Prometheus text format 0.0.4 (the default, and
//! what the push sends: byte for byte what it always was) and OpenMetrics 1.0.0, chosen when
//! the scraper's `Accept` asks for it (Prometheus does, first). Only OpenMetrics carries the
//! exemplars of the platform time histograms.
//!
//! In OpenMetrics every family keeps the series names of the text format: a counter family
//! whose samples end in `_total` is declared without it, a counter without `_total` (such as
//! `openwhisk_action_status`, as user-events names it) goes out as `unknown`.

use std::fmt::Write as _;

use crate::aggregate::{ActivationId, Exemplar};
use crate::render::{escape_into, push_f64};

/// Which exposition a render writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Exposition {
    /// Prometheus text format 0.0.4, no exemplars.
    #[default]
    Text,
    /// OpenMetrics 1.0.0 with exemplars on the time histograms' bucket lines; a whole answer
    /// ends with `# EOF`.
    OpenMetrics,
}

/// Content type of the text format.
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics 1.0.0.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Exposition {
    /// The `Content-Type` of an answer in this exposition.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Text => TEXT,
            Self::OpenMetrics => OPENMETRICS,
        }
    }

    /// The exposition an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` (version 1.0.0, 0.0.1 or none) with a quality at least
    /// that of anything the text format matches (`text/plain`, `text/*`, `*/*`); the text
    /// format otherwise, and without a header.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let (mut om, mut text) = (0.0f32, 0.0f32);
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let (mut q, mut version) = (1.0f32, None);
            for p in parts {
                let Some((k, v)) = p.split_once('=') else {
                    continue;
                };
                match k.trim().to_ascii_lowercase().as_str() {
                    "q" => q = v.trim().parse().unwrap_or(0.0),
                    "version" => version = Some(v.trim().trim_matches('"').to_string()),
                    _ => {}
                }
            }
            match media.as_str() {
                "application/openmetrics-text"
                    if matches!(version.as_deref(), None | Some("1.0.0" | "0.0.1")) =>
                {
                    om = om.max(q);
                }
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if om > 0.0 && om >= text {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }
}

/// The name and type a family is declared with in OpenMetrics, from its text-format ones.
pub(crate) fn family<'n>(name: &'n str, kind: &'n str) -> (&'n str, &'n str) {
    match kind {
        "counter" => name
            .strip_suffix("_total")
            .map_or((name, "unknown"), |base| (base, "counter")),
        "untyped" => (name, "unknown"),
        _ => (name, kind),
    }
}

/// Appends ` # {activation_id="…"} <value> <timestamp>` (after a bucket's value).
pub(crate) fn push_exemplar(out: &mut String, ex: &Exemplar) {
    out.push_str(" # {");
    out.push_str(crate::aggregate::EXEMPLAR_LABEL);
    out.push_str("=\"");
    match &ex.id {
        ActivationId::Text(s) => escape_into(out, s),
        hex @ ActivationId::Hex(_) => {
            let _ = write!(out, "{hex}");
        }
    }
    out.push_str("\"} ");
    push_f64(out, ex.value);
    let _ = write!(
        out,
        " {}.{:03}",
        ex.timestamp_ms.div_euclid(1000),
        ex.timestamp_ms.rem_euclid(1000)
    );
}

/// Rewrites text format 0.0.4 (the `prometheus` crate's encoder output for the collector's
/// own families) as OpenMetrics: `# HELP`/`# TYPE` name the family as [`family`] does, help
/// texts get OpenMetrics' escaping of `"`, samples stay as they are. No `# EOF`.
pub(crate) fn from_text(text: &str, out: &mut String) {
    let mut help: Option<(&str, &str)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (fam, kind) = family(name, kind);
            if let Some((_, text)) = help.take().filter(|(n, _)| *n == name) {
                out.push_str("# HELP ");
                out.push_str(fam);
                out.push(' ');
                // Text format escapes `\` and line breaks already; OpenMetrics adds `"`.
                out.push_str(&text.replace('"', "\\\""));
                out.push('\n');
            }
            let _ = writeln!(out, "# TYPE {fam} {kind}");
        } else if line.is_empty() || line.starts_with('#') {
            continue;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
}

/// The line that ends an OpenMetrics answer.
pub(crate) const EOF: &str = "# EOF\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_scrape_accept_gets_openmetrics_and_plain_clients_get_text() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(
            Exposition::negotiate(Some(prometheus)),
            Exposition::OpenMetrics
        );
        assert_eq!(
            Exposition::negotiate(Some("application/openmetrics-text")),
            Exposition::OpenMetrics
        );
        for text in [
            None,
            Some(""),
            Some("*/*"),
            Some("text/plain"),
            Some("text/plain;version=0.0.4"),
            Some("application/openmetrics-text;q=0.2,text/plain;q=0.9"),
            Some("application/openmetrics-text;version=2.0.0"),
            Some("application/openmetrics-text;q=0"),
            Some("application/json"),
        ] {
            assert_eq!(Exposition::negotiate(text), Exposition::Text, "{text:?}");
        }
    }

    #[test]
    fn families_keep_their_series_names_and_untypable_counters_are_unknown() {
        assert_eq!(family("a_total", "counter"), ("a", "counter"));
        assert_eq!(
            family("openwhisk_action_status", "counter"),
            ("openwhisk_action_status", "unknown")
        );
        assert_eq!(family("g", "gauge"), ("g", "gauge"));
        assert_eq!(family("h", "histogram"), ("h", "histogram"));
        assert_eq!(family("u", "untyped"), ("u", "unknown"));
    }

    #[test]
    fn own_text_families_are_rewritten_with_openmetrics_headers() {
        let text = "# HELP x_total Events under action=\"o\" \\\\ here\n# TYPE x_total counter\nx_total{a=\"b\"} 3\n# HELP y Live\n# TYPE y gauge\ny 1\n";
        let mut out = String::new();
        from_text(text, &mut out);
        assert_eq!(
            out,
            "# HELP x Events under action=\\\"o\\\" \\\\ here\n# TYPE x counter\nx_total{a=\"b\"} 3\n# HELP y Live\n# TYPE y gauge\ny 1\n"
        );
    }

    #[test]
    fn an_exemplar_has_its_id_value_and_timestamp_in_seconds() {
        let mut out = String::new();
        push_exemplar(
            &mut out,
            &Exemplar {
                id: ActivationId::new("841e3f99f40346429e3f99f4000000ab")
                    .unwrap()
                    .unwrap(),
                value: 0.43,
                timestamp_ms: 1_733_500_000_123,
            },
        );
        assert_eq!(
            out,
            " # {activation_id=\"841e3f99f40346429e3f99f4000000ab\"} 0.43 1733500000.123"
        );
        out.clear();
        push_exemplar(
            &mut out,
            &Exemplar {
                id: ActivationId::new("a\"b").unwrap().unwrap(),
                value: 2.0,
                timestamp_ms: 5,
            },
        );
        assert_eq!(out, " # {activation_id=\"a\\\"b\"} 2 0.005");
    }
}
