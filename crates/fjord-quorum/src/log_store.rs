//! The Raft log on a `fjord-log` partition.
//!
//! Entry `i` is the record batch at offset `i`, one record whose value is the entry's JSON
//! (the batch's partition leader epoch is the entry's term, for tools). Appends must continue
//! the log exactly (a gap is an error, never written: openraft issue #1795); an append is
//! reported flushed only after its fsync. The vote, the committed log id and the last purged
//! log id live in [`RAFT_STATE_FILE`], replaced atomically and fsynced before the call that
//! changed them returns.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fjord_log::{AppendOrigin, Log, LogConfig, ReadUpTo, Storage};
use fjord_record::{BatchBuilder, Compression, Records, split_batches, validate_batch};
use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use serde::{Deserialize, Serialize};

use crate::TypeConfig;

/// The file beside the log's segments holding the vote, committed and last purged ids.
pub const RAFT_STATE_FILE: &str = "raft-state.json";

/// The largest entry the log takes (a metadata change of many partitions is large).
const MAX_ENTRY_BYTES: usize = 64 * 1024 * 1024;

type Entry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RaftState {
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    /// The directory id each voter was first seen with (KIP-853's idea): a voter that comes
    /// back with another one lost its disk and is refused.
    #[serde(default)]
    voter_dirs: std::collections::BTreeMap<u64, String>,
}

#[derive(Debug)]
struct Shared {
    log: Log,
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    state: Mutex<RaftState>,
}

