//! Sequences, run as OpenWhisk's controller runs them (`SequenceActions`): the components one
//! after the other, each getting the previous one's result as its parameters, stopping at the
//! first result with an `error` field. Each component's Activation event carries
//! `causedBy: "sequence"` (the invoker's annotation for `causedBySequence`); the sequence itself
//! gets one Activation event from the controller (`source` `controller<N>`) with `kind`
//! `sequence`, no `causedBy` (it is the topmost sequence), `initTime` 0, the sum of the
//! components' durations, the largest of their memory limits, and the status, result and size of
//! the last component that ran. The namespace limit admits the sequence once.
//!
//! Nested sequences (a sequence as a component) are not supported.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::Value;
use whisk_grouping::ActionName;

use crate::error::{Error, Result};
use crate::events::{ActivationBody, EventMessage, user_defined_status_code};
use crate::pool::{ActionSlot, ActivationRecord, Inner, Invocation, ms, random_hex32};

/// The `kind` of a sequence's own Activation event.
pub(crate) const SEQUENCE_KIND: &str = "sequence";

/// A sequence of actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceSpec {
    /// Fully qualified name without a leading slash, e.g. `guest/pipeline`.
    pub name: String,
    /// Its components' names (actions of the invoker), in order.
    pub components: Vec<String>,
}

impl SequenceSpec {
    /// A sequence of `components`. Names may start with `/`; they are stored without it.
    pub fn new(name: &str, components: &[&str]) -> Self {
        Self {
            name: name.trim_start_matches('/').to_string(),
            components: components
                .iter()
                .map(|c| c.trim_start_matches('/').to_string())
                .collect(),
        }
    }

    /// Parses `NAME=A,B,C` (the binary's `--sequence`); `namespace` is used for names without
    /// one.
    pub fn parse(s: &str, namespace: &str) -> Result<Self> {
        let (name, list) = s.split_once('=').ok_or_else(|| {
            Error::InvalidSpec(format!("sequence {s:?}: expected NAME=ACTION,ACTION,…"))
        })?;
        let qualify = |n: &str| {
            let n = n.trim().trim_start_matches('/');
            if n.contains('/') {
                n.to_string()
            } else {
                format!("{namespace}/{n}")
            }
        };
        let components: Vec<String> = list.split(',').map(qualify).collect();
        Ok(Self {
            name: qualify(name),
            components,
        })
    }

    pub(crate) fn validate(&mut self, actions: &HashMap<String, ActionSlot>) -> Result<()> {
        if ActionName::parse(&self.name).is_none() {
            return Err(Error::InvalidSpec(format!(
                "sequence name {:?} must be namespace/name",
                self.name
            )));
        }
        if actions.contains_key(&self.name) {
            return Err(Error::InvalidSpec(format!(
                "{} is both an action and a sequence",
                self.name
            )));
        }
        if self.components.is_empty() {
            return Err(Error::InvalidSpec(format!(
                "sequence {} has no components",
                self.name
            )));
        }
        if let Some(missing) = self.components.iter().find(|c| !actions.contains_key(*c)) {
            return Err(Error::InvalidSpec(format!(
                "sequence {}: component {missing} is not an action of this invoker",
                self.name
            )));
        }
        Ok(())
    }

    /// The namespace: the first segment of the name.
    pub fn namespace(&self) -> &str {
        ActionName::parse(&self.name).map_or("", |n| n.namespace())
    }
}

impl Inner {
    pub(crate) fn invoke_sequence(
        &self,
        seq: &SequenceSpec,
        params: Value,
        submitted: Instant,
    ) -> Invocation {
        let namespace = seq.namespace();
        let Some(_admitted) = self.admit(namespace, None) else {
            return Invocation::Rejected {
                namespace: namespace.to_string(),
            };
        };
        let start = Instant::now();
        let wait_ms = ms(start.saturating_duration_since(submitted));
        let mut input = params;
        let mut components: Vec<ActivationRecord> = Vec::new();
        let (mut memory, mut timeout) = (0, std::time::Duration::ZERO);
        for name in &seq.components {
            let Some(slot) = self.actions.get(name) else {
                continue; // validated at construction
            };
            memory = memory.max(slot.spec.memory_mb);
            timeout = timeout.max(slot.spec.timeout);
            let rec = self.activate(slot, input, Instant::now(), Some(SEQUENCE_KIND));
            let stop = rec.result.get("error").is_some();
            input = rec.result.clone();
            components.push(rec);
            if stop {
                break;
            }
        }
        let last = components.last();
        let status_code = last.map_or(crate::verdict::status::WHISK_ERROR, |r| r.status_code);
        let result = last.map_or(Value::Null, |r| r.result.clone());
        let size = last.and_then(|r| r.size);
        let duration: u64 = components.iter().map(|r| r.duration_ms).sum();
        let activation_id = random_hex32();
        let body = ActivationBody {
            name: seq.name.clone(),
            activation_id: activation_id.clone(),
            status_code,
            duration,
            wait_time: wait_ms,
            init_time: 0,
            kind: SEQUENCE_KIND.into(),
            conductor: false,
            memory,
            caused_by: None,
            size,
            user_defined_status_code: user_defined_status_code(&result),
        };
        let event = EventMessage::controller_activation(self.config.controller_id, namespace, body);
        self.sink.activation_ended(&event, &result, timeout);
        self.sink.publish(&event);
        Invocation::Completed(ActivationRecord {
            action: seq.name.clone(),
            activation_id,
            status_code,
            result,
            size,
            cold: false,
            init_ms: 0,
            wait_ms,
            duration_ms: duration,
            container: 0,
            pid: 0,
            logs: components.iter().map(|r| r.activation_id.clone()).collect(),
            caused_by: None,
            components,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_command_line_form() {
        let s = SequenceSpec::parse("pipe=hello,other/orders", "guest").unwrap();
        assert_eq!(s.name, "guest/pipe");
        assert_eq!(s.components, ["guest/hello", "other/orders"]);
        assert!(SequenceSpec::parse("pipe", "guest").is_err());
        assert_eq!(
            SequenceSpec::new("/guest/p", &["/guest/a"]).components,
            ["guest/a"]
        );
    }
}
