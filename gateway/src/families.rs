//! The cluster-wide family → type table: what every stored group already says a family name
//! is, so a push that would give a name a second type is refused (409) before it reaches a
//! Pushgateway whose `/metrics` would then answer 500.
//!
//! It is seeded from every Pushgateway's `/api/v1/metrics` at start, updated by every accepted
//! push (check and record are one step under one lock, so two pushes racing through one
//! replica cannot both win), and rebuilt from the Pushgateways every
//! `--family-resync-interval`: that is how two replicas converge and how families of pruned
//! groups are forgotten. Families recorded during a rebuild are kept. Two replicas can still
//! accept a clashing pair inside one interval; the collector's guard repairs that, and until
//! then a listing holding the pair teaches only the side the guard keeps (`stored`), so the
//! earlier tenant's pushes are not refused.
//!
//! Besides equal names, the table refuses the suffix collisions the Pushgateway's registry
//! refuses at scrape time: a histogram `x` beside a family named `x_bucket`, `x_sum` or
//! `x_count` (a summary: `x_sum`, `x_count`). The rule is `whisk_grouping`'s clash rule, the one
//! the collector's guard repairs by.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use whisk_grouping::{Clash, find_clash};

use crate::first_sight::ShardReads;
use crate::validate::{Family, FamilyType};

mod stored;

pub(crate) use stored::{StoredFamilies, StoredSides};

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

    /// Learns a shard's listing: forgets the held names that lose a clash stored there (the
    /// guard deletes their groups) and adds the kept names the table does not hold yet (as a
    /// snapshot's, so the next rebuild forgets them if they are gone). Returns how many did not
    /// fit.
    pub(crate) fn learn(&self, listed: StoredFamilies) -> usize {
        let mut inner = self.lock();
        forget_later(&mut inner.map, &listed);
        let mut dropped = 0;
        for (name, kind) in listed.kept {
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
        self.replace_stored(StoredFamilies::from(snapshot), generation)
    }

    /// [`FamilyTable::replace`] with what the listings' stored clashes say: a name pushes
    /// recorded since is forgotten too when it is a side that lost a stored clash.
    pub(crate) fn replace_stored(&self, snapshot: StoredFamilies, generation: u64) -> usize {
        let mut inner = self.lock();
        let mut map: HashMap<String, Entry> =
            HashMap::with_capacity(snapshot.kept.len().min(self.max));
        let mut dropped = 0;
        for (name, entry) in &inner.map {
            if entry.generation >= generation {
                map.insert(name.clone(), *entry);
            }
        }
        forget_later(&mut map, &snapshot);
        for (name, kind) in snapshot.kept {
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

/// Removes from `map` every name held with the type of a side that lost a stored clash.
fn forget_later(map: &mut HashMap<String, Entry>, listed: &StoredFamilies) {
    for (name, kind) in &listed.later {
        if map.get(name).is_some_and(|e| e.kind == *kind) {
            map.remove(name);
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
        assert_eq!(t.learn(listing.into()), 1);
        assert_eq!(t.get("jobs"), Some(FamilyType::Gauge));
        assert_eq!(t.len(), 3);
    }

    /// A listing holding the suffix clash `x` (histogram, pushed first) and `x_count` (gauge).
    fn stored_suffix_clash() -> StoredFamilies {
        StoredFamilies {
            kept: HashMap::from([("x".to_string(), FamilyType::Histogram)]),
            later: [("x_count".to_string(), FamilyType::Gauge)].into(),
        }
    }

    #[test]
    fn a_learnt_stored_clash_takes_the_earlier_family_and_refuses_only_the_later() {
        // This replica had accepted the later gauge itself, so it holds it.
        let t = seeded(100);
        t.check_and_record(&[fam("x_count", FamilyType::Gauge)])
            .unwrap();
        assert_eq!(t.learn(stored_suffix_clash()), 0);
        assert_eq!(t.get("x_count"), None);
        t.check_and_record(&[fam("x", FamilyType::Histogram)])
            .unwrap();
        let err = t
            .check_and_record(&[fam("x_count", FamilyType::Gauge)])
            .unwrap_err();
        assert_eq!(err.reason(), "suffix_conflict");
        // A held name of another type than the losing side's is not that side: it stays.
        let t = seeded(100);
        t.check_and_record(&[fam("x_count", FamilyType::Counter)])
            .unwrap();
        t.learn(stored_suffix_clash());
        assert_eq!(t.get("x_count"), Some(FamilyType::Counter));
    }

    #[test]
    fn a_rebuild_forgets_a_losing_side_pushed_during_it() {
        let t = seeded(100);
        let g = t.begin_resync();
        t.check_and_record(&[
            fam("x_count", FamilyType::Gauge),
            fam("k", FamilyType::Gauge),
        ])
        .unwrap();
        assert_eq!(t.replace_stored(stored_suffix_clash(), g), 0);
        assert_eq!(t.get("x_count"), None);
        assert_eq!(t.get("k"), Some(FamilyType::Gauge));
        assert_eq!(t.get("x"), Some(FamilyType::Histogram));
    }
}
