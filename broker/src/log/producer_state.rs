//! Per-partition producer state for the idempotent producer (KIP-98): for each producer id
//! the current epoch and the first/last sequence and offsets of its last five batches.
//! Checks look at batch header fields only, never at records, so the produce hot path pays
//! one hash lookup per idempotent batch. The table lives with the log and is checked and
//! updated under the partition's append lock; the log writes it to snapshot files (encoded
//! here) when a segment rolls and on close, so it survives restarts without its batches.

use crate::log::batch::BatchHeader;
use crate::protocol::codes;
use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer: the Java client keeps at most five in flight per
/// partition (max.in.flight.requests.per.connection <= 5 with idempotence), so a retry is
/// always one of the last five.
pub const CACHED_BATCHES: usize = 5;

/// One appended batch of a producer, as the duplicate check needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    /// When the producer last appended (server time on live appends; the batch's max
    /// timestamp when rebuilt from the log), for producer.id.expiration.ms.
    pub last_timestamp_ms: i64,
}

/// What to do with an idempotent batch that passed the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// A new batch: append it.
    Append,
    /// A retry of a batch already in the log: answer with its offsets, append nothing.
    Duplicate { base_offset: i64, last_offset: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerStateError {
    #[error("producer {producer_id} has epoch {epoch}, older than the current epoch {current}")]
    InvalidEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("out of order sequence number for producer {producer_id}: found {found}, expected {expected}")]
    OutOfOrder {
        producer_id: i64,
        found: i32,
        expected: i32,
    },
    #[error("idempotent batch of producer {producer_id} has invalid epoch {epoch} or base sequence {sequence}")]
    InvalidFields {
        producer_id: i64,
        epoch: i16,
        sequence: i32,
    },
}

impl ProducerStateError {
    pub fn error_code(&self) -> i16 {
        match self {
            ProducerStateError::InvalidEpoch { .. } => codes::INVALID_PRODUCER_EPOCH,
            ProducerStateError::OutOfOrder { .. } => codes::OUT_OF_ORDER_SEQUENCE_NUMBER,
            ProducerStateError::InvalidFields { .. } => codes::INVALID_RECORD,
        }
    }
}

/// `seq + inc` in the sequence space, which wraps from i32::MAX to 0 as Kafka's does.
pub fn increment_sequence(seq: i32, inc: i32) -> i32 {
    ((seq as i64 + inc as i64) % (i32::MAX as i64 + 1)) as i32
}

fn last_sequence(h: &BatchHeader) -> i32 {
    increment_sequence(h.base_sequence, h.last_offset_delta.max(0))
}

/// The producers of one partition.
#[derive(Debug, Default, Clone)]
pub struct ProducerStateTable {
    entries: HashMap<i64, ProducerEntry>,
}

impl ProducerStateTable {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.entries.get(&producer_id)
    }

    /// Every producer with state here, by id.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.entries.iter().map(|(id, e)| (*id, e))
    }

    /// Checks an idempotent batch (producer id >= 0) against the producer's state.
    pub fn check(&self, h: &BatchHeader) -> Result<SequenceCheck, ProducerStateError> {
        let producer_id = h.producer_id;
        if h.producer_epoch < 0 || h.base_sequence < 0 {
            return Err(ProducerStateError::InvalidFields {
                producer_id,
                epoch: h.producer_epoch,
                sequence: h.base_sequence,
            });
        }
        // An unknown producer (new, expired, or whose state was lost: its batches removed
        // with no snapshot remembering it) is accepted at any sequence, as Kafka does since KIP-360: refusing it
        // would leave a producer whose state was lost no way forward but a new id.
        let Some(entry) = self.entries.get(&producer_id) else {
            return Ok(SequenceCheck::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(ProducerStateError::InvalidEpoch {
                producer_id,
                epoch: h.producer_epoch,
                current: entry.epoch,
            });
        }
        if h.producer_epoch > entry.epoch {
            // A bumped epoch restarts the sequence.
            return if h.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(ProducerStateError::OutOfOrder {
                    producer_id,
                    found: h.base_sequence,
                    expected: 0,
                })
            };
        }
        let last_seq = last_sequence(h);
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: dup.base_offset,
                last_offset: dup.last_offset,
            });
        }
        let expected = entry
            .batches
            .back()
            .map_or(0, |b| increment_sequence(b.last_seq, 1));
        if h.base_sequence == expected {
            Ok(SequenceCheck::Append)
        } else {
            Err(ProducerStateError::OutOfOrder {
                producer_id,
                found: h.base_sequence,
                expected,
            })
        }
    }

    /// Records an appended idempotent batch at `base_offset` (the header's own base offset is
    /// the client's, not the log's, on the produce path).
    pub fn update(&mut self, h: &BatchHeader, base_offset: i64, timestamp_ms: i64) {
        let entry = self
            .entries
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::with_capacity(CACHED_BATCHES),
                last_timestamp_ms: timestamp_ms,
            });
        if entry.epoch != h.producer_epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == CACHED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_sequence(h),
            base_offset,
            last_offset: base_offset + h.last_offset_delta as i64,
        });
        entry.last_timestamp_ms = entry.last_timestamp_ms.max(timestamp_ms);
    }

    /// Forgets producers idle for at least `expiration_ms`; returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp_ms) < expiration_ms);
        before - self.entries.len()
    }
}

