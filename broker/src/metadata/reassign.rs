//! Partition reassignment (KIP-455) as pure planning over the metadata image: a new target
//! replica list adds the missing replicas at once (the partition's replicas are then the
//! target first, then those leaving), and the controller completes the move once every
//! added replica is in the ISR — leadership leaves a departing leader, the departing
//! replicas go. A null target cancels and reverts to the replicas before the move. Every
//! step bumps the leader epoch, so the leader tracks the new replica set from a fresh
//! state and followers fence fetches of the old one.

use super::image::{MetadataImage, PartitionImage, TopicImage};
use super::records::MetadataRecord;
use super::ApiError;
use crate::protocol::codes;

/// The records that start, change or cancel (`target: None`) the reassignment of one
/// partition, checked as Kafka's controller checks them. A target of another length
/// changes the replication factor, which AlterPartitionReassignments v1 may forbid
/// (`allow_rf_change`, KIP-860).
pub fn plan(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    target: Option<&[i32]>,
    allow_rf_change: bool,
) -> Result<Vec<MetadataRecord>, ApiError> {
    let unknown = || {
        ApiError::new(
            codes::UNKNOWN_TOPIC_OR_PARTITION,
            format!("The partition {topic}-{partition} does not exist."),
        )
    };
    let t = image.topics.get(topic).ok_or_else(unknown)?;
    let p = t.partitions.get(&partition).ok_or_else(unknown)?;
    let Some(target) = target else {
        if !p.reassigning() {
            return Err(ApiError::new(
                codes::NO_REASSIGNMENT_IN_PROGRESS,
                format!("No reassignment of {topic}-{partition} is in progress."),
            ));
        }
        return Ok(change(t, partition, p, p.original_replicas(), image));
    };
    check_target(image, target)?;
    let original = p.original_replicas();
    if !allow_rf_change && target.len() != original.len() {
        return Err(ApiError::new(
            codes::INVALID_REPLICATION_FACTOR,
            format!(
                "The replication factor is changed from {} to {} but allowReplicationFactorChange is false.",
                original.len(),
                target.len()
            ),
        ));
    }
    if target == original.as_slice() && !p.reassigning() {
        return Ok(Vec::new());
    }
    let adding: Vec<i32> = target
        .iter()
        .copied()
        .filter(|r| !original.contains(r))
        .collect();
    let removing: Vec<i32> = original
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    let mut replicas = target.to_vec();
    replicas.extend(&removing);
    Ok(vec![
        partition_on(image, t, partition, p, replicas),
        MetadataRecord::Reassignment {
            topic_id: t.id,
            partition,
            adding,
            removing,
            original,
        },
    ])
}

/// The partition ends on `replicas` and the reassignment is over.
fn change(
    t: &TopicImage,
    partition: i32,
    p: &PartitionImage,
    replicas: Vec<i32>,
    image: &MetadataImage,
) -> Vec<MetadataRecord> {
    vec![
        partition_on(image, t, partition, p, replicas),
        MetadataRecord::Reassignment {
            topic_id: t.id,
            partition,
            adding: Vec::new(),
            removing: Vec::new(),
            original: Vec::new(),
        },
    ]
}

/// The partition on `replicas`: the ISR keeps its members among them, leadership stays
/// unless its holder leaves (then the first live in-sync replica of the new set), and the
/// leader and partition epochs go up.
fn partition_on(
    image: &MetadataImage,
    t: &TopicImage,
    partition: i32,
    p: &PartitionImage,
    replicas: Vec<i32>,
) -> MetadataRecord {
    let isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|r| replicas.contains(r))
        .collect();
    let leader = if replicas.contains(&p.leader) {
        p.leader
    } else {
        first_live(image, &replicas, &isr).unwrap_or(-1)
    };
    partition_record(t, partition, p, replicas, isr, leader)
}

