//! What the process tests share: typed requests over a plain socket, and Apache Kafka beside
//! Fjord.

#![allow(dead_code)] // each test file uses its own part

pub mod reference;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// A `fjord serve` child process on a free loopback port.
pub struct Fjord {
    pub child: Child,
    pub port: u16,
}

/// A loopback port nothing listens on, below the kernel's ephemeral range: a port from that
/// range (what binding port 0 gives) can be taken by some outgoing connection before the broker
/// binds it. Ports are handed out in turn from a start that differs between processes.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let low = if ephemeral_low > 12000 { 10000 } else { 1024 };
    let span = ephemeral_low.saturating_sub(low).max(1);
    let start = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    let _ = NEXT.compare_exchange(u32::MAX, start % span, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let port = (low + NEXT.fetch_add(1, Ordering::SeqCst) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Fjord {
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_fjord"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let f = Fjord { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "fjord did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        f
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// SIGTERM and the exit status and stderr.
    pub fn stop(mut self) -> (i32, String) {
        Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let out = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Reads one size-prefixed response; `None` if the connection closed.
pub fn read_response(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    s.read_exact(&mut size).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

/// Sends one request at `version`; the typed response, or `None` if the connection closed.
pub fn try_call<Req: Encodable, Resp: Decodable>(
    s: &mut TcpStream,
    api: ApiKey,
    version: i16,
    req: &Req,
) -> Option<Resp> {
    let mut header = RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    header.correlation_id = 99;
    header.client_id = Some(StrBytes::from_static_str("fjord-test"));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api.request_header_version(version))
        .unwrap();
    req.encode(&mut buf, version).unwrap();
    let mut framed = (buf.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&buf);
    s.write_all(&framed).ok()?;
    let body = read_response(s)?;
    let mut b = bytes::Bytes::from(body);
    let _ = ResponseHeader::decode(&mut b, api.response_header_version(version)).unwrap();
    Some(Resp::decode(&mut b, version).unwrap())
}

/// Sends one request at `version` and decodes the typed response.
pub fn call<Req: Encodable, Resp: Decodable>(
    s: &mut TcpStream,
    api: ApiKey,
    version: i16,
    req: &Req,
) -> Resp {
    try_call(s, api, version, req).expect("a response")
}

/// Creates topics of the given partition counts; returns the response (all succeeded).
pub fn create_topics(
    s: &mut TcpStream,
    topics: &[(&str, i32)],
) -> kafka_protocol::messages::CreateTopicsResponse {
    create_topics_with(s, topics, &[])
}

/// Creates topics of the given partition counts, each with `configs`.
pub fn create_topics_with(
    s: &mut TcpStream,
    topics: &[(&str, i32)],
    configs: &[(&str, &str)],
) -> kafka_protocol::messages::CreateTopicsResponse {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, TopicName};
    let mut create = CreateTopicsRequest::default();
    for &(t, n) in topics {
        let mut ct = CreatableTopic::default();
        ct.name = TopicName(StrBytes::from_string(t.to_string()));
        ct.num_partitions = n;
        ct.replication_factor = 1;
        ct.configs = configs
            .iter()
            .map(|(k, v)| {
                let mut c =
                    kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default(
                    );
                c.name = StrBytes::from_string(k.to_string());
                c.value = Some(StrBytes::from_string(v.to_string()));
                c
            })
            .collect();
        create.topics.push(ct);
    }
    create.timeout_ms = 10_000;
    let created: kafka_protocol::messages::CreateTopicsResponse =
        call(s, ApiKey::CreateTopics, 7, &create);
    assert!(created.topics.iter().all(|t| t.error_code == 0));
    created
}

/// Sends one batch to `topic`/`partition` with acks=all and returns the partition's answer.
pub fn produce(
    s: &mut TcpStream,
    topic: &str,
    partition: i32,
    batch: Vec<u8>,
) -> kafka_protocol::messages::produce_response::PartitionProduceResponse {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
    let mut pd = PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(bytes::Bytes::from(batch));
    let mut td = TopicProduceData::default();
    td.name = TopicName(StrBytes::from_string(topic.to_string()));
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 10_000;
    req.topic_data = vec![td];
    let resp: ProduceResponse = call(s, ApiKey::Produce, 11, &req);
    resp.responses[0].partition_responses[0].clone()
}
