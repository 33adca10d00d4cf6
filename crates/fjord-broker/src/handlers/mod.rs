//! Request dispatch: check the header, decode, call the API's handler, encode the response.
//!
//! One file per API, each shaped decode → act → encode. What is advertised in ApiVersions is
//! the [`SUPPORTED`] table, and every version in it is handled in full.

mod acls;
mod add_offsets_to_txn;
mod add_partitions_to_txn;
mod alter_configs;
mod api_versions;
mod consumer_group_describe;
mod consumer_group_heartbeat;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_log_dirs;
mod describe_producers;
mod describe_quorum;
mod describe_topic_partitions;
mod describe_transactions;
mod elect_leaders;
mod end_txn;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod list_transactions;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod partition_reassignments;
mod produce;
mod raft_voters;
mod sync_group;
mod txn_offset_commit;
mod unregister_broker;
mod write_txn_markers;

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, BrokerId, RequestHeader, RequestKind, ResponseHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::broker::Broker;
use crate::coordinator::CoordinatorError;
use crate::errors;
use crate::frame::Frame;

/// The APIs and version ranges Fjord serves (and advertises).
///
/// Produce advertises min 0 like Kafka 4 (KAFKA-18659: old librdkafka refuses a broker whose
/// Produce range does not start at 0) while only v3 and up are accepted.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 11),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 9),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::UnregisterBroker, 0, 0),
    (ApiKey::AddRaftVoter, 0, 0),
    (ApiKey::RemoveRaftVoter, 0, 0),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 2),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

/// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS: all allowed
/// (no authorizer yet), as bits of Kafka's AclOperation codes.
pub(crate) const TOPIC_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
/// CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE,
/// CREATE_TOKENS, DESCRIBE_TOKENS.
pub(crate) const CLUSTER_OPERATIONS: i32 = (1 << 5)
    | (1 << 7)
    | (1 << 8)
    | (1 << 9)
    | (1 << 10)
    | (1 << 11)
    | (1 << 12)
    | (1 << 13)
    | (1 << 14);
/// READ, DELETE, DESCRIBE on a group (no authorizer yet: all allowed).
pub(crate) const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);
/// "Authorized operations were not requested."
pub(crate) const NOT_REQUESTED: i32 = i32::MIN;

