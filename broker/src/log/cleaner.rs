//! Log compaction (`cleanup.policy=compact`): keep the last record of every key, drop
//! tombstones older than delete.retention.ms, never change an offset.
//!
//! Cleaning runs in three steps so that produce and fetch are blocked only for the swap:
//! 1. [`Log::plan_clean`] (under the partition lock) picks the closed, committed segments
//!    old enough for min.compaction.lag.ms and decides whether the dirty ratio (or
//!    max.compaction.lag.ms) calls for a clean;
//! 2. [`CleanPlan::run`] (no lock) builds the key → latest-offset map over the dirty part
//!    and rewrites groups of segments into `<base>.<end>.cleaned` files;
//! 3. [`Log::swap_cleaned`] (under the lock) renames each `.cleaned` file to `.swap`, moves
//!    the replaced segments aside and renames the swap into place. A crash at any point
//!    leaves either the old segments or a complete `.swap` that [`Log::open`] finishes.

use super::batch::{BatchHeader, HEADER_LEN};
use super::segment::{file_name, Segment};
use super::{sync_dir, Log, LogError, DELETED_SUFFIX};
use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the offset up to which the log is clean survives restarts.
const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
pub(super) const CLEANED_SUFFIX: &str = "cleaned";
pub(super) const SWAP_SUFFIX: &str = "swap";

/// Bytes of offset map per key beyond the key itself (offset, hash table overhead).
const MAP_ENTRY_OVERHEAD: usize = 48;

/// A closed segment as the cleaner sees it: immutable while the plan runs.
#[derive(Clone)]
struct SegmentSnapshot {
    base_offset: i64,
    next_offset: i64,
    size: u64,
    max_timestamp: i64,
    file: Arc<File>,
}

/// Work chosen under the lock and carried out without it.
pub struct CleanPlan {
    dir: PathBuf,
    segments: Vec<SegmentSnapshot>,
    first_dirty: i64,
    segment_bytes: u64,
    tombstone_horizon_ms: i64,
    map_budget_bytes: usize,
    /// The topic's `max.decompressed.message.bytes`.
    max_decompressed_bytes: usize,
}

/// Results of a clean, for metrics and the swap.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanStats {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    /// Batches that could not be decoded (damaged, or beyond the decompression bound):
    /// left out of the key map and copied to the cleaned segment unchanged.
    pub batches_skipped: u64,
}

/// A cleaned file and the base offset of its first batch.
type CleanedFile = (i64, PathBuf);

pub struct CleanOutput {
    /// (replaced segment bases, the cleaned file, if any record survived).
    groups: Vec<(Vec<i64>, Option<CleanedFile>)>,
    /// The log is clean up to here after the swap.
    clean_until: i64,
    pub stats: CleanStats,
    /// Whether tombstones were kept that a later clean may drop.
    pub kept_tombstones: bool,
}

