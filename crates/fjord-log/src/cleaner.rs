//! Log compaction (`cleanup.policy=compact`): keep the latest record per key.
//!
//! A pass covers the sealed segments wholly below the high watermark and the recovery point
//! (the active segment is never cleaned; segments are synced and the recovery point moved
//! first, so the gaps compaction leaves are only where recovery never rescans). It builds a map from each key to its newest offset over those segments, then
//! rewrites each segment that holds a superseded record:
//!
//! The key map is bounded (`log.cleaner.dedupe.buffer.size`, as Kafka's): it indexes the dirty
//! segments (those sealed since the last pass) from the oldest until the budget is spent, at
//! least one segment, and the pass rewrites only segments up to the last one indexed; the
//! next pass goes on from there. Records of segments cleaned before are kept unless the map
//! holds a newer record of their key (they were deduplicated when they were cleaned).
//!
//! - a record stays if it has no key, or if it is the newest for its key;
//! - a tombstone (null value) that stays gets a delete horizon (KIP-534: the batch's base
//!   timestamp becomes `now + delete.retention.ms`, attribute bit 6 set), and a later pass past
//!   that horizon drops it;
//! - rebuilt batches keep their base offset, producer fields and `lastOffsetDelta`, so offsets
//!   never move; a batch left empty is dropped; control batches are kept as they are.
//!
//! The rewrite goes to `.cleaned` files without holding the log's lock, so appends and reads go
//! on; only the swap (unlink the old indexes, rename the cleaned files over the originals, sync
//! the directory) runs under the lock. A crash mid-swap leaves either the old or the new log
//! file; open deletes `.cleaned` leftovers and rebuilds any missing index.

use std::collections::HashMap;
use std::sync::Arc;

use fjord_record::{BatchBuilder, BatchHeader, Records, TimestampType, set_max_timestamp};

use crate::LogError;
use crate::log::Log;
use crate::segment::{self, CLEANED_SUFFIX, Scanner, Segment};
use crate::storage::StorageFile;

/// The cleaner's memory between passes.
#[derive(Debug, Default)]
pub(crate) struct CleanerState {
    pub(crate) passes: u64,
    /// The end of the sealed segments the last pass covered.
    last_end: i64,
    /// The earliest delete horizon of a tombstone the last pass kept.
    next_horizon: Option<i64>,
}

/// What a key costs in the map besides its bytes (the map's entry, the key's allocation).
const MAP_ENTRY_OVERHEAD: u64 = 48;

/// What a compaction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    /// Keys in the pass's map (bounded by `log.cleaner.dedupe.buffer.size`).
    pub keys_indexed: usize,
    pub segments_cleaned: usize,
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

struct Snapshot {
    base: i64,
    next_base: i64,
    id: u64,
    file: Arc<dyn StorageFile>,
    size: u64,
    /// The first batch's max timestamp (or the segment's creation time).
    first_timestamp: i64,
}

/// What to do with one record.
fn keep_record(
    latest: &HashMap<Vec<u8>, i64>,
    key: Option<&[u8]>,
    offset: i64,
    tombstone: bool,
    horizon: Option<i64>,
    now_ms: i64,
) -> bool {
    let Some(key) = key else { return true };
    if latest.get(key).is_some_and(|&newest| newest > offset) {
        return false;
    }
    !(tombstone && horizon.is_some_and(|h| now_ms > h))
}

