//! Consumer groups on Kafka's classic protocol, as a pure state machine.
//!
//! States (Kafka's): `Empty` → `PreparingRebalance` (members join) → `CompletingRebalance`
//! (the leader computes assignments) → `Stable`; back to `PreparingRebalance` whenever
//! membership or subscriptions change. A request that cannot be answered at once (a JoinGroup
//! during a rebalance, a SyncGroup before the leader's) is parked under the caller's
//! [`Token`] and answered later through an [`Effect`], when another request or
//! [`Coordinator::tick`] completes the phase.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codes::*;

/// Identifies a parked request; the broker maps it back to the waiting connection.
pub type Token = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl State {
    /// Kafka's name for the state, as DescribeGroups and ListGroups report it.
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
            State::Dead => "Dead",
        }
    }
}

/// Coordinator limits, with Kafka's defaults.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long a new group waits for more members.
    pub initial_rebalance_delay_ms: i64,
    /// `group.max.size`.
    pub max_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: i32::MAX as usize,
        }
    }
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Vec<u8>)>,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED and its id.
    pub require_known_member_id: bool,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: i16,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader only: every member's id, instance id and metadata for the protocol.
    pub members: Vec<(String, Option<String>, Vec<u8>)>,
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Vec<u8>,
}

/// Something the broker must do after a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Answer a parked JoinGroup.
    Join(Token, JoinResponse),
    /// Answer a parked SyncGroup.
    Sync(Token, SyncResponse),
    /// Persist the group as it is now (a new generation completed, or it emptied).
    Store(GroupRecord),
    /// A line for the group's rebalance history.
    History {
        group: String,
        at_ms: i64,
        event: String,
    },
    /// A new generation formed (a completed rebalance, for the metrics).
    Rebalanced { group: String },
}

/// A member, as persisted and described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// Supported protocols with their metadata, in preference order.
    pub protocols: Vec<(String, Vec<u8>)>,
    pub assignment: Vec<u8>,
}

/// A group's persisted state: what a restarted coordinator needs to resume it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub group_id: String,
    pub protocol_type: Option<String>,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<MemberRecord>,
}

#[derive(Debug, Clone)]
struct Member {
    rec: MemberRecord,
    /// Deadline for the next heartbeat (or join) before the member is dropped.
    expires_at: i64,
    join: Option<Token>,
    sync: Option<Token>,
}

#[derive(Debug, Clone)]
struct Group {
    id: String,
    state: State,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    generation: i32,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Dynamic members told their id (MEMBER_ID_REQUIRED) and expected to rejoin with it.
    pending: BTreeMap<String, i64>,
    /// instance id → member id, for static members.
    statics: BTreeMap<String, String>,
    /// When the join phase ends even if members are missing.
    join_deadline: i64,
    /// During the initial delay of a new group: when it started (the delay is capped at the
    /// largest rebalance timeout from there).
    initial_since: Option<i64>,
}

/// What DescribeGroups shows of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: State,
    pub protocol_type: String,
    pub protocol_name: String,
    pub generation_id: i32,
    pub members: Vec<MemberRecord>,
}

/// All classic groups of a coordinator.
#[derive(Debug)]
pub struct Coordinator {
    config: Config,
    groups: BTreeMap<String, Group>,
    id_seed: u64,
    id_counter: u64,
}