/// A static name for metrics labels.
pub fn api_name(key: i16) -> &'static str {
    match ApiKey::try_from(key) {
        Ok(ApiKey::Produce) => "Produce",
        Ok(ApiKey::Fetch) => "Fetch",
        Ok(ApiKey::ListOffsets) => "ListOffsets",
        Ok(ApiKey::Metadata) => "Metadata",
        Ok(ApiKey::ApiVersions) => "ApiVersions",
        Ok(ApiKey::CreateTopics) => "CreateTopics",
        Ok(ApiKey::DeleteTopics) => "DeleteTopics",
        Ok(ApiKey::CreatePartitions) => "CreatePartitions",
        Ok(ApiKey::ElectLeaders) => "ElectLeaders",
        Ok(ApiKey::AlterPartitionReassignments) => "AlterPartitionReassignments",
        Ok(ApiKey::ListPartitionReassignments) => "ListPartitionReassignments",
        Ok(ApiKey::UnregisterBroker) => "UnregisterBroker",
        Ok(ApiKey::AddRaftVoter) => "AddRaftVoter",
        Ok(ApiKey::RemoveRaftVoter) => "RemoveRaftVoter",
        Ok(ApiKey::DescribeConfigs) => "DescribeConfigs",
        Ok(ApiKey::AlterConfigs) => "AlterConfigs",
        Ok(ApiKey::IncrementalAlterConfigs) => "IncrementalAlterConfigs",
        Ok(ApiKey::DescribeCluster) => "DescribeCluster",
        Ok(ApiKey::DescribeQuorum) => "DescribeQuorum",
        Ok(ApiKey::DeleteRecords) => "DeleteRecords",
        Ok(ApiKey::OffsetForLeaderEpoch) => "OffsetForLeaderEpoch",
        Ok(ApiKey::DescribeLogDirs) => "DescribeLogDirs",
        Ok(ApiKey::DescribeTopicPartitions) => "DescribeTopicPartitions",
        Ok(ApiKey::FindCoordinator) => "FindCoordinator",
        Ok(ApiKey::JoinGroup) => "JoinGroup",
        Ok(ApiKey::SyncGroup) => "SyncGroup",
        Ok(ApiKey::Heartbeat) => "Heartbeat",
        Ok(ApiKey::LeaveGroup) => "LeaveGroup",
        Ok(ApiKey::OffsetCommit) => "OffsetCommit",
        Ok(ApiKey::OffsetFetch) => "OffsetFetch",
        Ok(ApiKey::ListGroups) => "ListGroups",
        Ok(ApiKey::DescribeGroups) => "DescribeGroups",
        Ok(ApiKey::DeleteGroups) => "DeleteGroups",
        Ok(ApiKey::OffsetDelete) => "OffsetDelete",
        Ok(ApiKey::ConsumerGroupHeartbeat) => "ConsumerGroupHeartbeat",
        Ok(ApiKey::ConsumerGroupDescribe) => "ConsumerGroupDescribe",
        Ok(ApiKey::InitProducerId) => "InitProducerId",
        Ok(ApiKey::AddPartitionsToTxn) => "AddPartitionsToTxn",
        Ok(ApiKey::AddOffsetsToTxn) => "AddOffsetsToTxn",
        Ok(ApiKey::EndTxn) => "EndTxn",
        Ok(ApiKey::TxnOffsetCommit) => "TxnOffsetCommit",
        Ok(ApiKey::DescribeProducers) => "DescribeProducers",
        Ok(ApiKey::WriteTxnMarkers) => "WriteTxnMarkers",
        Ok(ApiKey::DescribeTransactions) => "DescribeTransactions",
        Ok(ApiKey::ListTransactions) => "ListTransactions",
        Ok(ApiKey::DescribeAcls) => "DescribeAcls",
        Ok(ApiKey::CreateAcls) => "CreateAcls",
        Ok(ApiKey::DeleteAcls) => "DeleteAcls",
        _ => "Unsupported",
    }
}

fn accepted(key: ApiKey, version: i16) -> bool {
    SUPPORTED.iter().any(|&(k, min, max)| {
        let min = if k == ApiKey::Produce { 3 } else { min };
        k == key && (min..=max).contains(&version)
    })
}

/// Why a connection must close instead of answering.
#[derive(Debug, thiserror::Error)]
pub enum CloseReason {
    #[error("frame of {0} bytes is shorter than a request header")]
    ShortFrame(usize),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("{api:?} v{version} is not supported")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("acks=0 produce failed; closing so the producer notices")]
    AcksZeroError,
}

/// Who sent a request, for logs.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: String,
    /// The client's address as Kafka reports it ("/127.0.0.1").
    pub client_host: String,
}

/// A response to send, now or once a future finishes.
pub enum Reply {
    /// No response (acks=0 produce).
    None,
    Now(Frame),
    /// The response once this finishes (acks=all produce waiting for its fsync); the
    /// connection goes on reading requests meanwhile and sends responses in request order.
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Result<Frame, CloseReason>> + Send>>),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "Reply::None",
            Self::Now(_) => "Reply::Now",
            Self::Later(_) => "Reply::Later",
        })
    }
}

