//! The invoker: a container pool per action, run as OpenWhisk's `ContainerPool` /
//! `ContainerProxy` do it (openwhisk-platform.md §1.3, §3):
//!
//! * an idle warm container of the action is reused (thawed with `SIGCONT` if frozen); otherwise
//!   a new one is cold-started, up to the action's maximum; beyond that the request queues;
//! * a namespace's in-flight activations are limited: beyond the limit the request is rejected
//!   and a `ConcurrentRateLimit` Metric event is emitted (the controller's 429); an accepted one
//!   emits a `ConcurrentInvocations` Metric event (the old load balancer's in-flight count);
//! * a container left idle for the pause grace (default 50 ms, OpenWhisk ≤ 1.0.0) is frozen with
//!   `SIGSTOP`; one idle for the idle timeout is removed with `SIGKILL`; so is one whose
//!   activation ended in a developer error (status 2: exit, timeout, bad result) or a whisk error;
//! * every activation produces one `Activation` event, whatever its outcome; the status and the
//!   result are what the invoker derives from the Go proxy's answer ([`crate::verdict`]);
//! * a sequence ([`SequenceSpec`]) runs its components one after the other as the controller
//!   does ([`crate::sequence`]).
//!
//! One activation goes through four steps, one function each: [`Inner::admit`] (the namespace
//! limit), [`Inner::acquire`] then [`Inner::obtain`] (a warm container or a cold start),
//! [`Inner::run`] (the run through the proxy and the verdict), [`Inner::report`] (release the
//! container, count, publish the event). The pool of one action's containers (reuse, cold-start
//! reservations, freezing, removal) is [`slot`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

mod slot;

use crate::cgroup::Root;
use crate::container::{self, Container};
use crate::error::{Error, Result};
use crate::events::{ActivationBody, EventMessage, EventSink, epoch_ms, user_defined_status_code};
use crate::proxy::{self, RunInput, StartCheck};
use crate::sequence::SequenceSpec;
use crate::spec::{ActionSpec, InvokerConfig};
use crate::stats::ActionStats;
use crate::verdict::{self, Verdict};
use slot::Acquired;
pub(crate) use slot::ActionSlot;

use crate::verdict::status;

/// What happened to one activation.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationRecord {
    /// Action (or sequence) name (no leading slash).
    pub action: String,
    /// 32 hex characters.
    pub activation_id: String,
    /// 0..3.
    pub status_code: u8,
    /// The result the user sees.
    pub result: Value,
    /// The answer's size in the Activation event (absent on a timeout).
    pub size: Option<u64>,
    /// Whether a container was started for it.
    pub cold: bool,
    /// Init time in ms (0 when warm).
    pub init_ms: u64,
    /// Wait time in ms.
    pub wait_ms: u64,
    /// Duration in ms (init included when cold; for a sequence, the sum of its components').
    pub duration_ms: u64,
    /// Per-action sequence number of the container that ran it (0 when none could be started).
    pub container: u64,
    /// Process id of that container (0 when none could be started).
    pub pid: u32,
    /// Its stdout/stderr lines, each prefixed with the stream name (for a sequence, the
    /// activation ids of its components, as OpenWhisk's sequence logs are).
    pub logs: Vec<String>,
    /// `sequence` for a component of a sequence (the event's `causedBy`).
    pub caused_by: Option<String>,
    /// For a sequence: the activations of its components, in order (empty otherwise).
    pub components: Vec<ActivationRecord>,
}

/// The answer to an invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// It ran (successfully or not) and produced an Activation event.
    Completed(ActivationRecord),
    /// The namespace was over its concurrency limit: no activation, a `ConcurrentRateLimit`
    /// Metric event.
    Rejected {
        /// The namespace that was throttled.
        namespace: String,
    },
}

pub(crate) struct Inner {
    pub(crate) config: InvokerConfig,
    pub(crate) sink: Arc<dyn EventSink>,
    pub(crate) actions: HashMap<String, ActionSlot>,
    pub(crate) sequences: HashMap<String, SequenceSpec>,
    order: Vec<String>,
    in_flight: Mutex<HashMap<String, usize>>,
    stopping: AtomicBool,
    cgroups: Option<&'static Root>,
}

