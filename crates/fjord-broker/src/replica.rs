//! One partition's replication state on this broker (the leader side of Kafka's ISR protocol):
//! whether this broker leads it, the in-sync replicas the metadata gives, each follower's
//! progress as its fetches report it, and the high watermark that follows from them.
//!
//! The high watermark is the smallest offset every in-sync replica has made durable: the
//! leader's own committable offset (fsynced, unless the topic's flush policy defers fsyncs)
//! and each in-sync follower's fetch offset (a follower fsyncs what it appended before it
//! fetches past it). While an ISR change is in flight the set counted is the larger of the
//! two (Kafka's "maximal ISR"), so the high watermark never covers an offset some member of
//! either set lacks. With fewer in-sync replicas than `min.insync.replicas` it does not move
//! (Kafka 4's rule).

use std::collections::HashMap;
use std::sync::Arc;

use fjord_log::LogError;
use fjord_meta::{PartitionMeta, TopicId};
use fjord_quorum::QuorumError;
use thiserror::Error;

use crate::broker::{Broker, Partition};
use crate::errors;

/// Why a write was not committed.
#[derive(Debug, Error)]
pub enum CommitError {
    #[error(transparent)]
    Log(#[from] LogError),
    /// This broker stopped leading the partition (or never did) while the write waited.
    #[error("this broker does not lead the partition (any more)")]
    NotLeader,
    /// The in-sync replicas did not all take it in time.
    #[error("the in-sync replicas did not take the write within {0:?}")]
    TimedOut(std::time::Duration),
}

impl CommitError {
    /// The Kafka error code a client gets.
    pub fn code(&self) -> i16 {
        match self {
            Self::Log(e) => errors::from_log_error(e),
            Self::NotLeader => errors::NOT_LEADER_OR_FOLLOWER,
            Self::TimedOut(_) => errors::REQUEST_TIMED_OUT,
        }
    }
}

/// What a follower's fetches have told the leader.
#[derive(Debug, Clone, Copy)]
struct Follower {
    /// The offset it fetched from: everything below is in its log, fsynced.
    end_offset: i64,
    /// When it was last caught up with the leader's log end (Kafka's `lastCaughtUpTimeMs`).
    caught_up_ms: i64,
    /// The leader's log end offset at its previous fetch, and when that was.
    last_fetch_leader_end: i64,
    last_fetch_ms: i64,
}

/// What a committed-offset watcher sees: the high watermark, and the leader epoch this broker
/// leads the partition in (-1: it does not lead it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub high_watermark: i64,
    pub leading_epoch: i32,
}

/// A change of the in-sync replicas the leader asks the controller for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrRequest {
    pub topic_id: TopicId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// What this broker is for a partition after the metadata changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Leads it (newly, or in a new epoch: followers start unknown).
    Leader,
    /// Follows `leader` in `leader_epoch` (-1: no leader now).
    Follower { leader: i32, leader_epoch: i32 },
}

/// The pause before an ISR change the controller refused is asked for again, and between
/// attempts to write one whose outcome is unknown.
const ISR_RETRY_MS: i64 = 1_000;

/// A partition's replication state.
#[derive(Debug)]
pub struct ReplicaState {
    node: i32,
    pub topic_id: TopicId,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// An ISR change sent to the controller and not yet in the metadata.
    pending: Option<Vec<i32>>,
    followers: HashMap<i32, Follower>,
    /// Everything below this is committable on this broker (durable as the flush policy asks).
    local: i64,
    /// The log end offset when this broker began leading in this epoch; a follower must reach
    /// it to join the ISR (Kafka's leader epoch start offset).
    epoch_start: i64,
    /// When this broker began leading in this epoch: followers not heard from since are
    /// given a whole lag period from then.
    lead_started_ms: i64,
    /// No ISR expansion is asked for before this (after one was refused).
    retry_after_ms: i64,
}

