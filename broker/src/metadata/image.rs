//! The metadata image: the state that the metadata log's records add up to. It is
//! immutable once published; a change builds the next image.

use super::records::{ConfigResource, Endpoint, MetadataRecord};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub id: i32,
    pub rack: Option<String>,
    /// Every listener the broker serves clients or brokers on, as advertised.
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub incarnation_id: Option<Uuid>,
    /// The metadata offset after the registration record: the broker's epoch, and how far
    /// it must have caught up before it is unfenced.
    #[serde(default)]
    pub epoch: i64,
    #[serde(default)]
    pub fenced: bool,
}

impl BrokerRegistration {
    /// The broker's endpoint on the listener named `listener`: clients are answered with
    /// the addresses of the listener they came in on, brokers reach each other on the
    /// inter-broker listener.
    pub fn endpoint(&self, listener: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == listener)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    /// Every replica; during a reassignment the target ones first, then those leaving.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// A reassignment in progress: replicas being added, and those to drop once the added
    /// ones are in sync (both empty when none is).
    #[serde(default)]
    pub adding: Vec<i32>,
    #[serde(default)]
    pub removing: Vec<i32>,
    /// The replicas before the reassignment in progress, in their order.
    #[serde(default)]
    pub original: Vec<i32>,
}

impl PartitionImage {
    pub fn reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replicas a reassignment ends with (all of them when none is in progress).
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing.contains(r))
            .collect()
    }

    /// The replicas before the reassignment in progress began (all of them, in order,
    /// when none is).
    pub fn original_replicas(&self) -> Vec<i32> {
        if self.reassigning() && !self.original.is_empty() {
            return self.original.clone();
        }
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.adding.contains(r))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub partitions: BTreeMap<i32, PartitionImage>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetadataImage {
    pub cluster_id: String,
    /// The metadata log offset this image reflects: every entry below it is applied (it is
    /// also the Raft index of the last applied entry).
    pub metadata_offset: i64,
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    pub topics: BTreeMap<String, TopicImage>,
    pub topic_names: HashMap<Uuid, String>,
    /// Topic config overrides by topic name.
    pub topic_configs: BTreeMap<String, BTreeMap<String, String>>,
    pub broker_configs: BTreeMap<i32, BTreeMap<String, String>>,
    /// Dynamic broker configs set for every broker (a broker's own override wins).
    #[serde(default)]
    pub broker_default_configs: BTreeMap<String, String>,
    /// The first producer id no block has claimed yet.
    pub next_producer_id: i64,
    /// Client quotas by entity (in a checkpoint: a list of entity and values).
    #[serde(default, with = "crate::quota::entity_map")]
    pub client_quotas: crate::quota::QuotaTable,
}

impl MetadataImage {
    /// A dynamic broker config of `broker`: its own override, else the cluster default;
    /// with whether it is the broker's own.
    pub fn dynamic_broker_config(&self, broker: i32, name: &str) -> Option<(&str, bool)> {
        if let Some(v) = self.broker_configs.get(&broker).and_then(|c| c.get(name)) {
            return Some((v, true));
        }
        self.broker_default_configs
            .get(name)
            .map(|v| (v.as_str(), false))
    }

    /// The image as a snapshot file's contents.
    pub fn to_checkpoint(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the image serializes")
    }

    pub fn from_checkpoint(data: &[u8]) -> Result<MetadataImage, serde_json::Error> {
        serde_json::from_slice(data)
    }

    /// Applies one committed entry of the metadata log (Raft index `index`; `data` is its
    /// JSON array of records, empty for Raft's own entries). Returns the records' bytes.
    pub fn apply_entry(&mut self, index: u64, data: &[u8]) -> usize {
        assert!(
            index as i64 > self.metadata_offset,
            "entry {index} applied twice (image at {})",
            self.metadata_offset
        );
        if !data.is_empty() {
            match serde_json::from_slice::<Vec<MetadataRecord>>(data) {
                Ok(records) => {
                    for r in &records {
                        self.apply(r);
                    }
                }
                // Written by a newer version: applying part of it would be worse.
                Err(err) => {
                    tracing::error!(index, cause = %err, "skipping an unreadable metadata entry")
                }
            }
        }
        self.metadata_offset = index as i64;
        data.len()
    }

