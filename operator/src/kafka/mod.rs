//! The Kafka side of the controllers, behind a trait: the real implementation is
//! `strom_client::admin::Admin`, and reconcile tests use an in-memory cluster, so the
//! Kubernetes shell is tested without a broker. The KafkaCluster controller's calls
//! (Metadata, log dir sizes, reassignments, throttles) are strom-client's
//! [`ClusterAdmin`], which the rebalance code of `strom_client::rebalance` runs on.
//!
//! Admin clients are kept per bootstrap address and reused by every reconcile of every
//! Topic and ConsumerGroup on that cluster.

#[cfg(test)]
pub(crate) mod fake;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
pub use strom_client::admin::{
    Admin, AdminConfig, AdminError, BrokerInfo, ClusterView, ConfigEntry, ConfigOp, ConfigSource,
    GroupInfo, MemberInfo, NewTopic, OffsetSpec, OngoingReassignment, PartitionInfo,
    ReassignmentOutcome, TopicConfig, TopicConfigs, TopicInfo, TopicPartition,
};
pub use strom_client::rebalance::ClusterAdmin;

/// The admin calls the controllers make; one method per Kafka API they use (the
/// cluster-wide ones, `alter_topic_config` among them, come from [`ClusterAdmin`]).
pub trait KafkaAdmin: ClusterAdmin {
    fn describe_topic<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Option<TopicInfo>, AdminError>>;
    fn create_topic<'a>(&'a self, topic: &'a NewTopic)
        -> BoxFuture<'a, Result<String, AdminError>>;
    fn delete_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), AdminError>>;
    fn create_partitions<'a>(
        &'a self,
        topic: &'a str,
        count: i32,
    ) -> BoxFuture<'a, Result<(), AdminError>>;
    fn describe_topic_config<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, ConfigEntry>, AdminError>>;
    /// The entries named `keys` of many topics in one DescribeConfigs, each topic with its
    /// own answer.
    fn describe_topic_configs<'a>(
        &'a self,
        topics: &'a [String],
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<TopicConfigs, AdminError>>;
    fn list_offsets<'a>(
        &'a self,
        topic: &'a str,
        partitions: &'a [i32],
        spec: OffsetSpec,
    ) -> BoxFuture<'a, Result<BTreeMap<i32, i64>, AdminError>>;
    fn describe_group<'a>(&'a self, group: &'a str)
        -> BoxFuture<'a, Result<GroupInfo, AdminError>>;
    fn fetch_offsets<'a>(
        &'a self,
        group: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<TopicPartition, i64>, AdminError>>;
    fn commit_offsets<'a>(
        &'a self,
        group: &'a str,
        offsets: &'a BTreeMap<TopicPartition, i64>,
    ) -> BoxFuture<'a, Result<(), AdminError>>;
    fn delete_group<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<(), AdminError>>;
    /// The metadata quorum's leader (DescribeQuorum).
    fn active_controller(&self) -> BoxFuture<'_, Result<Option<i32>, AdminError>>;
}

impl KafkaAdmin for Admin {
    fn describe_topic<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Option<TopicInfo>, AdminError>> {
        Admin::describe_topic(self, topic).boxed()
    }
    fn create_topic<'a>(
        &'a self,
        topic: &'a NewTopic,
    ) -> BoxFuture<'a, Result<String, AdminError>> {
        Admin::create_topic(self, topic).boxed()
    }
    fn delete_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<(), AdminError>> {
        Admin::delete_topic(self, topic).boxed()
    }
    fn create_partitions<'a>(
        &'a self,
        topic: &'a str,
        count: i32,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Admin::create_partitions(self, topic, count).boxed()
    }
    fn describe_topic_config<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, ConfigEntry>, AdminError>> {
        Admin::describe_topic_config(self, topic).boxed()
    }
    fn describe_topic_configs<'a>(
        &'a self,
        topics: &'a [String],
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<TopicConfigs, AdminError>> {
        Admin::describe_topic_configs(self, topics, Some(keys)).boxed()
    }
    fn list_offsets<'a>(
        &'a self,
        topic: &'a str,
        partitions: &'a [i32],
        spec: OffsetSpec,
    ) -> BoxFuture<'a, Result<BTreeMap<i32, i64>, AdminError>> {
        Admin::list_offsets(self, topic, partitions, spec).boxed()
    }
    fn describe_group<'a>(
        &'a self,
        group: &'a str,
    ) -> BoxFuture<'a, Result<GroupInfo, AdminError>> {
        Admin::describe_group(self, group).boxed()
    }
    fn fetch_offsets<'a>(
        &'a self,
        group: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<TopicPartition, i64>, AdminError>> {
        Admin::fetch_offsets(self, group).boxed()
    }
    fn commit_offsets<'a>(
        &'a self,
        group: &'a str,
        offsets: &'a BTreeMap<TopicPartition, i64>,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Admin::commit_offsets(self, group, offsets).boxed()
    }
    fn delete_group<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<(), AdminError>> {
        Admin::delete_group(self, group).boxed()
    }
    fn active_controller(&self) -> BoxFuture<'_, Result<Option<i32>, AdminError>> {
        Admin::active_controller(self).boxed()
    }
}

/// Hands out the admin client of a cluster by its bootstrap address.
pub trait AdminPool: Send + Sync {
    fn admin(&self, bootstrap: &str) -> Arc<dyn KafkaAdmin>;
}

/// One [`Admin`] per bootstrap address, created on first use and kept: its connections
/// stay open between reconciles.
#[derive(Default)]
pub struct Admins {
    config: AdminConfig,
    by_bootstrap: Mutex<HashMap<String, Arc<Admin>>>,
}

impl Admins {
    pub fn new(config: AdminConfig) -> Self {
        Admins {
            config,
            by_bootstrap: Mutex::new(HashMap::new()),
        }
    }
}

impl AdminPool for Admins {
    fn admin(&self, bootstrap: &str) -> Arc<dyn KafkaAdmin> {
        // A poisoned lock only means another reconcile panicked while inserting; the map
        // itself is still consistent.
        let mut admins = self
            .by_bootstrap
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        admins
            .entry(bootstrap.to_owned())
            .or_insert_with(|| {
                let addresses = bootstrap
                    .split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
                    .collect();
                Arc::new(Admin::new(addresses, self.config.clone()))
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_admin_per_bootstrap_address() {
        let pool = Admins::new(AdminConfig::default());
        let a = pool.admin("a:9092");
        let again = pool.admin("a:9092");
        let b = pool.admin("b:9092,c:9092");
        assert!(
            Arc::ptr_eq(&a, &again),
            "the same cluster reuses its client"
        );
        assert!(!Arc::ptr_eq(&a, &b));
        let admins = pool.by_bootstrap.lock().unwrap();
        assert_eq!(admins["b:9092,c:9092"].bootstrap(), ["b:9092", "c:9092"]);
    }
}
