//! The broker's settings, with Kafka's names where a Kafka user would type them.

use std::path::PathBuf;

use fjord_log::LogConfig;

use crate::topic_config::{self, Kind};

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
    /// `offsets.topic.replication.factor`: replicas of `__consumer_offsets`, capped at the
    /// brokers alive when it is created.
    pub offsets_topic_replication_factor: i16,
    /// `transaction.state.log.replication.factor`: replicas of `__transaction_state`, capped
    /// at the brokers alive when it is created.
    pub transaction_state_replication_factor: i16,
    /// `transaction.state.log.min.isr`: `min.insync.replicas` of `__transaction_state`.
    pub transaction_state_min_isr: i32,
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
    /// `controller.quorum.voters`: node id → controller listener (`HOST:PORT`) of every voter
    /// of the metadata quorum. Empty: a single node, a one-member quorum of its own.
    pub voters: std::collections::BTreeMap<i32, String>,
    /// `process.roles`, when given (else a node among the voters is both broker and controller,
    /// and any other node is refused).
    pub roles: Option<Roles>,
    /// This data directory's id (`directory.id` in meta.properties, made with the directory):
    /// the other voters refuse this node if it comes back with another one (a lost disk).
    pub directory_id: Option<String>,
    /// Where this node's controller listener accepts the other voters (needed with voters).
    pub controller_listen: Option<String>,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// `broker.heartbeat.interval.ms`: how often this broker tells the controller it is alive.
    pub broker_heartbeat_interval_ms: u64,
    /// `broker.session.timeout.ms`: a broker not heard from for this long is fenced.
    pub broker_session_timeout_ms: u64,
    /// `unclean.leader.election.enable`: a partition with no live in-sync replica may be led
    /// by another live replica (losing what only the in-sync ones had). Topics may override it.
    pub unclean_leader_election: bool,
    /// `replica.lag.time.max.ms`: a follower not caught up with its leader for this long
    /// leaves the in-sync replicas.
    pub replica_lag_time_max_ms: i64,
    /// `auto.leader.rebalance.enable`: the controller gives partitions back to their
    /// preferred leader (the first replica) when it is in sync again.
    pub auto_leader_rebalance: bool,
    /// `leader.imbalance.check.interval.seconds`, in ms: how often it looks.
    pub leader_imbalance_check_interval_ms: u64,
    /// `replica.selector.class` (KIP-392): where a leader sends a consumer that names its rack
    /// to read. None (Kafka's default) reads from the leader, as [`ReplicaSelector::Leader`].
    pub replica_selector: Option<ReplicaSelector>,
    /// `log.sync.method` (Fjord's own): `syncfs` (the default) makes every waiting
    /// partition durable with one filesystem-wide sync per round where the kernel reports
    /// its failures (Linux 5.17+; elsewhere it falls back to `fdatasync`); `fdatasync` syncs
    /// each partition's files on their own, the choice for a data directory that shares its
    /// filesystem with busy writers of other data.
    pub sync_filesystem: bool,
    /// Whether the cluster id given at open was just made for a new data directory, which
    /// takes the id of the cluster it joins; an id the directory already had must match.
    pub new_cluster_id: bool,
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
            offsets_topic_replication_factor: 3,
            transaction_state_replication_factor: 3,
            transaction_state_min_isr: 2,
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 604_800_000,
            producer_id_expiration_ms: 86_400_000,
            transaction_abort_interval_ms: 10_000,
            fetch_session_cache_slots: 1_000,
            voters: std::collections::BTreeMap::new(),
            roles: None,
            directory_id: None,
            controller_listen: None,
            rack: None,
            broker_heartbeat_interval_ms: 2_000,
            broker_session_timeout_ms: 9_000,
            unclean_leader_election: false,
            replica_lag_time_max_ms: 30_000,
            auto_leader_rebalance: true,
            leader_imbalance_check_interval_ms: 300_000,
            replica_selector: None,
            sync_filesystem: true,
            new_cluster_id: true,
        }
    }
}

