//! DescribeGroups: state, protocol and members with their metadata and assignments.

use std::sync::Arc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{GROUP_OPERATIONS, NOT_REQUESTED, RequestContext, coordinator, str_bytes};
use crate::broker::Broker;
use fjord_coord::codes::GROUP_ID_NOT_FOUND;

fn member(
    id: String,
    instance: Option<String>,
    client_id: String,
    client_host: String,
) -> DescribedGroupMember {
    let mut dm = DescribedGroupMember::default();
    dm.member_id = str_bytes(id);
    dm.group_instance_id = instance.map(str_bytes);
    dm.client_id = str_bytes(client_id);
    dm.client_host = str_bytes(client_host);
    dm
}

pub async fn handle(
    broker: &Arc<Broker>,
    request: DescribeGroupsRequest,
    ctx: &RequestContext,
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
        // Kafka 4 describes only classic groups here: a consumer-protocol (KIP-848) group is
        // answered as a dead one, with GROUP_ID_NOT_FOUND from v6 on; clients describe it
        // with ConsumerGroupDescribe.
        let gid = id.0.to_string();
        let found = coordinator(broker, move |b| {
            b.groups.read(&gid, |st| {
                let Some(st) = st else {
                    return Ok(None);
                };
                if st.consumer.contains(&gid) {
                    return Err(());
                }
                Ok(st.classic.describe(&gid))
            })
        })
        .await;
        let found = match found {
            Err(e) => {
                g.error_code = e.code();
                g.group_state = str_bytes("Dead");
                r.groups.push(g);
                continue;
            }
            Ok(found) => found,
        };
        if found.is_err() {
            g.group_state = str_bytes("Dead");
            if ctx.version >= 6 {
                g.error_code = GROUP_ID_NOT_FOUND;
                g.error_message =
                    Some(str_bytes(format!("Group {} is not a classic group.", id.0)));
            }
            r.groups.push(g);
            continue;
        }
        match found.ok().flatten() {
            // Kafka answers an unknown group as a dead one, with GROUP_ID_NOT_FOUND from v6
            // on (KIP-1043).
            None => {
                g.group_state = str_bytes("Dead");
                if ctx.version >= 6 {
                    g.error_code = GROUP_ID_NOT_FOUND;
                    g.error_message = Some(str_bytes(format!("Group {} not found.", id.0)));
                }
            }
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
                        let mut dm =
                            member(m.member_id, m.group_instance_id, m.client_id, m.client_host);
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