impl Group {
    fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            state: State::Empty,
            protocol_type: None,
            protocol_name: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            statics: BTreeMap::new(),
            join_deadline: 0,
            initial_since: None,
        }
    }

    fn record(&self) -> GroupRecord {
        GroupRecord {
            group_id: self.id.clone(),
            protocol_type: self.protocol_type.clone(),
            generation_id: self.generation,
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            members: self.members.values().map(|m| m.rec.clone()).collect(),
        }
    }

    /// Protocols every member supports.
    fn supports(&self, protocols: &[(String, Vec<u8>)]) -> bool {
        self.members.is_empty()
            || protocols.iter().any(|(p, _)| {
                self.members
                    .values()
                    .all(|m| m.rec.protocols.iter().any(|(q, _)| q == p))
            })
    }

    /// Kafka's vote: among protocols every member supports, each member votes for its most
    /// preferred one; the most votes win (ties go to the first candidate in member order).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .rec
            .protocols
            .iter()
            .map(|(p, _)| p)
            .filter(|p| {
                self.members
                    .values()
                    .all(|m| m.rec.protocols.iter().any(|(q, _)| q == *p))
            })
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((p, _)) = m
                .rec
                .protocols
                .iter()
                .find(|(p, _)| candidates.contains(&p))
            {
                *votes.entry(p).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        candidates
            .into_iter()
            .find(|p| votes.get(*p) == Some(&best))
            .cloned()
    }

    fn max_rebalance_timeout(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rec.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    fn join_response(&self, member_id: &str, error: i16) -> JoinResponse {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol_name.clone();
        let members = if error == NONE && leader == member_id {
            self.members
                .values()
                .map(|m| {
                    let metadata = m
                        .rec
                        .protocols
                        .iter()
                        .find(|(p, _)| Some(p) == protocol.as_ref())
                        .map(|(_, md)| md.clone())
                        .unwrap_or_default();
                    (
                        m.rec.member_id.clone(),
                        m.rec.group_instance_id.clone(),
                        metadata,
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: protocol,
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    fn sync_response(&self, member_id: &str, error: i16) -> SyncResponse {
        SyncResponse {
            error,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment: if error == NONE {
                self.members
                    .get(member_id)
                    .map(|m| m.rec.assignment.clone())
                    .unwrap_or_default()
            } else {
                Vec::new()
            },
        }
    }
}

fn history(out: &mut Vec<Effect>, group: &str, now: i64, event: String) {
    out.push(Effect::History {
        group: group.to_string(),
        at_ms: now,
        event,
    });
}

impl Coordinator {
    /// A coordinator; `id_seed` makes generated member ids unique across restarts.
    pub fn new(config: Config, id_seed: u64) -> Self {
        Self {
            config,
            groups: BTreeMap::new(),
            id_seed,
            id_counter: 0,
        }
    }

    pub fn config(&self) -> Config {
        self.config
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.id_counter += 1;
        let prefix = if client_id.is_empty() {
            "member"
        } else {
            client_id
        };
        format!("{prefix}-{:016x}-{:08x}", self.id_seed, self.id_counter)
    }

    /// Brings back a persisted group after a restart: its members must heartbeat within their
    /// session timeouts, or they are dropped and the group rebalances.
    pub fn restore(&mut self, record: GroupRecord, now: i64) {
        let mut g = Group::new(&record.group_id);
        g.protocol_type = record.protocol_type;
        g.protocol_name = record.protocol_name;
        g.generation = record.generation_id;
        g.leader = record.leader;
        for rec in record.members {
            if let Some(i) = &rec.group_instance_id {
                g.statics.insert(i.clone(), rec.member_id.clone());
            }
            let expires_at = now + i64::from(rec.session_timeout_ms);
            g.members.insert(
                rec.member_id.clone(),
                Member {
                    rec,
                    expires_at,
                    join: None,
                    sync: None,
                },
            );
        }
        g.state = if g.members.is_empty() {
            State::Empty
        } else {
            State::Stable
        };
        self.groups.insert(g.id.clone(), g);
    }

    pub fn state(&self, group: &str) -> Option<State> {
        self.groups.get(group).map(|g| g.state)
    }

    /// Every group: id, protocol type, state.
    pub fn list(&self) -> Vec<(String, String, State)> {
        self.groups
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect()
    }

    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        self.groups.get(group).map(|g| GroupDescription {
            group_id: g.id.clone(),
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: if g.state == State::Stable {
                g.protocol_name.clone().unwrap_or_default()
            } else {
                String::new()
            },
            generation_id: g.generation,
            members: g.members.values().map(|m| m.rec.clone()).collect(),
        })
    }

    /// Topics the group's members are assigned or subscribed to cannot have their offsets
    /// deleted; the broker decodes the consumer protocol and asks with this.
    pub fn member_metadata(&self, group: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let Some(g) = self.groups.get(group) else {
            return Vec::new();
        };
        g.members
            .values()
            .map(|m| {
                let md = m
                    .rec
                    .protocols
                    .iter()
                    .find(|(p, _)| Some(p) == g.protocol_name.as_ref())
                    .map(|(_, md)| md.clone())
                    .unwrap_or_default();
                (md, m.rec.assignment.clone())
            })
            .collect()
    }

    /// Removes an empty group. Errors: GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP.
    pub fn delete(&mut self, group: &str) -> i16 {
        match self.groups.get(group) {
            None => GROUP_ID_NOT_FOUND,
            Some(g) if g.state != State::Empty && g.state != State::Dead => NON_EMPTY_GROUP,
            Some(_) => {
                self.groups.remove(group);
                NONE
            }
        }
    }

    /// Handles a JoinGroup. The response comes back as an [`Effect::Join`] for `token`, now or
    /// when the join phase completes.
    pub fn join(&mut self, req: JoinRequest, token: Token, now: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        let reply = |out: &mut Vec<Effect>, error: i16, member: &str| {
            out.push(Effect::Join(
                token,
                JoinResponse {
                    error,
                    generation_id: -1,
                    member_id: member.to_string(),
                    ..JoinResponse::default()
                },
            ));
        };
        if req.group_id.is_empty() {
            reply(&mut out, INVALID_GROUP_ID, &req.member_id);
            return out;
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            reply(&mut out, INVALID_SESSION_TIMEOUT, &req.member_id);
            return out;
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            reply(&mut out, INCONSISTENT_GROUP_PROTOCOL, &req.member_id);
            return out;
        }
        if !self.groups.contains_key(&req.group_id) {
            if !req.member_id.is_empty() && req.group_instance_id.is_none() {
                reply(&mut out, UNKNOWN_MEMBER_ID, &req.member_id);
                return out;
            }
            let group = Group::new(&req.group_id);
            // Stored at once, empty, as Kafka's coordinator stores a group it creates.
            out.push(Effect::Store(group.record()));
            self.groups.insert(req.group_id.clone(), group);
        }
        let new_id = if req.member_id.is_empty() {
            Some(self.new_member_id(&req.client_id))
        } else {
            None
        };
        let max_size = self.config.max_size;
        let initial_delay = self.config.initial_rebalance_delay_ms;
        let Some(g) = self.groups.get_mut(&req.group_id) else {
            return out;
        };
        if g.state == State::Dead {
            reply(&mut out, COORDINATOR_NOT_AVAILABLE, &req.member_id);
            return out;
        }
        if g.protocol_type
            .as_ref()
            .is_some_and(|t| *t != req.protocol_type)
            && !g.members.is_empty()
            || !g.supports(&req.protocols)
        {
            reply(&mut out, INCONSISTENT_GROUP_PROTOCOL, &req.member_id);
            return out;
        }

        // Static members: the instance id names the member across restarts.
        if let Some(instance) = req.group_instance_id.clone() {
            let known = g.statics.get(&instance).cloned();
            match (known, req.member_id.is_empty()) {
                (Some(old), true) => {
                    // A restarted static member: it takes over its old identity and assignment.
                    let Some(new_id) = new_id else { return out };
                    let mut m = g
                        .members
                        .remove(&old)
                        .unwrap_or_else(|| fresh_member(&req, &new_id, now));
                    if let Some(t) = m.join.take() {
                        out.push(Effect::Join(t, g.join_response(&old, FENCED_INSTANCE_ID)));
                    }
                    if let Some(t) = m.sync.take() {
                        out.push(Effect::Sync(t, g.sync_response(&old, FENCED_INSTANCE_ID)));
                    }
                    let unchanged = m.rec.protocols == req.protocols;
                    m.rec.member_id = new_id.clone();
                    m.rec.client_id = req.client_id.clone();
                    m.rec.client_host = req.client_host.clone();
                    m.rec.session_timeout_ms = req.session_timeout_ms;
                    m.rec.rebalance_timeout_ms = req.rebalance_timeout_ms;
                    m.rec.protocols = req.protocols.clone();
                    m.expires_at = now + i64::from(req.session_timeout_ms);
                    if g.leader.as_deref() == Some(old.as_str()) {
                        g.leader = Some(new_id.clone());
                    }
                    g.statics.insert(instance.clone(), new_id.clone());
                    history(
                        &mut out,
                        &g.id,
                        now,
                        format!("static member {instance} rejoined as {new_id}"),
                    );
                    if g.state == State::Stable && unchanged {
                        // Same subscription: no rebalance; it gets its assignment back on sync.
                        g.members.insert(new_id.clone(), m);
                        let resp = g.join_response(&new_id, NONE);
                        out.push(Effect::Join(token, resp));
                        out.push(Effect::Store(g.record()));
                        return out;
                    }
                    m.join = Some(token);
                    g.members.insert(new_id, m);
                    Self::prepare_rebalance(
                        g,
                        now,
                        initial_delay,
                        &mut out,
                        "static member rejoined with new metadata",
                    );
                    Self::maybe_complete_join(g, now, &mut out);
                    return out;
                }
                (Some(old), false) if old != req.member_id => {
                    reply(&mut out, FENCED_INSTANCE_ID, &req.member_id);
                    return out;
                }
                (None, false) => {
                    reply(&mut out, UNKNOWN_MEMBER_ID, &req.member_id);
                    return out;
                }
                (None, true) => {
                    if g.members.len() >= max_size {
                        reply(&mut out, GROUP_MAX_SIZE_REACHED, "");
                        return out;
                    }
                    let Some(new_id) = new_id else { return out };
                    g.statics.insert(instance.clone(), new_id.clone());
                    return Self::add_member(g, &req, new_id, token, now, initial_delay, out);
                }
                (Some(_), false) => {} // known static member with its current id: as below
            }
        }

        if req.member_id.is_empty() {
            let Some(new_id) = new_id else { return out };
            if g.members.len() + g.pending.len() >= max_size {
                reply(&mut out, GROUP_MAX_SIZE_REACHED, "");
                return out;
            }
            if req.require_known_member_id {
                g.pending
                    .insert(new_id.clone(), now + i64::from(req.session_timeout_ms));
                out.push(Effect::Join(
                    token,
                    JoinResponse {
                        error: MEMBER_ID_REQUIRED,
                        generation_id: -1,
                        member_id: new_id,
                        ..JoinResponse::default()
                    },
                ));
                return out;
            }
            return Self::add_member(g, &req, new_id, token, now, initial_delay, out);
        }
        if g.pending.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            return Self::add_member(g, &req, id, token, now, initial_delay, out);
        }
        let Some(m) = g.members.get_mut(&req.member_id) else {
            reply(&mut out, UNKNOWN_MEMBER_ID, &req.member_id);
            return out;
        };
        // A known member rejoining.
        let changed = m.rec.protocols != req.protocols;
        m.rec.protocols = req.protocols.clone();
        m.rec.session_timeout_ms = req.session_timeout_ms;
        m.rec.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.expires_at = now + i64::from(req.session_timeout_ms);
        if let Some(old) = m.join.replace(token) {
            // The same member asked twice: the older request is superseded.
            let resp = g.join_response(&req.member_id, REBALANCE_IN_PROGRESS);
            out.push(Effect::Join(old, resp));
        }
        let is_leader = g.leader.as_deref() == Some(req.member_id.as_str());
        match g.state {
            State::PreparingRebalance => Self::maybe_complete_join(g, now, &mut out),
            State::CompletingRebalance | State::Stable
                if !(changed || g.state == State::Stable && is_leader) =>
            {
                // Nothing changed: answer with the current generation.
                if let Some(m) = g.members.get_mut(&req.member_id) {
                    m.join = None;
                }
                let resp = g.join_response(&req.member_id, NONE);
                out.push(Effect::Join(token, resp));
            }
            _ => {
                let why = if changed {
                    "member metadata changed"
                } else {
                    "leader rejoined"
                };
                Self::prepare_rebalance(g, now, initial_delay, &mut out, why);
                Self::maybe_complete_join(g, now, &mut out);
            }
        }
        out
    }

    fn add_member(
        g: &mut Group,
        req: &JoinRequest,
        id: String,
        token: Token,
        now: i64,
        initial_delay: i64,
        mut out: Vec<Effect>,
    ) -> Vec<Effect> {
        let mut m = fresh_member(req, &id, now);
        m.join = Some(token);
        if g.protocol_type.is_none() || g.members.is_empty() {
            g.protocol_type = Some(req.protocol_type.clone());
        }
        g.members.insert(id.clone(), m);
        let reason = req
            .reason
            .clone()
            .unwrap_or_else(|| "new member joined".to_string());
        history(
            &mut out,
            &g.id,
            now,
            format!("member {id} joined ({reason})"),
        );
        if g.state == State::PreparingRebalance {
            if let Some(since) = g.initial_since {
                // The initial delay waits a little longer for each new member, up to the
                // largest rebalance timeout.
                g.join_deadline =
                    (now + initial_delay).min(since + g.max_rebalance_timeout().max(initial_delay));
            }
        } else {
            Self::prepare_rebalance(g, now, initial_delay, &mut out, "new member joined");
        }
        Self::maybe_complete_join(g, now, &mut out);
        out
    }

    /// Starts a rebalance: parked syncs are answered REBALANCE_IN_PROGRESS and members must
    /// rejoin before the deadline.
    fn prepare_rebalance(
        g: &mut Group,
        now: i64,
        initial_delay: i64,
        out: &mut Vec<Effect>,
        reason: &str,
    ) {
        if g.state == State::PreparingRebalance {
            return;
        }
        let syncs: Vec<(String, Token)> = g
            .members
            .iter_mut()
            .filter_map(|(id, m)| m.sync.take().map(|t| (id.clone(), t)))
            .collect();
        for (id, t) in syncs {
            out.push(Effect::Sync(t, g.sync_response(&id, REBALANCE_IN_PROGRESS)));
        }
        if g.state == State::Empty && initial_delay > 0 {
            g.initial_since = Some(now);
            g.join_deadline = now + initial_delay;
        } else {
            g.initial_since = None;
            g.join_deadline = now + g.max_rebalance_timeout();
        }
        g.state = State::PreparingRebalance;
        history(out, &g.id, now, format!("rebalance started: {reason}"));
    }

    /// Ends the join phase once every member has rejoined (and any initial delay is over), or
    /// at the deadline, dropping members that did not rejoin.
    fn maybe_complete_join(g: &mut Group, now: i64, out: &mut Vec<Effect>) {
        if g.state != State::PreparingRebalance {
            return;
        }
        let all_joined = g.members.values().all(|m| m.join.is_some()) && g.pending.is_empty();
        let delay_over = g.initial_since.is_none() || now >= g.join_deadline;
        if !(all_joined && delay_over) && now < g.join_deadline {
            return;
        }
        let gone: Vec<String> = g
            .members
            .iter()
            .filter(|(_, m)| m.join.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            g.members.remove(&id);
            g.statics.retain(|_, m| *m != id);
            history(
                out,
                &g.id,
                now,
                format!("member {id} removed: did not rejoin in time"),
            );
        }
        g.pending.clear();
        g.initial_since = None;
        g.generation += 1;
        if g.members.is_empty() {
            g.state = State::Empty;
            g.protocol_name = None;
            g.leader = None;
            history(
                out,
                &g.id,
                now,
                format!("generation {} is empty", g.generation),
            );
            out.push(Effect::Store(g.record()));
            return;
        }
        g.protocol_name = g.select_protocol();
        if !g.leader.as_ref().is_some_and(|l| g.members.contains_key(l)) {
            g.leader = g.members.keys().next().cloned();
        }
        g.state = State::CompletingRebalance;
        out.push(Effect::Rebalanced {
            group: g.id.clone(),
        });
        history(
            out,
            &g.id,
            now,
            format!(
                "generation {} formed with {} member(s), leader {}, protocol {}",
                g.generation,
                g.members.len(),
                g.leader.clone().unwrap_or_default(),
                g.protocol_name.clone().unwrap_or_default()
            ),
        );
        let waiting: Vec<(String, Token)> = g
            .members
            .iter_mut()
            .filter_map(|(id, m)| m.join.take().map(|t| (id.clone(), t)))
            .collect();
        for (id, t) in waiting {
            if let Some(m) = g.members.get_mut(&id) {
                m.expires_at = now + i64::from(m.rec.session_timeout_ms);
            }
            out.push(Effect::Join(t, g.join_response(&id, NONE)));
        }
    }

    /// Handles a SyncGroup; the response comes back as an [`Effect::Sync`] for `token`.
    pub fn sync(&mut self, req: SyncRequest, token: Token, now: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        let fail = |out: &mut Vec<Effect>, error: i16| {
            out.push(Effect::Sync(
                token,
                SyncResponse {
                    error,
                    ..SyncResponse::default()
                },
            ));
        };
        let Some(g) = self.groups.get_mut(&req.group_id) else {
            fail(&mut out, UNKNOWN_MEMBER_ID);
            return out;
        };
        let code = check_member(g, &req.member_id, req.group_instance_id.as_deref());
        if code != NONE {
            fail(&mut out, code);
            return out;
        }
        if req.generation_id != g.generation {
            fail(&mut out, ILLEGAL_GENERATION);
            return out;
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != g.protocol_type.as_ref())
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|n| Some(n) != g.protocol_name.as_ref())
        {
            fail(&mut out, INCONSISTENT_GROUP_PROTOCOL);
            return out;
        }
        if let Some(m) = g.members.get_mut(&req.member_id) {
            m.expires_at = now + i64::from(m.rec.session_timeout_ms);
        }
        match g.state {
            State::PreparingRebalance => fail(&mut out, REBALANCE_IN_PROGRESS),
            State::Stable => {
                let resp = g.sync_response(&req.member_id, NONE);
                out.push(Effect::Sync(token, resp));
            }
            State::CompletingRebalance => {
                if let Some(m) = g.members.get_mut(&req.member_id)
                    && let Some(old) = m.sync.replace(token)
                {
                    out.push(Effect::Sync(
                        old,
                        SyncResponse {
                            error: REBALANCE_IN_PROGRESS,
                            ..SyncResponse::default()
                        },
                    ));
                }
                if g.leader.as_deref() == Some(req.member_id.as_str()) {
                    let given: BTreeMap<String, Vec<u8>> = req.assignments.into_iter().collect();
                    for (id, m) in g.members.iter_mut() {
                        m.rec.assignment = given.get(id).cloned().unwrap_or_default();
                    }
                    g.state = State::Stable;
                    history(
                        &mut out,
                        &g.id,
                        now,
                        format!(
                            "generation {} stable: assignments distributed",
                            g.generation
                        ),
                    );
                    out.push(Effect::Store(g.record()));
                    let waiting: Vec<(String, Token)> = g
                        .members
                        .iter_mut()
                        .filter_map(|(id, m)| m.sync.take().map(|t| (id.clone(), t)))
                        .collect();
                    for (id, t) in waiting {
                        out.push(Effect::Sync(t, g.sync_response(&id, NONE)));
                    }
                }
            }
            State::Empty | State::Dead => fail(&mut out, UNKNOWN_MEMBER_ID),
        }
        out
    }

    /// Handles a Heartbeat; returns its error code.
    pub fn heartbeat(
        &mut self,
        group: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: i64,
    ) -> i16 {
        let Some(g) = self.groups.get_mut(group) else {
            return UNKNOWN_MEMBER_ID;
        };
        let code = check_member(g, member_id, instance);
        if code != NONE {
            return code;
        }
        if let Some(m) = g.members.get_mut(member_id) {
            m.expires_at = now + i64::from(m.rec.session_timeout_ms);
        }
        match g.state {
            State::PreparingRebalance => REBALANCE_IN_PROGRESS,
            _ if generation != g.generation => ILLEGAL_GENERATION,
            State::CompletingRebalance | State::Stable => NONE,
            State::Empty | State::Dead => UNKNOWN_MEMBER_ID,
        }
    }

    /// Handles a LeaveGroup for `members` ((member id, instance id)); returns a code per member.
    pub fn leave(
        &mut self,
        group: &str,
        members: &[(String, Option<String>)],
        now: i64,
    ) -> (Vec<i16>, Vec<Effect>) {
        let mut out = Vec::new();
        let initial_delay = self.config.initial_rebalance_delay_ms;
        let Some(g) = self.groups.get_mut(group) else {
            return (vec![UNKNOWN_MEMBER_ID; members.len()], out);
        };
        let mut codes = Vec::with_capacity(members.len());
        let mut left = false;
        for (member_id, instance) in members {
            let id = match instance {
                Some(i) => match g.statics.get(i) {
                    Some(known) if member_id.is_empty() || known == member_id => known.clone(),
                    Some(_) => {
                        codes.push(FENCED_INSTANCE_ID);
                        continue;
                    }
                    None => {
                        codes.push(UNKNOWN_MEMBER_ID);
                        continue;
                    }
                },
                None => member_id.clone(),
            };
            if g.pending.remove(&id).is_some() {
                codes.push(NONE);
                continue;
            }
            let Some(m) = g.members.remove(&id) else {
                codes.push(UNKNOWN_MEMBER_ID);
                continue;
            };
            if let Some(t) = m.join {
                out.push(Effect::Join(
                    t,
                    JoinResponse {
                        error: UNKNOWN_MEMBER_ID,
                        generation_id: -1,
                        member_id: id.clone(),
                        ..JoinResponse::default()
                    },
                ));
            }
            if let Some(t) = m.sync {
                out.push(Effect::Sync(
                    t,
                    SyncResponse {
                        error: UNKNOWN_MEMBER_ID,
                        ..SyncResponse::default()
                    },
                ));
            }
            g.statics.retain(|_, v| *v != id);
            history(&mut out, &g.id, now, format!("member {id} left"));
            codes.push(NONE);
            left = true;
        }
        if left {
            Self::membership_changed(g, now, initial_delay, &mut out, "member left");
        }
        (codes, out)
    }

    fn membership_changed(
        g: &mut Group,
        now: i64,
        initial_delay: i64,
        out: &mut Vec<Effect>,
        why: &str,
    ) {
        match g.state {
            State::Stable | State::CompletingRebalance => {
                if g.members.is_empty() {
                    Self::prepare_rebalance(g, now, 0, out, why);
                    g.initial_since = None;
                    g.join_deadline = now;
                } else {
                    Self::prepare_rebalance(g, now, initial_delay, out, why);
                }
                Self::maybe_complete_join(g, now, out);
            }
            State::PreparingRebalance => Self::maybe_complete_join(g, now, out),
            State::Empty | State::Dead => {}
        }
    }

    /// Checks an OffsetCommit's member and generation. `generation` -1 with an empty member id
    /// is a commit from outside group management, allowed only for groups without members.
    pub fn validate_commit(
        &mut self,
        group: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: i64,
    ) -> i16 {
        let Some(g) = self.groups.get_mut(group) else {
            return if generation < 0 && member_id.is_empty() {
                NONE
            } else {
                ILLEGAL_GENERATION
            };
        };
        if generation < 0 && member_id.is_empty() {
            return if g.members.is_empty() {
                NONE
            } else {
                UNKNOWN_MEMBER_ID
            };
        }
        let code = check_member(g, member_id, instance);
        if code != NONE {
            return code;
        }
        if generation != g.generation {
            return ILLEGAL_GENERATION;
        }
        if let Some(m) = g.members.get_mut(member_id) {
            m.expires_at = now + i64::from(m.rec.session_timeout_ms);
        }
        match g.state {
            State::Stable => NONE,
            State::PreparingRebalance | State::CompletingRebalance => REBALANCE_IN_PROGRESS,
            State::Empty | State::Dead => UNKNOWN_MEMBER_ID,
        }
    }

    /// Makes sure a group exists (an offset commit for a group not under management creates it).
    pub fn ensure_group(&mut self, group: &str) {
        self.groups
            .entry(group.to_string())
            .or_insert_with(|| Group::new(group));
    }

    /// Advances time: members whose session expired are dropped, and join phases past their
    /// deadline complete.
    pub fn tick(&mut self, now: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        let initial_delay = self.config.initial_rebalance_delay_ms;
        for g in self.groups.values_mut() {
            g.pending.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| m.join.is_none() && m.expires_at <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &expired {
                if let Some(m) = g.members.remove(id)
                    && let Some(t) = m.sync
                {
                    out.push(Effect::Sync(
                        t,
                        SyncResponse {
                            error: UNKNOWN_MEMBER_ID,
                            ..SyncResponse::default()
                        },
                    ));
                }
                g.statics.retain(|_, v| v != id);
                history(
                    &mut out,
                    &g.id,
                    now,
                    format!("member {id} expired: no heartbeat within its session timeout"),
                );
            }
            if !expired.is_empty() {
                Self::membership_changed(g, now, initial_delay, &mut out, "member session expired");
            } else {
                Self::maybe_complete_join(g, now, &mut out);
            }
        }
        out
    }

    /// The earliest time at which [`Coordinator::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<i64> {
        self.groups
            .values()
            .flat_map(|g| {
                let join = (g.state == State::PreparingRebalance).then_some(g.join_deadline);
                let members = g
                    .members
                    .values()
                    .filter(|m| m.join.is_none())
                    .map(|m| m.expires_at);
                let pending = g.pending.values().copied();
                join.into_iter()
                    .chain(members)
                    .chain(pending)
                    .collect::<Vec<_>>()
            })
            .min()
    }
}

fn fresh_member(req: &JoinRequest, id: &str, now: i64) -> Member {
    Member {
        rec: MemberRecord {
            member_id: id.to_string(),
            group_instance_id: req.group_instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocols: req.protocols.clone(),
            assignment: Vec::new(),
        },
        expires_at: now + i64::from(req.session_timeout_ms),
        join: None,
        sync: None,
    }
}

/// UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID, or NONE.
fn check_member(g: &Group, member_id: &str, instance: Option<&str>) -> i16 {
    if let Some(i) = instance {
        match g.statics.get(i) {
            Some(known) if known == member_id => {}
            Some(_) => return FENCED_INSTANCE_ID,
            None => return UNKNOWN_MEMBER_ID,
        }
    }
    if g.members.contains_key(member_id) {
        NONE
    } else {
        UNKNOWN_MEMBER_ID
    }
}

#[cfg(test)]
mod tests;
