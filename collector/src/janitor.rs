//! Deletes stale groups from the Pushgateways, and repairs a Pushgateway whose `/metrics`
//! fails.
//!
//! The Pushgateway never forgets a group, and every push gets slower with each group stored.
//! Every `--prune-interval` the janitor reads each Pushgateway's `/api/v1/metrics` as a stream
//! ([`listing`]: only grouping labels, `push_time_seconds` and each family's type are kept, so
//! memory does not grow with the series stored) and DELETEs each group of `--prune-job` whose `push_time_seconds` is
//! older than `--prune-after`, and each platform group (`--push-job`) of another replica gone
//! as long, rebuilding the exact grouping key (every label `@base64`). Groups of other jobs are
//! never touched. Before that, the [`guard`] checks that the Pushgateway's own `/metrics`
//! answers; on a 500 it deletes the groups whose family types clash with the others'.
//!
//! With `--prometheus-url` ([`prometheus`]) a round instead asks the Prometheus that scrapes
//! every shard for the stale groups (`push_time_seconds`, same rules) and for each shard's `up`,
//! DELETEs each stale group on every shard, and checks directly only the shards whose scrape is
//! not up; a round where Prometheus fails is a listing round.
//!
//! ## Where things are
//!
//! Each source of stale groups is two modules: one that speaks the wire format (and knows
//! nothing of rounds) and one that runs the round (and knows nothing of HTTP or JSON). The
//! round modules and the guard add methods (`impl Janitor`) to the one [`Janitor`] defined
//! here, so its fields stay private to `janitor/`.
//!
//! - this file: [`Janitor`], its builder, [`Janitor::run_once`] (which source a round uses),
//!   the round, result and error types;
//! - [`listing_round`]: the listing round ([`Janitor::run_listing`]), the sieve that picks the
//!   stale groups (`stale_groups` runs it on a listing in the unit tests);
//! - [`listing`]: the streaming parser of a Pushgateway's `/api/v1/metrics` and its bounds;
//! - [`prometheus_round`]: the Prometheus round ([`Janitor::run_prometheus`]), its two queries,
//!   the grouping-key reconstruction, the DELETE of each stale group on every shard;
//! - [`prometheus`]: the Prometheus HTTP client (instant queries, PromQL quoting, parsing);
//! - [`guard`]: the type-clash guard: which groups break `/metrics`, deleting them, and the
//!   direct `/metrics` check the Prometheus round runs for a shard whose scrape is not up;
//! - [`first_seen`]: the guard's bounded memory of the read in which each family first
//!   appeared on each shard (`push_time_seconds` is a group's last push; the guard also reads
//!   each group's first push from the listing, see [`guard`]).

mod first_seen;
pub(crate) mod guard;
pub(crate) mod listing;
mod listing_round;
pub(crate) mod prometheus;
mod prometheus_round;

use std::time::Duration;

use crate::sink::pushgateway::{PushgatewayClient, PushgatewayError};
use listing::ListingLimits;
use prometheus::{PrometheusClient, PrometheusError};

/// With Prometheus, every this many rounds is a listing round anyway: it prunes the groups
/// Prometheus cannot name (a grouping label with an empty value, a label equal to a target
/// label), which would otherwise never go. At the default `--prune-interval` once an hour.
const LISTING_EVERY_ROUNDS: u64 = 60;

/// Locks one shard's memory of first sightings (a panic while it was held leaves it usable:
/// every update is a whole entry).
fn lock(
    m: &std::sync::Mutex<first_seen::FirstSeen>,
) -> std::sync::MutexGuard<'_, first_seen::FirstSeen> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

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
    /// Per shard (as `clients`), when each family was first seen (shared by clones).
    first_seen: std::sync::Arc<[std::sync::Mutex<first_seen::FirstSeen>]>,
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
pub(crate) struct StaleGroup {
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
    /// What told the guard that its family came later.
    pub ordered_by: ClashOrder,
}

/// What told the guard which of two clashing families came first (the later one's groups are
/// deleted); docs/design.md, "When a family first appeared".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClashOrder {
    /// The kept family is the platform job's.
    Platform,
    /// The janitor saw the kept family in an earlier read of the shard.
    FirstSeen,
    /// Both were first seen in the same read (or after a restart): the Pushgateway's first push
    /// of every group of the later family came after the kept family's earliest group's.
    FirstPush,
    /// Nothing certain: the later family has a group whose first push is unknown (a push to it
    /// failed), so last pushes (or, at a tie, the number of groups) decided.
    Unordered,
}

impl ClashOrder {
    /// Every value, in the order of the checks.
    pub const ALL: [ClashOrder; 4] = [
        Self::Platform,
        Self::FirstSeen,
        Self::FirstPush,
        Self::Unordered,
    ];

    /// The `ordered_by` label of `whisk_collector_guard_clashes_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Platform => "platform",
            Self::FirstSeen => "first_seen",
            Self::FirstPush => "first_push",
            Self::Unordered => "unordered",
        }
    }
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
    /// One per clash the guard settled (each later family): what ordered it.
    pub guard_clashes: Vec<ClashOrder>,
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
    /// Prometheus source: the answer held
    /// `MAX_GROUPS_PER_ROUND` (5 000) groups; more may be stale and
    /// go next round.
    pub capped: bool,
    /// Shards whose health Prometheus's `up` told (no direct `/metrics` check).
    pub health_via_prometheus: u64,
    /// Shards whose `/metrics` status was checked directly.
    pub health_direct: u64,
    /// Prometheus source: how long its two queries took (asked at once).
    pub query_time: Option<Duration>,
    /// Shards whose listing, read this round, held a family the guard's memory of first
    /// sightings had no room for (that family is ordered by first push).
    pub first_seen_full: u64,
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
        let first_seen = clients.iter().map(|_| Default::default()).collect();
        Self {
            clients,
            first_seen,
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
    /// [`JanitorRound::prometheus_failure`] says why. Every `LISTING_EVERY_ROUNDS` (60)th round
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
}
