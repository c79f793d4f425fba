//! The guard: finds the groups that make a Pushgateway's `/metrics` answer 500.
//!
//! With `--push.disable-consistency-check` the Pushgateway accepts families that clash from
//! two groups (action A pushes `jobs` as a counter, action B as a gauge; or A a histogram `x`,
//! B a gauge `x_count`) and from then on every scrape of it fails: every series it holds
//! disappears from Prometheus. The gateway refuses such a push when its family table knows the
//! first family; two gateway replicas can still both accept one inside their resync window.
//! When a Pushgateway's `/metrics` answers 500, the janitor lists its groups with their
//! families' types and deletes the offending groups, by the clash rule the gateway refuses by
//! ([`whisk_grouping::find_clash`]: one name under two types, and the `_bucket`, `_sum` and
//! `_count` series of histograms and summaries):
//!
//! - each family name and type held by some groups is a *side*; the platform job's sides come
//!   first (the collector's own families are the reference), then the others by the janitor's
//!   read of the shard in which they first appeared ([`super::first_seen`]), then by the first
//!   push of their earliest group (sides first seen in the same read, or not remembered: after a
//!   restart, past the memory's bound). `push_time_seconds` is a group's *last* push; its first
//!   is the stamp the Pushgateway put on the group's `push_failure_time_seconds` when it created
//!   the group and never changes while no push fails ([`ListedGroup::first_push`]); a group
//!   without it counts with its last push, an upper bound;
//! - in that order a side is kept unless it clashes with a side already kept
//!   ([`whisk_grouping::listing::KeptSides`], as the gateway's family table learns a listing):
//!   then every group holding it (but the platform's) is deleted, newest first, however many
//!   there are. The
//!   later family loses, so a tenant cannot get an earlier tenant's group deleted by pushing
//!   more groups, nor because the earlier tenant kept pushing; a tie keeps the side with more
//!   groups;
//! - each such clash says what ordered it ([`ClashOrder`]): [`ClashOrder::Unordered`] when
//!   neither the memory nor a first push known for every group of the later side told the two
//!   apart (a push to one of them failed, or the Pushgateway shows no stamp), so only last
//!   pushes did.
//!
//! No other group is touched. [`ordered_offenders`] picks the offenders from a listing;
//! [`Janitor::guard`] deletes them and waits for `/metrics` to answer again. The listing round
//! runs it over the listing it already read; the Prometheus round calls
//! [`Janitor::check_directly`] for each shard whose scrape is not up.

use std::collections::HashMap;
use std::time::Duration;

use whisk_grouping::listing::KeptSides;
use whisk_grouping::{FamilyType, GroupingKey};

use super::first_seen::{FirstSeen, PUSHGATEWAY_FAMILIES};
use super::listing::{LISTING_CAP, ListedGroup, ListingError, read_listing};
use super::{ClashOrder, GuardDeleted, Janitor, JanitorError, JanitorRound, PrunedGroup, lock};
use crate::sink::pushgateway::PushgatewayClient;

/// The `reason` label of `whisk_collector_guard_deleted_groups_total` for a type clash.
pub(crate) const TYPE_CLASH: &str = "type_clash";

/// How long the guard waits for a Pushgateway's `/metrics` to answer 200 after its deletes
/// (the Pushgateway applies DELETEs asynchronously).
const GUARD_SETTLE: Duration = Duration::from_secs(10);

/// A group to delete and why.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Offender {
    /// The group's grouping key (`job` included, sorted).
    pub labels: Vec<(String, String)>,
    /// Its last push (Unix seconds), if known.
    pub push_time: Option<f64>,
    /// The clashing family.
    pub family: String,
    /// The type this group has it under.
    pub kind: FamilyType,
    /// The family it clashes with (kept): the same name, or a histogram's or summary's stem or
    /// series name.
    pub kept_family: String,
    /// The type of the kept family.
    pub kept_kind: FamilyType,
    /// How many groups hold the kept family.
    pub kept_groups: usize,
    /// What told the two families' order.
    pub ordered_by: ClashOrder,
}

