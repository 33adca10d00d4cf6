#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! The leader-epoch cache kept across restarts, crashes, truncation and retention: every
//! batch in the log has the epoch the cache gives its offset, and OffsetForLeaderEpoch's
//! answers follow Kafka's rule.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{DIR, batch, open};
use fjord_log::epochs::{EpochEntry, FILE_NAME};
use fjord_log::sim::{SimStorage, XorShift};
use fjord_log::{AppendOrigin, Log, LogConfig, ReadUpTo, Storage};
use fjord_record::{BatchHeader, Compression, split_batches};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1_500,
        ..LogConfig::default()
    }
}

fn entries(pairs: &[(i32, i64)]) -> Vec<EpochEntry> {
    pairs
        .iter()
        .map(|&(epoch, start_offset)| EpochEntry {
            epoch,
            start_offset,
        })
        .collect()
}

/// Every batch header from the log start to the log end.
fn headers(log: &Log) -> Vec<BatchHeader> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let res = log.read(offset, 1 << 20, ReadUpTo::LogEnd, true).unwrap();
        let Some(slice) = res.data else { break };
        let bytes = slice.read().unwrap();
        for b in split_batches(&bytes) {
            out.push(BatchHeader::parse(b.unwrap()).unwrap());
        }
        offset = slice.next_offset;
    }
    out
}

/// The cache describes the log: each batch's epoch is the one the cache has for its offset,
/// and the cache holds no epoch the log does not start (past the log start).
fn assert_describes(log: &Log, context: &str) {
    let cache = log.leader_epochs();
    for h in headers(log) {
        // A batch may straddle the log start: its first offset still served is what counts.
        let at = h.base_offset.max(log.log_start_offset());
        let from_cache = cache
            .iter()
            .rev()
            .find(|e| e.start_offset <= at)
            .map(|e| e.epoch);
        assert_eq!(
            from_cache,
            Some(h.partition_leader_epoch),
            "{context}: batch at {} has epoch {}; cache {cache:?}",
            h.base_offset,
            h.partition_leader_epoch
        );
    }
    for e in &cache {
        assert!(
            e.start_offset <= log.log_end_offset(),
            "{context}: {e:?} past the log end"
        );
    }
}

fn append(log: &Log, n: usize) {
    log.append_durable(
        &batch("v", n, 1_000, Compression::None),
        AppendOrigin::Client,
        1_000,
    )
    .unwrap();
}

#[test]
fn epochs_survive_restarts_truncation_and_retention() {
    let storage: Arc<dyn Storage> = Arc::new(SimStorage::new());
    let log = open(&storage, config());
    log.set_leader_epoch(0);
    append(&log, 3);
    log.set_leader_epoch(2);
    append(&log, 2);
    append(&log, 1);
    log.set_leader_epoch(5);
    append(&log, 4);
    assert_eq!(log.leader_epochs(), entries(&[(0, 0), (2, 3), (5, 6)]));
    assert_eq!(log.end_offset_for_epoch(0), (0, 3));
    assert_eq!(log.end_offset_for_epoch(1), (0, 3));
    assert_eq!(log.end_offset_for_epoch(4), (2, 6));
    assert_eq!(log.end_offset_for_epoch(5), (5, 10));
    assert_eq!(log.end_offset_for_epoch(6), (-1, -1));
    log.close().unwrap();

    let log = open(&storage, config());
    assert_eq!(log.leader_epochs(), entries(&[(0, 0), (2, 3), (5, 6)]));
    assert_eq!(log.leader_epoch(), 5, "the latest epoch is the log's again");
    assert_describes(&log, "after a clean restart");

    log.truncate_to(5).unwrap();
    assert_eq!(log.leader_epochs(), entries(&[(0, 0), (2, 3)]));
    assert_eq!(log.end_offset_for_epoch(2), (2, 5));
    log.set_leader_epoch(7);
    append(&log, 2);
    assert_eq!(log.leader_epochs(), entries(&[(0, 0), (2, 3), (7, 5)]));

    log.set_high_watermark(log.log_end_offset()).unwrap();
    log.advance_log_start_offset(4).unwrap();
    assert_eq!(log.leader_epochs(), entries(&[(2, 4), (7, 5)]));
    log.close().unwrap();
    let log = open(&storage, config());
    assert_eq!(log.leader_epochs(), entries(&[(2, 4), (7, 5)]));
    assert_describes(&log, "after truncation and a new log start");
}

#[test]
fn a_data_directory_without_the_file_gets_it_rebuilt_from_the_batches() {
    for epochs in [&[0][..], &[0, 0, 3, 3, 4]] {
        let disk = SimStorage::new();
        let storage: Arc<dyn Storage> = Arc::new(disk.clone());
        let log = open(&storage, config());
        for &e in epochs {
            log.set_leader_epoch(e);
            append(&log, 2);
        }
        let before = log.leader_epochs();
        log.close().unwrap();
        storage
            .remove_file(&Path::new(DIR).join(FILE_NAME))
            .unwrap();
        let log = open(&storage, config());
        assert_eq!(log.leader_epochs(), before, "rebuilt for epochs {epochs:?}");
        assert_describes(&log, "rebuilt");
        log.close().unwrap();
        assert!(
            disk.read_file(&Path::new(DIR).join(FILE_NAME)).is_some(),
            "and written"
        );
    }
}

#[test]
fn crashes_at_any_point_leave_a_cache_that_describes_the_recovered_log() {
    for seed in 0..60u64 {
        let disk = SimStorage::new();
        let storage: Arc<dyn Storage> = Arc::new(disk.clone());
        let log = open(&storage, config());
        let mut rng = XorShift::new(seed);
        let mut epoch = 0;
        log.set_leader_epoch(epoch);
        let steps = 5 + rng.next_u64() % 25;
        for _ in 0..steps {
            match rng.next_u64() % 10 {
                0 | 1 => {
                    epoch += 1 + (rng.next_u64() % 3) as i32;
                    log.set_leader_epoch(epoch);
                }
                2 => {
                    let end = log.log_end_offset();
                    if end > 0 {
                        log.truncate_to((rng.next_u64() % end as u64) as i64)
                            .unwrap();
                    }
                }
                3 => {
                    // Appended but not synced: a crash may tear it off.
                    log.append(
                        &batch(
                            "u",
                            1 + (rng.next_u64() % 3) as usize,
                            1_000,
                            Compression::None,
                        ),
                        AppendOrigin::Client,
                        1_000,
                    )
                    .unwrap();
                }
                _ => append(&log, 1 + (rng.next_u64() % 4) as usize),
            }
        }
        let image = disk.crash_image(Some(seed));
        let storage: Arc<dyn Storage> = Arc::new(image);
        let log = open(&storage, config());
        assert_describes(&log, &format!("seed {seed} after a crash"));
        // Appends go on with the latest epoch, and the cache follows.
        log.set_leader_epoch(epoch + 1);
        append(&log, 1);
        assert_describes(&log, &format!("seed {seed} after the crash and one append"));
    }
}
