//! DescribeProducers: the idempotent and transactional producers a partition knows.

use std::sync::Arc;

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::{RequestContext, str_bytes};
use crate::broker::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    request: DescribeProducersRequest,
    _ctx: &RequestContext,
) -> DescribeProducersResponse {
    let mut r = DescribeProducersResponse::default();
    for t in request.topics {
        let mut tr = TopicResponse::default();
        tr.name = t.name.clone();
        for index in t.partition_indexes {
            let mut pr = PartitionResponse::default();
            pr.partition_index = index;
            match broker.partition(&t.name.0, index) {
                None => {
                    pr.error_code = broker.missing_partition_code(&t.name.0, index);
                    pr.error_message = Some(str_bytes(format!(
                        "this server does not host {}-{index}",
                        &*t.name.0
                    )));
                }
                Some(p) => {
                    pr.active_producers = p
                        .log
                        .producers()
                        .into_iter()
                        .map(|e| {
                            let mut s = ProducerState::default();
                            s.producer_id = ProducerId(e.producer_id);
                            s.producer_epoch = i32::from(e.epoch);
                            s.last_sequence = e.last_sequence();
                            s.last_timestamp = e.last_timestamp;
                            s.coordinator_epoch = e.coordinator_epoch;
                            s.current_txn_start_offset = e.txn_first_offset.unwrap_or(-1);
                            s
                        })
                        .collect();
                }
            }
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}
