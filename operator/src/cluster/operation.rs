//! The KafkaCluster controller's next data move, as a pure function of what it observed:
//! which brokers a scale-down removes, whether they are drained, whether added brokers
//! want a rebalance, and how a running operation stands. The shell (`reconcile`) carries
//! the step out with `strom_client::rebalance`.
//!
//! Nothing here keeps a plan across reconciles: Kafka's reassignments are the moves in
//! flight, and a plan made again after they finish is empty (the planner moves nothing
//! that need not move), so an operator restarted at any step continues from Kafka's state
//! and `status.operation`.

use std::collections::{BTreeMap, BTreeSet};

use strom_core::BrokerId;

use super::layout::Layout;
use crate::crd::{OperationKind, OperationPhase, OperationStatus};
use crate::kafka::ClusterView;

/// What Kafka showed this reconcile.
#[derive(Debug, Clone, Default)]
pub struct KafkaView {
    pub cluster: ClusterView,
    /// Partitions with a reassignment in progress.
    pub reassigning: BTreeSet<(String, i32)>,
    /// Replicas each broker still holds on disk (DescribeLogDirs), for brokers being
    /// removed; a broker that cannot be asked is absent.
    pub on_disk: BTreeMap<BrokerId, usize>,
}

/// The next thing to do about data placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to move.
    Idle,
    /// Nothing can be decided yet; the reason is shown.
    Wait(String),
    /// The running operation's reassignments are still in progress.
    Follow { remaining: usize },
    /// The running operation's reassignments are done: clear its throttles, complete it.
    Finish,
    /// Empty these brokers (reassign every replica off them).
    Drain(Vec<BrokerId>),
    /// The brokers being removed hold nothing: the StatefulSets may shrink.
    Release,
    /// A drain that cannot complete; the message says what to change.
    Blocked(String),
    /// Spread partitions onto these brokers (added, holding nothing), and bring internal
    /// topics up to the cluster's replication factor.
    Rebalance(Vec<BrokerId>),
}

/// The brokers a scale-down removes: in each rack, the ordinals from the desired size up
/// to the current one. The layout spreads brokers evenly with earlier racks taking the
/// remainder, so shrinking takes the highest ordinals of the largest racks first and keeps
/// the racks balanced.
pub fn removed_brokers(desired: &Layout, current: &BTreeMap<String, i32>) -> Vec<BrokerId> {
    desired
        .racks
        .iter()
        .flat_map(|rack| {
            let now = current.get(&rack.statefulset).copied().unwrap_or(0);
            (rack.replicas..now.max(rack.replicas)).map(move |ordinal| rack.id_base + ordinal)
        })
        .collect()
}

/// Replicas of every broker in Metadata, with the partitions each leads.
pub fn replica_counts(cluster: &ClusterView) -> BTreeMap<BrokerId, (usize, usize)> {
    let mut counts: BTreeMap<BrokerId, (usize, usize)> =
        cluster.brokers.iter().map(|b| (b.id, (0, 0))).collect();
    for t in &cluster.topics {
        for p in &t.partitions {
            for r in &p.replicas {
                counts.entry(*r).or_default().0 += 1;
            }
            if p.leader >= 0 {
                counts.entry(p.leader).or_default().1 += 1;
            }
        }
    }
    counts
}

/// Internal topics whose replication factor is below `target`, when enough brokers are
/// live to give it to them (a cluster grown from one broker keeps `__consumer_offsets` at
/// one replica otherwise).
pub fn internal_topics_to_raise(cluster: &ClusterView, target: i32) -> BTreeMap<String, i32> {
    if (cluster.brokers.len() as i32) < target {
        return BTreeMap::new();
    }
    cluster
        .topics
        .iter()
        .filter(|t| t.is_internal)
        .filter(|t| {
            t.partitions
                .iter()
                .any(|p| (p.replicas.len() as i32) < target)
        })
        .map(|t| (t.name.clone(), target))
        .collect()
}

