//! The exclusive lock on each log directory (Kafka's `.lock` file): a second broker process
//! started on the same data would otherwise append to the same segments and lose
//! acknowledged records without a warning.

use anyhow::Context;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

const LOCK_FILE: &str = ".lock";

/// Held for as long as the broker runs; the locks go with the process (or with this value).
pub struct LogDirLocks {
    _files: Vec<File>,
}

/// Takes an exclusive lock on `.lock` in every log dir, refusing the start (naming the
/// holder's pid, which each holder writes into the file) if another process has one.
pub fn lock_log_dirs(dirs: &[PathBuf]) -> anyhow::Result<LogDirLocks> {
    let mut files = Vec::with_capacity(dirs.len());
    for d in dirs {
        files.push(lock_one(d)?);
    }
    Ok(LogDirLocks { _files: files })
}

fn lock_one(dir: &Path) -> anyhow::Result<File> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("log.dirs: cannot create {}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("log.dirs: cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            anyhow::bail!(
                "log.dirs: {} is locked by another broker process{} ({}); two brokers must never share a log directory",
                dir.display(),
                if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                },
                path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("log.dirs: cannot lock {}", path.display()))
        }
    }
    // The pid only names the holder for a refused second start: best effort, since a
    // broker must still start (and serve reads) on a full disk.
    let _ = (|| -> std::io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.sync_all()
    })();
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_dir_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec![dir.path().to_owned()];
        let first = lock_log_dirs(&dirs).unwrap();
        let err = lock_log_dirs(&dirs).err().expect("second lock refused");
        let text = err.to_string();
        assert!(text.contains("locked by another broker process"), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        lock_log_dirs(&dirs).unwrap();
    }
}