impl Log {
    /// The offset up to which the log was cleaned (the start of its dirty part).
    fn cleaner_checkpoint(&self) -> i64 {
        std::fs::read_to_string(self.dir.join(CLEANER_CHECKPOINT_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
            .max(self.log_start_offset)
    }

    /// The dirty ratio (dirty bytes over cleanable bytes) of the cleanable segments.
    pub fn dirty_ratio(&self, now_ms: i64, high_watermark: i64) -> f64 {
        let (clean, dirty) = self.cleanable_bytes(now_ms, high_watermark);
        if clean + dirty == 0 {
            0.0
        } else {
            dirty as f64 / (clean + dirty) as f64
        }
    }

    fn cleanable_segments(&self, now_ms: i64, high_watermark: i64) -> Vec<&Segment> {
        let min_lag = self.config.min_compaction_lag_ms;
        self.segments
            .values()
            .rev()
            .skip(1) // the active segment is never cleaned
            .rev()
            .take_while(|s| {
                s.next_offset <= high_watermark && now_ms.saturating_sub(s.max_timestamp) >= min_lag
            })
            .collect()
    }

    fn cleanable_bytes(&self, now_ms: i64, high_watermark: i64) -> (u64, u64) {
        let first_dirty = self.cleaner_checkpoint();
        let mut clean = 0;
        let mut dirty = 0;
        for s in self.cleanable_segments(now_ms, high_watermark) {
            if s.next_offset <= first_dirty {
                clean += s.size;
            } else {
                dirty += s.size;
            }
        }
        (clean, dirty)
    }

    /// Chooses what to clean, if anything: the log must be compacted, and either its dirty
    /// ratio has reached min.cleanable.dirty.ratio, its oldest dirty record has waited
    /// max.compaction.lag.ms, or `force` is set (tombstones are due).
    pub fn plan_clean(
        &self,
        now_ms: i64,
        high_watermark: i64,
        force: bool,
        map_budget_bytes: usize,
    ) -> Option<CleanPlan> {
        if !self.config.compact {
            return None;
        }
        let segments = self.cleanable_segments(now_ms, high_watermark);
        let first_dirty = self.cleaner_checkpoint();
        let dirty: Vec<&&Segment> = segments
            .iter()
            .filter(|s| s.next_offset > first_dirty)
            .collect();
        let ratio = self.dirty_ratio(now_ms, high_watermark);
        let overdue = dirty.first().is_some_and(|s| {
            let oldest = s
                .time_index
                .first()
                .map_or(s.max_timestamp, |e| e.timestamp);
            now_ms.saturating_sub(oldest) >= self.config.max_compaction_lag_ms
        });
        let due = (!dirty.is_empty()
            && (ratio >= self.config.min_cleanable_dirty_ratio || overdue))
            || (force && !segments.is_empty());
        if !due {
            return None;
        }
        // Handles taken now, under the lock: the files stay readable while cleaning even if
        // retention deletes the segments meanwhile.
        let snapshots = segments
            .iter()
            .map(|s| {
                Ok(SegmentSnapshot {
                    base_offset: s.base_offset,
                    next_offset: s.next_offset,
                    size: s.size,
                    max_timestamp: s.max_timestamp,
                    file: s.handle()?,
                })
            })
            .collect::<std::io::Result<Vec<_>>>();
        let snapshots = match snapshots {
            Ok(snapshots) => snapshots,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), cause = %e, "cannot open a segment to clean; cleaning later");
                return None;
            }
        };
        Some(CleanPlan {
            dir: self.dir.clone(),
            segments: snapshots,
            first_dirty,
            segment_bytes: self.config.segment_bytes,
            tombstone_horizon_ms: now_ms.saturating_sub(self.config.delete_retention_ms),
            map_budget_bytes,
            max_decompressed_bytes: self.config.max_decompressed_bytes,
        })
    }

    /// Swaps cleaned segments in. If a segment the plan replaced is gone (retention or
    /// DeleteRecords ran meanwhile) the cleaned files are discarded and nothing changes.
    pub fn swap_cleaned(&mut self, output: CleanOutput, now_ms: i64) -> Result<(), LogError> {
        let all_present = output
            .groups
            .iter()
            .flat_map(|(bases, _)| bases)
            .all(|b| self.segments.contains_key(b));
        if !all_present {
            for (_, cleaned) in &output.groups {
                if let Some((_, path)) = cleaned {
                    let _ = std::fs::remove_file(path);
                }
            }
            return Ok(());
        }
        for (bases, cleaned) in output.groups {
            let end = bases
                .last()
                .and_then(|b| self.segments.get(b))
                .map_or(0, |s| s.next_offset);
            // 1. The cleaned file becomes the swap: from here on recovery completes the swap.
            let swap = match &cleaned {
                Some((base, path)) => {
                    let swap = self.dir.join(swap_name(*base, end));
                    std::fs::rename(path, &swap)?;
                    sync_dir(&self.dir)?;
                    Some((*base, swap))
                }
                None => None,
            };
            // 2. The replaced segments move aside (deleted after file.delete.delay.ms).
            for b in &bases {
                if let Some(seg) = self.segments.remove(b) {
                    let renamed = seg.rename_for_deletion(DELETED_SUFFIX)?;
                    self.pending_deletes.push((
                        now_ms.saturating_add(self.config.file_delete_delay_ms),
                        renamed,
                    ));
                }
            }
            // 3. The swap takes the segment's name.
            if let Some((base, swap)) = swap {
                std::fs::rename(&swap, self.dir.join(file_name(base, "log")))?;
                sync_dir(&self.dir)?;
                let seg = Segment::open(
                    &self.dir,
                    base,
                    true,
                    false,
                    self.config.index_interval_bytes,
                    now_ms,
                )?;
                seg.write_indexes()?;
                self.segments.insert(base, seg);
            }
        }
        super::segment::write_atomically(
            &self.dir.join(CLEANER_CHECKPOINT_FILE),
            output.clean_until.to_string().as_bytes(),
        )?;
        Ok(())
    }
}

