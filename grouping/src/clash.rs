//! The clash rule: which two families cannot be stored side by side in one Pushgateway.
//!
//! The Pushgateway's `/metrics` merges every group's families by name and then checks them as
//! Prometheus' Go client does (`checkSuffixCollisions`); a clash fails the whole scrape (500):
//! - one name under two types;
//! - a histogram `x` beside any family named `x_bucket`, `x_sum` or `x_count`, and a summary
//!   `x` beside `x_sum` or `x_count` (a summary has no `_bucket` series, so `x_bucket` beside a
//!   summary `x` is fine).
//!
//! The gateway refuses a push that would clash with its family table, the SDK a registration
//! that would clash with its registry, and the collector's guard deletes the later of two
//! clashing stored families: all three ask [`find_clash`] or [`clashes`].

use crate::family::{FamilyType, SERIES_SUFFIXES};

/// How a family clashes with one already known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Clash {
    /// The name is known under another type.
    #[error("family `{name}` is a {known} elsewhere; here it is a {new}")]
    Type {
        /// The family.
        name: String,
        /// The type it is known under.
        known: FamilyType,
        /// The type it has here.
        new: FamilyType,
    },
    /// A family's name is one of the series names of histogram or summary `stem`.
    #[error("family `{name}` collides with the series of {kind} `{stem}`")]
    Suffix {
        /// The family named like a series (`x_count`).
        name: String,
        /// The histogram or summary (`x`).
        stem: String,
        /// Its type.
        kind: FamilyType,
    },
}

/// Whether family `name` of type `kind` clashes with a family `known` returns a type for:
/// the same name under another type, a known family named like one of its series (it is a
/// histogram or summary), or a known histogram or summary whose series it is named like.
///
/// ```
/// use whisk_grouping::{Clash, FamilyType, find_clash};
///
/// let known = |n: &str| (n == "x").then_some(FamilyType::Histogram);
/// assert!(matches!(
///     find_clash("x_count", FamilyType::Gauge, known),
///     Some(Clash::Suffix { .. })
/// ));
/// assert_eq!(find_clash("x", FamilyType::Histogram, known), None);
/// assert!(find_clash("x", FamilyType::Gauge, known).is_some());
/// ```
pub fn find_clash(
    name: &str,
    kind: FamilyType,
    known: impl Fn(&str) -> Option<FamilyType>,
) -> Option<Clash> {
    if let Some(known_kind) = known(name).filter(|k| *k != kind) {
        return Some(Clash::Type {
            name: name.to_string(),
            known: known_kind,
            new: kind,
        });
    }
    let mut series = String::with_capacity(name.len() + 7);
    for suffix in kind.suffixes() {
        series.clear();
        series.push_str(name);
        series.push_str(suffix);
        if known(&series).is_some() {
            return Some(Clash::Suffix {
                name: series,
                stem: name.to_string(),
                kind,
            });
        }
    }
    for suffix in SERIES_SUFFIXES {
        let Some(stem) = name.strip_suffix(suffix) else {
            continue;
        };
        if let Some(stem_kind) = known(stem).filter(|k| k.suffixes().contains(&suffix)) {
            return Some(Clash::Suffix {
                name: name.to_string(),
                stem: stem.to_string(),
                kind: stem_kind,
            });
        }
    }
    None
}

/// Whether two families clash ([`find_clash`] with one known family); symmetric.
///
/// ```
/// use whisk_grouping::{FamilyType, clashes};
///
/// assert!(clashes(("jobs_total", FamilyType::Counter), ("jobs_total", FamilyType::Gauge)));
/// assert!(clashes(("x_sum", FamilyType::Gauge), ("x", FamilyType::Summary)));
/// assert!(!clashes(("x_bucket", FamilyType::Gauge), ("x", FamilyType::Summary)));
/// ```
pub fn clashes(a: (&str, FamilyType), b: (&str, FamilyType)) -> bool {
    find_clash(a.0, a.1, |n| (n == b.0).then_some(b.1)).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use FamilyType::*;

    const ALL: [FamilyType; 5] = [Counter, Gauge, Histogram, Summary, Untyped];

    #[test]
    fn exact_names_clash_only_under_two_types() {
        for a in ALL {
            for b in ALL {
                assert_eq!(clashes(("x", a), ("x", b)), a != b, "{a} {b}");
            }
        }
    }

    #[test]
    fn series_names_clash_as_the_pushgateways_check_reads_them() {
        for other in ALL {
            for suffix in ["_bucket", "_sum", "_count"] {
                let name = format!("x{suffix}");
                assert!(clashes((&name, other), ("x", Histogram)), "{name} {other}");
                let summary = suffix != "_bucket";
                assert_eq!(clashes((&name, other), ("x", Summary)), summary, "{name}");
                for plain in [Counter, Gauge, Untyped] {
                    assert!(!clashes((&name, other), ("x", plain)), "{name} {plain}");
                }
            }
        }
        assert!(!clashes(("x_total", Gauge), ("x", Histogram)));
        assert!(!clashes(("xx_count", Gauge), ("x", Histogram)));
    }

    #[test]
    fn the_rule_is_symmetric() {
        let names = ["x", "x_sum", "x_count", "x_bucket", "x_count_sum", "y"];
        for a in names {
            for b in names {
                for ka in ALL {
                    for kb in ALL {
                        assert_eq!(
                            clashes((a, ka), (b, kb)),
                            clashes((b, kb), (a, ka)),
                            "{a} {ka} / {b} {kb}"
                        );
                    }
                }
            }
        }
    }
}
