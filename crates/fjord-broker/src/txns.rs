//! The transaction coordinator's runtime: producer ids, the `fjord-coord` transaction machine
//! behind a lock, durable state in `__transaction_state`, and the commit/abort markers.
//!
//! Every state change is written to the transactional id's `__transaction_state` partition
//! and fsynced before it takes effect or is answered. EndTxn writes PrepareCommit or
//! PrepareAbort, then a marker to every partition of the transaction (each fsynced), then the
//! Complete state, and only then answers: with one node the markers are local writes, so the
//! client never waits in CONCURRENT_TRANSACTIONS. A crash between Prepare and Complete is
//! finished on the next start (the markers are written again; a second marker for a closed
//! transaction changes nothing). Operations on one transactional id run one at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use fjord_coord::codes;
use fjord_coord::txn::{
    self, EndStep, InitStep, TxnMetadata, TxnState, decode_txn_record, txn_record,
};
use fjord_log::AppendOrigin;
use fjord_record::{BatchBuilder, Compression, Records, build_marker};

use crate::broker::{Broker, now_ms};
use crate::errors;

pub const TXN_TOPIC: &str = "__transaction_state";
/// Producer ids are reserved in the metadata log this many at a time.
const PRODUCER_ID_BLOCK: i64 = 1000;
/// The coordinator epoch written into markers; a single node never changes coordinator.
const COORDINATOR_EPOCH: i32 = 0;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Default)]
struct Ids {
    next: i64,
    end: i64,
}

/// The transaction coordinator of this broker.
#[derive(Debug, Default)]
pub struct Transactions {
    ids: Mutex<Ids>,
    txns: Mutex<HashMap<String, TxnMetadata>>,
    /// One lock per transactional id: its operations run one at a time.
    id_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    last_timeout_check: Mutex<i64>,
    /// Completed transactions, by outcome, and aborts the coordinator decided itself.
    committed: std::sync::atomic::AtomicU64,
    aborted: std::sync::atomic::AtomicU64,
    timed_out: std::sync::atomic::AtomicU64,
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

impl Transactions {
    fn id_lock(&self, id: &str) -> Arc<Mutex<()>> {
        lock(&self.id_locks)
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone()
    }

    fn get(&self, id: &str) -> Option<TxnMetadata> {
        lock(&self.txns).get(id).cloned()
    }

    /// A fresh producer id. Blocking (a new block is recorded in the metadata log).
    pub fn next_producer_id(&self, broker: &Broker) -> Result<i64, TxnError> {
        let mut ids = lock(&self.ids);
        if ids.next >= ids.end {
            let (start, end) = broker
                .allocate_producer_ids(PRODUCER_ID_BLOCK)
                .map_err(|e| (errors::KAFKA_STORAGE_ERROR, e.message))?;
            ids.next = start;
            ids.end = end;
        }
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }

    /// Writes a transactional id's state (or tombstone) to `__transaction_state`, durably.
    fn persist(
        &self,
        broker: &Broker,
        id: &str,
        value: Option<&TxnMetadata>,
    ) -> Result<(), TxnError> {
        let storage = |e: String| {
            (
                errors::COORDINATOR_NOT_AVAILABLE,
                format!("could not store the transaction state: {e}"),
            )
        };
        let partitions = broker
            .ensure_transaction_topic()
            .map_err(|e| storage(e.message))?;
        let index = fjord_coord::offsets::partition_for(id, partitions);
        let p = broker
            .partition(TXN_TOPIC, index)
            .ok_or_else(|| storage(format!("{TXN_TOPIC}-{index} is not open")))?;
        let (key, value) = txn_record(id, value);
        let now = now_ms();
        let mut b = BatchBuilder::new(Compression::None);
        b.push(now, Some(&key), value.as_deref());
        let batch = b.build().map_err(|e| storage(e.to_string()))?;
        let info = p
            .log
            .append(&batch, AppendOrigin::Internal, now)
            .map_err(|e| storage(e.to_string()))?;
        p.log
            .wait_durable(&info)
            .map_err(|e| storage(e.to_string()))?;
        p.advance_high_watermark(info.next_offset());
        Ok(())
    }

    /// Persists `meta`, then makes it the current state.
    fn store(&self, broker: &Broker, meta: TxnMetadata) -> Result<(), TxnError> {
        self.persist(broker, &meta.transactional_id, Some(&meta))?;
        lock(&self.txns).insert(meta.transactional_id.clone(), meta);
        Ok(())
    }

