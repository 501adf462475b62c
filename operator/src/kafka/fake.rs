//! An in-memory Kafka cluster for reconcile tests: topics with configs, groups with
//! members and committed offsets, log end offsets. It answers like a broker does for the
//! calls the controllers make (errors included) and records every mutating call, so tests
//! assert what the controller changed in Kafka.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;
use futures::FutureExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;

use super::*;

/// A topic in the fake cluster.
#[derive(Debug, Clone)]
pub struct FakeTopic {
    pub id: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Keys set on the topic itself.
    pub config: BTreeMap<String, String>,
    /// Earliest and latest offset per partition.
    pub offsets: BTreeMap<i32, (i64, i64)>,
}

/// A group in the fake cluster.
#[derive(Debug, Clone, Default)]
pub struct FakeGroup {
    pub state: String,
    pub members: Vec<MemberInfo>,
    pub committed: BTreeMap<TopicPartition, i64>,
}

#[derive(Debug, Default)]
pub struct FakeState {
    pub topics: BTreeMap<String, FakeTopic>,
    pub groups: BTreeMap<String, FakeGroup>,
    /// Broker-level config every topic inherits (source `DEFAULT_CONFIG`).
    pub defaults: BTreeMap<String, String>,
    /// Mutating calls, in order, for assertions.
    pub calls: Vec<String>,
    /// When set, every call fails with this error code.
    pub fail_with: Option<ResponseError>,
}

/// The fake cluster; clones share state.
#[derive(Clone, Default)]
pub struct FakeKafka(pub Arc<Mutex<FakeState>>);

impl FakeKafka {
    pub fn new() -> Self {
        let fake = FakeKafka::default();
        fake.state().defaults = BTreeMap::from([
            ("cleanup.policy".to_owned(), "delete".to_owned()),
            ("retention.ms".to_owned(), "604800000".to_owned()),
            ("retention.bytes".to_owned(), "-1".to_owned()),
        ]);
        fake
    }

    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.0.lock().expect("fake state")
    }

    pub fn add_topic(&self, name: &str, partitions: i32, config: &[(&str, &str)]) {
        self.state().topics.insert(
            name.to_owned(),
            FakeTopic {
                id: format!("id-{name}"),
                partitions,
                replication_factor: 1,
                config: config
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                offsets: (0..partitions).map(|p| (p, (0, 0))).collect(),
            },
        );
    }

    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }
}

fn kafka_error(api: ApiKey, resource: &str, error: ResponseError) -> AdminError {
    AdminError::Kafka {
        api,
        resource: resource.to_owned(),
        error,
        message: None,
    }
}

impl FakeState {
    fn failing(&self, api: ApiKey, resource: &str) -> Result<(), AdminError> {
        match self.fail_with {
            Some(error) => Err(kafka_error(api, resource, error)),
            None => Ok(()),
        }
    }
}

impl KafkaAdmin for FakeKafka {
    fn describe_topic<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Option<TopicInfo>, AdminError>> {
        async move {
            let state = self.state();
            state.failing(ApiKey::Metadata, topic)?;
            Ok(state.topics.get(topic).map(|t| TopicInfo {
                name: topic.to_owned(),
                topic_id: t.id.clone(),
                is_internal: false,
                partitions: (0..t.partitions)
                    .map(|p| PartitionInfo {
                        partition: p,
                        leader: 0,
                        replicas: (0..t.replication_factor).collect(),
                        isr: (0..t.replication_factor).collect(),
                    })
                    .collect(),
            }))
        }
        .boxed()
    }

