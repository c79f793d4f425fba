//! One action container, started and driven exactly as the Go actionloop proxy of the Rust
//! runtime does it (openwhisk-runtime-go `executor.go`):
//!
//! * the environment is cleared and holds only `__OW_*` values and the action's init parameters
//!   (no `PATH`, `HOME` or `HOSTNAME`);
//! * stdin is a pipe; fd 3 is a pipe the action writes one result line to per activation;
//! * stdout and stderr are captured, and after each activation the sentinel
//!   `XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX` is written to both (after the action's own output);
//! * one JSON line per activation on stdin (`value`, `namespace`, `action_name` with a leading
//!   slash, `action_version`, `activation_id`, `transaction_id`, `deadline` as a string of epoch
//!   ms, `api_key`), one line read back from fd 3 within the action's timeout;
//! * a child that exits is reported as `{"error":"command exited"}` (HTTP 400, a developer
//!   error); a result line that is not a JSON object or array gets HTTP 502 ([`ProxyAnswer`]);
//! * start-up is checked like the proxy's `Executor.Start`: without `OW_WAIT_FOR_ACK` the child
//!   must not exit within 5 ms (`DefaultTimeoutStart`); with it, the child must write
//!   `{"ok":true}` on fd 3 before anything else ([`StartCheck`]).
//!
//! Freezing is `SIGSTOP` (what `docker pause` does to the cgroup), thawing `SIGCONT`, removal
//! `SIGKILL` (what `docker rm -f` does): the action gets no signal it can handle.

mod pipes;
mod protocol;

pub use protocol::{
    COMMAND_EXITED, MAX_RESULT_BYTES, NOT_A_DICTIONARY, PROXY_VERSION, ProxyAnswer, RunInput,
    RunOutcome, proxy_env,
};

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::error::{Error, Result};
use pipes::{LogLine, Stream, pipe, read_logs, read_results, spawn_reader};

/// Written to stdout and stderr after every activation, as the Go proxy does.
pub const SENTINEL: &str = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX";

/// How long the proxy waits after starting the child for it to exit (`DefaultTimeoutStart`).
pub const START_GRACE: Duration = Duration::from_millis(5);

/// The Go proxy's reason when a child exits before acknowledging its start.
pub const EXITED_AT_INIT: &str = "Command exited abruptly during initialization.";
/// The reason when no acknowledgement came within the time limit (the proxy waits forever; the
/// invoker's `/init` times out).
pub const START_TIMED_OUT: &str = "no acknowledgement within the time limit";
/// The Go proxy's reason when a child acknowledges with something other than `{"ok":true}`.
pub const NOT_INITIALIZED: &str = "The action did not initialize properly.";

/// How the start of a child is checked, as the Go proxy's `Executor.Start` does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartCheck {
    /// Without `OW_WAIT_FOR_ACK`: the start fails if the child exits within this window
    /// (the proxy's 5 ms, [`START_GRACE`]). The check returns as soon as the child exits, so a
    /// longer window only slows down the start of children that stay alive.
    Grace(Duration),
    /// With `OW_WAIT_FOR_ACK`: the child must write `{"ok":true}` on fd 3; the start fails when
    /// it exits first or writes anything else. The proxy waits forever; the invoker gives up
    /// after the action's time limit, and so does this.
    Ack(Duration),
}

impl Default for StartCheck {
    fn default() -> Self {
        Self::Grace(START_GRACE)
    }
}

/// Most log lines kept per activation (OpenWhisk truncates logs at 10 MB; we keep it small).
pub const MAX_LOG_LINES: usize = 1000;

/// How long to wait for both sentinels after the result (OpenWhisk's log collection waits too).
const LOG_COLLECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a wait for a line also checks whether the child has exited.
const EXIT_POLL: Duration = Duration::from_millis(5);

/// A running action process: one container.
#[derive(Debug)]
pub struct ActionProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    results: Receiver<Result<String, usize>>,
    logs: Receiver<LogLine>,
    // Our ends of the child's stdout/stderr pipes, to write the sentinel after the child's output.
    stdout_w: File,
    stderr_w: File,
    frozen: bool,
    exec: PathBuf,
}

