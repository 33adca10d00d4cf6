//! `fjord cluster info`.

use clap::Subcommand;
use fjord_client::check;
use fjord_client::kafka_protocol::messages::{DescribeClusterRequest, MetadataRequest};
use serde_json::json;

use super::{Common, Output, print_json, print_table};

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Show the cluster id, the controller, the brokers and how many topics there are.
    #[command(after_help = "Example:\n  fjord cluster info --output json")]
    Info,
}

pub async fn run(cmd: ClusterCmd, common: &Common) -> anyhow::Result<()> {
    let ClusterCmd::Info = cmd;
    let client = common.connect().await?;
    let mut req = DescribeClusterRequest::default();
    req.endpoint_type = 1;
    let cluster = client.send(&req).await?;
    check(cluster.error_code, cluster.error_message.as_ref())?;
    let mut md = MetadataRequest::default();
    md.topics = None;
    let meta = client.send(&md).await?;
    let brokers: Vec<_> = cluster
        .brokers
        .iter()
        .map(|b| {
            (
                b.broker_id.0,
                format!("{}:{}", b.host, b.port),
                b.rack.as_ref().map(|r| r.to_string()),
            )
        })
        .collect();
    let partitions: usize = meta.topics.iter().map(|t| t.partitions.len()).sum();
    match common.output {
        Output::Json => print_json(&json!({
            "cluster_id": cluster.cluster_id.to_string(),
            "controller_id": cluster.controller_id.0,
            "brokers": brokers.iter().map(|(id, addr, rack)| json!({"id": id, "address": addr, "rack": rack})).collect::<Vec<_>>(),
            "topics": meta.topics.len(),
            "partitions": partitions,
        })),
        Output::Table => {
            println!("cluster id:  {}", cluster.cluster_id);
            println!("controller:  {}", cluster.controller_id.0);
            println!(
                "topics:      {} ({partitions} partitions)",
                meta.topics.len()
            );
            println!();
            let rows: Vec<Vec<String>> = brokers
                .iter()
                .map(|(id, addr, rack)| {
                    vec![
                        id.to_string(),
                        addr.clone(),
                        rack.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print_table(&["BROKER", "ADDRESS", "RACK"], &rows);
        }
    }
    Ok(())
}
