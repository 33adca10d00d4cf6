//! `fjord cluster info`: the cluster id, the metadata quorum (voters, leader, how far each node
//! has the metadata log) and every registered broker with its state, from DescribeCluster
//! (fenced brokers included, KIP-1073), DescribeQuorum and Metadata.

use std::collections::BTreeSet;

use clap::Subcommand;
use fjord_client::kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use fjord_client::kafka_protocol::messages::describe_quorum_response::ReplicaState;
use fjord_client::kafka_protocol::messages::{
    AddRaftVoterRequest, DescribeClusterRequest, DescribeQuorumRequest, MetadataRequest,
    RemoveRaftVoterRequest, TopicName, add_raft_voter_request,
};
use fjord_client::kafka_protocol::protocol::StrBytes;
use fjord_client::{Client, check};
use serde_json::json;

use super::{Common, Output, print_json, print_table};

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Show the cluster id, the metadata quorum (voters, controller, each node's metadata
    /// offset) and every broker with its state (registered or fenced).
    #[command(after_help = "Example:\n  fjord cluster info --output json")]
    Info,
    /// Every broker with its load: the replicas it holds, the partitions it leads, the
    /// bytes on its disk (what the balancer evens out).
    #[command(after_help = "Example:\n  fjord cluster brokers --output json")]
    Brokers,
    /// Plan moves that even out the replicas, disk use and leaderships of the brokers
    /// (keeping each partition's racks), and with --execute run them a bounded number of
    /// bytes at a time, with progress; --drain empties brokers (to remove them).
    #[command(
        after_help = "Examples:\n  fjord cluster rebalance\n  fjord cluster rebalance --execute --max-moving-bytes 1073741824\n  fjord cluster rebalance --drain 4 --execute"
    )]
    Rebalance {
        /// Run the moves (without it, only show them).
        #[arg(long)]
        execute: bool,
        /// A broker to empty (no replica stays on it); repeat for more.
        #[arg(long, value_name = "BROKER")]
        drain: Vec<i32>,
        /// At most this many bytes being copied at once (one move at least).
        #[arg(long, default_value_t = 1 << 30)]
        max_moving_bytes: u64,
        /// Give up (leaving running moves to finish) after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_s: u64,
    },
    /// Make a node a voter of the metadata quorum (KIP-853's AddRaftVoter). Start the node
    /// first with the current voters in controller.quorum.voters and a controller listener:
    /// it joins as an observer and catches up; then add it. One voter change at a time.
    #[command(after_help = "Example:\n  fjord cluster add-voter --node 4 --address 10.0.0.4:9093")]
    AddVoter {
        /// The node's id.
        #[arg(long)]
        node: i32,
        /// Its controller listener, HOST:PORT, as it replicates the metadata log.
        #[arg(long)]
        address: String,
        /// Its data directory id (`directory.id` in its meta.properties); by default the one
        /// the quorum's leader knows it by.
        #[arg(long)]
        directory_id: Option<String>,
    },
    /// Make a voter of the metadata quorum an observer again (KIP-853's RemoveRaftVoter), to
    /// take its node out of the quorum. Refused when the voters left that are running would
    /// not be a majority of them; a leader removed hands its leadership over first.
    #[command(after_help = "Example:\n  fjord cluster remove-voter --node 3")]
    RemoveVoter {
        /// The voter's id.
        #[arg(long)]
        node: i32,
        /// Its data directory id; by default the one the quorum's leader knows it by.
        #[arg(long)]
        directory_id: Option<String>,
    },
}

/// One node as `cluster info` shows it.
struct NodeRow {
    id: i32,
    address: Option<String>,
    rack: Option<String>,
    /// "registered", "fenced", or None when the node is not a registered broker (a
    /// controller only, or a broker not registered yet).
    broker: Option<&'static str>,
    /// "leader", "voter", "observer", or None when it takes no part in the quorum.
    quorum: Option<&'static str>,
    log_end_offset: Option<i64>,
    last_fetch_ms: Option<i64>,
}

/// The quorum as DescribeQuorum answers it.
struct QuorumInfo {
    leader: i32,
    epoch: i32,
    high_watermark: i64,
    voters: Vec<ReplicaState>,
    observers: Vec<ReplicaState>,
}

async fn describe_quorum(client: &Client) -> anyhow::Result<QuorumInfo> {
    let mut partition = PartitionData::default();
    partition.partition_index = 0;
    let mut topic = TopicData::default();
    topic.topic_name = TopicName(StrBytes::from_static_str("__cluster_metadata"));
    topic.partitions = vec![partition];
    let mut req = DescribeQuorumRequest::default();
    req.topics = vec![topic];
    let r = client.send(&req).await?;
    check(r.error_code, r.error_message.as_ref())?;
    let p = r
        .topics
        .into_iter()
        .flat_map(|t| t.partitions)
        .next()
        .ok_or_else(|| anyhow::anyhow!("the broker described no metadata partition"))?;
    check(p.error_code, p.error_message.as_ref())?;
    Ok(QuorumInfo {
        leader: p.leader_id.0,
        epoch: p.leader_epoch,
        high_watermark: p.high_watermark,
        voters: p.current_voters,
        observers: p.observers,
    })
}