/// The emulated invoker. Thread-safe: call [`Invoker::invoke`] from as many threads as requests
/// in flight. Dropping it removes every container.
pub struct Invoker {
    inner: Arc<Inner>,
    maintenance: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Invoker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invoker")
            .field("actions", &self.inner.order)
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain counters behind: keep going.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Invoker {
    /// Validates the actions (executables must exist) and starts the freezer/reaper thread.
    pub fn new(
        config: InvokerConfig,
        sink: Arc<dyn EventSink>,
        actions: Vec<ActionSpec>,
    ) -> Result<Self> {
        Self::with_sequences(config, sink, actions, Vec::new())
    }

    /// Like [`Invoker::new`], with sequences of those actions that [`Invoker::invoke`] runs by
    /// name.
    pub fn with_sequences(
        config: InvokerConfig,
        sink: Arc<dyn EventSink>,
        actions: Vec<ActionSpec>,
        sequences: Vec<SequenceSpec>,
    ) -> Result<Self> {
        let mut map = HashMap::new();
        let mut order = Vec::new();
        for mut spec in actions {
            spec.validate()?;
            if map.contains_key(&spec.name) {
                return Err(Error::InvalidSpec(format!(
                    "action {} given twice",
                    spec.name
                )));
            }
            order.push(spec.name.clone());
            let slot = ActionSlot::new(spec);
            map.insert(slot.spec.name.clone(), slot);
        }
        let mut seqs = HashMap::new();
        for mut seq in sequences {
            seq.validate(&map)?;
            if seqs.contains_key(&seq.name) {
                return Err(Error::InvalidSpec(format!(
                    "{} is given twice or is also an action",
                    seq.name
                )));
            }
            seqs.insert(seq.name.clone(), seq);
        }
        let cgroups = container::cgroup_root(config.cgroups);
        let inner = Arc::new(Inner {
            config,
            sink,
            actions: map,
            sequences: seqs,
            order,
            in_flight: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            cgroups,
        });
        let worker = Arc::clone(&inner);
        let maintenance = std::thread::Builder::new()
            .name("invoker-maintenance".into())
            .spawn(move || worker.maintain())
            .map_err(|source| Error::Io {
                what: "starting the maintenance thread".into(),
                source,
            })?;
        Ok(Self {
            inner,
            maintenance: Some(maintenance),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &InvokerConfig {
        &self.inner.config
    }

    /// Action names in the order given.
    pub fn actions(&self) -> &[String] {
        &self.inner.order
    }

    /// The cgroup directory containers are created in, if the emulator uses cgroups.
    pub fn cgroup_dir(&self) -> Option<&std::path::Path> {
        self.inner.cgroups.map(Root::dir)
    }

    /// Invokes `action` or a sequence (with or without a leading slash) with `params`, blocking
    /// until it completes. `submitted` is when the request arrived (the start of its wait time).
    pub fn invoke(&self, action: &str, params: Value, submitted: Instant) -> Result<Invocation> {
        self.inner.invoke(action, params, submitted)
    }

    /// Per-action counters, in the order the actions were given.
    pub fn stats(&self) -> Vec<ActionStats> {
        self.inner
            .order
            .iter()
            .filter_map(|n| self.inner.actions.get(n))
            .map(ActionSlot::stats)
            .collect()
    }

    /// Stops the maintenance thread and removes every idle container. Activations still running
    /// finish, and their containers are then removed.
    pub fn shutdown(&mut self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        if let Some(h) = self.maintenance.take() {
            let _ = h.join();
        }
        for slot in self.inner.actions.values() {
            slot.remove_idle();
        }
    }
}

impl Drop for Invoker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub(crate) fn random_hex32() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A namespace's admission; decrements its in-flight count when dropped.
pub(crate) struct Admitted<'a> {
    inner: &'a Inner,
    namespace: String,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.inner.in_flight).get_mut(&self.namespace) {
            *n = n.saturating_sub(1);
        }
    }
}

/// A container to run on, or the verdict of why there is none.
struct Obtained {
    container: Option<Container>,
    cold: bool,
    init: Duration,
    failure: Option<Verdict>,
    reserved: bool,
}

/// What one run produced.
struct Ran {
    verdict: Verdict,
    logs: Vec<String>,
}

impl Inner {
    fn invoke(&self, name: &str, params: Value, submitted: Instant) -> Result<Invocation> {
        let name = name.trim_start_matches('/');
        if let Some(seq) = self.sequences.get(name) {
            return Ok(self.invoke_sequence(seq, params, submitted));
        }
        let slot = self
            .actions
            .get(name)
            .ok_or_else(|| Error::UnknownAction(name.to_string()))?;
        let namespace = slot.spec.namespace();
        let Some(_admitted) = self.admit(namespace, Some(slot)) else {
            return Ok(Invocation::Rejected {
                namespace: namespace.to_string(),
            });
        };
        Ok(Invocation::Completed(
            self.activate(slot, params, submitted, None),
        ))
    }

