//! TxnOffsetCommit: offsets committed as part of a transaction. Written to the group's
//! `__consumer_offsets` partition with the producer's id and epoch, visible to OffsetFetch
//! only once the transaction commits.

use std::sync::Arc;

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::offset_commit::{Checked, Commits, PartitionCommit, all_refused};
use super::{RequestContext, coordinator};
use crate::broker::Broker;
use crate::coordinator::group::{Committer, OFFSETS_TOPIC};
use crate::errors;

/// Who is committing: the transaction and the consumer's group membership.
struct TxnCommitter {
    transactional_id: String,
    producer_id: i64,
    epoch: i16,
    group: String,
    generation: i32,
    member: String,
    instance: Option<String>,
}

/// The transaction's verdict on the request: the producer's open transaction must hold the
/// group's `__consumer_offsets` partition (AddOffsetsToTxn) with this epoch.
fn check_transaction(broker: &Broker, c: &TxnCommitter, index: i32, version: i16) -> i16 {
    match broker.txns.verify(
        &c.transactional_id,
        c.producer_id,
        c.epoch,
        OFFSETS_TOPIC,
        index,
    ) {
        Ok(()) => errors::NONE,
        Err((code, _)) => fenced(code, version),
    }
}

/// A stale epoch is PRODUCER_FENCED from v2 on (INVALID_PRODUCER_EPOCH before).
fn fenced(code: i16, version: i16) -> i16 {
    match code {
        errors::INVALID_PRODUCER_EPOCH if version >= 2 => fjord_coord::codes::PRODUCER_FENCED,
        fjord_coord::codes::PRODUCER_FENCED if version < 2 => errors::INVALID_PRODUCER_EPOCH,
        c => c,
    }
}

pub async fn handle(
    broker: &Arc<Broker>,
    request: TxnOffsetCommitRequest,
    ctx: &RequestContext,
) -> TxnOffsetCommitResponse {
    let version = ctx.version;
    let committer = TxnCommitter {
        transactional_id: request.transactional_id.0.to_string(),
        producer_id: request.producer_id.0,
        epoch: request.producer_epoch,
        group: request.group_id.0.to_string(),
        generation: if version >= 3 {
            request.generation_id
        } else {
            -1
        },
        member: request.member_id.to_string(),
        instance: request.group_instance_id.as_ref().map(|s| s.to_string()),
    };
    let topics: Commits = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| PartitionCommit {
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: if version >= 2 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                })
                .collect();
            (t.name.0.to_string(), partitions)
        })
        .collect();
    let refused = all_refused(&topics, errors::NONE);
    // A transaction another broker coordinates is verified there first (the group's
    // `__consumer_offsets` partition must be in it: AddOffsetsToTxn).
    let remote = match broker.remote_txn_coordinator(&committer.transactional_id) {
        None => None,
        Some((_, coordinator)) => {
            let index = broker
                .metadata()
                .topic(OFFSETS_TOPIC)
                .map(|t| fjord_coord::offsets::partition_for(&committer.group, t.partitions));
            let codes = match index {
                Some(index) => {
                    broker
                        .verify_txn_remotely(
                            &coordinator,
                            &committer.transactional_id,
                            committer.producer_id,
                            committer.epoch,
                            &[(OFFSETS_TOPIC.to_string(), index)],
                        )
                        .await
                }
                None => Default::default(),
            };
            Some(
                codes
                    .into_values()
                    .next()
                    .unwrap_or(fjord_coord::codes::INVALID_TXN_STATE),
            )
        }
    };
    let now = broker.now_ms();
    let stored = coordinator(broker, move |b| {
        let c = committer;
        let index = b.groups.partition_for(&c.group)?;
        // v3+ (KIP-447): the consumer's group membership fences zombie producers; it is
        // checked in the same step of the group's shard that stores the offsets.
        let by =
            (version >= 3 && (c.generation >= 0 || !c.member.is_empty())).then_some(Committer {
                member: &c.member,
                instance: c.instance.as_deref(),
                generation: c.generation,
            });
        b.groups
            .txn_commit_offsets(&c.group, (c.producer_id, c.epoch), by, now, |group_code| {
                // Under the group shard's lock, which the transaction's marker for this
                // partition also takes: the offsets cannot land after the transaction ended.
                let txn_code = match remote {
                    Some(code) => fenced(code, version),
                    None => check_transaction(b, &c, index, version),
                };
                let code = if txn_code != errors::NONE {
                    txn_code
                } else {
                    group_code
                };
                Checked::new(b, code, now, topics).take_accepted()
            })
    })
    .await;
    let codes = match stored {
        Ok(checked) => checked.codes,
        Err(e) => {
            tracing::warn!(error = %e, "transactional offset commit refused by the coordinator");
            refused
                .into_iter()
                .map(|t| vec![fenced(e.code(), version); t.len()])
                .collect()
        }
    };
    let mut response = TxnOffsetCommitResponse::default();
    for (topic, codes) in request.topics.iter().zip(codes) {
        let mut tr = TxnOffsetCommitResponseTopic::default();
        tr.name = topic.name.clone();
        for (p, code) in topic.partitions.iter().zip(codes) {
            let mut pr = TxnOffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = code;
            tr.partitions.push(pr);
        }
        response.topics.push(tr);
    }
    response
}
