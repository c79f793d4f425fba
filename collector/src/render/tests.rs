use super::*;
use crate::aggregate::Applied;
use crate::event::parse;

#[test]
fn chunked_rendering_writes_exactly_the_whole_text_in_bounded_chunks() {
    let mut agg = Aggregator::default();
    for i in 0..300 {
        let e = format!(
            r#"{{"body":{{"name":"ns{}/a{i}","statusCode":{},"kind":"k","memory":256,"duration":{i},"initTime":{},"size":10,"userDefinedStatusCode":{},"causedBy":"sequence"}},"eventType":"Activation","namespace":"ns"}}"#,
            i % 7,
            i % 4,
            i % 2,
            i % 3
        );
        let _ = agg.apply(&parse(e.as_bytes()).unwrap());
    }
    let lim = r#"{"body":{"metricName":"TimedRateLimit","metricValue":1},"eventType":"Metric","source":"c0","namespace":"ns"}"#;
    let _ = agg.apply(&parse(lim.as_bytes()).unwrap());
    let whole = agg.render_to_string();
    let lock = std::sync::Mutex::new(agg);
    let mut chunks = Vec::new();
    let done = render_chunked(
        || lock.lock().unwrap(),
        |g| &**g,
        |c| {
            chunks.push(c);
            true
        },
        4096,
        16,
    );
    assert!(done);
    assert!(chunks.len() > 10, "{}", chunks.len());
    // A chunk is cut after at most 16 actions of one family past the 4 KiB mark.
    assert!(chunks.iter().all(|c| c.len() < 4096 + 16 * 2048));
    assert_eq!(chunks.concat(), whole);
    let mut refused = 0;
    assert!(!render_chunked(
        || lock.lock().unwrap(),
        |g| &**g,
        |_| {
            refused += 1;
            false
        },
        4096,
        16
    ));
    assert_eq!(refused, 1, "stops at the first refused chunk");
}

