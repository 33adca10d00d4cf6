//! The client commands: each talks to a broker through `fjord-client`.
//!
//! Shared here: the `--bootstrap` and `--output` options, table and JSON output, progress
//! lines on a terminal, and connecting.

pub mod cluster;
pub mod config;
pub mod consume;
pub mod group;
pub mod perf;
pub mod produce;
pub mod rebalance;
pub mod topic;
pub mod txn;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use fjord_client::Client;

/// Options every client command takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Broker to talk to (HOST:PORT).
    #[arg(
        long,
        short = 'b',
        env = "FJORD_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap: String,
    /// Output for people (aligned tables) or scripts (JSON).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// How long to wait for the broker to answer one request, in milliseconds.
    #[arg(
        long,
        env = "FJORD_TIMEOUT_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

impl Common {
    /// The bootstrap broker and, through it, the whole cluster (requests for a partition go
    /// to its leader).
    pub async fn connect_cluster(&self) -> anyhow::Result<fjord_client::Cluster> {
        Ok(fjord_client::Cluster::connect(
            &self.bootstrap,
            "fjord-cli",
            Duration::from_millis(self.timeout_ms),
        )
        .await?)
    }

    pub async fn connect(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(
            &self.bootstrap,
            "fjord-cli",
            Duration::from_millis(self.timeout_ms),
        )
        .await?)
    }
}

/// Runs an async command on a small runtime.
pub fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Prints rows as an aligned table with a header line.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let bold = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let head = line(header.to_vec());
    let mut out = std::io::stdout().lock();
    let _ = if bold {
        writeln!(out, "\x1b[1m{head}\x1b[0m")
    } else {
        writeln!(out, "{head}")
    };
    for row in rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
}

/// Prints one JSON value on its own line.
pub fn print_json(value: &serde_json::Value) {
    let _ = writeln!(std::io::stdout().lock(), "{value}");
}

/// A once-a-second progress line on stderr, only when stderr is a terminal.
pub struct Progress {
    label: &'static str,
    enabled: bool,
    started: Instant,
    last: Instant,
}

impl Progress {
    pub fn new(label: &'static str) -> Self {
        let now = Instant::now();
        Self {
            label,
            enabled: std::io::stderr().is_terminal(),
            started: now,
            last: now,
        }
    }

    pub fn update(&mut self, records: u64, bytes: u64) {
        if !self.enabled || self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        eprint!(
            "\r{}: {records} records, {:.1} MiB, {:.0} records/s   ",
            self.label,
            bytes as f64 / (1 << 20) as f64,
            records as f64 / secs
        );
    }

    pub fn finish(&self) {
        if self.enabled && self.started.elapsed() >= Duration::from_secs(1) {
            eprintln!();
        }
    }
}

/// Parses `key=value`.
pub fn key_value(s: &str) -> anyhow::Result<(String, String)> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| anyhow::anyhow!("expected KEY=VALUE, got {s:?}"))
}

/// Text for bytes that may not be UTF-8.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
