//! Produce: validate and append each partition's batches; acks 0, 1 and all.

use std::collections::HashMap;
use std::sync::Arc;

use fjord_log::{AppendInfo, AppendOrigin, LogError, SyncRequest};
use fjord_record::BatchHeader;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{CloseReason, RequestContext, str_bytes};
use crate::broker::{Broker, Partition};
use crate::errors;
use crate::replica::CommitError;

/// A refusal: the Kafka error code, what to tell the producer, and the records at fault by
/// their index in the batch (KIP-467), if the log named any.
struct Refusal {
    code: i16,
    message: String,
    records: Vec<(i32, String)>,
}

impl From<(i16, String)> for Refusal {
    fn from((code, message): (i16, String)) -> Self {
        Self {
            code,
            message,
            records: Vec::new(),
        }
    }
}

impl From<LogError> for Refusal {
    fn from(e: LogError) -> Self {
        let code = errors::from_log_error(&e);
        match e {
            LogError::RecordsRejected {
                message, records, ..
            } => Self {
                code,
                message,
                records,
            },
            e => (code, e.to_string()).into(),
        }
    }
}

/// A partition's part of the request: refused at once, or to be appended.
enum Pending {
    Refused(Refusal),
    /// Append these batches, with the verification guard of their transactional batches.
    Append(Arc<Partition>, bytes::Bytes, Option<u64>),
}

/// The appends of one request run on blocking threads in groups of consecutive partitions of
/// about this many bytes: a request spread thin over many partitions costs one thread hand-off,
/// not one per partition, while large requests still append partitions side by side.
const APPEND_GROUP_BYTES: usize = 256 * 1024;

/// An append and the leader epoch it was made in.
type Appended = Result<(AppendInfo, i32), Refusal>;

/// What the connection does with a produce request once its batches are appended.
pub enum Produced {
    /// Answer now (`None`: acks=0, no answer).
    Now(Option<ProduceResponse>),
    /// Answer when this finishes: the fsyncs acks=all waits for. The connection reads and
    /// appends the next requests meanwhile, so pipelined produce requests share fsyncs.
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = ProduceResponse> + Send>>),
}

impl std::fmt::Debug for Produced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Now(_) => "Produced::Now",
            Self::Later(_) => "Produced::Later",
        })
    }
}

