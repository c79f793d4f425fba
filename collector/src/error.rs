//! The collector's errors. Only start-up errors end the process; the loops log and go on.

/// Why the collector could not start (or a component could not be built).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// librdkafka refused the consumer configuration.
    #[error(
        "cannot create the Kafka consumer for {brokers} (check --brokers and the -X properties): {source}"
    )]
    KafkaConfig {
        /// Bootstrap servers.
        brokers: String,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
    /// Subscribing to the topic failed.
    #[error("cannot subscribe to topic {topic:?}: {source}")]
    Subscribe {
        /// Topic name.
        topic: String,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {addr} (is --listen free?): {source}")]
    Listen {
        /// Address.
        addr: std::net::SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// The listener's metrics cannot be registered (a name taken twice).
    #[error("cannot register the listener's metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    /// The HTTP client for the Pushgateway could not be built.
    #[error("cannot build the Pushgateway HTTP client: {0}")]
    HttpClient(reqwest::Error),
    /// A file named by a flag (CA certificates, password) could not be used.
    #[error("cannot use {path:?} ({flag}): {reason}")]
    File {
        /// The flag naming the file.
        flag: &'static str,
        /// The path.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A background thread or task could not be started.
    #[error("cannot start {what}: {source}")]
    Spawn {
        /// What.
        what: &'static str,
        /// OS error.
        source: std::io::Error,
    },
}

/// Result with the collector's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
