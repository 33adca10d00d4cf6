//! A small async Kafka client built on `kafka-protocol`.
//!
//! One connection, one request in flight at a time, versions negotiated with ApiVersions: what
//! the CLI needs, and the seed of the broker-to-broker client. It must not depend on the broker.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, Request, StrBytes};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

pub use kafka_protocol;

mod cluster;
mod ops;
pub use cluster::Cluster;
pub use ops::{
    ConfigEntry, ElectionOutcome, Fetched, FetchedRecord, GroupDescription, GroupListing,
    GroupMember, PartitionInfo, ProducerDescription, Reassigning, TopicInfo,
    TransactionDescription, TransactionListing,
};

/// What a client call can fail with.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error(
        "cannot connect to {addr} ({cause}); is a broker running there? (set --bootstrap or FJORD_BOOTSTRAP)"
    )]
    Connect { addr: String, cause: std::io::Error },
    #[error("connection to {addr} failed: {cause}")]
    Io { addr: String, cause: std::io::Error },
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("the broker does not support {api:?} (versions {min}-{max} understood here)")]
    Unsupported { api: ApiKey, min: i16, max: i16 },
    #[error("protocol error talking to {addr}: {reason}")]
    Protocol { addr: String, reason: String },
    #[error("{name}: {message}")]
    Kafka {
        code: i16,
        name: String,
        message: String,
    },
}

impl ClientError {
    /// An error for a Kafka error code (and the broker's message, if any).
    pub fn kafka(code: i16, message: Option<&str>) -> Self {
        // Kafka's own spelling: UNKNOWN_TOPIC_OR_PARTITION, not UnknownTopicOrPartition.
        let name = ResponseError::try_from_code(code).map_or_else(
            || "NONE".to_string(),
            |e| {
                let camel = format!("{e:?}");
                let mut out = String::new();
                for (i, c) in camel.chars().enumerate() {
                    if c.is_uppercase() && i > 0 {
                        out.push('_');
                    }
                    out.push(c.to_ascii_uppercase());
                }
                out
            },
        );
        let text = ResponseError::try_from_code(code)
            .map(|e| e.to_string())
            .unwrap_or_default();
        Self::Kafka {
            code,
            name,
            message: message
                .filter(|m| !m.is_empty())
                .map_or(text, str::to_string),
        }
    }
}

/// Turns a Kafka error code into `Ok(())` or the error.
pub fn check(code: i16, message: Option<&StrBytes>) -> Result<(), ClientError> {
    if code == 0 {
        Ok(())
    } else {
        Err(ClientError::kafka(code, message.map(|m| &**m)))
    }
}

struct Conn {
    stream: TcpStream,
    next_correlation: i32,
    /// Responses are read into this buffer; its memory is taken back for the next response
    /// once the caller has dropped the last one (no fresh allocation, zeroing or page faults
    /// per large fetch).
    rx: BytesMut,
}

