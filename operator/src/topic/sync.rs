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

/// A sync that failed part-way: the steps before the failing one were done, and
/// status and events must still tell of them.
#[derive(Debug)]
pub struct SyncFailed {
    /// Why the step failed.
    pub error: AdminError,
    /// What was done before it; `topic` is what Kafka has afterwards when `described`.
    pub done: SyncOutcome,
    /// Whether the topic could be described after the failure.
    pub described: bool,
}

impl SyncFailed {
    fn before_anything(error: AdminError, name: &str) -> Self {
        SyncFailed {
            error,
            done: SyncOutcome::nothing(name, vec![]),
            described: false,
        }
    }
}

impl SyncOutcome {
    fn nothing(name: &str, problems: Vec<String>) -> Self {
        SyncOutcome {
            created: false,
            grown: None,
            altered: vec![],
            problems,
            reassigning: None,
            reassigned: None,
            topic: TopicInfo {
                name: name.to_owned(),
                topic_id: String::new(),
                is_internal: false,
                partitions: vec![],
            },
        }
    }
}

/// Makes topic `name` match `spec` and describes the result. Steps run in order and
/// stop at the first that fails; the topic is described after a failure too.
pub async fn sync(
    admin: &dyn KafkaAdmin,
    name: &str,
    spec: &TopicSpec,
) -> Result<SyncOutcome, SyncFailed> {
    let failed = |error| SyncFailed::before_anything(error, name);
    let topic = admin.describe_topic(name).await.map_err(failed)?;
    let config = match &topic {
        Some(_) => admin.describe_topic_config(name).await.map_err(failed)?,
        None => Default::default(),
    };
    let plan = plan(name, spec, &Observed { topic, config });
    let mut outcome = SyncOutcome::nothing(name, plan.problems);
    let step = run(admin, name, &plan.actions, &mut outcome).await;
    // Described again so that status shows what Kafka has, not what was asked for. A
    // topic just created may not be in every broker's metadata yet: retriable.
    let described = admin.describe_topic(name).await;
    let described = match described {
        Ok(Some(topic)) => Ok(topic),
        Ok(None) => Err(AdminError::Kafka {
            api: ApiKey::Metadata,
            resource: name.to_owned(),
            error: ResponseError::UnknownTopicOrPartition,
            message: Some("not in metadata yet".into()),
        }),
        Err(err) => Err(err),
    };
    match (step, described) {
        (Ok(()), Ok(topic)) => {
            outcome.topic = topic;
            Ok(outcome)
        }
        (Ok(()), Err(error)) => Err(SyncFailed {
            error,
            done: outcome,
            described: false,
        }),
        (Err(error), Ok(topic)) => {
            outcome.topic = topic;
            Err(SyncFailed {
                error,
                done: outcome,
                described: true,
            })
        }
        (Err(error), Err(_)) => Err(SyncFailed {
            error,
            done: outcome,
            described: false,
        }),
    }
}

/// Carries out `actions` in order, recording each in `outcome` once it is done.
async fn run(
    admin: &dyn KafkaAdmin,
    name: &str,
    actions: &[TopicAction],
    outcome: &mut SyncOutcome,
) -> Result<(), AdminError> {
    for action in actions {
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
                change_replication_factor(admin, name, *from, *to, outcome).await?;
            }
        }
    }
    Ok(())
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
