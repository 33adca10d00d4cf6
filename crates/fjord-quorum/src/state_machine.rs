//! The Raft state machine: `fjord-meta`'s state, one entry per metadata change.
//!
//! A change that does not apply to the state (it was decided against an older one) is
//! refused the same way on every node and changes nothing. The state lives in memory; a
//! snapshot holds it as records (`MetadataState::to_records`) in [`SNAPSHOT_FILE`], written
//! atomically, from which the state is rebuilt on open; openraft re-applies the committed
//! entries after it. Every applied batch of entries is published on a watch channel, which the
//! broker follows.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fjord_log::Storage;
use fjord_meta::MetadataState;
use futures_util::{Stream, StreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StoredMembership};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{Applied, Change, TypeConfig};

/// The snapshot file in the metadata directory.
pub const SNAPSHOT_FILE: &str = "metadata.snapshot";

type LogId = LogIdOf<TypeConfig>;
type Meta = SnapshotMetaOf<TypeConfig>;
type Membership = StoredMembershipOf<TypeConfig>;

/// The metadata as of an applied log index.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// The last applied entry's index (`None`: nothing applied yet).
    pub index: Option<u64>,
    pub state: Arc<MetadataState>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    meta: Meta,
    data: Change,
}

#[derive(Debug)]
struct Inner {
    state: Arc<MetadataState>,
    last_applied: Option<LogId>,
    membership: Membership,
    /// The current snapshot: its meta and data (the records, JSON).
    snapshot: Option<(Meta, Vec<u8>)>,
}

#[derive(Debug)]
struct Shared {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    inner: Mutex<Inner>,
    published: watch::Sender<Published>,
}

/// The state machine (and, cloned, its snapshot builder).
#[derive(Debug, Clone)]
pub struct StateMachine(Arc<Shared>);

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn state_of(change: &Change) -> io::Result<MetadataState> {
    let mut state = MetadataState::default();
    state
        .apply_all(&change.0)
        .map_err(|e| other(format!("a snapshot's records do not apply: {e}")))?;
    Ok(state)
}

impl StateMachine {
    /// Opens the state machine over `dir`: the state of its snapshot, if it has one. Blocking.
    pub fn open(storage: Arc<dyn Storage>, dir: &Path) -> io::Result<Self> {
        let path = dir.join(SNAPSHOT_FILE);
        let mut inner = Inner {
            state: Arc::default(),
            last_applied: None,
            membership: StoredMembership::default(),
            snapshot: None,
        };
        if storage.exists(&path)? {
            let file = storage.open(&path, false)?;
            let mut bytes = vec![0; file.len()? as usize];
            file.read_exact_at(&mut bytes, 0)?;
            let snap: SnapshotFile = serde_json::from_slice(&bytes)
                .map_err(|e| other(format!("{}: {e}", path.display())))?;
            inner.state = Arc::new(state_of(&snap.data)?);
            inner.last_applied = snap.meta.last_log_id;
            inner.membership = snap.meta.last_membership.clone();
            let data = serde_json::to_vec(&snap.data).map_err(other)?;
            inner.snapshot = Some((snap.meta, data));
        }
        let (published, _) = watch::channel(Published {
            index: inner.last_applied.map(|l| l.index),
            state: inner.state.clone(),
        });
        Ok(Self(Arc::new(Shared {
            storage,
            dir: dir.to_path_buf(),
            inner: Mutex::new(inner),
            published,
        })))
    }

    /// Follows the applied state.
    pub fn subscribe(&self) -> watch::Receiver<Published> {
        self.0.published.subscribe()
    }

    /// The applied state now.
    pub fn current(&self) -> Published {
        self.0.published.borrow().clone()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes a snapshot file, durably.
    async fn store(&self, meta: Meta, data: Vec<u8>) -> io::Result<()> {
        let shared = self.0.clone();
        crate::runtime::blocking(move || {
            let change: Change = serde_json::from_slice(&data).map_err(other)?;
            let bytes = serde_json::to_vec(&SnapshotFile { meta, data: change }).map_err(other)?;
            fjord_log::storage::write_atomic(&*shared.storage, &shared.dir, SNAPSHOT_FILE, &bytes)
                .map_err(other)
        })
        .await
    }

    fn publish(&self, inner: &Inner) {
        self.0.published.send_replace(Published {
            index: inner.last_applied.map(|l| l.index),
            state: inner.state.clone(),
        });
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        let (meta, data) = {
            let inner = self.inner();
            let meta = Meta {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
            };
            let data = serde_json::to_vec(&Change(inner.state.to_records())).map_err(other)?;
            (meta, data)
        };
        self.store(meta.clone(), data.clone()).await?;
        self.inner().snapshot = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<TypeConfig, Vec<u8>> {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), io::Error> {
        let inner = self.inner();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let log_id = entry.log_id();
            let refused = {
                let mut inner = self.inner();
                let refused = match &entry.payload {
                    EntryPayload::Blank => None,
                    EntryPayload::Normal(change) => {
                        let mut next = (*inner.state).clone();
                        match next.apply_all(&change.0) {
                            Ok(()) => {
                                inner.state = Arc::new(next);
                                None
                            }
                            Err(e) => {
                                tracing::warn!(index = log_id.index, error = %e, "a metadata change no longer applies; skipped");
                                Some(e.to_string())
                            }
                        }
                    }
                    EntryPayload::Membership(m) => {
                        inner.membership = StoredMembership::new(Some(log_id), m.clone());
                        None
                    }
                };
                inner.last_applied = Some(log_id);
                self.publish(&inner);
                refused
            };
            if let Some(responder) = responder {
                responder.send(Applied {
                    index: log_id.index,
                    refused,
                });
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: Vec<u8>) -> Result<(), io::Error> {
        let change: Change = serde_json::from_slice(&snapshot).map_err(other)?;
        let state = state_of(&change)?;
        self.store(meta.clone(), snapshot.clone()).await?;
        let mut inner = self.inner();
        inner.state = Arc::new(state);
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), snapshot));
        self.publish(&inner);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Vec<u8>>>, io::Error> {
        Ok(self
            .inner()
            .snapshot
            .clone()
            .map(|(meta, data)| SnapshotOf::<TypeConfig, Vec<u8>> {
                meta,
                snapshot: data,
            }))
    }
}
