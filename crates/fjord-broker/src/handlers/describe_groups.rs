//! DescribeGroups: state, protocol and members with their metadata and assignments.

use std::sync::Arc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{NOT_REQUESTED, RequestContext, str_bytes};
use crate::broker::Broker;

/// READ, DELETE, DESCRIBE on a group (no authorizer yet: all allowed).
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

pub async fn handle(
    broker: &Arc<Broker>,
    request: DescribeGroupsRequest,
    _ctx: &RequestContext,
) -> DescribeGroupsResponse {
    let mut r = DescribeGroupsResponse::default();
    for id in request.groups {
        let mut g = DescribedGroup::default();
        g.group_id = id.clone();
        g.authorized_operations = if request.include_authorized_operations {
            GROUP_OPERATIONS
        } else {
            NOT_REQUESTED
        };
        let consumer = broker.groups.consumer().describe(&id.0);
        if let Some(d) = consumer {
            // A consumer-protocol group, described in classic terms.
            g.group_state = str_bytes(d.state);
            g.protocol_type = str_bytes("consumer");
            g.protocol_data = str_bytes(d.assignor);
            g.members = d
                .members
                .into_iter()
                .map(|m| {
                    let mut dm = DescribedGroupMember::default();
                    dm.member_id = str_bytes(m.member_id);
                    dm.group_instance_id = m.instance_id.map(str_bytes);
                    dm.client_id = str_bytes(m.client_id);
                    dm.client_host = str_bytes(m.client_host);
                    dm
                })
                .collect();
            r.groups.push(g);
            continue;
        }
        match broker.groups.coordinator().describe(&id.0) {
            // Kafka answers an unknown group as a dead one (no error before v6).
            None => g.group_state = str_bytes("Dead"),
            Some(d) => {
                g.group_state = str_bytes(d.state.name());
                g.protocol_type = str_bytes(d.protocol_type);
                g.protocol_data = str_bytes(d.protocol_name.clone());
                // Like Kafka, metadata and assignments only for a stable group.
                let stable = d.state == fjord_coord::group::State::Stable;
                g.members = d
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut dm = DescribedGroupMember::default();
                        dm.member_id = str_bytes(m.member_id);
                        dm.group_instance_id = m.group_instance_id.map(str_bytes);
                        dm.client_id = str_bytes(m.client_id);
                        dm.client_host = str_bytes(m.client_host);
                        if stable {
                            dm.member_metadata = m
                                .protocols
                                .iter()
                                .find(|(p, _)| *p == d.protocol_name)
                                .map(|(_, md)| md.clone())
                                .unwrap_or_default()
                                .into();
                            dm.member_assignment = m.assignment.into();
                        }
                        dm
                    })
                    .collect();
            }
        }
        r.groups.push(g);
    }
    r
}
