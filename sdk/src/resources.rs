//! What the container and each activation really use: CPU and peak memory per activation (from
//! the process), memory, limit, CPU and throttling of the container (from its cgroup), read from
//! procfs and the cgroup filesystem directly. A missing or unreadable file makes the figure
//! absent, never an error.
//!
//! - **CPU per activation**: `getrusage(RUSAGE_SELF)` user + system time (every thread of the
//!   process, µs resolution), read when the loop starts waiting for the activation's line and
//!   again after its result line is written (the loop calls [`Resources::cpu_time`]): nothing
//!   on the response path, no file read.
//! - **Peak memory per activation**: `VmHWM` of `/proc/self/status` read after the result is
//!   written. The high-water mark is reset after every activation's push by writing `5` to
//!   `/proc/self/clear_refs` (Linux ≥ 4.0, the process's own file): the next observation is the
//!   peak of that activation alone (plus the few KiB the loop itself touches). Where the write is
//!   refused, the observation is the process's peak since it started (monotonic, so a heavy
//!   activation makes every later one look heavy); [`Resources::peak_is_per_activation`] says
//!   which.
//! - **Container**: the cgroup of the process, found once at start from `/proc/self/cgroup`: cgroup
//!   v1 when a `memory` controller line is present (`memory.usage_in_bytes`,
//!   `memory.limit_in_bytes`, `cpuacct.usage`, `cpu.stat` `throttled_time`), else v2 when the
//!   unified hierarchy has controllers (`memory.current`, `memory.max`, `cpu.stat` `usage_usec` and
//!   `throttled_usec`). A v1 controller directory is looked for under `/sys/fs/cgroup/<controller>`
//!   at the process's path and then at the mount's root (what a container with its own cgroup
//!   mount sees). A v1 CPU controller left at the root `/` while memory is in a child cgroup is
//!   the host's, not the container's: it is ignored. Without a cgroup figure, memory falls back
//!   to the process's `VmRSS` and CPU to the process's own time; a limit of "max" (or ≥ 2^60 in
//!   v1) means unlimited and the limit is absent; throttling is absent without a cgroup. These
//!   reads happen after the result is written, with the push.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// v1 limits at or above this are "unlimited" (the kernel reports `PAGE_COUNTER_MAX` pages).
const V1_UNLIMITED: u64 = 1 << 60;

/// The container's cgroup directories, found once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cgroup {
    /// v2: the unified directory; v1: none.
    v2: Option<PathBuf>,
    /// v1 directories per controller.
    memory: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    cpu: Option<PathBuf>,
}

/// One sample of the container's figures; `None` = not available here.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ContainerSample {
    /// Memory in use, bytes.
    pub(crate) memory_bytes: Option<f64>,
    /// Memory limit, bytes (absent when unlimited).
    pub(crate) memory_limit_bytes: Option<f64>,
    /// CPU time since the container (or, without a cgroup, the process) started.
    pub(crate) cpu_seconds: Option<f64>,
    /// Time throttled by the CPU quota.
    pub(crate) cpu_throttled_seconds: Option<f64>,
}

/// The process's resource readers.
#[derive(Debug)]
pub(crate) struct Resources {
    cgroup: Cgroup,
    proc_root: PathBuf,
    peak_reset_works: bool,
}

impl Resources {
    /// Finds the cgroup of this process (once) and tries the first peak reset.
    pub(crate) fn detect() -> Self {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup")
            .map(|text| Cgroup::find(&text, Path::new("/sys/fs/cgroup")))
            .unwrap_or_default();
        let mut r = Self {
            cgroup,
            proc_root: PathBuf::from("/proc/self"),
            peak_reset_works: false,
        };
        r.reset_peak();
        r
    }