impl Offender {
    /// One line for the log.
    pub(crate) fn why(&self) -> String {
        if self.family == self.kept_family {
            format!(
                "family `{}` is a {} in this group but a {} in {} other group(s)",
                self.family, self.kind, self.kept_kind, self.kept_groups
            )
        } else {
            format!(
                "{} `{}` in this group collides with {} `{}` of {} other group(s), pushed first",
                self.kind, self.family, self.kept_kind, self.kept_family, self.kept_groups
            )
        }
    }
}

/// One family name under one type, and the groups holding it so.
struct Side<'a> {
    name: &'a str,
    kind: FamilyType,
    holders: Vec<usize>,
    protected: bool,
    /// The janitor's read of the shard in which it first appeared (`u32::MAX` if not
    /// remembered: after every remembered side).
    first_read: u32,
    /// The earliest first push among its holders, a holder's last push standing in where its
    /// first is unknown (infinity if neither is known for any).
    first_push: f64,
    /// The first push of every holder is known, so `first_push` is exact.
    first_push_known: bool,
}

impl Side<'_> {
    /// Its place in the order every reader of a listing keeps sides by (the gateway's family
    /// table too), after the platform's and the memory's.
    fn order(&self) -> whisk_grouping::listing::Side<'_> {
        whisk_grouping::listing::Side {
            name: self.name,
            kind: self.kind,
            first_push: self.first_push,
            holders: self.holders.len(),
        }
    }

    /// What tells that `self` (kept) came before `later`.
    fn order_over(&self, later: &Side<'_>) -> ClashOrder {
        if self.protected && !later.protected {
            ClashOrder::Platform
        } else if self.first_read < later.first_read {
            ClashOrder::FirstSeen
        } else if later.first_push_known && self.first_push < later.first_push {
            // Every group of `later` was first pushed after `self`'s earliest group was (whose
            // own first push is at most `self.first_push`).
            ClashOrder::FirstPush
        } else {
            ClashOrder::Unordered
        }
    }
}

/// The groups to delete so that no two stored families clash, newest first: the later-pushed
/// side of every clash (see the module doc), judged without any memory of first sightings (as
/// right after a restart): by first pushes where the listing gives them, else by last pushes. Groups of `protected_job` are never offenders, and their
/// families win.
#[cfg(test)]
fn type_clash_offenders(groups: &[ListedGroup], protected_job: &str) -> Vec<Offender> {
    ordered_offenders(groups, protected_job, &FirstSeen::default())
}

/// The later-appeared side of every clash, by the shard's memory of when each side first
/// appeared; first pushes, then last pushes, where it has none (see [`type_clash_offenders`]'s
/// tests).
fn ordered_offenders(
    groups: &[ListedGroup],
    protected_job: &str,
    memory: &FirstSeen,
) -> Vec<Offender> {
    let sides = sides(groups, protected_job, memory);
    // The sides kept so far (each with its index); never two that clash.
    let mut kept = KeptSides::default();
    let mut offenders: Vec<Offender> = Vec::new();
    for (i, side) in sides.iter().enumerate() {
        let Some(clash) = kept.offer(side.name, side.kind, i) else {
            continue;
        };
        let Some((_, &winner)) = kept.rival(&clash, side.name) else {
            continue;
        };
        let winner = &sides[winner];
        for &g in &side.holders {
            let group = &groups[g];
            if is_protected(group, protected_job)
                || offenders.iter().any(|o| o.labels == group.labels)
            {
                continue;
            }
            offenders.push(Offender {
                labels: group.labels.clone(),
                push_time: group.push_time,
                family: side.name.to_string(),
                kind: side.kind,
                kept_family: winner.name.to_string(),
                kept_kind: winner.kind,
                kept_groups: winner.holders.len(),
                ordered_by: winner.order_over(side),
            });
        }
    }
    offenders.sort_by(|a, b| {
        b.push_time
            .unwrap_or(f64::INFINITY)
            .total_cmp(&a.push_time.unwrap_or(f64::INFINITY))
    });
    offenders
}

