//! A Pushgateway group and its URL path.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// A Pushgateway grouping key: the `job` and further labels, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupingKey {
    job: String,
    labels: Vec<(String, String)>,
}

/// Why a path is not a grouping-key path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/metrics/job/` or `/metrics/job@base64/`.
    #[error("not a group path: it must start with /metrics/job/<job> or /metrics/job@base64/<job>")]
    NotAGroupPath,
    /// A label name has no value segment after it.
    #[error("label `{0}` has no value segment")]
    MissingValue(String),
    /// An `@base64` value does not decode to UTF-8.
    #[error("label `{0}`: the @base64 value is not base64 of UTF-8 text")]
    BadBase64(String),
    /// A label name is empty, invalid, or appears twice.
    #[error("label name `{0}` is empty, invalid or repeated")]
    BadLabel(String),
    /// A plain value is empty (only `@base64` with `=` may carry an empty value).
    #[error("label `{0}`: empty value in a plain segment (use @base64/=)")]
    EmptyValue(String),
}

impl GroupingKey {
    /// A group of `job` with no further labels.
    pub fn new(job: impl Into<String>) -> Self {
        Self {
            job: job.into(),
            labels: Vec::new(),
        }
    }

    /// Adds a label (kept in the order given).
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((name.into(), value.into()));
        self
    }

    /// The job.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The labels other than `job`, in order.
    pub fn labels(&self) -> &[(String, String)] {
        &self.labels
    }

    /// The value of label `name` (`job` included).
    pub fn get(&self, name: &str) -> Option<&str> {
        if name == "job" {
            return Some(&self.job);
        }
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The group's path: `/metrics/job@base64/<job>` then `/<label>@base64/<value>` for each
    /// label. Every value is encoded, so any text (slashes, empty values) is safe.
    pub fn path(&self) -> String {
        let mut path = String::with_capacity(32 + 16 * self.labels.len());
        path.push_str("/metrics/job@base64/");
        path.push_str(&encode_segment(&self.job));
        for (name, value) in &self.labels {
            path.push('/');
            path.push_str(name);
            path.push_str("@base64/");
            path.push_str(&encode_segment(value));
        }
        path
    }

    /// Reads a group path as the Pushgateway does: plain `<label>/<value>` segments and
    /// `<label>@base64/<value>` segments (URL-safe or standard alphabet, padding optional, `=`
    /// for the empty value). A trailing `/` is tolerated.
    pub fn from_path(path: &str) -> Result<Self, PathError> {
        let rest = path
            .strip_prefix("/metrics/")
            .ok_or(PathError::NotAGroupPath)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut segments = rest.split('/');
        let mut key: Option<Self> = None;
        while let Some(name) = segments.next() {
            let (label, encoded) = match name.strip_suffix("@base64") {
                Some(label) => (label, true),
                None => (name, false),
            };
            let raw = segments
                .next()
                .ok_or_else(|| PathError::MissingValue(label.to_string()))?;
            let value = if encoded {
                decode_segment(raw).ok_or_else(|| PathError::BadBase64(label.to_string()))?
            } else if raw.is_empty() {
                return Err(PathError::EmptyValue(label.to_string()));
            } else {
                raw.to_string()
            };
            match key.as_mut() {
                None if label == "job" => key = Some(Self::new(value)),
                None => return Err(PathError::NotAGroupPath),
                Some(k) => {
                    if !crate::names::is_label_name(label)
                        || label == "job"
                        || k.get(label).is_some()
                    {
                        return Err(PathError::BadLabel(label.to_string()));
                    }
                    k.labels.push((label.to_string(), value));
                }
            }
        }
        key.ok_or(PathError::NotAGroupPath)
    }
}

/// Encodes a value for a `<label>@base64/<value>` segment: RFC 4648 URL-safe base64 without
/// padding, and `=` for the empty value (the Pushgateway requires exactly that).
pub fn encode_segment(value: &str) -> String {
    if value.is_empty() {
        "=".to_string()
    } else {
        URL_SAFE_NO_PAD.encode(value)
    }
}

