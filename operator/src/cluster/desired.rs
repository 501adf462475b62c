//! The Kubernetes objects a `KafkaCluster` should own: a pure function of the cluster
//! (and the operator's defaults), so it is tested with golden files and no API server.
//!
//! Per cluster: a ConfigMap of broker and controller properties, a headless Service for
//! pod DNS, a bootstrap Service for clients, one PodDisruptionBudget over all its pods,
//! a StatefulSet of controller voters spread across racks, and one broker StatefulSet
//! per rack pinned to that rack's nodes. StatefulSets use `OnDelete`: Kubernetes never
//! restarts a broker on its own, the operator decides when a pod may go.
//!
//! In combined mode (`controllers.replicas: 0`) the single broker is its own controller:
//! no controller StatefulSet, no `controller.properties`, and a `broker.properties` that
//! holds only what today's single-node broker accepts. Split mode renders the
//! controller-listener properties that the multi-node broker will need; today's broker
//! refuses them (operator/tests/rendered_broker.rs checks both).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext, Service,
    ServicePort, ServiceSpec, TopologySpreadConstraint, Volume, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use serde::Serialize;

use super::layout::{Layout, Rack};
use crate::crd::{KafkaCluster, RESERVED_PROPERTIES};

/// Port of the controllers' `CONTROLLER` listener.
pub const CONTROLLER_PORT: i32 = 9093;
/// Port of the broker's HTTP endpoint (`/metrics`, `/healthz`, `/readyz`).
pub const HTTP_PORT: i32 = 9644;
/// UID and GID the runtime image's `strom` user has (see the Dockerfile).
pub const RUN_AS_USER: i64 = 10001;
/// Where a pod's volume is mounted; data lives in a subdirectory so that the volume's
/// own `lost+found` is never mistaken for a partition directory.
const DATA_MOUNT: &str = "/var/lib/strom";
const CONFIG_MOUNT: &str = "/etc/strom";
/// The configuration file names inside the ConfigMap.
pub const BROKER_PROPERTIES: &str = "broker.properties";
pub const CONTROLLER_PROPERTIES: &str = "controller.properties";
/// Pod template annotation carrying a hash of the pod's properties file, so a config
/// change is a template change and shows as an outdated pod.
pub const CONFIG_HASH_ANNOTATION: &str = "strom.dev/config-hash";

/// Labels the operator puts on everything it creates.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const RACK_INDEX_LABEL: &str = "strom.dev/rack-index";
/// The one field manager of every server-side apply, and `managed-by`'s value.
pub const MANAGER: &str = "strom-operator";

/// What the operator fills in where a spec leaves something unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// Image of brokers and controllers when `spec.image` is unset.
    pub image: String,
}

/// Why the desired objects cannot be computed.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error("the KafkaCluster has no {0}")]
    MissingMetadata(&'static str),
}

/// Everything a cluster owns, in apply order: configuration and Services before the
/// StatefulSets whose pods need them, controllers before the brokers that register
/// with them.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub config_map: ConfigMap,
    pub headless_service: Service,
    pub bootstrap_service: Service,
    pub pod_disruption_budget: PodDisruptionBudget,
    /// The controller voters; `None` in combined mode, where the brokers are voters.
    pub controller_set: Option<StatefulSet>,
    pub broker_sets: Vec<StatefulSet>,
}

impl Desired {
    /// All objects as multi-document YAML, in apply order (the golden-file format).
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        fn doc(out: &mut String, object: &impl Serialize) -> Result<(), serde_yaml::Error> {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(object)?);
            Ok(())
        }
        let mut out = String::new();
        doc(&mut out, &self.config_map)?;
        doc(&mut out, &self.headless_service)?;
        doc(&mut out, &self.bootstrap_service)?;
        doc(&mut out, &self.pod_disruption_budget)?;
        if let Some(set) = &self.controller_set {
            doc(&mut out, set)?;
        }
        for set in &self.broker_sets {
            doc(&mut out, set)?;
        }
        Ok(out)
    }
}

