//! Consumer groups: the coordinator state machine ([`state`]), the records it keeps in the
//! internal compacted topic `__consumer_offsets` ([`records`]), and the thin shell around
//! them here: it parks JoinGroup and SyncGroup requests on channels until the state machine
//! answers them, writes the records it asks for, and replays them at start-up.
//!
//! A group lives in Kafka's partition `abs(hash(group.id)) % partitions` of
//! `__consumer_offsets`, and its coordinator is that partition's leader: a broker holds the
//! groups of the partitions it leads, loads them when it becomes leader and drops them
//! when it stops ([`GroupCoordinator::follow_leadership`]).

pub mod records;
pub mod state;
#[cfg(test)]
mod tests;

use crate::clock::Clock;
use crate::partition::ReplicaManager;
use crate::protocol::codes;
use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};
use records::GroupRecord;
pub use state::{
    CommitOffset, CommitRequest, GroupConfig, GroupState, GroupSummary, JoinRequest, JoinResult,
    SyncRequest, SyncResult,
};
use state::{Coordinator, Effects, Reply, Token};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// A Kafka record's key and value (`None`: a tombstone).
pub type KeyValue = (Bytes, Option<Bytes>);

/// The internal topic of group metadata and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Kafka's coordinator partition of a group: `Utils.abs(groupId.hashCode) % partitions`,
/// with Java's String.hashCode over UTF-16 code units.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group_id.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(unit as i32);
    }
    // Utils.abs maps Integer.MIN_VALUE to 0 rather than overflowing.
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// Where the coordinator writes its records: the broker's `__consumer_offsets` partition of
/// the group (created on first use). `Err` is the Kafka error code to answer with.
pub trait OffsetsLog: Sync {
    fn append(&self, group_id: &str, batch: &[u8]) -> Result<(), i16>;
}

struct Inner {
    machine: Coordinator,
    waiters: HashMap<Token, oneshot::Sender<Reply>>,
    next_token: Token,
}