impl ReplicaState {
    /// A partition this broker holds, before the metadata has said what it is for it: a leader
    /// of one in-sync replica, itself (what a single node is).
    pub fn new(node: i32, local: i64) -> Self {
        Self {
            node,
            topic_id: TopicId::ZERO,
            leader: node,
            leader_epoch: 0,
            partition_epoch: 0,
            replicas: vec![node],
            isr: vec![node],
            pending: None,
            followers: HashMap::new(),
            local,
            epoch_start: local,
            lead_started_ms: 0,
            retry_after_ms: 0,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.leader == self.node
    }

    /// Takes the metadata's view of the partition; returns the role when it changed (a new
    /// leader or leader epoch).
    pub fn update(
        &mut self,
        topic_id: TopicId,
        meta: &PartitionMeta,
        log_end: i64,
        durable: i64,
        now: i64,
    ) -> Option<Role> {
        let new_term = meta.leader != self.leader
            || meta.leader_epoch != self.leader_epoch
            || topic_id != self.topic_id;
        self.topic_id = topic_id;
        self.replicas = meta.replicas.clone();
        self.isr = meta.isr.clone();
        self.partition_epoch = meta.partition_epoch;
        self.pending = None;
        self.followers.retain(|id, _| meta.replicas.contains(id));
        if !new_term {
            return None;
        }
        self.leader = meta.leader;
        self.leader_epoch = meta.leader_epoch;
        self.followers.clear();
        if self.is_leader() {
            self.epoch_start = log_end;
            self.local = durable.min(log_end);
            self.lead_started_ms = now;
            Some(Role::Leader)
        } else {
            Some(Role::Follower {
                leader: meta.leader,
                leader_epoch: meta.leader_epoch,
            })
        }
    }

    /// The replicas counted for the high watermark: the ISR, with the members of an ISR change
    /// in flight added.
    fn maximal_isr(&self) -> impl Iterator<Item = i32> + '_ {
        let pending = self.pending.iter().flatten().copied();
        self.isr
            .iter()
            .copied()
            .chain(pending.filter(|b| !self.isr.contains(b)))
    }

    /// The high watermark the in-sync replicas allow, if they allow one (`None`: too few in
    /// sync, or a member's progress is not known yet).
    pub fn committed_offset(&self, min_isr: i32) -> Option<i64> {
        if !self.is_leader() || self.under_min_isr(min_isr) {
            return None;
        }
        let mut offset = self.local;
        for b in self.maximal_isr().filter(|&b| b != self.node) {
            offset = offset.min(self.followers.get(&b)?.end_offset);
        }
        Some(offset)
    }

    /// Whether fewer replicas are in sync than `min.insync.replicas` asks, capped at the
    /// replica count (Kafka's `effectiveMinIsr`: one replica and `min.insync.replicas=2` is
    /// not under it).
    pub fn under_min_isr(&self, min_isr: i32) -> bool {
        (self.isr.len() as i32) < min_isr.min(self.replicas.len() as i32)
    }

    /// This broker's log is committable below `offset`.
    pub fn local_committable(&mut self, offset: i64) {
        self.local = self.local.max(offset);
    }

    /// How many replicas the in-sync set this broker knows has.
    pub fn isr_len(&self) -> usize {
        self.isr.len()
    }

    /// Whether `replica` is in the in-sync replicas.
    pub fn in_sync(&self, replica: i32) -> bool {
        self.isr.contains(&replica)
    }

    /// Whether `replica` is a follower of this partition (this broker leading it).
    pub fn is_follower(&self, replica: i32) -> bool {
        self.is_leader() && replica != self.node && self.replicas.contains(&replica)
    }

    /// The in-sync followers whose logs reach `offset`, as (broker, log end offset, ms since
    /// last caught up): what a replica selector may send a consumer reading from `offset` to
    /// (Kafka's `findPreferredReadReplica`). None unless this broker leads.
    pub fn read_replicas(&self, offset: i64, now: i64) -> Vec<(i32, i64, i64)> {
        if !self.is_leader() {
            return Vec::new();
        }
        let mut found: Vec<_> = self
            .followers
            .iter()
            .filter(|(id, f)| self.isr.contains(id) && f.end_offset >= offset)
            .map(|(id, f)| {
                let since = if f.caught_up_ms < 0 {
                    i64::MAX
                } else {
                    (now - f.caught_up_ms).max(0)
                };
                (*id, f.end_offset, since)
            })
            .collect();
        found.sort_unstable();
        found
    }

