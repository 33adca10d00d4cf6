//! The broker's state: metadata, the partitions it hosts, and topic administration.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, RwLock, Weak};

use fjord_log::{
    AppendInfo, AppendOrigin, LastShutdown, Log, LogConfig, LogError, ReadUpTo, Storage,
};
use fjord_meta::MetadataRecord;
use fjord_meta::{ElectionType, MetadataState, PartitionKey};
use fjord_quorum::{Published, Quorum, QuorumError, QuorumOptions};
use thiserror::Error;

use crate::config::BrokerConfig;
use crate::coordinator::group::{GroupCoordinator, OFFSETS_TOPIC};
use crate::coordinator::txn::{
    MarkerOutcome, MarkerWriter, Markers, ProducerIdManager, TXN_TOPIC, TransactionCoordinator,
    TxnConfig,
};
use crate::coordinator::{PartitionWriter, WriteError};
use crate::errors;
use crate::replica::{Commit, CommitError, ReplicaState};
use crate::topic_config;

use crate::clock::{Clock, SeededRandom, SystemClock};

/// Left in the data directory by a clean shutdown, removed at start-up (Kafka's
/// `.kafka_cleanshutdown`).
pub const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";

/// One partition this broker holds: as its leader, or as a follower copying the leader.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub log: Log,
    /// The topic's `min.insync.replicas` (changes with the topic's config).
    pub min_insync_replicas: AtomicI32,
    /// Fetches waiting for this partition to get new data.
    pub waiters: FetchWaiters,
    /// Followers' fetches waiting for new appends (they read past the high watermark).
    pub append_waiters: FetchWaiters,
    /// Whether this broker leads it, the in-sync replicas, the followers' progress.
    pub(crate) replica: std::sync::Mutex<ReplicaState>,
    /// Who leads the partition as this broker last published it, and in which epoch: held
    /// for reading by every write to the log (a leader's append, a follower's copy or
    /// truncation), for writing while the role changes, so no write lands in a role it was
    /// not checked against (Kafka's `leaderIsrUpdateLock`). Always taken before `replica`.
    pub(crate) role: std::sync::RwLock<Leadership>,
    /// The high watermark and leadership, for writes waiting to be committed.
    commits: tokio::sync::watch::Sender<Commit>,
    node: i32,
}

/// Who leads a partition, in which leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    pub leader: i32,
    pub epoch: i32,
}

impl Partition {
    pub(crate) fn new(topic: String, index: i32, log: Log, min_isr: i32, node: i32) -> Self {
        let state = ReplicaState::new(node, log.log_end_offset());
        let commits = tokio::sync::watch::Sender::new(Commit {
            high_watermark: log.high_watermark(),
            leading_epoch: state.leading_epoch(),
        });
        let role = Leadership {
            leader: state.leader,
            epoch: state.leader_epoch,
        };
        Self {
            topic,
            index,
            log,
            min_insync_replicas: AtomicI32::new(min_isr),
            waiters: FetchWaiters::default(),
            append_waiters: FetchWaiters::default(),
            replica: std::sync::Mutex::new(state),
            role: std::sync::RwLock::new(role),
            commits,
            node,
        }
    }

    pub(crate) fn replica(&self) -> std::sync::MutexGuard<'_, ReplicaState> {
        self.replica.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Who leads the partition now; held, role changes wait.
    pub(crate) fn role(&self) -> std::sync::RwLockReadGuard<'_, Leadership> {
        self.role.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this broker leads the partition.
    pub fn is_leader(&self) -> bool {
        self.role().leader == self.node
    }

    /// Appends batches as this partition's leader: the one write path of client produce,
    /// coordinator records and transaction markers. Refused (NOT_LEADER_OR_FOLLOWER) unless
    /// this broker leads it, checked under the role lock so a role change cannot slip in
    /// between; returns the leader epoch it was appended in, which the commit waits must
    /// still be this broker's. The append is not committed (visible to consumers) until the
    /// in-sync replicas have it ([`Self::commit`]); followers waiting for data are woken.
    pub fn append(
        &self,
        records: &[u8],
        origin: AppendOrigin,
        now: i64,
    ) -> Result<(AppendInfo, i32), CommitError> {
        self.append_as_leader(|log| log.append(records, origin, now))
    }

    /// A producer's append whose transactional batches carry a verification guard
    /// ([`fjord_log::Log::append_verified`], KIP-890).
    pub fn append_verified(
        &self,
        records: &[u8],
        now: i64,
        guard: u64,
    ) -> Result<(AppendInfo, i32), CommitError> {
        self.append_as_leader(|log| log.append_verified(records, now, guard))
    }

    fn append_as_leader(
        &self,
        append: impl FnOnce(&Log) -> Result<AppendInfo, LogError>,
    ) -> Result<(AppendInfo, i32), CommitError> {
        let role = self.role();
        if role.leader != self.node {
            return Err(CommitError::NotLeader);
        }
        let info = append(&self.log)?;
        let epoch = role.epoch;
        drop(role);
        self.append_waiters.wake();
        Ok((info, epoch))
    }

    /// Waits until `info`'s append (made in leader epoch `epoch`) is committed: durable here
    /// under the topic's flush policy (fsynced unless `flush.messages` defers it) and on every
    /// in-sync replica, this broker still leading in that epoch. Blocking.
    pub fn commit(&self, info: &AppendInfo, epoch: i32) -> Result<(), CommitError> {
        self.log.wait_durable(info)?;
        self.committed(epoch, info.next_offset());
        self.wait_committed_blocking(info.next_offset(), epoch)
    }

    /// Waits until every offset below `offset` is fsynced here, whatever the flush policy
    /// (coordinator state is always durable before it is answered), and committed on every
    /// in-sync replica, in the leader epoch this broker leads in now. Blocking.
    pub fn commit_to(&self, offset: i64) -> Result<(), CommitError> {
        let epoch = {
            let role = self.role();
            if role.leader != self.node {
                return Err(CommitError::NotLeader);
            }
            role.epoch
        };
        self.log.sync_to(offset)?;
        self.committed(epoch, offset);
        self.wait_committed_blocking(offset, epoch)
    }

    /// Everything below `offset`, appended in leader epoch `epoch`, is committable on this
    /// broker (durable as the flush policy asks): the high watermark moves as far as the
    /// in-sync replicas allow. Ignored once this broker no longer leads in that epoch.
    pub fn committed(&self, epoch: i32, offset: i64) {
        let mut state = self.replica();
        if state.leading_epoch() != epoch {
            return;
        }
        state.local_committable(offset);
        self.advance(&state);
    }

    /// Raises the high watermark to what the in-sync replicas allow; wakes the fetches and
    /// the writes waiting on it.
    pub(crate) fn advance(&self, state: &ReplicaState) {
        let min_isr = self.min_insync_replicas.load(Ordering::Relaxed);
        let Some(offset) = state.committed_offset(min_isr) else {
            return;
        };
        let before = self.log.high_watermark();
        let after = self.log.advance_high_watermark(offset);
        if after > before {
            self.waiters.wake();
            self.commits.send_modify(|c| c.high_watermark = after);
        }
    }

    /// Tells waiting writes that leadership changed (they fail unless it is still this
    /// broker's in the same epoch).
    pub(crate) fn leadership_changed(&self, state: &ReplicaState) {
        let leading_epoch = state.leading_epoch();
        let high_watermark = self.log.high_watermark();
        self.commits.send_modify(|c| {
            c.leading_epoch = leading_epoch;
            c.high_watermark = high_watermark;
        });
        self.waiters.wake();
        self.append_waiters.wake();
    }

    /// Waits until the high watermark reaches `offset` while this broker leads the partition
    /// in leader epoch `epoch` (the one the write was appended in), for at most `timeout`.
    pub async fn wait_committed(
        &self,
        offset: i64,
        epoch: i32,
        timeout: std::time::Duration,
    ) -> Result<(), CommitError> {
        // Settled already (an unreplicated partition's high watermark moved when its sync
        // finished): no subscription, no timer.
        {
            let now = self.commits.borrow();
            if now.leading_epoch != epoch {
                return Err(CommitError::NotLeader);
            }
            if now.high_watermark >= offset {
                return Ok(());
            }
        }
        let mut rx = self.commits.subscribe();
        let waited = tokio::time::timeout(
            timeout,
            rx.wait_for(|c| c.leading_epoch != epoch || c.high_watermark >= offset),
        )
        .await;
        match waited {
            Ok(Ok(c)) if c.leading_epoch == epoch => Ok(()),
            Ok(_) => Err(CommitError::NotLeader),
            Err(_) => Err(CommitError::TimedOut(timeout)),
        }
    }

    /// [`Self::wait_committed`] from a blocking thread, with the coordinators' bound.
    pub(crate) fn wait_committed_blocking(
        &self,
        offset: i64,
        epoch: i32,
    ) -> Result<(), CommitError> {
        // Settled already (see `wait_committed`): no runtime needed.
        let now = *self.commits.borrow();
        if now.leading_epoch != epoch {
            return Err(CommitError::NotLeader);
        }
        if now.high_watermark >= offset {
            return Ok(());
        }
        let wait = self.wait_committed(offset, epoch, COMMIT_TIMEOUT);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.block_on(wait),
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(|source| {
                    CommitError::Log(LogError::Io {
                        action: "waiting on",
                        path: self.log.dir().to_path_buf(),
                        source,
                    })
                })?
                .block_on(wait),
        }
    }
}

/// A marker appended to a partition and the leader epoch it was appended in, waiting for its
/// commit.
pub type AppendedMarker = (Arc<Partition>, AppendInfo, i32);

