//! Metric and label names as Prometheus' text format and the Pushgateway accept them.

/// Why a metric or label name is not valid; `Display` says what is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("the name is empty")]
    Empty,
    /// A metric name starts with something else than a letter, `_` or `:`.
    #[error("the first character must be a letter, `_` or `:`")]
    MetricStart,
    /// A metric name holds something else than ASCII letters, digits, `_` and `:`.
    #[error("only ASCII letters, digits, `_` and `:` are allowed")]
    MetricChar,
    /// A label name starts with something else than a letter or `_`.
    #[error("the first character must be a letter or `_`")]
    LabelStart,
    /// A label name holds something else than ASCII letters, digits and `_`.
    #[error("only ASCII letters, digits and `_` are allowed")]
    LabelChar,
    /// A label name starts with `__`.
    #[error("names starting with `__` are reserved for Prometheus")]
    LabelReserved,
}

impl NameError {
    /// The same text as `Display`, for errors that hold a `&'static str`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Empty => "the name is empty",
            Self::MetricStart => "the first character must be a letter, `_` or `:`",
            Self::MetricChar => "only ASCII letters, digits, `_` and `:` are allowed",
            Self::LabelStart => "the first character must be a letter or `_`",
            Self::LabelChar => "only ASCII letters, digits and `_` are allowed",
            Self::LabelReserved => "names starting with `__` are reserved for Prometheus",
        }
    }
}

/// Whether `b` may start a metric name (`[a-zA-Z_:]`): also how a sample line starts.
pub fn is_metric_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

/// Whether `b` may continue a metric name (`[a-zA-Z0-9_:]`).
pub fn is_metric_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// Checks a metric (family) name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
///
/// ```
/// use whisk_grouping::{NameError, check_metric_name};
///
/// assert_eq!(check_metric_name("orders_placed:rate5m"), Ok(()));
/// assert_eq!(check_metric_name("1x"), Err(NameError::MetricStart));
/// ```
pub fn check_metric_name(name: &str) -> Result<(), NameError> {
    let bytes = name.as_bytes();
    match bytes.first() {
        None => Err(NameError::Empty),
        Some(&b) if !is_metric_name_start(b) => Err(NameError::MetricStart),
        Some(_) if !bytes.iter().all(|&b| is_metric_name_char(b)) => Err(NameError::MetricChar),
        Some(_) => Ok(()),
    }
}

/// Checks a label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (Prometheus' own).
///
/// ```
/// use whisk_grouping::{NameError, check_label_name};
///
/// assert_eq!(check_label_name("region"), Ok(()));
/// assert_eq!(check_label_name("__name__"), Err(NameError::LabelReserved));
/// ```
pub fn check_label_name(name: &str) -> Result<(), NameError> {
    let bytes = name.as_bytes();
    match bytes.first() {
        None => Err(NameError::Empty),
        Some(&b) if !(b.is_ascii_alphabetic() || b == b'_') => Err(NameError::LabelStart),
        Some(_)
            if !bytes
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            Err(NameError::LabelChar)
        }
        Some(_) if name.starts_with("__") => Err(NameError::LabelReserved),
        Some(_) => Ok(()),
    }
}

/// Whether `name` is a valid label name ([`check_label_name`]).
pub fn is_label_name(name: &str) -> bool {
    check_label_name(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_follow_the_text_format() {
        for ok in ["a", "_a", ":a", "ok_name:sub_total", "A9"] {
            assert_eq!(check_metric_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_metric_name(""), Err(NameError::Empty));
        for (bad, why) in [
            ("1abc", NameError::MetricStart),
            ("a-b", NameError::MetricChar),
            ("a b", NameError::MetricChar),
            ("ünïcode", NameError::MetricStart),
            ("aé", NameError::MetricChar),
        ] {
            assert_eq!(check_metric_name(bad), Err(why), "{bad}");
        }
    }

    #[test]
    fn label_names_follow_the_text_format_and_leave_double_underscore_to_prometheus() {
        for ok in ["a", "_kind", "region9"] {
            assert!(is_label_name(ok), "{ok}");
        }
        for (bad, why) in [
            ("", NameError::Empty),
            ("1x", NameError::LabelStart),
            ("a:b", NameError::LabelChar),
            ("a-b", NameError::LabelChar),
            ("__x", NameError::LabelReserved),
        ] {
            assert_eq!(check_label_name(bad), Err(why), "{bad}");
            assert_eq!(why.reason(), why.to_string());
        }
    }
}
