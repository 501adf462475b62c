//! Partition replicas and the replica manager. A partition replica owns its log and knows
//! its leader epoch, high watermark and ISR; the replica manager keeps the replicas this
//! broker hosts in step with the metadata image and wakes long-polling fetches on appends.

pub mod fetcher;
pub mod selector;
pub mod state;
pub mod throttle;

use crate::clock::Clock;
use crate::config::{BrokerConfig, LogConfig};
use crate::log::batch::{validate_batches, BatchError};
use crate::log::cleaner::Throttle;
use crate::log::producer_state::{ProducerStateError, SequenceCheck};
use crate::log::{AppendInfo, Log, LogError, ReadPlan};
use crate::metadata::isr::IsrChange;
use crate::metadata::{IsrOutcome, MetadataImage};
use crate::protocol::codes;
use bytes::Bytes;
use state::IsrProposal;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use uuid::Uuid;

/// The file in a partition directory that records which topic id the data belongs to, so a
/// topic deleted and re-created under the same name never inherits old data.
const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// The file in each log dir with the high watermarks of its partitions (Kafka's name and
/// format), so a restarted replica of a replicated partition serves at once what was
/// known committed, and never more.
const HW_CHECKPOINT_FILE: &str = "replication-offset-checkpoint";

/// Suffix of a partition directory being deleted (renamed first, then removed).
const DELETE_SUFFIX: &str = "-delete";

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("not enough in-sync replicas: {isr} < min.insync.replicas {min}")]
    NotEnoughReplicas { isr: usize, min: i32 },
    #[error("storage failure: {0}")]
    Storage(#[from] LogError),
    #[error(transparent)]
    Producer(#[from] ProducerStateError),
    #[error("Produce requests with idempotent batches must have exactly one batch per partition, not {0}")]
    MultipleIdempotentBatches(usize),
}

impl ProduceError {
    /// KIP-467's per-record errors, when the batch was refused for some of its records.
    pub fn record_errors(&self) -> Vec<(i32, String)> {
        match self {
            ProduceError::Batch(b) => b.record_errors(),
            _ => Vec::new(),
        }
    }

    pub fn error_code(&self) -> i16 {
        match self {
            ProduceError::Batch(b) => b.error_code(),
            ProduceError::NotEnoughReplicas { .. } => codes::NOT_ENOUGH_REPLICAS,
            ProduceError::Storage(_) => codes::KAFKA_STORAGE_ERROR,
            ProduceError::Producer(e) => e.error_code(),
            ProduceError::MultipleIdempotentBatches(_) => codes::INVALID_RECORD,
        }
    }
}

/// What one clean did.
pub struct CleanSummary {
    pub stats: crate::log::cleaner::CleanStats,
    /// When tombstones kept by this clean may be dropped by another.
    pub tombstones_due_ms: Option<i64>,
    pub dirty_ratio: f64,
}

/// What a fetch of one partition returns.
pub struct FetchedPartition {
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// What a follower's fetch changed on its leader.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The high watermark moved: waiting consumers may see more.
    pub high_watermark_moved: bool,
    /// The follower, outside the ISR, has caught up: an expansion is due.
    pub may_join_isr: bool,
}

pub struct Partition {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    log: Mutex<Log>,
    high_watermark: AtomicI64,
    log_start_offset: AtomicI64,
    leader_epoch: AtomicI64,
    /// The broker that leads this partition (-1: none), as the newest applied image says.
    leader: std::sync::atomic::AtomicI32,
    isr: RwLock<Vec<i32>>,
    /// The leader's view of its followers; `None` on a follower or without a leader.
    replication: Mutex<Option<state::LeaderState>>,
    /// The high watermark, for acks=all produces waiting for it (and woken on a leader
    /// change, so they answer NOT_LEADER_OR_FOLLOWER rather than wait out their timeout).
    hw_watch: tokio::sync::watch::Sender<i64>,
    /// Whether this replica, as a follower, has since start-up once had everything its
    /// leader had committed: `/readyz` waits for it (a rolling restart must not take the
    /// next broker down while this one still lacks data).
    caught_up: std::sync::atomic::AtomicBool,
    /// Set while appends fail for storage reasons (a full or failing disk), so the failure
    /// is logged at error level once when it starts and once when it ends, not per produce.
    storage_failing: std::sync::atomic::AtomicBool,
    /// Whether this broker's replica is listed in the topic's leader / follower
    /// throttled-replicas config ([`throttle::LEADER`], [`throttle::FOLLOWER`] bits).
    throttled: std::sync::atomic::AtomicU8,
}

impl Partition {
    /// Whether replication of this partition to `follower` (out of the ISR) counts
    /// against this leader's throttle.
    pub fn leader_throttled_for(&self, follower: i32) -> bool {
        self.throttled.load(Ordering::Relaxed) & throttle::LEADER != 0
            && !self.isr.read().expect("isr lock").contains(&follower)
    }

    /// Whether this follower's fetching of the partition counts against its throttle
    /// (it is listed and out of the ISR).
    pub fn follower_throttled(&self, me: i32) -> bool {
        self.throttled.load(Ordering::Relaxed) & throttle::FOLLOWER != 0
            && !self.isr.read().expect("isr lock").contains(&me)
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire) as i32
    }

    /// The partition's leader as this broker's newest image says (-1: none).
    pub fn leader(&self) -> i32 {
        self.leader.load(Ordering::Acquire)
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.lock().expect("log lock").log_end_offset()
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.lock().expect("log lock").size_bytes()
    }

    /// Segment files this partition holds open.
    pub fn segment_count(&self) -> usize {
        self.log.lock().expect("log lock").segment_count()
    }

    pub fn log_config(&self) -> LogConfig {
        self.log.lock().expect("log lock").config().clone()
    }

    /// Validates and appends the batches of one Produce partition. The high watermark moves
    /// to the lowest log end offset of the ISR; with this broker as the only replica that is
    /// its own log end offset, so acks=1 and acks=all are both answered after the append.
    pub fn append(
        &self,
        records: &[u8],
        acks: i16,
        now_ms: i64,
    ) -> Result<AppendInfo, ProduceError> {
        // Validation (CRC-32C over every byte, key checks on compacted topics) runs before
        // the log lock is taken, so producers to one partition only serialise on the write.
        let cfg = self.log_config();
        let headers = validate_batches(records, cfg.max_message_bytes)?;
        // Records are checked against their batch headers on every topic (Kafka's broker
        // does the same); compressed batches are decompressed within a bound for it.
        // Every record's timestamp, not only the header's first and greatest: records of
        // one batch need not be in time order (Kafka checks each too, and names them).
        let timestamps = (!cfg.log_append_time).then(|| {
            let min = if cfg.timestamp_before_max_ms == i64::MAX {
                i64::MIN
            } else {
                now_ms.saturating_sub(cfg.timestamp_before_max_ms)
            };
            (min, now_ms.saturating_add(cfg.timestamp_after_max_ms))
        });
        crate::log::batch::validate_contents(
            records,
            &headers,
            cfg.compact,
            timestamps,
            cfg.max_decompressed_bytes,
        )?;
        // A topic with a codec of its own (compression.type other than producer) stores
        // every batch in it; a batch already in that codec is appended as it came.
        let recompressed = match cfg.compression {
            Some(target) => crate::log::codec::recompress_all(
                records,
                &headers,
                target,
                cfg.max_decompressed_bytes,
            )?,
            None => None,
        };
        let (records, headers) = match &recompressed {
            Some(buf) => (&buf[..], validate_batches(buf, cfg.max_message_bytes)?),
            None => (records, headers),
        };
        if acks == -1 {
            let isr = self.isr.read().expect("isr lock").len();
            if (isr as i32) < cfg.min_insync_replicas {
                return Err(ProduceError::NotEnoughReplicas {
                    isr,
                    min: cfg.min_insync_replicas,
                });
            }
        }
        // Idempotent batches: Kafka's clients send one batch per partition per request
        // (required from Produce v3), which keeps the sequence check to one header.
        let idempotent = headers.iter().any(|h| h.producer_id >= 0);
        if idempotent && headers.len() > 1 {
            return Err(ProduceError::MultipleIdempotentBatches(headers.len()));
        }
        let mut log = self.log.lock().expect("log lock");
        if idempotent {
            // Checked under the append lock: the state cannot change between check and
            // append, so two retries of one batch can never both be appended.
            if let SequenceCheck::Duplicate {
                base_offset,
                last_offset,
            } = log.producers().check(&headers[0])?
            {
                return Ok(AppendInfo {
                    base_offset,
                    last_offset,
                    log_append_time_ms: -1,
                });
            }
        }
        // The log records the idempotent batch in the producer state as it appends it.
        let info = match log.append(records, &headers, self.leader_epoch(), now_ms) {
            Ok(info) => {
                if self.storage_failing.swap(false, Ordering::AcqRel) {
                    tracing::info!(topic = %self.topic, partition = self.index, "the partition's log can write again");
                }
                info
            }
            Err(e) => {
                if !self.storage_failing.swap(true, Ordering::AcqRel) {
                    tracing::error!(topic = %self.topic, partition = self.index, dir = %log.dir().display(), cause = %e, "cannot write to the partition's log; produce is answered KAFKA_STORAGE_ERROR until it can write again");
                }
                return Err(e.into());
            }
        };
        let leo = log.log_end_offset();
        drop(log);
        self.after_leader_append(leo);
        Ok(info)
    }

    /// Moves the high watermark after the leader appended up to `leo`: to the smallest log
    /// end offset of the ISR (with no other ISR member, to `leo`).
    fn after_leader_append(&self, leo: i64) {
        let moved = match self.replication.lock().expect("replication lock").as_mut() {
            Some(state) => state.advance_high_watermark(leo),
            None => Some(leo),
        };
        if let Some(hw) = moved {
            self.set_high_watermark(hw);
        }
    }

    fn set_high_watermark(&self, hw: i64) {
        self.high_watermark.fetch_max(hw, Ordering::AcqRel);
        self.hw_watch.send_replace(self.high_watermark());
    }

    /// A receiver that changes when the high watermark moves or the leadership changes.
    pub fn subscribe_high_watermark(&self) -> tokio::sync::watch::Receiver<i64> {
        self.hw_watch.subscribe()
    }

    /// The ISR as the newest applied image says.
    pub fn isr(&self) -> Vec<i32> {
        self.isr.read().expect("isr lock").clone()
    }

    /// Whether this leader's high watermark has reached its epoch's start (KIP-207); a
    /// follower or a partition with no other replica is always settled.
    pub fn high_watermark_settled(&self) -> bool {
        self.replication
            .lock()
            .expect("replication lock")
            .as_ref()
            .is_none_or(|s| s.high_watermark_settled())
    }

    /// The leader records a follower's fetch at `fetch_offset` (its log end offset, with
    /// the follower's broker epoch) and moves the high watermark if the ISR now all has
    /// more.
    pub fn on_follower_fetch(
        &self,
        follower: i32,
        broker_epoch: i64,
        fetch_offset: i64,
        now_ms: i64,
    ) -> FollowerProgress {
        let leo = self.log_end_offset();
        let mut repl = self.replication.lock().expect("replication lock");
        let Some(s) = repl.as_mut() else {
            return FollowerProgress::default();
        };
        s.note_follower_epoch(follower, broker_epoch);
        let moved = s.on_follower_fetch(follower, fetch_offset, leo, now_ms);
        let may_join_isr = s.may_join(follower);
        drop(repl);
        if let Some(hw) = moved {
            self.set_high_watermark(hw);
        }
        FollowerProgress {
            high_watermark_moved: moved.is_some(),
            may_join_isr,
        }
    }

    /// On the leader: the ISR change to send the controller now. A change sent before and
    /// not answered is sent again (its outcome is unknown, so it stays pending and the
    /// high watermark keeps counting both ISRs); otherwise a new one, if a follower fell
    /// behind for replica.lag.time.max.ms or caught up, which becomes the pending one.
    pub fn isr_change_due(
        &self,
        own_broker_epoch: i64,
        now_ms: i64,
        lag_max_ms: i64,
        eligible: &dyn Fn(i32, i64) -> bool,
    ) -> Option<(IsrProposal, IsrChange)> {
        let leo = self.log_end_offset();
        let mut repl = self.replication.lock().expect("replication lock");
        let s = repl.as_mut()?;
        let proposal = match &s.pending {
            Some(p) => p.clone(),
            None => {
                let p = s.isr_proposal(leo, now_ms, lag_max_ms, eligible)?;
                s.pending = Some(p.clone());
                p
            }
        };
        let change = IsrChange {
            topic_id: self.topic_id,
            partition: self.index,
            leader_epoch: proposal.leader_epoch,
            partition_epoch: proposal.partition_epoch,
            new_isr: s.with_epochs(&proposal.new_isr, own_broker_epoch),
        };
        Some((proposal, change))
    }

    /// The controller's answer to the ISR change `sent`. Committed: the ISR is the new one.
    /// Refused as invalid (a member not eligible, the partition gone): the change is
    /// dropped, and the next is built from what is known. Any other answer (stale epochs,
    /// a controller that is not active, no answer) leaves it pending: a newer image or
    /// the next try settles it, and until then the high watermark waits for both ISRs.
    /// Returns the ISR sizes before and after when the answer changed the ISR.
    pub fn on_isr_answer(
        &self,
        sent: &IsrProposal,
        outcome: &IsrOutcome,
    ) -> Option<(usize, usize)> {
        let leo = self.log_end_offset();
        let mut repl = self.replication.lock().expect("replication lock");
        let s = repl.as_mut()?;
        if s.pending.as_ref() != Some(sent) {
            return None;
        }
        let mut sizes = None;
        match outcome {
            Ok(p) => {
                sizes = s.on_isr_committed(p.isr.clone(), p.partition_epoch, leo);
                *self.isr.write().expect("isr lock") = s.isr.clone();
                tracing::info!(topic = %self.topic, partition = self.index, isr = ?s.isr, partition_epoch = s.partition_epoch, "ISR changed");
            }
            Err((code, why)) => {
                tracing::info!(topic = %self.topic, partition = self.index, proposed = ?sent.new_isr, code, %why, "ISR change not committed");
                if matches!(
                    *code,
                    codes::INELIGIBLE_REPLICA
                        | codes::INVALID_REQUEST
                        | codes::UNKNOWN_TOPIC_ID
                        | codes::UNKNOWN_TOPIC_OR_PARTITION
                ) {
                    s.on_isr_refused();
                    s.advance_high_watermark(leo);
                }
            }
        }
        let hw = s.high_watermark;
        drop(repl);
        self.set_high_watermark(hw);
        sizes
    }

    /// On the leader: (ISR size, replica count, the largest follower lag in offsets), for
    /// the replication metrics; `None` on a follower.
    pub fn replication_view(&self) -> Option<(usize, usize, i64)> {
        let leo = self.log_end_offset();
        let repl = self.replication.lock().expect("replication lock");
        let s = repl.as_ref()?;
        let lag = s
            .followers
            .values()
            .map(|f| leo - f.log_end_offset.max(0))
            .max()
            .unwrap_or(0);
        Some((s.isr.len(), s.replicas.len(), lag.max(0)))
    }

    /// On the leader: the followers whose last fetch reached `offset`, as (id, log end
    /// offset, ms since it was last caught up): those a consumer at `offset` may be sent to
    /// (KIP-392). Empty on a follower.
    pub fn followers_holding(&self, offset: i64, now_ms: i64) -> Vec<(i32, i64, i64)> {
        let repl = self.replication.lock().expect("replication lock");
        let Some(s) = repl.as_ref() else {
            return Vec::new();
        };
        s.followers
            .iter()
            .filter(|(_, f)| f.log_end_offset >= offset)
            .map(|(id, f)| (*id, f.log_end_offset, (now_ms - f.last_caught_up_ms).max(0)))
            .collect()
    }

    /// The idempotent producers this replica keeps state for, as (producer id, epoch,
    /// last sequence, last append time), by producer id: DescribeProducers' answer.
    pub fn active_producers(&self) -> Vec<(i64, i16, i32, i64)> {
        let log = self.log.lock().expect("log lock");
        let mut out: Vec<(i64, i16, i32, i64)> = log
            .producers()
            .iter()
            .map(|(id, e)| {
                let last_seq = e.batches.back().map_or(-1, |b| b.last_seq);
                (id, e.epoch, last_seq, e.last_timestamp_ms)
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Kafka's end offset of a leader epoch in this replica's log.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.log
            .lock()
            .expect("log lock")
            .end_offset_for_epoch(epoch)
    }

    /// The newest leader epoch in this replica's log (-1 for an empty one).
    pub fn latest_log_epoch(&self) -> i32 {
        self.log
            .lock()
            .expect("log lock")
            .epochs()
            .latest_epoch()
            .unwrap_or(-1)
    }

    /// A follower appends batches fetched from its leader as they are.
    pub fn append_as_follower(&self, records: &[u8], now_ms: i64) -> Result<i64, ProduceError> {
        let headers = validate_batches(records, usize::MAX)?;
        let mut log = self.log.lock().expect("log lock");
        log.append_replicated(records, &headers, now_ms)?;
        Ok(log.log_end_offset())
    }

    /// A follower learns its leader's high watermark; its own never passes its log end.
    pub fn set_follower_high_watermark(&self, leader_hw: i64) {
        let leo = self.log_end_offset();
        if leo >= leader_hw {
            self.caught_up.store(true, Ordering::Release);
        }
        let hw = leader_hw.min(leo);
        self.high_watermark.store(hw, Ordering::Release);
        self.hw_watch.send_replace(hw);
    }

    /// A follower cuts its log where it diverges from its leader's.
    pub fn truncate_to(&self, offset: i64, now_ms: i64) -> Result<i64, LogError> {
        let mut log = self.log.lock().expect("log lock");
        let leo = log.truncate_to(offset, now_ms)?;
        // The high watermark may only describe what the log holds.
        self.high_watermark.fetch_min(leo, Ordering::AcqRel);
        Ok(leo)
    }

    /// A follower behind its leader's log start starts again, empty, there.
    pub fn reset_to(&self, offset: i64, now_ms: i64) -> Result<(), LogError> {
        let mut log = self.log.lock().expect("log lock");
        log.reset_to(offset, now_ms)?;
        self.high_watermark.store(offset, Ordering::Release);
        self.log_start_offset.store(offset, Ordering::Release);
        Ok(())
    }

    /// A follower moves its log start up to its leader's (retention or DeleteRecords on
    /// the leader), never past its own high watermark.
    pub fn follow_log_start(&self, leader_start: i64, now_ms: i64) -> Result<(), LogError> {
        if leader_start <= self.log_start_offset() {
            return Ok(());
        }
        let target = leader_start.min(self.high_watermark());
        let mut log = self.log.lock().expect("log lock");
        log.advance_log_start(target, now_ms)?;
        self.log_start_offset
            .store(log.log_start_offset(), Ordering::Release);
        Ok(())
    }

    /// Makes this replica's role match the image: a new leader epoch with this broker as
    /// leader starts a fresh leader state; a committed ISR change settles a pending one.
    /// Returns the ISR sizes before and after when the image changed the ISR of a
    /// partition this broker went on leading.
    fn apply_leadership(
        &self,
        node_id: i32,
        pi: &crate::metadata::image::PartitionImage,
        now_ms: i64,
    ) -> Option<(usize, usize)> {
        let mut changed = None;
        let mut repl = self.replication.lock().expect("replication lock");
        let was = self.leader.swap(pi.leader, Ordering::AcqRel);
        let epoch_before = self
            .leader_epoch
            .swap(pi.leader_epoch as i64, Ordering::AcqRel);
        *self.isr.write().expect("isr lock") = pi.isr.clone();
        if pi.leader != node_id {
            *repl = None;
        } else {
            let leo = self.log_end_offset();
            match repl.as_mut() {
                Some(s) if s.leader_epoch == pi.leader_epoch => {
                    changed = s.on_isr_committed(pi.isr.clone(), pi.partition_epoch, leo);
                }
                _ => {
                    // A single replica's log is all acknowledged; otherwise the high
                    // watermark is what this broker knew as a follower (never above its
                    // log end) and moves on as followers fetch.
                    let hw = if pi.replicas == [node_id] {
                        leo
                    } else {
                        self.high_watermark()
                    };
                    *repl = Some(state::LeaderState::new(
                        node_id,
                        pi.leader_epoch,
                        pi.partition_epoch,
                        pi.replicas.clone(),
                        pi.isr.clone(),
                        leo,
                        hw,
                        now_ms,
                    ));
                }
            }
            let hw = repl
                .as_mut()
                .and_then(|s| s.advance_high_watermark(leo).or(Some(s.high_watermark)));
            // The leader's committed ISR may be newer than this image (an AlterPartition
            // answer arrives before the image that carries it).
            if let Some(s) = repl.as_ref() {
                *self.isr.write().expect("isr lock") = s.isr.clone();
            }
            drop(repl);
            if let Some(hw) = hw {
                // Through the watch: a committed shrink may be what parked acks=all
                // produces wait for, and this image can arrive before its answer.
                self.set_high_watermark(hw);
            }
        }
        if was != pi.leader || epoch_before != pi.leader_epoch as i64 {
            // Parked acks=all produces re-check who leads.
            self.hw_watch.send_replace(self.high_watermark());
        }
        changed
    }

    /// This broker no longer holds the partition (deleted, or moved away by a
    /// reassignment): it leads nothing, and acks=all produces parked on it are woken to
    /// answer NOT_LEADER_OR_FOLLOWER at once instead of at their timeout.
    fn retire(&self) {
        self.leader.store(-1, Ordering::Release);
        *self.replication.lock().expect("replication lock") = None;
        self.hw_watch.send_replace(self.high_watermark());
    }

    /// Plans a read at `offset`; see [`Log::plan_read`].
    pub fn plan_read(&self, offset: i64) -> Result<Option<ReadPlan>, LogError> {
        self.log.lock().expect("log lock").plan_read(offset)
    }

    /// Reads committed batches (below the high watermark) from `offset`.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        allow_oversized_first: bool,
    ) -> Result<FetchedPartition, LogError> {
        self.read_below(
            offset,
            max_bytes,
            allow_oversized_first,
            self.high_watermark(),
        )
    }

    /// Reads batches from `offset` up to the log end, committed or not: what a follower
    /// fetches from its leader.
    pub fn read_for_follower(
        &self,
        offset: i64,
        max_bytes: usize,
        allow_oversized_first: bool,
    ) -> Result<FetchedPartition, LogError> {
        self.read_below(offset, max_bytes, allow_oversized_first, i64::MAX)
    }

    fn read_below(
        &self,
        offset: i64,
        max_bytes: usize,
        allow_oversized_first: bool,
        bound: i64,
    ) -> Result<FetchedPartition, LogError> {
        let hw = self.high_watermark();
        let plan = self.plan_read(offset)?;
        let records = match plan {
            Some(p) if offset < bound => p.read(max_bytes, bound, allow_oversized_first)?,
            _ => Bytes::new(),
        };
        Ok(FetchedPartition {
            records,
            high_watermark: hw,
            log_start_offset: self.log_start_offset(),
        })
    }

    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        self.log.lock().expect("log lock").offset_for_timestamp(ts)
    }

    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, LogError> {
        self.log.lock().expect("log lock").max_timestamp_offset()
    }

    /// DeleteRecords: moves the log start offset, never beyond the high watermark. `-1`
    /// means "up to the high watermark". Returns the new low watermark.
    pub fn delete_records_before(&self, offset: i64, now_ms: i64) -> Result<i64, i16> {
        let hw = self.high_watermark();
        let target = if offset == -1 { hw } else { offset };
        if target < 0 || target > hw {
            return Err(codes::OFFSET_OUT_OF_RANGE);
        }
        let mut log = self.log.lock().expect("log lock");
        log.advance_log_start(target, now_ms).map_err(|e| {
            tracing::error!(cause = %e, topic = %self.topic, partition = self.index, "DeleteRecords failed");
            codes::KAFKA_STORAGE_ERROR
        })?;
        let start = log.log_start_offset();
        self.log_start_offset.store(start, Ordering::Release);
        Ok(start)
    }

    /// Applies retention and removes deleted files whose delay passed; returns the number
    /// of segments deleted.
    fn apply_retention(&self, now_ms: i64, producer_expiration_ms: i64) -> usize {
        let mut log = self.log.lock().expect("log lock");
        // Idle producers are forgotten on the same periodic pass (producer.id.expiration.ms).
        log.producers_mut().expire(now_ms, producer_expiration_ms);
        let deleted = match log.apply_retention(now_ms, self.high_watermark()) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(cause = %e, topic = %self.topic, partition = self.index, "retention failed");
                0
            }
        };
        log.purge_deleted(now_ms);
        self.log_start_offset
            .store(log.log_start_offset(), Ordering::Release);
        if deleted > 0 {
            tracing::info!(topic = %self.topic, partition = self.index, segments = deleted, log_start_offset = log.log_start_offset(), "retention deleted segments");
        }
        deleted
    }

    /// Compacts the log if it is due (or `force`, when retained tombstones may have
    /// expired). The partition lock is held only to plan and to swap, not while reading and
    /// rewriting segments.
    pub fn clean(
        &self,
        now_ms: i64,
        force: bool,
        map_budget_bytes: usize,
        throttle: &mut Throttle,
    ) -> Result<Option<CleanSummary>, LogError> {
        let plan = {
            let log = self.log.lock().expect("log lock");
            log.plan_clean(now_ms, self.high_watermark(), force, map_budget_bytes)
        };
        let Some(plan) = plan else { return Ok(None) };
        let output = plan.run(throttle)?;
        let stats = output.stats.clone();
        let kept_tombstones = output.kept_tombstones;
        let mut log = self.log.lock().expect("log lock");
        log.swap_cleaned(output, now_ms)?;
        log.purge_deleted(now_ms);
        let delete_retention_ms = log.config().delete_retention_ms;
        Ok(Some(CleanSummary {
            stats,
            tombstones_due_ms: kept_tombstones.then(|| now_ms.saturating_add(delete_retention_ms)),
            dirty_ratio: log.dirty_ratio(now_ms, self.high_watermark()),
        }))
    }

    /// The dirty ratio of a compacted log (0 for other logs).
    pub fn dirty_ratio(&self, now_ms: i64) -> f64 {
        let log = self.log.lock().expect("log lock");
        if log.config().compact {
            log.dirty_ratio(now_ms, self.high_watermark())
        } else {
            0.0
        }
    }

    fn set_config(&self, config: LogConfig) {
        let mut log = self.log.lock().expect("log lock");
        if *log.config() != config {
            log.set_config(config);
        }
    }

    fn flush_if_due(&self, now_ms: i64) {
        if let Err(e) = self.log.lock().expect("log lock").flush_if_due(now_ms) {
            tracing::error!(cause = %e, topic = %self.topic, partition = self.index, "flush failed");
        }
    }

    fn close(&self, now_ms: i64) -> Result<(), LogError> {
        self.log.lock().expect("log lock").close(now_ms)
    }

    pub fn dir(&self) -> PathBuf {
        self.log.lock().expect("log lock").dir().to_owned()
    }
}

