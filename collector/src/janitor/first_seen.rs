//! The guard's memory of when each family first appeared on a shard.
//!
//! The Pushgateway keeps no first-push time: `push_time_seconds` is a group's *last* push, so an
//! earlier tenant that keeps pushing after a clash looks newer than the tenant that clashed
//! with it. So every full read of a shard's listing (each listing round, each direct check)
//! passes every group through [`FirstSeen::observe`], which remembers the read in which each
//! *side* (a family name under one type) was first seen on that shard; the guard orders the
//! sides of a clash by that read (see [`super::guard`]). A side absent from a whole read is
//! forgotten, so a family that left the shard and came back is new again.
//!
//! What it cannot know: the order of two sides first seen in the same read (both arrived
//! between two rounds), every side after a restart of the collector (the memory starts
//! empty), and, past its bound, the sides it refused. The guard orders those by the first push
//! of their groups, which the Pushgateway's listing gives
//! ([`ListedGroup::first_push`](super::listing::ListedGroup::first_push)); this memory still
//! decides first, as it also sees a family added to a group that already existed.
//!
//! Bounded because family names are the tenants': at most [`MAX_SIDES`] names and
//! [`MAX_NAME_BYTES`] of them per shard. When full, a side not yet remembered stays unknown
//! (the guard orders it after every remembered side, then by first push) and the read is
//! reported in [`super::JanitorRound::first_seen_full`]; what is remembered is kept, so a
//! tenant filling the memory cannot make an earlier family look new.

use std::collections::HashMap;

use whisk_grouping::FamilyType;

use super::listing::ListedGroup;

/// Most family names remembered per shard. An entry costs its map slot (a 16-byte name
/// pointer, 40 bytes of reads, a control byte: 65–130 bytes as the table's load varies) and the
/// name's heap block (its length rounded up to 16, at least 32 bytes): with
/// [`MAX_NAME_BYTES`], at most ~4.3 MB per shard.
pub(crate) const MAX_SIDES: usize = 20_000;

/// Most bytes of family names remembered per shard.
pub(crate) const MAX_NAME_BYTES: usize = 1 << 20;

/// Families every group holds, written by the Pushgateway itself: never a side.
pub(crate) const PUSHGATEWAY_FAMILIES: [&str; 2] =
    ["push_time_seconds", "push_failure_time_seconds"];

/// The five types, in [`FamilyType`]'s order, as slots of [`Seen`].
const TYPES: [FamilyType; 5] = [
    FamilyType::Counter,
    FamilyType::Gauge,
    FamilyType::Histogram,
    FamilyType::Summary,
    FamilyType::Untyped,
];

/// For one family name, per type: the read it was first seen in and the last read it was
/// seen in (`0`: not seen).
#[derive(Debug, Clone, Copy, Default)]
struct Seen([(u32, u32); TYPES.len()]);

fn slot(kind: FamilyType) -> usize {
    TYPES.iter().position(|t| *t == kind).unwrap_or(0)
}

/// When each side of one shard was first seen (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct FirstSeen {
    /// Reads begun so far; the current one's number.
    read: u32,
    names: HashMap<Box<str>, Seen>,
    name_bytes: usize,
    /// The current read met a side it had no room for.
    full: bool,
}

impl FirstSeen {
    /// Starts a full read of the shard's listing.
    pub(crate) fn begin_read(&mut self) {
        self.read = self.read.saturating_add(1);
        self.full = false;
    }

    /// Notes every family of one group of the current read.
    pub(crate) fn observe(&mut self, group: &ListedGroup) {
        for (name, kind) in &group.families {
            if PUSHGATEWAY_FAMILIES.contains(&&**name) {
                continue;
            }
            let (first, last) = match self.names.get_mut(&**name) {
                Some(seen) => &mut seen.0[slot(*kind)],
                None => {
                    if self.names.len() >= MAX_SIDES
                        || self.name_bytes + name.len() > MAX_NAME_BYTES
                    {
                        self.full = true;
                        continue;
                    }
                    self.name_bytes += name.len();
                    &mut self.names.entry(name.clone()).or_default().0[slot(*kind)]
                }
            };
            if *first == 0 {
                *first = self.read;
            }
            *last = self.read;
        }
    }

