//! Strom's Kubernetes operator: the custom resources, the pure desired-state functions
//! that turn them into Kubernetes objects, the controllers that apply those, and the
//! Topic and ConsumerGroup controllers that act in Kafka through `strom-client`.

pub mod cluster;
pub mod crd;
pub mod events;
pub mod group;
pub mod kafka;
pub mod metrics;
pub mod run;
pub mod shell;
pub mod topic;
pub mod watch;
