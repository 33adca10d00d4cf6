//! DescribeCluster: this broker, the cluster id, the controller.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{CLUSTER_OPERATIONS, NOT_REQUESTED, RequestContext, str_bytes};
use crate::broker::Broker;

/// UNSUPPORTED_ENDPOINT_TYPE: a broker answers only for broker endpoints.
const UNSUPPORTED_ENDPOINT_TYPE: i16 = 119;
const BROKERS: i8 = 1;

pub async fn handle(
    broker: &Arc<Broker>,
    request: DescribeClusterRequest,
    _ctx: &RequestContext,
) -> DescribeClusterResponse {
    let mut r = DescribeClusterResponse::default();
    r.endpoint_type = BROKERS;
    r.cluster_id = str_bytes(broker.cluster_id.clone());
    r.cluster_authorized_operations = if request.include_cluster_authorized_operations {
        CLUSTER_OPERATIONS
    } else {
        NOT_REQUESTED
    };
    if request.endpoint_type != BROKERS {
        r.error_code = UNSUPPORTED_ENDPOINT_TYPE;
        r.error_message = Some(str_bytes(
            "this node serves broker endpoints only (endpoint type 1)",
        ));
        return r;
    }
    r.controller_id = BrokerId(broker.config.node_id);
    let mut b = DescribeClusterBroker::default();
    b.broker_id = BrokerId(broker.config.node_id);
    b.host = str_bytes(broker.config.advertised_host.clone());
    b.port = broker.config.advertised_port;
    r.brokers = vec![b];
    r
}
