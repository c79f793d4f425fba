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
//!
//! With `--prometheus-url` ([`prometheus`]) a round instead asks the Prometheus that scrapes
//! every shard for the stale groups (`push_time_seconds`, same rules) and for each shard's `up`,
//! DELETEs each stale group on every shard, and checks directly only the shards whose scrape is
//! not up; a round where Prometheus fails is a listing round.

pub(crate) mod guard;
pub(crate) mod listing;
pub(crate) mod prometheus;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use whisk_grouping::GroupingKey;

use crate::sink::pushgateway::{PushgatewayClient, PushgatewayError};
use guard::{Offender, type_clash_offenders};
use listing::{ListedGroup, ListingError, ListingLimits, read_listing};
use prometheus::{
    MAX_GROUPS_PER_ROUND, PrometheusClient, PrometheusError, VectorSample, promql_string,
    regex_literal,
};

/// DELETEs in flight at once when the Prometheus source deletes a group on every shard.
const DELETE_CONCURRENCY: usize = 16;

/// With Prometheus, every this many rounds is a listing round anyway: it prunes the groups
/// Prometheus cannot name (a grouping label with an empty value, a label equal to a target
/// label), which would otherwise never go. At the default `--prune-interval` once an hour.
pub(crate) const LISTING_EVERY_ROUNDS: u64 = 60;

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
    prometheus: Option<PrometheusClient>,
    /// Rounds run so far (shared by clones).
    rounds: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Where a round learnt which groups are stale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JanitorSource {
    /// Each Pushgateway's `/api/v1/metrics` (and the guard's direct `/metrics` check).
    #[default]
    Listing,
    /// Instant queries to Prometheus (`--prometheus-url`).
    Prometheus,
}

