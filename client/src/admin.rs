//! The admin calls the operator needs, over [`Connection`]s: bootstrap from a list of
//! addresses, route each request to the broker that must answer it (any broker, the
//! partition leader, or the group coordinator), reuse one connection per broker, and
//! retry what Kafka calls retriable with exponential backoff.
//!
//! Results are plain Rust types, so callers never handle `kafka-protocol` messages; every
//! Kafka error code becomes an [`AdminError::Kafka`] naming the API and the resource.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use bytes::Buf;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ApiKey, BrokerId, ConsumerProtocolAssignment, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteGroupsRequest, DeleteTopicsRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    FindCoordinatorRequest, GroupId, IncrementalAlterConfigsRequest, ListGroupsRequest,
    ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetDeleteRequest,
    OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Request, StrBytes};
use tokio::sync::Mutex;
use tracing::debug;

use crate::{Connection, Error};

mod moves;
pub use moves::{BrokerInfo, ClusterView, OngoingReassignment, ReassignmentOutcome};

/// `DescribeConfigs`/`IncrementalAlterConfigs` resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// `FindCoordinator` key type of a consumer group.
const COORDINATOR_GROUP: i8 = 0;
/// `ListOffsets` timestamps that name positions rather than times.
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
/// How long the broker may work on a topic operation before answering REQUEST_TIMED_OUT.
const OPERATION_TIMEOUT_MS: i32 = 30_000;

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No connection: the network, a timeout, or a response this client cannot decode.
    #[error("{0}")]
    Connection(#[from] Error),
    /// Kafka answered with an error code.
    #[error("{api:?} for {resource}: {error}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kafka {
        api: ApiKey,
        resource: String,
        error: ResponseError,
        message: Option<String>,
    },
    /// None of the bootstrap addresses answered.
    #[error("no broker reachable at {0}")]
    NoBroker(String),
    /// The response lacks what the request asked for, or contradicts it.
    #[error("unexpected {api:?} response: {detail}")]
    Unexpected { api: ApiKey, detail: String },
}

impl AdminError {
    /// Whether the same call may succeed when tried again.
    pub fn is_retriable(&self) -> bool {
        match self {
            AdminError::Connection(err) => err.is_retriable(),
            AdminError::Kafka { error, .. } => error.is_retriable(),
            AdminError::NoBroker(_) => true,
            AdminError::Unexpected { .. } => false,
        }
    }

    /// The Kafka error code, when Kafka answered with one.
    pub fn kafka_error(&self) -> Option<ResponseError> {
        match self {
            AdminError::Kafka { error, .. } => Some(*error),
            _ => None,
        }
    }

    /// A short name of the failure, usable as a metric label or condition reason.
    pub fn kind(&self) -> String {
        match self {
            AdminError::Connection(_) | AdminError::NoBroker(_) => "Unreachable".into(),
            AdminError::Kafka { error, .. } => match error {
                ResponseError::Unknown(code) => format!("KafkaError{code}"),
                other => format!("{other:?}"),
            },
            AdminError::Unexpected { .. } => "UnexpectedResponse".into(),
        }
    }
}

/// The entry of a response that answers for `what` (a topic, a group); a response that
/// lacks it is `Unexpected`, never a panic.
fn answer_for<'a, T>(
    api: ApiKey,
    entries: &'a [T],
    what: &str,
    is_it: impl Fn(&T) -> bool,
) -> Result<&'a T, AdminError> {
    entries
        .iter()
        .find(|e| is_it(e))
        .ok_or_else(|| AdminError::Unexpected {
            api,
            detail: format!("{what} missing from the response"),
        })
}

fn check(
    api: ApiKey,
    resource: impl Into<String>,
    code: i16,
    message: Option<&StrBytes>,
) -> Result<(), AdminError> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(error) => Err(AdminError::Kafka {
            api,
            resource: resource.into(),
            error,
            message: message.map(|m| m.to_string()).filter(|m| !m.is_empty()),
        }),
    }
}

/// Timeouts and retries.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `client.id` the broker sees.
    pub client_id: String,
    /// How long one request may wait for its response (and a connection for its setup).
    pub request_timeout: Duration,
    /// Attempts after the first for a retriable failure.
    pub retries: u32,
    /// Backoff before the first retry; doubled on each further retry.
    pub retry_backoff: Duration,
    /// Upper bound of the backoff.
    pub retry_backoff_max: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            client_id: "strom-admin".into(),
            request_timeout: Duration::from_secs(30),
            retries: 5,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(2),
        }
    }
}

/// One partition of a topic in Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// A topic as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    /// Kafka's topic id in Kafka's own text form (URL-safe base64, no padding).
    pub topic_id: String,
    pub is_internal: bool,
    /// Sorted by partition.
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    /// Partitions whose ISR is smaller than their replica set.
    pub fn under_replicated(&self) -> usize {
        self.partitions
            .iter()
            .filter(|p| p.isr.len() < p.replicas.len())
            .count()
    }
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    /// The broker's `default.replication.factor` when `None`.
    pub replication_factor: Option<i16>,
    pub configs: BTreeMap<String, String>,
}

/// Where a config value comes from (`DescribeConfigs` `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on the topic itself: the only source an alter on the topic can remove.
    DynamicTopic,
    DynamicBroker,
    DynamicDefaultBroker,
    StaticBroker,
    Default,
    Other(i8),
}

impl ConfigSource {
    fn from_code(code: i8) -> Self {
        match code {
            1 => ConfigSource::DynamicTopic,
            2 => ConfigSource::DynamicBroker,
            3 => ConfigSource::DynamicDefaultBroker,
            4 => ConfigSource::StaticBroker,
            5 => ConfigSource::Default,
            other => ConfigSource::Other(other),
        }
    }
}

