//! Idempotent and transactional producer state of one partition (Kafka's
//! `ProducerStateManager`), its snapshots, and the aborted-transaction index.
//!
//! Per producer id the partition keeps the epoch, the last five batches' sequence ranges and
//! offsets (so a retried batch is answered with its original offsets instead of being written
//! twice), the coordinator epoch of the last marker, and the first offset of an open
//! transaction. The open transactions bound the last stable offset (LSO).
//!
//! The state changes together with the log: appends are checked against it and applied under
//! the log's lock. It is rebuilt on open from the newest usable snapshot
//! (`{offset:020}.snapshot`: the state after every batch below `offset`) by replaying the batch
//! headers from there to the log end. Snapshots are written when a segment rolls and on close.
//!
//! Aborted transactions are recorded per segment in `{base:020}.txnindex`, Kafka's format:
//! 34-byte entries `version: i16 (0), producer_id: i64, first_offset: i64, last_offset: i64,
//! last_stable_offset: i64`, in the segment that holds the abort marker.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use fjord_record::{BatchHeader, ControlKind, ControlRecord};

use crate::LogError;
use crate::segment;
use crate::storage::Storage;

/// How many batches per producer are remembered for duplicate detection (Kafka's
/// `max.in.flight.requests.per.connection` bound for idempotence).
pub const BATCHES_KEPT: usize = 5;
pub const NO_SEQUENCE: i32 = -1;
pub const NO_EPOCH: i16 = -1;
pub const SNAPSHOT_SUFFIX: &str = ".snapshot";
pub const TXN_INDEX_SUFFIX: &str = ".txnindex";
/// Snapshots kept per partition (the newest ones).
const SNAPSHOTS_KEPT: usize = 3;
const TXN_ENTRY_LEN: usize = 34;

/// One remembered batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// What the partition knows of one producer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub producer_id: i64,
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    pub coordinator_epoch: i32,
    /// First offset of the producer's open transaction in this partition.
    pub txn_first_offset: Option<i64>,
    /// Max timestamp of the producer's last batch (as Kafka reports it).
    pub last_timestamp: i64,
    /// Broker time of the last append, for `producer.id.expiration.ms`.
    pub last_update_ms: i64,
    /// The last offset this producer wrote (data or marker).
    pub last_offset: i64,
}

impl ProducerEntry {
    fn new(producer_id: i64) -> Self {
        Self {
            producer_id,
            epoch: NO_EPOCH,
            batches: VecDeque::new(),
            coordinator_epoch: -1,
            txn_first_offset: None,
            last_timestamp: -1,
            last_update_ms: -1,
            last_offset: -1,
        }
    }

    /// The last sequence number written, or -1.
    pub fn last_sequence(&self) -> i32 {
        self.batches.back().map_or(NO_SEQUENCE, |b| b.last_seq)
    }

    fn set_epoch(&mut self, epoch: i16) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }
}

/// An aborted transaction as the fetch path reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// Offset of the abort marker.
    pub last_offset: i64,
    pub last_stable_offset: i64,
}

/// Why a producer's batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    /// Kafka: OUT_OF_ORDER_SEQUENCE_NUMBER.
    #[error(
        "out-of-order sequence from producer {producer_id} (epoch {epoch}): got {got}, expected {expected}"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        epoch: i16,
        got: i32,
        expected: i32,
    },
    /// Kafka: INVALID_PRODUCER_EPOCH.
    #[error(
        "producer {producer_id} wrote with epoch {epoch}, older than the current epoch {current}: a newer producer has fenced it"
    )]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    /// Kafka: INVALID_TXN_STATE ("Record was not part of an ongoing transaction").
    #[error(
        "producer {producer_id}'s transactional write is not part of an ongoing transaction: the transaction ended while the write was verified"
    )]
    UnverifiedTransaction { producer_id: i64 },
    /// Kafka: TRANSACTION_COORDINATOR_FENCED.
    #[error(
        "marker for producer {producer_id} from coordinator epoch {coordinator_epoch}, older than {current}"
    )]
    CoordinatorFenced {
        producer_id: i64,
        coordinator_epoch: i32,
        current: i32,
    },
}

/// The result of checking an append against the producer state.
#[derive(Debug)]
pub(crate) enum Checked {
    /// A retry of a batch already in the log: answer with its offsets, write nothing.
    Duplicate(BatchMeta),
    /// Write, then apply these changes.
    Apply(Changes),
}

