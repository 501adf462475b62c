//! The `KafkaCluster` controller: observe → desired (pure) → server-side apply → status.

pub mod desired;
#[cfg(test)]
mod fixtures;
pub mod layout;
pub mod reconcile;
pub mod status;
