#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! The same raw requests to Apache Kafka 4.4 and to Fjord, answers compared field by field:
//! what the broker's validation answers to bad batches and bad requests, and ListOffsets'
//! special timestamps at every version both serve. Needs a JDK and Maven
//! (compat/reference/kafka.sh resolves Kafka from Maven Central on first use).

mod support;

use std::net::TcpStream;
use std::time::Duration;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use support::reference::KafkaReference;
use support::{Fjord, call, create_topics, create_topics_with, produce};

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn batch(records: &[(i64, Option<&[u8]>)]) -> Vec<u8> {
    let mut b = fjord_record::BatchBuilder::new(fjord_record::Compression::None);
    for (ts, key) in records {
        b.push(*ts, *key, Some(b"value"));
    }
    b.build().unwrap()
}

/// Waits until every partition of `topics` has a leader (Kafka publishes a new topic to its
/// brokers a moment after CreateTopics answers).
fn wait_for_leaders(s: &mut TcpStream, topics: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut req = MetadataRequest::default();
        req.topics = Some(
            topics
                .iter()
                .map(|t| {
                    let mut mt = MetadataRequestTopic::default();
                    mt.name = Some(TopicName(StrBytes::from_string(t.to_string())));
                    mt
                })
                .collect(),
        );
        let resp: MetadataResponse = call(s, ApiKey::Metadata, 12, &req);
        let ready = resp
            .topics
            .iter()
            .all(|t| t.error_code == 0 && t.partitions.iter().all(|p| p.leader_id.0 >= 0));
        if ready {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no leaders for {topics:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first record batch of partition 0 of `topic`, fetched from offset 0.
fn fetch_raw(s: &mut TcpStream, topic: &str) -> Vec<u8> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse};
    let mut p = FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = 0;
    p.partition_max_bytes = 1 << 20;
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_string(topic.to_string()));
    t.partitions = vec![p];
    let mut req = FetchRequest::default();
    req.replica_id = kafka_protocol::messages::BrokerId(-1);
    req.max_wait_ms = 500;
    req.min_bytes = 1;
    req.max_bytes = 1 << 20;
    req.topics = vec![t];
    let resp: FetchResponse = call(s, ApiKey::Fetch, 12, &req);
    let records = resp.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default();
    let len = fjord_record::next_batch_len(&records).unwrap().unwrap();
    records[..len].to_vec()
}

