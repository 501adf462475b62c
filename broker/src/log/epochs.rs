//! The leader-epoch cache of a log: the first offset written in each leader epoch, kept in
//! `leader-epoch-checkpoint` (Kafka's file and format), so a replica can say where its log
//! and a leader's diverge (KIP-101, KIP-279) instead of truncating blindly to its high
//! watermark.

use super::segment::write_atomically;
use std::io;
use std::path::{Path, PathBuf};

pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// One epoch and the first offset a batch of that epoch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// Epochs in increasing order with increasing start offsets; persisted on every change
/// (a change happens once per leadership change, never per append).
#[derive(Debug)]
pub struct LeaderEpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Loads the cache of the log in `dir`; `None` when the file does not exist (a log
    /// written before the cache existed, rebuilt by the caller from batch headers).
    pub fn load(dir: &Path) -> io::Result<Option<LeaderEpochCache>> {
        let path = dir.join(CHECKPOINT_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match parse(&text) {
            Some(entries) => Ok(Some(LeaderEpochCache { path, entries })),
            // Written atomically, so damage means another writer or a failing disk; the
            // headers hold the truth, and a rebuild is cheap next to a wrong truncation.
            None => {
                tracing::warn!(file = %path.display(), "ignoring an unreadable leader-epoch checkpoint; rebuilding it from the log");
                Ok(None)
            }
        }
    }

    pub fn empty(dir: &Path) -> LeaderEpochCache {
        LeaderEpochCache {
            path: dir.join(CHECKPOINT_FILE),
            entries: Vec::new(),
        }
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Notes that a batch of `epoch` starts at `offset`. Only a newer epoch adds an entry
    /// (persisted before the batch is written, so a crash cannot leave batches of an epoch
    /// the file does not know); an older epoch is a batch written before a later one and
    /// changes nothing. Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, offset: i64) -> io::Result<bool> {
        if epoch < 0 || self.latest_epoch().is_some_and(|l| l >= epoch) {
            return Ok(false);
        }
        if let Some(last) = self.entries.last() {
            debug_assert!(offset >= last.start_offset, "epoch start offsets only grow");
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset: offset,
        });
        self.persist()?;
        Ok(true)
    }

    /// Kafka's `endOffsetFor`: the largest epoch at or below `epoch` this log has, and the
    /// offset where it ends (the start of the next epoch, or `log_end_offset` for the
    /// latest). `(-1, -1)` when `epoch` is newer than any here or the cache is empty; an
    /// epoch older than the first gives that epoch and the first epoch's start.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> (i32, i64) {
        let Some(latest) = self.entries.last() else {
            return (-1, -1);
        };
        if epoch == latest.epoch {
            return (epoch, log_end_offset);
        }
        let higher = self.entries.iter().position(|e| e.epoch > epoch);
        match higher {
            None => (-1, -1),
            Some(0) => (epoch, self.entries[0].start_offset),
            Some(i) => (self.entries[i - 1].epoch, self.entries[i].start_offset),
        }
    }

    /// Forgets the epochs that start at or after `offset` (the log was truncated there).
    pub fn truncate_from_end(&mut self, offset: i64) -> io::Result<()> {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < offset);
        if self.entries.len() != before {
            self.persist()?;
        }
        Ok(())
    }

    /// Forgets what lies below `offset` (the new log start): epochs that end before it go,
    /// and the one that spans it starts there.
    pub fn truncate_from_start(&mut self, offset: i64) -> io::Result<()> {
        let covering = self.entries.iter().rposition(|e| e.start_offset <= offset);
        let Some(i) = covering else { return Ok(()) };
        if i == 0 && self.entries[0].start_offset == offset {
            return Ok(());
        }
        self.entries.drain(..i);
        self.entries[0].start_offset = offset;
        self.persist()
    }

    /// Removes every entry (the log was emptied and starts again elsewhere).
    pub fn clear(&mut self) -> io::Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        self.entries.clear();
        self.persist()
    }

    fn persist(&self) -> io::Result<()> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        write_atomically(&self.path, text.as_bytes())
    }
}

/// Kafka's checkpoint format: a version line (0), a count line, then `epoch offset` lines.
fn parse(text: &str) -> Option<Vec<EpochEntry>> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut entries = Vec::with_capacity(count.min(1024));
    for line in lines.by_ref().take(count) {
        let mut parts = line.split_whitespace();
        let epoch: i32 = parts.next()?.parse().ok()?;
        let start_offset: i64 = parts.next()?.parse().ok()?;
        if entries
            .last()
            .is_some_and(|l: &EpochEntry| l.epoch >= epoch || l.start_offset > start_offset)
        {
            return None;
        }
        entries.push(EpochEntry {
            epoch,
            start_offset,
        });
    }
    (entries.len() == count).then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(dir: &Path, entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::empty(dir);
        for (e, o) in entries {
            assert!(c.assign(*e, *o).unwrap());
        }
        c
    }

    #[test]
    fn end_offsets_follow_kafkas_rules() {
        let dir = tempfile::tempdir().unwrap();
        let c = cache(dir.path(), &[(1, 0), (3, 10), (4, 25)]);
        assert_eq!(c.end_offset_for(4, 40), (4, 40), "latest ends at the LEO");
        assert_eq!(c.end_offset_for(3, 40), (3, 25));
        assert_eq!(
            c.end_offset_for(2, 40),
            (1, 10),
            "a missing epoch: the one below"
        );
        assert_eq!(
            c.end_offset_for(0, 40),
            (0, 0),
            "older than all: the first start"
        );
        assert_eq!(
            c.end_offset_for(5, 40),
            (-1, -1),
            "newer than all: undefined"
        );
        assert_eq!(
            LeaderEpochCache::empty(dir.path()).end_offset_for(1, 5),
            (-1, -1)
        );
    }

    #[test]
    fn only_newer_epochs_add_entries_and_every_change_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cache(dir.path(), &[(1, 0), (2, 5)]);
        assert!(!c.assign(2, 9).unwrap());
        assert!(!c.assign(1, 9).unwrap());
        assert!(c.assign(5, 12).unwrap());
        let loaded = LeaderEpochCache::load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.entries(), c.entries());
        c.truncate_from_end(5).unwrap();
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 1,
                start_offset: 0
            }]
        );
        let other = tempfile::tempdir().unwrap();
        let mut c = cache(other.path(), &[(1, 0), (2, 5), (3, 9)]);
        c.truncate_from_start(7).unwrap();
        assert_eq!(
            c.entries(),
            &[
                EpochEntry {
                    epoch: 2,
                    start_offset: 7
                },
                EpochEntry {
                    epoch: 3,
                    start_offset: 9
                }
            ]
        );
    }

    #[test]
    fn a_damaged_or_missing_checkpoint_loads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(LeaderEpochCache::load(dir.path()).unwrap().is_none());
        for bad in ["1\n1\n0 0\n", "0\n2\n1 0\n", "0\n2\n3 0\n2 5\n", "0\nx\n"] {
            std::fs::write(dir.path().join(CHECKPOINT_FILE), bad).unwrap();
            assert!(
                LeaderEpochCache::load(dir.path()).unwrap().is_none(),
                "{bad:?}"
            );
        }
    }
}
