//! A voter's durable Raft state in `__cluster_metadata-0`: the metadata log itself (one
//! Kafka record batch per Raft entry, at offset `index - 1`, the batch's partition leader
//! epoch holding the entry's term, the record's value the entry's data), the hard state
//! (`quorum-state`: term, vote, commit) and image snapshots
//! (`<20-digit offset>-<10-digit epoch>.checkpoint`, as Kafka names them). Every write is
//! fsynced before it returns, so a vote or an acknowledged entry survives kill -9.
//!
//! Raft reads through [`raft::Storage`], served from memory (the metadata log is small and
//! bounded by snapshots); the files are the truth at start.

use crate::config::{BrokerConfig, LogConfig};
use crate::log::batch::{plain_record, validate_batches, BatchHeader, HEADER_LEN};
use crate::log::segment::write_atomically;
use crate::log::{sync_dir, Log};
use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub const QUORUM_STATE_FILE: &str = "quorum-state";

/// Space held back for the metadata log: a voter on a full disk releases it and keeps its
/// quorum going (a restart on a full disk must still vote and append the new leader's
/// entry), instead of stopping. Recreated at start whenever there is room.
const RESERVE_FILE: &str = "space.reserve";
const RESERVE_BYTES: usize = 1024 * 1024;
const CHECKPOINT_EXT: &str = ".checkpoint";

/// Why the durable state could not be read or written. Reading failures refuse the start:
/// continuing with a truncated metadata log would serve an image that forgot topics.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata log i/o failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata log: {0}")]
    Log(#[from] crate::log::LogError),
    #[error("{file}: {reason}")]
    Corrupt { file: String, reason: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct QuorumStateFile {
    term: u64,
    #[serde(rename = "votedId")]
    voted_id: u64,
    commit: u64,
}

/// The in-memory copy Raft reads, kept equal to the files.
struct Core {
    hard_state: HardState,
    conf_state: ConfState,
    /// The newest snapshot: its metadata, and as data the checkpoint file's bytes.
    snapshot: Snapshot,
    /// Entries after the snapshot: `entries[k].index == snapshot index + 1 + k`.
    entries: Vec<Entry>,
}

impl StoreError {
    fn is_out_of_space(&self) -> bool {
        let io = match self {
            StoreError::Io(e) => e,
            StoreError::Log(crate::log::LogError::Io(e)) => e,
            _ => return false,
        };
        io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28)
    }
}

/// Creates the reserve file if it is missing and there is room for it.
fn ensure_reserve(dir: &Path) {
    let path = dir.join(RESERVE_FILE);
    if path.exists() {
        return;
    }
    if let Err(e) = write_atomically(&path, &vec![0u8; RESERVE_BYTES]).and_then(|()| sync_dir(dir))
    {
        tracing::warn!(cause = %e, dir = %dir.display(), "no room to reserve space for the metadata log");
        let _ = std::fs::remove_file(path.with_extension("reserve.tmp"));
    }
}

impl Core {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }
    fn first_index(&self) -> u64 {
        self.snapshot_index() + 1
    }
    fn last_index(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }
}

/// The durable state, shared between the Raft driver (which writes) and Raft's reads.
#[derive(Clone)]
pub struct RaftStore {
    dir: PathBuf,
    core: Arc<RwLock<Core>>,
    files: Arc<std::sync::Mutex<Files>>,
}

struct Files {
    dir: PathBuf,
    log: Log,
}

