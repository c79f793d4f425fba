//! Pushing the registry to a Pushgateway: the grouping key (`whisk_grouping::GroupingKey`, `@base64`
//! for every value), a PUT
//! of the text exposition with a bounded timeout over one reused connection, failure
//! accounting, and the best-effort DELETE of the group when the action loop ends.
//!
//! The HTTP client is `ureq` 3 without default features: blocking, no async runtime, no threads
//! of its own, so it works in an action without a runtime and does not panic in one that runs
//! tokio (unlike `reqwest::blocking`). Its pool keeps the one connection alive between
//! activations. TLS (rustls, ring provider) is added by the `tls` feature only.

mod client;
mod schedule;

use std::time::{Duration, Instant};

use whisk_grouping::GroupingKey;

use crate::config::Config;
use crate::error::Error;
use crate::exposition::TextWriter;
use crate::identity::{ActionIdentity, instance_id};
use crate::registry::Metrics;
use client::{Auth, Client, PushError, api_key_header};
use schedule::Schedule;

/// What [`Pusher::push`] did.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum PushOutcome {
    Pushed,
    Skipped,
    Failed,
}

/// The Pushgateway client of one process.
#[derive(Debug)]
pub(crate) struct Pusher {
    client: Client,
    job: String,
    timeout: Duration,
    schedule: Schedule,
    /// A failure notice not printed yet: it goes to stderr right before the next result line.
    pending_notice: Option<String>,
    body: Vec<u8>,
    text: TextWriter,
    url: String,
    url_for: Option<ActionIdentity>,
}

impl Pusher {
    /// A client for `config`, or `None` when pushing is off or no URL is configured.
    pub(crate) fn from_config(config: &Config) -> Result<Option<Self>, Error> {
        let Some(url) = config.pushgateway_url.as_deref() else {
            return Ok(None);
        };
        if config.disabled {
            return Ok(None);
        }
        let client = Client::new(url, config)?;
        // First lookup now, at start: on the main thread, before the loop reads a line or sets
        // a variable (an IP literal needs no query).
        client.resolved.lookup_now(&client.base);
        Ok(Some(Self {
            client,
            job: config.job.clone(),
            timeout: config.timeout,
            schedule: Schedule::new(config.min_push_interval),
            pending_notice: None,
            body: Vec::with_capacity(8 * 1024),
            text: TextWriter::default(),
            url: String::new(),
            url_for: None,
        }))
    }

    /// The full URL of the group (cached; the identity of a container does not change).
    pub(crate) fn group_url(&mut self, identity: &ActionIdentity) -> &str {
        if self.url_for.as_ref() != Some(identity) {
            let key = GroupingKey::new(self.job.as_str())
                .with("instance", instance_id())
                .with("namespace", identity.namespace.as_str())
                .with("action", identity.action.as_str());
            self.url = format!("{}{}", self.client.base, key.path());
            self.url_for = Some(identity.clone());
        }
        &self.url
    }

    /// The activation's API key (`__OW_API_KEY`), for [`Config::with_api_key_auth`]; it arrives
    /// with every run line and may change. Cheap when it did not.
    pub(crate) fn set_api_key(&mut self, api_key: Option<&str>) {
        if let Auth::ApiKey { key, header } = &mut self.client.auth {
            if key.as_deref() != api_key {
                *header = api_key.and_then(api_key_header);
                if api_key.is_some() && header.is_none() {
                    self.pending_notice = Some(
                        "whisk-metrics: __OW_API_KEY is not `uuid:key`; pushing without credentials"
                            .to_string(),
                    );
                }
                *key = api_key.map(str::to_string);
            }
        }
    }

    /// Whether pushes authenticate with the activation's API key ([`Pusher::set_api_key`]).
    pub(crate) fn wants_api_key(&self) -> bool {
        matches!(self.client.auth, Auth::ApiKey { .. })
    }

    /// A failure notice to print now (before the result line), if one is due.
    pub(crate) fn take_notice(&mut self) -> Option<String> {
        self.pending_notice.take()
    }

    /// [`Pusher::push_at`] now.
    pub(crate) fn push(
        &mut self,
        metrics: &Metrics,
        identity: &ActionIdentity,
        activation: &str,
        deadline: Option<Instant>,
        force: bool,
    ) -> PushOutcome {
        self.push_at(
            Instant::now(),
            metrics,
            identity,
            activation,
            deadline,
            force,
        )
    }

