//! OffsetForLeaderEpoch: where a leader epoch ends. A single node has had one epoch (0) since
//! the log began, so epoch 0 ends at the log end offset and later epochs are unknown.

use std::sync::Arc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{RequestContext, check_leader_epoch};
use crate::broker::{Broker, LEADER_EPOCH};
use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    request: OffsetForLeaderEpochRequest,
    _ctx: &RequestContext,
) -> OffsetForLeaderEpochResponse {
    let mut response = OffsetForLeaderEpochResponse::default();
    for topic in request.topics {
        let name = topic.topic.0.to_string();
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = topic.topic.clone();
        for p in topic.partitions {
            let mut e = EpochEndOffset::default();
            e.partition = p.partition;
            e.leader_epoch = -1;
            e.end_offset = -1;
            match broker.partition(&name, p.partition) {
                None => e.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION,
                Some(partition) => {
                    let check = check_leader_epoch(p.current_leader_epoch);
                    if check != errors::NONE {
                        e.error_code = check;
                    } else if p.leader_epoch <= LEADER_EPOCH && p.leader_epoch >= 0 {
                        // Epoch 0 is the only one, so any epoch up to it ends at the log end.
                        e.leader_epoch = LEADER_EPOCH;
                        e.end_offset = partition.log.log_end_offset();
                    }
                    // A later epoch is unknown here: UNDEFINED (-1, -1), as Kafka answers.
                }
            }
            tr.partitions.push(e);
        }
        response.topics.push(tr);
    }
    response
}
