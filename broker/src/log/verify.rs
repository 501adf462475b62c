//! `strom-broker verify-log DIR`: an offline check of partition logs in the spirit of
//! Kafka's `kafka-dump-log --verify`, for an operator looking for damage: every batch's
//! framing, offsets, CRC-32C and records (decompressed within the broker's bound), and
//! every offset index entry, with the file and byte position of each problem.

use super::batch::{validate_stored_batches, BatchHeader, HEADER_LEN};
use super::segment::IndexEntry;
use std::fmt::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// One problem found, at a byte position of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: PathBuf,
    pub position: u64,
    pub problem: String,
}

/// What a verification found: a line per segment, and the problems.
#[derive(Debug, Default)]
pub struct Report {
    pub summary: String,
    pub findings: Vec<Finding>,
}

/// Verifies the partition directory `path`, or every partition directory in the log
/// directory `path`.
pub fn verify(path: &Path) -> std::io::Result<Report> {
    let mut report = Report::default();
    let mut dirs = vec![];
    if segment_files(path)?.is_empty() {
        for entry in std::fs::read_dir(path)? {
            let p = entry?.path();
            if p.is_dir() && !segment_files(&p)?.is_empty() {
                dirs.push(p);
            }
        }
        dirs.sort();
    } else {
        dirs.push(path.to_owned());
    }
    for dir in dirs {
        for (base, file) in segment_files(&dir)? {
            verify_segment(&file, base, &mut report)?;
        }
    }
    Ok(report)
}

fn segment_files(dir: &Path) -> std::io::Result<Vec<(i64, PathBuf)>> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        let base = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|s| s.parse::<i64>().ok());
        if let Some(base) = base {
            out.push((base, p));
        }
    }
    out.sort();
    Ok(out)
}

fn verify_segment(path: &Path, base: i64, report: &mut Report) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut findings: Vec<Finding> = Vec::new();
    let mut found = |position: u64, problem: String| {
        findings.push(Finding {
            file: path.to_owned(),
            position,
            problem,
        })
    };
    let (mut pos, mut batches, mut next) = (0u64, 0u64, None::<i64>);
    let mut starts: std::collections::HashMap<u64, i64> = Default::default();
    let mut header = [0u8; HEADER_LEN];
    while pos < len {
        if pos + HEADER_LEN as u64 > len {
            found(
                pos,
                format!(
                    "{} bytes at the end are not a whole batch header",
                    len - pos
                ),
            );
            break;
        }
        file.read_exact_at(&mut header, pos)?;
        let h = BatchHeader::parse(&header).expect("full header");
        if h.magic != 2 || h.batch_length < HEADER_LEN - 12 || pos + h.total_len() as u64 > len {
            found(pos, format!("bad framing (magic {}, batch length {}): nothing after this position can be read as batches", h.magic, h.batch_length));
            break;
        }
        if h.base_offset < base || next.is_some_and(|n| h.base_offset < n) {
            found(
                pos,
                format!(
                    "base offset {} goes backwards (expected at least {})",
                    h.base_offset,
                    next.unwrap_or(base)
                ),
            );
        }
        let mut batch = vec![0u8; h.total_len()];
        file.read_exact_at(&mut batch, pos)?;
        match validate_stored_batches(&batch) {
            Err(e) => found(pos, format!("batch at offset {}: {e}", h.base_offset)),
            Ok(_) => {
                if let Err(e) = super::codec::validate_stored_records(
                    &h,
                    &batch,
                    super::codec::MAX_DECOMPRESSED_BATCH_BYTES,
                ) {
                    found(pos, format!("batch at offset {}: {e}", h.base_offset));
                }
            }
        }
        starts.insert(pos, h.base_offset);
        next = Some(h.next_offset());
        batches += 1;
        pos += h.total_len() as u64;
    }
    // The offset index: each entry must name a batch start and its offset.
    let index_path = path.with_extension("index");
    if let Ok(data) = std::fs::read(&index_path) {
        if data.len() % 8 != 0 {
            found(
                0,
                format!(
                    "{}: {} bytes is not a whole number of entries",
                    index_path.display(),
                    data.len()
                ),
            );
        }
        for (i, c) in data.chunks_exact(8).enumerate() {
            let e = IndexEntry {
                relative_offset: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                position: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
            };
            if starts.get(&(e.position as u64)) != Some(&(base + e.relative_offset as i64)) {
                found(e.position as u64, format!("{} entry {i} (offset {}) does not point at that batch; the broker rebuilds a disagreeing index", index_path.display(), base + e.relative_offset as i64));
            }
        }
    }
    let problems = findings.len();
    report.findings.extend(findings);
    let _ = writeln!(
        report.summary,
        "{}: {batches} batches, {len} bytes, offsets {base}..{}: {}",
        path.display(),
        next.unwrap_or(base),
        if problems == 0 {
            "ok".to_string()
        } else {
            format!("{problems} problem(s)")
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::tests::make_batch;
    use kafka_protocol::records::Compression;

    #[test]
    fn finds_flipped_bytes_and_bad_lengths_with_their_positions() {
        let dir = tempfile::tempdir().unwrap();
        let a = make_batch(3, 10, Compression::None);
        let mut b = make_batch(2, 10, Compression::Gzip).to_vec();
        b[0..8].copy_from_slice(&3i64.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        let mut log = a.to_vec();
        log.extend(&b);
        let path = dir.path().join("00000000000000000000.log");
        std::fs::write(&path, &log).unwrap();
        let r = verify(dir.path()).unwrap();
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert!(r.summary.contains("2 batches"), "{}", r.summary);
        // A flipped byte in the second batch: a CRC problem at its position.
        let mut flipped = log.clone();
        *flipped.last_mut().unwrap() ^= 0xff;
        std::fs::write(&path, &flipped).unwrap();
        let r = verify(dir.path()).unwrap();
        assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
        assert_eq!(r.findings[0].position, a.len() as u64);
        assert!(r.findings[0].problem.contains("CRC"), "{:?}", r.findings);
        // A corrupted length field in the first batch.
        let mut bad_len = log.clone();
        bad_len[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        std::fs::write(&path, &bad_len).unwrap();
        let r = verify(dir.path()).unwrap();
        assert_eq!(r.findings[0].position, 0);
        assert!(
            r.findings[0].problem.contains("framing"),
            "{:?}",
            r.findings
        );
    }
}
