//! Pure parts of the ConsumerGroup controller: lag from committed and log end offsets,
//! whether a reset may run, and the offsets a reset commits.

use std::collections::{BTreeMap, BTreeSet};

use crate::crd::{OffsetReset, PartitionLag, PartitionOffset, ResetTarget};
use crate::kafka::TopicPartition;

/// Committed offset, log end offset and lag of every partition that has both; lag is
/// never negative (a log end read before a commit can lag behind it).
pub fn lag(
    committed: &BTreeMap<TopicPartition, i64>,
    log_end: &BTreeMap<TopicPartition, i64>,
) -> (Vec<PartitionLag>, i64) {
    let offsets: Vec<PartitionLag> = committed
        .iter()
        .filter_map(|(tp, &committed_offset)| {
            let log_end_offset = *log_end.get(tp)?;
            Some(PartitionLag {
                topic: tp.0.clone(),
                partition: tp.1,
                committed_offset,
                log_end_offset,
                lag: (log_end_offset - committed_offset).max(0),
            })
        })
        .collect();
    let total = offsets.iter().map(|p| p.lag).sum();
    (offsets, total)
}

/// Why a reset may not run now, if it may not: Kafka accepts an admin commit only for a
/// group without members, and moving offsets under running consumers would be undone
/// by their next commit anyway.
pub fn reset_refusal(state: &str, members: usize) -> Option<String> {
    if members == 0 && matches!(state, "Empty" | "Dead") {
        None
    } else {
        Some(format!(
            "group is {state} with {members} active member(s); offsets are reset only while it is Empty: stop the consumers, then set a new offsetReset.id"
        ))
    }
}

/// The topics a reset covers: the ones it names, else every topic the group has
/// committed offsets for.
pub fn reset_topics(reset: &OffsetReset, committed: &BTreeMap<TopicPartition, i64>) -> Vec<String> {
    if !reset.topics.is_empty() {
        let unique: BTreeSet<&String> = reset.topics.iter().collect();
        return unique.into_iter().cloned().collect();
    }
    let unique: BTreeSet<&String> = committed.keys().map(|(t, _)| t).collect();
    unique.into_iter().cloned().collect()
}

/// Offsets known per partition, for computing a reset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub earliest: BTreeMap<TopicPartition, i64>,
    pub latest: BTreeMap<TopicPartition, i64>,
    /// For `Timestamp`: the first offset at or after the timestamp; -1 when no record
    /// is that new.
    pub at_timestamp: BTreeMap<TopicPartition, i64>,
}

/// The offsets a reset commits on `selected` partitions (plus the explicit ones), each
/// within the partition's earliest and latest offsets, as `kafka-consumer-groups` does.
pub fn reset_targets(
    reset: &OffsetReset,
    selected: &[TopicPartition],
    known: &PartitionOffsets,
) -> BTreeMap<TopicPartition, i64> {
    let clamp = |tp: &TopicPartition, offset: i64| {
        let earliest = known.earliest.get(tp).copied().unwrap_or(0);
        let latest = known.latest.get(tp).copied().unwrap_or(offset);
        offset.clamp(earliest, latest.max(earliest))
    };
    let mut targets = BTreeMap::new();
    for tp in selected {
        let target = match reset.to {
            ResetTarget::Earliest => known.earliest.get(tp).copied(),
            ResetTarget::Latest => known.latest.get(tp).copied(),
            // No record that new: the end, so the group reads only what comes next.
            ResetTarget::Timestamp => match known.at_timestamp.get(tp).copied() {
                Some(offset) if offset >= 0 => Some(offset),
                _ => known.latest.get(tp).copied(),
            },
            ResetTarget::Offset => reset.offset,
        };
        if let Some(offset) = target {
            targets.insert(tp.clone(), clamp(tp, offset));
        }
    }
    if reset.to == ResetTarget::Offset {
        for explicit in &reset.offsets {
            let tp = (explicit.topic.clone(), explicit.partition);
            let offset = clamp(&tp, explicit.offset);
            targets.insert(tp, offset);
        }
    }
    targets
}