impl Log {
    /// Runs one compaction pass if the log's policy includes `compact`.
    pub fn compact(&self, now_ms: i64) -> Result<CompactionOutcome, LogError> {
        let mut state = self.cleaner_lock.lock().unwrap_or_else(|p| p.into_inner());
        // What was cleaned past a truncation point is gone; what replaced it is dirty.
        let cut = self
            .truncated_to
            .swap(i64::MAX, std::sync::atomic::Ordering::AcqRel);
        state.last_end = state.last_end.min(cut);
        let config = self.config();
        let mut outcome = CompactionOutcome::default();
        if !config.cleanup_policy.compact {
            return Ok(outcome);
        }
        let limit = config.max_decompressed_bytes;
        let recovery_point = self.advance_recovery_point()?;
        let (snapshot, aborted) = {
            let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let lso = inner.last_stable_offset();
            let n = inner.segments.len();
            let mut out = Vec::new();
            for i in 0..n.saturating_sub(1) {
                let s = &inner.segments[i];
                let next_base = inner.segments[i + 1].base_offset;
                // Open transactions are not cleaned: whether their records count is not decided.
                if next_base > lso || next_base > recovery_point {
                    break;
                }
                // min.compaction.lag.ms: records younger than the lag stay as written; the
                // segment holding one and all after it wait (Kafka's first uncleanable segment).
                if config.min_compaction_lag_ms > 0
                    && s.max_timestamp > now_ms.saturating_sub(config.min_compaction_lag_ms)
                {
                    break;
                }
                if s.next_offset <= inner.log_start_offset {
                    continue;
                }
                out.push(Snapshot {
                    base: s.base_offset,
                    next_base,
                    id: s.id,
                    file: s.log.clone(),
                    size: s.size,
                    first_timestamp: s.rolling_timestamp,
                });
            }
            let aborted: Vec<crate::AbortedTxn> =
                inner.aborted.values().flatten().copied().collect();
            (out, aborted)
        };
        // A record of an aborted transaction never supersedes a committed one.
        let is_aborted = |h: &BatchHeader| {
            h.is_transactional()
                && aborted.iter().any(|a| {
                    a.producer_id == h.producer_id
                        && a.first_offset <= h.base_offset
                        && h.base_offset <= a.last_offset
                })
        };
        let Some(end) = snapshot.last().map(|s| s.next_base) else {
            return Ok(outcome);
        };
        // Nothing new sealed and no tombstone due: a pass would change nothing.
        let tombstone_due = state.next_horizon.is_some_and(|h| now_ms > h);
        if state.passes > 0 && end <= state.last_end && !tombstone_due {
            return Ok(outcome);
        }
        // min.cleanable.dirty.ratio: wait until the segments sealed since the last pass are
        // this share of the cleanable log, unless a dirty record has waited
        // max.compaction.lag.ms or a tombstone is due.
        if state.passes > 0 && !tombstone_due {
            let total: u64 = snapshot.iter().map(|s| s.size).sum();
            let dirty = snapshot.iter().filter(|s| s.next_base > state.last_end);
            let overdue = dirty
                .clone()
                .any(|s| s.first_timestamp < now_ms.saturating_sub(config.max_compaction_lag_ms));
            let dirty: u64 = dirty.map(|s| s.size).sum();
            if !overdue && (dirty as f64) < config.min_cleanable_dirty_ratio * total as f64 {
                return Ok(outcome);
            }
        }
        state.passes += 1;
        let mut next_horizon: Option<i64> = None;

        // Pass 1: the newest offset of every key in the dirty segments, as far as the budget
        // goes (at least one segment, so every pass makes progress).
        let mut latest: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut map_bytes: u64 = 0;
        let mut map_end = state.last_end;
        let mut indexing = true;
        for seg in &snapshot {
            // Clean segments are read only for their tombstones' horizons.
            let dirty = seg.next_base > state.last_end;
            if dirty && map_end > state.last_end && map_bytes >= config.cleaner_dedupe_bytes {
                indexing = false;
            }
            let index = dirty && indexing;
            if index {
                map_end = seg.next_base;
            }
            let mut scanner = Scanner::new(&*seg.file, 0, seg.size);
            while let Some((_, bytes)) = scanner
                .next_batch()
                .map_err(|e| self.scan_err(seg.base, e))?
            {
                let header = BatchHeader::parse(bytes)?;
                if header.is_control() || is_aborted(&header) {
                    continue;
                }
                let horizon = if header.attributes.has_delete_horizon() {
                    header.base_timestamp
                } else {
                    now_ms.saturating_add(config.delete_retention_ms)
                };
                for record in Records::decode(bytes, limit)?.iter() {
                    let record = record?;
                    if let Some(key) = record.key {
                        if index
                            && latest
                                .insert(key.to_vec(), record.offset(&header))
                                .is_none()
                        {
                            map_bytes += key.len() as u64 + MAP_ENTRY_OVERHEAD;
                        }
                        if record.value.is_none() {
                            next_horizon = Some(next_horizon.map_or(horizon, |h| h.min(horizon)));
                        }
                    }
                }
            }
        }

        outcome.keys_indexed = latest.len();
        // Pass 2: rewrite the segments that change, up to the last one the map covers.
        for seg in snapshot.iter().filter(|s| s.next_base <= map_end) {
            if !self.segment_changes(seg, &latest, now_ms, limit)? {
                continue;
            }
            let mut cleaned =
                Segment::create_named(&*self.storage, &self.dir, seg.base, now_ms, CLEANED_SUFFIX)?;
            let mut removed = 0u64;
            let mut scanner = Scanner::new(&*seg.file, 0, seg.size);
            while let Some((_, bytes)) = scanner
                .next_batch()
                .map_err(|e| self.scan_err(seg.base, e))?
            {
                let header = BatchHeader::parse(bytes)?;
                let rebuilt = if header.is_control() {
                    None
                } else {
                    let horizon = header
                        .attributes
                        .has_delete_horizon()
                        .then_some(header.base_timestamp);
                    let records = Records::decode(bytes, limit)?;
                    let mut kept = Vec::new();
                    let mut total = 0u64;
                    let mut tombstones = false;
                    for record in records.iter() {
                        let record = record?;
                        total += 1;
                        let tombstone = record.value.is_none();
                        if keep_record(
                            &latest,
                            record.key,
                            record.offset(&header),
                            tombstone,
                            horizon,
                            now_ms,
                        ) {
                            tombstones |= tombstone && record.key.is_some();
                            kept.push(record.to_new_record(&header));
                        }
                    }
                    removed += total - kept.len() as u64;
                    let needs_horizon = tombstones && horizon.is_none();
                    if kept.len() as u64 == total && !needs_horizon {
                        None
                    } else if kept.is_empty() {
                        continue;
                    } else {
                        let mut b = BatchBuilder::rewriting(&header, header.compression()?);
                        let horizon = horizon
                            .or(tombstones
                                .then(|| now_ms.saturating_add(config.delete_retention_ms)));
                        if let Some(h) = horizon {
                            b.delete_horizon = true;
                            b.base_timestamp = Some(h);
                        }
                        for r in kept {
                            b.push_record(r);
                        }
                        let mut built = b.build()?;
                        if header.timestamp_type() == TimestampType::LogAppendTime {
                            set_max_timestamp(
                                &mut built,
                                TimestampType::LogAppendTime,
                                header.max_timestamp,
                            );
                        }
                        Some(built)
                    }
                };
                let out = rebuilt.as_deref().unwrap_or(bytes);
                let out_header = BatchHeader::parse(out)?;
                cleaned
                    .append(&[out], &[out_header], config.index_interval_bytes)
                    .map_err(LogError::io("writing cleaned segment in", &self.dir))?;
            }
            cleaned
                .seal()
                .and_then(|()| cleaned.sync_all(&*self.storage))
                .map_err(LogError::io("syncing cleaned segment in", &self.dir))?;
            cleaned.release_indexes();
            let before = seg.size;
            let after = cleaned.size;
            if self.swap_in(seg, cleaned)? {
                outcome.segments_cleaned += 1;
                outcome.records_removed += removed;
                outcome.bytes_before += before;
                outcome.bytes_after += after;
            }
        }
        state.last_end = map_end;
        state.next_horizon = next_horizon;
        if outcome.segments_cleaned > 0 {
            tracing::debug!(dir = %self.dir.display(), ?outcome, "compacted");
        }
        Ok(outcome)
    }

