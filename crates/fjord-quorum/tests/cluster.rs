#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! Three voters over loopback TCP: the metadata is replicated to every member, a change made
//! on any member is written by the leader, the quorum survives the loss of a member, and a
//! member that returns catches up (from a snapshot when the log it missed was purged).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fjord_log::sim::SimStorage;
use fjord_meta::{MetadataRecord, TopicId};
use fjord_quorum::{Quorum, QuorumOptions};
use tokio::net::{TcpListener, TcpSocket};

const DIR: &str = "/data/__cluster_metadata-0";

fn options() -> QuorumOptions {
    QuorumOptions {
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        snapshot_after_entries: 10,
        entries_kept_after_snapshot: 0,
        start_timeout: Duration::from_secs(30),
        must_have_log: false,
        address: None,
        directory_id: None,
    }
}

fn listen(addr: &str) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr.parse().unwrap()).unwrap();
    socket.listen(64).unwrap()
}

/// A free loopback address, released for a member to bind again. Below Linux's default ephemeral
/// range (32768 and up), so no outgoing connection takes it first; handed out in turn from a
/// start that differs between processes.
fn free_addr() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let (low, span) = (10_000, 22_000);
    let start = std::process::id().wrapping_mul(7919) % span;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let addr = format!("127.0.0.1:{}", low + (start + n) % span);
        if std::net::TcpListener::bind(&addr).is_ok() {
            return addr;
        }
    }
}

/// Voters 1..=n, each at a free loopback address.
fn voters(n: u64) -> BTreeMap<u64, String> {
    (1..=n).map(|id| (id, free_addr())).collect()
}

fn topic(name: &str, seed: u128) -> Vec<MetadataRecord> {
    let id = TopicId::from_entropy(seed);
    vec![
        MetadataRecord::Topic {
            name: name.into(),
            id,
        },
        MetadataRecord::Partition {
            topic_id: id,
            partition: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        },
    ]
}

async fn start(id: u64, disk: &SimStorage, voters: &BTreeMap<u64, String>) -> Quorum {
    start_with(id, disk, voters, options()).await
}

async fn start_with(
    id: u64,
    disk: &SimStorage,
    voters: &BTreeMap<u64, String>,
    options: QuorumOptions,
) -> Quorum {
    Quorum::open_member(
        Arc::new(disk.clone()),
        Path::new(DIR),
        id as i32,
        0,
        voters.clone(),
        listen(&voters[&id]),
        options,
    )
    .await
    .expect("the member opens")
}

