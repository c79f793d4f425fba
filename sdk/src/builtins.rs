//! The built-in `whisk_*` metrics of the container: each name written once (in [`DEFS`]'s
//! entries below) and updated only through methods named for what happened.
//!
//! Series per container (the Pushgateway stores and Prometheus scrapes every one of them once
//! per live container, so this is the figure to multiply by the container count) — the table
//! in the crate docs lists the same count:
//!
//! | family | series |
//! |---|---|
//! | `whisk_activations_total{status}` | 3 |
//! | `whisk_activation_duration_seconds` (15 buckets + `+Inf`, `_sum`, `_count`) | 18 |
//! | `whisk_cold_start_seconds`, `whisk_container_start_time_seconds`, `whisk_last_activation_time_seconds` | 3 |
//! | `whisk_push_failures_total{reason}` | 5 |
//! | `whisk_last_push_duration_seconds` | 1 |
//! | `whisk_container_info` | 1 |
//! | `whisk_activation_cpu_seconds` (6 buckets + `+Inf`, `_sum`, `_count`) | 9 |
//! | `whisk_activation_memory_peak_bytes` (8 buckets + `+Inf`, `_sum`, `_count`) | 11 |
//! | `whisk_container_memory_bytes`, `whisk_container_memory_limit_bytes`, `whisk_container_cpu_seconds_total`, `whisk_container_cpu_throttled_seconds_total` (each only when readable) | ≤ 4 |
//! | **total** | **≤ 55** (31 without the resource figures) |

use std::sync::Mutex;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    CounterVec, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts,
};

use crate::resources::ContainerSample;

/// Buckets (seconds) of `whisk_activation_duration_seconds`: the platform's time histograms'
/// (one definition for the workspace, in `whisk-grouping`).
pub(crate) use whisk_grouping::TIME_BUCKETS;

/// Buckets (seconds) of `whisk_activation_cpu_seconds`.
const CPU_BUCKETS: [f64; 6] = [0.001, 0.01, 0.1, 1.0, 10.0, 60.0];

/// Buckets (bytes) of `whisk_activation_memory_peak_bytes`: 16 … 2048 MiB.
const MEMORY_BUCKETS: [f64; 8] = [
    16.0 * MIB,
    32.0 * MIB,
    64.0 * MIB,
    128.0 * MIB,
    256.0 * MIB,
    512.0 * MIB,
    1024.0 * MIB,
    2048.0 * MIB,
];
const MIB: f64 = 1024.0 * 1024.0;

/// Name and help of one built-in family.
struct Def {
    name: &'static str,
    help: &'static str,
}

const ACTIVATIONS: Def = Def {
    name: "whisk_activations_total",
    help: "Activations served by this container, by outcome",
};
const ACTIVATION_DURATION: Def = Def {
    name: "whisk_activation_duration_seconds",
    help: "Handler run time per activation",
};
const COLD_START: Def = Def {
    name: "whisk_cold_start_seconds",
    help: "Process start to first result written",
};
const CONTAINER_START: Def = Def {
    name: "whisk_container_start_time_seconds",
    help: "Unix time the process started",
};
const LAST_ACTIVATION: Def = Def {
    name: "whisk_last_activation_time_seconds",
    help: "Unix time the last activation finished",
};
const PUSH_FAILURES: Def = Def {
    name: "whisk_push_failures_total",
    help: "Pushes to the Pushgateway that failed, by reason",
};
const LAST_PUSH_DURATION: Def = Def {
    name: "whisk_last_push_duration_seconds",
    help: "Duration of the last push attempt",
};
const CONTAINER_INFO: Def = Def {
    name: "whisk_container_info",
    help: "identity of the container",
};

const ACTIVATION_CPU: Def = Def {
    name: "whisk_activation_cpu_seconds",
    help: "CPU time (user + system) the process used during each activation",
};
const ACTIVATION_MEMORY_PEAK: Def = Def {
    name: "whisk_activation_memory_peak_bytes",
    help: "Peak resident memory of the process during each activation",
};
const CONTAINER_MEMORY: Def = Def {
    name: "whisk_container_memory_bytes",
    help: "Memory the container uses now (cgroup, else the process RSS)",
};
const CONTAINER_MEMORY_LIMIT: Def = Def {
    name: "whisk_container_memory_limit_bytes",
    help: "Memory limit of the container's cgroup",
};
const CONTAINER_CPU: Def = Def {
    name: "whisk_container_cpu_seconds_total",
    help: "CPU time the container (cgroup, else the process) used since it started",
};
const CONTAINER_THROTTLED: Def = Def {
    name: "whisk_container_cpu_throttled_seconds_total",
    help: "Time the container was throttled by its CPU quota",
};

