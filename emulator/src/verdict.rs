//! What the invoker makes of the proxy's answer to `/run`: the activation's status code, its
//! result and its size, exactly as OpenWhisk's `Container.run` and
//! `ActivationResponse.processRunResponseContent` derive them (openwhisk-platform.md §1.3):
//!
//! | the proxy's answer | status | result |
//! |---|---|---|
//! | none within the time limit | 2 developer error | `The action exceeded its time limits of N milliseconds.` |
//! | longer than the 1 MiB payload limit | 1 application error | `The action produced a response that exceeded the allowed length: …` |
//! | 200, an object with `error` | 1 application error | `{"error": <its error>}` only |
//! | 200, an object or an array | 0 success | the answer |
//! | not 200, an object with `error` | 2 developer error | `{"error": <its error>}` |
//! | anything else (not 200, `null`, a number, not JSON) | 2 developer error | `The action did not produce a valid JSON or JSON Array response: …` |
//!
//! A status of 2 or 3 makes the invoker destroy the container ([`removes_container`]).
//!
//! The functions take the proxy's answer as HTTP status and body, so the conformance tests apply
//! them to the real Go proxy's answers and to the emulator's ([`crate::proxy::ProxyAnswer`]).

use std::time::Duration;

use serde_json::{Value, json};

use crate::proxy::{ProxyAnswer, RunOutcome};

/// OpenWhisk status codes.
pub mod status {
    /// Success.
    pub const SUCCESS: u8 = 0;
    /// Application error (a 200 answer with an `error` field).
    pub const APPLICATION_ERROR: u8 = 1;
    /// Action developer error (exit, timeout, bad result): the container is removed.
    pub const DEVELOPER_ERROR: u8 = 2;
    /// Whisk internal error: the container is removed.
    pub const WHISK_ERROR: u8 = 3;
}

/// OpenWhisk's payload limit (`whisk.activation.payload.max = 1 m`): a longer answer is
/// truncated and becomes an application error.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// The invoker's reading of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// 0..3 (see [`status`]).
    pub status_code: u8,
    /// The activation's result (what `wsk activation result` shows).
    pub result: Value,
    /// The answer's length (UTF-16 code units, as Scala's `String.length`); absent on a timeout.
    pub size: Option<u64>,
}

/// The `status` label OpenWhisk's user-events gives a status code.
pub fn status_name(code: u8) -> &'static str {
    match code {
        status::SUCCESS => "success",
        status::APPLICATION_ERROR => "application_error",
        status::DEVELOPER_ERROR => "action_developer_error",
        _ => "whisk_internal_error",
    }
}

/// Whether the invoker destroys the container after an activation with this status.
pub fn removes_container(code: u8) -> bool {
    code >= status::DEVELOPER_ERROR
}

/// The verdict on a run that took `elapsed` of a `timeout` limit and got `answer` (`None`: no
/// answer in time, or the connection broke).
pub fn of_run(answer: Option<&ProxyAnswer>, elapsed: Duration, timeout: Duration) -> Verdict {
    match answer {
        _ if elapsed >= timeout => timed_out(timeout),
        None => timed_out(timeout),
        Some(a) => of_answer(a.status, &a.body),
    }
}

/// The verdict on the emulator's own outcome of a run.
pub fn of_outcome(outcome: &RunOutcome, timeout: Duration) -> Verdict {
    match outcome {
        RunOutcome::TimedOut => timed_out(timeout),
        RunOutcome::TooLarge(len) => truncated(*len),
        other => match other.proxy_answer() {
            Some(a) => of_answer(a.status, &a.body),
            None => timed_out(timeout),
        },
    }
}

/// `Messages.timedoutActivation(timeout, init = false)`.
pub fn timed_out(timeout: Duration) -> Verdict {
    Verdict {
        status_code: status::DEVELOPER_ERROR,
        result: json!({ "error": format!(
            "The action exceeded its time limits of {} milliseconds.",
            timeout.as_millis()
        )}),
        size: None,
    }
}

