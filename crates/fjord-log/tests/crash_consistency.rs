#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! Crash images and injected I/O failures: after any crash the log recovers to a valid prefix
//! of what was appended, holding every append that was acknowledged as durable.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use common::*;
use fjord_log::checkpoint::{Checkpoint, Loaded};
use fjord_log::flusher::SyncMethod;
use fjord_log::sim::{SimStorage, XorShift};
use fjord_log::{AppendOrigin, Flusher, LastShutdown, Log, LogConfig, LogError, ReadUpTo, Storage};
use fjord_record::Compression;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1_500,
        index_interval_bytes: 200,
        ..LogConfig::default()
    }
}

/// Checks a recovered log against what was appended: a prefix, in order, byte-equal values,
/// holding at least every durable offset.
fn check_recovered(storage: &Arc<dyn Storage>, appended: &[String], durable: i64) -> usize {
    check_recovered_as(storage, appended, durable, LastShutdown::PerLog)
}

fn check_recovered_as(
    storage: &Arc<dyn Storage>,
    appended: &[String],
    durable: i64,
    last: LastShutdown,
) -> usize {
    check_recovered_at(storage, Path::new(DIR), appended, durable, last)
}

fn check_recovered_at(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    appended: &[String],
    durable: i64,
    last: LastShutdown,
) -> usize {
    let log = Log::open_with(storage.clone(), dir, config(), 1_000, last).unwrap();
    let seen = read_all(&log, ReadUpTo::LogEnd);
    let got = values(&seen);
    assert!(got.len() <= appended.len(), "more records than appended");
    assert_eq!(
        got[..],
        appended[..got.len()],
        "recovered log is not a prefix"
    );
    assert!(seen.iter().enumerate().all(|(i, s)| s.offset == i as i64));
    assert!(
        got.len() as i64 >= durable,
        "lost acknowledged data: recovered {} records, {durable} were durable",
        got.len()
    );
    assert_eq!(log.log_end_offset(), got.len() as i64);
    // The recovered log accepts appends at its end.
    let b = batch("post-crash", 1, 1, Compression::None);
    let info = log.append_durable(&b, AppendOrigin::Client, 1).unwrap();
    assert_eq!(info.first_offset, got.len() as i64);
    got.len()
}

#[test]
fn crash_images_recover_every_synced_append() {
    let mut recovered_short = 0;
    for seed in 0..60u64 {
        let disk = SimStorage::new();
        let storage: Arc<dyn Storage> = Arc::new(disk.clone());
        let mut rng = XorShift::new(seed);
        let mut log = open(&storage, config());
        let mut appended: Vec<String> = Vec::new();
        let steps = 10 + rng.next_u64() % 40;
        for step in 0..steps {
            let n = 1 + (rng.next_u64() % 5) as usize;
            let codec = Compression::ALL[(rng.next_u64() % 5) as usize];
            let tag = format!("s{seed}-{step}");
            let b = batch(&tag, n, 1_000 + step as i64, codec);
            let info = log.append(&b, AppendOrigin::Client, 1_000).unwrap();
            appended.extend((0..n).map(|i| format!("{tag}-{i}")));
            match rng.next_u64() % 4 {
                0 => {}
                1 | 2 => log.wait_durable(&info).unwrap(),
                _ => {
                    if rng.next_u64().is_multiple_of(3) {
                        log.close().unwrap();
                        log = open(&storage, config());
                    }
                }
            }
            // A crash image in the middle, from a seeded torn state.
            if rng.next_u64().is_multiple_of(7) {
                let image: Arc<dyn Storage> = Arc::new(disk.crash_image(Some(seed * 1000 + step)));
                let got = check_recovered(&image, &appended, log.durable_offset());
                if got < appended.len() {
                    recovered_short += 1;
                }
            }
        }
        let durable = log.durable_offset();
        for torn in [None, Some(seed)] {
            let image: Arc<dyn Storage> = Arc::new(disk.crash_image(torn));
            check_recovered(&image, &appended, durable);
        }
    }
    assert!(
        recovered_short > 0,
        "the workload never lost an unsynced tail; the test is too weak"
    );
}

