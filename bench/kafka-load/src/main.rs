//! A load generator for the benchmark suite: librdkafka (the C client behind confluent-kafka,
//! kcat and most non-Java clients) driven from compiled code, so small-record figures measure
//! the broker rather than an interpreter. Prints one JSON object per command.
//!
//! Examples:
//!   kafka-load produce --bootstrap 127.0.0.1:9092 --topic t --count 1000000 --size 100
//!   kafka-load consume --bootstrap 127.0.0.1:9092 --topic t --count 1000000 --partitions 6
//!   kafka-load latency --bootstrap 127.0.0.1:9092 --topic lat --rate 5000 --seconds 30
//!   kafka-load produce --bootstrap 127.0.0.1:9092 --topic t --count 480000 --size 100 \
//!       --keyed --producers 16 --threaded

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    about = "librdkafka load for Fjord's benchmark suite",
    after_help = "Example:\n  kafka-load produce --bootstrap 127.0.0.1:9092 --topic t --count 1000000 --size 100"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The broker and topic every command works on.
#[derive(Debug, clap::Args)]
struct Target {
    #[arg(long)]
    bootstrap: String,
    #[arg(long)]
    topic: String,
}

/// What `produce` sends, and how.
#[derive(Debug, Clone, Copy, clap::Args)]
struct ProduceLoad {
    #[arg(long)]
    count: u64,
    #[arg(long)]
    size: usize,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Producer instances sharing the records round-robin.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Give records keys (spread over the partitions by librdkafka's partitioner).
    #[arg(long)]
    keyed: bool,
    /// One thread per producer instance, each sending its share as fast as it can (large
    /// batches); without it one thread feeds the instances in turn (small batches spread
    /// over every partition).
    #[arg(long)]
    threaded: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Produce `count` records of `size` bytes with acks=all; waits until all are acknowledged.
    Produce {
        #[command(flatten)]
        to: Target,
        #[command(flatten)]
        load: ProduceLoad,
    },
    /// Consume `count` records from the start of every partition.
    Consume {
        #[command(flatten)]
        to: Target,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
    },
    /// Produce at a fixed rate and time each record until a consumer in the same process
    /// receives it (OpenMessaging-Benchmark style with --partitions/--size/--linger-ms).
    Latency {
        #[command(flatten)]
        to: Target,
        #[arg(long)]
        rate: u64,
        #[arg(long)]
        seconds: u64,
        /// Partitions of the topic: keyed records spread over all, the consumer reads all.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Record size in bytes (at least 8: the send time is written into each).
        #[arg(long, default_value_t = 100)]
        size: usize,
        #[arg(long, default_value_t = 0)]
        linger_ms: u64,
    },
}

/// Counts failed deliveries.
#[derive(Debug, Default)]
struct Counting {
    failed: Arc<AtomicU64>,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn producer(
    bootstrap: &str,
    linger_ms: u64,
) -> anyhow::Result<(BaseProducer<Counting>, Arc<AtomicU64>)> {
    let failed = Arc::new(AtomicU64::new(0));
    let p = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", linger_ms.to_string())
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "2000000")
        .set("enable.idempotence", "false")
        .create_with_context(Counting {
            failed: failed.clone(),
        })
        .context("creating the producer")?;
    Ok((p, failed))
}

fn send(
    p: &BaseProducer<Counting>,
    topic: &str,
    key: Option<&[u8]>,
    value: &[u8],
) -> anyhow::Result<()> {
    loop {
        let mut record = BaseRecord::to(topic).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                p.poll(Duration::from_millis(1));
            }
            Err((e, _)) => bail!("producing failed: {e}"),
        }
    }
}