/// Adds (with its controller listener `address`) or removes voter `node`, then shows the
/// voters.
async fn change_voters(
    common: &Common,
    node: i32,
    address: Option<String>,
    directory_id: Option<String>,
) -> anyhow::Result<()> {
    let client = common.connect().await?;
    let before = describe_quorum(&client).await?;
    let known = before
        .voters
        .iter()
        .chain(&before.observers)
        .find(|r| r.replica_id.0 == node)
        .map(|r| r.replica_directory_id)
        .filter(|d| !d.is_nil());
    let dir = match directory_id {
        Some(text) => fjord_broker::ids::decode(&text).ok_or_else(|| {
            anyhow::anyhow!("--directory-id {text:?} is not a directory id (22 characters of base64, as in meta.properties)")
        })?,
        None => known.ok_or_else(|| {
            anyhow::anyhow!(
                "the quorum's leader does not know node {node}'s data directory id: pass --directory-id (directory.id in the node's meta.properties){}",
                if address.is_some() { "; is the node running as an observer?" } else { "" }
            )
        })?,
    };
    // The broker waits for the change a little less than this client waits for its answer.
    let wait_ms = common.timeout_ms.saturating_sub(2_000).max(1_000);
    let verb = match &address {
        Some(address) => {
            let (host, port) = address
                .rsplit_once(':')
                .and_then(|(h, p)| {
                    Some((
                        h.trim_start_matches('[').trim_end_matches(']'),
                        p.parse::<u16>().ok()?,
                    ))
                })
                .ok_or_else(|| anyhow::anyhow!("--address {address:?} is not HOST:PORT"))?;
            let mut listener = add_raft_voter_request::Listener::default();
            listener.name = StrBytes::from_static_str("CONTROLLER");
            listener.host = StrBytes::from_string(host.to_string());
            listener.port = port;
            let mut req = AddRaftVoterRequest::default();
            req.cluster_id = None;
            req.timeout_ms = i32::try_from(wait_ms).unwrap_or(i32::MAX);
            req.voter_id = node;
            req.voter_directory_id = dir;
            req.listeners = vec![listener];
            let r = client.send(&req).await?;
            check(r.error_code, r.error_message.as_ref())?;
            "added"
        }
        None => {
            let mut req = RemoveRaftVoterRequest::default();
            req.cluster_id = None;
            req.voter_id = node;
            req.voter_directory_id = dir;
            let r = client.send(&req).await?;
            check(r.error_code, r.error_message.as_ref())?;
            "removed"
        }
    };
    let after = describe_quorum(&client).await?;
    let voters: Vec<i32> = after.voters.iter().map(|r| r.replica_id.0).collect();
    match common.output {
        Output::Json => print_json(&json!({
            verb: node,
            "directory_id": fjord_broker::ids::encode(dir),
            "voters": voters,
            "leader_id": after.leader,
        })),
        Output::Table => {
            let shown: Vec<String> = voters.iter().map(i32::to_string).collect();
            println!(
                "{verb} voter {node} (directory id {}); voters now {} (leader {})",
                fjord_broker::ids::encode(dir),
                shown.join(", "),
                after.leader
            );
        }
    }
    Ok(())
}