impl RaftStore {
    /// Opens the state in `dir` for a quorum of `voters`. Returns the store and the data of
    /// the snapshot it starts from (empty when there is none).
    pub fn open(dir: &Path, voters: &[u64], clean: bool, now_ms: i64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        // Before recovery may cut the active segment at a bad batch: that is right for a
        // torn last write, but damage with acknowledged entries after it must refuse the
        // start instead of silently forgetting them.
        check_segments(dir)?;
        let mut overrides = BTreeMap::new();
        overrides.insert("segment.bytes".to_string(), (64 * 1024 * 1024).to_string());
        overrides.insert("retention.ms".to_string(), "-1".to_string());
        let log_config = LogConfig::resolve(&BrokerConfig::default(), &overrides);
        let mut log = Log::open(dir, log_config, clean, now_ms)?;

        let conf_state = ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        };
        let mut snapshot = Snapshot::default();
        if let Some((index, term, path)) = newest_checkpoint(dir)? {
            let data = std::fs::read(&path)?;
            // A checkpoint is written whole through a rename, so one that does not parse is
            // damage, not a torn write.
            crate::metadata::image::MetadataImage::from_checkpoint(&data).map_err(|e| {
                StoreError::Corrupt {
                    file: path.display().to_string(),
                    reason: format!("unreadable snapshot: {e}"),
                }
            })?;
            snapshot.data = Bytes::from(data);
            let meta = snapshot.mut_metadata();
            meta.index = index;
            meta.term = term;
            meta.set_conf_state(conf_state.clone());
        }
        let snapshot_index = snapshot.get_metadata().index;
        let entries = read_entries(&log, dir, snapshot_index)?;
        // Entries the snapshot already covers were left behind by a crash between writing
        // the checkpoint and advancing the log start: finish that now.
        if (log.log_start_offset() as u64) < snapshot_index {
            log.advance_log_start(snapshot_index as i64, now_ms)?;
        }
        let hard_state = match std::fs::read(dir.join(QUORUM_STATE_FILE)) {
            Ok(data) => {
                let q: QuorumStateFile =
                    serde_json::from_slice(&data).map_err(|e| StoreError::Corrupt {
                        file: dir.join(QUORUM_STATE_FILE).display().to_string(),
                        reason: e.to_string(),
                    })?;
                HardState {
                    term: q.term,
                    vote: q.voted_id,
                    commit: q.commit,
                    ..Default::default()
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HardState::default(),
            Err(e) => return Err(e.into()),
        };
        let mut hard_state = hard_state;
        let last = snapshot_index + entries.len() as u64;
        // The commit index is written lazily; it can never exceed what the log holds.
        hard_state.commit = hard_state
            .commit
            .clamp(snapshot_index, last.max(snapshot_index));
        let core = Core {
            hard_state,
            conf_state,
            snapshot,
            entries,
        };
        ensure_reserve(dir);
        Ok(RaftStore {
            dir: dir.to_owned(),
            core: Arc::new(RwLock::new(core)),
            files: Arc::new(std::sync::Mutex::new(Files {
                dir: dir.to_owned(),
                log,
            })),
        })
    }

    /// Runs a write; when it fails for want of space and the reserve is still there, the
    /// reserve is released and the write tried once more.
    fn with_reserve<T>(
        &self,
        mut op: impl FnMut() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match op() {
            Err(e) if e.is_out_of_space() && self.release_reserve() => op(),
            other => other,
        }
    }

    fn release_reserve(&self) -> bool {
        let path = self.dir.join(RESERVE_FILE);
        if std::fs::remove_file(&path).is_err() {
            return false;
        }
        let _ = sync_dir(&self.dir);
        tracing::error!(dir = %self.dir.display(), "the metadata log's disk is full: released the space reserved for it so the quorum goes on; free space on this disk");
        true
    }

    /// Persists new entries (replacing any conflicting suffix) and fsyncs them.
    pub fn append(&self, entries: &[Entry], now_ms: i64) -> Result<(), StoreError> {
        self.with_reserve(|| self.append_once(entries, now_ms))
    }

    /// Persists the hard state (term, vote, commit) with fsync, file and directory.
    pub fn set_hard_state(&self, hs: &HardState) -> Result<(), StoreError> {
        self.with_reserve(|| self.set_hard_state_once(hs))
    }

    /// Installs a snapshot received from the leader.
    pub fn apply_snapshot(&self, snapshot: &Snapshot, now_ms: i64) -> Result<(), StoreError> {
        self.with_reserve(|| self.apply_snapshot_once(snapshot, now_ms))
    }

    /// Takes a local snapshot at `index` and drops the log before it.
    pub fn compact(&self, index: u64, data: Bytes, now_ms: i64) -> Result<(), StoreError> {
        self.with_reserve(|| self.compact_once(index, data.clone(), now_ms))
    }

    fn core(&self) -> std::sync::RwLockReadGuard<'_, Core> {
        self.core.read().expect("raft store lock")
    }

    /// The snapshot the store holds (data empty when there is none).
    pub fn snapshot_now(&self) -> Snapshot {
        self.core().snapshot.clone()
    }

    pub fn hard_state(&self) -> HardState {
        self.core().hard_state.clone()
    }

    pub fn last_index(&self) -> u64 {
        self.core().last_index()
    }

