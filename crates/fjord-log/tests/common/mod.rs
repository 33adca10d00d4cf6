#![allow(dead_code)]
//! Helpers shared by the log's integration tests.

use std::sync::Arc;

use fjord_log::{Log, LogConfig, ReadUpTo, Storage};
use fjord_record::{BatchBuilder, BatchHeader, Compression, Records, split_batches};

pub const DIR: &str = "/data/topic-0";

/// One record as a consumer would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// A batch of `n` records whose values are `"{tag}-{i}"`, keys `k{i % keys}`.
pub fn batch(tag: &str, n: usize, ts: i64, codec: Compression) -> Vec<u8> {
    batch_keys(tag, n, ts, codec, usize::MAX)
}

pub fn batch_keys(tag: &str, n: usize, ts: i64, codec: Compression, keys: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(codec);
    for i in 0..n {
        let key = format!("k{}", i % keys);
        let value = format!("{tag}-{i}");
        b.push(ts + i as i64, Some(key.as_bytes()), Some(value.as_bytes()));
    }
    b.build().expect("test batch builds")
}

/// A batch with explicit (key, value) pairs, value None = tombstone.
pub fn kv_batch(pairs: &[(&str, Option<&str>)], ts: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new(Compression::None);
    for (k, v) in pairs {
        b.push(ts, Some(k.as_bytes()), v.map(str::as_bytes));
    }
    b.build().expect("test batch builds")
}

/// Every record readable from the log start to `upper`, in order.
pub fn read_all(log: &Log, upper: ReadUpTo) -> Vec<Seen> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let res = log.read(offset, 64 * 1024, upper, true).expect("read");
        let Some(slice) = res.data else { break };
        let bytes = slice.read().expect("slice read");
        for b in split_batches(&bytes) {
            let b = b.expect("whole batches");
            let header = fjord_record::validate_batch(b).expect("served batches verify");
            for r in Records::decode(b, 1 << 26).expect("decode").iter() {
                let r = r.expect("record");
                if r.offset(&header) >= offset {
                    out.push(Seen {
                        offset: r.offset(&header),
                        timestamp: r.timestamp(&header),
                        key: r.key.map(<[u8]>::to_vec),
                        value: r.value.map(<[u8]>::to_vec),
                    });
                }
            }
        }
        assert!(slice.next_offset > offset, "reads make progress");
        offset = slice.next_offset;
    }
    out
}

pub fn values(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .map(|s| String::from_utf8_lossy(s.value.as_deref().unwrap_or(b"<null>")).into_owned())
        .collect()
}

pub fn open(storage: &Arc<dyn Storage>, config: LogConfig) -> Log {
    Log::open(storage.clone(), DIR, config, 1_000).expect("log opens")
}

pub fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 1_000,
        index_interval_bytes: 300,
        ..LogConfig::default()
    }
}

pub fn header(batch: &[u8]) -> BatchHeader {
    BatchHeader::parse(batch).expect("header")
}
