//! The workspace's HTTP client: reqwest on rustls with the `ring` crypto provider.
//!
//! reqwest's own `rustls` feature brings AWS-LC, a large C build for every profile and target
//! (clippy, the debug build and each static image build compile it again); `ring` is a much
//! smaller one and already in the build (the SDK's `tls` feature uses it). So the crates ask
//! reqwest for `rustls-no-provider` and build every client from [`http_client`].

use std::sync::Once;

/// A `reqwest` client builder whose TLS is rustls with the `ring` provider.
///
/// On first use it installs `ring` as the process's default rustls provider (reqwest built
/// without a provider refuses to build a client otherwise); a default an embedder installed
/// before is kept and used.
pub fn http_client() -> reqwest::ClientBuilder {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // An error means a default is installed already: reqwest uses that one.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}
