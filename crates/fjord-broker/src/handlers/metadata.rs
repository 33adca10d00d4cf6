//! Metadata: brokers, topics and partitions; auto-creates topics when allowed.

use std::sync::Arc;

use fjord_meta::{TopicId, TopicMeta, validate_topic_name};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};

use super::{
    CLUSTER_OPERATIONS, NOT_REQUESTED, RequestContext, TOPIC_OPERATIONS, str_bytes, topic_name,
};
use crate::broker::Broker;
use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    request: MetadataRequest,
    ctx: &RequestContext,
) -> MetadataResponse {
    let mut response = MetadataResponse::default();
    let state = broker.metadata();
    // Fenced brokers are not listed (Kafka lists the alive ones).
    response.brokers = state
        .brokers()
        .filter(|b| !b.fenced)
        .map(|registered| {
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(registered.id);
            b.host = str_bytes(registered.host.clone());
            b.port = registered.port;
            b.rack = registered.rack.clone().map(str_bytes);
            b
        })
        .collect();
    response.cluster_id = Some(str_bytes(broker.cluster_id.clone()));
    response.controller_id = BrokerId(broker.controller_id());
    response.cluster_authorized_operations = if request.include_cluster_authorized_operations {
        CLUSTER_OPERATIONS
    } else {
        NOT_REQUESTED
    };
    let include_ops = request.include_topic_authorized_operations;
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let wanted = match request.topics {
        None => None,
        Some(t) if t.is_empty() && ctx.version == 0 => None,
        Some(t) => Some(t),
    };
    let allow_auto_create =
        broker.config.auto_create_topics && (ctx.version < 4 || request.allow_auto_topic_creation);
    match wanted {
        None => {
            for t in state.topics() {
                response
                    .topics
                    .push(describe(t, include_ops, &broker.metadata()));
            }
        }
        Some(requested) => {
            for rt in requested {
                // A topic asked for by id (v12+) is looked up by id, whatever its name field
                // holds: the Java client leaves it empty rather than null (Kafka does the same).
                let by_name = if rt.topic_id.is_nil() {
                    rt.name.as_ref()
                } else {
                    None
                };
                let topic = match by_name {
                    Some(name) => {
                        let name = name.0.to_string();
                        match broker.metadata().topic(&name).cloned() {
                            Some(t) => Ok(t),
                            None => Err((Some(name), rt.topic_id)),
                        }
                    }
                    None => match broker
                        .metadata()
                        .topic_by_id(&TopicId(rt.topic_id.into_bytes()))
                        .cloned()
                    {
                        Some(t) => Ok(t),
                        None => Err((None, rt.topic_id)),
                    },
                };
                match topic {
                    Ok(t) => response
                        .topics
                        .push(describe(&t, include_ops, &broker.metadata())),
                    Err((None, id)) => {
                        let mut e = MetadataResponseTopic::default();
                        e.error_code = errors::UNKNOWN_TOPIC_ID;
                        e.topic_id = id;
                        e.topic_authorized_operations = NOT_REQUESTED;
                        response.topics.push(e);
                    }
                    Err((Some(name), _)) => response
                        .topics
                        .push(missing(broker, name, allow_auto_create, include_ops).await),
                }
            }
        }
    }
    response
}

async fn missing(
    broker: &Arc<Broker>,
    name: String,
    auto_create: bool,
    include_ops: bool,
) -> MetadataResponseTopic {
    let mut e = MetadataResponseTopic::default();
    e.name = Some(topic_name(&name));
    e.topic_authorized_operations = NOT_REQUESTED;
    if validate_topic_name(&name).is_err() {
        e.error_code = errors::INVALID_TOPIC_EXCEPTION;
        return e;
    }
    if !auto_create {
        e.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
        return e;
    }
    let b = broker.clone();
    let n = name.clone();
    let created = tokio::task::spawn_blocking(move || {
        b.create_topic(
            fjord_meta::NewTopic {
                name: n,
                partitions: -1,
                replication_factor: -1,
                ..Default::default()
            },
            false,
        )
    })
    .await;
    match created {
        Ok(Ok(t)) => describe(&t, include_ops, &broker.metadata()),
        // Someone else created it first: describe what is there.
        Ok(Err(err)) if err.code == errors::TOPIC_ALREADY_EXISTS => {
            match broker.metadata().topic(&name) {
                Some(t) => describe(t, include_ops, &broker.metadata()),
                None => {
                    e.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
                    e
                }
            }
        }
        Ok(Err(err)) => {
            tracing::warn!(topic = %name, error = %err.message, "auto topic creation failed");
            e.error_code = err.code;
            e
        }
        Err(_) => {
            e.error_code = errors::UNKNOWN_SERVER_ERROR;
            e
        }
    }
}

fn describe(
    t: &TopicMeta,
    include_ops: bool,
    state: &fjord_meta::MetadataState,
) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.name = Some(topic_name(&t.name));
    out.topic_id = uuid::Uuid::from_bytes(t.id.0);
    out.is_internal = t.name.starts_with("__");
    out.topic_authorized_operations = if include_ops {
        TOPIC_OPERATIONS
    } else {
        NOT_REQUESTED
    };
    out.partitions = (0..t.partitions)
        .filter_map(|i| {
            let placed = super::Placement::of(state, t, i)?;
            let mut p = MetadataResponsePartition::default();
            p.partition_index = i;
            p.error_code = placed.error_code;
            p.leader_id = placed.leader;
            p.leader_epoch = placed.leader_epoch;
            p.replica_nodes = placed.replicas;
            p.isr_nodes = placed.isr;
            p.offline_replicas = placed.offline;
            Some(p)
        })
        .collect();
    out
}
