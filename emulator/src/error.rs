//! The emulator's error type.

use std::path::PathBuf;

/// What went wrong in the emulator. Activation failures are not errors: they are activations with
/// a non-zero status code, as in OpenWhisk.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The action executable does not exist or is not a file.
    #[error(
        "action executable {path} not found; build the actions first (cargo build -p whisk-actions --release)"
    )]
    MissingExecutable {
        /// The path that was given.
        path: PathBuf,
    },
    /// An action was invoked that was never registered.
    #[error("unknown action `{0}`; register it with Invoker::add_action (or --action NAME=PATH)")]
    UnknownAction(String),
    /// An action specification is malformed.
    #[error("invalid action spec: {0}")]
    InvalidSpec(String),
    /// Starting an action process failed.
    #[error("starting {path}: {source}")]
    Spawn {
        /// The executable.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The action started but failed the proxy's start check (it exited, or did not
    /// acknowledge its start); a developer error of the activation that caused the cold start.
    #[error("starting {path}: {reason}; its output: {output}")]
    StartFailed {
        /// The executable.
        path: PathBuf,
        /// The Go proxy's words for it (`command exited`, `Command exited abruptly during
        /// initialization.`, `The action did not initialize properly.`).
        reason: String,
        /// The first lines the action wrote.
        output: String,
    },
    /// Creating the Kafka producer or sending to it failed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