/// Appends every partition's batches (all partitions at once, each on a blocking thread) and
/// returns once they are in the log, in request order; waiting for durability is left to the
/// returned future, so the caller can take the next request meanwhile.
pub async fn handle(
    broker: &Arc<Broker>,
    request: ProduceRequest,
    ctx: &RequestContext,
) -> Result<Produced, CloseReason> {
    let acks = request.acks;
    let timeout = std::time::Duration::from_millis(request.timeout_ms.max(0) as u64);
    let guards = begin_verifications(broker, &request);
    let remote = verify_remote_transaction(broker, &request, &guards).await;
    let mut pending: Vec<(usize, i32, Pending)> = Vec::new();
    let mut response = ProduceResponse::default();
    let mut names = Vec::new();
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let mut topic_response = TopicProduceResponse::default();
        topic_response.name = topic.name.clone();
        topic_response.topic_id = topic.topic_id;
        let t = response.responses.len();
        response.responses.push(topic_response);
        for pd in topic.partition_data {
            let outcome = if !matches!(acks, -1..=1) {
                Pending::Refused(
                    (
                        errors::INVALID_REQUIRED_ACKS,
                        format!("acks={acks} is not one of -1, 0, 1"),
                    )
                        .into(),
                )
            } else if name == crate::coordinator::group::OFFSETS_TOPIC
                || name == crate::coordinator::txn::TXN_TOPIC
            {
                Pending::Refused(
                    (
                        errors::INVALID_TOPIC_EXCEPTION,
                        format!("cannot append to internal topic {name}"),
                    )
                        .into(),
                )
            } else if let Some(refused) = more_than_one_batch(pd.records.as_deref(), ctx.version) {
                Pending::Refused(refused.into())
            } else {
                match check_transaction(
                    broker,
                    request.transactional_id.as_ref().map(|t| t.0.as_str()),
                    &name,
                    pd.index,
                    pd.records.as_deref(),
                    &guards,
                    remote.as_ref(),
                ) {
                    Err(refused) => Pending::Refused(refused.into()),
                    Ok(guard) => match (broker.partition(&name, pd.index), pd.records) {
                        (None, _) => Pending::Refused(
                            (
                                broker.missing_partition_code(&name, pd.index),
                                format!("this server does not host {name}-{}", pd.index),
                            )
                                .into(),
                        ),
                        (Some(_), None) => Pending::Refused(
                            (
                                errors::INVALID_RECORD,
                                "the partition's records are null".to_string(),
                            )
                                .into(),
                        ),
                        (Some(p), Some(records)) => check_isr(p, records, acks, guard),
                    },
                }
            };
            pending.push((t, pd.index, outcome));
        }
        names.push(name);
    }
    // Every append is in the log before the next request is read (request order); what
    // remains is the fsync wait.
    let mut appended = append_all(&mut pending, broker.now_ms()).await.into_iter();
    let in_log: Vec<_> = pending
        .into_iter()
        .map(|(t, index, outcome)| {
            let outcome = match outcome {
                Pending::Refused(r) => Err(r),
                Pending::Append(p, _, _) => match appended.next() {
                    Some(appended) => appended.map(|(info, epoch)| (p, info, epoch)),
                    None => Err((
                        errors::UNKNOWN_SERVER_ERROR,
                        "append task failed".to_string(),
                    )
                        .into()),
                },
            };
            (t, index, outcome)
        })
        .collect();
    // Every partition's fsync is asked for now, all at once, before any is awaited and before
    // the response waits its turn behind earlier pipelined ones (asked only when the
    // connection's writer reached this response, a request's syncs could not begin before the
    // previous request's response had gone: one sync round after another per connection). One
    // round of the flusher takes them all, and shares each fsync with other requests for the
    // same partition. Whatever
    // the acks, an append counts towards the high watermark only once durable here as the
    // flush policy asks; acks=all then waits for the in-sync replicas.
    let mut syncs = Vec::new();
    let waits: Vec<_> = in_log
        .into_iter()
        .map(|(t, index, outcome)| {
            let wait = outcome.map(|(p, info, epoch)| {
                let durable = match p.log.sync_needed(&info) {
                    None => {
                        p.committed(epoch, info.next_offset());
                        None
                    }
                    // Nobody waits for an acks=0/1 write's sync: only the newest of a
                    // partition's is kept, the high watermark it moves covers the rest.
                    Some(target) if acks != -1 => {
                        let synced = p.clone();
                        syncs.push(SyncRequest::to_latest(
                            p.clone(),
                            epoch,
                            target,
                            Box::new(move |r: &Result<(), LogError>| {
                                if r.is_ok() {
                                    synced.committed(epoch, target);
                                }
                            }),
                        ));
                        None
                    }
                    Some(target) => {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        let synced = p.clone();
                        syncs.push(SyncRequest::to(
                            p.clone(),
                            target,
                            Box::new(move |r: &Result<(), LogError>| {
                                if r.is_ok() {
                                    synced.committed(epoch, target);
                                }
                                let r = r.as_ref().map_err(|e| {
                                    Refusal::from((errors::from_log_error(e), e.to_string()))
                                });
                                let _ = tx.send(r.map(|_| ()));
                            }),
                        ));
                        Some(rx)
                    }
                };
                (p, info, epoch, durable)
            });
            (t, index, wait)
        })
        .collect();
    broker.flusher.sync_all(syncs);
    let broker = broker.clone();
    let client = ctx.client_id.clone();
    let version = ctx.version;
    let finish = async move {
        for (t, index, wait) in waits {
            let name = &names[t];
            let outcome = match wait {
                Err(r) => Err(r),
                Ok((_, info, _, _)) if acks != -1 => Ok(info),
                Ok((p, info, epoch, durable)) => {
                    let synced = match durable {
                        None => Ok(()),
                        Some(durable) => durable.await.unwrap_or_else(|_| {
                            Err((
                                errors::UNKNOWN_SERVER_ERROR,
                                "the fsync was abandoned (broker shutting down)".to_string(),
                            )
                                .into())
                        }),
                    };
                    match synced {
                        Err(r) => Err(r),
                        Ok(()) => match p.wait_committed(info.next_offset(), epoch, timeout).await
                        {
                            Err(e) => Err(Refusal::from((e.code(), e.to_string()))),
                            // Kafka's DelayedProduce: committed, but the ISR shrank below
                            // min.insync.replicas meanwhile.
                            Ok(()) if p.replica().under_min_isr(
                                p.min_insync_replicas
                                    .load(std::sync::atomic::Ordering::Relaxed),
                            ) =>
                            {
                                Err(Refusal::from((
                                    errors::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                                    "the in-sync replicas shrank below min.insync.replicas while the write waited".to_string(),
                                )))
                            }
                            Ok(()) => Ok(info),
                        },
                    }
                }
            };
            let mut pr = PartitionProduceResponse::default();
            pr.index = index;
            pr.base_offset = -1;
            pr.log_append_time_ms = -1;
            pr.log_start_offset = -1;
            match outcome {
                Ok(info) => {
                    if info.duplicate {
                        broker
                            .metrics
                            .duplicate_batches
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::debug!(client = %client, topic = %name, partition = index, offset = info.first_offset, "duplicate batch from an idempotent producer; answered with its offsets");
                    } else {
                        broker.metrics.produced(name, info.record_count, info.bytes);
                    }
                    pr.base_offset = info.first_offset;
                    pr.log_append_time_ms = info.log_append_time;
                    pr.log_start_offset = info.log_start_offset;
                }
                Err(Refusal {
                    code,
                    message,
                    records,
                }) => {
                    tracing::debug!(client = %client, topic = %name, partition = index, code, %message, "produce refused");
                    pr.error_code = code;
                    // KIP-951: where the partition's leader is, so the client need not wait
                    // for a metadata refresh (v10+).
                    if code == errors::NOT_LEADER_OR_FOLLOWER
                        && version >= 10
                        && let Some(hint) = broker.leader_hint(name, index)
                    {
                        super::give_leader_hint!(
                            hint,
                            pr.current_leader,
                            response.node_endpoints,
                            NodeEndpoint
                        );
                    }
                    // Like Kafka, only record validation errors carry a message (the client
                    // shows the error's own text otherwise); the reason is logged above.
                    pr.error_message = (!records.is_empty()).then(|| str_bytes(message));
                    pr.record_errors = records
                        .into_iter()
                        .map(|(batch_index, message)| {
                            let mut e = BatchIndexAndErrorMessage::default();
                            e.batch_index = batch_index;
                            e.batch_index_error_message = Some(str_bytes(message));
                            e
                        })
                        .collect();
                }
            }
            response.responses[t].partition_responses.push(pr);
        }
        response
    };
    if acks == 0 {
        // No response; an error closes the connection so the producer learns of it.
        let response = finish.await;
        let failed = response
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .any(|p| p.error_code != errors::NONE);
        return if failed {
            Err(CloseReason::AcksZeroError)
        } else {
            Ok(Produced::Now(None))
        };
    }
    if acks == 1 {
        return Ok(Produced::Now(Some(finish.await)));
    }
    Ok(Produced::Later(Box::pin(finish)))
}