    /// The controller's entitlement check: `None` (and a `ConcurrentRateLimit` event) when the
    /// namespace is at its limit; otherwise a `ConcurrentInvocations` event and the admission.
    pub(crate) fn admit(&self, namespace: &str, slot: Option<&ActionSlot>) -> Option<Admitted<'_>> {
        let mut map = lock(&self.in_flight);
        let n = map.entry(namespace.to_string()).or_insert(0);
        if *n >= self.config.namespace_concurrency {
            drop(map);
            if let Some(slot) = slot {
                lock(&slot.counters).rejected += 1;
            }
            self.sink.publish(&EventMessage::metric(
                self.config.controller_id,
                namespace,
                "ConcurrentRateLimit",
                1,
            ));
            return None;
        }
        *n += 1;
        let in_flight = i64::try_from(*n).unwrap_or(i64::MAX);
        drop(map);
        if self.config.concurrent_invocations_events {
            self.sink.publish(&EventMessage::metric(
                self.config.controller_id,
                namespace,
                "ConcurrentInvocations",
                in_flight,
            ));
        }
        Some(Admitted {
            inner: self,
            namespace: namespace.to_string(),
        })
    }

    /// One admitted activation of `slot`: a container, the run, the report.
    pub(crate) fn activate(
        &self,
        slot: &ActionSlot,
        params: Value,
        submitted: Instant,
        caused_by: Option<&str>,
    ) -> ActivationRecord {
        let acquired = self.acquire(slot, submitted);
        let started = Instant::now();
        let input = self.run_input(slot, params);
        let mut obtained = self.obtain(slot, acquired, &input, started);
        let ran = match (&mut obtained.container, obtained.failure.take()) {
            (_, Some(verdict)) => Ran {
                verdict,
                logs: Vec::new(),
            },
            (Some(c), None) => run(c, &input, slot.spec.timeout),
            (None, None) => Ran {
                verdict: whisk_error("no container"),
                logs: Vec::new(),
            },
        };
        self.report(slot, input, obtained, ran, submitted, started, caused_by)
    }

    fn run_input(&self, slot: &ActionSlot, params: Value) -> RunInput {
        RunInput {
            value: params,
            namespace: slot.spec.namespace().to_string(),
            action_name: format!("/{}", slot.spec.name),
            action_version: slot.spec.version.clone(),
            activation_id: random_hex32(),
            transaction_id: format!("tid_{:016x}", fastrand::u64(..)),
            deadline_ms: u128::from(epoch_ms(SystemTime::now())) + slot.spec.timeout.as_millis(),
            api_key: self.config.api_key_for(slot.spec.namespace()),
        }
    }

    /// A warm container, or a cold start (the proxy's `/init`), or the verdict of a failure.
    fn obtain(
        &self,
        slot: &ActionSlot,
        acquired: Acquired,
        input: &RunInput,
        started: Instant,
    ) -> Obtained {
        let mut o = Obtained {
            container: None,
            cold: false,
            init: Duration::ZERO,
            failure: None,
            reserved: true,
        };
        match acquired {
            Acquired::Warm(c) => o.container = Some(c),
            Acquired::TimedOut => {
                o.reserved = false;
                o.failure = Some(whisk_error(&format!(
                    "no container of {} became free within {} ms",
                    slot.spec.name,
                    ms(self.config.queue_timeout)
                )));
            }
            Acquired::Cold(id) => {
                let env = self.container_env(&slot.spec, input);
                let check = if self.config.wait_for_ack {
                    StartCheck::Ack(slot.spec.timeout)
                } else {
                    StartCheck::default()
                };
                let result = Container::start(id, &slot.spec, &env, check, self.cgroups);
                o.init = started.elapsed();
                match result {
                    Ok(c) => {
                        o.cold = true;
                        o.container = Some(c);
                    }
                    Err(Error::StartFailed { reason, .. }) if reason == proxy::START_TIMED_OUT => {
                        // The invoker's `/init` request timed out.
                        o.cold = true;
                        o.failure = Some(Verdict {
                            status_code: status::DEVELOPER_ERROR,
                            result: json!({ "error": format!(
                                "The action exceeded its time limits of {} milliseconds during initialization.",
                                slot.spec.timeout.as_millis()
                            )}),
                            size: None,
                        });
                    }
                    Err(Error::StartFailed { reason, output, .. }) => {
                        // It started and failed the proxy's start check: `/init` answered 502
                        // `cannot start action: …`, a developer error of a container that was
                        // created (and is gone).
                        o.cold = true;
                        tracing::warn!(
                            "init of {} failed: {reason}; output: {output}",
                            slot.spec.name
                        );
                        o.failure = Some(Verdict {
                            status_code: status::DEVELOPER_ERROR,
                            result: json!({ "error": format!("cannot start action: {reason}") }),
                            size: None,
                        });
                    }
                    Err(e) => {
                        tracing::error!("cannot start a container of {}: {e}", slot.spec.name);
                        o.init = Duration::ZERO;
                        o.failure = Some(whisk_error(&e.to_string()));
                    }
                }
            }
        }
        o
    }

