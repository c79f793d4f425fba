//! The listing round: every Pushgateway's `/api/v1/metrics` read as a stream ([`listing`]),
//! the stale groups picked by the [`Sieve`] and DELETEd, and, when the Pushgateway's own
//! `/metrics` answers 500, the [`guard`] over the same listing.
//!
//! This is the round without `--prometheus-url`, the fallback when Prometheus fails, and every
//! [`LISTING_EVERY_ROUNDS`]th round with it. Parsing the listing is [`listing`]'s; this module
//! decides what to do with each group.
//!
//! [`listing`]: super::listing
//! [`guard`]: super::guard
//! [`LISTING_EVERY_ROUNDS`]: super::LISTING_EVERY_ROUNDS

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use whisk_grouping::GroupingKey;

use super::listing::{LISTING_CAP, ListedGroup, ListingError, read_listing};
use super::{Janitor, JanitorError, JanitorRound, PrunedGroup, StaleGroup, lock};
use crate::sink::pushgateway::PushgatewayClient;

impl Janitor {
    /// One round from every Pushgateway's listing (no Prometheus).
    pub async fn run_listing(&self) -> Result<JanitorRound, JanitorError> {
        let mut set = tokio::task::JoinSet::new();
        for (i, client) in self.clients.iter().enumerate() {
            let (this, client) = (self.clone(), client.clone());
            set.spawn(async move {
                let mut part = JanitorRound::default();
                let served = this.run_one(i, &client, &mut part).await;
                (i, part, served)
            });
        }
        let mut parts = Vec::with_capacity(self.clients.len());
        let mut panicked = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(part) => parts.push(part),
                Err(e) => panicked.push(e.to_string()),
            }
        }
        parts.sort_by_key(|(i, _, _)| *i);
        let mut round = JanitorRound {
            dry_run: self.dry_run,
            unserved: panicked,
            health_direct: self.clients.len() as u64,
            ..JanitorRound::default()
        };
        let mut last_err = None;
        for (_, part, served) in parts {
            round.pruned.extend(part.pruned);
            round.failed.extend(part.failed);
            round.guard_deleted.extend(part.guard_deleted);
            round.guard_clashes.extend(part.guard_clashes);
            round.groups += part.groups;
            round.first_seen_full += part.first_seen_full;
            if let Err(e) = served {
                round.unserved.push(e.to_string());
                last_err = Some(e);
            }
        }
        if round.unserved.len() == self.clients.len() {
            return Err(last_err.unwrap_or_else(|| JanitorError::Body {
                url: self.clients.first().map_or("", |c| c.base()).to_string(),
                message: round.unserved.join("; "),
            }));
        }
        Ok(round)
    }

    async fn run_one(
        &self,
        shard: usize,
        client: &PushgatewayClient,
        round: &mut JanitorRound,
    ) -> Result<(), JanitorError> {
        let url = format!("{}/api/v1/metrics", client.base());
        let list_err = |message: String| JanitorError::Body {
            url: url.clone(),
            message,
        };
        // The guard: a 500 on /metrics means every series of this Pushgateway is lost to
        // Prometheus; then the groups are kept for it. Every family's type is read each round
        // for the guard's memory of when each family first appeared.
        // Both asked at once: each is a full pass over the store on the Pushgateway's side,
        // and the listing's answer only starts once all of it is encoded.
        let (status, listing) =
            tokio::join!(client.metrics_status(), client.list_groups(LISTING_CAP));
        let broken = status?.is_server_error();
        let resp = listing?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let sieve = Sieve {
            job: self.job.clone(),
            platform: self.platform.clone(),
            max_age: self.max_age,
            now,
        };
        let memory = std::sync::Arc::clone(&self.first_seen);
        lock(&memory[shard]).begin_read();
        let ((stale, kept), groups) = read_listing(
            resp,
            self.limits,
            true,
            (Vec::new(), Vec::new()),
            move |(stale, kept): &mut (Vec<StaleGroup>, Vec<ListedGroup>), g: ListedGroup| {
                lock(&memory[shard]).observe(&g);
                if let Some(s) = sieve.stale(&g) {
                    stale.push(s);
                }
                if broken {
                    kept.push(g);
                }
            },
        )
        .await
        .map_err(|e: ListingError| list_err(e.to_string()))?;
        round.first_seen_full += u64::from(lock(&self.first_seen[shard]).end_read());
        round.groups += groups;
        for group in stale {
            let key = group
                .labels
                .iter()
                .fold(GroupingKey::new(group.job.as_str()), |k, (n, v)| {
                    k.with(n.as_str(), v.as_str())
                });
            let pruned = PrunedGroup {
                path: key.path(),
                age_secs: group.age_secs,
            };
            if self.dry_run {
                round.pruned.push(pruned);
                continue;
            }
            match client.delete_group(&key).await {
                Ok(()) => round.pruned.push(pruned),
                Err(e) => round.failed.push((pruned, e)),
            }
        }
        if broken {
            self.guard(shard, client, &kept, round).await;
        }
        Ok(())
    }
}