/// A partition as the broker holds it: the flusher wants something that holds a log.
struct Held(Log);

impl AsRef<Log> for Held {
    fn as_ref(&self) -> &Log {
        &self.0
    }
}

/// Many logs made durable by one filesystem-wide sync per round (one of them on another
/// filesystem, synced file by file; one whose disk fails for a while): after a crash at any
/// point every acknowledged append of every log is there, each log a prefix of what was
/// appended; the failing log's waiters get errors, never acknowledgements, and the others
/// carry on.
#[test]
fn filesystem_wide_syncs_lose_nothing_acknowledged_in_any_log() {
    const LOGS: usize = 6;
    let mut failures_answered = 0;
    for seed in 0..12u64 {
        let disk = SimStorage::new();
        disk.mount("/data/t-5");
        let storage: Arc<dyn Storage> = Arc::new(disk.clone());
        let fs = storage
            .filesystem_sync(Path::new("/data"))
            .unwrap()
            .expect("the simulated disk has one");
        let flusher = Flusher::start(SyncMethod::Filesystem(fs)).unwrap();
        assert!(flusher.syncs_filesystem());
        let dirs: Vec<PathBuf> = (0..LOGS)
            .map(|i| PathBuf::from(format!("/data/t-{i}")))
            .collect();
        let logs: Vec<Arc<Held>> = dirs
            .iter()
            .map(|d| {
                Arc::new(Held(
                    Log::open(storage.clone(), d, config(), 1_000).unwrap(),
                ))
            })
            .collect();
        let mut rng = XorShift::new(seed);
        let mut appended: Vec<Vec<String>> = vec![Vec::new(); LOGS];
        let mut acked = [0i64; LOGS];
        let (tx, rx) = mpsc::channel::<(usize, i64, bool)>();
        let mut in_flight = 0;
        let mut deferred: Vec<(usize, i64)> = Vec::new();
        let failing = 1 + (rng.next_u64() % 4) as usize;
        // Asks the flusher for every deferred sync; each answer comes back on `rx`.
        let ask = |deferred: &mut Vec<(usize, i64)>, in_flight: &mut usize| {
            for (i, target) in deferred.drain(..) {
                let tx = tx.clone();
                *in_flight += 1;
                flusher.sync_to(
                    &logs[i],
                    target,
                    Box::new(move |r| tx.send((i, target, r.is_ok())).unwrap()),
                );
            }
        };
        // Every log of a crash image holds what was acknowledged of it, as a prefix.
        let check_all =
            |image: &Arc<dyn Storage>, acked: &[i64; LOGS], appended: &[Vec<String>]| {
                for l in 0..LOGS {
                    check_recovered_at(
                        image,
                        &dirs[l],
                        &appended[l],
                        acked[l],
                        LastShutdown::PerLog,
                    );
                }
            };
        let mut answer = |in_flight: &mut usize, acked: &mut [i64; LOGS], block: bool| {
            while *in_flight > 0 {
                let got = if block {
                    rx.recv_timeout(Duration::from_secs(10)).ok()
                } else {
                    rx.try_recv().ok()
                };
                let Some((i, target, ok)) = got else { break };
                *in_flight -= 1;
                if ok {
                    acked[i] = acked[i].max(target);
                } else {
                    assert_eq!(i, failing, "only the failing log's syncs fail");
                    failures_answered += 1;
                }
            }
        };
        for step in 0..60u64 {
            if step == 20 {
                disk.fail_writeback_under(&dirs[failing]);
            }
            if step == 40 {
                disk.heal();
            }
            let i = (rng.next_u64() % LOGS as u64) as usize;
            let tag = format!("s{seed}-l{i}-{step}");
            let n = 1 + (rng.next_u64() % 4) as usize;
            let b = batch(&tag, n, 1_000 + step as i64, Compression::None);
            if let Ok(info) = logs[i].0.append(&b, AppendOrigin::Client, 1_000) {
                appended[i].extend((0..n).map(|r| format!("{tag}-{r}")));
                // Some syncs are asked for later, after rounds of other logs have written
                // this one's bytes back (and seen them fail).
                deferred.push((i, info.next_offset()));
            } else {
                // Only the failing log refuses, and a write may have reached its file first.
                assert_eq!(i, failing);
                appended[i].extend((0..n).map(|r| format!("{tag}-{r}")));
            }
            if !rng.next_u64().is_multiple_of(3) {
                ask(&mut deferred, &mut in_flight);
            }
            answer(&mut in_flight, &mut acked, rng.next_u64().is_multiple_of(3));
            if rng.next_u64().is_multiple_of(9) {
                // A crash now: what was acknowledged before it is on the image.
                let image: Arc<dyn Storage> = Arc::new(disk.crash_image(Some(seed * 1_000 + step)));
                check_all(&image, &acked, &appended);
            }
        }
        ask(&mut deferred, &mut in_flight);
        answer(&mut in_flight, &mut acked, true);
        assert_eq!(in_flight, 0, "every waiter is answered");
        if logs[failing].0.failure().is_some() {
            assert!(
                !flusher.syncs_filesystem(),
                "a failed filesystem sync ends them"
            );
        }
        flusher.stop();
        for torn in [None, Some(seed)] {
            let image: Arc<dyn Storage> = Arc::new(disk.crash_image(torn));
            check_all(&image, &acked, &appended);
        }
        // The logs that never failed had every append acknowledged.
        for l in (0..LOGS).filter(|&l| l != failing) {
            assert_eq!(acked[l], appended[l].len() as i64, "log {l}");
        }
    }
    assert!(
        failures_answered > 0,
        "the failing disk was never hit; the test is too weak"
    );
}

