//! DescribeTransactions: the coordinator's view of transactional ids.

use std::sync::Arc;

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId,
};

use super::{RequestContext, str_bytes, topic_name};
use crate::broker::Broker;
use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    request: DescribeTransactionsRequest,
    _ctx: &RequestContext,
) -> DescribeTransactionsResponse {
    let mut r = DescribeTransactionsResponse::default();
    for id in request.transactional_ids {
        let mut s = TransactionState::default();
        s.transactional_id = id.clone();
        let found = {
            let b = broker.clone();
            let id = id.0.to_string();
            tokio::task::spawn_blocking(move || b.txns.describe(&id))
                .await
                .unwrap_or_else(|e| Err((errors::UNKNOWN_SERVER_ERROR, e.to_string())))
        };
        let found = match found {
            Ok(found) => found,
            Err((code, _)) => {
                s.error_code = code;
                s.transaction_state = str_bytes("");
                s.producer_id = ProducerId(-1);
                s.producer_epoch = -1;
                s.transaction_start_time_ms = -1;
                r.transaction_states.push(s);
                continue;
            }
        };
        match found {
            None => {
                s.error_code = errors::TRANSACTIONAL_ID_NOT_FOUND;
                s.transaction_state = str_bytes("");
                s.producer_id = ProducerId(-1);
                s.producer_epoch = -1;
                s.transaction_start_time_ms = -1;
            }
            Some(m) => {
                s.transaction_state = str_bytes(m.state.name());
                s.transaction_timeout_ms = m.timeout_ms;
                s.transaction_start_time_ms = m.txn_start_ms;
                s.producer_id = ProducerId(m.producer_id);
                s.producer_epoch = m.producer_epoch;
                s.topics = m
                    .partitions
                    .iter()
                    .map(|(t, ps)| {
                        let mut d = TopicData::default();
                        d.topic = topic_name(t);
                        d.partitions = ps.iter().copied().collect();
                        d
                    })
                    .collect();
            }
        }
        r.transaction_states.push(s);
    }
    r
}
