//! Unit tests of the coordinator state machine, driven by requests and explicit times
//! (the clock is an input, so timeouts are tested by passing a later `now_ms`).

use super::partition_for;
use super::records::GroupRecord;
use super::state::*;
use crate::protocol::codes;
use bytes::Bytes;

const SESSION_MS: i32 = 10_000;

fn config(initial_delay_ms: i64) -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: initial_delay_ms,
        ..GroupConfig::default()
    }
}

fn join_req(token: Token, group: &str, member: &str, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        token,
        group_id: group.into(),
        member_id: member.into(),
        group_instance_id: instance.map(str::to_owned),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: 60_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
        require_known_member_id: true,
        supports_skip_assignment: false,
    }
}

fn sync_req(token: Token, group: &str, member: &str, generation: i32) -> SyncRequest {
    SyncRequest {
        token,
        group_id: group.into(),
        generation,
        member_id: member.into(),
        group_instance_id: None,
        protocol_type: None,
        protocol_name: None,
        assignments: Vec::new(),
    }
}

fn join_reply(fx: &Effects, token: Token) -> Option<JoinResult> {
    fx.replies.iter().find_map(|(t, r)| match r {
        Reply::Join(j) if *t == token => Some(j.clone()),
        _ => None,
    })
}

fn sync_reply(fx: &Effects, token: Token) -> Option<SyncResult> {
    fx.replies.iter().find_map(|(t, r)| match r {
        Reply::Sync(s) if *t == token => Some(s.clone()),
        _ => None,
    })
}

/// Joins a new dynamic member through MEMBER_ID_REQUIRED; returns its member id.
fn new_member(c: &mut Coordinator, now: i64, group: &str, token: Token) -> (String, Effects) {
    let mut fx = Effects::default();
    c.join(now, join_req(token, group, "", None), &mut fx);
    let first = join_reply(&fx, token).expect("answered at once");
    assert_eq!(first.error, codes::MEMBER_ID_REQUIRED);
    assert!(first.member_id.starts_with("client-"));
    let mut fx = Effects::default();
    c.join(
        now,
        join_req(token + 1, group, &first.member_id, None),
        &mut fx,
    );
    (first.member_id, fx)
}

fn state_of(c: &Coordinator, group: &str) -> GroupState {
    c.describe(group).expect("group exists").state
}

#[test]
fn the_coordinator_partition_is_kafkas_java_hash() {
    // "hello".hashCode() == 99162322 in Java.
    assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
    // "polygenelubricants".hashCode() == Integer.MIN_VALUE: Utils.abs maps it to 0.
    assert_eq!(partition_for("polygenelubricants", 50), 0);
    // A negative hash: "Aa" and "BB" collide at 2112; "zzzzzz" overflows to negative.
    assert_eq!(partition_for("Aa", 50), partition_for("BB", 50));
    let h = "zzzzzz"
        .encode_utf16()
        .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(u as i32));
    assert!(h < 0);
    assert_eq!(partition_for("zzzzzz", 50), h.abs() % 50);
    assert_eq!(partition_for("", 50), 0);
}

