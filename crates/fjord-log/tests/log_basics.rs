#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! The log's behaviour on a real directory and on the simulated disk.

mod common;

use std::sync::Arc;

use common::*;
use fjord_log::{
    AppendOrigin, CleanupPolicy, FsStorage, Log, LogConfig, LogError, ReadUpTo, Storage,
    TimestampOffset, sim::SimStorage,
};
use fjord_record::{Compression, TimestampType};

fn sim() -> Arc<dyn Storage> {
    Arc::new(SimStorage::new())
}

#[test]
fn append_assigns_dense_offsets_and_reads_back_every_codec() {
    let storage = sim();
    let log = open(&storage, small_segments());
    let mut expected = Vec::new();
    for (i, codec) in Compression::ALL.iter().cycle().take(25).enumerate() {
        let b = batch(&format!("b{i}"), 7, 10_000 + i as i64 * 10, *codec);
        let info = log.append_durable(&b, AppendOrigin::Client, 5_000).unwrap();
        assert_eq!(info.first_offset, i as i64 * 7);
        assert_eq!(info.last_offset, i as i64 * 7 + 6);
        assert_eq!(info.record_count, 7);
        assert_eq!(info.log_append_time, -1);
        for j in 0..7 {
            expected.push(format!("b{i}-{j}"));
        }
    }
    assert_eq!(log.log_end_offset(), 175);
    assert_eq!(log.durable_offset(), 175);
    assert!(
        log.segments().len() > 3,
        "small segments roll: {:?}",
        log.segments()
    );
    log.set_high_watermark(175).unwrap();
    let seen = read_all(&log, ReadUpTo::HighWatermark);
    assert_eq!(values(&seen), expected);
    assert!(seen.iter().enumerate().all(|(i, s)| s.offset == i as i64));
}

#[test]
fn reads_respect_bounds_and_byte_limits() {
    let storage = sim();
    let log = open(&storage, LogConfig::default());
    let mut sizes = Vec::new();
    for i in 0..10 {
        let b = batch(&format!("b{i}"), 3, 1_000, Compression::None);
        sizes.push(b.len() as u64);
        log.append(&b, AppendOrigin::Client, 1_000).unwrap();
    }
    // Nothing below the high watermark yet.
    assert!(
        log.read(0, 1 << 20, ReadUpTo::HighWatermark, true)
            .unwrap()
            .data
            .is_none()
    );
    log.set_high_watermark(9).unwrap();
    let r = log.read(0, 1 << 20, ReadUpTo::HighWatermark, true).unwrap();
    let slice = r.data.unwrap();
    assert_eq!((slice.first_offset, slice.next_offset), (0, 9));
    assert_eq!(slice.len, sizes[..3].iter().sum::<u64>());
    // A read from the middle of a batch starts with that batch.
    let slice = log
        .read(4, 1 << 20, ReadUpTo::LogEnd, true)
        .unwrap()
        .data
        .unwrap();
    assert_eq!(slice.first_offset, 3);
    assert_eq!(slice.next_offset, 30);
    // Byte limit: whole batches only; the first batch even if too big when asked.
    let slice = log
        .read(0, sizes[0] as usize + 10, ReadUpTo::LogEnd, true)
        .unwrap()
        .data
        .unwrap();
    assert_eq!(slice.next_offset, 3);
    let slice = log
        .read(0, 5, ReadUpTo::LogEnd, true)
        .unwrap()
        .data
        .unwrap();
    assert_eq!(slice.next_offset, 3);
    assert!(
        log.read(0, 5, ReadUpTo::LogEnd, false)
            .unwrap()
            .data
            .is_none()
    );
    // Upper bound by offset (e.g. the last stable offset): a batch reaching it is held back.
    let slice = log
        .read(0, 1 << 20, ReadUpTo::Offset(7), true)
        .unwrap()
        .data
        .unwrap();
    assert_eq!(slice.next_offset, 6);
    let slice = log
        .read(0, 1 << 20, ReadUpTo::Offset(9), true)
        .unwrap()
        .data
        .unwrap();
    assert_eq!(slice.next_offset, 9);
    // At the end: empty; beyond: out of range.
    assert!(
        log.read(30, 100, ReadUpTo::LogEnd, true)
            .unwrap()
            .data
            .is_none()
    );
    assert!(matches!(
        log.read(31, 100, ReadUpTo::LogEnd, true),
        Err(LogError::OffsetOutOfRange {
            offset: 31,
            log_start_offset: 0,
            log_end_offset: 30
        })
    ));
}

