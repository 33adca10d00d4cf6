use super::*;

fn cfg() -> Config {
    Config {
        initial_rebalance_delay_ms: 0,
        ..Config::default()
    }
}

fn join_req(member: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member.into(),
        group_instance_id: instance.map(str::to_string),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), p.as_bytes().to_vec()))
            .collect(),
        require_known_member_id: true,
        reason: None,
    }
}

fn joins(effects: &[Effect]) -> Vec<(Token, JoinResponse)> {
    effects
        .iter()
        .filter_map(|e| {
            if let Effect::Join(t, r) = e {
                Some((*t, r.clone()))
            } else {
                None
            }
        })
        .collect()
}

fn syncs(effects: &[Effect]) -> Vec<(Token, SyncResponse)> {
    effects
        .iter()
        .filter_map(|e| {
            if let Effect::Sync(t, r) = e {
                Some((*t, r.clone()))
            } else {
                None
            }
        })
        .collect()
}

/// Runs the two-step join of a new dynamic member; returns its id and the effects of the
/// second join.
fn join_new(
    c: &mut Coordinator,
    token: Token,
    now: i64,
    protocols: &[&str],
) -> (String, Vec<Effect>) {
    let first = c.join(join_req("", None, protocols), token, now);
    let (_, r) = joins(&first).pop().unwrap();
    assert_eq!(r.error, MEMBER_ID_REQUIRED);
    let id = r.member_id;
    let effects = c.join(join_req(&id, None, protocols), token, now);
    (id, effects)
}

#[test]
fn first_member_forms_a_generation_then_syncs() {
    let mut c = Coordinator::new(cfg(), 7);
    let (a, e) = join_new(&mut c, 1, 0, &["range"]);
    let j = joins(&e);
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].1.error, NONE);
    assert_eq!(j[0].1.generation_id, 1);
    assert_eq!(j[0].1.leader, a);
    assert_eq!(j[0].1.members.len(), 1, "the leader sees the members");
    assert_eq!(j[0].1.protocol_name.as_deref(), Some("range"));
    assert_eq!(c.state("g"), Some(State::CompletingRebalance));
    let e = c.sync(
        SyncRequest {
            group_id: "g".into(),
            generation_id: 1,
            member_id: a.clone(),
            group_instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments: vec![(a.clone(), b"A".to_vec())],
        },
        2,
        1,
    );
    assert_eq!(
        syncs(&e),
        vec![(
            2,
            SyncResponse {
                error: NONE,
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                assignment: b"A".to_vec()
            }
        )]
    );
    assert!(e.iter().any(|x| matches!(x, Effect::Store(_))));
    assert_eq!(c.state("g"), Some(State::Stable));
    assert_eq!(c.heartbeat("g", &a, None, 1, 2), NONE);
    assert_eq!(c.heartbeat("g", &a, None, 0, 2), ILLEGAL_GENERATION);
    assert_eq!(c.heartbeat("g", "nobody", None, 1, 2), UNKNOWN_MEMBER_ID);
}

#[test]
fn a_second_member_triggers_a_rebalance_both_rejoin() {
    let mut c = Coordinator::new(cfg(), 7);
    let (a, _) = join_new(&mut c, 1, 0, &["range"]);
    c.sync(
        SyncRequest {
            group_id: "g".into(),
            generation_id: 1,
            member_id: a.clone(),
            group_instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments: vec![],
        },
        2,
        0,
    );
    // B joins: the group prepares a rebalance and parks B's join until A rejoins.
    let (b, e) = join_new(&mut c, 3, 10, &["range"]);
    assert!(joins(&e).is_empty(), "B waits for A");
    assert_eq!(c.state("g"), Some(State::PreparingRebalance));
    assert_eq!(c.heartbeat("g", &a, None, 1, 20), REBALANCE_IN_PROGRESS);
    let e = c.join(join_req(&a, None, &["range"]), 4, 30);
    let j = joins(&e);
    assert_eq!(j.len(), 2);
    let leader = j.iter().find(|(t, _)| *t == 4).unwrap();
    let follower = j.iter().find(|(t, _)| *t == 3).unwrap();
    assert_eq!(leader.1.generation_id, 2);
    assert_eq!(leader.1.leader, a, "the old leader stays leader");
    assert_eq!(leader.1.members.len(), 2);
    assert!(follower.1.members.is_empty());
    // B syncs before the leader: parked; the leader's sync answers both.
    assert!(
        syncs(&c.sync(
            SyncRequest {
                group_id: "g".into(),
                generation_id: 2,
                member_id: b.clone(),
                group_instance_id: None,
                protocol_type: None,
                protocol_name: None,
                assignments: vec![]
            },
            5,
            31
        ))
        .is_empty()
    );
    let e = c.sync(
        SyncRequest {
            group_id: "g".into(),
            generation_id: 2,
            member_id: a.clone(),
            group_instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments: vec![(a.clone(), b"0".to_vec()), (b.clone(), b"1".to_vec())],
        },
        6,
        32,
    );
    let s = syncs(&e);
    assert_eq!(s.len(), 2);
    assert_eq!(s.iter().find(|(t, _)| *t == 5).unwrap().1.assignment, b"1");
    assert_eq!(s.iter().find(|(t, _)| *t == 6).unwrap().1.assignment, b"0");
}

