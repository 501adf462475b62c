//! What to do in Kafka for one Topic: a pure function of its spec and what Kafka has.
//!
//! Config is declarative: every key the spec names is set on the topic, and every key set
//! on the topic itself (source `DYNAMIC_TOPIC_CONFIG`) that the spec does not name is
//! deleted, so it falls back to the broker's default. Keys that come from the broker
//! (static or dynamic broker config, defaults) are never touched: they are not the
//! topic's.

use std::collections::BTreeMap;

use crate::crd::{CleanupPolicy, TopicSpec};
use crate::kafka::{ConfigEntry, ConfigOp, ConfigSource, NewTopic, TopicInfo};

/// What Kafka has of the topic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// `None` when the topic does not exist.
    pub topic: Option<TopicInfo>,
    /// The topic's config entries (empty when it does not exist).
    pub config: BTreeMap<String, ConfigEntry>,
}

/// One change to make in Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicAction {
    Create(NewTopic),
    /// Grow from `from` to `to` partitions.
    CreatePartitions {
        from: i32,
        to: i32,
    },
    AlterConfig(Vec<ConfigOp>),
    /// Give every partition `to` replicas, by a reassignment (rack-aware, strom-core's
    /// planner), as Kafka changes a replication factor.
    ChangeReplicationFactor {
        from: i32,
        to: i32,
    },
}

/// The changes, and the differences no change can fix (reported in status).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<TopicAction>,
    pub problems: Vec<String>,
}

/// The topic config the spec asks for: the free `config` plus the typed fields.
pub fn desired_config(spec: &TopicSpec) -> BTreeMap<String, String> {
    let mut config = spec.config.clone();
    if let Some(ms) = spec.retention_ms {
        config.insert("retention.ms".into(), ms.to_string());
    }
    if let Some(bytes) = spec.retention_bytes {
        config.insert("retention.bytes".into(), bytes.to_string());
    }
    if let Some(policy) = spec.cleanup_policy {
        let value = match policy {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        };
        config.insert("cleanup.policy".into(), value.into());
    }
    config
}

/// The changes that make topic `name` in Kafka match `spec`.
pub fn plan(name: &str, spec: &TopicSpec, observed: &Observed) -> Plan {
    let desired = desired_config(spec);
    let Some(topic) = &observed.topic else {
        return Plan {
            actions: vec![TopicAction::Create(NewTopic {
                name: name.to_owned(),
                partitions: spec.partitions,
                replication_factor: spec
                    .replication_factor
                    .and_then(|rf| i16::try_from(rf).ok()),
                configs: desired,
            })],
            problems: vec![],
        };
    };

    let mut plan = Plan::default();
    let current = topic.partitions.len() as i32;
    if spec.partitions > current {
        plan.actions.push(TopicAction::CreatePartitions {
            from: current,
            to: spec.partitions,
        });
    } else if spec.partitions < current {
        plan.problems.push(format!(
            "Kafka has {current} partitions, more than the {} asked for; partitions cannot be removed",
            spec.partitions
        ));
    }
    if let (Some(want), Some(have)) = (spec.replication_factor, replication_factor(topic)) {
        // Every partition counts: a reassignment half done leaves them unequal.
        if topic
            .partitions
            .iter()
            .any(|p| p.replicas.len() as i32 != want)
        {
            plan.actions.push(TopicAction::ChangeReplicationFactor {
                from: have,
                to: want,
            });
        }
    }

    let ops = config_ops(&desired, &observed.config);
    if !ops.is_empty() {
        plan.actions.push(TopicAction::AlterConfig(ops));
    }
    plan
}

/// Sets for keys that differ or are not the topic's own yet, deletes for the topic's
/// own keys that the spec does not name; sorted, so equal inputs give equal plans.
pub fn config_ops(
    desired: &BTreeMap<String, String>,
    current: &BTreeMap<String, ConfigEntry>,
) -> Vec<ConfigOp> {
    let mut ops = Vec::new();
    for (key, value) in desired {
        let up_to_date = current.get(key).is_some_and(|entry| {
            entry.source == ConfigSource::DynamicTopic && entry.value.as_deref() == Some(value)
        });
        if !up_to_date {
            ops.push(ConfigOp::Set(key.clone(), value.clone()));
        }
    }
    for (key, entry) in current {
        if entry.source == ConfigSource::DynamicTopic
            && !entry.read_only
            && !desired.contains_key(key)
        {
            ops.push(ConfigOp::Delete(key.clone()));
        }
    }
    ops
}

