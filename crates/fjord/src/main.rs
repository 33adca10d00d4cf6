//! The `fjord` binary: `fjord serve` runs a broker.

mod serve;
mod settings;

use clap::{Parser, Subcommand};

/// Fjord: a Kafka-compatible event streaming broker in one binary.
#[derive(Debug, Parser)]
#[command(name = "fjord", version, about, long_about = None, after_help = "Example:\n  fjord serve --data-dir ./fjord-data")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker (single node) until SIGTERM or Ctrl-C.
    #[command(
        after_help = "Examples:\n  fjord serve\n  fjord serve --listen 0.0.0.0:9092 --advertise kafka.example.com:9092 --data-dir /var/lib/fjord\n  FJORD_DATA_DIR=/tmp/f fjord serve --config fjord.toml"
    )]
    Serve(serve::ServeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
