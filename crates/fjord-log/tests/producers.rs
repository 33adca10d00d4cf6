#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! Producer state, transactions and the aborted-transaction index, across reopen and crashes.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use fjord_log::{
    AbortedTxn, AppendOrigin, LogConfig, LogError, ProducerError, ReadUpTo, Storage,
    sim::SimStorage,
};
use fjord_record::{BatchBuilder, Compression, build_marker};

fn producer_batch(pid: i64, epoch: i16, seq: i32, n: usize, txn: bool) -> Vec<u8> {
    let mut b = BatchBuilder::new(Compression::None);
    b.producer_id = pid;
    b.producer_epoch = epoch;
    b.base_sequence = seq;
    b.transactional = txn;
    for i in 0..n {
        b.push(
            1_000,
            Some(format!("k{i}").as_bytes()),
            Some(b"value-of-some-length"),
        );
    }
    b.build().unwrap()
}

#[test]
fn retries_are_answered_from_the_log_across_rolls_reopen_and_crash() {
    let disk = SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let log = open(&storage, small_segments());
    let mut last = None;
    for i in 0..40 {
        let b = producer_batch(7, 0, i * 3, 3, false);
        last = Some(log.append_durable(&b, AppendOrigin::Client, 1_000).unwrap());
    }
    assert!(log.segments().len() > 3, "segments rolled");
    let last = last.unwrap();
    // A crash: the state comes back from the newest snapshot and the batches after it.
    let crashed_disk = disk.crash_image(None);
    let crashed: Arc<dyn Storage> = Arc::new(crashed_disk.clone());
    let log = open(&crashed, small_segments());
    let dup = log
        .append(
            &producer_batch(7, 0, 39 * 3, 3, false),
            AppendOrigin::Client,
            2_000,
        )
        .unwrap();
    assert!(dup.duplicate);
    assert_eq!(
        (dup.first_offset, dup.last_offset),
        (last.first_offset, last.last_offset)
    );
    assert_eq!(log.log_end_offset(), 120, "a duplicate is not written");
    let gap = log.append(
        &producer_batch(7, 0, 125, 1, false),
        AppendOrigin::Client,
        2_000,
    );
    assert!(matches!(
        gap,
        Err(LogError::Producer(ProducerError::OutOfOrderSequence {
            expected: 120,
            ..
        }))
    ));
    let next = log.append(
        &producer_batch(7, 0, 120, 1, false),
        AppendOrigin::Client,
        2_000,
    );
    assert!(next.is_ok(), "same epoch, next sequence");
    log.close().unwrap();
    // Clean reopen, and a crash with every snapshot gone (full replay) agree.
    let log = open(&crashed, small_segments());
    let with_snapshot = log.producers();
    let image: Arc<dyn Storage> = Arc::new(crashed_disk.crash_image(None));
    drop(log);
    for name in image.list_dir(Path::new(DIR)).unwrap() {
        if name.ends_with(".snapshot") {
            image.remove_file(&Path::new(DIR).join(name)).unwrap();
        }
    }
    let log = open(&image, small_segments());
    let replayed = log.producers();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].batches, with_snapshot[0].batches);
    assert_eq!(replayed[0].last_sequence(), 120);
    // A stale epoch after a newer one is fenced.
    log.append(
        &producer_batch(7, 1, 0, 1, false),
        AppendOrigin::Client,
        3_000,
    )
    .unwrap();
    assert!(matches!(
        log.append(
            &producer_batch(7, 0, 121, 1, false),
            AppendOrigin::Client,
            3_000
        ),
        Err(LogError::Producer(ProducerError::InvalidProducerEpoch {
            current: 1,
            ..
        }))
    ));
    assert_eq!(log.expire_producers(3_000 + 86_400_000, 86_400_000), 1);
    assert!(log.producers().is_empty());
}

fn marker(pid: i64, epoch: i16, commit: bool) -> Vec<u8> {
    build_marker(pid, epoch, 0, commit, 1_000)
}

