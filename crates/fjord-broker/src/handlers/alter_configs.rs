//! AlterConfigs (replace a topic's overrides) and IncrementalAlterConfigs (SET, DELETE, APPEND,
//! SUBTRACT per key).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResult;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::describe_configs::{BROKER, TOPIC};
use super::{RequestContext, str_bytes};
use crate::broker::{AdminError, Broker};
use crate::errors;

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

/// Configs whose values are comma-separated lists (the only ones APPEND and SUBTRACT apply to).
fn is_list(key: &str) -> bool {
    crate::topic_config::definition(key).is_some_and(|d| d.kind == crate::topic_config::Kind::List)
}

fn unsupported_resource(resource_type: i8) -> AdminError {
    AdminError {
        code: errors::INVALID_REQUEST,
        message: format!(
            "config resource type {resource_type} is not supported (topics: 2, brokers: 4)"
        ),
    }
}

/// Sets a topic's overrides (`resource_type` TOPIC) or a broker resource's dynamic configs
/// (BROKER) to what `change` makes of the current ones, computed under the broker's admin lock
/// (a read-modify-write outside it would lose a concurrent change).
async fn apply(
    broker: &Arc<Broker>,
    resource_type: i8,
    name: String,
    change: impl Fn(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, AdminError>
    + Send
    + 'static,
    validate_only: bool,
) -> Result<(), AdminError> {
    let b = broker.clone();
    tokio::task::spawn_blocking(move || {
        if resource_type == BROKER {
            b.set_broker_configs(&name, change, validate_only)
        } else {
            b.set_topic_configs(&name, change, validate_only)
        }
    })
    .await
    .unwrap_or_else(|e| {
        Err(AdminError {
            code: errors::UNKNOWN_SERVER_ERROR,
            message: e.to_string(),
        })
    })
}

pub async fn handle_alter(
    broker: &Arc<Broker>,
    request: AlterConfigsRequest,
    _ctx: &RequestContext,
) -> AlterConfigsResponse {
    let mut response = AlterConfigsResponse::default();
    for res in request.resources {
        let outcome = if res.resource_type != TOPIC && res.resource_type != BROKER {
            Err(unsupported_resource(res.resource_type))
        } else {
            let mut configs = BTreeMap::new();
            let mut null = None;
            for c in &res.configs {
                match &c.value {
                    Some(v) => {
                        configs.insert(c.name.to_string(), v.to_string());
                    }
                    None => null = Some(c.name.to_string()),
                }
            }
            match null {
                Some(k) => Err(AdminError {
                    code: errors::INVALID_CONFIG,
                    message: format!("config {k} has a null value"),
                }),
                None => {
                    apply(
                        broker,
                        res.resource_type,
                        res.resource_name.to_string(),
                        move |_| Ok(configs.clone()),
                        request.validate_only,
                    )
                    .await
                }
            }
        };
        let mut r = AlterConfigsResourceResponse::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        if let Err(e) = outcome {
            r.error_code = e.code;
            r.error_message = Some(str_bytes(e.message));
        }
        response.responses.push(r);
    }
    response
}

fn incremental(
    current: &BTreeMap<String, String>,
    ops: &[(String, i8, Option<StrBytes>)],
) -> Result<BTreeMap<String, String>, AdminError> {
    let invalid = |message: String| AdminError {
        code: errors::INVALID_CONFIG,
        message,
    };
    let mut next = current.clone();
    for (key, op, value) in ops {
        let value = value.as_ref().map(|v| v.to_string());
        match *op {
            SET => {
                let v = value.ok_or_else(|| invalid(format!("SET of {key} needs a value")))?;
                next.insert(key.clone(), v);
            }
            DELETE => {
                next.remove(key);
            }
            APPEND | SUBTRACT => {
                if !is_list(key) {
                    let name = if *op == APPEND { "APPEND" } else { "SUBTRACT" };
                    return Err(invalid(format!(
                        "Can't {name} to key {key} because its type is not LIST."
                    )));
                }
                let v = value
                    .ok_or_else(|| invalid(format!("APPEND/SUBTRACT of {key} needs a value")))?;
                let base = next
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| "delete".to_string());
                let mut items: Vec<String> = base
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if *op == APPEND {
                        if !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        }
                    } else {
                        items.retain(|i| i != item);
                    }
                }
                if items.is_empty() {
                    return Err(invalid(format!("{key} cannot become empty")));
                }
                next.insert(key.clone(), items.join(","));
            }
            other => {
                return Err(AdminError {
                    code: errors::INVALID_REQUEST,
                    message: format!("unknown config operation {other}"),
                });
            }
        }
    }
    Ok(next)
}

pub async fn handle_incremental(
    broker: &Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
    _ctx: &RequestContext,
) -> IncrementalAlterConfigsResponse {
    let mut response = IncrementalAlterConfigsResponse::default();
    for res in request.resources {
        let name = res.resource_name.to_string();
        let outcome = if res.resource_type != TOPIC && res.resource_type != BROKER {
            Err(unsupported_resource(res.resource_type))
        } else {
            let mut seen = std::collections::HashSet::new();
            let ops: Vec<(String, i8, Option<StrBytes>)> = res
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.config_operation, c.value.clone()))
                .collect();
            match ops.iter().find(|(k, _, _)| !seen.insert(k.clone())) {
                Some((dup, _, _)) => Err(AdminError {
                    code: errors::INVALID_REQUEST,
                    message: format!("config {dup} appears more than once"),
                }),
                None => {
                    let change =
                        move |current: &BTreeMap<String, String>| incremental(current, &ops);
                    let kind = res.resource_type;
                    apply(broker, kind, name.clone(), change, request.validate_only).await
                }
            }
        };
        let mut r = IncrementalResult::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        if let Err(e) = outcome {
            r.error_code = e.code;
            r.error_message = Some(str_bytes(e.message));
        }
        response.responses.push(r);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_operations() {
        let current = BTreeMap::from([("retention.ms".to_string(), "5".to_string())]);
        let s = |v: &str| Some(StrBytes::from_string(v.to_string()));
        let next = incremental(
            &current,
            &[
                ("retention.ms".into(), DELETE, None),
                ("segment.ms".into(), SET, s("100")),
                ("cleanup.policy".into(), APPEND, s("compact")),
            ],
        )
        .unwrap();
        assert_eq!(next.get("retention.ms"), None);
        assert_eq!(next["segment.ms"], "100");
        assert_eq!(next["cleanup.policy"], "delete,compact");
        let next = incremental(&next, &[("cleanup.policy".into(), SUBTRACT, s("delete"))]).unwrap();
        assert_eq!(next["cleanup.policy"], "compact");
        assert!(incremental(&next, &[("cleanup.policy".into(), SUBTRACT, s("compact"))]).is_err());
        assert!(incremental(&next, &[("segment.ms".into(), APPEND, s("1"))]).is_err());
    }
}