/// How long a coordinator's or a marker's write waits for the in-sync replicas.
const COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The most preferred-leader elections one balancing pass makes (Kafka's
/// `MAX_ELECTIONS_PER_IMBALANCE`).
const MAX_BALANCING_ELECTIONS: usize = 1_000;

/// How long a stopping metadata leader waits for another voter to take its leadership.
const HAND_OVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The broker's internal topics as the coordinators see them: created on first use, written
/// and replayed through the partitions' one write path.
#[derive(Debug)]
struct InternalTopics(Weak<Broker>, Arc<dyn Clock>);

impl InternalTopics {
    fn partition(&self, topic: &str, partition: i32) -> Result<Arc<Partition>, WriteError> {
        self.0
            .upgrade()
            .and_then(|b| b.partition(topic, partition))
            .ok_or_else(|| WriteError::NotLeader {
                topic: topic.to_string(),
                partition,
            })
    }
}

impl MarkerWriter for InternalTopics {
    fn write_markers(
        &self,
        batches: &[Markers],
        timeout: std::time::Duration,
    ) -> Vec<Vec<MarkerOutcome>> {
        match self.0.upgrade() {
            Some(broker) => broker.write_markers(batches, timeout),
            None => batches
                .iter()
                .map(|b| {
                    let why = MarkerOutcome::Retry("the broker is shutting down".into());
                    vec![why; b.partitions.len()]
                })
                .collect(),
        }
    }
}

impl ProducerIdManager for InternalTopics {
    fn allocate(&self, count: i64) -> Result<(i64, i64), String> {
        let broker = self
            .0
            .upgrade()
            .ok_or_else(|| "the broker is shutting down".to_string())?;
        broker.allocate_producer_ids(count).map_err(|e| e.message)
    }
}

impl PartitionWriter for InternalTopics {
    fn partitions(&self, topic: &str, create: bool) -> Result<Option<i32>, WriteError> {
        let broker = self
            .0
            .upgrade()
            .ok_or_else(|| WriteError::Unavailable("the broker is shutting down".into()))?;
        if !create {
            return Ok(broker.quorum.state().topic(topic).map(|t| t.partitions));
        }
        let created = match topic {
            TXN_TOPIC => broker.ensure_transaction_topic(),
            _ => broker.ensure_offsets_topic(),
        };
        created
            .map(Some)
            .map_err(|e| WriteError::Unavailable(e.message))
    }

    fn leads(&self, topic: &str, partition: i32) -> bool {
        self.partition(topic, partition).is_ok()
    }

    fn leader_epoch(&self, topic: &str, partition: i32) -> Option<i32> {
        let p = self.partition(topic, partition).ok()?;
        let role = p.role();
        (role.leader == p.node).then_some(role.epoch)
    }

    fn append(&self, topic: &str, partition: i32, batch: &[u8]) -> Result<i64, WriteError> {
        let p = self.partition(topic, partition)?;
        match p.append(batch, AppendOrigin::Internal, self.1.now_ms()) {
            Ok((info, _)) => Ok(info.next_offset()),
            Err(CommitError::Log(e)) => Err(WriteError::Log(e)),
            Err(_) => Err(WriteError::NotLeader {
                topic: topic.to_string(),
                partition,
            }),
        }
    }

    fn committed(&self, topic: &str, partition: i32, offset: i64) -> Result<(), WriteError> {
        self.partition(topic, partition)?
            .commit_to(offset)
            .map_err(|e| match e {
                CommitError::Log(e) => WriteError::Log(e),
                // Leadership moved while the write waited: NOT_COORDINATOR, as Kafka answers.
                CommitError::NotLeader => WriteError::NotLeader {
                    topic: topic.to_string(),
                    partition,
                },
                e => WriteError::Unavailable(e.to_string()),
            })
    }

    fn replay(
        &self,
        topic: &str,
        partition: i32,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<i64, WriteError> {
        let p = self.partition(topic, partition)?;
        Ok(replay_partition(&p, f)?)
    }
}

/// Calls `f` with every batch of a partition below its high watermark, in offset order;
/// returns the high watermark. Blocking.
fn replay_partition(p: &Partition, f: &mut dyn FnMut(&[u8])) -> Result<i64, LogError> {
    let end = p.log.high_watermark();
    let mut offset = p.log.log_start_offset();
    while offset < end {
        let read = p
            .log
            .read(offset, READ_CHUNK, ReadUpTo::HighWatermark, true)?;
        let Some(slice) = read.data else { break };
        let bytes = slice.read().map_err(|source| LogError::Io {
            action: "reading",
            path: p.log.dir().to_path_buf(),
            source,
        })?;
        for batch in fjord_record::split_batches(&bytes).flatten() {
            f(batch);
        }
        offset = slice.next_offset;
    }
    Ok(end)
}

/// Seconds since the record at `offset` was written (its timestamp), for lag in time.
fn oldest_unread_age(p: &Partition, offset: i64, now: i64) -> Option<f64> {
    let read = p
        .log
        .read(
            offset.max(p.log.log_start_offset()),
            1,
            ReadUpTo::HighWatermark,
            true,
        )
        .ok()?;
    let bytes = read.data?.read().ok()?;
    let batch = fjord_record::split_batches(&bytes).next()?.ok()?;
    let header = fjord_record::BatchHeader::parse(batch).ok()?;
    let first = fjord_record::Records::decode(batch, MAX_DECODED_BATCH)
        .ok()?
        .iter()
        .flatten()
        .find(|r| r.offset(&header) >= offset)?
        .timestamp(&header);
    Some((now - first).max(0) as f64 / 1000.0)
}

/// The most one batch may decompress to when the broker reads it for itself.
const MAX_DECODED_BATCH: usize = 64 << 20;

/// How much of an internal topic one read brings in while replaying it.
const READ_CHUNK: usize = 1 << 20;

/// The long-polling fetches that read a partition (Kafka's fetch purgatory, keyed by
/// partition): new data wakes the fetches that read it, and no other.
#[derive(Debug, Default)]
pub struct FetchWaiters(std::sync::Mutex<Vec<std::sync::Weak<tokio::sync::Notify>>>);

impl FetchWaiters {
    /// Registers a fetch, woken (`notify_one`, so a wake-up while it reads is kept) at every
    /// change until it is dropped.
    pub fn register(&self, fetch: &Arc<tokio::sync::Notify>) {
        let mut list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Finished fetches leave dead entries: they go at the next wake-up, or here, as they
        // pile up on a partition that gets no data.
        if list.len() >= 16 && list.len().is_power_of_two() {
            list.retain(|w| w.strong_count() > 0);
        }
        list.push(Arc::downgrade(fetch));
    }

    /// Wakes every registered fetch still waiting and forgets the finished ones.
    pub fn wake(&self) {
        let mut list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| match w.upgrade() {
            Some(fetch) => {
                fetch.notify_one();
                true
            }
            None => false,
        });
    }
}

impl AsRef<Log> for Partition {
    fn as_ref(&self) -> &Log {
        &self.log
    }
}

/// A partition's leader elsewhere (KIP-951).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    pub leader: i32,
    pub leader_epoch: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// Why the broker could not start.
#[derive(Debug, Error)]
pub enum OpenError {
    #[error("metadata: {0}")]
    Meta(#[from] QuorumError),
    #[error(
        "the broker must be opened from a Tokio runtime's blocking thread (the metadata quorum runs on it)"
    )]
    NoRuntime,
    #[error(
        "this data directory belongs to cluster {ours}, but the quorum it joined is cluster {theirs}: start it with the voters of its own cluster, or give it an empty data directory to join this one"
    )]
    OtherCluster { ours: String, theirs: String },
    #[error(
        "the controller listener {addr}: {source} (is another node using the port? pass --controller-listen)"
    )]
    ControllerListen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("partition {topic}-{partition}: {source}")]
    Partition {
        topic: String,
        partition: i32,
        #[source]
        source: LogError,
    },
    #[error("topic {topic} has an invalid stored config: {reason}")]
    Config { topic: String, reason: String },
    #[error(
        "node {node} is started as a controller only, but the metadata places partitions on it ({examples}): start it with process.roles=broker,controller, or delete those topics first"
    )]
    StrandedPartitions { node: i32, examples: String },
    #[error("starting the fsync threads: {0}")]
    Threads(#[source] std::io::Error),
    #[error("the clean-shutdown marker {path}: {source} (check the data directory's permissions)")]
    Marker {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Threads that fsync acks=all appends, per data directory: enough to keep several partitions'
/// fsyncs in flight at once, few enough that a burst of small appends to many partitions
/// is synced in rounds rather than by a thread per request and partition.
const FLUSH_THREADS: usize = 4;

/// How the flusher makes appends durable: one filesystem-wide sync per round unless the
/// config says otherwise or the data directory's filesystem cannot (see `log.sync.method`).
fn sync_method(
    storage: &Arc<dyn Storage>,
    config: &BrokerConfig,
) -> fjord_log::flusher::SyncMethod {
    use fjord_log::flusher::SyncMethod;
    if !config.sync_filesystem {
        return SyncMethod::PerLog(FLUSH_THREADS);
    }
    match storage.filesystem_sync(&config.data_dir) {
        Ok(Some(fs)) => SyncMethod::Filesystem(fs),
        Ok(None) => {
            tracing::info!(
                "this kernel does not report every failure of a filesystem-wide sync (Linux \
                 5.17 and later do): syncing each partition's files on its own"
            );
            SyncMethod::PerLog(FLUSH_THREADS)
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                dir = %config.data_dir.display(),
                "cannot open the data directory for filesystem-wide syncs: syncing each \
                 partition's files on its own"
            );
            SyncMethod::PerLog(FLUSH_THREADS)
        }
    }
}

/// An admin operation's failure, as Kafka reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    pub code: i16,
    pub message: String,
}

