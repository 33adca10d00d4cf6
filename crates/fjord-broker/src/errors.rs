//! Kafka error codes, assigned here and nowhere else, from the typed errors of lower layers.
//! Each code is the protocol crate's (`kafka_protocol::ResponseError`, generated from Kafka's
//! own list), so none can drift from Kafka's numbering.

use fjord_log::{LogError, ProducerError};
use kafka_protocol::ResponseError;

/// No error.
pub const NONE: i16 = 0;
pub const UNKNOWN_SERVER_ERROR: i16 = ResponseError::UnknownServerError.code();
pub const OFFSET_OUT_OF_RANGE: i16 = ResponseError::OffsetOutOfRange.code();
pub const CORRUPT_MESSAGE: i16 = ResponseError::CorruptMessage.code();
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = ResponseError::UnknownTopicOrPartition.code();
pub const NOT_LEADER_OR_FOLLOWER: i16 = ResponseError::NotLeaderOrFollower.code();
pub const LEADER_NOT_AVAILABLE: i16 = ResponseError::LeaderNotAvailable.code();
pub const MESSAGE_TOO_LARGE: i16 = ResponseError::MessageTooLarge.code();
pub const OFFSET_METADATA_TOO_LARGE: i16 = ResponseError::OffsetMetadataTooLarge.code();
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = ResponseError::CoordinatorLoadInProgress.code();
pub const COORDINATOR_NOT_AVAILABLE: i16 = ResponseError::CoordinatorNotAvailable.code();
pub const NOT_COORDINATOR: i16 = ResponseError::NotCoordinator.code();
pub const INVALID_TOPIC_EXCEPTION: i16 = ResponseError::InvalidTopicException.code();
pub const NOT_ENOUGH_REPLICAS: i16 = ResponseError::NotEnoughReplicas.code();
pub const INVALID_REQUIRED_ACKS: i16 = ResponseError::InvalidRequiredAcks.code();
pub const INVALID_TIMESTAMP: i16 = ResponseError::InvalidTimestamp.code();
pub const UNSUPPORTED_VERSION: i16 = ResponseError::UnsupportedVersion.code();
pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = ResponseError::UnsupportedForMessageFormat.code();
pub const TOPIC_ALREADY_EXISTS: i16 = ResponseError::TopicAlreadyExists.code();
pub const INVALID_PARTITIONS: i16 = ResponseError::InvalidPartitions.code();
pub const INVALID_REPLICATION_FACTOR: i16 = ResponseError::InvalidReplicationFactor.code();
pub const INVALID_REPLICA_ASSIGNMENT: i16 = ResponseError::InvalidReplicaAssignment.code();
pub const INVALID_CONFIG: i16 = ResponseError::InvalidConfig.code();
pub const INVALID_REQUEST: i16 = ResponseError::InvalidRequest.code();
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = ResponseError::OutOfOrderSequenceNumber.code();
pub const INVALID_PRODUCER_EPOCH: i16 = ResponseError::InvalidProducerEpoch.code();
pub const INVALID_TXN_STATE: i16 = ResponseError::InvalidTxnState.code();
pub const INVALID_PRODUCER_ID_MAPPING: i16 = ResponseError::InvalidProducerIdMapping.code();
pub const NETWORK_EXCEPTION: i16 = ResponseError::NetworkException.code();
pub const CONCURRENT_TRANSACTIONS: i16 = ResponseError::ConcurrentTransactions.code();
pub const PRODUCER_FENCED: i16 = ResponseError::ProducerFenced.code();
pub const TRANSACTION_COORDINATOR_FENCED: i16 = ResponseError::TransactionCoordinatorFenced.code();
pub const SECURITY_DISABLED: i16 = ResponseError::SecurityDisabled.code();
pub const OPERATION_NOT_ATTEMPTED: i16 = ResponseError::OperationNotAttempted.code();
pub const KAFKA_STORAGE_ERROR: i16 = ResponseError::KafkaStorageError.code();
pub const FETCH_SESSION_ID_NOT_FOUND: i16 = ResponseError::FetchSessionIdNotFound.code();
pub const INVALID_FETCH_SESSION_EPOCH: i16 = ResponseError::InvalidFetchSessionEpoch.code();
pub const FENCED_LEADER_EPOCH: i16 = ResponseError::FencedLeaderEpoch.code();
pub const UNKNOWN_LEADER_EPOCH: i16 = ResponseError::UnknownLeaderEpoch.code();
pub const INVALID_UPDATE_VERSION: i16 = ResponseError::InvalidUpdateVersion.code();
pub const INELIGIBLE_REPLICA: i16 = ResponseError::IneligibleReplica.code();
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 =
    ResponseError::NotEnoughReplicasAfterAppend.code();
pub const REQUEST_TIMED_OUT: i16 = ResponseError::RequestTimedOut.code();
pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = ResponseError::PreferredLeaderNotAvailable.code();
pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = ResponseError::EligibleLeadersNotAvailable.code();
pub const ELECTION_NOT_NEEDED: i16 = ResponseError::ElectionNotNeeded.code();

pub const NO_REASSIGNMENT_IN_PROGRESS: i16 = ResponseError::NoReassignmentInProgress.code();
pub const BROKER_ID_NOT_REGISTERED: i16 = ResponseError::BrokerIdNotRegistered.code();
pub const INCONSISTENT_CLUSTER_ID: i16 = ResponseError::InconsistentClusterId.code();
pub const DUPLICATE_VOTER: i16 = ResponseError::DuplicateVoter.code();
pub const VOTER_NOT_FOUND: i16 = ResponseError::VoterNotFound.code();