impl JanitorSource {
    /// The `source` label of `whisk_collector_janitor_rounds_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Listing => "listing",
            Self::Prometheus => "prometheus",
        }
    }
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
    /// Groups listed, over every Pushgateway (Prometheus source: stale series answered).
    pub groups: u64,
    /// Pushgateways that could not be served this round (listing failed), with why.
    pub unserved: Vec<String>,
    /// Where the stale groups came from.
    pub source: JanitorSource,
    /// With `--prometheus-url`: why Prometheus could not be used, so this round used the
    /// listing instead.
    pub prometheus_failure: Option<PrometheusError>,
    /// Prometheus source: DELETE requests that succeeded (one per group and shard; a DELETE of
    /// a group a shard does not hold is a no-op that succeeds).
    pub deletes_ok: u64,
    /// Prometheus source: DELETE requests that failed.
    pub deletes_failed: u64,
    /// Prometheus source: the answer held [`MAX_GROUPS_PER_ROUND`] groups; more may be stale
    /// and go next round.
    pub capped: bool,
    /// Shards whose health Prometheus's `up` told (no direct `/metrics` check).
    pub health_via_prometheus: u64,
    /// Shards whose `/metrics` status was checked directly.
    pub health_direct: u64,
    /// Prometheus source: how long its two queries took (asked at once).
    pub query_time: Option<Duration>,
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
    /// Prometheus could not be used and the fallback listing failed too.
    #[error("Prometheus: {prometheus}; then the fallback listing: {listing}")]
    Fallback {
        /// Why Prometheus could not be used.
        prometheus: PrometheusError,
        /// Why the listing failed.
        listing: Box<JanitorError>,
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
            prometheus: None,
            rounds: std::sync::Arc::default(),
        }
    }

    /// Learns the stale groups and the shards' health from the Prometheus that scrapes every
    /// shard (`honor_labels: true`) instead of listing the Pushgateways; a round where
    /// Prometheus fails falls back to the listing.
    pub fn with_prometheus(mut self, prometheus: PrometheusClient) -> Self {
        self.prometheus = Some(prometheus);
        self
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
    ///
    /// With [`Janitor::with_prometheus`], the round is [`Janitor::run_prometheus`]; when that
    /// fails (nothing deleted), the listing serves the round and
    /// [`JanitorRound::prometheus_failure`] says why. Every [`LISTING_EVERY_ROUNDS`]th round
    /// is a listing round regardless.
    pub async fn run_once(&self) -> Result<JanitorRound, JanitorError> {
        let round = self
            .rounds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(prometheus) = &self.prometheus else {
            return self.run_listing().await;
        };
        if round % LISTING_EVERY_ROUNDS == LISTING_EVERY_ROUNDS - 1 {
            return self.run_listing().await;
        }
        match self.run_prometheus(prometheus).await {
            Ok(round) => Ok(round),
            Err(failure) => match self.run_listing().await {
                Ok(mut round) => {
                    round.prometheus_failure = Some(failure);
                    Ok(round)
                }
                Err(listing) => Err(JanitorError::Fallback {
                    prometheus: failure,
                    listing: Box::new(listing),
                }),
            },
        }
    }

    /// One round from every Pushgateway's listing (no Prometheus).
    pub async fn run_listing(&self) -> Result<JanitorRound, JanitorError> {
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
            health_direct: self.clients.len() as u64,
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

    /// One round from Prometheus: two instant queries (the stale groups, oldest first and at
    /// most [`MAX_GROUPS_PER_ROUND`]; the `up` of every shard's scrape), both complete before
    /// anything is deleted. Each stale group is DELETEd on every shard (the series does not say
    /// which holds it; a DELETE of an absent group is a no-op), [`DELETE_CONCURRENCY`] at a
    /// time. A shard whose `up` is not 1, or that no `up` series matches (its `instance` is not
    /// the shard's `host:port`), gets the listing round's direct `/metrics` check and guard.
    pub async fn run_prometheus(
        &self,
        prometheus: &PrometheusClient,
    ) -> Result<JanitorRound, PrometheusError> {
        let (stale_query, up_query) = (self.stale_query(), self.up_query());
        let asked = std::time::Instant::now();
        let (stale, up) = tokio::join!(prometheus.query(&stale_query), prometheus.query(&up_query));
        let (stale, up) = (stale?, up?);
        let mut round = JanitorRound {
            query_time: Some(asked.elapsed()),
            dry_run: self.dry_run,
            source: JanitorSource::Prometheus,
            groups: stale.len() as u64,
            capped: stale.len() >= MAX_GROUPS_PER_ROUND,
            ..JanitorRound::default()
        };
        let shards: Vec<Option<String>> = self
            .clients
            .iter()
            .map(|c| shard_address(c.base()))
            .collect();
        let scrapes = ShardScrapes::new(&shards, &up, &self.reserved_jobs());
        let now = unix_now();
        let groups: Vec<(PrunedGroup, Vec<GroupingKey>)> = stale
            .iter()
            .filter_map(|s| {
                let keys = scrapes.grouping_keys(s);
                let first = keys.first()?;
                Some((
                    PrunedGroup {
                        path: first.path(),
                        age_secs: now - s.value,
                    },
                    keys,
                ))
            })
            .collect();
        let unhealthy: Vec<usize> = (0..self.clients.len())
            .filter(|i| !scrapes.healthy(*i))
            .collect();
        round.health_via_prometheus = (self.clients.len() - unhealthy.len()) as u64;
        round.health_direct = unhealthy.len() as u64;
        if self.dry_run {
            round.pruned = groups.into_iter().map(|(g, _)| g).collect();
        } else {
            self.delete_everywhere(groups, &mut round).await;
        }
        for i in unhealthy {
            let client = &self.clients[i];
            if let Err(e) = self.check_directly(client, &mut round).await {
                round.unserved.push(e.to_string());
            }
        }
        Ok(round)
    }

    /// `bottomk(cap, …)` of the `push_time_seconds` older than `--prune-after`: the SDK job's,
    /// and the platform job's of every other replica.
    fn stale_query(&self) -> String {
        let cutoff = format!("(time() - {})", self.max_age.as_secs_f64());
        let mut parts = vec![format!(
            "(push_time_seconds{{job={}}} < {cutoff})",
            promql_string(&self.job)
        )];
        if let Some((platform, own)) = &self.platform {
            parts.push(format!(
                "(push_time_seconds{{job={}, instance!={}}} < {cutoff})",
                promql_string(platform),
                promql_string(own)
            ));
        }
        format!("bottomk({MAX_GROUPS_PER_ROUND}, {})", parts.join(" or "))
    }

    /// The `up` of the scrapes whose target `instance` is a shard's `host:port`. Pushed `up`
    /// series of the pruned or platform job are not scrapes and are left out.
    fn up_query(&self) -> String {
        let addresses: Vec<String> = self
            .clients
            .iter()
            .filter_map(|c| shard_address(c.base()))
            .map(|a| regex_literal(&a))
            .collect();
        let mut matchers = vec![format!("instance=~{}", promql_string(&addresses.join("|")))];
        for job in self.reserved_jobs() {
            matchers.push(format!("job!={}", promql_string(&job)));
        }
        format!("up{{{}}}", matchers.join(", "))
    }

    fn reserved_jobs(&self) -> Vec<String> {
        let mut jobs = vec![self.job.clone()];
        jobs.extend(self.platform.as_ref().map(|(job, _)| job.clone()));
        jobs
    }

    /// DELETEs every key of every group on every shard, a bounded number at a time; a group is
    /// pruned when every one of its DELETEs succeeded.
    async fn delete_everywhere(
        &self,
        groups: Vec<(PrunedGroup, Vec<GroupingKey>)>,
        round: &mut JanitorRound,
    ) {
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(DELETE_CONCURRENCY));
        let mut set = tokio::task::JoinSet::new();
        let mut outcome: Vec<Option<PushgatewayError>> = Vec::with_capacity(groups.len());
        for (g, (_, keys)) in groups.iter().enumerate() {
            outcome.push(None);
            for key in keys {
                for client in &self.clients {
                    let Ok(permit) = std::sync::Arc::clone(&permits).acquire_owned().await else {
                        break;
                    };
                    let (client, key) = (client.clone(), key.clone());
                    set.spawn(async move {
                        let done = client.delete_group(&key).await;
                        drop(permit);
                        (g, done)
                    });
                }
            }
            // Collect finished DELETEs as we go, so the set stays small.
            while let Some(joined) = set.try_join_next() {
                record_delete(joined, &mut outcome, round);
            }
        }
        while let Some(joined) = set.join_next().await {
            record_delete(joined, &mut outcome, round);
        }
        for ((group, _), failed) in groups.into_iter().zip(outcome) {
            match failed {
                None => round.pruned.push(group),
                Some(e) => round.failed.push((group, e)),
            }
        }
    }

    /// The listing round's guard for one shard: its `/metrics` status, and on a 5xx the listing
    /// with every family's type and the guard's deletes.
    async fn check_directly(
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

fn record_delete(
    joined: Result<(usize, Result<(), PushgatewayError>), tokio::task::JoinError>,
    outcome: &mut [Option<PushgatewayError>],
    round: &mut JanitorRound,
) {
    match joined {
        Ok((_, Ok(()))) => round.deletes_ok += 1,
        Ok((g, Err(e))) => {
            round.deletes_failed += 1;
            if let Some(slot) = outcome.get_mut(g) {
                slot.get_or_insert(e);
            }
        }
        Err(e) => {
            round.deletes_failed += 1;
            round.unserved.push(format!("a DELETE task ended: {e}"));
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `host:port` of a Pushgateway base URL, as Prometheus names a static target's `instance`.
fn shard_address(base: &str) -> Option<String> {
    let url = reqwest::Url::parse(base).ok()?;
    Some(format!(
        "{}:{}",
        url.host_str()?,
        url.port_or_known_default()?
    ))
}

/// What Prometheus's `up` says about each shard's scrape.
#[derive(Debug, Default)]
struct ShardScrapes {
    /// Per shard: the `up` values of the scrapes whose `instance` is its address.
    up: Vec<Vec<f64>>,
    /// The shards' addresses that some scrape matched (a group without `instance` shows its
    /// target's).
    addresses: Vec<String>,
    /// Labels the scrape configuration adds to the matched targets (other than `job` and
    /// `instance`): on every series of those targets, so not part of a grouping key.
    target_labels: Vec<(String, String)>,
}

impl ShardScrapes {
    fn new(shards: &[Option<String>], up: &[VectorSample], reserved_jobs: &[String]) -> Self {
        let mut this = Self {
            up: vec![Vec::new(); shards.len()],
            ..Self::default()
        };
        for sample in up {
            if sample
                .label("job")
                .is_some_and(|j| reserved_jobs.iter().any(|r| r == j))
            {
                continue;
            }
            let Some(instance) = sample.label("instance") else {
                continue;
            };
            for (i, shard) in shards.iter().enumerate() {
                if shard.as_deref() != Some(instance) {
                    continue;
                }
                this.up[i].push(sample.value);
                if !this.addresses.iter().any(|a| a == instance) {
                    this.addresses.push(instance.to_string());
                }
                for (k, v) in &sample.labels {
                    if k != "job"
                        && k != "instance"
                        && !this.target_labels.contains(&(k.clone(), v.clone()))
                    {
                        this.target_labels.push((k.clone(), v.clone()));
                    }
                }
            }
        }
        this
    }

    /// Prometheus scrapes shard `i` and its last scrape succeeded.
    fn healthy(&self, i: usize) -> bool {
        self.up
            .get(i)
            .is_some_and(|v| !v.is_empty() && v.iter().all(|u| *u == 1.0))
    }

    /// The grouping keys a stale series may stand for: its labels without the scrape's target
    /// labels; when its `instance` is a shard's address, also without `instance` (a group
    /// pushed without one shows its target's). Empty without a `job`.
    fn grouping_keys(&self, series: &VectorSample) -> Vec<GroupingKey> {
        let Some(job) = series.label("job") else {
            return Vec::new();
        };
        let labels: Vec<&(String, String)> = series
            .labels
            .iter()
            .filter(|(k, _)| k != "job")
            .filter(|pair| !self.target_labels.contains(pair))
            .collect();
        let key = |skip_instance: bool| {
            labels
                .iter()
                .filter(|(k, _)| !(skip_instance && k == "instance"))
                .fold(GroupingKey::new(job), |key, (k, v)| {
                    key.with(k.as_str(), v.as_str())
                })
        };
        let mut keys = vec![key(false)];
        if series
            .label("instance")
            .is_some_and(|i| self.addresses.iter().any(|a| a == i))
        {
            keys.push(key(true));
        }
        keys
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

    fn sample(labels: &[(&str, &str)], value: f64) -> VectorSample {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        VectorSample { labels, value }
    }

    fn janitor(shards: &[&str]) -> Janitor {
        let clients = shards
            .iter()
            .map(|u| {
                PushgatewayClient::new(
                    &reqwest::Url::parse(u).unwrap(),
                    None,
                    None,
                    Duration::from_secs(1),
                )
                .unwrap()
            })
            .collect();
        Janitor::for_pushgateways(clients, "sdk", Duration::from_secs(900), false)
            .with_platform("platform", "me")
    }

    #[test]
    fn asks_prometheus_for_the_oldest_stale_groups_of_the_sdk_job_and_of_other_replicas() {
        let j = janitor(&["http://pg-0.pg:9091", "http://127.0.0.1:80"]);
        assert_eq!(
            j.stale_query(),
            "bottomk(5000, (push_time_seconds{job=\"sdk\"} < (time() - 900)) or \
             (push_time_seconds{job=\"platform\", instance!=\"me\"} < (time() - 900)))"
        );
        assert_eq!(
            j.up_query(),
            "up{instance=~\"pg-0\\\\.pg:9091|127\\\\.0\\\\.0\\\\.1:80\", job!=\"sdk\", job!=\"platform\"}"
        );
    }

    #[test]
    fn a_shard_is_healthy_only_when_every_scrape_of_it_is_up() {
        let shards = [
            Some("a:1".to_string()),
            Some("b:1".to_string()),
            Some("c:1".to_string()),
        ];
        let up = [
            sample(&[("job", "pushgateway"), ("instance", "a:1")], 1.0),
            sample(&[("job", "pushgateway"), ("instance", "b:1")], 0.0),
            // A pushed `up` in an SDK group is no scrape.
            sample(&[("job", "sdk"), ("instance", "c:1")], 1.0),
        ];
        let s = ShardScrapes::new(&shards, &up, &["sdk".into(), "platform".into()]);
        assert!(s.healthy(0));
        assert!(!s.healthy(1), "up 0");
        assert!(!s.healthy(2), "not scraped");
    }

    #[test]
    fn the_grouping_key_drops_target_labels_and_tries_both_ways_for_a_target_instance() {
        let shards = [Some("pg-0.pg:9091".to_string())];
        let up = [sample(
            &[
                ("job", "pushgateway"),
                ("instance", "pg-0.pg:9091"),
                ("pod", "pg-0"),
            ],
            1.0,
        )];
        let s = ShardScrapes::new(&shards, &up, &[]);
        let sdk = sample(
            &[
                ("job", "sdk"),
                ("instance", "c1"),
                ("namespace", "guest"),
                ("action", "p/a"),
                ("pod", "pg-0"),
            ],
            1.0,
        );
        let keys = s.grouping_keys(&sdk);
        assert_eq!(
            keys,
            vec![
                GroupingKey::new("sdk")
                    .with("action", "p/a")
                    .with("instance", "c1")
                    .with("namespace", "guest")
            ]
        );
        let no_instance = sample(&[("job", "sdk"), ("instance", "pg-0.pg:9091")], 1.0);
        assert_eq!(
            s.grouping_keys(&no_instance),
            vec![
                GroupingKey::new("sdk").with("instance", "pg-0.pg:9091"),
                GroupingKey::new("sdk")
            ]
        );
        assert!(
            s.grouping_keys(&sample(&[("instance", "x")], 1.0))
                .is_empty()
        );
    }
}