/// Every (family, type) of the listing with its holders, in the order sides are kept: the
/// platform's first, then by the read first seen in, then in the order the gateway's family
/// table keeps them too ([`whisk_grouping::listing::Side::cmp_first_pushed`]: by first push,
/// or last where the first is unknown, then by more holders, then by name).
fn sides<'a>(groups: &'a [ListedGroup], protected_job: &str, memory: &FirstSeen) -> Vec<Side<'a>> {
    let mut by_key: HashMap<(&str, FamilyType), Vec<usize>> = HashMap::new();
    for (i, g) in groups.iter().enumerate() {
        for (family, kind) in &g.families {
            if !PUSHGATEWAY_FAMILIES.contains(&&**family) {
                by_key.entry((&**family, *kind)).or_default().push(i);
            }
        }
    }
    let mut sides: Vec<Side<'a>> = by_key
        .into_iter()
        .map(|((name, kind), holders)| Side {
            name,
            kind,
            protected: holders
                .iter()
                .any(|&i| is_protected(&groups[i], protected_job)),
            first_read: memory.first_read(name, kind).unwrap_or(u32::MAX),
            first_push: holders
                .iter()
                .map(|&i| groups[i].first_push_bound())
                .fold(f64::INFINITY, f64::min),
            first_push_known: holders.iter().all(|&i| groups[i].first_push.is_some()),
            holders,
        })
        .collect();
    sides.sort_by(|a, b| {
        b.protected
            .cmp(&a.protected)
            .then(a.first_read.cmp(&b.first_read))
            .then_with(|| a.order().cmp_first_pushed(&b.order()))
    });
    sides
}

fn is_protected(group: &ListedGroup, protected_job: &str) -> bool {
    group.label("job") == Some(protected_job)
}

impl Janitor {
    /// The listing round's guard for one shard: its `/metrics` status, and on a 5xx the listing
    /// with every family's type and the guard's deletes.
    pub(super) async fn check_directly(
        &self,
        shard: usize,
        client: &PushgatewayClient,
        round: &mut JanitorRound,
    ) -> Result<(), JanitorError> {
        if !client.metrics_status().await?.is_server_error() {
            return Ok(());
        }
        let url = format!("{}/api/v1/metrics", client.base());
        let resp = client.list_groups(LISTING_CAP).await?;
        let memory = std::sync::Arc::clone(&self.first_seen);
        lock(&memory[shard]).begin_read();
        let (groups, _) = read_listing(
            resp,
            self.limits,
            true,
            Vec::new(),
            move |groups: &mut Vec<ListedGroup>, g| {
                lock(&memory[shard]).observe(&g);
                groups.push(g);
            },
        )
        .await
        .map_err(|e: ListingError| JanitorError::Body {
            url,
            message: e.to_string(),
        })?;
        round.first_seen_full += u64::from(lock(&self.first_seen[shard]).end_read());
        self.guard(shard, client, &groups, round).await;
        Ok(())
    }

