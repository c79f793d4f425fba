//! The OpenWhisk action loop, as the Go actionloop proxy drives it: one JSON line per activation
//! on stdin, `__OW_*` variables set for the handler, exactly one JSON result line on fd 3,
//! stdout and stderr flushed, then the push (or the push first, in strict mode).

use std::fs::File;
use std::io::{BufRead, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::builtins::Outcome;
use crate::config::{Config, OnPanic, PushMode};
use crate::context::Context;
use crate::identity::ActionIdentity;
use crate::push::Pusher;
use crate::registry::{self, Metrics};
use crate::resources::Resources;
use crate::runline::{self, Fields};

/// In strict mode the push must leave this much of the activation's time for the result.
const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// Exit code after a panic under [`OnPanic::Exit`]: the code of an uncaught Rust panic.
const PANIC_EXIT_CODE: u8 = 101;

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
    on_panic: OnPanic,
    identity: ActionIdentity,
    first_result_written: bool,
    api_host: Option<String>,
    /// The `__OW_*` variables the loop sets, with the value each was last set to.
    env: Vec<OwVar>,
    resources: Resources,
    /// The current activation's context, its strings reused from one activation to the next.
    context: Context,
    /// The action name [`Serving::identity`] was made from.
    identity_source: String,
    /// The result line being written, reused.
    result_line: Vec<u8>,
    /// The process's CPU time when the loop started waiting for the current activation's line.
    cpu_mark: Option<Duration>,
}

/// One `__OW_*` variable the loop sets. Its `NAME=value` string is a buffer of the loop's own,
/// put into the environment once with putenv(3) and rewritten in place when the value changes:
/// no allocation, no lock, no search per activation — and no leak: glibc's setenv(3) keeps a
/// copy of every distinct value it was ever given (~96 bytes each, measured), and the
/// activation id and deadline are new on every activation.
struct OwVar {
    /// The run line's key, e.g. `activation_id`.
    key: String,
    /// `NAME=` (e.g. `__OW_ACTIVATION_ID=`), then the value and a NUL: the environment's string.
    /// Never freed (the environment may point at it until the process ends); replaced by a
    /// larger one, at least twice the size, when a value outgrows it.
    buf: &'static [std::cell::Cell<u8>],
    /// Length of `NAME=`.
    prefix: usize,
    /// The variable's name.
    name: String,
    /// The name and a NUL, for getenv.
    name_c: Vec<u8>,
    /// The value in `buf`.
    value: String,
    /// Whether the environment points at `buf` (false once the handler set or removed the
    /// variable itself).
    current: bool,
}

impl OwVar {
    fn new(key: &str) -> Self {
        let name = format!("__OW_{}", key.to_uppercase());
        let prefix = format!("{name}=");
        let mut name_c = name.clone().into_bytes();
        name_c.push(0);
        let mut var = Self {
            key: key.to_string(),
            buf: &[],
            prefix: prefix.len(),
            name,
            name_c,
            value: String::new(),
            current: false,
        };
        var.grow(prefix.as_bytes(), 0);
        var
    }

    /// A new buffer with room for a value of `len` bytes (the old one stays alive: the
    /// environment may still point at it).
    fn grow(&mut self, prefix: &[u8], len: usize) {
        let size = (prefix.len() + len + 1).next_power_of_two().max(64);
        let buf: &'static [std::cell::Cell<u8>] =
            Box::leak((0..size).map(|_| std::cell::Cell::new(0)).collect());
        for (dst, b) in buf.iter().zip(prefix) {
            dst.set(*b);
        }
        self.buf = buf;
        self.current = false;
    }

