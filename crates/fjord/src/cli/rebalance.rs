//! `fjord cluster rebalance`: the built-in balancer. Plans partition moves that even out the
//! replicas each broker holds, the bytes on its disk and the partitions it leads (keeping each
//! partition's replicas in as many racks as before), optionally draining brokers first; then,
//! with `--execute`, runs them through AlterPartitionReassignments a bounded number of bytes
//! at a time, shows progress, and elects the preferred leaders at the end.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Common, Output, print_json, print_table};

/// A broker the plan may place replicas on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: i32,
    pub rack: Option<String>,
}

/// A partition as the plan sees it: its replicas (the preferred leader first) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub topic: String,
    pub index: i32,
    pub replicas: Vec<i32>,
    pub bytes: u64,
}

/// One planned move: a partition's replicas from `from` to `to`; `bytes` to copy (0 for a
/// new order of the same replicas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub topic: String,
    pub index: i32,
    pub from: Vec<i32>,
    pub to: Vec<i32>,
    pub bytes: u64,
}

/// The moves that balance `parts` over `nodes` (the brokers replicas may go to; replicas on
/// other brokers, such as ones being drained, are moved off first). Greedy and deterministic:
/// while the most and the least loaded brokers differ by more than one replica, a replica of
/// the most loaded goes to the least loaded, the partition chosen so the bytes on their disks
/// come closest to even and the partition keeps as many racks; then preferred leaderships
/// (first replicas) are evened out by reordering replicas, which copies nothing.
pub fn plan(nodes: &[Node], parts: &[Part]) -> Vec<Move> {
    let ids: BTreeSet<i32> = nodes.iter().map(|n| n.id).collect();
    let rack: HashMap<i32, Option<&str>> =
        nodes.iter().map(|n| (n.id, n.rack.as_deref())).collect();
    let racks_of = |replicas: &[i32]| -> BTreeSet<Option<&str>> {
        replicas
            .iter()
            .map(|b| rack.get(b).copied().flatten())
            .collect()
    };
    let mut placed: Vec<Vec<i32>> = parts.iter().map(|p| p.replicas.clone()).collect();
    let mut count: BTreeMap<i32, usize> = ids.iter().map(|&b| (b, 0)).collect();
    let mut disk: BTreeMap<i32, u64> = ids.iter().map(|&b| (b, 0)).collect();
    for (p, replicas) in parts.iter().zip(&placed) {
        for b in replicas.iter().filter(|b| ids.contains(b)) {
            *count.get_mut(b).expect("counted") += 1;
            *disk.get_mut(b).expect("counted") += p.bytes;
        }
    }
    // The least loaded broker a replica of `i` may move to from `from` (not a replica yet,
    // and the partition loses no rack).
    let target = |placed: &[Vec<i32>], count: &BTreeMap<i32, usize>, i: usize, from: i32| {
        let before = racks_of(&placed[i]).len();
        ids.iter()
            .copied()
            .filter(|b| !placed[i].contains(b))
            .filter(|&b| {
                let moved: Vec<i32> = placed[i]
                    .iter()
                    .map(|&r| if r == from { b } else { r })
                    .collect();
                racks_of(&moved).len() >= before.min(moved.len())
            })
            .min_by_key(|b| (count[b], *b))
    };
    // Replicas on brokers the plan may not use go first.
    for i in 0..parts.len() {
        for from in placed[i].clone() {
            if ids.contains(&from) {
                continue;
            }
            let Some(to) = target(&placed, &count, i, from).or_else(|| {
                ids.iter()
                    .copied()
                    .filter(|b| !placed[i].contains(b))
                    .min_by_key(|b| (count[b], *b))
            }) else {
                continue;
            };
            for r in placed[i].iter_mut().filter(|r| **r == from) {
                *r = to;
            }
            *count.get_mut(&to).expect("counted") += 1;
            *disk.get_mut(&to).expect("counted") += parts[i].bytes;
        }
    }
    // Replica counts within one of each other, a move at a time (bounded: each move lowers
    // the spread or ends the loop).
    for _ in 0..parts.len() * 8 + 1 {
        let Some((&hi, &most)) = count.iter().max_by_key(|(b, c)| (**c, -**b)) else {
            break;
        };
        let least = count.values().min().copied().unwrap_or(0);
        if most <= least + 1 {
            break;
        }
        // The partition of `hi` whose move brings the two disks closest to even.
        let mut best: Option<(usize, i32, u64)> = None;
        for i in 0..parts.len() {
            if !placed[i].contains(&hi) {
                continue;
            }
            let Some(to) = target(&placed, &count, i, hi) else {
                continue;
            };
            if count[&to] + 1 >= most {
                continue;
            }
            let gap = disk[&hi].abs_diff(disk[&to]);
            let after =
                (disk[&hi] - parts[i].bytes.min(disk[&hi])).abs_diff(disk[&to] + parts[i].bytes);
            let score = after.min(gap.saturating_add(parts[i].bytes));
            if best.is_none_or(|(_, _, s)| score < s) {
                best = Some((i, to, score));
            }
        }
        let Some((i, to, _)) = best else { break };
        for r in placed[i].iter_mut().filter(|r| **r == hi) {
            *r = to;
        }
        *count.get_mut(&hi).expect("counted") -= 1;
        *count.get_mut(&to).expect("counted") += 1;
        *disk.get_mut(&hi).expect("counted") -= parts[i].bytes.min(disk[&hi]);
        *disk.get_mut(&to).expect("counted") += parts[i].bytes;
    }
    // Preferred leaderships within one of each other, by reordering.
    let mut leads: BTreeMap<i32, usize> = ids.iter().map(|&b| (b, 0)).collect();
    for replicas in &placed {
        if let Some(first) = replicas.first().filter(|b| ids.contains(b)) {
            *leads.get_mut(first).expect("counted") += 1;
        }
    }
    for _ in 0..parts.len() + 1 {
        let Some((&hi, &most)) = leads.iter().max_by_key(|(b, c)| (**c, -**b)) else {
            break;
        };
        let found = placed.iter().enumerate().find_map(|(i, replicas)| {
            if replicas.first() != Some(&hi) {
                return None;
            }
            let to = replicas[1..]
                .iter()
                .copied()
                .filter(|b| leads.get(b).is_some_and(|&c| c + 1 < most))
                .min_by_key(|b| (leads[b], *b))?;
            Some((i, to))
        });
        let Some((i, to)) = found else { break };
        let at = placed[i].iter().position(|&b| b == to).expect("a replica");
        placed[i].swap(0, at);
        *leads.get_mut(&hi).expect("counted") -= 1;
        *leads.get_mut(&to).expect("counted") += 1;
    }
    parts
        .iter()
        .zip(placed)
        .filter(|(p, to)| p.replicas != *to)
        .map(|(p, to)| {
            let copies = to.iter().filter(|b| !p.replicas.contains(b)).count() as u64;
            Move {
                topic: p.topic.clone(),
                index: p.index,
                from: p.replicas.clone(),
                to,
                bytes: p.bytes * copies,
            }
        })
        .collect()
}