    /// Entries in `[low, high)` from memory (for the metadata fetch of observers), capped
    /// at `max_bytes` of data but always at least one.
    pub fn entries_between(&self, low: u64, high: u64, max_bytes: usize) -> Vec<Entry> {
        let core = self.core();
        if low < core.first_index() || low >= high {
            return Vec::new();
        }
        let first = core.first_index();
        let high = high.min(core.last_index() + 1);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for e in &core.entries[(low - first) as usize..(high - first) as usize] {
            bytes += e.data.len() + 32;
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        out
    }

    /// Persists new entries (replacing any conflicting suffix) and fsyncs them.
    fn append_once(&self, entries: &[Entry], now_ms: i64) -> Result<(), StoreError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut files = self.files.lock().expect("raft files lock");
        let mut core = self.core.write().expect("raft store lock");
        if first.index < core.first_index() {
            return Err(StoreError::Corrupt {
                file: files.dir.display().to_string(),
                reason: format!(
                    "raft asked to overwrite entry {} below the snapshot at {}",
                    first.index,
                    core.snapshot_index()
                ),
            });
        }
        if first.index <= core.last_index() {
            let keep = (first.index - core.first_index()) as usize;
            core.entries.truncate(keep);
            files.log.truncate_to(first.index as i64 - 1, now_ms)?;
        }
        let mut buf = BytesMut::new();
        for e in entries {
            if e.get_entry_type() != EntryType::EntryNormal {
                return Err(StoreError::Corrupt {
                    file: files.dir.display().to_string(),
                    reason: format!("entry {} has unsupported type {:?}", e.index, e.entry_type),
                });
            }
            buf.clear();
            let record = plain_record(0, now_ms, None, Some(e.data.clone()));
            RecordBatchEncoder::encode(
                &mut buf,
                std::iter::once(&record),
                &RecordEncodeOptions {
                    version: 2,
                    compression: Compression::None,
                },
            )
            .map_err(|err| std::io::Error::other(err.to_string()))?;
            let headers = validate_batches(&buf, usize::MAX)
                .map_err(|err| std::io::Error::other(err.to_string()))?;
            let expected = e.index as i64 - 1;
            assert_eq!(
                files.log.log_end_offset(),
                expected,
                "raft entry {} must land at offset {expected}",
                e.index
            );
            files.log.append(&buf, &headers, e.term as i32, now_ms)?;
        }
        files.log.flush(now_ms)?;
        core.entries.extend(entries.iter().cloned());
        debug_assert_eq!(
            files.log.log_end_offset() as u64,
            core.last_index(),
            "log end offset and last raft index agree"
        );
        Ok(())
    }

    /// Persists the hard state (term, vote, commit) with fsync, file and directory.
    fn set_hard_state_once(&self, hs: &HardState) -> Result<(), StoreError> {
        let files = self.files.lock().expect("raft files lock");
        let text = serde_json::to_vec(&QuorumStateFile {
            term: hs.term,
            voted_id: hs.vote,
            commit: hs.commit,
        })
        .expect("quorum state serializes");
        write_atomically(&files.dir.join(QUORUM_STATE_FILE), &text)?;
        sync_dir(&files.dir)?;
        self.core.write().expect("raft store lock").hard_state = hs.clone();
        Ok(())
    }

    /// Only the commit index changed: kept in memory, written with the next hard state.
    /// (Raft recovers the commit index from the leader; persisting it eagerly only saves
    /// a few re-applied entries after a restart.)
    pub fn set_commit(&self, commit: u64) {
        self.core
            .write()
            .expect("raft store lock")
            .hard_state
            .commit = commit;
    }

    /// Installs a snapshot received from the leader: the checkpoint is written, the log
    /// starts again after it.
    fn apply_snapshot_once(&self, snapshot: &Snapshot, now_ms: i64) -> Result<(), StoreError> {
        let meta = snapshot.get_metadata();
        let mut files = self.files.lock().expect("raft files lock");
        write_checkpoint(&files.dir, meta.index, meta.term, &snapshot.data)?;
        files.log.reset_to(meta.index as i64, now_ms)?;
        let mut core = self.core.write().expect("raft store lock");
        core.entries.clear();
        core.snapshot = snapshot.clone();
        core.hard_state.commit = core.hard_state.commit.max(meta.index);
        core.hard_state.term = core.hard_state.term.max(meta.term);
        drop(core);
        remove_older_checkpoints(&files.dir, meta.index);
        Ok(())
    }

