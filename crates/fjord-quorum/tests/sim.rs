#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! Seeded runs of a three-voter quorum and a broker-only observer over a simulated
//! network (lost and delayed messages, cut links, members crashed to what their disks kept
//! and restarted), on a current-thread runtime with paused time and openraft's random numbers
//! seeded (a seed replays the same run in a `--cfg tokio_unstable` build, which seeds Tokio's
//! scheduler too; `make unit` runs one). Every run checks Raft's promises as the broker
//! relies on them: a change acknowledged to its writer survives every crash and is applied on
//! every member; members that applied the same log index hold the same metadata; after the
//! faults heal every member converges on one state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_log::sim::{SimStorage, XorShift};
use fjord_meta::{MetadataRecord, TopicId};
use fjord_quorum::sim::SimNet;
use fjord_quorum::{Quorum, QuorumOptions};

const DIR: &str = "/data/__cluster_metadata-0";
const VOTERS: [u64; 3] = [1, 2, 3];
const OBSERVER: u64 = 4;

fn options() -> QuorumOptions {
    QuorumOptions {
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        snapshot_after_entries: 8,
        entries_kept_after_snapshot: 2,
        start_timeout: Duration::from_secs(120),
        must_have_log: false,
        address: None,
        directory_id: None,
    }
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
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        },
    ]
}

/// What members applied at each index (a digest of the state), and the disagreements found,
/// shared by the checkers.
type Applied = Arc<Mutex<(BTreeMap<u64, (u64, String)>, Vec<String>)>>;

