//! DescribeConfigs: topic and broker configs with sources, synonyms and types.

use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::{RequestContext, str_bytes};
use crate::broker::Broker;
use crate::{errors, topic_config};

pub const TOPIC: i8 = 2;
pub const BROKER: i8 = 4;

/// Kafka's config sources.
const DYNAMIC_BROKER_CONFIG: i8 = 2;
const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;

/// One described config; `kind` is reported from v3 on.
fn entry(
    name: &str,
    value: Option<String>,
    source: i8,
    read_only: bool,
    kind: topic_config::Kind,
    version: i16,
    synonyms: Vec<DescribeConfigsSynonym>,
) -> DescribeConfigsResourceResult {
    let mut c = DescribeConfigsResourceResult::default();
    c.name = str_bytes(name);
    c.value = value.map(str_bytes);
    c.read_only = read_only;
    c.config_source = source;
    c.is_sensitive = false;
    c.synonyms = synonyms;
    if version >= 3 {
        c.config_type = kind.code();
    }
    c
}

fn synonym(name: &str, value: Option<&str>, source: i8) -> DescribeConfigsSynonym {
    let mut s = DescribeConfigsSynonym::default();
    s.name = str_bytes(name);
    s.value = value.map(str_bytes);
    s.source = source;
    s
}

pub async fn handle(
    broker: &Arc<Broker>,
    request: DescribeConfigsRequest,
    ctx: &RequestContext,
) -> DescribeConfigsResponse {
    let mut response = DescribeConfigsResponse::default();
    let broker_values = broker.config.describe_kafka();
    for res in request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = res.resource_type;
        result.resource_name = res.resource_name.clone();
        let wanted = |k: &str| {
            res.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|w| &**w == k))
        };
        match res.resource_type {
            TOPIC => {
                let name = res.resource_name.to_string();
                let Some(topic) = broker.metadata().topic(&name).cloned() else {
                    result.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
                    // Kafka answers an unknown topic with an empty message.
                    result.error_message = Some(str_bytes(""));
                    response.results.push(result);
                    continue;
                };
                let described = topic_config::describe(
                    &broker.config.log_defaults,
                    broker.config.min_insync_replicas,
                    &topic.configs,
                );
                for d in described.into_iter().filter(|d| wanted(d.name)) {
                    let synonyms = if request.include_synonyms {
                        d.synonyms
                            .iter()
                            .map(|(n, v, source)| synonym(n, Some(v), *source))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    result.configs.push(entry(
                        d.name,
                        Some(d.value),
                        d.source,
                        false,
                        d.kind,
                        ctx.version,
                        synonyms,
                    ));
                }
            }
            // The default of every broker: its dynamic configs only (Kafka's
            // DYNAMIC_DEFAULT_BROKER_CONFIG entries).
            BROKER if res.resource_name.is_empty() => {
                let state = broker.metadata();
                for (key, value) in state.broker_configs("").into_iter().flatten() {
                    if wanted(key) {
                        let synonyms = if request.include_synonyms {
                            vec![synonym(key, Some(value), DYNAMIC_DEFAULT_BROKER_CONFIG)]
                        } else {
                            Vec::new()
                        };
                        result.configs.push(entry(
                            key,
                            Some(value.clone()),
                            DYNAMIC_DEFAULT_BROKER_CONFIG,
                            false,
                            topic_config::Kind::Long,
                            ctx.version,
                            synonyms,
                        ));
                    }
                }
            }
            BROKER => {
                let me = broker.config.node_id.to_string();
                if *res.resource_name != *me {
                    result.error_code = errors::INVALID_REQUEST;
                    result.error_message = Some(str_bytes(format!(
                        "this is broker {me}; ask broker {} directly",
                        res.resource_name
                    )));
                    response.results.push(result);
                    continue;
                }
                // The dynamic ones, when set (Kafka describes them only then): this broker's
                // value, else the cluster default.
                let state = broker.metadata();
                for &key in crate::config::DYNAMIC_BROKER_CONFIGS {
                    if !wanted(key) {
                        continue;
                    }
                    let own = state.broker_configs(&me).and_then(|c| c.get(key));
                    let default = state.broker_configs("").and_then(|c| c.get(key));
                    let mut found = Vec::new();
                    if let Some(v) = own {
                        found.push((v.as_str(), DYNAMIC_BROKER_CONFIG));
                    }
                    if let Some(v) = default {
                        found.push((v.as_str(), DYNAMIC_DEFAULT_BROKER_CONFIG));
                    }
                    if found.is_empty() {
                        continue;
                    }
                    let synonyms = if request.include_synonyms {
                        found
                            .iter()
                            .map(|(v, src)| synonym(key, Some(v), *src))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    result.configs.push(entry(
                        key,
                        Some(found[0].0.to_string()),
                        found[0].1,
                        false,
                        topic_config::Kind::Long,
                        ctx.version,
                        synonyms,
                    ));
                }
                for e in broker_values.iter().filter(|e| wanted(e.name)) {
                    let synonyms = if request.include_synonyms {
                        e.synonyms
                            .iter()
                            .map(|(n, v, source)| synonym(n, v.as_deref(), *source))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    result.configs.push(entry(
                        e.name,
                        e.value.clone(),
                        e.source,
                        true,
                        e.kind,
                        ctx.version,
                        synonyms,
                    ));
                }
            }
            other => {
                result.error_code = errors::INVALID_REQUEST;
                result.error_message = Some(str_bytes(format!(
                    "config resource type {other} is not supported (topics: 2, brokers: 4)"
                )));
            }
        }
        response.results.push(result);
    }
    response
}