/// A topic's config entries by name.
pub type TopicConfig = BTreeMap<String, ConfigEntry>;

/// Each topic's config, or why it could not be read.
pub type TopicConfigs = BTreeMap<String, Result<TopicConfig, AdminError>>;

/// One config entry of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub value: Option<String>,
    pub source: ConfigSource,
    pub read_only: bool,
    pub sensitive: bool,
}

/// One step of an `IncrementalAlterConfigs`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigOp {
    /// Set the key on the resource.
    Set(String, String),
    /// Remove the key from the resource, so its default applies again.
    Delete(String),
}

/// Which offset `ListOffsets` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The first offset whose timestamp is at least this (ms since the epoch).
    Timestamp(i64),
}

/// A group as `ListGroups` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
}

/// A member of a group as `DescribeGroups` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    /// Topic → partitions, decoded from the consumer protocol's assignment; empty for
    /// other protocols or before the first assignment.
    pub assignment: BTreeMap<String, Vec<i32>>,
}

/// A group as `DescribeGroups` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub group_id: String,
    /// Kafka's state name: Empty, Stable, PreparingRebalance, CompletingRebalance, Dead.
    pub state: String,
    pub protocol_type: String,
    pub members: Vec<MemberInfo>,
}

/// A topic partition.
pub type TopicPartition = (String, i32);

/// A cluster's admin client. Cheap to share behind an `Arc`: one request at a time goes
/// out, over connections that are kept and reused until one fails.
pub struct Admin {
    bootstrap: Vec<String>,
    config: AdminConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Open connections by `host:port`.
    connections: HashMap<String, Connection>,
    /// Broker addresses from the last Metadata.
    brokers: BTreeMap<i32, String>,
    /// The controller Metadata named (in KRaft any broker forwards to the quorum).
    controller: Option<i32>,
}

/// Where a request must go.
#[derive(Debug, Clone)]
enum Target {
    Any,
    Controller,
    Broker(i32),
    Coordinator(String),
}

impl Admin {
    /// An admin client for the cluster reachable at any of `bootstrap` (`host:port`).
    /// Nothing connects until the first call.
    pub fn new(bootstrap: Vec<String>, config: AdminConfig) -> Self {
        Admin {
            bootstrap,
            config,
            state: Mutex::new(State::default()),
        }
    }

    /// The addresses this client bootstraps from.
    pub fn bootstrap(&self) -> &[String] {
        &self.bootstrap
    }

