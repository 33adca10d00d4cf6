//! Replica fetchers: a follower copies its leaders' logs (Kafka's `ReplicaFetcherThread`).
//! One task per leader broker carries every partition followed from it in one long-polling
//! Fetch (with this broker's replica id), appends what comes back with the leader's offsets
//! and epochs, makes every partition of the answer durable together (the broker's flusher),
//! and only then fetches again, so the offset a fetch asks from is
//! durable here: the leader counts it towards the high watermark. A divergent tail (the
//! leader answers with the epoch where the logs part, KIP-279) is truncated before anything
//! else is fetched.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use fjord_log::{AppendOrigin, LogError};
use fjord_meta::{PartitionKey, TopicId};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::broker::{Broker, Leadership, Partition};
use crate::errors;

/// How long a follower's fetch waits at the leader for new data.
const FETCH_MAX_WAIT_MS: i32 = 500;
/// The most one fetch brings back, and per partition (Kafka's `replica.fetch.*` defaults).
const FETCH_MAX_BYTES: i32 = 10 << 20;
const FETCH_PARTITION_MAX_BYTES: i32 = 1 << 20;
/// The pause after a failed fetch or an error for a partition (`replica.fetch.backoff.ms`).
const BACKOFF: Duration = Duration::from_millis(1000);

/// How long a follower whose every partition is throttled waits before it looks again.
const THROTTLED_WAIT: Duration = Duration::from_millis(100);

/// A partition followed from one leader.
#[derive(Debug, Clone)]
struct Followed {
    partition: Arc<Partition>,
    topic_id: TopicId,
    leader_epoch: i32,
    /// Not fetched before this (after an error for it).
    paused_until: Option<tokio::time::Instant>,
}

/// The fetcher of one leader's partitions.
#[derive(Debug, Default)]
struct LeaderFetcher {
    partitions: Mutex<HashMap<PartitionKey, Followed>>,
    /// New partitions to follow: the task wakes.
    changed: tokio::sync::Notify,
    stopped: AtomicBool,
}

/// Every replica fetcher of this broker, by leader.
#[derive(Debug)]
pub(crate) struct Fetchers {
    broker: Weak<Broker>,
    runtime: tokio::runtime::Handle,
    by_leader: Mutex<HashMap<i32, Arc<LeaderFetcher>>>,
}

impl Fetchers {
    pub(crate) fn new(broker: Weak<Broker>, runtime: tokio::runtime::Handle) -> Self {
        Self {
            broker,
            runtime,
            by_leader: Mutex::default(),
        }
    }

    /// Follows `partition` from `leader` in `leader_epoch` (no leader: stops following it).
    pub(crate) fn follow(
        &self,
        partition: &Arc<Partition>,
        topic_id: TopicId,
        leader: i32,
        leader_epoch: i32,
    ) {
        let key = (partition.topic.clone(), partition.index);
        let mut by_leader = self.by_leader.lock().unwrap_or_else(|p| p.into_inner());
        for f in by_leader.values() {
            f.partitions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
        if leader < 0 {
            drop_idle(&mut by_leader);
            return;
        }
        let fetcher = by_leader.entry(leader).or_insert_with(|| {
            let fetcher = Arc::new(LeaderFetcher::default());
            let weak = self.broker.clone();
            let f = fetcher.clone();
            self.runtime
                .spawn(async move { run(weak, leader, f).await });
            fetcher
        });
        fetcher
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key,
                Followed {
                    partition: partition.clone(),
                    topic_id,
                    leader_epoch,
                    paused_until: None,
                },
            );
        fetcher.changed.notify_one();
        drop_idle(&mut by_leader);
    }

    /// Stops following a partition (this broker leads it now, or no longer holds it).
    pub(crate) fn unfollow(&self, key: &PartitionKey) {
        let mut by_leader = self.by_leader.lock().unwrap_or_else(|p| p.into_inner());
        for f in by_leader.values() {
            f.partitions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(key);
        }
        drop_idle(&mut by_leader);
    }

