//! The platform push: every `--push-interval`, a snapshot of the `openwhisk_*` families is PUT
//! to this replica's own group `{job=<--push-job>, instance=<replica>}`.
//!
//! The state is cumulative, so a failed push loses nothing: it is counted, logged and simply
//! retried on the next interval. Offsets are committed only for snapshots that were pushed.

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use whisk_grouping::GroupingKey;

use crate::shared::{Offsets, Shared};
use crate::sink::pushgateway::PushgatewayClient;
use crate::source::kafka::Command;

/// Pushes this replica's platform group.
#[derive(Debug, Clone)]
pub(crate) struct PlatformPush {
    client: PushgatewayClient,
    key: GroupingKey,
}

impl PlatformPush {
    /// Pushes to group `{job, instance}`.
    pub(crate) fn new(client: PushgatewayClient, job: &str, instance: &str) -> Self {
        Self {
            client,
            key: GroupingKey::new(job).with("instance", instance),
        }
    }

    /// The group URL.
    pub(crate) fn url(&self) -> String {
        self.client.group_url(&self.key)
    }

    /// Renders a snapshot and pushes it. Returns the offsets the pushed snapshot covers when
    /// the push succeeded.
    pub(crate) async fn push_snapshot(&self, shared: &Arc<Shared>) -> Option<Offsets> {
        let s = Arc::clone(shared);
        let (body, offsets) = match tokio::task::spawn_blocking(move || s.platform_snapshot()).await
        {
            Ok(snapshot) => snapshot,
            Err(e) => {
                shared.telemetry.push_render_failed(&e);
                return None;
            }
        };
        let start = Instant::now();
        let timeout = put_timeout(self.client.timeout(), body.len());
        match self.client.put_group(&self.key, body, timeout).await {
            Ok(()) => {
                shared
                    .telemetry
                    .push_succeeded(&self.url(), start.elapsed());
                Some(offsets)
            }
            Err(e) => {
                shared.telemetry.push_failed(&e, start.elapsed());
                None
            }
        }
    }
}

/// The PUT of a large group must not die on a fixed timeout: the base timeout plus one second
/// per MB of body (a 10 000-action group is tens of MB).
fn put_timeout(base: Duration, body_bytes: usize) -> Duration {
    #[allow(clippy::cast_precision_loss)]
    let per_body = Duration::from_secs_f64(body_bytes as f64 / 1_000_000.0);
    base + per_body
}

/// Pushes every `every` until the consumer thread is gone, handing the offsets of each pushed
/// snapshot to it.
pub(crate) async fn push_loop(
    push: PlatformPush,
    shared: Arc<Shared>,
    commands: Sender<Command>,
    every: Duration,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let _ = ticker.tick().await;
        if let Some(offsets) = push.push_snapshot(&shared).await {
            if commands.send(Command::Store(offsets)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_put_timeout_grows_with_the_body() {
        let base = Duration::from_secs(5);
        assert_eq!(put_timeout(base, 0), base);
        assert_eq!(put_timeout(base, 80_000_000), Duration::from_secs(85));
    }
}
