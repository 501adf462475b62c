//! Strom's Kubernetes operator: the custom resources, the pure desired-state functions
//! that turn them into Kubernetes objects, and the controllers that apply those.

pub mod cluster;
pub mod crd;
pub mod metrics;
pub mod run;