/// The filesystem reports a failed write-back once, to whichever filesystem-wide sync comes
/// next, which may be a round of other logs: the log whose bytes were lost must still fail
/// its own sync rather than ride on a later round's success.
#[test]
fn a_write_back_failure_seen_by_another_logs_round_still_fails_its_own_log() {
    let disk = SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let fs = storage
        .filesystem_sync(Path::new("/data"))
        .unwrap()
        .expect("the simulated disk has one");
    let flusher = Flusher::start(SyncMethod::Filesystem(fs)).unwrap();
    let open_at = |d: &str| {
        Arc::new(Held(
            Log::open(storage.clone(), d, config(), 1_000).unwrap(),
        ))
    };
    let (a, b) = (open_at("/data/a-0"), open_at("/data/b-0"));
    let sync = |log: &Arc<Held>, target: i64| {
        let (tx, rx) = mpsc::channel();
        flusher.sync_to(log, target, Box::new(move |r| tx.send(r.is_ok()).unwrap()));
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    };
    let append = |log: &Arc<Held>, tag: &str| {
        log.0
            .append(
                &batch(tag, 2, 1_000, Compression::None),
                AppendOrigin::Client,
                1_000,
            )
            .unwrap()
            .next_offset()
    };
    let a_durable = append(&a, "a0");
    assert!(sync(&a, a_durable));
    disk.fail_writeback_under("/data/a-0");
    let a_target = append(&a, "a1");
    // b's round writes a's bytes back too, and that fails.
    let b_target = append(&b, "b0");
    assert!(sync(&b, b_target), "b's own bytes were written");
    assert!(!sync(&a, a_target), "a's lost bytes are never acknowledged");
    assert!(a.0.failure().is_some());
    assert!(!flusher.syncs_filesystem());
    flusher.stop();
    let image: Arc<dyn Storage> = Arc::new(disk.crash_image(None));
    let recovered = Log::open(image, "/data/a-0", config(), 1_000).unwrap();
    assert_eq!(recovered.log_end_offset(), a_durable);
}

