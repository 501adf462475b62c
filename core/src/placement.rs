//! Rack-aware replica placement for new partitions, with the goals of Kafka's
//! `StripedReplicaPlacer`: replicas of a partition spread over as many racks as they can,
//! leaders spread evenly over brokers, and followers spread evenly too, without any
//! randomness so that a plan is reviewable and testable.
//!
//! Placement is a pure function of its inputs: the same set of brokers (in any order), the
//! same partition range and the same `start` always give the same assignment. The golden
//! files under `core/testdata/placement/` pin that assignment down.

use crate::{BrokerId, BrokerInfo};
use std::collections::{BTreeMap, BTreeSet};

/// The most partitions one call places. `count` usually comes from a CreateTopics or
/// CreatePartitions request, so the broker caps it (at this value or below) before calling;
/// this limit is the last line of defence against an allocation sized by the wire.
pub const MAX_PARTITIONS: i32 = 100_000;

/// Up-front capacity of the result: enough for every realistic topic, while a large
/// `count` grows the vector only as partitions are actually placed.
const CAPACITY_HINT: usize = 1024;

/// Why replicas cannot be placed, or why an explicit assignment is invalid. The messages are
/// Kafka's own where Kafka has one, so a client sees what it would see from a Kafka broker.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error("Invalid replication factor {0}: the replication factor must be positive.")]
    InvalidReplicationFactor(i32),
    #[error(
        "The target replication factor of {replication_factor} cannot be reached because only {brokers} broker(s) are registered."
    )]
    NotEnoughBrokers {
        replication_factor: i32,
        brokers: usize,
    },
    #[error("Invalid partition range starting at {first_partition} with {count} partition(s): both must be non-negative.")]
    InvalidPartitionRange { first_partition: i32, count: i32 },
    #[error("Cannot place {count} partitions in one request; at most {max} are allowed.")]
    TooManyPartitions { count: i32, max: i32 },
    #[error("The manual partition assignment includes an empty replica list.")]
    EmptyReplicaList { partition: usize },
    #[error("The manual partition assignment includes the broker {broker} more than once.")]
    DuplicateBroker { partition: usize, broker: BrokerId },
    #[error(
        "The manual partition assignment includes broker {broker}, but no such broker is registered."
    )]
    UnknownBroker { partition: usize, broker: BrokerId },
    #[error(
        "The manual partition assignment includes a partition with {replicas} replica(s), but this is not consistent with previous partitions, which have {expected} replica(s)."
    )]
    InconsistentReplicationFactor {
        partition: usize,
        replicas: usize,
        expected: usize,
    },
}

/// The brokers in rack-interleaved order, with the rack (as an index into the sorted racks)
/// of each position.
struct Ring {
    order: Vec<BrokerId>,
    rack: Vec<usize>,
    racks: usize,
}

impl Ring {
    fn new(brokers: &[BrokerInfo]) -> Self {
        // Each broker id counts once, whatever the caller listed; should one id come with two
        // racks, the smaller rack wins, so the outcome still depends only on the set.
        let mut by_id: BTreeMap<BrokerId, Option<&str>> = BTreeMap::new();
        for b in brokers {
            let rack = b.rack.as_deref();
            by_id
                .entry(b.id)
                .and_modify(|r| *r = (*r).min(rack))
                .or_insert(rack);
        }
        let mut by_rack: BTreeMap<Option<&str>, Vec<BrokerId>> = BTreeMap::new();
        for (id, rack) in by_id {
            by_rack.entry(rack).or_default().push(id);
        }
        let longest = by_rack.values().map(Vec::len).max().unwrap_or(0);
        let mut order = Vec::with_capacity(brokers.len());
        let mut rack = Vec::with_capacity(brokers.len());
        for i in 0..longest {
            for (r, ids) in by_rack.values().enumerate() {
                if let Some(id) = ids.get(i) {
                    order.push(*id);
                    rack.push(r);
                }
            }
        }
        Ring {
            order,
            rack,
            racks: by_rack.len(),
        }
    }
}

