//! What an applied metadata change asks of one node (Kafka's `TopicsDelta.localChanges`): the
//! partitions it must start holding, stop holding, or hold in a new epoch, and the topics
//! whose configs changed. Computed from the states before and after, so it is the same
//! whether one change or many were applied in between (a node catching up on the log).

use std::collections::BTreeSet;

use crate::state::{MetadataState, PartitionMeta, TopicMeta};

/// A partition by topic name and index (a partition's directory is `{topic}-{index}`).
pub type PartitionKey = (String, i32);

/// The changes one node must make to follow the metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalChanges {
    /// Partitions placed on this node now and not before (a new topic or partition, or a
    /// topic that replaced a deleted one of the same name): open them.
    pub added: Vec<PartitionKey>,
    /// Partitions this node held and no longer does (deleted topic, replica moved away):
    /// close them and delete their data. Always handled before `added`, since a new topic of
    /// a deleted one's name uses the same directories.
    pub removed: Vec<PartitionKey>,
    /// Partitions this node keeps whose leader, leader epoch or replicas changed.
    pub changed: Vec<PartitionKey>,
    /// Topics this node holds partitions of whose config overrides changed.
    pub reconfigured: Vec<String>,
}

impl LocalChanges {
    /// The changes for `node` from `prev` to `next`.
    pub fn between(prev: &MetadataState, next: &MetadataState, node: i32) -> Self {
        let mut out = Self::default();
        let held = |t: &TopicMeta| -> BTreeSet<i32> { t.partitions_on(node).collect() };
        for old in prev.topics() {
            let same = next.topic(&old.name).filter(|t| t.id == old.id);
            let now_held = same.map(held).unwrap_or_default();
            out.removed.extend(
                held(old)
                    .into_iter()
                    .filter(|i| !now_held.contains(i))
                    .map(|i| (old.name.clone(), i)),
            );
        }
        for new in next.topics() {
            let before = prev.topic(&new.name).filter(|t| t.id == new.id);
            let was_held = before.map(held).unwrap_or_default();
            let now_held = held(new);
            for &i in &now_held {
                let key = (new.name.clone(), i);
                if !was_held.contains(&i) {
                    out.added.push(key);
                } else if let Some(old) = before {
                    let (a, b) = (
                        &old.partition_states[i as usize],
                        &new.partition_states[i as usize],
                    );
                    if leadership_changed(a, b) {
                        out.changed.push(key);
                    }
                }
            }
            if let Some(old) = before
                && old.configs != new.configs
                && !now_held.is_empty()
            {
                out.reconfigured.push(new.name.clone());
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.reconfigured.is_empty()
    }
}

fn leadership_changed(a: &PartitionMeta, b: &PartitionMeta) -> bool {
    a.leader != b.leader
        || a.leader_epoch != b.leader_epoch
        || a.replicas != b.replicas
        || a.isr != b.isr
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{MetadataRecord, TopicId};

    fn partition(id: u8, p: i32, replicas: &[i32], epoch: i32) -> MetadataRecord {
        MetadataRecord::Partition {
            topic_id: TopicId([id; 16]),
            partition: p,
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader: replicas[0],
            leader_epoch: epoch,
            partition_epoch: epoch,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    fn topic(name: &str, id: u8) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.into(),
            id: TopicId([id; 16]),
        }
    }

    fn key(t: &str, p: i32) -> PartitionKey {
        (t.to_string(), p)
    }

    #[test]
    fn a_node_sees_only_the_partitions_placed_on_it() {
        let prev = MetadataState::default();
        let mut next = prev.clone();
        next.apply_all(&[
            topic("t", 1),
            partition(1, 0, &[1, 2], 0),
            partition(1, 1, &[2, 3], 0),
            partition(1, 2, &[3, 1], 0),
        ])
        .unwrap();
        let on1 = LocalChanges::between(&prev, &next, 1);
        assert_eq!(on1.added, [key("t", 0), key("t", 2)]);
        assert!(on1.removed.is_empty() && on1.changed.is_empty());
        assert!(LocalChanges::between(&prev, &next, 4).is_empty());
        // Nothing changed: nothing to do.
        assert!(LocalChanges::between(&next, &next, 1).is_empty());
    }

    #[test]
    fn moves_epochs_configs_and_deletions() {
        let mut prev = MetadataState::default();
        prev.apply_all(&[
            topic("t", 1),
            partition(1, 0, &[1], 0),
            partition(1, 1, &[1, 2], 0),
            partition(1, 2, &[2], 0),
        ])
        .unwrap();
        let mut next = prev.clone();
        next.apply_all(&[
            partition(1, 0, &[2], 1),    // moved away from 1
            partition(1, 1, &[2, 1], 1), // new leader
            partition(1, 2, &[2, 1], 1), // moved onto 1
            partition(1, 3, &[1], 0),    // new partition
            MetadataRecord::TopicConfig {
                topic_id: TopicId([1; 16]),
                key: "retention.ms".into(),
                value: Some("5".into()),
            },
        ])
        .unwrap();
        let c = LocalChanges::between(&prev, &next, 1);
        assert_eq!(c.removed, [key("t", 0)]);
        assert_eq!(c.added, [key("t", 2), key("t", 3)]);
        assert_eq!(c.changed, [key("t", 1)]);
        assert_eq!(c.reconfigured, ["t"]);

        // Deleted and created again under the same name within the changes: the old
        // partitions go, the new ones come, even where the indexes match.
        let mut again = next.clone();
        again
            .apply_all(&[
                MetadataRecord::RemoveTopic {
                    id: TopicId([1; 16]),
                },
                topic("t", 2),
                partition(2, 0, &[1], 0),
            ])
            .unwrap();
        let c = LocalChanges::between(&next, &again, 1);
        assert_eq!(c.removed, [key("t", 1), key("t", 2), key("t", 3)]);
        assert_eq!(c.added, [key("t", 0)]);
        assert!(c.changed.is_empty() && c.reconfigured.is_empty());
    }

    /// Random admin histories over three brokers: a node that follows every change's
    /// `LocalChanges` holds exactly what the final state places on it, the same set one
    /// jump from the start gives (a node catching up), and never opens what it holds or
    /// closes what it does not.
    mod histories {
        use std::collections::BTreeSet;

        use proptest::prelude::*;

        use super::*;
        use crate::controller::{Controller, ControllerConfig, NewTopic};

        #[derive(Debug, Clone)]
        enum Op {
            Create {
                name: u8,
                partitions: i32,
                rf: i16,
            },
            Grow {
                name: u8,
                by: i32,
            },
            Delete {
                name: u8,
            },
            Move {
                name: u8,
                partition: i32,
                to: Vec<i32>,
            },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0..4u8, 1..5i32, 1..4i16).prop_map(|(name, partitions, rf)| Op::Create {
                    name,
                    partitions,
                    rf
                }),
                (0..4u8, 1..3i32).prop_map(|(name, by)| Op::Grow { name, by }),
                (0..4u8).prop_map(|name| Op::Delete { name }),
                (
                    0..4u8,
                    0..6i32,
                    proptest::sample::subsequence(vec![1, 2, 3], 1..=3)
                )
                    .prop_map(|(name, partition, to)| Op::Move {
                        name,
                        partition,
                        to
                    }),
            ]
        }

        fn step(state: &MetadataState, op: &Op, n: u64) -> Option<Vec<MetadataRecord>> {
            let config = ControllerConfig {
                default_partitions: 1,
                default_replication_factor: 1,
                max_partitions: 100,
                max_replication_factor: 3,
                unclean_leader_election: false,
            };
            let c = Controller {
                state,
                brokers: &[1, 2, 3],
                config: &config,
            };
            let name = |i: u8| format!("t{i}");
            match op {
                Op::Create {
                    name: i,
                    partitions,
                    rf,
                } => {
                    let t = NewTopic {
                        name: name(*i),
                        partitions: *partitions,
                        replication_factor: *rf,
                        ..NewTopic::default()
                    };
                    let id = TopicId::from_entropy(u128::from(n) + 1);
                    c.create_topic(&t, id, n, |_| Ok(())).ok()
                }
                Op::Grow { name: i, by } => {
                    let total = state.topic(&name(*i))?.partitions + by;
                    c.create_partitions(&name(*i), total, None, n).ok()
                }
                Op::Delete { name: i } => c.delete_topic(&name(*i)).ok().map(|(_, r)| r),
                Op::Move {
                    name: i,
                    partition,
                    to,
                } => {
                    let t = state.topic(&name(*i))?;
                    let p = t.partition_states.get(*partition as usize)?;
                    Some(vec![MetadataRecord::Partition {
                        topic_id: t.id,
                        partition: *partition,
                        replicas: to.clone(),
                        isr: to.clone(),
                        leader: to[0],
                        leader_epoch: p.leader_epoch + 1,
                        partition_epoch: p.partition_epoch + 1,
                        adding: Vec::new(),
                        removing: Vec::new(),
                    }])
                }
            }
        }

        fn placed(state: &MetadataState, node: i32) -> BTreeSet<PartitionKey> {
            state.placed_on(node).collect()
        }

        proptest! {
            #[test]
            fn following_the_changes_holds_what_the_state_places(
                ops in proptest::collection::vec(op(), 1..40)
            ) {
                let start = MetadataState::default();
                let mut state = start.clone();
                let mut held: BTreeSet<PartitionKey> = BTreeSet::new();
                for (n, op) in ops.iter().enumerate() {
                    let Some(change) = step(&state, op, n as u64) else { continue };
                    let mut next = state.clone();
                    next.apply_all(&change).unwrap();
                    let c = LocalChanges::between(&state, &next, 1);
                    for k in &c.removed {
                        prop_assert!(held.remove(k), "closed {k:?}, which was not held");
                    }
                    for k in &c.added {
                        prop_assert!(held.insert(k.clone()), "opened {k:?} twice");
                    }
                    for k in &c.changed {
                        prop_assert!(held.contains(k), "changed {k:?}, which is not held");
                    }
                    prop_assert_eq!(&held, &placed(&next, 1));
                    state = next;
                }
                let jump = LocalChanges::between(&start, &state, 1);
                prop_assert!(jump.removed.is_empty());
                let jumped: BTreeSet<PartitionKey> = jump.added.into_iter().collect();
                prop_assert_eq!(jumped, held);
            }
        }
    }
}