/// The Raft log storage (and, cloned, its readers).
#[derive(Debug, Clone)]
pub struct LogStore(Arc<Shared>);

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl LogStore {
    /// Opens the Raft log in `dir` (created if missing). Blocking.
    pub fn open(storage: Arc<dyn Storage>, dir: &Path, now_ms: i64) -> io::Result<Self> {
        let config = LogConfig {
            retention_ms: -1,
            segment_bytes: 64 * 1024 * 1024,
            max_message_bytes: MAX_ENTRY_BYTES + 1024,
            ..LogConfig::default()
        };
        let log = Log::open(storage.clone(), dir.to_path_buf(), config, now_ms).map_err(other)?;
        let path = dir.join(RAFT_STATE_FILE);
        let state = if storage.exists(&path)? {
            let file = storage.open(&path, false)?;
            let mut bytes = vec![0; file.len()? as usize];
            file.read_exact_at(&mut bytes, 0)?;
            serde_json::from_slice(&bytes).map_err(|e| {
                other(format!(
                    "{}: {e} (the file is damaged; restore it or remove this node's metadata directory and let it catch up from the quorum)",
                    path.display()
                ))
            })?
        } else {
            RaftState::default()
        };
        // A purge records its id first, then moves the log start: finish one a crash cut.
        if let Some(purged) = &state.last_purged {
            let start = purged.index as i64 + 1;
            if log.log_start_offset() < start {
                move_start(&log, start)?;
            }
        }
        log.set_high_watermark(log.log_end_offset())
            .map_err(other)?;
        Ok(Self(Arc::new(Shared {
            log,
            storage,
            dir: dir.to_path_buf(),
            state: Mutex::new(state),
        })))
    }

    /// Flushes and closes the log (a clean shutdown).
    pub fn close(&self) -> io::Result<()> {
        self.0.log.close().map_err(other)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, RaftState> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory id voter `node` was first seen with.
    pub(crate) fn voter_dir(&self, node: u64) -> Option<String> {
        self.state().voter_dirs.get(&node).cloned()
    }

    /// The directory ids of the voters seen so far.
    pub(crate) fn voter_dirs(&self) -> std::collections::BTreeMap<u64, String> {
        self.state().voter_dirs.clone()
    }

    /// Records the directory id voter `node` is first seen with, durably.
    pub(crate) async fn record_voter_dir(&self, node: u64, dir: String) -> io::Result<()> {
        self.update(move |s| {
            s.voter_dirs.entry(node).or_insert(dir);
        })
        .await
    }

    /// Changes the state file, durably, under the state lock.
    async fn update(&self, change: impl FnOnce(&mut RaftState) + Send + 'static) -> io::Result<()> {
        let shared = self.0.clone();
        blocking(move || {
            let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            let mut next = state.clone();
            change(&mut next);
            let bytes = serde_json::to_vec(&next).map_err(other)?;
            fjord_log::storage::write_atomic(
                &*shared.storage,
                &shared.dir,
                RAFT_STATE_FILE,
                &bytes,
            )
            .map_err(other)?;
            *state = next;
            Ok(())
        })
        .await
    }

    /// The entries with indexes in `from..to` that the log holds.
    fn entries(shared: &Shared, from: u64, to: u64) -> io::Result<Vec<Entry>> {
        let log = &shared.log;
        let as_offset = |i: u64| i64::try_from(i).unwrap_or(i64::MAX);
        let start = as_offset(from).max(log.log_start_offset());
        let end = as_offset(to).min(log.log_end_offset());
        let mut out = Vec::new();
        let mut offset = start;
        while offset < end {
            let read = log
                .read(offset, 1 << 20, ReadUpTo::LogEnd, true)
                .map_err(other)?;
            let Some(slice) = read.data else { break };
            let bytes = slice.read()?;
            for batch in split_batches(&bytes) {
                let batch = batch.map_err(other)?;
                let header = validate_batch(batch).map_err(other)?;
                if header.base_offset < offset || header.base_offset >= end {
                    continue;
                }
                let records = Records::decode(batch, MAX_ENTRY_BYTES).map_err(other)?;
                for r in records.iter() {
                    let r = r.map_err(other)?;
                    let entry: Entry = serde_json::from_slice(r.value.unwrap_or_default())
                        .map_err(|e| other(format!("raft entry at {}: {e}", header.base_offset)))?;
                    if entry.index() != header.base_offset as u64 {
                        return Err(other(format!(
                            "raft entry {} is stored at offset {}",
                            entry.index(),
                            header.base_offset
                        )));
                    }
                    out.push(entry);
                }
            }
            offset = slice.next_offset;
        }
        Ok(out)
    }
}

use crate::runtime::blocking;

/// Moves the log start to `start`, emptying the log when it is past the end (a snapshot
/// installed beyond what this node had).
fn move_start(log: &Log, start: i64) -> io::Result<()> {
    if start > log.log_end_offset() {
        log.truncate_fully_and_start_at(start).map_err(other)?;
    } else {
        log.set_high_watermark(log.log_end_offset())
            .map_err(other)?;
        log.advance_log_start_offset(start).map_err(other)?;
    }
    Ok(())
}

fn range_of(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i + 1,
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(&i) => i + 1,
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (from, to) = range_of(&range);
        let shared = self.0.clone();
        blocking(move || Self::entries(&shared, from, to)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.state().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged = self.state().last_purged;
        let shared = self.0.clone();
        let last = blocking(move || {
            let end = shared.log.log_end_offset();
            if end <= shared.log.log_start_offset() {
                return Ok(None);
            }
            Ok(Self::entries(&shared, end as u64 - 1, end as u64)?
                .pop()
                .map(|e| e.log_id()))
        })
        .await?;
        Ok(LogState {
            last_log_id: last.or(last_purged),
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let vote = *vote;
        self.update(move |s| s.vote = Some(vote)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.update(move |s| s.committed = committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.state().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let shared = self.0.clone();
        let result = blocking(move || {
            let log = &shared.log;
            for entry in &entries {
                let index = entry.index() as i64;
                let end = log.log_end_offset();
                if index != end {
                    if end == log.log_start_offset() && index > end {
                        // An empty log (all purged) continues where the entries start.
                        log.truncate_fully_and_start_at(index).map_err(other)?;
                    } else {
                        return Err(other(format!(
                            "raft entry {index} does not continue the log, which ends at {end}"
                        )));
                    }
                }
                let value = serde_json::to_vec(entry).map_err(other)?;
                let mut builder = BatchBuilder::new(Compression::None);
                builder.push(0, None, Some(&value));
                let mut batch = builder.build().map_err(other)?;
                // The entry's index as the batch's base offset (bytes 0..8, outside the CRC),
                // kept by a replica append; the term as its leader epoch (bytes 12..16), for
                // tools that read it.
                batch[0..8].copy_from_slice(&index.to_be_bytes());
                let term = i32::try_from(entry.log_id().leader_id.term).unwrap_or(i32::MAX);
                batch[12..16].copy_from_slice(&term.to_be_bytes());
                log.append(&batch, AppendOrigin::Replica, 0)
                    .map_err(other)?;
            }
            log.sync().map_err(other)?;
            log.set_high_watermark(log.log_end_offset())
                .map_err(other)?;
            Ok(())
        })
        .await;
        match result {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(other(&e)));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        let shared = self.0.clone();
        let keep = last.map_or(0, |l| l.index + 1) as i64;
        blocking(move || {
            if keep < shared.log.log_end_offset() {
                shared.log.truncate_to(keep).map_err(other)?;
            }
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // The id first: after a crash the start is moved again on open.
        self.update(move |s| s.last_purged = Some(log_id)).await?;
        let shared = self.0.clone();
        blocking(move || move_start(&shared.log, log_id.index as i64 + 1)).await
    }
}
