//! Consumer groups: the coordinator state machine ([`state`]), the records it keeps in the
//! internal compacted topic `__consumer_offsets` ([`records`]), and the thin shell around
//! them here: it parks JoinGroup and SyncGroup requests on channels until the state machine
//! answers them, writes the records it asks for, and replays them at start-up.
//!
//! Strom is a single node, so this broker coordinates every group; the partition of
//! `__consumer_offsets` that holds a group is still Kafka's `abs(hash(group.id)) % partitions`
//! so that tooling reading the topic agrees on where a group lives.

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
use std::sync::atomic::{AtomicBool, Ordering};
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
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state stays consistent across a panicking holder: every input is applied
        // by one call that either finishes or changes nothing observable afterwards.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replays the local partitions of `__consumer_offsets` (at start-up, before the
    /// listener opens, so no request sees a half-loaded coordinator).
    pub fn load(&self, replicas: &ReplicaManager, partitions: i32) -> anyhow::Result<usize> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let mut loaded = 0;
        for index in 0..partitions {
            let Some(p) = replicas.get(OFFSETS_TOPIC, index) else {
                continue;
            };
            let mut offset = p.log_start_offset();
            while offset < p.high_watermark() {
                let fetched = p.read(offset, 1 << 20, true)?;
                if fetched.records.is_empty() {
                    break;
                }
                let mut buf = fetched.records.clone();
                while !buf.is_empty() {
                    let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| {
                        anyhow::anyhow!("{OFFSETS_TOPIC}-{index} batch is unreadable: {e}")
                    })?;
                    for r in set.records {
                        offset = offset.max(r.offset + 1);
                        let Some(key) = r.key else { continue };
                        match GroupRecord::decode(&key, r.value.as_deref()) {
                            Ok(rec) => {
                                inner.machine.load(now, rec);
                                loaded += 1;
                            }
                            Err(e) => tracing::warn!(
                                partition = index,
                                offset = r.offset,
                                cause = %e,
                                "skipping a record of __consumer_offsets that is not a group record"
                            ),
                        }
                    }
                }
            }
        }
        Ok(loaded)
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