#[test]
fn two_members_join_sync_and_become_stable() {
    let mut c = Coordinator::new(config(0), 0);
    let (a, fx) = new_member(&mut c, 0, "g", 1);
    // Alone in an empty group with no initial delay: the join completes at once.
    let ja = join_reply(&fx, 2).expect("join completes");
    assert_eq!((ja.error, ja.generation), (codes::NONE, 1));
    assert_eq!(ja.leader, a);
    assert_eq!(ja.members.len(), 1);
    assert_eq!(ja.protocol_name.as_deref(), Some("range"));

    // A second member triggers a rebalance; the first learns of it by heartbeat.
    let (b, fx) = new_member(&mut c, 10, "g", 3);
    assert!(
        join_reply(&fx, 4).is_none(),
        "parked until the leader rejoins"
    );
    assert_eq!(state_of(&c, "g"), GroupState::PreparingRebalance);
    assert_eq!(
        c.heartbeat(20, "g", 1, &a, &None),
        codes::REBALANCE_IN_PROGRESS
    );
    let mut fx = Effects::default();
    c.join(30, join_req(5, "g", &a, None), &mut fx);
    let (ja, jb) = (join_reply(&fx, 5).unwrap(), join_reply(&fx, 4).unwrap());
    assert_eq!((ja.generation, jb.generation), (2, 2));
    assert_eq!(ja.leader, a, "the leader stays the leader");
    assert_eq!(
        ja.members.len(),
        2,
        "the leader gets every member's metadata"
    );
    assert!(jb.members.is_empty(), "followers get none");
    assert_eq!(state_of(&c, "g"), GroupState::CompletingRebalance);

    // The follower's SyncGroup waits for the leader's.
    let mut fx = Effects::default();
    c.sync(40, sync_req(6, "g", &b, 2), &mut fx);
    assert!(sync_reply(&fx, 6).is_none());
    let mut leader_sync = sync_req(7, "g", &a, 2);
    leader_sync.assignments = vec![
        (a.clone(), Bytes::from_static(b"A")),
        (b.clone(), Bytes::from_static(b"B")),
    ];
    let mut fx = Effects::default();
    c.sync(50, leader_sync, &mut fx);
    assert_eq!(
        sync_reply(&fx, 6).unwrap().assignment,
        Bytes::from_static(b"B")
    );
    assert_eq!(
        sync_reply(&fx, 7).unwrap().assignment,
        Bytes::from_static(b"A")
    );
    assert_eq!(state_of(&c, "g"), GroupState::Stable);
    assert!(
        matches!(&fx.records[..], [GroupRecord::Group { value: Some(v), .. }] if v.members.len() == 2),
        "the stable generation is persisted"
    );
    assert_eq!(c.heartbeat(60, "g", 2, &b, &None), codes::NONE);
    assert_eq!(
        c.heartbeat(60, "g", 1, &b, &None),
        codes::ILLEGAL_GENERATION
    );
    assert_eq!(
        c.heartbeat(60, "g", 2, "nobody", &None),
        codes::UNKNOWN_MEMBER_ID
    );
}

/// Builds a stable two-member group "g" at time 0..50; returns (leader, follower).
fn stable_pair(c: &mut Coordinator) -> (String, String) {
    let (a, _) = new_member(c, 0, "g", 1);
    let (b, _) = new_member(c, 10, "g", 3);
    let mut fx = Effects::default();
    c.join(20, join_req(5, "g", &a, None), &mut fx);
    let generation = join_reply(&fx, 5).unwrap().generation;
    let mut fx = Effects::default();
    c.sync(30, sync_req(6, "g", &b, generation), &mut fx);
    c.sync(30, sync_req(7, "g", &a, generation), &mut fx);
    assert_eq!(state_of(c, "g"), GroupState::Stable);
    (a, b)
}

#[test]
fn an_expired_session_removes_the_member_and_rebalances() {
    let mut c = Coordinator::new(config(0), 0);
    let (a, b) = stable_pair(&mut c);
    let mut fx = Effects::default();
    // b keeps heartbeating, a goes silent.
    assert_eq!(c.heartbeat(9_000, "g", 2, &b, &None), codes::NONE);
    c.tick(9_999, &mut fx);
    assert_eq!(state_of(&c, "g"), GroupState::Stable, "not yet expired");
    c.tick(10_030, &mut fx);
    assert_eq!(state_of(&c, "g"), GroupState::PreparingRebalance);
    assert_eq!(
        c.heartbeat(10_040, "g", 2, &a, &None),
        codes::UNKNOWN_MEMBER_ID
    );
    let mut fx = Effects::default();
    c.join(10_050, join_req(9, "g", &b, None), &mut fx);
    let jb = join_reply(&fx, 9).expect("the survivor completes the rebalance");
    assert_eq!((jb.generation, jb.leader.as_str()), (3, b.as_str()));
}

