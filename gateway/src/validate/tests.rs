//! Tests of [`super::validate`].

use super::*;
use whisk_grouping::GROUPING_LABELS;

const SDK_LIKE: &str = "# HELP whisk_activations_total Activations\n\
    # TYPE whisk_activations_total counter\n\
    whisk_activations_total{status=\"success\"} 3\n\
    whisk_activations_total{status=\"application_error\"} 0\n\
    # HELP whisk_activation_duration_seconds Duration of pushes\n\
    # TYPE whisk_activation_duration_seconds histogram\n\
    whisk_activation_duration_seconds_bucket{le=\"0.001\"} 1\n\
    whisk_activation_duration_seconds_bucket{le=\"+Inf\"} 2\n\
    whisk_activation_duration_seconds_sum 0.003\n\
    whisk_activation_duration_seconds_count 2\n\
    # HELP orders_placed_total Orders placed\n\
    # TYPE orders_placed_total counter\n\
    orders_placed_total{region=\"eu \\\"west\\\"\"} 7\n";

#[test]
fn an_sdk_body_yields_its_families_types_and_series() {
    let v = validate(SDK_LIKE.as_bytes(), 100).unwrap();
    assert_eq!(v.series, 7);
    let fams: Vec<_> = v
        .families
        .iter()
        .map(|f| (f.name.as_str(), f.kind))
        .collect();
    assert_eq!(
        fams,
        [
            ("whisk_activations_total", FamilyType::Counter),
            ("whisk_activation_duration_seconds", FamilyType::Histogram),
            ("orders_placed_total", FamilyType::Counter)
        ]
    );
}

#[test]
fn a_raw_line_break_in_a_label_value_is_malformed_and_an_escaped_one_is_not() {
    let err = validate(b"notes{text=\"line 1\nline\"} 1\n", 10).unwrap_err();
    assert_eq!(err.reason(), "malformed");
    assert!(err.to_string().contains("raw line break"), "{err}");
    assert!(validate(b"notes{text=\"line 1\\nline\"} 1\n", 10).is_ok());
}

#[test]
fn what_the_pushgateways_parser_refuses_is_malformed_here_too() {
    for (body, says) in [
        ("x 1 \n", "ends in white space"),
        ("x 1\t\n", "ends in white space"),
        ("x 1", "line break"),
        ("x 1\n# done", "line break"),
        ("# TYPE x counter \nx 1\n", "TYPE line"),
        (
            "# TYPE h histogram\nh_bucket{le=\"1e400\"} 1\nh_sum 1\nh_count 1\n",
            "not a number",
        ),
        (
            "# TYPE s summary\ns{quantile=\"median\"} 1\ns_sum 1\ns_count 1\n",
            "not a number",
        ),
    ] {
        let err = validate(body.as_bytes(), 10).unwrap_err();
        assert_eq!(err.reason(), "malformed", "{body:?}");
        assert!(err.to_string().contains(says), "{body:?}: {err}");
    }
    for ok in [
        "x 1\n\n",
        "# HELP x padded help \nx 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
    ] {
        assert!(validate(ok.as_bytes(), 10).is_ok(), "{ok:?}");
    }
}

#[test]
fn comment_lines_are_read_as_the_pushgateways_parser_reads_them() {
    for (body, reason) in [
        ("# HELP x a\\tb\nx 1\n", "malformed"),
        ("# HELP x a\\\nx 1\n", "malformed"),
        ("# HELP x a\\\"b\nx 1\n", "malformed"),
        ("# HELP x-y text\nx 1\n", "malformed"),
        ("# HELP é text\nx 1\n", "malformed"),
        ("# HELP x\u{a0}text\nx 1\n", "malformed"),
        ("# TYPE x counter\r\nx 1\n", "malformed"),
        ("# TYPE x counter\u{a0}\nx 1\n", "malformed"),
        ("# TYPE x\u{a0}counter\nx 1\n", "malformed"),
        ("# TYPE x-y counter\nx 1\n", "malformed"),
        ("# TYPEx counter\nx 1\n", "malformed"),
        ("# HELPx text\nx 1\n", "malformed"),
        (
            "# HELP x a\n# TYPE x counter\n# HELP x b\nx 1\n",
            "duplicate",
        ),
        (
            "# TYPE x counter\n# HELP x a\n# TYPE x gauge\nx 1\n",
            "duplicate",
        ),
    ] {
        match validate(body.as_bytes(), 10) {
            Ok(v) => panic!("{body:?} was accepted: {v:?}"),
            Err(e) => assert_eq!(e.reason(), reason, "{body:?}: {e}"),
        }
    }
    // Why a glued keyword is refused: the gateway's parser reads a counter here, the
    // Pushgateway's parser a comment (it stores an untyped `x`).
    let glued = Scrape::parse("# TYPEx counter\nx 1\n").unwrap();
    assert_eq!(
        (glued.metrics[0].name.as_str(), glued.metrics[0].kind),
        ("x", Type::Counter)
    );
    for ok in [
        "# HELP x a\\\\tb \\n c\nx 1\n",
        "# HELP x text\r\nx 1\n",
        "# HELP x \u{a0}text\nx 1\n",
        "#\tTYPE\tx\tcounter\nx 1\n",
        "# type x counter\nx 1\n",
        "# HELP x   \nx 1\n",
    ] {
        assert!(validate(ok.as_bytes(), 10).is_ok(), "{ok:?}");
    }
}

