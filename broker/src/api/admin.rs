//! Metadata and topic administration: Metadata (with auto-creation), CreateTopics,
//! DeleteTopics, CreatePartitions, DescribeCluster.

use super::group::BrokerOffsetsLog;
use super::{msg, publish};
use crate::group::OFFSETS_TOPIC;
use crate::metadata::image::BrokerRegistration;
use crate::metadata::{
    validate_topic_name, ApiError, Endpoint, MetadataImage, NewTopic, TopicImage,
};
use crate::node::Broker;
use crate::protocol::codes;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, BrokerRegistrationRequest, BrokerRegistrationResponse, CreatePartitionsRequest,
    CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeClusterRequest, DescribeClusterResponse, DescribeQuorumRequest,
    DescribeQuorumResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::{BTreeMap, BTreeSet};

/// Kafka's "authorized operations were not requested" marker.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

/// The live brokers at their addresses on `listener`. Fenced brokers are not offered to
/// clients, and a broker without that listener is left out (as Kafka does).
fn live_endpoints<'a>(
    image: &'a MetadataImage,
    listener: &'a str,
) -> impl Iterator<Item = (&'a BrokerRegistration, &'a Endpoint)> + 'a {
    image
        .live_brokers()
        .filter_map(move |b| Some((b, b.endpoint(listener)?)))
}

fn brokers(image: &MetadataImage, listener: &str) -> Vec<MetadataResponseBroker> {
    live_endpoints(image, listener)
        .map(|(b, e)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(str_bytes(&e.host))
                .with_port(e.port as i32)
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect()
}

fn topic_metadata(
    image: &MetadataImage,
    listener: &str,
    t: &TopicImage,
    version: i16,
) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .map(|(index, p)| {
            // A leader the client cannot reach on its listener is no leader to it: Kafka
            // names the missing listener from v6 (a misconfigured advertised.listeners).
            let reachable = image
                .brokers
                .get(&p.leader)
                .is_some_and(|b| b.endpoint(listener).is_some());
            let (code, leader) = if p.leader < 0 {
                (codes::LEADER_NOT_AVAILABLE, p.leader)
            } else if !reachable && image.brokers.contains_key(&p.leader) {
                let code = if version >= 6 {
                    codes::LISTENER_NOT_FOUND
                } else {
                    codes::LEADER_NOT_AVAILABLE
                };
                (code, -1)
            } else {
                (codes::NONE, p.leader)
            };
            MetadataResponsePartition::default()
                .with_error_code(code)
                .with_partition_index(*index)
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(if version >= 7 { p.leader_epoch } else { -1 })
                .with_replica_nodes(p.replicas.iter().copied().map(BrokerId).collect())
                .with_isr_nodes(p.isr.iter().copied().map(BrokerId).collect())
        })
        .collect();
    let mut r = MetadataResponseTopic::default()
        .with_name(Some(topic_name(&t.name)))
        .with_partitions(partitions);
    if version >= 10 {
        r = r.with_topic_id(t.id);
    }
    if version >= 1 {
        r = r.with_is_internal(t.name == crate::group::OFFSETS_TOPIC);
    }
    if version >= 8 {
        r = r.with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
    }
    r
}

/// The controller id clients are told: the active controller when it is also a broker
/// (combined mode), else this broker, which forwards admin requests to it (as KRaft
/// brokers name a broker, since clients cannot reach controller-only nodes).
fn controller_for_clients(broker: &Broker) -> i32 {
    let image = broker.controller.image();
    broker
        .controller
        .active_controller()
        .filter(|id| image.brokers.contains_key(id))
        .unwrap_or(broker.node_id)
}

/// The broker's defaults for a new topic (auto-creation and CreateTopics with -1s).
fn default_topic(name: &str) -> NewTopic {
    NewTopic {
        name: name.to_owned(),
        num_partitions: -1,
        replication_factor: -1,
        assignments: Vec::new(),
        configs: BTreeMap::new(),
    }
}