#[test]
fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_deadline() {
    let mut c = Coordinator::new(config(0), 0);
    let (a, b) = stable_pair(&mut c);
    let mut fx = Effects::default();
    c.join(100, join_req(9, "g", &a, None), &mut fx);
    assert!(join_reply(&fx, 9).is_none(), "waits for b");
    // b keeps its session alive but never rejoins: the rebalance timeout (60 s) ends it.
    for t in (1_000..60_100).step_by(5_000) {
        c.heartbeat(t, "g", 2, &b, &None);
        c.tick(t, &mut fx);
    }
    c.tick(60_100, &mut fx);
    let ja = join_reply(&fx, 9).expect("completed at the deadline");
    assert_eq!(ja.members.len(), 1);
    assert_eq!(
        c.heartbeat(60_200, "g", 2, &b, &None),
        codes::UNKNOWN_MEMBER_ID
    );
}

#[test]
fn the_initial_rebalance_waits_for_more_members() {
    let mut c = Coordinator::new(config(3_000), 0);
    let (a, fx) = new_member(&mut c, 0, "g", 1);
    assert!(
        join_reply(&fx, 2).is_none(),
        "held for group.initial.rebalance.delay.ms"
    );
    let (b, fx) = new_member(&mut c, 2_000, "g", 3);
    assert!(join_reply(&fx, 4).is_none());
    let mut fx = Effects::default();
    c.tick(3_500, &mut fx);
    assert!(
        fx.replies.is_empty(),
        "the second member extended the delay to 5000"
    );
    c.tick(5_000, &mut fx);
    let (ja, jb) = (join_reply(&fx, 2).unwrap(), join_reply(&fx, 4).unwrap());
    assert_eq!((ja.generation, jb.generation), (1, 1));
    assert_eq!(ja.members.len() + jb.members.len(), 2);
    assert!(ja.member_id == a && jb.member_id == b);
}

#[test]
fn leaving_members_trigger_a_rebalance_and_the_last_one_empties_the_group() {
    let mut c = Coordinator::new(config(0), 0);
    let (a, b) = stable_pair(&mut c);
    let mut fx = Effects::default();
    let codes_ = c.leave(
        100,
        "g",
        &[(b.clone(), None), ("ghost".into(), None)],
        &mut fx,
    );
    assert_eq!(codes_, vec![codes::NONE, codes::UNKNOWN_MEMBER_ID]);
    assert_eq!(state_of(&c, "g"), GroupState::PreparingRebalance);
    c.leave(110, "g", &[(a, None)], &mut fx);
    let g = c.describe("g").unwrap();
    assert_eq!((g.state, g.members.len()), (GroupState::Empty, 0));
    assert_eq!(
        c.leave(120, "nogroup", &[("x".into(), None)], &mut fx),
        vec![codes::UNKNOWN_MEMBER_ID]
    );
}

#[test]
fn a_static_member_rejoining_a_stable_group_keeps_its_assignment_without_a_rebalance() {
    let mut c = Coordinator::new(config(0), 0);
    let mut fx = Effects::default();
    // Static members get their id at once (no MEMBER_ID_REQUIRED).
    c.join(0, join_req(1, "g", "", Some("i1")), &mut fx);
    let s1 = join_reply(&fx, 1).unwrap();
    assert_eq!((s1.error, s1.generation), (codes::NONE, 1));
    let (d, _) = new_member(&mut c, 10, "g", 2);
    let mut fx = Effects::default();
    c.join(20, join_req(4, "g", &s1.member_id, Some("i1")), &mut fx);
    let generation = join_reply(&fx, 4).unwrap().generation;
    let mut leader_sync = sync_req(5, "g", &s1.member_id, generation);
    leader_sync.group_instance_id = Some("i1".into());
    leader_sync.assignments = vec![
        (s1.member_id.clone(), Bytes::from_static(b"S")),
        (d.clone(), Bytes::from_static(b"D")),
    ];
    c.sync(30, sync_req(6, "g", &d, generation), &mut fx);
    c.sync(30, leader_sync, &mut fx);
    assert_eq!(state_of(&c, "g"), GroupState::Stable);

    // The static member restarts: same instance id, no member id.
    let mut fx = Effects::default();
    c.join(5_000, join_req(7, "g", "", Some("i1")), &mut fx);
    let again = join_reply(&fx, 7).expect("answered at once");
    assert_eq!(again.error, codes::NONE);
    assert_eq!(again.generation, generation, "no new generation");
    assert_ne!(again.member_id, s1.member_id);
    assert_eq!(state_of(&c, "g"), GroupState::Stable);
    let mut sync = sync_req(8, "g", &again.member_id, generation);
    sync.group_instance_id = Some("i1".into());
    c.sync(5_010, sync, &mut fx);
    assert_eq!(
        sync_reply(&fx, 8).unwrap().assignment,
        Bytes::from_static(b"S")
    );
    // The other member did not notice anything; the old id is fenced.
    assert_eq!(c.heartbeat(5_020, "g", generation, &d, &None), codes::NONE);
    assert_eq!(
        c.heartbeat(5_020, "g", generation, &s1.member_id, &Some("i1".into())),
        codes::FENCED_INSTANCE_ID
    );
}