/// Events touching every family, label escapes and both schema generations included: the
/// input of the golden text.
fn every_family() -> Aggregator {
    let mut agg = Aggregator::default();
    let mut events: Vec<String> = (0..40u64)
        .map(|i| {
            format!(
                r#"{{"body":{{"activationId":"{i:032x}","name":"ns{}/pkg/a{}","statusCode":{},"kind":"{}","memory":{},"duration":{},"waitTime":{},"initTime":{},"size":{},"userDefinedStatusCode":{},"causedBy":"sequence","conductor":{}}},"eventType":"Activation","namespace":"init{}","source":"invoker0","timestamp":{}}}"#,
                i % 3,
                i % 5,
                i % 6,
                if i % 2 == 0 { "nodejs:20" } else { "python:3" },
                128 * (1 + i % 2),
                i * 37 % 5000,
                i * 7,
                if i % 4 == 0 { 300 + i } else { 0 },
                i * 100,
                200 + i % 3,
                i % 9 == 0,
                i % 2,
                1_700_000_000_000u64 + i
            )
        })
        .collect();
    events.push(r#"{"body":{"name":"we\"ird\\ns/ac\ntion","statusCode":0,"kind":"k","memory":256,"duration":400000,"waitTime":2,"initTime":0},"eventType":"Activation","namespace":"guest"}"#.into());
    events.push(r#"{"body":{"metricName":"ConcurrentRateLimit","metricValue":1},"eventType":"Metric","source":"controller0","namespace":"ns1"}"#.into());
    events.push(r#"{"body":{"metricName":"TimedRateLimit","metricValue":1},"eventType":"Metric","source":"controller0","namespace":"ns\"2"}"#.into());
    events.push(r#"{"body":{"metricName":"ConcurrentInvocations","metricValue":7},"eventType":"Metric","source":"controller1","namespace":"ns1"}"#.into());
    for e in &events {
        let _ = agg.apply(&parse(e.as_bytes()).unwrap());
    }
    agg
}

#[test]
fn the_text_exposition_is_byte_for_byte_what_it_was_before_exemplars() {
    // The golden text was written by the renderer as it was before exemplars and the
    // family restructuring, from the same events.
    assert_eq!(
        every_family().render_to_string(),
        include_str!("../../tests/data/text_exposition.golden")
    );
}

/// `text` without `# HELP`/`# TYPE` lines and without exemplars.
fn samples(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" # {").next().unwrap_or(l).to_string())
        .collect()
}

#[test]
fn openmetrics_has_the_same_series_and_values_as_the_text_format() {
    let agg = every_family();
    let mut om = String::new();
    agg.render_as(Exposition::OpenMetrics, &mut om);
    assert_eq!(samples(&om), samples(&agg.render_to_string()));
    for header in [
        "# TYPE openwhisk_action_activations counter\n",
        "# TYPE openwhisk_action_status unknown\n",
        "# TYPE openwhisk_action_status_code unknown\n",
        "# TYPE openwhisk_action_duration_seconds histogram\n",
        "# TYPE openwhisk_action_memory gauge\n",
        "# TYPE openwhisk_action_limit_timed counter\n",
    ] {
        assert!(om.contains(header), "{header}");
    }
    assert!(!om.contains("# TYPE openwhisk_action_activations_total"));
}

#[test]
fn each_time_bucket_carries_the_latest_activation_that_fell_into_it() {
    let mut agg = Aggregator::default();
    let ev = |id: &str, duration: u64, init: u64, ts: u64| {
        format!(
            r#"{{"body":{{"activationId":"{id}","name":"guest/hello","statusCode":0,"kind":"k","memory":256,"duration":{duration},"waitTime":3,"initTime":{init}}},"eventType":"Activation","namespace":"guest","timestamp":{ts}}}"#
        )
    };
    for e in [
        ev("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 40, 0, 1_700_000_000_001),
        ev(
            "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            45,
            30,
            1_700_000_000_002,
        ),
        ev(
            "cccccccccccccccccccccccccccccccc",
            700,
            0,
            1_700_000_000_003,
        ),
        ev("not-hex-but-fine", 400_000, 0, 1_700_000_000_004),
    ] {
        let _ = agg.apply(&parse(e.as_bytes()).unwrap());
    }
    let mut om = String::new();
    agg.render_as(Exposition::OpenMetrics, &mut om);
    let line = |prefix: &str| {
        om.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} in\n{om}"))
            .to_string()
    };
    let key = r#"{namespace="guest",initiator="guest",action="hello""#;
    assert_eq!(
        line(&format!(
            r#"openwhisk_action_duration_seconds_bucket{key},le="0.05"}}"#
        )),
        format!(
            r#"openwhisk_action_duration_seconds_bucket{key},le="0.05"}} 2 # {{activation_id="bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}} 0.045 1700000000.002"#
        )
    );
    assert_eq!(
        line(&format!(
            r#"openwhisk_action_duration_seconds_bucket{key},le="1"}}"#
        )),
        format!(
            r#"openwhisk_action_duration_seconds_bucket{key},le="1"}} 3 # {{activation_id="cccccccccccccccccccccccccccccccc"}} 0.7 1700000000.003"#
        )
    );
    assert_eq!(
        line(&format!(
            r#"openwhisk_action_duration_seconds_bucket{key},le="+Inf"}}"#
        )),
        format!(
            r#"openwhisk_action_duration_seconds_bucket{key},le="+Inf"}} 4 # {{activation_id="not-hex-but-fine"}} 400 1700000000.004"#
        )
    );
    assert!(
        !line(&format!(
            r#"openwhisk_action_duration_seconds_bucket{key},le="0.5"}}"#
        ))
        .contains('#'),
        "a bucket nobody fell into has no exemplar"
    );
    assert!(
        line(&format!(
            r#"openwhisk_action_initTime_seconds_bucket{key},le="0.05"}}"#
        ))
        .contains(r#"activation_id="bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"} 0.03 "#)
    );
    assert!(
        line(&format!(
            r#"openwhisk_action_waitTime_seconds_bucket{key},le="0.005"}}"#
        ))
        .contains(r#"activation_id="not-hex-but-fine"} 0.003 "#)
    );
    // Only the time histograms carry exemplars, and never in the text format.
    assert!(
        om.lines()
            .filter(|l| l.contains(" # {"))
            .all(|l| l.contains("_seconds_bucket{"))
    );
    assert!(!agg.render_to_string().contains(" # {"));
}

#[test]
fn an_activation_id_past_the_label_limit_is_counted_and_yields_no_exemplar() {
    let mut agg = Aggregator::default();
    let long = "a".repeat(200);
    let e = format!(
        r#"{{"body":{{"activationId":"{long}","name":"guest/hello","statusCode":0,"kind":"k","memory":256,"duration":40}},"eventType":"Activation","namespace":"guest"}}"#
    );
    assert_eq!(
        agg.apply(&parse(e.as_bytes()).unwrap()),
        Applied::Activation
    );
    assert_eq!(agg.exemplar_ids_too_long(), 1);
    let mut om = String::new();
    agg.render_as(Exposition::OpenMetrics, &mut om);
    assert!(!om.contains(" # {"), "{om}");
    assert!(!om.contains(&long[..100]));
    assert!(om.contains(
        r#"openwhisk_action_duration_seconds_count{namespace="guest",initiator="guest",action="hello"} 1"#
    ));
}

#[test]
fn a_whole_openmetrics_answer_types_the_own_families_and_ends_with_eof() {
    let shared = crate::shared::Shared::new(crate::aggregate::Limits::default());
    {
        let mut state = shared.lock();
        state.aggregator = every_family();
    }
    let mut chunks = Vec::new();
    assert!(shared.stream_all(Exposition::OpenMetrics, |c| {
        chunks.push(c);
        true
    }));
    let om = chunks.concat();
    assert!(om.ends_with("\n# EOF\n"));
    assert_eq!(om.matches("# EOF").count(), 1);
    assert!(om.contains("# TYPE whisk_collector_events counter\n"));
    assert!(om.contains("\nwhisk_collector_events_total{type=\"activation\"} "));
    assert!(om.contains("# TYPE whisk_collector_live_series gauge\n"));
    let mut text = Vec::new();
    assert!(shared.stream_all(Exposition::Text, |c| {
        text.push(c);
        true
    }));
    let text = text.concat();
    assert!(!text.contains("# EOF") && !text.contains(" # {"));
    assert!(text.starts_with(&every_family().render_to_string()));
}