/// The group coordinator of this broker.
pub struct GroupCoordinator {
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
    /// Set at shutdown: requests that would wait are answered at once instead.
    closed: AtomicBool,
    /// The partitions of `__consumer_offsets` whose groups this coordinator holds, with the
    /// leader epoch it loaded them at; and the topic's partition count.
    owned: Mutex<HashMap<i32, i32>>,
    partitions: AtomicI32,
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig, clock: Arc<dyn Clock>) -> GroupCoordinator {
        GroupCoordinator {
            inner: Mutex::new(Inner {
                machine: Coordinator::new(config, clock.now_ms()),
                waiters: HashMap::new(),
                next_token: 1,
            }),
            clock,
            closed: AtomicBool::new(false),
            owned: Mutex::new(HashMap::new()),
            partitions: AtomicI32::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state stays consistent across a panicking holder: every input is applied
        // by one call that either finishes or changes nothing observable afterwards.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the groups this coordinator holds follow the leadership of the
    /// `__consumer_offsets` partitions in `image`, as Kafka's coordinators do: a partition
    /// this broker leads (at a leader epoch it has not loaded yet) has its groups replayed
    /// from its log; one it no longer leads has its groups dropped, their parked requests
    /// answered NOT_COORDINATOR. Called at start-up before the listener opens, and after
    /// every applied image.
    pub fn follow_leadership(
        &self,
        replicas: &ReplicaManager,
        image: &crate::metadata::MetadataImage,
    ) -> anyhow::Result<()> {
        let Some(topic) = image.topics.get(OFFSETS_TOPIC) else {
            return Ok(());
        };
        let partitions = topic.partitions.len() as i32;
        self.partitions.store(partitions, Ordering::Release);
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let mut owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        let mut fx = Effects::default();
        for (index, pi) in &topic.partitions {
            let local = replicas
                .get(OFFSETS_TOPIC, *index)
                .filter(|_| pi.leader == replicas.node_id());
            let loaded_at = owned.get(index).copied();
            if local.is_some() && loaded_at == Some(pi.leader_epoch) {
                continue;
            }
            if loaded_at.is_some() {
                let index = *index;
                let dropped = inner
                    .machine
                    .unload(|g| partition_for(g, partitions) == index, &mut fx);
                owned.remove(&index);
                tracing::info!(
                    partition = index,
                    groups = dropped,
                    "no longer coordinating the groups of {OFFSETS_TOPIC}-{index}"
                );
            }
            if let Some(p) = local {
                let records = replay(&mut inner.machine, &p, now)?;
                owned.insert(*index, pi.leader_epoch);
                tracing::info!(
                    partition = index,
                    records,
                    leader_epoch = pi.leader_epoch,
                    "coordinating the groups of {OFFSETS_TOPIC}-{index}"
                );
            }
        }
        drop(owned);
        for (token, reply) in fx.replies {
            if let Some(tx) = inner.waiters.remove(&token) {
                let _ = tx.send(reply);
            }
        }
        Ok(())
    }

    /// Whether this broker coordinates `group_id` now: it leads the group's partition of
    /// `__consumer_offsets` and has loaded it. `Err` is NOT_COORDINATOR, for the client to
    /// look the coordinator up again.
    pub fn owns(&self, group_id: &str) -> Result<(), i16> {
        let partitions = self.partitions.load(Ordering::Acquire);
        let owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        if partitions > 0 && owned.contains_key(&partition_for(group_id, partitions)) {
            Ok(())
        } else {
            Err(codes::NOT_COORDINATOR)
        }
    }

    /// Applies effects: persists records (while the lock is held, so records reach the log
    /// in the order the state changed), then answers parked requests.
    fn apply(&self, inner: &mut Inner, log: &dyn OffsetsLog, fx: Effects) -> Result<(), i16> {
        let persisted = persist(log, &fx.records, self.clock.now_ms());
        if let Err(code) = persisted {
            tracing::error!(
                code,
                records = fx.records.len(),
                "writing group records to __consumer_offsets failed"
            );
        }
        for (token, reply) in fx.replies {
            if let Some(tx) = inner.waiters.remove(&token) {
                // The requester may have gone (connection closed): nothing to do then.
                let _ = tx.send(reply);
            }
        }
        persisted
    }

    /// Runs `input` with a fresh token whose reply is awaited.
    async fn parked(
        &self,
        log: &dyn OffsetsLog,
        input: impl FnOnce(&mut Coordinator, i64, Token, &mut Effects),
    ) -> Option<Reply> {
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.lock();
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            let token = inner.next_token;
            inner.next_token += 1;
            inner.waiters.insert(token, tx);
            let mut fx = Effects::default();
            input(&mut inner.machine, self.clock.now_ms(), token, &mut fx);
            let _ = self.apply(&mut inner, log, fx);
        }
        rx.await.ok()
    }

    /// JoinGroup: answered when the group's join phase ends (or at once on an error).
    pub async fn join(&self, log: &dyn OffsetsLog, req: JoinRequest) -> JoinResult {
        let member_id = req.member_id.clone();
        let reply = self
            .parked(log, move |m, now, token, fx| {
                m.join(now, JoinRequest { token, ..req }, fx)
            })
            .await;
        match reply {
            Some(Reply::Join(r)) => r,
            _ => JoinResult::error(codes::NOT_COORDINATOR, &member_id),
        }
    }

    /// SyncGroup: followers wait for the leader's assignment.
    pub async fn sync(&self, log: &dyn OffsetsLog, req: SyncRequest) -> SyncResult {
        let reply = self
            .parked(log, move |m, now, token, fx| {
                m.sync(now, SyncRequest { token, ..req }, fx)
            })
            .await;
        match reply {
            Some(Reply::Sync(r)) => r,
            _ => SyncResult::error(codes::NOT_COORDINATOR),
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: &Option<String>,
    ) -> i16 {
        let now = self.clock.now_ms();
        self.lock()
            .machine
            .heartbeat(now, group_id, generation, member_id, instance_id)
    }

    pub fn leave(
        &self,
        log: &dyn OffsetsLog,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<i16> {
        let mut inner = self.lock();
        let mut fx = Effects::default();
        let now = self.clock.now_ms();
        let codes = inner.machine.leave(now, group_id, members, &mut fx);
        let _ = self.apply(&mut inner, log, fx);
        codes
    }

    /// OffsetCommit: the offsets are acknowledged once their records are in the log.
    pub fn commit(&self, log: &dyn OffsetsLog, req: CommitRequest) -> Vec<i16> {
        let mut inner = self.lock();
        let mut fx = Effects::default();
        let now = self.clock.now_ms();
        let codes = inner.machine.commit(now, req, &mut fx);
        match self.apply(&mut inner, log, fx) {
            Ok(()) => codes,
            Err(code) => codes
                .into_iter()
                .map(|c| if c == codes::NONE { code } else { c })
                .collect(),
        }
    }

    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> state::TopicOffsets {
        self.lock().machine.fetch_offsets(group_id, topics)
    }

    pub fn delete_offsets(
        &self,
        log: &dyn OffsetsLog,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<i16>, i16> {
        let mut inner = self.lock();
        let mut fx = Effects::default();
        let result = inner.machine.delete_offsets(group_id, partitions, &mut fx);
        self.apply(&mut inner, log, fx)?;
        result
    }

    /// Purges the committed offsets of deleted topics. `apply` logs a failed write; the
    /// topics are gone either way and the records left behind are only stale.
    pub fn topics_deleted(&self, log: &dyn OffsetsLog, topics: &BTreeSet<String>) {
        let mut inner = self.lock();
        let mut fx = Effects::default();
        inner.machine.topics_deleted(topics, &mut fx);
        let _ = self.apply(&mut inner, log, fx);
    }

    pub fn list(&self, states: &[String]) -> Vec<(String, String, GroupState)> {
        self.lock().machine.list(states)
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupSummary> {
        self.lock().machine.describe(group_id)
    }

    pub fn delete_groups(&self, log: &dyn OffsetsLog, ids: &[String]) -> Vec<i16> {
        let mut inner = self.lock();
        let mut fx = Effects::default();
        let codes = inner.machine.delete_groups(ids, &mut fx);
        match self.apply(&mut inner, log, fx) {
            Ok(()) => codes,
            Err(code) => codes
                .into_iter()
                .map(|c| if c == codes::NONE { code } else { c })
                .collect(),
        }
    }

    /// Session and rebalance timeouts, offset retention: called periodically.
    pub fn tick(&self, log: &dyn OffsetsLog) {
        let mut inner = self.lock();
        let mut fx = Effects::default();
        let now = self.clock.now_ms();
        inner.machine.tick(now, &mut fx);
        let _ = self.apply(&mut inner, log, fx);
    }

    /// At shutdown: parked requests are answered with NOT_COORDINATOR so that their
    /// connections finish and the clients look for the coordinator again.
    pub fn shutdown(&self) {
        let mut inner = self.lock();
        self.closed.store(true, Ordering::Release);
        for (_, tx) in inner.waiters.drain() {
            let _ = tx.send(Reply::Join(JoinResult::error(codes::NOT_COORDINATOR, "")));
        }
    }
}

/// Replays one partition of `__consumer_offsets` into `machine`, to its log end (a new
/// leader's records past the high watermark are its own and will be committed); returns
/// how many group records it read. Records still in Strom's JSON format (written before
/// Kafka's schemas) are loaded and then rewritten: a tombstone of each JSON key, so that
/// compaction drops it, and the same record in Kafka's schema.
fn replay(
    machine: &mut Coordinator,
    p: &crate::partition::Partition,
    now_ms: i64,
) -> anyhow::Result<usize> {
    let mut loaded = 0;
    let mut offset = p.log_start_offset();
    let end = p.log_end_offset();
    // JSON-era keys whose latest record is not a tombstone: (offset, key, record).
    let mut legacy: HashMap<Bytes, (i64, GroupRecord)> = HashMap::new();
    while offset < end {
        let fetched = p.read_for_follower(offset, 1 << 20, true)?;
        if fetched.records.is_empty() {
            break;
        }
        let mut buf = fetched.records.clone();
        while !buf.is_empty() {
            let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| {
                anyhow::anyhow!("{OFFSETS_TOPIC}-{} batch is unreadable: {e}", p.index)
            })?;
            for r in set.records {
                offset = offset.max(r.offset + 1);
                let Some(key) = r.key else { continue };
                match GroupRecord::decode(&key, r.value.as_deref()) {
                    Ok(decoded) => {
                        if decoded.legacy_json {
                            if r.value.is_some() {
                                legacy.insert(key, (r.offset, decoded.record.clone()));
                            } else {
                                legacy.remove(&key);
                            }
                        }
                        machine.load(now_ms, decoded.record);
                        loaded += 1;
                    }
                    Err(e) => tracing::warn!(
                        partition = p.index,
                        offset = r.offset,
                        cause = %e,
                        "skipping a record of __consumer_offsets that is not a group record"
                    ),
                }
            }
        }
    }
    if !legacy.is_empty() {
        convert_legacy(p, legacy, now_ms);
    }
    Ok(loaded)
}

/// Rewrites JSON-era records in Kafka's schema, in their log order, each after a tombstone
/// of its JSON key. A failed append is logged and retried at the next load: the JSON
/// records stay readable meanwhile.
fn convert_legacy(
    p: &crate::partition::Partition,
    legacy: HashMap<Bytes, (i64, GroupRecord)>,
    now_ms: i64,
) {
    let mut records: Vec<(i64, Bytes, GroupRecord)> = legacy
        .into_iter()
        .map(|(key, (offset, rec))| (offset, key, rec))
        .collect();
    records.sort_by_key(|(offset, _, _)| *offset);
    let count = records.len();
    // 500 records (1,000 with their tombstones) per batch stay far below max.message.bytes.
    for chunk in records.chunks(500) {
        let kvs: Vec<KeyValue> = chunk
            .iter()
            .flat_map(|(_, json_key, rec)| [(json_key.clone(), None), rec.encode()])
            .collect();
        let appended = encode_batch(&kvs, now_ms)
            .map_err(|e| e.to_string())
            .and_then(|b| p.append(&b, 1, now_ms).map_err(|e| e.to_string()));
        if let Err(e) = appended {
            tracing::warn!(partition = p.index, cause = %e, "could not rewrite the JSON-era records of {OFFSETS_TOPIC} in Kafka's format; they stay readable and the next load retries");
            return;
        }
    }
    tracing::info!(
        partition = p.index,
        records = count,
        "rewrote the JSON-era records of {OFFSETS_TOPIC}-{} in Kafka's format",
        p.index
    );
}

/// Writes records as one batch per group (each group's records go to its partition).
fn persist(log: &dyn OffsetsLog, records: &[GroupRecord], now_ms: i64) -> Result<(), i16> {
    let mut by_group: Vec<(&str, Vec<KeyValue>)> = Vec::new();
    for r in records {
        let kv = r.encode();
        match by_group.iter_mut().find(|(g, _)| *g == r.group()) {
            Some((_, list)) => list.push(kv),
            None => by_group.push((r.group(), vec![kv])),
        }
    }
    let mut result = Ok(());
    for (group, kvs) in by_group {
        let batch = encode_batch(&kvs, now_ms).map_err(|e| {
            tracing::error!(cause = %e, "encoding group records failed");
            codes::UNKNOWN_SERVER_ERROR
        });
        if let Err(code) = batch.and_then(|b| log.append(group, &b)) {
            result = Err(code);
        }
    }
    result
}

/// One uncompressed v2 batch of keyed records.
pub fn encode_batch(kvs: &[KeyValue], now_ms: i64) -> Result<BytesMut, String> {
    let records: Vec<Record> = kvs
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            crate::log::batch::plain_record(i as i64, now_ms, Some(k.clone()), v.clone())
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(buf)
}
