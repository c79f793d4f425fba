//! What the family table learns from the Pushgateways' listings: every stored family name with
//! one type, and the sides that lose a stored clash.
//!
//! A shard can hold a clash (two replicas accepted its sides within their window, until the
//! collector's guard deletes the later side's groups): a name under two types, or a histogram
//! `x` beside a family `x_count`. Learning both sides would make the table refuse both tenants
//! (409) until the guard's repair and the next resync; so only the side the guard keeps is
//! learnt — the family pushed first, by the Pushgateway's first-push stamps, in
//! [`whisk_grouping::listing::Side`]'s order — and the other side is marked later, so the table
//! forgets it if it holds it. The earlier tenant's pushes go on; only the later tenant's
//! clashing pushes are refused.

use std::collections::{HashMap, HashSet};

use whisk_grouping::listing::{KeptSides, ListedGroup, Side};

use crate::validate::FamilyType;

/// The families read from one or more listings, per side (name and type): the earliest first
/// push of its groups and how many they are. Bounded by what the listings held (each read has
/// a size cap).
#[derive(Debug, Default)]
pub(crate) struct StoredSides {
    sides: HashMap<(Box<str>, FamilyType), (f64, usize)>,
}

impl StoredSides {
    /// Adds a listed group's families; the Pushgateway's own `push_time_seconds` and
    /// `push_failure_time_seconds` are left out.
    pub(crate) fn add_group(&mut self, group: ListedGroup) {
        let first = group.first_push_bound();
        for (name, kind) in group.families {
            if matches!(&*name, "push_time_seconds" | "push_failure_time_seconds") {
                continue;
            }
            let side = self.sides.entry((name, kind)).or_insert((first, 0));
            side.0 = side.0.min(first);
            side.1 += 1;
        }
    }

    /// The side of every clash the guard keeps, and the others marked later.
    pub(crate) fn keep_first_pushed(self) -> StoredFamilies {
        let mut order: Vec<(Box<str>, FamilyType, f64, usize)> = self
            .sides
            .into_iter()
            .map(|((name, kind), (first_push, holders))| (name, kind, first_push, holders))
            .collect();
        order.sort_by(|a, b| side(a).cmp_first_pushed(&side(b)));
        let mut kept = KeptSides::default();
        let mut later = HashSet::new();
        for (name, kind, ..) in &order {
            if kept.offer(name, *kind, ()).is_some() {
                later.insert((name.to_string(), *kind));
            }
        }
        StoredFamilies {
            kept: kept
                .into_kept()
                .map(|(name, kind, ())| (name.to_string(), kind))
                .collect(),
            later,
        }
    }
}

/// The order key of one side of [`StoredSides::keep_first_pushed`].
fn side(s: &(Box<str>, FamilyType, f64, usize)) -> Side<'_> {
    Side {
        name: &s.0,
        kind: s.1,
        first_push: s.2,
        holders: s.3,
    }
}

/// What a table learns from listings ([`StoredSides::keep_first_pushed`]).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct StoredFamilies {
    /// Every stored name with the type kept: no two of them clash.
    pub(crate) kept: HashMap<String, FamilyType>,
    /// The sides that lose a stored clash (the guard deletes their groups).
    pub(crate) later: HashSet<(String, FamilyType)>,
}

impl From<HashMap<String, FamilyType>> for StoredFamilies {
    fn from(kept: HashMap<String, FamilyType>) -> Self {
        Self {
            kept,
            later: HashSet::new(),
        }
    }
}

