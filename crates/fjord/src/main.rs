//! The `fjord` binary: `fjord serve` runs a broker.

mod cli;
mod serve;
mod settings;

use clap::{Parser, Subcommand};

/// Fjord: a Kafka-compatible event streaming broker in one binary.
#[derive(Debug, Parser)]
#[command(
    name = "fjord",
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  fjord serve --data-dir ./fjord-data\n  fjord topic create orders --partitions 6\n  printf 'k1:hello\\n' | fjord produce orders --key-separator :\n  fjord consume orders --from-beginning --count 10 --output json"
)]
struct Cli {
    #[command(flatten)]
    common: cli::Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker (a single node, or a member of a cluster with --voters) until SIGTERM or Ctrl-C.
    #[command(
        after_help = "Examples:\n  fjord serve\n  fjord serve --listen 0.0.0.0:9092 --advertise kafka.example.com:9092 --data-dir /var/lib/fjord\n  FJORD_DATA_DIR=/tmp/f fjord serve --config fjord.toml\n  fjord serve --node-id 2 --listen 10.0.0.2:9092 --controller-listen 10.0.0.2:9093 --voters 1@10.0.0.1:9093,2@10.0.0.2:9093,3@10.0.0.3:9093\n  fjord serve --node-id 4 --process-roles broker --listen 10.0.0.4:9092 --controller-listen 10.0.0.4:9093 --voters 1@10.0.0.1:9093,2@10.0.0.2:9093,3@10.0.0.3:9093"
    )]
    Serve(serve::ServeArgs),
    /// Create, list, describe, alter and delete topics.
    #[command(
        subcommand,
        after_help = "Examples:\n  fjord topic create orders --partitions 6 --config retention.ms=86400000\n  fjord topic describe orders --output json"
    )]
    Topic(cli::topic::TopicCmd),
    /// Write lines from stdin to a topic.
    Produce(cli::produce::ProduceArgs),
    /// Read records from a topic.
    Consume(cli::consume::ConsumeArgs),
    /// Read and change topic configs.
    #[command(
        subcommand,
        after_help = "Examples:\n  fjord config get orders\n  fjord config set orders retention.ms=1000"
    )]
    Config(cli::config::ConfigCmd),
    /// List, describe (with lag), reset and delete consumer groups.
    #[command(
        subcommand,
        after_help = "Examples:\n  fjord group list\n  fjord group describe billing\n  fjord group reset-offsets billing --topic orders --to-earliest --execute"
    )]
    Group(cli::group::GroupCmd),
    /// List and describe transactions, and the producers partitions know.
    #[command(
        subcommand,
        after_help = "Examples:\n  fjord txn list --state Ongoing\n  fjord txn describe payments-writer\n  fjord txn producers orders"
    )]
    Txn(cli::txn::TxnCmd),
    /// Measure throughput and latency against a broker.
    #[command(
        subcommand,
        after_help = "Examples:\n  fjord perf produce orders --count 100000 --size 1024\n  fjord perf consume orders\n  fjord perf latency orders --rate 1000 --seconds 10"
    )]
    Perf(cli::perf::PerfCmd),
    /// Describe the cluster.
    #[command(
        subcommand,
        after_help = "Example:\n  fjord cluster info --output json"
    )]
    Cluster(cli::cluster::ClusterCmd),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Topic(cmd) => cli::block_on(cli::topic::run(cmd, &cli.common)),
        Command::Produce(args) => cli::block_on(cli::produce::run(args, &cli.common)),
        Command::Consume(args) => cli::block_on(cli::consume::run(args, &cli.common)),
        Command::Config(cmd) => cli::block_on(cli::config::run(cmd, &cli.common)),
        Command::Cluster(cmd) => cli::block_on(cli::cluster::run(cmd, &cli.common)),
        Command::Perf(cmd) => cli::block_on(cli::perf::run(cmd, &cli.common)),
        Command::Group(cmd) => cli::block_on(cli::group::run(cmd, &cli.common)),
        Command::Txn(cmd) => cli::block_on(cli::txn::run(cmd, &cli.common)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
