//! Where the workspace's own binaries are: the target directory, and the example actions.

use std::path::PathBuf;

/// The workspace's target directory: `CARGO_TARGET_DIR`, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The executable of an example action: in `WHISK_ACTIONS_DIR` when it is set, else the newer
/// of `target/release` and `target/debug`. Panics with the build command when it is missing.
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
        target_dir().join("debug").join(name),
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
