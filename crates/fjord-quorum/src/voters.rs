//! Voters added and removed online (KIP-853's AddRaftVoter / RemoveRaftVoter), decided on the
//! leader: one change at a time, each an openraft membership change (joint consensus, then the
//! new voters alone). A voter is added only from an observer that holds the leader's whole log,
//! with the data directory id it replicates with (recorded in the membership, so that every
//! member refuses it with another disk); a removed voter stays an observer. A removal that
//! would leave fewer live voters than a majority of those left is refused, and a leader asked
//! to remove itself hands its leadership over first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::alias::InstantOf;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Raft};
use serde::{Deserialize, Serialize};

use crate::network::Response;
use crate::quorum::Heard;
use crate::{Member, StateMachine, TypeConfig};

/// How recently an observer must have held the leader's whole log to be added (Kafka's default
/// fetch timeout).
const CAUGHT_UP: Duration = Duration::from_secs(2);

/// A member counts as live when it answered the leader's last few heartbeats (this many
/// intervals): strict, since a removal counted on a member just stopped would leave the quorum
/// unable to commit.
const LIVE_HEARTBEATS: u64 = 5;

/// How long a leader asked to remove itself waits for another to take over.
const HAND_OVER: Duration = Duration::from_secs(3);

/// Why a voter change was refused, as Kafka's error codes tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoterRefusal {
    /// The node is a voter already (DUPLICATE_VOTER).
    Duplicate,
    /// The node is not a voter, or not with that directory id (VOTER_NOT_FOUND).
    NotFound,
    /// Not now: another change in flight, the node not caught up, no leader in time
    /// (REQUEST_TIMED_OUT).
    NotReady,
    /// A change that cannot be made as asked (INVALID_REQUEST).
    Invalid,
}

/// A refused voter change, with what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct VoterError {
    pub kind: VoterRefusal,
    pub message: String,
}