    /// Stops every fetcher (the broker is closing).
    pub(crate) fn stop(&self) {
        let by_leader =
            std::mem::take(&mut *self.by_leader.lock().unwrap_or_else(|p| p.into_inner()));
        for f in by_leader.values() {
            f.stopped.store(true, Ordering::Release);
            f.changed.notify_one();
        }
    }
}

/// Stops the fetchers left without partitions (their tasks end, their connections close).
fn drop_idle(by_leader: &mut HashMap<i32, Arc<LeaderFetcher>>) {
    by_leader.retain(|_, f| {
        let idle = f
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        if idle {
            f.stopped.store(true, Ordering::Release);
            f.changed.notify_one();
        }
        !idle
    });
}

/// The fetch loop for one leader: runs until it has nothing left to follow from it.
async fn run(broker: Weak<Broker>, leader: i32, fetcher: Arc<LeaderFetcher>) {
    let mut client: Option<(String, fjord_client::Client)> = None;
    let mut failures = 0u32;
    let mut rotation = 0usize;
    loop {
        if fetcher.stopped.load(Ordering::Acquire) {
            return;
        }
        let now = tokio::time::Instant::now();
        let mut followed: Vec<(PartitionKey, Followed)> = fetcher
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, f)| f.paused_until.is_none_or(|t| t <= now))
            // A log that failed (an I/O error) is not followed: it cannot make what it
            // fetches durable, and its fetch offset would claim otherwise.
            .filter(|(_, f)| f.partition.log.failure().is_none())
            .map(|(k, f)| (k.clone(), f.clone()))
            .collect();
        // A different partition first each time, so one with a batch larger than the limits
        // (only the first one may exceed them) is not starved (Kafka rotates the same way).
        followed.sort_by(|a, b| a.0.cmp(&b.0));
        if !followed.is_empty() {
            rotation = rotation.wrapping_add(1);
            let n = followed.len();
            followed.rotate_left(rotation % n);
        }
        if followed.is_empty() {
            if broker.strong_count() == 0 {
                return;
            }
            let _ =
                tokio::time::timeout(Duration::from_millis(200), fetcher.changed.notified()).await;
            continue;
        }
        let Some(b) = broker.upgrade() else { return };
        let Some(addr) = b
            .metadata()
            .broker(leader)
            .map(|m| format!("{}:{}", m.host, m.port))
        else {
            drop(b);
            tokio::time::sleep(BACKOFF).await;
            continue;
        };
        let node = b.config.node_id;
        // The follower side of the replication throttle (Kafka's `shouldFollowerThrottle`):
        // throttled replicas out of sync are left out of the fetch while the rate of what they
        // copied is over `follower.replication.throttled.rate`.
        let state = b.metadata();
        let throttled: HashSet<PartitionKey> = match b.replication_throttle(&state, false) {
            None => HashSet::new(),
            Some(limit) => {
                let throttled: HashSet<PartitionKey> = followed
                    .iter()
                    .filter(|(k, f)| {
                        !f.partition.replica().in_sync(node)
                            && b.throttled(&state, &k.0, k.1, false)
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                if b.follower_quota.exceeded(limit, b.now_ms()) {
                    followed.retain(|(k, _)| !throttled.contains(k));
                }
                throttled
            }
        };
        drop(state);
        // What a fetch reports (each partition's log end) must be durable here. It normally
        // is (the last answer's appends were synced before this fetch), but not for a
        // partition taken over from another leader's task while its sync was pending, or
        // whose last answer failed after its append.
        let unsynced: Vec<Arc<Partition>> = followed
            .iter()
            .filter(|(_, f)| f.partition.log.durable_offset() < f.partition.log.log_end_offset())
            .map(|(_, f)| f.partition.clone())
            .collect();
        if !unsynced.is_empty() {
            let waits: Vec<_> = unsynced
                .iter()
                .map(|p| {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    b.flusher.sync_to(
                        p,
                        p.log.log_end_offset(),
                        Box::new(move |r| {
                            let _ = tx.send(r.is_ok());
                        }),
                    );
                    rx
                })
                .collect();
            drop(b);
            for wait in waits {
                let _ = wait.await;
            }
            followed.retain(|(_, f)| {
                f.partition.log.durable_offset() >= f.partition.log.log_end_offset()
            });
        } else {
            drop(b);
        }
        if followed.is_empty() {
            tokio::time::sleep(THROTTLED_WAIT).await;
            continue;
        }
        if client
            .as_ref()
            .is_none_or(|(a, c)| *a != addr || c.is_broken())
        {
            let id = format!("fjord-replica-fetcher-{node}");
            match fjord_client::Client::connect(&addr, &id, Duration::from_secs(10)).await {
                Ok(c) => client = Some((addr.clone(), c)),
                Err(e) => {
                    failures += 1;
                    if failures == 3 {
                        tracing::warn!(leader, %addr, error = %e, "cannot reach a partition leader to replicate from; retrying");
                    }
                    client = None;
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            }
        }
        let Some((_, c)) = client.as_ref() else {
            continue;
        };
        let version = c.version::<FetchRequest>().unwrap_or(0);
        let request = fetch_request(node, version, &followed);
        let response = match c.send(&request).await {
            Ok(r) => r,
            Err(e) => {
                failures += 1;
                if failures == 3 {
                    tracing::warn!(leader, %addr, error = %e, "replica fetches fail; retrying");
                }
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        failures = 0;
        if response.error_code != errors::NONE {
            tracing::warn!(
                leader,
                code = response.error_code,
                "the leader refused a replica fetch"
            );
            tokio::time::sleep(BACKOFF).await;
            continue;
        }
        let sent: HashMap<PartitionKey, i64> = request
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| ((t.topic.0.to_string(), p.partition), p.fetch_offset))
            })
            .collect();
        let mut answers: Vec<(Followed, i64, PartitionData)> = Vec::new();
        let by_id: HashMap<(uuid::Uuid, i32), &Followed> = followed
            .iter()
            .map(|(k, f)| ((uuid::Uuid::from_bytes(f.topic_id.0), k.1), f))
            .collect();
        let by_name: HashMap<(&str, i32), &Followed> = followed
            .iter()
            .map(|(k, f)| ((k.0.as_str(), k.1), f))
            .collect();
        for t in response.responses {
            for p in t.partitions {
                let f = by_id
                    .get(&(t.topic_id, p.partition_index))
                    .or_else(|| by_name.get(&(t.topic.0.as_str(), p.partition_index)));
                if let Some(f) = f {
                    let key = (f.partition.topic.clone(), f.partition.index);
                    if let Some(&offset) = sent.get(&key) {
                        answers.push(((*f).clone(), offset, p));
                    }
                }
            }
        }
        let Some(b) = broker.upgrade() else { return };
        let now_ms = b.now_ms();
        for (f, _, p) in &answers {
            if throttled.contains(&(f.partition.topic.clone(), f.partition.index)) {
                let bytes = p.records.as_ref().map_or(0, |r| r.len() as u64);
                b.follower_quota.record(bytes, now_ms);
            }
        }
        let outcomes = tokio::task::spawn_blocking(move || {
            // Every partition's records are appended first, then all are made durable
            // together (one filesystem-wide sync where the flusher has it), before the next
            // fetch reports the new log ends to the leader.
            let mut outcomes = Vec::with_capacity(answers.len());
            let (tx, rx) = std::sync::mpsc::channel();
            let mut syncing = 0;
            for (f, offset, p) in answers {
                let key = (f.partition.topic.clone(), f.partition.index);
                let leadership = Leadership {
                    leader,
                    epoch: f.leader_epoch,
                };
                let outcome = take(&f.partition, leadership, offset, p, now_ms);
                if matches!(outcome, Ok(true)) {
                    let tx = tx.clone();
                    let at = outcomes.len();
                    syncing += 1;
                    b.flusher.sync_to(
                        &f.partition,
                        f.partition.log.log_end_offset(),
                        Box::new(move |r| {
                            let _ = tx.send((at, r.as_ref().err().map(ToString::to_string)));
                        }),
                    );
                }
                outcomes.push((key, f.leader_epoch, outcome.map(|_| ())));
            }
            drop(tx);
            for _ in 0..syncing {
                match rx.recv() {
                    Ok((at, Some(e))) => outcomes[at].2 = Err(e),
                    Ok((_, None)) => {}
                    Err(_) => break,
                }
            }
            outcomes
        })
        .await
        .unwrap_or_default();
        let mut followed = fetcher.partitions.lock().unwrap_or_else(|p| p.into_inner());
        for (key, epoch, outcome) in outcomes {
            if let Err(reason) = outcome
                && let Some(f) = followed.get_mut(&key).filter(|f| f.leader_epoch == epoch)
            {
                tracing::debug!(topic = %key.0, partition = key.1, leader, %reason, "replica fetch paused for this partition");
                f.paused_until = Some(tokio::time::Instant::now() + BACKOFF);
            }
        }
    }
}