    /// Stores a Prepare state, writes its markers, stores the Complete state.
    fn finish(&self, broker: &Broker, prepare: TxnMetadata) -> Result<TxnMetadata, TxnError> {
        self.store(broker, prepare.clone())?;
        let commit = prepare.state == TxnState::PrepareCommit;
        write_markers(broker, &prepare, commit).map_err(|e| {
            tracing::error!(transactional_id = %prepare.transactional_id, error = %e, "writing transaction markers failed; retrying later");
            (errors::COORDINATOR_NOT_AVAILABLE, e)
        })?;
        let done = prepare.completed(now_ms());
        self.store(broker, done.clone())?;
        let counter = if commit {
            &self.committed
        } else {
            &self.aborted
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(transactional_id = %done.transactional_id, state = done.state.name(), "transaction completed");
        Ok(done)
    }

    /// InitProducerId. Blocking.
    pub fn init_producer_id(
        &self,
        broker: &Broker,
        transactional_id: Option<&str>,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), TxnError> {
        let Some(id) = transactional_id else {
            // An idempotent producer always gets a new id (as Kafka does).
            return Ok((self.next_producer_id(broker)?, 0));
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
            let current = self.get(id);
            let mut failed = None;
            let mut allocate = || match self.next_producer_id(broker) {
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
                broker.config.transaction_max_timeout_ms,
                expected,
                now_ms(),
                &mut allocate,
            )
            .map_err(|c| (c, code_message(c)))?;
            if let Some(e) = failed {
                return Err(e);
            }
            match step {
                InitStep::Ready(meta) => {
                    let answer = (meta.producer_id, meta.producer_epoch);
                    self.store(broker, meta)?;
                    return Ok(answer);
                }
                InitStep::Unchanged(meta) => return Ok((meta.producer_id, meta.producer_epoch)),
                InitStep::AbortFirst(fence) => {
                    tracing::info!(transactional_id = %id, producer_id = fence.producer_id, "a new producer fences the old one; aborting its open transaction");
                    self.finish(broker, fence)?;
                }
            }
        }
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn). Blocking.
    pub fn add_partitions(
        &self,
        broker: &Broker,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<(), TxnError> {
        let guard = self.id_lock(id);
        let _serial = lock(&guard);
        let current = self.get(id);
        match txn::add_partitions(current.as_ref(), producer_id, epoch, partitions, now_ms()) {
            Ok(Some(next)) => self.store(broker, next),
            Ok(None) => Ok(()),
            Err(c) => Err((c, code_message(c))),
        }
    }

    /// EndTxn. Blocking.
    pub fn end_txn(
        &self,
        broker: &Broker,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), TxnError> {
        let guard = self.id_lock(id);
        let _serial = lock(&guard);
        let current = self.get(id);
        match txn::end_txn(current.as_ref(), producer_id, epoch, commit, now_ms()) {
            Ok(EndStep::AlreadyDone) => Ok(()),
            Ok(EndStep::Prepare(prepare)) => self.finish(broker, prepare).map(|_| ()),
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
        let txns = lock(&self.txns);
        let Some(m) = txns.get(id) else {
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

    pub fn describe(&self, id: &str) -> Option<TxnMetadata> {
        self.get(id)
    }

    pub fn list(&self) -> Vec<TxnMetadata> {
        let mut v: Vec<TxnMetadata> = lock(&self.txns).values().cloned().collect();
        v.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        v
    }

    /// Transactional ids by state, and transactions completed since start, in Prometheus'
    /// text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        use std::sync::atomic::Ordering::Relaxed;
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
        for m in lock(&self.txns).values() {
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
            ("commit", self.committed.load(Relaxed)),
            ("abort", self.aborted.load(Relaxed)),
            ("timed_out", self.timed_out.load(Relaxed)),
        ] {
            let _ = writeln!(out, "fjord_transactions_total{{outcome=\"{outcome}\"}} {n}");
        }
    }

    /// Replays `__transaction_state` and finishes transactions a crash left between Prepare
    /// and Complete. Blocking; runs after the group coordinator has loaded.
    pub fn load(&self, broker: &Broker) {
        let mut loaded: HashMap<String, Option<TxnMetadata>> = HashMap::new();
        broker.replay_topic(TXN_TOPIC, |index, batch| {
            let Ok(records) = Records::decode(batch, 64 << 20) else {
                return;
            };
            for r in records.iter().flatten() {
                let Some(key) = r.key else { continue };
                match decode_txn_record(key, r.value) {
                    Ok((id, value)) => {
                        loaded.insert(id, value);
                    }
                    Err(e) => {
                        tracing::warn!(partition = index, error = %e, "skipping an unreadable __transaction_state record")
                    }
                }
            }
        });
        let loaded: HashMap<String, TxnMetadata> = loaded
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        if !loaded.is_empty() {
            tracing::info!(
                transactional_ids = loaded.len(),
                "restored transaction state from __transaction_state"
            );
        }
        *lock(&self.txns) = loaded;
        self.finish_prepared(broker);
    }

    fn finish_prepared(&self, broker: &Broker) {
        let prepared: Vec<TxnMetadata> = lock(&self.txns)
            .values()
            .filter(|m| matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort))
            .cloned()
            .collect();
        for m in prepared {
            let guard = self.id_lock(&m.transactional_id);
            let _serial = lock(&guard);
            if let Some(current) = self.get(&m.transactional_id)
                && current == m
            {
                tracing::info!(transactional_id = %m.transactional_id, state = m.state.name(), "completing a transaction left in Prepare");
                let _ = self.finish(broker, m);
            }
        }
    }

    /// Periodic upkeep: aborts transactions past their timeout (fencing their producer, as
    /// Kafka does), retries unfinished completions, forgets expired transactional ids.
    /// Blocking.
    pub fn tick(&self, broker: &Broker) {
        let now = now_ms();
        {
            let mut last = lock(&self.last_timeout_check);
            if now - *last < broker.config.transaction_abort_interval_ms {
                return;
            }
            *last = now;
        }
        self.finish_prepared(broker);
        let timed_out: Vec<String> = lock(&self.txns)
            .values()
            .filter(|m| {
                m.state == TxnState::Ongoing && now - m.txn_start_ms > i64::from(m.timeout_ms)
            })
            .map(|m| m.transactional_id.clone())
            .collect();
        for id in timed_out {
            let guard = self.id_lock(&id);
            let _serial = lock(&guard);
            let Some(m) = self.get(&id) else { continue };
            if m.state != TxnState::Ongoing || now - m.txn_start_ms <= i64::from(m.timeout_ms) {
                continue;
            }
            let mut failed = false;
            let mut allocate = || {
                self.next_producer_id(broker).unwrap_or_else(|_| {
                    failed = true;
                    -1
                })
            };
            let fence = m.fence_and_abort(now, &mut allocate);
            if failed {
                continue;
            }
            tracing::info!(transactional_id = %id, producer_id = m.producer_id, timeout_ms = m.timeout_ms, "aborting a transaction past its timeout");
            self.timed_out
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = self.finish(broker, fence);
        }
        let expired: Vec<String> = lock(&self.txns)
            .values()
            .filter(|m| {
                matches!(
                    m.state,
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                ) && now - m.last_update_ms > broker.config.transactional_id_expiration_ms
            })
            .map(|m| m.transactional_id.clone())
            .collect();
        for id in expired {
            let guard = self.id_lock(&id);
            let _serial = lock(&guard);
            if self.persist(broker, &id, None).is_ok() {
                lock(&self.txns).remove(&id);
                lock(&self.id_locks).remove(&id);
                tracing::info!(transactional_id = %id, "transactional id expired");
            }
        }
    }
}

/// Writes a commit or abort marker to every partition of the transaction, durably.
fn write_markers(broker: &Broker, meta: &TxnMetadata, commit: bool) -> Result<(), String> {
    let now = now_ms();
    for (topic, index) in meta.partition_list() {
        let Some(p) = broker.partition(&topic, index) else {
            // The topic was deleted since: nothing to mark.
            continue;
        };
        let marker = build_marker(
            meta.producer_id,
            meta.producer_epoch,
            COORDINATOR_EPOCH,
            commit,
            now,
        );
        let info = p
            .log
            .append(&marker, AppendOrigin::Internal, now)
            .map_err(|e| format!("{topic}-{index}: {e}"))?;
        p.log
            .wait_durable(&info)
            .map_err(|e| format!("{topic}-{index}: {e}"))?;
        p.advance_high_watermark(info.next_offset());
        if topic == crate::groups::OFFSETS_TOPIC {
            broker.groups.complete_txn(index, meta.producer_id, commit);
        }
    }
    Ok(())
}
