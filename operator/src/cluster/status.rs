//! The status of a `KafkaCluster`, computed from what was observed: a pure function of
//! the cluster, its pods and StatefulSets, the previous status and the time.
//!
//! Conditions follow `metav1.Condition`: each carries the generation it describes, and
//! `lastTransitionTime` moves only when the condition's status flips.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;

use super::desired::{bootstrap_address, replication_defaults};
use super::layout::{Layout, Node};
use super::operation::{replica_counts, KafkaView};
use super::roll::{next_restart, PodState, RollStep};
use crate::crd::{
    KafkaCluster, KafkaClusterStatus, NodeStatus, OperationKind, OperationPhase, OperationStatus,
};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// Container waiting reasons that mean a pod will not become ready without help.
const FAILING_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// What reconcile saw of the cluster's children.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// Pods labelled as the cluster's.
    pub pods: Vec<Pod>,
    /// The cluster's StatefulSets as the API server returned them from apply.
    pub statefulsets: Vec<StatefulSet>,
    /// Why applying the desired objects failed, when it did.
    pub apply_error: Option<String>,
    /// Scale-downs held back until brokers are drained (`Layout::hold_scale_down`).
    pub held_scale_downs: Vec<String>,
    /// What Kafka showed, when a broker answered.
    pub kafka: Option<KafkaView>,
    /// `status.operation` as the data step and the roll left it.
    pub operation: Option<OperationStatus>,
    /// What the rolling restart decided this reconcile, when it ran.
    pub roll: Option<RollStep>,
}

/// Computes the new status.
pub fn compute(
    cluster: &KafkaCluster,
    layout: &Layout,
    observed: &Observed,
    now: Timestamp,
) -> KafkaClusterStatus {
    let generation = cluster.metadata.generation;
    let previous = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();

    let counts = observed.kafka.as_ref().map(|k| replica_counts(&k.cluster));
    let brokers: Vec<NodeStatus> = layout
        .brokers()
        .into_iter()
        .map(|node| {
            let id = node.id;
            let mut status = node_status(node, &observed.pods);
            if let Some(counts) = &counts {
                let (replicas, leaders) = counts.get(&id).copied().unwrap_or_default();
                status.partitions = Some(replicas as i32);
                status.leaders = Some(leaders as i32);
            }
            status
        })
        .collect();
    let under_replicated = observed.kafka.as_ref().map(|k| {
        k.cluster
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.isr.len() < p.replicas.len())
            .count() as i32
    });
    let controllers: Vec<NodeStatus> = layout
        .controllers
        .iter()
        .cloned()
        .map(|node| node_status(node, &observed.pods))
        .collect();
    let ready_brokers = brokers.iter().filter(|b| b.ready).count();
    let ready_controllers = controllers.iter().filter(|c| c.ready).count();
    let all_ready = ready_brokers == brokers.len() && ready_controllers == controllers.len();
    // Combined mode has no controller pods: "0/0 controllers" would only confuse.
    let summary = if controllers.is_empty() {
        format!("{ready_brokers}/{} brokers ready", brokers.len())
    } else {
        format!(
            "{ready_brokers}/{} brokers and {ready_controllers}/{} controllers ready",
            brokers.len(),
            controllers.len()
        )
    };

    let outdated = outdated_pods(&observed.statefulsets, &observed.pods);
    let settling = observed.statefulsets.iter().any(|set| {
        let seen = set.status.as_ref().and_then(|s| s.observed_generation);
        seen.is_none() || seen < set.metadata.generation
    });
    let failing: Vec<String> = observed.pods.iter().filter_map(pod_failure).collect();

    let ready = if all_ready {
        (true, "AllNodesReady", summary.clone())
    } else {
        (false, "NodesNotReady", summary.clone())
    };
    let progressing = if !observed.held_scale_downs.is_empty() {
        (
            true,
            "ScaleDownBlocked",
            observed.held_scale_downs.join("; "),
        )
    } else if let Some(op) = observed
        .operation
        .as_ref()
        .filter(|op| op.phase == OperationPhase::Moving && op.kind == OperationKind::Roll)
    {
        (true, "RollingRestart", op.message.clone())
    } else if let Some(op) = observed
        .operation
        .as_ref()
        .filter(|op| op.phase == OperationPhase::Moving)
    {
        (
            true,
            "Rebalancing",
            format!(
                "{:?}: {}/{} partitions moved",
                op.kind, op.partitions_done, op.partitions_total
            ),
        )
    } else if let Some(op) = observed
        .operation
        .as_ref()
        .filter(|op| op.phase == OperationPhase::AwaitingApproval)
    {
        (true, "RebalanceAwaitingApproval", op.message.clone())
    } else if !all_ready || settling {
        (true, "NodesStarting", summary)
    } else if !outdated.is_empty() {
        (
            true,
            "RestartPending",
            format!(
                "pods run an outdated template: {}; {}",
                outdated.join(", "),
                roll_advice(cluster, layout, observed)
            ),
        )
    } else {
        (
            false,
            "UpToDate",
            "every pod runs the desired template".to_owned(),
        )
    };
    let degraded = if let Some(err) = &observed.apply_error {
        (true, "ApplyFailed", err.clone())
    } else if !failing.is_empty() {
        (
            true,
            "PodsFailing",
            format!("pods failing: {}", failing.join(" | ")),
        )
    } else {
        (false, "Healthy", "no failures observed".to_owned())
    };

    let conditions = [
        (READY, ready),
        (PROGRESSING, progressing),
        (DEGRADED, degraded),
    ]
    .into_iter()
    .map(|(type_, (status, reason, message))| {
        condition(previous, type_, status, reason, message, generation, now)
    })
    .collect();

    KafkaClusterStatus {
        observed_generation: generation,
        conditions,
        ready_brokers: ready_brokers as i32,
        brokers,
        controllers,
        bootstrap: Some(bootstrap_address(cluster)),
        cluster_id: observed
            .kafka
            .as_ref()
            .and_then(|k| k.cluster.cluster_id.clone())
            .or_else(|| cluster.status.as_ref().and_then(|s| s.cluster_id.clone())),
        under_replicated_partitions: under_replicated,
        operation: observed.operation.clone(),
    }
}