/// Decides the next step. `desired`: the spec's layout; `current`: broker StatefulSet
/// sizes now; `ready`: whether every desired broker's pod is ready; `internal_rf`: the
/// replication factor internal topics should have.
pub fn next_step(
    desired: &Layout,
    current: &BTreeMap<String, i32>,
    ready: bool,
    kafka: Option<&KafkaView>,
    operation: Option<&OperationStatus>,
    internal_rf: i32,
) -> Step {
    let removed = removed_brokers(desired, current);
    let moving = |op: &OperationStatus| op.phase == OperationPhase::Moving;
    if operation.is_some_and(|op| moving(op) && op.kind == OperationKind::Roll) {
        // One thing at a time: data moves wait for the roll.
        return if removed.is_empty() {
            Step::Idle
        } else {
            Step::Wait("a rolling restart is in progress; the drain starts after it".into())
        };
    }
    let running = operation.is_some_and(moving);
    let Some(kafka) = kafka else {
        return if removed.is_empty() && !running {
            Step::Idle
        } else {
            Step::Wait("no broker answers: data moves wait for the cluster".to_owned())
        };
    };
    if running {
        return if kafka.reassigning.is_empty() {
            Step::Finish
        } else {
            Step::Follow {
                remaining: kafka.reassigning.len(),
            }
        };
    }
    let counts = replica_counts(&kafka.cluster);
    if !removed.is_empty() {
        let holding: Vec<BrokerId> = removed
            .iter()
            .copied()
            .filter(|b| {
                counts.get(b).is_some_and(|(replicas, _)| *replicas > 0)
                    || kafka.on_disk.get(b).is_some_and(|n| *n > 0)
            })
            .collect();
        if holding.is_empty() {
            return Step::Release;
        }
        if !kafka.reassigning.is_empty() {
            return Step::Wait(format!(
                "{} reassignments not started by the operator are in progress; the drain starts after them",
                kafka.reassigning.len()
            ));
        }
        let removed_set: BTreeSet<BrokerId> = removed.iter().copied().collect();
        let staying = kafka
            .cluster
            .brokers
            .iter()
            .filter(|b| !removed_set.contains(&b.id))
            .count();
        if let Some((topic, rf)) = kafka
            .cluster
            .topics
            .iter()
            .map(|t| {
                let rf = t.partitions.iter().map(|p| p.replicas.len()).max();
                (t.name.as_str(), rf.unwrap_or(0))
            })
            .find(|(_, rf)| *rf > staying)
        {
            return Step::Blocked(format!(
                "topic {topic} has {rf} replicas per partition but only {staying} brokers would remain: \
                 lower its replication factor or keep more brokers"
            ));
        }
        return Step::Drain(removed);
    }
    if !kafka.reassigning.is_empty() || !ready {
        return Step::Idle;
    }
    let live: BTreeSet<BrokerId> = kafka.cluster.brokers.iter().map(|b| b.id).collect();
    let desired_ids: Vec<BrokerId> = desired.brokers().iter().map(|b| b.id).collect();
    if !desired_ids.iter().all(|id| live.contains(id)) {
        return Step::Wait("brokers are still registering with the controller".to_owned());
    }
    let any_partition = counts.values().any(|(replicas, _)| *replicas > 0);
    let empty: Vec<BrokerId> = desired_ids
        .into_iter()
        .filter(|id| counts.get(id).is_none_or(|(replicas, _)| *replicas == 0))
        .collect();
    let raise = internal_topics_to_raise(&kafka.cluster, internal_rf);
    if (any_partition && !empty.is_empty()) || !raise.is_empty() {
        // An operation that was just completed or blocked for these same brokers is not
        // started again: a plan that moved nothing onto them (too few partitions) stays done.
        let same_as_last = operation.is_some_and(|op| {
            op.phase == OperationPhase::Completed && op.brokers == empty && raise.is_empty()
        });
        if !same_as_last {
            return Step::Rebalance(empty);
        }
    }
    Step::Idle
}

