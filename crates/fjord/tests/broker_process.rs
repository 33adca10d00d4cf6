#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! The `fjord serve` process at the protocol edge: bad input closes one connection and never
//! the broker; the ApiVersions fallback; limits; the data-directory lock; clean shutdown.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{ApiVersionsResponse, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use support::{Fjord, call, create_topics, free_port, produce, read_response};

fn request(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut header = RequestHeader::default();
    header.request_api_key = api_key;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("fjord-test"));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, 1).unwrap();
    buf.put_slice(body);
    let mut framed = (buf.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&buf);
    framed
}

/// True if the peer closed the connection (rather than answering).
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

fn api_versions_ok(f: &Fjord) {
    let mut s = f.connect();
    s.write_all(&request(18, 0, 1, &[])).unwrap();
    let body = read_response(&mut s).expect("ApiVersions answered");
    let mut buf = bytes::Bytes::from(body[4..].to_vec());
    let r = ApiVersionsResponse::decode(&mut buf, 0).unwrap();
    assert_eq!(r.error_code, 0);
}

#[test]
fn unsupported_api_versions_version_gets_kafkas_v0_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fjord::start(dir.path(), &[]);
    let mut s = f.connect();
    s.write_all(&request(18, 99, 42, &[1, 2, 3])).unwrap();
    let body = read_response(&mut s).expect("a response, not a closed connection");
    assert_eq!(i32::from_be_bytes(body[..4].try_into().unwrap()), 42);
    let mut buf = bytes::Bytes::from(body[4..].to_vec());
    let r = ApiVersionsResponse::decode(&mut buf, 0).unwrap();
    assert_eq!(r.error_code, 35, "UNSUPPORTED_VERSION");
    let produce = r.api_keys.iter().find(|k| k.api_key == 0).unwrap();
    assert_eq!((produce.min_version, produce.max_version), (0, 11));
    let versions = r.api_keys.iter().find(|k| k.api_key == 18).unwrap();
    assert_eq!(versions.max_version, 4);
    // The same connection goes on working at a supported version.
    s.write_all(&request(18, 2, 43, &[])).unwrap();
    assert!(read_response(&mut s).is_some());
    let (code, _) = f.stop();
    assert_eq!(code, 0);
}

#[test]
fn bad_input_closes_only_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fjord::start(dir.path(), &[]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("oversized frame", (200_000_000i32).to_be_bytes().to_vec()),
        ("negative size", (-5i32).to_be_bytes().to_vec()),
        (
            "short frame",
            [4i32.to_be_bytes().to_vec(), vec![0, 3, 0, 0]].concat(),
        ),
        ("unknown api key", request(999, 0, 1, &[])),
        ("unsupported produce version", request(0, 2, 1, &[0; 16])),
        ("unsupported metadata version", request(3, 50, 1, &[])),
        ("truncated metadata body", request(3, 9, 1, &[0x05])),
        (
            "garbage array count",
            request(3, 4, 1, &[0x7f, 0xff, 0xff, 0xff]),
        ),
        (
            "garbage produce",
            request(0, 9, 1, &[0xde, 0xad, 0xbe, 0xef, 0x00, 0x01]),
        ),
    ];
    for (name, bytes) in cases {
        let mut s = f.connect();
        s.write_all(&bytes).unwrap();
        assert!(closed(&mut s), "{name}: the connection was not closed");
        // Everyone else is still served.
        api_versions_ok(&f);
    }
    let (code, stderr) = f.stop();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("socket.request.max.bytes"),
        "the oversized frame is logged: {stderr}"
    );
    assert!(
        !stderr.contains(" ERROR "),
        "bad input is not a broker error: {stderr}"
    );
}