    /// Sets the variable to `text` (no NUL in it).
    #[allow(unsafe_code)]
    fn set(&mut self, text: &str) {
        if self.prefix + text.len() + 1 > self.buf.len() {
            let prefix: Vec<u8> = self.buf[..self.prefix].iter().map(|c| c.get()).collect();
            self.grow(&prefix, text.len());
        }
        let value = &self.buf[self.prefix..];
        for (dst, b) in value.iter().zip(text.bytes()) {
            dst.set(b);
        }
        value[text.len()].set(0);
        self.value.clear();
        self.value.push_str(text);
        if !self.current {
            let name = &self.name;
            if std::env::var_os(name).is_none() {
                // A new name grows the environment's array: done by std under its lock, so
                // putenv below only swaps the pointer in an existing slot.
                // SAFETY: as in `set_var_if_changed`.
                unsafe { std::env::set_var(name, text) };
            }
            // SAFETY: `buf` is a NUL-terminated `NAME=value` string that lives until the
            // process ends (leaked), as putenv requires; the environment is changed on the
            // loop's thread between activations, under the contract of `set_var_if_changed`.
            // Rewriting `buf` later changes the variable in place, under the same contract.
            unsafe { libc::putenv(self.buf.as_ptr().cast::<libc::c_char>().cast_mut()) };
            self.current = true;
        }
    }

    /// Whether the environment still points at `buf` (the handler may have replaced it).
    #[allow(unsafe_code)]
    fn still_current(&self) -> bool {
        // SAFETY: `name_c` is NUL-terminated; getenv only reads the environment, on the loop's
        // thread, under the contract of `set_var_if_changed`.
        let found = unsafe { libc::getenv(self.name_c.as_ptr().cast::<libc::c_char>()) };
        std::ptr::eq(
            found.cast::<u8>().cast_const(),
            self.buf[self.prefix..].as_ptr().cast::<u8>(),
        )
    }
}

