#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! Log compaction: latest value per key, tombstones with a delete horizon, offsets unchanged,
//! appends not blocked, and crash safety of the segment swap.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use fjord_log::sim::SimStorage;
use fjord_log::{AppendOrigin, CleanupPolicy, Log, LogConfig, ReadUpTo, Storage};
use fjord_record::{BatchBuilder, Compression};

fn config() -> LogConfig {
    LogConfig {
        cleanup_policy: CleanupPolicy::COMPACT,
        segment_bytes: 1_000,
        index_interval_bytes: 200,
        delete_retention_ms: 10_000,
        ..LogConfig::default()
    }
}

/// Latest value per key over a list of records (None = tombstone).
fn latest(seen: &[Seen]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    let mut m = BTreeMap::new();
    for s in seen {
        m.insert(s.key.clone().unwrap(), s.value.clone());
    }
    m
}

fn fill(log: &Log, rounds: usize) {
    for round in 0..rounds {
        for codec in [Compression::None, Compression::Zstd] {
            let mut b = BatchBuilder::new(codec);
            for k in 0..5 {
                let v = format!("r{round}-{codec:?}-k{k}");
                b.push(
                    1_000,
                    Some(format!("key{k}").as_bytes()),
                    Some(v.as_bytes()),
                );
            }
            let bytes = b.build().unwrap();
            log.append(&bytes, AppendOrigin::Client, 1_000).unwrap();
        }
    }
}

#[test]
fn keeps_the_latest_record_per_key_at_its_offset() {
    let storage: Arc<dyn Storage> = Arc::new(SimStorage::new());
    let log = open(&storage, config());
    fill(&log, 20);
    let end = log.log_end_offset();
    log.set_high_watermark(end).unwrap();
    let before = read_all(&log, ReadUpTo::LogEnd);
    let segments_before = log.segments().len();
    assert!(segments_before > 3);

    let out = log.compact(2_000).unwrap();
    assert!(out.records_removed > 0);
    assert!(out.bytes_after < out.bytes_before);
    let after = read_all(&log, ReadUpTo::LogEnd);
    assert_eq!(
        latest(&after),
        latest(&before),
        "latest value per key unchanged"
    );
    assert_eq!(log.log_end_offset(), end, "the end offset never moves");
    assert_eq!(log.segments().len(), segments_before);
    // Every surviving record sits at its original offset with its original value.
    let by_offset: BTreeMap<i64, &Seen> = before.iter().map(|s| (s.offset, s)).collect();
    for s in &after {
        assert_eq!(by_offset[&s.offset], s);
    }
    // In the cleaned (sealed) segments each key appears at most once.
    let active_base = log.segments().last().unwrap().base_offset;
    let mut keys = std::collections::HashSet::new();
    for s in after.iter().filter(|s| s.offset < active_base) {
        assert!(
            keys.insert(s.key.clone()),
            "duplicate key {:?} in cleaned part",
            s.key
        );
    }
    // A second pass has nothing left to do.
    assert_eq!(log.compact(2_000).unwrap().segments_cleaned, 0);
    // Reading from an offset that compaction removed lands on the next record.
    let gap = (0..end)
        .find(|o| !after.iter().any(|s| s.offset == *o))
        .unwrap();
    let slice = log
        .read(gap, 1 << 20, ReadUpTo::LogEnd, true)
        .unwrap()
        .data
        .unwrap();
    assert!(slice.next_offset > gap);

    // The compacted log survives a clean reopen and a crash.
    log.close().unwrap();
    let log = open(&storage, config());
    assert_eq!(read_all(&log, ReadUpTo::LogEnd), after);
}

#[test]
fn tombstones_stay_for_delete_retention_then_go() {
    let storage: Arc<dyn Storage> = Arc::new(SimStorage::new());
    let log = open(&storage, config());
    let b = kv_batch(
        &[("a", Some("1")), ("b", Some("1")), ("c", Some("1"))],
        1_000,
    );
    log.append(&b, AppendOrigin::Client, 1_000).unwrap();
    let b = kv_batch(&[("a", None), ("b", Some("2"))], 1_000);
    log.append(&b, AppendOrigin::Client, 1_000).unwrap();
    // Fill until the tombstone's segment is sealed.
    let mut i = 0;
    while log.segments().len() < 3 {
        let k = format!("filler{i}");
        let b = kv_batch(&[(k.as_str(), Some("x"))], 1_000);
        log.append(&b, AppendOrigin::Client, 1_000).unwrap();
        i += 1;
    }
    log.set_high_watermark(log.log_end_offset()).unwrap();

    log.compact(5_000).unwrap();
    let seen = read_all(&log, ReadUpTo::LogEnd);
    let a: Vec<_> = seen
        .iter()
        .filter(|s| s.key.as_deref() == Some(b"a"))
        .collect();
    assert_eq!(a.len(), 1, "only the tombstone of a is left");
    assert_eq!(a[0].value, None);
    assert_eq!(
        a[0].timestamp, 1_000,
        "record timestamps survive the delete horizon"
    );
    assert_eq!(
        seen.iter()
            .filter(|s| s.key.as_deref() == Some(b"b"))
            .count(),
        1
    );

    // Before the horizon (5s + 10s) the tombstone stays; after it, it goes.
    log.compact(15_000).unwrap();
    assert!(
        read_all(&log, ReadUpTo::LogEnd)
            .iter()
            .any(|s| s.key.as_deref() == Some(b"a"))
    );
    log.compact(15_001).unwrap();
    let seen = read_all(&log, ReadUpTo::LogEnd);
    assert!(!seen.iter().any(|s| s.key.as_deref() == Some(b"a")));
    assert!(seen.iter().any(|s| s.key.as_deref() == Some(b"c")));
}

