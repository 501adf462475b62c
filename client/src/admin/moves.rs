//! The admin calls that move data between brokers: the whole cluster's assignment, the
//! size of each replica (DescribeLogDirs), partition reassignments (KIP-455) and the
//! replication throttles of brokers — what `strom-admin rebalance` and the operator's
//! scaling run on.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, ApiKey, BrokerId, DescribeLogDirsRequest,
    DescribeQuorumRequest, IncrementalAlterConfigsRequest, ListPartitionReassignmentsRequest,
    MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{check, kafka_uuid, Admin, AdminError, ConfigOp, PartitionInfo, Target, TopicInfo};

/// `IncrementalAlterConfigs` resource type of a broker.
const RESOURCE_BROKER: i8 = 4;

/// A registered, unfenced broker as Metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    pub rack: Option<String>,
}

/// Every live broker and every topic of the cluster, from one Metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// The cluster id Metadata reports (`None` from a broker that has none yet).
    pub cluster_id: Option<String>,
    pub brokers: Vec<BrokerInfo>,
    /// Sorted by name.
    pub topics: Vec<TopicInfo>,
}

/// A reassignment in progress (ListPartitionReassignments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// The outcome of one partition's change in AlterPartitionReassignments.
pub type ReassignmentOutcome = (String, i32, Result<(), AdminError>);

/// The metadata log's topic, whose Raft leader is the active controller.
const METADATA_TOPIC: &str = "__cluster_metadata";

