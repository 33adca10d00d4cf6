#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! Property test: random sequences of log operations against an in-memory reference model.

mod common;

use std::sync::Arc;

use common::*;
use fjord_log::sim::SimStorage;
use fjord_log::{AppendOrigin, Log, LogConfig, LogError, ReadUpTo, Storage};
use fjord_record::Compression;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        n: usize,
        codec: usize,
        durable: bool,
    },
    SetHw(u8),
    Truncate(u8),
    AdvanceStart(u8),
    RetainBytes(u16),
    Read(u8, u16),
    ReopenClean,
    Crash(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..6, 0usize..5, any::<bool>()).prop_map(|(n, codec, durable)| Op::Append { n, codec, durable }),
        2 => any::<u8>().prop_map(Op::SetHw),
        1 => any::<u8>().prop_map(Op::Truncate),
        1 => any::<u8>().prop_map(Op::AdvanceStart),
        1 => (500u16..5_000).prop_map(Op::RetainBytes),
        3 => (any::<u8>(), 1u16..2_000).prop_map(|(o, b)| Op::Read(o, b)),
        1 => Just(Op::ReopenClean),
        1 => any::<u8>().prop_map(Op::Crash),
    ]
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 800,
        index_interval_bytes: 150,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

/// The reference: offset → value for every record in [start, end).
#[derive(Debug, Default)]
struct Model {
    records: Vec<String>,
    start: i64,
    hw: i64,
    durable: i64,
}

impl Model {
    fn end(&self) -> i64 {
        self.records.len() as i64
    }
    /// Picks an offset in [start, end] from a byte.
    fn pick(&self, b: u8) -> i64 {
        self.start + (i64::from(b) * (self.end() - self.start + 1)) / 256
    }
}

fn check(log: &Log, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.log_start_offset(), model.start);
    prop_assert_eq!(log.log_end_offset(), model.end());
    prop_assert_eq!(log.high_watermark(), model.hw);
    let seen = read_all(log, ReadUpTo::LogEnd);
    let want: Vec<(i64, String)> = (model.start..model.end())
        .map(|o| (o, model.records[o as usize].clone()))
        .collect();
    let got: Vec<(i64, String)> = seen
        .iter()
        .map(|s| {
            (
                s.offset,
                String::from_utf8_lossy(s.value.as_deref().unwrap_or(b"")).into_owned(),
            )
        })
        .collect();
    prop_assert_eq!(got, want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_reference_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut disk = SimStorage::new();
        let mut storage: Arc<dyn Storage> = Arc::new(disk.clone());
        let mut log = open(&storage, config());
        let mut model = Model::default();
        let mut counter = 0;
        for op in ops {
            match op {
                Op::Append { n, codec, durable } => {
                    counter += 1;
                    let tag = format!("a{counter}");
                    let b = batch(&tag, n, 1_000 + counter, Compression::ALL[codec]);
                    let info = log.append(&b, AppendOrigin::Client, 1_000).unwrap();
                    prop_assert_eq!(info.first_offset, model.end());
                    model.records.extend((0..n).map(|i| format!("{tag}-{i}")));
                    if durable {
                        log.wait_durable(&info).unwrap();
                        model.durable = model.end();
                    }
                }
                Op::SetHw(b) => {
                    let hw = model.hw.max(model.pick(b));
                    log.set_high_watermark(hw).unwrap();
                    model.hw = hw;
                }
                Op::Truncate(b) => {
                    let target = model.pick(b);
                    log.truncate_to(target).unwrap();
                    // Truncation rounds down to the start of the batch holding the target.
                    let end = log.log_end_offset();
                    prop_assert!(end <= target.max(model.start));
                    model.records.truncate(end as usize);
                    model.hw = model.hw.min(end);
                    model.durable = model.durable.min(end);
                    model.start = log.log_start_offset();
                    // Below the old start the log restarts empty at the target.
                    if model.start > end { model.start = end; }
                    while (model.records.len() as i64) < model.start {
                        model.records.push(String::new());
                    }
                }
                Op::AdvanceStart(b) => {
                    let target = model.pick(b);
                    match log.advance_log_start_offset(target) {
                        Ok(start) => {
                            prop_assert!(target <= model.hw);
                            model.start = model.start.max(start);
                        }
                        Err(LogError::OffsetOutOfRange { .. }) => prop_assert!(target > model.hw),
                        Err(e) => return Err(TestCaseError::fail(e.to_string())),
                    }
                }
                Op::RetainBytes(bytes) => {
                    let mut c = config();
                    c.retention_bytes = i64::from(bytes);
                    log.set_config(c).unwrap();
                    let out = log.enforce_retention(1_000).unwrap();
                    log.set_config(config()).unwrap();
                    prop_assert!(out.log_start_offset >= model.start);
                    prop_assert!(out.log_start_offset <= model.hw);
                    model.start = out.log_start_offset;
                    // Kafka's rule: a segment goes only while the log stays at least
                    // retention.bytes big without it, and only if it lies below the HW.
                    let segs = log.segments();
                    let size = log.size_bytes();
                    let next_base = segs.get(1).map_or(model.end(), |s| s.base_offset);
                    prop_assert!(
                        size < segs[0].size + u64::from(bytes) || next_base > model.hw || segs[0].size == 0,
                        "retention stopped early: {:?}", segs
                    );
                }
                Op::Read(b, max) => {
                    let offset = model.pick(b);
                    let res = log.read(offset, usize::from(max), ReadUpTo::HighWatermark, true).unwrap();
                    match res.data {
                        None if offset >= model.hw => {}
                        None => {
                            // Only if the batch holding the offset reaches past the high watermark.
                            let whole = log.read(offset, 1, ReadUpTo::LogEnd, true).unwrap();
                            prop_assert!(whole.data.unwrap().next_offset > model.hw);
                        }
                        Some(slice) => {
                            prop_assert!(slice.first_offset <= offset);
                            prop_assert!(slice.next_offset > offset);
                            prop_assert!(slice.next_offset <= model.hw);
                        }
                    }
                }
                Op::ReopenClean => {
                    log.close().unwrap();
                    log = open(&storage, config());
                }
                Op::Crash(seed) => {
                    // Only the durable prefix is promised; anything more that survived must
                    // still match the model.
                    disk = disk.crash_image(Some(u64::from(seed)));
                    storage = Arc::new(disk.clone());
                    log = open(&storage, config());
                    let end = log.log_end_offset();
                    prop_assert!(end >= model.durable, "lost durable data: {} < {}", end, model.durable);
                    prop_assert!(end <= model.end());
                    model.records.truncate(end as usize);
                    model.durable = end;
                    model.hw = log.high_watermark();
                    prop_assert!(log.log_start_offset() >= model.start.min(end));
                    model.start = log.log_start_offset();
                }
            }
            check(&log, &model)?;
        }
    }
}