#[test]
fn joins_are_validated() {
    let mut c = Coordinator::new(
        GroupConfig {
            max_size: 1,
            ..config(0)
        },
        0,
    );
    let mut fx = Effects::default();
    let mut bad = join_req(1, "g", "", None);
    bad.session_timeout_ms = 10;
    c.join(0, bad, &mut fx);
    assert_eq!(
        join_reply(&fx, 1).unwrap().error,
        codes::INVALID_SESSION_TIMEOUT
    );
    c.join(0, join_req(2, "", "", None), &mut fx);
    assert_eq!(join_reply(&fx, 2).unwrap().error, codes::INVALID_GROUP_ID);
    c.join(0, join_req(3, "g", "made-up", None), &mut fx);
    assert_eq!(join_reply(&fx, 3).unwrap().error, codes::UNKNOWN_MEMBER_ID);
    new_member(&mut c, 0, "g", 4);
    let mut other = join_req(6, "g", "", None);
    other.protocols = vec![("roundrobin".into(), Bytes::new())];
    c.join(0, other, &mut fx);
    assert_eq!(
        join_reply(&fx, 6).unwrap().error,
        codes::INCONSISTENT_GROUP_PROTOCOL
    );
    c.join(0, join_req(7, "g", "", None), &mut fx);
    assert_eq!(
        join_reply(&fx, 7).unwrap().error,
        codes::GROUP_MAX_SIZE_REACHED
    );
}

#[test]
fn the_protocol_is_the_most_preferred_one_every_member_supports() {
    let mut c = Coordinator::new(config(100), 0);
    let mut fx = Effects::default();
    let with = |token, protocols: &[&str]| {
        let mut r = join_req(token, "g", "", Some(["x", "y", "z"][token as usize - 1]));
        r.protocols = protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::new()))
            .collect();
        r
    };
    c.join(0, with(1, &["cooperative-sticky", "range"]), &mut fx);
    c.join(0, with(2, &["range", "cooperative-sticky"]), &mut fx);
    c.join(
        0,
        with(3, &["range", "roundrobin", "cooperative-sticky"]),
        &mut fx,
    );
    c.tick(200, &mut fx);
    let j = join_reply(&fx, 1).unwrap();
    assert_eq!(
        j.protocol_name.as_deref(),
        Some("range"),
        "two votes against one"
    );
}

