//! The process's use of glibc's allocator: tuned once at start, and freed memory handed back
//! to the kernel after each large render.
//!
//! A platform push or a `/metrics` scrape at 10 000 actions allocates and frees tens of MB of
//! chunks, snapshots and buffers. glibc keeps what is freed: per thread arena, and inside the
//! heap wherever a live allocation sits above it (only the top of the heap is trimmed by
//! itself). Measured at 10 000 actions (docs/benchmarks.md, "Memory at 10 000 actions"): ~10 MB
//! of steady RSS from the arenas, which one arena and a 128 KiB trim threshold give back, and
//! ~4.7 MB more inside the heap, which `malloc_trim(0)` after each render gives back.
//!
//! The static musl build (the image) has musl's own allocator, which neither applies to and
//! which needs neither: it returns freed memory by itself (21.0 MB steady at 10 000 actions,
//! measured the same way). Everything here is a no-op there.

/// Sets one malloc arena and a 128 KiB trim threshold, the same as
/// `MALLOC_ARENA_MAX=1 MALLOC_TRIM_THRESHOLD_=131072`, which still win when set. Call it first
/// in `main`, before any other thread exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune_allocator() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator parameters; called before any other thread
        // runs. A 0 return (refused) leaves glibc's defaults, which are correct, only larger.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
    if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
        // SAFETY: as above.
        unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024) };
    }
}

/// No-op: not glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}

/// Hands the whole pages of freed heap memory back to the kernel (`malloc_trim(0)`, which
/// releases free pages anywhere in every arena, not only at the top). Called once a large
/// render has finished and its memory is freed: it walks the free lists under the arena lock,
/// 0.2–0.6 ms at 10 000 actions (measured on a loaded machine) against the seconds between
/// renders.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn give_back_freed_memory() {
    // SAFETY: malloc_trim is thread-safe (it takes each arena's lock) and only returns free
    // pages; its result (whether anything was released) is not needed.
    let _released = unsafe { libc::malloc_trim(0) };
}

/// No-op: not glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn give_back_freed_memory() {}