/// Which outdated pod is safe to delete next, by the rolling-restart rules of `roll`
/// (each topic's `min.insync.replicas` taken as the cluster default; the active
/// controller is not known here, so voters go in id order).
fn roll_advice(cluster: &KafkaCluster, layout: &Layout, observed: &Observed) -> String {
    let min_isr = replication_defaults(cluster).1;
    let step = observed.roll.clone().unwrap_or_else(|| {
        next_restart(
            &pod_states(layout, observed),
            observed.kafka.as_ref().map(|k| &k.cluster),
            &|_| min_isr,
            None,
        )
    });
    match step {
        RollStep::Restart { pod, why } => format!("safe to delete next: {pod} ({why})"),
        RollStep::Wait(why) => format!("no pod is safe to delete yet: {why}"),
        RollStep::UpToDate => "every pod is up to date".to_owned(),
    }
}

/// Every broker and controller pod of the layout as the roll sees it.
pub fn pod_states(layout: &Layout, observed: &Observed) -> Vec<PodState> {
    let outdated = outdated_pods(&observed.statefulsets, &observed.pods);
    let pod = |name: &str| {
        observed
            .pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
    };
    let brokers = layout.brokers();
    layout
        .controllers
        .iter()
        .map(|n| (n, true))
        .chain(brokers.iter().map(|n| (n, false)))
        .map(|(node, controller)| PodState {
            name: node.pod.clone(),
            id: node.id,
            controller,
            ready: pod(&node.pod).is_some_and(is_ready),
            outdated: outdated.contains(&node.pod.as_str()),
            terminating: pod(&node.pod).is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
        })
        .collect()
}

