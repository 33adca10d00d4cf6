//! The publisher: the running partitions follow the applied metadata (Kafka's
//! `BrokerMetadataPublisher`). A partition opens, closes, changes epoch or config here and only
//! here, because an applied change says so; at start-up the whole state is published to an
//! empty broker, so one node and a cluster take the same path.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use fjord_log::LastShutdown;
use fjord_meta::{LocalChanges, MetadataState, PartitionKey};

use crate::broker::{Broker, OpenError, Partition};
use crate::coordinator::group::OFFSETS_TOPIC;
use crate::coordinator::txn::TXN_TOPIC;
use crate::replica::Role;
use crate::topic_config;

impl Broker {
    /// Makes the running partitions follow the metadata from what was last published to
    /// `next` on this node: removed partitions are closed and their data deleted, epochs and
    /// configs of the others updated, and added partitions served: those prepared for the
    /// change (opened before it was committed) as they are, the rest opened now (in
    /// parallel). `last` is what the clean-shutdown marker said at start-up (`Unclean` for
    /// later changes). Returns the first partition that could not be opened; every other
    /// change is made. Changes are published one at a time, in order.
    pub(crate) fn publish_to(
        &self,
        next: &Arc<MetadataState>,
        last: LastShutdown,
    ) -> Result<(), OpenError> {
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::ptr_eq(&published, next) {
            return Ok(());
        }
        let prev = published.clone();
        let changes = LocalChanges::between(&prev, next, self.config.node_id);
        for (topic, index) in &changes.removed {
            self.stop_serving(topic, *index);
        }
        for old in prev.topics() {
            if next.topic(&old.name).is_none_or(|t| t.id != old.id) {
                self.metrics.remove_topic(&old.name);
            }
        }
        for name in &changes.reconfigured {
            self.apply_topic_config(next, name);
        }
        for (topic, index) in &changes.changed {
            if let Some(p) = self.hosted(topic, *index) {
                self.take_role(&p, next);
            }
        }
        let mut serve = Vec::with_capacity(changes.added.len());
        let mut open = Vec::new();
        {
            let mut prepared = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
            for key in &changes.added {
                match prepared.remove(key) {
                    Some(p) => serve.push(p),
                    None => open.push(key.clone()),
                }
            }
        }
        let (opened, failed) = self.open_logs(next, &open, self.now_ms(), last);
        {
            let mut offline = self.offline.lock().unwrap_or_else(|p| p.into_inner());
            for key in &changes.removed {
                offline.remove(key);
            }
            if let Some(e) = &failed {
                let opened: std::collections::HashSet<PartitionKey> =
                    opened.iter().map(|p| (p.topic.clone(), p.index)).collect();
                for key in open.iter().filter(|k| !opened.contains(*k)) {
                    offline.insert(key.clone(), e.to_string());
                }
            }
        }
        serve.extend(opened);
        for p in &serve {
            self.take_role(p, next);
        }
        self.serve(serve);
        *published = next.clone();
        failed.map_or(Ok(()), Err)
    }

