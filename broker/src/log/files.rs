//! Segment files, opened when first used and kept open in a bounded, process-wide set.
//! File descriptors are one budget shared with client connections: a broker with
//! thousands of partitions must neither refuse to start (`Too many open files`) nor lock
//! clients out, so at most `strom.log.open.files.max` segment files are open at a time and
//! the least recently used are closed first. A reader holds its own handle, so closing a
//! file in the set never cuts a read or a write short; the next use opens it again.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// The limit until the broker sets one: what a default soft limit of 1024 leaves beside
/// connections.
const DEFAULT_LIMIT: usize = 512;
/// The smallest limit: below it, files would be closed and opened again on every read.
pub const MIN_LIMIT: usize = 16;

/// The open segment files of the process.
pub struct OpenFiles {
    limit: AtomicUsize,
    /// Files open now (possibly a few whose segment is gone, until the next eviction).
    open: Mutex<Vec<Weak<Slot>>>,
    /// A use counter: the higher, the more recent.
    clock: AtomicU64,
    opened: AtomicU64,
    closed: AtomicU64,
}

impl OpenFiles {
    /// The process-wide set: the file-descriptor limit it shares is the process's.
    pub fn global() -> &'static OpenFiles {
        static GLOBAL: OnceLock<OpenFiles> = OnceLock::new();
        GLOBAL.get_or_init(|| OpenFiles::new(DEFAULT_LIMIT))
    }

    fn new(limit: usize) -> OpenFiles {
        OpenFiles {
            limit: AtomicUsize::new(limit.max(MIN_LIMIT)),
            open: Mutex::new(Vec::new()),
            clock: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        }
    }

    /// Sets how many segment files may be open at once (at least [`MIN_LIMIT`]).
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit.max(MIN_LIMIT), Ordering::Relaxed);
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Segment files open now.
    pub fn open_count(&self) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.iter()
            .filter_map(Weak::upgrade)
            .filter(|slot| slot.is_open())
            .count()
    }

    /// Files opened and closed since the start (a high rate of both means the limit is
    /// below the working set).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.opened.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed),
        )
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Notes that `slot` has just been opened, and closes the least recently used files
    /// when over the limit: an eighth of the limit at once, so that a full set does not
    /// sort on every open.
    fn opened(&self, slot: &Arc<Slot>) {
        self.opened.fetch_add(1, Ordering::Relaxed);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.push(Arc::downgrade(slot));
        let limit = self.limit();
        if open.len() <= limit {
            return;
        }
        let mut live: Vec<(u64, Arc<Slot>)> = open
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|s| s.is_open())
            .map(|s| (s.last_used.load(Ordering::Relaxed), s))
            .collect();
        if live.len() > limit {
            live.sort_unstable_by_key(|(used, _)| *used);
            let excess = live.len() - limit + limit / 8;
            let mut kept = Vec::with_capacity(live.len());
            let mut closing = excess;
            for (used, s) in live {
                // Never the file just opened; a slot in use right now is skipped (its lock
                // is held by whoever uses it).
                if closing > 0 && !Arc::ptr_eq(&s, slot) && s.close() {
                    closing -= 1;
                    self.closed.fetch_add(1, Ordering::Relaxed);
                } else {
                    kept.push((used, s));
                }
            }
            live = kept;
        }
        *open = live.iter().map(|(_, s)| Arc::downgrade(s)).collect();
    }
}

struct Slot {
    path: PathBuf,
    file: Mutex<Option<Arc<File>>>,
    last_used: AtomicU64,
}

impl Slot {
    fn is_open(&self) -> bool {
        match self.file.try_lock() {
            Ok(file) => file.is_some(),
            // In use: open.
            Err(_) => true,
        }
    }

    /// Drops the set's handle unless the slot is in use; `true` when it was closed.
    fn close(&self) -> bool {
        match self.file.try_lock() {
            Ok(mut file) => file.take().is_some(),
            Err(_) => false,
        }
    }
}

/// One segment file: opened on first use, possibly closed by the set between uses.
pub struct SegmentFile {
    slot: Arc<Slot>,
}

impl SegmentFile {
    /// A file that exists at `path`, opened when first used.
    pub fn lazy(path: PathBuf) -> SegmentFile {
        SegmentFile {
            slot: Arc::new(Slot {
                path,
                file: Mutex::new(None),
                last_used: AtomicU64::new(OpenFiles::global().tick()),
            }),
        }
    }

    /// `file`, just created or opened at `path`, counted in the set.
    pub fn open(path: PathBuf, file: File) -> SegmentFile {
        let segment = SegmentFile::lazy(path);
        *segment.slot.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(file));
        OpenFiles::global().opened(&segment.slot);
        segment
    }

    pub fn path(&self) -> &Path {
        &self.slot.path
    }

    /// A handle on the file, opening it if the set closed it; valid for as long as it is
    /// held, whatever the set does meanwhile.
    pub fn handle(&self) -> io::Result<Arc<File>> {
        let files = OpenFiles::global();
        self.slot.last_used.store(files.tick(), Ordering::Relaxed);
        let mut file = self.slot.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = &*file {
            return Ok(open.clone());
        }
        let opened = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.slot.path)?,
        );
        *file = Some(opened.clone());
        // The set takes other slots' locks (try_lock only); this one is released first.
        drop(file);
        files.opened(&self.slot);
        Ok(opened)
    }

    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.handle()?.read_exact_at(buf, offset)
    }

    pub fn set_len(&self, len: u64) -> io::Result<()> {
        self.handle()?.set_len(len)
    }

    pub fn sync_all(&self) -> io::Result<()> {
        self.handle()?.sync_all()
    }

    /// fsync through any descriptor flushes the file: data written through a handle the
    /// set has closed since is flushed too.
    pub fn sync_data(&self) -> io::Result<()> {
        self.handle()?.sync_data()
    }

    pub fn file_len(&self) -> io::Result<u64> {
        Ok(self.handle()?.metadata()?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The set is process-wide: this test's files come and go among other tests' files,
    // so it checks its own files only, with a limit no other test changes.
    #[test]
    fn files_beyond_the_limit_are_closed_and_reopened_and_held_handles_survive() {
        let dir = tempfile::tempdir().unwrap();
        let files = OpenFiles::global();
        files.set_limit(DEFAULT_LIMIT);
        let count = DEFAULT_LIMIT + DEFAULT_LIMIT / 2;
        let mut segments = Vec::new();
        for i in 0..count {
            let path = dir.path().join(format!("{i}.log"));
            std::fs::write(&path, format!("segment {i:06}")).unwrap();
            segments.push(SegmentFile::lazy(path));
        }
        // A reader's handle on the first file, held across everything below.
        let held = segments[0].handle().unwrap();
        let open_of_ours =
            |segments: &[SegmentFile]| segments.iter().filter(|s| s.slot.is_open()).count();
        for (i, segment) in segments.iter().enumerate() {
            let mut buf = [0u8; 14];
            segment.read_exact_at(&mut buf, 0).unwrap();
            assert_eq!(&buf, format!("segment {i:06}").as_bytes());
        }
        assert!(
            open_of_ours(&segments) <= DEFAULT_LIMIT,
            "{} of ours open, limit {DEFAULT_LIMIT}",
            open_of_ours(&segments)
        );
        // The held handle still reads, though the set closed its own.
        let mut buf = [0u8; 14];
        held.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"segment 000000");
        // Closed files open again on their next use.
        let mut buf = [0u8; 14];
        segments[1].read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"segment 000001");
        // Dropping segments closes their files.
        let before = files.open_count();
        drop(segments);
        assert!(files.open_count() < before);
    }
}
