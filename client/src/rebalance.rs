//! Running a strom-core rebalance plan against a live cluster: read the assignment and
//! replica sizes, plan, throttle the replicas that move (Kafka's throttle configs, as
//! kafka-reassign-partitions --throttle sets them), start the reassignments, follow them
//! and clear the throttles. `strom-admin rebalance` and the operator share it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;

use strom_core::rebalance::{self, Broker, Goals, PartitionAssignment, Plan};

use crate::admin::{
    Admin, AdminError, ClusterView, ConfigOp, OngoingReassignment, ReassignmentOutcome,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Bytes per replica by (topic, partition).
pub type ReplicaSizes = BTreeMap<(String, i32), u64>;

/// The admin calls a rebalance makes, as a trait so that the operator's reconcile tests
/// can run the same code against an in-memory cluster; [`Admin`] is the real one.
pub trait ClusterAdmin: Send + Sync {
    fn describe_cluster(&self) -> BoxFuture<'_, Result<ClusterView, AdminError>>;
    fn replica_sizes(&self, broker: i32) -> BoxFuture<'_, Result<ReplicaSizes, AdminError>>;
    fn list_partition_reassignments(
        &self,
    ) -> BoxFuture<'_, Result<Vec<OngoingReassignment>, AdminError>>;
    fn alter_partition_reassignments<'a>(
        &'a self,
        changes: &'a [(String, i32, Option<Vec<i32>>)],
    ) -> BoxFuture<'a, Result<Vec<ReassignmentOutcome>, AdminError>>;
    fn alter_topic_config<'a>(
        &'a self,
        topic: &'a str,
        ops: &'a [ConfigOp],
    ) -> BoxFuture<'a, Result<(), AdminError>>;
    fn alter_broker_config<'a>(
        &'a self,
        broker: Option<i32>,
        ops: &'a [ConfigOp],
    ) -> BoxFuture<'a, Result<(), AdminError>>;
}

impl ClusterAdmin for Admin {
    fn describe_cluster(&self) -> BoxFuture<'_, Result<ClusterView, AdminError>> {
        Box::pin(Admin::describe_cluster(self))
    }
    fn replica_sizes(&self, broker: i32) -> BoxFuture<'_, Result<ReplicaSizes, AdminError>> {
        Box::pin(Admin::replica_sizes(self, broker))
    }
    fn list_partition_reassignments(
        &self,
    ) -> BoxFuture<'_, Result<Vec<OngoingReassignment>, AdminError>> {
        Box::pin(Admin::list_partition_reassignments(self))
    }
    fn alter_partition_reassignments<'a>(
        &'a self,
        changes: &'a [(String, i32, Option<Vec<i32>>)],
    ) -> BoxFuture<'a, Result<Vec<ReassignmentOutcome>, AdminError>> {
        Box::pin(Admin::alter_partition_reassignments(self, changes))
    }
    fn alter_topic_config<'a>(
        &'a self,
        topic: &'a str,
        ops: &'a [ConfigOp],
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(Admin::alter_topic_config(self, topic, ops))
    }
    fn alter_broker_config<'a>(
        &'a self,
        broker: Option<i32>,
        ops: &'a [ConfigOp],
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(Admin::alter_broker_config(self, broker, ops))
    }
}

pub const LEADER_RATE: &str = "leader.replication.throttled.rate";
pub const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";
pub const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
pub const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";

#[derive(Debug, thiserror::Error)]
pub enum RebalanceError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Plan(#[from] rebalance::RebalanceError),
    #[error("the controller refused the reassignment of {refused} partition(s): {first}")]
    Refused { refused: usize, first: String },
}

/// The cluster as the planner takes it: live brokers (from Metadata) plus, as offline,
/// any broker that holds a replica but is not live; every partition with the size of its
/// largest replica (what a new replica copies).
pub async fn current_state<A: ClusterAdmin + ?Sized>(
    admin: &A,
) -> Result<(Vec<Broker>, Vec<PartitionAssignment>), AdminError> {
    let cluster = admin.describe_cluster().await?;
    let mut sizes: BTreeMap<(String, i32), u64> = BTreeMap::new();
    for b in &cluster.brokers {
        for (key, size) in admin.replica_sizes(b.id).await? {
            let entry = sizes.entry(key).or_insert(0);
            *entry = (*entry).max(size);
        }
    }
    Ok(state_of(&cluster, &sizes))
}