    /// Whether compaction would change anything in this segment.
    fn segment_changes(
        &self,
        seg: &Snapshot,
        latest: &HashMap<Vec<u8>, i64>,
        now_ms: i64,
        limit: usize,
    ) -> Result<bool, LogError> {
        let mut scanner = Scanner::new(&*seg.file, 0, seg.size);
        while let Some((_, bytes)) = scanner
            .next_batch()
            .map_err(|e| self.scan_err(seg.base, e))?
        {
            let header = BatchHeader::parse(bytes)?;
            if header.is_control() {
                continue;
            }
            let horizon = header
                .attributes
                .has_delete_horizon()
                .then_some(header.base_timestamp);
            for record in Records::decode(bytes, limit)?.iter() {
                let record = record?;
                let tombstone = record.value.is_none() && record.key.is_some();
                if !keep_record(
                    latest,
                    record.key,
                    record.offset(&header),
                    tombstone,
                    horizon,
                    now_ms,
                ) || (tombstone && horizon.is_none())
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Replaces the segment the pass read with its cleaned version, unless the segment changed
    /// meanwhile (truncated or deleted), in which case the cleaned files are dropped.
    fn swap_in(&self, seg: &Snapshot, cleaned: Segment) -> Result<bool, LogError> {
        let cleaned_paths = segment::paths(&self.dir, seg.base).map(|p| {
            let mut name = p.into_os_string();
            name.push(CLEANED_SUFFIX);
            std::path::PathBuf::from(name)
        });
        let final_paths = segment::paths(&self.dir, seg.base);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // The segment cleaned, still sealed and as it was read: a truncation meanwhile may
        // have cut it and made it the active one.
        let n = inner.segments.len();
        let position = inner
            .segments
            .iter()
            .position(|s| s.id == seg.id)
            .filter(|&i| i + 1 < n && inner.segments[i].size == seg.size);
        let (Some(i), Ok(())) = (position, inner_writable(&inner.failed)) else {
            drop(inner);
            for p in &cleaned_paths {
                let _ = self.storage.remove_file(p);
            }
            return Ok(false);
        };
        let swapped = (|| {
            // Indexes first: a crash after this rebuilds them from whichever log file is there.
            self.storage.remove_file(&final_paths[1])?;
            self.storage.remove_file(&final_paths[2])?;
            self.storage.rename(&cleaned_paths[0], &final_paths[0])?;
            self.storage.rename(&cleaned_paths[1], &final_paths[1])?;
            self.storage.rename(&cleaned_paths[2], &final_paths[2])?;
            self.storage.sync_dir(&self.dir)
        })();
        if let Err(e) = swapped {
            return Err(self.fail(
                &mut inner,
                LogError::io("swapping in cleaned segment", &self.dir)(e),
            ));
        }
        let old = &inner.segments[i];
        let mut cleaned = cleaned;
        cleaned.renamed(&final_paths[1], &final_paths[2]);
        // Offsets stay where they were even if the last batches were emptied.
        cleaned.next_offset = old.next_offset;
        cleaned.rolling_timestamp = old.rolling_timestamp;
        inner.segments[i] = cleaned;
        Ok(true)
    }

    fn scan_err(&self, base: i64, e: segment::ScanError) -> LogError {
        LogError::Unreadable {
            path: self.dir.join(segment::file_name(base, segment::LOG_SUFFIX)),
            reason: e.into_io().to_string(),
        }
    }
}

fn inner_writable(failed: &Option<String>) -> Result<(), ()> {
    if failed.is_some() { Err(()) } else { Ok(()) }
}