/// A reassignment refusal as Kafka reports it.
impl From<fjord_meta::ReassignError> for crate::broker::AdminError {
    fn from(e: fjord_meta::ReassignError) -> Self {
        use fjord_meta::ReassignError as E;
        let code = match &e {
            E::UnknownTopicOrPartition(_) => UNKNOWN_TOPIC_OR_PARTITION,
            E::InvalidReplicaAssignment(_) => INVALID_REPLICA_ASSIGNMENT,
            E::NoReassignmentInProgress(_) => NO_REASSIGNMENT_IN_PROGRESS,
        };
        Self::new(code, e.to_string())
    }
}

/// A controller refusal as Kafka reports it.
impl From<fjord_meta::ControllerError> for crate::broker::AdminError {
    fn from(e: fjord_meta::ControllerError) -> Self {
        use fjord_meta::ControllerError as E;
        let code = match &e {
            E::InvalidTopic(_) => INVALID_TOPIC_EXCEPTION,
            E::TopicExists(_) => TOPIC_ALREADY_EXISTS,
            E::UnknownTopic(_) => UNKNOWN_TOPIC_OR_PARTITION,
            E::InvalidPartitions(_) => INVALID_PARTITIONS,
            E::InvalidReplicationFactor(_) => INVALID_REPLICATION_FACTOR,
            E::InvalidReplicaAssignment(_) => INVALID_REPLICA_ASSIGNMENT,
            E::InvalidConfig(_) => INVALID_CONFIG,
            E::FencedLeaderEpoch(_) => FENCED_LEADER_EPOCH,
            E::InvalidUpdateVersion(_) => INVALID_UPDATE_VERSION,
            E::NotLeader(_) => INVALID_REQUEST,
            E::IneligibleReplica(_) => INELIGIBLE_REPLICA,
        };
        Self::new(code, e.to_string())
    }
}
pub const INVALID_RECORD: i16 = ResponseError::InvalidRecord.code();
pub const UNSTABLE_OFFSET_COMMIT: i16 = ResponseError::UnstableOffsetCommit.code();
pub const UNKNOWN_TOPIC_ID: i16 = ResponseError::UnknownTopicId.code();
pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = ResponseError::TransactionalIdNotFound.code();
pub const FETCH_SESSION_TOPIC_ID_ERROR: i16 = ResponseError::FetchSessionTopicIdError.code();
pub const MISMATCHED_ENDPOINT_TYPE: i16 = ResponseError::MismatchedEndpointType.code();
pub const UNSUPPORTED_ENDPOINT_TYPE: i16 = ResponseError::UnsupportedEndpointType.code();

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
        LogError::Producer(ProducerError::UnverifiedTransaction { .. }) => INVALID_TXN_STATE,
    }
}

#[cfg(test)]
mod tests {
    use fjord_coord::codes;
    use kafka_protocol::ResponseError as E;

    /// The pure coordinators keep their own few codes (they know no protocol crate); each is
    /// Kafka's.
    #[test]
    fn the_coordinators_codes_are_kafkas() {
        for (code, kafka) in [
            (codes::COORDINATOR_NOT_AVAILABLE, E::CoordinatorNotAvailable),
            (codes::ILLEGAL_GENERATION, E::IllegalGeneration),
            (
                codes::INCONSISTENT_GROUP_PROTOCOL,
                E::InconsistentGroupProtocol,
            ),
            (codes::INVALID_GROUP_ID, E::InvalidGroupId),
            (codes::UNKNOWN_MEMBER_ID, E::UnknownMemberId),
            (codes::INVALID_SESSION_TIMEOUT, E::InvalidSessionTimeout),
            (codes::REBALANCE_IN_PROGRESS, E::RebalanceInProgress),
            (codes::NON_EMPTY_GROUP, E::NonEmptyGroup),
            (codes::GROUP_ID_NOT_FOUND, E::GroupIdNotFound),
            (codes::MEMBER_ID_REQUIRED, E::MemberIdRequired),
            (codes::FENCED_INSTANCE_ID, E::FencedInstanceId),
            (codes::GROUP_MAX_SIZE_REACHED, E::GroupMaxSizeReached),
            (codes::GROUP_SUBSCRIBED_TO_TOPIC, E::GroupSubscribedToTopic),
            (codes::INVALID_TXN_STATE, E::InvalidTxnState),
            (
                codes::INVALID_PRODUCER_ID_MAPPING,
                E::InvalidProducerIdMapping,
            ),
            (
                codes::INVALID_TRANSACTION_TIMEOUT,
                E::InvalidTransactionTimeout,
            ),
            (codes::CONCURRENT_TRANSACTIONS, E::ConcurrentTransactions),
            (codes::PRODUCER_FENCED, E::ProducerFenced),
            (
                fjord_coord::consumer::FENCED_MEMBER_EPOCH,
                E::FencedMemberEpoch,
            ),
            (
                fjord_coord::consumer::UNSUPPORTED_ASSIGNOR,
                E::UnsupportedAssignor,
            ),
            (
                fjord_coord::consumer::STALE_MEMBER_EPOCH,
                E::StaleMemberEpoch,
            ),
            (fjord_coord::consumer::INVALID_REQUEST, E::InvalidRequest),
            (
                fjord_coord::consumer::INVALID_REGULAR_EXPRESSION,
                E::InvalidRegularExpression,
            ),
            (
                fjord_coord::consumer::UNRELEASED_INSTANCE_ID,
                E::UnreleasedInstanceId,
            ),
        ] {
            assert_eq!(code, kafka.code(), "{kafka:?}");
        }
    }
}