#[test]
fn offset_commits_check_membership_and_generation() {
    let mut c = Coordinator::new(config(0), 0);
    let commit = |generation: i32, member: &str| CommitRequest {
        group_id: "g".into(),
        generation,
        member_id: member.into(),
        group_instance_id: None,
        offsets: vec![CommitOffset {
            topic: "t".into(),
            partition: 0,
            offset: 5,
            leader_epoch: -1,
            metadata: Some("meta".into()),
        }],
    };
    let mut fx = Effects::default();
    assert_eq!(
        c.commit(0, commit(1, "m"), &mut fx),
        vec![codes::ILLEGAL_GENERATION]
    );
    // A simple (assign()) consumer commits with generation -1 and no member.
    assert_eq!(c.commit(0, commit(-1, ""), &mut fx), vec![codes::NONE]);
    assert_eq!(fx.records.len(), 1, "the commit is persisted");
    let fetched = c.fetch_offsets("g", Some(vec![("t".into(), vec![0, 1])]));
    let rows = &fetched[0].1;
    assert_eq!(rows[0].1.as_ref().map(|v| v.offset), Some(5));
    assert_eq!(
        rows[0]
            .1
            .as_ref()
            .and_then(|v| v.metadata.clone())
            .as_deref(),
        Some("meta")
    );
    assert!(rows[1].1.is_none(), "no offset committed for partition 1");

    let (a, _) = new_member(&mut c, 10, "g", 1);
    assert_eq!(
        c.commit(20, commit(-1, ""), &mut fx),
        vec![codes::UNKNOWN_MEMBER_ID]
    );
    assert_eq!(
        c.commit(20, commit(1, &a), &mut fx),
        vec![codes::REBALANCE_IN_PROGRESS]
    );
    let mut fx = Effects::default();
    c.sync(30, sync_req(9, "g", &a, 1), &mut fx);
    assert_eq!(
        c.commit(40, commit(0, &a), &mut fx),
        vec![codes::ILLEGAL_GENERATION]
    );
    assert_eq!(c.commit(40, commit(1, &a), &mut fx), vec![codes::NONE]);
    let mut big = commit(1, &a);
    big.offsets[0].metadata = Some("x".repeat(5000));
    assert_eq!(
        c.commit(50, big, &mut fx),
        vec![codes::OFFSET_METADATA_TOO_LARGE]
    );
    let all = c.fetch_offsets("g", None);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].0, "t");
}

#[test]
fn groups_with_members_cannot_be_deleted_and_deleting_writes_tombstones() {
    let mut c = Coordinator::new(config(0), 0);
    let (a, b) = stable_pair(&mut c);
    let mut fx = Effects::default();
    assert_eq!(
        c.delete_groups(&["g".into(), "missing".into(), "".into()], &mut fx),
        vec![
            codes::NON_EMPTY_GROUP,
            codes::GROUP_ID_NOT_FOUND,
            codes::INVALID_GROUP_ID
        ]
    );
    c.commit(
        40,
        CommitRequest {
            group_id: "g".into(),
            generation: 2,
            member_id: a.clone(),
            group_instance_id: None,
            offsets: vec![CommitOffset {
                topic: "t".into(),
                partition: 0,
                offset: 1,
                leader_epoch: -1,
                metadata: None,
            }],
        },
        &mut fx,
    );
    c.leave(50, "g", &[(a, None), (b, None)], &mut fx);
    let mut fx = Effects::default();
    assert_eq!(c.delete_groups(&["g".into()], &mut fx), vec![codes::NONE]);
    assert!(c.describe("g").is_none());
    assert!(fx.records.iter().all(|r| matches!(
        r,
        GroupRecord::Offset { value: None, .. } | GroupRecord::Group { value: None, .. }
    )));
    assert_eq!(
        fx.records.len(),
        2,
        "one offset tombstone and one group tombstone"
    );
}

#[test]
fn offsets_of_subscribed_topics_cannot_be_deleted() {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let mut sub = bytes::BytesMut::new();
    sub.extend_from_slice(&1i16.to_be_bytes());
    ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_static_str("subscribed")])
        .encode(&mut sub, 1)
        .unwrap();
    let mut c = Coordinator::new(config(0), 0);
    let mut fx = Effects::default();
    let mut req = join_req(1, "g", "", Some("i"));
    req.protocols = vec![("range".into(), sub.freeze())];
    c.join(0, req, &mut fx);
    let m = join_reply(&fx, 1).unwrap().member_id;
    let mut sync = sync_req(2, "g", &m, 1);
    sync.group_instance_id = Some("i".into());
    c.sync(0, sync, &mut fx);
    let result = c.delete_offsets(
        "g",
        &[("subscribed".into(), 0), ("other".into(), 0)],
        &mut fx,
    );
    assert_eq!(
        result,
        Ok(vec![codes::GROUP_SUBSCRIBED_TO_TOPIC, codes::NONE])
    );
    assert_eq!(
        c.delete_offsets("missing", &[], &mut fx),
        Err(codes::GROUP_ID_NOT_FOUND)
    );
}

