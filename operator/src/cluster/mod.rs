//! The `KafkaCluster` controller: observe → desired (pure) → server-side apply → status.

pub mod data;
pub mod desired;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod layout;
pub mod operation;
pub mod reconcile;
pub mod roll;
pub mod status;
