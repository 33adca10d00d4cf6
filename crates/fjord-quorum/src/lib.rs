//! The metadata quorum: cluster metadata replicated by an `openraft` Raft group.
//!
//! The Raft log is a `fjord-log` partition (`__cluster_metadata-0`, entry index = offset, one
//! record batch per entry), with the vote, the committed id and the last purged id in a small
//! file beside it, each replaced atomically and fsynced before openraft is told so
//! ([`LogStore`]). The state machine is `fjord-meta`'s pure apply, one
//! entry per metadata change (`fjord_meta::MetadataState::apply_all`), with snapshots of the whole state (its records) so a new or
//! lagging node catches up ([`StateMachine`]). openraft's types stay in this crate.

mod log_store;
mod network;
mod quorum;
pub mod runtime;
pub mod sim;
mod state_machine;
mod voters;

use std::fmt;

use fjord_meta::MetadataRecord;
use serde::{Deserialize, Serialize};

pub use log_store::{LogStore, RAFT_STATE_FILE};
pub use network::{MAX_FRAME_BYTES, fuzz_decode};
pub use quorum::{
    Heard, NoPeers, Quorum, QuorumError, QuorumOptions, QuorumView, ReplicaView, Sessions,
};
pub use state_machine::{Published, SNAPSHOT_FILE, StateMachine};
pub use voters::{VoterError, VoterRefusal};

openraft::declare_raft_types!(
    /// Fjord's Raft types: an entry carries one metadata change; node ids are Kafka's
    /// `node.id`s; a node's address is its controller listener.
    pub TypeConfig:
        D = Change,
        R = Applied,
        NodeId = u64,
        Node = Member,
        AsyncRuntime = crate::runtime::Runtime,
);

/// A member of the quorum as the membership records it (KIP-853's voter: endpoint and
/// directory id): its controller listener, and for a voter added online the data directory id
/// it was added with (the others refuse it with any other). Stored as openraft's `BasicNode`
/// was (`{"addr": ...}`), so logs written before read the same.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Member {
    pub addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

impl Member {
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            dir: None,
        }
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

/// One metadata change: records that apply together or not at all. Serialized as the
/// records' own versioned encoding, so the Raft log and snapshots carry record versions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Change(pub Vec<MetadataRecord>);

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "change of {} record(s)", self.0.len())
    }
}

impl Serialize for Change {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for r in &self.0 {
            let value: serde_json::Value =
                serde_json::from_slice(&r.encode()).map_err(S::Error::custom)?;
            seq.serialize_element(&value)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Change {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let values = Vec::<serde_json::Value>::deserialize(d)?;
        values
            .into_iter()
            .map(|v| {
                let bytes = serde_json::to_vec(&v).map_err(D::Error::custom)?;
                MetadataRecord::decode(&bytes).map_err(D::Error::custom)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Change)
    }
}

/// What applying an entry did: its log index, and why the change was refused if it was (a
/// change that no longer applies to the state is skipped, identically on every node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub index: u64,
    pub refused: Option<String>,
}

#[cfg(test)]
mod tests {
    use fjord_meta::TopicId;

    use super::*;

    #[test]
    fn a_change_keeps_its_records_versions() {
        let change = Change(vec![
            MetadataRecord::Topic {
                name: "t".into(),
                id: TopicId([3; 16]),
            },
            MetadataRecord::ProducerIds {
                from: None,
                next: 9,
            },
        ]);
        let json = serde_json::to_string(&change).unwrap();
        assert!(json.contains("\"version\":1"), "{json}");
        let back: Change = serde_json::from_str(&json).unwrap();
        assert_eq!(back, change);
    }
}

#[cfg(test)]
mod format {
    use openraft::alias::EntryOf;
    use openraft::entry::RaftEntry;
    use openraft::testing::log_id;

    use super::*;

    /// The entry format docs/storage.md describes.
    #[test]
    fn entries_are_stored_as_documented() {
        let change = Change(vec![MetadataRecord::ProducerIds {
            from: None,
            next: 5,
        }]);
        let entry = EntryOf::<TypeConfig>::new_normal(log_id::<TypeConfig>(3, 1, 17), change);
        let json = serde_json::to_string(&entry).unwrap();
        assert_eq!(
            json,
            r#"{"log_id":{"leader_id":{"term":3,"node_id":1},"index":17},"payload":{"Normal":[{"next":5,"type":"producer_ids","version":1}]}}"#
        );
        let blank = EntryOf::<TypeConfig>::new_blank(log_id::<TypeConfig>(3, 1, 18));
        assert!(
            serde_json::to_string(&blank)
                .unwrap()
                .ends_with(r#""payload":"Blank"}"#)
        );
    }
}