impl Admin {
    /// The active controller's id: the metadata quorum's leader (DescribeQuorum, which a
    /// broker forwards to the quorum); `None` while there is no leader.
    pub async fn active_controller(&self) -> Result<Option<i32>, AdminError> {
        self.retrying("active_controller", || async {
            let resp = self
                .send(Target::Any, |_| {
                    DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
                        .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
                        .with_partitions(vec![PartitionData::default().with_partition_index(0)])])
                })
                .await?;
            let api = ApiKey::DescribeQuorum;
            check(
                api,
                "the quorum",
                resp.error_code,
                resp.error_message.as_ref(),
            )?;
            let partition = resp.topics.first().and_then(|t| t.partitions.first());
            Ok(match partition {
                Some(p) => {
                    check(api, "the quorum", p.error_code, p.error_message.as_ref())?;
                    Some(p.leader_id.0).filter(|id| *id >= 0)
                }
                None => None,
            })
        })
        .await
    }

    /// The live brokers (with racks) and every topic with its partitions.
    pub async fn describe_cluster(&self) -> Result<ClusterView, AdminError> {
        self.retrying("describe_cluster", || async {
            let resp = self
                .send(Target::Any, |_| {
                    MetadataRequest::default()
                        .with_topics(None)
                        .with_allow_auto_topic_creation(false)
                })
                .await?;
            let mut brokers: Vec<BrokerInfo> = resp
                .brokers
                .iter()
                .map(|b| BrokerInfo {
                    id: b.node_id.0,
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                })
                .collect();
            brokers.sort_by_key(|b| b.id);
            let mut topics = Vec::with_capacity(resp.topics.len());
            for t in &resp.topics {
                let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                check(ApiKey::Metadata, name.clone(), t.error_code, None)?;
                let mut partitions: Vec<PartitionInfo> = t
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
                topics.push(TopicInfo {
                    name,
                    topic_id: kafka_uuid(&t.topic_id),
                    is_internal: t.is_internal,
                    partitions,
                });
            }
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(ClusterView {
                cluster_id: resp.cluster_id.as_ref().map(|c| c.to_string()),
                brokers,
                topics,
            })
        })
        .await
    }

    /// The size in bytes of every replica `broker` holds, by (topic, partition), summed
    /// over its log dirs.
    pub async fn replica_sizes(
        &self,
        broker: i32,
    ) -> Result<BTreeMap<(String, i32), u64>, AdminError> {
        self.retrying("replica_sizes", || async {
            let resp = self
                .send(Target::Broker(broker), |_| {
                    DescribeLogDirsRequest::default().with_topics(None)
                })
                .await?;
            check(
                ApiKey::DescribeLogDirs,
                format!("broker {broker}"),
                resp.error_code,
                None,
            )?;
            let mut sizes = BTreeMap::new();
            for dir in &resp.results {
                for t in &dir.topics {
                    for p in &t.partitions {
                        *sizes
                            .entry((t.name.0.to_string(), p.partition_index))
                            .or_insert(0) += p.partition_size.max(0) as u64;
                    }
                }
            }
            Ok(sizes)
        })
        .await
    }

    /// Starts, changes or (`None`) cancels reassignments; one outcome per partition. A
    /// request-level error fails the whole call.
    pub async fn alter_partition_reassignments(
        &self,
        changes: &[(String, i32, Option<Vec<i32>>)],
    ) -> Result<Vec<ReassignmentOutcome>, AdminError> {
        let mut by_topic: BTreeMap<&str, Vec<ReassignablePartition>> = BTreeMap::new();
        for (topic, partition, target) in changes {
            by_topic.entry(topic).or_default().push(
                ReassignablePartition::default()
                    .with_partition_index(*partition)
                    .with_replicas(
                        target
                            .as_ref()
                            .map(|r| r.iter().map(|b| BrokerId(*b)).collect()),
                    ),
            );
        }
        let topics: Vec<ReassignableTopic> = by_topic
            .into_iter()
            .map(|(name, partitions)| {
                ReassignableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name.to_owned())))
                    .with_partitions(partitions)
            })
            .collect();
        let api = ApiKey::AlterPartitionReassignments;
        let resp = self
            .retrying("alter_partition_reassignments", || {
                let topics = topics.clone();
                async move {
                    let resp = self
                        .send(Target::Controller, |_| {
                            AlterPartitionReassignmentsRequest::default().with_topics(topics)
                        })
                        .await?;
                    check(
                        api,
                        "the cluster",
                        resp.error_code,
                        resp.error_message.as_ref(),
                    )?;
                    Ok(resp)
                }
            })
            .await?;
        let mut outcomes = Vec::new();
        for t in &resp.responses {
            for p in &t.partitions {
                let resource = format!("{}-{}", t.name.0, p.partition_index);
                outcomes.push((
                    t.name.0.to_string(),
                    p.partition_index,
                    check(api, resource, p.error_code, p.error_message.as_ref()),
                ));
            }
        }
        Ok(outcomes)
    }

    /// Every reassignment in progress.
    pub async fn list_partition_reassignments(
        &self,
    ) -> Result<Vec<OngoingReassignment>, AdminError> {
        self.retrying("list_partition_reassignments", || async {
            let resp = self
                .send(Target::Controller, |_| {
                    ListPartitionReassignmentsRequest::default().with_topics(None)
                })
                .await?;
            let api = ApiKey::ListPartitionReassignments;
            check(
                api,
                "the cluster",
                resp.error_code,
                resp.error_message.as_ref(),
            )?;
            let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
            Ok(resp
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(|p| OngoingReassignment {
                        topic: t.name.0.to_string(),
                        partition: p.partition_index,
                        replicas: ids(&p.replicas),
                        adding: ids(&p.adding_replicas),
                        removing: ids(&p.removing_replicas),
                    })
                })
                .collect())
        })
        .await
    }

    /// Applies `ops` to the dynamic configs of `broker` (`None`: the cluster default).
    pub async fn alter_broker_config(
        &self,
        broker: Option<i32>,
        ops: &[ConfigOp],
    ) -> Result<(), AdminError> {
        if ops.is_empty() {
            return Ok(());
        }
        let name = broker.map(|b| b.to_string()).unwrap_or_default();
        let configs: Vec<AlterableConfig> = ops.iter().map(alterable).collect();
        let target = broker.map_or(Target::Any, Target::Broker);
        self.retrying("alter_broker_config", || {
            let configs = configs.clone();
            let (name, target) = (name.clone(), target.clone());
            async move {
                let resp = self
                    .send(target, |_| {
                        IncrementalAlterConfigsRequest::default().with_resources(vec![
                            AlterConfigsResource::default()
                                .with_resource_type(RESOURCE_BROKER)
                                .with_resource_name(StrBytes::from_string(name.clone()))
                                .with_configs(configs),
                        ])
                    })
                    .await?;
                let api = ApiKey::IncrementalAlterConfigs;
                let r =
                    super::answer_for(api, &resp.responses, &format!("broker {name:?}"), |r| {
                        r.resource_name.as_str() == name
                    })?;
                check(
                    api,
                    format!("broker {name:?}"),
                    r.error_code,
                    r.error_message.as_ref(),
                )
            }
        })
        .await
    }
}

/// One config change as IncrementalAlterConfigs carries it.
pub(super) fn alterable(op: &ConfigOp) -> AlterableConfig {
    match op {
        ConfigOp::Set(key, value) => AlterableConfig::default()
            .with_name(StrBytes::from_string(key.clone()))
            .with_config_operation(0)
            .with_value(Some(StrBytes::from_string(value.clone()))),
        ConfigOp::Delete(key) => AlterableConfig::default()
            .with_name(StrBytes::from_string(key.clone()))
            .with_config_operation(1)
            .with_value(None),
    }
}
