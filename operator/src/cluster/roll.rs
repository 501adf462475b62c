//! Which pod a rolling restart replaces next, and whether that is safe, as a pure
//! function of the pods and the partitions' ISRs: the rules of issue 13's rolling
//! restart. Reconcile deletes the pod it names (the StatefulSets are `OnDelete`), and
//! status reports the decision.

use std::collections::BTreeSet;

use strom_core::BrokerId;

use crate::kafka::ClusterView;

/// One pod of the cluster as the roll sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodState {
    pub name: String,
    pub id: BrokerId,
    pub controller: bool,
    pub ready: bool,
    /// Runs an older template than its StatefulSet's.
    pub outdated: bool,
    /// Deleted and not gone yet: its replacement is on the way.
    pub terminating: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollStep {
    /// No pod runs an outdated template.
    UpToDate,
    /// Replace this pod now.
    Restart { pod: String, why: String },
    /// An outdated pod exists, but replacing any now would be unsafe.
    Wait(String),
}

/// The next pod to replace. `min_isr(topic)`: the topic's `min.insync.replicas`;
/// `active_controller`: the quorum leader, restarted after the other voters.
///
/// In order: an outdated pod that is not ready may always be replaced (a bad spec can be
/// fixed); otherwise nothing while any pod is not ready (the last one replaced is coming
/// back); controllers before brokers, one at a time, the active one last; a broker only
/// when every partition's ISR is whole again (the previous broker rejoined) and no
/// partition it is in sync for would drop below `min.insync.replicas` without it.
/// Partitions with no more replicas than `min.insync.replicas` cannot stay writable
/// through any restart and do not hold the roll back.
pub fn next_restart(
    pods: &[PodState],
    kafka: Option<&ClusterView>,
    min_isr: &dyn Fn(&str) -> i32,
    active_controller: Option<BrokerId>,
) -> RollStep {
    let mut outdated: Vec<&PodState> = pods.iter().filter(|p| p.outdated).collect();
    if outdated.is_empty() {
        return RollStep::UpToDate;
    }
    outdated.sort_by_key(|p| (!p.controller, Some(p.id) == active_controller, p.id));
    if let Some(stuck) = outdated.iter().find(|p| !p.ready && !p.terminating) {
        return RollStep::Restart {
            pod: stuck.name.clone(),
            why: "out of date and not ready: replaced so that a fixed spec takes effect".into(),
        };
    }
    if let Some(starting) = pods.iter().find(|p| !p.ready) {
        return RollStep::Wait(format!("pod {} is not ready", starting.name));
    }
    if let Some(controller) = outdated.iter().find(|p| p.controller) {
        return RollStep::Restart {
            pod: controller.name.clone(),
            why: "controller, every voter ready".into(),
        };
    }
    let Some(kafka) = kafka else {
        return RollStep::Wait("no broker answers: the ISRs cannot be checked".into());
    };
    let live: BTreeSet<BrokerId> = kafka.brokers.iter().map(|b| b.id).collect();
    for t in &kafka.topics {
        for p in &t.partitions {
            if p.replicas.iter().all(|r| live.contains(r)) && p.isr.len() < p.replicas.len() {
                return RollStep::Wait(format!(
                    "{}-{} has ISR {:?} of replicas {:?}: waiting for it to catch up",
                    t.name, p.partition, p.isr, p.replicas
                ));
            }
        }
    }
    let mut first_block = None;
    for broker in outdated {
        let blocking = kafka.topics.iter().find_map(|t| {
            let min = min_isr(&t.name);
            t.partitions.iter().find_map(|p| {
                let counted = p.replicas.len() as i32 > min && p.isr.contains(&broker.id);
                (counted && (p.isr.len() as i32 - 1) < min).then(|| {
                    format!(
                        "restarting {} would leave {}-{} with {} in-sync replicas, below min.insync.replicas {min}",
                        broker.name,
                        t.name,
                        p.partition,
                        p.isr.len() - 1
                    )
                })
            })
        });
        match blocking {
            None => {
                return RollStep::Restart {
                    pod: broker.name.clone(),
                    why: "every partition it is in sync for keeps min.insync.replicas without it"
                        .into(),
                }
            }
            Some(reason) => {
                first_block.get_or_insert(reason);
            }
        }
    }
    RollStep::Wait(first_block.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::{BrokerInfo, PartitionInfo, TopicInfo};

    fn pod(name: &str, id: BrokerId, controller: bool, ready: bool, outdated: bool) -> PodState {
        PodState {
            name: name.into(),
            id,
            controller,
            ready,
            outdated,
            terminating: false,
        }
    }

    /// Three voters and three brokers, all ready; `outdated` names the outdated pods.
    fn cluster(outdated: &[&str]) -> Vec<PodState> {
        let mut pods = vec![];
        for (i, id) in [9000, 9001, 9002].into_iter().enumerate() {
            let name = format!("k-controller-{i}");
            pods.push(pod(
                &name,
                id,
                true,
                true,
                outdated.contains(&name.as_str()),
            ));
        }
        for (r, id) in [0, 1000, 2000].into_iter().enumerate() {
            let name = format!("k-broker-{r}-0");
            pods.push(pod(
                &name,
                id,
                false,
                true,
                outdated.contains(&name.as_str()),
            ));
        }
        pods
    }

    /// One topic whose partitions have these (replicas, isr).
    fn kafka(partitions: &[(&[BrokerId], &[BrokerId])]) -> ClusterView {
        ClusterView {
            cluster_id: None,
            brokers: [0, 1000, 2000]
                .into_iter()
                .map(|id| BrokerInfo { id, rack: None })
                .collect(),
            topics: vec![TopicInfo {
                name: "orders".into(),
                topic_id: "x".into(),
                is_internal: false,
                partitions: partitions
                    .iter()
                    .enumerate()
                    .map(|(i, (replicas, isr))| PartitionInfo {
                        partition: i as i32,
                        leader: isr[0],
                        replicas: replicas.to_vec(),
                        isr: isr.to_vec(),
                    })
                    .collect(),
            }],
        }
    }

    const MIN2: &dyn Fn(&str) -> i32 = &|_| 2;
    const WHOLE: &[(&[BrokerId], &[BrokerId])] = &[(&[0, 1000, 2000], &[0, 1000, 2000])];

    fn restarts(step: RollStep) -> String {
        match step {
            RollStep::Restart { pod, .. } => pod,
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn nothing_outdated_is_up_to_date() {
        assert_eq!(
            next_restart(&cluster(&[]), Some(&kafka(WHOLE)), MIN2, None),
            RollStep::UpToDate
        );
    }

    #[test]
    fn controllers_go_first_and_the_active_one_last() {
        let all = [
            "k-controller-0",
            "k-controller-1",
            "k-controller-2",
            "k-broker-0-0",
        ];
        let step = next_restart(&cluster(&all), Some(&kafka(WHOLE)), MIN2, Some(9000));
        assert_eq!(restarts(step), "k-controller-1");
        let step = next_restart(
            &cluster(&["k-controller-0", "k-broker-0-0"]),
            Some(&kafka(WHOLE)),
            MIN2,
            Some(9000),
        );
        assert_eq!(
            restarts(step),
            "k-controller-0",
            "the active one, once alone"
        );
        let step = next_restart(
            &cluster(&["k-broker-0-0"]),
            Some(&kafka(WHOLE)),
            MIN2,
            Some(9000),
        );
        assert_eq!(restarts(step), "k-broker-0-0");
    }

    #[test]
    fn a_pod_already_deleted_is_waited_for_not_deleted_again() {
        let mut pods = cluster(&["k-broker-1-0"]);
        pods[4].ready = false;
        pods[4].terminating = true;
        assert_eq!(
            next_restart(&pods, Some(&kafka(WHOLE)), MIN2, None),
            RollStep::Wait("pod k-broker-1-0 is not ready".into())
        );
    }

    #[test]
    fn one_at_a_time_while_any_pod_is_not_ready() {
        let mut pods = cluster(&["k-broker-1-0"]);
        pods[3].ready = false; // k-broker-0-0, up to date, restarting
        assert_eq!(
            next_restart(&pods, Some(&kafka(WHOLE)), MIN2, None),
            RollStep::Wait("pod k-broker-0-0 is not ready".into())
        );
    }

    #[test]
    fn a_stuck_outdated_pod_is_always_replaced() {
        let mut pods = cluster(&["k-broker-1-0"]);
        pods[4].ready = false;
        // Even with an ISR that would forbid restarting a healthy broker.
        let shrunk = kafka(&[(&[0, 1000, 2000], &[0, 2000])]);
        assert_eq!(
            restarts(next_restart(&pods, Some(&shrunk), MIN2, None)),
            "k-broker-1-0"
        );
    }

    #[test]
    fn a_broker_waits_until_the_previous_one_rejoined_every_isr() {
        let lagging = kafka(&[(&[0, 1000, 2000], &[0, 2000])]);
        let RollStep::Wait(why) =
            next_restart(&cluster(&["k-broker-2-0"]), Some(&lagging), MIN2, None)
        else {
            panic!("must wait");
        };
        assert!(
            why.contains("orders-0 has ISR [0, 2000] of replicas [0, 1000, 2000]"),
            "{why}"
        );
    }

    #[test]
    fn a_broker_whose_loss_breaks_min_isr_is_skipped_for_a_safe_one() {
        // Broker 1000 is down (not live): orders-0 on {0, 1000, 3000} is in sync on 0 and
        // 3000 only. Restarting 0 would leave one in-sync replica; 2000 is not in that ISR.
        let mut view = kafka(&[(&[0, 1000, 3000], &[0, 3000])]);
        view.brokers.retain(|b| b.id != 1000);
        view.brokers.push(BrokerInfo {
            id: 3000,
            rack: None,
        });
        let pods = cluster(&["k-broker-0-0", "k-broker-2-0"]);
        assert_eq!(
            restarts(next_restart(&pods, Some(&view), MIN2, None)),
            "k-broker-2-0"
        );
        // With only broker 0 out of date, the roll waits and says why.
        let RollStep::Wait(why) =
            next_restart(&cluster(&["k-broker-0-0"]), Some(&view), MIN2, None)
        else {
            panic!("must wait");
        };
        assert!(
            why.contains("restarting k-broker-0-0 would leave orders-0 with 1 in-sync replicas, below min.insync.replicas 2"),
            "{why}"
        );
    }

    #[test]
    fn partitions_that_cannot_survive_any_restart_do_not_block() {
        // RF 1 and RF 2 with min ISR 2: writes stop during any restart of their broker
        // whatever the order, so they do not hold the roll back.
        let view = kafka(&[(&[0], &[0]), (&[0, 1000], &[0, 1000])]);
        assert_eq!(
            restarts(next_restart(
                &cluster(&["k-broker-0-0"]),
                Some(&view),
                MIN2,
                None
            )),
            "k-broker-0-0"
        );
        assert!(matches!(
            next_restart(&cluster(&["k-broker-0-0"]), None, MIN2, None),
            RollStep::Wait(_)
        ));
    }
}
