//! Fetch: whole batches up to the high watermark, long-polling for `min_bytes`.
//!
//! Fetch v7+ may run in an incremental fetch session (KIP-227, [`crate::fetch_sessions`]):
//! the session supplies the partitions the request leaves out, and the response leaves out
//! the partitions with nothing new.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fjord_log::{FetchSlice, LogError, ReadUpTo};
use fjord_meta::TopicId;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId};
use tokio::time::Instant;

use super::{RequestContext, check_leader_epoch, topic_name};
use crate::broker::{Broker, Partition};
use crate::config::ReplicaSelector;
use crate::errors;
use crate::fetch_sessions::{Answered, Context, FetchParams, PartitionKey, TopicKey};
use crate::frame::Region;

const READ_COMMITTED: i8 = 1;

struct Wanted {
    key: PartitionKey,
    /// The topic's name, if it exists.
    name: Option<String>,
    partition: Option<Arc<Partition>>,
    error: i16,
    params: FetchParams,
}

/// Record ranges at least this large are sent from the segment file (sendfile); smaller ones
/// are read into the response, which costs less than a trip to a blocking thread.
const SENDFILE_MIN_BYTES: u64 = 64 * 1024;

/// The records a partition sends: read into memory, or a segment range sent as is.
enum Records {
    None,
    /// The batches and the records in them.
    Read(Bytes, u64),
    File(FetchSlice),
}

/// How the response relates to a fetch session.
enum Answer {
    /// Every partition asked for, no session.
    Plain,
    /// Every partition asked for, and a new session holding them.
    NewSession,
    /// The partitions of session `.0` at epoch `.1` that have something new.
    Incremental(i32, i32),
}

