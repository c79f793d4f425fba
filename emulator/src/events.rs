//! The platform's Kafka events: one `Activation` EventMessage per activation (what the invoker's
//! `MessagingActiveAck` sends) and `Metric` events such as `ConcurrentRateLimit` (what the
//! controller sends), in OpenWhisk's exact JSON shape (`core/connector/Message.scala`).
//!
//! Records have no key and a compact JSON value, like OpenWhisk's producer.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The envelope (`EventMessage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventMessage {
    /// `invoker<N>` for activations, `controller<N>` for metrics.
    pub source: String,
    /// An activation or a metric.
    pub body: EventBody,
    /// The invoking subject.
    pub subject: String,
    /// The invoking (initiating) namespace.
    pub namespace: String,
    /// The namespace's UUID, with dashes.
    pub user_id: String,
    /// `Activation` or `Metric`.
    pub event_type: String,
    /// Epoch milliseconds when the message was built.
    pub timestamp: u64,
}

/// The body of an [`EventMessage`]; a metric is recognised by its `metricName` key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EventBody {
    /// A `Metric` body.
    Metric(MetricBody),
    /// An `Activation` body.
    Activation(ActivationBody),
}

/// `Activation` body; durations are milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivationBody {
    /// Fully qualified name **without** a leading slash, e.g. `guest/hello`.
    pub name: String,
    /// 32 hex characters.
    pub activation_id: String,
    /// 0 success, 1 application error, 2 developer error, 3 whisk internal error.
    pub status_code: u8,
    /// Run time in ms, including init on a cold start.
    pub duration: u64,
    /// ms from the request to the start of init/run.
    pub wait_time: u64,
    /// ms of init; non-zero only on a cold start.
    pub init_time: u64,
    /// e.g. `rust:1.34`.
    pub kind: String,
    /// Always false here (no conductor compositions).
    pub conductor: bool,
    /// Memory limit in MB.
    pub memory: u32,
    /// `sequence` for a component of a sequence; omitted otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caused_by: Option<String>,
    /// Length of the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// `result.error.statusCode`, else `result.statusCode`, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_defined_status_code: Option<i64>,
}

/// `Metric` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricBody {
    /// `ConcurrentRateLimit`, `TimedRateLimit` or `ConcurrentInvocations`.
    pub metric_name: String,
    /// The value (1 for rate limits).
    pub metric_value: i64,
}

impl EventMessage {
    /// An `Activation` event from `invoker<invoker>`.
    pub fn activation(invoker: u32, namespace: &str, body: ActivationBody) -> Self {
        Self::new(
            format!("invoker{invoker}"),
            namespace,
            "Activation",
            EventBody::Activation(body),
        )
    }

    /// An `Activation` event from `controller<controller>`: a sequence's own activation.
    pub fn controller_activation(controller: u32, namespace: &str, body: ActivationBody) -> Self {
        Self::new(
            format!("controller{controller}"),
            namespace,
            "Activation",
            EventBody::Activation(body),
        )
    }

    /// A `Metric` event from `controller<controller>`.
    pub fn metric(controller: u32, namespace: &str, name: &str, value: i64) -> Self {
        let body = MetricBody {
            metric_name: name.to_string(),
            metric_value: value,
        };
        Self::new(
            format!("controller{controller}"),
            namespace,
            "Metric",
            EventBody::Metric(body),
        )
    }

    fn new(source: String, namespace: &str, event_type: &str, body: EventBody) -> Self {
        Self {
            source,
            body,
            subject: namespace.to_string(),
            namespace: namespace.to_string(),
            user_id: namespace_uuid(namespace),
            event_type: event_type.to_string(),
            timestamp: epoch_ms(SystemTime::now()),
        }
    }
}

/// Epoch milliseconds of `t` (0 before the epoch).
pub(crate) fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A stable UUID (8-4-4-4-12 hex, version 4 layout) derived from the namespace name.
pub(crate) fn namespace_uuid(namespace: &str) -> String {
    let hi = fnv1a(namespace.as_bytes(), 0xcbf2_9ce4_8422_2325);
    let lo = fnv1a(namespace.as_bytes(), 0x6c62_272e_07bb_0142);
    let b = (u128::from(hi) << 64 | u128::from(lo)) & !(0xf000u128 << 64) | (0x4000u128 << 64);
    let h = format!("{b:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `result.error.statusCode`, else `result.statusCode` (an int or a numeric string; other values
/// become 400), as OpenWhisk's `Activation.userDefinedStatusCode` does.
pub(crate) fn user_defined_status_code(result: &serde_json::Value) -> Option<i64> {
    let code = result
        .pointer("/error/statusCode")
        .or_else(|| result.get("statusCode"))?;
    Some(match code {
        serde_json::Value::Number(n) => n.as_i64().unwrap_or(400),
        serde_json::Value::String(s) => s.trim().parse().unwrap_or(400),
        _ => 400,
    })
}

/// Where events go.
pub trait EventSink: Send + Sync {
    /// Publishes one event. Failures are logged and counted by the sink, never returned: an
    /// invoker does not fail an activation because its ack could not be sent.
    fn publish(&self, event: &EventMessage);

    /// An activation ended with `result` under an action timeout of `timeout`; its event
    /// (`event`) is published next. A sink that keeps activation records (the controller's,
    /// [`crate::controller::Controller::recording`]) overrides this; others ignore it.
    fn activation_ended(
        &self,
        _event: &EventMessage,
        _result: &serde_json::Value,
        _timeout: Duration,
    ) {
    }
}

/// Keeps events in memory (for dry runs and unit tests).
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<EventMessage>>,
}

impl MemorySink {
    /// A copy of the events published so far.
    pub fn events(&self) -> Vec<EventMessage> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl EventSink for MemorySink {
    fn publish(&self, event: &EventMessage) {
        if let Ok(mut e) = self.events.lock() {
            e.push(event.clone());
        }
    }
}

/// Counts delivery reports.
#[derive(Debug, Default)]
pub(crate) struct DeliveryCounter {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("event not delivered: {e}");
            }
        }
    }
}