impl AdminError {
    pub(crate) fn new(code: i16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Threads that open or close partitions at start-up, shutdown and topic creation (Kafka's
/// `num.recovery.threads.per.data.dir`): the work is mostly fsyncs, which overlap well.
const PARTITION_IO_THREADS: usize = 8;

/// Runs `f` over `items` on up to [`PARTITION_IO_THREADS`] threads; results in item order.
fn in_parallel<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = PARTITION_IO_THREADS.min(items.len());
    if threads <= 1 {
        return items.into_iter().map(f).collect();
    }
    let queue = std::sync::Mutex::new(items.into_iter().enumerate());
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                        let Some((i, item)) = next else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Counts partitions through a long start-up or shutdown and logs how far it is, at most once
/// a second (nothing for runs shorter than that).
struct Progress {
    what: &'static str,
    total: usize,
    done: std::sync::atomic::AtomicUsize,
    last: std::sync::Mutex<std::time::Instant>,
}

impl Progress {
    fn new(what: &'static str, total: usize) -> Self {
        Self {
            what,
            total,
            done: std::sync::atomic::AtomicUsize::new(0),
            last: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }

    fn step(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut last) = self.last.try_lock() else {
            return; // another thread is logging
        };
        if last.elapsed() >= std::time::Duration::from_secs(1) {
            *last = std::time::Instant::now();
            tracing::info!(
                done,
                total = self.total,
                "{} {done} of {} partitions",
                self.what,
                self.total
            );
        }
    }
}

/// What to tell a client whose partitions could not be opened.
pub(crate) fn open_failure(e: &OpenError) -> String {
    let text = e.to_string();
    if text.contains("Too many open files") {
        format!(
            "{text} (the broker is out of file descriptors: raise its `ulimit -n`; each partition keeps one file open per segment)"
        )
    } else {
        text
    }
}

/// Writes this node's registration. A broker that registers again after a stop may have lost
/// a log tail its followers fetched: the partitions it led hand their leadership to another
/// in-sync replica, or, with none, move to a new leader epoch (`Controller::elections`), in the
/// same change. Decided on the applied state; decided again if another change won meanwhile.
fn register(
    runtime: &tokio::runtime::Handle,
    quorum: &Quorum,
    config: &BrokerConfig,
    registration: Vec<MetadataRecord>,
) -> Result<(), QuorumError> {
    // A restarted node may take a while to catch up with the metadata it decides on.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut change = registration.clone();
        if config.is_broker() {
            let mut after = (*quorum.state()).clone();
            if after.apply_all(&change).is_ok() {
                let controller = fjord_meta::ControllerConfig {
                    default_partitions: config.num_partitions,
                    default_replication_factor: config.default_replication_factor,
                    max_partitions: crate::admin::MAX_PARTITIONS,
                    max_replication_factor: i16::MAX,
                    unclean_leader_election: config.unclean_leader_election,
                };
                change.extend(
                    fjord_meta::Controller {
                        state: &after,
                        brokers: &[],
                        config: &controller,
                    }
                    .elections(&[config.node_id]),
                );
            }
        }
        if config.is_broker() {
            // A registration proves the broker alive: heard first, the controller's next
            // fencing pass cannot fence it again on the session of its previous run (which
            // would take it out of every ISR it just rejoined).
            let _ = runtime.block_on(quorum.heartbeat(config.node_id, config.heartbeat_timeout()));
        }
        match runtime.block_on(quorum.write(change)) {
            Err(QuorumError::Refused(reason)) if std::time::Instant::now() < deadline => {
                tracing::debug!(%reason, "registration decided on an older state; deciding again");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(e),
            Ok(_) => return Ok(()),
        }
    }
}

/// The broker: shared by every connection.
#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    pub cluster_id: String,
    pub(crate) storage: Arc<dyn Storage>,
    /// The metadata quorum (one member on a single node).
    pub(crate) quorum: Quorum,
    /// The runtime the quorum runs on; blocking admin calls wait on it.
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) partitions: RwLock<HashMap<PartitionKey, Arc<Partition>>>,
    /// Makes acks=all appends durable, sharing fsyncs between requests (group commit).
    pub flusher: fjord_log::Flusher<Partition>,
    pub metrics: crate::metrics::Metrics,
    pub groups: GroupCoordinator,
    pub txns: TransactionCoordinator,
    /// Incremental fetch sessions (KIP-227).
    pub fetch_sessions: std::sync::Mutex<crate::fetch_sessions::FetchSessions>,
    /// Serialises topic administration.
    admin: std::sync::Mutex<()>,
    /// The metadata the running partitions follow (what the publisher last applied).
    pub(crate) published: std::sync::Mutex<Arc<MetadataState>>,
    /// Partitions opened for a change not yet committed, for the publisher to serve.
    pub(crate) prepared: std::sync::Mutex<HashMap<PartitionKey, Arc<Partition>>>,
    /// The broker's time (the wall clock, or a test's).
    clock: Arc<dyn Clock>,
    /// Ids from a seeded generator when a test asks for reproducible runs (else the OS's).
    random: Option<SeededRandom>,
    /// When the controller last took this broker's heartbeat (or the broker opened).
    heartbeat_taken: std::sync::Mutex<std::time::Instant>,
    /// A controlled shutdown began: no more heartbeats (the controller keeps it fenced).
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    /// Connections kept to other brokers (transaction markers, verification), by address.
    peers: std::sync::Mutex<HashMap<String, Arc<fjord_client::Client>>>,
    /// Partitions the metadata places here that could not be opened (with why): answered
    /// KAFKA_STORAGE_ERROR, and opened again at every heartbeat until they open.
    pub(crate) offline: std::sync::Mutex<BTreeMap<PartitionKey, String>>,
    /// An attempt to open the offline partitions is running.
    retrying: std::sync::atomic::AtomicBool,
    /// The replica fetchers copying the partitions this broker follows.
    pub(crate) fetchers: crate::replica_fetcher::Fetchers,
    /// The replication throttles' meters: throttled replicas this broker serves as leader,
    /// and copies as follower.
    pub(crate) leader_quota: crate::replica::ReplicationQuota,
    pub(crate) follower_quota: crate::replica::ReplicationQuota,
    /// Coordinator partitions this broker has just become leader of, to load once what they
    /// hold is committed (the publisher queues them; [`Broker::load_coordinators`] runs them).
    pub(crate) coordinator_loads: std::sync::Mutex<Vec<CoordinatorLoad>>,
}

/// A `__consumer_offsets` or `__transaction_state` partition to load as its new leader: once
/// the high watermark reaches `target` (the log end when leadership began: everything a new
/// leader holds is committed once its in-sync followers have it) in leader epoch `epoch`.
#[derive(Debug)]
pub(crate) struct CoordinatorLoad {
    pub partition: Arc<Partition>,
    pub epoch: i32,
    pub target: i64,
}

impl Broker {
    /// Opens the data directory: replays metadata and opens every partition's log.
    /// Blocking: call from a blocking context.
    pub fn open(
        config: BrokerConfig,
        storage: Arc<dyn Storage>,
        cluster_id: String,
    ) -> Result<Arc<Self>, OpenError> {
        Self::open_with(config, storage, cluster_id, Arc::new(SystemClock), None)
    }

    /// [`Broker::open`] with a given clock, and with ids (topic ids, member ids, session
    /// ids) from a generator seeded with `seed` when one is given: what tests use to drive
    /// timers by hand and replay a run. Blocking.
    pub fn open_with(
        config: BrokerConfig,
        storage: Arc<dyn Storage>,
        cluster_id: String,
        clock: Arc<dyn Clock>,
        seed: Option<u64>,
    ) -> Result<Arc<Self>, OpenError> {
        let random = seed.map(SeededRandom::new);
        let random_u64 = || match &random {
            Some(r) => r.next_u64(),
            None => uuid::Uuid::new_v4().as_u128() as u64,
        };
        let now = clock.now_ms();
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| OpenError::NoRuntime)?;
        let metadata_dir = config.data_dir.join(fjord_meta::METADATA_DIR);
        let quorum = match &config.controller_listen {
            Some(addr) if !config.voters.is_empty() => {
                let listener = runtime
                    .block_on(tokio::net::TcpListener::bind(addr))
                    .map_err(|source| OpenError::ControllerListen {
                        addr: addr.clone(),
                        source,
                    })?;
                let voters = config
                    .voters
                    .iter()
                    .map(|(&id, addr)| (id as u64, addr.clone()))
                    .collect();
                runtime.block_on(Quorum::open_member(
                    storage.clone(),
                    &metadata_dir,
                    config.node_id,
                    now,
                    voters,
                    listener,
                    QuorumOptions {
                        must_have_log: !config.new_cluster_id,
                        address: Some(addr.clone()),
                        directory_id: config.directory_id.clone(),
                        ..QuorumOptions::default()
                    },
                ))?
            }
            _ => runtime.block_on(Quorum::open_single(
                storage.clone(),
                &metadata_dir,
                config.node_id,
                now,
            ))?,
        };
        let group_config = fjord_coord::group::Config {
            min_session_timeout_ms: config.group_min_session_timeout_ms,
            max_session_timeout_ms: config.group_max_session_timeout_ms,
            initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
            ..fjord_coord::group::Config::default()
        };
        let consumer_config = fjord_coord::consumer::Config {
            session_timeout_ms: config.group_consumer_session_timeout_ms,
            heartbeat_interval_ms: config.group_consumer_heartbeat_interval_ms,
        };
        // Registration (Kafka's BrokerRegistration): this node's Kafka listener and rack, a new
        // incarnation at every start; the first node to register sets the cluster's id.
        let mut registration = Vec::new();
        if let Some(theirs) = quorum.state().cluster_id()
            && theirs != cluster_id
            && !config.new_cluster_id
        {
            let _ = runtime.block_on(quorum.shutdown());
            return Err(OpenError::OtherCluster {
                ours: cluster_id,
                theirs: theirs.to_string(),
            });
        }
        if quorum.state().cluster_id().is_none() {
            registration.push(MetadataRecord::ClusterId {
                id: cluster_id.clone(),
            });
        }
        // A controller-only node is no broker: it registers nothing and holds no partitions;
        // one that was a broker must not strand the partitions placed on it.
        if !config.is_broker() {
            let node = config.node_id;
            let placed: Vec<String> = quorum
                .state()
                .placed_on(node)
                .take(3)
                .map(|(topic, i)| format!("{topic}-{i}"))
                .collect();
            if !placed.is_empty() {
                let _ = runtime.block_on(quorum.shutdown());
                return Err(OpenError::StrandedPartitions {
                    node,
                    examples: placed.join(", "),
                });
            }
        }
        if config.is_broker() {
            registration.push(MetadataRecord::RegisterBroker {
                id: config.node_id,
                incarnation: uuid::Uuid::from_u64_pair(random_u64(), random_u64()).to_string(),
                host: config.advertised_host.clone(),
                port: config.advertised_port,
                rack: config.rack.clone(),
            });
        }
        if !registration.is_empty() {
            register(&runtime, &quorum, &config, registration)?;
        }
        let cluster_id = quorum
            .state()
            .cluster_id()
            .map_or(cluster_id, str::to_string);
        let fetch_sessions = crate::fetch_sessions::FetchSessions::new(
            config.fetch_session_cache_slots,
            random_u64(),
        );
        let flusher = fjord_log::Flusher::start(sync_method(&storage, &config))
            .map_err(OpenError::Threads)?;
        let groups_seed = random_u64();
        let runtime_handle = runtime.clone();
        let broker = Arc::new_cyclic(|me: &Weak<Broker>| {
            let writer = Arc::new(InternalTopics(me.clone(), clock.clone()));
            let txn_config = TxnConfig {
                max_timeout_ms: config.transaction_max_timeout_ms,
                id_expiration_ms: config.transactional_id_expiration_ms,
                abort_interval_ms: config.transaction_abort_interval_ms,
            };
            Self {
                config,
                cluster_id,
                storage,
                quorum,
                runtime,
                partitions: RwLock::new(HashMap::new()),
                flusher,
                metrics: crate::metrics::Metrics::default(),
                groups: GroupCoordinator::new(
                    writer.clone(),
                    clock.clone(),
                    group_config,
                    consumer_config,
                    groups_seed,
                ),
                txns: TransactionCoordinator::new(
                    writer.clone(),
                    writer.clone(),
                    writer,
                    clock.clone(),
                    txn_config,
                ),
                fetch_sessions: std::sync::Mutex::new(fetch_sessions),
                admin: std::sync::Mutex::new(()),
                published: std::sync::Mutex::new(Arc::new(MetadataState::default())),
                prepared: std::sync::Mutex::new(HashMap::new()),
                clock,
                random,
                heartbeat_taken: std::sync::Mutex::new(std::time::Instant::now()),
                stopping: std::sync::atomic::AtomicBool::new(false),
                peers: std::sync::Mutex::new(HashMap::new()),
                offline: std::sync::Mutex::new(BTreeMap::new()),
                retrying: std::sync::atomic::AtomicBool::new(false),
                fetchers: crate::replica_fetcher::Fetchers::new(me.clone(), runtime_handle),
                leader_quota: Default::default(),
                follower_quota: Default::default(),
                coordinator_loads: std::sync::Mutex::new(Vec::new()),
            }
        });
        broker.remove_stray_partitions();
        let last = broker.take_clean_shutdown_marker()?;
        // Start-up publishes the whole metadata to a broker that holds nothing yet; later
        // changes, made here or on other nodes, are published as they are applied.
        // Followed from before the first publish, so no change applied meanwhile is missed.
        let applied = broker.quorum.subscribe();
        let state = broker.quorum.state();
        broker.publish_to(&state, last)?;
        broker.follow_metadata(applied);
        broker.keep_alive();
        broker.spawn_leader_balancing();
        broker.watch_isr();
        // What is committed already loads now (a single node's shards, before the first
        // request); the rest as the in-sync followers catch up.
        broker.load_coordinators(true);
        broker.groups.load_all();
        broker.txns.load_all();
        Ok(broker)
    }

