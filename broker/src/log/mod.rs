//! The partition log: an ordered set of segments in one directory, appended at the end,
//! read by offset, rolled by size and age, recovered after a crash, and trimmed from the
//! front by DeleteRecords. The log knows nothing of replication; the partition layer decides
//! which offsets are visible (the high watermark). It also holds the idempotent producers'
//! state, snapshotted to `<offset>.snapshot` files when a segment rolls and on close, so a
//! restart reads the newest snapshot and only the batch headers after it.

pub mod batch;
pub mod cleaner;
pub mod codec;
pub mod epochs;
pub mod files;
pub mod producer_state;
pub mod segment;
pub mod verify;

use crate::config::LogConfig;
use crate::log::producer_state::ProducerStateTable;
use batch::{BatchHeader, HEADER_LEN};
use bytes::Bytes;
use epochs::LeaderEpochCache;
use segment::{file_name, write_atomically, Segment};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the log start offset is kept across restarts.
const LOG_START_FILE: &str = "log-start-offset";

/// Extension of producer-state snapshots, `<20-digit log end offset>.snapshot`.
const SNAPSHOT_EXT: &str = "snapshot";

/// Producer-state snapshots kept: the newest serves the restart; one older survives in case
/// the newest is damaged or lies beyond a log end offset that recovery truncated.
const SNAPSHOTS_KEPT: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("log i/o failed: {0}")]
    Io(#[from] io::Error),
    /// Damaged data found on read: the partition answers CORRUPT_MESSAGE for reads that
    /// reach it. `first` is set the first time this file and position are reported, so the
    /// damage is logged and counted once, not on every retried fetch.
    #[error("corrupt record batch in {} at position {position}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
        first: bool,
    },
    /// A replicated batch that does not follow the log's end (a follower's fetch raced a
    /// truncation): nothing was written.
    #[error(
        "a replicated batch at offset {base_offset} does not follow the log end {log_end_offset}"
    )]
    OutOfOrder {
        base_offset: i64,
        log_end_offset: i64,
    },
    /// The log cannot be opened as it is on disk; the start is refused.
    #[error("{0}")]
    Refused(String),
}

/// Builds a [`LogError::Corrupt`], logging it at error level the first time this file and
/// position are seen by this process.
pub(crate) fn corruption(path: &Path, position: u64, reason: impl Into<String>) -> LogError {
    static REPORTED: std::sync::Mutex<Option<std::collections::HashSet<(PathBuf, u64)>>> =
        std::sync::Mutex::new(None);
    let reason = reason.into();
    let first = REPORTED
        .lock()
        .map(|mut r| {
            r.get_or_insert_with(Default::default)
                .insert((path.to_owned(), position))
        })
        .unwrap_or(true);
    if first {
        tracing::error!(file = %path.display(), position, %reason, "corrupt record batch in a log segment; reads reaching it fail with CORRUPT_MESSAGE (run strom-broker verify-log on the partition directory)");
    }
    LogError::Corrupt {
        path: path.to_owned(),
        position,
        reason,
        first,
    }
}

/// The outcome of one append: the offsets the batches received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The LogAppendTime stamped into the batches, or -1 for CreateTime topics.
    pub log_append_time_ms: i64,
}

/// A read resolved under the partition lock and carried out without it: a byte range of one
/// segment file. The file handle stays valid even if the segment is deleted meanwhile.
pub struct ReadPlan {
    file: Arc<File>,
    /// The segment file, for error reports.
    path: PathBuf,
    position: u64,
    end: u64,
}

pub struct Log {
    dir: PathBuf,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    config: LogConfig,
    unflushed_records: i64,
    last_flush_ms: i64,
    /// Segment files renamed to `*.deleted`, removed once file.delete.delay.ms has passed
    /// (so a reader that planned a read just before the deletion is never cut short).
    pending_deletes: Vec<(i64, Vec<PathBuf>)>,
    /// Idempotent producers' state: loaded on open from the newest usable snapshot plus the
    /// batch headers after it, kept up to date by [`Log::append`] (so it always covers every
    /// batch below the log end offset, which is what a snapshot taken at a roll relies on).
    producers: ProducerStateTable,
    /// Where each leader epoch starts: how replicas find where their logs diverge.
    epochs: LeaderEpochCache,
}

/// Suffix of segment files waiting for file.delete.delay.ms before removal.
const DELETED_SUFFIX: &str = ".deleted";

