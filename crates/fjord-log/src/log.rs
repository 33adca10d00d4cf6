//! One partition's log: the public API the broker uses.
//!
//! Concurrency: appends, reads, retention and truncation take the `inner` lock only for
//! in-memory bookkeeping and page-cache writes; fsyncs run under the separate `sync` lock so
//! that appends keep flowing while one fsync covers every append made before it started
//! (group commit). Reads copy a file handle and a byte range out under the lock and read
//! without it. Compaction (see `cleaner.rs`) reads and writes without the lock and swaps its
//! result in under it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use fjord_record::{
    BatchHeader, ControlRecord, HEADER_LEN, Records, TimestampType, parse_control_batch,
    set_base_offset, set_max_timestamp_parts, set_partition_leader_epoch, split_batches,
    validate_batch, validate_records,
};

use crate::LogError;
use crate::checkpoint::{Checkpoint, Loaded};
use crate::config::LogConfig;
use crate::epochs::{EpochCache, EpochEntry};
use crate::producer::{self, AbortedTxn, Check, Checked, ProducerEntry, ProducerState};
use crate::segment::{
    self, CLEANED_SUFFIX, INDEX_SUFFIX, LOG_SUFFIX, ScanError, Scanner, Segment, TIME_INDEX_SUFFIX,
};
use crate::storage::{Storage, StorageFile};

/// Who is appending, which decides what is checked and whether offsets are assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    /// A producer: full validation, no control batches, offsets and timestamps assigned here.
    Client,
    /// The broker itself (coordinators writing markers or state): as a client, but control
    /// batches are allowed.
    Internal,
    /// A follower copying the leader: batches keep the offsets the leader gave them.
    Replica,
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    /// The broker time written into the batches, or -1 for `CreateTime` topics.
    pub log_append_time: i64,
    pub record_count: u64,
    pub bytes: u64,
    pub log_start_offset: i64,
    /// The batches were a producer's retry of batches already in the log: nothing was
    /// written and the offsets are the original ones.
    pub duplicate: bool,
}

impl AppendInfo {
    pub fn next_offset(&self) -> i64 {
        self.last_offset + 1
    }
}

/// How far a read may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadUpTo {
    /// Consumers: only up to the high watermark.
    HighWatermark,
    /// Followers and tools: everything appended.
    LogEnd,
    /// read_committed consumers: up to the last stable offset.
    LastStable,
    /// Up to (excluding) this offset.
    Offset(i64),
}

/// A byte range of a segment file holding whole batches, ready to be sent as is.
#[derive(Debug, Clone)]
pub struct FetchSlice {
    pub file: Arc<dyn StorageFile>,
    pub position: u64,
    pub len: u64,
    /// Base offset of the first batch in the range.
    pub first_offset: i64,
    /// The offset after the last batch in the range.
    pub next_offset: i64,
    /// Records in the range, as the batch headers count them.
    pub records: u64,
}

impl FetchSlice {
    /// Copies the range into memory (for callers that cannot send from the file).
    pub fn read(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; self.len as usize];
        self.file.read_exact_at(&mut buf, self.position)?;
        Ok(buf)
    }
}

/// The answer to a read: maybe some data, and the log's bounds at the time.
#[derive(Debug, Clone)]
pub struct ReadResult {
    pub data: Option<FetchSlice>,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_end_offset: i64,
}

/// A record found by timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub timestamp: i64,
    pub offset: i64,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    pub deleted_segments: usize,
    pub deleted_bytes: u64,
    pub log_start_offset: i64,
}

/// A summary of one segment, for tools, metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_offset: i64,
    pub size: u64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    /// Bytes of memory its indexes hold (none once it is sealed: they are searched in place).
    pub index_memory_bytes: usize,
}

/// One partition's log. Shareable across threads (`Arc<Log>`); every method takes `&self`.
#[derive(Debug)]
pub struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) storage: Arc<dyn Storage>,
    config: RwLock<LogConfig>,
    pub(crate) inner: Mutex<Inner>,
    sync: Mutex<SyncState>,
    durable: AtomicI64,
    /// Stamped into every batch a leader appends (see [`Log::set_leader_epoch`]).
    leader_epoch: AtomicI32,
    checkpoint_lock: Mutex<()>,
    pub(crate) cleaner_lock: Mutex<crate::cleaner::CleanerState>,
    /// The lowest offset the log was truncated to since the cleaner last looked
    /// (`i64::MAX`: none): what it cleaned past there is gone.
    pub(crate) truncated_to: AtomicI64,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// Sorted by base offset; never empty; the last one is the active segment.
    pub(crate) segments: Vec<Segment>,
    pub(crate) log_start_offset: i64,
    pub(crate) log_end_offset: i64,
    pub(crate) high_watermark: i64,
    /// The recovery point last written to the checkpoint.
    recovery_point: i64,
    /// Files of sealed segments written since the last sync.
    pending_sync: Vec<Arc<dyn StorageFile>>,
    /// A segment was sealed since the checkpoint's recovery point last moved.
    checkpoint_due: bool,
    /// When the oldest unsynced append happened.
    first_unflushed_ms: Option<i64>,
    pub(crate) failed: Option<String>,
    closed: bool,
    /// Idempotent and transactional producers (see `producer.rs`).
    pub(crate) producers: ProducerState,
    /// Transactional producers whose first write to this partition is being verified with
    /// their coordinator, the guard that write must carry (KIP-890's VerificationGuard) and when
    /// it was made: a marker for the producer removes it, so a write verified before the marker
    /// is refused; unused ones expire with idle producers.
    verifications: HashMap<i64, Verification>,
    /// The last guard handed out (0 is never one: it is what a write carries that expects an
    /// open transaction).
    last_verification: u64,
    /// Aborted transactions by the base offset of the segment holding their marker.
    pub(crate) aborted: BTreeMap<i64, Vec<AbortedTxn>>,
    /// The offset of the newest producer snapshot on disk (-1 when none).
    snapshot_offset: i64,
    /// Leader epochs and their start offsets (`leader-epoch-checkpoint`).
    epochs: EpochCache,
    /// `epochs` changed since the file was written. A new epoch is written before the first
    /// batch that carries it; removals may wait (the file is cut to the log on open).
    epochs_dirty: bool,
}

/// A transactional producer's first write to a partition being verified with its coordinator
/// (Kafka's VerificationStateEntry).
#[derive(Debug, Clone, Copy)]
struct Verification {
    /// What the verified append must carry.
    guard: u64,
    epoch: i16,
    /// The lowest first sequence of the writes being verified: the producer's first batch
    /// here must start there.
    lowest_sequence: i32,
    made_ms: i64,
}

impl Verification {
    fn new(guard: u64, epoch: i16, sequence: i32, made_ms: i64) -> Self {
        Self {
            guard,
            epoch,
            lowest_sequence: sequence,
            made_ms,
        }
    }
}

#[derive(Debug)]
struct SyncState {
    durable: i64,
}

/// A sync of one log begun with [`Log::begin_sync`]: the files written since its last sync,
/// to be made durable by [`PendingSync::sync_files`], or by the caller followed by
/// [`PendingSync::synced`]. Holds the log's sync lock until then.
#[must_use = "a begun sync holds the log's sync lock until it is finished"]
pub struct PendingSync<'a> {
    log: &'a Log,
    guard: MutexGuard<'a, SyncState>,
    files: Vec<Arc<dyn StorageFile>>,
    log_end_offset: i64,
    recovery_point: Option<i64>,
}

impl std::fmt::Debug for PendingSync<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSync")
            .field("dir", &self.log.dir)
            .field("files", &self.files.len())
            .field("log_end_offset", &self.log_end_offset)
            .finish()
    }
}