/// Reassignments whose added replicas have all joined the ISR, completed: the records of
/// every such partition in the image. One whose target has no live in-sync replica to
/// lead waits.
pub fn completions(image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for t in image.topics.values() {
        for (index, p) in &t.partitions {
            if !p.reassigning() || !p.adding.iter().all(|r| p.isr.contains(r)) {
                continue;
            }
            let target = p.target_replicas();
            let isr: Vec<i32> = p
                .isr
                .iter()
                .copied()
                .filter(|r| target.contains(r))
                .collect();
            if !target.contains(&p.leader) && first_live(image, &target, &isr).is_none() {
                continue;
            }
            records.extend(change(t, *index, p, target, image));
        }
    }
    records
}

/// The first of `order` that is in `isr` and registered unfenced.
fn first_live(image: &MetadataImage, order: &[i32], isr: &[i32]) -> Option<i32> {
    order
        .iter()
        .copied()
        .find(|r| isr.contains(r) && image.brokers.get(r).is_some_and(|b| !b.fenced))
}

fn partition_record(
    t: &TopicImage,
    partition: i32,
    p: &PartitionImage,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    leader: i32,
) -> MetadataRecord {
    MetadataRecord::Partition {
        topic_id: t.id,
        partition,
        replicas,
        isr,
        leader,
        leader_epoch: p.leader_epoch + 1,
        partition_epoch: p.partition_epoch + 1,
    }
}