    /// CPU time (user + system, all threads) the process has used so far.
    pub(crate) fn cpu_time() -> Option<Duration> {
        use nix::sys::resource::{UsageWho, getrusage};
        let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
        let secs = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(u64::try_from(t.tv_sec()).ok()?)
                .checked_add(Duration::from_micros(u64::try_from(t.tv_usec()).ok()?))
        };
        secs(usage.user_time())?.checked_add(secs(usage.system_time())?)
    }

    /// Resets the process's peak resident memory (`VmHWM`) to its current size.
    pub(crate) fn reset_peak(&mut self) {
        self.peak_reset_works = std::fs::write(self.proc_root.join("clear_refs"), b"5").is_ok();
    }

    /// Whether the last reset worked, so a peak observation covers one activation.
    pub(crate) fn peak_is_per_activation(&self) -> bool {
        self.peak_reset_works
    }

    /// The process's peak resident memory since the last reset (`VmHWM`), bytes.
    pub(crate) fn peak_rss_bytes(&self) -> Option<f64> {
        let status = std::fs::read_to_string(self.proc_root.join("status")).ok()?;
        status_kib(&status, "VmHWM:").map(|k| k * 1024.0)
    }

    /// The container's figures now.
    pub(crate) fn sample(&self) -> ContainerSample {
        let c = &self.cgroup;
        let memory_bytes = match (&c.v2, &c.memory) {
            (Some(v2), _) => read_u64(&v2.join("memory.current")).map(|b| b as f64),
            (None, Some(m)) => read_u64(&m.join("memory.usage_in_bytes")).map(|b| b as f64),
            (None, None) => None,
        }
        .or_else(|| {
            let status = std::fs::read_to_string(self.proc_root.join("status")).ok()?;
            status_kib(&status, "VmRSS:").map(|k| k * 1024.0)
        });
        let memory_limit_bytes = match (&c.v2, &c.memory) {
            // "max" does not parse: unlimited, absent
            (Some(v2), _) => read_u64(&v2.join("memory.max")).map(|b| b as f64),
            (None, Some(m)) => read_u64(&m.join("memory.limit_in_bytes"))
                .filter(|b| *b < V1_UNLIMITED)
                .map(|b| b as f64),
            (None, None) => None,
        };
        let cpu_seconds = match (&c.v2, &c.cpuacct) {
            (Some(v2), _) => stat_field(&v2.join("cpu.stat"), "usage_usec").map(|us| us / 1e6),
            (None, Some(acct)) => read_u64(&acct.join("cpuacct.usage")).map(|ns| ns as f64 / 1e9),
            (None, None) => None,
        }
        .or_else(|| Self::cpu_time().map(|d| d.as_secs_f64()));
        let cpu_throttled_seconds = match (&c.v2, &c.cpu) {
            (Some(v2), _) => stat_field(&v2.join("cpu.stat"), "throttled_usec").map(|us| us / 1e6),
            (None, Some(cpu)) => {
                stat_field(&cpu.join("cpu.stat"), "throttled_time").map(|ns| ns / 1e9)
            }
            (None, None) => None,
        };
        ContainerSample {
            memory_bytes,
            memory_limit_bytes,
            cpu_seconds,
            cpu_throttled_seconds,
        }
    }
}

impl Cgroup {
    /// Reads `/proc/self/cgroup` text against the cgroup mount at `root`.
    fn find(proc_cgroup: &str, root: &Path) -> Self {
        let mut v1: Vec<(Vec<&str>, &str)> = Vec::new();
        let mut unified: Option<&str> = None;
        for line in proc_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_id), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if controllers.is_empty() {
                unified = Some(path);
            } else {
                v1.push((controllers.split(',').collect(), path));
            }
        }
        let line_of = |controller: &str| {
            v1.iter()
                .find(|(names, _)| names.contains(&controller))
                .map(|(names, path)| (names.join(","), *path))
        };
        if let Some((mount, memory_path)) = line_of("memory") {
            let dir = |controller: &str| {
                let (mount, path) = line_of(controller)?;
                // the host's root cgroup is not the container's
                if path == "/" && memory_path != "/" {
                    return None;
                }
                v1_dir(root, &mount, controller, path)
            };
            return Self {
                v2: None,
                memory: v1_dir(root, &mount, "memory", memory_path),
                cpuacct: dir("cpuacct"),
                cpu: dir("cpu"),
            };
        }
        if let Some(path) = unified {
            if root.join("cgroup.controllers").is_file() {
                let dir = root.join(path.trim_start_matches('/'));
                let v2 = if dir.is_dir() {
                    dir
                } else {
                    root.to_path_buf()
                };
                return Self {
                    v2: Some(v2),
                    ..Self::default()
                };
            }
        }
        Self::default()
    }
}

/// The v1 directory of `controller` (mounted as `mount`, e.g. `cpu,cpuacct`) for `path`: at the
/// path, else at the mount's root (a container's own cgroup mount).
fn v1_dir(root: &Path, mount: &str, controller: &str, path: &str) -> Option<PathBuf> {
    let rel = path.trim_start_matches('/');
    [mount, controller]
        .iter()
        .map(|m| root.join(m))
        .filter(|m| m.is_dir())
        .flat_map(|m| [m.join(rel), m])
        .find(|d| d.is_dir())
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (cpu.stat).
fn stat_field(path: &Path, key: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|v| v as f64)
}

