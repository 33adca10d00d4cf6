//! The transaction coordinator's state machine (Kafka's `TransactionCoordinator` with
//! transactions v1), pure: the broker persists each returned state in `__transaction_state`
//! before acting on it, writes the markers, and feeds `now` in.
//!
//! One [`TxnMetadata`] per transactional id. States follow Kafka: `Empty` → `Ongoing` (first
//! AddPartitionsToTxn / AddOffsetsToTxn) → `PrepareCommit`/`PrepareAbort` (EndTxn, timeout,
//! or fencing by a new producer) → `CompleteCommit`/`CompleteAbort` once every marker is
//! written → `Ongoing` again with the next transaction.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::codes;
use crate::wire::{Reader, Writer};

/// Kafka's transaction states (the names `ListTransactions` and `DescribeTransactions` use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
}

impl TxnState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Ongoing => "Ongoing",
            Self::PrepareCommit => "PrepareCommit",
            Self::PrepareAbort => "PrepareAbort",
            Self::CompleteCommit => "CompleteCommit",
            Self::CompleteAbort => "CompleteAbort",
            Self::Dead => "Dead",
        }
    }

    pub fn is_prepare(self) -> bool {
        matches!(self, Self::PrepareCommit | Self::PrepareAbort)
    }

    fn is_settled(self) -> bool {
        matches!(
            self,
            Self::Empty | Self::CompleteCommit | Self::CompleteAbort | Self::Dead
        )
    }
}

/// Everything the coordinator knows of one transactional id; also the stored value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    /// The producer id before the last one (after an epoch overflow), or -1.
    pub last_producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump, or -1 (lets a retried InitProducerId be recognised).
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// Partitions in the transaction, topic → partitions.
    pub partitions: BTreeMap<String, BTreeSet<i32>>,
    /// When the current transaction started (-1 when none).
    pub txn_start_ms: i64,
    pub last_update_ms: i64,
}

impl TxnMetadata {
    /// Every partition of the transaction.
    pub fn partition_list(&self) -> Vec<(String, i32)> {
        self.partitions
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .collect()
    }

    pub fn contains(&self, topic: &str, partition: i32) -> bool {
        self.partitions
            .get(topic)
            .is_some_and(|ps| ps.contains(&partition))
    }

    /// Moves to the next epoch, or to a fresh producer id when the epoch is exhausted.
    fn bump_epoch(&mut self, allocate: &mut dyn FnMut() -> i64) {
        self.last_producer_epoch = self.producer_epoch;
        if self.producer_epoch >= i16::MAX - 1 {
            self.last_producer_id = self.producer_id;
            self.producer_id = allocate();
            self.producer_epoch = 0;
        } else {
            self.producer_epoch += 1;
        }
    }

    fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), i16> {
        if producer_id != self.producer_id {
            return Err(codes::INVALID_PRODUCER_ID_MAPPING);
        }
        if epoch != self.producer_epoch {
            return Err(codes::PRODUCER_FENCED);
        }
        Ok(())
    }

    /// The state to store when the transaction's markers are all written.
    pub fn completed(&self, now_ms: i64) -> TxnMetadata {
        let mut m = self.clone();
        m.state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            _ => TxnState::CompleteAbort,
        };
        m.partitions.clear();
        m.txn_start_ms = -1;
        m.last_update_ms = now_ms;
        m
    }

    /// The state that aborts the open transaction and fences its producer (a timeout, or a
    /// new producer with the same transactional id): a bumped epoch in PrepareAbort.
    pub fn fence_and_abort(&self, now_ms: i64, allocate: &mut dyn FnMut() -> i64) -> TxnMetadata {
        let mut m = self.clone();
        // The markers go out with the new epoch so the old producer's writes are refused.
        if m.producer_epoch < i16::MAX - 1 {
            m.last_producer_epoch = m.producer_epoch;
            m.producer_epoch += 1;
        } else {
            m.bump_epoch(allocate);
        }
        m.state = TxnState::PrepareAbort;
        m.last_update_ms = now_ms;
        m
    }
}

/// What InitProducerId asks the broker to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitStep {
    /// Store this metadata and answer with its producer id and epoch.
    Ready(TxnMetadata),
    /// A retry of a completed InitProducerId: answer with this, nothing to store.
    Unchanged(TxnMetadata),
    /// The previous producer left a transaction open: store this PrepareAbort state, write
    /// its abort markers, complete it, then run InitProducerId again.
    AbortFirst(TxnMetadata),
}

