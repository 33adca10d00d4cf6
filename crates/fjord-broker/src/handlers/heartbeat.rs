//! Heartbeat: keeps a member's session alive and tells it about rebalances.

use std::sync::Arc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::{RequestContext, coordinator};
use crate::broker::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    request: HeartbeatRequest,
    _ctx: &RequestContext,
) -> HeartbeatResponse {
    let code = coordinator(broker, move |b| {
        b.groups.heartbeat(
            &request.group_id.0,
            &request.member_id,
            request.group_instance_id.as_deref(),
            request.generation_id,
            b.now_ms(),
        )
    })
    .await
    .unwrap_or_else(|e| e.code());
    let mut r = HeartbeatResponse::default();
    r.error_code = code;
    r
}
