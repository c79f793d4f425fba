//! The gateway's errors at start (a running gateway answers requests, it does not fail).

use std::net::SocketAddr;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr} (--listen): {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The HTTP client cannot be built (TLS backend).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The listener's metrics cannot be registered (a name taken twice).
    #[error("cannot register the listener's metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The server failed.
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Result with the gateway's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
