//! An in-memory Kafka cluster for reconcile tests: topics with configs, groups with
//! members and committed offsets, log end offsets. It answers like a broker does for the
//! calls the controllers make (errors included) and records every mutating call, so tests
//! assert what the controller changed in Kafka. For the KafkaCluster controller it also
//! has live brokers, replica placements, reassignments (started by the controller,
//! finished when a test says so) and broker configs.

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
    /// Replicas per partition where a test placed them; brokers `0..replication_factor`
    /// otherwise.
    pub placed: BTreeMap<i32, Vec<i32>>,
}

impl FakeTopic {
    fn partition_info(&self, partition: i32) -> PartitionInfo {
        let replicas = self.replicas(partition);
        PartitionInfo {
            partition,
            leader: replicas.first().copied().unwrap_or(-1),
            isr: replicas.clone(),
            replicas,
        }
    }

    fn replicas(&self, partition: i32) -> Vec<i32> {
        self.placed
            .get(&partition)
            .cloned()
            .unwrap_or_else(|| (0..self.replication_factor).collect())
    }
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
    /// Calls naming these resources (topics, groups) fail with the error given.
    pub fail_for: BTreeMap<String, ResponseError>,
    /// Calls of these APIs fail with the error given (whatever they name).
    pub fail_api: Vec<(ApiKey, ResponseError)>,
    /// Live brokers with their racks.
    pub brokers: Vec<BrokerInfo>,
    /// Reassignments in progress: (topic, partition) -> target replicas.
    pub reassigning: BTreeMap<(String, i32), Vec<i32>>,
    /// Dynamic broker configs by broker id (`None`: the cluster default).
    pub broker_configs: BTreeMap<Option<i32>, BTreeMap<String, String>>,
    /// Bytes each replica holds, as DescribeLogDirs would report (0 when unset).
    pub sizes: BTreeMap<(String, i32), u64>,
    /// The metadata quorum's leader.
    pub active_controller: Option<i32>,
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
                placed: BTreeMap::new(),
            },
        );
    }

    /// Adds live brokers with these ids and racks.
    pub fn add_brokers(&self, brokers: &[(i32, Option<&str>)]) {
        let mut state = self.state();
        for (id, rack) in brokers {
            state.brokers.push(BrokerInfo {
                id: *id,
                rack: rack.map(str::to_owned),
            });
        }
        state.brokers.sort_by_key(|b| b.id);
    }

    /// Adds a topic whose partition `p` lives on `assignment[p]`.
    pub fn add_placed_topic(&self, name: &str, assignment: &[Vec<i32>]) {
        self.add_topic(name, assignment.len() as i32, &[]);
        let mut state = self.state();
        let topic = state.topics.get_mut(name).expect("just added");
        topic.replication_factor = assignment.first().map_or(1, |r| r.len() as i32);
        topic.placed = assignment
            .iter()
            .enumerate()
            .map(|(p, r)| (p as i32, r.clone()))
            .collect();
    }

    /// Finishes every reassignment in progress, as the controller does once the added
    /// replicas are in sync.
    pub fn complete_reassignments(&self) {
        let mut state = self.state();
        let done = std::mem::take(&mut state.reassigning);
        for ((topic, partition), target) in done {
            if let Some(t) = state.topics.get_mut(&topic) {
                t.replication_factor = target.len() as i32;
                t.placed.insert(partition, target);
            }
        }
    }

    /// Replica counts per broker over every topic.
    pub fn replicas_per_broker(&self) -> BTreeMap<i32, usize> {
        let state = self.state();
        let mut counts: BTreeMap<i32, usize> = state.brokers.iter().map(|b| (b.id, 0)).collect();
        for t in state.topics.values() {
            for p in 0..t.partitions {
                for r in t.replicas(p) {
                    *counts.entry(r).or_insert(0) += 1;
                }
            }
        }
        counts
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
        let by_api = || {
            self.fail_api
                .iter()
                .find(|(key, _)| *key == api)
                .map(|(_, error)| *error)
        };
        match self
            .fail_with
            .or_else(|| self.fail_for.get(resource).copied())
            .or_else(by_api)
        {
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
                partitions: (0..t.partitions).map(|p| t.partition_info(p)).collect(),
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
                    placed: BTreeMap::new(),
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

    fn describe_topic_configs<'a>(
        &'a self,
        topics: &'a [String],
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<TopicConfigs, AdminError>> {
        async move {
            if let Some(error) = self.state().fail_with {
                return Err(kafka_error(ApiKey::DescribeConfigs, "topics", error));
            }
            let mut answers = BTreeMap::new();
            for topic in topics {
                let answer = self.describe_topic_config(topic).await.map(|mut config| {
                    config.retain(|k, _| keys.contains(&k.as_str()));
                    config
                });
                answers.insert(topic.clone(), answer);
            }
            Ok(answers)
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

    fn active_controller(&self) -> BoxFuture<'_, Result<Option<i32>, AdminError>> {
        async move {
            let state = self.state();
            state.failing(ApiKey::DescribeQuorum, "the quorum")?;
            Ok(state.active_controller)
        }
        .boxed()
    }
}

impl ClusterAdmin for FakeKafka {
    fn describe_cluster(&self) -> BoxFuture<'_, Result<ClusterView, AdminError>> {
        async move {
            let state = self.state();
            state.failing(ApiKey::Metadata, "the cluster")?;
            Ok(ClusterView {
                cluster_id: Some("fake-cluster-id".to_owned()),
                brokers: state.brokers.clone(),
                topics: state
                    .topics
                    .iter()
                    .map(|(name, t)| TopicInfo {
                        name: name.clone(),
                        topic_id: t.id.clone(),
                        is_internal: name.starts_with("__"),
                        partitions: (0..t.partitions).map(|p| t.partition_info(p)).collect(),
                    })
                    .collect(),
            })
        }
        .boxed()
    }

    fn replica_sizes(
        &self,
        broker: i32,
    ) -> BoxFuture<'_, Result<strom_client::rebalance::ReplicaSizes, AdminError>> {
        async move {
            let state = self.state();
            state.failing(ApiKey::DescribeLogDirs, "the broker")?;
            let mut out = BTreeMap::new();
            for (name, t) in &state.topics {
                for p in 0..t.partitions {
                    if t.replicas(p).contains(&broker) {
                        let key = (name.clone(), p);
                        let size = state.sizes.get(&key).copied().unwrap_or(0);
                        out.insert(key, size);
                    }
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn list_partition_reassignments(
        &self,
    ) -> BoxFuture<'_, Result<Vec<OngoingReassignment>, AdminError>> {
        async move {
            let state = self.state();
            state.failing(ApiKey::ListPartitionReassignments, "the cluster")?;
            Ok(state
                .reassigning
                .iter()
                .map(|((topic, partition), target)| {
                    let current = state.topics[topic].replicas(*partition);
                    OngoingReassignment {
                        topic: topic.clone(),
                        partition: *partition,
                        replicas: target
                            .iter()
                            .chain(current.iter().filter(|b| !target.contains(b)))
                            .copied()
                            .collect(),
                        adding: target
                            .iter()
                            .filter(|b| !current.contains(b))
                            .copied()
                            .collect(),
                        removing: current
                            .iter()
                            .filter(|b| !target.contains(b))
                            .copied()
                            .collect(),
                    }
                })
                .collect())
        }
        .boxed()
    }

    fn alter_partition_reassignments<'a>(
        &'a self,
        changes: &'a [(String, i32, Option<Vec<i32>>)],
    ) -> BoxFuture<'a, Result<Vec<ReassignmentOutcome>, AdminError>> {
        async move {
            let mut state = self.state();
            let api = ApiKey::AlterPartitionReassignments;
            state.failing(api, "the cluster")?;
            let mut outcomes = Vec::new();
            for (topic, partition, target) in changes {
                let known = state
                    .topics
                    .get(topic)
                    .is_some_and(|t| *partition < t.partitions);
                let resource = format!("{topic}-{partition}");
                let outcome = match target {
                    _ if !known => Err(kafka_error(
                        api,
                        &resource,
                        ResponseError::UnknownTopicOrPartition,
                    )),
                    Some(target) => {
                        state
                            .reassigning
                            .insert((topic.clone(), *partition), target.clone());
                        state
                            .calls
                            .push(format!("reassign {resource} -> {target:?}"));
                        Ok(())
                    }
                    None => match state.reassigning.remove(&(topic.clone(), *partition)) {
                        Some(_) => {
                            state.calls.push(format!("cancel {resource}"));
                            Ok(())
                        }
                        None => Err(kafka_error(
                            api,
                            &resource,
                            ResponseError::NoReassignmentInProgress,
                        )),
                    },
                };
                outcomes.push((topic.clone(), *partition, outcome));
            }
            Ok(outcomes)
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

    fn alter_broker_config<'a>(
        &'a self,
        broker: Option<i32>,
        ops: &'a [ConfigOp],
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        async move {
            let mut state = self.state();
            state.failing(ApiKey::IncrementalAlterConfigs, "the broker")?;
            let configs = state.broker_configs.entry(broker).or_default();
            for op in ops {
                match op {
                    ConfigOp::Set(k, v) => {
                        configs.insert(k.clone(), v.clone());
                    }
                    ConfigOp::Delete(k) => {
                        configs.remove(k);
                    }
                }
            }
            state.broker_configs.retain(|_, c| !c.is_empty());
            state.calls.push(format!("alter broker {broker:?} {ops:?}"));
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
