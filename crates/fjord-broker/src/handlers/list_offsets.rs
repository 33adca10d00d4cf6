//! ListOffsets: earliest, latest, by timestamp, max timestamp.

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{RequestContext, check_leader_epoch};
use crate::broker::Broker;
use crate::errors;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// v8+ (KIP-405): the first offset on local disk; without tiered storage, the log start.
const EARLIEST_LOCAL: i64 = -4;
/// v9+ (KIP-1005): the last offset in remote storage; -1 without tiered storage.
const LATEST_TIERED: i64 = -5;

pub async fn handle(
    broker: &Arc<Broker>,
    request: ListOffsetsRequest,
    ctx: &RequestContext,
) -> ListOffsetsResponse {
    let mut response = ListOffsetsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = topic.name.clone();
        for p in topic.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.timestamp = -1;
            pr.offset = -1;
            pr.leader_epoch = -1;
            let Some(partition) = broker.partition(&name, p.partition_index) else {
                pr.error_code = broker.missing_partition_code(&name, p.partition_index);
                tr.partitions.push(pr);
                continue;
            };
            let epoch_error =
                check_leader_epoch(p.current_leader_epoch, partition.log.leader_epoch());
            if epoch_error != errors::NONE {
                pr.error_code = epoch_error;
                tr.partitions.push(pr);
                continue;
            }
            let ts = p.timestamp;
            let version = ctx.version;
            let read_committed = request.isolation_level == 1;
            let held = partition.clone();
            let found = tokio::task::spawn_blocking(move || {
                let log = &partition.log;
                // read_committed sees up to the last stable offset.
                let visible = if read_committed {
                    log.last_stable_offset()
                } else {
                    log.high_watermark()
                };
                match ts {
                    LATEST => Ok(Some((-1, visible))),
                    EARLIEST => Ok(Some((-1, log.log_start_offset()))),
                    EARLIEST_LOCAL if version >= 8 => Ok(Some((-1, log.log_start_offset()))),
                    LATEST_TIERED if version >= 9 => Ok(Some((-1, -1))),
                    MAX_TIMESTAMP => log.max_timestamp_offset().map(|r| {
                        r.filter(|t| t.offset < visible)
                            .map(|t| (t.timestamp, t.offset))
                    }),
                    ts if ts >= 0 => log.offset_for_timestamp(ts).map(|r| {
                        r.filter(|t| t.offset < visible)
                            .map(|t| (t.timestamp, t.offset))
                    }),
                    _ => Ok(None),
                }
            })
            .await;
            match found {
                Ok(Ok(Some((timestamp, offset)))) => {
                    pr.timestamp = timestamp;
                    pr.offset = offset;
                    if ctx.version >= 4 && offset >= 0 {
                        // The epoch of the leader that wrote the record at that offset.
                        pr.leader_epoch = held.log.epoch_at(offset).unwrap_or(-1);
                    }
                }
                Ok(Ok(None)) if p.timestamp < 0 && p.timestamp != MAX_TIMESTAMP => {
                    pr.error_code = errors::INVALID_REQUEST;
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => pr.error_code = errors::from_log_error(&e),
                Err(_) => pr.error_code = errors::UNKNOWN_SERVER_ERROR,
            }
            tr.partitions.push(pr);
        }
        response.topics.push(tr);
    }
    response
}