#[test]
fn logs_whose_owner_keeps_the_clean_marker_skip_the_open_write_and_recover_when_told() {
    // An owner of many logs (the broker) keeps one clean-shutdown marker: opened under it, a
    // log writes nothing at open, so its checkpoint still says "clean" while it runs, and
    // after a crash only the owner's word ("unclean") makes it recover.
    let mut recovered_short = 0;
    for seed in 0..30u64 {
        let disk = SimStorage::new();
        let storage: Arc<dyn Storage> = Arc::new(disk.clone());
        let mut appended = Vec::new();
        let log = open(&storage, config());
        for step in 0..5 {
            let tag = format!("first{step}");
            log.append(
                &batch(&tag, 3, 1_000, Compression::None),
                AppendOrigin::Client,
                1,
            )
            .unwrap();
            appended.extend((0..3).map(|i| format!("{tag}-{i}")));
        }
        log.close().unwrap();
        let checkpoint = || match Checkpoint::load(&*storage, std::path::Path::new(DIR)).unwrap() {
            Loaded::Found(cp) => cp,
            other => panic!("checkpoint: {other:?}"),
        };
        let at_close = checkpoint();
        assert!(at_close.clean_shutdown);

        let log =
            Log::open_with(storage.clone(), DIR, config(), 1_000, LastShutdown::Clean).unwrap();
        assert_eq!(
            checkpoint(),
            at_close,
            "an open under the owner's marker writes nothing"
        );
        assert_eq!(log.log_end_offset(), 15);
        let mut rng = XorShift::new(seed);
        for step in 0..10 {
            let tag = format!("s{seed}-{step}");
            let info = log
                .append(
                    &batch(&tag, 2, 2_000, Compression::Lz4),
                    AppendOrigin::Client,
                    1,
                )
                .unwrap();
            appended.extend((0..2).map(|i| format!("{tag}-{i}")));
            if rng.next_u64().is_multiple_of(3) {
                log.wait_durable(&info).unwrap();
            }
        }
        let image: Arc<dyn Storage> = Arc::new(disk.crash_image(Some(seed)));
        let stale = match Checkpoint::load(&*image, std::path::Path::new(DIR)).unwrap() {
            Loaded::Found(cp) => cp,
            other => panic!("checkpoint: {other:?}"),
        };
        // Unless a roll rewrote it, the image's checkpoint still says clean: only the owner
        // knows better.
        let said_clean = stale.clean_shutdown;
        let got = check_recovered_as(
            &image,
            &appended,
            log.durable_offset(),
            LastShutdown::Unclean,
        );
        if got < appended.len() && said_clean {
            recovered_short += 1;
        }
    }
    assert!(
        recovered_short > 0,
        "no crash lost an unsynced tail under a checkpoint saying clean; the test is too weak"
    );
}

#[test]
fn nth_io_failure_refuses_writes_and_loses_nothing_acknowledged() {
    // Count the operations of a full run, then fail each one in turn.
    let workload = |storage: &Arc<dyn Storage>, disk: &SimStorage, fail_at: Option<(u64, bool)>| {
        let log = open(storage, config());
        if let Some((n, forever)) = fail_at {
            disk.fail_op(n, forever);
        }
        let mut appended = Vec::new();
        let mut acked = 0i64;
        let mut failed = false;
        for step in 0..25 {
            let tag = format!("w{step}");
            let b = batch(&tag, 3, 1_000, Compression::None);
            match log.append_durable(&b, AppendOrigin::Client, 1_000) {
                Ok(info) => {
                    assert!(!failed, "an append succeeded after the log failed");
                    appended.extend((0..3).map(|i| format!("{tag}-{i}")));
                    acked = info.next_offset();
                }
                Err(LogError::Failed { .. }) => assert!(failed, "Failed before any error"),
                Err(e) => {
                    assert!(!failed);
                    failed = true;
                    assert!(log.failure().is_some(), "the log marks itself failed: {e}");
                    // A write may have reached the file before the error surfaced.
                    appended.extend((0..3).map(|i| format!("{tag}-{i}")));
                }
            }
        }
        if failed {
            let b = batch("after", 1, 1, Compression::None);
            let err = log.append(&b, AppendOrigin::Client, 1).unwrap_err();
            assert!(
                err.to_string().contains("refuses writes"),
                "clear error: {err}"
            );
            if log.durable_offset() < log.log_end_offset() {
                assert!(log.sync().is_err(), "a failed log promises no durability");
            }
        }
        disk.heal();
        (appended, acked, failed)
    };
    let disk = SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let before = disk.op_count();
    workload(&storage, &disk, None);
    let total_ops = disk.op_count() - before;
    assert!(total_ops > 50);
    let mut failures_seen = 0;
    for n in 0..total_ops {
        for forever in [false, true] {
            let disk = SimStorage::new();
            let storage: Arc<dyn Storage> = Arc::new(disk.clone());
            let (appended, acked, failed) = workload(&storage, &disk, Some((n, forever)));
            if failed {
                failures_seen += 1;
            }
            for seed in [None, Some(n)] {
                let image: Arc<dyn Storage> = Arc::new(disk.crash_image(seed));
                check_recovered(&image, &appended, acked);
            }
        }
    }
    assert!(
        failures_seen as u64 >= total_ops,
        "most injected faults hit the workload"
    );
}

