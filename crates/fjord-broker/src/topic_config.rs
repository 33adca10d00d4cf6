//! Topic-level configs: every name Kafka 4.4 accepts, with Kafka's type, default, validator
//! and broker synonym, the validation messages Kafka gives, how DescribeConfigs describes them
//! (sources and synonyms), and the log settings they produce.
//!
//! Each config either takes effect ([`Effect::Log`], [`Effect::Broker`]) or is accepted,
//! validated, stored and described without changing behaviour yet ([`Effect::NotYet`], with
//! the reason; docs/compatibility.md lists them). Nothing Kafka accepts is refused.

use std::collections::BTreeMap;

use fjord_log::{LOG_CONFIG_KEYS, LogConfig};

/// Kafka's ConfigDef types, with the codes DescribeConfigs v3+ reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Boolean,
    String,
    Int,
    Long,
    Double,
    List,
}

impl Kind {
    /// The DescribeConfigs `config_type` code.
    pub fn code(self) -> i8 {
        match self {
            Kind::Boolean => 1,
            Kind::String => 2,
            Kind::Int => 3,
            Kind::Long => 5,
            Kind::Double => 6,
            Kind::List => 7,
        }
    }
}

/// Kafka's validator for a config.
#[derive(Debug, Clone, Copy)]
enum Rule {
    Any,
    AtLeast(i64),
    Between(i64, i64),
    /// `ValidString.in`.
    OneOf(&'static [&'static str]),
    /// `ValidList.in`: each element one of these, no duplicates (empty allowed).
    ListOf(&'static [&'static str]),
    /// `compression.gzip.level`: 1..=9 or -1.
    GzipLevel,
    /// The throttled-replica lists: `*` or `partition:broker,...`.
    Throttled,
}

/// What a config does in Fjord.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Sets a field of the partition's [`LogConfig`].
    Log,
    /// Read by the broker (`min.insync.replicas`, the throttled replica lists).
    Broker,
    /// Accepted, validated, stored and described; no effect yet, for this reason.
    NotYet(&'static str),
}

/// One topic config as Kafka defines it.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub kind: Kind,
    /// Kafka's default, as DescribeConfigs renders it (Fjord's where it deliberately differs).
    pub default: &'static str,
    rule: Rule,
    /// The broker config Kafka lists as this config's synonym, and that broker config's
    /// default (`None` where Kafka's is null, as for `log.retention.ms`, whose value comes
    /// from `log.retention.hours`: Kafka then lists no synonym).
    pub synonym: Option<(&'static str, Option<&'static str>)>,
    pub effect: Effect,
}

const LONG_MAX: &str = "9223372036854775807";
const NO_TIERED_STORAGE: &str = "tiered storage is not built yet";

macro_rules! def {
    ($name:expr, $kind:ident, $default:expr, $rule:expr, $syn:expr, $effect:expr) => {
        TopicConfigDef {
            name: $name,
            kind: Kind::$kind,
            default: $default,
            rule: $rule,
            synonym: $syn,
            effect: $effect,
        }
    };
}

