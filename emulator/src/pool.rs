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
//! * every activation produces one `Activation` event, whatever its outcome.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::events::{ActivationBody, EventMessage, EventSink, epoch_ms, user_defined_status_code};
use crate::proxy::{ActionProcess, RunInput, RunOutcome};

/// OpenWhisk status codes.
pub mod status {
    /// Success.
    pub const SUCCESS: u8 = 0;
    /// Application error (a result with an `error` field).
    pub const APPLICATION_ERROR: u8 = 1;
    /// Action developer error (exit, timeout, non-JSON result): the container is removed.
    pub const DEVELOPER_ERROR: u8 = 2;
    /// Whisk internal error: the container is removed.
    pub const WHISK_ERROR: u8 = 3;
}

/// How many recent durations per action the p95 is computed over.
const DURATION_WINDOW: usize = 1000;

/// One deployable action.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionSpec {
    /// Fully qualified name without a leading slash: `namespace/action` or `namespace/pkg/action`.
    pub name: String,
    /// The executable (`exec` of the zip).
    pub exec: PathBuf,
    /// Defaults to `0.0.1`.
    pub version: String,
    /// Memory limit in MB; defaults to 256.
    pub memory_mb: u32,
    /// Action time limit; defaults to 60 s.
    pub timeout: Duration,
    /// Most containers of this action alive at once; defaults to 4.
    pub max_containers: usize,
    /// Init parameters, passed as environment variables.
    pub init_params: Vec<(String, String)>,
}

impl ActionSpec {
    /// A spec with OpenWhisk's defaults. `name` may start with `/`; it is stored without it.
    pub fn new(name: &str, exec: impl Into<PathBuf>) -> Self {
        Self {
            name: name.trim_start_matches('/').to_string(),
            exec: exec.into(),
            version: "0.0.1".into(),
            memory_mb: 256,
            timeout: Duration::from_secs(60),
            max_containers: 4,
            init_params: Vec::new(),
        }
    }

    /// Sets the time limit.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the most containers alive at once (at least 1).
    #[must_use]
    pub fn with_max_containers(mut self, n: usize) -> Self {
        self.max_containers = n.max(1);
        self
    }

    /// Sets the memory limit reported in events.
    #[must_use]
    pub fn with_memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = mb;
        self
    }

    /// Adds an init parameter (an environment variable of every container).
    #[must_use]
    pub fn with_init_param(mut self, key: &str, value: &str) -> Self {
        self.init_params.push((key.to_string(), value.to_string()));
        self
    }

    /// The namespace: the first segment of the name.
    pub fn namespace(&self) -> &str {
        self.name.split('/').next().unwrap_or("")
    }

    fn validate(&mut self) -> Result<()> {
        let segments: Vec<&str> = self.name.split('/').collect();
        if segments.len() < 2 || segments.iter().any(|s| s.is_empty()) {
            return Err(Error::InvalidSpec(format!(
                "action name {:?} must be namespace/action or namespace/package/action",
                self.name
            )));
        }
        if !self.exec.is_file() {
            return Err(Error::MissingExecutable {
                path: self.exec.clone(),
            });
        }
        // The child runs with an empty environment and its own working directory.
        self.exec = self.exec.canonicalize().map_err(|source| Error::Io {
            what: format!("resolving {}", self.exec.display()),
            source,
        })?;
        Ok(())
    }
}

/// Invoker-wide settings. `InvokerConfig::new()` holds every default.
#[derive(Debug, Clone, PartialEq)]
pub struct InvokerConfig {
    /// `N` of the events' `source` (`invoker<N>`). Defaults to 0.
    pub invoker_id: u32,
    /// `N` of the Metric events' `source` (`controller<N>`). Defaults to 0.
    pub controller_id: u32,
    /// Idle time before a container is frozen. Defaults to 50 ms.
    pub pause_grace: Duration,
    /// Idle time before a container is removed. Defaults to 10 minutes.
    pub idle_timeout: Duration,
    /// In-flight activations allowed per namespace. Defaults to 100.
    pub namespace_concurrency: usize,
    /// Longest a request waits for a container before failing as a whisk error. Defaults to 60 s.
    pub queue_timeout: Duration,
    /// Emit a `ConcurrentInvocations` Metric event (value: the namespace's in-flight count,
    /// this one included) for every accepted activation, as the controller's old load balancer
    /// does. Defaults to true.
    pub concurrent_invocations_events: bool,
    /// Runtime kind in the events. Defaults to `rust:1.34`.
    pub kind: String,
    /// When set, every container gets `WHISK_METRICS_PUSHGATEWAY_URL`. Defaults to unset.
    pub pushgateway_url: Option<String>,
    /// When set, passed as `api_key`/`__OW_API_KEY`. Defaults to unset.
    pub api_key: Option<String>,
    /// Per-namespace API keys (namespace, `uuid:key`), as the invoker hands each activation its
    /// namespace's key; they take precedence over `api_key`. Defaults to none.
    pub api_keys: Vec<(String, String)>,
    /// Extra init parameters for every action. Defaults to none.
    pub init_params: Vec<(String, String)>,
}

