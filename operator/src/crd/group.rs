//! `ConsumerGroup`: observes a Kafka consumer group and carries one-shot offset resets.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ClusterRef;

/// A Kafka consumer group on a `KafkaCluster` in the same namespace.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "strom.dev",
    version = "v1alpha1",
    kind = "ConsumerGroup",
    namespaced,
    status = "ConsumerGroupStatus",
    shortname = "kcg",
    category = "strom",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterRef.name"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Members","type":"integer","jsonPath":".status.memberCount"}"#,
    printcolumn = r#"{"name":"Lag","type":"integer","jsonPath":".status.totalLag"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Last Reset","type":"string","jsonPath":".status.lastReset.result","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.groupId) == has(oldSelf.groupId)",
    "message": "groupId cannot be added or removed"
}]))]
pub struct ConsumerGroupSpec {
    /// The cluster that holds the group. Immutable.
    pub cluster_ref: ClusterRef,

    /// The Kafka `group.id`, when it differs from `metadata.name`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 255),
        extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "groupId is immutable"}])
    )]
    pub group_id: Option<String>,

    /// A one-shot offset reset. It runs once per `id`, only while the group has no
    /// members (as `kafka-consumer-groups --reset-offsets` requires); the outcome is
    /// recorded in `status.lastReset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_reset: Option<OffsetReset>,

    /// What deleting this resource does to the group in Kafka: `Retain` its committed
    /// offsets (the default) or `Delete` the group with them. Kafka deletes only a group
    /// without members, so with `Delete` the resource stays until the consumers stop.
    #[serde(default)]
    pub deletion_policy: GroupDeletionPolicy,
}

/// What happens to a group's committed offsets when its resource is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum GroupDeletionPolicy {
    #[default]
    Retain,
    Delete,
}

impl ConsumerGroup {
    /// The group's `group.id` in Kafka.
    pub fn group_id(&self) -> &str {
        self.spec
            .group_id
            .as_deref()
            .or(self.metadata.name.as_deref())
            .unwrap_or_default()
    }
}

/// Where to move a group's committed offsets.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.to != 'Timestamp' || has(self.timestampMs)", "message": "to: Timestamp needs timestampMs"},
    {"rule": "self.to != 'Offset' || has(self.offset) || has(self.offsets)", "message": "to: Offset needs offset or offsets"}
]))]
pub struct OffsetReset {
    /// Names this reset; a new id asks for a new reset.
    #[schemars(length(min = 1, max = 63))]
    pub id: String,

    /// The target of the reset.
    pub to: ResetTarget,

    /// For `Timestamp`: the earliest offset whose record timestamp is at least this
    /// (milliseconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub timestamp_ms: Option<i64>,

    /// For `Offset`: this offset on every selected partition (clamped to the partition's
    /// earliest and latest offsets, as `kafka-consumer-groups` does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub offset: Option<i64>,

    /// For `Offset`: explicit offsets of single partitions, which win over `offset`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offsets: Vec<PartitionOffset>,

    /// Topics to reset; every topic the group has committed offsets for when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
}

/// Offset reset targets, as `kafka-consumer-groups --reset-offsets` names them.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ResetTarget {
    Earliest,
    Latest,
    Timestamp,
    Offset,
}

/// Observed state of a group.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` (the group was described) and `OffsetReset` (the last reset's outcome).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Kafka's group state: Empty, Stable, PreparingRebalance, CompletingRebalance, Dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,

    /// The group's name in Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,

    /// Number of members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_count: Option<i32>,

    /// The members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<GroupMember>,

    /// Committed offset and lag of every partition the group has committed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offsets: Vec<PartitionLag>,

    /// Sum of `lag` over `offsets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_lag: Option<i64>,

    /// The outcome of the most recent offset reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reset: Option<ResetOutcome>,
}

/// One member of a group.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupMember {
    pub member_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    /// The partitions assigned to this member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assignments: Vec<TopicPartitions>,
}

/// Some partitions of one topic.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicPartitions {
    pub topic: String,
    pub partitions: Vec<i32>,
}

/// One partition's offset.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionOffset {
    #[schemars(length(min = 1, max = 249))]
    pub topic: String,
    #[schemars(range(min = 0))]
    pub partition: i32,
    #[schemars(range(min = 0))]
    pub offset: i64,
}

/// A partition's committed offset and lag.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub committed_offset: i64,
    pub log_end_offset: i64,
    /// `log_end_offset - committed_offset`, never negative.
    pub lag: i64,
}

/// What happened to an offset reset.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResetOutcome {
    /// The `offsetReset.id` this outcome belongs to.
    pub id: String,
    /// `Succeeded`; `Rejected` because the group had members; `Failed` because Kafka
    /// refused a step. Either way the reset is done: a new `id` asks for another.
    pub result: ResetResult,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The committed offsets of the reset partitions before the reset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offsets_before: Vec<PartitionOffset>,
    /// The offsets committed by the reset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offsets_after: Vec<PartitionOffset>,
    /// When the outcome was recorded.
    pub time: Time,
}

/// The result of an offset reset.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ResetResult {
    Succeeded,
    Rejected,
    Failed,
}