    /// Loads the coordinator partitions the publisher queued (this broker became their
    /// leader): each once its high watermark covers what it held when leadership began, while
    /// this broker still leads it in that epoch. `now`: those committed already load on this
    /// thread (start-up), group shards before transaction shards (a transaction finished at
    /// load writes markers to `__consumer_offsets`); every other load runs on a blocking
    /// thread of its own, in no order (a marker a loading group shard refuses is written again
    /// at the transaction coordinator's next tick).
    pub(crate) fn load_coordinators(self: &Arc<Self>, now: bool) {
        let mut loads = std::mem::take(
            &mut *self
                .coordinator_loads
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        loads.sort_by_key(|l| l.partition.topic != crate::coordinator::group::OFFSETS_TOPIC);
        for load in loads {
            let settled = {
                let c = *load.partition.commits.borrow();
                c.leading_epoch == load.epoch && c.high_watermark >= load.target
            };
            if now && settled {
                self.load_coordinator(&load);
                continue;
            }
            let weak = Arc::downgrade(self);
            self.runtime.spawn_blocking(move || {
                loop {
                    let waited = load
                        .partition
                        .wait_committed_blocking(load.target, load.epoch);
                    let Some(broker) = weak.upgrade() else { break };
                    // Still this partition (not removed, nor replaced by a new topic's)?
                    let p = &load.partition;
                    if !broker
                        .hosted(&p.topic, p.index)
                        .is_some_and(|h| Arc::ptr_eq(&h, p))
                    {
                        break;
                    }
                    match waited {
                        Ok(()) => break broker.load_coordinator(&load),
                        // Another leader or epoch: its own load (or unload) follows.
                        Err(CommitError::NotLeader) => break,
                        Err(e) => {
                            tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "a coordinator partition's log is not committed yet (too few in-sync replicas?); still waiting to load it");
                        }
                    }
                }
            });
        }
    }