#[test]
fn transactions_set_the_lso_and_aborts_survive_crashes() {
    let disk = SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let log = open(&storage, small_segments());
    let append = |b: &mut Vec<u8>, origin| {
        let info = log.append_durable(b, origin, 1_000).unwrap();
        log.advance_high_watermark(info.next_offset());
        info
    };
    let t1 = append(&mut producer_batch(1, 0, 0, 2, true), AppendOrigin::Client); // 0..1
    let t2 = append(&mut producer_batch(2, 0, 0, 2, true), AppendOrigin::Client); // 2..3
    append(&mut producer_batch(1, 0, 2, 2, true), AppendOrigin::Client); // 4..5
    assert_eq!(log.last_stable_offset(), t1.first_offset);
    // Clients may not write markers.
    assert!(
        log.append(&marker(1, 0, false), AppendOrigin::Client, 1_000)
            .is_err()
    );
    let abort = append(&mut marker(1, 0, false), AppendOrigin::Internal); // 6
    assert_eq!(log.last_stable_offset(), t2.first_offset);
    let commit = append(&mut marker(2, 0, true), AppendOrigin::Internal); // 7
    assert_eq!(log.last_stable_offset(), commit.next_offset());
    let t3 = append(&mut producer_batch(3, 0, 0, 30, true), AppendOrigin::Client);
    let expected = vec![AbortedTxn {
        producer_id: 1,
        first_offset: t1.first_offset,
        last_offset: abort.first_offset,
        last_stable_offset: t2.first_offset,
    }];
    assert_eq!(log.aborted_transactions(0, log.log_end_offset()), expected);
    assert!(
        log.aborted_transactions(abort.first_offset + 1, 100)
            .is_empty()
    );
    // A read_committed read stops at the LSO.
    let res = log.read(0, 1 << 20, ReadUpTo::LastStable, true).unwrap();
    assert_eq!(res.last_stable_offset, t3.first_offset);
    assert_eq!(res.data.unwrap().next_offset, t3.first_offset);

    // Crash with everything synced: the same state comes back.
    let img = disk.crash_image(None);
    let image: Arc<dyn Storage> = Arc::new(img.clone());
    let reopened = open(&image, small_segments());
    reopened
        .set_high_watermark(reopened.log_end_offset())
        .unwrap();
    assert_eq!(reopened.last_stable_offset(), t3.first_offset);
    assert_eq!(reopened.aborted_transactions(0, i64::MAX), expected);
    // The open transaction is finished after the restart, as the coordinator would.
    reopened
        .append_durable(&marker(3, 0, false), AppendOrigin::Internal, 2_000)
        .unwrap();
    reopened
        .set_high_watermark(reopened.log_end_offset())
        .unwrap();
    assert_eq!(reopened.last_stable_offset(), reopened.log_end_offset());
    assert_eq!(reopened.aborted_transactions(0, i64::MAX).len(), 2);

    // A crash that loses an unsynced abort marker: the transaction is open again and its
    // index entry is gone.
    drop(reopened);
    let img = disk.crash_image(None);
    let image: Arc<dyn Storage> = Arc::new(img.clone());
    let log2 = open(&image, small_segments());
    let b = producer_batch(9, 0, 0, 1, true);
    let t9 = log2
        .append_durable(&b, AppendOrigin::Client, 3_000)
        .unwrap();
    log2.append(&marker(9, 0, false), AppendOrigin::Internal, 3_000)
        .unwrap();
    // Only what was synced survives: the marker never was.
    let lost: Arc<dyn Storage> = Arc::new(img.crash_image(None));
    let log3 = open(&lost, small_segments());
    log3.set_high_watermark(log3.log_end_offset()).unwrap();
    assert_eq!(log3.log_end_offset(), t9.next_offset());
    assert_eq!(
        log3.last_stable_offset(),
        t3.first_offset.min(t9.first_offset)
    );
    assert!(
        log3.aborted_transactions(0, i64::MAX)
            .iter()
            .all(|a| a.producer_id != 9)
    );
}

#[test]
fn logs_without_producers_write_no_snapshots() {
    let disk = SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let log = open(&storage, LogConfig::default());
    for i in 0..10 {
        let b = batch(&format!("b{i}"), 3, 1_000, Compression::None);
        log.append_durable(&b, AppendOrigin::Client, 1_000).unwrap();
    }
    log.close().unwrap();
    let log = open(&storage, LogConfig::default());
    log.close().unwrap();
    let snapshots = storage
        .list_dir(Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".snapshot"))
        .count();
    assert_eq!(
        snapshots, 0,
        "no producer, no snapshot fsyncs at open or close"
    );
    // A producer's state is kept across a clean restart.
    let log = open(&storage, LogConfig::default());
    log.append_durable(
        &producer_batch(3, 0, 0, 2, false),
        AppendOrigin::Client,
        1_000,
    )
    .unwrap();
    log.close().unwrap();
    let log = open(&storage, LogConfig::default());
    assert_eq!(log.producers()[0].last_sequence(), 1);
}