#[derive(Debug, Default)]
pub(crate) struct Changes {
    entries: Vec<ProducerEntry>,
    /// Transactions ended by markers in this append: (producer id, first offset, marker
    /// offset, committed).
    ended: Vec<(i64, i64, i64, bool)>,
}

/// How strictly an append is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// A client's batches: duplicates, epochs and sequences.
    Client,
    /// The broker's own writes (markers, transactional offset commits): epochs only.
    Internal,
    /// Replication and recovery replay: the log is the truth, nothing is refused.
    None,
}

/// The producers of one partition and their open transactions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions by first offset.
    ongoing: BTreeMap<i64, i64>,
}

fn in_sequence(last: i32, next: i32) -> bool {
    next == last.wrapping_add(1) || (next == 0 && last == i32::MAX)
}

fn last_sequence_of(h: &BatchHeader) -> i32 {
    if h.base_sequence < 0 {
        return NO_SEQUENCE;
    }
    // Sequences wrap at i32::MAX back to 0.
    let last = i64::from(h.base_sequence) + i64::from(h.last_offset_delta);
    if last > i64::from(i32::MAX) {
        (last - i64::from(i32::MAX) - 1) as i32
    } else {
        last as i32
    }
}

impl ProducerState {
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn entries(&self) -> impl Iterator<Item = &ProducerEntry> {
        self.producers.values()
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The first offset of the oldest open transaction.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// Checks batches (their offsets already assigned) against the state without changing it.
    pub(crate) fn check(
        &self,
        batches: &[(BatchHeader, Option<ControlRecord>)],
        check: Check,
        now_ms: i64,
    ) -> Result<Checked, ProducerError> {
        let mut touched: Vec<ProducerEntry> = Vec::new();
        let mut ended = Vec::new();
        for (h, control) in batches {
            if h.producer_id < 0 {
                continue;
            }
            let pid = h.producer_id;
            let i = match touched.iter().position(|e| e.producer_id == pid) {
                Some(i) => i,
                None => {
                    let e = self
                        .producers
                        .get(&pid)
                        .cloned()
                        .unwrap_or_else(|| ProducerEntry::new(pid));
                    touched.push(e);
                    touched.len() - 1
                }
            };
            let entry = &mut touched[i];
            if check == Check::Client
                && h.producer_epoch == entry.epoch
                && let Some(dup) = entry
                    .batches
                    .iter()
                    .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_sequence_of(h))
            {
                return Ok(Checked::Duplicate(*dup));
            }
            if check != Check::None && h.producer_epoch < entry.epoch {
                return Err(ProducerError::InvalidProducerEpoch {
                    producer_id: pid,
                    epoch: h.producer_epoch,
                    current: entry.epoch,
                });
            }
            if h.is_control() {
                let Some(control) = control else { continue };
                let commit = match control.kind {
                    ControlKind::Commit => true,
                    ControlKind::Abort => false,
                    ControlKind::Other(_) => continue,
                };
                if check != Check::None && control.coordinator_epoch < entry.coordinator_epoch {
                    return Err(ProducerError::CoordinatorFenced {
                        producer_id: pid,
                        coordinator_epoch: control.coordinator_epoch,
                        current: entry.coordinator_epoch,
                    });
                }
                entry.set_epoch(h.producer_epoch);
                entry.coordinator_epoch = control.coordinator_epoch;
                if let Some(first) = entry.txn_first_offset.take() {
                    ended.push((pid, first, h.base_offset, commit));
                }
                entry.last_offset = h.last_offset();
                entry.last_update_ms = now_ms;
                continue;
            }
            if check == Check::Client {
                if h.producer_epoch != entry.epoch {
                    // A new epoch starts at sequence 0; an unknown producer (its state expired
                    // or its data deleted) is taken at its word.
                    if h.base_sequence != 0 && entry.epoch != NO_EPOCH {
                        return Err(ProducerError::OutOfOrderSequence {
                            producer_id: pid,
                            epoch: h.producer_epoch,
                            got: h.base_sequence,
                            expected: 0,
                        });
                    }
                } else if !in_sequence(entry.last_sequence(), h.base_sequence) {
                    return Err(ProducerError::OutOfOrderSequence {
                        producer_id: pid,
                        epoch: h.producer_epoch,
                        got: h.base_sequence,
                        expected: entry.last_sequence().wrapping_add(1),
                    });
                }
            }
            entry.set_epoch(h.producer_epoch);
            if h.is_transactional() && entry.txn_first_offset.is_none() {
                entry.txn_first_offset = Some(h.base_offset);
            }
            if h.base_sequence >= 0 {
                entry.batches.push_back(BatchMeta {
                    first_seq: h.base_sequence,
                    last_seq: last_sequence_of(h),
                    first_offset: h.base_offset,
                    last_offset: h.last_offset(),
                    max_timestamp: h.max_timestamp,
                });
                while entry.batches.len() > BATCHES_KEPT {
                    entry.batches.pop_front();
                }
            }
            entry.last_timestamp = h.max_timestamp;
            entry.last_offset = h.last_offset();
            entry.last_update_ms = now_ms;
        }
        Ok(Checked::Apply(Changes {
            entries: touched,
            ended,
        }))
    }

