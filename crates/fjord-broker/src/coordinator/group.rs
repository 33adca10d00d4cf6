//! The group coordinator: one shard per `__consumer_offsets` partition, each holding the
//! classic groups, KIP-848 consumer groups, committed offsets and undecided transactional
//! offsets of the groups that hash to it, plus the JoinGroup/SyncGroup requests parked there.
//!
//! Every operation runs through [`GroupCoordinator::write`] (see the module above for the
//! order it keeps): the pure `fjord-coord` machines change under the shard's lock, the records
//! describing the change are appended before the lock is released, and answers (including the
//! parked requests an operation completes) go out only once those records are committed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fjord_coord::consumer::{ConsumerGroups, HeartbeatRequest, HeartbeatResponse};
use fjord_coord::group::{
    Config, Coordinator, Effect, GroupRecord, JoinRequest, JoinResponse, SyncRequest, SyncResponse,
    Token,
};
use fjord_coord::offsets::{self, Committed, Offsets, StoredRecord};
use fjord_record::{
    BatchBuilder, BatchHeader, Compression, ControlKind, Records, parse_control_batch,
};
use tokio::sync::oneshot;

use super::{CoordinatorError, PartitionWriter};
use crate::clock::Clock;
use crate::errors;

/// The internal topic holding groups and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How many history lines each group keeps.
const HISTORY: usize = 200;
/// The most one stored batch may decompress to when a shard replays it.
const MAX_STORED_BATCH: usize = 64 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A parked JoinGroup or SyncGroup.
enum Waiter {
    Join(oneshot::Sender<JoinResponse>),
    Sync(oneshot::Sender<SyncResponse>),
}

impl Waiter {
    /// Answers the parked request with an error instead.
    fn fail(self, code: i16) {
        match self {
            Self::Join(tx) => {
                let _ = tx.send(JoinResponse {
                    error: code,
                    generation_id: -1,
                    ..JoinResponse::default()
                });
            }
            Self::Sync(tx) => {
                let _ = tx.send(SyncResponse {
                    error: code,
                    ..SyncResponse::default()
                });
            }
        }
    }
}

/// One line of a group's rebalance history.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub at_ms: i64,
    pub event: String,
}

/// An offset committed in a transaction that is not decided yet.
#[derive(Debug, Clone)]
struct PendingOffset {
    group: String,
    topic: String,
    partition: i32,
    committed: Committed,
}

/// The state of one `__consumer_offsets` partition's groups.
pub struct ShardState {
    /// Classic-protocol groups (JoinGroup/SyncGroup).
    pub classic: Coordinator,
    /// KIP-848 consumer groups.
    pub consumer: ConsumerGroups,
    /// Committed offsets of both kinds of group.
    pub offsets: Offsets,
    /// Offsets committed inside open transactions, by producer id; they become visible when
    /// the transaction's commit marker reaches this partition.
    pending_txn: HashMap<i64, Vec<PendingOffset>>,
    waiters: HashMap<Token, Waiter>,
    /// The offset after the last batch appended (or replayed): what a reply waits to see
    /// committed.
    written: i64,
    /// Bumped whenever the state is dropped, so a failed write resets only the state it
    /// wrote into.
    generation: u64,
    /// Replayed from the partition; false after a failed write until the next operation
    /// reloads it.
    loaded: bool,
    /// Unloaded for good (the partition's leadership moved away).
    unloaded: bool,
    /// This broker leads the partition in this leader epoch and is loading it
    /// (COORDINATOR_LOAD_IN_PROGRESS until it has).
    loading: Option<i32>,
}

impl std::fmt::Debug for ShardState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardState")
            .field("written", &self.written)
            .field("generation", &self.generation)
            .field("loaded", &self.loaded)
            .finish_non_exhaustive()
    }
}

impl ShardState {
    /// Whether a transaction still holds an undecided offset for this group and partition
    /// (OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT, KIP-447).
    pub fn has_pending_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.pending_txn
            .values()
            .flatten()
            .any(|p| p.group == group && p.topic == topic && p.partition == partition)
    }

    /// Whether the shard knows the group in any form (membership or offsets).
    pub fn knows_group(&self, group: &str) -> bool {
        self.classic.state(group).is_some()
            || self.consumer.contains(group)
            || !self.offsets.of_group(group).is_empty()
    }

    /// Fails every parked request and forgets them.
    fn fail_waiters(&mut self, code: i16) {
        for (_, w) in self.waiters.drain() {
            w.fail(code);
        }
    }

    /// A producer's undecided offsets in this partition, removed.
    fn take_pending(&mut self, producer_id: i64) -> Vec<PendingOffset> {
        self.pending_txn.remove(&producer_id).unwrap_or_default()
    }

    /// Checks a commit by a group member (or by a tool: empty member id, generation -1) of
    /// either protocol. Refreshes the member's session.
    fn validate_commit(
        &mut self,
        group: &str,
        member: &str,
        instance: Option<&str>,
        generation: i32,
        now: i64,
    ) -> i16 {
        if self.consumer.contains(group) {
            if member.is_empty() && generation < 0 {
                // A tool's commit: only while the group has no members.
                let empty = self
                    .consumer
                    .describe(group)
                    .is_some_and(|d| d.members.is_empty());
                if empty {
                    errors::NONE
                } else {
                    fjord_coord::codes::UNKNOWN_MEMBER_ID
                }
            } else {
                self.consumer.validate_commit(group, member, generation)
            }
        } else {
            self.classic
                .validate_commit(group, member, instance, generation, now)
        }
    }
}