/// A connection to one broker.
pub struct Client {
    addr: String,
    client_id: String,
    timeout: Duration,
    conn: Mutex<Conn>,
    versions: HashMap<i16, (i16, i16)>,
    /// An exchange failed or was abandoned midway: the stream may still carry its answer, so
    /// the connection takes no more requests.
    broken: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `addr` (HOST:PORT) and learns the broker's API versions.
    pub async fn connect(
        addr: &str,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout {
                addr: addr.to_string(),
                timeout,
            })?
            .map_err(|cause| ClientError::Connect {
                addr: addr.to_string(),
                cause,
            })?;
        stream.set_nodelay(true).map_err(|cause| ClientError::Io {
            addr: addr.to_string(),
            cause,
        })?;
        let mut client = Self {
            addr: addr.to_string(),
            client_id: client_id.to_string(),
            timeout,
            conn: Mutex::new(Conn {
                rx: BytesMut::new(),
                stream,
                next_correlation: 1,
            }),
            versions: HashMap::new(),
            broken: std::sync::atomic::AtomicBool::new(false),
        };
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = StrBytes::from_static_str("fjord");
        req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        let resp: ApiVersionsResponse = client.send_at(&req, ApiKey::ApiVersions, 3).await?;
        check(resp.error_code, None)?;
        client.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(client)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether an earlier request failed or was abandoned midway: the connection takes no
    /// more requests (connect again).
    pub fn is_broken(&self) -> bool {
        self.broken.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The highest version both sides speak.
    pub fn version_for<R: Message>(&self, api: ApiKey) -> Result<i16, ClientError> {
        let ours = R::VERSIONS;
        let unsupported = || ClientError::Unsupported {
            api,
            min: ours.min,
            max: ours.max,
        };
        let &(min, max) = self.versions.get(&(api as i16)).ok_or_else(unsupported)?;
        let version = max.min(ours.max);
        if version < min.max(ours.min) {
            return Err(unsupported());
        }
        Ok(version)
    }

    /// Sends a request at the negotiated version and returns its response.
    pub async fn send<R>(&self, request: &R) -> Result<R::Response, ClientError>
    where
        R: Request,
    {
        let api = ApiKey::try_from(R::KEY).map_err(|()| self.protocol("unknown API key".into()))?;
        let version = self.version_for::<R>(api)?;
        self.send_at(request, api, version).await
    }

    /// The version a request will be sent at (for callers that fill version-specific fields).
    pub fn version<R: Request>(&self) -> Result<i16, ClientError> {
        let api = ApiKey::try_from(R::KEY).map_err(|()| self.protocol("unknown API key".into()))?;
        self.version_for::<R>(api)
    }

    fn protocol(&self, reason: String) -> ClientError {
        ClientError::Protocol {
            addr: self.addr.clone(),
            reason,
        }
    }

    /// Sends a request that gets no response (Produce with acks=0).
    pub async fn send_oneway<R: Request>(&self, request: &R) -> Result<(), ClientError> {
        let api = ApiKey::try_from(R::KEY).map_err(|()| self.protocol("unknown API key".into()))?;
        let version = self.version_for::<R>(api)?;
        let mut conn = self.conn.lock().await;
        let buf = self.frame(&mut conn, request, api, version)?.0;
        conn.stream
            .write_all(&buf)
            .await
            .map_err(|cause| ClientError::Io {
                addr: self.addr.clone(),
                cause,
            })
    }

    fn frame<Req: Encodable>(
        &self,
        conn: &mut Conn,
        request: &Req,
        api: ApiKey,
        version: i16,
    ) -> Result<(BytesMut, i32), ClientError> {
        let correlation = conn.next_correlation;
        conn.next_correlation = conn.next_correlation.wrapping_add(1);
        let mut header = RequestHeader::default();
        header.request_api_key = api as i16;
        header.request_api_version = version;
        header.correlation_id = correlation;
        header.client_id = Some(StrBytes::from_string(self.client_id.clone()));
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0);
        header
            .encode(&mut buf, api.request_header_version(version))
            .map_err(|e| self.protocol(e.to_string()))?;
        request
            .encode(&mut buf, version)
            .map_err(|e| self.protocol(e.to_string()))?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        Ok((buf, correlation))
    }

    async fn send_at<Req: Encodable, Resp: Decodable>(
        &self,
        request: &Req,
        api: ApiKey,
        version: i16,
    ) -> Result<Resp, ClientError> {
        use std::sync::atomic::Ordering;
        let mut conn = self.conn.lock().await;
        if self.is_broken() {
            return Err(ClientError::Io {
                addr: self.addr.clone(),
                cause: std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "an earlier request on this connection failed; connect again",
                ),
            });
        }
        let (buf, correlation) = self.frame(&mut conn, request, api, version)?;
        // Broken until the whole answer is read: a failure or a cancelled call leaves it so.
        self.broken.store(true, Ordering::Release);
        let io = |cause| ClientError::Io {
            addr: self.addr.clone(),
            cause,
        };
        let exchange = async {
            conn.stream.write_all(&buf).await.map_err(io)?;
            let mut size = [0u8; 4];
            conn.stream.read_exact(&mut size).await.map_err(io)?;
            let size = i32::from_be_bytes(size);
            if !(4..=1 << 30).contains(&size) {
                return Err(self.protocol(format!("response size {size}")));
            }
            let size = size as usize;
            let Conn { stream, rx, .. } = &mut *conn;
            rx.clear();
            rx.reserve(size);
            while rx.len() < size {
                let want = size - rx.len();
                let n = (&mut *stream)
                    .take(want as u64)
                    .read_buf(rx)
                    .await
                    .map_err(io)?;
                if n == 0 {
                    return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
                }
            }
            Ok(rx.split().freeze())
        };
        let mut body = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                addr: self.addr.clone(),
                timeout: self.timeout,
            })??;
        self.broken.store(false, Ordering::Release);
        // ApiVersions answers in header v0 whatever the version.
        let header_version = if api == ApiKey::ApiVersions {
            0
        } else {
            api.response_header_version(version)
        };
        let header = ResponseHeader::decode(&mut body, header_version)
            .map_err(|e| self.protocol(e.to_string()))?;
        if header.correlation_id != correlation {
            return Err(self.protocol(format!(
                "correlation id {} for request {correlation}",
                header.correlation_id
            )));
        }
        if api == ApiKey::ApiVersions
            && body.remaining() >= 2
            && i16::from_be_bytes([body[0], body[1]]) == 35
        {
            // UNSUPPORTED_VERSION: the body is v0-encoded.
            return Resp::decode(&mut body, 0).map_err(|e| self.protocol(e.to_string()));
        }
        Resp::decode(&mut body, version).map_err(|e| self.protocol(e.to_string()))
    }
}