/// Has the child write itself into the cgroup whose `cgroup.procs` is open as `procs`, between
/// fork and exec (`0` names the writing process). A failed write leaves it where it was.
#[allow(unsafe_code)]
fn join_before_exec(cmd: &mut Command, procs: File) {
    // SAFETY: between fork and exec the closure makes one write(2) on a descriptor opened
    // before the fork and builds no value that allocates: async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let _ = (&procs).write(b"0");
            Ok(())
        });
    }
}

impl ActionProcess {
    /// Starts `exec` with exactly `env` as its environment and checks its start as the proxy
    /// does ([`StartCheck`]).
    pub fn start(exec: &Path, env: &[(String, String)], check: StartCheck) -> Result<Self> {
        Self::start_in(exec, env, check, None)
    }

    /// Like [`ActionProcess::start`], with the child inside the cgroup whose `cgroup.procs` is
    /// open for writing as `cgroup_procs` from before its exec, as `docker run` starts a
    /// container's process: what the action reads of its cgroup at start is its container's. If
    /// the child cannot join, it runs where it was (the caller checks its membership).
    pub(crate) fn start_in(
        exec: &Path,
        env: &[(String, String)],
        check: StartCheck,
        cgroup_procs: Option<File>,
    ) -> Result<Self> {
        let io = |what: &str| {
            let what = format!("{what} for {}", exec.display());
            move |source| Error::Io { what, source }
        };
        let (result_r, result_w) = pipe().map_err(io("creating the fd 3 pipe"))?;
        let (out_r, out_w) = pipe().map_err(io("creating the stdout pipe"))?;
        let (err_r, err_w) = pipe().map_err(io("creating the stderr pipe"))?;
        let child_out = out_w
            .try_clone()
            .map_err(io("duplicating the stdout pipe"))?;
        let child_err = err_w
            .try_clone()
            .map_err(io("duplicating the stderr pipe"))?;

        let mut cmd = Command::new(exec);
        // Before the fd mapping: the child writes to the cgroup's fd before fd 3 is remapped.
        if let Some(procs) = cgroup_procs {
            join_before_exec(&mut cmd, procs);
        }
        cmd.env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(exec.parent().unwrap_or(Path::new("/")))
            .stdin(Stdio::piped())
            .stdout(Stdio::from(OwnedFd::from(child_out)))
            .stderr(Stdio::from(OwnedFd::from(child_err)));
        cmd.fd_mappings(vec![FdMapping {
            parent_fd: OwnedFd::from(result_w),
            child_fd: 3,
        }])
        .map_err(|e| Error::Io {
            what: format!("mapping fd 3 for {}", exec.display()),
            source: std::io::Error::other(e.to_string()),
        })?;
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            path: exec.to_path_buf(),
            source,
        })?;
        // Dropping the command closes our copy of the fd 3 write end, so EOF means the child
        // is gone.
        drop(cmd);
        let stdin = child.stdin.take();

        let (rtx, results) = mpsc::channel();
        spawn_reader("fd3", move || read_results(result_r, rtx));
        let (ltx, logs) = mpsc::sync_channel(4 * MAX_LOG_LINES);
        let ltx2 = ltx.clone();
        spawn_reader("stdout", move || read_logs(out_r, Stream::Stdout, ltx));
        spawn_reader("stderr", move || read_logs(err_r, Stream::Stderr, ltx2));

        let mut process = Self {
            child,
            stdin,
            results,
            logs,
            stdout_w: out_w,
            stderr_w: err_w,
            frozen: false,
            exec: exec.to_path_buf(),
        };
        match process.check_start(check) {
            Ok(()) => Ok(process),
            Err(reason) => Err(Error::StartFailed {
                path: exec.to_path_buf(),
                reason,
                output: process.collect_logs().join(" | "),
            }),
        }
    }

    /// `Executor.Start` after the spawn: `Err` with the proxy's words when the start failed.
    fn check_start(&mut self, check: StartCheck) -> std::result::Result<(), String> {
        match check {
            StartCheck::Grace(window) => match self.wait_exit(window) {
                Some(_) => Err(COMMAND_EXITED.into()),
                None => Ok(()),
            },
            StartCheck::Ack(limit) => {
                let deadline = Instant::now() + limit;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self.results.recv_timeout(left.min(EXIT_POLL)) {
                        Ok(Ok(line)) => {
                            return match serde_json::from_str::<Value>(&line) {
                                Ok(v) if v.get("ok") == Some(&Value::Bool(true)) => Ok(()),
                                Ok(_) => Err(NOT_INITIALIZED.into()),
                                Err(e) => Err(e.to_string()),
                            };
                        }
                        Ok(Err(len)) => return Err(format!("an acknowledgement of {len} bytes")),
                        Err(RecvTimeoutError::Disconnected) => return Err(EXITED_AT_INIT.into()),
                        Err(RecvTimeoutError::Timeout) => {
                            if let Ok(Some(_)) = self.child.try_wait() {
                                return Err(EXITED_AT_INIT.into());
                            }
                            if left.is_zero() {
                                return Err(START_TIMED_OUT.into());
                            }
                        }
                    }
                }
            }
        }
    }

    /// Waits up to `limit` for the child to exit; its status if it did.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            std::thread::sleep(left.min(Duration::from_millis(1)));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The executable.
    pub fn exec(&self) -> &Path {
        &self.exec
    }

    /// Sends one activation and waits up to `timeout` for its result line, then writes the
    /// sentinels and collects the activation's log lines (stdout and stderr, up to
    /// [`MAX_LOG_LINES`]).
    pub fn run(&mut self, input: &RunInput, timeout: Duration) -> (RunOutcome, Vec<String>) {
        let started = Instant::now();
        // Anything left over from a previous activation that timed out is stale.
        while self.results.try_recv().is_ok() {}
        if self.has_exited() {
            // runHandler: `if ap.theExecutor.Exited()` → 500, nothing written, no sentinel.
            return (RunOutcome::ExitedBefore, Vec::new());
        }
        // The proxy ignores write errors and waits for a line or the child's exit.
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin
                .write_all(input.to_line().as_bytes())
                .and_then(|()| stdin.flush());
        }
        let outcome = match self.results.recv_timeout(timeout) {
            Ok(Ok(line)) => RunOutcome::Line(line),
            Ok(Err(len)) => RunOutcome::TooLarge(len),
            Err(RecvTimeoutError::Timeout) => RunOutcome::TimedOut,
            // fd 3 closed: the proxy still holds its write end, so what ends its wait is the
            // child's exit, not the EOF. Wait for the exit within what is left of the time.
            Err(RecvTimeoutError::Disconnected) => {
                match self.wait_exit(timeout.saturating_sub(started.elapsed())) {
                    Some(_) => RunOutcome::Exited,
                    None => RunOutcome::TimedOut,
                }
            }
        };
        let logs = self.collect_logs();
        (outcome, logs)
    }

    fn collect_logs(&mut self) -> Vec<String> {
        let sentinel = format!("{SENTINEL}\n");
        let out_ok = self.stdout_w.write_all(sentinel.as_bytes()).is_ok();
        let err_ok = self.stderr_w.write_all(sentinel.as_bytes()).is_ok();
        let (mut seen_out, mut seen_err) = (!out_ok, !err_ok);
        let deadline = Instant::now() + LOG_COLLECTION_TIMEOUT;
        let mut lines = Vec::new();
        while !(seen_out && seen_err) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok((stream, line)) if line == SENTINEL => match stream {
                    Stream::Stdout => seen_out = true,
                    Stream::Stderr => seen_err = true,
                },
                Ok((stream, line)) => {
                    if lines.len() < MAX_LOG_LINES {
                        let tag = if stream == Stream::Stdout {
                            "stdout"
                        } else {
                            "stderr"
                        };
                        lines.push(format!("{tag}: {line}"));
                    }
                }
                Err(_) => break,
            }
        }
        lines
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Whether it is frozen.
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Freezes the process (`SIGSTOP`). Returns whether the signal was delivered.
    pub fn freeze(&mut self) -> bool {
        let ok = self.signal(Signal::SIGSTOP);
        self.frozen |= ok;
        ok
    }

    /// Thaws the process (`SIGCONT`). Returns whether the signal was delivered.
    pub fn thaw(&mut self) -> bool {
        let ok = self.signal(Signal::SIGCONT);
        if ok {
            self.frozen = false;
        }
        ok
    }

    fn signal(&self, sig: Signal) -> bool {
        match i32::try_from(self.child.id()) {
            Ok(pid) => kill(Pid::from_raw(pid), sig).is_ok(),
            Err(_) => false,
        }
    }

    /// Removes the container: `SIGKILL` (works on frozen processes too) and reap. The kill comes
    /// before stdin is closed, as with `docker rm -f`: the action must not see an end of input it
    /// could react to (the SDK deletes its group on one).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stdin = None;
    }
}

