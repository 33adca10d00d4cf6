#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! The group coordinator under write failures and crashes, on the in-process broker: a failed
//! write is never answered as success, the group goes back to its last committed state (never
//! further), and no interleaving of commits, heartbeats and crashes brings a group back to an
//! older state than its members were told.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse,
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, GroupId, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use support::{Conn, Rng, TestBroker, config};

const NOT_COORDINATOR: i16 = 16;
const TOPIC: &str = "events";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A tool's commit (no member, generation -1) of one offset; the partition's error code, or
/// `None` if the connection went away.
async fn commit(c: &mut Conn, group: &str, partition: i32, offset: i64) -> Option<i16> {
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = partition;
    p.committed_offset = offset;
    p.committed_leader_epoch = -1;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(s(TOPIC));
    t.partitions = vec![p];
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(s(group));
    r.generation_id_or_member_epoch = -1;
    r.topics = vec![t];
    let resp: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &r).await?;
    Some(resp.topics[0].partitions[0].error_code)
}

/// The committed offset of one partition (-1: none) and the error code.
async fn fetch(c: &mut Conn, group: &str, partition: i32) -> (i64, i16) {
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(s(TOPIC));
    t.partition_indexes = vec![partition];
    let mut r = OffsetFetchRequest::default();
    r.group_id = GroupId(s(group));
    r.topics = Some(vec![t]);
    let resp: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 7, &r).await.unwrap();
    match resp.topics.first() {
        Some(t) => (t.partitions[0].committed_offset, resp.error_code),
        None => (-1, resp.error_code),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_is_not_coordinator_and_the_group_keeps_its_committed_state() {
    let tb = TestBroker::start(fjord_log::sim::SimStorage::new(), config()).await;
    tb.create_topic(TOPIC, 1).await;
    let mut c = tb.connect().await;
    assert_eq!(commit(&mut c, "g", 0, 5).await, Some(0));
    assert_eq!(fetch(&mut c, "g", 0).await, (5, 0));

    // The group's __consumer_offsets partition stops taking writes.
    let partition = fjord_coord::offsets::partition_for("g", 2);
    tb.disk
        .fail_under(TestBroker::partition_dir("__consumer_offsets", partition));
    assert_eq!(
        commit(&mut c, "g", 0, 9).await,
        Some(NOT_COORDINATOR),
        "a failed write is answered NOT_COORDINATOR, as Kafka maps storage errors"
    );
    // Memory went back with the log: the offset a client was refused is not served.
    assert_eq!(fetch(&mut c, "g", 0).await, (5, 0));
    // The partition refuses writes from then on (its log failed); other groups' partition
    // is untouched.
    tb.disk.heal();
    assert_eq!(commit(&mut c, "g", 0, 10).await, Some(NOT_COORDINATOR));
    let other = (0..100)
        .map(|i| format!("other-{i}"))
        .find(|g| fjord_coord::offsets::partition_for(g, 2) != partition)
        .unwrap();
    assert_eq!(commit(&mut c, &other, 0, 3).await, Some(0));

    // After a crash and restart the partition is healthy again and every acknowledged
    // commit is there.
    let disk = tb.crash(1);
    let tb = TestBroker::start(disk, config()).await;
    let mut c = tb.connect().await;
    assert_eq!(fetch(&mut c, "g", 0).await, (5, 0));
    assert_eq!(fetch(&mut c, &other, 0).await, (3, 0));
    assert_eq!(commit(&mut c, "g", 0, 11).await, Some(0));
    assert_eq!(fetch(&mut c, "g", 0).await, (11, 0));
    tb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_offsets_topic_forgets_its_groups_as_kafka_does() {
    // Kafka lets an operator delete __consumer_offsets; the groups it held go with it. The
    // coordinator must follow the deletion (the publisher drops its shards), not keep serving
    // offsets that no longer exist anywhere and would vanish at the next restart.
    let tb = TestBroker::start(fjord_log::sim::SimStorage::new(), config()).await;
    tb.create_topic(TOPIC, 1).await;
    let mut c = tb.connect().await;
    assert_eq!(commit(&mut c, "g", 0, 5).await, Some(0));
    assert_eq!(fetch(&mut c, "g", 0).await, (5, 0));
    let b = tb.broker.clone();
    tokio::task::spawn_blocking(move || b.delete_topic("__consumer_offsets"))
        .await
        .unwrap()
        .expect("the offsets topic is deleted");
    assert_eq!(
        fetch(&mut c, "g", 0).await,
        (-1, 0),
        "the deleted offset is gone"
    );
    // Another group of the same shard commits: the topic is created again, and the new
    // partition holds only that group.
    let partition = fjord_coord::offsets::partition_for("g", 2);
    let h = (0..100)
        .map(|i| format!("h-{i}"))
        .find(|h| fjord_coord::offsets::partition_for(h, 2) == partition)
        .unwrap();
    assert_eq!(commit(&mut c, &h, 0, 7).await, Some(0));
    assert_eq!(fetch(&mut c, &h, 0).await, (7, 0));
    assert_eq!(fetch(&mut c, "g", 0).await, (-1, 0), "g does not come back");
    let disk = tb.crash(3);
    let tb = TestBroker::start(disk, config()).await;
    let mut c = tb.connect().await;
    assert_eq!(fetch(&mut c, &h, 0).await, (7, 0));
    assert_eq!(fetch(&mut c, "g", 0).await, (-1, 0));
    tb.stop().await;
}

/// What clients were told, to check a restarted broker against.
#[derive(Debug, Default)]
struct Acked {
    /// (group, partition) → the last offset acknowledged, and every offset attempted.
    offsets: BTreeMap<(String, i32), (i64, BTreeSet<i64>)>,
    /// The highest member epoch a KIP-848 member was given.
    max_epoch: i32,
    /// Members whose leave was acknowledged (they never come back: a rejoin is a new id).
    left: BTreeSet<String>,
    /// Members that were given an epoch.
    joined: BTreeSet<String>,
    /// Classic groups: the highest generation a member synced in.
    generations: BTreeMap<String, i32>,
}

/// Commits 1, 2, 3, … for its own (group, partition) until the connection goes away.
async fn committer(
    tb_addr: std::net::SocketAddr,
    group: String,
    partition: i32,
    start: i64,
    acked: Arc<Mutex<Acked>>,
) {
    let Ok(stream) = tokio::net::TcpStream::connect(tb_addr).await else {
        return;
    };
    let mut c = Conn::from_stream(stream);
    for offset in start.. {
        acked
            .lock()
            .unwrap()
            .offsets
            .entry((group.clone(), partition))
            .or_default()
            .1
            .insert(offset);
        match commit(&mut c, &group, partition, offset).await {
            None => return,
            Some(0) => {
                acked
                    .lock()
                    .unwrap()
                    .offsets
                    .get_mut(&(group.clone(), partition))
                    .unwrap()
                    .0 = offset;
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

/// A KIP-848 member of `group`: joins, heartbeats with its epoch (acknowledging its
/// assignment), now and then leaves and joins again, until the connection goes away.
async fn member(
    addr: std::net::SocketAddr,
    group: String,
    topic_id: uuid::Uuid,
    seed: u64,
    acked: Arc<Mutex<Acked>>,
) {
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let mut c = Conn::from_stream(stream);
    let mut rng = Rng::new(seed);
    let mut id = String::new();
    let mut epoch = 0;
    let mut owned: Vec<i32> = Vec::new();
    loop {
        let leave = epoch > 0 && rng.below(12) == 0;
        let mut r = ConsumerGroupHeartbeatRequest::default();
        r.group_id = GroupId(s(&group));
        r.member_id = s(&id);
        r.member_epoch = if leave { -1 } else { epoch };
        r.rebalance_timeout_ms = 30_000;
        if epoch == 0 {
            r.subscribed_topic_names = Some(vec![TopicName(s(TOPIC))]);
            r.topic_partitions = Some(Vec::new());
        } else {
            let mut tp = TopicPartitions::default();
            tp.topic_id = topic_id;
            tp.partitions = owned.clone();
            r.topic_partitions = Some(vec![tp]);
        }
        let Some(resp): Option<ConsumerGroupHeartbeatResponse> =
            c.call(ApiKey::ConsumerGroupHeartbeat, 0, &r).await
        else {
            return;
        };
        if resp.error_code != 0 {
            // A failed write, or an epoch the coordinator no longer knows: start over.
            id.clear();
            epoch = 0;
            owned.clear();
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        if leave {
            acked.lock().unwrap().left.insert(id.clone());
            id.clear();
            epoch = 0;
            owned.clear();
            continue;
        }
        id = resp.member_id.as_ref().map(|m| m.to_string()).unwrap_or(id);
        epoch = resp.member_epoch;
        {
            let mut a = acked.lock().unwrap();
            a.max_epoch = a.max_epoch.max(epoch);
            a.joined.insert(id.clone());
        }
        if let Some(assignment) = resp.assignment {
            owned = assignment
                .topic_partitions
                .iter()
                .flat_map(|t| t.partitions.iter().copied())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(rng.below(3))).await;
    }
}

/// A classic member of `group`: joins (with the member id the coordinator asks for), syncs,
/// heartbeats, now and then leaves, until the connection goes away.
async fn classic_member(
    addr: std::net::SocketAddr,
    group: String,
    seed: u64,
    acked: Arc<Mutex<Acked>>,
) {
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let mut c = Conn::from_stream(stream);
    let mut rng = Rng::new(seed);
    let mut id = String::new();
    'join: loop {
        let mut p = JoinGroupRequestProtocol::default();
        p.name = s("range");
        p.metadata = bytes::Bytes::from_static(b"m");
        let mut j = JoinGroupRequest::default();
        j.group_id = GroupId(s(&group));
        j.session_timeout_ms = 300;
        j.rebalance_timeout_ms = 300;
        j.member_id = s(&id);
        j.protocol_type = s("consumer");
        j.protocols = vec![p];
        let Some(joined): Option<JoinGroupResponse> = c.call(ApiKey::JoinGroup, 5, &j).await else {
            return;
        };
        if joined.error_code == 79 {
            // MEMBER_ID_REQUIRED: join again with the id the coordinator gave.
            id = joined.member_id.to_string();
            continue;
        }
        if joined.error_code != 0 {
            id.clear();
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        id = joined.member_id.to_string();
        let generation = joined.generation_id;
        let mut sync = SyncGroupRequest::default();
        sync.group_id = GroupId(s(&group));
        sync.generation_id = generation;
        sync.member_id = s(&id);
        if joined.leader == joined.member_id {
            sync.assignments = joined
                .members
                .iter()
                .map(|m| {
                    let mut a = SyncGroupRequestAssignment::default();
                    a.member_id = m.member_id.clone();
                    a.assignment = bytes::Bytes::from_static(b"a");
                    a
                })
                .collect();
        }
        let Some(synced): Option<SyncGroupResponse> = c.call(ApiKey::SyncGroup, 3, &sync).await
        else {
            return;
        };
        if synced.error_code != 0 {
            continue;
        }
        {
            let mut a = acked.lock().unwrap();
            let g = a.generations.entry(group.clone()).or_default();
            *g = (*g).max(generation);
        }
        for _ in 0..rng.below(4) {
            let mut h = HeartbeatRequest::default();
            h.group_id = GroupId(s(&group));
            h.generation_id = generation;
            h.member_id = s(&id);
            let Some(hb): Option<HeartbeatResponse> = c.call(ApiKey::Heartbeat, 3, &h).await else {
                return;
            };
            if hb.error_code != 0 {
                continue 'join;
            }
            tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
        }
        if rng.below(3) == 0 {
            let mut m = MemberIdentity::default();
            m.member_id = s(&id);
            let mut l = LeaveGroupRequest::default();
            l.group_id = GroupId(s(&group));
            l.members = vec![m];
            let Some(left): Option<LeaveGroupResponse> = c.call(ApiKey::LeaveGroup, 3, &l).await
            else {
                return;
            };
            if left.error_code == 0 && left.members.first().is_some_and(|m| m.error_code == 0) {
                acked.lock().unwrap().left.insert(id.clone());
            }
            id.clear();
        }
    }
}

/// Checks a restarted broker against what clients were told before the crash.
async fn check(tb: &TestBroker, acked: &Acked, round: u64) {
    let mut c = tb.connect().await;
    for ((group, partition), (last, attempted)) in &acked.offsets {
        let (got, code) = fetch(&mut c, group, *partition).await;
        assert_eq!(code, 0, "round {round}: fetching {group}");
        assert!(
            got >= *last,
            "round {round}: {group}-{partition} went back to {got}; {last} was acknowledged"
        );
        assert!(
            got == -1 || attempted.contains(&got),
            "round {round}: {group}-{partition} holds {got}, which nobody committed"
        );
    }
    let mut r = ConsumerGroupDescribeRequest::default();
    r.group_ids = vec![GroupId(s("live"))];
    let d: ConsumerGroupDescribeResponse =
        c.call(ApiKey::ConsumerGroupDescribe, 0, &r).await.unwrap();
    let g = &d.groups[0];
    if acked.max_epoch > 0 {
        assert_eq!(g.error_code, 0, "round {round}: the group was restored");
        assert!(
            g.group_epoch >= acked.max_epoch,
            "round {round}: group epoch {} after restart; members were given epoch {}",
            g.group_epoch,
            acked.max_epoch
        );
    }
    for m in &g.members {
        let id = m.member_id.to_string();
        assert!(
            !acked.left.contains(&id),
            "round {round}: member {id} left (acknowledged) and came back after a restart"
        );
    }
    for (group, generation) in &acked.generations {
        let g = group.clone();
        let described = tb
            .broker
            .groups
            .read(group, move |st| st.and_then(|st| st.classic.describe(&g)))
            .unwrap();
        let d = described.unwrap_or_else(|| panic!("round {round}: classic group {group} is gone"));
        assert!(
            d.generation_id >= *generation,
            "round {round}: {group} is back at generation {}; members synced in {generation}",
            d.generation_id
        );
        // A classic member's leave is not stored until the rebalance it starts forms a
        // generation (Kafka stores a classic group only then, or when it empties): after a
        // crash meanwhile, the member is back until its session expires. Only the
        // generation is checked.
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_interleaving_of_commits_heartbeats_failures_and_crashes_takes_a_group_back() {
    let mut disk = fjord_log::sim::SimStorage::new();
    let mut acked = Acked::default();
    let mut next_offset = 1;
    let mut topic_id = None;
    for round in 0..6u64 {
        let tb = TestBroker::start(disk.clone(), config()).await;
        if round == 0 {
            tb.create_topic(TOPIC, 4).await;
        }
        check(&tb, &acked, round).await;
        let id = *topic_id.get_or_insert_with(|| {
            uuid::Uuid::from_bytes(tb.broker.metadata().topic(TOPIC).unwrap().id.0)
        });
        let shared = Arc::new(Mutex::new(std::mem::take(&mut acked)));
        let mut tasks = Vec::new();
        for i in 0..3 {
            tasks.push(tokio::spawn(committer(
                tb.addr,
                format!("commits-{i}"),
                i,
                next_offset,
                shared.clone(),
            )));
        }
        for m in 0..4 {
            tasks.push(tokio::spawn(classic_member(
                tb.addr,
                format!("classic-{}", m % 2),
                round * 10 + m + 5,
                shared.clone(),
            )));
        }
        for m in 0..3 {
            tasks.push(tokio::spawn(member(
                tb.addr,
                "live".into(),
                id,
                round * 10 + m,
                shared.clone(),
            )));
        }
        let mut rng = Rng::new(round + 100);
        tokio::time::sleep(Duration::from_millis(50 + rng.below(250))).await;
        if round % 2 == 1 {
            // A disk fault on one __consumer_offsets partition mid-run: its writes fail from
            // here on, and nothing failed may be acknowledged.
            tb.disk.fail_under(TestBroker::partition_dir(
                "__consumer_offsets",
                rng.below(2) as i32,
            ));
            tokio::time::sleep(Duration::from_millis(10 + rng.below(60))).await;
        }
        disk = tb.crash(round);
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        acked = Arc::try_unwrap(shared).unwrap().into_inner().unwrap();
        next_offset += 100_000;
    }
    let commits: i64 = acked.offsets.values().map(|(last, _)| *last).sum();
    assert!(
        commits > 0 && acked.max_epoch > 0 && !acked.generations.is_empty(),
        "the clients made progress between crashes ({acked:?})"
    );
    let tb = TestBroker::start(disk, config()).await;
    check(&tb, &acked, 99).await;
    tb.stop().await;
}

/// A batch of JSON records as Fjord wrote `__consumer_offsets` and `__transaction_state`
/// before it used Kafka's schemas.
fn legacy_batch(records: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut b = fjord_record::BatchBuilder::new(fjord_record::Compression::None);
    for (k, v) in records {
        b.push(1_000, Some(k.as_bytes()), v.map(str::as_bytes));
    }
    b.build().unwrap()
}

/// Every (key, value) in a partition, in order.
fn partition_records(
    tb: &TestBroker,
    topic: &str,
    partition: i32,
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let p = tb.broker.partition(topic, partition).unwrap();
    let mut out = Vec::new();
    let mut offset = p.log.log_start_offset();
    while offset < p.log.log_end_offset() {
        let read = p
            .log
            .read(offset, 1 << 20, fjord_log::ReadUpTo::LogEnd, true)
            .unwrap();
        let Some(slice) = read.data else { break };
        let bytes = slice.read().unwrap();
        for batch in fjord_record::split_batches(&bytes) {
            let batch = batch.unwrap();
            let records = fjord_record::Records::decode(batch, 1 << 20).unwrap();
            for r in records.iter() {
                let r = r.unwrap();
                out.push((r.key.unwrap().to_vec(), r.value.map(<[u8]>::to_vec)));
            }
        }
        offset = slice.next_offset;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_with_json_records_converts_to_kafkas_formats_on_start() {
    let tb = TestBroker::start(fjord_log::sim::SimStorage::new(), config()).await;
    tb.create_topic(TOPIC, 1).await;
    let b = tb.broker.clone();
    tokio::task::spawn_blocking(move || {
        b.ensure_offsets_topic().unwrap();
        b.ensure_transaction_topic().unwrap();
    })
    .await
    .unwrap();
    let offsets_partition = fjord_coord::offsets::partition_for("old-group", 2);
    let txn_partition = fjord_coord::offsets::partition_for("old-txn", 2);
    let offset_key = r#"{"type":"offset","group":"old-group","topic":"events","partition":0}"#;
    let gone_key = r#"{"type":"offset","group":"old-group","topic":"gone","partition":0}"#;
    let txn_key = r#"{"transactional_id":"old-txn"}"#;
    let txn_value = r#"{"transactional_id":"old-txn","producer_id":7,"last_producer_id":-1,"producer_epoch":3,"last_producer_epoch":-1,"timeout_ms":60000,"state":"CompleteCommit","partitions":{},"txn_start_ms":-1,"last_update_ms":1000}"#;
    for (topic, partition, batch) in [
        (
            "__consumer_offsets",
            offsets_partition,
            legacy_batch(&[
                (
                    offset_key,
                    Some(
                        r#"{"offset":17,"leader_epoch":-1,"metadata":"m","commit_timestamp":1000}"#,
                    ),
                ),
                (
                    gone_key,
                    Some(r#"{"offset":1,"leader_epoch":-1,"metadata":"","commit_timestamp":1000}"#),
                ),
                (gone_key, None),
            ]),
        ),
        (
            "__transaction_state",
            txn_partition,
            legacy_batch(&[(txn_key, Some(txn_value))]),
        ),
    ] {
        let p = tb.broker.partition(topic, partition).unwrap();
        let info = p
            .append(&batch, fjord_log::AppendOrigin::Internal, 1_000)
            .unwrap();
        p.commit_to(info.0.next_offset()).unwrap();
    }
    // Many offsets of a big group: converted in several batches (one would pass
    // max.message.bytes).
    let big_partition = fjord_coord::offsets::partition_for("big-group", 2);
    let p = tb
        .broker
        .partition("__consumer_offsets", big_partition)
        .unwrap();
    for chunk in 0..4 {
        let keys: Vec<String> = (0..2_000)
            .map(|i| {
                format!(
                    r#"{{"type":"offset","group":"big-group","topic":"t{}","partition":{i}}}"#,
                    chunk
                )
            })
            .collect();
        let value = r#"{"offset":42,"leader_epoch":-1,"metadata":"","commit_timestamp":1000}"#;
        let records: Vec<(&str, Option<&str>)> =
            keys.iter().map(|k| (k.as_str(), Some(value))).collect();
        let info = p
            .append(
                &legacy_batch(&records),
                fjord_log::AppendOrigin::Internal,
                1_000,
            )
            .unwrap();
        p.commit_to(info.0.next_offset()).unwrap();
    }
    // A conversion cut short by a crash: an offset in Kafka's format, then its JSON key's
    // tombstone. The offset stands.
    let cut_key = r#"{"type":"offset","group":"big-group","topic":"cut","partition":0}"#;
    let (native_key, native_value) = fjord_coord::offsets::offset_record(
        "big-group",
        "cut",
        0,
        Some(&fjord_coord::offsets::Committed {
            offset: 77,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 1_000,
            topic_id: None,
        }),
    );
    let mut b = fjord_record::BatchBuilder::new(fjord_record::Compression::None);
    b.push(1_000, Some(&native_key), native_value.as_deref());
    b.push(1_000, Some(cut_key.as_bytes()), None);
    let info = p
        .append(
            &b.build().unwrap(),
            fjord_log::AppendOrigin::Internal,
            1_000,
        )
        .unwrap();
    p.commit_to(info.0.next_offset()).unwrap();
    let disk = tb.crash(5);

    let tb = TestBroker::start(disk, config()).await;
    let mut c = tb.connect().await;
    assert_eq!(
        fetch(&mut c, "old-group", 0).await,
        (17, 0),
        "the old offset reads"
    );
    let b = tb.broker.clone();
    let (big, cut) = tokio::task::spawn_blocking(move || {
        b.groups
            .read("big-group", |st| {
                let st = st.unwrap();
                (
                    st.offsets.of_group("big-group").len(),
                    st.offsets.get("big-group", "cut", 0).map(|c| c.offset),
                )
            })
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(big, 8_001, "every offset of the big group converted");
    assert_eq!(
        cut,
        Some(77),
        "a JSON tombstone after the Kafka record deletes nothing"
    );
    let records = partition_records(&tb, "__consumer_offsets", offsets_partition);
    let (last_key, last_value) = records
        .iter()
        .rev()
        .find(|(k, _)| k == offset_key.as_bytes())
        .unwrap();
    assert!(
        last_value.is_none(),
        "the JSON key ends in a tombstone ({last_key:?})"
    );
    assert!(
        records
            .iter()
            .filter(|(k, _)| k == gone_key.as_bytes())
            .count()
            == 2,
        "a JSON key already deleted gets no second tombstone"
    );
    let converted = records
        .iter()
        .filter(|(k, _)| !fjord_coord::offsets::is_legacy(k))
        .map(|(k, v)| fjord_coord::offsets::decode(k, v.as_deref()).unwrap())
        .collect::<Vec<_>>();
    assert!(
        matches!(
            &converted[..],
            [fjord_coord::offsets::StoredRecord::Offset { group, value: Some(c), .. }] if group == "old-group" && c.offset == 17
        ),
        "one record in Kafka's format: {converted:?}"
    );
    let end = tb
        .broker
        .partition("__consumer_offsets", offsets_partition)
        .unwrap()
        .log
        .log_end_offset();
    let txns = partition_records(&tb, "__transaction_state", txn_partition);
    assert!(
        txns.iter()
            .any(|(k, v)| !fjord_coord::txn::is_legacy_txn_key(k)
                && fjord_coord::txn::decode_txn_record(k, v.as_deref())
                    .unwrap()
                    .1
                    .is_some_and(|m| m.producer_id == 7 && m.producer_epoch == 3)),
        "the transactional id in Kafka's format: {txns:?}"
    );
    assert!(
        txns.iter()
            .rev()
            .find(|(k, _)| k == txn_key.as_bytes())
            .is_some_and(|(_, v)| v.is_none()),
        "the JSON key ends in a tombstone"
    );
    let disk = tb.crash(6);

    // A second start reads Kafka's records and converts nothing more.
    let tb = TestBroker::start(disk, config()).await;
    let mut c = tb.connect().await;
    assert_eq!(fetch(&mut c, "old-group", 0).await, (17, 0));
    let b = tb.broker.clone();
    let described = tokio::task::spawn_blocking(move || b.txns.describe("old-txn"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((described.producer_id, described.producer_epoch), (7, 3));
    assert_eq!(
        tb.broker
            .partition("__consumer_offsets", offsets_partition)
            .unwrap()
            .log
            .log_end_offset(),
        end,
        "nothing converted twice"
    );
    tb.stop().await;
}