/// Handles one request frame (without its size prefix).
pub async fn handle(
    broker: &Arc<Broker>,
    mut frame: Bytes,
    client_host: &str,
) -> Result<Reply, CloseReason> {
    if frame.len() < 8 {
        return Err(CloseReason::ShortFrame(frame.len()));
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(api_key).map_err(|()| CloseReason::UnknownApi(api_key))?;
    if api == ApiKey::ApiVersions && !accepted(api, version) {
        // Kafka's fallback: a v0 response naming the supported ranges, so the client can
        // retry with a version both sides know.
        return Ok(Reply::Now(
            api_versions::unsupported_version_response(correlation_id).into(),
        ));
    }
    if !accepted(api, version) {
        return Err(CloseReason::UnsupportedVersion { api, version });
    }
    let malformed = |reason: String| CloseReason::Malformed {
        api,
        version,
        reason,
    };
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|e| malformed(e.to_string()))?;
    let request =
        RequestKind::decode(api, &mut frame, version).map_err(|e| malformed(e.to_string()))?;
    let ctx = RequestContext {
        api,
        version,
        correlation_id,
        client_id: header
            .client_id
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        client_host: client_host.to_string(),
    };
    let response: ResponseKind = match request {
        RequestKind::ApiVersions(r) => api_versions::handle(r, &ctx).into(),
        RequestKind::Metadata(r) => metadata::handle(broker, r, &ctx).await.into(),
        RequestKind::Produce(r) => match produce::handle(broker, r, &ctx).await? {
            produce::Produced::Now(Some(resp)) => resp.into(),
            produce::Produced::Now(None) => return Ok(Reply::None),
            produce::Produced::Later(finish) => {
                return Ok(Reply::Later(Box::pin(async move {
                    let response: ResponseKind = finish.await.into();
                    encode_response(api, version, correlation_id, &response)
                        .map(Frame::from)
                        .map_err(|reason| CloseReason::Malformed {
                            api,
                            version,
                            reason,
                        })
                })));
            }
        },
        RequestKind::Fetch(r) => {
            // Record data goes out from the segment files (see `crate::frame`).
            let (response, regions) = fetch::handle(broker, r, &ctx).await;
            let encode = |body: &kafka_protocol::messages::FetchResponse| {
                encode_with_header(api, version, correlation_id, |out| {
                    body.encode(out, version).map_err(|e| e.to_string())
                })
            };
            return Frame::fetch(version, response, regions, encode)
                .map(Reply::Now)
                .map_err(|reason| CloseReason::Malformed {
                    api,
                    version,
                    reason,
                });
        }
        RequestKind::ListOffsets(r) => list_offsets::handle(broker, r, &ctx).await.into(),
        RequestKind::CreateTopics(r) => create_topics::handle(broker, r, &ctx).await.into(),
        RequestKind::DeleteTopics(r) => delete_topics::handle(broker, r, &ctx).await.into(),
        RequestKind::CreatePartitions(r) => create_partitions::handle(broker, r, &ctx).await.into(),
        RequestKind::ElectLeaders(r) => elect_leaders::handle(broker, r, &ctx).await.into(),
        RequestKind::AlterPartitionReassignments(r) => {
            partition_reassignments::alter(broker, r, &ctx).await.into()
        }
        RequestKind::ListPartitionReassignments(r) => {
            partition_reassignments::list(broker, r, &ctx).await.into()
        }
        RequestKind::UnregisterBroker(r) => unregister_broker::handle(broker, r, &ctx).await.into(),
        RequestKind::AddRaftVoter(r) => raft_voters::add(broker, r, &ctx).await.into(),
        RequestKind::RemoveRaftVoter(r) => raft_voters::remove(broker, r, &ctx).await.into(),
        RequestKind::DescribeConfigs(r) => describe_configs::handle(broker, r, &ctx).await.into(),
        RequestKind::AlterConfigs(r) => alter_configs::handle_alter(broker, r, &ctx).await.into(),
        RequestKind::IncrementalAlterConfigs(r) => {
            alter_configs::handle_incremental(broker, r, &ctx)
                .await
                .into()
        }
        RequestKind::DescribeCluster(r) => describe_cluster::handle(broker, r, &ctx).await.into(),
        RequestKind::DescribeQuorum(r) => describe_quorum::handle(broker, r, &ctx).await.into(),
        RequestKind::DeleteRecords(r) => delete_records::handle(broker, r, &ctx).await.into(),
        RequestKind::OffsetForLeaderEpoch(r) => offset_for_leader_epoch::handle(broker, r, &ctx)
            .await
            .into(),
        RequestKind::DescribeLogDirs(r) => describe_log_dirs::handle(broker, r, &ctx).await.into(),
        RequestKind::DescribeTopicPartitions(r) => {
            describe_topic_partitions::handle(broker, r, &ctx)
                .await
                .into()
        }
        RequestKind::FindCoordinator(r) => find_coordinator::handle(broker, r, &ctx).await.into(),
        RequestKind::JoinGroup(r) => join_group::handle(broker, r, &ctx).await.into(),
        RequestKind::SyncGroup(r) => sync_group::handle(broker, r, &ctx).await.into(),
        RequestKind::Heartbeat(r) => heartbeat::handle(broker, r, &ctx).await.into(),
        RequestKind::LeaveGroup(r) => leave_group::handle(broker, r, &ctx).await.into(),
        RequestKind::OffsetCommit(r) => offset_commit::handle(broker, r, &ctx).await.into(),
        RequestKind::OffsetFetch(r) => offset_fetch::handle(broker, r, &ctx).await.into(),
        RequestKind::ListGroups(r) => list_groups::handle(broker, r, &ctx).await.into(),
        RequestKind::DescribeGroups(r) => describe_groups::handle(broker, r, &ctx).await.into(),
        RequestKind::DeleteGroups(r) => delete_groups::handle(broker, r, &ctx).await.into(),
        RequestKind::OffsetDelete(r) => offset_delete::handle(broker, r, &ctx).await.into(),
        RequestKind::ConsumerGroupHeartbeat(r) => consumer_group_heartbeat::handle(broker, r, &ctx)
            .await
            .into(),
        RequestKind::ConsumerGroupDescribe(r) => consumer_group_describe::handle(broker, r, &ctx)
            .await
            .into(),
        RequestKind::InitProducerId(r) => init_producer_id::handle(broker, r, &ctx).await.into(),
        RequestKind::AddPartitionsToTxn(r) => {
            add_partitions_to_txn::handle(broker, r, &ctx).await.into()
        }
        RequestKind::AddOffsetsToTxn(r) => add_offsets_to_txn::handle(broker, r, &ctx).await.into(),
        RequestKind::EndTxn(r) => end_txn::handle(broker, r, &ctx).await.into(),
        RequestKind::TxnOffsetCommit(r) => txn_offset_commit::handle(broker, r, &ctx).await.into(),
        RequestKind::WriteTxnMarkers(r) => write_txn_markers::handle(broker, r, &ctx).await.into(),
        RequestKind::DescribeProducers(r) => {
            describe_producers::handle(broker, r, &ctx).await.into()
        }
        RequestKind::DescribeTransactions(r) => {
            describe_transactions::handle(broker, r, &ctx).await.into()
        }
        RequestKind::ListTransactions(r) => list_transactions::handle(broker, r, &ctx).await.into(),
        RequestKind::DescribeAcls(r) => acls::describe(r).into(),
        RequestKind::CreateAcls(r) => acls::create(r).into(),
        RequestKind::DeleteAcls(r) => acls::delete(r).into(),
        _ => return Err(CloseReason::UnsupportedVersion { api, version }),
    };
    encode_response(api, version, correlation_id, &response)
        .map(|b| Reply::Now(b.into()))
        .map_err(|reason| CloseReason::Malformed {
            api,
            version,
            reason,
        })
}

