//! InitProducerId: a producer id for an idempotent producer, or the id and epoch of a
//! transactional id (fencing the previous producer and aborting its open transaction).

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::RequestContext;
use crate::broker::Broker;
use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    request: InitProducerIdRequest,
    ctx: &RequestContext,
) -> InitProducerIdResponse {
    let id = request.transactional_id.as_ref().map(|s| s.0.to_string());
    // v3+ (KIP-360): a producer recovering from an error names the id and epoch it had.
    let expected = (ctx.version >= 3 && request.producer_id.0 >= 0)
        .then_some((request.producer_id.0, request.producer_epoch));
    let timeout = request.transaction_timeout_ms;
    let b = broker.clone();
    let result = tokio::task::spawn_blocking(move || {
        b.txns.init_producer_id(id.as_deref(), timeout, expected)
    })
    .await
    .unwrap_or_else(|e| Err((errors::UNKNOWN_SERVER_ERROR, e.to_string())));
    let mut r = InitProducerIdResponse::default();
    match result {
        Ok((pid, epoch)) => {
            r.producer_id = ProducerId(pid);
            r.producer_epoch = epoch;
        }
        Err((code, message)) => {
            tracing::debug!(client = %ctx.client_id, code, %message, "InitProducerId refused");
            r.error_code = fenced_code(code, ctx.version);
            r.producer_id = ProducerId(-1);
            r.producer_epoch = -1;
        }
    }
    r
}

/// PRODUCER_FENCED exists from InitProducerId v4 on; older clients learn of fencing as
/// INVALID_PRODUCER_EPOCH, as Kafka answers them.
fn fenced_code(code: i16, version: i16) -> i16 {
    if code == fjord_coord::codes::PRODUCER_FENCED && version < 4 {
        errors::INVALID_PRODUCER_EPOCH
    } else {
        code
    }
}
