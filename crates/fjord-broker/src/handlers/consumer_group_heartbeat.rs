//! ConsumerGroupHeartbeat (KIP-848): joins, reconciles and keeps alive members of consumer
//! groups whose assignments the broker computes.

use std::collections::BTreeMap;
use std::sync::Arc;

use fjord_coord::consumer::HeartbeatRequest;
use fjord_meta::TopicId;
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};

use super::{RequestContext, coordinator, str_bytes};
use crate::broker::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    request: ConsumerGroupHeartbeatRequest,
    ctx: &RequestContext,
) -> ConsumerGroupHeartbeatResponse {
    let state = broker.metadata();
    let group = request.group_id.0.to_string();
    let mut response = ConsumerGroupHeartbeatResponse::default();
    response.member_epoch = -1;
    let topics: BTreeMap<String, i32> = state
        .topics()
        .filter(|t| !t.name.starts_with("__"))
        .map(|t| (t.name.clone(), t.partitions))
        .collect();
    let owned = request.topic_partitions.as_ref().map(|tps| {
        tps.iter()
            .filter_map(|tp| {
                state
                    .topic_by_id(&TopicId(tp.topic_id.into_bytes()))
                    .map(|t| (t.name.clone(), tp))
            })
            .flat_map(|(name, tp)| tp.partitions.iter().map(move |p| (name.clone(), *p)))
            .collect()
    });
    let req = HeartbeatRequest {
        group_id: group.clone(),
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.as_ref().map(|s| s.to_string()),
        rack_id: request.rack_id.as_ref().map(|s| s.to_string()),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: request
            .subscribed_topic_names
            .as_ref()
            .map(|v| v.iter().map(|t| t.0.to_string()).collect()),
        subscribed_topic_regex: request
            .subscribed_topic_regex
            .as_ref()
            .map(|s| s.to_string()),
        server_assignor: request.server_assignor.as_ref().map(|s| s.to_string()),
        owned,
        client_id: ctx.client_id.clone(),
        client_host: ctx.client_host.clone(),
        server_generates_id: ctx.version == 0,
    };
    let r = match coordinator(broker, move |b| {
        b.groups.consumer_heartbeat(req, &topics, b.now_ms())
    })
    .await
    {
        Ok(r) => r,
        Err(e) => {
            response.error_code = e.code();
            response.error_message = Some(str_bytes(e.to_string()));
            return response;
        }
    };
    response.error_code = r.error;
    response.error_message = r.message.map(str_bytes);
    response.member_id = Some(str_bytes(r.member_id));
    response.member_epoch = r.member_epoch;
    response.heartbeat_interval_ms = r.heartbeat_interval_ms;
    response.assignment = r.assignment.map(|parts| {
        let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (t, p) in parts {
            by_topic.entry(t).or_default().push(p);
        }
        let mut a = Assignment::default();
        a.topic_partitions = by_topic
            .into_iter()
            .filter_map(|(t, ps)| {
                let meta = state.topic(&t)?;
                let mut tp = TopicPartitions::default();
                tp.topic_id = uuid::Uuid::from_bytes(meta.id.0);
                tp.partitions = ps;
                Some(tp)
            })
            .collect();
        a
    });
    response
}