/// KIP-951: puts `hint`'s leader and epoch into a partition's `current_leader` and the
/// leader's endpoint into the response's `node_endpoints` (once). A macro because Produce and
/// Fetch each have their own generated endpoint type.
macro_rules! give_leader_hint {
    ($hint:expr, $current_leader:expr, $node_endpoints:expr, $Endpoint:ty) => {{
        let hint: $crate::broker::LeaderHint = $hint;
        $current_leader.leader_id = kafka_protocol::messages::BrokerId(hint.leader);
        $current_leader.leader_epoch = hint.leader_epoch;
        if !$node_endpoints.iter().any(|e| e.node_id.0 == hint.leader) {
            let mut e = <$Endpoint>::default();
            e.node_id = kafka_protocol::messages::BrokerId(hint.leader);
            e.host = $crate::handlers::str_bytes(hint.host);
            e.port = hint.port;
            e.rack = hint.rack.map($crate::handlers::str_bytes);
            $node_endpoints.push(e);
        }
    }};
}
pub(crate) use give_leader_hint;

/// A partition's leader, leader epoch, replicas and ISR as clients are told (Metadata and
/// DescribeTopicPartitions describe them alike): the metadata records', with replicas on
/// fenced brokers answered as a Kafka 4.4 controller records them when it fences the broker
/// (checked against a three-node Kafka): out of the ISR, a fenced leader's partition without a
/// leader, and the last ISR member kept as an eligible leader replica (KIP-966).
pub(crate) struct Placement {
    /// -1 when the recorded leader is fenced or not registered.
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    /// LEADER_NOT_AVAILABLE when the leader is fenced or not registered, else NONE.
    pub error_code: i16,
    /// Replicas on brokers that are fenced or not registered.
    pub offline: Vec<BrokerId>,
    /// ISR members that left it on fencing when no in-sync replica is left (KIP-966's ELR;
    /// Kafka reports the same as the last known ELR).
    pub elr: Vec<BrokerId>,
}