#[test]
fn bad_batches_are_refused_with_typed_errors() {
    let storage = sim();
    let config = LogConfig {
        max_message_bytes: 500,
        cleanup_policy: CleanupPolicy::COMPACT,
        ..LogConfig::default()
    };
    let log = open(&storage, config);
    let big = batch("big", 40, 1, Compression::None);
    assert!(matches!(
        log.append(&big, AppendOrigin::Client, 1),
        Err(LogError::BatchTooLarge { max: 500, .. })
    ));
    let mut corrupt = batch("c", 2, 1, Compression::None);
    let n = corrupt.len();
    corrupt[n - 1] ^= 1;
    assert!(matches!(
        log.append(&corrupt, AppendOrigin::Client, 1),
        Err(LogError::CorruptBatch(
            fjord_record::RecordError::CrcMismatch { .. }
        ))
    ));
    let mut truncated = batch("t", 2, 1, Compression::None);
    truncated.pop();
    assert!(matches!(
        log.append(&truncated, AppendOrigin::Client, 1),
        Err(LogError::CorruptBatch(_))
    ));
    let mut b = fjord_record::BatchBuilder::new(Compression::None);
    b.push(1, None, Some(b"no key"));
    let no_key = b.build().unwrap();
    // Refused record by record (KIP-467), with Kafka's message naming the partition.
    match log.append(&no_key, AppendOrigin::Client, 1) {
        Err(LogError::RecordsRejected {
            timestamp: false,
            records,
            ..
        }) => {
            assert_eq!(records.len(), 1);
            assert_eq!(records[0].0, 0);
            assert!(
                records[0]
                    .1
                    .starts_with("Compacted topic cannot accept message without key")
            );
        }
        other => panic!("keyless record in a compacted log: {other:?}"),
    }
    let mut b = fjord_record::BatchBuilder::new(Compression::None);
    b.control = true;
    b.push(1, Some(b"\0\0\0\0"), Some(b"marker"));
    let control = b.build().unwrap();
    assert!(matches!(
        log.append(&control.clone(), AppendOrigin::Client, 1),
        Err(LogError::InvalidRecord { .. })
    ));
    log.append(&control, AppendOrigin::Internal, 1).unwrap();
    assert!(matches!(
        log.append(&[], AppendOrigin::Client, 1),
        Err(LogError::InvalidRecord { .. })
    ));
    assert_eq!(
        log.log_end_offset(),
        1,
        "only the internal control batch went in"
    );
    assert!(log.failure().is_none(), "bad input does not fail the log");
}

