//! Reconciling one `Topic`: finalizer, the cluster's bootstrap address, the conflict
//! check against other Topics, the Kafka-side sync, status and events.
//!
//! Two Topics may name the same Kafka topic on the same cluster; the oldest (by
//! creation time, then name) manages it and every other one gets `Conflict` and changes
//! nothing, not even on deletion.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::{Api, ResourceExt};
use tracing::{debug, info, instrument, warn};

use super::plan::replication_factor;
use super::sync::{delete, sync, SyncFailed, SyncOutcome};
use crate::cluster::reconcile::Context;
use crate::cluster::status::condition;
use crate::crd::{DeletionPolicy, Topic, TopicStatus};
use crate::kafka::{AdminError, ConfigOp};
use crate::shell::{
    apply_status, cluster_access, is_finalizer_conflict, publish, ClusterAccess, REQUEUE_CONFLICT,
};
use crate::watch::decode;

/// The finalizer that keeps a Topic until its Kafka topic is dealt with.
pub const FINALIZER: &str = "strom.dev/topic";
pub const READY: &str = "Ready";
pub const CONFLICT: &str = "Conflict";

/// How often a synced topic is compared with Kafka again, which is what reverts changes
/// made outside Kubernetes.
pub const RESYNC: Duration = Duration::from_secs(120);
/// How soon a topic whose cluster is not reachable yet is looked at again.
const REQUEUE_WAITING: Duration = Duration::from_secs(15);
/// Back-off after a failed reconcile.
const REQUEUE_ERROR: Duration = Duration::from_secs(30);