impl Placement {
    /// Partition `index` of `topic` (`None` past its partitions), against the brokers of
    /// `state`.
    pub fn of(
        state: &fjord_meta::MetadataState,
        topic: &fjord_meta::TopicMeta,
        index: i32,
    ) -> Option<Self> {
        let s = topic.partition_states.get(usize::try_from(index).ok()?)?;
        let alive = |id: i32| state.broker(id).is_some_and(|b| !b.fenced);
        let ids = |v: &[i32]| v.iter().map(|&n| BrokerId(n)).collect::<Vec<_>>();
        let (isr, out): (Vec<i32>, Vec<i32>) = s.isr.iter().partition(|&&r| alive(r));
        let led = alive(s.leader);
        Some(Self {
            leader: BrokerId(if led { s.leader } else { -1 }),
            leader_epoch: s.leader_epoch,
            replicas: ids(&s.replicas),
            elr: if isr.is_empty() {
                ids(&out)
            } else {
                Vec::new()
            },
            isr: ids(&isr),
            error_code: if led {
                errors::NONE
            } else {
                errors::LEADER_NOT_AVAILABLE
            },
            offline: s
                .replicas
                .iter()
                .filter(|&&r| !alive(r))
                .map(|&r| BrokerId(r))
                .collect(),
        })
    }
}

/// Runs a blocking coordinator call on the blocking pool (a task that panicked is
/// UNKNOWN_SERVER_ERROR).
pub(crate) async fn coordinator<T: Send + 'static>(
    broker: &Arc<Broker>,
    f: impl FnOnce(&Broker) -> Result<T, CoordinatorError> + Send + 'static,
) -> Result<T, CoordinatorError> {
    let b = broker.clone();
    tokio::task::spawn_blocking(move || f(&b))
        .await
        .unwrap_or_else(|e| Err(CoordinatorError::Unexpected(e.to_string())))
}

/// Fuzz entry point: decodes `frame` (a request without its size prefix) the way [`handle`]
/// does, without a broker; true if it decoded. Must never panic or abort, whatever the bytes.
pub fn fuzz_decode(frame: &[u8]) -> bool {
    if frame.len() < 8 {
        return false;
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let Ok(api) = ApiKey::try_from(api_key) else {
        return false;
    };
    if !accepted(api, version) {
        return false;
    }
    let mut buf = Bytes::copy_from_slice(frame);
    if RequestHeader::decode(&mut buf, api.request_header_version(version)).is_err() {
        return false;
    }
    RequestKind::decode(api, &mut buf, version).is_ok()
}

/// Size prefix, response header, body.
fn encode_response(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<BytesMut, String> {
    encode_with_header(api, version, correlation_id, |out| {
        body.encode(out, version).map_err(|e| e.to_string())
    })
}

/// Size prefix, response header, then whatever `body` writes.
fn encode_with_header(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: impl FnOnce(&mut BytesMut) -> Result<(), String>,
) -> Result<BytesMut, String> {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(&mut out, api.response_header_version(version))
        .map_err(|e| e.to_string())?;
    body(&mut out)?;
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Checks a client's `current_leader_epoch` against ours (-1 means "don't check").
pub(crate) fn check_leader_epoch(requested: i32, current: i32) -> i16 {
    match requested {
        -1 => errors::NONE,
        e if e < current => errors::FENCED_LEADER_EPOCH,
        e if e > current => errors::UNKNOWN_LEADER_EPOCH,
        _ => errors::NONE,
    }
}

/// Reads the leading i32 size of a frame; helper for tests and the server.
pub fn frame_len(buf: &[u8]) -> Option<i32> {
    (buf.len() >= 4).then(|| (&buf[..4]).get_i32())
}