fn decode_segment(raw: &str) -> Option<String> {
    let trimmed = raw.trim_end_matches('=');
    if trimmed.is_empty() {
        return Some(String::new());
    }
    let bytes = URL_SAFE_NO_PAD.decode(trimmed).ok().or_else(|| {
        let mut padded = trimmed.to_string();
        while padded.len() % 4 != 0 {
            padded.push('=');
        }
        STANDARD.decode(padded).ok()
    })?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_values_encode_as_a_single_equals_sign() {
        assert_eq!(encode_segment(""), "=");
        assert_eq!(encode_segment("/var/tmp"), "L3Zhci90bXA");
    }

    #[test]
    fn paths_encode_every_value() {
        let key = GroupingKey::new("a/b")
            .with("instance", "")
            .with("action", "pkg/x");
        assert_eq!(
            key.path(),
            "/metrics/job@base64/YS9i/instance@base64/=/action@base64/cGtnL3g"
        );
    }

    #[test]
    fn plain_and_standard_base64_segments_are_read_as_the_pushgateway_reads_them() {
        let key =
            GroupingKey::from_path("/metrics/job/openwhisk_actions/instance@base64/Pz8-/ns/guest/")
                .unwrap();
        assert_eq!(key.job(), "openwhisk_actions");
        assert_eq!(key.get("instance"), Some("??>"));
        assert_eq!(key.get("ns"), Some("guest"));
        // `+` only occurs in the standard alphabet (`/` cannot: it separates segments).
        let std_alphabet = GroupingKey::from_path("/metrics/job/j/instance@base64/Pj4+").unwrap();
        assert_eq!(std_alphabet.get("instance"), Some(">>>"));
        let padded = GroupingKey::from_path("/metrics/job/j/a@base64/YQ==").unwrap();
        assert_eq!(padded.get("a"), Some("a"));
    }

    #[test]
    fn malformed_paths_are_errors_that_name_the_problem() {
        assert_eq!(
            GroupingKey::from_path("/metrics"),
            Err(PathError::NotAGroupPath)
        );
        assert_eq!(
            GroupingKey::from_path("/api/v1/metrics"),
            Err(PathError::NotAGroupPath)
        );
        assert_eq!(
            GroupingKey::from_path("/metrics/instance/x/job/j"),
            Err(PathError::NotAGroupPath)
        );
        assert_eq!(
            GroupingKey::from_path("/metrics/job/j/instance"),
            Err(PathError::MissingValue("instance".into()))
        );
        assert_eq!(
            GroupingKey::from_path("/metrics/job/j/a/1/a/2"),
            Err(PathError::BadLabel("a".into()))
        );
        assert_eq!(
            GroupingKey::from_path("/metrics/job/j/job/k"),
            Err(PathError::BadLabel("job".into()))
        );
        assert_eq!(
            GroupingKey::from_path("/metrics/job/j/__x/1"),
            Err(PathError::BadLabel("__x".into()))
        );
        assert_eq!(
            GroupingKey::from_path("/metrics/job/j/a@base64/!!"),
            Err(PathError::BadBase64("a".into()))
        );
        assert_eq!(
            GroupingKey::from_path("/metrics/job/j/a//"),
            Err(PathError::EmptyValue("a".into()))
        );
    }

    proptest! {
        #[test]
        fn any_key_survives_path_and_back(
            job in ".{1,20}",
            values in proptest::collection::vec(".{0,20}", 0..4),
        ) {
            let mut key = GroupingKey::new(job);
            for (i, v) in values.into_iter().enumerate() {
                key = key.with(format!("l{i}"), v);
            }
            prop_assert_eq!(GroupingKey::from_path(&key.path()), Ok(key));
        }
    }
}