    /// Loads one coordinator shard whose partition is committed up to where it began leading.
    fn load_coordinator(&self, load: &CoordinatorLoad) {
        let p = &load.partition;
        let started = std::time::Instant::now();
        let failed = match p.topic.as_str() {
            crate::coordinator::group::OFFSETS_TOPIC => self
                .groups
                .load(p.index, load.epoch)
                .err()
                .map(|e| e.to_string()),
            crate::coordinator::txn::TXN_TOPIC => {
                self.txns.load(p.index, load.epoch).err().map(|e| e.1)
            }
            _ => None,
        };
        match failed {
            None => {
                tracing::info!(topic = %p.topic, partition = p.index, epoch = load.epoch, ms = started.elapsed().as_millis() as u64, "loaded a coordinator partition as its new leader")
            }
            Some(e) => {
                tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "loading a coordinator partition failed; its next request tries again")
            }
        }
    }

    /// Publishes every metadata change applied from now on (made on any node), in order,
    /// until the broker is gone.
    fn follow_metadata(self: &Arc<Self>, mut applied: tokio::sync::watch::Receiver<Published>) {
        let weak = Arc::downgrade(self);
        self.runtime.spawn(async move {
            while applied.changed().await.is_ok() {
                let Some(broker) = weak.upgrade() else { break };
                let published = tokio::task::spawn_blocking(move || {
                    let state = broker.quorum.state();
                    let published = broker.publish_to(&state, LastShutdown::Unclean);
                    // Also what an admin call's own publish or a reopened partition queued.
                    broker.load_coordinators(false);
                    published
                })
                .await;
                match published {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "a metadata change could not be fully published")
                    }
                    Err(e) => tracing::error!(error = %e, "the metadata publisher failed"),
                }
            }
        });
    }

    /// Heartbeats to the controller every `broker.heartbeat.interval.ms` (Kafka's
    /// BrokerHeartbeat), and, on the node that leads the quorum, fences brokers not heard from
    /// for `broker.session.timeout.ms` and unfences them when they are heard again.
    fn keep_alive(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let interval = std::time::Duration::from_millis(self.config.broker_heartbeat_interval_ms);
        self.runtime.spawn(async move {
            let mut failing = 0u32;
            loop {
                tokio::time::sleep(interval).await;
                let Some(broker) = weak.upgrade() else { break };
                let heartbeat = async {
                    if broker.stopping.load(Ordering::Acquire) {
                        Ok(()) // in a controlled shutdown: fenced on purpose
                    } else if broker.config.is_broker() {
                        broker
                            .quorum
                            .heartbeat(broker.config.node_id, broker.config.heartbeat_timeout())
                            .await
                    } else {
                        Ok(()) // a controller only has no broker session to keep
                    }
                };
                match heartbeat.await {
                    Ok(()) => {
                        failing = 0;
                        *broker
                            .heartbeat_taken
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
                    }
                    Err(e) => {
                        failing += 1;
                        if failing == 3 {
                            tracing::warn!(error = %e, "heartbeats to the controller fail; other brokers will see this one fenced");
                        }
                    }
                }
                let offline = !broker
                    .offline
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_empty();
                // Opened aside (it may recover whole logs): heartbeats go on meanwhile.
                if offline && !broker.retrying.swap(true, Ordering::AcqRel) {
                    let b = broker.clone();
                    tokio::task::spawn_blocking(move || {
                        b.retry_offline();
                        // A coordinator partition that opened now loads.
                        b.load_coordinators(false);
                        b.retrying.store(false, Ordering::Release);
                    });
                }
            }
        });
        // The controller's side, on the quorum's leader: fencing and the elections it calls
        // for are decided a few times a second, so a broker is fenced soon after its session
        // expires rather than at the next heartbeat tick.
        let weak = Arc::downgrade(self);
        let period = std::time::Duration::from_millis(
            (self.config.broker_heartbeat_interval_ms / 4).clamp(50, 250),
        );
        let mut stalls = StallGuard::new(
            period,
            std::time::Duration::from_millis(self.config.broker_heartbeat_interval_ms),
        );
        self.runtime.spawn(async move {
            loop {
                let slept_from = std::time::Instant::now();
                tokio::time::sleep(period).await;
                let Some(broker) = weak.upgrade() else { break };
                // Every pass counts, leading or not: a node paused as a follower may resume
                // as the leader.
                let may_fence = stalls.may_fence(slept_from, std::time::Instant::now());
                let Some(sessions) = broker.quorum.sessions() else {
                    continue;
                };
                if !may_fence {
                    continue;
                }
                let records = broker.fencing(&sessions);
                if records.is_empty() {
                    continue;
                }
                for r in &records {
                    if let MetadataRecord::BrokerFencing { id, fenced } = r {
                        tracing::info!(broker = id, fenced, "broker fencing changed");
                    }
                }
                if let Err(e) = broker.quorum.write(records).await {
                    tracing::warn!(error = %e, "could not record a broker's fencing");
                }
            }
        });
    }

    /// Automatic preferred-leader balancing (`auto.leader.rebalance.enable`): every
    /// `leader.imbalance.check.interval.seconds` the quorum's leader gives up to 1,000
    /// partitions back to their preferred leader (the first replica) where it is alive and in
    /// sync, and goes on at once while more remain (Kafka's `maybeBalancePartitionLeaders`).
    fn spawn_leader_balancing(self: &Arc<Self>) {
        if !self.config.auto_leader_rebalance {
            return;
        }
        let weak = Arc::downgrade(self);
        let every =
            std::time::Duration::from_millis(self.config.leader_imbalance_check_interval_ms);
        self.runtime.spawn(async move {
            let mut wait = every;
            loop {
                tokio::time::sleep(wait).await;
                wait = every;
                let Some(broker) = weak.upgrade() else { break };
                if broker.quorum.leader() != Some(broker.quorum.node_id()) {
                    continue;
                }
                let mut imbalanced = broker.with_controller(|c| c.imbalanced());
                if imbalanced.is_empty() {
                    continue;
                }
                let more = imbalanced.len() > MAX_BALANCING_ELECTIONS;
                imbalanced.truncate(MAX_BALANCING_ELECTIONS);
                let b = broker.clone();
                let elected = tokio::task::spawn_blocking(move || {
                    b.elect_leaders(ElectionType::Preferred, Some(imbalanced))
                })
                .await;
                match elected {
                    Ok(Ok(outcomes)) => {
                        let moved = outcomes.iter().filter(|(_, r)| r.is_ok()).count();
                        tracing::info!(partitions = moved, more, "gave partitions back to their preferred leaders");
                        if more {
                            wait = std::time::Duration::from_millis(10);
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e.message, "preferred leader balancing failed; trying again at the next check"),
                    Err(_) => {}
                }
            }
        });
    }

    /// The replication throttle this broker applies as leader (`leader`) or as follower, in
    /// bytes per second, if one is set (its own dynamic `*.replication.throttled.rate`, else
    /// the cluster's default).
    pub(crate) fn replication_throttle(&self, state: &MetadataState, leader: bool) -> Option<u64> {
        let key = if leader {
            "leader.replication.throttled.rate"
        } else {
            "follower.replication.throttled.rate"
        };
        let (value, _) = state.broker_config(self.config.node_id, key)?;
        let rate: i64 = value.trim().parse().ok()?;
        (rate < i64::MAX).then_some(rate.max(0) as u64)
    }

    /// Whether `partition` of `topic` is a throttled replica on this broker as leader
    /// (`leader`) or follower: its topic's `*.replication.throttled.replicas` names it.
    pub(crate) fn throttled(
        &self,
        state: &MetadataState,
        topic: &str,
        partition: i32,
        leader: bool,
    ) -> bool {
        let key = if leader {
            "leader.replication.throttled.replicas"
        } else {
            "follower.replication.throttled.replicas"
        };
        state
            .topic(topic)
            .and_then(|t| t.configs.get(key))
            .is_some_and(|v| crate::replica::throttled_replica(v, partition, self.config.node_id))
    }

    /// The fencing changes the controller decides from the heartbeat sessions.
    fn fencing(&self, sessions: &fjord_quorum::Sessions) -> Vec<MetadataRecord> {
        let base = sessions.since;
        let ms = |t: std::time::Instant| t.saturating_duration_since(base).as_millis() as i64;
        let last: HashMap<i32, i64> = sessions.last.iter().map(|(&id, &t)| (id, ms(t))).collect();
        let now = ms(std::time::Instant::now());
        let timeout = self.config.broker_session_timeout_ms as i64;
        self.with_controller(|c| c.fencing(&last, 0, now, timeout))
    }

    pub(crate) fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.config.data_dir.join(format!("{topic}-{index}"))
    }

    /// Opens the given partitions as `state` describes them, all side by side (the work is
    /// mostly fsyncs: checkpoints, recovered segments), logging progress each second.
    /// Returns the partitions that opened, not yet served, and the first failure. `last` is
    /// what the data directory's clean-shutdown marker said at start-up; partitions opened
    /// later (new ones) pass `Unclean`, which reads no flag and writes none.
    pub(crate) fn open_logs(
        &self,
        state: &MetadataState,
        keys: &[PartitionKey],
        now: i64,
        last: LastShutdown,
    ) -> (Vec<Arc<Partition>>, Option<OpenError>) {
        let mut first_error = None;
        let mut configs: HashMap<&str, (LogConfig, i32)> = HashMap::new();
        let mut work = Vec::with_capacity(keys.len());
        for (name, index) in keys {
            let Some(topic) = state.topic(name) else {
                continue;
            };
            let config = match configs.get(name.as_str()) {
                Some(c) => *c,
                None => match topic_config::log_config(&self.config.log_defaults, &topic.configs) {
                    Ok(config) => {
                        let min_isr = topic_config::min_insync_replicas(
                            self.config.min_insync_replicas,
                            &topic.configs,
                        );
                        configs.insert(name, (config, min_isr));
                        (config, min_isr)
                    }
                    Err(reason) => {
                        first_error.get_or_insert(OpenError::Config {
                            topic: topic.name.clone(),
                            reason,
                        });
                        continue;
                    }
                },
            };
            let meta = topic.partition_states.get(*index as usize);
            let replicated = meta.is_some_and(|p| p.replicas.len() > 1);
            work.push((name, *index, config, replicated));
        }
        let progress = Progress::new("opened", work.len());
        let results = in_parallel(work, |(name, index, (config, min_isr), replicated)| {
            let opened = Log::open_with(
                self.storage.clone(),
                self.partition_dir(name, index),
                config,
                now,
                last,
            )
            .map(|log| (name, index, log, min_isr, replicated))
            .map_err(|source| OpenError::Partition {
                topic: name.clone(),
                partition: index,
                source,
            });
            progress.step();
            opened
        });
        let mut opened = Vec::new();
        for result in results {
            let (name, index, log, min_isr, replicated) = match result {
                Ok(opened) => opened,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            // An unreplicated partition is its own ISR: everything it holds is committed. A
            // replicated one's high watermark comes from its leader (or, leading, from its
            // followers' fetches).
            if !replicated {
                log.advance_high_watermark(log.log_end_offset());
            }
            opened.push(Arc::new(Partition::new(
                name.clone(),
                index,
                log,
                min_isr,
                self.config.node_id,
            )));
        }
        (opened, first_error)
    }

    pub fn metadata(&self) -> Arc<MetadataState> {
        self.quorum.state()
    }

    /// Whether this broker can serve its partitions (a readiness probe's answer): Err says
    /// why not and what to do.
    pub fn readiness(&self) -> Result<(), String> {
        let id = self.config.node_id;
        if !self.config.is_broker() {
            return match self.quorum.leader() {
                Some(_) => Ok(()),
                None => Err(format!(
                    "controller {id} knows no quorum leader; check that a majority of the voters run and reach each other's controller listeners"
                )),
            };
        }
        if self.metadata().broker(id).is_some_and(|b| b.fenced) {
            return Err(format!(
                "broker {id} is fenced: the controller has not taken its heartbeats for broker.session.timeout.ms; check that it reaches the quorum's controller listeners"
            ));
        }
        let since = self
            .heartbeat_taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        if since.as_millis() as u64 > self.config.broker_session_timeout_ms {
            return Err(format!(
                "no controller has taken broker {id}'s heartbeats for {} ms, so the others see it fenced; check that a majority of the voters run and reach each other's controller listeners",
                since.as_millis()
            ));
        }
        Ok(())
    }

    /// The node clients are told is the controller: this broker, which takes admin requests
    /// and has the quorum's leader decide them (as a KRaft broker names an alive broker, not
    /// the quorum's controller, and forwards).
    pub fn controller_id(&self) -> i32 {
        self.config.node_id
    }

    /// Whether the metadata has partition `index` of `topic` (on any broker).
    pub fn has_partition(&self, topic: &str, index: i32) -> bool {
        self.metadata()
            .topic(topic)
            .is_some_and(|t| index >= 0 && index < t.partitions)
    }

    /// Writes a transaction marker to a partition this broker leads and waits until it is
    /// committed. Blocking.
    pub fn write_local_marker(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
        commit: bool,
    ) -> Result<(), (i16, String)> {
        let appended = self.append_local_marker(
            topic,
            partition,
            producer_id,
            producer_epoch,
            coordinator_epoch,
            commit,
        )?;
        Self::commit_marker(appended)
    }

    /// Appends a transaction marker to a partition this broker leads; what is left is to wait
    /// for its commit ([`Self::commit_marker`]). A `__consumer_offsets` marker goes through the
    /// group coordinator, which decides the offsets the transaction committed there and waits
    /// itself (nothing left). NOT_LEADER_OR_FOLLOWER when another broker leads the partition,
    /// UNKNOWN_TOPIC_OR_PARTITION when it does not exist (deleted since). Blocking.
    pub fn append_local_marker(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
        commit: bool,
    ) -> Result<Option<AppendedMarker>, (i16, String)> {
        let marker = fjord_record::build_marker(
            producer_id,
            producer_epoch,
            coordinator_epoch,
            commit,
            self.now_ms(),
        );
        let Some(p) = self.partition(topic, partition) else {
            return Err((
                self.missing_partition_code(topic, partition),
                format!("this broker does not lead {topic}-{partition}"),
            ));
        };
        if topic == OFFSETS_TOPIC {
            return self
                .groups
                .write_marker(partition, producer_id, commit, marker)
                .map(|()| None)
                .map_err(|e| (e.code(), e.to_string()));
        }
        let (info, epoch) = p
            .append(&marker, AppendOrigin::Internal, self.now_ms())
            .map_err(|e| (e.code(), e.to_string()))?;
        Ok(Some((p, info, epoch)))
    }

    /// Waits until an appended marker ([`Self::append_local_marker`]) is committed. Blocking.
    pub fn commit_marker(appended: Option<AppendedMarker>) -> Result<(), (i16, String)> {
        match appended {
            None => Ok(()),
            Some((p, info, epoch)) => p
                .commit(&info, epoch)
                .map_err(|e| (e.code(), e.to_string())),
        }
    }

    /// Writes transaction markers ([`MarkerWriter`]): every leader other than this broker
    /// gets one WriteTxnMarkers request with all its partitions, all sent at once, while the
    /// partitions this broker leads are written here; a partition that no longer exists needs
    /// none. Blocking, for at most about `timeout` (a leader that has not answered by then
    /// gets its markers again in a later round).
    pub fn write_markers(
        self: &Arc<Self>,
        batches: &[Markers],
        timeout: std::time::Duration,
    ) -> Vec<Vec<MarkerOutcome>> {
        use kafka_protocol::messages::WriteTxnMarkersRequest;
        let state = self.metadata();
        let mut outcomes: Vec<Vec<Option<MarkerOutcome>>> = batches
            .iter()
            .map(|b| vec![None; b.partitions.len()])
            .collect();
        // Leader → (batch, partition) of each marker it is asked for.
        let mut remote: BTreeMap<i32, Vec<(usize, usize)>> = BTreeMap::new();
        let mut local = Vec::new();
        for (bi, b) in batches.iter().enumerate() {
            for (pi, (topic, partition)) in b.partitions.iter().enumerate() {
                let leader = state
                    .topic(topic)
                    .and_then(|t| t.partition_states.get(usize::try_from(*partition).ok()?))
                    .map(|p| p.leader);
                match leader {
                    None => outcomes[bi][pi] = Some(MarkerOutcome::Done),
                    Some(l) if l == self.config.node_id => local.push((bi, pi)),
                    Some(l) if state.broker(l).is_some() => {
                        remote.entry(l).or_default().push((bi, pi));
                    }
                    Some(_) => {
                        outcomes[bi][pi] = Some(MarkerOutcome::Retry(format!(
                            "{topic}-{partition} has no available leader"
                        )));
                    }
                }
            }
        }
        let mut sent = tokio::task::JoinSet::new();
        for (&leader, markers) in &remote {
            let Some(target) = state.broker(leader) else {
                continue;
            };
            let addr = format!("{}:{}", target.host, target.port);
            let mut request = WriteTxnMarkersRequest::default();
            request.markers = marker_requests(batches, markers);
            let broker = self.clone();
            let asked = markers.clone();
            sent.spawn_on(
                async move {
                    let answer =
                        tokio::time::timeout(timeout, broker.call_broker(&addr, &request)).await;
                    let answer = match answer {
                        Ok(Ok(response)) => Ok(response),
                        Ok(Err(e)) => Err(format!("broker {leader} ({addr}): {e}")),
                        Err(_) => Err(format!(
                            "broker {leader} ({addr}) did not answer within {timeout:?}"
                        )),
                    };
                    (asked, answer)
                },
                &self.runtime,
            );
        }
        // Every local marker is appended before any commit is waited for.
        let appended: Vec<_> = local
            .into_iter()
            .map(|(bi, pi)| {
                let b = &batches[bi];
                let (topic, partition) = &b.partitions[pi];
                let appended = self.append_local_marker(
                    topic,
                    *partition,
                    b.producer_id,
                    b.producer_epoch,
                    b.coordinator_epoch,
                    b.commit,
                );
                (bi, pi, appended)
            })
            .collect();
        for (bi, pi, appended) in appended {
            let (topic, partition) = &batches[bi].partitions[pi];
            outcomes[bi][pi] = Some(match appended.and_then(Self::commit_marker) {
                Ok(()) => MarkerOutcome::Done,
                Err((code, message)) => {
                    marker_outcome(code, format!("{topic}-{partition}: {message}"))
                }
            });
        }
        if sent.is_empty() {
            return finished(outcomes);
        }
        let answers = self.runtime.block_on(async {
            let mut answers = Vec::new();
            while let Some(joined) = sent.join_next().await {
                answers.extend(joined.ok());
            }
            answers
        });
        for (asked, answer) in answers {
            let response = match answer {
                Ok(response) => response,
                Err(why) => {
                    for (bi, pi) in asked {
                        outcomes[bi][pi] = Some(MarkerOutcome::Retry(why.clone()));
                    }
                    continue;
                }
            };
            let codes: HashMap<(i64, &str, i32), i16> = response
                .markers
                .iter()
                .flat_map(|m| {
                    m.topics.iter().flat_map(move |t| {
                        t.partitions.iter().map(move |p| {
                            (
                                (m.producer_id.0, t.name.0.as_str(), p.partition_index),
                                p.error_code,
                            )
                        })
                    })
                })
                .collect();
            for (bi, pi) in asked {
                let b = &batches[bi];
                let (topic, partition) = &b.partitions[pi];
                let outcome = match codes.get(&(b.producer_id, topic.as_str(), *partition)) {
                    Some(&code) => marker_outcome(
                        code,
                        format!("{topic}-{partition}: its leader answered error code {code}"),
                    ),
                    None => MarkerOutcome::Retry(format!(
                        "{topic}-{partition}: its leader's answer left it out"
                    )),
                };
                outcomes[bi][pi] = Some(outcome);
            }
        }
        finished(outcomes)
    }

    /// Sends `request` to the broker at `addr` on the connection kept to it (opened when
    /// first needed, and again when an earlier request broke it). A request that fails is
    /// not sent again here (it may have been carried out): the callers' own retries do.
    pub(crate) async fn call_broker<R: kafka_protocol::protocol::Request>(
        &self,
        addr: &str,
        request: &R,
    ) -> Result<R::Response, fjord_client::ClientError> {
        use fjord_client::Client;
        let kept = self
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .cloned();
        let client = match kept.filter(|c| !c.is_broken()) {
            Some(client) => client,
            None => {
                let id = format!("fjord-broker-{}", self.config.node_id);
                let client =
                    Arc::new(Client::connect(addr, &id, std::time::Duration::from_secs(10)).await?);
                self.peers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(addr.to_string(), client.clone());
                client
            }
        };
        let sent = client.send(request).await;
        if client.is_broken() {
            let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            if peers.get(addr).is_some_and(|c| Arc::ptr_eq(c, &client)) {
                peers.remove(addr);
            }
        }
        sent
    }

    /// The broker that coordinates transactional id `id` when it is not this one (the leader
    /// of the id's `__transaction_state` partition).
    pub fn remote_txn_coordinator(&self, id: &str) -> Option<(i32, String)> {
        let state = self.metadata();
        let topic = state.topic(crate::coordinator::txn::TXN_TOPIC)?;
        let partition = fjord_coord::offsets::partition_for(id, topic.partitions);
        let leader = topic.partition_states.get(partition as usize)?.leader;
        if leader == self.config.node_id {
            return None;
        }
        let b = state.broker(leader)?;
        Some((leader, format!("{}:{}", b.host, b.port)))
    }

    /// Asks the transaction coordinator on another broker whether `partitions` are in the
    /// producer's open transaction (AddPartitionsToTxn v4+ with verify_only, KIP-890): the
    /// error code of each (NONE when it is).
    pub async fn verify_txn_remotely(
        &self,
        coordinator: &str,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> HashMap<(String, i32), i16> {
        use kafka_protocol::messages::add_partitions_to_txn_request::{
            AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
        };
        use kafka_protocol::messages::{
            AddPartitionsToTxnRequest, ProducerId, TopicName, TransactionalId,
        };
        use kafka_protocol::protocol::StrBytes;
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in partitions {
            topics.entry(t).or_default().push(*p);
        }
        let mut txn = AddPartitionsToTxnTransaction::default();
        txn.transactional_id = TransactionalId(StrBytes::from_string(id.to_string()));
        txn.producer_id = ProducerId(producer_id);
        txn.producer_epoch = epoch;
        txn.verify_only = true;
        txn.topics = topics
            .into_iter()
            .map(|(t, ps)| {
                let mut topic = AddPartitionsToTxnTopic::default();
                topic.name = TopicName(StrBytes::from_string(t.to_string()));
                topic.partitions = ps;
                topic
            })
            .collect();
        let mut request = AddPartitionsToTxnRequest::default();
        request.transactions = vec![txn];
        let answer = self.call_broker(coordinator, &request).await;
        let mut codes: HashMap<(String, i32), i16> = partitions
            .iter()
            .map(|k| (k.clone(), errors::NOT_COORDINATOR))
            .collect();
        match answer {
            Ok(response) if response.error_code != errors::NONE => {
                codes.values_mut().for_each(|c| *c = response.error_code);
            }
            Ok(response) => {
                for t in response
                    .results_by_transaction
                    .iter()
                    .flat_map(|r| &r.topic_results)
                {
                    for p in &t.results_by_partition {
                        codes.insert(
                            (t.name.0.to_string(), p.partition_index),
                            p.partition_error_code,
                        );
                    }
                }
            }
            Err(e) => {
                tracing::warn!(coordinator, error = %e, "could not reach the transaction coordinator to verify a transactional write");
            }
        }
        codes
    }

    /// Where a partition led by another (alive) broker is, for KIP-951's hints in Produce and
    /// Fetch responses: its leader and epoch, and the leader's endpoint.
    pub fn leader_hint(&self, topic: &str, index: i32) -> Option<LeaderHint> {
        self.current_leader(topic, index)
            .filter(|h| h.leader != self.config.node_id)
    }

    /// A partition's (alive) leader as the metadata has it, this broker included: the hint
    /// for a client that asked in an old leader epoch (Kafka's `getCurrentLeader`).
    pub fn current_leader(&self, topic: &str, index: i32) -> Option<LeaderHint> {
        let state = self.metadata();
        let p = state
            .topic(topic)?
            .partition_states
            .get(index as usize)?
            .clone();
        let b = state.broker(p.leader).filter(|b| !b.fenced)?;
        Some(LeaderHint {
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            host: b.host.clone(),
            port: b.port,
            rack: b.rack.clone(),
        })
    }

    /// The error for a partition this broker does not serve: NOT_LEADER_OR_FOLLOWER when the
    /// metadata has it (on another broker, or here but not open), else
    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub fn missing_partition_code(&self, topic: &str, index: i32) -> i16 {
        let offline = self.offline.lock().unwrap_or_else(|p| p.into_inner());
        if offline.contains_key(&(topic.to_string(), index)) {
            // Placed here, but its log could not be opened (Kafka's offline log directory).
            errors::KAFKA_STORAGE_ERROR
        } else if self.has_partition(topic, index) {
            errors::NOT_LEADER_OR_FOLLOWER
        } else {
            errors::UNKNOWN_TOPIC_OR_PARTITION
        }
    }

    /// A partition this broker leads (what clients and coordinators may read and write).
    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.hosted(topic, index).filter(|p| p.is_leader())
    }

    /// A partition this broker holds a replica of, leading it or not.
    pub fn hosted(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(topic.to_string(), index))
            .cloned()
    }

    pub(crate) fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Syncs the partitions whose `flush.ms` is due. Blocking.
    pub fn flush_due(&self, now: i64) {
        for p in self.all_partitions() {
            if let Err(e) = p.log.flush_if_due(now) {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "flush failed");
            }
        }
    }

    /// Forgets idle producers (`producer.id.expiration.ms`) and deletes segments past
    /// retention. Blocking.
    pub fn enforce_retention(&self, now: i64) {
        for p in self.all_partitions() {
            let expired = p
                .log
                .expire_producers(now, self.config.producer_id_expiration_ms);
            if expired > 0 {
                tracing::debug!(topic = %p.topic, partition = p.index, expired, "forgot idle producers");
            }
            match p.log.enforce_retention(now) {
                Ok(out) if out.deleted_segments > 0 => tracing::info!(
                    topic = %p.topic,
                    partition = p.index,
                    segments = out.deleted_segments,
                    bytes = out.deleted_bytes,
                    log_start_offset = out.log_start_offset,
                    "retention deleted segments"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "retention failed")
                }
            }
        }
    }

    /// Compacts the partitions of compacted topics. Blocking.
    pub fn compact(&self, now: i64) {
        for p in self.all_partitions() {
            match p.log.compact(now) {
                Ok(out) if out.segments_cleaned > 0 => tracing::info!(
                    topic = %p.topic,
                    partition = p.index,
                    segments = out.segments_cleaned,
                    records_removed = out.records_removed,
                    "compacted"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "compaction failed")
                }
            }
        }
    }

    /// The broker's time in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// 128 random bits (topic ids): seeded in tests that ask for it, else the OS's.
    pub(crate) fn random_u128(&self) -> u128 {
        match &self.random {
            Some(r) => u128::from(r.next_u64()) << 64 | u128::from(r.next_u64()),
            None => uuid::Uuid::new_v4().as_u128(),
        }
    }

    pub(crate) fn admin_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.admin.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes partition directories the metadata does not place on this node (a crash
    /// between a deletion's metadata record and its file removal). Blocking.
    fn remove_stray_partitions(&self) {
        let Ok(dirs) = self.storage.list_subdirs(&self.config.data_dir) else {
            return;
        };
        let state = self.quorum.state();
        for dir in dirs {
            let Some((topic, index)) = dir.rsplit_once('-') else {
                continue;
            };
            let Ok(index) = index.parse::<i32>() else {
                continue;
            };
            if topic == fjord_meta::METADATA_DIR.trim_end_matches("-0") {
                continue;
            }
            let path = self.config.data_dir.join(&dir);
            let is_partition = self
                .storage
                .exists(&path.join(fjord_log::checkpoint::FILE_NAME))
                .unwrap_or(false);
            let node = self.config.node_id;
            let known = state
                .topic(topic)
                .and_then(|t| t.partition_states.get(index as usize))
                .is_some_and(|p| p.replicas.contains(&node));
            if is_partition && !known {
                tracing::warn!(dir = %path.display(), "removing the data of a deleted partition");
                if let Err(e) = self.storage.remove_dir_all(&path) {
                    tracing::error!(dir = %path.display(), error = %e, "could not remove a deleted partition's data; remove it by hand");
                }
            }
        }
    }

    /// The metrics page (Prometheus text format).
    pub fn metrics_text(&self) -> String {
        let mut partitions: Vec<(String, i32, u64, i64, i64)> = self
            .all_partitions()
            .iter()
            .map(|p| {
                (
                    p.topic.clone(),
                    p.index,
                    p.log.size_bytes(),
                    p.log.log_start_offset(),
                    p.log.log_end_offset(),
                )
            })
            .collect();
        partitions.sort();
        let mut text = self.metrics.render(&partitions);
        self.render_cluster_metrics(&mut text);
        self.render_group_metrics(&mut text);
        self.txns.render_metrics(&mut text);
        text
    }

    /// Prometheus lines for replication and the cluster (Kafka's ReplicaManager and
    /// controller gauges): the partitions this broker leads that are under-replicated or
    /// under min.insync.replicas, ISR shrinks and expands it asked for, and, on the metadata
    /// quorum's leader (the active controller; zero elsewhere), offline partitions, partitions
    /// not led by their preferred replica, partitions being reassigned, and brokers by state.
    fn render_cluster_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let state = self.metadata();
        let node = self.config.node_id;
        let (mut under_replicated, mut under_min_isr) = (0u64, 0u64);
        for p in self.all_partitions() {
            let Some(meta) = state.partition(&p.topic, p.index) else {
                continue;
            };
            if meta.leader != node {
                continue;
            }
            if meta.isr.len() < meta.replicas.len() {
                under_replicated += 1;
            }
            let min_isr = state
                .topic(&p.topic)
                .map_or(self.config.min_insync_replicas, |t| {
                    topic_config::min_insync_replicas(self.config.min_insync_replicas, &t.configs)
                });
            if (meta.isr.len() as i32) < min_isr.min(meta.replicas.len() as i32) {
                under_min_isr += 1;
            }
        }
        let active = self.quorum.leader() == Some(self.quorum.node_id());
        let (mut offline, mut reassigning, mut partitions) = (0u64, 0u64, 0u64);
        let (mut fenced, mut brokers) = (0u64, 0u64);
        let mut imbalanced = 0u64;
        if active {
            for t in state.topics() {
                for p in t.partition_states.iter().filter(|p| !p.is_unassigned()) {
                    partitions += 1;
                    offline += u64::from(p.leader < 0);
                    reassigning += u64::from(p.is_reassigning());
                    imbalanced += u64::from(p.leader != p.replicas[0]);
                }
            }
            for b in state.brokers() {
                brokers += 1;
                fenced += u64::from(b.fenced);
            }
        }
        let topics = if active {
            state.topics().count() as u64
        } else {
            0
        };
        let isr = &self.metrics.isr_changes;
        let gauges = [
            (
                "fjord_under_replicated_partitions",
                "Partitions this broker leads with fewer replicas in sync than it has.",
                "gauge",
                under_replicated,
            ),
            (
                "fjord_under_min_isr_partitions",
                "Partitions this broker leads with fewer replicas in sync than min.insync.replicas (acks=all refused).",
                "gauge",
                under_min_isr,
            ),
            (
                "fjord_isr_shrinks_total",
                "In-sync replica sets this broker shrank as a leader.",
                "counter",
                isr[0].load(std::sync::atomic::Ordering::Relaxed),
            ),
            (
                "fjord_isr_expands_total",
                "In-sync replica sets this broker expanded as a leader.",
                "counter",
                isr[1].load(std::sync::atomic::Ordering::Relaxed),
            ),
            (
                "fjord_controller_active",
                "1 on the metadata quorum's leader (the active controller), 0 elsewhere.",
                "gauge",
                u64::from(active),
            ),
            (
                "fjord_offline_partitions",
                "Partitions without a leader (active controller only).",
                "gauge",
                offline,
            ),
            (
                "fjord_preferred_replica_imbalance",
                "Partitions not led by their first replica (active controller only).",
                "gauge",
                imbalanced,
            ),
            (
                "fjord_reassigning_partitions",
                "Partitions whose replicas are being moved (active controller only).",
                "gauge",
                reassigning,
            ),
            (
                "fjord_global_partitions",
                "Partitions in the cluster (active controller only).",
                "gauge",
                partitions,
            ),
            (
                "fjord_global_topics",
                "Topics in the cluster (active controller only).",
                "gauge",
                topics,
            ),
            (
                "fjord_active_brokers",
                "Registered brokers not fenced (active controller only).",
                "gauge",
                brokers - fenced,
            ),
            (
                "fjord_fenced_brokers",
                "Registered brokers fenced (active controller only).",
                "gauge",
                fenced,
            ),
        ];
        for (name, help, kind, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }

    /// Prometheus lines for group lag (records and seconds per partition), rebalances and
    /// groups by state. Blocking: reads the record at each lagging committed offset for its
    /// age.
    fn render_group_metrics(&self, out: &mut String) {
        use crate::metrics::escape;
        use std::fmt::Write;
        let now = self.now_ms();
        let mut committed = Vec::new();
        let mut by_state: BTreeMap<&'static str, u64> = BTreeMap::new();
        self.groups.read_all(|st| {
            for g in st.offsets.groups() {
                for ((topic, partition), c) in st.offsets.of_group(&g) {
                    committed.push((g.clone(), topic, partition, c.offset));
                }
            }
            for (_, _, state) in st.classic.list() {
                *by_state.entry(state.name()).or_default() += 1;
            }
            for (_, state) in st.consumer.list() {
                *by_state.entry(state).or_default() += 1;
            }
        });
        let _ = writeln!(
            out,
            "# HELP fjord_group_lag_records Records between a group's committed offset and the high watermark.\n# TYPE fjord_group_lag_records gauge"
        );
        let mut ages = Vec::new();
        for (g, topic, partition, offset) in committed {
            let Some(p) = self.partition(&topic, partition) else {
                continue;
            };
            let lag = (p.log.high_watermark() - offset).max(0);
            let labels = format!(
                "group=\"{}\",topic=\"{}\",partition=\"{partition}\"",
                escape(&g),
                escape(&topic)
            );
            let _ = writeln!(out, "fjord_group_lag_records{{{labels}}} {lag}");
            let age = if lag == 0 {
                0.0
            } else {
                oldest_unread_age(&p, offset, now).unwrap_or(0.0)
            };
            ages.push((labels, age));
        }
        let _ = writeln!(
            out,
            "# HELP fjord_group_lag_seconds Age of the oldest record a group has not consumed.\n# TYPE fjord_group_lag_seconds gauge"
        );
        for (labels, age) in ages {
            let _ = writeln!(out, "fjord_group_lag_seconds{{{labels}}} {age}");
        }
        let _ = writeln!(
            out,
            "# HELP fjord_group_rebalances_total Generations formed, per group.\n# TYPE fjord_group_rebalances_total counter"
        );
        for (g, n) in self.groups.rebalances_by_group() {
            let _ = writeln!(
                out,
                "fjord_group_rebalances_total{{group=\"{}\"}} {n}",
                escape(&g)
            );
        }
        let _ = writeln!(
            out,
            "# HELP fjord_groups Consumer groups by state.\n# TYPE fjord_groups gauge"
        );
        for (state, n) in by_state {
            let _ = writeln!(out, "fjord_groups{{state=\"{state}\"}} {n}");
        }
    }

    /// Flushes and closes every log and the metadata log (clean shutdown), then leaves the
    /// clean-shutdown marker if every one of them closed.
    pub fn close(&self) {
        // A metadata leader hands its leadership over first, so the quorum has a leader again
        // at once instead of after an election timeout (Kafka's controller resigns too).
        self.runtime
            .block_on(self.quorum.hand_over_leadership(HAND_OVER_TIMEOUT));
        self.fetchers.stop();
        self.flusher.stop();
        let partitions = self.all_partitions();
        let progress = Progress::new("closed", partitions.len());
        let failed = std::sync::atomic::AtomicBool::new(false);
        in_parallel(partitions, |p| {
            if let Err(e) = p.log.close() {
                failed.store(true, Ordering::Relaxed);
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "closing partition log");
            }
            progress.step();
        });
        if let Err(e) = self.runtime.block_on(self.quorum.shutdown()) {
            tracing::error!(error = %e, "closing metadata log");
            return;
        }
        if failed.into_inner() {
            return; // the next start recovers every partition
        }
        let marker = self.config.data_dir.join(CLEAN_SHUTDOWN_MARKER);
        let written = self
            .storage
            .open(&marker, true)
            .and_then(|f| f.sync())
            .and_then(|()| self.storage.sync_dir(&self.config.data_dir));
        if let Err(e) = written {
            tracing::warn!(path = %marker.display(), error = %e, "could not leave the clean-shutdown marker; the next start recovers every partition");
        }
    }

    /// Reads and removes the data directory's clean-shutdown marker (durably, before any
    /// partition opens: from here on a crash is an unclean shutdown). With the marker every
    /// partition trusts its own clean flag and is not rewritten at open; without it every
    /// partition recovers from its recovery point.
    fn take_clean_shutdown_marker(&self) -> Result<LastShutdown, OpenError> {
        let dir = &self.config.data_dir;
        let marker = dir.join(CLEAN_SHUTDOWN_MARKER);
        let failed = |source| OpenError::Marker {
            path: marker.clone(),
            source,
        };
        if !self.storage.exists(&marker).map_err(failed)? {
            return Ok(LastShutdown::Unclean);
        }
        self.storage.remove_file(&marker).map_err(failed)?;
        self.storage.sync_dir(dir).map_err(failed)?;
        Ok(LastShutdown::Clean)
    }
}