#[test]
fn compact_and_delete_together() {
    let storage: Arc<dyn Storage> = Arc::new(SimStorage::new());
    let config = LogConfig {
        cleanup_policy: CleanupPolicy {
            compact: true,
            delete: true,
        },
        retention_ms: 5_000,
        ..config()
    };
    let log = open(&storage, config);
    for i in 0..30i64 {
        let k = format!("k{}", i % 4);
        let b = kv_batch(&[(k.as_str(), Some("v"))], i * 1_000);
        log.append(&b, AppendOrigin::Client, i * 1_000).unwrap();
    }
    log.set_high_watermark(30).unwrap();
    log.compact(30_000).unwrap();
    let out = log.enforce_retention(30_000).unwrap();
    assert!(
        out.deleted_segments > 0,
        "retention applies to compacted topics with delete too"
    );
}

#[test]
fn appends_racing_compaction_keep_their_latest_values() {
    let storage: Arc<dyn Storage> = Arc::new(SimStorage::new());
    let log = Arc::new(open(&storage, config()));
    fill(&log, 40);
    log.set_high_watermark(log.log_end_offset()).unwrap();
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for i in 0..200 {
                let k = format!("w{}", i % 7);
                let b = kv_batch(&[(k.as_str(), Some("new"))], 2_000);
                log.append_durable(&b, AppendOrigin::Client, 2_000).unwrap();
            }
        })
    };
    for _ in 0..5 {
        log.compact(3_000).unwrap();
    }
    writer.join().unwrap();
    let end = log.log_end_offset();
    assert_eq!(end, 400 + 200);
    log.set_high_watermark(end).unwrap();
    let seen = read_all(&log, ReadUpTo::LogEnd);
    let latest = latest(&seen);
    for k in 0..7 {
        assert_eq!(
            latest[format!("w{k}").as_bytes()].as_deref(),
            Some(&b"new"[..])
        );
    }
}

#[test]
fn crash_at_any_step_of_compaction_loses_no_latest_value() {
    // Count the operations one pass takes.
    let setup = || {
        let disk = SimStorage::new();
        let storage: Arc<dyn Storage> = Arc::new(disk.clone());
        let log = open(&storage, config());
        fill(&log, 12);
        log.set_high_watermark(log.log_end_offset()).unwrap();
        log.sync().unwrap();
        (disk, log)
    };
    let (disk, log) = setup();
    let before = read_all(&log, ReadUpTo::LogEnd);
    let ops = disk.op_count();
    log.compact(2_000).unwrap();
    let pass_ops = disk.op_count() - ops;
    assert!(pass_ops > 10);
    for n in 0..pass_ops {
        let (disk, log) = setup();
        disk.fail_op(n, true);
        let _ = log.compact(2_000);
        disk.heal();
        for seed in [None, Some(n)] {
            let image: Arc<dyn Storage> = Arc::new(disk.crash_image(seed));
            let log = open(&image, config());
            let after = read_all(&log, ReadUpTo::LogEnd);
            assert_eq!(latest(&after), latest(&before), "fault at op {n}");
            let by_offset: BTreeMap<i64, &Seen> = before.iter().map(|s| (s.offset, s)).collect();
            for s in &after {
                assert_eq!(
                    by_offset[&s.offset], s,
                    "fault at op {n}: record moved or changed"
                );
            }
            assert_eq!(log.log_end_offset(), before.last().unwrap().offset + 1);
        }
    }
}