/// A sessionless Fetch as a follower: from each partition's log end, with its last epoch
/// (the leader answers a divergence instead of data).
fn fetch_request(node: i32, version: i16, followed: &[(PartitionKey, Followed)]) -> FetchRequest {
    let mut request = FetchRequest::default();
    // The replica id moved into the replica state in v15 (KIP-903).
    if version >= 15 {
        request.replica_state.replica_id = BrokerId(node);
        request.replica_state.replica_epoch = -1;
    } else {
        request.replica_id = BrokerId(node);
    }
    request.max_wait_ms = FETCH_MAX_WAIT_MS;
    request.min_bytes = 1;
    request.max_bytes = FETCH_MAX_BYTES;
    request.session_id = 0;
    request.session_epoch = -1;
    let mut topics: Vec<FetchTopic> = Vec::new();
    for ((name, index), f) in followed {
        let log = &f.partition.log;
        let mut p = FetchPartition::default();
        p.partition = *index;
        p.current_leader_epoch = f.leader_epoch;
        p.fetch_offset = log.log_end_offset();
        p.last_fetched_epoch = log.leader_epochs().last().map_or(-1, |e| e.epoch);
        p.log_start_offset = log.log_start_offset();
        // At least one whole batch of the largest size the topic takes.
        let largest = i32::try_from(log.config().max_message_bytes).unwrap_or(i32::MAX);
        p.partition_max_bytes = FETCH_PARTITION_MAX_BYTES.max(largest);
        let id = uuid::Uuid::from_bytes(f.topic_id.0);
        match topics.last_mut().filter(|t| t.topic_id == id) {
            Some(t) => t.partitions.push(p),
            None => {
                let mut t = FetchTopic::default();
                t.topic = TopicName(StrBytes::from_string(name.clone()));
                t.topic_id = id;
                t.partitions.push(p);
                topics.push(t);
            }
        }
    }
    request.topics = topics;
    request
}

