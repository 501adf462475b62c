//! The Kafka side of one Topic: observe the topic, plan, carry the plan out, observe
//! again. No Kubernetes here, so the real-broker tests call it directly.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;

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

/// Deletes topic `name`; a topic that is already gone counts as deleted.
pub async fn delete(admin: &dyn KafkaAdmin, name: &str) -> Result<bool, AdminError> {
    match admin.delete_topic(name).await {
        Ok(()) => Ok(true),
        Err(err) if err.kafka_error() == Some(ResponseError::UnknownTopicOrPartition) => Ok(false),
        Err(err) => Err(err),
    }
}