#[test]
fn log_append_time_and_create_time() {
    let storage = sim();
    let config = LogConfig {
        message_timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let log = open(&storage, config);
    let b = batch("x", 3, 100, Compression::Snappy);
    let info = log.append(&b, AppendOrigin::Client, 777_000).unwrap();
    assert_eq!(info.log_append_time, 777_000);
    log.set_high_watermark(3).unwrap();
    let seen = read_all(&log, ReadUpTo::HighWatermark);
    assert!(seen.iter().all(|s| s.timestamp == 777_000));

    // CreateTime: a producer's wrong max timestamp is corrected.
    let storage = sim();
    let log = open(&storage, LogConfig::default());
    let mut b = batch("y", 3, 100, Compression::None);
    b[35..43].copy_from_slice(&5i64.to_be_bytes());
    let crc = fjord_record::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    log.append(&b, AppendOrigin::Client, 1).unwrap();
    assert_eq!(
        header(&b).max_timestamp,
        5,
        "the caller's bytes are not written to"
    );
    assert_eq!(log.segments()[0].max_timestamp, 102);
    log.set_high_watermark(3).unwrap();
    let stored = log
        .read(0, 1 << 20, ReadUpTo::HighWatermark, true)
        .unwrap()
        .data
        .unwrap()
        .read()
        .unwrap();
    assert_eq!(header(&stored).max_timestamp, 102);
    fjord_record::validate_batch(&stored).expect("the CRC covers the corrected header");
}

#[test]
fn offsets_by_timestamp_and_max_timestamp() {
    let storage = sim();
    let log = open(&storage, small_segments());
    // Timestamps rise by 10 per batch, with one out-of-order batch in the middle.
    for i in 0..40i64 {
        let ts = if i == 20 { 50_000 } else { 1_000 + i * 10 };
        let b = batch(&format!("b{i}"), 2, ts, Compression::Lz4);
        log.append(&b, AppendOrigin::Client, 1).unwrap();
    }
    // Batch i holds offsets 2i, 2i+1 with timestamps ts, ts+1.
    assert_eq!(
        log.offset_for_timestamp(1_000).unwrap(),
        Some(TimestampOffset {
            timestamp: 1_000,
            offset: 0
        })
    );
    assert_eq!(
        log.offset_for_timestamp(1_101).unwrap(),
        Some(TimestampOffset {
            timestamp: 1_101,
            offset: 21
        })
    );
    assert_eq!(
        log.offset_for_timestamp(1_102).unwrap(),
        Some(TimestampOffset {
            timestamp: 1_110,
            offset: 22
        })
    );
    // First record with timestamp >= 1_300 is the out-of-order batch 20 (offset 40).
    assert_eq!(
        log.offset_for_timestamp(1_300).unwrap(),
        Some(TimestampOffset {
            timestamp: 50_000,
            offset: 40
        })
    );
    assert_eq!(
        log.offset_for_timestamp(1_391).unwrap(),
        Some(TimestampOffset {
            timestamp: 50_000,
            offset: 40
        })
    );
    assert_eq!(log.offset_for_timestamp(60_000).unwrap(), None);
    assert_eq!(
        log.max_timestamp_offset().unwrap(),
        Some(TimestampOffset {
            timestamp: 50_001,
            offset: 41
        })
    );
    // Same answers after a clean reopen (indexes loaded from disk).
    log.close().unwrap();
    let log = open(&storage, small_segments());
    assert_eq!(
        log.offset_for_timestamp(1_102).unwrap(),
        Some(TimestampOffset {
            timestamp: 1_110,
            offset: 22
        })
    );
    assert_eq!(
        log.max_timestamp_offset().unwrap(),
        Some(TimestampOffset {
            timestamp: 50_001,
            offset: 41
        })
    );
}

#[test]
fn clean_reopen_is_fast_and_unclean_reopen_recovers() {
    let disk = SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let log = open(&storage, small_segments());
    for i in 0..300 {
        let b = batch(&format!("b{i}"), 4, 1_000, Compression::None);
        log.append_durable(&b, AppendOrigin::Client, 1_000).unwrap();
    }
    log.set_high_watermark(1_200).unwrap();
    log.close().unwrap();
    assert!(matches!(
        log.append(
            &batch("late", 1, 1, Compression::None),
            AppendOrigin::Client,
            1
        ),
        Err(LogError::Closed { .. })
    ));
    // A clean reopen reads only index files and segment tails: far fewer bytes than the log.
    let size = log.size_bytes();
    let read_before = disk.bytes_read();
    let log = open(&storage, small_segments());
    let read = disk.bytes_read() - read_before;
    assert!(read * 4 < size, "clean open read {read} of {size} bytes");
    assert_eq!(log.log_end_offset(), 1_200);
    assert_eq!(log.high_watermark(), 1_200);
    let all = read_all(&log, ReadUpTo::LogEnd);
    assert_eq!(all.len(), 1_200);
    // Now crash without closing, after more appends.
    for i in 300..305 {
        let b = batch(&format!("b{i}"), 4, 1_000, Compression::None);
        log.append_durable(&b, AppendOrigin::Client, 1_000).unwrap();
    }
    let image = disk.crash_image(None);
    let crashed: Arc<dyn Storage> = Arc::new(image.clone());
    let log = open(&crashed, small_segments());
    assert_eq!(log.log_end_offset(), 1_220);
    // Recovery scanned the segments past the recovery point, not the whole log.
    let scanned = image.bytes_read();
    let active = log.segments().last().unwrap().size;
    assert!(scanned >= active, "the active segment was verified");
    assert!(
        scanned * 2 < log.size_bytes(),
        "recovery read {scanned} bytes"
    );
    assert_eq!(
        values(&read_all(&log, ReadUpTo::LogEnd)).last().unwrap(),
        "b304-3"
    );
}

#[test]
fn torn_tail_is_cut_and_nothing_unverified_served() {
    let disk = SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let log = open(&storage, LogConfig::default());
    for i in 0..5 {
        let b = batch(&format!("b{i}"), 2, 1_000, Compression::None);
        log.append_durable(&b, AppendOrigin::Client, 1).unwrap();
    }
    let seg = std::path::Path::new(DIR).join(format!("{:020}.log", 0));
    let len = disk.read_file(&seg).unwrap().len();
    // Flip a byte inside the fourth batch.
    let batch_len = len / 5;
    disk.corrupt(&seg, batch_len * 3 + 70, &[0xee]);
    drop(log);
    let log = open(&storage, LogConfig::default());
    assert_eq!(
        log.log_end_offset(),
        6,
        "batches from the corrupt one on are dropped"
    );
    assert_eq!(read_all(&log, ReadUpTo::LogEnd).len(), 6);
    // The log continues from there.
    let b = batch("after", 1, 1, Compression::None);
    assert_eq!(
        log.append(&b, AppendOrigin::Client, 1)
            .unwrap()
            .first_offset,
        6
    );
}

#[test]
fn truncation_and_log_start_offset() {
    let disk = SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let log = open(&storage, small_segments());
    for i in 0..30 {
        let b = batch(&format!("b{i}"), 3, 1_000 + i, Compression::Gzip);
        log.append_durable(&b, AppendOrigin::Client, 1).unwrap();
    }
    log.set_high_watermark(90).unwrap();
    let segments_before = log.segments().len();
    // Truncating into the middle of batch 20 (offsets 60..62) drops it whole.
    log.truncate_to(61).unwrap();
    assert_eq!(log.log_end_offset(), 60);
    assert_eq!(log.high_watermark(), 60);
    assert!(log.segments().len() < segments_before);
    let seen = read_all(&log, ReadUpTo::LogEnd);
    assert_eq!(seen.len(), 60);
    assert_eq!(values(&seen).last().unwrap(), "b19-2");
    let b = batch("new", 2, 5_000, Compression::None);
    assert_eq!(
        log.append_durable(&b, AppendOrigin::Client, 1)
            .unwrap()
            .first_offset,
        60
    );
    // Timestamps were recomputed: nothing from the dropped batches is found.
    assert_eq!(log.offset_for_timestamp(1_025).unwrap().unwrap().offset, 60);
    log.set_high_watermark(62).unwrap();

    // DeleteRecords: not past the high watermark; durable; whole segments below go.
    assert!(matches!(
        log.advance_log_start_offset(63),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.advance_log_start_offset(31).unwrap(), 31);
    assert_eq!(log.log_start_offset(), 31);
    assert!(log.segments()[0].base_offset <= 31);
    assert!(
        log.segments()[0].base_offset > 0,
        "segments wholly below were deleted"
    );
    assert!(matches!(
        log.read(30, 10, ReadUpTo::LogEnd, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log, ReadUpTo::LogEnd).first().unwrap().offset, 31);
    // The log start offset survives a crash.
    let crashed: Arc<dyn Storage> = Arc::new(disk.crash_image(None));
    let log = open(&crashed, small_segments());
    assert_eq!(log.log_start_offset(), 31);
    assert_eq!(log.log_end_offset(), 62);

    // Truncating below the log start empties the log and restarts it there.
    log.truncate_to(10).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (10, 10));
    let b = batch("restart", 1, 1, Compression::None);
    assert_eq!(
        log.append(&b, AppendOrigin::Client, 1)
            .unwrap()
            .first_offset,
        10
    );
}

#[test]
fn retention_by_time_and_size_deletes_whole_segments_below_hw() {
    let storage = sim();
    let config = LogConfig {
        retention_ms: 10_000,
        ..small_segments()
    };
    let log = open(&storage, config);
    for i in 0..40i64 {
        let b = batch(&format!("b{i}"), 2, i * 1_000, Compression::None);
        log.append(&b, AppendOrigin::Client, i * 1_000).unwrap();
    }
    let segs = log.segments();
    assert!(segs.len() >= 4, "{segs:?}");
    // Nothing goes while the high watermark is at 0.
    assert_eq!(log.enforce_retention(45_000).unwrap().deleted_segments, 0);
    log.set_high_watermark(80).unwrap();
    // Now = 45s: records older than 35s expire; a segment goes when its newest record does.
    let out = log.enforce_retention(45_000).unwrap();
    assert!(out.deleted_segments > 0);
    let first = log.segments()[0];
    assert_eq!(out.log_start_offset, first.base_offset);
    assert_eq!(log.log_start_offset(), first.base_offset);
    for s in &segs {
        let gone = s.base_offset < first.base_offset;
        assert_eq!(gone, s.max_timestamp < 35_000, "segment {s:?}");
    }
    // Everything expired: even the active segment goes, and the log continues at its end.
    let out = log.enforce_retention(1_000_000).unwrap();
    assert!(out.deleted_segments > 0);
    assert_eq!(log.log_start_offset(), 80);
    assert_eq!(log.log_end_offset(), 80);
    assert_eq!(log.size_bytes(), 0);

    // Size: keep at most ~3 segments' worth.
    let storage = sim();
    let config = LogConfig {
        retention_bytes: 6_000,
        retention_ms: -1,
        ..small_segments()
    };
    let log = open(&storage, config);
    for i in 0..60 {
        let b = batch(&format!("b{i}"), 2, 1, Compression::None);
        log.append(&b, AppendOrigin::Client, 1).unwrap();
    }
    log.set_high_watermark(120).unwrap();
    log.enforce_retention(1).unwrap();
    let size = log.size_bytes();
    assert!(size <= 6_000, "size {size}");
    assert!(
        size + 1_000 > 6_000,
        "no more than needed was deleted: {size}"
    );
    assert_eq!(read_all(&log, ReadUpTo::LogEnd).last().unwrap().offset, 119);
}

#[test]
fn group_commit_shares_one_fsync() {
    let disk = SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let log = open(&storage, LogConfig::default());
    let mut infos = Vec::new();
    for i in 0..5 {
        let b = batch(&format!("b{i}"), 1, 1, Compression::None);
        infos.push(log.append(&b, AppendOrigin::Client, 1).unwrap());
    }
    assert_eq!(log.durable_offset(), 0);
    let ops = disk.op_count();
    for info in &infos {
        log.wait_durable(info).unwrap();
    }
    assert_eq!(disk.op_count() - ops, 1, "five waiting appends, one fsync");
    assert_eq!(log.durable_offset(), 5);

    // Many threads appending and waiting: all durable, fewer fsyncs than appends is allowed but
    // every acknowledged append is covered.
    let log = Arc::new(log);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..50 {
                    let b = batch(&format!("t{t}-{i}"), 1, 1, Compression::None);
                    let info = log.append_durable(&b, AppendOrigin::Client, 1).unwrap();
                    assert!(log.durable_offset() > info.last_offset);
                    acked.push(info.first_offset);
                }
                acked
            })
        })
        .collect();
    let mut all: Vec<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (5..205).collect::<Vec<_>>());
}

