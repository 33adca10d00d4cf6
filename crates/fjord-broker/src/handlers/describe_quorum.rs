//! DescribeQuorum: the metadata quorum as its leader sees it (Kafka's `kafka-metadata-quorum
//! describe`). Any broker answers: one that does not lead asks the leader, as a Kafka broker
//! forwards the request to the active controller.

use std::sync::Arc;

use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{RequestContext, str_bytes};
use crate::broker::Broker;
use crate::errors;

/// The metadata log's topic (Kafka's name), partition 0.
const METADATA_TOPIC: &str = "__cluster_metadata";

/// Kafka's listener name for controller endpoints.
pub(crate) const CONTROLLER_LISTENER: &str = "CONTROLLER";

pub async fn handle(
    broker: &Arc<Broker>,
    request: DescribeQuorumRequest,
    ctx: &RequestContext,
) -> DescribeQuorumResponse {
    let valid = matches!(request.topics.as_slice(), [t] if t.topic_name.0.as_str() == METADATA_TOPIC
        && matches!(t.partitions.as_slice(), [p] if p.partition_index == 0));
    if !valid {
        // As Kafka: every partition asked for is unknown.
        let mut r = DescribeQuorumResponse::default();
        r.topics = request
            .topics
            .into_iter()
            .map(|t| {
                let mut topic = TopicData::default();
                topic.topic_name = t.topic_name;
                topic.partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        partition_error(
                            p.partition_index,
                            errors::UNKNOWN_TOPIC_OR_PARTITION,
                            "This server does not host this topic-partition.",
                        )
                    })
                    .collect();
                topic
            })
            .collect();
        return r;
    }
    let view = match broker.quorum.describe().await {
        Ok(view) => view,
        Err(e) => {
            tracing::debug!(error = %e, "DescribeQuorum: no leader answered");
            return singleton(
                partition_error(
                    0,
                    errors::NOT_LEADER_OR_FOLLOWER,
                    "For requests intended only for the leader, this error indicates that the broker is not the current leader. For requests intended for any replica, this error indicates that the broker is not a replica of the topic partition.",
                ),
                Vec::new(),
            );
        }
    };
    let replica = |v: &fjord_quorum::ReplicaView| {
        let mut r = ReplicaState::default();
        r.replica_id = BrokerId(v.id as i32);
        // v2: the replica's directory id (zero when unknown, as Kafka).
        if let Some(id) = v.directory_id.as_deref().and_then(crate::ids::decode)
            && ctx.version >= 2
        {
            r.replica_directory_id = id;
        }
        r.log_end_offset = v.log_end_offset;
        r.last_fetch_timestamp = v.last_fetch_ms;
        r.last_caught_up_timestamp = v.last_caught_up_ms;
        r
    };
    let mut p = PartitionData::default();
    p.partition_index = 0;
    p.leader_id = BrokerId(view.leader as i32);
    p.leader_epoch = i32::try_from(view.epoch).unwrap_or(i32::MAX);
    p.high_watermark = view.high_watermark;
    p.current_voters = view.voters.iter().map(replica).collect();
    p.observers = view.observers.iter().map(replica).collect();
    let nodes = if ctx.version >= 2 {
        view.voters
            .iter()
            .map(|v| {
                let mut node = Node::default();
                node.node_id = BrokerId(v.id as i32);
                node.listeners = view
                    .addresses
                    .get(&v.id)
                    .and_then(|a| listener(a))
                    .into_iter()
                    .collect();
                node
            })
            .collect()
    } else {
        Vec::new()
    };
    singleton(p, nodes)
}

/// A controller listener's `HOST:PORT` as Kafka's endpoint; None for a single node's empty
/// address (it has no controller listener).
fn listener(addr: &str) -> Option<Listener> {
    let (host, port) = addr.rsplit_once(':')?;
    let mut l = Listener::default();
    l.name = StrBytes::from_static_str(CONTROLLER_LISTENER);
    l.host = str_bytes(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    );
    l.port = port.parse().ok()?;
    Some(l)
}

fn partition_error(index: i32, code: i16, message: &'static str) -> PartitionData {
    let mut p = PartitionData::default();
    p.partition_index = index;
    p.error_code = code;
    p.error_message = Some(StrBytes::from_static_str(message));
    p
}

fn singleton(partition: PartitionData, nodes: Vec<Node>) -> DescribeQuorumResponse {
    let mut topic = TopicData::default();
    topic.topic_name = TopicName(StrBytes::from_static_str(METADATA_TOPIC));
    topic.partitions = vec![partition];
    let mut r = DescribeQuorumResponse::default();
    r.topics = vec![topic];
    r.nodes = nodes;
    r
}