impl Log {
    /// Opens (or creates) the log in `dir`. After an unclean shutdown (`clean == false`) the
    /// active segment is fully verified and a torn tail truncated.
    pub fn open(dir: &Path, config: LogConfig, clean: bool, now_ms: i64) -> Result<Log, LogError> {
        std::fs::create_dir_all(dir)?;
        cleaner::recover_interrupted_clean(dir)?;
        let mut bases: Vec<i64> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".log") {
                if let Ok(base) = stem.parse::<i64>() {
                    bases.push(base);
                }
            } else if name.ends_with(DELETED_SUFFIX) {
                // Deleted before a restart: nobody can be reading it any more.
                let _ = std::fs::remove_file(dir.join(name.as_ref()));
            } else if name.ends_with(".tmp") {
                // A temporary file is an index write that did not finish: the old file (or a
                // rebuild from the segment) is the truth.
                let _ = std::fs::remove_file(dir.join(name.as_ref()));
            }
        }
        bases.sort_unstable();
        let mut segments = BTreeMap::new();
        let last = bases.last().copied();
        for base in bases {
            let is_last = Some(base) == last;
            let recover = !clean && is_last;
            let seg = Segment::open(
                dir,
                base,
                recover,
                is_last,
                config.index_interval_bytes,
                now_ms,
            )?;
            segments.insert(base, seg);
        }
        if segments.is_empty() {
            segments.insert(0, Segment::create(dir, 0, now_ms)?);
        }
        let first_base = *segments.keys().next().expect("at least one segment");
        let stored_start = std::fs::read_to_string(dir.join(LOG_START_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok());
        let mut log = Log {
            dir: dir.to_owned(),
            segments,
            log_start_offset: first_base,
            config,
            unflushed_records: 0,
            last_flush_ms: now_ms,
            pending_deletes: Vec::new(),
            producers: ProducerStateTable::default(),
            epochs: LeaderEpochCache::empty(dir),
        };
        let leo = log.log_end_offset();
        if let Some(start) = stored_start.filter(|s| *s > leo) {
            // Trusting it would delete every closed segment as "below the log start".
            return Err(LogError::Refused(format!(
                "{}: the log start offset {start} is beyond the log end offset {leo}; the file is damaged or belongs to other data. Refusing to open the partition rather than delete its segments: check the directory, then remove or correct {LOG_START_FILE}",
                dir.join(LOG_START_FILE).display()
            )));
        }
        log.log_start_offset = stored_start.unwrap_or(first_base).clamp(first_base, leo);
        // A crash between persisting a new log start and removing the segments below it
        // leaves those segments behind: finish the job.
        log.delete_segments_below_log_start(now_ms)?;
        let snapshot = log.load_producer_snapshot();
        log.rebuild_producer_state(snapshot)?;
        match LeaderEpochCache::load(dir)? {
            Some(mut epochs) => {
                // Entries for batches that recovery cut off describe nothing.
                epochs.truncate_from_end(leo)?;
                log.epochs = epochs;
            }
            None if leo > log.log_start_offset => log.rebuild_epochs()?,
            None => {}
        }
        Ok(log)
    }

    /// Offsets of the snapshot files in the directory, oldest first.
    fn snapshot_offsets(&self) -> io::Result<Vec<i64>> {
        let mut offsets = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(&format!(".{SNAPSHOT_EXT}")) {
                if let Ok(offset) = stem.parse::<i64>() {
                    offsets.push(offset);
                }
            }
        }
        offsets.sort_unstable();
        Ok(offsets)
    }

    /// The newest snapshot that is intact and at or below the (recovered) log end offset.
    /// Unusable snapshots are removed, not just skipped: one beyond the log end offset
    /// describes batches that recovery truncated, and once the log grows past its offset
    /// again it would otherwise be loaded with state for offsets that now hold other batches.
    fn load_producer_snapshot(&self) -> Option<(i64, ProducerStateTable)> {
        let leo = self.log_end_offset();
        let offsets = match self.snapshot_offsets() {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(cause = %e, dir = %self.dir.display(), "listing producer snapshots failed; rebuilding from the log");
                return None;
            }
        };
        for offset in offsets.into_iter().rev() {
            let path = self.dir.join(file_name(offset, SNAPSHOT_EXT));
            let loaded = if offset > leo {
                Err(format!("beyond the log end offset {leo}"))
            } else {
                std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|d| {
                        ProducerStateTable::decode_snapshot(&d).map_err(|e| e.to_string())
                    })
                    .and_then(|(o, t)| {
                        if o == offset {
                            Ok(t)
                        } else {
                            Err(format!("holds offset {o}, not the one in its name"))
                        }
                    })
            };
            match loaded {
                Ok(table) => return Some((offset, table)),
                Err(cause) => {
                    tracing::warn!(%cause, file = %path.display(), "ignoring a producer snapshot");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        None
    }

    /// Writes a snapshot of the producer state at the log end offset and deletes all but
    /// the newest [`SNAPSHOTS_KEPT`]. Called on roll and close only, never per append.
    fn write_producer_snapshot(&self) -> Result<(), LogError> {
        let offset = self.log_end_offset();
        write_atomically(
            &self.dir.join(file_name(offset, SNAPSHOT_EXT)),
            &self.producers.encode_snapshot(offset),
        )?;
        let offsets = self.snapshot_offsets()?;
        for old in offsets.iter().rev().skip(SNAPSHOTS_KEPT) {
            let path = self.dir.join(file_name(*old, SNAPSHOT_EXT));
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(cause = %e, file = %path.display(), "removing an old producer snapshot failed");
                }
            }
        }
        Ok(())
    }

    /// Rebuilds the idempotent producers' state: from `snapshot` (its offset and table) if
    /// there is one, replaying only the batch headers from its offset on, else by reading
    /// every batch header (never decoding records). Batches are replayed in log order, so
    /// each producer ends with its latest epoch and last five batches, as before the
    /// restart, including after a crash: whatever was acknowledged is in the log or in the
    /// snapshot.
    fn rebuild_producer_state(
        &mut self,
        snapshot: Option<(i64, ProducerStateTable)>,
    ) -> Result<(), LogError> {
        let (from, mut table) = snapshot.unwrap_or((i64::MIN, ProducerStateTable::default()));
        self.walk_headers(from, |h| {
            if h.producer_id >= 0 && h.last_offset() >= from {
                table.update(h, h.base_offset, h.max_timestamp);
            }
        })?;
        self.producers = table;
        Ok(())
    }

    /// Rebuilds the leader-epoch cache from the batch headers: for a log written before the
    /// cache existed, or whose checkpoint is unreadable.
    fn rebuild_epochs(&mut self) -> Result<(), LogError> {
        let mut epochs = LeaderEpochCache::empty(&self.dir);
        let mut failed = None;
        self.walk_headers(i64::MIN, |h| {
            if let Err(e) = epochs.assign(h.partition_leader_epoch, h.base_offset) {
                failed.get_or_insert(e);
            }
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        self.epochs = epochs;
        Ok(())
    }

    /// Calls `f` with every batch header, in log order, of the batches that end at or after
    /// `from`, never decoding records. Small batches are walked inside 256 KiB reads (one
    /// pread per 61-byte header costs ~0.75 µs, 10 s for a GiB of 100-byte batches); after a
    /// large batch only the next header is read, so big batches are not read whole.
    fn walk_headers(&self, from: i64, mut f: impl FnMut(&BatchHeader)) -> Result<(), LogError> {
        const CHUNK: usize = 256 * 1024;
        const LARGE_BATCH: usize = 16 * 1024;
        let mut buf = vec![0u8; CHUNK];
        // Segments that end at or before `from` are not read at all.
        for seg in self.segments.values().filter(|s| s.next_offset > from) {
            let start = if seg.base_offset < from {
                match seg.locate(from)? {
                    Some(pos) => pos,
                    None => continue,
                }
            } else {
                0
            };
            let (mut pos, mut buf_start, mut buf_len, mut last_len) = (start, 0u64, 0usize, 0);
            while pos + HEADER_LEN as u64 <= seg.size {
                if pos < buf_start || pos + HEADER_LEN as u64 > buf_start + buf_len as u64 {
                    let want = if last_len >= LARGE_BATCH {
                        HEADER_LEN
                    } else {
                        CHUNK
                    };
                    let len = (want as u64).min(seg.size - pos) as usize;
                    seg.file().read_exact_at(&mut buf[..len], pos)?;
                    (buf_start, buf_len) = (pos, len);
                }
                let at = (pos - buf_start) as usize;
                let Some(h) = BatchHeader::parse(&buf[at..at + HEADER_LEN]) else {
                    break;
                };
                if h.batch_length < HEADER_LEN - batch::LOG_OVERHEAD {
                    break;
                }
                f(&h);
                last_len = h.total_len();
                pos += last_len as u64;
            }
        }
        Ok(())
    }

    pub fn producers(&self) -> &ProducerStateTable {
        &self.producers
    }

    pub fn producers_mut(&mut self) -> &mut ProducerStateTable {
        &mut self.producers
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Applies a changed topic configuration; it takes effect from the next append.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// The log end offset (LEO): the offset the next record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    /// Appends validated batches (`records` holds them back to back, `headers` describes
    /// each), assigning consecutive offsets from the log end. Returns the offsets given.
    pub fn append(
        &mut self,
        records: &[u8],
        headers: &[BatchHeader],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let log_append_time = self.config.log_append_time.then_some(now_ms);
        let base_offset = self.log_end_offset();
        if !headers.is_empty() {
            self.epochs.assign(leader_epoch, base_offset)?;
        }
        let mut pos = 0usize;
        let mut next = base_offset;
        let mut records_appended = 0i64;
        for h in headers {
            let total = h.total_len();
            self.maybe_roll(total as u64, now_ms)?;
            let mut header = [0u8; HEADER_LEN];
            header.copy_from_slice(&records[pos..pos + HEADER_LEN]);
            batch::stamp_header(
                &mut header,
                &records[pos + HEADER_LEN..pos + total],
                next,
                leader_epoch,
                log_append_time,
            );
            let interval = self.config.index_interval_bytes;
            self.active_mut()
                .append(&header, &records[pos + HEADER_LEN..pos + total], interval)?;
            if h.producer_id >= 0 {
                // Recorded with the batch, not by the caller afterwards, so that a roll
                // (and its snapshot) between two batches sees every batch below it.
                self.producers.update(h, next, now_ms);
            }
            next += h.last_offset_delta as i64 + 1;
            records_appended += h.record_count as i64;
            pos += total;
        }
        self.unflushed_records += records_appended;
        if self.unflushed_records >= self.config.flush_messages
            || now_ms - self.last_flush_ms >= self.config.flush_ms
        {
            self.flush(now_ms)?;
        }
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            log_append_time_ms: log_append_time.unwrap_or(-1),
        })
    }

    /// Appends batches exactly as a leader stored them (a follower's append): offsets,
    /// leader epochs, timestamps and CRCs are kept, never re-encoded. Each batch must start
    /// at or after the log end (a compacted leader's log has gaps between batches); if one
    /// does not, nothing of this call is written. Returns the offsets appended.
    pub fn append_replicated(
        &mut self,
        records: &[u8],
        headers: &[BatchHeader],
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let base_offset = self.log_end_offset();
        let mut expected = base_offset;
        for h in headers {
            if h.base_offset < expected {
                return Err(LogError::OutOfOrder {
                    base_offset: h.base_offset,
                    log_end_offset: expected,
                });
            }
            expected = h.last_offset() + 1;
        }
        let mut pos = 0usize;
        let mut records_appended = 0i64;
        for h in headers {
            let total = h.total_len();
            self.maybe_roll(total as u64, now_ms)?;
            self.epochs
                .assign(h.partition_leader_epoch, h.base_offset)?;
            let mut header = [0u8; HEADER_LEN];
            header.copy_from_slice(&records[pos..pos + HEADER_LEN]);
            let interval = self.config.index_interval_bytes;
            self.active_mut()
                .append(&header, &records[pos + HEADER_LEN..pos + total], interval)?;
            if h.producer_id >= 0 {
                self.producers.update(h, h.base_offset, now_ms);
            }
            records_appended += h.record_count as i64;
            pos += total;
        }
        assert_eq!(
            self.log_end_offset(),
            expected,
            "replicated append ends where its batches do"
        );
        self.unflushed_records += records_appended;
        if self.unflushed_records >= self.config.flush_messages
            || now_ms - self.last_flush_ms >= self.config.flush_ms
        {
            self.flush(now_ms)?;
        }
        Ok(AppendInfo {
            base_offset: headers.first().map_or(base_offset, |h| h.base_offset),
            last_offset: expected - 1,
            log_append_time_ms: -1,
        })
    }

    /// The leader-epoch cache: where each epoch of this log starts.
    pub fn epochs(&self) -> &LeaderEpochCache {
        &self.epochs
    }

    /// Kafka's end offset for a leader epoch (see [`LeaderEpochCache::end_offset_for`]).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Starts a new segment when the next batch would overflow segment.bytes, when the active
    /// segment is older than segment.ms, or when its offset index is full.
    fn maybe_roll(&mut self, incoming: u64, now_ms: i64) -> Result<(), LogError> {
        let cfg = &self.config;
        let active = self.active();
        if active.size == 0 {
            return Ok(());
        }
        let full = active.size + incoming > cfg.segment_bytes;
        let old = now_ms - active.created_ms >= cfg.segment_ms;
        let index_full = (active.index.len() as u64 + 1) * 8 > cfg.segment_index_bytes;
        let offsets_overflow = self.log_end_offset() - active.base_offset > i32::MAX as i64 / 2;
        if full || old || index_full || offsets_overflow {
            self.roll(now_ms)?;
        }
        Ok(())
    }

    /// Closes the active segment (fsync, indexes on disk), snapshots the producer state at
    /// the LEO and opens a new segment there.
    pub fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        let active = self.active();
        active.flush()?;
        active.write_indexes()?;
        self.write_producer_snapshot()?;
        let base = self.log_end_offset();
        let seg = Segment::create(&self.dir, base, now_ms)?;
        self.segments.insert(base, seg);
        sync_dir(&self.dir)?;
        Ok(())
    }

    /// fsyncs the active segment (closed segments were synced when they rolled).
    pub fn flush(&mut self, now_ms: i64) -> Result<(), LogError> {
        self.active().flush()?;
        self.unflushed_records = 0;
        self.last_flush_ms = now_ms;
        Ok(())
    }

    /// Flushes when flush.ms has passed; called periodically.
    pub fn flush_if_due(&mut self, now_ms: i64) -> Result<(), LogError> {
        if self.unflushed_records > 0 && now_ms - self.last_flush_ms >= self.config.flush_ms {
            self.flush(now_ms)?;
        }
        Ok(())
    }

    /// Flushes everything, writes the indexes and a producer snapshot at the LEO, for a clean
    /// shutdown: the next start reads the snapshot and no batch header.
    pub fn close(&mut self, now_ms: i64) -> Result<(), LogError> {
        self.flush(now_ms)?;
        self.active().write_indexes()?;
        self.write_producer_snapshot()?;
        sync_dir(&self.dir)?;
        Ok(())
    }

    /// Resolves where a read at `offset` starts. Offsets below the log start or above the
    /// LEO are out of range; a read at the LEO is empty.
    pub fn plan_read(&self, offset: i64) -> Result<Option<ReadPlan>, LogError> {
        let leo = self.log_end_offset();
        if offset < self.log_start_offset || offset > leo {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: leo,
            });
        }
        if let Some((_, seg)) = self.segments.range(..=offset).next_back() {
            if let Some(damaged) = seg.damaged_at {
                if offset >= seg.next_offset {
                    // The offset lies in the damaged part of a closed segment: an error, not
                    // a silent skip to the next segment.
                    return Err(corruption(
                        &seg.path(),
                        damaged,
                        format!("offset {offset} lies after the damaged position of this segment"),
                    ));
                }
            }
        }
        for (_, seg) in self
            .segments
            .range(..=offset)
            .next_back()
            .into_iter()
            .chain(
                self.segments
                    .range(offset.saturating_add(1)..)
                    .take(self.segments.len()),
            )
        {
            if let Some(position) = seg.locate(offset)? {
                return Ok(Some(ReadPlan {
                    file: seg.handle()?,
                    path: seg.path(),
                    position,
                    end: seg.size,
                }));
            }
        }
        Ok(None)
    }

    /// Offsets and timestamps for ListOffsets by timestamp: the first record whose timestamp
    /// is at least `timestamp`, or `None` if there is none.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        for seg in self.segments.values() {
            if seg.max_timestamp < timestamp || seg.size == 0 {
                continue;
            }
            let mut pos = seg.time_lookup_position(timestamp);
            while pos < seg.size {
                let h = seg.read_header_at(pos)?;
                if h.max_timestamp >= timestamp && h.last_offset() >= self.log_start_offset {
                    let found =
                        self.first_record_at_or_after(seg, pos, &h, |ts| ts >= timestamp)?;
                    if let Some(found) = found {
                        return Ok(Some(found));
                    }
                }
                pos += h.total_len() as u64;
            }
        }
        Ok(None)
    }

    /// The offset and timestamp of the record with the greatest timestamp (ListOffsets -3).
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, LogError> {
        let Some(seg) = self
            .segments
            .values()
            .filter(|s| s.size > 0)
            .max_by_key(|s| s.max_timestamp)
        else {
            return Ok(None);
        };
        let max = seg.max_timestamp;
        let Some(pos) = seg.locate(seg.offset_of_max_timestamp)? else {
            return Ok(None);
        };
        let h = seg.read_header_at(pos)?;
        self.first_record_at_or_after(seg, pos, &h, |ts| ts == max)
    }

    /// Decodes the batch at `pos` (the rare path that needs records: ListOffsets by time) and
    /// returns the first record whose timestamp satisfies `pred`.
    fn first_record_at_or_after(
        &self,
        seg: &Segment,
        pos: u64,
        h: &BatchHeader,
        pred: impl Fn(i64) -> bool,
    ) -> Result<Option<(i64, i64)>, LogError> {
        if h.is_log_append_time() {
            return Ok(pred(h.max_timestamp)
                .then_some((h.base_offset.max(self.log_start_offset), h.max_timestamp)));
        }
        let mut buf = vec![0u8; h.total_len()];
        seg.file().read_exact_at(&mut buf, pos)?;
        // Bounded: a stored bomb cannot make a ListOffsets inflate it without limit.
        let set = codec::decode_batch(Bytes::from(buf), self.config.max_decompressed_bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(set
            .records
            .iter()
            .find(|r| r.offset >= self.log_start_offset && pred(r.timestamp))
            .map(|r| (r.offset, r.timestamp)))
    }

    /// Advances the log start offset to `offset` (DeleteRecords, retention) and deletes the
    /// segments that lie wholly below it. The new start is persisted before any file is
    /// touched, so a crash in between leaves segments that the next start removes.
    pub fn advance_log_start(&mut self, offset: i64, now_ms: i64) -> Result<(), LogError> {
        if offset <= self.log_start_offset {
            return Ok(());
        }
        // Persisted first, applied after: a failed write (a full disk) changes nothing, so
        // the error the caller reports is the whole truth and a retry does the work.
        let start = offset.min(self.log_end_offset());
        write_atomically(&self.dir.join(LOG_START_FILE), start.to_string().as_bytes())?;
        self.log_start_offset = start;
        // The new start is durable: segments that cannot be removed now are removed by the
        // next retention pass or start, so a failure here does not undo the deletion.
        if let Err(e) = self.delete_segments_below_log_start(now_ms) {
            tracing::warn!(cause = %e, dir = %self.dir.display(), "removing segments below the log start failed; retried later");
        }
        Ok(())
    }

    /// Removes closed segments whose every offset is below the log start offset.
    fn delete_segments_below_log_start(&mut self, now_ms: i64) -> Result<usize, LogError> {
        let active_base = self.active().base_offset;
        let doomed: Vec<i64> = self
            .segments
            .values()
            .filter(|s| s.base_offset != active_base && s.next_offset <= self.log_start_offset)
            .map(|s| s.base_offset)
            .collect();
        for base in &doomed {
            if let Some(seg) = self.segments.remove(base) {
                let renamed = seg.rename_for_deletion(DELETED_SUFFIX)?;
                self.pending_deletes.push((
                    now_ms.saturating_add(self.config.file_delete_delay_ms),
                    renamed,
                ));
            }
        }
        Ok(doomed.len())
    }

    /// Time and size retention (cleanup.policy containing `delete`): deletes the oldest
    /// segments whose greatest timestamp is older than retention.ms, then the oldest
    /// segments while the log stays above retention.bytes without them. Only segments
    /// wholly below `high_watermark` go. When the active segment alone has expired it is
    /// rolled first, as Kafka does, so that an idle topic still ages out. Returns how many
    /// segments were deleted.
    pub fn apply_retention(&mut self, now_ms: i64, high_watermark: i64) -> Result<usize, LogError> {
        if !self.config.delete {
            return Ok(0);
        }
        let retention_ms = self.config.retention_ms;
        let expired = |s: &Segment| {
            retention_ms >= 0 && s.size > 0 && now_ms.saturating_sub(s.max_timestamp) > retention_ms
        };
        let active = self.active();
        if expired(active)
            && active.next_offset <= high_watermark
            && self.segments.values().all(expired)
        {
            self.roll(now_ms)?;
        }
        let mut new_start = self.log_start_offset;
        let closed: Vec<&Segment> = self.segments.values().rev().skip(1).rev().collect();
        for s in &closed {
            if !expired(s) || s.next_offset > high_watermark {
                break;
            }
            new_start = new_start.max(s.next_offset);
        }
        if self.config.retention_bytes >= 0 {
            let mut excess = self.size_bytes() as i64 - self.config.retention_bytes;
            for s in &closed {
                if excess - (s.size as i64) < 0 || s.next_offset > high_watermark {
                    break;
                }
                excess -= s.size as i64;
                new_start = new_start.max(s.next_offset);
            }
        }
        if new_start <= self.log_start_offset {
            return Ok(0);
        }
        let before = self.segments.len();
        self.advance_log_start(new_start, now_ms)?;
        Ok(before - self.segments.len())
    }

    /// Removes the files of deleted segments whose delay has passed.
    pub fn purge_deleted(&mut self, now_ms: i64) {
        self.pending_deletes.retain(|(due, paths)| {
            if *due > now_ms {
                return true;
            }
            for p in paths {
                if let Err(e) = std::fs::remove_file(p) {
                    if e.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(cause = %e, file = %p.display(), "removing a deleted segment failed");
                    }
                }
            }
            false
        });
    }

    /// Removes every batch that holds an offset at or above `offset`, so the log ends at
    /// `offset` (or lower, at the start of the batch that contains it). A replica whose
    /// tail diverges from its leader's, and a Raft voter whose uncommitted entries a new
    /// leader overwrites, both need this. Returns the new log end offset. Truncating below
    /// the log start empties the log and starts it again at `offset`.
    pub fn truncate_to(&mut self, offset: i64, now_ms: i64) -> Result<i64, LogError> {
        let leo_before = self.log_end_offset();
        if offset >= leo_before {
            return Ok(leo_before);
        }
        if offset <= self.log_start_offset {
            self.reset_to(offset.max(0), now_ms)?;
            return Ok(self.log_end_offset());
        }
        let doomed: Vec<i64> = self.segments.range(offset..).map(|(b, _)| *b).collect();
        for base in doomed {
            if let Some(seg) = self.segments.remove(&base) {
                let renamed = seg.rename_for_deletion(DELETED_SUFFIX)?;
                self.pending_deletes.push((now_ms, renamed));
            }
        }
        let interval = self.config.index_interval_bytes;
        match self.segments.iter().next_back().map(|(b, s)| (*b, s)) {
            Some((base, seg)) => {
                if let Some(pos) = seg.locate(offset)? {
                    seg.file().set_len(pos)?;
                    seg.file().sync_all()?;
                    for ext in ["index", "timeindex"] {
                        match std::fs::remove_file(self.dir.join(file_name(base, ext))) {
                            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                            _ => {}
                        }
                    }
                    // Re-scanning rebuilds the in-memory indexes up to the new end.
                    let reopened = Segment::open(&self.dir, base, true, true, interval, now_ms)?;
                    self.segments.insert(base, reopened);
                }
            }
            None => {
                self.segments
                    .insert(offset, Segment::create(&self.dir, offset, now_ms)?);
            }
        }
        sync_dir(&self.dir)?;
        let leo = self.log_end_offset();
        assert!(
            leo <= offset && leo >= self.log_start_offset,
            "truncation to {offset} left the log end at {leo}"
        );
        self.epochs.truncate_from_end(leo)?;
        // Producer state (and snapshots) describing the removed batches must go with them.
        let snapshot = self.load_producer_snapshot();
        self.rebuild_producer_state(snapshot)?;
        Ok(leo)
    }

    /// Removes every segment and starts the log again, empty, at `offset`: a replica that
    /// installs a snapshot (or is too far behind its leader's log start) begins there.
    pub fn reset_to(&mut self, offset: i64, now_ms: i64) -> Result<(), LogError> {
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        for base in bases {
            if let Some(seg) = self.segments.remove(&base) {
                let renamed = seg.rename_for_deletion(DELETED_SUFFIX)?;
                self.pending_deletes.push((now_ms, renamed));
            }
        }
        for old in self.snapshot_offsets()? {
            let _ = std::fs::remove_file(self.dir.join(file_name(old, SNAPSHOT_EXT)));
        }
        self.segments
            .insert(offset, Segment::create(&self.dir, offset, now_ms)?);
        self.log_start_offset = offset;
        write_atomically(
            &self.dir.join(LOG_START_FILE),
            offset.to_string().as_bytes(),
        )?;
        sync_dir(&self.dir)?;
        self.producers = ProducerStateTable::default();
        self.epochs.clear()?;
        self.unflushed_records = 0;
        Ok(())
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<i64> {
        self.segments.keys().copied().collect()
    }
}