/// Keeps the controller from fencing brokers right after it was itself stalled (the process
/// paused, a long GC-like stop, a starved runtime): the heartbeats that arrived meanwhile are
/// not processed yet, so every session would look expired. When the pause between two passes
/// overslept by more than two heartbeat intervals, fencing waits two heartbeat intervals more.
#[derive(Debug)]
struct StallGuard {
    period: std::time::Duration,
    heartbeat: std::time::Duration,
    quiet_until: Option<std::time::Instant>,
}

impl StallGuard {
    fn new(period: std::time::Duration, heartbeat: std::time::Duration) -> Self {
        Self {
            period,
            heartbeat,
            quiet_until: None,
        }
    }

    /// Whether a fencing pass at `now` may decide, after a pause of `period` begun at
    /// `slept_from` (a slow pass of its own — a write — is no stall).
    fn may_fence(&mut self, slept_from: std::time::Instant, now: std::time::Instant) -> bool {
        let overslept = now
            .saturating_duration_since(slept_from)
            .saturating_sub(self.period);
        if overslept > 2 * self.heartbeat {
            tracing::warn!(
                stalled_ms = overslept.as_millis() as u64,
                "the controller was stalled; fencing waits for the brokers' heartbeats"
            );
            self.quiet_until = Some(now + 2 * self.heartbeat);
        }
        self.quiet_until.is_none_or(|until| now >= until)
    }
}