/// What one broker answers to the scenario, as comparable text.
fn scenario(addr: &str) -> Vec<String> {
    let mut s = connect(addr);
    create_topics(&mut s, &[("plain", 2)]);
    wait_for_leaders(&mut s, &["plain"]);
    let mut out = Vec::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;

    // Three good batches, with timestamps out of order in partition 0. A new partition may
    // answer NOT_LEADER_OR_FOLLOWER for a moment on Kafka, and clients retry: so does this.
    for ts in [now - 3_000, now - 1_000, now - 2_000] {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut r = produce(&mut s, "plain", 0, batch(&[(ts, Some(b"k"))]));
        while r.error_code == 6 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            r = produce(&mut s, "plain", 0, batch(&[(ts, Some(b"k"))]));
        }
        out.push(format!("good: {} {}", r.error_code, r.base_offset));
    }
    // A batch whose CRC does not match.
    let mut corrupt = batch(&[(now, Some(b"k"))]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let r = produce(&mut s, "plain", 0, corrupt);
    out.push(format!("corrupt: {} {}", r.error_code, r.base_offset));
    // A partition the topic does not have.
    let r = produce(&mut s, "plain", 7, batch(&[(now, Some(b"k"))]));
    out.push(format!("no such partition: {}", r.error_code));
    // A record two hours ahead (message.timestamp.after.max.ms is one hour).
    let r = produce(
        &mut s,
        "plain",
        1,
        batch(&[(now, None), (now + 7_200_000, None)]),
    );
    out.push(format!(
        "future: {} {:?}",
        r.error_code,
        r.record_errors
            .iter()
            .map(|e| e.batch_index)
            .collect::<Vec<_>>()
    ));

    // ListOffsets: earliest (-2), latest (-1), max timestamp (-3, v7+), and by time.
    for version in [1i16, 4, 7, 9] {
        for ts in [-2i64, -1, -3, now - 2_500, now + 60_000] {
            if ts == -3 && version < 7 {
                continue;
            }
            let mut p = ListOffsetsPartition::default();
            p.partition_index = 0;
            p.timestamp = ts;
            let mut t = ListOffsetsTopic::default();
            t.name = TopicName(StrBytes::from_static_str("plain"));
            t.partitions = vec![p];
            let mut req = ListOffsetsRequest::default();
            req.replica_id = kafka_protocol::messages::BrokerId(-1);
            req.topics = vec![t];
            let resp: ListOffsetsResponse = call(&mut s, ApiKey::ListOffsets, version, &req);
            let p = &resp.topics[0].partitions[0];
            let shown_ts = if ts >= 0 || ts == -3 {
                // By time: which record's timestamp (relative to now) answered.
                if p.timestamp >= 0 {
                    (p.timestamp - now).to_string()
                } else {
                    p.timestamp.to_string()
                }
            } else {
                p.timestamp.to_string()
            };
            let asked = if ts >= 0 {
                format!("now{:+}", ts - now)
            } else {
                ts.to_string()
            };
            out.push(format!(
                "list_offsets v{version} {asked}: {} offset {} ts {shown_ts}",
                p.error_code, p.offset
            ));
        }
    }

    // compression.type=gzip: an uncompressed batch is stored (and fetched) gzip-compressed,
    // same records, same offsets.
    create_topics_with(&mut s, &[("gzipped", 1)], &[("compression.type", "gzip")]);
    wait_for_leaders(&mut s, &["gzipped"]);
    let mut b = fjord_record::BatchBuilder::new(fjord_record::Compression::None);
    for i in 0..20 {
        b.push(now, Some(b"key"), Some(format!("value {i}").as_bytes()));
    }
    let mut r = produce(&mut s, "gzipped", 0, b.build().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while r.error_code == 6 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        r = produce(&mut s, "gzipped", 0, b.build().unwrap());
    }
    out.push(format!(
        "gzipped produce: {} {}",
        r.error_code, r.base_offset
    ));
    let fetched = fetch_raw(&mut s, "gzipped");
    let header = fjord_record::validate_batch(&fetched).unwrap();
    let records = fjord_record::Records::decode(&fetched, 1 << 20).unwrap();
    out.push(format!(
        "gzipped stored: {:?} base {} count {} last {:?}",
        header.compression().unwrap(),
        header.base_offset,
        header.records_count,
        records
            .iter()
            .last()
            .unwrap()
            .unwrap()
            .value
            .map(|v| v.to_vec())
    ));

    // Metadata for a topic that does not exist, without auto-creation, and a bad name.
    for name in ["missing-topic", "bad/name"] {
        let mut t = MetadataRequestTopic::default();
        t.name = Some(TopicName(StrBytes::from_static_str(name)));
        let mut req = MetadataRequest::default();
        req.topics = Some(vec![t]);
        req.allow_auto_topic_creation = false;
        let resp: MetadataResponse = call(&mut s, ApiKey::Metadata, 12, &req);
        out.push(format!("metadata {name}: {}", resp.topics[0].error_code));
    }

    // DescribeCluster for controller endpoints (2) and an endpoint type that does not exist,
    // sent to a broker listener.
    for endpoint_type in [1, 2, 9] {
        let mut req = kafka_protocol::messages::DescribeClusterRequest::default();
        req.endpoint_type = endpoint_type;
        let resp: kafka_protocol::messages::DescribeClusterResponse =
            call(&mut s, ApiKey::DescribeCluster, 1, &req);
        out.push(format!(
            "describe cluster, endpoint type {endpoint_type}: {} {:?} (brokers: {})",
            resp.error_code,
            resp.error_message.as_deref(),
            resp.brokers.len()
        ));
    }
    out
}

#[test]
fn raw_requests_get_the_same_answers_from_kafka_and_fjord() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = KafkaReference::start(&dir.path().join("kafka"), 1);
    let fjord = Fjord::start(&dir.path().join("fjord"), &[]);
    let from_kafka = scenario(kafka.first());
    let from_fjord = scenario(&format!("127.0.0.1:{}", fjord.port));
    kafka.stop();
    let (code, log) = fjord.stop();
    assert_eq!(code, 0, "{log}");
    assert_eq!(
        from_fjord.join("\n"),
        from_kafka.join("\n"),
        "Fjord (left) against Kafka (right)"
    );
}