/// What an operation asks the runtime to do once the state has changed.
#[derive(Default)]
struct Writes {
    /// Records for one batch (keys and values; `None` is a tombstone).
    records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Write the records as part of this producer's transaction (id, epoch).
    transactional: Option<(i64, i16)>,
    /// A ready batch (a transaction marker) instead of records.
    batch: Option<Vec<u8>>,
    /// Answers to parked requests.
    answers: Vec<Effect>,
    /// History lines: (group, at, event).
    history: Vec<(String, i64, String)>,
    /// Groups that formed a generation.
    rebalanced: Vec<String>,
}

impl Writes {
    /// Sorts the classic machine's effects: records to store, answers, history.
    fn effects(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Store(record) => {
                    self.records
                        .push(offsets::group_record(&record.group_id, Some(&record)));
                }
                Effect::History {
                    group,
                    at_ms,
                    event,
                } => self.history.push((group, at_ms, event)),
                Effect::Rebalanced { group } => self.rebalanced.push(group),
                answer => self.answers.push(answer),
            }
        }
    }

    /// The batch to append, if the operation wrote anything.
    fn build(&mut self, now: i64) -> Result<Option<Vec<u8>>, CoordinatorError> {
        if let Some(batch) = self.batch.take() {
            return Ok(Some(batch));
        }
        if self.records.is_empty() {
            return Ok(None);
        }
        let mut b = BatchBuilder::new(Compression::None);
        if let Some((producer_id, epoch)) = self.transactional {
            b.transactional = true;
            b.producer_id = producer_id;
            b.producer_epoch = epoch;
        }
        for (k, v) in &self.records {
            b.push(now, Some(k), v.as_deref());
        }
        b.build()
            .map(Some)
            .map_err(|e| CoordinatorError::Unexpected(format!("building a group record: {e}")))
    }
}

type Shard = super::Shard<ShardState>;

/// The group coordinator of this broker.
pub struct GroupCoordinator {
    writer: Arc<dyn PartitionWriter>,
    clock: Arc<dyn Clock>,
    config: Config,
    consumer_config: fjord_coord::consumer::Config,
    seed: u64,
    shards: super::Shards<ShardState>,
    next_token: AtomicU64,
    history: Mutex<HashMap<String, VecDeque<HistoryEntry>>>,
    /// Generations formed, in all and per group.
    pub rebalances: AtomicU64,
    rebalances_by_group: Mutex<BTreeMap<String, u64>>,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator").finish_non_exhaustive()
    }
}

/// Who commits offsets: a member of the group (generation or member epoch), or a tool
/// (empty member id, generation -1).
#[derive(Debug, Clone, Copy)]
pub struct Committer<'a> {
    pub member: &'a str,
    pub instance: Option<&'a str>,
    pub generation: i32,
}

impl GroupCoordinator {
    pub fn new(
        writer: Arc<dyn PartitionWriter>,
        clock: Arc<dyn Clock>,
        config: Config,
        consumer_config: fjord_coord::consumer::Config,
        seed: u64,
    ) -> Self {
        Self {
            writer,
            clock,
            config,
            consumer_config,
            seed,
            shards: super::Shards::default(),
            next_token: AtomicU64::new(1),
            history: Mutex::new(HashMap::new()),
            rebalances: AtomicU64::new(0),
            rebalances_by_group: Mutex::new(BTreeMap::new()),
        }
    }

