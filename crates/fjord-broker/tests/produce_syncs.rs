#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! acks=all produce requests pipelined on one connection: each request's fsyncs are asked for
//! as soon as its records are appended, not when the responses before it have gone out (the
//! Java producer keeps up to five requests in flight; with the syncs asked one response at a
//! time every request paid a whole sync round of its own after the previous one's).

mod support;

use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use support::{TestBroker, config};

const TOPIC: &str = "events";

fn produce_request(partition: i32, value: &str) -> ProduceRequest {
    let mut b = fjord_record::BatchBuilder::new(fjord_record::Compression::None);
    // Stamped now: a record from long ago would roll the segment (segment.ms), which syncs.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    b.push(now, None, Some(value.as_bytes()));
    let mut pd = PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(b.build().unwrap().into());
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_static_str(TOPIC));
    t.partition_data = vec![pd];
    let mut r = ProduceRequest::default();
    r.acks = -1;
    r.timeout_ms = 30_000;
    r.topic_data = vec![t];
    r
}

/// Waits up to 10 s for `ready`.
async fn eventually(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_request_asks_for_its_sync_while_the_one_before_it_still_waits() {
    let disk = fjord_log::sim::SimStorage::new();
    let b = TestBroker::start(disk.clone(), config()).await;
    b.create_topic(TOPIC, 2).await;
    let mut c = b.connect().await;
    // A first record in each partition (its first append in a leader epoch also syncs the
    // epoch file).
    for partition in 0..2 {
        let r: ProduceResponse = c
            .call(ApiKey::Produce, 9, &produce_request(partition, "before"))
            .await
            .unwrap();
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }

    // The disk stalls: the first request's sync round cannot finish.
    disk.hold_syncs();
    let first = c
        .send(ApiKey::Produce, 9, &produce_request(0, "first"))
        .await
        .unwrap();
    eventually("the first request's sync round to start", || {
        disk.held_syncs() == 1
    })
    .await;
    // The second request, on the same connection, for another partition: its sync is queued
    // for the next round while the first request's response still waits for the disk.
    let second = c
        .send(ApiKey::Produce, 9, &produce_request(1, "second"))
        .await
        .unwrap();
    eventually("the second request's sync to be queued", || {
        b.broker.flusher.waiting() == 1
    })
    .await;
    assert_eq!(disk.held_syncs(), 1, "the first round is still held");

    disk.release_syncs();
    for (correlation, partition) in [(first, 0), (second, 1)] {
        let r: ProduceResponse = c.receive(ApiKey::Produce, 9, correlation).await.unwrap();
        let p = &r.responses[0].partition_responses[0];
        assert_eq!((p.index, p.error_code, p.base_offset), (partition, 0, 1));
    }
    b.stop().await;
}