    /// Pushes the whole registry unless, at `now`, the minimum interval or the back-off after
    /// failures says to wait (`force` pushes anyway). `deadline` bounds the timeout further
    /// (strict mode). Failures are counted, noticed at most once a minute (see
    /// [`Pusher::take_notice`]), and never returned: the next push sends the state again.
    /// `activation` is the id of the activation the push follows (empty when none): a notice
    /// names it, because in the default mode the notice can only be printed in the log of a
    /// later activation. `now` decides only when to push; the request's own timeout and the
    /// push duration are on the real clock.
    pub(crate) fn push_at(
        &mut self,
        now: Instant,
        metrics: &Metrics,
        identity: &ActionIdentity,
        activation: &str,
        deadline: Option<Instant>,
        force: bool,
    ) -> PushOutcome {
        if !self.schedule.due(now, force) {
            return PushOutcome::Skipped;
        }
        let started = Instant::now();
        let end = after(started, self.timeout);
        let end = deadline.map_or(end, |d| end.min(d));
        // A push with a deadline (strict mode, before the result) never waits for a lookup.
        self.client.resolved.allow_lookups(deadline.is_none());
        self.client.resolved.take_looked_up();
        let result = self.put(metrics, identity, end);
        self.client.resolved.allow_lookups(true);
        let looked_up = self.client.resolved.take_looked_up();
        let finished = Instant::now();
        let took = finished.saturating_duration_since(started);
        match result {
            Ok(()) => {
                metrics.builtins.push_done(took);
                self.schedule.succeeded(now + took);
                PushOutcome::Pushed
            }
            Err(e) => {
                let e = if looked_up {
                    e
                } else {
                    e.seen_at(finished, end)
                };
                metrics.builtins.push_failed(e.reason(), took);
                // A freeze says nothing about the Pushgateway: no back-off (once in a row), the
                // next activation (the one that thawed the container) pushes again at once.
                let backoff = if matches!(e, PushError::Frozen { .. }) {
                    self.schedule.interrupted(now + took)
                } else {
                    self.schedule.failed(now + took)
                };
                self.notice(now + took, &e, backoff, activation);
                PushOutcome::Failed
            }
        }
    }

    fn put(
        &mut self,
        metrics: &Metrics,
        identity: &ActionIdentity,
        end: Instant,
    ) -> Result<(), PushError> {
        self.encode_body(metrics);
        let body = std::mem::take(&mut self.body);
        let mut result = self.send("PUT", identity, &body, end);
        // A pooled connection the server closed while the container was frozen fails at once:
        // retry once on a fresh connection (and a fresh lookup of the host, which may have
        // moved) if there is time left.
        if let Err(PushError::Transport(e)) = &result {
            self.client.resolved.forget();
            if !matches!(e, ureq::Error::Timeout(_)) {
                result = self.send("PUT", identity, &body, end);
                if matches!(result, Err(PushError::Transport(_))) {
                    self.client.resolved.forget();
                }
            }
        }
        self.body = body;
        result
    }

    /// After the result is written: looks the host up if nothing is cached (on this, the loop's,
    /// thread, before the next line is read and its `__OW_*` variables are set).
    pub(crate) fn after_result(&mut self, identity: &ActionIdentity) {
        if !self.client.resolved.is_cached() {
            let url = self.group_url(identity).to_string();
            self.client.resolved.lookup_now(&url);
        }
    }

    /// Renders the registry into the reused body buffer; returns its length.
    pub(crate) fn encode_body(&mut self, metrics: &Metrics) -> usize {
        if let Err(e) = metrics.encode_with(&mut self.text, &mut self.body) {
            // Only a metric without samples can fail to encode; push what there is.
            eprintln!("whisk-metrics: encoding metrics failed: {e}");
        }
        self.body.len()
    }

    /// Best-effort DELETE of the container's group (when stdin closes).
    pub(crate) fn delete(&mut self, identity: &ActionIdentity) -> bool {
        let end = after(Instant::now(), self.timeout);
        self.send("DELETE", identity, &[], end).is_ok()
    }

    fn send(
        &mut self,
        method: &str,
        identity: &ActionIdentity,
        body: &[u8],
        end: Instant,
    ) -> Result<(), PushError> {
        let url = self.group_url(identity).to_string();
        self.client.send(method, &url, body, end)
    }

    /// Prepares the failure notice when one is due at `now` (at most one a minute).
    fn notice(&mut self, now: Instant, e: &PushError, backoff: Duration, activation: &str) {
        let Some(failures) = self.schedule.notice_due(now) else {
            return;
        };
        let after = if activation.is_empty() {
            String::new()
        } else {
            format!(" after activation {activation}")
        };
        self.pending_notice = Some(format!(
            "whisk-metrics: push to {}{after} failed ({}): {e} ({failures} failure(s) since the \
             last notice; the metrics are kept; next attempt in {} s or later; this notice \
             repeats at most once a minute)",
            self.url,
            e.reason().label(),
            backoff.as_secs(),
        ));
    }
}

