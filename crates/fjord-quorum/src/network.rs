//! Raft messages between controller listeners: one JSON message per frame (a 4-byte big-endian
//! length, then the bytes) over TCP, a request and its response in turn on each connection.
//!
//! Besides openraft's RPCs (append, vote, pre-vote, full snapshot, leadership transfer) a node forwards metadata
//! changes to the leader here (`Write`). Frames over [`MAX_FRAME_BYTES`] and bytes that do not
//! decode close the connection; the listener goes on serving everyone else.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::time::Duration;

use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{Raft, RaftNetworkFactory, RaftNetworkV2};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{Applied, Change, StateMachine, TypeConfig};

/// The largest frame either side accepts (a snapshot of a large cluster's metadata).
pub const MAX_FRAME_BYTES: u32 = 256 * 1024 * 1024;

/// How long a node waits to connect to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    /// A whole snapshot; its data is the JSON of the state's records.
    Snapshot {
        vote: VoteOf<TypeConfig>,
        meta: SnapshotMetaOf<TypeConfig>,
        data: String,
    },
    /// The leader hands its leadership over (Raft's leadership transfer): the named node
    /// campaigns at once, the others stop waiting for the old leader's lease.
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    /// A metadata change for the leader to write.
    Write(Change),
    /// A broker is alive (Kafka's BrokerHeartbeat), for the leader's session table.
    Heartbeat {
        broker: i32,
    },
    /// The quorum as the leader sees it (Kafka's DescribeQuorum).
    Describe,
    /// The first message on a connection: who sends, and its data directory's id.
    Hello {
        node: u64,
        dir: String,
    },
    /// A broker-only node asks to replicate the log as an observer (an openraft learner) at
    /// its controller listener `address`; `empty`: its log is empty (new, or a new disk).
    Join {
        node: u64,
        address: String,
        #[serde(default)]
        empty: bool,
    },
    /// Makes observer `node` a voter (Kafka's AddRaftVoter), waiting at most `timeout_ms` for
    /// the change to commit.
    AddVoter {
        node: u64,
        dir: String,
        address: String,
        timeout_ms: u64,
    },
    /// Makes voter `node` an observer (Kafka's RemoveRaftVoter).
    RemoveVoter {
        node: u64,
        dir: String,
        timeout_ms: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    Written(Applied),
    /// The leader noted the heartbeat.
    HeardYou,
    /// The leader's view of the quorum.
    Described(crate::quorum::QuorumView),
    /// The leader added the observer and has it caught up.
    Joined,
    /// Who answers, and its data directory's id.
    Hello {
        node: u64,
        dir: String,
    },
    /// The voters changed as asked, and the change is committed.
    VotersChanged,
    /// The voter change was refused: why, and what to do.
    VoterRefused(crate::VoterError),
    /// The receiver does not lead (any more): the leader it knows of, if any.
    NotLeader(Option<u64>),
    /// The receiver could not handle the request (its Raft node stopped, ...).
    Failed(String),
}

async fn read_frame(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let len = match stream.read_u32().await {
        Ok(len) => len,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is over the {MAX_FRAME_BYTES}-byte limit"),
        ));
    }
    let mut buf = Vec::new();
    (&mut *stream)
        .take(u64::from(len))
        .read_to_end(&mut buf)
        .await?;
    if buf.len() != len as usize {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(buf))
}

async fn write_frame(stream: &mut TcpStream, message: &impl Serialize) -> io::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|&l| l <= MAX_FRAME_BYTES)
        .ok_or_else(|| io::Error::other("message over the frame limit"))?;
    stream.write_u32(len).await?;
    stream.write_all(&bytes).await?;
    stream.flush().await
}

/// The voters as the effective membership has them (kept current as it changes), each with
/// the data directory id it was added with when it was added online (KIP-853's voter key).
#[derive(Debug, Clone, Default)]
pub(crate) struct Voters(std::sync::Arc<std::sync::RwLock<BTreeMap<u64, Option<String>>>>);

impl Voters {
    pub(crate) fn new(voters: BTreeMap<u64, Option<String>>) -> Self {
        Self(std::sync::Arc::new(std::sync::RwLock::new(voters)))
    }

