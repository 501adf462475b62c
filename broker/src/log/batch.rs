//! Record batch headers (magic v2): parsing, validation on append, and the few header
//! fields the broker stamps (base offset, partition leader epoch, LogAppendTime). Records
//! inside a batch are never parsed on the hot path.

use bytes::{Buf, BufMut};

/// Bytes of a v2 batch header, up to and including the record count.
pub const HEADER_LEN: usize = 61;
/// The length prefix (base offset + batch length) that precedes `batch_length` bytes.
pub const LOG_OVERHEAD: usize = 12;
/// The smallest legal batch: a header with no records.
pub const MIN_BATCH_LEN: usize = HEADER_LEN;

const OFFSET_BATCH_LENGTH: usize = 8;
const OFFSET_LEADER_EPOCH: usize = 12;
const OFFSET_MAGIC: usize = 16;
const OFFSET_CRC: usize = 17;
const OFFSET_ATTRIBUTES: usize = 21;
const OFFSET_LAST_OFFSET_DELTA: usize = 23;
const OFFSET_BASE_TIMESTAMP: usize = 27;
const OFFSET_MAX_TIMESTAMP: usize = 35;
pub(crate) const OFFSET_PRODUCER_ID: usize = 43;
const OFFSET_PRODUCER_EPOCH: usize = 51;
const OFFSET_BASE_SEQUENCE: usize = 53;
const OFFSET_RECORD_COUNT: usize = 57;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Why a produced batch was refused; each maps to one Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch is truncated or its length field is inconsistent")]
    Corrupt,
    #[error("record batch CRC mismatch")]
    CrcMismatch,
    #[error("record batch magic {0} is not supported (only v2)")]
    UnsupportedMagic(i8),
    #[error("record batch has an unknown compression codec {0}")]
    UnsupportedCompression(i16),
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge { size: usize, max: usize },
    #[error("record batch has {count} records but its last offset delta is {delta}")]
    InvalidRecordCount { count: i32, delta: i32 },
    #[error("transactional and control batches are not supported yet")]
    Transactional,
    /// Records whose timestamps lie outside `[min, max]` (message.timestamp.before.max.ms,
    /// message.timestamp.after.max.ms): (index in the batch, timestamp), or none when
    /// they could not be told apart.
    #[error("{}", timestamp_message(*.min, *.max, .records))]
    InvalidTimestamp {
        min: i64,
        max: i64,
        records: Vec<(i32, i64)>,
    },
    /// The records without a key (indexes in the batch) of a batch to a compacted topic.
    #[error("{}", rejected_message(.records.len(), "Compacted topic cannot accept message without key"))]
    MissingKey { records: Vec<i32> },
    #[error("record batch cannot be decompressed: {0}")]
    Undecodable(String),
    #[error("record batch refused: {0}")]
    Undecompressible(String),
    #[error("record batch is inconsistent with its header: {0}")]
    InvalidRecords(String),
}

impl BatchError {
    /// The Kafka error code a Produce response carries for this failure.
    pub fn error_code(&self) -> i16 {
        match self {
            BatchError::Corrupt | BatchError::CrcMismatch => 2, // CORRUPT_MESSAGE
            BatchError::UnsupportedMagic(_) => 43,              // UNSUPPORTED_FOR_MESSAGE_FORMAT
            BatchError::UnsupportedCompression(_) => 76,        // UNSUPPORTED_COMPRESSION_TYPE
            BatchError::TooLarge { .. } => 10,                  // MESSAGE_TOO_LARGE
            BatchError::InvalidRecordCount { .. }
            | BatchError::MissingKey { .. }
            | BatchError::Undecompressible(_)
            | BatchError::InvalidRecords(_) => 87, // INVALID_RECORD
            BatchError::Undecodable(_) => 2,                    // CORRUPT_MESSAGE
            BatchError::Transactional => 48,                    // INVALID_TXN_STATE
            BatchError::InvalidTimestamp { .. } => 32,          // INVALID_TIMESTAMP
        }
    }
}

