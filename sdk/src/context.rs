//! The activation's context: the `__OW_*` values of the current activation, typed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// What OpenWhisk tells the action about the current activation. The same values are also set
/// as `__OW_*` environment variables before the handler runs, as the official runtimes do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// The invoking namespace (`__OW_NAMESPACE`).
    pub namespace: String,
    /// Fully qualified action name with a leading slash, e.g. `/ns/pkg/a` (`__OW_ACTION_NAME`).
    pub action_name: String,
    /// Action version, e.g. `0.0.1` (`__OW_ACTION_VERSION`).
    pub action_version: String,
    /// Activation id, 32 hex chars (`__OW_ACTIVATION_ID`).
    pub activation_id: String,
    /// Transaction id (`__OW_TRANSACTION_ID`).
    pub transaction_id: String,
    /// When the activation runs out of time (`__OW_DEADLINE`, epoch ms), if known.
    pub deadline: Option<SystemTime>,
    /// The API key (`__OW_API_KEY`), present unless the action opted out.
    pub api_key: Option<String>,
    /// The API host (`__OW_API_HOST`, from the container's environment).
    pub api_host: Option<String>,
}

impl Context {
    /// Builds the context from the keys of one activation line (everything but `value`).
    pub(crate) fn from_fields(fields: &Map<String, Value>, api_host: Option<&str>) -> Self {
        let text = |key: &str| fields.get(key).map(value_text).unwrap_or_default();
        Self {
            namespace: text("namespace"),
            action_name: text("action_name"),
            action_version: text("action_version"),
            activation_id: text("activation_id"),
            transaction_id: text("transaction_id"),
            deadline: fields.get("deadline").and_then(parse_deadline),
            api_key: fields
                .get("api_key")
                .map(value_text)
                .filter(|k| !k.is_empty()),
            api_host: fields
                .get("api_host")
                .map(value_text)
                .or_else(|| api_host.map(str::to_string))
                .filter(|h| !h.is_empty()),
        }
    }

    /// Time left until the deadline (zero when it has passed), if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| {
            d.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
    }
}

/// A string as-is, anything else as its JSON text (what the official launcher puts in `__OW_*`).
pub(crate) fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `deadline` is epoch milliseconds, sent as a JSON string (docs say number; accept both).
fn parse_deadline(v: &Value) -> Option<SystemTime> {
    let ms = match v {
        Value::String(s) => match s.trim().parse::<u64>() {
            Ok(ms) => return UNIX_EPOCH.checked_add(Duration::from_millis(ms)),
            Err(_) => s.trim().parse::<f64>().ok()?,
        },
        Value::Number(n) => match n.as_u64() {
            Some(ms) => return UNIX_EPOCH.checked_add(Duration::from_millis(ms)),
            None => n.as_f64()?,
        },
        _ => return None,
    };
    if !ms.is_finite() || ms < 0.0 {
        return None;
    }
    // `try_`: 1e300 ms does not fit a Duration (`from_secs_f64` would panic)
    UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(ms / 1000.0).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_every_field_of_an_activation_line() {
        let line = json!({
            "namespace": "guest", "action_name": "/guest/pkg/a", "action_version": "0.0.2",
            "activation_id": "abc", "transaction_id": "tid", "deadline": "1700000000123",
            "api_key": "k:v"
        });
        let c = Context::from_fields(line.as_object().unwrap(), Some("https://host"));
        assert_eq!(c.namespace, "guest");
        assert_eq!(c.action_name, "/guest/pkg/a");
        assert_eq!(c.action_version, "0.0.2");
        assert_eq!(c.activation_id, "abc");
        assert_eq!(c.transaction_id, "tid");
        assert_eq!(
            c.deadline,
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
        );
        assert_eq!(c.api_key.as_deref(), Some("k:v"));
        assert_eq!(c.api_host.as_deref(), Some("https://host"));
    }

    #[test]
    fn accepts_numeric_deadline_and_ignores_garbage() {
        let num = json!({"deadline": 1000});
        let c = Context::from_fields(num.as_object().unwrap(), None);
        assert_eq!(c.deadline, Some(UNIX_EPOCH + Duration::from_secs(1)));
        for bad in [
            json!("soon"),
            json!(-5),
            json!(null),
            json!({"x": 1}),
            json!("1e300"),
            json!(1e300),
            json!("NaN"),
            json!("-inf"),
        ] {
            let line = json!({ "deadline": bad });
            assert_eq!(
                Context::from_fields(line.as_object().unwrap(), None).deadline,
                None
            );
        }
        assert_eq!(Context::from_fields(&Map::new(), None), Context::default());
    }
}