pub async fn metadata(
    broker: &Broker,
    listener: &str,
    req: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let mut image = broker.controller.image();
    // v0 asks for every topic with an empty list; v1+ with null.
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    let auto_create =
        broker.config.auto_create_topics() && (version < 4 || req.allow_auto_topic_creation);
    let mut topics = Vec::new();
    if all {
        topics = image
            .topics
            .values()
            .map(|t| topic_metadata(&image, listener, t, version))
            .collect();
    } else {
        let requested = req.topics.unwrap_or_default();
        // Auto-create what is missing first, in one metadata commit. The internal offsets
        // topic is created as the group coordinator creates it (partitions, compaction).
        let wants_offsets_topic = requested.iter().any(|t| {
            t.name
                .as_ref()
                .is_some_and(|n| n.0.as_str() == crate::group::OFFSETS_TOPIC)
        });
        if auto_create
            && wants_offsets_topic
            && !image.topics.contains_key(crate::group::OFFSETS_TOPIC)
            && super::group::ensure_offsets_topic(broker).await.is_ok()
        {
            image = broker.controller.image();
        }
        if auto_create {
            let missing: Vec<NewTopic> = requested
                .iter()
                .filter_map(|t| t.name.as_ref())
                .filter(|n| {
                    !image.topics.contains_key(n.0.as_str())
                        && validate_topic_name(&n.0).is_ok()
                        && n.0.as_str() != crate::group::OFFSETS_TOPIC
                })
                .map(|n| default_topic(&n.0))
                .collect();
            if !missing.is_empty() {
                for (t, r) in missing
                    .iter()
                    .zip(broker.controller.create_topics(&missing, false).await)
                {
                    match r {
                        Ok(id) => tracing::info!(topic = %t.name, %id, "auto-created topic"),
                        Err(e) => {
                            tracing::warn!(topic = %t.name, code = e.code, message = %e.message, "auto-creation failed")
                        }
                    }
                }
                image = broker.controller.image();
                publish(broker, &image);
            }
        }
        for t in requested {
            let found = match &t.name {
                Some(n) => image.topics.get(n.0.as_str()),
                None => image.topic_by_id(&t.topic_id),
            };
            topics.push(match found {
                Some(ti) => topic_metadata(&image, listener, ti, version),
                None => {
                    let code = match &t.name {
                        Some(n) if validate_topic_name(&n.0).is_err() => {
                            codes::INVALID_TOPIC_EXCEPTION
                        }
                        None => codes::UNKNOWN_TOPIC_ID,
                        _ => codes::UNKNOWN_TOPIC_OR_PARTITION,
                    };
                    let mut r = MetadataResponseTopic::default()
                        .with_error_code(code)
                        .with_name(t.name.clone());
                    if version >= 10 {
                        r = r.with_topic_id(t.topic_id);
                    }
                    if version >= 8 {
                        r = r.with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
                    }
                    r
                }
            });
        }
    }
    let mut resp = MetadataResponse::default()
        .with_brokers(brokers(&image, listener))
        .with_controller_id(BrokerId(controller_for_clients(broker)))
        .with_topics(topics);
    if version >= 2 {
        resp = resp.with_cluster_id(Some(str_bytes(&image.cluster_id)));
    }
    if (8..=10).contains(&version) {
        resp = resp.with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
    }
    resp
}

/// Kafka's controller bounds: at most this many partitions per topic of one request
/// (`MAX_PARTITIONS_PER_BATCH`), and per request in all (`MAX_RECORDS_PER_USER_OP`).
const MAX_PARTITIONS_PER_REQUEST: i64 = 10_000;

/// Refuses partition counts from the wire before anything is planned or allocated, as
/// Kafka's controller does: a topic asking for more than [`MAX_PARTITIONS_PER_REQUEST`]
/// partitions (by count or by assignments) gets INVALID_PARTITIONS, and when the request as
/// a whole asks for more, every topic of it gets POLICY_VIOLATION. `counts` holds, per topic,
/// the number of partitions it would create (already resolved from broker defaults).
fn bound_partition_counts(counts: &[i64]) -> Vec<Option<ApiError>> {
    let mut out: Vec<Option<ApiError>> = counts
        .iter()
        .map(|&c| {
            (c > MAX_PARTITIONS_PER_REQUEST).then(|| {
                ApiError::new(
                    codes::INVALID_PARTITIONS,
                    "Excessively large number of partitions per request.",
                )
            })
        })
        .collect();
    let total: i64 = counts
        .iter()
        .zip(&out)
        .filter(|(_, e)| e.is_none())
        .map(|(c, _)| (*c).max(0))
        .sum();
    if total > MAX_PARTITIONS_PER_REQUEST {
        for e in out.iter_mut().filter(|e| e.is_none()) {
            *e = Some(ApiError::new(
                codes::POLICY_VIOLATION,
                "Unable to perform excessively large batch operation.",
            ));
        }
    }
    out
}

