//! AddOffsetsToTxn: adds the group's `__consumer_offsets` partition to the producer's
//! transaction, so TxnOffsetCommit may write there and the markers reach it.

use std::sync::Arc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::RequestContext;
use super::add_partitions_to_txn::fenced_code;
use crate::broker::Broker;
use crate::coordinator::group::OFFSETS_TOPIC;
use crate::errors;

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
        let index = b
            .groups
            .partition_for(&group)
            .map_err(|e| (e.code(), e.to_string()))?;
        b.txns
            .add_partitions(&id, pid, epoch, &[(OFFSETS_TOPIC.to_string(), index)])
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