#[test]
fn too_many_connections_are_refused_and_others_served() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fjord.toml");
    std::fs::write(&config, "\"max.connections\" = 2\n").unwrap();
    let data = dir.path().join("data");
    let f = Fjord::start(&data, &["--config", config.to_str().unwrap()]);
    // The start-up probe's connection may still hold a slot for a moment: poll until two
    // connections are both served.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (a, _b) = loop {
        let mut a = f.connect();
        let mut b = f.connect();
        let served = [&mut a, &mut b]
            .into_iter()
            .all(|s| s.write_all(&request(18, 0, 1, &[])).is_ok() && read_response(s).is_some());
        if served {
            break (a, b);
        }
        assert!(
            Instant::now() < deadline,
            "two connections were never served"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut c = f.connect();
    assert!(closed(&mut c), "the third connection is closed");
    drop(a);
    // Once a slot frees, new connections are served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = f.connect();
        if s.write_all(&request(18, 0, 1, &[])).is_ok() && read_response(&mut s).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection served after a slot freed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, stderr) = f.stop();
    assert!(stderr.contains("too many connections"), "{stderr}");
}

#[test]
fn second_broker_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fjord::start(dir.path(), &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_fjord"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another fjord process"), "{err}");
    let (code, _) = f.stop();
    assert_eq!(code, 0);
}

#[test]
fn a_data_directory_belongs_to_one_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let f = Fjord::start(&data, &[]);
    let (code, stderr) = f.stop();
    assert_eq!(code, 0, "{stderr}");
    let props = std::fs::read_to_string(data.join("meta.properties")).unwrap();
    assert!(props.contains("node.id=1"), "{props}");
    // The directory's id (KIP-853's directory.id) is made with it and kept.
    let directory_id = props
        .lines()
        .find_map(|l| l.strip_prefix("directory.id="))
        .unwrap_or_else(|| panic!("no directory.id in {props}"))
        .to_string();
    assert_eq!(directory_id.len(), 22, "{props}");
    // The same directory under another node id is refused with what to do.
    let config = dir.path().join("node2.toml");
    std::fs::write(&config, "\"node.id\" = 2\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fjord"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--config", config.to_str().unwrap()])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("belongs to node.id 1") && err.contains("start it with node.id 1"),
        "{err}"
    );
    // A directory from before node.id was kept is claimed by the node that opens it.
    std::fs::write(
        data.join("meta.properties"),
        props.replace("node.id=1\n", ""),
    )
    .unwrap();
    let f = Fjord::start(&data, &[]);
    let (code, _) = f.stop();
    assert_eq!(code, 0);
    let props = std::fs::read_to_string(data.join("meta.properties")).unwrap();
    assert!(props.contains("node.id=1"), "{props}");
    assert!(
        props.contains(&format!("directory.id={directory_id}\n")),
        "{props}"
    );
}

#[test]
fn bad_flags_and_config_say_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fjord"))
        .args(["serve", "--listen", "nonsense"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOST:PORT"));
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "\"num.partition\" = 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fjord"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown setting \"num.partition\""), "{err}");
    let help = Command::new(env!("CARGO_BIN_EXE_fjord"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("Examples:") && help.contains("FJORD_DATA_DIR"),
        "{help}"
    );
}

#[test]
fn ready_quickly_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let f = Fjord::start(dir.path(), &[]);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "ready in {:?}",
        started.elapsed()
    );
    api_versions_ok(&f);
    let (code, stderr) = f.stop();
    assert_eq!(code, 0);
    assert!(stderr.contains("broker stopped cleanly"), "{stderr}");
}

