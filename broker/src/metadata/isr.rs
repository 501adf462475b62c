//! AlterPartition on the active controller: a partition leader's ISR change, checked
//! against the image by Kafka's rules and in Kafka's order, becomes the Partition record
//! that commits it. Pure: the controller shell commits what it returns.

use super::image::{MetadataImage, PartitionImage};
use super::records::MetadataRecord;
use super::IsrOutcome;
use crate::protocol::codes;
use uuid::Uuid;

/// One partition's ISR change as its leader asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The new ISR with the broker epoch the leader saw for each member (KIP-903; -1
    /// skips the epoch check, as AlterPartition v2 cannot carry one).
    pub new_isr: Vec<(i32, i64)>,
}

/// Why a broker may not be in an ISR: it is not registered, fenced (which includes a
/// controlled shutdown here), or a newer incarnation than the one the leader saw.
fn ineligible(image: &MetadataImage, broker: i32, epoch: i64) -> Option<&'static str> {
    match image.brokers.get(&broker) {
        None => Some("not registered"),
        Some(b) if b.fenced => Some("fenced"),
        Some(b) if epoch != -1 && b.epoch != epoch => Some("restarted since the leader saw it"),
        Some(_) => None,
    }
}

/// Checks one change from `broker` against `image`: the partition's state after it, or
/// the Kafka error code that refuses it (NOT_CONTROLLER when the leader knows a newer
/// state than this controller, which then cannot be the active one).
pub fn check(image: &MetadataImage, broker: i32, change: &IsrChange) -> IsrOutcome {
    let Some(topic) = image.topic_by_id(&change.topic_id) else {
        return Err((codes::UNKNOWN_TOPIC_ID, "No topic has this id.".into()));
    };
    let Some(p) = topic.partitions.get(&change.partition) else {
        return Err((
            codes::UNKNOWN_TOPIC_OR_PARTITION,
            format!("{} has no partition {}.", topic.name, change.partition),
        ));
    };
    if change.leader_epoch > p.leader_epoch || change.partition_epoch > p.partition_epoch {
        return Err((
            codes::NOT_CONTROLLER,
            "The leader knows a newer partition state than this controller.".into(),
        ));
    }
    if change.leader_epoch < p.leader_epoch {
        return Err((
            codes::FENCED_LEADER_EPOCH,
            format!(
                "Leader epoch {} is older than the partition's {}.",
                change.leader_epoch, p.leader_epoch
            ),
        ));
    }
    if broker != p.leader {
        return Err((
            codes::INVALID_REQUEST,
            format!(
                "Broker {broker} does not lead the partition (the leader is {}).",
                p.leader
            ),
        ));
    }
    if change.partition_epoch < p.partition_epoch {
        return Err((
            codes::INVALID_UPDATE_VERSION,
            format!(
                "Partition epoch {} is older than the partition's {}.",
                change.partition_epoch, p.partition_epoch
            ),
        ));
    }
    let ids: Vec<i32> = change.new_isr.iter().map(|(id, _)| *id).collect();
    let duplicate = ids.iter().enumerate().any(|(i, id)| ids[..i].contains(id));
    if ids.is_empty() || duplicate || ids.iter().any(|id| !p.replicas.contains(id)) {
        return Err((
            codes::INVALID_REQUEST,
            format!(
                "{ids:?} is not a set of the partition's replicas {:?}.",
                p.replicas
            ),
        ));
    }
    if !ids.contains(&p.leader) {
        return Err((
            codes::INVALID_REQUEST,
            "The ISR must include its leader.".into(),
        ));
    }
    let refused: Vec<String> = change
        .new_isr
        .iter()
        .filter_map(|(id, epoch)| ineligible(image, *id, *epoch).map(|why| format!("{id} ({why})")))
        .collect();
    if !refused.is_empty() {
        return Err((
            codes::INELIGIBLE_REPLICA,
            format!("Not eligible for the ISR: {}.", refused.join(", ")),
        ));
    }
    if ids == p.isr {
        return Ok(p.clone());
    }
    Ok(PartitionImage {
        isr: ids,
        partition_epoch: p.partition_epoch + 1,
        ..p.clone()
    })
}