/// Takes the leader's answer for one partition, fetched from `offset` as a follower of
/// `leadership`: truncates a divergent tail, or appends the records (true: they are to be
/// made durable before the next fetch) and takes the leader's high watermark and log
/// start. An answer to a role this broker no longer has
/// (the partition's leader or epoch changed since; it may lead it now) or from an offset the
/// log has moved from is dropped: the role lock is held throughout, so no role change
/// interleaves with the write. Blocking.
fn take(
    p: &Partition,
    leadership: Leadership,
    offset: i64,
    data: PartitionData,
    now_ms: i64,
) -> Result<bool, String> {
    let role = p.role();
    if *role != leadership || p.log.log_end_offset() != offset {
        return Ok(false);
    }
    let log = &p.log;
    match data.error_code {
        errors::NONE => {}
        errors::OFFSET_OUT_OF_RANGE => {
            // Before the leader's log start (retention moved on): start over there. Past its
            // end (the leader lost a tail this log has): cut back to what it has committed.
            let end = log.log_end_offset();
            let result = if end < data.log_start_offset {
                log.truncate_fully_and_start_at(data.log_start_offset)
            } else if data.high_watermark >= 0 && data.high_watermark < end {
                log.truncate_to(data.high_watermark.max(log.log_start_offset()))
            } else {
                // Nothing to cut: ask again after a pause, not in a tight loop.
                return Err(format!(
                    "fetch offset {end} out of the leader's range (log start {}, high watermark {})",
                    data.log_start_offset, data.high_watermark
                ));
            };
            tracing::info!(topic = %p.topic, partition = p.index, end, leader_log_start = data.log_start_offset, leader_high_watermark = data.high_watermark, "the follower's fetch offset is out of the leader's range; truncated");
            return result.map(|()| false).map_err(|e| e.to_string());
        }
        code => return Err(format!("the leader answered error code {code}")),
    }
    if data.diverging_epoch.epoch >= 0 || data.diverging_epoch.end_offset >= 0 {
        let target = truncation_offset(
            log,
            data.diverging_epoch.epoch,
            data.diverging_epoch.end_offset,
        );
        tracing::info!(topic = %p.topic, partition = p.index, from = log.log_end_offset(), to = target, epoch = data.diverging_epoch.epoch, "truncating a divergent tail to follow the leader");
        return log
            .truncate_to(target)
            .map(|()| false)
            .map_err(|e| e.to_string());
    }
    let records = data.records.unwrap_or_default();
    let before_append = log.log_end_offset();
    if !records.is_empty() {
        append(p, &records, now_ms).map_err(|e| e.to_string())?;
    }
    // The high watermark first: the log start may not pass it (Kafka's order).
    let end = log.log_end_offset();
    let before = log.high_watermark();
    let high_watermark = log.advance_high_watermark(data.high_watermark.min(end));
    if high_watermark > before {
        p.waiters.wake();
    }
    let start = data.log_start_offset.min(high_watermark);
    if start > log.log_start_offset() {
        log.advance_log_start_offset(start)
            .map_err(|e| e.to_string())?;
    }
    Ok(log.log_end_offset() > before_append)
}

