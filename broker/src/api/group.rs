//! The consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups and OffsetDelete.
//! Each handler turns a request of any supported version into the coordinator's
//! version-independent input and builds a response holding only fields of that version
//! (kafka-protocol refuses to encode a non-default value a version lacks).

use super::{msg, publish};
use crate::group::{
    partition_for, CommitOffset, CommitRequest, JoinRequest, OffsetsLog, SyncRequest, OFFSETS_TOPIC,
};
use crate::metadata::NewTopic;
use crate::node::Broker;
use crate::protocol::codes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, RequestHeader, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Kafka's "authorized operations were not requested" marker.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

fn opt_string(v: &Option<StrBytes>) -> Option<String> {
    v.as_ref().map(|x| x.to_string())
}

/// The broker's `__consumer_offsets`, created on first use.
pub struct BrokerOffsetsLog<'a>(pub &'a Broker);

impl OffsetsLog for BrokerOffsetsLog<'_> {
    fn append(&self, group_id: &str, batch: &[u8]) -> Result<(), i16> {
        let broker = self.0;
        let partitions = offsets_topic_partitions(broker)?;
        // Only the partition's leader writes: a follower's log is its leader's copy.
        let p = broker
            .replicas
            .leader_of(OFFSETS_TOPIC, partition_for(group_id, partitions))
            .ok_or(codes::NOT_COORDINATOR)?;
        broker
            .replicas
            .append(&p, batch, -1)
            .map(|_| ())
            .map_err(|e| {
                tracing::error!(cause = %e, group = group_id, "appending to __consumer_offsets failed");
                codes::COORDINATOR_NOT_AVAILABLE
            })
    }
}

/// The partition count of `__consumer_offsets` if the topic exists.
fn offsets_topic_partitions(broker: &Broker) -> Result<i32, i16> {
    broker
        .controller
        .image()
        .topics
        .get(OFFSETS_TOPIC)
        .map(|t| t.partitions.len() as i32)
        .ok_or(codes::COORDINATOR_NOT_AVAILABLE)
}

/// The partition count of `__consumer_offsets`, creating the topic (compacted, with the
/// offsets.topic.* settings) if it does not exist yet, as Kafka does on first use.
pub async fn ensure_offsets_topic(broker: &Broker) -> Result<i32, i16> {
    if let Ok(partitions) = offsets_topic_partitions(broker) {
        return Ok(partitions);
    }
    let cfg = &broker.config;
    let mut configs = BTreeMap::new();
    configs.insert("cleanup.policy".to_string(), "compact".to_string());
    configs.insert(
        "segment.bytes".to_string(),
        cfg.group_int("offsets.topic.segment.bytes").to_string(),
    );
    let topic = NewTopic {
        name: OFFSETS_TOPIC.to_string(),
        num_partitions: cfg.group_int("offsets.topic.num.partitions") as i32,
        replication_factor: cfg.offsets_topic_replication_factor(),
        assignments: Vec::new(),
        configs,
    };
    // Not on a disk that cannot hold its partitions (it would be created in part).
    if let Err(e) = broker
        .replicas
        .check_room(topic.num_partitions.max(1) as usize)
    {
        tracing::error!(cause = %e, "cannot create {OFFSETS_TOPIC}: no room in the log directories");
        return Err(codes::COORDINATOR_NOT_AVAILABLE);
    }
    let result = broker.controller.create_topics(&[topic], false).await;
    match result.first() {
        Some(Ok(id)) => tracing::info!(%id, "created {OFFSETS_TOPIC}"),
        // Created concurrently by another request: use it.
        Some(Err(e)) if e.code == codes::TOPIC_ALREADY_EXISTS => {}
        Some(Err(e)) => {
            tracing::error!(code = e.code, message = %e.message, "creating {OFFSETS_TOPIC} failed");
            return Err(codes::COORDINATOR_NOT_AVAILABLE);
        }
        None => return Err(codes::COORDINATOR_NOT_AVAILABLE),
    }
    let image = broker.controller.image();
    publish(broker, &image);
    image
        .topics
        .get(OFFSETS_TOPIC)
        .map(|t| t.partitions.len() as i32)
        .ok_or(codes::COORDINATOR_NOT_AVAILABLE)
}

