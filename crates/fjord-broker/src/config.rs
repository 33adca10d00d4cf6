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
    /// `offsets.topic.num.partitions`.
    pub offsets_topic_partitions: i32,
    /// `offsets.retention.minutes`: committed offsets of empty groups expire after this.
    pub offsets_retention_minutes: i64,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_max_bytes: usize,
    /// `group.initial.rebalance.delay.ms`.
    pub group_initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms` and `group.max.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// `group.consumer.session.timeout.ms` (KIP-848 groups).
    pub group_consumer_session_timeout_ms: i64,
    /// `group.consumer.heartbeat.interval.ms` (KIP-848 groups).
    pub group_consumer_heartbeat_interval_ms: i32,
    /// `transaction.state.log.num.partitions`: partitions of `__transaction_state`.
    pub transaction_state_partitions: i32,
    /// `transaction.max.timeout.ms`: the longest transaction timeout a producer may ask for.
    pub transaction_max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: an idle transactional id is forgotten after this.
    pub transactional_id_expiration_ms: i64,
    /// `producer.id.expiration.ms`: a partition forgets an idle producer after this.
    pub producer_id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub transaction_abort_interval_ms: i64,
    /// `max.incremental.fetch.session.cache.slots`: fetch sessions kept (0: none).
    pub fetch_session_cache_slots: usize,
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
            offsets_topic_partitions: 50,
            offsets_retention_minutes: 10_080,
            offset_metadata_max_bytes: 4096,
            group_initial_rebalance_delay_ms: 3_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_consumer_session_timeout_ms: 45_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            transaction_state_partitions: 50,
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 604_800_000,
            producer_id_expiration_ms: 86_400_000,
            transaction_abort_interval_ms: 10_000,
            fetch_session_cache_slots: 1_000,
        }
    }
}

impl BrokerConfig {
    /// The broker's settings by Kafka name, with whether each is at its default; for
    /// DescribeConfigs on the broker resource.
    pub fn describe(&self) -> Vec<(&'static str, String, bool)> {
        let d = Self::default();
        let l = &self.log_defaults;
        let dl = &d.log_defaults;
        let policy = |c: &LogConfig| match (c.cleanup_policy.compact, c.cleanup_policy.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        };
        let ts = |c: &LogConfig| match c.message_timestamp_type {
            fjord_record::TimestampType::CreateTime => "CreateTime",
            fjord_record::TimestampType::LogAppendTime => "LogAppendTime",
        };
        vec![
            (
                "node.id",
                self.node_id.to_string(),
                self.node_id == d.node_id,
            ),
            (
                "num.partitions",
                self.num_partitions.to_string(),
                self.num_partitions == d.num_partitions,
            ),
            (
                "auto.create.topics.enable",
                self.auto_create_topics.to_string(),
                self.auto_create_topics == d.auto_create_topics,
            ),
            (
                "default.replication.factor",
                self.default_replication_factor.to_string(),
                true,
            ),
            (
                "socket.request.max.bytes",
                self.socket_request_max_bytes.to_string(),
                self.socket_request_max_bytes == d.socket_request_max_bytes,
            ),
            (
                "max.connections",
                self.max_connections.to_string(),
                self.max_connections == d.max_connections,
            ),
            (
                "min.insync.replicas",
                self.min_insync_replicas.to_string(),
                self.min_insync_replicas == d.min_insync_replicas,
            ),
            (
                "message.max.bytes",
                l.max_message_bytes.to_string(),
                l.max_message_bytes == dl.max_message_bytes,
            ),
            (
                "log.retention.ms",
                l.retention_ms.to_string(),
                l.retention_ms == dl.retention_ms,
            ),
            (
                "log.retention.bytes",
                l.retention_bytes.to_string(),
                l.retention_bytes == dl.retention_bytes,
            ),
            (
                "log.segment.bytes",
                l.segment_bytes.to_string(),
                l.segment_bytes == dl.segment_bytes,
            ),
            (
                "log.roll.ms",
                l.segment_ms.to_string(),
                l.segment_ms == dl.segment_ms,
            ),
            (
                "log.index.interval.bytes",
                l.index_interval_bytes.to_string(),
                l.index_interval_bytes == dl.index_interval_bytes,
            ),
            (
                "log.index.size.max.bytes",
                l.segment_index_bytes.to_string(),
                l.segment_index_bytes == dl.segment_index_bytes,
            ),
            (
                "log.cleanup.policy",
                policy(l).to_string(),
                l.cleanup_policy == dl.cleanup_policy,
            ),
            (
                "log.cleaner.delete.retention.ms",
                l.delete_retention_ms.to_string(),
                l.delete_retention_ms == dl.delete_retention_ms,
            ),
            (
                "log.flush.interval.messages",
                l.flush_messages.to_string(),
                l.flush_messages == dl.flush_messages,
            ),
            (
                "log.flush.interval.ms",
                l.flush_ms.to_string(),
                l.flush_ms == dl.flush_ms,
            ),
            (
                "log.message.timestamp.type",
                ts(l).to_string(),
                l.message_timestamp_type == dl.message_timestamp_type,
            ),
            (
                "log.message.timestamp.before.max.ms",
                l.message_timestamp_before_max_ms.to_string(),
                l.message_timestamp_before_max_ms == dl.message_timestamp_before_max_ms,
            ),
            (
                "log.message.timestamp.after.max.ms",
                l.message_timestamp_after_max_ms.to_string(),
                l.message_timestamp_after_max_ms == dl.message_timestamp_after_max_ms,
            ),
            (
                "transaction.state.log.num.partitions",
                self.transaction_state_partitions.to_string(),
                self.transaction_state_partitions == d.transaction_state_partitions,
            ),
            (
                "transaction.max.timeout.ms",
                self.transaction_max_timeout_ms.to_string(),
                self.transaction_max_timeout_ms == d.transaction_max_timeout_ms,
            ),
            (
                "transactional.id.expiration.ms",
                self.transactional_id_expiration_ms.to_string(),
                self.transactional_id_expiration_ms == d.transactional_id_expiration_ms,
            ),
            (
                "producer.id.expiration.ms",
                self.producer_id_expiration_ms.to_string(),
                self.producer_id_expiration_ms == d.producer_id_expiration_ms,
            ),
            (
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                self.transaction_abort_interval_ms.to_string(),
                self.transaction_abort_interval_ms == d.transaction_abort_interval_ms,
            ),
            (
                "max.incremental.fetch.session.cache.slots",
                self.fetch_session_cache_slots.to_string(),
                self.fetch_session_cache_slots == d.fetch_session_cache_slots,
            ),
            (
                "log.retention.check.interval.ms",
                self.retention_check_interval_ms.to_string(),
                self.retention_check_interval_ms == d.retention_check_interval_ms,
            ),
        ]
    }
}