#[test]
fn flush_messages_and_flush_ms() {
    let disk = SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let config = LogConfig {
        flush_messages: 10,
        flush_ms: 500,
        ..LogConfig::default()
    };
    let log = open(&storage, config);
    for i in 0..3 {
        let b = batch(&format!("b{i}"), 3, 1, Compression::None);
        log.append_durable(&b, AppendOrigin::Client, 1_000).unwrap();
    }
    assert_eq!(
        log.durable_offset(),
        0,
        "9 unflushed records: below flush.messages"
    );
    assert!(!log.flush_if_due(1_400).unwrap());
    assert!(log.flush_if_due(1_500).unwrap());
    assert_eq!(log.durable_offset(), 9);
    for i in 0..4 {
        let b = batch(&format!("c{i}"), 3, 1, Compression::None);
        log.append_durable(&b, AppendOrigin::Client, 2_000).unwrap();
    }
    assert_eq!(
        log.durable_offset(),
        21,
        "the 12th unflushed record forced a sync"
    );
}

#[test]
fn segment_ms_rolls_by_age() {
    let storage = sim();
    let config = LogConfig {
        segment_ms: 1_000,
        ..LogConfig::default()
    };
    let log = open(&storage, config);
    for i in 0..5i64 {
        let b = batch("x", 1, 10_000 + i * 600, Compression::None);
        log.append(&b, AppendOrigin::Client, 10_000 + i * 600)
            .unwrap();
    }
    let bases: Vec<i64> = log.segments().iter().map(|s| s.base_offset).collect();
    assert_eq!(bases, vec![0, 2, 4]);
}