/// `start + timeout`, saturating at a day (a configured timeout of `u64::MAX` ms must not
/// overflow the `Instant`).
fn after(start: Instant, timeout: Duration) -> Instant {
    start
        .checked_add(timeout)
        .unwrap_or(start + Duration::from_secs(86_400))
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::builtins::PushFailure;

    #[test]
    fn group_url_is_the_shared_grouping_key_path() {
        let config = Config::new().with_pushgateway_url("http://127.0.0.1:9091/");
        let mut p = Pusher::from_config(&config).unwrap().unwrap();
        let id = ActionIdentity {
            namespace: String::new(),
            action: "pkg/a".into(),
        };
        let url = p.group_url(&id).to_string();
        let path = url.strip_prefix("http://127.0.0.1:9091").unwrap();
        let key = GroupingKey::from_path(path).unwrap();
        assert_eq!(key.job(), "openwhisk_actions");
        assert_eq!(key.get("instance"), Some(instance_id()));
        assert_eq!(key.get("namespace"), Some(""));
        assert_eq!(key.get("action"), Some("pkg/a"));
        assert!(path.starts_with("/metrics/job@base64/"), "{path}");
    }

    #[test]
    fn the_group_path_in_design_md_is_the_one_the_sdk_pushes_to() {
        let config = Config::new().with_pushgateway_url("http://127.0.0.1:9091");
        let mut p = Pusher::from_config(&config).unwrap().unwrap();
        let id = ActionIdentity {
            namespace: "guest".into(),
            action: "hello".into(),
        };
        let url = p.group_url(&id).to_string();
        let key =
            GroupingKey::from_path(url.strip_prefix("http://127.0.0.1:9091").unwrap()).unwrap();
        // The documented template: each label's value replaced by its placeholder.
        let placeholder = |label: &str| match label {
            "job" => "<job>",
            "instance" => "<id>",
            "namespace" => "<ns>",
            "action" => "<action>",
            other => panic!("label {other} is not in design.md's grouping key"),
        };
        let mut template = format!("/metrics/job@base64/{}", placeholder("job"));
        for (label, _) in key.labels() {
            template.push_str(&format!("/{label}@base64/{}", placeholder(label)));
        }
        let design = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/design.md"),
        )
        .unwrap();
        let data_flow = design
            .lines()
            .find(|l| l.starts_with("action exec + whisk-metrics"))
            .expect("design.md's data-flow line of the SDK");
        assert!(
            data_flow.contains(&format!("PUT {template}")),
            "design.md shows {data_flow:?}; the SDK pushes to {template}"
        );
    }

    #[test]
    fn api_key_is_not_sent_over_plain_http_to_a_remote_host_unless_allowed() {
        let pusher = |url: &str, allow: bool| {
            let config = Config::new()
                .with_pushgateway_url(url)
                .with_api_key_auth(true)
                .with_allow_insecure_auth(allow);
            Pusher::from_config(&config).unwrap().unwrap()
        };
        let mut remote = pusher("http://192.0.2.1:9091", false);
        remote.set_api_key(Some("uuid:secret"));
        assert!(
            matches!(remote.client.auth, Auth::None),
            "{:?}",
            remote.client.auth
        );
        let mut allowed = pusher("http://192.0.2.1:9091", true);
        allowed.set_api_key(Some("uuid:secret"));
        assert!(
            matches!(&allowed.client.auth, Auth::ApiKey { header: Some(h), .. } if h == "Basic dXVpZDpzZWNyZXQ="),
            "{:?}",
            allowed.client.auth
        );
        for url in [
            "http://127.0.0.1:9091",
            "http://localhost:9091",
            "http://[::1]:9091",
        ] {
            let mut local = pusher(url, false);
            local.set_api_key(Some("a:b:c"));
            // split at the first `:`: user `a`, password `b:c`
            assert!(
                matches!(&local.client.auth, Auth::ApiKey { header: Some(h), .. } if *h == format!("Basic {}", STANDARD.encode("a:b:c"))),
                "{url}: {:?}",
                local.client.auth
            );
        }
        // a key without `:` is not sent, and says so before the next result
        let mut local = pusher("http://127.0.0.1:9091", false);
        local.set_api_key(Some("nocolon"));
        assert!(matches!(
            &local.client.auth,
            Auth::ApiKey { header: None, .. }
        ));
        assert!(local.take_notice().is_some_and(|n| n.contains("uuid:key")));
    }

    #[test]
    fn after_a_failure_pushes_are_skipped_until_the_back_off_passes() {
        let metrics = Metrics::new();
        let config = Config::new().with_pushgateway_url("http://127.0.0.1:1");
        let mut p = Pusher::from_config(&config).unwrap().unwrap();
        let id = ActionIdentity::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(
            p.push_at(at(0), &metrics, &id, "", None, false),
            PushOutcome::Failed
        );
        assert_eq!(
            p.push_at(at(0), &metrics, &id, "", None, false),
            PushOutcome::Skipped
        );
        assert_eq!(metrics.builtins.push_failures(PushFailure::Transport), 1);
        assert!(
            p.take_notice()
                .is_some_and(|n| n.contains("next attempt in 1 s"))
        );
        assert_eq!(p.take_notice(), None);
        // the back-off over (1 s after the failure, which took a moment): tried again (and
        // failed again, now for 2 s)
        assert_eq!(
            p.push_at(at(2_000), &metrics, &id, "", None, false),
            PushOutcome::Failed
        );
        assert_eq!(p.schedule.failures_in_a_row(), 2);
        assert_eq!(p.take_notice(), None, "at most one notice a minute");
        assert_eq!(
            p.push_at(at(3_000), &metrics, &id, "", None, false),
            PushOutcome::Skipped
        );
        // a minute after the first notice, the next failure is noticed again, with the count
        assert_eq!(
            p.push_at(at(61_000), &metrics, &id, "", None, false),
            PushOutcome::Failed
        );
        assert!(
            p.take_notice()
                .is_some_and(|n| n.contains("(2 failure(s) since the last notice"))
        );
        assert_eq!(metrics.builtins.push_failures(PushFailure::Transport), 3);
    }

    #[test]
    fn with_a_minimum_interval_a_push_right_after_a_success_is_skipped() {
        let pgw = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", pgw.local_addr().unwrap());
        // a one-request Pushgateway that answers 200
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut conn, _) = pgw.accept().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // the head, then as many body bytes as its content-length says
            let complete = |seen: &[u8]| {
                let text = String::from_utf8_lossy(seen).to_ascii_lowercase();
                let Some(head_end) = text.find("\r\n\r\n") else {
                    return false;
                };
                let length = text[..head_end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                seen.len() >= head_end + 4 + length
            };
            while !complete(&seen) {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0, "the push ended early");
                seen.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .unwrap();
        });
        let metrics = Metrics::new();
        let config = Config::new()
            .with_pushgateway_url(&url)
            .with_min_push_interval(Duration::from_secs(1));
        let mut p = Pusher::from_config(&config).unwrap().unwrap();
        let id = ActionIdentity::default();
        let t0 = Instant::now();
        assert_eq!(
            p.push_at(t0, &metrics, &id, "", None, false),
            PushOutcome::Pushed
        );
        server.join().unwrap();
        let soon = t0 + Duration::from_millis(500);
        assert_eq!(
            p.push_at(soon, &metrics, &id, "", None, false),
            PushOutcome::Skipped
        );
        // forced (the loop's end) or after the interval, it is tried (and fails: no server now)
        assert_eq!(
            p.push_at(soon, &metrics, &id, "", None, true),
            PushOutcome::Failed
        );
    }

    #[test]
    fn rejects_unusable_urls_and_skips_when_unset_or_disabled() {
        let bad = |url: &str| Pusher::from_config(&Config::new().with_pushgateway_url(url));
        assert!(matches!(bad("pgw:9091"), Err(Error::InvalidUrl { .. })));
        assert!(matches!(bad("http://"), Err(Error::InvalidUrl { .. })));
        if !cfg!(feature = "tls") {
            assert!(matches!(
                bad("https://pgw:9091"),
                Err(Error::InvalidUrl { .. })
            ));
        }
        assert!(bad("http://127.0.0.1:9091/").unwrap().is_some());
        assert!(Pusher::from_config(&Config::new()).unwrap().is_none());
        let off = Config::new()
            .with_pushgateway_url("http://127.0.0.1:1")
            .with_disabled(true);
        assert!(Pusher::from_config(&off).unwrap().is_none());
    }

    #[test]
    fn failed_push_is_counted_and_state_is_kept() {
        let metrics = Metrics::new();
        // port 1 on loopback: connection refused at once
        let config = Config::new().with_pushgateway_url("http://127.0.0.1:1");
        let mut p = Pusher::from_config(&config).unwrap().unwrap();
        let id = ActionIdentity {
            namespace: "ns".into(),
            action: "a".into(),
        };
        assert_eq!(p.push(&metrics, &id, "", None, false), PushOutcome::Failed);
        assert_eq!(metrics.builtins.push_failures(PushFailure::Transport), 1);
    }

    #[test]
    fn push_with_no_time_left_fails_without_trying() {
        let metrics = Metrics::new();
        let config = Config::new().with_pushgateway_url("http://127.0.0.1:1");
        let mut p = Pusher::from_config(&config).unwrap().unwrap();
        let id = ActionIdentity::default();
        let outcome = p.push(&metrics, &id, "", Some(Instant::now()), false);
        assert_eq!(outcome, PushOutcome::Failed);
        assert_eq!(metrics.builtins.push_failures(PushFailure::Transport), 1);
    }
}
