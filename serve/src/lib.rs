//! # whisk-serve
//!
//! The listener the gateway and the collector serve HTTP/1.1 on, so that a tenant who holds
//! sockets open costs only itself. `axum::serve` runs hyper without a timer, so none of
//! hyper's own timeouts fire there; this one, per connection:
//!
//! - **head timeout** (`--head-timeout`): a request head must be complete this long after its
//!   first byte, a new connection's first head this long after the accept (a connection that
//!   sends nothing, or half a head, is closed then);
//! - **idle timeout** (`--idle-timeout`): a kept-alive connection with no request begun is
//!   closed this long after its last answer;
//! - **body timeout** (`--body-timeout`): a request's whole body must arrive this long after its
//!   head, checked on every frame, so a body trickled a byte at a time is cut off too; the
//!   service sees a [`BodyTimeout`] error (find it with [`body_timeout_in`]) and answers, and
//!   the connection is closed after that answer;
//! - **connection limits** (`--max-connections-per-peer`, `--max-connections`): a new
//!   connection past its peer address's limit first closes that peer's oldest connection that
//!   has not sent a complete head (one never served before one kept alive), past the global
//!   limit the same at the peer holding the most; a connection serving a request is never
//!   closed for room. When there is none to close, the new connection is refused at once (a
//!   best-effort `503` and close).
//!
//! Everything is counted in [`ConnectionMetrics`] (`<prefix>_connections_*`). The settings are
//! [`Limits`], read from the flags of [`ListenerFlags`] (defaults in one place:
//! [`Limits::default`]). Names and defaults are contracts in docs/design.md, "Listeners".
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use whisk_serve::{ConnectionMetrics, Limits, serve};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let router = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok\n" }));
//! let metrics = ConnectionMetrics::new("example").expect("a valid prefix");
//! serve(listener, router, Limits::default(), metrics, std::future::pending()).await
//! # }
//! ```
// Product code: no function over 100 lines (clippy.toml); tests and benches are exempt.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod body;
mod conn;
mod limits;
mod metrics;
mod table;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

pub use body::{BodyTimeout, body_timeout_in};
pub use limits::{EnvPrefix, Limits, ListenerFlags};
pub use metrics::ConnectionMetrics;

use metrics::Refusal;
use table::Table;

/// Longest wait for open connections to finish their requests after `shutdown`.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Pause after a failed accept (out of file descriptors: closing connections frees some).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, lets requests in flight finish (idle connections close at once) for at most 20 s,
/// and returns. Accept errors are logged, counted and retried; it does not fail.
///
/// # Errors
/// None today; the `Result` leaves room for a listener that can fail.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    metrics: ConnectionMetrics,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let table = Arc::new(Table::new(limits, metrics));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                table.metrics().refused(Refusal::AcceptFailed);
                tracing::warn!("accepting a connection failed: {e}");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let peer = addr.ip().to_canonical();
        match table.admit(peer) {
            Ok(slot) => {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!("cannot set TCP_NODELAY on an accepted connection: {e}");
                }
                let _task = tokio::spawn(conn::run(
                    stream,
                    peer,
                    slot,
                    Arc::clone(&table),
                    router.clone(),
                    stopped.clone(),
                ));
            }
            Err(why) => {
                tracing::debug!(%peer, reason = ?why, "connection refused");
                refuse(&stream, why, &limits);
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    drop(stopped);
    if tokio::time::timeout(SHUTDOWN_GRACE, stop.closed())
        .await
        .is_err()
    {
        tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after shutdown; leaving them");
    }
    Ok(())
}

/// A best-effort `503` on a refused connection (one non-blocking write), then it is closed.
fn refuse(stream: &TcpStream, why: Refusal, limits: &Limits) {
    let text = match why {
        Refusal::PeerLimit => format!(
            "too many connections from your address (--max-connections-per-peer {})\n",
            limits.max_connections_per_peer
        ),
        _ => format!(
            "too many connections (--max-connections {})\n",
            limits.max_connections
        ),
    };
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\
         content-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}