/// Orders brokers so that walking the list visits racks round-robin: the first broker of every
/// rack, then the second of every rack, and so on, racks and brokers in ascending order.
/// Brokers without a rack form one rack of their own. Inputs are sorted and deduplicated
/// first, so the order never depends on how the caller listed them.
pub fn rack_interleaved(brokers: &[BrokerInfo]) -> Vec<BrokerId> {
    Ring::new(brokers).order
}

/// Assigns replicas to partitions `first_partition..first_partition + count`; the first
/// replica of each is its leader.
///
/// - **Leaders** walk the rack-interleaved list: partition `p` is led by the broker at
///   `(start + p) % n`. Any run of partitions therefore gives every broker the same number
///   of leaderships, give or take one, however uneven the racks are. Callers vary `start`
///   (per topic) so that small topics do not all lead on the same broker.
/// - **Followers** are chosen one at a time. The candidate must be a broker the partition
///   does not use yet; among those, the rack holding fewest of the partition's replicas
///   wins (so replicas span `min(replication_factor, racks)` racks, and beyond that fill
///   racks evenly), then the broker with the fewest followers placed so far in this call
///   (so followers spread, and a lone broker in a small rack is not favoured), then the
///   broker closest after the leader in the interleaved list (which gives Kafka's striped
///   pattern when racks are even).
/// - **Failover**: the second replica is where leadership goes when the leader fails, so a
///   leader's partitions should name different second replicas, or one broker inherits
///   them all. With one follower, the candidate that came second behind this leader least
///   often wins ties on load; with more, the chosen follower that came second least often
///   is moved to second place. (Weighing this during the choice with several followers would cost the
///   follower balance above, which comes first.)
///
/// Unlike Kafka's placer nothing is random and the leader is not picked rack-first, which
/// is what keeps leaders even when racks are not (Kafka PR #12529 shows its skew).
///
/// `count` is untrusted input: the caller caps it, and anything above [`MAX_PARTITIONS`]
/// is refused. Work is `O(count · replication_factor · brokers)`.
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
    if first_partition < 0 || count < 0 {
        return Err(PlacementError::InvalidPartitionRange {
            first_partition,
            count,
        });
    }
    if count > MAX_PARTITIONS {
        return Err(PlacementError::TooManyPartitions {
            count,
            max: MAX_PARTITIONS,
        });
    }
    let ring = Ring::new(brokers);
    let n = ring.order.len();
    let rf = replication_factor as usize;
    if rf > n {
        return Err(PlacementError::NotEnoughBrokers {
            replication_factor,
            brokers: n,
        });
    }
    let count = count as usize;
    let first = first_partition as usize;
    let mut followers = vec![0usize; n];
    // How often each broker came second behind each leader (positions in the ring); at most
    // one entry per placed partition.
    let mut second: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut rack_replicas = vec![0usize; ring.racks];
    let mut chosen: Vec<usize> = Vec::with_capacity(rf);
    let mut out = Vec::with_capacity(count.min(CAPACITY_HINT));
    for p in first..first + count {
        // Cannot overflow: `p` is below 2^31 + MAX_PARTITIONS and `start % n` below n.
        let leader = (start % n + p) % n;
        rack_replicas.fill(0);
        chosen.clear();
        chosen.push(leader);
        rack_replicas[ring.rack[leader]] += 1;
        while chosen.len() < rf {
            // One pass over the ring after the leader; `step` is unique, so the key never
            // ties and the choice is fully determined.
            let mut best: Option<((usize, usize, usize, usize), usize)> = None;
            for step in 1..n {
                let pos = (leader + step) % n;
                if chosen.contains(&pos) {
                    continue;
                }
                let behind = if rf == 2 {
                    second_of(&second, leader, pos)
                } else {
                    0
                };
                let key = (rack_replicas[ring.rack[pos]], followers[pos], behind, step);
                if best.is_none_or(|(k, _)| key < k) {
                    best = Some((key, pos));
                }
            }
            let (_, pos) = best.expect("rf <= brokers leaves an unused broker");
            chosen.push(pos);
            rack_replicas[ring.rack[pos]] += 1;
            followers[pos] += 1;
        }
        debug_assert_eq!(
            rack_replicas.iter().filter(|&&c| c > 0).count(),
            rf.min(ring.racks),
            "replicas span as many racks as they can"
        );
        if rf > 2 {
            let (i, _) = chosen[1..]
                .iter()
                .enumerate()
                .min_by_key(|&(i, &f)| (second_of(&second, leader, f), i))
                .expect("rf > 2 has followers");
            chosen[1..=i + 1].rotate_right(1);
        }
        if rf > 1 {
            *second.entry((leader, chosen[1])).or_default() += 1;
        }
        out.push(chosen.iter().map(|&i| ring.order[i]).collect());
    }
    debug_assert_eq!(out.len(), count);
    Ok(out)
}

