//! `fjord perf produce|consume|latency`: load and measurement with live progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Subcommand;
use fjord_client::Client;
use fjord_record::{BatchBuilder, Compression};
use serde_json::json;

use super::produce::Codec;
use super::{Common, Output, print_json};

#[derive(Debug, Subcommand)]
pub enum PerfCmd {
    /// Produce synthetic records as fast as the broker takes them.
    #[command(after_help = "Example:\n  fjord perf produce orders --count 100000 --size 1024")]
    Produce {
        topic: String,
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        /// Value size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Records per batch (one produce request each).
        #[arg(long, default_value_t = 500)]
        batch_records: usize,
        /// Connections producing in parallel.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        #[arg(long, value_enum, default_value_t = Codec::None)]
        compression: Codec,
        /// Wait for the fsync (all) or only the append (1).
        #[arg(long, default_value = "all", value_parser = ["all", "1"])]
        acks: String,
    },
    /// Read a topic from the start and measure the rate.
    #[command(after_help = "Example:\n  fjord perf consume orders --count 100000")]
    Consume {
        topic: String,
        /// Stop after this many records (default: everything up to the current end).
        #[arg(long)]
        count: Option<u64>,
        /// Bytes per partition per fetch (Kafka consumers' `max.partition.fetch.bytes`); a
        /// fetch asks for at most 50 MiB in all (`fetch.max.bytes`).
        #[arg(long, default_value_t = 1 << 20)]
        fetch_bytes: i32,
        /// Connections fetching in parallel, each for its share of the partitions.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// Produce at a fixed rate and measure produce-to-consume latency.
    #[command(after_help = "Example:\n  fjord perf latency orders --rate 1000 --seconds 10")]
    Latency {
        topic: String,
        /// Records per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Prints a live line on stderr every second until `done` reaches `total` or `stop` is set.
fn spawn_progress(
    label: &'static str,
    done: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    total: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let n = done.load(Ordering::Relaxed);
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "{label}: {n}/{total} records, {:.0} records/s, {:.1} MiB/s",
                n as f64 / secs,
                bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64 / secs
            );
            if n >= total {
                return;
            }
        }
    })
}

