//! Name resolution of the Pushgateway host, cached between pushes.
//!
//! ureq resolves the host before every request, even when it then reuses the pooled
//! connection, and with a timeout set (the SDK always sets one) its default resolver spawns a
//! thread per lookup. Per activation that is a thread start and a `getaddrinfo` (a DNS query for
//! a service name) on a path that only needs the pooled connection. This resolver asks the
//! default one once and hands out the cached addresses until [`ResolverCache::forget`] is
//! called after a transport failure, so a moved Pushgateway is looked up again.

use std::sync::{Arc, Mutex, PoisonError};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// `scheme://authority` of the last lookup and its addresses.
type Entry = Option<(String, ResolvedSocketAddrs)>;

/// The resolver given to the ureq agent; shares its cache with the [`ResolverCache`] handle.
#[derive(Debug, Default)]
pub(crate) struct CachingResolver {
    cache: Arc<Mutex<Entry>>,
}

/// The pusher's handle on the cache, to drop the addresses after a failed request.
#[derive(Debug, Clone)]
pub(crate) struct ResolverCache {
    cache: Arc<Mutex<Entry>>,
}

impl CachingResolver {
    /// The resolver and a handle on its cache.
    pub(crate) fn new() -> (Self, ResolverCache) {
        let resolver = Self::default();
        let handle = ResolverCache {
            cache: Arc::clone(&resolver.cache),
        };
        (resolver, handle)
    }
}

impl ResolverCache {
    /// Forgets the cached addresses: the next request resolves the host again.
    pub(crate) fn forget(&self) {
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Whether addresses are cached (for tests).
    #[cfg(test)]
    pub(crate) fn is_cached(&self) -> bool {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

fn key(uri: &Uri) -> String {
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or(""),
        uri.authority().map(|a| a.as_str()).unwrap_or("")
    )
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let scheme = uri.scheme_str().unwrap_or("");
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((k, addrs)) = cache.as_ref() {
                // `k` is `scheme://authority`; compare without building a string per push
                if k.strip_prefix(scheme)
                    .and_then(|r| r.strip_prefix("://"))
                    .is_some_and(|a| a == authority)
                {
                    return Ok(addrs.clone());
                }
            }
        }
        // Not cached: the default resolver (a thread bounded by the request's timeout).
        let addrs = DefaultResolver::default().resolve(uri, config, timeout)?;
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((key(uri), addrs.clone()));
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

    fn resolve(r: &CachingResolver, uri: &str) -> Vec<std::net::SocketAddr> {
        let uri: Uri = uri.parse().unwrap();
        r.resolve(&uri, &Config::default(), timeout())
            .unwrap()
            .iter()
            .copied()
            .collect()
    }

    #[test]
    fn resolves_once_and_serves_the_cached_address_for_the_same_host() {
        let (r, cache) = CachingResolver::new();
        assert!(!cache.is_cached());
        let first = resolve(&r, "http://127.0.0.1:9091/metrics/job/a");
        assert_eq!(first, vec!["127.0.0.1:9091".parse().unwrap()]);
        assert!(cache.is_cached());
        // a stale entry that only the cache can have produced proves the cache is used
        let fake: std::net::SocketAddr = "127.0.0.2:1".parse().unwrap();
        let mut addrs = r.empty();
        addrs.push(fake);
        *r.cache.lock().unwrap() = Some(("http://127.0.0.1:9091".to_string(), addrs));
        assert_eq!(resolve(&r, "http://127.0.0.1:9091/other/path"), vec![fake]);
    }

    #[test]
    fn resolves_again_for_another_host_or_after_forget() {
        let (r, cache) = CachingResolver::new();
        let fake: std::net::SocketAddr = "127.0.0.2:1".parse().unwrap();
        let mut addrs = r.empty();
        addrs.push(fake);
        *r.cache.lock().unwrap() = Some(("http://127.0.0.1:9091".to_string(), addrs.clone()));
        assert_eq!(
            resolve(&r, "http://127.0.0.1:9092/x"),
            vec!["127.0.0.1:9092".parse().unwrap()]
        );
        *r.cache.lock().unwrap() = Some(("http://127.0.0.1:9091".to_string(), addrs));
        cache.forget();
        assert!(!cache.is_cached());
        assert_eq!(
            resolve(&r, "http://127.0.0.1:9091/x"),
            vec!["127.0.0.1:9091".parse().unwrap()]
        );
    }
}
