//! OffsetFetch: committed offsets of one group (v1–7) or several (v8+).

use std::collections::BTreeMap;
use std::sync::Arc;

use fjord_coord::offsets::Committed;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::{RequestContext, coordinator, str_bytes, topic_name};
use crate::broker::Broker;
use crate::coordinator::group::ShardState;
use crate::errors::{self, UNSTABLE_OFFSET_COMMIT};

/// (partition, committed offset, leader epoch, metadata, error).
type Row = (i32, i64, i32, String, i16);

/// (topic, rows) for the wanted partitions (or all the group has). With `require_stable`, a
/// partition whose offset an open transaction holds is UNSTABLE_OFFSET_COMMIT (KIP-447).
fn lookup(
    st: Option<&ShardState>,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Vec<(String, Vec<Row>)> {
    let row = |t: &str, p: i32, c: Option<&Committed>| -> Row {
        if require_stable && st.is_some_and(|st| st.has_pending_offset(group, t, p)) {
            return (p, -1, -1, String::new(), UNSTABLE_OFFSET_COMMIT);
        }
        match c {
            Some(c) => (
                p,
                c.offset,
                c.leader_epoch,
                c.metadata.clone(),
                errors::NONE,
            ),
            None => (p, -1, -1, String::new(), errors::NONE),
        }
    };
    match wanted {
        Some(topics) => topics
            .into_iter()
            .map(|(t, parts)| {
                let rows = parts
                    .into_iter()
                    .map(|p| row(&t, p, st.and_then(|st| st.offsets.get(group, &t, p))))
                    .collect();
                (t, rows)
            })
            .collect(),
        None => {
            let mut by_topic: BTreeMap<String, Vec<Row>> = BTreeMap::new();
            for ((t, p), c) in st.map(|st| st.offsets.of_group(group)).unwrap_or_default() {
                let r = row(&t, p, Some(&c));
                by_topic.entry(t).or_default().push(r);
            }
            by_topic.into_iter().collect()
        }
    }
}

fn names(topics: Option<Vec<(TopicName, Vec<i32>)>>) -> Option<Vec<(String, Vec<i32>)>> {
    topics.map(|t| t.into_iter().map(|(n, p)| (n.0.to_string(), p)).collect())
}

/// One group's offsets as its coordinator's committed state has them; for v9+ a member of a
/// consumer-protocol group must give its current epoch.
async fn fetch_group(
    broker: &Arc<Broker>,
    group: String,
    member: Option<(String, i32)>,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Vec<(String, Vec<Row>)>, i16> {
    coordinator(broker, move |b| {
        b.groups.read(&group, |st| {
            if let (Some(st), Some((member, epoch))) = (st, &member)
                && st.consumer.contains(&group)
            {
                let code = st.consumer.validate_commit(&group, member, *epoch);
                if code != errors::NONE {
                    return Err(code);
                }
            }
            Ok(lookup(st, &group, wanted, require_stable))
        })
    })
    .await
    .unwrap_or_else(|e| Err(e.code()))
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
            let member = g
                .member_id
                .as_ref()
                .filter(|m| !m.is_empty() && g.member_epoch >= 0)
                .map(|m| (m.to_string(), g.member_epoch));
            let found = fetch_group(
                broker,
                g.group_id.0.to_string(),
                member,
                wanted,
                request.require_stable,
            )
            .await;
            match found {
                Err(code) => rg.error_code = code,
                Ok(topics) => {
                    for (t, rows) in topics {
                        let mut rt = OffsetFetchResponseTopics::default();
                        rt.name = topic_name(&t);
                        rt.partitions = rows
                            .into_iter()
                            .map(|(p, o, e, m, code)| {
                                let mut rp = OffsetFetchResponsePartitions::default();
                                rp.partition_index = p;
                                rp.committed_offset = o;
                                rp.committed_leader_epoch = e;
                                rp.metadata = Some(str_bytes(m));
                                rp.error_code = code;
                                rp
                            })
                            .collect();
                        rg.topics.push(rt);
                    }
                }
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
    // v7 (KIP-447): a consumer that needs stable offsets waits for open transactions that
    // committed offsets for its partitions.
    let stable = ctx.version >= 7 && request.require_stable;
    let found = fetch_group(
        broker,
        request.group_id.0.to_string(),
        None,
        wanted.clone(),
        stable,
    )
    .await;
    let topics = match found {
        Ok(topics) => topics,
        Err(code) => {
            // v2+ carry the group's error; before, each asked-for partition does.
            response.error_code = code;
            if ctx.version >= 2 {
                return response;
            }
            wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(t, parts)| {
                    let rows = parts
                        .into_iter()
                        .map(|p| (p, -1, -1, String::new(), code))
                        .collect();
                    (t, rows)
                })
                .collect()
        }
    };
    for (t, rows) in topics {
        let mut rt = OffsetFetchResponseTopic::default();
        rt.name = topic_name(&t);
        rt.partitions = rows
            .into_iter()
            .map(|(p, o, e, m, code)| {
                let mut rp = OffsetFetchResponsePartition::default();
                rp.partition_index = p;
                rp.committed_offset = o;
                if epoch_ok {
                    rp.committed_leader_epoch = e;
                }
                rp.metadata = Some(str_bytes(m));
                rp.error_code = code;
                rp
            })
            .collect();
        response.topics.push(rt);
    }
    response
}
