//! Consumer groups on the KIP-848 protocol (ConsumerGroupHeartbeat), as a pure state machine.
//!
//! The server computes assignments. Every change to membership, subscriptions or the
//! subscribed topics' partition counts bumps the group epoch; the next heartbeat computes a
//! target assignment for that epoch with the group's assignor (`uniform` or `range`). Each
//! member then reconciles toward its target: partitions it must give up are revoked first
//! (it keeps its epoch until it reports them gone), and partitions still held by another
//! member are handed over only once that member released them. A member reaches the target
//! epoch when nothing is left to revoke.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::codes::*;

/// FENCED_MEMBER_EPOCH, UNSUPPORTED_ASSIGNOR, STALE_MEMBER_EPOCH, INVALID_REQUEST.
pub const FENCED_MEMBER_EPOCH: i16 = 110;
pub const UNSUPPORTED_ASSIGNOR: i16 = 112;
pub const STALE_MEMBER_EPOCH: i16 = 113;
pub const INVALID_REQUEST: i16 = 42;
pub const INVALID_REGULAR_EXPRESSION: i16 = 128;
pub const UNRELEASED_INSTANCE_ID: i16 = 111;

/// The member epoch of a static member that left and will come back within its session
/// (KIP-848's LEAVE_GROUP_STATIC_MEMBER_EPOCH): it keeps its assignment meanwhile.
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// A partition: (topic name, index).
pub type Tp = (String, i32);

/// Settings, with Kafka's defaults.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// `group.consumer.session.timeout.ms`.
    pub session_timeout_ms: i64,
    /// `group.consumer.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: i32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
        }
    }
}

/// The assignors the server offers; the first is the default.
pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

#[derive(Debug, Clone, Default)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// Partitions the member owns now (None: unchanged since its last heartbeat).
    pub owned: Option<Vec<Tp>>,
    pub client_id: String,
    pub client_host: String,
    /// v0: the server makes up member ids; v1+: the client does.
    pub server_generates_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeartbeatResponse {
    pub error: i16,
    pub message: Option<String>,
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's assignment when it changed (None: keep what you have).
    pub assignment: Option<Vec<Tp>>,
}

#[derive(Debug, Clone)]
struct Member {
    id: String,
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    rebalance_timeout_ms: i32,
    subscribed: Vec<String>,
    regex: Option<String>,
    /// `regex`, compiled once.
    pattern: Option<regex::Regex>,
    epoch: i32,
    previous_epoch: i32,
    assigned: BTreeSet<Tp>,
    revoking: BTreeSet<Tp>,
    /// What the member was last told (to send assignments only when they change).
    sent: Option<BTreeSet<Tp>>,
    expires_at: i64,
    revoke_deadline: Option<i64>,
}

#[derive(Debug, Clone, Default)]
struct Group {
    epoch: i32,
    assignment_epoch: i32,
    assignor: String,
    members: BTreeMap<String, Member>,
    target: BTreeMap<String, BTreeSet<Tp>>,
    /// Partition counts of the subscribed topics when the target was computed.
    topics_seen: BTreeMap<String, i32>,
}

/// A member as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignment: Vec<Tp>,
    pub target_assignment: Vec<Tp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    /// "Empty", "Assigning", "Reconciling" or "Stable".
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<MemberDescription>,
}

/// A member as persisted in `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub subscribed: Vec<String>,
    pub regex: Option<String>,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub assigned: Vec<Tp>,
    pub revoking: Vec<Tp>,
}

/// A consumer group's state as persisted: enough for its members to go on heartbeating with
/// their epochs after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub group_id: String,
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<MemberRecord>,
    pub target: BTreeMap<String, Vec<Tp>>,
    pub topics_seen: BTreeMap<String, i32>,
}

/// All KIP-848 consumer groups of a coordinator.
#[derive(Debug, Default)]
pub struct ConsumerGroups {
    config: Config,
    groups: BTreeMap<String, Group>,
    seed: u64,
    counter: u64,
}

/// Whether `topic` matches a subscription pattern in full, as Kafka's RE2/J matcher would.
#[cfg(test)]
fn matches_regex(regex: &str, topic: &str) -> bool {
    compile(regex).is_some_and(|r| r.is_match(topic))
}

/// A subscription pattern anchored at both ends (Kafka matches whole topic names).
fn compile(regex: &str) -> Option<regex::Regex> {
    regex::Regex::new(&format!("^(?:{regex})$")).ok()
}

impl Member {
    fn topics(&self, topics: &BTreeMap<String, i32>) -> Vec<String> {
        let mut out: Vec<String> = self
            .subscribed
            .iter()
            .filter(|t| topics.contains_key(*t))
            .cloned()
            .collect();
        if let Some(r) = &self.pattern {
            out.extend(
                topics
                    .keys()
                    .filter(|t| !t.starts_with("__") && r.is_match(t))
                    .cloned(),
            );
        }
        out.sort();
        out.dedup();
        out
    }
}

