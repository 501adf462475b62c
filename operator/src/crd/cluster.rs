//! `KafkaCluster`: brokers, racks, controller voters, storage and broker config defaults.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use strom_core::BrokerId;

/// The node label that places racks unless the spec names another.
pub const DEFAULT_RACK_LABEL: &str = "topology.kubernetes.io/zone";

/// Most racks a cluster may have. Broker ids are `1000 × rack index + ordinal`, and ids
/// from 9000 up belong to controller voters, so rack indexes stop at 8.
pub const MAX_RACKS: u32 = 9;

/// Most brokers in one rack, so that `1000 × rack index + ordinal` never reaches the next
/// rack's ids.
pub const MAX_BROKERS_PER_RACK: u32 = 1000;

/// Kafka properties the operator sets itself, per pod or per role; a user value for one
/// of them would break addressing or identity, so the schema refuses them.
pub const RESERVED_PROPERTIES: &[&str] = &[
    "node.id",
    "process.roles",
    "listeners",
    "advertised.listeners",
    "controller.listener.names",
    "listener.security.protocol.map",
    "controller.quorum.voters",
    "log.dirs",
    "broker.rack",
    "strom.http.listener",
];

/// Desired state of a Strom cluster: brokers spread over racks plus a controller quorum.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "strom.dev",
    version = "v1alpha1",
    kind = "KafkaCluster",
    namespaced,
    status = "KafkaClusterStatus",
    shortname = "kc",
    category = "strom",
    printcolumn = r#"{"name":"Brokers","type":"integer","jsonPath":".spec.brokers"}"#,
    printcolumn = r#"{"name":"Ready Brokers","type":"integer","jsonPath":".status.readyBrokers"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Bootstrap","type":"string","jsonPath":".status.bootstrap","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.brokers <= 1000 * (has(self.racks) ? size(self.racks.names) : 1)",
    "message": "at most 1000 brokers per rack"
}, {
    "rule": "!has(self.controllers) || !has(self.controllers.replicas) || self.controllers.replicas != 0 || !has(self.brokers) || self.brokers == 1",
    "message": "combined mode (controllers.replicas: 0) allows only brokers: 1: its one broker is the quorum's only voter and the voter set is fixed; use controllers.replicas: 1 or 3 for several brokers"
}]))]
pub struct KafkaClusterSpec {
    /// Number of brokers, spread as evenly as possible over the racks (earlier racks get
    /// the remainder).
    #[serde(default = "default_brokers")]
    #[schemars(range(min = 1, max = 9000))]
    pub brokers: i32,

    /// Failure domains. Without racks all brokers form one anonymous rack and
    /// `broker.rack` is left unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub racks: Option<RacksSpec>,

    /// The controller quorum (KRaft voters): its own StatefulSet, or with
    /// `replicas: 0` the brokers themselves (combined mode).
    #[serde(default)]
    pub controllers: ControllersSpec,

    /// Broker data volumes.
    #[serde(default)]
    pub storage: StorageSpec,

    /// Container resources of each broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Container image carrying `/usr/local/bin/strom-broker`; the operator's default
    /// image when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,

    /// Image pull policy of broker and controller containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Broker configuration defaults, written into the cluster's ConfigMap.
    #[serde(default)]
    pub config: BrokerConfig,

    /// Client listener.
    #[serde(default)]
    pub listeners: ListenersSpec,

    /// Additions to the broker and controller pod templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodOverrides>,

    /// How partitions move when brokers are added (a rebalance onto them) or removed (a
    /// drain before the StatefulSet shrinks).
    #[serde(default)]
    pub rebalance: RebalanceSpec,
}