impl ReadPlan {
    /// Reads whole batches from the planned position: at most `max_bytes`, except that when
    /// `allow_oversized_first` is set and the first batch alone exceeds the limit it is
    /// returned whole (KIP-74), so a consumer always makes progress. Batches starting at or
    /// after `max_offset` (the high watermark) are not returned.
    ///
    /// Every batch served is checked first: its framing (magic, a length that stays inside
    /// the segment, offsets that increase) and its CRC-32C (hardware-accelerated, a small
    /// fraction of the cost of the read itself). Damage is an error, never a silent stop:
    /// a reader that stopped at a bad batch would wait at it forever.
    pub fn read(
        &self,
        max_bytes: usize,
        max_offset: i64,
        allow_oversized_first: bool,
    ) -> Result<Bytes, LogError> {
        let available = self.end.saturating_sub(self.position) as usize;
        let want = available.min(max_bytes);
        let mut buf = vec![0u8; want];
        self.file.read_exact_at(&mut buf, self.position)?;
        let mut used = 0usize;
        let mut next_offset = None;
        while used + HEADER_LEN <= buf.len() {
            let h = BatchHeader::parse(&buf[used..]).expect("full header");
            self.check_framing(&h, used, next_offset)?;
            if h.base_offset >= max_offset || used + h.total_len() > buf.len() {
                break;
            }
            self.check_crc(&buf[used..used + h.total_len()], used)?;
            next_offset = Some(h.next_offset());
            used += h.total_len();
        }
        if used < buf.len() && buf.len() - used < HEADER_LEN && want == available {
            // The segment's whole batches end mid-header: its size and contents disagree.
            return Err(corruption(
                &self.path,
                self.position + used as u64,
                "the segment ends inside a batch header",
            ));
        }
        if used == 0 && allow_oversized_first && available >= HEADER_LEN {
            let mut header = [0u8; HEADER_LEN];
            self.file.read_exact_at(&mut header, self.position)?;
            let h = BatchHeader::parse(&header).expect("full header");
            self.check_framing(&h, 0, None)?;
            if h.base_offset < max_offset {
                let mut whole = vec![0u8; h.total_len()];
                self.file.read_exact_at(&mut whole, self.position)?;
                self.check_crc(&whole, 0)?;
                return Ok(Bytes::from(whole));
            }
        }
        buf.truncate(used);
        Ok(Bytes::from(buf))
    }