fn check_target(image: &MetadataImage, target: &[i32]) -> Result<(), ApiError> {
    let invalid = |why: String| ApiError::new(codes::INVALID_REPLICA_ASSIGNMENT, why);
    if target.is_empty() {
        return Err(invalid("The replica list is empty.".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = target.iter().find(|r| !seen.insert(**r)) {
        return Err(invalid(format!(
            "The replica list names broker {dup} twice."
        )));
    }
    let unknown: Vec<String> = target
        .iter()
        .filter(|r| !image.brokers.contains_key(r))
        .map(|r| r.to_string())
        .collect();
    if !unknown.is_empty() {
        return Err(invalid(format!(
            "The proposed assignment contains non-existent broker ids: {}.",
            unknown.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Endpoint;

    fn image(replicas: Vec<i32>, isr: Vec<i32>, leader: i32) -> MetadataImage {
        let mut image = MetadataImage::default();
        for id in 1..=5 {
            image.apply(&MetadataRecord::RegisterBroker {
                id,
                rack: None,
                endpoints: Endpoint::plaintext("h", 1),
                incarnation_id: None,
            });
            image.apply(&MetadataRecord::BrokerFenced { id, fenced: false });
        }
        let topic_id = uuid::Uuid::from_u128(9);
        image.apply(&MetadataRecord::Topic {
            name: "t".into(),
            topic_id,
        });
        image.apply(&MetadataRecord::Partition {
            topic_id,
            partition: 0,
            replicas,
            isr,
            leader,
            leader_epoch: 4,
            partition_epoch: 7,
        });
        image
    }

    fn apply(image: &mut MetadataImage, records: &[MetadataRecord]) -> PartitionImage {
        for r in records {
            image.apply(r);
        }
        image.topics["t"].partitions[&0].clone()
    }

    /// Plans a new target (or a cancel) for t-0 and applies it.
    fn reassign(image: &mut MetadataImage, target: Option<&[i32]>) -> PartitionImage {
        let records = plan(image, "t", 0, target, true).unwrap();
        apply(image, &records)
    }

    #[test]
    fn a_move_adds_first_and_drops_the_leaving_replicas_once_the_new_ones_are_in_sync() {
        let mut img = image(vec![1, 2, 3], vec![1, 2, 3], 1);
        let p = reassign(&mut img, Some(&[4, 2, 3]));
        assert_eq!(p.replicas, vec![4, 2, 3, 1]);
        assert_eq!((p.adding.clone(), p.removing.clone()), (vec![4], vec![1]));
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 5, 8));
        assert!(completions(&img).is_empty(), "4 is not in sync yet");
        // 4 joins the ISR (an AlterPartition from the leader).
        img.apply(&MetadataRecord::Partition {
            topic_id: img.topics["t"].id,
            partition: 0,
            replicas: p.replicas.clone(),
            isr: vec![1, 2, 3, 4],
            leader: 1,
            leader_epoch: 5,
            partition_epoch: 9,
        });
        let done = completions(&img);
        let p = apply(&mut img, &done);
        assert_eq!(p.replicas, vec![4, 2, 3]);
        assert_eq!(p.isr, vec![2, 3, 4]);
        assert_eq!(
            p.leader, 4,
            "the leaving leader hands over to the first live in-sync target"
        );
        assert_eq!((p.leader_epoch, p.partition_epoch), (6, 10));
        assert!(!p.reassigning());
        assert!(completions(&img).is_empty());
    }

    #[test]
    fn cancelling_reverts_and_a_changed_target_is_honoured() {
        let mut img = image(vec![1, 2, 3], vec![1, 2, 3], 2);
        reassign(&mut img, Some(&[4, 2, 3]));
        // A new target mid-flight: measured against the replicas before the move.
        let p = reassign(&mut img, Some(&[5, 2, 3]));
        assert_eq!(p.replicas, vec![5, 2, 3, 1]);
        assert_eq!((p.adding.clone(), p.removing.clone()), (vec![5], vec![1]));
        let p = reassign(&mut img, None);
        assert_eq!(
            p.replicas,
            vec![1, 2, 3],
            "the order before the move, preferred leader first"
        );
        assert_eq!(p.isr, vec![1, 2, 3]);
        assert!(!p.reassigning());
        let e = plan(&img, "t", 0, None, true).unwrap_err();
        assert_eq!(e.code, codes::NO_REASSIGNMENT_IN_PROGRESS);
    }

    #[test]
    fn bad_targets_get_kafkas_codes() {
        let img = image(vec![1, 2, 3], vec![1, 2, 3], 1);
        let code = |t: Option<&[i32]>, topic: &str, part: i32| {
            plan(&img, topic, part, t, true).unwrap_err().code
        };
        assert_eq!(code(Some(&[]), "t", 0), codes::INVALID_REPLICA_ASSIGNMENT);
        assert_eq!(
            code(Some(&[1, 1]), "t", 0),
            codes::INVALID_REPLICA_ASSIGNMENT
        );
        assert_eq!(
            code(Some(&[1, 9]), "t", 0),
            codes::INVALID_REPLICA_ASSIGNMENT
        );
        assert_eq!(
            code(Some(&[1]), "nope", 0),
            codes::UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(code(Some(&[1]), "t", 3), codes::UNKNOWN_TOPIC_OR_PARTITION);
        assert!(
            plan(&img, "t", 0, Some(&[1, 2, 3]), true)
                .unwrap()
                .is_empty(),
            "no change"
        );
    }

    #[test]
    fn a_longer_or_shorter_target_changes_the_replication_factor_unless_forbidden() {
        let mut img = image(vec![1], vec![1], 1);
        let e = plan(&img, "t", 0, Some(&[1, 2, 3]), false).unwrap_err();
        assert_eq!(e.code, codes::INVALID_REPLICATION_FACTOR);
        let p = reassign(&mut img, Some(&[1, 2, 3]));
        assert_eq!((p.adding.clone(), p.removing.clone()), (vec![2, 3], vec![]));
        img.apply(&MetadataRecord::Partition {
            topic_id: img.topics["t"].id,
            partition: 0,
            replicas: p.replicas.clone(),
            isr: vec![1, 2, 3],
            leader: 1,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch + 1,
        });
        let done = completions(&img);
        let p = apply(&mut img, &done);
        assert_eq!((p.replicas.clone(), p.leader), (vec![1, 2, 3], 1));
        // Shrinking back: the dropped replicas leave at once, nothing needs to catch up.
        let p = reassign(&mut img, Some(&[3]));
        assert_eq!(p.replicas, vec![3, 1, 2]);
        let done = completions(&img);
        let p = apply(&mut img, &done);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![3], vec![3], 3)
        );
    }
}
