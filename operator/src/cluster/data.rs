//! The Kafka side of a KafkaCluster reconcile: observe brokers, partitions and
//! reassignments, take the step `operation::next_step` decides (plan and start a drain or
//! a rebalance with strom-core's planner, follow it, clear its throttles), and say what
//! `status.operation` becomes and which events to publish.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use strom_client::rebalance::{self, RebalanceError};
use strom_core::rebalance::{Goals, Plan};
use strom_core::BrokerId;
use tracing::warn;

use super::layout::Layout;
use super::operation::{self, internal_topics_to_raise, plan_id, KafkaView, Step};
use crate::crd::{KafkaCluster, OperationKind, OperationPhase, OperationStatus, RebalanceMode};
use crate::kafka::{AdminError, KafkaAdmin};

/// What the data step leaves for the rest of reconcile.
#[derive(Debug, Default)]
pub struct Outcome {
    /// What Kafka showed, for status.
    pub kafka: Option<KafkaView>,
    /// The new `status.operation` (the previous one when nothing changed).
    pub operation: Option<OperationStatus>,
    /// Whether drained brokers may go: the StatefulSets shrink to the spec.
    pub release: bool,
    /// Why the scale-down is held, when it is.
    pub hold_reason: Option<String>,
    /// Events to publish: (type, reason, note).
    pub events: Vec<(EventType, &'static str, String)>,
}

/// Reads what the next step needs from Kafka. `removed`: brokers a scale-down takes away,
/// whose log dirs are asked too.
pub async fn observe(
    admin: &dyn KafkaAdmin,
    removed: &[BrokerId],
) -> Result<KafkaView, AdminError> {
    let cluster = admin.describe_cluster().await?;
    let reassigning = admin
        .list_partition_reassignments()
        .await?
        .into_iter()
        .map(|r| (r.topic, r.partition))
        .collect();
    let live: BTreeSet<BrokerId> = cluster.brokers.iter().map(|b| b.id).collect();
    let mut on_disk = BTreeMap::new();
    for b in removed.iter().filter(|b| live.contains(b)) {
        on_disk.insert(*b, admin.replica_sizes(*b).await?.len());
    }
    Ok(KafkaView {
        cluster,
        reassigning,
        on_disk,
    })
}

/// Decides and carries out this reconcile's data step.
pub async fn step(
    cluster: &KafkaCluster,
    desired: &Layout,
    current: &BTreeMap<String, i32>,
    ready: bool,
    admin: Option<&dyn KafkaAdmin>,
    internal_rf: i32,
    now: Timestamp,
) -> Outcome {
    let previous = cluster.status.as_ref().and_then(|s| s.operation.clone());
    let removed = operation::removed_brokers(desired, current);
    let kafka = match admin {
        Some(admin) => match observe(admin, &removed).await {
            Ok(view) => Some(view),
            Err(err) => {
                warn!(cause = %err, "observing Kafka failed");
                None
            }
        },
        None => None,
    };
    let decided = operation::next_step(
        desired,
        current,
        ready,
        kafka.as_ref(),
        previous.as_ref(),
        internal_rf,
    );
    let mut out = Outcome {
        operation: previous.clone(),
        ..Outcome::default()
    };
    let spec = &cluster.spec.rebalance;
    let time = Time(now);
    match decided {
        Step::Idle => {}
        Step::Wait(reason) => {
            if !removed.is_empty() {
                out.hold_reason = Some(reason);
            }
        }
        Step::Release => out.release = true,
        Step::Blocked(message) => {
            out.hold_reason = Some(message.clone());
            let op = OperationStatus {
                message: message.clone(),
                ..new_operation(
                    OperationKind::Drain,
                    OperationPhase::Blocked,
                    &removed,
                    &time,
                )
            };
            if previous.as_ref().map(|p| (&p.phase, &p.message)) != Some((&op.phase, &op.message)) {
                out.events
                    .push((EventType::Warning, "RebalanceFailed", message));
            }
            out.operation = Some(op);
        }
        Step::Follow { remaining } => {
            if let Some(mut op) = previous.clone() {
                let total = op.partitions_total.max(0) as usize;
                let done = total.saturating_sub(remaining) as i32;
                if done > op.partitions_done {
                    op.partitions_done = done;
                    op.bytes_moved = moved_bytes(&op);
                    op.last_progress = Some(time.clone());
                    out.events.push((
                        EventType::Normal,
                        "RebalanceProgress",
                        format!("{:?}: {done}/{total} partitions moved", op.kind),
                    ));
                }
                op.message = format!("{remaining} reassignments in progress");
                if !removed.is_empty() {
                    out.hold_reason = Some(format!("draining brokers {:?}", op.brokers));
                }
                out.operation = Some(op);
            }
        }
        Step::Finish => {
            let (Some(admin), Some(mut op)) = (admin, previous.clone()) else {
                return out;
            };
            if let Err(err) =
                rebalance::clear_throttles_of(admin, &op.throttled_topics, &op.throttled_brokers)
                    .await
            {
                warn!(cause = %err, "clearing throttles failed; retried next reconcile");
                return out;
            }
            op.phase = OperationPhase::Completed;
            op.partitions_done = op.partitions_total;
            op.bytes_moved = op.bytes_total;
            op.last_progress = Some(time.clone());
            op.message = "every partition is on its target; throttles cleared".to_owned();
            op.throttled_topics.clear();
            op.throttled_brokers.clear();
            out.events.push((
                EventType::Normal,
                "RebalanceCompleted",
                format!(
                    "{:?} of brokers {:?}: {} partitions moved",
                    op.kind, op.brokers, op.partitions_total
                ),
            ));
            if !removed.is_empty() {
                out.hold_reason =
                    Some("drained; the brokers go once their log dirs are empty".into());
            }
            out.operation = Some(op);
        }
        Step::Drain(brokers) => {
            out.hold_reason = Some(format!("draining brokers {brokers:?}"));
            let goals = Goals {
                drain: brokers.iter().copied().collect(),
                ..Goals::default()
            };
            if let Some(admin) = admin {
                start(
                    admin,
                    OperationKind::Drain,
                    &brokers,
                    &goals,
                    spec.throttle_bytes_per_second,
                    previous.as_ref(),
                    &time,
                    &mut out,
                )
                .await;
            }
        }
        Step::Rebalance(brokers) => {
            let Some(admin) = admin else { return out };
            let raise = kafka
                .as_ref()
                .map(|k| internal_topics_to_raise(&k.cluster, internal_rf))
                .unwrap_or_default();
            let goals = Goals {
                balance: true,
                replication_factors: raise,
                ..Goals::default()
            };
            if spec.mode == RebalanceMode::Manual {
                match rebalance::plan(admin, &goals).await {
                    Ok(plan) if plan.is_empty() => {
                        out.operation = Some(completed_empty(&brokers, &time));
                    }
                    Ok(plan) => {
                        let id = plan_id(&plan);
                        if spec.approve.as_deref() == Some(id.as_str()) {
                            start_plan(
                                admin,
                                OperationKind::Rebalance,
                                &brokers,
                                &plan,
                                spec.throttle_bytes_per_second,
                                &time,
                                &mut out,
                            )
                            .await;
                        } else {
                            let op = OperationStatus {
                                plan_id: Some(id.clone()),
                                message: format!(
                                    "planned {} partition moves ({} bytes); set spec.rebalance.approve to {id} to start",
                                    plan.changes.len(),
                                    plan.bytes_to_move()
                                ),
                                ..totals(new_operation(OperationKind::Rebalance, OperationPhase::AwaitingApproval, &brokers, &time), &plan)
                            };
                            if previous.as_ref().and_then(|p| p.plan_id.as_deref())
                                != Some(id.as_str())
                            {
                                out.events.push((
                                    EventType::Normal,
                                    "RebalancePlanned",
                                    op.message.clone(),
                                ));
                            }
                            out.operation = Some(op);
                        }
                    }
                    Err(err) => fail(OperationKind::Rebalance, &brokers, &err, &time, &mut out),
                }
            } else {
                start(
                    admin,
                    OperationKind::Rebalance,
                    &brokers,
                    &goals,
                    spec.throttle_bytes_per_second,
                    previous.as_ref(),
                    &time,
                    &mut out,
                )
                .await;
            }
        }
    }
    out.kafka = kafka;
    out
}

/// Plans `goals` and starts the plan; an empty plan completes at once.
#[allow(clippy::too_many_arguments)]
async fn start(
    admin: &dyn KafkaAdmin,
    kind: OperationKind,
    brokers: &[BrokerId],
    goals: &Goals,
    throttle: i64,
    previous: Option<&OperationStatus>,
    time: &Time,
    out: &mut Outcome,
) {
    match rebalance::plan(admin, goals).await {
        Ok(plan) if plan.is_empty() => {
            // A drain whose brokers still hold data on disk (Metadata already moved
            // them off): nothing to plan, the brokers delete their copies shortly.
            if kind == OperationKind::Rebalance
                && previous
                    .is_none_or(|p| p.phase != OperationPhase::Completed || p.brokers != brokers)
            {
                out.operation = Some(completed_empty(brokers, time));
            }
        }
        Ok(plan) => start_plan(admin, kind, brokers, &plan, throttle, time, out).await,
        Err(err) => fail(kind, brokers, &err, time, out),
    }
}

async fn start_plan(
    admin: &dyn KafkaAdmin,
    kind: OperationKind,
    brokers: &[BrokerId],
    plan: &Plan,
    throttle: i64,
    time: &Time,
    out: &mut Outcome,
) {
    let mut op = totals(
        new_operation(kind, OperationPhase::Moving, brokers, time),
        plan,
    );
    op.plan_id = Some(plan_id(plan));
    // Recorded before the throttles are set, so that a failure half-way still clears
    // whatever was set.
    op.throttled_topics = rebalance::throttled_replicas(plan).into_keys().collect();
    op.throttled_brokers = rebalance::moving_brokers(plan).into_iter().collect();
    match rebalance::execute(admin, plan, u64::try_from(throttle).ok()).await {
        Ok(()) => {
            op.message = format!(
                "moving {} partitions ({} bytes) at most {throttle} bytes/s per broker",
                plan.changes.len(),
                plan.bytes_to_move()
            );
            out.events.push((
                EventType::Normal,
                "RebalanceStarted",
                format!("{kind:?} of brokers {brokers:?}: {}", op.message),
            ));
            out.operation = Some(op);
        }
        Err(err) => {
            // Moving, so that the next reconcile follows whatever did start and clears
            // the throttles at the end.
            op.message = format!("starting the moves failed, following what started: {err}");
            out.events
                .push((EventType::Warning, "RebalanceFailed", op.message.clone()));
            out.operation = Some(op);
        }
    }
}

fn fail(
    kind: OperationKind,
    brokers: &[BrokerId],
    err: &RebalanceError,
    time: &Time,
    out: &mut Outcome,
) {
    let message = format!("planning failed: {err}");
    out.events
        .push((EventType::Warning, "RebalanceFailed", message.clone()));
    out.operation = Some(OperationStatus {
        message,
        ..new_operation(kind, OperationPhase::Failed, brokers, time)
    });
}

fn new_operation(
    kind: OperationKind,
    phase: OperationPhase,
    brokers: &[BrokerId],
    time: &Time,
) -> OperationStatus {
    OperationStatus::new(kind, phase, brokers, Some(time.clone()))
}

fn completed_empty(brokers: &[BrokerId], time: &Time) -> OperationStatus {
    OperationStatus {
        message: "the cluster is balanced: nothing to move".to_owned(),
        ..new_operation(
            OperationKind::Rebalance,
            OperationPhase::Completed,
            brokers,
            time,
        )
    }
}

fn totals(mut op: OperationStatus, plan: &Plan) -> OperationStatus {
    op.partitions_total = plan.changes.len() as i32;
    op.bytes_total = i64::try_from(plan.bytes_to_move()).unwrap_or(i64::MAX);
    op
}

/// Bytes copied so far, estimated from finished partitions (Kafka reports no per-move
/// byte counts).
fn moved_bytes(op: &OperationStatus) -> i64 {
    if op.partitions_total <= 0 {
        return 0;
    }
    (op.bytes_total as i128 * op.partitions_done as i128 / op.partitions_total as i128) as i64
}
