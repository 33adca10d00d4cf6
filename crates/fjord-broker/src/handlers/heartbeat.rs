//! Heartbeat: keeps a member's session alive and tells it about rebalances.

use std::sync::Arc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::RequestContext;
use crate::broker::{Broker, now_ms};

pub async fn handle(
    broker: &Arc<Broker>,
    request: HeartbeatRequest,
    _ctx: &RequestContext,
) -> HeartbeatResponse {
    let code = broker.groups.coordinator().heartbeat(
        &request.group_id.0,
        &request.member_id,
        request.group_instance_id.as_deref(),
        request.generation_id,
        now_ms(),
    );
    let mut r = HeartbeatResponse::default();
    r.error_code = code;
    r
}
