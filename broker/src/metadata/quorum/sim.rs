//! A seeded, deterministic simulation of the metadata quorum: three or five voters, each a
//! [`Core`] over a real [`RaftStore`] in its own directory, on a network that drops,
//! delays, reorders and duplicates messages and cuts links (both ways or one way), while
//! voters crash (between two `Ready`s or in the middle of one) and restart from their
//! files. Raft's safety properties are checked as it runs; after the faults everything
//! heals and the quorum must make progress again. `STROM_SIM_SEED=<n>` replays one seed.

use super::store::RaftStore;
use super::{is_snapshot, raft_id, Core, Effects, ProposeError, QuorumConfig};
use crate::clock::{Clock, ManualClock};
use crate::metadata::image::MetadataImage;
use crate::metadata::records::{ConfigResource, MetadataRecord};
use bytes::Bytes;
use raft::eraftpb::{Entry, Message};
use std::collections::{btree_map, BTreeMap};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use tempfile::TempDir;

const FAULT_ROUNDS: u64 = 1000;
/// Rounds the healed quorum gets to elect a leader, commit a proposal and catch up.
const HEAL_ROUNDS: u64 = 200;
/// One round is one Raft tick.
const TICK_MS: i64 = 10;
/// Small, so that voters cut off for a while catch up from a snapshot.
const SNAPSHOT_BYTES: u64 = 600;
const SEEDS: u64 = 40;

/// splitmix64: tiny, seedable, and good enough to pick faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// What a simulated crash unwinds with; `resume_unwind` runs no panic hook for it.
struct Crash;

/// What a core did during one call, in order.
#[derive(Default)]
struct Recorder {
    events: Vec<Event>,
    /// The voter crashes right after this many more `send`s have left.
    crash_after: Option<usize>,
}

enum Event {
    Sent(Vec<Message>),
    /// No entries: a snapshot was installed.
    Applied {
        entries: Vec<Entry>,
        offset: u64,
        image: serde_json::Value,
    },
    Answer(u64, Result<i64, ProposeError>),
}

impl Effects<u64> for Recorder {
    fn send(&mut self, messages: Vec<Message>) {
        self.events.push(Event::Sent(messages));
        match self.crash_after {
            Some(0) => resume_unwind(Box::new(Crash)),
            Some(n) => self.crash_after = Some(n - 1),
            None => {}
        }
    }

    fn applied(&mut self, entries: &[Entry], image: &MetadataImage) {
        self.events.push(Event::Applied {
            entries: entries.to_vec(),
            offset: image.metadata_offset as u64,
            image: serde_json::to_value(image).expect("the image serializes"),
        });
    }

    fn answer(&mut self, token: u64, result: Result<i64, ProposeError>) {
        self.events.push(Event::Answer(token, result));
    }
}

/// What a voter had made durable when it crashed between two `Ready`s: term, vote and
/// last index must come back as they were, the commit index no further.
#[derive(Debug)]
struct Durable {
    term: u64,
    vote: u64,
    last_index: u64,
    commit: u64,
}

struct Voter {
    dir: TempDir,
    core: Option<Core<u64>>,
    /// Bumped on every start: a snapshot report goes only to the life that sent it.
    life: u64,
    /// A crash in the middle of a `Ready`, after this many more sends.
    crash_armed: Option<usize>,
    durable: Option<Durable>,
    /// The highest commit index seen in this life.
    commit: u64,
    /// The last entry applied: entries apply in order, each once.
    applied: u64,
}

/// How much of what the simulation is there for happened: summed over the seeds, so that
/// a change that quietly stops the faults (or the snapshots) fails instead of passing.
#[derive(Debug, Default, Clone, Copy)]
struct Coverage {
    terms_led: u64,
    crashes: u64,
    crashes_in_ready: u64,
    snapshots_installed: u64,
    acknowledged: u64,
    not_leader: u64,
    dropped: u64,
}

impl Coverage {
    fn add(&mut self, o: Coverage) {
        self.terms_led += o.terms_led;
        self.crashes += o.crashes;
        self.crashes_in_ready += o.crashes_in_ready;
        self.snapshots_installed += o.snapshots_installed;
        self.acknowledged += o.acknowledged;
        self.not_leader += o.not_leader;
        self.dropped += o.dropped;
    }
}