/// The partitions this broker hosts, kept in step with the metadata image.
pub struct ReplicaManager {
    /// Partitions of this broker whose log could not be created (a full disk): they answer
    /// KAFKA_STORAGE_ERROR until a later image opens them.
    offline: Mutex<std::collections::HashSet<(String, i32)>>,
    node_id: i32,
    log_dirs: Vec<PathBuf>,
    broker_config: BrokerConfig,
    partitions: RwLock<HashMap<(String, i32), Arc<Partition>>>,
    clean_start: bool,
    clock: Arc<dyn Clock>,
    /// Bumped on every append so that waiting fetches re-check their partitions.
    appends: tokio::sync::watch::Sender<u64>,
    append_seq: AtomicU64,
    /// Partitions a cleaner thread is compacting right now.
    cleaning: Mutex<std::collections::HashSet<(String, i32)>>,
    /// When kept tombstones become droppable, by partition (forces a clean then).
    tombstones_due: Mutex<HashMap<(String, i32), i64>>,
    /// The metadata offset of the newest image applied, and the lock that orders them.
    applied_image: AtomicI64,
    image_order: Mutex<()>,
    /// High watermarks read from the log dirs' checkpoints at start-up.
    checkpointed_hw: HashMap<(String, i32), i64>,
    /// What the last checkpoint wrote per log dir, so an unchanged one is not rewritten.
    last_checkpoint: Mutex<HashMap<PathBuf, Vec<u8>>>,
    /// This broker's epoch (its registration's offset; -1 before it registered): followers
    /// send it with their fetches, leaders with their ISR changes.
    broker_epoch: AtomicI64,
    /// Wakes the ISR task when a follower caught up and may join an ISR.
    isr_wake: tokio::sync::Notify,
    /// ISR changes of partitions this broker leads and bytes its fetchers replicated.
    replication_counts: ReplicationCounts,
    quotas: throttle::ReplicationQuotas,
}

