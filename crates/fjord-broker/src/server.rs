//! The listener: accepts connections, frames requests, answers them in order.
//!
//! Each connection handles one request at a time, as Kafka does (a client may pipeline; the
//! responses go back in request order). Frames are size-checked before anything is allocated
//! for them; a bad frame closes only its own connection.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::frame::Frame;
use crate::handlers;

/// How long shutdown waits for connections to finish their current request.
const DRAIN: Duration = Duration::from_secs(10);
/// The least a controlled shutdown may wait for its leaderships to move (the broker session
/// bounds it otherwise).
const CONTROLLED_SHUTDOWN_MIN: Duration = Duration::from_secs(5);

/// Counts a connection in `fjord_connections` from accept until its task ends, however it
/// ends (closed, failed, or aborted at shutdown).
struct OpenConnection(Arc<Broker>);

impl OpenConnection {
    fn new(broker: Arc<Broker>) -> Self {
        broker
            .metrics
            .connections_active
            .fetch_add(1, Ordering::Relaxed);
        Self(broker)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0
            .metrics
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `listener` until `shutdown` completes, then drains connections and closes the
/// broker's logs (a clean shutdown).
pub async fn run(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let limit = Arc::new(Semaphore::new(broker.config.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut upkeep = crate::upkeep::start(&broker, &stop_rx);
    tokio::pin!(shutdown);
    // On the signal, connections are still served while the leaderships move away (a
    // controlled shutdown): clients are pointed at the new leaders before this broker goes.
    let (handed_over, mut handed_over_rx) = tokio::sync::oneshot::channel::<()>();
    let mut handed_over = Some(handed_over);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, max = broker.config.max_connections, "too many connections; closing the new one (raise max.connections)");
                    broker.metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                    continue;
                };
                broker.metrics.connections_total.fetch_add(1, Ordering::Relaxed);
                let open = OpenConnection::new(broker.clone());
                let broker = broker.clone();
                let stop = stop_rx.clone();
                connections.spawn(async move {
                    if let Err(e) = serve_connection(stream, peer, broker, stop).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    drop(open);
                    drop(permit);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown, if handed_over.is_some() => {
                let done = handed_over.take();
                let b = broker.clone();
                let timeout = Duration::from_millis(b.config.broker_session_timeout_ms).max(CONTROLLED_SHUTDOWN_MIN);
                tokio::spawn(async move {
                    b.controlled_shutdown(timeout).await;
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                });
            }
            _ = &mut handed_over_rx => break,
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still busy after {DRAIN:?}; closing them");
        connections.abort_all();
    }
    while upkeep.join_next().await.is_some() {}
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.close())
        .await
        .map_err(io::Error::other)?;
    tracing::info!("broker stopped cleanly");
    Ok(())
}

/// Responses one connection may owe at once: pipelined acks=all produce requests whose
/// fsyncs are still running. Past this the connection stops reading until one is sent.
const MAX_IN_FLIGHT: usize = 32;

/// A response on its way out, in request order.
enum Outgoing {
    Now(Frame),
    Later(
        std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Frame, handlers::CloseReason>> + Send>,
        >,
        &'static str,
        Instant,
    ),
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (read_half, mut write_half) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let max = broker.config.socket_request_max_bytes;
    let client_host = format!("/{}", peer.ip());
    // Requests are read and handled one at a time, in order (appends keep request order);
    // responses go out through the writer in the same order, the deferred ones once their
    // fsync is done.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Outgoing>(MAX_IN_FLIGHT);
    let writer_broker = broker.clone();
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let frame = match out {
                Outgoing::Now(b) => b,
                Outgoing::Later(finish, api, started) => {
                    let done = finish.await;
                    writer_broker
                        .metrics
                        .request(api, started.elapsed(), done.is_err());
                    match done {
                        Ok(b) => b,
                        Err(reason) => {
                            tracing::warn!(%peer, %reason, "closing connection");
                            return Ok(());
                        }
                    }
                }
            };
            write_half = frame.write(write_half).await?;
        }
        Ok::<(), io::Error>(())
    });
    let read = async {
        let mut rx = BytesMut::new();
        loop {
            let frame = tokio::select! {
                f = read_frame(&mut reader, &mut rx, max) => f,
                _ = stop.changed() => return Ok(()),
            };
            let frame = match frame {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(FrameError::TooLarge(size)) => {
                    tracing::warn!(%peer, size, max, "request larger than socket.request.max.bytes; closing the connection");
                    return Ok(());
                }
                Err(FrameError::Negative(size)) => {
                    tracing::warn!(%peer, size, "invalid request size; closing the connection");
                    return Ok(());
                }
                Err(FrameError::Io(e)) => return Err(e),
            };
            let api = handlers::api_name(if frame.len() >= 2 {
                i16::from_be_bytes([frame[0], frame[1]])
            } else {
                -1
            });
            let started = Instant::now();
            let handled = handlers::handle(&broker, frame, &client_host).await;
            let out = match handled {
                Ok(handlers::Reply::Now(b)) => {
                    broker.metrics.request(api, started.elapsed(), false);
                    Outgoing::Now(b)
                }
                Ok(handlers::Reply::None) => {
                    broker.metrics.request(api, started.elapsed(), false);
                    continue;
                }
                Ok(handlers::Reply::Later(finish)) => Outgoing::Later(finish, api, started),
                Err(reason) => {
                    broker.metrics.request(api, started.elapsed(), true);
                    tracing::warn!(%peer, %reason, "closing connection");
                    return Ok(());
                }
            };
            if tx.send(out).await.is_err() {
                return Ok(()); // the writer stopped: the peer is gone
            }
        }
    };
    let read_result: io::Result<()> = read.await;
    drop(tx);
    // Owed responses still go out (a clean close or shutdown drains them).
    let write_result = writer.await.unwrap_or_else(|e| Err(io::Error::other(e)));
    read_result.and(write_result)
}

