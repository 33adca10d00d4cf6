//! The transaction coordinator: one shard per `__transaction_state` partition holding the
//! transactional ids that hash to it, producer ids from blocks the controller hands out, and
//! the commit/abort markers.
//!
//! Every state change is written to the transactional id's `__transaction_state` partition
//! and committed before it takes effect or is answered. EndTxn writes PrepareCommit or
//! PrepareAbort (the outcome is decided once that is committed), then sends the markers to
//! every partition of the transaction at once, each leader in one request, and waits a
//! bounded time for them: when all are written it stores the Complete state before it
//! answers (one node, a healthy cluster), otherwise it answers success and the markers still
//! missing are sent again in the background ([`TransactionCoordinator::retry_markers`]) until
//! every partition has one, then Complete is stored. Until then the id answers
//! CONCURRENT_TRANSACTIONS, as in Kafka. A coordinator that loads a shard (a restart, or a
//! new leader of its partition) takes over every transaction it finds in Prepare. Operations
//! on one transactional id run one at a time.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fjord_coord::codes;
use fjord_coord::txn::{
    self, EndStep, InitStep, TxnMetadata, TxnState, decode_txn_record, is_legacy_txn_key,
    txn_record,
};
use fjord_record::{BatchBuilder, Compression, Records};

use super::{CoordinatorError, PartitionWriter};
use crate::clock::Clock;
use crate::errors;

pub const TXN_TOPIC: &str = "__transaction_state";
/// Producer ids are reserved in the metadata log this many at a time.
const PRODUCER_ID_BLOCK: i64 = 1000;
/// The most one stored batch may decompress to when a shard replays it.
const MAX_STORED_BATCH: usize = 64 << 20;

/// Hands out blocks of producer ids that are never handed out twice, even across restarts
/// (Kafka's AllocateProducerIds, answered by the controller).
pub trait ProducerIdManager: Send + Sync + std::fmt::Debug + 'static {
    /// A block `[start, end)` of `count` fresh ids. Blocking.
    fn allocate(&self, count: i64) -> Result<(i64, i64), String>;
}

/// One transaction's markers to write: commit or abort, for the partitions still without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Markers {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub coordinator_epoch: i32,
    pub commit: bool,
    pub partitions: Vec<(String, i32)>,
}

/// What became of one partition's marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkerOutcome {
    /// Written and committed, or needs none (the partition no longer exists).
    Done,
    /// Not written this time (no leader, leader unreachable or not answering, too few
    /// in-sync replicas): send it again later.
    Retry(String),
    /// The partition refused it: a newer coordinator or producer epoch wrote there, so this
    /// coordinator stops and the newer one completes the transaction (Kafka's
    /// TRANSACTION_COORDINATOR_FENCED / INVALID_PRODUCER_EPOCH).
    Fenced(String),
}

/// Writes transaction markers: local appends for partitions this broker leads,
/// WriteTxnMarkers to the leaders of the others (one request per leader, all sent at once).
/// Blocking, for at most about `timeout`.
pub trait MarkerWriter: Send + Sync + std::fmt::Debug + 'static {
    /// One outcome per partition of each of `batches`, in their order.
    fn write_markers(&self, batches: &[Markers], timeout: Duration) -> Vec<Vec<MarkerOutcome>>;
}

/// How long EndTxn waits for the markers before it answers and leaves the rest to the
/// background.
const FIRST_MARKERS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one background round of markers may take.
const RETRY_MARKERS_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff between rounds for one transaction: doubles from the first to the last.
const MARKER_BACKOFF_MS: (i64, i64) = (100, 2_000);

/// A transaction in Prepare whose markers are not all written yet.
#[derive(Debug, Clone)]
struct Completing {
    prepare: TxnMetadata,
    coordinator_epoch: i32,
    remaining: Vec<(String, i32)>,
    rounds: u32,
    next_try_ms: i64,
    /// Being sent by a round that began then (a round that never ended — a panic — is taken
    /// over after twice the longest a round takes).
    in_flight: Option<i64>,
    /// A partition fenced this coordinator: nothing more is sent; dropped with the shard.
    fenced: bool,
}

impl Completing {
    fn new(prepare: TxnMetadata, coordinator_epoch: i32, now_ms: i64) -> Self {
        Self {
            remaining: prepare.partition_list(),
            prepare,
            coordinator_epoch,
            rounds: 0,
            next_try_ms: now_ms,
            in_flight: None,
            fenced: false,
        }
    }

    /// Whether `other` tracks the same Prepare state in the same coordinator epoch.
    fn same(&self, other: &Completing) -> bool {
        self.prepare == other.prepare && self.coordinator_epoch == other.coordinator_epoch
    }

