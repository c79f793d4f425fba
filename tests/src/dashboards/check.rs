//! Running dashboard queries against a real Prometheus (`/api/v1/query`).

use std::time::Duration;

use serde_json::Value;

use super::error::DashboardError;
use super::model::{Query, load_dashboards, repo_dashboards_dir};
use super::vars::{Vars, substitute};

/// What Prometheus answered to one instant query.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryOutcome {
    /// Accepted, with this many series (or 1 for a scalar) of which at least one is a number.
    Data(usize),
    /// Accepted, but every value is NaN (Grafana would show NaN).
    OnlyNaN(usize),
    /// Accepted, with no result: Grafana would show "No data".
    Empty,
    /// Rejected, e.g. `bad_data` for a parse error (HTTP 400).
    Rejected {
        /// Prometheus' `errorType`.
        error_type: String,
        /// Prometheus' `error`.
        error: String,
    },
}

/// Counts of a successful check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckSummary {
    /// Queries run.
    pub queries: usize,
    /// Queries that returned at least one non-NaN value.
    pub with_data: usize,
}

/// Runs one instant query at the current time. Errors only when Prometheus cannot be reached
/// or answers something that is not its API's JSON; a rejected query is an `Ok` outcome.
pub fn run_instant_query(
    prometheus_url: &str,
    promql: &str,
) -> Result<QueryOutcome, DashboardError> {
    let url = format!("{}/api/v1/query", prometheus_url.trim_end_matches('/'));
    let http = |message: String| DashboardError::Http {
        url: url.clone(),
        message,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .get(&url)
        .query("query", promql)
        .call()
        .map_err(|e| http(e.to_string()))?;
    let status = resp.status();
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| http(e.to_string()))?;
    let json: Value = serde_json::from_str(&body)
        .map_err(|e| http(format!("status {status}, body is not JSON ({e}): {body}")))?;
    if json.get("status").and_then(Value::as_str) != Some("success") {
        let field = |k: &str| {
            json.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        return Ok(QueryOutcome::Rejected {
            error_type: field("errorType"),
            error: field("error"),
        });
    }
    let data = json.get("data").cloned().unwrap_or(Value::Null);
    let values: Vec<&str> = match data.get("resultType").and_then(Value::as_str) {
        Some("scalar") | Some("string") => data
            .pointer("/result/1")
            .and_then(Value::as_str)
            .into_iter()
            .collect(),
        Some("matrix") => data
            .get("result")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|s| {
                s.get("values")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .filter_map(|v| v.get(1).and_then(Value::as_str))
            .collect(),
        _ => data
            .get("result")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.pointer("/value/1").and_then(Value::as_str))
            .collect(),
    };
    if values.is_empty() {
        return Ok(QueryOutcome::Empty);
    }
    let series = match data.get("result") {
        Some(Value::Array(a))
            if data.get("resultType").and_then(Value::as_str) != Some("scalar") =>
        {
            a.len()
        }
        _ => 1,
    };
    if values.iter().all(|v| v.eq_ignore_ascii_case("nan")) {
        return Ok(QueryOutcome::OnlyNaN(series));
    }
    Ok(QueryOutcome::Data(series))
}

/// Substitutes `vars` into every query and runs it. Rejected queries (and unknown variables)
/// always fail; with `require_data`, empty and all-NaN results fail too. All failures are
/// collected into one [`DashboardError::Queries`].
pub fn check_queries(
    prometheus_url: &str,
    queries: &[Query],
    vars: &Vars,
    require_data: bool,
) -> Result<CheckSummary, DashboardError> {
    let mut failures = Vec::new();
    let mut with_data = 0;
    for q in queries {
        let expr = match substitute(&q.expr, vars) {
            Ok(e) => e,
            Err(e) => {
                failures.push(format!("{q}: {e}"));
                continue;
            }
        };
        match run_instant_query(prometheus_url, &expr)? {
            QueryOutcome::Data(_) => with_data += 1,
            QueryOutcome::Rejected { error_type, error } => {
                failures.push(format!("{q}: rejected ({error_type}: {error}): {expr}"));
            }
            QueryOutcome::Empty if require_data => {
                failures.push(format!("{q}: no data: {expr}"));
            }
            QueryOutcome::OnlyNaN(n) if require_data => {
                failures.push(format!("{q}: only NaN in {n} series: {expr}"));
            }
            QueryOutcome::Empty | QueryOutcome::OnlyNaN(_) => {}
        }
    }
    if failures.is_empty() {
        Ok(CheckSummary {
            queries: queries.len(),
            with_data,
        })
    } else {
        Err(DashboardError::Queries {
            checked: queries.len(),
            failures,
        })
    }
}

fn repo_queries() -> Result<Vec<Query>, DashboardError> {
    let dir = repo_dashboards_dir().join("grafana").join("dashboards");
    let mut all = Vec::new();
    for d in load_dashboards(&dir)? {
        all.extend(d.queries()?);
    }
    Ok(all)
}

/// Every query of the repository's dashboards (panel targets and variable queries) is
/// accepted by the Prometheus at `prometheus_url` once `vars` are substituted.
pub fn check_all_queries_parse(
    prometheus_url: &str,
    vars: &Vars,
) -> Result<CheckSummary, DashboardError> {
    check_queries(prometheus_url, &repo_queries()?, vars, false)
}

/// Every query of the repository's dashboards returns at least one non-NaN value from the
/// Prometheus at `prometheus_url` (an instant query at the current time), so no panel would
/// show "No data". Call it after the end-to-end load, once Prometheus has scraped at least
/// twice since the last push, with `vars` naming a namespace and action that ran and a
/// `$__rate_interval` / `$__range` that cover the load, e.g.
/// `Vars::new().with("namespace", "guest").with("action", "hello").with_rate_interval_secs(300)`.
/// The error lists every failing query.
pub fn check_all_queries_return_data(
    prometheus_url: &str,
    vars: &Vars,
) -> Result<CheckSummary, DashboardError> {
    check_queries(prometheus_url, &repo_queries()?, vars, true)
}
