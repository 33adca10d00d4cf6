//! ApiVersions: what this broker speaks.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, ResponseHeader};
use kafka_protocol::protocol::Encodable;

use super::{RequestContext, SUPPORTED};
use crate::errors;

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = key as i16;
            v.min_version = min;
            v.max_version = max;
            v
        })
        .collect()
}

pub fn handle(_request: ApiVersionsRequest, _ctx: &RequestContext) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = errors::NONE;
    r.api_keys = api_keys();
    r.finalized_features_epoch = -1;
    r
}

/// The reply to an ApiVersions request at a version we do not speak: encoded as v0 whatever
/// was asked, with UNSUPPORTED_VERSION and our ranges (what Kafka does, and what clients that
/// start high and step down rely on).
pub fn unsupported_version_response(correlation_id: i32) -> BytesMut {
    let mut r = ApiVersionsResponse::default();
    r.error_code = errors::UNSUPPORTED_VERSION;
    r.api_keys = api_keys();
    let mut out = BytesMut::new();
    out.put_i32(0);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let encoded = header
        .encode(&mut out, 0)
        .and_then(|()| r.encode(&mut out, 0));
    debug_assert!(encoded.is_ok(), "a v0 ApiVersions response always encodes");
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}