/// Produce v3 and later carry exactly one record batch per partition (Kafka's
/// `ProduceRequest.validateRecords`): what a producer's batch is checked for — its producer,
/// its transaction — holds for all it writes.
fn more_than_one_batch(records: Option<&[u8]>, version: i16) -> Option<(i16, String)> {
    let records = records?;
    (version >= 3 && fjord_record::split_batches(records).nth(1).is_some()).then(|| {
        (
            errors::INVALID_RECORD,
            format!(
                "Produce requests with version {version} are only allowed to contain exactly one record batch per partition"
            ),
        )
    })
}

/// A transactional produce must carry transactional batches of the transaction's producer,
/// for a partition added to its open transaction; transactional batches need a
/// transactional id. The guard to append with: 0 when the producer's transaction is open in
/// the partition, a verification's guard when its coordinator confirmed the partition, `None`
/// for other writes.
fn check_transaction(
    broker: &Broker,
    transactional_id: Option<&str>,
    topic: &str,
    partition: i32,
    records: Option<&[u8]>,
    guards: &Guards,
    remote: Option<&HashMap<(String, i32), i16>>,
) -> Result<Option<u64>, (i16, String)> {
    let Some(header) = records.and_then(|r| BatchHeader::parse(r).ok()) else {
        return Ok(None); // malformed batches are refused by the log with the right error
    };
    let id = match transactional_id {
        None if header.is_transactional() => {
            return Err((
                errors::INVALID_RECORD,
                "transactional batches need the request's transactional id".to_string(),
            ));
        }
        None => return Ok(None),
        Some(_) if !header.is_transactional() || header.producer_id < 0 => {
            return Err((
                errors::INVALID_RECORD,
                "a transactional produce must hold transactional batches with a producer id"
                    .to_string(),
            ));
        }
        Some(id) => id,
    };
    if guards
        .producer
        .is_some_and(|p| p != (header.producer_id, header.producer_epoch))
    {
        return Err((
            errors::INVALID_PRODUCER_ID_MAPPING,
            "a transactional produce request holds the batches of one producer".to_string(),
        ));
    }
    let key = (topic.to_string(), partition);
    let guard = match guards.by_partition.get(&key) {
        // Not led here (when its verification began).
        None => {
            return Err((
                broker.missing_partition_code(topic, partition),
                format!("this server does not lead {topic}-{partition}"),
            ));
        }
        // The producer's transaction is open there: the write joins it.
        Some(None) => return Ok(Some(0)),
        Some(Some(guard)) => *guard,
    };
    let verified = match remote {
        // The transaction's coordinator is another broker; it answered for every partition
        // that needed it.
        Some(codes) => match codes.get(&key) {
            Some(&errors::NONE) => Ok(()),
            Some(&code) => Err((
                code,
                format!("the transaction coordinator refused {topic}-{partition} for {id:?}"),
            )),
            None => Err((errors::NOT_COORDINATOR, "not verified".to_string())),
        },
        None => broker.txns.verify(
            id,
            header.producer_id,
            header.producer_epoch,
            topic,
            partition,
        ),
    };
    verified
        .map(|()| Some(guard))
        .map_err(|(code, message)| verification_refusal(code, message))
}

