//! The Prometheus round (`--prometheus-url`): which groups are stale and which shards are
//! healthy, learnt from the Prometheus that scrapes every shard instead of from the shards.
//!
//! Two instant queries ([`Janitor::stale_query`], [`Janitor::up_query`]), the grouping key of
//! each stale series rebuilt ([`ShardScrapes::grouping_keys`]: without the scrape's target
//! labels, and with and without a target `instance`), each key DELETEd on every shard
//! ([`Janitor::delete_everywhere`]), and the guard's direct check only for the shards whose
//! scrape is not up.
//!
//! Why a file beside [`prometheus`] rather than the client folded into a submodule of this
//! one: [`prometheus`] speaks to Prometheus (HTTP, PromQL quoting, answer parsing) and knows
//! nothing of Pushgateways; this module is the round's logic and never touches Prometheus's
//! HTTP API. The listing source is laid out the same way ([`listing`] parses,
//! [`listing_round`] decides), so a newcomer finds each source as one wire module and one
//! round module side by side, and the client's path (`janitor::prometheus`) stays as it was.
//!
//! [`prometheus`]: super::prometheus
//! [`listing`]: super::listing
//! [`listing_round`]: super::listing_round

use std::time::{SystemTime, UNIX_EPOCH};

use whisk_grouping::GroupingKey;

use super::prometheus::{
    MAX_GROUPS_PER_ROUND, PrometheusClient, PrometheusError, VectorSample, promql_string,
    regex_literal,
};
use super::{Janitor, JanitorRound, JanitorSource, PrunedGroup};
use crate::sink::pushgateway::PushgatewayError;

/// DELETEs in flight at once when the Prometheus source deletes a group on every shard.
const DELETE_CONCURRENCY: usize = 16;

impl Janitor {
    /// One round from Prometheus: two instant queries (the stale groups, oldest first and at
    /// most `MAX_GROUPS_PER_ROUND` (5 000); the `up` of every shard's scrape), both complete before
    /// anything is deleted. Each stale group is DELETEd on every shard (the series does not say
    /// which holds it; a DELETE of an absent group is a no-op), `DELETE_CONCURRENCY` (16) at a
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
            if let Err(e) = self.check_directly(i, client, &mut round).await {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sink::pushgateway::PushgatewayClient;

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
