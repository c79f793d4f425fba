//! The open connections by peer address: admission against both limits, and the choice of the
//! connection closed to make room (one that has not sent a complete head, never one serving
//! a request).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

use crate::limits::Limits;
use crate::metrics::{Closed, ConnectionMetrics, Refusal};

/// Awaiting the first head since the accept.
const FRESH: u8 = 0;
/// Awaiting the next head since the last answer (kept alive).
const IDLE: u8 = 1;
/// Serving a request (its body, the handler, the answer).
const BUSY: u8 = 2;
/// Chosen to make room; its task closes it.
const SHED: u8 = 3;

/// One open connection's phase and times, shared by its task, its IO and the table.
#[derive(Debug)]
pub(crate) struct Slot {
    epoch: Instant,
    phase: AtomicU8,
    /// Milliseconds after `epoch`: the accept, or the end of the last answer.
    since: AtomicU64,
    /// Milliseconds after `epoch` + 1 of the current head's first byte; 0 when none yet.
    first_byte: AtomicU64,
    /// Wakes the connection's task when its deadline moved earlier or it was shed.
    pub(crate) wake: Notify,
}

impl Slot {
    fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            phase: AtomicU8::new(FRESH),
            since: AtomicU64::new(ms_since(epoch, Instant::now())),
            first_byte: AtomicU64::new(0),
            wake: Notify::new(),
        }
    }

    /// A complete head arrived: the request is served unless the slot was shed.
    pub(crate) fn begin_request(&self) -> bool {
        let begun = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p == FRESH || p == IDLE).then_some(BUSY)
            })
            .is_ok();
        self.first_byte.store(0, Ordering::Release);
        begun
    }

    /// The answer is written: the connection waits for its next head.
    pub(crate) fn end_request(&self) {
        self.since
            .store(ms_since(self.epoch, Instant::now()), Ordering::Release);
        self.first_byte.store(0, Ordering::Release);
        let _ = self
            .phase
            .compare_exchange(BUSY, IDLE, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Bytes arrived: the first of a head starts its head timeout.
    pub(crate) fn saw_bytes(&self) {
        if self.first_byte.load(Ordering::Acquire) != 0 {
            return;
        }
        match self.phase.load(Ordering::Acquire) {
            // From the accept either way: the deadline does not move.
            FRESH => {}
            IDLE => {
                let now = ms_since(self.epoch, Instant::now());
                self.first_byte.store(now + 1, Ordering::Release);
                // The deadline may now be earlier than the idle one the task sleeps until.
                self.wake.notify_one();
            }
            _ => {}
        }
    }

    /// When the listener closes this connection and why; `None` while a request is served.
    pub(crate) fn deadline(&self, limits: &Limits) -> Option<(Instant, Closed)> {
        let at = |ms: u64, d: Duration| self.epoch + Duration::from_millis(ms) + d;
        match self.phase.load(Ordering::Acquire) {
            FRESH => Some((
                at(self.since.load(Ordering::Acquire), limits.head_timeout),
                Closed::HeadTimeout,
            )),
            IDLE => match self.first_byte.load(Ordering::Acquire) {
                0 => Some((
                    at(self.since.load(Ordering::Acquire), limits.idle_timeout),
                    Closed::IdleTimeout,
                )),
                first => Some((at(first - 1, limits.head_timeout), Closed::HeadTimeout)),
            },
            SHED => Some((self.epoch, Closed::Shed)),
            _ => None,
        }
    }

    /// Order of closing to make room: fresh before kept-alive, then the oldest; `None` when
    /// it is serving a request.
    fn shed_rank(&self) -> Option<(u8, u64)> {
        let phase = self.phase.load(Ordering::Acquire);
        (phase == FRESH || phase == IDLE).then(|| (phase, self.since.load(Ordering::Acquire)))
    }

    fn shed(&self) -> bool {
        let shed = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p == FRESH || p == IDLE).then_some(SHED)
            })
            .is_ok();
        if shed {
            self.wake.notify_one();
        }
        shed
    }
}