/// Computes the objects `cluster` should own, laid out as its spec says.
pub fn desired(cluster: &KafkaCluster, defaults: &Defaults) -> Result<Desired, DesiredError> {
    desired_with_layout(cluster, &Layout::of(cluster), defaults)
}

/// Computes the objects `cluster` should own with a given layout (the spec's, possibly
/// with scale-downs held back; see `Layout::hold_scale_down`).
pub fn desired_with_layout(
    cluster: &KafkaCluster,
    layout: &Layout,
    defaults: &Defaults,
) -> Result<Desired, DesiredError> {
    let name = cluster
        .metadata
        .name
        .as_deref()
        .ok_or(DesiredError::MissingMetadata("name"))?;
    let namespace = cluster
        .metadata
        .namespace
        .as_deref()
        .ok_or(DesiredError::MissingMetadata("namespace"))?;
    let owner = cluster
        .controller_owner_ref(&())
        .ok_or(DesiredError::MissingMetadata("uid"))?;
    let b = Builder {
        cluster,
        name,
        namespace,
        owner,
        layout: layout.clone(),
        defaults,
    };
    let combined = cluster.spec.controllers.combined();
    let broker_properties = if combined {
        b.combined_broker_properties()
    } else {
        b.broker_properties()
    };
    let controller_properties = (!combined).then(|| b.controller_properties());
    Ok(Desired {
        controller_set: controller_properties
            .as_deref()
            .map(|properties| b.controller_set(properties)),
        broker_sets: b
            .layout
            .racks
            .iter()
            .map(|rack| b.broker_set(rack, &broker_properties))
            .collect(),
        config_map: b.config_map(broker_properties, controller_properties),
        headless_service: b.headless_service(),
        bootstrap_service: b.bootstrap_service(),
        pod_disruption_budget: b.pod_disruption_budget(),
    })
}

/// The `host:port` clients bootstrap from.
pub fn bootstrap_address(cluster: &KafkaCluster) -> String {
    format!(
        "{}.{}.svc:{}",
        Layout::of(cluster).bootstrap_service,
        cluster.metadata.namespace.as_deref().unwrap_or("default"),
        cluster.spec.listeners.port
    )
}

/// Labels selecting every pod of a cluster (what pod lists and the PDB use).
pub fn cluster_selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), "strom".to_owned()),
        (INSTANCE_LABEL.to_owned(), name.to_owned()),
    ])
}

/// The broker and controller default for `default.replication.factor` and
/// `min.insync.replicas`: three replicas where there are three brokers, and acks=all
/// writes that survive losing one of them.
pub fn replication_defaults(cluster: &KafkaCluster) -> (i32, i32) {
    let config = &cluster.spec.config;
    let replication_factor = config
        .default_replication_factor
        .unwrap_or_else(|| cluster.spec.brokers.clamp(1, 3));
    let min_insync = config
        .min_insync_replicas
        .unwrap_or(if replication_factor >= 3 { 2 } else { 1 });
    (replication_factor, min_insync)
}

struct Builder<'a> {
    cluster: &'a KafkaCluster,
    name: &'a str,
    namespace: &'a str,
    owner: OwnerReference,
    layout: Layout,
    defaults: &'a Defaults,
}

