//! OffsetDelete: committed offsets of partitions the group no longer consumes.

use std::collections::HashSet;
use std::sync::Arc;

use fjord_coord::codes::{GROUP_ID_NOT_FOUND, GROUP_SUBSCRIBED_TO_TOPIC};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, OffsetDeleteRequest, OffsetDeleteResponse,
};
use kafka_protocol::protocol::Decodable;

use super::{RequestContext, coordinator};
use crate::broker::Broker;
use crate::coordinator::group::ShardState;
use crate::errors;

/// Topics the classic group's consumers subscribe to, from their consumer-protocol metadata.
fn subscribed(st: &ShardState, group: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    for (metadata, _) in st.classic.member_metadata(group) {
        let mut buf = bytes::Bytes::from(metadata);
        if buf.len() < 2 {
            continue;
        }
        let version = i16::from_be_bytes([buf[0], buf[1]]);
        let _ = bytes::Buf::get_i16(&mut buf);
        if let Ok(s) = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)) {
            out.extend(s.topics.iter().map(|t| t.to_string()));
        }
    }
    out
}

/// The answer, and the offsets to delete: those of partitions that exist and that no member
/// of the group subscribes to.
fn decide(
    broker: &Broker,
    st: Option<&ShardState>,
    group: &str,
    request: OffsetDeleteRequest,
) -> (OffsetDeleteResponse, Vec<(String, i32)>) {
    let mut r = OffsetDeleteResponse::default();
    let Some(st) = st.filter(|st| st.knows_group(group)) else {
        r.error_code = GROUP_ID_NOT_FOUND;
        return (r, Vec::new());
    };
    let mut busy = subscribed(st, group);
    busy.extend(st.consumer.subscribed(group));
    let mut delete = Vec::new();
    for t in request.topics {
        let name = t.name.0.to_string();
        let mut rt = OffsetDeleteResponseTopic::default();
        rt.name = t.name.clone();
        for p in t.partitions {
            let mut rp = OffsetDeleteResponsePartition::default();
            rp.partition_index = p.partition_index;
            if busy.contains(&name) {
                rp.error_code = GROUP_SUBSCRIBED_TO_TOPIC;
            } else if !broker.has_partition(&name, p.partition_index) {
                rp.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
            } else {
                delete.push((name.clone(), p.partition_index));
            }
            rt.partitions.push(rp);
        }
        r.topics.push(rt);
    }
    (r, delete)
}

pub async fn handle(
    broker: &Arc<Broker>,
    request: OffsetDeleteRequest,
    _ctx: &RequestContext,
) -> OffsetDeleteResponse {
    let group = request.group_id.0.to_string();
    coordinator(broker, move |b| {
        b.groups
            .delete_offsets(&group, |st| decide(b, st, &group, request))
    })
    .await
    .unwrap_or_else(|e| {
        let mut r = OffsetDeleteResponse::default();
        r.error_code = e.code();
        r
    })
}