/// A failed verification as the producer is told it, as Kafka's ReplicaManager words it:
/// coordinator errors a client might not retry on a produce become NOT_ENOUGH_REPLICAS
/// (retried without a metadata refresh), PRODUCER_FENCED becomes INVALID_PRODUCER_EPOCH.
fn verification_refusal(code: i16, message: String) -> (i16, String) {
    match code {
        errors::CONCURRENT_TRANSACTIONS
        | errors::NETWORK_EXCEPTION
        | errors::COORDINATOR_LOAD_IN_PROGRESS
        | errors::COORDINATOR_NOT_AVAILABLE
        | errors::NOT_COORDINATOR => (
            errors::NOT_ENOUGH_REPLICAS,
            format!(
                "Unable to verify the partition has been added to the transaction. Underlying error: {message} (code {code})"
            ),
        ),
        errors::PRODUCER_FENCED => (errors::INVALID_PRODUCER_EPOCH, message),
        errors::INVALID_TXN_STATE => (
            code,
            format!("Partition was not added to the transaction: {message}"),
        ),
        _ => (code, message),
    }
}

/// KIP-890's verification of a transactional produce request.
#[derive(Debug, Default)]
struct Guards {
    /// The verification guard of each transactional partition of the request this broker
    /// leads (`None`: the producer's transaction is already open there, nothing to verify).
    by_partition: HashMap<(String, i32), Option<u64>>,
    /// The request's producer: its first transactional batch's id and epoch (Kafka refuses
    /// a request holding another with INVALID_PRODUCER_ID_MAPPING).
    producer: Option<(i64, i16)>,
}

/// Begins KIP-890's verification of a transactional produce on every partition it writes
/// that this broker leads ([`fjord_log::Log::begin_verification`]).
fn begin_verifications(broker: &Broker, request: &ProduceRequest) -> Guards {
    let mut guards = Guards::default();
    if request.transactional_id.is_none() {
        return guards;
    }
    for t in &request.topic_data {
        for pd in &t.partition_data {
            let header = pd
                .records
                .as_deref()
                .and_then(|r| BatchHeader::parse(r).ok());
            let Some(h) = header.filter(|h| h.is_transactional() && h.producer_id >= 0) else {
                continue;
            };
            if let Some(p) = broker.partition(t.name.0.as_str(), pd.index) {
                let producer = *guards
                    .producer
                    .get_or_insert((h.producer_id, h.producer_epoch));
                if producer != (h.producer_id, h.producer_epoch) {
                    continue; // refused: one producer per request
                }
                let guard = p.log.begin_verification(
                    h.producer_id,
                    h.producer_epoch,
                    h.base_sequence,
                    broker.now_ms(),
                );
                guards
                    .by_partition
                    .insert((t.name.0.to_string(), pd.index), guard);
            }
        }
    }
    guards
}

