//! Deletes stale groups of the SDK's job from the Pushgateway.
//!
//! The Pushgateway never forgets a group, and every push gets slower with each group stored.
//! Every `--prune-interval` the janitor reads `/api/v1/metrics` and DELETEs each group of
//! `--prune-job` whose `push_time_seconds` is older than `--prune-after`, rebuilding the exact
//! grouping key (every label `@base64`). Groups of other jobs are never touched.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::sink::pushgateway::{PushgatewayClient, group_path};

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

/// Why a janitor run failed.
#[derive(Debug, thiserror::Error)]
pub enum JanitorError {
    /// Reading the groups failed.
    #[error("GET {url}: {message}")]
    List {
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
    /// job. Returns how many were pruned; a failed DELETE is logged and not counted.
    pub async fn run_once(&self) -> Result<u64, JanitorError> {
        let url = format!("{}/api/v1/metrics", self.client.base());
        let list_err = |message: String| JanitorError::List {
            url: url.clone(),
            message,
        };
        let resp = self
            .client
            .request(reqwest::Method::GET, "/api/v1/metrics")
            .send()
            .await
            .map_err(|e| list_err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(list_err(format!("status {}", resp.status())));
        }
        let text = resp.text().await.map_err(|e| list_err(e.to_string()))?;
        let body: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| list_err(format!("not JSON: {e}")))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let stale = stale_groups(&body, &self.job, self.max_age, now);
        let mut pruned = 0;
        for group in stale {
            let labels: Vec<(&str, &str)> = group
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let path = group_path(&self.job, &labels);
            if self.dry_run {
                tracing::info!(
                    path,
                    age_secs = group.age_secs,
                    "dry run: would delete stale group"
                );
                pruned += 1;
                continue;
            }
            match self
                .client
                .request(reqwest::Method::DELETE, &path)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(path, age_secs = group.age_secs, "deleted stale group");
                    pruned += 1;
                }
                Ok(r) => {
                    tracing::warn!(path, status = %r.status(), "DELETE of stale group refused")
                }
                Err(e) => tracing::warn!(path, "DELETE of stale group failed: {e}"),
            }
        }
        Ok(pruned)
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
