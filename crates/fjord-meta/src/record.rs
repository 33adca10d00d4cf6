//! The metadata records and their encoding.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A topic's 16-byte id (Kafka's topic UUID, KIP-516).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub [u8; 16]);

impl TopicId {
    pub const ZERO: TopicId = TopicId([0; 16]);

    /// A random version-4 UUID from `entropy`.
    pub fn from_entropy(entropy: u128) -> Self {
        let mut b = entropy.to_be_bytes();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        TopicId(b)
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Serialize for TopicId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for TopicId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 {
            return Err(serde::de::Error::custom("topic id must be 32 hex digits"));
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| serde::de::Error::custom("topic id must be hex"))?;
        }
        Ok(TopicId(out))
    }
}

/// The newest record format this build reads and writes. Each record carries the version it
/// needs (1, or 2 and 3 for what earlier versions cannot express); one newer than this is refused (the data
/// directory was written by a newer Fjord).
pub const RECORD_VERSION: u64 = 3;

/// A partition's new replicas during a reassignment (Kafka's PartitionChangeRecord Replicas,
/// AddingReplicas and RemovingReplicas): `replicas` holds the target replicas then those
/// leaving; `adding` and `removing` are empty once the reassignment completed or was
/// cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassignment {
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// One change to cluster metadata. Records key topics by id, as KRaft's do, so a change for a
/// deleted topic never reaches a new topic of the same name; partitions carry what a cluster
/// needs (replicas, in-sync replicas, leader, leader and partition epochs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetadataRecord {
    /// A topic exists (Kafka's TopicRecord); its partitions follow as `Partition` records.
    Topic { name: String, id: TopicId },
    /// One partition's placement and leadership (Kafka's PartitionRecord): a new partition,
    /// or a later state of an existing one.
    Partition {
        topic_id: TopicId,
        partition: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        /// A reassignment in progress: replicas joining, not yet in sync (Kafka's
        /// AddingReplicas; in `replicas` too).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        adding: Vec<i32>,
        /// Replicas leaving once every other replica is in sync (Kafka's RemovingReplicas).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removing: Vec<i32>,
    },
    /// A partition's leader or in-sync replicas changed (Kafka's PartitionChangeRecord):
    /// applies only to the partition as it was at `partition_epoch` (the state the change was
    /// decided on; a change decided on an older state is refused) and moves it to the next
    /// partition epoch. With `reassignment`, its replicas change too.
    PartitionChange {
        topic_id: TopicId,
        partition: i32,
        partition_epoch: i32,
        leader: i32,
        leader_epoch: i32,
        isr: Vec<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reassignment: Option<Reassignment>,
    },
    /// The topic is deleted (Kafka's RemoveTopicRecord).
    RemoveTopic { id: TopicId },
    /// Sets (`Some`) or removes (`None`) a topic-level config override (Kafka's ConfigRecord,
    /// keyed by topic id).
    TopicConfig {
        topic_id: TopicId,
        key: String,
        value: Option<String>,
    },
    /// Sets (`Some`) or removes (`None`) a dynamic broker config (Kafka's ConfigRecord of a
    /// BROKER resource): `broker` is a broker's id, or empty for every broker's default.
    BrokerConfig {
        broker: String,
        key: String,
        value: Option<String>,
    },
    /// Producer ids below `next` are handed out (a block at a time, as KRaft's
    /// `ProducerIdsRecord`); ids are never reused across restarts. `from`: the block's first
    /// id, which must be the first id not yet handed out when the record applies (a block
    /// decided on an older state is refused, whatever its size); `None` in snapshots and in
    /// records of earlier versions.
    ProducerIds {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<i64>,
        next: i64,
    },
    /// A broker stopped heartbeating (`fenced`) or came back (Kafka's
    /// BrokerRegistrationChangeRecord): a fenced broker leads nothing clients can reach and
    /// gets no new partitions.
    BrokerFencing { id: i32, fenced: bool },
    /// The cluster's id, set once by the first node to register (later ones are ignored).
    ClusterId { id: String },
    /// A broker registered (Kafka's RegisterBrokerRecord): its Kafka listener and rack. A
    /// registration replaces the broker's previous one (a restart: a new incarnation).
    RegisterBroker {
        id: i32,
        incarnation: String,
        host: String,
        port: i32,
        rack: Option<String>,
    },

    /// A broker began a controlled shutdown (Kafka's BrokerRegistrationChangeRecord with
    /// IN_CONTROLLED_SHUTDOWN): fenced now, and kept fenced until it registers again, even
    /// though its last heartbeats are recent.
    BrokerShutdown { id: i32 },
    /// A broker's registration is removed (Kafka's UnregisterBrokerRecord): it leaves the
    /// cluster until it registers again.
    UnregisterBroker { id: i32 },

    // Version-0 records of earlier Fjord versions: read when a data directory holds them,
    // never written.
    /// (v0) A topic with its partition count and configs, by name.
    TopicCreated {
        name: String,
        id: TopicId,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    },
    /// (v0) The topic now has `total` partitions.
    PartitionsCreated { topic: String, total: i32 },
    /// (v0) The topic is deleted, by name.
    TopicDeleted { name: String },
    /// (v0) A config override, by topic name.
    TopicConfigChanged {
        topic: String,
        key: String,
        value: Option<String>,
    },
    /// (v0) Producer ids below `next` are handed out.
    ProducerIdsAllocated { next: i64 },
}

impl MetadataRecord {
    /// JSON with the record's type and `"version"`.
    /// The format version this record needs: 3 for a partition's reassignment or a dynamic
    /// broker config (an earlier build would drop the first's fields, refuse the second), 2 for a
    /// producer id block with its first id (an earlier build would apply either without
    /// what makes it differ and diverge), 1 otherwise.
    fn version(&self) -> u64 {
        match self {
            Self::Partition {
                adding, removing, ..
            } if !adding.is_empty() || !removing.is_empty() => 3,
            Self::PartitionChange {
                reassignment: Some(_),
                ..
            }
            | Self::BrokerConfig { .. }
            | Self::UnregisterBroker { .. }
            | Self::BrokerShutdown { .. } => 3,
            Self::ProducerIds { from: Some(_), .. } => 2,
            _ => 1,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(self).expect("metadata records always serialize");
        if let Some(object) = value.as_object_mut() {
            object.insert("version".into(), self.version().into());
        }
        serde_json::to_vec(&value).expect("metadata records always serialize")
    }

    /// Decodes a record of this version or an earlier one (no `"version"`: version 0).
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let version = value
            .as_object_mut()
            .and_then(|o| o.remove("version"))
            .map_or(Some(0), |v| v.as_u64())
            .ok_or("the record's version is not a number")?;
        if version > RECORD_VERSION {
            return Err(format!(
                "record version {version} is newer than this build reads ({RECORD_VERSION}); upgrade Fjord"
            ));
        }
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    /// Whether this is a record of an earlier Fjord version.
    pub fn is_legacy(&self) -> bool {
        matches!(
            self,
            Self::TopicCreated { .. }
                | Self::PartitionsCreated { .. }
                | Self::TopicDeleted { .. }
                | Self::TopicConfigChanged { .. }
                | Self::ProducerIdsAllocated { .. }
        )
    }
}
