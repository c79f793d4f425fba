//! Deletes stale groups of the SDK's job from the Pushgateway.
//!
//! The Pushgateway never forgets a group, and every push gets slower with each group stored.
//! Every `--prune-interval` the janitor reads `/api/v1/metrics` and DELETEs each group of
//! `--prune-job` whose `push_time_seconds` is older than `--prune-after`, rebuilding the exact
//! grouping key ([`GroupingKey::path`], every label `@base64`). Groups of other jobs are never
//! touched. A round returns a [`JanitorRound`]; logging and counting it is the caller's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use whisk_grouping::GroupingKey;

use crate::sink::pushgateway::{PushgatewayClient, PushgatewayError};

/// What the janitor does.
#[derive(Debug, Clone)]
pub struct Janitor {
    client: PushgatewayClient,
    job: String,
    max_age: Duration,
    dry_run: bool,
}

/// A group that is due for deletion.
#[derive(Debug, Clone, PartialEq)]
pub struct StaleGroup {
    /// Grouping key without `job`, sorted by label name.
    pub labels: Vec<(String, String)>,
    /// Seconds since its last successful push.
    pub age_secs: f64,
}

/// A stale group the janitor acted on, with its path (for the log).
#[derive(Debug, Clone, PartialEq)]
pub struct PrunedGroup {
    /// The group's path (`/metrics/job@base64/…`).
    pub path: String,
    /// Seconds since its last successful push.
    pub age_secs: f64,
}

/// What one janitor round did.
#[derive(Debug, Default)]
pub struct JanitorRound {
    /// Groups deleted (or, in dry-run, found stale).
    pub pruned: Vec<PrunedGroup>,
    /// Groups whose DELETE failed, with why.
    pub failed: Vec<(PrunedGroup, PushgatewayError)>,
    /// Whether this was a dry run (nothing deleted).
    pub dry_run: bool,
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
    /// Reading the groups failed.
    #[error("listing the Pushgateway's groups: {0}")]
    List(#[from] PushgatewayError),
    /// The listing is not the JSON the Pushgateway writes.
    #[error("GET {url}: not the Pushgateway's JSON: {message}")]
    Body {
        /// URL.
        url: String,
        /// What went wrong.
        message: String,
    },
}

impl Janitor {
    /// A janitor for `job` groups older than `max_age`.
    pub fn new(client: PushgatewayClient, job: &str, max_age: Duration, dry_run: bool) -> Self {
        Self {
            client,
            job: job.to_string(),
            max_age,
            dry_run,
        }
    }

    /// One pass: lists the groups, deletes (or in dry-run only reports) the stale ones of the
    /// job. A failed DELETE is reported in [`JanitorRound::failed`], not retried.
    pub async fn run_once(&self) -> Result<JanitorRound, JanitorError> {
        let url = format!("{}/api/v1/metrics", self.client.base());
        let body_err = |message: String| JanitorError::Body {
            url: url.clone(),
            message,
        };
        let resp = self.client.list_groups(self.client.timeout()).await?;
        let text = resp.text().await.map_err(|e| body_err(e.to_string()))?;
        let body: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| body_err(format!("not JSON: {e}")))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let stale = stale_groups(&body, &self.job, self.max_age, now);
        let mut round = JanitorRound {
            dry_run: self.dry_run,
            ..JanitorRound::default()
        };
        for group in stale {
            let key = group
                .labels
                .iter()
                .fold(GroupingKey::new(self.job.as_str()), |k, (n, v)| {
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
            match self.client.delete_group(&key).await {
                Ok(()) => round.pruned.push(pruned),
                Err(e) => round.failed.push((pruned, e)),
            }
        }
        Ok(round)
    }
}

/// The groups of `job` in a `/api/v1/metrics` answer whose `push_time_seconds` is older than
/// `max_age` at `now` (Unix seconds). Groups without a readable push time are kept.
pub fn stale_groups(
    body: &serde_json::Value,
    job: &str,
    max_age: Duration,
    now: f64,
) -> Vec<StaleGroup> {
    let Some(groups) = body.get("data").and_then(|d| d.as_array()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for g in groups {
        let Some(labels) = g.get("labels").and_then(|l| l.as_object()) else {
            continue;
        };
        if labels.get("job").and_then(|j| j.as_str()) != Some(job) {
            continue;
        }
        let push_time = g
            .pointer("/push_time_seconds/metrics/0/value")
            .and_then(|v| {
                v.as_str()
                    .and_then(|s| s.parse::<f64>().ok())
                    .or_else(|| v.as_f64())
            });
        let Some(push_time) = push_time else { continue };
        let age = now - push_time;
        if age <= max_age.as_secs_f64() {
            continue;
        }
        let mut key: Vec<(String, String)> = labels
            .iter()
            .filter(|(k, _)| k.as_str() != "job")
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        key.sort();
        out.push(StaleGroup {
            labels: key,
            age_secs: age,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_only_stale_groups_of_the_job() {
        let body = serde_json::json!({"status":"success","data":[
            {"labels":{"job":"openwhisk_actions","instance":"a","namespace":"ns","action":"p/x"},
             "push_time_seconds":{"metrics":[{"labels":{},"value":"1000"}]}},
            {"labels":{"job":"openwhisk_actions","instance":"b"},
             "push_time_seconds":{"metrics":[{"labels":{},"value":"1990"}]}},
            {"labels":{"job":"other","instance":"c"},
             "push_time_seconds":{"metrics":[{"labels":{},"value":"1"}]}},
            {"labels":{"job":"openwhisk_actions","instance":"d"}}
        ]});
        let stale = stale_groups(&body, "openwhisk_actions", Duration::from_secs(60), 2000.0);
        assert_eq!(
            stale,
            vec![StaleGroup {
                labels: vec![
                    ("action".into(), "p/x".into()),
                    ("instance".into(), "a".into()),
                    ("namespace".into(), "ns".into())
                ],
                age_secs: 1000.0
            }]
        );
    }
}