fn second_of(second: &BTreeMap<(usize, usize), usize>, leader: usize, follower: usize) -> usize {
    second.get(&(leader, follower)).copied().unwrap_or(0)
}

/// The `start` with which [`assign_replicas`] continues a topic's leader rotation when
/// partitions are added (CreatePartitions, `first_partition = existing.len()`): the new
/// partitions are led as if the topic had been created with all of them at once, so the
/// topic's leaders stay within one of each other. The rotation is anchored at the last
/// partition whose first replica is still among `brokers`; with none, it is 0. Like Kafka's
/// placer, which starts after the rack of the last partition's leader, it looks only at the
/// topic's own partitions.
pub fn continuing_start(brokers: &[BrokerInfo], existing: &[Vec<BrokerId>]) -> usize {
    let order = rack_interleaved(brokers);
    let n = order.len();
    if n == 0 {
        return 0;
    }
    for (p, replicas) in existing.iter().enumerate().rev() {
        let Some(leader) = replicas.first() else {
            continue;
        };
        if let Some(pos) = order.iter().position(|b| b == leader) {
            // Partition `p` was led from `pos`, so `(start + p) % n == pos`.
            return (pos + n - p % n) % n;
        }
    }
    0
}

/// Checks explicit replica assignments (CreateTopics' `assignments`, CreatePartitions'
/// `assignments`) against the known brokers: every partition has at least one replica, no
/// broker twice, only known brokers, and every partition as many replicas as the first.
pub fn check_assignment(
    brokers: &[BrokerInfo],
    assignments: &[Vec<BrokerId>],
) -> Result<(), PlacementError> {
    let expected = assignments.first().map_or(0, Vec::len);
    check_assignment_with_replication_factor(brokers, assignments, expected)
}