pub async fn create_topics(
    broker: &Broker,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut new_topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let mut nt = default_topic(&t.name.0);
        nt.num_partitions = t.num_partitions;
        nt.replication_factor = t.replication_factor;
        let mut assignments: Vec<_> = t.assignments.iter().collect();
        assignments.sort_by_key(|a| a.partition_index);
        nt.assignments = assignments
            .into_iter()
            .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
            .collect();
        for c in &t.configs {
            if let Some(v) = &c.value {
                nt.configs.insert(c.name.to_string(), v.to_string());
            }
        }
        new_topics.push(nt);
    }
    let counts: Vec<i64> = new_topics
        .iter()
        .map(|t| match (t.assignments.len(), t.num_partitions) {
            (0, -1) => broker.config.num_partitions() as i64,
            (0, n) => n as i64,
            (a, _) => a as i64,
        })
        .collect();
    // Counts from the wire are bounded before anything is planned. (Room on this broker's
    // disks is not checked here: in a cluster the partitions land on other brokers; a
    // broker whose disk cannot take a partition reports KAFKA_STORAGE_ERROR for it.)
    let refused = bound_partition_counts(&counts);
    let planned: Vec<NewTopic> = new_topics
        .iter()
        .zip(&refused)
        .filter(|(_, r)| r.is_none())
        .map(|(t, _)| t.clone())
        .collect();
    let mut planned_results = broker
        .controller
        .create_topics(&planned, req.validate_only)
        .await
        .into_iter();
    let results: Vec<Result<uuid::Uuid, ApiError>> = refused
        .into_iter()
        .map(|r| match r {
            Some(e) => Err(e),
            None => planned_results
                .next()
                .unwrap_or_else(|| Err(ApiError::new(codes::UNKNOWN_SERVER_ERROR, "no result"))),
        })
        .collect();
    let image = broker.controller.image();
    if !req.validate_only {
        publish(broker, &image);
    }
    let topics = new_topics
        .iter()
        .zip(results)
        .map(|(nt, r)| {
            let mut out = CreatableTopicResult::default().with_name(topic_name(&nt.name));
            match r {
                Ok(id) => {
                    if version >= 7 {
                        out = out.with_topic_id(id);
                    }
                    if version >= 5 {
                        let (partitions, rf) = match image.topics.get(&nt.name) {
                            Some(t) => (
                                t.partitions.len() as i32,
                                t.partitions.values().next().map_or(0, |p| p.replicas.len()) as i16,
                            ),
                            None if !nt.assignments.is_empty() => {
                                (nt.assignments.len() as i32, nt.assignments[0].len() as i16)
                            }
                            None => (
                                if nt.num_partitions == -1 {
                                    broker.config.num_partitions()
                                } else {
                                    nt.num_partitions
                                },
                                if nt.replication_factor == -1 {
                                    broker.config.default_replication_factor()
                                } else {
                                    nt.replication_factor
                                },
                            ),
                        };
                        let configs =
                            super::configs::topic_entries(broker, &nt.configs, None, false, false)
                                .into_iter()
                                .map(|e| {
                                    CreatableTopicConfigs::default()
                                        .with_name(e.name)
                                        .with_value(e.value)
                                        .with_read_only(e.read_only)
                                        .with_config_source(e.config_source)
                                        .with_is_sensitive(e.is_sensitive)
                                })
                                .collect();
                        out = out
                            .with_num_partitions(partitions)
                            .with_replication_factor(rf)
                            .with_configs(Some(configs));
                    }
                }
                Err(e) => {
                    out = out
                        .with_error_code(e.code)
                        .with_error_message(msg(e.message))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1);
                }
            }
            out
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

pub async fn delete_topics(
    broker: &Broker,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let image = broker.controller.image();
    // v6 names topics by name or id; earlier versions by name only.
    let requested: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(requested.len());
    let mut names = Vec::new();
    let mut slots = Vec::new();
    for (name, id) in &requested {
        let resolved = match name {
            Some(n) => Some(n.clone()),
            None => image.topic_by_id(id).map(|t| t.name.clone()),
        };
        match resolved {
            Some(n) => {
                slots.push(Some(names.len()));
                names.push(n);
            }
            None => slots.push(None),
        }
    }
    let results = broker.controller.delete_topics(&names).await;
    publish(broker, &broker.controller.image());
    let deleted: BTreeSet<String> = names
        .iter()
        .zip(&results)
        .filter(|(name, result)| result.is_ok() && name.as_str() != OFFSETS_TOPIC)
        .map(|(name, _)| name.clone())
        .collect();
    if !deleted.is_empty() {
        broker
            .groups
            .topics_deleted(&BrokerOffsetsLog(broker), &deleted);
    }
    for ((name, id), slot) in requested.into_iter().zip(slots) {
        let mut r = DeletableTopicResult::default()
            .with_name(name.as_deref().map(topic_name))
            .with_topic_id(if version >= 6 { id } else { uuid::Uuid::nil() });
        match slot.map(|i| &results[i]) {
            Some(Ok(topic_id)) => {
                if version >= 6 {
                    r = r.with_topic_id(*topic_id);
                }
            }
            Some(Err(e)) => {
                r = r.with_error_code(e.code);
                if version >= 5 {
                    r = r.with_error_message(msg(e.message.clone()));
                }
            }
            None => {
                r = r.with_error_code(codes::UNKNOWN_TOPIC_ID);
            }
        }
        if version >= 6 && r.name.is_none() {
            if let Some(t) = image.topic_by_id(&id) {
                r = r.with_name(Some(topic_name(&t.name)));
            }
        }
        responses.push(r);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(
    broker: &Broker,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    let image = broker.controller.image();
    let counts: Vec<i64> = req
        .topics
        .iter()
        .map(|t| {
            let current = image
                .topics
                .get(t.name.0.as_str())
                .map_or(0, |ti| ti.partitions.len() as i64);
            let by_assignments = t.assignments.as_ref().map_or(0, |a| a.len() as i64);
            (t.count as i64 - current).max(by_assignments)
        })
        .collect();
    let refused = bound_partition_counts(&counts);
    for (t, refused) in req.topics.iter().zip(refused) {
        if let Some(e) = refused {
            results.push(
                CreatePartitionsTopicResult::default()
                    .with_name(t.name.clone())
                    .with_error_code(e.code)
                    .with_error_message(msg(e.message)),
            );
            continue;
        }
        let assignments = t.assignments.as_ref().map(|a| {
            a.iter()
                .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                .collect()
        });
        let r = broker
            .controller
            .create_partitions(&t.name.0, t.count, assignments, req.validate_only)
            .await;
        let mut out = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        if let Err(e) = r {
            out = out
                .with_error_code(e.code)
                .with_error_message(msg(e.message));
        }
        results.push(out);
    }
    if !req.validate_only {
        publish(broker, &broker.controller.image());
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// DescribeCluster's endpoint types (KIP-919): which kind of listener the client wants.
const ENDPOINT_BROKER: i8 = 1;
const ENDPOINT_CONTROLLER: i8 = 2;

/// DescribeCluster. On a broker listener: the live brokers at their addresses on that
/// listener and the active controller (if it is also a broker). On the controller listener
/// (KIP-919, `kafka-metadata-quorum --bootstrap-controller`): the controllers (the voters
/// at the controller endpoints this node knows them by, as DescribeQuorum v2 lists them)
/// and the quorum leader, which the Java admin client then sends its quorum requests to.
/// A request for the other endpoint type is refused MISMATCHED_ENDPOINT_TYPE (an unknown
/// one UNSUPPORTED_ENDPOINT_TYPE), as Kafka answers; v0 requests mean brokers.
pub fn describe_cluster(
    broker: &Broker,
    listener: &str,
    controller: bool,
    req: DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    let image = broker.controller.image();
    let ours = if controller {
        ENDPOINT_CONTROLLER
    } else {
        ENDPOINT_BROKER
    };
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
    if version >= 1 {
        resp = resp.with_endpoint_type(ours);
    }
    if req.endpoint_type != ours {
        let (code, message) = match req.endpoint_type {
            ENDPOINT_BROKER | ENDPOINT_CONTROLLER => (
                codes::MISMATCHED_ENDPOINT_TYPE,
                format!(
                    "The request was sent to an endpoint of type {}, but it asked for type {}.",
                    endpoint_type_name(ours),
                    endpoint_type_name(req.endpoint_type)
                ),
            ),
            other => (
                codes::UNSUPPORTED_ENDPOINT_TYPE,
                format!("Unsupported endpoint type {other}."),
            ),
        };
        return resp
            .with_error_code(code)
            .with_error_message(Some(str_bytes(&message)));
    }
    let resp = resp.with_cluster_id(str_bytes(&image.cluster_id));
    if controller {
        let leader = broker
            .controller
            .quorum()
            .and_then(|_| broker.controller.active_controller());
        return resp
            .with_controller_id(BrokerId(leader.unwrap_or(-1)))
            .with_brokers(
                voter_endpoints(broker)
                    .into_iter()
                    .map(|(id, _, host, port)| {
                        DescribeClusterBroker::default()
                            .with_broker_id(BrokerId(id))
                            .with_host(str_bytes(&host))
                            .with_port(port)
                    })
                    .collect(),
            );
    }
    resp.with_controller_id(BrokerId(controller_for_clients(broker)))
        .with_brokers(
            live_endpoints(&image, listener)
                .map(|(b, e)| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(b.id))
                        .with_host(str_bytes(&e.host))
                        .with_port(e.port as i32)
                        .with_rack(b.rack.as_deref().map(str_bytes))
                })
                .collect(),
        )
}

fn endpoint_type_name(t: i8) -> &'static str {
    match t {
        ENDPOINT_BROKER => "BROKER",
        ENDPOINT_CONTROLLER => "CONTROLLER",
        _ => "UNKNOWN",
    }
}

/// BrokerRegistration (controller listener): a broker joins the cluster with its endpoint
/// and rack. Registration is recorded in the metadata log by the active controller.
pub async fn broker_registration(
    broker: &Broker,
    req: BrokerRegistrationRequest,
) -> BrokerRegistrationResponse {
    let resp = BrokerRegistrationResponse::default().with_broker_epoch(-1);
    let image = broker.controller.image();
    if !req.cluster_id.is_empty()
        && !image.cluster_id.is_empty()
        && req.cluster_id.as_str() != image.cluster_id
    {
        return resp.with_error_code(codes::INCONSISTENT_CLUSTER_ID);
    }
    let endpoints = req
        .listeners
        .iter()
        .map(|l| Endpoint {
            name: l.name.to_string(),
            host: l.host.to_string(),
            port: l.port,
        })
        .collect();
    match broker
        .controller
        .register_broker(
            req.broker_id.0,
            req.rack.as_ref().map(|r| r.to_string()),
            endpoints,
            req.incarnation_id,
        )
        .await
    {
        Ok(epoch) => resp.with_broker_epoch(epoch),
        Err(e) => resp.with_error_code(e.code),
    }
}

/// The metadata log's name as Kafka's tools show it.
const METADATA_TOPIC: &str = "__cluster_metadata";

/// DescribeQuorum: the leader, its epoch and high watermark, and each voter's progress as
/// the leader sees it. A voter that is not the leader answers NOT_LEADER_OR_FOLLOWER with
/// the leader it knows of, so tools can go there.
/// On a broker listener the request goes to the active controller, as Kafka's brokers
/// forward it (`kafka-metadata-quorum --bootstrap-server`); on the controller listener
/// each voter answers for itself.
pub async fn describe_quorum(
    broker: &Broker,
    req: DescribeQuorumRequest,
    version: i16,
    forward: bool,
) -> DescribeQuorumResponse {
    let leads = broker.controller.quorum().is_some() && broker.controller.status().is_leader;
    if forward && !leads {
        match broker.controller.describe_quorum_of_active(req).await {
            Ok(mut resp) => {
                // The controller answered at the version it negotiated with this node;
                // fields the client's version lacks must be empty to encode.
                if version < 2 {
                    resp.nodes.clear();
                    resp.error_message = None;
                    for p in resp.topics.iter_mut().flat_map(|t| &mut t.partitions) {
                        p.error_message = None;
                        for r in p.current_voters.iter_mut().chain(&mut p.observers) {
                            r.replica_directory_id = Default::default();
                            if version < 1 {
                                r.last_fetch_timestamp = -1;
                                r.last_caught_up_timestamp = -1;
                            }
                        }
                    }
                }
                return resp;
            }
            Err(e) => {
                tracing::debug!(code = e.code, message = %e.message, "DescribeQuorum could not reach the active controller")
            }
        }
    }
    describe_own_quorum(broker, version)
}

fn describe_own_quorum(broker: &Broker, version: i16) -> DescribeQuorumResponse {
    use kafka_protocol::messages::describe_quorum_response::{
        PartitionData, ReplicaState, TopicData,
    };
    let status = broker.controller.status();
    let status = crate::metadata::quorum::QuorumStatus {
        is_leader: status.is_leader && broker.controller.quorum().is_some(),
        ..status
    };
    let voters = if status.is_leader {
        status
            .voters
            .iter()
            .map(|v| {
                let mut r = ReplicaState::default()
                    .with_replica_id(BrokerId(v.node_id))
                    .with_log_end_offset(v.log_end_offset);
                if version >= 1 {
                    r = r
                        .with_last_fetch_timestamp(v.last_contact_ms)
                        .with_last_caught_up_timestamp(
                            if v.log_end_offset >= status.commit_index as i64 {
                                v.last_contact_ms
                            } else {
                                -1
                            },
                        );
                }
                r
            })
            .collect()
    } else {
        Vec::new()
    };
    let observers = match broker.controller.quorum() {
        Some(q) if status.is_leader => {
            // Observers that fetched within the last few fetch timeouts.
            let since =
                broker.replicas.now_ms() - 3 * broker.config.quorum_fetch_timeout_ms() as i64;
            q.observers(since)
                .into_iter()
                .map(|(id, offset, at)| {
                    let mut r = ReplicaState::default()
                        .with_replica_id(BrokerId(id))
                        .with_log_end_offset(offset);
                    if version >= 1 {
                        r = r
                            .with_last_fetch_timestamp(at)
                            .with_last_caught_up_timestamp(
                                if offset >= status.commit_index as i64 {
                                    at
                                } else {
                                    -1
                                },
                            );
                    }
                    r
                })
                .collect()
        }
        _ => Vec::new(),
    };
    let partition = PartitionData::default()
        .with_observers(observers)
        .with_partition_index(0)
        .with_error_code(if status.is_leader {
            codes::NONE
        } else {
            codes::NOT_LEADER_OR_FOLLOWER
        })
        .with_leader_id(BrokerId(status.leader_id.unwrap_or(-1)))
        .with_leader_epoch(status.term as i32)
        .with_high_watermark(status.commit_index as i64)
        .with_current_voters(voters);
    let resp = DescribeQuorumResponse::default().with_topics(vec![TopicData::default()
        .with_topic_name(topic_name(METADATA_TOPIC))
        .with_partitions(vec![partition])]);
    if version >= 2 {
        resp.with_nodes(voter_nodes(broker))
    } else {
        resp
    }
}

/// Every voter's controller endpoint (DescribeQuorum v2, KIP-853), from any voter and
/// whether or not it leads: this is how a broker given only
/// controller.quorum.bootstrap.servers learns the voters.
fn voter_nodes(broker: &Broker) -> Vec<kafka_protocol::messages::describe_quorum_response::Node> {
    use kafka_protocol::messages::describe_quorum_response::{Listener, Node};
    voter_endpoints(broker)
        .into_iter()
        .map(|(id, name, host, port)| {
            Node::default()
                .with_node_id(BrokerId(id))
                .with_listeners(vec![Listener::default()
                    .with_name(str_bytes(&name))
                    .with_host(str_bytes(&host))
                    .with_port(port as u16)])
        })
        .collect()
}

/// Each voter as (id, controller listener name, host, port), at the address this node
/// reaches it by (controller.quorum.voters; its own controller listener for itself).
/// Empty on a node that is not a voter.
fn voter_endpoints(broker: &Broker) -> Vec<(i32, String, String, i32)> {
    let Some(quorum) = broker.controller.quorum() else {
        return Vec::new();
    };
    let name = broker
        .config
        .controller_listener_names()
        .into_iter()
        .next()
        .unwrap_or_else(|| "CONTROLLER".into());
    quorum
        .config()
        .voters
        .iter()
        .filter_map(|(id, addr)| {
            let (host, port) = addr.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port: u16 = port.parse().ok()?;
            Some((*id, name.clone(), host.to_owned(), i32::from(port)))
        })
        .collect()
}

/// AlterPartitionReassignments (kafka-reassign-partitions.sh --execute, KIP-455): decided
/// by the active controller, to which any other node forwards the request whole.
pub async fn alter_partition_reassignments(
    broker: &Broker,
    req: kafka_protocol::messages::AlterPartitionReassignmentsRequest,
) -> kafka_protocol::messages::AlterPartitionReassignmentsResponse {
    use kafka_protocol::messages::alter_partition_reassignments_response::{
        ReassignablePartitionResponse, ReassignableTopicResponse,
    };
    use kafka_protocol::messages::AlterPartitionReassignmentsResponse;
    let controller = &broker.controller;
    if !controller.is_active() {
        return match controller
            .forward_to_active("AlterPartitionReassignments", req, |r| {
                r.error_code == codes::NOT_CONTROLLER
            })
            .await
        {
            Ok(resp) => resp,
            Err(e) => AlterPartitionReassignmentsResponse::default()
                .with_error_code(e.code)
                .with_error_message(Some(str_bytes(&e.message))),
        };
    }
    let changes: Vec<(String, i32, Option<Vec<i32>>)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect()),
                )
            })
        })
        .collect();
    let outcomes = match controller
        .alter_reassignments(&changes, req.allow_replication_factor_change)
        .await
    {
        Ok(o) => o,
        Err(e) => {
            return AlterPartitionReassignmentsResponse::default()
                .with_error_code(e.code)
                .with_error_message(Some(str_bytes(&e.message)))
        }
    };
    let mut outcomes = outcomes.into_iter();
    let responses = req
        .topics
        .iter()
        .map(|t| {
            ReassignableTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let r = ReassignablePartitionResponse::default()
                                .with_partition_index(p.partition_index);
                            match outcomes.next() {
                                Some(Err(e)) => r
                                    .with_error_code(e.code)
                                    .with_error_message(Some(str_bytes(&e.message))),
                                _ => r,
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    publish(broker, &broker.controller.image());
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(req.allow_replication_factor_change)
        .with_responses(responses)
}

/// The size of the file system holding `dir` and what an unprivileged writer may still use
/// of it (Java's FileStore total and usable space), or -1 each when statvfs fails.
fn dir_space(dir: &std::path::Path) -> (i64, i64) {
    match rustix::fs::statvfs(dir) {
        Ok(st) => {
            let bytes =
                |blocks: u64| i64::try_from(blocks.saturating_mul(st.f_frsize)).unwrap_or(i64::MAX);
            (bytes(st.f_blocks), bytes(st.f_bavail))
        }
        Err(_) => (-1, -1),
    }
}

/// DescribeLogDirs (kafka-log-dirs.sh, and kafka-reassign-partitions.sh before a move):
/// this broker's log dirs with the size of each partition it holds there (all of them for
/// a null topic list), and the total and usable bytes of the file system under each dir
/// (-1 when it cannot be read, as Kafka answers). A replica's offset lag is Kafka's for a
/// current (not future) replica: how far its log end trails its own high watermark, 0.
pub fn describe_log_dirs(
    broker: &Broker,
    req: kafka_protocol::messages::DescribeLogDirsRequest,
) -> kafka_protocol::messages::DescribeLogDirsResponse {
    use kafka_protocol::messages::describe_log_dirs_response::{
        DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
    };
    let wanted = |topic: &str, partition: i32| match &req.topics {
        None => true,
        Some(ts) => ts
            .iter()
            .any(|t| t.topic.0.as_str() == topic && t.partitions.contains(&partition)),
    };
    let partitions = broker.replicas.all();
    let results = broker
        .config
        .log_dirs()
        .into_iter()
        .map(|dir| {
            let (total_bytes, usable_bytes) = dir_space(&dir);
            let mut topics: BTreeMap<&str, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
            for p in partitions
                .iter()
                .filter(|p| p.dir().parent() == Some(dir.as_path()) && wanted(&p.topic, p.index))
            {
                topics.entry(&p.topic).or_default().push(
                    DescribeLogDirsPartition::default()
                        .with_partition_index(p.index)
                        .with_partition_size(p.size_bytes() as i64)
                        .with_offset_lag(0),
                );
            }
            DescribeLogDirsResult::default()
                .with_log_dir(str_bytes(&dir.display().to_string()))
                .with_total_bytes(total_bytes)
                .with_usable_bytes(usable_bytes)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            DescribeLogDirsTopic::default()
                                .with_name(topic_name(t))
                                .with_partitions(ps)
                        })
                        .collect(),
                )
        })
        .collect();
    kafka_protocol::messages::DescribeLogDirsResponse::default().with_results(results)
}