#[test]
fn members_that_stop_heartbeating_are_dropped_and_the_group_rebalances() {
    let mut c = Coordinator::new(cfg(), 7);
    let (a, _) = join_new(&mut c, 1, 0, &["range"]);
    c.sync(
        SyncRequest {
            group_id: "g".into(),
            generation_id: 1,
            member_id: a.clone(),
            group_instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments: vec![],
        },
        2,
        0,
    );
    let (b, _) = join_new(&mut c, 3, 100, &["range"]);
    // A neither rejoins nor heartbeats: when its session (10 s from its last contact at 0)
    // runs out, it is dropped and the generation forms without it.
    assert!(joins(&c.tick(9_999)).is_empty());
    let e = c.tick(10_000);
    let j = joins(&e);
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].1.leader, b);
    assert_eq!(c.describe("g").unwrap().members.len(), 1);
    c.sync(
        SyncRequest {
            group_id: "g".into(),
            generation_id: 2,
            member_id: b.clone(),
            group_instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments: vec![],
        },
        4,
        10_200,
    );
    // B stops heartbeating: after its session timeout it is removed and the group empties.
    let e = c.tick(10_200 + 10_000);
    assert!(
        e.iter()
            .any(|x| matches!(x, Effect::History { event, .. } if event.contains("expired")))
    );
    assert_eq!(c.state("g"), Some(State::Empty));
    assert!(c.next_deadline().is_none());
}

#[test]
fn leave_rebalances_and_static_members_come_back_without_one() {
    let mut c = Coordinator::new(cfg(), 7);
    let first = c.join(join_req("", Some("i1"), &["range"]), 1, 0);
    let j = joins(&first);
    assert_eq!(j[0].1.error, NONE, "static members skip MEMBER_ID_REQUIRED");
    let s1 = j[0].1.member_id.clone();
    c.sync(
        SyncRequest {
            group_id: "g".into(),
            generation_id: 1,
            member_id: s1.clone(),
            group_instance_id: Some("i1".into()),
            protocol_type: None,
            protocol_name: None,
            assignments: vec![(s1.clone(), b"P".to_vec())],
        },
        2,
        0,
    );
    // The static member restarts: a new member id, the same assignment, no rebalance.
    let e = c.join(join_req("", Some("i1"), &["range"]), 3, 1_000);
    let j = joins(&e);
    assert_eq!(j[0].1.error, NONE);
    let s2 = j[0].1.member_id.clone();
    assert_ne!(s1, s2);
    assert_eq!(j[0].1.generation_id, 1, "no new generation");
    assert_eq!(c.state("g"), Some(State::Stable));
    let e = c.sync(
        SyncRequest {
            group_id: "g".into(),
            generation_id: 1,
            member_id: s2.clone(),
            group_instance_id: Some("i1".into()),
            protocol_type: None,
            protocol_name: None,
            assignments: vec![],
        },
        4,
        1_001,
    );
    assert_eq!(syncs(&e)[0].1.assignment, b"P");
    // The old incarnation is fenced.
    assert_eq!(
        c.heartbeat("g", &s1, Some("i1"), 1, 1_002),
        FENCED_INSTANCE_ID
    );
    // Leaving by instance id empties the group.
    let (codes, _) = c.leave("g", &[(String::new(), Some("i1".into()))], 1_003);
    assert_eq!(codes, vec![NONE]);
    assert_eq!(c.state("g"), Some(State::Empty));
    assert_eq!(c.delete("g"), NONE);
    assert_eq!(c.delete("g"), GROUP_ID_NOT_FOUND);
}

