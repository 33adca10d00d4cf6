//! Produce: validate and append each partition's batches; acks 0, 1 and all.

use std::sync::Arc;

use fjord_log::{AppendInfo, AppendOrigin, LogError};
use fjord_record::{BatchHeader, set_partition_leader_epoch, split_batches};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{CloseReason, RequestContext, str_bytes};
use crate::broker::{Broker, LEADER_EPOCH, Partition, now_ms};
use crate::errors;

/// NOT_ENOUGH_REPLICAS: fewer in-sync replicas than the topic's min.insync.replicas.
const NOT_ENOUGH_REPLICAS: i16 = 19;

pub async fn handle(
    broker: &Arc<Broker>,
    request: ProduceRequest,
    ctx: &RequestContext,
) -> Result<Option<ProduceResponse>, CloseReason> {
    let acks = request.acks;
    let mut response = ProduceResponse::default();
    let mut any_error = false;
    let mut appended = false;
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let mut topic_response = TopicProduceResponse::default();
        topic_response.name = topic.name.clone();
        topic_response.topic_id = topic.topic_id;
        for pd in topic.partition_data {
            let mut pr = PartitionProduceResponse::default();
            pr.index = pd.index;
            pr.base_offset = -1;
            pr.log_append_time_ms = -1;
            pr.log_start_offset = -1;
            let outcome = if !matches!(acks, -1..=1) {
                Err((
                    errors::INVALID_REQUIRED_ACKS,
                    format!("acks={acks} is not one of -1, 0, 1"),
                ))
            } else if name == crate::groups::OFFSETS_TOPIC || name == crate::txns::TXN_TOPIC {
                Err((
                    errors::INVALID_TOPIC_EXCEPTION,
                    format!("cannot append to internal topic {name}"),
                ))
            } else if let Err(refused) = check_transaction(
                broker,
                request.transactional_id.as_ref().map(|t| t.0.as_str()),
                &name,
                pd.index,
                pd.records.as_deref(),
            ) {
                Err(refused)
            } else {
                match (broker.partition(&name, pd.index), pd.records) {
                    (None, _) => Err((
                        errors::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("this server does not host {name}-{}", pd.index),
                    )),
                    (Some(_), None) => Err((
                        errors::INVALID_RECORD,
                        "the partition's records are null".to_string(),
                    )),
                    (Some(p), Some(records)) => append(p, records.to_vec(), acks).await,
                }
            };
            match outcome {
                Ok(info) => {
                    if info.duplicate {
                        broker
                            .metrics
                            .duplicate_batches
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::debug!(client = %ctx.client_id, topic = %name, partition = pd.index, offset = info.first_offset, "duplicate batch from an idempotent producer; answered with its offsets");
                    } else {
                        appended = true;
                        broker
                            .metrics
                            .produced(&name, info.record_count, info.bytes);
                    }
                    pr.base_offset = info.first_offset;
                    pr.log_append_time_ms = info.log_append_time;
                    pr.log_start_offset = info.log_start_offset;
                }
                Err((code, message)) => {
                    any_error = true;
                    tracing::debug!(client = %ctx.client_id, topic = %name, partition = pd.index, code, %message, "produce refused");
                    pr.error_code = code;
                    pr.error_message = Some(str_bytes(message));
                }
            }
            topic_response.partition_responses.push(pr);
        }
        response.responses.push(topic_response);
    }
    if appended {
        broker.data_appended.notify_waiters();
    }
    if acks == 0 {
        // No response; an error closes the connection so the producer learns of it.
        return if any_error {
            Err(CloseReason::AcksZeroError)
        } else {
            Ok(None)
        };
    }
    Ok(Some(response))
}

/// A transactional produce must carry transactional batches of the transaction's producer,
/// for a partition added to its open transaction; transactional batches need a
/// transactional id.
fn check_transaction(
    broker: &Broker,
    transactional_id: Option<&str>,
    topic: &str,
    partition: i32,
    records: Option<&[u8]>,
) -> Result<(), (i16, String)> {
    let Some(header) = records.and_then(|r| BatchHeader::parse(r).ok()) else {
        return Ok(()); // malformed batches are refused by the log with the right error
    };
    match transactional_id {
        None if header.is_transactional() => Err((
            errors::INVALID_RECORD,
            "transactional batches need the request's transactional id".to_string(),
        )),
        None => Ok(()),
        Some(_) if !header.is_transactional() || header.producer_id < 0 => Err((
            errors::INVALID_RECORD,
            "a transactional produce must hold transactional batches with a producer id"
                .to_string(),
        )),
        Some(id) => broker.txns.verify(
            id,
            header.producer_id,
            header.producer_epoch,
            topic,
            partition,
        ),
    }
}

async fn append(
    partition: Arc<Partition>,
    mut records: Vec<u8>,
    acks: i16,
) -> Result<AppendInfo, (i16, String)> {
    let min_isr = partition
        .min_insync_replicas
        .load(std::sync::atomic::Ordering::Relaxed);
    if acks == -1 && min_isr > 1 {
        return Err((
            NOT_ENOUGH_REPLICAS,
            format!("min.insync.replicas={min_isr} but this partition has 1 in-sync replica"),
        ));
    }
    let joined = tokio::task::spawn_blocking(move || -> Result<AppendInfo, LogError> {
        // Stamp the leader epoch into every batch, as a Kafka leader does (outside the CRC).
        let mut at = 0;
        let spans: Vec<(usize, usize)> = split_batches(&records)
            .map(|b| {
                b.map(|b| {
                    let span = (at, b.len());
                    at += b.len();
                    span
                })
            })
            .collect::<Result<_, _>>()?;
        for (start, len) in spans {
            set_partition_leader_epoch(&mut records[start..start + len], LEADER_EPOCH);
        }
        let info = partition
            .log
            .append(&mut records, AppendOrigin::Client, now_ms())?;
        if acks == -1 {
            partition.log.wait_durable(&info)?;
        }
        // A single node is the whole ISR: the append is committed.
        partition.log.advance_high_watermark(info.next_offset());
        Ok(info)
    })
    .await;
    match joined {
        Ok(Ok(info)) => Ok(info),
        Ok(Err(e)) => Err((errors::from_log_error(&e), e.to_string())),
        Err(e) => Err((
            errors::UNKNOWN_SERVER_ERROR,
            format!("append task failed: {e}"),
        )),
    }
}