    /// The voters of `membership` (those of every config of a joint one).
    pub(crate) fn of(
        membership: &openraft::Membership<u64, crate::Member>,
    ) -> BTreeMap<u64, Option<String>> {
        membership
            .voter_ids()
            .map(|id| (id, membership.get_node(&id).and_then(|m| m.dir.clone())))
            .collect()
    }

    pub(crate) fn set(&self, voters: BTreeMap<u64, Option<String>>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = voters;
    }

    /// None when `node` is not a voter; else the directory id it was added with, if it was.
    fn added_with(&self, node: u64) -> Option<Option<String>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .cloned()
    }
}

/// Who this node is on the controller listener, and the data directory ids of the voters it
/// has seen (KIP-853's idea): every connection starts with [`Request::Hello`], answered with
/// the receiver's; a voter seen before with another directory id lost its disk, may have
/// acknowledged entries it no longer has, and is refused both ways.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub node: u64,
    pub dir: String,
    pub voters: Voters,
    pub log: crate::LogStore,
    /// Why a peer last refused this node, for start-up's error.
    pub refused: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// Where the directory ids seen are noted for DescribeQuorum.
    pub heard: crate::quorum::Heard,
}

impl Identity {
    /// Whether `node` may take part with directory `dir`: a voter added online must come with
    /// the directory id it was added with; a voter of the quorum's first membership with the
    /// first one it was seen with (recorded durably). Observers may change disks (they do not
    /// vote).
    pub(crate) async fn check(&self, node: u64, dir: &str) -> Result<(), String> {
        let lost = |known: &str| {
            format!(
                "voter {node}'s data directory changed (directory id {known}, now {dir}): a voter that lost its disk cannot rejoin its quorum (it may have acknowledged entries it no longer has); restore its data directory, or remove the voter (`fjord cluster remove-voter`) and add the node again once it has caught up as an observer"
            )
        };
        let added_with = match self.voters.added_with(node) {
            None => {
                self.heard.note_dir(node, dir);
                return Ok(());
            }
            Some(added_with) => added_with,
        };
        if let Some(known) = added_with {
            if known != dir {
                return Err(lost(&known));
            }
            self.heard.note_dir(node, dir);
            return Ok(());
        }
        match self.log.voter_dir(node) {
            Some(known) if known == dir => {
                self.heard.note_dir(node, dir);
                Ok(())
            }
            Some(known) => Err(lost(&known)),
            None => {
                self.log
                    .record_voter_dir(node, dir.to_string())
                    .await
                    .map_err(|e| format!("recording voter {node}'s directory id: {e}"))?;
                self.heard.note_dir(node, dir);
                Ok(())
            }
        }
    }
}

