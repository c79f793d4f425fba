//! Wires the parts together: consumer thread, HTTP server, push loop, janitor, shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::janitor::Janitor;
use crate::janitor::prometheus::PrometheusClient;
use crate::push_loop::{PlatformPush, push_loop};
use crate::shared::Shared;
use crate::sink::pushgateway::PushgatewayClient;
use crate::sink::remote_write::{PlatformSink, RemoteWritePush};
use crate::source::kafka::{Command, KafkaSource};

/// Upper bound of each HTTP request to the Pushgateway.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the final push may take at shutdown: a store that does not answer must not hold
/// the replica past its grace period (Kubernetes' default is 30 s).
const SHUTDOWN_PUSH: Duration = Duration::from_secs(4);

/// How long the delete of the replica's platform group may take at shutdown.
const SHUTDOWN_DELETE: Duration = Duration::from_secs(3);

/// Runs the collector until `shutdown` completes, then stops consuming, pushes a last time,
/// commits and returns (within about 12 s, whether or not the store answers).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    let shared = Arc::new(Shared::new(config.limits()));
    let http = Http::start(&config, &shared).await?;
    let clients = pushgateway_clients(&config)?;
    let instance = config.instance();
    let push = platform_sink(&config, &clients, &shared, &instance)?;
    let consumer = Consumer::start(&config, &shared, push.as_ref())?;
    let tasks = start_loops(
        &config,
        &shared,
        &clients,
        push.as_ref(),
        &consumer,
        &instance,
    )?;

    shutdown.await;
    let started = Instant::now();
    tracing::info!("shutting down: stop consuming, final push, commit");
    for t in &tasks {
        t.abort();
    }
    let pushed = consumer.finish(&shared, push.as_ref(), started).await;
    // A rollout must not leave this replica's group frozen in the Pushgateway (its gauges would
    // be summed with the new replicas'). Only once the final push and commit are done.
    if let (Some(p), true) = (&push, config.delete_on_shutdown) {
        match tokio::time::timeout(SHUTDOWN_DELETE, p.delete()).await {
            Ok(Ok(())) => {
                tracing::info!(url = %p.url(), pushed, "deleted this replica's platform group")
            }
            Ok(Err(e)) => tracing::warn!("could not delete this replica's platform group: {e}"),
            Err(_) => tracing::warn!(
                "could not delete this replica's platform group: no answer within {}s",
                SHUTDOWN_DELETE.as_secs()
            ),
        }
    }
    http.stop().await?;
    tracing::info!(took = ?started.elapsed(), "stopped");
    Ok(())
}

/// The HTTP server (`/metrics`, `/healthz`, `/readyz`) on the listener of `whisk-serve`.
struct Http {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Http {
    async fn start(config: &Config, shared: &Arc<Shared>) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Listen {
                addr: config.listen,
                source,
            })?;
        let local = listener.local_addr().unwrap_or(config.listen);
        tracing::info!(%local, "HTTP server listening (/metrics, /healthz, /readyz)");
        let connections = whisk_serve::ConnectionMetrics::new("whisk_collector")?;
        connections.register(shared.telemetry.registry())?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = crate::http::router(Arc::clone(shared));
        let limits = config.listener.limits;
        let task = tokio::spawn(async move {
            whisk_serve::serve(listener, router, limits, connections, async move {
                let _ = stopped.await;
            })
            .await
        });
        Ok(Self { stop, task })
    }

    /// Stops serving; waits a second at most for requests in flight.
    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(1), self.task).await {
            return Err(Error::Serve(e));
        }
        Ok(())
    }
}

/// One client per `--pushgateway-url`, with the credentials and CA of the flags.
fn pushgateway_clients(config: &Config) -> Result<Vec<PushgatewayClient>> {
    let password = match &config.pushgateway_password_file {
        Some(path) => Some(read_secret(path, "--pushgateway-password-file")?),
        None => config.pushgateway_password.clone(),
    };
    let ca_pem = match &config.pushgateway_ca_file {
        Some(path) => Some(read_ca(path)?),
        None => None,
    };
    config
        .pushgateway_url
        .iter()
        .map(|url| {
            PushgatewayClient::with_ca(
                url,
                config.pushgateway_username.clone(),
                password.clone(),
                ca_pem.as_deref(),
                HTTP_TIMEOUT,
            )
        })
        .collect()
}

/// The Kafka consumer thread and what talks to it.
struct Consumer {
    thread: std::thread::JoinHandle<()>,
    stop: Arc<AtomicBool>,
    commands: std::sync::mpsc::Sender<Command>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Consumer {
    fn start(config: &Config, shared: &Arc<Shared>, push: Option<&PlatformSink>) -> Result<Self> {
        // Before partitions are revoked, the consumer thread pushes what it applied (blocking on
        // this runtime) so it can commit it and the next owner starts right after.
        let flush = push.map(|p| {
            let (p, shared, handle) = (
                p.clone(),
                Arc::clone(shared),
                tokio::runtime::Handle::current(),
            );
            Box::new(move || handle.block_on(p.push_snapshot(&shared)))
                as crate::source::kafka::Flush
        });
        let (commands, commands_rx) = std::sync::mpsc::channel();
        let source = KafkaSource::new(config, Arc::clone(shared), commands_rx, flush)?;
        let generation = source.generation();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("kafka-consumer".into())
                .spawn(move || source.run(&stop, Duration::from_secs(7)))
                .map_err(|source| Error::Spawn {
                    what: "the consumer thread",
                    source,
                })?
        };
        Ok(Self {
            thread,
            stop,
            commands,
            generation,
        })
    }

