//! Coordinator state machines, pure: requests and `now` in, responses and effects out. No
//! tokio, no files; the broker owns the sockets, the timers and the storage.
//!
//! - [`group`]: consumer groups on Kafka's classic protocol (JoinGroup, SyncGroup, Heartbeat,
//!   LeaveGroup), with static membership (KIP-345) and the initial rebalance delay.
//! - [`offsets`]: committed offsets per group, and the records that persist groups and offsets.
//! - [`txn`]: the transaction coordinator (InitProducerId, AddPartitionsToTxn, EndTxn,
//!   fencing) and the records of `__transaction_state`.

pub mod consumer;
pub mod group;
pub mod offsets;
pub mod txn;
mod wire;

/// Kafka error codes the coordinator answers with.
pub mod codes {
    pub const NONE: i16 = 0;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const FENCED_INSTANCE_ID: i16 = 82;
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
    pub const INVALID_TXN_STATE: i16 = 48;
    pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
    pub const CONCURRENT_TRANSACTIONS: i16 = 51;
    pub const PRODUCER_FENCED: i16 = 90;
}
