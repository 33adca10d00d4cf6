//! WriteTxnMarkers: a transaction coordinator on another broker asks this one to end a
//! transaction on the partitions it leads (commit or abort markers).

use std::sync::Arc;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    request: WriteTxnMarkersRequest,
    _ctx: &RequestContext,
) -> WriteTxnMarkersResponse {
    let b = broker.clone();
    let markers = tokio::task::spawn_blocking(move || {
        // Every marker is appended before any commit is waited for: a marker never lands
        // long after the others (when its coordinator may have moved on).
        let appended: Vec<_> = request
            .markers
            .iter()
            .flat_map(|m| {
                m.topics.iter().flat_map(move |t| {
                    t.partition_indexes.iter().map(move |&p| (m, t, p))
                })
            })
            .map(|(m, t, p)| {
                b.append_local_marker(
                    t.name.0.as_str(),
                    p,
                    m.producer_id.0,
                    m.producer_epoch,
                    m.coordinator_epoch,
                    m.transaction_result,
                )
            })
            .collect();
        let mut appended = appended.into_iter();
        request
            .markers
            .into_iter()
            .map(|m| {
                let mut r = WritableTxnMarkerResult::default();
                r.producer_id = m.producer_id;
                r.topics = m
                    .topics
                    .into_iter()
                    .map(|t| {
                        let mut tr = WritableTxnMarkerTopicResult::default();
                        tr.partitions = t
                            .partition_indexes
                            .iter()
                            .map(|&p| {
                                let mut pr = WritableTxnMarkerPartitionResult::default();
                                pr.partition_index = p;
                                let written = appended
                                    .next()
                                    .unwrap_or_else(|| {
                                        Err((errors::UNKNOWN_SERVER_ERROR, "not appended".into()))
                                    })
                                    .and_then(Broker::commit_marker);
                                pr.error_code = match written {
                                    Ok(()) => errors::NONE,
                                    Err((code, message)) => {
                                        tracing::warn!(topic = %t.name.0, partition = p, code, message, "could not write a transaction marker");
                                        code
                                    }
                                };
                                pr
                            })
                            .collect();
                        tr.name = t.name;
                        tr
                    })
                    .collect();
                r
            })
            .collect()
    })
    .await
    .unwrap_or_default();
    let mut response = WriteTxnMarkersResponse::default();
    response.markers = markers;
    response
}
