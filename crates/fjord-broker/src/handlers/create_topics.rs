//! CreateTopics: new topics with partitions, configs, manual assignments, validate_only.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use fjord_meta::NewTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::{RequestContext, str_bytes};
use crate::broker::Broker;
use crate::errors;
use crate::topic_config;

pub async fn handle(
    broker: &Arc<Broker>,
    request: CreateTopicsRequest,
    ctx: &RequestContext,
) -> CreateTopicsResponse {
    let mut response = CreateTopicsResponse::default();
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = request
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.to_string()))
        .map(|t| t.name.0.to_string())
        .collect();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut result = CreatableTopicResult::default();
        result.name = topic.name.clone();
        result.num_partitions = -1;
        result.replication_factor = -1;
        let fail = |result: &mut CreatableTopicResult, code: i16, message: String| {
            result.error_code = code;
            result.error_message = Some(str_bytes(message));
        };
        if duplicates.contains(&name) {
            fail(
                &mut result,
                errors::INVALID_REQUEST,
                format!("topic '{name}' appears more than once in the request"),
            );
            response.topics.push(result);
            continue;
        }
        let assignments = if topic.assignments.is_empty() {
            None
        } else {
            if topic.num_partitions != -1 || topic.replication_factor != -1 {
                fail(
                    &mut result,
                    errors::INVALID_REQUEST,
                    "both partitions/replication factor and replica assignments were given; set the counts to -1".into(),
                );
                response.topics.push(result);
                continue;
            }
            Some(
                topic
                    .assignments
                    .iter()
                    .map(|a| {
                        (
                            a.partition_index,
                            a.broker_ids.iter().map(|b| b.0).collect(),
                        )
                    })
                    .collect(),
            )
        };
        let mut configs = BTreeMap::new();
        let mut config_error = None;
        for c in &topic.configs {
            match &c.value {
                Some(v) => {
                    configs.insert(c.name.to_string(), v.to_string());
                }
                None => config_error = Some(format!("config {} has a null value", c.name)),
            }
        }
        if let Some(message) = config_error {
            fail(&mut result, errors::INVALID_CONFIG, message);
            response.topics.push(result);
            continue;
        }
        let b = broker.clone();
        let validate_only = request.validate_only;
        let new_topic = NewTopic {
            name,
            partitions: topic.num_partitions,
            replication_factor: topic.replication_factor,
            assignments,
            configs,
        };
        let outcome =
            tokio::task::spawn_blocking(move || b.create_topic(new_topic, validate_only)).await;
        match outcome {
            Ok(Ok(meta)) => {
                result.topic_id = uuid::Uuid::from_bytes(meta.id.0);
                result.num_partitions = meta.partitions;
                result.replication_factor = meta.replication_factor;
                if ctx.version >= 5 {
                    let described = topic_config::describe(
                        &broker.config.log_defaults,
                        broker.config.min_insync_replicas,
                        &meta.configs,
                    );
                    result.configs = Some(
                        described
                            .into_iter()
                            .map(|d| {
                                let mut c = CreatableTopicConfigs::default();
                                c.name = str_bytes(d.name);
                                c.value = Some(str_bytes(d.value));
                                c.read_only = false;
                                c.config_source = d.source;
                                c.is_sensitive = false;
                                c
                            })
                            .collect(),
                    );
                }
            }
            Ok(Err(e)) => fail(&mut result, e.code, e.message),
            Err(e) => fail(
                &mut result,
                errors::UNKNOWN_SERVER_ERROR,
                format!("topic creation failed: {e}"),
            ),
        }
        response.topics.push(result);
    }
    response
}