    /// The child's environment as the Go proxy builds it: its own `__OW_*` additions, the
    /// invoker's `/init` `env` (the `__OW_*` values of the first activation), the init
    /// parameters.
    fn container_env(&self, spec: &ActionSpec, input: &RunInput) -> Vec<(String, String)> {
        let mut env = proxy::proxy_env(self.config.wait_for_ack, self.config.api_host.as_deref());
        env.extend(input.init_env());
        if let Some(url) = &self.config.pushgateway_url {
            env.push(("WHISK_METRICS_PUSHGATEWAY_URL".to_string(), url.clone()));
        }
        env.extend(self.config.init_params.iter().cloned());
        env.extend(spec.init_params.iter().cloned());
        env
    }

    /// Releases the container, counts the activation and publishes its event.
    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        slot: &ActionSlot,
        input: RunInput,
        obtained: Obtained,
        ran: Ran,
        submitted: Instant,
        started: Instant,
        caused_by: Option<&str>,
    ) -> ActivationRecord {
        let duration = started.elapsed();
        let wait_ms = ms(started.saturating_duration_since(submitted));
        let status_code = ran.verdict.status_code;
        let container_id = obtained.container.as_ref().map_or(0, |c| c.id);
        let pid = obtained.container.as_ref().map_or(0, |c| c.process.pid());
        let removed =
            obtained.reserved && self.release(slot, obtained.container, status_code, obtained.cold);
        // A cold start reports at least 1 ms so that initTime > 0 marks it.
        let init_ms = if obtained.cold {
            ms(obtained.init).max(1)
        } else {
            0
        };
        let body = ActivationBody {
            name: slot.spec.name.clone(),
            activation_id: input.activation_id.clone(),
            status_code,
            duration: ms(duration),
            wait_time: wait_ms,
            init_time: init_ms,
            kind: self.config.kind.clone(),
            conductor: false,
            memory: slot.spec.memory_mb,
            caused_by: caused_by.map(str::to_string),
            size: ran.verdict.size,
            user_defined_status_code: user_defined_status_code(&ran.verdict.result),
        };
        lock(&slot.counters).activation(status_code, obtained.cold, removed, body.duration);
        let record = ActivationRecord {
            action: slot.spec.name.clone(),
            activation_id: input.activation_id,
            status_code,
            result: ran.verdict.result,
            size: ran.verdict.size,
            cold: obtained.cold,
            init_ms,
            wait_ms,
            duration_ms: body.duration,
            container: container_id,
            pid,
            logs: ran.logs,
            caused_by: body.caused_by.clone(),
            components: Vec::new(),
        };
        let event = EventMessage::activation(self.config.invoker_id, &input.namespace, body);
        self.sink
            .activation_ended(&event, &record.result, slot.spec.timeout);
        self.sink.publish(&event);
        record
    }
}

/// The run through the proxy and the invoker's verdict on it.
fn run(c: &mut Container, input: &RunInput, timeout: Duration) -> Ran {
    let (outcome, logs) = c.process.run(input, timeout);
    Ran {
        verdict: verdict::of_outcome(&outcome, timeout),
        logs,
    }
}

fn whisk_error(msg: &str) -> Verdict {
    Verdict {
        status_code: status::WHISK_ERROR,
        result: json!({ "error": msg }),
        size: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_without_a_container_is_a_whisk_error_that_keeps_nothing() {
        let v = whisk_error("no container");
        assert_eq!(v.status_code, status::WHISK_ERROR);
        assert!(verdict::removes_container(v.status_code));
        assert_eq!(random_hex32().len(), 32);
        assert_eq!(ms(Duration::from_micros(2500)), 2);
    }
}
