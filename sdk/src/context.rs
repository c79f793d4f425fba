//! The activation's context: the `__OW_*` values of the current activation, typed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::runline::{self, Field, Fields};

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
    /// Sets the context to the keys of one activation line (everything but `value`), reusing
    /// its strings' buffers: no allocation once they have grown to the activation's sizes.
    pub(crate) fn update(&mut self, fields: &Fields<'_>, api_host: Option<&str>) {
        let set = |dst: &mut String, key: &str| {
            dst.clear();
            if let Some(f) = runline::get(fields, key) {
                dst.push_str(&f.text());
            }
        };
        set(&mut self.namespace, "namespace");
        set(&mut self.action_name, "action_name");
        set(&mut self.action_version, "action_version");
        set(&mut self.activation_id, "activation_id");
        set(&mut self.transaction_id, "transaction_id");
        self.deadline = runline::get(fields, "deadline").and_then(parse_deadline);
        let set_opt = |dst: &mut Option<String>, text: Option<&str>| match text {
            Some(t) if !t.is_empty() => {
                let s = dst.get_or_insert_with(String::new);
                s.clear();
                s.push_str(t);
            }
            _ => *dst = None,
        };
        let key = runline::get(fields, "api_key").map(Field::text);
        set_opt(&mut self.api_key, key.as_deref());
        let host = runline::get(fields, "api_host").map(Field::text);
        set_opt(&mut self.api_host, host.as_deref().or(api_host));
    }

    /// Time left until the deadline (zero when it has passed), if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| {
            d.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
    }
}

/// `deadline` is epoch milliseconds, sent as a JSON string (docs say number; accept both).
fn parse_deadline(v: &Field<'_>) -> Option<SystemTime> {
    let v = match v {
        Field::Str(s) => return parse_deadline_text(s),
        Field::Other(Value::String(s)) => return parse_deadline_text(s),
        Field::Other(v) => v,
    };
    let ms = match v {
        Value::Number(n) => match n.as_u64() {
            Some(ms) => return UNIX_EPOCH.checked_add(Duration::from_millis(ms)),
            None => n.as_f64()?,
        },
        _ => return None,
    };
    ms_to_time(ms)
}

fn parse_deadline_text(s: &str) -> Option<SystemTime> {
    match s.trim().parse::<u64>() {
        Ok(ms) => UNIX_EPOCH.checked_add(Duration::from_millis(ms)),
        Err(_) => ms_to_time(s.trim().parse::<f64>().ok()?),
    }
}

fn ms_to_time(ms: f64) -> Option<SystemTime> {
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

    /// The context of a run line made of `line`'s keys (and a `value`).
    fn from_line(line: &Value, api_host: Option<&str>) -> Context {
        let mut with_value = line.clone();
        with_value["value"] = json!({});
        let text = with_value.to_string();
        let (_, fields) = runline::parse(text.as_bytes()).unwrap();
        let mut c = Context::default();
        c.update(&fields, api_host);
        c
    }

    #[test]
    fn reads_every_field_of_an_activation_line() {
        let line = json!({
            "namespace": "guest", "action_name": "/guest/pkg/a", "action_version": "0.0.2",
            "activation_id": "abc", "transaction_id": "tid", "deadline": "1700000000123",
            "api_key": "k:v"
        });
        let c = from_line(&line, Some("https://host"));
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
        let c = from_line(&num, None);
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
            assert_eq!(from_line(&line, None).deadline, None);
        }
        assert_eq!(from_line(&json!({}), None), Context::default());
        // a context reused for the next line holds that line's fields only
        let mut c = from_line(
            &json!({"namespace": "a", "api_key": "k", "api_host": "h"}),
            None,
        );
        let text = json!({"value": 1, "action_name": "/b/x"}).to_string();
        let (_, fields) = runline::parse(text.as_bytes()).unwrap();
        c.update(&fields, None);
        assert_eq!(
            c,
            Context {
                action_name: "/b/x".to_string(),
                ..Context::default()
            }
        );
    }
}
