//! Project chores that are not part of any shipped crate. Today: [`package`], which builds the
//! example actions as static release executables and zips each one the way OpenWhisk wants it
//! (`cargo xtask package` → `dist/{hello,orders,flaky}.zip`). Tests that deploy the actions as a
//! user would (the real actionloop proxy's conformance suite) use [`package::zip_exec`].
// Product code: no function over 100 lines (clippy.toml); tests and benches are exempt.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod package;

/// What went wrong while packaging.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Building or zipping the actions failed.
    #[error("packaging: {0}")]
    Package(String),
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