    /// A batch header at `at` bytes into the read must be a v2 header whose length stays
    /// inside the segment and whose base offset follows the previous batch's offsets.
    fn check_framing(
        &self,
        h: &BatchHeader,
        at: usize,
        previous_next_offset: Option<i64>,
    ) -> Result<(), LogError> {
        let position = self.position + at as u64;
        let reason = if h.magic != 2 {
            format!("magic byte {} (only v2 batches are stored)", h.magic)
        } else if h.batch_length < batch::MIN_BATCH_LEN - batch::LOG_OVERHEAD {
            format!("batch length {} is below the minimum", h.batch_length)
        } else if position + h.total_len() as u64 > self.end {
            format!(
                "batch length {} runs past the segment's end at {}",
                h.batch_length, self.end
            )
        } else if previous_next_offset.is_some_and(|n| h.base_offset < n) || h.last_offset_delta < 0
        {
            format!(
                "base offset {} (last offset delta {}) goes backwards",
                h.base_offset, h.last_offset_delta
            )
        } else {
            return Ok(());
        };
        Err(corruption(&self.path, position, reason))
    }

    fn check_crc(&self, batch: &[u8], at: usize) -> Result<(), LogError> {
        let stored = u32::from_be_bytes([batch[17], batch[18], batch[19], batch[20]]);
        if crc32c::crc32c(&batch[21..]) == stored {
            return Ok(());
        }
        Err(corruption(
            &self.path,
            self.position + at as u64,
            "CRC-32C mismatch",
        ))
    }
}