    /// Notes a follower's fetch from `end_offset` (its log end, durable) at `now`, when the
    /// leader's log ended at `leader_end`; returns the ISR expansion it makes possible
    /// (Kafka's `maybeExpandIsr`: it reached the high watermark and this epoch's start).
    pub fn follower_fetched(
        &mut self,
        replica: i32,
        end_offset: i64,
        now: i64,
        leader_end: i64,
        high_watermark: i64,
    ) -> Option<IsrRequest> {
        let f = self.followers.entry(replica).or_insert(Follower {
            end_offset,
            caught_up_ms: -1,
            last_fetch_leader_end: -1,
            last_fetch_ms: -1,
        });
        f.end_offset = end_offset;
        if end_offset >= leader_end {
            f.caught_up_ms = now;
        } else if end_offset >= f.last_fetch_leader_end && f.last_fetch_ms >= 0 {
            f.caught_up_ms = f.caught_up_ms.max(f.last_fetch_ms);
        }
        f.last_fetch_leader_end = leader_end;
        f.last_fetch_ms = now;
        let joins = !self.isr.contains(&replica)
            && self.pending.is_none()
            && now >= self.retry_after_ms
            && end_offset >= high_watermark
            && end_offset >= self.epoch_start;
        joins.then(|| {
            let mut isr = self.isr.clone();
            isr.push(replica);
            self.request(isr)
        })
    }

    /// The ISR shrink the followers' lag calls for (Kafka's `maybeShrinkIsr`): members not
    /// caught up with the leader's log end for `max_lag_ms`.
    pub fn shrink(&mut self, now: i64, leader_end: i64, max_lag_ms: i64) -> Option<IsrRequest> {
        if !self.is_leader() || self.pending.is_some() {
            return None;
        }
        let out_of_sync = |b: &i32| {
            *b != self.node
                && match self.followers.get(b) {
                    Some(f) => {
                        f.end_offset < leader_end
                            && now - f.caught_up_ms.max(self.lead_started_ms) > max_lag_ms
                    }
                    None => now - self.lead_started_ms > max_lag_ms,
                }
        };
        if !self.isr.iter().any(out_of_sync) {
            return None;
        }
        let isr: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|b| !out_of_sync(b))
            .collect();
        Some(self.request(isr))
    }

    fn request(&mut self, isr: Vec<i32>) -> IsrRequest {
        self.pending = Some(isr.clone());
        IsrRequest {
            topic_id: self.topic_id,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            isr,
        }
    }

    /// Whether `request` is still the ISR change in flight (not applied, not given up).
    pub fn is_pending(&self, request: &IsrRequest) -> bool {
        self.is_leader()
            && self.pending.as_ref() == Some(&request.isr)
            && self.partition_epoch == request.partition_epoch
            && self.leader_epoch == request.leader_epoch
    }

    /// The controller refused the ISR change in flight: a later fetch or check may ask again,
    /// an expansion not before a pause.
    pub fn request_refused(&mut self, request: &IsrRequest, now: i64) {
        if self.is_pending(request) {
            self.pending = None;
            self.retry_after_ms = now + ISR_RETRY_MS;
        }
    }

    /// What a committed-offset watcher should see now.
    pub fn leading_epoch(&self) -> i32 {
        if self.is_leader() {
            self.leader_epoch
        } else {
            -1
        }
    }
}