/// An answer longer than [`MAX_PAYLOAD_BYTES`] (the invoker's HTTP client truncates it). The
/// truncated text itself is not repeated in the result (docs/design.md: deliberate).
fn truncated(len: usize) -> Verdict {
    Verdict {
        status_code: status::APPLICATION_ERROR,
        result: json!({ "error": format!(
            "The action produced a response that exceeded the allowed length: {len} > {MAX_PAYLOAD_BYTES} bytes."
        )}),
        size: Some(len as u64),
    }
}

/// `processRunResponseContent` on an answer that came in time.
pub fn of_answer(http_status: u16, body: &str) -> Verdict {
    if body.len() > MAX_PAYLOAD_BYTES {
        return truncated(body.len());
    }
    let size = Some(body.encode_utf16().count() as u64);
    let invalid = || {
        json!({ "error": format!(
            "The action did not produce a valid JSON or JSON Array response{}",
            if body.is_empty() { ".".to_string() } else { format!(": {body}") }
        )})
    };
    let (status_code, result) = match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(mut fields)) => match (http_status == 200, fields.remove("error")) {
            (true, Some(error)) => (status::APPLICATION_ERROR, json!({ "error": error })),
            (true, None) => (status::SUCCESS, Value::Object(fields)),
            (false, Some(error)) => (status::DEVELOPER_ERROR, json!({ "error": error })),
            (false, None) => (status::DEVELOPER_ERROR, invalid()),
        },
        Ok(v @ Value::Array(_)) if http_status == 200 => (status::SUCCESS, v),
        _ => (status::DEVELOPER_ERROR, invalid()),
    };
    Verdict {
        status_code,
        result,
        size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_openwhisk_status_codes() {
        let code = |s: u16, b: &str| of_answer(s, b).status_code;
        assert_eq!(code(200, "{\"ok\":1}\n"), status::SUCCESS);
        assert_eq!(code(200, "[1]\n"), status::SUCCESS);
        assert_eq!(code(200, "{\"error\":\"x\"}\n"), status::APPLICATION_ERROR);
        assert_eq!(code(200, "null\n"), status::DEVELOPER_ERROR);
        assert_eq!(code(200, "42\n"), status::DEVELOPER_ERROR);
        assert_eq!(
            code(400, "{\"error\":\"command exited\"}\n"),
            status::DEVELOPER_ERROR
        );
        assert_eq!(code(502, "[1]\n"), status::DEVELOPER_ERROR);
        assert_eq!(code(500, "oops"), status::DEVELOPER_ERROR);
    }

    #[test]
    fn an_application_error_keeps_only_the_error_field() {
        let v = of_answer(200, "{\"error\":{\"statusCode\":404},\"statusCode\":200}\n");
        assert_eq!(v.result, json!({"error": {"statusCode": 404}}));
        assert_eq!(v.size, Some(46));
        let exited = of_answer(400, "{\"error\":\"command exited\"}\n");
        assert_eq!(exited.result, json!({"error": "command exited"}));
        let bad = of_answer(200, "null\n");
        assert_eq!(
            bad.result["error"],
            "The action did not produce a valid JSON or JSON Array response: null\n"
        );
    }

    #[test]
    fn timeouts_and_oversized_answers() {
        let t = Duration::from_millis(1500);
        let v = of_run(None, Duration::from_millis(1600), t);
        assert_eq!(v.status_code, status::DEVELOPER_ERROR);
        assert_eq!(
            v.result["error"],
            "The action exceeded its time limits of 1500 milliseconds."
        );
        // An answer that arrives after the limit is a timeout too.
        let late = ProxyAnswer {
            status: 200,
            body: "{}\n".into(),
        };
        assert_eq!(
            of_run(Some(&late), t, t).status_code,
            status::DEVELOPER_ERROR
        );
        let big = of_outcome(&RunOutcome::TooLarge(MAX_PAYLOAD_BYTES + 5), t);
        assert_eq!(big.status_code, status::APPLICATION_ERROR);
        assert!(!removes_container(big.status_code));
        assert!(removes_container(status::DEVELOPER_ERROR));
        assert_eq!(status_name(2), "action_developer_error");
    }
}
