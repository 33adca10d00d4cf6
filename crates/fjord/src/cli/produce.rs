//! `fjord produce`: lines from stdin as records.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use fjord_record::{BatchBuilder, Compression, NewRecord};
use serde_json::json;

use super::{Common, Output, Progress, key_value, print_json};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl From<Codec> for Compression {
    fn from(c: Codec) -> Self {
        match c {
            Codec::None => Compression::None,
            Codec::Gzip => Compression::Gzip,
            Codec::Snappy => Compression::Snappy,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Acks {
    #[value(name = "all")]
    All,
    #[value(name = "1")]
    One,
    #[value(name = "0")]
    Zero,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  printf 'k1:hello\\n' | fjord produce orders --key-separator :\n  fjord produce orders --header source=cli --compression zstd < events.txt"
)]
pub struct ProduceArgs {
    pub topic: String,
    /// Split each line at the first SEP into key and value (lines without it get a null key).
    #[arg(long, short = 'K', value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Header for every record, KEY=VALUE; repeat for more.
    #[arg(long, short = 'H', value_name = "KEY=VALUE")]
    pub header: Vec<String>,
    /// Write to this partition (default: by key hash, as Kafka's Java client; unkeyed records
    /// fill one partition per batch, round robin).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    #[arg(long, short = 'z', value_enum, default_value_t = Codec::None)]
    pub compression: Codec,
    #[arg(long, value_enum, default_value_t = Acks::All)]
    pub acks: Acks,
    /// Records per batch (each batch is one request).
    #[arg(long, default_value_t = 500)]
    pub batch_records: usize,
}

/// Kafka's murmur2 (the Java client's default partitioner hashes keys with it).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ len as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= u32::from(tail[2]) << 16;
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

fn partition_for(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub async fn run(args: ProduceArgs, common: &Common) -> anyhow::Result<()> {
    let cluster = common.connect_cluster().await?;
    let client = cluster.bootstrap();
    // Like a producer, let the broker auto-create the topic if it is configured to.
    let partitions = client
        .partition_count(&args.topic, true)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}; create the topic with: fjord topic create {}",
                args.topic
            )
        })?;
    if let Some(p) = args.partition
        && (p < 0 || p >= partitions)
    {
        anyhow::bail!(
            "partition {p} does not exist: {} has partitions 0..{}",
            args.topic,
            partitions - 1
        );
    }
    let headers: Vec<(Vec<u8>, Option<Vec<u8>>)> = args
        .header
        .iter()
        .map(|h| key_value(h).map(|(k, v)| (k.into_bytes(), Some(v.into_bytes()))))
        .collect::<Result<_, _>>()?;
    let codec = Compression::from(args.compression);
    let acks = match args.acks {
        Acks::All => -1,
        Acks::One => 1,
        Acks::Zero => 0,
    };
    let interactive = std::io::stdin().is_terminal();
    let batch_records = if interactive {
        1
    } else {
        args.batch_records.max(1)
    };
    let mut pending: BTreeMap<i32, Vec<NewRecord>> = BTreeMap::new();
    let mut sticky = 0i32;
    let mut total = 0u64;
    let mut bytes_total = 0u64;
    let mut offsets: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    let mut progress = Progress::new("produced");

    let send = |partition: i32, records: Vec<NewRecord>| {
        let cluster = &cluster;
        let topic = args.topic.clone();
        async move {
            let n = records.len() as i64;
            let mut b = BatchBuilder::new(codec);
            for (i, mut r) in records.into_iter().enumerate() {
                r.offset_delta = i as i32;
                b.push_record(r);
            }
            let batch = b.build()?;
            let len = batch.len() as u64;
            let base = cluster
                .produce(&topic, partition, Bytes::from(batch), acks)
                .await?;
            anyhow::Ok((partition, base, n, len))
        }
    };

    let stdin = std::io::stdin();
    let mut lines = stdin.lock().split(b'\n');
    loop {
        let line = lines.next().transpose()?;
        let done = line.is_none();
        if let Some(mut line) = line {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let (key, value) = match &args.key_separator {
                Some(sep) if !sep.is_empty() => match find(&line, sep.as_bytes()) {
                    Some(at) => (Some(line[..at].to_vec()), line[at + sep.len()..].to_vec()),
                    None => (None, line),
                },
                _ => (None, line),
            };
            let partition = match (args.partition, &key) {
                (Some(p), _) => p,
                (None, Some(k)) => partition_for(k, partitions),
                (None, None) => sticky,
            };
            let list = pending.entry(partition).or_default();
            list.push(NewRecord {
                offset_delta: 0,
                timestamp: now_ms(),
                key,
                value: Some(value),
                headers: headers.clone(),
            });
            if list.len() < batch_records {
                continue;
            }
            if args.partition.is_none() && partition == sticky {
                sticky = (sticky + 1) % partitions;
            }
        }
        let ready: Vec<i32> = pending
            .iter()
            .filter(|(_, v)| done || v.len() >= batch_records)
            .map(|(p, _)| *p)
            .collect();
        for p in ready {
            let records = pending.remove(&p).unwrap_or_default();
            if records.is_empty() {
                continue;
            }
            let (partition, base, n, len) = send(p, records).await?;
            total += n as u64;
            bytes_total += len;
            progress.update(total, bytes_total);
            if base >= 0 {
                let e = offsets.entry(partition).or_insert((base, base + n - 1));
                e.0 = e.0.min(base);
                e.1 = e.1.max(base + n - 1);
            }
        }
        if done {
            break;
        }
    }
    progress.finish();
    match common.output {
        Output::Json => print_json(&json!({
            "topic": args.topic,
            "records": total,
            "partitions": offsets.iter().map(|(p, (a, b))| (p.to_string(), json!({"first_offset": a, "last_offset": b}))).collect::<serde_json::Map<_, _>>(),
        })),
        Output::Table => eprintln!("produced {total} record(s) to {}", args.topic),
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_java_client() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }
}
