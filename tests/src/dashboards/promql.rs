//! A small PromQL tokenizer: enough to find the metric names our dashboard queries select, and
//! to turn Grafana's `label_values(…)` variable queries into PromQL.

use std::collections::BTreeSet;

/// Keywords followed by a parenthesised list of label names (not metrics).
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Aggregation operators: may be followed by `by`/`without` before their `(`.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
/// Other words that are never metric names.
const OTHER_KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "atan2", "inf", "nan"];

/// The metric names an expression selects: identifiers that are not function or aggregation
/// names, keywords, label names inside `{…}` or label lists after `by`/`on`/…, strings,
/// numbers or durations. Selectors without a name (`{__name__=~"…"}`) contribute nothing.
///
/// Histogram series keep their suffix (`x_bucket`); map them to families with the catalog.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_group(&chars, i, '{', '}');
        } else if c == '[' {
            i = skip_group(&chars, i, '[', ']');
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            i = skip_number(&chars, i);
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let lower = word.to_ascii_lowercase();
            let next = skip_space(&chars, i);
            let next_char = chars.get(next).copied();
            if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                if next_char == Some('(') {
                    i = skip_group(&chars, next, '(', ')');
                }
            } else if lower == "offset" {
                i = skip_space(&chars, i);
                if chars.get(i) == Some(&'-') {
                    i += 1;
                }
                i = skip_number(&chars, i);
            } else if OTHER_KEYWORDS.contains(&lower.as_str())
                || AGGREGATIONS.contains(&lower.as_str())
                || next_char == Some('(')
            {
                // keyword, aggregation or function call
            } else {
                out.insert(word);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Grafana's Prometheus variable queries as PromQL that returns the same label's values:
/// `label_values(m{…}, l)` → `group by (l) (m{…})`, `label_values(l)` → `group by (l) ({l!=""})`,
/// `query_result(e)` → `e`. `None` for other forms.
pub fn label_values_to_promql(query: &str) -> Option<String> {
    let q = query.trim();
    if let Some(inner) = strip_call(q, "query_result") {
        return Some(inner.trim().to_string());
    }
    let inner = strip_call(q, "label_values")?;
    let chars: Vec<char> = inner.chars().collect();
    // the last top-level comma separates the selector from the label
    let mut depth = 0i32;
    let mut split = None;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(&chars, i);
                continue;
            }
            '{' | '(' | '[' => depth += 1,
            '}' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => split = Some(i),
            _ => {}
        }
        i += 1;
    }
    match split {
        Some(at) => {
            let selector: String = chars[..at].iter().collect();
            let label: String = chars[at + 1..].iter().collect();
            Some(format!("group by ({}) ({})", label.trim(), selector.trim()))
        }
        None => {
            let label = inner.trim();
            Some(format!("group by ({label}) ({{{label}!=\"\"}})"))
        }
    }
}

fn strip_call<'a>(q: &'a str, name: &str) -> Option<&'a str> {
    q.strip_prefix(name)?
        .trim_start()
        .strip_prefix('(')?
        .strip_suffix(')')
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn skip_space(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// Index after the string literal starting at `i` (backslash escapes, none in backticks).
fn skip_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() {
        if chars[j] == '\\' && quote != '`' {
            j += 2;
            continue;
        }
        if chars[j] == quote {
            return j + 1;
        }
        j += 1;
    }
    chars.len()
}

/// Index after the group opened at `i`, skipping strings and nested groups of the same kind.
fn skip_group(chars: &[char], i: usize, open: char, close: char) -> usize {
    let mut depth = 0usize;
    let mut j = i;
    while j < chars.len() {
        let c = chars[j];
        if c == '"' || c == '\'' || c == '`' {
            j = skip_string(chars, j);
            continue;
        }
        if c == open {
            depth += 1;
        } else if c == close {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                return j + 1;
            }
        }
        j += 1;
    }
    chars.len()
}

/// Index after a number or duration (`0.95`, `1e-3`, `0x1f`, `5m`, `1h30m`).
fn skip_number(chars: &[char], i: usize) -> usize {
    let mut j = i;
    while j < chars.len() {
        let c = chars[j];
        let exponent_sign = (c == '+' || c == '-') && j > i && matches!(chars[j - 1], 'e' | 'E');
        if !(c.is_ascii_alphanumeric() || c == '.' || c == '_' || exponent_sign) {
            break;
        }
        j += 1;
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).into_iter().collect()
    }

    #[test]
    fn finds_metric_inside_functions_and_aggregations() {
        let e = r#"histogram_quantile(0.95, sum by (le) (rate(a_seconds_bucket{ns="x"}[5m])))"#;
        assert_eq!(names(e), ["a_seconds_bucket"]);
    }

    #[test]
    fn ignores_label_names_inside_braces_and_strings() {
        let e = r#"sum(rate(m_total{namespace="a}b", action=~"x|y", status!="success"}[1m]))"#;
        assert_eq!(names(e), ["m_total"]);
    }

    #[test]
    fn ignores_label_lists_after_by_on_and_group_left() {
        let e = "sum by (namespace, action) (x) / on (job, instance) group_left(sdk_version) y";
        assert_eq!(names(e), ["x", "y"]);
        assert_eq!(names("sum(x) without (instance)"), ["x"]);
    }

    #[test]
    fn ignores_keywords_numbers_durations_and_offsets() {
        let e = "a > bool 1e-3 or b offset 5m unless c and on() vector(0) * Inf";
        assert_eq!(names(e), ["a", "b", "c"]);
    }

    #[test]
    fn ignores_label_replace_arguments() {
        let e = r#"label_replace(sum(rate(q[1m])) * 0, "status", "$1", "initiator", "(.*)")"#;
        assert_eq!(names(e), ["q"]);
    }

    #[test]
    fn nameless_selectors_contribute_no_name() {
        let e = r#"sum by (__name__) ({job="a", __name__=~".+_total"})"#;
        assert!(names(e).is_empty());
    }

    #[test]
    fn uppercase_keywords_are_keywords() {
        assert_eq!(names("SUM BY (le) (x) OR y"), ["x", "y"]);
    }

    #[test]
    fn label_values_with_selector_becomes_group_by() {
        let q = r#"label_values(m{namespace="$namespace", a=~"x,y"}, action)"#;
        assert_eq!(
            label_values_to_promql(q).as_deref(),
            Some(r#"group by (action) (m{namespace="$namespace", a=~"x,y"})"#)
        );
    }

    #[test]
    fn label_values_of_label_only_and_query_result() {
        assert_eq!(
            label_values_to_promql("label_values(job)").as_deref(),
            Some(r#"group by (job) ({job!=""})"#)
        );
        assert_eq!(
            label_values_to_promql("query_result(up)").as_deref(),
            Some("up")
        );
        assert_eq!(label_values_to_promql("metrics(.*)"), None);
    }
}