#[test]
fn records_replayed_into_a_new_coordinator_restore_groups_and_offsets() {
    let mut c = Coordinator::new(config(0), 0);
    let (a, b) = stable_pair(&mut c);
    let mut records = Vec::new();
    // Collect what a real run would have persisted: replay the same history.
    let mut fx = Effects::default();
    c.commit(
        40,
        CommitRequest {
            group_id: "g".into(),
            generation: 2,
            member_id: b.clone(),
            group_instance_id: None,
            offsets: vec![CommitOffset {
                topic: "t".into(),
                partition: 3,
                offset: 77,
                leader_epoch: 0,
                metadata: None,
            }],
        },
        &mut fx,
    );
    records.extend(fx.records);
    // The stable group's own record, as SyncGroup persisted it.
    let mut fx = Effects::default();
    let mut c2 = Coordinator::new(config(0), 0);
    let (x, _) = new_member(&mut c2, 0, "h", 1);
    c2.sync(0, sync_req(3, "h", &x, 1), &mut fx);
    records.extend(fx.records);

    let mut reloaded = Coordinator::new(config(0), 1_000);
    for r in records {
        let (k, v) = r.encode();
        reloaded.load(1_000, GroupRecord::decode(&k, v.as_deref()).unwrap().record);
    }
    let offsets = reloaded.fetch_offsets("g", None);
    assert_eq!(offsets[0].1[0].1.as_ref().map(|v| v.offset), Some(77));
    assert_eq!(state_of(&reloaded, "h"), GroupState::Stable);
    // The reloaded member keeps its generation: its heartbeats still succeed.
    assert_eq!(reloaded.heartbeat(2_000, "h", 1, &x, &None), codes::NONE);
    let _ = a;
}

#[test]
fn offsets_of_an_empty_group_expire_after_the_retention() {
    let cfg = GroupConfig {
        offsets_retention_ms: 1_000,
        retention_check_interval_ms: 100,
        ..config(0)
    };
    let mut c = Coordinator::new(cfg, 0);
    let mut fx = Effects::default();
    c.commit(
        0,
        CommitRequest {
            group_id: "g".into(),
            generation: -1,
            member_id: String::new(),
            group_instance_id: None,
            offsets: vec![CommitOffset {
                topic: "t".into(),
                partition: 0,
                offset: 1,
                leader_epoch: -1,
                metadata: None,
            }],
        },
        &mut fx,
    );
    c.tick(500, &mut fx);
    assert!(c.describe("g").is_some());
    let mut fx = Effects::default();
    c.tick(1_200, &mut fx);
    assert!(
        c.describe("g").is_none(),
        "offsets expired, then the empty group"
    );
    assert_eq!(fx.records.len(), 2);
}

#[test]
fn list_filters_by_state_case_insensitively() {
    let mut c = Coordinator::new(config(0), 0);
    stable_pair(&mut c);
    assert_eq!(c.list(&[]).len(), 1);
    assert_eq!(c.list(&["stable".into()]).len(), 1);
    assert!(c.list(&["Empty".into()]).is_empty());
}

#[test]
fn followers_are_not_parked_forever_when_the_leader_never_syncs() {
    let mut c = Coordinator::new(config(0), 0);
    let (a, _) = new_member(&mut c, 0, "g", 1);
    let (b, _) = new_member(&mut c, 10, "g", 3);
    let mut fx = Effects::default();
    c.join(20, join_req(5, "g", &a, None), &mut fx);
    assert_eq!(state_of(&c, "g"), GroupState::CompletingRebalance);
    c.sync(30, sync_req(6, "g", &b, 2), &mut fx);
    assert!(sync_reply(&fx, 6).is_none(), "parked for the leader");
    // The leader keeps heartbeating but never sends its assignment.
    for t in (1_000..60_020).step_by(5_000) {
        assert_eq!(c.heartbeat(t, "g", 2, &a, &None), codes::NONE);
        c.tick(t, &mut fx);
    }
    c.tick(60_020, &mut fx);
    assert_eq!(
        sync_reply(&fx, 6).map(|r| r.error),
        Some(codes::REBALANCE_IN_PROGRESS),
        "the follower is told to rejoin"
    );
    assert_eq!(
        c.heartbeat(60_030, "g", 2, &a, &None),
        codes::UNKNOWN_MEMBER_ID
    );
}

