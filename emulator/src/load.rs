//! The load generator: a deterministic plan (steady rate, weighted action mix, periodic bursts,
//! parameters picked from per-action choices) run against an [`Invoker`] by a bounded set of
//! worker threads, with a progress callback and a summary.
//!
//! The plan is generated up front from a seed, so a test can compute what the actions were asked
//! to do (e.g. the total `items` ordered) before running it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::pool::{ActivationRecord, Invocation, Invoker};

/// What load to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSpec {
    /// Steady activations per second (0 = bursts only).
    pub rate: f64,
    /// How long to generate load.
    pub duration: Duration,
    /// Actions and their weights.
    pub mix: Vec<(String, u32)>,
    /// Parameter choices per action (one is picked at random per request); `{}` when absent.
    pub params: BTreeMap<String, Vec<Value>>,
    /// A burst every this long (none when `None`).
    pub burst_every: Option<Duration>,
    /// Requests per burst, all submitted at once.
    pub burst_size: usize,
    /// Seed of the plan's random choices.
    pub seed: u64,
}

impl LoadSpec {
    /// 10/s for 30 s over `actions` with equal weights, no bursts, seed 1.
    pub fn new(actions: &[String]) -> Self {
        Self {
            rate: 10.0,
            duration: Duration::from_secs(30),
            mix: actions.iter().map(|a| (a.clone(), 1)).collect(),
            params: BTreeMap::new(),
            burst_every: None,
            burst_size: 0,
            seed: 1,
        }
    }
}

/// Parameter choices that exercise the example actions (by the last segment of the action's
/// name): `hello`, `orders` (three regions) and `flaky` (mostly ok, some errors, panics, short
/// sleeps and a 1.5 s sleep). Other actions get `{}`.
pub fn example_params(action: &str) -> Vec<Value> {
    match action.rsplit('/').next().unwrap_or(action) {
        "hello" => vec![json!({"name": "demo"}), json!({"name": "OpenWhisk"})],
        "orders" => vec![
            json!({"items": 1, "value": 12.5, "region": "eu"}),
            json!({"items": 3, "value": 99.0, "region": "us"}),
            json!({"items": 2, "value": 40.0, "region": "apac"}),
        ],
        "flaky" => {
            let mut v = vec![json!({"mode": "ok"}); 6];
            v.extend([
                json!({"mode": "error"}),
                json!({"mode": "panic"}),
                json!({"mode": "sleep", "sleep_ms": 150}),
                // Past a 1 s time limit (`--action-timeout flaky=1s`): a developer error.
                json!({"mode": "sleep", "sleep_ms": 1500}),
            ]);
            v
        }
        _ => vec![json!({})],
    }
}

/// One request of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRequest {
    /// When to submit it, from the start.
    pub at: Duration,
    /// Action name.
    pub action: String,
    /// Its parameters.
    pub params: Value,
}

/// The requests to submit, in time order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadPlan {
    /// Requests sorted by `at`.
    pub requests: Vec<PlannedRequest>,
}

impl LoadPlan {
    /// Generates the plan of `spec` (deterministic for a given seed).
    pub fn generate(spec: &LoadSpec) -> Self {
        let mut rng = fastrand::Rng::with_seed(spec.seed);
        let total_weight: u64 = spec.mix.iter().map(|(_, w)| u64::from(*w)).sum();
        let pick = |rng: &mut fastrand::Rng, at: Duration| -> Option<PlannedRequest> {
            if total_weight == 0 {
                return None;
            }
            let mut x = rng.u64(..total_weight);
            let action = spec.mix.iter().find(|(_, w)| {
                let w = u64::from(*w);
                if x < w {
                    true
                } else {
                    x -= w;
                    false
                }
            })?;
            let params = match spec.params.get(&action.0) {
                Some(choices) if !choices.is_empty() => choices[rng.usize(..choices.len())].clone(),
                _ => json!({}),
            };
            Some(PlannedRequest {
                at,
                action: action.0.clone(),
                params,
            })
        };
        let mut requests = Vec::new();
        if spec.rate > 0.0 && spec.rate.is_finite() {
            let step = Duration::from_secs_f64(1.0 / spec.rate);
            let mut at = Duration::ZERO;
            while at < spec.duration {
                requests.extend(pick(&mut rng, at));
                at += step;
            }
        }
        if let Some(every) = spec.burst_every.filter(|e| !e.is_zero()) {
            let mut at = every;
            while at < spec.duration {
                for _ in 0..spec.burst_size {
                    requests.extend(pick(&mut rng, at));
                }
                at += every;
            }
        }
        requests.sort_by_key(|r| r.at);
        Self { requests }
    }

