//! The classic group protocol as a pure state machine (Kafka's `GroupCoordinator` and
//! `GroupMetadata`): requests and clock ticks go in, with the current time as an input;
//! what comes out is a set of [`Effects`]: replies for JoinGroup and SyncGroup requests that
//! were parked until a rebalance finished, and records to persist in `__consumer_offsets`.
//! No I/O happens here, so every timeout is tested by passing a later `now_ms`.

use super::records::{GroupRecord, GroupValue, MemberValue, OffsetValue};
use crate::config::BrokerConfig;
use crate::protocol::codes;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Committed offsets by topic: (partition, offset if one is committed).
pub type TopicOffsets = Vec<(String, Vec<(i32, Option<OffsetValue>)>)>;

/// Identifies a parked JoinGroup or SyncGroup request; the caller maps it to a channel.
pub type Token = u64;

/// The coordinator's settings, read from the broker properties of the same names.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub initial_rebalance_delay_ms: i64,
    pub max_size: usize,
    pub offsets_retention_ms: i64,
    pub retention_check_interval_ms: i64,
    pub offset_metadata_max_bytes: usize,
}

impl GroupConfig {
    pub fn from_broker(c: &BrokerConfig) -> GroupConfig {
        GroupConfig {
            min_session_timeout_ms: c.group_int("group.min.session.timeout.ms") as i32,
            max_session_timeout_ms: c.group_int("group.max.session.timeout.ms") as i32,
            initial_rebalance_delay_ms: c.group_int("group.initial.rebalance.delay.ms"),
            max_size: c.group_int("group.max.size").max(1) as usize,
            offsets_retention_ms: c
                .group_int("offsets.retention.minutes")
                .saturating_mul(60_000),
            retention_check_interval_ms: c.group_int("offsets.retention.check.interval.ms"),
            offset_metadata_max_bytes: c.group_int("offset.metadata.max.bytes") as usize,
        }
    }
}

impl Default for GroupConfig {
    /// Kafka's defaults.
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: i32::MAX as usize,
            offsets_retention_ms: 7 * 24 * 3_600_000,
            retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
        }
    }
}

/// Kafka's group states, named as DescribeGroups and ListGroups show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A JoinGroup request, decoded and version-independent.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub token: Token,
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: an unknown member first gets MEMBER_ID_REQUIRED and its id (KIP-394).
    pub require_known_member_id: bool,
    /// v9+: a rejoining static leader may skip the assignment (KIP-814).
    pub supports_skip_assignment: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: every member's metadata for the selected protocol.
    pub members: Vec<JoinedMember>,
    pub skip_assignment: bool,
}

impl JoinResult {
    pub fn error(error: i16, member_id: &str) -> JoinResult {
        JoinResult {
            error,
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_owned(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub token: Token,
    pub group_id: String,
    pub generation: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: i16) -> SyncResult {
        SyncResult {
            error,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// The answer to a parked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Join(JoinResult),
    Sync(SyncResult),
}

/// What the caller must do after an input: answer parked requests, persist records.
#[derive(Debug, Default)]
pub struct Effects {
    pub replies: Vec<(Token, Reply)>,
    pub records: Vec<GroupRecord>,
}

/// One offset to commit.
#[derive(Debug, Clone)]
pub struct CommitOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub group_id: String,
    pub generation: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub offsets: Vec<CommitOffset>,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberSummary {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct GroupSummary {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberSummary>,
}

#[derive(Debug, Clone)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    /// The protocols the member supports, in its order of preference, with its metadata.
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heartbeat_ms: i64,
    awaiting_join: Option<Token>,
    awaiting_sync: Option<Token>,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
struct Group {
    id: String,
    state: GroupState,
    state_timestamp_ms: i64,
    protocol_type: Option<String>,
    protocol: Option<String>,
    generation: i32,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id → the member id currently holding it.
    static_members: HashMap<String, String>,
    /// Ids handed out with MEMBER_ID_REQUIRED, until they rejoin or expire (ms).
    pending_members: HashMap<String, i64>,
    rebalance_deadline_ms: i64,
    /// During the first rebalance of an empty group: the latest the delay may extend to.
    initial_delay_limit_ms: Option<i64>,
    offsets: BTreeMap<(String, i32), OffsetValue>,
}

impl Group {
    fn new(id: &str, now_ms: i64) -> Group {
        Group {
            id: id.to_owned(),
            state: GroupState::Empty,
            state_timestamp_ms: now_ms,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay_limit_ms: None,
            offsets: BTreeMap::new(),
        }
    }

    fn transition(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_timestamp_ms = now_ms;
    }

    fn is_fenced(&self, instance_id: &Option<String>, member_id: &str) -> bool {
        match instance_id {
            Some(i) => self
                .static_members
                .get(i)
                .is_some_and(|holder| holder != member_id),
            None => false,
        }
    }

    /// Whether a member with these protocols may join: the type must match and at least
    /// one protocol must be supported by every other member.
    fn supports(
        &self,
        member_id: &str,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
    ) -> bool {
        let others: Vec<&Member> = self
            .members
            .values()
            .filter(|m| m.id != member_id)
            .collect();
        if others.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(p, _)| {
                others
                    .iter()
                    .all(|m| m.protocols.iter().any(|(q, _)| q == p))
            })
    }

    /// Kafka's protocol vote: among the protocols every member supports, each member votes
    /// for its most preferred; the most votes win, ties going to the first candidate.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(p, _)| p)
            .filter(|p| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(q, _)| q == *p))
            })
            .collect();
        let mut votes: Vec<usize> = vec![0; candidates.len()];
        for m in self.members.values() {
            if let Some(i) = m
                .protocols
                .iter()
                .find_map(|(p, _)| candidates.iter().position(|c| *c == p))
            {
                votes[i] += 1;
            }
        }
        let mut best: Option<(usize, usize)> = None;
        for (i, v) in votes.iter().enumerate() {
            if best.is_none_or(|(_, bv)| *v > bv) {
                best = Some((i, *v));
            }
        }
        best.map(|(i, _)| candidates[i].clone())
    }