/// What the handler did, counted once the result line is written.
struct Finished {
    outcome: Outcome,
    duration: Duration,
    at: SystemTime,
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
            Ok(Flow::Next) => ExitCode::SUCCESS,
            Ok(Flow::Exit) => {
                eprintln!(
                    "whisk-metrics: the action panicked; exiting without a result, as an uncaught \
                     panic would (WHISK_METRICS_ON_PANIC=error-result answers with an error instead)"
                );
                ExitCode::from(PANIC_EXIT_CODE)
            }
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
        metrics.builtins.container_started(unix_seconds(started));
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
            on_panic: config.on_panic,
            identity,
            first_result_written: false,
            api_host: std::env::var("__OW_API_HOST").ok(),
            env: Vec::new(),
            context: Context::default(),
            identity_source: String::new(),
            result_line: Vec::with_capacity(1024),
            cpu_mark: Resources::cpu_time(),
            resources: {
                let r = Resources::detect();
                if !r.peak_is_per_activation() {
                    eprintln!(
                        "whisk-metrics: /proc/self/clear_refs is not writable: \
                         whisk_activation_memory_peak_bytes observes the process's peak since start"
                    );
                }
                r
            },
        }
    }

    /// Serves every line of `input`, writing one result line per input line to `out`.
    fn serve(
        &mut self,
        mut input: impl BufRead,
        out: &mut dyn Write,
        handler: &mut Handler<'_>,
    ) -> std::io::Result<Flow> {
        let mut line = Vec::with_capacity(4096);
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if self.activation(&line, out, handler)? == Flow::Exit {
                // The group stays: it carries the panic's developer_error; the janitor prunes it.
                return Ok(Flow::Exit);
            }
        }
        if let Some(p) = self.pusher.as_mut() {
            // The container is going away: its group would only go stale.
            p.delete(&self.identity);
        }
        self.print_notice();
        Ok(Flow::Next)
    }

    /// Serves one run line: one result line on `out`, or, for a panic under
    /// [`OnPanic::Exit`], the push and then [`Flow::Exit`] with nothing written.
    fn activation(
        &mut self,
        line: &[u8],
        out: &mut dyn Write,
        handler: &mut Handler<'_>,
    ) -> std::io::Result<Flow> {
        let mut finished = None;
        let mut push_first = false;
        let answer = match self.prepare(line) {
            Ok(value) => {
                if let Some(p) = self.pusher.as_mut().filter(|p| p.wants_api_key()) {
                    // the run line's `api_key`, else the container's `__OW_API_KEY`
                    let from_env;
                    let key = match self.context.api_key.as_deref() {
                        Some(k) => Some(k),
                        None => {
                            from_env = std::env::var("__OW_API_KEY").ok();
                            from_env.as_deref()
                        }
                    };
                    p.set_api_key(key);
                }
                let started = Instant::now();
                let (answer, outcome) = call(handler, value, &self.context, self.on_panic);
                // A non-object result is a developer error to the platform, which then removes
                // the container right after reading the line: push before writing it, or the
                // push made after it may be lost with the container.
                push_first = matches!(&answer, Answer::Line(v) if !v.is_object() && !v.is_array());
                // counted after the result line is written (or before the push that precedes it)
                finished = Some(Finished {
                    outcome,
                    duration: started.elapsed(),
                    at: SystemTime::now(),
                });
                answer
            }
            Err(msg) => {
                eprintln!("whisk-metrics: {msg}");
                Answer::Line(json!({ "error": msg }))
            }
        };
        let handler_ran = finished.is_some();
        let deadline = self
            .context
            .deadline
            .filter(|_| handler_ran)
            .map(deadline_instant)
            .map(|d| d.checked_sub(DEADLINE_MARGIN).unwrap_or(d));
        let strict = self.mode == PushMode::BeforeResult;
        let Answer::Line(result) = answer else {
            // No result line: the proxy sees the process exit ("command exited"), as with an
            // uncaught panic. The push still carries this activation's developer_error.
            self.account(finished.as_ref());
            self.push(if strict { deadline } else { None });
            self.print_notice();
            flush_std();
            return Ok(Flow::Exit);
        };
        self.result_line.clear();
        if let Err(e) = serde_json::to_writer(&mut self.result_line, &result) {
            self.result_line.clear();
            let error = json!({ "error": format!("the result could not be serialized: {e}") });
            self.result_line
                .extend_from_slice(error.to_string().as_bytes());
        }
        self.result_line.push(b'\n');
        if strict || push_first {
            self.mark_first_result();
            self.account(finished.as_ref());
            // As after a panic: outside strict mode this push may look the host up and is not
            // held to the activation's deadline.
            self.push(if strict { deadline } else { None });
            // before the result line: the proxy ends the activation's log when it reads it
            self.print_notice();
            flush_std();
            out.write_all(&self.result_line)?;
            out.flush()?;
            if let Some(p) = self.pusher.as_mut() {
                p.after_result(&self.identity);
            }
        } else {
            // A failure of the previous activation's push (made after its result): printed
            // before this result line, so it is in an activation's log for sure rather than
            // racing the proxy's end-of-log marker.
            self.print_notice();
            flush_std();
            out.write_all(&self.result_line)?;
            out.flush()?;
            // Let the proxy, woken by the result line, take the CPU before the accounting and
            // the push do: on a container with one or two cores it otherwise waits for them
            // (measured in the benchmark). Costs one syscall.
            std::thread::yield_now();
            self.mark_first_result();
            // Everything below is off the response path: the activation's counts, durations
            // and resource figures, then the push that carries them.
            self.account(finished.as_ref());
            self.push(None);
        }
        drop(result);
        // the next activation's peak and CPU time start here
        self.resources.reset_peak();
        self.cpu_mark = Resources::cpu_time();
        flush_std();
        Ok(Flow::Next)
    }

    /// Reads one run line, sets the `__OW_*` variables and learns the identity. Any malformed
    /// field is an `Err` with the reason. The run line is external input: should anything in
    /// here still panic on it, the panic is caught and becomes an error result too, so the loop
    /// (and the container) survives every line.
    fn prepare(&mut self, line: &[u8]) -> Result<Value, String> {
        let prepared = catch_unwind(AssertUnwindSafe(|| {
            let (value, fields) = runline::parse(line)?;
            set_ow_env(&fields, &mut self.env);
            self.context.update(&fields, self.api_host.as_deref());
            self.learn_identity();
            Ok(value)
        }));
        prepared.unwrap_or_else(|payload| {
            Err(format!(
                "malformed activation input: reading it failed ({})",
                panic_message(payload.as_ref())
            ))
        })
    }

    /// Counts the activation whose handler `finished` (none for a malformed line): outcome,
    /// duration, version, CPU time and peak memory; samples the container; notes `__OW_*`
    /// variables the handler changed. Runs after the result line is written (before it only
    /// when the push must precede the line), always before the push.
    fn account(&mut self, finished: Option<&Finished>) {
        if let Some(f) = finished {
            let builtins = &self.metrics.builtins;
            builtins.activation_finished(f.outcome, f.duration, unix_seconds(f.at));
            builtins.action_version_seen(&self.context.action_version);
            let cpu = self
                .cpu_mark
                .and_then(|b| Some(Resources::cpu_time()?.saturating_sub(b)));
            builtins.activation_used(cpu, self.resources.peak_rss_bytes());
        }
        self.metrics
            .builtins
            .container_sampled(&self.resources.sample());
        note_changed_ow_env(&mut self.env);
    }

    /// Prints the pusher's pending failure notice, if any.
    fn print_notice(&mut self) {
        if let Some(notice) = self.pusher.as_mut().and_then(Pusher::take_notice) {
            eprintln!("{notice}");
        }
    }

    fn mark_first_result(&mut self) {
        if !self.first_result_written {
            self.first_result_written = true;
            let (start, _) = process_start();
            self.metrics.builtins.first_result_written(start.elapsed());
        }
    }

    fn push(&mut self, deadline: Option<Instant>) {
        if let Some(p) = self.pusher.as_mut() {
            p.push(
                self.metrics,
                &self.identity,
                &self.context.activation_id,
                deadline,
                false,
            );
        }
    }

    /// The action's identity from the activation (fixed for a container; set on first sight).
    fn learn_identity(&mut self) {
        let name = &self.context.action_name;
        if !name.is_empty() && *name != self.identity_source {
            self.identity_source.clone_from(name);
            let id = ActionIdentity::from_action_name(name);
            if id != self.identity {
                self.identity = id;
            }
        }
    }
}

