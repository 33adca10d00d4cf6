//! EndTxn: commits or aborts the producer's transaction. Answered once the markers are in
//! every partition of the transaction and the outcome is stored.

use std::sync::Arc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};

use super::RequestContext;
use super::add_partitions_to_txn::fenced_code;
use crate::broker::Broker;
use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    request: EndTxnRequest,
    ctx: &RequestContext,
) -> EndTxnResponse {
    let id = request.transactional_id.0.to_string();
    let (pid, epoch, commit) = (
        request.producer_id.0,
        request.producer_epoch,
        request.committed,
    );
    let b = broker.clone();
    let result = tokio::task::spawn_blocking(move || b.txns.end_txn(&id, pid, epoch, commit))
        .await
        .unwrap_or_else(|e| Err((errors::UNKNOWN_SERVER_ERROR, e.to_string())));
    let mut r = EndTxnResponse::default();
    if let Err((code, message)) = result {
        tracing::debug!(client = %ctx.client_id, code, %message, "EndTxn refused");
        r.error_code = fenced_code(code, ctx.version);
    }
    r
}
