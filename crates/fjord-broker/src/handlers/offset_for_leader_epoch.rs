//! OffsetForLeaderEpoch: where a leader epoch ends, from the partition's leader-epoch cache
//! (Kafka's rule: the largest epoch at or below the one asked for, ended by the next epoch's
//! start or, for the latest, the log end; UNDEFINED for an epoch past the latest).

use std::sync::Arc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{RequestContext, check_leader_epoch};
use crate::broker::Broker;
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
                None => e.error_code = broker.missing_partition_code(&name, p.partition),
                Some(partition) => {
                    let check =
                        check_leader_epoch(p.current_leader_epoch, partition.log.leader_epoch());
                    if check != errors::NONE {
                        e.error_code = check;
                    } else {
                        let (epoch, end) = partition.log.end_offset_for_epoch(p.leader_epoch);
                        e.leader_epoch = epoch;
                        e.end_offset = end;
                    }
                }
            }
            tr.partitions.push(e);
        }
        response.topics.push(tr);
    }
    response
}