/// The Kubernetes events a status change deserves: the cluster becoming ready or
/// unready, a scale-down being held, pods starting to fail. Only changes count, so a
/// condition that stays the same publishes nothing on later reconciles.
pub fn transition_events(
    previous: &[Condition],
    status: &KafkaClusterStatus,
) -> Vec<(EventType, &'static str, String)> {
    let find = |conditions: &[Condition], type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let was = |type_| find(previous, type_);
    let now = |type_| find(&status.conditions, type_);
    let summary = format!(
        "{}/{} brokers ready",
        status.ready_brokers,
        status.brokers.len()
    );
    let mut events = Vec::new();
    let was_ready = was(READY).is_some_and(|(s, _, _)| s == "True");
    let is_ready = now(READY).is_some_and(|(s, _, _)| s == "True");
    match (was_ready, is_ready) {
        (false, true) => events.push((EventType::Normal, "ClusterReady", summary)),
        (true, false) => events.push((EventType::Warning, "ClusterNotReady", summary)),
        _ => {}
    }
    for (type_, reason) in [(PROGRESSING, "ScaleDownBlocked"), (DEGRADED, "PodsFailing")] {
        let began = now(type_).filter(|(_, r, _)| r == reason);
        let before = was(type_).is_some_and(|(_, r, _)| r == reason);
        if let (Some((_, _, message)), false) = (began, before) {
            events.push((EventType::Warning, reason, message));
        }
    }
    events
}

/// Builds a condition, keeping the previous `lastTransitionTime` unless the status flips.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// The status of condition `type_` (`"True"`, `"False"`), if present.
pub fn condition_status<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

fn node_status(node: Node, pods: &[Pod]) -> NodeStatus {
    let ready = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(node.pod.as_str()))
        .is_some_and(is_ready);
    NodeStatus {
        id: node.id,
        rack: node.rack,
        pod: node.pod,
        ready,
        partitions: None,
        leaders: None,
    }
}

/// A pod is ready when its Ready condition is True and it is not being deleted.
fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The longest termination message quoted in a condition; brokers write their
/// refusal to start there (`terminationMessagePolicy: FallbackToLogsOnError`).
const QUOTED_MESSAGE: usize = 300;

/// Why `pod` is failing, in one line naming it, or `None` when it is not: a container
/// that waits for a reason that needs help (crash loop, image, config), that has exited,
/// or that is not ready after restarting. Each says the exit code, the reason and the
/// termination message of its last run, and how often it restarted.
fn pod_failure(pod: &Pod) -> Option<String> {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let status = pod.status.as_ref()?;
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    let mut failures = Vec::new();
    for container in containers {
        if container.ready {
            continue;
        }
        let state = container.state.as_ref();
        let waiting = state
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.as_deref())
            .filter(|r| FAILING_REASONS.contains(r));
        let exited = state.and_then(|s| s.terminated.as_ref());
        let last = container
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref());
        let restarted = container.restart_count > 0 && last.is_some();
        // A clean exit of an init container is its job done.
        let exited = exited.filter(|t| t.exit_code != 0 || container.restart_count > 0);
        if waiting.is_none() && exited.is_none() && !restarted {
            continue;
        }
        let mut parts = vec![format!("container {}", container.name)];
        if let Some(reason) = waiting {
            parts.push(reason.to_owned());
        }
        if let Some(run) = exited.or(last) {
            let mut exit = format!("exited with code {}", run.exit_code);
            if let Some(reason) = run.reason.as_deref() {
                exit.push_str(&format!(" ({reason})"));
            }
            if let Some(message) = run.message.as_deref().map(str::trim) {
                if !message.is_empty() {
                    let quoted: String = message.chars().take(QUOTED_MESSAGE).collect();
                    let ellipsis = if quoted.len() < message.len() {
                        "…"
                    } else {
                        ""
                    };
                    exit.push_str(&format!(": {quoted}{ellipsis}"));
                }
            }
            parts.push(exit);
        }
        if container.restart_count > 0 {
            parts.push(format!("restarted {} times", container.restart_count));
        }
        failures.push(parts.join(", "));
    }
    if failures.is_empty() && status.phase.as_deref() == Some("Failed") {
        failures.push(
            status
                .reason
                .clone()
                .unwrap_or_else(|| "pod failed".to_owned()),
        );
    }
    (!failures.is_empty()).then(|| format!("{name}: {}", failures.join("; ")))
}