fn swap_name(base: i64, end: i64) -> String {
    format!("{base:020}.{end:020}.{SWAP_SUFFIX}")
}

fn cleaned_name(base: i64, end: i64) -> String {
    format!("{base:020}.{end:020}.{CLEANED_SUFFIX}")
}

/// Finishes or discards cleaning interrupted by a crash, before the log's segments are
/// opened: `.cleaned` files are incomplete and removed; a `.swap` file is complete, so the
/// segments it replaces are removed and it takes its place.
pub(super) fn recover_interrupted_clean(dir: &Path) -> io::Result<()> {
    let mut swaps = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(&format!(".{CLEANED_SUFFIX}")) {
            std::fs::remove_file(dir.join(&name))?;
        } else if let Some(stem) = name.strip_suffix(&format!(".{SWAP_SUFFIX}")) {
            if let Some((base, end)) = stem.split_once('.') {
                if let (Ok(base), Ok(end)) = (base.parse::<i64>(), end.parse::<i64>()) {
                    swaps.push((base, end, name.clone()));
                }
            }
        }
    }
    for (base, end, name) in swaps {
        for entry in std::fs::read_dir(dir)? {
            let n = entry?.file_name().to_string_lossy().into_owned();
            let seg_base = ["log", "index", "timeindex"]
                .iter()
                .find_map(|ext| n.strip_suffix(&format!(".{ext}")))
                .and_then(|stem| stem.parse::<i64>().ok());
            if let Some(b) = seg_base {
                if b >= base && b < end {
                    std::fs::remove_file(dir.join(&n))?;
                }
            }
        }
        std::fs::rename(dir.join(&name), dir.join(file_name(base, "log")))?;
        sync_dir(dir)?;
        tracing::info!(dir = %dir.display(), base, end, "completed a segment swap interrupted by a crash");
    }
    Ok(())
}

/// Holds a cleaner thread to log.cleaner.io.max.bytes.per.second by sleeping once it is
/// ahead of the allowed rate.
pub struct Throttle {
    bytes_per_second: f64,
    started: std::time::Instant,
    bytes: f64,
}

impl Throttle {
    pub fn new(bytes_per_second: f64) -> Self {
        Throttle {
            bytes_per_second,
            started: std::time::Instant::now(),
            bytes: 0.0,
        }
    }