/// What the loop answers for one activation.
enum Answer {
    /// Write this value as the result line.
    Line(Value),
    /// Write nothing and end the process (a panic under [`OnPanic::Exit`]).
    Exit,
}

/// Whether the loop goes on after an activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
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
fn call(
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
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_string())
}

/// More distinct run-line keys than this are not remembered (the proxy sends about eight).
const MAX_OW_VARS: usize = 64;

/// Sets `__OW_<KEY>` for every key but `value`, as the official Rust launcher does. A variable
/// that still holds the value the loop set last is left alone: most repeat between activations
/// (namespace, action name and version, API key), and reading the environment or setting it
/// costs more (`setenv` allocates, takes the lock and keeps every value it was ever given).
fn set_ow_env(fields: &Fields<'_>, vars: &mut Vec<OwVar>) {
    for (key, field) in fields {
        let text = field.text();
        let known = vars.iter().position(|v| v.key == *key);
        if let Some(v) = known.map(|i| &vars[i]) {
            if v.current && v.value == *text {
                continue;
            }
        }
        // set_var panics on these; such a key cannot be a variable name anyway.
        if key.is_empty() || key.contains(['=', '\0']) || text.contains('\0') {
            continue;
        }
        match known {
            Some(i) => vars[i].set(&text),
            None if vars.len() < MAX_OW_VARS => {
                let mut var = OwVar::new(key);
                var.set(&text);
                vars.push(var);
            }
            None => set_var_if_changed(&format!("__OW_{}", key.to_uppercase()), &text),
        }
    }
}

#[allow(unsafe_code)]
fn set_var_if_changed(name: &str, text: &str) {
    if std::env::var_os(name).is_some_and(|current| current == text) {
        return;
    }
    // SAFETY: called on the loop's thread between activations, before the handler runs; the
    // SDK itself starts no threads, so nothing of ours reads the environment concurrently.
    // Threads the action starts itself must not read the environment while the loop runs
    // (documented in the crate docs); the official launcher has the same contract.
    unsafe { std::env::set_var(name, text) };
}

/// Marks the `__OW_*` variables the handler changed (or removed), so the next activation sets
/// them again. Runs after the result line is written.
fn note_changed_ow_env(vars: &mut [OwVar]) {
    for v in vars.iter_mut().filter(|v| v.current) {
        v.current = v.still_current();
    }
}

