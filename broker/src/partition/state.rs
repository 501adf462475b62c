//! The replication state of one partition on its leader, as a pure state machine: follower
//! fetch positions and times in, high-watermark advances and ISR changes to ask the
//! controller for out. No I/O and no clock of its own (times are passed in), so every
//! decision is tested deterministically; the partition shell applies what it returns.

use std::collections::BTreeMap;

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerState {
    /// The follower's log end offset: the offset of its last fetch (-1 before one).
    pub log_end_offset: i64,
    /// When the follower last had everything the leader had (Kafka's lastCaughtUpTimeMs).
    pub last_caught_up_ms: i64,
    /// The leader's log end offset and the time at the follower's previous fetch.
    pub leader_end_at_last_fetch: i64,
    pub last_fetch_ms: i64,
    /// The broker epoch the follower's fetches carry (KIP-903; -1 until one does): sent
    /// with an ISR change so the controller refuses a member that has restarted since.
    pub broker_epoch: i64,
}

/// An ISR change the leader asks the controller for (AlterPartition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub new_isr: Vec<i32>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// A partition's replication state on its leader.
#[derive(Debug, Clone)]
pub struct LeaderState {
    pub node_id: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The first offset of this leader's epoch: the HW must reach it before offsets are
    /// served as final (KIP-207), and followers must reach it to rejoin the ISR.
    pub epoch_start_offset: i64,
    pub replicas: Vec<i32>,
    /// The ISR as committed in the metadata log.
    pub isr: Vec<i32>,
    /// An ISR change sent to the controller and not answered yet. While it is pending the
    /// high watermark counts the larger of the two sets (Kafka's "maximal ISR"), so a
    /// shrink never advances it before the controller agrees and an expansion already
    /// waits for the new member.
    pub pending: Option<IsrProposal>,
    pub followers: BTreeMap<i32, FollowerState>,
    pub high_watermark: i64,
}

