//! SyncGroup: members wait for the leader's assignments.

use std::sync::Arc;

use fjord_coord::group::{SyncRequest, SyncResponse};
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::{RequestContext, coordinator, str_bytes};
use crate::broker::Broker;
use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    request: SyncGroupRequest,
    ctx: &RequestContext,
) -> SyncGroupResponse {
    let req = SyncRequest {
        group_id: request.group_id.0.to_string(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        protocol_type: request.protocol_type.as_ref().map(|s| s.to_string()),
        protocol_name: request.protocol_name.as_ref().map(|s| s.to_string()),
        assignments: request
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.to_vec()))
            .collect(),
    };
    let failed = |error| SyncResponse {
        error,
        ..SyncResponse::default()
    };
    let synced = match coordinator(broker, move |b| b.groups.sync(req, b.now_ms())).await {
        Ok(rx) => rx.await.unwrap_or_else(|_| failed(errors::NOT_COORDINATOR)),
        Err(e) => failed(e.code()),
    };
    let mut r = SyncGroupResponse::default();
    r.error_code = synced.error;
    if ctx.version >= 5 {
        r.protocol_type = synced.protocol_type.map(str_bytes);
        r.protocol_name = synced.protocol_name.map(str_bytes);
    }
    r.assignment = synced.assignment.into();
    r
}
