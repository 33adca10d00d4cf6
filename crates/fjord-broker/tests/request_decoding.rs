#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! The request decoder never panics or aborts on hostile bytes (the cargo-fuzz target
//! `request_decode` runs the same entry point).

use bytes::BytesMut;
use fjord_broker::handlers::{SUPPORTED, fuzz_decode};
use kafka_protocol::messages::{ApiKey, MetadataRequest, ProduceRequest, RequestHeader};
use kafka_protocol::protocol::Encodable;
use proptest::prelude::*;

fn frame(api: ApiKey, version: i16, body: &impl Encodable) -> Vec<u8> {
    let mut header = RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    header.correlation_id = 7;
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    buf.to_vec()
}

#[test]
fn huge_declared_counts_are_refused_without_allocating() {
    // Metadata v4 whose topic array claims 2^31-1 entries: must fail fast, not abort.
    // The same frames with an honest count decode, so a refusal below is the count's doing.
    let mut r = MetadataRequest::default();
    r.topics = Some(Vec::new());
    assert!(fuzz_decode(&frame(ApiKey::Metadata, 4, &r)));
    assert!(fuzz_decode(&frame(ApiKey::Metadata, 9, &r)));
    let mut f = vec![0, 3, 0, 4, 0, 0, 0, 1, 0xff, 0xff];
    f.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
    assert!(
        !fuzz_decode(&f),
        "a count of 2^31-1 topics with no bytes behind it decoded"
    );
    // The flexible (compact) form at v9.
    let mut f = vec![0, 3, 0, 9, 0, 0, 0, 1, 0xff, 0xff, 0x00];
    f.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(!fuzz_decode(&f), "a compact count of 2^32-2 topics decoded");
}

proptest! {
    #[test]
    fn arbitrary_bytes_under_every_supported_header(
        which in 0usize..SUPPORTED.len(),
        version_pick in any::<prop::sample::Index>(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let (api, min, max) = SUPPORTED[which];
        let version = min + version_pick.index((max - min + 1) as usize) as i16;
        let mut f = Vec::new();
        f.extend_from_slice(&(api as i16).to_be_bytes());
        f.extend_from_slice(&version.to_be_bytes());
        f.extend_from_slice(&1i32.to_be_bytes());
        f.extend_from_slice(&body);
        fuzz_decode(&f);
    }

    #[test]
    fn mutated_valid_requests(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        produce in any::<bool>(),
    ) {
        let mut f = if produce {
            let mut r = ProduceRequest::default();
            r.acks = -1;
            r.timeout_ms = 1000;
            frame(ApiKey::Produce, 9, &r)
        } else {
            let mut r = MetadataRequest::default();
            r.topics = None;
            frame(ApiKey::Metadata, 12, &r)
        };
        for (at, byte) in flips {
            let i = at.index(f.len());
            f[i] = byte;
        }
        let keep = cut.index(f.len() + 1).max(8);
        f.truncate(keep);
        fuzz_decode(&f);
    }
}