/// The planner's input from a Metadata view and the largest replica size of each
/// partition: live brokers, plus as offline every broker a replica names that is not live.
pub fn state_of(
    cluster: &ClusterView,
    sizes: &BTreeMap<(String, i32), u64>,
) -> (Vec<Broker>, Vec<PartitionAssignment>) {
    let mut brokers: BTreeMap<i32, Broker> = cluster
        .brokers
        .iter()
        .map(|b| {
            (
                b.id,
                Broker {
                    id: b.id,
                    rack: b.rack.clone(),
                    online: true,
                },
            )
        })
        .collect();
    let mut partitions = Vec::new();
    for t in &cluster.topics {
        for p in &t.partitions {
            for r in &p.replicas {
                brokers.entry(*r).or_insert(Broker {
                    id: *r,
                    rack: None,
                    online: false,
                });
            }
            partitions.push(PartitionAssignment {
                topic: t.name.clone(),
                partition: p.partition,
                replicas: p.replicas.clone(),
                size: sizes
                    .get(&(t.name.clone(), p.partition))
                    .copied()
                    .unwrap_or(0),
            });
        }
    }
    (brokers.into_values().collect(), partitions)
}

/// Plans `goals` for the cluster as it is now.
pub async fn plan<A: ClusterAdmin + ?Sized>(
    admin: &A,
    goals: &Goals,
) -> Result<Plan, RebalanceError> {
    let (brokers, partitions) = current_state(admin).await?;
    Ok(rebalance::plan(&brokers, &partitions, goals)?)
}

/// The throttled-replica lists of each topic a plan moves: on the leader side the replicas
/// it has now (the sources), on the follower side those it adds — Kafka's own choice.
pub fn throttled_replicas(plan: &Plan) -> BTreeMap<String, (String, String)> {
    let mut out: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for c in plan.changes.iter().filter(|c| c.replicas_added() > 0) {
        let (leader, follower) = out.entry(c.topic.clone()).or_default();
        leader.extend(c.current.iter().map(|b| format!("{}:{b}", c.partition)));
        follower.extend(
            c.target
                .iter()
                .filter(|b| !c.current.contains(b))
                .map(|b| format!("{}:{b}", c.partition)),
        );
    }
    out.into_iter()
        .map(|(t, (l, f))| (t, (l.join(","), f.join(","))))
        .collect()
}

/// Brokers that send or receive data in the plan.
pub fn moving_brokers(plan: &Plan) -> BTreeSet<i32> {
    plan.changes
        .iter()
        .filter(|c| c.replicas_added() > 0)
        .flat_map(|c| c.current.iter().chain(&c.target).copied())
        .collect()
}

/// Throttles the plan's moving replicas at `bytes_per_s` (`None`: no throttle) and starts
/// every reassignment of the plan.
pub async fn execute<A: ClusterAdmin + ?Sized>(
    admin: &A,
    plan: &Plan,
    bytes_per_s: Option<u64>,
) -> Result<(), RebalanceError> {
    if let Some(rate) = bytes_per_s {
        for (topic, (leader, follower)) in throttled_replicas(plan) {
            admin
                .alter_topic_config(
                    &topic,
                    &[
                        ConfigOp::Set(LEADER_REPLICAS.into(), leader),
                        ConfigOp::Set(FOLLOWER_REPLICAS.into(), follower),
                    ],
                )
                .await?;
        }
        for b in moving_brokers(plan) {
            admin
                .alter_broker_config(
                    Some(b),
                    &[
                        ConfigOp::Set(LEADER_RATE.into(), rate.to_string()),
                        ConfigOp::Set(FOLLOWER_RATE.into(), rate.to_string()),
                    ],
                )
                .await?;
        }
    }
    let changes: Vec<(String, i32, Option<Vec<i32>>)> = plan
        .changes
        .iter()
        .map(|c| (c.topic.clone(), c.partition, Some(c.target.clone())))
        .collect();
    let outcomes = admin.alter_partition_reassignments(&changes).await?;
    let refused: Vec<String> = outcomes
        .iter()
        .filter_map(|(t, p, r)| r.as_ref().err().map(|e| format!("{t}-{p}: {e}")))
        .collect();
    if let Some(first) = refused.first() {
        return Err(RebalanceError::Refused {
            refused: refused.len(),
            first: first.clone(),
        });
    }
    Ok(())
}