    /// Whether a round is sending its markers now (not one that began so long ago it must
    /// have died).
    fn sending(&self, now_ms: i64) -> bool {
        let stuck_ms = 2 * RETRY_MARKERS_TIMEOUT.as_millis() as i64;
        self.in_flight
            .is_some_and(|began| now_ms - began < stuck_ms)
    }

    fn markers(&self) -> Markers {
        Markers {
            producer_id: self.prepare.producer_id,
            producer_epoch: self.prepare.producer_epoch,
            coordinator_epoch: self.coordinator_epoch,
            commit: self.prepare.state == TxnState::PrepareCommit,
            partitions: self.remaining.clone(),
        }
    }

    /// Takes one round's outcomes: keeps the partitions to send again, notes a fence, and
    /// schedules the next round.
    fn record(&mut self, outcomes: Vec<MarkerOutcome>, now_ms: i64) {
        let id = &self.prepare.transactional_id;
        let mut remaining = Vec::new();
        let mut outcomes = outcomes.into_iter();
        for tp in std::mem::take(&mut self.remaining) {
            let outcome = outcomes
                .next()
                .unwrap_or_else(|| MarkerOutcome::Retry("no outcome for it".into()));
            match outcome {
                MarkerOutcome::Done => {}
                MarkerOutcome::Retry(why) => {
                    tracing::debug!(transactional_id = %id, topic = %tp.0, partition = tp.1, why, "a transaction marker will be sent again");
                    remaining.push(tp);
                }
                MarkerOutcome::Fenced(why) => {
                    tracing::info!(transactional_id = %id, topic = %tp.0, partition = tp.1, why, "a partition fenced this coordinator's markers; a newer coordinator completes the transaction");
                    self.fenced = true;
                    remaining.push(tp);
                }
            }
        }
        self.remaining = remaining;
        let (first, last) = MARKER_BACKOFF_MS;
        let backoff = first.saturating_mul(1 << self.rounds.min(16)).min(last);
        self.rounds += 1;
        self.next_try_ms = now_ms + backoff;
        if self.rounds == 5 && !self.remaining.is_empty() {
            tracing::warn!(transactional_id = %id, missing = ?self.remaining, "transaction markers still missing after 5 rounds; retrying until their partitions' leaders take them");
        }
    }
}

/// The broker settings the transaction coordinator follows.
#[derive(Debug, Clone, Copy)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`.
    pub id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub abort_interval_ms: i64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Default)]
struct Ids {
    next: i64,
    end: i64,
}

/// The transactional ids of one `__transaction_state` partition.
#[derive(Debug, Default)]
struct ShardState {
    txns: HashMap<String, TxnMetadata>,
    /// Replayed from the partition.
    loaded: bool,
    /// Unloaded for good (the partition's leadership moved away).
    unloaded: bool,
    /// This broker leads the partition in this leader epoch and is loading it
    /// (COORDINATOR_LOAD_IN_PROGRESS until it has).
    loading: Option<i32>,
    /// The coordinator epoch its markers carry: the partition's leader epoch when it was
    /// loaded, so a partition fences the markers of a deposed coordinator (Kafka's
    /// `coordinatorEpoch`).
    epoch: i32,
}

type Shard = super::Shard<ShardState>;

/// The transaction coordinator of this broker.
#[derive(Debug)]
pub struct TransactionCoordinator {
    writer: Arc<dyn PartitionWriter>,
    clock: Arc<dyn Clock>,
    markers: Arc<dyn MarkerWriter>,
    producer_ids: Arc<dyn ProducerIdManager>,
    config: TxnConfig,
    ids: Mutex<Ids>,
    shards: super::Shards<ShardState>,
    /// One lock per transactional id: its operations run one at a time.
    id_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    last_timeout_check: Mutex<i64>,
    /// Transactions in Prepare whose markers are still being written, by transactional id.
    completing: Mutex<HashMap<String, Completing>>,
    /// Completed transactions, by outcome, and aborts the coordinator decided itself.
    committed: AtomicU64,
    aborted: AtomicU64,
    timed_out: AtomicU64,
}

/// A refused operation: a Kafka error code and what to tell the client.
pub type TxnError = (i16, String);

fn code_message(code: i16) -> String {
    match code {
        codes::PRODUCER_FENCED => {
            "a newer producer with the same transactional.id has fenced this one".into()
        }
        codes::INVALID_PRODUCER_ID_MAPPING => {
            "the producer id does not belong to this transactional.id; call InitProducerId".into()
        }
        codes::CONCURRENT_TRANSACTIONS => "the previous transaction is still completing".into(),
        codes::INVALID_TXN_STATE => "the transaction is not in a state that allows this".into(),
        codes::INVALID_TRANSACTION_TIMEOUT => {
            "transaction.timeout.ms must be positive and at most transaction.max.timeout.ms".into()
        }
        _ => format!("error {code}"),
    }
}

