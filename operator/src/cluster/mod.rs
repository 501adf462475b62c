//! The `KafkaCluster` controller: observe → desired (pure) → server-side apply → status.

pub mod desired;
pub mod layout;
pub mod reconcile;
pub mod status;
