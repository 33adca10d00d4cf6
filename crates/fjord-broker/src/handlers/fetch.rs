//! Fetch: whole batches up to the high watermark, long-polling for `min_bytes`.
//!
//! Fetch sessions (KIP-227): this broker declines to create sessions (it answers session id 0,
//! which the protocol allows), so clients keep sending full fetches; an incremental fetch for
//! a session it never created gets FETCH_SESSION_ID_NOT_FOUND.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fjord_log::{FetchSlice, LogError, ReadUpTo};
use fjord_meta::TopicId;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId};
use tokio::time::Instant;

use super::{RequestContext, check_leader_epoch, topic_name};
use crate::broker::{Broker, Partition};
use crate::errors;
use crate::frame::Region;

const READ_COMMITTED: i8 = 1;

struct Wanted {
    topic_index: usize,
    partition: Option<Arc<Partition>>,
    error: i16,
    index: i32,
    offset: i64,
    max_bytes: usize,
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

/// Answers a fetch: the response, and the partitions (topic index, partition index) whose
/// records are sent from the segment files, in response order.
pub async fn handle(
    broker: &Arc<Broker>,
    request: FetchRequest,
    ctx: &RequestContext,
) -> (FetchResponse, Vec<Region>) {
    let mut response = FetchResponse::default();
    response.session_id = 0;
    if request.session_id != 0 {
        response.error_code = errors::FETCH_SESSION_ID_NOT_FOUND;
        return (response, Vec::new());
    }
    if request.session_epoch > 0 {
        response.error_code = errors::INVALID_FETCH_SESSION_EPOCH;
        return (response, Vec::new());
    }
    let read_committed = request.isolation_level == READ_COMMITTED;
    let by_id = ctx.version >= 13;
    let state = broker.metadata();
    let mut wanted = Vec::new();
    for (ti, topic) in request.topics.iter().enumerate() {
        let name = if by_id {
            state
                .topic_by_id(&TopicId(topic.topic_id.into_bytes()))
                .map(|t| t.name.clone())
        } else {
            Some(topic.topic.0.to_string())
        };
        let mut tr = FetchableTopicResponse::default();
        tr.topic = topic.topic.clone();
        tr.topic_id = topic.topic_id;
        if let (false, Some(n)) = (by_id, &name) {
            tr.topic = topic_name(n);
        }
        response.responses.push(tr);
        for p in &topic.partitions {
            let partition = name
                .as_deref()
                .and_then(|n| broker.partition(n, p.partition));
            let error = match (&name, &partition) {
                (None, _) => errors::UNKNOWN_TOPIC_ID,
                (Some(_), None) => errors::UNKNOWN_TOPIC_OR_PARTITION,
                _ => check_leader_epoch(p.current_leader_epoch),
            };
            wanted.push(Wanted {
                topic_index: ti,
                partition,
                error,
                index: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
            });
        }
    }
    let max_bytes = if request.max_bytes <= 0 {
        usize::MAX
    } else {
        request.max_bytes as usize
    };
    let min_bytes = request.min_bytes.max(0) as usize;
    let deadline = Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let wanted = Arc::new(wanted);
    let read = |wanted: Arc<Vec<Wanted>>| async move {
        tokio::task::spawn_blocking(move || read_all(&wanted, max_bytes, read_committed))
            .await
            .unwrap_or_else(|_| (Vec::new(), 0, true))
    };
    loop {
        // Register for wake-ups before reading, so an append in between is not missed.
        let notified = broker.data_appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (mut parts, total, any_error) = read(wanted.clone()).await;
        let finished = total >= min_bytes || any_error || Instant::now() >= deadline;
        if !finished && tokio::time::timeout_at(deadline, notified).await.is_ok() {
            continue; // new data somewhere: read again
        }
        if !finished {
            // Timed out: one last read, so the response reflects what is there now.
            parts = read(wanted.clone()).await.0;
        }
        let mut regions = Vec::new();
        for (w, (mut data, records)) in wanted.iter().zip(parts) {
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
            let partitions = &mut response.responses[w.topic_index].partitions;
            match records {
                Records::None => {}
                Records::Read(b, _) => data.records = Some(b),
                Records::File(slice) => regions.push(((w.topic_index, partitions.len()), slice)),
            }
            partitions.push(data);
        }
        return (response, regions);
    }
}

/// Reads every wanted partition once; returns the partition data, the record bytes found, and
/// whether any partition has an error (which ends a long poll at once).
fn read_all(
    wanted: &[Wanted],
    max_bytes: usize,
    read_committed: bool,
) -> (Vec<(PartitionData, Records)>, usize, bool) {
    let mut out = Vec::with_capacity(wanted.len());
    let mut total = 0usize;
    let mut any_error = false;
    for w in wanted {
        let mut pd = PartitionData::default();
        pd.partition_index = w.index;
        pd.high_watermark = -1;
        pd.last_stable_offset = -1;
        pd.log_start_offset = -1;
        pd.preferred_read_replica = kafka_protocol::messages::BrokerId(-1);
        pd.records = Some(Bytes::new());
        pd.aborted_transactions = read_committed.then(Vec::new);
        let Some(partition) = w.partition.as_ref().filter(|_| w.error == errors::NONE) else {
            pd.error_code = w.error;
            any_error = true;
            out.push((pd, Records::None));
            continue;
        };
        let log = &partition.log;
        let budget = w.max_bytes.min(max_bytes.saturating_sub(total));
        // KIP-74: the first batch of the first partition with data comes back even if it is
        // larger than the limits, so a consumer can always make progress.
        let min_one = total == 0;
        // read_committed consumers stop at the last stable offset and get the aborted
        // transactions of what they read, to drop those records.
        let upper = if read_committed {
            ReadUpTo::LastStable
        } else {
            ReadUpTo::HighWatermark
        };
        let read = log.read(w.offset, budget, upper, min_one);
        let mut records = Records::None;
        match read {
            Ok(r) => {
                pd.high_watermark = r.high_watermark;
                pd.last_stable_offset = r.last_stable_offset;
                pd.log_start_offset = r.log_start_offset;
                if let Some(slice) = r.data {
                    if read_committed {
                        pd.aborted_transactions = Some(
                            log.aborted_transactions(w.offset, slice.next_offset)
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
                    if slice.len >= SENDFILE_MIN_BYTES && slice.file.fd().is_some() {
                        records = Records::File(slice);
                    } else {
                        match slice.read() {
                            Ok(bytes) => {
                                records = Records::Read(Bytes::from(bytes), slice.records);
                            }
                            Err(e) => {
                                tracing::error!(topic = %partition.topic, partition = w.index, error = %e, "reading fetched range");
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
    (out, total, any_error)
}