/// Running totals of replication: how often the ISRs of a broker's led partitions shrank
/// and expanded as the controller committed them (Kafka's IsrShrinksPerSec /
/// IsrExpandsPerSec), and the record bytes its fetchers appended (FetcherStats BytesPerSec).
#[derive(Debug, Default)]
pub struct ReplicationCounts {
    pub shrinks: AtomicU64,
    pub expands: AtomicU64,
    pub fetched_bytes: AtomicU64,
}

impl ReplicationCounts {
    /// Counts an ISR change given as the ISR sizes before and after it.
    pub fn record(&self, sizes: Option<(usize, usize)>) {
        match sizes {
            Some((before, after)) if after < before => self.shrinks.fetch_add(1, Ordering::Relaxed),
            Some((before, after)) if after > before => self.expands.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
}

impl ReplicaManager {
    pub fn new(
        node_id: i32,
        log_dirs: Vec<PathBuf>,
        broker_config: BrokerConfig,
        clean_start: bool,
        clock: Arc<dyn Clock>,
    ) -> ReplicaManager {
        ReplicaManager {
            offline: Mutex::new(Default::default()),
            node_id,
            broker_config,
            partitions: RwLock::new(HashMap::new()),
            clean_start,
            clock,
            appends: tokio::sync::watch::channel(0).0,
            applied_image: AtomicI64::new(-1),
            image_order: Mutex::new(()),
            append_seq: AtomicU64::new(0),
            cleaning: Mutex::new(Default::default()),
            tombstones_due: Mutex::new(HashMap::new()),
            checkpointed_hw: log_dirs
                .iter()
                .flat_map(|d| read_hw_checkpoint(d))
                .collect(),
            last_checkpoint: Mutex::new(HashMap::new()),
            broker_epoch: AtomicI64::new(-1),
            isr_wake: tokio::sync::Notify::new(),
            replication_counts: ReplicationCounts::default(),
            quotas: Default::default(),
            log_dirs,
        }
    }

    pub fn replication_counts(&self) -> &ReplicationCounts {
        &self.replication_counts
    }

    /// Writes each log dir's high-watermark checkpoint (atomically, only when it changed).
    pub fn checkpoint_high_watermarks(&self) {
        let partitions = self.all();
        for root in &self.log_dirs {
            let mut lines: Vec<(String, i32, i64)> = partitions
                .iter()
                .filter(|p| p.dir().starts_with(root))
                .map(|p| (p.topic.clone(), p.index, p.high_watermark()))
                .collect();
            lines.sort();
            let mut text = format!("0\n{}\n", lines.len());
            for (topic, index, hw) in &lines {
                text.push_str(&format!("{topic} {index} {hw}\n"));
            }
            let mut last = self.last_checkpoint.lock().expect("checkpoint lock");
            if last
                .get(root)
                .is_some_and(|t| t.as_slice() == text.as_bytes())
            {
                continue;
            }
            match crate::log::segment::write_atomically(
                &root.join(HW_CHECKPOINT_FILE),
                text.as_bytes(),
            ) {
                Ok(()) => {
                    last.insert(root.clone(), text.into_bytes());
                }
                Err(e) => {
                    tracing::warn!(cause = %e, dir = %root.display(), "writing the high-watermark checkpoint failed")
                }
            }
        }
    }

    /// Whether this broker's replica of the partition could not be created (its log dir
    /// is full or failing).
    pub fn is_offline(&self, topic: &str, partition: i32) -> bool {
        self.offline
            .lock()
            .expect("offline lock")
            .contains(&(topic.to_owned(), partition))
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .expect("partitions lock")
            .get(&(topic.to_owned(), partition))
            .cloned()
    }

    /// The partition if this broker leads it: produce, consumer fetches, ListOffsets and
    /// DeleteRecords are served by the leader only (a follower's log may lag or diverge).
    pub fn leader_of(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.get(topic, partition)
            .filter(|p| p.leader() == self.node_id)
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .expect("partitions lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Appends to a partition and wakes waiting fetches.
    pub fn append(
        &self,
        p: &Partition,
        records: &[u8],
        acks: i16,
    ) -> Result<AppendInfo, ProduceError> {
        let info = p.append(records, acks, self.clock.now_ms())?;
        let seq = self.append_seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.appends.send_replace(seq);
        Ok(info)
    }

    /// Partitions this broker follows (their leader is another broker) whose replica has
    /// not yet caught up with its leader's high watermark since start-up.
    pub fn lagging_followers(&self) -> usize {
        self.all()
            .iter()
            .filter(|p| {
                let leader = p.leader();
                leader >= 0 && leader != self.node_id && !p.caught_up.load(Ordering::Acquire)
            })
            .count()
    }

    /// Wakes waiting fetches: a high watermark moved, so consumers may see more.
    pub fn wake_fetches(&self) {
        let seq = self.append_seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.appends.send_replace(seq);
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch.load(Ordering::Acquire)
    }

    pub fn set_broker_epoch(&self, epoch: i64) {
        self.broker_epoch.store(epoch, Ordering::Release);
    }

    /// Asks the ISR task to look now (a follower may join an ISR).
    pub fn wake_isr(&self) {
        self.isr_wake.notify_one();
    }

    /// Resolves when [`Self::wake_isr`] was called (at once if it was since the last wait).
    pub async fn isr_woken(&self) {
        self.isr_wake.notified().await
    }

    /// The ISR changes due on the partitions this broker leads (see
    /// [`Partition::isr_change_due`]).
    pub fn isr_changes_due(
        &self,
        lag_max_ms: i64,
        eligible: &dyn Fn(i32, i64) -> bool,
    ) -> Vec<(Arc<Partition>, IsrProposal, IsrChange)> {
        let (epoch, now) = (self.broker_epoch(), self.clock.now_ms());
        self.all()
            .into_iter()
            .filter(|p| p.leader() == self.node_id)
            .filter_map(|p| {
                let (proposal, change) = p.isr_change_due(epoch, now, lag_max_ms, eligible)?;
                Some((p, proposal, change))
            })
            .collect()
    }

    /// A receiver that changes whenever any partition is appended to.
    pub fn subscribe_appends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appends.subscribe()
    }

    /// This broker's replication throttles.
    pub fn quotas(&self) -> &throttle::ReplicationQuotas {
        &self.quotas
    }

    /// The throttle rates of this broker: its dynamic config, else the cluster's dynamic
    /// default, else its properties.
    fn apply_throttle_rates(&self, image: &MetadataImage) {
        let rate = |name: &str| {
            image
                .dynamic_broker_config(self.node_id, name)
                .map(|(v, _)| v.to_owned())
                .or_else(|| self.broker_config.get(name).map(str::to_owned))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(throttle::UNLIMITED)
        };
        self.quotas
            .leader
            .set_limit(rate("leader.replication.throttled.rate"));
        self.quotas
            .follower
            .set_limit(rate("follower.replication.throttled.rate"));
    }

    /// Makes the hosted partitions match `image`: opens the logs of partitions assigned to
    /// this broker, applies changed topic configs, and deletes the logs of partitions that
    /// no longer exist. Also removes stray partition directories left by an earlier run.
    pub fn apply_image(&self, image: &MetadataImage) -> anyhow::Result<()> {
        let now = self.clock.now_ms();
        // Images are applied by the publisher and by handlers right after their own change;
        // an older image arriving late must not undo a newer one (it would delete the
        // partitions of a topic it does not know yet).
        let _order = self.image_order.lock().expect("image order lock");
        if image.metadata_offset < self.applied_image.load(Ordering::Acquire) {
            return Ok(());
        }
        self.applied_image
            .store(image.metadata_offset, Ordering::Release);
        let mut wanted: BTreeMap<(String, i32), (Uuid, &crate::metadata::image::PartitionImage)> =
            BTreeMap::new();
        for t in image.topics.values() {
            for (p, pi) in &t.partitions {
                if pi.replicas.contains(&self.node_id) {
                    wanted.insert((t.name.clone(), *p), (t.id, pi));
                }
            }
        }
        let empty = BTreeMap::new();
        self.apply_throttle_rates(image);
        let me = self.node_id;
        let throttles = |topic: &str, index: i32| {
            let configs = image.topic_configs.get(topic);
            let listed = |name: &str, bit: u8| {
                let value = configs.and_then(|c| c.get(name)).map_or("", String::as_str);
                match throttle::throttled_partitions(value, me) {
                    None => bit,
                    Some(ps) if ps.contains(&index) => bit,
                    Some(_) => 0,
                }
            };
            listed("leader.replication.throttled.replicas", throttle::LEADER)
                | listed(
                    "follower.replication.throttled.replicas",
                    throttle::FOLLOWER,
                )
        };
        let mut failed: Option<anyhow::Error> = None;
        let mut partitions = self.partitions.write().expect("partitions lock");
        // Deleted topics (or moved partitions): drop and remove their data.
        let gone: Vec<(String, i32)> = partitions
            .iter()
            .filter(|(k, p)| wanted.get(*k).is_none_or(|w| w.0 != p.topic_id))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some(p) = partitions.remove(&key) {
                p.retire();
                remove_partition_dir(&p.dir());
            }
        }
        // Topic defaults changed at run time (dynamic broker configs) apply at once.
        let broker_config = self.broker_config.with_dynamic(
            &image.broker_default_configs,
            image.broker_configs.get(&self.node_id),
        );
        for ((topic, index), (topic_id, pi)) in wanted {
            let (epoch, isr) = (pi.leader_epoch, pi.isr.clone());
            let cfg = LogConfig::resolve(
                &broker_config,
                image.topic_configs.get(&topic).unwrap_or(&empty),
            );
            if let Some(p) = partitions.get(&(topic.clone(), index)) {
                p.set_config(cfg);
                p.throttled
                    .store(throttles(&topic, index), Ordering::Relaxed);
                self.replication_counts
                    .record(p.apply_leadership(self.node_id, pi, now));
                continue;
            }
            let dir = self.partition_dir(&topic, index, &partitions);
            if let Some(stored) = read_topic_id(&dir) {
                if stored != topic_id {
                    // Data of an older topic of the same name: never serve it.
                    remove_partition_dir(&dir);
                }
            }
            let existed = dir.exists();
            let opened = Log::open(&dir, cfg, self.clean_start, now).and_then(|log| {
                write_topic_id(&dir, topic_id)?;
                Ok(log)
            });
            let log = match opened {
                Ok(log) => log,
                Err(e) => {
                    // A partition that could not be created (a full disk) leaves nothing
                    // behind; the others are still opened, and the caller is told.
                    if existed {
                        // Existing data that cannot be opened refuses the start (below).
                        failed.get_or_insert(anyhow::anyhow!(
                            "cannot open the log of {topic}-{index} in {}: {e}",
                            dir.display()
                        ));
                    } else {
                        // A new partition that cannot be created (a full disk) leaves
                        // nothing behind and is tried again with the next image; callers
                        // that create topics check that their partitions exist.
                        tracing::error!(cause = %e, %topic, partition = index, dir = %dir.display(), "cannot create the partition's log");
                        self.offline
                            .lock()
                            .expect("offline lock")
                            .insert((topic.clone(), index));
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                    continue;
                }
            };
            self.offline
                .lock()
                .expect("offline lock")
                .remove(&(topic.clone(), index));
            let start = log.log_start_offset();
            // A single replica's log is all acknowledged (its ISR is itself). With more
            // replicas the log may end in batches the ISR never had, so the high watermark
            // starts at the log start and is re-learned (from the followers as leader, from
            // the leader as follower) before anything is served as committed.
            let hw = if pi.replicas == [self.node_id] {
                log.log_end_offset()
            } else {
                self.checkpointed_hw
                    .get(&(topic.clone(), index))
                    .copied()
                    .unwrap_or(start)
                    .clamp(start, log.log_end_offset())
            };
            let partition = Arc::new(Partition {
                topic: topic.clone(),
                topic_id,
                index,
                log: Mutex::new(log),
                high_watermark: AtomicI64::new(hw),
                log_start_offset: AtomicI64::new(start),
                leader_epoch: AtomicI64::new(epoch as i64),
                leader: std::sync::atomic::AtomicI32::new(-1),
                isr: RwLock::new(isr),
                replication: Mutex::new(None),
                hw_watch: tokio::sync::watch::channel(hw).0,
                caught_up: Default::default(),
                storage_failing: Default::default(),
                throttled: Default::default(),
            });
            partition
                .throttled
                .store(throttles(&topic, index), Ordering::Relaxed);
            partition.apply_leadership(self.node_id, pi, now);
            partitions.insert((topic.clone(), index), partition);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether every log dir has room for `partitions` new partitions (their directory,
    /// partition.metadata and first segment) and the metadata record that creates them:
    /// checked by writing and removing a file of that size, so a topic is not committed to
    /// the metadata on a disk that cannot hold its partitions.
    pub fn check_room(&self, partitions: usize) -> std::io::Result<()> {
        use std::io::Write;
        let bytes = partitions
            .saturating_mul(16 * 1024)
            .saturating_add(64 * 1024);
        for root in &self.log_dirs {
            let path = root.join(".strom_room_check");
            let written = (|| {
                let mut f = std::fs::File::create(&path)?;
                f.write_all(&vec![0u8; bytes.min(256 << 20)])?;
                f.sync_all()
            })();
            let _ = std::fs::remove_file(&path);
            written?;
        }
        Ok(())
    }

    /// Finishes deletions a crash interrupted (directories renamed `*-delete` by
    /// [`remove_partition_dir`]) and reports partition directories that no partition of
    /// `image` owns. Those are never deleted: a damaged or truncated metadata log would
    /// otherwise destroy every partition's data at start-up. They are logged and left for an
    /// operator to remove or restore. Called once at start-up.
    pub fn remove_strays(&self, image: &MetadataImage) {
        let partitions = self.partitions.read().expect("partitions lock");
        for root in &self.log_dirs {
            let Ok(entries) = std::fs::read_dir(root) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(DELETE_SUFFIX) && path.is_dir() {
                    tracing::info!(dir = %path.display(), "finishing an interrupted partition deletion");
                    if let Err(e) = std::fs::remove_dir_all(&path) {
                        tracing::warn!(cause = %e, dir = %path.display(), "removing a deleted partition directory failed");
                    }
                    continue;
                }
                if !path.join(PARTITION_METADATA_FILE).exists() {
                    continue;
                }
                let owned = partitions.values().any(|p| p.dir() == path);
                if !owned && !name.starts_with(crate::metadata::METADATA_LOG_DIR) {
                    tracing::warn!(dir = %path.display(), metadata_offset = image.metadata_offset, "a partition directory that the metadata does not know is left untouched (not served, not deleted); remove it by hand if its topic was deleted");
                }
            }
        }
    }

    /// Where a partition's log lives: its existing directory, else the log dir with the
    /// fewest partitions.
    fn partition_dir(
        &self,
        topic: &str,
        index: i32,
        current: &HashMap<(String, i32), Arc<Partition>>,
    ) -> PathBuf {
        let name = format!("{topic}-{index}");
        for root in &self.log_dirs {
            if root.join(&name).exists() {
                return root.join(name);
            }
        }
        let mut counts: Vec<(usize, &PathBuf)> = self
            .log_dirs
            .iter()
            .map(|r| {
                (
                    current.values().filter(|p| p.dir().starts_with(r)).count(),
                    r,
                )
            })
            .collect();
        counts.sort_by_key(|(c, _)| *c);
        counts[0].1.join(name)
    }

    /// One cleaner pass: compacts the first partition (dirtiest first) that is due, unless
    /// another cleaner thread holds it. Returns what was cleaned, or `None` when nothing was
    /// due, so the caller can back off.
    pub fn clean_dirtiest(
        &self,
        map_budget_bytes: usize,
        io_max_bytes_per_second: f64,
    ) -> Option<(Arc<Partition>, CleanSummary)> {
        let now = self.clock.now_ms();
        let mut candidates: Vec<(f64, Arc<Partition>)> = self
            .all()
            .into_iter()
            .filter(|p| p.log_config().compact)
            .map(|p| (p.dirty_ratio(now), p))
            .collect();
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, p) in candidates {
            let key = (p.topic.clone(), p.index);
            if !self
                .cleaning
                .lock()
                .expect("cleaning lock")
                .insert(key.clone())
            {
                continue;
            }
            let force = self
                .tombstones_due
                .lock()
                .expect("tombstones lock")
                .get(&key)
                .is_some_and(|due| *due <= now);
            let mut throttle = Throttle::new(io_max_bytes_per_second);
            let result = p.clean(now, force, map_budget_bytes, &mut throttle);
            self.cleaning.lock().expect("cleaning lock").remove(&key);
            match result {
                Ok(Some(summary)) => {
                    let mut due = self.tombstones_due.lock().expect("tombstones lock");
                    match summary.tombstones_due_ms {
                        Some(t) => due.insert(key, t),
                        None => due.remove(&key),
                    };
                    return Some((p, summary));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(cause = %e, topic = %p.topic, partition = p.index, "cleaning failed");
                }
            }
        }
        None
    }

    /// Runs retention on every partition; returns the number of segments deleted.
    pub fn apply_retention(&self) -> usize {
        let now = self.clock.now_ms();
        let expiration = self.broker_config.producer_id_expiration_ms();
        self.all()
            .iter()
            .map(|p| p.apply_retention(now, expiration))
            .sum()
    }

    /// fsyncs partitions whose flush.ms has passed.
    pub fn flush_due(&self) {
        let now = self.clock.now_ms();
        for p in self.all() {
            p.flush_if_due(now);
        }
    }

    /// Flushes and closes every log for a clean shutdown; returns whether all succeeded.
    pub fn close_all(&self) -> bool {
        self.checkpoint_high_watermarks();
        let now = self.clock.now_ms();
        let mut ok = true;
        for p in self.all() {
            if let Err(e) = p.close(now) {
                tracing::error!(cause = %e, topic = %p.topic, partition = p.index, "closing log failed");
                ok = false;
            }
        }
        ok
    }
}

/// The high watermarks of one log dir's checkpoint; an unreadable file gives none (every
/// replicated partition there then starts from its log start, which is safe).
fn read_hw_checkpoint(root: &Path) -> Vec<((String, i32), i64)> {
    let Ok(text) = std::fs::read_to_string(root.join(HW_CHECKPOINT_FILE)) else {
        return Vec::new();
    };
    let mut lines = text.lines();
    if lines.next() != Some("0") {
        return Vec::new();
    }
    let _count = lines.next();
    lines
        .filter_map(|l| {
            let mut parts = l.rsplitn(3, ' ');
            let hw = parts.next()?.parse().ok()?;
            let index = parts.next()?.parse().ok()?;
            let topic = parts.next()?.to_owned();
            Some(((topic, index), hw))
        })
        .collect()
}

fn read_topic_id(dir: &Path) -> Option<Uuid> {
    let text = std::fs::read_to_string(dir.join(PARTITION_METADATA_FILE)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("topic_id: "))
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
}

fn write_topic_id(dir: &Path, id: Uuid) -> std::io::Result<()> {
    if read_topic_id(dir) == Some(id) {
        return Ok(());
    }
    crate::log::segment::write_atomically(
        &dir.join(PARTITION_METADATA_FILE),
        format!("version: 0\ntopic_id: {id}\n").as_bytes(),
    )
}

/// Deletes a partition directory: renamed first (so a crash mid-removal leaves a name that
/// no partition claims), then removed.
fn remove_partition_dir(dir: &Path) {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let doomed = dir.with_file_name(format!("{name}.{}{DELETE_SUFFIX}", Uuid::new_v4().simple()));
    let target = match std::fs::rename(dir, &doomed) {
        Ok(()) => doomed,
        Err(_) => dir.to_owned(),
    };
    if let Err(e) = std::fs::remove_dir_all(&target) {
        tracing::warn!(cause = %e, dir = %target.display(), "removing partition directory failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::tests::{make_batch, make_idempotent_batch};
    use kafka_protocol::records::Compression;

    fn partition(dir: &Path) -> Partition {
        let cfg = LogConfig::resolve(&BrokerConfig::default(), &Default::default());
        let log = Log::open(dir, cfg, true, 0).unwrap();
        Partition {
            topic: "t".into(),
            topic_id: Uuid::nil(),
            index: 0,
            log: Mutex::new(log),
            high_watermark: AtomicI64::new(0),
            log_start_offset: AtomicI64::new(0),
            leader_epoch: AtomicI64::new(0),
            leader: std::sync::atomic::AtomicI32::new(1),
            isr: RwLock::new(vec![1]),
            replication: Mutex::new(None),
            hw_watch: tokio::sync::watch::channel(0).0,
            caught_up: Default::default(),
            storage_failing: Default::default(),
            throttled: Default::default(),
        }
    }

    const NOW: i64 = 1_700_000_000_000;

    fn code(r: Result<AppendInfo, ProduceError>) -> i16 {
        r.unwrap_err().error_code()
    }

    #[test]
    fn idempotent_appends_drop_retries_and_refuse_gaps_fenced_epochs_and_batch_lists() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path());
        let first = make_idempotent_batch(3, 11, 0, 0);
        assert_eq!(p.append(&first, -1, NOW).unwrap().base_offset, 0);
        // The retry answers the original offsets, appends nothing, moves no watermark.
        let retry = p.append(&first, -1, NOW).unwrap();
        assert_eq!((retry.base_offset, retry.last_offset), (0, 2));
        assert_eq!((p.high_watermark(), p.log_end_offset()), (3, 3));
        assert_eq!(
            code(p.append(&make_idempotent_batch(1, 11, 0, 7), -1, NOW)),
            45
        );
        // Plain batches are untouched by producer state, several to a request as before.
        let mut plain = make_batch(1, 10, Compression::None).to_vec();
        plain.extend_from_slice(&make_batch(2, 10, Compression::None));
        assert_eq!(p.append(&plain, 1, NOW).unwrap().base_offset, 3);
        let mut two = make_idempotent_batch(1, 11, 0, 3).to_vec();
        two.extend_from_slice(&make_idempotent_batch(1, 11, 0, 4));
        assert_eq!(code(p.append(&two, -1, NOW)), 87);
        assert_eq!(
            p.append(&make_idempotent_batch(1, 11, 1, 0), -1, NOW)
                .unwrap()
                .base_offset,
            6
        );
        assert_eq!(
            code(p.append(&make_idempotent_batch(1, 11, 0, 3), -1, NOW)),
            47
        );
        assert_eq!(p.log_end_offset(), 7);
    }

    #[test]
    fn idle_producers_expire_on_the_retention_pass() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path());
        let b = make_idempotent_batch(1, 5, 0, 0);
        p.append(&b, -1, NOW).unwrap();
        p.apply_retention(NOW + 999, 1000);
        assert_eq!(p.append(&b, -1, NOW).unwrap().base_offset, 0, "still known");
        p.apply_retention(NOW + 1000, 1000);
        // Forgotten: the same batch is now new to the partition (any sequence is accepted
        // from an unknown producer), so it is appended again.
        assert_eq!(p.append(&b, -1, NOW + 1000).unwrap().base_offset, 1);
    }

    fn image_with(replicas: Vec<i32>, leader: i32) -> MetadataImage {
        use crate::metadata::records::MetadataRecord;
        let mut image = MetadataImage::default();
        let topic_id = Uuid::from_u128(7);
        image.apply(&MetadataRecord::Topic {
            name: "t".into(),
            topic_id,
        });
        image.apply(&MetadataRecord::Partition {
            topic_id,
            partition: 0,
            isr: replicas.clone(),
            replicas,
            leader,
            leader_epoch: 1,
            partition_epoch: 1,
        });
        image.metadata_offset = 1;
        image
    }

    #[test]
    fn a_replicated_partition_restarts_at_its_checkpointed_high_watermark_never_its_log_end() {
        let dir = tempfile::tempdir().unwrap();
        let manager = |node| {
            ReplicaManager::new(
                node,
                vec![dir.path().to_owned()],
                BrokerConfig::default(),
                true,
                Arc::new(crate::clock::SystemClock),
            )
        };
        // Broker 1 leads with follower 2 in the ISR: appends wait for 2's fetches.
        let rm = manager(1);
        rm.apply_image(&image_with(vec![1, 2], 1)).unwrap();
        let p = rm.leader_of("t", 0).unwrap();
        rm.append(&p, &make_batch(4, 10, Compression::None), -1)
            .unwrap();
        assert_eq!((p.log_end_offset(), p.high_watermark()), (4, 0));
        p.on_follower_fetch(2, -1, 0, rm.now_ms());
        assert_eq!(p.high_watermark(), 0, "the follower has nothing yet");
        p.on_follower_fetch(2, -1, 4, rm.now_ms());
        assert_eq!(p.high_watermark(), 4);
        rm.append(&p, &make_batch(2, 10, Compression::None), -1)
            .unwrap();
        assert!(rm.close_all());
        drop((p, rm));
        let text = std::fs::read_to_string(dir.path().join(HW_CHECKPOINT_FILE)).unwrap();
        assert_eq!(text, "0\n1\nt 0 4\n");
        // Restarted: offsets 4 and 5 were never known to the ISR, so they are not served.
        let rm = manager(1);
        rm.apply_image(&image_with(vec![1, 2], 1)).unwrap();
        let p = rm.get("t", 0).unwrap();
        assert_eq!((p.log_end_offset(), p.high_watermark()), (6, 4));
        // A single-replica partition's whole log is committed.
        let rm1 = manager(1);
        rm1.apply_image(&image_with(vec![1], 1)).unwrap();
        assert_eq!(rm1.get("t", 0).unwrap().high_watermark(), 6);
    }
}
