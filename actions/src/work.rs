//! `work`: a known amount of memory and CPU used inside an activation, so tests can check the
//! SDK's per-activation figures (`whisk_activation_memory_peak_bytes`,
//! `whisk_activation_cpu_seconds`).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::params::{self, ParamError};

/// Largest accepted `work.mib` (the largest OpenWhisk memory limit is a few GiB).
pub const MAX_WORK_MIB: u64 = 4096;
/// Largest accepted `work.cpu_ms` (OpenWhisk's longest action timeout, 5 minutes).
pub const MAX_WORK_CPU_MS: u64 = 300_000;

/// `{"mib": n, "cpu_ms": n}` (each default 0): allocate `mib` MiB touching every 4 KiB page,
/// then spin until this thread has used `cpu_ms` ms of CPU time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Work {
    /// MiB to allocate and touch (freed when the activation ends).
    pub mib: u64,
    /// CPU milliseconds to burn.
    pub cpu_ms: u64,
}

impl Work {
    /// Reads `params["work"]`; `None` when absent or null.
    pub fn from_params(params: &Value) -> Result<Option<Self>, ParamError> {
        let work = match params.get("work") {
            None | Some(Value::Null) => return Ok(None),
            Some(w @ Value::Object(_)) => w,
            Some(other) => {
                return Err(ParamError(format!(
                    "parameter `work` must be an object {{\"mib\": n, \"cpu_ms\": n}}, got {other}"
                )));
            }
        };
        let mib = params::count(work, "mib", 0)?;
        let cpu_ms = params::count(work, "cpu_ms", 0)?;
        if mib > MAX_WORK_MIB || cpu_ms > MAX_WORK_CPU_MS {
            return Err(ParamError(format!(
                "parameter `work` allows at most {MAX_WORK_MIB} MiB and {MAX_WORK_CPU_MS} ms of CPU, got {mib} MiB and {cpu_ms} ms"
            )));
        }
        Ok(Some(Self { mib, cpu_ms }))
    }

    /// Does the work; returns the number of pages touched.
    pub fn run(self) -> usize {
        let touched = allocate(self.mib);
        burn(Duration::from_millis(self.cpu_ms));
        touched
    }
}

/// Allocates `mib` MiB and writes one byte per 4 KiB page, so every page is resident.
fn allocate(mib: u64) -> usize {
    let bytes = usize::try_from(mib).unwrap_or(0) << 20;
    let mut block = vec![0u8; bytes];
    for page in block.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(&block)
        .iter()
        .step_by(4096)
        .filter(|b| **b == 1)
        .count()
}

/// CPU time this thread has used (`/proc/thread-self/schedstat`, ns).
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Spins until this thread has used `cpu` of CPU time (wall time where /proc cannot tell).
fn burn(cpu: Duration) {
    if cpu.is_zero() {
        return;
    }
    let start_cpu = thread_cpu();
    let start = Instant::now();
    let mut x = 1u64;
    loop {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
        let used = match (start_cpu, thread_cpu()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => start.elapsed(),
        };
        if used >= cpu {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_mib_and_cpu_ms_and_rejects_bad_values() {
        assert_eq!(Work::from_params(&json!({})), Ok(None));
        assert_eq!(
            Work::from_params(&json!({"work": {"mib": 64, "cpu_ms": "200"}})),
            Ok(Some(Work {
                mib: 64,
                cpu_ms: 200
            }))
        );
        for bad in [
            json!({"work": 5}),
            json!({"work": {"mib": -1}}),
            json!({"work": {"mib": 5000}}),
            json!({"work": {"cpu_ms": 400000}}),
        ] {
            assert!(Work::from_params(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn touches_every_page_and_burns_at_least_the_cpu_asked_for() {
        let before = thread_cpu();
        let touched = Work { mib: 8, cpu_ms: 50 }.run();
        assert_eq!(touched, 8 * 256);
        if let (Some(a), Some(b)) = (before, thread_cpu()) {
            assert!(b - a >= Duration::from_millis(50), "{:?}", b - a);
        }
    }
}