/// Every marker's outcome, a marker left without one to be sent again.
fn finished(outcomes: Vec<Vec<Option<MarkerOutcome>>>) -> Vec<Vec<MarkerOutcome>> {
    outcomes
        .into_iter()
        .map(|b| {
            b.into_iter()
                .map(|o| o.unwrap_or_else(|| MarkerOutcome::Retry("not sent".into())))
                .collect()
        })
        .collect()
}

/// The WriteTxnMarkers entries for `asked` (batch, partition) pairs: one per batch, its
/// partitions grouped by topic.
fn marker_requests(
    batches: &[Markers],
    asked: &[(usize, usize)],
) -> Vec<kafka_protocol::messages::write_txn_markers_request::WritableTxnMarker> {
    use kafka_protocol::messages::write_txn_markers_request::{
        WritableTxnMarker, WritableTxnMarkerTopic,
    };
    use kafka_protocol::messages::{ProducerId, TopicName};
    let mut by_batch: BTreeMap<usize, BTreeMap<&str, Vec<i32>>> = BTreeMap::new();
    for &(bi, pi) in asked {
        let (topic, partition) = &batches[bi].partitions[pi];
        by_batch
            .entry(bi)
            .or_default()
            .entry(topic)
            .or_default()
            .push(*partition);
    }
    by_batch
        .into_iter()
        .map(|(bi, topics)| {
            let b = &batches[bi];
            let mut m = WritableTxnMarker::default();
            m.producer_id = ProducerId(b.producer_id);
            m.producer_epoch = b.producer_epoch;
            m.transaction_result = b.commit;
            m.coordinator_epoch = b.coordinator_epoch;
            m.topics = topics
                .into_iter()
                .map(|(topic, partitions)| {
                    let mut t = WritableTxnMarkerTopic::default();
                    t.name = TopicName(kafka_protocol::protocol::StrBytes::from_string(
                        topic.to_string(),
                    ));
                    t.partition_indexes = partitions;
                    t
                })
                .collect();
            m
        })
        .collect()
}