impl Builder<'_> {
    fn meta(&self, name: &str, component: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(self.labels(component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    fn labels(&self, component: Option<&str>) -> BTreeMap<String, String> {
        let mut labels = cluster_selector(self.name);
        labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned());
        if let Some(component) = component {
            labels.insert(COMPONENT_LABEL.to_owned(), component.to_owned());
        }
        labels
    }

    fn selector(&self, component: &str, rack: Option<&Rack>) -> BTreeMap<String, String> {
        let mut labels = cluster_selector(self.name);
        labels.insert(COMPONENT_LABEL.to_owned(), component.to_owned());
        if let Some(rack) = rack {
            labels.insert(RACK_INDEX_LABEL.to_owned(), rack.index.to_string());
        }
        labels
    }

    fn pod_dns_suffix(&self) -> String {
        format!("{}.{}.svc", self.layout.headless_service, self.namespace)
    }

    fn quorum_voters(&self) -> String {
        let suffix = self.pod_dns_suffix();
        self.layout
            .controllers
            .iter()
            .map(|c| format!("{}@{}.{suffix}:{CONTROLLER_PORT}", c.id, c.pod))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Combined mode's voter: the broker itself (the CEL rule allows exactly one). It
    /// names the Kafka port because that is the only one the process listens on: the
    /// single-node broker has no separate controller listener, and a lone voter never
    /// dials itself.
    fn combined_quorum_voters(&self) -> String {
        let suffix = self.pod_dns_suffix();
        let port = self.cluster.spec.listeners.port;
        self.layout
            .brokers()
            .iter()
            .map(|b| format!("{}@{}.{suffix}:{port}", b.id, b.pod))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Properties every node shares: how to reach the quorum and where the HTTP port is.
    fn common_properties(&self) -> Vec<(String, String)> {
        vec![
            ("controller.listener.names".into(), "CONTROLLER".into()),
            (
                "listener.security.protocol.map".into(),
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
            ),
            ("controller.quorum.voters".into(), self.quorum_voters()),
            ("strom.http.listener".into(), format!("0.0.0.0:{HTTP_PORT}")),
        ]
    }

    /// Split mode: a broker that registers with the controller StatefulSet's quorum
    /// over the `CONTROLLER` listener.
    fn broker_properties(&self) -> String {
        let spec = &self.cluster.spec;
        let mut props = vec![
            ("process.roles".to_owned(), "broker".to_owned()),
            (
                "listeners".into(),
                format!("PLAINTEXT://0.0.0.0:{}", spec.listeners.port),
            ),
        ];
        props.extend(self.common_properties());
        props.push(("log.dirs".into(), format!("{DATA_MOUNT}/data")));
        self.finish_broker_properties(props, replication_defaults(self.cluster))
    }

    /// Combined mode: exactly the properties the single-node broker accepts, so no
    /// controller listener and no listener map; the broker is its own quorum.
    fn combined_broker_properties(&self) -> String {
        let spec = &self.cluster.spec;
        let props = vec![
            ("process.roles".to_owned(), "broker,controller".to_owned()),
            (
                "listeners".into(),
                format!("PLAINTEXT://0.0.0.0:{}", spec.listeners.port),
            ),
            (
                "controller.quorum.voters".into(),
                self.combined_quorum_voters(),
            ),
            ("strom.http.listener".into(), format!("0.0.0.0:{HTTP_PORT}")),
            ("log.dirs".into(), format!("{DATA_MOUNT}/data")),
        ];
        // No replica can live on a broker that does not exist: a replication factor or
        // min ISR above the broker count would make every topic creation (and, with
        // acks=all, every write) fail, so the typed fields are clamped to it.
        let brokers = spec.brokers.max(1);
        let (replication_factor, min_insync) = replication_defaults(self.cluster);
        let replication_factor = replication_factor.min(brokers);
        self.finish_broker_properties(
            props,
            (replication_factor, min_insync.min(replication_factor)),
        )
    }

    /// Appends the replication defaults, the typed config fields and the user's own
    /// properties to a broker's operator-set properties, and renders the file.
    fn finish_broker_properties(
        &self,
        mut props: Vec<(String, String)>,
        (replication_factor, min_insync): (i32, i32),
    ) -> String {
        let spec = &self.cluster.spec;
        props.push((
            "default.replication.factor".into(),
            replication_factor.to_string(),
        ));
        props.push(("min.insync.replicas".into(), min_insync.to_string()));
        // The internal topics follow the cluster's replication, as Kafka's own
        // deployment guides recommend; Kafka's default of 3 fails on smaller clusters.
        props.push((
            "offsets.topic.replication.factor".into(),
            replication_factor.to_string(),
        ));
        props.push((
            "transaction.state.log.replication.factor".into(),
            replication_factor.to_string(),
        ));
        props.push((
            "transaction.state.log.min.isr".into(),
            min_insync.to_string(),
        ));
        let config = &spec.config;
        if let Some(n) = config.num_partitions {
            props.push(("num.partitions".into(), n.to_string()));
        }
        if let Some(enabled) = config.auto_create_topics_enable {
            props.push(("auto.create.topics.enable".into(), enabled.to_string()));
        }
        if let Some(ms) = config.log_retention_ms {
            props.push(("log.retention.ms".into(), ms.to_string()));
        }
        // User properties come last so they override the operator's defaults above;
        // reserved ones are dropped (the CRD refuses them, this guards older objects).
        for (key, value) in &config.properties {
            if !RESERVED_PROPERTIES.contains(&key.as_str()) {
                props.retain(|(k, _)| k != key);
                props.push((key.clone(), value.clone()));
            }
        }
        render_properties(
            &format!(
                "Broker configuration of KafkaCluster {}/{}.",
                self.namespace, self.name
            ),
            &props,
        )
    }

    fn controller_properties(&self) -> String {
        let mut props = vec![
            ("process.roles".to_owned(), "controller".to_owned()),
            (
                "listeners".into(),
                format!("CONTROLLER://0.0.0.0:{CONTROLLER_PORT}"),
            ),
        ];
        props.extend(self.common_properties());
        props.push(("log.dirs".into(), format!("{DATA_MOUNT}/metadata")));
        render_properties(
            &format!(
                "Controller configuration of KafkaCluster {}/{}.",
                self.namespace, self.name
            ),
            &props,
        )
    }

    fn config_map(&self, broker: String, controller: Option<String>) -> ConfigMap {
        let mut data = BTreeMap::from([(BROKER_PROPERTIES.to_owned(), broker)]);
        if let Some(controller) = controller {
            data.insert(CONTROLLER_PROPERTIES.to_owned(), controller);
        }
        ConfigMap {
            metadata: self.meta(&self.layout.config_map, None),
            data: Some(data),
            ..ConfigMap::default()
        }
    }

    fn headless_service(&self) -> Service {
        let port = |name: &str, port: i32| ServicePort {
            name: Some(name.to_owned()),
            port,
            target_port: Some(IntOrString::Int(port)),
            protocol: Some("TCP".to_owned()),
            ..ServicePort::default()
        };
        Service {
            metadata: self.meta(&self.layout.headless_service, None),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".to_owned()),
                // Voters must find each other before any of them is ready, and brokers
                // must reach the quorum before they are.
                publish_not_ready_addresses: Some(true),
                selector: Some(cluster_selector(self.name)),
                // Combined mode has no controller listener to publish.
                ports: Some(if self.cluster.spec.controllers.combined() {
                    vec![
                        port("kafka", self.cluster.spec.listeners.port),
                        port("http", HTTP_PORT),
                    ]
                } else {
                    vec![
                        port("kafka", self.cluster.spec.listeners.port),
                        port("controller", CONTROLLER_PORT),
                        port("http", HTTP_PORT),
                    ]
                }),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn bootstrap_service(&self) -> Service {
        let port = self.cluster.spec.listeners.port;
        Service {
            metadata: self.meta(&self.layout.bootstrap_service, Some("broker")),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".to_owned()),
                selector: Some(self.selector("broker", None)),
                ports: Some(vec![ServicePort {
                    name: Some("kafka".to_owned()),
                    port,
                    target_port: Some(IntOrString::Int(port)),
                    protocol: Some("TCP".to_owned()),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn pod_disruption_budget(&self) -> PodDisruptionBudget {
        // One budget over brokers and controllers together: a voluntary eviction never
        // takes a broker and a voter at the same time. A combined single broker may
        // still be evicted (a node drain must be able to finish); it restarts elsewhere
        // with its volume.
        PodDisruptionBudget {
            metadata: self.meta(self.name, None),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(LabelSelector {
                    match_labels: Some(cluster_selector(self.name)),
                    ..LabelSelector::default()
                }),
                ..PodDisruptionBudgetSpec::default()
            }),
            ..PodDisruptionBudget::default()
        }
    }

    fn controller_set(&self, properties: &str) -> StatefulSet {
        let spec = &self.cluster.spec;
        let selector = self.selector("controller", None);
        let mut spread = vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            label_selector: Some(label_selector(&selector)),
            ..TopologySpreadConstraint::default()
        }];
        let mut affinity = None;
        if let Some(racks) = spec.racks.as_ref().filter(|r| !r.names.is_empty()) {
            // Voters must be in distinct racks for the quorum to survive losing one.
            spread.insert(
                0,
                TopologySpreadConstraint {
                    max_skew: 1,
                    topology_key: racks.node_label.clone(),
                    when_unsatisfiable: "DoNotSchedule".to_owned(),
                    label_selector: Some(label_selector(&selector)),
                    ..TopologySpreadConstraint::default()
                },
            );
            affinity = Some(Affinity {
                node_affinity: Some(node_affinity(&racks.node_label, &racks.names)),
                ..Affinity::default()
            });
        }
        // `"$@"` is empty in a pod; it lets a test append overrides (see broker_set).
        let script = "set -eu\n\
            ordinal=\"${POD_NAME##*-}\"\n\
            exec /usr/local/bin/strom-broker --config /etc/strom/controller.properties \\\n  \
            --override \"node.id=$((STROM_NODE_ID_BASE + ordinal))\" \\\n  \
            \"$@\"\n";
        let env = vec![
            field_env("POD_NAME", "metadata.name"),
            literal_env(
                "STROM_NODE_ID_BASE",
                &super::layout::CONTROLLER_ID_BASE.to_string(),
            ),
        ];
        let pod = PodParts {
            component: "controller",
            selector: &selector,
            script,
            env,
            ports: vec![container_port("controller", CONTROLLER_PORT)],
            resources: spec.controllers.resources.clone(),
            properties,
            affinity,
            spread,
            termination_grace_period_seconds: 60,
        };
        self.statefulset(
            &self.layout.controller_statefulset,
            spec.controllers.replicas,
            &selector,
            self.pod_template(pod),
            spec.controllers.storage_size.clone(),
        )
    }

    fn broker_set(&self, rack: &Rack, properties: &str) -> StatefulSet {
        let spec = &self.cluster.spec;
        let selector = self.selector("broker", Some(rack));
        let mut env = vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            literal_env("STROM_NODE_ID_BASE", &rack.id_base.to_string()),
            literal_env("STROM_HEADLESS_SERVICE", &self.layout.headless_service),
            literal_env("STROM_KAFKA_PORT", &spec.listeners.port.to_string()),
        ];
        let mut affinity = Affinity {
            // Brokers of one cluster prefer distinct nodes, so losing a node loses one
            // replica of a partition at most.
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 100,
                        pod_affinity_term: PodAffinityTerm {
                            topology_key: "kubernetes.io/hostname".to_owned(),
                            label_selector: Some(label_selector(&self.selector("broker", None))),
                            ..PodAffinityTerm::default()
                        },
                    },
                ]),
                ..PodAntiAffinity::default()
            }),
            ..Affinity::default()
        };
        if let (Some(racks), Some(rack_name)) = (&spec.racks, &rack.name) {
            env.push(literal_env("STROM_RACK", rack_name));
            affinity.node_affinity = Some(node_affinity(
                &racks.node_label,
                std::slice::from_ref(rack_name),
            ));
        }
        // The pod name's ordinal plus the rack's id base is the node id; `broker.rack`
        // comes from the environment, so no broker needs to read its Node object.
        // Arguments given to the script (`"$@"`, none in a pod) come last and win, so
        // a test can run this very script with loopback listeners.
        let script = "set -eu\n\
            ordinal=\"${POD_NAME##*-}\"\n\
            if [ -n \"${STROM_RACK:-}\" ]; then set -- \"$@\" --override \"broker.rack=${STROM_RACK}\"; fi\n\
            exec /usr/local/bin/strom-broker --config /etc/strom/broker.properties \\\n  \
            --override \"node.id=$((STROM_NODE_ID_BASE + ordinal))\" \\\n  \
            --override \"advertised.listeners=PLAINTEXT://${POD_NAME}.${STROM_HEADLESS_SERVICE}.${POD_NAMESPACE}.svc:${STROM_KAFKA_PORT}\" \\\n  \
            \"$@\"\n";
        let pod = PodParts {
            component: "broker",
            selector: &selector,
            script,
            env,
            ports: vec![container_port("kafka", spec.listeners.port)],
            resources: spec.resources.clone(),
            properties,
            affinity: Some(affinity),
            spread: Vec::new(),
            termination_grace_period_seconds: 120,
        };
        self.statefulset(
            &rack.statefulset,
            rack.replicas,
            &selector,
            self.pod_template(pod),
            spec.storage.size.clone(),
        )
    }

    fn pod_template(&self, parts: PodParts<'_>) -> PodTemplateSpec {
        let spec = &self.cluster.spec;
        let overrides = spec.pod_template.clone().unwrap_or_default();
        let mut labels = overrides.labels;
        labels.extend(self.labels(Some(parts.component)));
        labels.extend(parts.selector.clone());
        let mut annotations = overrides.annotations;
        annotations.insert(
            CONFIG_HASH_ANNOTATION.to_owned(),
            format!("{:016x}", fnv1a64(parts.properties.as_bytes())),
        );
        let http_probe = |path: &str, period: i32, failures: i32| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.to_owned()),
                port: IntOrString::String("http".to_owned()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(period),
            failure_threshold: Some(failures),
            timeout_seconds: Some(5),
            ..Probe::default()
        };
        let mut ports = parts.ports;
        ports.push(container_port("http", HTTP_PORT));
        let container = Container {
            name: parts.component.to_owned(),
            image: Some(
                spec.image
                    .clone()
                    .unwrap_or_else(|| self.defaults.image.clone()),
            ),
            image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
            command: Some(vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                parts.script.to_owned(),
            ]),
            env: Some(parts.env),
            ports: Some(ports),
            // A broker's startup (log recovery) can take long; liveness only restarts a
            // broker that stopped answering for a minute.
            startup_probe: Some(http_probe("/healthz", 5, 120)),
            liveness_probe: Some(http_probe("/healthz", 10, 6)),
            readiness_probe: Some(http_probe("/readyz", 5, 3)),
            resources: parts.resources,
            // A broker that refuses to start says why on stderr: its last lines become the
            // termination message, which the cluster's Degraded condition quotes.
            termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".to_owned()]),
                    ..Capabilities::default()
                }),
                ..SecurityContext::default()
            }),
            volume_mounts: Some(vec![
                mount("data", DATA_MOUNT, false),
                mount("config", CONFIG_MOUNT, true),
                mount("tmp", "/tmp", false),
            ]),
            ..Container::default()
        };
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                // Brokers never talk to the Kubernetes API.
                automount_service_account_token: Some(false),
                containers: vec![container],
                affinity: parts.affinity,
                topology_spread_constraints: (!parts.spread.is_empty()).then_some(parts.spread),
                node_selector: (!overrides.node_selector.is_empty())
                    .then_some(overrides.node_selector),
                tolerations: (!overrides.tolerations.is_empty()).then_some(overrides.tolerations),
                priority_class_name: overrides.priority_class_name,
                security_context: Some(PodSecurityContext {
                    run_as_non_root: Some(true),
                    run_as_user: Some(RUN_AS_USER),
                    run_as_group: Some(RUN_AS_USER),
                    fs_group: Some(RUN_AS_USER),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "RuntimeDefault".to_owned(),
                        ..SeccompProfile::default()
                    }),
                    ..PodSecurityContext::default()
                }),
                termination_grace_period_seconds: Some(parts.termination_grace_period_seconds),
                volumes: Some(vec![
                    Volume {
                        name: "config".to_owned(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: self.layout.config_map.clone(),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    },
                    Volume {
                        name: "tmp".to_owned(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    },
                ]),
                ..PodSpec::default()
            }),
        }
    }

    fn statefulset(
        &self,
        name: &str,
        replicas: i32,
        selector: &BTreeMap<String, String>,
        template: PodTemplateSpec,
        storage: Quantity,
    ) -> StatefulSet {
        let storage_spec = &self.cluster.spec.storage;
        let claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".to_owned()),
                labels: Some(selector.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                storage_class_name: storage_spec.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".to_owned(), storage)])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        };
        let when_deleted = if storage_spec.delete_claim {
            "Delete"
        } else {
            "Retain"
        };
        let component = selector.get(COMPONENT_LABEL).map(String::as_str);
        StatefulSet {
            metadata: self.meta(name, component),
            spec: Some(StatefulSetSpec {
                replicas: Some(replicas),
                selector: label_selector(selector),
                service_name: Some(self.layout.headless_service.clone()),
                // Voters only become ready together, so ordered start would deadlock.
                pod_management_policy: Some("Parallel".to_owned()),
                update_strategy: Some(StatefulSetUpdateStrategy {
                    type_: Some("OnDelete".to_owned()),
                    ..StatefulSetUpdateStrategy::default()
                }),
                persistent_volume_claim_retention_policy: Some(
                    StatefulSetPersistentVolumeClaimRetentionPolicy {
                        when_deleted: Some(when_deleted.to_owned()),
                        // Brokers are only scaled away once drained (`operation`), so with
                        // deleteClaim their claims go too; otherwise a broker scaled away
                        // may come back with its data.
                        when_scaled: Some(when_deleted.to_owned()),
                    },
                ),
                template,
                volume_claim_templates: Some(vec![claim]),
                ..StatefulSetSpec::default()
            }),
            ..StatefulSet::default()
        }
    }
}

