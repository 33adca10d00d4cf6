//! The group coordinator's runtime: the pure `fjord-coord` state machine behind a lock, the
//! parked JoinGroup/SyncGroup requests it answers later, its timer, its history, and the
//! internal compacted topic `__consumer_offsets` where groups and committed offsets persist.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fjord_coord::group::{
    Config, Coordinator, Effect, GroupRecord, JoinResponse, SyncResponse, Token,
};
use fjord_coord::offsets::{self, Committed, Offsets, StoredRecord};
use fjord_log::{AppendOrigin, ReadUpTo};
use fjord_record::{
    BatchBuilder, BatchHeader, Compression, ControlKind, Records, parse_control_batch,
    split_batches,
};
use tokio::sync::oneshot;

use crate::broker::{Broker, now_ms};
use crate::errors;
use crate::metrics::escape;

/// The internal topic holding groups and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How many history lines each group keeps.
const HISTORY: usize = 200;

enum Waiter {
    Join(oneshot::Sender<JoinResponse>),
    Sync(oneshot::Sender<SyncResponse>),
}

/// One line of a group's rebalance history.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub at_ms: i64,
    pub event: String,
}

/// Group coordination state shared by the handlers.
pub struct Groups {
    coord: Mutex<Coordinator>,
    consumer: Mutex<fjord_coord::consumer::ConsumerGroups>,
    offsets: Mutex<Offsets>,
    waiters: Mutex<HashMap<Token, Waiter>>,
    history: Mutex<HashMap<String, VecDeque<HistoryEntry>>>,
    next_token: AtomicU64,
    /// Serialises writes to `__consumer_offsets` with the state changes they record.
    persist: Mutex<()>,
    pub rebalances: AtomicU64,
    /// Completed rebalances per group.
    rebalances_by_group: Mutex<BTreeMap<String, u64>>,
    /// Offsets committed inside open transactions (TxnOffsetCommit), by producer id; they
    /// become visible when the commit marker reaches their `__consumer_offsets` partition.
    pending_txn: Mutex<HashMap<i64, Vec<PendingOffset>>>,
}

/// An offset committed in a transaction that is not decided yet.
#[derive(Debug, Clone)]
struct PendingOffset {
    /// The `__consumer_offsets` partition it was written to.
    partition: i32,
    group: String,
    topic: String,
    index: i32,
    committed: Committed,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Groups {
    pub fn new(config: Config, consumer: fjord_coord::consumer::Config, seed: u64) -> Self {
        Self {
            coord: Mutex::new(Coordinator::new(config, seed)),
            consumer: Mutex::new(fjord_coord::consumer::ConsumerGroups::new(
                consumer,
                seed.rotate_left(17),
            )),
            offsets: Mutex::new(Offsets::default()),
            waiters: Mutex::new(HashMap::new()),
            history: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            persist: Mutex::new(()),
            rebalances: AtomicU64::new(0),
            rebalances_by_group: Mutex::new(BTreeMap::new()),
            pending_txn: Mutex::new(HashMap::new()),
        }
    }

    pub fn coordinator(&self) -> MutexGuard<'_, Coordinator> {
        lock(&self.coord)
    }