/// ListPartitionReassignments (kafka-reassign-partitions.sh --list / --verify): the
/// reassignments in progress, from this node's image, for the asked partitions (or all).
pub fn list_partition_reassignments(
    broker: &Broker,
    req: kafka_protocol::messages::ListPartitionReassignmentsRequest,
) -> kafka_protocol::messages::ListPartitionReassignmentsResponse {
    use kafka_protocol::messages::list_partition_reassignments_response::{
        OngoingPartitionReassignment, OngoingTopicReassignment,
    };
    let image = broker.controller.image();
    let ids = |v: &[i32]| v.iter().copied().map(BrokerId).collect::<Vec<_>>();
    let wanted = |topic: &str, partition: i32| match &req.topics {
        None => true,
        Some(ts) => ts
            .iter()
            .any(|t| t.name.0.as_str() == topic && t.partition_indexes.contains(&partition)),
    };
    let topics = image
        .topics
        .values()
        .filter_map(|t| {
            let partitions: Vec<_> = t
                .partitions
                .iter()
                .filter(|(i, p)| p.reassigning() && wanted(&t.name, **i))
                .map(|(i, p)| {
                    OngoingPartitionReassignment::default()
                        .with_partition_index(*i)
                        .with_replicas(ids(&p.replicas))
                        .with_adding_replicas(ids(&p.adding))
                        .with_removing_replicas(ids(&p.removing))
                })
                .collect();
            (!partitions.is_empty()).then(|| {
                OngoingTopicReassignment::default()
                    .with_name(topic_name(&t.name))
                    .with_partitions(partitions)
            })
        })
        .collect();
    kafka_protocol::messages::ListPartitionReassignmentsResponse::default().with_topics(topics)
}

