//! Cluster metadata as records.
//!
//! Every change to what topics exist, how many partitions they have and how they are configured
//! is a [`MetadataRecord`]. [`MetadataState::apply`] is a pure function of the current state
//! and a record; [`MetadataStore`] persists records in a log of their own
//! (`__cluster_metadata-0`, a `fjord-log` partition) and replays them on start. A cluster will
//! replicate the same records through a Raft quorum; the broker only ever sees records applied.

mod record;
mod state;
mod store;

pub use record::{MetadataRecord, TopicId};
pub use state::{ApplyError, MetadataState, TopicMeta, validate_topic_name};
pub use store::{METADATA_DIR, MetadataStore, StoreError};
