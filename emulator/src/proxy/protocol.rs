//! What passes between the invoker, the proxy and the action: the run line and the `__OW_*`
//! variables the action sees, how a run can end, and the HTTP answer the Go proxy gives for it
//! (`runHandler.go`).

use serde_json::{Value, json};

/// The version of the Go proxy this driver imitates (its `__OW_PROXY_VERSION`).
pub const PROXY_VERSION: &str = "1.17.1";

/// What the Go proxy answers on a run whose child has exited, and on a non-object result.
pub const COMMAND_EXITED: &str = "command exited";
/// The Go proxy's 502 message for a result that is not a JSON object or array.
pub const NOT_A_DICTIONARY: &str = "The action did not return a dictionary or array.";
/// Longest result line accepted from fd 3: OpenWhisk's 1 MiB payload limit plus the JSON framing.
pub const MAX_RESULT_BYTES: usize = 1024 * 1024 + 1024;

/// What the invoker sends for one activation (the `/run` body the proxy forwards).
#[derive(Debug, Clone, PartialEq)]
pub struct RunInput {
    /// The parameters.
    pub value: Value,
    /// The invoking namespace.
    pub namespace: String,
    /// Fully qualified name with a leading slash, e.g. `/guest/hello`.
    pub action_name: String,
    /// e.g. `0.0.1`.
    pub action_version: String,
    /// 32 lowercase hex characters.
    pub activation_id: String,
    /// The controller's transaction id.
    pub transaction_id: String,
    /// Epoch milliseconds by which the activation must finish.
    pub deadline_ms: u128,
    /// `uuid:key`, when the action is given an API key.
    pub api_key: Option<String>,
}

impl RunInput {
    /// The JSON line written to the action's stdin (no newline inside, one at the end).
    pub fn to_line(&self) -> String {
        let mut v = json!({
            "value": self.value,
            "namespace": self.namespace,
            "action_name": self.action_name,
            "action_version": self.action_version,
            "activation_id": self.activation_id,
            "transaction_id": self.transaction_id,
            "deadline": self.deadline_ms.to_string(),
        });
        if let (Some(key), Some(obj)) = (&self.api_key, v.as_object_mut()) {
            obj.insert("api_key".into(), Value::String(key.clone()));
        }
        // serde_json escapes newlines inside strings, so the line is a single line; the proxy
        // strips raw newlines anyway.
        let mut line = v.to_string().replace('\n', "");
        line.push('\n');
        line
    }

    /// The `__OW_*` variables the invoker's `/init` passes in its `env` (taken from the
    /// activation that caused the cold start). The proxy adds `__OW_PROXY_VERSION`, its own
    /// `__OW_*` variables (e.g. `__OW_API_HOST`) and `__OW_WAIT_FOR_ACK` ([`proxy_env`]).
    pub fn init_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("__OW_NAMESPACE".to_string(), self.namespace.clone()),
            ("__OW_ACTION_NAME".into(), self.action_name.clone()),
            ("__OW_ACTION_VERSION".into(), self.action_version.clone()),
            ("__OW_ACTIVATION_ID".into(), self.activation_id.clone()),
            ("__OW_TRANSACTION_ID".into(), self.transaction_id.clone()),
            ("__OW_DEADLINE".into(), self.deadline_ms.to_string()),
        ];
        if let Some(key) = &self.api_key {
            env.push(("__OW_API_KEY".into(), key.clone()));
        }
        env
    }
}

/// The variables the Go proxy's `SetEnv` adds to the child's environment besides the init
/// `env`: `__OW_PROXY_VERSION`, `__OW_WAIT_FOR_ACK` when the proxy runs with `OW_WAIT_FOR_ACK`,
/// and the container's own `__OW_*` variables (the invoker sets `__OW_API_HOST` with
/// `docker run -e`).
pub fn proxy_env(wait_for_ack: bool, api_host: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![("__OW_PROXY_VERSION".to_string(), PROXY_VERSION.to_string())];
    if wait_for_ack {
        env.push(("__OW_WAIT_FOR_ACK".into(), "1".into()));
    }
    if let Some(host) = api_host {
        env.push(("__OW_API_HOST".into(), host.to_string()));
    }
    env
}

