//! UnregisterBroker: removes a stopped broker from the cluster (Kafka's kafka-cluster
//! unregister), once no partition depends on it alone.

use std::sync::Arc;

use kafka_protocol::messages::{UnregisterBrokerRequest, UnregisterBrokerResponse};

use super::{RequestContext, str_bytes};
use crate::broker::Broker;
use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    request: UnregisterBrokerRequest,
    _ctx: &RequestContext,
) -> UnregisterBrokerResponse {
    let mut response = UnregisterBrokerResponse::default();
    let b = broker.clone();
    let id = request.broker_id.0;
    let outcome = tokio::task::spawn_blocking(move || b.unregister_broker(id))
        .await
        .unwrap_or_else(|e| {
            Err(crate::broker::AdminError::new(
                errors::UNKNOWN_SERVER_ERROR,
                e.to_string(),
            ))
        });
    if let Err(e) = outcome {
        response.error_code = e.code;
        response.error_message = Some(str_bytes(e.message));
    }
    response
}
