use super::*;
use crate::event::parse;
use crate::render::escape_into;
use std::time::{Duration, Instant};

fn act(initiator: &str, name: &str, extra: &str) -> String {
    format!(
        r#"{{"body":{{"name":"{name}","kind":"nodejs:20","memory":256{extra}}},"eventType":"Activation","source":"invoker0","namespace":"{initiator}","timestamp":1700000000000}}"#
    )
}

const ST: &str = r#","statusCode":0"#;

fn apply_all(agg: &mut Aggregator, events: &[String]) -> Vec<Applied> {
    events
        .iter()
        .map(|e| agg.apply(&parse(e.as_bytes()).unwrap()))
        .collect()
}

/// The family block of `name` (from its `# HELP` to the next `# HELP`).
fn family<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let start = text
        .find(&format!("# HELP {name} "))
        .unwrap_or_else(|| panic!("{name} missing"));
    let rest = &text[start..];
    let end = rest[1..].find("# HELP ").map_or(rest.len(), |i| i + 1);
    rest[..end].lines().collect()
}

#[test]
fn renders_exact_exposition_for_known_mix() {
    let mut agg = Aggregator::new(100);
    let events = vec![
        // warm success, 20 ms wait, 150 ms duration, 100 B response
        act("guest", "guest/hello", r#","statusCode":0,"waitTime":20,"duration":150,"initTime":0,"size":100"#),
        // cold start with application error and a user status code
        act(
            "guest",
            "guest/hello",
            r#","statusCode":1,"waitTime":5,"duration":700,"initTime":400,"userDefinedStatusCode":404"#,
        ),
        // unknown status code 9, different memory → second kind/memory row; latest memory wins
        r#"{"body":{"name":"guest/hello","statusCode":9,"kind":"nodejs:20","memory":512,"duration":400000},"eventType":"Activation","source":"invoker0","namespace":"guest","timestamp":1700000000500}"#.to_string(),
        // package action invoked from another namespace, label needing escapes in the kind
        r#"{"body":{"name":"shared/pkg/act","statusCode":2,"kind":"black\"box\\\n","memory":128},"eventType":"Activation","source":"invoker1","namespace":"alice","timestamp":1699999999000}"#.to_string(),
        r#"{"body":{"metricName":"ConcurrentRateLimit","metricValue":1},"eventType":"Metric","source":"controller0","namespace":"guest"}"#.to_string(),
        r#"{"body":{"metricName":"ConcurrentRateLimit","metricValue":1},"eventType":"Metric","source":"controller1","namespace":"guest"}"#.to_string(),
        r#"{"body":{"metricName":"TimedRateLimit","metricValue":1},"eventType":"Metric","source":"controller0","namespace":"alice"}"#.to_string(),
        r#"{"body":{"metricName":"ConcurrentInvocations","metricValue":3},"eventType":"Metric","source":"controller0","namespace":"guest"}"#.to_string(),
        r#"{"body":{"metricName":"ConcurrentInvocations","metricValue":7},"eventType":"Metric","source":"controller1","namespace":"guest"}"#.to_string(),
        r#"{"body":{"metricName":"ConcurrentInvocations","metricValue":2},"eventType":"Metric","source":"controller0","namespace":"guest"}"#.to_string(),
    ];
    let applied = apply_all(&mut agg, &events);
    assert_eq!(&applied[..4], &[Applied::Activation; 4]);
    assert_eq!(agg.newest_timestamp_ms(), Some(1_700_000_000_500));
    let text = agg.render_to_string();

    assert!(!text.contains('\r'));
    assert!(text.ends_with('\n'));
    let g = r#"namespace="guest",initiator="guest",action="hello""#;
    let s = r#"namespace="shared",initiator="alice",action="pkg/act""#;
    assert_eq!(
        family(&text, "openwhisk_action_activations_total"),
        vec![
            "# HELP openwhisk_action_activations_total Activation Count",
            "# TYPE openwhisk_action_activations_total counter",
            &format!(
                r#"openwhisk_action_activations_total{{{g},kind="nodejs:20",memory="256"}} 2"#
            ),
            &format!(
                r#"openwhisk_action_activations_total{{{g},kind="nodejs:20",memory="512"}} 1"#
            ),
            &format!(
                r#"openwhisk_action_activations_total{{{s},kind="black\"box\\\n",memory="128"}} 1"#
            ),
        ]
    );
    assert_eq!(
        family(&text, "openwhisk_action_coldStarts_total"),
        vec![
            "# HELP openwhisk_action_coldStarts_total Cold start counts",
            "# TYPE openwhisk_action_coldStarts_total counter",
            &format!("openwhisk_action_coldStarts_total{{{g}}} 1"),
        ]
    );
    assert_eq!(
        family(&text, "openwhisk_action_status"),
        vec![
            "# HELP openwhisk_action_status Activation failure status type",
            "# TYPE openwhisk_action_status counter",
            &format!(r#"openwhisk_action_status{{{g},status="success"}} 1"#),
            &format!(r#"openwhisk_action_status{{{g},status="application_error"}} 1"#),
            &format!(r#"openwhisk_action_status{{{g},status="unknown"}} 1"#),
            &format!(r#"openwhisk_action_status{{{s},status="action_developer_error"}} 1"#),
        ]
    );
    assert_eq!(
        family(&text, "openwhisk_action_status_code")[2..],
        [&format!(
            r#"openwhisk_action_status_code{{{g},status_code="404"}} 1"#
        )]
    );
    let wait = family(&text, "openwhisk_action_waitTime_seconds");
    assert_eq!(
        wait[1],
        "# TYPE openwhisk_action_waitTime_seconds histogram"
    );
    let b = |le: &str, n: u64| {
        format!(r#"openwhisk_action_waitTime_seconds_bucket{{{g},le="{le}"}} {n}"#)
    };
    assert_eq!(wait[2], b("0.005", 2)); // 0 and 5 ms
    assert_eq!(wait[3], b("0.01", 2));
    assert_eq!(wait[4], b("0.025", 3)); // 20 ms
    assert_eq!(wait[16], b("300", 3));
    assert_eq!(wait[17], b("+Inf", 3));
    assert_eq!(
        wait[18],
        format!("openwhisk_action_waitTime_seconds_sum{{{g}}} 0.025")
    );
    assert_eq!(
        wait[19],
        format!("openwhisk_action_waitTime_seconds_count{{{g}}} 3")
    );
    assert_eq!(wait.len(), 2 + 2 * 18);

    let init = family(&text, "openwhisk_action_initTime_seconds");
    assert_eq!(
        init.len(),
        2 + 18,
        "only the cold-started action has an init histogram"
    );
    assert_eq!(
        init[7],
        format!(r#"openwhisk_action_initTime_seconds_bucket{{{g},le="0.25"}} 0"#)
    );
    assert_eq!(
        init[8],
        format!(r#"openwhisk_action_initTime_seconds_bucket{{{g},le="0.5"}} 1"#)
    );

    let dur = family(&text, "openwhisk_action_duration_seconds");
    let d = |le: &str, n: u64| {
        format!(r#"openwhisk_action_duration_seconds_bucket{{{g},le="{le}"}} {n}"#)
    };
    assert_eq!(dur[7], d("0.25", 1)); // 150 ms
    assert_eq!(dur[9], d("1", 2)); // 700 ms
    assert_eq!(dur[16], d("300", 2)); // 400 s is above the top bound
    assert_eq!(dur[17], d("+Inf", 3));
    assert_eq!(
        dur[18],
        format!("openwhisk_action_duration_seconds_sum{{{g}}} 400.85")
    );

    assert_eq!(
        family(&text, "openwhisk_action_response_size_bytes")[2..6],
        [
            format!(r#"openwhisk_action_response_size_bytes_bucket{{{g},le="64"}} 0"#),
            format!(r#"openwhisk_action_response_size_bytes_bucket{{{g},le="256"}} 1"#),
            format!(r#"openwhisk_action_response_size_bytes_bucket{{{g},le="1024"}} 1"#),
            format!(r#"openwhisk_action_response_size_bytes_bucket{{{g},le="4096"}} 1"#),
        ]
    );
    assert_eq!(
        family(&text, "openwhisk_action_response_size_bytes").len(),
        2 + 12
    );

    assert_eq!(
        family(&text, "openwhisk_action_memory")[2..],
        [
            format!("openwhisk_action_memory{{{g}}} 512"),
            format!("openwhisk_action_memory{{{s}}} 128"),
        ]
    );
    assert_eq!(
        family(&text, "openwhisk_action_limit_concurrent_total")[1..],
        [
            "# TYPE openwhisk_action_limit_concurrent_total counter",
            r#"openwhisk_action_limit_concurrent_total{namespace="guest"} 2"#
        ]
    );
    assert_eq!(
        family(&text, "openwhisk_action_limit_timed_total")[2..],
        [r#"openwhisk_action_limit_timed_total{namespace="alice"} 1"#]
    );
    assert_eq!(
        family(&text, "openwhisk_namespace_concurrent_invocations")[1..],
        [
            "# TYPE openwhisk_namespace_concurrent_invocations gauge",
            r#"openwhisk_namespace_concurrent_invocations{namespace="guest",controller="controller0"} 2"#,
            r#"openwhisk_namespace_concurrent_invocations{namespace="guest",controller="controller1"} 7"#,
        ]
    );
    // 2 activation rows + cold + 3 statuses + code + wait + dur + init + size + memory + GB-s
    // for hello; 1 + 1 + 2 + 1 + 1 for shared; 1 + 1 namespace counters; 2 gauges.
    assert_eq!(agg.live_series(), 13 + 6 + 2 + 2);
}

#[test]
fn takes_labels_from_every_event_never_frozen() {
    let mut agg = Aggregator::new(100);
    apply_all(
        &mut agg,
        &[
            act("alice", "shared/tool", ST),
            r#"{"body":{"name":"shared/tool","statusCode":0,"kind":"python:3","memory":512},"eventType":"Activation","source":"invoker0","namespace":"bob"}"#.to_string(),
        ],
    );
    let text = agg.render_to_string();
    assert!(text.contains(r#"openwhisk_action_activations_total{namespace="shared",initiator="alice",action="tool",kind="nodejs:20",memory="256"} 1"#), "{text}");
    assert!(text.contains(r#"openwhisk_action_activations_total{namespace="shared",initiator="bob",action="tool",kind="python:3",memory="512"} 1"#), "{text}");
}

#[test]
fn counts_actions_beyond_max_actions_under_overflow_keeping_namespace() {
    let mut agg = Aggregator::new(2);
    let applied = apply_all(
        &mut agg,
        &[
            act("guest", "guest/a", ST),
            act("guest", "guest/b", ST),
            act("guest", "guest/c", ST),
            act("other", "other/d", ST),
            act("guest", "guest/a", ST),
            act("guest", "guest/c", ST),
        ],
    );
    use Applied::{Activation as A, OverflowActivation as O};
    assert_eq!(applied, vec![A, A, O, O, A, O]);
    assert_eq!(agg.distinct_actions(), 2);
    let text = agg.render_to_string();
    assert!(text.contains(r#"openwhisk_action_activations_total{namespace="guest",initiator="guest",action="__overflow__",kind="nodejs:20",memory="256"} 2"#), "{text}");
    assert!(text.contains(r#"openwhisk_action_activations_total{namespace="other",initiator="other",action="__overflow__",kind="nodejs:20",memory="256"} 1"#), "{text}");
    assert!(!text.contains(r#"action="c""#));
}

#[test]
fn escapes_backslash_quote_and_newline_in_label_values() {
    let mut s = String::new();
    escape_into(&mut s, "a\\b\"c\nd");
    assert_eq!(s, r#"a\\b\"c\nd"#);
}

#[test]
fn renders_empty_aggregate_with_headers_only() {
    let text = Aggregator::new(10).render_to_string();
    assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 0);
    assert_eq!(text.lines().filter(|l| l.starts_with("# TYPE")).count(), 14);
}

/// Sample lines of family `name` (no comments).
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    family(text, name)
        .into_iter()
        .filter(|l| !l.starts_with('#'))
        .collect()
}

fn with_code(action: &str, code: i64) -> String {
    act(
        "guest",
        action,
        &format!(r#","statusCode":0,"userDefinedStatusCode":{code}"#),
    )
}

#[test]
fn an_action_answering_100000_distinct_status_codes_keeps_its_series_bounded() {
    let mut agg = Aggregator::default();
    let mut series_after = Vec::new();
    for code in 0..100_000_i64 {
        let e = with_code("guest/random", code);
        let _ = agg.apply(&parse(e.as_bytes()).unwrap());
        if code == 999 || code == 99_999 {
            series_after.push(agg.live_series());
        }
    }
    // Flat: the 100 000th code costs no more series than the 1 000th.
    assert_eq!(series_after[0], series_after[1]);
    assert!(series_after[1] <= 40, "{series_after:?}");
    let text = agg.render_to_string();
    let codes = samples(&text, "openwhisk_action_status_code");
    assert_eq!(codes.len(), 21, "20 codes + other: {codes:?}");
    let g = r#"namespace="guest",initiator="guest",action="random""#;
    assert!(codes.contains(&&*format!(
        r#"openwhisk_action_status_code{{{g},status_code="0"}} 1"#
    )));
    assert!(codes.contains(&&*format!(
        r#"openwhisk_action_status_code{{{g},status_code="other"}} 99980"#
    )));
    assert_eq!(agg.capped().status_codes, 99_980);
    assert_eq!(agg.capped().series, 0);
}

#[test]
fn the_series_budget_bounds_every_keyed_map_and_keeps_every_activation_counted() {
    let limits = Limits {
        max_actions: 1_000,
        max_series: 40,
        max_status_codes_per_action: 20,
        evict_after: Duration::ZERO,
    };
    let mut agg = Aggregator::with_limits(limits);
    let mut events = Vec::new();
    for i in 0..50 {
        events.push(with_code(&format!("ns{i}/a"), i));
        events.push(act(&format!("init{i}"), "guest/b", ST));
        events.push(format!(
            r#"{{"body":{{"metricName":"TimedRateLimit","metricValue":1}},"eventType":"Metric","source":"c0","namespace":"ns{i}"}}"#
        ));
        events.push(format!(
            r#"{{"body":{{"metricName":"ConcurrentInvocations","metricValue":3}},"eventType":"Metric","source":"c{i}","namespace":"ns{i}"}}"#
        ));
        events.push(format!(
            r#"{{"body":{{"name":"guest/b","statusCode":0,"kind":"k{i}","memory":{i}}},"eventType":"Activation","namespace":"guest"}}"#
        ));
    }
    let _ = apply_all(&mut agg, &events);
    assert!(agg.charged_series() <= 40, "{}", agg.charged_series());
    assert!(agg.capped().series > 0);
    let text = agg.render_to_string();
    let total = |name: &str| -> u64 {
        samples(&text, name)
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    // Nothing lost: every activation and every rate-limit event is in some series.
    assert_eq!(total("openwhisk_action_activations_total"), 150);
    assert_eq!(total("openwhisk_action_limit_timed_total"), 50);
    assert!(text.contains(r#"openwhisk_action_limit_timed_total{namespace="__overflow__"}"#));
    assert!(
        text.contains(r#"namespace="__overflow__",initiator="__overflow__",action="__overflow__""#)
    );
    // Gauges cannot be folded: beyond the budget they are dropped (and counted).
    assert!(samples(&text, "openwhisk_namespace_concurrent_invocations").len() < 50);
}

#[test]
fn idle_keys_are_evicted_so_new_actions_get_their_own_series_again() {
    let limits = Limits {
        max_actions: 2,
        evict_after: Duration::from_secs(3600),
        ..Limits::default()
    };
    let mut agg = Aggregator::with_limits(limits);
    let t0 = Instant::now();
    let ev = |name: &str| act("guest", name, ST);
    let apply_at =
        |agg: &mut Aggregator, e: &str, t: Instant| agg.apply_at(&parse(e.as_bytes()).unwrap(), t);
    assert_eq!(apply_at(&mut agg, &ev("guest/a"), t0), Applied::Activation);
    assert_eq!(apply_at(&mut agg, &ev("guest/b"), t0), Applied::Activation);
    assert_eq!(
        apply_at(&mut agg, &ev("guest/c"), t0),
        Applied::OverflowActivation
    );
    let limit = r#"{"body":{"metricName":"ConcurrentRateLimit","metricValue":1},"eventType":"Metric","source":"c0","namespace":"guest"}"#;
    let _ = apply_at(&mut agg, limit, t0);
    // b stays busy; a, the overflow entry and the limit go idle.
    let later = t0 + Duration::from_secs(3000);
    assert_eq!(
        apply_at(&mut agg, &ev("guest/b"), later),
        Applied::Activation
    );
    assert_eq!(agg.evict_idle(t0 + Duration::from_secs(3599)), 0);
    assert_eq!(agg.evict_idle(t0 + Duration::from_secs(3601)), 3);
    assert_eq!(agg.distinct_actions(), 1);
    let t1 = t0 + Duration::from_secs(3602);
    assert_eq!(apply_at(&mut agg, &ev("guest/d"), t1), Applied::Activation);
    let text = agg.render_to_string();
    assert!(text.contains(r#"action="d""#), "{text}");
    assert!(!text.contains(r#"action="a""#), "{text}");
    assert!(!text.contains("__overflow__"), "{text}");
    assert!(samples(&text, "openwhisk_action_limit_concurrent_total").is_empty());
}

#[test]
fn gb_seconds_is_the_exact_sum_of_duration_times_memory_over_1024() {
    let mut agg = Aggregator::default();
    let mut expected = 0.0_f64;
    for i in 0..500_u64 {
        let duration = (i * 37) % 4_000 + 1;
        let memory = [128_u64, 256, 512, 1024, 2048][(i % 5) as usize];
        let e = format!(
            r#"{{"body":{{"name":"guest/bill","statusCode":0,"kind":"nodejs:20","memory":{memory},"duration":{duration}}},"eventType":"Activation","namespace":"guest"}}"#
        );
        let _ = agg.apply(&parse(e.as_bytes()).unwrap());
        #[allow(clippy::cast_precision_loss)]
        {
            expected += (duration as f64 / 1000.0) * (memory as f64 / 1024.0);
        }
    }
    let text = agg.render_to_string();
    let line = samples(&text, "openwhisk_action_gb_seconds_total");
    assert_eq!(line.len(), 1);
    let (labels, value) = line[0].rsplit_once(' ').unwrap();
    assert_eq!(
        labels,
        r#"openwhisk_action_gb_seconds_total{namespace="guest",initiator="guest",action="bill"}"#
    );
    assert_eq!(value.parse::<f64>().unwrap(), expected);
    assert!(expected > 0.0);
}

#[test]
fn caused_activations_are_counted_exactly_by_cause() {
    let mut agg = Aggregator::default();
    let ev = |extra: &str| {
        format!(
            r#"{{"body":{{"name":"guest/step","statusCode":0,"kind":"nodejs:20","memory":256{extra}}},"eventType":"Activation","namespace":"guest"}}"#
        )
    };
    let mut events = Vec::new();
    events.extend((0..7).map(|_| ev(r#","causedBy":"sequence""#)));
    events.extend((0..3).map(|_| ev(r#","conductor":true"#)));
    events.extend((0..2).map(|_| ev(r#","causedBy":true"#)));
    events.extend((0..5).map(|_| ev(r#","causedBy":false"#)));
    events.extend((0..4).map(|_| ev("")));
    let _ = apply_all(&mut agg, &events);
    let text = agg.render_to_string();
    let g = r#"namespace="guest",initiator="guest",action="step""#;
    assert_eq!(
        samples(&text, "openwhisk_action_caused_activations_total"),
        vec![
            format!(r#"openwhisk_action_caused_activations_total{{{g},caused_by="conductor"}} 3"#),
            format!(r#"openwhisk_action_caused_activations_total{{{g},caused_by="sequence"}} 9"#),
        ]
    );
}
