//! The gateway never passes a body its Pushgateway refuses: a corpus of edge cases of the text
//! format (values, escapes, names, white space, comments, histogram and summary labels) is
//! judged by the gateway (`validate`, then the family table's check of the body's families
//! against each other) and pushed to a real Pushgateway (Debian's, run with
//! `--push.disable-consistency-check`, as deployed). The Pushgateway refuses a body when it
//! answers 4xx, fails the push after its 202, or, with the body stored alone, answers 500 on
//! `/metrics`. A body the gateway accepts but the Pushgateway refuses would have its families
//! recorded in the family table for nothing and answer the SDK with the Pushgateway's error
//! instead of the gateway's reason (or, stored, break every scrape). Where the gateway is
//! stricter than the Pushgateway, the case says why.
//! Needs `prometheus-pushgateway` on PATH (scripts/setup.sh).

mod common;

use common::*;
use whisk_gateway::FamilyTable;
use whisk_gateway::{Invalid, validate};

/// The gateway's verdict on a body pushed to an empty cluster: [`validate`], then the family
/// table's check of the body's families against each other (suffix collisions).
fn gateway_verdict(body: &str) -> Result<(), String> {
    let validated = validate(body.as_bytes(), 500).map_err(|e: Invalid| e.to_string())?;
    let table = FamilyTable::new(1000);
    let generation = table.begin_resync();
    table.replace(Default::default(), generation);
    table
        .check_and_record(&validated.families)
        .map_err(|e| e.to_string())
}

/// Who accepts a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Both accept it.
    Both,
    /// Both refuse it.
    Neither,
    /// Only the Pushgateway accepts it: the gateway is stricter, for the reason given.
    OnlyPushgateway(&'static str),
}

use Verdict::*;

/// Spellings an SDK never writes and the gateway's parser does not read; refusing them costs an
/// action author nothing and keeps one grammar.
const UNUSUAL_SPELLING: &str = "a spelling the SDK never writes";

/// The SDK writes no family without samples, and the parser refuses one.
const NO_SAMPLES: &str = "a family without samples, which the SDK never writes";

