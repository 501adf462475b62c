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

/// Unclean leader elections: a leaderless partition none of whose in-sync replicas is
/// live gets its first live replica as leader when `unclean_allowed` says its topic has
/// unclean.leader.election.enable. That replica may lack acknowledged records, which are
/// then lost: the ISR becomes the new leader alone, and the other replicas (the old ISR
/// members too, when they return) truncate to its log.
pub fn unclean_elections(
    image: &MetadataImage,
    unclean_allowed: &dyn Fn(&str) -> bool,
) -> Vec<MetadataRecord> {
    let live = |r: &i32| image.brokers.get(r).is_some_and(|b| !b.fenced);
    let mut out = Vec::new();
    for t in image.topics.values() {
        let mut allowed = None;
        for (index, p) in &t.partitions {
            if p.leader != -1 || p.isr.iter().any(live) {
                continue;
            }
            let Some(next) = p.replicas.iter().copied().find(live) else {
                continue;
            };
            if !*allowed.get_or_insert_with(|| unclean_allowed(&t.name)) {
                break;
            }
            out.push(changed(t.id, *index, p, next, vec![next]));
        }
    }
    out
}

/// Preferred-leader elections (Kafka's auto.leader.rebalance.enable): a broker whose
/// share of non-preferred leaderships (partitions whose first replica, the preferred
/// leader, is another broker) exceeds `imbalance_percent` of the partitions it prefers to
/// lead hands each of them back to its preferred leader, where that replica is live and
/// in sync. Only in-sync replicas lead, so no committed record is lost by the move.
pub fn preferred_elections(image: &MetadataImage, imbalance_percent: i64) -> Vec<MetadataRecord> {
    let live = |r: i32| image.brokers.get(&r).is_some_and(|b| !b.fenced);
    // Per preferred broker: (partitions it prefers, of those led by someone else).
    let mut share: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for t in image.topics.values() {
        for p in t.partitions.values() {
            let Some(&preferred) = p.replicas.first() else {
                continue;
            };
            let e = share.entry(preferred).or_default();
            e.0 += 1;
            if p.leader != preferred {
                e.1 += 1;
            }
        }
    }
    let imbalanced = |b: i32| {
        share
            .get(&b)
            .is_some_and(|(total, off)| *off * 100 > imbalance_percent * *total)
    };
    let mut out = Vec::new();
    for t in image.topics.values() {
        for (index, p) in &t.partitions {
            let Some(&preferred) = p.replicas.first() else {
                continue;
            };
            if p.leader != preferred
                && p.isr.contains(&preferred)
                && live(preferred)
                && imbalanced(preferred)
            {
                out.push(changed(t.id, *index, p, preferred, p.isr.clone()));
            }
        }
    }
    out
}

/// Which leader an ElectLeaders request asks for (Kafka's election types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    /// The preferred (first) replica, if it is live and in sync.
    Preferred,
    /// A live in-sync replica for a leaderless partition, or else any live replica.
    Unclean,
}

/// One partition's outcome of an ElectLeaders request: `Ok` when a leader was elected,
/// else Kafka's code and why.
pub type ElectionOutcome = Result<(), (i16, String)>;

