//! JoinGroup: parked until the group's join phase completes.

use std::sync::Arc;

use fjord_coord::group::{JoinRequest, JoinResponse};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::{RequestContext, coordinator, str_bytes};
use crate::broker::Broker;
use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    request: JoinGroupRequest,
    ctx: &RequestContext,
) -> JoinGroupResponse {
    let req = JoinRequest {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: ctx.client_id.clone(),
        client_host: ctx.client_host.clone(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if ctx.version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.to_vec()))
            .collect(),
        require_known_member_id: ctx.version >= 4,
        reason: request.reason.as_ref().map(|s| s.to_string()),
    };
    let failed = |error| JoinResponse {
        error,
        generation_id: -1,
        member_id: request.member_id.to_string(),
        ..JoinResponse::default()
    };
    // Parked until the join phase completes; a coordinator that failed or moved meanwhile
    // answers NOT_COORDINATOR, and the client finds it again.
    let joined = match coordinator(broker, move |b| b.groups.join(req, b.now_ms())).await {
        Ok(rx) => rx.await.unwrap_or_else(|_| failed(errors::NOT_COORDINATOR)),
        Err(e) => failed(e.code()),
    };
    let mut r = JoinGroupResponse::default();
    r.error_code = joined.error;
    r.generation_id = joined.generation_id;
    if ctx.version >= 7 {
        r.protocol_type = joined.protocol_type.map(str_bytes);
    }
    r.protocol_name = joined
        .protocol_name
        .map(str_bytes)
        .or_else(|| (ctx.version < 7).then(Default::default));
    r.leader = str_bytes(joined.leader);
    r.member_id = str_bytes(joined.member_id);
    r.members = joined
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = str_bytes(id);
            if ctx.version >= 5 {
                m.group_instance_id = instance.map(str_bytes);
            }
            m.metadata = metadata.into();
            m
        })
        .collect();
    r
}
