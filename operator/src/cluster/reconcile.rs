//! Reconciling one `KafkaCluster`: compute the desired objects, server-side apply them
//! with one field manager, observe pods, write status, and publish events on flips.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use strom_core::BrokerId;
use tracing::{info, instrument, warn};

use super::data;
use super::desired::{
    bootstrap_address, cluster_selector, desired_with_layout, replication_defaults, Defaults,
    Desired, DesiredError, COMPONENT_LABEL, MANAGER,
};
use super::layout::Layout;
use super::roll::{next_restart, RollStep};
use super::status::{self, condition_status, Observed, DEGRADED, PROGRESSING, READY};
use crate::crd::{
    KafkaCluster, KafkaClusterStatus, OperationKind, OperationPhase, OperationStatus,
};
use crate::kafka::KafkaAdmin;
use crate::metrics::Metrics;
use crate::watch::INVALID_SPEC;

/// How soon a cluster that is not ready yet is looked at again, besides watch events.
const REQUEUE_NOT_READY: Duration = Duration::from_secs(15);
/// How often a ready cluster is re-applied, to undo drift that no watch reported.
const REQUEUE_READY: Duration = Duration::from_secs(300);
/// Back-off after a failed reconcile.
const REQUEUE_ERROR: Duration = Duration::from_secs(30);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// Events about the operator's objects, shared by every controller.
    pub recorder: Arc<crate::events::Events>,
    pub defaults: Defaults,
    pub metrics: Arc<Metrics>,
    /// The clock, injected so that tests see fixed condition times.
    pub now: fn() -> Timestamp,
    /// Kafka admin clients by bootstrap address, for the Topic and ConsumerGroup
    /// controllers.
    pub kafka: Arc<dyn crate::kafka::AdminPool>,
}