    fn empty_state(&self, partition: i32) -> ShardState {
        let seed = self.seed ^ (partition as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ShardState {
            classic: Coordinator::new(self.config, seed),
            consumer: ConsumerGroups::new(self.consumer_config, seed.rotate_left(17)),
            offsets: Offsets::default(),
            pending_txn: HashMap::new(),
            waiters: HashMap::new(),
            written: 0,
            generation: 0,
            loaded: false,
            unloaded: false,
            loading: None,
        }
    }

    /// The `__consumer_offsets` partition of a group, creating the topic if needed.
    pub fn partition_for(&self, group: &str) -> Result<i32, CoordinatorError> {
        let n = self
            .writer
            .partitions(OFFSETS_TOPIC, true)
            .map_err(|e| CoordinatorError::from(&e))?
            .ok_or_else(|| CoordinatorError::NotAvailable(format!("{OFFSETS_TOPIC} is missing")))?;
        Ok(offsets::partition_for(group, n))
    }

    /// The shard of `group`; `None` when `__consumer_offsets` does not exist and `create` is
    /// false (no group can exist yet).
    fn shard_of(&self, group: &str, create: bool) -> Result<Option<Arc<Shard>>, CoordinatorError> {
        if group.len() > i16::MAX as usize {
            // Kafka's record keys hold the id with an int16 length.
            return Err(CoordinatorError::Refused {
                code: fjord_coord::codes::INVALID_GROUP_ID,
                message: format!("a group id may be at most {} bytes", i16::MAX),
            });
        }
        let n = self
            .writer
            .partitions(OFFSETS_TOPIC, create)
            .map_err(|e| CoordinatorError::from(&e))?;
        Ok(n.map(|n| self.shard(offsets::partition_for(group, n))))
    }

    fn shard(&self, partition: i32) -> Arc<Shard> {
        self.shards
            .get_or_create(partition, || self.empty_state(partition))
    }

    /// Locks a shard, replaying its partition first if it is not loaded.
    fn lock_loaded<'a>(
        &self,
        shard: &'a Shard,
    ) -> Result<MutexGuard<'a, ShardState>, CoordinatorError> {
        let mut st = lock(&shard.state);
        if st.unloaded {
            return Err(CoordinatorError::NotCoordinator(format!(
                "{OFFSETS_TOPIC}-{} is not coordinated by this broker",
                shard.partition
            )));
        }
        if st.loading.is_some() {
            return Err(CoordinatorError::LoadInProgress);
        }
        if !st.loaded {
            self.load_into(shard.partition, &mut st)?;
        }
        Ok(st)
    }

    /// Rebuilds a shard from what its partition has committed. Blocking.
    fn load_into(&self, partition: i32, st: &mut ShardState) -> Result<(), CoordinatorError> {
        st.fail_waiters(errors::NOT_COORDINATOR);
        if !self.writer.leads(OFFSETS_TOPIC, partition) {
            // Asked before this broker published the partition, or of the wrong broker.
            return Err(CoordinatorError::NotCoordinator(format!(
                "{OFFSETS_TOPIC}-{partition} is not led by this broker"
            )));
        }
        // Writes appended before a reset may still be committing, and their callers will
        // answer success once they are: the replay must include them.
        if st.written > 0 {
            self.writer
                .committed(OFFSETS_TOPIC, partition, st.written)
                .map_err(|e| CoordinatorError::from(&e))?;
        }
        let now = self.clock.now_ms();
        let mut fresh = self.empty_state(partition);
        fresh.generation = st.generation + 1;
        let mut groups: BTreeMap<String, Option<GroupRecord>> = BTreeMap::new();
        let mut consumer_groups: BTreeMap<String, Option<fjord_coord::consumer::GroupRecord>> =
            BTreeMap::new();
        let mut legacy = BTreeMap::new();
        let mut native = BTreeSet::new();
        let mut legacy_txn = HashMap::new();
        let end = self
            .writer
            .replay(OFFSETS_TOPIC, partition, &mut |batch| {
                replay_batch(
                    &mut fresh,
                    &mut Replayed {
                        groups: &mut groups,
                        consumer_groups: &mut consumer_groups,
                        legacy: &mut legacy,
                        native: &mut native,
                        legacy_txn: &mut legacy_txn,
                    },
                    partition,
                    batch,
                )
            })
            .map_err(|e| {
                tracing::error!(partition, error = %e, "could not load a {OFFSETS_TOPIC} partition");
                CoordinatorError::from(&e)
            })?;
        legacy.retain(|_, live| *live);
        let end = if legacy.is_empty() {
            end
        } else {
            self.convert(
                partition,
                &fresh,
                &groups,
                &consumer_groups,
                legacy.into_keys(),
            )?
        };
        let mut restored = 0;
        for record in groups.into_values().flatten() {
            fresh.classic.restore(record, now);
            restored += 1;
        }
        for record in consumer_groups.into_values().flatten() {
            fresh.consumer.restore(record, now);
            restored += 1;
        }
        for g in fresh.offsets.groups() {
            if !fresh.consumer.contains(&g) {
                fresh.classic.ensure_group(&g);
            }
        }
        if restored > 0 {
            tracing::debug!(
                partition,
                groups = restored,
                "loaded consumer groups from {OFFSETS_TOPIC}"
            );
        }
        fresh.written = end;
        fresh.loaded = true;
        *st = fresh;
        Ok(())
    }

    /// Rewrites a partition's state in Kafka's record formats and tombstones the JSON
    /// records of earlier Fjord versions (`legacy` keys still live), so compaction drops
    /// them; returns the offset after the batch. Offsets held for undecided transactions keep
    /// their records. Blocking.
    fn convert(
        &self,
        partition: i32,
        state: &ShardState,
        groups: &BTreeMap<String, Option<GroupRecord>>,
        consumer_groups: &BTreeMap<String, Option<fjord_coord::consumer::GroupRecord>>,
        legacy: impl Iterator<Item = Vec<u8>>,
    ) -> Result<i64, CoordinatorError> {
        // The state in Kafka's formats first, then the tombstones of the JSON keys, in batches
        // of bounded size. A crash between them is safe: the replay ignores a JSON tombstone
        // for what a record in Kafka's format already set, and a load that still finds live
        // JSON records converts again.
        let mut records = Vec::new();
        for group in state.offsets.groups() {
            for ((topic, p), c) in state.offsets.of_group(&group) {
                records.push(offsets::offset_record(&group, &topic, p, Some(&c)));
            }
        }
        for (group, record) in groups {
            if let Some(record) = record {
                records.push(offsets::group_record(group, Some(record)));
            }
        }
        for (group, record) in consumer_groups {
            if let Some(record) = record {
                records.push(offsets::consumer_group_record(group, Some(record)));
            }
        }
        let converted = records.len();
        records.extend(legacy.map(|key| (key, None)));
        let tombstones = records.len() - converted;
        let batches = super::conversion_batches(records, self.clock.now_ms()).map_err(|e| {
            CoordinatorError::Unexpected(format!("building converted records: {e}"))
        })?;
        let failed = |e: super::WriteError| {
            tracing::error!(partition, error = %e, "could not convert {OFFSETS_TOPIC} records to Kafka's format");
            CoordinatorError::from(&e)
        };
        let mut end = 0;
        for batch in &batches {
            end = self
                .writer
                .append(OFFSETS_TOPIC, partition, batch)
                .map_err(failed)?;
        }
        self.writer
            .committed(OFFSETS_TOPIC, partition, end)
            .map_err(failed)?;
        tracing::info!(
            partition,
            records = converted,
            tombstones,
            batches = batches.len(),
            "converted {OFFSETS_TOPIC} records from Fjord's earlier JSON to Kafka's formats"
        );
        Ok(end)
    }

    /// Loads every partition of `__consumer_offsets` that exists (at start-up). Blocking.
    pub fn load_all(&self) {
        let Ok(Some(n)) = self.writer.partitions(OFFSETS_TOPIC, false) else {
            return;
        };
        let mut groups = 0;
        for partition in (0..n).filter(|&p| self.writer.leads(OFFSETS_TOPIC, p)) {
            let shard = self.shard(partition);
            if let Ok(st) = self.lock_loaded(&shard) {
                groups += st.classic.list().len() + st.consumer.list().len();
            }
        }
        if groups > 0 {
            tracing::info!(groups, "restored consumer groups from {OFFSETS_TOPIC}");
        }
    }

    /// Marks one partition's shard as loading (this broker has just become its leader and
    /// loads it once what the partition holds is committed): its requests are answered
    /// COORDINATOR_LOAD_IN_PROGRESS, parked ones NOT_COORDINATOR, until [`Self::load`].
    pub fn begin_load(&self, partition: i32, epoch: i32) {
        let shard = self.shard(partition);
        let mut st = lock(&shard.state);
        st.fail_waiters(errors::NOT_COORDINATOR);
        // A write of an earlier leadership finished under the shard lock before this (a
        // role change takes the lock after the role): nothing written before needs waiting
        // for.
        let generation = st.generation + 1;
        *st = self.empty_state(partition);
        st.generation = generation;
        st.loading = Some(epoch);
    }

    /// Lets one partition's shard load at its first request (this broker leads the partition
    /// and its log is empty and committed: nothing to wait for).
    pub fn load_lazily(&self, partition: i32) {
        let shard = self.shard(partition);
        let mut st = lock(&shard.state);
        st.fail_waiters(errors::NOT_COORDINATOR);
        let generation = st.generation + 1;
        *st = self.empty_state(partition);
        st.generation = generation;
    }

    /// Loads one partition's shard begun in leader `epoch` ([`Self::begin_load`]), unless a
    /// later role change superseded that (then nothing: its own load or unload follows).
    /// Blocking. On an error the shard is left unloaded, and the next request tries again.
    pub fn load(&self, partition: i32, epoch: i32) -> Result<(), CoordinatorError> {
        let shard = self.shard(partition);
        let mut st = lock(&shard.state);
        if st.loading != Some(epoch)
            || self.writer.leader_epoch(OFFSETS_TOPIC, partition) != Some(epoch)
        {
            return Ok(());
        }
        st.unloaded = false;
        st.loading = None;
        self.load_into(partition, &mut st)
    }

    /// Drops one partition's shard (when this broker stops leading it): parked requests are
    /// answered NOT_COORDINATOR and later ones too, until it is loaded again.
    pub fn unload(&self, partition: i32) {
        let shard = self.shard(partition);
        let mut st = lock(&shard.state);
        st.fail_waiters(errors::NOT_COORDINATOR);
        let written = st.written;
        let generation = st.generation + 1;
        *st = self.empty_state(partition);
        st.written = written;
        st.generation = generation;
        st.unloaded = true;
    }

    /// Forgets one partition's shard (its partition was deleted): parked and later callers
    /// holding it are answered NOT_COORDINATOR; the next use of the partition (a new topic of
    /// the same name) starts from an empty shard that loads what the new partition holds.
    pub fn forget(&self, partition: i32) {
        self.unload(partition);
        self.shards.remove(partition);
    }

    fn token(&self) -> Token {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs `op` as the shard's single writer: the state changes and the records that
    /// describe the change are appended under the shard's lock; the answer (and the parked
    /// requests `op` completed) goes out once they are committed. A failed append or commit
    /// drops the shard's state (the next operation replays what was committed) and is
    /// answered with Kafka's coordinator code. An operation that writes nothing still waits
    /// for the writes before it, so it never answers from uncommitted state. Blocking.
    fn write<R>(
        &self,
        shard: &Shard,
        op: impl FnOnce(&mut ShardState, &mut Writes) -> R,
    ) -> Result<R, CoordinatorError> {
        let mut st = self.lock_loaded(shard)?;
        let mut w = Writes::default();
        let r = op(&mut st, &mut w);
        let now = self.clock.now_ms();
        let batch = match w.build(now) {
            Ok(b) => b,
            Err(e) => {
                self.reset(shard.partition, &mut st, &e);
                return Err(e);
            }
        };
        if let Some(batch) = batch {
            match self.writer.append(OFFSETS_TOPIC, shard.partition, &batch) {
                Ok(next) => st.written = next,
                Err(e) => {
                    let e = CoordinatorError::from(&e);
                    self.reset(shard.partition, &mut st, &e);
                    return Err(e);
                }
            }
        }
        let target = st.written;
        let generation = st.generation;
        let mut answers = Vec::new();
        for a in w.answers {
            let token = match &a {
                Effect::Join(t, _) | Effect::Sync(t, _) => *t,
                _ => continue,
            };
            if let Some(waiter) = st.waiters.remove(&token) {
                answers.push((waiter, a));
            }
        }
        drop(st);
        if let Err(e) = self
            .writer
            .committed(OFFSETS_TOPIC, shard.partition, target)
        {
            let e = CoordinatorError::from(&e);
            let mut st = lock(&shard.state);
            if st.generation == generation {
                self.reset(shard.partition, &mut st, &e);
            }
            for (waiter, _) in answers {
                waiter.fail(e.code());
            }
            return Err(e);
        }
        for (waiter, answer) in answers {
            match (waiter, answer) {
                (Waiter::Join(tx), Effect::Join(_, r)) => {
                    let _ = tx.send(r);
                }
                (Waiter::Sync(tx), Effect::Sync(_, r)) => {
                    let _ = tx.send(r);
                }
                (waiter, _) => waiter.fail(errors::UNKNOWN_SERVER_ERROR),
            }
        }
        for group in w.rebalanced {
            self.rebalances.fetch_add(1, Ordering::Relaxed);
            *lock(&self.rebalances_by_group).entry(group).or_default() += 1;
        }
        for (group, at_ms, event) in w.history {
            tracing::debug!(%group, %event, "group event");
            self.push_history(group, at_ms, event);
        }
        Ok(r)
    }

    /// Drops a shard's state after a failed write: what was not committed is forgotten (the
    /// next operation replays the partition), parked requests are answered NOT_COORDINATOR.
    fn reset(&self, partition: i32, st: &mut ShardState, why: &CoordinatorError) {
        tracing::error!(
            partition,
            error = %why,
            "a write to {OFFSETS_TOPIC}-{partition} failed; its groups go back to their last committed state"
        );
        st.fail_waiters(errors::NOT_COORDINATOR);
        st.loaded = false;
        st.generation += 1;
    }

    /// Runs `op` on `group`'s shard; `None` to `op` when no group can exist yet.
    fn with_group<R>(
        &self,
        group: &str,
        create: bool,
        op: impl FnOnce(Option<(&mut ShardState, &mut Writes)>) -> R,
    ) -> Result<R, CoordinatorError> {
        match self.shard_of(group, create)? {
            None => Ok(op(None)),
            Some(shard) => self.write(&shard, |st, w| op(Some((st, w)))),
        }
    }

    /// Reads `group`'s shard as its committed writes left it (`None` when no group can exist
    /// yet). Blocking.
    pub fn read<R>(
        &self,
        group: &str,
        f: impl FnOnce(Option<&ShardState>) -> R,
    ) -> Result<R, CoordinatorError> {
        self.with_group(group, false, |s| f(s.map(|(st, _)| &*st)))
    }

    /// Calls `f` for every loaded shard, in partition order. Blocking.
    pub fn read_all(&self, mut f: impl FnMut(&ShardState)) {
        for shard in self.shards.all() {
            if let Err(e) = self.write(&shard, |st, _| f(st)) {
                tracing::debug!(partition = shard.partition, error = %e, "skipping a group shard");
            }
        }
    }

    /// JoinGroup: the receiver gets the answer when the join phase completes. Blocking.
    pub fn join(
        &self,
        req: JoinRequest,
        now: i64,
    ) -> Result<oneshot::Receiver<JoinResponse>, CoordinatorError> {
        let (tx, rx) = oneshot::channel();
        self.with_group(&req.group_id.clone(), true, |s| {
            let Some((st, w)) = s else { return };
            // A consumer-protocol group with members keeps its protocol.
            let consumer_busy = st
                .consumer
                .describe(&req.group_id)
                .is_some_and(|d| !d.members.is_empty());
            if consumer_busy {
                let _ = tx.send(JoinResponse {
                    error: fjord_coord::codes::INCONSISTENT_GROUP_PROTOCOL,
                    generation_id: -1,
                    member_id: req.member_id.clone(),
                    ..JoinResponse::default()
                });
                return;
            }
            let token = self.token();
            st.waiters.insert(token, Waiter::Join(tx));
            w.effects(st.classic.join(req, token, now));
        })?;
        Ok(rx)
    }

    /// SyncGroup: the receiver gets the member's assignment. Blocking.
    pub fn sync(
        &self,
        req: SyncRequest,
        now: i64,
    ) -> Result<oneshot::Receiver<SyncResponse>, CoordinatorError> {
        let (tx, rx) = oneshot::channel();
        self.with_group(&req.group_id.clone(), true, |s| {
            let Some((st, w)) = s else { return };
            let token = self.token();
            st.waiters.insert(token, Waiter::Sync(tx));
            w.effects(st.classic.sync(req, token, now));
        })?;
        Ok(rx)
    }

    /// Heartbeat of a classic member; its error code. Blocking.
    pub fn heartbeat(
        &self,
        group: &str,
        member: &str,
        instance: Option<&str>,
        generation: i32,
        now: i64,
    ) -> Result<i16, CoordinatorError> {
        self.with_group(group, false, |s| match s {
            None => fjord_coord::codes::UNKNOWN_MEMBER_ID,
            Some((st, _)) => st
                .classic
                .heartbeat(group, member, instance, generation, now),
        })
    }

    /// LeaveGroup for classic members; a code per member. Blocking.
    pub fn leave(
        &self,
        group: &str,
        members: &[(String, Option<String>)],
        now: i64,
    ) -> Result<Vec<i16>, CoordinatorError> {
        self.with_group(group, false, |s| match s {
            None => vec![fjord_coord::codes::UNKNOWN_MEMBER_ID; members.len()],
            Some((st, w)) => {
                let (codes, effects) = st.classic.leave(group, members, now);
                w.effects(effects);
                codes
            }
        })
    }

    /// ConsumerGroupHeartbeat (KIP-848): the member's answer, once any change to the group is
    /// committed. `topics`: partition counts of the topics members may subscribe to.
    /// Blocking.
    pub fn consumer_heartbeat(
        &self,
        req: HeartbeatRequest,
        topics: &BTreeMap<String, i32>,
        now: i64,
    ) -> Result<HeartbeatResponse, CoordinatorError> {
        let group = req.group_id.clone();
        self.with_group(&group.clone(), true, |s| {
            let Some((st, w)) = s else {
                return HeartbeatResponse {
                    error: errors::COORDINATOR_NOT_AVAILABLE,
                    message: Some(format!("{OFFSETS_TOPIC} does not exist")),
                    member_id: req.member_id,
                    member_epoch: -1,
                    heartbeat_interval_ms: 0,
                    assignment: None,
                };
            };
            // A classic group of the same name with members keeps its protocol.
            let classic_busy = st
                .classic
                .describe(&group)
                .is_some_and(|d| !d.members.is_empty());
            if classic_busy {
                return HeartbeatResponse {
                    error: fjord_coord::codes::GROUP_ID_NOT_FOUND,
                    message: Some(format!(
                        "group {group} is a classic group with members; it cannot use the consumer protocol now"
                    )),
                    member_id: req.member_id,
                    member_epoch: -1,
                    heartbeat_interval_ms: 0,
                    assignment: None,
                };
            }
            let joining = req.member_epoch == 0;
            let leaving = req.member_epoch < 0;
            let before = st.consumer.snapshot(&group);
            let r = st.consumer.heartbeat(req, topics, now);
            let after = st.consumer.snapshot(&group);
            if after != before {
                // Membership, epochs or assignments moved: stored before the member hears of
                // it, so a restart resumes from what members were told.
                w.records
                    .push(offsets::consumer_group_record(&group, after.as_ref()));
            }
            if r.error == errors::NONE && (joining || leaving) {
                let what = if joining {
                    format!("member {} joined (epoch {})", r.member_id, r.member_epoch)
                } else {
                    format!("member {} left", r.member_id)
                };
                w.history.push((group.clone(), now, what));
            }
            r
        })
    }

    /// OffsetCommit: `accept` turns the group's verdict into an answer and the offsets to
    /// store (none unless the verdict is NONE); they are stored and visible once committed.
    /// Blocking.
    pub fn commit_offsets<R>(
        &self,
        group: &str,
        by: Committer<'_>,
        now: i64,
        accept: impl FnOnce(i16) -> (R, Vec<(String, i32, Committed)>),
    ) -> Result<R, CoordinatorError> {
        self.with_group(group, true, |s| {
            let Some((st, w)) = s else {
                return accept(errors::COORDINATOR_NOT_AVAILABLE).0;
            };
            let code = st.validate_commit(group, by.member, by.instance, by.generation, now);
            if code == errors::NONE && !st.consumer.contains(group) {
                st.classic.ensure_group(group);
            }
            let (r, accepted) = accept(code);
            for (topic, partition, c) in accepted {
                w.records
                    .push(offsets::offset_record(group, &topic, partition, Some(&c)));
                st.offsets.commit(group, &topic, partition, c);
            }
            r
        })
    }

    /// TxnOffsetCommit: like [`Self::commit_offsets`], written as part of the producer's
    /// transaction and held until its marker decides them. `by`: the consumer's membership
    /// to check (KIP-447), if the request carries one. Blocking.
    pub fn txn_commit_offsets<R>(
        &self,
        group: &str,
        producer: (i64, i16),
        by: Option<Committer<'_>>,
        now: i64,
        accept: impl FnOnce(i16) -> (R, Vec<(String, i32, Committed)>),
    ) -> Result<R, CoordinatorError> {
        self.with_group(group, true, |s| {
            let Some((st, w)) = s else {
                return accept(errors::COORDINATOR_NOT_AVAILABLE).0;
            };
            let code = match by {
                Some(by) => st.validate_commit(group, by.member, by.instance, by.generation, now),
                None => errors::NONE,
            };
            let (r, accepted) = accept(code);
            if accepted.is_empty() {
                return r;
            }
            w.transactional = Some(producer);
            let list = st.pending_txn.entry(producer.0).or_default();
            for (topic, partition, committed) in accepted {
                w.records.push(offsets::offset_record(
                    group,
                    &topic,
                    partition,
                    Some(&committed),
                ));
                list.retain(|x| {
                    !(x.group == group && x.topic == topic && x.partition == partition)
                });
                list.push(PendingOffset {
                    group: group.to_string(),
                    topic,
                    partition,
                    committed,
                });
            }
            r
        })
    }

    /// Writes a transaction marker (`batch`) to `__consumer_offsets` partition `partition`:
    /// the producer's offsets held there become visible (commit) or are dropped (abort).
    /// Blocking.
    pub fn write_marker(
        &self,
        partition: i32,
        producer_id: i64,
        commit: bool,
        batch: Vec<u8>,
    ) -> Result<(), CoordinatorError> {
        let shard = self.shard(partition);
        self.write(&shard, |st, w| {
            w.batch = Some(batch);
            let done = st.take_pending(producer_id);
            if commit {
                for p in done {
                    st.offsets
                        .commit(&p.group, &p.topic, p.partition, p.committed);
                }
            }
        })
    }

    /// OffsetDelete: `decide` picks the offsets to delete from the shard's state (and what
    /// to answer); they are deleted once the tombstones are committed. Blocking.
    pub fn delete_offsets<R>(
        &self,
        group: &str,
        decide: impl FnOnce(Option<&ShardState>) -> (R, Vec<(String, i32)>),
    ) -> Result<R, CoordinatorError> {
        self.with_group(group, false, |s| match s {
            None => decide(None).0,
            Some((st, w)) => {
                let (r, delete) = decide(Some(st));
                for (topic, partition) in delete {
                    w.records
                        .push(offsets::offset_record(group, &topic, partition, None));
                    st.offsets.remove(group, &topic, partition);
                }
                r
            }
        })
    }

    /// DeleteGroups for one group: an empty group and its offsets, or a group known only by
    /// its offsets. Blocking.
    pub fn delete_group(&self, group: &str) -> Result<i16, CoordinatorError> {
        let code = self.with_group(group, false, |s| {
            let Some((st, w)) = s else {
                return fjord_coord::codes::GROUP_ID_NOT_FOUND;
            };
            let code = if st.consumer.contains(group) {
                st.consumer.delete(group)
            } else {
                st.classic.delete(group)
            };
            // A group known only by its committed offsets (never joined) can be deleted too.
            let offsets_only = code == fjord_coord::codes::GROUP_ID_NOT_FOUND
                && !st.offsets.of_group(group).is_empty();
            if code != errors::NONE && !offsets_only {
                return code;
            }
            for (topic, partition) in st.offsets.remove_group(group) {
                w.records
                    .push(offsets::offset_record(group, &topic, partition, None));
            }
            w.records.push(offsets::group_record(group, None));
            w.records.push(offsets::consumer_group_record(group, None));
            errors::NONE
        })?;
        if code == errors::NONE {
            lock(&self.history).remove(group);
        }
        Ok(code)
    }

    /// Timers of every shard: expired sessions, finished join phases, and (with
    /// `retention_ms`) expiry of the offsets of empty groups. Blocking.
    pub fn tick(&self, now: i64, retention_ms: Option<i64>) {
        for shard in self.shards.all() {
            let done = self.write(&shard, |st, w| {
                let effects = st.classic.tick(now);
                w.effects(effects);
                let gone = st.consumer.tick(now);
                let changed: BTreeSet<String> = gone.iter().map(|(g, _)| g.clone()).collect();
                for g in changed {
                    let snapshot = st.consumer.snapshot(&g);
                    w.records
                        .push(offsets::consumer_group_record(&g, snapshot.as_ref()));
                }
                for (group, member) in gone {
                    w.history.push((group, now, format!("member {member} expired: no heartbeat within the session timeout, or partitions not revoked in time")));
                }
                let Some(retention_ms) = retention_ms else {
                    return 0;
                };
                let empty: BTreeMap<String, bool> = st
                    .consumer
                    .list()
                    .into_iter()
                    .map(|(g, s)| (g, s == "Empty"))
                    .collect();
                let classic = &st.classic;
                let expired = st.offsets.expire(now, retention_ms, |g| match empty.get(g) {
                    Some(is_empty) => *is_empty,
                    None => classic
                        .state(g)
                        .is_none_or(|s| s == fjord_coord::group::State::Empty),
                });
                let n = expired.len();
                for (g, t, p) in expired {
                    w.records.push(offsets::offset_record(&g, &t, p, None));
                }
                n
            });
            match done {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    partition = shard.partition,
                    offsets = n,
                    "expired committed offsets of empty groups (offsets.retention.minutes)"
                ),
                Err(e) => {
                    tracing::debug!(partition = shard.partition, error = %e, "group timers skipped a shard")
                }
            }
        }
    }

    /// Records a line of a group's history.
    pub fn record(&self, group: &str, event: String) {
        self.push_history(group.to_string(), self.clock.now_ms(), event);
    }

    fn push_history(&self, group: String, at_ms: i64, event: String) {
        let mut h = lock(&self.history);
        let q = h.entry(group).or_default();
        q.push_back(HistoryEntry { at_ms, event });
        while q.len() > HISTORY {
            q.pop_front();
        }
    }

    pub fn history(&self, group: &str) -> Vec<HistoryEntry> {
        lock(&self.history)
            .get(group)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Completed rebalances per group.
    pub fn rebalances_by_group(&self) -> BTreeMap<String, u64> {
        lock(&self.rebalances_by_group).clone()
    }
}

