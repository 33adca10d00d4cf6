//! ListGroups: every group, filtered by state (v4+) and type (v5+).

use std::sync::Arc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{RequestContext, str_bytes};
use crate::broker::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    request: ListGroupsRequest,
    ctx: &RequestContext,
) -> ListGroupsResponse {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let mut r = ListGroupsResponse::default();
    for (id, protocol_type, state) in broker.groups.coordinator().list() {
        if !states.is_empty() && !states.contains(&state.name().to_lowercase()) {
            continue;
        }
        if !types.is_empty() && !types.iter().any(|t| t == "classic") {
            continue;
        }
        let mut g = ListedGroup::default();
        g.group_id = GroupId(str_bytes(id));
        g.protocol_type = str_bytes(protocol_type);
        if ctx.version >= 4 {
            g.group_state = str_bytes(state.name());
        }
        if ctx.version >= 5 {
            g.group_type = str_bytes("classic");
        }
        r.groups.push(g);
    }
    for (id, state) in broker.groups.consumer().list() {
        if !states.is_empty() && !states.contains(&state.to_lowercase()) {
            continue;
        }
        if !types.is_empty() && !types.iter().any(|t| t == "consumer") {
            continue;
        }
        let mut g = ListedGroup::default();
        g.group_id = GroupId(str_bytes(id));
        g.protocol_type = str_bytes("consumer");
        if ctx.version >= 4 {
            g.group_state = str_bytes(state);
        }
        if ctx.version >= 5 {
            g.group_type = str_bytes("consumer");
        }
        r.groups.push(g);
    }
    r
}