    /// Stops consuming, pushes a last time and has the thread commit that; whether the final
    /// push was made. Gives the thread until 8 s after `started`.
    async fn finish(
        self,
        shared: &Arc<Shared>,
        push: Option<&PlatformSink>,
        started: Instant,
    ) -> bool {
        self.stop.store(true, Ordering::Relaxed);
        // Let the consumer finish the message at hand so the final push includes it.
        while shared.is_consuming() && started.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let finish = match push {
            Some(p) => tokio::time::timeout(SHUTDOWN_PUSH, p.push_snapshot(shared))
                .await
                .unwrap_or_else(|_| {
                    tracing::warn!(
                        "final push got no answer within {}s: the next owner re-reads the \
                         events since the last commit",
                        SHUTDOWN_PUSH.as_secs()
                    );
                    None
                }),
            None => None,
        };
        let pushed = finish.is_some();
        let _ = self.commands.send(Command::Finish(finish));
        let thread = self.thread;
        let joined = tokio::task::spawn_blocking(move || thread.join());
        if tokio::time::timeout(
            Duration::from_secs(8).saturating_sub(started.elapsed()),
            joined,
        )
        .await
        .is_err()
        {
            tracing::warn!("consumer did not close in time; exiting anyway");
        }
        pushed
    }
}

/// The push loop, the janitor and the eviction loop, as the flags ask.
fn start_loops(
    config: &Config,
    shared: &Arc<Shared>,
    clients: &[PushgatewayClient],
    push: Option<&PlatformSink>,
    consumer: &Consumer,
    instance: &str,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    if let Some(p) = push {
        tracing::info!(url = %p.url(), interval = ?config.push_interval, "pushing the platform group");
        tasks.push(tokio::spawn(push_loop(
            p.clone(),
            Arc::clone(shared),
            consumer.commands.clone(),
            Arc::clone(&consumer.generation),
            config.push_interval,
        )));
    }
    match (clients.is_empty(), config.prune_after.is_zero()) {
        (false, false) => {
            let mut janitor = Janitor::for_pushgateways(
                clients.to_vec(),
                &config.prune_job,
                config.prune_after,
                config.prune_dry_run,
            )
            .with_platform(&config.push_job, instance);
            if let Some(url) = &config.prometheus_url {
                tracing::info!(%url, "janitor: stale groups and shard health from Prometheus");
                janitor = janitor.with_prometheus(PrometheusClient::new(url)?);
            }
            tasks.push(tokio::spawn(janitor_loop(
                janitor,
                Arc::clone(shared),
                config.prune_interval,
            )));
        }
        (false, true) => tracing::info!("janitor disabled (--prune-after 0)"),
        (true, _) => {}
    }
    if !config.evict_after.is_zero() {
        tasks.push(tokio::spawn(eviction_loop(
            Arc::clone(shared),
            (config.evict_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(60)),
        )));
    }
    Ok(tasks)
}

/// Where the platform group goes: with `--remote-write-url`, the receiver (the scraped
/// `/metrics` then carries only the collector's own health, and no janitor runs: there are no
/// Pushgateway clients); else the first Pushgateway (the janitor serves every one); else nowhere.
fn platform_sink(
    config: &Config,
    clients: &[PushgatewayClient],
    shared: &Shared,
    instance: &str,
) -> Result<Option<PlatformSink>> {
    if let Some(rw) = remote_write_push(config, instance)? {
        shared.serve_platform_metrics(false);
        return Ok(Some(PlatformSink::RemoteWrite(rw)));
    }
    Ok(clients.first().map(|client| {
        PlatformSink::Pushgateway(PlatformPush::new(
            client.clone(),
            &config.push_job,
            instance,
        ))
    }))
}

/// The remote-write sink when `--remote-write-url` is given.
fn remote_write_push(config: &Config, instance: &str) -> Result<Option<RemoteWritePush>> {
    let Some(url) = &config.remote_write_url else {
        return Ok(None);
    };
    let client = whisk_remote_write::Client::new(whisk_remote_write::ClientConfig {
        url: url.clone(),
        headers: config.remote_write_headers.clone(),
        total_bound: config.remote_write_timeout,
        user_agent: format!("whisk-collector/{}", env!("CARGO_PKG_VERSION")),
    })
    .map_err(Error::HttpClient)?;
    Ok(Some(RemoteWritePush::new(
        client,
        &config.push_job,
        instance,
    )))
}

async fn janitor_loop(janitor: Janitor, shared: Arc<Shared>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let _ = ticker.tick().await;
        match janitor.run_once().await {
            Ok(round) => shared.telemetry.janitor_round_done(&round),
            Err(e) => shared.telemetry.janitor_round_failed(&e),
        }
    }
}

/// Forgets idle keys every `every` (a pass is one walk over the maps under the lock).
async fn eviction_loop(shared: Arc<Shared>, every: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let _ = ticker.tick().await;
        let evicted = shared.lock().aggregator.evict_idle(Instant::now());
        shared.telemetry.keys_evicted(evicted);
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                let _ = s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}

/// The password in `path` without one trailing newline.
fn read_secret(path: &std::path::Path, flag: &'static str) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::File {
        flag,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_string())
}

/// The PEM bundle in `path`, checked to hold at least one certificate.
fn read_ca(path: &std::path::Path) -> Result<Vec<u8>> {
    let err = |reason: String| Error::File {
        flag: "--pushgateway-ca-file",
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(pem),
        Ok(_) => Err(err("no PEM certificate in it".into())),
        Err(e) => Err(err(e.to_string())),
    }
}