#[test]
fn offset_for_leader_epoch_and_paged_topic_descriptions() {
    use kafka_protocol::messages::describe_topic_partitions_request::TopicRequest;
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
        OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName,
    };

    let dir = tempfile::tempdir().unwrap();
    let f = Fjord::start(dir.path(), &[]);
    let mut s = f.connect();
    let name = |n: &str| TopicName(StrBytes::from_string(n.to_string()));
    create_topics(&mut s, &[("a", 3), ("b", 2)]);

    // Pages of two partitions: a0 a1 | a2 b0 | b1.
    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..5 {
        let mut req = DescribeTopicPartitionsRequest::default();
        req.topics = vec![
            TopicRequest::default().with_name(name("b")),
            TopicRequest::default().with_name(name("a")),
        ];
        req.response_partition_limit = 2;
        req.cursor = cursor.take();
        let r: DescribeTopicPartitionsResponse =
            call(&mut s, ApiKey::DescribeTopicPartitions, 0, &req);
        for t in &r.topics {
            for p in &t.partitions {
                seen.push(format!(
                    "{}{}",
                    t.name.as_ref().unwrap().0,
                    p.partition_index
                ));
            }
        }
        match r.next_cursor {
            Some(c) => {
                let mut next =
                    kafka_protocol::messages::describe_topic_partitions_request::Cursor::default();
                next.topic_name = c.topic_name;
                next.partition_index = c.partition_index;
                cursor = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(seen, ["a0", "a1", "a2", "b0", "b1"]);

    let mut req = OffsetForLeaderEpochRequest::default();
    req.replica_id = kafka_protocol::messages::BrokerId(-1);
    let mut t = OffsetForLeaderTopic::default();
    t.topic = name("a");
    for (partition, epoch, current) in [(0, 0, 0), (0, 5, -1), (1, 0, 3), (9, 0, -1)] {
        let mut p = OffsetForLeaderPartition::default();
        p.partition = partition;
        p.leader_epoch = epoch;
        p.current_leader_epoch = current;
        t.partitions.push(p);
    }
    req.topics.push(t);
    let r: OffsetForLeaderEpochResponse = call(&mut s, ApiKey::OffsetForLeaderEpoch, 4, &req);
    let p = &r.topics[0].partitions;
    assert_eq!(
        (p[0].error_code, p[0].leader_epoch, p[0].end_offset),
        (0, 0, 0)
    );
    assert_eq!(
        (p[1].error_code, p[1].leader_epoch, p[1].end_offset),
        (0, -1, -1),
        "unknown later epoch"
    );
    assert_eq!(
        p[2].error_code, 75,
        "UNKNOWN_LEADER_EPOCH for a newer current epoch"
    );
    assert_eq!(p[3].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    let (code, _) = f.stop();
    assert_eq!(code, 0);
}

#[test]
fn list_offsets_special_timestamps_at_every_version() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{
        ApiKey, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
        TopicName,
    };

    let dir = tempfile::tempdir().unwrap();
    let f = Fjord::start(dir.path(), &[]);
    let mut s = f.connect();
    // Auto-create through Metadata at its newest version.
    let mut md = MetadataRequest::default();
    md.topics = Some(vec![
        MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str("lo")))),
    ]);
    md.allow_auto_topic_creation = true;
    let r: MetadataResponse = call(&mut s, ApiKey::Metadata, 13, &md);
    assert_eq!(r.error_code, 0);
    assert_eq!(r.topics[0].error_code, 0);
    assert_eq!(r.topics[0].partitions.len(), 1);
    for version in 1..=9i16 {
        let mut req = ListOffsetsRequest::default();
        req.replica_id = kafka_protocol::messages::BrokerId(-1);
        let mut t = ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_static_str("lo"));
        let stamps: Vec<i64> = match version {
            1..=6 => vec![-1, -2],
            7 => vec![-1, -2, -3],
            8 => vec![-1, -2, -3, -4],
            _ => vec![-1, -2, -3, -4, -5],
        };
        for ts in &stamps {
            let mut p = ListOffsetsPartition::default();
            p.partition_index = 0;
            p.timestamp = *ts;
            p.current_leader_epoch = -1;
            t.partitions.push(p);
        }
        req.topics.push(t);
        let r: ListOffsetsResponse = call(&mut s, ApiKey::ListOffsets, version, &req);
        let got: Vec<(i16, i64)> = r.topics[0]
            .partitions
            .iter()
            .map(|p| (p.error_code, p.offset))
            .collect();
        // Empty log: latest, earliest and earliest-local are 0; max timestamp and latest
        // tiered have no answer (-1).
        for (ts, (code, offset)) in stamps.iter().zip(&got) {
            assert_eq!(*code, 0, "v{version} ts {ts}");
            let expected = if *ts == -3 || *ts == -5 { -1 } else { 0 };
            assert_eq!(*offset, expected, "v{version} ts {ts}");
        }
    }
    let (code, _) = f.stop();
    assert_eq!(code, 0);
}