impl VoterError {
    pub(crate) fn new(kind: VoterRefusal, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

fn refused(kind: VoterRefusal, message: String) -> Response {
    Response::VoterRefused(VoterError::new(kind, message))
}

fn show(ids: &BTreeSet<u64>) -> String {
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    format!("{{{}}}", ids.join(", "))
}

/// The membership as the leader sees it now.
struct Leading {
    me: u64,
    membership: openraft::Membership<u64, Member>,
    voters: BTreeSet<u64>,
    /// A voter change not committed yet (or a joint config left by a leader that stopped
    /// midway, which is finished first).
    pending: bool,
    /// Members that answered the last [`LIVE_HEARTBEATS`] heartbeats, and the leader.
    live: BTreeSet<u64>,
    /// How far the leader knows each member holds its log.
    matched: BTreeMap<u64, Option<u64>>,
    last_log_index: Option<u64>,
}

fn leading(raft: &Raft<TypeConfig, StateMachine>) -> Option<Leading> {
    let metrics = raft.metrics();
    let m = metrics.borrow_watched();
    if !m.state.is_leader() {
        return None;
    }
    let membership = m.membership_config.membership().clone();
    let pending = membership.get_joint_config().len() > 1
        || m.membership_config.log_id() != m.committed_membership_config.log_id();
    let now = <InstantOf<TypeConfig> as openraft::Instant>::now();
    let live_window = Duration::from_millis(LIVE_HEARTBEATS * raft.config().heartbeat_interval);
    let live = membership
        .nodes()
        .map(|(id, _)| *id)
        .filter(|id| {
            *id == m.id
                || m.heartbeat
                    .as_ref()
                    .and_then(|h| h.get(id).cloned().flatten())
                    .is_some_and(|t| {
                        openraft::Instant::saturating_duration_since(&now, *t) < live_window
                    })
        })
        .collect();
    let matched = m
        .replication
        .as_ref()
        .map(|r| {
            r.iter()
                .map(|(id, l)| (*id, l.as_ref().map(|l| l.index)))
                .collect()
        })
        .unwrap_or_default();
    Some(Leading {
        me: m.id,
        voters: membership.voter_ids().collect(),
        membership,
        pending,
        live,
        matched,
        last_log_index: m.last_log_index,
    })
}

async fn not_leader(raft: &Raft<TypeConfig, StateMachine>) -> Response {
    Response::NotLeader(raft.current_leader().await)
}

fn pending_refusal(l: &Leading) -> Response {
    refused(
        VoterRefusal::NotReady,
        format!(
            "the previous voter change (voters now {}) is not committed yet; try again in a moment",
            show(&l.voters)
        ),
    )
}

/// The leader's side of adding `node` (an observer at `address`, data directory `dir`).
pub(crate) async fn add(
    raft: &Raft<TypeConfig, StateMachine>,
    heard: &Heard,
    node: u64,
    dir: &str,
    address: &str,
    timeout: Duration,
) -> Response {
    let Some(l) = leading(raft) else {
        return not_leader(raft).await;
    };
    if l.pending {
        return pending_refusal(&l);
    }
    if l.voters.contains(&node) {
        return refused(
            VoterRefusal::Duplicate,
            format!(
                "node {node} is already a voter (voters {})",
                show(&l.voters)
            ),
        );
    }
    let Some(member) = l.membership.get_node(&node).cloned() else {
        return refused(
            VoterRefusal::NotReady,
            format!(
                "node {node} is not an observer of the metadata quorum: start it with the current voters ({}) in controller.quorum.voters and a controller listener (it joins as an observer and catches up), then add it",
                show(&l.voters)
            ),
        );
    };
    if member.addr != address {
        return refused(
            VoterRefusal::Invalid,
            format!(
                "observer {node} replicates the metadata at its controller listener {}, not at {address}: add it with that address",
                member.addr
            ),
        );
    }
    match heard.dir(node) {
        Some(seen) if seen == dir => {}
        Some(seen) => {
            return refused(
                VoterRefusal::NotReady,
                format!(
                    "observer {node} replicates with data directory id {seen}, not {dir} (the directory.id in its meta.properties)"
                ),
            );
        }
        None => {
            return refused(
                VoterRefusal::NotReady,
                format!(
                    "the leader has not heard from observer {node} yet; try again once it has caught up"
                ),
            );
        }
    }
    let caught_up = heard.caught_up(node).is_some_and(|t| {
        let now = <InstantOf<TypeConfig> as openraft::Instant>::now();
        openraft::Instant::saturating_duration_since(&now, t) < CAUGHT_UP
    });
    if !caught_up {
        let at = l.matched.get(&node).copied().flatten();
        return refused(
            VoterRefusal::NotReady,
            format!(
                "observer {node} is behind the leader's metadata log (it holds up to {}, the leader {}): wait until it has caught up, then add it",
                at.map_or("nothing".into(), |i| i.to_string()),
                l.last_log_index.map_or("nothing".into(), |i| i.to_string()),
            ),
        );
    }
    let with_dir = Member {
        addr: member.addr.clone(),
        dir: Some(dir.to_string()),
    };
    let raft = raft.clone();
    let change = async move {
        if member != with_dir {
            let nodes = BTreeMap::from([(node, with_dir)]);
            raft.change_membership(ChangeMembers::SetNodes(nodes), true)
                .await?;
        }
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node])), true)
            .await
    };
    let answer = run_change(change, timeout).await;
    if matches!(answer, Response::VotersChanged) {
        tracing::info!(node, "added a voter to the metadata quorum");
    }
    answer
}