    /// Requests per action.
    pub fn count_by_action(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for r in &self.requests {
            *m.entry(r.action.clone()).or_insert(0) += 1;
        }
        m
    }
}

/// Progress while a plan runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Since the start.
    pub elapsed: Duration,
    /// Requests in the plan.
    pub planned: u64,
    /// Requests submitted so far.
    pub submitted: u64,
    /// Requests answered (completed or rejected).
    pub answered: u64,
}

/// Totals of a finished run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadSummary {
    /// Wall time.
    pub elapsed: Duration,
    /// Requests submitted.
    pub submitted: u64,
    /// Activations completed (any status).
    pub completed: u64,
    /// Requests rejected by the namespace limit.
    pub rejected: u64,
    /// Requests that failed in the emulator itself (unknown action).
    pub failed: u64,
    /// Completed activations per action and status code.
    pub by_action: BTreeMap<String, [u64; 4]>,
    /// Every completed activation (logs included) with the index of its request in the plan.
    pub records: Vec<(usize, ActivationRecord)>,
    /// Whether it stopped early (stop flag).
    pub interrupted: bool,
}

impl LoadSummary {
    /// Human-readable summary lines.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{} requests in {:.1}s: {} activations, {} rejected (ConcurrentRateLimit), {} failed{}\n",
            self.submitted,
            self.elapsed.as_secs_f64(),
            self.completed,
            self.rejected,
            self.failed,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        s.push_str(&format!(
            "{:<24} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            "action", "total", "success", "app_err", "dev_err", "whisk_err"
        ));
        for (a, st) in &self.by_action {
            s.push_str(&format!(
                "{:<24} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
                a,
                st.iter().sum::<u64>(),
                st[0],
                st[1],
                st[2],
                st[3]
            ));
        }
        s
    }
}

/// Longest time the run waits for answers after the last submission.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);