#[test]
fn min_compaction_lag_keeps_young_segments_as_written() {
    let storage: Arc<dyn Storage> = Arc::new(SimStorage::new());
    let log = open(
        &storage,
        LogConfig {
            min_compaction_lag_ms: 5_000,
            ..config()
        },
    );
    fill(&log, 20); // records stamped 1,000
    log.set_high_watermark(log.log_end_offset()).unwrap();
    // At 3,000 every record is younger than the lag: nothing may be cleaned.
    assert_eq!(log.compact(3_000).unwrap().segments_cleaned, 0);
    // Once the lag has passed, the same segments are cleaned.
    assert!(log.compact(7_000).unwrap().segments_cleaned > 0);
}

#[test]
fn dirty_ratio_waits_unless_a_record_passed_max_compaction_lag() {
    let storage: Arc<dyn Storage> = Arc::new(SimStorage::new());
    let cfg = LogConfig {
        min_cleanable_dirty_ratio: 0.9,
        ..config()
    };
    let log = open(&storage, cfg);
    fill(&log, 20);
    log.set_high_watermark(log.log_end_offset()).unwrap();
    assert!(
        log.compact(2_000).unwrap().segments_cleaned > 0,
        "first pass cleans all"
    );
    // A little more data seals a segment or two: far below 90% of the log.
    fill(&log, 3);
    log.set_high_watermark(log.log_end_offset()).unwrap();
    assert_eq!(
        log.compact(2_000).unwrap().segments_cleaned,
        0,
        "below the ratio"
    );
    // The same dirty segments, once older than max.compaction.lag.ms, are cleaned.
    log.set_config(LogConfig {
        max_compaction_lag_ms: 500,
        ..cfg
    })
    .unwrap();
    assert!(log.compact(2_000).unwrap().segments_cleaned > 0, "overdue");
}

#[test]
fn a_compacted_log_rolls_at_max_compaction_lag() {
    let storage: Arc<dyn Storage> = Arc::new(SimStorage::new());
    let log = open(
        &storage,
        LogConfig {
            segment_bytes: 1 << 20,
            max_compaction_lag_ms: 1_000,
            ..config()
        },
    );
    let mut b = BatchBuilder::new(Compression::None);
    b.push(1_000, Some(b"k"), Some(b"v"));
    let batch = b.build().unwrap();
    log.append(&batch, AppendOrigin::Client, 1_000).unwrap();
    log.append(&batch, AppendOrigin::Client, 1_500).unwrap();
    assert_eq!(log.segments().len(), 1);
    // Past the lag (not segment.ms, a week) the next append starts a new segment.
    log.append(&batch, AppendOrigin::Client, 2_500).unwrap();
    assert_eq!(log.segments().len(), 2);
}

#[test]
fn a_small_key_map_cleans_in_several_passes_to_the_same_result() {
    // 40 keys rewritten over many segments; a map of about 6 keys' worth.
    let write = |log: &Log| {
        for round in 0..12 {
            for k in 0..40 {
                let key = format!("key{k:02}");
                let value = format!("r{round}");
                log.append(
                    &kv_batch(&[(key.as_str(), Some(value.as_str()))], 1_000),
                    AppendOrigin::Client,
                    1_000,
                )
                .unwrap();
            }
        }
        log.set_high_watermark(log.log_end_offset()).unwrap();
    };
    let unbounded_disk: Arc<dyn Storage> = Arc::new(SimStorage::new());
    let unbounded = open(&unbounded_disk, config());
    write(&unbounded);
    let full = unbounded.compact(2_000).unwrap();
    assert_eq!(full.keys_indexed, 40);

    let budget = 6 * (5 + 48);
    let bounded_disk: Arc<dyn Storage> = Arc::new(SimStorage::new());
    let bounded = open(
        &bounded_disk,
        LogConfig {
            cleaner_dedupe_bytes: budget,
            min_cleanable_dirty_ratio: 0.0,
            ..config()
        },
    );
    write(&bounded);
    let segments = bounded.segments().len();
    let mut passes = 0;
    let mut cleaned_total = 0;
    loop {
        let out = bounded.compact(2_000).unwrap();
        passes += 1;
        // At most the budget, plus the keys of the one segment a pass always takes.
        assert!(out.keys_indexed <= 6 + 15, "pass {passes}: {out:?}");
        if out.segments_cleaned == 0 && out.keys_indexed == 0 {
            break;
        }
        cleaned_total += out.segments_cleaned;
        assert!(passes < 200, "the passes make progress");
    }
    assert!(
        passes > 2,
        "a small map needs several passes ({passes} for {segments} segments)"
    );
    assert!(cleaned_total > 0);
    let want = latest(&read_all(&unbounded, ReadUpTo::LogEnd));
    let got = latest(&read_all(&bounded, ReadUpTo::LogEnd));
    assert_eq!(got, want, "the same latest value per key");
    // And no more records than the unbounded cleaner left, but for the active segment's.
    let kept = |log: &Log| read_all(log, ReadUpTo::LogEnd).len();
    assert_eq!(kept(&bounded), kept(&unbounded));
}