/// The parts in which broker and controller pods differ.
struct PodParts<'a> {
    component: &'a str,
    selector: &'a BTreeMap<String, String>,
    script: &'a str,
    env: Vec<EnvVar>,
    ports: Vec<ContainerPort>,
    resources: Option<ResourceRequirements>,
    properties: &'a str,
    affinity: Option<Affinity>,
    spread: Vec<TopologySpreadConstraint>,
    termination_grace_period_seconds: i64,
}

fn label_selector(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels.clone()),
        ..LabelSelector::default()
    }
}

fn node_affinity(label: &str, values: &[String]) -> NodeAffinity {
    NodeAffinity {
        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: label.to_owned(),
                    operator: "In".to_owned(),
                    values: Some(values.to_vec()),
                }]),
                ..NodeSelectorTerm::default()
            }],
        }),
        ..NodeAffinity::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn literal_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// Renders Java properties: a comment line, then `key=value` lines with the escapes
/// `java.util.Properties` needs.
fn render_properties(comment: &str, props: &[(String, String)]) -> String {
    let mut out = format!("# {comment}\n# Generated by strom-operator; edits are overwritten.\n");
    for (key, value) in props {
        let _ = writeln!(out, "{}={}", escape_key(key), escape_value(value));
    }
    out
}

fn escape_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        if matches!(c, '=' | ':' | ' ' | '#' | '!') {
            out.push('\\');
        }
        push_escaped(&mut out, c);
    }
    out
}

fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        // Leading blanks would be stripped by the reader.
        if i == 0 && c == ' ' {
            out.push('\\');
        }
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => out.push(c),
    }
}

/// FNV-1a, 64 bits: a hash that is the same on every Rust version and platform, which
/// `std`'s hasher does not promise, so a new operator build never sees a changed
/// config where there is none.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_escape_what_java_would_misread() {
        let text = render_properties(
            "c",
            &[
                ("a=b".to_owned(), " x\\y".to_owned()),
                ("k".to_owned(), "PLAINTEXT://h:9092".to_owned()),
            ],
        );
        assert!(text.contains("a\\=b=\\ x\\\\y\n"), "{text}");
        assert!(text.contains("k=PLAINTEXT://h:9092\n"), "{text}");
    }

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