fn produce(to: &Target, load: &ProduceLoad) -> anyhow::Result<serde_json::Value> {
    let (bootstrap, topic) = (to.bootstrap.as_str(), to.topic.as_str());
    let ProduceLoad {
        count,
        size,
        linger_ms,
        producers,
        keyed,
        threaded,
    } = *load;
    let ps: Vec<_> = (0..producers.max(1))
        .map(|_| producer(bootstrap, linger_ms))
        .collect::<anyhow::Result<_>>()?;
    let value = vec![b'x'; size];
    let n = ps.len() as u64;
    // Records i = k, k + n, k + 2n, ... go to producer k, whichever thread sends them.
    let feed = |p: &BaseProducer<Counting>, i: u64| -> anyhow::Result<()> {
        let key = (i % 100_003).to_string();
        send(p, topic, keyed.then_some(key.as_bytes()), &value)?;
        if i % 1024 < n {
            p.poll(Duration::ZERO);
        }
        Ok(())
    };
    let start = Instant::now();
    if threaded {
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let threads: Vec<_> = ps
                .iter()
                .enumerate()
                .map(|(k, (p, _))| {
                    let feed = &feed;
                    scope.spawn(move || -> anyhow::Result<()> {
                        let mut i = k as u64;
                        while i < count {
                            feed(p, i)?;
                            i += n;
                        }
                        p.flush(Duration::from_secs(600)).context("flushing")
                    })
                })
                .collect();
            for t in threads {
                t.join()
                    .map_err(|_| anyhow::anyhow!("a producer thread panicked"))??;
            }
            Ok(())
        })?;
    } else {
        for i in 0..count {
            feed(&ps[(i % n) as usize].0, i)?;
        }
        for (p, _) in &ps {
            p.flush(Duration::from_secs(600)).context("flushing")?;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let failed: u64 = ps.iter().map(|(_, f)| f.load(Ordering::Relaxed)).sum();
    if failed > 0 {
        bail!("{failed} records were not delivered");
    }
    Ok(json!({"seconds": seconds, "records": count, "bytes": count * size as u64}))
}

fn consumer(bootstrap: &str, extra: &[(&str, &str)]) -> anyhow::Result<BaseConsumer> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", "kafka-load")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        // librdkafka postpones the next fetch by fetch.queue.backoff.ms (1 s) whenever its
        // local queue is over queued.min.messages; a reader that keeps up must not wait.
        .set("queued.min.messages", "1000000")
        .set("queued.max.messages.kbytes", "1048576")
        .set("fetch.queue.backoff.ms", "0");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().context("creating the consumer")
}

fn consume(
    bootstrap: &str,
    topic: &str,
    count: u64,
    partitions: i32,
) -> anyhow::Result<serde_json::Value> {
    let c = consumer(bootstrap, &[])?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let (mut records, mut bytes) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(600);
    // The clock starts at the first record: connecting and looking up the start offsets are
    // the same fixed cost for any broker and would swamp a sub-second run.
    let mut start = None;
    while records < count {
        if Instant::now() > deadline {
            bail!("consumed {records} of {count} records in 600 s");
        }
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                start.get_or_insert_with(Instant::now);
                records += 1;
                bytes += m.payload_len() as u64;
            }
            Some(Err(e)) => bail!("consuming failed: {e}"),
            None => {}
        }
    }
    let seconds = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    Ok(json!({"seconds": seconds, "records": records, "bytes": bytes}))
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn latency(
    bootstrap: &str,
    topic: &str,
    rate: u64,
    seconds: u64,
    partitions: i32,
    size: usize,
    linger_ms: u64,
) -> anyhow::Result<serde_json::Value> {
    let total = rate * seconds;
    let c = consumer(
        bootstrap,
        &[("fetch.wait.max.ms", "100"), ("fetch.min.bytes", "1")],
    )?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions.max(1) {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    // The topic is new: from the beginning, so nothing sent before a position is found is
    // skipped. Let the consumer find its positions before the clock starts.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(1) {
        c.poll(Duration::from_millis(50));
    }
    let bootstrap_p = bootstrap.to_string();
    let topic_p = topic.to_string();
    let sender = std::thread::spawn(move || -> anyhow::Result<()> {
        let (p, failed) = producer(&bootstrap_p, linger_ms)?;
        let start = Instant::now();
        let mut value = vec![b'x'; size.max(8)];
        for i in 0..total {
            let due = start + Duration::from_micros(i * 1_000_000 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            value[..8].copy_from_slice(&now_micros().to_be_bytes());
            let key = (partitions > 1).then(|| i.to_string());
            send(&p, &topic_p, key.as_deref().map(str::as_bytes), &value)?;
            p.poll(Duration::ZERO);
        }
        p.flush(Duration::from_secs(60))?;
        if failed.load(Ordering::Relaxed) > 0 {
            bail!("records were not delivered");
        }
        Ok(())
    });
    let mut lat: Vec<f64> = Vec::with_capacity(total as usize);
    let deadline = Instant::now() + Duration::from_secs(seconds + 60);
    while (lat.len() as u64) < total && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100))
            && let Some(v) = m.payload()
            && v.len() >= 8
        {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&v[..8]);
            lat.push(now_micros().saturating_sub(u64::from_be_bytes(ts)) as f64 / 1000.0);
        }
    }
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
    if (lat.len() as u64) < total {
        bail!("received {} of {total} records", lat.len());
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((p / 100.0) * (lat.len() - 1) as f64).round() as usize];
    Ok(json!({"p50": pct(50.0), "p99": pct(99.0), "p99.9": pct(99.9), "max": lat[lat.len() - 1]}))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Produce { to, load } => produce(&to, &load),
        Cmd::Consume {
            to,
            count,
            partitions,
        } => consume(&to.bootstrap, &to.topic, count, partitions),
        Cmd::Latency {
            to,
            rate,
            seconds,
            partitions,
            size,
            linger_ms,
        } => latency(
            &to.bootstrap,
            &to.topic,
            rate,
            seconds,
            partitions,
            size,
            linger_ms,
        ),
    };
    match result {
        Ok(v) => {
            println!("{v}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
