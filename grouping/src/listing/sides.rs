//! Which side of a clash stored on one shard stays: the family pushed first.
//!
//! A *side* is one family name under one type, held so by some groups of a listing. Taken in
//! the order [`Side::cmp_first_pushed`] gives, a side is kept unless it clashes
//! ([`crate::find_clash`]) with a side kept before it ([`KeptSides`]). The collector's guard
//! deletes the groups of every side not kept (it orders by the platform's job and its memory of
//! first sightings before this order); a gateway replica's family table learns only the kept
//! sides, so meanwhile it takes the earlier tenant's pushes and refuses the later one's.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::ListedGroup;
use crate::{Clash, FamilyType, find_clash};

impl ListedGroup {
    /// When the group was first pushed, as far as the listing tells: its
    /// [`first_push`](ListedGroup::first_push), else its last push (an upper bound), else
    /// infinity (after every group whose time is known).
    pub fn first_push_bound(&self) -> f64 {
        self.first_push.or(self.push_time).unwrap_or(f64::INFINITY)
    }
}

/// What orders a side: its family, the earliest [`ListedGroup::first_push_bound`] of the
/// groups holding it so, and how many groups they are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Side<'a> {
    /// The family name.
    pub name: &'a str,
    /// Its type on this side.
    pub kind: FamilyType,
    /// The earliest first push of its groups.
    pub first_push: f64,
    /// How many groups hold it.
    pub holders: usize,
}

impl Side<'_> {
    /// The order sides are kept in: the earlier first push first; at a tie the side with more
    /// groups, then by name and type (a total order, so every reader of one listing keeps the
    /// same sides).
    pub fn cmp_first_pushed(&self, other: &Side<'_>) -> Ordering {
        self.first_push
            .total_cmp(&other.first_push)
            .then(other.holders.cmp(&self.holders))
            .then(self.name.cmp(other.name))
            .then(self.kind.cmp(&other.kind))
    }
}

/// The sides kept so far, each with a value of the caller's (an index, say): offered in order,
/// a side is kept unless it clashes with one kept before.
#[derive(Debug)]
pub struct KeptSides<'a, V> {
    kept: HashMap<&'a str, (FamilyType, V)>,
}

impl<V> Default for KeptSides<'_, V> {
    fn default() -> Self {
        Self {
            kept: HashMap::new(),
        }
    }
}

impl<'a, V> KeptSides<'a, V> {
    /// Keeps family `name` as `kind` with `value`, unless it clashes with a side kept before:
    /// then nothing is kept and the clash is returned (its kept side: [`KeptSides::rival`]).
    pub fn offer(&mut self, name: &'a str, kind: FamilyType, value: V) -> Option<Clash> {
        let clash = find_clash(name, kind, |n| self.kept.get(n).map(|(k, _)| *k));
        if clash.is_none() {
            self.kept.insert(name, (kind, value));
        }
        clash
    }

    /// The kept side that `clash`, returned for the offer of `name`, is with: its type and
    /// value.
    pub fn rival(&self, clash: &Clash, name: &str) -> Option<(FamilyType, &V)> {
        let rival = match clash {
            Clash::Type { name, .. } => name.as_str(),
            Clash::Suffix {
                name: series, stem, ..
            } if series == name => stem.as_str(),
            Clash::Suffix { name: series, .. } => series.as_str(),
        };
        self.kept.get(rival).map(|(k, v)| (*k, v))
    }

    /// Every kept side: name, type and value.
    pub fn into_kept(self) -> impl Iterator<Item = (&'a str, FamilyType, V)> {
        self.kept
            .into_iter()
            .map(|(name, (kind, v))| (name, kind, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FamilyType::*;

    /// Keeps `sides` in their first-push order; returns the kept (name, type), sorted.
    fn keep(mut sides: Vec<Side<'_>>) -> Vec<(String, FamilyType)> {
        sides.sort_by(Side::cmp_first_pushed);
        let mut kept = KeptSides::default();
        for s in &sides {
            kept.offer(s.name, s.kind, ());
        }
        let mut v: Vec<_> = kept.into_kept().map(|(n, k, ())| (n.into(), k)).collect();
        v.sort();
        v
    }

    fn side(name: &str, kind: FamilyType, first_push: f64, holders: usize) -> Side<'_> {
        Side {
            name,
            kind,
            first_push,
            holders,
        }
    }

    #[test]
    fn the_side_pushed_first_is_kept_however_many_groups_hold_the_later() {
        let kept = keep(vec![
            side("x_count", Gauge, 20.0, 3),
            side("x", Histogram, 10.0, 1),
            side("jobs", Gauge, 15.0, 5),
            side("jobs", Counter, 12.0, 1),
            side("free", Gauge, 30.0, 1),
        ]);
        assert_eq!(
            kept,
            [
                ("free".into(), Gauge),
                ("jobs".into(), Counter),
                ("x".into(), Histogram)
            ]
        );
    }

    #[test]
    fn a_tie_in_first_push_keeps_the_side_with_more_groups_then_the_first_name() {
        assert_eq!(
            keep(vec![side("j", Counter, 5.0, 1), side("j", Gauge, 5.0, 2)]),
            [("j".into(), Gauge)]
        );
        assert_eq!(
            keep(vec![
                side("y_sum", Gauge, 5.0, 1),
                side("y", Summary, 5.0, 1)
            ]),
            [("y".into(), Summary)]
        );
    }

    #[test]
    fn the_rival_of_a_refused_side_is_the_kept_family_it_clashes_with() {
        let mut kept = KeptSides::default();
        assert!(kept.offer("x", Histogram, 0).is_none());
        assert!(kept.offer("q_sum", Gauge, 1).is_none());
        let clash = kept.offer("x_count", Gauge, 2).unwrap();
        assert_eq!(kept.rival(&clash, "x_count"), Some((Histogram, &0)));
        let clash = kept.offer("q", Summary, 3).unwrap();
        assert_eq!(kept.rival(&clash, "q"), Some((Gauge, &1)));
        let clash = kept.offer("x", Gauge, 4).unwrap();
        assert_eq!(kept.rival(&clash, "x"), Some((Histogram, &0)));
        assert_eq!(kept.into_kept().count(), 2);
    }

    #[test]
    fn a_groups_first_push_bound_falls_back_to_its_last_push_then_to_never() {
        let mut g = ListedGroup {
            labels: Vec::new(),
            push_time: Some(30.0),
            first_push: Some(10.0),
            families: Vec::new(),
        };
        assert_eq!(g.first_push_bound(), 10.0);
        g.first_push = None;
        assert_eq!(g.first_push_bound(), 30.0);
        g.push_time = None;
        assert_eq!(g.first_push_bound(), f64::INFINITY);
    }
}
