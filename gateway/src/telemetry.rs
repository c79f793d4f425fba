//! The gateway's own metrics (`whisk_gateway_*`, docs/design.md), served on `/metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Forward-duration buckets (seconds).
const FORWARD_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Handles to every own metric.
#[derive(Debug, Clone)]
pub(crate) struct Telemetry {
    registry: Registry,
    requests: IntCounterVec,
    /// Auth decisions answered from the cache.
    pub auth_cache_hits: IntCounter,
    /// Auth decisions that needed the controller.
    pub auth_cache_misses: IntCounter,
    /// Keys in the auth cache.
    pub auth_cache_entries: IntGauge,
    /// Push bodies validated from a remembered verdict (no parse).
    pub validation_cache_hits: IntCounter,
    /// Push bodies parsed in full.
    pub validation_cache_misses: IntCounter,
    /// Shapes held in the validation cache.
    pub validation_cache_entries: IntGauge,
    controller_requests: IntCounterVec,
    /// 1 when `--auth none`.
    pub auth_disabled: IntGauge,
    forward_duration: HistogramVec,
    forwarded: IntCounterVec,
    /// Names in the family → type table.
    pub known_families: IntGauge,
    resyncs: IntCounterVec,
    first_sight: IntCounterVec,
    /// Configured shards.
    pub shards: IntGauge,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// The registry behind `/metrics`, for metrics registered elsewhere (the listener's, the
    /// remote-write backend's).
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers every metric in a fresh registry.
    // The names and labels below are constants; registering them cannot fail.
    #[allow(clippy::expect_used)]
    pub(crate) fn new() -> Self {
        const VALID: &str = "constant metric definitions are valid and unique";
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| registry.register(c).expect(VALID);
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let v = IntCounterVec::new(Opts::new(name, help), labels).expect(VALID);
            reg(Box::new(v.clone()));
            v
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect(VALID);
            reg(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect(VALID);
            reg(Box::new(g.clone()));
            g
        };
        let forward_duration = HistogramVec::new(
            HistogramOpts::new(
                "whisk_gateway_forward_duration_seconds",
                "Duration of forwarded PUT/DELETE requests to a Pushgateway, by shard",
            )
            .buckets(FORWARD_BUCKETS.to_vec()),
            &["shard"],
        )
        .expect(VALID);
        reg(Box::new(forward_duration.clone()));
        Self {
            requests: counter_vec(
                "whisk_gateway_requests_total",
                "Push API requests by method, result (forwarded, rejected, failed) and reason",
                &["method", "result", "reason"],
            ),
            auth_cache_hits: counter(
                "whisk_gateway_auth_cache_hits_total",
                "Auth decisions answered from the cache",
            ),
            auth_cache_misses: counter(
                "whisk_gateway_auth_cache_misses_total",
                "Auth decisions that asked the controller",
            ),
            auth_cache_entries: gauge(
                "whisk_gateway_auth_cache_entries",
                "Keys held (hashed) in the auth cache",
            ),
            validation_cache_hits: counter(
                "whisk_gateway_validation_cache_hits_total",
                "Push bodies validated from the verdict of an earlier body of the same shape (no parse)",
            ),
            validation_cache_misses: counter(
                "whisk_gateway_validation_cache_misses_total",
                "Push bodies parsed in full (shape not held, or not cacheable)",
            ),
            validation_cache_entries: gauge(
                "whisk_gateway_validation_cache_entries",
                "Body shapes held in the validation cache",
            ),
            controller_requests: counter_vec(
                "whisk_gateway_controller_requests_total",
                "Requests to the controller's GET /api/v1/namespaces by result (ok, refused, unavailable)",
                &["result"],
            ),
            auth_disabled: gauge(
                "whisk_gateway_auth_disabled",
                "1 when the gateway runs with --auth none (anyone may push any namespace)",
            ),
            forward_duration,
            forwarded: counter_vec(
                "whisk_gateway_forwarded_total",
                "Requests forwarded to a Pushgateway by shard and answer code (`error`: no answer)",
                &["shard", "code"],
            ),
            known_families: gauge(
                "whisk_gateway_known_families",
                "Family names in the cluster-wide family -> type table",
            ),
            resyncs: counter_vec(
                "whisk_gateway_family_resyncs_total",
                "Rebuilds of the family table from a Pushgateway by result (ok, failed)",
                &["result"],
            ),
            first_sight: counter_vec(
                "whisk_gateway_first_sight_reads_total",
                "First-sight reads of a shard's listing for pushes with a family name new to this \
                 replica, by result (read; shared: served by a read under way; failed), and pushes \
                 that stopped waiting for theirs (timeout)",
                &["result"],
            ),
            shards: gauge("whisk_gateway_shards", "Configured Pushgateway shards"),
            registry,
        }
    }

    /// Counts one push API request.
    pub(crate) fn request(&self, method: &str, result: &str, reason: &str) {
        self.requests
            .with_label_values(&[method, result, reason])
            .inc();
    }

    /// Counts one controller request.
    pub(crate) fn controller(&self, result: &str) {
        self.controller_requests.with_label_values(&[result]).inc();
    }

    /// Records one forwarded request.
    pub(crate) fn forward(&self, shard: usize, code: Option<u16>, seconds: f64) {
        let shard = shard.to_string();
        let code = code.map_or_else(|| "error".to_string(), |c| c.to_string());
        self.forward_duration
            .with_label_values(&[shard.as_str()])
            .observe(seconds);
        self.forwarded
            .with_label_values(&[shard.as_str(), code.as_str()])
            .inc();
    }

    /// Counts one family-table rebuild from a Pushgateway.
    pub(crate) fn resync(&self, ok: bool) {
        self.resyncs
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
    }

    /// Counts one first-sight outcome (a read of a shard's listing, or a push that stopped
    /// waiting for one; docs/design.md, "First sight").
    pub(crate) fn first_sight(&self, outcome: &str) {
        self.first_sight.with_label_values(&[outcome]).inc();
    }

    /// The text exposition of every own metric.
    pub(crate) fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!("encoding own metrics failed: {e}");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}