/// InitProducerId for a transactional id. `expected` is the producer id and epoch a v3+
/// client sends to recover (KIP-360), `None` for a fresh start.
pub fn init_producer_id(
    current: Option<&TxnMetadata>,
    transactional_id: &str,
    timeout_ms: i32,
    max_timeout_ms: i32,
    expected: Option<(i64, i16)>,
    now_ms: i64,
    allocate: &mut dyn FnMut() -> i64,
) -> Result<InitStep, i16> {
    if timeout_ms <= 0 || timeout_ms > max_timeout_ms {
        return Err(codes::INVALID_TRANSACTION_TIMEOUT);
    }
    let Some(m) = current.filter(|m| m.state != TxnState::Dead) else {
        if expected.is_some() {
            return Err(codes::INVALID_PRODUCER_ID_MAPPING);
        }
        return Ok(InitStep::Ready(TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id: allocate(),
            last_producer_id: -1,
            producer_epoch: 0,
            last_producer_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeMap::new(),
            txn_start_ms: -1,
            last_update_ms: now_ms,
        }));
    };
    if m.state.is_prepare() {
        // Kafka fences a producer whose id is not this transactional id's before it answers
        // that the transaction is still completing.
        let fenced = expected.is_some_and(|(pid, epoch)| {
            m.producer_epoch != -1
                && pid != m.producer_id
                && !(pid == m.last_producer_id && epoch >= i16::MAX - 1)
        });
        return Err(if fenced {
            codes::PRODUCER_FENCED
        } else {
            codes::CONCURRENT_TRANSACTIONS
        });
    }
    if let Some((pid, epoch)) = expected {
        let current_matches = pid == m.producer_id && epoch == m.producer_epoch;
        let previous_id = if m.last_producer_id >= 0 {
            m.last_producer_id
        } else {
            m.producer_id
        };
        // The response to an earlier bump was lost: the client asks again with what it had.
        let is_retry = pid == previous_id && epoch == m.last_producer_epoch && m.state.is_settled();
        if is_retry && !current_matches {
            return Ok(InitStep::Unchanged(m.clone()));
        }
        if !current_matches {
            return Err(codes::PRODUCER_FENCED);
        }
    }
    if m.state == TxnState::Ongoing {
        return Ok(InitStep::AbortFirst(m.fence_and_abort(now_ms, allocate)));
    }
    let mut next = m.clone();
    next.bump_epoch(allocate);
    next.state = TxnState::Empty;
    next.partitions.clear();
    next.timeout_ms = timeout_ms;
    next.txn_start_ms = -1;
    next.last_update_ms = now_ms;
    Ok(InitStep::Ready(next))
}

/// AddPartitionsToTxn (and AddOffsetsToTxn with the group's `__consumer_offsets` partition):
/// the state to store, or `None` when every partition is already in the transaction.
pub fn add_partitions(
    current: Option<&TxnMetadata>,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
    now_ms: i64,
) -> Result<Option<TxnMetadata>, i16> {
    let m = current
        .filter(|m| m.state != TxnState::Dead)
        .ok_or(codes::INVALID_PRODUCER_ID_MAPPING)?;
    m.check_producer(producer_id, epoch)?;
    if m.state.is_prepare() {
        return Err(codes::CONCURRENT_TRANSACTIONS);
    }
    if m.state == TxnState::Ongoing && partitions.iter().all(|(t, p)| m.contains(t, *p)) {
        return Ok(None);
    }
    let mut next = m.clone();
    if next.state != TxnState::Ongoing {
        next.partitions.clear();
        next.txn_start_ms = now_ms;
    }
    next.state = TxnState::Ongoing;
    for (t, p) in partitions {
        next.partitions.entry(t.clone()).or_default().insert(*p);
    }
    next.last_update_ms = now_ms;
    Ok(Some(next))
}

/// What EndTxn asks the broker to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndStep {
    /// Store this Prepare state, write the markers, then store `completed()`.
    Prepare(TxnMetadata),
    /// A retry of an EndTxn that already completed: answer success.
    AlreadyDone,
}