/// Reads a Pushgateway `/api/v1/metrics` answer with the shared streamed reader
/// ([`whisk_grouping::listing`]): labels, samples and help texts are skipped unparsed, so
/// memory does not grow with the number of series stored.
#[cfg(test)]
fn read_snapshot(json: impl std::io::Read) -> Result<StoredFamilies, serde_json::Error> {
    let mut sides = StoredSides::default();
    whisk_grouping::listing::parse_listing(json, true, |group| sides.add_group(group))?;
    Ok(sides.keep_first_pushed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pushgateway_snapshot_yields_only_family_types() {
        let json = br#"{"status":"success","data":[
          {"labels":{"job":"openwhisk_actions","instance":"a"},"last_push_successful":true,
           "jobs":{"time_stamp":"2026-01-01T00:00:00Z","type":"GAUGE","help":"h","metrics":[{"labels":{"x":"1"},"value":"1"}]},
           "lat":{"type":"HISTOGRAM","metrics":[{"buckets":{"0.1":"1"},"count":"1","sum":"0.1"}]},
           "push_time_seconds":{"type":"GAUGE","metrics":[]},
           "push_failure_time_seconds":{"type":"GAUGE","metrics":[]}},
          {"labels":{"job":"openwhisk_actions","instance":"b"},"jobs":{"type":"COUNTER","metrics":[]}}
        ]}"#;
        let map = read_snapshot(&json[..]).unwrap().kept;
        assert_eq!(map.len(), 2);
        // Neither group's push time is known: a tie, decided by name and type, every read alike.
        assert_eq!(map["jobs"], FamilyType::Counter);
        assert_eq!(map["lat"], FamilyType::Histogram);
        let empty = read_snapshot(&br#"{"status":"success","data":null}"#[..]).unwrap();
        assert_eq!(empty, StoredFamilies::default());
        assert!(read_snapshot(&b"{\"data\":["[..]).is_err());
    }

    /// A listing of two groups, `late` created at :20 and `first` at :10 (though `first`
    /// pushed last, at :30), `late` listed first; `first_body`/`late_body` are their families.
    fn two_groups(first_body: &str, late_body: &str) -> String {
        let group = |instance: &str, created: &str, last: &str, body: &str| {
            format!(
                r#"{{"labels":{{"job":"j","instance":"{instance}"}},{body},"push_failure_time_seconds":{{"time_stamp":"2026-12-07T06:00:{created}Z","type":"GAUGE","metrics":[{{"value":"0"}}]}},"push_time_seconds":{{"type":"GAUGE","metrics":[{{"labels":{{"job":"j","instance":"{instance}"}},"value":"{last}"}}]}}}}"#
            )
        };
        format!(
            r#"{{"status":"success","data":[{},{}]}}"#,
            group("late", "20", "1796623220", late_body),
            group("first", "10", "1796623230", first_body)
        )
    }

    #[test]
    fn a_stored_clash_teaches_the_type_of_the_group_pushed_first_whatever_the_listing_order() {
        let json = two_groups(
            r#""jobs_total":{"type":"COUNTER","metrics":[]}"#,
            r#""jobs_total":{"type":"GAUGE","metrics":[]}"#,
        );
        let read = read_snapshot(json.as_bytes()).unwrap();
        assert_eq!(read.kept["jobs_total"], FamilyType::Counter);
        assert_eq!(
            read.later,
            HashSet::from([("jobs_total".to_string(), FamilyType::Gauge)])
        );
    }

    #[test]
    fn a_stored_suffix_clash_teaches_only_the_family_pushed_first() {
        let histogram = r#""x":{"type":"HISTOGRAM","metrics":[]}"#;
        let gauge = r#""x_count":{"type":"GAUGE","metrics":[]},"y":{"type":"GAUGE","metrics":[]}"#;
        let read = read_snapshot(two_groups(histogram, gauge).as_bytes()).unwrap();
        assert_eq!(
            read.kept,
            HashMap::from([
                ("x".to_string(), FamilyType::Histogram),
                ("y".to_string(), FamilyType::Gauge)
            ])
        );
        assert_eq!(
            read.later,
            HashSet::from([("x_count".to_string(), FamilyType::Gauge)])
        );
        // The other way round: the gauge was pushed first, the histogram loses.
        let read = read_snapshot(two_groups(gauge, histogram).as_bytes()).unwrap();
        assert_eq!(read.kept["x_count"], FamilyType::Gauge);
        assert!(!read.kept.contains_key("x"));
        assert_eq!(
            read.later,
            HashSet::from([("x".to_string(), FamilyType::Histogram)])
        );
    }
}