    /// KIP-848 consumer groups.
    pub fn consumer(&self) -> MutexGuard<'_, fjord_coord::consumer::ConsumerGroups> {
        lock(&self.consumer)
    }

    /// Writes a KIP-848 group's current state to `__consumer_offsets`. Blocking.
    pub fn persist_consumer_group(&self, broker: &Broker, group: &str) {
        let snapshot = lock(&self.consumer).snapshot(group);
        let record = offsets::consumer_group_record(group, snapshot.as_ref());
        if let Err(e) = self.write(broker, group, vec![record]) {
            tracing::error!(%group, error = %e, "could not persist consumer group state");
        }
    }

    /// Records a line of a group's history.
    pub fn record(&self, group: &str, event: String) {
        let mut h = lock(&self.history);
        let q = h.entry(group.to_string()).or_default();
        q.push_back(HistoryEntry {
            at_ms: now_ms(),
            event,
        });
        while q.len() > HISTORY {
            q.pop_front();
        }
    }

    pub fn offsets(&self) -> MutexGuard<'_, Offsets> {
        lock(&self.offsets)
    }

    pub fn history(&self, group: &str) -> Vec<HistoryEntry> {
        lock(&self.history)
            .get(group)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn token(&self) -> Token {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    /// Parks a join: returns the token to pass to the coordinator and the receiver.
    pub fn park_join(&self) -> (Token, oneshot::Receiver<JoinResponse>) {
        let (tx, rx) = oneshot::channel();
        let t = self.token();
        lock(&self.waiters).insert(t, Waiter::Join(tx));
        (t, rx)
    }

    pub fn park_sync(&self) -> (Token, oneshot::Receiver<SyncResponse>) {
        let (tx, rx) = oneshot::channel();
        let t = self.token();
        lock(&self.waiters).insert(t, Waiter::Sync(tx));
        (t, rx)
    }

    /// Replays `__consumer_offsets` into the coordinator and the offsets. Blocking.
    pub fn load(&self, broker: &Broker) {
        let now = now_ms();
        let mut groups: BTreeMap<String, Option<GroupRecord>> = BTreeMap::new();
        let mut consumer_groups: BTreeMap<String, Option<fjord_coord::consumer::GroupRecord>> =
            BTreeMap::new();
        let mut offsets = lock(&self.offsets);
        let mut pending = lock(&self.pending_txn);
        broker.replay_topic(OFFSETS_TOPIC, |index, batch| {
            let Ok(header) = BatchHeader::parse(batch) else {
                return;
            };
            if header.is_control() {
                // A transaction's end: its offsets in this partition count or go.
                if let Ok(c) = parse_control_batch(batch) {
                    let commit = c.kind == ControlKind::Commit;
                    for p in take_pending(&mut pending, header.producer_id, index) {
                        if commit {
                            offsets.commit(&p.group, &p.topic, p.index, p.committed);
                        }
                    }
                }
                return;
            }
            let Ok(records) = Records::decode(batch, 64 << 20) else {
                return;
            };
            for r in records.iter().flatten() {
                let Some(key) = r.key else { continue };
                match offsets::decode(key, r.value) {
                    Ok(StoredRecord::Offset {
                        group,
                        topic,
                        partition,
                        value: Some(c),
                    }) if header.is_transactional() => {
                        pending.entry(header.producer_id).or_default().push(
                            PendingOffset {
                                partition: index,
                                group,
                                topic,
                                index: partition,
                                committed: c,
                            },
                        );
                    }
                    Ok(StoredRecord::Offset {
                        group,
                        topic,
                        partition,
                        value: Some(c),
                    }) => offsets.commit(&group, &topic, partition, c),
                    Ok(StoredRecord::Offset {
                        group,
                        topic,
                        partition,
                        value: None,
                    }) => offsets.remove(&group, &topic, partition),
                    Ok(StoredRecord::Group { group, value }) => {
                        groups.insert(group, value);
                    }
                    Ok(StoredRecord::ConsumerGroup { group, value }) => {
                        consumer_groups.insert(group, value);
                    }
                    Err(e) => {
                        tracing::warn!(partition = index, error = %e, "skipping an unreadable __consumer_offsets record")
                    }
                }
            }
        });
        drop(offsets);
        drop(pending);
        let mut coord = lock(&self.coord);
        let mut restored = 0;
        for (_, record) in groups {
            if let Some(record) = record {
                coord.restore(record, now);
                restored += 1;
            }
        }
        let mut consumer = lock(&self.consumer);
        for (_, record) in consumer_groups {
            if let Some(record) = record {
                consumer.restore(record, now);
                restored += 1;
            }
        }
        for g in self.offsets().groups() {
            if !consumer.contains(&g) {
                coord.ensure_group(&g);
            }
        }
        if restored > 0 {
            tracing::info!(
                groups = restored,
                "restored consumer groups from __consumer_offsets"
            );
        }
    }

    /// Carries out effects: persists group records first, then answers parked requests and
    /// records history. Blocking (it may write to the log).
    pub fn apply(&self, broker: &Broker, effects: Vec<Effect>) {
        let mut answers = Vec::new();
        for e in effects {
            match e {
                Effect::Store(record) => {
                    let (key, value) = offsets::group_record(&record.group_id, Some(&record));
                    if let Err(e) = self.write(broker, &record.group_id, vec![(key, value)]) {
                        tracing::error!(group = %record.group_id, error = %e, "could not persist group state");
                    }
                }
                Effect::History {
                    group,
                    at_ms,
                    event,
                } => {
                    if event.starts_with("generation") && event.contains("formed") {
                        self.rebalances.fetch_add(1, Ordering::Relaxed);
                        *lock(&self.rebalances_by_group)
                            .entry(group.clone())
                            .or_default() += 1;
                    }
                    tracing::debug!(%group, %event, "group event");
                    let mut h = lock(&self.history);
                    let q = h.entry(group).or_default();
                    q.push_back(HistoryEntry { at_ms, event });
                    while q.len() > HISTORY {
                        q.pop_front();
                    }
                }
                other => answers.push(other),
            }
        }
        let mut waiters = lock(&self.waiters);
        for a in answers {
            match a {
                Effect::Join(t, r) => {
                    if let Some(Waiter::Join(tx)) = waiters.remove(&t) {
                        let _ = tx.send(r);
                    }
                }
                Effect::Sync(t, r) => {
                    if let Some(Waiter::Sync(tx)) = waiters.remove(&t) {
                        let _ = tx.send(r);
                    }
                }
                _ => {}
            }
        }
    }

    /// Appends records for a group to its `__consumer_offsets` partition and waits for the
    /// fsync. Blocking.
    pub fn write(
        &self,
        broker: &Broker,
        group: &str,
        records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), String> {
        let _serial = lock(&self.persist);
        let partitions = broker.ensure_offsets_topic().map_err(|e| e.message)?;
        let index = offsets::partition_for(group, partitions);
        let p = broker
            .partition(OFFSETS_TOPIC, index)
            .ok_or_else(|| format!("{OFFSETS_TOPIC}-{index} is not open"))?;
        let mut b = BatchBuilder::new(Compression::None);
        let now = now_ms();
        for (k, v) in &records {
            b.push(now, Some(k), v.as_deref());
        }
        let batch = b.build().map_err(|e| e.to_string())?;
        let info = p
            .log
            .append(&batch, AppendOrigin::Internal, now)
            .map_err(|e| e.to_string())?;
        p.log.wait_durable(&info).map_err(|e| e.to_string())?;
        p.advance_high_watermark(info.next_offset());
        Ok(())
    }

    /// Commits offsets durably, then makes them visible. Blocking.
    pub fn commit(
        &self,
        broker: &Broker,
        group: &str,
        entries: Vec<(String, i32, Committed)>,
    ) -> Result<(), String> {
        let records = entries
            .iter()
            .map(|(t, p, c)| offsets::offset_record(group, t, *p, Some(c)))
            .collect();
        self.write(broker, group, records)?;
        let mut o = lock(&self.offsets);
        for (t, p, c) in entries {
            o.commit(group, &t, p, c);
        }
        Ok(())
    }

    /// TxnOffsetCommit: writes the offsets to the group's `__consumer_offsets` partition as
    /// part of the producer's transaction (durably) and holds them until the transaction
    /// ends. Blocking.
    pub fn txn_commit(
        &self,
        broker: &Broker,
        group: &str,
        producer_id: i64,
        epoch: i16,
        entries: Vec<(String, i32, Committed)>,
    ) -> Result<(), fjord_log::LogError> {
        let _serial = lock(&self.persist);
        let partitions =
            broker
                .ensure_offsets_topic()
                .map_err(|e| fjord_log::LogError::Unreadable {
                    path: OFFSETS_TOPIC.into(),
                    reason: e.message,
                })?;
        let index = offsets::partition_for(group, partitions);
        let Some(p) = broker.partition(OFFSETS_TOPIC, index) else {
            return Err(fjord_log::LogError::Unreadable {
                path: OFFSETS_TOPIC.into(),
                reason: format!("{OFFSETS_TOPIC}-{index} is not open"),
            });
        };
        let now = now_ms();
        let mut b = BatchBuilder::new(Compression::None);
        b.transactional = true;
        b.producer_id = producer_id;
        b.producer_epoch = epoch;
        for (t, part, c) in &entries {
            let (k, v) = offsets::offset_record(group, t, *part, Some(c));
            b.push(now, Some(&k), v.as_deref());
        }
        let batch = b.build()?;
        let info = p.log.append(&batch, AppendOrigin::Internal, now)?;
        p.log.wait_durable(&info)?;
        p.advance_high_watermark(info.next_offset());
        let mut pending = lock(&self.pending_txn);
        let list = pending.entry(producer_id).or_default();
        for (topic, part, committed) in entries {
            list.retain(|x| !(x.group == group && x.topic == topic && x.index == part));
            list.push(PendingOffset {
                partition: index,
                group: group.to_string(),
                topic,
                index: part,
                committed,
            });
        }
        Ok(())
    }

    /// A transaction marker reached `__consumer_offsets` partition `partition`: the
    /// producer's offsets held there become visible (commit) or are dropped (abort).
    pub fn complete_txn(&self, partition: i32, producer_id: i64, commit: bool) {
        let done = take_pending(&mut lock(&self.pending_txn), producer_id, partition);
        if commit && !done.is_empty() {
            let mut o = lock(&self.offsets);
            for p in done {
                o.commit(&p.group, &p.topic, p.index, p.committed);
            }
        }
    }

    /// Whether a transaction still holds an undecided offset for this group and partition
    /// (OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT, KIP-447).
    pub fn has_pending_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        lock(&self.pending_txn)
            .values()
            .flatten()
            .any(|p| p.group == group && p.topic == topic && p.index == partition)
    }

    /// Deletes committed offsets (tombstones, then memory). Blocking.
    pub fn delete_offsets(
        &self,
        broker: &Broker,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<(), String> {
        if partitions.is_empty() {
            return Ok(());
        }
        let records = partitions
            .iter()
            .map(|(t, p)| offsets::offset_record(group, t, *p, None))
            .collect();
        self.write(broker, group, records)?;
        let mut o = lock(&self.offsets);
        for (t, p) in partitions {
            o.remove(group, t, *p);
        }
        Ok(())
    }

    /// Deletes an empty group and its offsets. Blocking.
    pub fn delete_group(&self, broker: &Broker, group: &str) -> i16 {
        let code = if lock(&self.consumer).contains(group) {
            lock(&self.consumer).delete(group)
        } else {
            lock(&self.coord).delete(group)
        };
        // A group known only by its committed offsets (never joined) can be deleted too.
        let offsets_only = code == fjord_coord::codes::GROUP_ID_NOT_FOUND
            && !self.offsets().of_group(group).is_empty();
        if code != errors::NONE && !offsets_only {
            return code;
        }
        let offsets: Vec<(String, i32)> = self
            .offsets()
            .of_group(group)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let mut records: Vec<(Vec<u8>, Option<Vec<u8>>)> = offsets
            .iter()
            .map(|(t, p)| offsets::offset_record(group, t, *p, None))
            .collect();
        records.push(offsets::group_record(group, None));
        records.push(offsets::consumer_group_record(group, None));
        if let Err(e) = self.write(broker, group, records) {
            tracing::error!(%group, error = %e, "could not record the group deletion");
            return errors::KAFKA_STORAGE_ERROR;
        }
        lock(&self.offsets).remove_group(group);
        lock(&self.history).remove(group);
        errors::NONE
    }

    /// Prometheus lines for group lag (records and seconds per partition) and rebalances.
    /// Blocking: reads the record at each lagging committed offset for its age.
    pub fn render_metrics(&self, broker: &Broker, out: &mut String) {
        use std::fmt::Write;
        let now = now_ms();
        let groups = self.offsets().groups();
        let _ = writeln!(
            out,
            "# HELP fjord_group_lag_records Records between a group's committed offset and the high watermark.\n# TYPE fjord_group_lag_records gauge"
        );
        let mut ages = Vec::new();
        for g in &groups {
            for ((topic, partition), c) in self.offsets().of_group(g) {
                let Some(p) = broker.partition(&topic, partition) else {
                    continue;
                };
                let end = p.log.high_watermark();
                let lag = (end - c.offset).max(0);
                let _ = writeln!(
                    out,
                    "fjord_group_lag_records{{group=\"{}\",topic=\"{}\",partition=\"{partition}\"}} {lag}",
                    escape(g),
                    escape(&topic)
                );
                let age = if lag == 0 {
                    0.0
                } else {
                    p.log
                        .read(
                            c.offset.max(p.log.log_start_offset()),
                            1,
                            ReadUpTo::HighWatermark,
                            true,
                        )
                        .ok()
                        .and_then(|r| r.data)
                        .and_then(|slice| slice.read().ok())
                        .and_then(|bytes| {
                            let b = split_batches(&bytes).next()?.ok()?;
                            let h = fjord_record::BatchHeader::parse(b).ok()?;
                            let first = Records::decode(b, 64 << 20)
                                .ok()?
                                .iter()
                                .flatten()
                                .find(|r| r.offset(&h) >= c.offset)?
                                .timestamp(&h);
                            Some(((now - first).max(0)) as f64 / 1000.0)
                        })
                        .unwrap_or(0.0)
                };
                ages.push((g.clone(), topic, partition, age));
            }
        }
        let _ = writeln!(
            out,
            "# HELP fjord_group_lag_seconds Age of the oldest record a group has not consumed.\n# TYPE fjord_group_lag_seconds gauge"
        );
        for (g, topic, partition, age) in ages {
            let _ = writeln!(
                out,
                "fjord_group_lag_seconds{{group=\"{}\",topic=\"{}\",partition=\"{partition}\"}} {age}",
                escape(&g),
                escape(&topic)
            );
        }
        let _ = writeln!(
            out,
            "# HELP fjord_group_rebalances_total Generations formed, per group.\n# TYPE fjord_group_rebalances_total counter"
        );
        for (g, n) in lock(&self.rebalances_by_group).iter() {
            let _ = writeln!(
                out,
                "fjord_group_rebalances_total{{group=\"{}\"}} {n}",
                escape(g)
            );
        }
        let states = lock(&self.coord).list();
        let _ = writeln!(
            out,
            "# HELP fjord_groups Consumer groups by state.\n# TYPE fjord_groups gauge"
        );
        let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
        for (_, _, s) in &states {
            *by_state.entry(s.name()).or_default() += 1;
        }
        for (_, s) in lock(&self.consumer).list() {
            *by_state.entry(s).or_default() += 1;
        }
        for (s, n) in by_state {
            let _ = writeln!(out, "fjord_groups{{state=\"{s}\"}} {n}");
        }
    }

    /// Timers: expired sessions, finished join phases, and (with `retention`) offset expiry.
    /// Blocking.
    pub fn tick(&self, broker: &Broker, retention: bool) {
        let now = now_ms();
        let effects = lock(&self.coord).tick(now);
        if !effects.is_empty() {
            self.apply(broker, effects);
        }
        let gone = lock(&self.consumer).tick(now);
        let changed: std::collections::BTreeSet<String> =
            gone.iter().map(|(g, _)| g.clone()).collect();
        for g in changed {
            self.persist_consumer_group(broker, &g);
        }
        for (group, member) in gone {
            self.record(&group, format!("member {member} expired: no heartbeat within the session timeout, or partitions not revoked in time"));
        }
        if retention {
            let retention_ms = broker
                .config
                .offsets_retention_minutes
                .saturating_mul(60_000);
            let gone = {
                let coord = lock(&self.coord);
                let consumer = lock(&self.consumer);
                let empty: BTreeMap<String, bool> = consumer
                    .list()
                    .into_iter()
                    .map(|(g, s)| (g, s == "Empty"))
                    .collect();
                lock(&self.offsets).expire(now, retention_ms, |g| match empty.get(g) {
                    Some(is_empty) => *is_empty,
                    None => coord
                        .state(g)
                        .is_none_or(|s| s == fjord_coord::group::State::Empty),
                })
            };
            let mut by_group: BTreeMap<String, Vec<(String, i32)>> = BTreeMap::new();
            for (g, t, p) in gone {
                by_group.entry(g).or_default().push((t, p));
            }
            for (g, parts) in by_group {
                let records = parts
                    .iter()
                    .map(|(t, p)| offsets::offset_record(&g, t, *p, None))
                    .collect();
                match self.write(broker, &g, records) {
                    Ok(()) => {
                        tracing::info!(group = %g, partitions = parts.len(), "expired committed offsets (offsets.retention.minutes)")
                    }
                    Err(e) => {
                        tracing::error!(group = %g, error = %e, "could not record expired offsets")
                    }
                }
            }
        }
    }
}

/// Shares one `Groups` between the broker and its tasks.
pub type SharedGroups = Arc<Groups>;

/// Removes and returns a producer's pending offsets held in one `__consumer_offsets` partition.
fn take_pending(
    pending: &mut HashMap<i64, Vec<PendingOffset>>,
    producer_id: i64,
    partition: i32,
) -> Vec<PendingOffset> {
    let Some(list) = pending.get_mut(&producer_id) else {
        return Vec::new();
    };
    let (done, keep): (Vec<_>, Vec<_>) = list.drain(..).partition(|p| p.partition == partition);
    if keep.is_empty() {
        pending.remove(&producer_id);
    } else {
        *list = keep;
    }
    done
}
