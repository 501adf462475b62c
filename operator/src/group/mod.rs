//! The `ConsumerGroup` controller: pure lag and reset computations (`plan`), the
//! Kafka-side observe/reset/delete through an admin client (`sync`), and the Kubernetes
//! shell — finalizer, status and events (`reconcile`).

pub mod plan;
pub mod reconcile;
pub mod sync;