/// Version byte of the snapshot encoding; an unknown version is ignored like a corrupt file.
const SNAPSHOT_VERSION: u8 = 1;
/// Version byte and CRC-32C of the rest.
const SNAPSHOT_PREFIX: usize = 5;
/// Producer id, epoch, last timestamp, batch count.
const ENTRY_LEN: usize = 8 + 2 + 8 + 1;
/// First and last sequence, base and last offset.
const BATCH_LEN: usize = 4 + 4 + 8 + 8;

/// Why a snapshot file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("unknown snapshot version {0}")]
    Version(u8),
    #[error("snapshot checksum mismatch")]
    Checksum,
    #[error("snapshot truncated or malformed")]
    Malformed,
}

/// Reads big-endian fields from a byte slice without ever panicking on short input.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        if self.0.len() < N {
            return Err(SnapshotError::Malformed);
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        Ok(head.try_into().expect("length checked"))
    }
    fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, SnapshotError> {
        Ok(i32::from_be_bytes(self.take()?))
    }
    fn i16(&mut self) -> Result<i16, SnapshotError> {
        Ok(i16::from_be_bytes(self.take()?))
    }
    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take::<1>()?[0])
    }
}

impl ProducerStateTable {
    /// Encodes the table as it stands at log end offset `offset`: a version byte, the
    /// CRC-32C of the rest (so a torn or bit-rotted file is detected, not trusted), the
    /// offset, the entry count, then each producer and its cached batches.
    pub fn encode_snapshot(&self, offset: i64) -> Vec<u8> {
        let batches: usize = self.entries.values().map(|e| e.batches.len()).sum();
        let mut out = Vec::with_capacity(
            SNAPSHOT_PREFIX + 12 + self.entries.len() * ENTRY_LEN + batches * BATCH_LEN,
        );
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for (pid, e) in &self.entries {
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_timestamp_ms.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out[SNAPSHOT_PREFIX..]);
        out[1..SNAPSHOT_PREFIX].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes a snapshot written by [`Self::encode_snapshot`]: the offset it covers and the
    /// table. Any damage is an error, never a panic.
    pub fn decode_snapshot(data: &[u8]) -> Result<(i64, ProducerStateTable), SnapshotError> {
        if data.len() < SNAPSHOT_PREFIX {
            return Err(SnapshotError::Malformed);
        }
        if data[0] != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version(data[0]));
        }
        let stored = u32::from_be_bytes(data[1..SNAPSHOT_PREFIX].try_into().expect("4 bytes"));
        if crc32c::crc32c(&data[SNAPSHOT_PREFIX..]) != stored {
            return Err(SnapshotError::Checksum);
        }
        let mut r = Reader(&data[SNAPSHOT_PREFIX..]);
        let offset = r.i64()?;
        let count = u32::from_be_bytes(r.take()?) as usize;
        // Bounded by what the bytes can hold, so a bad count cannot ask for a huge table.
        let mut entries = HashMap::with_capacity(count.min(r.0.len() / ENTRY_LEN));
        for _ in 0..count {
            let pid = r.i64()?;
            let epoch = r.i16()?;
            let last_timestamp_ms = r.i64()?;
            let n = r.u8()? as usize;
            if n > CACHED_BATCHES {
                return Err(SnapshotError::Malformed);
            }
            let mut batches = VecDeque::with_capacity(CACHED_BATCHES);
            for _ in 0..n {
                batches.push_back(BatchMeta {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    base_offset: r.i64()?,
                    last_offset: r.i64()?,
                });
            }
            entries.insert(
                pid,
                ProducerEntry {
                    epoch,
                    batches,
                    last_timestamp_ms,
                },
            );
        }
        if !r.0.is_empty() {
            return Err(SnapshotError::Malformed);
        }
        Ok((offset, ProducerStateTable { entries }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    /// Checks and, if new, appends at `*leo`; returns the base offset answered.
    fn produce(
        t: &mut ProducerStateTable,
        leo: &mut i64,
        h: BatchHeader,
    ) -> Result<i64, ProducerStateError> {
        match t.check(&h)? {
            SequenceCheck::Duplicate { base_offset, .. } => Ok(base_offset),
            SequenceCheck::Append => {
                let base = *leo;
                t.update(&h, base, 1000);
                *leo += h.record_count as i64;
                Ok(base)
            }
        }
    }

    #[test]
    fn in_sequence_batches_append_and_retries_are_duplicates() {
        let mut t = ProducerStateTable::default();
        let mut leo = 0;
        assert_eq!(produce(&mut t, &mut leo, batch(7, 0, 0, 3)), Ok(0));
        assert_eq!(produce(&mut t, &mut leo, batch(7, 0, 3, 2)), Ok(3));
        // A retry of either cached batch answers its original offset and appends nothing.
        assert_eq!(produce(&mut t, &mut leo, batch(7, 0, 0, 3)), Ok(0));
        assert_eq!(produce(&mut t, &mut leo, batch(7, 0, 3, 2)), Ok(3));
        assert_eq!(leo, 5);
        assert_eq!(produce(&mut t, &mut leo, batch(7, 0, 5, 1)), Ok(5));
    }

    #[test]
    fn only_the_last_five_batches_are_recognised() {
        let mut t = ProducerStateTable::default();
        let mut leo = 0;
        for seq in 0..6 {
            produce(&mut t, &mut leo, batch(1, 0, seq, 1)).unwrap();
        }
        assert_eq!(produce(&mut t, &mut leo, batch(1, 0, 1, 1)), Ok(1));
        // Sequence 0 fell out of the cache: it is now just out of order.
        assert!(matches!(
            produce(&mut t, &mut leo, batch(1, 0, 0, 1)),
            Err(ProducerStateError::OutOfOrder { expected: 6, .. })
        ));
    }

    #[test]
    fn gaps_are_out_of_order() {
        let mut t = ProducerStateTable::default();
        let mut leo = 0;
        produce(&mut t, &mut leo, batch(1, 0, 0, 2)).unwrap();
        let err = produce(&mut t, &mut leo, batch(1, 0, 5, 1)).unwrap_err();
        assert_eq!(err.error_code(), 45);
        assert_eq!(leo, 2);
    }

    #[test]
    fn epochs_fence_and_restart_the_sequence() {
        let mut t = ProducerStateTable::default();
        let mut leo = 0;
        produce(&mut t, &mut leo, batch(1, 3, 0, 2)).unwrap();
        let err = produce(&mut t, &mut leo, batch(1, 2, 2, 1)).unwrap_err();
        assert_eq!(err.error_code(), 47);
        // A new epoch must start at sequence 0.
        let err = produce(&mut t, &mut leo, batch(1, 4, 2, 1)).unwrap_err();
        assert_eq!(err.error_code(), 45);
        assert_eq!(produce(&mut t, &mut leo, batch(1, 4, 0, 1)), Ok(2));
        assert_eq!(t.get(1).unwrap().epoch, 4);
        assert_eq!(t.get(1).unwrap().batches.len(), 1);
        // The old epoch is fenced now.
        assert_eq!(
            produce(&mut t, &mut leo, batch(1, 3, 2, 1))
                .unwrap_err()
                .error_code(),
            47
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut t = ProducerStateTable::default();
        let mut leo = 0;
        produce(&mut t, &mut leo, batch(1, 0, i32::MAX - 1, 2)).unwrap();
        assert_eq!(t.get(1).unwrap().batches[0].last_seq, i32::MAX);
        assert_eq!(produce(&mut t, &mut leo, batch(1, 0, 0, 1)), Ok(2));
        // A batch straddling the wrap.
        let mut t = ProducerStateTable::default();
        produce(&mut t, &mut leo, batch(2, 0, i32::MAX, 3)).unwrap();
        assert_eq!(t.get(2).unwrap().batches[0].last_seq, 1);
        assert!(produce(&mut t, &mut leo, batch(2, 0, 2, 1)).is_ok());
    }

    #[test]
    fn unknown_producers_start_anywhere_and_bad_fields_are_refused() {
        let mut t = ProducerStateTable::default();
        let mut leo = 0;
        assert_eq!(produce(&mut t, &mut leo, batch(9, 0, 42, 1)), Ok(0));
        assert_eq!(produce(&mut t, &mut leo, batch(9, 0, 43, 1)), Ok(1));
        assert_eq!(
            produce(&mut t, &mut leo, batch(8, -1, 0, 1))
                .unwrap_err()
                .error_code(),
            87
        );
        assert_eq!(
            produce(&mut t, &mut leo, batch(8, 0, -5, 1))
                .unwrap_err()
                .error_code(),
            87
        );
    }

    #[test]
    fn idle_producers_expire() {
        let mut t = ProducerStateTable::default();
        t.update(&batch(1, 0, 0, 1), 0, 1_000);
        t.update(&batch(2, 0, 0, 1), 1, 5_000);
        assert_eq!(t.expire(10_000, 6_000), 1);
        assert!(t.get(1).is_none() && t.get(2).is_some());
        assert_eq!(t.expire(11_000, 6_000), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_an_error() {
        let mut t = ProducerStateTable::default();
        for seq in 0..7 {
            t.update(&batch(1, 2, seq, 1), seq as i64, 1_000 + seq as i64);
        }
        t.update(&batch(5, 0, 0, 3), 10, 9_000);
        let data = t.encode_snapshot(13);
        let (offset, back) = ProducerStateTable::decode_snapshot(&data).unwrap();
        assert_eq!(offset, 13);
        assert_eq!(back.entries, t.entries);
        assert_eq!(
            ProducerStateTable::default().encode_snapshot(0).len(),
            SNAPSHOT_PREFIX + 12
        );
        // Every truncation and every flipped byte is refused.
        for len in 0..data.len() {
            assert!(ProducerStateTable::decode_snapshot(&data[..len]).is_err());
        }
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x40;
            assert!(
                ProducerStateTable::decode_snapshot(&bad).is_err(),
                "byte {i}"
            );
        }
    }
}