/// fsyncs a directory so that file creations and renames in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The file that names a segment, for tests and tools.
pub fn segment_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(file_name(base_offset, "log"))
}

#[cfg(test)]
mod tests {
    use super::batch::tests::make_batch;
    use super::batch::validate_batches;
    use super::*;
    use crate::config::BrokerConfig;
    use kafka_protocol::records::Compression;

    fn config(overrides: &[(&str, &str)]) -> LogConfig {
        let o = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LogConfig::resolve(&BrokerConfig::default(), &o)
    }

    fn append_n(log: &mut Log, batches: usize, records: usize, now: i64) {
        for _ in 0..batches {
            let b = make_batch(records, 100, Compression::None);
            let h = validate_batches(&b, usize::MAX).unwrap();
            log.append(&b, &h, 0, now).unwrap();
        }
    }

    fn read_all(log: &Log, from: i64) -> Vec<BatchHeader> {
        let mut out = Vec::new();
        let mut offset = from;
        while offset < log.log_end_offset() {
            let plan = log.plan_read(offset).unwrap().unwrap();
            let data = plan.read(1 << 20, i64::MAX, true).unwrap();
            let hs = validate_batches(&data, usize::MAX).unwrap();
            assert!(!hs.is_empty());
            offset = hs.last().unwrap().next_offset();
            out.extend(hs);
        }
        out
    }