#[test]
fn protocol_vote_and_inconsistent_protocols() {
    let mut c = Coordinator::new(
        Config {
            initial_rebalance_delay_ms: 1_000,
            ..Config::default()
        },
        7,
    );
    let (_, e) = join_new(&mut c, 1, 0, &["cooperative-sticky", "range"]);
    assert!(
        joins(&e).is_empty(),
        "the initial delay holds the first join"
    );
    let (_, e) = join_new(&mut c, 2, 500, &["range", "cooperative-sticky"]);
    assert!(joins(&e).is_empty());
    let e = c.join(join_req("", None, &["roundrobin"]), 3, 600);
    assert_eq!(joins(&e)[0].1.error, INCONSISTENT_GROUP_PROTOCOL);
    // The delay ends 1 s after the last new member.
    assert!(joins(&c.tick(1_499)).is_empty());
    let j = joins(&c.tick(1_500));
    assert_eq!(j.len(), 2);
    // One vote each: the first member's preference breaks the tie.
    assert_eq!(j[0].1.protocol_name.as_deref(), Some("cooperative-sticky"));
}

#[test]
fn commits_are_checked_against_membership() {
    let mut c = Coordinator::new(cfg(), 7);
    assert_eq!(
        c.validate_commit("solo", "", None, -1, 0),
        NONE,
        "simple consumers may commit"
    );
    let (a, _) = join_new(&mut c, 1, 0, &["range"]);
    assert_eq!(
        c.validate_commit("g", &a, None, 1, 1),
        REBALANCE_IN_PROGRESS
    );
    c.sync(
        SyncRequest {
            group_id: "g".into(),
            generation_id: 1,
            member_id: a.clone(),
            group_instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments: vec![],
        },
        2,
        1,
    );
    assert_eq!(c.validate_commit("g", &a, None, 1, 2), NONE);
    assert_eq!(c.validate_commit("g", &a, None, 5, 2), ILLEGAL_GENERATION);
    assert_eq!(c.validate_commit("g", "x", None, 1, 2), UNKNOWN_MEMBER_ID);
    assert_eq!(
        c.validate_commit("g", "", None, -1, 2),
        UNKNOWN_MEMBER_ID,
        "not while it has members"
    );
}

#[test]
fn restored_groups_resume_and_expire() {
    let mut c = Coordinator::new(cfg(), 7);
    let (a, _) = join_new(&mut c, 1, 0, &["range"]);
    let e = c.sync(
        SyncRequest {
            group_id: "g".into(),
            generation_id: 1,
            member_id: a.clone(),
            group_instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments: vec![(a.clone(), b"X".to_vec())],
        },
        2,
        0,
    );
    let Some(Effect::Store(rec)) = e.into_iter().find(|x| matches!(x, Effect::Store(_))) else {
        panic!("no store")
    };
    let mut c2 = Coordinator::new(cfg(), 8);
    c2.restore(rec, 50_000);
    assert_eq!(c2.state("g"), Some(State::Stable));
    assert_eq!(
        c2.heartbeat("g", &a, None, 1, 50_001),
        NONE,
        "a member keeps going across a restart"
    );
    c2.tick(50_001 + 10_000);
    assert_eq!(c2.state("g"), Some(State::Empty));
}

#[test]
fn a_heartbeating_member_that_never_rejoins_is_dropped_at_the_rebalance_timeout() {
    let mut c = Coordinator::new(cfg(), 7);
    let (a, _) = join_new(&mut c, 1, 0, &["range"]);
    c.sync(
        SyncRequest {
            group_id: "g".into(),
            generation_id: 1,
            member_id: a.clone(),
            group_instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments: vec![],
        },
        2,
        0,
    );
    let (b, _) = join_new(&mut c, 3, 100, &["range"]);
    let mut now = 100;
    while now + 3_000 < 100 + 30_000 {
        now += 3_000;
        assert_eq!(c.heartbeat("g", &a, None, 1, now), REBALANCE_IN_PROGRESS);
        assert!(joins(&c.tick(now)).is_empty(), "still waiting at {now}");
    }
    let j = joins(&c.tick(100 + 30_000));
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].1.leader, b);
    assert_eq!(c.heartbeat("g", &a, None, 2, 30_200), UNKNOWN_MEMBER_ID);
}

fn sync_req(member: &str, generation: i32, assignments: Vec<(String, Vec<u8>)>) -> SyncRequest {
    SyncRequest {
        group_id: "g".into(),
        generation_id: generation,
        member_id: member.into(),
        group_instance_id: None,
        protocol_type: None,
        protocol_name: None,
        assignments,
    }
}

