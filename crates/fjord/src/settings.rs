//! The broker config file: TOML with Kafka's config names.
//!
//! ```toml
//! "num.partitions" = 3
//! "auto.create.topics.enable" = true
//! "log.retention.hours" = 24
//! ```

use std::path::Path;

use anyhow::{Context, bail};
use fjord_broker::BrokerConfig;
use fjord_broker::config::{ReplicaSelector, Roles};

/// Broker keys the file may set (beyond the listener flags).
pub const KEYS: &[&str] = &[
    "node.id",
    "num.partitions",
    "auto.create.topics.enable",
    "default.replication.factor",
    "socket.request.max.bytes",
    "max.connections",
    "min.insync.replicas",
    "message.max.bytes",
    "log.retention.ms",
    "log.retention.minutes",
    "log.retention.hours",
    "log.retention.bytes",
    "log.segment.bytes",
    "log.roll.ms",
    "log.roll.hours",
    "log.index.interval.bytes",
    "log.index.size.max.bytes",
    "log.cleanup.policy",
    "log.cleaner.delete.retention.ms",
    "log.cleaner.dedupe.buffer.size",
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "log.message.timestamp.type",
    "compression.type",
    "log.message.timestamp.before.max.ms",
    "log.message.timestamp.after.max.ms",
    "log.retention.check.interval.ms",
    "offsets.topic.num.partitions",
    "offsets.retention.minutes",
    "offset.metadata.max.bytes",
    "group.initial.rebalance.delay.ms",
    "group.min.session.timeout.ms",
    "group.max.session.timeout.ms",
    "group.consumer.session.timeout.ms",
    "group.consumer.heartbeat.interval.ms",
    "transaction.state.log.num.partitions",
    "offsets.topic.replication.factor",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "transaction.max.timeout.ms",
    "transactional.id.expiration.ms",
    "producer.id.expiration.ms",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms",
    "max.incremental.fetch.session.cache.slots",
    "controller.quorum.voters",
    "process.roles",
    "broker.rack",
    "broker.heartbeat.interval.ms",
    "broker.session.timeout.ms",
    "unclean.leader.election.enable",
    "replica.lag.time.max.ms",
    "replica.selector.class",
    "log.sync.method",
    "auto.leader.rebalance.enable",
    "leader.imbalance.check.interval.seconds",
];

/// Applies a TOML file's settings to `config`; an unknown key or bad value names itself.
pub fn apply_file(config: &mut BrokerConfig, path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {} as TOML", path.display()))?;
    for (key, value) in &table {
        let value = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!(
                "{}: {key} must be a string, integer or boolean, not {}",
                path.display(),
                other.type_str()
            ),
        };
        apply(config, key, &value).with_context(|| format!("in {}", path.display()))?;
    }
    Ok(())
}

/// A Kafka time setting in a coarser unit (an int, as Kafka types `log.retention.hours`),
/// in milliseconds; a negative value means "no limit" (-1), as Kafka reads it.
fn in_ms(key: &str, value: &str, unit_ms: i64) -> anyhow::Result<String> {
    let v: i32 = value.trim().parse().with_context(|| {
        format!(
            "{key} must be an integer from {} to {}, got {value:?}",
            i32::MIN,
            i32::MAX
        )
    })?;
    Ok(if v < 0 {
        "-1".to_string()
    } else {
        (i64::from(v) * unit_ms).to_string()
    })
}

