#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! The transaction coordinator under write failures and crashes, on the in-process broker: a
//! failed write to `__transaction_state` is answered NOT_COORDINATOR and changes nothing, and
//! no interleaving of transactions and crashes brings a transactional id back to an older
//! state than its producer was told.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, DescribeTransactionsRequest,
    DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use support::{Conn, Rng, TestBroker, config};

const NOT_COORDINATOR: i16 = 16;
const TOPIC: &str = "events";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

async fn init(c: &mut Conn, id: &str) -> Option<(i16, i64, i16)> {
    let mut r = InitProducerIdRequest::default();
    r.transactional_id = Some(TransactionalId(s(id)));
    r.transaction_timeout_ms = 60_000;
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    let resp: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 3, &r).await?;
    Some((resp.error_code, resp.producer_id.0, resp.producer_epoch))
}

async fn add(c: &mut Conn, id: &str, pid: i64, epoch: i16, partition: i32) -> Option<i16> {
    let mut t = AddPartitionsToTxnTopic::default();
    t.name = TopicName(s(TOPIC));
    t.partitions = vec![partition];
    let mut r = AddPartitionsToTxnRequest::default();
    r.v3_and_below_transactional_id = TransactionalId(s(id));
    r.v3_and_below_producer_id = ProducerId(pid);
    r.v3_and_below_producer_epoch = epoch;
    r.v3_and_below_topics = vec![t];
    let resp: AddPartitionsToTxnResponse = c.call(ApiKey::AddPartitionsToTxn, 3, &r).await?;
    Some(resp.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code)
}

async fn end(c: &mut Conn, id: &str, pid: i64, epoch: i16, commit: bool) -> Option<i16> {
    let mut r = EndTxnRequest::default();
    r.transactional_id = TransactionalId(s(id));
    r.producer_id = ProducerId(pid);
    r.producer_epoch = epoch;
    r.committed = commit;
    let resp: EndTxnResponse = c.call(ApiKey::EndTxn, 3, &r).await?;
    Some(resp.error_code)
}

/// Sends one transactional batch of `n` records (acks=all); the partition's error code.
async fn produce_txn(
    c: &mut Conn,
    id: &str,
    pid: i64,
    epoch: i16,
    partition: i32,
    n: usize,
) -> Option<i16> {
    use kafka_protocol::messages::ProduceRequest;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let mut b = fjord_record::BatchBuilder::new(fjord_record::Compression::None);
    b.producer_id = pid;
    b.producer_epoch = epoch;
    b.base_sequence = 0;
    b.transactional = true;
    for i in 0..n {
        b.push(1_000, None, Some(format!("v{i}").as_bytes()));
    }
    let mut pd = PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(b.build().unwrap().into());
    let mut t = TopicProduceData::default();
    t.name = TopicName(s(TOPIC));
    t.partition_data = vec![pd];
    let mut r = ProduceRequest::default();
    r.transactional_id = Some(TransactionalId(s(id)));
    r.acks = -1;
    r.timeout_ms = 10_000;
    r.topic_data = vec![t];
    let resp: kafka_protocol::messages::ProduceResponse = c.call(ApiKey::Produce, 9, &r).await?;
    Some(resp.responses[0].partition_responses[0].error_code)
}

/// A partition's end offset for read_committed consumers (its last stable offset).
async fn stable_end(c: &mut Conn, partition: i32) -> i64 {
    use kafka_protocol::messages::ListOffsetsRequest;
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let mut p = ListOffsetsPartition::default();
    p.partition_index = partition;
    p.timestamp = -1;
    let mut t = ListOffsetsTopic::default();
    t.name = TopicName(s(TOPIC));
    t.partitions = vec![p];
    let mut r = ListOffsetsRequest::default();
    r.replica_id = kafka_protocol::messages::BrokerId(-1);
    r.isolation_level = 1;
    r.topics = vec![t];
    let resp: kafka_protocol::messages::ListOffsetsResponse =
        c.call(ApiKey::ListOffsets, 5, &r).await.unwrap();
    resp.topics[0].partitions[0].offset
}

/// (error, state, producer id, epoch) of one transactional id.
async fn describe(c: &mut Conn, id: &str) -> (i16, String, i64, i16) {
    let (code, state, pid, epoch, _) = describe_started(c, id).await;
    (code, state, pid, epoch)
}

