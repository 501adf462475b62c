//! Rack-aware replica placement for new partitions, in the spirit of Kafka's
//! `StripedReplicaPlacer`: brokers are interleaved across racks so that consecutive replicas
//! of a partition land in different racks, and leaders are spread evenly.
//!
//! Placement is a pure function of its inputs: the same brokers, partition range and
//! `start` always give the same assignment, which makes plans reviewable and testable.

use crate::{BrokerId, BrokerInfo};
use std::collections::BTreeMap;

/// The most partitions one call places. Counts come from the wire (CreateTopics,
/// CreatePartitions); Kafka's controller refuses more than 10,000 partitions per request
/// (`MAX_PARTITIONS_PER_BATCH`), and so placement never allocates for more than that, whatever
/// a caller passes.
pub const MAX_PARTITIONS_PER_CALL: i32 = 10_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error("replication factor must be at least 1, got {0}")]
    InvalidReplicationFactor(i32),
    #[error(
        "replication factor {replication_factor} is larger than the {brokers} available brokers"
    )]
    NotEnoughBrokers {
        replication_factor: i32,
        brokers: usize,
    },
    #[error("{count} partitions requested; at most {max} can be created at once")]
    TooManyPartitions { count: i32, max: i32 },
}

/// Orders brokers so that walking the list visits racks round-robin: the first broker of every
/// rack, then the second of every rack, and so on. Brokers without a rack form one rack of
/// their own. Inputs are sorted first, so the order never depends on how the caller listed them.
pub fn rack_interleaved(brokers: &[BrokerInfo]) -> Vec<BrokerId> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<BrokerId>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(b.rack.as_deref()).or_default().push(b.id);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
        ids.dedup();
    }
    let longest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::with_capacity(brokers.len());
    for i in 0..longest {
        for ids in by_rack.values() {
            if let Some(id) = ids.get(i) {
                out.push(*id);
            }
        }
    }
    out
}