    /// Opens again the partitions placed here that could not be opened when published
    /// (their disk was full, out of descriptors, ...); those that open are served. The
    /// partitions open without holding up the publisher; they are served only if the metadata
    /// published meanwhile still places the same topic's partition here.
    pub(crate) fn retry_offline(&self) {
        let state = self
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let node = self.config.node_id;
        let placed_here = |state: &MetadataState, (topic, index): &PartitionKey| {
            state.is_placed_on(topic, *index, node)
        };
        let keys: Vec<PartitionKey> = {
            let mut offline = self.offline.lock().unwrap_or_else(|p| p.into_inner());
            offline.retain(|key, _| placed_here(&state, key));
            offline.keys().cloned().collect()
        };
        if keys.is_empty() {
            return;
        }
        let (opened, failed) = self.open_logs(&state, &keys, self.now_ms(), LastShutdown::Unclean);
        let published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        let same_topic = |p: &Arc<Partition>| {
            let key = (p.topic.clone(), p.index);
            let id = |s: &MetadataState| s.topic(&p.topic).map(|t| t.id);
            placed_here(&published, &key) && id(&published) == id(&state)
        };
        let (serve, stale): (Vec<_>, Vec<_>) = opened.into_iter().partition(same_topic);
        {
            let mut offline = self.offline.lock().unwrap_or_else(|p| p.into_inner());
            for p in &serve {
                offline.remove(&(p.topic.clone(), p.index));
            }
            if let Some(e) = &failed {
                for reason in offline.values_mut() {
                    *reason = e.to_string();
                }
                tracing::warn!(
                    partitions = offline.len(),
                    error = %e,
                    "partitions placed on this broker still cannot be opened (KAFKA_STORAGE_ERROR to clients); fix the data directory (space, descriptors: ulimit -n); they are opened again at every heartbeat"
                );
            }
        }
        for p in &serve {
            self.take_role(p, &published);
        }
        if !serve.is_empty() {
            tracing::info!(
                partitions = serve.len(),
                left = keys.len() - serve.len(),
                "partitions that could not be opened are served now"
            );
        }
        self.serve(serve);
        drop(published);
        self.discard(stale);
    }

    /// Opens the partitions a change will place on this node before it is committed, so that
    /// a disk that cannot hold them refuses the change with nothing recorded. Not served
    /// until [`Self::publish`] is given them; on failure, whatever opened is discarded.
    /// `Ok(false)`: one is served already (a change another node committed meanwhile placed
    /// it here: this one was decided on a state that has moved on), nothing opened. Runs
    /// under the publisher's lock, so a partition is never open twice.
    pub(crate) fn prepare(
        &self,
        next: &MetadataState,
        added: &[PartitionKey],
    ) -> Result<bool, OpenError> {
        let _published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        if added.iter().any(|(t, i)| self.hosted(t, *i).is_some()) {
            return Ok(false);
        }
        let (opened, failed) = self.open_logs(next, added, self.now_ms(), LastShutdown::Unclean);
        if let Some(e) = failed {
            self.discard(opened);
            return Err(e);
        }
        let mut prepared = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
        for p in opened {
            prepared.insert((p.topic.clone(), p.index), p);
        }
        Ok(true)
    }

    /// Discards what was prepared for `keys` and not served (the change was not committed,
    /// or did not place them here).
    pub(crate) fn unprepare(&self, keys: &[PartitionKey]) {
        let left: Vec<Arc<Partition>> = {
            let mut prepared = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
            keys.iter().filter_map(|k| prepared.remove(k)).collect()
        };
        self.discard(left);
    }

    /// Makes a held partition what the metadata says this broker is for it: its leader (the
    /// followers' progress starts unknown, writes waiting in an earlier epoch fail) or a
    /// follower of its leader (a replica fetcher copies the leader's log), and takes its
    /// in-sync replicas (the high watermark may move).
    fn take_role(&self, p: &Arc<Partition>, state: &MetadataState) {
        let Some(topic) = state.topic(&p.topic) else {
            return;
        };
        let Some(meta) = topic.partition_states.get(p.index as usize) else {
            return;
        };
        // Writes to the log wait while the role changes (the role lock comes first).
        let mut leadership = p.role.write().unwrap_or_else(|e| e.into_inner());
        *leadership = crate::broker::Leadership {
            leader: meta.leader,
            epoch: meta.leader_epoch,
        };
        let mut replica = p.replica();
        let role = replica.update(
            topic.id,
            meta,
            p.log.log_end_offset(),
            p.log.durable_offset(),
            self.now_ms(),
        );
        match role {
            None => p.advance(&replica),
            Some(Role::Leader) => {
                // The new epoch starts at the log end in the epoch cache (what Kafka's leader
                // does). A follower's cache only ever holds the epochs of batches it copied:
                // its last one is what the leader compares to find where their logs part.
                p.log.set_leader_epoch(meta.leader_epoch);
                p.leadership_changed(&replica);
                p.advance(&replica);
                drop(replica);
                drop(leadership);
                self.fetchers.unfollow(&(p.topic.clone(), p.index));
                self.coordinator_leads(p, meta.leader_epoch);
            }
            Some(Role::Follower {
                leader,
                leader_epoch,
            }) => {
                p.leadership_changed(&replica);
                drop(replica);
                drop(leadership);
                self.fetchers.follow(p, topic.id, leader, leader_epoch);
                // Its coordinator shard (if it had one here) is gone: NOT_COORDINATOR sends
                // clients to the new leader.
                match p.topic.as_str() {
                    OFFSETS_TOPIC => self.groups.unload(p.index),
                    TXN_TOPIC => self.txns.unload(p.index),
                    _ => {}
                }
            }
        }
    }

