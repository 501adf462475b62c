//! The `Topic` controller: a pure plan of Kafka changes (`plan`), the Kafka-side sync
//! that carries it out through an admin client (`sync`), and the Kubernetes shell
//! around them — finalizer, conflicts, status and events (`reconcile`).

pub mod plan;
pub mod reconcile;
pub mod sync;