/// Kafka's replica selectors (`replica.selector.class`, KIP-392): which replica a leader
/// sends a consumer to. Whatever it picks, the consumer reads from any replica it is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaSelector {
    /// `org.apache.kafka.common.replica.LeaderSelector`: the leader.
    Leader,
    /// `org.apache.kafka.common.replica.RackAwareReplicaSelector`: the leader if it is in the
    /// consumer's rack (`client.rack`), else the most caught-up in-sync replica there, else
    /// the leader.
    RackAware,
}

impl ReplicaSelector {
    pub const LEADER: &str = "org.apache.kafka.common.replica.LeaderSelector";
    pub const RACK_AWARE: &str = "org.apache.kafka.common.replica.RackAwareReplicaSelector";

    /// The selector a `replica.selector.class` value names (Kafka's two).
    pub fn from_class(name: &str) -> Option<Self> {
        match name.trim() {
            Self::LEADER => Some(Self::Leader),
            Self::RACK_AWARE => Some(Self::RackAware),
            _ => None,
        }
    }
}

/// Whether `s` looks like `HOST:PORT` with a numeric port.
fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// What a node runs (Kafka's `process.roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roles {
    /// A broker only: not a voter of the metadata quorum (it observes it).
    Broker,
    /// A voter of the metadata quorum that serves no Kafka clients and holds no partitions.
    Controller,
    /// Both (every voter unless told otherwise).
    Both,
}

/// Parses `controller.quorum.voters` (`ID@HOST:PORT,...`, Kafka's format).
pub fn parse_voters(s: &str) -> Result<std::collections::BTreeMap<i32, String>, String> {
    let mut voters = std::collections::BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('@')
            .ok_or_else(|| format!("{part:?} is not ID@HOST:PORT"))?;
        let id: i32 = id
            .trim()
            .parse()
            .map_err(|_| format!("{part:?}: the node id {id:?} is not a number"))?;
        if !is_host_port(addr) {
            return Err(format!("{part:?}: {addr:?} is not HOST:PORT"));
        }
        if voters.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("node id {id} is listed twice"));
        }
    }
    if voters.is_empty() {
        return Err("no voters given (ID@HOST:PORT,...)".into());
    }
    Ok(voters)
}

impl BrokerConfig {
    /// Whether this node is a broker (registers, holds partitions, serves clients): every
    /// node but a controller-only one.
    pub fn is_broker(&self) -> bool {
        self.roles != Some(Roles::Controller)
    }

