//! TxnOffsetCommit: offsets committed as part of a transaction. Written to the group's
//! `__consumer_offsets` partition with the producer's id and epoch, visible to OffsetFetch
//! only once the transaction commits.

use std::sync::Arc;

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::RequestContext;
use super::offset_commit::{Checked, PartitionCommit};
use crate::broker::{Broker, now_ms};
use crate::errors;
use crate::groups::OFFSETS_TOPIC;

/// Who is committing: the transaction and the consumer's group membership.
struct Committer {
    transactional_id: String,
    producer_id: i64,
    epoch: i16,
    group: String,
    generation: i32,
    member: String,
    instance: Option<String>,
}

/// The error for the whole request, if any: the transaction, then the group membership.
fn check(broker: &Broker, c: &Committer, version: i16) -> i16 {
    let Ok(partitions) = broker.ensure_offsets_topic() else {
        return errors::COORDINATOR_NOT_AVAILABLE;
    };
    let index = fjord_coord::offsets::partition_for(&c.group, partitions);
    if let Err((code, _)) = broker.txns.verify(
        &c.transactional_id,
        c.producer_id,
        c.epoch,
        OFFSETS_TOPIC,
        index,
    ) {
        return fenced(code, version);
    }
    // v3+ (KIP-447): the consumer's group membership fences zombie producers.
    if version >= 3 && (c.generation >= 0 || !c.member.is_empty()) {
        if broker.groups.consumer().contains(&c.group) {
            return broker
                .groups
                .consumer()
                .validate_commit(&c.group, &c.member, c.generation);
        }
        return broker.groups.coordinator().validate_commit(
            &c.group,
            &c.member,
            c.instance.as_deref(),
            c.generation,
            now_ms(),
        );
    }
    errors::NONE
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
    let committer = Committer {
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
    let b = broker.clone();
    let (committer, group_code) = tokio::task::spawn_blocking(move || {
        let code = check(&b, &committer, version);
        (committer, code)
    })
    .await
    .unwrap_or_else(|e| {
        tracing::error!(error = %e, "TxnOffsetCommit check failed");
        (
            Committer {
                transactional_id: String::new(),
                producer_id: -1,
                epoch: -1,
                group: String::new(),
                generation: -1,
                member: String::new(),
                instance: None,
            },
            errors::UNKNOWN_SERVER_ERROR,
        )
    });
    let group = committer.group.clone();
    let now = now_ms();
    let topics = request.topics.iter().map(|t| {
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
                metadata: p.committed_metadata.as_ref(),
            })
            .collect();
        (t.name.0.to_string(), partitions)
    });
    let mut checked = Checked::new(broker, group_code, now, topics);
    let accepted = std::mem::take(&mut checked.accepted);
    if !accepted.is_empty() {
        let b = broker.clone();
        let (pid, epoch) = (committer.producer_id, committer.epoch);
        let g = group.clone();
        let stored = tokio::task::spawn_blocking(move || {
            b.groups
                .txn_commit(&b, &g, pid, epoch, accepted)
                .map_err(|e| (errors::from_log_error(&e), e.to_string()))
        })
        .await
        .unwrap_or_else(|e| Err((errors::UNKNOWN_SERVER_ERROR, e.to_string())));
        if let Err((code, message)) = stored {
            tracing::warn!(%group, code, %message, "transactional offset commit refused");
            checked.refuse_accepted(fenced(code, version));
        }
    }
    let mut response = TxnOffsetCommitResponse::default();
    for (topic, codes) in request.topics.iter().zip(checked.codes) {
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