impl Default for InvokerConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl InvokerConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self {
            invoker_id: 0,
            controller_id: 0,
            pause_grace: Duration::from_millis(50),
            idle_timeout: Duration::from_secs(600),
            namespace_concurrency: 100,
            queue_timeout: Duration::from_secs(60),
            concurrent_invocations_events: true,
            kind: "rust:1.34".into(),
            pushgateway_url: None,
            api_key: None,
            api_keys: Vec::new(),
            init_params: Vec::new(),
        }
    }

    /// Sets the pause grace.
    #[must_use]
    pub fn with_pause_grace(mut self, d: Duration) -> Self {
        self.pause_grace = d;
        self
    }

    /// Sets the idle timeout.
    #[must_use]
    pub fn with_idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// Sets the namespace concurrency limit (at least 1).
    #[must_use]
    pub fn with_namespace_concurrency(mut self, n: usize) -> Self {
        self.namespace_concurrency = n.max(1);
        self
    }

    /// Sets the queue timeout.
    #[must_use]
    pub fn with_queue_timeout(mut self, d: Duration) -> Self {
        self.queue_timeout = d;
        self
    }

    /// Turns the `ConcurrentInvocations` events on or off.
    #[must_use]
    pub fn with_concurrent_invocations_events(mut self, on: bool) -> Self {
        self.concurrent_invocations_events = on;
        self
    }

    /// Sets the Pushgateway URL given to every container.
    #[must_use]
    pub fn with_pushgateway_url(mut self, url: &str) -> Self {
        self.pushgateway_url = Some(url.to_string());
        self
    }

    /// Sets the invoker id.
    #[must_use]
    pub fn with_invoker_id(mut self, id: u32) -> Self {
        self.invoker_id = id;
        self
    }

    /// Sets the runtime kind.
    #[must_use]
    pub fn with_kind(mut self, kind: &str) -> Self {
        self.kind = kind.to_string();
        self
    }

    /// Gives the activations of `namespace` the API key `key` (`uuid:key`) as `api_key` and
    /// `__OW_API_KEY` (see [`crate::controller`] for the controller that knows it).
    #[must_use]
    pub fn with_api_key(mut self, namespace: &str, key: &str) -> Self {
        self.api_keys.retain(|(ns, _)| ns != namespace);
        self.api_keys.push((namespace.to_string(), key.to_string()));
        self
    }

    /// The API key of `namespace`'s activations: its own, else `api_key`.
    pub fn api_key_for(&self, namespace: &str) -> Option<String> {
        self.api_keys
            .iter()
            .find(|(ns, _)| ns == namespace)
            .map(|(_, k)| k.clone())
            .or_else(|| self.api_key.clone())
    }

    /// Adds an init parameter given to every action.
    #[must_use]
    pub fn with_init_param(mut self, key: &str, value: &str) -> Self {
        self.init_params.push((key.to_string(), value.to_string()));
        self
    }
}

/// What happened to one activation.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationRecord {
    /// Action name (no leading slash).
    pub action: String,
    /// 32 hex characters.
    pub activation_id: String,
    /// 0..3.
    pub status_code: u8,
    /// The result the user sees.
    pub result: Value,
    /// Whether a container was started for it.
    pub cold: bool,
    /// Init time in ms (0 when warm).
    pub init_ms: u64,
    /// Wait time in ms.
    pub wait_ms: u64,
    /// Duration in ms (init included when cold).
    pub duration_ms: u64,
    /// Per-action sequence number of the container that ran it (0 when none could be started).
    pub container: u64,
    /// Process id of that container (0 when none could be started).
    pub pid: u32,
    /// Its stdout/stderr lines, each prefixed with the stream name.
    pub logs: Vec<String>,
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

