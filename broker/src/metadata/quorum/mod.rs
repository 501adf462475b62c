//! The metadata quorum: the controller voters replicate the metadata log with Raft
//! (TiKV's raft-rs, a sans-io state machine), and the Raft leader is the active
//! controller. This module is the shell around it: one driver thread ticks the Raft
//! node, steps messages from peers, persists what a `Ready` asks for (fsynced, before any
//! message that depends on it leaves), sends messages through [`transport`], applies
//! committed entries to the metadata image and answers proposals once applied.
//!
//! A Raft entry carries one metadata change: a JSON array of [`MetadataRecord`]s, so a
//! change of many records (a topic with its partitions) commits atomically. Raft ids are
//! Kafka node ids plus one, because raft-rs reserves id 0.

#[cfg(test)]
mod sim;
pub mod store;
pub mod transport;

use super::image::MetadataImage;
use super::records::MetadataRecord;
use crate::clock::Clock;
use raft::eraftpb::{Entry, Message, MessageType, Snapshot};
use raft::{Config as RaftConfig, RawNode, SnapshotStatus, StateRole};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::RaftStore;
use tokio::sync::{oneshot, watch};

/// Raft ids are Kafka node ids + 1: raft-rs reserves 0 for "none".
pub fn raft_id(node_id: i32) -> u64 {
    node_id as u64 + 1
}

pub fn node_id(raft_id: u64) -> i32 {
    raft_id as i32 - 1
}

/// How the quorum is set up, from `controller.quorum.*`.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    pub node_id: i32,
    /// Every voter's node id and the address of its controller listener.
    pub voters: BTreeMap<i32, String>,
    pub election_timeout_ms: u64,
    /// Bytes of applied records after which the image is snapshotted and the log trimmed
    /// (`metadata.log.max.record.bytes.between.snapshots`).
    pub snapshot_bytes: u64,
}

/// What a proposal can come back with.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProposeError {
    #[error("this node is not the active controller (leader: {leader:?})")]
    NotLeader { leader: Option<i32> },
    #[error("the quorum stopped")]
    Stopped,
    #[error("the proposal was refused: {0}")]
    Refused(String),
}

/// One voter's replication state, as the leader sees it (DescribeQuorum).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoterState {
    pub node_id: i32,
    /// The log end offset known to have been replicated to it (-1: unknown).
    pub log_end_offset: i64,
    /// Wall-clock time of the last message from it (-1: never).
    pub last_contact_ms: i64,
}

/// The quorum as this node sees it, published on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumStatus {
    pub leader_id: Option<i32>,
    pub term: u64,
    pub is_leader: bool,
    /// The high watermark: entries up to this index are committed (offset = index - 1).
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    pub voters: Vec<VoterState>,
    /// Set when persisting failed; the node then stops taking part.
    pub failed: Option<String>,
}

enum Input {
    Message(Box<Message>),
    Propose {
        records: Vec<MetadataRecord>,
        done: oneshot::Sender<Result<i64, ProposeError>>,
    },
    SnapshotSent {
        to: u64,
        ok: bool,
    },
    Stop,
}

/// The handle the rest of the broker holds.
pub struct Quorum {
    config: QuorumConfig,
    inputs: Mutex<mpsc::Sender<Input>>,
    status: watch::Receiver<QuorumStatus>,
    image: watch::Receiver<Arc<MetadataImage>>,
    store: RaftStore,
    driver: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Observers (broker-only nodes) by node id: the offset they last fetched from and when.
    observers: Mutex<BTreeMap<i32, (i64, i64)>>,
}