    /// Runs `attempt` until it succeeds, fails for good, or runs out of retries; after a
    /// retriable failure the cached routing is dropped, so the next attempt looks anew.
    async fn retrying<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, AdminError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AdminError>>,
    {
        let mut backoff = self.config.retry_backoff;
        let mut tries = 0;
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(err) if err.is_retriable() && tries < self.config.retries => {
                    tries += 1;
                    debug!(call = what, cause = %err, tries, "retrying");
                    {
                        let mut state = self.state.lock().await;
                        state.controller = None;
                        if matches!(err, AdminError::Connection(_)) {
                            // The connection that failed is unusable; which one it was
                            // is not known here, and reconnecting is cheap.
                            state.connections.clear();
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.retry_backoff_max);
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Sends one request to `target`, built for the version that connection negotiated.
    async fn send<R: Request>(
        &self,
        target: Target,
        build: impl FnOnce(i16) -> R,
    ) -> Result<R::Response, AdminError> {
        let mut state = self.state.lock().await;
        let addr = self.resolve(&mut state, &target).await?;
        let conn = self.connection(&mut state, &addr).await?;
        let version = conn.version_for::<R>()?;
        let result = conn.send_versioned(build(version), version).await;
        if result.is_err() {
            state.connections.remove(&addr);
        }
        Ok(result?)
    }

    async fn connection<'a>(
        &self,
        state: &'a mut State,
        addr: &str,
    ) -> Result<&'a mut Connection, AdminError> {
        if !state.connections.contains_key(addr) {
            let conn = Connection::connect_with_timeout(
                addr,
                &self.config.client_id,
                self.config.request_timeout,
            )
            .await?;
            state.connections.insert(addr.to_owned(), conn);
        }
        state
            .connections
            .get_mut(addr)
            .ok_or_else(|| AdminError::NoBroker(addr.to_owned()))
    }

    /// The address of the broker that `target` names.
    async fn resolve(&self, state: &mut State, target: &Target) -> Result<String, AdminError> {
        match target {
            Target::Any => self.any_broker(state).await,
            Target::Controller => {
                if state.controller.is_none() {
                    self.refresh_metadata(state).await?;
                }
                match state.controller.and_then(|id| state.brokers.get(&id)) {
                    Some(addr) => Ok(addr.clone()),
                    None => self.any_broker(state).await,
                }
            }
            Target::Broker(id) => {
                if !state.brokers.contains_key(id) {
                    self.refresh_metadata(state).await?;
                }
                state
                    .brokers
                    .get(id)
                    .cloned()
                    .ok_or_else(|| AdminError::Kafka {
                        api: ApiKey::Metadata,
                        resource: format!("broker {id}"),
                        error: ResponseError::BrokerNotAvailable,
                        message: None,
                    })
            }
            Target::Coordinator(group) => {
                let any = self.any_broker(state).await?;
                let conn = self.connection(state, &any).await?;
                let version = conn.version_for::<FindCoordinatorRequest>()?;
                let mut req = FindCoordinatorRequest::default().with_key_type(COORDINATOR_GROUP);
                let key = StrBytes::from_string(group.clone());
                if version >= 4 {
                    req.coordinator_keys = vec![key];
                } else {
                    req.key = key;
                }
                let resp = match conn.send_versioned(req, version).await {
                    Ok(resp) => resp,
                    Err(err) => {
                        state.connections.remove(&any);
                        return Err(err.into());
                    }
                };
                let api = ApiKey::FindCoordinator;
                let (host, port) = if version >= 4 {
                    let c = resp.coordinators.first().ok_or(AdminError::Unexpected {
                        api,
                        detail: "no coordinator in the response".into(),
                    })?;
                    check(api, group.clone(), c.error_code, c.error_message.as_ref())?;
                    (c.host.to_string(), c.port)
                } else {
                    check(
                        api,
                        group.clone(),
                        resp.error_code,
                        resp.error_message.as_ref(),
                    )?;
                    (resp.host.to_string(), resp.port)
                };
                Ok(format!("{host}:{port}"))
            }
        }
    }

    /// An address that answers: a known broker first, else the bootstrap list in order.
    async fn any_broker(&self, state: &mut State) -> Result<String, AdminError> {
        if let Some(addr) = state.connections.keys().next() {
            return Ok(addr.clone());
        }
        let mut last = None;
        let candidates: Vec<String> = state
            .brokers
            .values()
            .cloned()
            .chain(self.bootstrap.iter().cloned())
            .collect();
        for addr in candidates {
            match self.connection(state, &addr).await {
                Ok(_) => return Ok(addr),
                Err(err) => last = Some(err),
            }
        }
        match last {
            Some(AdminError::Connection(err)) if !err.is_retriable() => {
                Err(AdminError::Connection(err))
            }
            _ => Err(AdminError::NoBroker(self.bootstrap.join(","))),
        }
    }

    /// Refreshes the broker addresses and the controller id from Metadata.
    async fn refresh_metadata(&self, state: &mut State) -> Result<(), AdminError> {
        let addr = self.any_broker(state).await?;
        let conn = self.connection(state, &addr).await?;
        let req = MetadataRequest::default().with_topics(Some(vec![]));
        let resp = match conn.send(req).await {
            Ok(resp) => resp,
            Err(err) => {
                state.connections.remove(&addr);
                return Err(err.into());
            }
        };
        state.brokers = resp
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        state.controller = Some(resp.controller_id.0).filter(|id| *id >= 0);
        Ok(())
    }

    /// Describes `topic`; `None` when it does not exist.
    pub async fn describe_topic(&self, topic: &str) -> Result<Option<TopicInfo>, AdminError> {
        self.retrying("describe_topic", || self.describe_topic_once(topic))
            .await
    }

    async fn describe_topic_once(&self, topic: &str) -> Result<Option<TopicInfo>, AdminError> {
        let resp = self
            .send(Target::Any, |_| {
                MetadataRequest::default()
                    .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                        TopicName(StrBytes::from_string(topic.to_owned())),
                    ))]))
                    .with_allow_auto_topic_creation(false)
            })
            .await?;
        let api = ApiKey::Metadata;
        let found = answer_for(api, &resp.topics, &format!("topic {topic}"), |t| {
            t.name.as_ref().map(|n| n.0.as_str()) == Some(topic)
        })?;
        if ResponseError::try_from_code(found.error_code)
            == Some(ResponseError::UnknownTopicOrPartition)
        {
            return Ok(None);
        }
        check(api, topic, found.error_code, None)?;
        let mut partitions: Vec<PartitionInfo> = found
            .partitions
            .iter()
            .map(|p| PartitionInfo {
                partition: p.partition_index,
                leader: p.leader_id.0,
                replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                isr: p.isr_nodes.iter().map(|b| b.0).collect(),
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        Ok(Some(TopicInfo {
            name: topic.to_owned(),
            topic_id: kafka_uuid(&found.topic_id),
            is_internal: found.is_internal,
            partitions,
        }))
    }

    /// Creates a topic and returns its id.
    pub async fn create_topic(&self, topic: &NewTopic) -> Result<String, AdminError> {
        self.retrying("create_topic", || self.create_topic_once(topic))
            .await
    }

    async fn create_topic_once(&self, topic: &NewTopic) -> Result<String, AdminError> {
        let creatable = CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.name.clone())))
            .with_num_partitions(topic.partitions)
            .with_replication_factor(topic.replication_factor.unwrap_or(-1))
            .with_configs(
                topic
                    .configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_value(Some(StrBytes::from_string(v.clone())))
                    })
                    .collect(),
            );
        let resp = self
            .send(Target::Controller, |_| {
                CreateTopicsRequest::default()
                    .with_topics(vec![creatable])
                    .with_timeout_ms(OPERATION_TIMEOUT_MS)
            })
            .await?;
        let api = ApiKey::CreateTopics;
        let result = answer_for(api, &resp.topics, &format!("topic {}", topic.name), |t| {
            t.name.0.as_str() == topic.name
        })?;
        check(
            api,
            &topic.name,
            result.error_code,
            result.error_message.as_ref(),
        )?;
        Ok(kafka_uuid(&result.topic_id))
    }

    /// Deletes a topic by name.
    pub async fn delete_topic(&self, topic: &str) -> Result<(), AdminError> {
        self.retrying("delete_topic", || self.delete_topic_once(topic))
            .await
    }

    async fn delete_topic_once(&self, topic: &str) -> Result<(), AdminError> {
        let name = TopicName(StrBytes::from_string(topic.to_owned()));
        let resp = self
            .send(Target::Controller, |version| {
                let req = DeleteTopicsRequest::default().with_timeout_ms(OPERATION_TIMEOUT_MS);
                if version >= 6 {
                    req.with_topics(vec![DeleteTopicState::default().with_name(Some(name))])
                } else {
                    req.with_topic_names(vec![name])
                }
            })
            .await?;
        let api = ApiKey::DeleteTopics;
        let result = answer_for(api, &resp.responses, &format!("topic {topic}"), |t| {
            t.name.as_ref().map(|n| n.0.as_str()) == Some(topic)
        })?;
        check(api, topic, result.error_code, result.error_message.as_ref())
    }

    /// Grows `topic` to `count` partitions.
    pub async fn create_partitions(&self, topic: &str, count: i32) -> Result<(), AdminError> {
        self.retrying("create_partitions", || {
            self.create_partitions_once(topic, count)
        })
        .await
    }

    async fn create_partitions_once(&self, topic: &str, count: i32) -> Result<(), AdminError> {
        let resp = self
            .send(Target::Controller, |_| {
                CreatePartitionsRequest::default()
                    .with_topics(vec![CreatePartitionsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                        .with_count(count)
                        // Null, not empty: the broker places the new partitions.
                        .with_assignments(None)])
                    .with_timeout_ms(OPERATION_TIMEOUT_MS)
            })
            .await?;
        let api = ApiKey::CreatePartitions;
        let result = answer_for(api, &resp.results, &format!("topic {topic}"), |t| {
            t.name.0.as_str() == topic
        })?;
        check(api, topic, result.error_code, result.error_message.as_ref())
    }

    /// Every config entry of `topic`, with its source.
    pub async fn describe_topic_config(&self, topic: &str) -> Result<TopicConfig, AdminError> {
        self.retrying("describe_topic_config", || async {
            let topics = [topic.to_owned()];
            let mut answers = self.describe_topic_configs_once(&topics, None).await?;
            answers.remove(topic).unwrap_or_else(|| {
                Err(AdminError::Unexpected {
                    api: ApiKey::DescribeConfigs,
                    detail: format!("topic {topic} missing from the response"),
                })
            })
        })
        .await
    }

    /// The entries named `keys` (every entry when `None`) of each of `topics`, in one
    /// DescribeConfigs: a topic the broker could not describe gets its own error, and the
    /// whole call is tried again while some topic's error is retriable — except
    /// UNKNOWN_TOPIC_OR_PARTITION: a topic deleted since the caller listed it is an answer.
    pub async fn describe_topic_configs(
        &self,
        topics: &[String],
        keys: Option<&[&str]>,
    ) -> Result<TopicConfigs, AdminError> {
        if topics.is_empty() {
            return Ok(BTreeMap::new());
        }
        self.retrying("describe_topic_configs", || async {
            let mut answers = self.describe_topic_configs_once(topics, keys).await?;
            let retriable = answers.iter().find_map(|(topic, answer)| {
                matches!(answer, Err(err) if err.is_retriable()
                    && err.kafka_error() != Some(ResponseError::UnknownTopicOrPartition))
                .then(|| topic.clone())
            });
            if let Some(Err(err)) = retriable.and_then(|topic| answers.remove(&topic)) {
                return Err(err);
            }
            Ok(answers)
        })
        .await
    }

    async fn describe_topic_configs_once(
        &self,
        topics: &[String],
        keys: Option<&[&str]>,
    ) -> Result<TopicConfigs, AdminError> {
        let keys: Option<Vec<StrBytes>> = keys.map(|keys| {
            keys.iter()
                .map(|k| StrBytes::from_string((*k).to_owned()))
                .collect()
        });
        let resp = self
            .send(Target::Any, |_| {
                DescribeConfigsRequest::default().with_resources(
                    topics
                        .iter()
                        .map(|topic| {
                            DescribeConfigsResource::default()
                                .with_resource_type(RESOURCE_TOPIC)
                                .with_resource_name(StrBytes::from_string(topic.clone()))
                                .with_configuration_keys(keys.clone())
                        })
                        .collect(),
                )
            })
            .await?;
        let api = ApiKey::DescribeConfigs;
        Ok(topics
            .iter()
            .map(|topic| {
                let answer = answer_for(api, &resp.results, &format!("topic {topic}"), |r| {
                    r.resource_name.as_str() == topic
                })
                .and_then(|result| {
                    check(
                        api,
                        topic.as_str(),
                        result.error_code,
                        result.error_message.as_ref(),
                    )?;
                    Ok(result
                        .configs
                        .iter()
                        .map(|c| {
                            let entry = ConfigEntry {
                                value: c.value.as_ref().map(|v| v.to_string()),
                                source: ConfigSource::from_code(c.config_source),
                                read_only: c.read_only,
                                sensitive: c.is_sensitive,
                            };
                            (c.name.to_string(), entry)
                        })
                        .collect())
                });
                (topic.clone(), answer)
            })
            .collect())
    }

    /// Applies `ops` to `topic`'s config in one `IncrementalAlterConfigs`.
    pub async fn alter_topic_config(
        &self,
        topic: &str,
        ops: &[ConfigOp],
    ) -> Result<(), AdminError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.retrying("alter_topic_config", || {
            self.alter_topic_config_once(topic, ops)
        })
        .await
    }

    async fn alter_topic_config_once(
        &self,
        topic: &str,
        ops: &[ConfigOp],
    ) -> Result<(), AdminError> {
        let configs = ops.iter().map(moves::alterable).collect();
        let resp = self
            .send(Target::Any, |_| {
                IncrementalAlterConfigsRequest::default().with_resources(vec![
                    AlterConfigsResource::default()
                        .with_resource_type(RESOURCE_TOPIC)
                        .with_resource_name(StrBytes::from_string(topic.to_owned()))
                        .with_configs(configs),
                ])
            })
            .await?;
        let api = ApiKey::IncrementalAlterConfigs;
        let result = answer_for(api, &resp.responses, &format!("topic {topic}"), |r| {
            r.resource_name.as_str() == topic
        })?;
        check(api, topic, result.error_code, result.error_message.as_ref())
    }

    /// The offset `spec` names on each of `partitions` of `topic`, asking each
    /// partition's leader. A timestamp later than every record gives `-1`, as in Kafka.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<BTreeMap<i32, i64>, AdminError> {
        self.retrying("list_offsets", || {
            self.list_offsets_once(topic, partitions, spec)
        })
        .await
    }

    async fn list_offsets_once(
        &self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<BTreeMap<i32, i64>, AdminError> {
        let api = ApiKey::ListOffsets;
        let info = self
            .describe_topic_once(topic)
            .await?
            .ok_or_else(|| AdminError::Kafka {
                api,
                resource: topic.to_owned(),
                error: ResponseError::UnknownTopicOrPartition,
                message: None,
            })?;
        let timestamp = match spec {
            OffsetSpec::Earliest => EARLIEST_TIMESTAMP,
            OffsetSpec::Latest => LATEST_TIMESTAMP,
            OffsetSpec::Timestamp(ts) => ts,
        };
        // One request per leader.
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &partition in partitions {
            let leader = info
                .partitions
                .iter()
                .find(|p| p.partition == partition)
                .map(|p| p.leader)
                .ok_or_else(|| AdminError::Kafka {
                    api,
                    resource: format!("{topic}-{partition}"),
                    error: ResponseError::UnknownTopicOrPartition,
                    message: None,
                })?;
            if leader < 0 {
                return Err(AdminError::Kafka {
                    api,
                    resource: format!("{topic}-{partition}"),
                    error: ResponseError::LeaderNotAvailable,
                    message: None,
                });
            }
            by_leader.entry(leader).or_default().push(partition);
        }
        let mut offsets = BTreeMap::new();
        for (leader, asked) in by_leader {
            let resp = self
                .send(Target::Broker(leader), |_| {
                    ListOffsetsRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_topics(vec![ListOffsetsTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                            .with_partitions(
                                asked
                                    .iter()
                                    .map(|&p| {
                                        ListOffsetsPartition::default()
                                            .with_partition_index(p)
                                            .with_current_leader_epoch(-1)
                                            .with_timestamp(timestamp)
                                    })
                                    .collect(),
                            )])
                })
                .await?;
            for t in resp.topics.iter().filter(|t| t.name.0.as_str() == topic) {
                for p in &t.partitions {
                    check(
                        api,
                        format!("{topic}-{}", p.partition_index),
                        p.error_code,
                        None,
                    )?;
                    offsets.insert(p.partition_index, p.offset);
                }
            }
            if let Some(missing) = asked.iter().find(|p| !offsets.contains_key(p)) {
                return Err(AdminError::Unexpected {
                    api,
                    detail: format!("{topic}-{missing} missing from the response"),
                });
            }
        }
        Ok(offsets)
    }

    /// Every group of every broker.
    pub async fn list_groups(&self) -> Result<Vec<ListedGroup>, AdminError> {
        self.retrying("list_groups", || self.list_groups_once())
            .await
    }

    async fn list_groups_once(&self) -> Result<Vec<ListedGroup>, AdminError> {
        let brokers: Vec<i32> = {
            let mut state = self.state.lock().await;
            self.refresh_metadata(&mut state).await?;
            state.brokers.keys().copied().collect()
        };
        let mut groups = Vec::new();
        for broker in brokers {
            let resp = self
                .send(Target::Broker(broker), |_| ListGroupsRequest::default())
                .await?;
            check(
                ApiKey::ListGroups,
                format!("broker {broker}"),
                resp.error_code,
                None,
            )?;
            groups.extend(resp.groups.iter().map(|g| ListedGroup {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
            }));
        }
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(groups)
    }

    /// Describes a group; a group Kafka does not know is `Dead` with no members.
    pub async fn describe_group(&self, group: &str) -> Result<GroupInfo, AdminError> {
        self.retrying("describe_group", || self.describe_group_once(group))
            .await
    }

    async fn describe_group_once(&self, group: &str) -> Result<GroupInfo, AdminError> {
        let resp = self
            .send(Target::Coordinator(group.to_owned()), |_| {
                DescribeGroupsRequest::default()
                    .with_groups(vec![GroupId(StrBytes::from_string(group.to_owned()))])
            })
            .await?;
        let api = ApiKey::DescribeGroups;
        let found = answer_for(api, &resp.groups, &format!("group {group}"), |g| {
            g.group_id.0.as_str() == group
        })?;
        // From v6 a missing group is an error; earlier versions answer `Dead`. One shape.
        if ResponseError::try_from_code(found.error_code) == Some(ResponseError::GroupIdNotFound) {
            return Ok(GroupInfo {
                group_id: group.to_owned(),
                state: "Dead".into(),
                protocol_type: String::new(),
                members: vec![],
            });
        }
        check(api, group, found.error_code, found.error_message.as_ref())?;
        let consumer = found.protocol_type.as_str() == "consumer";
        let members = found
            .members
            .iter()
            .map(|m| MemberInfo {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(|s| s.to_string()),
                client_id: m.client_id.to_string(),
                host: m.client_host.to_string(),
                assignment: if consumer {
                    decode_assignment(&m.member_assignment)
                } else {
                    BTreeMap::new()
                },
            })
            .collect();
        Ok(GroupInfo {
            group_id: group.to_owned(),
            state: found.group_state.to_string(),
            protocol_type: found.protocol_type.to_string(),
            members,
        })
    }

    /// The group's committed offsets on every partition it has committed.
    pub async fn fetch_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<TopicPartition, i64>, AdminError> {
        self.retrying("fetch_offsets", || self.fetch_offsets_once(group))
            .await
    }

    async fn fetch_offsets_once(
        &self,
        group: &str,
    ) -> Result<BTreeMap<TopicPartition, i64>, AdminError> {
        let group_id = GroupId(StrBytes::from_string(group.to_owned()));
        let mut batched = false;
        let resp = self
            .send(Target::Coordinator(group.to_owned()), |version| {
                // Null topics ask for every partition the group has committed.
                if version >= 8 {
                    batched = true;
                    OffsetFetchRequest::default().with_groups(vec![
                        OffsetFetchRequestGroup::default()
                            .with_group_id(group_id)
                            .with_topics(None),
                    ])
                } else {
                    OffsetFetchRequest::default()
                        .with_group_id(group_id)
                        .with_topics(None)
                }
            })
            .await?;
        let api = ApiKey::OffsetFetch;
        let mut offsets = BTreeMap::new();
        let mut add = |topic: &str, partition: i32, offset: i64, code: i16| {
            check(api, format!("{group} {topic}-{partition}"), code, None)?;
            // -1: no offset committed for this partition.
            if offset >= 0 {
                offsets.insert((topic.to_owned(), partition), offset);
            }
            Ok::<_, AdminError>(())
        };
        if batched {
            let found = answer_for(api, &resp.groups, &format!("group {group}"), |g| {
                g.group_id.0.as_str() == group
            })?;
            check(api, group, found.error_code, None)?;
            for t in &found.topics {
                for p in &t.partitions {
                    add(
                        t.name.0.as_str(),
                        p.partition_index,
                        p.committed_offset,
                        p.error_code,
                    )?;
                }
            }
        } else {
            check(api, group, resp.error_code, None)?;
            for t in &resp.topics {
                for p in &t.partitions {
                    add(
                        t.name.0.as_str(),
                        p.partition_index,
                        p.committed_offset,
                        p.error_code,
                    )?;
                }
            }
        }
        Ok(offsets)
    }

    /// Commits `offsets` for a group without members, as an admin does: generation -1
    /// and no member id, which the coordinator accepts only while the group is empty.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<(), AdminError> {
        if offsets.is_empty() {
            return Ok(());
        }
        self.retrying("commit_offsets", || {
            self.commit_offsets_once(group, offsets)
        })
        .await
    }

    async fn commit_offsets_once(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<(), AdminError> {
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for ((topic, partition), offset) in offsets {
            topics.entry(topic.as_str()).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*partition)
                    .with_committed_offset(*offset)
                    .with_committed_leader_epoch(-1),
            );
        }
        let topics: Vec<OffsetCommitRequestTopic> = topics
            .into_iter()
            .map(|(name, partitions)| {
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name.to_owned())))
                    .with_partitions(partitions)
            })
            .collect();
        let resp = self
            .send(Target::Coordinator(group.to_owned()), |_| {
                OffsetCommitRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
                    .with_generation_id_or_member_epoch(-1)
                    .with_member_id(StrBytes::from_static_str(""))
                    .with_retention_time_ms(-1)
                    .with_topics(topics)
            })
            .await?;
        let api = ApiKey::OffsetCommit;
        let mut answered = 0;
        for t in &resp.topics {
            for p in &t.partitions {
                check(
                    api,
                    format!("{group} {}-{}", t.name.0, p.partition_index),
                    p.error_code,
                    None,
                )?;
                answered += 1;
            }
        }
        if answered != offsets.len() {
            return Err(AdminError::Unexpected {
                api,
                detail: format!("{answered} of {} partitions answered", offsets.len()),
            });
        }
        Ok(())
    }

    /// Deletes a group (only an empty one: Kafka refuses NON_EMPTY_GROUP otherwise).
    pub async fn delete_group(&self, group: &str) -> Result<(), AdminError> {
        self.retrying("delete_group", || self.delete_group_once(group))
            .await
    }

    async fn delete_group_once(&self, group: &str) -> Result<(), AdminError> {
        let resp = self
            .send(Target::Coordinator(group.to_owned()), |_| {
                DeleteGroupsRequest::default()
                    .with_groups_names(vec![GroupId(StrBytes::from_string(group.to_owned()))])
            })
            .await?;
        let api = ApiKey::DeleteGroups;
        let result = answer_for(api, &resp.results, &format!("group {group}"), |r| {
            r.group_id.0.as_str() == group
        })?;
        check(api, group, result.error_code, None)
    }

    /// Deletes the group's committed offsets of `partitions`.
    pub async fn delete_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<(), AdminError> {
        if partitions.is_empty() {
            return Ok(());
        }
        self.retrying("delete_offsets", || {
            self.delete_offsets_once(group, partitions)
        })
        .await
    }

    async fn delete_offsets_once(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<(), AdminError> {
        let mut topics: BTreeMap<&str, Vec<OffsetDeleteRequestPartition>> = BTreeMap::new();
        for (topic, partition) in partitions {
            topics
                .entry(topic.as_str())
                .or_default()
                .push(OffsetDeleteRequestPartition::default().with_partition_index(*partition));
        }
        let topics = topics
            .into_iter()
            .map(|(name, partitions)| {
                OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name.to_owned())))
                    .with_partitions(partitions)
            })
            .collect();
        let resp = self
            .send(Target::Coordinator(group.to_owned()), |_| {
                OffsetDeleteRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
                    .with_topics(topics)
            })
            .await?;
        let api = ApiKey::OffsetDelete;
        check(api, group, resp.error_code, None)?;
        for t in &resp.topics {
            for p in &t.partitions {
                check(
                    api,
                    format!("{group} {}-{}", t.name.0, p.partition_index),
                    p.error_code,
                    None,
                )?;
            }
        }
        Ok(())
    }
}