impl Broker {
    /// Asks the controller for an ISR change (Kafka's AlterPartition), in the background: the
    /// change is decided against the applied metadata and written through the quorum (a
    /// change decided on an older partition epoch does not apply). It takes effect when the
    /// publisher applies it; refused or failed, the next fetch or check may ask again.
    pub(crate) fn alter_isr(self: &Arc<Self>, p: Arc<Partition>, request: IsrRequest) {
        let broker = self.clone();
        // Against the set it was decided on (the applied change may replace it meanwhile).
        let grows = request.isr.len() > p.replica().isr_len();
        self.runtime.spawn(async move {
            loop {
                let decided = broker.with_controller(|c| {
                    c.alter_partition(
                        request.topic_id,
                        p.index,
                        broker.config.node_id,
                        request.leader_epoch,
                        request.partition_epoch,
                        &request.isr,
                    )
                });
                let written = match decided {
                    Ok(record) => broker.quorum.write(vec![record]).await,
                    Err(e) => Err(QuorumError::Refused(e.to_string())),
                };
                match written {
                    Ok(_) => {
                        tracing::info!(topic = %p.topic, partition = p.index, isr = ?request.isr, "in-sync replicas changed");
                        broker.metrics.isr_changes[usize::from(grows)]
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                    Err(QuorumError::Refused(reason)) => {
                        tracing::info!(topic = %p.topic, partition = p.index, isr = ?request.isr, %reason, "in-sync replica change refused; asked again later if still needed");
                        p.replica().request_refused(&request, broker.now_ms());
                        return;
                    }
                    Err(e) => {
                        // Perhaps written, perhaps not: the change stays in flight (the high
                        // watermark keeps counting its members) and is asked again until it is
                        // applied or the partition moves on.
                        tracing::warn!(topic = %p.topic, partition = p.index, isr = ?request.isr, error = %e, "in-sync replica change not confirmed; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(ISR_RETRY_MS as u64))
                            .await;
                        if !p.replica().is_pending(&request) {
                            return;
                        }
                    }
                }
            }
        });
    }

    /// Every half `replica.lag.time.max.ms`, the partitions this broker leads drop the
    /// followers that lag from their in-sync replicas (Kafka's `isr-expiration` task).
    pub(crate) fn watch_isr(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let period = std::time::Duration::from_millis(
            (self.config.replica_lag_time_max_ms / 2).max(1) as u64,
        );
        self.runtime.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(broker) = weak.upgrade() else { break };
                let now = broker.now_ms();
                let lag = broker.config.replica_lag_time_max_ms;
                for p in broker.all_partitions() {
                    let request = p.replica().shrink(now, p.log.log_end_offset(), lag);
                    if let Some(request) = request {
                        tracing::info!(topic = %p.topic, partition = p.index, isr = ?request.isr, "followers lag; shrinking the in-sync replicas");
                        broker.alter_isr(p, request);
                    }
                }
            }
        });
    }
}