/// The leader's side of removing voter `node` (data directory `dir`): it stays an observer.
pub(crate) async fn remove(
    raft: &Raft<TypeConfig, StateMachine>,
    heard: &Heard,
    node: u64,
    dir: &str,
    timeout: Duration,
) -> Response {
    let Some(l) = leading(raft) else {
        return not_leader(raft).await;
    };
    if l.pending {
        return pending_refusal(&l);
    }
    if !l.voters.contains(&node) {
        return refused(
            VoterRefusal::NotFound,
            format!("node {node} is not a voter (voters {})", show(&l.voters)),
        );
    }
    let known = l
        .membership
        .get_node(&node)
        .and_then(|m| m.dir.clone())
        .or_else(|| heard.dir(node));
    if let Some(known) = known
        && known != dir
    {
        return refused(
            VoterRefusal::NotFound,
            format!("voter {node} has data directory id {known}, not {dir}"),
        );
    }
    let left: BTreeSet<u64> = l.voters.iter().copied().filter(|&v| v != node).collect();
    if left.is_empty() {
        // Kafka's code for it (its voter set cannot lose its last voter).
        return refused(
            VoterRefusal::NotFound,
            format!(
                "node {node} is the only voter: add another voter first (`fjord cluster add-voter`)"
            ),
        );
    }
    let live: BTreeSet<u64> = left.intersection(&l.live).copied().collect();
    let need = left.len() / 2 + 1;
    let window = Duration::from_millis(LIVE_HEARTBEATS * raft.config().heartbeat_interval);
    if live.len() < need && heard.led_for().is_none_or(|t| t < window) {
        // Elected a moment ago: it has not heard every voter's answer yet.
        return refused(
            VoterRefusal::NotReady,
            "the quorum's leader was elected a moment ago and has not heard from every voter yet; try again".into(),
        );
    }
    if live.len() < need {
        let down: BTreeSet<u64> = left.difference(&live).copied().collect();
        return refused(
            VoterRefusal::Invalid,
            format!(
                "removing voter {node} would leave voters {} of which only {} answer the leader, fewer than the {need} that must agree on every change: start voters {} again, or remove them first",
                show(&left),
                show(&live),
                show(&down)
            ),
        );
    }
    if node == l.me {
        // A leader leaves the voters only after handing over: the one that takes over removes
        // it (asked again by the caller), and the quorum never waits out an election.
        let Some(to) = live
            .iter()
            .copied()
            .max_by_key(|id| l.matched.get(id).copied().flatten())
        else {
            return pending_refusal(&l);
        };
        if let Err(e) = raft.trigger().transfer_leader(to).await {
            return Response::Failed(format!("handing the leadership over to {to}: {e}"));
        }
        let me = l.me;
        let handed = raft
            .wait(Some(HAND_OVER))
            .metrics(
                |m| m.current_leader.is_some_and(|x| x != me),
                "another metadata leader",
            )
            .await;
        return Response::NotLeader(handed.ok().and_then(|m| m.current_leader));
    }
    let raft = raft.clone();
    let change = async move {
        raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([node])), true)
            .await
    };
    let answer = run_change(change, timeout).await;
    if matches!(answer, Response::VotersChanged) {
        tracing::info!(node, "removed a voter from the metadata quorum");
    }
    answer
}

type Changed = Result<
    openraft::raft::ClientWriteResponse<TypeConfig>,
    RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
>;

/// Runs a voter change as a task of its own, waiting at most `timeout` for it: openraft makes
/// the change's second step (the new voters alone) inside the future that asked for it, so a
/// caller that stops waiting must not be the one running it (the quorum would stay in its
/// joint config).
async fn run_change(
    change: impl std::future::Future<Output = Changed> + Send + 'static,
    timeout: Duration,
) -> Response {
    let task = tokio::spawn(change);
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(Ok(_))) => Response::VotersChanged,
        Ok(Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))))) => {
            Response::NotLeader(f.leader_id)
        }
        Ok(Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))))) => match e {
            ChangeMembershipError::InProgress(_) => refused(
                VoterRefusal::NotReady,
                "another voter change is in progress; try again in a moment".into(),
            ),
            other => refused(VoterRefusal::Invalid, other.to_string()),
        },
        Ok(Ok(Err(e))) => Response::Failed(e.to_string()),
        Ok(Err(e)) => Response::Failed(format!("the voter change stopped: {e}")),
        Err(_) => refused(
            VoterRefusal::NotReady,
            format!(
                "the voter change was not committed within {timeout:?}; it goes on: check the voters with `fjord cluster info`"
            ),
        ),
    }
}

/// A leader that finds a joint membership (one left by a leader that stopped between the two
/// steps of a change) finishes it: the voters become those of its last config.
/// Returns whether nothing is left to finish (as far as this node, still leading, knows).
pub(crate) async fn finish_joint(raft: &Raft<TypeConfig, StateMachine>) -> bool {
    let Some(l) = leading(raft) else {
        return true;
    };
    let configs = l.membership.get_joint_config();
    let (Some(last), true) = (configs.last(), configs.len() > 1) else {
        return true;
    };
    let target = last.clone();
    if !target.contains(&l.me) {
        // This leader is a voter the change removes: a voter it keeps takes over and
        // finishes it (a learner must not go on leading).
        let to = target
            .iter()
            .copied()
            .filter(|id| l.live.contains(id))
            .max_by_key(|id| l.matched.get(id).copied().flatten());
        if let Some(to) = to
            && let Err(e) = raft.trigger().transfer_leader(to).await
        {
            tracing::warn!(error = %e, "could not hand the metadata leadership over");
        }
        return false;
    }
    let raft = raft.clone();
    let voters = target.clone();
    let change = async move {
        raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), true)
            .await
    };
    match run_change(change, Duration::from_secs(10)).await {
        Response::VotersChanged => {
            tracing::info!(
                voters = show(&target),
                "finished a voter change an earlier leader left halfway"
            );
            true
        }
        other => {
            tracing::warn!(answer = ?other, "could not finish a voter change left halfway yet");
            false
        }
    }
}
