//! `hello`: greets and counts greetings.

use serde_json::{Value, json};
use whisk_metrics::IntCounter;

use crate::params::{self, ParamError};

/// The `hello` action and its metric `hello_greetings_total`.
#[derive(Debug, Clone)]
pub struct Hello {
    greetings: IntCounter,
}

impl Hello {
    /// Registers `hello_greetings_total` in the SDK's registry (once per process).
    pub fn register() -> Result<Self, whisk_metrics::Error> {
        Ok(Self::with_metrics(whisk_metrics::counter(
            "hello_greetings_total",
            "Greetings sent by the hello action",
        )?))
    }

    /// Uses an existing counter (tests).
    pub fn with_metrics(greetings: IntCounter) -> Self {
        Self { greetings }
    }

    /// `{"name": "…"}` (default `stranger`) → `{"greeting": "Hello, …!"}`; +1 greeting.
    pub fn handle(&self, params: &Value) -> Result<Value, ParamError> {
        let name = params::string(params, "name", "stranger")?;
        self.greetings.inc();
        Ok(json!({ "greeting": format!("Hello, {name}!") }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> (Hello, IntCounter) {
        let c = IntCounter::new("hello_greetings_total", "h").unwrap();
        (Hello::with_metrics(c.clone()), c)
    }

    #[test]
    fn greets_by_name_and_counts_each_greeting() {
        let (h, c) = hello();
        assert_eq!(
            h.handle(&json!({"name": "Ada"})).unwrap(),
            json!({"greeting": "Hello, Ada!"})
        );
        assert_eq!(
            h.handle(&json!({})).unwrap(),
            json!({"greeting": "Hello, stranger!"})
        );
        assert_eq!(c.get(), 2);
    }

    #[test]
    fn rejects_a_non_string_name_without_counting() {
        let (h, c) = hello();
        assert!(h.handle(&json!({"name": 5})).is_err());
        assert_eq!(c.get(), 0);
    }
}
