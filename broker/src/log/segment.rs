//! One log segment: a `.log` file of record batches exactly as produced, with a sparse
//! offset index (`.index`) and time index (`.timeindex`) kept in memory and written to disk
//! when the segment is closed, rolled or the broker shuts down cleanly.

use super::batch::{BatchHeader, HEADER_LEN};
use super::files::SegmentFile;
use bytes::{Buf, BufMut};
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Segment and index file names: the base offset in 20 digits, as Kafka names them.
pub fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// A sparse offset index entry: the batch at `position` starts at `base + relative_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// A sparse time index entry: the greatest timestamp seen up to and including the batch
/// that starts at `base + relative_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeIndexEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

pub struct Segment {
    pub base_offset: i64,
    /// Opened when used, possibly closed between uses (see `files`).
    file: SegmentFile,
    dir: PathBuf,
    /// Bytes of whole batches in the file; anything beyond was never acknowledged.
    pub size: u64,
    /// The offset after the last batch of this segment.
    pub next_offset: i64,
    pub index: Vec<IndexEntry>,
    pub time_index: Vec<TimeIndexEntry>,
    bytes_since_index_entry: u64,
    /// Greatest batch max timestamp, and the base offset of the batch that holds it.
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
    /// Wall-clock time of the first append, which segment.ms counts from.
    pub created_ms: i64,
    /// Where a closed segment's batches stop making sense (found when it was opened): the
    /// bytes from here on are kept on disk, never truncated, and reads that reach them fail
    /// with CORRUPT_MESSAGE.
    pub damaged_at: Option<u64>,
}

impl Segment {
    /// A segment with no batches noted yet, over `file`.
    fn empty(dir: &Path, base_offset: i64, file: SegmentFile, now_ms: i64) -> Segment {
        Segment {
            base_offset,
            file,
            dir: dir.to_owned(),
            size: 0,
            next_offset: base_offset,
            index: Vec::new(),
            time_index: Vec::new(),
            bytes_since_index_entry: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            created_ms: now_ms,
            damaged_at: None,
        }
    }

