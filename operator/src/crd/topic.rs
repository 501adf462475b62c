//! `Topic`: one Kafka topic with typed retention settings and free topic config.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ClusterRef;

/// Topic configs that have typed fields; the free `config` map refuses them so one
/// setting has one place.
pub const TYPED_TOPIC_CONFIGS: &[&str] = &["retention.ms", "retention.bytes", "cleanup.policy"];

/// A Kafka topic on a `KafkaCluster` in the same namespace.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "strom.dev",
    version = "v1alpha1",
    kind = "Topic",
    namespaced,
    status = "TopicStatus",
    shortname = "kt",
    category = "strom",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterRef.name"}"#,
    printcolumn = r#"{"name":"Topic","type":"string","jsonPath":".status.topicName","priority":1}"#,
    printcolumn = r#"{"name":"Partitions","type":"integer","jsonPath":".status.partitions"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicationFactor"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.topicName) == has(oldSelf.topicName)",
    "message": "topicName cannot be added or removed"
}]))]
pub struct TopicSpec {
    /// The cluster that holds the topic. Immutable.
    pub cluster_ref: ClusterRef,

    /// The topic's name in Kafka, when it differs from `metadata.name` (Kafka allows
    /// upper case and `_`, Kubernetes names do not). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 249),
        regex(pattern = r"^[a-zA-Z0-9._-]+$"),
        extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "topicName is immutable"}])
    )]
    pub topic_name: Option<String>,

    /// Number of partitions. Kafka can add partitions but never remove them.
    #[serde(default = "default_partitions")]
    #[schemars(
        range(min = 1, max = 100000),
        extend("x-kubernetes-validations" = [{"rule": "self >= oldSelf", "message": "partitions can only be increased"}])
    )]
    pub partitions: i32,

    /// Replicas per partition; the cluster's `default.replication.factor` when unset.
    /// Changing it makes the operator reassign partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32))]
    pub replication_factor: Option<i32>,

    /// `retention.ms`: how long records are kept; -1 keeps them forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub retention_ms: Option<i64>,

    /// `retention.bytes`: most bytes kept per partition; -1 means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub retention_bytes: Option<i64>,

    /// `cleanup.policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_policy: Option<CleanupPolicy>,

    /// Any other topic config, under its Kafka name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(k, !(k in ['retention.ms', 'retention.bytes', 'cleanup.policy']))",
        "message": "use the typed fields retentionMs, retentionBytes and cleanupPolicy"
    }]))]
    pub config: BTreeMap<String, String>,

    /// What deleting this resource does to the Kafka topic: `Delete` it (the default)
    /// or `Retain` it, with its data, for another resource or for clients to keep using.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// What happens in Kafka when a resource is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Retain,
}

fn default_partitions() -> i32 {
    1
}

impl Topic {
    /// The topic's name in Kafka.
    pub fn kafka_name(&self) -> &str {
        self.spec
            .topic_name
            .as_deref()
            .or(self.metadata.name.as_deref())
            .unwrap_or_default()
    }
}

/// Kafka's `cleanup.policy` values.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CleanupPolicy {
    #[serde(rename = "delete")]
    Delete,
    #[serde(rename = "compact")]
    Compact,
    #[serde(rename = "compact,delete")]
    CompactDelete,
}

/// Observed state of a topic.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` (the topic matches the spec) and `Conflict` (another Topic resource
    /// manages the same Kafka topic).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The topic's name in Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,

    /// Kafka's topic id (base64 UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,

    /// Partitions the topic has in Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,

    /// Replicas of the topic's first partition in Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,

    /// Partitions whose ISR is smaller than their replica set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub under_replicated_partitions: Option<i32>,
}
