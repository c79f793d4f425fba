//! One memory cgroup per container, as the invoker's `docker run --memory <limit>
//! --memory-swap <limit>` gives each action container: a child of the emulator's own cgroup
//! (from `/proc/self/cgroup`), the cgroup v1 `memory` controller when the machine has it, else
//! cgroup v2 with `memory` enabled for children. The action process joins it between its fork and
//! its exec, as `docker run` starts it inside, so what the SDK reads from `/proc/self/cgroup` at
//! start and then from the cgroup filesystem (`memory.limit_in_bytes`, `memory.max`, usage) is
//! the container's. Where none of this is possible (no cgroup filesystem, no permission), the
//! emulator runs plain processes and says so once.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Which cgroup hierarchy holds the memory controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// The v1 `memory` controller (`memory.limit_in_bytes`, `memory.memsw.limit_in_bytes`).
    V1,
    /// The unified hierarchy (`memory.max`, `memory.swap.max`).
    V2,
}

/// The emulator's own memory cgroup: where container cgroups are created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Root {
    version: Version,
    dir: PathBuf,
}

/// A container's cgroup, removed when dropped (after its process is gone).
#[derive(Debug)]
pub(crate) struct Cgroup {
    dir: PathBuf,
}

impl Root {
    /// The emulator's memory cgroup, if it can create children with a memory limit there
    /// (checked once per process by creating and removing a probe child). `Err` says why not.
    pub(crate) fn detect() -> Result<&'static Root, &'static str> {
        static ROOT: OnceLock<Result<Root, String>> = OnceLock::new();
        ROOT.get_or_init(|| {
            let root = find(Path::new("/sys/fs/cgroup"))?;
            let probe = root
                .create(
                    &format!("whisk-emulator-{}-probe", std::process::id()),
                    64 << 20,
                )
                .map_err(|e| format!("cannot create a cgroup under {}: {e}", root.dir.display()))?;
            drop(probe);
            Ok(root)
        })
        .as_ref()
        .map_err(String::as_str)
    }

    /// The directory container cgroups go in.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates `<root>/<name>` with `memory_bytes` as its memory and memory+swap limit.
    pub(crate) fn create(&self, name: &str, memory_bytes: u64) -> io::Result<Cgroup> {
        let dir = self.dir.join(name);
        fs::create_dir(&dir)?;
        let cg = Cgroup { dir };
        let limit = memory_bytes.to_string();
        match self.version {
            Version::V1 => {
                cg.write("memory.limit_in_bytes", &limit)?;
                // Absent when swap accounting is off; docker sets it when it can.
                if cg.dir.join("memory.memsw.limit_in_bytes").exists() {
                    cg.write("memory.memsw.limit_in_bytes", &limit)?;
                }
            }
            Version::V2 => {
                cg.write("memory.max", &limit)?;
                if cg.dir.join("memory.swap.max").exists() {
                    cg.write("memory.swap.max", "0")?;
                }
            }
        }
        Ok(cg)
    }
}

/// A cgroup name unique in this process: `whisk-emulator-<pid>-<n>-<action>`.
pub(crate) fn unique_name(action: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let action: String = action
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(64)
        .collect();
    format!("whisk-emulator-{}-{n}-{action}", std::process::id())
}

impl Cgroup {
    /// Moves process `pid` into this cgroup.
    pub(crate) fn add(&self, pid: u32) -> io::Result<()> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// `cgroup.procs` open for writing: a process that writes `0` to it joins this cgroup.
    pub(crate) fn procs_for_writing(&self) -> io::Result<fs::File> {
        fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))
    }

    /// The cgroup's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn write(&self, file: &str, value: &str) -> io::Result<()> {
        fs::write(self.dir.join(file), value)
    }
}

impl Cgroup {
    /// The processes in the cgroup now.
    pub(crate) fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

/// How long a removal waits for the killed processes of a cgroup to be gone.
const EMPTY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Drop for Cgroup {
    fn drop(&mut self) {
        // `docker rm -f`: whatever the action started is killed too (the action's own process
        // was killed and reaped before). A cgroup can be removed once it has no process.
        let start = std::time::Instant::now();
        loop {
            let pids = self.pids();
            if pids.is_empty() || start.elapsed() > EMPTY_WAIT {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if let Err(e) = fs::remove_dir(&self.dir) {
            tracing::warn!("cannot remove cgroup {}: {e}", self.dir.display());
        }
    }
}

/// Finds the emulator's memory cgroup under `mount` (normally `/sys/fs/cgroup`).
fn find(mount: &Path) -> Result<Root, String> {
    let own = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    if let Some(path) = v1_memory_path(&own) {
        let dir = mount.join("memory").join(path.trim_start_matches('/'));
        if dir.join("memory.limit_in_bytes").exists() {
            return Ok(Root {
                version: Version::V1,
                dir,
            });
        }
    }
    if let Some(path) = v2_path(&own) {
        let dir = mount.join(path.trim_start_matches('/'));
        let controllers = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "memory") {
            // Children get a memory controller only if this cgroup delegates it (fails with
            // EBUSY when this cgroup holds processes and is not the root: v2's no-internal-
            // processes rule).
            let enabled = fs::read_to_string(dir.join("cgroup.subtree_control"))
                .unwrap_or_default()
                .split_whitespace()
                .any(|c| c == "memory")
                || fs::write(dir.join("cgroup.subtree_control"), "+memory").is_ok();
            if enabled {
                return Ok(Root {
                    version: Version::V2,
                    dir,
                });
            }
            return Err(format!(
                "the cgroup v2 {} cannot delegate the memory controller to children",
                dir.display()
            ));
        }
    }
    Err("no cgroup v1 memory controller and no cgroup v2 memory controller for this process".into())
}

/// The path of the v1 `memory` line of `/proc/self/cgroup` (`4:memory:/a/b`).
fn v1_memory_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    })
}

/// The path of the v2 line of `/proc/self/cgroup` (`0::/a/b`).
fn v2_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_memory_path_of_either_hierarchy() {
        let mixed = "9:name=systemd:/\n4:memory:/process_api/abc\n0::/\n";
        assert_eq!(v1_memory_path(mixed), Some("/process_api/abc"));
        assert_eq!(v2_path(mixed), Some("/"));
        let joint = "3:cpu,memory:/x\n";
        assert_eq!(v1_memory_path(joint), Some("/x"));
        assert_eq!(v1_memory_path("0::/user.slice\n"), None);
        assert_eq!(v2_path("0::/user.slice\n"), Some("/user.slice"));
    }

    #[test]
    fn names_are_unique_and_safe() {
        let a = unique_name("guest/pkg/hello");
        let b = unique_name("guest/pkg/hello");
        assert_ne!(a, b);
        assert!(a.ends_with("guest_pkg_hello"));
        assert!(!a.contains('/'));
    }
}