pub async fn run(cmd: PerfCmd, common: &Common) -> anyhow::Result<()> {
    match cmd {
        PerfCmd::Produce {
            topic,
            count,
            size,
            batch_records,
            connections,
            compression,
            acks,
        } => {
            let probe = common.connect().await?;
            let partitions = probe.partition_count(&topic, true).await?.max(1);
            let codec = Compression::from(compression);
            let acks: i16 = if acks == "all" { -1 } else { 1 };
            let batch_records = batch_records.max(1) as u64;
            let batches = count.div_ceil(batch_records);
            let next = Arc::new(AtomicU64::new(0));
            let done = Arc::new(AtomicU64::new(0));
            let bytes = Arc::new(AtomicU64::new(0));
            let progress = spawn_progress("perf produce", done.clone(), bytes.clone(), count);
            let started = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..connections.max(1) {
                let client = common.connect().await?;
                let (topic, next, done, bytes) =
                    (topic.clone(), next.clone(), done.clone(), bytes.clone());
                tasks.push(tokio::spawn(async move {
                    let value = vec![b'x'; size];
                    let mut latencies = Vec::new();
                    loop {
                        let b = next.fetch_add(1, Ordering::Relaxed);
                        if b >= batches {
                            break;
                        }
                        let n = batch_records.min(count - b * batch_records);
                        let mut builder = BatchBuilder::new(codec);
                        let ts = now_ms();
                        for _ in 0..n {
                            builder.push(ts, None, Some(&value));
                        }
                        let batch = builder.build()?;
                        let len = batch.len() as u64;
                        let partition = ((b as usize + c) % partitions as usize) as i32;
                        let sent = Instant::now();
                        client
                            .produce(&topic, partition, Bytes::from(batch), acks)
                            .await?;
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                        done.fetch_add(n, Ordering::Relaxed);
                        bytes.fetch_add(len, Ordering::Relaxed);
                    }
                    anyhow::Ok(latencies)
                }));
            }
            let mut latencies = Vec::new();
            for t in tasks {
                latencies.extend(t.await??);
            }
            let elapsed = started.elapsed().as_secs_f64();
            progress.abort();
            latencies.sort_by(f64::total_cmp);
            let mib = bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64;
            report(
                common,
                "produce",
                count,
                mib,
                elapsed,
                &latencies,
                "request latency ms",
            );
        }
        PerfCmd::Consume {
            topic,
            count,
            fetch_bytes,
            connections,
        } => {
            let client = common.connect().await?;
            let info = client.topics(Some(std::slice::from_ref(&topic))).await?;
            let t = info
                .first()
                .ok_or_else(|| anyhow::anyhow!("topic {topic} not found"))?;
            let parts: Vec<i32> = t.partitions.iter().map(|p| p.index).collect();
            let start = client.list_offsets(&topic, &parts, -2).await?;
            let end = client.list_offsets(&topic, &parts, -1).await?;
            let available: i64 = end.iter().zip(&start).map(|((_, e), (_, s))| e - s).sum();
            let target = count.unwrap_or(available.max(0) as u64);
            let topic_id = client.fetch_topic_id(&topic).await?;
            let done = Arc::new(AtomicU64::new(0));
            let bytes = Arc::new(AtomicU64::new(0));
            // Each connection reads its share of the partitions, one fetch in flight. The
            // clock starts once every connection is set up.
            let connections = connections.clamp(1, start.len().max(1));
            let mut clients = Vec::with_capacity(connections);
            for _ in 0..connections {
                clients.push(common.connect().await?);
            }
            let progress = spawn_progress("perf consume", done.clone(), bytes.clone(), target);
            let started = Instant::now();
            // Set once the count is reached, to end the other connections' long polls.
            let reach = Arc::new(tokio::sync::watch::Sender::new(false));
            let mut tasks = Vec::new();
            for (c, client) in clients.into_iter().enumerate() {
                let mine = |offsets: &[(i32, i64)]| -> Vec<(i32, i64)> {
                    offsets
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| i % connections == c)
                        .map(|(_, p)| *p)
                        .collect()
                };
                let mut positions = mine(&start);
                // Without --count a connection is done at its partitions' ends as listed at
                // the start (a long poll past them would only add its wait to the figure).
                let ends = count.is_none().then(|| mine(&end));
                let (topic, done, bytes) = (topic.clone(), done.clone(), bytes.clone());
                let (reach, mut reached) = (reach.clone(), reach.subscribe());
                tasks.push(tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    // Like a consumer that does not check CRCs (librdkafka's default): records
                    // are walked in place, values counted, nothing copied.
                    let more = |positions: &[(i32, i64)]| {
                        ends.as_ref()
                            .is_none_or(|ends| positions.iter().zip(ends).any(|(p, e)| p.1 < e.1))
                    };
                    while done.load(Ordering::Relaxed) < target && more(&positions) {
                        let sent = Instant::now();
                        // A connection whose partitions ran dry long-polls them; once the
                        // others reach the count it stops at once rather than at the poll's
                        // end (which would add up to its wait to the figure).
                        let fetched = tokio::select! {
                            fetched = client.fetch_batches(
                                &topic, topic_id, &positions, 500, fetch_bytes, 50 << 20,
                            ) => fetched?,
                            _ = reached.wait_for(|r| *r) => break,
                        };
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                        for (f, pos) in fetched.iter().zip(positions.iter_mut()) {
                            let (n, b, next) = count_records(&f.records, pos.1)?;
                            done.fetch_add(n, Ordering::Relaxed);
                            bytes.fetch_add(b, Ordering::Relaxed);
                            pos.1 = next;
                        }
                    }
                    if done.load(Ordering::Relaxed) >= target {
                        let _ = reach.send(true);
                    }
                    anyhow::Ok(latencies)
                }));
            }
            let mut latencies = Vec::new();
            for t in tasks {
                latencies.extend(t.await??);
            }
            let elapsed = started.elapsed().as_secs_f64();
            progress.abort();
            latencies.sort_by(f64::total_cmp);
            let mib = bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64;
            report(
                common,
                "consume",
                done.load(Ordering::Relaxed),
                mib,
                elapsed,
                &latencies,
                "fetch latency ms",
            );
        }
        PerfCmd::Latency {
            topic,
            rate,
            seconds,
            size,
        } => {
            let producer = common.connect().await?;
            producer.partition_count(&topic, true).await?;
            let end = producer.list_offsets(&topic, &[0], -1).await?;
            let mut offset = end.first().map_or(0, |(_, o)| *o);
            let total = rate.max(1) * seconds.max(1);
            let consumer: Client = common.connect().await?;
            let topic_c = topic.clone();
            let reader = tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(total as usize);
                let deadline = Instant::now() + Duration::from_secs(seconds + 30);
                while (latencies.len() as u64) < total && Instant::now() < deadline {
                    let f = consumer.fetch(&topic_c, 0, offset, 200, 1 << 20).await?;
                    let now = now_ms() as f64;
                    for r in &f.records {
                        let sent: f64 = r
                            .value
                            .as_deref()
                            .and_then(|v| std::str::from_utf8(&v[..v.len().min(20)]).ok())
                            .and_then(|s| s.trim_end_matches('x').parse().ok())
                            .unwrap_or(now);
                        latencies.push(now - sent);
                    }
                    offset = f.next_offset;
                }
                anyhow::Ok(latencies)
            });
            let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            let started = Instant::now();
            for i in 0..total {
                let due = started + interval.mul_f64(i as f64);
                tokio::time::sleep_until(due.into()).await;
                let mut value = format!(
                    "{:.3}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
                )
                .into_bytes();
                value.resize(size.max(value.len()), b'x');
                let mut b = BatchBuilder::new(Compression::None);
                b.push(now_ms(), None, Some(&value));
                producer
                    .produce(&topic, 0, Bytes::from(b.build()?), -1)
                    .await?;
                if i % rate.max(1) == 0 && i > 0 {
                    eprintln!("perf latency: {i}/{total} records sent");
                }
            }
            let mut latencies = reader.await??;
            latencies.sort_by(f64::total_cmp);
            let elapsed = started.elapsed().as_secs_f64();
            report(
                common,
                "latency",
                latencies.len() as u64,
                0.0,
                elapsed,
                &latencies,
                "end-to-end latency ms",
            );
        }
    }
    Ok(())
}

