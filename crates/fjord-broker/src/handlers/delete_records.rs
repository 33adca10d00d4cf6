//! DeleteRecords: move partitions' log start offsets forward.

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::errors;

/// An offset of -1 means "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

pub async fn handle(
    broker: &Arc<Broker>,
    request: DeleteRecordsRequest,
    _ctx: &RequestContext,
) -> DeleteRecordsResponse {
    let mut response = DeleteRecordsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = topic.name.clone();
        for p in topic.partitions {
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = p.partition_index;
            pr.low_watermark = -1;
            let Some(partition) = broker.partition(&name, p.partition_index) else {
                pr.error_code = broker.missing_partition_code(&name, p.partition_index);
                tr.partitions.push(pr);
                continue;
            };
            let offset = p.offset;
            let done = tokio::task::spawn_blocking(move || {
                let target = if offset == HIGH_WATERMARK {
                    partition.log.high_watermark()
                } else {
                    offset
                };
                partition.log.advance_log_start_offset(target)
            })
            .await;
            match done {
                Ok(Ok(low)) => pr.low_watermark = low,
                Ok(Err(e)) => pr.error_code = errors::from_log_error(&e),
                Err(_) => pr.error_code = errors::UNKNOWN_SERVER_ERROR,
            }
            tr.partitions.push(pr);
        }
        response.topics.push(tr);
    }
    response
}