/// Why a reconcile failed; each variant is one step, used as a metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("computing desired objects: {0}")]
    Desired(#[from] DesiredError),
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing StatefulSets: {0}")]
    ListStatefulSets(#[source] kube::Error),
    #[error("listing pods: {0}")]
    ListPods(#[source] kube::Error),
    #[error("patching status: {0}")]
    PatchStatus(#[source] kube::Error),
}

impl Error {
    /// The failing step, as a metric label value.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Desired(_) => "desired",
            Error::Apply { .. } => "apply",
            Error::ListStatefulSets(_) => "list_statefulsets",
            Error::ListPods(_) => "list_pods",
            Error::PatchStatus(_) => "patch_status",
        }
    }
}

/// Brings one cluster's children and status in line with its spec.
#[instrument(skip_all, fields(namespace = cluster.namespace(), object = cluster.name_any()))]
pub async fn reconcile(cluster: Arc<KafkaCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(&cluster, &ctx).await;
    ctx.metrics.observe_reconcile(
        "KafkaCluster",
        started.elapsed(),
        result.as_ref().err().map(Error::metric_label),
    );
    result
}

async fn reconcile_inner(cluster: &KafkaCluster, ctx: &Context) -> Result<Action, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let violations = cluster.spec.violations();
    if !violations.is_empty() {
        return refuse_invalid(cluster, ctx, violations).await;
    }
    let selector = |labels: BTreeMap<String, String>| {
        labels
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };

    // Observe: how large the broker StatefulSets are now, so that no scale-down
    // happens before its brokers are drained.
    let mut broker_labels = cluster_selector(&name);
    broker_labels.insert(COMPONENT_LABEL.to_owned(), "broker".to_owned());
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let listed = sets
        .list(&ListParams::default().labels(&selector(broker_labels)))
        .await
        .map_err(Error::ListStatefulSets)?
        .items;
    let current: BTreeMap<String, i32> = listed
        .iter()
        .filter_map(|set| {
            let replicas = set.spec.as_ref()?.replicas.unwrap_or(1);
            Some((set.metadata.name.clone()?, replicas))
        })
        .collect();
    let ready_replicas: BTreeMap<String, i32> = listed
        .iter()
        .filter_map(|set| {
            let ready = set.status.as_ref()?.ready_replicas.unwrap_or(0);
            Some((set.metadata.name.clone()?, ready))
        })
        .collect();
    let spec_layout = Layout::of(cluster);
    let all_ready = spec_layout
        .racks
        .iter()
        .all(|r| ready_replicas.get(&r.statefulset).copied().unwrap_or(0) >= r.replicas);

    // Kafka is only asked once a broker is up: before that every call would wait out
    // its timeouts.
    let admin = ready_replicas
        .values()
        .any(|n| *n > 0)
        .then(|| ctx.kafka.admin(&bootstrap_address(cluster)));
    let moved = data::step(
        cluster,
        &spec_layout,
        &current,
        all_ready,
        admin.as_deref(),
        replication_defaults(cluster).0,
        (ctx.now)(),
    )
    .await;
    for (type_, reason, note) in &moved.events {
        info!(reason, note, "event");
        publish(cluster, ctx, *type_, reason, "Rebalance", note.clone()).await;
    }

    let mut layout = spec_layout.clone();
    let mut held_scale_downs = if moved.release {
        Vec::new()
    } else {
        layout.hold_scale_down(&current)
    };
    if let (false, Some(reason)) = (held_scale_downs.is_empty(), &moved.hold_reason) {
        held_scale_downs.push(reason.clone());
    }
    for note in &held_scale_downs {
        warn!(note, "scale-down held");
    }

    let desired = desired_with_layout(cluster, &layout, &ctx.defaults)?;
    let mut observed = Observed {
        held_scale_downs,
        kafka: moved.kafka,
        operation: moved.operation,
        ..Observed::default()
    };
    let apply_result = apply_all(&ctx.client, &namespace, &desired).await;
    match &apply_result {
        Ok(sets) => observed.statefulsets = sets.clone(),
        Err(err) => observed.apply_error = Some(err.to_string()),
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    observed.pods = pods
        .list(&ListParams::default().labels(&selector(cluster_selector(&name))))
        .await
        .map_err(Error::ListPods)?
        .items;

    // Only against StatefulSets as applied: without them no pod can be called outdated.
    if apply_result.is_ok() {
        roll(cluster, ctx, &layout, &mut observed, admin.as_deref()).await;
    }

    let new_status = status::compute(cluster, &layout, &observed, (ctx.now)());
    crate::shell::apply_status(ctx, cluster, &new_status)
        .await
        .map_err(Error::PatchStatus)?;

    let previous = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    for (type_, reason, note) in status::transition_events(previous, &new_status) {
        info!(reason, note, "event");
        publish(cluster, ctx, type_, reason, "Reconcile", note).await;
    }
    let is_ready = condition_status(&new_status.conditions, READY) == Some("True");
    if let Err(err) = &apply_result {
        publish(
            cluster,
            ctx,
            EventType::Warning,
            "ApplyFailed",
            "Apply",
            err.to_string(),
        )
        .await;
    }

    apply_result?;
    Ok(Action::requeue(if is_ready {
        REQUEUE_READY
    } else {
        REQUEUE_NOT_READY
    }))
}

/// A spec the CRD's rules refuse got through (see `KafkaClusterSpec::violations`):
/// nothing is applied or changed, status says why (`InvalidSpec` on every condition),
/// and a Warning event tells once. The fix is a spec change, which reconciles again.
async fn refuse_invalid(
    cluster: &KafkaCluster,
    ctx: &Context,
    violations: Vec<String>,
) -> Result<Action, Error> {
    let message = format!(
        "the spec breaks the CRD's rules, so nothing is changed: {}",
        violations.join("; ")
    );
    let previous = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    let now = (ctx.now)();
    let was_refused = previous
        .conditions
        .iter()
        .any(|c| c.type_ == DEGRADED && c.reason == INVALID_SPEC && c.message == message);
    let conditions = [(READY, false), (PROGRESSING, false), (DEGRADED, true)]
        .into_iter()
        .map(|(type_, status)| {
            status::condition(
                &previous.conditions,
                type_,
                status,
                INVALID_SPEC,
                message.clone(),
                generation,
                now,
            )
        })
        .collect();
    let new_status = KafkaClusterStatus {
        observed_generation: generation,
        conditions,
        ..previous
    };
    crate::shell::apply_status(ctx, cluster, &new_status)
        .await
        .map_err(Error::PatchStatus)?;
    if !was_refused {
        warn!(reason = INVALID_SPEC, message, "refusing the spec");
        publish(
            cluster,
            ctx,
            EventType::Warning,
            INVALID_SPEC,
            "Validate",
            message,
        )
        .await;
    }
    Ok(Action::await_change())
}

/// The rolling restart: replaces the pod `roll::next_restart` names (the StatefulSets are
/// `OnDelete`, so deleting a pod is how it gets the new template; brokers stop with a
/// controlled shutdown on SIGTERM) and keeps `status.operation` (kind `Roll`) current.
/// Nothing is restarted while partitions are moving.
async fn roll(
    cluster: &KafkaCluster,
    ctx: &Context,
    layout: &Layout,
    observed: &mut Observed,
    admin: Option<&dyn KafkaAdmin>,
) {
    let now = Time((ctx.now)());
    let pods = status::pod_states(layout, observed);
    let outdated: Vec<BrokerId> = pods.iter().filter(|p| p.outdated).map(|p| p.id).collect();
    let previous = observed.operation.clone();
    let rolling = previous
        .as_ref()
        .filter(|op| op.kind == OperationKind::Roll && op.phase == OperationPhase::Moving);
    if outdated.is_empty() {
        if let Some(op) = rolling {
            let mut op = op.clone();
            op.phase = OperationPhase::Completed;
            op.partitions_done = op.partitions_total;
            op.brokers.clear();
            op.last_progress = Some(now);
            op.message = "every pod runs the current template".into();
            publish(
                cluster,
                ctx,
                EventType::Normal,
                "RollCompleted",
                "Roll",
                op.message.clone(),
            )
            .await;
            observed.operation = Some(op);
        }
        return;
    }
    if previous
        .as_ref()
        .is_some_and(|op| op.kind != OperationKind::Roll && op.phase == OperationPhase::Moving)
    {
        return;
    }
    // The topics' own min.insync.replicas and the active controller, asked only while
    // something is out of date.
    let default_min_isr = replication_defaults(cluster).1;
    let mut min_isr: BTreeMap<String, i32> = BTreeMap::new();
    let mut active = None;
    // A topic whose min.insync.replicas cannot be read holds back every restart but that
    // of a stuck pod: guessing the default could let a restart break its ISR.
    let mut unreadable = None;
    if let (Some(admin), Some(kafka)) = (admin, &observed.kafka) {
        const MIN_ISR: &str = "min.insync.replicas";
        let topics: Vec<String> = kafka
            .cluster
            .topics
            .iter()
            .map(|t| t.name.clone())
            .collect();
        match admin.describe_topic_configs(&topics, &[MIN_ISR]).await {
            Ok(answers) => {
                for (topic, answer) in answers {
                    match answer {
                        Ok(config) => {
                            if let Some(v) = config
                                .get(MIN_ISR)
                                .and_then(|e| e.value.as_deref())
                                .and_then(|v| v.parse().ok())
                            {
                                min_isr.insert(topic, v);
                            }
                        }
                        Err(err) => {
                            unreadable.get_or_insert(format!(
                                "cannot read {MIN_ISR} of topic {topic}: {err}"
                            ));
                        }
                    }
                }
            }
            Err(err) => unreadable = Some(format!("cannot read {MIN_ISR} of the topics: {err}")),
        }
        active = admin.active_controller().await.unwrap_or(None);
    }
    let mut step = next_restart(
        &pods,
        observed.kafka.as_ref().map(|k| &k.cluster),
        &|t| min_isr.get(t).copied().unwrap_or(default_min_isr),
        active,
    );
    if let (RollStep::Restart { pod, .. }, Some(why)) = (&step, unreadable) {
        if pods.iter().any(|p| &p.name == pod && p.ready) {
            step = RollStep::Wait(why);
        }
    }
    let mut op = rolling.cloned().unwrap_or_else(|| OperationStatus {
        partitions_total: outdated.len() as i32,
        ..OperationStatus::new(
            OperationKind::Roll,
            OperationPhase::Moving,
            &[],
            Some(now.clone()),
        )
    });
    let done = (op.partitions_total - outdated.len() as i32).max(0);
    if done > op.partitions_done {
        op.partitions_done = done;
        op.last_progress = Some(now.clone());
    }
    op.brokers = outdated;
    op.message = match &step {
        RollStep::Restart { pod, why } => {
            let pods: Api<Pod> =
                Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
            match pods.delete(pod, &DeleteParams::default()).await {
                Ok(_) => {
                    let note =
                        format!("deleted pod {pod} to restart it on the current template: {why}");
                    publish(
                        cluster,
                        ctx,
                        EventType::Normal,
                        "RollingRestart",
                        "Roll",
                        note.clone(),
                    )
                    .await;
                    note
                }
                Err(err) => {
                    warn!(cause = %err, pod, "deleting the pod failed");
                    format!("deleting pod {pod} failed: {err}")
                }
            }
        }
        RollStep::Wait(why) => format!("waiting: {why}"),
        RollStep::UpToDate => "every pod runs the current template".into(),
    };
    observed.roll = Some(step);
    observed.operation = Some(op);
}

/// What the controller does after a failed reconcile: log it and try again later.
pub fn error_policy(cluster: Arc<KafkaCluster>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(
        namespace = cluster.namespace(),
        object = cluster.name_any(),
        cause = %err,
        "reconcile failed"
    );
    Action::requeue(REQUEUE_ERROR)
}

/// Applies every desired object in order and returns the StatefulSets as the API server
/// now has them (with their status), which is what status needs.
async fn apply_all(
    client: &Client,
    namespace: &str,
    desired: &Desired,
) -> Result<Vec<StatefulSet>, Error> {
    apply(client, namespace, &desired.config_map).await?;
    apply(client, namespace, &desired.headless_service).await?;
    apply(client, namespace, &desired.bootstrap_service).await?;
    apply(client, namespace, &desired.pod_disruption_budget).await?;
    let mut sets = Vec::new();
    // Combined mode has no controller StatefulSet; the mode is fixed at creation (a CEL
    // rule), so there is never a stale one to delete.
    if let Some(set) = &desired.controller_set {
        sets.push(apply(client, namespace, set).await?);
    }
    for set in &desired.broker_sets {
        sets.push(apply(client, namespace, set).await?);
    }
    Ok(sets)
}

/// Server-side apply of one object: creates it when missing (also after an out-of-band
/// delete) and takes back every field the operator owns.
async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: K::kind(&()).into_owned(),
        name,
        source,
    })
}

