//! Name resolution of the Pushgateway host: on the loop's own thread, cached between pushes.
//!
//! Why not ureq's default resolver: with a timeout set (the SDK always sets one) it runs
//! `getaddrinfo` in a detached thread per lookup and stops waiting for it when the timeout
//! passes — the thread lives on. The loop then reads the next activation and calls `set_var` for
//! its `__OW_*` variables while that thread may still be inside `getaddrinfo`, which reads the
//! environment: undefined behaviour with glibc. And per activation it would be a thread start and
//! a DNS query on a path that only needs the pooled connection.
//!
//! The choice here: **every lookup runs on the calling thread — the loop's — and is cached.**
//! The loop is the only thread of the SDK that touches the environment, so no lookup can overlap
//! a `set_var`. The host is looked up at the first push and again only after a transport failure
//! ([`ResolverCache::forget`]), so a moved Pushgateway is found. A lookup on the loop thread is
//! bounded by the system resolver's own limits (`/etc/resolv.conf` `timeout` × `attempts`;
//! glibc's default 5 s × 2), not by the push timeout, so it must stay off the response path: in
//! the default mode pushes (and lookups) happen after the result is written; in strict mode the
//! pre-result push never looks up ([`ResolverCache::allow_lookups`] is off for it) and fails fast
//! as a transport failure when nothing is cached; the loop then looks the host up after the
//! result is written ([`ResolverCache::lookup_now`]), before it reads the next line.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// `scheme://authority` of the last lookup and its addresses.
type Entry = Option<(String, ResolvedSocketAddrs)>;

#[derive(Debug)]
struct Shared {
    entry: Mutex<Entry>,
    lookups: AtomicBool,
    /// Whether a request asked the system resolver since [`ResolverCache::take_looked_up`].
    looked_up: AtomicBool,
}

/// The resolver given to the ureq agent; shares its cache with the [`ResolverCache`] handle.
#[derive(Debug)]
pub(crate) struct CachingResolver {
    shared: Arc<Shared>,
}

/// The pusher's handle on the cache.
#[derive(Debug, Clone)]
pub(crate) struct ResolverCache {
    shared: Arc<Shared>,
}

impl CachingResolver {
    /// The resolver and a handle on its cache.
    pub(crate) fn new() -> (Self, ResolverCache) {
        let shared = Arc::new(Shared {
            entry: Mutex::new(None),
            lookups: AtomicBool::new(true),
            looked_up: AtomicBool::new(false),
        });
        let handle = ResolverCache {
            shared: Arc::clone(&shared),
        };
        (Self { shared }, handle)
    }
}

impl ResolverCache {
    /// Forgets the cached addresses: the next lookup asks the system resolver again.
    pub(crate) fn forget(&self) {
        *self.entry() = None;
    }

    /// Whether requests may look the host up when nothing is cached (off for the strict mode's
    /// pre-result push).
    pub(crate) fn allow_lookups(&self, allowed: bool) {
        self.shared.lookups.store(allowed, Ordering::Relaxed);
    }

    /// Looks `url`'s host up now, on this thread, unless it is cached.
    pub(crate) fn lookup_now(&self, url: &str) {
        let Ok(uri) = url.parse::<Uri>() else { return };
        if cached(&self.entry(), &uri).is_none() {
            if let Ok(addrs) = lookup(&uri) {
                *self.entry() = Some((key(&uri), addrs));
            }
        }
    }

    /// Whether a request asked the system resolver since the last call (its time is not bounded
    /// by the push timeout); clears the mark.
    pub(crate) fn take_looked_up(&self) -> bool {
        self.shared.looked_up.swap(false, Ordering::Relaxed)
    }

    /// Whether addresses are cached.
    pub(crate) fn is_cached(&self) -> bool {
        self.entry().is_some()
    }

    fn entry(&self) -> std::sync::MutexGuard<'_, Entry> {
        self.shared
            .entry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn key(uri: &Uri) -> String {
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or(""),
        uri.authority().map(|a| a.as_str()).unwrap_or("")
    )
}

/// The cached addresses when they are `uri`'s host's.
fn cached(entry: &Entry, uri: &Uri) -> Option<ResolvedSocketAddrs> {
    let scheme = uri.scheme_str().unwrap_or("");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    let (k, addrs) = entry.as_ref()?;
    // `k` is `scheme://authority`; compare without building a string per push
    k.strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
        .is_some_and(|a| a == authority)
        .then(|| addrs.clone())
}