/// Kafka's `RackAwareReplicaSelector`: the replica a consumer in `client_rack` reads from,
/// given the leader's rack and the in-sync followers that hold its fetch offset as
/// (broker, rack, log end offset, ms since caught up). None: the leader (in the rack, no rack
/// named, or no follower there); else the follower there with the longest log, the most
/// recently caught up on a tie.
pub fn rack_aware_choice(
    client_rack: &str,
    leader_rack: Option<&str>,
    followers: &[(i32, Option<&str>, i64, i64)],
) -> Option<i32> {
    if client_rack.is_empty() || leader_rack == Some(client_rack) {
        return None;
    }
    followers
        .iter()
        .filter(|f| f.1 == Some(client_rack))
        .max_by(|a, b| a.2.cmp(&b.2).then(b.3.cmp(&a.3)))
        .map(|f| f.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_is_sent_to_the_most_caught_up_in_sync_replica_of_its_rack() {
        let mut s = ReplicaState::new(1, 0);
        s.update(T, &meta(1, 0, &[1, 2, 3, 4], &[1, 2, 3]), 0, 0, 0);
        s.follower_fetched(2, 40, 100, 50, 0);
        s.follower_fetched(3, 50, 100, 50, 0);
        s.follower_fetched(4, 50, 100, 50, 0);
        // 4 is not in sync; 2 does not hold offset 45.
        assert_eq!(s.read_replicas(45, 150), [(3, 50, 50)]);
        assert_eq!(s.read_replicas(10, 150), [(2, 40, i64::MAX), (3, 50, 50)]);
        let racks = |r: &[(i32, i64, i64)], rack: &'static [Option<&'static str>]| {
            r.iter()
                .zip(rack)
                .map(|(&(id, end, since), &rack)| (id, rack, end, since))
                .collect::<Vec<_>>()
        };
        let f = racks(&s.read_replicas(10, 150), &[Some("b"), Some("b")]);
        assert_eq!(
            rack_aware_choice("b", Some("a"), &f),
            Some(3),
            "longest log"
        );
        assert_eq!(
            rack_aware_choice("a", Some("a"), &f),
            None,
            "the leader is there"
        );
        assert_eq!(rack_aware_choice("c", Some("a"), &f), None, "nobody there");
        assert_eq!(rack_aware_choice("", Some("a"), &f), None, "no rack named");
        let tie = [(2, Some("b"), 50, 900), (3, Some("b"), 50, 10)];
        assert_eq!(
            rack_aware_choice("b", None, &tie),
            Some(3),
            "caught up last"
        );
        let mut follower = ReplicaState::new(2, 0);
        follower.update(T, &meta(1, 0, &[1, 2], &[1, 2]), 0, 0, 0);
        assert!(
            follower.read_replicas(0, 0).is_empty(),
            "only a leader chooses"
        );
    }

    fn meta(leader: i32, epoch: i32, replicas: &[i32], isr: &[i32]) -> PartitionMeta {
        PartitionMeta {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: epoch,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    const T: TopicId = TopicId([1; 16]);

    #[test]
    fn the_high_watermark_is_the_smallest_durable_offset_in_sync() {
        let mut s = ReplicaState::new(1, 0);
        assert_eq!(
            s.update(T, &meta(1, 0, &[1, 2, 3], &[1, 2, 3]), 0, 0, 0),
            Some(Role::Leader)
        );
        s.local_committable(10);
        assert_eq!(s.committed_offset(1), None, "followers not heard from yet");
        assert!(s.follower_fetched(2, 10, 5, 10, 0).is_none());
        assert_eq!(s.committed_offset(1), None, "follower 3 not heard from yet");
        s.follower_fetched(3, 4, 5, 10, 0);
        assert_eq!(s.committed_offset(1), Some(4));
        s.follower_fetched(3, 10, 6, 10, 4);
        assert_eq!(s.committed_offset(1), Some(10));
        // The leader's own durable offset bounds it too.
        s.local_committable(8);
        s.follower_fetched(2, 12, 7, 12, 10);
        assert_eq!(s.committed_offset(1), Some(10));
        // Fewer in sync than min.insync.replicas (capped at the replica count): no movement.
        s.update(T, &meta(1, 0, &[1, 2, 3], &[1]), 12, 12, 8);
        assert_eq!(s.committed_offset(2), None);
        assert_eq!(s.committed_offset(1), Some(10));
        let mut alone = ReplicaState::new(1, 0);
        alone.update(T, &meta(1, 0, &[1], &[1]), 0, 0, 0);
        alone.local_committable(3);
        assert_eq!(alone.committed_offset(2), Some(3), "effective min ISR is 1");
    }

    #[test]
    fn a_follower_joins_when_caught_up_and_counts_while_the_change_is_in_flight() {
        let mut s = ReplicaState::new(1, 0);
        s.update(T, &meta(1, 0, &[1, 2], &[1]), 5, 5, 0);
        s.local_committable(20);
        // Below the leader's epoch start: not yet.
        assert!(s.follower_fetched(2, 4, 10, 20, 5).is_none());
        let join = s.follower_fetched(2, 6, 11, 20, 5).unwrap();
        assert_eq!(join.isr, [1, 2]);
        assert!(
            s.follower_fetched(2, 7, 12, 20, 5).is_none(),
            "one change in flight"
        );
        // The joining follower bounds the high watermark before the change is applied.
        assert_eq!(s.committed_offset(1), Some(7));
        s.request_refused(&join, 13);
        assert!(
            s.follower_fetched(2, 8, 14, 20, 5).is_none(),
            "not again before a pause"
        );
        assert!(
            s.follower_fetched(2, 8, 1_013, 20, 5).is_some(),
            "asked again"
        );
    }

    #[test]
    fn a_follower_that_lags_too_long_is_dropped() {
        let mut s = ReplicaState::new(1, 0);
        s.update(T, &meta(1, 0, &[1, 2, 3], &[1, 2, 3]), 0, 0, 1_000);
        s.follower_fetched(2, 0, 1_100, 0, 0);
        s.follower_fetched(3, 0, 1_100, 0, 0);
        // The leader's log grows; 2 keeps up, 3 stops fetching.
        s.follower_fetched(2, 50, 20_000, 50, 0);
        assert!(s.shrink(20_000, 50, 30_000).is_none());
        let shrink = s.shrink(31_200, 50, 30_000).unwrap();
        assert_eq!(shrink.isr, [1, 2]);
        // Caught up to the log end: never out of sync, however long ago it fetched.
        let mut idle = ReplicaState::new(1, 0);
        idle.update(T, &meta(1, 0, &[1, 2], &[1, 2]), 9, 9, 0);
        idle.follower_fetched(2, 9, 10, 9, 0);
        assert!(idle.shrink(100_000, 9, 30_000).is_none());
    }

    #[test]
    fn a_new_term_forgets_the_followers() {
        let mut s = ReplicaState::new(2, 0);
        assert_eq!(
            s.update(T, &meta(1, 3, &[1, 2], &[1, 2]), 0, 0, 0),
            Some(Role::Follower {
                leader: 1,
                leader_epoch: 3
            })
        );
        assert!(!s.is_leader() && s.committed_offset(1).is_none());
        assert_eq!(s.update(T, &meta(1, 3, &[1, 2], &[1]), 0, 0, 0), None);
        assert_eq!(
            s.update(T, &meta(2, 4, &[1, 2], &[2]), 7, 7, 0),
            Some(Role::Leader)
        );
        s.local_committable(7);
        assert_eq!(s.committed_offset(1), Some(7));
    }
}

/// A replication throttle's meter (Kafka's `ReplicationQuotaManager`): bytes of throttled
/// replicas copied over the last [`QUOTA_WINDOWS`] one-second windows, exceeded when their
/// rate is above the broker's `leader.replication.throttled.rate` /
/// `follower.replication.throttled.rate`.
#[derive(Debug, Default)]
pub struct ReplicationQuota {
    /// (second, bytes) of the most recent windows, oldest first.
    windows: std::sync::Mutex<std::collections::VecDeque<(u64, u64)>>,
}

/// How many one-second windows a replication quota's rate is taken over (Kafka's
/// `replication.quota.window.num` is 11).
const QUOTA_WINDOWS: u64 = 11;

impl ReplicationQuota {
    /// Notes `bytes` of throttled replicas copied at `now_ms`.
    pub fn record(&self, bytes: u64, now_ms: i64) {
        let second = (now_ms.max(0) / 1000) as u64;
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        match w.back_mut() {
            Some((s, b)) if *s == second => *b += bytes,
            _ => w.push_back((second, bytes)),
        }
        while w.front().is_some_and(|(s, _)| s + QUOTA_WINDOWS <= second) {
            w.pop_front();
        }
    }

    /// Whether the rate of the recent windows is above `limit` bytes per second: over the
    /// seconds since the oldest window still kept (at least one).
    pub fn exceeded(&self, limit: u64, now_ms: i64) -> bool {
        let second = (now_ms.max(0) / 1000) as u64;
        let w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let kept = w.iter().filter(|(s, _)| s + QUOTA_WINDOWS > second);
        let (mut bytes, mut oldest) = (0u64, second);
        for &(s, b) in kept {
            bytes += b;
            oldest = oldest.min(s);
        }
        let elapsed_ms = (now_ms.max(0) as u64)
            .saturating_sub(oldest * 1000)
            .max(1000);
        bytes.saturating_mul(1000) / elapsed_ms > limit
    }
}

/// Whether a topic's `leader.replication.throttled.replicas` or
/// `follower.replication.throttled.replicas` (`value`: `*`, or `partition:broker` pairs)
/// throttles `partition` on `broker`.
pub fn throttled_replica(value: &str, partition: i32, broker: i32) -> bool {
    let value = value.trim();
    value == "*"
        || value.split(',').any(|pair| {
            pair.trim().split_once(':').is_some_and(|(p, b)| {
                p.trim().parse() == Ok(partition) && b.trim().parse() == Ok(broker)
            })
        })
}

#[cfg(test)]
mod quota_tests {
    use super::*;

    #[test]
    fn a_quota_is_exceeded_above_its_rate_and_forgets_old_windows() {
        let q = ReplicationQuota::default();
        assert!(!q.exceeded(1000, 5_000));
        q.record(900, 5_000);
        assert!(!q.exceeded(1000, 5_500), "900 B in the first second");
        q.record(200, 5_600);
        assert!(q.exceeded(1000, 5_700), "1,100 B in one second");
        assert!(!q.exceeded(1000, 6_500), "1,100 B over 1.5 s");
        // Eleven seconds later the windows are gone.
        assert!(!q.exceeded(0, 17_000));
    }

    #[test]
    fn throttled_replicas_name_partitions_and_brokers() {
        assert!(throttled_replica("*", 3, 1));
        assert!(throttled_replica("0:1, 3:2", 3, 2));
        assert!(!throttled_replica("0:1,3:2", 3, 1));
        assert!(!throttled_replica("", 0, 1));
    }
}