impl LeaderState {
    /// The state of a broker that just became leader at `leader_epoch`, with its log ending
    /// at `log_end_offset` and its high watermark at `high_watermark`. Followers in the ISR
    /// count as caught up now: they get replica.lag.time.max.ms to show they are.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_id: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        log_end_offset: i64,
        high_watermark: i64,
        now_ms: i64,
    ) -> LeaderState {
        let followers = replicas
            .iter()
            .filter(|r| **r != node_id)
            .map(|r| {
                let in_isr = isr.contains(r);
                (
                    *r,
                    FollowerState {
                        log_end_offset: -1,
                        last_caught_up_ms: if in_isr { now_ms } else { 0 },
                        leader_end_at_last_fetch: -1,
                        last_fetch_ms: 0,
                        broker_epoch: -1,
                    },
                )
            })
            .collect();
        LeaderState {
            node_id,
            leader_epoch,
            partition_epoch,
            epoch_start_offset: log_end_offset,
            replicas,
            isr,
            pending: None,
            followers,
            high_watermark: high_watermark.min(log_end_offset),
        }
    }

    /// The ISR the high watermark waits for: the committed ISR and a pending one together.
    pub fn maximal_isr(&self) -> Vec<i32> {
        let mut set = self.isr.clone();
        if let Some(p) = &self.pending {
            for r in &p.new_isr {
                if !set.contains(r) {
                    set.push(*r);
                }
            }
        }
        set
    }

    /// Records a follower's fetch at `fetch_offset` while the leader's log ends at
    /// `leader_end`. Kafka's rule for "caught up": the fetch asked for the leader's end, or
    /// for at least what the leader had at the follower's previous fetch (then it was
    /// caught up as of that fetch). Returns the new high watermark if it moved.
    pub fn on_follower_fetch(
        &mut self,
        follower: i32,
        fetch_offset: i64,
        leader_end: i64,
        now_ms: i64,
    ) -> Option<i64> {
        let f = self.followers.get_mut(&follower)?;
        if fetch_offset >= leader_end {
            f.last_caught_up_ms = now_ms;
        } else if f.leader_end_at_last_fetch >= 0 && fetch_offset >= f.leader_end_at_last_fetch {
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.log_end_offset = fetch_offset;
        f.leader_end_at_last_fetch = leader_end;
        f.last_fetch_ms = now_ms;
        self.advance_high_watermark(leader_end)
    }

    /// Records the broker epoch a follower's fetch carried.
    pub fn note_follower_epoch(&mut self, follower: i32, broker_epoch: i64) {
        if let Some(f) = self.followers.get_mut(&follower) {
            f.broker_epoch = broker_epoch;
        }
    }

    /// Whether `follower`, outside the ISR, now has what it needs to join it: then the
    /// shell asks for the expansion at once instead of at the next periodic check.
    pub fn may_join(&self, follower: i32) -> bool {
        !self.maximal_isr().contains(&follower)
            && self.followers.get(&follower).is_some_and(|f| {
                f.log_end_offset >= self.high_watermark
                    && f.log_end_offset >= self.epoch_start_offset
            })
    }

    /// The members of `isr` with the broker epoch each was last seen at (this leader's
    /// own is `own_epoch`; -1 for a follower not heard from in this leadership).
    pub fn with_epochs(&self, isr: &[i32], own_epoch: i64) -> Vec<(i32, i64)> {
        isr.iter()
            .map(|r| {
                let epoch = if *r == self.node_id {
                    own_epoch
                } else {
                    self.followers.get(r).map_or(-1, |f| f.broker_epoch)
                };
                (*r, epoch)
            })
            .collect()
    }

    /// Moves the high watermark to the smallest log end offset of the maximal ISR (the
    /// leader's own is `leader_end`); it never moves back. Returns it if it moved.
    pub fn advance_high_watermark(&mut self, leader_end: i64) -> Option<i64> {
        let mut hw = leader_end;
        for r in self.maximal_isr() {
            if r == self.node_id {
                continue;
            }
            let leo = self.followers.get(&r).map_or(-1, |f| f.log_end_offset);
            hw = hw.min(leo);
        }
        if hw > self.high_watermark {
            self.high_watermark = hw;
            Some(hw)
        } else {
            None
        }
    }

    /// Whether the high watermark has reached this leader's epoch start: until then the
    /// log's end is not known to be final, and consumers are told OFFSET_NOT_AVAILABLE
    /// rather than shown a high watermark lower than the old leader's (KIP-207).
    pub fn high_watermark_settled(&self) -> bool {
        self.high_watermark >= self.epoch_start_offset
    }

    /// The ISR members that have not caught up within `lag_max_ms`: Kafka's
    /// replica.lag.time.max.ms rule. A follower at the leader's end is never out of sync.
    pub fn out_of_sync(&self, leader_end: i64, now_ms: i64, lag_max_ms: i64) -> Vec<i32> {
        self.isr
            .iter()
            .copied()
            .filter(|r| *r != self.node_id)
            .filter(|r| {
                self.followers.get(r).is_some_and(|f| {
                    f.log_end_offset != leader_end && now_ms - f.last_caught_up_ms > lag_max_ms
                })
            })
            .collect()
    }

    /// The ISR change to ask for now, if any and none is pending: first drop followers that
    /// fell behind (never the leader, never below the leader alone), else add followers
    /// that caught up to the high watermark and this epoch's start and that `eligible`
    /// (given the id and the broker epoch the follower fetched with) says the controller
    /// would accept: a fenced broker is not proposed, as Kafka's leaders do not, so a
    /// caught-up follower that is still fenced does not draw refusal after refusal.
    pub fn isr_proposal(
        &self,
        leader_end: i64,
        now_ms: i64,
        lag_max_ms: i64,
        eligible: &dyn Fn(i32, i64) -> bool,
    ) -> Option<IsrProposal> {
        if self.pending.is_some() {
            return None;
        }
        let lagging = self.out_of_sync(leader_end, now_ms, lag_max_ms);
        let new_isr: Vec<i32> = if !lagging.is_empty() {
            self.isr
                .iter()
                .copied()
                .filter(|r| !lagging.contains(r))
                .collect()
        } else {
            let joining: Vec<i32> = self
                .replicas
                .iter()
                .copied()
                .filter(|r| !self.isr.contains(r))
                .filter(|r| {
                    self.followers.get(r).is_some_and(|f| {
                        eligible(*r, f.broker_epoch)
                            && f.log_end_offset >= self.high_watermark
                            && f.log_end_offset >= self.epoch_start_offset
                            && now_ms - f.last_caught_up_ms <= lag_max_ms
                    })
                })
                .collect();
            if joining.is_empty() {
                return None;
            }
            let mut isr = self.isr.clone();
            isr.extend(joining);
            isr
        };
        Some(IsrProposal {
            new_isr,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
        })
    }

    /// The controller committed a new ISR (from the AlterPartition answer or a newer
    /// image): the pending change is settled either way.
    /// Returns the ISR sizes before and after when this changed the ISR (an older or the
    /// same committed ISR changes nothing), so each change is counted once, whichever of
    /// the answer and the image brings it first.
    pub fn on_isr_committed(
        &mut self,
        isr: Vec<i32>,
        partition_epoch: i32,
        leader_end: i64,
    ) -> Option<(usize, usize)> {
        if partition_epoch < self.partition_epoch {
            return None;
        }
        let sizes = (partition_epoch > self.partition_epoch && isr != self.isr)
            .then_some((self.isr.len(), isr.len()));
        self.isr = isr;
        self.partition_epoch = partition_epoch;
        self.pending = None;
        self.advance_high_watermark(leader_end);
        sizes
    }

    /// The controller refused the change (a newer partition epoch exists, or a member is
    /// not eligible): it is forgotten, and the next proposal is built from what is known.
    pub fn on_isr_refused(&mut self) {
        self.pending = None;
    }
}