impl Quorum {
    /// Opens the voter's state in `dir` and starts the driver thread.
    pub fn start(
        config: QuorumConfig,
        dir: &Path,
        clean: bool,
        cluster_id_hint: Option<String>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Arc<Quorum>> {
        let voters: Vec<u64> = config.voters.keys().map(|id| raft_id(*id)).collect();
        let store = RaftStore::open(dir, &voters, clean, clock.now_ms())?;
        let tick_ms = (config.election_timeout_ms / 10).max(5);
        // Randomised in [1, 1.5) election timeouts, so a new leader is in place well within
        // twice the timeout after the old one dies.
        let core = Core::new(&config, store.clone(), cluster_id_hint, 10..15)?;
        let (input_tx, input_rx) = mpsc::channel();
        let transport = transport::Transport::start(
            config.node_id,
            &config.voters,
            input_tx.clone(),
            |to, ok| Input::SnapshotSent { to, ok },
        );
        let (status_tx, status_rx) = watch::channel(QuorumStatus::default());
        let (image_tx, image_rx) = watch::channel(Arc::new(core.image.clone()));
        let driver = Driver {
            core,
            inputs: input_rx,
            transport,
            image_tx,
            status_tx,
            tick: Duration::from_millis(tick_ms),
            clock,
        };
        let handle = std::thread::Builder::new()
            .name("raft".into())
            .spawn(move || driver.run())?;
        Ok(Arc::new(Quorum {
            config,
            inputs: Mutex::new(input_tx),
            status: status_rx,
            image: image_rx,
            store,
            driver: Mutex::new(Some(handle)),
            observers: Mutex::new(BTreeMap::new()),
        }))
    }

    fn send(&self, input: Input) -> bool {
        self.inputs
            .lock()
            .expect("quorum inputs lock")
            .send(input)
            .is_ok()
    }

    pub fn config(&self) -> &QuorumConfig {
        &self.config
    }

    /// Hands a Raft message from a peer to the driver.
    pub fn deliver(&self, message: Message) {
        self.send(Input::Message(Box::new(message)));
    }

    /// Proposes one metadata change; resolves once it is committed and applied to this
    /// node's image, with the offset after it.
    pub async fn propose(&self, records: Vec<MetadataRecord>) -> Result<i64, ProposeError> {
        let (done, wait) = oneshot::channel();
        if !self.send(Input::Propose { records, done }) {
            return Err(ProposeError::Stopped);
        }
        wait.await.unwrap_or(Err(ProposeError::Stopped))
    }

    pub fn status(&self) -> QuorumStatus {
        self.status.borrow().clone()
    }

    pub fn subscribe_status(&self) -> watch::Receiver<QuorumStatus> {
        self.status.clone()
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    pub fn subscribe_image(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.clone()
    }

    /// Notes an observer's fetch (for DescribeQuorum).
    pub fn observed(&self, node_id: i32, offset: i64, now_ms: i64) {
        self.observers
            .lock()
            .expect("observers lock")
            .insert(node_id, (offset, now_ms));
    }

    /// Observers that fetched since `since_ms`: (node id, fetch offset, last fetch time).
    pub fn observers(&self, since_ms: i64) -> Vec<(i32, i64, i64)> {
        let mut all = self.observers.lock().expect("observers lock");
        all.retain(|_, (_, at)| *at >= since_ms);
        all.iter().map(|(id, (o, at))| (*id, *o, *at)).collect()
    }

    pub fn store(&self) -> &RaftStore {
        &self.store
    }

    /// Stops the driver and flushes the log.
    pub fn stop(&self, now_ms: i64) -> anyhow::Result<()> {
        self.send(Input::Stop);
        if let Some(h) = self.driver.lock().expect("driver lock").take() {
            let _ = h.join();
        }
        self.store.close(now_ms)?;
        Ok(())
    }
}

/// How a proposal is answered by the driver thread.
type Answer = oneshot::Sender<Result<i64, ProposeError>>;

/// The thread shell around a [`Core`]: inputs from a channel, ticks from the wall clock,
/// effects out to the transport and the broker's watchers.
struct Driver {
    core: Core<Answer>,
    inputs: mpsc::Receiver<Input>,
    transport: transport::Transport,
    image_tx: watch::Sender<Arc<MetadataImage>>,
    status_tx: watch::Sender<QuorumStatus>,
    tick: Duration,
    clock: Arc<dyn Clock>,
}

/// Where the driver thread's [`Core`] puts its effects.
struct Outlets<'a> {
    transport: &'a transport::Transport,
    image_tx: &'a watch::Sender<Arc<MetadataImage>>,
}

impl Effects<Answer> for Outlets<'_> {
    fn send(&mut self, messages: Vec<Message>) {
        self.transport.send_all(messages);
    }

    fn applied(&mut self, _entries: &[Entry], image: &MetadataImage) {
        let _ = self.image_tx.send(Arc::new(image.clone()));
    }

    fn answer(&mut self, done: Answer, result: Result<i64, ProposeError>) {
        let _ = done.send(result);
    }
}