/// `range`: per topic, the members subscribed to it (by id) get contiguous ranges.
fn range(
    members: &BTreeMap<String, Member>,
    topics: &BTreeMap<String, i32>,
) -> BTreeMap<String, BTreeSet<Tp>> {
    let mut out: BTreeMap<String, BTreeSet<Tp>> = members
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for (topic, &n) in topics {
        let subs: Vec<&String> = members
            .values()
            .filter(|m| m.topics(topics).contains(topic))
            .map(|m| &m.id)
            .collect();
        if subs.is_empty() {
            continue;
        }
        let (per, extra) = (n as usize / subs.len(), n as usize % subs.len());
        let mut next = 0;
        for (i, m) in subs.iter().enumerate() {
            let count = per + usize::from(i < extra);
            for p in next..next + count {
                out.entry((*m).clone())
                    .or_default()
                    .insert((topic.clone(), p as i32));
            }
            next += count;
        }
    }
    out
}

/// `uniform`: balanced counts, keeping partitions where they are when it can (sticky).
fn uniform(
    members: &BTreeMap<String, Member>,
    topics: &BTreeMap<String, i32>,
    previous: &BTreeMap<String, BTreeSet<Tp>>,
) -> BTreeMap<String, BTreeSet<Tp>> {
    let mut out: BTreeMap<String, BTreeSet<Tp>> = members
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    let subs: BTreeMap<&String, Vec<String>> = members
        .values()
        .map(|m| (&m.id, m.topics(topics)))
        .collect();
    let all: Vec<Tp> = topics
        .iter()
        .filter(|(t, _)| subs.values().any(|s| s.contains(t)))
        .flat_map(|(t, &n)| (0..n).map(move |p| (t.clone(), p)))
        .collect();
    if members.is_empty() || all.is_empty() {
        return out;
    }
    let quota = all.len().div_ceil(members.len());
    let mut unassigned = Vec::new();
    for tp in &all {
        let keeper = previous
            .iter()
            .find(|(m, set)| set.contains(tp) && subs.get(m).is_some_and(|s| s.contains(&tp.0)))
            .map(|(m, _)| m.clone());
        match keeper {
            Some(m) if out.get(&m).is_some_and(|s| s.len() < quota) => {
                out.entry(m).or_default().insert(tp.clone());
            }
            _ => unassigned.push(tp.clone()),
        }
    }
    for tp in unassigned {
        let target = out
            .iter()
            .filter(|(m, _)| subs.get(m).is_some_and(|s| s.contains(&tp.0)))
            .min_by_key(|(m, s)| (s.len(), (*m).clone()))
            .map(|(m, _)| m.clone());
        if let Some(m) = target {
            out.entry(m).or_default().insert(tp);
        }
    }
    out
}

impl Group {
    /// The member with static instance id `instance`.
    fn static_member(&self, instance: &str) -> Option<&Member> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance))
    }

    fn owner_of(&self, tp: &Tp, except: &str) -> bool {
        self.members
            .values()
            .any(|m| m.id != except && (m.assigned.contains(tp) || m.revoking.contains(tp)))
    }

    fn subscribed_topics(&self, topics: &BTreeMap<String, i32>) -> BTreeMap<String, i32> {
        let mut out = BTreeMap::new();
        for m in self.members.values() {
            for t in m.topics(topics) {
                if let Some(&n) = topics.get(&t) {
                    out.insert(t, n);
                }
            }
        }
        out
    }

    fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.epoch > self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.epoch < self.assignment_epoch || !m.revoking.is_empty())
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Moves `member` toward its target; returns whether its assignment changed.
    fn reconcile(&mut self, member_id: &str, now: i64) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let assignment_epoch = self.assignment_epoch;
        let Some(m) = self.members.get(member_id) else {
            return;
        };
        if !m.revoking.is_empty() {
            return; // waiting for the member to give partitions up
        }
        if m.epoch < assignment_epoch {
            let revoke: BTreeSet<Tp> = m.assigned.difference(&target).cloned().collect();
            let m = self.members.get_mut(member_id).expect("member exists");
            if !revoke.is_empty() {
                m.assigned.retain(|tp| target.contains(tp));
                m.revoking = revoke;
                m.revoke_deadline = Some(now + i64::from(m.rebalance_timeout_ms.max(1)));
                return;
            }
            m.previous_epoch = m.epoch;
            m.epoch = assignment_epoch;
        }
        // At the target epoch: take every target partition nobody else still holds.
        let free: Vec<Tp> = target
            .iter()
            .filter(|tp| !self.owner_of(tp, member_id))
            .cloned()
            .collect();
        if let Some(m) = self.members.get_mut(member_id) {
            m.assigned.extend(free);
        }
    }
}

