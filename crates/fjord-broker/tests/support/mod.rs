//! An in-process broker for fault tests: the real server (`server::run`) on a loopback port,
//! over a simulated disk (`SimStorage`) that can fail any write or be cut to what a crash
//! would leave, and a typed Kafka-protocol connection to talk to it.

#![allow(dead_code)] // each test file uses its own part

use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use fjord_broker::{Broker, BrokerConfig};
use fjord_log::sim::SimStorage;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The data directory on the simulated disk.
pub const DATA_DIR: &str = "/fjord-data";

/// A broker serving on a loopback port, its disk, and the way to stop or crash it.
pub struct TestBroker {
    pub disk: SimStorage,
    pub broker: Arc<Broker>,
    pub addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

/// Settings for coordinator tests: few internal partitions, no rebalance delay.
pub fn config() -> BrokerConfig {
    BrokerConfig {
        data_dir: PathBuf::from(DATA_DIR),
        offsets_topic_partitions: 2,
        transaction_state_partitions: 2,
        group_initial_rebalance_delay_ms: 0,
        // Short classic sessions, so members lost in a crash leave quickly after it.
        group_min_session_timeout_ms: 100,
        ..BrokerConfig::default()
    }
}

impl TestBroker {
    /// Opens a broker on `disk` (replaying whatever it holds) and serves it.
    pub async fn start(disk: SimStorage, config: BrokerConfig) -> Self {
        Self::start_with(
            disk,
            config,
            Arc::new(fjord_broker::clock::SystemClock),
            None,
        )
        .await
    }

    /// The same with a given clock (a `ManualClock` drives timers by hand) and, with a seed,
    /// reproducible ids.
    pub async fn start_with(
        disk: SimStorage,
        config: BrokerConfig,
        clock: Arc<dyn fjord_broker::clock::Clock>,
        seed: Option<u64>,
    ) -> Self {
        let storage: Arc<dyn fjord_log::Storage> = Arc::new(disk.clone());
        let broker = tokio::task::spawn_blocking(move || {
            Broker::open_with(config, storage, "fault-test-cluster".into(), clock, seed)
        })
        .await
        .unwrap()
        .expect("the broker opens");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let b = broker.clone();
        let server = tokio::spawn(async move {
            let _ = fjord_broker::server::run(listener, b, async {
                let _ = stopped.await;
            })
            .await;
        });
        Self {
            disk,
            broker,
            addr,
            stop: Some(stop),
            server: Some(server),
        }
    }

    pub async fn connect(&self) -> Conn {
        Conn {
            stream: TcpStream::connect(self.addr).await.unwrap(),
            correlation: 0,
        }
    }

    /// Creates a topic through the broker's admin path.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let b = self.broker.clone();
        let name = name.to_string();
        tokio::task::spawn_blocking(move || {
            let topic = fjord_meta::NewTopic {
                name,
                partitions,
                replication_factor: 1,
                ..Default::default()
            };
            b.create_topic(topic, false)
        })
        .await
        .unwrap()
        .expect("topic created");
    }

    /// Crashes the broker: it stops serving at once, nothing is flushed or closed, and what
    /// survives is the disk's crash image (synced bytes, plus a seeded torn tail).
    pub fn crash(mut self, seed: u64) -> SimStorage {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        self.broker.flusher.stop();
        self.disk.crash_image(Some(seed))
    }

    /// Stops serving cleanly.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// The path of a partition's directory on the disk.
    pub fn partition_dir(topic: &str, partition: i32) -> PathBuf {
        PathBuf::from(DATA_DIR).join(format!("{topic}-{partition}"))
    }
}

/// One client connection speaking typed Kafka requests.
pub struct Conn {
    stream: TcpStream,
    correlation: i32,
}

impl Conn {
    pub fn from_stream(stream: TcpStream) -> Self {
        Self {
            stream,
            correlation: 0,
        }
    }

    /// Sends one request at `version`; the typed response, or `None` if the connection
    /// closed.
    pub async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> Option<Resp> {
        let correlation = self.send(api, version, req).await?;
        self.receive(api, version, correlation).await
    }

    /// Sends one request without waiting for its response (pipelining); its correlation id,
    /// or `None` if the connection closed.
    pub async fn send<Req: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> Option<i32> {
        self.correlation += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = api as i16;
        header.request_api_version = version;
        header.correlation_id = self.correlation;
        header.client_id = Some(StrBytes::from_static_str("fault-test"));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, api.request_header_version(version))
            .unwrap();
        req.encode(&mut buf, version).unwrap();
        let mut framed = (buf.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&buf);
        self.stream.write_all(&framed).await.ok()?;
        Some(self.correlation)
    }

    /// Reads the next response, which must answer request `correlation`; `None` if the
    /// connection closed.
    pub async fn receive<Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        correlation: i32,
    ) -> Option<Resp> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await.ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).await.ok()?;
        let mut b = bytes::Bytes::from(body);
        let h = ResponseHeader::decode(&mut b, api.response_header_version(version)).unwrap();
        assert_eq!(h.correlation_id, correlation, "responses in order");
        let r = Resp::decode(&mut b, version).unwrap();
        assert_eq!(b.remaining(), 0, "the whole response decoded");
        Some(r)
    }
}

/// A tiny seeded generator for test schedules.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