/// Moving partitions between brokers.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSpec {
    /// `Auto` starts a rebalance as soon as added brokers are up; `Manual` shows the plan
    /// in `status.operation` and waits for `approve`. Drains before a scale-down always
    /// run: the scale-down is the request.
    #[serde(default)]
    pub mode: RebalanceMode,

    /// Replication throttle of every broker that sends or receives moving replicas
    /// (`leader.replication.throttled.rate` and `follower.replication.throttled.rate`),
    /// bytes per second; in-sync replication is never throttled.
    #[serde(default = "default_throttle")]
    #[schemars(range(min = 1))]
    pub throttle_bytes_per_second: i64,

    /// In `Manual` mode, the `status.operation.planId` to carry out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approve: Option<String>,
}

impl Default for RebalanceSpec {
    fn default() -> Self {
        Self {
            mode: RebalanceMode::default(),
            throttle_bytes_per_second: default_throttle(),
            approve: None,
        }
    }
}

/// 50 MB/s: a move of 10 GB takes minutes while leaving most of a 1 Gb/s link to clients.
fn default_throttle() -> i64 {
    50_000_000
}

/// When a rebalance onto added brokers runs.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RebalanceMode {
    #[default]
    Auto,
    Manual,
}

fn default_brokers() -> i32 {
    1
}

/// Racks are named by the value a node label takes on the rack's nodes.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RacksSpec {
    /// The node label whose value names a node's rack. Immutable: changing it would
    /// move every broker at once.
    #[serde(default = "default_rack_label")]
    #[schemars(
        length(min = 1, max = 316),
        extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "nodeLabel is immutable"}])
    )]
    pub node_label: String,

    /// Rack names, i.e. values of `nodeLabel`. A rack's position is part of its brokers'
    /// ids, so racks may only be appended.
    #[schemars(
        length(min = 1, max = 9),
        inner(length(min = 1, max = 63)),
        inner(regex(pattern = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")),
        extend(
            "x-kubernetes-list-type" = "set",
            "x-kubernetes-validations" = [{
                "rule": "oldSelf.all(r, self.indexOf(r) == oldSelf.indexOf(r))",
                "message": "racks may only be appended: existing racks keep their positions"
            }]
        )
    )]
    pub names: Vec<String>,
}

fn default_rack_label() -> String {
    DEFAULT_RACK_LABEL.to_owned()
}

/// The KRaft controller quorum.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControllersSpec {
    /// Number of voters in their own StatefulSet: 1 (no fault tolerance) or 3 (survives
    /// losing one); the split mode, which needs the multi-node broker. 0 is combined
    /// mode: the broker is its own controller (`process.roles=broker,controller`), no
    /// controller pods, and only `brokers: 1` until Strom replicates. The voter set,
    /// and so the mode, is fixed at creation.
    #[serde(default = "default_voters")]
    #[schemars(extend(
        "enum" = [0, 1, 3],
        "x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "the number of controller voters cannot change"}]
    ))]
    pub replicas: i32,

    /// Container resources of each controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Size of each controller's metadata volume. Immutable, like `storage.size`.
    #[serde(default = "default_controller_storage")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "controllers.storageSize is immutable"}]))]
    pub storage_size: Quantity,
}

impl Default for ControllersSpec {
    fn default() -> Self {
        Self {
            replicas: default_voters(),
            resources: None,
            storage_size: default_controller_storage(),
        }
    }
}

// Split mode stays the default so that existing clusters, which were created without
// the field, keep their controller StatefulSet.
fn default_voters() -> i32 {
    1
}

