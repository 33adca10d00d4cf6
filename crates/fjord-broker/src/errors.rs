//! Kafka error codes, assigned here and nowhere else, from the typed errors of lower layers.

use fjord_log::{LogError, ProducerError};

pub const NONE: i16 = 0;
pub const UNKNOWN_SERVER_ERROR: i16 = -1;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const INVALID_REQUIRED_ACKS: i16 = 21;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_PARTITIONS: i16 = 37;
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
pub const INVALID_CONFIG: i16 = 40;
pub const INVALID_REQUEST: i16 = 42;
pub const SECURITY_DISABLED: i16 = 54;
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const NOT_COORDINATOR: i16 = 16;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const TRANSACTION_COORDINATOR_FENCED: i16 = 52;
pub const KAFKA_STORAGE_ERROR: i16 = 56;
pub const UNSTABLE_OFFSET_COMMIT: i16 = 88;
pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
pub const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
pub const FENCED_LEADER_EPOCH: i16 = 74;
pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
pub const INVALID_RECORD: i16 = 87;
pub const INVALID_TIMESTAMP: i16 = 32;
pub const UNKNOWN_TOPIC_ID: i16 = 100;
pub const FETCH_SESSION_TOPIC_ID_ERROR: i16 = 106;

/// The Kafka error code for a log error.
pub fn from_log_error(e: &LogError) -> i16 {
    match e {
        LogError::CorruptBatch(_) => CORRUPT_MESSAGE,
        LogError::BatchTooLarge { .. } => MESSAGE_TOO_LARGE,
        LogError::InvalidRecord { .. } => INVALID_RECORD,
        LogError::RecordsRejected {
            timestamp: true, ..
        } => INVALID_TIMESTAMP,
        LogError::RecordsRejected { .. } => INVALID_RECORD,
        LogError::OffsetOutOfRange { .. } => OFFSET_OUT_OF_RANGE,
        LogError::Closed { .. } => NOT_LEADER_OR_FOLLOWER,
        LogError::Failed { .. } | LogError::Io { .. } | LogError::Unreadable { .. } => {
            KAFKA_STORAGE_ERROR
        }
        LogError::Config(_) => INVALID_CONFIG,
        LogError::Producer(ProducerError::OutOfOrderSequence { .. }) => {
            OUT_OF_ORDER_SEQUENCE_NUMBER
        }
        LogError::Producer(ProducerError::InvalidProducerEpoch { .. }) => INVALID_PRODUCER_EPOCH,
        LogError::Producer(ProducerError::CoordinatorFenced { .. }) => {
            TRANSACTION_COORDINATOR_FENCED
        }
    }
}