/// ElectLeaders on the active controller: for each asked-for partition (every partition
/// when `asked` is `None`), the outcome Kafka's controller gives and the records of the
/// elections that happen. For every partition, ELECTION_NOT_NEEDED results are left out,
/// as Kafka does.
pub fn elect_leaders(
    image: &MetadataImage,
    kind: ElectionType,
    asked: Option<&[(String, i32)]>,
) -> (Vec<(String, i32, ElectionOutcome)>, Vec<MetadataRecord>) {
    use crate::protocol::codes;
    let live = |r: &i32| image.brokers.get(r).is_some_and(|b| !b.fenced);
    let wanted: Vec<(String, i32)> = match asked {
        Some(list) => list.to_vec(),
        None => image
            .topics
            .values()
            .flat_map(|t| t.partitions.keys().map(|p| (t.name.clone(), *p)))
            .collect(),
    };
    let mut outcomes = Vec::new();
    let mut records = Vec::new();
    for (topic, index) in wanted {
        let found = image
            .topics
            .get(&topic)
            .and_then(|t| t.partitions.get(&index).map(|p| (t.id, p)));
        let Some((topic_id, p)) = found else {
            outcomes.push((
                topic,
                index,
                Err((
                    codes::UNKNOWN_TOPIC_OR_PARTITION,
                    "No such topic partition.".to_string(),
                )),
            ));
            continue;
        };
        let outcome = match kind {
            ElectionType::Preferred => {
                let preferred = p.replicas.first().copied().unwrap_or(-1);
                if p.leader == preferred {
                    Err((
                        codes::ELECTION_NOT_NEEDED,
                        "The preferred replica leads already.".to_string(),
                    ))
                } else if !p.isr.contains(&preferred) || !live(&preferred) {
                    Err((
                        codes::PREFERRED_LEADER_NOT_AVAILABLE,
                        format!("The preferred replica {preferred} is not live and in sync."),
                    ))
                } else {
                    records.push(changed(topic_id, index, p, preferred, p.isr.clone()));
                    Ok(())
                }
            }
            ElectionType::Unclean if p.leader != -1 => Err((
                codes::ELECTION_NOT_NEEDED,
                "The partition has a leader.".to_string(),
            )),
            ElectionType::Unclean => {
                if let Some(r) = p.isr.iter().copied().find(|r| live(r)) {
                    records.push(changed(topic_id, index, p, r, p.isr.clone()));
                    Ok(())
                } else if let Some(r) = p.replicas.iter().copied().find(|r| live(r)) {
                    records.push(changed(topic_id, index, p, r, vec![r]));
                    Ok(())
                } else {
                    Err((
                        codes::ELIGIBLE_LEADERS_NOT_AVAILABLE,
                        "No replica of the partition is live.".to_string(),
                    ))
                }
            }
        };
        let not_needed = matches!(&outcome, Err((c, _)) if *c == codes::ELECTION_NOT_NEEDED);
        if asked.is_some() || !not_needed {
            outcomes.push((topic, index, outcome));
        }
    }
    (outcomes, records)
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
                endpoints: crate::metadata::Endpoint::plaintext("h", 1),
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
    fn an_unclean_election_picks_a_live_out_of_sync_replica_only_where_allowed() {
        let mut image = image_with(
            &[(1, true), (2, false), (3, false)],
            &[(-1, vec![1, 2, 3]), (-1, vec![1]), (2, vec![2, 3])],
        );
        // Partition 0's ISR is the dead broker 1 alone; 2 and 3 are live but out of sync.
        let isr_of_1 = MetadataRecord::Partition {
            topic_id: Uuid::from_u128(7),
            partition: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1],
            leader: -1,
            leader_epoch: 3,
            partition_epoch: 5,
        };
        image.apply(&isr_of_1);
        assert!(unclean_elections(&image, &|_| false).is_empty());
        for r in unclean_elections(&image, &|t| t == "t") {
            image.apply(&r);
        }
        let p = &image.topics["t"].partitions;
        assert_eq!(
            (p[&0].leader, p[&0].isr.clone(), p[&0].leader_epoch),
            (2, vec![2], 4)
        );
        // Partition 1 has no live replica; partition 2 has a leader: both untouched.
        assert_eq!(p[&1].leader, -1);
        assert_eq!(p[&2].leader_epoch, 3);
        assert!(unclean_elections(&image, &|_| true).is_empty());
    }

    #[test]
    fn leadership_goes_back_to_live_in_sync_preferred_replicas_past_the_imbalance() {
        // Broker 1 prefers partitions 0..4; 2 leads two of them (50 % imbalance). 3 is
        // fenced, so partition 4 (preferring 3) stays where it is; partition 2 has 1
        // outside its ISR, so it stays too.
        let mut image = image_with(
            &[(1, false), (2, false), (3, true)],
            &[
                (2, vec![1, 2]),
                (2, vec![1, 2]),
                (1, vec![1, 2]),
                (1, vec![1, 2]),
                (2, vec![3, 2]),
            ],
        );
        image.apply(&MetadataRecord::Partition {
            topic_id: Uuid::from_u128(7),
            partition: 1,
            replicas: vec![1, 2],
            isr: vec![2],
            leader: 2,
            leader_epoch: 3,
            partition_epoch: 5,
        });
        assert!(
            preferred_elections(&image, 50).is_empty(),
            "exactly at the threshold"
        );
        for r in preferred_elections(&image, 10) {
            image.apply(&r);
        }
        assert_eq!(
            leaders(&image),
            vec![(1, 4), (2, 3), (1, 3), (1, 3), (2, 3)]
        );
        assert!(preferred_elections(&image, 10).is_empty());
    }

    #[test]
    fn elect_leaders_answers_as_kafkas_controller() {
        use crate::protocol::codes;
        let mut image = image_with(
            &[(1, false), (2, false), (3, true)],
            &[
                (2, vec![1, 2]),
                (1, vec![1, 2]),
                (2, vec![3, 2]),
                (-1, vec![1, 3]),
            ],
        );
        // Partition 3: leaderless with only 3 (fenced) in sync.
        image.apply(&MetadataRecord::Partition {
            topic_id: Uuid::from_u128(7),
            partition: 3,
            replicas: vec![1, 3],
            isr: vec![3],
            leader: -1,
            leader_epoch: 3,
            partition_epoch: 5,
        });
        let all: Vec<(String, i32)> = (0..5).map(|p| ("t".to_string(), p)).collect();
        let code = |o: &ElectionOutcome| o.as_ref().err().map_or(codes::NONE, |(c, _)| *c);
        let (out, records) = elect_leaders(&image, ElectionType::Preferred, Some(&all));
        let got: Vec<i16> = out.iter().map(|(_, _, o)| code(o)).collect();
        assert_eq!(
            got,
            vec![
                codes::NONE,
                codes::ELECTION_NOT_NEEDED,
                codes::PREFERRED_LEADER_NOT_AVAILABLE,
                codes::PREFERRED_LEADER_NOT_AVAILABLE,
                codes::UNKNOWN_TOPIC_OR_PARTITION
            ]
        );
        assert_eq!(records.len(), 1);
        let (out, records) = elect_leaders(&image, ElectionType::Unclean, None);
        // Only partition 3 needs one: 1 is live though out of sync, so it leads alone.
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].1, code(&out[0].2)), (3, codes::NONE));
        for r in &records {
            image.apply(r);
        }
        let p3 = &image.topics["t"].partitions[&3];
        assert_eq!((p3.leader, p3.isr.clone()), (1, vec![1]));
    }

    #[test]
    fn sessions_expire_after_the_timeout_only_for_live_brokers() {
        let image = image_with(&[(1, false), (2, false), (3, true), (4, false)], &[]);
        let beats = BTreeMap::from([(1, 1000), (2, 4000), (3, 0)]);
        // 1 is 5 s old, 2 is 2 s old, 3 is fenced already, 4 never heartbeat.
        assert_eq!(expired_sessions(&image, &beats, 6000, 3000), vec![1, 4]);
    }
}
