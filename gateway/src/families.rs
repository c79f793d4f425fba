//! The cluster-wide family → type table: what every stored group already says a family name
//! is, so a push that would give a name a second type is refused (409) before it reaches a
//! Pushgateway whose `/metrics` would then answer 500.
//!
//! It is seeded from every Pushgateway's `/api/v1/metrics` at start, updated by every accepted
//! push (check and record are one step under one lock, so two pushes racing through one
//! replica cannot both win), and rebuilt from the Pushgateways every
//! `--family-resync-interval`: that is how two replicas converge and how families of pruned
//! groups are forgotten. Families recorded during a rebuild are kept. Two replicas can still
//! accept a clashing pair inside one interval; the collector's guard repairs that.
//!
//! Besides equal names, the table refuses the suffix collisions the Pushgateway's registry
//! refuses at scrape time: a histogram `x` beside a family named `x_bucket`, `x_sum` or
//! `x_count` (a summary: `x_sum`, `x_count`). The rule is `whisk_grouping`'s clash rule, the one
//! the collector's guard repairs by.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use whisk_grouping::listing::ListedGroup;
use whisk_grouping::{Clash, find_clash};

use crate::first_sight::ShardReads;
use crate::validate::{Family, FamilyType};

/// Why a push's families cannot be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// The name already has another type (409).
    #[error("family `{name}` is a {stored} in another group; this push has it as a {pushed}")]
    Type {
        /// The family.
        name: String,
        /// Its stored type.
        stored: FamilyType,
        /// The pushed type.
        pushed: FamilyType,
    },
    /// The name collides with a histogram's or summary's sample names (409).
    #[error("family `{name}` collides with the samples of {kind} `{stem}` (stored or pushed)")]
    Suffix {
        /// The family that collides.
        name: String,
        /// The histogram or summary.
        stem: String,
        /// Its type.
        kind: FamilyType,
    },
    /// The table is full (503 until a resync frees room).
    #[error("the family table is full ({max} names, --max-families); try again later")]
    Full {
        /// The limit.
        max: usize,
    },
    /// Not yet seeded from every Pushgateway (503).
    #[error("the family table is not yet seeded from every Pushgateway; try again later")]
    NotSeeded,
}

impl From<Clash> for Conflict {
    fn from(clash: Clash) -> Self {
        match clash {
            Clash::Type { name, known, new } => Self::Type {
                name,
                stored: known,
                pushed: new,
            },
            Clash::Suffix { name, stem, kind } => Self::Suffix { name, stem, kind },
        }
    }
}

impl Conflict {
    /// The `reason` label of `whisk_gateway_requests_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Type { .. } => "type_conflict",
            Self::Suffix { .. } => "suffix_conflict",
            Self::Full { .. } => "family_table_full",
            Self::NotSeeded => "not_seeded",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: FamilyType,
    /// Resync generation in which a push last recorded it (0: from a snapshot).
    generation: u64,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, Entry>,
    seeded: bool,
}

/// The table; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct FamilyTable {
    inner: Mutex<Inner>,
    generation: AtomicU64,
    max: usize,
    /// First-sight reads of each shard ([`crate::first_sight`]).
    shard_reads: ShardReads,
}