impl Drop for ActionProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::tests::input;

    fn script(body: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "whisk-emu-proxy-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("exec");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, path)
    }

    #[test]
    fn echoes_through_fd3_collects_logs_and_sees_only_ow_env() {
        // A shell action: prints its environment names, answers each line on fd 3.
        let (dir, exec) = script(
            "/usr/bin/env | /usr/bin/cut -d= -f1 | /usr/bin/tr '\\n' ' ' >&2; echo >&2\n\
             while read -r line; do echo \"got it\"; echo '{\"ok\":true}' >&3; done",
        );
        let mut env = input().init_env();
        env.push((
            "WHISK_METRICS_PUSHGATEWAY_URL".into(),
            "http://127.0.0.1:1".into(),
        ));
        let mut p = ActionProcess::start(&exec, &env, StartCheck::default()).unwrap();
        let (out, logs) = p.run(&input(), Duration::from_secs(30));
        assert_eq!(out, RunOutcome::Line("{\"ok\":true}".into()));
        assert!(logs.contains(&"stdout: got it".to_string()), "{logs:?}");
        let env_line = logs.iter().find(|l| l.starts_with("stderr:")).unwrap();
        for name in env_line.trim_start_matches("stderr:").split_whitespace() {
            // /bin/sh itself may add PWD, SHLVL and `_`.
            assert!(
                name.starts_with("__OW_")
                    || name == "WHISK_METRICS_PUSHGATEWAY_URL"
                    || ["PWD", "SHLVL", "_"].contains(&name),
                "unexpected variable {name}"
            );
        }
        assert!(!env_line.contains("PATH") && !env_line.contains("HOME"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_child_that_exits_is_command_exited_and_a_silent_one_times_out() {
        let (dir, exec) = script("read -r line; exit 0");
        let mut p = ActionProcess::start(&exec, &[], StartCheck::default()).unwrap();
        let (out, _) = p.run(&input(), Duration::from_secs(30));
        assert_eq!(out, RunOutcome::Exited);
        assert_eq!(
            out.proxy_answer(),
            Some(ProxyAnswer {
                status: 400,
                body: "{\"error\":\"command exited\"}\n".into()
            })
        );
        // The next run finds it gone: the proxy's 500.
        assert_eq!(
            p.run(&input(), Duration::from_secs(30)).0,
            RunOutcome::ExitedBefore
        );
        // A child that never answers: whatever the machine's load, no line can arrive.
        let (dir2, exec2) = script("while read -r line; do :; done");
        let mut q = ActionProcess::start(&exec2, &[], StartCheck::default()).unwrap();
        assert_eq!(
            q.run(&input(), Duration::from_millis(100)).0,
            RunOutcome::TimedOut
        );
        let _ = (std::fs::remove_dir_all(dir), std::fs::remove_dir_all(dir2));
    }

    #[test]
    fn a_child_that_closes_fd3_but_lives_on_is_not_an_exit() {
        // The proxy keeps its own copy of fd 3's write end: only the child's exit ends the
        // wait, so a child that closes fd 3 and keeps running times out.
        let (dir, exec) = script("exec 3>&-; while read -r line; do :; done");
        let mut p = ActionProcess::start(&exec, &[], StartCheck::default()).unwrap();
        assert_eq!(
            p.run(&input(), Duration::from_millis(200)).0,
            RunOutcome::TimedOut
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_child_that_dies_at_start_is_an_error() {
        // The check returns as soon as the child exits, so a generous window makes this
        // deterministic on a loaded machine: the proxy's 5 ms window only decides how long a
        // child that stays alive is watched.
        let (dir, exec) = script("echo bye >&2; exit 3");
        let err = ActionProcess::start(&exec, &[], StartCheck::Grace(Duration::from_secs(60)))
            .unwrap_err();
        assert!(
            matches!(&err, Error::StartFailed { reason, .. } if reason == COMMAND_EXITED),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn with_wait_for_ack_the_start_needs_ok_true_on_fd3() {
        let (dir, exec) =
            script("echo '{\"ok\":true}' >&3; while read -r line; do echo '{\"n\":1}' >&3; done");
        let ack = StartCheck::Ack(Duration::from_secs(60));
        let mut p = ActionProcess::start(&exec, &[], ack).unwrap();
        // The acknowledgement is not taken for the first result.
        assert_eq!(
            p.run(&input(), Duration::from_secs(30)).0,
            RunOutcome::Line("{\"n\":1}".into())
        );
        let (dir2, dies) = script("echo bye >&2; exit 3");
        let err = ActionProcess::start(&dies, &[], ack).unwrap_err();
        assert!(err.to_string().contains(EXITED_AT_INIT), "{err}");
        let (dir3, wrong) = script("echo '{\"ok\":false}' >&3; while read -r line; do :; done");
        let err = ActionProcess::start(&wrong, &[], ack).unwrap_err();
        assert!(err.to_string().contains(NOT_INITIALIZED), "{err}");
        for d in [dir, dir2, dir3] {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    #[test]
    fn oversized_results_report_their_length() {
        let (dir, exec) = script(&format!(
            "while read -r line; do /usr/bin/head -c {} /dev/zero | /usr/bin/tr '\\0' 'x' >&3; echo >&3; done",
            MAX_RESULT_BYTES + 10
        ));
        let mut p = ActionProcess::start(&exec, &[], StartCheck::default()).unwrap();
        assert_eq!(
            p.run(&input(), Duration::from_secs(30)).0,
            RunOutcome::TooLarge(MAX_RESULT_BYTES + 10)
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn frozen_process_answers_only_after_thaw() {
        let (dir, exec) =
            script("n=0; while read -r line; do n=$((n+1)); echo \"{\\\"n\\\":$n}\" >&3; done");
        let mut p = ActionProcess::start(&exec, &[], StartCheck::default()).unwrap();
        assert!(p.freeze() && p.is_frozen());
        // Frozen, it cannot answer, however long the wait.
        assert_eq!(
            p.run(&input(), Duration::from_millis(200)).0,
            RunOutcome::TimedOut
        );
        assert!(p.thaw());
        // The line written while frozen is answered once thawed (waited for here, not slept
        // for); run() then discards nothing new and the next line gets its own answer.
        assert_eq!(
            p.results.recv_timeout(Duration::from_secs(60)),
            Ok(Ok("{\"n\":1}".into()))
        );
        assert_eq!(
            p.run(&input(), Duration::from_secs(30)).0,
            RunOutcome::Line("{\"n\":2}".into())
        );
        p.kill();
        assert!(p.has_exited());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn removal_kills_before_the_action_can_see_the_end_of_its_input() {
        // The SDK deletes its Pushgateway group when stdin ends; `docker rm -f` gives it no
        // chance, and neither may the emulator.
        let (dir, exec) = script("while read -r line; do :; done; echo eof > saw-eof");
        let mut p = ActionProcess::start(&exec, &[], StartCheck::default()).unwrap();
        p.kill();
        assert!(p.has_exited());
        assert!(!dir.join("saw-eof").exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