    fn max_rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms as i64)
            .max()
            .unwrap_or(0)
    }

    fn current_join_result(&self, member_id: &str, skip_assignment: bool) -> JoinResult {
        let is_leader = self.leader.as_deref() == Some(member_id);
        let protocol = self.protocol.clone().unwrap_or_default();
        JoinResult {
            error: codes::NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_owned(),
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| JoinedMember {
                        member_id: m.id.clone(),
                        group_instance_id: m.instance_id.clone(),
                        metadata: m.metadata(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            skip_assignment: is_leader && skip_assignment,
        }
    }

    /// The group-metadata record of the current generation.
    fn record(&self) -> GroupRecord {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupRecord::Group {
            group: self.id.clone(),
            value: Some(GroupValue {
                protocol_type: self.protocol_type.clone(),
                generation: self.generation,
                protocol: self.protocol.clone(),
                leader: self.leader.clone(),
                state_timestamp_ms: self.state_timestamp_ms,
                members: self
                    .members
                    .values()
                    .map(|m| MemberValue {
                        member_id: m.id.clone(),
                        group_instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        session_timeout_ms: m.session_timeout_ms,
                        rebalance_timeout_ms: m.rebalance_timeout_ms,
                        subscription: m.metadata(&protocol),
                        assignment: m.assignment.clone(),
                    })
                    .collect(),
            }),
        }
    }

    /// Topics the members subscribe to, from the consumer protocol's subscription
    /// metadata; `None` when some subscription cannot be read (then every topic counts).
    fn subscribed_topics(&self) -> Option<BTreeSet<String>> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol.clone()?;
        let mut topics = BTreeSet::new();
        for m in self.members.values() {
            let mut buf = m.metadata(&protocol);
            if buf.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([buf[0], buf[1]]);
            let _ = bytes::Buf::get_i16(&mut buf);
            // Newer subscription versions than the library knows are read as its newest:
            // the topic list comes first in every version.
            let version = version.clamp(0, 3);
            let sub = ConsumerProtocolSubscription::decode(&mut buf, version).ok()?;
            topics.extend(sub.topics.into_iter().map(|t| t.to_string()));
        }
        Some(topics)
    }
}

/// Every group this coordinator owns, with its members and committed offsets.
pub struct Coordinator {
    config: GroupConfig,
    groups: BTreeMap<String, Group>,
    next_retention_check_ms: i64,
}

impl Coordinator {
    pub fn new(config: GroupConfig, now_ms: i64) -> Coordinator {
        let next_retention_check_ms = now_ms.saturating_add(config.retention_check_interval_ms);
        Coordinator {
            config,
            groups: BTreeMap::new(),
            next_retention_check_ms,
        }
    }

    fn new_member_id(prefix: &str) -> String {
        format!("{prefix}-{}", uuid::Uuid::new_v4())
    }

