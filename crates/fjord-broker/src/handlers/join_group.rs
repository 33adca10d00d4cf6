//! JoinGroup: parked until the group's join phase completes.

use std::sync::Arc;

use fjord_coord::group::JoinRequest;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::{RequestContext, str_bytes};
use crate::broker::{Broker, now_ms};
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
    let consumer_busy = broker
        .groups
        .consumer()
        .describe(&req.group_id)
        .is_some_and(|d| !d.members.is_empty());
    if consumer_busy {
        let mut r = JoinGroupResponse::default();
        r.error_code = fjord_coord::codes::INCONSISTENT_GROUP_PROTOCOL;
        r.generation_id = -1;
        r.member_id = request.member_id.clone();
        if ctx.version < 7 {
            r.protocol_name = Some(Default::default());
        }
        return r;
    }
    let (token, rx) = broker.groups.park_join();
    let b = broker.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let effects = b.groups.coordinator().join(req, token, now_ms());
        b.groups.apply(&b, effects);
    })
    .await;
    let joined = rx
        .await
        .unwrap_or_else(|_| fjord_coord::group::JoinResponse {
            error: errors::UNKNOWN_SERVER_ERROR,
            generation_id: -1,
            ..Default::default()
        });
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