#[test]
fn replica_appends_keep_leader_offsets() {
    let storage = sim();
    let log = open(&storage, LogConfig::default());
    let mut b = batch("r", 3, 1, Compression::None);
    fjord_record::set_base_offset(&mut b, 10);
    // A follower's log can start where the leader's data starts.
    log.truncate_fully_and_start_at(10).unwrap();
    log.append(&b, AppendOrigin::Replica, 1).unwrap();
    assert_eq!(log.log_end_offset(), 13);
    let mut stale = batch("r", 1, 1, Compression::None);
    fjord_record::set_base_offset(&mut stale, 12);
    assert!(matches!(
        log.append(&stale, AppendOrigin::Replica, 1),
        Err(LogError::InvalidRecord { .. })
    ));
}

#[test]
fn real_directory_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    let dir = tmp.path().join("orders-0");
    let log = Log::open(storage.clone(), &dir, small_segments(), 1).unwrap();
    for i in 0..20 {
        let b = batch(&format!("b{i}"), 5, 1_000, Compression::Zstd);
        log.append_durable(&b, AppendOrigin::Client, 1).unwrap();
    }
    let slice = log
        .read(0, 100, ReadUpTo::LogEnd, true)
        .unwrap()
        .data
        .unwrap();
    assert!(
        slice.file.fd().is_some(),
        "real files offer a descriptor for sendfile"
    );
    log.close().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.contains(&"00000000000000000000.log".to_string()));
    assert!(names.contains(&"00000000000000000000.index".to_string()));
    assert!(names.contains(&"00000000000000000000.timeindex".to_string()));
    assert!(names.contains(&"partition.checkpoint".to_string()));
    let log = Log::open(storage, &dir, small_segments(), 1).unwrap();
    assert_eq!(read_all(&log, ReadUpTo::LogEnd).len(), 100);
}