/// Like [`check_assignment`], but every partition must have `replication_factor` replicas:
/// CreatePartitions uses this so that new partitions match the topic's existing ones.
pub fn check_assignment_with_replication_factor(
    brokers: &[BrokerInfo],
    assignments: &[Vec<BrokerId>],
    replication_factor: usize,
) -> Result<(), PlacementError> {
    let known: BTreeSet<BrokerId> = brokers.iter().map(|b| b.id).collect();
    for (partition, replicas) in assignments.iter().enumerate() {
        if replicas.is_empty() {
            return Err(PlacementError::EmptyReplicaList { partition });
        }
        let mut seen = BTreeSet::new();
        for &broker in replicas {
            if !seen.insert(broker) {
                return Err(PlacementError::DuplicateBroker { partition, broker });
            }
        }
        if let Some(&broker) = replicas.iter().find(|b| !known.contains(b)) {
            return Err(PlacementError::UnknownBroker { partition, broker });
        }
        if replicas.len() != replication_factor {
            return Err(PlacementError::InconsistentReplicationFactor {
                partition,
                replicas: replicas.len(),
                expected: replication_factor,
            });
        }
    }
    Ok(())
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

    #[test]
    fn refuses_untrusted_ranges_before_allocating() {
        let b = [broker(1, None)];
        assert_eq!(
            assign_replicas(&b, 0, i32::MAX, 1, 0).unwrap_err(),
            PlacementError::TooManyPartitions {
                count: i32::MAX,
                max: MAX_PARTITIONS
            }
        );
        assert!(matches!(
            assign_replicas(&b, -1, 1, 1, 0),
            Err(PlacementError::InvalidPartitionRange { .. })
        ));
        assert!(matches!(
            assign_replicas(&b, 0, -1, 1, 0),
            Err(PlacementError::InvalidPartitionRange { .. })
        ));
        assert_eq!(
            assign_replicas(&b, 0, 0, 1, 0).unwrap(),
            Vec::<Vec<_>>::new()
        );
        // A huge `start` (a topic count) and a high first partition must not overflow.
        assert_eq!(
            assign_replicas(&b, i32::MAX - 1, 1, 1, usize::MAX).unwrap(),
            vec![vec![1]]
        );
    }

    #[test]
    fn a_broker_listed_twice_counts_once() {
        let brokers = vec![
            broker(2, Some("b")),
            broker(1, Some("a")),
            broker(2, Some("a")),
        ];
        assert_eq!(rack_interleaved(&brokers), vec![1, 2]);
        assert!(matches!(
            assign_replicas(&brokers, 0, 1, 3, 0),
            Err(PlacementError::NotEnoughBrokers { brokers: 2, .. })
        ));
    }

    #[test]
    fn check_assignment_names_the_first_problem() {
        let brokers = vec![broker(1, None), broker(2, None), broker(3, None)];
        assert_eq!(check_assignment(&brokers, &[]), Ok(()));
        assert_eq!(
            check_assignment(&brokers, &[vec![1, 2], vec![3, 1]]),
            Ok(())
        );
        assert_eq!(
            check_assignment(&brokers, &[vec![1, 2], vec![]]),
            Err(PlacementError::EmptyReplicaList { partition: 1 })
        );
        assert_eq!(
            check_assignment(&brokers, &[vec![1, 1]]),
            Err(PlacementError::DuplicateBroker {
                partition: 0,
                broker: 1
            })
        );
        assert_eq!(
            check_assignment(&brokers, &[vec![1, 9]]),
            Err(PlacementError::UnknownBroker {
                partition: 0,
                broker: 9
            })
        );
        assert_eq!(
            check_assignment(&brokers, &[vec![1, 2], vec![3]]),
            Err(PlacementError::InconsistentReplicationFactor {
                partition: 1,
                replicas: 1,
                expected: 2
            })
        );
        assert_eq!(
            check_assignment_with_replication_factor(&brokers, &[vec![1, 2]], 3)
                .unwrap_err()
                .to_string(),
            "The manual partition assignment includes a partition with 2 replica(s), but this \
             is not consistent with previous partitions, which have 3 replica(s)."
        );
    }

    #[test]
    fn continuing_start_resumes_the_rotation_after_the_last_leader() {
        let brokers: Vec<_> = (1..=5)
            .map(|i| broker(i, Some(["a", "b"][i as usize % 2])))
            .collect();
        let all = assign_replicas(&brokers, 0, 12, 2, 3).unwrap();
        for existing in 1..12 {
            let start = continuing_start(&brokers, &all[..existing]);
            let more =
                assign_replicas(&brokers, existing as i32, 12 - existing as i32, 2, start).unwrap();
            let want: Vec<_> = all[existing..].iter().map(|r| r[0]).collect();
            let got: Vec<_> = more.iter().map(|r| r[0]).collect();
            assert_eq!(got, want, "after {existing} partitions");
        }
        // A leader that left the cluster is skipped: the one before it anchors the rotation.
        let mut existing = all[..4].to_vec();
        existing[3][0] = 99;
        assert_eq!(
            continuing_start(&brokers, &existing),
            continuing_start(&brokers, &all[..3])
        );
        assert_eq!(continuing_start(&brokers, &[vec![99]]), 0);
        assert_eq!(continuing_start(&[], &all), 0);
    }
}