pub fn end_txn(
    current: Option<&TxnMetadata>,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    now_ms: i64,
) -> Result<EndStep, i16> {
    let m = current
        .filter(|m| m.state != TxnState::Dead)
        .ok_or(codes::INVALID_PRODUCER_ID_MAPPING)?;
    // A retry after the epoch moved on in a completed state is still recognised.
    if producer_id == m.producer_id
        && epoch == m.producer_epoch
        && matches!(
            (m.state, commit),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false)
        )
    {
        return Ok(EndStep::AlreadyDone);
    }
    m.check_producer(producer_id, epoch)?;
    match m.state {
        TxnState::Ongoing => {
            let mut next = m.clone();
            next.state = if commit {
                TxnState::PrepareCommit
            } else {
                TxnState::PrepareAbort
            };
            next.last_update_ms = now_ms;
            Ok(EndStep::Prepare(next))
        }
        // A retry while the markers are written waits; the other outcome is not possible any
        // more (Kafka's answers).
        TxnState::PrepareCommit if commit => Err(codes::CONCURRENT_TRANSACTIONS),
        TxnState::PrepareAbort if !commit => Err(codes::CONCURRENT_TRANSACTIONS),
        _ => Err(codes::INVALID_TXN_STATE),
    }
}

/// The schema versions written to `__transaction_state`: TransactionLogKey v0 and
/// TransactionLogValue v0, as Kafka 4 writes them before transaction.version 2.
const TXN_KEY_VERSION: i16 = 0;
const TXN_VALUE_VERSION: i16 = 0;

impl TxnState {
    /// Kafka's id of the state in TransactionLogValue.
    fn id(self) -> i8 {
        match self {
            Self::Empty => 0,
            Self::Ongoing => 1,
            Self::PrepareCommit => 2,
            Self::PrepareAbort => 3,
            Self::CompleteCommit => 4,
            Self::CompleteAbort => 5,
            Self::Dead => 6,
        }
    }

    fn from_id(id: i8) -> Result<Self, String> {
        Ok(match id {
            0 => Self::Empty,
            1 => Self::Ongoing,
            2 => Self::PrepareCommit,
            3 => Self::PrepareAbort,
            4 => Self::CompleteCommit,
            5 => Self::CompleteAbort,
            6 => Self::Dead,
            other => {
                return Err(format!(
                    "transaction state {other} is not one this build reads"
                ));
            }
        })
    }
}

/// The stored record of a transactional id in Kafka's schema (TransactionLogKey /
/// TransactionLogValue v0): its key, and its value (or a tombstone). The previous producer
/// id and epoch are not in v0, as in Kafka.
pub fn txn_record(id: &str, value: Option<&TxnMetadata>) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut key = Writer::new(TXN_KEY_VERSION);
    key.string(id);
    let value = value.map(|m| {
        let mut w = Writer::new(TXN_VALUE_VERSION);
        w.i64(m.producer_id)
            .i16(m.producer_epoch)
            .i32(m.timeout_ms)
            .i8(m.state.id());
        // Kafka writes no partitions (null) for an Empty transaction.
        if m.state == TxnState::Empty {
            w.count(None);
        } else {
            w.count(Some(m.partitions.len()));
            for (topic, partitions) in &m.partitions {
                w.string(topic).count(Some(partitions.len()));
                for &p in partitions {
                    w.i32(p);
                }
            }
        }
        w.i64(m.last_update_ms).i64(m.txn_start_ms);
        w.finish()
    });
    (key.finish(), value)
}

/// Whether a stored key is in the JSON format of Fjord versions before Kafka's schemas.
pub fn is_legacy_txn_key(key: &[u8]) -> bool {
    key.first() == Some(&b'{')
}