/// `Key:   123 kB` in /proc/self/status.
fn status_kib(status: &str, key: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|v| v as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dirs: &[&str], files: &[(&str, &str)]) -> PathBuf {
        let root = std::env::temp_dir().join(format!(
            "whisk-cgroup-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        for d in dirs {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for (f, text) in files {
            std::fs::write(root.join(f), text).unwrap();
        }
        root
    }

    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    fn resources(cgroup: Cgroup, proc_root: &Path) -> Resources {
        Resources {
            cgroup,
            proc_root: proc_root.to_path_buf(),
            peak_reset_works: false,
        }
    }

    #[test]
    fn v1_memory_child_with_the_cpu_controllers_at_the_host_root() {
        let root = tree(
            &["memory/job/c1", "cpu,cpuacct", "unified", "proc"],
            &[
                ("memory/job/c1/memory.usage_in_bytes", "1048576\n"),
                ("memory/job/c1/memory.limit_in_bytes", "268435456\n"),
                ("cpu,cpuacct/cpuacct.usage", "999000000000\n"),
                ("proc/status", "VmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n"),
            ],
        );
        let text = "5:memory:/job/c1\n2:cpu,cpuacct:/\n0::/\n";
        let cg = Cgroup::find(text, &root);
        assert_eq!(cg.memory, Some(root.join("memory/job/c1")));
        assert_eq!(
            (cg.cpuacct.clone(), cg.cpu.clone(), cg.v2.clone()),
            (None, None, None)
        );
        let r = resources(cg, &root.join("proc"));
        let s = r.sample();
        assert_eq!(s.memory_bytes, Some(1_048_576.0));
        assert_eq!(s.memory_limit_bytes, Some(268_435_456.0));
        // the host's cpuacct is ignored: the process's own CPU time instead
        assert!(s.cpu_seconds.is_some_and(|c| c < 999.0), "{s:?}");
        assert_eq!(s.cpu_throttled_seconds, None);
        assert_eq!(r.peak_rss_bytes(), Some(2048.0 * 1024.0));
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn v1_container_with_its_own_mounts_reads_the_mount_roots() {
        let root = tree(
            &["memory", "cpuacct", "cpu"],
            &[
                ("memory/memory.usage_in_bytes", "4096\n"),
                ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
                ("cpuacct/cpuacct.usage", "1500000000\n"),
                (
                    "cpu/cpu.stat",
                    "nr_periods 10\nnr_throttled 2\nthrottled_time 250000000\n",
                ),
            ],
        );
        let text = "4:memory:/docker/abc\n3:cpuacct:/docker/abc\n2:cpu:/docker/abc\n";
        let s = resources(Cgroup::find(text, &root), &root).sample();
        assert_eq!(s.memory_bytes, Some(4096.0));
        assert_eq!(s.memory_limit_bytes, None, "unlimited is absent");
        assert_eq!(s.cpu_seconds, Some(1.5));
        assert_eq!(s.cpu_throttled_seconds, Some(0.25));
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn v2_reads_current_max_and_cpu_stat() {
        let root = tree(
            &["kubepods/pod1"],
            &[
                ("cgroup.controllers", "cpu memory\n"),
                ("kubepods/pod1/memory.current", "123456\n"),
                ("kubepods/pod1/memory.max", "536870912\n"),
                (
                    "kubepods/pod1/cpu.stat",
                    "usage_usec 2500000\nuser_usec 2000000\nthrottled_usec 100000\n",
                ),
            ],
        );
        let s = resources(Cgroup::find("0::/kubepods/pod1\n", &root), &root).sample();
        assert_eq!(s.memory_bytes, Some(123_456.0));
        assert_eq!(s.memory_limit_bytes, Some(536_870_912.0));
        assert_eq!(s.cpu_seconds, Some(2.5));
        assert_eq!(s.cpu_throttled_seconds, Some(0.1));
        std::fs::write(root.join("kubepods/pod1/memory.max"), "max\n").unwrap();
        let s = resources(Cgroup::find("0::/kubepods/pod1\n", &root), &root).sample();
        assert_eq!(s.memory_limit_bytes, None);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn without_a_cgroup_memory_and_cpu_fall_back_to_the_process() {
        let root = tree(
            &["proc"],
            &[("proc/status", "VmHWM:\t 10 kB\nVmRSS:\t 8 kB\n")],
        );
        let s = resources(Cgroup::find("garbage\n0::/\n", &root), &root.join("proc")).sample();
        assert_eq!(s.memory_bytes, Some(8192.0));
        assert_eq!(s.memory_limit_bytes, None);
        assert!(s.cpu_seconds.is_some());
        assert_eq!(s.cpu_throttled_seconds, None);
        // nothing readable at all: absent, no error
        let r = resources(Cgroup::default(), &root.join("missing"));
        assert_eq!(r.sample().memory_bytes, None);
        assert_eq!(r.peak_rss_bytes(), None);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn cpu_time_grows_with_work() {
        let before = Resources::cpu_time().unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(Resources::cpu_time().unwrap() > before);
    }
}