/// Every topic config of Kafka 4.4 (`LogConfig`), in name order.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def!(
        "cleanup.policy",
        List,
        "delete",
        Rule::ListOf(&["compact", "delete"]),
        Some(("log.cleanup.policy", Some("delete"))),
        Effect::Log
    ),
    def!(
        "compression.gzip.level",
        Int,
        "-1",
        Rule::GzipLevel,
        Some(("compression.gzip.level", Some("-1"))),
        Effect::NotYet("the broker compresses at each codec's default level")
    ),
    def!(
        "compression.lz4.level",
        Int,
        "9",
        Rule::Between(1, 17),
        Some(("compression.lz4.level", Some("9"))),
        Effect::NotYet("the broker compresses at each codec's default level")
    ),
    def!(
        "compression.type",
        String,
        "producer",
        Rule::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        Some(("compression.type", Some("producer"))),
        Effect::Log
    ),
    def!(
        "compression.zstd.level",
        Int,
        "3",
        Rule::Between(-131072, 22),
        Some(("compression.zstd.level", Some("3"))),
        Effect::NotYet("the broker compresses at each codec's default level")
    ),
    def!(
        "delete.retention.ms",
        Long,
        "86400000",
        Rule::AtLeast(0),
        Some(("log.cleaner.delete.retention.ms", Some("86400000"))),
        Effect::Log
    ),
    def!(
        "errors.deadletterqueue.group.enable",
        Boolean,
        "false",
        Rule::Any,
        None,
        Effect::NotYet("dead-letter queues belong to share and streams groups, not built yet")
    ),
    def!(
        "file.delete.delay.ms",
        Long,
        "60000",
        Rule::AtLeast(0),
        Some(("log.segment.delete.delay.ms", Some("60000"))),
        Effect::NotYet("a deleted segment's files are removed at once (no reader keeps them)")
    ),
    // Fjord's default is 1 (fsync before acks=all); Kafka's is Long.MAX (no fsync).
    def!(
        "flush.messages",
        Long,
        "1",
        Rule::AtLeast(1),
        Some(("log.flush.interval.messages", Some("1"))),
        Effect::Log
    ),
    def!(
        "flush.ms",
        Long,
        LONG_MAX,
        Rule::AtLeast(0),
        Some(("log.flush.interval.ms", None)),
        Effect::Log
    ),
    def!(
        "follower.replication.throttled.replicas",
        List,
        "",
        Rule::Throttled,
        None,
        Effect::Broker
    ),
    def!(
        "index.interval.bytes",
        Int,
        "4096",
        Rule::AtLeast(0),
        Some(("log.index.interval.bytes", Some("4096"))),
        Effect::Log
    ),
    def!(
        "leader.replication.throttled.replicas",
        List,
        "",
        Rule::Throttled,
        None,
        Effect::Broker
    ),
    def!(
        "local.retention.bytes",
        Long,
        "-2",
        Rule::AtLeast(-2),
        Some(("log.local.retention.bytes", Some("-2"))),
        Effect::NotYet(NO_TIERED_STORAGE)
    ),
    def!(
        "local.retention.ms",
        Long,
        "-2",
        Rule::AtLeast(-2),
        Some(("log.local.retention.ms", Some("-2"))),
        Effect::NotYet(NO_TIERED_STORAGE)
    ),
    def!(
        "max.compaction.lag.ms",
        Long,
        LONG_MAX,
        Rule::AtLeast(1),
        Some(("log.cleaner.max.compaction.lag.ms", Some(LONG_MAX))),
        Effect::Log
    ),
    def!(
        "max.decompressed.message.bytes",
        Int,
        "2147483639",
        Rule::AtLeast(0),
        Some(("max.decompressed.message.bytes", Some("2147483639"))),
        Effect::Log
    ),
    def!(
        "max.message.bytes",
        Int,
        "1048588",
        Rule::AtLeast(0),
        Some(("message.max.bytes", Some("1048588"))),
        Effect::Log
    ),
    def!(
        "message.timestamp.after.max.ms",
        Long,
        "3600000",
        Rule::AtLeast(0),
        Some(("log.message.timestamp.after.max.ms", Some("3600000"))),
        Effect::Log
    ),
    def!(
        "message.timestamp.before.max.ms",
        Long,
        LONG_MAX,
        Rule::AtLeast(0),
        Some(("log.message.timestamp.before.max.ms", Some(LONG_MAX))),
        Effect::Log
    ),
    def!(
        "message.timestamp.type",
        String,
        "CreateTime",
        Rule::OneOf(&["CreateTime", "LogAppendTime"]),
        Some(("log.message.timestamp.type", Some("CreateTime"))),
        Effect::Log
    ),
    def!(
        "min.cleanable.dirty.ratio",
        Double,
        "0.5",
        Rule::Between(0, 1),
        Some(("log.cleaner.min.cleanable.ratio", Some("0.5"))),
        Effect::Log
    ),
    def!(
        "min.compaction.lag.ms",
        Long,
        "0",
        Rule::AtLeast(0),
        Some(("log.cleaner.min.compaction.lag.ms", Some("0"))),
        Effect::Log
    ),
    def!(
        "min.insync.replicas",
        Int,
        "1",
        Rule::AtLeast(1),
        Some(("min.insync.replicas", Some("1"))),
        Effect::Broker
    ),
    def!(
        "preallocate",
        Boolean,
        "false",
        Rule::Any,
        Some(("log.preallocate", Some("false"))),
        Effect::NotYet("segment files grow as they are written")
    ),
    def!(
        "remote.copy.lag.bytes",
        Long,
        "-1",
        Rule::AtLeast(-1),
        Some(("log.remote.copy.lag.bytes", Some("-1"))),
        Effect::NotYet(NO_TIERED_STORAGE)
    ),
    def!(
        "remote.copy.lag.ms",
        Long,
        "0",
        Rule::AtLeast(-1),
        Some(("log.remote.copy.lag.ms", Some("0"))),
        Effect::NotYet(NO_TIERED_STORAGE)
    ),
    def!(
        "remote.log.copy.disable",
        Boolean,
        "false",
        Rule::Any,
        None,
        Effect::NotYet(NO_TIERED_STORAGE)
    ),
    def!(
        "remote.log.delete.on.disable",
        Boolean,
        "false",
        Rule::Any,
        None,
        Effect::NotYet(NO_TIERED_STORAGE)
    ),
    def!(
        "remote.storage.enable",
        Boolean,
        "false",
        Rule::Any,
        None,
        Effect::NotYet(NO_TIERED_STORAGE)
    ),
    def!(
        "retention.bytes",
        Long,
        "-1",
        Rule::Any,
        Some(("log.retention.bytes", Some("-1"))),
        Effect::Log
    ),
    def!(
        "retention.ms",
        Long,
        "604800000",
        Rule::AtLeast(-1),
        Some(("log.retention.ms", None)),
        Effect::Log
    ),
    def!(
        "segment.bytes",
        Int,
        "1073741824",
        Rule::AtLeast(1_048_576),
        Some(("log.segment.bytes", Some("1073741824"))),
        Effect::Log
    ),
    def!(
        "segment.index.bytes",
        Int,
        "10485760",
        Rule::AtLeast(4),
        Some(("log.index.size.max.bytes", Some("10485760"))),
        Effect::Log
    ),
    def!(
        "segment.jitter.ms",
        Long,
        "0",
        Rule::AtLeast(0),
        Some(("log.roll.jitter.ms", None)),
        Effect::NotYet("segments roll at segment.ms exactly")
    ),
    def!(
        "segment.ms",
        Long,
        "604800000",
        Rule::AtLeast(1),
        Some(("log.roll.ms", None)),
        Effect::Log
    ),
    def!(
        "unclean.leader.election.enable",
        Boolean,
        "false",
        Rule::Any,
        Some(("unclean.leader.election.enable", Some("false"))),
        Effect::Broker
    ),
];