/// The outcome of each change (in order) and the records that commit the accepted ones
/// that change anything. Two changes to one partition in one request: the second is
/// checked against the first's result, as if they came one after the other.
pub fn alter_partition(
    image: &MetadataImage,
    broker: i32,
    changes: &[IsrChange],
) -> (Vec<IsrOutcome>, Vec<MetadataRecord>) {
    let mut next = image.clone();
    let mut records = Vec::new();
    let mut outcomes = Vec::with_capacity(changes.len());
    for change in changes {
        let outcome = check(&next, broker, change);
        if let Ok(p) = &outcome {
            let before = next
                .topic_by_id(&change.topic_id)
                .and_then(|t| t.partitions.get(&change.partition));
            if before != Some(p) {
                let record = MetadataRecord::Partition {
                    topic_id: change.topic_id,
                    partition: change.partition,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                };
                next.apply(&record);
                records.push(record);
            }
        }
        outcomes.push(outcome);
    }
    (outcomes, records)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: Uuid = Uuid::from_u128(9);

    /// Brokers 1..=4 registered (epochs 10, 20, 30, 40), 4 fenced; partition 0 of "t" on
    /// [1, 2, 3] led by 1 at leader epoch 5, partition epoch 7, ISR [1, 2].
    fn image() -> MetadataImage {
        let mut image = MetadataImage::default();
        for id in 1..=4 {
            image.metadata_offset = id as i64 * 10 - 1;
            image.apply(&MetadataRecord::RegisterBroker {
                id,
                rack: None,
                endpoints: crate::metadata::Endpoint::plaintext("h", 1),
                incarnation_id: None,
            });
            image.apply(&MetadataRecord::BrokerFenced {
                id,
                fenced: id == 4,
            });
        }
        image.apply(&MetadataRecord::Topic {
            name: "t".into(),
            topic_id: TOPIC,
        });
        image.apply(&MetadataRecord::Partition {
            topic_id: TOPIC,
            partition: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2],
            leader: 1,
            leader_epoch: 5,
            partition_epoch: 7,
        });
        image
    }

    fn change(isr: &[i32]) -> IsrChange {
        IsrChange {
            topic_id: TOPIC,
            partition: 0,
            leader_epoch: 5,
            partition_epoch: 7,
            new_isr: isr.iter().map(|id| (*id, -1)).collect(),
        }
    }

    fn code(r: IsrOutcome) -> i16 {
        r.map_or_else(|(c, _)| c, |_| codes::NONE)
    }

    #[test]
    fn an_expansion_commits_with_the_next_partition_epoch_and_keeps_the_leadership() {
        let image = image();
        let (out, records) = alter_partition(&image, 1, &[change(&[1, 2, 3])]);
        let p = out[0].clone().unwrap();
        assert_eq!(
            (p.isr.clone(), p.leader, p.leader_epoch, p.partition_epoch),
            (vec![1, 2, 3], 1, 5, 8)
        );
        assert_eq!(records.len(), 1);
        let mut after = image.clone();
        after.apply(&records[0]);
        assert_eq!(after.topics["t"].partitions[&0], p);
    }

    #[test]
    fn an_unchanged_isr_succeeds_without_a_record() {
        let (out, records) = alter_partition(&image(), 1, &[change(&[1, 2])]);
        assert_eq!(out[0].clone().unwrap().partition_epoch, 7);
        assert!(records.is_empty());
    }

    #[test]
    fn refusals_carry_kafkas_codes_in_kafkas_order() {
        let image = image();
        let cases: Vec<(IsrChange, i32, i16)> = vec![
            (
                IsrChange {
                    topic_id: Uuid::from_u128(1),
                    ..change(&[1])
                },
                1,
                codes::UNKNOWN_TOPIC_ID,
            ),
            (
                IsrChange {
                    partition: 3,
                    ..change(&[1])
                },
                1,
                codes::UNKNOWN_TOPIC_OR_PARTITION,
            ),
            (
                IsrChange {
                    leader_epoch: 6,
                    ..change(&[1])
                },
                1,
                codes::NOT_CONTROLLER,
            ),
            (
                IsrChange {
                    leader_epoch: 4,
                    ..change(&[2])
                },
                2,
                codes::FENCED_LEADER_EPOCH,
            ),
            (change(&[1]), 2, codes::INVALID_REQUEST),
            (
                IsrChange {
                    partition_epoch: 6,
                    ..change(&[1])
                },
                1,
                codes::INVALID_UPDATE_VERSION,
            ),
            (change(&[1, 5]), 1, codes::INVALID_REQUEST),
            (change(&[1, 1]), 1, codes::INVALID_REQUEST),
            (change(&[]), 1, codes::INVALID_REQUEST),
            (change(&[2, 3]), 1, codes::INVALID_REQUEST),
        ];
        for (c, broker, want) in cases {
            assert_eq!(code(check(&image, broker, &c)), want, "{c:?} from {broker}");
        }
    }

    #[test]
    fn fenced_unregistered_and_restarted_members_are_ineligible() {
        let mut image = image();
        image.apply(&MetadataRecord::Partition {
            topic_id: TOPIC,
            partition: 0,
            replicas: vec![1, 2, 4],
            isr: vec![1],
            leader: 1,
            leader_epoch: 5,
            partition_epoch: 7,
        });
        assert_eq!(
            code(check(&image, 1, &change(&[1, 4]))),
            codes::INELIGIBLE_REPLICA,
            "4 is fenced"
        );
        let mut c = change(&[1, 2]);
        c.new_isr[1].1 = 19;
        assert_eq!(
            code(check(&image, 1, &c)),
            codes::INELIGIBLE_REPLICA,
            "2's epoch is 20: the leader saw an older incarnation"
        );
        c.new_isr[1].1 = 20;
        assert_eq!(code(check(&image, 1, &c)), codes::NONE);
        image.brokers.remove(&2);
        assert_eq!(
            code(check(&image, 1, &change(&[1, 2]))),
            codes::INELIGIBLE_REPLICA
        );
    }

    #[test]
    fn a_second_change_in_one_request_sees_the_first() {
        let image = image();
        let mut second = change(&[1]);
        second.partition_epoch = 8;
        let (out, records) = alter_partition(&image, 1, &[change(&[1, 2, 3]), second]);
        assert_eq!(out[1].clone().unwrap().isr, vec![1]);
        assert_eq!(out[1].clone().unwrap().partition_epoch, 9);
        assert_eq!(records.len(), 2);
        // The same stale change twice: the second is refused as out of date.
        let (out, _) = alter_partition(&image, 1, &[change(&[1, 2, 3]), change(&[1, 3])]);
        assert_eq!(code(out[1].clone()), codes::INVALID_UPDATE_VERSION);
    }
}