/// A transactional produce whose transactional id another broker coordinates is verified
/// there, all the partitions that need it in one call (KIP-890's verification); `None` when
/// the coordinator is this broker (verified locally), the request is not transactional, or
/// no partition needs it.
async fn verify_remote_transaction(
    broker: &Broker,
    request: &ProduceRequest,
    guards: &Guards,
) -> Option<HashMap<(String, i32), i16>> {
    let id = request.transactional_id.as_ref()?.0.as_str();
    let (_, coordinator) = broker.remote_txn_coordinator(id)?;
    let mut partitions = Vec::new();
    let mut producer = None;
    for t in &request.topic_data {
        for pd in &t.partition_data {
            let key = (t.name.0.to_string(), pd.index);
            if !matches!(guards.by_partition.get(&key), Some(Some(_))) {
                continue;
            }
            let header = pd
                .records
                .as_deref()
                .and_then(|r| BatchHeader::parse(r).ok());
            if let Some(h) = header.filter(|h| h.is_transactional()) {
                producer.get_or_insert((h.producer_id, h.producer_epoch));
                partitions.push(key);
            }
        }
    }
    let (producer_id, epoch) = producer?;
    Some(
        broker
            .verify_txn_remotely(&coordinator, id, producer_id, epoch, &partitions)
            .await,
    )
}

/// Refuses acks=all while the partition has fewer in-sync replicas than the topic's
/// `min.insync.replicas` (capped at its replica count, as Kafka's `effectiveMinIsr`).
fn check_isr(
    partition: Arc<Partition>,
    records: bytes::Bytes,
    acks: i16,
    guard: Option<u64>,
) -> Pending {
    let min_isr = partition
        .min_insync_replicas
        .load(std::sync::atomic::Ordering::Relaxed);
    if acks != -1 {
        return Pending::Append(partition, records, guard);
    }
    // The ISR is copied only for the refusal's message.
    let refused = {
        let r = partition.replica();
        r.under_min_isr(min_isr).then(|| r.isr.clone())
    };
    if let Some(isr) = refused {
        return Pending::Refused(
            (
                errors::NOT_ENOUGH_REPLICAS,
                format!(
                    "The size of the current ISR {isr:?} is insufficient to satisfy the min.isr requirement of {min_isr} for partition {}-{}",
                    partition.topic, partition.index
                ),
            )
                .into(),
        );
    }
    Pending::Append(partition, records, guard)
}

/// Appends every accepted partition's batches, in request order, on blocking threads (see
/// [`APPEND_GROUP_BYTES`]); one result per `Pending::Append`, in order.
async fn append_all(pending: &mut [(usize, i32, Pending)], now: i64) -> Vec<Appended> {
    type Job = (Arc<Partition>, bytes::Bytes, Option<u64>);
    let mut groups: Vec<Vec<Job>> = Vec::new();
    let mut group_bytes = 0;
    for (_, _, outcome) in pending.iter_mut() {
        if let Pending::Append(p, records, guard) = outcome {
            if groups.is_empty() || group_bytes >= APPEND_GROUP_BYTES {
                groups.push(Vec::new());
                group_bytes = 0;
            }
            group_bytes += records.len();
            let records = std::mem::take(records);
            groups
                .last_mut()
                .expect("pushed")
                .push((p.clone(), records, *guard));
        }
    }
    let tasks: Vec<_> = groups
        .into_iter()
        .map(|group| {
            let n = group.len();
            let task = tokio::task::spawn_blocking(move || {
                group
                    .into_iter()
                    .map(|(p, records, guard)| append(&p, &records, now, guard))
                    .collect::<Vec<_>>()
            });
            (n, task)
        })
        .collect();
    let mut out = Vec::new();
    for (n, task) in tasks {
        match task.await {
            Ok(results) => out.extend(results),
            Err(e) => {
                tracing::error!(error = %e, "append task failed");
                out.extend((0..n).map(|_| {
                    Err((
                        errors::UNKNOWN_SERVER_ERROR,
                        format!("append task failed: {e}"),
                    )
                        .into())
                }));
            }
        }
    }
    out
}

/// Appends one partition's batches from the request's own bytes (the log patches copies of
/// their headers).
fn append(p: &Partition, records: &[u8], now: i64, guard: Option<u64>) -> Appended {
    match guard {
        Some(guard) => p.append_verified(records, now, guard),
        None => p.append(records, AppendOrigin::Client, now),
    }
    .map_err(|e| match e {
        CommitError::Log(e) => Refusal::from(e),
        e => Refusal::from((e.code(), e.to_string())),
    })
}