#[test]
fn bad_joins_are_refused_with_kafkas_codes() {
    let mut c = Coordinator::new(
        Config {
            max_size: 1,
            ..cfg()
        },
        7,
    );
    let mut r = join_req("", None, &["range"]);
    r.session_timeout_ms = 1_000;
    assert_eq!(joins(&c.join(r, 1, 0))[0].1.error, INVALID_SESSION_TIMEOUT);
    let mut r = join_req("", None, &[]);
    r.protocols.clear();
    assert_eq!(
        joins(&c.join(r, 2, 0))[0].1.error,
        INCONSISTENT_GROUP_PROTOCOL
    );
    let mut r = join_req("", None, &["range"]);
    r.group_id = String::new();
    assert_eq!(joins(&c.join(r, 3, 0))[0].1.error, INVALID_GROUP_ID);
    assert_eq!(
        joins(&c.join(join_req("ghost", None, &["range"]), 4, 0))[0]
            .1
            .error,
        UNKNOWN_MEMBER_ID
    );
    let (_, _) = join_new(&mut c, 5, 0, &["range"]);
    assert_eq!(
        joins(&c.join(join_req("", None, &["range"]), 6, 0))[0]
            .1
            .error,
        GROUP_MAX_SIZE_REACHED
    );
    let mut other = join_req("", None, &["range"]);
    other.protocol_type = "connect".into();
    assert_eq!(
        joins(&c.join(other, 7, 0))[0].1.error,
        INCONSISTENT_GROUP_PROTOCOL
    );
}

#[test]
fn rejoin_during_completing_rebalance_answers_at_once_and_changes_trigger_a_rebalance() {
    let mut c = Coordinator::new(cfg(), 7);
    let (a, _) = join_new(&mut c, 1, 0, &["range"]);
    assert_eq!(c.state("g"), Some(State::CompletingRebalance));
    // Same protocols while completing: the current generation again.
    let j = joins(&c.join(join_req(&a, None, &["range"]), 2, 1));
    assert_eq!((j[0].1.error, j[0].1.generation_id), (NONE, 1));
    assert_eq!(
        c.heartbeat("g", &a, None, 1, 2),
        NONE,
        "heartbeats are fine while completing"
    );
    // Sync checks: generation, member.
    assert_eq!(
        syncs(&c.sync(sync_req(&a, 9, vec![]), 3, 3))[0].1.error,
        ILLEGAL_GENERATION
    );
    assert_eq!(
        syncs(&c.sync(sync_req("nobody", 1, vec![]), 4, 3))[0]
            .1
            .error,
        UNKNOWN_MEMBER_ID
    );
    c.sync(sync_req(&a, 1, vec![]), 5, 4);
    assert_eq!(c.state("g"), Some(State::Stable));
    // New protocols in Stable: a rebalance, which completes at once with the only member.
    let j = joins(&c.join(join_req(&a, None, &["range", "sticky"]), 6, 5));
    assert_eq!(j[0].1.generation_id, 2);
    // Leaving as an unknown member is refused per member.
    let (codes, _) = c.leave("g", &[("ghost".into(), None)], 6);
    assert_eq!(codes, vec![UNKNOWN_MEMBER_ID]);
    // A sync parked during CompletingRebalance is answered REBALANCE_IN_PROGRESS when a new
    // member starts another rebalance.
    let (b, e) = join_new(&mut c, 7, 7, &["range"]);
    assert!(joins(&e).is_empty());
    let j = joins(&c.join(join_req(&a, None, &["range"]), 8, 8));
    assert_eq!(j.len(), 2);
    assert!(
        syncs(&c.sync(sync_req(&b, 3, vec![]), 9, 9)).is_empty(),
        "b waits for the leader"
    );
    let (_, e) = join_new(&mut c, 10, 10, &["range"]);
    let s = syncs(&e);
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].0, s[0].1.error), (9, REBALANCE_IN_PROGRESS));
}

#[test]
fn offsets_commit_for_unknown_groups_creates_an_empty_group_that_can_be_deleted() {
    let mut c = Coordinator::new(cfg(), 7);
    assert_eq!(c.validate_commit("tool", "", None, -1, 0), NONE);
    c.ensure_group("tool");
    assert_eq!(c.state("tool"), Some(State::Empty));
    assert_eq!(c.list().len(), 1);
    assert_eq!(c.delete("tool"), NONE);
}
