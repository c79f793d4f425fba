//! `orders`: places an order and records business metrics by region.

use serde_json::{Value, json};
use whisk_metrics::{HistogramVec, IntCounterVec};

use crate::params::{self, ParamError};
use crate::work::Work;

/// Buckets of `orders_value` (currency units).
pub const VALUE_BUCKETS: [f64; 8] = [1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0];

/// Longest accepted `region` (the label's cardinality is the caller's to keep small).
const MAX_REGION_LEN: usize = 32;

/// The `orders` action and its metrics `orders_placed_total`, `orders_items_total`,
/// `orders_value`, each labelled by `region`.
#[derive(Debug, Clone)]
pub struct Orders {
    placed: IntCounterVec,
    items: IntCounterVec,
    value: HistogramVec,
}

impl Orders {
    /// Registers the three metrics in the SDK's registry (once per process).
    pub fn register() -> Result<Self, whisk_metrics::Error> {
        Ok(Self::with_metrics(
            whisk_metrics::counter_vec("orders_placed_total", "Orders placed", &["region"])?,
            whisk_metrics::counter_vec("orders_items_total", "Items ordered", &["region"])?,
            whisk_metrics::histogram_vec(
                "orders_value",
                "Value of each order",
                &["region"],
                &VALUE_BUCKETS,
            )?,
        ))
    }

    /// Uses existing metrics (tests).
    pub fn with_metrics(placed: IntCounterVec, items: IntCounterVec, value: HistogramVec) -> Self {
        Self {
            placed,
            items,
            value,
        }
    }

    /// `{"items": n (default 1), "value": x (default 10.0), "region": r (default "eu"),
    /// "work": {"mib": n, "cpu_ms": n} (optional)}` → `{"order_id": "<order_id_seed>", "items":
    /// n}`. With `work`, the order first allocates `mib` MiB (every page touched) and burns
    /// `cpu_ms` ms of CPU ([`Work`]). Invalid parameters are an error and record nothing.
    pub fn handle(&self, params: &Value, order_id: &str) -> Result<Value, ParamError> {
        let items = params::count(params, "items", 1)?;
        let value = params::amount(params, "value", 10.0)?;
        let region = params::string(params, "region", "eu")?;
        if region.is_empty()
            || region.len() > MAX_REGION_LEN
            || !region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ParamError(format!(
                "parameter `region` must be 1-{MAX_REGION_LEN} characters of [A-Za-z0-9_-], got {region:?}"
            )));
        }
        if let Some(work) = Work::from_params(params)? {
            work.run();
        }
        self.placed.with_label_values(&[region]).inc();
        self.items.with_label_values(&[region]).inc_by(items);
        self.value.with_label_values(&[region]).observe(value);
        Ok(json!({ "order_id": order_id, "items": items }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{HistogramOpts, Opts};

    fn orders() -> Orders {
        Orders::with_metrics(
            IntCounterVec::new(Opts::new("orders_placed_total", "p"), &["region"]).unwrap(),
            IntCounterVec::new(Opts::new("orders_items_total", "i"), &["region"]).unwrap(),
            HistogramVec::new(HistogramOpts::new("orders_value", "v"), &["region"]).unwrap(),
        )
    }

    #[test]
    fn records_placed_items_and_value_by_region() {
        let o = orders();
        let r = o
            .handle(&json!({"items": 3, "value": 42.5, "region": "us"}), "ord-1")
            .unwrap();
        assert_eq!(r, json!({"order_id": "ord-1", "items": 3}));
        o.handle(&json!({}), "ord-2").unwrap();
        assert_eq!(o.placed.with_label_values(&["us"]).get(), 1);
        assert_eq!(o.items.with_label_values(&["us"]).get(), 3);
        assert_eq!(o.placed.with_label_values(&["eu"]).get(), 1);
        assert_eq!(o.items.with_label_values(&["eu"]).get(), 1);
        let h = o.value.with_label_values(&["us"]);
        assert_eq!((h.get_sample_count(), h.get_sample_sum()), (1, 42.5));
        assert_eq!(o.value.with_label_values(&["eu"]).get_sample_sum(), 10.0);
    }

    #[test]
    fn invalid_params_are_an_error_and_record_nothing() {
        let o = orders();
        for p in [
            json!({"items": -2}),
            json!({"value": "lots"}),
            json!({"region": "a b"}),
        ] {
            assert!(o.handle(&p, "x").is_err(), "{p}");
        }
        assert_eq!(o.placed.with_label_values(&["eu"]).get(), 0);
    }
}