    /// Applies checked changes once their batches are written; returns the aborted
    /// transactions to record in the txn index.
    pub(crate) fn apply(&mut self, changes: Changes) -> Vec<AbortedTxn> {
        for entry in changes.entries {
            if let Some(old) = self.producers.get(&entry.producer_id)
                && let Some(first) = old.txn_first_offset
                && entry.txn_first_offset != Some(first)
            {
                self.ongoing.remove(&first);
            }
            if let Some(first) = entry.txn_first_offset {
                self.ongoing.insert(first, entry.producer_id);
            }
            self.producers.insert(entry.producer_id, entry);
        }
        changes
            .ended
            .into_iter()
            .filter(|&(_, _, _, committed)| !committed)
            .map(|(producer_id, first_offset, last_offset, _)| AbortedTxn {
                producer_id,
                first_offset,
                last_offset,
                last_stable_offset: self
                    .first_unstable_offset()
                    .map_or(last_offset + 1, |f| f.min(last_offset + 1)),
            })
            .collect()
    }

    /// Forgets producers idle for `expiration_ms` without an open transaction; returns how
    /// many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || now_ms.saturating_sub(e.last_update_ms) < expiration_ms
        });
        before - self.producers.len()
    }

    /// Forgets producers whose every write lies below the log start offset.
    pub fn evict_below(&mut self, log_start_offset: i64) {
        self.producers
            .retain(|_, e| e.txn_first_offset.is_some() || e.last_offset >= log_start_offset);
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16 + self.producers.len() * 64);
        b.extend_from_slice(b"FJPS");
        b.extend_from_slice(&1u16.to_be_bytes());
        b.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut entries: Vec<&ProducerEntry> = self.producers.values().collect();
        entries.sort_by_key(|e| e.producer_id);
        for e in entries {
            b.extend_from_slice(&e.producer_id.to_be_bytes());
            b.extend_from_slice(&e.epoch.to_be_bytes());
            b.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            b.extend_from_slice(&e.txn_first_offset.unwrap_or(-1).to_be_bytes());
            b.extend_from_slice(&e.last_timestamp.to_be_bytes());
            b.extend_from_slice(&e.last_update_ms.to_be_bytes());
            b.extend_from_slice(&e.last_offset.to_be_bytes());
            b.push(e.batches.len() as u8);
            for m in &e.batches {
                b.extend_from_slice(&m.first_seq.to_be_bytes());
                b.extend_from_slice(&m.last_seq.to_be_bytes());
                b.extend_from_slice(&m.first_offset.to_be_bytes());
                b.extend_from_slice(&m.last_offset.to_be_bytes());
                b.extend_from_slice(&m.max_timestamp.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < 14 || &b[..4] != b"FJPS" {
            return Err("not a producer snapshot".into());
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err("checksum mismatch".into());
        }
        let version = u16::from_be_bytes([body[4], body[5]]);
        if version != 1 {
            return Err(format!("snapshot format version {version} is not 1"));
        }
        let mut r = Reader { b: body, at: 10 };
        let count = u32::from_be_bytes([body[6], body[7], body[8], body[9]]);
        let mut state = Self::default();
        for _ in 0..count {
            let producer_id = r.i64()?;
            let epoch = r.i16()?;
            let coordinator_epoch = r.i32()?;
            let txn_first = r.i64()?;
            let last_timestamp = r.i64()?;
            let last_update_ms = r.i64()?;
            let last_offset = r.i64()?;
            let n = r.u8()?;
            let mut batches = VecDeque::with_capacity(usize::from(n).min(BATCHES_KEPT));
            for _ in 0..n {
                batches.push_back(BatchMeta {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                    max_timestamp: r.i64()?,
                });
            }
            let txn_first_offset = (txn_first >= 0).then_some(txn_first);
            if let Some(first) = txn_first_offset {
                state.ongoing.insert(first, producer_id);
            }
            state.producers.insert(
                producer_id,
                ProducerEntry {
                    producer_id,
                    epoch,
                    batches,
                    coordinator_epoch,
                    txn_first_offset,
                    last_timestamp,
                    last_update_ms,
                    last_offset,
                },
            );
        }
        if r.at != body.len() {
            return Err("trailing bytes".into());
        }
        Ok(state)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let s = self
            .b
            .get(self.at..self.at + N)
            .ok_or_else(|| "truncated".to_string())?;
        self.at += N;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }
    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take()?))
    }
}

