//! Topic-level configs: which Kafka names Fjord accepts, their validation, and the log
//! settings they produce.

use std::collections::BTreeMap;

use fjord_log::{LOG_CONFIG_KEYS, LogConfig};

/// Topic configs Fjord implements (each takes effect); other Kafka names are refused with
/// INVALID_CONFIG rather than accepted and ignored.
pub fn is_topic_config(key: &str) -> bool {
    LOG_CONFIG_KEYS.contains(&key) || key == "min.insync.replicas"
}

/// Checks one value; the message names the key and what is wrong.
pub fn validate(key: &str, value: &str) -> Result<(), String> {
    if !is_topic_config(key) {
        return Err(format!(
            "unknown or unsupported topic config {key}; supported: {}, min.insync.replicas",
            LOG_CONFIG_KEYS.join(", ")
        ));
    }
    if key == "min.insync.replicas" {
        return match value.trim().parse::<i32>() {
            Ok(n) if n >= 1 => Ok(()),
            _ => Err(format!(
                "invalid value {value:?} for min.insync.replicas: must be an integer >= 1"
            )),
        };
    }
    let mut c = LogConfig::default();
    c.set(key, value).map_err(|e| e.to_string())?;
    c.validate().map_err(|e| e.to_string())
}

/// The log settings for a topic: broker defaults overridden by the topic's configs.
pub fn log_config(
    defaults: &LogConfig,
    overrides: &BTreeMap<String, String>,
) -> Result<LogConfig, String> {
    let mut c = *defaults;
    for (k, v) in overrides {
        if LOG_CONFIG_KEYS.contains(&k.as_str()) {
            c.set(k, v).map_err(|e| e.to_string())?;
        }
    }
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

/// The topic's `min.insync.replicas`.
pub fn min_insync_replicas(default: i32, overrides: &BTreeMap<String, String>) -> i32 {
    overrides
        .get("min.insync.replicas")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Every supported topic config with its effective value and whether it is the default, in
/// Kafka's string forms (for CreateTopics v5+ and DescribeConfigs).
pub fn describe(
    defaults: &LogConfig,
    min_isr: i32,
    overrides: &BTreeMap<String, String>,
) -> Vec<(String, String, bool)> {
    let c = log_config(defaults, overrides).unwrap_or(*defaults);
    let policy = match (c.cleanup_policy.compact, c.cleanup_policy.delete) {
        (true, true) => "compact,delete",
        (true, false) => "compact",
        _ => "delete",
    };
    let ts = match c.message_timestamp_type {
        fjord_record::TimestampType::CreateTime => "CreateTime",
        fjord_record::TimestampType::LogAppendTime => "LogAppendTime",
    };
    let values = [
        ("cleanup.policy", policy.to_string()),
        ("delete.retention.ms", c.delete_retention_ms.to_string()),
        ("flush.messages", c.flush_messages.to_string()),
        ("flush.ms", c.flush_ms.to_string()),
        ("index.interval.bytes", c.index_interval_bytes.to_string()),
        ("max.message.bytes", c.max_message_bytes.to_string()),
        ("message.timestamp.type", ts.to_string()),
        (
            "min.insync.replicas",
            min_insync_replicas(min_isr, overrides).to_string(),
        ),
        ("retention.bytes", c.retention_bytes.to_string()),
        ("retention.ms", c.retention_ms.to_string()),
        ("segment.bytes", c.segment_bytes.to_string()),
        ("segment.index.bytes", c.segment_index_bytes.to_string()),
        ("segment.ms", c.segment_ms.to_string()),
    ];
    // Overrides read back exactly as they were set (Kafka keeps the string).
    values
        .into_iter()
        .map(|(k, v)| match overrides.get(k) {
            Some(set) => (k.to_string(), set.clone(), false),
            None => (k.to_string(), v, true),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_take_effect_and_bad_values_name_the_key() {
        let o = BTreeMap::from([
            ("retention.ms".to_string(), "1000".to_string()),
            ("cleanup.policy".to_string(), "compact".to_string()),
        ]);
        let c = log_config(&LogConfig::default(), &o).unwrap();
        assert_eq!(c.retention_ms, 1000);
        assert!(c.cleanup_policy.compact);
        assert!(
            validate("retention.ms", "x")
                .unwrap_err()
                .contains("retention.ms")
        );
        assert!(validate("compression.type", "gzip").is_err());
        assert!(validate("min.insync.replicas", "0").is_err());
        assert!(validate("segment.bytes", "1048576").is_ok());
        let d = describe(&LogConfig::default(), 1, &o);
        assert!(
            d.iter()
                .any(|(k, v, default)| k == "retention.ms" && v == "1000" && !default)
        );
        assert!(
            d.iter()
                .any(|(k, _, default)| k == "segment.bytes" && *default)
        );
        assert_eq!(d.len(), LOG_CONFIG_KEYS.len() + 1);
    }
}