#[test]
fn what_the_prometheus_text_encoder_writes_for_the_sdk_is_valid() {
    use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
    let r = Registry::new();
    for (i, help) in [
        "trailing spaces   ",
        " leading space",
        "back\\slash, new\nline, \"quotes\", tab\t, cr\r",
        "ends in a backslash\\",
        "\u{a0}no-break space",
    ]
    .into_iter()
    .enumerate()
    {
        let c = IntCounterVec::new(Opts::new(format!("c{i}_total"), help), &["l"]).unwrap();
        for value in ["", "a\nb", "back\\", "\"q\"", "cr\r", "tab\t", "é 🚀", " "] {
            c.with_label_values(&[value]).inc();
        }
        r.register(Box::new(c)).unwrap();
    }
    let h = HistogramVec::new(HistogramOpts::new("h_seconds", "h\\"), &["l"]).unwrap();
    h.with_label_values(&["x\ny"]).observe(0.3);
    r.register(Box::new(h)).unwrap();
    let mut body = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&r.gather(), &mut body)
        .unwrap();
    let v = validate(&body, 1000).unwrap_or_else(|e| {
        panic!("{e}\n{}", String::from_utf8_lossy(&body));
    });
    assert_eq!(v.families.len(), 6);
}

#[test]
fn a_value_beyond_a_float64_is_malformed_and_infinity_spelled_out_is_not() {
    for bad in ["1e400", "-1e309", "1.7976931348623159e308"] {
        let err = validate(format!("x {bad}\n").as_bytes(), 10).unwrap_err();
        assert_eq!(err.reason(), "malformed", "{bad}");
        assert!(err.to_string().contains("64-bit float"), "{bad}: {err}");
    }
    for ok in ["+Inf", "-Inf", "Inf", "1.7976931348623157e308", "1e-400"] {
        assert!(validate(format!("x {ok}\n").as_bytes(), 10).is_ok(), "{ok}");
    }
}

#[test]
fn an_empty_body_is_valid_and_empty() {
    assert_eq!(validate(b"", 10).unwrap(), Validated::default());
}

#[test]
fn reserved_names_are_refused() {
    for name in [
        "push_time_seconds",
        "push_failure_time_seconds",
        "labels",
        "last_push_successful",
        "pushgateway_build_info",
        "go_goroutines",
        "process_resident_memory_bytes",
        "openwhisk_action_activations_total",
    ] {
        let body = format!("# TYPE {name} gauge\n{name} 1\n");
        assert_eq!(
            validate(body.as_bytes(), 10),
            Err(Invalid::Reserved(name.into())),
            "{name}"
        );
    }
    assert!(validate(b"labelsx 1\n", 10).is_ok());
}

#[test]
fn grouping_key_labels_in_samples_are_refused() {
    for label in GROUPING_LABELS {
        let body = format!("jobs{{{label}=\"x\"}} 1\n");
        let err = validate(body.as_bytes(), 10).unwrap_err();
        assert_eq!(err.reason(), "grouping_label", "{label}");
        assert!(err.to_string().contains(label));
    }
}

#[test]
fn malformed_text_is_refused_with_one_line() {
    for body in [
        "jobs 1\r\n",
        "jobs{a=\"1\" 1\n",
        "jobs one\n",
        "# TYPE jobs countre\njobs 1\n",
        "jobs{a=\"1\"} 1 2 3\n",
    ] {
        let err = match validate(body.as_bytes(), 10) {
            Ok(v) => panic!("{body:?} was accepted: {v:?}"),
            Err(e) => e,
        };
        assert_eq!(err.reason(), "malformed", "{body:?}: {err}");
        assert!(!err.to_string().contains('\n'), "{body:?}: {err}");
    }
    assert_eq!(validate(&[0xff, 0xfe], 10), Err(Invalid::NotUtf8));
}

#[test]
fn series_budget_counts_every_sample() {
    let err = validate(SDK_LIKE.as_bytes(), 6).unwrap_err();
    assert_eq!(err, Invalid::TooManySeries { series: 7, max: 6 });
    assert!(validate(SDK_LIKE.as_bytes(), 7).is_ok());
}

#[test]
fn things_the_pushgateway_cannot_render_are_refused() {
    let cases = [
        ("jobs 1 1700000000000\n", "timestamp"),
        ("jobs{a=\"1\"} 1\njobs{a=\"1\"} 2\n", "duplicate"),
        (
            "jobs{a=\"1\",b=\"2\"} 1\njobs{a=\"3\"} 1\njobs{b=\"2\",a=\"1\"} 2\n",
            "duplicate",
        ),
        (
            "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# TYPE a gauge\na 2\n",
            "duplicate",
        ),
        ("jobs{__x=\"1\"} 1\n", "bad_label_name"),
        ("jobs{a:b=\"1\"} 1\n", "bad_label_name"),
        ("jobs{a=\"1\",a=\"2\"} 1\n", "bad_label_name"),
        ("# TYPE h histogram\nh_bucket{x=\"1\"} 1\n", "malformed"),
    ];
    for (body, reason) in cases {
        let err = validate(body.as_bytes(), 10).unwrap_err();
        assert_eq!(err.reason(), reason, "{body:?}: {err}");
    }
}

#[test]
fn series_that_differ_in_one_label_or_swap_names_and_values_are_distinct() {
    let body = "jobs{a=\"b\"} 1\njobs{b=\"a\"} 1\njobs{a=\"b\",c=\"d\"} 1\n\
                jobs{a=\"d\",c=\"b\"} 1\njobs 1\n\
                # TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 1\ns_count 1\n";
    let v = validate(body.as_bytes(), 100).unwrap();
    assert_eq!(v.series, 8);
}