/// The cluster as the plan needs it: brokers with racks, every partition with its replicas
/// and its size (the largest a replica reports).
async fn survey(cluster: &fjord_client::Cluster) -> anyhow::Result<(Vec<Node>, Vec<Part>)> {
    let client = cluster.bootstrap();
    let md = client.metadata(None, false).await?;
    let nodes: Vec<Node> = md
        .brokers
        .iter()
        .map(|b| Node {
            id: b.node_id.0,
            rack: b.rack.as_ref().map(|r| r.to_string()),
        })
        .collect();
    let mut sizes: HashMap<(String, i32), u64> = HashMap::new();
    for b in &md.brokers {
        let broker = cluster.broker_at(&format!("{}:{}", b.host, b.port)).await?;
        for (topic, index, bytes) in broker.replica_sizes().await? {
            let e = sizes.entry((topic, index)).or_default();
            *e = (*e).max(bytes);
        }
    }
    let mut parts = Vec::new();
    for t in client.topics(None).await? {
        for p in t.partitions {
            parts.push(Part {
                bytes: sizes.get(&(t.name.clone(), p.index)).copied().unwrap_or(0),
                topic: t.name.clone(),
                index: p.index,
                replicas: p.replicas,
            });
        }
    }
    Ok((nodes, parts))
}