/// Snapshot offsets present in `dir`, ascending.
pub(crate) fn list_snapshots(names: &[String]) -> Vec<i64> {
    let mut v: Vec<i64> = names
        .iter()
        .filter_map(|n| segment::parse_base(n, SNAPSHOT_SUFFIX))
        .collect();
    v.sort_unstable();
    v
}

pub(crate) fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(segment::file_name(offset, SNAPSHOT_SUFFIX))
}

pub(crate) fn txn_index_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(segment::file_name(base, TXN_INDEX_SUFFIX))
}

/// Writes the state after every batch below `offset` as a snapshot (atomically, durably) and
/// removes all but the newest few snapshots.
pub(crate) fn write_snapshot(
    storage: &dyn Storage,
    dir: &Path,
    offset: i64,
    state: &ProducerState,
) -> Result<(), LogError> {
    let path = snapshot_path(dir, offset);
    let mut tmp = path.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let file = storage
        .open(&tmp, true)
        .map_err(LogError::io("creating", &tmp))?;
    file.truncate(0).map_err(LogError::io("writing", &tmp))?;
    file.write_at(&state.encode(), 0)
        .map_err(LogError::io("writing", &tmp))?;
    file.sync().map_err(LogError::io("syncing", &tmp))?;
    storage
        .rename(&tmp, &path)
        .map_err(LogError::io("renaming", &tmp))?;
    let names = storage
        .list_dir(dir)
        .map_err(LogError::io("listing", dir))?;
    let snaps = list_snapshots(&names);
    for &old in snaps.iter().rev().skip(SNAPSHOTS_KEPT) {
        let p = snapshot_path(dir, old);
        storage
            .remove_file(&p)
            .map_err(LogError::io("removing", &p))?;
    }
    storage
        .sync_dir(dir)
        .map_err(LogError::io("syncing", dir))?;
    Ok(())
}

/// Loads the newest readable snapshot at or below `max_offset`, deleting those above it (they
/// describe batches a crash took away) and damaged ones.
pub(crate) fn load_snapshot(
    storage: &dyn Storage,
    dir: &Path,
    names: &[String],
    max_offset: i64,
) -> Result<Option<(i64, ProducerState)>, LogError> {
    let mut found = None;
    for offset in list_snapshots(names).into_iter().rev() {
        let path = snapshot_path(dir, offset);
        if offset > max_offset || found.is_some() {
            if offset > max_offset {
                storage
                    .remove_file(&path)
                    .map_err(LogError::io("removing", &path))?;
            }
            continue;
        }
        let file = storage
            .open(&path, false)
            .map_err(LogError::io("opening", &path))?;
        let len = file.len().map_err(LogError::io("reading", &path))?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, 0)
            .map_err(LogError::io("reading", &path))?;
        match ProducerState::decode(&buf) {
            Ok(state) => found = Some((offset, state)),
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "producer snapshot is damaged; using an older one");
                storage
                    .remove_file(&path)
                    .map_err(LogError::io("removing", &path))?;
            }
        }
    }
    Ok(found)
}

