//! The loop's state between activations, and one activation served: the run line read and
//! the `__OW_*` variables set, the handler called, the result line written, the activation
//! counted, and the push (after the result, or before it in strict mode).

use std::io::{BufRead, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::answer::{Answer, Flow, call, panic_message};
use super::owenv::{OwVar, note_changed_ow_env, set_ow_env};
use super::{Handler, process_start};
use crate::builtins::Outcome;
use crate::config::{Config, OnPanic, PushMode};
use crate::context::Context;
use crate::identity::ActionIdentity;
use crate::push::Pusher;
use crate::registry::{self, Metrics};
use crate::resources::Resources;
use crate::runline;

/// In strict mode the push must leave this much of the activation's time for the result.
const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// The loop's state between activations.
pub(super) struct Serving {
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

/// What the handler did, counted once the result line is written.
struct Finished {
    outcome: Outcome,
    duration: Duration,
    at: SystemTime,
}

impl Serving {
    pub(super) fn new(config: &Config) -> Self {
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
    pub(super) fn serve(
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

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
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
mod tests;