/// Runs `plan` against `invoker` with `workers` threads (the most requests in flight), calling
/// `on_tick` about once a second. Setting `stop` ends submission early; requests already
/// submitted are still answered.
pub fn run_plan(
    invoker: &Invoker,
    plan: &LoadPlan,
    workers: usize,
    stop: &AtomicBool,
    mut on_tick: impl FnMut(&Progress),
) -> LoadSummary {
    let start = Instant::now();
    let summary = Mutex::new(LoadSummary::default());
    let answered = AtomicU64::new(0);
    let (tx, rx) = mpsc::channel::<(Instant, usize, &PlannedRequest)>();
    let rx = Mutex::new(rx);
    let planned = plan.requests.len() as u64;
    let mut submitted = 0u64;
    let mut last_tick = Instant::now();
    let mut tick = |submitted: u64, answered: u64, force: bool| {
        if force || last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            on_tick(&Progress {
                elapsed: start.elapsed(),
                planned,
                submitted,
                answered,
            });
        }
    };

    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| {
                loop {
                    let next = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok((submitted_at, index, req)) = next else {
                        return;
                    };
                    let outcome = invoker.invoke(&req.action, req.params.clone(), submitted_at);
                    if let Ok(mut sum) = summary.lock() {
                        match outcome {
                            Ok(Invocation::Completed(rec)) => {
                                sum.completed += 1;
                                let e = sum.by_action.entry(rec.action.clone()).or_insert([0; 4]);
                                e[usize::from(rec.status_code.min(3))] += 1;
                                sum.records.push((index, rec));
                            }
                            Ok(Invocation::Rejected { .. }) => sum.rejected += 1,
                            Err(e) => {
                                sum.failed += 1;
                                tracing::warn!("request for {} failed: {e}", req.action);
                            }
                        }
                    }
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            });
        }

        let mut interrupted = false;
        for (index, req) in plan.requests.iter().enumerate() {
            loop {
                if stop.load(Ordering::SeqCst) {
                    interrupted = true;
                    break;
                }
                let now = start.elapsed();
                if now >= req.at {
                    break;
                }
                std::thread::sleep((req.at - now).min(Duration::from_millis(50)));
                tick(submitted, answered.load(Ordering::SeqCst), false);
            }
            if interrupted {
                break;
            }
            if tx.send((Instant::now(), index, req)).is_err() {
                break;
            }
            submitted += 1;
        }
        drop(tx);
        let drain_start = Instant::now();
        while answered.load(Ordering::SeqCst) < submitted && drain_start.elapsed() < DRAIN_LIMIT {
            std::thread::sleep(Duration::from_millis(20));
            tick(submitted, answered.load(Ordering::SeqCst), false);
        }
        tick(submitted, answered.load(Ordering::SeqCst), true);
        if let Ok(mut sum) = summary.lock() {
            sum.interrupted = interrupted;
        }
    });

    let mut sum = summary
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    sum.submitted = submitted;
    sum.elapsed = start.elapsed();
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    // Durations are spelled as everywhere in the project (docs/design.md): one parser.
    use whisk_grouping::parse_duration;

    fn spec() -> LoadSpec {
        let mut s = LoadSpec::new(&["guest/hello".into(), "guest/orders".into()]);
        s.rate = 20.0;
        s.duration = Duration::from_secs(2);
        s.mix = vec![("guest/hello".into(), 3), ("guest/orders".into(), 1)];
        s.params.insert(
            "guest/orders".into(),
            vec![json!({"items": 2}), json!({"items": 5})],
        );
        s.burst_every = Some(Duration::from_millis(500));
        s.burst_size = 4;
        s
    }

    #[test]
    fn plan_has_the_rate_plus_bursts_in_time_order() {
        let plan = LoadPlan::generate(&spec());
        // 40 steady (2 s at 20/s) + 3 bursts (0.5, 1.0, 1.5 s) of 4.
        assert_eq!(plan.requests.len(), 40 + 12);
        assert!(plan.requests.windows(2).all(|w| w[0].at <= w[1].at));
        assert_eq!(
            plan.requests
                .iter()
                .filter(|r| r.at == Duration::from_millis(500))
                .count(),
            4 + 1
        );
    }

    #[test]
    fn plan_is_deterministic_and_follows_the_weights_and_choices() {
        let a = LoadPlan::generate(&spec());
        assert_eq!(a, LoadPlan::generate(&spec()));
        let counts = a.count_by_action();
        let (h, o) = (counts["guest/hello"], counts["guest/orders"]);
        assert_eq!(h + o, 52);
        assert!(h > o, "weights 3:1 gave {h}:{o}");
        assert!(
            a.requests
                .iter()
                .filter(|r| r.action == "guest/orders")
                .all(|r| r.params["items"] == 2 || r.params["items"] == 5)
        );
        assert!(
            a.requests
                .iter()
                .filter(|r| r.action == "guest/hello")
                .all(|r| r.params == json!({}))
        );
        let mut other = spec();
        other.seed = 2;
        assert_ne!(a, LoadPlan::generate(&other));
    }

    #[test]
    fn durations_accept_the_design_formats() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn example_params_cover_the_example_actions() {
        assert_eq!(example_params("guest/hello")[0]["name"], "demo");
        assert!(
            example_params("orders")
                .iter()
                .all(|p| p["region"].is_string())
        );
        let flaky = example_params("/guest/flaky");
        for mode in ["ok", "error", "panic", "sleep"] {
            assert!(flaky.iter().any(|p| p["mode"] == mode), "{mode}");
        }
        assert_eq!(example_params("guest/other"), vec![json!({})]);
    }
}
