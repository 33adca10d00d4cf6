//! OffsetCommit: checked against the group's membership, written durably to
//! `__consumer_offsets`, then visible to OffsetFetch.

use std::sync::Arc;

use fjord_coord::offsets::Committed;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::{Broker, now_ms};
use crate::errors;

/// OFFSET_METADATA_TOO_LARGE.
const OFFSET_METADATA_TOO_LARGE: i16 = 12;

/// One partition of an offset commit, as OffsetCommit and TxnOffsetCommit both carry it.
pub(crate) struct PartitionCommit<'a> {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<&'a StrBytes>,
}

/// A commit request checked partition by partition: an error code for each partition in
/// request order (grouped by topic), and the accepted offsets to store.
pub(crate) struct Checked {
    pub codes: Vec<Vec<i16>>,
    pub accepted: Vec<(String, i32, Committed)>,
    /// Where each accepted offset's code is in `codes`.
    positions: Vec<(usize, usize)>,
}

impl Checked {
    /// Checks every partition: the group's verdict (`group_code`), then
    /// UNKNOWN_TOPIC_OR_PARTITION or OFFSET_METADATA_TOO_LARGE, else the offset is accepted.
    pub fn new<'a>(
        broker: &Broker,
        group_code: i16,
        now: i64,
        topics: impl IntoIterator<Item = (String, Vec<PartitionCommit<'a>>)>,
    ) -> Self {
        let mut checked = Self {
            codes: Vec::new(),
            accepted: Vec::new(),
            positions: Vec::new(),
        };
        for (topic, partitions) in topics {
            let mut codes = Vec::with_capacity(partitions.len());
            for p in partitions {
                let metadata = p.metadata.map(|m| m.to_string()).unwrap_or_default();
                let code = if group_code != errors::NONE {
                    group_code
                } else if broker.partition(&topic, p.partition).is_none() {
                    errors::UNKNOWN_TOPIC_OR_PARTITION
                } else if metadata.len() > broker.config.offset_metadata_max_bytes {
                    OFFSET_METADATA_TOO_LARGE
                } else {
                    checked.positions.push((checked.codes.len(), codes.len()));
                    let committed = Committed {
                        offset: p.offset,
                        leader_epoch: p.leader_epoch,
                        metadata,
                        commit_timestamp: now,
                    };
                    checked
                        .accepted
                        .push((topic.clone(), p.partition, committed));
                    errors::NONE
                };
                codes.push(code);
            }
            checked.codes.push(codes);
        }
        checked
    }

    /// Gives every accepted partition `code`: storing them failed.
    pub fn refuse_accepted(&mut self, code: i16) {
        for &(t, p) in &self.positions {
            self.codes[t][p] = code;
        }
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
    let topics = request.topics.iter().map(|t| {
        let partitions = t
            .partitions
            .iter()
            .map(|p| PartitionCommit {
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if ctx.version >= 6 {
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
        let g = group.clone();
        let stored = tokio::task::spawn_blocking(move || b.groups.commit(&b, &g, accepted))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = stored {
            tracing::error!(%group, error = %e, "could not store committed offsets");
            checked.refuse_accepted(errors::KAFKA_STORAGE_ERROR);
        }
    }
    let mut response = OffsetCommitResponse::default();
    for (topic, codes) in request.topics.iter().zip(checked.codes) {
        let mut tr = OffsetCommitResponseTopic::default();
        tr.name = topic.name.clone();
        for (p, code) in topic.partitions.iter().zip(codes) {
            let mut pr = OffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = code;
            tr.partitions.push(pr);
        }
        response.topics.push(tr);
    }
    response
}