    fn create_topic<'a>(
        &'a self,
        topic: &'a NewTopic,
    ) -> BoxFuture<'a, Result<String, AdminError>> {
        async move {
            let mut state = self.state();
            state.failing(ApiKey::CreateTopics, &topic.name)?;
            if state.topics.contains_key(&topic.name) {
                return Err(kafka_error(
                    ApiKey::CreateTopics,
                    &topic.name,
                    ResponseError::TopicAlreadyExists,
                ));
            }
            state.calls.push(format!(
                "create {} partitions={} rf={:?} config={:?}",
                topic.name, topic.partitions, topic.replication_factor, topic.configs
            ));
            let id = format!("id-{}", topic.name);
            state.topics.insert(
                topic.name.clone(),
                FakeTopic {
                    id: id.clone(),
                    partitions: topic.partitions,
                    replication_factor: topic.replication_factor.map_or(1, i32::from),
                    config: topic.configs.clone(),
                    offsets: (0..topic.partitions).map(|p| (p, (0, 0))).collect(),
                },
            );
            Ok(id)
        }
        .boxed()
    }

    fn delete_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), AdminError>> {
        async move {
            let mut state = self.state();
            state.failing(ApiKey::DeleteTopics, topic)?;
            if state.topics.remove(topic).is_none() {
                return Err(kafka_error(
                    ApiKey::DeleteTopics,
                    topic,
                    ResponseError::UnknownTopicOrPartition,
                ));
            }
            state.calls.push(format!("delete {topic}"));
            Ok(())
        }
        .boxed()
    }

    fn create_partitions<'a>(
        &'a self,
        topic: &'a str,
        count: i32,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        async move {
            let mut state = self.state();
            state.failing(ApiKey::CreatePartitions, topic)?;
            let api = ApiKey::CreatePartitions;
            let t = state
                .topics
                .get_mut(topic)
                .ok_or_else(|| kafka_error(api, topic, ResponseError::UnknownTopicOrPartition))?;
            if count <= t.partitions {
                return Err(kafka_error(api, topic, ResponseError::InvalidPartitions));
            }
            for p in t.partitions..count {
                t.offsets.insert(p, (0, 0));
            }
            t.partitions = count;
            state.calls.push(format!("partitions {topic} {count}"));
            Ok(())
        }
        .boxed()
    }

    fn describe_topic_config<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, ConfigEntry>, AdminError>> {
        async move {
            let state = self.state();
            state.failing(ApiKey::DescribeConfigs, topic)?;
            let t = state.topics.get(topic).ok_or_else(|| {
                kafka_error(
                    ApiKey::DescribeConfigs,
                    topic,
                    ResponseError::UnknownTopicOrPartition,
                )
            })?;
            let mut entries: BTreeMap<String, ConfigEntry> = state
                .defaults
                .iter()
                .map(|(k, v)| {
                    let entry = ConfigEntry {
                        value: Some(v.clone()),
                        source: ConfigSource::Default,
                        read_only: false,
                        sensitive: false,
                    };
                    (k.clone(), entry)
                })
                .collect();
            for (k, v) in &t.config {
                entries.insert(
                    k.clone(),
                    ConfigEntry {
                        value: Some(v.clone()),
                        source: ConfigSource::DynamicTopic,
                        read_only: false,
                        sensitive: false,
                    },
                );
            }
            Ok(entries)
        }
        .boxed()
    }

    fn alter_topic_config<'a>(
        &'a self,
        topic: &'a str,
        ops: &'a [ConfigOp],
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        async move {
            let mut state = self.state();
            state.failing(ApiKey::IncrementalAlterConfigs, topic)?;
            let t = state.topics.get_mut(topic).ok_or_else(|| {
                kafka_error(
                    ApiKey::IncrementalAlterConfigs,
                    topic,
                    ResponseError::UnknownTopicOrPartition,
                )
            })?;
            for op in ops {
                match op {
                    ConfigOp::Set(k, v) => {
                        t.config.insert(k.clone(), v.clone());
                    }
                    ConfigOp::Delete(k) => {
                        t.config.remove(k);
                    }
                }
            }
            state.calls.push(format!("alter {topic} {ops:?}"));
            Ok(())
        }
        .boxed()
    }

    fn list_offsets<'a>(
        &'a self,
        topic: &'a str,
        partitions: &'a [i32],
        spec: OffsetSpec,
    ) -> BoxFuture<'a, Result<BTreeMap<i32, i64>, AdminError>> {
        async move {
            let state = self.state();
            let api = ApiKey::ListOffsets;
            state.failing(api, topic)?;
            let t = state
                .topics
                .get(topic)
                .ok_or_else(|| kafka_error(api, topic, ResponseError::UnknownTopicOrPartition))?;
            partitions
                .iter()
                .map(|p| {
                    let (earliest, latest) = t.offsets.get(p).copied().ok_or_else(|| {
                        kafka_error(api, topic, ResponseError::UnknownTopicOrPartition)
                    })?;
                    let offset = match spec {
                        OffsetSpec::Earliest => earliest,
                        OffsetSpec::Latest => latest,
                        // The fake's records carry their offset as timestamp.
                        OffsetSpec::Timestamp(ts) if ts < latest => ts.max(earliest),
                        OffsetSpec::Timestamp(_) => -1,
                    };
                    Ok((*p, offset))
                })
                .collect()
        }
        .boxed()
    }

    fn describe_group<'a>(
        &'a self,
        group: &'a str,
    ) -> BoxFuture<'a, Result<GroupInfo, AdminError>> {
        async move {
            let state = self.state();
            state.failing(ApiKey::DescribeGroups, group)?;
            Ok(match state.groups.get(group) {
                Some(g) => GroupInfo {
                    group_id: group.to_owned(),
                    state: g.state.clone(),
                    protocol_type: "consumer".into(),
                    members: g.members.clone(),
                },
                None => GroupInfo {
                    group_id: group.to_owned(),
                    state: "Dead".into(),
                    protocol_type: String::new(),
                    members: vec![],
                },
            })
        }
        .boxed()
    }

    fn fetch_offsets<'a>(
        &'a self,
        group: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<TopicPartition, i64>, AdminError>> {
        async move {
            let state = self.state();
            state.failing(ApiKey::OffsetFetch, group)?;
            Ok(state
                .groups
                .get(group)
                .map(|g| g.committed.clone())
                .unwrap_or_default())
        }
        .boxed()
    }

    fn commit_offsets<'a>(
        &'a self,
        group: &'a str,
        offsets: &'a BTreeMap<TopicPartition, i64>,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        async move {
            let mut state = self.state();
            state.failing(ApiKey::OffsetCommit, group)?;
            let g = state.groups.entry(group.to_owned()).or_default();
            // As the coordinator: a generation -1 commit only while nobody is a member.
            if !g.members.is_empty() {
                return Err(kafka_error(
                    ApiKey::OffsetCommit,
                    group,
                    ResponseError::UnknownMemberId,
                ));
            }
            if g.state.is_empty() || g.state == "Dead" {
                g.state = "Empty".into();
            }
            g.committed.extend(offsets.clone());
            state.calls.push(format!("commit {group} {offsets:?}"));
            Ok(())
        }
        .boxed()
    }

    fn delete_group<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<(), AdminError>> {
        async move {
            let mut state = self.state();
            let api = ApiKey::DeleteGroups;
            state.failing(api, group)?;
            match state.groups.get(group) {
                None => return Err(kafka_error(api, group, ResponseError::GroupIdNotFound)),
                Some(g) if !g.members.is_empty() => {
                    return Err(kafka_error(api, group, ResponseError::NonEmptyGroup))
                }
                Some(_) => {}
            }
            state.groups.remove(group);
            state.calls.push(format!("delete group {group}"));
            Ok(())
        }
        .boxed()
    }
}

/// A pool that hands out the one fake for every bootstrap address, and remembers which
/// addresses were asked for.
#[derive(Clone, Default)]
pub struct FakePool {
    pub kafka: FakeKafka,
    pub asked: Arc<Mutex<Vec<String>>>,
}

impl AdminPool for FakePool {
    fn admin(&self, bootstrap: &str) -> Arc<dyn KafkaAdmin> {
        self.asked.lock().expect("asked").push(bootstrap.to_owned());
        Arc::new(self.kafka.clone())
    }
}
