//! The quorum as the broker uses it: open (or create, or convert) the metadata log, write a
//! change through Raft, follow the applied state.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fjord_log::Storage;
use fjord_meta::{MetadataRecord, MetadataState, MetadataStore};
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::VoteResponse;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest};
use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, Config, Raft, RaftNetworkFactory, RaftNetworkV2};
use thiserror::Error;
use tokio::sync::watch;

use crate::{Change, LogStore, Published, StateMachine, TypeConfig};

/// How long start-up waits for this node to lead its one-member quorum and recover.
const START_TIMEOUT: Duration = Duration::from_secs(30);

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

    async fn new_client(&mut self, _target: u64, _node: &BasicNode) -> NoPeers {
        NoPeers
    }
}

/// The metadata quorum of this node.
#[derive(Clone)]
pub struct Quorum {
    raft: Raft<TypeConfig, StateMachine>,
    sm: StateMachine,
    log: LogStore,
}

impl std::fmt::Debug for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quorum")
            .field("node_id", self.raft.node_id())
            .field("applied", &self.sm.current().index)
            .finish()
    }
}

/// The name a directory being converted from an earlier version's format takes meanwhile.
fn converting(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".converting");
    dir.with_file_name(name)
}

impl Quorum {
    /// Opens this node's metadata as a one-member quorum in `dir` (`__cluster_metadata-0`
    /// under the data directory): created on first start, recovered after a crash, and
    /// converted once from an earlier Fjord version's log (whose topics `legacy_node` holds).
    /// Returns once this node leads and has applied everything committed before.
    pub async fn open_single(
        storage: Arc<dyn Storage>,
        dir: &Path,
        node_id: i32,
        now_ms: i64,
    ) -> Result<Self, QuorumError> {
        let legacy = Self::take_legacy(&storage, dir, node_id, now_ms).await?;
        let node = node_id as u64;
        let (log, sm) = {
            let (storage, dir) = (storage.clone(), dir.to_path_buf());
            tokio::task::spawn_blocking(move || {
                let log = LogStore::open(storage.clone(), &dir, now_ms)?;
                let sm = StateMachine::open(storage, &dir)?;
                Ok::<_, std::io::Error>((log, sm))
            })
            .await
            .map_err(raft_error)??
        };
        let config = Config {
            cluster_name: "fjord-metadata".into(),
            ..Config::default()
        }
        .validate()
        .map_err(raft_error)?;
        let mut fresh_log = log.clone();
        let fresh =
            fresh_log.get_log_state().await?.last_log_id.is_none() && sm.current().index.is_none();
        let raft = Raft::new(node, Arc::new(config), NoPeers, log.clone(), sm.clone())
            .await
            .map_err(raft_error)?;
        if fresh {
            let members = BTreeMap::from([(node, BasicNode::default())]);
            raft.initialize(members).await.map_err(raft_error)?;
        }
        raft.wait(Some(START_TIMEOUT))
            .current_leader(node, "this node leads its one-member quorum")
            .await
            .map_err(raft_error)?;
        raft.wait_for_recovery(Some(START_TIMEOUT))
            .await
            .map_err(raft_error)?;
        let quorum = Self { raft, sm, log };
        if let Some((state, old)) = legacy {
            let records = state.to_records();
            let n = records.len();
            quorum.write(records).await?;
            let old_dir = old.clone();
            tokio::task::spawn_blocking(move || storage.remove_dir_all(&old_dir))
                .await
                .map_err(raft_error)??;
            tracing::info!(
                records = n,
                "converted the metadata log of an earlier Fjord version"
            );
        }
        Ok(quorum)
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
        tokio::task::spawn_blocking(move || {
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
    pub async fn write(&self, change: Vec<MetadataRecord>) -> Result<Published, QuorumError> {
        let response = self
            .raft
            .client_write(Change(change))
            .await
            .map_err(raft_error)?;
        if let Some(reason) = response.data.refused {
            return Err(QuorumError::Refused(reason));
        }
        let published = self.sm.current();
        debug_assert!(published.index >= Some(response.log_id.index));
        Ok(published)
    }

    /// Stops the Raft node and closes the log (a clean shutdown).
    pub async fn shutdown(&self) -> Result<(), QuorumError> {
        self.raft.shutdown().await.map_err(raft_error)?;
        Ok(self.log.close()?)
    }
}