/// Kafka's internal topic config for segments below `segment.bytes`' 1 MiB minimum (tests);
/// when set it wins over `segment.bytes`, and it is described only when set.
pub const INTERNAL_SEGMENT_BYTES: &str = "internal.segment.bytes";

/// The definition of a topic config.
pub fn definition(key: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == key)
}

/// Checks one value as Kafka does; the error is Kafka's message (INVALID_CONFIG).
pub fn validate(key: &str, value: &str) -> Result<(), String> {
    if key == INTERNAL_SEGMENT_BYTES {
        return check_value(key, Kind::Int, Rule::AtLeast(0), value);
    }
    let Some(def) = definition(key) else {
        return Err(format!("Unknown topic config name: {key}"));
    };
    check_value(key, def.kind, def.rule, value)
}

fn check_value(key: &str, kind: Kind, rule: Rule, value: &str) -> Result<(), String> {
    let invalid = |shown: &str, why: &str| {
        Err(format!(
            "Invalid value {shown} for configuration {key}: {why}"
        ))
    };
    let v = value.trim();
    // Kafka shows a number it parsed as Java prints it ("2.0" for a DOUBLE, "7" for "007").
    let shown = match kind {
        Kind::Int | Kind::Long => v.parse::<i64>().map_or(v.to_string(), |n| n.to_string()),
        Kind::Double => v.parse::<f64>().map_or(v.to_string(), java_double),
        _ => v.to_string(),
    };
    let number: Option<f64> = match kind {
        Kind::Boolean => {
            if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") {
                return invalid(v, "Expected value to be either true or false");
            }
            None
        }
        Kind::Int => match v.parse::<i32>() {
            Ok(n) => Some(f64::from(n)),
            Err(_) => return invalid(v, "Not a number of type INT"),
        },
        Kind::Long => match v.parse::<i64>() {
            Ok(n) => Some(n as f64),
            Err(_) => return invalid(v, "Not a number of type LONG"),
        },
        Kind::Double => match v.parse::<f64>() {
            Ok(n) if n.is_finite() => Some(n),
            _ => return invalid(v, "Not a number of type DOUBLE"),
        },
        Kind::String | Kind::List => None,
    };
    match rule {
        Rule::Any => Ok(()),
        Rule::AtLeast(min) => match number {
            Some(n) if n < min as f64 => invalid(&shown, &format!("Value must be at least {min}")),
            _ => Ok(()),
        },
        Rule::Between(min, max) => match number {
            Some(n) if n < min as f64 => invalid(&shown, &format!("Value must be at least {min}")),
            Some(n) if n > max as f64 => {
                invalid(&shown, &format!("Value must be no more than {max}"))
            }
            _ => Ok(()),
        },
        Rule::GzipLevel => match number {
            Some(n) if n == -1.0 || (1.0..=9.0).contains(&n) => Ok(()),
            _ => invalid(&shown, "Value must be between 1 and 9 or equal to -1"),
        },
        Rule::OneOf(allowed) => {
            if allowed.contains(&v) {
                Ok(())
            } else {
                invalid(v, &format!("String must be one of: {}", allowed.join(", ")))
            }
        }
        Rule::ListOf(allowed) => {
            let items = list(v);
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    return Err(format!(
                        "Configuration '{key}' values must not be duplicated."
                    ));
                }
                if !allowed.contains(item) {
                    return invalid(
                        item,
                        &format!("String must be one of: {}", allowed.join(", ")),
                    );
                }
            }
            Ok(())
        }
        Rule::Throttled => {
            let items = list(v);
            let replica = |s: &str| {
                s.split_once(':').is_some_and(|(p, b)| {
                    p.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok()
                })
            };
            if items == ["*"] || items.iter().all(|s| replica(s)) {
                Ok(())
            } else {
                invalid(
                    v,
                    &format!(
                        "{key} must be the literal '*' or a list of replicas in the following format: [partitionId]:[brokerId],[partitionId]:[brokerId],..."
                    ),
                )
            }
        }
    }
}