/// ElectLeaders (kafka-leader-election.sh): preferred (type 0, the only one before v1) or
/// unclean (type 1) elections, decided by the active controller.
pub async fn elect_leaders(
    broker: &Broker,
    req: kafka_protocol::messages::ElectLeadersRequest,
    version: i16,
) -> kafka_protocol::messages::ElectLeadersResponse {
    use crate::metadata::membership::ElectionType;
    use kafka_protocol::messages::elect_leaders_response::{
        PartitionResult, ReplicaElectionResult,
    };
    use kafka_protocol::messages::ElectLeadersResponse;
    let kind = match if version >= 1 { req.election_type } else { 0 } {
        0 => ElectionType::Preferred,
        1 => ElectionType::Unclean,
        other => {
            let resp = ElectLeadersResponse::default();
            return if version >= 1 {
                resp.with_error_code(codes::INVALID_REQUEST)
            } else {
                tracing::debug!(other, "an ElectLeaders v0 request with an election type");
                resp
            };
        }
    };
    let asked = req.topic_partitions.map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .collect::<Vec<_>>()
    });
    let outcomes = match broker.controller.elect_leaders(kind, asked.clone()).await {
        Ok(o) => o,
        Err(e) if version >= 1 => return ElectLeadersResponse::default().with_error_code(e.code),
        // v0 has no top-level error: every asked-for partition carries it instead.
        Err(e) => asked
            .unwrap_or_default()
            .into_iter()
            .map(|(t, p)| (t, p, Err((e.code, e.message.clone()))))
            .collect(),
    };
    let mut results: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, partition, outcome) in outcomes {
        let (code, message) = match outcome {
            Ok(()) => (codes::NONE, None),
            Err((code, message)) => (code, Some(message)),
        };
        let result = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(code)
            .with_error_message(message.map(StrBytes::from_string));
        match results.iter_mut().find(|r| r.topic.0.as_str() == topic) {
            Some(r) => r.partition_result.push(result),
            None => results.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(StrBytes::from_string(topic)))
                    .with_partition_result(vec![result]),
            ),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brokers 1 and 2 with an EXTERNAL listener, broker 3 without; one partition led by
    /// each.
    fn two_listener_image() -> (MetadataImage, TopicImage) {
        use crate::metadata::MetadataRecord;
        let mut image = MetadataImage::default();
        for id in 1..=3 {
            let mut endpoints = vec![Endpoint {
                name: "INTERNAL".into(),
                host: format!("10.0.0.{id}"),
                port: 9094,
            }];
            if id != 3 {
                endpoints.push(Endpoint {
                    name: "EXTERNAL".into(),
                    host: format!("broker-{id}.example"),
                    port: 9092,
                });
            }
            image.apply(&MetadataRecord::RegisterBroker {
                id,
                rack: None,
                endpoints,
                incarnation_id: None,
            });
            image.apply(&MetadataRecord::BrokerFenced { id, fenced: false });
        }
        let topic_id = uuid::Uuid::from_u128(7);
        image.apply(&MetadataRecord::Topic {
            name: "t".into(),
            topic_id,
        });
        for leader in 1..=3 {
            image.apply(&MetadataRecord::Partition {
                topic_id,
                partition: leader - 1,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
                leader,
                leader_epoch: 0,
                partition_epoch: 0,
            });
        }
        let topic = image.topics["t"].clone();
        (image, topic)
    }

    #[test]
    fn metadata_names_the_addresses_of_the_listener_asked_on() {
        let (image, topic) = two_listener_image();
        let external: Vec<_> = brokers(&image, "EXTERNAL")
            .iter()
            .map(|b| (b.node_id.0, b.host.to_string(), b.port))
            .collect();
        assert_eq!(
            external,
            vec![
                (1, "broker-1.example".into(), 9092),
                (2, "broker-2.example".into(), 9092)
            ]
        );
        assert_eq!(brokers(&image, "INTERNAL").len(), 3);
        assert_eq!(brokers(&image, "INTERNAL")[2].host.as_str(), "10.0.0.3");
        // A leader without the listener: LISTENER_NOT_FOUND from v6, and no leader id.
        let leaders = |version| -> Vec<(i16, i32)> {
            topic_metadata(&image, "EXTERNAL", &topic, version)
                .partitions
                .iter()
                .map(|p| (p.error_code, p.leader_id.0))
                .collect()
        };
        assert_eq!(
            leaders(12),
            vec![(0, 1), (0, 2), (codes::LISTENER_NOT_FOUND, -1)]
        );
        assert_eq!(leaders(5)[2], (codes::LEADER_NOT_AVAILABLE, -1));
        assert!(topic_metadata(&image, "INTERNAL", &topic, 12)
            .partitions
            .iter()
            .all(|p| p.error_code == 0));
    }

    #[test]
    fn partition_counts_are_bounded_per_topic_and_per_request() {
        let codes_of = |counts: &[i64]| -> Vec<Option<i16>> {
            bound_partition_counts(counts)
                .into_iter()
                .map(|e| e.map(|e| e.code))
                .collect()
        };
        assert_eq!(
            codes_of(&[1, 10_000]),
            vec![Some(codes::POLICY_VIOLATION), Some(codes::POLICY_VIOLATION)]
        );
        assert_eq!(
            codes_of(&[i32::MAX as i64, 3]),
            vec![Some(codes::INVALID_PARTITIONS), None]
        );
        assert_eq!(codes_of(&[5_000, 5_000]), vec![None, None]);
        assert_eq!(codes_of(&[-1, 0]), vec![None, None]);
    }

    /// A seeded fuzzer over the counts CreateTopics and CreatePartitions carry from the
    /// wire (partitions, replication factor, assignments, validate_only), handled by a real
    /// broker: any unbounded allocation aborts the test process. (Deterministic; topics are
    /// only created for small counts, to keep the test fast.)
    #[tokio::test]
    async fn hostile_partition_counts_never_allocate_or_panic() {
        use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
        use kafka_protocol::messages::create_topics_request::{
            CreatableReplicaAssignment, CreatableTopic,
        };
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::BrokerConfig::load(
            None,
            &[format!("log.dirs={}", dir.path().display())],
        )
        .unwrap();
        let broker = Broker::open(config, std::sync::Arc::new(crate::clock::SystemClock)).unwrap();
        broker.start_serving().await.unwrap();
        let mut seed: u64 = 0x00c0_ffee_5eed;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let extremes = [i32::MAX, i32::MIN, -1, 0, 1, 3, 10_000, 10_001, 1 << 27];
        for round in 0..300 {
            let count = extremes[(next() % extremes.len() as u64) as usize];
            let rf = [i16::MAX, i16::MIN, -1, 0, 1, 2][(next() % 6) as usize];
            let validate_only = count > 3 || next() % 2 == 0;
            let assignments = if next() % 4 == 0 {
                (0..next() % 5)
                    .map(|i| {
                        CreatableReplicaAssignment::default()
                            .with_partition_index(i as i32)
                            .with_broker_ids(vec![BrokerId(1); (next() % 3) as usize])
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let by_count = assignments.is_empty();
            let name = format!("fuzz-{round}");
            let req = CreateTopicsRequest::default()
                .with_validate_only(validate_only)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(topic_name(&name))
                    .with_num_partitions(count)
                    .with_replication_factor(rf)
                    .with_assignments(assignments)]);
            let resp = create_topics(&broker, req, 7).await;
            let code = resp.topics[0].error_code;
            if by_count && count > 10_000 {
                assert_eq!(code, codes::INVALID_PARTITIONS, "round {round}");
            }
            let grow = CreatePartitionsRequest::default()
                .with_validate_only(true)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(topic_name(&name))
                    .with_count(extremes[(next() % extremes.len() as u64) as usize])]);
            let _ = create_partitions(&broker, grow).await;
        }
    }
}