/// Reads a segment's aborted-transaction index (a torn last entry is ignored).
pub(crate) fn read_txn_index(
    storage: &dyn Storage,
    dir: &Path,
    base: i64,
) -> Result<Vec<AbortedTxn>, LogError> {
    let path = txn_index_path(dir, base);
    if !storage
        .exists(&path)
        .map_err(LogError::io("checking", &path))?
    {
        return Ok(Vec::new());
    }
    let file = storage
        .open(&path, false)
        .map_err(LogError::io("opening", &path))?;
    let len = file.len().map_err(LogError::io("reading", &path))? as usize;
    let mut buf = vec![0u8; len - len % TXN_ENTRY_LEN];
    file.read_exact_at(&mut buf, 0)
        .map_err(LogError::io("reading", &path))?;
    let i64_at = |c: &[u8], at: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&c[at..at + 8]);
        i64::from_be_bytes(x)
    };
    Ok(buf
        .chunks_exact(TXN_ENTRY_LEN)
        .map(|c| AbortedTxn {
            producer_id: i64_at(c, 2),
            first_offset: i64_at(c, 10),
            last_offset: i64_at(c, 18),
            last_stable_offset: i64_at(c, 26),
        })
        .collect())
}

/// Appends entries to a segment's aborted-transaction index, durably.
pub(crate) fn append_txn_index(
    storage: &dyn Storage,
    dir: &Path,
    base: i64,
    entries: &[AbortedTxn],
) -> Result<(), LogError> {
    let path = txn_index_path(dir, base);
    let file = storage
        .open(&path, true)
        .map_err(LogError::io("creating", &path))?;
    let len = file.len().map_err(LogError::io("reading", &path))?;
    // A torn entry left by a crash is overwritten.
    let at = len - len % TXN_ENTRY_LEN as u64;
    file.write_at(&encode_txn_entries(entries), at)
        .map_err(LogError::io("writing", &path))?;
    file.sync().map_err(LogError::io("syncing", &path))?;
    if at == 0 {
        storage
            .sync_dir(dir)
            .map_err(LogError::io("syncing", dir))?;
    }
    Ok(())
}

fn encode_txn_entries(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(entries.len() * TXN_ENTRY_LEN);
    for e in entries {
        buf.extend_from_slice(&0i16.to_be_bytes());
        buf.extend_from_slice(&e.producer_id.to_be_bytes());
        buf.extend_from_slice(&e.first_offset.to_be_bytes());
        buf.extend_from_slice(&e.last_offset.to_be_bytes());
        buf.extend_from_slice(&e.last_stable_offset.to_be_bytes());
    }
    buf
}

