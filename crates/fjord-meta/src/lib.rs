//! Cluster metadata as records.
//!
//! Every change to what topics exist, how many partitions they have and how they are configured
//! is a [`MetadataRecord`]. [`MetadataState::apply`] is a pure function of the current state
//! and a record; [`MetadataStore`] persists records in a log of their own
//! (`__cluster_metadata-0`, a `fjord-log` partition) and replays them on start. A cluster will
//! replicate the same records through a Raft quorum; the broker only ever sees records applied.
//! [`Controller`] turns admin requests into records (pure, against the applied state);
//! [`LocalChanges`] says what an applied change asks of one node (the broker's publisher acts
//! on it: partitions open, close or change only because of it).

mod controller;
mod delta;
mod record;
mod state;
mod store;

pub use controller::{
    Controller, ControllerConfig, ControllerError, ElectionError, ElectionType, METADATA_TOPIC,
    NewTopic, ReassignError, UnregisterError,
};
pub use delta::{LocalChanges, PartitionKey};
pub use record::{MetadataRecord, Reassignment, TopicId};
pub use state::{
    ApplyError, BrokerMeta, MetadataState, PartitionMeta, TopicMeta, validate_topic_name,
};
pub use store::{METADATA_DIR, MetadataStore, StoreError};