#[test]
fn old_message_format_is_refused_not_truncated() {
    let mut body = vec![0u8, 0];
    body.extend_from_slice(&(-1i32).to_be_bytes());
    body.extend_from_slice(&3i32.to_be_bytes());
    body.extend_from_slice(b"old");
    let mut crc = flate2::Crc::new();
    crc.update(&body);
    let mut msg = 0i64.to_be_bytes().to_vec();
    msg.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    msg.extend_from_slice(&crc.sum().to_be_bytes());
    msg.extend_from_slice(&body);
    let disk = SimStorage::new();
    let path = std::path::Path::new(DIR).join(format!("{:020}.log", 0));
    let f = disk.open(&path, true).unwrap();
    f.write_at(&msg, 0).unwrap();
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let err = Log::open(storage, DIR, LogConfig::default(), 0).unwrap_err();
    assert!(matches!(err, LogError::Unreadable { .. }), "{err}");
    assert!(err.to_string().contains("v0/v1"), "{err}");
    assert_eq!(
        disk.read_file(&path).unwrap(),
        msg,
        "the old data is left alone"
    );
}

#[test]
fn a_leader_stamps_its_epoch_and_a_replica_keeps_the_batchs() {
    let storage: Arc<dyn Storage> = Arc::new(SimStorage::new());
    let log = open(&storage, LogConfig::default());
    log.set_leader_epoch(7);
    let mut b = batch("a", 2, 1_000, Compression::None);
    fjord_record::set_partition_leader_epoch(&mut b, -1);
    log.append(&b, AppendOrigin::Client, 1).unwrap();
    let mut r = batch("r", 1, 1_000, Compression::None);
    fjord_record::set_base_offset(&mut r, 2);
    fjord_record::set_partition_leader_epoch(&mut r, 3);
    log.append(&r, AppendOrigin::Replica, 1).unwrap();
    let slice = log
        .read(0, 1 << 20, ReadUpTo::LogEnd, true)
        .unwrap()
        .data
        .unwrap();
    let bytes = slice.read().unwrap();
    let epochs: Vec<i32> = fjord_record::split_batches(&bytes)
        .map(|b| {
            fjord_record::BatchHeader::parse(b.unwrap())
                .unwrap()
                .partition_leader_epoch
        })
        .collect();
    assert_eq!(epochs, [7, 3]);
}

#[test]
fn timestamps_outside_the_topic_bounds_are_refused_record_by_record() {
    let storage: Arc<dyn Storage> = Arc::new(SimStorage::new());
    let log = open(
        &storage,
        LogConfig {
            message_timestamp_before_max_ms: 10_000,
            message_timestamp_after_max_ms: 1_000,
            ..LogConfig::default()
        },
    );
    let now = 100_000;
    let mut b = fjord_record::BatchBuilder::new(Compression::None);
    b.push(now, Some(b"k"), Some(b"ok"));
    b.push(now - 20_000, Some(b"k"), Some(b"too old"));
    b.push(now + 500, Some(b"k"), Some(b"ok"));
    b.push(now + 5_000, Some(b"k"), Some(b"too new"));
    let batch = b.build().unwrap();
    match log.append(&batch, AppendOrigin::Client, now) {
        Err(LogError::RecordsRejected {
            timestamp: true,
            message,
            records,
        }) => {
            assert_eq!(
                message,
                "One or more records have been rejected due to invalid timestamp"
            );
            assert_eq!(records.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 3]);
            assert_eq!(
                records[0].1,
                "Timestamp 80000 of message with offset 1 is out of range. The timestamp should be within [90000, 101000]"
            );
        }
        other => panic!("expected the timestamps refused, got {other:?}"),
    }
    assert_eq!(log.log_end_offset(), 0, "nothing of the batch was written");
    // In bounds, and LogAppendTime topics (the broker's clock) are never refused.
    let mut b = fjord_record::BatchBuilder::new(Compression::None);
    b.push(now - 5_000, Some(b"k"), Some(b"ok"));
    log.append(&b.build().unwrap(), AppendOrigin::Client, now)
        .unwrap();
}

