//! The OpenWhisk action loop, as the Go actionloop proxy drives it: one JSON line per activation
//! on stdin, `__OW_*` variables set for the handler, exactly one JSON result line on fd 3,
//! stdout and stderr flushed, then the push (or the push first, in strict mode).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::config::{Config, PushMode};
use crate::context::{Context, value_text};
use crate::identity::ActionIdentity;
use crate::push::Pusher;
use crate::registry::{self, Metrics, Outcome};

/// In strict mode the push must leave this much of the activation's time for the result.
const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// When the process started, as far as the SDK can tell: the first time the SDK is touched
/// (registering a metric or entering the loop), which is at the top of `main` in practice.
pub(crate) fn process_start() -> (Instant, SystemTime) {
    static START: OnceLock<(Instant, SystemTime)> = OnceLock::new();
    *START.get_or_init(|| (Instant::now(), SystemTime::now()))
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Runs the action loop with the configuration from the environment. See the crate docs.
pub fn run<F, E>(handler: F) -> ExitCode
where
    F: FnMut(Value) -> Result<Value, E>,
    E: std::fmt::Display,
{
    ActionLoop::new(Config::from_env()).run(handler)
}

/// Like [`run`], with the activation's [`Context`] passed to the handler.
pub fn run_with_context<F, E>(handler: F) -> ExitCode
where
    F: FnMut(Value, &Context) -> Result<Value, E>,
    E: std::fmt::Display,
{
    ActionLoop::new(Config::from_env()).run_with_context(handler)
}

/// The action loop with an explicit [`Config`]:
/// `ActionLoop::new(Config::from_env().with_job("x")).run(handler)`.
#[derive(Debug)]
pub struct ActionLoop {
    config: Config,
}

/// The loop's state between activations.
struct Serving {
    metrics: &'static Metrics,
    pusher: Option<Pusher>,
    mode: PushMode,
    identity: ActionIdentity,
    action_version: Option<String>,
    first_result_written: bool,
    api_host: Option<String>,
    /// `__OW_*` variable name per activation key.
    env_names: HashMap<String, String>,
}

type Handler<'a> = dyn FnMut(Value, &Context) -> Result<Value, String> + 'a;

impl ActionLoop {
    /// A loop that pushes according to `config`.
    pub fn new(config: Config) -> Self {
        Self { config }
    }

    /// Serves activations with `handler` until stdin closes. Returns success then, failure when
    /// fd 3 or stdin breaks.
    pub fn run<F, E>(self, mut handler: F) -> ExitCode
    where
        F: FnMut(Value) -> Result<Value, E>,
        E: std::fmt::Display,
    {
        self.run_dyn(&mut |value, _ctx: &Context| handler(value).map_err(|e| e.to_string()))
    }

    /// Like [`ActionLoop::run`], with the activation's [`Context`] passed to the handler.
    pub fn run_with_context<F, E>(self, mut handler: F) -> ExitCode
    where
        F: FnMut(Value, &Context) -> Result<Value, E>,
        E: std::fmt::Display,
    {
        self.run_dyn(&mut |value, ctx: &Context| handler(value, ctx).map_err(|e| e.to_string()))
    }

    fn run_dyn(self, handler: &mut Handler<'_>) -> ExitCode {
        let mut out = result_channel();
        if std::env::var_os("__OW_WAIT_FOR_ACK").is_some_and(|v| !v.is_empty()) {
            if let Err(e) = out.write_all(b"{\"ok\":true}\n").and_then(|()| out.flush()) {
                eprintln!("whisk-metrics: cannot write the start acknowledgement on fd 3: {e}");
                return ExitCode::FAILURE;
            }
        }
        let mut serving = Serving::new(&self.config);
        let stdin = std::io::stdin();
        match serving.serve(stdin.lock(), &mut out, handler) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("whisk-metrics: action loop stopped: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

/// fd 3 as the proxy passes it; stdout (with one notice) when the action runs without a proxy.
#[allow(unsafe_code)]
fn result_channel() -> Box<dyn Write> {
    // SAFETY: fcntl(F_GETFD) only queries the descriptor; it is valid to call on any number.
    let open = unsafe { libc::fcntl(3, libc::F_GETFD) } != -1;
    if open {
        use std::os::fd::FromRawFd;
        // SAFETY: fd 3 is open (checked above) and, by the actionloop protocol, is the result
        // pipe the proxy gave this process; nothing else in the process owns it.
        Box::new(unsafe { File::from_raw_fd(3) })
    } else {
        eprintln!(
            "whisk-metrics: fd 3 is not open (not run by an actionloop proxy); results go to stdout"
        );
        Box::new(std::io::stdout())
    }
}

impl Serving {
    fn new(config: &Config) -> Self {
        let (_, started) = process_start();
        let metrics = registry::global();
        metrics.builtins.container_start.set(unix_seconds(started));
        let pusher = match Pusher::from_config(config) {
            Ok(Some(p)) => Some(p),
            Ok(None) if config.disabled => None,
            Ok(None) => {
                eprintln!(
                    "whisk-metrics: WHISK_METRICS_PUSHGATEWAY_URL is not set; metrics are kept but not pushed"
                );
                None
            }
            Err(e) => {
                eprintln!("whisk-metrics: not pushing: {e}");
                None
            }
        };
        let identity = std::env::var("__OW_ACTION_NAME")
            .map(|n| ActionIdentity::from_action_name(&n))
            .unwrap_or_default();
        Self {
            metrics,
            pusher,
            mode: config.push_mode,
            identity,
            action_version: None,
            first_result_written: false,
            api_host: std::env::var("__OW_API_HOST").ok(),
            env_names: HashMap::new(),
        }
    }

    /// Serves every line of `input`, writing one result line per input line to `out`.
    fn serve(
        &mut self,
        mut input: impl BufRead,
        out: &mut dyn Write,
        handler: &mut Handler<'_>,
    ) -> std::io::Result<()> {
        let mut line = Vec::with_capacity(4096);
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            self.activation(&line, out, handler)?;
        }
        if let Some(p) = self.pusher.as_mut() {
            // The container is going away: its group would only go stale.
            p.delete(&self.identity);
        }
        Ok(())
    }

    fn activation(
        &mut self,
        line: &[u8],
        out: &mut dyn Write,
        handler: &mut Handler<'_>,
    ) -> std::io::Result<()> {
        let (result, context) = match parse_line(line) {
            Ok((value, fields)) => {
                set_ow_env(&fields, &mut self.env_names);
                let ctx = Context::from_fields(&fields, self.api_host.as_deref());
                self.learn_identity(&ctx);
                let started = Instant::now();
                let (result, outcome) = call(handler, value, &ctx);
                let b = &self.metrics.builtins;
                b.activation_duration
                    .observe(started.elapsed().as_secs_f64());
                b.outcome(outcome).inc();
                b.last_activation.set(unix_seconds(SystemTime::now()));
                (result, Some(ctx))
            }
            Err(msg) => {
                eprintln!("whisk-metrics: {msg}");
                (json!({ "error": msg }), None)
            }
        };
        let mut text = serde_json::to_string(&result).unwrap_or_else(|e| {
            json!({ "error": format!("the result could not be serialized: {e}") }).to_string()
        });
        text.push('\n');
        flush_std();
        if self.mode == PushMode::BeforeResult {
            self.mark_first_result();
            let deadline = context
                .as_ref()
                .and_then(|c| c.deadline)
                .map(deadline_instant);
            self.push(deadline.map(|d| d.checked_sub(DEADLINE_MARGIN).unwrap_or(d)));
            out.write_all(text.as_bytes())?;
            out.flush()?;
        } else {
            out.write_all(text.as_bytes())?;
            out.flush()?;
            self.mark_first_result();
            // Let the proxy, woken by the result line, take the CPU before the push does: on a
            // container with one or two cores it otherwise waits for the push's encoding and
            // sends (measured in the benchmark: p50 latency of the result back to the level
            // without pushing). Costs one syscall.
            if self.pusher.is_some() {
                std::thread::yield_now();
            }
            self.push(None);
        }
        flush_std();
        Ok(())
    }

    fn mark_first_result(&mut self) {
        if !self.first_result_written {
            self.first_result_written = true;
            let (start, _) = process_start();
            self.metrics
                .builtins
                .cold_start
                .set(start.elapsed().as_secs_f64());
        }
    }

    fn push(&mut self, deadline: Option<Instant>) {
        if let Some(p) = self.pusher.as_mut() {
            p.push(self.metrics, &self.identity, deadline, false);
        }
    }

    /// The action's identity from the activation (fixed for a container; set on first sight).
    fn learn_identity(&mut self, ctx: &Context) {
        if !ctx.action_name.is_empty() {
            let id = ActionIdentity::from_action_name(&ctx.action_name);
            if id != self.identity {
                self.identity = id;
            }
        }
        if self.action_version.as_deref() != Some(ctx.action_version.as_str()) {
            let info = &self.metrics.builtins.container_info;
            info.reset();
            if let Ok(g) =
                info.get_metric_with_label_values(&[&ctx.action_version, env!("CARGO_PKG_VERSION")])
            {
                g.set(1.0);
            }
            self.action_version = Some(ctx.action_version.clone());
        }
    }
}

/// Runs the handler, turning its error into `{"error": ...}` and a panic into a developer error.
fn call(handler: &mut Handler<'_>, value: Value, ctx: &Context) -> (Value, Outcome) {
    match catch_unwind(AssertUnwindSafe(|| handler(value, ctx))) {
        Ok(Ok(v)) if v.is_object() || v.is_array() => (v, Outcome::Success),
        Ok(Ok(v)) => {
            let kind = match v {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                _ => "a string",
            };
            let msg = format!(
                "the action returned {kind}; an OpenWhisk result must be a JSON object or array"
            );
            eprintln!("whisk-metrics: {msg}");
            (json!({ "error": msg }), Outcome::DeveloperError)
        }
        Ok(Err(msg)) => {
            eprintln!("{msg}");
            (json!({ "error": msg }), Outcome::ApplicationError)
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic payload".to_string());
            (
                json!({ "error": format!("the action panicked: {what}") }),
                Outcome::DeveloperError,
            )
        }
    }
}

/// One stdin line: `{"value": …, "namespace": …, …}`.
fn parse_line(line: &[u8]) -> Result<(Value, Map<String, Value>), String> {
    let trimmed = line.strip_suffix(b"\n").unwrap_or(line);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    let parsed: Value = serde_json::from_slice(trimmed)
        .map_err(|e| format!("malformed activation input (not JSON): {e}"))?;
    let Value::Object(mut fields) = parsed else {
        return Err("malformed activation input: expected a JSON object".to_string());
    };
    let value = fields
        .remove("value")
        .ok_or_else(|| "malformed activation input: no `value` key".to_string())?;
    Ok((value, fields))
}

/// Sets `__OW_<KEY>` for every key but `value`, as the official Rust launcher does. `names`
/// caches the variable name of each key (the keys repeat on every activation).
#[allow(unsafe_code)]
fn set_ow_env(fields: &Map<String, Value>, names: &mut HashMap<String, String>) {
    /// More distinct keys than this are not cached (the proxy sends about eight).
    const MAX_CACHED_NAMES: usize = 64;
    for (key, value) in fields {
        let computed;
        let name = match names.get(key) {
            Some(n) => n.as_str(),
            None if names.len() < MAX_CACHED_NAMES => names
                .entry(key.clone())
                .or_insert_with(|| format!("__OW_{}", key.to_uppercase()))
                .as_str(),
            None => {
                computed = format!("__OW_{}", key.to_uppercase());
                computed.as_str()
            }
        };
        let text: Cow<'_, str> = match value {
            Value::String(s) => Cow::Borrowed(s),
            other => Cow::Owned(value_text(other)),
        };
        // set_var panics on these; such a key cannot be a variable name anyway.
        if key.is_empty() || name.contains(['=', '\0']) || text.contains('\0') {
            continue;
        }
        // Most values (namespace, action name and version, API key) repeat between activations:
        // reading is much cheaper than setting (setenv allocates and takes the write lock).
        if std::env::var_os(name).is_some_and(|current| current == *text) {
            continue;
        }
        // SAFETY: called on the loop's thread between activations, before the handler runs; the
        // SDK itself starts no threads, so nothing of ours reads the environment concurrently.
        // Threads the action starts itself must not read the environment while the loop runs
        // (documented in the crate docs); the official launcher has the same contract.
        unsafe { std::env::set_var(name, &*text) };
    }
}

fn deadline_instant(deadline: SystemTime) -> Instant {
    let now = Instant::now();
    match deadline.duration_since(SystemTime::now()) {
        Ok(left) => now + left,
        Err(_) => now,
    }
}

fn flush_std() {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving() -> Serving {
        let mut s = Serving::new(&Config::new().with_disabled(true));
        s.pusher = None;
        s
    }

    fn serve(input: &str, handler: &mut Handler<'_>) -> Vec<Value> {
        let mut out = Vec::new();
        serving()
            .serve(input.as_bytes(), &mut out, handler)
            .unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn answers_each_line_with_one_result_line() {
        let input = "{\"value\":{\"n\":1}}\n{\"value\":{\"n\":2}}\n{\"value\":[3]}";
        let results = serve(input, &mut |v, _| Ok(json!({ "echo": v })));
        assert_eq!(
            results,
            vec![
                json!({"echo":{"n":1}}),
                json!({"echo":{"n":2}}),
                json!({"echo":[3]})
            ]
        );
    }

    #[test]
    fn malformed_line_gets_an_error_result_and_the_loop_goes_on() {
        let input = "not json\n{\"novalue\":1}\n[1]\n\n{\"value\":{}}\n";
        let results = serve(input, &mut |_, _| Ok(json!({"ok": true})));
        assert_eq!(results.len(), 5);
        for r in &results[..4] {
            let msg = r["error"].as_str().unwrap();
            assert!(msg.starts_with("malformed activation input"), "{msg}");
        }
        assert_eq!(results[4], json!({"ok": true}));
    }

    #[test]
    fn handler_error_becomes_error_result_and_counts_application_error() {
        let before = registry::global().builtins.application_error.get();
        let results = serve("{\"value\":{}}\n", &mut |_, _| {
            Err("out of stock".to_string())
        });
        assert_eq!(results, vec![json!({"error": "out of stock"})]);
        assert!(registry::global().builtins.application_error.get() > before);
    }

    #[test]
    fn panic_is_caught_counted_as_developer_error_and_serving_continues() {
        let before = registry::global().builtins.developer_error.get();
        let mut calls = 0;
        let results = serve("{\"value\":{}}\n{\"value\":{}}\n", &mut |_, _| {
            calls += 1;
            if calls == 1 {
                panic!("boom {}", calls);
            }
            Ok(json!({"calls": calls}))
        });
        assert_eq!(results[0], json!({"error": "the action panicked: boom 1"}));
        assert_eq!(results[1], json!({"calls": 2}));
        assert!(registry::global().builtins.developer_error.get() > before);
    }

    #[test]
    fn non_object_result_becomes_an_error() {
        let results = serve("{\"value\":{}}\n", &mut |_, _| Ok(json!("just text")));
        assert!(
            results[0]["error"].as_str().unwrap().contains("a string"),
            "{results:?}"
        );
    }

    #[test]
    fn sets_ow_environment_and_context_before_the_handler() {
        let input = json!({
            "value": {}, "action_name": "/ns/pkg/envtest", "action_version": "1.2.3",
            "activation_id": "act1", "deadline": "4102444800000", "odd=key": "x"
        })
        .to_string();
        let results = serve(&input, &mut |_, ctx| {
            Ok(json!({
                "env_name": std::env::var("__OW_ACTION_NAME").unwrap_or_default(),
                "env_deadline": std::env::var("__OW_DEADLINE").unwrap_or_default(),
                "ctx_version": ctx.action_version,
                "ctx_id": ctx.activation_id,
                "has_deadline": ctx.deadline.is_some(),
            }))
        });
        assert_eq!(
            results[0],
            json!({
                "env_name": "/ns/pkg/envtest", "env_deadline": "4102444800000",
                "ctx_version": "1.2.3", "ctx_id": "act1", "has_deadline": true
            })
        );
    }

    #[test]
    fn updates_changed_ow_variables_and_restores_ones_the_handler_changed() {
        let line = |id: &str, n: u64| {
            json!({"value": {}, "activation_id": id, "envtest_number": n, "action_version": "9"})
                .to_string()
        };
        let input = format!("{}\n{}\n", line("first", 1), line("second", 2));
        let results = serve(&input, &mut |_, _| {
            let seen = json!({
                "id": std::env::var("__OW_ACTIVATION_ID").unwrap_or_default(),
                "number": std::env::var("__OW_ENVTEST_NUMBER").unwrap_or_default(),
                "version": std::env::var("__OW_ACTION_VERSION").unwrap_or_default(),
            });
            // a handler that overwrites a variable gets the activation's value back next time
            #[allow(unsafe_code)]
            // SAFETY: the test's handler runs on the loop's thread, like the loop's set_var.
            unsafe {
                std::env::set_var("__OW_ACTION_VERSION", "changed by the handler")
            };
            Ok(seen)
        });
        assert_eq!(
            results,
            vec![
                json!({"id": "first", "number": "1", "version": "9"}),
                json!({"id": "second", "number": "2", "version": "9"}),
            ]
        );
    }
}
