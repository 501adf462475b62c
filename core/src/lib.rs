//! Shared vocabulary of Strom (broker ids, racks) and the pure algorithms that the broker's
//! controller and the operator both need, such as rack-aware replica placement and
//! rebalance planning.

pub mod placement;
pub mod rebalance;

/// A broker's `node.id`.
pub type BrokerId = i32;

/// A broker as placement sees it: its id and, when it has one, its rack (`broker.rack`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BrokerInfo {
    pub id: BrokerId,
    pub rack: Option<String>,
}
