//! Grafana template variables: finding references and substituting concrete values.

use std::collections::BTreeMap;

use super::error::DashboardError;

/// Grafana's built-in variables a dashboard may use without defining them.
pub const BUILTIN_VARIABLES: &[&str] = &[
    "__interval",
    "__interval_ms",
    "__rate_interval",
    "__rate_interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
    "__dashboard",
];

/// Concrete values for template variables, built-ins included.
///
/// [`Vars::new`] sets the built-ins to a 1 h range and a 1 m rate interval; set the
/// dashboards' own variables (`namespace`, `action`) with [`Vars::with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vars {
    values: BTreeMap<String, String>,
}

impl Default for Vars {
    fn default() -> Self {
        Self::new()
    }
}

impl Vars {
    /// Built-ins only: `$__range` = 1 h, `$__rate_interval` = 1 m, `$__interval` = 15 s.
    pub fn new() -> Self {
        let vars = Self {
            values: BTreeMap::new(),
        };
        vars.with_range_secs(3600)
            .with_rate_interval_secs(60)
            .with_interval_secs(15)
    }

    /// Sets `name` (without `$`) to `value`.
    #[must_use]
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.values.insert(name.to_string(), value.to_string());
        self
    }

    /// Sets `$__range`, `$__range_s` and `$__range_ms`.
    #[must_use]
    pub fn with_range_secs(self, secs: u64) -> Self {
        self.with("__range", &format!("{secs}s"))
            .with("__range_s", &secs.to_string())
            .with("__range_ms", &(secs * 1000).to_string())
    }

    /// Sets `$__rate_interval` and `$__rate_interval_ms`.
    #[must_use]
    pub fn with_rate_interval_secs(self, secs: u64) -> Self {
        self.with("__rate_interval", &format!("{secs}s"))
            .with("__rate_interval_ms", &(secs * 1000).to_string())
    }

    /// Sets `$__interval` and `$__interval_ms`.
    #[must_use]
    pub fn with_interval_secs(self, secs: u64) -> Self {
        self.with("__interval", &format!("{secs}s"))
            .with("__interval_ms", &(secs * 1000).to_string())
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
}

/// One variable reference found in a text: byte range and name.
struct Reference {
    start: usize,
    end: usize,
    name: String,
}

/// Finds `$name`, `${name}`, `${name:format}`, `[[name]]` and `[[name:format]]`. A `$` not
/// followed by a letter or `_` (like `$1` in `label_replace`) is not a reference.
fn references(text: &str) -> Vec<Reference> {
    let bytes = text.as_bytes();
    let ident_len = |from: usize| {
        let mut j = from;
        while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
            j += 1;
        }
        let starts_well = bytes
            .get(from)
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_');
        if starts_well { j - from } else { 0 }
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let braced = bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{');
        let bracketed = bytes[i] == b'[' && bytes.get(i + 1) == Some(&b'[');
        if braced || bracketed {
            let close = if braced { "}" } else { "]]" };
            let n = ident_len(i + 2);
            if n > 0 {
                let name_end = i + 2 + n;
                if let Some(rel) = text[name_end..].find(close) {
                    let between = &text[name_end..name_end + rel];
                    if between.is_empty() || between.starts_with(':') {
                        let end = name_end + rel + close.len();
                        out.push(Reference {
                            start: i,
                            end,
                            name: text[i + 2..name_end].into(),
                        });
                        i = end;
                        continue;
                    }
                }
            }
        } else if bytes[i] == b'$' {
            let n = ident_len(i + 1);
            if n > 0 {
                out.push(Reference {
                    start: i,
                    end: i + 1 + n,
                    name: text[i + 1..i + 1 + n].into(),
                });
                i += 1 + n;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Names of the variables `text` references, in order of appearance (with repeats).
pub fn variable_references(text: &str) -> Vec<String> {
    references(text).into_iter().map(|r| r.name).collect()
}

/// Replaces every variable reference in `expr` with its value from `vars`.
pub fn substitute(expr: &str, vars: &Vars) -> Result<String, DashboardError> {
    let mut out = String::with_capacity(expr.len());
    let mut last = 0;
    for r in references(expr) {
        let value = vars
            .get(&r.name)
            .ok_or_else(|| DashboardError::UnknownVariable {
                name: r.name.clone(),
                expr: expr.to_string(),
            })?;
        out.push_str(&expr[last..r.start]);
        out.push_str(value);
        last = r.end;
    }
    out.push_str(&expr[last..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_all_reference_forms_but_not_regex_groups() {
        let text = r#"a{ns="$namespace", a="${action}", b="${action:regex}", c="[[old]]"}[$__rate_interval] "$1""#;
        assert_eq!(
            variable_references(text),
            ["namespace", "action", "action", "old", "__rate_interval"]
        );
    }

    #[test]
    fn substitutes_values_and_builtins() {
        let vars = Vars::new()
            .with("namespace", "guest")
            .with_rate_interval_secs(120);
        let got = substitute(
            r#"rate(x{namespace="$namespace"}[$__rate_interval]) "$1""#,
            &vars,
        );
        assert_eq!(got.unwrap(), r#"rate(x{namespace="guest"}[120s]) "$1""#);
        assert_eq!(substitute("[$__range_s]", &Vars::new()).unwrap(), "[3600]");
    }

    #[test]
    fn unknown_variable_is_an_error_naming_it() {
        let err = substitute("x{a=\"$action\"}", &Vars::new()).unwrap_err();
        assert!(err.to_string().contains("`$action`"), "{err}");
    }
}