/// Decides which listed groups are stale.
#[derive(Debug, Clone)]
struct Sieve {
    job: String,
    platform: Option<(String, String)>,
    max_age: Duration,
    now: f64,
}

impl Sieve {
    fn stale(&self, g: &ListedGroup) -> Option<StaleGroup> {
        let job = g.label("job")?;
        let ours = job == self.job
            || self.platform.as_ref().is_some_and(|(platform, own)| {
                job == platform && g.label("instance") != Some(own.as_str())
            });
        if !ours {
            return None;
        }
        let age = self.now - g.push_time?;
        if age <= self.max_age.as_secs_f64() {
            return None;
        }
        Some(StaleGroup {
            job: job.to_string(),
            labels: g
                .labels
                .iter()
                .filter(|(k, _)| k != "job")
                .cloned()
                .collect(),
            age_secs: age,
        })
    }
}

/// The groups of `job` in a listing whose `push_time_seconds` is older than `max_age` at
/// `now` (Unix seconds). Groups without a readable push time are kept.
#[cfg(test)]
fn stale_groups(groups: &[ListedGroup], job: &str, max_age: Duration, now: f64) -> Vec<StaleGroup> {
    let sieve = Sieve {
        job: job.to_string(),
        platform: None,
        max_age,
        now,
    };
    groups.iter().filter_map(|g| sieve.stale(g)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(labels: &[(&str, &str)], push: Option<f64>) -> ListedGroup {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        ListedGroup {
            labels,
            push_time: push,
            first_push: None,
            families: Vec::new(),
        }
    }

    #[test]
    fn selects_only_stale_groups_of_the_job() {
        let groups = [
            g(
                &[
                    ("job", "openwhisk_actions"),
                    ("instance", "a"),
                    ("namespace", "ns"),
                    ("action", "p/x"),
                ],
                Some(1000.0),
            ),
            g(
                &[("job", "openwhisk_actions"), ("instance", "b")],
                Some(1990.0),
            ),
            g(&[("job", "other"), ("instance", "c")], Some(1.0)),
            g(&[("job", "openwhisk_actions"), ("instance", "d")], None),
        ];
        let stale = stale_groups(
            &groups,
            "openwhisk_actions",
            Duration::from_secs(60),
            2000.0,
        );
        assert_eq!(
            stale,
            vec![StaleGroup {
                job: "openwhisk_actions".into(),
                labels: vec![
                    ("action".into(), "p/x".into()),
                    ("instance".into(), "a".into()),
                    ("namespace".into(), "ns".into())
                ],
                age_secs: 1000.0
            }]
        );
    }

    #[test]
    fn prunes_platform_groups_of_gone_replicas_never_its_own() {
        let sieve = Sieve {
            job: "sdk".into(),
            platform: Some(("platform".into(), "me".into())),
            max_age: Duration::from_secs(60),
            now: 2000.0,
        };
        let gone = g(&[("job", "platform"), ("instance", "old-pod")], Some(100.0));
        let me = g(&[("job", "platform"), ("instance", "me")], Some(100.0));
        let alive = g(&[("job", "platform"), ("instance", "other")], Some(1990.0));
        assert_eq!(sieve.stale(&gone).map(|s| s.job), Some("platform".into()));
        assert_eq!(sieve.stale(&me), None);
        assert_eq!(sieve.stale(&alive), None);
    }
}