/// Records go nowhere: the shell tests only look at what requests are answered with.
struct NullLog;

impl super::OffsetsLog for NullLog {
    fn append(&self, _group_id: &str, _batch: &[u8]) -> Result<(), i16> {
        Ok(())
    }
}

#[tokio::test]
async fn the_shell_parks_joins_until_a_tick_and_answers_them_at_shutdown() {
    use crate::clock::ManualClock;
    use std::sync::Arc;
    let clock = Arc::new(ManualClock::new(0));
    let gc = Arc::new(super::GroupCoordinator::new(config(3_000), clock.clone()));
    let parked = |gc: &Arc<super::GroupCoordinator>, instance: &str| {
        let (gc, req) = (gc.clone(), join_req(0, "g", "", Some(instance)));
        tokio::spawn(async move { gc.join(&NullLog, req).await })
    };

    // The initial delay holds the join until the clock passes it and a tick runs.
    let first = parked(&gc, "a");
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!first.is_finished());
    clock.advance(3_000);
    gc.tick(&NullLog);
    let joined = first.await.expect("join task");
    assert_eq!((joined.error, joined.generation), (codes::NONE, 1));

    // A second member triggers a rebalance that waits for the first to rejoin: parked
    // until shutdown, which answers NOT_COORDINATOR so the connection can close.
    let second = parked(&gc, "b");
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!second.is_finished());
    gc.shutdown();
    assert_eq!(
        second.await.expect("join task").error,
        codes::NOT_COORDINATOR
    );
    let late = gc.join(&NullLog, join_req(0, "g", "", Some("c"))).await;
    assert_eq!(
        late.error,
        codes::NOT_COORDINATOR,
        "nothing parks after shutdown"
    );
}

/// A commit from a consumer that uses assign() and no membership (generation -1).
fn commit_standalone(c: &mut Coordinator, group: &str, offsets: &[(&str, i32)]) {
    let mut fx = Effects::default();
    let codes_ = c.commit(
        0,
        CommitRequest {
            group_id: group.into(),
            generation: -1,
            member_id: String::new(),
            group_instance_id: None,
            offsets: offsets
                .iter()
                .map(|(t, p)| CommitOffset {
                    topic: (*t).into(),
                    partition: *p,
                    offset: 5,
                    leader_epoch: -1,
                    metadata: None,
                })
                .collect(),
        },
        &mut fx,
    );
    assert!(codes_.iter().all(|c| *c == codes::NONE), "{codes_:?}");
}

#[test]
fn deleting_a_topic_purges_its_offsets_and_groups_left_with_none() {
    let mut c = Coordinator::new(config(0), 0);
    commit_standalone(&mut c, "both", &[("gone", 0), ("gone", 1), ("kept", 0)]);
    commit_standalone(&mut c, "only-gone", &[("gone", 0)]);
    commit_standalone(&mut c, "only-kept", &[("kept", 0)]);
    let mut fx = Effects::default();
    c.topics_deleted(&["gone".to_owned()].into(), &mut fx);

    let remaining = |c: &Coordinator, g: &str| -> Vec<(String, i32)> {
        c.fetch_offsets(g, None)
            .into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |(p, _)| (t.clone(), p)))
            .collect()
    };
    assert_eq!(remaining(&c, "both"), vec![("kept".to_owned(), 0)]);
    assert_eq!(remaining(&c, "only-kept"), vec![("kept".to_owned(), 0)]);
    assert!(c.describe("only-gone").is_none(), "an emptied group goes");
    assert!(c.describe("both").is_some());

    let mut tombstones: Vec<String> = fx
        .records
        .iter()
        .map(|r| match r {
            GroupRecord::Offset {
                group,
                topic,
                partition,
                value: None,
            } => format!("offset {group} {topic}-{partition}"),
            GroupRecord::Group { group, value: None } => format!("group {group}"),
            other => panic!("only tombstones are written, got {other:?}"),
        })
        .collect();
    tombstones.sort();
    assert_eq!(
        tombstones,
        [
            "group only-gone",
            "offset both gone-0",
            "offset both gone-1",
            "offset only-gone gone-0"
        ]
    );
}
