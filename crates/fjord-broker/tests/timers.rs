#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! Coordinator timers driven by a clock the test moves (no sleeping through a session or a
//! transaction timeout), and what they decide surviving a crash.

mod support;

use std::sync::Arc;
use std::time::Duration;

use fjord_broker::clock::ManualClock;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ConsumerGroupDescribeRequest,
    ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, GroupId, InitProducerIdRequest,
    InitProducerIdResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use support::{Conn, TestBroker, config};

/// Where the tests' clocks start (2023-11-14).
const START: i64 = 1_700_000_000_000;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Polls `f` (every 20 ms of real time, for at most 10 s) until it holds.
async fn eventually<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) -> bool {
    for _ in 0..500 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn describe_group(c: &mut Conn) -> (i32, Vec<String>) {
    let mut r = ConsumerGroupDescribeRequest::default();
    r.group_ids = vec![GroupId(s("g"))];
    let d: ConsumerGroupDescribeResponse =
        c.call(ApiKey::ConsumerGroupDescribe, 0, &r).await.unwrap();
    let g = &d.groups[0];
    (
        g.group_epoch,
        g.members.iter().map(|m| m.member_id.to_string()).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_member_is_dropped_and_stays_dropped_after_a_crash() {
    let clock = Arc::new(ManualClock::new(START));
    let tb = TestBroker::start_with(
        fjord_log::sim::SimStorage::new(),
        config(),
        clock.clone(),
        Some(11),
    )
    .await;
    tb.create_topic("events", 2).await;
    let mut c = tb.connect().await;
    let mut r = ConsumerGroupHeartbeatRequest::default();
    r.group_id = GroupId(s("g"));
    r.member_epoch = 0;
    r.rebalance_timeout_ms = 30_000;
    r.subscribed_topic_names = Some(vec![TopicName(s("events"))]);
    r.topic_partitions = Some(Vec::new());
    let joined: ConsumerGroupHeartbeatResponse =
        c.call(ApiKey::ConsumerGroupHeartbeat, 0, &r).await.unwrap();
    assert_eq!(joined.error_code, 0);
    let member = joined.member_id.unwrap().to_string();
    let (epoch, members) = describe_group(&mut c).await;
    assert_eq!(members, vec![member.clone()]);

    // Just inside the session (45 s): still a member, however often the timers run.
    clock.advance(44_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(describe_group(&mut c).await.1, vec![member.clone()]);
    // Past it: the group timer drops the member and stores the group.
    clock.advance(2_000);
    assert!(
        eventually(|| {
            let addr = tb.addr;
            async move {
                let mut c = Conn::from_stream(tokio::net::TcpStream::connect(addr).await.unwrap());
                describe_group(&mut c).await.1.is_empty()
            }
        })
        .await,
        "the member expired"
    );
    let (after, _) = describe_group(&mut c).await;
    assert!(
        after > epoch,
        "the group moved to a new epoch ({epoch} → {after})"
    );

    // A crash right after: the restarted coordinator has the member gone too.
    let disk = tb.crash(21);
    let tb = TestBroker::start_with(disk, config(), clock.clone(), Some(12)).await;
    let mut c = tb.connect().await;
    let (restored, members) = describe_group(&mut c).await;
    assert!(
        members.is_empty(),
        "the expired member came back: {members:?}"
    );
    assert_eq!(restored, after);
    tb.stop().await;
}

async fn txn_state(c: &mut Conn) -> (String, i16) {
    let mut r = DescribeTransactionsRequest::default();
    r.transactional_ids = vec![TransactionalId(s("t"))];
    let d: DescribeTransactionsResponse =
        c.call(ApiKey::DescribeTransactions, 0, &r).await.unwrap();
    let t = &d.transaction_states[0];
    (t.transaction_state.to_string(), t.producer_epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let clock = Arc::new(ManualClock::new(START));
    let tb = TestBroker::start_with(
        fjord_log::sim::SimStorage::new(),
        config(),
        clock.clone(),
        Some(13),
    )
    .await;
    tb.create_topic("events", 1).await;
    let mut c = tb.connect().await;
    let mut r = InitProducerIdRequest::default();
    r.transactional_id = Some(TransactionalId(s("t")));
    r.transaction_timeout_ms = 20_000;
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    let init: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 3, &r).await.unwrap();
    assert_eq!(init.error_code, 0);
    let mut t = AddPartitionsToTxnTopic::default();
    t.name = TopicName(s("events"));
    t.partitions = vec![0];
    let mut r = AddPartitionsToTxnRequest::default();
    r.v3_and_below_transactional_id = TransactionalId(s("t"));
    r.v3_and_below_producer_id = init.producer_id;
    r.v3_and_below_producer_epoch = init.producer_epoch;
    r.v3_and_below_topics = vec![t];
    let added: AddPartitionsToTxnResponse =
        c.call(ApiKey::AddPartitionsToTxn, 3, &r).await.unwrap();
    assert_eq!(
        added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        0
    );
    assert_eq!(txn_state(&mut c).await.0, "Ongoing");

    // Within the timeout nothing happens; past it (and the abort check's interval), the
    // coordinator aborts and bumps the epoch, fencing the producer.
    clock.advance(15_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(txn_state(&mut c).await.0, "Ongoing");
    clock.advance(10_000);
    let addr = tb.addr;
    assert!(
        eventually(|| async move {
            let mut c = Conn::from_stream(tokio::net::TcpStream::connect(addr).await.unwrap());
            txn_state(&mut c).await.0 == "CompleteAbort"
        })
        .await,
        "the timed-out transaction was aborted"
    );
    let (_, epoch) = txn_state(&mut c).await;
    assert!(epoch > init.producer_epoch, "the producer was fenced");

    let disk = tb.crash(22);
    let tb = TestBroker::start_with(disk, config(), clock, Some(14)).await;
    let mut c = tb.connect().await;
    assert_eq!(
        txn_state(&mut c).await,
        ("CompleteAbort".to_string(), epoch)
    );
    tb.stop().await;
}