/// Serves the controller listener: Raft RPCs to `raft`, forwarded writes too when this node
/// leads. Runs until the listener fails.
pub(crate) async fn serve(
    listener: TcpListener,
    raft: Raft<TypeConfig, StateMachine>,
    heard: crate::quorum::Heard,
    identity: Identity,
) {
    // The connections end with the listener's task (dropping the set aborts them): a stopped
    // node must not go on answering from connections it accepted before.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "controller listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (raft, heard) = (raft.clone(), heard.clone());
        let identity = identity.clone();
        connections.spawn(async move {
            if let Err(e) = connection(stream, &raft, &heard, &identity).await {
                tracing::debug!(%peer, error = %e, "controller connection closed");
            }
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    raft: &Raft<TypeConfig, StateMachine>,
    heard: &crate::quorum::Heard,
    identity: &Identity,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    while let Some(frame) = read_frame(&mut stream).await? {
        let request: Request = serde_json::from_slice(&frame)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if let Request::Hello { node, dir } = &request {
            match identity.check(*node, dir).await {
                Ok(()) => {
                    let hello = Response::Hello {
                        node: identity.node,
                        dir: identity.dir.clone(),
                    };
                    write_frame(&mut stream, &hello).await?;
                    continue;
                }
                Err(reason) => {
                    tracing::error!(node, "refused a member: {reason}");
                    write_frame(&mut stream, &Response::Failed(format!("refused: {reason}")))
                        .await?;
                    return Ok(());
                }
            }
        }
        let response = handle(raft, heard, request).await;
        write_frame(&mut stream, &response).await?;
    }
    Ok(())
}

pub(crate) async fn handle(
    raft: &Raft<TypeConfig, StateMachine>,
    heard: &crate::quorum::Heard,
    request: Request,
) -> Response {
    let failed = |e: &dyn std::fmt::Display| Response::Failed(e.to_string());
    match request {
        Request::Join {
            node,
            address,
            empty,
        } => join(raft, node, address, empty).await,
        Request::AddVoter {
            node,
            dir,
            address,
            timeout_ms,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            crate::voters::add(raft, heard, node, &dir, &address, timeout).await
        }
        Request::RemoveVoter {
            node,
            dir,
            timeout_ms,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            crate::voters::remove(raft, heard, node, &dir, timeout).await
        }
        Request::Append(rpc) => raft
            .append_entries(rpc)
            .await
            .map_or_else(|e| failed(&e), Response::Append),
        Request::Vote(rpc) => raft
            .vote(rpc)
            .await
            .map_or_else(|e| failed(&e), Response::Vote),
        Request::PreVote(rpc) => raft
            .pre_vote(rpc)
            .await
            .map_or_else(|e| failed(&e), Response::Vote),
        Request::Snapshot { vote, meta, data } => {
            let snapshot = SnapshotOf::<TypeConfig, Vec<u8>> {
                meta,
                snapshot: data.into_bytes(),
            };
            raft.install_full_snapshot(vote, snapshot)
                .await
                .map_or_else(|e| failed(&e), Response::Snapshot)
        }
        Request::TransferLeader(rpc) => raft
            .handle_transfer_leader(rpc)
            .await
            .map_or_else(|e| failed(&e), Response::TransferLeader),
        Request::Heartbeat { broker } => {
            if raft.is_leader() {
                heard.note(broker);
                Response::HeardYou
            } else {
                Response::NotLeader(raft.current_leader().await)
            }
        }
        // Answered by the connection; one in the middle of a connection is out of place.
        Request::Hello { .. } => failed(&"Hello is only the first message of a connection"),
        Request::Describe => {
            use openraft::async_runtime::WatchReceiver;
            let view =
                crate::quorum::QuorumView::of_leader(&raft.metrics().borrow_watched(), heard);
            match view {
                Some(view) => Response::Described(view),
                None => Response::NotLeader(raft.current_leader().await),
            }
        }
        Request::Write(change) => match raft.client_write(change).await {
            Ok(r) => Response::Written(r.data),
            Err(openraft::errors::RaftError::APIError(
                openraft::errors::ClientWriteError::ForwardToLeader(f),
            )) => Response::NotLeader(f.leader_id),
            Err(e) => failed(&e),
        },
    }
}

/// The leader's side of [`Request::Join`]: adds `node` as an observer (a learner) at
/// `address`, or records its new address, and answers at once (the observer catches up by
/// itself). A voter is never turned into an observer.
async fn join(
    raft: &Raft<TypeConfig, StateMachine>,
    node: u64,
    address: String,
    empty: bool,
) -> Response {
    use openraft::ChangeMembers;
    use openraft::async_runtime::WatchReceiver;
    use openraft::errors::{ClientWriteError, RaftError};
    // Decided by the leader alone, on its membership (a follower's may be behind).
    if !raft.is_leader() {
        return Response::NotLeader(raft.current_leader().await);
    }
    let (voter, known) = {
        let metrics = raft.metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        (
            membership.voter_ids().any(|v| v == node),
            membership.get_node(&node).map(|n| n.addr.clone()),
        )
    };
    if voter {
        if empty {
            return Response::Failed(format!(
                "refused: node {node} is a voter of this quorum and its metadata log is empty (a new disk): a voter that lost its log cannot rejoin; restore its data directory, or remove the voter first (`fjord cluster remove-voter`)"
            ));
        }
        // A voter that stopped before it stored the entry that made it one starts as an
        // observer: the leader, replicating to it already, brings its log up to date.
        return Response::Joined;
    }
    if empty && known.is_some() {
        // The observer lost its log (a new disk): replicate it again from the start instead
        // of taking its shorter log for a fault. Safe for a node that does not vote.
        if let Ok(Err(e)) | Err(e) = raft
            .trigger()
            .allow_next_revert(&node, true)
            .await
            .map_err(|e| e.to_string())
            .map(|r| r.map_err(|e| e.to_string()))
        {
            return Response::Failed(format!("resetting observer {node}'s replication: {e}"));
        }
    }
    let changed = match known {
        Some(addr) if addr == address => return Response::Joined,
        // A known observer at a new address: removed and added again, so that the leader
        // replicates to the new address (it keeps its streams to members that stay).
        Some(_) => {
            let removed = raft
                .change_membership(
                    ChangeMembers::RemoveNodes(std::collections::BTreeSet::from([node])),
                    true,
                )
                .await;
            match removed {
                Ok(_) => {
                    raft.add_learner(node, crate::Member::new(address), false)
                        .await
                }
                Err(e) => Err(e),
            }
        }
        None => {
            raft.add_learner(node, crate::Member::new(address), false)
                .await
        }
    };
    match changed {
        Ok(_) => Response::Joined,
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Response::NotLeader(f.leader_id)
        }
        Err(e) => Response::Failed(e.to_string()),
    }
}

/// A link to one peer's controller listener: a TCP connection opened on first use and again
/// after a failure, or a deterministic test's simulated network.
#[derive(Debug)]
pub struct Peer {
    addr: String,
    link: Link,
    /// Introduces this node on each new TCP connection, and checks who answers.
    identity: Option<Identity>,
}

#[derive(Debug)]
enum Link {
    Tcp(Option<TcpStream>),
    Sim { net: crate::sim::SimNet, from: u64 },
}

impl Peer {
    pub(crate) fn new(addr: String, identity: Option<Identity>) -> Self {
        Self {
            addr,
            link: Link::Tcp(None),
            identity,
        }
    }

    /// A link from node `from` over a simulated network.
    pub(crate) fn sim(addr: String, net: crate::sim::SimNet, from: u64) -> Self {
        Self {
            addr,
            link: Link::Sim { net, from },
            identity: None,
        }
    }

    /// The address this link goes to.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `request` and reads its response within `ttl`; any failure drops the connection.
    pub(crate) async fn call(&mut self, request: &Request, ttl: Duration) -> io::Result<Response> {
        if let Link::Sim { net, from } = &self.link {
            return net.call(*from, &self.addr, request, ttl).await;
        }
        let result = tokio::time::timeout(ttl, self.exchange(request)).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time")),
        };
        if result.is_err() {
            self.link = Link::Tcp(None);
        }
        result
    }

    async fn exchange(&mut self, request: &Request) -> io::Result<Response> {
        if let Link::Tcp(stream @ None) = &mut self.link {
            let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            connected.set_nodelay(true)?;
            let mut connected = connected;
            if let Some(identity) = &self.identity {
                Self::hello(&mut connected, identity).await?;
            }
            *stream = Some(connected);
        }
        let Link::Tcp(Some(stream)) = &mut self.link else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        write_frame(stream, request).await?;
        let frame = read_frame(stream)
            .await?
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        serde_json::from_slice(&frame).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Introduces this node on a new connection and checks who answers.
    async fn hello(stream: &mut TcpStream, identity: &Identity) -> io::Result<()> {
        let hello = Request::Hello {
            node: identity.node,
            dir: identity.dir.clone(),
        };
        write_frame(stream, &hello).await?;
        let frame = read_frame(stream)
            .await?
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let answer: Response = serde_json::from_slice(&frame)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        match answer {
            Response::Hello { node, dir } => identity.check(node, &dir).await.map_err(|reason| {
                tracing::error!(node, "refused a member: {reason}");
                io::Error::other(reason)
            }),
            Response::Failed(reason) => {
                if reason.starts_with("refused:") {
                    *identity.refused.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(reason.clone());
                }
                Err(io::Error::other(reason))
            }
            other => Err(io::Error::other(format!(
                "unexpected answer to Hello: {other:?}"
            ))),
        }
    }

    async fn rpc(
        &mut self,
        request: Request,
        option: &RPCOption,
    ) -> Result<Response, RPCError<TypeConfig>> {
        match self.call(&request, option.hard_ttl()).await {
            Ok(Response::Failed(reason)) => {
                // Connect afresh next time: the node behind this connection may have stopped
                // and started again.
                if let Link::Tcp(stream) = &mut self.link {
                    *stream = None;
                }
                Err(RPCError::Network(NetworkError::new(&io::Error::other(
                    reason,
                ))))
            }
            Ok(response) => Ok(response),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }
}

fn unexpected(response: &Response) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&io::Error::other(format!(
        "unexpected answer: {response:?}"
    ))))
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.rpc(Request::Append(rpc), &option).await? {
            Response::Append(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.rpc(Request::Vote(rpc), &option).await? {
            Response::Vote(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.rpc(Request::PreVote(rpc), &option).await? {
            Response::Vote(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.rpc(Request::TransferLeader(rpc), &option).await? {
            Response::TransferLeader(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let data = String::from_utf8(snapshot.snapshot)
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        let request = Request::Snapshot {
            vote,
            meta: snapshot.meta,
            data,
        };
        let sent = tokio::select! {
            biased;
            closed = cancel => {
                let e = io::Error::other(format!("snapshot sending cancelled: {closed}"));
                return Err(StreamingError::Unreachable(Unreachable::new(&e)));
            }
            sent = self.call(&request, option.hard_ttl().max(Duration::from_secs(60))) => sent,
        };
        match sent {
            Ok(Response::Snapshot(r)) => Ok(r),
            Ok(other) => Err(StreamingError::Unreachable(Unreachable::new(
                &io::Error::other(format!("unexpected answer: {other:?}")),
            ))),
            Err(e) => Err(StreamingError::Unreachable(Unreachable::new(&e))),
        }
    }
}

/// Makes [`Peer`]s from the members' addresses (their controller listeners).
#[derive(Debug, Clone)]
pub(crate) struct TcpNetwork {
    pub identity: Identity,
}

impl RaftNetworkFactory<TypeConfig> for TcpNetwork {
    type Network = Peer;

    async fn new_client(&mut self, _target: u64, node: &crate::Member) -> Peer {
        Peer::new(node.addr.clone(), Some(self.identity.clone()))
    }
}

/// Decodes `data` as a controller-listener message in either direction, as a connection does
/// after the frame's size check: the fuzz target's entry point. Never panics.
#[doc(hidden)]
pub fn fuzz_decode(data: &[u8]) {
    let _ = serde_json::from_slice::<Request>(data);
    let _ = serde_json::from_slice::<Response>(data);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            fuzz_decode(&data);
        }

        /// Messages that decode, cut or with a byte changed: still no panic.
        #[test]
        fn damaged_messages_never_panic(cut in 0usize..400, at in 0usize..400, byte in any::<u8>()) {
            let vote = r#"{"Vote":{"vote":{"leader_id":{"term":3,"node_id":1},"committed":false},"last_log_id":{"leader_id":{"term":2,"node_id":1},"index":7}}}"#;
            let write = r#"{"Write":[{"type":"topic","name":"t","id":"00000000-0000-4000-8000-000000000001","version":1}]}"#;
            let heartbeat = r#"{"Heartbeat":{"broker":2}}"#;
            prop_assert!(serde_json::from_str::<Request>(heartbeat).is_ok());
            let hello = r#"{"Hello":{"node":3,"dir":"AAAAAAAAAAAAAAAAAAAAAA"}}"#;
            prop_assert!(serde_json::from_str::<Request>(hello).is_ok());
            prop_assert!(serde_json::from_str::<Response>(hello).is_ok());
            let described = r#"{"Described":{"leader":1,"epoch":2,"high_watermark":7,"voters":[{"id":1,"directory_id":"AAAAAAAAAAAAAAAAAAAAAA","log_end_offset":7,"last_fetch_ms":5,"last_caught_up_ms":5}],"observers":[],"addresses":{"1":"127.0.0.1:9"}}}"#;
            prop_assert!(serde_json::from_str::<Response>(described).is_ok());
            prop_assert!(serde_json::from_str::<Request>(write).is_ok());
            for m in [vote, write, heartbeat, described, hello] {
                let mut bytes = m.as_bytes().to_vec();
                fuzz_decode(&bytes);
                if at < bytes.len() {
                    bytes[at] = byte;
                }
                bytes.truncate(cut.min(bytes.len()));
                fuzz_decode(&bytes);
            }
        }
    }
}
