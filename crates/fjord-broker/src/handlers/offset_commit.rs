//! OffsetCommit: checked against the group's membership, written durably to
//! `__consumer_offsets`, then visible to OffsetFetch.

use std::sync::Arc;

use fjord_coord::offsets::Committed;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::{RequestContext, coordinator};
use crate::broker::Broker;
use crate::coordinator::group::Committer;
use crate::errors;

/// One partition of an offset commit, as OffsetCommit and TxnOffsetCommit both carry it.
pub(crate) struct PartitionCommit {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// A request's partitions by topic, in request order.
pub(crate) type Commits = Vec<(String, Vec<PartitionCommit>)>;

/// A commit request checked partition by partition: an error code for each partition in
/// request order (grouped by topic), and the accepted offsets to store.
pub(crate) struct Checked {
    pub codes: Vec<Vec<i16>>,
    pub accepted: Vec<(String, i32, Committed)>,
}

impl Checked {
    /// Checks every partition: the group's verdict (`group_code`), then
    /// UNKNOWN_TOPIC_OR_PARTITION or errors::OFFSET_METADATA_TOO_LARGE, else the offset is accepted.
    pub fn new(broker: &Broker, group_code: i16, now: i64, topics: Commits) -> Self {
        let mut checked = Self {
            codes: Vec::new(),
            accepted: Vec::new(),
        };
        let state = broker.metadata();
        for (topic, partitions) in topics {
            let topic_id = state.topic(&topic).map(|t| t.id);
            let mut codes = Vec::with_capacity(partitions.len());
            for p in partitions {
                let metadata = p.metadata.unwrap_or_default();
                let code = if group_code != errors::NONE {
                    group_code
                } else if !broker.has_partition(&topic, p.partition) {
                    errors::UNKNOWN_TOPIC_OR_PARTITION
                } else if metadata.len() > broker.config.offset_metadata_max_bytes {
                    errors::OFFSET_METADATA_TOO_LARGE
                } else {
                    let committed = Committed {
                        offset: p.offset,
                        leader_epoch: p.leader_epoch,
                        metadata,
                        commit_timestamp: now,
                        topic_id: topic_id.map(|id| id.0),
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

    /// Splits off the offsets to store.
    pub fn take_accepted(mut self) -> (Self, Vec<(String, i32, Committed)>) {
        let accepted = std::mem::take(&mut self.accepted);
        (self, accepted)
    }
}

/// Every partition of the request answered with `code` (the coordinator refused it all).
pub(crate) fn all_refused(topics: &Commits, code: i16) -> Vec<Vec<i16>> {
    topics
        .iter()
        .map(|(_, parts)| vec![code; parts.len()])
        .collect()
}

pub async fn handle(
    broker: &Arc<Broker>,
    request: OffsetCommitRequest,
    ctx: &RequestContext,
) -> OffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let now = broker.now_ms();
    let generation = if ctx.version >= 1 {
        request.generation_id_or_member_epoch
    } else {
        -1
    };
    let member = request.member_id.to_string();
    let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
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
                    leader_epoch: if ctx.version >= 6 {
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
    // The group's verdict and the stored offsets come from one step of the group's shard:
    // no membership change slips in between the check and the write.
    let stored = coordinator(broker, move |b| {
        let by = Committer {
            member: &member,
            instance: instance.as_deref(),
            generation,
        };
        b.groups.commit_offsets(&group, by, now, |code| {
            Checked::new(b, code, now, topics).take_accepted()
        })
    })
    .await;
    let codes = match stored {
        Ok(checked) => checked.codes,
        Err(e) => {
            tracing::warn!(error = %e, "offset commit refused by the coordinator");
            refused
                .into_iter()
                .map(|t| vec![e.code(); t.len()])
                .collect()
        }
    };
    let mut response = OffsetCommitResponse::default();
    for (topic, codes) in request.topics.iter().zip(codes) {
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