#[derive(Debug)]
enum FrameError {
    TooLarge(usize),
    Negative(i32),
    Io(io::Error),
}

/// Reads one size-prefixed frame; `Ok(None)` at a clean end of stream.
async fn read_frame(
    reader: &mut (impl tokio::io::AsyncRead + Unpin),
    rx: &mut BytesMut,
    max: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(FrameError::Io(e)),
    }
    let size = i32::from_be_bytes(size);
    let Ok(len) = usize::try_from(size) else {
        return Err(FrameError::Negative(size));
    };
    if len > max {
        return Err(FrameError::TooLarge(len));
    }
    // Read into spare capacity (zero-filling a large produce request first cost a pass over
    // it) of the connection's buffer, whose memory comes back for the next request once this
    // one's bytes are dropped: no fresh pages (faults, kernel zeroing) per request.
    rx.clear();
    rx.reserve(len);
    let mut body = (&mut *reader).take(len as u64);
    while rx.len() < len {
        if body.read_buf(rx).await.map_err(FrameError::Io)? == 0 {
            return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
    let frame = rx.split().freeze();
    if len > REUSED_FRAME_BYTES {
        // A rare large request's memory is not kept for the connection's lifetime.
        *rx = BytesMut::new();
    }
    Ok(Some(frame))
}

/// Requests up to this size are read into memory the connection keeps and reuses (so an idle
/// connection holds up to this much until it closes).
const REUSED_FRAME_BYTES: usize = 2 << 20;

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn framed(len: usize) -> Vec<u8> {
        let mut f = (len as i32).to_be_bytes().to_vec();
        f.resize(4 + len, 7);
        f
    }

    #[tokio::test]
    async fn requests_are_read_into_the_memory_of_the_previous_one_unless_large() {
        let (mut client, server) = tokio::io::duplex(8 << 20);
        let mut reader = BufReader::new(server);
        let mut rx = BytesMut::new();
        let next = async |reader: &mut BufReader<_>, rx: &mut BytesMut| {
            read_frame(reader, rx, 16 << 20).await.unwrap().unwrap()
        };
        let big = 1 << 20;
        client.write_all(&framed(big)).await.unwrap();
        let first = next(&mut reader, &mut rx).await.as_ptr();
        // Queued or arriving later, the next request lands in the same memory.
        client.write_all(&framed(big)).await.unwrap();
        let second = next(&mut reader, &mut rx).await;
        assert_eq!((second.len(), second.as_ptr()), (big, first));
        drop(second);
        let writer = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            client.write_all(&framed(10)).await.unwrap();
            client.write_all(&framed(3 << 20)).await.unwrap();
            client.write_all(&framed(10)).await.unwrap();
            client
        });
        let small = next(&mut reader, &mut rx).await;
        assert_eq!((small.len(), small.as_ptr()), (10, first));
        drop(small);
        // A request over the reuse limit is not kept: the one after it is read elsewhere.
        let large = next(&mut reader, &mut rx).await;
        assert_eq!(large.len(), 3 << 20);
        let large_at = large.as_ptr();
        drop(large);
        let after = next(&mut reader, &mut rx).await;
        assert_ne!(after.as_ptr(), large_at);
        drop(writer.await.unwrap());
        assert!(matches!(
            read_frame(&mut reader, &mut rx, 16 << 20).await,
            Ok(None)
        ));
    }
}