fn corpus() -> Vec<(&'static str, String, Verdict)> {
    let value = |v: &str| format!("# TYPE x gauge\nx {v}\n");
    let mut cases: Vec<(&'static str, String, Verdict)> = vec![
        // Values.
        ("value 1e400 overflows a float64", value("1e400"), Neither),
        ("value -1e400 overflows a float64", value("-1e400"), Neither),
        (
            "value just past the largest float64",
            value("1.7976931348623159e308"),
            Neither,
        ),
        (
            "value at the largest float64",
            value("1.7976931348623157e308"),
            Both,
        ),
        ("value 1e-400 underflows to 0", value("1e-400"), Both),
        ("value 1.", value("1."), Both),
        ("value .5", value(".5"), Both),
        ("value 00012", value("00012"), Both),
        ("value 1E5", value("1E5"), Both),
        ("value +1", value("+1"), Both),
        ("value -0", value("-0"), Both),
        ("value NaN", value("NaN"), Both),
        ("value +Inf", value("+Inf"), Both),
        ("value -Inf", value("-Inf"), Both),
        ("value Inf", value("Inf"), Both),
        ("value inf", value("inf"), Both),
        ("value nan", value("nan"), Both),
        (
            "value Infinity",
            value("Infinity"),
            OnlyPushgateway(UNUSUAL_SPELLING),
        ),
        ("value 5.e3", value("5.e3"), Both),
        ("value +NaN", value("+NaN"), Neither),
        (
            "value infinity",
            value("infinity"),
            OnlyPushgateway(UNUSUAL_SPELLING),
        ),
        ("value 0x10", value("0x10"), Neither),
        ("value 0x1p3", value("0x1p3"), Neither),
        ("value 1_000", value("1_000"), Neither),
        ("value 1e", value("1e"), Neither),
        ("value --1", value("--1"), Neither),
        ("no value", "# TYPE x gauge\nx\n".into(), Neither),
        ("timestamp (the Pushgateway answers 202, then fails the push)", value("1 1700000000000"), Neither),
        // Label values and their escapes.
        ("label escape \\\\", "x{a=\"\\\\\"} 1\n".into(), Both),
        ("label escape \\\"", "x{a=\"\\\"\"} 1\n".into(), Both),
        ("label escape \\n", "x{a=\"a\\nb\"} 1\n".into(), Both),
        ("label escape \\t", "x{a=\"\\t\"} 1\n".into(), Neither),
        ("raw tab in a label value", "x{a=\"\t\"} 1\n".into(), Both),
        ("raw CR in a label value", "x{a=\"a\rb\"} 1\n".into(), Both),
        ("non-ASCII label value", "x{a=\"é\"} 1\n".into(), Both),
        ("empty label value", "x{a=\"\"} 1\n".into(), Both),
        (
            "trailing comma in labels",
            "x{a=\"1\",} 1\n".into(),
            OnlyPushgateway(UNUSUAL_SPELLING),
        ),
        ("empty label braces", "x{} 1\n".into(), OnlyPushgateway(UNUSUAL_SPELLING)),
        ("no space before the value", "x{a=\"1\"}1\n".into(), Both),
        ("spaces around =", "x{a = \"1\"} 1\n".into(), Both),
        ("unquoted label value", "x{a=1} 1\n".into(), Neither),
        ("label name starting with a digit", "x{1a=\"1\"} 1\n".into(), Neither),
        ("label name with a colon", "x{a:b=\"1\"} 1\n".into(), Neither),
        // Names.
        ("metric name with a colon", "a:b 1\n".into(), Both),
        ("metric name starting with a colon", ":a 1\n".into(), Both),
        ("metric name starting with a digit", "1a 1\n".into(), Neither),
        ("metric name with a dash", "a-b 1\n".into(), Neither),
        ("non-ASCII metric name", "é 1\n".into(), Neither),
        // White space and line ends.
        ("tab between name and value", "x\t1\n".into(), Both),
        ("two spaces between name and value", "x  1\n".into(), Both),
        ("trailing space", "x 1 \n".into(), Neither),
        ("leading spaces", "  x 1\n".into(), OnlyPushgateway(UNUSUAL_SPELLING)),
        ("trailing tab", "x 1\t\n".into(), Neither),
        ("space between name and labels", "x {a=\"1\"} 1\n".into(), Both),
        ("CRLF line end", "x 1\r\n".into(), Neither),
        ("no final newline", "x 1".into(), Neither),
        ("no final newline after a comment", "x 1\n# c".into(), Neither),
        ("only a line break", "\n".into(), Both),
        ("only spaces", "   \n".into(), Both),
        (
            "spaces after the last line break",
            "x 1\n  ".into(),
            OnlyPushgateway(UNUSUAL_SPELLING),
        ),
        ("blank lines", "\n\nx 1\n\n".into(), Both),
        // Comments, HELP and TYPE.
        ("HELP with escapes", "# HELP x a\\nb \\\\ c\nx 1\n".into(), Both),
        ("HELP without text", "# HELP x\nx 1\n".into(), Both),
        ("bare #", "#\nx 1\n".into(), OnlyPushgateway(UNUSUAL_SPELLING)),
        ("free comment", "# anything at all\nx 1\n".into(), Both),
        ("comment with a trailing space", "# c \nx 1\n".into(), Both),
        ("TYPE with a trailing space", "# TYPE x counter \nx 1\n".into(), Neither),
        ("HELP with a trailing space", "# HELP x text \nx 1\n".into(), Both),
        (
            "TYPE with a word too many",
            "# TYPE x counter extra\nx 1\n".into(),
            Neither,
        ),
        (
            "TYPE of a family without samples",
            "# TYPE y counter\nx 1\n".into(),
            OnlyPushgateway(NO_SAMPLES),
        ),
        (
            "HELP of a family without samples",
            "# HELP y text\nx 1\n".into(),
            OnlyPushgateway(NO_SAMPLES),
        ),
        (
            "TYPE twice",
            "# TYPE x counter\n# TYPE x counter\nx 1\n".into(),
            Neither,
        ),
        ("HELP twice", "# HELP x a\n# HELP x b\nx 1\n".into(), Neither),
        ("TYPE after the sample", "x 1\n# TYPE x counter\n".into(), Neither),
        ("TYPE in capitals", "# TYPE x Counter\nx 1\n".into(), Both),
        ("unknown TYPE", "# TYPE x meter\nx 1\n".into(), Neither),
        ("HELP escape \\t", "# HELP x a\\tb\nx 1\n".into(), Neither),
        ("HELP escape \\\"", "# HELP x a\\\"b\nx 1\n".into(), Neither),
        ("HELP ending in a lone \\", "# HELP x a\\\nx 1\n".into(), Neither),
        ("HELP escape \\\\ before a t", "# HELP x a\\\\tb\nx 1\n".into(), Both),
        ("HELP ending in CR", "# HELP x text\r\nx 1\n".into(), Both),
        ("HELP of a name with a dash", "# HELP x-y text\nx 1\n".into(), Neither),
        ("HELP of a non-ASCII name", "# HELP é text\nx 1\n".into(), Neither),
        ("HELP of a name starting with a digit", "# HELP 1x text\nx 1\n".into(), Neither),
        ("HELP name then a no-break space", "# HELP x\u{a0}text\nx 1\n".into(), Neither),
        ("TYPE ending in CR", "# TYPE x counter\r\nx 1\n".into(), Neither),
        ("TYPE ending in a no-break space", "# TYPE x counter\u{a0}\nx 1\n".into(), Neither),
        ("TYPE ending in a form feed", "# TYPE x counter\x0c\nx 1\n".into(), Neither),
        ("TYPE name then a no-break space", "# TYPE x\u{a0}counter\nx 1\n".into(), Neither),
        ("TYPE of a name with a dash", "# TYPE x-y counter\nx 1\n".into(), Neither),
        (
            "TYPE glued to the name",
            "# TYPEx counter\nx 1\n".into(),
            OnlyPushgateway(
                "the Pushgateway stores an untyped x, the gateway's parser reads a counter: the family \
                 table would let another group push a counter x, and /metrics answers 500 (tried)",
            ),
        ),
        (
            "HELP glued to the name",
            "# HELPx text\nx 1\n".into(),
            OnlyPushgateway("a comment the gateway's parser reads as a HELP line"),
        ),
        (
            "TYPE gauge_histogram",
            "# TYPE x gauge_histogram\nx 1\n".into(),
            OnlyPushgateway(UNUSUAL_SPELLING),
        ),
        (
            "HELP, TYPE, HELP",
            "# HELP x a\n# TYPE x counter\n# HELP x b\nx 1\n".into(),
            Neither,
        ),
        (
            "TYPE, HELP, TYPE",
            "# TYPE x counter\n# HELP x a\n# TYPE x gauge\nx 1\n".into(),
            Neither,
        ),
        (
            "summary, then a TYPE line for its _count",
            "# TYPE x summary\nx{quantile=\"0.5\"} 1\n# TYPE x_count gauge\nx_count 1\n".into(),
            Neither,
        ),
        (
            "summary with HELP, then a HELP line for its _count",
            "# HELP x a\n# TYPE x summary\nx{quantile=\"0.5\"} 1\n# HELP x_count b\nx_count 1\n"
                .into(),
            Neither,
        ),
        (
            "untyped x_count, then a summary x (stored: /metrics answers 500)",
            "x_count 1\n# TYPE x summary\nx{quantile=\"0.5\"} 1\n".into(),
            Neither,
        ),
        (
            "histogram, another family, then its _count again",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\ny 1\nh_count{a=\"1\"} 1\n"
                .into(),
            OnlyPushgateway(
                "the Pushgateway's parser files h_count under h; the gateway's sees a family \
                 h_count beside histogram h and refuses the collision",
            ),
        ),
        ("tabs in a TYPE line", "#\tTYPE\tx\tcounter\nx 1\n".into(), Both),
        ("tab after #", "#\tfree comment\nx 1\n".into(), Both),
        ("lower-case type keyword (a comment)", "# type x counter\nx 1\n".into(), Both),
        ("HELP after the samples", "x 1\n# HELP x t\n".into(), OnlyPushgateway(NO_SAMPLES)),
        ("label __name__", "x{__name__=\"y\"} 1\n".into(), Neither),
        ("NUL in a label value", "x{a=\"\0\"} 1\n".into(), Both),
        ("byte order mark first", "\u{feff}x 1\n".into(), Neither),
        ("# and a space only", "# \nx 1\n".into(), OnlyPushgateway(UNUSUAL_SPELLING)),
        ("empty label name", "x{=\"v\"} 1\n".into(), Neither),
        ("untyped _bucket", "x_bucket{le=\"1\"} 1\n".into(), Both),
        ("untyped _sum and _count", "x_sum 1\nx_count 1\n".into(), Both),
        ("label value 20 000 bytes", format!("x{{a=\"{}\"}} 1\n", "a".repeat(20_000)), Both),
        (
            "family split by another",
            "# TYPE x counter\nx{a=\"1\"} 1\ny 1\nx{a=\"2\"} 1\n".into(),
            OnlyPushgateway("the text format keeps a family's samples together; the SDK does"),
        ),
        (
            "same series twice (stored: /metrics answers 500)",
            "x{a=\"1\"} 1\nx{a=\"1\"} 2\n".into(),
            Neither,
        ),
        ("same label twice", "x{a=\"1\",a=\"2\"} 1\n".into(), Neither),
        // Histograms and summaries.
        (
            "histogram",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n"
                .into(),
            Both,
        ),
        (
            "histogram bucket whose le is not a number",
            "# TYPE h histogram\nh_bucket{le=\"abc\"} 1\nh_sum 1\nh_count 1\n".into(),
            Neither,
        ),
        (
            "histogram bucket without le",
            "# TYPE h histogram\nh_bucket 1\nh_sum 1\nh_count 1\n".into(),
            OnlyPushgateway("a bucket names its bound; the Pushgateway would read it as +Inf"),
        ),
        (
            "histogram bucket le=\"inf\"",
            "# TYPE h histogram\nh_bucket{le=\"inf\"} 1\nh_sum 1\nh_count 1\n".into(),
            Both,
        ),
        (
            "histogram bucket le=\"1e400\"",
            "# TYPE h histogram\nh_bucket{le=\"1e400\"} 1\nh_sum 1\nh_count 1\n".into(),
            Neither,
        ),
        (
            "histogram bucket le=\"0x1p3\"",
            "# TYPE h histogram\nh_bucket{le=\"0x1p3\"} 1\nh_sum 1\nh_count 1\n".into(),
            Neither,
        ),
        (
            "histogram bucket le=\" 1\"",
            "# TYPE h histogram\nh_bucket{le=\" 1\"} 1\nh_sum 1\nh_count 1\n".into(),
            Neither,
        ),
        (
            "histogram without its +Inf bucket",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n".into(),
            Both,
        ),
        (
            "summary",
            "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 3\ns_count 2\n".into(),
            Both,
        ),
        (
            "summary quantile that is not a number",
            "# TYPE s summary\ns{quantile=\"x\"} 1\ns_sum 1\ns_count 1\n".into(),
            Neither,
        ),
        (
            "summary quantile NaN",
            "# TYPE s summary\ns{quantile=\"NaN\"} 1\ns_sum 1\ns_count 1\n".into(),
            Both,
        ),
        (
            "histogram buckets out of order, negative counts",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} -2\nh_bucket{le=\"1\"} 5\nh_sum 1\nh_count -2\n"
                .into(),
            Both,
        ),
        (
            "histogram bucket le=\"NaN\"",
            "# TYPE h histogram\nh_bucket{le=\"NaN\"} 1\nh_sum 1\nh_count 1\n".into(),
            Both,
        ),
        (
            "histogram buckets le=\"1\" and le=\"1.0\"",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"1.0\"} 1\nh_sum 1\nh_count 1\n"
                .into(),
            Both,
        ),
        (
            "histogram with a quantile label",
            "# TYPE h histogram\nh_bucket{le=\"1\",quantile=\"0.5\"} 1\nh_sum{quantile=\"0.5\"} 1\nh_count{quantile=\"0.5\"} 1\n"
                .into(),
            Both,
        ),
        (
            "histogram bucket le=\"Infinity\", le=\"+infinity\", le=\".5\"",
            "# TYPE h histogram\nh_bucket{le=\".5\"} 1\nh_bucket{le=\"+infinity\"} 1\nh_bucket{le=\"Infinity\",a=\"1\"} 1\nh_sum 1\nh_count 1\n"
                .into(),
            Both,
        ),
        (
            "histogram bucket le=\"\"",
            "# TYPE h histogram\nh_bucket{le=\"\"} 1\nh_sum 1\nh_count 1\n".into(),
            Neither,
        ),
        (
            "histogram _count with le=\"x\"",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count{le=\"x\"} 1\n".into(),
            Neither,
        ),
        (
            "summary quantile +Inf",
            "# TYPE s summary\ns{quantile=\"+Inf\"} 1\ns_sum 1\ns_count 1\n".into(),
            Both,
        ),
        (
            "summary with an le label",
            "# TYPE s summary\ns{quantile=\"0.5\",le=\"1\"} 1\ns_sum 1\ns_count 1\n".into(),
            Both,
        ),
        (
            "counter with a negative value",
            "# TYPE c counter\nc -1\n".into(),
            Both,
        ),
    ];
    cases.push(("empty body", String::new(), Both));
    cases
}

#[test]
fn the_gateway_accepts_no_body_its_pushgateway_refuses() {
    let pgws = pushgateways(2);
    let pgw = &pgws[0];
    let cases = corpus();
    // The Pushgateway answers a PUT before it applies it: a push it fails then (a timestamp, a
    // series twice) answers 202 and leaves its group with `last_push_successful: false`. So a
    // body counts as accepted once its group is stored with a successful push.
    let mut answers = Vec::new();
    for (i, (_, body, _)) in cases.iter().enumerate() {
        let path = format!("/metrics/job/parity/instance/case{i}");
        answers.push(send("PUT", &pgw.url(), &path, None, body));
    }
    let answered = answers
        .iter()
        .filter(|(s, _)| (200..300).contains(s))
        .count();
    let mut stored = Vec::new();
    let listed = whisk_testkit::wait_until(std::time::Duration::from_secs(10), || {
        stored = groups_with(pgw, "job", "parity");
        stored.len() == answered
    });
    assert!(
        listed,
        "{answered} pushes answered 2xx, {} groups listed",
        stored.len()
    );
    let succeeded = |i: usize| {
        stored.iter().any(|g| {
            g["labels"]["instance"] == format!("case{i}") && g["last_push_successful"] == true
        })
    };
    // A body the Pushgateway stores can still break it: its `/metrics` answers 500 to every
    // scrape while the group is stored (a series twice, suffix collisions). So each stored body
    // is stored again alone on a second Pushgateway and its `/metrics` read; one that breaks it
    // counts as refused.
    let scraped = &pgws[1];
    let mut breaks = std::collections::HashMap::new();
    for (i, (_, body, _)) in cases.iter().enumerate() {
        if !((200..300).contains(&answers[i].0) && succeeded(i)) {
            continue;
        }
        let path = "/metrics/job/parity/instance/alone";
        let (status, _) = send("PUT", &scraped.url(), path, None, body);
        assert!(
            (200..300).contains(&status),
            "case {i} stored once, not twice"
        );
        assert!(whisk_testkit::wait_until(
            std::time::Duration::from_secs(10),
            || { groups_with(scraped, "job", "parity").len() == 1 }
        ));
        let (status, text) = send("GET", &scraped.url(), "/metrics", None, "");
        if status != 200 {
            let last = text.trim().lines().last().unwrap_or_default().to_string();
            breaks.insert(i, format!("/metrics then answers {status}: {last}"));
        }
        send("DELETE", &scraped.url(), path, None, "");
        assert!(whisk_testkit::wait_until(
            std::time::Duration::from_secs(10),
            || { groups_with(scraped, "job", "parity").is_empty() }
        ));
    }
    let mut wrong = Vec::new();
    for (i, ((case, body, expected), (status, text))) in cases.into_iter().zip(answers).enumerate()
    {
        let ours = gateway_verdict(&body);
        let theirs = (200..300).contains(&status) && succeeded(i) && !breaks.contains_key(&i);
        let text = breaks.remove(&i).unwrap_or(text);
        let actual = match (ours.is_ok(), theirs) {
            (true, true) => Both,
            (false, false) => Neither,
            (false, true) => OnlyPushgateway(""),
            (true, false) => {
                wrong.push(format!(
                    "{case}: the gateway accepts it, the Pushgateway does not ({status} {})",
                    text.trim()
                ));
                continue;
            }
        };
        let same = match (actual, expected) {
            (OnlyPushgateway(_), OnlyPushgateway(_)) => true,
            (a, e) => a == e,
        };
        if !same {
            wrong.push(format!(
                "{case}: expected {expected:?}, got {actual:?} (gateway: {:?}; Pushgateway: {status} {})",
                ours.err().map(|e| e.to_string()),
                text.trim()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
