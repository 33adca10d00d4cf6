//! SyncGroup: members wait for the leader's assignments.

use std::sync::Arc;

use fjord_coord::group::SyncRequest;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::{RequestContext, str_bytes};
use crate::broker::{Broker, now_ms};
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
    let (token, rx) = broker.groups.park_sync();
    let b = broker.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let effects = b.groups.coordinator().sync(req, token, now_ms());
        b.groups.apply(&b, effects);
    })
    .await;
    let synced = rx
        .await
        .unwrap_or_else(|_| fjord_coord::group::SyncResponse {
            error: errors::UNKNOWN_SERVER_ERROR,
            ..Default::default()
        });
    let mut r = SyncGroupResponse::default();
    r.error_code = synced.error;
    if ctx.version >= 5 {
        r.protocol_type = synced.protocol_type.map(str_bytes);
        r.protocol_name = synced.protocol_name.map(str_bytes);
    }
    r.assignment = synced.assignment.into();
    r
}
