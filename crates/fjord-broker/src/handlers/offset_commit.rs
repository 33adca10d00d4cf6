//! OffsetCommit: checked against the group's membership, written durably to
//! `__consumer_offsets`, then visible to OffsetFetch.

use std::sync::Arc;

use fjord_coord::offsets::Committed;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::RequestContext;
use crate::broker::{Broker, now_ms};
use crate::errors;

/// OFFSET_METADATA_TOO_LARGE.
const OFFSET_METADATA_TOO_LARGE: i16 = 12;

/// One partition of an offset commit (plain or transactional): the group's verdict, then
/// UNKNOWN_TOPIC_OR_PARTITION or OFFSET_METADATA_TOO_LARGE, else the offset to store.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_partition(
    broker: &Broker,
    group_code: i16,
    topic: &str,
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: Option<&kafka_protocol::protocol::StrBytes>,
    now: i64,
) -> Result<Committed, i16> {
    let metadata = metadata.map(|m| m.to_string()).unwrap_or_default();
    if group_code != errors::NONE {
        Err(group_code)
    } else if broker.partition(topic, partition).is_none() {
        Err(errors::UNKNOWN_TOPIC_OR_PARTITION)
    } else if metadata.len() > broker.config.offset_metadata_max_bytes {
        Err(OFFSET_METADATA_TOO_LARGE)
    } else {
        Ok(Committed {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp: now,
        })
    }
}

pub async fn handle(
    broker: &Arc<Broker>,
    request: OffsetCommitRequest,
    ctx: &RequestContext,
) -> OffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let now = now_ms();
    let generation = if ctx.version >= 1 {
        request.generation_id_or_member_epoch
    } else {
        -1
    };
    let member = request.member_id.to_string();
    let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
    let consumer_group = broker.groups.consumer().contains(&group);
    let group_code = if consumer_group {
        let consumer = broker.groups.consumer();
        if member.is_empty() && generation < 0 {
            // A tool's commit: only while the group has no members.
            if consumer
                .describe(&group)
                .is_some_and(|d| d.members.is_empty())
            {
                errors::NONE
            } else {
                fjord_coord::codes::UNKNOWN_MEMBER_ID
            }
        } else {
            consumer.validate_commit(&group, &member, generation)
        }
    } else {
        let mut coord = broker.groups.coordinator();
        let code = coord.validate_commit(&group, &member, instance.as_deref(), generation, now);
        if code == errors::NONE {
            coord.ensure_group(&group);
        }
        code
    };
    let mut response = OffsetCommitResponse::default();
    let mut accepted = Vec::new();
    let mut slots = Vec::new();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let mut tr = OffsetCommitResponseTopic::default();
        tr.name = topic.name.clone();
        for p in &topic.partitions {
            let mut pr = OffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            let leader_epoch = if ctx.version >= 6 {
                p.committed_leader_epoch
            } else {
                -1
            };
            pr.error_code = match check_partition(
                broker,
                group_code,
                &name,
                p.partition_index,
                p.committed_offset,
                leader_epoch,
                p.committed_metadata.as_ref(),
                now,
            ) {
                Ok(c) => {
                    accepted.push((name.clone(), p.partition_index, c));
                    slots.push((response.topics.len(), tr.partitions.len()));
                    errors::NONE
                }
                Err(code) => code,
            };
            tr.partitions.push(pr);
        }
        response.topics.push(tr);
    }
    if !accepted.is_empty() {
        let b = broker.clone();
        let g = group.clone();
        let stored = tokio::task::spawn_blocking(move || b.groups.commit(&b, &g, accepted))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = stored {
            tracing::error!(%group, error = %e, "could not store committed offsets");
            for (t, p) in slots {
                response.topics[t].partitions[p].error_code = errors::KAFKA_STORAGE_ERROR;
            }
        }
    }
    response
}