/// The same, and the transaction's start time.
async fn describe_started(c: &mut Conn, id: &str) -> (i16, String, i64, i16, i64) {
    let mut r = DescribeTransactionsRequest::default();
    r.transactional_ids = vec![TransactionalId(s(id))];
    let resp: DescribeTransactionsResponse =
        c.call(ApiKey::DescribeTransactions, 0, &r).await.unwrap();
    let t = &resp.transaction_states[0];
    (
        t.error_code,
        t.transaction_state.to_string(),
        t.producer_id.0,
        t.producer_epoch,
        t.transaction_start_time_ms,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_transaction_write_is_not_coordinator_and_changes_nothing() {
    let tb = TestBroker::start(fjord_log::sim::SimStorage::new(), config()).await;
    tb.create_topic(TOPIC, 1).await;
    let mut c = tb.connect().await;
    let (code, pid, epoch) = init(&mut c, "t1").await.unwrap();
    assert_eq!(code, 0);
    assert_eq!(add(&mut c, "t1", pid, epoch, 0).await, Some(0));
    assert_eq!(describe(&mut c, "t1").await.1, "Ongoing");

    let partition = fjord_coord::offsets::partition_for("t1", 2);
    tb.disk
        .fail_under(TestBroker::partition_dir("__transaction_state", partition));
    assert_eq!(
        end(&mut c, "t1", pid, epoch, true).await,
        Some(NOT_COORDINATOR),
        "a failed write to __transaction_state is NOT_COORDINATOR, as Kafka maps it"
    );
    assert_eq!(
        describe(&mut c, "t1").await.1,
        "Ongoing",
        "the refused commit did not change the transaction"
    );

    // After a crash the transaction is where its producer was last told it was, and can
    // finish.
    let disk = tb.crash(3);
    let tb = TestBroker::start(disk, config()).await;
    let mut c = tb.connect().await;
    assert_eq!(
        describe(&mut c, "t1").await,
        (0, "Ongoing".into(), pid, epoch)
    );
    assert_eq!(end(&mut c, "t1", pid, epoch, true).await, Some(0));
    assert_eq!(describe(&mut c, "t1").await.1, "CompleteCommit");
    tb.stop().await;
}

/// A marker that cannot be written does not make EndTxn fail: the outcome is decided once
/// PrepareCommit is stored, so EndTxn answers success (as Kafka does) and the coordinator keeps
/// sending the marker in the background; meanwhile the id answers CONCURRENT_TRANSACTIONS, and
/// the transaction completes once the partition takes the marker — here after the broker
/// restarts with its disk healed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_that_cannot_be_written_is_sent_again_until_the_transaction_completes() {
    const CONCURRENT_TRANSACTIONS: i16 = 51;
    let tb = TestBroker::start(fjord_log::sim::SimStorage::new(), config()).await;
    tb.create_topic(TOPIC, 2).await;
    let mut c = tb.connect().await;
    let (code, pid, epoch) = init(&mut c, "t1").await.unwrap();
    assert_eq!(code, 0);
    assert_eq!(add(&mut c, "t1", pid, epoch, 0).await, Some(0));
    assert_eq!(add(&mut c, "t1", pid, epoch, 1).await, Some(0));
    assert_eq!(produce_txn(&mut c, "t1", pid, epoch, 0, 3).await, Some(0));
    assert_eq!(produce_txn(&mut c, "t1", pid, epoch, 1, 2).await, Some(0));
    assert_eq!(
        stable_end(&mut c, 1).await,
        0,
        "the open transaction holds it back"
    );

    tb.disk.fail_under(TestBroker::partition_dir(TOPIC, 1));
    let started = std::time::Instant::now();
    assert_eq!(
        end(&mut c, "t1", pid, epoch, true).await,
        Some(0),
        "the commit is decided once PrepareCommit is stored"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "EndTxn waited {:?} for a marker",
        started.elapsed()
    );
    assert_eq!(describe(&mut c, "t1").await.1, "PrepareCommit");
    assert_eq!(
        add(&mut c, "t1", pid, epoch, 0).await,
        Some(CONCURRENT_TRANSACTIONS),
        "the next transaction waits for the markers"
    );
    assert_eq!(
        init(&mut c, "t1").await.unwrap().0,
        CONCURRENT_TRANSACTIONS,
        "a new producer waits for the markers too"
    );
    // Rounds keep failing while the disk does; the state stays decided. The partition that
    // took its marker is readable; the other still waits for its own.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(describe(&mut c, "t1").await.1, "PrepareCommit");
    assert_eq!(stable_end(&mut c, 0).await, 4, "3 records and the marker");
    assert_eq!(stable_end(&mut c, 1).await, 0);

    tb.disk.heal();
    let disk = tb.crash(5);
    let tb = TestBroker::start(disk, config()).await;
    let mut c = tb.connect().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while describe(&mut c, "t1").await.1 != "CompleteCommit" {
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted coordinator never completed the transaction: {:?}",
            describe(&mut c, "t1").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        stable_end(&mut c, 1).await,
        3,
        "the marker reached the partition: 2 records and the marker are stable"
    );
    assert_eq!(
        add(&mut c, "t1", pid, epoch, 0).await,
        Some(0),
        "the next transaction begins"
    );
    tb.stop().await;
}

/// What a producer was last told: its id and epoch, and whether its last EndTxn was
/// acknowledged (the transaction is then complete, or a later one began).
#[derive(Debug, Clone, Copy)]
struct Told {
    pid: i64,
    epoch: i16,
    ended: bool,
    /// Wall-clock time just after the last acknowledged EndTxn: a transaction the producer
    /// began after it has a later start time.
    ended_at_ms: i64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Runs transactions on `id` (init, add, commit or abort, sometimes a new init that fences
/// the last one) until the connection goes away.
async fn producer(
    addr: std::net::SocketAddr,
    id: String,
    seed: u64,
    told: Arc<Mutex<BTreeMap<String, Told>>>,
) {
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let mut c = Conn::from_stream(stream);
    let mut rng = Rng::new(seed);
    'init: loop {
        let Some((code, pid, epoch)) = init(&mut c, &id).await else {
            return;
        };
        if code != 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        {
            // Two producers share an id and fence each other: keep the newest word.
            let mut told = told.lock().unwrap();
            let newer = told
                .get(&id)
                .is_none_or(|t| (pid, epoch) > (t.pid, t.epoch));
            if newer {
                told.insert(
                    id.clone(),
                    Told {
                        pid,
                        epoch,
                        ended: true,
                        ended_at_ms: now_ms(),
                    },
                );
            }
        }
        let mark = |ended: bool| {
            let mut told = told.lock().unwrap();
            if let Some(t) = told.get_mut(&id)
                && (t.pid, t.epoch) == (pid, epoch)
            {
                t.ended = ended;
                if ended {
                    t.ended_at_ms = now_ms();
                }
            }
        };
        loop {
            match add(&mut c, &id, pid, epoch, rng.below(2) as i32).await {
                None => return,
                Some(0) => mark(false),
                Some(_) => continue 'init,
            }
            match end(&mut c, &id, pid, epoch, rng.below(2) == 0).await {
                None => return,
                Some(0) => mark(true),
                Some(_) => continue 'init,
            }
            if rng.below(5) == 0 {
                continue 'init;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_interleaving_of_transactions_failures_and_crashes_takes_a_transaction_back() {
    let mut disk = fjord_log::sim::SimStorage::new();
    let mut told: BTreeMap<String, Told> = BTreeMap::new();
    let mut transactions = 0;
    for round in 0..6u64 {
        let tb = TestBroker::start(disk.clone(), config()).await;
        if round == 0 {
            tb.create_topic(TOPIC, 2).await;
        }
        let mut c = tb.connect().await;
        for (id, t) in &told {
            let (code, state, pid, epoch, started) = describe_started(&mut c, id).await;
            assert_eq!(code, 0, "round {round}: {id} is known");
            assert!(
                (pid, epoch) >= (t.pid, t.epoch) || pid > t.pid,
                "round {round}: {id} went back to producer {pid} epoch {epoch}; {t:?} was told"
            );
            if (pid, epoch) == (t.pid, t.epoch) && t.ended {
                // Complete, or a transaction the producer began afterwards (its AddPartitions
                // was stored, the answer lost in the crash).
                assert!(
                    state.starts_with("Complete")
                        || state == "Empty"
                        || started >= t.ended_at_ms - 1,
                    "round {round}: {id}'s acknowledged EndTxn is undone: {state} since {started}, ended at {}",
                    t.ended_at_ms
                );
            }
        }
        let shared = Arc::new(Mutex::new(told.clone()));
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                tokio::spawn(producer(
                    tb.addr,
                    format!("txn-{}", i % 3),
                    round * 10 + i,
                    shared.clone(),
                ))
            })
            .collect();
        let mut rng = Rng::new(round + 7);
        tokio::time::sleep(Duration::from_millis(50 + rng.below(200))).await;
        if round % 2 == 1 {
            tb.disk.fail_under(TestBroker::partition_dir(
                "__transaction_state",
                rng.below(2) as i32,
            ));
            tokio::time::sleep(Duration::from_millis(10 + rng.below(60))).await;
        }
        disk = tb.crash(round + 40);
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        told = Arc::try_unwrap(shared).unwrap().into_inner().unwrap();
        transactions += told.len();
    }
    assert!(
        transactions > 0,
        "the producers made progress between crashes"
    );
}
