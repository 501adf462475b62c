//! strom-broker: a Kafka-compatible broker. The data flow reads top to bottom:
//! connection → frame → decode (`protocol`) → handler (`api`) → partition (`partition`) →
//! log (`log`); cluster metadata lives in `metadata`, consumer groups in `group`, the
//! process shell in `server`.

pub mod api;
pub mod clock;
pub mod config;
pub mod group;
pub mod log;
pub mod metadata;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod protocol;
pub mod quota;
pub mod server;
pub mod txn;