    /// How long a broker heartbeat waits for the controller's answer: one heartbeat interval
    /// (at least 250 ms), so a heartbeat sent to a leader that stopped answering gives way to
    /// the next one, to the new leader, well within the broker's session.
    pub fn heartbeat_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.broker_heartbeat_interval_ms.max(250))
    }

    /// Checks the rules that tie settings together, as Kafka does at start-up (its
    /// `GroupCoordinatorConfig` requirements): each message names the settings to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms {
            return Err(format!(
                "group.min.session.timeout.ms ({}) must not exceed group.max.session.timeout.ms ({})",
                self.group_min_session_timeout_ms, self.group_max_session_timeout_ms
            ));
        }
        if i64::from(self.group_consumer_heartbeat_interval_ms)
            >= self.group_consumer_session_timeout_ms
        {
            return Err(format!(
                "group.consumer.heartbeat.interval.ms ({}) must be less than group.consumer.session.timeout.ms ({})",
                self.group_consumer_heartbeat_interval_ms, self.group_consumer_session_timeout_ms
            ));
        }
        if self.offsets_retention_minutes.checked_mul(60_000).is_none() {
            return Err(format!(
                "offsets.retention.minutes ({}) is too large; at most {}",
                self.offsets_retention_minutes,
                i64::MAX / 60_000
            ));
        }
        if self.broker_heartbeat_interval_ms == 0
            || self.broker_heartbeat_interval_ms >= self.broker_session_timeout_ms
        {
            return Err(format!(
                "broker.heartbeat.interval.ms ({}) must be above 0 and below broker.session.timeout.ms ({})",
                self.broker_heartbeat_interval_ms, self.broker_session_timeout_ms
            ));
        }
        if self.voters.is_empty() && self.roles.is_some_and(|r| r != Roles::Both) {
            return Err(
                "process.roles other than \"broker,controller\" needs controller.quorum.voters (--voters): a single node is both".into(),
            );
        }
        if !self.voters.is_empty() {
            let list = || {
                self.voters
                    .iter()
                    .map(|(id, addr)| format!("{id}@{addr}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let voter = self.voters.contains_key(&self.node_id);
            match self.roles {
                Some(Roles::Broker) if voter => {
                    return Err(format!(
                        "process.roles is \"broker\" but node.id {} is among controller.quorum.voters ({}): a voter is a controller too; set process.roles to \"broker,controller\", or give this node an id that is not a voter's",
                        self.node_id,
                        list()
                    ));
                }
                // A node that is not a voter must say what it is (as Kafka asks for
                // process.roles): a mistyped voter id must not start a broker-only node. One
                // that names the controller role observes the quorum until it is added as a
                // voter (`fjord cluster add-voter`, KIP-853).
                None if !voter => {
                    return Err(format!(
                        "node.id {} is not among controller.quorum.voters ({}): start it with --process-roles broker (process.roles = \"broker\") to run it as a broker-only node, with \"controller\" or \"broker,controller\" to add it as a voter later (`fjord cluster add-voter`), or give it a voter's node.id",
                        self.node_id,
                        list()
                    ));
                }
                _ => {}
            }
            if !voter
                && let Some(addr) = &self.controller_listen
                && let Some((host, _)) = addr.rsplit_once(':')
                && host
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_unspecified())
            {
                return Err(format!(
                    "a broker-only node's --controller-listen ({addr}) is where the quorum's leader replicates to it: give an address the voters reach, not an unspecified one"
                ));
            }
            if self.controller_listen.is_none() {
                return Err(if voter {
                    format!(
                        "controller.quorum.voters is set: give this node's controller listener with --controller-listen (its address among the voters is {})",
                        self.voters[&self.node_id]
                    )
                } else {
                    "a broker-only node (node.id not among controller.quorum.voters) needs --controller-listen HOST:PORT too: the quorum's leader replicates the metadata to it there".to_string()
                });
            }
            if let Some((id, addr)) = self.voters.iter().find(|(_, a)| !is_host_port(a)) {
                return Err(format!(
                    "voter {id}'s address {addr:?} is not HOST:PORT (controller.quorum.voters is ID@HOST:PORT,...)"
                ));
            }
            if self.node_id < 0 {
                return Err(format!(
                    "node.id must not be negative, got {}",
                    self.node_id
                ));
            }
        }
        if self.socket_request_max_bytes > i32::MAX as usize {
            return Err(format!(
                "socket.request.max.bytes ({}) must be at most {} (a Kafka frame size is an int32)",
                self.socket_request_max_bytes,
                i32::MAX
            ));
        }
        Ok(())
    }
}

/// One broker config as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerEntry {
    pub name: &'static str,
    /// `None` where Kafka's value is null (e.g. `log.retention.ms` when only the hours are set).
    pub value: Option<String>,
    pub kind: Kind,
    pub source: i8,
    /// (name, value, source), most specific first.
    pub synonyms: Vec<(&'static str, Option<String>, i8)>,
}