/// `fjord cluster brokers`: each broker's replicas, leaderships and bytes on disk.
pub async fn brokers(common: &Common) -> anyhow::Result<()> {
    let cluster = common.connect_cluster().await?;
    let client = cluster.bootstrap();
    let (nodes, parts) = survey(&cluster).await?;
    let leaders: HashMap<(String, i32), i32> = client
        .topics(None)
        .await?
        .into_iter()
        .flat_map(|t| {
            let name = t.name.clone();
            t.partitions
                .into_iter()
                .map(move |p| ((name.clone(), p.index), p.leader))
        })
        .collect();
    let load = |id: i32| {
        let held: Vec<&Part> = parts.iter().filter(|p| p.replicas.contains(&id)).collect();
        let leading = parts
            .iter()
            .filter(|p| leaders.get(&(p.topic.clone(), p.index)) == Some(&id))
            .count();
        let bytes: u64 = held.iter().map(|p| p.bytes).sum();
        (held.len(), leading, bytes)
    };
    match common.output {
        Output::Json => print_json(&json!(nodes
            .iter()
            .map(|n| {
                let (replicas, leading, bytes) = load(n.id);
                json!({"id": n.id, "rack": n.rack, "replicas": replicas, "leaders": leading, "bytes": bytes})
            })
            .collect::<Vec<_>>())),
        Output::Table => {
            let rows: Vec<Vec<String>> = nodes
                .iter()
                .map(|n| {
                    let (replicas, leading, bytes) = load(n.id);
                    vec![
                        n.id.to_string(),
                        n.rack.clone().unwrap_or_else(|| "-".into()),
                        replicas.to_string(),
                        leading.to_string(),
                        mib(bytes),
                    ]
                })
                .collect();
            print_table(&["BROKER", "RACK", "REPLICAS", "LEADERS", "DISK"], &rows);
        }
    }
    Ok(())
}

