//! Reconciling one `ConsumerGroup`: finalizer, the cluster's bootstrap address, a
//! pending offset reset, then status read from Kafka (state, members, offsets, lag),
//! refreshed periodically since lag changes without any Kubernetes event.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::{Api, ResourceExt};
use tracing::{debug, info, instrument, warn};

use super::plan::{as_list, lag};
use super::sync::{delete, observe, reset, GroupView, ResetError};
use crate::cluster::reconcile::Context;
use crate::cluster::status::condition;
use crate::crd::{
    ConsumerGroup, ConsumerGroupStatus, GroupDeletionPolicy, GroupMember, ResetOutcome,
    ResetResult, TopicPartitions,
};
use crate::kafka::AdminError;
use crate::shell::{
    apply_status, cluster_access, is_finalizer_conflict, publish, ClusterAccess, REQUEUE_CONFLICT,
};
use kafka_protocol::error::ResponseError;

/// The finalizer that keeps a ConsumerGroup until its deletion policy is carried out.
pub const FINALIZER: &str = "strom.dev/consumergroup";
pub const READY: &str = "Ready";
pub const OFFSET_RESET: &str = "OffsetReset";
/// The Ready reason while a deletion waits for the group's members to leave.
pub const DELETION_WAITING: &str = "DeletionWaiting";

/// How often status is read from Kafka again.
pub const REFRESH: Duration = Duration::from_secs(30);
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
    #[error("Kafka: {0}")]
    Kafka(#[from] AdminError),
    #[error("cluster {0} has no bootstrap address yet; the group is deleted once it has")]
    ClusterNotReady(String),
    #[error("patching status: {0}")]
    PatchStatus(#[source] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// Not a fault: the deletion waits for the group's members to leave. An error only
    /// because a finalizer is released on every successful cleanup.
    #[error("{0}")]
    DeletionWaiting(String),
}

impl Error {
    /// The failing step, as a metric label value.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::GetCluster { .. } => "get_cluster",
            Error::Kafka(_) => "kafka",
            Error::ClusterNotReady(_) => "cluster_not_ready",
            Error::PatchStatus(_) => "patch_status",
            Error::Finalizer(_) => "finalizer",
            Error::DeletionWaiting(_) => "deletion_waiting",
        }
    }
}

/// Carries out a pending reset and refreshes one group's status.
#[instrument(skip_all, fields(namespace = group.namespace(), object = group.name_any()))]
pub async fn reconcile(group: Arc<ConsumerGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(group, &ctx).await;
    ctx.metrics.observe_reconcile(
        "ConsumerGroup",
        started.elapsed(),
        result.as_ref().err().map(Error::metric_label),
    );
    result
}