    /// A log of 10 batches of 5 records over several closed segments and an active one.
    fn damaged_fixture() -> (tempfile::TempDir, LogConfig) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&[("segment.bytes", "3000"), ("index.interval.bytes", "1")]);
        let mut log = Log::open(dir.path(), cfg.clone(), true, 0).unwrap();
        append_n(&mut log, 10, 5, 0);
        assert!(log.segment_count() >= 3);
        log.close(0).unwrap();
        (dir, cfg)
    }

    fn first_closed_segment(dir: &Path) -> PathBuf {
        segment_path(dir, 0)
    }

    #[test]
    fn a_damaged_index_never_truncates_the_log() {
        let (dir, cfg) = damaged_fixture();
        let index = dir.path().join(file_name(0, "index"));
        let mut data = std::fs::read(&index).unwrap();
        assert!(data.len() >= 16);
        // Shift every position by 7 bytes, as a damaged index would.
        for c in data.chunks_exact_mut(8) {
            let p = u32::from_be_bytes([c[4], c[5], c[6], c[7]]) + 7;
            c[4..8].copy_from_slice(&p.to_be_bytes());
        }
        std::fs::write(&index, &data).unwrap();
        let len = std::fs::metadata(first_closed_segment(dir.path()))
            .unwrap()
            .len();
        let log = Log::open(dir.path(), cfg, true, 0).unwrap();
        assert_eq!(
            std::fs::metadata(first_closed_segment(dir.path()))
                .unwrap()
                .len(),
            len
        );
        assert_eq!(log.log_end_offset(), 50);
        assert_eq!(read_all(&log, 0).len(), 10);
        assert_eq!(read_all(&log, 7)[0].base_offset, 5);
    }

    #[test]
    fn a_torn_last_batch_with_the_clean_marker_keeps_the_log_end() {
        // Cut inside the last batch (the one the last index entry names), and half a batch
        // after the last whole one.
        for cut_last in [true, false] {
            let (dir, cfg) = damaged_fixture();
            let log = Log::open(dir.path(), cfg.clone(), true, 0).unwrap();
            let active = *log.segments.keys().next_back().unwrap();
            let leo = log.log_end_offset();
            drop(log);
            let path = segment_path(dir.path(), active);
            let mut bytes = std::fs::read(&path).unwrap();
            let expected_leo = if cut_last {
                bytes.truncate(bytes.len() - 10);
                leo - 5
            } else {
                let half = make_batch(5, 100, Compression::None);
                bytes.extend_from_slice(&half[..half.len() / 2]);
                leo
            };
            std::fs::write(&path, &bytes).unwrap();
            let mut log = Log::open(dir.path(), cfg, true, 0).unwrap();
            assert_eq!(log.log_end_offset(), expected_leo, "cut_last {cut_last}");
            // An append never reuses an offset on disk.
            let b = make_batch(1, 10, Compression::None);
            let h = validate_batches(&b, usize::MAX).unwrap();
            assert_eq!(log.append(&b, &h, 0, 0).unwrap().base_offset, expected_leo);
            let batches = read_all(&log, 0);
            assert_eq!(batches.len(), if cut_last { 10 } else { 11 });
        }
    }

    #[test]
    fn damage_in_a_closed_segment_is_kept_and_reported_on_read() {
        for clean in [true, false] {
            let (dir, cfg) = damaged_fixture();
            let path = first_closed_segment(dir.path());
            let mut bytes = std::fs::read(&path).unwrap();
            let first = BatchHeader::parse(&bytes).unwrap().total_len();
            // The second batch's length field is corrupted.
            bytes[first + 8..first + 12].copy_from_slice(&1_000_000i32.to_be_bytes());
            std::fs::write(&path, &bytes).unwrap();
            let _ = std::fs::remove_file(dir.path().join(file_name(0, "index")));
            let log = Log::open(dir.path(), cfg, clean, 0).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "never truncated");
            // The first batch reads; a read reaching the damage is an error, not "nothing".
            let plan = log.plan_read(0).unwrap().unwrap();
            assert_eq!(plan.read(first, i64::MAX, true).unwrap().len(), first);
            let err = match log.plan_read(5) {
                Err(e) => e,
                Ok(plan) => plan.unwrap().read(1 << 20, i64::MAX, true).unwrap_err(),
            };
            assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains(&path.display().to_string()));
        }
    }

    #[test]
    fn a_flipped_byte_in_a_served_batch_is_corrupt() {
        let (dir, cfg) = damaged_fixture();
        let path = first_closed_segment(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let log = Log::open(dir.path(), cfg, true, 0).unwrap();
        let err = log
            .plan_read(0)
            .unwrap()
            .unwrap()
            .read(1 << 20, i64::MAX, true)
            .unwrap_err();
        assert!(
            matches!(&err, LogError::Corrupt { position: 0, reason, .. } if reason.contains("CRC")),
            "{err}"
        );
    }

    #[test]
    fn a_log_start_beyond_the_log_end_refuses_to_open() {
        let (dir, cfg) = damaged_fixture();
        std::fs::write(dir.path().join(LOG_START_FILE), b"5000").unwrap();
        let err = Log::open(dir.path(), cfg, true, 0).err().expect("refused");
        assert!(matches!(err, LogError::Refused(_)), "{err}");
        assert!(
            err.to_string().contains("beyond the log end offset 50"),
            "{err}"
        );
        assert!(segment_path(dir.path(), 0).exists());
    }

    #[test]
    fn appends_assign_offsets_and_reads_return_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(&[]), true, 0).unwrap();
        append_n(&mut log, 5, 10, 0);
        assert_eq!(log.log_end_offset(), 50);
        let hs = read_all(&log, 0);
        assert_eq!(hs.len(), 5);
        for (i, h) in hs.iter().enumerate() {
            assert_eq!(h.base_offset, i as i64 * 10);
        }
        // An offset inside a batch returns the whole batch.
        let plan = log.plan_read(25).unwrap().unwrap();
        let data = plan.read(1 << 20, i64::MAX, true).unwrap();
        assert_eq!(
            validate_batches(&data, usize::MAX).unwrap()[0].base_offset,
            20
        );
        // The high watermark hides later batches.
        let data = plan.read(1 << 20, 30, true).unwrap();
        assert_eq!(validate_batches(&data, usize::MAX).unwrap().len(), 1);
        assert!(matches!(
            log.plan_read(51),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert!(log.plan_read(50).unwrap().is_none());
    }

    #[test]
    fn rolls_by_size_and_reopens_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&[("segment.bytes", "3000")]);
        let mut log = Log::open(dir.path(), cfg.clone(), true, 0).unwrap();
        append_n(&mut log, 20, 5, 0);
        assert!(log.segment_count() > 3, "{}", log.segment_count());
        let before: Vec<_> = read_all(&log, 0);
        log.close(0).unwrap();
        drop(log);
        let log = Log::open(dir.path(), cfg, true, 0).unwrap();
        assert_eq!(log.log_end_offset(), 100);
        assert_eq!(read_all(&log, 0), before);
    }

    #[test]
    fn truncation_removes_whole_batches_across_segments_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&[("segment.bytes", "3000")]);
        let mut log = Log::open(dir.path(), cfg.clone(), true, 0).unwrap();
        // 20 batches of 5 records: offsets 0..100 over several segments.
        append_n(&mut log, 20, 5, 0);
        assert!(log.segment_count() > 2);
        // Inside a batch: the whole batch holding offset 52 goes (it starts at 50).
        assert_eq!(log.truncate_to(52, 0).unwrap(), 50);
        assert_eq!(log.log_end_offset(), 50);
        let headers = read_all(&log, 0);
        assert_eq!(headers.last().unwrap().next_offset(), 50);
        // Appends continue at the new end, with no gap and no reused offset on disk.
        append_n(&mut log, 1, 5, 0);
        assert_eq!(log.log_end_offset(), 55);
        // At a segment boundary, and then a no-op beyond the end.
        let second = log.segment_bases()[1];
        assert_eq!(log.truncate_to(second, 0).unwrap(), second);
        assert_eq!(log.truncate_to(1000, 0).unwrap(), second);
        log.close(0).unwrap();
        drop(log);
        let log = Log::open(dir.path(), cfg.clone(), false, 0).unwrap();
        assert_eq!(log.log_end_offset(), second);
        assert_eq!(read_all(&log, 0).len() as i64, second / 5);
        drop(log);
        // After an unclean stop too (no index trusted).
        let mut log = Log::open(dir.path(), cfg, true, 0).unwrap();
        assert_eq!(log.log_end_offset(), second);
        log.reset_to(500, 0).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 500));
        append_n(&mut log, 1, 5, 0);
        assert_eq!(read_all(&log, 500).first().unwrap().base_offset, 500);
    }

    #[test]
    fn rolls_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(&[("segment.ms", "1000")]), true, 0).unwrap();
        append_n(&mut log, 1, 1, 0);
        append_n(&mut log, 1, 1, 999);
        assert_eq!(log.segment_count(), 1);
        append_n(&mut log, 1, 1, 1000);
        assert_eq!(log.segment_bases(), vec![0, 2]);
    }

    #[test]
    fn recovery_truncates_a_torn_tail_and_keeps_whole_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(&[]), true, 0).unwrap();
        append_n(&mut log, 3, 4, 0);
        drop(log);
        // A crash in the middle of the fourth batch's write.
        let partial = make_batch(4, 100, Compression::None);
        let path = segment_path(dir.path(), 0);
        let mut data = std::fs::read(&path).unwrap();
        let good_len = data.len();
        data.extend_from_slice(&partial[..partial.len() / 2]);
        std::fs::write(&path, &data).unwrap();
        let mut log = Log::open(dir.path(), config(&[]), false, 0).unwrap();
        assert_eq!(log.log_end_offset(), 12);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, good_len);
        append_n(&mut log, 1, 4, 0);
        assert_eq!(read_all(&log, 0).len(), 4);
    }

    #[test]
    fn recovery_drops_a_corrupt_tail_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(&[]), true, 0).unwrap();
        append_n(&mut log, 3, 4, 0);
        drop(log);
        let path = segment_path(dir.path(), 0);
        let mut data = std::fs::read(&path).unwrap();
        let last = data.len() - 3;
        data[last] ^= 0x55;
        std::fs::write(&path, &data).unwrap();
        let log = Log::open(dir.path(), config(&[]), false, 0).unwrap();
        assert_eq!(log.log_end_offset(), 8);
    }

    #[test]
    fn log_start_offset_moves_deletes_segments_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&[("segment.bytes", "2000")]);
        let mut log = Log::open(dir.path(), cfg.clone(), true, 0).unwrap();
        append_n(&mut log, 10, 5, 0);
        let segments = log.segment_count();
        log.advance_log_start(23, 0).unwrap();
        assert_eq!(log.log_start_offset(), 23);
        assert!(log.segment_count() < segments);
        assert!(matches!(
            log.plan_read(22),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert!(log.plan_read(23).unwrap().is_some());
        drop(log);
        let log = Log::open(dir.path(), cfg, false, 0).unwrap();
        assert_eq!(log.log_start_offset(), 23);
    }

    /// Record timestamps of make_batch start here.
    const T0: i64 = 1_700_000_000_000;

    fn files_with_suffix(dir: &Path, suffix: &str) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(suffix)
            })
            .count()
    }

    #[test]
    fn time_retention_deletes_expired_closed_segments_after_the_delay() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&[
            ("segment.bytes", "2000"),
            ("retention.ms", "60000"),
            ("file.delete.delay.ms", "1000"),
        ]);
        let mut log = Log::open(dir.path(), cfg, true, 0).unwrap();
        append_n(&mut log, 10, 5, 0);
        let segments = log.segment_count();
        assert!(segments >= 3);
        let leo = log.log_end_offset();
        // Not yet expired: nothing happens.
        assert_eq!(log.apply_retention(T0 + 60_000, leo).unwrap(), 0);
        // Expired, but the high watermark protects everything from offset 5 on.
        log.apply_retention(T0 + 120_000, 5).unwrap();
        assert!(log.log_start_offset() <= 5);
        // Expired and committed: every closed segment goes; the active one rolls first
        // because it expired too, so the log ends up empty at its end offset.
        let deleted = log.apply_retention(T0 + 120_000, leo).unwrap();
        assert!(deleted >= segments - 1, "{deleted} of {segments}");
        assert_eq!(log.log_start_offset(), leo);
        assert!(matches!(
            log.plan_read(0),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        // Files wait for file.delete.delay.ms under a .deleted name.
        assert!(files_with_suffix(dir.path(), ".log.deleted") >= segments - 1);
        log.purge_deleted(T0 + 120_500);
        assert!(files_with_suffix(dir.path(), ".log.deleted") >= 1);
        log.purge_deleted(T0 + 121_001);
        assert_eq!(files_with_suffix(dir.path(), ".deleted"), 0);
        // New data still appends at the old end.
        append_n(&mut log, 1, 5, 0);
        assert_eq!(read_all(&log, leo).len(), 1);
    }

    #[test]
    fn retention_ms_minus_one_and_compact_policy_keep_everything() {
        for overrides in [
            [("retention.ms", "-1"), ("cleanup.policy", "delete")],
            [("retention.ms", "1"), ("cleanup.policy", "compact")],
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut o = overrides.to_vec();
            o.push(("segment.bytes", "2000"));
            let mut log = Log::open(dir.path(), config(&o), true, 0).unwrap();
            append_n(&mut log, 10, 5, 0);
            let leo = log.log_end_offset();
            assert_eq!(log.apply_retention(i64::MAX / 2, leo).unwrap(), 0);
            assert_eq!(log.log_start_offset(), 0);
        }
    }

    #[test]
    fn size_retention_keeps_the_newest_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&[("segment.bytes", "2000"), ("retention.bytes", "4000")]);
        let mut log = Log::open(dir.path(), cfg, true, 0).unwrap();
        append_n(&mut log, 20, 5, 0);
        let leo = log.log_end_offset();
        let deleted = log.apply_retention(T0, leo).unwrap();
        assert!(deleted > 0);
        assert!(log.size_bytes() <= 4000 + 2000, "{}", log.size_bytes());
        assert!(log.size_bytes() >= 4000 - 2000);
        assert_eq!(log.log_start_offset(), log.segment_bases()[0]);
        assert_eq!(
            read_all(&log, log.log_start_offset())
                .last()
                .unwrap()
                .next_offset(),
            leo
        );
    }

    #[test]
    fn a_crash_after_moving_the_log_start_finishes_the_deletion_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&[("segment.bytes", "2000")]);
        let mut log = Log::open(dir.path(), cfg.clone(), true, 0).unwrap();
        append_n(&mut log, 10, 5, 0);
        let bases = log.segment_bases();
        drop(log);
        // The checkpoint was written, then the process died before renaming files.
        std::fs::write(dir.path().join(LOG_START_FILE), bases[2].to_string()).unwrap();
        let log = Log::open(dir.path(), cfg, false, 0).unwrap();
        assert_eq!(log.log_start_offset(), bases[2]);
        assert_eq!(log.segment_bases()[0], bases[2]);
    }

    #[test]
    fn offsets_by_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(&[]), true, 0).unwrap();
        // make_batch stamps record i with 1_700_000_000_000 + i.
        append_n(&mut log, 2, 10, 0);
        assert_eq!(
            log.offset_for_timestamp(1_700_000_000_003).unwrap(),
            Some((3, 1_700_000_000_003))
        );
        assert_eq!(log.offset_for_timestamp(1_800_000_000_000).unwrap(), None);
        assert_eq!(
            log.max_timestamp_offset().unwrap(),
            Some((9, 1_700_000_000_009))
        );
    }

    #[test]
    fn producer_state_is_rebuilt_from_headers_after_a_crash_and_across_segments() {
        use crate::log::producer_state::SequenceCheck;
        use batch::tests::make_idempotent_batch;
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&[("segment.bytes", "300")]);
        let mut log = Log::open(dir.path(), cfg.clone(), true, 0).unwrap();
        let batches = [
            make_idempotent_batch(2, 5, 0, 0),
            make_idempotent_batch(1, 9, 0, 0),
            make_idempotent_batch(3, 5, 0, 2),
            make_batch(1, 10, Compression::None),
            make_idempotent_batch(1, 5, 1, 0),
            make_idempotent_batch(2, 5, 1, 1),
        ];
        for b in &batches {
            let h = validate_batches(b, usize::MAX).unwrap();
            log.append(b, &h, 0, 0).unwrap();
        }
        assert!(log.segment_count() > 1);
        drop(log); // no close: an unclean shutdown
        let log = Log::open(dir.path(), cfg, false, 0).unwrap();
        let p5 = log.producers().get(5).unwrap();
        // Epoch 1 replaced epoch 0's batches.
        assert_eq!(p5.epoch, 1);
        assert_eq!(p5.batches.len(), 2);
        assert_eq!(log.producers().get(9).unwrap().batches[0].base_offset, 2);
        let retry = validate_batches(&batches[5], usize::MAX).unwrap()[0];
        assert_eq!(
            log.producers().check(&retry),
            Ok(SequenceCheck::Duplicate {
                base_offset: 8,
                last_offset: 9
            })
        );
        let stale = validate_batches(&batches[2], usize::MAX).unwrap()[0];
        assert!(log.producers().check(&stale).is_err());
    }

    #[test]
    fn producer_state_rebuild_walks_past_large_batches_and_chunk_edges() {
        use batch::tests::make_idempotent_batch;
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(&[]), true, 0).unwrap();
        // Small batches fill more than one 256 KiB read; a large batch (> 16 KiB) switches
        // to header-only reads; small batches after it switch back.
        let mut seq = 0;
        let mut sizes = vec![1; 4000];
        sizes.push(3000);
        sizes.extend([1, 1]);
        for n in sizes {
            let b = make_idempotent_batch(n, 3, 0, seq);
            seq += n as i32;
            let h = validate_batches(&b, usize::MAX).unwrap();
            log.append(&b, &h, 0, 0).unwrap();
        }
        assert!(log.size_bytes() > 300 * 1024);
        log.close(0).unwrap();
        let log = Log::open(dir.path(), config(&[]), true, 0).unwrap();
        let p = log.producers().get(3).unwrap();
        let firsts: Vec<i32> = p.batches.iter().map(|b| b.first_seq).collect();
        assert_eq!(firsts, vec![3998, 3999, 4000, 7000, 7001]);
        assert_eq!(
            p.batches.back().unwrap().last_offset,
            log.log_end_offset() - 1
        );
    }

    #[test]
    fn log_append_time_is_stamped() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(
            dir.path(),
            config(&[("message.timestamp.type", "LogAppendTime")]),
            true,
            0,
        )
        .unwrap();
        let b = make_batch(2, 10, Compression::Gzip);
        let h = validate_batches(&b, usize::MAX).unwrap();
        let info = log.append(&b, &h, 0, 5555).unwrap();
        assert_eq!(info.log_append_time_ms, 5555);
        let hs = read_all(&log, 0);
        assert_eq!(hs[0].max_timestamp, 5555);
    }

    /// Appends one idempotent batch of one record; returns its offset.
    fn append_idem(log: &mut Log, pid: i64, epoch: i16, seq: i32) -> i64 {
        let b = batch::tests::make_idempotent_batch(1, pid, epoch, seq);
        let h = validate_batches(&b, usize::MAX).unwrap();
        log.append(&b, &h, 0, 1_000).unwrap().base_offset
    }

    fn retry_of(pid: i64, epoch: i16, seq: i32) -> BatchHeader {
        let b = batch::tests::make_idempotent_batch(1, pid, epoch, seq);
        validate_batches(&b, usize::MAX).unwrap()[0]
    }

    fn snapshot_offsets(dir: &Path) -> Vec<i64> {
        let mut v: Vec<i64> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.strip_suffix(".snapshot")?.parse().ok()
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// Overwrites the producer id of every batch in the segment at `base` with -1 (the CRC
    /// is left stale; a clean open does not verify closed segments). A full header walk then
    /// finds no producers there, so state that survives came from a snapshot.
    fn strip_producer_ids(dir: &Path, base: i64) {
        let path = segment_path(dir, base);
        let mut data = std::fs::read(&path).unwrap();
        let mut pos = 0;
        while pos + HEADER_LEN <= data.len() {
            let total = BatchHeader::parse(&data[pos..]).unwrap().total_len();
            data[pos + batch::OFFSET_PRODUCER_ID..pos + batch::OFFSET_PRODUCER_ID + 8]
                .copy_from_slice(&(-1i64).to_be_bytes());
            pos += total;
        }
        std::fs::write(&path, &data).unwrap();
    }

    fn dup(offset: i64) -> crate::log::producer_state::SequenceCheck {
        crate::log::producer_state::SequenceCheck::Duplicate {
            base_offset: offset,
            last_offset: offset,
        }
    }

    #[test]
    fn snapshots_are_written_at_roll_and_close_and_a_clean_restart_reads_only_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&[("segment.bytes", "300")]);
        let mut log = Log::open(dir.path(), cfg.clone(), true, 0).unwrap();
        let mut last = 0;
        for seq in 0..12 {
            last = append_idem(&mut log, 1, 0, seq);
        }
        let p2 = append_idem(&mut log, 2, 3, 0);
        assert!(log.segment_count() > 3);
        // One snapshot per roll, at the new segment's base; only the newest two are kept.
        let active_base = *log.segment_bases().last().unwrap();
        let bases = log.segment_bases();
        assert_eq!(
            snapshot_offsets(dir.path()),
            vec![bases[bases.len() - 2], active_base]
        );
        log.close(0).unwrap();
        let leo = log.log_end_offset();
        assert_eq!(snapshot_offsets(dir.path()), vec![active_base, leo]);
        drop(log);
        for base in &bases {
            strip_producer_ids(dir.path(), *base);
        }
        let log = Log::open(dir.path(), cfg.clone(), true, 0).unwrap();
        assert_eq!(log.producers().check(&retry_of(1, 0, 11)), Ok(dup(last)));
        assert_eq!(log.producers().check(&retry_of(2, 3, 0)), Ok(dup(p2)));
        assert_eq!(log.producers().get(1).unwrap().batches.len(), 5);
        // Without the snapshots the stripped log holds no producers: the state above did
        // not come from the segments.
        drop(log);
        for o in snapshot_offsets(dir.path()) {
            std::fs::remove_file(dir.path().join(file_name(o, SNAPSHOT_EXT))).unwrap();
        }
        let log = Log::open(dir.path(), cfg, true, 0).unwrap();
        assert!(log.producers().is_empty());
    }

    #[test]
    fn a_crash_replays_only_the_tail_after_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&[("segment.bytes", "300")]);
        let mut log = Log::open(dir.path(), cfg.clone(), true, 0).unwrap();
        let old = append_idem(&mut log, 2, 0, 0);
        for seq in 0..6 {
            append_idem(&mut log, 1, 0, seq);
        }
        let snap = *snapshot_offsets(dir.path()).last().unwrap();
        assert_eq!(snap, log.active().base_offset);
        // The tail after the last roll: a batch of producer 1, a new epoch of producer 2.
        let tail1 = append_idem(&mut log, 1, 0, 6);
        let tail2 = append_idem(&mut log, 2, 1, 0);
        assert_eq!(log.active().base_offset, snap, "no roll in the tail");
        let closed: Vec<i64> = log
            .segment_bases()
            .into_iter()
            .filter(|b| *b < snap)
            .collect();
        drop(log); // a crash
        for base in closed {
            strip_producer_ids(dir.path(), base);
        }
        let log = Log::open(dir.path(), cfg, false, 0).unwrap();
        assert_eq!(log.producers().check(&retry_of(1, 0, 6)), Ok(dup(tail1)));
        assert_eq!(
            log.producers().check(&retry_of(1, 0, 5)),
            Ok(dup(tail1 - 1))
        );
        assert_eq!(log.producers().check(&retry_of(2, 1, 0)), Ok(dup(tail2)));
        assert!(
            log.producers().check(&retry_of(2, 0, 0)).is_err(),
            "epoch 0 ({old}) fenced"
        );
        assert_eq!(log.producers().get(1).unwrap().batches.len(), 5);
    }

    #[test]
    fn corrupt_snapshots_are_ignored_and_the_full_walk_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&[("segment.bytes", "300")]);
        let mut log = Log::open(dir.path(), cfg.clone(), true, 0).unwrap();
        let mut last = 0;
        for seq in 0..8 {
            last = append_idem(&mut log, 4, 0, seq);
        }
        log.close(0).unwrap();
        drop(log);
        let snaps = snapshot_offsets(dir.path());
        assert_eq!(snaps.len(), 2);
        // The newest flipped, the older truncated mid-entry.
        let newest = dir.path().join(file_name(snaps[1], SNAPSHOT_EXT));
        let mut data = std::fs::read(&newest).unwrap();
        let n = data.len();
        data[n - 1] ^= 1;
        std::fs::write(&newest, &data).unwrap();
        let older = dir.path().join(file_name(snaps[0], SNAPSHOT_EXT));
        let data = std::fs::read(&older).unwrap();
        std::fs::write(&older, &data[..data.len() - 3]).unwrap();
        let log = Log::open(dir.path(), cfg, true, 0).unwrap();
        assert_eq!(log.producers().check(&retry_of(4, 0, 7)), Ok(dup(last)));
        assert_eq!(log.producers().get(4).unwrap().batches.len(), 5);
        assert!(
            snapshot_offsets(dir.path()).is_empty(),
            "unusable snapshots removed"
        );
    }

    #[test]
    fn a_snapshot_beyond_a_truncated_tail_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&[("segment.bytes", "300")]);
        let mut log = Log::open(dir.path(), cfg.clone(), true, 0).unwrap();
        for seq in 0..4 {
            append_idem(&mut log, 1, 0, seq);
        }
        let kept = append_idem(&mut log, 1, 0, 4);
        let torn = append_idem(&mut log, 1, 0, 5);
        log.close(0).unwrap();
        let active = log.active().base_offset;
        assert!(active < torn, "the last batch is in the active segment");
        drop(log);
        assert_eq!(*snapshot_offsets(dir.path()).last().unwrap(), torn + 1);
        // The last batch's write was torn after all (a disk that lied about the fsync).
        let path = segment_path(dir.path(), active);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 5).unwrap();
        let log = Log::open(dir.path(), cfg, false, 0).unwrap();
        assert_eq!(log.log_end_offset(), torn);
        // The close snapshot (which knew the torn batch) is gone; the roll snapshot and the
        // replayed tail give the state as the log now holds it.
        assert_eq!(snapshot_offsets(dir.path()), vec![active]);
        assert_eq!(
            log.producers().check(&retry_of(1, 0, 5)),
            Ok(crate::log::producer_state::SequenceCheck::Append)
        );
        assert_eq!(log.producers().check(&retry_of(1, 0, 4)), Ok(dup(kept)));
    }

    #[test]
    fn retention_and_delete_records_keep_producers_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&[("segment.bytes", "300"), ("retention.bytes", "400")]);
        let mut log = Log::open(dir.path(), cfg.clone(), true, 0).unwrap();
        let gone = append_idem(&mut log, 7, 0, 0);
        for seq in 0..10 {
            append_idem(&mut log, 8, 0, seq);
        }
        let leo = log.log_end_offset();
        assert!(log.apply_retention(0, leo).unwrap() > 0);
        assert!(
            log.log_start_offset() > gone,
            "producer 7's only batch was deleted"
        );
        assert_eq!(log.producers().check(&retry_of(7, 0, 0)), Ok(dup(gone)));
        // A crash: the snapshot of the last roll still knows producer 7.
        drop(log);
        let mut log = Log::open(dir.path(), cfg.clone(), false, 0).unwrap();
        assert_eq!(log.producers().check(&retry_of(7, 0, 0)), Ok(dup(gone)));
        // DeleteRecords up to the end, then a clean restart.
        let last8 = log
            .producers()
            .get(8)
            .unwrap()
            .batches
            .back()
            .unwrap()
            .base_offset;
        let leo = log.log_end_offset();
        log.advance_log_start(leo, 0).unwrap();
        log.close(0).unwrap();
        drop(log);
        let log = Log::open(dir.path(), cfg, true, 0).unwrap();
        assert_eq!(log.producers().check(&retry_of(7, 0, 0)), Ok(dup(gone)));
        assert_eq!(log.producers().check(&retry_of(8, 0, 9)), Ok(dup(last8)));
    }
}