    /// This broker now leads a coordinator partition (in `epoch`): its shard answers
    /// COORDINATOR_LOAD_IN_PROGRESS until loaded, which waits until the in-sync replicas have
    /// what the log holds (queued for [`Broker::load_coordinators`]). An empty, committed log
    /// (a new partition) loads at its first request.
    fn coordinator_leads(&self, p: &Arc<Partition>, epoch: i32) {
        let target = p.log.log_end_offset();
        let empty = target == p.log.log_start_offset() && p.log.high_watermark() >= target;
        match p.topic.as_str() {
            OFFSETS_TOPIC if empty => self.groups.load_lazily(p.index),
            TXN_TOPIC if empty => self.txns.load_lazily(p.index),
            OFFSETS_TOPIC => self.groups.begin_load(p.index, epoch),
            TXN_TOPIC => self.txns.begin_load(p.index, epoch),
            _ => return,
        }
        if !empty {
            self.coordinator_loads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(crate::broker::CoordinatorLoad {
                    partition: p.clone(),
                    epoch,
                    target,
                });
        }
    }

    /// Stops serving a partition, closes it (requests holding it get "closed" errors) and
    /// deletes its data; a coordinator shard on it is dropped with it.
    fn stop_serving(&self, topic: &str, index: i32) {
        self.fetchers.unfollow(&(topic.to_string(), index));
        let removed = self
            .partitions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(topic.to_string(), index));
        match topic {
            OFFSETS_TOPIC => self.groups.forget(index),
            TXN_TOPIC => self.txns.forget(index),
            _ => {}
        }
        if let Some(p) = removed {
            let _ = p.log.close();
        }
        let dir = self.partition_dir(topic, index);
        if let Err(e) = self.storage.remove_dir_all(&dir) {
            tracing::error!(dir = %dir.display(), error = %e, "could not delete a removed partition's data; it is removed at the next start");
        }
    }

    /// Applies a topic's config overrides to its running partitions.
    fn apply_topic_config(&self, next: &MetadataState, name: &str) {
        let Some(topic) = next.topic(name) else {
            return;
        };
        let log_config = match topic_config::log_config(&self.config.log_defaults, &topic.configs) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(topic = name, error = %e, "a committed topic config does not apply; the partitions keep their config");
                return;
            }
        };
        let min_isr =
            topic_config::min_insync_replicas(self.config.min_insync_replicas, &topic.configs);
        for index in 0..topic.partitions {
            if let Some(p) = self.hosted(name, index) {
                if let Err(e) = p.log.set_config(log_config) {
                    tracing::error!(topic = name, partition = index, error = %e, "applying topic config");
                }
                p.min_insync_replicas.store(min_isr, Ordering::Relaxed);
            }
        }
    }

    /// Makes opened partitions reachable by requests.
    fn serve(&self, opened: Vec<Arc<Partition>>) {
        let mut partitions = self.partitions.write().unwrap_or_else(|p| p.into_inner());
        for p in opened {
            partitions.insert((p.topic.clone(), p.index), p);
        }
    }

    /// Closes partitions that were opened but will not be served, and removes their data.
    pub(crate) fn discard(&self, opened: Vec<Arc<Partition>>) {
        for p in opened {
            let _ = p.log.close();
            let dir = self.partition_dir(&p.topic, p.index);
            if let Err(e) = self.storage.remove_dir_all(&dir) {
                tracing::error!(dir = %dir.display(), error = %e, "could not remove a partition that was not added; it is removed at the next start");
            }
        }
    }
}
