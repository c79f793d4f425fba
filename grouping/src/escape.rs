//! Escaping of text in the exposition format (0.0.4): label values and HELP text.

use std::borrow::Cow;

/// A label value as written between its quotes: `\` → `\\`, `"` → `\"`, line feed → `\n`.
/// Borrows when nothing needs escaping.
///
/// ```
/// use whisk_grouping::escape_label_value;
///
/// assert_eq!(escape_label_value("eu"), "eu");
/// assert_eq!(escape_label_value("a\"} 1\nb"), "a\\\"} 1\\nb");
/// ```
pub fn escape_label_value(value: &str) -> Cow<'_, str> {
    escape(value, true)
}

/// HELP text: `\` → `\\`, line feed → `\n` (quotes stay). Borrows when nothing needs escaping.
///
/// ```
/// use whisk_grouping::escape_help;
///
/// assert_eq!(escape_help("a \"b\"\\\n"), "a \"b\"\\\\\\n");
/// ```
pub fn escape_help(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

fn escape(text: &str, quote: bool) -> Cow<'_, str> {
    let special = |c: u8| c == b'\\' || c == b'\n' || (quote && c == b'"');
    let Some(first) = text.bytes().position(special) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str(&text[..first]);
    for c in text[first..].chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_cannot_end_their_quotes_or_lines() {
        let v = escape_label_value("a\"} 1\nevil_total 99\n# x \\");
        assert_eq!(v, "a\\\"} 1\\nevil_total 99\\n# x \\\\");
        assert!(matches!(escape_label_value("plain é 🚀"), Cow::Borrowed(_)));
        assert_eq!(escape_label_value("cr\rtab\t"), "cr\rtab\t");
    }

    #[test]
    fn help_keeps_quotes_and_escapes_backslashes_and_line_feeds() {
        assert_eq!(
            escape_help("help with \\ and\nnewline \"q\""),
            "help with \\\\ and\\nnewline \"q\""
        );
    }
}