    fn consumed(&mut self, n: usize) {
        self.bytes += n as f64;
        let due =
            std::time::Duration::from_secs_f64((self.bytes / self.bytes_per_second).min(3600.0));
        let elapsed = self.started.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

/// Reads the batches of one segment, one at a time.
fn for_each_batch(
    seg: &SegmentSnapshot,
    mut f: impl FnMut(BatchHeader, Bytes) -> Result<(), LogError>,
) -> Result<u64, LogError> {
    let mut pos = 0u64;
    let mut header = [0u8; HEADER_LEN];
    while pos + HEADER_LEN as u64 <= seg.size {
        seg.file.read_exact_at(&mut header, pos)?;
        let h = BatchHeader::parse(&header).expect("full header");
        let mut buf = vec![0u8; h.total_len()];
        seg.file.read_exact_at(&mut buf, pos)?;
        pos += h.total_len() as u64;
        f(h, Bytes::from(buf))?;
    }
    Ok(pos)
}

/// Decodes a stored batch within the decompression bound; `None` (logged) when it cannot be,
/// so the cleaner skips it instead of failing the whole clean, or crashing on a bomb.
fn decode(
    dir: &Path,
    h: &BatchHeader,
    batch: Bytes,
    limit: usize,
) -> Option<(Compression, Vec<Record>)> {
    match super::codec::decode_batch(batch, limit) {
        Ok(set) => Some((set.compression, set.records)),
        Err(e) => {
            tracing::error!(dir = %dir.display(), base_offset = h.base_offset, cause = %e, "the log cleaner skips a batch it cannot decode; it is kept as it is");
            None
        }
    }
}

impl CleanPlan {
    /// Builds the offset map over the dirty segments and writes the cleaned files.
    pub fn run(self, throttle: &mut Throttle) -> Result<CleanOutput, LogError> {
        let mut stats = CleanStats::default();
        // Key → offset of its latest record, over the dirty part.
        let mut latest: HashMap<Bytes, i64> = HashMap::new();
        let mut map_bytes = 0usize;
        let mut clean_until = self.first_dirty;
        let mut skipped = 0u64;
        for seg in self
            .segments
            .iter()
            .filter(|s| s.next_offset > self.first_dirty)
        {
            // Stop when the map is full, after the batch that filled it (even inside a
            // segment): the dedupe buffer bounds the map whatever the segment size, and the
            // rest stays dirty for the next clean. Records from there on are kept as they are.
            if map_bytes > self.map_budget_bytes {
                break;
            }
            let mut mapped_until = clean_until;
            let mut full = false;
            stats.bytes_read += for_each_batch(seg, |h, batch| {
                // Batches below the checkpoint (a clean that stopped inside this segment)
                // are clean already: not mapped again, so every clean makes progress.
                if full || h.next_offset() <= self.first_dirty {
                    return Ok(());
                }
                throttle.consumed(batch.len());
                mapped_until = h.next_offset();
                let Some((_, records)) = decode(&self.dir, &h, batch, self.max_decompressed_bytes)
                else {
                    skipped += 1;
                    return Ok(());
                };
                for r in records {
                    if let Some(k) = r.key {
                        map_bytes += k.len() + MAP_ENTRY_OVERHEAD;
                        // Copied: a slice would keep the whole decompressed batch alive in
                        // the map, and the map's memory would follow the decompressed log.
                        latest.insert(Bytes::copy_from_slice(&k), r.offset);
                    }
                }
                full = map_bytes > self.map_budget_bytes;
                Ok(())
            })?;
            if full && mapped_until < seg.next_offset {
                clean_until = mapped_until;
                break;
            }
            clean_until = seg.next_offset;
        }
        stats.batches_skipped = skipped;
        let mut groups = Vec::new();
        let mut kept_tombstones = false;
        // Group consecutive segments so a group's cleaned size stays within segment.bytes:
        // small cleaned segments merge.
        let mut group: Vec<&SegmentSnapshot> = Vec::new();
        let mut group_bytes = 0u64;
        let cleanable: Vec<&SegmentSnapshot> = self
            .segments
            .iter()
            .filter(|s| s.base_offset < clean_until)
            .collect();
        let mut flush_group = |group: &mut Vec<&SegmentSnapshot>,
                               stats: &mut CleanStats,
                               kept: &mut bool|
         -> Result<(), LogError> {
            if group.is_empty() {
                return Ok(());
            }
            let out = self.rewrite(group, &latest, clean_until, stats, kept, throttle)?;
            groups.push((group.iter().map(|s| s.base_offset).collect(), out));
            group.clear();
            Ok(())
        };
        for seg in cleanable {
            if !group.is_empty() && group_bytes + seg.size > self.segment_bytes {
                flush_group(&mut group, &mut stats, &mut kept_tombstones)?;
                group_bytes = 0;
            }
            group_bytes += seg.size;
            group.push(seg);
        }
        flush_group(&mut group, &mut stats, &mut kept_tombstones)?;
        Ok(CleanOutput {
            groups,
            clean_until,
            stats,
            kept_tombstones,
        })
    }

    /// Rewrites a group of segments into one cleaned file, keeping each batch's
    /// compression and every surviving record's offset and timestamp.
    fn rewrite(
        &self,
        group: &[&SegmentSnapshot],
        latest: &HashMap<Bytes, i64>,
        clean_until: i64,
        stats: &mut CleanStats,
        kept_tombstones: &mut bool,
        throttle: &mut Throttle,
    ) -> Result<Option<CleanedFile>, LogError> {
        let end = group.last().map_or(0, |s| s.next_offset);
        let mut out: Option<(i64, PathBuf, File)> = None;
        for seg in group {
            stats.bytes_read += seg.size;
            let tombstone_expired = seg.max_timestamp < self.tombstone_horizon_ms;
            for_each_batch(seg, |h, batch| {
                throttle.consumed(batch.len());
                let Some((compression, records)) =
                    decode(&self.dir, &h, batch.clone(), self.max_decompressed_bytes)
                else {
                    // Never drop what cannot be read: the batch goes on as it is.
                    if out.is_none() {
                        let path = self.dir.join(cleaned_name(h.base_offset, end));
                        out = Some((h.base_offset, path.clone(), File::create(&path)?));
                    }
                    if let Some((_, _, file)) = &mut out {
                        file.write_all(&batch)?;
                        stats.bytes_written += batch.len() as u64;
                    }
                    return Ok(());
                };
                let total = records.len();
                let kept: Vec<Record> = records
                    .into_iter()
                    .filter(|r| {
                        if r.offset >= clean_until {
                            // Past the map (it filled up inside this segment): still dirty.
                            return true;
                        }
                        let Some(k) = &r.key else { return false };
                        let is_latest = latest.get(k).is_none_or(|o| *o <= r.offset);
                        if !is_latest {
                            return false;
                        }
                        if r.value.is_none() {
                            if tombstone_expired {
                                return false;
                            }
                            *kept_tombstones = true;
                        }
                        true
                    })
                    .collect();
                stats.records_removed += (total - kept.len()) as u64;
                if kept.is_empty() {
                    return Ok(());
                }
                let mut buf = BytesMut::new();
                let kept: Vec<Record> = kept
                    .into_iter()
                    .map(|mut r| {
                        // kafka-protocol starts a new batch when offset - sequence changes.
                        r.sequence = r.offset as i32;
                        r.partition_leader_epoch = h.partition_leader_epoch;
                        r
                    })
                    .collect();
                RecordBatchEncoder::encode(
                    &mut buf,
                    kept.iter(),
                    &RecordEncodeOptions {
                        version: 2,
                        compression,
                    },
                )
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                if out.is_none() {
                    let base = kept[0].offset;
                    let path = self.dir.join(cleaned_name(base, end));
                    let file = File::create(&path)?;
                    out = Some((base, path, file));
                }
                if let Some((_, _, file)) = &mut out {
                    file.write_all(&buf)?;
                    stats.bytes_written += buf.len() as u64;
                }
                Ok(())
            })?;
        }
        match out {
            Some((base, path, file)) => {
                file.sync_all()?;
                Ok(Some((base, path)))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BrokerConfig, LogConfig};
    use crate::log::batch::validate_batches;
    use kafka_protocol::records::RecordBatchDecoder;

    const T0: i64 = 1_700_000_000_000;

    fn config(overrides: &[(&str, &str)]) -> LogConfig {
        let mut o: std::collections::BTreeMap<String, String> = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        o.entry("cleanup.policy".into()).or_insert("compact".into());
        o.entry("segment.bytes".into()).or_insert("1500".into());
        LogConfig::resolve(&BrokerConfig::default(), &o)
    }

    fn keyed_batch(
        records: &[(String, Option<String>)],
        ts: i64,
        compression: Compression,
    ) -> Bytes {
        let recs: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (k, v))| {
                crate::log::batch::plain_record(
                    i as i64,
                    ts,
                    Some(Bytes::from(k.clone())),
                    v.clone().map(Bytes::from),
                )
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            recs.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    fn append(
        log: &mut Log,
        records: &[(String, Option<String>)],
        ts: i64,
        compression: Compression,
    ) {
        let b = keyed_batch(records, ts, compression);
        let h = validate_batches(&b, usize::MAX).unwrap();
        log.append(&b, &h, 0, ts).unwrap();
    }

    /// Every record of the log: (offset, key, value).
    fn contents(log: &Log) -> Vec<(i64, String, Option<String>)> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while let Some(plan) = log.plan_read(offset).unwrap() {
            let data = plan.read(usize::MAX, i64::MAX, true).unwrap();
            if data.is_empty() {
                break;
            }
            let mut buf = data;
            while !buf.is_empty() {
                let set = RecordBatchDecoder::decode(&mut buf).unwrap();
                for r in set.records {
                    offset = r.offset + 1;
                    out.push((
                        r.offset,
                        String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                        r.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                    ));
                }
            }
        }
        out
    }

    /// 20 keys updated 10 times each, 4 records a batch, with the given codec.
    fn fill(log: &mut Log, compression: Compression) {
        for round in 0..10 {
            for chunk in 0..5 {
                let recs: Vec<_> = (0..4)
                    .map(|i| {
                        (
                            format!("key-{}", chunk * 4 + i),
                            Some(format!("v{round}-{}", chunk * 4 + i)),
                        )
                    })
                    .collect();
                append(log, &recs, T0, compression);
            }
        }
    }

    fn clean(log: &mut Log, now: i64, force: bool) -> Option<CleanStats> {
        let hw = log.log_end_offset();
        let plan = log.plan_clean(now, hw, force, usize::MAX)?;
        let out = plan.run(&mut Throttle::new(f64::MAX)).unwrap();
        let stats = out.stats.clone();
        log.swap_cleaned(out, now).unwrap();
        Some(stats)
    }

    #[test]
    fn compaction_keeps_the_latest_value_per_key_at_its_offset() {
        for compression in [Compression::None, Compression::Gzip, Compression::Lz4] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(dir.path(), config(&[]), true, T0).unwrap();
            fill(&mut log, compression);
            let before = contents(&log);
            let segments_before = log.segment_count();
            let stats = clean(&mut log, T0 + 1, false).expect("a dirty log is cleaned");
            assert!(stats.records_removed > 0);
            let after = contents(&log);
            // Offsets never change: every surviving record is the one at its offset before.
            for rec in &after {
                assert!(before.contains(rec), "{rec:?} is not an original record");
            }
            // The latest value of every key survives.
            for k in 0..20 {
                let key = format!("key-{k}");
                let last = before.iter().rev().find(|r| r.1 == key).unwrap();
                assert!(after.contains(last), "lost the latest {key}");
            }
            assert!(
                after.len() < before.len() / 2,
                "{} of {}",
                after.len(),
                before.len()
            );
            assert!(
                log.segment_count() < segments_before,
                "small cleaned segments merge"
            );
            assert_eq!(log.log_end_offset(), 200);
            // Clean again with nothing new: not due.
            assert!(clean(&mut log, T0 + 2, false).is_none());
            // Reopen: the swapped segments are whole.
            drop(log);
            let log = Log::open(dir.path(), config(&[]), false, T0).unwrap();
            assert_eq!(contents(&log), after);
        }
    }

    #[test]
    fn a_map_that_fills_inside_a_segment_cleans_up_to_there_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // One large dirty segment of many batches.
        let mut log = Log::open(
            dir.path(),
            config(&[("segment.bytes", "1000000")]),
            true,
            T0,
        )
        .unwrap();
        fill(&mut log, Compression::None);
        log.roll(T0).unwrap();
        append(
            &mut log,
            &[("end".to_string(), Some("x".to_string()))],
            T0,
            Compression::None,
        );
        let before = contents(&log);
        let hw = log.log_end_offset();
        // A map budget that one batch fills: every clean covers one more batch.
        let mut cleans = 0;
        while let Some(plan) = log.plan_clean(T0 + 1, hw, cleans == 0, 1) {
            let out = plan.run(&mut Throttle::new(f64::MAX)).unwrap();
            log.swap_cleaned(out, T0 + 1).unwrap();
            cleans += 1;
            let now = contents(&log);
            for rec in &now {
                assert!(before.contains(rec), "{rec:?} is not an original record");
            }
            for k in 0..20 {
                let key = format!("key-{k}");
                let last = before.iter().rev().find(|r| r.1 == key).unwrap();
                assert!(
                    now.contains(last),
                    "lost the latest {key} after {cleans} cleans"
                );
            }
            assert!(cleans < 200, "the cleaner does not progress");
        }
        assert!(cleans > 1, "the map should fill more than once");
        assert!(contents(&log).len() < before.len());
    }

    #[test]
    fn a_cleaned_batch_with_offset_gaps_survives_the_swap_and_a_restart() {
        let kv = |k: &str, v: &str| (k.to_string(), Some(v.to_string()));
        for compression in [Compression::None, Compression::Zstd] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(dir.path(), config(&[]), true, T0).unwrap();
            // Offsets 0..3 hold a, b, c; b is overwritten later, so the cleaned batch keeps
            // a and c: two records over an offset range of three.
            append(
                &mut log,
                &[kv("a", "1"), kv("b", "1"), kv("c", "1")],
                T0,
                compression,
            );
            append(&mut log, &[kv("b", "2")], T0, compression);
            log.roll(T0).unwrap();
            append(&mut log, &[kv("z", "1")], T0, compression);
            clean(&mut log, T0 + 1, true).expect("cleaned");
            let expected = vec![
                (0, "a".to_string(), Some("1".to_string())),
                (2, "c".to_string(), Some("1".to_string())),
                (3, "b".to_string(), Some("2".to_string())),
                (4, "z".to_string(), Some("1".to_string())),
            ];
            assert_eq!(contents(&log), expected, "{compression:?}");
            drop(log);
            for clean_start in [true, false] {
                let log = Log::open(dir.path(), config(&[]), clean_start, T0).unwrap();
                assert_eq!(contents(&log), expected, "{compression:?} after a restart");
            }
        }
    }

    #[test]
    fn tombstones_stay_for_delete_retention_then_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(
            dir.path(),
            config(&[("delete.retention.ms", "1000")]),
            true,
            T0,
        )
        .unwrap();
        fill(&mut log, Compression::None);
        append(
            &mut log,
            &[("key-3".into(), None), ("key-4".into(), None)],
            T0,
            Compression::None,
        );
        fill(&mut log, Compression::None);
        append(
            &mut log,
            &[("key-5".into(), None)],
            T0 + 5000,
            Compression::None,
        );
        // Roll so the tombstone's segment is closed.
        log.roll(T0 + 5000).unwrap();
        append(
            &mut log,
            &[("other".into(), Some("x".into()))],
            T0 + 5000,
            Compression::None,
        );
        clean(&mut log, T0 + 5000, false).unwrap();
        let keys: Vec<_> = contents(&log)
            .into_iter()
            .filter(|r| r.2.is_none())
            .map(|r| r.1)
            .collect();
        assert_eq!(
            keys,
            vec!["key-5".to_string()],
            "only the young tombstone stays"
        );
        // key-3 was written again after its tombstone: only that newer value remains.
        let key3: Vec<_> = contents(&log)
            .into_iter()
            .filter(|r| r.1 == "key-3")
            .collect();
        assert_eq!(key3.len(), 1);
        assert_eq!(key3[0].2.as_deref(), Some("v9-3"));
        // Later, forced by the tombstone deadline, the young one goes too.
        clean(&mut log, T0 + 7000, true).unwrap();
        assert!(contents(&log).iter().all(|r| r.1 != "key-5"));
    }

