//! Where each broker and controller of a cluster lives: StatefulSet names, node ids,
//! racks and pod names, as a pure function of the spec.
//!
//! Node ids are stable and derived, never allocated:
//!
//! - broker `id = 1000 × rack index + ordinal`, where the rack index is the rack's
//!   position in `spec.racks.names` (0 without racks) and the ordinal is the pod's
//!   StatefulSet ordinal;
//! - controller voter `id = 9000 + ordinal`.
//!
//! Racks may only be appended (a CEL rule), at most 9 of them and at most 1000 brokers
//! per rack, so no two nodes can ever share an id. A pod computes its own id from its
//! pod name (the ordinal suffix) and `STROM_NODE_ID_BASE` in its environment.

use std::collections::BTreeMap;

use strom_core::BrokerId;

use crate::crd::KafkaCluster;

/// Ids per rack: `id = ID_STRIDE × rack index + ordinal`.
pub const ID_STRIDE: BrokerId = 1000;

/// First controller voter id.
pub const CONTROLLER_ID_BASE: BrokerId = 9000;

/// One broker StatefulSet: the brokers of one rack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rack {
    /// Position in `spec.racks.names`; 0 for the anonymous rack of a cluster without racks.
    pub index: usize,
    /// The rack's name (`broker.rack` and the node label's value); `None` without racks.
    pub name: Option<String>,
    /// Name of the rack's StatefulSet.
    pub statefulset: String,
    /// Brokers in this rack.
    pub replicas: i32,
    /// `node.id` of ordinal 0.
    pub id_base: BrokerId,
}

/// One broker or controller pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: BrokerId,
    pub rack: Option<String>,
    pub pod: String,
}

/// The placement of a whole cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub racks: Vec<Rack>,
    pub controller_statefulset: String,
    pub controllers: Vec<Node>,
    pub headless_service: String,
    pub bootstrap_service: String,
    pub config_map: String,
}

impl Layout {
    /// Computes the layout of `cluster`.
    pub fn of(cluster: &KafkaCluster) -> Layout {
        let name = cluster.metadata.name.as_deref().unwrap_or_default();
        let spec = &cluster.spec;
        let rack_names: Vec<Option<String>> = match &spec.racks {
            Some(racks) if !racks.names.is_empty() => {
                racks.names.iter().cloned().map(Some).collect()
            }
            _ => vec![None],
        };
        let brokers = spec.brokers.max(0);
        let rack_count = rack_names.len() as i32;
        let racks = rack_names
            .into_iter()
            .enumerate()
            .map(|(index, rack)| {
                // Earlier racks take the remainder, so growing by one broker adds it to
                // the first rack that has fewer than the others.
                let extra = i32::from((index as i32) < brokers % rack_count);
                Rack {
                    index,
                    name: rack,
                    statefulset: format!("{name}-broker-{index}"),
                    replicas: brokers / rack_count + extra,
                    id_base: ID_STRIDE * index as BrokerId,
                }
            })
            .collect();
        let controller_statefulset = format!("{name}-controller");
        let controllers = (0..spec.controllers.replicas.max(0))
            .map(|ordinal| Node {
                id: CONTROLLER_ID_BASE + ordinal,
                rack: None,
                pod: format!("{controller_statefulset}-{ordinal}"),
            })
            .collect();
        Layout {
            racks,
            controller_statefulset,
            controllers,
            headless_service: format!("{name}-headless"),
            bootstrap_service: format!("{name}-bootstrap"),
            config_map: format!("{name}-config"),
        }
    }

    /// Keeps every broker StatefulSet at least as large as it is now (`current`:
    /// replicas by StatefulSet name) and returns a note for each scale-down held back.
    ///
    /// This is the gate every path that removes brokers goes through: a broker may only
    /// go once its replicas have been reassigned away, and the operator does not drain
    /// brokers yet, so for now the gate never opens. Removing the brokers by hand
    /// (after moving their partitions) and then scaling the StatefulSet is the way out.
    pub fn hold_scale_down(&mut self, current: &BTreeMap<String, i32>) -> Vec<String> {
        let mut held = Vec::new();
        for rack in &mut self.racks {
            if let Some(&now) = current.get(&rack.statefulset) {
                if now > rack.replicas {
                    held.push(format!(
                        "{} keeps {now} brokers (spec wants {}): brokers are only removed once drained",
                        rack.statefulset, rack.replicas
                    ));
                    rack.replicas = now;
                }
            }
        }
        held
    }

    /// Every broker, rack by rack, in ordinal order.
    pub fn brokers(&self) -> Vec<Node> {
        self.racks
            .iter()
            .flat_map(|rack| {
                (0..rack.replicas).map(move |ordinal| Node {
                    id: rack.id_base + ordinal,
                    rack: rack.name.clone(),
                    pod: format!("{}-{ordinal}", rack.statefulset),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{KafkaClusterSpec, RacksSpec};

    fn cluster(brokers: i32, racks: &[&str]) -> KafkaCluster {
        let mut spec: KafkaClusterSpec = serde_json::from_value(serde_json::json!({})).unwrap();
        spec.brokers = brokers;
        if !racks.is_empty() {
            spec.racks = Some(RacksSpec {
                node_label: "zone".into(),
                names: racks.iter().map(|r| r.to_string()).collect(),
            });
        }
        KafkaCluster::new("k", spec)
    }

    #[test]
    fn without_racks_ids_are_ordinals() {
        let layout = Layout::of(&cluster(3, &[]));
        let ids: Vec<_> = layout.brokers().iter().map(|b| b.id).collect();
        assert_eq!(ids, [0, 1, 2]);
        assert_eq!(layout.brokers()[2].pod, "k-broker-0-2");
        assert_eq!(layout.controllers[0].id, 9000);
    }

    #[test]
    fn brokers_spread_evenly_and_earlier_racks_take_the_remainder() {
        let layout = Layout::of(&cluster(7, &["a", "b", "c"]));
        let replicas: Vec<_> = layout.racks.iter().map(|r| r.replicas).collect();
        assert_eq!(replicas, [3, 2, 2]);
        let ids: Vec<_> = layout.brokers().iter().map(|b| b.id).collect();
        assert_eq!(ids, [0, 1, 2, 1000, 1001, 2000, 2001]);
    }

    #[test]
    fn scale_downs_are_held_until_brokers_are_drained() {
        let mut layout = Layout::of(&cluster(4, &["a", "b"]));
        let current = BTreeMap::from([("k-broker-0".to_owned(), 3), ("k-broker-1".to_owned(), 1)]);
        let held = layout.hold_scale_down(&current);
        let replicas: Vec<_> = layout.racks.iter().map(|r| r.replicas).collect();
        // Rack 0 stays at 3 instead of shrinking to 2; rack 1 grows to 2.
        assert_eq!(replicas, [3, 2]);
        assert_eq!(held.len(), 1);
        assert!(
            held[0].starts_with("k-broker-0 keeps 3 brokers"),
            "{held:?}"
        );
    }

    #[test]
    fn appending_a_rack_keeps_existing_ids() {
        let before = Layout::of(&cluster(6, &["a", "b"]));
        let after = Layout::of(&cluster(9, &["a", "b", "c"]));
        for broker in before.brokers() {
            let same = after.brokers().into_iter().find(|b| b.pod == broker.pod);
            assert_eq!(same, Some(broker));
        }
    }
}
