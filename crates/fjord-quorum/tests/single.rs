#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! A one-member quorum, as `fjord serve` with no cluster flags runs: changes go through Raft,
//! survive crashes and restarts, and an earlier version's metadata log is converted once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use fjord_log::sim::SimStorage;
use fjord_meta::{MetadataRecord, MetadataStore, TopicId};
use fjord_quorum::{Quorum, QuorumError};

const DATA: &str = "/data";
const DIR: &str = "/data/__cluster_metadata-0";

fn topic(name: &str, seed: u128, partitions: i32) -> Vec<MetadataRecord> {
    let id = TopicId::from_entropy(seed);
    let mut change = vec![MetadataRecord::Topic {
        name: name.into(),
        id,
    }];
    change.extend((0..partitions).map(|p| MetadataRecord::Partition {
        topic_id: id,
        partition: p,
        replicas: vec![1],
        isr: vec![1],
        leader: 1,
        leader_epoch: 0,
        partition_epoch: 0,
        adding: Vec::new(),
        removing: Vec::new(),
    }));
    change
}

async fn open(disk: &SimStorage) -> Quorum {
    Quorum::open_single(Arc::new(disk.clone()), Path::new(DIR), 1, 0)
        .await
        .expect("the quorum opens")
}

fn names(q: &Quorum) -> Vec<String> {
    q.state().topics().map(|t| t.name.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_written_through_raft_and_survive_crashes_and_restarts() {
    let disk = SimStorage::new();
    let q = open(&disk).await;
    assert!(names(&q).is_empty());
    let mut rx = q.subscribe();
    let published = q.write(topic("a", 1, 3)).await.unwrap();
    assert_eq!(published.state.topic("a").unwrap().partitions, 3);
    rx.changed().await.unwrap();
    assert!(
        rx.borrow().state.topic("a").is_some(),
        "followers see the change"
    );
    // A change that does not apply any more is refused and changes nothing.
    match q.write(topic("a", 2, 1)).await {
        Err(QuorumError::Refused(reason)) => assert!(reason.contains("already exists"), "{reason}"),
        other => panic!("{other:?}"),
    }
    q.write(vec![MetadataRecord::ProducerIds {
        from: None,
        next: 1000,
    }])
    .await
    .unwrap();

    // kill -9: only what was synced survives, and every acknowledged change was.
    let image = disk.crash_image(Some(7));
    let q2 = open(&image).await;
    assert_eq!(names(&q2), ["a"]);
    assert_eq!(q2.state().next_producer_id(), 1000);
    q2.write(topic("b", 3, 1)).await.unwrap();
    q2.shutdown().await.unwrap();

    // A clean restart of the same disk.
    let q3 = open(&image).await;
    assert_eq!(names(&q3), ["a", "b"]);
    q3.shutdown().await.unwrap();
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_versions_metadata_log_is_converted_once() {
    let disk = SimStorage::new();
    {
        // Fjord before the quorum: records in the metadata log directly.
        let store = MetadataStore::open(Arc::new(disk.clone()), Path::new(DATA), 0, 1).unwrap();
        store.commit(&topic("old", 5, 2), 0).unwrap();
        store
            .commit(
                &[MetadataRecord::TopicCreated {
                    name: "older".into(),
                    id: TopicId::from_entropy(6),
                    partitions: 1,
                    replication_factor: 1,
                    configs: BTreeMap::from([("retention.ms".into(), "5".into())]),
                }],
                0,
            )
            .unwrap();
        store
            .commit(
                &[MetadataRecord::ProducerIds {
                    from: None,
                    next: 2000,
                }],
                0,
            )
            .unwrap();
        store.close().unwrap();
    }
    let q = open(&disk).await;
    assert_eq!(names(&q), ["old", "older"]);
    let state = q.state();
    let older = state.topic("older").unwrap();
    assert_eq!(older.configs["retention.ms"], "5");
    assert_eq!(
        older.partition_states[0].replicas,
        [1],
        "placed on this node"
    );
    assert_eq!(state.next_producer_id(), 2000);
    q.write(topic("new", 7, 1)).await.unwrap();
    q.shutdown().await.unwrap();
    // Converted once: the next start reads the quorum's log, the old one is gone.
    assert!(
        disk.read_file(Path::new(
            "/data/__cluster_metadata-0.converting/00000000000000000000.log"
        ))
        .is_none()
    );
    let q = open(&disk).await;
    assert_eq!(names(&q), ["new", "old", "older"]);
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversion_cut_short_by_a_failure_or_crash_starts_again() {
    // The disk fails for good at each step of the conversion in turn; whatever was left, the
    // next start (from a crash image) converts again and loses nothing.
    let mut finished = false;
    for step in 0..200 {
        let disk = SimStorage::new();
        {
            let store = MetadataStore::open(Arc::new(disk.clone()), Path::new(DATA), 0, 1).unwrap();
            store.commit(&topic("kept", 9, 2), 0).unwrap();
            store
                .commit(
                    &[MetadataRecord::ProducerIds {
                        from: None,
                        next: 3000,
                    }],
                    0,
                )
                .unwrap();
            store.close().unwrap();
        }
        disk.fail_op(disk.op_count() + 1 + step, true);
        let first = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            Quorum::open_single(Arc::new(disk.clone()), Path::new(DIR), 1, 0),
        )
        .await;
        let image = disk.crash_image(Some(step));
        let q = open(&image).await;
        assert_eq!(names(&q), ["kept"], "failing at step {step}");
        assert_eq!(q.state().next_producer_id(), 3000, "failing at step {step}");
        assert_eq!(q.state().topic("kept").unwrap().partitions, 2);
        q.shutdown().await.unwrap();
        if matches!(first, Ok(Ok(_))) {
            finished = true; // the failure came after the conversion: every step was tried
            break;
        }
    }
    assert!(
        finished,
        "the conversion needs more than 200 disk operations"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversion_and_restarts_on_real_files() {
    let tmp = tempfile::tempdir().unwrap();
    let storage: Arc<dyn fjord_log::Storage> = Arc::new(fjord_log::FsStorage);
    {
        let store = MetadataStore::open(storage.clone(), tmp.path(), 0, 1).unwrap();
        store.commit(&topic("on-disk", 11, 4), 0).unwrap();
        store.close().unwrap();
    }
    let dir = tmp.path().join("__cluster_metadata-0");
    let q = Quorum::open_single(storage.clone(), &dir, 1, 0)
        .await
        .unwrap();
    assert_eq!(names(&q), ["on-disk"]);
    q.write(topic("second", 12, 1)).await.unwrap();
    q.shutdown().await.unwrap();
    assert!(!tmp.path().join("__cluster_metadata-0.converting").exists());
    assert!(dir.join(fjord_quorum::RAFT_STATE_FILE).exists());
    let q = Quorum::open_single(storage, &dir, 1, 0).await.unwrap();
    assert_eq!(names(&q), ["on-disk", "second"]);
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_with_other_voters_than_its_quorums_is_refused() {
    let disk = SimStorage::new();
    let q = open(&disk).await;
    q.write(topic("mine", 13, 1)).await.unwrap();
    q.shutdown().await.unwrap();
    let voters = std::collections::BTreeMap::from([
        (1, "127.0.0.1:1".to_string()),
        (2, "127.0.0.1:2".to_string()),
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = Quorum::open_member(
        Arc::new(disk.clone()),
        Path::new(DIR),
        1,
        0,
        voters,
        listener,
        fjord_quorum::QuorumOptions::default(),
    )
    .await;
    let e = refused.unwrap_err().to_string();
    assert!(
        e.contains("belongs to a metadata quorum of voters 1"),
        "{e}"
    );
    // Started as it was created, it still works.
    let q = open(&disk).await;
    assert_eq!(names(&q), ["mine"]);
    q.shutdown().await.unwrap();
}