/// Decodes a consumer-protocol assignment (a version, then the message); anything that
/// does not decode is an empty assignment rather than an error, since the assignment is
/// informational and other clients may put anything there.
fn decode_assignment(bytes: &bytes::Bytes) -> BTreeMap<String, Vec<i32>> {
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return BTreeMap::new();
    }
    let version = buf.get_i16().clamp(0, 3);
    match ConsumerProtocolAssignment::decode(&mut buf, version) {
        Ok(assignment) => assignment
            .assigned_partitions
            .into_iter()
            .map(|tp| {
                let mut partitions = tp.partitions;
                partitions.sort_unstable();
                (tp.topic.0.to_string(), partitions)
            })
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}

/// Kafka's text form of a UUID: URL-safe base64 of its 16 bytes, without padding.
pub fn kafka_uuid(id: &uuid::Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = id.as_bytes();
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTp;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn kafka_uuid_matches_kafkas_text_form() {
        // Kafka prints Uuid(0x0123456789abcdef, 0xfedcba9876543210) this way
        // (Base64.getUrlEncoder().withoutPadding()).
        let id = uuid::Uuid::from_u128(0x0123456789abcdef_fedcba9876543210);
        assert_eq!(kafka_uuid(&id), "ASNFZ4mrze_-3LqYdlQyEA");
        assert_eq!(kafka_uuid(&uuid::Uuid::nil()), "AAAAAAAAAAAAAAAAAAAAAA");
    }

    #[test]
    fn assignments_decode_and_garbage_is_empty() {
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            AssignedTp::default()
                .with_topic(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(vec![2, 0]),
        ]);
        let mut buf = BytesMut::new();
        buf.put_i16(1);
        assignment.encode(&mut buf, 1).unwrap();
        let decoded = decode_assignment(&buf.freeze());
        assert_eq!(decoded, BTreeMap::from([("orders".to_owned(), vec![0, 2])]));

        assert!(decode_assignment(&bytes::Bytes::from_static(&[0, 1, 0xff])).is_empty());
        assert!(decode_assignment(&bytes::Bytes::new()).is_empty());
    }

    #[test]
    fn retriable_errors_follow_kafka() {
        let kafka = |error| AdminError::Kafka {
            api: ApiKey::CreateTopics,
            resource: "t".into(),
            error,
            message: None,
        };
        assert!(kafka(ResponseError::NotController).is_retriable());
        assert!(kafka(ResponseError::CoordinatorLoadInProgress).is_retriable());
        assert!(kafka(ResponseError::RequestTimedOut).is_retriable());
        assert!(!kafka(ResponseError::TopicAlreadyExists).is_retriable());
        assert!(!kafka(ResponseError::InvalidConfig).is_retriable());
        assert_eq!(kafka(ResponseError::InvalidConfig).kind(), "InvalidConfig");
        assert!(AdminError::Connection(Error::Timeout(Duration::from_secs(1))).is_retriable());
        assert!(!AdminError::Connection(Error::Decode("x".into())).is_retriable());
    }

    /// How the scripted broker answers CreateTopics.
    #[derive(Clone, Copy)]
    enum Script {
        /// NOT_CONTROLLER on the first request, success afterwards.
        NotControllerOnce,
        /// Never answers.
        Silent,
        /// A body that does not decode.
        Garbage,
        /// TOPIC_ALREADY_EXISTS with a message.
        AlreadyExists,
    }

    /// A broker on loopback that answers ApiVersions and Metadata (itself as broker and
    /// controller 0) and CreateTopics as `script` says; returns its address and a
    /// counter of CreateTopics requests seen.
    async fn scripted_broker(
        script: Script,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let (addr, seen, _accepted) = scripted_broker_counting(script).await;
        (addr, seen)
    }

    /// `scripted_broker`, also counting accepted connections.
    async fn scripted_broker_counting(
        script: Script,
    ) -> (
        String,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use kafka_protocol::messages::api_versions_response::ApiVersion;
        use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
        use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
        use kafka_protocol::messages::{
            ApiVersionsResponse, CreateTopicsResponse, MetadataResponse, RequestHeader,
            ResponseHeader,
        };
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepts = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                accepts.fetch_add(1, Ordering::SeqCst);
                let counter = counter.clone();
                tokio::spawn(async move {
                    loop {
                        let mut len = [0u8; 4];
                        if socket.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
                        socket.read_exact(&mut frame).await.unwrap();
                        let mut buf = bytes::Bytes::from(frame);
                        let key = ApiKey::try_from(i16::from_be_bytes([buf[0], buf[1]])).unwrap();
                        let version = i16::from_be_bytes([buf[2], buf[3]]);
                        let header =
                            RequestHeader::decode(&mut buf, key.request_header_version(version))
                                .unwrap();
                        let mut body = BytesMut::new();
                        match key {
                            ApiKey::ApiVersions => {
                                let keys = [
                                    (ApiKey::ApiVersions, 0, 3),
                                    (ApiKey::Metadata, 0, 12),
                                    (ApiKey::CreateTopics, 2, 7),
                                ];
                                ApiVersionsResponse::default()
                                    .with_api_keys(
                                        keys.iter()
                                            .map(|(k, min, max)| {
                                                ApiVersion::default()
                                                    .with_api_key(*k as i16)
                                                    .with_min_version(*min)
                                                    .with_max_version(*max)
                                            })
                                            .collect(),
                                    )
                                    .encode(&mut body, version)
                                    .unwrap();
                            }
                            ApiKey::Metadata => MetadataResponse::default()
                                .with_brokers(vec![MetadataResponseBroker::default()
                                    .with_node_id(BrokerId(0))
                                    .with_host(StrBytes::from_string(addr.ip().to_string()))
                                    .with_port(i32::from(addr.port()))])
                                .with_controller_id(BrokerId(0))
                                .encode(&mut body, version)
                                .unwrap(),
                            ApiKey::CreateTopics => {
                                let n = counter.fetch_add(1, Ordering::SeqCst);
                                let error = match script {
                                    Script::NotControllerOnce if n == 0 => {
                                        ResponseError::NotController.code()
                                    }
                                    Script::AlreadyExists => {
                                        ResponseError::TopicAlreadyExists.code()
                                    }
                                    _ => 0,
                                };
                                match script {
                                    Script::Silent => continue,
                                    Script::Garbage => body.put_slice(&[0xff; 3]),
                                    _ => CreateTopicsResponse::default()
                                        .with_topics(vec![CreatableTopicResult::default()
                                            .with_name(TopicName(StrBytes::from_static_str("t")))
                                            .with_error_code(error)
                                            .with_error_message(
                                                (error != 0)
                                                    .then(|| StrBytes::from_static_str("scripted")),
                                            )])
                                        .encode(&mut body, version)
                                        .unwrap(),
                                }
                            }
                            other => panic!("unscripted {other:?}"),
                        }
                        let mut head = BytesMut::new();
                        ResponseHeader::default()
                            .with_correlation_id(header.correlation_id)
                            .encode(&mut head, key.response_header_version(version))
                            .unwrap();
                        let mut out = BytesMut::new();
                        out.put_u32((head.len() + body.len()) as u32);
                        out.put_slice(&head);
                        out.put_slice(&body);
                        if socket.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr.to_string(), seen, accepted)
    }

    fn new_topic() -> NewTopic {
        NewTopic {
            name: "t".into(),
            partitions: 1,
            replication_factor: None,
            configs: BTreeMap::new(),
        }
    }

    fn quick(request_timeout: Duration, retries: u32) -> AdminConfig {
        AdminConfig {
            request_timeout,
            retries,
            retry_backoff: Duration::from_millis(1),
            ..AdminConfig::default()
        }
    }

    #[tokio::test]
    async fn a_retriable_kafka_error_is_retried() {
        let (addr, seen) = scripted_broker(Script::NotControllerOnce).await;
        let admin = Admin::new(vec![addr], quick(Duration::from_secs(5), 3));
        admin
            .create_topic(&new_topic())
            .await
            .expect("second try succeeds");
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn one_connection_serves_every_call() {
        let (addr, seen, accepted) = scripted_broker_counting(Script::NotControllerOnce).await;
        let admin = Admin::new(vec![addr], quick(Duration::from_secs(5), 3));
        for _ in 0..3 {
            admin.create_topic(&new_topic()).await.expect("created");
        }
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 4);
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "bootstrap, metadata and every request share one connection"
        );
    }

    #[tokio::test]
    async fn a_final_kafka_error_is_typed_and_not_retried() {
        let (addr, seen) = scripted_broker(Script::AlreadyExists).await;
        let admin = Admin::new(vec![addr], quick(Duration::from_secs(5), 3));
        let err = admin.create_topic(&new_topic()).await.unwrap_err();
        assert_eq!(err.kafka_error(), Some(ResponseError::TopicAlreadyExists));
        assert_eq!(
            err.to_string(),
            "CreateTopics for t: TopicAlreadyExists (scripted)"
        );
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_silent_broker_times_out_on_every_try() {
        let (addr, seen) = scripted_broker(Script::Silent).await;
        let admin = Admin::new(vec![addr], quick(Duration::from_millis(200), 1));
        let err = admin.create_topic(&new_topic()).await.unwrap_err();
        assert!(
            matches!(err, AdminError::Connection(Error::Timeout(_))),
            "{err:?}"
        );
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "one retry"
        );
    }

    #[tokio::test]
    async fn an_undecodable_response_is_an_error_not_a_panic() {
        let (addr, seen) = scripted_broker(Script::Garbage).await;
        let admin = Admin::new(vec![addr], quick(Duration::from_secs(5), 3));
        let err = admin.create_topic(&new_topic()).await.unwrap_err();
        assert!(
            matches!(err, AdminError::Connection(Error::Decode(_))),
            "{err:?}"
        );
        assert!(!err.is_retriable());
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unreachable_cluster_fails_after_the_retries() {
        // A port nothing listens on: bind one, then close it.
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let admin = Admin::new(
            vec![addr.clone()],
            AdminConfig {
                retries: 2,
                retry_backoff: Duration::from_millis(1),
                ..AdminConfig::default()
            },
        );
        let err = admin.describe_topic("t").await.unwrap_err();
        assert!(
            matches!(err, AdminError::NoBroker(ref a) if *a == addr),
            "{err}"
        );
        assert_eq!(err.kind(), "Unreachable");
    }
}
