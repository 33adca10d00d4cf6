//! AddOffsetsToTxn: adds the group's `__consumer_offsets` partition to the producer's
//! transaction, so TxnOffsetCommit may write there and the markers reach it.

use std::sync::Arc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::RequestContext;
use super::add_partitions_to_txn::fenced_code;
use crate::broker::Broker;
use crate::errors;
use crate::groups::OFFSETS_TOPIC;

pub async fn handle(
    broker: &Arc<Broker>,
    request: AddOffsetsToTxnRequest,
    ctx: &RequestContext,
) -> AddOffsetsToTxnResponse {
    let id = request.transactional_id.0.to_string();
    let group = request.group_id.0.to_string();
    let (pid, epoch) = (request.producer_id.0, request.producer_epoch);
    let b = broker.clone();
    let result = tokio::task::spawn_blocking(move || {
        let partitions = b
            .ensure_offsets_topic()
            .map_err(|e| (errors::COORDINATOR_NOT_AVAILABLE, e.message))?;
        let index = fjord_coord::offsets::partition_for(&group, partitions);
        b.txns
            .add_partitions(&b, &id, pid, epoch, &[(OFFSETS_TOPIC.to_string(), index)])
    })
    .await
    .unwrap_or_else(|e| Err((errors::UNKNOWN_SERVER_ERROR, e.to_string())));
    let mut r = AddOffsetsToTxnResponse::default();
    if let Err((code, message)) = result {
        tracing::debug!(client = %ctx.client_id, code, %message, "AddOffsetsToTxn refused");
        r.error_code = fenced_code(code, ctx.version);
    }
    r
}
