//! ListGroups: every group, filtered by state (v4+) and type (v5+).

use std::sync::Arc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{RequestContext, coordinator, str_bytes};
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
    let listed = coordinator(broker, |b| {
        let mut classic = Vec::new();
        let mut consumer = Vec::new();
        b.groups.read_all(|st| {
            classic.extend(st.classic.list());
            consumer.extend(st.consumer.list());
        });
        Ok((classic, consumer))
    })
    .await;
    let (classic, consumer) = match listed {
        Ok(listed) => listed,
        Err(e) => {
            r.error_code = e.code();
            return r;
        }
    };
    for (id, protocol_type, state) in classic {
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
    for (id, state) in consumer {
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