#[test]
fn compression_type_rewrites_client_batches_and_keeps_producer_state() {
    let storage: Arc<dyn Storage> = Arc::new(SimStorage::new());
    let log = open(
        &storage,
        LogConfig {
            compression: Some(Compression::Gzip),
            ..LogConfig::default()
        },
    );
    // An idempotent producer's uncompressed batch, with headers.
    let mut b = fjord_record::BatchBuilder::new(Compression::None);
    b.producer_id = 7;
    b.producer_epoch = 0;
    b.base_sequence = 0;
    b.push_record(fjord_record::NewRecord {
        offset_delta: 0,
        timestamp: 1_000,
        key: Some(b"k".to_vec()),
        value: Some(b"v0".to_vec()),
        headers: vec![(b"h".to_vec(), Some(b"x".to_vec()))],
    });
    b.push(1_001, Some(b"k"), Some(b"v1"));
    let batch = b.build().unwrap();
    let info = log.append(&batch, AppendOrigin::Client, 2_000).unwrap();
    assert_eq!((info.first_offset, info.last_offset), (0, 1));
    log.set_high_watermark(log.log_end_offset()).unwrap();
    let slice = log
        .read(0, 1 << 20, ReadUpTo::LogEnd, true)
        .unwrap()
        .data
        .unwrap()
        .read()
        .unwrap();
    let stored = fjord_record::validate_batch(&slice).unwrap();
    assert_eq!(stored.compression().unwrap(), Compression::Gzip);
    assert_eq!(
        (
            stored.producer_id,
            stored.producer_epoch,
            stored.base_sequence
        ),
        (7, 0, 0)
    );
    assert_eq!(values(&read_all(&log, ReadUpTo::LogEnd)), ["v0", "v1"]);
    let records = fjord_record::Records::decode(&slice, 1 << 20).unwrap();
    let first = records.iter().next().unwrap().unwrap();
    assert_eq!(first.headers().next().unwrap().key, b"h");
    // The producer's retry of the same batch is still recognised as a duplicate.
    let again = log.append(&batch, AppendOrigin::Client, 2_000).unwrap();
    assert!(again.duplicate);
    assert_eq!(log.log_end_offset(), 2);
    // A corrupt batch is refused as corrupt, not rewritten.
    let mut corrupt = batch.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert!(matches!(
        log.append(&corrupt, AppendOrigin::Client, 2_000),
        Err(LogError::CorruptBatch(_))
    ));
}

/// Many one-record batches over several segments whose indexes span several pages each.
fn indexed_log(disk: &SimStorage) -> (Arc<dyn Storage>, Log, LogConfig, i64) {
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let config = LogConfig {
        segment_bytes: 256 * 1024,
        index_interval_bytes: 1,
        ..LogConfig::default()
    };
    let log = open(&storage, config);
    let n = 12_000;
    for i in 0..n {
        let b = batch(&format!("r{i}"), 1, 10_000 + 2 * i, Compression::None);
        log.append(&b, AppendOrigin::Client, 1).unwrap();
    }
    log.sync().unwrap();
    log.set_high_watermark(n).unwrap();
    (storage, log, config, n)
}

/// Every `step`-th offset read starts at that offset's batch, and every timestamp finds its
/// record.
fn check_lookups(log: &Log, n: i64, step: usize) {
    check_lookups_at(log, (0..n).step_by(step));
    assert_eq!(log.offset_for_timestamp(10_000 + 2 * n).unwrap(), None);
}

/// The first offset of a small read at `offset`.
fn first_read(log: &Log, offset: i64) -> i64 {
    log.read(offset, 100, ReadUpTo::LogEnd, true)
        .unwrap()
        .data
        .unwrap()
        .first_offset
}

fn check_lookups_at(log: &Log, offsets: impl IntoIterator<Item = i64>) {
    for offset in offsets {
        assert_eq!(first_read(log, offset), offset);
        let found = log
            .offset_for_timestamp(10_000 + 2 * offset - 1)
            .unwrap()
            .unwrap();
        assert_eq!(
            found.offset,
            offset,
            "timestamp {}",
            10_000 + 2 * offset - 1
        );
    }
}

fn sealed_index_memory(log: &Log) -> usize {
    let segments = log.segments();
    segments[..segments.len() - 1]
        .iter()
        .map(|s| s.index_memory_bytes)
        .sum()
}

