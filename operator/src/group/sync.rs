//! The Kafka side of one ConsumerGroup: describe it with its committed and log end
//! offsets, carry out an offset reset, delete it. No Kubernetes here, so the
//! real-broker tests call it directly.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::error::ResponseError;

use super::plan::{reset_refusal, reset_targets, reset_topics, PartitionOffsets};
use crate::crd::{OffsetReset, ResetTarget};
use crate::kafka::{AdminError, GroupInfo, KafkaAdmin, OffsetSpec, TopicPartition};

/// A group as the cluster has it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupView {
    pub info: GroupInfo,
    pub committed: BTreeMap<TopicPartition, i64>,
    /// Log end offsets (high watermarks) of the committed partitions whose topic exists.
    pub log_end: BTreeMap<TopicPartition, i64>,
}

/// Describes `group` with its committed offsets and their partitions' log end offsets.
pub async fn observe(admin: &dyn KafkaAdmin, group: &str) -> Result<GroupView, AdminError> {
    let info = admin.describe_group(group).await?;
    let committed = admin.fetch_offsets(group).await?;
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in committed.keys() {
        by_topic.entry(topic).or_default().push(*partition);
    }
    let mut log_end = BTreeMap::new();
    for (topic, partitions) in by_topic {
        match admin
            .list_offsets(topic, &partitions, OffsetSpec::Latest)
            .await
        {
            Ok(offsets) => {
                log_end.extend(offsets.into_iter().map(|(p, o)| ((topic.to_owned(), p), o)));
            }
            // Offsets of a deleted topic outlive it; they have no lag to report.
            Err(err) if err.kafka_error() == Some(ResponseError::UnknownTopicOrPartition) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(GroupView {
        info,
        committed,
        log_end,
    })
}

/// Why a reset did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// The group has members: refused without touching anything.
    #[error("{0}")]
    GroupActive(String),
    /// A topic the reset names does not exist.
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    /// Kafka refused or failed a step.
    #[error("{0}")]
    Kafka(#[from] AdminError),
}

/// What a reset committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetDone {
    /// Committed offsets of the reset partitions before (absent: none committed).
    pub before: BTreeMap<TopicPartition, i64>,
    pub after: BTreeMap<TopicPartition, i64>,
}

/// Resets `group`'s offsets as `reset` asks, only if the group has no members.
pub async fn reset(
    admin: &dyn KafkaAdmin,
    group: &str,
    reset: &OffsetReset,
) -> Result<ResetDone, ResetError> {
    let info = admin.describe_group(group).await?;
    if let Some(refusal) = reset_refusal(&info.state, info.members.len()) {
        return Err(ResetError::GroupActive(refusal));
    }
    let committed = admin.fetch_offsets(group).await?;

    // Every partition of every covered topic, and the explicitly named ones.
    let mut selected: BTreeSet<TopicPartition> = BTreeSet::new();
    let covers_topics = reset.to != ResetTarget::Offset || reset.offset.is_some();
    if covers_topics {
        for topic in reset_topics(reset, &committed) {
            let described = admin
                .describe_topic(&topic)
                .await?
                .ok_or_else(|| ResetError::UnknownTopic(topic.clone()))?;
            selected.extend(
                described
                    .partitions
                    .iter()
                    .map(|p| (topic.clone(), p.partition)),
            );
        }
    }
    if reset.to == ResetTarget::Offset {
        selected.extend(reset.offsets.iter().map(|o| (o.topic.clone(), o.partition)));
    }

    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in &selected {
        by_topic.entry(topic.clone()).or_default().push(*partition);
    }
    let mut known = PartitionOffsets::default();
    for (topic, partitions) in &by_topic {
        let fetch = |spec| admin.list_offsets(topic, partitions, spec);
        let add = |into: &mut BTreeMap<TopicPartition, i64>, offsets: BTreeMap<i32, i64>| {
            into.extend(offsets.into_iter().map(|(p, o)| ((topic.clone(), p), o)));
        };
        let unknown = |err: AdminError| {
            if err.kafka_error() == Some(ResponseError::UnknownTopicOrPartition) {
                ResetError::UnknownTopic(topic.clone())
            } else {
                ResetError::Kafka(err)
            }
        };
        add(
            &mut known.earliest,
            fetch(OffsetSpec::Earliest).await.map_err(unknown)?,
        );
        add(
            &mut known.latest,
            fetch(OffsetSpec::Latest).await.map_err(unknown)?,
        );
        if let (ResetTarget::Timestamp, Some(ts)) = (reset.to, reset.timestamp_ms) {
            add(
                &mut known.at_timestamp,
                fetch(OffsetSpec::Timestamp(ts)).await.map_err(unknown)?,
            );
        }
    }
    let selected: Vec<TopicPartition> = selected.into_iter().collect();
    let after = reset_targets(reset, &selected, &known);
    let before = after
        .keys()
        .filter_map(|tp| committed.get(tp).map(|o| (tp.clone(), *o)))
        .collect();
    // The coordinator refuses this commit if a member joined since the describe: that
    // race ends as a Kafka error, never as offsets moved under a running consumer.
    admin.commit_offsets(group, &after).await?;
    Ok(ResetDone { before, after })
}

/// Deletes `group` with its committed offsets; a group that is already gone counts as
/// deleted. Kafka refuses (NON_EMPTY_GROUP) while it has members.
pub async fn delete(admin: &dyn KafkaAdmin, group: &str) -> Result<bool, AdminError> {
    match admin.delete_group(group).await {
        Ok(()) => Ok(true),
        Err(err) if err.kafka_error() == Some(ResponseError::GroupIdNotFound) => Ok(false),
        Err(err) => Err(err),
    }
}