impl TransactionCoordinator {
    pub fn new(
        writer: Arc<dyn PartitionWriter>,
        markers: Arc<dyn MarkerWriter>,
        producer_ids: Arc<dyn ProducerIdManager>,
        clock: Arc<dyn Clock>,
        config: TxnConfig,
    ) -> Self {
        Self {
            writer,
            clock,
            markers,
            producer_ids,
            config,
            ids: Mutex::new(Ids::default()),
            shards: super::Shards::default(),
            id_locks: Mutex::new(HashMap::new()),
            last_timeout_check: Mutex::new(0),
            completing: Mutex::new(HashMap::new()),
            committed: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
        }
    }

    fn id_lock(&self, id: &str) -> Arc<Mutex<()>> {
        lock(&self.id_locks)
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone()
    }

    /// The shard of a transactional id; `None` when `__transaction_state` does not exist and
    /// `create` is false (no transactional id can exist yet).
    fn shard_of(&self, id: &str, create: bool) -> Result<Option<Arc<Shard>>, TxnError> {
        let n = self
            .writer
            .partitions(TXN_TOPIC, create)
            .map_err(|e| coordinator_error(&CoordinatorError::from(&e)))?;
        Ok(n.map(|n| self.shard(fjord_coord::offsets::partition_for(id, n))))
    }

    fn shard(&self, partition: i32) -> Arc<Shard> {
        self.shards.get_or_create(partition, ShardState::default)
    }

