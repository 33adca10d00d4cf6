#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! The Raft log and the state machine across crashes: after a crash at any point between
//! operations, what each operation reported done (entries flushed, vote and purge saved,
//! snapshot built) is there when the store reopens, and nothing else.

use std::path::Path;
use std::sync::Arc;

use fjord_log::sim::SimStorage;
use fjord_meta::{MetadataRecord, TopicId};
use fjord_quorum::{Change, LogStore, StateMachine, TypeConfig};
use openraft::alias::{EntryOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::testing::log_id;
use openraft::type_config::TypeConfigExt;
use openraft::{RaftLogReader, RaftSnapshotBuilder};

const DIR: &str = "/data/__cluster_metadata-0";

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn topic_change(i: u64) -> Change {
    Change(vec![MetadataRecord::Topic {
        name: format!("t{i}"),
        id: TopicId::from_entropy(u128::from(i) + 1),
    }])
}

fn open(disk: &SimStorage) -> (LogStore, StateMachine) {
    let dir = Path::new(DIR);
    (
        LogStore::open(Arc::new(disk.clone()), dir, 0).expect("log reopens"),
        StateMachine::open(Arc::new(disk.clone()), dir).expect("state machine reopens"),
    )
}

async fn append(log: &mut LogStore, entries: Vec<EntryOf<TypeConfig>>) {
    let (tx, rx) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(tx))
        .await
        .expect("append");
    rx.await.expect("flush reported").expect("flushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_reported_done_survives_a_crash_at_any_point() {
    for seed in 1..=40u64 {
        let disk = SimStorage::new();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let (mut log, mut sm) = open(&disk);
        // The model: what has been reported done.
        let mut entries: Vec<EntryOf<TypeConfig>> = Vec::new();
        let mut vote = None;
        let mut purged: Option<openraft::alias::LogIdOf<TypeConfig>> = None;
        let mut term = 1;
        let mut snapshot_topics = None;
        let steps = 5 + rng.below(30);
        for _ in 0..steps {
            let op = rng.below(10);
            match op {
                0..=4 => {
                    let next = entries.last().map_or(0, |e| e.index() + 1);
                    let n = 1 + rng.below(4);
                    let batch: Vec<_> = (next..next + n)
                        .map(|i| {
                            EntryOf::<TypeConfig>::new_normal(
                                log_id::<TypeConfig>(term, 1, i),
                                topic_change(i),
                            )
                        })
                        .collect();
                    append(&mut log, batch.clone()).await;
                    entries.extend(batch);
                }
                5 => {
                    term += 1;
                    let v = VoteOf::<TypeConfig>::new(term, 1);
                    log.save_vote(&v).await.expect("vote");
                    vote = Some(v);
                }
                6 if entries.len() > 2 => {
                    // Drop an uncommitted tail, as a new leader's log replaces it (never
                    // what was applied: that was committed).
                    let keep = entries.len() - 1 - rng.below(2) as usize;
                    if purged.is_some_and(|p| (keep as u64) <= p.index + 1) {
                        continue;
                    }
                    let last = entries[keep - 1].log_id();
                    log.truncate_after(Some(last)).await.expect("truncate");
                    entries.truncate(keep);
                }
                7 if !entries.is_empty() => {
                    // Apply everything and snapshot it, then purge what it covers.
                    let start = sm
                        .applied_state()
                        .await
                        .unwrap()
                        .0
                        .map_or(0, |l| l.index + 1);
                    let todo: Vec<_> = entries
                        .iter()
                        .filter(|e| e.index() >= start)
                        .cloned()
                        .map(|e| Ok((e, None)))
                        .collect();
                    sm.apply(futures_util::stream::iter(todo))
                        .await
                        .expect("apply");
                    let snap = sm
                        .get_snapshot_builder()
                        .await
                        .build_snapshot()
                        .await
                        .expect("snapshot");
                    let covered = snap.meta.last_log_id.expect("applied");
                    snapshot_topics = Some((covered.index, sm.current().state.topics().count()));
                    log.purge(covered).await.expect("purge");
                    purged = Some(covered);
                }
                _ => {}
            }
        }
        let image = disk.crash_image(Some(seed));
        drop((log, sm));
        let (mut log, mut sm) = open(&image);
        assert_eq!(
            log.read_vote().await.unwrap(),
            vote,
            "seed {seed}: the vote"
        );
        let state = log.get_log_state().await.unwrap();
        assert_eq!(
            state.last_purged_log_id, purged,
            "seed {seed}: the last purged id"
        );
        let kept: Vec<_> = entries
            .iter()
            .filter(|e| purged.is_none_or(|p| e.index() > p.index))
            .cloned()
            .collect();
        let read = log.try_get_log_entries(0..).await.unwrap();
        assert_eq!(read, kept, "seed {seed}: the entries");
        assert_eq!(
            state.last_log_id,
            entries.last().map(|e| e.log_id()).or(purged),
            "seed {seed}: the last log id"
        );
        // The snapshot comes back as the state machine's state.
        let applied = sm.applied_state().await.unwrap().0.map(|l| l.index);
        let topics = sm.current().state.topics().count();
        match snapshot_topics {
            Some((index, n)) => assert_eq!((applied, topics), (Some(index), n), "seed {seed}"),
            None => assert_eq!((applied, topics), (None, 0), "seed {seed}"),
        }
        // The log goes on where it ended.
        let next = entries.last().map_or(0, |e| e.index() + 1);
        append(
            &mut log,
            vec![EntryOf::<TypeConfig>::new_blank(log_id::<TypeConfig>(
                term, 1, next,
            ))],
        )
        .await;
    }
}