/// The replica count of the topic's partitions: the first one's (they are created equal;
/// during a replication-factor change they differ until it is done).
pub fn replication_factor(topic: &TopicInfo) -> Option<i32> {
    topic.partitions.first().map(|p| p.replicas.len() as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::PartitionInfo;

    fn spec(yaml: &str) -> TopicSpec {
        serde_yaml::from_str(yaml).expect("valid TopicSpec")
    }

    fn topic(partitions: i32, replicas: i32) -> TopicInfo {
        TopicInfo {
            name: "orders".into(),
            topic_id: "id".into(),
            is_internal: false,
            partitions: (0..partitions)
                .map(|p| PartitionInfo {
                    partition: p,
                    leader: 0,
                    replicas: (0..replicas).collect(),
                    isr: (0..replicas).collect(),
                })
                .collect(),
        }
    }

    fn entry(value: &str, source: ConfigSource) -> ConfigEntry {
        ConfigEntry {
            value: Some(value.into()),
            source,
            read_only: false,
            sensitive: false,
        }
    }

    #[test]
    fn a_missing_topic_is_created_with_typed_and_free_config() {
        let spec = spec(
            "clusterRef: {name: dev}\npartitions: 3\nreplicationFactor: 1\nretentionMs: 3600000\n\
             retentionBytes: -1\ncleanupPolicy: compact,delete\nconfig: {segment.bytes: '1048576'}",
        );
        let plan = plan("orders", &spec, &Observed::default());
        assert_eq!(
            plan.actions,
            [TopicAction::Create(NewTopic {
                name: "orders".into(),
                partitions: 3,
                replication_factor: Some(1),
                configs: BTreeMap::from([
                    ("cleanup.policy".into(), "compact,delete".into()),
                    ("retention.bytes".into(), "-1".into()),
                    ("retention.ms".into(), "3600000".into()),
                    ("segment.bytes".into(), "1048576".into()),
                ]),
            })]
        );
        assert!(plan.problems.is_empty());
    }

    #[test]
    fn without_a_replication_factor_the_broker_default_applies() {
        let plan = plan(
            "orders",
            &spec("clusterRef: {name: dev}"),
            &Observed::default(),
        );
        let [TopicAction::Create(new)] = plan.actions.as_slice() else {
            panic!("expected one create: {plan:?}");
        };
        assert_eq!((new.partitions, new.replication_factor), (1, None));
    }

    #[test]
    fn a_topic_that_matches_needs_nothing() {
        let spec = spec("clusterRef: {name: dev}\npartitions: 2\nretentionMs: 1000");
        let observed = Observed {
            topic: Some(topic(2, 1)),
            config: BTreeMap::from([
                (
                    "retention.ms".into(),
                    entry("1000", ConfigSource::DynamicTopic),
                ),
                (
                    "segment.bytes".into(),
                    entry("1073741824", ConfigSource::Default),
                ),
            ]),
        };
        assert_eq!(plan("orders", &spec, &observed), Plan::default());
    }

    #[test]
    fn partitions_grow_and_never_shrink() {
        let grow = plan(
            "orders",
            &spec("clusterRef: {name: dev}\npartitions: 5"),
            &Observed {
                topic: Some(topic(2, 1)),
                config: BTreeMap::new(),
            },
        );
        assert_eq!(
            grow.actions,
            [TopicAction::CreatePartitions { from: 2, to: 5 }]
        );
        let shrink = plan(
            "orders",
            &spec("clusterRef: {name: dev}\npartitions: 1"),
            &Observed {
                topic: Some(topic(2, 1)),
                config: BTreeMap::new(),
            },
        );
        assert!(shrink.actions.is_empty());
        assert_eq!(shrink.problems.len(), 1);
        assert!(
            shrink.problems[0].contains("cannot be removed"),
            "{shrink:?}"
        );
    }

    #[test]
    fn a_replication_factor_change_is_a_reassignment() {
        let plan = plan(
            "orders",
            &spec("clusterRef: {name: dev}\nreplicationFactor: 3"),
            &Observed {
                topic: Some(topic(1, 1)),
                config: BTreeMap::new(),
            },
        );
        assert_eq!(
            plan.actions,
            [TopicAction::ChangeReplicationFactor { from: 1, to: 3 }]
        );
        assert!(plan.problems.is_empty());
    }

    #[test]
    fn config_is_declarative() {
        // retention.ms drifted (changed outside Kubernetes), segment.ms was removed from
        // the spec, cleanup.policy only has the broker's value so far, and a broker-level
        // key the spec does not name stays untouched.
        let spec = spec(
            "clusterRef: {name: dev}\nretentionMs: 1000\ncleanupPolicy: compact\nconfig: {max.message.bytes: '2048'}",
        );
        let current = BTreeMap::from([
            (
                "retention.ms".into(),
                entry("5", ConfigSource::DynamicTopic),
            ),
            (
                "segment.ms".into(),
                entry("60000", ConfigSource::DynamicTopic),
            ),
            (
                "cleanup.policy".into(),
                entry("compact", ConfigSource::StaticBroker),
            ),
            (
                "max.message.bytes".into(),
                entry("2048", ConfigSource::DynamicTopic),
            ),
            (
                "retention.bytes".into(),
                entry("-1", ConfigSource::DynamicBroker),
            ),
        ]);
        assert_eq!(
            config_ops(&desired_config(&spec), &current),
            [
                ConfigOp::Set("cleanup.policy".into(), "compact".into()),
                ConfigOp::Set("retention.ms".into(), "1000".into()),
                ConfigOp::Delete("segment.ms".into()),
            ]
        );
    }
}
