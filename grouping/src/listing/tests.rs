use super::*;

/// Exactly what Debian's Pushgateway 1.x answered for two groups, the first with a pushed
/// family named `labels` (which overwrites the group's `labels` key).
const ANSWER: &str = r#"{"status":"success","data":[{"jobs":{"time_stamp":"2026-12-02T01:43:14.217275826Z","type":"COUNTER","metrics":[{"labels":{"instance":"x","job":"a"},"value":"1"}]},"labels":{"time_stamp":"2026-12-02T01:43:14.217275826Z","type":"GAUGE","metrics":[{"labels":{"instance":"x","job":"a"},"value":"3"}]},"last_push_successful":true,"push_failure_time_seconds":{"time_stamp":"2026-12-02T01:43:14.217275826Z","type":"GAUGE","help":"Last Unix time when changing this group in the Pushgateway failed.","metrics":[{"labels":{"instance":"x","job":"a"},"value":"0"}]},"push_time_seconds":{"time_stamp":"2026-12-02T01:43:14.217275826Z","type":"GAUGE","help":"Last Unix time when changing this group in the Pushgateway succeeded.","metrics":[{"labels":{"instance":"x","job":"a"},"value":"1.7961757942172759e+09"}]}},{"jobs":{"time_stamp":"2026-12-02T01:43:14.240028607Z","type":"GAUGE","metrics":[{"labels":{"instance":"y","job":"a"},"value":"2"}]},"labels":{"instance":"y","job":"a"},"last_push_successful":true,"push_failure_time_seconds":{"time_stamp":"2026-12-02T01:43:14.240028607Z","type":"GAUGE","help":"Last Unix time when changing this group in the Pushgateway failed.","metrics":[{"labels":{"instance":"y","job":"a"},"value":"0"}]},"push_time_seconds":{"time_stamp":"2026-12-02T01:43:14.240028607Z","type":"GAUGE","help":"Last Unix time when changing this group in the Pushgateway succeeded.","metrics":[{"labels":{"instance":"y","job":"a"},"value":"1.7961757942400286e+09"}]}}]}"#;

/// Within a microsecond (an f64 of Unix seconds resolves ~0.24 µs).
fn near(got: Option<f64>, want: f64) -> bool {
    got.is_some_and(|t| (t - want).abs() < 1e-6)
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn keeps_labels_push_time_and_family_types_of_each_group() {
    let mut groups = Vec::new();
    let n = parse_listing(ANSWER.as_bytes(), true, |g| groups.push(g)).unwrap();
    assert_eq!(n, 2);
    assert_eq!(groups[0].labels, pairs(&[("instance", "x"), ("job", "a")]));
    assert_eq!(groups[0].push_time, Some(1_796_175_794.217_275_9));
    assert!(near(groups[0].first_push, 1_796_175_794.217_275_8));
    assert_eq!(groups[0].label("instance"), Some("x"));
    let kinds: Vec<(&str, FamilyType)> =
        groups[0].families.iter().map(|(f, t)| (&**f, *t)).collect();
    assert_eq!(
        kinds,
        [
            ("jobs", FamilyType::Counter),
            ("labels", FamilyType::Gauge),
            ("push_failure_time_seconds", FamilyType::Gauge),
            ("push_time_seconds", FamilyType::Gauge)
        ]
    );
    assert_eq!(groups[1].labels, pairs(&[("instance", "y"), ("job", "a")]));
    assert_eq!(groups[1].families[0], ("jobs".into(), FamilyType::Gauge));
    assert!(near(groups[1].first_push, 1_796_175_794.240_028_6));
}

#[test]
fn the_first_push_is_the_untouched_failure_gauge_stamp_and_unknown_once_a_push_failed() {
    let group = |failure: &str, stamp: &str| {
        format!(
            r#"{{"status":"success","data":[{{"push_failure_time_seconds":{{"time_stamp":"{stamp}","type":"GAUGE","metrics":[{{"labels":{{"job":"j"}},"value":"{failure}"}}]}},"push_time_seconds":{{"time_stamp":"2026-12-07T06:06:21Z","type":"GAUGE","metrics":[{{"labels":{{"job":"j"}},"value":"1.7966235810740426e+09"}}]}}}}]}}"#
        )
    };
    let first_push = |body: String| {
        let mut groups = Vec::new();
        parse_listing(body.as_bytes(), false, |g| groups.push(g)).unwrap();
        groups[0].first_push
    };
    // Read from Debian's Pushgateway 1.5.1: pushed at :19.33, then at :20.55 and :21.07.
    assert!(near(
        first_push(group("0", "2026-12-07T06:06:19.333722439Z")),
        1_796_623_579.333_722_4
    ));
    assert!(near(
        first_push(group("0", "2026-12-07T08:06:19.5+02:00")),
        1_796_623_579.5
    ));
    assert_eq!(
        first_push(group("1.7966235e+09", "2026-12-07T06:06:19Z")),
        None
    );
    assert_eq!(first_push(group("0", "yesterday")), None);
}

#[test]
fn without_families_keeps_only_labels_and_push_time() {
    let mut groups = Vec::new();
    let _ = parse_listing(ANSWER.as_bytes(), false, |g| groups.push(g)).unwrap();
    assert!(groups.iter().all(|g| g.families.is_empty()));
    assert_eq!(groups.len(), 2);
}

#[test]
fn falls_back_to_the_labels_object_and_skips_groups_without_a_key() {
    let body = r#"{"status":"success","data":[
        {"labels":{"job":"j","instance":"a"},"last_push_successful":true},
        {"last_push_successful":false},
        {"labels":{"job":"j","instance":"b"},"push_time_seconds":{"type":"GAUGE","metrics":[]}}
    ]}"#;
    let mut groups = Vec::new();
    let n = parse_listing(body.as_bytes(), false, |g| groups.push(g)).unwrap();
    assert_eq!(n, 3);
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].labels, pairs(&[("instance", "a"), ("job", "j")]));
    assert_eq!(groups[0].push_time, None);
    assert_eq!(groups[1].label("instance"), Some("b"));
}

#[test]
fn an_empty_pushgateways_null_data_is_no_group() {
    let n = parse_listing(&br#"{"status":"success","data":null}"#[..], true, |_| {
        panic!("no group expected")
    })
    .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn rejects_what_is_not_the_pushgateway_json() {
    for bad in [
        "",
        "[]",
        r#"{"status":"success"}"#,
        r#"{"data":[1]}"#,
        r#"{"data":[{}"#,
    ] {
        assert!(
            parse_listing(bad.as_bytes(), false, |_| {}).is_err(),
            "{bad:?} accepted"
        );
    }
}