fn ms_since(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

/// The open connections by peer; bounded by `max_connections` (a peer has an entry only
/// while it holds a connection).
#[derive(Debug)]
pub(crate) struct Table {
    limits: Limits,
    metrics: ConnectionMetrics,
    epoch: Instant,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    total: usize,
    peers: HashMap<IpAddr, Vec<Arc<Slot>>>,
}

impl Table {
    pub(crate) fn new(limits: Limits, metrics: ConnectionMetrics) -> Self {
        Self {
            limits,
            metrics,
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn metrics(&self) -> &ConnectionMetrics {
        &self.metrics
    }

    /// Admits a connection from `peer`, closing another first when a limit is reached (the
    /// peer's own at its limit; the fullest peer's at the global one), or refuses it.
    pub(crate) fn admit(&self, peer: IpAddr) -> Result<Arc<Slot>, Refusal> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let held = inner.peers.get(&peer).map_or(0, Vec::len);
        if held >= self.limits.max_connections_per_peer {
            if !inner.shed_from(peer) {
                self.metrics.refused(Refusal::PeerLimit);
                return Err(Refusal::PeerLimit);
            }
            self.metrics.closed(Closed::Shed);
        } else if inner.total >= self.limits.max_connections {
            if !inner.shed_anywhere() {
                self.metrics.refused(Refusal::GlobalLimit);
                return Err(Refusal::GlobalLimit);
            }
            self.metrics.closed(Closed::Shed);
        }
        let slot = Arc::new(Slot::new(self.epoch));
        inner.peers.entry(peer).or_default().push(Arc::clone(&slot));
        inner.total += 1;
        self.metrics.set_open(inner.total);
        Ok(slot)
    }

    /// Forgets a closed connection (a shed one is gone already).
    pub(crate) fn release(&self, peer: IpAddr, slot: &Arc<Slot>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slots) = inner.peers.get_mut(&peer) {
            if let Some(i) = slots.iter().position(|s| Arc::ptr_eq(s, slot)) {
                inner.remove(peer, i);
            }
        }
        self.metrics.set_open(inner.total);
    }
}

impl Inner {
    fn remove(&mut self, peer: IpAddr, i: usize) {
        if let Some(slots) = self.peers.get_mut(&peer) {
            let _ = slots.swap_remove(i);
            if slots.is_empty() {
                let _ = self.peers.remove(&peer);
            }
            self.total -= 1;
        }
    }

    /// Sheds `peer`'s first connection in [`Slot::shed_rank`] order; whether one was.
    fn shed_from(&mut self, peer: IpAddr) -> bool {
        let Some(slots) = self.peers.get(&peer) else {
            return false;
        };
        let mut ranked: Vec<((u8, u64), usize)> = slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.shed_rank().map(|r| (r, i)))
            .collect();
        ranked.sort_unstable();
        // A slot may have begun a request since it was ranked: then the next one.
        let shed = ranked.into_iter().find(|&(_, i)| slots[i].shed());
        match shed {
            Some((_, i)) => {
                self.remove(peer, i);
                true
            }
            None => false,
        }
    }

    /// Sheds a connection of the peer holding the most that has one to shed.
    fn shed_anywhere(&mut self) -> bool {
        let mut peers: Vec<(usize, IpAddr)> =
            self.peers.iter().map(|(ip, s)| (s.len(), *ip)).collect();
        peers.sort_unstable_by(|a, b| b.cmp(a));
        peers.into_iter().any(|(_, ip)| self.shed_from(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: usize, per_peer: usize) -> (Table, ConnectionMetrics) {
        let metrics = ConnectionMetrics::new("t").unwrap();
        let limits = Limits {
            max_connections: max,
            max_connections_per_peer: per_peer,
            ..Limits::default()
        };
        (Table::new(limits, metrics.clone()), metrics)
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_peer_at_its_limit_sheds_its_oldest_without_a_head_then_is_refused() {
        let (t, _) = table(100, 2);
        let a = t.admit(ip(1)).unwrap();
        let b = t.admit(ip(1)).unwrap();
        assert!(b.begin_request());
        // `a` has sent no head: it goes, the new one comes in.
        let c = t.admit(ip(1)).unwrap();
        assert!(
            a.deadline(t.limits())
                .is_some_and(|(_, why)| why == Closed::Shed)
        );
        assert!(!a.begin_request(), "a shed connection serves nothing");
        assert!(c.begin_request());
        // Both of the peer's connections serve requests: the next is refused.
        assert_eq!(t.admit(ip(1)).err(), Some(Refusal::PeerLimit));
        // Another peer is admitted.
        assert!(t.admit(ip(2)).is_ok());
        t.release(ip(1), &a);
        t.release(ip(1), &b);
        assert!(t.admit(ip(1)).is_ok());
    }

    #[test]
    fn at_the_global_limit_the_fullest_peers_connection_without_a_head_goes() {
        let (t, _) = table(4, 10);
        let quiet = t.admit(ip(1)).unwrap();
        let loud: Vec<_> = (0..3).map(|_| t.admit(ip(2)).unwrap()).collect();
        let _new = t.admit(ip(3)).unwrap();
        assert!(
            loud[0]
                .deadline(t.limits())
                .is_some_and(|(_, w)| w == Closed::Shed)
        );
        assert!(quiet.begin_request());
        for s in &loud[1..] {
            assert!(s.begin_request());
        }
        // Only `_new` is closable now; then nothing is.
        let newer = t.admit(ip(4)).unwrap();
        assert!(newer.begin_request());
        assert_eq!(t.admit(ip(5)).err(), Some(Refusal::GlobalLimit));
    }

    #[test]
    fn a_kept_alive_connection_is_shed_after_every_fresh_one() {
        let (t, _) = table(100, 2);
        let kept = t.admit(ip(1)).unwrap();
        assert!(kept.begin_request());
        kept.end_request();
        let fresh = t.admit(ip(1)).unwrap();
        let _ = t.admit(ip(1)).unwrap();
        assert!(
            fresh
                .deadline(t.limits())
                .is_some_and(|(_, w)| w == Closed::Shed)
        );
        assert!(
            kept.deadline(t.limits())
                .is_some_and(|(_, w)| w == Closed::IdleTimeout)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_run_from_the_accept_the_answer_and_a_heads_first_byte() {
        let (t, _) = table(10, 10);
        let limits = *t.limits();
        let s = t.admit(ip(1)).unwrap();
        let accepted = Instant::now();
        s.saw_bytes();
        assert_eq!(
            s.deadline(&limits),
            Some((accepted + limits.head_timeout, Closed::HeadTimeout))
        );
        assert!(s.begin_request());
        assert_eq!(
            s.deadline(&limits),
            None,
            "no head or idle timeout while serving"
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        s.end_request();
        let answered = Instant::now();
        assert_eq!(
            s.deadline(&limits),
            Some((answered + limits.idle_timeout, Closed::IdleTimeout))
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        s.saw_bytes();
        assert_eq!(
            s.deadline(&limits),
            Some((Instant::now() + limits.head_timeout, Closed::HeadTimeout))
        );
    }
}