fn produce_batch(
    s: &mut TcpStream,
    pid: i64,
    epoch: i16,
    seq: i32,
    records: usize,
) -> kafka_protocol::messages::produce_response::PartitionProduceResponse {
    let mut b = fjord_record::BatchBuilder::new(fjord_record::Compression::None);
    b.producer_id = pid;
    b.producer_epoch = epoch;
    b.base_sequence = seq;
    for i in 0..records {
        b.push(1_000, None, Some(format!("s{seq}-{i}").as_bytes()));
    }
    produce(s, "idem", 0, b.build().unwrap())
}

#[test]
fn idempotent_retries_are_recognised_across_a_sigkill() {
    use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse};
    let dir = tempfile::tempdir().unwrap();
    let f = Fjord::start(dir.path(), &[]);
    let mut s = f.connect();
    create_topics(&mut s, &[("idem", 1)]);
    let mut init = InitProducerIdRequest::default();
    init.transactional_id = None;
    init.transaction_timeout_ms = 60_000;
    init.producer_id = kafka_protocol::messages::ProducerId(-1);
    init.producer_epoch = -1;
    let ids: InitProducerIdResponse = call(&mut s, ApiKey::InitProducerId, 4, &init);
    assert_eq!(ids.error_code, 0);
    let (pid, epoch) = (ids.producer_id.0, ids.producer_epoch);
    // Another producer gets another id.
    let other: InitProducerIdResponse = call(&mut s, ApiKey::InitProducerId, 4, &init);
    assert_ne!(other.producer_id.0, pid);

    let first = produce_batch(&mut s, pid, epoch, 0, 3);
    assert_eq!((first.error_code, first.base_offset), (0, 0));
    let retry = produce_batch(&mut s, pid, epoch, 0, 3);
    assert_eq!(
        (retry.error_code, retry.base_offset),
        (0, 0),
        "a retry is answered, not written"
    );
    let gap = produce_batch(&mut s, pid, epoch, 5, 1);
    assert_eq!(gap.error_code, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER");
    let next = produce_batch(&mut s, pid, epoch, 3, 2);
    assert_eq!((next.error_code, next.base_offset), (0, 3));

    // SIGKILL: the producer state comes back from the log.
    let mut f = f;
    f.child.kill().unwrap();
    f.child.wait().unwrap();
    let f = Fjord::start(dir.path(), &[]);
    let mut s = f.connect();
    let retry = produce_batch(&mut s, pid, epoch, 3, 2);
    assert_eq!(
        (retry.error_code, retry.base_offset),
        (0, 3),
        "recognised after the restart"
    );
    let next = produce_batch(&mut s, pid, epoch, 5, 1);
    assert_eq!((next.error_code, next.base_offset), (0, 5));
    // A new producer id never repeats one handed out before the crash.
    let after: InitProducerIdResponse = call(&mut s, ApiKey::InitProducerId, 4, &init);
    assert!(after.producer_id.0 > other.producer_id.0);
    let (code, _) = f.stop();
    assert_eq!(code, 0);
}

/// Appends one batch of `records` plain records to `topic`/`partition`.
fn produce_plain(s: &mut TcpStream, topic: &str, partition: i32, records: usize) {
    let mut b = fjord_record::BatchBuilder::new(fjord_record::Compression::None);
    for i in 0..records {
        b.push(1_000, None, Some(format!("r{i}").as_bytes()));
    }
    assert_eq!(
        produce(s, topic, partition, b.build().unwrap()).error_code,
        0
    );
}