/// Outcome of one activation, the `status` label of `whisk_activations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The handler returned an object or an array.
    Success,
    /// The handler returned `Err`.
    ApplicationError,
    /// The handler panicked or returned something that is not an object or array.
    DeveloperError,
}

impl Outcome {
    const ALL: [Self; 3] = [Self::Success, Self::ApplicationError, Self::DeveloperError];

    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::ApplicationError => "application_error",
            Self::DeveloperError => "developer_error",
        }
    }
}

/// Why a push failed, the `reason` label of `whisk_push_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushFailure {
    /// Any other 4xx (400 malformed or reserved, 409 type clash, …): the gateway refused the
    /// body; its one-line reason is printed.
    Rejected,
    /// 401 or 403: missing or wrong credentials, or a namespace the key may not push to.
    Unauthorized,
    /// 5xx or any other unexpected status: the gateway (or what is behind it) is unavailable.
    Unavailable,
    /// No answer: connection refused or reset, name not resolved, timed out, or no time left
    /// before the activation's deadline.
    Transport,
    /// The container was frozen while the push was in flight (it ended long after its
    /// timeout): its outcome is unknown, and the next activation pushes again without back-off.
    Frozen,
}

impl PushFailure {
    const ALL: [Self; 5] = [
        Self::Rejected,
        Self::Unauthorized,
        Self::Unavailable,
        Self::Transport,
        Self::Frozen,
    ];

    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Unauthorized => "unauthorized",
            Self::Unavailable => "unavailable",
            Self::Transport => "transport",
            Self::Frozen => "frozen",
        }
    }

    /// The reason an HTTP status other than 200/202 stands for.
    pub(crate) fn of_status(status: u16) -> Self {
        match status {
            401 | 403 => Self::Unauthorized,
            400..=499 => Self::Rejected,
            _ => Self::Unavailable,
        }
    }
}

/// Whether a collector is a histogram (it exposes `_bucket`, `_sum` and `_count` samples).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Counter or gauge: one sample name.
    Plain,
    /// Histogram.
    Histogram,
}

