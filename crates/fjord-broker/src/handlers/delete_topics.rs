//! DeleteTopics: by name (v1–5) or by name or id (v6).

use std::sync::Arc;

use fjord_meta::TopicId;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};

use super::{RequestContext, str_bytes, topic_name};
use crate::broker::Broker;
use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    request: DeleteTopicsRequest,
    ctx: &RequestContext,
) -> DeleteTopicsResponse {
    let mut response = DeleteTopicsResponse::default();
    // (name if given, id if given)
    let targets: Vec<(Option<String>, Option<uuid::Uuid>)> = if ctx.version >= 6 {
        request
            .topics
            .iter()
            .map(|t| {
                (
                    t.name.as_ref().map(|n| n.0.to_string()),
                    (!t.topic_id.is_nil()).then_some(t.topic_id),
                )
            })
            .collect()
    } else {
        request
            .topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), None))
            .collect()
    };
    for (name, id) in targets {
        let mut r = DeletableTopicResult::default();
        r.name = name.as_deref().map(topic_name);
        r.topic_id = id.unwrap_or_default();
        let resolved = match (&name, id) {
            (Some(n), _) => Some(n.clone()),
            (None, Some(id)) => broker
                .metadata()
                .topic_by_id(&TopicId(id.into_bytes()))
                .map(|t| t.name.clone()),
            (None, None) => None,
        };
        let Some(resolved) = resolved else {
            r.error_code = if id.is_some() {
                errors::UNKNOWN_TOPIC_ID
            } else {
                errors::INVALID_REQUEST
            };
            r.error_message = Some(str_bytes(
                "no such topic id, or neither a name nor an id given",
            ));
            response.responses.push(r);
            continue;
        };
        let b = broker.clone();
        let n = resolved.clone();
        match tokio::task::spawn_blocking(move || b.delete_topic(&n)).await {
            Ok(Ok(meta)) => {
                if ctx.version >= 6 {
                    r.name = Some(topic_name(&resolved));
                    r.topic_id = uuid::Uuid::from_bytes(meta.id.0);
                }
            }
            Ok(Err(e)) => {
                r.error_code = e.code;
                // Kafka gives no message for an unknown topic (the client's own text shows).
                if ctx.version >= 5 && e.code != errors::UNKNOWN_TOPIC_OR_PARTITION {
                    r.error_message = Some(str_bytes(e.message));
                }
            }
            Err(e) => {
                r.error_code = {
                    tracing::error!(error = %e, "delete task failed");
                    errors::UNKNOWN_SERVER_ERROR
                }
            }
        }
        response.responses.push(r);
    }
    response
}