/// Where a follower must truncate when its leader answers a fetch with a diverging epoch
/// (KIP-279): to the end of the leader's diverging epoch, but no further than where the
/// follower's own log for that epoch (or its largest epoch below) ends. `follower_end_for`
/// is the follower's `end_offset_for_epoch(diverging_epoch)`.
pub fn truncation_offset(diverging_end_offset: i64, follower_end_for: (i32, i64)) -> i64 {
    match follower_end_for {
        // No epoch at or below the leader's: nothing of the follower's log is known to match.
        (epoch, end) if epoch < 0 || end < 0 => 0,
        // The same epoch, or the follower's largest one below it: both logs agree up to
        // where the first of them ends it.
        (_, end) => end.min(diverging_end_offset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: i64 = 30_000;

    fn leader() -> LeaderState {
        LeaderState::new(1, 5, 7, vec![1, 2, 3], vec![1, 2, 3], 100, 90, 1_000)
    }

    #[test]
    fn the_high_watermark_is_the_smallest_end_in_the_isr_and_never_moves_back() {
        let mut s = leader();
        assert_eq!(s.high_watermark, 90);
        assert!(
            !s.high_watermark_settled(),
            "below the epoch start until followers fetch"
        );
        assert_eq!(
            s.on_follower_fetch(2, 100, 120, 1_010),
            None,
            "3 has not fetched"
        );
        assert_eq!(s.on_follower_fetch(3, 95, 120, 1_010), Some(95));
        assert_eq!(s.on_follower_fetch(3, 120, 120, 1_020), Some(100));
        assert!(s.high_watermark_settled());
        assert_eq!(s.on_follower_fetch(2, 120, 120, 1_030), Some(120));
        // A follower that truncated and fetches lower again cannot pull it back.
        assert_eq!(s.on_follower_fetch(2, 110, 120, 1_040), None);
        assert_eq!(s.high_watermark, 120);
    }

    #[test]
    fn a_follower_that_stops_fetching_leaves_the_isr_after_the_lag_time_and_rejoins_caught_up() {
        let mut s = leader();
        for t in [1_000, 11_000, 21_000, 31_000] {
            s.on_follower_fetch(2, 100, 100, t);
        }
        s.on_follower_fetch(3, 100, 100, 1_000);
        // 3 last caught up at 1 000: out of sync once more than LAG has passed, while the
        // leader has data it lacks.
        assert_eq!(
            s.isr_proposal(100, 31_000, LAG, &|_, _| true),
            None,
            "3 has everything"
        );
        assert_eq!(
            s.isr_proposal(130, 31_000, LAG, &|_, _| true),
            None,
            "exactly LAG is still in sync"
        );
        let shrink = s.isr_proposal(130, 31_001, LAG, &|_, _| true).unwrap();
        assert_eq!(shrink.new_isr, vec![1, 2]);
        assert_eq!((shrink.leader_epoch, shrink.partition_epoch), (5, 7));
        s.pending = Some(shrink);
        assert_eq!(
            s.isr_proposal(130, 40_000, LAG, &|_, _| true),
            None,
            "one change at a time"
        );
        // Until the controller commits, the high watermark still waits for 3.
        assert_eq!(s.on_follower_fetch(2, 130, 130, 31_100), None);
        assert_eq!(s.on_isr_committed(vec![1, 2], 8, 130), Some((3, 2)));
        assert_eq!(s.high_watermark, 130, "committed shrink lets it advance");
        // The same change arriving by the other path (answer, then image) counts once; an
        // older image changes nothing.
        assert_eq!(s.on_isr_committed(vec![1, 2], 8, 130), None);
        assert_eq!(s.on_isr_committed(vec![1, 2, 3], 7, 130), None);
        assert_eq!(s.isr, vec![1, 2]);
        // 3 comes back: fetching below the HW keeps it out; at the HW it is proposed back.
        s.on_follower_fetch(3, 120, 130, 50_000);
        assert_eq!(s.isr_proposal(130, 50_000, LAG, &|_, _| true), None);
        s.on_follower_fetch(3, 130, 130, 50_100);
        assert_eq!(
            s.isr_proposal(130, 50_100, LAG, &|_, _| true)
                .unwrap()
                .new_isr,
            vec![1, 2, 3]
        );
    }

    #[test]
    fn a_pending_expansion_already_holds_the_high_watermark_for_the_new_member() {
        let mut s = LeaderState::new(1, 0, 0, vec![1, 2], vec![1], 10, 10, 0);
        s.on_follower_fetch(2, 10, 10, 5);
        let grow = s.isr_proposal(10, 5, LAG, &|_, _| true).unwrap();
        assert_eq!(grow.new_isr, vec![1, 2]);
        s.pending = Some(grow);
        assert_eq!(
            s.advance_high_watermark(20),
            None,
            "2 is counted while pending"
        );
        s.on_isr_refused();
        assert_eq!(
            s.advance_high_watermark(20),
            Some(20),
            "refused: the ISR is the leader"
        );
    }

    #[test]
    fn a_follower_may_join_once_at_the_high_watermark_and_the_epoch_start() {
        let mut s = LeaderState::new(1, 2, 0, vec![1, 2, 3], vec![1, 2], 50, 40, 0);
        s.on_follower_fetch(2, 50, 50, 1);
        assert_eq!(s.high_watermark, 50);
        assert!(!s.may_join(2), "already in the ISR");
        s.on_follower_fetch(3, 45, 50, 1);
        assert!(!s.may_join(3), "below the high watermark");
        s.on_follower_fetch(3, 50, 50, 2);
        assert!(s.may_join(3));
        s.note_follower_epoch(3, 77);
        assert_eq!(
            s.isr_proposal(50, 2, LAG, &|id, epoch| !(id == 3 && epoch == 77)),
            None,
            "a follower the controller would refuse (fenced, restarted) is not proposed"
        );
        let grow = s.isr_proposal(50, 2, LAG, &|_, _| true).unwrap();
        assert_eq!(
            s.with_epochs(&grow.new_isr, 11),
            vec![(1, 11), (2, -1), (3, 77)]
        );
        s.pending = Some(grow);
        assert!(!s.may_join(3), "its expansion is pending");
    }

    #[test]
    fn truncation_stops_where_leader_and_follower_last_agree() {
        // Same epoch on both, leader's ends first.
        assert_eq!(truncation_offset(40, (3, 55)), 40);
        // Follower's own log for the epoch ends first.
        assert_eq!(truncation_offset(40, (3, 35)), 35);
        // Follower lacks the epoch: its next lower epoch ends at 30.
        assert_eq!(truncation_offset(40, (2, 30)), 30);
        // Nothing in common.
        assert_eq!(truncation_offset(40, (-1, -1)), 0);
    }
}