/// A built-in family to register: name, kind and the collector.
pub(crate) type Registration = (&'static str, Kind, Box<dyn Collector>);

/// The built-in per-container metrics.
#[derive(Debug)]
pub(crate) struct Builtins {
    activations: [IntCounter; 3],
    activation_duration: Histogram,
    cold_start: Gauge,
    container_start: Gauge,
    last_activation: Gauge,
    push_failures: [IntCounter; 5],
    last_push_duration: Gauge,
    container_info: GaugeVec,
    action_version: Mutex<Option<String>>,
    activation_cpu: Histogram,
    activation_memory_peak: Histogram,
    // no labels: a family without a child is absent from the exposition, which is what a
    // figure the container cannot read should be
    container_memory: GaugeVec,
    container_memory_limit: GaugeVec,
    container_cpu: CounterVec,
    container_throttled: CounterVec,
    /// Last cgroup (or process) readings of the two counters, to add only the growth.
    last_cpu: Mutex<(Option<f64>, Option<f64>)>,
}

impl Builtins {
    /// The built-ins and the families to register for them.
    // The definitions above are constant, valid names and helps (not external input); the test
    // `every_builtin_is_exposed_with_its_type_and_help` exercises every one of them.
    #[allow(clippy::expect_used)]
    pub(crate) fn new() -> (Self, Vec<Registration>) {
        const VALID: &str = "built-in metric definitions are constant and valid";
        let opts = |d: &Def| Opts::new(d.name, d.help);
        let gauge = |d: &Def| Gauge::with_opts(opts(d)).expect(VALID);
        let activations = IntCounterVec::new(opts(&ACTIVATIONS), &["status"]).expect(VALID);
        let push_failures = IntCounterVec::new(opts(&PUSH_FAILURES), &["reason"]).expect(VALID);
        let activation_duration = Histogram::with_opts(
            HistogramOpts::new(ACTIVATION_DURATION.name, ACTIVATION_DURATION.help)
                .buckets(TIME_BUCKETS.to_vec()),
        )
        .expect(VALID);
        let container_info =
            GaugeVec::new(opts(&CONTAINER_INFO), &["action_version", "sdk_version"]).expect(VALID);
        let histogram = |d: &Def, buckets: &[f64]| {
            Histogram::with_opts(HistogramOpts::new(d.name, d.help).buckets(buckets.to_vec()))
                .expect(VALID)
        };
        let unlabelled_gauge = |d: &Def| GaugeVec::new(opts(d), &[]).expect(VALID);
        let unlabelled_counter = |d: &Def| CounterVec::new(opts(d), &[]).expect(VALID);
        let builtins = Self {
            activations: Outcome::ALL.map(|o| activations.with_label_values(&[o.label()])),
            activation_duration,
            cold_start: gauge(&COLD_START),
            container_start: gauge(&CONTAINER_START),
            last_activation: gauge(&LAST_ACTIVATION),
            push_failures: PushFailure::ALL.map(|r| push_failures.with_label_values(&[r.label()])),
            last_push_duration: gauge(&LAST_PUSH_DURATION),
            container_info: container_info.clone(),
            action_version: Mutex::new(None),
            activation_cpu: histogram(&ACTIVATION_CPU, &CPU_BUCKETS),
            activation_memory_peak: histogram(&ACTIVATION_MEMORY_PEAK, &MEMORY_BUCKETS),
            container_memory: unlabelled_gauge(&CONTAINER_MEMORY),
            container_memory_limit: unlabelled_gauge(&CONTAINER_MEMORY_LIMIT),
            container_cpu: unlabelled_counter(&CONTAINER_CPU),
            container_throttled: unlabelled_counter(&CONTAINER_THROTTLED),
            last_cpu: Mutex::new((None, None)),
        };
        let b = &builtins;
        let registrations: Vec<Registration> = vec![
            (ACTIVATIONS.name, Kind::Plain, Box::new(activations)),
            (
                ACTIVATION_DURATION.name,
                Kind::Histogram,
                Box::new(b.activation_duration.clone()),
            ),
            (COLD_START.name, Kind::Plain, Box::new(b.cold_start.clone())),
            (
                CONTAINER_START.name,
                Kind::Plain,
                Box::new(b.container_start.clone()),
            ),
            (
                LAST_ACTIVATION.name,
                Kind::Plain,
                Box::new(b.last_activation.clone()),
            ),
            (PUSH_FAILURES.name, Kind::Plain, Box::new(push_failures)),
            (
                LAST_PUSH_DURATION.name,
                Kind::Plain,
                Box::new(b.last_push_duration.clone()),
            ),
            (CONTAINER_INFO.name, Kind::Plain, Box::new(container_info)),
            (
                ACTIVATION_CPU.name,
                Kind::Histogram,
                Box::new(b.activation_cpu.clone()),
            ),
            (
                ACTIVATION_MEMORY_PEAK.name,
                Kind::Histogram,
                Box::new(b.activation_memory_peak.clone()),
            ),
            (
                CONTAINER_MEMORY.name,
                Kind::Plain,
                Box::new(b.container_memory.clone()),
            ),
            (
                CONTAINER_MEMORY_LIMIT.name,
                Kind::Plain,
                Box::new(b.container_memory_limit.clone()),
            ),
            (
                CONTAINER_CPU.name,
                Kind::Plain,
                Box::new(b.container_cpu.clone()),
            ),
            (
                CONTAINER_THROTTLED.name,
                Kind::Plain,
                Box::new(b.container_throttled.clone()),
            ),
        ];
        (builtins, registrations)
    }

    /// The action loop started serving (`unix_seconds`: when the process started).
    pub(crate) fn container_started(&self, unix_seconds: f64) {
        self.container_start.set(unix_seconds);
    }

    /// An activation's handler finished with `outcome` after `duration`, at `unix_seconds`.
    pub(crate) fn activation_finished(&self, outcome: Outcome, duration: Duration, now: f64) {
        self.activations[outcome as usize].inc();
        self.activation_duration.observe(duration.as_secs_f64());
        self.last_activation.set(now);
    }

    /// The first result of the process was written `since_start` after it started.
    pub(crate) fn first_result_written(&self, since_start: Duration) {
        self.cold_start.set(since_start.as_secs_f64());
    }

    /// An activation of action version `version` arrived; the info series follows the version.
    pub(crate) fn action_version_seen(&self, version: &str) {
        let mut current = self
            .action_version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.as_deref() == Some(version) {
            return;
        }
        self.container_info.reset();
        if let Ok(g) = self
            .container_info
            .get_metric_with_label_values(&[version, env!("CARGO_PKG_VERSION")])
        {
            g.set(1.0);
        }
        *current = Some(version.to_string());
    }

    /// A push succeeded after `duration`.
    pub(crate) fn push_done(&self, duration: Duration) {
        self.last_push_duration.set(duration.as_secs_f64());
    }

    /// A push failed for `reason` after `duration`.
    pub(crate) fn push_failed(&self, reason: PushFailure, duration: Duration) {
        self.last_push_duration.set(duration.as_secs_f64());
        self.push_failures[reason as usize].inc();
    }

    /// An activation used `cpu` CPU time and reached `peak_bytes` resident memory (each when
    /// known).
    pub(crate) fn activation_used(&self, cpu: Option<Duration>, peak_bytes: Option<f64>) {
        if let Some(cpu) = cpu {
            self.activation_cpu.observe(cpu.as_secs_f64());
        }
        if let Some(peak) = peak_bytes {
            self.activation_memory_peak.observe(peak);
        }
    }

    /// The container's figures were read: gauges follow them, counters grow by the increase
    /// since the last reading; a figure that cannot be read is removed.
    pub(crate) fn container_sampled(&self, sample: &ContainerSample) {
        set_or_remove(&self.container_memory, sample.memory_bytes);
        set_or_remove(&self.container_memory_limit, sample.memory_limit_bytes);
        let mut last = self
            .last_cpu
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        grow(&self.container_cpu, &mut last.0, sample.cpu_seconds);
        grow(
            &self.container_throttled,
            &mut last.1,
            sample.cpu_throttled_seconds,
        );
    }

    /// Activations counted with `outcome` so far (tests).
    #[cfg(test)]
    pub(crate) fn activations(&self, outcome: Outcome) -> u64 {
        self.activations[outcome as usize].get()
    }

    /// Push failures counted with `reason` so far (tests).
    #[cfg(test)]
    pub(crate) fn push_failures(&self, reason: PushFailure) -> u64 {
        self.push_failures[reason as usize].get()
    }
}

fn set_or_remove(gauge: &GaugeVec, value: Option<f64>) {
    match value {
        Some(v) => {
            if let Ok(g) = gauge.get_metric_with_label_values::<&str>(&[]) {
                g.set(v);
            }
        }
        None => gauge.reset(),
    }
}

/// Adds the growth of a cumulative reading to `counter` (the first reading in full). A reading
/// that went down (a counter reset under us) starts over from it.
fn grow(counter: &CounterVec, last: &mut Option<f64>, now: Option<f64>) {
    let Some(now) = now else { return };
    let delta = match *last {
        Some(prev) if now >= prev => now - prev,
        _ => now,
    };
    if let Ok(c) = counter.get_metric_with_label_values::<&str>(&[]) {
        c.inc_by(delta);
    }
    *last = Some(now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Metrics;

    fn text(m: &Metrics) -> String {
        let mut buf = Vec::new();
        m.encode(&mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn every_builtin_is_exposed_with_its_type_and_help() {
        let m = Metrics::new();
        m.builtins.push_done(Duration::from_millis(2));
        m.builtins.activation_finished(
            Outcome::Success,
            Duration::from_millis(20),
            1_700_000_000.0,
        );
        m.builtins.action_version_seen("0.0.1");
        m.builtins
            .activation_used(Some(Duration::from_millis(5)), Some(40.0 * MIB));
        let t = text(&m);
        for line in [
            "# HELP whisk_activations_total Activations served by this container, by outcome",
            "# TYPE whisk_activations_total counter",
            "whisk_activations_total{status=\"success\"} 1",
            "whisk_activations_total{status=\"application_error\"} 0",
            "whisk_activations_total{status=\"developer_error\"} 0",
            "# HELP whisk_activation_duration_seconds Handler run time per activation",
            "# TYPE whisk_activation_duration_seconds histogram",
            "whisk_activation_duration_seconds_bucket{le=\"0.025\"} 1",
            "whisk_activation_duration_seconds_bucket{le=\"300\"} 1",
            "# TYPE whisk_cold_start_seconds gauge",
            "# HELP whisk_cold_start_seconds Process start to first result written",
            "# HELP whisk_container_start_time_seconds Unix time the process started",
            "# HELP whisk_last_activation_time_seconds Unix time the last activation finished",
            "whisk_last_activation_time_seconds 1700000000",
            "# HELP whisk_push_failures_total Pushes to the Pushgateway that failed, by reason",
            "# TYPE whisk_push_failures_total counter",
            "whisk_push_failures_total{reason=\"rejected\"} 0",
            "whisk_push_failures_total{reason=\"unauthorized\"} 0",
            "whisk_push_failures_total{reason=\"unavailable\"} 0",
            "whisk_push_failures_total{reason=\"transport\"} 0",
            "# HELP whisk_last_push_duration_seconds Duration of the last push attempt",
            "# TYPE whisk_last_push_duration_seconds gauge",
            "whisk_last_push_duration_seconds 0.002",
            "# HELP whisk_container_info identity of the container",
            "whisk_container_info{action_version=\"0.0.1\",sdk_version=\"0.1.0\"} 1",
            "# HELP whisk_activation_cpu_seconds CPU time (user + system) the process used during each activation",
            "# TYPE whisk_activation_cpu_seconds histogram",
            "whisk_activation_cpu_seconds_bucket{le=\"0.01\"} 1",
            "# TYPE whisk_activation_memory_peak_bytes histogram",
            "whisk_activation_memory_peak_bytes_bucket{le=\"67108864\"} 1",
            "whisk_activation_memory_peak_bytes_bucket{le=\"33554432\"} 0",
        ] {
            assert!(
                t.lines().any(|l| l == line),
                "missing line {line:?} in\n{t}"
            );
        }
    }

    #[test]
    fn builtins_stay_within_the_series_budget_stated_in_the_docs() {
        let m = Metrics::new();
        m.builtins.action_version_seen("1");
        let series = |m: &Metrics| text(m).lines().filter(|l| !l.starts_with('#')).count();
        // without any resource figure readable: 31 + the two activation histograms (20)
        assert_eq!(series(&m), 51, "{}", text(&m));
        m.builtins.container_sampled(&ContainerSample {
            memory_bytes: Some(1.0),
            memory_limit_bytes: Some(2.0),
            cpu_seconds: Some(3.0),
            cpu_throttled_seconds: Some(0.0),
        });
        assert_eq!(series(&m), 55, "{}", text(&m));
    }

    #[test]
    fn container_counters_grow_by_the_increase_and_unreadable_gauges_disappear() {
        let m = Metrics::new();
        let sample = |cpu, memory| ContainerSample {
            memory_bytes: memory,
            memory_limit_bytes: None,
            cpu_seconds: Some(cpu),
            cpu_throttled_seconds: None,
        };
        m.builtins.container_sampled(&sample(10.0, Some(5.0)));
        m.builtins.container_sampled(&sample(12.5, Some(6.0)));
        let t = text(&m);
        assert!(
            t.contains("\nwhisk_container_cpu_seconds_total 12.5\n"),
            "{t}"
        );
        assert!(t.contains("\nwhisk_container_memory_bytes 6\n"), "{t}");
        assert!(!t.contains("whisk_container_memory_limit_bytes"), "{t}");
        assert!(
            !t.contains("whisk_container_cpu_throttled_seconds_total"),
            "{t}"
        );
        m.builtins.container_sampled(&sample(13.0, None));
        let t = text(&m);
        assert!(!t.contains("whisk_container_memory_bytes"), "{t}");
        assert!(
            t.contains("\nwhisk_container_cpu_seconds_total 13\n"),
            "{t}"
        );
    }

    #[test]
    fn a_new_action_version_replaces_the_info_series() {
        let m = Metrics::new();
        m.builtins.action_version_seen("1");
        m.builtins.action_version_seen("2");
        let t = text(&m);
        assert!(t.contains("action_version=\"2\""), "{t}");
        assert!(!t.contains("action_version=\"1\""), "{t}");
    }

    #[test]
    fn push_failure_reasons_follow_the_http_status() {
        assert_eq!(PushFailure::of_status(400), PushFailure::Rejected);
        assert_eq!(PushFailure::of_status(409), PushFailure::Rejected);
        assert_eq!(PushFailure::of_status(401), PushFailure::Unauthorized);
        assert_eq!(PushFailure::of_status(403), PushFailure::Unauthorized);
        assert_eq!(PushFailure::of_status(503), PushFailure::Unavailable);
        assert_eq!(PushFailure::of_status(302), PushFailure::Unavailable);
    }
}