/// How one run ended, from the proxy's point of view.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// A line arrived on fd 3 (not yet interpreted).
    Line(String),
    /// The child exited during the run: the proxy answers 400 `{"error":"command exited"}`.
    Exited,
    /// The child had already exited before the run: the proxy answers 500
    /// `{"error":"command exited"}`.
    ExitedBefore,
    /// No line within the timeout (the invoker stops waiting; the proxy never answers).
    TimedOut,
    /// The line was longer than [`MAX_RESULT_BYTES`]; its length in bytes.
    TooLarge(usize),
}

/// The HTTP answer of the Go proxy to `/run`: its status code and its exact body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyAnswer {
    /// 200, 400 (child exited during the run), 500 (exited before), 502 (not an object).
    pub status: u16,
    /// The body, with the proxy's trailing newline.
    pub body: String,
}

impl ProxyAnswer {
    pub(super) fn error(status: u16, msg: &str) -> Self {
        Self {
            status,
            body: format!("{}\n", json!({ "error": msg })),
        }
    }
}

impl RunOutcome {
    /// What the Go proxy answers for this outcome (`runHandler.go`); `None` when it does not
    /// answer in time (a timeout) or the line is too long for the emulator to keep.
    pub fn proxy_answer(&self) -> Option<ProxyAnswer> {
        match self {
            // The proxy accepts what Go's json.Unmarshal reads into a map or a slice: an
            // object, an array, or `null` (which unmarshals into a nil map).
            Self::Line(line) => Some(match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(_) | Value::Array(_) | Value::Null) => ProxyAnswer {
                    status: 200,
                    body: format!("{line}\n"),
                },
                _ => ProxyAnswer::error(502, NOT_A_DICTIONARY),
            }),
            Self::Exited => Some(ProxyAnswer::error(400, COMMAND_EXITED)),
            Self::ExitedBefore => Some(ProxyAnswer::error(500, COMMAND_EXITED)),
            Self::TimedOut | Self::TooLarge(_) => None,
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::proxy) fn input() -> RunInput {
        RunInput {
            value: json!({"name": "a\nb"}),
            namespace: "guest".into(),
            action_name: "/guest/hello".into(),
            action_version: "0.0.1".into(),
            activation_id: "0123456789abcdef0123456789abcdef".into(),
            transaction_id: "tid_1".into(),
            deadline_ms: 1_700_000_000_000,
            api_key: Some("uuid:key".into()),
        }
    }

    #[test]
    fn run_line_is_one_json_line_with_the_proxy_fields() {
        let line = input().to_line();
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["value"]["name"], "a\nb");
        assert_eq!(v["action_name"], "/guest/hello");
        assert_eq!(v["deadline"], "1700000000000");
        assert_eq!(v["api_key"], "uuid:key");
        assert_eq!(v["activation_id"].as_str().unwrap().len(), 32);
    }

    #[test]
    fn init_env_holds_only_ow_variables() {
        let env = input().init_env();
        assert!(env.iter().all(|(k, _)| k.starts_with("__OW_")));
        assert!(env.contains(&("__OW_ACTION_NAME".into(), "/guest/hello".into())));
    }

    #[test]
    fn proxy_answers_follow_the_go_proxy() {
        let answer = |line: &str| RunOutcome::Line(line.into()).proxy_answer().unwrap();
        assert_eq!(answer("{\"a\":1}").status, 200);
        assert_eq!(answer("{\"a\":1}").body, "{\"a\":1}\n");
        assert_eq!(answer("[1,2]").status, 200);
        // Go's json.Unmarshal reads `null` into a nil map without an error.
        assert_eq!(answer("null").status, 200);
        for bad in ["42", "\"text\"", "true", "not json", ""] {
            assert_eq!(
                answer(bad),
                ProxyAnswer {
                    status: 502,
                    body: format!("{{\"error\":\"{NOT_A_DICTIONARY}\"}}\n")
                },
                "{bad:?}"
            );
        }
        assert_eq!(RunOutcome::TimedOut.proxy_answer(), None);
    }
}
