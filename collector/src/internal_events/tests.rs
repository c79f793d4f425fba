use super::*;

#[test]
fn log_budget_suppresses_beyond_the_window_allowance_and_reports_it() {
    let mut b = LogBudget::new(2, Duration::from_secs(3600));
    assert!(matches!(b.take(), Take::Log { suppressed: 0 }));
    assert!(matches!(b.take(), Take::Log { suppressed: 0 }));
    assert!(matches!(b.take(), Take::Suppress));
    assert!(matches!(b.take(), Take::Suppress));
    b.started -= Duration::from_secs(3601);
    assert!(matches!(b.take(), Take::Log { suppressed: 2 }));
}

#[test]
fn renders_every_own_family() {
    let t = Telemetry::new();
    let event = crate::event::parse(
        br#"{"body":{"name":"guest/x","statusCode":0,"kind":"k"},"eventType":"Activation","namespace":"guest"}"#,
    )
    .unwrap();
    t.event_applied(Applied::OverflowActivation, &event);
    t.partition_lag("events", 0, 5);
    t.partitions_assigned(1);
    let mut s = String::new();
    t.render(
        &mut s,
        AggregateStats {
            live_series: 7,
            newest_timestamp_ms: Some(1_500),
            capped: Capped {
                status_codes: 3,
                series: 0,
            },
            exemplar_ids_too_long: 2,
        },
    );
    for name in [
        "whisk_collector_exemplar_ids_too_long_total 2",
        "whisk_collector_events_total{type=\"activation\"} 1",
        "whisk_collector_events_total{type=\"metric\"} 0",
        "whisk_collector_invalid_events_total{reason=\"not_utf8\"} 0",
        "whisk_collector_invalid_events_total{reason=\"empty\"} 0",
        "whisk_collector_last_event_timestamp_seconds 1.5",
        "whisk_collector_consumer_lag_messages{partition=\"0\",topic=\"events\"} 5",
        "whisk_collector_pushes_total{result=\"failed\"} 0",
        "whisk_collector_push_duration_seconds_count 0",
        "whisk_collector_live_series 7",
        "whisk_collector_overflow_events_total 1",
        "whisk_collector_capped_events_total{limit=\"max_status_codes_per_action\"} 3",
        "whisk_collector_capped_events_total{limit=\"max_series\"} 0",
        "whisk_collector_evicted_keys_total 0",
        "whisk_collector_janitor_pruned_groups_total 0",
        "whisk_collector_janitor_runs_total{result=\"ok\"} 0",
        "whisk_collector_janitor_rounds_total{source=\"prometheus\"} 0",
        "whisk_collector_janitor_prometheus_failures_total{reason=\"unreachable\"} 0",
        "whisk_collector_janitor_shard_checks_total{via=\"direct\"} 0",
        "whisk_collector_assigned_partitions 1",
    ] {
        assert!(s.contains(name), "{name} missing in\n{s}");
    }
}

#[test]
fn a_prometheus_fallback_is_counted_by_reason_beside_the_round() {
    use crate::janitor::prometheus::PrometheusError;
    use crate::janitor::{JanitorError, JanitorRound};
    let t = Telemetry::new();
    let unreachable = || PrometheusError::Unreachable {
        url: "http://p/api/v1/query".into(),
        message: "refused".into(),
    };
    t.janitor_round_done(&JanitorRound {
        prometheus_failure: Some(unreachable()),
        ..JanitorRound::default()
    });
    t.janitor_round_failed(&JanitorError::Fallback {
        prometheus: unreachable(),
        listing: Box::new(JanitorError::Body {
            url: "u".into(),
            message: "m".into(),
        }),
    });
    let mut s = String::new();
    t.render(&mut s, AggregateStats::default());
    for line in [
        "whisk_collector_janitor_prometheus_failures_total{reason=\"unreachable\"} 2",
        "whisk_collector_janitor_rounds_total{source=\"listing\"} 1",
        "whisk_collector_janitor_runs_total{result=\"failed\"} 1",
    ] {
        assert!(s.contains(line), "{line} missing in\n{s}");
    }
}

#[test]
fn guard_clashes_are_counted_by_what_ordered_them() {
    use crate::janitor::{ClashOrder, JanitorRound};
    let t = Telemetry::new();
    t.janitor_round_done(&JanitorRound {
        guard_clashes: vec![
            ClashOrder::FirstPush,
            ClashOrder::FirstPush,
            ClashOrder::Unordered,
        ],
        ..JanitorRound::default()
    });
    let mut s = String::new();
    t.render(&mut s, AggregateStats::default());
    for line in [
        "whisk_collector_guard_clashes_total{ordered_by=\"first_push\"} 2",
        "whisk_collector_guard_clashes_total{ordered_by=\"unordered\"} 1",
        "whisk_collector_guard_clashes_total{ordered_by=\"first_seen\"} 0",
        "whisk_collector_guard_clashes_total{ordered_by=\"platform\"} 0",
    ] {
        assert!(s.contains(line), "{line} missing in\n{s}");
    }
}
