//! The live per-action table the demo prints: activations, cold starts, containers alive
//! (frozen), errors and p95 duration.

use std::fmt::Write as _;

use crate::stats::ActionStats;

/// Renders the table (one header line, one line per action, one totals line).
pub fn render(stats: &[ActionStats]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<22} {:>11} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8}",
        "action",
        "activations",
        "cold",
        "alive",
        "frozen",
        "removed",
        "errors",
        "rejected",
        "p95 ms"
    );
    let mut total = ActionStats {
        action: "total".into(),
        ..ActionStats::default()
    };
    for a in stats {
        line(&mut s, a);
        total.activations += a.activations;
        total.cold_starts += a.cold_starts;
        total.containers_alive += a.containers_alive;
        total.containers_frozen += a.containers_frozen;
        total.containers_removed += a.containers_removed;
        for i in 0..4 {
            total.statuses[i] += a.statuses[i];
        }
        total.rejected += a.rejected;
    }
    line(&mut s, &total);
    s
}

fn line(s: &mut String, a: &ActionStats) {
    let p95 = a
        .p95_duration_ms
        .map_or_else(|| "-".to_string(), |v| v.to_string());
    let _ = writeln!(
        s,
        "{:<22} {:>11} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8}",
        a.action,
        a.activations,
        a.cold_starts,
        a.containers_alive,
        a.containers_frozen,
        a.containers_removed,
        a.errors(),
        a.rejected,
        p95
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_line_per_action_and_totals() {
        let a = ActionStats {
            action: "guest/hello".into(),
            activations: 10,
            statuses: [8, 1, 1, 0],
            cold_starts: 2,
            containers_alive: 2,
            containers_frozen: 1,
            p95_duration_ms: Some(12),
            ..ActionStats::default()
        };
        let b = ActionStats {
            action: "guest/orders".into(),
            activations: 5,
            statuses: [5, 0, 0, 0],
            ..ActionStats::default()
        };
        let t = render(&[a, b]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].contains("p95 ms"));
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cols,
            ["guest/hello", "10", "2", "2", "1", "0", "2", "0", "12"]
        );
        assert!(lines[2].ends_with('-'));
        assert!(lines[3].starts_with("total") && lines[3].split_whitespace().nth(1) == Some("15"));
    }
}
