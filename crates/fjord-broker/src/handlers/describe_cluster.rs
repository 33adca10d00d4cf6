//! DescribeCluster: the registered brokers (fenced ones too when v2 asks), the cluster id,
//! the controller.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{CLUSTER_OPERATIONS, NOT_REQUESTED, RequestContext, str_bytes};
use crate::broker::Broker;
use crate::errors;

const BROKERS: i8 = 1;
const CONTROLLERS: i8 = 2;

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
        // As Kafka: controller endpoints asked of a broker listener are the wrong type; an
        // endpoint type that does not exist is unsupported.
        if request.endpoint_type == CONTROLLERS {
            r.error_code = errors::MISMATCHED_ENDPOINT_TYPE;
            r.error_message = Some(str_bytes(
                "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER",
            ));
        } else {
            r.error_code = errors::UNSUPPORTED_ENDPOINT_TYPE;
            r.error_message = Some(str_bytes(format!(
                "Unsupported endpoint type {}",
                request.endpoint_type
            )));
        }
        return r;
    }
    r.controller_id = BrokerId(broker.controller_id());
    r.brokers = broker
        .metadata()
        .brokers()
        // KIP-1073 (v2): fenced brokers too when asked for, marked as such.
        .filter(|b| !b.fenced || request.include_fenced_brokers)
        .map(|registered| {
            let mut b = DescribeClusterBroker::default();
            b.broker_id = BrokerId(registered.id);
            b.host = str_bytes(registered.host.clone());
            b.port = registered.port;
            b.rack = registered.rack.clone().map(str_bytes);
            b.is_fenced = registered.fenced;
            b
        })
        .collect();
    r
}
