//! What the handler's return means to the platform: the result line the loop writes (or none)
//! and the outcome the SDK counts, as OpenWhisk will record it.

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde_json::{Value, json};

use super::Handler;
use crate::builtins::Outcome;
use crate::config::OnPanic;
use crate::context::Context;

/// What the loop answers for one activation.
pub(super) enum Answer {
    /// Write this value as the result line.
    Line(Value),
    /// Write nothing and end the process (a panic under [`OnPanic::Exit`]).
    Exit,
}

/// Whether the loop goes on after an activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// Read the next line.
    Next,
    /// End the process without a result (the handler panicked, [`OnPanic::Exit`]).
    Exit,
}

/// Runs the handler and decides the answer and the outcome, the way the platform will see it:
///
/// - an object or array is the result (`success`; the Go proxy accepts both);
/// - `Err(msg)` becomes `{"error": msg}` (`application_error`, as the platform records it);
/// - any other JSON value (string, number, boolean, null) is written as it is: the proxy answers
///   502 "The action did not return a dictionary or array" (or passes `null`, which the invoker
///   cannot read as a result either), so the platform records a developer error — and so does
///   the SDK (`developer_error`);
/// - a panic is `developer_error`; the answer follows `on_panic`.
pub(super) fn call(
    handler: &mut Handler<'_>,
    value: Value,
    ctx: &Context,
    on_panic: OnPanic,
) -> (Answer, Outcome) {
    match catch_unwind(AssertUnwindSafe(|| handler(value, ctx))) {
        Ok(Ok(v)) if v.is_object() || v.is_array() => (Answer::Line(v), Outcome::Success),
        Ok(Ok(v)) => {
            let kind = match v {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                _ => "a string",
            };
            eprintln!(
                "whisk-metrics: the action returned {kind}; an OpenWhisk result must be a JSON \
                 object or array (passed on as it is; the platform records a developer error)"
            );
            (Answer::Line(v), Outcome::DeveloperError)
        }
        Ok(Err(msg)) => {
            eprintln!("{msg}");
            (
                Answer::Line(json!({ "error": msg })),
                Outcome::ApplicationError,
            )
        }
        Err(payload) => match on_panic {
            OnPanic::Exit => (Answer::Exit, Outcome::DeveloperError),
            OnPanic::ErrorResult => {
                let what = panic_message(payload.as_ref());
                (
                    Answer::Line(json!({ "error": format!("the action panicked: {what}") })),
                    Outcome::DeveloperError,
                )
            }
        },
    }
}

/// The message of a panic payload (`&str` or `String`, as `panic!` makes them).
pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_string())
}
