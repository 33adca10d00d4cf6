//! CreatePartitions: grow topics, with optional assignments and validate_only.

use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{RequestContext, str_bytes};
use crate::broker::Broker;
use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    request: CreatePartitionsRequest,
    _ctx: &RequestContext,
) -> CreatePartitionsResponse {
    let mut response = CreatePartitionsResponse::default();
    for topic in request.topics {
        let mut r = CreatePartitionsTopicResult::default();
        r.name = topic.name.clone();
        let name = topic.name.0.to_string();
        // An empty list is treated like null: the controller places the new partitions.
        let assignments: Option<Vec<Vec<i32>>> = topic
            .assignments
            .as_ref()
            .filter(|a| !a.is_empty())
            .map(|a| {
                a.iter()
                    .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            });
        let b = broker.clone();
        let (count, validate_only) = (topic.count, request.validate_only);
        match tokio::task::spawn_blocking(move || {
            b.create_partitions(&name, count, assignments, validate_only)
        })
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                r.error_code = e.code;
                // Kafka gives no message for an unknown topic (the client's own text shows).
                if e.code != errors::UNKNOWN_TOPIC_OR_PARTITION {
                    r.error_message = Some(str_bytes(e.message));
                }
            }
            Err(_) => r.error_code = errors::UNKNOWN_SERVER_ERROR,
        }
        response.results.push(r);
    }
    response
}