    /// Takes a local snapshot at `index` (already applied to `data`'s image) and drops the
    /// log before it.
    fn compact_once(&self, index: u64, data: Bytes, now_ms: i64) -> Result<(), StoreError> {
        let mut files = self.files.lock().expect("raft files lock");
        let mut core = self.core.write().expect("raft store lock");
        if index <= core.snapshot_index() || index > core.last_index() {
            return Ok(());
        }
        let term = core.entries[(index - core.first_index()) as usize].term;
        write_checkpoint(&files.dir, index, term, &data)?;
        let drop_count = (index - core.snapshot_index()) as usize;
        core.entries.drain(..drop_count);
        let conf_state = core.conf_state.clone();
        core.snapshot.data = data;
        let meta = core.snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf_state);
        drop(core);
        files.log.advance_log_start(index as i64, now_ms)?;
        remove_older_checkpoints(&files.dir, index);
        Ok(())
    }

    /// Flushes the metadata log for a clean shutdown.
    pub fn close(&self, now_ms: i64) -> Result<(), StoreError> {
        let mut files = self.files.lock().expect("raft files lock");
        files.log.close(now_ms)?;
        Ok(())
    }
}

impl Storage for RaftStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let core = self.core();
        Ok(RaftState {
            hard_state: core.hard_state.clone(),
            conf_state: core.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let core = self.core();
        if low < core.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > core.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let first = core.first_index();
        let mut out = core.entries[(low - first) as usize..(high - first) as usize].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let core = self.core();
        if idx == core.snapshot_index() {
            return Ok(core.snapshot.get_metadata().term);
        }
        if idx < core.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > core.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(core.entries[(idx - core.first_index()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.core().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.core().last_index())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let core = self.core();
        let mut snap = core.snapshot.clone();
        snap.mut_metadata().set_conf_state(core.conf_state.clone());
        Ok(snap)
    }
}

/// Walks every batch of the metadata log's segment files and refuses damage anywhere but
/// at the very end of the last one (a torn final write, which was never acknowledged:
/// entries are acknowledged only after their fsync).
fn check_segments(dir: &Path) -> Result<(), StoreError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    let count = files.len();
    for (i, path) in files.iter().enumerate() {
        let data = std::fs::read(path)?;
        let last_file = i + 1 == count;
        let mut pos = 0usize;
        while pos < data.len() {
            let rest = &data[pos..];
            let header = (rest.len() >= HEADER_LEN)
                .then(|| BatchHeader::parse(rest))
                .flatten();
            let total = header.as_ref().map(|h| h.total_len());
            let whole = total.is_some_and(|t| t >= HEADER_LEN && t <= rest.len());
            let valid = whole
                && validate_batches(&rest[..total.expect("whole implies a length")], usize::MAX)
                    .is_ok();
            if valid {
                pos += total.expect("valid implies a length");
                continue;
            }
            // A batch that runs past the end of the last file, or a bad batch that is the
            // last thing in it, is a torn write; anything else is damage.
            let torn = last_file && (!whole || pos + total.unwrap_or(0) == data.len());
            if torn {
                break;
            }
            return Err(StoreError::Corrupt {
                file: format!("{} at position {pos}", path.display()),
                reason: "a damaged batch with more of the metadata log after it; the log is not cut there because entries after it were acknowledged (restore the directory, or remove it to re-fetch the log from the other voters)".into(),
            });
        }
    }
    Ok(())
}

fn checkpoint_name(index: u64, term: u64) -> String {
    format!("{index:020}-{term:010}{CHECKPOINT_EXT}")
}

fn write_checkpoint(dir: &Path, index: u64, term: u64, data: &[u8]) -> std::io::Result<()> {
    write_atomically(&dir.join(checkpoint_name(index, term)), data)?;
    sync_dir(dir)
}

/// Checkpoints in `dir` as (index, term, path), oldest first.
fn checkpoints(dir: &Path) -> std::io::Result<Vec<(u64, u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(CHECKPOINT_EXT)) else {
            continue;
        };
        if let Some((i, t)) = stem.split_once('-') {
            if let (Ok(i), Ok(t)) = (i.parse(), t.parse()) {
                out.push((i, t, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn newest_checkpoint(dir: &Path) -> std::io::Result<Option<(u64, u64, PathBuf)>> {
    Ok(checkpoints(dir)?.pop())
}

fn remove_older_checkpoints(dir: &Path, index: u64) {
    if let Ok(all) = checkpoints(dir) {
        for (i, _, path) in all {
            if i < index {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Reads every entry after `snapshot_index` from the log, checking that indexes are dense
/// and terms never decrease.
fn read_entries(log: &Log, dir: &Path, snapshot_index: u64) -> Result<Vec<Entry>, StoreError> {
    let corrupt = |offset: i64, reason: String| StoreError::Corrupt {
        file: format!("{} at offset {offset}", dir.display()),
        reason,
    };
    let start = log.log_start_offset();
    if start as u64 > snapshot_index {
        return Err(corrupt(
            start,
            format!(
                "the log starts at offset {start} but the newest snapshot ends at {snapshot_index}: entries are missing"
            ),
        ));
    }
    let mut entries: Vec<Entry> = Vec::new();
    let mut offset = start;
    let end = log.log_end_offset();
    while offset < end {
        let plan = log
            .plan_read(offset)?
            .ok_or_else(|| corrupt(offset, "no batch holds this offset".into()))?;
        let data = plan.read(8 * 1024 * 1024, i64::MAX, true)?;
        if data.is_empty() {
            return Err(corrupt(offset, "the batch here cannot be read".into()));
        }
        let mut pos = 0usize;
        while pos + HEADER_LEN <= data.len() {
            let h = BatchHeader::parse(&data[pos..])
                .ok_or_else(|| corrupt(offset, "bad batch header".into()))?;
            let mut one = data.slice(pos..pos + h.total_len());
            let set = RecordBatchDecoder::decode(&mut one)
                .map_err(|e| corrupt(h.base_offset, format!("unreadable batch: {e}")))?;
            if h.record_count != 1 || h.base_offset != offset {
                return Err(corrupt(
                    h.base_offset,
                    format!(
                        "expected one entry at offset {offset}, found {} records at {}",
                        h.record_count, h.base_offset
                    ),
                ));
            }
            let index = h.base_offset as u64 + 1;
            let term = h.partition_leader_epoch.max(0) as u64;
            if let Some(prev) = entries.last() {
                if term < prev.term {
                    return Err(corrupt(
                        h.base_offset,
                        format!("term {term} after term {}", prev.term),
                    ));
                }
            }
            if index > snapshot_index {
                let data = set
                    .records
                    .into_iter()
                    .next()
                    .and_then(|r| r.value)
                    .unwrap_or_default();
                let e = Entry {
                    index,
                    term,
                    data,
                    ..Default::default()
                };
                entries.push(e);
            }
            offset = h.next_offset();
            pos += h.total_len();
        }
    }
    if let Some(first) = entries.first() {
        if first.index != snapshot_index + 1 {
            return Err(corrupt(
                first.index as i64 - 1,
                format!(
                    "entries resume at index {} after the snapshot at {snapshot_index}",
                    first.index
                ),
            ));
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(from: u64, n: u64, term: u64) -> Vec<Entry> {
        (from..from + n)
            .map(|index| Entry {
                index,
                term,
                data: Bytes::from(format!(
                    "[{{\"type\":\"ProducerIds\",\"next_producer_id\":{index}}}]"
                )),
                ..Default::default()
            })
            .collect()
    }

    fn segment(dir: &Path) -> PathBuf {
        crate::log::segment_path(dir, 0)
    }

    #[test]
    fn entries_survive_reopen_and_conflicting_suffixes_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = RaftStore::open(dir.path(), &[1], true, 0).unwrap();
        store.append(&entries(1, 5, 1), 0).unwrap();
        // A new leader overwrites the uncommitted tail from index 4 with its own term.
        store.append(&entries(4, 3, 2), 0).unwrap();
        store.close(0).unwrap();
        drop(store);
        let store = RaftStore::open(dir.path(), &[1], false, 0).unwrap();
        let terms: Vec<(u64, u64)> = store
            .entries_between(1, 7, usize::MAX)
            .iter()
            .map(|e| (e.index, e.term))
            .collect();
        assert_eq!(terms, vec![(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]);
    }

    #[test]
    fn a_torn_last_write_is_cut_but_damage_before_acknowledged_entries_refuses_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = RaftStore::open(dir.path(), &[1], true, 0).unwrap();
        store.append(&entries(1, 4, 1), 0).unwrap();
        drop(store);
        let path = segment(dir.path());
        let len = std::fs::metadata(&path).unwrap().len();
        // Torn: the last batch lost its final bytes.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 5).unwrap();
        drop(f);
        let store = RaftStore::open(dir.path(), &[1], false, 0).unwrap();
        assert_eq!(store.last_index(), 3);
        drop(store);
        // Damage: a flipped byte inside the first batch, with entries after it.
        let mut data = std::fs::read(&path).unwrap();
        data[HEADER_LEN + 3] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        let err = RaftStore::open(dir.path(), &[1], false, 0)
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(
            text.contains("position 0") && text.contains("damaged batch"),
            "{text}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), data, "nothing was cut");
    }
}