#[test]
fn crash_during_retention_and_truncation_keeps_a_consistent_log() {
    for n in 0..40u64 {
        let disk = SimStorage::new();
        let storage: Arc<dyn Storage> = Arc::new(disk.clone());
        let log = open(&storage, config());
        let mut appended = Vec::new();
        for step in 0..30 {
            let tag = format!("r{step}");
            let b = batch(&tag, 2, step * 1_000, Compression::None);
            log.append_durable(&b, AppendOrigin::Client, step * 1_000)
                .unwrap();
            appended.extend((0..2).map(|i| format!("{tag}-{i}")));
        }
        log.set_high_watermark(60).unwrap();
        disk.fail_op(n, true);
        let _ = log.advance_log_start_offset(9);
        let _ = log.enforce_retention(25_000);
        let _ = log.truncate_to(50);
        disk.heal();
        for seed in [None, Some(n)] {
            let image: Arc<dyn Storage> = Arc::new(disk.crash_image(seed));
            let log = open(&image, config());
            let seen = read_all(&log, ReadUpTo::LogEnd);
            let start = log.log_start_offset() as usize;
            assert!(start <= 9 || start == seen.first().map_or(start, |s| s.offset as usize));
            for s in &seen {
                assert_eq!(
                    String::from_utf8_lossy(s.value.as_deref().unwrap()),
                    appended[s.offset as usize],
                    "offset {} moved",
                    s.offset
                );
            }
            let offsets: Vec<i64> = seen.iter().map(|s| s.offset).collect();
            let expected: Vec<i64> = (log.log_start_offset()..log.log_end_offset()).collect();
            assert_eq!(offsets, expected, "dense from log start to log end");
            assert!(
                log.log_end_offset() >= 50,
                "truncation never cuts below its target"
            );
        }
    }
}

mod fuzz_like {
    use super::*;
    use proptest::prelude::*;

    fn valid_segment(batches: usize, codec: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut offset = 0;
        for i in 0..batches {
            let mut b = batch(
                &format!("f{i}"),
                1 + i % 3,
                1_000,
                Compression::ALL[codec % 5],
            );
            fjord_record::set_base_offset(&mut b, offset);
            offset += 1 + (i % 3) as i64;
            out.extend_from_slice(&b);
        }
        out
    }

    proptest! {
        #[test]
        fn recovery_survives_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            fjord_log::sim::fuzz_recovery(&data);
        }

        #[test]
        fn recovery_survives_damaged_segments(
            batches in 1usize..8,
            codec in 0usize..5,
            damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut seg = valid_segment(batches, codec);
            for (at, byte) in damage {
                let at = at.index(seg.len());
                seg[at] = byte;
            }
            let keep = cut.index(seg.len() + 1);
            seg.truncate(keep.max(seg.len() / 2));
            fjord_log::sim::fuzz_recovery(&seg);
        }
    }
}