impl BatchError {
    /// KIP-467's per-record errors: (index of the record in its batch, why), for a client
    /// to fail exactly those records; empty when the whole batch is at fault.
    pub fn record_errors(&self) -> Vec<(i32, String)> {
        match self {
            BatchError::MissingKey { records } => records
                .iter()
                .map(|&i| (i, format!("Compacted topic cannot accept message without key (record {i})")))
                .collect(),
            BatchError::InvalidTimestamp { min, max, records } => records
                .iter()
                .map(|&(i, ts)| {
                    (i, format!("Timestamp {ts} of record {i} is out of range. The timestamp should be within [{min}, {max}]"))
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The batch-level message when some records were rejected, as Kafka words it.
fn rejected_message(count: usize, why: &str) -> String {
    format!("One or more records have been rejected: {count} record(s): {why}")
}

fn timestamp_message(min: i64, max: i64, records: &[(i32, i64)]) -> String {
    let shown: Vec<String> = records
        .iter()
        .take(3)
        .map(|(i, ts)| format!("record {i}: {ts}"))
        .collect();
    format!(
        "One or more records have been rejected: {} record(s) with a timestamp outside [{min}, {max}] ({})",
        records.len(),
        shown.join(", ")
    )
}

/// The header fields of one v2 batch that the log needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after the length field; the whole batch is `LOG_OVERHEAD + batch_length`.
    pub batch_length: usize,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `buf`; `None` if fewer than [`HEADER_LEN`] bytes.
    pub fn parse(buf: &[u8]) -> Option<BatchHeader> {
        if buf.len() < HEADER_LEN {
            return None;
        }
        let i64_at = |o: usize| (&buf[o..o + 8]).get_i64();
        let i32_at = |o: usize| (&buf[o..o + 4]).get_i32();
        let i16_at = |o: usize| (&buf[o..o + 2]).get_i16();
        Some(BatchHeader {
            base_offset: i64_at(0),
            batch_length: i32_at(OFFSET_BATCH_LENGTH).max(0) as usize,
            partition_leader_epoch: i32_at(OFFSET_LEADER_EPOCH),
            magic: buf[OFFSET_MAGIC] as i8,
            attributes: i16_at(OFFSET_ATTRIBUTES),
            last_offset_delta: i32_at(OFFSET_LAST_OFFSET_DELTA),
            base_timestamp: i64_at(OFFSET_BASE_TIMESTAMP),
            max_timestamp: i64_at(OFFSET_MAX_TIMESTAMP),
            producer_id: i64_at(OFFSET_PRODUCER_ID),
            producer_epoch: i16_at(OFFSET_PRODUCER_EPOCH),
            base_sequence: i32_at(OFFSET_BASE_SEQUENCE),
            record_count: i32_at(OFFSET_RECORD_COUNT),
        })
    }

    /// Total bytes of the batch including the 12-byte prefix.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }
}

/// Splits `records` (the bytes of one partition in a Produce request) into batches and
/// validates each: size, magic, CRC-32C, compression codec, record count. Returns the
/// headers in order; the bytes are untouched.
pub fn validate_batches(
    records: &[u8],
    max_message_bytes: usize,
) -> Result<Vec<BatchHeader>, BatchError> {
    check_batches(records, max_message_bytes, false)
}

/// The checks of [`validate_batches`] for batches already in a log: compaction leaves
/// batches with fewer records than their offset range (gaps where records were removed, even
/// none at all), so the count may be below the offset span, never above it.
pub fn validate_stored_batches(records: &[u8]) -> Result<Vec<BatchHeader>, BatchError> {
    check_batches(records, usize::MAX, true)
}

fn check_batches(
    records: &[u8],
    max_message_bytes: usize,
    stored: bool,
) -> Result<Vec<BatchHeader>, BatchError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        let rest = &records[pos..];
        if rest.len() < LOG_OVERHEAD + 5 {
            return Err(BatchError::Corrupt);
        }
        let magic = rest[OFFSET_MAGIC] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        let header = BatchHeader::parse(rest).ok_or(BatchError::Corrupt)?;
        let total = header.total_len();
        if header.batch_length < MIN_BATCH_LEN - LOG_OVERHEAD || total > rest.len() {
            return Err(BatchError::Corrupt);
        }
        if total > max_message_bytes {
            return Err(BatchError::TooLarge {
                size: total,
                max: max_message_bytes,
            });
        }
        let stored_crc = (&rest[OFFSET_CRC..OFFSET_CRC + 4]).get_u32();
        if crc32c::crc32c(&rest[OFFSET_ATTRIBUTES..total]) != stored_crc {
            return Err(BatchError::CrcMismatch);
        }
        let compression = header.compression();
        if compression > 4 {
            return Err(BatchError::UnsupportedCompression(compression));
        }
        let count_ok = if stored {
            header.record_count >= 0
                && header.last_offset_delta >= 0
                && header.record_count as i64 <= header.last_offset_delta as i64 + 1
        } else {
            header.record_count >= 1 && header.last_offset_delta == header.record_count - 1
        };
        if !count_ok {
            return Err(BatchError::InvalidRecordCount {
                count: header.record_count,
                delta: header.last_offset_delta,
            });
        }
        if !stored && header.attributes & (ATTR_TRANSACTIONAL | ATTR_CONTROL) != 0 {
            return Err(BatchError::Transactional);
        }
        out.push(header);
        pos += total;
    }
    Ok(out)
}

/// Checks the records inside each batch against its header (see
/// [`super::codec::validate_records`]), and with `require_keys` (compacted topics) that every
/// record has a key, and with `timestamps` that every record's timestamp lies within them.
/// Compressed batches are decompressed within a bound; `batches` are the
/// headers [`validate_batches`] returned for `records`.
pub fn validate_contents(
    records: &[u8],
    batches: &[BatchHeader],
    require_keys: bool,
    timestamps: Option<(i64, i64)>,
    limit: usize,
) -> Result<(), BatchError> {
    let mut pos = 0;
    for h in batches {
        super::codec::validate_records(
            h,
            &records[pos..pos + h.total_len()],
            require_keys,
            timestamps,
            limit,
        )?;
        pos += h.total_len();
    }
    Ok(())
}

/// A plain record (no producer id, not transactional) for batches the broker writes itself
/// (metadata records, compacted segments, tests). Its sequence follows its offset because
/// kafka-protocol's encoder starts a new batch whenever offset - sequence changes.
pub fn plain_record(
    offset: i64,
    timestamp: i64,
    key: Option<bytes::Bytes>,
    value: Option<bytes::Bytes>,
) -> kafka_protocol::records::Record {
    kafka_protocol::records::Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: kafka_protocol::records::TimestampType::Creation,
        offset,
        sequence: offset as i32,
        timestamp,
        key,
        value,
        headers: Default::default(),
    }
}

/// Rewrites the fields the broker owns in a batch header: the base offset, the partition
/// leader epoch and, for LogAppendTime topics, the timestamp type and max timestamp (which
/// are covered by the CRC, so it is recomputed over `rest`, the bytes after the header).
pub fn stamp_header(
    header: &mut [u8; HEADER_LEN],
    rest: &[u8],
    base_offset: i64,
    leader_epoch: i32,
    log_append_time_ms: Option<i64>,
) {
    (&mut header[0..8]).put_i64(base_offset);
    (&mut header[OFFSET_LEADER_EPOCH..OFFSET_LEADER_EPOCH + 4]).put_i32(leader_epoch);
    if let Some(now) = log_append_time_ms {
        let attrs =
            (&header[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2]).get_i16() | ATTR_LOG_APPEND_TIME;
        (&mut header[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2]).put_i16(attrs);
        (&mut header[OFFSET_MAX_TIMESTAMP..OFFSET_MAX_TIMESTAMP + 8]).put_i64(now);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header[OFFSET_ATTRIBUTES..]), rest);
        (&mut header[OFFSET_CRC..OFFSET_CRC + 4]).put_u32(crc);
    }
}

