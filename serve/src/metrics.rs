//! What the listener counts, under the service's prefix (`<prefix>_connections_*`).

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its peer address holds `--max-connections-per-peer`, none of them closable.
    PeerLimit,
    /// `--max-connections` are open, none of them closable.
    GlobalLimit,
    /// The kernel's accept failed (e.g. out of file descriptors).
    AcceptFailed,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Self::PeerLimit => "peer_limit",
            Self::GlobalLimit => "global_limit",
            Self::AcceptFailed => "accept_failed",
        }
    }
}

/// Why the listener closed a connection (a client's own close is not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// A head not complete within `--head-timeout`.
    HeadTimeout,
    /// No request begun within `--idle-timeout` of the last answer.
    IdleTimeout,
    /// A body not complete within `--body-timeout` (answered 408 by the service).
    BodyTimeout,
    /// Closed to make room for a new connection (it had not sent a complete head).
    Shed,
}

impl Closed {
    fn label(self) -> &'static str {
        match self {
            Self::HeadTimeout => "head_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::BodyTimeout => "body_timeout",
            Self::Shed => "shed",
        }
    }
}

/// `<prefix>_connections_open`, `<prefix>_connections_refused_total{reason}` and
/// `<prefix>_connections_closed_total{reason}` (docs/design.md, "Listeners").
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    open: IntGauge,
    refused: IntCounterVec,
    closed: IntCounterVec,
}

impl ConnectionMetrics {
    /// The metrics named `<prefix>_connections_*`, every reason at 0, not yet registered.
    ///
    /// # Errors
    /// `prefix` is not a valid metric name prefix.
    pub fn new(prefix: &str) -> prometheus::Result<Self> {
        let open = IntGauge::new(
            format!("{prefix}_connections_open"),
            "Connections open on the listener",
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_connections_refused_total"),
                "Connections refused at accept, by reason (peer_limit, global_limit, accept_failed)",
            ),
            &["reason"],
        )?;
        let closed = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_connections_closed_total"),
                "Connections the listener closed, by reason (head_timeout, idle_timeout, \
                 body_timeout, shed)",
            ),
            &["reason"],
        )?;
        for r in [
            Refusal::PeerLimit,
            Refusal::GlobalLimit,
            Refusal::AcceptFailed,
        ] {
            let _ = refused.with_label_values(&[r.label()]);
        }
        for c in [
            Closed::HeadTimeout,
            Closed::IdleTimeout,
            Closed::BodyTimeout,
            Closed::Shed,
        ] {
            let _ = closed.with_label_values(&[c.label()]);
        }
        Ok(Self {
            open,
            refused,
            closed,
        })
    }

    /// Registers the three metrics in `registry`.
    ///
    /// # Errors
    /// A metric of the same name is registered there already.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.open.clone()))?;
        registry.register(Box::new(self.refused.clone()))?;
        registry.register(Box::new(self.closed.clone()))
    }

    pub(crate) fn set_open(&self, n: usize) {
        self.open.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn refused(&self, why: Refusal) {
        self.refused.with_label_values(&[why.label()]).inc();
    }

    pub(crate) fn closed(&self, why: Closed) {
        self.closed.with_label_values(&[why.label()]).inc();
    }
}
