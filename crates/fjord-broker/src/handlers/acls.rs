//! DescribeAcls, CreateAcls, DeleteAcls: without an authorizer, Kafka answers every ACL request
//! with SECURITY_DISABLED (per request, creation or filter), and so does Fjord until ACLs land.
//! Advertising them lets tools (`kafka-acls`, Admin clients) get that answer instead of a
//! closed connection.

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::DeleteAclsFilterResult;
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};

use super::str_bytes;
use crate::errors;

/// Kafka's messages for ACL requests on a broker without an authorizer (DescribeAcls has
/// its own wording).
const NO_AUTHORIZER: &str = "No Authorizer is configured.";
const NO_AUTHORIZER_DESCRIBE: &str = "No Authorizer is configured on the broker";

pub fn describe(_request: DescribeAclsRequest) -> DescribeAclsResponse {
    let mut r = DescribeAclsResponse::default();
    r.error_code = errors::SECURITY_DISABLED;
    r.error_message = Some(str_bytes(NO_AUTHORIZER_DESCRIBE));
    r
}

pub fn create(request: CreateAclsRequest) -> CreateAclsResponse {
    let mut r = CreateAclsResponse::default();
    r.results = request
        .creations
        .iter()
        .map(|_| {
            let mut c = AclCreationResult::default();
            c.error_code = errors::SECURITY_DISABLED;
            c.error_message = Some(str_bytes(NO_AUTHORIZER));
            c
        })
        .collect();
    r
}

pub fn delete(request: DeleteAclsRequest) -> DeleteAclsResponse {
    let mut r = DeleteAclsResponse::default();
    r.filter_results = request
        .filters
        .iter()
        .map(|_| {
            let mut f = DeleteAclsFilterResult::default();
            f.error_code = errors::SECURITY_DISABLED;
            f.error_message = Some(str_bytes(NO_AUTHORIZER));
            f
        })
        .collect();
    r
}
