//! ListTransactions: transactional ids by state, producer id, duration (v1) and id pattern
//! (v2, a regular expression).

use std::sync::Arc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{ListTransactionsRequest, ListTransactionsResponse, ProducerId};

use super::{RequestContext, str_bytes};
use crate::broker::Broker;
use crate::errors;

const STATES: [&str; 7] = [
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
    "Dead",
];

pub async fn handle(
    broker: &Arc<Broker>,
    request: ListTransactionsRequest,
    ctx: &RequestContext,
) -> ListTransactionsResponse {
    let mut r = ListTransactionsResponse::default();
    let states: Vec<String> = request
        .state_filters
        .iter()
        .map(|s| s.to_string())
        .collect();
    r.unknown_state_filters = request
        .state_filters
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let pattern = match request
        .transactional_id_pattern
        .as_ref()
        .filter(|p| ctx.version >= 2 && !p.is_empty())
        .map(|p| regex::Regex::new(&format!("^(?:{})$", p.as_str())))
        .transpose()
    {
        Ok(p) => p,
        Err(_) => {
            r.error_code = errors::INVALID_REQUEST;
            return r;
        }
    };
    let duration = if ctx.version >= 1 {
        request.duration_filter
    } else {
        -1
    };
    let now = broker.now_ms();
    for m in broker.txns.list() {
        let state = m.state.name();
        if !states.is_empty() && !states.iter().any(|s| s == state) {
            continue;
        }
        if !request.producer_id_filters.is_empty()
            && !request
                .producer_id_filters
                .contains(&ProducerId(m.producer_id))
        {
            continue;
        }
        if duration >= 0 && (m.txn_start_ms < 0 || now - m.txn_start_ms < duration) {
            continue;
        }
        if pattern
            .as_ref()
            .is_some_and(|p| !p.is_match(&m.transactional_id))
        {
            continue;
        }
        let mut s = TransactionState::default();
        s.transactional_id =
            kafka_protocol::messages::TransactionalId(str_bytes(m.transactional_id.clone()));
        s.producer_id = ProducerId(m.producer_id);
        s.transaction_state = str_bytes(state);
        r.transaction_states.push(s);
    }
    r
}