async fn publish(
    cluster: &KafkaCluster,
    ctx: &Context,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    // An event is a courtesy to the user: failing to publish one never fails reconcile.
    if let Err(err) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        warn!(cause = %err, reason, "publishing event failed");
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use http::{Method, StatusCode};
    use serde_json::{json, Value};

    use super::super::fixtures::{self, cluster, pod, ApiServerVerifier};
    use super::*;

    const T0: &str = "2023-01-01T00:00:00Z";
    /// `fixtures::NOW_SECONDS` as the API server writes it.
    const NOW: &str = "2023-11-14T22:13:20Z";

    async fn within<F: Future>(future: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), future)
            .await
            .expect("the expected requests did not come in time")
    }

    #[tokio::test]
    async fn a_spec_that_breaks_the_crd_rules_is_refused_and_nothing_is_applied() {
        // Combined mode with three brokers: an API server that skips CEL lets it through.
        let (ctx, mut api) = fixtures::context();
        let spec = json!({"brokers": 3, "controllers": {"replicas": 0},
                          "config": {"properties": {"node.id": "7"}}});
        let reconciling = tokio::spawn(reconcile(Arc::new(cluster(spec.clone(), None)), ctx));
        let status = within(async {
            let status = api.expect_status().await;
            let event = api.expect_event().await;
            assert_eq!(
                (&event["type"], &event["reason"]),
                (&json!("Warning"), &json!("InvalidSpec"))
            );
            api.expect_nothing_more().await;
            status
        })
        .await;
        let action = within(reconciling)
            .await
            .unwrap()
            .expect("refusing is no failure");
        assert_eq!(action, Action::await_change());
        let conditions = status["conditions"].as_array().unwrap();
        for type_ in [READY, PROGRESSING, DEGRADED] {
            let c = conditions.iter().find(|c| c["type"] == type_).unwrap();
            assert_eq!(c["reason"], "InvalidSpec", "{c}");
            let message = c["message"].as_str().unwrap();
            assert!(
                message.contains(
                    "combined mode (controllers.replicas: 0) allows only brokers: 1, not 3"
                ),
                "{message}"
            );
            assert!(
                message.contains("config.properties.node.id is set by the operator"),
                "{message}"
            );
        }
        assert_eq!(
            conditions.iter().find(|c| c["type"] == DEGRADED).unwrap()["status"],
            "True"
        );

        // Already refused with the same message: no second event.
        let (ctx, mut api) = fixtures::context();
        let refused = cluster(spec, Some(status.clone()));
        let reconciling = tokio::spawn(reconcile(Arc::new(refused), ctx));
        within(async {
            api.expect_status().await;
            api.expect_nothing_more().await;
        })
        .await;
        within(reconciling).await.unwrap().unwrap();
    }

    fn sts_status(replicas: i32) -> Option<Value> {
        Some(json!({"observedGeneration": 1, "replicas": replicas}))
    }

    /// Expects the applies of cluster `dev`'s children in order; returns the bodies.
    /// `current`: the broker StatefulSets that exist before the reconcile.
    async fn expect_children(
        api: &mut ApiServerVerifier,
        current: &[(&str, i32)],
        brokers: i32,
        controllers: i32,
    ) -> Vec<Value> {
        api.expect_statefulset_list(current).await;
        expect_applies(api, brokers, controllers).await
    }

    /// Expects the applies of cluster `dev`'s children in order; returns the bodies.
    async fn expect_applies(
        api: &mut ApiServerVerifier,
        brokers: i32,
        controllers: i32,
    ) -> Vec<Value> {
        let core = "/api/v1/namespaces/default";
        let apps = "/apis/apps/v1/namespaces/default/statefulsets";
        let mut applied = vec![
            api.expect_apply(&format!("{core}/configmaps/dev-config"), None)
                .await,
            api.expect_apply(&format!("{core}/services/dev-headless"), None)
                .await,
            api.expect_apply(&format!("{core}/services/dev-bootstrap"), None)
                .await,
            api.expect_apply(
                "/apis/policy/v1/namespaces/default/poddisruptionbudgets/dev",
                None,
            )
            .await,
        ];
        // Combined mode (no voters) has no controller StatefulSet to apply.
        if controllers > 0 {
            applied.push(
                api.expect_apply(&format!("{apps}/dev-controller"), sts_status(controllers))
                    .await,
            );
        }
        applied.push(
            api.expect_apply(&format!("{apps}/dev-broker-0"), sts_status(brokers))
                .await,
        );
        applied
    }

    fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
        status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
            .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
    }

    fn conditions_at(ready: bool, time: &str) -> Value {
        let status = |s: bool| if s { "True" } else { "False" };
        json!({
            "conditions": [
                {"type": "Ready", "status": status(ready), "reason": "r", "message": "m", "lastTransitionTime": time},
                {"type": "Progressing", "status": status(!ready), "reason": "r", "message": "m", "lastTransitionTime": time},
                {"type": "Degraded", "status": "False", "reason": "r", "message": "m", "lastTransitionTime": time},
            ]
        })
    }

    #[tokio::test]
    async fn first_reconcile_creates_every_child_and_reports_progress() {
        let (ctx, mut api) = fixtures::context();
        let reconciling = tokio::spawn(reconcile(Arc::new(cluster(json!({}), None)), ctx));
        within(async {
            // Before the first apply there is no broker StatefulSet yet.
            let applied = expect_children(&mut api, &[], 1, 1).await;
            let brokers = &applied[5];
            assert_eq!(brokers["spec"]["replicas"], 1);
            assert_eq!(brokers["spec"]["updateStrategy"]["type"], "OnDelete");
            assert_eq!(
                brokers["metadata"]["ownerReferences"][0]["uid"],
                "00000000-0000-0000-0000-00000000000a"
            );
            assert_eq!(
                brokers["metadata"]["ownerReferences"][0]["controller"],
                true
            );
            api.expect_pod_list(vec![]).await;
            let status = api.expect_status().await;
            assert_eq!(status["observedGeneration"], 2);
            assert_eq!(status["bootstrap"], "dev-bootstrap.default.svc:9092");
            assert_eq!(
                status["brokers"],
                json!([{"id": 0, "pod": "dev-broker-0-0", "ready": false}])
            );
            assert_eq!(
                status["controllers"],
                json!([{"id": 9000, "pod": "dev-controller-0", "ready": false}])
            );
            let ready = condition(&status, "Ready");
            assert_eq!(
                (
                    &ready["status"],
                    &ready["lastTransitionTime"],
                    &ready["observedGeneration"]
                ),
                (&json!("False"), &json!(NOW), &json!(2))
            );
            assert_eq!(condition(&status, "Progressing")["status"], "True");
            assert_eq!(condition(&status, "Degraded")["status"], "False");
        })
        .await;
        let action = within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        assert_eq!(action, Action::requeue(REQUEUE_NOT_READY));
    }

    #[tokio::test]
    async fn scaling_up_applies_more_replicas_and_keeps_unflipped_transition_times() {
        let (ctx, mut api) = fixtures::context();
        let before = cluster(json!({"brokers": 3}), Some(conditions_at(false, T0)));
        let reconciling = tokio::spawn(reconcile(Arc::new(before), ctx));
        within(async {
            let applied = expect_children(&mut api, &[("dev-broker-0", 1)], 3, 1).await;
            assert_eq!(applied[5]["spec"]["replicas"], 3);
            api.expect_pod_list(vec![
                pod("dev-controller-0", true),
                pod("dev-broker-0-0", true),
                pod("dev-broker-0-1", false),
            ])
            .await;
            let status = api.expect_status().await;
            let ready: Vec<_> = status["brokers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| (b["id"].as_i64().unwrap(), b["ready"].as_bool().unwrap()))
                .collect();
            assert_eq!(ready, [(0, true), (1, false), (2, false)]);
            assert_eq!(status["readyBrokers"], 1);
            // Still not ready: the transition time stays where the flip happened.
            assert_eq!(condition(&status, "Ready")["lastTransitionTime"], T0);
            assert_eq!(condition(&status, "Progressing")["lastTransitionTime"], T0);
        })
        .await;
        within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
    }

    #[tokio::test]
    async fn becoming_ready_flips_conditions_and_publishes_an_event() {
        let (ctx, mut api) = fixtures::context();
        let before = cluster(json!({}), Some(conditions_at(false, T0)));
        let reconciling = tokio::spawn(reconcile(Arc::new(before), ctx));
        within(async {
            expect_children(&mut api, &[("dev-broker-0", 1)], 1, 1).await;
            api.expect_pod_list(vec![
                pod("dev-controller-0", true),
                pod("dev-broker-0-0", true),
            ])
            .await;
            let status = api.expect_status().await;
            let ready = condition(&status, "Ready");
            assert_eq!(
                (&ready["status"], &ready["lastTransitionTime"]),
                (&json!("True"), &json!(NOW))
            );
            let progressing = condition(&status, "Progressing");
            assert_eq!(
                (&progressing["status"], &progressing["reason"]),
                (&json!("False"), &json!("UpToDate"))
            );
            assert_eq!(condition(&status, "Degraded")["lastTransitionTime"], T0);
            let event = api.expect_event().await;
            assert_eq!(
                (&event["type"], &event["reason"]),
                (&json!("Normal"), &json!("ClusterReady"))
            );
        })
        .await;
        let action = within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        assert_eq!(action, Action::requeue(REQUEUE_READY));
    }

    #[tokio::test]
    async fn combined_mode_applies_no_controllers_and_is_ready_with_its_broker() {
        let (ctx, mut api) = fixtures::context();
        let before = cluster(
            json!({"controllers": {"replicas": 0}}),
            Some(conditions_at(false, T0)),
        );
        let reconciling = tokio::spawn(reconcile(Arc::new(before), ctx));
        within(async {
            let applied = expect_children(&mut api, &[("dev-broker-0", 1)], 1, 0).await;
            assert_eq!(applied.len(), 5, "no controller StatefulSet");
            let data = &applied[0]["data"];
            assert!(data["controller.properties"].is_null(), "{data}");
            assert!(data["broker.properties"]
                .as_str()
                .unwrap()
                .contains("process.roles=broker,controller\n"));
            assert_eq!(applied[4]["metadata"]["name"], "dev-broker-0");
            // Only the broker pod exists; it alone makes the cluster ready.
            api.expect_pod_list(vec![pod("dev-broker-0-0", true)]).await;
            let status = api.expect_status().await;
            assert!(status["controllers"].is_null(), "{status}");
            let ready = condition(&status, "Ready");
            assert_eq!(
                (&ready["status"], &ready["message"]),
                (&json!("True"), &json!("1/1 brokers ready"))
            );
            let event = api.expect_event().await;
            assert_eq!(event["reason"], "ClusterReady");
        })
        .await;
        let action = within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        assert_eq!(action, Action::requeue(REQUEUE_READY));
    }

    #[tokio::test]
    async fn a_statefulset_deleted_out_of_band_is_applied_again() {
        let (ctx, mut api) = fixtures::context();
        let before = cluster(json!({}), Some(conditions_at(true, T0)));
        let reconciling = tokio::spawn(reconcile(Arc::new(before), ctx));
        within(async {
            let core = "/api/v1/namespaces/default";
            let apps = "/apis/apps/v1/namespaces/default/statefulsets";
            // The broker StatefulSet is gone.
            api.expect_statefulset_list(&[]).await;
            api.expect_apply(&format!("{core}/configmaps/dev-config"), None)
                .await;
            api.expect_apply(&format!("{core}/services/dev-headless"), None)
                .await;
            api.expect_apply(&format!("{core}/services/dev-bootstrap"), None)
                .await;
            api.expect_apply(
                "/apis/policy/v1/namespaces/default/poddisruptionbudgets/dev",
                None,
            )
            .await;
            api.expect_apply(&format!("{apps}/dev-controller"), sts_status(1))
                .await;
            // The broker StatefulSet was deleted: apply creates it anew, without status yet.
            let recreated = api
                .expect_apply(&format!("{apps}/dev-broker-0"), None)
                .await;
            assert_eq!(recreated["spec"]["replicas"], 1);
            // Its pod went with it.
            api.expect_pod_list(vec![pod("dev-controller-0", true)])
                .await;
            let status = api.expect_status().await;
            assert_eq!(condition(&status, "Ready")["status"], "False");
            assert_eq!(condition(&status, "Ready")["lastTransitionTime"], NOW);
            assert_eq!(condition(&status, "Progressing")["status"], "True");
            let event = api.expect_event().await;
            assert_eq!(
                (&event["type"], &event["reason"]),
                (&json!("Warning"), &json!("ClusterNotReady"))
            );
        })
        .await;
        within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
    }

    #[tokio::test]
    async fn a_scale_down_is_held_until_brokers_are_drained() {
        let (ctx, mut api) = fixtures::context();
        let shrunk = cluster(json!({"brokers": 1}), Some(conditions_at(true, T0)));
        let reconciling = tokio::spawn(reconcile(Arc::new(shrunk), ctx));
        within(async {
            let core = "/api/v1/namespaces/default";
            let apps = "/apis/apps/v1/namespaces/default/statefulsets";
            api.expect_statefulset_list(&[("dev-broker-0", 3)]).await;
            api.expect_apply(&format!("{core}/configmaps/dev-config"), None)
                .await;
            api.expect_apply(&format!("{core}/services/dev-headless"), None)
                .await;
            api.expect_apply(&format!("{core}/services/dev-bootstrap"), None)
                .await;
            api.expect_apply(
                "/apis/policy/v1/namespaces/default/poddisruptionbudgets/dev",
                None,
            )
            .await;
            api.expect_apply(&format!("{apps}/dev-controller"), sts_status(1))
                .await;
            let brokers = api
                .expect_apply(&format!("{apps}/dev-broker-0"), sts_status(3))
                .await;
            assert_eq!(
                brokers["spec"]["replicas"], 3,
                "the StatefulSet must not shrink"
            );
            api.expect_pod_list(vec![
                pod("dev-controller-0", true),
                pod("dev-broker-0-0", true),
                pod("dev-broker-0-1", true),
                pod("dev-broker-0-2", true),
            ])
            .await;
            let status = api.expect_status().await;
            assert_eq!(status["brokers"].as_array().map(Vec::len), Some(3));
            let progressing = condition(&status, "Progressing");
            assert_eq!(
                (&progressing["status"], &progressing["reason"]),
                (&json!("True"), &json!("ScaleDownBlocked"))
            );
            assert_eq!(condition(&status, "Ready")["status"], "True");
            let event = api.expect_event().await;
            assert_eq!(
                (&event["type"], &event["reason"]),
                (&json!("Warning"), &json!("ScaleDownBlocked"))
            );
        })
        .await;
        within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
    }

    fn ready_pods(brokers: i32) -> Vec<Value> {
        let mut pods = vec![pod("dev-controller-0", true)];
        pods.extend((0..brokers).map(|i| pod(&format!("dev-broker-0-{i}"), true)));
        pods
    }

    /// One reconcile of `dev` whose broker StatefulSet has `now` ready brokers; returns
    /// the status written, the broker StatefulSet applied and the events published, in order.
    async fn reconcile_once(
        ctx: &Arc<Context>,
        api: &mut ApiServerVerifier,
        spec: Value,
        status: Option<Value>,
        now: i32,
        (events_before, events_after): (usize, usize),
    ) -> (Value, Value, Vec<Value>) {
        let reconciling = tokio::spawn(reconcile(Arc::new(cluster(spec, status)), ctx.clone()));
        let (status, set, events) = within(async {
            api.expect_ready_statefulset_list(&[("dev-broker-0", now)])
                .await;
            let mut events = Vec::new();
            for _ in 0..events_before {
                events.push(api.expect_event().await);
            }
            let applied = expect_applies(api, now, 1).await;
            api.expect_pod_list(ready_pods(now)).await;
            let status = api.expect_status().await;
            for _ in 0..events_after {
                events.push(api.expect_event().await);
            }
            (status, applied[5].clone(), events)
        })
        .await;
        within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        (status, set, events)
    }

    fn reasons(events: &[Value]) -> Vec<&str> {
        events
            .iter()
            .map(|e| e["reason"].as_str().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_scale_down_drains_the_broker_then_shrinks_the_statefulset() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        let kafka = &pool.kafka;
        kafka.add_brokers(&[(0, None), (1, None), (2, None)]);
        kafka.add_placed_topic("orders", &[vec![0, 1], vec![1, 2], vec![2, 0], vec![2, 1]]);
        let spec = json!({"brokers": 2});

        // 1: broker 2 holds replicas: the drain starts, throttled, and the set keeps 3.
        let (status, set, events) = reconcile_once(
            &ctx,
            &mut api,
            spec.clone(),
            Some(conditions_at(true, T0)),
            3,
            (1, 1),
        )
        .await;
        assert_eq!(reasons(&events), ["RebalanceStarted", "ScaleDownBlocked"]);
        assert_eq!(set["spec"]["replicas"], 3, "no shrink before the drain");
        let op = &status["operation"];
        assert_eq!(
            (&op["kind"], &op["phase"]),
            (&json!("Drain"), &json!("Moving"))
        );
        assert_eq!(op["brokers"], json!([2]));
        assert_eq!(op["partitionsTotal"], 3);
        assert_eq!(
            condition(&status, "Progressing")["reason"],
            "ScaleDownBlocked"
        );
        assert_eq!(status["brokers"][2]["partitions"], 3);
        let calls = kafka.calls();
        assert!(
            calls.iter().any(|c| c.starts_with("alter broker Some(2)")),
            "{calls:?}"
        );
        assert!(!kafka.state().reassigning.is_empty());

        // 2: the moves are still in progress: followed, still held.
        let (status, set, _) =
            reconcile_once(&ctx, &mut api, spec.clone(), Some(status), 3, (0, 0)).await;
        assert_eq!(set["spec"]["replicas"], 3);
        assert_eq!(status["operation"]["phase"], "Moving");

        // 3: Kafka finished them: throttles cleared, the operation completed.
        kafka.complete_reassignments();
        let (status, set, events) =
            reconcile_once(&ctx, &mut api, spec.clone(), Some(status), 3, (1, 0)).await;
        assert_eq!(reasons(&events), ["RebalanceCompleted"]);
        assert_eq!(set["spec"]["replicas"], 3);
        assert_eq!(status["operation"]["phase"], "Completed");
        assert_eq!(status["operation"]["partitionsDone"], 3);
        assert!(
            kafka.state().broker_configs.is_empty(),
            "broker throttles cleared"
        );
        assert!(
            kafka.state().topics["orders"].config.is_empty(),
            "replica throttles cleared"
        );
        assert_eq!(kafka.replicas_per_broker()[&2], 0);

        // 4: broker 2 is empty: the StatefulSet shrinks.
        let (status, set, _) =
            reconcile_once(&ctx, &mut api, spec.clone(), Some(status), 3, (0, 0)).await;
        assert_eq!(set["spec"]["replicas"], 2, "released once drained");
        assert_ne!(
            condition(&status, "Progressing")["reason"],
            "ScaleDownBlocked"
        );
    }

    #[tokio::test]
    async fn a_drain_that_cannot_complete_is_refused_with_a_reason() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        pool.kafka.add_brokers(&[(0, None), (1, None), (2, None)]);
        pool.kafka.add_placed_topic("orders", &[vec![0, 1, 2]]);
        let (status, set, events) = reconcile_once(
            &ctx,
            &mut api,
            json!({"brokers": 2}),
            Some(conditions_at(true, T0)),
            3,
            (1, 1),
        )
        .await;
        assert_eq!(reasons(&events), ["RebalanceFailed", "ScaleDownBlocked"]);
        assert_eq!(set["spec"]["replicas"], 3);
        assert_eq!(status["operation"]["phase"], "Blocked");
        let progressing = condition(&status, "Progressing");
        assert!(
            progressing["message"].as_str().unwrap().contains(
                "topic orders has 3 replicas per partition but only 2 brokers would remain"
            ),
            "{progressing}"
        );
        assert!(pool.kafka.state().reassigning.is_empty(), "nothing moved");
    }

    #[tokio::test]
    async fn added_brokers_get_a_throttled_rebalance_that_ends_balanced() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        let kafka = &pool.kafka;
        kafka.add_brokers(&[(0, None), (1, None), (2, None), (3, None)]);
        let assignment: Vec<Vec<i32>> = (0..8).map(|p| vec![p % 3, (p + 1) % 3]).collect();
        kafka.add_placed_topic("orders", &assignment);
        let spec = json!({"brokers": 4, "rebalance": {"throttleBytesPerSecond": 1000}});
        let (status, set, events) = reconcile_once(
            &ctx,
            &mut api,
            spec.clone(),
            Some(conditions_at(true, T0)),
            4,
            (1, 0),
        )
        .await;
        assert_eq!(reasons(&events), ["RebalanceStarted"]);
        assert_eq!(set["spec"]["replicas"], 4);
        let op = &status["operation"];
        assert_eq!(
            (&op["kind"], &op["phase"], &op["brokers"]),
            (&json!("Rebalance"), &json!("Moving"), &json!([3]))
        );
        assert_eq!(condition(&status, "Progressing")["reason"], "Rebalancing");
        assert_eq!(
            kafka.state().broker_configs[&Some(3)]["follower.replication.throttled.rate"],
            "1000"
        );
        kafka.complete_reassignments();
        let (status, _, events) =
            reconcile_once(&ctx, &mut api, spec.clone(), Some(status), 4, (1, 0)).await;
        assert_eq!(reasons(&events), ["RebalanceCompleted"]);
        let counts = kafka.replicas_per_broker();
        let (max, min) = (
            counts.values().max().unwrap(),
            counts.values().min().unwrap(),
        );
        assert!(max - min <= 1, "{counts:?}");
        assert!(kafka.state().broker_configs.is_empty());
        // Balanced: a later reconcile starts nothing.
        let calls = kafka.calls().len();
        let (status, _, _) = reconcile_once(&ctx, &mut api, spec, Some(status), 4, (0, 0)).await;
        assert_eq!(status["operation"]["phase"], "Completed");
        assert_eq!(kafka.calls().len(), calls, "nothing new asked of Kafka");
        assert_eq!(status["clusterId"], "fake-cluster-id");
        assert_eq!(status["underReplicatedPartitions"], 0);
    }

    #[tokio::test]
    async fn a_manual_rebalance_waits_for_its_plan_id() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        let kafka = &pool.kafka;
        kafka.add_brokers(&[(0, None), (1, None), (2, None), (3, None)]);
        let assignment: Vec<Vec<i32>> = (0..8).map(|p| vec![p % 3, (p + 1) % 3]).collect();
        kafka.add_placed_topic("orders", &assignment);
        let manual = json!({"brokers": 4, "rebalance": {"mode": "Manual"}});
        let (status, _, events) = reconcile_once(
            &ctx,
            &mut api,
            manual,
            Some(conditions_at(true, T0)),
            4,
            (1, 0),
        )
        .await;
        assert_eq!(reasons(&events), ["RebalancePlanned"]);
        assert_eq!(status["operation"]["phase"], "AwaitingApproval");
        assert_eq!(
            condition(&status, "Progressing")["reason"],
            "RebalanceAwaitingApproval"
        );
        assert!(
            kafka.state().reassigning.is_empty(),
            "nothing moves unapproved"
        );
        let id = status["operation"]["planId"].as_str().unwrap().to_owned();
        let approved = json!({"brokers": 4, "rebalance": {"mode": "Manual", "approve": id}});
        let (status, _, events) =
            reconcile_once(&ctx, &mut api, approved, Some(status), 4, (1, 0)).await;
        assert_eq!(reasons(&events), ["RebalanceStarted"]);
        assert_eq!(status["operation"]["phase"], "Moving");
        assert!(!kafka.state().reassigning.is_empty());
    }

    /// A pod of StatefulSet `set` at template revision `revision`.
    fn revision_pod(
        name: &str,
        set: &str,
        revision: &str,
        ready: bool,
        terminating: bool,
    ) -> Value {
        let mut p = pod(name, ready);
        p["metadata"]["labels"]["controller-revision-hash"] = json!(revision);
        p["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": set, "uid": "u"}]);
        if terminating {
            p["metadata"]["deletionTimestamp"] = json!(T0);
        }
        p
    }

    fn updated(replicas: i32) -> Option<Value> {
        Some(
            json!({"observedGeneration": 1, "replicas": replicas, "readyReplicas": replicas, "updateRevision": "new"}),
        )
    }

    /// One reconcile of a 1-voter, 3-broker `dev` whose StatefulSets are at revision
    /// `new`, with broker pods at `revisions` (`(revision, ready, terminating)`).
    /// `delete`: the pod the reconcile must delete. Returns the status written and the
    /// events, in order.
    async fn roll_once(
        ctx: &Arc<Context>,
        api: &mut ApiServerVerifier,
        status: Value,
        revisions: [(&str, bool, bool); 3],
        delete: Option<&str>,
        (events_before, events_after): (usize, usize),
    ) -> (Value, Vec<Value>) {
        let spec = json!({"brokers": 3});
        let reconciling = tokio::spawn(reconcile(
            Arc::new(cluster(spec, Some(status))),
            ctx.clone(),
        ));
        let out = within(async {
            let core = "/api/v1/namespaces/default";
            let apps = "/apis/apps/v1/namespaces/default/statefulsets";
            api.expect_ready_statefulset_list(&[("dev-broker-0", 3)])
                .await;
            api.expect_apply(&format!("{core}/configmaps/dev-config"), None)
                .await;
            api.expect_apply(&format!("{core}/services/dev-headless"), None)
                .await;
            api.expect_apply(&format!("{core}/services/dev-bootstrap"), None)
                .await;
            api.expect_apply(
                "/apis/policy/v1/namespaces/default/poddisruptionbudgets/dev",
                None,
            )
            .await;
            api.expect_apply(&format!("{apps}/dev-controller"), updated(1))
                .await;
            api.expect_apply(&format!("{apps}/dev-broker-0"), updated(3))
                .await;
            let mut pods = vec![revision_pod(
                "dev-controller-0",
                "dev-controller",
                "new",
                true,
                false,
            )];
            for (i, (rev, ready, terminating)) in revisions.iter().enumerate() {
                pods.push(revision_pod(
                    &format!("dev-broker-0-{i}"),
                    "dev-broker-0",
                    rev,
                    *ready,
                    *terminating,
                ));
            }
            api.expect_pod_list(pods).await;
            let mut events = vec![];
            if let Some(pod) = delete {
                api.handle(
                    Method::DELETE,
                    &format!("{core}/pods/{pod}"),
                    StatusCode::OK,
                    |_| revision_pod(pod, "dev-broker-0", "old", true, true),
                )
                .await;
            }
            for _ in 0..events_before {
                events.push(api.expect_event().await);
            }
            let status = api.expect_status().await;
            for _ in 0..events_after {
                events.push(api.expect_event().await);
            }
            (status, events)
        });
        let (status, events) = out.await;
        within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        (status, events)
    }

    #[tokio::test]
    async fn a_roll_replaces_one_pod_at_a_time_and_waits_for_it() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        let kafka = &pool.kafka;
        kafka.add_brokers(&[(0, None), (1, None), (2, None)]);
        kafka.add_placed_topic("orders", &[vec![0, 1, 2], vec![1, 2, 0]]);
        kafka.state().active_controller = Some(9000);

        // Brokers 0 and 1 run the old template: 0 goes first (ISRs whole, min ISR 2 of 3).
        let (status, events) = roll_once(
            &ctx,
            &mut api,
            conditions_at(true, T0),
            [
                ("old", true, false),
                ("old", true, false),
                ("new", true, false),
            ],
            Some("dev-broker-0-0"),
            (1, 0),
        )
        .await;
        assert_eq!(reasons(&events), ["RollingRestart"]);
        let op = &status["operation"];
        assert_eq!(
            (&op["kind"], &op["phase"], &op["brokers"]),
            (&json!("Roll"), &json!("Moving"), &json!([0, 1]))
        );
        assert_eq!(
            (&op["partitionsTotal"], &op["partitionsDone"]),
            (&json!(2), &json!(0))
        );
        assert_eq!(
            condition(&status, "Progressing")["reason"],
            "RollingRestart"
        );

        // Its replacement is on the way: nothing else is deleted.
        let (status, events) = roll_once(
            &ctx,
            &mut api,
            status,
            [
                ("old", false, true),
                ("old", true, false),
                ("new", true, false),
            ],
            None,
            (0, 1),
        )
        .await;
        assert_eq!(reasons(&events), ["ClusterNotReady"]);
        assert!(
            status["operation"]["message"]
                .as_str()
                .unwrap()
                .contains("waiting: pod dev-broker-0-0 is not ready"),
            "{status}"
        );

        // Back and current: broker 1 next.
        let (status, events) = roll_once(
            &ctx,
            &mut api,
            status,
            [
                ("new", true, false),
                ("old", true, false),
                ("new", true, false),
            ],
            Some("dev-broker-0-1"),
            (1, 1),
        )
        .await;
        // A restart of another pod is an event of its own, not the first one's series.
        assert_eq!(reasons(&events), ["RollingRestart", "ClusterReady"]);
        assert!(
            status["operation"]["message"]
                .as_str()
                .unwrap()
                .starts_with("deleted pod dev-broker-0-1"),
            "{status}"
        );

        assert_eq!(status["operation"]["partitionsDone"], 1);

        // Every pod current: the roll completes.
        let (status, events) = roll_once(
            &ctx,
            &mut api,
            status,
            [
                ("new", true, false),
                ("new", true, false),
                ("new", true, false),
            ],
            None,
            (1, 0),
        )
        .await;
        assert_eq!(reasons(&events), ["RollCompleted"]);
        let op = &status["operation"];
        assert_eq!(
            (&op["phase"], &op["partitionsDone"]),
            (&json!("Completed"), &json!(2))
        );
        assert_eq!(condition(&status, "Progressing")["reason"], "UpToDate");
    }

    #[tokio::test]
    async fn a_topic_whose_min_isr_cannot_be_read_holds_back_all_but_a_stuck_pod() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        let kafka = &pool.kafka;
        kafka.add_brokers(&[(0, None), (1, None), (2, None)]);
        kafka.add_placed_topic("orders", &[vec![0, 1, 2]]);
        kafka.add_placed_topic("payments", &[vec![1, 2, 0]]);
        kafka.state().active_controller = Some(9000);
        kafka.state().fail_for.insert(
            "payments".into(),
            kafka_protocol::error::ResponseError::TopicAuthorizationFailed,
        );

        // Broker 0 is ready and out of date: safe by the default min ISR, but payments'
        // own may be higher, so nothing is deleted and the status says why.
        let (status, events) = roll_once(
            &ctx,
            &mut api,
            conditions_at(true, T0),
            [
                ("old", true, false),
                ("new", true, false),
                ("new", true, false),
            ],
            None,
            (0, 0),
        )
        .await;
        assert!(events.is_empty(), "{events:?}");
        let message = status["operation"]["message"].as_str().unwrap();
        assert!(
            message.contains("cannot read min.insync.replicas of topic payments"),
            "{status}"
        );

        // Broker 0 stuck not ready on the old template: replacing it is always allowed.
        let (status, events) = roll_once(
            &ctx,
            &mut api,
            status,
            [
                ("old", false, false),
                ("new", true, false),
                ("new", true, false),
            ],
            Some("dev-broker-0-0"),
            (1, 1),
        )
        .await;
        assert_eq!(reasons(&events), ["RollingRestart", "ClusterNotReady"]);
        assert!(
            status["operation"]["message"]
                .as_str()
                .unwrap()
                .starts_with("deleted pod dev-broker-0-0"),
            "{status}"
        );
    }

    #[tokio::test]
    async fn a_failed_apply_is_reported_as_degraded() {
        let (ctx, mut api) = fixtures::context();
        let reconciling = tokio::spawn(reconcile(Arc::new(cluster(json!({}), None)), ctx));
        within(async {
            let core = "/api/v1/namespaces/default";
            api.expect_statefulset_list(&[]).await;
            api.expect_apply(&format!("{core}/configmaps/dev-config"), None)
                .await;
            api.fail_apply(
                &format!("{core}/services/dev-headless"),
                StatusCode::FORBIDDEN,
            )
            .await;
            api.expect_pod_list(vec![]).await;
            let status = api.expect_status().await;
            let degraded = condition(&status, "Degraded");
            assert_eq!(
                (&degraded["status"], &degraded["reason"]),
                (&json!("True"), &json!("ApplyFailed"))
            );
            let event = api.expect_event().await;
            assert_eq!(event["reason"], "ApplyFailed");
        })
        .await;
        let result = within(reconciling).await.unwrap();
        assert!(
            matches!(result, Err(Error::Apply { ref kind, .. }) if kind == "Service"),
            "{result:?}"
        );
    }
}