impl Driver {
    fn run(mut self) {
        let mut last_tick = Instant::now();
        loop {
            let mut out = Outlets {
                transport: &self.transport,
                image_tx: &self.image_tx,
            };
            // Work raft-rs has pending (a proposal made by the core itself) goes first.
            let wait = if self.core.has_ready() {
                Duration::ZERO
            } else {
                self.tick.saturating_sub(last_tick.elapsed())
            };
            match self.inputs.recv_timeout(wait) {
                Ok(Input::Message(m)) => self.core.step(*m, self.clock.now_ms()),
                Ok(Input::Propose { records, done }) => self.core.propose(records, done, &mut out),
                Ok(Input::SnapshotSent { to, ok }) => self.core.report_snapshot(to, ok),
                Ok(Input::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if last_tick.elapsed() >= self.tick {
                self.core.tick();
                last_tick = Instant::now();
            }
            if let Err(e) = self.core.ready(self.clock.now_ms(), &mut out) {
                // A voter that cannot persist must not vote or acknowledge: it stops here,
                // and the node reports itself failed.
                tracing::error!(cause = %e, "persisting Raft state failed; this controller stops");
                self.status_tx
                    .send_modify(|s| s.failed = Some(e.to_string()));
                break;
            }
            let status = self.core.status(self.clock.now_ms());
            self.status_tx.send_if_modified(|s| {
                // Contact times change constantly; publish only what a waiter acts on.
                let changed = s.leader_id != status.leader_id
                    || s.term != status.term
                    || s.is_leader != status.is_leader
                    || s.commit_index != status.commit_index
                    || s.applied_index != status.applied_index
                    || s.last_index != status.last_index;
                *s = status;
                changed
            });
        }
        self.core.stop(&mut Outlets {
            transport: &self.transport,
            image_tx: &self.image_tx,
        });
    }
}

/// Where a [`Core`]'s effects go, in the order they happen.
trait Effects<T> {
    /// Messages that may leave now (a follower's only once what they promise is persisted;
    /// a leader's appends before its own write).
    fn send(&mut self, messages: Vec<Message>);
    /// Committed entries were applied to `image` (no entries: a snapshot was installed).
    fn applied(&mut self, entries: &[Entry], image: &MetadataImage);
    /// A proposal is finished: its offset once applied, or why not.
    fn answer(&mut self, token: T, result: Result<i64, ProposeError>);
}

/// One voter's Raft logic without threads, sockets or clocks (sans-io): it takes inputs
/// (a peer's message, a tick, a proposal with its token `T`, a snapshot-sent report),
/// and [`Core::ready`] persists what raft-rs asks for and hands the effects out. The
/// driver thread runs it for real, the simulation in `sim.rs` under a seeded network.
struct Core<T> {
    node: RawNode<RaftStore>,
    store: RaftStore,
    image: MetadataImage,
    /// Proposals of this leader waiting for their entry to be applied, by proposal id,
    /// with the term they were proposed in: ids start again at 1 in every process, so an
    /// entry of another leader under the same id (its term tells) is not theirs.
    pending: BTreeMap<u64, (u64, T)>,
    next_proposal: u64,
    bytes_since_snapshot: u64,
    snapshot_bytes: u64,
    /// Each peer's last message to this voter: (wall-clock ms, the message's term).
    last_contact: HashMap<u64, (i64, u64)>,
    cluster_id_hint: Option<String>,
    cluster_id_proposed: bool,
}

impl<T> Core<T> {
    /// Starts the voter `config.node_id` from what `store` holds. raft-rs draws each
    /// election timeout, in ticks, from `election_ticks`.
    fn new(
        config: &QuorumConfig,
        store: RaftStore,
        cluster_id_hint: Option<String>,
        election_ticks: std::ops::Range<usize>,
    ) -> anyhow::Result<Core<T>> {
        let voters: Vec<u64> = config.voters.keys().map(|id| raft_id(*id)).collect();
        let snapshot = store.snapshot_now();
        let mut image = if snapshot.data.is_empty() {
            MetadataImage::default()
        } else {
            MetadataImage::from_checkpoint(&snapshot.data)?
        };
        let applied = snapshot.get_metadata().index;
        image.metadata_offset = applied as i64;
        let raft_config = RaftConfig {
            id: raft_id(config.node_id),
            election_tick: 10,
            heartbeat_tick: 2,
            min_election_tick: election_ticks.start,
            max_election_tick: election_ticks.end,
            applied,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            // A leader that cannot reach a majority steps down, and a partitioned voter
            // that comes back does not disrupt the quorum with a higher term.
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        raft_config.validate()?;
        let logger = slog::Logger::root(TracingDrain, slog::o!());
        let mut node = RawNode::new(&raft_config, store.clone(), &logger)?;
        if voters == [raft_id(config.node_id)] {
            // A quorum of one needs no election timeout to find out it is alone.
            node.campaign()?;
        }
        Ok(Core {
            node,
            store,
            image,
            pending: BTreeMap::new(),
            next_proposal: 1,
            bytes_since_snapshot: 0,
            snapshot_bytes: config.snapshot_bytes.max(1),
            last_contact: HashMap::new(),
            cluster_id_hint,
            cluster_id_proposed: false,
        })
    }

    fn has_ready(&self) -> bool {
        self.node.has_ready()
    }

    fn tick(&mut self) {
        self.node.tick();
    }

    fn step(&mut self, m: Message, now: i64) {
        self.last_contact.insert(m.from, (now, m.term));
        if let Err(e) = self.node.step(m) {
            tracing::debug!(cause = %e, "raft message ignored");
        }
    }

    /// Whether the snapshot message to `to` left (raft-rs waits for this to go on).
    fn report_snapshot(&mut self, to: u64, ok: bool) {
        let status = if ok {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.node.report_snapshot(to, status);
    }

    /// Proposes one metadata change, answered through `out` once applied (or refused).
    fn propose(&mut self, records: Vec<MetadataRecord>, token: T, out: &mut impl Effects<T>) {
        self.propose_as(records, Some(token), out);
    }

    /// Answers every waiting proposal: the core is stopping.
    fn stop(&mut self, out: &mut impl Effects<T>) {
        for (_, (_, token)) in std::mem::take(&mut self.pending) {
            out.answer(token, Err(ProposeError::Stopped));
        }
    }

    fn propose_as(
        &mut self,
        records: Vec<MetadataRecord>,
        token: Option<T>,
        out: &mut impl Effects<T>,
    ) {
        if self.node.raft.state != StateRole::Leader {
            if let Some(token) = token {
                let leader = self.node.raft.leader_id;
                out.answer(
                    token,
                    Err(ProposeError::NotLeader {
                        leader: (leader != 0).then(|| node_id(leader)),
                    }),
                );
            }
            return;
        }
        let id = self.next_proposal;
        self.next_proposal += 1;
        let data = serde_json::to_vec(&records).expect("metadata records serialize");
        match self.node.propose(id.to_be_bytes().to_vec(), data) {
            Ok(()) => {
                if let Some(token) = token {
                    self.pending.insert(id, (self.node.raft.term, token));
                }
            }
            Err(e) => {
                if let Some(token) = token {
                    out.answer(token, Err(ProposeError::Refused(e.to_string())));
                }
            }
        }
    }

    /// Handles raft-rs's `Ready`, then what follows from the new state (answers to a
    /// deposed leader's proposals, the cluster id). A persisting failure is returned
    /// before anything that depends on it leaves.
    fn ready(&mut self, now: i64, out: &mut impl Effects<T>) -> Result<(), store::StoreError> {
        self.on_ready(now, out)?;
        self.after_ready(out);
        Ok(())
    }

    fn on_ready(&mut self, now: i64, out: &mut impl Effects<T>) -> Result<(), store::StoreError> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut ready = self.node.ready();
        // A leader may send before persisting (Raft's parallel write, §10.2.1 of the
        // thesis); a follower's answers are in persisted_messages, sent after the fsync.
        send(out, ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.store.apply_snapshot(&snapshot, now)?;
            self.install_snapshot(&snapshot, out);
        }
        let committed = ready.take_committed_entries();
        self.apply(committed, out);
        if !ready.entries().is_empty() {
            self.store.append(ready.entries(), now)?;
        }
        if let Some(hs) = ready.hs() {
            self.store.set_hard_state(hs)?;
        }
        send(out, ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.store.set_commit(commit);
        }
        send(out, light.take_messages());
        let committed = light.take_committed_entries();
        self.apply(committed, out);
        self.node.advance_apply();
        self.maybe_snapshot(now)?;
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot, out: &mut impl Effects<T>) {
        match MetadataImage::from_checkpoint(&snapshot.data) {
            Ok(mut image) => {
                image.metadata_offset = snapshot.get_metadata().index as i64;
                tracing::info!(
                    offset = image.metadata_offset,
                    "installed the metadata snapshot from the leader"
                );
                self.image = image;
                self.bytes_since_snapshot = 0;
                out.applied(&[], &self.image);
            }
            Err(e) => tracing::error!(cause = %e, "a snapshot from the leader is unreadable"),
        }
    }

    fn apply(&mut self, entries: Vec<Entry>, out: &mut impl Effects<T>) {
        if entries.is_empty() {
            return;
        }
        let mut done = Vec::new();
        for e in &entries {
            self.bytes_since_snapshot += self.image.apply_entry(e.index, &e.data) as u64;
            if e.context.len() == 8 {
                let id = u64::from_be_bytes(e.context[..8].try_into().expect("8 bytes"));
                if self
                    .pending
                    .get(&id)
                    .is_some_and(|(term, _)| *term == e.term)
                {
                    let (_, token) = self.pending.remove(&id).expect("just seen");
                    done.push((token, e.index as i64));
                }
            }
        }
        out.applied(&entries, &self.image);
        for (token, offset) in done {
            out.answer(token, Ok(offset));
        }
    }

    fn maybe_snapshot(&mut self, now: i64) -> Result<(), store::StoreError> {
        if self.bytes_since_snapshot < self.snapshot_bytes {
            return Ok(());
        }
        let index = self.image.metadata_offset as u64;
        self.store
            .compact(index, self.image.to_checkpoint().into(), now)?;
        tracing::info!(index, "metadata snapshot written; log trimmed");
        self.bytes_since_snapshot = 0;
        Ok(())
    }

    fn after_ready(&mut self, out: &mut impl Effects<T>) {
        let raft = &self.node.raft;
        let is_leader = raft.state == StateRole::Leader;
        if !is_leader && !self.pending.is_empty() {
            let leader = (raft.leader_id != 0).then(|| node_id(raft.leader_id));
            for (_, (_, token)) in std::mem::take(&mut self.pending) {
                out.answer(token, Err(ProposeError::NotLeader { leader }));
            }
        }
        // The first leader of a new cluster names it; later ones find the name applied.
        if is_leader
            && self.image.cluster_id.is_empty()
            && !self.cluster_id_proposed
            && raft.commit_to_current_term()
        {
            let cluster_id = self
                .cluster_id_hint
                .clone()
                .unwrap_or_else(|| super::base64_url(uuid::Uuid::new_v4().as_bytes()));
            self.cluster_id_proposed = true;
            self.propose_as(vec![MetadataRecord::ClusterId { cluster_id }], None, out);
        }
        if !is_leader {
            self.cluster_id_proposed = false;
        }
    }

    /// The quorum as this voter sees it now.
    fn status(&self, now: i64) -> QuorumStatus {
        let raft = &self.node.raft;
        let is_leader = raft.state == StateRole::Leader;
        let voters = if is_leader {
            let me = raft.id;
            // As a Kafka leader reports its followers: only what it heard in its own term.
            // A voter silent since this leader was elected (say, the old leader, dead) has
            // an unknown log end offset and no fetch time, not its last message to this
            // node under an earlier leader, nor raft-rs's reset match index.
            raft.prs()
                .iter()
                .map(|(id, pr)| {
                    let heard = match self.last_contact.get(id) {
                        _ if *id == me => Some(now),
                        Some(&(at, term)) if term == raft.term => Some(at),
                        _ => None,
                    };
                    VoterState {
                        node_id: node_id(*id),
                        log_end_offset: if heard.is_some() {
                            pr.matched as i64
                        } else {
                            -1
                        },
                        last_contact_ms: heard.unwrap_or(-1),
                    }
                })
                .collect::<Vec<_>>()
        } else {
            Vec::new()
        };
        let mut voters = voters;
        voters.sort_by_key(|v| v.node_id);
        QuorumStatus {
            leader_id: (raft.leader_id != 0).then(|| node_id(raft.leader_id)),
            term: raft.term,
            is_leader,
            commit_index: raft.raft_log.committed,
            applied_index: self.image.metadata_offset as u64,
            last_index: raft.raft_log.last_index(),
            voters,
            failed: None,
        }
    }
}

/// Hands messages out, if there are any.
fn send<T>(out: &mut impl Effects<T>, messages: Vec<Message>) {
    if !messages.is_empty() {
        out.send(messages);
    }
}

/// Forwards raft-rs's slog output to tracing.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let mut kv = KvString(String::new());
        let _ = slog::KV::serialize(&record.kv(), record, &mut kv);
        let _ = slog::KV::serialize(values, record, &mut kv);
        let msg = record.msg();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "strom_broker::raft", "{msg}{}", kv.0)
            }
            slog::Level::Warning => tracing::warn!(target: "strom_broker::raft", "{msg}{}", kv.0),
            // Role changes are worth a line at info; the rest of raft-rs's info is detail.
            slog::Level::Info if msg.to_string().starts_with("became") => {
                tracing::info!(target: "strom_broker::raft", "{msg}{}", kv.0)
            }
            _ => tracing::debug!(target: "strom_broker::raft", "{msg}{}", kv.0),
        }
        Ok(())
    }
}

struct KvString(String);

impl slog::Serializer for KvString {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        use std::fmt::Write;
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

/// Whether a message type carries a snapshot (its delivery must be reported back).
pub(crate) fn is_snapshot(m: &Message) -> bool {
    m.get_msg_type() == MessageType::MsgSnapshot
}
