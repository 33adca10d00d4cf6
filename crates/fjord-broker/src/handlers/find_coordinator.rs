//! FindCoordinator: the broker that leads a key's partition of `__consumer_offsets` or
//! `__transaction_state` coordinates it (v0–3 one key, v4+ a batch).

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{RequestContext, str_bytes};
use crate::broker::Broker;
use crate::coordinator::group::OFFSETS_TOPIC;
use crate::coordinator::txn::TXN_TOPIC;
use crate::errors;

const GROUP: i8 = 0;
const TRANSACTION: i8 = 1;

/// The coordinator of each key: the leader of the key's partition of the coordinator's
/// internal topic (created on first use), as a registered broker's endpoint.
fn answer(broker: &Broker, key_type: i8, keys: &[String]) -> Vec<Found> {
    let fail = |code, message: String| vec![Err((code, message)); keys.len()];
    let (topic, ready) = match key_type {
        GROUP => (OFFSETS_TOPIC, broker.ensure_offsets_topic()),
        TRANSACTION => (TXN_TOPIC, broker.ensure_transaction_topic()),
        other => {
            return fail(
                errors::INVALID_REQUEST,
                format!("unknown coordinator key type {other}"),
            );
        }
    };
    let partitions = match ready {
        Ok(n) => n,
        Err(e) => return fail(errors::COORDINATOR_NOT_AVAILABLE, e.message),
    };
    let state = broker.metadata();
    keys.iter()
        .map(|key| {
            let partition = fjord_coord::offsets::partition_for(key, partitions);
            let leader = state
                .topic(topic)
                .and_then(|t| t.partition_states.get(partition as usize))
                .map_or(-1, |p| p.leader);
            match state.broker(leader).filter(|b| !b.fenced) {
                Some(b) => Ok((leader, b.host.clone(), b.port)),
                None => Err((
                    errors::COORDINATOR_NOT_AVAILABLE,
                    format!("{topic}-{partition} has no leader that is available"),
                )),
            }
        })
        .collect()
}

type Found = Result<(i32, String, i32), (i16, String)>;

pub async fn handle(
    broker: &Arc<Broker>,
    request: FindCoordinatorRequest,
    ctx: &RequestContext,
) -> FindCoordinatorResponse {
    let keys = if ctx.version >= 4 && !request.coordinator_keys.is_empty() {
        request.coordinator_keys.clone()
    } else {
        vec![request.key.clone()]
    };
    let b = broker.clone();
    let key_type = request.key_type;
    let names: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let found = tokio::task::spawn_blocking(move || answer(&b, key_type, &names))
        .await
        .unwrap_or_else(|_| {
            vec![Err((errors::UNKNOWN_SERVER_ERROR, "lookup failed".into())); keys.len()]
        });
    let parts = |f: &Found| match f {
        Ok((node, host, port)) => (
            errors::NONE,
            None,
            BrokerId(*node),
            str_bytes(host.clone()),
            *port,
        ),
        Err((code, message)) => (
            *code,
            Some(message.clone()),
            BrokerId(-1),
            StrBytes::default(),
            -1,
        ),
    };
    let mut r = FindCoordinatorResponse::default();
    if ctx.version >= 4 {
        r.coordinators = keys
            .into_iter()
            .zip(&found)
            .map(|(key, f)| {
                let (code, message, node, host, port) = parts(f);
                let mut c = Coordinator::default();
                c.key = key;
                c.node_id = node;
                c.host = host;
                c.port = port;
                c.error_code = code;
                c.error_message = message.map(str_bytes);
                c
            })
            .collect();
    } else if let Some(f) = found.first() {
        let (code, message, node, host, port) = parts(f);
        r.error_code = code;
        if ctx.version >= 1 {
            r.error_message = message.map(str_bytes);
        }
        r.node_id = node;
        r.host = host;
        r.port = port;
    }
    r
}