impl PendingSync<'_> {
    /// Syncs the files one by one (fdatasync each), then finishes. A file that fails marks
    /// the log failed.
    pub fn sync_files(self) -> Result<(), LogError> {
        for file in &self.files {
            if let Err(e) = file.sync() {
                let log = self.log;
                let mut inner = lock(&log.inner);
                return Err(log.fail(&mut inner, LogError::io("syncing", &log.dir)(e)));
            }
        }
        self.synced()
    }

    /// The caller made the files durable (a filesystem-wide sync that began after this sync
    /// did and succeeded): the log is durable to where it ended when this sync began.
    pub fn synced(self) -> Result<(), LogError> {
        let PendingSync {
            log,
            mut guard,
            log_end_offset,
            recovery_point,
            ..
        } = self;
        guard.durable = log_end_offset;
        log.durable.store(log_end_offset, Ordering::Release);
        {
            let mut inner = lock(&log.inner);
            if inner.log_end_offset == log_end_offset {
                inner.first_unflushed_ms = None;
            }
        }
        drop(guard);
        if let Some(rp) = recovery_point {
            log.write_checkpoint(Some(rp), false)?;
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock is a bug elsewhere; the state itself stays consistent
    // because every mutation either completes or marks the log failed.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    pub(crate) fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has an active segment")
    }

    /// Index of the segment that holds `offset` (the last with base <= offset), or 0.
    pub(crate) fn segment_index_for(&self, offset: i64) -> usize {
        self.segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1)
    }

    fn check_writable(&self, dir: &Path) -> Result<(), LogError> {
        if self.closed {
            return Err(LogError::Closed {
                dir: dir.to_path_buf(),
            });
        }
        if let Some(reason) = &self.failed {
            return Err(LogError::Failed {
                dir: dir.to_path_buf(),
                reason: reason.clone(),
            });
        }
        Ok(())
    }

    /// The offset below which every transaction is decided: min(high watermark, first offset
    /// of the oldest open transaction).
    pub(crate) fn last_stable_offset(&self) -> i64 {
        self.producers
            .first_unstable_offset()
            .map_or(self.high_watermark, |f| f.min(self.high_watermark))
    }

    fn check_invariants(&self) {
        debug_assert!(self.log_start_offset <= self.high_watermark);
        debug_assert!(self.high_watermark <= self.log_end_offset);
        debug_assert_eq!(self.active().next_offset, self.log_end_offset);
        debug_assert!(
            self.segments
                .windows(2)
                .all(|w| w[0].next_offset <= w[1].base_offset)
        );
    }
}

/// Who decides whether a log was shut down cleanly, for [`Log::open_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastShutdown {
    /// The log alone: its checkpoint's clean flag, which the open then clears (a checkpoint
    /// write and two fsyncs per log).
    PerLog,
    /// An owner of many logs that keeps one marker for all of them says the last run ended
    /// cleanly: each log's clean flag is trusted and left as it is (the owner's marker is gone
    /// while it runs, so a crash from here on is seen as unclean without a write per log).
    Clean,
    /// That owner says the last run did not end cleanly: every log recovers from its
    /// recovery point whatever its flag says.
    Unclean,
}

/// A client's batches rewritten in the topic's `compression.type`, if it names a codec and
/// any batch is in another (control batches are never rewritten); `None` when nothing
/// changes. A batch over `max.message.bytes` is refused before it is rewritten (and the
/// rewritten one is checked again by the append).
fn recompressed(
    records: &[u8],
    origin: AppendOrigin,
    config: &LogConfig,
) -> Result<Option<Vec<u8>>, LogError> {
    let Some(target) = config.compression else {
        return Ok(None);
    };
    if origin != AppendOrigin::Client {
        return Ok(None);
    }
    let differs = |batch: &[u8]| {
        BatchHeader::parse(batch)
            .is_ok_and(|h| !h.is_control() && h.compression().is_ok_and(|c| c != target))
    };
    if !split_batches(records).any(|b| b.is_ok_and(differs)) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(records.len());
    for batch in split_batches(records) {
        let batch = batch?;
        if batch.len() > config.max_message_bytes {
            return Err(LogError::BatchTooLarge {
                size: batch.len(),
                max: config.max_message_bytes,
            });
        }
        if differs(batch) {
            out.extend_from_slice(&fjord_record::recompress(
                batch,
                target,
                config.max_decompressed_bytes,
            )?);
        } else {
            out.extend_from_slice(batch);
        }
    }
    Ok(Some(out))
}

/// Whether a CreateTime record's timestamp lies outside `message.timestamp.before.max.ms` /
/// `after.max.ms` of `now_ms` (Kafka's check; -1, "no timestamp", is never out of range).
/// Only called for batches with records (empty ones are refused before).
fn timestamp_out_of_range(timestamp: i64, now_ms: i64, config: &LogConfig) -> bool {
    if timestamp == -1 {
        return false;
    }
    let diff = i128::from(now_ms) - i128::from(timestamp);
    diff > i128::from(config.message_timestamp_before_max_ms)
        || -diff > i128::from(config.message_timestamp_after_max_ms)
}