/// `getaddrinfo` on the calling thread (an IP literal needs no query).
fn lookup(uri: &Uri) -> Result<ResolvedSocketAddrs, ureq::Error> {
    let authority = uri.authority().ok_or(ureq::Error::HostNotFound)?;
    let port = authority
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let host = authority.host();
    // `[::1]` in a URL is `::1` for the system resolver
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let found = (host, port).to_socket_addrs().map_err(ureq::Error::Io)?;
    let mut addrs = empty();
    for addr in found.take(16) {
        addrs.push(addr);
    }
    if addrs.is_empty() {
        Err(ureq::Error::HostNotFound)
    } else {
        Ok(addrs)
    }
}

fn empty() -> ResolvedSocketAddrs {
    ResolvedSocketAddrs::from_fn(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        _config: &Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let handle = ResolverCache {
            shared: Arc::clone(&self.shared),
        };
        if let Some(addrs) = cached(&handle.entry(), uri) {
            return Ok(addrs);
        }
        if !self.shared.lookups.load(Ordering::Relaxed) {
            return Err(ureq::Error::Io(std::io::Error::other(
                "the Pushgateway host is not resolved yet (looked up after the result is written)",
            )));
        }
        self.shared.looked_up.store(true, Ordering::Relaxed);
        let addrs = lookup(uri)?;
        *handle.entry() = Some((key(uri), addrs.clone()));
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use ureq::Timeout;
    use ureq::unversioned::transport::time::Duration as UreqDuration;

    fn timeout() -> NextTimeout {
        NextTimeout {
            after: UreqDuration::from(Duration::from_secs(5)),
            reason: Timeout::Resolve,
            per_read: None,
            per_write: None,
        }
    }

    fn resolve(r: &CachingResolver, uri: &str) -> Result<Vec<SocketAddr>, ureq::Error> {
        let uri: Uri = uri.parse().unwrap();
        r.resolve(&uri, &Config::default(), timeout())
            .map(|a| a.iter().copied().collect())
    }

    fn plant(r: &CachingResolver, key: &str, addr: SocketAddr) {
        let mut addrs = empty();
        addrs.push(addr);
        *r.shared.entry.lock().unwrap() = Some((key.to_string(), addrs));
    }

    #[test]
    fn resolves_once_and_serves_the_cached_address_for_the_same_host() {
        let (r, cache) = CachingResolver::new();
        assert!(!cache.is_cached());
        let first = resolve(&r, "http://127.0.0.1:9091/metrics/job/a").unwrap();
        assert_eq!(first, vec!["127.0.0.1:9091".parse().unwrap()]);
        assert!(cache.is_cached());
        // a stale entry that only the cache can have produced proves the cache is used
        let fake: SocketAddr = "127.0.0.2:1".parse().unwrap();
        plant(&r, "http://127.0.0.1:9091", fake);
        assert_eq!(
            resolve(&r, "http://127.0.0.1:9091/other/path").unwrap(),
            vec![fake]
        );
    }

    #[test]
    fn resolves_again_for_another_host_or_after_forget() {
        let (r, cache) = CachingResolver::new();
        let fake: SocketAddr = "127.0.0.2:1".parse().unwrap();
        plant(&r, "http://127.0.0.1:9091", fake);
        assert_eq!(
            resolve(&r, "http://127.0.0.1:9092/x").unwrap(),
            vec!["127.0.0.1:9092".parse().unwrap()]
        );
        plant(&r, "http://127.0.0.1:9091", fake);
        cache.forget();
        assert!(!cache.is_cached());
        assert_eq!(
            resolve(&r, "http://127.0.0.1:9091/x").unwrap(),
            vec!["127.0.0.1:9091".parse().unwrap()]
        );
    }

    #[test]
    fn looks_up_names_and_bracketed_ipv6_literals() {
        let (r, _cache) = CachingResolver::new();
        let addrs = resolve(&r, "http://localhost:9091/x").unwrap();
        assert!(
            !addrs.is_empty()
                && addrs
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.port() == 9091),
            "{addrs:?}"
        );
        let (r, _cache) = CachingResolver::new();
        let v6 = resolve(&r, "http://[::1]:9091/x").unwrap();
        assert_eq!(v6, vec!["[::1]:9091".parse().unwrap()]);
    }

    #[test]
    fn without_lookups_allowed_an_uncached_host_fails_fast_and_lookup_now_fills_the_cache() {
        let (r, cache) = CachingResolver::new();
        cache.allow_lookups(false);
        assert!(resolve(&r, "http://127.0.0.1:9091/x").is_err());
        cache.lookup_now("http://127.0.0.1:9091/metrics/job@base64/x");
        assert!(cache.is_cached());
        assert_eq!(
            resolve(&r, "http://127.0.0.1:9091/x").unwrap(),
            vec!["127.0.0.1:9091".parse().unwrap()]
        );
    }
}
