//! The broker's settings, with Kafka's names where a Kafka user would type them.

use std::path::PathBuf;

use fjord_log::LogConfig;

/// Everything the broker needs to run. Defaults are Kafka's unless noted.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `node.id`.
    pub node_id: i32,
    /// Host and port clients are told to connect to (`advertised.listeners`).
    pub advertised_host: String,
    pub advertised_port: i32,
    /// `log.dirs` (one directory).
    pub data_dir: PathBuf,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `num.partitions`: partitions of auto-created topics and of CreateTopics with -1.
    pub num_partitions: i32,
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
    /// `socket.request.max.bytes`: larger frames close the connection.
    pub socket_request_max_bytes: usize,
    /// `max.connections`: further connections are closed at once.
    pub max_connections: usize,
    /// `log.*` defaults every topic starts from.
    pub log_defaults: LogConfig,
    /// `min.insync.replicas` default for topics.
    pub min_insync_replicas: i32,
    /// `compression.type` default for topics (Kafka: producer).
    pub compression_type: String,
    /// `log.retention.check.interval.ms`: how often retention and compaction run.
    pub retention_check_interval_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            data_dir: PathBuf::from("fjord-data"),
            auto_create_topics: true,
            num_partitions: 1,
            default_replication_factor: 1,
            socket_request_max_bytes: 104_857_600,
            max_connections: 10_000,
            log_defaults: LogConfig::default(),
            min_insync_replicas: 1,
            compression_type: "producer".into(),
            retention_check_interval_ms: 300_000,
        }
    }
}