impl ConsumerGroups {
    pub fn new(config: Config, seed: u64) -> Self {
        Self {
            config,
            groups: BTreeMap::new(),
            seed,
            counter: 0,
        }
    }

    /// The group's persistable state.
    pub fn snapshot(&self, group: &str) -> Option<GroupRecord> {
        let g = self.groups.get(group)?;
        Some(GroupRecord {
            group_id: group.to_string(),
            epoch: g.epoch,
            assignment_epoch: g.assignment_epoch,
            assignor: g.assignor.clone(),
            members: g
                .members
                .values()
                .map(|m| MemberRecord {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscribed: m.subscribed.clone(),
                    regex: m.regex.clone(),
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    assigned: m.assigned.iter().cloned().collect(),
                    revoking: m.revoking.iter().cloned().collect(),
                })
                .collect(),
            target: g
                .target
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
                .collect(),
            topics_seen: g.topics_seen.clone(),
        })
    }

    /// Brings a persisted group back; its members must heartbeat within the session timeout.
    pub fn restore(&mut self, r: GroupRecord, now: i64) {
        let session = self.config.session_timeout_ms;
        let members = r
            .members
            .into_iter()
            .map(|m| {
                let member = Member {
                    id: m.member_id.clone(),
                    instance_id: m.instance_id,
                    rack_id: m.rack_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscribed: m.subscribed,
                    pattern: m.regex.as_deref().and_then(compile),
                    regex: m.regex,
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    sent: Some(m.assigned.iter().cloned().collect()),
                    assigned: m.assigned.into_iter().collect(),
                    revoke_deadline: (!m.revoking.is_empty())
                        .then_some(now + i64::from(m.rebalance_timeout_ms.max(1))),
                    revoking: m.revoking.into_iter().collect(),
                    expires_at: now + session,
                };
                (m.member_id, member)
            })
            .collect();
        self.groups.insert(
            r.group_id,
            Group {
                epoch: r.epoch,
                assignment_epoch: r.assignment_epoch,
                assignor: r.assignor,
                members,
                target: r
                    .target
                    .into_iter()
                    .map(|(k, v)| (k, v.into_iter().collect()))
                    .collect(),
                topics_seen: r.topics_seen,
            },
        );
    }