    pub fn apply(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::RegisterBroker {
                id,
                rack,
                endpoints,
                incarnation_id,
            } => {
                self.brokers.insert(
                    *id,
                    BrokerRegistration {
                        id: *id,
                        rack: rack.clone(),
                        endpoints: endpoints.clone(),
                        incarnation_id: *incarnation_id,
                        // The entry being applied has index metadata_offset + 1.
                        epoch: self.metadata_offset + 1,
                        fenced: true,
                    },
                );
            }
            MetadataRecord::BrokerFenced { id, fenced } => {
                if let Some(b) = self.brokers.get_mut(id) {
                    b.fenced = *fenced;
                }
            }
            MetadataRecord::Topic { name, topic_id } => {
                self.topic_names.insert(*topic_id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        id: *topic_id,
                        partitions: BTreeMap::new(),
                    },
                );
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            } => {
                if let Some(t) = self
                    .topic_names
                    .get(topic_id)
                    .and_then(|n| self.topics.get_mut(n))
                {
                    // A reassignment in progress outlives the partition's other changes.
                    let (adding, removing, original) = t
                        .partitions
                        .get(partition)
                        .map(|p| (p.adding.clone(), p.removing.clone(), p.original.clone()))
                        .unwrap_or_default();
                    t.partitions.insert(
                        *partition,
                        PartitionImage {
                            replicas: replicas.clone(),
                            isr: isr.clone(),
                            leader: *leader,
                            leader_epoch: *leader_epoch,
                            partition_epoch: *partition_epoch,
                            adding,
                            removing,
                            original,
                        },
                    );
                }
            }
            MetadataRecord::Reassignment {
                topic_id,
                partition,
                adding,
                removing,
                original,
            } => {
                if let Some(p) = self
                    .topic_names
                    .get(topic_id)
                    .and_then(|n| self.topics.get_mut(n))
                    .and_then(|t| t.partitions.get_mut(partition))
                {
                    p.adding = adding.clone();
                    p.removing = removing.clone();
                    p.original = original.clone();
                }
            }
            MetadataRecord::Config {
                resource,
                name,
                value,
            } => {
                let map = match resource {
                    ConfigResource::Topic(t) => self.topic_configs.entry(t.clone()).or_default(),
                    ConfigResource::Broker(b) => self.broker_configs.entry(*b).or_default(),
                    ConfigResource::BrokerDefault => &mut self.broker_default_configs,
                };
                match value {
                    Some(v) => {
                        map.insert(name.clone(), v.clone());
                    }
                    None => {
                        map.remove(name);
                    }
                }
            }
            MetadataRecord::ClusterId { cluster_id } => {
                if self.cluster_id.is_empty() {
                    self.cluster_id = cluster_id.clone();
                }
            }
            MetadataRecord::ProducerIds { next_producer_id } => {
                self.next_producer_id = self.next_producer_id.max(*next_producer_id);
            }
            MetadataRecord::ClientQuota { entity, key, value } => match value {
                Some(v) => {
                    self.client_quotas
                        .entry(entity.clone())
                        .or_default()
                        .insert(key.clone(), *v);
                }
                None => {
                    if let Some(values) = self.client_quotas.get_mut(entity) {
                        values.remove(key);
                        if values.is_empty() {
                            self.client_quotas.remove(entity);
                        }
                    }
                }
            },
            MetadataRecord::RemoveTopic { topic_id } => {
                if let Some(name) = self.topic_names.remove(topic_id) {
                    self.topics.remove(&name);
                    self.topic_configs.remove(&name);
                }
            }
        }
    }

    /// Registered brokers that are not fenced: the ones clients are offered and
    /// placement uses.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicImage> {
        self.topic_names.get(id).and_then(|n| self.topics.get(n))
    }
}