struct Packet {
    at: u64,
    seq: u64,
    from_life: u64,
    msg: Message,
}

struct Proposal {
    data: Vec<u8>,
    answer: Option<Result<i64, ProposeError>>,
}

struct Sim {
    rng: Rng,
    round: u64,
    clock: ManualClock,
    voters: Vec<Voter>,
    net: Vec<Packet>,
    seq: u64,
    /// Directed links (from, to) by voter index that deliver nothing, until a round.
    cut: BTreeMap<(usize, usize), u64>,
    healed: bool,
    /// The committed sequence: every voter's applied entries must agree with it.
    log: BTreeMap<u64, (u64, Bytes)>,
    /// The image at each applied offset, as the first voter there had it.
    images: BTreeMap<u64, serde_json::Value>,
    /// The leader of each term seen so far.
    leaders: BTreeMap<u64, u64>,
    proposals: BTreeMap<u64, Proposal>,
    /// A digest of everything that happened, for the determinism check.
    trace: u64,
    coverage: Coverage,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let n = if seed.is_multiple_of(2) { 3 } else { 5 };
        let mut sim = Sim {
            rng: Rng(seed),
            round: 0,
            clock: ManualClock::new(1_700_000_000_000),
            voters: (0..n)
                .map(|_| Voter {
                    dir: scratch_dir(),
                    core: None,
                    life: 0,
                    crash_armed: None,
                    durable: None,
                    commit: 0,
                    applied: 0,
                })
                .collect(),
            net: Vec::new(),
            seq: 0,
            cut: BTreeMap::new(),
            healed: false,
            log: BTreeMap::new(),
            images: BTreeMap::new(),
            leaders: BTreeMap::new(),
            proposals: BTreeMap::new(),
            trace: 0xcbf2_9ce4_8422_2325,
            coverage: Coverage::default(),
        };
        for i in 0..n {
            sim.start(i);
        }
        sim
    }

    fn record(&mut self, words: &[u64]) {
        for w in words {
            for b in w.to_le_bytes() {
                self.trace = (self.trace ^ b as u64).wrapping_mul(0x100_0000_01b3);
            }
        }
    }

    /// Opens voter `i` from its directory, with a seed-drawn election timeout: raft-rs
    /// draws from `[min, max)` with an unseeded RNG, so a range of one keeps it exact.
    fn start(&mut self, i: usize) {
        let n = self.voters.len();
        let config = QuorumConfig {
            node_id: i as i32,
            voters: (0..n as i32).map(|k| (k, format!("sim-{k}"))).collect(),
            election_timeout_ms: 100,
            snapshot_bytes: SNAPSHOT_BYTES,
        };
        let ids: Vec<u64> = (0..n as i32).map(raft_id).collect();
        let ticks = 10 + self.rng.below(10) as usize;
        let v = &mut self.voters[i];
        let store = RaftStore::open(v.dir.path(), &ids, v.life == 0, self.clock.now_ms())
            .unwrap_or_else(|e| panic!("voter {i} cannot restart: {e}"));
        let core: Core<u64> = Core::new(&config, store, Some("sim".into()), ticks..ticks + 1)
            .unwrap_or_else(|e| panic!("voter {i} cannot restart: {e}"));
        let raft = &core.node.raft;
        let back = Durable {
            term: raft.term,
            vote: raft.vote,
            last_index: raft.raft_log.last_index(),
            commit: raft.raft_log.committed,
        };
        if let Some(before) = v.durable.take() {
            assert!(
                back.term == before.term
                    && back.vote == before.vote
                    && back.last_index == before.last_index
                    && back.commit <= before.commit,
                "voter {i} restarted with {back:?}, but had made {before:?} durable"
            );
        }
        v.life += 1;
        v.commit = back.commit;
        v.applied = core.image.metadata_offset as u64;
        v.core = Some(core);
        let life = v.life;
        self.record(&[1, i as u64, life, ticks as u64]);
    }

    /// Drops voter `i`'s core as a kill would: nothing is closed or flushed.
    fn crash(&mut self, i: usize, between_readies: bool) {
        let v = &mut self.voters[i];
        let Some(core) = v.core.take() else { return };
        let raft = &core.node.raft;
        v.durable = between_readies.then(|| Durable {
            term: raft.term,
            vote: raft.vote,
            last_index: raft.raft_log.last_index(),
            commit: raft.raft_log.committed,
        });
        v.crash_armed = None;
        drop(core);
        self.coverage.crashes += between_readies as u64;
        self.coverage.crashes_in_ready += !between_readies as u64;
        self.record(&[2, i as u64, between_readies as u64]);
    }

    fn run(&mut self) -> (u64, Coverage) {
        while self.round < FAULT_ROUNDS {
            self.round(true);
        }
        self.heal();
        let deadline = self.round + HEAL_ROUNDS;
        let mut probe = None;
        loop {
            assert!(
                self.round < deadline,
                "no progress {HEAL_ROUNDS} rounds after healing (probe {probe:?})"
            );
            self.round(false);
            let offset = probe.and_then(|t| match self.proposals[&t].answer {
                Some(Ok(offset)) => Some(offset as u64),
                _ => None,
            });
            match offset {
                Some(offset) if self.converged(offset) => break,
                Some(_) => {}
                None if probe.is_some_and(|t| self.proposals[&t].answer.is_none()) => {}
                None => probe = self.propose_to_leader(),
            }
        }
        for i in 0..self.voters.len() {
            let mut rec = Recorder::default();
            self.core(i).stop(&mut rec);
            self.absorb(i, rec.events);
        }
        let acked: Vec<u64> = self
            .proposals
            .values()
            .filter_map(|p| p.answer.clone()?.ok())
            .map(|o| o as u64)
            .collect();
        for (i, v) in self.voters.iter().enumerate() {
            assert!(
                acked.iter().all(|o| *o <= v.applied),
                "voter {i} applied only up to {} of the acknowledged entries",
                v.applied
            );
        }
        (self.trace, self.coverage)
    }

    /// Whether every voter has applied the same committed entries, up to `offset` at least.
    fn converged(&self, offset: u64) -> bool {
        let first = self.voters[0].applied;
        self.voters.iter().all(|v| {
            let commit = v.core.as_ref().map(|c| c.node.raft.raft_log.committed);
            v.applied >= offset && v.applied == first && commit == Some(first)
        })
    }

    fn heal(&mut self) {
        self.healed = true;
        self.cut.clear();
        for i in 0..self.voters.len() {
            self.voters[i].crash_armed = None;
            if self.voters[i].core.is_none() {
                self.start(i);
            }
        }
    }

    fn core(&mut self, i: usize) -> &mut Core<u64> {
        self.voters[i].core.as_mut().expect("the voter is up")
    }

    fn up(&self, i: usize) -> bool {
        self.voters[i].core.is_some()
    }

    fn round(&mut self, faulty: bool) {
        self.round += 1;
        self.clock.advance(TICK_MS);
        if faulty {
            self.faults();
        }
        let (mut due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.net)
            .into_iter()
            .partition(|p| p.at <= self.round);
        self.net = later;
        due.sort_by_key(|p| (p.at, p.seq));
        for packet in due {
            self.deliver(packet, faulty);
        }
        for i in 0..self.voters.len() {
            if self.up(i) {
                self.core(i).tick();
                self.drain(i);
            }
        }
        if faulty && self.rng.chance(300) {
            let i = self.target();
            if self.up(i) {
                self.propose(i);
            }
        }
    }

    fn faults(&mut self) {
        let n = self.voters.len() as u64;
        let i = self.target();
        let j = ((i as u64 + 1 + self.rng.below(n - 1)) % n) as usize;
        if self.rng.chance(10) && self.up(i) {
            self.drain(i);
            if self.up(i) {
                self.crash(i, true);
            }
        }
        if self.rng.chance(10) && self.up(i) {
            self.voters[i].crash_armed = Some(self.rng.below(3) as usize);
        }
        let down: Vec<usize> = (0..n as usize).filter(|k| !self.up(*k)).collect();
        if !down.is_empty() && self.rng.chance(40) {
            let k = down[self.rng.below(down.len() as u64) as usize];
            self.start(k);
        }
        let round = self.round;
        self.cut.retain(|_, until| *until > round);
        let until = round + 10 + self.rng.below(90);
        if self.rng.chance(15) {
            self.cut.insert((i, j), until);
        }
        if self.rng.chance(10) {
            self.cut.extend([((i, j), until), ((j, i), until)]);
        }
        if self.rng.chance(5) {
            // Voter i is cut off from everyone.
            for k in (0..n as usize).filter(|k| *k != i) {
                self.cut.extend([((i, k), until), ((k, i), until)]);
            }
        }
    }

    fn deliver(&mut self, p: Packet, faulty: bool) {
        let (from, to) = (p.msg.from as usize - 1, p.msg.to as usize - 1);
        let arrives =
            !self.cut.contains_key(&(from, to)) && self.up(to) && !(faulty && self.rng.chance(50));
        let m = &p.msg;
        self.record(&[
            3,
            p.msg.from,
            p.msg.to,
            m.get_msg_type() as u64,
            m.term,
            m.index,
            m.log_term,
            m.commit,
            m.entries.len() as u64,
            m.reject as u64,
            arrives as u64,
        ]);
        self.coverage.dropped += !arrives as u64;
        let snapshot = is_snapshot(&p.msg);
        if arrives {
            let now = self.clock.now_ms();
            self.core(to).step(p.msg, now);
            self.drain(to);
        }
        if snapshot && self.up(from) && self.voters[from].life == p.from_life {
            self.core(from).report_snapshot(raft_id(to as i32), arrives);
            self.drain(from);
        }
    }

    fn enqueue(&mut self, from: usize, msg: Message) {
        let copies = if !self.healed && self.rng.chance(20) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.below(if self.healed { 2 } else { 4 });
            self.seq += 1;
            self.net.push(Packet {
                at: self.round + 1 + delay,
                seq: self.seq,
                from_life: self.voters[from].life,
                msg: msg.clone(),
            });
        }
    }

    /// Runs voter `i`'s `Ready`s until raft-rs has nothing more, as the driver thread's loop
    /// does; an armed crash strikes in the middle of one.
    fn drain(&mut self, i: usize) {
        for _ in 0..16 {
            let now = self.clock.now_ms();
            let v = &mut self.voters[i];
            let Some(core) = v.core.as_mut() else { return };
            let mut rec = Recorder {
                events: Vec::new(),
                crash_after: v.crash_armed,
            };
            let crashed = match catch_unwind(AssertUnwindSafe(|| core.ready(now, &mut rec))) {
                Ok(result) => {
                    result.unwrap_or_else(|e| panic!("voter {i} failed to persist: {e}"));
                    false
                }
                Err(payload) if payload.is::<Crash>() => true,
                Err(payload) => resume_unwind(payload),
            };
            v.crash_armed = rec.crash_after;
            self.absorb(i, rec.events);
            if crashed {
                self.crash(i, false);
                return;
            }
            self.check(i);
            if !self.core(i).has_ready() {
                return;
            }
        }
        panic!("voter {i} still has a Ready after 16 rounds of them");
    }

    /// Election safety and a commit index that never goes back within a life.
    fn check(&mut self, i: usize) {
        let status = self.core(i).status(0);
        let v = &mut self.voters[i];
        assert!(
            status.commit_index >= v.commit,
            "voter {i}'s commit index went back from {} to {}",
            v.commit,
            status.commit_index
        );
        v.commit = status.commit_index;
        if status.is_leader {
            let me = raft_id(i as i32);
            match self.leaders.entry(status.term) {
                btree_map::Entry::Vacant(slot) => {
                    slot.insert(me);
                    self.coverage.terms_led += 1;
                }
                btree_map::Entry::Occupied(had) => {
                    assert_eq!(*had.get(), me, "two leaders in term {}", status.term)
                }
            }
        }
    }

    fn absorb(&mut self, i: usize, events: Vec<Event>) {
        for event in events {
            match event {
                Event::Sent(messages) => {
                    for m in messages {
                        self.enqueue(i, m);
                    }
                }
                Event::Applied {
                    entries,
                    offset,
                    image,
                } => {
                    let v = &mut self.voters[i];
                    if entries.is_empty() {
                        assert!(offset > v.applied, "voter {i} installed an older snapshot");
                        v.applied = offset;
                        self.coverage.snapshots_installed += 1;
                    }
                    for e in entries {
                        assert_eq!(e.index, v.applied + 1, "voter {i} applied out of order");
                        v.applied = e.index;
                        match self.log.entry(e.index) {
                            btree_map::Entry::Vacant(slot) => {
                                slot.insert((e.term, e.data));
                            }
                            btree_map::Entry::Occupied(had) => assert!(
                                *had.get() == (e.term, e.data.clone()),
                                "voter {i} applied {:?} at index {}, another voter {:?}",
                                (e.term, &e.data),
                                e.index,
                                had.get()
                            ),
                        }
                    }
                    assert_eq!(
                        offset, v.applied,
                        "voter {i}'s image is not where it applied"
                    );
                    match self.images.entry(offset) {
                        btree_map::Entry::Vacant(slot) => {
                            slot.insert(image);
                        }
                        btree_map::Entry::Occupied(had) => assert!(
                            *had.get() == image,
                            "voter {i}'s image at offset {offset} differs from another voter's"
                        ),
                    }
                }
                Event::Answer(token, result) => {
                    let (kind, offset) = match &result {
                        Ok(offset) => (0, *offset as u64),
                        Err(ProposeError::NotLeader { .. }) => (1, 0),
                        Err(_) => (2, 0),
                    };
                    self.coverage.acknowledged += (kind == 0) as u64;
                    self.coverage.not_leader += (kind == 1) as u64;
                    self.record(&[4, token, kind, offset]);
                    let p = self.proposals.get_mut(&token).expect("a proposal");
                    assert!(p.answer.is_none(), "proposal {token} answered twice");
                    if let Ok(offset) = result {
                        let at = self.log.get(&(offset as u64)).map(|(_, data)| &data[..]);
                        assert!(
                            at == Some(&p.data[..]),
                            "proposal {token} was acknowledged at offset {offset}, which holds {:?}",
                            at.map(String::from_utf8_lossy)
                        );
                    }
                    p.answer = Some(result);
                }
            }
        }
    }

    /// Proposes a random small change to voter `i`; one that is not the leader refuses it
    /// at once. Returns the proposal's token.
    fn propose(&mut self, i: usize) -> u64 {
        let token = self.proposals.len() as u64 + 1;
        let topic = format!("t{}", self.rng.below(8));
        let records = if self.rng.chance(400) {
            vec![MetadataRecord::Topic {
                name: topic,
                topic_id: uuid::Uuid::from_u64_pair(token, self.rng.next()),
            }]
        } else {
            vec![MetadataRecord::Config {
                resource: ConfigResource::Topic(topic),
                name: format!("k{}", self.rng.below(4)),
                value: Some(token.to_string()),
            }]
        };
        let data = serde_json::to_vec(&records).expect("records serialize");
        self.proposals
            .insert(token, Proposal { data, answer: None });
        let was_leader = self.core(i).status(0).is_leader;
        self.record(&[5, i as u64, token, was_leader as u64]);
        let mut rec = Recorder::default();
        self.core(i).propose(records, token, &mut rec);
        self.absorb(i, rec.events);
        if !was_leader {
            let answer = &self.proposals[&token].answer;
            assert!(
                matches!(answer, Some(Err(ProposeError::NotLeader { .. }))),
                "voter {i} is not the leader but answered proposal {token} with {answer:?}"
            );
        }
        self.drain(i);
        token
    }

    fn leader(&self) -> Option<usize> {
        (0..self.voters.len()).find(|i| {
            self.voters[*i]
                .core
                .as_ref()
                .is_some_and(|c| c.node.raft.state == raft::StateRole::Leader)
        })
    }

    /// A voter for a fault or a proposal: half the time the leader, where the damage is.
    fn target(&mut self) -> usize {
        let any = self.rng.below(self.voters.len() as u64) as usize;
        match self.leader() {
            Some(leader) if self.rng.chance(500) => leader,
            _ => any,
        }
    }

    fn propose_to_leader(&mut self) -> Option<u64> {
        let leader = self.leader()?;
        Some(self.propose(leader))
    }
}