/// A double as Java's `Double.toString` prints the common cases ("2.0", "0.55").
fn java_double(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e7 {
        format!("{n:.1}")
    } else {
        format!("{n}")
    }
}

/// A list value's elements, as Kafka splits them (an empty string is an empty list).
fn list(v: &str) -> Vec<&str> {
    if v.trim().is_empty() {
        Vec::new()
    } else {
        v.split(',').map(str::trim).collect()
    }
}

/// Checks a topic's whole set of overrides: each value, then the rules across values that
/// Kafka's `LogConfig.validate` applies; the error is Kafka's message.
pub fn validate_all(overrides: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in overrides {
        validate(k, v)?;
    }
    let long = |k: &str| {
        overrides
            .get(k)
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| {
                definition(k)
                    .map(|d| d.default.to_string())
                    .unwrap_or_default()
            })
            .parse::<i64>()
            .unwrap_or_default()
    };
    let (min_lag, max_lag) = (long("min.compaction.lag.ms"), long("max.compaction.lag.ms"));
    if min_lag > max_lag {
        return Err(format!(
            "conflict topic config setting min.compaction.lag.ms ({min_lag}) > max.compaction.lag.ms ({max_lag})"
        ));
    }
    if overrides
        .get("remote.storage.enable")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Err("Tiered Storage functionality is disabled in the broker. Topic cannot be configured with remote log storage.".to_string());
    }
    Ok(())
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
    if let Some(v) = overrides.get(INTERNAL_SEGMENT_BYTES) {
        c.set("segment.bytes", v).map_err(|e| e.to_string())?;
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

/// Kafka's ConfigSource codes.
pub const TOPIC_CONFIG: i8 = 1;
pub const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
pub const STATIC_BROKER_CONFIG: i8 = 4;
pub const DEFAULT_CONFIG: i8 = 5;

/// One described topic config, as DescribeConfigs and CreateTopics v5+ report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub name: &'static str,
    pub value: String,
    pub kind: Kind,
    pub source: i8,
    /// (name, value, source), most specific first.
    pub synonyms: Vec<(&'static str, String, i8)>,
}

/// The broker-level value of a log config (the broker's default for every topic).
pub(crate) fn broker_value(defaults: &LogConfig, key: &str) -> Option<String> {
    let c = defaults;
    Some(match key {
        "cleanup.policy" => match (c.cleanup_policy.compact, c.cleanup_policy.delete) {
            (true, true) => "compact,delete".to_string(),
            (true, false) => "compact".to_string(),
            (false, true) => "delete".to_string(),
            (false, false) => String::new(),
        },
        "compression.type" => match c.compression {
            None => "producer".to_string(),
            Some(fjord_record::Compression::None) => "uncompressed".to_string(),
            Some(codec) => codec.name().to_string(),
        },
        "delete.retention.ms" => c.delete_retention_ms.to_string(),
        "flush.messages" => c.flush_messages.to_string(),
        "flush.ms" => c.flush_ms.to_string(),
        "index.interval.bytes" => c.index_interval_bytes.to_string(),
        "max.message.bytes" => c.max_message_bytes.to_string(),
        "message.timestamp.type" => match c.message_timestamp_type {
            fjord_record::TimestampType::CreateTime => "CreateTime".to_string(),
            fjord_record::TimestampType::LogAppendTime => "LogAppendTime".to_string(),
        },
        "message.timestamp.before.max.ms" => c.message_timestamp_before_max_ms.to_string(),
        "message.timestamp.after.max.ms" => c.message_timestamp_after_max_ms.to_string(),
        "retention.bytes" => c.retention_bytes.to_string(),
        "retention.ms" => c.retention_ms.to_string(),
        "segment.bytes" => c.segment_bytes.to_string(),
        "segment.index.bytes" => c.segment_index_bytes.to_string(),
        "segment.ms" => c.segment_ms.to_string(),
        _ => return None,
    })
}

/// Every topic config with its value, source and synonyms, by Kafka's rule
/// (`ConfigHelper.createTopicConfigEntry`): a topic override comes first (TOPIC_CONFIG), then
/// the broker synonym as set in the broker's config file (STATIC_BROKER_CONFIG), then its
/// default (DEFAULT_CONFIG) where Kafka's is not null; the config's source is the first of
/// those. `min.insync.replicas` is described as Kafka 4.4 does with eligible leader replicas
/// on (a cluster-level dynamic default, source DYNAMIC_DEFAULT_BROKER_CONFIG).
pub fn describe(
    defaults: &LogConfig,
    min_isr: i32,
    overrides: &BTreeMap<String, String>,
) -> Vec<Described> {
    let mut out = Vec::with_capacity(TOPIC_CONFIGS.len() + 1);
    for def in TOPIC_CONFIGS {
        let mut synonyms = Vec::new();
        let over = overrides.get(def.name);
        if let Some(v) = over {
            synonyms.push((def.name, v.clone(), TOPIC_CONFIG));
        }
        let broker = if def.name == "min.insync.replicas" {
            Some(min_isr.to_string())
        } else {
            broker_value(defaults, def.name)
        };
        if def.name == "min.insync.replicas" {
            let v = min_isr.to_string();
            synonyms.push((def.name, v.clone(), DYNAMIC_DEFAULT_BROKER_CONFIG));
            synonyms.push((def.name, def.default.to_string(), DEFAULT_CONFIG));
        } else if let Some((syn, syn_default)) = def.synonym {
            match (&broker, syn_default) {
                (Some(b), Some(d)) if b != d => {
                    synonyms.push((syn, b.clone(), STATIC_BROKER_CONFIG))
                }
                (Some(b), None) if b != def.default => {
                    synonyms.push((syn, b.clone(), STATIC_BROKER_CONFIG))
                }
                _ => {}
            }
            if let Some(d) = syn_default {
                synonyms.push((syn, d.to_string(), DEFAULT_CONFIG));
            }
        }
        let value = over
            .cloned()
            .or(broker)
            .unwrap_or_else(|| def.default.to_string());
        let source = synonyms.first().map_or(DEFAULT_CONFIG, |s| s.2);
        out.push(Described {
            name: def.name,
            value,
            kind: def.kind,
            source,
            synonyms,
        });
    }
    if let Some(v) = overrides.get(INTERNAL_SEGMENT_BYTES) {
        let at = out.partition_point(|d| d.name < INTERNAL_SEGMENT_BYTES);
        out.insert(
            at,
            Described {
                name: INTERNAL_SEGMENT_BYTES,
                value: v.clone(),
                kind: Kind::Int,
                source: TOPIC_CONFIG,
                synonyms: vec![(INTERNAL_SEGMENT_BYTES, v.clone(), TOPIC_CONFIG)],
            },
        );
    }
    out
}

/// The configs that are accepted but do not take effect yet, with the reason
/// (docs/compatibility.md lists them).
pub fn not_yet() -> impl Iterator<Item = (&'static str, &'static str)> {
    TOPIC_CONFIGS.iter().filter_map(|d| match d.effect {
        Effect::NotYet(why) => Some((d.name, why)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kafka_messages_for_bad_values() {
        assert_eq!(
            validate("no.such", "1").unwrap_err(),
            "Unknown topic config name: no.such"
        );
        assert_eq!(
            validate("retention.ms", "soon").unwrap_err(),
            "Invalid value soon for configuration retention.ms: Not a number of type LONG"
        );
        assert_eq!(
            validate("segment.bytes", "1000").unwrap_err(),
            "Invalid value 1000 for configuration segment.bytes: Value must be at least 1048576"
        );
        assert_eq!(
            validate("segment.bytes", "4294967296").unwrap_err(),
            "Invalid value 4294967296 for configuration segment.bytes: Not a number of type INT"
        );
        assert_eq!(
            validate("cleanup.policy", "compact,keep").unwrap_err(),
            "Invalid value keep for configuration cleanup.policy: String must be one of: compact, delete"
        );
        assert_eq!(
            validate("cleanup.policy", "compact,compact").unwrap_err(),
            "Configuration 'cleanup.policy' values must not be duplicated."
        );
        assert!(validate("cleanup.policy", "").is_ok());
        assert!(validate("preallocate", "TRUE").is_ok());
        assert!(validate("preallocate", "yes").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "0.9").is_ok());
        assert!(validate("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate("compression.gzip.level", "-1").is_ok());
        assert!(validate("compression.gzip.level", "0").is_err());
        assert!(validate("leader.replication.throttled.replicas", "0:1, 1:2").is_ok());
        assert!(validate("leader.replication.throttled.replicas", "*").is_ok());
        assert!(validate("leader.replication.throttled.replicas", "0-1").is_err());
        assert!(validate(INTERNAL_SEGMENT_BYTES, "2000").is_ok());
        assert_eq!(
            validate_all(&map(&[
                ("min.compaction.lag.ms", "10"),
                ("max.compaction.lag.ms", "5")
            ]))
            .unwrap_err(),
            "conflict topic config setting min.compaction.lag.ms (10) > max.compaction.lag.ms (5)"
        );
        assert!(validate_all(&map(&[("remote.storage.enable", "true")])).is_err());
    }

    #[test]
    fn every_kafka_config_is_described_with_its_source() {
        let o = map(&[("retention.ms", "1000"), ("cleanup.policy", "compact")]);
        let d = describe(&LogConfig::default(), 1, &o);
        assert_eq!(d.len(), TOPIC_CONFIGS.len());
        let get = |n: &str| d.iter().find(|x| x.name == n).unwrap().clone();
        let r = get("retention.ms");
        assert_eq!((r.value.as_str(), r.source), ("1000", TOPIC_CONFIG));
        assert_eq!(
            r.synonyms,
            vec![("retention.ms", "1000".to_string(), TOPIC_CONFIG)]
        );
        let s = get("segment.ms");
        assert_eq!((s.source, s.synonyms.len()), (DEFAULT_CONFIG, 0));
        let c = get("cleanup.policy");
        assert_eq!(
            c.synonyms[1],
            ("log.cleanup.policy", "delete".to_string(), DEFAULT_CONFIG)
        );
        let m = get("min.insync.replicas");
        assert_eq!(m.source, DYNAMIC_DEFAULT_BROKER_CONFIG);
        // A broker default changed in the config file is a static broker config.
        let broker = LogConfig {
            retention_bytes: 5,
            ..LogConfig::default()
        };
        let b = describe(&broker, 1, &BTreeMap::new());
        let rb = b.iter().find(|x| x.name == "retention.bytes").unwrap();
        assert_eq!((rb.value.as_str(), rb.source), ("5", STATIC_BROKER_CONFIG));
        assert_eq!(rb.synonyms.len(), 2);
        // Every log-backed config is one the log understands.
        for def in TOPIC_CONFIGS.iter().filter(|d| d.effect == Effect::Log) {
            assert!(LOG_CONFIG_KEYS.contains(&def.name), "{}", def.name);
        }
    }

    #[test]
    fn compatibility_doc_lists_every_config_without_effect() {
        let doc = include_str!("../../../docs/compatibility.md");
        let listed: Vec<(&str, &str)> = doc
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells.len() == 4 && definition(cells[1]).is_some()).then(|| (cells[1], cells[2]))
            })
            .collect();
        let code: Vec<(&str, &str)> = not_yet().collect();
        assert_eq!(
            listed, code,
            "docs/compatibility.md's table of configs without effect"
        );
    }

    #[test]
    fn internal_segment_bytes_wins_and_is_described_when_set() {
        let o = map(&[
            ("segment.bytes", "1048576"),
            (INTERNAL_SEGMENT_BYTES, "2000"),
        ]);
        assert_eq!(
            log_config(&LogConfig::default(), &o).unwrap().segment_bytes,
            2000
        );
        let d = describe(&LogConfig::default(), 1, &o);
        assert!(d.iter().any(|x| x.name == INTERNAL_SEGMENT_BYTES));
        assert!(
            !describe(&LogConfig::default(), 1, &BTreeMap::new())
                .iter()
                .any(|x| x.name == INTERNAL_SEGMENT_BYTES)
        );
    }
}