    /// Replays one record of `__consumer_offsets` (at start-up). Members of a reloaded
    /// group start a fresh session at `now_ms`.
    pub fn load(&mut self, now_ms: i64, record: GroupRecord) {
        match record {
            GroupRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => match value {
                Some(v) => {
                    self.groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group, now_ms))
                        .offsets
                        .insert((topic, partition), v);
                }
                None => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            },
            GroupRecord::Group { group, value } => match value {
                None => {
                    self.groups.remove(&group);
                }
                Some(v) => {
                    let g = self
                        .groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group, now_ms));
                    g.protocol_type = v.protocol_type;
                    g.generation = v.generation;
                    g.protocol = v.protocol.clone();
                    g.leader = v.leader;
                    g.members.clear();
                    g.static_members.clear();
                    let protocol = v.protocol.unwrap_or_default();
                    for m in v.members {
                        if let Some(i) = &m.group_instance_id {
                            g.static_members.insert(i.clone(), m.member_id.clone());
                        }
                        g.members.insert(
                            m.member_id.clone(),
                            Member {
                                id: m.member_id,
                                instance_id: m.group_instance_id,
                                client_id: m.client_id,
                                client_host: m.client_host,
                                session_timeout_ms: m.session_timeout_ms,
                                rebalance_timeout_ms: m.rebalance_timeout_ms,
                                protocols: vec![(protocol.clone(), m.subscription)],
                                assignment: m.assignment,
                                last_heartbeat_ms: now_ms,
                                awaiting_join: None,
                                awaiting_sync: None,
                            },
                        );
                    }
                    let state = if g.members.is_empty() {
                        GroupState::Empty
                    } else {
                        GroupState::Stable
                    };
                    g.transition(state, v.state_timestamp_ms);
                }
            },
        }
    }

    /// Drops the groups `belongs` picks (their `__consumer_offsets` partition moved to
    /// another coordinator): parked JoinGroup and SyncGroup requests of their members are
    /// answered NOT_COORDINATOR, so the clients find the new coordinator. Returns how many
    /// groups were dropped.
    pub fn unload(&mut self, belongs: impl Fn(&str) -> bool, fx: &mut Effects) -> usize {
        let gone: Vec<String> = self.groups.keys().filter(|g| belongs(g)).cloned().collect();
        for id in &gone {
            let Some(g) = self.groups.remove(id) else {
                continue;
            };
            for m in g.members.values() {
                if let Some(t) = m.awaiting_join {
                    fx.replies.push((
                        t,
                        Reply::Join(JoinResult::error(codes::NOT_COORDINATOR, &m.id)),
                    ));
                }
                if let Some(t) = m.awaiting_sync {
                    fx.replies
                        .push((t, Reply::Sync(SyncResult::error(codes::NOT_COORDINATOR))));
                }
            }
        }
        gone.len()
    }

    // --- JoinGroup ------------------------------------------------------------------------

    pub fn join(&mut self, now_ms: i64, req: JoinRequest, fx: &mut Effects) {
        tracing::debug!(
            group = %req.group_id,
            member = %req.member_id,
            state = ?self.groups.get(&req.group_id).map(|g| (g.state, g.generation)),
            "join"
        );
        let token = req.token;
        let reply = |fx: &mut Effects, code: i16, member: &str| {
            fx.replies
                .push((token, Reply::Join(JoinResult::error(code, member))));
        };
        if req.group_id.is_empty() {
            return reply(fx, codes::INVALID_GROUP_ID, &req.member_id);
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return reply(fx, codes::INVALID_SESSION_TIMEOUT, &req.member_id);
        }
        if !self.groups.contains_key(&req.group_id) {
            if !req.member_id.is_empty() {
                return reply(fx, codes::UNKNOWN_MEMBER_ID, &req.member_id);
            }
            self.groups
                .insert(req.group_id.clone(), Group::new(&req.group_id, now_ms));
        }
        let config = &self.config;
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return reply(fx, codes::COORDINATOR_NOT_AVAILABLE, &req.member_id);
        };
        if group.state == GroupState::Dead {
            return reply(fx, codes::COORDINATOR_NOT_AVAILABLE, &req.member_id);
        }
        if !group.supports(&req.member_id, &req.protocol_type, &req.protocols) {
            return reply(fx, codes::INCONSISTENT_GROUP_PROTOCOL, &req.member_id);
        }
        if req.member_id.is_empty() {
            join_unknown(config, group, now_ms, req, fx);
        } else {
            join_known(config, group, now_ms, req, fx);
        }
    }

    // --- SyncGroup ------------------------------------------------------------------------

    pub fn sync(&mut self, now_ms: i64, req: SyncRequest, fx: &mut Effects) {
        tracing::debug!(
            group = %req.group_id,
            member = %req.member_id,
            generation = req.generation,
            state = ?self.groups.get(&req.group_id).map(|g| (g.state, g.generation)),
            "sync"
        );
        let token = req.token;
        let reply = |fx: &mut Effects, code: i16| {
            fx.replies
                .push((token, Reply::Sync(SyncResult::error(code))));
        };
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return reply(fx, codes::UNKNOWN_MEMBER_ID);
        };
        if group.state == GroupState::Dead {
            return reply(fx, codes::COORDINATOR_NOT_AVAILABLE);
        }
        if group.is_fenced(&req.group_instance_id, &req.member_id) {
            return reply(fx, codes::FENCED_INSTANCE_ID);
        }
        if !group.members.contains_key(&req.member_id) {
            return reply(fx, codes::UNKNOWN_MEMBER_ID);
        }
        if req.generation != group.generation {
            return reply(fx, codes::ILLEGAL_GENERATION);
        }
        let type_differs = req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != group.protocol_type.as_ref());
        let name_differs = req
            .protocol_name
            .as_ref()
            .is_some_and(|n| Some(n) != group.protocol.as_ref());
        if type_differs || name_differs {
            return reply(fx, codes::INCONSISTENT_GROUP_PROTOCOL);
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => reply(fx, codes::UNKNOWN_MEMBER_ID),
            GroupState::PreparingRebalance => reply(fx, codes::REBALANCE_IN_PROGRESS),
            GroupState::Stable => {
                if let Some(m) = group.members.get_mut(&req.member_id) {
                    m.last_heartbeat_ms = now_ms;
                    let assignment = m.assignment.clone();
                    fx.replies.push((
                        token,
                        Reply::Sync(SyncResult {
                            error: codes::NONE,
                            protocol_type: group.protocol_type.clone(),
                            protocol_name: group.protocol.clone(),
                            assignment,
                        }),
                    ));
                }
            }
            GroupState::CompletingRebalance => {
                if let Some(m) = group.members.get_mut(&req.member_id) {
                    m.last_heartbeat_ms = now_ms;
                    if let Some(old) = m.awaiting_sync.replace(token) {
                        fx.replies.push((
                            old,
                            Reply::Sync(SyncResult::error(codes::REBALANCE_IN_PROGRESS)),
                        ));
                    }
                }
                if group.leader.as_deref() == Some(req.member_id.as_str()) {
                    let assignments: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    tracing::debug!(
                        group = %group.id,
                        generation = group.generation,
                        leader = %req.member_id,
                        assignments = ?assignments.iter().map(|(m, a)| (m.as_str(), a.len())).collect::<Vec<_>>(),
                        "leader synced"
                    );
                    for m in group.members.values_mut() {
                        m.assignment = assignments.get(&m.id).cloned().unwrap_or_default();
                    }
                    group.transition(GroupState::Stable, now_ms);
                    fx.records.push(group.record());
                    for m in group.members.values_mut() {
                        if let Some(t) = m.awaiting_sync.take() {
                            fx.replies.push((
                                t,
                                Reply::Sync(SyncResult {
                                    error: codes::NONE,
                                    protocol_type: group.protocol_type.clone(),
                                    protocol_name: group.protocol.clone(),
                                    assignment: m.assignment.clone(),
                                }),
                            ));
                        }
                    }
                }
            }
        }
    }

    // --- Heartbeat and LeaveGroup ---------------------------------------------------------

    pub fn heartbeat(
        &mut self,
        now_ms: i64,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: &Option<String>,
    ) -> i16 {
        let Some(group) = self.groups.get_mut(group_id) else {
            return codes::UNKNOWN_MEMBER_ID;
        };
        if group.state == GroupState::Dead {
            return codes::COORDINATOR_NOT_AVAILABLE;
        }
        if group.is_fenced(instance_id, member_id) {
            return codes::FENCED_INSTANCE_ID;
        }
        if group.state == GroupState::Empty {
            return codes::UNKNOWN_MEMBER_ID;
        }
        let state = group.state;
        let current_generation = group.generation;
        let Some(m) = group.members.get_mut(member_id) else {
            return codes::UNKNOWN_MEMBER_ID;
        };
        if generation != current_generation {
            return codes::ILLEGAL_GENERATION;
        }
        m.last_heartbeat_ms = now_ms;
        if state == GroupState::PreparingRebalance {
            codes::REBALANCE_IN_PROGRESS
        } else {
            codes::NONE
        }
    }

    /// LeaveGroup for one or more members (by member id, or by group.instance.id for
    /// static members); one error code per member, in order.
    pub fn leave(
        &mut self,
        now_ms: i64,
        group_id: &str,
        members: &[(String, Option<String>)],
        fx: &mut Effects,
    ) -> Vec<i16> {
        let Some(group) = self.groups.get_mut(group_id) else {
            return vec![codes::UNKNOWN_MEMBER_ID; members.len()];
        };
        if group.state == GroupState::Dead {
            return vec![codes::COORDINATOR_NOT_AVAILABLE; members.len()];
        }
        let mut results = Vec::with_capacity(members.len());
        let mut changed = false;
        for (member_id, instance_id) in members {
            let target = match instance_id {
                Some(i) => match group.static_members.get(i) {
                    None => Err(codes::UNKNOWN_MEMBER_ID),
                    Some(holder) if !member_id.is_empty() && holder != member_id => {
                        Err(codes::FENCED_INSTANCE_ID)
                    }
                    Some(holder) => Ok(holder.clone()),
                },
                None => Ok(member_id.clone()),
            };
            let code = match target {
                Err(code) => code,
                Ok(id) if group.pending_members.remove(&id).is_some() => {
                    changed = true;
                    codes::NONE
                }
                Ok(id) if group.members.contains_key(&id) => {
                    remove_member(group, &id, fx);
                    changed = true;
                    codes::NONE
                }
                Ok(_) => codes::UNKNOWN_MEMBER_ID,
            };
            results.push(code);
        }
        if changed {
            members_changed(&self.config, group, now_ms, fx);
        }
        results
    }

    // --- Offsets --------------------------------------------------------------------------

    /// OffsetCommit after the caller has refused unknown partitions; one code per offset.
    pub fn commit(&mut self, now_ms: i64, req: CommitRequest, fx: &mut Effects) -> Vec<i16> {
        let all = |code: i16| vec![code; req.offsets.len()];
        if req.group_id.is_empty() {
            return all(codes::INVALID_GROUP_ID);
        }
        if !self.groups.contains_key(&req.group_id) {
            if req.generation >= 0 {
                return all(codes::ILLEGAL_GENERATION);
            }
            // A consumer that only stores offsets (assign(), no membership).
            self.groups
                .insert(req.group_id.clone(), Group::new(&req.group_id, now_ms));
        }
        let max_metadata = self.config.offset_metadata_max_bytes;
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return all(codes::COORDINATOR_NOT_AVAILABLE);
        };
        if group.state == GroupState::Dead {
            return all(codes::COORDINATOR_NOT_AVAILABLE);
        }
        if group.is_fenced(&req.group_instance_id, &req.member_id) {
            return all(codes::FENCED_INSTANCE_ID);
        }
        let simple = req.generation < 0 && group.state == GroupState::Empty;
        if !simple {
            if !group.members.contains_key(&req.member_id) {
                return all(codes::UNKNOWN_MEMBER_ID);
            }
            if req.generation != group.generation {
                return all(codes::ILLEGAL_GENERATION);
            }
            if group.state == GroupState::CompletingRebalance {
                return all(codes::REBALANCE_IN_PROGRESS);
            }
            if let Some(m) = group.members.get_mut(&req.member_id) {
                m.last_heartbeat_ms = now_ms;
            }
        }
        req.offsets
            .into_iter()
            .map(|o| {
                if o.metadata.as_ref().is_some_and(|m| m.len() > max_metadata) {
                    return codes::OFFSET_METADATA_TOO_LARGE;
                }
                let value = OffsetValue {
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    // As Kafka: no metadata is stored, and fetched, as "".
                    metadata: Some(o.metadata.unwrap_or_default()),
                    commit_timestamp_ms: now_ms,
                };
                fx.records.push(GroupRecord::Offset {
                    group: group.id.clone(),
                    topic: o.topic.clone(),
                    partition: o.partition,
                    value: Some(value.clone()),
                });
                group.offsets.insert((o.topic, o.partition), value);
                codes::NONE
            })
            .collect()
    }

    /// Committed offsets of a group: of the given partitions (absent ones as `None`), or
    /// of every partition with a committed offset when `topics` is `None`.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> TopicOffsets {
        let group = self.groups.get(group_id);
        match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(t, parts)| {
                    let found = parts
                        .into_iter()
                        .map(|p| {
                            let v = group.and_then(|g| g.offsets.get(&(t.clone(), p)).cloned());
                            (p, v)
                        })
                        .collect();
                    (t, found)
                })
                .collect(),
            None => {
                let mut out: TopicOffsets = Vec::new();
                for ((t, p), v) in group.map(|g| g.offsets.iter()).into_iter().flatten() {
                    match out.last_mut() {
                        Some((last, parts)) if last == t => parts.push((*p, Some(v.clone()))),
                        _ => out.push((t.clone(), vec![(*p, Some(v.clone()))])),
                    }
                }
                out
            }
        }
    }

    /// OffsetDelete: removes committed offsets of topics no member subscribes to.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[(String, i32)],
        fx: &mut Effects,
    ) -> Result<Vec<i16>, i16> {
        let group = match self.groups.get_mut(group_id) {
            Some(g) if g.state != GroupState::Dead => g,
            _ => return Err(codes::GROUP_ID_NOT_FOUND),
        };
        let subscribed = if group.state == GroupState::Empty {
            Some(BTreeSet::new())
        } else if group.protocol_type.as_deref() != Some("consumer") {
            return Err(codes::NON_EMPTY_GROUP);
        } else {
            group.subscribed_topics()
        };
        Ok(partitions
            .iter()
            .map(|(t, p)| {
                if subscribed.as_ref().is_none_or(|s| s.contains(t)) {
                    return codes::GROUP_SUBSCRIBED_TO_TOPIC;
                }
                if group.offsets.remove(&(t.clone(), *p)).is_some() {
                    fx.records.push(GroupRecord::Offset {
                        group: group.id.clone(),
                        topic: t.clone(),
                        partition: *p,
                        value: None,
                    });
                }
                codes::NONE
            })
            .collect())
    }

    // --- Administration -------------------------------------------------------------------

    /// (group id, protocol type, state) of every group, optionally only in some states
    /// (compared case-insensitively, as Kafka does).
    pub fn list(&self, states: &[String]) -> Vec<(String, String, GroupState)> {
        self.groups
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .filter(|g| {
                states.is_empty()
                    || states
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state.name()))
            })
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect()
    }

    /// A group as DescribeGroups shows it: members carry metadata and assignments only
    /// while the group is stable (Kafka's summary).
    pub fn describe(&self, group_id: &str) -> Option<GroupSummary> {
        let g = self.groups.get(group_id)?;
        let stable = g.state == GroupState::Stable;
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupSummary {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members
                .values()
                .map(|m| MemberSummary {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        })
    }

    /// DeleteGroups: only groups without members; their offsets go with them.
    pub fn delete_groups(&mut self, ids: &[String], fx: &mut Effects) -> Vec<i16> {
        ids.iter()
            .map(|id| {
                if id.is_empty() {
                    return codes::INVALID_GROUP_ID;
                }
                match self.groups.get(id) {
                    None => codes::GROUP_ID_NOT_FOUND,
                    Some(g) if g.state == GroupState::Dead => codes::GROUP_ID_NOT_FOUND,
                    Some(g) if g.state != GroupState::Empty => codes::NON_EMPTY_GROUP,
                    Some(_) => {
                        if let Some(g) = self.groups.remove(id) {
                            remove_group_records(&g, fx);
                        }
                        codes::NONE
                    }
                }
            })
            .collect()
    }

    /// Topics were deleted: their committed offsets go (as in Kafka, so a topic created
    /// again under the same name does not resume from offsets of the old one), and an
    /// Empty group left with no offsets goes with them.
    pub fn topics_deleted(&mut self, topics: &BTreeSet<String>, fx: &mut Effects) {
        let mut emptied = Vec::new();
        for group in self.groups.values_mut() {
            let before = group.offsets.len();
            group.offsets.retain(|(topic, partition), _| {
                if !topics.contains(topic) {
                    return true;
                }
                fx.records.push(GroupRecord::Offset {
                    group: group.id.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    value: None,
                });
                false
            });
            if group.offsets.len() < before
                && group.offsets.is_empty()
                && group.state == GroupState::Empty
            {
                emptied.push(group.id.clone());
            }
        }
        for id in emptied {
            if let Some(g) = self.groups.remove(&id) {
                remove_group_records(&g, fx);
            }
        }
    }

    // --- Time -----------------------------------------------------------------------------

    /// Expires sessions, pending member ids and rebalance deadlines; every
    /// offsets.retention.check.interval.ms, removes expired offsets and dead groups.
    pub fn tick(&mut self, now_ms: i64, fx: &mut Effects) {
        let config = &self.config;
        for group in self.groups.values_mut() {
            let before = group.pending_members.len();
            group.pending_members.retain(|_, expiry| *expiry > now_ms);
            let mut changed = group.pending_members.len() != before;
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| {
                    m.awaiting_join.is_none()
                        && m.awaiting_sync.is_none()
                        && now_ms - m.last_heartbeat_ms >= m.session_timeout_ms as i64
                })
                .map(|m| m.id.clone())
                .collect();
            for id in &expired {
                tracing::info!(group = %group.id, member = %id, "member session expired");
                remove_member(group, id, fx);
                changed = true;
            }
            if changed {
                members_changed(config, group, now_ms, fx);
            }
            if group.state == GroupState::PreparingRebalance
                && now_ms >= group.rebalance_deadline_ms
            {
                complete_join(group, now_ms, fx);
            }
            if group.state == GroupState::CompletingRebalance
                && now_ms >= group.rebalance_deadline_ms
            {
                let unsynced: Vec<String> = group
                    .members
                    .values()
                    .filter(|m| m.awaiting_sync.is_none())
                    .map(|m| m.id.clone())
                    .collect();
                for id in &unsynced {
                    tracing::info!(group = %group.id, member = %id, "member did not sync in time");
                    remove_member(group, id, fx);
                }
                members_changed(config, group, now_ms, fx);
            }
        }
        if now_ms >= self.next_retention_check_ms {
            self.next_retention_check_ms =
                now_ms.saturating_add(config.retention_check_interval_ms);
            let retention = config.offsets_retention_ms;
            let mut dead = Vec::new();
            for group in self.groups.values_mut() {
                if group.state != GroupState::Empty {
                    continue;
                }
                let since = group.state_timestamp_ms;
                let expired: Vec<(String, i32)> = group
                    .offsets
                    .iter()
                    .filter(|(_, v)| now_ms - since.max(v.commit_timestamp_ms) >= retention)
                    .map(|(k, _)| k.clone())
                    .collect();
                for (t, p) in expired {
                    group.offsets.remove(&(t.clone(), p));
                    fx.records.push(GroupRecord::Offset {
                        group: group.id.clone(),
                        topic: t,
                        partition: p,
                        value: None,
                    });
                }
                if group.offsets.is_empty() && group.pending_members.is_empty() {
                    dead.push(group.id.clone());
                }
            }
            for id in dead {
                if let Some(g) = self.groups.remove(&id) {
                    remove_group_records(&g, fx);
                }
            }
        }
    }
}