#[cfg(test)]
mod replication_tests {
    use super::batch::tests::make_batch;
    use super::batch::validate_batches;
    use super::epochs::EpochEntry;
    use super::*;
    use crate::config::BrokerConfig;
    use kafka_protocol::records::Compression;

    fn open(dir: &Path) -> Log {
        let cfg = LogConfig::resolve(&BrokerConfig::default(), &Default::default());
        Log::open(dir, cfg, true, 0).unwrap()
    }

    fn lead(log: &mut Log, records: usize, epoch: i32) {
        let b = make_batch(records, 50, Compression::None);
        let h = validate_batches(&b, usize::MAX).unwrap();
        log.append(&b, &h, epoch, 0).unwrap();
    }

    fn bytes_from(log: &Log, offset: i64) -> Bytes {
        match log.plan_read(offset).unwrap() {
            Some(plan) => plan.read(1 << 20, i64::MAX, true).unwrap(),
            None => Bytes::new(),
        }
    }

    #[test]
    fn a_follower_stores_the_leaders_batches_byte_for_byte_with_their_epochs() {
        let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut leader = open(ld.path());
        lead(&mut leader, 3, 1);
        lead(&mut leader, 2, 1);
        lead(&mut leader, 4, 3);
        let mut follower = open(fd.path());
        let data = bytes_from(&leader, 0);
        let headers = validate_batches(&data, usize::MAX).unwrap();
        let info = follower.append_replicated(&data, &headers, 0).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (0, 8));
        assert_eq!(bytes_from(&follower, 0), data, "never re-encoded");
        assert_eq!(follower.epochs().entries(), leader.epochs().entries());
        assert_eq!(
            leader.epochs().entries(),
            &[
                EpochEntry {
                    epoch: 1,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 3,
                    start_offset: 5
                }
            ]
        );
        // The same batches again (a retried fetch) are refused whole: nothing written.
        assert!(matches!(
            follower.append_replicated(&data, &headers, 0),
            Err(LogError::OutOfOrder {
                base_offset: 0,
                log_end_offset: 9
            })
        ));
        assert_eq!(follower.log_end_offset(), 9);
        assert_eq!(follower.end_offset_for_epoch(1), (1, 5));
        assert_eq!(follower.end_offset_for_epoch(2), (1, 5));
        assert_eq!(follower.end_offset_for_epoch(3), (3, 9));
    }

    #[test]
    fn truncation_and_restarts_keep_the_epoch_cache_in_step_with_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        lead(&mut log, 2, 0);
        lead(&mut log, 2, 2);
        lead(&mut log, 2, 4);
        log.truncate_to(4, 0).unwrap();
        assert_eq!(log.epochs().latest_epoch(), Some(2));
        log.close(0).unwrap();
        let mut log = open(dir.path());
        assert_eq!(log.end_offset_for_epoch(2), (2, 4));
        // A log from before the cache existed gets it rebuilt from its batch headers.
        log.close(0).unwrap();
        std::fs::remove_file(dir.path().join(epochs::CHECKPOINT_FILE)).unwrap();
        let mut log = open(dir.path());
        assert_eq!(
            log.epochs().entries(),
            &[
                EpochEntry {
                    epoch: 0,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 2,
                    start_offset: 2
                }
            ]
        );
        log.reset_to(10, 0).unwrap();
        assert_eq!(log.epochs().latest_epoch(), None);
    }
}
