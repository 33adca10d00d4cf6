//! `fjord config get|set`: topic configs.

use clap::Subcommand;
use serde_json::json;

use super::{Common, Output, key_value, print_json, print_table};

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Show every config of a topic, and which are set on it.
    #[command(after_help = "Example:\n  fjord config get orders --output json")]
    Get { topic: String },
    /// Set topic configs (KEY=VALUE with Kafka's names); KEY= removes an override.
    #[command(
        after_help = "Examples:\n  fjord config set orders retention.ms=1000\n  fjord config set orders cleanup.policy=compact segment.ms="
    )]
    Set {
        topic: String,
        #[arg(required = true, value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
}

pub async fn run(cmd: ConfigCmd, common: &Common) -> anyhow::Result<()> {
    let client = common.connect().await?;
    match cmd {
        ConfigCmd::Get { topic } => {
            let configs = client.topic_configs(&topic).await?;
            match common.output {
                Output::Json => print_json(&json!(
                    configs
                        .iter()
                        .map(|c| (
                            c.name.clone(),
                            json!({"value": c.value, "default": c.is_default})
                        ))
                        .collect::<serde_json::Map<_, _>>()
                )),
                Output::Table => {
                    let rows: Vec<Vec<String>> = configs
                        .iter()
                        .map(|c| {
                            vec![
                                c.name.clone(),
                                c.value.clone().unwrap_or_default(),
                                if c.is_default {
                                    "default".into()
                                } else {
                                    "topic".into()
                                },
                            ]
                        })
                        .collect();
                    print_table(&["NAME", "VALUE", "SOURCE"], &rows);
                }
            }
        }
        ConfigCmd::Set { topic, settings } => {
            let mut changes = Vec::new();
            for s in &settings {
                let (k, v) = key_value(s)?;
                changes.push((k, (!v.is_empty()).then_some(v)));
            }
            client.alter_topic_configs(&topic, &changes).await?;
            match common.output {
                Output::Json => print_json(
                    &json!({"topic": topic, "result": "updated", "changes": changes.len()}),
                ),
                Output::Table => println!("updated {} config(s) of {topic}", changes.len()),
            }
        }
    }
    Ok(())
}