/// A snapshot of one action's counters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ActionStats {
    /// Action name.
    pub action: String,
    /// Activations completed (all statuses).
    pub activations: u64,
    /// Activations by status code 0..3.
    pub statuses: [u64; 4],
    /// Cold starts (= containers created).
    pub cold_starts: u64,
    /// Containers created.
    pub containers_created: u64,
    /// Containers removed (idle timeout, errors, crashes, shutdown).
    pub containers_removed: u64,
    /// Containers alive now.
    pub containers_alive: usize,
    /// Of those, frozen now.
    pub containers_frozen: usize,
    /// Times a container was frozen.
    pub freezes: u64,
    /// Times a container was thawed for reuse.
    pub thaws: u64,
    /// Requests rejected by the namespace limit.
    pub rejected: u64,
    /// 95th percentile of the last 1000 durations, ms.
    pub p95_duration_ms: Option<u64>,
}

impl ActionStats {
    /// Activations with a non-zero status.
    pub fn errors(&self) -> u64 {
        self.statuses[1..].iter().sum()
    }
}

#[derive(Debug)]
struct Container {
    id: u64,
    process: ActionProcess,
}

#[derive(Debug)]
struct Idle {
    container: Container,
    since: Instant,
}

#[derive(Debug, Default)]
struct PoolState {
    idle: Vec<Idle>,
    busy: usize,
    next_id: u64,
}

#[derive(Debug, Default)]
struct Counters {
    activations: u64,
    statuses: [u64; 4],
    cold_starts: u64,
    created: u64,
    removed: u64,
    freezes: u64,
    thaws: u64,
    rejected: u64,
    durations: VecDeque<u64>,
}

#[derive(Debug)]
struct ActionSlot {
    spec: ActionSpec,
    pool: Mutex<PoolState>,
    freed: Condvar,
    counters: Mutex<Counters>,
}

struct Inner {
    config: InvokerConfig,
    sink: Arc<dyn EventSink>,
    actions: HashMap<String, ActionSlot>,
    order: Vec<String>,
    in_flight: Mutex<HashMap<String, usize>>,
    stopping: AtomicBool,
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
            let slot = ActionSlot {
                spec,
                pool: Mutex::new(PoolState::default()),
                freed: Condvar::new(),
                counters: Mutex::new(Counters::default()),
            };
            map.insert(slot.spec.name.clone(), slot);
        }
        let inner = Arc::new(Inner {
            config,
            sink,
            actions: map,
            order,
            in_flight: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
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

    /// Invokes `action` (with or without a leading slash) with `params`, blocking until it
    /// completes. `submitted` is when the request arrived (the start of its wait time).
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
            let idle: Vec<Idle> = lock(&slot.pool).idle.drain(..).collect();
            lock(&slot.counters).removed += idle.len() as u64;
            drop(idle);
            slot.freed.notify_all();
        }
    }
}

impl Drop for Invoker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl ActionSlot {
    fn stats(&self) -> ActionStats {
        let (alive, frozen) = {
            let pool = lock(&self.pool);
            (
                pool.busy + pool.idle.len(),
                pool.idle
                    .iter()
                    .filter(|i| i.container.process.is_frozen())
                    .count(),
            )
        };
        let c = lock(&self.counters);
        ActionStats {
            action: self.spec.name.clone(),
            activations: c.activations,
            statuses: c.statuses,
            cold_starts: c.cold_starts,
            containers_created: c.created,
            containers_removed: c.removed,
            containers_alive: alive,
            containers_frozen: frozen,
            freezes: c.freezes,
            thaws: c.thaws,
            rejected: c.rejected,
            p95_duration_ms: percentile(&c.durations, 0.95),
        }
    }
}

/// Nearest-rank percentile.
fn percentile(values: &VecDeque<u64>, q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<u64> = values.iter().copied().collect();
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v.get(rank - 1).copied()
}