/// Periodic work of the coordinator: session and rebalance timeouts, offset retention.
pub fn tick(broker: &Broker) {
    broker.groups.tick(&BrokerOffsetsLog(broker));
}

/// The coordinator of one key at its address on `listener`: (node id, host, port), or an
/// error code and message.
async fn coordinator_for(
    broker: &Broker,
    listener: &str,
    key_type: i8,
    key: &str,
) -> Result<(i32, String, i32), (i16, String)> {
    match key_type {
        KEY_TYPE_GROUP => {}
        KEY_TYPE_TRANSACTION => {
            // Not COORDINATOR_NOT_AVAILABLE, which clients retry until they time out: this
            // code is fatal to a transactional producer, so it fails at once.
            return Err((
                codes::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                "Transactions are not supported by Strom.".into(),
            ));
        }
        other => {
            return Err((
                codes::INVALID_REQUEST,
                format!("Unknown coordinator key type {other}."),
            ))
        }
    }
    if key.is_empty() {
        return Err((codes::INVALID_REQUEST, "The group id is empty.".into()));
    }
    let partitions = ensure_offsets_topic(broker)
        .await
        .map_err(|c| (c, "The coordinator is not available.".to_string()))?;
    let index = partition_for(key, partitions);
    let image = broker.controller.image();
    let leader = image
        .topics
        .get(OFFSETS_TOPIC)
        .and_then(|t| t.partitions.get(&index))
        .map(|p| p.leader);
    let coordinator = leader.and_then(|l| image.brokers.get(&l));
    match coordinator.and_then(|b| Some((b, b.endpoint(listener)?))) {
        // The coordinator is the partition's leader; when that is this broker it must
        // have loaded the partition's groups before it says so.
        Some((b, e)) if b.id != broker.node_id || broker.groups.owns(key).is_ok() => {
            Ok((b.id, e.host.clone(), e.port as i32))
        }
        _ => Err((
            codes::COORDINATOR_NOT_AVAILABLE,
            "The coordinator is not available.".into(),
        )),
    }
}

