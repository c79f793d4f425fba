//! How the consumer reports librdkafka's errors without flooding the log.
//!
//! With the broker unreachable librdkafka reports `AllBrokersDown` and transport failures many
//! times a second. Every one is counted (by [`ErrorKind`]); the log gets the state changes
//! only — the first error after a healthy period, and the recovery — plus one reminder per
//! [`REMIND_EVERY`] while the trouble lasts, saying how many errors were counted meanwhile.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// How often a persisting broker problem is logged again.
pub(crate) const REMIND_EVERY: Duration = Duration::from_secs(60);

/// The `kind` label of `whisk_collector_kafka_errors_total` (a closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// No broker of the cluster is reachable.
    AllBrokersDown,
    /// A connection failed or was lost.
    Transport,
    /// A broker's host name did not resolve.
    Resolve,
    /// SASL or other authentication failed.
    Auth,
    /// TLS handshake or certificate failure.
    Tls,
    /// The topic or partition does not exist (yet).
    UnknownTopic,
    /// Anything else librdkafka reports.
    Other,
}

impl ErrorKind {
    /// Every kind, in label order.
    pub(crate) const ALL: [Self; 7] = [
        Self::AllBrokersDown,
        Self::Transport,
        Self::Resolve,
        Self::Auth,
        Self::Tls,
        Self::UnknownTopic,
        Self::Other,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::AllBrokersDown => "all_brokers_down",
            Self::Transport => "transport",
            Self::Resolve => "resolve",
            Self::Auth => "auth",
            Self::Tls => "tls",
            Self::UnknownTopic => "unknown_topic",
            Self::Other => "other",
        }
    }

    /// Classifies a librdkafka error.
    pub(crate) fn of(err: &KafkaError) -> Self {
        match err.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => Self::AllBrokersDown,
            Some(
                RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::NetworkException,
            ) => Self::Transport,
            Some(RDKafkaErrorCode::Resolve) => Self::Resolve,
            Some(
                RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed,
            ) => Self::Auth,
            Some(RDKafkaErrorCode::SSL) => Self::Tls,
            Some(
                RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition,
            ) => Self::UnknownTopic,
            _ => Self::Other,
        }
    }
}

/// What to do with one error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    /// The first error after a healthy period: log it.
    Trouble,
    /// The trouble persists: log a reminder with the errors counted since the last line.
    Reminder {
        /// Errors counted but not logged since the last line.
        suppressed: u64,
        /// Since when the trouble lasts.
        since: Duration,
    },
    /// Count only.
    Quiet,
}

/// The connection is healthy again after `errors` errors over `lasted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// How long the trouble lasted.
    pub(crate) lasted: Duration,
    /// Errors counted during it.
    pub(crate) errors: u64,
}

#[derive(Debug)]
struct Trouble {
    since: Instant,
    last_line: Instant,
    suppressed: u64,
    errors: u64,
}

/// The trouble/healthy state machine (see the module documentation).
#[derive(Debug)]
pub(crate) struct BrokerHealth {
    remind_every: Duration,
    trouble: Mutex<Option<Trouble>>,
}

impl BrokerHealth {
    /// Healthy, reminding every `remind_every` while in trouble.
    pub(crate) fn new(remind_every: Duration) -> Self {
        Self {
            remind_every,
            trouble: Mutex::new(None),
        }
    }

    /// Records one error at `now`.
    pub(crate) fn error(&self, now: Instant) -> Report {
        let mut trouble = self
            .trouble
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match trouble.as_mut() {
            None => {
                *trouble = Some(Trouble {
                    since: now,
                    last_line: now,
                    suppressed: 0,
                    errors: 1,
                });
                Report::Trouble
            }
            Some(t) => {
                t.errors += 1;
                if now.saturating_duration_since(t.last_line) >= self.remind_every {
                    t.last_line = now;
                    let suppressed = std::mem::take(&mut t.suppressed);
                    Report::Reminder {
                        suppressed,
                        since: now.saturating_duration_since(t.since),
                    }
                } else {
                    t.suppressed += 1;
                    Report::Quiet
                }
            }
        }
    }

    /// Whether errors are being reported right now (librdkafka's own log lines are then
    /// demoted, they say the same thing again).
    pub(crate) fn in_trouble(&self) -> bool {
        self.trouble.lock().map(|t| t.is_some()).unwrap_or(false)
    }

    /// Records that the connection works at `now`; returns the trouble it ends, if any.
    pub(crate) fn healthy(&self, now: Instant) -> Option<Recovered> {
        let mut trouble = self
            .trouble
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        trouble.take().map(|t| Recovered {
            lasted: now.saturating_duration_since(t.since),
            errors: t.errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_error_then_one_reminder_per_period_and_the_recovery() {
        let h = BrokerHealth::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(h.error(t0), Report::Trouble);
        assert!(h.in_trouble());
        // 20 errors a second for 59 s: all quiet.
        for i in 1..(59 * 20) {
            assert_eq!(h.error(t0 + Duration::from_millis(50 * i)), Report::Quiet);
        }
        assert_eq!(
            h.error(t0 + Duration::from_secs(60)),
            Report::Reminder {
                suppressed: 59 * 20 - 1,
                since: Duration::from_secs(60)
            }
        );
        assert_eq!(h.error(t0 + Duration::from_secs(61)), Report::Quiet);
        let rec = h.healthy(t0 + Duration::from_secs(70)).unwrap();
        assert_eq!(rec.lasted, Duration::from_secs(70));
        assert_eq!(rec.errors, 59 * 20 + 2);
        assert!(!h.in_trouble());
        assert_eq!(h.healthy(t0 + Duration::from_secs(71)), None, "once");
        assert_eq!(h.error(t0 + Duration::from_secs(72)), Report::Trouble);
    }

    #[test]
    fn classifies_broker_errors_into_a_closed_set() {
        let k = |c| ErrorKind::of(&KafkaError::Global(c));
        assert_eq!(
            k(RDKafkaErrorCode::AllBrokersDown),
            ErrorKind::AllBrokersDown
        );
        assert_eq!(
            k(RDKafkaErrorCode::BrokerTransportFailure),
            ErrorKind::Transport
        );
        assert_eq!(k(RDKafkaErrorCode::Resolve), ErrorKind::Resolve);
        assert_eq!(
            k(RDKafkaErrorCode::SaslAuthenticationFailed),
            ErrorKind::Auth
        );
        assert_eq!(
            k(RDKafkaErrorCode::UnknownTopicOrPartition),
            ErrorKind::UnknownTopic
        );
        assert_eq!(k(RDKafkaErrorCode::InvalidMessage), ErrorKind::Other);
        let labels: Vec<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels.len(), 7);
    }
}