    /// Deletes the groups whose family types clash, newest first, then waits (bounded) for
    /// `/metrics` to answer again.
    pub(super) async fn guard(
        &self,
        shard: usize,
        client: &PushgatewayClient,
        groups: &[ListedGroup],
        round: &mut JanitorRound,
    ) {
        let protected = self.platform.as_ref().map_or("", |(job, _)| job.as_str());
        let offenders = ordered_offenders(groups, protected, &lock(&self.first_seen[shard]));
        let mut later: Vec<(&str, FamilyType)> = Vec::new();
        for o in &offenders {
            if !later.contains(&(o.family.as_str(), o.kind)) {
                later.push((o.family.as_str(), o.kind));
                round.guard_clashes.push(o.ordered_by);
            }
        }
        if offenders.is_empty() {
            tracing::error!(
                pushgateway = client.base(),
                "the Pushgateway's /metrics answers 500 but no family has two types in its groups; \
                 nothing deleted"
            );
            return;
        }
        for o in &offenders {
            let job = o
                .labels
                .iter()
                .find(|(k, _)| k == "job")
                .map_or("", |(_, v)| v.as_str());
            let key = o
                .labels
                .iter()
                .filter(|(k, _)| k != "job")
                .fold(GroupingKey::new(job), |k, (n, v)| {
                    k.with(n.as_str(), v.as_str())
                });
            let deleted = GuardDeleted {
                path: key.path(),
                why: o.why(),
                ordered_by: o.ordered_by,
            };
            if self.dry_run {
                round.guard_deleted.push(deleted);
                continue;
            }
            match client.delete_group(&key).await {
                Ok(()) => round.guard_deleted.push(deleted),
                Err(e) => round.failed.push((
                    PrunedGroup {
                        path: deleted.path,
                        age_secs: 0.0,
                    },
                    e,
                )),
            }
        }
        if self.dry_run {
            return;
        }
        let start = std::time::Instant::now();
        loop {
            let ok = client.metrics_status().await.is_ok_and(|s| s.is_success());
            if ok {
                tracing::info!(
                    pushgateway = client.base(),
                    "the Pushgateway's /metrics answers 200 again"
                );
                return;
            }
            if start.elapsed() >= GUARD_SETTLE {
                tracing::error!(
                    pushgateway = client.base(),
                    "the Pushgateway's /metrics still fails after the guard's deletes"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(job: &str, instance: &str, push: f64, families: &[(&str, &str)]) -> ListedGroup {
        ListedGroup {
            labels: vec![
                ("instance".to_string(), instance.to_string()),
                ("job".to_string(), job.to_string()),
            ],
            push_time: Some(push),
            first_push: None,
            families: families
                .iter()
                .map(|(f, k)| ((*f).into(), FamilyType::parse(k).unwrap()))
                .collect(),
        }
    }

    fn instances(o: &[Offender]) -> Vec<&str> {
        o.iter().map(|o| o.labels[0].1.as_str()).collect::<Vec<_>>()
    }

    #[test]
    fn deletes_the_minority_type_newest_first_and_nothing_else() {
        let groups = vec![
            group("sdk", "a", 10.0, &[("jobs", "COUNTER"), ("x", "GAUGE")]),
            group("sdk", "b", 20.0, &[("jobs", "COUNTER")]),
            group("sdk", "c", 30.0, &[("jobs", "GAUGE"), ("x", "GAUGE")]),
            group("sdk", "d", 40.0, &[("jobs", "GAUGE")]),
            group("sdk", "e", 50.0, &[("jobs", "COUNTER"), ("y", "HISTOGRAM")]),
            group("sdk", "f", 60.0, &[("other", "GAUGE")]),
        ];
        let o = type_clash_offenders(&groups, "platform");
        assert_eq!(instances(&o), ["d", "c"]);
        assert_eq!(o[0].family, "jobs");
        assert_eq!(o[0].kind, FamilyType::Gauge);
        assert_eq!(o[0].kept_kind, FamilyType::Counter);
        assert_eq!(
            o[0].why(),
            "family `jobs` is a gauge in this group but a counter in 3 other group(s)"
        );
    }

    #[test]
    fn a_tie_keeps_the_type_that_was_there_first() {
        let groups = vec![
            group("sdk", "late", 99.0, &[("jobs", "GAUGE")]),
            group("sdk", "early", 1.0, &[("jobs", "COUNTER")]),
        ];
        assert_eq!(
            instances(&type_clash_offenders(&groups, "platform")),
            ["late"]
        );
    }

    #[test]
    fn the_platform_types_win_and_platform_groups_are_never_deleted() {
        let groups = vec![
            group(
                "platform",
                "collector-0",
                5.0,
                &[("openwhisk_action_status", "COUNTER")],
            ),
            group("sdk", "x", 6.0, &[("openwhisk_action_status", "GAUGE")]),
            group("sdk", "y", 7.0, &[("openwhisk_action_status", "GAUGE")]),
        ];
        let o = type_clash_offenders(&groups, "platform");
        assert_eq!(instances(&o), ["y", "x"]);
    }

    #[test]
    fn the_later_pushed_type_loses_however_many_groups_hold_it() {
        let groups = vec![
            group("sdk", "first", 10.0, &[("jobs_total", "COUNTER")]),
            group("sdk", "late-1", 20.0, &[("jobs_total", "GAUGE")]),
            group("sdk", "late-2", 21.0, &[("jobs_total", "GAUGE")]),
            group("sdk", "late-3", 22.0, &[("jobs_total", "GAUGE")]),
        ];
        let o = type_clash_offenders(&groups, "platform");
        assert_eq!(instances(&o), ["late-3", "late-2", "late-1"]);
        assert_eq!(o[0].kept_groups, 1);
    }

    #[test]
    fn a_family_named_like_a_histograms_series_clashes_and_the_later_side_loses() {
        let groups = vec![
            group("sdk", "hist", 10.0, &[("x", "HISTOGRAM")]),
            group("sdk", "gauge-1", 20.0, &[("x_count", "GAUGE")]),
            group(
                "sdk",
                "gauge-2",
                30.0,
                &[("x_count", "GAUGE"), ("y", "GAUGE")],
            ),
            group("sdk", "bystander", 40.0, &[("x_total", "GAUGE")]),
        ];
        let o = type_clash_offenders(&groups, "platform");
        assert_eq!(instances(&o), ["gauge-2", "gauge-1"]);
        assert_eq!(
            o[0].why(),
            "gauge `x_count` in this group collides with histogram `x` of 1 other group(s), \
             pushed first"
        );
        // The other way round: the histogram came later, it is the one deleted, even against
        // more groups of it.
        let groups = vec![
            group("sdk", "summary-sum", 5.0, &[("q_sum", "GAUGE")]),
            group("sdk", "summary-1", 50.0, &[("q", "SUMMARY")]),
            group("sdk", "summary-2", 51.0, &[("q", "SUMMARY")]),
            group("sdk", "bucket-ok", 52.0, &[("q_bucket", "GAUGE")]),
        ];
        let o = type_clash_offenders(&groups, "platform");
        assert_eq!(instances(&o), ["summary-2", "summary-1"]);
    }

    #[test]
    fn the_family_seen_first_wins_though_its_tenant_pushed_last_and_holds_fewer_groups() {
        let first = group("sdk", "first", 10.0, &[("jobs_total", "COUNTER")]);
        let mut memory = FirstSeen::default();
        memory.begin_read();
        memory.observe(&first);
        memory.end_read();
        // Three gauge groups arrive, then the earlier tenant pushes again: its push is the
        // newest, and by push times alone its group would go.
        let groups = vec![
            group("sdk", "late-1", 20.0, &[("jobs_total", "GAUGE")]),
            group("sdk", "late-2", 21.0, &[("jobs_total", "GAUGE")]),
            group("sdk", "late-3", 22.0, &[("jobs_total", "GAUGE")]),
            group("sdk", "first", 30.0, &[("jobs_total", "COUNTER")]),
        ];
        assert_eq!(
            instances(&type_clash_offenders(&groups, "platform")),
            ["first"]
        );
        memory.begin_read();
        groups.iter().for_each(|g| memory.observe(g));
        memory.end_read();
        let o = ordered_offenders(&groups, "platform", &memory);
        assert_eq!(instances(&o), ["late-3", "late-2", "late-1"]);
        assert_eq!(o[0].kept_groups, 1);
        // The same for a suffix clash, the histogram first.
        let hist = group("sdk", "hist", 10.0, &[("x", "HISTOGRAM")]);
        let mut memory = FirstSeen::default();
        memory.begin_read();
        memory.observe(&hist);
        memory.end_read();
        let groups = vec![
            group("sdk", "g-1", 20.0, &[("x_count", "GAUGE")]),
            group("sdk", "g-2", 21.0, &[("x_count", "GAUGE")]),
            group("sdk", "hist", 30.0, &[("x", "HISTOGRAM")]),
        ];
        memory.begin_read();
        groups.iter().for_each(|g| memory.observe(g));
        memory.end_read();
        let o = ordered_offenders(&groups, "platform", &memory);
        assert_eq!(instances(&o), ["g-2", "g-1"]);
    }

    /// `group` with the Pushgateway's stamp of its first push.
    fn created(instance: &str, first: f64, push: f64, families: &[(&str, &str)]) -> ListedGroup {
        ListedGroup {
            first_push: Some(first),
            ..group("sdk", instance, push, families)
        }
    }

    #[test]
    fn sides_first_seen_in_one_read_are_ordered_by_first_push_though_the_first_pushed_last() {
        // Both arrived between two reads (or before the first read after a restart); the
        // earlier tenant pushed again after the three later groups.
        let groups = vec![
            created("late-1", 20.0, 20.0, &[("jobs_total", "GAUGE")]),
            created("late-2", 21.0, 21.0, &[("jobs_total", "GAUGE")]),
            created("late-3", 22.0, 22.0, &[("jobs_total", "GAUGE")]),
            created("first", 10.0, 30.0, &[("jobs_total", "COUNTER")]),
        ];
        let mut memory = FirstSeen::default();
        memory.begin_read();
        groups.iter().for_each(|g| memory.observe(g));
        memory.end_read();
        for memory in [&memory, &FirstSeen::default()] {
            let o = ordered_offenders(&groups, "platform", memory);
            assert_eq!(instances(&o), ["late-3", "late-2", "late-1"]);
            assert!(o.iter().all(|o| o.ordered_by == ClashOrder::FirstPush));
        }
        // A suffix clash the same way: the histogram's group was created first.
        let groups = vec![
            created("g-1", 20.0, 20.0, &[("x_count", "GAUGE")]),
            created("hist", 10.0, 30.0, &[("x", "HISTOGRAM")]),
        ];
        let o = ordered_offenders(&groups, "platform", &FirstSeen::default());
        assert_eq!(instances(&o), ["g-1"]);
        assert_eq!(o[0].ordered_by, ClashOrder::FirstPush);
    }

    #[test]
    fn a_later_side_with_a_group_of_unknown_first_push_is_ordered_by_last_push_and_says_so() {
        // `failed`'s first push is unknown (a push to it failed): its last push (25) stands in,
        // after `first`'s first push (10), but it could have been created before.
        let groups = vec![
            group("sdk", "failed", 25.0, &[("jobs_total", "GAUGE")]),
            created("first", 10.0, 30.0, &[("jobs_total", "COUNTER")]),
        ];
        let o = ordered_offenders(&groups, "platform", &FirstSeen::default());
        assert_eq!(instances(&o), ["failed"]);
        assert_eq!(o[0].ordered_by, ClashOrder::Unordered);
        // Its last push before the other's first push proves it earlier.
        let groups = vec![
            group("sdk", "failed", 5.0, &[("jobs_total", "GAUGE")]),
            created("first", 10.0, 30.0, &[("jobs_total", "COUNTER")]),
        ];
        let o = ordered_offenders(&groups, "platform", &FirstSeen::default());
        assert_eq!(instances(&o), ["first"]);
        assert_eq!(o[0].ordered_by, ClashOrder::FirstPush);
    }

    #[test]
    fn what_ordered_a_clash_is_the_first_check_that_told_the_sides_apart() {
        let platform = group("platform", "c-0", 50.0, &[("openwhisk_x", "COUNTER")]);
        let tenant = created("t", 1.0, 1.0, &[("openwhisk_x", "GAUGE")]);
        let o = ordered_offenders(&[platform, tenant], "platform", &FirstSeen::default());
        assert_eq!(o[0].ordered_by, ClashOrder::Platform);
        // Seen in an earlier read beats an earlier first push (a family added to an old group).
        let first = created("first", 30.0, 30.0, &[("jobs_total", "COUNTER")]);
        let old_group = created("old", 5.0, 40.0, &[("jobs_total", "GAUGE")]);
        let mut memory = FirstSeen::default();
        memory.begin_read();
        memory.observe(&first);
        memory.end_read();
        memory.begin_read();
        memory.observe(&first);
        memory.observe(&old_group);
        memory.end_read();
        let o = ordered_offenders(&[first, old_group], "platform", &memory);
        assert_eq!(instances(&o), ["old"]);
        assert_eq!(o[0].ordered_by, ClashOrder::FirstSeen);
    }

    #[test]
    fn no_clash_no_offender() {
        let groups = vec![
            group("sdk", "a", 1.0, &[("jobs", "COUNTER")]),
            group("sdk", "b", 2.0, &[("jobs", "COUNTER")]),
        ];
        assert!(type_clash_offenders(&groups, "platform").is_empty());
    }
}