/// How many of the plan's partitions have reached their target: no reassignment of them
/// is listed and Metadata shows the target replicas (a broker may answer one a moment
/// before its metadata has the other, so both are asked).
pub async fn progress<A: ClusterAdmin + ?Sized>(
    admin: &A,
    plan: &Plan,
) -> Result<(usize, usize), AdminError> {
    let ongoing: BTreeSet<(String, i32)> = admin
        .list_partition_reassignments()
        .await?
        .into_iter()
        .map(|r| (r.topic, r.partition))
        .collect();
    let cluster = admin.describe_cluster().await?;
    let replicas: BTreeMap<(&str, i32), &[i32]> = cluster
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| ((t.name.as_str(), p.partition), p.replicas.as_slice()))
        })
        .collect();
    let total = plan.changes.len();
    let done = plan
        .changes
        .iter()
        .filter(|c| {
            !ongoing.contains(&(c.topic.clone(), c.partition))
                && replicas.get(&(c.topic.as_str(), c.partition)) == Some(&c.target.as_slice())
        })
        .count();
    Ok((done, total))
}

/// Removes the throttles `execute` set for the plan.
pub async fn clear_throttles<A: ClusterAdmin + ?Sized>(
    admin: &A,
    plan: &Plan,
) -> Result<(), AdminError> {
    let topics: Vec<String> = throttled_replicas(plan).into_keys().collect();
    let brokers: Vec<i32> = moving_brokers(plan).into_iter().collect();
    clear_throttles_of(admin, &topics, &brokers).await
}

/// Removes the replica throttles of `topics` and the throttle rates of `brokers`: what
/// [`execute`] set, for a caller that kept only which topics and brokers it throttled.
pub async fn clear_throttles_of<A: ClusterAdmin + ?Sized>(
    admin: &A,
    topics: &[String],
    brokers: &[i32],
) -> Result<(), AdminError> {
    for topic in topics {
        admin
            .alter_topic_config(
                topic,
                &[
                    ConfigOp::Delete(LEADER_REPLICAS.into()),
                    ConfigOp::Delete(FOLLOWER_REPLICAS.into()),
                ],
            )
            .await?;
    }
    for &b in brokers {
        admin
            .alter_broker_config(
                Some(b),
                &[
                    ConfigOp::Delete(LEADER_RATE.into()),
                    ConfigOp::Delete(FOLLOWER_RATE.into()),
                ],
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_name_the_sources_on_the_leader_side_and_the_new_replicas_on_the_follower_side() {
        let brokers: Vec<Broker> = (1..=4)
            .map(|id| Broker {
                id,
                rack: None,
                online: id != 3,
            })
            .collect();
        let partitions = vec![
            PartitionAssignment {
                topic: "t".into(),
                partition: 0,
                replicas: vec![1, 3],
                size: 10,
            },
            PartitionAssignment {
                topic: "t".into(),
                partition: 1,
                replicas: vec![2, 1],
                size: 10,
            },
        ];
        let plan = rebalance::plan(&brokers, &partitions, &Goals::default()).unwrap();
        assert_eq!(
            plan.changes.len(),
            1,
            "only the replica on offline broker 3 moves"
        );
        let added: Vec<i32> = plan.changes[0]
            .target
            .iter()
            .copied()
            .filter(|b| *b != 1)
            .collect();
        let (leader, follower) = &throttled_replicas(&plan)["t"];
        assert_eq!(leader, "0:1,0:3");
        assert_eq!(follower, &format!("0:{}", added[0]));
        assert_eq!(moving_brokers(&plan), BTreeSet::from([1, 3, added[0]]));
    }
}