async fn reconcile_inner(group: Arc<ConsumerGroup>, ctx: &Context) -> Result<Action, Error> {
    let api: Api<ConsumerGroup> =
        Api::namespaced(ctx.client.clone(), &group.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, group, |event| async {
        match event {
            Finalizer::Apply(group) => apply(&group, ctx).await,
            Finalizer::Cleanup(group) => cleanup(&group, ctx).await,
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
pub fn error_policy(group: Arc<ConsumerGroup>, err: &Error, _ctx: Arc<Context>) -> Action {
    if let Error::DeletionWaiting(why) = err {
        debug!(
            namespace = group.namespace(),
            object = group.name_any(),
            why,
            "deletion waiting"
        );
        return Action::requeue(REFRESH);
    }
    if let Error::Finalizer(finalizer) = err {
        if is_finalizer_conflict(finalizer) {
            debug!(namespace = group.namespace(), object = group.name_any(), cause = %err, "changed meanwhile; again");
            return Action::requeue(REQUEUE_CONFLICT);
        }
    }
    warn!(namespace = group.namespace(), object = group.name_any(), cause = %err, "group reconcile failed");
    Action::requeue(REQUEUE_ERROR)
}

async fn apply(group: &ConsumerGroup, ctx: &Context) -> Result<Action, Error> {
    let namespace = group.namespace().unwrap_or_default();
    let cluster = &group.spec.cluster_ref.name;
    let now = (ctx.now)();
    let mut status = group.status.clone().unwrap_or_default();
    status.observed_generation = group.metadata.generation;
    status.group_id = Some(group.group_id().to_owned());

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
            set_ready(group, &mut status, now, false, reason, message);
            apply_status(ctx, group, &status)
                .await
                .map_err(Error::PatchStatus)?;
            return Ok(Action::requeue(REFRESH));
        }
    };
    let admin = ctx.kafka.admin(&bootstrap);

    // A reset runs once per id; its outcome in status is what marks it done.
    let mut events = Vec::new();
    // A reset waiting for its topic to exist: (reset id, why).
    let mut waiting: Option<(String, String)> = None;
    if let Some(wanted) = &group.spec.offset_reset {
        let done = status
            .last_reset
            .as_ref()
            .is_some_and(|r| r.id == wanted.id);
        if !done {
            let outcome = match reset(admin.as_ref(), group.group_id(), wanted).await {
                Ok(done) => {
                    events.push((
                        EventType::Normal,
                        "OffsetsReset",
                        format!(
                            "reset {} partition(s) of group {} ({:?})",
                            done.after.len(),
                            group.group_id(),
                            wanted.to
                        ),
                    ));
                    Some(ResetOutcome {
                        id: wanted.id.clone(),
                        result: ResetResult::Succeeded,
                        message: Some(format!("committed {} partition(s)", done.after.len())),
                        offsets_before: as_list(&done.before),
                        offsets_after: as_list(&done.after),
                        time: Time(now),
                    })
                }
                // Worth another try later: the reset stays pending.
                Err(ResetError::Kafka(err)) if err.is_retriable() => {
                    set_ready(group, &mut status, now, false, &err.kind(), err.to_string());
                    apply_status(ctx, group, &status)
                        .await
                        .map_err(Error::PatchStatus)?;
                    return Err(err.into());
                }
                // Topic and group are often applied together: the reset waits for
                // the topic rather than failing for good.
                Err(ResetError::UnknownTopic(topic)) => {
                    let message = format!(
                        "reset {}: topic {topic} does not exist; the reset waits for it",
                        wanted.id
                    );
                    let reported = previous_conditions(group)
                        .iter()
                        .any(|c| c.type_ == OFFSET_RESET && c.reason == "TopicNotFound");
                    if !reported {
                        events.push((EventType::Warning, "OffsetResetWaiting", message.clone()));
                    }
                    waiting = Some((wanted.id.clone(), message));
                    None
                }
                Err(err) => {
                    let (result, reason) = match err {
                        ResetError::GroupActive(_) => {
                            (ResetResult::Rejected, "OffsetResetRejected")
                        }
                        _ => (ResetResult::Failed, "OffsetResetFailed"),
                    };
                    events.push((EventType::Warning, reason, err.to_string()));
                    Some(ResetOutcome {
                        id: wanted.id.clone(),
                        result,
                        message: Some(err.to_string()),
                        offsets_before: vec![],
                        offsets_after: vec![],
                        time: Time(now),
                    })
                }
            };
            if let Some(outcome) = outcome {
                status.last_reset = Some(outcome);
            }
        }
    }
    if let Some((_, message)) = waiting {
        let updated = condition(
            previous_conditions(group),
            OFFSET_RESET,
            false,
            "TopicNotFound",
            message,
            group.metadata.generation,
            now,
        );
        upsert(&mut status.conditions, updated);
    } else if let Some(outcome) = &status.last_reset {
        let previous = previous_conditions(group);
        let (ok, reason) = match outcome.result {
            ResetResult::Succeeded => (true, "Succeeded"),
            ResetResult::Rejected => (false, "GroupNotEmpty"),
            ResetResult::Failed => (false, "Failed"),
        };
        let message = format!(
            "reset {}: {}",
            outcome.id,
            outcome.message.clone().unwrap_or_default()
        );
        let updated = condition(
            previous,
            OFFSET_RESET,
            ok,
            reason,
            message,
            group.metadata.generation,
            now,
        );
        upsert(&mut status.conditions, updated);
    }

    let result = observe(admin.as_ref(), group.group_id()).await;
    match &result {
        Ok(view) => {
            fill_observed(&mut status, view);
            let message = format!(
                "{} with {} member(s), total lag {}",
                view.info.state,
                view.info.members.len(),
                status.total_lag.unwrap_or(0)
            );
            set_ready(group, &mut status, now, true, "Observed", message);
        }
        Err(err) => set_ready(group, &mut status, now, false, &err.kind(), err.to_string()),
    }
    apply_status(ctx, group, &status)
        .await
        .map_err(Error::PatchStatus)?;
    for (type_, reason, note) in events {
        info!(reason, note, "event");
        publish(ctx, group, type_, reason, "OffsetReset", note).await;
    }
    result?;
    Ok(Action::requeue(REFRESH))
}

async fn cleanup(group: &ConsumerGroup, ctx: &Context) -> Result<Action, Error> {
    if group.spec.deletion_policy == GroupDeletionPolicy::Retain {
        return Ok(Action::await_change());
    }
    let namespace = group.namespace().unwrap_or_default();
    let cluster = &group.spec.cluster_ref.name;
    let access = cluster_access(ctx, &namespace, cluster)
        .await
        .map_err(|source| Error::GetCluster {
            name: cluster.clone(),
            source,
        })?;
    match access {
        ClusterAccess::Missing => Ok(Action::await_change()),
        ClusterAccess::NotReady => Err(Error::ClusterNotReady(cluster.clone())),
        ClusterAccess::Bootstrap(bootstrap) => {
            let admin = ctx.kafka.admin(&bootstrap);
            match delete(admin.as_ref(), group.group_id()).await {
                Ok(existed) => {
                    let note = if existed {
                        format!(
                            "deleted group {} and its committed offsets",
                            group.group_id()
                        )
                    } else {
                        format!("group {} was already gone", group.group_id())
                    };
                    publish(
                        ctx,
                        group,
                        EventType::Normal,
                        "GroupDeleted",
                        "Delete",
                        note,
                    )
                    .await;
                    Ok(Action::await_change())
                }
                Err(err) if err.kafka_error() == Some(ResponseError::NonEmptyGroup) => {
                    wait_for_members_to_leave(group, ctx, admin.as_ref()).await
                }
                Err(err) => {
                    publish(
                        ctx,
                        group,
                        EventType::Warning,
                        "GroupDeleteFailed",
                        "Delete",
                        err.to_string(),
                    )
                    .await;
                    Err(err.into())
                }
            }
        }
    }
}

/// Kafka deletes a group only once its members have left: until then `kubectl delete`
/// waits on the finalizer. Status keeps showing the group as it is (members, lag) and
/// says why the deletion waits; a Warning event tells once.
async fn wait_for_members_to_leave(
    group: &ConsumerGroup,
    ctx: &Context,
    admin: &dyn crate::kafka::KafkaAdmin,
) -> Result<Action, Error> {
    let now = (ctx.now)();
    let mut status = group.status.clone().unwrap_or_default();
    status.observed_generation = group.metadata.generation;
    let members = match observe(admin, group.group_id()).await {
        Ok(view) => {
            fill_observed(&mut status, &view);
            let clients: std::collections::BTreeSet<&str> = view
                .info
                .members
                .iter()
                .map(|m| m.client_id.as_str())
                .collect();
            format!(
                "{} active members (clients: {})",
                view.info.members.len(),
                clients.into_iter().collect::<Vec<_>>().join(", ")
            )
        }
        Err(err) => format!("active members (not described: {err})"),
    };
    let message = format!(
        "deletion waits: Kafka deletes group {} and its offsets once its {members} have left; stop the consumers, or set deletionPolicy: Retain to keep the group",
        group.group_id()
    );
    let already_waiting = previous_conditions(group)
        .iter()
        .any(|c| c.type_ == READY && c.reason == DELETION_WAITING);
    set_ready(
        group,
        &mut status,
        now,
        false,
        DELETION_WAITING,
        message.clone(),
    );
    apply_status(ctx, group, &status)
        .await
        .map_err(Error::PatchStatus)?;
    if !already_waiting {
        info!(
            group = group.group_id(),
            "deletion waits for members to leave"
        );
        publish(
            ctx,
            group,
            EventType::Warning,
            DELETION_WAITING,
            "Delete",
            message.clone(),
        )
        .await;
    }
    Err(Error::DeletionWaiting(message))
}

fn previous_conditions(group: &ConsumerGroup) -> &[Condition] {
    group
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default()
}

fn upsert(conditions: &mut Vec<Condition>, updated: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == updated.type_) {
        Some(existing) => *existing = updated,
        None => conditions.push(updated),
    }
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

fn set_ready(
    group: &ConsumerGroup,
    status: &mut ConsumerGroupStatus,
    now: Timestamp,
    ready: bool,
    reason: &str,
    message: String,
) {
    let updated = condition(
        previous_conditions(group),
        READY,
        ready,
        reason,
        message,
        group.metadata.generation,
        now,
    );
    upsert(&mut status.conditions, updated);
}

/// The observed parts of status: state, members, offsets and lag.
pub fn fill_observed(status: &mut ConsumerGroupStatus, view: &GroupView) {
    status.state = Some(view.info.state.clone());
    status.member_count = Some(view.info.members.len() as i32);
    status.members = view
        .info
        .members
        .iter()
        .map(|m| GroupMember {
            member_id: m.member_id.clone(),
            group_instance_id: m.group_instance_id.clone(),
            client_id: m.client_id.clone(),
            host: m.host.clone(),
            assignments: m
                .assignment
                .iter()
                .map(|(topic, partitions)| TopicPartitions {
                    topic: topic.clone(),
                    partitions: partitions.clone(),
                })
                .collect(),
        })
        .collect();
    let (offsets, total) = lag(&view.committed, &view.log_end);
    status.offsets = offsets;
    status.total_lag = Some(total);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::future::Future;

    use http::{Method, StatusCode};
    use serde_json::{json, Value};

    use super::*;
    use crate::cluster::fixtures::{self, ApiServerVerifier};
    use crate::kafka::fake::{FakeGroup, FakeKafka};
    use crate::kafka::MemberInfo;

    const BASE: &str = "/apis/strom.dev/v1alpha1/namespaces/default";
    const NOW: &str = "2023-11-14T22:13:20Z";

    async fn within<F: Future>(future: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), future)
            .await
            .expect("the expected requests did not come in time")
    }

    fn group_object(spec: Value, status: Option<Value>) -> Value {
        let mut object = json!({
            "apiVersion": "strom.dev/v1alpha1",
            "kind": "ConsumerGroup",
            "metadata": {
                "name": "billing",
                "namespace": "default",
                "uid": "uid-billing",
                "generation": 2,
                "finalizers": [FINALIZER],
            },
            "spec": spec,
        });
        if let Some(status) = status {
            object["status"] = status;
        }
        object
    }

    fn group(spec: Value, status: Option<Value>) -> ConsumerGroup {
        serde_json::from_value(group_object(spec, status)).expect("valid ConsumerGroup")
    }

    /// Group `billing` on topic `events` (2 partitions, log ends 15 and 8), committed at
    /// 10 and 6, with `members`.
    fn kafka_with_group(kafka: &FakeKafka, members: Vec<MemberInfo>) {
        kafka.add_topic("events", 2, &[]);
        let mut state = kafka.state();
        let topic = state.topics.get_mut("events").unwrap();
        topic.offsets = BTreeMap::from([(0, (0, 15)), (1, (2, 8))]);
        state.groups.insert(
            "billing".into(),
            FakeGroup {
                state: if members.is_empty() {
                    "Empty"
                } else {
                    "Stable"
                }
                .into(),
                members,
                committed: BTreeMap::from([(("events".into(), 0), 10), (("events".into(), 1), 6)]),
            },
        );
    }

    fn member() -> MemberInfo {
        MemberInfo {
            member_id: "rdkafka-1".into(),
            group_instance_id: None,
            client_id: "rdkafka".into(),
            host: "/10.0.0.7".into(),
            assignment: BTreeMap::from([("events".into(), vec![0, 1])]),
        }
    }

    async fn expect_cluster(api: &mut ApiServerVerifier) {
        api.handle(
            Method::GET,
            &format!("{BASE}/kafkaclusters/dev"),
            StatusCode::OK,
            |_| {
                serde_json::to_value(fixtures::cluster(
                    json!({}),
                    Some(json!({"bootstrap": "dev-bootstrap.default.svc:9092"})),
                ))
                .unwrap()
            },
        )
        .await;
    }

    async fn expect_status(api: &mut ApiServerVerifier) -> Value {
        let seen = api
            .handle(
                Method::PATCH,
                &format!("{BASE}/consumergroups/billing/status"),
                StatusCode::OK,
                |seen| {
                    let mut answer = group_object(json!({"clusterRef": {"name": "dev"}}), None);
                    answer["status"] = seen.body["status"].clone();
                    answer
                },
            )
            .await;
        assert_eq!(seen.body["kind"], "ConsumerGroup");
        seen.body["status"].clone()
    }

    fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
        status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
            .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
    }

    #[tokio::test]
    async fn status_shows_state_members_offsets_and_lag() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        kafka_with_group(&pool.kafka, vec![member()]);
        let spec = json!({"clusterRef": {"name": "dev"}});
        let reconciling = tokio::spawn(reconcile(Arc::new(group(spec, None)), ctx));
        within(async {
            expect_cluster(&mut api).await;
            let status = expect_status(&mut api).await;
            assert_eq!(status["groupId"], "billing");
            assert_eq!(status["state"], "Stable");
            assert_eq!(status["memberCount"], 1);
            assert_eq!(
                status["members"],
                json!([{"memberId": "rdkafka-1", "clientId": "rdkafka", "host": "/10.0.0.7",
                        "assignments": [{"topic": "events", "partitions": [0, 1]}]}])
            );
            assert_eq!(
                status["offsets"],
                json!([
                    {"topic": "events", "partition": 0, "committedOffset": 10, "logEndOffset": 15, "lag": 5},
                    {"topic": "events", "partition": 1, "committedOffset": 6, "logEndOffset": 8, "lag": 2},
                ])
            );
            assert_eq!(status["totalLag"], 7);
            let ready = condition(&status, READY);
            assert_eq!((&ready["status"], &ready["reason"]), (&json!("True"), &json!("Observed")));
            assert!(status.get("lastReset").is_none());
            api.expect_nothing_more().await;
        })
        .await;
        let action = within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        assert_eq!(action, Action::requeue(REFRESH));
        assert!(pool.kafka.calls().is_empty(), "observing changes nothing");
    }

    #[tokio::test]
    async fn a_reset_of_an_empty_group_runs_once_and_records_before_and_after() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        kafka_with_group(&pool.kafka, vec![]);
        let spec = json!({"clusterRef": {"name": "dev"}, "offsetReset": {"id": "replay", "to": "Earliest", "topics": ["events"]}});
        let reconciling = tokio::spawn(reconcile(Arc::new(group(spec, None)), ctx));
        within(async {
            expect_cluster(&mut api).await;
            let status = expect_status(&mut api).await;
            let reset = &status["lastReset"];
            assert_eq!((&reset["id"], &reset["result"]), (&json!("replay"), &json!("Succeeded")));
            assert_eq!(reset["time"], NOW);
            assert_eq!(
                reset["offsetsBefore"],
                json!([{"topic": "events", "partition": 0, "offset": 10}, {"topic": "events", "partition": 1, "offset": 6}])
            );
            assert_eq!(
                reset["offsetsAfter"],
                json!([{"topic": "events", "partition": 0, "offset": 0}, {"topic": "events", "partition": 1, "offset": 2}])
            );
            assert_eq!(status["totalLag"], 15 + 6, "lag is read after the reset");
            assert_eq!(condition(&status, OFFSET_RESET)["status"], "True");
            let event = api.expect_event_about("billing").await;
            assert_eq!(event["reason"], "OffsetsReset");
        })
        .await;
        within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        assert_eq!(pool.kafka.calls().len(), 1, "{:?}", pool.kafka.calls());

        // With the outcome in status, the same id does not run again.
        let (ctx, mut api, _) = fixtures::context_with_kafka();
        let pool_again = pool.clone();
        let ctx = Arc::new(crate::cluster::reconcile::Context {
            client: ctx.client.clone(),
            recorder: ctx.recorder.clone(),
            defaults: ctx.defaults.clone(),
            metrics: ctx.metrics.clone(),
            now: ctx.now,
            kafka: Arc::new(pool_again),
        });
        let spec = json!({"clusterRef": {"name": "dev"}, "offsetReset": {"id": "replay", "to": "Earliest"}});
        let status = json!({"lastReset": {"id": "replay", "result": "Succeeded", "time": NOW}});
        let reconciling = tokio::spawn(reconcile(Arc::new(group(spec, Some(status))), ctx));
        within(async {
            expect_cluster(&mut api).await;
            let status = expect_status(&mut api).await;
            assert_eq!(status["lastReset"]["id"], "replay");
            api.expect_nothing_more().await;
        })
        .await;
        within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        assert_eq!(pool.kafka.calls().len(), 1, "no second commit");
    }

    #[tokio::test]
    async fn a_reset_of_an_active_group_is_refused() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        kafka_with_group(&pool.kafka, vec![member()]);
        let spec =
            json!({"clusterRef": {"name": "dev"}, "offsetReset": {"id": "replay", "to": "Latest"}});
        let reconciling = tokio::spawn(reconcile(Arc::new(group(spec, None)), ctx));
        within(async {
            expect_cluster(&mut api).await;
            let status = expect_status(&mut api).await;
            let reset = &status["lastReset"];
            assert_eq!(
                (&reset["id"], &reset["result"]),
                (&json!("replay"), &json!("Rejected"))
            );
            assert!(
                reset["message"]
                    .as_str()
                    .unwrap()
                    .contains("Stable with 1 active member(s)"),
                "{reset}"
            );
            assert!(reset.get("offsetsAfter").is_none());
            let refused = condition(&status, OFFSET_RESET);
            assert_eq!(
                (&refused["status"], &refused["reason"]),
                (&json!("False"), &json!("GroupNotEmpty"))
            );
            assert_eq!(status["totalLag"], 7, "offsets unchanged");
            let event = api.expect_event_about("billing").await;
            assert_eq!(
                (&event["type"], &event["reason"]),
                (&json!("Warning"), &json!("OffsetResetRejected"))
            );
        })
        .await;
        within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        assert!(pool.kafka.calls().is_empty());
    }

    #[tokio::test]
    async fn a_reset_waits_for_its_topic() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        kafka_with_group(&pool.kafka, vec![]);
        let spec = json!({"clusterRef": {"name": "dev"}, "offsetReset": {"id": "early", "to": "Earliest", "topics": ["later"]}});
        let reconciling = tokio::spawn(reconcile(Arc::new(group(spec, None)), ctx));
        within(async {
            expect_cluster(&mut api).await;
            let status = expect_status(&mut api).await;
            assert!(status.get("lastReset").is_none(), "still pending: {status}");
            let waiting = condition(&status, OFFSET_RESET);
            assert_eq!(
                (&waiting["status"], &waiting["reason"]),
                (&json!("False"), &json!("TopicNotFound"))
            );
            assert_eq!(condition(&status, READY)["status"], "True");
            let event = api.expect_event_about("billing").await;
            assert_eq!(
                (&event["type"], &event["reason"]),
                (&json!("Warning"), &json!("OffsetResetWaiting"))
            );
        })
        .await;
        within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        assert!(pool.kafka.calls().is_empty());
    }

    fn deleting(policy: &str) -> ConsumerGroup {
        let mut object = group_object(
            json!({"clusterRef": {"name": "dev"}, "deletionPolicy": policy}),
            None,
        );
        object["metadata"]["deletionTimestamp"] = json!("2024-02-01T00:00:00Z");
        serde_json::from_value(object).unwrap()
    }

    #[tokio::test]
    async fn deleting_with_policy_delete_waits_for_the_members_to_leave() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        kafka_with_group(&pool.kafka, vec![member()]);
        let reconciling = tokio::spawn(reconcile(Arc::new(deleting("Delete")), ctx.clone()));
        let waiting = within(async {
            expect_cluster(&mut api).await;
            // Status shows the group as it is and why the deletion waits.
            let status = expect_status(&mut api).await;
            assert_eq!(status["memberCount"], 1);
            assert_eq!(status["state"], "Stable");
            assert_eq!(status["totalLag"], 7);
            let ready = &status["conditions"][0];
            assert_eq!(
                (&ready["type"], &ready["status"]),
                (&json!("Ready"), &json!("False"))
            );
            assert_eq!(ready["reason"], "DeletionWaiting");
            let message = ready["message"].as_str().unwrap();
            assert!(
                message.contains("once its 1 active members (clients: rdkafka) have left"),
                "{message}"
            );
            let event = api.expect_event_about("billing").await;
            assert_eq!(
                (&event["type"], &event["reason"]),
                (&json!("Warning"), &json!("DeletionWaiting"))
            );
            // No finalizer removal: the resource stays while Kafka refuses.
            api.expect_nothing_more().await;
            status
        })
        .await;
        let result = within(reconciling).await.unwrap();
        let err = result.expect_err("the finalizer stays while the deletion waits");
        assert!(matches!(err, Error::DeletionWaiting(_)), "{err:?}");
        assert_eq!(
            error_policy(Arc::new(deleting("Delete")), &err, ctx.clone()),
            Action::requeue(REFRESH)
        );

        // Still waiting: status is refreshed, no second event.
        let mut object = serde_json::to_value(deleting("Delete")).unwrap();
        object["status"] = waiting;
        let still: ConsumerGroup = serde_json::from_value(object).unwrap();
        let reconciling = tokio::spawn(reconcile(Arc::new(still), ctx.clone()));
        within(async {
            expect_cluster(&mut api).await;
            expect_status(&mut api).await;
            api.expect_nothing_more().await;
        })
        .await;
        assert!(within(reconciling).await.unwrap().is_err());

        // Once the members are gone the group and its offsets are deleted.
        pool.kafka
            .state()
            .groups
            .get_mut("billing")
            .unwrap()
            .members
            .clear();
        let reconciling = tokio::spawn(reconcile(Arc::new(deleting("Delete")), ctx));
        within(async {
            expect_cluster(&mut api).await;
            let event = api.expect_event_about("billing").await;
            assert_eq!(event["reason"], "GroupDeleted");
            let seen = api
                .handle(
                    Method::PATCH,
                    &format!("{BASE}/consumergroups/billing"),
                    StatusCode::OK,
                    |_| group_object(json!({"clusterRef": {"name": "dev"}}), None),
                )
                .await;
            assert_eq!(
                seen.body[1],
                json!({"op": "remove", "path": "/metadata/finalizers/0"})
            );
        })
        .await;
        within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        assert_eq!(pool.kafka.calls(), ["delete group billing"]);
    }

    #[tokio::test]
    async fn deleting_with_policy_retain_keeps_the_offsets() {
        let (ctx, mut api, pool) = fixtures::context_with_kafka();
        kafka_with_group(&pool.kafka, vec![]);
        let reconciling = tokio::spawn(reconcile(Arc::new(deleting("Retain")), ctx));
        within(async {
            api.handle(
                Method::PATCH,
                &format!("{BASE}/consumergroups/billing"),
                StatusCode::OK,
                |_| group_object(json!({"clusterRef": {"name": "dev"}}), None),
            )
            .await;
        })
        .await;
        within(reconciling)
            .await
            .unwrap()
            .expect("reconcile succeeds");
        assert!(pool.kafka.calls().is_empty());
        assert!(pool.kafka.state().groups.contains_key("billing"));
    }
}