fn remove_group_records(g: &Group, fx: &mut Effects) {
    for (t, p) in g.offsets.keys() {
        fx.records.push(GroupRecord::Offset {
            group: g.id.clone(),
            topic: t.clone(),
            partition: *p,
            value: None,
        });
    }
    fx.records.push(GroupRecord::Group {
        group: g.id.clone(),
        value: None,
    });
}

fn is_full(config: &GroupConfig, group: &Group) -> bool {
    group.members.len() + group.pending_members.len() >= config.max_size
}

fn new_member(req: &JoinRequest, id: String, now_ms: i64) -> Member {
    Member {
        id,
        instance_id: req.group_instance_id.clone(),
        client_id: req.client_id.clone(),
        client_host: req.client_host.clone(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        protocols: req.protocols.clone(),
        assignment: Bytes::new(),
        last_heartbeat_ms: now_ms,
        awaiting_join: Some(req.token),
        awaiting_sync: None,
    }
}

fn join_unknown(
    config: &GroupConfig,
    group: &mut Group,
    now_ms: i64,
    req: JoinRequest,
    fx: &mut Effects,
) {
    if let Some(instance) = req.group_instance_id.clone() {
        if let Some(old_id) = group.static_members.get(&instance).cloned() {
            return rejoin_static(config, group, now_ms, req, old_id, fx);
        }
    }
    if is_full(config, group) {
        fx.replies.push((
            req.token,
            Reply::Join(JoinResult::error(codes::GROUP_MAX_SIZE_REACHED, "")),
        ));
        return;
    }
    let prefix = req
        .group_instance_id
        .clone()
        .unwrap_or_else(|| req.client_id.clone());
    let id = Coordinator::new_member_id(&prefix);
    if req.group_instance_id.is_none() && req.require_known_member_id {
        // KIP-394: the client retries with this id; until then it only holds a place.
        group
            .pending_members
            .insert(id.clone(), now_ms + req.session_timeout_ms as i64);
        fx.replies.push((
            req.token,
            Reply::Join(JoinResult::error(codes::MEMBER_ID_REQUIRED, &id)),
        ));
        return;
    }
    add_member_and_rebalance(config, group, now_ms, &req, id, fx);
}

fn join_known(
    config: &GroupConfig,
    group: &mut Group,
    now_ms: i64,
    req: JoinRequest,
    fx: &mut Effects,
) {
    if group.pending_members.remove(&req.member_id).is_some() {
        let id = req.member_id.clone();
        return add_member_and_rebalance(config, group, now_ms, &req, id, fx);
    }
    let fail = |fx: &mut Effects, code| {
        fx.replies.push((
            req.token,
            Reply::Join(JoinResult::error(code, &req.member_id)),
        ));
    };
    if group.is_fenced(&req.group_instance_id, &req.member_id) {
        return fail(fx, codes::FENCED_INSTANCE_ID);
    }
    let is_leader = group.leader.as_deref() == Some(req.member_id.as_str());
    let Some(member) = group.members.get_mut(&req.member_id) else {
        return fail(fx, codes::UNKNOWN_MEMBER_ID);
    };
    let unchanged = member.protocols == req.protocols;
    match group.state {
        GroupState::Empty | GroupState::Dead => fail(fx, codes::UNKNOWN_MEMBER_ID),
        GroupState::PreparingRebalance => {
            update_member(member, &req, now_ms, fx);
            extend_initial_delay(config, group, now_ms);
            check_join_complete(group, now_ms, fx);
        }
        GroupState::CompletingRebalance if unchanged => {
            let result = group.current_join_result(&req.member_id, false);
            fx.replies.push((req.token, Reply::Join(result)));
        }
        GroupState::Stable if unchanged && !is_leader => {
            let result = group.current_join_result(&req.member_id, false);
            fx.replies.push((req.token, Reply::Join(result)));
        }
        GroupState::CompletingRebalance | GroupState::Stable => {
            update_member(member, &req, now_ms, fx);
            prepare_rebalance(config, group, now_ms, fx);
        }
    }
}

fn update_member(member: &mut Member, req: &JoinRequest, now_ms: i64, fx: &mut Effects) {
    member.protocols = req.protocols.clone();
    member.session_timeout_ms = req.session_timeout_ms;
    member.rebalance_timeout_ms = req.rebalance_timeout_ms;
    member.last_heartbeat_ms = now_ms;
    if let Some(old) = member.awaiting_join.replace(req.token) {
        // The same member asked again (a retry): only the newest request is answered.
        fx.replies.push((
            old,
            Reply::Join(JoinResult::error(codes::REBALANCE_IN_PROGRESS, &member.id)),
        ));
    }
}

/// A static member came back under its group.instance.id with no member id: it takes over
/// its old identity under a new member id, fencing whoever still uses the old one. A stable
/// group whose protocol does not change keeps its assignment: no rebalance (KIP-345).
fn rejoin_static(
    config: &GroupConfig,
    group: &mut Group,
    now_ms: i64,
    req: JoinRequest,
    old_id: String,
    fx: &mut Effects,
) {
    let instance = req.group_instance_id.clone().unwrap_or_default();
    let Some(mut member) = group.members.remove(&old_id) else {
        group.static_members.remove(&instance);
        return add_member_and_rebalance(
            config,
            group,
            now_ms,
            &req,
            Coordinator::new_member_id(&instance),
            fx,
        );
    };
    if let Some(t) = member.awaiting_join.take() {
        fx.replies.push((
            t,
            Reply::Join(JoinResult::error(codes::FENCED_INSTANCE_ID, &old_id)),
        ));
    }
    if let Some(t) = member.awaiting_sync.take() {
        fx.replies
            .push((t, Reply::Sync(SyncResult::error(codes::FENCED_INSTANCE_ID))));
    }
    let new_id = Coordinator::new_member_id(&instance);
    member.id = new_id.clone();
    member.client_id = req.client_id.clone();
    member.client_host = req.client_host.clone();
    member.protocols = req.protocols.clone();
    member.session_timeout_ms = req.session_timeout_ms;
    member.rebalance_timeout_ms = req.rebalance_timeout_ms;
    member.last_heartbeat_ms = now_ms;
    group.members.insert(new_id.clone(), member);
    group.static_members.insert(instance, new_id.clone());
    if group.leader.as_deref() == Some(old_id.as_str()) {
        group.leader = Some(new_id.clone());
    }
    match group.state {
        GroupState::Stable if group.select_protocol() == group.protocol => {
            fx.records.push(group.record());
            let result = group.current_join_result(&new_id, req.supports_skip_assignment);
            fx.replies.push((req.token, Reply::Join(result)));
        }
        GroupState::PreparingRebalance => {
            if let Some(m) = group.members.get_mut(&new_id) {
                m.awaiting_join = Some(req.token);
            }
            check_join_complete(group, now_ms, fx);
        }
        _ => {
            // The protocol vote changes, or the group is between join and sync: the
            // assignment must be computed again with the new member.
            if let Some(m) = group.members.get_mut(&new_id) {
                m.awaiting_join = Some(req.token);
            }
            prepare_rebalance(config, group, now_ms, fx);
        }
    }
}

fn add_member_and_rebalance(
    config: &GroupConfig,
    group: &mut Group,
    now_ms: i64,
    req: &JoinRequest,
    id: String,
    fx: &mut Effects,
) {
    if group.members.is_empty() {
        group.protocol_type = Some(req.protocol_type.clone());
    }
    if let Some(i) = &req.group_instance_id {
        group.static_members.insert(i.clone(), id.clone());
    }
    group
        .members
        .insert(id.clone(), new_member(req, id, now_ms));
    match group.state {
        GroupState::PreparingRebalance => {
            extend_initial_delay(config, group, now_ms);
            check_join_complete(group, now_ms, fx);
        }
        _ => prepare_rebalance(config, group, now_ms, fx),
    }
}

/// While the first rebalance of an empty group waits for more members, each new member
/// pushes the end of the wait by group.initial.rebalance.delay.ms, up to the rebalance
/// timeout (Kafka's InitialDelayedJoin).
fn extend_initial_delay(config: &GroupConfig, group: &mut Group, now_ms: i64) {
    if let Some(limit) = group.initial_delay_limit_ms {
        group.rebalance_deadline_ms = (now_ms + config.initial_rebalance_delay_ms).min(limit);
    }
}

fn prepare_rebalance(config: &GroupConfig, group: &mut Group, now_ms: i64, fx: &mut Effects) {
    if group.state == GroupState::CompletingRebalance {
        // Assignments of the generation that never completed are void.
        for m in group.members.values_mut() {
            m.assignment = Bytes::new();
            if let Some(t) = m.awaiting_sync.take() {
                fx.replies.push((
                    t,
                    Reply::Sync(SyncResult::error(codes::REBALANCE_IN_PROGRESS)),
                ));
            }
        }
    }
    let was_empty = group.state == GroupState::Empty;
    group.transition(GroupState::PreparingRebalance, now_ms);
    let rebalance_timeout = group.max_rebalance_timeout_ms();
    if was_empty && config.initial_rebalance_delay_ms > 0 {
        let limit = now_ms + rebalance_timeout.max(config.initial_rebalance_delay_ms);
        group.initial_delay_limit_ms = Some(limit);
        group.rebalance_deadline_ms = (now_ms + config.initial_rebalance_delay_ms).min(limit);
    } else {
        group.initial_delay_limit_ms = None;
        group.rebalance_deadline_ms = now_ms + rebalance_timeout;
        check_join_complete(group, now_ms, fx);
    }
}

/// After members left or expired: a stable (or completing) group rebalances; a rebalancing
/// group may now have everyone it waits for.
fn members_changed(config: &GroupConfig, group: &mut Group, now_ms: i64, fx: &mut Effects) {
    match group.state {
        GroupState::Stable | GroupState::CompletingRebalance => {
            prepare_rebalance(config, group, now_ms, fx)
        }
        GroupState::PreparingRebalance => check_join_complete(group, now_ms, fx),
        GroupState::Empty | GroupState::Dead => {}
    }
}

fn check_join_complete(group: &mut Group, now_ms: i64, fx: &mut Effects) {
    let all_joined = group.members.values().all(|m| m.awaiting_join.is_some())
        && group.pending_members.is_empty();
    if group.state == GroupState::PreparingRebalance
        && group.initial_delay_limit_ms.is_none()
        && all_joined
    {
        complete_join(group, now_ms, fx);
    }
}

/// Ends the join phase: members that did not rejoin are dropped, the generation moves on,
/// a protocol and a leader are chosen and every parked JoinGroup is answered.
fn complete_join(group: &mut Group, now_ms: i64, fx: &mut Effects) {
    let missing: Vec<String> = group
        .members
        .values()
        .filter(|m| m.awaiting_join.is_none())
        .map(|m| m.id.clone())
        .collect();
    for id in &missing {
        tracing::info!(group = %group.id, member = %id, "member did not rejoin in time");
        remove_member(group, id, fx);
    }
    group.initial_delay_limit_ms = None;
    group.generation = group.generation.wrapping_add(1);
    if group.members.is_empty() {
        group.protocol = None;
        group.leader = None;
        group.transition(GroupState::Empty, now_ms);
        fx.records.push(group.record());
        return;
    }
    group.protocol = group.select_protocol();
    if !group
        .leader
        .as_ref()
        .is_some_and(|l| group.members.contains_key(l))
    {
        group.leader = group.members.keys().next().cloned();
    }
    group.transition(GroupState::CompletingRebalance, now_ms);
    tracing::debug!(
        group = %group.id,
        generation = group.generation,
        leader = ?group.leader,
        protocol = ?group.protocol,
        members = ?group.members.keys().collect::<Vec<_>>(),
        "join complete"
    );
    // Kafka's pending-sync timeout: the leader must send the assignment within the
    // rebalance timeout, or followers parked on SyncGroup would wait forever.
    group.rebalance_deadline_ms = now_ms + group.max_rebalance_timeout_ms();
    let ids: Vec<String> = group.members.keys().cloned().collect();
    for id in ids {
        let result = group.current_join_result(&id, false);
        if let Some(m) = group.members.get_mut(&id) {
            m.last_heartbeat_ms = now_ms;
            if let Some(t) = m.awaiting_join.take() {
                fx.replies.push((t, Reply::Join(result)));
            }
        }
    }
}

fn remove_member(group: &mut Group, id: &str, fx: &mut Effects) {
    let Some(m) = group.members.remove(id) else {
        return;
    };
    if let Some(i) = &m.instance_id {
        if group.static_members.get(i).map(String::as_str) == Some(id) {
            group.static_members.remove(i);
        }
    }
    if let Some(t) = m.awaiting_join {
        fx.replies.push((
            t,
            Reply::Join(JoinResult::error(codes::UNKNOWN_MEMBER_ID, id)),
        ));
    }
    if let Some(t) = m.awaiting_sync {
        fx.replies
            .push((t, Reply::Sync(SyncResult::error(codes::UNKNOWN_MEMBER_ID))));
    }
    if group.leader.as_deref() == Some(id) {
        group.leader = group.members.keys().next().cloned();
    }
}
