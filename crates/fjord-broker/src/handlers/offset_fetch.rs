//! OffsetFetch: committed offsets of one group (v1–7) or several (v8+).

use std::sync::Arc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::{RequestContext, str_bytes, topic_name};
use crate::broker::Broker;

use crate::errors::UNSTABLE_OFFSET_COMMIT;

/// (partition, committed offset, leader epoch, metadata).
type Row = (i32, i64, i32, String);

/// (topic, rows) for the wanted partitions (or all the group has).
fn lookup(
    broker: &Broker,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, Vec<Row>)> {
    let offsets = broker.groups.offsets();
    match wanted {
        Some(topics) => topics
            .into_iter()
            .map(|(t, parts)| {
                let rows = parts
                    .into_iter()
                    .map(|p| match offsets.get(group, &t, p) {
                        Some(c) => (p, c.offset, c.leader_epoch, c.metadata.clone()),
                        None => (p, -1, -1, String::new()),
                    })
                    .collect();
                (t, rows)
            })
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<(i32, i64, i32, String)>> =
                Default::default();
            for ((t, p), c) in offsets.of_group(group) {
                by_topic
                    .entry(t)
                    .or_default()
                    .push((p, c.offset, c.leader_epoch, c.metadata));
            }
            by_topic.into_iter().collect()
        }
    }
}

fn names(topics: Option<Vec<(TopicName, Vec<i32>)>>) -> Option<Vec<(String, Vec<i32>)>> {
    topics.map(|t| t.into_iter().map(|(n, p)| (n.0.to_string(), p)).collect())
}

pub async fn handle(
    broker: &Arc<Broker>,
    request: OffsetFetchRequest,
    ctx: &RequestContext,
) -> OffsetFetchResponse {
    let mut response = OffsetFetchResponse::default();
    let epoch_ok = ctx.version >= 5;
    if ctx.version >= 8 {
        for g in request.groups {
            let wanted = names(g.topics.map(|t| {
                t.into_iter()
                    .map(|x| (x.name, x.partition_indexes))
                    .collect()
            }));
            let mut rg = OffsetFetchResponseGroup::default();
            rg.group_id = g.group_id.clone();
            if let Some(member) = g.member_id.as_ref().filter(|m| !m.is_empty())
                && g.member_epoch >= 0
                && broker.groups.consumer().contains(&g.group_id.0)
            {
                let code =
                    broker
                        .groups
                        .consumer()
                        .validate_commit(&g.group_id.0, member, g.member_epoch);
                if code != crate::errors::NONE {
                    rg.error_code = code;
                    response.groups.push(rg);
                    continue;
                }
            }
            for (t, rows) in lookup(broker, &g.group_id.0, wanted) {
                let mut rt = OffsetFetchResponseTopics::default();
                rt.name = topic_name(&t);
                rt.partitions = rows
                    .into_iter()
                    .map(|(p, o, e, m)| {
                        let mut rp = OffsetFetchResponsePartitions::default();
                        rp.partition_index = p;
                        rp.committed_offset = o;
                        rp.committed_leader_epoch = e;
                        rp.metadata = Some(str_bytes(m));
                        if request.require_stable
                            && broker.groups.has_pending_offset(&g.group_id.0, &t, p)
                        {
                            rp.error_code = UNSTABLE_OFFSET_COMMIT;
                            rp.committed_offset = -1;
                        }
                        rp
                    })
                    .collect();
                rg.topics.push(rt);
            }
            response.groups.push(rg);
        }
        return response;
    }
    let wanted = names(request.topics.map(|t| {
        t.into_iter()
            .map(|x| (x.name, x.partition_indexes))
            .collect()
    }));
    for (t, rows) in lookup(broker, &request.group_id.0, wanted) {
        let mut rt = OffsetFetchResponseTopic::default();
        rt.name = topic_name(&t);
        rt.partitions = rows
            .into_iter()
            .map(|(p, o, e, m)| {
                let mut rp = OffsetFetchResponsePartition::default();
                rp.partition_index = p;
                rp.committed_offset = o;
                if epoch_ok {
                    rp.committed_leader_epoch = e;
                }
                rp.metadata = Some(str_bytes(m));
                // v7 (KIP-447): a consumer that needs stable offsets waits for open
                // transactions that committed offsets for this partition.
                if ctx.version >= 7
                    && request.require_stable
                    && broker.groups.has_pending_offset(&request.group_id.0, &t, p)
                {
                    rp.error_code = UNSTABLE_OFFSET_COMMIT;
                    rp.committed_offset = -1;
                }
                rp
            })
            .collect();
        response.topics.push(rt);
    }
    response
}