/// The per-record errors (KIP-467) of a batch that broke a compacted topic's key rule or the
/// timestamp bounds, with Kafka's messages; only called once the summary found one.
fn reject_records(batch: &[u8], config: &LogConfig, now_ms: i64, dir: &Path) -> LogError {
    let partition = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Ok(header) = BatchHeader::parse(batch) else {
        return LogError::InvalidRecord {
            reason: "record batch header unreadable",
        };
    };
    let records = match fjord_record::Records::decode(batch, config.max_decompressed_bytes) {
        Ok(r) => r,
        Err(e) => return LogError::CorruptBatch(e),
    };
    let mut errors = Vec::new();
    let mut timestamp = false;
    for (index, record) in records.iter().enumerate() {
        let Ok(record) = record else { break };
        let index = index as i32;
        if config.cleanup_policy.compact && record.key.is_none() {
            errors.push((
                index,
                format!(
                    "Compacted topic cannot accept message without key in topic partition {partition}"
                ),
            ));
            continue;
        }
        let ts = header.base_timestamp.wrapping_add(record.timestamp_delta);
        if config.message_timestamp_type == TimestampType::CreateTime
            && timestamp_out_of_range(ts, now_ms, config)
        {
            timestamp = true;
            errors.push((
                index,
                format!(
                    "Timestamp {ts} of message with offset {} is out of range. The timestamp should be within [{}, {}]",
                    header.base_offset.wrapping_add(i64::from(record.offset_delta)),
                    now_ms.wrapping_sub(config.message_timestamp_before_max_ms),
                    now_ms.wrapping_add(config.message_timestamp_after_max_ms),
                ),
            ));
        }
    }
    let message = if timestamp {
        "One or more records have been rejected due to invalid timestamp".to_string()
    } else {
        let shown: Vec<String> = errors
            .iter()
            .take(3)
            .map(|(i, m)| format!("RecordError(batchIndex={i}, message='{m}')"))
            .collect();
        format!(
            "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
            errors.len(),
            shown.join(", ")
        )
    };
    LogError::RecordsRejected {
        timestamp,
        message,
        records: errors,
    }
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering it if it was not shut down cleanly.
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: impl Into<PathBuf>,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<Self, LogError> {
        Self::open_with(storage, dir, config, now_ms, LastShutdown::PerLog)
    }

    /// [`Log::open`], with the clean-shutdown question answered by `last` (see
    /// [`LastShutdown`]).
    pub fn open_with(
        storage: Arc<dyn Storage>,
        dir: impl Into<PathBuf>,
        config: LogConfig,
        now_ms: i64,
        last: LastShutdown,
    ) -> Result<Self, LogError> {
        config.validate()?;
        let dir = dir.into();
        storage
            .create_dir_all(&dir)
            .map_err(LogError::io("creating", &dir))?;
        let names = storage
            .list_dir(&dir)
            .map_err(LogError::io("listing", &dir))?;
        let bases: BTreeSet<i64> = names
            .iter()
            .filter_map(|n| segment::parse_base(n, LOG_SUFFIX))
            .collect();
        for name in &names {
            let leftover = name.ends_with(CLEANED_SUFFIX)
                || name.ends_with(".tmp")
                || [INDEX_SUFFIX, TIME_INDEX_SUFFIX, producer::TXN_INDEX_SUFFIX]
                    .iter()
                    .any(|sfx| segment::parse_base(name, sfx).is_some_and(|b| !bases.contains(&b)));
            if leftover {
                let path = dir.join(name);
                storage
                    .remove_file(&path)
                    .map_err(LogError::io("removing leftover", &path))?;
            }
        }

        let checkpoint = match Checkpoint::load(&*storage, &dir)? {
            Loaded::Found(cp) => Some(cp),
            Loaded::Missing => None,
            Loaded::Damaged(reason) => {
                tracing::warn!(dir = %dir.display(), %reason, "partition checkpoint is damaged; recovering every segment");
                None
            }
        };
        let clean = last != LastShutdown::Unclean && checkpoint.is_some_and(|c| c.clean_shutdown);
        let recovery_point = checkpoint.map_or(i64::MIN, |c| c.recovery_point);
        let bases: Vec<i64> = bases.into_iter().collect();
        // Past the recovery point only appends wrote, and their offsets are dense; compaction
        // gaps exist only below it (the cleaner works there). Without a checkpoint, or for a
        // compacted topic, gaps may be real, and only rising offsets can be required.
        let require_dense = checkpoint.is_some() && !config.cleanup_policy.compact;
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
        let mut recovered = Vec::new();
        for (i, &base) in bases.iter().enumerate() {
            let min_offset = segments.last().map_or(base, |s: &Segment| s.next_offset);
            if min_offset > base {
                return Err(LogError::Unreadable {
                    path: dir.join(segment::file_name(base, LOG_SUFFIX)),
                    reason: format!(
                        "segments overlap: the previous segment ends at offset {min_offset}, past this one's base {base}; move the partition directory aside and restore it from a replica"
                    ),
                });
            }
            let trusted = clean || bases.get(i + 1).is_some_and(|&next| next <= recovery_point);
            let opened = if trusted {
                Segment::open_trusted(&*storage, &dir, base, bases.get(i + 1).copied())?
            } else {
                None
            };
            let (seg, cut) = match opened {
                Some(seg) => (seg, false),
                None => {
                    if trusted {
                        tracing::warn!(dir = %dir.display(), base, "segment index failed its checks; rebuilding it");
                    }
                    let (seg, cut) = Segment::recover(
                        &*storage,
                        &dir,
                        base,
                        min_offset,
                        require_dense,
                        config.index_interval_bytes,
                        now_ms,
                    )?;
                    recovered.push(i);
                    // A segment that ends short of the next one's base lost its unsynced tail
                    // (a crash after a roll, before the sync that covers both): what follows
                    // it was not durable either, since one sync covers the sealed segment with
                    // the active one. Keeping it would leave a hole in offsets that idempotent
                    // producers' state, read from the snapshot at the roll, counts as written.
                    let short = require_dense
                        && bases.get(i + 1).is_some_and(|&next| seg.next_offset < next);
                    (seg, cut || short)
                }
            };
            segments.push(seg);
            if cut {
                for &later in &bases[i + 1..] {
                    tracing::warn!(dir = %dir.display(), base = later, "removing segment after a truncated one");
                    let txn = producer::txn_index_path(&dir, later);
                    for path in segment::paths(&dir, later).into_iter().chain([txn]) {
                        if storage
                            .exists(&path)
                            .map_err(LogError::io("checking", &path))?
                        {
                            storage
                                .remove_file(&path)
                                .map_err(LogError::io("removing", &path))?;
                        }
                    }
                }
                break;
            }
        }
        if segments.is_empty() {
            let base = checkpoint.map_or(0, |c| c.log_start_offset.max(0));
            segments.push(Segment::create(&*storage, &dir, base, now_ms)?);
            recovered.push(0);
        }
        // What recovery kept may sit only in the page cache (after a process crash): make it
        // durable before anything counts on it.
        for &i in &recovered {
            segments[i]
                .sync_all(&*storage)
                .map_err(LogError::io("syncing", &dir))?;
        }
        // Sealed segments' indexes are searched in their files from now on.
        let sealed = segments.len() - 1;
        for seg in &mut segments[..sealed] {
            seg.release_indexes();
        }
        storage
            .sync_dir(&dir)
            .map_err(LogError::io("syncing", &dir))?;

        let leo = segments.last().map_or(0, |s| s.next_offset);
        let first_base = segments[0].base_offset;
        let log_start = checkpoint
            .map_or(first_base, |c| c.log_start_offset)
            .max(first_base)
            .min(leo);
        let hw = checkpoint
            .map_or(log_start, |c| c.high_watermark)
            .clamp(log_start, leo);
        if recovered.iter().any(|&i| segments[i].size > 0) {
            tracing::info!(dir = %dir.display(), log_end_offset = leo, segments = segments.len(), recovered = recovered.len(), "recovered partition log");
        }
        let log = Self {
            dir,
            storage,
            config: RwLock::new(config),
            inner: Mutex::new(Inner {
                segments,
                log_start_offset: log_start,
                log_end_offset: leo,
                high_watermark: hw,
                recovery_point: leo,
                pending_sync: Vec::new(),
                checkpoint_due: false,
                first_unflushed_ms: None,
                failed: None,
                closed: false,
                producers: ProducerState::default(),
                verifications: HashMap::new(),
                last_verification: 0,
                aborted: BTreeMap::new(),
                snapshot_offset: -1,
                epochs: EpochCache::default(),
                epochs_dirty: false,
            }),
            sync: Mutex::new(SyncState { durable: leo }),
            durable: AtomicI64::new(leo),
            leader_epoch: AtomicI32::new(0),
            checkpoint_lock: Mutex::new(()),
            cleaner_lock: Mutex::new(crate::cleaner::CleanerState::default()),
            truncated_to: AtomicI64::new(i64::MAX),
        };
        {
            let mut inner = lock(&log.inner);
            inner.check_invariants();
            log.load_producer_state(&mut inner, clean, now_ms)?;
            log.load_epochs(&mut inner)?;
        }
        if last == LastShutdown::PerLog {
            // From now on a crash is not a clean shutdown.
            log.write_checkpoint(Some(leo), false)?;
        }
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        *self.config.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the settings (a topic config change); takes effect for the next operation.
    pub fn set_config(&self, config: LogConfig) -> Result<(), LogError> {
        config.validate()?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    /// Makes this log's leader epoch `epoch` (stamped into the batches it appends as
    /// leader; 0 until set): a newer epoch starts at the log end offset in the epoch cache,
    /// as when Kafka's replica becomes leader.
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.store(epoch, Ordering::Relaxed);
        let mut inner = lock(&self.inner);
        let leo = inner.log_end_offset;
        if inner.epochs.assign(epoch, leo) {
            inner.epochs_dirty = true;
        }
    }

    /// The leader epoch this log appends with.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Relaxed)
    }

    /// The leader epochs of this log and where each starts.
    pub fn leader_epochs(&self) -> Vec<EpochEntry> {
        lock(&self.inner).epochs.entries().to_vec()
    }

    /// The leader epoch of the record at `offset` (ListOffsets answers with it), from the
    /// epoch cache; `None` when the cache knows no epoch that far back.
    pub fn epoch_at(&self, offset: i64) -> Option<i32> {
        lock(&self.inner)
            .epochs
            .entries()
            .iter()
            .rev()
            .find(|e| e.start_offset <= offset)
            .map(|e| e.epoch)
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `requested` and the offset where
    /// it ends (UNDEFINED -1/-1 for an epoch this log never had past its latest).
    pub fn end_offset_for_epoch(&self, requested: i32) -> (i32, i64) {
        let inner = lock(&self.inner);
        inner.epochs.end_offset_for(requested, inner.log_end_offset)
    }

    /// Loads the epoch cache at open (rebuilt from the batches when the file is missing,
    /// as in a data directory from before it existed) and cuts it to the log.
    fn load_epochs(&self, inner: &mut Inner) -> Result<(), LogError> {
        let (mut epochs, rebuilt) = match EpochCache::load(&*self.storage, &self.dir)? {
            Some(epochs) => (epochs, false),
            None => (self.rebuild_epochs(inner)?, true),
        };
        let cut = epochs.truncate_from_end(inner.log_end_offset)
            | epochs.truncate_from_start(inner.log_start_offset);
        inner.epochs = epochs;
        inner.epochs_dirty = rebuilt || cut;
        if let Some(latest) = inner.epochs.latest() {
            self.leader_epoch.store(latest.epoch, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The epochs of the batches in the log. When the first and last batch carry the same
    /// epoch (every log written before the cache existed: one node, epoch 0) that is the
    /// only one; otherwise every batch header is read.
    fn rebuild_epochs(&self, inner: &Inner) -> Result<EpochCache, LogError> {
        let mut epochs = EpochCache::default();
        if inner.log_start_offset >= inner.log_end_offset {
            return Ok(epochs);
        }
        let header_at = |offset: i64| -> Result<Option<BatchHeader>, LogError> {
            let seg = &inner.segments[inner.segment_index_for(offset)];
            let mut scanner = Scanner::new(
                &*seg.log,
                seg.position_for(&*self.storage, offset),
                seg.size,
            );
            loop {
                match scanner.next_header() {
                    Ok(Some((_, h))) if h.last_offset() >= offset => return Ok(Some(h)),
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(self.scan_error(seg.base_offset, e)),
                }
            }
        };
        let first = header_at(inner.log_start_offset)?;
        let last = header_at(inner.log_end_offset - 1)?;
        if let (Some(first), Some(last)) = (first, last)
            && first.partition_leader_epoch == last.partition_leader_epoch
        {
            epochs.assign(first.partition_leader_epoch, inner.log_start_offset);
            return Ok(epochs);
        }
        for seg in &inner.segments {
            let mut scanner = Scanner::new(&*seg.log, 0, seg.size);
            loop {
                match scanner.next_header() {
                    Ok(Some((_, h))) => {
                        epochs.assign(h.partition_leader_epoch, h.base_offset);
                    }
                    Ok(None) => break,
                    Err(e) => return Err(self.scan_error(seg.base_offset, e)),
                }
            }
        }
        epochs.truncate_from_start(inner.log_start_offset);
        Ok(epochs)
    }

    /// Writes the epoch cache if it changed; an I/O error fails the log.
    fn store_epochs(&self, inner: &mut Inner) -> Result<(), LogError> {
        if !inner.epochs_dirty {
            return Ok(());
        }
        if let Err(e) = inner.epochs.store(&*self.storage, &self.dir) {
            return Err(self.fail(inner, e));
        }
        inner.epochs_dirty = false;
        Ok(())
    }

    pub fn log_start_offset(&self) -> i64 {
        lock(&self.inner).log_start_offset
    }

    /// The offset the next appended record gets.
    pub fn log_end_offset(&self) -> i64 {
        lock(&self.inner).log_end_offset
    }

    pub fn high_watermark(&self) -> i64 {
        lock(&self.inner).high_watermark
    }

    /// Every offset below this is fsynced.
    pub fn durable_offset(&self) -> i64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Whether an I/O error has made the log refuse writes, and why.
    pub fn failure(&self) -> Option<String> {
        lock(&self.inner).failed.clone()
    }

    /// Sets the high watermark; it must lie within `[log start, log end]`.
    pub fn set_high_watermark(&self, offset: i64) -> Result<(), LogError> {
        let mut inner = lock(&self.inner);
        if offset < inner.log_start_offset || offset > inner.log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: inner.log_start_offset,
                log_end_offset: inner.log_end_offset,
            });
        }
        inner.high_watermark = offset;
        Ok(())
    }

    /// Raises the high watermark to `offset` (capped at the log end offset); never lowers it.
    /// Returns the high watermark after the call.
    pub fn advance_high_watermark(&self, offset: i64) -> i64 {
        let mut inner = lock(&self.inner);
        let target = offset.min(inner.log_end_offset);
        if target > inner.high_watermark {
            inner.high_watermark = target;
        }
        inner.high_watermark
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        lock(&self.inner).segments.iter().map(|s| s.size).sum()
    }

    pub fn segments(&self) -> Vec<SegmentInfo> {
        lock(&self.inner)
            .segments
            .iter()
            .map(|s| SegmentInfo {
                base_offset: s.base_offset,
                size: s.size,
                next_offset: s.next_offset,
                max_timestamp: s.max_timestamp,
                index_memory_bytes: s.index_memory_bytes(),
            })
            .collect()
    }

    /// Rebuilds the producer state and the aborted-transaction index from the newest usable
    /// snapshot and the batches after it (on open and after truncation). After a clean
    /// shutdown without any snapshot the state was empty (close writes one otherwise).
    fn load_producer_state(
        &self,
        inner: &mut Inner,
        clean: bool,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let names = self
            .storage
            .list_dir(&self.dir)
            .map_err(LogError::io("listing", &self.dir))?;
        let leo = inner.log_end_offset;
        let (snapshot_offset, mut state) =
            match producer::load_snapshot(&*self.storage, &self.dir, &names, leo)? {
                Some((offset, state)) => (offset, state),
                None if clean => (leo, ProducerState::default()),
                None => (i64::MIN, ProducerState::default()),
            };
        let replay_from = snapshot_offset.max(inner.segments[0].base_offset);
        // Index entries at or past the replay point are rebuilt by the replay.
        inner.aborted.clear();
        for seg in &inner.segments {
            let mut entries = producer::read_txn_index(&*self.storage, &self.dir, seg.base_offset)?;
            let before = entries.len();
            entries.retain(|e| e.last_offset < replay_from);
            if entries.len() != before {
                producer::write_txn_index(&*self.storage, &self.dir, seg.base_offset, &entries)?;
            }
            if !entries.is_empty() {
                inner.aborted.insert(seg.base_offset, entries);
            }
        }
        let mut replayed = 0u64;
        for seg in inner
            .segments
            .iter()
            .filter(|s| s.next_offset > replay_from)
        {
            let start = if seg.base_offset < replay_from {
                seg.position_for(&*self.storage, replay_from)
            } else {
                0
            };
            let mut scanner = Scanner::new(&*seg.log, start, seg.size);
            while let Some((pos, h)) = scanner
                .next_header()
                .map_err(|e| self.scan_error(seg.base_offset, e))?
            {
                if h.last_offset() < replay_from || !h.has_producer_id() {
                    continue;
                }
                replayed += 1;
                let control = if h.is_control() {
                    let mut bytes = vec![0u8; h.total_len()];
                    seg.log
                        .read_exact_at(&mut bytes, pos)
                        .map_err(LogError::io("reading", &self.dir))?;
                    parse_control_batch(&bytes).ok()
                } else {
                    None
                };
                if let Checked::Apply(changes) =
                    state.check(&[(h, control)], Check::None, now_ms)?
                {
                    let aborted = state.apply(changes);
                    if !aborted.is_empty() {
                        producer::append_txn_index(
                            &*self.storage,
                            &self.dir,
                            seg.base_offset,
                            &aborted,
                        )?;
                        inner
                            .aborted
                            .entry(seg.base_offset)
                            .or_default()
                            .extend(aborted);
                    }
                }
            }
        }
        state.evict_below(inner.log_start_offset);
        inner.snapshot_offset = snapshot_offset.max(-1);
        if replayed > 0 {
            producer::write_snapshot(&*self.storage, &self.dir, leo, &state)?;
            inner.snapshot_offset = leo;
        }
        inner.producers = state;
        inner.verifications.clear();
        Ok(())
    }

    /// The last stable offset: below it every transaction is committed or aborted.
    pub fn last_stable_offset(&self) -> i64 {
        lock(&self.inner).last_stable_offset()
    }

    /// Aborted transactions that overlap `[from, upto)`, for a read_committed fetch.
    pub fn aborted_transactions(&self, from: i64, upto: i64) -> Vec<AbortedTxn> {
        let inner = lock(&self.inner);
        let first_base = inner.segments[inner.segment_index_for(from)].base_offset;
        inner
            .aborted
            .range(first_base..)
            .flat_map(|(_, v)| v.iter())
            .filter(|a| a.last_offset >= from && a.first_offset < upto)
            .copied()
            .collect()
    }

    /// The producers this partition knows (DescribeProducers).
    pub fn producers(&self) -> Vec<ProducerEntry> {
        let inner = lock(&self.inner);
        let mut v: Vec<ProducerEntry> = inner.producers.entries().cloned().collect();
        v.sort_by_key(|e| e.producer_id);
        v
    }

    /// Forgets producers idle for `expiration_ms` (`producer.id.expiration.ms`) without an
    /// open transaction; returns how many.
    pub fn expire_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        let mut inner = lock(&self.inner);
        inner
            .verifications
            .retain(|_, v| now_ms.saturating_sub(v.made_ms) < expiration_ms);
        inner.producers.expire(now_ms, expiration_ms)
    }

    /// Marks the log failed after an I/O error and returns the error to hand up. Logged here,
    /// once, because this is where it is handled.
    pub(crate) fn fail(&self, inner: &mut Inner, error: LogError) -> LogError {
        if inner.failed.is_none() {
            tracing::error!(dir = %self.dir.display(), %error, "partition log failed; refusing writes");
            inner.failed = Some(error.to_string());
        }
        error
    }

    /// Validates `records` (one or more batches back to back), assigns offsets (unless a
    /// replica appends) and timestamps in place, and writes them to the active segment. The
    /// data is in the page cache when this returns; see [`Log::wait_durable`].
    pub fn append(
        &self,
        records: &[u8],
        origin: AppendOrigin,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.append_guarded(records, origin, now_ms, None)
    }

    /// A transactional producer is about to write here: `None` when it has a transaction open
    /// in this partition in `epoch` (its writes join it: nothing to verify), otherwise the
    /// guard to append with ([`Self::append_verified`]) once its coordinator confirmed the
    /// partition is in its open transaction. A marker for the producer written meanwhile voids
    /// the guard, so a write verified before its transaction ended cannot open a new one
    /// (KIP-890). Concurrent verifications of one producer share the guard.
    pub fn begin_verification(
        &self,
        producer_id: i64,
        epoch: i16,
        sequence: i32,
        now_ms: i64,
    ) -> Option<u64> {
        let mut inner = lock(&self.inner);
        let open = inner
            .producers
            .get(producer_id)
            .is_some_and(|e| e.txn_first_offset.is_some() && e.epoch == epoch);
        if open {
            return None;
        }
        let next = inner.last_verification + 1;
        let v = inner
            .verifications
            .entry(producer_id)
            .and_modify(|v| {
                if v.epoch != epoch {
                    *v = Verification::new(next, epoch, sequence, now_ms);
                }
                v.lowest_sequence = v.lowest_sequence.min(sequence);
            })
            .or_insert_with(|| Verification::new(next, epoch, sequence, now_ms));
        let guard = v.guard;
        inner.last_verification = inner.last_verification.max(guard);
        Some(guard)
    }

    /// A producer's append whose transactional batches carry `guard`: each must join a
    /// transaction its producer has open here in its epoch, or hold the guard of a
    /// verification no marker voided since ([`Self::begin_verification`]; guard 0 expects an
    /// open transaction). Otherwise nothing is written and the error is Kafka's
    /// INVALID_TXN_STATE.
    pub fn append_verified(
        &self,
        records: &[u8],
        now_ms: i64,
        guard: u64,
    ) -> Result<AppendInfo, LogError> {
        self.append_guarded(records, AppendOrigin::Client, now_ms, Some(guard))
    }

    fn append_guarded(
        &self,
        records: &[u8],
        origin: AppendOrigin,
        now_ms: i64,
        guard: Option<u64>,
    ) -> Result<AppendInfo, LogError> {
        let config = self.config();
        let rewritten;
        let records = match recompressed(records, origin, &config)? {
            Some(batches) => {
                rewritten = batches;
                &rewritten[..]
            }
            None => records,
        };
        let mut spans = Vec::new();
        let mut at = 0;
        for batch in split_batches(records) {
            let len = batch?.len();
            spans.push((at, len));
            at += len;
        }
        if spans.is_empty() {
            return Err(LogError::InvalidRecord {
                reason: "no record batch in the request",
            });
        }
        let mut headers = Vec::with_capacity(spans.len());
        // What the log changes in a batch (offsets, leader epoch, max timestamp and then the
        // CRC) all sits in its first HEADER_LEN bytes: those are copied and patched, and the
        // rest is written from `records` as it is (no copy of the request's data).
        let mut heads: Vec<[u8; HEADER_LEN]> = Vec::with_capacity(spans.len());
        // Control batches (markers) by batch index; rare, so nothing is allocated without one.
        let mut controls: Vec<(usize, ControlRecord)> = Vec::new();
        let mut record_count = 0u64;
        for &(start, len) in &spans {
            let batch = &records[start..start + len];
            if len > config.max_message_bytes {
                return Err(LogError::BatchTooLarge {
                    size: len,
                    max: config.max_message_bytes,
                });
            }
            let header = validate_batch(batch)?;
            let mut head = [0u8; HEADER_LEN];
            head.copy_from_slice(&batch[..HEADER_LEN]);
            let rest = &batch[HEADER_LEN..];
            if origin != AppendOrigin::Replica {
                if origin == AppendOrigin::Client && header.is_control() {
                    return Err(LogError::InvalidRecord {
                        reason: "clients may not write control batches",
                    });
                }
                let summary = validate_records(batch, config.max_decompressed_bytes)?;
                if summary.count == 0 {
                    return Err(LogError::InvalidRecord {
                        reason: "a produced batch must hold at least one record",
                    });
                }
                if !summary.dense_offsets || header.last_offset_delta != summary.count - 1 {
                    return Err(LogError::InvalidRecord {
                        reason: "record offset deltas must run 0, 1, 2, … to lastOffsetDelta",
                    });
                }
                let keyless = config.cleanup_policy.compact && summary.has_null_key;
                let timestamps = config.message_timestamp_type == TimestampType::CreateTime
                    && (timestamp_out_of_range(summary.min_timestamp, now_ms, &config)
                        || timestamp_out_of_range(summary.max_timestamp, now_ms, &config));
                if (keyless || timestamps) && !header.is_control() {
                    return Err(reject_records(batch, &config, now_ms, &self.dir));
                }
                match config.message_timestamp_type {
                    TimestampType::LogAppendTime => {
                        set_max_timestamp_parts(
                            &mut head,
                            rest,
                            TimestampType::LogAppendTime,
                            now_ms,
                        );
                    }
                    TimestampType::CreateTime => {
                        set_max_timestamp_parts(
                            &mut head,
                            rest,
                            TimestampType::CreateTime,
                            summary.max_timestamp,
                        );
                    }
                }
            }
            record_count += header.records_count as u64;
            if header.is_control() {
                controls.push((headers.len(), parse_control_batch(batch)?));
            }
            headers.push(BatchHeader::parse(&head)?);
            heads.push(head);
        }

        let mut inner = lock(&self.inner);
        inner.check_writable(&self.dir)?;
        if origin == AppendOrigin::Replica {
            let mut expected = inner.log_end_offset;
            for h in &headers {
                if h.base_offset < expected {
                    return Err(LogError::InvalidRecord {
                        reason: "replicated batch offsets must rise past the log end offset",
                    });
                }
                expected = h.next_offset();
            }
        } else {
            let mut next = inner.log_end_offset;
            for h in headers.iter_mut() {
                h.base_offset = next;
                next = h.next_offset();
            }
        }
        let changes = if headers.iter().any(BatchHeader::has_producer_id) {
            let batches: Vec<(BatchHeader, Option<ControlRecord>)> = headers
                .iter()
                .enumerate()
                .map(|(i, h)| (*h, controls.iter().find(|(at, _)| *at == i).map(|c| c.1)))
                .collect();
            let check = match origin {
                AppendOrigin::Client => Check::Client,
                AppendOrigin::Internal => Check::Internal,
                AppendOrigin::Replica => Check::None,
            };
            match inner.producers.check(&batches, check, now_ms)? {
                Checked::Duplicate(dup) => {
                    return Ok(AppendInfo {
                        first_offset: dup.first_offset,
                        last_offset: dup.last_offset,
                        log_append_time: match config.message_timestamp_type {
                            TimestampType::LogAppendTime => dup.max_timestamp,
                            TimestampType::CreateTime => -1,
                        },
                        record_count: 0,
                        bytes: 0,
                        log_start_offset: inner.log_start_offset,
                        duplicate: true,
                    });
                }
                Checked::Apply(changes) => Some(changes),
            }
        } else {
            None
        };
        // KIP-890's guard, after duplicates (a retry of a batch already written is answered
        // from the log whatever happened since).
        if let Some(guard) = guard {
            for h in headers
                .iter()
                .filter(|h| h.is_transactional() && !h.is_control())
            {
                let known = inner
                    .producers
                    .get(h.producer_id)
                    .filter(|e| e.epoch == h.producer_epoch);
                if known.is_some_and(|e| e.txn_first_offset.is_some()) {
                    continue; // joins its open transaction
                }
                let verified = inner.verifications.get(&h.producer_id);
                if verified.map(|v| v.guard) != Some(guard) {
                    return Err(LogError::Producer(
                        producer::ProducerError::UnverifiedTransaction {
                            producer_id: h.producer_id,
                        },
                    ));
                }
                // A producer new here starts at the lowest sequence its verifications saw: a
                // later batch that overtook an earlier one waiting for its verification is
                // out of order (the producer sends it again after the earlier one).
                if let Some(v) = verified
                    && known.is_none()
                    && h.base_sequence > v.lowest_sequence
                {
                    return Err(LogError::Producer(
                        producer::ProducerError::OutOfOrderSequence {
                            producer_id: h.producer_id,
                            epoch: h.producer_epoch,
                            got: h.base_sequence,
                            expected: v.lowest_sequence,
                        },
                    ));
                }
            }
        }
        if origin != AppendOrigin::Replica {
            // As a Kafka leader does: offsets and the leader epoch, both outside the CRC.
            let epoch = self.leader_epoch.load(Ordering::Relaxed);
            for (h, head) in headers.iter_mut().zip(&mut heads) {
                set_base_offset(head, h.base_offset);
                set_partition_leader_epoch(head, epoch);
                h.partition_leader_epoch = epoch;
            }
        }
        for h in &headers {
            if inner.epochs.assign(h.partition_leader_epoch, h.base_offset) {
                inner.epochs_dirty = true;
            }
        }
        // A new epoch is on disk before any batch that carries it.
        self.store_epochs(&mut inner)?;
        let first_offset = headers[0].base_offset;
        let last_offset = headers
            .last()
            .map_or(first_offset, BatchHeader::last_offset);
        self.maybe_roll(
            &mut inner,
            &config,
            records.len() as u64,
            first_offset,
            last_offset,
            now_ms,
        )?;
        let mut pieces = Vec::with_capacity(2 * spans.len());
        for (head, &(start, len)) in heads.iter().zip(&spans) {
            pieces.push(&head[..]);
            pieces.push(&records[start + HEADER_LEN..start + len]);
        }
        if let Err(e) = inner
            .active_mut()
            .append(&pieces, &headers, config.index_interval_bytes)
        {
            return Err(self.fail(&mut inner, LogError::io("appending to", &self.dir)(e)));
        }
        inner.log_end_offset = last_offset + 1;
        for h in headers.iter().filter(|h| h.is_control()) {
            inner.verifications.remove(&h.producer_id);
        }
        if let Some(changes) = changes {
            let aborted = inner.producers.apply(changes);
            if !aborted.is_empty() {
                let base = inner.active().base_offset;
                if let Err(e) =
                    producer::append_txn_index(&*self.storage, &self.dir, base, &aborted)
                {
                    return Err(self.fail(&mut inner, e));
                }
                inner.aborted.entry(base).or_default().extend(aborted);
            }
        }
        if inner.first_unflushed_ms.is_none() {
            inner.first_unflushed_ms = Some(now_ms);
        }
        inner.check_invariants();
        Ok(AppendInfo {
            first_offset,
            last_offset,
            log_append_time: match config.message_timestamp_type {
                TimestampType::LogAppendTime if origin != AppendOrigin::Replica => now_ms,
                _ => -1,
            },
            record_count,
            bytes: records.len() as u64,
            log_start_offset: inner.log_start_offset,
            duplicate: false,
        })
    }

    /// Appends and then waits as the flush policy says; the usual call for acks=all.
    pub fn append_durable(
        &self,
        records: &[u8],
        origin: AppendOrigin,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let info = self.append(records, origin, now_ms)?;
        self.wait_durable(&info)?;
        Ok(info)
    }

    fn maybe_roll(
        &self,
        inner: &mut Inner,
        config: &LogConfig,
        incoming: u64,
        first_offset: i64,
        last_offset: i64,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let active = inner.active();
        if active.size == 0 {
            return Ok(());
        }
        // A compacted log also rolls at max.compaction.lag.ms, so that its newest records
        // become cleanable within the lag (Kafka's `LogConfig.maxSegmentMs`).
        let segment_ms = if config.cleanup_policy.compact {
            config.segment_ms.min(config.max_compaction_lag_ms)
        } else {
            config.segment_ms
        };
        let roll = active.size + incoming > config.segment_bytes
            || now_ms.saturating_sub(active.rolling_timestamp) > segment_ms
            || last_offset - active.base_offset > i64::from(i32::MAX)
            || active.index_full(config.segment_index_bytes);
        if roll {
            self.roll(inner, first_offset, now_ms)?;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at `base`.
    fn roll(&self, inner: &mut Inner, base: i64, now_ms: i64) -> Result<(), LogError> {
        // The sealed segment's indexes are written now (and never change again); its log file
        // is synced with the next sync.
        let storage = &*self.storage;
        let sealed = inner
            .active_mut()
            .seal()
            .and_then(|()| inner.active_mut().persist_indexes(storage));
        if let Err(e) = sealed {
            return Err(self.fail(inner, LogError::io("sealing segment in", &self.dir)(e)));
        }
        inner.active_mut().release_indexes();
        let file = inner.active().log.clone();
        inner.pending_sync.push(file);
        // The producer state after every batch below the new segment, so recovery replays at
        // most the segments after it.
        if let Err(e) = producer::write_snapshot(&*self.storage, &self.dir, base, &inner.producers)
        {
            return Err(self.fail(inner, e));
        }
        inner.snapshot_offset = base;
        let created = Segment::create(&*self.storage, &self.dir, base, now_ms).and_then(|s| {
            self.storage
                .sync_dir(&self.dir)
                .map_err(LogError::io("syncing", &self.dir))?;
            Ok(s)
        });
        match created {
            Ok(segment) => {
                inner.segments.push(segment);
                inner.checkpoint_due = true;
                Ok(())
            }
            Err(e) => Err(self.fail(inner, e)),
        }
    }

    /// Waits until the append is durable if the flush policy asks for it (by default every
    /// append waits; with `flush.messages` = N only once N records are unflushed).
    pub fn wait_durable(&self, info: &AppendInfo) -> Result<(), LogError> {
        match self.sync_needed(info) {
            Some(target) => self.sync_to(target),
            None => Ok(()),
        }
    }

    /// The offset to sync to before acknowledging `info` under the flush policy, or `None`
    /// when the append may be acknowledged as it is (already durable, or `flush.messages`
    /// leaves it to a later sync).
    pub fn sync_needed(&self, info: &AppendInfo) -> Option<i64> {
        let config = self.config();
        let durable = self.durable_offset();
        let target = info.next_offset();
        let due = config.flush_messages <= 1 || (target - durable) as u64 >= config.flush_messages;
        (durable < target && due).then_some(target)
    }

    /// Makes every offset below `offset` durable. Concurrent callers share one fsync: whoever
    /// gets the sync lock first syncs everything appended so far, and the others find their
    /// offsets already covered.
    pub fn sync_to(&self, offset: i64) -> Result<(), LogError> {
        match self.begin_sync(offset)? {
            Some(sync) => sync.sync_files(),
            None => Ok(()),
        }
    }

    /// Begins making every offset below `offset` durable for a caller that may make the
    /// files durable another way (one filesystem-wide sync for many logs): `None` when they
    /// already are. The log's sync lock is held until the returned sync is finished, so no
    /// one else reports offsets durable whose files it has not synced.
    pub fn begin_sync(&self, offset: i64) -> Result<Option<PendingSync<'_>>, LogError> {
        self.begin_sync_with(lock(&self.sync), offset)
    }

    /// [`Log::begin_sync`] unless another thread holds the log's sync lock (a sync, a
    /// truncation, a close under way): `None` then, without waiting.
    pub fn try_begin_sync(&self, offset: i64) -> Option<Result<Option<PendingSync<'_>>, LogError>> {
        let guard = match self.sync.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(self.begin_sync_with(guard, offset))
    }

    fn begin_sync_with<'a>(
        &'a self,
        guard: MutexGuard<'a, SyncState>,
        offset: i64,
    ) -> Result<Option<PendingSync<'a>>, LogError> {
        if guard.durable >= offset {
            return Ok(None);
        }
        let mut inner = lock(&self.inner);
        if let Some(reason) = &inner.failed {
            return Err(LogError::Failed {
                dir: self.dir.clone(),
                reason: reason.clone(),
            });
        }
        let mut files = std::mem::take(&mut inner.pending_sync);
        files.push(inner.active().log.clone());
        let recovery_point =
            std::mem::take(&mut inner.checkpoint_due).then(|| inner.active().base_offset);
        Ok(Some(PendingSync {
            log: self,
            guard,
            files,
            log_end_offset: inner.log_end_offset,
            recovery_point,
        }))
    }

    /// Syncs every sealed segment and moves the checkpoint's recovery point to the active
    /// segment's base; returns it. Compaction calls this so it only ever rewrites segments
    /// below the recovery point, which recovery trusts rather than rescans.
    pub(crate) fn advance_recovery_point(&self) -> Result<i64, LogError> {
        let sync = lock(&self.sync);
        let (files, base, current) = {
            let mut inner = lock(&self.inner);
            inner.check_writable(&self.dir)?;
            inner.checkpoint_due = false;
            (
                std::mem::take(&mut inner.pending_sync),
                inner.active().base_offset,
                inner.recovery_point,
            )
        };
        for file in &files {
            if let Err(e) = file.sync() {
                let mut inner = lock(&self.inner);
                return Err(self.fail(&mut inner, LogError::io("syncing", &self.dir)(e)));
            }
        }
        drop(sync);
        if current < base {
            self.write_checkpoint(Some(base), false)?;
        }
        Ok(base.max(current))
    }

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> Result<(), LogError> {
        let leo = self.log_end_offset();
        self.sync_to(leo)
    }

    /// Syncs if the oldest unsynced append is older than `flush.ms`; true if it synced.
    pub fn flush_if_due(&self, now_ms: i64) -> Result<bool, LogError> {
        let config = self.config();
        let due = {
            let inner = lock(&self.inner);
            inner
                .first_unflushed_ms
                .is_some_and(|t| now_ms.saturating_sub(t) >= config.flush_ms)
        };
        if due {
            self.sync()?;
        }
        Ok(due)
    }

    /// Rewrites the checkpoint with the current log start offset and high watermark, and the
    /// given recovery point (or the last one written).
    pub(crate) fn write_checkpoint(
        &self,
        recovery_point: Option<i64>,
        clean: bool,
    ) -> Result<(), LogError> {
        let _guard = lock(&self.checkpoint_lock);
        let mut inner = lock(&self.inner);
        let rp = recovery_point
            .unwrap_or(inner.recovery_point)
            .min(inner.log_end_offset);
        inner.recovery_point = rp;
        let cp = Checkpoint {
            clean_shutdown: clean,
            log_start_offset: inner.log_start_offset,
            recovery_point: rp,
            high_watermark: inner.high_watermark,
        };
        drop(inner);
        let stored = cp.store(&*self.storage, &self.dir);
        if let Err(e) = stored {
            inner = lock(&self.inner);
            return Err(self.fail(&mut inner, e));
        }
        Ok(())
    }

    /// Reads whole batches starting with the one that holds `offset`, up to `max_bytes`
    /// (the first batch is returned even if larger when `min_one_batch` is set), from one
    /// segment, never past `upper`.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper: ReadUpTo,
        min_one_batch: bool,
    ) -> Result<ReadResult, LogError> {
        let (mut target, upper_offset, mut result) = {
            let inner = lock(&self.inner);
            let result = ReadResult {
                data: None,
                log_start_offset: inner.log_start_offset,
                high_watermark: inner.high_watermark,
                last_stable_offset: inner.last_stable_offset(),
                log_end_offset: inner.log_end_offset,
            };
            if offset < inner.log_start_offset || offset > inner.log_end_offset {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    log_start_offset: inner.log_start_offset,
                    log_end_offset: inner.log_end_offset,
                });
            }
            let upper_offset = match upper {
                ReadUpTo::HighWatermark => inner.high_watermark,
                ReadUpTo::LogEnd => inner.log_end_offset,
                ReadUpTo::LastStable => inner.last_stable_offset(),
                ReadUpTo::Offset(o) => o.min(inner.log_end_offset),
            };
            if offset >= upper_offset {
                return Ok(result);
            }
            let s = &inner.segments[inner.segment_index_for(offset)];
            (
                Some((
                    s.log.clone(),
                    s.base_offset,
                    s.position_for(&*self.storage, offset),
                    s.size,
                )),
                upper_offset,
                result,
            )
        };
        while let Some((file, base, start, end)) = target.take() {
            let mut scanner = Scanner::new(&*file, start, end);
            // position, len, first offset, next offset, records
            let mut found: Option<(u64, u64, i64, i64, u64)> = None;
            loop {
                let next = scanner
                    .next_header()
                    .map_err(|e| self.scan_error(base, e))?;
                let Some((pos, header)) = next else { break };
                // Like Kafka, a batch that reaches the bound (a high watermark inside a batch)
                // is held back whole.
                if header.last_offset() >= upper_offset {
                    break;
                }
                match &mut found {
                    None if header.last_offset() < offset => {}
                    None => {
                        let len = header.total_len() as u64;
                        if len as usize > max_bytes && !min_one_batch {
                            break;
                        }
                        let records = header.records_count.max(0) as u64;
                        found = Some((pos, len, header.base_offset, header.next_offset(), records));
                    }
                    Some((_, len, _, next, records)) => {
                        let add = header.total_len() as u64;
                        if (*len + add) as usize > max_bytes {
                            break;
                        }
                        *len += add;
                        *next = header.next_offset();
                        *records += header.records_count.max(0) as u64;
                    }
                }
            }
            if let Some((position, len, first_offset, next_offset, records)) = found {
                result.data = Some(FetchSlice {
                    file,
                    position,
                    len,
                    first_offset,
                    next_offset,
                    records,
                });
                return Ok(result);
            }
            // The offset lies past this segment's last batch (a gap left by compaction or
            // a partial read): continue with the next segment.
            let inner = lock(&self.inner);
            let i = inner.segments.partition_point(|s| s.base_offset <= base);
            if let Some(s) = inner.segments.get(i)
                && s.base_offset < upper_offset
            {
                target = Some((s.log.clone(), s.base_offset, 0, s.size));
            }
        }
        Ok(result)
    }

    fn scan_error(&self, base: i64, e: ScanError) -> LogError {
        let path = self.dir.join(segment::file_name(base, LOG_SUFFIX));
        match e {
            ScanError::Io(source) => LogError::Io {
                action: "reading",
                path,
                source,
            },
            ScanError::Corrupt { pos, reason } => LogError::Unreadable {
                path,
                reason: format!("at byte {pos}: {reason}"),
            },
        }
    }

    /// The first record whose timestamp is at least `timestamp` (ListOffsets by time), at or
    /// after the log start offset.
    pub fn offset_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<TimestampOffset>, LogError> {
        let limit = self.config().max_decompressed_bytes;
        let mut after_base = i64::MIN;
        loop {
            let (file, base, start, end, log_start) = {
                let inner = lock(&self.inner);
                let log_start = inner.log_start_offset;
                let Some(s) = inner.segments.iter().find(|s| {
                    s.base_offset > after_base
                        && s.next_offset > log_start
                        && s.max_timestamp >= timestamp
                }) else {
                    return Ok(None);
                };
                (
                    s.log.clone(),
                    s.base_offset,
                    s.position_for_timestamp(&*self.storage, timestamp),
                    s.size,
                    log_start,
                )
            };
            let mut scanner = Scanner::new(&*file, start, end);
            while let Some((_, bytes)) =
                scanner.next_batch().map_err(|e| self.scan_error(base, e))?
            {
                let header = BatchHeader::parse(bytes)?;
                if header.max_timestamp < timestamp || header.last_offset() < log_start {
                    continue;
                }
                let records = Records::decode(bytes, limit)?;
                for record in records.iter() {
                    let record = record?;
                    let (ts, offset) = (record.timestamp(&header), record.offset(&header));
                    if ts >= timestamp && offset >= log_start {
                        return Ok(Some(TimestampOffset {
                            timestamp: ts,
                            offset,
                        }));
                    }
                }
            }
            after_base = base;
        }
    }

    /// The record with the largest timestamp (ListOffsets MAX_TIMESTAMP, KIP-734): the first
    /// one holding it.
    pub fn max_timestamp_offset(&self) -> Result<Option<TimestampOffset>, LogError> {
        let limit = self.config().max_decompressed_bytes;
        let (file, base, start, end, holder, max_ts) = {
            let inner = lock(&self.inner);
            let log_start = inner.log_start_offset;
            let mut best: Option<&Segment> = None;
            for s in inner
                .segments
                .iter()
                .filter(|s| s.next_offset > log_start && s.max_timestamp >= 0)
            {
                if best.is_none_or(|b| s.max_timestamp > b.max_timestamp) {
                    best = Some(s);
                }
            }
            let Some(s) = best else { return Ok(None) };
            (
                s.log.clone(),
                s.base_offset,
                s.position_for(&*self.storage, s.max_timestamp_batch),
                s.size,
                s.max_timestamp_batch,
                s.max_timestamp,
            )
        };
        let mut scanner = Scanner::new(&*file, start, end);
        while let Some((_, bytes)) = scanner.next_batch().map_err(|e| self.scan_error(base, e))? {
            let header = BatchHeader::parse(bytes)?;
            if header.base_offset != holder {
                continue;
            }
            let records = Records::decode(bytes, limit)?;
            for record in records.iter() {
                let record = record?;
                if record.timestamp(&header) == max_ts {
                    return Ok(Some(TimestampOffset {
                        timestamp: max_ts,
                        offset: record.offset(&header),
                    }));
                }
            }
            break;
        }
        Ok(None)
    }

    /// Removes every batch at or after `offset` (rounded down to a batch boundary: a batch
    /// holding `offset` goes whole). Replication uses this to drop divergent data.
    pub fn truncate_to(&self, offset: i64) -> Result<(), LogError> {
        let mut sync = lock(&self.sync);
        let mut inner = lock(&self.inner);
        inner.check_writable(&self.dir)?;
        if offset >= inner.log_end_offset {
            return Ok(());
        }
        let removed;
        if offset < inner.log_start_offset || offset <= inner.segments[0].base_offset {
            removed = self.restart_at(&mut inner, offset.max(0))?;
        } else {
            let idx = inner.segment_index_for(offset);
            let seg = &inner.segments[idx];
            let mut scanner = Scanner::new(
                &*seg.log,
                seg.position_for(&*self.storage, offset),
                seg.size,
            );
            let mut cut = (seg.size, offset.min(seg.next_offset));
            loop {
                match scanner.next_header() {
                    Ok(Some((pos, h))) if h.last_offset() >= offset => {
                        cut = (pos, h.base_offset.min(offset));
                        break;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        let e = self.scan_error(seg.base_offset, e);
                        return Err(self.fail(&mut inner, e));
                    }
                }
            }
            removed = inner.segments.split_off(idx + 1);
            let interval = self.config().index_interval_bytes;
            let seg = inner.active_mut();
            let done = seg
                .make_active(&*self.storage, interval)
                .and_then(|()| seg.truncate_to(cut.0, cut.1))
                .and_then(|()| seg.sync_all(&*self.storage));
            if let Err(e) = done {
                return Err(self.fail(&mut inner, LogError::io("truncating", &self.dir)(e)));
            }
            inner.log_end_offset = cut.1;
        }
        inner.high_watermark = inner.high_watermark.min(inner.log_end_offset);
        inner.log_start_offset = inner.log_start_offset.min(inner.log_end_offset);
        let leo = inner.log_end_offset;
        self.truncated_to.fetch_min(leo, Ordering::AcqRel);
        if inner.epochs.truncate_from_end(leo) {
            inner.epochs_dirty = true;
        }
        self.store_epochs(&mut inner)?;
        inner.first_unflushed_ms = None;
        sync.durable = sync.durable.min(inner.log_end_offset);
        self.durable.store(sync.durable, Ordering::Release);
        // The recovery point may only claim what is fsynced: a segment sealed by a roll and
        // not synced yet stays below the log end but must be scanned after a crash.
        let recovery_point = sync.durable;
        inner.check_invariants();
        for s in &removed {
            inner.aborted.remove(&s.base_offset);
        }
        let now = inner.active().rolling_timestamp;
        let rebuilt = self.load_producer_state(&mut inner, false, now);
        if let Err(e) = rebuilt {
            return Err(self.fail(&mut inner, e));
        }
        drop(inner);
        drop(sync);
        self.remove_segment_files(removed.iter().map(|s| s.base_offset))?;
        self.write_checkpoint(Some(recovery_point), false)
    }

    /// Replaces every segment with one empty segment at `offset`, which becomes the log start.
    fn restart_at(&self, inner: &mut Inner, offset: i64) -> Result<Vec<Segment>, LogError> {
        let mut removed = std::mem::take(&mut inner.segments);
        let now = removed.last().map_or(0, |s| s.rolling_timestamp);
        // A segment at exactly `offset` would share file names with the new one.
        if let Some(i) = removed.iter().position(|s| s.base_offset == offset) {
            removed.remove(i);
        }
        match Segment::create(&*self.storage, &self.dir, offset, now) {
            Ok(s) => inner.segments.push(s),
            Err(e) => return Err(self.fail(inner, e)),
        }
        inner.log_start_offset = offset;
        inner.log_end_offset = offset;
        inner.high_watermark = offset;
        inner.aborted.clear();
        inner.producers = ProducerState::default();
        inner.verifications.clear();
        self.truncated_to.fetch_min(offset, Ordering::AcqRel);
        if inner.epochs.clear() {
            inner.epochs_dirty = true;
        }
        self.store_epochs(inner)?;
        // Older snapshots describe batches that are gone.
        if let Err(e) =
            producer::write_snapshot(&*self.storage, &self.dir, offset, &inner.producers)
        {
            return Err(self.fail(inner, e));
        }
        inner.snapshot_offset = offset;
        Ok(removed)
    }

    /// Empties the log and restarts it at `offset` (a replica that fell behind the leader's
    /// log start).
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), LogError> {
        let mut sync = lock(&self.sync);
        let mut inner = lock(&self.inner);
        inner.check_writable(&self.dir)?;
        let removed = self.restart_at(&mut inner, offset)?;
        sync.durable = offset;
        self.durable.store(offset, Ordering::Release);
        inner.first_unflushed_ms = None;
        drop(inner);
        drop(sync);
        self.remove_segment_files(removed.iter().map(|s| s.base_offset))?;
        self.write_checkpoint(Some(offset), false)
    }

    pub(crate) fn remove_segment_files(
        &self,
        bases: impl Iterator<Item = i64>,
    ) -> Result<(), LogError> {
        let mut any = false;
        for base in bases {
            let txn = producer::txn_index_path(&self.dir, base);
            for path in segment::paths(&self.dir, base).into_iter().chain([txn]) {
                any = true;
                let removed = self.storage.remove_file(&path);
                if let Err(e) = removed
                    && e.kind() != io::ErrorKind::NotFound
                {
                    let mut inner = lock(&self.inner);
                    return Err(self.fail(&mut inner, LogError::io("removing", &path)(e)));
                }
            }
        }
        if any {
            let synced = self.storage.sync_dir(&self.dir);
            if let Err(e) = synced {
                let mut inner = lock(&self.inner);
                return Err(self.fail(&mut inner, LogError::io("syncing", &self.dir)(e)));
            }
        }
        Ok(())
    }

    /// Moves the log start offset forward (DeleteRecords). It may not pass the high watermark.
    /// Durable when this returns; whole segments below it are deleted.
    pub fn advance_log_start_offset(&self, offset: i64) -> Result<i64, LogError> {
        {
            let mut inner = lock(&self.inner);
            inner.check_writable(&self.dir)?;
            if offset > inner.high_watermark || offset < 0 {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    log_start_offset: inner.log_start_offset,
                    log_end_offset: inner.high_watermark,
                });
            }
            if offset <= inner.log_start_offset {
                return Ok(inner.log_start_offset);
            }
            inner.log_start_offset = offset;
            if inner.epochs.truncate_from_start(offset) {
                inner.epochs_dirty = true;
            }
        }
        self.write_checkpoint(None, false)?;
        self.enforce_retention_inner(None)?;
        Ok(offset)
    }

    /// Deletes whole segments that retention (`retention.ms`, `retention.bytes`) or the log
    /// start offset no longer keeps. Only segments wholly below the high watermark go.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionOutcome, LogError> {
        self.enforce_retention_inner(Some(now_ms))
    }

    fn enforce_retention_inner(&self, now_ms: Option<i64>) -> Result<RetentionOutcome, LogError> {
        let config = self.config();
        let by_policy = config.cleanup_policy.delete && now_ms.is_some();
        let now = now_ms.unwrap_or(0);
        let (removed, log_start) = {
            let mut inner = lock(&self.inner);
            inner.check_writable(&self.dir)?;
            let total: u64 = inner.segments.iter().map(|s| s.size).sum();
            let mut excess = if by_policy && config.retention_bytes >= 0 {
                total as i64 - config.retention_bytes
            } else {
                -1
            };
            let n = inner.segments.len();
            let mut count = 0;
            for i in 0..n {
                let s = &inner.segments[i];
                let next_base = inner
                    .segments
                    .get(i + 1)
                    .map_or(inner.log_end_offset, |n| n.base_offset);
                if next_base > inner.high_watermark || (i == n - 1 && s.size == 0) {
                    break;
                }
                let newest = if s.max_timestamp >= 0 {
                    s.max_timestamp
                } else {
                    s.rolling_timestamp
                };
                let expired = by_policy
                    && config.retention_ms >= 0
                    && now.saturating_sub(newest) > config.retention_ms;
                let too_big = by_policy && excess >= s.size as i64;
                let below_start = next_base <= inner.log_start_offset;
                if !(expired || too_big || below_start) {
                    break;
                }
                if too_big {
                    excess -= s.size as i64;
                }
                count += 1;
            }
            if count == 0 {
                return Ok(RetentionOutcome {
                    log_start_offset: inner.log_start_offset,
                    ..RetentionOutcome::default()
                });
            }
            if count == n {
                // Everything goes, the active segment too: roll so the log keeps an active one.
                let leo = inner.log_end_offset;
                self.roll(&mut inner, leo, now)?;
            }
            let removed: Vec<Segment> = inner.segments.drain(..count).collect();
            let first_base = inner.segments[0].base_offset;
            inner.log_start_offset = inner.log_start_offset.max(first_base);
            for s in &removed {
                inner.aborted.remove(&s.base_offset);
            }
            let log_start = inner.log_start_offset;
            inner.producers.evict_below(log_start);
            if inner.epochs.truncate_from_start(log_start) {
                inner.epochs_dirty = true;
            }
            inner.high_watermark = inner.high_watermark.max(inner.log_start_offset);
            inner.check_invariants();
            (removed, inner.log_start_offset)
        };
        self.write_checkpoint(None, false)?;
        self.remove_segment_files(removed.iter().map(|s| s.base_offset))?;
        let deleted_bytes = removed.iter().map(|s| s.size).sum();
        tracing::debug!(dir = %self.dir.display(), segments = removed.len(), deleted_bytes, log_start, "retention deleted segments");
        Ok(RetentionOutcome {
            deleted_segments: removed.len(),
            deleted_bytes,
            log_start_offset: log_start,
        })
    }

    /// Flushes everything, indexes included, and records a clean shutdown so the next open
    /// skips recovery. The log refuses writes afterwards.
    pub fn close(&self) -> Result<(), LogError> {
        let _cleaner = lock(&self.cleaner_lock);
        self.sync()?;
        let leo = {
            let _sync = lock(&self.sync);
            let mut inner = lock(&self.inner);
            inner.check_writable(&self.dir)?;
            let storage = &*self.storage;
            let sealed = inner
                .active_mut()
                .seal()
                .and_then(|()| inner.active_mut().sync_all(storage));
            if let Err(e) = sealed {
                return Err(self.fail(&mut inner, LogError::io("closing", &self.dir)(e)));
            }
            let leo = inner.log_end_offset;
            // Nothing appended since the last snapshot: it already describes the log end. No
            // producers: a clean open without a snapshot starts empty.
            if inner.snapshot_offset != leo
                && !inner.producers.is_empty()
                && let Err(e) =
                    producer::write_snapshot(&*self.storage, &self.dir, leo, &inner.producers)
            {
                return Err(self.fail(&mut inner, e));
            }
            self.store_epochs(&mut inner)?;
            inner.closed = true;
            leo
        };
        self.write_checkpoint(Some(leo), true)
    }
}