/// Appends the leader's batches as they are; a trailing partial batch (cut by the fetch size)
/// is left for the next fetch.
fn append(p: &Partition, records: &[u8], now_ms: i64) -> Result<(), LogError> {
    let mut whole = 0;
    for batch in fjord_record::split_batches(records) {
        match batch {
            Ok(b) => whole += b.len(),
            Err(_) => break,
        }
    }
    if whole == 0 {
        return Ok(());
    }
    p.log
        .append(&records[..whole], AppendOrigin::Replica, now_ms)?;
    Ok(())
}

/// Where a follower cuts its log when the leader says the logs part at the end of `epoch`,
/// `end_offset` (Kafka's `getOffsetTruncationState`): to the smaller of the two logs' ends of
/// that epoch when the follower has it; else to the end of its own largest earlier epoch (the
/// next fetch asks again from there).
fn truncation_offset(log: &fjord_log::Log, epoch: i32, end_offset: i64) -> i64 {
    let end = log.log_end_offset();
    if epoch < 0 {
        return end_offset.min(end);
    }
    match log.end_offset_for_epoch(epoch) {
        (e, own_end) if e == epoch => end_offset.min(own_end),
        (e, own_end) if e >= 0 => own_end.min(end),
        _ => end_offset.min(end),
    }
}