#[test]
fn sealed_segments_keep_their_indexes_in_their_files_and_every_lookup_still_lands() {
    let disk = SimStorage::new();
    let (storage, log, config, n) = indexed_log(&disk);
    let segments = log.segments();
    assert!(segments.len() >= 4, "{segments:?}");
    // Each sealed index spans several 4 KiB pages of entries (one per batch).
    let per_segment = segments[0].next_offset - segments[0].base_offset;
    assert!(
        per_segment * 8 > 4 * 4096,
        "{per_segment} batches per segment"
    );
    assert_eq!(sealed_index_memory(&log), 0);
    assert!(segments.last().unwrap().index_memory_bytes > 0);
    check_lookups(&log, n, 7);
    // The files are used, not scanned past: a read at a sealed segment's end reads a few
    // pages, not the segment.
    let before = disk.bytes_read();
    let last = segments[0].next_offset - 1;
    assert_eq!(first_read(&log, last), last);
    let read = disk.bytes_read() - before;
    assert!(read < 32 * 1024, "{read} bytes read to find offset {last}");

    // After a clean restart, and after a crash (the sealed segments past the recovery point
    // are rescanned, their indexes rebuilt and written, then dropped from memory).
    log.close().unwrap();
    let log = open(&storage, config);
    assert_eq!(sealed_index_memory(&log), 0);
    check_lookups(&log, n, 11);
    // Without its checkpoint every segment is recovered: scanned, its indexes rebuilt,
    // written and dropped from memory.
    let image: Arc<dyn Storage> = Arc::new(disk.crash_image(None));
    image
        .remove_file(&std::path::Path::new(DIR).join("partition.checkpoint"))
        .unwrap();
    let crashed = open(&image, config);
    assert_eq!(crashed.log_end_offset(), n);
    assert_eq!(sealed_index_memory(&crashed), 0);
    check_lookups(&crashed, n, 13);

    // Truncating into a sealed segment makes it the active one: its indexes come back into
    // memory, take the cut and new entries, and answer as before.
    let cut = segments[1].base_offset + 100;
    log.truncate_to(cut).unwrap();
    assert_eq!(log.segments().len(), 2);
    assert!(log.segments()[1].index_memory_bytes > 0);
    for i in cut..n {
        let b = batch(&format!("r{i}"), 1, 10_000 + 2 * i, Compression::None);
        log.append(&b, AppendOrigin::Client, 1).unwrap();
    }
    log.sync().unwrap();
    assert_eq!(sealed_index_memory(&log), 0);
    check_lookups(&log, n, 5);
}

#[test]
fn a_damaged_sealed_index_is_not_believed_and_every_lookup_still_lands() {
    let disk = SimStorage::new();
    let (storage, log, config, n) = indexed_log(&disk);
    let segments = log.segments();
    log.close().unwrap();
    let dir = std::path::Path::new(DIR);
    // Garbage entries in the middle of two sealed segments' offset and time indexes (one entry
    // per batch, one batch per offset): after a clean shutdown nothing rescans them, and their
    // last entries are intact.
    let base = segments[1].base_offset;
    let index = dir.join(format!("{base:020}.index"));
    let entries = (disk.read_file(&index).unwrap().len() / 8) as i64;
    disk.corrupt(&index, (entries / 2 * 8) as usize, &[0x7f; 8]);
    disk.corrupt(&index, (entries / 3 * 8 + 4) as usize, &[0, 0, 0, 9]);
    let damaged_offsets = [base + entries / 3, base + entries / 2];
    let base = segments[2].base_offset;
    let time_index = dir.join(format!("{base:020}.timeindex"));
    let entries = (disk.read_file(&time_index).unwrap().len() / 12) as i64;
    disk.corrupt(&time_index, (entries / 2 * 12) as usize, &[0xff; 12]);
    let log = open(&storage, config);
    // Around each damaged entry first (once a segment's index is not believed, it is not
    // asked again), then everywhere.
    for at in damaged_offsets.into_iter().chain([base + entries / 2]) {
        check_lookups_at(&log, at - 3..at + 3);
    }
    check_lookups(&log, n, 3);

    // Made the active segment again, the damaged index is rebuilt from the log.
    let cut = segments[1].next_offset - 10;
    log.truncate_to(cut).unwrap();
    for i in cut..n {
        let b = batch(&format!("r{i}"), 1, 10_000 + 2 * i, Compression::None);
        log.append(&b, AppendOrigin::Client, 1).unwrap();
    }
    log.sync().unwrap();
    check_lookups(&log, n, 3);
}