/// Delivery totals of a [`KafkaSink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryStats {
    /// Events the broker acknowledged.
    pub delivered: u64,
    /// Events that could not be queued or delivered.
    pub failed: u64,
    /// Events handed to the producer.
    pub published: u64,
}

/// Produces events to `<prefix>events` with librdkafka (unkeyed, compact JSON).
pub struct KafkaSink {
    producer: ThreadedProducer<DeliveryCounter>,
    topic: String,
    published: AtomicU64,
    not_queued: AtomicU64,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// How long `publish` retries while librdkafka's local queue is full.
const QUEUE_FULL_RETRY: Duration = Duration::from_secs(5);

impl KafkaSink {
    /// A producer for `brokers` writing to `topic`; `properties` are passed to librdkafka as-is
    /// (e.g. SASL/SSL settings).
    pub fn new(brokers: &str, topic: &str, properties: &[(String, String)]) -> Result<Self> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("client.id", "whisk-emulator-invoker")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000");
        for (k, v) in properties {
            config.set(k, v);
        }
        let producer: ThreadedProducer<DeliveryCounter> = config
            .create_with_context(DeliveryCounter::default())
            .map_err(|e| Error::Kafka(format!("creating the producer for {brokers}: {e}")))?;
        Ok(Self {
            producer,
            topic: topic.to_string(),
            published: AtomicU64::new(0),
            not_queued: AtomicU64::new(0),
        })
    }

    /// Waits up to `timeout` for outstanding deliveries and returns the totals.
    pub fn flush(&self, timeout: Duration) -> Result<DeliveryStats> {
        self.producer
            .flush(timeout)
            .map_err(|e| Error::Kafka(format!("flushing events to {}: {e}", self.topic)))?;
        Ok(self.stats())
    }

    /// Delivery totals so far.
    pub fn stats(&self) -> DeliveryStats {
        let ctx = self.producer.context();
        DeliveryStats {
            delivered: ctx.delivered.load(Ordering::Relaxed),
            failed: ctx.failed.load(Ordering::Relaxed) + self.not_queued.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
        }
    }
}

impl EventSink for KafkaSink {
    fn publish(&self, event: &EventMessage) {
        self.published.fetch_add(1, Ordering::Relaxed);
        let payload = match serde_json::to_string(event) {
            Ok(p) => p,
            Err(e) => {
                self.not_queued.fetch_add(1, Ordering::Relaxed);
                tracing::error!("cannot serialise an event: {e}");
                return;
            }
        };
        let start = Instant::now();
        let mut record = BaseRecord::<(), str, ()>::to(&self.topic).payload(&payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if start.elapsed() < QUEUE_FULL_RETRY =>
                {
                    record = r;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    self.not_queued.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("event not queued for {}: {e}", self.topic);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn body() -> ActivationBody {
        ActivationBody {
            name: "guest/hello".into(),
            activation_id: "0123456789abcdef0123456789abcdef".into(),
            status_code: 0,
            duration: 12,
            wait_time: 3,
            init_time: 7,
            kind: "rust:1.34".into(),
            conductor: false,
            memory: 256,
            caused_by: None,
            size: Some(25),
            user_defined_status_code: None,
        }
    }

    #[test]
    fn activation_event_has_openwhisk_field_names_and_omits_absent_options() {
        let e = EventMessage::activation(0, "guest", body());
        let v: Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["eventType"], "Activation");
        assert_eq!(v["source"], "invoker0");
        assert_eq!(v["namespace"], "guest");
        assert_eq!(v["subject"], "guest");
        assert_eq!(
            v["body"]["activationId"],
            "0123456789abcdef0123456789abcdef"
        );
        assert_eq!(v["body"]["initTime"], 7);
        assert_eq!(v["body"]["waitTime"], 3);
        assert_eq!(v["body"]["statusCode"], 0);
        assert_eq!(v["body"]["conductor"], false);
        assert!(v["body"].get("causedBy").is_none());
        assert!(v["body"].get("userDefinedStatusCode").is_none());
        assert!(v["body"].get("metricName").is_none());
        assert!(v["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
        let back: EventMessage = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn metric_event_is_recognised_by_metric_name() {
        let e = EventMessage::metric(0, "guest", "ConcurrentRateLimit", 1);
        let v: Value = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v["body"],
            json!({"metricName": "ConcurrentRateLimit", "metricValue": 1})
        );
        assert_eq!(v["source"], "controller0");
        assert_eq!(v["eventType"], "Metric");
    }

    #[test]
    fn user_id_is_a_stable_dashed_uuid() {
        let id = namespace_uuid("guest");
        assert_eq!(id, namespace_uuid("guest"));
        assert_ne!(id, namespace_uuid("other"));
        let parts: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert_eq!(&id[14..15], "4");
    }

    #[test]
    fn user_defined_status_code_follows_openwhisk_precedence() {
        assert_eq!(
            user_defined_status_code(&json!({"error": {"statusCode": 404}, "statusCode": 200})),
            Some(404)
        );
        assert_eq!(
            user_defined_status_code(&json!({"statusCode": "201"})),
            Some(201)
        );
        assert_eq!(
            user_defined_status_code(&json!({"statusCode": "teapot"})),
            Some(400)
        );
        assert_eq!(user_defined_status_code(&json!({"ok": true})), None);
    }
}