    /// Ends a read that saw the whole listing: forgets every side it did not see. Returns
    /// whether a side found no room.
    pub(crate) fn end_read(&mut self) -> bool {
        let read = self.read;
        let mut freed = 0;
        self.names.retain(|name, seen| {
            for s in &mut seen.0 {
                if s.1 != read {
                    *s = (0, 0);
                }
            }
            let keep = seen.0.iter().any(|s| s.0 != 0);
            if !keep {
                freed += name.len();
            }
            keep
        });
        self.name_bytes -= freed;
        self.full
    }

    /// The read in which `name` under `kind` was first seen, if remembered.
    pub(crate) fn first_read(&self, name: &str, kind: FamilyType) -> Option<u32> {
        let first = self.names.get(name)?.0[slot(kind)].0;
        (first != 0).then_some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(families: &[(&str, FamilyType)]) -> ListedGroup {
        ListedGroup {
            labels: vec![("job".into(), "sdk".into())],
            push_time: Some(1.0),
            first_push: None,
            families: families.iter().map(|(n, k)| ((*n).into(), *k)).collect(),
        }
    }

    fn read(memory: &mut FirstSeen, groups: &[ListedGroup]) -> bool {
        memory.begin_read();
        groups.iter().for_each(|g| memory.observe(g));
        memory.end_read()
    }

    #[test]
    fn a_side_keeps_the_read_it_first_appeared_in_until_a_read_misses_it() {
        let mut m = FirstSeen::default();
        let counter = group(&[("jobs", FamilyType::Counter)]);
        let gauge = group(&[
            ("jobs", FamilyType::Gauge),
            ("push_time_seconds", FamilyType::Gauge),
        ]);
        assert!(!read(&mut m, std::slice::from_ref(&counter)));
        assert!(!read(&mut m, &[counter.clone(), gauge.clone()]));
        assert_eq!(m.first_read("jobs", FamilyType::Counter), Some(1));
        assert_eq!(m.first_read("jobs", FamilyType::Gauge), Some(2));
        assert_eq!(m.first_read("push_time_seconds", FamilyType::Gauge), None);
        // The counter leaves the shard, then comes back: new again.
        read(&mut m, std::slice::from_ref(&gauge));
        assert_eq!(m.first_read("jobs", FamilyType::Counter), None);
        read(&mut m, &[gauge, counter]);
        assert_eq!(m.first_read("jobs", FamilyType::Counter), Some(4));
        assert_eq!(m.first_read("jobs", FamilyType::Gauge), Some(2));
        read(&mut m, &[]);
        assert!(m.names.is_empty());
        assert_eq!(m.name_bytes, 0);
    }

    #[test]
    fn past_its_bound_it_keeps_what_it_remembers_and_reports_the_read() {
        let mut m = FirstSeen::default();
        let early = group(&[("early", FamilyType::Counter)]);
        let names: Vec<String> = (0..MAX_SIDES).map(|i| format!("n{i}")).collect();
        let many = ListedGroup {
            families: names
                .iter()
                .map(|n| (n.as_str().into(), FamilyType::Gauge))
                .collect(),
            ..early.clone()
        };
        let groups = [early, many];
        assert!(read(&mut m, &groups), "one name found no room");
        assert_eq!(m.names.len(), MAX_SIDES);
        assert_eq!(m.first_read("early", FamilyType::Counter), Some(1));
        assert!(read(&mut m, &groups));
        assert_eq!(m.first_read("early", FamilyType::Counter), Some(1));
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        let mut m = FirstSeen::default();
        assert!(read(&mut m, &[group(&[(&long, FamilyType::Gauge)])]));
        assert_eq!(m.name_bytes, 0);
    }
}
