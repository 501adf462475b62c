//! Broker membership on the active controller: registrations, heartbeats and fencing.
//! The decisions are pure functions of the image (and, for session expiry, of the last
//! heartbeat times the active controller keeps in memory): they return the metadata
//! records that carry them out, which the controller commits.

use super::image::MetadataImage;
use super::records::MetadataRecord;
use std::collections::BTreeMap;

/// The record that gives a partition a new leader (or none, -1) and ISR; the leader epoch
/// is bumped when the leader changes (so clients and replicas see it), the partition epoch
/// on every change.
fn changed(
    topic_id: uuid::Uuid,
    partition: i32,
    p: &super::image::PartitionImage,
    leader: i32,
    isr: Vec<i32>,
) -> MetadataRecord {
    MetadataRecord::Partition {
        topic_id,
        partition,
        replicas: p.replicas.clone(),
        isr,
        leader,
        leader_epoch: p.leader_epoch + i32::from(leader != p.leader),
        partition_epoch: p.partition_epoch + 1,
    }
}

/// Records that take `broker` out of every ISR and every leadership (it is being fenced,
/// shut down or replaced by a new incarnation, whose log may be behind): a partition it
/// leads gets another live in-sync replica as leader, or none (-1) when there is none.
/// The last member of an ISR stays in it, as in Kafka: it holds the data, and the
/// partition waits for it (unless unclean election is allowed).
pub fn leaves(image: &MetadataImage, broker: i32) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for t in image.topics.values() {
        for (index, p) in &t.partitions {
            if p.leader != broker && !p.isr.contains(&broker) {
                continue;
            }
            let rest: Vec<i32> = p.isr.iter().copied().filter(|r| *r != broker).collect();
            let leader = if p.leader == broker {
                rest.iter()
                    .copied()
                    .find(|r| image.brokers.get(r).is_some_and(|b| !b.fenced))
                    .unwrap_or(-1)
            } else {
                p.leader
            };
            let isr = if rest.is_empty() { p.isr.clone() } else { rest };
            if leader == p.leader && isr == p.isr {
                continue;
            }
            out.push(changed(t.id, *index, p, leader, isr));
        }
    }
    out
}

/// Records that give leaderless partitions back to `broker` when it is one of their
/// in-sync replicas (it is being unfenced, so it is live and caught up).
pub fn leaders_restored_to(image: &MetadataImage, broker: i32) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for t in image.topics.values() {
        for (index, p) in &t.partitions {
            if p.leader != -1 || !p.isr.contains(&broker) {
                continue;
            }
            out.push(changed(t.id, *index, p, broker, p.isr.clone()));
        }
    }
    out
}

/// Fences `broker`: the fence record, and it leaves every ISR and leadership.
pub fn fence(image: &MetadataImage, broker: i32) -> Vec<MetadataRecord> {
    let mut out = vec![MetadataRecord::BrokerFenced {
        id: broker,
        fenced: true,
    }];
    out.extend(leaves(image, broker));
    out
}

/// Unfences `broker` and gives it back the leaderless partitions it is in sync for.
pub fn unfence(image: &MetadataImage, broker: i32) -> Vec<MetadataRecord> {
    let mut out = vec![MetadataRecord::BrokerFenced {
        id: broker,
        fenced: false,
    }];
    out.extend(leaders_restored_to(image, broker));
    out
}

/// Unfenced brokers whose last heartbeat is older than the session timeout.
pub fn expired_sessions(
    image: &MetadataImage,
    last_heartbeat_ms: &BTreeMap<i32, i64>,
    now_ms: i64,
    session_timeout_ms: i64,
) -> Vec<i32> {
    image
        .live_brokers()
        .filter(|b| {
            last_heartbeat_ms
                .get(&b.id)
                .is_none_or(|t| now_ms.saturating_sub(*t) > session_timeout_ms)
        })
        .map(|b| b.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn image_with(brokers: &[(i32, bool)], partitions: &[(i32, Vec<i32>)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (id, fenced) in brokers {
            image.apply(&MetadataRecord::RegisterBroker {
                id: *id,
                rack: None,
                host: "h".into(),
                port: 1,
                incarnation_id: None,
            });
            image.apply(&MetadataRecord::BrokerFenced {
                id: *id,
                fenced: *fenced,
            });
        }
        let topic_id = Uuid::from_u128(7);
        image.apply(&MetadataRecord::Topic {
            name: "t".into(),
            topic_id,
        });
        for (i, (leader, replicas)) in partitions.iter().enumerate() {
            image.apply(&MetadataRecord::Partition {
                topic_id,
                partition: i as i32,
                replicas: replicas.clone(),
                isr: replicas.clone(),
                leader: *leader,
                leader_epoch: 3,
                partition_epoch: 5,
            });
        }
        image
    }

    fn leaders(image: &MetadataImage) -> Vec<(i32, i32)> {
        image.topics["t"]
            .partitions
            .values()
            .map(|p| (p.leader, p.leader_epoch))
            .collect()
    }

    #[test]
    fn fencing_takes_the_broker_out_of_isrs_and_moves_its_leaderships_to_live_isr_members() {
        let mut image = image_with(
            &[(1, false), (2, false), (3, true)],
            &[
                (1, vec![1]),
                (1, vec![1, 3, 2]),
                (2, vec![2, 1]),
                (1, vec![1, 3]),
            ],
        );
        for r in fence(&image.clone(), 1) {
            image.apply(&r);
        }
        assert!(image.brokers[&1].fenced);
        // Broker 3 is fenced too, so partition 1 skips it; partition 2 was not led by 1,
        // so only its ISR changes and its leader epoch stays.
        assert_eq!(leaders(&image), vec![(-1, 4), (2, 4), (2, 3), (-1, 4)]);
        let isrs: Vec<(Vec<i32>, i32)> = image.topics["t"]
            .partitions
            .values()
            .map(|p| (p.isr.clone(), p.partition_epoch))
            .collect();
        // 1 leaves every ISR but one where it is the last member: that one keeps it.
        assert_eq!(
            isrs,
            vec![(vec![1], 6), (vec![3, 2], 6), (vec![2], 6), (vec![3], 6)]
        );
        assert!(
            leaves(&image, 1).is_empty(),
            "fencing again changes nothing"
        );
    }

    #[test]
    fn unfencing_gives_back_only_leaderless_partitions_it_is_in_sync_for() {
        let mut image = image_with(
            &[(1, true), (2, false)],
            &[(-1, vec![1]), (2, vec![2]), (-1, vec![2])],
        );
        for r in unfence(&image.clone(), 1) {
            image.apply(&r);
        }
        assert!(!image.brokers[&1].fenced);
        assert_eq!(leaders(&image), vec![(1, 4), (2, 3), (-1, 3)]);
    }

    #[test]
    fn sessions_expire_after_the_timeout_only_for_live_brokers() {
        let image = image_with(&[(1, false), (2, false), (3, true), (4, false)], &[]);
        let beats = BTreeMap::from([(1, 1000), (2, 4000), (3, 0)]);
        // 1 is 5 s old, 2 is 2 s old, 3 is fenced already, 4 never heartbeat.
        assert_eq!(expired_sessions(&image, &beats, 6000, 3000), vec![1, 4]);
    }
}