impl BrokerConfig {
    /// The broker's settings by Kafka name, type and source, for DescribeConfigs on the broker
    /// resource: what Fjord runs with, described the way Kafka 4.4 describes it. A setting that
    /// differs from Kafka's default was set in the config file or by a flag
    /// (STATIC_BROKER_CONFIG); `min.insync.replicas` is the cluster-level dynamic default
    /// Kafka 4.4 writes on a new cluster. Every entry is read-only: Fjord does not change
    /// broker configs at runtime yet.
    pub fn describe_kafka(&self) -> Vec<BrokerEntry> {
        let l = &self.log_defaults;
        let listener = format!(
            "PLAINTEXT://{}:{}",
            self.advertised_host, self.advertised_port
        );
        // (name, type, Fjord's value, Kafka's default: None = null)
        let mut rows: Vec<(&'static str, Kind, Option<String>, Option<String>)> = vec![
            (
                "advertised.listeners",
                Kind::List,
                Some(listener.clone()),
                None,
            ),
            (
                "auto.create.topics.enable",
                Kind::Boolean,
                Some(self.auto_create_topics.to_string()),
                Some("true".into()),
            ),
            (
                "broker.id",
                Kind::Int,
                Some(self.node_id.to_string()),
                Some("-1".into()),
            ),
            (
                "default.replication.factor",
                Kind::Int,
                Some(self.default_replication_factor.to_string()),
                Some("1".into()),
            ),
            (
                "listeners",
                Kind::List,
                Some(listener),
                Some("PLAINTEXT://:9092".into()),
            ),
            (
                "log.cleaner.dedupe.buffer.size",
                Kind::Long,
                Some(l.cleaner_dedupe_bytes.to_string()),
                Some("134217728".into()),
            ),
            (
                "log.dirs",
                Kind::List,
                Some(self.data_dir.display().to_string()),
                None,
            ),
            (
                "log.retention.check.interval.ms",
                Kind::Long,
                Some(self.retention_check_interval_ms.to_string()),
                Some("300000".into()),
            ),
            (
                "log.retention.hours",
                Kind::Int,
                Some("168".into()),
                Some("168".into()),
            ),
            (
                "log.roll.hours",
                Kind::Int,
                Some("168".into()),
                Some("168".into()),
            ),
            (
                "max.connections",
                Kind::Int,
                Some(self.max_connections.to_string()),
                Some("10000".into()),
            ),
            (
                "max.incremental.fetch.session.cache.slots",
                Kind::Int,
                Some(self.fetch_session_cache_slots.to_string()),
                Some("1000".into()),
            ),
            ("node.id", Kind::Int, Some(self.node_id.to_string()), None),
            (
                "num.partitions",
                Kind::Int,
                Some(self.num_partitions.to_string()),
                Some("1".into()),
            ),
            (
                "offset.metadata.max.bytes",
                Kind::Int,
                Some(self.offset_metadata_max_bytes.to_string()),
                Some("4096".into()),
            ),
            (
                "offsets.retention.minutes",
                Kind::Int,
                Some(self.offsets_retention_minutes.to_string()),
                Some("10080".into()),
            ),
            (
                "offsets.topic.num.partitions",
                Kind::Int,
                Some(self.offsets_topic_partitions.to_string()),
                Some("50".into()),
            ),
            (
                "group.initial.rebalance.delay.ms",
                Kind::Int,
                Some(self.group_initial_rebalance_delay_ms.to_string()),
                Some("3000".into()),
            ),
            (
                "group.min.session.timeout.ms",
                Kind::Int,
                Some(self.group_min_session_timeout_ms.to_string()),
                Some("6000".into()),
            ),
            (
                "group.max.session.timeout.ms",
                Kind::Int,
                Some(self.group_max_session_timeout_ms.to_string()),
                Some("1800000".into()),
            ),
            (
                "group.consumer.session.timeout.ms",
                Kind::Int,
                Some(self.group_consumer_session_timeout_ms.to_string()),
                Some("45000".into()),
            ),
            (
                "group.consumer.heartbeat.interval.ms",
                Kind::Int,
                Some(self.group_consumer_heartbeat_interval_ms.to_string()),
                Some("5000".into()),
            ),
            (
                "process.roles",
                Kind::List,
                Some("broker,controller".into()),
                None,
            ),
            (
                "producer.id.expiration.ms",
                Kind::Int,
                Some(self.producer_id_expiration_ms.to_string()),
                Some("86400000".into()),
            ),
            (
                "socket.request.max.bytes",
                Kind::Int,
                Some(self.socket_request_max_bytes.to_string()),
                Some("104857600".into()),
            ),
            (
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                Kind::Int,
                Some(self.transaction_abort_interval_ms.to_string()),
                Some("10000".into()),
            ),
            (
                "transaction.max.timeout.ms",
                Kind::Int,
                Some(self.transaction_max_timeout_ms.to_string()),
                Some("900000".into()),
            ),
            (
                "transaction.state.log.num.partitions",
                Kind::Int,
                Some(self.transaction_state_partitions.to_string()),
                Some("50".into()),
            ),
            (
                "transactional.id.expiration.ms",
                Kind::Int,
                Some(self.transactional_id_expiration_ms.to_string()),
                Some("604800000".into()),
            ),
        ];
        // The broker-level defaults of every topic config (Kafka lists each under its
        // synonym's name), with the value Fjord runs with.
        for def in topic_config::TOPIC_CONFIGS {
            let Some((name, default)) = def.synonym else {
                continue;
            };
            if rows.iter().any(|r| r.0 == name) {
                continue;
            }
            let value = if def.name == "min.insync.replicas" {
                Some(self.min_insync_replicas.to_string())
            } else if def.name == "unclean.leader.election.enable" {
                Some(self.unclean_leader_election.to_string())
            } else {
                match topic_config::broker_value(l, def.name) {
                    // Kafka's null defaults stay null unless the file set a value.
                    Some(v) if default.is_none() && v == def.default => None,
                    Some(v) => Some(v),
                    None => default.map(str::to_string),
                }
            };
            rows.push((name, def.kind, value, default.map(str::to_string)));
        }
        rows.sort_by_key(|r| r.0);
        rows.into_iter()
            .map(|(name, kind, value, default)| {
                let mut synonyms = Vec::new();
                if name == "min.insync.replicas" {
                    synonyms.push((
                        name,
                        value.clone(),
                        topic_config::DYNAMIC_DEFAULT_BROKER_CONFIG,
                    ));
                } else if value.is_some() && (default.is_none() || value != default) {
                    synonyms.push((name, value.clone(), topic_config::STATIC_BROKER_CONFIG));
                }
                if default.is_some() {
                    synonyms.push((name, default, topic_config::DEFAULT_CONFIG));
                }
                let source = synonyms
                    .first()
                    .map_or(topic_config::DEFAULT_CONFIG, |s| s.2);
                BrokerEntry {
                    name,
                    value,
                    kind,
                    source,
                    synonyms,
                }
            })
            .collect()
    }
}
/// The broker configs Fjord changes at runtime (IncrementalAlterConfigs / AlterConfigs of a
/// BROKER resource, kept in the metadata): Kafka's replication throttles, in bytes per second.
/// `replica.alter.log.dirs.io.max.bytes.per.second` is kept and described but throttles
/// nothing: Fjord moves no replicas between log directories.
pub const DYNAMIC_BROKER_CONFIGS: &[&str] = &[
    "follower.replication.throttled.rate",
    "leader.replication.throttled.rate",
    "replica.alter.log.dirs.io.max.bytes.per.second",
];

/// Checks a dynamic broker config's name and value as Kafka does (a long, at least 0).
pub fn check_dynamic_broker_config(key: &str, value: &str) -> Result<(), String> {
    if !DYNAMIC_BROKER_CONFIGS.contains(&key) {
        return Err(format!(
            "broker config {key} cannot be changed at runtime yet (only {}); set it in the config file and restart",
            DYNAMIC_BROKER_CONFIGS.join(", ")
        ));
    }
    match value.trim().parse::<i64>() {
        Ok(v) if v >= 0 => Ok(()),
        Ok(v) => Err(format!(
            "Invalid value {v} for configuration {key}: Value must be at least 0"
        )),
        Err(_) => Err(format!(
            "Invalid value {value} for configuration {key}: Not a number of type LONG"
        )),
    }
}