/// What a marker's error code means for its coordinator, as Kafka's
/// TransactionMarkerRequestCompletionHandler reads it.
fn marker_outcome(code: i16, why: String) -> MarkerOutcome {
    match code {
        errors::NONE => MarkerOutcome::Done,
        // The producer could not have written there (Kafka removes the partition).
        errors::UNSUPPORTED_VERSION | errors::UNSUPPORTED_FOR_MESSAGE_FORMAT => MarkerOutcome::Done,
        errors::TRANSACTION_COORDINATOR_FENCED | errors::INVALID_PRODUCER_EPOCH => {
            MarkerOutcome::Fenced(why)
        }
        _ => MarkerOutcome::Retry(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_controller_waits_for_heartbeats_before_it_fences() {
        use std::time::{Duration, Instant};
        let ms = Duration::from_millis;
        let mut g = StallGuard::new(ms(75), ms(300));
        let t = Instant::now();
        assert!(g.may_fence(t, t + ms(75)), "passes on time decide");
        assert!(
            g.may_fence(t + ms(4_000), t + ms(4_600)),
            "a late pass within two heartbeats decides (a slow write before the pause is no stall)"
        );
        // Paused for three seconds: the queued heartbeats come first.
        let resumed = t + ms(3_600);
        assert!(!g.may_fence(t, resumed));
        assert!(!g.may_fence(resumed, resumed + ms(75)));
        assert!(!g.may_fence(resumed + ms(450), resumed + ms(525)));
        assert!(
            g.may_fence(resumed + ms(525), resumed + ms(600)),
            "two heartbeat intervals later it decides"
        );
    }

    #[tokio::test]
    async fn new_data_wakes_the_fetches_of_its_partition_and_finished_ones_are_forgotten() {
        let (a, b) = (FetchWaiters::default(), FetchWaiters::default());
        let on_a = Arc::new(tokio::sync::Notify::new());
        let on_b = Arc::new(tokio::sync::Notify::new());
        a.register(&on_a);
        b.register(&on_b);
        // Woken while not yet waiting: the wake-up is kept for the next wait.
        a.wake();
        let soon = std::time::Duration::from_millis(50);
        assert!(tokio::time::timeout(soon, on_a.notified()).await.is_ok());
        assert!(
            tokio::time::timeout(soon, on_b.notified()).await.is_err(),
            "data on another partition wakes nothing here"
        );
        // A fetch that finished is dropped from the list, at a wake-up or as entries pile up.
        drop(on_a);
        a.wake();
        assert_eq!(a.0.lock().unwrap().len(), 0);
        for _ in 0..1_000 {
            b.register(&Arc::new(tokio::sync::Notify::new()));
        }
        assert!(b.0.lock().unwrap().len() < 64, "dead entries are pruned");
        b.wake();
        assert_eq!(
            b.0.lock().unwrap().len(),
            1,
            "the live fetch stays registered"
        );
    }
}