fn ids(v: &[i32]) -> String {
    v.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Plans, and with `execute` runs, a rebalance (see the module's doc). `drain`: brokers to
/// empty (no replica stays on them). At most `max_moving_bytes` are being copied at once (one
/// move at least); `timeout` bounds the whole run.
pub async fn run(
    common: &Common,
    execute: bool,
    drain: &[i32],
    max_moving_bytes: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let cluster = common.connect_cluster().await?;
    let client = cluster.bootstrap();
    if !client.reassignments().await?.is_empty() {
        anyhow::bail!(
            "partitions are being moved already; wait for them (fjord topic reassign --list) or cancel them, then plan again"
        );
    }
    let (mut nodes, parts) = survey(&cluster).await?;
    for id in drain {
        if !nodes.iter().any(|n| n.id == *id) {
            anyhow::bail!(
                "broker {id} is not in the cluster; see the brokers with: fjord cluster info"
            );
        }
    }
    nodes.retain(|n| !drain.contains(&n.id));
    if nodes.is_empty() {
        anyhow::bail!("no broker would be left to hold the partitions");
    }
    let moves = plan(&nodes, &parts);
    let total: u64 = moves.iter().map(|m| m.bytes).sum();
    match common.output {
        Output::Json if !execute => print_json(&json!({
            "moves": moves.iter().map(|m| json!({"topic": m.topic, "partition": m.index, "from": m.from, "to": m.to, "bytes": m.bytes})).collect::<Vec<_>>(),
            "bytes": total,
            "executed": false,
        })),
        Output::Table if moves.is_empty() => println!("the cluster is balanced: nothing to move"),
        Output::Table => {
            let rows: Vec<Vec<String>> = moves
                .iter()
                .map(|m| {
                    vec![
                        m.topic.clone(),
                        m.index.to_string(),
                        ids(&m.from),
                        ids(&m.to),
                        mib(m.bytes),
                    ]
                })
                .collect();
            print_table(&["TOPIC", "PARTITION", "FROM", "TO", "TO COPY"], &rows);
            println!("{} moves, {} to copy", moves.len(), mib(total));
            if !execute {
                println!(
                    "a dry run: nothing moved; run it with: fjord cluster rebalance --execute"
                );
            }
        }
        Output::Json => {}
    }
    if !execute || moves.is_empty() {
        if execute && common.output == Output::Json {
            print_json(&json!({"moves": [], "bytes": 0, "executed": true}));
        }
        return Ok(());
    }
    let started = Instant::now();
    let mut waiting: Vec<&Move> = moves.iter().collect();
    let mut moving: Vec<&Move> = Vec::new();
    let (mut done, mut copied) = (0usize, 0u64);
    while !waiting.is_empty() || !moving.is_empty() {
        if started.elapsed() > timeout {
            anyhow::bail!(
                "the rebalance did not finish in {timeout:?}: {} moves still running or waiting; see them with: fjord topic reassign --list",
                moving.len() + waiting.len()
            );
        }
        // Start moves while the bytes being copied stay under the bound.
        let mut in_flight: u64 = moving.iter().map(|m| m.bytes).sum();
        while let Some(next) = waiting.first().copied() {
            if !moving.is_empty() && in_flight + next.bytes > max_moving_bytes {
                break;
            }
            waiting.remove(0);
            client
                .reassign(&next.topic, next.index, Some(&next.to))
                .await
                .map_err(|e| anyhow::anyhow!("moving {}-{}: {e}", next.topic, next.index))?;
            in_flight += next.bytes;
            moving.push(next);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let running: BTreeSet<(String, i32)> = client
            .reassignments()
            .await?
            .into_iter()
            .map(|r| (r.topic, r.partition))
            .collect();
        let before = moving.len();
        moving.retain(|m| {
            let still = running.contains(&(m.topic.clone(), m.index));
            if !still {
                copied += m.bytes;
            }
            still
        });
        done += before - moving.len();
        if before != moving.len() && common.output == Output::Table {
            println!(
                "{done} of {} moves done, {} of {} copied ({:.0} s)",
                moves.len(),
                mib(copied),
                mib(total),
                started.elapsed().as_secs_f64()
            );
        }
    }
    // The new first replicas take the leadership now rather than at the next balancing pass.
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for m in &moves {
        by_topic.entry(m.topic.clone()).or_default().push(m.index);
    }
    let named: Vec<(String, Vec<i32>)> = by_topic.into_iter().collect();
    client.elect_leaders(false, Some(&named)).await?;
    match common.output {
        Output::Json => print_json(&json!({
            "moves": moves.iter().map(|m| json!({"topic": m.topic, "partition": m.index, "from": m.from, "to": m.to, "bytes": m.bytes})).collect::<Vec<_>>(),
            "bytes": total,
            "executed": true,
            "seconds": started.elapsed().as_secs_f64(),
        })),
        Output::Table => println!(
            "rebalanced: {} moves, {} copied in {:.0} s; leaders moved to their preferred replicas",
            moves.len(),
            mib(total),
            started.elapsed().as_secs_f64()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[i32]) -> Vec<Node> {
        ids.iter().map(|&id| Node { id, rack: None }).collect()
    }

    fn parts(n: i32, replicas: &[i32], bytes: u64) -> Vec<Part> {
        (0..n)
            .map(|i| {
                let mut r = replicas.to_vec();
                r.rotate_left(i as usize % replicas.len());
                Part {
                    topic: "t".into(),
                    index: i,
                    replicas: r,
                    bytes,
                }
            })
            .collect()
    }

    fn after(parts: &[Part], moves: &[Move]) -> Vec<Vec<i32>> {
        parts
            .iter()
            .map(|p| {
                moves
                    .iter()
                    .find(|m| m.topic == p.topic && m.index == p.index)
                    .map_or(p.replicas.clone(), |m| m.to.clone())
            })
            .collect()
    }

    fn counts(placed: &[Vec<i32>], first_only: bool) -> BTreeMap<i32, usize> {
        let mut c = BTreeMap::new();
        for r in placed {
            for b in if first_only { &r[..1] } else { &r[..] } {
                *c.entry(*b).or_default() += 1;
            }
        }
        c
    }

    #[test]
    fn new_brokers_get_their_share_of_replicas_and_leaderships() {
        let parts = parts(6, &[1, 2, 3], 100);
        let moves = plan(&nodes(&[1, 2, 3, 4, 5]), &parts);
        let placed = after(&parts, &moves);
        let replicas = counts(&placed, false);
        assert_eq!(replicas.len(), 5);
        assert!(
            replicas.values().all(|&c| (3..=4).contains(&c)),
            "{replicas:?}"
        );
        let leaders = counts(&placed, true);
        assert!(leaders.values().all(|&c| c <= 2), "{leaders:?}");
        for r in &placed {
            let distinct: BTreeSet<_> = r.iter().collect();
            assert_eq!(
                distinct.len(),
                3,
                "a partition keeps three distinct replicas: {r:?}"
            );
        }
        // Balanced already: nothing more to do.
        let again: Vec<Part> = parts
            .iter()
            .zip(&placed)
            .map(|(p, r)| Part {
                replicas: r.clone(),
                ..p.clone()
            })
            .collect();
        assert!(plan(&nodes(&[1, 2, 3, 4, 5]), &again).is_empty());
    }

    #[test]
    fn a_drained_broker_keeps_no_replica_and_racks_are_kept() {
        let racked = vec![
            Node {
                id: 1,
                rack: Some("a".into()),
            },
            Node {
                id: 2,
                rack: Some("b".into()),
            },
            Node {
                id: 4,
                rack: Some("a".into()),
            },
        ];
        // Broker 3 (rack b) is drained: its replicas go to a broker of its rack where possible.
        let parts = parts(4, &[1, 3], 10);
        let moves = plan(&racked, &parts);
        for r in after(&parts, &moves) {
            assert!(!r.contains(&3), "{r:?}");
            let racks: BTreeSet<_> = r
                .iter()
                .map(|b| racked.iter().find(|n| n.id == *b).unwrap().rack.clone())
                .collect();
            assert_eq!(racks.len(), 2, "two racks kept: {r:?}");
        }
        // Each move copies the partition once per new replica.
        for m in &moves {
            let new = m.to.iter().filter(|b| !m.from.contains(b)).count() as u64;
            assert_eq!(m.bytes, 10 * new, "{m:?}");
        }
    }

    #[test]
    fn disks_even_out_with_the_counts() {
        // Broker 1 holds two big partitions, broker 2 two small ones; 3 is new.
        let parts = vec![
            Part {
                topic: "t".into(),
                index: 0,
                replicas: vec![1],
                bytes: 1000,
            },
            Part {
                topic: "t".into(),
                index: 1,
                replicas: vec![1],
                bytes: 1000,
            },
            Part {
                topic: "t".into(),
                index: 2,
                replicas: vec![2],
                bytes: 10,
            },
            Part {
                topic: "t".into(),
                index: 3,
                replicas: vec![2],
                bytes: 10,
            },
        ];
        let moves = plan(&nodes(&[1, 2, 3]), &parts);
        let placed = after(&parts, &moves);
        assert_eq!(counts(&placed, false).values().max(), Some(&2));
        // One big partition moved to the new broker rather than a small one.
        assert!(
            moves.iter().any(|m| m.bytes == 1000 && m.to == vec![3]),
            "{moves:?}"
        );
    }
}
