//! `fjord group list|describe|reset-offsets|delete|history`.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use fjord_client::Cluster;
use serde_json::json;

use super::consume::parse_time;
use super::{Common, Output, print_json, print_table};

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// List consumer groups and their states.
    #[command(after_help = "Example:\n  fjord group list --output json")]
    List,
    /// Members, assignments, and per partition the committed offset, the end, the lag in
    /// records and the lag in time (how old the oldest unconsumed record is).
    #[command(after_help = "Example:\n  fjord group describe billing --output json")]
    Describe { group: String },
    /// Move a group's committed offsets. A dry run unless --execute; the group must be empty.
    #[command(
        after_help = "Examples:\n  fjord group reset-offsets billing --topic orders --to-earliest\n  fjord group reset-offsets billing --topic orders --shift-by -100 --execute\n  fjord group reset-offsets billing --topic orders --to-datetime 2026-11-22T09:00:00Z --execute"
    )]
    ResetOffsets(ResetArgs),
    /// Delete an empty group and its committed offsets.
    #[command(after_help = "Example:\n  fjord group delete billing")]
    Delete { group: String },
    /// The group's recent rebalance timeline (from the broker's HTTP port).
    #[command(after_help = "Example:\n  fjord group history billing --http 127.0.0.1:9644")]
    History {
        group: String,
        /// The broker's HTTP address.
        #[arg(long, env = "FJORD_HTTP", default_value = "127.0.0.1:9644")]
        http: String,
    },
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    pub group: String,
    /// Topic whose offsets move (every partition of it).
    #[arg(long, required = true)]
    pub topic: String,
    #[arg(long, group = "target")]
    pub to_earliest: bool,
    #[arg(long, group = "target")]
    pub to_latest: bool,
    #[arg(long, group = "target", value_name = "OFFSET")]
    pub to_offset: Option<i64>,
    /// Epoch milliseconds or an RFC 3339 time (2026-01-31T09:30:00Z, offsets allowed).
    #[arg(long, group = "target", value_name = "TIME")]
    pub to_datetime: Option<String>,
    #[arg(
        long,
        group = "target",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub shift_by: Option<i64>,
    /// Commit the new offsets (without it, only show them).
    #[arg(long)]
    pub execute: bool,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Per partition of every topic the group has offsets for or is assigned.
struct LagRow {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    end: i64,
    lag: Option<i64>,
    lag_ms: Option<i64>,
    owner: Option<String>,
}

