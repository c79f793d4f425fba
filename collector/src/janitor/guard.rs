//! The guard: finds the groups that make a Pushgateway's `/metrics` answer 500.
//!
//! With `--push.disable-consistency-check` the Pushgateway accepts a family under two types
//! from two groups (action A pushes `jobs` as a counter, action B as a gauge) and from then on
//! every scrape of it fails: every series it holds disappears from Prometheus. When a
//! Pushgateway's `/metrics` answers 500, the janitor lists its groups with their families'
//! types and deletes the offending groups: for each family stored under more than one type,
//! the groups of the minority type (newest first). The type of the platform job's groups
//! always wins (the collector's own families are the reference); a tie goes to the type that
//! was there first. No other group is touched.
//!
//! [`type_clash_offenders`] picks the offenders from a listing; [`Janitor::guard`] deletes
//! them and waits for `/metrics` to answer again. The listing round runs it over the listing
//! it already read; the Prometheus round calls [`Janitor::check_directly`] for each shard
//! whose scrape is not up.

use std::collections::HashMap;
use std::time::Duration;

use whisk_grouping::GroupingKey;

use super::listing::{LISTING_CAP, ListedGroup, ListingError, read_listing};
use super::{GuardDeleted, Janitor, JanitorError, JanitorRound, PrunedGroup};
use crate::sink::pushgateway::PushgatewayClient;

/// The `reason` label of `whisk_collector_guard_deleted_groups_total` for a type clash.
pub(crate) const TYPE_CLASH: &str = "type_clash";

/// How long the guard waits for a Pushgateway's `/metrics` to answer 200 after its deletes
/// (the Pushgateway applies DELETEs asynchronously).
const GUARD_SETTLE: Duration = Duration::from_secs(10);

/// A group to delete and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Offender {
    /// The group's grouping key (`job` included, sorted).
    pub labels: Vec<(String, String)>,
    /// Its last push (Unix seconds), if known.
    pub push_time: Option<f64>,
    /// The clashing family.
    pub family: String,
    /// The type this group has it under.
    pub kind: String,
    /// The type the other groups have it under (kept).
    pub kept_kind: String,
    /// How many groups hold the family under the kept type.
    pub kept_groups: usize,
}

impl Offender {
    /// One line for the log.
    pub fn why(&self) -> String {
        format!(
            "family `{}` is a {} in this group but a {} in {} other group(s)",
            self.family,
            self.kind.to_lowercase(),
            self.kept_kind.to_lowercase(),
            self.kept_groups
        )
    }
}

/// The groups to delete so that no family is stored under two types, newest first. Groups of
/// `protected_job` are never offenders, and their types win.
pub fn type_clash_offenders(groups: &[ListedGroup], protected_job: &str) -> Vec<Offender> {
    // family → type → indexes of the groups holding it so.
    let mut by_family: HashMap<&str, Vec<(&str, Vec<usize>)>> = HashMap::new();
    for (i, g) in groups.iter().enumerate() {
        for (family, kind) in &g.families {
            let kinds = by_family.entry(&**family).or_default();
            match kinds.iter_mut().find(|(k, _)| *k == &**kind) {
                Some((_, holders)) => holders.push(i),
                None => kinds.push((&**kind, vec![i])),
            }
        }
    }
    let protected = |i: &usize| groups[*i].label("job") == Some(protected_job);
    let first_push = |holders: &[usize]| {
        holders
            .iter()
            .filter_map(|i| groups[*i].push_time)
            .fold(f64::INFINITY, f64::min)
    };
    let mut offenders: Vec<Offender> = Vec::new();
    let mut families: Vec<_> = by_family.into_iter().filter(|(_, k)| k.len() > 1).collect();
    families.sort_by(|a, b| a.0.cmp(b.0));
    for (family, kinds) in families {
        let Some((kept_kind, kept)) = kinds.iter().max_by(|a, b| {
            let pa = a.1.iter().any(protected);
            let pb = b.1.iter().any(protected);
            pa.cmp(&pb)
                .then(a.1.len().cmp(&b.1.len()))
                // Older first push wins a tie: compare reversed.
                .then(first_push(&b.1).total_cmp(&first_push(&a.1)))
        }) else {
            continue;
        };
        for (kind, holders) in &kinds {
            if kind == kept_kind {
                continue;
            }
            for i in holders.iter().filter(|i| !protected(i)) {
                let g = &groups[*i];
                if offenders.iter().any(|o| o.labels == g.labels) {
                    continue;
                }
                offenders.push(Offender {
                    labels: g.labels.clone(),
                    push_time: g.push_time,
                    family: family.to_string(),
                    kind: kind.to_string(),
                    kept_kind: kept_kind.to_string(),
                    kept_groups: kept.len(),
                });
            }
        }
    }
    offenders.sort_by(|a, b| {
        b.push_time
            .unwrap_or(f64::INFINITY)
            .total_cmp(&a.push_time.unwrap_or(f64::INFINITY))
    });
    offenders
}

impl Janitor {
    /// The listing round's guard for one shard: its `/metrics` status, and on a 5xx the listing
    /// with every family's type and the guard's deletes.
    pub(super) async fn check_directly(
        &self,
        client: &PushgatewayClient,
        round: &mut JanitorRound,
    ) -> Result<(), JanitorError> {
        if !client.metrics_status().await?.is_server_error() {
            return Ok(());
        }
        let url = format!("{}/api/v1/metrics", client.base());
        let resp = client.list_groups(LISTING_CAP).await?;
        let (groups, _) = read_listing(
            resp,
            self.limits,
            true,
            Vec::new(),
            |groups: &mut Vec<ListedGroup>, g| groups.push(g),
        )
        .await
        .map_err(|e: ListingError| JanitorError::Body {
            url,
            message: e.to_string(),
        })?;
        self.guard(client, &groups, round).await;
        Ok(())
    }

    /// Deletes the groups whose family types clash, newest first, then waits (bounded) for
    /// `/metrics` to answer again.
    pub(super) async fn guard(
        &self,
        client: &PushgatewayClient,
        groups: &[ListedGroup],
        round: &mut JanitorRound,
    ) {
        let protected = self.platform.as_ref().map_or("", |(job, _)| job.as_str());
        let offenders: Vec<Offender> = type_clash_offenders(groups, protected);
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
            families: families
                .iter()
                .map(|(f, k)| ((*f).into(), (*k).into()))
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
        assert_eq!(o[0].kind, "GAUGE");
        assert_eq!(o[0].kept_kind, "COUNTER");
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
    fn no_clash_no_offender() {
        let groups = vec![
            group("sdk", "a", 1.0, &[("jobs", "COUNTER")]),
            group("sdk", "b", 2.0, &[("jobs", "COUNTER")]),
        ];
        assert!(type_clash_offenders(&groups, "platform").is_empty());
    }
}