    /// The cleaner's choice of work, with time injected: the dirty ratio threshold,
    /// min.compaction.lag.ms holding back young segments, max.compaction.lag.ms forcing an
    /// old dirty segment, the high watermark, and non-compacted topics.
    #[test]
    fn the_cleaner_chooses_work_by_ratio_lag_and_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(
            dir.path(),
            config(&[("min.cleanable.dirty.ratio", "0.5")]),
            true,
            T0,
        )
        .unwrap();
        fill(&mut log, Compression::None);
        let hw = log.log_end_offset();
        assert!(log.dirty_ratio(T0, hw) > 0.99, "never cleaned: all dirty");
        assert!(log.plan_clean(T0, hw, false, usize::MAX).is_some());
        // Nothing committed: nothing cleanable.
        assert!(log.plan_clean(T0, 0, false, usize::MAX).is_none());
        // Records younger than min.compaction.lag.ms are not cleanable.
        log.set_config(config(&[("min.compaction.lag.ms", "60000")]));
        assert!(log.plan_clean(T0 + 59_999, hw, false, usize::MAX).is_none());
        assert!(log.plan_clean(T0 + 60_000, hw, false, usize::MAX).is_some());
        // After a clean the ratio is 0; new writes are below a 0.9 threshold...
        log.set_config(config(&[("min.cleanable.dirty.ratio", "0.9")]));
        clean(&mut log, T0 + 1, false).unwrap();
        assert_eq!(log.dirty_ratio(T0 + 1, log.log_end_offset()), 0.0);
        for _ in 0..3 {
            append(
                &mut log,
                &[("key-1".into(), Some("x".repeat(500)))],
                T0 + 10,
                Compression::None,
            );
        }
        log.roll(T0 + 10).unwrap();
        let hw = log.log_end_offset();
        let ratio = log.dirty_ratio(T0 + 20, hw);
        assert!(ratio > 0.0 && ratio < 0.9, "{ratio}");
        assert!(log.plan_clean(T0 + 20, hw, false, usize::MAX).is_none());
        // ...until max.compaction.lag.ms says the oldest dirty record waited long enough.
        log.set_config(config(&[
            ("min.cleanable.dirty.ratio", "0.9"),
            ("max.compaction.lag.ms", "1000"),
        ]));
        assert!(log.plan_clean(T0 + 500, hw, false, usize::MAX).is_none());
        assert!(log.plan_clean(T0 + 1010, hw, false, usize::MAX).is_some());
        // A topic that is not compacted is never cleaned.
        log.set_config(config(&[("cleanup.policy", "delete")]));
        assert!(log.plan_clean(T0 + 5000, hw, true, usize::MAX).is_none());
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Crashes at each step of the swap and checks that reopening gives a whole log with the
    /// same latest values.
    #[test]
    fn a_crash_at_any_step_of_the_swap_recovers() {
        for step in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(dir.path(), config(&[]), true, T0).unwrap();
            fill(&mut log, Compression::None);
            let before = contents(&log);
            let hw = log.log_end_offset();
            let plan = log.plan_clean(T0 + 1, hw, false, usize::MAX).unwrap();
            let out = plan.run(&mut Throttle::new(f64::MAX)).unwrap();
            let (bases, cleaned) = out
                .groups
                .iter()
                .find(|(_, c)| c.is_some())
                .cloned()
                .expect("some group keeps records");
            let (base, cleaned_path) = cleaned.unwrap();
            let end = log.segments[bases.last().unwrap()].next_offset;
            drop(log);
            match step {
                // Crash before the rename to .swap: the cleaned file is discarded.
                0 => {}
                // Crash after the rename to .swap, before the old segments moved.
                1 => std::fs::rename(&cleaned_path, dir.path().join(swap_name(base, end))).unwrap(),
                // Crash after the first old segment was removed.
                _ => {
                    std::fs::rename(&cleaned_path, dir.path().join(swap_name(base, end))).unwrap();
                    std::fs::remove_file(dir.path().join(file_name(bases[0], "log"))).unwrap();
                }
            }
            let log = Log::open(dir.path(), config(&[]), false, T0).unwrap();
            let after = contents(&log);
            assert!(
                !names(dir.path())
                    .iter()
                    .any(|n| n.ends_with(".swap") || n.ends_with(".cleaned")),
                "step {step}: {:?}",
                names(dir.path())
            );
            for k in 0..20 {
                let key = format!("key-{k}");
                let last = before.iter().rev().find(|r| r.1 == key).unwrap();
                assert!(after.contains(last), "step {step}: lost the latest {key}");
            }
            for rec in &after {
                assert!(before.contains(rec), "step {step}: {rec:?}");
            }
            let offsets: Vec<i64> = after.iter().map(|r| r.0).collect();
            assert!(
                offsets.windows(2).all(|w| w[0] < w[1]),
                "step {step}: offsets out of order"
            );
            assert_eq!(log.log_end_offset(), 200, "step {step}");
        }
    }
}
