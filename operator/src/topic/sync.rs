//! The Kafka side of one Topic: observe the topic, plan, carry the plan out, observe
//! again. No Kubernetes here, so the real-broker tests call it directly.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;

use std::collections::BTreeMap;

use strom_client::rebalance::{self, RebalanceError};
use strom_core::rebalance::Goals;

use super::plan::{plan, Observed, TopicAction};
use crate::crd::TopicSpec;
use crate::kafka::{AdminError, ConfigOp, KafkaAdmin, TopicInfo};

/// What a sync did and what Kafka has afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncOutcome {
    /// The topic did not exist and was created.
    pub created: bool,
    /// Partitions grown from, to.
    pub grown: Option<(i32, i32)>,
    /// Config changes made (sets and deletes).
    pub altered: Vec<ConfigOp>,
    /// Differences no action can fix.
    pub problems: Vec<String>,
    /// A replication-factor change in progress: what it is doing.
    pub reassigning: Option<String>,
    /// A replication-factor change started by this sync: (from, to, partitions moving).
    pub reassigned: Option<(i32, i32, usize)>,
    /// The topic as Kafka describes it after the changes.
    pub topic: TopicInfo,
}

/// Makes topic `name` match `spec` and describes the result.
pub async fn sync(
    admin: &dyn KafkaAdmin,
    name: &str,
    spec: &TopicSpec,
) -> Result<SyncOutcome, AdminError> {
    let topic = admin.describe_topic(name).await?;
    let config = match &topic {
        Some(_) => admin.describe_topic_config(name).await?,
        None => Default::default(),
    };
    let plan = plan(name, spec, &Observed { topic, config });
    let mut outcome = SyncOutcome {
        created: false,
        grown: None,
        altered: vec![],
        problems: plan.problems,
        reassigning: None,
        reassigned: None,
        topic: TopicInfo {
            name: name.to_owned(),
            topic_id: String::new(),
            is_internal: false,
            partitions: vec![],
        },
    };
    for action in &plan.actions {
        match action {
            TopicAction::Create(new) => {
                admin.create_topic(new).await?;
                outcome.created = true;
            }
            TopicAction::CreatePartitions { from, to } => {
                admin.create_partitions(name, *to).await?;
                outcome.grown = Some((*from, *to));
            }
            TopicAction::AlterConfig(ops) => {
                admin.alter_topic_config(name, ops).await?;
                outcome.altered = ops.clone();
            }
            TopicAction::ChangeReplicationFactor { from, to } => {
                change_replication_factor(admin, name, *from, *to, &mut outcome).await?;
            }
        }
    }
    // Described again so that status shows what Kafka has, not what was asked for. A
    // topic just created may not be in every broker's metadata yet: retriable.
    outcome.topic = admin
        .describe_topic(name)
        .await?
        .ok_or_else(|| AdminError::Kafka {
            api: ApiKey::Metadata,
            resource: name.to_owned(),
            error: ResponseError::UnknownTopicOrPartition,
            message: Some("not in metadata yet".into()),
        })?;
    Ok(outcome)
}

/// Starts the reassignment that gives every partition of `name` `to` replicas, unless
/// one of its partitions is being reassigned already (then it is followed). Unthrottled:
/// one topic's copies, and the controller's ISR rules keep acks=all safe meanwhile.
async fn change_replication_factor(
    admin: &dyn KafkaAdmin,
    name: &str,
    from: i32,
    to: i32,
    outcome: &mut SyncOutcome,
) -> Result<(), AdminError> {
    let moving = admin
        .list_partition_reassignments()
        .await?
        .into_iter()
        .filter(|r| r.topic == name)
        .count();
    if moving > 0 {
        outcome.reassigning = Some(format!(
            "replication factor {from} -> {to}: {moving} partitions being reassigned"
        ));
        return Ok(());
    }
    let goals = Goals {
        replication_factors: BTreeMap::from([(name.to_owned(), to)]),
        ..Goals::default()
    };
    let live = admin.describe_cluster().await?.brokers.len();
    if to as usize > live {
        outcome.problems.push(format!(
            "replication factor {to} needs {to} brokers; the cluster has {live} live"
        ));
        return Ok(());
    }
    let planned = match rebalance::plan(admin, &goals).await {
        Ok(plan) => plan,
        Err(RebalanceError::Admin(err)) => return Err(err),
        Err(err) => {
            outcome
                .problems
                .push(format!("replication factor {from} -> {to}: {err}"));
            return Ok(());
        }
    };
    match rebalance::execute(admin, &planned, None).await {
        Ok(()) => {
            outcome.reassigning = Some(format!(
                "replication factor {from} -> {to}: {} partitions being reassigned",
                planned.changes.len()
            ));
            outcome.reassigned = Some((from, to, planned.changes.len()));
            Ok(())
        }
        Err(RebalanceError::Admin(err)) => Err(err),
        Err(err) => {
            outcome
                .problems
                .push(format!("replication factor {from} -> {to}: {err}"));
            Ok(())
        }
    }
}

/// Deletes topic `name`; a topic that is already gone counts as deleted.
pub async fn delete(admin: &dyn KafkaAdmin, name: &str) -> Result<bool, AdminError> {
    match admin.delete_topic(name).await {
        Ok(()) => Ok(true),
        Err(err) if err.kafka_error() == Some(ResponseError::UnknownTopicOrPartition) => Ok(false),
        Err(err) => Err(err),
    }
}
