//! `fjord topic create|list|describe|alter|delete`.

use std::collections::BTreeMap;

use clap::Subcommand;
use serde_json::json;

use super::{Common, Output, key_value, print_json, print_table};

#[derive(Debug, Subcommand)]
pub enum TopicCmd {
    /// Create a topic.
    #[command(
        after_help = "Example:\n  fjord topic create orders --partitions 6 --config retention.ms=86400000"
    )]
    Create {
        name: String,
        /// Number of partitions (default: the broker's num.partitions).
        #[arg(long, short = 'p', default_value_t = -1, allow_negative_numbers = true)]
        partitions: i32,
        /// Replication factor (default: the broker's default.replication.factor).
        #[arg(long, short = 'r', default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// Topic config, KEY=VALUE with Kafka's names; repeat for more.
        #[arg(long, short = 'c', value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Only check that the topic could be created.
        #[arg(long)]
        dry_run: bool,
    },
    /// List topics.
    #[command(after_help = "Example:\n  fjord topic list --output json")]
    List,
    /// Show a topic's partitions, offsets and config overrides.
    #[command(after_help = "Example:\n  fjord topic describe orders --output json")]
    Describe { name: String },
    /// Add partitions or change configs.
    #[command(
        after_help = "Examples:\n  fjord topic alter orders --partitions 12\n  fjord topic alter orders --config retention.ms=3600000 --delete-config segment.ms"
    )]
    Alter {
        name: String,
        /// New (larger) number of partitions.
        #[arg(long, short = 'p')]
        partitions: Option<i32>,
        /// Set a topic config, KEY=VALUE; repeat for more.
        #[arg(long, short = 'c', value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Remove a topic config override (back to the default); repeat for more.
        #[arg(long, value_name = "KEY")]
        delete_config: Vec<String>,
    },
    /// Give partitions back to their preferred leader (the first replica), or, with
    /// --unclean, give leaderless partitions any live replica (losing what only the others
    /// had). Kafka's kafka-leader-election.
    #[command(
        after_help = "Examples:\n  fjord topic elect-leaders --all\n  fjord topic elect-leaders orders --partition 0 --partition 3\n  fjord topic elect-leaders orders --unclean"
    )]
    ElectLeaders {
        /// The topic (every partition of it unless --partition names some).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        topic: Option<String>,
        /// A partition of the topic; repeat for more.
        #[arg(long, short = 'p', requires = "topic")]
        partition: Vec<i32>,
        /// Every partition of every topic.
        #[arg(long)]
        all: bool,
        /// An unclean election: only partitions without a leader, from any live replica.
        #[arg(long)]
        unclean: bool,
    },
    /// Move a partition's replicas to other brokers (the new ones catch up and join the
    /// in-sync replicas, then the old ones leave), cancel a move, or list the moves in
    /// progress. Kafka's kafka-reassign-partitions.
    #[command(
        after_help = "Examples:\n  fjord topic reassign orders --partition 0 --replicas 2,3\n  fjord topic reassign orders --partition 0 --cancel\n  fjord topic reassign --list"
    )]
    Reassign {
        /// The topic.
        #[arg(required_unless_present = "list")]
        topic: Option<String>,
        /// The partition to move.
        #[arg(long, short = 'p', required_unless_present = "list")]
        partition: Option<i32>,
        /// The broker ids to move it to, the preferred leader first.
        #[arg(long, value_delimiter = ',', required_unless_present_any = ["cancel", "list"], conflicts_with_all = ["cancel", "list"])]
        replicas: Vec<i32>,
        /// Cancel the move in progress: the replicas it was adding leave.
        #[arg(long, conflicts_with = "list")]
        cancel: bool,
        /// List the moves in progress.
        #[arg(long)]
        list: bool,
    },
    /// Delete topics and all their data.
    #[command(after_help = "Example:\n  fjord topic delete orders")]
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub async fn run(cmd: TopicCmd, common: &Common) -> anyhow::Result<()> {
    let cluster = common.connect_cluster().await?;
    let client = cluster.bootstrap();
    match cmd {
        TopicCmd::Create {
            name,
            partitions,
            replication_factor,
            config,
            dry_run,
        } => {
            let configs: BTreeMap<String, String> = config
                .iter()
                .map(|c| key_value(c))
                .collect::<Result<_, _>>()?;
            client
                .create_topic(&name, partitions, replication_factor, &configs, dry_run)
                .await?;
            let verb = if dry_run {
                "could be created"
            } else {
                "created"
            };
            match common.output {
                Output::Json => print_json(
                    &json!({"topic": name, "result": if dry_run { "valid" } else { "created" }}),
                ),
                Output::Table => println!("topic {name} {verb}"),
            }
        }
        TopicCmd::List => {
            let topics = client.topics(None).await?;
            match common.output {
                Output::Json => print_json(&json!(topics
                    .iter()
                    .map(|t| json!({"name": t.name, "id": t.id, "partitions": t.partitions.len(), "internal": t.internal}))
                    .collect::<Vec<_>>())),
                Output::Table => {
                    let rows: Vec<Vec<String>> = topics
                        .iter()
                        .map(|t| vec![t.name.clone(), t.partitions.len().to_string(), t.id.clone()])
                        .collect();
                    print_table(&["NAME", "PARTITIONS", "ID"], &rows);
                }
            }
        }
        TopicCmd::Describe { name } => {
            let topic = client
                .topics(Some(std::slice::from_ref(&name)))
                .await
                .map_err(|e| anyhow::anyhow!("{e}; list topics with: fjord topic list"))?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    anyhow::anyhow!("topic {name} not found; list topics with: fjord topic list")
                })?;
            let indexes: Vec<i32> = topic.partitions.iter().map(|p| p.index).collect();
            let start = cluster.list_offsets(&name, &indexes, -2).await?;
            let end = cluster.list_offsets(&name, &indexes, -1).await?;
            let configs = client.topic_configs(&name).await?;
            let overrides: Vec<_> = configs.iter().filter(|c| !c.is_default).collect();
            match common.output {
                Output::Json => print_json(&json!({
                    "name": topic.name,
                    "id": topic.id,
                    "internal": topic.internal,
                    "partitions": topic.partitions.iter().zip(start.iter().zip(&end)).map(|(p, ((_, s), (_, e)))| json!({
                        "partition": p.index, "leader": p.leader, "replicas": p.replicas, "isr": p.isr,
                        "log_start_offset": s, "log_end_offset": e, "records": e - s,
                    })).collect::<Vec<_>>(),
                    "configs": configs.iter().map(|c| (c.name.clone(), json!({"value": c.value, "default": c.is_default}))).collect::<serde_json::Map<_, _>>(),
                })),
                Output::Table => {
                    println!("topic:       {}", topic.name);
                    println!("id:          {}", topic.id);
                    println!("partitions:  {}", topic.partitions.len());
                    if overrides.is_empty() {
                        println!("configs:     (all defaults)");
                    } else {
                        let list: Vec<String> = overrides
                            .iter()
                            .map(|c| format!("{}={}", c.name, c.value.clone().unwrap_or_default()))
                            .collect();
                        println!("configs:     {}", list.join(", "));
                    }
                    println!();
                    let rows: Vec<Vec<String>> = topic
                        .partitions
                        .iter()
                        .zip(start.iter().zip(&end))
                        .map(|(p, ((_, s), (_, e)))| {
                            let ids = |v: &[i32]| {
                                v.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
                            };
                            vec![
                                p.index.to_string(),
                                p.leader.to_string(),
                                ids(&p.replicas),
                                ids(&p.isr),
                                s.to_string(),
                                e.to_string(),
                            ]
                        })
                        .collect();
                    print_table(
                        &["PARTITION", "LEADER", "REPLICAS", "ISR", "START", "END"],
                        &rows,
                    );
                }
            }
        }
        TopicCmd::Alter {
            name,
            partitions,
            config,
            delete_config,
        } => {
            if partitions.is_none() && config.is_empty() && delete_config.is_empty() {
                anyhow::bail!(
                    "nothing to change: give --partitions, --config KEY=VALUE or --delete-config KEY"
                );
            }
            if let Some(p) = partitions {
                client.create_partitions(&name, p).await?;
            }
            let mut changes: Vec<(String, Option<String>)> = Vec::new();
            for c in &config {
                let (k, v) = key_value(c)?;
                changes.push((k, Some(v)));
            }
            changes.extend(delete_config.into_iter().map(|k| (k, None)));
            if !changes.is_empty() {
                client.alter_topic_configs(&name, &changes).await?;
            }
            match common.output {
                Output::Json => print_json(&json!({"topic": name, "result": "altered"})),
                Output::Table => println!("topic {name} altered"),
            }
        }
        TopicCmd::ElectLeaders {
            topic,
            partition,
            all,
            unclean,
        } => {
            let named = match topic {
                None => None,
                Some(topic) if partition.is_empty() => {
                    let info = client
                        .topics(Some(std::slice::from_ref(&topic)))
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}; list topics with: fjord topic list"))?
                        .into_iter()
                        .next()
                        .filter(|t| !t.partitions.is_empty())
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "topic {topic} not found; list topics with: fjord topic list"
                            )
                        })?;
                    let indexes = info.partitions.iter().map(|p| p.index).collect();
                    Some(vec![(topic, indexes)])
                }
                Some(topic) => Some(vec![(topic, partition)]),
            };
            debug_assert!(all || named.is_some());
            let outcomes = client.elect_leaders(unclean, named.as_deref()).await?;
            let kind = if unclean { "unclean" } else { "preferred" };
            let result = |o: &fjord_client::ElectionOutcome| match o.error_code {
                0 => "elected".to_string(),
                // ELECTION_NOT_NEEDED
                84 => "not needed".to_string(),
                code => fjord_client::ClientError::kafka(code, o.message.as_deref()).to_string(),
            };
            match common.output {
                Output::Json => print_json(&json!(outcomes
                    .iter()
                    .map(|o| json!({"topic": o.topic, "partition": o.partition, "election": kind, "result": result(o)}))
                    .collect::<Vec<_>>())),
                Output::Table => {
                    let rows: Vec<Vec<String>> = outcomes
                        .iter()
                        .map(|o| vec![o.topic.clone(), o.partition.to_string(), result(o)])
                        .collect();
                    if rows.is_empty() {
                        println!("no partition needed a {kind} election");
                    } else {
                        print_table(&["TOPIC", "PARTITION", "RESULT"], &rows);
                    }
                }
            }
            let failed = outcomes
                .iter()
                .filter(|o| o.error_code != 0 && o.error_code != 84)
                .count();
            if failed > 0 {
                anyhow::bail!(
                    "{failed} partition(s) got no new leader: a preferred leader must be alive and in sync (see fjord topic describe); an unclean election needs a live replica"
                );
            }
        }
        TopicCmd::Reassign {
            topic,
            partition,
            replicas,
            cancel,
            list,
        } => {
            if list {
                let moving = client.reassignments().await?;
                let ids = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
                match common.output {
                    Output::Json => print_json(&json!(moving
                        .iter()
                        .map(|m| json!({"topic": m.topic, "partition": m.partition, "replicas": m.replicas, "adding": m.adding, "removing": m.removing}))
                        .collect::<Vec<_>>())),
                    Output::Table if moving.is_empty() => println!("no partition is being moved"),
                    Output::Table => {
                        let rows: Vec<Vec<String>> = moving
                            .iter()
                            .map(|m| {
                                vec![
                                    m.topic.clone(),
                                    m.partition.to_string(),
                                    ids(&m.replicas),
                                    ids(&m.adding),
                                    ids(&m.removing),
                                ]
                            })
                            .collect();
                        print_table(&["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"], &rows);
                    }
                }
                return Ok(());
            }
            let (Some(topic), Some(partition)) = (topic, partition) else {
                anyhow::bail!("name the topic and --partition to move (or --list)");
            };
            let target = (!cancel).then_some(replicas.as_slice());
            client
                .reassign(&topic, partition, target)
                .await
                .map_err(|e| anyhow::anyhow!("{e}; see the brokers with: fjord cluster info"))?;
            let result = if cancel { "cancelled" } else { "started" };
            match common.output {
                Output::Json => print_json(
                    &json!({"topic": topic, "partition": partition, "replicas": target, "result": result}),
                ),
                Output::Table if cancel => println!("the move of {topic}-{partition} is cancelled"),
                Output::Table => println!(
                    "{topic}-{partition} is moving to brokers {:?}; follow it with: fjord topic reassign --list",
                    replicas
                ),
            }
        }
        TopicCmd::Delete { names } => {
            for name in &names {
                client.delete_topic(name).await?;
                match common.output {
                    Output::Json => print_json(&json!({"topic": name, "result": "deleted"})),
                    Output::Table => println!("topic {name} deleted"),
                }
            }
        }
    }
    Ok(())
}