pub async fn run(cmd: ClusterCmd, common: &Common) -> anyhow::Result<()> {
    if let ClusterCmd::Rebalance {
        execute,
        drain,
        max_moving_bytes,
        timeout_s,
    } = cmd
    {
        let timeout = std::time::Duration::from_secs(timeout_s);
        return super::rebalance::run(common, execute, &drain, max_moving_bytes, timeout).await;
    }
    if let ClusterCmd::Brokers = cmd {
        return super::rebalance::brokers(common).await;
    }
    if let ClusterCmd::AddVoter {
        node,
        address,
        directory_id,
    } = cmd
    {
        return change_voters(common, node, Some(address), directory_id).await;
    }
    if let ClusterCmd::RemoveVoter { node, directory_id } = cmd {
        return change_voters(common, node, None, directory_id).await;
    }
    let client = common.connect().await?;
    let mut req = DescribeClusterRequest::default();
    req.endpoint_type = 1;
    // Fenced brokers are listed from v2 on (KIP-1073); older brokers list the unfenced.
    req.include_fenced_brokers = client.version::<DescribeClusterRequest>()? >= 2;
    let cluster = client.send(&req).await?;
    check(cluster.error_code, cluster.error_message.as_ref())?;
    let mut md = MetadataRequest::default();
    md.topics = None;
    let meta = client.send(&md).await?;
    let partitions: usize = meta.topics.iter().map(|t| t.partitions.len()).sum();
    // A broker without DescribeQuorum (or with no quorum leader now) still gets its brokers shown.
    let quorum = describe_quorum(&client).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);

    let mut ids: BTreeSet<i32> = cluster.brokers.iter().map(|b| b.broker_id.0).collect();
    if let Ok(q) = &quorum {
        ids.extend(q.voters.iter().chain(&q.observers).map(|r| r.replica_id.0));
    }
    let rows: Vec<NodeRow> = ids
        .into_iter()
        .map(|id| {
            let b = cluster.brokers.iter().find(|b| b.broker_id.0 == id);
            let (role, replica) = match &quorum {
                Ok(q) => {
                    let voter = q.voters.iter().find(|r| r.replica_id.0 == id);
                    let observer = q.observers.iter().find(|r| r.replica_id.0 == id);
                    match (voter, observer) {
                        (Some(r), _) if id == q.leader => (Some("leader"), Some(r)),
                        (Some(r), _) => (Some("voter"), Some(r)),
                        (None, Some(r)) => (Some("observer"), Some(r)),
                        (None, None) => (None, None),
                    }
                }
                Err(_) => (None, None),
            };
            NodeRow {
                id,
                address: b.map(|b| format!("{}:{}", b.host, b.port)),
                rack: b.and_then(|b| b.rack.as_ref().map(|r| r.to_string())),
                broker: b.map(|b| if b.is_fenced { "fenced" } else { "registered" }),
                quorum: role,
                log_end_offset: replica.map(|r| r.log_end_offset).filter(|&o| o >= 0),
                last_fetch_ms: replica.map(|r| r.last_fetch_timestamp).filter(|&t| t >= 0),
            }
        })
        .collect();
    let hw = quorum.as_ref().ok().map(|q| q.high_watermark);
    let lag = |r: &NodeRow| Some(hw? - r.log_end_offset?).map(|l| l.max(0));
    match common.output {
        Output::Json => print_json(&json!({
            "cluster_id": cluster.cluster_id.to_string(),
            "controller_id": quorum.as_ref().map_or(cluster.controller_id.0, |q| q.leader),
            "quorum": match &quorum {
                Ok(q) => json!({
                    "leader_id": q.leader,
                    "leader_epoch": q.epoch,
                    "high_watermark": q.high_watermark,
                    "voters": q.voters.iter().map(|r| r.replica_id.0).collect::<Vec<_>>(),
                    "observers": q.observers.iter().map(|r| r.replica_id.0).collect::<Vec<_>>(),
                }),
                Err(e) => json!({"error": e.to_string()}),
            },
            "brokers": rows.iter().filter(|r| r.broker.is_some()).map(|r| json!({
                "id": r.id,
                "address": r.address,
                "rack": r.rack,
                "fenced": r.broker == Some("fenced"),
            })).collect::<Vec<_>>(),
            "nodes": rows.iter().map(|r| json!({
                "id": r.id,
                "address": r.address,
                "rack": r.rack,
                "broker": r.broker,
                "quorum": r.quorum,
                "metadata_offset": r.log_end_offset,
                "metadata_lag": lag(r),
                "last_heard_ms_ago": r.last_fetch_ms.map(|t| (now_ms - t).max(0)),
            })).collect::<Vec<_>>(),
            "topics": meta.topics.len(),
            "partitions": partitions,
        })),
        Output::Table => {
            println!("cluster id:  {}", cluster.cluster_id);
            match &quorum {
                Ok(q) => {
                    println!("controller:  {} (epoch {})", q.leader, q.epoch);
                    println!("metadata:    offset {} committed", q.high_watermark);
                }
                Err(e) => {
                    println!("controller:  {}", cluster.controller_id.0);
                    println!("metadata:    the quorum could not be described: {e}");
                }
            }
            println!(
                "topics:      {} ({partitions} partitions)",
                meta.topics.len()
            );
            println!();
            let dash = || "-".to_string();
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.address.clone().unwrap_or_else(dash),
                        r.rack.clone().unwrap_or_else(dash),
                        r.broker.unwrap_or("-").to_string(),
                        r.quorum.unwrap_or("-").to_string(),
                        r.log_end_offset.map_or_else(dash, |o| o.to_string()),
                        lag(r).map_or_else(dash, |l| l.to_string()),
                        r.last_fetch_ms
                            .map_or_else(dash, |t| format!("{} ms ago", (now_ms - t).max(0))),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NODE",
                    "ADDRESS",
                    "RACK",
                    "BROKER",
                    "QUORUM",
                    "METADATA OFFSET",
                    "LAG",
                    "LAST HEARD",
                ],
                &table,
            );
        }
    }
    Ok(())
}