/// Assigns replicas to partitions `first_partition..first_partition + count`.
///
/// Partition `p`'s leader is the broker at `(start + p) % n` of the rack-interleaved list.
/// Followers are found by walking that list from an offset that shifts with `p / n` (so
/// partitions sharing a leader get different followers), taking a broker only if its rack
/// holds no replica of the partition yet, until every rack holds one; after that any unused
/// broker will do. Replicas of one partition are therefore distinct and span
/// `min(replication_factor, racks)` racks.
pub fn assign_replicas(
    brokers: &[BrokerInfo],
    first_partition: i32,
    count: i32,
    replication_factor: i32,
    start: usize,
) -> Result<Vec<Vec<BrokerId>>, PlacementError> {
    if replication_factor < 1 {
        return Err(PlacementError::InvalidReplicationFactor(replication_factor));
    }
    if count > MAX_PARTITIONS_PER_CALL {
        return Err(PlacementError::TooManyPartitions {
            count,
            max: MAX_PARTITIONS_PER_CALL,
        });
    }
    let order = rack_interleaved(brokers);
    let n = order.len();
    if replication_factor as usize > n {
        return Err(PlacementError::NotEnoughBrokers {
            replication_factor,
            brokers: n,
        });
    }
    let rack_of: BTreeMap<BrokerId, Option<&str>> =
        brokers.iter().map(|b| (b.id, b.rack.as_deref())).collect();
    let rack_count = rack_of
        .values()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let rf = replication_factor as usize;
    // `count` is at most MAX_PARTITIONS_PER_CALL here, so this reservation is bounded; the
    // range saturates so that a first partition near i32::MAX cannot overflow.
    let mut out = Vec::with_capacity(count.max(0) as usize);
    let first = first_partition.max(0);
    for p in first..first.saturating_add(count.max(0)) {
        let p = p as usize;
        let leader = (start + p) % n;
        let shift = if n > 1 { 1 + (p / n) % (n - 1) } else { 0 };
        let mut replicas = vec![order[leader]];
        let mut racks_used = vec![rack_of[&order[leader]]];
        // Two passes over the ring at most: the first honours rack diversity, the second
        // (reached only once every rack is used) fills up with any unused broker.
        for step in 0..2 * n {
            if replicas.len() == rf {
                break;
            }
            let candidate = order[(leader + shift + step) % n];
            if replicas.contains(&candidate) {
                continue;
            }
            let rack = rack_of[&candidate];
            if racks_used.len() < rack_count && racks_used.contains(&rack) && step < n {
                continue;
            }
            replicas.push(candidate);
            racks_used.push(rack);
        }
        debug_assert_eq!(replicas.len(), rf);
        out.push(replicas);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn broker(id: BrokerId, rack: Option<&str>) -> BrokerInfo {
        BrokerInfo {
            id,
            rack: rack.map(str::to_owned),
        }
    }

    #[test]
    fn interleaves_racks() {
        let brokers = vec![
            broker(1, Some("a")),
            broker(2, Some("a")),
            broker(3, Some("b")),
            broker(4, Some("b")),
            broker(5, Some("c")),
        ];
        assert_eq!(rack_interleaved(&brokers), vec![1, 3, 5, 2, 4]);
    }

    #[test]
    fn single_broker_gets_every_partition() {
        let got = assign_replicas(&[broker(1, None)], 0, 3, 1, 0).unwrap();
        assert_eq!(got, vec![vec![1], vec![1], vec![1]]);
    }

    #[test]
    fn rejects_replication_factor_above_broker_count() {
        let err = assign_replicas(&[broker(1, None)], 0, 1, 3, 0).unwrap_err();
        assert_eq!(
            err,
            PlacementError::NotEnoughBrokers {
                replication_factor: 3,
                brokers: 1
            }
        );
        assert_eq!(
            assign_replicas(&[broker(1, None)], 0, 1, 0, 0).unwrap_err(),
            PlacementError::InvalidReplicationFactor(0)
        );
    }

    #[test]
    fn replicas_are_distinct_span_racks_and_leaders_balance() {
        let brokers: Vec<_> = (0..6)
            .map(|i| broker(i, Some(["a", "b", "c"][i as usize % 3])))
            .collect();
        let racks: BTreeMap<BrokerId, String> = brokers
            .iter()
            .map(|b| (b.id, b.rack.clone().unwrap()))
            .collect();
        let got = assign_replicas(&brokers, 0, 60, 3, 0).unwrap();
        let mut leaders: BTreeMap<BrokerId, usize> = BTreeMap::new();
        for replicas in &got {
            let distinct: BTreeSet<_> = replicas.iter().collect();
            assert_eq!(distinct.len(), 3, "replicas not distinct: {replicas:?}");
            let rack_set: BTreeSet<_> = replicas.iter().map(|b| &racks[b]).collect();
            assert_eq!(rack_set.len(), 3, "replicas share a rack: {replicas:?}");
            *leaders.entry(replicas[0]).or_default() += 1;
        }
        assert!(leaders.values().all(|&c| c == 10), "{leaders:?}");
    }

    #[test]
    fn refuses_counts_beyond_the_per_call_bound_without_allocating() {
        let one = [broker(1, None)];
        assert_eq!(
            assign_replicas(&one, 0, i32::MAX, 1, 0).unwrap_err(),
            PlacementError::TooManyPartitions {
                count: i32::MAX,
                max: MAX_PARTITIONS_PER_CALL
            }
        );
        assert_eq!(
            assign_replicas(&one, 0, MAX_PARTITIONS_PER_CALL, 1, 0)
                .unwrap()
                .len(),
            MAX_PARTITIONS_PER_CALL as usize
        );
        // A first partition near the top of the range does not overflow.
        assert_eq!(
            assign_replicas(&one, i32::MAX - 1, 5, 1, 0).unwrap().len(),
            1
        );
        assert!(assign_replicas(&one, 0, -5, 1, 0).unwrap().is_empty());
    }

    #[test]
    fn placement_is_deterministic_whatever_the_input_order() {
        let a = vec![
            broker(3, Some("x")),
            broker(1, Some("y")),
            broker(2, Some("x")),
        ];
        let mut b = a.clone();
        b.reverse();
        assert_eq!(
            assign_replicas(&a, 0, 10, 2, 7).unwrap(),
            assign_replicas(&b, 0, 10, 2, 7).unwrap()
        );
    }
}