    /// Creates an empty segment file starting at `base_offset`.
    pub fn create(dir: &Path, base_offset: i64, now_ms: i64) -> io::Result<Segment> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        Ok(Segment::empty(
            dir,
            base_offset,
            SegmentFile::open(path, file),
            now_ms,
        ))
    }

    /// Opens an existing segment. With `recover`, every batch is read and checked (CRC-32C,
    /// lengths, offsets); without it, the indexes on disk are used if they agree with the log
    /// and only the batches after the last index entry are scanned. An index is a hint: when
    /// it disagrees with the log (or the scan after it does not reach the end of the file,
    /// as with a torn last batch), the segment is scanned and verified from its start
    /// instead. Only the `last` (active) segment is ever truncated, after its last good
    /// batch (a torn write); a closed segment with damage keeps every byte and is marked
    /// [`Segment::damaged_at`].
    pub fn open(
        dir: &Path,
        base_offset: i64,
        recover: bool,
        last: bool,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> io::Result<Segment> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = SegmentFile::lazy(path.clone());
        let file_len = file.file_len()?;
        let mut seg = Segment::empty(dir, base_offset, file, now_ms);
        if !recover && seg.open_with_index(file_len, index_interval_bytes)? {
            seg.set_created_ms(now_ms);
            return Ok(seg);
        }
        let mut seg = Segment::empty(dir, base_offset, seg.file, now_ms);
        let end = seg.scan_from(0, file_len, true, index_interval_bytes)?;
        if end < file_len {
            if last {
                tracing::warn!(
                    segment = %path.display(),
                    valid_bytes = end,
                    file_bytes = file_len,
                    "truncating a torn or corrupt tail"
                );
                seg.file.set_len(end)?;
                seg.file.sync_all()?;
            } else {
                tracing::error!(
                    segment = %path.display(),
                    position = end,
                    file_bytes = file_len,
                    "a closed segment is damaged at this position: the bytes after it are kept but not served (reads reaching them fail with CORRUPT_MESSAGE); run strom-broker verify-log on the partition directory"
                );
                seg.damaged_at = Some(end);
            }
        }
        seg.set_created_ms(now_ms);
        Ok(seg)
    }

    /// segment.ms counts from the first batch's timestamp, as Kafka's does after a restart.
    fn set_created_ms(&mut self, now_ms: i64) {
        if let Some(first) = self.time_index.first() {
            self.created_ms = first.timestamp.min(now_ms);
        }
    }

    /// Loads the indexes and scans only the batches after the last index entry. `false`
    /// (and the segment left to be rebuilt) when the indexes are missing, disagree with the
    /// log, or the scan does not reach the end of the file.
    fn open_with_index(&mut self, file_len: u64, index_interval_bytes: u64) -> io::Result<bool> {
        let (Some(mut index), Some(mut time_index)) = (self.load_index(), self.load_time_index())
        else {
            return Ok(false);
        };
        let Some(last) = index.pop() else {
            // An empty index is only right for an empty segment.
            return Ok(file_len == 0);
        };
        // The entry must point at a batch of the offset it names.
        if last.position as u64 + HEADER_LEN as u64 > file_len {
            return Ok(false);
        }
        let h = self.read_header_at(last.position as u64)?;
        if h.magic != 2 || h.base_offset != self.base_offset + last.relative_offset as i64 {
            tracing::warn!(segment = %self.path().display(), "the offset index disagrees with the log; rebuilding it from the log");
            return Ok(false);
        }
        time_index.retain(|e| e.relative_offset < last.relative_offset);
        self.index = index;
        self.time_index = time_index;
        if let Some(t) = self.time_index.last() {
            self.max_timestamp = t.timestamp;
            self.offset_of_max_timestamp = self.base_offset + t.relative_offset as i64;
        }
        // The batch at the last index entry and everything after it are scanned again,
        // which re-creates that entry and finds the segment's end.
        let end = self.scan_from(last.position as u64, file_len, false, index_interval_bytes)?;
        Ok(end == file_len)
    }

    /// Walks the batches from `start`, rebuilding index entries, and returns where the first
    /// incomplete, inconsistent or (when `verify`) corrupt batch starts, or `file_len`.
    fn scan_from(
        &mut self,
        start: u64,
        file_len: u64,
        verify: bool,
        index_interval_bytes: u64,
    ) -> io::Result<u64> {
        let mut pos = start;
        let mut header_buf = [0u8; HEADER_LEN];
        let mut batch_buf = Vec::new();
        self.size = start;
        let mut previous_next: Option<i64> = None;
        while pos + HEADER_LEN as u64 <= file_len {
            self.file.read_exact_at(&mut header_buf, pos)?;
            let Some(h) = BatchHeader::parse(&header_buf) else {
                break;
            };
            let total = h.total_len() as u64;
            if h.magic != 2
                || (h.batch_length as u64) < (HEADER_LEN as u64 - 12)
                || pos + total > file_len
                || h.last_offset_delta < 0
                || h.base_offset < self.base_offset
                || previous_next.is_some_and(|n| h.base_offset < n)
            {
                break;
            }
            if verify {
                batch_buf.resize(total as usize, 0);
                self.file.read_exact_at(&mut batch_buf, pos)?;
                if super::batch::validate_stored_batches(&batch_buf).is_err() {
                    break;
                }
            }
            if self.index.is_empty() && pos == 0 {
                self.next_offset = h.base_offset;
            }
            self.note_batch(&h, pos, total, index_interval_bytes);
            previous_next = Some(h.next_offset());
            pos += total;
        }
        Ok(pos)
    }

    /// Records a batch that now occupies `[position, position + len)`.
    fn note_batch(&mut self, h: &BatchHeader, position: u64, len: u64, index_interval_bytes: u64) {
        let relative = (h.base_offset - self.base_offset).max(0) as u32;
        if self.index.is_empty() || self.bytes_since_index_entry >= index_interval_bytes {
            self.index.push(IndexEntry {
                relative_offset: relative,
                position: position as u32,
            });
            self.time_index.push(TimeIndexEntry {
                timestamp: self.max_timestamp.max(h.max_timestamp),
                relative_offset: relative,
            });
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += len;
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.offset_of_max_timestamp = h.base_offset;
        }
        self.size = position + len;
        self.next_offset = h.next_offset();
    }

    /// Appends one batch given as its (stamped) header and the bytes after it. On any error
    /// the file is cut back to its previous size, so a failed append leaves no partial batch.
    pub fn append(
        &mut self,
        header: &[u8; HEADER_LEN],
        rest: &[u8],
        index_interval_bytes: u64,
    ) -> io::Result<()> {
        let h = BatchHeader::parse(header).expect("a full header");
        let position = self.size;
        let total = (HEADER_LEN + rest.len()) as u64;
        let result = self.file.handle().and_then(|file| {
            write_all_at_end(
                &file,
                position,
                &mut [IoSlice::new(header), IoSlice::new(rest)],
            )
        });
        if let Err(e) = result {
            let _ = self.file.set_len(position);
            return Err(e);
        }
        self.note_batch(&h, position, total, index_interval_bytes);
        Ok(())
    }

    /// The position of the batch that contains `offset`, or the first batch after it, or
    /// `None` if every batch of the segment ends before `offset`.
    pub fn locate(&self, offset: i64) -> io::Result<Option<u64>> {
        let relative = (offset - self.base_offset).max(0);
        let i = self
            .index
            .partition_point(|e| (e.relative_offset as i64) <= relative);
        let mut pos = if i == 0 {
            0
        } else {
            self.index[i - 1].position as u64
        };
        let mut header = [0u8; HEADER_LEN];
        if pos > 0 {
            // A stale or damaged entry must not send the read elsewhere: walk from the start.
            self.file.read_exact_at(&mut header, pos)?;
            let h = BatchHeader::parse(&header).expect("full header");
            if h.base_offset != self.base_offset + self.index[i - 1].relative_offset as i64 {
                pos = 0;
            }
        }
        while pos < self.size {
            self.file.read_exact_at(&mut header, pos)?;
            let h = BatchHeader::parse(&header).expect("full header");
            if h.last_offset() >= offset {
                return Ok(Some(pos));
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// The base offset of the first batch whose timestamp may reach `timestamp`, found with
    /// the time index: reading starts at the last entry whose timestamp is below it.
    pub fn time_lookup_position(&self, timestamp: i64) -> u64 {
        let i = self.time_index.partition_point(|e| e.timestamp < timestamp);
        if i == 0 {
            return 0;
        }
        let rel = self.time_index[i - 1].relative_offset;
        let j = self.index.partition_point(|e| e.relative_offset <= rel);
        if j == 0 {
            0
        } else {
            self.index[j - 1].position as u64
        }
    }

    /// The segment's `.log` file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(file_name(self.base_offset, "log"))
    }

    pub fn file(&self) -> &SegmentFile {
        &self.file
    }

    /// A handle on the `.log` file for a read carried out after the partition lock is
    /// released: valid even if the segment is deleted or its file closed meanwhile.
    pub fn handle(&self) -> io::Result<Arc<std::fs::File>> {
        self.file.handle()
    }

    pub fn read_header_at(&self, pos: u64) -> io::Result<BatchHeader> {
        let mut header = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut header, pos)?;
        Ok(BatchHeader::parse(&header).expect("full header"))
    }

    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Writes both indexes to disk (through a temporary file and a rename, so a crash leaves
    /// either the old or the new index).
    pub fn write_indexes(&self) -> io::Result<()> {
        let mut idx = Vec::with_capacity(self.index.len() * 8);
        for e in &self.index {
            idx.put_u32(e.relative_offset);
            idx.put_u32(e.position);
        }
        let mut tidx = Vec::with_capacity(self.time_index.len() * 12 + 12);
        for e in &self.time_index {
            tidx.put_i64(e.timestamp);
            tidx.put_u32(e.relative_offset);
        }
        write_atomically(&self.dir.join(file_name(self.base_offset, "index")), &idx)?;
        write_atomically(
            &self.dir.join(file_name(self.base_offset, "timeindex")),
            &tidx,
        )
    }

    fn load_index(&self) -> Option<Vec<IndexEntry>> {
        let data = std::fs::read(self.dir.join(file_name(self.base_offset, "index"))).ok()?;
        if data.len() % 8 != 0 {
            return None;
        }
        let entries: Vec<IndexEntry> = data
            .chunks_exact(8)
            .map(|mut c| IndexEntry {
                relative_offset: c.get_u32(),
                position: c.get_u32(),
            })
            .collect();
        let sorted = entries.windows(2).all(|w| w[0].position < w[1].position);
        let file_len = self.file.file_len().ok()?;
        let in_file = entries
            .last()
            .is_none_or(|e| (e.position as u64) < file_len);
        (sorted && in_file).then_some(entries)
    }

    fn load_time_index(&self) -> Option<Vec<TimeIndexEntry>> {
        let data = std::fs::read(self.dir.join(file_name(self.base_offset, "timeindex"))).ok()?;
        if data.len() % 12 != 0 {
            return None;
        }
        Some(
            data.chunks_exact(12)
                .map(|mut c| TimeIndexEntry {
                    timestamp: c.get_i64(),
                    relative_offset: c.get_u32(),
                })
                .collect(),
        )
    }

    /// Renames the segment's files with `suffix` (the log file last, so that a crash
    /// midway leaves either a whole segment or none), returning the new paths.
    pub fn rename_for_deletion(&self, suffix: &str) -> io::Result<Vec<PathBuf>> {
        let mut renamed = Vec::with_capacity(3);
        for ext in ["index", "timeindex", "log"] {
            let from = self.dir.join(file_name(self.base_offset, ext));
            let to = self
                .dir
                .join(format!("{}{suffix}", file_name(self.base_offset, ext)));
            match std::fs::rename(&from, &to) {
                Ok(()) => renamed.push(to),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(renamed)
    }
}

/// Writes every slice at `position` (the current end of the file) with positional vectored
/// writes, retrying short writes.
fn write_all_at_end(file: &File, position: u64, slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    // pwritev is not in std; a plain write on a file whose cursor sits at the end does the
    // same, and the segment is only appended to under the partition lock.
    let mut f = file;
    let end = std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(position))?;
    debug_assert_eq!(end, position);
    let mut slices = slices;
    while !slices.is_empty() {
        match f.write_vectored(slices) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "segment write returned 0",
                ))
            }
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Replaces `path` with `data` through a temporary file, fsync and rename.
pub fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        // A half-written temporary file (a full disk) would only hold space.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
