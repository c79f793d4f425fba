//! Wires the parts together: HTTP server, family-table seeding and resync, shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Authenticator;
use crate::config::{AuthMode, Config};
use crate::error::{Error, Result};
use crate::families::{FamilyTable, StoredSides};
use crate::forward::Forwarder;
use crate::http::{AppState, router};
use crate::remote_write::{RemoteWrite, SWEEP_INTERVAL, Settings};
use crate::telemetry::Telemetry;
use crate::verdicts::Verdicts;

/// Pause between seeding attempts until every Pushgateway has answered once.
const SEED_RETRY: Duration = Duration::from_secs(2);

/// Runs the gateway until `shutdown` completes; in-flight requests are finished first.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let telemetry = Telemetry::new();
    let connections = whisk_serve::ConnectionMetrics::new("whisk_gateway")?;
    connections.register(telemetry.registry())?;
    telemetry
        .shards
        .set(i64::try_from(config.pushgateway_urls.len()).unwrap_or(i64::MAX));
    let auth = authenticator(&config, &telemetry)?;
    let forwarder = Forwarder::new(
        &config.pushgateway_urls,
        config.forward_timeout,
        config.resync_timeout,
        telemetry.clone(),
    )?;
    let families = Arc::new(
        FamilyTable::new(config.max_families)
            .with_first_sight_interval(config.first_sight_min_interval),
    );
    let remote_write = remote_write_backend(&config, &telemetry)?;
    let state = Arc::new(AppState {
        job: config.job.clone(),
        auth,
        families: Arc::clone(&families),
        forwarder: forwarder.clone(),
        telemetry: telemetry.clone(),
        max_body_bytes: config.max_body_bytes,
        verdicts: Verdicts::new(
            config.max_series_per_group,
            config.validation_cache_bytes,
            telemetry.clone(),
        ),
        remote_write,
    });

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(config.listen);
    tracing::info!(%local, shards = ?forwarder.urls(), job = %config.job, "whisk-gateway listening");

    let resync = background(&state, forwarder, families, telemetry, &config);
    // Answers go out as soon as they are written: whisk-serve sets TCP_NODELAY on every
    // accepted connection (hyper writes each answer in one `writev`).
    let served = whisk_serve::serve(
        listener,
        router(state),
        config.listener.limits,
        connections,
        async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
        },
    )
    .await;
    resync.abort();
    served.map_err(Error::Serve)
}

/// The controller-backed authenticator, or `None` (logged loudly) with `--auth none`.
fn authenticator(config: &Config, telemetry: &Telemetry) -> Result<Option<Authenticator>> {
    Ok(match (config.auth, &config.openwhisk_api_host) {
        (AuthMode::ApiKey, Some(host)) => {
            tracing::info!(api_host = %host, ttl = ?config.auth_cache_ttl, "pushes are authenticated with the activation's API key");
            Some(Authenticator::new(
                host,
                config.controller_timeout,
                config.auth_cache_ttl,
                config.auth_cache_size,
                telemetry.clone(),
            )?)
        }
        _ => {
            telemetry.auth_disabled.set(1);
            tracing::warn!(
                "AUTHENTICATION IS OFF (--auth none): anyone who reaches this gateway can push \
                 or delete the metrics of any namespace; use this only for local runs"
            );
            None
        }
    })
}

/// The remote-write backend when `--remote-write-url` is given.
fn remote_write_backend(config: &Config, telemetry: &Telemetry) -> Result<Option<RemoteWrite>> {
    let Some(url) = &config.remote_write_url else {
        return Ok(None);
    };
    let settings = Settings {
        url: url.clone(),
        headers: config.remote_write_headers.clone(),
        tenant_header: config.remote_write_tenant_header.clone(),
        retry_bound: config.remote_write_retry_bound,
        max_groups: config.remote_write_max_groups,
        memory_bytes: config.remote_write_memory_bytes,
    };
    tracing::info!(%url, tenant_header = ?config.remote_write_tenant_header, "pushes are written to a remote-write receiver (no Pushgateway)");
    Ok(Some(RemoteWrite::new(settings, telemetry.registry())?))
}

/// Forgets idle remote-write groups every [`SWEEP_INTERVAL`].
async fn sweep_loop(state: Arc<AppState>) {
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        if let Some(rw) = &state.remote_write {
            rw.sweep();
        }
    }
}

/// The replica's background loop: the family table's resync with Pushgateways; in remote-write
/// mode (no family table: ready at once) the sweep of idle groups.
fn background(
    state: &Arc<AppState>,
    forwarder: Forwarder,
    families: Arc<FamilyTable>,
    telemetry: Telemetry,
    config: &Config,
) -> tokio::task::JoinHandle<()> {
    if state.remote_write.is_some() {
        families.replace(HashMap::new(), families.begin_resync());
        tokio::spawn(sweep_loop(Arc::clone(state)))
    } else {
        tokio::spawn(resync_loop(
            forwarder,
            families,
            telemetry,
            config.family_resync_interval,
        ))
    }
}

/// Seeds the family table (retrying until every shard answered once), then rebuilds it every
/// `interval`. A failed rebuild logs, counts and keeps the current table.
async fn resync_loop(
    forwarder: Forwarder,
    families: Arc<FamilyTable>,
    telemetry: Telemetry,
    interval: Duration,
) {
    loop {
        let seeded = families.is_seeded();
        let generation = families.begin_resync();
        let mut snapshot = StoredSides::default();
        let mut ok = true;
        for shard in 0..forwarder.urls().len() {
            match forwarder.snapshot(shard, &mut snapshot).await {
                Ok(()) => telemetry.resync(true),
                Err(e) => {
                    telemetry.resync(false);
                    tracing::warn!("family table resync: {e}");
                    ok = false;
                }
            }
        }
        if ok {
            // One order over every shard: a name stored under clashing types on two shards
            // is learnt as the family pushed first, as within one shard.
            let snapshot = snapshot.keep_first_pushed();
            let names = snapshot.kept.len();
            let dropped = families.replace_stored(snapshot, generation);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "the Pushgateways hold more family names than --max-families"
                );
            }
            telemetry
                .known_families
                .set(i64::try_from(families.len()).unwrap_or(i64::MAX));
            if seeded {
                tracing::debug!(names, "family table rebuilt");
            } else {
                tracing::info!(names, "family table seeded from every Pushgateway; ready");
            }
        }
        let pause = if families.is_seeded() {
            interval
        } else {
            SEED_RETRY
        };
        tokio::time::sleep(pause).await;
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