/// What replaying a partition collects besides the shard's state.
struct Replayed<'a> {
    groups: &'a mut BTreeMap<String, Option<GroupRecord>>,
    consumer_groups: &'a mut BTreeMap<String, Option<fjord_coord::consumer::GroupRecord>>,
    /// Keys in the JSON of earlier Fjord versions, and whether their latest record is live.
    legacy: &'a mut BTreeMap<Vec<u8>, bool>,
    /// What records in Kafka's formats have set: a JSON tombstone after them (a conversion
    /// cut short) deletes nothing.
    native: &'a mut BTreeSet<StoredKey>,
    /// JSON keys written in a transaction, by producer: tombstoned once it is decided.
    legacy_txn: &'a mut HashMap<i64, Vec<Vec<u8>>>,
}

/// What a stored record is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum StoredKey {
    Offset(String, String, i32),
    Group(String),
    ConsumerGroup(String),
}

impl StoredKey {
    fn of(r: &StoredRecord) -> Self {
        match r {
            StoredRecord::Offset {
                group,
                topic,
                partition,
                ..
            } => Self::Offset(group.clone(), topic.clone(), *partition),
            StoredRecord::Group { group, .. } => Self::Group(group.clone()),
            StoredRecord::ConsumerGroup { group, .. } => Self::ConsumerGroup(group.clone()),
        }
    }
}