/// A short, stable digest of a plan's moves, for `spec.rebalance.approve`.
pub fn plan_id(plan: &strom_core::rebalance::Plan) -> String {
    // FNV-1a over the changes: stable across runs and platforms, unlike the std hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for c in &plan.changes {
        let line = format!(
            "{}/{}:{:?}->{:?};",
            c.topic, c.partition, c.current, c.target
        );
        for byte in line.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{:016x}", hash)[..10].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{KafkaCluster, KafkaClusterSpec, RacksSpec};
    use crate::kafka::{BrokerInfo, PartitionInfo, TopicInfo};

    fn layout(brokers: i32, racks: &[&str]) -> Layout {
        let mut spec: KafkaClusterSpec = serde_json::from_value(serde_json::json!({})).unwrap();
        spec.brokers = brokers;
        spec.racks = Some(RacksSpec {
            node_label: "zone".into(),
            names: racks.iter().map(|r| r.to_string()).collect(),
        });
        Layout::of(&KafkaCluster::new("k", spec))
    }

    fn sets(sizes: &[i32]) -> BTreeMap<String, i32> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("k-broker-{i}"), *n))
            .collect()
    }

    /// Brokers `ids` live; topic `t` with one partition per assignment.
    fn view(ids: &[BrokerId], assignment: &[&[BrokerId]]) -> KafkaView {
        KafkaView {
            cluster: ClusterView {
                cluster_id: Some("c".into()),
                brokers: ids
                    .iter()
                    .map(|id| BrokerInfo {
                        id: *id,
                        rack: None,
                    })
                    .collect(),
                topics: vec![TopicInfo {
                    name: "t".into(),
                    topic_id: "id".into(),
                    is_internal: false,
                    partitions: assignment
                        .iter()
                        .enumerate()
                        .map(|(p, r)| PartitionInfo {
                            partition: p as i32,
                            leader: r[0],
                            replicas: r.to_vec(),
                            isr: r.to_vec(),
                        })
                        .collect(),
                }],
            },
            ..KafkaView::default()
        }
    }

    fn operation(
        kind: OperationKind,
        phase: OperationPhase,
        brokers: &[BrokerId],
    ) -> OperationStatus {
        OperationStatus {
            partitions_total: 1,
            ..OperationStatus::new(kind, phase, brokers, None)
        }
    }

    #[test]
    fn a_scale_down_removes_the_highest_ordinals_of_the_largest_racks() {
        // 7 brokers over 3 racks are 3+2+2; 5 are 2+2+1: rack 0 loses its ordinal 2 and
        // rack 2 its ordinal 1.
        let removed = removed_brokers(&layout(5, &["a", "b", "c"]), &sets(&[3, 2, 2]));
        assert_eq!(removed, [2, 2001]);
        assert!(removed_brokers(&layout(7, &["a", "b", "c"]), &sets(&[3, 2, 2])).is_empty());
        // Growing removes nothing.
        assert!(removed_brokers(&layout(9, &["a", "b", "c"]), &sets(&[3, 2, 2])).is_empty());
    }

    #[test]
    fn brokers_that_hold_replicas_are_drained_before_the_statefulset_shrinks() {
        let desired = layout(3, &["a", "b", "c"]);
        let current = sets(&[2, 2, 2]);
        let kafka = view(
            &[0, 1, 1000, 1001, 2000, 2001],
            &[&[0, 1000, 2000], &[1, 1001, 2001]],
        );
        let step = next_step(&desired, &current, true, Some(&kafka), None, 3);
        assert_eq!(step, Step::Drain(vec![1, 1001, 2001]));
    }

    #[test]
    fn drained_brokers_are_released_only_once_empty_on_disk_too() {
        let desired = layout(3, &["a", "b", "c"]);
        let current = sets(&[2, 2, 2]);
        let mut kafka = view(
            &[0, 1, 1000, 1001, 2000, 2001],
            &[&[0, 1000, 2000], &[0, 1000, 2000]],
        );
        kafka.on_disk = BTreeMap::from([(1, 1), (1001, 0), (2001, 0)]);
        // Metadata says empty, but broker 1 has not dropped its copy yet.
        assert_eq!(
            next_step(&desired, &current, true, Some(&kafka), None, 3),
            Step::Drain(vec![1, 1001, 2001])
        );
        kafka.on_disk.insert(1, 0);
        assert_eq!(
            next_step(&desired, &current, true, Some(&kafka), None, 3),
            Step::Release
        );
    }

    #[test]
    fn a_drain_that_would_leave_fewer_brokers_than_replicas_is_blocked() {
        let desired = layout(2, &["a", "b", "c"]);
        let current = sets(&[1, 1, 1]);
        let kafka = view(&[0, 1000, 2000], &[&[0, 1000, 2000]]);
        let Step::Blocked(message) = next_step(&desired, &current, true, Some(&kafka), None, 3)
        else {
            panic!("not blocked");
        };
        assert!(
            message
                .contains("topic t has 3 replicas per partition but only 2 brokers would remain"),
            "{message}"
        );
    }

    #[test]
    fn a_running_operation_is_followed_until_kafka_has_no_reassignment_left() {
        let desired = layout(3, &["a", "b", "c"]);
        let current = sets(&[2, 2, 2]);
        let mut kafka = view(&[0, 1, 1000, 1001, 2000, 2001], &[&[0, 1000, 2000]]);
        kafka.reassigning.insert(("t".into(), 0));
        let op = operation(
            OperationKind::Drain,
            OperationPhase::Moving,
            &[1, 1001, 2001],
        );
        assert_eq!(
            next_step(&desired, &current, true, Some(&kafka), Some(&op), 3),
            Step::Follow { remaining: 1 }
        );
        kafka.reassigning.clear();
        assert_eq!(
            next_step(&desired, &current, true, Some(&kafka), Some(&op), 3),
            Step::Finish
        );
        // Without Kafka a running operation waits rather than finishing blind.
        assert!(matches!(
            next_step(&desired, &current, true, None, Some(&op), 3),
            Step::Wait(_)
        ));
    }

    #[test]
    fn reassignments_started_by_someone_else_delay_a_drain() {
        let desired = layout(3, &["a", "b", "c"]);
        let current = sets(&[2, 2, 2]);
        let mut kafka = view(&[0, 1, 1000, 1001, 2000, 2001], &[&[1, 1000, 2000]]);
        kafka.reassigning.insert(("t".into(), 0));
        assert!(matches!(
            next_step(&desired, &current, true, Some(&kafka), None, 3),
            Step::Wait(_)
        ));
    }

    #[test]
    fn added_brokers_holding_nothing_get_a_rebalance_once_all_are_up() {
        let desired = layout(6, &["a", "b", "c"]);
        let current = sets(&[2, 2, 2]);
        let kafka = view(
            &[0, 1, 1000, 1001, 2000, 2001],
            &[&[0, 1000, 2000], &[0, 1000, 2000]],
        );
        assert_eq!(
            next_step(&desired, &current, true, Some(&kafka), None, 3),
            Step::Rebalance(vec![1, 1001, 2001])
        );
        // Pods not ready yet, or a broker not registered: nothing starts.
        assert_eq!(
            next_step(&desired, &current, false, Some(&kafka), None, 3),
            Step::Idle
        );
        let partial = view(&[0, 1, 1000, 2000], &[&[0, 1000, 2000]]);
        assert!(matches!(
            next_step(&desired, &current, true, Some(&partial), None, 3),
            Step::Wait(_)
        ));
        // The same brokers after a completed rebalance that could give them nothing.
        let done = operation(
            OperationKind::Rebalance,
            OperationPhase::Completed,
            &[1, 1001, 2001],
        );
        assert_eq!(
            next_step(&desired, &current, true, Some(&kafka), Some(&done), 3),
            Step::Idle
        );
    }

    #[test]
    fn data_moves_wait_for_a_rolling_restart() {
        let roll = operation(OperationKind::Roll, OperationPhase::Moving, &[0]);
        let kafka = view(&[0, 1, 1000, 1001, 2000, 2001], &[&[0, 1000, 2000]]);
        let six = layout(6, &["a", "b", "c"]);
        assert_eq!(
            next_step(&six, &sets(&[2, 2, 2]), true, Some(&kafka), Some(&roll), 3),
            Step::Idle
        );
        let three = layout(3, &["a", "b", "c"]);
        assert!(matches!(
            next_step(
                &three,
                &sets(&[2, 2, 2]),
                true,
                Some(&kafka),
                Some(&roll),
                3
            ),
            Step::Wait(_)
        ));
    }

    #[test]
    fn a_balanced_cluster_needs_nothing() {
        let desired = layout(3, &["a", "b", "c"]);
        let kafka = view(&[0, 1000, 2000], &[&[0, 1000, 2000]]);
        assert_eq!(
            next_step(&desired, &sets(&[1, 1, 1]), true, Some(&kafka), None, 3),
            Step::Idle
        );
        assert_eq!(
            next_step(&desired, &sets(&[1, 1, 1]), true, None, None, 3),
            Step::Idle
        );
    }

    #[test]
    fn internal_topics_are_raised_to_the_cluster_replication_factor() {
        let desired = layout(3, &["a", "b", "c"]);
        let mut kafka = view(&[0, 1000, 2000], &[&[0, 1000, 2000]]);
        kafka.cluster.topics.push(TopicInfo {
            name: "__consumer_offsets".into(),
            topic_id: "o".into(),
            is_internal: true,
            partitions: vec![PartitionInfo {
                partition: 0,
                leader: 0,
                replicas: vec![0],
                isr: vec![0],
            }],
        });
        assert_eq!(
            internal_topics_to_raise(&kafka.cluster, 3),
            BTreeMap::from([("__consumer_offsets".to_owned(), 3)])
        );
        assert_eq!(
            next_step(&desired, &sets(&[1, 1, 1]), true, Some(&kafka), None, 3),
            Step::Rebalance(vec![])
        );
        // Not with fewer live brokers than the target.
        assert!(internal_topics_to_raise(&kafka.cluster, 4).is_empty());
    }
}