/// Offsets as status lists them.
pub fn as_list(offsets: &BTreeMap<TopicPartition, i64>) -> Vec<PartitionOffset> {
    offsets
        .iter()
        .map(|((topic, partition), offset)| PartitionOffset {
            topic: topic.clone(),
            partition: *partition,
            offset: *offset,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        (topic.to_owned(), partition)
    }

    fn reset(yaml: &str) -> OffsetReset {
        serde_yaml::from_str(yaml).expect("valid OffsetReset")
    }

    #[test]
    fn lag_is_log_end_minus_committed_and_never_negative() {
        let committed = BTreeMap::from([(tp("a", 0), 5), (tp("a", 1), 10), (tp("gone", 0), 3)]);
        let log_end = BTreeMap::from([(tp("a", 0), 12), (tp("a", 1), 9)]);
        let (offsets, total) = lag(&committed, &log_end);
        let summary: Vec<_> = offsets
            .iter()
            .map(|p| {
                (
                    p.topic.as_str(),
                    p.partition,
                    p.committed_offset,
                    p.log_end_offset,
                    p.lag,
                )
            })
            .collect();
        // The partition of a deleted topic has no log end and is left out.
        assert_eq!(summary, [("a", 0, 5, 12, 7), ("a", 1, 10, 9, 0)]);
        assert_eq!(total, 7);
    }

    #[test]
    fn resets_run_only_for_groups_without_members() {
        assert_eq!(reset_refusal("Empty", 0), None);
        assert_eq!(reset_refusal("Dead", 0), None);
        let refused = reset_refusal("Stable", 2).expect("refused");
        assert!(
            refused.contains("Stable with 2 active member(s)"),
            "{refused}"
        );
        assert!(reset_refusal("PreparingRebalance", 0).is_some());
    }

    #[test]
    fn a_reset_covers_named_topics_or_every_committed_one() {
        let committed = BTreeMap::from([(tp("b", 0), 1), (tp("a", 0), 1), (tp("a", 1), 1)]);
        assert_eq!(
            reset_topics(&reset("{id: r, to: Earliest}"), &committed),
            ["a", "b"]
        );
        assert_eq!(
            reset_topics(&reset("{id: r, to: Earliest, topics: [c, c]}"), &committed),
            ["c"]
        );
    }

    #[test]
    fn targets_per_kind_of_reset() {
        let selected = [tp("a", 0), tp("a", 1)];
        let known = PartitionOffsets {
            earliest: BTreeMap::from([(tp("a", 0), 2), (tp("a", 1), 0)]),
            latest: BTreeMap::from([(tp("a", 0), 10), (tp("a", 1), 4)]),
            at_timestamp: BTreeMap::from([(tp("a", 0), 7), (tp("a", 1), -1)]),
        };
        let targets = |yaml| {
            reset_targets(&reset(yaml), &selected, &known)
                .into_values()
                .collect::<Vec<_>>()
        };
        assert_eq!(targets("{id: r, to: Earliest}"), [2, 0]);
        assert_eq!(targets("{id: r, to: Latest}"), [10, 4]);
        // No record at or after the timestamp on a-1: its end.
        assert_eq!(targets("{id: r, to: Timestamp, timestampMs: 5}"), [7, 4]);
        // Clamped into [earliest, latest].
        assert_eq!(targets("{id: r, to: Offset, offset: 1}"), [2, 1]);
        assert_eq!(targets("{id: r, to: Offset, offset: 100}"), [10, 4]);
        // Explicit offsets win over `offset`, and may name only some partitions.
        assert_eq!(
            targets(
                "{id: r, to: Offset, offset: 3, offsets: [{topic: a, partition: 0, offset: 9}]}"
            ),
            [9, 3]
        );
        let only_explicit = reset_targets(
            &reset("{id: r, to: Offset, offsets: [{topic: a, partition: 1, offset: 3}]}"),
            &selected,
            &known,
        );
        assert_eq!(only_explicit, BTreeMap::from([(tp("a", 1), 3)]));
    }
}