/// Decodes a stored record: the transactional id and its state (`None` for a tombstone).
/// Reads Kafka's v0 value and the JSON of earlier Fjord versions.
pub fn decode_txn_record(
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(String, Option<TxnMetadata>), String> {
    if is_legacy_txn_key(key) {
        return decode_legacy_txn_record(key, value);
    }
    let mut k = Reader::new(key);
    let version = k.i16()?;
    if version != TXN_KEY_VERSION {
        return Err(format!(
            "transaction key version {version} is not one this build reads"
        ));
    }
    let id = k.string()?;
    k.done()?;
    let Some(value) = value else {
        return Ok((id, None));
    };
    let mut r = Reader::new(value);
    let version = r.i16()?;
    if version != TXN_VALUE_VERSION {
        return Err(format!(
            "transaction value version {version} is not one this build reads"
        ));
    }
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let state = TxnState::from_id(r.i8()?)?;
    let mut partitions: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for _ in 0..r.count()?.unwrap_or(0) {
        let topic = r.string()?;
        let set = partitions.entry(topic).or_default();
        for _ in 0..r.count()?.unwrap_or(0) {
            set.insert(r.i32()?);
        }
    }
    let last_update_ms = r.i64()?;
    let txn_start_ms = r.i64()?;
    r.done()?;
    Ok((
        id.clone(),
        Some(TxnMetadata {
            transactional_id: id,
            producer_id,
            last_producer_id: -1,
            producer_epoch,
            last_producer_epoch: -1,
            timeout_ms,
            state,
            partitions,
            txn_start_ms,
            last_update_ms,
        }),
    ))
}

/// The JSON records of Fjord versions before Kafka's schemas.
fn decode_legacy_txn_record(
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(String, Option<TxnMetadata>), String> {
    #[derive(Deserialize)]
    struct Key {
        transactional_id: String,
    }
    let key: Key = serde_json::from_slice(key).map_err(|e| format!("bad key: {e}"))?;
    let value = value
        .map(serde_json::from_slice)
        .transpose()
        .map_err(|e| format!("bad value: {e}"))?;
    Ok((key.transactional_id, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc() -> impl FnMut() -> i64 {
        let mut next = 100;
        move || {
            next += 1;
            next
        }
    }

    fn ready(step: InitStep) -> TxnMetadata {
        match step {
            InitStep::Ready(m) => m,
            other => panic!("expected Ready, got {other:?}"),
        }
    }

    #[test]
    fn a_transaction_runs_commits_and_starts_again() {
        let mut a = alloc();
        let m = ready(init_producer_id(None, "t", 60_000, 900_000, None, 0, &mut a).unwrap());
        assert_eq!(
            (m.producer_id, m.producer_epoch, m.state),
            (101, 0, TxnState::Empty)
        );
        let parts = vec![("out".to_string(), 0), ("out".to_string(), 1)];
        let m = add_partitions(Some(&m), 101, 0, &parts, 10)
            .unwrap()
            .unwrap();
        assert_eq!((m.state, m.txn_start_ms), (TxnState::Ongoing, 10));
        assert_eq!(add_partitions(Some(&m), 101, 0, &parts[..1], 11), Ok(None));
        let EndStep::Prepare(p) = end_txn(Some(&m), 101, 0, true, 20).unwrap() else {
            panic!()
        };
        assert_eq!(p.state, TxnState::PrepareCommit);
        assert_eq!(
            add_partitions(Some(&p), 101, 0, &parts, 21),
            Err(codes::CONCURRENT_TRANSACTIONS)
        );
        // While the markers are written: a retried commit waits, an abort is too late, a new
        // producer waits, one with another producer id is fenced (Kafka's answers).
        assert_eq!(
            end_txn(Some(&p), 101, 0, true, 21),
            Err(codes::CONCURRENT_TRANSACTIONS)
        );
        assert_eq!(
            end_txn(Some(&p), 101, 0, false, 21),
            Err(codes::INVALID_TXN_STATE)
        );
        assert_eq!(
            init_producer_id(Some(&p), "t", 60_000, 900_000, None, 21, &mut a),
            Err(codes::CONCURRENT_TRANSACTIONS)
        );
        assert_eq!(
            init_producer_id(Some(&p), "t", 60_000, 900_000, Some((101, 0)), 21, &mut a),
            Err(codes::CONCURRENT_TRANSACTIONS)
        );
        assert_eq!(
            init_producer_id(Some(&p), "t", 60_000, 900_000, Some((7, 0)), 21, &mut a),
            Err(codes::PRODUCER_FENCED)
        );
        let c = p.completed(22);
        assert_eq!((c.state, c.partitions.len()), (TxnState::CompleteCommit, 0));
        assert_eq!(
            end_txn(Some(&c), 101, 0, true, 23),
            Ok(EndStep::AlreadyDone)
        );
        assert_eq!(
            end_txn(Some(&c), 101, 0, false, 23),
            Err(codes::INVALID_TXN_STATE)
        );
        let next = add_partitions(Some(&c), 101, 0, &parts[1..], 30)
            .unwrap()
            .unwrap();
        assert_eq!(
            (next.state, next.partition_list().len()),
            (TxnState::Ongoing, 1)
        );
    }

    #[test]
    fn a_new_producer_fences_the_old_and_aborts_its_transaction() {
        let mut a = alloc();
        let m = ready(init_producer_id(None, "t", 60_000, 900_000, None, 0, &mut a).unwrap());
        let m = add_partitions(Some(&m), 101, 0, &[("out".into(), 0)], 1)
            .unwrap()
            .unwrap();
        let InitStep::AbortFirst(fence) =
            init_producer_id(Some(&m), "t", 60_000, 900_000, None, 2, &mut a).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (fence.state, fence.producer_epoch),
            (TxnState::PrepareAbort, 1)
        );
        let done = fence.completed(3);
        let m2 =
            ready(init_producer_id(Some(&done), "t", 60_000, 900_000, None, 4, &mut a).unwrap());
        assert_eq!((m2.producer_id, m2.producer_epoch), (101, 2));
        // The old producer is fenced everywhere.
        assert_eq!(
            add_partitions(Some(&m2), 101, 0, &[("out".into(), 0)], 5),
            Err(codes::PRODUCER_FENCED)
        );
        assert_eq!(
            end_txn(Some(&m2), 101, 0, true, 5),
            Err(codes::PRODUCER_FENCED)
        );
        // KIP-360: a retry with the previous epoch gets the same answer; a stale one is fenced.
        assert_eq!(
            init_producer_id(Some(&m2), "t", 60_000, 900_000, Some((101, 1)), 6, &mut a),
            Ok(InitStep::Unchanged(m2.clone()))
        );
        assert_eq!(
            init_producer_id(Some(&m2), "t", 60_000, 900_000, Some((101, 0)), 6, &mut a),
            Err(codes::PRODUCER_FENCED)
        );
        let m3 = ready(
            init_producer_id(Some(&m2), "t", 60_000, 900_000, Some((101, 2)), 7, &mut a).unwrap(),
        );
        assert_eq!(m3.producer_epoch, 3);
        assert_eq!(
            init_producer_id(None, "t", 0, 900_000, None, 0, &mut a),
            Err(codes::INVALID_TRANSACTION_TIMEOUT)
        );
    }

    #[test]
    fn epoch_exhaustion_moves_to_a_new_producer_id() {
        let mut a = alloc();
        let mut m = ready(init_producer_id(None, "t", 60_000, 900_000, None, 0, &mut a).unwrap());
        m.producer_epoch = i16::MAX - 1;
        let m = ready(init_producer_id(Some(&m), "t", 60_000, 900_000, None, 1, &mut a).unwrap());
        assert_eq!(
            (m.producer_id, m.producer_epoch, m.last_producer_id),
            (102, 0, 101)
        );
    }

    #[test]
    fn records_round_trip() {
        let mut a = alloc();
        let m = ready(init_producer_id(None, "t", 60_000, 900_000, None, 0, &mut a).unwrap());
        let (k, v) = txn_record("t", Some(&m));
        assert_eq!(
            decode_txn_record(&k, v.as_deref()).unwrap(),
            ("t".to_string(), Some(m.clone()))
        );
        let (k, v) = txn_record("t", None);
        assert_eq!(
            decode_txn_record(&k, v.as_deref()).unwrap(),
            ("t".to_string(), None)
        );
        // Kafka's TransactionLogKey v0 and TransactionLogValue v0, field by field.
        let mut ongoing = m.clone();
        ongoing.state = TxnState::Ongoing;
        ongoing
            .partitions
            .entry("a".into())
            .or_default()
            .extend([1, 0]);
        ongoing.txn_start_ms = 9;
        let (k, v) = txn_record("t", Some(&ongoing));
        assert_eq!(k, [0, 0, 0, 1, b't']);
        let mut want = vec![0, 0];
        want.extend_from_slice(&ongoing.producer_id.to_be_bytes());
        want.extend_from_slice(&ongoing.producer_epoch.to_be_bytes());
        want.extend_from_slice(&60_000i32.to_be_bytes());
        want.push(1); // Ongoing
        want.extend_from_slice(&1i32.to_be_bytes());
        want.extend_from_slice(&[0, 1, b'a']);
        want.extend_from_slice(&2i32.to_be_bytes());
        want.extend_from_slice(&0i32.to_be_bytes());
        want.extend_from_slice(&1i32.to_be_bytes());
        want.extend_from_slice(&ongoing.last_update_ms.to_be_bytes());
        want.extend_from_slice(&9i64.to_be_bytes());
        assert_eq!(v.as_deref(), Some(&want[..]));
        assert_eq!(
            decode_txn_record(&k, v.as_deref()).unwrap(),
            ("t".to_string(), Some(ongoing))
        );
        // The JSON of earlier Fjord versions still reads.
        let legacy_key = br#"{"transactional_id":"t"}"#;
        let legacy_value = serde_json::to_vec(&m).unwrap();
        assert!(is_legacy_txn_key(legacy_key));
        assert_eq!(
            decode_txn_record(legacy_key, Some(&legacy_value)).unwrap(),
            ("t".to_string(), Some(m))
        );
    }
}
