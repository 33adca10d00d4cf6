//! AddPartitionsToTxn: adds partitions to the producer's open transaction, starting it if
//! needed (v0–3, one transaction per request, from producers); v4–5 carry several
//! transactions, from brokers, which with `verify_only` only ask whether the partitions are
//! in the transaction (KIP-890's verification of transactional writes).

use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    request: AddPartitionsToTxnRequest,
    ctx: &RequestContext,
) -> AddPartitionsToTxnResponse {
    if ctx.version >= 4 {
        return batched(broker, request).await;
    }
    let id = request.v3_and_below_transactional_id.0.to_string();
    let pid = request.v3_and_below_producer_id.0;
    let epoch = request.v3_and_below_producer_epoch;
    let mut wanted = Vec::new();
    let mut missing = false;
    for t in &request.v3_and_below_topics {
        for &p in &t.partitions {
            let name = t.name.0.to_string();
            missing |= !broker.has_partition(&name, p);
            wanted.push((name, p));
        }
    }
    let result = if missing {
        Err((errors::UNKNOWN_TOPIC_OR_PARTITION, String::new()))
    } else {
        let b = broker.clone();
        let w = wanted.clone();
        tokio::task::spawn_blocking(move || b.txns.add_partitions(&id, pid, epoch, &w))
            .await
            .unwrap_or_else(|e| Err((errors::UNKNOWN_SERVER_ERROR, e.to_string())))
    };
    let code_for = |topic: &str, p: i32| match &result {
        Ok(()) => errors::NONE,
        Err((errors::UNKNOWN_TOPIC_OR_PARTITION, _)) => {
            if !broker.has_partition(topic, p) {
                errors::UNKNOWN_TOPIC_OR_PARTITION
            } else {
                errors::OPERATION_NOT_ATTEMPTED
            }
        }
        Err((code, _)) => fenced_code(*code, ctx.version),
    };
    if let Err((code, message)) = &result {
        tracing::debug!(client = %ctx.client_id, code, %message, "AddPartitionsToTxn refused");
    }
    let mut r = AddPartitionsToTxnResponse::default();
    for t in &request.v3_and_below_topics {
        let mut tr = AddPartitionsToTxnTopicResult::default();
        tr.name = t.name.clone();
        for &p in &t.partitions {
            let mut pr = AddPartitionsToTxnPartitionResult::default();
            pr.partition_index = p;
            pr.partition_error_code = code_for(&t.name.0, p);
            tr.results_by_partition.push(pr);
        }
        r.results_by_topic_v3_and_below.push(tr);
    }
    r
}

/// PRODUCER_FENCED exists from v2 of the transaction APIs; before, fencing is
/// INVALID_PRODUCER_EPOCH.
pub(crate) fn fenced_code(code: i16, version: i16) -> i16 {
    if code == fjord_coord::codes::PRODUCER_FENCED && version < 2 {
        errors::INVALID_PRODUCER_EPOCH
    } else {
        code
    }
}

/// v4+: each transaction's partitions, verified (`verify_only`) or added.
async fn batched(
    broker: &Arc<Broker>,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let b = broker.clone();
    let results = tokio::task::spawn_blocking(move || {
        request
            .transactions
            .into_iter()
            .map(|txn| {
                let id = txn.transactional_id.0.to_string();
                let pid = txn.producer_id.0;
                let epoch = txn.producer_epoch;
                let wanted: Vec<(String, i32)> = txn
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|&p| (t.name.0.to_string(), p)))
                    .collect();
                let added = if txn.verify_only {
                    None
                } else if wanted.iter().any(|(t, p)| !b.has_partition(t, *p)) {
                    Some(Err((errors::UNKNOWN_TOPIC_OR_PARTITION, String::new())))
                } else {
                    Some(b.txns.add_partitions(&id, pid, epoch, &wanted))
                };
                let mut result = AddPartitionsToTxnResult::default();
                result.transactional_id = txn.transactional_id;
                result.topic_results = txn
                    .topics
                    .into_iter()
                    .map(|t| {
                        let name = t.name.0.to_string();
                        let mut tr = AddPartitionsToTxnTopicResult::default();
                        tr.results_by_partition = t
                            .partitions
                            .iter()
                            .map(|&p| {
                                let code = match &added {
                                    None => match b.txns.verify(&id, pid, epoch, &name, p) {
                                        Ok(()) => errors::NONE,
                                        Err((code, _)) => code,
                                    },
                                    Some(Ok(())) => errors::NONE,
                                    Some(Err((errors::UNKNOWN_TOPIC_OR_PARTITION, _)))
                                        if b.has_partition(&name, p) =>
                                    {
                                        errors::OPERATION_NOT_ATTEMPTED
                                    }
                                    Some(Err((code, _))) => *code,
                                };
                                let mut pr = AddPartitionsToTxnPartitionResult::default();
                                pr.partition_index = p;
                                pr.partition_error_code = code;
                                pr
                            })
                            .collect();
                        tr.name = t.name;
                        tr
                    })
                    .collect();
                result
            })
            .collect()
    })
    .await;
    let mut r = AddPartitionsToTxnResponse::default();
    match results {
        Ok(results) => r.results_by_transaction = results,
        Err(_) => r.error_code = errors::UNKNOWN_SERVER_ERROR,
    }
    r
}
