//! DescribeTopicPartitions (KIP-966): topics and partitions, paged by a cursor.

use std::sync::Arc;

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse};

use super::{RequestContext, TOPIC_OPERATIONS, topic_name};
use crate::broker::Broker;
use crate::errors;

/// Kafka's `max.request.partition.size.limit`: the most partitions one response holds.
const MAX_PARTITIONS: i32 = 2000;

pub async fn handle(
    broker: &Arc<Broker>,
    request: DescribeTopicPartitionsRequest,
    _ctx: &RequestContext,
) -> DescribeTopicPartitionsResponse {
    let state = broker.metadata();
    let mut names: Vec<String> = if request.topics.is_empty() {
        state.topics().map(|t| t.name.clone()).collect()
    } else {
        request
            .topics
            .iter()
            .map(|t| t.name.0.to_string())
            .collect()
    };
    names.sort();
    names.dedup();
    let (cursor_topic, cursor_partition) = match &request.cursor {
        Some(c) => (Some(c.topic_name.0.to_string()), c.partition_index.max(0)),
        None => (None, 0),
    };
    let mut budget = if request.response_partition_limit > 0 {
        request.response_partition_limit.min(MAX_PARTITIONS)
    } else {
        MAX_PARTITIONS
    };
    let mut response = DescribeTopicPartitionsResponse::default();
    for name in names {
        if cursor_topic.as_ref().is_some_and(|c| &name < c) {
            continue;
        }
        let mut t = DescribeTopicPartitionsResponseTopic::default();
        t.name = Some(topic_name(&name));
        t.topic_authorized_operations = TOPIC_OPERATIONS;
        let Some(meta) = state.topic(&name) else {
            t.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
            response.topics.push(t);
            continue;
        };
        t.topic_id = uuid::Uuid::from_bytes(meta.id.0);
        t.is_internal = name.starts_with("__");
        let first = if cursor_topic.as_deref() == Some(name.as_str()) {
            cursor_partition
        } else {
            0
        };
        for index in first..meta.partitions {
            if budget == 0 {
                let mut c = Cursor::default();
                c.topic_name = topic_name(&name);
                c.partition_index = index;
                response.next_cursor = Some(c);
                break;
            }
            budget -= 1;
            let Some(placed) = super::Placement::of(&state, meta, index) else {
                continue;
            };
            let mut p = DescribeTopicPartitionsResponsePartition::default();
            p.partition_index = index;
            p.error_code = placed.error_code;
            p.leader_id = placed.leader;
            p.leader_epoch = placed.leader_epoch;
            p.replica_nodes = placed.replicas;
            p.isr_nodes = placed.isr;
            p.offline_replicas = placed.offline;
            p.eligible_leader_replicas = Some(placed.elr.clone());
            p.last_known_elr = Some(placed.elr);
            t.partitions.push(p);
        }
        response.topics.push(t);
        if response.next_cursor.is_some() {
            break;
        }
    }
    response
}