impl KafkaClusterSpec {
    /// What is wrong with the spec by the rules of the CRD's schema and validations that
    /// the reconciler relies on, one sentence each; empty when nothing is. An API server
    /// that does not enforce them (an old one, validation turned off) lets such a spec
    /// through, and acting on it would, for example, start several one-node clusters
    /// behind one Service. Transition rules (immutability) need the old object and are
    /// left to the API server.
    pub fn violations(&self) -> Vec<String> {
        let mut wrong = Vec::new();
        if !(1..=9000).contains(&self.brokers) {
            wrong.push(format!("brokers must be 1 to 9000, not {}", self.brokers));
        }
        let racks = self.racks.as_ref().map_or(1, |r| r.names.len());
        if let Some(r) = &self.racks {
            if r.names.is_empty() || r.names.len() > 9 {
                wrong.push(format!(
                    "racks.names must list 1 to 9 racks, not {}",
                    r.names.len()
                ));
            }
            let mut seen = std::collections::BTreeSet::new();
            for name in &r.names {
                if !seen.insert(name) {
                    wrong.push(format!("rack {name} is listed twice"));
                }
            }
        }
        if self.brokers as i64 > i64::from(MAX_BROKERS_PER_RACK) * racks.max(1) as i64 {
            wrong.push(format!(
                "at most {MAX_BROKERS_PER_RACK} brokers per rack: {} brokers over {racks} racks",
                self.brokers
            ));
        }
        if ![0, 1, 3].contains(&self.controllers.replicas) {
            wrong.push(format!(
                "controllers.replicas must be 0, 1 or 3, not {}",
                self.controllers.replicas
            ));
        }
        if self.controllers.combined() && self.brokers != 1 {
            wrong.push(format!(
                "combined mode (controllers.replicas: 0) allows only brokers: 1, not {}",
                self.brokers
            ));
        }
        for key in self.config.properties.keys() {
            if RESERVED_PROPERTIES.contains(&key.as_str()) {
                wrong.push(format!("config.properties.{key} is set by the operator"));
            }
        }
        wrong
    }
}

impl ControllersSpec {
    /// Whether the brokers are their own controllers (`replicas: 0`).
    pub fn combined(&self) -> bool {
        self.replicas == 0
    }
}

fn default_controller_storage() -> Quantity {
    Quantity("1Gi".to_owned())
}

/// Broker data volumes: one PersistentVolumeClaim per broker.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.storageClassName) == has(oldSelf.storageClassName)",
    "message": "storage.storageClassName cannot be added or removed"
}]))]
pub struct StorageSpec {
    /// Size of each broker's volume. Immutable: a StatefulSet's claim templates cannot
    /// change, and the operator does not expand volumes yet.
    #[serde(default = "default_broker_storage")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "storage.size is immutable"}]))]
    pub size: Quantity,

    /// StorageClass of the claims; the cluster's default class when unset. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "storage.storageClassName is immutable"}]))]
    pub storage_class_name: Option<String>,

    /// Whether claims are deleted with the KafkaCluster. Retained by default, because
    /// deleting a manifest should not delete the data.
    #[serde(default)]
    pub delete_claim: bool,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_broker_storage(),
            storage_class_name: None,
            delete_claim: false,
        }
    }
}

fn default_broker_storage() -> Quantity {
    Quantity("10Gi".to_owned())
}

/// Container image pull policy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Cluster-wide broker defaults, under their Kafka property names.
///
/// Typed fields cover what most clusters set; `properties` takes any other Kafka
/// property. Unset typed fields fall back to defaults that suit the broker count (see
/// `cluster::desired`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerConfig {
    /// `default.replication.factor`; min(3, brokers) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub default_replication_factor: Option<i32>,

    /// `min.insync.replicas`; 2 when the default replication factor is at least 3,
    /// else 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_insync_replicas: Option<i32>,

    /// `num.partitions` for automatically created topics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub num_partitions: Option<i32>,

    /// `auto.create.topics.enable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_create_topics_enable: Option<bool>,

    /// `log.retention.ms`; -1 keeps data forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub log_retention_ms: Option<i64>,

    /// Any other Kafka broker property. The properties the operator sets itself
    /// (`node.id`, listeners, `log.dirs`, ...) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(k, !(k in ['node.id', 'process.roles', 'listeners', 'advertised.listeners', 'controller.listener.names', 'listener.security.protocol.map', 'controller.quorum.voters', 'log.dirs', 'broker.rack', 'strom.http.listener']))",
        "message": "this property is set by the operator"
    }]))]
    pub properties: BTreeMap<String, String>,
}

/// The client listener (plaintext for now).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenersSpec {
    /// Port of the Kafka listener on every broker and on the bootstrap Service.
    #[serde(default = "default_kafka_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for ListenersSpec {
    fn default() -> Self {
        Self {
            port: default_kafka_port(),
        }
    }
}

