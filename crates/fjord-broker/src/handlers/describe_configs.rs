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

// Kafka's ConfigSource codes.
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

/// Kafka's ConfigType codes for the configs Fjord has.
fn config_type(key: &str) -> i8 {
    const BOOLEAN: i8 = 1;
    const STRING: i8 = 2;
    const INT: i8 = 3;
    const LONG: i8 = 5;
    const LIST: i8 = 7;
    match key {
        "cleanup.policy" | "log.cleanup.policy" => LIST,
        "message.timestamp.type" | "log.message.timestamp.type" => STRING,
        "auto.create.topics.enable" => BOOLEAN,
        "min.insync.replicas"
        | "max.message.bytes"
        | "message.max.bytes"
        | "segment.bytes"
        | "log.segment.bytes"
        | "index.interval.bytes"
        | "log.index.interval.bytes"
        | "segment.index.bytes"
        | "log.index.size.max.bytes"
        | "node.id"
        | "num.partitions"
        | "socket.request.max.bytes"
        | "max.connections" => INT,
        "default.replication.factor" => INT,
        _ => LONG,
    }
}

fn entry(
    name: &str,
    value: String,
    source: i8,
    read_only: bool,
    version: i16,
    synonyms: Vec<DescribeConfigsSynonym>,
) -> DescribeConfigsResourceResult {
    let mut c = DescribeConfigsResourceResult::default();
    c.name = str_bytes(name);
    c.value = Some(str_bytes(value));
    c.read_only = read_only;
    c.config_source = source;
    c.is_sensitive = false;
    c.synonyms = synonyms;
    if version >= 3 {
        c.config_type = config_type(name);
    }
    c
}

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    let mut s = DescribeConfigsSynonym::default();
    s.name = str_bytes(name);
    s.value = Some(str_bytes(value));
    s.source = source;
    s
}

pub async fn handle(
    broker: &Arc<Broker>,
    request: DescribeConfigsRequest,
    ctx: &RequestContext,
) -> DescribeConfigsResponse {
    let mut response = DescribeConfigsResponse::default();
    let broker_values = broker.config.describe();
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
                            .map(|(n, v, source)| synonym(n, v, *source))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let mut e = entry(d.name, d.value, d.source, false, ctx.version, synonyms);
                    if ctx.version >= 3 {
                        e.config_type = d.kind.code();
                    }
                    result.configs.push(e);
                }
            }
            BROKER => {
                let me = broker.config.node_id.to_string();
                if !res.resource_name.is_empty() && *res.resource_name != *me {
                    result.error_code = errors::INVALID_REQUEST;
                    result.error_message = Some(str_bytes(format!(
                        "this is broker {me}; ask broker {} directly",
                        res.resource_name
                    )));
                    response.results.push(result);
                    continue;
                }
                for (k, v, is_default) in broker_values.iter().filter(|(k, _, _)| wanted(k)) {
                    let source = if *is_default {
                        DEFAULT_CONFIG
                    } else {
                        STATIC_BROKER_CONFIG
                    };
                    let synonyms = if request.include_synonyms {
                        vec![synonym(k, v, source)]
                    } else {
                        Vec::new()
                    };
                    result
                        .configs
                        .push(entry(k, v.clone(), source, true, ctx.version, synonyms));
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