#[test]
fn fetch_sessions_answer_only_what_changed() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
    use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, TopicName};
    let dir = tempfile::tempdir().unwrap();
    let f = Fjord::start(dir.path(), &[]);
    let mut s = f.connect();
    let created = create_topics(&mut s, &[("sess", 3), ("rot", 2)]);
    let sess_id = created.topics[0].topic_id;
    produce_plain(&mut s, "sess", 0, 2);

    let topic = |name: &'static str, parts: &[(i32, i64)]| {
        let mut t = FetchTopic::default();
        t.topic = TopicName(StrBytes::from_static_str(name));
        t.topic_id = sess_id;
        for &(p, offset) in parts {
            let mut fp = FetchPartition::default();
            fp.partition = p;
            fp.fetch_offset = offset;
            fp.partition_max_bytes = 1 << 20;
            t.partitions.push(fp);
        }
        t
    };
    let fetch = |s: &mut TcpStream, version: i16, id: i32, epoch: i32, topics, forgotten, wait| {
        let mut req = FetchRequest::default();
        req.replica_id = kafka_protocol::messages::BrokerId(-1);
        req.max_wait_ms = wait;
        req.min_bytes = 1;
        req.max_bytes = 50 << 20;
        req.session_id = id;
        req.session_epoch = epoch;
        req.topics = topics;
        req.forgotten_topics_data = forgotten;
        let r: FetchResponse = call(s, ApiKey::Fetch, version, &req);
        r
    };
    // What a response carries: (partition, record bytes) in order.
    let carried = |r: &FetchResponse| -> Vec<(i32, usize)> {
        r.responses
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| (p.partition_index, p.records.as_ref().map_or(0, |b| b.len())))
            .collect()
    };

    // A full fetch (epoch 0) creates a session and answers every partition.
    let all = vec![topic("sess", &[(0, 0), (1, 0), (2, 0)])];
    let r = fetch(&mut s, 12, 0, 0, all, vec![], 0);
    assert_eq!(r.error_code, 0);
    let id = r.session_id;
    assert!(id > 0, "a session was created");
    let c = carried(&r);
    assert_eq!(c.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(c[0].1 > 0 && c[1].1 == 0 && c[2].1 == 0);

    // Incremental, partition 0 moved past its data: nothing changed, nothing carried.
    let r = fetch(&mut s, 12, id, 1, vec![topic("sess", &[(0, 2)])], vec![], 0);
    assert_eq!((r.error_code, r.session_id), (0, id));
    assert_eq!(carried(&r), []);

    // New data on partition 2 wakes the long poll; only partition 2 is carried.
    let mut writer = f.connect();
    let producer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        produce_plain(&mut writer, "sess", 2, 1);
        writer
    });
    let started = Instant::now();
    let r = fetch(&mut s, 12, id, 2, vec![], vec![], 5_000);
    let mut writer = producer.join().unwrap();
    // Sent at once and answered only after the produce 300 ms later, with its data, well
    // before max.wait.ms: the fetch waited in the broker and the new data woke it.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "answered after {waited:?}, before the data was written"
    );
    assert!(waited < Duration::from_millis(4_000), "woken by data");
    let c = carried(&r);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].0, 2);
    assert!(c[0].1 > 0);
    assert_eq!(r.responses[0].partitions[0].high_watermark, 1);

    // A repeated epoch (a duplicate request) is refused.
    let r = fetch(&mut s, 12, id, 2, vec![], vec![], 0);
    assert_eq!(r.error_code, 71, "INVALID_FETCH_SESSION_EPOCH");
    assert_eq!(carried(&r), []);

    // Forget partition 1, then write to it: the session no longer reports it.
    produce_plain(&mut writer, "sess", 1, 1);
    let forget = {
        let mut t = ForgottenTopic::default();
        t.topic = TopicName(StrBytes::from_static_str("sess"));
        t.partitions = vec![1];
        vec![t]
    };
    let r = fetch(&mut s, 12, id, 3, vec![topic("sess", &[(2, 1)])], forget, 0);
    assert_eq!((r.error_code, carried(&r)), (0, vec![]));

    // A session created by name cannot go on by topic id.
    let r = fetch(&mut s, 13, id, 4, vec![], vec![], 0);
    assert_eq!(r.error_code, 106, "FETCH_SESSION_TOPIC_ID_ERROR");
    // Unknown session.
    let r = fetch(&mut s, 12, id ^ 1, 4, vec![], vec![], 0);
    assert_eq!(r.error_code, 70, "FETCH_SESSION_ID_NOT_FOUND");
    // The final epoch closes the session.
    let r = fetch(
        &mut s,
        12,
        id,
        -1,
        vec![topic("sess", &[(0, 0)])],
        vec![],
        0,
    );
    assert_eq!((r.error_code, r.session_id), (0, 0));
    let r = fetch(&mut s, 12, id, 4, vec![], vec![], 0);
    assert_eq!(r.error_code, 70, "closed");

    // Sessions by topic id (v13): the same, with topics named by id.
    let r = fetch(
        &mut s,
        13,
        0,
        0,
        vec![topic("", &[(0, 0), (1, 0)])],
        vec![],
        0,
    );
    let id13 = r.session_id;
    assert!(id13 > 0);
    assert_eq!(r.responses[0].topic_id, sess_id);
    produce_plain(&mut writer, "sess", 1, 1);
    let r = fetch(&mut s, 13, id13, 1, vec![topic("", &[(0, 2)])], vec![], 0);
    assert_eq!(r.responses.len(), 1);
    assert_eq!(r.responses[0].topic_id, sess_id);
    assert_eq!(carried(&r).iter().map(|p| p.0).collect::<Vec<_>>(), [1]);

    // Partitions that returned data in an incremental fetch move to the back of the session,
    // so a small response limit serves each partition in turn: rot-0 holds three batches,
    // rot-1 one.
    for _ in 0..3 {
        produce_plain(&mut writer, "rot", 0, 1);
    }
    produce_plain(&mut writer, "rot", 1, 1);
    let rot = |parts: &[(i32, i64)]| {
        let mut t = topic("rot", parts);
        t.topic_id = created.topics[1].topic_id;
        t
    };
    let mut req = FetchRequest::default();
    req.max_bytes = 1; // one batch per response (KIP-74)
    req.session_epoch = 0;
    req.topics = vec![rot(&[(0, 0), (1, 0)])];
    let r: FetchResponse = call(&mut s, ApiKey::Fetch, 12, &req);
    let c = carried(&r);
    assert!(c[0].1 > 0 && c[1].1 == 0, "rot-0 first: {c:?}");
    req.session_id = r.session_id;
    req.session_epoch = 1;
    req.topics = vec![rot(&[(0, 1)])];
    let r: FetchResponse = call(&mut s, ApiKey::Fetch, 12, &req);
    let c = carried(&r);
    assert_eq!(c.len(), 1, "still rot-0, in session order: {c:?}");
    assert!(c[0].0 == 0 && c[0].1 > 0);
    req.session_epoch = 2;
    req.topics = vec![rot(&[(0, 2)])];
    let r: FetchResponse = call(&mut s, ApiKey::Fetch, 12, &req);
    let c = carried(&r);
    assert_eq!(c[0].0, 1, "rot-1 now comes first: {c:?}");
    assert!(c[0].1 > 0);

    let (code, stderr) = f.stop();
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_clean_stop_leaves_the_marker_and_a_crash_after_it_still_keeps_every_ack() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, TopicName};
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join(".clean-shutdown");
    let end_offset = |s: &mut TcpStream| {
        let mut fp = FetchPartition::default();
        fp.partition_max_bytes = 1 << 20;
        let mut t = FetchTopic::default();
        t.topic = TopicName(StrBytes::from_static_str("marked"));
        t.partitions = vec![fp];
        let mut req = FetchRequest::default();
        req.topics = vec![t];
        let r: FetchResponse = call(s, ApiKey::Fetch, 12, &req);
        r.responses[0].partitions[0].high_watermark
    };
    let f = Fjord::start(dir.path(), &[]);
    let mut s = f.connect();
    create_topics(&mut s, &[("marked", 1)]);
    for _ in 0..5 {
        produce_plain(&mut s, "marked", 0, 10);
    }
    assert!(!marker.exists(), "no marker while running");
    let (code, stderr) = f.stop();
    assert_eq!(code, 0, "{stderr}");
    assert!(marker.exists(), "a clean stop leaves the marker");

    // Started clean (partitions trust their flags and are not rewritten), then killed.
    let mut f = Fjord::start(dir.path(), &[]);
    let mut s = f.connect();
    assert!(!marker.exists(), "taken at start-up");
    assert_eq!(end_offset(&mut s), 50);
    for _ in 0..7 {
        produce_plain(&mut s, "marked", 0, 10);
    }
    f.child.kill().unwrap();
    f.child.wait().unwrap();
    assert!(!marker.exists());

    // No marker: every partition recovers, and every acknowledged record is there.
    let f = Fjord::start(dir.path(), &[]);
    let mut s = f.connect();
    assert_eq!(end_offset(&mut s), 120);
    produce_plain(&mut s, "marked", 0, 1);
    assert_eq!(end_offset(&mut s), 121);
    let (code, stderr) = f.stop();
    assert_eq!(code, 0, "{stderr}");
}