async fn lag_rows(
    cluster: &Cluster,
    committed: Vec<((String, i32), i64)>,
    desc: &fjord_client::GroupDescription,
) -> anyhow::Result<Vec<LagRow>> {
    let committed: BTreeMap<(String, i32), i64> = committed.into_iter().collect();
    let mut owners: BTreeMap<(String, i32), String> = BTreeMap::new();
    for m in &desc.members {
        for (t, p) in &m.assignment {
            owners.insert((t.clone(), *p), m.member_id.clone());
        }
    }
    let mut keys: Vec<(String, i32)> = committed.keys().chain(owners.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in &keys {
        by_topic.entry(t.clone()).or_default().push(*p);
    }
    let now = now_ms();
    let mut rows = Vec::new();
    for (topic, parts) in by_topic {
        let ends: BTreeMap<i32, i64> = cluster
            .list_offsets(&topic, &parts, -1)
            .await?
            .into_iter()
            .collect();
        for p in parts {
            let end = ends.get(&p).copied().unwrap_or(-1);
            let c = committed.get(&(topic.clone(), p)).copied();
            let lag = c.map(|c| (end - c).max(0));
            let lag_ms = match (c, lag) {
                (Some(c), Some(l)) if l > 0 => {
                    let f = cluster.fetch(&topic, p, c, 0, 64 * 1024).await?;
                    f.records.first().map(|r| (now - r.timestamp).max(0))
                }
                (Some(_), Some(_)) => Some(0),
                _ => None,
            };
            rows.push(LagRow {
                topic: topic.clone(),
                partition: p,
                committed: c,
                end,
                lag,
                lag_ms,
                owner: owners.get(&(topic.clone(), p)).cloned(),
            });
        }
    }
    Ok(rows)
}

fn dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

pub async fn run(cmd: GroupCmd, common: &Common) -> anyhow::Result<()> {
    if let GroupCmd::History { group, http } = &cmd {
        return history(group, http, common).await;
    }
    // Each group's requests go to its coordinator, offsets to partition leaders, and every
    // broker lists the groups it coordinates.
    let cluster = common.connect_cluster().await?;
    match cmd {
        GroupCmd::List => {
            let mut groups = Vec::new();
            for broker in cluster.brokers().await? {
                groups.extend(broker.list_groups().await?);
            }
            groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
            groups.dedup_by(|a, b| a.group_id == b.group_id);
            match common.output {
                Output::Json => print_json(&json!(groups.iter().map(|g| json!({"group": g.group_id, "state": g.state, "protocol_type": g.protocol_type})).collect::<Vec<_>>())),
                Output::Table => {
                    let rows: Vec<Vec<String>> = groups.iter().map(|g| vec![g.group_id.clone(), g.state.clone(), g.protocol_type.clone()]).collect();
                    print_table(&["GROUP", "STATE", "TYPE"], &rows);
                }
            }
        }
        GroupCmd::Describe { group } => {
            let group = group.as_str();
            let (desc, committed) = cluster
                .with_coordinator(group, 0, |c| async move {
                    Ok((
                        c.describe_group(group).await?,
                        c.committed_offsets(group).await?,
                    ))
                })
                .await?;
            if desc.state == "Dead" && committed.is_empty() {
                anyhow::bail!("group {group} does not exist; list groups with: fjord group list");
            }
            let rows = lag_rows(&cluster, committed, &desc).await?;
            match common.output {
                Output::Json => print_json(&json!({
                    "group": desc.group_id,
                    "state": desc.state,
                    "protocol_type": desc.protocol_type,
                    "protocol": desc.protocol,
                    "members": desc.members.iter().map(|m| json!({
                        "member_id": m.member_id, "group_instance_id": m.group_instance_id,
                        "client_id": m.client_id, "client_host": m.client_host,
                        "assignment": m.assignment.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "offsets": rows.iter().map(|r| json!({
                        "topic": r.topic, "partition": r.partition, "committed": r.committed, "log_end_offset": r.end,
                        "lag": r.lag, "lag_ms": r.lag_ms, "member_id": r.owner,
                    })).collect::<Vec<_>>(),
                    "total_lag": rows.iter().filter_map(|r| r.lag).sum::<i64>(),
                })),
                Output::Table => {
                    println!("group:     {}", desc.group_id);
                    println!("state:     {}", desc.state);
                    println!("protocol:  {} {}", desc.protocol_type, desc.protocol);
                    println!("members:   {}", desc.members.len());
                    println!();
                    if !desc.members.is_empty() {
                        let members: Vec<Vec<String>> = desc
                            .members
                            .iter()
                            .map(|m| {
                                let parts: Vec<String> = m
                                    .assignment
                                    .iter()
                                    .map(|(t, p)| format!("{t}-{p}"))
                                    .collect();
                                vec![
                                    m.member_id.clone(),
                                    m.client_id.clone(),
                                    m.client_host.clone(),
                                    parts.join(","),
                                ]
                            })
                            .collect();
                        print_table(&["MEMBER", "CLIENT", "HOST", "ASSIGNMENT"], &members);
                        println!();
                    }
                    let table: Vec<Vec<String>> = rows
                        .iter()
                        .map(|r| {
                            vec![
                                r.topic.clone(),
                                r.partition.to_string(),
                                dash(r.committed),
                                r.end.to_string(),
                                dash(r.lag),
                                r.lag_ms.map_or_else(
                                    || "-".into(),
                                    |ms| format!("{:.1}s", ms as f64 / 1000.0),
                                ),
                                dash(r.owner.clone()),
                            ]
                        })
                        .collect();
                    print_table(
                        &[
                            "TOPIC",
                            "PARTITION",
                            "COMMITTED",
                            "END",
                            "LAG",
                            "LAG-TIME",
                            "MEMBER",
                        ],
                        &table,
                    );
                }
            }
        }
        GroupCmd::ResetOffsets(args) => reset(&cluster, args, common).await?,
        GroupCmd::Delete { group } => {
            let g = group.as_str();
            cluster
                .with_coordinator(g, 0, |c| async move { c.delete_group(g).await })
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{e}; a group with members cannot be deleted: stop its consumers first"
                    )
                })?;
            match common.output {
                Output::Json => print_json(&json!({"group": group, "result": "deleted"})),
                Output::Table => println!("group {group} deleted"),
            }
        }
        GroupCmd::History { .. } => {}
    }
    Ok(())
}

async fn reset(cluster: &Cluster, args: ResetArgs, common: &Common) -> anyhow::Result<()> {
    let group = args.group.as_str();
    let info = cluster
        .bootstrap()
        .topics(Some(std::slice::from_ref(&args.topic)))
        .await?;
    let topic = info
        .first()
        .ok_or_else(|| anyhow::anyhow!("topic {} not found", args.topic))?;
    let parts: Vec<i32> = topic.partitions.iter().map(|p| p.index).collect();
    let starts: BTreeMap<i32, i64> = cluster
        .list_offsets(&args.topic, &parts, -2)
        .await?
        .into_iter()
        .collect();
    let ends: BTreeMap<i32, i64> = cluster
        .list_offsets(&args.topic, &parts, -1)
        .await?
        .into_iter()
        .collect();
    let current: BTreeMap<i32, i64> = cluster
        .with_coordinator(
            group,
            0,
            |c| async move { c.committed_offsets(group).await },
        )
        .await?
        .into_iter()
        .filter(|((t, _), _)| *t == args.topic)
        .map(|((_, p), o)| (p, o))
        .collect();
    let by_time: BTreeMap<i32, i64> = match &args.to_datetime {
        Some(t) => cluster
            .list_offsets(&args.topic, &parts, parse_time(t)?)
            .await?
            .into_iter()
            .collect(),
        None => BTreeMap::new(),
    };
    let mut plan = Vec::new();
    for p in &parts {
        let (start, end) = (starts[p], ends[p]);
        let target = if args.to_earliest {
            start
        } else if args.to_latest {
            end
        } else if let Some(o) = args.to_offset {
            o
        } else if args.to_datetime.is_some() {
            by_time.get(p).copied().filter(|o| *o >= 0).unwrap_or(end)
        } else if let Some(n) = args.shift_by {
            current.get(p).copied().unwrap_or(start) + n
        } else {
            anyhow::bail!(
                "say where to: --to-earliest, --to-latest, --to-offset N, --to-datetime TIME or --shift-by N"
            );
        };
        plan.push((*p, current.get(p).copied(), target.clamp(start, end)));
    }
    if args.execute {
        let commits: Vec<(String, i32, i64)> = plan
            .iter()
            .map(|(p, _, o)| (args.topic.clone(), *p, *o))
            .collect();
        let commits = &commits;
        cluster
            .with_coordinator(group, 0, |c| async move { c.commit_offsets(group, commits).await })
            .await
            .map_err(|e| {
            anyhow::anyhow!("{e}; offsets can only be reset while the group has no members: stop its consumers first")
        })?;
    }
    match common.output {
        Output::Json => print_json(&json!({
            "group": args.group, "topic": args.topic, "executed": args.execute,
            "partitions": plan.iter().map(|(p, c, n)| json!({"partition": p, "current": c, "new": n})).collect::<Vec<_>>(),
        })),
        Output::Table => {
            let rows: Vec<Vec<String>> = plan
                .iter()
                .map(|(p, c, n)| vec![args.topic.clone(), p.to_string(), dash(*c), n.to_string()])
                .collect();
            print_table(&["TOPIC", "PARTITION", "CURRENT", "NEW"], &rows);
            if args.execute {
                println!("offsets of group {} reset", args.group);
            } else {
                println!("dry run: nothing changed; add --execute to commit these offsets");
            }
        }
    }
    Ok(())
}

async fn history(group: &str, http: &str, common: &Common) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(http).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the broker's HTTP port at {http} ({e}); pass --http HOST:PORT"
        )
    })?;
    s.write_all(
        format!("GET /v1/groups/{group}/history HTTP/1.0\r\nHost: fjord\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    let (head, json_text) = body.split_once("\r\n\r\n").unwrap_or((&body, ""));
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!("the broker answered: {}", head.lines().next().unwrap_or(""));
    }
    let events: Vec<serde_json::Value> = serde_json::from_str(json_text)?;
    match common.output {
        Output::Json => print_json(&json!(events)),
        Output::Table => {
            if events.is_empty() {
                println!(
                    "no rebalance history for group {group} (it resets when the broker restarts)"
                );
            }
            let rows: Vec<Vec<String>> = events
                .iter()
                .map(|e| {
                    vec![
                        e["at_ms"].to_string(),
                        e["event"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect();
            print_table(&["AT (ms)", "EVENT"], &rows);
        }
    }
    Ok(())
}