fn random_hex32() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Decrements a namespace's in-flight count when dropped.
struct InFlight<'a> {
    inner: &'a Inner,
    namespace: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.inner.in_flight).get_mut(&self.namespace) {
            *n = n.saturating_sub(1);
        }
    }
}

enum Acquired {
    Warm(Container),
    Cold(u64),
    TimedOut,
}

impl Inner {
    fn invoke(&self, action: &str, params: Value, submitted: Instant) -> Result<Invocation> {
        let name = action.trim_start_matches('/');
        let slot = self
            .actions
            .get(name)
            .ok_or_else(|| Error::UnknownAction(name.to_string()))?;
        let namespace = slot.spec.namespace().to_string();

        let _in_flight = {
            let mut map = lock(&self.in_flight);
            let n = map.entry(namespace.clone()).or_insert(0);
            if *n >= self.config.namespace_concurrency {
                drop(map);
                lock(&slot.counters).rejected += 1;
                self.sink.publish(&EventMessage::metric(
                    self.config.controller_id,
                    &namespace,
                    "ConcurrentRateLimit",
                    1,
                ));
                return Ok(Invocation::Rejected { namespace });
            }
            *n += 1;
            let in_flight = i64::try_from(*n).unwrap_or(i64::MAX);
            drop(map);
            if self.config.concurrent_invocations_events {
                self.sink.publish(&EventMessage::metric(
                    self.config.controller_id,
                    &namespace,
                    "ConcurrentInvocations",
                    in_flight,
                ));
            }
            InFlight {
                inner: self,
                namespace: namespace.clone(),
            }
        };

        let acquired = self.acquire(slot, submitted);
        let started = Instant::now();
        let wait_ms = ms(started.saturating_duration_since(submitted));
        let input = RunInput {
            value: params,
            namespace: namespace.clone(),
            action_name: format!("/{}", slot.spec.name),
            action_version: slot.spec.version.clone(),
            activation_id: random_hex32(),
            transaction_id: format!("tid_{:016x}", fastrand::u64(..)),
            deadline_ms: u128::from(epoch_ms(SystemTime::now())) + slot.spec.timeout.as_millis(),
            api_key: self.config.api_key_for(&namespace),
        };

        let reserved = !matches!(acquired, Acquired::TimedOut);
        let mut cold = false;
        let mut init = Duration::ZERO;
        let mut failure: Option<(u8, Value)> = None;
        let mut container = match acquired {
            Acquired::Warm(c) => Some(c),
            Acquired::TimedOut => {
                failure = Some((
                    status::WHISK_ERROR,
                    json!({"error": format!(
                        "no container of {} became free within {} ms", slot.spec.name, ms(self.config.queue_timeout)
                    )}),
                ));
                None
            }
            Acquired::Cold(id) => {
                let mut env = input.init_env();
                env.extend(self.container_params(&slot.spec));
                let result = ActionProcess::start(&slot.spec.exec, &env);
                init = started.elapsed();
                match result {
                    Ok(process) => {
                        cold = true;
                        Some(Container { id, process })
                    }
                    Err(e @ Error::Spawn { .. }) if slot.spec.exec.is_file() => {
                        // It started and died during init: a developer error, a container that
                        // was created (and is gone).
                        cold = true;
                        tracing::warn!("init of {} failed: {e}", slot.spec.name);
                        failure = Some((
                            status::DEVELOPER_ERROR,
                            json!({"error": "The action failed to initialize."}),
                        ));
                        None
                    }
                    Err(e) => {
                        tracing::error!("cannot start a container of {}: {e}", slot.spec.name);
                        init = Duration::ZERO;
                        failure = Some((status::WHISK_ERROR, json!({"error": e.to_string()})));
                        None
                    }
                }
            }
        };

        let mut logs = Vec::new();
        let mut size = None;
        let (status_code, result) = match (&mut container, failure) {
            (_, Some(f)) => f,
            (Some(c), None) => {
                let (outcome, lines) = c.process.run(&input, slot.spec.timeout);
                logs = lines;
                if let RunOutcome::Line(line) = &outcome {
                    size = Some(line.len() as u64);
                }
                interpret(outcome, slot.spec.timeout)
            }
            (None, None) => (status::WHISK_ERROR, json!({"error": "no container"})),
        };
        let duration = started.elapsed();
        let container_id = container.as_ref().map_or(0, |c| c.id);
        let pid = container.as_ref().map_or(0, |c| c.process.pid());
        let removed = reserved && self.release(slot, container, status_code, cold);

        let user_code = user_defined_status_code(&result);
        let body = ActivationBody {
            name: slot.spec.name.clone(),
            activation_id: input.activation_id.clone(),
            status_code,
            duration: ms(duration),
            wait_time: wait_ms,
            // A cold start reports at least 1 ms so that initTime > 0 marks it.
            init_time: if cold { ms(init).max(1) } else { 0 },
            kind: self.config.kind.clone(),
            conductor: false,
            memory: slot.spec.memory_mb,
            caused_by: None,
            size,
            user_defined_status_code: user_code,
        };
        let record = ActivationRecord {
            action: slot.spec.name.clone(),
            activation_id: input.activation_id,
            status_code,
            result,
            cold,
            init_ms: body.init_time,
            wait_ms,
            duration_ms: body.duration,
            container: container_id,
            pid,
            logs,
        };
        {
            let mut c = lock(&slot.counters);
            c.activations += 1;
            c.statuses[usize::from(status_code.min(3))] += 1;
            if cold {
                c.cold_starts += 1;
            }
            if removed {
                c.removed += 1;
            }
            if c.durations.len() == DURATION_WINDOW {
                c.durations.pop_front();
            }
            c.durations.push_back(body.duration);
        }
        self.sink.publish(&EventMessage::activation(
            self.config.invoker_id,
            &namespace,
            body,
        ));
        Ok(Invocation::Completed(record))
    }