/// Produce v3+ carries one record batch per partition, and a transactional request the batches
/// of one producer (Kafka's `ProduceRequest.validateRecords` and ReplicaManager): otherwise
/// what a batch is checked for — its producer, its transaction — would not hold for the rest.
#[test]
fn a_produce_request_holds_one_batch_per_partition_of_one_producer() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
    const INVALID_RECORD: i16 = 87;
    const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    let dir = tempfile::tempdir().unwrap();
    let f = Fjord::start(dir.path(), &[]);
    let mut s = f.connect();
    create_topics(&mut s, &[("one", 2)]);
    let batch = |pid: i64, txn: bool| {
        let mut b = fjord_record::BatchBuilder::new(fjord_record::Compression::None);
        b.producer_id = pid;
        b.producer_epoch = if pid < 0 { -1 } else { 0 };
        b.base_sequence = if pid < 0 { -1 } else { 0 };
        b.transactional = txn;
        b.push(1, None, Some(b"v"));
        b.build().unwrap()
    };
    let mut two = batch(-1, false);
    two.extend(batch(-1, false));
    let refused = produce(&mut s, "one", 0, two);
    assert_eq!(refused.error_code, INVALID_RECORD);
    assert_eq!(produce(&mut s, "one", 0, batch(-1, false)).error_code, 0);

    // A transactional request with two producers: the second producer's partition is refused.
    let mut req = ProduceRequest::default();
    req.transactional_id = Some(kafka_protocol::messages::TransactionalId(
        StrBytes::from_static_str("tx"),
    ));
    req.acks = -1;
    req.timeout_ms = 10_000;
    let mut td = TopicProduceData::default();
    td.name = TopicName(StrBytes::from_static_str("one"));
    td.partition_data = [(0, 7), (1, 8)]
        .into_iter()
        .map(|(index, pid)| {
            let mut pd = PartitionProduceData::default();
            pd.index = index;
            pd.records = Some(bytes::Bytes::from(batch(pid, true)));
            pd
        })
        .collect();
    req.topic_data = vec![td];
    let resp: ProduceResponse = call(&mut s, ApiKey::Produce, 11, &req);
    let codes: Vec<i16> = resp.responses[0]
        .partition_responses
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes[1], INVALID_PRODUCER_ID_MAPPING, "{codes:?}");
    assert_ne!(
        codes[0], 0,
        "no transaction was begun for producer 7 either: {codes:?}"
    );
}