#[test]
fn a_crash_that_loses_a_sealed_segments_tail_forgets_its_batches() {
    let disk = SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let log = open(&storage, small_segments());
    log.append_durable(
        &producer_batch(7, 0, 0, 3, false),
        AppendOrigin::Client,
        1_000,
    )
    .unwrap();
    // Unsynced appends (acks=1, or acks=all still waiting) until the segment rolls: the roll
    // writes the new segment and a producer snapshot at its base durably, the old segment's
    // tail stays in the page cache.
    let mut seq = 3;
    while log.segments().len() == 1 {
        log.append(
            &producer_batch(7, 0, seq, 3, false),
            AppendOrigin::Client,
            1_000,
        )
        .unwrap();
        seq += 3;
    }
    let crashed: Arc<dyn Storage> = Arc::new(disk.crash_image(None));
    let log = open(&crashed, small_segments());
    assert_eq!(log.log_end_offset(), 3, "only the synced batch survives");
    assert_eq!(read_all(&log, ReadUpTo::LogEnd).len(), 3);
    // The producer retries its first unacknowledged batch: it must be written again, not
    // answered as a duplicate of data the crash took.
    let retry = log
        .append(
            &producer_batch(7, 0, 3, 3, false),
            AppendOrigin::Client,
            2_000,
        )
        .unwrap();
    assert!(!retry.duplicate);
    assert_eq!(retry.first_offset, 3);
    assert_eq!(read_all(&log, ReadUpTo::LogEnd).len(), 6);
}

/// KIP-890's verification guard: a producer's first transactional write to a partition is
/// verified with its coordinator, and a marker written between that verification and the
/// append voids it, so a late write cannot open a transaction the coordinator knows nothing of
/// (a hanging transaction holding back the last stable offset for good).
#[test]
fn a_marker_written_while_a_write_was_verified_refuses_that_write() {
    let storage: Arc<dyn Storage> = Arc::new(SimStorage::new());
    let log = open(&storage, LogConfig::default());
    let unverified = |r: Result<_, LogError>| {
        matches!(
            r,
            Err(LogError::Producer(ProducerError::UnverifiedTransaction {
                producer_id: 9
            }))
        )
    };

    // Verified, nothing happened meanwhile: the write opens the transaction; once open, later
    // writes of the same epoch need no verification (guard 0 expects an open transaction).
    let guard = log
        .begin_verification(9, 0, 0, 1_000)
        .expect("nothing open: verify");
    assert_eq!(
        log.begin_verification(9, 0, 2, 1_000),
        Some(guard),
        "concurrent checks share it"
    );
    // A later batch that overtook the first one while it was verified waits for it.
    assert!(matches!(
        log.append_verified(&producer_batch(9, 0, 2, 2, true), 1_000, guard),
        Err(LogError::Producer(ProducerError::OutOfOrderSequence {
            expected: 0,
            ..
        }))
    ));
    log.append_verified(&producer_batch(9, 0, 0, 2, true), 1_000, guard)
        .unwrap();
    assert_eq!(
        log.begin_verification(9, 0, 0, 1_000),
        None,
        "open: nothing to verify"
    );
    log.append_verified(&producer_batch(9, 0, 2, 2, true), 1_000, 0)
        .unwrap();
    log.append(&marker(9, 0, true), AppendOrigin::Internal, 1_000)
        .unwrap();

    // The transaction ended: a write that expected it open is refused...
    assert!(unverified(log.append_verified(
        &producer_batch(9, 0, 4, 1, true),
        1_000,
        0
    )));
    // ...and so is one verified before a marker that came while it waited.
    let guard = log.begin_verification(9, 0, 0, 1_000).unwrap();
    log.append(&marker(9, 0, false), AppendOrigin::Internal, 1_000)
        .unwrap();
    let end = log.log_end_offset();
    assert!(unverified(log.append_verified(
        &producer_batch(9, 0, 4, 1, true),
        1_000,
        guard
    )));
    assert_eq!(log.log_end_offset(), end, "nothing written");
    assert!(
        log.producers().iter().all(|p| p.txn_first_offset.is_none()),
        "no transaction left open"
    );
    // A guard of another verification is not this one's.
    let fresh = log.begin_verification(9, 0, 0, 1_000).unwrap();
    assert_ne!(fresh, guard);
    log.append_verified(&producer_batch(9, 0, 4, 1, true), 1_000, fresh)
        .unwrap();
    // Idempotent (non-transactional) writes never need one.
    log.append_verified(&producer_batch(10, 0, 0, 1, false), 1_000, 0)
        .unwrap();
}
