//! A simulated network for deterministic tests of the quorum: the members' Raft RPCs and the
//! requests they forward to the leader (writes, heartbeats, joins, DescribeQuorum) go through
//! one [`SimNet`] instead of TCP, as the same messages (each one serialized and read back, as
//! on the wire) handled by the same code as the controller listener's. From a seed it drops
//! and delays messages and cuts links; with [`crate::runtime::deterministic`] on a
//! current-thread Tokio runtime with paused time, a seed gives the same faults, and in a
//! `--cfg tokio_unstable` build with the runtime's own seed set (Tokio picks which of a watch
//! channel's waiters wakes first at random) the same run.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{Raft, RaftNetworkFactory};

use crate::network::{Peer, Request, Response};
use crate::quorum::Heard;
use crate::{StateMachine, TypeConfig};

/// What one member answers with.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub raft: Raft<TypeConfig, StateMachine>,
    pub heard: Heard,
}

/// The network between simulated members (cheap to clone: one network).
#[derive(Clone)]
pub struct SimNet(Arc<Mutex<Inner>>);

impl std::fmt::Debug for SimNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("SimNet")
            .field("nodes", &inner.nodes.keys().collect::<Vec<_>>())
            .field("delivered", &inner.delivered)
            .field("lost", &inner.lost)
            .finish()
    }
}

struct Inner {
    nodes: BTreeMap<u64, Endpoint>,
    rng: fjord_log::sim::XorShift,
    /// Per mille of messages (each way) lost.
    loss_per_mille: u64,
    /// Messages wait up to this long each way.
    max_delay_ms: u64,
    /// Links that carry nothing, one way: (from, to).
    cut: BTreeSet<(u64, u64)>,
    delivered: u64,
    lost: u64,
}

/// How one message fares.
struct Fate {
    delay: Duration,
    lost: bool,
}

impl SimNet {
    /// A network that delivers everything at once until told otherwise.
    pub fn new(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(Inner {
            nodes: BTreeMap::new(),
            rng: fjord_log::sim::XorShift::new(seed),
            loss_per_mille: 0,
            max_delay_ms: 0,
            cut: BTreeSet::new(),
            delivered: 0,
            lost: 0,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The address a simulated member `id` is known by.
    pub fn address(id: u64) -> String {
        format!("sim:{id}")
    }

    /// Loses `loss_per_mille` of the messages each way and delays each by up to
    /// `max_delay_ms`.
    pub fn set_faults(&self, loss_per_mille: u64, max_delay_ms: u64) {
        let mut inner = self.lock();
        inner.loss_per_mille = loss_per_mille.min(1000);
        inner.max_delay_ms = max_delay_ms;
    }

    /// Cuts every link to and from `node`.
    pub fn isolate(&self, node: u64, members: impl IntoIterator<Item = u64>) {
        let mut inner = self.lock();
        for other in members {
            if other != node {
                inner.cut.insert((node, other));
                inner.cut.insert((other, node));
            }
        }
    }

    /// Cuts the link from `from` to `to` only.
    pub fn cut(&self, from: u64, to: u64) {
        self.lock().cut.insert((from, to));
    }

    /// Restores every link (faults set by [`SimNet::set_faults`] stay).
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    /// Messages delivered and lost so far.
    pub fn counts(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.delivered, inner.lost)
    }

    pub(crate) fn register(&self, id: u64, endpoint: Endpoint) {
        self.lock().nodes.insert(id, endpoint);
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.lock().nodes.remove(&id);
    }

    fn fate(&self, from: u64, to: u64) -> Fate {
        let mut inner = self.lock();
        let roll = inner.rng.next_u64() % 1000;
        let delay = match inner.max_delay_ms {
            0 => 0,
            max => inner.rng.next_u64() % (max + 1),
        };
        let lost = inner.cut.contains(&(from, to)) || roll < inner.loss_per_mille;
        if lost {
            inner.lost += 1;
        } else {
            inner.delivered += 1;
        }
        Fate {
            delay: Duration::from_millis(delay),
            lost,
        }
    }

    /// Carries `request` from member `from` to the member at `addr` and its answer back,
    /// within `ttl`; a lost message is a timeout, a stopped member a refused connection.
    pub(crate) async fn call(
        &self,
        from: u64,
        addr: &str,
        request: &Request,
        ttl: Duration,
    ) -> io::Result<Response> {
        let to: u64 = addr
            .strip_prefix("sim:")
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| io::Error::other(format!("{addr:?} is not a simulated address")))?;
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "no answer in time");
        let outcome = tokio::time::timeout(ttl, async {
            let there = self.fate(from, to);
            tokio::time::sleep(there.delay).await;
            if there.lost {
                return std::future::pending().await;
            }
            let endpoint = self.lock().nodes.get(&to).cloned().ok_or_else(|| {
                io::Error::new(io::ErrorKind::ConnectionRefused, "the member is stopped")
            })?;
            // As on the wire: the receiver reads its own copy of the bytes, and handles it to
            // the end even when the sender stops waiting (a task of its own).
            let bytes = serde_json::to_vec(request).map_err(io::Error::other)?;
            let request: Request = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
            let handled = tokio::spawn(async move {
                crate::network::handle(&endpoint.raft, &endpoint.heard, request).await
            });
            let response = handled.await.map_err(io::Error::other)?;
            let back = self.fate(to, from);
            tokio::time::sleep(back.delay).await;
            if back.lost {
                return std::future::pending().await;
            }
            let bytes = serde_json::to_vec(&response).map_err(io::Error::other)?;
            serde_json::from_slice(&bytes).map_err(io::Error::other)
        })
        .await;
        outcome.unwrap_or_else(|_| Err(timed_out()))
    }
}

/// The Raft network of member `from` over a [`SimNet`].
#[derive(Debug, Clone)]
pub(crate) struct SimNetwork {
    pub net: SimNet,
    pub from: u64,
}

impl RaftNetworkFactory<TypeConfig> for SimNetwork {
    type Network = Peer;

    async fn new_client(&mut self, _target: u64, node: &crate::Member) -> Peer {
        Peer::sim(node.addr.clone(), self.net.clone(), self.from)
    }
}