/// A directory for one voter's files: in memory where the machine has a tmpfs, since the
/// simulated crashes keep the page cache (an fsync buys nothing here but time).
fn scratch_dir() -> TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let builder = tempfile::Builder::new().prefix("strom-sim").to_owned();
    if shm.is_dir() {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return dir;
        }
    }
    builder.tempdir().expect("a temporary directory")
}

fn run_seed(seed: u64) -> (u64, Coverage) {
    let mut sim = Sim::new(seed);
    match catch_unwind(AssertUnwindSafe(|| sim.run())) {
        Ok(outcome) => outcome,
        Err(payload) => {
            let why = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "quorum simulation failed, seed {seed}, round {} (replay with STROM_SIM_SEED={seed}): {why}",
                sim.round
            )
        }
    }
}

#[test]
fn the_quorum_stays_safe_and_recovers_under_simulated_faults() {
    let seeds = match std::env::var("STROM_SIM_SEED") {
        Ok(seed) => {
            let seed = seed.parse().expect("STROM_SIM_SEED is a number");
            seed..seed + 1
        }
        Err(_) => 0..SEEDS,
    };
    let started = std::time::Instant::now();
    let mut total = Coverage::default();
    for seed in seeds.clone() {
        total.add(run_seed(seed).1);
    }
    eprintln!("seeds {seeds:?} in {:?}: {total:?}", started.elapsed());
    if seeds.end - seeds.start == SEEDS {
        let Coverage {
            terms_led,
            crashes,
            crashes_in_ready,
            snapshots_installed,
            acknowledged,
            not_leader,
            dropped,
        } = total;
        for (what, count) in [
            ("terms with a leader", terms_led),
            ("crashes between Readies", crashes),
            ("crashes in a Ready", crashes_in_ready),
            ("snapshots installed", snapshots_installed),
            ("acknowledged proposals", acknowledged),
            ("NotLeader answers", not_leader),
            ("dropped messages", dropped),
        ] {
            assert!(count >= SEEDS, "only {count} {what} in {SEEDS} seeds");
        }
    }
}

