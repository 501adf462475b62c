//! The records of the metadata log. Each is one Kafka record whose value is the record's
//! JSON form: readable with any Kafka tool, and extensible by adding variants.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a config record applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigResource {
    Topic(String),
    Broker(i32),
    /// The cluster-wide default of dynamic broker configs (Kafka's broker resource "").
    BrokerDefault,
}

/// One named listener of a broker, at the address it advertises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
}

#[cfg(test)]
impl Endpoint {
    /// One PLAINTEXT listener: what a test broker registers.
    pub fn plaintext(host: &str, port: u16) -> Vec<Endpoint> {
        vec![Endpoint {
            name: "PLAINTEXT".into(),
            host: host.into(),
            port,
        }]
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// A broker's registration: its id, rack and listeners, and the incarnation (one per
    /// process start) that registered. A broker starts fenced; the offset of this record is
    /// its broker epoch.
    RegisterBroker {
        id: i32,
        rack: Option<String>,
        endpoints: Vec<Endpoint>,
        #[serde(default)]
        incarnation_id: Option<Uuid>,
    },
    /// A broker was fenced (`true`: it holds no leadership and is not offered to clients) or
    /// unfenced (it heartbeats and has caught up with the metadata log).
    BrokerFenced { id: i32, fenced: bool },
    /// A topic came into existence with this id.
    Topic { name: String, topic_id: Uuid },
    /// A partition's replica set and leadership (created or changed).
    Partition {
        topic_id: Uuid,
        partition: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    /// A partition reassignment (KIP-455) began or changed (replicas being added, and
    /// replicas to drop once those are in sync), or ended (both empty). The replica set
    /// itself changes with Partition records.
    Reassignment {
        topic_id: Uuid,
        partition: i32,
        adding: Vec<i32>,
        removing: Vec<i32>,
        /// The replicas before the move, in their order (a cancel restores it, and with it
        /// the preferred leader).
        #[serde(default)]
        original: Vec<i32>,
    },
    /// A config override was set (`Some`) or removed (`None`).
    Config {
        resource: ConfigResource,
        name: String,
        value: Option<String>,
    },
    /// A topic and all of its partitions and configs were deleted.
    RemoveTopic { topic_id: Uuid },
    /// The cluster's id, chosen by the first leader of the quorum.
    ClusterId { cluster_id: String },
    /// A block of producer ids was handed out: every id below `next_producer_id` is taken,
    /// so a restart never gives an id out twice.
    ProducerIds { next_producer_id: i64 },
    /// A client quota (KIP-546) of an entity was set (`Some`) or removed (`None`).
    ClientQuota {
        entity: crate::quota::QuotaEntity,
        key: String,
        value: Option<f64>,
    },
}