/// Answers a fetch: the response, and the partitions (topic index, partition index) whose
/// records are sent from the segment files, in response order.
pub async fn handle(
    broker: &Arc<Broker>,
    request: FetchRequest,
    ctx: &RequestContext,
) -> (FetchResponse, Vec<Region>) {
    let mut response = FetchResponse::default();
    let uses_ids = ctx.version >= 13;
    let topic_key = |name: &kafka_protocol::messages::TopicName, id: &uuid::Uuid| {
        if uses_ids {
            TopicKey::Id(*id)
        } else {
            TopicKey::Name(name.0.to_string())
        }
    };
    let mut requested = Vec::new();
    for topic in &request.topics {
        let key = topic_key(&topic.topic, &topic.topic_id);
        for p in &topic.partitions {
            let params = FetchParams {
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
                current_leader_epoch: p.current_leader_epoch,
                log_start_offset: p.log_start_offset,
                last_fetched_epoch: p.last_fetched_epoch,
            };
            let key = PartitionKey {
                topic: key.clone(),
                partition: p.partition,
            };
            requested.push((key, params));
        }
    }
    let mut forgotten = Vec::new();
    for topic in &request.forgotten_topics_data {
        let key = topic_key(&topic.topic, &topic.topic_id);
        for p in &topic.partitions {
            forgotten.push(PartitionKey {
                topic: key.clone(),
                partition: *p,
            });
        }
    }
    let context = {
        let mut sessions = broker
            .fetch_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let context = sessions.begin(
            request.session_id,
            request.session_epoch,
            uses_ids,
            &requested,
            &forgotten,
            broker.now_ms(),
        );
        broker.metrics.fetch_sessions(sessions.stats());
        context
    };
    let (partitions, answer) = match context {
        Context::Error(code) => {
            response.error_code = code;
            return (response, Vec::new());
        }
        Context::Sessionless => (requested, Answer::Plain),
        Context::Full => (requested, Answer::NewSession),
        Context::Incremental {
            id,
            epoch,
            partitions,
        } => (partitions, Answer::Incremental(id, epoch)),
    };
    let read_committed = request.isolation_level == READ_COMMITTED;
    // A follower's fetch names its broker id (KIP-903's replica state from v15).
    let replica = if ctx.version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    let replica = (replica >= 0).then_some(replica);
    // From v11 a consumer may read from any replica (KIP-392: a leader's replica selector
    // sends it to one with `preferred_read_replica`); a follower serves up to its own high
    // watermark. Older consumers, and followers, read from the leader only.
    let any_replica = ctx.version >= 11 && replica.is_none();
    let state = broker.metadata();
    let selection = (any_replica
        && broker.config.replica_selector == Some(ReplicaSelector::RackAware)
        && !request.rack_id.is_empty())
    .then(|| {
        Arc::new(Selection {
            client_rack: request.rack_id.to_string(),
            leader_rack: broker.config.rack.clone(),
            racks: state
                .brokers()
                .filter(|b| !b.fenced)
                .map(|b| (b.id, b.rack.clone()))
                .collect(),
        })
    });
    let mut wanted = Vec::with_capacity(partitions.len());
    for (key, params) in partitions {
        let name = match &key.topic {
            TopicKey::Id(id) => state
                .topic_by_id(&TopicId(id.into_bytes()))
                .map(|t| t.name.clone()),
            TopicKey::Name(n) => Some(n.clone()),
        };
        let partition = name.as_deref().and_then(|n| {
            if any_replica {
                broker.hosted(n, key.partition)
            } else {
                broker.partition(n, key.partition)
            }
        });
        let error = match (&name, &partition) {
            (None, _) => errors::UNKNOWN_TOPIC_ID,
            (Some(n), None) => broker.missing_partition_code(n, key.partition),
            (_, Some(p)) => {
                // A follower knows the epoch from the metadata.
                let current = if p.is_leader() {
                    p.log.leader_epoch()
                } else {
                    p.role().epoch
                };
                match check_leader_epoch(params.current_leader_epoch, current) {
                    // A replica id that is not one of the partition's followers never takes the
                    // follower path (Kafka's followerReplicaOrThrow).
                    errors::NONE if replica.is_some_and(|r| !p.replica().is_follower(r)) => {
                        if params.current_leader_epoch >= 0 {
                            errors::UNKNOWN_LEADER_EPOCH
                        } else {
                            errors::NOT_LEADER_OR_FOLLOWER
                        }
                    }
                    code => code,
                }
            }
        };
        wanted.push(Wanted {
            key,
            name,
            partition,
            error,
            params,
        });
    }
    drop(state);
    let max_bytes = if request.max_bytes <= 0 {
        usize::MAX
    } else {
        request.max_bytes as usize
    };
    let min_bytes = request.min_bytes.max(0) as usize;
    let deadline = Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let wanted = Arc::new(wanted);
    let read = |wanted: Arc<Vec<Wanted>>| {
        let broker = broker.clone();
        let selection = selection.clone();
        async move {
            let now = broker.now_ms();
            let throttle = replica.and_then(|_| {
                let state = broker.metadata();
                let limit = broker.replication_throttle(&state, true)?;
                Some(LeaderThrottle {
                    broker: broker.clone(),
                    state,
                    limit,
                })
            });
            let (parts, total, stop, isr) = tokio::task::spawn_blocking(move || {
                let reader = Reader {
                    max_bytes,
                    read_committed,
                    replica,
                    any_replica,
                    selection: selection.as_deref(),
                    now,
                    throttle,
                };
                reader.read_all(&wanted)
            })
            .await
            .unwrap_or_else(|_| (Vec::new(), 0, true, Vec::new()));
            for (p, request) in isr {
                broker.alter_isr(p, request);
            }
            (parts, total, stop)
        }
    };
    // Registered before the first read, so new data arriving in between wakes the wait.
    let woken = Arc::new(tokio::sync::Notify::new());
    if request.max_wait_ms > 0 && min_bytes > 0 {
        // Once per partition, however often the request names it.
        let mut registered = std::collections::HashSet::new();
        for p in wanted.iter().filter_map(|w| w.partition.as_ref()) {
            if registered.insert(Arc::as_ptr(p)) {
                // A follower reads past the high watermark: new appends wake it.
                match replica {
                    Some(_) => p.append_waiters.register(&woken),
                    None => p.waiters.register(&woken),
                }
            }
        }
    }
    let mut parts = loop {
        let (parts, total, any_error) = read(wanted.clone()).await;
        let finished = total >= min_bytes || any_error || Instant::now() >= deadline;
        if finished {
            break parts;
        }
        if tokio::time::timeout_at(deadline, woken.notified())
            .await
            .is_ok()
        {
            continue; // new data somewhere: read again
        }
        // Timed out: one last read, so the response reflects what is there now.
        break read(wanted.clone()).await.0;
    };
    if parts.len() != wanted.len() {
        // The read task panicked: answer every partition with an error rather than nothing.
        parts = wanted
            .iter()
            .map(|w| {
                let mut pd = empty_partition(w, read_committed);
                pd.error_code = errors::UNKNOWN_SERVER_ERROR;
                (pd, Records::None)
            })
            .collect();
    }
    let answered = |(pd, records): &(PartitionData, Records)| Answered {
        has_records: !matches!(records, Records::None),
        must_send: pd.preferred_read_replica.0 >= 0 || pd.diverging_epoch.epoch >= 0,
        error: pd.error_code,
        high_watermark: pd.high_watermark,
        log_start_offset: pd.log_start_offset,
    };
    let carried = match answer {
        Answer::Plain => vec![true; wanted.len()],
        Answer::NewSession => {
            let answers: Vec<_> = wanted
                .iter()
                .zip(&parts)
                .map(|(w, part)| (w.key.clone(), w.params, answered(part)))
                .collect();
            let privileged = request.replica_id.0 >= 0 || request.replica_state.replica_id.0 >= 0;
            let mut sessions = broker
                .fetch_sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            response.session_id = sessions.create(privileged, uses_ids, &answers, broker.now_ms());
            broker.metrics.fetch_sessions(sessions.stats());
            vec![true; wanted.len()]
        }
        Answer::Incremental(id, epoch) => {
            let answers: Vec<_> = parts.iter().map(answered).collect();
            let mut sessions = broker
                .fetch_sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match sessions.answered(id, epoch, &answers) {
                Ok(carried) => {
                    response.session_id = id;
                    carried
                }
                Err(code) => {
                    response.error_code = code;
                    if code == errors::INVALID_FETCH_SESSION_EPOCH {
                        response.session_id = id;
                    }
                    return (response, Vec::new());
                }
            }
        }
    };
    let mut regions = Vec::new();
    for ((w, (mut data, records)), carry) in wanted.iter().zip(parts).zip(carried) {
        if !carry {
            continue;
        }
        // KIP-951 (v16+): where the partition's leader is, and its endpoint, for a client
        // that asked the wrong broker or in an old epoch (Kafka's KafkaApis: both errors).
        // Kafka leaves `current_leader` empty before v16 (compared with a three-node Kafka 4.4).
        let hint = |n: &str| match data.error_code {
            errors::NOT_LEADER_OR_FOLLOWER => broker.leader_hint(n, w.key.partition),
            errors::FENCED_LEADER_EPOCH => broker.current_leader(n, w.key.partition),
            _ => None,
        };
        if ctx.version >= 16
            && let Some(hint) = w.name.as_deref().and_then(hint)
        {
            super::give_leader_hint!(
                hint,
                data.current_leader,
                response.node_endpoints,
                NodeEndpoint
            );
        }
        let (count, bytes) = match &records {
            Records::None => (0, 0),
            Records::Read(b, count) => (*count, b.len() as u64),
            Records::File(slice) => (slice.records, slice.len),
        };
        if let Some(p) = &w.partition
            && bytes > 0
        {
            broker.metrics.fetched(&p.topic, count, bytes);
        }
        // Consecutive partitions of one topic share a topic entry, as in Kafka.
        let same_topic = response
            .responses
            .last()
            .is_some_and(|t| match &w.key.topic {
                TopicKey::Id(id) => t.topic_id == *id,
                TopicKey::Name(n) => t.topic.0.as_str() == n,
            });
        if !same_topic {
            let mut tr = FetchableTopicResponse::default();
            match &w.key.topic {
                TopicKey::Id(id) => tr.topic_id = *id,
                TopicKey::Name(n) => tr.topic = topic_name(n),
            }
            if let Some(n) = &w.name {
                tr.topic = topic_name(n);
            }
            response.responses.push(tr);
        }
        let topic_index = response.responses.len() - 1;
        let partitions = &mut response.responses[topic_index].partitions;
        match records {
            Records::None => {}
            Records::Read(b, _) => data.records = Some(b),
            Records::File(slice) => regions.push(((topic_index, partitions.len()), slice)),
        }
        partitions.push(data);
    }
    (response, regions)
}

