//! FindCoordinator: this broker coordinates every group and transactional id (v0–3 one key,
//! v4+ a batch).

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{RequestContext, str_bytes};
use crate::broker::Broker;
use crate::errors;

const GROUP: i8 = 0;
const TRANSACTION: i8 = 1;

fn answer(broker: &Broker, key_type: i8) -> (i16, Option<String>) {
    let ready = match key_type {
        GROUP => broker.ensure_offsets_topic(),
        TRANSACTION => broker.ensure_transaction_topic(),
        other => {
            return (
                errors::INVALID_REQUEST,
                Some(format!("unknown coordinator key type {other}")),
            );
        }
    };
    match ready {
        Ok(_) => (errors::NONE, None),
        Err(e) => (errors::COORDINATOR_NOT_AVAILABLE, Some(e.message)),
    }
}

pub async fn handle(
    broker: &Arc<Broker>,
    request: FindCoordinatorRequest,
    ctx: &RequestContext,
) -> FindCoordinatorResponse {
    let b = broker.clone();
    let key_type = request.key_type;
    let (code, message) = tokio::task::spawn_blocking(move || answer(&b, key_type))
        .await
        .unwrap_or((errors::UNKNOWN_SERVER_ERROR, None));
    let node = BrokerId(if code == errors::NONE {
        broker.config.node_id
    } else {
        -1
    });
    let host = if code == errors::NONE {
        str_bytes(broker.config.advertised_host.clone())
    } else {
        StrBytes::default()
    };
    let port = if code == errors::NONE {
        broker.config.advertised_port
    } else {
        -1
    };
    let mut r = FindCoordinatorResponse::default();
    if ctx.version >= 4 {
        let keys = if request.coordinator_keys.is_empty() {
            vec![request.key.clone()]
        } else {
            request.coordinator_keys
        };
        r.coordinators = keys
            .into_iter()
            .map(|key| {
                let mut c = Coordinator::default();
                c.key = key;
                c.node_id = node;
                c.host = host.clone();
                c.port = port;
                c.error_code = code;
                c.error_message = message.clone().map(str_bytes);
                c
            })
            .collect();
    } else {
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
