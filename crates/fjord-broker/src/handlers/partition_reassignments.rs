//! AlterPartitionReassignments and ListPartitionReassignments: move a partition's replicas
//! to other brokers (the new ones catch up as followers and join the in-sync replicas before
//! the old ones leave), cancel a move, list the moves in progress.

use std::sync::Arc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

use super::{RequestContext, str_bytes};
use crate::broker::Broker;
use crate::errors;

pub async fn alter(
    broker: &Arc<Broker>,
    request: AlterPartitionReassignmentsRequest,
    ctx: &RequestContext,
) -> AlterPartitionReassignmentsResponse {
    let mut response = AlterPartitionReassignmentsResponse::default();
    // v0 has no choice: the replication factor may change (KIP-860 added the flag in v1).
    let allow = ctx.version < 1 || request.allow_replication_factor_change;
    response.allow_replication_factor_change = allow;
    let asked: Vec<(String, i32, Option<Vec<i32>>)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect()),
                )
            })
        })
        .collect();
    let b = broker.clone();
    let to_decide = asked.clone();
    let decided = tokio::task::spawn_blocking(move || b.alter_reassignments(&to_decide, allow))
        .await
        .unwrap_or_else(|_| {
            Err(crate::broker::AdminError::new(
                errors::UNKNOWN_SERVER_ERROR,
                "the reassignment was interrupted; retry it".to_string(),
            ))
        });
    let outcomes: Vec<(i16, Option<String>)> = match decided {
        Ok(outcomes) => outcomes
            .into_iter()
            .map(|r| match r {
                Ok(()) => (errors::NONE, None),
                Err(e) => (e.code, Some(e.message)),
            })
            .collect(),
        // The whole request failed: the top level and every partition say so (Kafka's
        // getErrorResponse).
        Err(e) => {
            response.error_code = e.code;
            response.error_message = Some(str_bytes(e.message.clone()));
            vec![(e.code, Some(e.message)); asked.len()]
        }
    };
    let mut outcomes = outcomes.into_iter();
    for t in &request.topics {
        let mut topic = ReassignableTopicResponse::default();
        topic.name = t.name.clone();
        for p in &t.partitions {
            let (code, message) = outcomes
                .next()
                .unwrap_or((errors::UNKNOWN_SERVER_ERROR, None));
            let mut r = ReassignablePartitionResponse::default();
            r.partition_index = p.partition_index;
            r.error_code = code;
            r.error_message = message.map(str_bytes);
            topic.partitions.push(r);
        }
        response.responses.push(topic);
    }
    response
}

pub async fn list(
    broker: &Arc<Broker>,
    request: ListPartitionReassignmentsRequest,
    _ctx: &RequestContext,
) -> ListPartitionReassignmentsResponse {
    let mut response = ListPartitionReassignmentsResponse::default();
    let named: Option<Vec<(String, Vec<i32>)>> = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let found = broker.with_controller(|c| c.reassignments(named.as_deref()));
    let ids = |v: &[i32]| v.iter().map(|&b| BrokerId(b)).collect::<Vec<_>>();
    for (topic, index, p) in found {
        let mut r = OngoingPartitionReassignment::default();
        r.partition_index = index;
        r.replicas = ids(&p.replicas);
        r.adding_replicas = ids(&p.adding);
        r.removing_replicas = ids(&p.removing);
        match response.topics.last_mut() {
            Some(t) if t.name.0.as_str() == topic => t.partitions.push(r),
            _ => {
                let mut t = OngoingTopicReassignment::default();
                t.name = kafka_protocol::messages::TopicName(str_bytes(topic));
                t.partitions.push(r);
                response.topics.push(t);
            }
        }
    }
    response
}
