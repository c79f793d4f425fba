//! Where the workspace's own binaries are: the target directory, the build the running test
//! belongs to, and the example actions.

use std::path::PathBuf;

/// The workspace's target directory: `CARGO_TARGET_DIR`, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The directory of the build the running test belongs to, whose `deps/` holds the test binary:
/// `target/debug`, or `target/<triple>/debug` when the suite is built for another target
/// (scripts/test.sh builds it for static musl). Falls back to `target/debug`.
pub fn profile_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .filter(|dir| dir.join("deps").is_dir())
        .unwrap_or_else(|| target_dir().join("debug"))
}

/// A binary of the workspace from the running test's build (`profile_dir()`), or the path in the
/// environment variable `override_var` when it is set. Panics with the build command when it is
/// missing.
pub fn workspace_bin(name: &str, override_var: &str) -> PathBuf {
    let p = std::env::var_os(override_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| profile_dir().join(name));
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build -p {name}` first (scripts/test.sh builds every binary \
         before the tests), or set {override_var}",
        p.display()
    );
    p
}

/// The executable of an example action: in `WHISK_ACTIONS_DIR` when it is set, else the newer
/// of `target/release` and the running test's build (`profile_dir()`). Panics with the build
/// command when it is missing.
pub fn action_exec(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("WHISK_ACTIONS_DIR") {
        let p = PathBuf::from(dir).join(name);
        assert!(
            p.is_file(),
            "WHISK_ACTIONS_DIR has no {name}: {}",
            p.display()
        );
        return p;
    }
    let candidates = [
        target_dir().join("release").join(name),
        profile_dir().join(name),
    ];
    candidates
        .iter()
        .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p.clone())))
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| {
            panic!(
                "action `{name}` is not built: run `cargo build -p whisk-actions` first (looked in {candidates:?})"
            )
        })
}