/// Whether any whole batch in `records` (batches as a Fetch serves them) is compressed
/// with `codec`; reads the headers only.
pub fn any_batch_with_codec(records: &[u8], codec: i16) -> bool {
    let mut pos = 0;
    while let Some(h) = records.get(pos..).and_then(BatchHeader::parse) {
        if h.compression() == codec {
            return true;
        }
        pos += h.total_len().max(LOG_OVERHEAD);
    }
    false
}

/// A copy of the batch whose 61-byte header is `header` with `records` (already in
/// `codec`) as its records section: the codec bits of the attributes, the batch length and
/// the CRC change; offsets, timestamps, the producer id, epoch and sequence do not.
pub fn rebuild_batch(header: &[u8], codec: i16, records: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + records.len());
    out.extend_from_slice(&header[..HEADER_LEN]);
    out.extend_from_slice(records);
    let batch_length = (out.len() - LOG_OVERHEAD) as i32;
    (&mut out[OFFSET_BATCH_LENGTH..OFFSET_BATCH_LENGTH + 4]).put_i32(batch_length);
    let attrs = (&out[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2]).get_i16();
    let attrs = (attrs & !ATTR_COMPRESSION_MASK) | (codec & ATTR_COMPRESSION_MASK);
    (&mut out[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2]).put_i16(attrs);
    let crc = crc32c::crc32c(&out[OFFSET_ATTRIBUTES..]);
    (&mut out[OFFSET_CRC..OFFSET_CRC + 4]).put_u32(crc);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

    /// Encodes `n` records into one v2 batch with kafka-protocol's encoder.
    pub fn make_batch(n: usize, value_len: usize, compression: Compression) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| {
                let mut r = plain_record(
                    i as i64,
                    1_700_000_000_000 + i as i64,
                    Some(Bytes::from(format!("key-{i}"))),
                    Some(Bytes::from(vec![b'v'; value_len])),
                );
                r.headers = [(
                    StrBytes::from_static_str("h"),
                    Some(Bytes::from_static(b"1")),
                )]
                .into_iter()
                .collect();
                r
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    /// A batch of `n` records from an idempotent producer (its producer fields set and the
    /// CRC recomputed over them).
    pub fn make_idempotent_batch(n: usize, producer_id: i64, epoch: i16, sequence: i32) -> Bytes {
        let mut b = make_batch(n, 10, Compression::None).to_vec();
        (&mut b[OFFSET_PRODUCER_ID..OFFSET_PRODUCER_ID + 8]).put_i64(producer_id);
        (&mut b[OFFSET_PRODUCER_EPOCH..OFFSET_PRODUCER_EPOCH + 2]).put_i16(epoch);
        (&mut b[OFFSET_BASE_SEQUENCE..OFFSET_BASE_SEQUENCE + 4]).put_i32(sequence);
        let crc = crc32c::crc32c(&b[OFFSET_ATTRIBUTES..]);
        (&mut b[OFFSET_CRC..OFFSET_CRC + 4]).put_u32(crc);
        Bytes::from(b)
    }

    #[test]
    fn idempotent_producer_fields_are_parsed() {
        let b = make_idempotent_batch(3, 42, 7, 100);
        let h = validate_batches(&b, 1 << 20).unwrap()[0];
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (42, 7, 100)
        );
    }

    #[test]
    fn validates_a_good_batch() {
        let b = make_batch(3, 10, Compression::None);
        let headers = validate_batches(&b, 1 << 20).unwrap();
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].record_count, 3);
        assert_eq!(headers[0].total_len(), b.len());
    }

    #[test]
    fn rejects_corruption_size_and_truncation() {
        let b = make_batch(3, 10, Compression::None);
        let mut bad = b.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(
            validate_batches(&bad, 1 << 20),
            Err(BatchError::CrcMismatch)
        );
        assert_eq!(
            validate_batches(&b[..b.len() - 1], 1 << 20),
            Err(BatchError::Corrupt)
        );
        assert!(matches!(
            validate_batches(&b, 20),
            Err(BatchError::TooLarge { .. })
        ));
        let mut magic1 = b.to_vec();
        magic1[OFFSET_MAGIC] = 1;
        assert_eq!(
            validate_batches(&magic1, 1 << 20),
            Err(BatchError::UnsupportedMagic(1))
        );
        assert_eq!(
            validate_batches(&[0u8; 5], 1 << 20),
            Err(BatchError::Corrupt)
        );
    }

    #[test]
    fn stamping_keeps_the_crc_valid() {
        let b = make_batch(2, 10, Compression::None);
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&b[..HEADER_LEN]);
        stamp_header(&mut header, &b[HEADER_LEN..], 42, 7, Some(1234));
        let mut whole = header.to_vec();
        whole.extend_from_slice(&b[HEADER_LEN..]);
        let h = validate_batches(&whole, 1 << 20).unwrap()[0];
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.partition_leader_epoch, 7);
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 1234);
    }
}