fn default_kafka_port() -> i32 {
    9092
}

/// What a user may add to broker and controller pods. A curated subset rather than a
/// whole PodTemplateSpec: the operator owns containers, volumes and affinity.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Extra pod labels (the operator's own labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,

    /// Extra node selector, combined with the rack's node affinity.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Pod tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Pod priority class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Observed state of a cluster.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Progressing` and `Degraded`, shaped like `metav1.Condition`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Every desired broker with its stable id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<NodeStatus>,

    /// Every controller voter with its stable id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controllers: Vec<NodeStatus>,

    /// Number of brokers whose pods are ready.
    #[serde(default)]
    pub ready_brokers: i32,

    /// `host:port` for Kafka clients' `bootstrap.servers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<String>,

    /// The Kafka cluster id, once a broker has reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,

    /// Partitions with fewer in-sync replicas than replicas, as Kafka's Metadata shows
    /// them; absent while no broker answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub under_replicated_partitions: Option<i32>,

    /// The latest data move (rebalance or drain): running, waiting for approval, or how
    /// it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationStatus>,
}

/// A rebalance or drain, as `status.operation` reports it. The moves themselves are
/// state in Kafka (its reassignments), so an operator restarted mid-way continues from
/// what Kafka shows plus this.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    pub kind: OperationKind,
    pub phase: OperationPhase,
    /// The brokers added (Rebalance) or being emptied (Drain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<BrokerId>,
    /// A digest of the planned moves; in `Manual` mode, the value `spec.rebalance.approve`
    /// takes to carry them out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// Partitions whose replicas change, and how many of them have reached their target.
    pub partitions_total: i32,
    pub partitions_done: i32,
    /// Bytes the new replicas copy, and how many of them are copied (by finished partitions).
    pub bytes_total: i64,
    pub bytes_moved: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Time>,
    /// When `partitionsDone` last grew (or the operation started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress: Option<Time>,
    /// What is happening, or why it stopped.
    pub message: String,
    /// Topics and brokers whose throttles the operation set, cleared when it ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttled_topics: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttled_brokers: Vec<BrokerId>,
}

impl OperationStatus {
    /// An operation of `kind` on `brokers` that starts (and last progressed) at `now`,
    /// with nothing counted yet.
    pub fn new(
        kind: OperationKind,
        phase: OperationPhase,
        brokers: &[BrokerId],
        now: Option<Time>,
    ) -> Self {
        OperationStatus {
            kind,
            phase,
            brokers: brokers.to_vec(),
            plan_id: None,
            partitions_total: 0,
            partitions_done: 0,
            bytes_total: 0,
            bytes_moved: 0,
            started: now.clone(),
            last_progress: now,
            message: String::new(),
            throttled_topics: vec![],
            throttled_brokers: vec![],
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OperationKind {
    /// Spreading partitions onto added brokers (and raising internal topics' replication).
    Rebalance,
    /// Emptying brokers before they are removed.
    Drain,
    /// Replacing pods that run an outdated template, one at a time (`brokers` lists the
    /// ids still to replace; `partitionsTotal` and `partitionsDone` count pods here).
    Roll,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OperationPhase {
    /// Manual mode: planned, not started until approved.
    AwaitingApproval,
    /// Reassignments in progress.
    Moving,
    Completed,
    /// Refused before it started (for example a drain that would leave fewer brokers than
    /// a topic's replication factor); `message` says why.
    Blocked,
    Failed,
}

/// One broker or controller as the status lists it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// `node.id`.
    pub id: BrokerId,
    /// `broker.rack`, when the cluster has racks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    /// The pod that runs this node.
    pub pod: String,
    /// Whether that pod exists and is Ready.
    pub ready: bool,
    /// Replicas this broker holds, as Kafka's Metadata shows (brokers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Partitions this broker leads now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaders: Option<i32>,
}