/// A partition's answer before its log is read.
fn empty_partition(w: &Wanted, read_committed: bool) -> PartitionData {
    let mut pd = PartitionData::default();
    pd.partition_index = w.key.partition;
    pd.high_watermark = -1;
    pd.last_stable_offset = -1;
    pd.log_start_offset = -1;
    pd.preferred_read_replica = kafka_protocol::messages::BrokerId(-1);
    pd.records = Some(Bytes::new());
    pd.aborted_transactions = read_committed.then(Vec::new);
    pd
}

/// The ISR changes a follower's fetch made possible, for the controller.
type IsrRequests = Vec<(Arc<Partition>, crate::replica::IsrRequest)>;

/// What a leader's rack-aware replica selector needs to place a consumer (KIP-392).
struct Selection {
    /// The consumer's `client.rack`.
    client_rack: String,
    /// This broker's rack.
    leader_rack: Option<String>,
    /// The live brokers' racks.
    racks: std::collections::HashMap<i32, Option<String>>,
}

/// One read of the wanted partitions.
struct Reader<'a> {
    max_bytes: usize,
    read_committed: bool,
    /// The follower fetching (its broker id), if this is a replica's fetch.
    replica: Option<i32>,
    /// A consumer that may read from a follower (v11+).
    any_replica: bool,
    selection: Option<&'a Selection>,
    now: i64,
    /// A follower's fetch on a broker with a leader replication throttle.
    throttle: Option<LeaderThrottle>,
}

