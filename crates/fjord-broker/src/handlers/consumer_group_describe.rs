//! ConsumerGroupDescribe (KIP-848): epochs, assignor, members with their assignments and
//! targets.

use std::sync::Arc;

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse};

use super::{GROUP_OPERATIONS, NOT_REQUESTED, RequestContext, coordinator, str_bytes, topic_name};
use crate::broker::Broker;

fn assignment(broker: &Broker, parts: &[(String, i32)]) -> Assignment {
    let state = broker.metadata();
    let mut by_topic: std::collections::BTreeMap<&String, Vec<i32>> = Default::default();
    for (t, p) in parts {
        by_topic.entry(t).or_default().push(*p);
    }
    let mut a = Assignment::default();
    a.topic_partitions = by_topic
        .into_iter()
        .filter_map(|(t, ps)| {
            let meta = state.topic(t)?;
            let mut tp = TopicPartitions::default();
            tp.topic_id = uuid::Uuid::from_bytes(meta.id.0);
            tp.topic_name = topic_name(t);
            tp.partitions = ps;
            Some(tp)
        })
        .collect();
    a
}

pub async fn handle(
    broker: &Arc<Broker>,
    request: ConsumerGroupDescribeRequest,
    ctx: &RequestContext,
) -> ConsumerGroupDescribeResponse {
    let mut r = ConsumerGroupDescribeResponse::default();
    for id in request.group_ids {
        let mut g = DescribedGroup::default();
        g.group_id = id.clone();
        g.authorized_operations = if request.include_authorized_operations {
            GROUP_OPERATIONS
        } else {
            NOT_REQUESTED
        };
        let gid = id.0.to_string();
        let found = coordinator(broker, move |b| {
            b.groups.read(&gid, |st| match st {
                None => (None, false),
                Some(st) => (
                    st.consumer.describe(&gid),
                    st.classic.describe(&gid).is_some(),
                ),
            })
        })
        .await;
        let (described, classic) = match found {
            Ok(found) => found,
            Err(e) => {
                g.error_code = e.code();
                g.error_message = Some(str_bytes(e.to_string()));
                r.groups.push(g);
                continue;
            }
        };
        match described {
            None => {
                g.error_code = fjord_coord::codes::GROUP_ID_NOT_FOUND;
                // Kafka's wording: a classic group, or none at all.
                let message = if classic {
                    format!("Group {} is not a consumer group.", id.0)
                } else {
                    format!("Group {} not found.", id.0)
                };
                g.error_message = Some(str_bytes(message));
            }
            Some(d) => {
                g.group_state = str_bytes(d.state);
                g.group_epoch = d.group_epoch;
                g.assignment_epoch = d.assignment_epoch;
                g.assignor_name = str_bytes(d.assignor);
                g.members = d
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut dm = Member::default();
                        dm.member_id = str_bytes(m.member_id);
                        dm.instance_id = m.instance_id.map(str_bytes);
                        dm.rack_id = m.rack_id.map(str_bytes);
                        dm.member_epoch = m.member_epoch;
                        dm.client_id = str_bytes(m.client_id);
                        dm.client_host = str_bytes(m.client_host);
                        dm.subscribed_topic_names = m
                            .subscribed_topic_names
                            .iter()
                            .map(|t| topic_name(t))
                            .collect();
                        dm.subscribed_topic_regex = m.subscribed_topic_regex.map(str_bytes);
                        dm.assignment = assignment(broker, &m.assignment);
                        dm.target_assignment = assignment(broker, &m.target_assignment);
                        if ctx.version >= 1 {
                            dm.member_type = 1; // a consumer-protocol member
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