fn report(
    common: &Common,
    what: &str,
    records: u64,
    mib: f64,
    secs: f64,
    latencies: &[f64],
    label: &str,
) {
    let (p50, p99, p999, max) = (
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        percentile(latencies, 0.999),
        latencies.last().copied().unwrap_or(0.0),
    );
    match common.output {
        Output::Json => print_json(&json!({
            "test": what, "records": records, "seconds": secs,
            "records_per_sec": records as f64 / secs, "mib_per_sec": mib / secs,
            "latency_ms": {"p50": p50, "p99": p99, "p999": p999, "max": max},
        })),
        Output::Table => {
            println!(
                "{what}: {records} records in {secs:.2}s: {:.0} records/s, {:.1} MiB/s",
                records as f64 / secs,
                mib / secs
            );
            println!("{label}: p50 {p50:.2}, p99 {p99:.2}, p99.9 {p999:.2}, max {max:.2}");
        }
    }
}

/// Records at or after `from` in `batches` (control batches skipped), their value bytes, and
/// the offset to fetch next.
fn count_records(batches: &[u8], from: i64) -> anyhow::Result<(u64, u64, i64)> {
    let (mut records, mut bytes, mut next) = (0u64, 0u64, from);
    for batch in fjord_record::split_batches(batches) {
        // A partial batch at the end of a response is normal: stop there.
        let Ok(batch) = batch else { break };
        let header = fjord_record::BatchHeader::parse(batch)?;
        next = next.max(header.next_offset());
        if header.is_control() {
            continue;
        }
        let decoded = fjord_record::Records::decode(batch, 256 << 20)?;
        for r in decoded.iter() {
            let r = r?;
            if r.offset(&header) >= from {
                records += 1;
                bytes += r.value.map_or(0, <[u8]>::len) as u64;
            }
        }
    }
    Ok((records, bytes, next))
}