pub async fn find_coordinator(
    broker: &Broker,
    listener: &str,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    if version >= 4 {
        let mut coordinators = Vec::with_capacity(req.coordinator_keys.len());
        for key in &req.coordinator_keys {
            coordinators.push({
                let c = Coordinator::default().with_key(key.clone());
                match coordinator_for(broker, listener, req.key_type, key).await {
                    Ok((id, host, port)) => c
                        .with_node_id(BrokerId(id))
                        .with_host(s(&host))
                        .with_port(port),
                    Err((code, message)) => c
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(code)
                        .with_error_message(msg(message)),
                }
            });
        }
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let key_type = if version >= 1 {
        req.key_type
    } else {
        KEY_TYPE_GROUP
    };
    let resp = FindCoordinatorResponse::default();
    match coordinator_for(broker, listener, key_type, &req.key).await {
        Ok((id, host, port)) => resp
            .with_node_id(BrokerId(id))
            .with_host(s(&host))
            .with_port(port),
        Err((code, message)) => {
            let resp = resp
                .with_error_code(code)
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            if version >= 1 {
                resp.with_error_message(msg(message))
            } else {
                resp
            }
        }
    }
}

pub async fn join_group(
    broker: &Broker,
    header: &RequestHeader,
    peer: SocketAddr,
    req: JoinGroupRequest,
    version: i16,
) -> JoinGroupResponse {
    let input = JoinRequest {
        token: 0,
        group_id: req.group_id.to_string(),
        member_id: req.member_id.to_string(),
        group_instance_id: if version >= 5 {
            opt_string(&req.group_instance_id)
        } else {
            None
        },
        client_id: opt_string(&header.client_id).unwrap_or_default(),
        client_host: format!("/{}", peer.ip()),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let r = match broker.groups.owns(&input.group_id) {
        Err(code) => crate::group::JoinResult::error(code, &input.member_id),
        Ok(()) => broker.groups.join(&BrokerOffsetsLog(broker), input).await,
    };
    let members = r
        .members
        .into_iter()
        .map(|m| {
            let jm = JoinGroupResponseMember::default()
                .with_member_id(s(&m.member_id))
                .with_metadata(m.metadata);
            if version >= 5 {
                jm.with_group_instance_id(m.group_instance_id.as_deref().map(s))
            } else {
                jm
            }
        })
        .collect();
    let mut resp = JoinGroupResponse::default()
        .with_error_code(r.error)
        .with_generation_id(r.generation)
        .with_leader(s(&r.leader))
        .with_member_id(s(&r.member_id))
        .with_members(members);
    if version >= 7 {
        resp = resp
            .with_protocol_type(r.protocol_type.as_deref().map(s))
            .with_protocol_name(r.protocol_name.as_deref().map(s));
    } else {
        // Before v7 the protocol name is not nullable.
        resp = resp.with_protocol_name(Some(s(r.protocol_name.as_deref().unwrap_or(""))));
    }
    if version >= 9 {
        resp = resp.with_skip_assignment(r.skip_assignment);
    }
    resp
}

pub async fn sync_group(broker: &Broker, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let input = SyncRequest {
        token: 0,
        group_id: req.group_id.to_string(),
        generation: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: if version >= 3 {
            opt_string(&req.group_instance_id)
        } else {
            None
        },
        protocol_type: if version >= 5 {
            opt_string(&req.protocol_type)
        } else {
            None
        },
        protocol_name: if version >= 5 {
            opt_string(&req.protocol_name)
        } else {
            None
        },
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let r = match broker.groups.owns(&input.group_id) {
        Err(code) => crate::group::SyncResult::error(code),
        Ok(()) => broker.groups.sync(&BrokerOffsetsLog(broker), input).await,
    };
    let resp = SyncGroupResponse::default()
        .with_error_code(r.error)
        .with_assignment(r.assignment);
    if version >= 5 {
        resp.with_protocol_type(r.protocol_type.as_deref().map(s))
            .with_protocol_name(r.protocol_name.as_deref().map(s))
    } else {
        resp
    }
}

pub fn heartbeat(broker: &Broker, req: HeartbeatRequest, version: i16) -> HeartbeatResponse {
    let instance = if version >= 3 {
        opt_string(&req.group_instance_id)
    } else {
        None
    };
    let code = match broker.groups.owns(&req.group_id) {
        Err(code) => code,
        Ok(()) => {
            broker
                .groups
                .heartbeat(&req.group_id, req.generation_id, &req.member_id, &instance)
        }
    };
    HeartbeatResponse::default().with_error_code(code)
}

pub fn leave_group(broker: &Broker, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.to_string(), opt_string(&m.group_instance_id)))
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    if let Err(code) = broker.groups.owns(&req.group_id) {
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let results = broker
        .groups
        .leave(&BrokerOffsetsLog(broker), &req.group_id, &members);
    if version < 3 {
        return LeaveGroupResponse::default()
            .with_error_code(results.first().copied().unwrap_or(codes::NONE));
    }
    LeaveGroupResponse::default().with_members(
        members
            .into_iter()
            .zip(results)
            .map(|((member_id, instance), code)| {
                MemberResponse::default()
                    .with_member_id(s(&member_id))
                    .with_group_instance_id(instance.as_deref().map(s))
                    .with_error_code(code)
            })
            .collect(),
    )
}

fn partition_exists(broker: &Broker, topic: &str, partition: i32) -> bool {
    broker
        .controller
        .image()
        .topics
        .get(topic)
        .is_some_and(|t| t.partitions.contains_key(&partition))
}

/// Waits until every in-sync replica of the group's `__consumer_offsets` partition has
/// what the coordinator just wrote (offsets.commit.timeout.ms at most), so an acknowledged
/// commit survives the coordinator's failover. `Err` is the code to answer with, mapped
/// as Kafka's coordinator maps a failed write.
async fn await_commit_replicated(broker: &Broker, group_id: &str) -> Result<(), i16> {
    let partitions = offsets_topic_partitions(broker)?;
    let p = broker
        .replicas
        .leader_of(OFFSETS_TOPIC, partition_for(group_id, partitions))
        .ok_or(codes::NOT_COORDINATOR)?;
    let timeout = broker.config.group_int("offsets.commit.timeout.ms").max(1) as u64;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(timeout);
    match super::data::await_isr(broker, &p, p.log_end_offset(), deadline).await {
        None => Ok(()),
        Some((code, message)) => {
            tracing::debug!(group = group_id, code, %message, "an offset commit was not replicated");
            Err(if code == codes::NOT_LEADER_OR_FOLLOWER {
                codes::NOT_COORDINATOR
            } else {
                codes::COORDINATOR_NOT_AVAILABLE
            })
        }
    }
}

pub async fn offset_commit(
    broker: &Broker,
    req: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    // Unknown partitions are refused before the group is consulted, as Kafka does.
    let mut offsets = Vec::new();
    let mut codes_by_partition: Vec<Vec<Option<i16>>> = Vec::new();
    for t in &req.topics {
        let mut row = Vec::new();
        for p in &t.partitions {
            if partition_exists(broker, &t.name, p.partition_index) {
                offsets.push(CommitOffset {
                    topic: t.name.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: if version >= 6 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: opt_string(&p.committed_metadata),
                });
                row.push(None);
            } else {
                row.push(Some(codes::UNKNOWN_TOPIC_OR_PARTITION));
            }
        }
        codes_by_partition.push(row);
    }
    let owned = broker.groups.owns(&req.group_id);
    let mut results = if offsets.is_empty() {
        Vec::new()
    } else if let Err(code) = owned {
        vec![code; offsets.len()]
    } else {
        broker.groups.commit(
            &BrokerOffsetsLog(broker),
            CommitRequest {
                group_id: req.group_id.to_string(),
                generation: req.generation_id_or_member_epoch,
                member_id: req.member_id.to_string(),
                group_instance_id: if version >= 7 {
                    opt_string(&req.group_instance_id)
                } else {
                    None
                },
                offsets,
            },
        )
    };
    if owned.is_ok() && results.contains(&codes::NONE) {
        if let Err(code) = await_commit_replicated(broker, &req.group_id).await {
            for c in results.iter_mut().filter(|c| **c == codes::NONE) {
                *c = code;
            }
        }
    }
    let mut results = results.into_iter();
    let topics = req
        .topics
        .into_iter()
        .zip(codes_by_partition)
        .map(|(t, row)| {
            let partitions = t
                .partitions
                .iter()
                .zip(row)
                .map(|(p, refused)| {
                    let code = refused
                        .or_else(|| results.next())
                        .unwrap_or(codes::UNKNOWN_SERVER_ERROR);
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// (partition, offset, leader epoch, metadata) rows of one topic.
type FetchedRows = Vec<(i32, i64, i32, String)>;

fn fetch_group_offsets(
    broker: &Broker,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, FetchedRows)> {
    broker
        .groups
        .fetch_offsets(group_id, topics)
        .into_iter()
        .map(|(t, parts)| {
            let rows = parts
                .into_iter()
                .map(|(p, v)| match v {
                    Some(v) => (p, v.offset, v.leader_epoch, v.metadata.unwrap_or_default()),
                    None => (p, -1, -1, String::new()),
                })
                .collect();
            (t, rows)
        })
        .collect()
}

pub fn offset_fetch(broker: &Broker, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let topics = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.to_string(), t.partition_indexes))
                        .collect()
                });
                if let Err(code) = broker.groups.owns(&g.group_id) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_error_code(code);
                }
                let fetched = fetch_group_offsets(broker, &g.group_id, topics);
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(
                        fetched
                            .into_iter()
                            .map(|(t, rows)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(s(&t)))
                                    .with_partitions(
                                        rows.into_iter()
                                            .map(|(p, o, e, m)| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(o)
                                                    .with_committed_leader_epoch(e)
                                                    .with_metadata(Some(s(&m)))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    if let Err(code) = broker.groups.owns(&req.group_id) {
        // The top-level error arrived with v2; v1 carries it per requested partition.
        if version >= 2 {
            return OffsetFetchResponse::default().with_error_code(code);
        }
        return OffsetFetchResponse::default().with_topics(
            req.topics
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    OffsetFetchResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(
                            t.partition_indexes
                                .into_iter()
                                .map(|p| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    }
    let topics = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    let fetched = fetch_group_offsets(broker, &req.group_id, topics);
    OffsetFetchResponse::default().with_topics(
        fetched
            .into_iter()
            .map(|(t, rows)| {
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(s(&t)))
                    .with_partitions(
                        rows.into_iter()
                            .map(|(p, o, e, m)| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(o)
                                    .with_committed_leader_epoch(if version >= 5 { e } else { -1 })
                                    .with_metadata(Some(s(&m)))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

pub fn list_groups(broker: &Broker, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let states: Vec<String> = if version >= 4 {
        req.states_filter.iter().map(|x| x.to_string()).collect()
    } else {
        Vec::new()
    };
    // Every Strom group is a classic group (no KIP-848 consumer groups yet).
    let classic_wanted = version < 5
        || req.types_filter.is_empty()
        || req
            .types_filter
            .iter()
            .any(|t| t.eq_ignore_ascii_case("classic"));
    let groups = if classic_wanted {
        broker.groups.list(&states)
    } else {
        Vec::new()
    };
    ListGroupsResponse::default().with_groups(
        groups
            .into_iter()
            .map(|(id, protocol_type, state)| {
                let mut g = ListedGroup::default()
                    .with_group_id(GroupId(s(&id)))
                    .with_protocol_type(s(&protocol_type));
                if version >= 4 {
                    g = g.with_group_state(s(state.name()));
                }
                if version >= 5 {
                    g = g.with_group_type(s("classic"));
                }
                g
            })
            .collect(),
    )
}

pub fn describe_groups(
    broker: &Broker,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|id| {
            let mut g = DescribedGroup::default().with_group_id(id.clone());
            if version >= 3 {
                g = g.with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
            }
            if id.is_empty() {
                return g.with_error_code(codes::INVALID_GROUP_ID);
            }
            if let Err(code) = broker.groups.owns(&id) {
                return g.with_error_code(code);
            }
            let Some(summary) = broker.groups.describe(&id) else {
                g = g.with_group_state(s("Dead"));
                if version >= 6 {
                    // Kafka 4 (KIP-1043) tells a missing group apart from an empty one.
                    g = g
                        .with_error_code(codes::GROUP_ID_NOT_FOUND)
                        .with_error_message(msg(format!("Group {} not found.", &*id)));
                }
                return g;
            };
            let members = summary
                .members
                .into_iter()
                .map(|m| {
                    let dm = DescribedGroupMember::default()
                        .with_member_id(s(&m.member_id))
                        .with_client_id(s(&m.client_id))
                        .with_client_host(s(&m.client_host))
                        .with_member_metadata(m.metadata)
                        .with_member_assignment(m.assignment);
                    if version >= 4 {
                        dm.with_group_instance_id(m.group_instance_id.as_deref().map(s))
                    } else {
                        dm
                    }
                })
                .collect();
            g.with_group_state(s(summary.state.name()))
                .with_protocol_type(s(&summary.protocol_type))
                .with_protocol_data(s(&summary.protocol))
                .with_members(members)
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub fn delete_groups(broker: &Broker, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let (ids, refused): (Vec<String>, Vec<String>) = req
        .groups_names
        .iter()
        .map(|g| g.to_string())
        .partition(|g| broker.groups.owns(g).is_ok());
    let mut codes_of: BTreeMap<String, i16> = refused
        .into_iter()
        .map(|g| (g, codes::NOT_COORDINATOR))
        .collect();
    let deleted = broker.groups.delete_groups(&BrokerOffsetsLog(broker), &ids);
    codes_of.extend(ids.into_iter().zip(deleted));
    let results: Vec<i16> = req
        .groups_names
        .iter()
        .map(|g| {
            codes_of
                .get(g.as_str())
                .copied()
                .unwrap_or(codes::UNKNOWN_SERVER_ERROR)
        })
        .collect();
    DeleteGroupsResponse::default().with_results(
        req.groups_names
            .into_iter()
            .zip(results)
            .map(|(id, code)| {
                DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(code)
            })
            .collect(),
    )
}

pub fn offset_delete(broker: &Broker, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    if let Err(code) = broker.groups.owns(&req.group_id) {
        return OffsetDeleteResponse::default().with_error_code(code);
    }
    // Whether each requested partition exists, decided once so results line up.
    let exists: Vec<Vec<bool>> = req
        .topics
        .iter()
        .map(|t| {
            t.partitions
                .iter()
                .map(|p| partition_exists(broker, &t.name, p.partition_index))
                .collect()
        })
        .collect();
    let mut known = Vec::new();
    for (t, row) in req.topics.iter().zip(&exists) {
        for (p, e) in t.partitions.iter().zip(row) {
            if *e {
                known.push((t.name.to_string(), p.partition_index));
            }
        }
    }
    let results =
        match broker
            .groups
            .delete_offsets(&BrokerOffsetsLog(broker), &req.group_id, &known)
        {
            Ok(r) => r,
            Err(code) => return OffsetDeleteResponse::default().with_error_code(code),
        };
    let mut results = results.into_iter();
    let topics = req
        .topics
        .into_iter()
        .zip(exists)
        .map(|(t, row)| {
            let partitions = t
                .partitions
                .iter()
                .zip(row)
                .map(|(p, e)| {
                    let code = if e {
                        results.next().unwrap_or(codes::UNKNOWN_SERVER_ERROR)
                    } else {
                        codes::UNKNOWN_TOPIC_OR_PARTITION
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    //! Every version of every group API through the real handlers, with each response
    //! encoded in the negotiated version: kafka-protocol refuses a field the version lacks,
    //! so this finds a response field set for a version that does not have it.

    use super::*;
    use crate::clock::SystemClock;
    use crate::config::BrokerConfig;
    use crate::protocol::encode_response;
    use bytes::Bytes;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
    use std::sync::Arc;

    async fn open_broker(dir: &std::path::Path) -> Broker {
        let config = BrokerConfig::load(
            None,
            &[
                format!("log.dirs={}", dir.display()),
                "group.initial.rebalance.delay.ms=0".into(),
                "offsets.topic.num.partitions=3".into(),
            ],
        )
        .expect("valid config");
        let b = Broker::open(config, Arc::new(SystemClock)).expect("broker opens");
        b.start_serving().await.expect("broker starts");
        b
    }

    async fn call(b: &Broker, key: ApiKey, v: i16, body: RequestKind) -> ResponseKind {
        let header = RequestHeader::default()
            .with_request_api_version(v)
            .with_client_id(Some(StrBytes::from_static_str("unit")));
        let peer: SocketAddr = "127.0.0.1:5555".parse().expect("address");
        let resp = crate::api::handle(
            b,
            &crate::protocol::ListenerKind::Broker("PLAINTEXT".into()),
            &header,
            peer,
            key,
            body,
        )
        .await
        .expect("a response");
        if let Err(e) = encode_response(key, v, 1, &resp) {
            panic!("{key:?} v{v} response does not encode: {e}");
        }
        resp
    }

    fn group(v: i16) -> GroupId {
        GroupId(StrBytes::from_string(format!("group-v{v}")))
    }

    #[tokio::test]
    async fn every_group_api_version_answers_in_its_own_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = open_broker(dir.path()).await;
        let topic = NewTopic {
            name: "t".into(),
            num_partitions: 2,
            replication_factor: 1,
            assignments: Vec::new(),
            configs: BTreeMap::new(),
        };
        assert!(b.controller.create_topics(&[topic], false).await[0].is_ok());
        publish(&b, &b.controller.image());
        let t = TopicName(StrBytes::from_static_str("t"));

        for v in 0..=9i16 {
            let g = group(v);
            // FindCoordinator (single key before v4, batched after).
            let fv = v.min(6);
            let req = if fv >= 4 {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![g.0.clone()])
            } else {
                FindCoordinatorRequest::default().with_key(g.0.clone())
            };
            let ResponseKind::FindCoordinator(r) = call(
                &b,
                ApiKey::FindCoordinator,
                fv,
                RequestKind::FindCoordinator(req),
            )
            .await
            else {
                panic!("wrong response kind")
            };
            if fv >= 4 {
                assert_eq!(r.coordinators[0].error_code, codes::NONE);
                assert_eq!(r.coordinators[0].node_id, BrokerId(b.node_id));
            } else {
                assert_eq!(
                    (r.error_code, r.node_id),
                    (codes::NONE, BrokerId(b.node_id))
                );
            }

            // JoinGroup, through MEMBER_ID_REQUIRED from v4.
            let jv = v.clamp(2, 9);
            let join = |member: StrBytes| {
                JoinGroupRequest::default()
                    .with_group_id(g.clone())
                    .with_session_timeout_ms(10_000)
                    .with_rebalance_timeout_ms(10_000)
                    .with_member_id(member)
                    .with_protocol_type(StrBytes::from_static_str("consumer"))
                    .with_protocols(vec![JoinGroupRequestProtocol::default()
                        .with_name(StrBytes::from_static_str("range"))
                        .with_metadata(Bytes::from_static(b"m"))])
            };
            let ResponseKind::JoinGroup(mut r) = call(
                &b,
                ApiKey::JoinGroup,
                jv,
                RequestKind::JoinGroup(join(StrBytes::default())),
            )
            .await
            else {
                panic!("wrong response kind")
            };
            if jv >= 4 {
                assert_eq!(r.error_code, codes::MEMBER_ID_REQUIRED);
                let ResponseKind::JoinGroup(again) = call(
                    &b,
                    ApiKey::JoinGroup,
                    jv,
                    RequestKind::JoinGroup(join(r.member_id.clone())),
                )
                .await
                else {
                    panic!("wrong response kind")
                };
                r = again;
            }
            assert_eq!(
                (r.error_code, r.generation_id),
                (codes::NONE, 1),
                "JoinGroup v{jv}"
            );
            assert_eq!(r.leader, r.member_id);
            assert_eq!(r.members.len(), 1);
            let member = r.member_id.clone();

            let sv = v.min(5);
            let sync = SyncGroupRequest::default()
                .with_group_id(g.clone())
                .with_generation_id(1)
                .with_member_id(member.clone())
                .with_assignments(vec![SyncGroupRequestAssignment::default()
                    .with_member_id(member.clone())
                    .with_assignment(Bytes::from_static(b"A"))]);
            let ResponseKind::SyncGroup(r) =
                call(&b, ApiKey::SyncGroup, sv, RequestKind::SyncGroup(sync)).await
            else {
                panic!("wrong response kind")
            };
            assert_eq!((r.error_code, &r.assignment[..]), (codes::NONE, &b"A"[..]));

            let hb = HeartbeatRequest::default()
                .with_group_id(g.clone())
                .with_generation_id(1)
                .with_member_id(member.clone());
            let ResponseKind::Heartbeat(r) =
                call(&b, ApiKey::Heartbeat, v.min(4), RequestKind::Heartbeat(hb)).await
            else {
                panic!("wrong response kind")
            };
            assert_eq!(r.error_code, codes::NONE);

            let cv = v.clamp(2, 9);
            let commit = OffsetCommitRequest::default()
                .with_group_id(g.clone())
                .with_generation_id_or_member_epoch(1)
                .with_member_id(member.clone())
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(t.clone())
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(7),
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(9)
                            .with_committed_offset(1),
                    ])]);
            let ResponseKind::OffsetCommit(r) = call(
                &b,
                ApiKey::OffsetCommit,
                cv,
                RequestKind::OffsetCommit(commit),
            )
            .await
            else {
                panic!("wrong response kind")
            };
            let codes_: Vec<i16> = r.topics[0]
                .partitions
                .iter()
                .map(|p| p.error_code)
                .collect();
            assert_eq!(codes_, vec![codes::NONE, codes::UNKNOWN_TOPIC_OR_PARTITION]);

            let ov = v.clamp(1, 9);
            let fetch = if ov >= 8 {
                OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                    .with_group_id(g.clone())
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                        .with_name(t.clone())
                        .with_partition_indexes(vec![0, 1])]))])
            } else {
                OffsetFetchRequest::default()
                    .with_group_id(g.clone())
                    .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                        .with_name(t.clone())
                        .with_partition_indexes(vec![0, 1])]))
            };
            let ResponseKind::OffsetFetch(r) =
                call(&b, ApiKey::OffsetFetch, ov, RequestKind::OffsetFetch(fetch)).await
            else {
                panic!("wrong response kind")
            };
            let offsets: Vec<i64> = if ov >= 8 {
                r.groups[0].topics[0]
                    .partitions
                    .iter()
                    .map(|p| p.committed_offset)
                    .collect()
            } else {
                r.topics[0]
                    .partitions
                    .iter()
                    .map(|p| p.committed_offset)
                    .collect()
            };
            assert_eq!(offsets, vec![7, -1], "OffsetFetch v{ov}");

            let dv = v.min(6);
            let ResponseKind::DescribeGroups(r) = call(
                &b,
                ApiKey::DescribeGroups,
                dv,
                RequestKind::DescribeGroups(
                    DescribeGroupsRequest::default().with_groups(vec![g.clone()]),
                ),
            )
            .await
            else {
                panic!("wrong response kind")
            };
            assert_eq!(r.groups[0].group_state.as_str(), "Stable");
            assert_eq!(r.groups[0].protocol_data.as_str(), "range");
            assert_eq!(&r.groups[0].members[0].member_assignment[..], b"A");

            let lv = v.min(5);
            let ResponseKind::ListGroups(r) = call(
                &b,
                ApiKey::ListGroups,
                lv,
                RequestKind::ListGroups(ListGroupsRequest::default()),
            )
            .await
            else {
                panic!("wrong response kind")
            };
            assert!(r.groups.iter().any(|x| x.group_id == g));

            let leave = if v.min(5) >= 3 {
                LeaveGroupRequest::default()
                    .with_group_id(g.clone())
                    .with_members(vec![
                        MemberIdentity::default().with_member_id(member.clone())
                    ])
            } else {
                LeaveGroupRequest::default()
                    .with_group_id(g.clone())
                    .with_member_id(member.clone())
            };
            let ResponseKind::LeaveGroup(r) = call(
                &b,
                ApiKey::LeaveGroup,
                v.min(5),
                RequestKind::LeaveGroup(leave),
            )
            .await
            else {
                panic!("wrong response kind")
            };
            assert_eq!(r.error_code, codes::NONE);

            let od = OffsetDeleteRequest::default()
                .with_group_id(g.clone())
                .with_topics(vec![OffsetDeleteRequestTopic::default()
                    .with_name(t.clone())
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0)
                    ])]);
            let ResponseKind::OffsetDelete(r) =
                call(&b, ApiKey::OffsetDelete, 0, RequestKind::OffsetDelete(od)).await
            else {
                panic!("wrong response kind")
            };
            assert_eq!(r.topics[0].partitions[0].error_code, codes::NONE);

            let ResponseKind::DeleteGroups(r) = call(
                &b,
                ApiKey::DeleteGroups,
                v.min(2),
                RequestKind::DeleteGroups(
                    DeleteGroupsRequest::default().with_groups_names(vec![g.clone()]),
                ),
            )
            .await
            else {
                panic!("wrong response kind")
            };
            assert_eq!(r.results[0].error_code, codes::NONE);

            // A missing group: Dead before DescribeGroups v6, GROUP_ID_NOT_FOUND from v6.
            let ResponseKind::DescribeGroups(r) = call(
                &b,
                ApiKey::DescribeGroups,
                dv,
                RequestKind::DescribeGroups(
                    DescribeGroupsRequest::default().with_groups(vec![g.clone()]),
                ),
            )
            .await
            else {
                panic!("wrong response kind")
            };
            let expected = if dv >= 6 {
                codes::GROUP_ID_NOT_FOUND
            } else {
                codes::NONE
            };
            assert_eq!(r.groups[0].error_code, expected);
        }
    }
}
