//! ElectLeaders: preferred and unclean leader elections, decided by the controller and
//! answered once committed (Kafka's `ReplicationControlManager.electLeaders`).

use std::sync::Arc;

use fjord_meta::{ElectionError, ElectionType};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{RequestContext, str_bytes};
use crate::broker::Broker;
use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    request: ElectLeadersRequest,
    ctx: &RequestContext,
) -> ElectLeadersResponse {
    let mut response = ElectLeadersResponse::default();
    // Each partition as asked, in order (a topic or partition named twice is answered twice).
    let named: Option<Vec<(String, i32)>> = request.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.0.to_string(), p)))
            .collect()
    });
    // v0 has no election type: preferred.
    let kind = match (ctx.version, request.election_type) {
        (0, _) | (_, 0) => ElectionType::Preferred,
        (_, 1) => ElectionType::Unclean,
        (_, other) => {
            let message = format!("Unknown election type {other}");
            return whole_request_failed(response, named, errors::INVALID_REQUEST, message, ctx);
        }
    };
    if named.as_ref().is_some_and(|n| n.is_empty()) {
        return response;
    }
    let all_topics: Vec<String> = if named.is_none() {
        broker.metadata().topics().map(|t| t.name.clone()).collect()
    } else {
        Vec::new()
    };
    let b = broker.clone();
    let asked = named.clone();
    let outcomes = match tokio::task::spawn_blocking(move || b.elect_leaders(kind, asked)).await {
        Ok(Ok(outcomes)) => outcomes,
        Ok(Err(e)) => return whole_request_failed(response, named, e.code, e.message, ctx),
        Err(_) => {
            let message = "the election was interrupted; retry it".to_string();
            return whole_request_failed(
                response,
                named,
                errors::UNKNOWN_SERVER_ERROR,
                message,
                ctx,
            );
        }
    };
    // Asked for everything, every topic gets an entry (empty when no election was tried).
    let mut entries = std::collections::HashMap::new();
    for topic in all_topics {
        topic_entry(&mut response, &mut entries, &topic);
    }
    for ((topic, partition), outcome) in outcomes {
        let mut r = PartitionResult::default();
        r.partition_id = partition;
        if let Err(e) = outcome {
            r.error_code = match e {
                ElectionError::UnknownTopicOrPartition(_) => errors::UNKNOWN_TOPIC_OR_PARTITION,
                ElectionError::ElectionNotNeeded(_) => errors::ELECTION_NOT_NEEDED,
                ElectionError::PreferredLeaderNotAvailable(_) => {
                    errors::PREFERRED_LEADER_NOT_AVAILABLE
                }
                ElectionError::EligibleLeadersNotAvailable(_) => {
                    errors::ELIGIBLE_LEADERS_NOT_AVAILABLE
                }
            };
            r.error_message = Some(str_bytes(e.to_string()));
        }
        topic_entry(&mut response, &mut entries, &topic)
            .partition_result
            .push(r);
    }
    response
}

/// The response's entry for `topic`, added at the end the first time.
fn topic_entry<'a>(
    response: &'a mut ElectLeadersResponse,
    entries: &mut std::collections::HashMap<String, usize>,
    topic: &str,
) -> &'a mut ReplicaElectionResult {
    let results = &mut response.replica_election_results;
    let at = *entries.entry(topic.to_string()).or_insert_with(|| {
        let mut r = ReplicaElectionResult::default();
        r.topic = TopicName(StrBytes::from_string(topic.to_string()));
        results.push(r);
        results.len() - 1
    });
    &mut results[at]
}

/// A request that failed as a whole: the top-level code (v1+) and every partition named with
/// it (none when every partition was asked for), as Kafka's `getErrorResponse`.
fn whole_request_failed(
    mut response: ElectLeadersResponse,
    named: Option<Vec<(String, i32)>>,
    code: i16,
    message: String,
    ctx: &RequestContext,
) -> ElectLeadersResponse {
    if ctx.version >= 1 {
        response.error_code = code;
    }
    let mut entries = std::collections::HashMap::new();
    for (topic, partition) in named.unwrap_or_default() {
        let mut r = PartitionResult::default();
        r.partition_id = partition;
        r.error_code = code;
        r.error_message = Some(str_bytes(message.clone()));
        topic_entry(&mut response, &mut entries, &topic)
            .partition_result
            .push(r);
    }
    response
}