/// Replaces a segment's aborted-transaction index with `entries` (removing it when empty).
pub(crate) fn write_txn_index(
    storage: &dyn Storage,
    dir: &Path,
    base: i64,
    entries: &[AbortedTxn],
) -> Result<(), LogError> {
    let path = txn_index_path(dir, base);
    if entries.is_empty() {
        if storage
            .exists(&path)
            .map_err(LogError::io("checking", &path))?
        {
            storage
                .remove_file(&path)
                .map_err(LogError::io("removing", &path))?;
        }
        return Ok(());
    }
    let file = storage
        .open(&path, true)
        .map_err(LogError::io("creating", &path))?;
    file.truncate(0).map_err(LogError::io("writing", &path))?;
    append_txn_index(storage, dir, base, entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_record::{BatchBuilder, Compression, build_marker, parse_control_batch};

    fn data(pid: i64, epoch: i16, seq: i32, n: usize, offset: i64, txn: bool) -> BatchHeader {
        let mut b = BatchBuilder::new(Compression::None);
        b.producer_id = pid;
        b.producer_epoch = epoch;
        b.base_sequence = seq;
        b.transactional = txn;
        b.base_offset = offset;
        for i in 0..n {
            b.push(i as i64, None, Some(b"v"));
        }
        BatchHeader::parse(&b.build().unwrap()).unwrap()
    }

    fn marker(
        pid: i64,
        epoch: i16,
        commit: bool,
        offset: i64,
    ) -> (BatchHeader, Option<ControlRecord>) {
        let mut m = build_marker(pid, epoch, 0, commit, 5);
        fjord_record::set_base_offset(&mut m, offset);
        (
            BatchHeader::parse(&m).unwrap(),
            Some(parse_control_batch(&m).unwrap()),
        )
    }

    fn append(s: &mut ProducerState, h: BatchHeader) -> Result<Option<BatchMeta>, ProducerError> {
        match s.check(&[(h, None)], Check::Client, 0)? {
            Checked::Duplicate(d) => Ok(Some(d)),
            Checked::Apply(c) => {
                s.apply(c);
                Ok(None)
            }
        }
    }

    #[test]
    fn sequences_duplicates_and_epochs() {
        let mut s = ProducerState::default();
        // An unknown producer is accepted at any sequence.
        assert_eq!(append(&mut s, data(1, 0, 7, 3, 0, false)), Ok(None));
        assert_eq!(s.get(1).unwrap().last_sequence(), 9);
        // A retry of the last batch is a duplicate with the original offsets.
        let dup = append(&mut s, data(1, 0, 7, 3, 50, false))
            .unwrap()
            .unwrap();
        assert_eq!((dup.first_offset, dup.last_offset), (0, 2));
        // A gap is refused; the next sequence is taken.
        assert!(matches!(
            append(&mut s, data(1, 0, 11, 1, 3, false)),
            Err(ProducerError::OutOfOrderSequence { expected: 10, .. })
        ));
        assert_eq!(append(&mut s, data(1, 0, 10, 1, 3, false)), Ok(None));
        // Only five batches are remembered.
        for i in 0..5 {
            append(&mut s, data(1, 0, 11 + i, 1, 4 + i64::from(i), false)).unwrap();
        }
        assert!(append(&mut s, data(1, 0, 10, 1, 20, false)).is_err());
        // A new epoch must start at 0; an old epoch is fenced.
        assert!(matches!(
            append(&mut s, data(1, 1, 5, 1, 20, false)),
            Err(ProducerError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(append(&mut s, data(1, 1, 0, 1, 20, false)), Ok(None));
        assert!(matches!(
            append(&mut s, data(1, 0, 16, 1, 21, false)),
            Err(ProducerError::InvalidProducerEpoch { current: 1, .. })
        ));
        // Sequences wrap at i32::MAX.
        let mut w = ProducerState::default();
        append(&mut w, data(2, 0, i32::MAX - 1, 2, 0, false)).unwrap();
        assert_eq!(w.get(2).unwrap().last_sequence(), i32::MAX);
        assert_eq!(append(&mut w, data(2, 0, 0, 1, 2, false)), Ok(None));
    }

    #[test]
    fn transactions_bound_the_lso_and_aborts_are_recorded() {
        let mut s = ProducerState::default();
        append(&mut s, data(1, 0, 0, 2, 10, true)).unwrap();
        append(&mut s, data(2, 0, 0, 2, 12, true)).unwrap();
        append(&mut s, data(1, 0, 2, 2, 14, true)).unwrap();
        assert_eq!(s.first_unstable_offset(), Some(10));
        let Checked::Apply(c) = s
            .check(&[marker(1, 0, false, 16)], Check::Internal, 0)
            .unwrap()
        else {
            panic!()
        };
        let aborted = s.apply(c);
        assert_eq!(
            aborted,
            vec![AbortedTxn {
                producer_id: 1,
                first_offset: 10,
                last_offset: 16,
                last_stable_offset: 12
            }]
        );
        assert_eq!(s.first_unstable_offset(), Some(12));
        let Checked::Apply(c) = s
            .check(&[marker(2, 0, true, 17)], Check::Internal, 0)
            .unwrap()
        else {
            panic!()
        };
        assert!(s.apply(c).is_empty());
        assert_eq!(s.first_unstable_offset(), None);
        // A marker from an older producer epoch is refused.
        append(&mut s, data(3, 2, 0, 1, 18, true)).unwrap();
        assert!(
            s.check(&[marker(3, 1, false, 19)], Check::Internal, 0)
                .is_err()
        );
    }

    #[test]
    fn snapshot_round_trip_and_expiry() {
        let mut s = ProducerState::default();
        append(&mut s, data(1, 0, 0, 2, 10, true)).unwrap();
        append(&mut s, data(2, 3, 0, 1, 12, false)).unwrap();
        let back = ProducerState::decode(&s.encode()).unwrap();
        assert_eq!(back, s);
        let mut bad = s.encode();
        bad[12] ^= 1;
        assert!(ProducerState::decode(&bad).is_err());
        // An open transaction keeps its producer.
        assert_eq!(s.expire(1_000_000, 10), 1);
        assert!(s.get(1).is_some() && s.get(2).is_none());
    }
}