/// Why a reconcile failed; each variant is one step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading KafkaCluster {name}: {source}")]
    GetCluster {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing Topics: {0}")]
    ListTopics(#[source] kube::Error),
    #[error("Kafka: {0}")]
    Kafka(#[from] AdminError),
    #[error("cluster {0} has no bootstrap address yet; the topic is deleted once it has")]
    ClusterNotReady(String),
    #[error("patching status: {0}")]
    PatchStatus(#[source] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// The failing step, as a metric label value.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::GetCluster { .. } => "get_cluster",
            Error::ListTopics(_) => "list_topics",
            Error::Kafka(_) => "kafka",
            Error::ClusterNotReady(_) => "cluster_not_ready",
            Error::PatchStatus(_) => "patch_status",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// Brings one topic in Kafka in line with its Topic, or deals with it on deletion.
#[instrument(skip_all, fields(namespace = topic.namespace(), object = topic.name_any()))]
pub async fn reconcile(topic: Arc<Topic>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(topic, &ctx).await;
    ctx.metrics.observe_reconcile(
        "Topic",
        started.elapsed(),
        result.as_ref().err().map(Error::metric_label),
    );
    result
}

async fn reconcile_inner(topic: Arc<Topic>, ctx: &Context) -> Result<Action, Error> {
    let api: Api<Topic> =
        Api::namespaced(ctx.client.clone(), &topic.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, topic, |event| async {
        match event {
            Finalizer::Apply(topic) => apply(&topic, ctx).await,
            Finalizer::Cleanup(topic) => cleanup(&topic, ctx).await,
        }
    })
    .await
    .map_err(|err| match err {
        kube::runtime::finalizer::Error::ApplyFailed(err)
        | kube::runtime::finalizer::Error::CleanupFailed(err) => err,
        other => Error::Finalizer(Box::new(other)),
    })
}

/// What the controller does after a failed reconcile: log it and try again later.
pub fn error_policy(topic: Arc<Topic>, err: &Error, _ctx: Arc<Context>) -> Action {
    if let Error::Finalizer(finalizer) = err {
        if is_finalizer_conflict(finalizer) {
            debug!(namespace = topic.namespace(), object = topic.name_any(), cause = %err, "changed meanwhile; again");
            return Action::requeue(REQUEUE_CONFLICT);
        }
    }
    warn!(namespace = topic.namespace(), object = topic.name_any(), cause = %err, "topic reconcile failed");
    Action::requeue(REQUEUE_ERROR)
}

/// The Topic that manages `topic`'s Kafka topic when it is not `topic` itself.
fn owner_if_other(topic: &Topic, all: &[Topic]) -> Option<String> {
    let key = |t: &Topic| {
        (
            t.metadata.creation_timestamp.clone().map(|t| t.0),
            t.name_any(),
        )
    };
    all.iter()
        .filter(|t| {
            t.spec.cluster_ref == topic.spec.cluster_ref && t.kafka_name() == topic.kafka_name()
        })
        .min_by_key(|t| key(t))
        .filter(|owner| owner.name_any() != topic.name_any())
        .map(ResourceExt::name_any)
}

async fn conflicting_owner(topic: &Topic, ctx: &Context) -> Result<Option<String>, Error> {
    // Listed untyped and decoded one by one: a Topic that does not parse (reported by
    // the watch) manages nothing and must not stop the others from syncing.
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &topic.namespace().unwrap_or_default(),
        &ApiResource::erase::<Topic>(&()),
    );
    let all = api
        .list(&ListParams::default())
        .await
        .map_err(Error::ListTopics)?;
    let parsed: Vec<Topic> = all.items.iter().filter_map(|o| decode(o).ok()).collect();
    Ok(owner_if_other(topic, &parsed))
}

async fn apply(topic: &Topic, ctx: &Context) -> Result<Action, Error> {
    let namespace = topic.namespace().unwrap_or_default();
    let cluster = &topic.spec.cluster_ref.name;
    let now = (ctx.now)();
    let access = cluster_access(ctx, &namespace, cluster)
        .await
        .map_err(|source| Error::GetCluster {
            name: cluster.clone(),
            source,
        })?;
    let bootstrap = match access {
        ClusterAccess::Bootstrap(bootstrap) => bootstrap,
        waiting => {
            let (reason, message) = if waiting == ClusterAccess::Missing {
                (
                    "ClusterNotFound",
                    format!("KafkaCluster {cluster} does not exist"),
                )
            } else {
                (
                    "ClusterNotReady",
                    format!("KafkaCluster {cluster} has no bootstrap address yet"),
                )
            };
            let status = status_without_sync(topic, now, (false, reason, message), None);
            apply_status(ctx, topic, &status)
                .await
                .map_err(Error::PatchStatus)?;
            return Ok(Action::requeue(REQUEUE_WAITING));
        }
    };

    if let Some(owner) = conflicting_owner(topic, ctx).await? {
        let message = format!(
            "Topic {owner} already manages Kafka topic {} on cluster {cluster}; this one changes nothing",
            topic.kafka_name()
        );
        let status = status_without_sync(
            topic,
            now,
            (false, "Conflict", message.clone()),
            Some(message.clone()),
        );
        apply_status(ctx, topic, &status)
            .await
            .map_err(Error::PatchStatus)?;
        let was_conflicting =
            previous_condition(topic, CONFLICT).is_some_and(|c| c.status == "True");
        if !was_conflicting {
            publish(
                ctx,
                topic,
                EventType::Warning,
                "Conflict",
                "Reconcile",
                message,
            )
            .await;
        }
        return Ok(Action::requeue(RESYNC));
    }

    let admin = ctx.kafka.admin(&bootstrap);
    match sync(admin.as_ref(), topic.kafka_name(), &topic.spec).await {
        Ok(outcome) => {
            let status = status_after_sync(topic, &outcome, None, now);
            apply_status(ctx, topic, &status)
                .await
                .map_err(Error::PatchStatus)?;
            for (type_, reason, note) in sync_events(topic, &outcome) {
                info!(reason, note, "event");
                publish(ctx, topic, type_, reason, "Sync", note).await;
            }
            // A replication-factor change is followed closely until it is done.
            Ok(Action::requeue(if outcome.reassigning.is_some() {
                REQUEUE_WAITING
            } else {
                RESYNC
            }))
        }
        Err(SyncFailed {
            error: err,
            done,
            described,
        }) => {
            // What happened before the failing step shows in status and events too.
            let status = if described {
                status_after_sync(topic, &done, Some(&err), now)
            } else {
                status_without_sync(topic, now, (false, &err.kind(), err.to_string()), None)
            };
            apply_status(ctx, topic, &status)
                .await
                .map_err(Error::PatchStatus)?;
            for (type_, reason, note) in sync_events(topic, &done) {
                info!(reason, note, "event");
                publish(ctx, topic, type_, reason, "Sync", note).await;
            }
            publish(
                ctx,
                topic,
                EventType::Warning,
                "KafkaError",
                "Sync",
                err.to_string(),
            )
            .await;
            Err(err.into())
        }
    }
}

async fn cleanup(topic: &Topic, ctx: &Context) -> Result<Action, Error> {
    let namespace = topic.namespace().unwrap_or_default();
    let name = topic.kafka_name();
    if topic.spec.deletion_policy == DeletionPolicy::Retain {
        publish(
            ctx,
            topic,
            EventType::Normal,
            "TopicRetained",
            "Delete",
            format!("Kafka topic {name} is kept (deletionPolicy: Retain)"),
        )
        .await;
        return Ok(Action::await_change());
    }
    if let Some(owner) = conflicting_owner(topic, ctx).await? {
        info!(owner, "not deleting a Kafka topic another Topic manages");
        return Ok(Action::await_change());
    }
    let cluster = &topic.spec.cluster_ref.name;
    let access = cluster_access(ctx, &namespace, cluster)
        .await
        .map_err(|source| Error::GetCluster {
            name: cluster.clone(),
            source,
        })?;
    match access {
        // Without its cluster there is no topic left to delete.
        ClusterAccess::Missing => Ok(Action::await_change()),
        ClusterAccess::NotReady => Err(Error::ClusterNotReady(cluster.clone())),
        ClusterAccess::Bootstrap(bootstrap) => {
            let admin = ctx.kafka.admin(&bootstrap);
            let existed = delete(admin.as_ref(), name).await?;
            let note = if existed {
                format!("deleted Kafka topic {name}")
            } else {
                format!("Kafka topic {name} was already gone")
            };
            publish(
                ctx,
                topic,
                EventType::Normal,
                "TopicDeleted",
                "Delete",
                note,
            )
            .await;
            Ok(Action::await_change())
        }
    }
}

fn previous_condition<'a>(topic: &'a Topic, type_: &str) -> Option<&'a Condition> {
    topic
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

fn conditions(
    topic: &Topic,
    now: Timestamp,
    ready: (bool, &str, String),
    conflict: Option<String>,
) -> Vec<Condition> {
    let previous = topic
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = topic.metadata.generation;
    let (conflicting, conflict_reason, conflict_message) = match conflict {
        Some(message) => (true, "AnotherTopicManagesIt", message),
        None => (
            false,
            "NoConflict",
            "no other Topic names this Kafka topic".to_owned(),
        ),
    };
    vec![
        condition(previous, READY, ready.0, ready.1, ready.2, generation, now),
        condition(
            previous,
            CONFLICT,
            conflicting,
            conflict_reason,
            conflict_message,
            generation,
            now,
        ),
    ]
}

/// Status when Kafka was not (successfully) synced: the conditions change, what was
/// last observed of the topic stays.
fn status_without_sync(
    topic: &Topic,
    now: Timestamp,
    ready: (bool, &str, String),
    conflict: Option<String>,
) -> TopicStatus {
    let previous = topic.status.clone().unwrap_or_default();
    TopicStatus {
        observed_generation: topic.metadata.generation,
        conditions: conditions(topic, now, ready, conflict),
        topic_name: Some(topic.kafka_name().to_owned()),
        ..previous
    }
}

/// Status after a sync, from what Kafka has afterwards; `failed` is the step that
/// failed, when one did (the steps before it are in `outcome`).
pub fn status_after_sync(
    topic: &Topic,
    outcome: &SyncOutcome,
    failed: Option<&AdminError>,
    now: Timestamp,
) -> TopicStatus {
    let ready = if let Some(err) = failed {
        (false, err.kind(), err.to_string())
    } else if !outcome.problems.is_empty() {
        (false, "CannotApply".to_owned(), outcome.problems.join("; "))
    } else if let Some(progress) = &outcome.reassigning {
        (false, "Reassigning".to_owned(), progress.clone())
    } else {
        (
            true,
            "Synced".to_owned(),
            "the Kafka topic matches the spec".to_owned(),
        )
    };
    TopicStatus {
        observed_generation: topic.metadata.generation,
        conditions: conditions(topic, now, (ready.0, &ready.1, ready.2), None),
        topic_name: Some(topic.kafka_name().to_owned()),
        topic_id: Some(outcome.topic.topic_id.clone()),
        partitions: Some(outcome.topic.partitions.len() as i32),
        replication_factor: replication_factor(&outcome.topic),
        under_replicated_partitions: Some(outcome.topic.under_replicated() as i32),
    }
}

/// Events for what a sync changed.
pub fn sync_events(topic: &Topic, outcome: &SyncOutcome) -> Vec<(EventType, &'static str, String)> {
    let name = topic.kafka_name();
    let mut events = Vec::new();
    let known_id = topic.status.as_ref().and_then(|s| s.topic_id.as_deref());
    // The topic is unknown (empty) when it could not be described after a failure.
    let described = !outcome.topic.topic_id.is_empty();
    if outcome.created {
        let note = if described {
            format!(
                "created Kafka topic {name} with {} partitions",
                outcome.topic.partitions.len()
            )
        } else {
            format!("created Kafka topic {name}")
        };
        events.push((EventType::Normal, "TopicCreated", note));
    } else if described && known_id != Some(outcome.topic.topic_id.as_str()) {
        events.push((
            EventType::Normal,
            "TopicAdopted",
            format!(
                "adopted existing Kafka topic {name} (id {})",
                outcome.topic.topic_id
            ),
        ));
    }
    if let Some((from, to)) = outcome.grown {
        events.push((
            EventType::Normal,
            "PartitionsIncreased",
            format!("partitions of {name} increased from {from} to {to}"),
        ));
    }
    if let Some((from, to, partitions)) = outcome.reassigned {
        events.push((
            EventType::Normal,
            "ReplicationFactorChanging",
            format!(
                "replication factor of {name} {from} -> {to}: reassigning {partitions} partitions"
            ),
        ));
    }
    if !outcome.altered.is_empty() {
        let describe: Vec<String> = outcome
            .altered
            .iter()
            .map(|op| match op {
                ConfigOp::Set(k, v) => format!("{k}={v}"),
                ConfigOp::Delete(k) => format!("{k} back to default"),
            })
            .collect();
        events.push((
            EventType::Normal,
            "ConfigUpdated",
            format!("config of {name}: {}", describe.join(", ")),
        ));
    }
    // Only when the problem appears, not on every resync while it lasts.
    let already_reported =
        previous_condition(topic, READY).is_some_and(|c| c.reason == "CannotApply");
    if !already_reported {
        for problem in &outcome.problems {
            events.push((EventType::Warning, "CannotApply", problem.clone()));
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use http::{Method, StatusCode};
    use kafka_protocol::error::ResponseError;
    use serde_json::{json, Value};

    use super::*;
    use crate::cluster::fixtures::{self, not_found, ApiServerVerifier};

    const BASE: &str = "/apis/strom.dev/v1alpha1/namespaces/default";
    const BOOTSTRAP: &str = "dev-bootstrap.default.svc:9092";

    async fn within<F: Future>(future: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), future)
            .await
            .expect("the expected requests did not come in time")
    }

    /// A Topic as the API server hands it over: `orders` on cluster `dev`, created at
    /// `created`, with the operator's finalizer.
    fn topic_object(name: &str, created: &str, spec: Value, status: Option<Value>) -> Value {
        let mut object = json!({
            "apiVersion": "strom.dev/v1alpha1",
            "kind": "Topic",
            "metadata": {
                "name": name,
                "namespace": "default",
                "uid": format!("uid-{name}"),
                "generation": 3,
                "creationTimestamp": created,
                "finalizers": [FINALIZER],
            },
            "spec": spec,
        });
        if let Some(status) = status {
            object["status"] = status;
        }
        object
    }

    fn topic(spec: Value, status: Option<Value>) -> Topic {
        serde_json::from_value(topic_object("orders", "2024-01-01T00:00:00Z", spec, status))
            .expect("valid Topic")
    }

    fn ready_cluster() -> Value {
        serde_json::to_value(fixtures::cluster(
            json!({}),
            Some(json!({"bootstrap": BOOTSTRAP})),
        ))
        .unwrap()
    }

    async fn expect_cluster(api: &mut ApiServerVerifier) {
        api.handle(
            Method::GET,
            &format!("{BASE}/kafkaclusters/dev"),
            StatusCode::OK,
            |_| ready_cluster(),
        )
        .await;
    }

    async fn expect_topic_list(api: &mut ApiServerVerifier, items: Vec<Value>) {
        api.handle(Method::GET, &format!("{BASE}/topics"), StatusCode::OK, |_| {
            json!({"apiVersion": "strom.dev/v1alpha1", "kind": "TopicList", "metadata": {}, "items": items})
        })
        .await;
    }

    /// Expects the status apply of Topic `orders` and returns the status.
    async fn expect_status(api: &mut ApiServerVerifier) -> Value {
        let seen = api
            .handle(
                Method::PATCH,
                &format!("{BASE}/topics/orders/status"),
                StatusCode::OK,
                |seen| {
                    let mut answer = topic_object(
                        "orders",
                        "2024-01-01T00:00:00Z",
                        json!({"clusterRef": {"name": "dev"}}),
                        None,
                    );
                    answer["status"] = seen.body["status"].clone();
                    answer
                },
            )
            .await;
        assert!(
            seen.query.contains("fieldManager=strom-operator"),
            "{}",
            seen.query
        );
        assert_eq!(seen.body["kind"], "Topic");
        seen.body["status"].clone()
    }

    fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
        status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
            .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
    }

    fn spec() -> Value {
        json!({"clusterRef": {"name": "dev"}, "partitions": 3, "retentionMs": 3600000, "config": {"segment.bytes": "1048576"}})
    }

    #[tokio::test]
    async fn the_finalizer_comes_first() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        let mut object = topic_object("orders", "2024-01-01T00:00:00Z", spec(), None);
        object["metadata"]["finalizers"] = json!(null);
        let topic: Topic = serde_json::from_value(object).unwrap();
        let reconciling = tokio::spawn(reconcile(Arc::new(topic), ctx));
        within(async {
            let seen = api
                .handle(
                    Method::PATCH,
                    &format!("{BASE}/topics/orders"),
                    StatusCode::OK,
                    |seen| {
                        let mut answer =
                            topic_object("orders", "2024-01-01T00:00:00Z", spec(), None);
                        answer["metadata"]["finalizers"] = seen.body[1]["value"].clone();
                        answer
                    },
                )
                .await;
            assert_eq!(seen.content_type, "application/json-patch+json");
            assert_eq!(
                seen.body[1],
                json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]})
            );
        })
        .await;
        let action = within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        assert_eq!(action, Action::await_change());
        assert!(
            pool.kafka.calls().is_empty(),
            "nothing happens in Kafka before the finalizer is set"
        );
    }

    #[tokio::test]
    async fn a_finalizer_patch_that_lost_a_race_is_retried_at_once() {
        let (ctx, mut api, _pool) = fixtures::context_with_kafka();
        let mut object = topic_object("orders", "2024-01-01T00:00:00Z", spec(), None);
        object["metadata"]["finalizers"] = json!(null);
        let topic: Topic = serde_json::from_value(object).unwrap();
        let reconciling = tokio::spawn(reconcile(Arc::new(topic.clone()), ctx.clone()));
        within(api.handle(
            Method::PATCH,
            &format!("{BASE}/topics/orders"),
            StatusCode::UNPROCESSABLE_ENTITY,
            |_| {
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid",
                       "code": 422, "message": "the server rejected our request due to an error in our request"})
            },
        ))
        .await;
        let err = within(reconciling).await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Finalizer(_)), "{err:?}");
        assert_eq!(
            error_policy(Arc::new(topic), &err, ctx),
            Action::requeue(REQUEUE_CONFLICT)
        );
    }

    #[tokio::test]
    async fn a_replication_factor_change_is_a_reassignment_followed_until_done() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        let kafka = &pool.kafka;
        kafka.add_brokers(&[(0, Some("a")), (1, Some("b")), (2, Some("c"))]);
        kafka.add_placed_topic("orders", &[vec![0], vec![1], vec![2]]);
        kafka.state().topics.get_mut("orders").unwrap().config =
            std::collections::BTreeMap::from([
                ("retention.ms".to_owned(), "3600000".to_owned()),
                ("segment.bytes".to_owned(), "1048576".to_owned()),
            ]);
        let mut rf3 = spec();
        rf3["replicationFactor"] = json!(3);
        let run = |status: Option<Value>| {
            let topic = topic(rf3.clone(), status);
            tokio::spawn(reconcile(Arc::new(topic), ctx.clone()))
        };

        let reconciling = run(None);
        let status = within(async {
            expect_cluster(&mut api).await;
            expect_topic_list(
                &mut api,
                vec![topic_object(
                    "orders",
                    "2024-01-01T00:00:00Z",
                    rf3.clone(),
                    None,
                )],
            )
            .await;
            let status = expect_status(&mut api).await;
            let ready = condition(&status, READY);
            assert_eq!(
                (&ready["status"], &ready["reason"]),
                (&json!("False"), &json!("Reassigning"))
            );
            assert!(
                ready["message"]
                    .as_str()
                    .unwrap()
                    .contains("replication factor 1 -> 3"),
                "{ready}"
            );
            for reason in ["TopicAdopted", "ReplicationFactorChanging"] {
                assert_eq!(api.expect_event_about("orders").await["reason"], reason);
            }
            status
        })
        .await;
        let action = within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        assert_eq!(action, Action::requeue(REQUEUE_WAITING), "followed closely");
        assert_eq!(kafka.state().reassigning.len(), 3);

        kafka.complete_reassignments();
        let reconciling = run(Some(status));
        within(async {
            expect_cluster(&mut api).await;
            expect_topic_list(
                &mut api,
                vec![topic_object(
                    "orders",
                    "2024-01-01T00:00:00Z",
                    rf3.clone(),
                    None,
                )],
            )
            .await;
            let status = expect_status(&mut api).await;
            assert_eq!(status["replicationFactor"], 3);
            assert_eq!(condition(&status, READY)["reason"], "Synced");
        })
        .await;
        within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        for p in 0..3 {
            let replicas = kafka.state().topics["orders"].placed[&p].clone();
            let distinct: std::collections::BTreeSet<_> = replicas.iter().collect();
            assert_eq!(distinct.len(), 3, "{replicas:?}");
        }
    }

    #[tokio::test]
    async fn a_missing_topic_is_created_with_its_config() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        let own = topic(spec(), None);
        let reconciling = tokio::spawn(reconcile(Arc::new(own), ctx));
        within(async {
            expect_cluster(&mut api).await;
            expect_topic_list(
                &mut api,
                vec![topic_object("orders", "2024-01-01T00:00:00Z", spec(), None)],
            )
            .await;
            let status = expect_status(&mut api).await;
            assert_eq!(status["topicId"], "id-orders");
            assert_eq!(status["topicName"], "orders");
            assert_eq!(status["partitions"], 3);
            assert_eq!(status["replicationFactor"], 1);
            assert_eq!(status["observedGeneration"], 3);
            let ready = condition(&status, READY);
            assert_eq!(
                (&ready["status"], &ready["reason"]),
                (&json!("True"), &json!("Synced"))
            );
            assert_eq!(condition(&status, CONFLICT)["status"], "False");
            let event = api.expect_event_about("orders").await;
            assert_eq!(event["reason"], "TopicCreated");
        })
        .await;
        let action = within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        assert_eq!(action, Action::requeue(RESYNC));
        assert_eq!(pool.asked.lock().unwrap().as_slice(), [BOOTSTRAP]);
        assert_eq!(
            pool.kafka.calls(),
            [
                r#"create orders partitions=3 rf=None config={"retention.ms": "3600000", "segment.bytes": "1048576"}"#
            ]
        );
    }

    /// Log lines written where a test can read them.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[tokio::test]
    async fn json_logs_name_the_object_and_its_namespace() {
        // Installed for the whole test process: tracing caches which log sites are
        // enabled process-wide, so a thread-local subscriber misses lines while other
        // tests run. Other tests' lines land here too; the one looked for is this one's.
        static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
        let captured = CAPTURED.get_or_init(|| {
            let captured = Captured::default();
            let subscriber =
                crate::run::json_logs(tracing_subscriber::EnvFilter::new("info"), captured.clone());
            tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
            captured
        });
        let topic_name = "logged-orders";
        let (ctx, mut api, _pool) = fixtures::context_with_kafka();
        let mut spec = spec();
        spec["topicName"] = json!(topic_name);
        let reconciling = tokio::spawn(reconcile(Arc::new(topic(spec, None)), ctx));
        within(async {
            expect_cluster(&mut api).await;
            expect_topic_list(&mut api, vec![]).await;
            expect_status(&mut api).await;
            api.expect_event_about("orders").await;
        })
        .await;
        within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");

        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("TopicCreated") && l.contains(topic_name))
            .unwrap_or_else(|| panic!("no event line in {text}"));
        let parsed: Value = serde_json::from_str(line).unwrap();
        assert_eq!(parsed["span"]["object"], "orders", "{line}");
        assert_eq!(parsed["span"]["namespace"], "default", "{line}");
        assert_eq!(parsed["span"]["name"], "reconcile", "{line}");
        // serde_json keeps the last of duplicate keys: count them in the text itself.
        let span = &line[line.find(r#""span":"#).unwrap()..];
        let span = &span[..span.find('}').unwrap()];
        assert_eq!(
            span.matches(r#""name":"#).count(),
            1,
            "one `name` key: {line}"
        );
    }

    #[tokio::test]
    async fn drift_is_reverted_partitions_grow_and_removed_keys_return_to_default() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        // Someone changed retention.ms in Kafka; segment.ms was removed from the spec.
        pool.kafka.add_topic(
            "orders",
            2,
            &[
                ("retention.ms", "5"),
                ("segment.bytes", "1048576"),
                ("segment.ms", "60000"),
            ],
        );
        let status = json!({"topicId": "id-orders", "partitions": 2});
        let reconciling = tokio::spawn(reconcile(Arc::new(topic(spec(), Some(status))), ctx));
        within(async {
            expect_cluster(&mut api).await;
            expect_topic_list(&mut api, vec![]).await;
            let status = expect_status(&mut api).await;
            assert_eq!(status["partitions"], 3);
            assert_eq!(condition(&status, READY)["status"], "True");
            let grown = api.expect_event_about("orders").await;
            assert_eq!(grown["reason"], "PartitionsIncreased");
            assert_eq!(grown["note"], "partitions of orders increased from 2 to 3");
            let altered = api.expect_event_about("orders").await;
            assert_eq!(altered["reason"], "ConfigUpdated");
            assert_eq!(
                altered["note"],
                "config of orders: retention.ms=3600000, segment.ms back to default"
            );
        })
        .await;
        within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        let state = pool.kafka.state();
        let config = &state.topics["orders"].config;
        assert_eq!(
            config.get("retention.ms").map(String::as_str),
            Some("3600000")
        );
        assert_eq!(config.get("segment.ms"), None);
        assert_eq!(state.topics["orders"].partitions, 3);
    }

    #[tokio::test]
    async fn a_step_that_fails_after_partitions_grew_leaves_status_and_events_true() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        pool.kafka.add_topic(
            "orders",
            2,
            &[("retention.ms", "5"), ("segment.bytes", "1048576")],
        );
        pool.kafka.state().fail_api = vec![(
            kafka_protocol::messages::ApiKey::IncrementalAlterConfigs,
            ResponseError::PolicyViolation,
        )];
        let status = json!({"topicId": "id-orders", "partitions": 2});
        let reconciling = tokio::spawn(reconcile(Arc::new(topic(spec(), Some(status))), ctx));
        within(async {
            expect_cluster(&mut api).await;
            expect_topic_list(&mut api, vec![]).await;
            let status = expect_status(&mut api).await;
            // Kafka has 3 partitions now, whatever failed after that.
            assert_eq!(status["partitions"], 3);
            assert_eq!(status["observedGeneration"], 3);
            let ready = condition(&status, READY);
            assert_eq!(
                (&ready["status"], &ready["reason"]),
                (&json!("False"), &json!("PolicyViolation"))
            );
            let grown = api.expect_event_about("orders").await;
            assert_eq!(grown["reason"], "PartitionsIncreased");
            assert_eq!(grown["note"], "partitions of orders increased from 2 to 3");
            let failed = api.expect_event_about("orders").await;
            assert_eq!(failed["reason"], "KafkaError");
            api.expect_nothing_more().await;
        })
        .await;
        let result = within(reconciling).await.unwrap();
        assert!(matches!(result, Err(Error::Kafka(_))), "{result:?}");
        assert_eq!(pool.kafka.state().topics["orders"].partitions, 3);
    }

    #[tokio::test]
    async fn an_existing_topic_is_adopted() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        pool.kafka.add_topic(
            "orders",
            3,
            &[("retention.ms", "3600000"), ("segment.bytes", "1048576")],
        );
        let reconciling = tokio::spawn(reconcile(Arc::new(topic(spec(), None)), ctx));
        within(async {
            expect_cluster(&mut api).await;
            expect_topic_list(&mut api, vec![]).await;
            let status = expect_status(&mut api).await;
            assert_eq!(status["topicId"], "id-orders");
            let event = api.expect_event_about("orders").await;
            assert_eq!(event["reason"], "TopicAdopted");
            api.expect_nothing_more().await;
        })
        .await;
        within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        assert!(
            pool.kafka.calls().is_empty(),
            "a matching topic is left alone: {:?}",
            pool.kafka.calls()
        );
    }

    #[tokio::test]
    async fn a_second_topic_for_the_same_kafka_topic_conflicts_and_changes_nothing() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        pool.kafka.add_topic("orders", 1, &[]);
        // `orders` is younger than `orders-original`, which names the same Kafka topic.
        let original = topic_object(
            "orders-original",
            "2023-06-01T00:00:00Z",
            json!({"clusterRef": {"name": "dev"}, "topicName": "orders"}),
            None,
        );
        let reconciling = tokio::spawn(reconcile(Arc::new(topic(spec(), None)), ctx));
        within(async {
            expect_cluster(&mut api).await;
            expect_topic_list(
                &mut api,
                vec![
                    original,
                    topic_object("orders", "2024-01-01T00:00:00Z", spec(), None),
                ],
            )
            .await;
            let status = expect_status(&mut api).await;
            let conflict = condition(&status, CONFLICT);
            assert_eq!(
                (&conflict["status"], &conflict["reason"]),
                (&json!("True"), &json!("AnotherTopicManagesIt"))
            );
            assert!(conflict["message"]
                .as_str()
                .unwrap()
                .contains("orders-original"));
            let ready = condition(&status, READY);
            assert_eq!(
                (&ready["status"], &ready["reason"]),
                (&json!("False"), &json!("Conflict"))
            );
            let event = api.expect_event_about("orders").await;
            assert_eq!(
                (&event["type"], &event["reason"]),
                (&json!("Warning"), &json!("Conflict"))
            );
        })
        .await;
        within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        assert!(pool.kafka.calls().is_empty());
        assert_eq!(
            pool.kafka.state().topics["orders"].partitions,
            1,
            "untouched"
        );
    }

    #[tokio::test]
    async fn a_missing_cluster_is_reported_without_touching_kafka() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        let reconciling = tokio::spawn(reconcile(Arc::new(topic(spec(), None)), ctx));
        within(async {
            api.handle(
                Method::GET,
                &format!("{BASE}/kafkaclusters/dev"),
                StatusCode::NOT_FOUND,
                |_| not_found(),
            )
            .await;
            let status = expect_status(&mut api).await;
            let ready = condition(&status, READY);
            assert_eq!(
                (&ready["status"], &ready["reason"]),
                (&json!("False"), &json!("ClusterNotFound"))
            );
        })
        .await;
        let action = within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        assert_eq!(action, Action::requeue(REQUEUE_WAITING));
        assert!(
            pool.asked.lock().unwrap().is_empty(),
            "no admin client for a missing cluster"
        );
    }

    #[tokio::test]
    async fn a_kafka_error_is_reported_and_fails_the_reconcile() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        pool.kafka.state().fail_with = Some(ResponseError::PolicyViolation);
        let metrics = ctx.metrics.clone();
        let reconciling = tokio::spawn(reconcile(Arc::new(topic(spec(), None)), ctx));
        within(async {
            expect_cluster(&mut api).await;
            expect_topic_list(&mut api, vec![]).await;
            let status = expect_status(&mut api).await;
            let ready = condition(&status, READY);
            assert_eq!(
                (&ready["status"], &ready["reason"]),
                (&json!("False"), &json!("PolicyViolation"))
            );
            let event = api.expect_event_about("orders").await;
            assert_eq!(
                (&event["type"], &event["reason"]),
                (&json!("Warning"), &json!("KafkaError"))
            );
        })
        .await;
        let result = within(reconciling).await.unwrap();
        assert!(matches!(result, Err(Error::Kafka(_))), "{result:?}");
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"strom_operator_reconciliations_total{controller="Topic",outcome="kafka"} 1"#
            ),
            "{text}"
        );
    }

    fn deleting(policy: &str) -> Topic {
        let mut object = topic_object("orders", "2024-01-01T00:00:00Z", spec(), None);
        object["spec"]["deletionPolicy"] = json!(policy);
        object["metadata"]["deletionTimestamp"] = json!("2024-02-01T00:00:00Z");
        serde_json::from_value(object).unwrap()
    }

    async fn expect_finalizer_removed(api: &mut ApiServerVerifier) {
        let seen = api
            .handle(
                Method::PATCH,
                &format!("{BASE}/topics/orders"),
                StatusCode::OK,
                |_| topic_object("orders", "2024-01-01T00:00:00Z", spec(), None),
            )
            .await;
        assert_eq!(
            seen.body[1],
            json!({"op": "remove", "path": "/metadata/finalizers/0"})
        );
    }

    #[tokio::test]
    async fn deleting_with_policy_delete_deletes_the_kafka_topic() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        pool.kafka.add_topic("orders", 3, &[]);
        let reconciling = tokio::spawn(reconcile(Arc::new(deleting("Delete")), ctx));
        within(async {
            expect_topic_list(&mut api, vec![]).await;
            expect_cluster(&mut api).await;
            let event = api.expect_event_about("orders").await;
            assert_eq!(
                (&event["reason"], &event["note"]),
                (&json!("TopicDeleted"), &json!("deleted Kafka topic orders"))
            );
            expect_finalizer_removed(&mut api).await;
        })
        .await;
        within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        assert_eq!(pool.kafka.calls(), ["delete orders"]);
    }

    #[tokio::test]
    async fn deleting_with_policy_retain_keeps_the_kafka_topic() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        pool.kafka.add_topic("orders", 3, &[]);
        let reconciling = tokio::spawn(reconcile(Arc::new(deleting("Retain")), ctx));
        within(async {
            let event = api.expect_event_about("orders").await;
            assert_eq!(event["reason"], "TopicRetained");
            expect_finalizer_removed(&mut api).await;
        })
        .await;
        within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        assert!(pool.kafka.calls().is_empty());
        assert!(pool.kafka.state().topics.contains_key("orders"));
    }

    #[tokio::test]
    async fn deleting_a_conflicting_topic_leaves_the_kafka_topic_alone() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        pool.kafka.add_topic("orders", 3, &[]);
        let original = topic_object(
            "orders-original",
            "2023-06-01T00:00:00Z",
            json!({"clusterRef": {"name": "dev"}, "topicName": "orders"}),
            None,
        );
        let reconciling = tokio::spawn(reconcile(Arc::new(deleting("Delete")), ctx));
        within(async {
            expect_topic_list(&mut api, vec![original]).await;
            expect_finalizer_removed(&mut api).await;
        })
        .await;
        within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        assert!(pool.kafka.calls().is_empty());
    }
}
