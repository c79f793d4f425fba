//! One container of an action: its process ([`ActionProcess`]) and, where the emulator can use
//! cgroups, its memory cgroup ([`crate::cgroup`]). Dropping it is `docker rm -f`: the process is
//! killed and reaped, then its cgroup removed.

use std::sync::Once;

use crate::cgroup::{self, Cgroup, Root};
use crate::error::Result;
use crate::proxy::{ActionProcess, StartCheck};
use crate::spec::ActionSpec;

/// A running container.
#[derive(Debug)]
pub(crate) struct Container {
    /// Per-action sequence number.
    pub(crate) id: u64,
    pub(crate) process: ActionProcess,
    // Declared after the process: dropped (removed) once the process is gone.
    _cgroup: Option<Cgroup>,
}

/// The cgroup root containers go under, if `wanted` and available; says once per process why
/// not when it is not.
pub(crate) fn cgroup_root(wanted: bool) -> Option<&'static Root> {
    if !wanted {
        return None;
    }
    match Root::detect() {
        Ok(root) => Some(root),
        Err(why) => {
            static SAID: Once = Once::new();
            SAID.call_once(|| {
                tracing::warn!("containers run as plain processes without a memory limit: {why}");
            });
            None
        }
    }
}

impl Container {
    /// Starts the action's executable with `env`, in a new cgroup under `root` when given.
    pub(crate) fn start(
        id: u64,
        spec: &ActionSpec,
        env: &[(String, String)],
        check: StartCheck,
        root: Option<&Root>,
    ) -> Result<Self> {
        let memory = u64::from(spec.memory_mb) << 20;
        let cgroup = root.and_then(
            |r| match r.create(&cgroup::unique_name(&spec.name), memory) {
                Ok(cg) => Some(cg),
                Err(e) => {
                    tracing::warn!("container of {} runs without a cgroup: {e}", spec.name);
                    None
                }
            },
        );
        let procs = cgroup.as_ref().and_then(|cg| cg.procs_for_writing().ok());
        let mut process = ActionProcess::start_in(&spec.exec, env, check, procs)?;
        if let Some(cg) = &cgroup {
            join_late_if_outside(cg, &mut process, &spec.name);
        }
        Ok(Self {
            id,
            process,
            _cgroup: cgroup,
        })
    }
}

/// The fallback when the process could not join `cg` before its exec (its `cgroup.procs` did
/// not open, or the write failed): moved in now, as late as the emulator once always did, and
/// said, since the action may have read its cgroup before.
fn join_late_if_outside(cg: &Cgroup, process: &mut ActionProcess, action: &str) {
    let pid = process.pid();
    if cg.pids().iter().any(|p| u32::try_from(*p) == Ok(pid)) || process.has_exited() {
        return;
    }
    match cg.add(pid) {
        Ok(()) => tracing::warn!(
            "the container of {action} joined {} only after its start",
            cg.dir().display()
        ),
        Err(e) => tracing::warn!(
            "cannot move the container of {action} into {}: {e}",
            cg.dir().display()
        ),
    }
}