/// Sets one broker setting by its Kafka name.
pub fn apply(config: &mut BrokerConfig, key: &str, value: &str) -> anyhow::Result<()> {
    let int = || -> anyhow::Result<i64> {
        value
            .trim()
            .parse::<i64>()
            .with_context(|| format!("{key} must be an integer, got {value:?}"))
    };
    let positive = |v: i64| -> anyhow::Result<i64> {
        if v < 1 {
            bail!("{key} must be at least 1, got {v}");
        }
        Ok(v)
    };
    let log = &mut config.log_defaults;
    let log_key = |k: &str, v: &str, log: &mut fjord_log::LogConfig| -> anyhow::Result<()> {
        log.set(k, v).map_err(|e| anyhow::anyhow!("{key}: {e}"))
    };
    match key {
        "node.id" => config.node_id = i32::try_from(int()?).context("node.id out of range")?,
        "controller.quorum.voters" => {
            config.voters = fjord_broker::config::parse_voters(value)
                .map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
        }
        "process.roles" => {
            let mut roles: Vec<&str> = value.split(',').map(str::trim).collect();
            roles.sort_unstable();
            config.roles = Some(match roles.as_slice() {
                ["broker", "controller"] => Roles::Both,
                ["broker"] => Roles::Broker,
                ["controller"] => Roles::Controller,
                _ => bail!(
                    "{key} = {value:?}: a node is \"broker,controller\" (a voter that serves clients), \"controller\" (a voter only) or \"broker\" (not among the voters)"
                ),
            });
        }
        "broker.heartbeat.interval.ms" => {
            config.broker_heartbeat_interval_ms =
                u64::try_from(positive(int()?)?).context("out of range")?
        }
        "broker.session.timeout.ms" => {
            config.broker_session_timeout_ms =
                u64::try_from(positive(int()?)?).context("out of range")?
        }
        "unclean.leader.election.enable" => {
            config.unclean_leader_election = value
                .trim()
                .parse()
                .with_context(|| format!("{key} must be true or false"))?;
        }
        "replica.lag.time.max.ms" => config.replica_lag_time_max_ms = positive(int()?)?,
        "auto.leader.rebalance.enable" => {
            config.auto_leader_rebalance = value
                .trim()
                .parse()
                .with_context(|| format!("{key} must be true or false"))?;
        }
        "leader.imbalance.check.interval.seconds" => {
            config.leader_imbalance_check_interval_ms = u64::try_from(positive(int()?)?)
                .ok()
                .and_then(|s| s.checked_mul(1000))
                .context("out of range")?
        }
        "offsets.topic.replication.factor" => {
            config.offsets_topic_replication_factor =
                i16::try_from(positive(int()?)?).with_context(|| format!("{key} out of range"))?
        }
        "transaction.state.log.replication.factor" => {
            config.transaction_state_replication_factor =
                i16::try_from(positive(int()?)?).with_context(|| format!("{key} out of range"))?
        }
        "transaction.state.log.min.isr" => {
            config.transaction_state_min_isr =
                i32::try_from(positive(int()?)?).with_context(|| format!("{key} out of range"))?
        }
        "replica.selector.class" => {
            config.replica_selector = match value.trim() {
                "" => None,
                class => Some(ReplicaSelector::from_class(class).with_context(|| {
                    format!(
                        "{key}: Fjord has Kafka's {} and {}, not {class}",
                        ReplicaSelector::RACK_AWARE,
                        ReplicaSelector::LEADER
                    )
                })?),
            }
        }
        "log.sync.method" => {
            config.sync_filesystem = match value.trim() {
                "syncfs" => true,
                "fdatasync" => false,
                other => bail!("{key} is syncfs or fdatasync, not {other:?}"),
            }
        }
        "broker.rack" => config.rack = Some(value.trim().to_string()).filter(|r| !r.is_empty()),
        "num.partitions" => {
            config.num_partitions =
                i32::try_from(positive(int()?)?).context("num.partitions out of range")?
        }
        "auto.create.topics.enable" => {
            config.auto_create_topics = value
                .trim()
                .parse()
                .with_context(|| format!("{key} must be true or false"))?;
        }
        "default.replication.factor" => {
            config.default_replication_factor = i16::try_from(positive(int()?)?)
                .context("default.replication.factor out of range")?;
        }
        "socket.request.max.bytes" => config.socket_request_max_bytes = positive(int()?)? as usize,
        "max.connections" => config.max_connections = positive(int()?)? as usize,
        "min.insync.replicas" => {
            config.min_insync_replicas = i32::try_from(positive(int()?)?).context("out of range")?
        }
        "message.max.bytes" => log_key("max.message.bytes", value, log)?,
        "log.retention.ms" => log_key("retention.ms", value, log)?,
        "log.retention.minutes" => log_key("retention.ms", &in_ms(key, value, 60_000)?, log)?,
        "log.retention.hours" => log_key("retention.ms", &in_ms(key, value, 3_600_000)?, log)?,
        "log.retention.bytes" => log_key("retention.bytes", value, log)?,
        "log.segment.bytes" => log_key("segment.bytes", value, log)?,
        "log.roll.ms" => log_key("segment.ms", value, log)?,
        "log.roll.hours" => log_key("segment.ms", &in_ms(key, value, 3_600_000)?, log)?,
        "log.index.interval.bytes" => log_key("index.interval.bytes", value, log)?,
        "log.index.size.max.bytes" => log_key("segment.index.bytes", value, log)?,
        "log.cleanup.policy" => log_key("cleanup.policy", value, log)?,
        "log.cleaner.delete.retention.ms" => log_key("delete.retention.ms", value, log)?,
        "log.cleaner.dedupe.buffer.size" => {
            // Kafka's minimum: 1 MiB per cleaner thread.
            let v = int()?;
            if v < 1 << 20 {
                bail!("{key} must be at least 1048576 (1 MiB), got {v}");
            }
            log.cleaner_dedupe_bytes = v as u64;
        }
        "log.flush.interval.messages" => log_key("flush.messages", value, log)?,
        "log.flush.interval.ms" => log_key("flush.ms", value, log)?,
        "log.message.timestamp.type" => log_key("message.timestamp.type", value, log)?,
        "compression.type" => log_key("compression.type", value, log)?,
        "log.message.timestamp.before.max.ms" => {
            log_key("message.timestamp.before.max.ms", value, log)?
        }
        "log.message.timestamp.after.max.ms" => {
            log_key("message.timestamp.after.max.ms", value, log)?
        }
        "offsets.topic.num.partitions" => {
            config.offsets_topic_partitions =
                i32::try_from(positive(int()?)?).context("out of range")?;
        }
        "offsets.retention.minutes" => config.offsets_retention_minutes = positive(int()?)?,
        "offset.metadata.max.bytes" => {
            config.offset_metadata_max_bytes = positive(int()?)? as usize
        }
        "group.initial.rebalance.delay.ms" => {
            let v = int()?;
            if v < 0 {
                bail!("{key} must not be negative, got {v}");
            }
            config.group_initial_rebalance_delay_ms = v;
        }
        "group.min.session.timeout.ms" => {
            config.group_min_session_timeout_ms =
                i32::try_from(positive(int()?)?).context("out of range")?;
        }
        "group.max.session.timeout.ms" => {
            config.group_max_session_timeout_ms =
                i32::try_from(positive(int()?)?).context("out of range")?;
        }
        "group.consumer.session.timeout.ms" => {
            config.group_consumer_session_timeout_ms = positive(int()?)?
        }
        "group.consumer.heartbeat.interval.ms" => {
            config.group_consumer_heartbeat_interval_ms =
                i32::try_from(positive(int()?)?).context("out of range")?;
        }
        "transaction.state.log.num.partitions" => {
            config.transaction_state_partitions =
                i32::try_from(positive(int()?)?).context("out of range")?;
        }
        "transaction.max.timeout.ms" => {
            config.transaction_max_timeout_ms =
                i32::try_from(positive(int()?)?).context("out of range")?;
        }
        "transactional.id.expiration.ms" => {
            config.transactional_id_expiration_ms = positive(int()?)?
        }
        "producer.id.expiration.ms" => config.producer_id_expiration_ms = positive(int()?)?,
        "transaction.abort.timed.out.transaction.cleanup.interval.ms" => {
            config.transaction_abort_interval_ms = positive(int()?)?
        }
        "max.incremental.fetch.session.cache.slots" => {
            config.fetch_session_cache_slots =
                usize::try_from(int()?).context("must be 0 or more")?;
        }
        "log.retention.check.interval.ms" => {
            config.retention_check_interval_ms = positive(int()?)? as u64;
        }
        _ => bail!(
            "unknown setting {key:?}; known settings: {}",
            KEYS.join(", ")
        ),
    }
    config
        .log_defaults
        .validate()
        .map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_time_units_never_overflow() {
        let mut c = BrokerConfig::default();
        apply(&mut c, "log.retention.hours", &i32::MAX.to_string()).unwrap();
        assert_eq!(c.log_defaults.retention_ms, i64::from(i32::MAX) * 3_600_000);
        apply(&mut c, "log.retention.minutes", "-1").unwrap();
        assert_eq!(c.log_defaults.retention_ms, -1);
        for (key, value) in [
            ("log.retention.hours", "9223372036854775807"),
            ("log.retention.hours", "2562048"),
            ("log.roll.hours", "99999999999"),
        ] {
            let mut c = BrokerConfig::default();
            let e = apply(&mut c, key, value).map(|()| c.log_defaults.segment_ms);
            // i32 range as Kafka: the first and last are refused; 2562048 hours fits in i64 ms.
            if value.parse::<i32>().is_ok() {
                assert!(e.is_ok(), "{key}={value}: {e:?}");
            } else {
                let e = e.unwrap_err().to_string();
                assert!(e.contains(key) && e.contains("integer"), "{e}");
            }
        }
    }

    #[test]
    fn settings_that_contradict_each_other_are_refused() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.validate(), Ok(()));
        apply(&mut c, "group.min.session.timeout.ms", "60000").unwrap();
        apply(&mut c, "group.max.session.timeout.ms", "30000").unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.contains("group.min.session.timeout.ms"), "{e}");
        let mut c = BrokerConfig::default();
        apply(&mut c, "group.consumer.heartbeat.interval.ms", "45000").unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.contains("group.consumer.heartbeat.interval.ms"), "{e}");
        let mut c = BrokerConfig::default();
        apply(&mut c, "offsets.retention.minutes", &i64::MAX.to_string()).unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .contains("offsets.retention.minutes")
        );
    }

    #[test]
    fn roles_are_checked_against_the_voters() {
        let node = |id: &str, roles: Option<&str>, listen: &str| {
            let mut c = BrokerConfig::default();
            apply(
                &mut c,
                "controller.quorum.voters",
                "1@a:9093,2@b:9093,3@c:9093",
            )
            .unwrap();
            apply(&mut c, "node.id", id).unwrap();
            if let Some(r) = roles {
                apply(&mut c, "process.roles", r).unwrap();
            }
            c.controller_listen = Some(listen.into());
            c.validate()
        };
        assert_eq!(node("2", None, "b:9093"), Ok(()));
        assert_eq!(node("2", Some("broker,controller"), "b:9093"), Ok(()));
        assert_eq!(node("4", Some("broker"), "d:9093"), Ok(()));
        // A voter id with broker only, a non-voter without it (a mistyped voter id).
        assert!(
            node("2", Some("broker"), "b:9093")
                .unwrap_err()
                .contains("a voter is a controller too")
        );
        assert!(
            node("4", None, "d:9093")
                .unwrap_err()
                .contains("--process-roles broker")
        );
        // A controller not among the voters observes until it is added as a voter.
        assert_eq!(node("4", Some("broker,controller"), "d:9093"), Ok(()));
        assert_eq!(node("3", Some("controller"), "c:9093"), Ok(()));
        assert_eq!(node("4", Some("controller"), "d:9093"), Ok(()));
        // The leader replicates to a broker-only node's address: never 0.0.0.0.
        assert!(
            node("4", Some("broker"), "0.0.0.0:9093")
                .unwrap_err()
                .contains("unspecified")
        );
        assert!(
            node("4", Some("broker"), "[::]:9093")
                .unwrap_err()
                .contains("unspecified")
        );
    }

    #[test]
    fn kafka_names_apply_and_unknown_keys_fail() {
        let mut c = BrokerConfig::default();
        apply(&mut c, "num.partitions", "6").unwrap();
        apply(&mut c, "log.retention.hours", "2").unwrap();
        apply(&mut c, "auto.create.topics.enable", "false").unwrap();
        assert_eq!(c.num_partitions, 6);
        assert_eq!(c.log_defaults.retention_ms, 7_200_000);
        assert!(!c.auto_create_topics);
        let e = apply(&mut c, "num.partition", "1").unwrap_err().to_string();
        assert!(e.contains("unknown setting"), "{e}");
        let e = apply(&mut c, "num.partitions", "0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("num.partitions"), "{e}");
        apply(&mut c, "controller.quorum.voters", "1@a:9093, 2@b:9093").unwrap();
        assert_eq!(c.voters.len(), 2);
        assert_eq!(c.voters[&2], "b:9093");
        apply(&mut c, "process.roles", "controller,broker").unwrap();
        assert_eq!(c.roles, Some(Roles::Both));
        apply(&mut c, "process.roles", "broker").unwrap();
        assert_eq!(c.roles, Some(Roles::Broker));
        apply(&mut c, "process.roles", "controller").unwrap();
        assert_eq!(c.roles, Some(Roles::Controller));
        assert!(apply(&mut c, "process.roles", "controller,tea").is_err());
        assert!(apply(&mut c, "controller.quorum.voters", "1@a:9093,1@b:1").is_err());
        apply(&mut c, "broker.rack", "eu-1a").unwrap();
        assert_eq!(c.rack.as_deref(), Some("eu-1a"));
        apply(
            &mut c,
            "replica.selector.class",
            ReplicaSelector::RACK_AWARE,
        )
        .unwrap();
        assert_eq!(c.replica_selector, Some(ReplicaSelector::RackAware));
        apply(&mut c, "replica.selector.class", "").unwrap();
        assert_eq!(c.replica_selector, None);
        let e = apply(&mut c, "replica.selector.class", "com.example.Mine").unwrap_err();
        assert!(e.to_string().contains("RackAwareReplicaSelector"), "{e}");
        assert!(c.sync_filesystem);
        apply(&mut c, "log.sync.method", "fdatasync").unwrap();
        assert!(!c.sync_filesystem);
        apply(&mut c, "log.sync.method", "syncfs").unwrap();
        assert!(c.sync_filesystem);
        // Any text is a rack name; every other key refuses nonsense.
        for key in KEYS.iter().filter(|k| **k != "broker.rack") {
            let e = apply(&mut BrokerConfig::default(), key, "not-a-value");
            assert!(
                e.is_err_and(|e| !e.to_string().contains("unknown setting")),
                "{key}"
            );
        }
    }
}
