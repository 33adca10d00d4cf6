//! DeleteGroups: an empty group and its committed offsets.

use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::RequestContext;
use crate::broker::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    request: DeleteGroupsRequest,
    _ctx: &RequestContext,
) -> DeleteGroupsResponse {
    let mut r = DeleteGroupsResponse::default();
    for id in request.groups_names {
        let g = id.0.to_string();
        let code = super::coordinator(broker, move |b| b.groups.delete_group(&g))
            .await
            .unwrap_or_else(|e| e.code());
        let mut res = DeletableGroupResult::default();
        res.group_id = id;
        res.error_code = code;
        r.results.push(res);
    }
    r
}