/// Applies one stored batch to a shard being loaded.
fn replay_batch(st: &mut ShardState, out: &mut Replayed<'_>, partition: i32, batch: &[u8]) {
    let Ok(header) = BatchHeader::parse(batch) else {
        return;
    };
    if header.is_control() {
        // A transaction's end: its offsets in this partition count or go.
        if let Ok(c) = parse_control_batch(batch) {
            // The transaction is decided: its JSON keys can go.
            for key in out
                .legacy_txn
                .remove(&header.producer_id)
                .unwrap_or_default()
            {
                out.legacy.insert(key, true);
            }
            let done = st.take_pending(header.producer_id);
            if c.kind == ControlKind::Commit {
                for p in done {
                    st.offsets
                        .commit(&p.group, &p.topic, p.partition, p.committed);
                }
            }
        }
        return;
    }
    let Ok(records) = Records::decode(batch, MAX_STORED_BATCH) else {
        return;
    };
    for r in records.iter().flatten() {
        let Some(key) = r.key else { continue };
        let legacy = offsets::is_legacy(key);
        if legacy && header.is_transactional() {
            out.legacy_txn
                .entry(header.producer_id)
                .or_default()
                .push(key.to_vec());
        } else if legacy {
            out.legacy.insert(key.to_vec(), r.value.is_some());
        }
        let decoded = offsets::decode(key, r.value);
        if let Ok(record) = &decoded {
            if !legacy {
                out.native.insert(StoredKey::of(record));
            } else if r.value.is_none() && out.native.contains(&StoredKey::of(record)) {
                continue;
            }
        }
        match decoded {
            Ok(StoredRecord::Offset {
                group,
                topic,
                partition,
                value: Some(committed),
            }) if header.is_transactional() => {
                let list = st.pending_txn.entry(header.producer_id).or_default();
                list.retain(|x| {
                    !(x.group == group && x.topic == topic && x.partition == partition)
                });
                list.push(PendingOffset {
                    group,
                    topic,
                    partition,
                    committed,
                });
            }
            Ok(StoredRecord::Offset {
                group,
                topic,
                partition,
                value: Some(c),
            }) => st.offsets.commit(&group, &topic, partition, c),
            Ok(StoredRecord::Offset {
                group,
                topic,
                partition,
                value: None,
            }) => st.offsets.remove(&group, &topic, partition),
            Ok(StoredRecord::Group { group, value }) => {
                out.groups.insert(group, value);
            }
            Ok(StoredRecord::ConsumerGroup { group, value }) => {
                out.consumer_groups.insert(group, value);
            }
            Err(e) => {
                tracing::warn!(partition, error = %e, "skipping an unreadable {OFFSETS_TOPIC} record")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Condvar;
    use std::time::Duration;

    use fjord_log::LogError;

    use super::*;
    use crate::coordinator::WriteError;

    /// One `__consumer_offsets` partition in memory whose commits can be held back, and
    /// whose next append can be refused (as a batch too large is).
    #[derive(Debug, Default)]
    struct MemPartition {
        state: Mutex<Mem>,
        released: Condvar,
    }

    #[derive(Debug, Default)]
    struct Mem {
        batches: Vec<(i64, Vec<u8>)>,
        end: i64,
        high_watermark: i64,
        hold: bool,
        refuse_next: bool,
    }

    impl PartitionWriter for MemPartition {
        fn partitions(&self, _: &str, _: bool) -> Result<Option<i32>, WriteError> {
            Ok(Some(1))
        }

        fn append(&self, _: &str, _: i32, batch: &[u8]) -> Result<i64, WriteError> {
            let mut m = lock(&self.state);
            if std::mem::take(&mut m.refuse_next) {
                return Err(WriteError::Log(LogError::BatchTooLarge { size: 9, max: 1 }));
            }
            let header = BatchHeader::parse(batch).unwrap();
            m.end += i64::from(header.last_offset_delta) + 1;
            let end = m.end;
            m.batches.push((end, batch.to_vec()));
            Ok(end)
        }

        fn committed(&self, _: &str, _: i32, offset: i64) -> Result<(), WriteError> {
            let mut m = lock(&self.state);
            while m.hold {
                m = self.released.wait(m).unwrap();
            }
            m.high_watermark = m.high_watermark.max(offset);
            Ok(())
        }

        fn replay(&self, _: &str, _: i32, f: &mut dyn FnMut(&[u8])) -> Result<i64, WriteError> {
            let m = lock(&self.state);
            for (end, batch) in &m.batches {
                if *end <= m.high_watermark {
                    f(batch);
                }
            }
            Ok(m.high_watermark)
        }
    }

    fn committed_offset(c: &GroupCoordinator) -> Option<i64> {
        c.read("g", |st| {
            st.and_then(|st| st.offsets.get("g", "t", 0))
                .map(|o| o.offset)
        })
        .unwrap()
    }

    fn commit(c: &GroupCoordinator, offset: i64) -> Result<(), CoordinatorError> {
        let by = Committer {
            member: "",
            instance: None,
            generation: -1,
        };
        c.commit_offsets("g", by, 1_000, |code| {
            assert_eq!(code, errors::NONE);
            let committed = Committed {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: 1_000,
                topic_id: None,
            };
            ((), vec![("t".to_string(), 0, committed)])
        })
    }

    #[test]
    fn a_reload_after_a_failed_write_waits_for_the_writes_before_it() {
        let partition = Arc::new(MemPartition::default());
        let c = Arc::new(GroupCoordinator::new(
            partition.clone(),
            Arc::new(crate::clock::SystemClock),
            Config::default(),
            fjord_coord::consumer::Config::default(),
            7,
        ));
        commit(&c, 5).unwrap();
        assert_eq!(committed_offset(&c), Some(5));

        // A commit of 9 is appended and waits for its fsync.
        lock(&partition.state).hold = true;
        let a = {
            let c = c.clone();
            std::thread::spawn(move || commit(&c, 9))
        };
        while lock(&partition.state).batches.len() < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Meanwhile another write is refused: the shard is dropped.
        lock(&partition.state).refuse_next = true;
        let marker = fjord_record::build_marker(3, 0, 0, true, 1_000);
        assert!(c.write_marker(0, 3, true, marker).is_err());
        // A read reloads the shard; the commit of 9 is answered as a success once its fsync
        // is done, so the reload must see it.
        let reader = {
            let c = c.clone();
            std::thread::spawn(move || committed_offset(&c))
        };
        std::thread::sleep(Duration::from_millis(50));
        lock(&partition.state).hold = false;
        partition.released.notify_all();
        assert!(a.join().unwrap().is_ok(), "the commit of 9 succeeded");
        assert_eq!(
            reader.join().unwrap(),
            Some(9),
            "the reload lost an answered commit"
        );
    }
}