    fn container_params(&self, spec: &ActionSpec) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(url) = &self.config.pushgateway_url {
            env.push(("WHISK_METRICS_PUSHGATEWAY_URL".to_string(), url.clone()));
        }
        env.extend(self.config.init_params.iter().cloned());
        env.extend(spec.init_params.iter().cloned());
        env
    }

    /// A warm container, a reservation for a cold one, or a timeout.
    fn acquire(&self, slot: &ActionSlot, submitted: Instant) -> Acquired {
        let deadline = submitted + self.config.queue_timeout;
        let mut pool = lock(&slot.pool);
        loop {
            // Most recently used first, so the others age towards removal.
            if let Some(idle) = pool.idle.pop() {
                pool.busy += 1;
                drop(pool);
                let mut c = idle.container;
                if c.process.is_frozen() {
                    c.process.thaw();
                    lock(&slot.counters).thaws += 1;
                }
                return Acquired::Warm(c);
            }
            if pool.busy + pool.idle.len() < slot.spec.max_containers {
                pool.busy += 1;
                pool.next_id += 1;
                let id = pool.next_id;
                drop(pool);
                lock(&slot.counters).created += 1;
                return Acquired::Cold(id);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stopping.load(Ordering::SeqCst) {
                return Acquired::TimedOut;
            }
            pool = slot
                .freed
                .wait_timeout(pool, left.min(Duration::from_millis(100)))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Returns the container to the pool, or removes it after a developer/whisk error or during
    /// shutdown. Returns whether a container was removed.
    fn release(
        &self,
        slot: &ActionSlot,
        container: Option<Container>,
        status_code: u8,
        cold: bool,
    ) -> bool {
        let mut pool = lock(&slot.pool);
        let Some(c) = container else {
            // The reservation of a failed cold start (or a timed-out wait) is given back.
            pool.busy = pool.busy.saturating_sub(1);
            drop(pool);
            slot.freed.notify_one();
            return cold;
        };
        pool.busy = pool.busy.saturating_sub(1);
        let remove = status_code >= status::DEVELOPER_ERROR || self.stopping.load(Ordering::SeqCst);
        if !remove {
            pool.idle.push(Idle {
                container: c,
                since: Instant::now(),
            });
            drop(pool);
            slot.freed.notify_one();
            return false;
        }
        drop(pool);
        drop(c); // SIGKILL + reap
        slot.freed.notify_one();
        true
    }

    /// Freezes containers idle for the pause grace, removes those idle for the idle timeout or
    /// found dead. Runs until shutdown.
    fn maintain(&self) {
        let tick = (self.config.pause_grace / 5)
            .clamp(Duration::from_millis(2), Duration::from_millis(50));
        while !self.stopping.load(Ordering::SeqCst) {
            std::thread::sleep(tick);
            for slot in self.actions.values() {
                let mut doomed = Vec::new();
                let mut frozen = 0;
                {
                    let mut pool = lock(&slot.pool);
                    let mut i = 0;
                    while i < pool.idle.len() {
                        let idle = &mut pool.idle[i];
                        let age = idle.since.elapsed();
                        if age >= self.config.idle_timeout || idle.container.process.has_exited() {
                            doomed.push(pool.idle.remove(i));
                            continue;
                        }
                        if age >= self.config.pause_grace
                            && !idle.container.process.is_frozen()
                            && idle.container.process.freeze()
                        {
                            frozen += 1;
                        }
                        i += 1;
                    }
                }
                if frozen > 0 || !doomed.is_empty() {
                    let mut c = lock(&slot.counters);
                    c.freezes += frozen;
                    c.removed += doomed.len() as u64;
                }
                if !doomed.is_empty() {
                    drop(doomed); // SIGKILL + reap, outside the pool lock
                    slot.freed.notify_all();
                }
            }
        }
    }
}

/// Turns the proxy's outcome into OpenWhisk's status code and the user-visible result.
fn interpret(outcome: RunOutcome, timeout: Duration) -> (u8, Value) {
    match outcome {
        RunOutcome::Line(line) => match serde_json::from_str::<Value>(&line) {
            Ok(v @ Value::Object(_)) if v.get("error").is_some() => (status::APPLICATION_ERROR, v),
            Ok(v @ (Value::Object(_) | Value::Array(_))) => (status::SUCCESS, v),
            _ => (
                status::DEVELOPER_ERROR,
                json!({"error": "The action did not return a dictionary or array."}),
            ),
        },
        RunOutcome::Exited => (status::DEVELOPER_ERROR, json!({"error": "command exited"})),
        RunOutcome::TimedOut => (
            status::DEVELOPER_ERROR,
            json!({"error": format!("The action exceeded its time limits of {} milliseconds.", ms(timeout))}),
        ),
        RunOutcome::TooLarge => (
            status::DEVELOPER_ERROR,
            json!({"error": "The action produced a response that exceeded the allowed length."}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_map_to_openwhisk_status_codes() {
        let t = Duration::from_millis(1500);
        assert_eq!(
            interpret(RunOutcome::Line("{\"ok\":1}".into()), t).0,
            status::SUCCESS
        );
        assert_eq!(
            interpret(RunOutcome::Line("[1]".into()), t).0,
            status::SUCCESS
        );
        assert_eq!(
            interpret(RunOutcome::Line("{\"error\":\"x\"}".into()), t).0,
            status::APPLICATION_ERROR
        );
        assert_eq!(
            interpret(RunOutcome::Line("42".into()), t).0,
            status::DEVELOPER_ERROR
        );
        assert_eq!(
            interpret(RunOutcome::Line("not json".into()), t).0,
            status::DEVELOPER_ERROR
        );
        assert_eq!(
            interpret(RunOutcome::Exited, t),
            (status::DEVELOPER_ERROR, json!({"error": "command exited"}))
        );
        let (code, v) = interpret(RunOutcome::TimedOut, t);
        assert_eq!(code, status::DEVELOPER_ERROR);
        assert!(v["error"].as_str().unwrap().contains("1500 milliseconds"));
    }

    #[test]
    fn p95_is_the_nearest_rank() {
        let v: VecDeque<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.95), Some(95));
        assert_eq!(percentile(&VecDeque::new(), 0.95), None);
        assert_eq!(percentile(&VecDeque::from([7]), 0.95), Some(7));
    }

    #[test]
    fn action_names_need_a_namespace_and_an_existing_executable() {
        let mut s = ActionSpec::new("/hello", "/bin/sh");
        assert!(matches!(s.validate(), Err(Error::InvalidSpec(_))));
        let mut s = ActionSpec::new("/guest/hello", "/nonexistent/exec");
        assert!(matches!(s.validate(), Err(Error::MissingExecutable { .. })));
        let mut s = ActionSpec::new("/guest/pkg/hello", "/bin/sh");
        assert!(s.validate().is_ok());
        assert_eq!(
            (s.name.as_str(), s.namespace()),
            ("guest/pkg/hello", "guest")
        );
    }
}