    /// Whether a KIP-848 group with this id exists.
    pub fn contains(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    /// Group ids with their states.
    pub fn list(&self) -> Vec<(String, &'static str)> {
        self.groups
            .iter()
            .map(|(id, g)| (id.clone(), g.state()))
            .collect()
    }

    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        let g = self.groups.get(group)?;
        Some(GroupDescription {
            group_id: group.to_string(),
            state: g.state(),
            group_epoch: g.epoch,
            assignment_epoch: g.assignment_epoch,
            assignor: g.assignor.clone(),
            members: g
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.subscribed.clone(),
                    subscribed_topic_regex: m.regex.clone(),
                    assignment: m.assigned.iter().cloned().collect(),
                    target_assignment: g
                        .target
                        .get(&m.id)
                        .map(|t| t.iter().cloned().collect())
                        .unwrap_or_default(),
                })
                .collect(),
        })
    }

    /// Topics the group consumes (for OffsetDelete).
    pub fn subscribed(&self, group: &str) -> BTreeSet<String> {
        self.groups
            .get(group)
            .map(|g| {
                g.members
                    .values()
                    .flat_map(|m| m.subscribed.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes an empty group. Errors: GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP.
    pub fn delete(&mut self, group: &str) -> i16 {
        match self.groups.get(group) {
            None => GROUP_ID_NOT_FOUND,
            Some(g) if !g.members.is_empty() => NON_EMPTY_GROUP,
            Some(_) => {
                self.groups.remove(group);
                NONE
            }
        }
    }

    /// Checks an OffsetCommit (or OffsetFetch) from a member: its epoch must be current.
    pub fn validate_commit(&self, group: &str, member_id: &str, epoch: i32) -> i16 {
        let Some(g) = self.groups.get(group) else {
            return GROUP_ID_NOT_FOUND;
        };
        let Some(m) = g.members.get(member_id) else {
            return UNKNOWN_MEMBER_ID;
        };
        if epoch > m.epoch {
            FENCED_MEMBER_EPOCH
        } else if epoch < m.epoch && epoch != m.previous_epoch {
            STALE_MEMBER_EPOCH
        } else {
            NONE
        }
    }

    /// Handles a ConsumerGroupHeartbeat. `topics`: partition counts of every topic.
    pub fn heartbeat(
        &mut self,
        req: HeartbeatRequest,
        topics: &BTreeMap<String, i32>,
        now: i64,
    ) -> HeartbeatResponse {
        let interval = self.config.heartbeat_interval_ms;
        let fail = |error: i16, message: &str| HeartbeatResponse {
            error,
            message: Some(message.to_string()),
            member_id: req.member_id.clone(),
            member_epoch: -1,
            heartbeat_interval_ms: 0,
            assignment: None,
        };
        if req.group_id.is_empty() {
            return fail(INVALID_GROUP_ID, "the group id is empty");
        }
        if let Some(a) = &req.server_assignor
            && !ASSIGNORS.contains(&a.as_str())
        {
            return fail(
                UNSUPPORTED_ASSIGNOR,
                "this broker offers the uniform and range assignors",
            );
        }
        // Leaving: epoch -1 (or -2 for a static member that will come back).
        if req.member_epoch < 0 {
            if req.member_epoch < STATIC_LEAVE_EPOCH {
                return fail(INVALID_REQUEST, "the member epoch is invalid");
            }
            if let Some(instance) = &req.instance_id {
                let g = self.groups.get_mut(&req.group_id);
                let Some((g, current)) = g.and_then(|g| {
                    let id = g.static_member(instance)?.id.clone();
                    Some((g, id))
                }) else {
                    return fail(UNKNOWN_MEMBER_ID, "the instance id is unknown");
                };
                if current != req.member_id {
                    return fail(
                        FENCED_INSTANCE_ID,
                        "another member with this instance id replaced this one",
                    );
                }
                if req.member_epoch == STATIC_LEAVE_EPOCH {
                    // Gone for now: it keeps its partitions until it is back or its session
                    // expires (Kafka's static member leave).
                    let m = g.members.get_mut(&current).expect("found above");
                    m.epoch = STATIC_LEAVE_EPOCH;
                    m.revoking.clear();
                    m.revoke_deadline = None;
                    return HeartbeatResponse {
                        member_id: req.member_id.clone(),
                        member_epoch: STATIC_LEAVE_EPOCH,
                        heartbeat_interval_ms: 0,
                        ..HeartbeatResponse::default()
                    };
                }
            } else if req.member_epoch == STATIC_LEAVE_EPOCH {
                return fail(
                    INVALID_REQUEST,
                    "member epoch -2 is for static members: the instance id is missing",
                );
            }
            if let Some(g) = self.groups.get_mut(&req.group_id)
                && g.members.remove(&req.member_id).is_some()
            {
                g.epoch += 1;
                g.target.remove(&req.member_id);
            }
            return HeartbeatResponse {
                member_id: req.member_id.clone(),
                member_epoch: req.member_epoch,
                heartbeat_interval_ms: 0,
                ..HeartbeatResponse::default()
            };
        }
        if let Some(r) = &req.subscribed_topic_regex
            && compile(r).is_none()
        {
            return fail(
                INVALID_REGULAR_EXPRESSION,
                "the subscription pattern is not a valid regular expression",
            );
        }
        let session = self.config.session_timeout_ms;
        let joining = req.member_epoch == 0;
        if joining {
            if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                return fail(
                    INVALID_REQUEST,
                    "a joining member must give its subscription",
                );
            }
            if req.rebalance_timeout_ms < 0 {
                return fail(
                    INVALID_REQUEST,
                    "a joining member must give its rebalance timeout",
                );
            }
            if req.owned.as_ref().is_some_and(|o| !o.is_empty()) {
                return fail(INVALID_REQUEST, "a joining member cannot own partitions");
            }
        }
        let member_id = if req.member_id.is_empty() {
            if !req.server_generates_id || !joining {
                return fail(INVALID_REQUEST, "the member id is empty");
            }
            self.counter += 1;
            format!("{:016x}-{:08x}", self.seed, self.counter)
        } else {
            req.member_id.clone()
        };
        // A static member (with an instance id) is known by it: a heartbeat from a member the
        // instance's current one replaced is fenced, and a new member takes an instance's place
        // only once the current one left with epoch -2 (Kafka's rules).
        let instance_holder = req.instance_id.as_ref().and_then(|instance| {
            let g = self.groups.get(&req.group_id)?;
            let m = g.static_member(instance)?;
            Some((m.id.clone(), m.epoch))
        });
        if let Some((holder, holder_epoch)) = &instance_holder {
            if !joining && *holder != member_id {
                return fail(
                    FENCED_INSTANCE_ID,
                    "another member with this instance id replaced this one",
                );
            }
            if joining && *holder != member_id && *holder_epoch != STATIC_LEAVE_EPOCH {
                return fail(
                    UNRELEASED_INSTANCE_ID,
                    "the instance id is in use by another member of the group",
                );
            }
        } else if !joining && req.instance_id.is_some() {
            return fail(UNKNOWN_MEMBER_ID, "the instance id is unknown");
        }
        if !joining
            && !self
                .groups
                .get(&req.group_id)
                .is_some_and(|g| g.members.contains_key(&member_id))
        {
            return fail(UNKNOWN_MEMBER_ID, "unknown member; rejoin with epoch 0");
        }
        let g = self.groups.entry(req.group_id.clone()).or_default();
        if g.assignor.is_empty() {
            g.assignor = req
                .server_assignor
                .clone()
                .unwrap_or_else(|| ASSIGNORS[0].to_string());
        }
        let replaced = instance_holder
            .filter(|_| joining)
            .and_then(|(holder, _)| g.members.remove(&holder));
        if let Some(old) = replaced {
            // A static member back: the new member takes the old one's place, its partitions
            // and target, without a rebalance of the others (Kafka's replaceMember).
            let target = g.target.remove(&old.id);
            let mut m = old;
            m.id = member_id.clone();
            m.epoch = 0;
            m.previous_epoch = 0;
            m.revoking.clear();
            m.revoke_deadline = None;
            m.sent = None;
            m.expires_at = now + session;
            m.rack_id = req.rack_id.clone();
            m.client_id = req.client_id.clone();
            m.client_host = req.client_host.clone();
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            let mut changed = false;
            if let Some(names) = &req.subscribed_topic_names
                && *names != m.subscribed
            {
                m.subscribed = names.clone();
                changed = true;
            }
            if req.subscribed_topic_regex != m.regex {
                m.regex = req.subscribed_topic_regex.clone();
                m.pattern = m.regex.as_deref().and_then(compile);
                changed = true;
            }
            g.members.insert(member_id.clone(), m);
            if let Some(target) = target {
                g.target.insert(member_id.clone(), target);
            }
            if changed {
                g.epoch += 1;
            }
        } else if joining {
            let fresh = Member {
                id: member_id.clone(),
                instance_id: req.instance_id.clone(),
                rack_id: req.rack_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                subscribed: req.subscribed_topic_names.clone().unwrap_or_default(),
                regex: req.subscribed_topic_regex.clone(),
                pattern: req.subscribed_topic_regex.as_deref().and_then(compile),
                epoch: 0,
                previous_epoch: 0,
                assigned: BTreeSet::new(),
                revoking: BTreeSet::new(),
                sent: None,
                expires_at: now + session,
                revoke_deadline: None,
            };
            // A rejoin replaces the member (it gave up everything it had).
            g.members.insert(member_id.clone(), fresh);
            g.epoch += 1;
        } else {
            let m = g.members.get_mut(&member_id).expect("checked above");
            // A static member that left (epoch -2) comes back only by joining (epoch 0): a late
            // heartbeat of its previous epoch must not revive it.
            if m.epoch == STATIC_LEAVE_EPOCH
                || (req.member_epoch != m.epoch && req.member_epoch != m.previous_epoch)
            {
                return fail(
                    FENCED_MEMBER_EPOCH,
                    "the member epoch is stale; rejoin with epoch 0",
                );
            }
            m.expires_at = now + session;
            let mut changed = false;
            if let Some(names) = &req.subscribed_topic_names
                && *names != m.subscribed
            {
                m.subscribed = names.clone();
                changed = true;
            }
            if req.subscribed_topic_regex.is_some() && req.subscribed_topic_regex != m.regex {
                m.regex = req.subscribed_topic_regex.clone();
                m.pattern = m.regex.as_deref().and_then(compile);
                changed = true;
            }
            if let Some(owned) = &req.owned {
                let owned: BTreeSet<Tp> = owned.iter().cloned().collect();
                // Revocation acknowledged: the member no longer reports those partitions.
                if !m.revoking.is_empty() && m.revoking.is_disjoint(&owned) {
                    m.revoking.clear();
                    m.revoke_deadline = None;
                }
            }
            if changed {
                g.epoch += 1;
            }
        }
        let subscribed = g.subscribed_topics(topics);
        if subscribed != g.topics_seen && (g.assignment_epoch > 0 || g.epoch > 0) {
            g.epoch = g.epoch.max(g.assignment_epoch + 1);
        }
        if g.epoch > g.assignment_epoch {
            g.target = if g.assignor == "range" {
                range(&g.members, &subscribed)
            } else {
                uniform(&g.members, &subscribed, &g.target)
            };
            g.assignment_epoch = g.epoch;
            g.topics_seen = subscribed;
        }
        g.reconcile(&member_id, now);
        let m = g.members.get_mut(&member_id).expect("member exists");
        let send = m.sent.as_ref() != Some(&m.assigned);
        if send {
            m.sent = Some(m.assigned.clone());
        }
        HeartbeatResponse {
            error: NONE,
            message: None,
            member_id,
            member_epoch: m.epoch,
            heartbeat_interval_ms: interval,
            assignment: send.then(|| m.assigned.iter().cloned().collect()),
        }
    }

    /// Drops members whose session expired or that did not revoke in time.
    pub fn tick(&mut self, now: i64) -> Vec<(String, String)> {
        let mut gone = Vec::new();
        for (id, g) in self.groups.iter_mut() {
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| m.expires_at <= now || m.revoke_deadline.is_some_and(|d| d <= now))
                .map(|m| m.id.clone())
                .collect();
            for m in expired {
                g.members.remove(&m);
                g.target.remove(&m);
                g.epoch += 1;
                gone.push((id.clone(), m));
            }
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> BTreeMap<String, i32> {
        BTreeMap::from([("t".to_string(), 6), ("u".to_string(), 2)])
    }

    fn hb(member: &str, epoch: i32, owned: Option<Vec<Tp>>) -> HeartbeatRequest {
        HeartbeatRequest {
            group_id: "g".into(),
            member_id: member.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: 30_000,
            subscribed_topic_names: (epoch == 0).then(|| vec!["t".to_string()]),
            owned: owned.or_else(|| (epoch == 0).then(Vec::new)),
            client_id: "c".into(),
            ..HeartbeatRequest::default()
        }
    }

    #[test]
    fn one_member_gets_everything_then_revokes_before_a_second_gets_its_share() {
        let mut c = ConsumerGroups::new(Config::default(), 1);
        let r = c.heartbeat(hb("a", 0, None), &topics(), 0);
        assert_eq!(r.error, NONE);
        assert_eq!(r.member_epoch, 1);
        let a_all = r.assignment.unwrap();
        assert_eq!(a_all.len(), 6);
        // b joins: epoch 2; b gets nothing yet (all owned by a), a must revoke half.
        let r = c.heartbeat(hb("b", 0, None), &topics(), 10);
        assert_eq!(r.member_epoch, 2);
        assert_eq!(r.assignment, Some(vec![]));
        let r = c.heartbeat(hb("a", 1, Some(a_all.clone())), &topics(), 20);
        assert_eq!(r.member_epoch, 1, "a keeps its epoch until it revokes");
        let a_kept = r.assignment.unwrap();
        assert_eq!(a_kept.len(), 3);
        assert_eq!(c.describe("g").unwrap().state, "Reconciling");
        // b still cannot take a's partitions.
        let r = c.heartbeat(hb("b", 2, Some(vec![])), &topics(), 30);
        assert_eq!(r.assignment, None);
        // a acknowledges; moves to epoch 2; then b receives its three.
        let r = c.heartbeat(hb("a", 1, Some(a_kept.clone())), &topics(), 40);
        assert_eq!(r.member_epoch, 2);
        let r = c.heartbeat(hb("b", 2, Some(vec![])), &topics(), 50);
        let b_got = r.assignment.unwrap();
        assert_eq!(b_got.len(), 3);
        assert!(b_got.iter().all(|tp| !a_kept.contains(tp)));
        assert_eq!(c.describe("g").unwrap().state, "Stable");
        // Commits need the current epoch.
        assert_eq!(c.validate_commit("g", "b", 2), NONE);
        assert_eq!(c.validate_commit("g", "b", 3), FENCED_MEMBER_EPOCH);
        assert_eq!(c.validate_commit("g", "x", 2), UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn leaving_and_expiry_hand_partitions_back() {
        let mut c = ConsumerGroups::new(
            Config {
                session_timeout_ms: 1_000,
                heartbeat_interval_ms: 100,
            },
            1,
        );
        c.heartbeat(hb("a", 0, None), &topics(), 0);
        let r = c.heartbeat(hb("b", 0, None), &topics(), 0);
        assert_eq!(r.heartbeat_interval_ms, 100);
        // a leaves: b's next heartbeats take everything.
        let r = c.heartbeat(hb("a", -1, None), &topics(), 10);
        assert_eq!(r.member_epoch, -1);
        let r = c.heartbeat(hb("b", 2, Some(vec![])), &topics(), 20);
        assert_eq!(r.assignment.map(|a| a.len()), Some(6));
        // b stops heartbeating: gone after the session timeout.
        assert_eq!(c.tick(1_019).len(), 0);
        assert_eq!(c.tick(1_020).len(), 1);
        assert_eq!(c.describe("g").unwrap().state, "Empty");
        assert_eq!(
            c.heartbeat(hb("b", 3, None), &topics(), 1_030).error,
            UNKNOWN_MEMBER_ID
        );
        assert_eq!(c.delete("g"), NONE);
    }

    #[test]
    fn range_and_uniform_assignors_and_new_partitions() {
        let members: BTreeMap<String, Member> = ["a", "b"]
            .iter()
            .map(|id| {
                let m = Member {
                    id: id.to_string(),
                    instance_id: None,
                    rack_id: None,
                    client_id: String::new(),
                    client_host: String::new(),
                    rebalance_timeout_ms: 1,
                    subscribed: vec!["t".into(), "u".into()],
                    regex: None,
                    pattern: None,
                    epoch: 0,
                    previous_epoch: 0,
                    assigned: BTreeSet::new(),
                    revoking: BTreeSet::new(),
                    sent: None,
                    expires_at: 0,
                    revoke_deadline: None,
                };
                (id.to_string(), m)
            })
            .collect();
        let r = range(&members, &topics());
        assert_eq!(
            r["a"]
                .iter()
                .filter(|(t, _)| t == "t")
                .map(|(_, p)| *p)
                .collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(
            r["b"]
                .iter()
                .filter(|(t, _)| t == "u")
                .map(|(_, p)| *p)
                .collect::<Vec<_>>(),
            vec![1]
        );
        let u = uniform(&members, &topics(), &BTreeMap::new());
        assert_eq!(u["a"].len(), 4);
        assert_eq!(u["b"].len(), 4);
        // Sticky: with the previous target, nothing moves.
        assert_eq!(uniform(&members, &topics(), &u), u);
        // A topic growing bumps the epoch on the next heartbeat.
        let mut c = ConsumerGroups::new(Config::default(), 1);
        let r = c.heartbeat(hb("a", 0, None), &topics(), 0);
        let owned = r.assignment.unwrap();
        let mut grown = topics();
        grown.insert("t".into(), 8);
        let r = c.heartbeat(hb("a", 1, Some(owned)), &grown, 10);
        assert_eq!(r.member_epoch, 2);
        assert_eq!(r.assignment.map(|a| a.len()), Some(8));
    }

    #[test]
    fn errors() {
        let mut c = ConsumerGroups::new(Config::default(), 1);
        let mut r = hb("a", 0, None);
        r.server_assignor = Some("roundrobin".into());
        assert_eq!(c.heartbeat(r, &topics(), 0).error, UNSUPPORTED_ASSIGNOR);
        let mut r = hb("a", 0, None);
        r.subscribed_topic_names = None;
        assert_eq!(c.heartbeat(r, &topics(), 0).error, INVALID_REQUEST);
        assert_eq!(c.heartbeat(hb("a", 0, None), &topics(), 0).member_epoch, 1);
        assert_eq!(
            c.heartbeat(hb("a", 7, None), &topics(), 1).error,
            FENCED_MEMBER_EPOCH
        );
        let mut r = hb("", 0, None);
        r.server_generates_id = true;
        let resp = c.heartbeat(r, &topics(), 2);
        assert!(!resp.member_id.is_empty(), "v0: the server makes up the id");
        let snap = c.snapshot("g").unwrap();
        let mut c2 = ConsumerGroups::new(Config::default(), 2);
        c2.restore(snap.clone(), 10);
        assert_eq!(
            c2.snapshot("g").unwrap(),
            snap,
            "restore is the inverse of snapshot"
        );
        assert_eq!(
            c2.heartbeat(hb("a", 1, None), &topics(), 11).error,
            NONE,
            "members go on after a restart"
        );
        assert!(matches_regex("^orders.*", "orders-eu"));
        assert!(!matches_regex("^orders.*", "billing"));
        assert!(matches_regex("audit", "audit"));
        assert!(
            !matches_regex("audit", "audit-2"),
            "the whole name must match"
        );
        let mut r = hb("z", 0, None);
        r.subscribed_topic_regex = Some("(unclosed".into());
        assert_eq!(
            c.heartbeat(r, &topics(), 3).error,
            INVALID_REGULAR_EXPRESSION
        );
    }

    fn static_hb(
        member: &str,
        instance: &str,
        epoch: i32,
        owned: Option<Vec<Tp>>,
    ) -> HeartbeatRequest {
        HeartbeatRequest {
            instance_id: Some(instance.into()),
            ..hb(member, epoch, owned)
        }
    }

    /// Heartbeats a member from `state` (its epoch and partitions) until it is stable; returns
    /// its sorted partitions.
    fn settle(
        c: &mut ConsumerGroups,
        member: &str,
        instance: Option<&str>,
        state: &mut (i32, Vec<Tp>),
        now: i64,
    ) -> Vec<Tp> {
        for i in 0..10 {
            let mut r = hb(member, state.0, Some(state.1.clone()));
            r.instance_id = instance.map(str::to_string);
            let resp = c.heartbeat(r, &topics(), now + i);
            assert_eq!(resp.error, NONE, "{resp:?}");
            state.0 = resp.member_epoch;
            if let Some(a) = resp.assignment {
                state.1 = a;
            }
        }
        let mut owned = state.1.clone();
        owned.sort();
        owned
    }

    /// KIP-848 static membership, as Kafka's GroupMetadataManager: a static member that leaves
    /// with epoch -2 keeps its partitions, and the member that comes back with its instance id
    /// takes them over without a rebalance of the others; an instance id in use is refused; a
    /// replaced member is fenced; the session still bounds the absence.
    #[test]
    fn a_static_member_comes_back_to_its_partitions() {
        let mut c = ConsumerGroups::new(Config::default(), 1);
        let (mut a, mut b) = ((0, vec![]), (0, vec![]));
        settle(&mut c, "a", Some("app-1"), &mut a, 0);
        let b_parts = settle(&mut c, "b", None, &mut b, 100);
        let a_parts = settle(&mut c, "a", Some("app-1"), &mut a, 200);
        let b_parts = if b_parts.len() + a_parts.len() == 6 {
            b_parts
        } else {
            settle(&mut c, "b", None, &mut b, 250)
        };
        assert_eq!(a_parts.len() + b_parts.len(), 6);
        let group_epoch = c.describe("g").unwrap().group_epoch;

        // Another member cannot take the instance id while "a" holds it.
        let taken = c.heartbeat(static_hb("a2", "app-1", 0, None), &topics(), 300);
        assert_eq!(taken.error, UNRELEASED_INSTANCE_ID);
        // "a" leaves for a restart: it keeps its partitions, nothing is rebalanced.
        let left = c.heartbeat(
            static_hb("a", "app-1", STATIC_LEAVE_EPOCH, None),
            &topics(),
            300,
        );
        assert_eq!((left.error, left.member_epoch), (NONE, STATIC_LEAVE_EPOCH));
        let d = c.describe("g").unwrap();
        assert_eq!(d.group_epoch, group_epoch, "no rebalance");
        let gone = d.members.iter().find(|m| m.member_id == "a").unwrap();
        assert_eq!(
            (gone.member_epoch, gone.assignment.clone()),
            (STATIC_LEAVE_EPOCH, a_parts.clone())
        );
        // A late heartbeat of the member that left, in either epoch it may still use, does
        // not bring it back.
        let previous = c
            .snapshot("g")
            .unwrap()
            .members
            .iter()
            .find(|m| m.member_id == "a")
            .unwrap()
            .previous_epoch;
        for epoch in [a.0, previous] {
            let late = c.heartbeat(static_hb("a", "app-1", epoch, None), &topics(), 305);
            assert_eq!(late.error, FENCED_MEMBER_EPOCH, "epoch {epoch}");
        }
        // A heartbeat for the instance from a member id it does not have is fenced.
        let stale = c.heartbeat(static_hb("zz", "app-1", 3, None), &topics(), 310);
        assert_eq!(stale.error, FENCED_INSTANCE_ID);

        // Back with a new member id: the same partitions at once, and the others keep theirs.
        let back = c.heartbeat(static_hb("a2", "app-1", 0, Some(vec![])), &topics(), 400);
        assert_eq!(back.error, NONE);
        let mut got = back.assignment.expect("its partitions");
        got.sort();
        assert_eq!(got, a_parts);
        assert!(back.member_epoch > 0);
        let d = c.describe("g").unwrap();
        assert_eq!(d.group_epoch, group_epoch, "still no rebalance");
        assert!(
            d.members.iter().all(|m| m.member_id != "a"),
            "the old member is gone"
        );
        // The replaced member is fenced.
        let old = c.heartbeat(
            static_hb("a", "app-1", back.member_epoch, None),
            &topics(),
            410,
        );
        assert_eq!(old.error, FENCED_INSTANCE_ID);
        // A static leave survives a move of the coordinator (snapshot and restore).
        let left = c.heartbeat(
            static_hb("a2", "app-1", STATIC_LEAVE_EPOCH, None),
            &topics(),
            500,
        );
        assert_eq!(left.member_epoch, STATIC_LEAVE_EPOCH);
        let mut moved = ConsumerGroups::new(Config::default(), 2);
        moved.restore(c.snapshot("g").unwrap(), 600);
        let back = moved.heartbeat(static_hb("a3", "app-1", 0, Some(vec![])), &topics(), 700);
        let mut got = back.assignment.expect("its partitions");
        got.sort();
        assert_eq!(got, a_parts);
        // Gone longer than its session: removed, its partitions go to the others.
        let left = moved.heartbeat(
            static_hb("a3", "app-1", STATIC_LEAVE_EPOCH, None),
            &topics(),
            800,
        );
        assert_eq!(left.error, NONE);
        settle(&mut moved, "b", None, &mut b, 800);
        let gone = moved.tick(800 + Config::default().session_timeout_ms + 1);
        assert_eq!(gone, vec![("g".to_string(), "a3".to_string())]);
        let b_all = settle(
            &mut moved,
            "b",
            None,
            &mut b,
            800 + Config::default().session_timeout_ms + 2,
        );
        assert_eq!(b_all.len(), 6);
        // Epoch -2 needs an instance id.
        assert_eq!(
            c.heartbeat(hb("b", STATIC_LEAVE_EPOCH, None), &topics(), 900)
                .error,
            INVALID_REQUEST
        );
    }
}