/// Watches `q`'s applied state: any index applied with different metadata than another
/// member applied at that index is recorded, and fails the run at its end.
fn watch(q: &Quorum, applied: &Applied) -> tokio::task::JoinHandle<()> {
    let mut rx = q.subscribe();
    let (applied, node) = (applied.clone(), q.node_id());
    tokio::spawn(async move {
        loop {
            let published = rx.borrow_and_update().clone();
            if let Some(index) = published.index {
                let digest = format!(
                    "{:?}",
                    published
                        .state
                        .topics()
                        .map(|t| &t.name)
                        .collect::<BTreeSet<_>>()
                );
                let mut seen = applied.lock().unwrap();
                let (by_index, disagreements) = &mut *seen;
                match by_index.get(&index) {
                    Some((other, theirs)) if theirs != &digest => disagreements.push(format!(
                        "node {node} applied index {index} as {digest}, node {other} as {theirs}"
                    )),
                    Some(_) => {}
                    None => {
                        by_index.insert(index, (node, digest));
                    }
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
}

struct Member {
    id: u64,
    disk: SimStorage,
    running: Option<(Quorum, tokio::task::JoinHandle<()>)>,
}

async fn open(id: u64, disk: &SimStorage, net: &SimNet) -> Quorum {
    let voters: BTreeMap<u64, String> = VOTERS.iter().map(|&v| (v, SimNet::address(v))).collect();
    Quorum::open_simulated(
        Arc::new(disk.clone()),
        Path::new(DIR),
        id as i32,
        0,
        voters,
        net.clone(),
        options(),
    )
    .await
    .unwrap_or_else(|e| panic!("member {id} opens: {e}"))
}

/// One seeded run; returns its trace (what happened, in order).
fn run(seed: u64, steps: usize) -> Vec<String> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all().start_paused(true);
    // Tokio's own random choices (which of a watch channel's waiters wakes first) come from
    // the runtime's seed, which only an unstable build can set.
    #[cfg(tokio_unstable)]
    builder.rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()));
    let runtime = builder.build().unwrap();
    let _deterministic = fjord_quorum::runtime::deterministic(seed);
    runtime.block_on(async move {
        let net = SimNet::new(seed);
        let applied: Applied = Arc::default();
        let mut rng = XorShift::new(seed ^ 0x5eed);
        let mut trace = Vec::new();
        let mut members: Vec<Member> = VOTERS
            .iter()
            .chain([&OBSERVER])
            .map(|&id| Member {
                id,
                disk: SimStorage::new(),
                running: None,
            })
            .collect();
        // The voters start together; the observer joins once they run.
        let (a, b, c) = tokio::join!(
            open(1, &members[0].disk, &net),
            open(2, &members[1].disk, &net),
            open(3, &members[2].disk, &net)
        );
        for (m, q) in members.iter_mut().zip([a, b, c]) {
            let w = watch(&q, &applied);
            m.running = Some((q, w));
        }
        let q = open(OBSERVER, &members[3].disk, &net).await;
        let w = watch(&q, &applied);
        members[3].running = Some((q, w));
        net.set_faults(20, 40);
        let mut acknowledged = BTreeSet::new();
        let mut duplicates: BTreeMap<String, TopicId> = BTreeMap::new();
        for step in 0..steps {
            match rng.next_u64() % 10 {
                // Two members create the same topic at once (as two brokers' admin requests
                // would): at most one creation is acknowledged, and it is the one applied.
                5 => {
                    let running: Vec<&Member> =
                        members.iter().filter(|m| m.running.is_some()).collect();
                    let x = running[(rng.next_u64() % running.len() as u64) as usize];
                    let y = running[(rng.next_u64() % running.len() as u64) as usize];
                    let name = format!("dup{step}");
                    let ids = [u128::from(seed) << 32 | 1 << 20 | step as u128, u128::from(seed) << 32 | 2 << 20 | step as u128];
                    let (qx, qy) = (&x.running.as_ref().unwrap().0, &y.running.as_ref().unwrap().0);
                    let (rx, ry) = tokio::join!(
                        tokio::time::timeout(Duration::from_secs(5), qx.write(topic(&name, ids[0]))),
                        tokio::time::timeout(Duration::from_secs(5), qy.write(topic(&name, ids[1])))
                    );
                    let won: Vec<u128> = [(rx, ids[0]), (ry, ids[1])]
                        .into_iter()
                        .filter(|(r, _)| matches!(r, Ok(Ok(_))))
                        .map(|(_, id)| id)
                        .collect();
                    assert!(won.len() <= 1, "seed {seed}: both creations of {name} were acknowledged");
                    if let [id] = won[..] {
                        duplicates.insert(name.clone(), TopicId::from_entropy(id));
                    }
                    trace.push(format!("{step}: {name} created by {} of 2", won.len()));
                }
                // A change written through a random running member.
                0..=4 => {
                    let running: Vec<&Member> =
                        members.iter().filter(|m| m.running.is_some()).collect();
                    let m = running[(rng.next_u64() % running.len() as u64) as usize];
                    let name = format!("t{step}");
                    let q = &m.running.as_ref().unwrap().0;
                    let write = q.write(topic(&name, u128::from(seed) << 32 | step as u128));
                    match tokio::time::timeout(Duration::from_secs(5), write).await {
                        Ok(Ok(_)) => {
                            trace.push(format!("{step}: {name} acknowledged by {}", m.id));
                            acknowledged.insert(name);
                        }
                        Ok(Err(e)) => trace.push(format!("{step}: {name} failed on {}: {e}", m.id)),
                        Err(_) => trace.push(format!("{step}: {name} timed out on {}", m.id)),
                    }
                }
                // A member crashes: it restarts later from what its disk kept. At most one
                // voter is down at a time, so a majority stays.
                6 => {
                    let down = members.iter().filter(|m| m.running.is_none()).count();
                    let m = &mut members[(rng.next_u64() % 4) as usize];
                    if down == 0 && m.running.is_some() {
                        let (q, w) = m.running.take().unwrap();
                        let image = m.disk.crash_image(Some(rng.next_u64()));
                        q.shutdown().await.unwrap();
                        w.abort();
                        m.disk = image;
                        trace.push(format!("{step}: {} crashed", m.id));
                    }
                }
                // A crashed member restarts (with its links restored: it waits for a
                // majority).
                7 => {
                    if let Some(m) = members.iter_mut().find(|m| m.running.is_none()) {
                        net.heal();
                        let q = open(m.id, &m.disk, &net).await;
                        let w = watch(&q, &applied);
                        m.running = Some((q, w));
                        trace.push(format!("{step}: {} restarted", m.id));
                    }
                }
                // A member is cut off, or the network heals.
                8 => {
                    let id = 1 + rng.next_u64() % 4;
                    net.isolate(id, 1..=4);
                    trace.push(format!("{step}: {id} isolated"));
                }
                _ => {
                    net.heal();
                    trace.push(format!("{step}: healed"));
                }
            }
            tokio::time::sleep(Duration::from_millis(rng.next_u64() % 500)).await;
            let (delivered, lost) = net.counts();
            trace.push(format!(
                "{step}: {delivered} messages delivered, {lost} lost"
            ));
        }
        // Heal everything, restart everyone: every member converges, with every
        // acknowledged change.
        net.heal();
        net.set_faults(0, 0);
        for m in members.iter_mut().filter(|m| m.running.is_none()) {
            let q = open(m.id, &m.disk, &net).await;
            let w = watch(&q, &applied);
            m.running = Some((q, w));
            trace.push(format!("end: {} restarted", m.id));
        }
        let last = &members[0].running.as_ref().unwrap().0;
        let last = last
            .write(topic("last", u128::from(seed) << 32 | 0xffff_ffff))
            .await
            .unwrap();
        let states = futures_all(&members, last.index.unwrap()).await;
        for (id, state) in &states {
            let names: BTreeSet<String> = state.topics().map(|t| t.name.clone()).collect();
            for name in &acknowledged {
                assert!(
                    names.contains(name),
                    "seed {seed}: node {id} lost acknowledged {name}"
                );
            }
            for (name, topic_id) in &duplicates {
                assert_eq!(
                    state.topic(name).map(|t| t.id),
                    Some(*topic_id),
                    "seed {seed}: node {id} applied another creation of {name} than the one acknowledged"
                );
            }
            assert_eq!(state, &states[0].1, "seed {seed}: node {id} diverged");
        }
        let disagreements = applied.lock().unwrap().1.clone();
        assert!(
            disagreements.is_empty(),
            "seed {seed}: members applied the same index differently: {disagreements:#?}"
        );
        let (delivered, lost) = net.counts();
        trace.push(format!(
            "end: {} acknowledged, {} topics, {delivered} messages delivered, {lost} lost",
            acknowledged.len(),
            states[0].1.topics().count()
        ));
        for m in members {
            let (q, w) = m.running.unwrap();
            q.shutdown().await.unwrap();
            w.abort();
        }
        trace
    })
}

/// Waits until every member has applied `index`; returns their states.
async fn futures_all(members: &[Member], index: u64) -> Vec<(u64, Arc<fjord_meta::MetadataState>)> {
    let mut out = Vec::new();
    for m in members {
        let q = &m.running.as_ref().unwrap().0;
        let mut rx = q.subscribe();
        tokio::time::timeout(Duration::from_secs(120), async {
            while rx.borrow_and_update().index < Some(index) {
                rx.changed().await.unwrap();
            }
        })
        .await
        .unwrap_or_else(|_| panic!("node {} never applied index {index}", m.id));
        out.push((m.id, q.state()));
    }
    out
}

#[test]
fn seeded_runs_keep_every_acknowledged_change() {
    // FJORD_SIM_SEEDS=N runs N seeds (a longer search by hand); CI runs a few.
    let seeds: u64 = std::env::var("FJORD_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let mut contested = 0;
    for seed in 1..=seeds {
        eprintln!("seed {seed}");
        let trace = run(seed, 40);
        assert!(
            trace.iter().any(|l| l.contains("acknowledged by")),
            "seed {seed} made no progress: {trace:#?}"
        );
        contested += trace
            .iter()
            .filter(|l| l.contains("created by 1 of 2"))
            .count();
    }
    assert!(contested > 0, "no run had a contested creation decided");
}

/// Tokio wakes a watch channel's waiters in an order drawn from the runtime's seed, which only
/// a `--cfg tokio_unstable` build can set: `make test` runs this test in such a build.
#[cfg(tokio_unstable)]
#[test]
fn a_seed_replays_the_same_run() {
    let first = run(42, 30);
    let again = run(42, 30);
    assert_eq!(first, again, "the same seed ran differently");
    assert_ne!(first, run(43, 30), "different seeds ran alike");
}
