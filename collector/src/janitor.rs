//! Deletes stale groups from the Pushgateways, and repairs a Pushgateway whose `/metrics`
//! fails.
//!
//! The Pushgateway never forgets a group, and every push gets slower with each group stored.
//! Every `--prune-interval` the janitor reads each Pushgateway's `/api/v1/metrics` as a stream
//! ([`listing`]: only grouping labels and `push_time_seconds` are kept, so memory does not grow
//! with the series stored) and DELETEs each group of `--prune-job` whose `push_time_seconds` is
//! older than `--prune-after`, and each platform group (`--push-job`) of another replica gone
//! as long, rebuilding the exact grouping key (every label `@base64`). Groups of other jobs are
//! never touched. Before that, the [`guard`] checks that the Pushgateway's own `/metrics`
//! answers; on a 500 it deletes the groups whose family types clash with the others'.

pub(crate) mod guard;
pub(crate) mod listing;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use whisk_grouping::GroupingKey;

use crate::sink::pushgateway::{PushgatewayClient, PushgatewayError};
use guard::{Offender, type_clash_offenders};
use listing::{ListedGroup, ListingError, ListingLimits, read_listing};

/// Upper bound of one listing request; [`ListingLimits`] usually ends a stalled one sooner.
const LISTING_CAP: Duration = Duration::from_secs(600);

/// How long the guard waits for a Pushgateway's `/metrics` to answer 200 after its deletes
/// (the Pushgateway applies DELETEs asynchronously).
const GUARD_SETTLE: Duration = Duration::from_secs(10);

/// What the janitor does.
#[derive(Debug, Clone)]
pub struct Janitor {
    clients: Vec<PushgatewayClient>,
    job: String,
    platform: Option<(String, String)>,
    max_age: Duration,
    dry_run: bool,
    limits: ListingLimits,
}

/// A group that is due for deletion.
#[derive(Debug, Clone, PartialEq)]
pub struct StaleGroup {
    /// Its `job`.
    pub job: String,
    /// Grouping key without `job`, sorted by label name.
    pub labels: Vec<(String, String)>,
    /// Seconds since its last successful push.
    pub age_secs: f64,
}

/// A group the janitor acted on, with its path (for the log).
#[derive(Debug, Clone, PartialEq)]
pub struct PrunedGroup {
    /// The group's path (`/metrics/job@base64/…`).
    pub path: String,
    /// Seconds since its last successful push.
    pub age_secs: f64,
}

/// A group the guard deleted, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardDeleted {
    /// The group's path.
    pub path: String,
    /// Which family clashed and how.
    pub why: String,
}

/// What one janitor round did over every Pushgateway; logging and counting it is the caller's.
#[derive(Debug, Default)]
pub struct JanitorRound {
    /// Groups deleted (or, in dry-run, found stale).
    pub pruned: Vec<PrunedGroup>,
    /// Groups whose DELETE failed, with why.
    pub failed: Vec<(PrunedGroup, PushgatewayError)>,
    /// Whether this was a dry run (nothing deleted).
    pub dry_run: bool,
    /// Groups the guard deleted (or, in dry-run, would delete) so a Pushgateway's `/metrics`
    /// answers again.
    pub guard_deleted: Vec<GuardDeleted>,
    /// Groups listed, over every Pushgateway.
    pub groups: u64,
    /// Pushgateways that could not be served this round (listing failed), with why.
    pub unserved: Vec<String>,
}

impl JanitorRound {
    /// How many groups were pruned (or, in dry-run, found stale).
    pub fn pruned(&self) -> usize {
        self.pruned.len()
    }
}

/// Why a janitor run failed.
#[derive(Debug, thiserror::Error)]
pub enum JanitorError {
    /// Reaching the Pushgateway failed.
    #[error("listing the Pushgateway's groups: {0}")]
    List(#[from] PushgatewayError),
    /// The listing could not be read.
    #[error("GET {url}: {message}")]
    Body {
        /// URL.
        url: String,
        /// What went wrong.
        message: String,
    },
}

impl Janitor {
    /// A janitor of one Pushgateway for `job` groups older than `max_age`.
    pub fn new(client: PushgatewayClient, job: &str, max_age: Duration, dry_run: bool) -> Self {
        Self::for_pushgateways(vec![client], job, max_age, dry_run)
    }

    /// A janitor of every Pushgateway in `clients` (the shards of one store).
    pub fn for_pushgateways(
        clients: Vec<PushgatewayClient>,
        job: &str,
        max_age: Duration,
        dry_run: bool,
    ) -> Self {
        Self {
            clients,
            job: job.to_string(),
            platform: None,
            max_age,
            dry_run,
            limits: ListingLimits::default(),
        }
    }

    /// Also prunes the platform groups (`platform_job`) of other replicas not pushed for
    /// `max_age` (never `own_instance`'s), and makes the guard treat that job's family types
    /// as the reference.
    pub fn with_platform(mut self, platform_job: &str, own_instance: &str) -> Self {
        self.platform = Some((platform_job.to_string(), own_instance.to_string()));
        self
    }

    /// Sets the listing bounds (size cap, deadline).
    pub fn with_limits(mut self, limits: ListingLimits) -> Self {
        self.limits = limits;
        self
    }

    /// One pass over every Pushgateway: guard check, listing, deletes; the Pushgateways are
    /// served in parallel (each listing is mostly the Pushgateway's own time, so a round over
    /// N shards takes about as long as one shard's). A Pushgateway that fails is reported in
    /// [`JanitorRound::unserved`] and the others are still served; the round is an error only
    /// when every one failed.
    pub async fn run_once(&self) -> Result<JanitorRound, JanitorError> {
        let mut set = tokio::task::JoinSet::new();
        for (i, client) in self.clients.iter().enumerate() {
            let (this, client) = (self.clone(), client.clone());
            set.spawn(async move {
                let mut part = JanitorRound::default();
                let served = this.run_one(&client, &mut part).await;
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
            ..JanitorRound::default()
        };
        let mut last_err = None;
        for (_, part, served) in parts {
            round.pruned.extend(part.pruned);
            round.failed.extend(part.failed);
            round.guard_deleted.extend(part.guard_deleted);
            round.groups += part.groups;
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
        client: &PushgatewayClient,
        round: &mut JanitorRound,
    ) -> Result<(), JanitorError> {
        let url = format!("{}/api/v1/metrics", client.base());
        let list_err = |message: String| JanitorError::Body {
            url: url.clone(),
            message,
        };
        // The guard: a 500 on /metrics means every series of this Pushgateway is lost to
        // Prometheus. Then the listing also reads every family's type.
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
        let ((stale, kept), groups) = read_listing(
            resp,
            self.limits,
            broken,
            (Vec::new(), Vec::new()),
            move |(stale, kept): &mut (Vec<StaleGroup>, Vec<ListedGroup>), g: ListedGroup| {
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
            self.guard(client, &kept, round).await;
        }
        Ok(())
    }

    /// Deletes the groups whose family types clash, newest first, then waits (bounded) for
    /// `/metrics` to answer again.
    async fn guard(
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
pub fn stale_groups(
    groups: &[ListedGroup],
    job: &str,
    max_age: Duration,
    now: f64,
) -> Vec<StaleGroup> {
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