impl FamilyTable {
    /// An empty, unseeded table of at most `max` names.
    pub fn new(max: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            generation: AtomicU64::new(1),
            max,
            shard_reads: ShardReads::default(),
        }
    }

    /// Whether any of `families` is a name the table does not hold.
    pub fn has_new_name(&self, families: &[Family]) -> bool {
        let inner = self.lock();
        families.iter().any(|f| !inner.map.contains_key(&f.name))
    }

    /// Adds the names of a shard's listing the table does not hold yet (as a snapshot's, so
    /// the next rebuild forgets them if they are gone). Returns how many did not fit.
    pub fn learn(&self, names: HashMap<String, FamilyType>) -> usize {
        let mut inner = self.lock();
        let mut dropped = 0;
        for (name, kind) in names {
            if inner.map.contains_key(&name) {
                continue;
            }
            if inner.map.len() >= self.max {
                dropped += 1;
                continue;
            }
            inner.map.insert(
                name,
                Entry {
                    kind,
                    generation: 0,
                },
            );
        }
        dropped
    }

    /// First-sight reads of one shard start at most once per `min_interval`
    /// (`--first-sight-min-interval`; docs/design.md, "First sight").
    #[must_use]
    pub fn with_first_sight_interval(mut self, min_interval: Duration) -> Self {
        self.shard_reads = ShardReads::new(min_interval);
        self
    }

    pub(crate) fn shard_reads(&self) -> &ShardReads {
        &self.shard_reads
    }

    /// Names currently known.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no name is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a snapshot of every Pushgateway has been applied.
    pub fn is_seeded(&self) -> bool {
        self.lock().seeded
    }

    /// The stored type of `name`.
    pub fn get(&self, name: &str) -> Option<FamilyType> {
        self.lock().map.get(name).map(|e| e.kind)
    }

    /// Checks `families` against the table and each other and, if none conflicts, records them
    /// (one step under the lock).
    pub fn check_and_record(&self, families: &[Family]) -> Result<(), Conflict> {
        let mut inner = self.lock();
        if !inner.seeded {
            return Err(Conflict::NotSeeded);
        }
        let mut pending: HashMap<&str, FamilyType> = HashMap::with_capacity(families.len());
        let mut new_names = 0usize;
        for f in families {
            let stored = inner.map.get(&f.name).map(|e| e.kind);
            let lookup = |name: &str| {
                pending
                    .get(name)
                    .copied()
                    .or_else(|| inner.map.get(name).map(|e| e.kind))
            };
            if let Some(clash) = find_clash(&f.name, f.kind, lookup) {
                return Err(Conflict::from(clash));
            }
            if stored.is_none() && pending.insert(&f.name, f.kind).is_none() {
                new_names += 1;
            }
        }
        if inner.map.len() + new_names > self.max {
            return Err(Conflict::Full { max: self.max });
        }
        let generation = self.generation.load(Ordering::Relaxed);
        for f in families {
            // Most pushes repeat known names: refresh those in place, allocate only new ones.
            match inner.map.get_mut(&f.name) {
                Some(entry) => entry.generation = generation,
                None => {
                    inner.map.insert(
                        f.name.clone(),
                        Entry {
                            kind: f.kind,
                            generation,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Starts a rebuild: families recorded from now on survive [`FamilyTable::replace`].
    pub fn begin_resync(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Replaces the table with `snapshot` (the union of every Pushgateway's groups, read after
    /// [`FamilyTable::begin_resync`] returned `generation`), keeping what pushes recorded since.
    /// Marks the table seeded. Returns how many snapshot names did not fit.
    pub fn replace(&self, snapshot: HashMap<String, FamilyType>, generation: u64) -> usize {
        let mut inner = self.lock();
        let mut map: HashMap<String, Entry> = HashMap::with_capacity(snapshot.len().min(self.max));
        let mut dropped = 0;
        for (name, entry) in &inner.map {
            if entry.generation >= generation {
                map.insert(name.clone(), *entry);
            }
        }
        for (name, kind) in snapshot {
            if map.len() >= self.max && !map.contains_key(&name) {
                dropped += 1;
                continue;
            }
            map.entry(name).or_insert(Entry {
                kind,
                generation: 0,
            });
        }
        inner.map = map;
        inner.seeded = true;
        dropped
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent map (every write is one insert).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads a Pushgateway `/api/v1/metrics` answer into `into` (family name → type) with the
/// shared streamed reader ([`whisk_grouping::listing`]): labels, samples and help texts are
/// skipped unparsed, so memory does not grow with the number of series stored. A name seen
/// with two types keeps the one [`add_types`] keeps. The Pushgateway's own
/// `push_time_seconds` and `push_failure_time_seconds` are left out.
#[cfg(test)]
fn read_snapshot(
    json: &[u8],
    into: &mut HashMap<String, FamilyType>,
) -> Result<(), serde_json::Error> {
    read_snapshot_from(json, into)
}

/// [`read_snapshot`] from a reader, so the answer is parsed while it arrives and never held
/// whole (at 10 000 groups one Pushgateway's `/api/v1/metrics` is over 100 MB).
#[cfg(test)]
fn read_snapshot_from(
    json: impl std::io::Read,
    into: &mut HashMap<String, FamilyType>,
) -> Result<(), serde_json::Error> {
    let mut earliest = Earliest::new();
    whisk_grouping::listing::parse_listing(json, true, |group| add_types(&mut earliest, group))?;
    for (name, (kind, _)) in earliest {
        into.entry(name).or_insert(kind);
    }
    Ok(())
}

/// A shard's family types as its listing is read: per name, the type and first push of the
/// earliest group holding it (see [`add_types`]).
pub(crate) type Earliest = HashMap<String, (FamilyType, f64)>;

/// Adds a listed group's family types to `into`. A name held under two types (a stored clash,
/// until the collector's guard repairs it) keeps the type of the group pushed first
/// ([`ListedGroup::first_push`]; its last push where unknown; at a tie the one read first):
/// the family the guard keeps, so the table does not refuse that family's tenant meanwhile.
pub(crate) fn add_types(into: &mut Earliest, group: ListedGroup) {
    let first = group
        .first_push
        .or(group.push_time)
        .unwrap_or(f64::INFINITY);
    for (name, kind) in group.families {
        if matches!(&*name, "push_time_seconds" | "push_failure_time_seconds") {
            continue;
        }
        match into.get_mut(&*name) {
            Some(seen) if first < seen.1 => *seen = (kind, first),
            Some(_) => {}
            None => {
                into.insert(name.into_string(), (kind, first));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fam(name: &str, kind: FamilyType) -> Family {
        Family {
            name: name.into(),
            kind,
        }
    }

    fn seeded(max: usize) -> FamilyTable {
        let t = FamilyTable::new(max);
        let g = t.begin_resync();
        t.replace(HashMap::new(), g);
        t
    }

    #[test]
    fn a_second_type_for_a_name_is_a_conflict_that_says_both() {
        let t = seeded(100);
        t.check_and_record(&[fam("jobs", FamilyType::Gauge)])
            .unwrap();
        let err = t
            .check_and_record(&[fam("jobs", FamilyType::Counter)])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "family `jobs` is a gauge in another group; this push has it as a counter"
        );
        assert_eq!(t.get("jobs"), Some(FamilyType::Gauge));
        t.check_and_record(&[fam("jobs", FamilyType::Gauge)])
            .unwrap();
    }

    #[test]
    fn a_refused_push_records_none_of_its_families() {
        let t = seeded(100);
        t.check_and_record(&[fam("jobs", FamilyType::Gauge)])
            .unwrap();
        let push = [
            fam("fresh", FamilyType::Counter),
            fam("jobs", FamilyType::Counter),
        ];
        assert!(t.check_and_record(&push).is_err());
        assert_eq!(t.get("fresh"), None);
    }

    #[test]
    fn histogram_sample_names_collide_with_other_families() {
        let t = seeded(100);
        t.check_and_record(&[fam("lat", FamilyType::Histogram)])
            .unwrap();
        for name in ["lat_bucket", "lat_sum", "lat_count"] {
            let err = t
                .check_and_record(&[fam(name, FamilyType::Gauge)])
                .unwrap_err();
            assert_eq!(err.reason(), "suffix_conflict", "{name}");
        }
        t.check_and_record(&[fam("q_count", FamilyType::Counter)])
            .unwrap();
        let err = t
            .check_and_record(&[fam("q", FamilyType::Summary)])
            .unwrap_err();
        assert_eq!(err.reason(), "suffix_conflict");
        // Within one push too.
        let t = seeded(100);
        let push = [
            fam("h", FamilyType::Histogram),
            fam("h_sum", FamilyType::Gauge),
        ];
        assert!(t.check_and_record(&push).is_err());
        // The other order too: the Pushgateway's parser keeps an untyped `q_count` given before
        // `# TYPE q summary` as its own family, and its `/metrics` then answers 500 (tried).
        let t = seeded(100);
        let push = [
            fam("q_count", FamilyType::Untyped),
            fam("q", FamilyType::Summary),
        ];
        assert_eq!(
            t.check_and_record(&push).unwrap_err().reason(),
            "suffix_conflict"
        );
    }

    #[test]
    fn the_table_is_bounded_and_refuses_pushes_until_seeded() {
        let t = FamilyTable::new(2);
        assert_eq!(
            t.check_and_record(&[fam("a", FamilyType::Gauge)]),
            Err(Conflict::NotSeeded)
        );
        let g = t.begin_resync();
        t.replace(HashMap::new(), g);
        t.check_and_record(&[fam("a", FamilyType::Gauge), fam("b", FamilyType::Gauge)])
            .unwrap();
        assert_eq!(
            t.check_and_record(&[fam("c", FamilyType::Gauge)]),
            Err(Conflict::Full { max: 2 })
        );
        t.check_and_record(&[fam("a", FamilyType::Gauge)]).unwrap();
    }

    #[test]
    fn a_resync_forgets_unstored_names_but_keeps_names_pushed_during_it() {
        let t = seeded(100);
        t.check_and_record(&[fam("old", FamilyType::Gauge)])
            .unwrap();
        let g = t.begin_resync();
        t.check_and_record(&[fam("during", FamilyType::Counter)])
            .unwrap();
        let snapshot = HashMap::from([("stored".to_string(), FamilyType::Histogram)]);
        assert_eq!(t.replace(snapshot, g), 0);
        assert_eq!(t.get("old"), None);
        assert_eq!(t.get("during"), Some(FamilyType::Counter));
        assert_eq!(t.get("stored"), Some(FamilyType::Histogram));
    }

    #[test]
    fn names_learnt_from_a_shard_refuse_clashing_pushes_and_keep_known_types() {
        let t = seeded(3);
        t.check_and_record(&[fam("jobs", FamilyType::Gauge)])
            .unwrap();
        assert!(t.has_new_name(&[fam("x_count", FamilyType::Gauge)]));
        assert!(!t.has_new_name(&[fam("jobs", FamilyType::Gauge)]));
        let listing = HashMap::from([
            ("x".to_string(), FamilyType::Histogram),
            ("jobs".to_string(), FamilyType::Counter),
            ("y".to_string(), FamilyType::Gauge),
            ("z".to_string(), FamilyType::Gauge),
        ]);
        assert_eq!(t.learn(listing), 1);
        assert_eq!(t.get("jobs"), Some(FamilyType::Gauge));
        assert_eq!(t.len(), 3);
    }

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
        let mut map = HashMap::new();
        read_snapshot(json, &mut map).unwrap();
        assert_eq!(map.len(), 2);
        let mut streamed = HashMap::new();
        read_snapshot_from(&json[..], &mut streamed).unwrap();
        assert_eq!(streamed, map);
        assert_eq!(map["jobs"], FamilyType::Gauge);
        assert_eq!(map["lat"], FamilyType::Histogram);
        let mut empty = HashMap::new();
        read_snapshot(br#"{"status":"success","data":null}"#, &mut empty).unwrap();
        assert!(empty.is_empty());
        assert!(read_snapshot(b"{\"data\":[", &mut empty).is_err());
        assert!(read_snapshot_from(&b"{\"data\":["[..], &mut empty).is_err());
    }

    #[test]
    fn a_stored_clash_teaches_the_type_of_the_group_pushed_first_whatever_the_listing_order() {
        // `late` was created at :20 and `first` at :10, though `first` pushed last (:30).
        let group = |instance: &str, created: &str, last: &str, kind: &str| {
            format!(
                r#"{{"labels":{{"job":"j","instance":"{instance}"}},"jobs_total":{{"type":"{kind}","metrics":[]}},"push_failure_time_seconds":{{"time_stamp":"2026-12-07T06:00:{created}Z","type":"GAUGE","metrics":[{{"value":"0"}}]}},"push_time_seconds":{{"type":"GAUGE","metrics":[{{"labels":{{"job":"j","instance":"{instance}"}},"value":"{last}"}}]}}}}"#
            )
        };
        let json = format!(
            r#"{{"status":"success","data":[{},{}]}}"#,
            group("late", "20", "1796623220", "GAUGE"),
            group("first", "10", "1796623230", "COUNTER")
        );
        let mut map = HashMap::new();
        read_snapshot(json.as_bytes(), &mut map).unwrap();
        assert_eq!(map["jobs_total"], FamilyType::Counter);
    }
}
