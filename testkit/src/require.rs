//! Prerequisites a test needs from the machine (a tool, root, a cgroup): one rule for every test
//! in the workspace. Where one is missing, the test says why; under `CI=true` it fails with that
//! reason, so a CI run can never pass by checking nothing.

use std::fmt::Display;

/// Whether this is a CI run: `CI` set to anything but empty, `0` or `false` (what GitHub
/// Actions, GitLab and `.ci/run` set).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "FALSE" | "False"))
}

/// The prerequisite `found`, or, when it is missing, the decision for the test named `test`:
/// under `CI=true` a panic that fails the test with the reason; elsewhere one `SKIPPED` line on
/// stderr with the reason and `None`, and the caller returns.
///
/// ```
/// let tool = whisk_testkit::require("my_test", Ok::<_, String>("/usr/bin/true"));
/// assert_eq!(tool, Some("/usr/bin/true"));
/// ```
///
/// # Panics
///
/// Under `CI=true` when `found` is an error.
pub fn require<T, E: Display>(test: &str, found: Result<T, E>) -> Option<T> {
    match found {
        Ok(t) => Some(t),
        Err(why) => {
            assert!(
                !in_ci(),
                "{test}: prerequisite missing under CI=true: {why}"
            );
            // Straight to stderr: seen even where the harness captures the test's output.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {why} (this fails under CI=true)"
            );
            None
        }
    }
}
