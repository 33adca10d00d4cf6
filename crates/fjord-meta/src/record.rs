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

/// One change to cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetadataRecord {
    TopicCreated {
        name: String,
        id: TopicId,
        partitions: i32,
        replication_factor: i16,
        /// Topic-level config overrides, by Kafka name.
        configs: BTreeMap<String, String>,
    },
    /// The topic now has `total` partitions (only ever more).
    PartitionsCreated {
        topic: String,
        total: i32,
    },
    TopicDeleted {
        name: String,
    },
    /// Sets (`Some`) or removes (`None`) a topic-level config override.
    TopicConfigChanged {
        topic: String,
        key: String,
        value: Option<String>,
    },
    /// Producer ids below `next` are handed out (a block at a time, as KRaft's
    /// `ProducerIdsRecord`); ids are never reused across restarts.
    ProducerIdsAllocated {
        next: i64,
    },
}

impl MetadataRecord {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("metadata records always serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