fn deadline_instant(deadline: SystemTime) -> Instant {
    let now = Instant::now();
    match deadline.duration_since(SystemTime::now()) {
        // a deadline centuries away (the line is external input) must not overflow the Instant
        Ok(left) => now
            .checked_add(left)
            .unwrap_or(now + Duration::from_secs(86_400)),
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
    use proptest::prelude::*;

    fn serving() -> Serving {
        serving_with(Config::new())
    }

    fn serving_with(config: Config) -> Serving {
        let mut s = Serving::new(&config.with_disabled(true));
        s.pusher = None;
        s
    }

    /// The result lines and how the loop ended.
    fn serve_with(config: Config, input: &str, handler: &mut Handler<'_>) -> (Vec<String>, Flow) {
        let mut out = Vec::new();
        let flow = serving_with(config)
            .serve(input.as_bytes(), &mut out, handler)
            .unwrap();
        let lines = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        (lines, flow)
    }

    fn serve(input: &str, handler: &mut Handler<'_>) -> Vec<Value> {
        let (lines, flow) = serve_with(Config::new(), input, handler);
        assert_eq!(flow, Flow::Next);
        lines
            .iter()
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
    fn huge_or_odd_deadlines_and_field_types_get_an_answer_not_a_crash() {
        let lines = [
            json!({"value": {}, "deadline": "1e300"}),
            json!({"value": {}, "deadline": 1e300}),
            json!({"value": {}, "deadline": "18446744073709551615"}),
            json!({"value": {}, "deadline": u64::MAX}),
            json!({"value": {}, "deadline": "-1"}),
            json!({"value": {}, "action_name": 7, "action_version": [1], "api_key": {"a": null}}),
            json!({"value": {}, "": "empty key", "a=b": "x", "nul": "a\u{0}b"}),
        ];
        let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let results = serve(&input, &mut |_, _| Ok(json!({"ok": true})));
        assert_eq!(results, vec![json!({"ok": true}); lines.len()]);
    }

    /// The loop over in-memory stdin and fd 3: one answer line per input line, or the panic.
    fn answers(input: &[u8]) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        let served = catch_unwind(AssertUnwindSafe(|| {
            serving().serve(input, &mut out, &mut |v, _| Ok(json!({ "echo": v })))
        }));
        match served {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("the loop stopped: {e}")),
            Err(p) => return Err(format!("the loop panicked: {}", panic_message(p.as_ref()))),
        }
        let text = String::from_utf8(out).map_err(|e| e.to_string())?;
        text.lines()
            .map(|l| serde_json::from_str(l).map_err(|e| format!("{l:?}: {e}")))
            .collect()
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            // binary fractions print and parse back exactly; huge and odd numbers as numbers too
            any::<i32>().prop_map(|i| Value::from(f64::from(i) / 8.0)),
            prop::sample::select(vec![1e300, -1e300, f64::MAX, 5e-324]).prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
            "[0-9e+.-]{0,24}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn run_line() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("value".to_string()),
            Just("deadline".to_string()),
            Just("action_name".to_string()),
            Just("action_version".to_string()),
            Just("activation_id".to_string()),
            Just("api_key".to_string()),
            Just("api_host".to_string()),
            Just("namespace".to_string()),
            "proptest_[a-z=\u{0}]{0,4}",
        ];
        prop::collection::btree_map(key, json_value(), 0..8)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_json_object_run_line_gets_exactly_one_answer(lines in prop::collection::vec(run_line(), 1..6)) {
            let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let results = answers(input.as_bytes()).map_err(TestCaseError::fail)?;
            prop_assert_eq!(results.len(), lines.len());
            for (line, result) in lines.iter().zip(&results) {
                // what the loop read (serde_json's float parsing is not exact for every f64)
                let line: Value = serde_json::from_str(&line.to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                match line.get("value") {
                    Some(v) => prop_assert_eq!(&result["echo"], v),
                    None => prop_assert!(result["error"].is_string(), "{}", result),
                }
            }
        }

        #[test]
        fn any_bytes_run_line_gets_exactly_one_answer(
            lines in prop::collection::vec(prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..64), 1..6)
        ) {
            let mut input = Vec::new();
            for l in &lines {
                input.extend_from_slice(l);
                input.push(b'\n');
            }
            let results = answers(&input).map_err(TestCaseError::fail)?;
            prop_assert_eq!(results.len(), lines.len());
        }
    }

    #[test]
    fn handler_error_becomes_error_result_and_counts_application_error() {
        let count = || {
            registry::global()
                .builtins
                .activations(Outcome::ApplicationError)
        };
        let before = count();
        let results = serve("{\"value\":{}}\n", &mut |_, _| {
            Err("out of stock".to_string())
        });
        assert_eq!(results, vec![json!({"error": "out of stock"})]);
        assert!(count() > before);
    }

    #[test]
    fn panic_by_default_ends_the_loop_without_a_result_and_counts_developer_error() {
        let count = || {
            registry::global()
                .builtins
                .activations(Outcome::DeveloperError)
        };
        let before = count();
        let mut calls = 0;
        let input = "{\"value\":{}}\n{\"value\":{}}\n{\"value\":{}}\n";
        let (lines, flow) = serve_with(Config::new(), input, &mut |_, _| {
            calls += 1;
            if calls == 2 {
                panic!("boom {}", calls);
            }
            Ok(json!({"calls": calls}))
        });
        assert_eq!(flow, Flow::Exit);
        assert_eq!(lines, vec![r#"{"calls":1}"#.to_string()]);
        assert_eq!(calls, 2, "the line after the panic must not be served");
        assert!(count() > before);
    }

    #[test]
    fn panic_with_error_result_answers_an_error_and_serving_continues() {
        let count = || {
            registry::global()
                .builtins
                .activations(Outcome::DeveloperError)
        };
        let before = count();
        let mut calls = 0;
        let config = Config::new().with_on_panic(OnPanic::ErrorResult);
        let input = "{\"value\":{}}\n{\"value\":{}}\n";
        let (lines, flow) = serve_with(config, input, &mut |_, _| {
            calls += 1;
            if calls == 1 {
                panic!("boom {}", calls);
            }
            Ok(json!({"calls": calls}))
        });
        assert_eq!(flow, Flow::Next);
        assert_eq!(
            lines,
            vec![
                r#"{"error":"the action panicked: boom 1"}"#.to_string(),
                r#"{"calls":2}"#.to_string()
            ]
        );
        assert!(count() > before);
    }

    #[test]
    fn non_object_result_is_passed_through_as_the_proxy_sees_it_and_counts_developer_error() {
        let count = || {
            registry::global()
                .builtins
                .activations(Outcome::DeveloperError)
        };
        for (value, line) in [
            (json!("just text"), r#""just text""#),
            (json!(42), "42"),
            (json!(true), "true"),
            (Value::Null, "null"),
        ] {
            let before = count();
            let v = value.clone();
            let (lines, flow) =
                serve_with(Config::new(), "{\"value\":{}}\n", &mut |_, _| Ok(v.clone()));
            assert_eq!(flow, Flow::Next);
            assert_eq!(lines, vec![line.to_string()], "{value}");
            assert!(count() > before, "{value}");
        }
        // arrays are results: the Go proxy passes them on (runHandler.go)
        let (lines, _) = serve_with(Config::new(), "{\"value\":{}}\n", &mut |_, _| {
            Ok(json!([1]))
        });
        assert_eq!(lines, vec!["[1]".to_string()]);
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
    fn ow_variables_take_longer_values_and_come_back_after_the_handler_removed_them() {
        let long = "x".repeat(300);
        let lines = [
            json!({"value": {}, "envgrow_key": "a", "envgrow_ü": "ü"}),
            json!({"value": {}, "envgrow_key": long}),
            json!({"value": {}, "envgrow_key": long}),
            json!({"value": {}, "envgrow_key": "b"}),
        ];
        let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let mut calls = 0;
        let results = serve(&input, &mut |_, _| {
            calls += 1;
            let seen = std::env::var("__OW_ENVGROW_KEY").unwrap_or_default();
            if calls == 1 {
                assert_eq!(std::env::var("__OW_ENVGROW_Ü").as_deref(), Ok("ü"));
            }
            if calls == 2 {
                #[allow(unsafe_code)]
                // SAFETY: the test's handler runs on the loop's thread, like the loop's writes.
                unsafe {
                    std::env::remove_var("__OW_ENVGROW_KEY")
                };
            }
            Ok(json!({ "seen": seen }))
        });
        let seen: Vec<&str> = results.iter().filter_map(|r| r["seen"].as_str()).collect();
        assert_eq!(seen, vec!["a", long.as_str(), long.as_str(), "b"]);
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
