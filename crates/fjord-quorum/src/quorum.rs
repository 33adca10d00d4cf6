//! The quorum as the broker uses it: open (or create, or convert) the metadata log, write a
//! change through Raft, follow the applied state.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fjord_log::Storage;
use fjord_meta::{MetadataRecord, MetadataState, MetadataStore};
use openraft::alias::{InstantOf, SnapshotOf, VoteOf};
use openraft::errors::{
    ClientWriteError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::VoteResponse;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest};
use openraft::storage::RaftLogStorage;
use openraft::{Config, Raft, RaftNetworkFactory, RaftNetworkV2};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::network::{Identity, Peer, Request, Response, TcpNetwork, Voters};
use crate::sim::{Endpoint, SimNet, SimNetwork};
use crate::voters::{VoterError, VoterRefusal};
use crate::{Applied, Change, LogStore, Published, StateMachine, TypeConfig};

/// How long start-up waits for the quorum by default.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one request to join as an observer waits for its answer.
const JOIN_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a change may wait for a leader to take it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the quorum could not open or take a change.
#[derive(Debug, Error)]
pub enum QuorumError {
    #[error("metadata log: {0}")]
    Io(#[from] std::io::Error),
    #[error("converting the metadata log of an earlier Fjord version: {0}")]
    Convert(#[from] fjord_meta::StoreError),
    #[error("metadata quorum: {0}")]
    Raft(String),
    /// The change no longer applied to the state when its turn came (nothing changed).
    #[error("the change was refused: {0}")]
    Refused(String),
}

fn raft_error(e: impl std::fmt::Display) -> QuorumError {
    QuorumError::Raft(e.to_string())
}

/// A one-member quorum has no peers to reach.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPeers;

fn unreachable<T>() -> Result<T, RPCError<TypeConfig>> {
    let e = std::io::Error::other("this node has no Raft peers");
    Err(RPCError::Unreachable(Unreachable::new(&e)))
}

impl RaftNetworkV2<TypeConfig> for NoPeers {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        unreachable()
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        unreachable()
    }

    async fn full_snapshot(
        &mut self,
        _vote: VoteOf<TypeConfig>,
        _snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let e = std::io::Error::other("this node has no Raft peers");
        Err(StreamingError::Unreachable(Unreachable::new(&e)))
    }
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeers;

    async fn new_client(&mut self, _target: u64, _node: &crate::Member) -> NoPeers {
        NoPeers
    }
}

/// When the leader last heard from each broker (its heartbeat session table): volatile, and
/// started afresh by a node that becomes leader.
#[derive(Debug, Clone, Default)]
pub struct Heard(Arc<std::sync::Mutex<HeardInner>>);

#[derive(Debug, Default)]
struct HeardInner {
    /// Since when this node has been leader (the sessions' start), if it is.
    since: Option<std::time::Instant>,
    last: std::collections::HashMap<i32, std::time::Instant>,
    /// When each member last held the leader's whole log, while this node leads.
    caught_up: std::collections::HashMap<u64, InstantOf<TypeConfig>>,
    /// The term the sessions were started in.
    term: Option<u64>,
    /// The data directory id of each voter, as checked on its connections (and this node's).
    dirs: BTreeMap<u64, String>,
    /// Since when this node has led, while it does (noted as its metrics show it).
    leading_since: Option<std::time::Instant>,
}

impl Heard {
    pub(crate) fn note(&self, broker: i32) {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        inner.last.insert(broker, std::time::Instant::now());
    }

    /// Notes which members hold the leader's whole log now (forgotten when not leading).
    fn note_progress(&self, m: &openraft::RaftMetrics<TypeConfig>) {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(replication) = m.replication.as_ref().filter(|_| m.state.is_leader()) else {
            inner.caught_up.clear();
            return;
        };
        let now = <InstantOf<TypeConfig> as openraft::Instant>::now();
        for (id, matched) in replication {
            if matched.as_ref().map(|l| l.index) == m.last_log_index {
                let heard = m
                    .heartbeat
                    .as_ref()
                    .and_then(|h| h.get(id).cloned().flatten())
                    .map_or(now, |t| *t);
                inner.caught_up.insert(*id, heard);
            }
        }
    }

    /// Notes the data directory id of `node`.
    pub(crate) fn note_dir(&self, node: u64, dir: &str) {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        inner.dirs.insert(node, dir.to_string());
    }

    /// How long this node has led, if it leads.
    pub(crate) fn led_for(&self) -> Option<Duration> {
        let inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        inner.leading_since.map(|t| t.elapsed())
    }

    fn note_leading(&self, leading: bool, became: bool) {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !leading {
            inner.leading_since = None;
        } else if became || inner.leading_since.is_none() {
            inner.leading_since = Some(std::time::Instant::now());
        }
    }

    pub(crate) fn dir(&self, node: u64) -> Option<String> {
        let inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        inner.dirs.get(&node).cloned()
    }

