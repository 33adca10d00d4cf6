//! LeaveGroup: one member (v0–2) or a batch with instance ids (v3+).

use std::sync::Arc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::{RequestContext, coordinator};
use crate::broker::Broker;
use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    request: LeaveGroupRequest,
    ctx: &RequestContext,
) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let group = request.group_id.0.to_string();
    let m = members.clone();
    let codes = coordinator(broker, move |b| b.groups.leave(&group, &m, b.now_ms()))
        .await
        .unwrap_or_else(|e| vec![e.code(); members.len()]);
    let mut r = LeaveGroupResponse::default();
    if ctx.version >= 3 {
        r.members = members
            .into_iter()
            .zip(
                codes
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(errors::UNKNOWN_SERVER_ERROR)),
            )
            .map(|((id, instance), code)| {
                let mut mr = MemberResponse::default();
                mr.member_id = super::str_bytes(id);
                mr.group_instance_id = instance.map(super::str_bytes);
                mr.error_code = code;
                mr
            })
            .collect();
    } else {
        r.error_code = codes
            .first()
            .copied()
            .unwrap_or(errors::UNKNOWN_SERVER_ERROR);
    }
    r
}
