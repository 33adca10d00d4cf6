//! `fjord txn list|describe|producers`: transactions and the producers partitions know.

use clap::Subcommand;
use serde_json::json;

use super::{Common, Output, print_json, print_table};

#[derive(Debug, Subcommand)]
pub enum TxnCmd {
    /// List transactional ids and the state of their transaction.
    #[command(
        after_help = "Examples:\n  fjord txn list\n  fjord txn list --state Ongoing --output json"
    )]
    List {
        /// Only these states (Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit,
        /// CompleteAbort); repeatable.
        #[arg(long)]
        state: Vec<String>,
    },
    /// A transactional id's producer, epoch, timeout and the partitions of its open
    /// transaction.
    #[command(after_help = "Example:\n  fjord txn describe payments-writer --output json")]
    Describe { transactional_id: String },
    /// The idempotent and transactional producers each partition of a topic knows, with any
    /// open transaction's first offset (what holds back read_committed consumers).
    #[command(after_help = "Example:\n  fjord txn producers orders")]
    Producers { topic: String },
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub async fn run(cmd: TxnCmd, common: &Common) -> anyhow::Result<()> {
    // Every broker lists the transactional ids it coordinates; an id is described by its
    // coordinator, a partition's producers by its leader.
    let cluster = common.connect_cluster().await?;
    match cmd {
        TxnCmd::List { state } => {
            let mut txns = Vec::new();
            for broker in cluster.brokers().await? {
                txns.extend(broker.list_transactions(&state).await?);
            }
            txns.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
            txns.dedup_by(|a, b| a.transactional_id == b.transactional_id);
            match common.output {
                Output::Json => print_json(&json!(
                    txns.iter()
                        .map(|t| json!({
                            "transactional_id": t.transactional_id,
                            "producer_id": t.producer_id,
                            "state": t.state,
                        }))
                        .collect::<Vec<_>>()
                )),
                Output::Table => {
                    let rows: Vec<Vec<String>> = txns
                        .iter()
                        .map(|t| {
                            vec![
                                t.transactional_id.clone(),
                                t.producer_id.to_string(),
                                t.state.clone(),
                            ]
                        })
                        .collect();
                    print_table(&["TRANSACTIONAL ID", "PRODUCER ID", "STATE"], &rows);
                }
            }
        }
        TxnCmd::Describe { transactional_id } => {
            let id = transactional_id.as_str();
            let t = cluster
                .with_coordinator(id, 1, |c| async move { c.describe_transaction(id).await })
                .await
                .map_err(|e| anyhow::anyhow!("{e}; list transactional ids with: fjord txn list"))?;
            let running_ms = (t.start_time_ms >= 0).then(|| now_ms() - t.start_time_ms);
            match common.output {
                Output::Json => print_json(&json!({
                    "transactional_id": t.transactional_id,
                    "state": t.state,
                    "producer_id": t.producer_id,
                    "producer_epoch": t.producer_epoch,
                    "timeout_ms": t.timeout_ms,
                    "start_time_ms": t.start_time_ms,
                    "running_ms": running_ms,
                    "partitions": t.partitions.iter().map(|(topic, p)| json!({"topic": topic, "partition": p})).collect::<Vec<_>>(),
                })),
                Output::Table => {
                    println!("transactional id: {}", t.transactional_id);
                    println!("state:            {}", t.state);
                    println!(
                        "producer:         {} (epoch {})",
                        t.producer_id, t.producer_epoch
                    );
                    println!("timeout:          {} ms", t.timeout_ms);
                    if let Some(ms) = running_ms {
                        println!("running for:      {ms} ms");
                    }
                    let rows: Vec<Vec<String>> = t
                        .partitions
                        .iter()
                        .map(|(topic, p)| vec![topic.clone(), p.to_string()])
                        .collect();
                    if !rows.is_empty() {
                        println!();
                        print_table(&["TOPIC", "PARTITION"], &rows);
                    }
                }
            }
        }
        TxnCmd::Producers { topic } => {
            let count = cluster.bootstrap().partition_count(&topic, false).await?;
            let parts: Vec<i32> = (0..count).collect();
            let described = cluster.describe_producers(&topic, &parts).await?;
            match common.output {
                Output::Json => print_json(&json!(
                    described
                        .iter()
                        .flat_map(|(p, producers)| producers.iter().map(move |s| json!({
                            "partition": p,
                            "producer_id": s.producer_id,
                            "producer_epoch": s.producer_epoch,
                            "last_sequence": s.last_sequence,
                            "last_timestamp": s.last_timestamp,
                            "coordinator_epoch": s.coordinator_epoch,
                            "current_txn_start_offset": s.current_txn_start_offset,
                        })))
                        .collect::<Vec<_>>()
                )),
                Output::Table => {
                    let rows: Vec<Vec<String>> = described
                        .iter()
                        .flat_map(|(p, producers)| {
                            producers.iter().map(move |s| {
                                vec![
                                    p.to_string(),
                                    s.producer_id.to_string(),
                                    s.producer_epoch.to_string(),
                                    s.last_sequence.to_string(),
                                    if s.current_txn_start_offset >= 0 {
                                        s.current_txn_start_offset.to_string()
                                    } else {
                                        "-".to_string()
                                    },
                                ]
                            })
                        })
                        .collect();
                    print_table(
                        &[
                            "PARTITION",
                            "PRODUCER ID",
                            "EPOCH",
                            "LAST SEQUENCE",
                            "OPEN TXN FROM",
                        ],
                        &rows,
                    );
                }
            }
        }
    }
    Ok(())
}
