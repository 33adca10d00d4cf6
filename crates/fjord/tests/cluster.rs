#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! Three `fjord serve` processes as one cluster, driven with typed Kafka requests: a request
//! sent to a broker that does not lead the partition is refused with NOT_LEADER_OR_FOLLOWER
//! and, where the version carries it, where the leader is (KIP-951); a stopped leader is fenced
//! and its partition reported without a leader until it returns.

mod support;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, MetadataRequest, MetadataResponse,
};
use support::{call, create_topics, free_port, produce};

struct Node {
    child: Child,
    port: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Starts three nodes (all voters) with `config` as their config file; returns once every
/// node accepts connections (logs in `dir/node{i}.log`).
fn start_cluster(dir: &std::path::Path, config: &str) -> Vec<Node> {
    start_cluster_with(dir, config, |_| Vec::new())
}

/// [`start_cluster`], node `i` (1-based) also given the flags `flags(i)`.
fn start_cluster_with(
    dir: &std::path::Path,
    config: &str,
    flags: impl Fn(usize) -> Vec<String>,
) -> Vec<Node> {
    let config_path = dir.join("cluster.toml");
    std::fs::write(&config_path, config).unwrap();
    let config = config_path;
    let logs = || {
        (0..3)
            .map(|i| std::fs::read_to_string(dir.join(format!("node{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    // A free port may be taken by another process before a node binds it: a node that exits
    // at start is tried again, the whole cluster on new ports and empty data directories.
    for attempt in 1..=3 {
        let controllers: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let voters = controllers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes: Vec<Node> = (0..3)
            .map(|i| {
                let port = free_port();
                let child = Command::new(env!("CARGO_BIN_EXE_fjord"))
                    .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                    .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
                    .arg("--data-dir")
                    .arg(dir.join(format!("node{i}")))
                    .args(["--node-id", &(i + 1).to_string(), "--voters", &voters])
                    .arg("--config")
                    .arg(&config)
                    .args([
                        "--controller-listen",
                        &format!("127.0.0.1:{}", controllers[i]),
                    ])
                    .args(flags(i + 1))
                    .env("NO_COLOR", "1")
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.join(format!("node{i}.log"))).unwrap())
                    .spawn()
                    .unwrap();
                Node { child, port }
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut exited = false;
        'wait: for i in 0..3 {
            while TcpStream::connect(("127.0.0.1", nodes[i].port)).is_err() {
                if nodes
                    .iter_mut()
                    .any(|n| n.child.try_wait().unwrap().is_some())
                {
                    exited = true;
                    break 'wait;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not start:\n{}",
                    logs()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if !exited {
            return nodes;
        }
        assert!(attempt < 3, "a node exited at start:\n{}", logs());
        eprintln!("a node exited at start; starting again:\n{}", logs());
        drop(nodes);
        for i in 0..3 {
            let _ = std::fs::remove_dir_all(dir.join(format!("node{i}")));
        }
    }
    unreachable!()
}

#[test]
fn a_partition_asked_of_the_wrong_broker_names_its_leader_and_a_stopped_leader_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(
        dir.path(),
        "\"broker.heartbeat.interval.ms\" = 200\n\"broker.session.timeout.ms\" = 1500\n",
    );
    let mut first = connect(nodes[0].port);
    create_topics(&mut first, &[("hint", 3)]);
    let mut md = MetadataRequest::default();
    md.topics = None;
    let meta: MetadataResponse = call(&mut first, ApiKey::Metadata, 12, &md);
    assert_eq!(meta.brokers.len(), 3);
    let topic = meta
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("hint"))
        .unwrap();
    let p = &topic.partitions[0];
    let leader = p.leader_id.0;
    let leader_port = meta
        .brokers
        .iter()
        .find(|b| b.node_id.0 == leader)
        .unwrap()
        .port;
    // A broker that does not lead partition 0.
    let other = meta
        .brokers
        .iter()
        .find(|b| b.node_id.0 != leader)
        .unwrap()
        .port as u16;
    let mut wrong = connect(other);

    let batch = fjord_record::BatchBuilder::new(fjord_record::Compression::None)
        .push(0, None, Some(b"v"))
        .build()
        .unwrap();
    // Brokers apply the metadata asynchronously (as Kafka's): until the other broker has
    // the topic it answers UNKNOWN_TOPIC_OR_PARTITION.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let r = produce(&mut wrong, "hint", 0, batch.clone());
        if r.error_code != 3 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(refused.error_code, 6, "NOT_LEADER_OR_FOLLOWER");
    assert_eq!(refused.current_leader.leader_id.0, leader);
    assert_eq!(refused.current_leader.leader_epoch, p.leader_epoch);

    let mut fp = FetchPartition::default();
    fp.partition = 0;
    fp.fetch_offset = 0;
    fp.partition_max_bytes = 1 << 20;
    fp.current_leader_epoch = -1;
    let mut ft = FetchTopic::default();
    ft.topic_id = topic.topic_id;
    ft.partitions = vec![fp];
    let mut fetch = FetchRequest::default();
    fetch.max_wait_ms = 0;
    fetch.max_bytes = 1 << 20;
    fetch.topics = vec![ft];
    fetch.replica_state.replica_id = kafka_protocol::messages::BrokerId(-1);
    let fetched: FetchResponse = call(&mut wrong, ApiKey::Fetch, 16, &fetch);
    let part = &fetched.responses[0].partitions[0];
    assert_eq!(part.error_code, 6);
    assert_eq!(part.current_leader.leader_id.0, leader);
    let endpoint = fetched
        .node_endpoints
        .iter()
        .find(|e| e.node_id.0 == leader)
        .expect("the leader's endpoint (v16+)");
    assert_eq!(endpoint.port, leader_port);
    // Before v16 there is no hint, as a three-node Kafka 4.4 answers.
    let fetched: FetchResponse = call(&mut wrong, ApiKey::Fetch, 15, &fetch);
    let part = &fetched.responses[0].partitions[0];
    assert_eq!(part.error_code, 6);
    assert_eq!(part.current_leader.leader_id.0, -1);
    assert!(fetched.node_endpoints.is_empty());

    // The leader takes the write (once it has applied the topic: brokers follow the metadata
    // asynchronously, as in Kafka, and clients retry meanwhile).
    let mut right = connect(leader_port as u16);
    let deadline = Instant::now() + Duration::from_secs(10);
    while produce(&mut right, "hint", 0, batch.clone()).error_code != 0 {
        assert!(Instant::now() < deadline, "the leader never took the write");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The leader's process stops: it is fenced, and DescribeTopicPartitions says its
    // partition has no leader available and its replica is offline.
    let stopped = nodes
        .iter()
        .find(|n| i32::from(n.port) == leader_port)
        .unwrap();
    let signal = |sig: &str| {
        Command::new("kill")
            .args([sig, &stopped.child.id().to_string()])
            .status()
            .unwrap()
    };
    signal("-STOP");
    let describe = |s: &mut TcpStream| {
        use kafka_protocol::messages::describe_topic_partitions_request::TopicRequest;
        use kafka_protocol::messages::{
            DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
        };
        let mut tr = TopicRequest::default();
        tr.name = TopicName(kafka_protocol::protocol::StrBytes::from_static_str("hint"));
        let mut req = DescribeTopicPartitionsRequest::default();
        req.topics = vec![tr];
        req.response_partition_limit = 100;
        let r: DescribeTopicPartitionsResponse = call(s, ApiKey::DescribeTopicPartitions, 0, &req);
        r.topics[0].partitions[0].clone()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p0 = describe(&mut wrong);
        if p0.error_code == 5 {
            // As a three-node Kafka 4.4 answers for a fenced broker's only replica.
            let ids = |v: &[kafka_protocol::messages::BrokerId]| {
                v.iter().map(|b| b.0).collect::<Vec<_>>()
            };
            assert_eq!(ids(&p0.offline_replicas), [leader]);
            assert_eq!(p0.leader_id.0, -1);
            assert_eq!(ids(&p0.isr_nodes), Vec::<i32>::new());
            assert_eq!(ids(&p0.replica_nodes), [leader]);
            assert_eq!(
                ids(p0.eligible_leader_replicas.as_deref().unwrap()),
                [leader]
            );
            assert_eq!(ids(p0.last_known_elr.as_deref().unwrap()), [leader]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stopped leader was never fenced"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    signal("-CONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    while describe(&mut wrong).error_code != 0 {
        assert!(Instant::now() < deadline, "the leader was never unfenced");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Produces `n` one-record batches to partition 0 of `topic`, each retried until the broker
/// takes it (a leader still gathering its in-sync replicas refuses at first).
fn write_until_taken(s: &mut TcpStream, topic: &str, n: usize) {
    let batch = fjord_record::BatchBuilder::new(fjord_record::Compression::None)
        .push(0, None, Some(b"v"))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..n {
        loop {
            let r = produce(s, topic, 0, batch.clone());
            if r.error_code == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the leader never took the write: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Creates topic `name` of one partition with `replication_factor` replicas (-1: the brokers'
/// default.replication.factor).
fn create_replicated(s: &mut TcpStream, name: &'static str, replication_factor: i16) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};
    let mut ct = CreatableTopic::default();
    ct.name = TopicName(kafka_protocol::protocol::StrBytes::from_static_str(name));
    ct.num_partitions = 1;
    ct.replication_factor = replication_factor;
    let mut create = CreateTopicsRequest::default();
    create.topics = vec![ct];
    create.timeout_ms = 10_000;
    let created: CreateTopicsResponse = call(s, ApiKey::CreateTopics, 7, &create);
    assert_eq!(created.topics[0].error_code, 0);
}

/// A Fetch of partition 0 of `topic` from `fetch_offset` in `current_leader_epoch`, no wait.
fn fetch_request(
    topic: &kafka_protocol::messages::metadata_response::MetadataResponseTopic,
    current_leader_epoch: i32,
    fetch_offset: i64,
    last_fetched_epoch: i32,
) -> FetchRequest {
    let mut fp = FetchPartition::default();
    fp.partition = 0;
    fp.fetch_offset = fetch_offset;
    fp.partition_max_bytes = 1 << 20;
    fp.current_leader_epoch = current_leader_epoch;
    fp.last_fetched_epoch = last_fetched_epoch;
    let mut ft = FetchTopic::default();
    ft.topic = topic.name.clone().unwrap();
    ft.topic_id = topic.topic_id;
    ft.partitions = vec![fp];
    let mut fetch = FetchRequest::default();
    fetch.max_wait_ms = 0;
    fetch.max_bytes = 1 << 20;
    fetch.topics = vec![ft];
    fetch
}

/// A Fetch naming a replica id as a follower, to the broker on `port`.
fn replica_fetch(
    s: &mut TcpStream,
    version: i16,
    topic: &kafka_protocol::messages::metadata_response::MetadataResponseTopic,
    replica: i32,
    current_leader_epoch: i32,
    fetch_offset: i64,
    last_fetched_epoch: i32,
) -> kafka_protocol::messages::fetch_response::PartitionData {
    let mut fetch = fetch_request(
        topic,
        current_leader_epoch,
        fetch_offset,
        last_fetched_epoch,
    );
    if version >= 15 {
        fetch.replica_state.replica_id = kafka_protocol::messages::BrokerId(replica);
    } else {
        fetch.replica_id = kafka_protocol::messages::BrokerId(replica);
    }
    let r: FetchResponse = call(s, ApiKey::Fetch, version, &fetch);
    r.responses[0].partitions[0].clone()
}

#[test]
fn follower_fetches_are_checked_as_kafka_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path(), "\"default.replication.factor\" = 2\n");
    let mut first = connect(nodes[0].port);
    // No replication factor given: the brokers' default.replication.factor (2) applies.
    create_replicated(&mut first, "rep", -1);
    let mut md = MetadataRequest::default();
    md.topics = None;
    let meta: MetadataResponse = call(&mut first, ApiKey::Metadata, 12, &md);
    let topic = meta
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("rep"))
        .unwrap()
        .clone();
    let p = &topic.partitions[0];
    let replicas: Vec<i32> = p.replica_nodes.iter().map(|b| b.0).collect();
    assert_eq!(replicas.len(), 2);
    let leader = p.leader_id.0;
    let epoch = p.leader_epoch;
    let follower = *replicas.iter().find(|&&r| r != leader).unwrap();
    let outsider = (1..=3).find(|b| !replicas.contains(b)).unwrap();
    let port = |id: i32| {
        meta.brokers
            .iter()
            .find(|b| b.node_id.0 == id)
            .unwrap()
            .port as u16
    };
    let mut at_leader = connect(port(leader));
    // acks=all: answered once the follower has the batch too.
    write_until_taken(&mut at_leader, "rep", 3);
    for version in [12, 15, 17] {
        // A broker that is no replica of the partition never takes the follower path:
        // UNKNOWN_LEADER_EPOCH with a leader epoch, NOT_LEADER_OR_FOLLOWER without.
        let d = replica_fetch(&mut at_leader, version, &topic, outsider, epoch, 0, -1);
        assert_eq!(d.error_code, 75, "v{version}: UNKNOWN_LEADER_EPOCH");
        assert!(d.records.as_ref().is_none_or(|r| r.is_empty()));
        let d = replica_fetch(&mut at_leader, version, &topic, outsider, -1, 0, -1);
        assert_eq!(d.error_code, 6, "v{version}: NOT_LEADER_OR_FOLLOWER");
        // The follower reads past nothing it should not: everything, to the log end.
        let d = replica_fetch(&mut at_leader, version, &topic, follower, epoch, 0, -1);
        assert_eq!(d.error_code, 0, "v{version}");
        assert_eq!(d.high_watermark, 3);
        assert!(!d.records.as_ref().unwrap().is_empty());
        // An offset past the leader's log in the leader's own epoch: where the logs part
        // (KIP-279), and no data.
        let d = replica_fetch(&mut at_leader, version, &topic, follower, epoch, 9, epoch);
        assert_eq!(d.error_code, 0, "v{version}");
        assert_eq!(
            (d.diverging_epoch.epoch, d.diverging_epoch.end_offset),
            (epoch, 3),
            "v{version}"
        );
        assert!(d.records.as_ref().is_none_or(|r| r.is_empty()));
        // An epoch the leader never had: Kafka's OFFSET_OUT_OF_RANGE, no data.
        let d = replica_fetch(
            &mut at_leader,
            version,
            &topic,
            follower,
            epoch,
            3,
            epoch + 5,
        );
        assert_eq!(d.error_code, 1, "v{version}: OFFSET_OUT_OF_RANGE");
        assert!(d.records.as_ref().is_none_or(|r| r.is_empty()));
        // A future leader epoch is unknown, an older one fenced.
        let d = replica_fetch(
            &mut at_leader,
            version,
            &topic,
            follower,
            epoch + 1,
            3,
            epoch,
        );
        assert_eq!(d.error_code, 75, "v{version}: UNKNOWN_LEADER_EPOCH");
        if epoch > 0 {
            let d = replica_fetch(&mut at_leader, version, &topic, follower, epoch - 1, 3, -1);
            assert_eq!(d.error_code, 74, "v{version}: FENCED_LEADER_EPOCH");
        }
        // The follower's own broker is not the leader.
        let mut at_follower = connect(port(follower));
        let d = replica_fetch(&mut at_follower, version, &topic, leader, epoch, 0, -1);
        assert_eq!(d.error_code, 6, "v{version}: NOT_LEADER_OR_FOLLOWER");
    }
    drop(nodes);
}

/// A consumer's Fetch (no replica id) of partition 0 of `topic`, naming rack `rack`.
fn consumer_fetch(
    s: &mut TcpStream,
    version: i16,
    topic: &kafka_protocol::messages::metadata_response::MetadataResponseTopic,
    current_leader_epoch: i32,
    fetch_offset: i64,
    rack: &'static str,
) -> kafka_protocol::messages::fetch_response::PartitionData {
    let mut fetch = fetch_request(topic, current_leader_epoch, fetch_offset, -1);
    fetch.rack_id = kafka_protocol::protocol::StrBytes::from_static_str(rack);
    let r: FetchResponse = call(s, ApiKey::Fetch, version, &fetch);
    r.responses[0].partitions[0].clone()
}

#[test]
fn consumers_are_sent_to_and_served_by_the_replica_in_their_rack() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster_with(
        dir.path(),
        "\"replica.selector.class\" = \"org.apache.kafka.common.replica.RackAwareReplicaSelector\"\n",
        |i| vec!["--rack".into(), format!("r{i}")],
    );
    let mut first = connect(nodes[0].port);
    create_replicated(&mut first, "near", 2);
    let mut md = MetadataRequest::default();
    md.topics = None;
    let meta: MetadataResponse = call(&mut first, ApiKey::Metadata, 12, &md);
    let topic = meta
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("near"))
        .unwrap()
        .clone();
    let p = &topic.partitions[0];
    let leader = p.leader_id.0;
    let epoch = p.leader_epoch;
    let follower = p
        .replica_nodes
        .iter()
        .map(|b| b.0)
        .find(|&r| r != leader)
        .unwrap();
    let outsider = (1..=3)
        .find(|b| !p.replica_nodes.iter().any(|r| r.0 == *b))
        .unwrap();
    let rack = |id: i32| -> &'static str { ["r1", "r2", "r3"][id as usize - 1] };
    let port = |id: i32| nodes[id as usize - 1].port;
    let mut at_leader = connect(port(leader));
    write_until_taken(&mut at_leader, "near", 3);
    // The leader sends a consumer in the follower's rack there, with no records, from v11;
    // one in its own rack, in no rack, or in a rack without a replica, it serves itself.
    for version in [11, 17] {
        let d = consumer_fetch(&mut at_leader, version, &topic, epoch, 0, rack(follower));
        assert_eq!(d.error_code, 0);
        assert_eq!(d.preferred_read_replica.0, follower, "v{version}");
        assert!(d.records.as_ref().is_none_or(|r| r.is_empty()));
        assert_eq!(d.high_watermark, 3);
        for other in [rack(leader), "", rack(outsider)] {
            let d = consumer_fetch(&mut at_leader, version, &topic, epoch, 0, other);
            assert_eq!(d.preferred_read_replica.0, -1, "v{version} rack {other:?}");
            assert!(!d.records.as_ref().unwrap().is_empty());
        }
    }
    // The follower serves v11+ consumers up to its high watermark (which it learns from its
    // next fetch), in the epoch it knows.
    let mut at_follower = connect(port(follower));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = consumer_fetch(&mut at_follower, 11, &topic, epoch, 0, "");
        assert_eq!(d.error_code, 0, "{d:?}");
        if d.high_watermark == 3 {
            assert!(!d.records.as_ref().unwrap().is_empty());
            assert_eq!(d.preferred_read_replica.0, -1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower never learned the high watermark"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let d = consumer_fetch(&mut at_follower, 11, &topic, epoch, 3, "");
    assert_eq!(d.error_code, 0, "at its log end: nothing yet");
    assert!(d.records.as_ref().is_none_or(|r| r.is_empty()));
    let d = consumer_fetch(&mut at_follower, 11, &topic, epoch, 4, "");
    assert_eq!(d.error_code, 1, "past its log end: OFFSET_OUT_OF_RANGE");
    let d = consumer_fetch(&mut at_follower, 11, &topic, epoch + 1, 0, "");
    assert_eq!(d.error_code, 75, "a newer epoch: UNKNOWN_LEADER_EPOCH");
    if epoch > 0 {
        let d = consumer_fetch(&mut at_follower, 11, &topic, epoch - 1, 0, "");
        assert_eq!(d.error_code, 74, "an older epoch: FENCED_LEADER_EPOCH");
    }
    // Before v11 consumers read from the leader only; a broker with no replica serves none.
    let d = consumer_fetch(&mut at_follower, 10, &topic, epoch, 0, "");
    assert_eq!(d.error_code, 6, "v10 at a follower: NOT_LEADER_OR_FOLLOWER");
    let mut at_outsider = connect(port(outsider));
    let d = consumer_fetch(&mut at_outsider, 11, &topic, epoch, 0, "");
    assert_eq!(d.error_code, 6, "no replica here: NOT_LEADER_OR_FOLLOWER");
    drop(nodes);
}

/// The answers of partition 0 of `topic` to OffsetForLeaderEpoch v4 (a consumer's, replica
/// id -1) for each (leader epoch asked, current leader epoch the asker knows).
fn offsets_for_epochs(
    s: &mut TcpStream,
    topic: &'static str,
    asks: &[(i32, i32)],
) -> Vec<kafka_protocol::messages::offset_for_leader_epoch_response::EpochEndOffset> {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::{
        OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName,
    };
    let mut req = OffsetForLeaderEpochRequest::default();
    req.replica_id = kafka_protocol::messages::BrokerId(-1);
    let mut t = OffsetForLeaderTopic::default();
    t.topic = TopicName(kafka_protocol::protocol::StrBytes::from_static_str(topic));
    for &(leader_epoch, current_leader_epoch) in asks {
        let mut p = OffsetForLeaderPartition::default();
        p.partition = 0;
        p.leader_epoch = leader_epoch;
        p.current_leader_epoch = current_leader_epoch;
        t.partitions.push(p);
    }
    req.topics.push(t);
    let r: OffsetForLeaderEpochResponse = call(s, ApiKey::OffsetForLeaderEpoch, 4, &req);
    r.topics[0].partitions.clone()
}

/// After a failover the partition has two leader epochs: a client (KIP-320) that validates
/// its position with the old epoch learns where that epoch ended on the new leader, and one
/// that still names the old epoch as current is fenced, in Fetch and in OffsetForLeaderEpoch;
/// a newer epoch than the leader's is unknown.
#[test]
fn after_a_failover_older_epochs_are_fenced_and_end_where_the_next_began() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(
        dir.path(),
        "\"broker.heartbeat.interval.ms\" = 200\n\"broker.session.timeout.ms\" = 1500\n",
    );
    let mut first = connect(nodes[0].port);
    create_replicated(&mut first, "moved", 3);
    let leader_of = |s: &mut TcpStream| {
        let mut md = MetadataRequest::default();
        md.topics = None;
        let meta: MetadataResponse = call(s, ApiKey::Metadata, 12, &md);
        let topic = meta
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("moved"))
            .unwrap()
            .clone();
        let p = &topic.partitions[0];
        (p.leader_id.0, p.leader_epoch, p.isr_nodes.len(), topic)
    };
    // Every replica in sync first, so the next leader holds the first epoch's records.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (old_leader, old_epoch) = loop {
        let (leader, epoch, isr, _) = leader_of(&mut first);
        if leader > 0 && isr == 3 {
            break (leader, epoch);
        }
        assert!(
            Instant::now() < deadline,
            "the partition never had three in sync"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    write_until_taken(
        &mut connect(nodes[old_leader as usize - 1].port),
        "moved",
        3,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while leader_of(&mut first).2 < 3 {
        assert!(Instant::now() < deadline, "a follower fell out of sync");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The leader dies; a survivor is elected in a newer epoch and takes two more records.
    let dead = &mut nodes[old_leader as usize - 1];
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    let survivor = (1..=3).find(|&n| n != old_leader).unwrap();
    let mut at_survivor = connect(nodes[survivor as usize - 1].port);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (leader, epoch, topic) = loop {
        let (leader, epoch, _, topic) = leader_of(&mut at_survivor);
        if leader > 0 && leader != old_leader {
            break (leader, epoch, topic);
        }
        assert!(Instant::now() < deadline, "no new leader was elected");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(epoch > old_epoch, "a new leader has a newer epoch");
    let mut at_leader = connect(nodes[leader as usize - 1].port);
    write_until_taken(&mut at_leader, "moved", 2);

    // Fetch: the current epoch reads, an older one is fenced, a newer one unknown.
    let mut fetch = |current: i32| {
        let r: FetchResponse = call(
            &mut at_leader,
            ApiKey::Fetch,
            12,
            &fetch_request(&topic, current, 0, -1),
        );
        r.responses[0].partitions[0].error_code
    };
    assert_eq!(fetch(epoch), 0);
    assert_eq!(fetch(old_epoch), 74, "an older epoch: FENCED_LEADER_EPOCH");
    assert_eq!(fetch(epoch + 1), 75, "a newer epoch: UNKNOWN_LEADER_EPOCH");
    // KIP-951: from v16 a fenced fetch names the leader, its epoch and its endpoint.
    let fenced: FetchResponse = call(
        &mut at_leader,
        ApiKey::Fetch,
        16,
        &fetch_request(&topic, old_epoch, 0, -1),
    );
    let part = &fenced.responses[0].partitions[0];
    assert_eq!(part.error_code, 74);
    assert_eq!(
        (
            part.current_leader.leader_id.0,
            part.current_leader.leader_epoch
        ),
        (leader, epoch)
    );
    let endpoint = fenced
        .node_endpoints
        .iter()
        .find(|e| e.node_id.0 == leader)
        .expect("the leader's endpoint (v16+)");
    assert_eq!(endpoint.port, nodes[leader as usize - 1].port as i32);

    // OffsetForLeaderEpoch: the old epoch ends where the new one began (offset 3); the
    // current one at the log end (5); a stale current epoch is fenced, a newer one unknown.
    let answers = offsets_for_epochs(
        &mut at_leader,
        "moved",
        &[
            (old_epoch, epoch),
            (epoch, epoch),
            (old_epoch, old_epoch),
            (epoch, epoch + 1),
        ],
    );
    assert_eq!(
        (
            answers[0].error_code,
            answers[0].leader_epoch,
            answers[0].end_offset
        ),
        (0, old_epoch, 3),
        "the old epoch ends where the new one began"
    );
    assert_eq!(
        (
            answers[1].error_code,
            answers[1].leader_epoch,
            answers[1].end_offset
        ),
        (0, epoch, 5),
        "the current epoch ends at the log end"
    );
    assert_eq!(
        answers[2].error_code, 74,
        "a stale current epoch: FENCED_LEADER_EPOCH"
    );
    assert_eq!(
        answers[3].error_code, 75,
        "a newer current epoch: UNKNOWN_LEADER_EPOCH"
    );
    drop(nodes);
}

/// A follower that stops fetching (its process paused, while its broker session is long
/// enough that it is not fenced meanwhile) leaves the ISR after `replica.lag.time.max.ms`,
/// decided by the leader, and rejoins once it has caught up again.
#[test]
fn a_follower_that_stops_fetching_leaves_the_isr_and_rejoins_when_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(
        dir.path(),
        "\"broker.heartbeat.interval.ms\" = 200\n\"broker.session.timeout.ms\" = 60000\n\
         \"replica.lag.time.max.ms\" = 3000\n",
    );
    let mut first = connect(nodes[0].port);
    create_replicated(&mut first, "lagging", 3);
    let (leader, _) = wait_for(&mut first, "lagging", "every replica in sync", &|l, isr| {
        l > 0 && isr.len() == 3
    });
    let mut at_leader = connect(nodes[leader as usize - 1].port);
    write_until_taken(&mut at_leader, "lagging", 1);

    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let pid = nodes[follower as usize - 1].child.id().to_string();
    let signal = |sig: &str| Command::new("kill").args([sig, &pid]).status().unwrap();
    signal("-STOP");
    let paused = Instant::now();
    write_until_taken(&mut at_leader, "lagging", 1);
    let (_, isr) = wait_for(
        &mut at_leader,
        "lagging",
        "the paused follower leaves the ISR",
        &|_, isr| !isr.contains(&follower),
    );
    assert_eq!(isr.len(), 2);
    assert!(
        paused.elapsed() < Duration::from_secs(30),
        "left by lag, long before its 60-s session could expire"
    );
    signal("-CONT");
    write_until_taken(&mut at_leader, "lagging", 1);
    wait_for(
        &mut at_leader,
        "lagging",
        "the follower rejoins the ISR",
        &|_, isr| isr.len() == 3,
    );
}

/// Creates topic `name` of one partition on replicas `replicas` (the first preferred), with
/// topic configs `configs`.
fn create_assigned(
    s: &mut TcpStream,
    name: &'static str,
    replicas: &[i32],
    configs: &[(&str, &str)],
) {
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
    };
    use kafka_protocol::messages::{
        BrokerId, CreateTopicsRequest, CreateTopicsResponse, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    let mut a = CreatableReplicaAssignment::default();
    a.partition_index = 0;
    a.broker_ids = replicas.iter().map(|&id| BrokerId(id)).collect();
    let mut ct = CreatableTopic::default();
    ct.name = TopicName(StrBytes::from_static_str(name));
    ct.num_partitions = -1;
    ct.replication_factor = -1;
    ct.assignments = vec![a];
    ct.configs = configs
        .iter()
        .map(|(k, v)| {
            let mut c = CreatableTopicConfig::default();
            c.name = StrBytes::from_string(k.to_string());
            c.value = Some(StrBytes::from_string(v.to_string()));
            c
        })
        .collect();
    let mut create = CreateTopicsRequest::default();
    create.topics = vec![ct];
    create.timeout_ms = 10_000;
    let created: CreateTopicsResponse = call(s, ApiKey::CreateTopics, 7, &create);
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");
}

/// Waits up to 30 s until partition 0 of `topic`, as `s` publishes it, satisfies `ok`
/// (leader, sorted ISR); returns them.
fn wait_for(
    s: &mut TcpStream,
    topic: &str,
    what: &str,
    ok: &dyn Fn(i32, &[i32]) -> bool,
) -> (i32, Vec<i32>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (leader, isr) = leader_and_isr(s, topic);
        if ok(leader, &isr) {
            return (leader, isr);
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: {what}: leader {leader}, ISR {isr:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Partition 0 of `topic` as `s` publishes it: (leader, sorted ISR).
fn leader_and_isr(s: &mut TcpStream, topic: &str) -> (i32, Vec<i32>) {
    let mut md = MetadataRequest::default();
    md.topics = None;
    let meta: MetadataResponse = call(s, ApiKey::Metadata, 12, &md);
    let t = meta
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        .unwrap();
    let p = &t.partitions[0];
    let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
    isr.sort();
    (p.leader_id.0, isr)
}

/// With `unclean.leader.election.enable` (a topic config), a partition whose in-sync replicas
/// are all gone is given to a live replica that was out of sync (its unreplicated tail lost,
/// as Kafka's option says); without it the partition waits, leaderless, for an in-sync one.
#[test]
fn an_unclean_election_happens_only_where_the_topic_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(
        dir.path(),
        "\"broker.heartbeat.interval.ms\" = 300\n\"broker.session.timeout.ms\" = 3000\n",
    );
    let mut third = connect(nodes[2].port);
    create_assigned(
        &mut third,
        "unclean",
        &[1, 2],
        &[("unclean.leader.election.enable", "true")],
    );
    create_assigned(&mut third, "clean", &[1, 2], &[]);
    for topic in ["unclean", "clean"] {
        wait_for(
            &mut third,
            topic,
            "node 1 leads, both in sync",
            &|l, isr| l == 1 && isr == [1, 2],
        );
    }
    let signal = |node: usize, sig: &str| {
        let pid = nodes[node - 1].child.id().to_string();
        Command::new("kill").args([sig, &pid]).status().unwrap()
    };
    // Node 2 stops: fenced, it leaves both ISRs; node 1 takes a write alone.
    signal(2, "-STOP");
    for topic in ["unclean", "clean"] {
        wait_for(&mut third, topic, "node 2 out of the ISR", &|l, isr| {
            l == 1 && isr == [1]
        });
    }
    let mut at_one = connect(nodes[0].port);
    write_until_taken(&mut at_one, "unclean", 1);
    write_until_taken(&mut at_one, "clean", 1);
    // Node 1 stops too, and node 2 comes back (the metadata quorum has a majority again): the
    // only in-sync replica is gone.
    signal(1, "-STOP");
    signal(2, "-CONT");
    wait_for(
        &mut third,
        "unclean",
        "node 2 elected uncleanly",
        &|l, isr| l == 2 && isr == [2],
    );
    // (A fenced last in-sync replica is not listed, as a three-node Kafka 4.4 answers.)
    let (leader, isr) = leader_and_isr(&mut third, "clean");
    assert_eq!(
        (leader, isr),
        (-1, vec![]),
        "no unclean election without the option"
    );
    signal(1, "-CONT");
    wait_for(
        &mut third,
        "clean",
        "node 1 leads again when it returns",
        &|l, _| l == 1,
    );
}