/// Waits until `q` has applied a state with topic `name`.
async fn sees(q: &Quorum, name: &str) {
    let mut rx = q.subscribe();
    tokio::time::timeout(Duration::from_secs(20), async {
        while rx.borrow_and_update().state.topic(name).is_none() {
            rx.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("node {} never saw {name}", q.node_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_replicate_survive_a_loss_and_catch_up() {
    let voters = voters(3);
    let disks: Vec<SimStorage> = (0..3).map(|_| SimStorage::new()).collect();
    let (a, b, c) = tokio::join!(
        start(1, &disks[0], &voters),
        start(2, &disks[1], &voters),
        start(3, &disks[2], &voters)
    );
    let members = [a, b, c];
    // Bad input on a controller listener closes that connection only.
    for bytes in [
        vec![0xff, 0xff, 0xff, 0xff],
        [&8u32.to_be_bytes()[..], b"not json"].concat(),
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
    ] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&voters[&1]).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "closed without an answer: {read:?}"
        );
    }
    // A change from every member, whichever leads.
    for (i, q) in members.iter().enumerate() {
        q.write(topic(&format!("from-{}", i + 1), i as u128 + 1))
            .await
            .expect("written through the leader");
    }
    for q in &members {
        for i in 1..=3 {
            sees(q, &format!("from-{i}")).await;
        }
    }
    // Every member describes the quorum as the leader sees it (DescribeQuorum); every voter
    // is soon known to hold the whole log.
    let leader = members[0].leader().expect("a leader is known");
    for q in &members {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let view = q.describe().await.expect("described through the leader");
                assert_eq!(view.leader, leader);
                assert_eq!(
                    view.voters.iter().map(|v| v.id).collect::<Vec<_>>(),
                    [1, 2, 3]
                );
                assert!(view.observers.is_empty());
                assert_eq!(view.addresses, voters);
                assert!(view.high_watermark >= 4, "{view:?}");
                if view.voters.iter().all(|v| {
                    v.log_end_offset == view.high_watermark
                        && v.last_fetch_ms > 0
                        && v.last_caught_up_ms > 0
                }) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("every voter is caught up");
    }
    // The leader goes away; the other two elect a new one and go on.
    let [a, b, c] = members;
    let mut alive = Vec::new();
    let mut gone = None;
    for q in [a, b, c] {
        if q.node_id() == leader {
            gone = Some(q);
        } else {
            alive.push(q);
        }
    }
    let gone = gone.expect("the leader is a member");
    gone.shutdown().await.unwrap();
    // Enough changes for the new leader to snapshot and purge what the lost member missed.
    for n in 0..15u128 {
        let q = &alive[(n % 2) as usize];
        q.write(topic(&format!("after-{n}"), 100 + n))
            .await
            .expect("the two remaining voters are a quorum");
    }
    for q in &alive {
        sees(q, "after-14").await;
        assert_ne!(q.leader(), Some(leader), "a new leader was elected");
    }
    // The new leader sees the lost voter behind, and not heard from.
    let view = alive[0].describe().await.unwrap();
    assert_ne!(view.leader, leader);
    let lost = view.voters.iter().find(|v| v.id == leader).unwrap();
    assert!(lost.log_end_offset < view.high_watermark, "{view:?}");
    assert_eq!(
        lost.last_caught_up_ms, -1,
        "never caught up under this leader: {view:?}"
    );
    // The lost member returns from what its disk kept and catches up.
    let id = gone.node_id();
    let image = disks[(id - 1) as usize].crash_image(Some(id));
    drop(gone);
    let back = start(id, &image, &voters).await;
    sees(&back, "after-14").await;
    assert!(
        image
            .read_file(&Path::new(DIR).join(fjord_quorum::SNAPSHOT_FILE))
            .is_some(),
        "the log it missed was purged: it caught up from a snapshot"
    );
    assert_eq!(back.state().topics().count(), 18);
    assert_eq!(*back.state(), *alive[0].state());
    // A change through the returned member reaches everyone.
    back.write(topic("from-returned", 999)).await.unwrap();
    for q in alive.iter().chain([&back]) {
        sees(q, "from-returned").await;
    }
    for q in alive.iter().chain([&back]) {
        q.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_voters_survive_the_loss_of_two() {
    let voters = voters(5);
    let disks: Vec<SimStorage> = (0..5).map(|_| SimStorage::new()).collect();
    let started = futures_util::future::join_all(
        (1..=5u64).map(|id| start(id, &disks[(id - 1) as usize], &voters)),
    )
    .await;
    started[0].write(topic("before", 1)).await.unwrap();
    // The leader and one more go away: three of five are still a majority.
    let leader = started[0].leader().expect("a leader is known");
    let other = (1..=5u64).find(|&id| id != leader).unwrap();
    let mut alive = Vec::new();
    for q in started {
        if q.node_id() == leader || q.node_id() == other {
            q.shutdown().await.unwrap();
        } else {
            alive.push(q);
        }
    }
    for (n, q) in alive.iter().enumerate() {
        q.write(topic(&format!("after-{n}"), 10 + n as u128))
            .await
            .expect("three of five voters are a quorum");
    }
    for q in &alive {
        sees(q, "after-2").await;
        assert_eq!(q.state().topics().count(), 4);
    }
    // Both come back and catch up.
    for id in [leader, other] {
        let image = disks[(id - 1) as usize].crash_image(Some(id));
        let back = start(id, &image, &voters).await;
        sees(&back, "after-2").await;
        assert_eq!(*back.state(), *alive[0].state());
        back.shutdown().await.unwrap();
    }
    for q in &alive {
        q.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_only_node_observes_the_quorum_without_voting() {
    let voters = voters(3);
    let observer_addr = free_addr();
    let disks: Vec<SimStorage> = (0..4).map(|_| SimStorage::new()).collect();
    let (a, b, c) = tokio::join!(
        start(1, &disks[0], &voters),
        start(2, &disks[1], &voters),
        start(3, &disks[2], &voters)
    );
    a.write(topic("before-the-observer", 1)).await.unwrap();
    let observe = |disk: &SimStorage, addr: &str| {
        Quorum::open_member(
            Arc::new(disk.clone()),
            Path::new(DIR),
            4,
            0,
            voters.clone(),
            listen(addr),
            options(),
        )
    };
    let observer = observe(&disks[3], &observer_addr)
        .await
        .expect("the observer joins");
    // It holds what was written before it joined, and writes through the leader.
    sees(&observer, "before-the-observer").await;
    observer.write(topic("from-the-observer", 2)).await.unwrap();
    for q in [&a, &b, &c] {
        sees(q, "from-the-observer").await;
    }
    let view = b.describe().await.unwrap();
    assert_eq!(
        view.voters.iter().map(|v| v.id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(view.observers.iter().map(|v| v.id).collect::<Vec<_>>(), [4]);
    assert_eq!(view.addresses.get(&4), Some(&observer_addr));
    // It does not vote: with the observer and one voter gone, the two voters left commit (were
    // it a voter, two of four would not be a majority).
    let leader = a.leader().unwrap();
    let mut members = vec![a, b, c];
    let gone_at = members.iter().position(|q| q.node_id() != leader).unwrap();
    let gone = members.remove(gone_at);
    let gone_id = gone.node_id();
    gone.shutdown().await.unwrap();
    observer.shutdown().await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        members[0].write(topic("without-the-observer", 3)),
    )
    .await
    .expect("two voters of three commit without the observer")
    .unwrap();
    let back = futures_join(
        vec![(
            gone_id,
            disks[(gone_id - 1) as usize].crash_image(Some(gone_id)),
        )],
        &voters,
    )
    .await;
    members.extend(back);
    // The observer returns from what its disk kept, at a new address: the leader records the
    // address, and it catches up with what it missed.
    members[0]
        .write(topic("while-observer-away", 4))
        .await
        .unwrap();
    let moved = free_addr();
    let image = disks[3].crash_image(Some(4));
    let observer = observe(&image, &moved).await.expect("the observer rejoins");
    sees(&observer, "while-observer-away").await;
    members[0].write(topic("after-the-move", 5)).await.unwrap();
    sees(&observer, "after-the-move").await;
    let view = members[1].describe().await.unwrap();
    assert_eq!(view.addresses.get(&4), Some(&moved));
    assert_eq!(*observer.state(), *members[0].state());
    observer.shutdown().await.unwrap();
    // Its disk is replaced (an empty log, same id): it joins again from nothing, and the
    // leader replicates it from the start instead of failing on its shorter log.
    members[1]
        .write(topic("before-the-new-disk", 6))
        .await
        .unwrap();
    let observer = observe(&SimStorage::new(), &moved)
        .await
        .expect("rejoins empty");
    sees(&observer, "before-the-new-disk").await;
    members[2]
        .write(topic("after-the-new-disk", 7))
        .await
        .unwrap();
    sees(&observer, "after-the-new-disk").await;
    sees(&members[0], "after-the-new-disk").await;
    assert_eq!(*observer.state(), *members[0].state());
    observer.shutdown().await.unwrap();
    for q in &members {
        q.shutdown().await.unwrap();
    }
}

/// Starts the voters `disks` (id, disk image) together.
async fn futures_join(
    disks: Vec<(u64, SimStorage)>,
    voters: &BTreeMap<u64, String>,
) -> Vec<Quorum> {
    let mut tasks = Vec::new();
    for (id, disk) in disks {
        let voters = voters.clone();
        tasks.push(tokio::spawn(async move { start(id, &disk, &voters).await }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_that_lost_its_disk_is_refused() {
    let voters = voters(3);
    let open = |id: u64, disk: &SimStorage, dir: &str| {
        Quorum::open_member(
            Arc::new(disk.clone()),
            Path::new(DIR),
            id as i32,
            0,
            voters.clone(),
            listen(&voters[&id]),
            QuorumOptions {
                directory_id: Some(dir.to_string()),
                ..options()
            },
        )
    };
    let disks: Vec<SimStorage> = (0..3).map(|_| SimStorage::new()).collect();
    let (a, b, c) = tokio::join!(
        open(1, &disks[0], "dir-1"),
        open(2, &disks[1], "dir-2"),
        open(3, &disks[2], "dir-3")
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    a.write(topic("before", 1)).await.unwrap();
    for q in [&a, &b, &c] {
        sees(q, "before").await;
    }
    c.shutdown().await.unwrap();
    // Node 3 comes back on a new, empty disk (a new directory id): the others refuse it, at
    // once, with what to do.
    let started = std::time::Instant::now();
    let refused = open(3, &SimStorage::new(), "dir-3-new").await;
    let e = refused
        .expect_err("a voter that lost its disk rejoined")
        .to_string();
    assert!(e.contains("data directory changed"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // The others go on; node 3 with its own disk is welcome back.
    b.write(topic("after", 2)).await.unwrap();
    let c = open(3, &disks[2].crash_image(Some(3)), "dir-3")
        .await
        .unwrap();
    sees(&c, "after").await;
    for q in [a, b, c] {
        q.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_hands_its_leadership_over() {
    let voters = voters(3);
    let disks: Vec<SimStorage> = (0..3).map(|_| SimStorage::new()).collect();
    // Elections take 5 s or more here: a leadership taken within 2 s was handed over.
    let slow = QuorumOptions {
        election_timeout_min_ms: 5_000,
        election_timeout_max_ms: 6_000,
        ..options()
    };
    let (a, b, c) = tokio::join!(
        start_with(1, &disks[0], &voters, slow.clone()),
        start_with(2, &disks[1], &voters, slow.clone()),
        start_with(3, &disks[2], &voters, slow.clone())
    );
    let members = [a, b, c];
    members[0].write(topic("before", 1)).await.unwrap();
    let old = members[0].leader().expect("a leader is known");
    let leader = &members[(old - 1) as usize];
    // Followers hand nothing over.
    for q in members.iter().filter(|q| q.node_id() != old) {
        assert_eq!(q.hand_over_leadership(Duration::from_secs(1)).await, None);
    }
    // The leader, alive and heartbeating, gives its leadership to another voter (without a
    // transfer it would stay leader and this would time out with None).
    let new = leader
        .hand_over_leadership(Duration::from_secs(2))
        .await
        .expect("another voter took the leadership");
    assert_ne!(new, old);
    for q in &members {
        tokio::time::timeout(Duration::from_secs(5), async {
            while q.leader() != Some(new) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("node {} never learned of leader {new}", q.node_id()));
    }
    // Every member writes through the new leader, the old one included (forwarded), and
    // the quorum goes on without the old leader.
    for (n, q) in members.iter().enumerate() {
        q.write(topic(&format!("after-{n}"), 10 + n as u128))
            .await
            .expect("the new leader writes");
    }
    leader.shutdown().await.unwrap();
    for q in members.iter().filter(|q| q.node_id() != old) {
        q.write(topic(
            &format!("without-{}", q.node_id()),
            20 + u128::from(q.node_id()),
        ))
        .await
        .expect("two of three voters are a quorum");
    }
    let survivors: Vec<u64> = (1..=3).filter(|&id| id != old).collect();
    for q in members.iter().filter(|q| q.node_id() != old) {
        for id in &survivors {
            sees(q, &format!("without-{id}")).await;
        }
        q.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_are_added_and_removed_online() {
    use fjord_quorum::VoterRefusal;
    let configured = voters(3);
    let mut addresses = configured.clone();
    addresses.insert(4, free_addr());
    let dir = |id: u64| format!("dir-{id}");
    // Every node with its directory id, started with the voters the quorum began with (the
    // fourth is not among them: it joins as an observer).
    let open = |id: u64, disk: SimStorage| {
        let (configured, addr) = (configured.clone(), addresses[&id].clone());
        async move {
            Quorum::open_member(
                Arc::new(disk),
                Path::new(DIR),
                id as i32,
                0,
                configured,
                listen(&addr),
                QuorumOptions {
                    directory_id: Some(format!("dir-{id}")),
                    ..options()
                },
            )
            .await
        }
    };
    let disks: Vec<SimStorage> = (0..4).map(|_| SimStorage::new()).collect();
    let (a, b, c) = tokio::join!(
        open(1, disks[0].clone()),
        open(2, disks[1].clone()),
        open(3, disks[2].clone())
    );
    let mut nodes: BTreeMap<u64, Quorum> = [a, b, c]
        .into_iter()
        .map(|q| {
            let q = q.unwrap();
            (q.node_id(), q)
        })
        .collect();
    nodes[&1].write(topic("first", 1)).await.unwrap();
    nodes.insert(
        4,
        open(4, disks[3].clone()).await.expect("the observer joins"),
    );
    sees(&nodes[&4], "first").await;
    let t = Duration::from_secs(10);
    let voter_ids = |q: &Quorum| {
        let q = q.clone();
        async move {
            let view = q.describe().await.unwrap();
            view.voters.iter().map(|v| v.id).collect::<Vec<_>>()
        }
    };
    let kind = |r: Result<(), fjord_quorum::VoterError>| r.expect_err("refused").kind;

    // Refused, with Kafka's reasons: a voter already, not an observer, another address,
    // another directory; removing a node that is no voter, or with another directory.
    let q = &nodes[&1];
    assert_eq!(
        kind(q.add_voter(2, &dir(2), &addresses[&2], t).await),
        VoterRefusal::Duplicate
    );
    assert_eq!(
        kind(q.add_voter(5, &dir(5), "127.0.0.1:1", t).await),
        VoterRefusal::NotReady
    );
    assert_eq!(
        kind(q.add_voter(4, &dir(4), "127.0.0.1:1", t).await),
        VoterRefusal::Invalid
    );
    assert_eq!(
        kind(q.add_voter(4, "dir-x", &addresses[&4], t).await),
        VoterRefusal::NotReady
    );
    assert_eq!(
        kind(q.remove_voter(4, &dir(4), t).await),
        VoterRefusal::NotFound
    );
    assert_eq!(
        kind(q.remove_voter(2, "dir-x", t).await),
        VoterRefusal::NotFound
    );
    assert_eq!(voter_ids(q).await, [1, 2, 3]);

    // Added, asked of a member that does not lead (forwarded to the leader), by a caller that
    // stops waiting at once: the change goes on to its end all the same (not left in its
    // joint config, which would refuse the next change).
    let leader = nodes[&1].leader().unwrap();
    let follower = *nodes.keys().find(|&&id| id != leader && id != 4).unwrap();
    let hasty = nodes[&follower]
        .add_voter(4, &dir(4), &addresses[&4], Duration::from_millis(1))
        .await;
    assert!(
        hasty.as_ref().is_ok_and(|()| true)
            || hasty
                .as_ref()
                .is_err_and(|e| e.kind == VoterRefusal::NotReady),
        "{hasty:?}"
    );
    for q in nodes.values() {
        tokio::time::timeout(Duration::from_secs(10), async {
            while voter_ids(q).await != [1, 2, 3, 4] {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the observer becomes a voter");
    }
    nodes[&4].write(topic("four-voters", 2)).await.unwrap();

    // The leader removes itself: it hands over first, and stays on as an observer. (Asked
    // again while the change above finishes its second step.)
    let mut removed = nodes[&leader].remove_voter(leader, &dir(leader), t).await;
    for _ in 0..50 {
        match &removed {
            Err(e) if e.kind == VoterRefusal::NotReady => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                removed = nodes[&leader].remove_voter(leader, &dir(leader), t).await;
            }
            _ => break,
        }
    }
    removed.expect("the leader leaves the voters");
    let view = nodes[&4].describe().await.unwrap();
    let left: Vec<u64> = (1..=4).filter(|&id| id != leader).collect();
    assert_eq!(view.voters.iter().map(|v| v.id).collect::<Vec<_>>(), left);
    assert_ne!(view.leader, leader);
    assert!(view.observers.iter().any(|o| o.id == leader), "{view:?}");
    nodes[&leader]
        .write(topic("from-the-old-leader", 3))
        .await
        .unwrap();
    sees(&nodes[&4], "from-the-old-leader").await;

    // A voter is stopped: removing another running voter would leave the stopped one and the
    // leader, no majority running, and is refused; removing the stopped one is not.
    let now = nodes[&4].leader().unwrap();
    let stopped = *left.iter().find(|&&id| id != now && id != 4).unwrap();
    let other = *left.iter().find(|&&id| id != now && id != stopped).unwrap();
    nodes.remove(&stopped).unwrap().shutdown().await.unwrap();
    // (The leader counts a voter as running while it answered its last few heartbeats.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = nodes[&now]
        .remove_voter(other, &dir(other), t)
        .await
        .expect_err("a removal that loses the quorum");
    assert_eq!(e.kind, VoterRefusal::Invalid, "{}", e.message);
    assert!(
        e.message
            .contains(&format!("start voters {{{stopped}}} again")),
        "{}",
        e.message
    );
    nodes[&other]
        .remove_voter(stopped, &dir(stopped), t)
        .await
        .expect("the stopped voter is removed");
    let two: Vec<u64> = {
        let mut v = vec![now, other];
        v.sort_unstable();
        v
    };
    assert_eq!(voter_ids(&nodes[&now]).await, two);
    nodes[&now].write(topic("two-voters", 4)).await.unwrap();

    // Node 4, a voter now, restarts with the voters it was first started with: the metadata
    // log's voters are its own, and the two voters commit again once it is back.
    nodes.remove(&4).unwrap().shutdown().await.unwrap();
    let image = disks[3].crash_image(Some(4));
    nodes.insert(4, open(4, image.clone()).await.expect("the voter restarts"));
    nodes[&4].write(topic("after-restart", 5)).await.unwrap();
    for q in nodes.values() {
        sees(q, "after-restart").await;
        assert_eq!(voter_ids(q).await, two);
    }
    // Its disk lost (a new directory), it is refused, as any voter that lost its disk.
    nodes.remove(&4).unwrap().shutdown().await.unwrap();
    let e = Quorum::open_member(
        Arc::new(SimStorage::new()),
        Path::new(DIR),
        4,
        0,
        configured.clone(),
        listen(&addresses[&4]),
        QuorumOptions {
            directory_id: Some("dir-4-new".into()),
            ..options()
        },
    )
    .await
    .expect_err("a voter on a new disk");
    // Refused at once: the others know the directory it was added with.
    assert!(e.to_string().contains("data directory changed"), "{e}");
    let back = open(4, image.crash_image(Some(4)))
        .await
        .expect("back on its disk");
    nodes.insert(4, back);
    for q in nodes.values() {
        q.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_named_among_voters_of_a_running_quorum_joins_as_an_observer() {
    let running = voters(3);
    let disks: Vec<SimStorage> = (0..4).map(|_| SimStorage::new()).collect();
    let (a, b, c) = tokio::join!(
        start(1, &disks[0], &running),
        start(2, &disks[1], &running),
        start(3, &disks[2], &running)
    );
    a.write(topic("running", 1)).await.unwrap();
    // Node 4 is started with voters that name it, but the quorum runs without it: were it
    // to start a quorum of the four, it would wait for voters that never vote for it (or, with
    // others as new as it, split from the running one). It joins as an observer instead.
    let mut named = running.clone();
    named.insert(4, free_addr());
    let d = tokio::time::timeout(
        Duration::from_secs(20),
        start_with(
            4,
            &disks[3],
            &named,
            QuorumOptions {
                start_timeout: Duration::from_secs(15),
                ..options()
            },
        ),
    )
    .await
    .expect("node 4 starts");
    sees(&d, "running").await;
    let view = b.describe().await.unwrap();
    assert_eq!(
        view.voters.iter().map(|v| v.id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(view.observers.iter().map(|v| v.id).collect::<Vec<_>>(), [4]);
    for q in [a, b, c, d] {
        q.shutdown().await.unwrap();
    }
}