#[test]
fn a_seed_replays_the_same_trace() {
    assert_eq!(run_seed(7).0, run_seed(7).0);
    assert_ne!(
        run_seed(7).0,
        run_seed(8).0,
        "the trace digest sees what happens"
    );
}

#[test]
fn a_new_leader_reports_only_voters_heard_in_its_term() {
    // What DescribeQuorum (and so kafka-metadata-quorum) shows for each voter: after the
    // leader dies, its successor has heard nothing from it, so it reports an unknown log
    // end offset and no contact, not the dead leader's last heartbeat of the old term.
    let mut sim = Sim::new(0);
    let settle = |sim: &mut Sim, what: &str, done: &dyn Fn(&mut Sim) -> bool| {
        for _ in 0..2_000 {
            sim.round(false);
            if done(sim) {
                return;
            }
        }
        panic!("{what}: not after 2000 rounds");
    };
    let caught_up = |sim: &mut Sim| {
        let Some(l) = sim.leader() else { return false };
        let now = sim.clock.now_ms();
        let status = sim.core(l).status(now);
        status.commit_index > 0
            && status
                .voters
                .iter()
                .filter(|v| sim.up(v.node_id as usize))
                .all(|v| v.log_end_offset == status.commit_index as i64 && v.last_contact_ms > 0)
    };
    settle(&mut sim, "a leader with every voter caught up", &caught_up);
    let old = sim.leader().expect("a leader");
    sim.crash(old, true);
    settle(
        &mut sim,
        "a new leader with the live voters caught up",
        &|sim| sim.leader().is_some_and(|l| l != old) && caught_up(sim),
    );
    let new = sim.leader().expect("a leader");
    let now = sim.clock.now_ms();
    let status = sim.core(new).status(now);
    let dead = status
        .voters
        .iter()
        .find(|v| v.node_id == old as i32)
        .expect("the old leader is a voter");
    assert_eq!(
        (dead.log_end_offset, dead.last_contact_ms),
        (-1, -1),
        "{status:?}"
    );
    let me = status
        .voters
        .iter()
        .find(|v| v.node_id == new as i32)
        .expect("the leader is a voter");
    assert_eq!(me.last_contact_ms, now);
}
