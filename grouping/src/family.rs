//! A metric family's type and the series names it writes.

use std::fmt;

/// Every suffix a histogram's or summary's series add to the family name.
pub const SERIES_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// A metric family's type, as the text format, the Pushgateway and Prometheus see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

    /// Reads the text format's spelling or the Pushgateway's JSON one (`COUNTER`, …).
    ///
    /// ```
    /// use whisk_grouping::FamilyType;
    ///
    /// assert_eq!(FamilyType::parse("HISTOGRAM"), Some(FamilyType::Histogram));
    /// assert_eq!(FamilyType::parse("gauge"), Some(FamilyType::Gauge));
    /// assert_eq!(FamilyType::parse("GAUGE_HISTOGRAM"), None);
    /// ```
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Counter,
            Self::Gauge,
            Self::Histogram,
            Self::Summary,
            Self::Untyped,
        ]
        .into_iter()
        .find(|t| s.eq_ignore_ascii_case(t.as_str()))
    }

    /// The suffixes this type's series add to the family name (`_bucket`, `_sum`, `_count` for
    /// a histogram, `_sum` and `_count` for a summary, none otherwise).
    pub fn suffixes(self) -> &'static [&'static str] {
        match self {
            Self::Histogram => &SERIES_SUFFIXES,
            Self::Summary => &SERIES_SUFFIXES[1..],
            _ => &[],
        }
    }
}

impl fmt::Display for FamilyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_read_both_spellings_and_name_their_suffixes() {
        for t in [
            FamilyType::Counter,
            FamilyType::Gauge,
            FamilyType::Histogram,
            FamilyType::Summary,
            FamilyType::Untyped,
        ] {
            assert_eq!(FamilyType::parse(t.as_str()), Some(t));
            assert_eq!(FamilyType::parse(&t.as_str().to_uppercase()), Some(t));
        }
        assert_eq!(
            FamilyType::Histogram.suffixes(),
            ["_bucket", "_sum", "_count"]
        );
        assert_eq!(FamilyType::Summary.suffixes(), ["_sum", "_count"]);
        assert!(FamilyType::Counter.suffixes().is_empty());
    }
}