/// Pods whose `controller-revision-hash` differs from their StatefulSet's update
/// revision. With `OnDelete` they keep running the old template until deleted.
fn outdated_pods<'a>(sets: &[StatefulSet], pods: &'a [Pod]) -> Vec<&'a str> {
    let mut outdated = Vec::new();
    for set in sets {
        let Some(update_revision) = set
            .status
            .as_ref()
            .and_then(|s| s.update_revision.as_deref())
        else {
            continue;
        };
        let Some(set_name) = set.metadata.name.as_deref() else {
            continue;
        };
        for pod in pods {
            let owned = pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "StatefulSet" && o.name == set_name);
            let revision = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("controller-revision-hash"));
            if owned && revision.is_some_and(|r| r != update_revision) {
                outdated.extend(pod.metadata.name.as_deref());
            }
        }
    }
    outdated.sort_unstable();
    outdated
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn cluster(status: Option<Value>) -> KafkaCluster {
        let mut object = json!({
            "apiVersion": "strom.dev/v1alpha1",
            "kind": "KafkaCluster",
            "metadata": {"name": "k", "namespace": "ns", "generation": 4},
            "spec": {"brokers": 2, "racks": {"names": ["a", "b"]}},
        });
        if let Some(status) = status {
            object["status"] = status;
        }
        serde_json::from_value(object).unwrap()
    }

    fn pod(name: &str, set: &str, revision: &str, ready: bool, waiting: Option<&str>) -> Pod {
        let mut pod = json!({
            "metadata": {
                "name": name,
                "labels": {"controller-revision-hash": revision},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": set, "uid": "u"}],
            },
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        });
        if let Some(reason) = waiting {
            pod["status"]["containerStatuses"] = json!([{
                "name": "broker", "image": "i", "imageID": "", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": reason}},
            }]);
        }
        serde_json::from_value(pod).unwrap()
    }

    fn set(name: &str, update_revision: &str) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": name, "generation": 2},
            "status": {"observedGeneration": 2, "replicas": 1, "updateRevision": update_revision},
        }))
        .unwrap()
    }

    fn all_pods(revision: &str) -> Vec<Pod> {
        vec![
            pod("k-controller-0", "k-controller", "c1", true, None),
            pod("k-broker-0-0", "k-broker-0", revision, true, None),
            pod("k-broker-1-0", "k-broker-1", "r1", true, None),
        ]
    }

    fn observed(pods: Vec<Pod>) -> Observed {
        Observed {
            pods,
            statefulsets: vec![
                set("k-controller", "c1"),
                set("k-broker-0", "r1"),
                set("k-broker-1", "r1"),
            ],
            apply_error: None,
            held_scale_downs: Vec::new(),
            kafka: None,
            operation: None,
            roll: None,
        }
    }

    fn find<'a>(status: &'a KafkaClusterStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn brokers_carry_ids_racks_and_readiness() {
        let status = compute(
            &cluster(None),
            &Layout::of(&cluster(None)),
            &observed(all_pods("r1")),
            at(100),
        );
        let brokers: Vec<_> = status
            .brokers
            .iter()
            .map(|b| (b.id, b.rack.as_deref(), b.pod.as_str(), b.ready))
            .collect();
        assert_eq!(
            brokers,
            [
                (0, Some("a"), "k-broker-0-0", true),
                (1000, Some("b"), "k-broker-1-0", true)
            ]
        );
        assert_eq!(status.ready_brokers, 2);
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(status.bootstrap.as_deref(), Some("k-bootstrap.ns.svc:9092"));
        assert_eq!(find(&status, READY).status, "True");
        assert_eq!(find(&status, PROGRESSING).status, "False");
        assert_eq!(find(&status, READY).observed_generation, Some(4));
    }

    #[test]
    fn an_outdated_pod_is_a_pending_restart() {
        let status = compute(
            &cluster(None),
            &Layout::of(&cluster(None)),
            &observed(all_pods("r0")),
            at(100),
        );
        let progressing = find(&status, PROGRESSING);
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("True", "RestartPending")
        );
        assert!(
            progressing.message.contains("k-broker-0-0"),
            "{progressing:?}"
        );
        // Without Kafka's ISRs no broker restart can be called safe.
        assert!(
            progressing
                .message
                .contains("no pod is safe to delete yet: no broker answers"),
            "{progressing:?}"
        );
        // Outdated but serving: still ready.
        assert_eq!(find(&status, READY).status, "True");
    }

    #[test]
    fn a_crash_looping_pod_degrades_the_cluster() {
        let mut pods = all_pods("r1");
        pods[1] = pod(
            "k-broker-0-0",
            "k-broker-0",
            "r1",
            false,
            Some("CrashLoopBackOff"),
        );
        let status = compute(
            &cluster(None),
            &Layout::of(&cluster(None)),
            &observed(pods),
            at(100),
        );
        let degraded = find(&status, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "PodsFailing")
        );
        assert_eq!(find(&status, READY).status, "False");
        assert!(!status.brokers[0].ready);
    }

    /// A broker pod that is not ready, with `container` as its container status.
    fn pod_with_container(name: &str, container: serde_json::Value) -> Pod {
        let mut pod = serde_json::to_value(pod(name, "k-broker-0", "r1", false, None)).unwrap();
        let mut container_status = json!({"name": "broker", "image": "i", "imageID": "", "ready": false, "restartCount": 0});
        for (key, value) in container.as_object().unwrap() {
            container_status[key] = value.clone();
        }
        pod["status"]["containerStatuses"] = json!([container_status]);
        serde_json::from_value(pod).unwrap()
    }

    fn degraded_with(failing: Pod) -> Condition {
        let mut pods = all_pods("r1");
        pods[1] = failing;
        let status = compute(
            &cluster(None),
            &Layout::of(&cluster(None)),
            &observed(pods),
            at(100),
        );
        find(&status, DEGRADED).clone()
    }

    #[test]
    fn a_pod_that_exits_or_restarts_degrades_the_cluster_and_says_why() {
        let refusal = "strom-broker: refusing to start: process.roles=controller needs controller.quorum.voters";
        // Restarting: running again, not ready, its last run exited.
        let restarting = pod_with_container(
            "k-broker-0-0",
            json!({"restartCount": 2, "state": {"running": {}},
                   "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": refusal}}}),
        );
        let degraded = degraded_with(restarting);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "PodsFailing")
        );
        assert_eq!(
            degraded.message,
            format!("pods failing: k-broker-0-0: container broker, exited with code 1 (Error): {refusal}, restarted 2 times")
        );
        // Exited and not restarted yet.
        let exited = pod_with_container(
            "k-broker-0-0",
            json!({"state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}),
        );
        let degraded = degraded_with(exited);
        assert_eq!(degraded.reason, "PodsFailing");
        assert!(
            degraded
                .message
                .contains("exited with code 137 (OOMKilled)"),
            "{}",
            degraded.message
        );
        // A long termination message is cut.
        let long = pod_with_container(
            "k-broker-0-0",
            json!({"restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                   "lastState": {"terminated": {"exitCode": 2, "message": "x".repeat(5000)}}}),
        );
        let degraded = degraded_with(long);
        assert!(
            degraded
                .message
                .contains("CrashLoopBackOff, exited with code 2: xxx"),
            "{}",
            degraded.message
        );
        assert!(degraded.message.len() < 500, "{}", degraded.message);
        // Restarted once long ago, ready now: healthy.
        let mut recovered = serde_json::to_value(pod_with_container(
            "k-broker-0-0",
            json!({"ready": true, "restartCount": 1, "state": {"running": {}},
                   "lastState": {"terminated": {"exitCode": 1}}}),
        ))
        .unwrap();
        recovered["status"]["conditions"][0]["status"] = json!("True");
        let degraded = degraded_with(serde_json::from_value(recovered).unwrap());
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("False", "Healthy")
        );
        // Starting for the first time, not ready yet: not a failure.
        let starting = pod_with_container("k-broker-0-0", json!({"state": {"running": {}}}));
        assert_eq!(degraded_with(starting).reason, "Healthy");
    }

    #[test]
    fn a_held_scale_down_keeps_the_cluster_progressing() {
        let mut observed = observed(all_pods("r1"));
        observed.held_scale_downs = vec!["k-broker-0 keeps 2 brokers".to_owned()];
        let status = compute(
            &cluster(None),
            &Layout::of(&cluster(None)),
            &observed,
            at(100),
        );
        let progressing = find(&status, PROGRESSING);
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("True", "ScaleDownBlocked")
        );
        assert_eq!(find(&status, READY).status, "True");
    }

    #[test]
    fn events_mark_changes_only() {
        let healthy = compute(
            &cluster(None),
            &Layout::of(&cluster(None)),
            &observed(all_pods("r1")),
            at(100),
        );
        let reasons = |events: Vec<(EventType, &'static str, String)>| {
            events
                .into_iter()
                .map(|(t, r, _)| (t, r))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            reasons(transition_events(&[], &healthy)),
            [(EventType::Normal, "ClusterReady")]
        );
        assert_eq!(
            reasons(transition_events(&healthy.conditions, &healthy)),
            []
        );

        let mut pods = all_pods("r1");
        pods[1] = pod(
            "k-broker-0-0",
            "k-broker-0",
            "r1",
            false,
            Some("ImagePullBackOff"),
        );
        let failing = compute(
            &cluster(None),
            &Layout::of(&cluster(None)),
            &observed(pods),
            at(200),
        );
        assert_eq!(
            reasons(transition_events(&healthy.conditions, &failing)),
            [
                (EventType::Warning, "ClusterNotReady"),
                (EventType::Warning, "PodsFailing")
            ]
        );
        // Still failing later: nothing new to say.
        assert_eq!(
            reasons(transition_events(&failing.conditions, &failing)),
            []
        );
    }

    #[test]
    fn transition_times_move_only_on_flips() {
        let first = compute(
            &cluster(None),
            &Layout::of(&cluster(None)),
            &observed(all_pods("r1")),
            at(100),
        );
        let previous = serde_json::to_value(&first).unwrap();
        // Same observation later: nothing flips, no time moves.
        let again = compute(
            &cluster(Some(previous.clone())),
            &Layout::of(&cluster(None)),
            &observed(all_pods("r1")),
            at(200),
        );
        assert_eq!(first.conditions, again.conditions);
        // A broker stops being ready: Ready and Progressing flip, Degraded does not.
        let mut pods = all_pods("r1");
        pods[2] = pod("k-broker-1-0", "k-broker-1", "r1", false, None);
        let later = compute(
            &cluster(Some(previous)),
            &Layout::of(&cluster(None)),
            &observed(pods),
            at(300),
        );
        assert_eq!(find(&later, READY).last_transition_time, Time(at(300)));
        assert_eq!(
            find(&later, PROGRESSING).last_transition_time,
            Time(at(300))
        );
        assert_eq!(find(&later, DEGRADED).last_transition_time, Time(at(100)));
    }
}