    pub(crate) fn caught_up(&self, id: u64) -> Option<InstantOf<TypeConfig>> {
        let inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        inner.caught_up.get(&id).copied()
    }
}

/// Keeps `heard`'s caught-up times as the leader's replication progresses and `voters` as the
/// membership changes; a node that becomes leader finishes a voter change an earlier leader
/// left halfway (a joint membership).
async fn track_progress(raft: Raft<TypeConfig, StateMachine>, heard: Heard, voters: Voters) {
    use openraft::async_runtime::WatchReceiver;
    let mut metrics = raft.metrics();
    let mut led_in: Option<u64> = None;
    loop {
        let (became_leader, joint) = {
            let m = metrics.borrow_watched();
            heard.note_progress(&m);
            voters.set(Voters::of(m.membership_config.membership()));
            let leading = m.state.is_leader().then_some(m.current_term);
            let became = leading.is_some() && leading != led_in;
            led_in = leading;
            heard.note_leading(leading.is_some(), became);
            (
                became,
                m.membership_config.membership().get_joint_config().len() > 1,
            )
        };
        if became_leader && joint {
            let raft = raft.clone();
            tokio::spawn(async move {
                // Once this leader has committed what it found (its first entry commits it);
                // tried again a few times while it leads.
                for _ in 0..10 {
                    let committed = raft
                        .wait(Some(Duration::from_secs(10)))
                        .metrics(
                            |m| {
                                m.membership_config.log_id()
                                    == m.committed_membership_config.log_id()
                            },
                            "the membership committed",
                        )
                        .await;
                    if committed.is_ok() && crate::voters::finish_joint(&raft).await {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// How long an observer stays listed without being heard from (Kafka's
/// `LeaderState.OBSERVER_SESSION_TIMEOUT_MS`).
const OBSERVER_SESSION_TIMEOUT_MS: i64 = 300_000;

/// One member of the quorum as the leader sees it (Kafka's DescribeQuorum replica state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaView {
    pub id: u64,
    /// Its data directory id (`directory.id`), when known.
    #[serde(default)]
    pub directory_id: Option<String>,
    /// The offset after its last entry the leader knows it holds; -1 if unknown yet.
    pub log_end_offset: i64,
    /// When (ms since the epoch) the leader last heard from it; -1 if not yet.
    pub last_fetch_ms: i64,
    /// When (ms since the epoch) it last held the leader's whole log; -1 if not yet.
    pub last_caught_up_ms: i64,
}

/// The quorum as its leader sees it: what Kafka's DescribeQuorum answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumView {
    pub leader: u64,
    /// The leader's term (Kafka's leader epoch).
    pub epoch: u64,
    /// The offset after the last committed entry.
    pub high_watermark: i64,
    pub voters: Vec<ReplicaView>,
    /// Members that replicate the log without voting (broker-only nodes).
    pub observers: Vec<ReplicaView>,
    /// Each member's controller listener (empty for a single node, which has none).
    pub addresses: BTreeMap<u64, String>,
}

impl QuorumView {
    /// The view of the leader whose metrics these are; None unless it leads.
    pub(crate) fn of_leader(m: &openraft::RaftMetrics<TypeConfig>, heard: &Heard) -> Option<Self> {
        let replication = m.replication.as_ref().filter(|_| m.state.is_leader())?;
        let now = <InstantOf<TypeConfig> as openraft::Instant>::now();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let at = |t: Option<InstantOf<TypeConfig>>| {
            t.map_or(-1, |t| now_ms - (now - t).as_millis() as i64)
        };
        let end = |index: Option<u64>| index.map_or(-1, |i| i as i64 + 1);
        let replica = |id: u64| {
            if id == m.id {
                return ReplicaView {
                    id,
                    directory_id: heard.dir(id),
                    log_end_offset: end(m.last_log_index),
                    last_fetch_ms: now_ms,
                    last_caught_up_ms: now_ms,
                };
            }
            let fetched = m
                .heartbeat
                .as_ref()
                .and_then(|h| h.get(&id).cloned().flatten())
                .map(|t| *t);
            ReplicaView {
                id,
                directory_id: heard.dir(id),
                log_end_offset: end(replication.get(&id).cloned().flatten().map(|l| l.index)),
                last_fetch_ms: at(fetched),
                last_caught_up_ms: at(heard.caught_up(id)),
            }
        };
        let membership = m.membership_config.membership();
        // As Kafka: an observer not heard from for five minutes is no longer listed.
        let recent = |r: &ReplicaView| r.last_fetch_ms >= now_ms - OBSERVER_SESSION_TIMEOUT_MS;
        Some(Self {
            leader: m.id,
            epoch: m.current_term,
            high_watermark: end(m.local_committed.map(|l| l.index)),
            voters: membership.voter_ids().map(replica).collect(),
            observers: membership
                .learner_ids()
                .map(replica)
                .filter(recent)
                .collect(),
            addresses: membership
                .nodes()
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect(),
        })
    }
}

/// The heartbeat sessions as the leader sees them: since when it leads, and when it last
/// heard from each broker.
#[derive(Debug, Clone)]
pub struct Sessions {
    pub since: std::time::Instant,
    pub last: std::collections::HashMap<i32, std::time::Instant>,
}

/// How a quorum runs: Raft timings and how often the state is snapshotted.
#[derive(Debug, Clone)]
pub struct QuorumOptions {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A snapshot is taken after this many entries since the last one.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind a snapshot (a lagging member catches up from them
    /// instead of the whole snapshot).
    pub entries_kept_after_snapshot: u64,
    /// How long opening waits for the quorum (a member waits for enough voters to start).
    pub start_timeout: Duration,
    /// This node has run before: its metadata log must be there (a voter that lost it must
    /// not rejoin).
    pub must_have_log: bool,
    /// This node's controller listener as the others reach it, when it is not a voter (a
    /// voter's is its entry among the voters); defaults to the listener's local address.
    pub address: Option<String>,
    /// This node's data directory id (`directory.id` in meta.properties): the other voters
    /// refuse this node if it ever comes back with another one (a lost disk).
    pub directory_id: Option<String>,
}

impl Default for QuorumOptions {
    fn default() -> Self {
        Self {
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            snapshot_after_entries: 5000,
            entries_kept_after_snapshot: 1000,
            start_timeout: START_TIMEOUT,
            must_have_log: false,
            address: None,
            directory_id: None,
        }
    }
}

/// How a node reaches the others.
enum Net {
    /// A single node: no peers.
    Local,
    /// The controller listener, over TCP.
    Tcp(TcpListener),
    /// A deterministic test's network.
    Sim(SimNet),
}

/// How a running node opens links to the others.
#[derive(Debug, Clone)]
enum Transport {
    Local,
    Tcp(Identity),
    Sim(SimNet),
}

impl Transport {
    fn peer(&self, from: u64, addr: String) -> Peer {
        match self {
            Transport::Sim(net) => Peer::sim(addr, net.clone(), from),
            Transport::Local => Peer::new(addr, None),
            Transport::Tcp(identity) => Peer::new(addr, Some(identity.clone())),
        }
    }

    /// Why a voter refused this node (its data directory changed), if one did.
    fn refused(&self) -> Option<String> {
        match self {
            Transport::Tcp(identity) => identity
                .refused
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            Transport::Local | Transport::Sim(_) => None,
        }
    }

    /// Stops a simulated member answering (a TCP listener is stopped with its task).
    fn leave(&self, node: u64) {
        if let Transport::Sim(net) = self {
            net.unregister(node);
        }
    }
}

/// The metadata quorum of this node.
#[derive(Clone)]
pub struct Quorum {
    raft: Raft<TypeConfig, StateMachine>,
    sm: StateMachine,
    log: LogStore,
    node_id: u64,
    /// The controller listener's task, when this node has one.
    listener: Option<Arc<tokio::task::JoinHandle<()>>>,
    /// Follows the replication progress for [`Quorum::describe`].
    progress: Arc<tokio::task::JoinHandle<()>>,
    heard: Heard,
    transport: Transport,
    /// The connection kept to the leader for heartbeats and descriptions.
    leader_link: Arc<std::sync::Mutex<Option<Peer>>>,
}

impl std::fmt::Debug for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quorum")
            .field("node_id", self.raft.node_id())
            .field("applied", &self.sm.current().index)
            .finish()
    }
}

/// The membership a node's storage records.
struct Stored {
    /// Each voter, with the directory id it was added with online, if it was.
    voters: BTreeMap<u64, Option<String>>,
    /// Every member (voters and observers) with its address.
    nodes: BTreeMap<u64, crate::Member>,
}

/// How long a new node waits for each voter it asks whether a quorum runs already.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The name a directory being converted from an earlier version's format takes meanwhile.
fn converting(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".converting");
    dir.with_file_name(name)
}

impl Quorum {
    /// Opens this node's metadata as a one-member quorum in `dir` (`__cluster_metadata-0`
    /// under the data directory): created on first start, recovered after a crash, and
    /// converted once from an earlier Fjord version's log (whose topics `node_id` holds).
    /// Returns once this node leads and has applied everything committed before.
    pub async fn open_single(
        storage: Arc<dyn Storage>,
        dir: &Path,
        node_id: i32,
        now_ms: i64,
    ) -> Result<Self, QuorumError> {
        let voters = BTreeMap::from([(node_id as u64, String::new())]);
        Self::open(
            storage,
            dir,
            node_id,
            now_ms,
            voters,
            Net::Local,
            QuorumOptions::default(),
        )
        .await
    }

    /// Opens this node's metadata as a member of the quorum of `voters` (node id → controller
    /// listener address), serving Raft on `listener` (this node's address among them).
    /// Returns once a leader has committed everything this node had and this node applied it:
    /// a member waits for enough voters to start (up to `options.start_timeout`).
    /// A node that is not among the voters is an observer (a broker-only node, an openraft
    /// learner): it asks the leader to add it, and replicates the log without voting.
    pub async fn open_member(
        storage: Arc<dyn Storage>,
        dir: &Path,
        node_id: i32,
        now_ms: i64,
        voters: BTreeMap<u64, String>,
        listener: TcpListener,
        options: QuorumOptions,
    ) -> Result<Self, QuorumError> {
        Self::open(
            storage,
            dir,
            node_id,
            now_ms,
            voters,
            Net::Tcp(listener),
            options,
        )
        .await
    }

    /// Opens this node's metadata as a member of the quorum of `voters` (node id →
    /// [`SimNet::address`]) over a deterministic test's simulated network, as
    /// [`Quorum::open_member`] does over TCP.
    pub async fn open_simulated(
        storage: Arc<dyn Storage>,
        dir: &Path,
        node_id: i32,
        now_ms: i64,
        voters: BTreeMap<u64, String>,
        net: SimNet,
        options: QuorumOptions,
    ) -> Result<Self, QuorumError> {
        Self::open(
            storage,
            dir,
            node_id,
            now_ms,
            voters,
            Net::Sim(net),
            options,
        )
        .await
    }

    async fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        node_id: i32,
        now_ms: i64,
        voters: BTreeMap<u64, String>,
        net: Net,
        options: QuorumOptions,
    ) -> Result<Self, QuorumError> {
        let legacy = Self::take_legacy(&storage, dir, node_id, now_ms).await?;
        let node = node_id as u64;
        let (log, sm) = {
            let (storage, dir) = (storage.clone(), dir.to_path_buf());
            crate::runtime::blocking(move || {
                let log = LogStore::open(storage.clone(), &dir, now_ms)?;
                let sm = StateMachine::open(storage, &dir)?;
                Ok((log, sm))
            })
            .await?
        };
        let config = Config {
            cluster_name: "fjord-metadata".into(),
            heartbeat_interval: options.heartbeat_ms,
            election_timeout_min: options.election_timeout_min_ms,
            election_timeout_max: options.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
                options.snapshot_after_entries,
            ),
            max_in_snapshot_log_to_keep: options.entries_kept_after_snapshot,
            ..Config::default()
        }
        .validate()
        .map_err(raft_error)?;
        let mut fresh_log = log.clone();
        let fresh =
            fresh_log.get_log_state().await?.last_log_id.is_none() && sm.current().index.is_none();
        // Checked before this node takes part in Raft: a node that would split from its
        // quorum, or rejoin it without the log it had, must not answer a single RPC.
        if fresh && options.must_have_log {
            return Err(QuorumError::Raft(
                "this node has run before (its data directory says so) but its metadata log is empty; a voter that lost its log cannot rejoin its quorum (it may have acknowledged entries it no longer has): restore the data directory (replacing a voter's disk is not supported yet)".into(),
            ));
        }
        // The voters are the metadata log's once it has any (they change online, KIP-853);
        // the configured ones start a new quorum, and are where a node looks for its leader.
        let stored = if fresh {
            None
        } else {
            Some(Self::stored_members(&log, &sm).await?)
        };
        let show = |m: &BTreeMap<u64, String>| {
            m.iter()
                .map(|(id, a)| {
                    if a.is_empty() {
                        id.to_string()
                    } else {
                        format!("{id}@{a}")
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut contacts = voters.clone();
        let mut voter_dirs: BTreeMap<u64, Option<String>> =
            voters.keys().map(|&id| (id, None)).collect();
        if let Some(stored) = &stored
            && !stored.voters.is_empty()
        {
            let addresses: BTreeMap<u64, String> = stored
                .voters
                .keys()
                .map(|id| (*id, stored.nodes[id].addr.clone()))
                .collect();
            // A quorum of one without a controller listener (its members have no address)
            // cannot be reached by others, nor can one node of a cluster run alone.
            let single = |m: &BTreeMap<u64, String>| m.values().any(String::is_empty);
            if addresses != voters && (single(&addresses) || single(&voters)) {
                return Err(QuorumError::Raft(format!(
                    "this data directory belongs to a metadata quorum of voters {}, but the node was started with {}; start it with the voters it was created with",
                    show(&addresses),
                    show(&voters)
                )));
            }
            if addresses != voters {
                tracing::info!(
                    voters = show(&addresses),
                    configured = show(&voters),
                    "the metadata log's voters differ from controller.quorum.voters (voters changed online); the log's are used"
                );
            }
            for (id, member) in &stored.nodes {
                if *id != node && !member.addr.is_empty() {
                    contacts.insert(*id, member.addr.clone());
                }
            }
            voter_dirs = stored.voters.clone();
        }
        let mut observer = !voter_dirs.contains_key(&node);
        if observer && matches!(net, Net::Local) {
            return Err(QuorumError::Raft(format!(
                "node {node_id} is not among the voters and has no controller listener to replicate the metadata to"
            )));
        }
        let config = Arc::new(config);
        let heard = Heard::default();
        let voter_set = Voters::new(voter_dirs);
        // Who this node is to the others over TCP (the simulated network checks no
        // directories).
        let identity = Identity {
            node,
            dir: options.directory_id.clone().unwrap_or_default(),
            voters: voter_set.clone(),
            log: log.clone(),
            refused: Arc::default(),
            heard: heard.clone(),
        };
        let (address, transport) = match &net {
            Net::Local => (String::new(), Transport::Local),
            Net::Tcp(listener) => (
                match &options.address {
                    Some(a) => a.clone(),
                    None => listener.local_addr()?.to_string(),
                },
                Transport::Tcp(identity.clone()),
            ),
            Net::Sim(sim) => (SimNet::address(node), Transport::Sim(sim.clone())),
        };
        // A new node named among the voters first looks for a quorum already running: one
        // that has none of it as a voter (its voters changed since, or it was removed and
        // comes back on a new disk) must not be split from by a second quorum of the voters
        // configured; the node joins it as an observer instead, to be added as a voter.
        if fresh
            && !observer
            && matches!(transport, Transport::Tcp(_))
            && let Some(running) = Self::running_voters(&transport, &contacts, node).await?
            && !running.contains(&node)
        {
            tracing::warn!(
                node_id,
                running = ?running,
                "the voters named in controller.quorum.voters already run a quorum that does not have this node as a voter: it joins as an observer; add it with `fjord cluster add-voter`"
            );
            observer = true;
        }
        if observer {
            // Every start, before this node answers any Raft RPC: the leader (re)adds it with
            // its address now, and, when its log is empty (a new disk), is told to replicate
            // it from the start instead of taking the shorter log for a fault.
            Self::join(
                &transport,
                &contacts,
                node,
                &address,
                fresh,
                options.start_timeout,
            )
            .await?;
        }
        let (raft, serving) = match net {
            Net::Local => {
                let raft = Raft::new(node, config, NoPeers, log.clone(), sm.clone())
                    .await
                    .map_err(raft_error)?;
                (raft, None)
            }
            Net::Tcp(listener) => {
                let network = TcpNetwork {
                    identity: identity.clone(),
                };
                let raft = Raft::new(node, config, network, log.clone(), sm.clone())
                    .await
                    .map_err(raft_error)?;
                let task = tokio::spawn(crate::network::serve(
                    listener,
                    raft.clone(),
                    heard.clone(),
                    identity,
                ));
                (raft, Some(Arc::new(task)))
            }
            Net::Sim(net) => {
                let network = SimNetwork {
                    net: net.clone(),
                    from: node,
                };
                let raft = Raft::new(node, config, network, log.clone(), sm.clone())
                    .await
                    .map_err(raft_error)?;
                let endpoint = Endpoint {
                    raft: raft.clone(),
                    heard: heard.clone(),
                };
                net.register(node, endpoint);
                (raft, None)
            }
        };
        let stop = |raft: Raft<TypeConfig, StateMachine>| {
            let (serving, transport) = (serving.clone(), transport.clone());
            async move {
                if let Some(task) = &serving {
                    task.abort();
                }
                transport.leave(node);
                let _ = raft.shutdown().await;
            }
        };
        if fresh && !observer {
            let members: BTreeMap<u64, crate::Member> = voters
                .iter()
                .map(|(&id, addr)| (id, crate::Member::new(addr)))
                .collect();
            // Every voter initializes with the same members, which openraft allows.
            if let Err(e) = raft.initialize(members).await {
                tracing::debug!(error = %e, "the quorum was initialized already");
            }
        }
        let deadline = tokio::time::Instant::now() + options.start_timeout;
        loop {
            let waited = raft.wait_for_recovery(Some(Duration::from_secs(2))).await;
            let stopped = match waited {
                Ok(_) => break,
                Err(openraft::metrics::WaitError::ShuttingDown) => true,
                Err(_) => false,
            };
            // Refused by the other voters (this node's data directory is not the one they
            // knew): no point in waiting.
            if let Some(reason) = transport.refused() {
                stop(raft.clone()).await;
                return Err(QuorumError::Raft(format!(
                    "the other voters refuse this node: {reason}"
                )));
            }
            if stopped || tokio::time::Instant::now() >= deadline {
                stop(raft.clone()).await;
                if stopped {
                    return Err(QuorumError::Raft(
                        "the metadata quorum stopped while starting (see the errors before this one)"
                            .into(),
                    ));
                }
                return Err(QuorumError::Raft(format!(
                    "no metadata quorum after {:?}: check that a majority of the voters ({}) are running and reach each other's controller listeners",
                    options.start_timeout,
                    voters
                        .iter()
                        .map(|(id, addr)| format!("{id}@{addr}"))
                        .collect::<Vec<_>>()
                        .join(",")
                )));
            }
            tracing::info!(
                node_id,
                "waiting for the metadata quorum (a majority of the voters)"
            );
        }
        for (voter, dir) in log.voter_dirs() {
            heard.note_dir(voter, &dir);
        }
        if let Some(dir) = &options.directory_id {
            heard.note_dir(node, dir);
        }
        let progress = Arc::new(tokio::spawn(track_progress(
            raft.clone(),
            heard.clone(),
            voter_set,
        )));
        let quorum = Self {
            raft,
            sm,
            log,
            node_id: node,
            listener: serving,
            progress,
            heard,
            transport,
            leader_link: Arc::default(),
        };
        if let Some((state, old)) = legacy {
            let records = state.to_records();
            let n = records.len();
            if let Err(e) = quorum.write(records).await {
                let _ = quorum.shutdown().await;
                return Err(e);
            }
            let old_dir = old.clone();
            crate::runtime::blocking(move || storage.remove_dir_all(&old_dir)).await?;
            tracing::info!(
                records = n,
                "converted the metadata log of an earlier Fjord version"
            );
        }
        Ok(quorum)
    }

    /// The membership this node's storage records: the last membership entry in its log, else
    /// its snapshot's.
    async fn stored_members(log: &LogStore, sm: &StateMachine) -> Result<Stored, QuorumError> {
        use openraft::RaftLogReader;
        use openraft::storage::RaftStateMachine;
        let mut reader = log.clone();
        let entries = reader.try_get_log_entries(0..).await?;
        let from_log = entries.iter().rev().find_map(|e| match &e.payload {
            openraft::EntryPayload::Membership(m) => Some(m.clone()),
            _ => None,
        });
        let membership = match from_log {
            Some(m) => m,
            None => {
                let mut sm = sm.clone();
                sm.applied_state().await?.1.membership().clone()
            }
        };
        Ok(Stored {
            voters: Voters::of(&membership),
            nodes: membership.nodes().map(|(id, m)| (*id, m.clone())).collect(),
        })
    }

    /// The voters of a quorum already running among `contacts` (as its leader describes
    /// them), if one answers: None while none has a leader (a new quorum starting, all of
    /// them down). An error when a member refuses this node (a voter back on a new disk).
    async fn running_voters(
        transport: &Transport,
        contacts: &BTreeMap<u64, String>,
        node: u64,
    ) -> Result<Option<std::collections::BTreeSet<u64>>, QuorumError> {
        let mut asked = std::collections::BTreeSet::new();
        let mut queue: Vec<u64> = contacts.keys().copied().filter(|&id| id != node).collect();
        while let Some(id) = queue.pop() {
            let Some(addr) = contacts.get(&id).filter(|_| asked.insert(id)) else {
                continue;
            };
            let mut peer = transport.peer(node, addr.clone());
            match peer.call(&Request::Describe, PROBE_TIMEOUT).await {
                Ok(Response::Described(view)) => {
                    return Ok(Some(view.voters.iter().map(|v| v.id).collect()));
                }
                Ok(Response::NotLeader(Some(leader))) => queue.push(leader),
                Ok(Response::Failed(reason)) if reason.starts_with("refused:") => {
                    return Err(QuorumError::Raft(reason));
                }
                Err(e) if e.to_string().starts_with("refused:") => {
                    return Err(QuorumError::Raft(e.to_string()));
                }
                Ok(_) | Err(_) => {}
            }
        }
        Ok(None)
    }

    /// Asks the quorum's leader, through any voter, to add `node` (at `address`) as an
    /// observer (or record its new address); returns once the leader has (it then catches up
    /// by itself). `empty`: its log is empty, to be replicated from the start.
    async fn join(
        transport: &Transport,
        voters: &BTreeMap<u64, String>,
        node: u64,
        address: &str,
        empty: bool,
        timeout: Duration,
    ) -> Result<(), QuorumError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let request = Request::Join {
            node,
            address: address.to_string(),
            empty,
        };
        let mut next: Option<u64> = None;
        let mut last_error = String::from("no voter answered");
        loop {
            let targets: Vec<u64> = match next.take() {
                Some(leader) => vec![leader],
                None => voters.keys().copied().collect(),
            };
            for id in targets {
                let Some(addr) = voters.get(&id) else {
                    continue;
                };
                let mut peer = transport.peer(node, addr.clone());
                match peer.call(&request, JOIN_CALL_TIMEOUT).await {
                    Ok(Response::Joined) => return Ok(()),
                    Ok(Response::NotLeader(Some(leader))) => {
                        next = Some(leader);
                        break;
                    }
                    Ok(Response::Failed(reason)) if reason.starts_with("refused:") => {
                        return Err(QuorumError::Raft(reason));
                    }
                    Ok(other) => last_error = format!("voter {id}: {other:?}"),
                    // Refused as a voter that lost its disk: no point in asking again.
                    Err(e) if e.to_string().starts_with("refused:") => {
                        return Err(QuorumError::Raft(e.to_string()));
                    }
                    Err(e) => last_error = format!("voter {id} at {addr}: {e}"),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(QuorumError::Raft(format!(
                    "this broker-only node could not join the metadata quorum within {timeout:?} ({last_error}): check that a majority of the voters run and that they reach this node's controller listener at {address}"
                )));
            }
            tracing::info!(
                node,
                "waiting for the metadata quorum's leader to add this node"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An earlier version's metadata log in `dir` (no Raft state file, records in it) is
    /// moved aside and read; returns its state (partitions placed on `node_id`) and where it
    /// now is, to be removed once the state is written through the quorum. A conversion a
    /// crash cut short starts again from the moved directory.
    async fn take_legacy(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        node_id: i32,
        now_ms: i64,
    ) -> Result<Option<(MetadataState, PathBuf)>, QuorumError> {
        let (storage, dir) = (storage.clone(), dir.to_path_buf());
        crate::runtime::off_thread(move || {
            let old = converting(&dir);
            let has_log = |d: &Path| {
                storage
                    .list_dir(d)
                    .is_ok_and(|files| files.iter().any(|f| f.ends_with(".log")))
            };
            if !has_log(&old) {
                let is_legacy =
                    has_log(&dir) && !storage.exists(&dir.join(crate::RAFT_STATE_FILE))?;
                if !is_legacy {
                    return Ok(None);
                }
                storage.rename(&dir, &old)?;
                if let Some(parent) = dir.parent() {
                    storage.sync_dir(parent)?;
                }
            } else {
                // A conversion that did not finish: its new log is written again.
                match storage.remove_dir_all(&dir) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    other => other?,
                }
            }
            let store = MetadataStore::open_dir(storage.clone(), &old, now_ms, node_id)?;
            let state = (*store.state()).clone();
            store.close()?;
            Ok(Some((state, old)))
        })
        .await
        .map_err(raft_error)?
    }

    /// The applied metadata now.
    pub fn state(&self) -> Arc<MetadataState> {
        self.sm.current().state
    }

    /// Follows the applied metadata.
    pub fn subscribe(&self) -> watch::Receiver<Published> {
        self.sm.subscribe()
    }

    /// Writes one change through the quorum; returns the metadata as of its application.
    /// A change that does not apply any more when its turn comes is refused and changes
    /// nothing.
    /// On a member that does not lead, the change is forwarded to the leader, and this
    /// returns once this member has applied it too.
    pub async fn write(&self, change: Vec<MetadataRecord>) -> Result<Published, QuorumError> {
        let change = Change(change);
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
        let mut leader_peer: Option<(u64, Peer)> = None;
        loop {
            let leader = match self.raft.client_write(change.clone()).await {
                Ok(response) => return self.applied(response.data).await,
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    f.leader_id.zip(f.leader_node)
                }
                Err(e) => return Err(raft_error(e)),
            };
            if let Some((id, node)) = leader {
                let peer = match &mut leader_peer {
                    Some((known, peer)) if *known == id => peer,
                    slot => {
                        let peer = self.transport.peer(self.node_id, node.addr.clone());
                        &mut slot.insert((id, peer)).1
                    }
                };
                let request = Request::Write(change.clone());
                match peer.call(&request, WRITE_TIMEOUT).await {
                    Ok(Response::Written(applied)) => return self.applied(applied).await,
                    Ok(Response::Failed(reason)) => return Err(QuorumError::Raft(reason)),
                    Ok(_) | Err(_) => {} // leadership moved or the leader went away: retry
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(QuorumError::Raft(format!(
                    "no metadata leader took the change within {WRITE_TIMEOUT:?}; check that a majority of the voters are running"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The outcome of an applied entry, once this node applied it too.
    async fn applied(&self, applied: Applied) -> Result<Published, QuorumError> {
        // Refused or not, the change is applied here first: a caller that decides again then
        // decides on the state that refused it (not on an older one, refused again).
        self.raft
            .wait(Some(WRITE_TIMEOUT))
            .applied_index_at_least(Some(applied.index), "the change is applied here")
            .await
            .map_err(raft_error)?;
        if let Some(reason) = applied.refused {
            return Err(QuorumError::Refused(reason));
        }
        Ok(self.sm.current())
    }

    /// Tells the leader that `broker` is alive (noted here when this node leads), waiting at
    /// most `timeout` for its answer: a heartbeat to a leader that stopped answering must not
    /// outlast the session the next leader gives the broker.
    pub async fn heartbeat(&self, broker: i32, timeout: Duration) -> Result<(), QuorumError> {
        if self.raft.is_leader() {
            self.heard.note(broker);
            return Ok(());
        }
        match self
            .ask_leader(&Request::Heartbeat { broker }, timeout)
            .await?
        {
            Response::HeardYou => Ok(()),
            other => Err(QuorumError::Raft(format!(
                "the leader did not take the heartbeat: {other:?}"
            ))),
        }
    }

    /// The quorum as its leader sees it (Kafka's DescribeQuorum): answered here when this
    /// node leads, else asked of the leader.
    pub async fn describe(&self) -> Result<QuorumView, QuorumError> {
        {
            use openraft::async_runtime::WatchReceiver;
            let metrics = self.raft.metrics();
            if let Some(view) = QuorumView::of_leader(&metrics.borrow_watched(), &self.heard) {
                return Ok(view);
            }
        }
        match self
            .ask_leader(&Request::Describe, Duration::from_secs(5))
            .await?
        {
            Response::Described(view) => Ok(view),
            other => Err(QuorumError::Raft(format!(
                "the leader did not describe the quorum: {other:?}"
            ))),
        }
    }

    /// Makes observer `node` a voter (Kafka's AddRaftVoter, KIP-853): `dir` is the data
    /// directory id it replicates with and `address` its controller listener. Decided by the
    /// leader (asked over the controller listener when this node does not lead), once `node`
    /// holds the leader's whole log and no other voter change is in flight; returns once the
    /// new voters are committed, or an error that says what to do (at most `timeout`).
    pub async fn add_voter(
        &self,
        node: u64,
        dir: &str,
        address: &str,
        timeout: Duration,
    ) -> Result<(), VoterError> {
        let request = |timeout: Duration| Request::AddVoter {
            node,
            dir: dir.to_string(),
            address: address.to_string(),
            timeout_ms: timeout.as_millis() as u64,
        };
        self.change_voters(node, true, request, timeout).await
    }

    /// Makes voter `node` (data directory `dir`) an observer (Kafka's RemoveRaftVoter): refused
    /// when fewer of the voters left answer the leader than a majority of them; a leader
    /// removing itself hands its leadership over first. Returns once the change is committed.
    pub async fn remove_voter(
        &self,
        node: u64,
        dir: &str,
        timeout: Duration,
    ) -> Result<(), VoterError> {
        let request = |timeout: Duration| Request::RemoveVoter {
            node,
            dir: dir.to_string(),
            timeout_ms: timeout.as_millis() as u64,
        };
        self.change_voters(node, false, request, timeout).await
    }

    /// Has the leader make a voter change (`node` becoming a voter when `adding`, else an
    /// observer), following leadership as it moves.
    async fn change_voters(
        &self,
        node: u64,
        adding: bool,
        request: impl Fn(Duration) -> Request,
        timeout: Duration,
    ) -> Result<(), VoterError> {
        if matches!(self.transport, Transport::Local) {
            return Err(VoterError::new(
                VoterRefusal::Invalid,
                "this node runs a metadata quorum of one without a controller listener: start it with a controller listener and controller.quorum.voters naming it to change the voters",
            ));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = String::from("no metadata leader is known");
        // An attempt whose outcome is unknown was made (its answer lost).
        let mut tried = false;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let answer = if self.raft.is_leader() {
                // Handled here as the controller listener handles it for another member.
                crate::network::handle(&self.raft, &self.heard, request(left)).await
            } else {
                match self
                    .ask_leader(&request(left), left + Duration::from_secs(1))
                    .await
                {
                    Ok(answer) => answer,
                    Err(e) => Response::Failed(e.to_string()),
                }
            };
            match answer {
                Response::VotersChanged => return Ok(()),
                // Refused as done already, after an attempt whose answer was lost: done if the
                // voters are as asked.
                Response::VoterRefused(e)
                    if tried
                        && matches!(e.kind, VoterRefusal::Duplicate | VoterRefusal::NotFound) =>
                {
                    let voting = self
                        .describe()
                        .await
                        .map(|v| v.voters.iter().any(|r| r.id == node));
                    return match voting {
                        Ok(v) if v == adding => Ok(()),
                        _ => Err(e),
                    };
                }
                Response::VoterRefused(e) => return Err(e),
                Response::Failed(reason) => {
                    tried = true;
                    last = reason;
                }
                Response::NotLeader(_) => {}
                other => last = format!("unexpected answer: {other:?}"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(VoterError::new(
                    VoterRefusal::NotReady,
                    format!(
                        "no metadata leader made the voter change within {timeout:?} ({last}); check that a majority of the voters run"
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends `request` to the leader this node knows of, on a connection of its own.
    async fn ask_leader(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, QuorumError> {
        let leader = {
            use openraft::async_runtime::WatchReceiver;
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            m.current_leader.and_then(|id| {
                m.membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| n.addr.clone())
            })
        };
        let Some(addr) = leader.filter(|a| !a.is_empty()) else {
            return Err(QuorumError::Raft("no metadata leader is known".into()));
        };
        // One connection kept to the leader (heartbeats every few seconds reuse it), taken
        // out while in use: calls side by side open their own, and a call abandoned midway
        // never leaves a half-read connection behind.
        let kept = self
            .leader_link
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .filter(|peer| peer.addr() == addr);
        let was_kept = kept.is_some();
        let mut peer = kept.unwrap_or_else(|| self.transport.peer(self.node_id, addr));
        let mut answer = peer.call(request, timeout).await;
        // A kept connection the leader closed (it restarted at the same address): once more on
        // a new one (the failed call dropped the old).
        if was_kept
            && let Err(e) = &answer
            && matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::UnexpectedEof
            )
        {
            answer = peer.call(request, timeout).await;
        }
        if answer.is_ok() {
            *self.leader_link.lock().unwrap_or_else(|p| p.into_inner()) = Some(peer);
        }
        answer.map_err(|e| QuorumError::Raft(format!("the metadata leader: {e}")))
    }

    /// The heartbeat sessions, when this node leads (started afresh when it became leader).
    pub fn sessions(&self) -> Option<Sessions> {
        let term = {
            use openraft::async_runtime::WatchReceiver;
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            m.state.is_leader().then_some(m.current_term)
        };
        let mut inner = self.heard.0.lock().unwrap_or_else(|p| p.into_inner());
        // A new term (leadership lost and won again between two calls included) starts the
        // sessions afresh: what was heard under an earlier term says nothing of the brokers
        // that heartbeated to another leader meanwhile, and must not fence them early.
        if term.is_none() || inner.term != term {
            inner.since = None;
            inner.last.clear();
            inner.term = term;
        }
        term?;
        let since = *inner.since.get_or_insert_with(std::time::Instant::now);
        Some(Sessions {
            since,
            last: inner.last.clone(),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<u64> {
        use openraft::async_runtime::WatchReceiver;
        self.raft.metrics().borrow_watched().current_leader
    }

    /// A leader about to stop hands its leadership to the voter that holds most of its log
    /// (Raft's leadership transfer: that voter campaigns at once, the others stop honouring
    /// this leader's lease) and waits, at most `timeout`, until another leader is known, so
    /// that the quorum goes without a leader for a round trip instead of an election timeout
    /// and a lease. Returns the new leader; `None` on a follower, a quorum of one, or a
    /// transfer that did not happen in time (the others then elect one by themselves).
    /// This node proposes nothing more once it has begun: call it just before stopping.
    pub async fn hand_over_leadership(&self, timeout: Duration) -> Option<u64> {
        let to = {
            use openraft::async_runtime::WatchReceiver;
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            if m.current_leader != Some(self.node_id) {
                return None;
            }
            let replication = m.replication.as_ref()?;
            // Only a voter that answered the last few heartbeats can take over (the last of
            // a stopping cluster has no one to hand to: it stops at once).
            let recent =
                std::time::Duration::from_millis(3 * self.raft.config().heartbeat_interval);
            let now = <InstantOf<TypeConfig> as openraft::Instant>::now();
            let answered = |id: &u64| {
                m.heartbeat
                    .as_ref()
                    .and_then(|h| h.get(id).cloned().flatten())
                    .is_some_and(|t| {
                        openraft::Instant::saturating_duration_since(&now, *t) < recent
                    })
            };
            m.membership_config
                .membership()
                .voter_ids()
                .filter(|&id| id != self.node_id)
                .filter(answered)
                .max_by_key(|id| replication.get(id).cloned().flatten().map(|l| l.index))?
        };
        if let Err(e) = self.raft.trigger().transfer_leader(to).await {
            tracing::warn!(error = %e, "could not hand the metadata leadership over");
            return None;
        }
        let me = self.node_id;
        let handed = self
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != me),
                "another metadata leader",
            )
            .await;
        match handed {
            Ok(m) => {
                tracing::info!(to = m.current_leader, "handed the metadata leadership over");
                m.current_leader
            }
            Err(_) => {
                tracing::warn!(
                    to,
                    "the metadata leadership was not taken over in {timeout:?}; the other voters elect a leader by themselves"
                );
                None
            }
        }
    }

    /// Stops the Raft node and closes the log (a clean shutdown).
    pub async fn shutdown(&self) -> Result<(), QuorumError> {
        if let Some(task) = &self.listener {
            task.abort();
        }
        self.progress.abort();
        self.transport.leave(self.node_id);
        self.raft.shutdown().await.map_err(raft_error)?;
        Ok(self.log.close()?)
    }
}