    /// Locks a shard, replaying its partition first if it is not loaded.
    fn lock_loaded<'a>(&self, shard: &'a Shard) -> Result<MutexGuard<'a, ShardState>, TxnError> {
        let mut st = lock(&shard.state);
        if st.unloaded {
            return Err((
                errors::NOT_COORDINATOR,
                format!(
                    "{TXN_TOPIC}-{} is not coordinated by this broker",
                    shard.partition
                ),
            ));
        }
        if st.loading.is_some() {
            return Err((
                errors::COORDINATOR_LOAD_IN_PROGRESS,
                format!("{TXN_TOPIC}-{} is loading", shard.partition),
            ));
        }
        if !st.loaded {
            let partition = shard.partition;
            if !self.writer.leads(TXN_TOPIC, partition) {
                // Asked before this broker published the partition, or of the wrong broker.
                return Err((
                    errors::NOT_COORDINATOR,
                    format!("{TXN_TOPIC}-{partition} is not led by this broker"),
                ));
            }
            st.epoch = self.writer.leader_epoch(TXN_TOPIC, partition).unwrap_or(0);
            let mut loaded: HashMap<String, Option<TxnMetadata>> = HashMap::new();
            let mut legacy: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
            let mut native: std::collections::BTreeSet<String> = Default::default();
            self.writer
                .replay(TXN_TOPIC, partition, &mut |batch| {
                    let Ok(records) = Records::decode(batch, MAX_STORED_BATCH) else {
                        return;
                    };
                    for r in records.iter().flatten() {
                        let Some(key) = r.key else { continue };
                        let is_legacy = is_legacy_txn_key(key);
                        if is_legacy {
                            legacy.insert(key.to_vec(), r.value.is_some());
                        }
                        match decode_txn_record(key, r.value) {
                            // A JSON tombstone after the id's record in Kafka's format is
                            // the end of a conversion, not a deletion.
                            Ok((id, None)) if is_legacy && native.contains(&id) => {}
                            Ok((id, value)) => {
                                if !is_legacy {
                                    native.insert(id.clone());
                                }
                                loaded.insert(id, value);
                            }
                            Err(e) => {
                                tracing::warn!(partition, error = %e, "skipping an unreadable {TXN_TOPIC} record")
                            }
                        }
                    }
                })
                .map_err(|e| coordinator_error(&CoordinatorError::from(&e)))?;
            st.txns = loaded
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect();
            legacy.retain(|_, live| *live);
            if !legacy.is_empty() {
                self.convert(partition, &st.txns, legacy.into_keys())?;
            }
            st.loaded = true;
        }
        Ok(st)
    }

    /// Rewrites a partition's transactional ids in Kafka's record format and tombstones the
    /// JSON records of earlier Fjord versions, so compaction drops them. Blocking.
    fn convert(
        &self,
        partition: i32,
        txns: &HashMap<String, TxnMetadata>,
        legacy: impl Iterator<Item = Vec<u8>>,
    ) -> Result<(), TxnError> {
        // The ids in Kafka's format first, then the JSON keys' tombstones, in batches of
        // bounded size; the replay ignores a JSON tombstone for an id a record in Kafka's
        // format already set, so a crash between them loses nothing.
        let mut ids: Vec<&TxnMetadata> = txns.values().collect();
        ids.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        let mut records: Vec<(Vec<u8>, Option<Vec<u8>>)> = ids
            .iter()
            .map(|m| txn_record(&m.transactional_id, Some(m)))
            .collect();
        let converted = records.len();
        records.extend(legacy.map(|key| (key, None)));
        let tombstones = records.len() - converted;
        let batches = super::conversion_batches(records, self.clock.now_ms()).map_err(|e| {
            (
                errors::UNKNOWN_SERVER_ERROR,
                format!("building converted transaction records: {e}"),
            )
        })?;
        let failed = |e: super::WriteError| {
            tracing::error!(partition, error = %e, "could not convert {TXN_TOPIC} records to Kafka's format");
            coordinator_error(&CoordinatorError::from(&e))
        };
        let mut end = 0;
        for batch in &batches {
            end = self
                .writer
                .append(TXN_TOPIC, partition, batch)
                .map_err(failed)?;
        }
        self.writer
            .committed(TXN_TOPIC, partition, end)
            .map_err(failed)?;
        tracing::info!(
            partition,
            records = converted,
            tombstones,
            "converted {TXN_TOPIC} records from Fjord's earlier JSON to Kafka's format"
        );
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<TxnMetadata>, TxnError> {
        match self.shard_of(id, false)? {
            None => Ok(None),
            Some(shard) => Ok(self.lock_loaded(&shard)?.txns.get(id).cloned()),
        }
    }

    /// A fresh producer id. Blocking (a new block may be asked for).
    pub fn next_producer_id(&self) -> Result<i64, TxnError> {
        let mut ids = lock(&self.ids);
        if ids.next >= ids.end {
            let (start, end) = self
                .producer_ids
                .allocate(PRODUCER_ID_BLOCK)
                .map_err(|e| (errors::COORDINATOR_NOT_AVAILABLE, e))?;
            ids.next = start;
            ids.end = end;
        }
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }

    /// Writes a transactional id's state (or tombstone) to its `__transaction_state`
    /// partition and waits until it is committed; only then does `apply` change memory.
    /// A failed write is NOT_COORDINATOR (as Kafka maps storage errors for coordinators)
    /// and changes nothing.
    fn persist(
        &self,
        id: &str,
        value: Option<&TxnMetadata>,
        apply: impl FnOnce(&mut HashMap<String, TxnMetadata>),
    ) -> Result<(), TxnError> {
        let shard = self.shard_of(id, true)?.ok_or_else(|| {
            (
                errors::COORDINATOR_NOT_AVAILABLE,
                format!("{TXN_TOPIC} is missing"),
            )
        })?;
        let (key, value) = txn_record(id, value);
        let mut b = BatchBuilder::new(Compression::None);
        b.push(self.clock.now_ms(), Some(&key), value.as_deref());
        let batch = b.build().map_err(|e| {
            (
                errors::UNKNOWN_SERVER_ERROR,
                format!("building a transaction record: {e}"),
            )
        })?;
        let failed = |e: super::WriteError| {
            let e = CoordinatorError::from(&e);
            tracing::error!(transactional_id = %id, error = %e, "could not store a transaction's state");
            coordinator_error(&e)
        };
        let written = {
            let _st = self.lock_loaded(&shard)?;
            self.writer
                .append(TXN_TOPIC, shard.partition, &batch)
                .map_err(failed)?
        };
        self.writer
            .committed(TXN_TOPIC, shard.partition, written)
            .map_err(failed)?;
        apply(&mut self.lock_loaded(&shard)?.txns);
        Ok(())
    }

    /// Persists `meta`, then makes it the current state.
    fn store(&self, meta: TxnMetadata) -> Result<(), TxnError> {
        let id = meta.transactional_id.clone();
        let value = meta.clone();
        self.persist(&id, Some(&value), |txns| {
            txns.insert(id.clone(), meta);
        })
    }

    /// Stores a Prepare state (the outcome is decided once it is committed), then writes its
    /// markers for at most [`FIRST_MARKERS_TIMEOUT`] and, if all are written, the Complete
    /// state. Markers still missing are left to [`Self::retry_markers`]. The caller holds the
    /// id's lock.
    fn finish(&self, prepare: TxnMetadata) -> Result<(), TxnError> {
        self.store(prepare.clone())?;
        // The epoch of the shard as loaded now: a shard unloaded or loading again (its
        // leadership moved) is NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS, and writes no
        // marker.
        let coordinator_epoch = match self.shard_of(&prepare.transactional_id, false)? {
            Some(shard) => self.lock_loaded(&shard)?.epoch,
            None => 0,
        };
        let id = prepare.transactional_id.clone();
        let now = self.clock.now_ms();
        let mut c = Completing::new(prepare, coordinator_epoch, now);
        // Tracked (as being sent) before the first round, so no other round sends it too.
        c.in_flight = Some(now);
        lock(&self.completing).insert(id.clone(), c.clone());
        let outcomes = self
            .markers
            .write_markers(&[c.markers()], FIRST_MARKERS_TIMEOUT)
            .pop()
            .unwrap_or_default();
        c.record(outcomes, self.clock.now_ms());
        c.in_flight = None;
        if c.remaining.is_empty() {
            let completed = self.complete(&c.prepare);
            if completed.is_ok() {
                self.untrack(&c);
            } else {
                // The next round stores Complete (every marker is written).
                self.track(c);
            }
            return completed;
        }
        tracing::info!(transactional_id = %id, state = c.prepare.state.name(), missing = c.remaining.len(), "transaction decided; its remaining markers are sent in the background");
        self.track(c);
        Ok(())
    }

    /// Keeps `c` for the next rounds, unless what is tracked for its id moved on meanwhile.
    fn track(&self, c: Completing) {
        let mut completing = lock(&self.completing);
        if completing
            .get(&c.prepare.transactional_id)
            .is_some_and(|t| t.same(&c))
        {
            completing.insert(c.prepare.transactional_id.clone(), c);
        }
    }

    /// Stops tracking `c` (its transaction is complete), unless its id tracks another
    /// transaction by now.
    fn untrack(&self, c: &Completing) {
        let mut completing = lock(&self.completing);
        if completing
            .get(&c.prepare.transactional_id)
            .is_some_and(|t| t.same(c))
        {
            completing.remove(&c.prepare.transactional_id);
        }
    }

    /// Stores the Complete state that follows `prepare` (every marker is written). The
    /// caller holds the id's lock.
    fn complete(&self, prepare: &TxnMetadata) -> Result<(), TxnError> {
        let done = prepare.completed(self.clock.now_ms());
        self.store(done.clone())?;
        let counter = if done.state == TxnState::CompleteCommit {
            &self.committed
        } else {
            &self.aborted
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(transactional_id = %done.transactional_id, state = done.state.name(), "transaction completed");
        Ok(())
    }

    /// One background round: sends the missing markers of every transaction whose retry is
    /// due (all leaders at once), and completes those that now have all. A transaction whose
    /// state changed, or whose shard was unloaded or reloaded in another epoch, is dropped
    /// (its new coordinator takes it over). Blocking, for at most about
    /// [`RETRY_MARKERS_TIMEOUT`].
    pub fn retry_markers(&self, now: i64) {
        // Drop what is no longer this coordinator's to complete (checked without holding
        // the map: the check locks shards, which `adopt_prepared` holds before the map).
        let tracked: Vec<(String, i32, TxnMetadata)> = lock(&self.completing)
            .iter()
            .map(|(id, c)| (id.clone(), c.coordinator_epoch, c.prepare.clone()))
            .collect();
        let stale: Vec<(String, i32, TxnMetadata)> = tracked
            .into_iter()
            .filter(|(id, epoch, prepare)| self.current(id, *epoch).as_ref() != Some(prepare))
            .collect();
        let mut due: Vec<Completing> = Vec::new();
        {
            let mut completing = lock(&self.completing);
            for (id, epoch, prepare) in stale {
                if completing.get(&id).is_some_and(|c| {
                    !c.sending(now) && c.coordinator_epoch == epoch && c.prepare == prepare
                }) {
                    completing.remove(&id);
                }
            }
            for c in completing.values_mut() {
                if !c.sending(now) && !c.fenced && c.next_try_ms <= now {
                    c.in_flight = Some(now);
                    due.push(c.clone());
                }
            }
        }
        if due.is_empty() {
            return;
        }
        let batches: Vec<Markers> = due.iter().map(Completing::markers).collect();
        let mut outcomes = self
            .markers
            .write_markers(&batches, RETRY_MARKERS_TIMEOUT)
            .into_iter();
        let now = self.clock.now_ms();
        for mut c in due {
            c.record(outcomes.next().unwrap_or_default(), now);
            c.in_flight = None;
            if !c.remaining.is_empty() {
                self.track(c);
                continue;
            }
            let id = c.prepare.transactional_id.clone();
            let guard = self.id_lock(&id);
            let _serial = lock(&guard);
            if !matches!(self.get(&id), Ok(Some(current)) if current == c.prepare) {
                self.untrack(&c);
                continue;
            }
            match self.complete(&c.prepare) {
                Ok(()) => {
                    self.untrack(&c);
                    tracing::info!(transactional_id = %id, state = c.prepare.state.name(), "completed a transaction whose markers were delayed");
                }
                Err((_, e)) => {
                    tracing::warn!(transactional_id = %id, error = %e, "could not store a completed transaction; trying again");
                    c.next_try_ms = now + MARKER_BACKOFF_MS.1;
                    self.track(c);
                }
            }
        }
    }

    /// A transactional id's state, if this broker coordinates it in shard epoch `epoch`.
    fn current(&self, id: &str, epoch: i32) -> Option<TxnMetadata> {
        let shard = self.shard_of(id, false).ok()??;
        let st = self.lock_loaded(&shard).ok()?;
        (st.epoch == epoch).then(|| st.txns.get(id).cloned())?
    }

    /// Takes over every transaction a loaded shard holds in Prepare (left by a crash or by
    /// the previous coordinator): its markers are sent by the next [`Self::retry_markers`].
    fn adopt_prepared(&self) {
        let now = self.clock.now_ms();
        for shard in self.shards.all() {
            let (epoch, prepared) = match self.lock_loaded(&shard) {
                Ok(st) => (
                    st.epoch,
                    st.txns
                        .values()
                        .filter(|m| m.state.is_prepare())
                        .cloned()
                        .collect::<Vec<_>>(),
                ),
                Err(_) => continue,
            };
            let mut completing = lock(&self.completing);
            for m in prepared {
                let known = completing
                    .get(&m.transactional_id)
                    .is_some_and(|c| c.prepare == m && c.coordinator_epoch == epoch);
                if !known {
                    tracing::info!(transactional_id = %m.transactional_id, state = m.state.name(), "completing a transaction left in Prepare");
                    completing.insert(m.transactional_id.clone(), Completing::new(m, epoch, now));
                }
            }
        }
    }

    /// InitProducerId. Blocking.
    pub fn init_producer_id(
        &self,
        transactional_id: Option<&str>,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), TxnError> {
        let Some(id) = transactional_id else {
            // An idempotent producer always gets a new id (as Kafka does).
            return Ok((self.next_producer_id()?, 0));
        };
        if id.is_empty() {
            return Err((
                errors::INVALID_REQUEST,
                "transactional.id must not be empty".into(),
            ));
        }
        let guard = self.id_lock(id);
        let _serial = lock(&guard);
        loop {
            let current = self.get(id)?;
            let mut failed = None;
            let mut allocate = || match self.next_producer_id() {
                Ok(pid) => pid,
                Err(e) => {
                    failed = Some(e);
                    -1
                }
            };
            let step = txn::init_producer_id(
                current.as_ref(),
                id,
                timeout_ms,
                self.config.max_timeout_ms,
                expected,
                self.clock.now_ms(),
                &mut allocate,
            )
            .map_err(|c| (c, code_message(c)))?;
            if let Some(e) = failed {
                return Err(e);
            }
            match step {
                InitStep::Ready(meta) => {
                    let answer = (meta.producer_id, meta.producer_epoch);
                    self.store(meta)?;
                    return Ok(answer);
                }
                InitStep::Unchanged(meta) => return Ok((meta.producer_id, meta.producer_epoch)),
                InitStep::AbortFirst(fence) => {
                    tracing::info!(transactional_id = %id, producer_id = fence.producer_id, "a new producer fences the old one; aborting its open transaction");
                    self.finish(fence)?;
                }
            }
        }
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn). Blocking.
    pub fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<(), TxnError> {
        let guard = self.id_lock(id);
        let _serial = lock(&guard);
        let current = self.get(id)?;
        match txn::add_partitions(
            current.as_ref(),
            producer_id,
            epoch,
            partitions,
            self.clock.now_ms(),
        ) {
            Ok(Some(next)) => self.store(next),
            Ok(None) => Ok(()),
            Err(c) => Err((c, code_message(c))),
        }
    }

    /// EndTxn. Blocking.
    pub fn end_txn(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), TxnError> {
        let guard = self.id_lock(id);
        let _serial = lock(&guard);
        let current = self.get(id)?;
        match txn::end_txn(
            current.as_ref(),
            producer_id,
            epoch,
            commit,
            self.clock.now_ms(),
        ) {
            Ok(EndStep::AlreadyDone) => Ok(()),
            Ok(EndStep::Prepare(prepare)) => self.finish(prepare),
            Err(c) => Err((c, code_message(c))),
        }
    }

    /// Checks that a transactional write belongs to the producer's open transaction and that
    /// the partition was added to it (KIP-890's verification: no hanging transactions).
    pub fn verify(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), TxnError> {
        let Some(m) = self.get(id)? else {
            return Err((
                codes::INVALID_PRODUCER_ID_MAPPING,
                format!("transactional id {id:?} is unknown; call InitProducerId"),
            ));
        };
        if m.producer_id != producer_id {
            return Err((
                codes::INVALID_PRODUCER_ID_MAPPING,
                code_message(codes::INVALID_PRODUCER_ID_MAPPING),
            ));
        }
        if m.producer_epoch != epoch {
            return Err((
                errors::INVALID_PRODUCER_EPOCH,
                format!(
                    "producer epoch {epoch} is not the current epoch {}: fenced",
                    m.producer_epoch
                ),
            ));
        }
        if m.state.is_prepare() {
            // Completing: the write may belong to the next transaction (retried, as Kafka).
            return Err((
                codes::CONCURRENT_TRANSACTIONS,
                code_message(codes::CONCURRENT_TRANSACTIONS),
            ));
        }
        if m.state != TxnState::Ongoing || !m.contains(topic, partition) {
            return Err((
                codes::INVALID_TXN_STATE,
                format!(
                    "{topic}-{partition} was not added to the transaction; call AddPartitionsToTxn first"
                ),
            ));
        }
        Ok(())
    }

    pub fn describe(&self, id: &str) -> Result<Option<TxnMetadata>, TxnError> {
        self.get(id)
    }

    /// Every transactional id of every loaded shard, by id.
    pub fn list(&self) -> Vec<TxnMetadata> {
        let mut v = Vec::new();
        for shard in self.shards.all() {
            if let Ok(st) = self.lock_loaded(&shard) {
                v.extend(st.txns.values().cloned());
            }
        }
        v.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        v
    }

    /// Transactional ids by state, and transactions completed since start, in Prometheus'
    /// text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let mut by_state: std::collections::BTreeMap<&'static str, u64> = [
            TxnState::Empty,
            TxnState::Ongoing,
            TxnState::PrepareCommit,
            TxnState::PrepareAbort,
            TxnState::CompleteCommit,
            TxnState::CompleteAbort,
        ]
        .into_iter()
        .map(|s| (s.name(), 0))
        .collect();
        for m in self.list() {
            *by_state.entry(m.state.name()).or_default() += 1;
        }
        let _ = writeln!(
            out,
            "# HELP fjord_transactional_ids Transactional ids the coordinator knows, by the state of their transaction.\n# TYPE fjord_transactional_ids gauge"
        );
        for (state, n) in by_state {
            let _ = writeln!(out, "fjord_transactional_ids{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP fjord_transactions_total Transactions completed since start, by outcome (timed_out: aborted by the coordinator after transaction.timeout.ms; also counted as abort).\n# TYPE fjord_transactions_total counter"
        );
        for (outcome, n) in [
            ("commit", self.committed.load(Ordering::Relaxed)),
            ("abort", self.aborted.load(Ordering::Relaxed)),
            ("timed_out", self.timed_out.load(Ordering::Relaxed)),
        ] {
            let _ = writeln!(out, "fjord_transactions_total{{outcome=\"{outcome}\"}} {n}");
        }
    }

    /// Loads every partition of `__transaction_state` that exists and finishes the
    /// transactions a crash left between Prepare and Complete. Blocking; runs after the
    /// group coordinator has loaded (markers for `__consumer_offsets` go through it).
    pub fn load_all(&self) {
        let Ok(Some(n)) = self.writer.partitions(TXN_TOPIC, false) else {
            return;
        };
        let mut ids = 0;
        for partition in (0..n).filter(|&p| self.writer.leads(TXN_TOPIC, p)) {
            if let Ok(st) = self.lock_loaded(&self.shard(partition)) {
                ids += st.txns.len();
            }
        }
        if ids > 0 {
            tracing::info!(
                transactional_ids = ids,
                "restored transaction state from {TXN_TOPIC}"
            );
        }
        self.adopt_prepared();
        self.retry_markers(self.clock.now_ms());
    }

    /// Marks one partition's shard as loading (this broker has just become its leader and
    /// loads it once what the partition holds is committed): its ids are answered
    /// COORDINATOR_LOAD_IN_PROGRESS until [`Self::load`].
    pub fn begin_load(&self, partition: i32, epoch: i32) {
        let shard = self.shard(partition);
        let mut st = lock(&shard.state);
        *st = ShardState::default();
        st.loading = Some(epoch);
    }

    /// Lets one partition's shard load at its first request (this broker leads the partition
    /// and its log is empty and committed: nothing to wait for).
    pub fn load_lazily(&self, partition: i32) {
        let shard = self.shard(partition);
        *lock(&shard.state) = ShardState::default();
    }

    /// Loads one partition's shard begun in leader `epoch` ([`Self::begin_load`]) and
    /// finishes what it left in Prepare, unless a later role change superseded that.
    /// Blocking. On an error the shard is left unloaded, and the next request tries again.
    pub fn load(&self, partition: i32, epoch: i32) -> Result<(), TxnError> {
        let shard = self.shard(partition);
        {
            let mut st = lock(&shard.state);
            // Superseded by a later role change: its own load or unload follows.
            if st.loading != Some(epoch)
                || self.writer.leader_epoch(TXN_TOPIC, partition) != Some(epoch)
            {
                return Ok(());
            }
            *st = ShardState::default();
        }
        drop(self.lock_loaded(&shard)?);
        self.adopt_prepared();
        self.retry_markers(self.clock.now_ms());
        Ok(())
    }

    /// Drops one partition's shard (when this broker stops leading it): its ids are answered
    /// NOT_COORDINATOR until it is loaded again.
    pub fn unload(&self, partition: i32) {
        let shard = self.shard(partition);
        let mut st = lock(&shard.state);
        st.txns.clear();
        st.loaded = false;
        st.unloaded = true;
    }

    /// Forgets one partition's shard (its partition was deleted): callers holding it are
    /// answered NOT_COORDINATOR; the next use starts from an empty shard that loads what the
    /// partition then holds.
    pub fn forget(&self, partition: i32) {
        self.unload(partition);
        self.shards.remove(partition);
    }

    /// Periodic upkeep: aborts transactions past their timeout (fencing their producer, as
    /// Kafka does), takes over transactions in Prepare nobody completes, forgets expired
    /// transactional ids.
    /// Blocking.
    pub fn tick(&self, now: i64) {
        {
            let mut last = lock(&self.last_timeout_check);
            if now - *last < self.config.abort_interval_ms {
                return;
            }
            *last = now;
        }
        // A safety net: every transaction in Prepare is being completed.
        self.adopt_prepared();
        let all = self.list();
        let timed_out = all.iter().filter(|m| {
            m.state == TxnState::Ongoing && now - m.txn_start_ms > i64::from(m.timeout_ms)
        });
        for m in timed_out {
            let id = &m.transactional_id;
            let guard = self.id_lock(id);
            let _serial = lock(&guard);
            let Ok(Some(m)) = self.get(id) else { continue };
            if m.state != TxnState::Ongoing || now - m.txn_start_ms <= i64::from(m.timeout_ms) {
                continue;
            }
            let mut failed = false;
            let mut allocate = || {
                self.next_producer_id().unwrap_or_else(|_| {
                    failed = true;
                    -1
                })
            };
            let fence = m.fence_and_abort(now, &mut allocate);
            if failed {
                continue;
            }
            tracing::info!(transactional_id = %id, producer_id = m.producer_id, timeout_ms = m.timeout_ms, "aborting a transaction past its timeout");
            self.timed_out.fetch_add(1, Ordering::Relaxed);
            let _ = self.finish(fence);
        }
        let expired = all.iter().filter(|m| {
            matches!(
                m.state,
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
            ) && now - m.last_update_ms > self.config.id_expiration_ms
        });
        for m in expired {
            let id = &m.transactional_id;
            let guard = self.id_lock(id);
            let _serial = lock(&guard);
            // Still idle (nothing happened to it since the list was taken)?
            let Ok(Some(current)) = self.get(id) else {
                continue;
            };
            if current != *m {
                continue;
            }
            if self
                .persist(id, None, |txns| {
                    txns.remove(id);
                })
                .is_ok()
            {
                // Forgotten only if nobody else holds or waits for it (this caller's guard
                // and the map's are the only two).
                let mut locks = lock(&self.id_locks);
                if locks.get(id).is_some_and(|l| Arc::strong_count(l) == 2) {
                    locks.remove(id);
                }
                tracing::info!(transactional_id = %id, "transactional id expired");
            }
        }
    }
}

/// A coordinator error as a transaction API reports it.
fn coordinator_error(e: &CoordinatorError) -> TxnError {
    (e.code(), e.to_string())
}