/// The leader side of the replication throttle (Kafka's `shouldLeaderThrottle`): a throttled
/// replica out of sync gets no records while the throttled replicas' rate is over the limit.
struct LeaderThrottle {
    broker: Arc<Broker>,
    state: Arc<fjord_meta::MetadataState>,
    limit: u64,
}

impl Reader<'_> {
    /// The follower a consumer reading `partition` from `offset` is sent to, if any.
    fn preferred_read_replica(&self, partition: &Partition, offset: i64) -> Option<i32> {
        let selection = self.selection?;
        let followers: Vec<_> = partition
            .replica()
            .read_replicas(offset, self.now)
            .into_iter()
            .filter_map(|(id, end, since)| {
                let rack = selection.racks.get(&id)?;
                Some((id, rack.as_deref(), end, since))
            })
            .collect();
        crate::replica::rack_aware_choice(
            &selection.client_rack,
            selection.leader_rack.as_deref(),
            &followers,
        )
    }

    /// Reads every wanted partition once; returns the partition data, the record bytes found,
    /// whether any partition has an error, a divergence or a preferred read replica (which ends a
    /// long poll at once), and, for a follower (`replica`), the ISR changes its fetch offsets
    /// allow (each offset tells the leader what the follower holds, durable, and may move the
    /// high watermark).
    fn read_all(
        &self,
        wanted: &[Wanted],
    ) -> (Vec<(PartitionData, Records)>, usize, bool, IsrRequests) {
        let (max_bytes, read_committed, replica, now) =
            (self.max_bytes, self.read_committed, self.replica, self.now);
        let mut out = Vec::with_capacity(wanted.len());
        let mut total = 0usize;
        let mut any_error = false;
        let mut isr = Vec::new();
        for w in wanted {
            let mut pd = empty_partition(w, read_committed);
            let Some(partition) = w.partition.as_ref().filter(|_| w.error == errors::NONE) else {
                pd.error_code = w.error;
                any_error = true;
                out.push((pd, Records::None));
                continue;
            };
            let log = &partition.log;
            let leads = partition.is_leader();
            if !leads && !self.any_replica {
                // Leadership moved while the fetch waited.
                pd.error_code = errors::NOT_LEADER_OR_FOLLOWER;
                any_error = true;
                out.push((pd, Records::None));
                continue;
            }
            if leads && let Some(id) = self.preferred_read_replica(partition, w.params.fetch_offset)
            {
                // Sent elsewhere: no records, answered at once (Kafka's readFromLog).
                pd.preferred_read_replica = kafka_protocol::messages::BrokerId(id);
                log_offsets(&mut pd, log);
                any_error = true;
                out.push((pd, Records::None));
                continue;
            }
            if let Some(replica) = replica {
                match follower_read(partition, replica, &w.params, now) {
                    Ok(Some(request)) => isr.push((partition.clone(), request)),
                    Ok(None) => {}
                    Err(FollowerRead::Diverging(epoch, end_offset)) => {
                        pd.diverging_epoch.epoch = epoch;
                        pd.diverging_epoch.end_offset = end_offset;
                        log_offsets(&mut pd, log);
                        any_error = true;
                        out.push((pd, Records::None));
                        continue;
                    }
                    Err(FollowerRead::Error(code)) => {
                        pd.error_code = code;
                        pd.high_watermark = log.high_watermark();
                        pd.log_start_offset = log.log_start_offset();
                        any_error = true;
                        out.push((pd, Records::None));
                        continue;
                    }
                }
            }
            // A throttled replica out of sync, over the leader's rate: no records this time.
            let throttled = match (&self.throttle, replica) {
                (Some(t), Some(r)) => {
                    !partition.replica().in_sync(r)
                        && t.broker
                            .throttled(&t.state, &partition.topic, partition.index, true)
                }
                _ => false,
            };
            if let Some(t) = self.throttle.as_ref().filter(|_| throttled)
                && t.broker.leader_quota.exceeded(t.limit, now)
            {
                log_offsets(&mut pd, log);
                out.push((pd, Records::None));
                continue;
            }
            let budget = (w.params.max_bytes.max(0) as usize).min(max_bytes.saturating_sub(total));
            // KIP-74: the first batch of the first partition with data comes back even if it is
            // larger than the limits, so a consumer can always make progress.
            let min_one = total == 0;
            // read_committed consumers stop at the last stable offset and get the aborted
            // transactions of what they read, to drop those records.
            let upper = if replica.is_some() {
                ReadUpTo::LogEnd
            } else if read_committed {
                ReadUpTo::LastStable
            } else {
                ReadUpTo::HighWatermark
            };
            let read = log.read(w.params.fetch_offset, budget, upper, min_one);
            let mut records = Records::None;
            match read {
                Ok(r) => {
                    pd.high_watermark = r.high_watermark;
                    pd.last_stable_offset = r.last_stable_offset;
                    pd.log_start_offset = r.log_start_offset;
                    if let Some(slice) = r.data {
                        if read_committed {
                            pd.aborted_transactions = Some(
                                log.aborted_transactions(w.params.fetch_offset, slice.next_offset)
                                    .into_iter()
                                    .map(|a| {
                                        let mut t = AbortedTransaction::default();
                                        t.producer_id = ProducerId(a.producer_id);
                                        t.first_offset = a.first_offset;
                                        t
                                    })
                                    .collect(),
                            );
                        }
                        total += slice.len as usize;
                        if let Some(t) = self.throttle.as_ref().filter(|_| throttled) {
                            t.broker.leader_quota.record(slice.len, now);
                        }
                        if slice.len >= SENDFILE_MIN_BYTES && slice.file.fd().is_some() {
                            records = Records::File(slice);
                        } else {
                            match slice.read() {
                                Ok(bytes) => {
                                    records = Records::Read(Bytes::from(bytes), slice.records);
                                }
                                Err(e) => {
                                    tracing::error!(topic = %partition.topic, partition = w.key.partition, error = %e, "reading fetched range");
                                    total -= slice.len as usize;
                                    pd.error_code = errors::KAFKA_STORAGE_ERROR;
                                    any_error = true;
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    if let LogError::OffsetOutOfRange {
                        log_start_offset, ..
                    } = &e
                    {
                        pd.log_start_offset = *log_start_offset;
                        pd.high_watermark = log.high_watermark();
                        pd.last_stable_offset = log.last_stable_offset();
                    }
                    pd.error_code = errors::from_log_error(&e);
                    any_error = true;
                }
            }
            out.push((pd, records));
        }
        (out, total, any_error, isr)
    }
}

/// A partition's answer without records: the log's high watermark, last stable offset and log
/// start offset as they are now.
fn log_offsets(pd: &mut PartitionData, log: &fjord_log::Log) {
    pd.high_watermark = log.high_watermark();
    pd.last_stable_offset = log.last_stable_offset();
    pd.log_start_offset = log.log_start_offset();
}

/// Why a follower's fetch of a partition gets no records.
enum FollowerRead {
    /// Its log parts from the leader's at the end of this epoch, at this offset (KIP-279).
    Diverging(i32, i64),
    Error(i16),
}

/// A follower's fetch as the leader sees it, before the read: its last fetched epoch checked
/// against this log (Kafka's `readRecords` with `lastFetchedEpoch`), then its fetch offset
/// noted as what it holds durably; returns the ISR expansion that allows.
fn follower_read(
    p: &Partition,
    replica: i32,
    params: &FetchParams,
    now: i64,
) -> Result<Option<crate::replica::IsrRequest>, FollowerRead> {
    let log = &p.log;
    if params.last_fetched_epoch >= 0 {
        let (epoch, end) = log.end_offset_for_epoch(params.last_fetched_epoch);
        if epoch < 0 || end < 0 {
            // No epoch at or below the follower's: nothing to compare (Kafka answers
            // OFFSET_OUT_OF_RANGE and the follower starts from the leader's range).
            return Err(FollowerRead::Error(errors::OFFSET_OUT_OF_RANGE));
        }
        if epoch < params.last_fetched_epoch || end < params.fetch_offset {
            return Err(FollowerRead::Diverging(epoch, end));
        }
    }
    let leader_end = log.log_end_offset();
    if params.fetch_offset > leader_end || params.fetch_offset < log.log_start_offset() {
        return Err(FollowerRead::Error(errors::OFFSET_OUT_OF_RANGE));
    }
    let mut state = p.replica();
    let request = state.follower_fetched(
        replica,
        params.fetch_offset,
        now,
        leader_end,
        log.high_watermark(),
    );
    p.advance(&state);
    Ok(request)
}
