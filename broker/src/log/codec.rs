//! Bounded decompression and record-level validation of v2 record batches: nothing is ever
//! allocated from a size the input claims, every codec (gzip, snappy raw and xerial, lz4
//! frame, zstd) stops at the topic's `max.decompressed.message.bytes`, and the records inside a batch
//! must match its header (count, offset deltas, lengths) before the broker stores or
//! serves what it decoded.

use super::batch::{BatchError, BatchHeader, HEADER_LEN};
use bytes::Bytes;
use std::io::Read;

/// The default of `max.decompressed.message.bytes`, the most bytes one batch may
/// decompress to (Kafka 4.4's default is 2147483639, no bound). A batch is at most `max.message.bytes` on
/// the wire (1 MiB by default); 64 MiB leaves room for a 64:1 ratio, far above what real
/// producers reach, while a "bomb" (900 MiB of zeros in 0.9 MB of gzip) is refused after
/// reading 64 MiB. With produce handled on the runtime's worker threads, at most a few
/// batches are inflated at once.
pub const MAX_DECOMPRESSED_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Codec ids of the batch attributes.
const GZIP: i16 = 1;
const SNAPPY: i16 = 2;
const LZ4: i16 = 3;
pub const ZSTD: i16 = 4;

/// The xerial snappy-java stream header: magic, then version and compatible version.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

/// Decompresses the records section of a batch (the bytes after its 61-byte header) into at
/// most `limit` bytes. Uncompressed input is returned as is.
pub fn decompress(codec: i16, input: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    let too_large = || {
        BatchError::Undecompressible(format!("the batch decompresses to more than {limit} bytes"))
    };
    let corrupt = |e: &dyn std::fmt::Display| {
        BatchError::Undecodable(format!("the compressed records are invalid: {e}"))
    };
    match codec {
        0 => Ok(input.to_vec()),
        GZIP => read_bounded(flate2::read::MultiGzDecoder::new(input), limit)
            .map_err(|e| e.into_batch_error(too_large, corrupt)),
        LZ4 => {
            let decoder = lz4::Decoder::new(input).map_err(|e| corrupt(&e))?;
            read_bounded(decoder, limit).map_err(|e| e.into_batch_error(too_large, corrupt))
        }
        ZSTD => {
            let decoder =
                zstd::stream::read::Decoder::with_buffer(input).map_err(|e| corrupt(&e))?;
            read_bounded(decoder, limit).map_err(|e| e.into_batch_error(too_large, corrupt))
        }
        SNAPPY => {
            if input.len() >= XERIAL_HEADER_LEN && input.starts_with(XERIAL_MAGIC) {
                let mut out = Vec::new();
                let mut rest = &input[XERIAL_HEADER_LEN..];
                while !rest.is_empty() {
                    if rest.len() < 4 {
                        return Err(corrupt(&"a block length is cut short"));
                    }
                    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                    let block = rest
                        .get(4..4 + len)
                        .ok_or_else(|| corrupt(&"a block is cut short"))?;
                    snappy_block(block, &mut out, limit, too_large, corrupt)?;
                    rest = &rest[4 + len..];
                }
                Ok(out)
            } else {
                let mut out = Vec::new();
                snappy_block(input, &mut out, limit, too_large, corrupt)?;
                Ok(out)
            }
        }
        other => Err(BatchError::UnsupportedCompression(other)),
    }
}

/// Appends one raw snappy block to `out`, checking the length the block claims against what
/// is left of `limit` before anything is allocated for it.
fn snappy_block(
    block: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
    too_large: impl Fn() -> BatchError,
    corrupt: impl Fn(&dyn std::fmt::Display) -> BatchError,
) -> Result<(), BatchError> {
    let claimed = snap::raw::decompress_len(block).map_err(|e| corrupt(&e))?;
    if claimed > limit.saturating_sub(out.len()) {
        return Err(too_large());
    }
    let start = out.len();
    out.resize(start + claimed, 0);
    let n = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| corrupt(&e))?;
    out.truncate(start + n);
    Ok(())
}

enum ReadError {
    TooLarge,
    Corrupt(std::io::Error),
}

impl ReadError {
    fn into_batch_error(
        self,
        too_large: impl Fn() -> BatchError,
        corrupt: impl Fn(&dyn std::fmt::Display) -> BatchError,
    ) -> BatchError {
        match self {
            ReadError::TooLarge => too_large(),
            ReadError::Corrupt(e) => corrupt(&e),
        }
    }
}

/// Reads a decoder to its end in 64 KiB steps, refusing more than `limit` bytes: memory
/// follows what really comes out, never a size a stream header announces.
fn read_bounded(mut r: impl Read, limit: usize) -> Result<Vec<u8>, ReadError> {
    const STEP: usize = 64 * 1024;
    let mut out = Vec::new();
    loop {
        if out.len() > limit {
            return Err(ReadError::TooLarge);
        }
        let start = out.len();
        out.resize(start + STEP, 0);
        match r.read(&mut out[start..]) {
            Ok(0) => {
                out.truncate(start);
                return Ok(out);
            }
            Ok(n) => out.truncate(start + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => out.truncate(start),
            Err(e) => return Err(ReadError::Corrupt(e)),
        }
    }
}

/// The records section of a batch (`batch`: the whole batch, its header `h`), decompressed
/// within `limit` bytes; borrowed when the batch is uncompressed.
fn records_section<'a>(
    h: &BatchHeader,
    batch: &'a [u8],
    limit: usize,
) -> Result<std::borrow::Cow<'a, [u8]>, BatchError> {
    let body = batch
        .get(HEADER_LEN..h.total_len())
        .ok_or(BatchError::Corrupt)?;
    Ok(if h.compression() == 0 {
        std::borrow::Cow::Borrowed(body)
    } else {
        std::borrow::Cow::Owned(decompress(h.compression(), body, limit)?)
    })
}

/// Reads the records of one batch (`batch`: the whole batch, header included), decompressing
/// them within `limit` bytes, and checks them against the header: exactly
/// `record_count` records, offset deltas 0, 1, 2, ..., every length inside its record, no
/// bytes left over, (with `require_keys`, for compacted topics) a key on every record, and
/// (with `timestamps`, for CreateTime topics) every record's timestamp within `[min, max]`.
pub fn validate_records(
    h: &BatchHeader,
    batch: &[u8],
    require_keys: bool,
    timestamps: Option<(i64, i64)>,
    limit: usize,
) -> Result<(), BatchError> {
    let records = records_section(h, batch, limit)?;
    let mut out_of_range = Vec::new();
    walk_records(
        &records,
        h.record_count,
        require_keys,
        None,
        &mut |i, delta| {
            if let Some((min, max)) = timestamps {
                let ts = h.base_timestamp.saturating_add(delta);
                if ts < min || ts > max {
                    out_of_range.push((i, ts));
                }
            }
        },
    )?;
    match timestamps {
        Some((min, max)) if !out_of_range.is_empty() => Err(BatchError::InvalidTimestamp {
            min,
            max,
            records: out_of_range,
        }),
        _ => Ok(()),
    }
}

/// [`validate_records`] for a batch already in a log (verify-log): compaction may have
/// removed records, so offset deltas need only increase and stay within the header's range.
pub fn validate_stored_records(
    h: &BatchHeader,
    batch: &[u8],
    limit: usize,
) -> Result<(), BatchError> {
    let records = records_section(h, batch, limit)?;
    walk_records(
        &records,
        h.record_count,
        false,
        Some(h.last_offset_delta),
        &mut |_, _| {},
    )
}

/// Walks `record_count` v2 records in `data`, calling `on_record` with each record's
/// index and timestamp delta. Offset deltas must be 0, 1, 2, ... (a produced batch), or
/// with `stored_last_delta` increase up to it. With `require_keys`, every record without a
/// key is named in one `MissingKey`.
fn walk_records(
    data: &[u8],
    record_count: i32,
    require_keys: bool,
    stored_last_delta: Option<i32>,
    on_record: &mut dyn FnMut(i32, i64),
) -> Result<(), BatchError> {
    let invalid = |what: String| BatchError::InvalidRecords(what);
    let mut keyless = Vec::new();
    let mut pos = 0usize;
    let mut previous_delta = -1i64;
    for i in 0..record_count.max(0) {
        if pos >= data.len() {
            return Err(invalid(format!(
                "the batch header counts {record_count} records but the batch holds {i}"
            )));
        }
        let len = varint(data, &mut pos)
            .ok_or_else(|| invalid(format!("record {i} has an unreadable length")))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .filter(|e| *e <= data.len())
            .ok_or_else(|| invalid(format!("record {i} claims {len} bytes beyond the batch")))?;
        let rec = &data[..end];
        let bad = |field: &str| invalid(format!("record {i} has an invalid {field}"));
        // attributes (int8), timestamp delta (varlong), offset delta (varint)
        pos += 1;
        if pos > end {
            return Err(bad("attributes"));
        }
        let timestamp_delta = varint(rec, &mut pos).ok_or_else(|| bad("timestamp delta"))?;
        let delta = varint(rec, &mut pos).ok_or_else(|| bad("offset delta"))?;
        let delta_ok = match stored_last_delta {
            None => delta == i as i64,
            Some(last) => delta > previous_delta && delta <= last as i64,
        };
        previous_delta = delta;
        if !delta_ok {
            return Err(invalid(format!(
                "record {i} has offset delta {delta}; the deltas of a batch must be 0, 1, 2, ..."
            )));
        }
        let key = sized(rec, &mut pos).ok_or_else(|| bad("key"))?;
        if require_keys && key.is_none() {
            keyless.push(i);
        }
        sized(rec, &mut pos).ok_or_else(|| bad("value"))?;
        let headers = varint(rec, &mut pos)
            .filter(|n| *n >= 0)
            .ok_or_else(|| bad("header count"))?;
        for _ in 0..headers {
            // A header key is a non-null string; its value may be null.
            sized(rec, &mut pos)
                .flatten()
                .ok_or_else(|| bad("header key"))?;
            sized(rec, &mut pos).ok_or_else(|| bad("header value"))?;
        }
        if pos != end {
            return Err(invalid(format!(
                "record {i}'s fields do not add up to its length"
            )));
        }
        on_record(i, timestamp_delta);
    }
    if pos != data.len() {
        return Err(invalid(format!(
            "the batch holds more than the {record_count} records its header counts"
        )));
    }
    if !keyless.is_empty() {
        return Err(BatchError::MissingKey { records: keyless });
    }
    Ok(())
}

/// A zigzag varint/varlong at `*pos` within `buf`, advancing `pos`.
fn varint(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut raw: u64 = 0;
    for shift in (0..70).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if shift == 63 && b > 1 {
            return None;
        }
        raw |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    None
}

/// A length-prefixed field (-1 for null): `Some(None)` for null, `Some(Some(bytes))`.
fn sized<'a>(buf: &'a [u8], pos: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = varint(buf, pos)?;
    if len == -1 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
    let out = &buf[*pos..end];
    *pos = end;
    Some(Some(out))
}

/// A codec and level the broker compresses batches with (a topic's `compression.type`
/// other than `producer`, and its `compression.<codec>.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    /// The attributes' codec id: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub id: i16,
    pub level: i32,
}

impl Codec {
    /// The codec `compression.type` names, `None` for `producer` (or anything unknown, which
    /// config validation refuses before it gets here); `level` reads the level property of
    /// a codec by its name.
    pub fn from_config(compression_type: &str, level: impl Fn(&str) -> i32) -> Option<Codec> {
        let (id, name) = match compression_type {
            "uncompressed" => (0, ""),
            "gzip" => (GZIP, "gzip"),
            "snappy" => (SNAPPY, ""),
            "lz4" => (LZ4, "lz4"),
            "zstd" => (ZSTD, "zstd"),
            _ => return None,
        };
        let level = if name.is_empty() { 0 } else { level(name) };
        Some(Codec { id, level })
    }

    /// Compresses a records section (the records after a batch header) the way Kafka's
    /// clients frame each codec, so every client decodes it: gzip, snappy in the xerial
    /// framing of snappy-java, an lz4 frame of independent 64 KiB blocks without
    /// checksums (what Kafka's KafkaLZ4BlockOutputStream writes), a zstd frame.
    pub fn compress(&self, records: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let in_memory = "compressing into memory cannot fail";
        match self.id {
            GZIP => {
                let level = match self.level {
                    -1 => flate2::Compression::default(),
                    l => flate2::Compression::new(l.clamp(1, 9) as u32),
                };
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(records.len() / 2 + 64),
                    level,
                );
                gz.write_all(records).expect(in_memory);
                gz.finish().expect(in_memory)
            }
            SNAPPY => {
                // snappy-java's SnappyOutputStream: the header, then 32 KiB blocks, each
                // prefixed by its compressed length.
                const BLOCK: usize = 32 * 1024;
                let mut out = Vec::with_capacity(records.len() / 2 + XERIAL_HEADER_LEN);
                out.extend_from_slice(XERIAL_MAGIC);
                out.extend_from_slice(&1i32.to_be_bytes());
                out.extend_from_slice(&1i32.to_be_bytes());
                let mut encoder = snap::raw::Encoder::new();
                for chunk in records.chunks(BLOCK) {
                    let block = encoder.compress_vec(chunk).expect(in_memory);
                    out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                    out.extend_from_slice(&block);
                }
                out
            }
            LZ4 => {
                let mut lz = lz4::EncoderBuilder::new()
                    .level(self.level.clamp(1, 17) as u32)
                    .block_size(lz4::BlockSize::Max64KB)
                    .block_mode(lz4::BlockMode::Independent)
                    .block_checksum(lz4::liblz4::BlockChecksum::NoBlockChecksum)
                    .checksum(lz4::ContentChecksum::NoChecksum)
                    .build(Vec::with_capacity(records.len() / 2 + 64))
                    .expect(in_memory);
                lz.write_all(records).expect(in_memory);
                let (out, done) = lz.finish();
                done.expect(in_memory);
                out
            }
            ZSTD => zstd::bulk::compress(records, self.level).expect(in_memory),
            _ => records.to_vec(),
        }
    }
}

/// Re-encodes `batch` (whole, header included, its header `h`) in `target` when its codec
/// differs, as Kafka's broker does for a topic whose `compression.type` names a codec; the
/// records themselves, their offsets, timestamps and the producer's id, epoch and sequence
/// stay as they were. `None` when the batch already has the codec.
pub fn recompress(
    h: &BatchHeader,
    batch: &[u8],
    target: Codec,
    limit: usize,
) -> Result<Option<Vec<u8>>, BatchError> {
    if h.compression() == target.id {
        return Ok(None);
    }
    let records = records_section(h, batch, limit)?;
    let section = match target.id {
        0 => records,
        _ => std::borrow::Cow::Owned(target.compress(&records)),
    };
    Ok(Some(super::batch::rebuild_batch(
        batch, target.id, &section,
    )))
}

/// [`recompress`] over every batch of a produced partition (`headers` are its batches'
/// headers in order): the whole records buffer again when any batch changed, else `None`.
pub fn recompress_all(
    records: &[u8],
    headers: &[BatchHeader],
    target: Codec,
    limit: usize,
) -> Result<Option<Vec<u8>>, BatchError> {
    if headers.iter().all(|h| h.compression() == target.id) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(records.len());
    let mut pos = 0;
    for h in headers {
        let batch = &records[pos..pos + h.total_len()];
        match recompress(h, batch, target, limit)? {
            Some(b) => out.extend_from_slice(&b),
            None => out.extend_from_slice(batch),
        }
        pos += h.total_len();
    }
    Ok(Some(out))
}

/// Decodes one stored or produced batch with kafka-protocol, decompressing within `limit`
/// bytes (for the cleaner and timestamp lookups, which need the records themselves).
pub fn decode_batch(
    batch: Bytes,
    limit: usize,
) -> Result<kafka_protocol::records::RecordSet, BatchError> {
    let mut b = batch;
    kafka_protocol::records::RecordBatchDecoder::decode_with_custom_compression(
        &mut b,
        Some(
            |records: &mut Bytes,
             c: kafka_protocol::records::Compression|
             -> anyhow::Result<Bytes> {
                let codec = match c {
                    kafka_protocol::records::Compression::None => 0,
                    kafka_protocol::records::Compression::Gzip => GZIP,
                    kafka_protocol::records::Compression::Snappy => SNAPPY,
                    kafka_protocol::records::Compression::Lz4 => LZ4,
                    kafka_protocol::records::Compression::Zstd => ZSTD,
                };
                if codec == 0 {
                    return Ok(records.clone());
                }
                decompress(codec, records, limit)
                    .map(Bytes::from)
                    .map_err(|e| anyhow::anyhow!("{e}"))
            },
        ),
    )
    .map_err(|e| BatchError::Undecodable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::tests::make_batch;
    use crate::log::batch::validate_batches;
    use kafka_protocol::records::Compression;
    use std::io::Write;

    fn header(b: &[u8]) -> BatchHeader {
        validate_batches(b, usize::MAX).unwrap()[0]
    }

    #[test]
    fn every_codec_round_trips_and_validates() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = make_batch(50, 100, c);
            let h = header(&b);
            validate_records(&h, &b, true, None, MAX_DECOMPRESSED_BATCH_BYTES)
                .unwrap_or_else(|e| panic!("{c:?}: {e}"));
            let set = decode_batch(b.clone(), MAX_DECOMPRESSED_BATCH_BYTES).unwrap();
            assert_eq!(set.records.len(), 50);
        }
    }

    #[test]
    fn recompression_keeps_every_record_and_the_producers_fields() {
        let codecs = [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];
        for from in codecs {
            // 3,000 records of 100 bytes: several lz4 and snappy blocks.
            let mut b = make_batch(3000, 100, from).to_vec();
            // An idempotent producer's fields, which recompression must carry over.
            b[43..51].copy_from_slice(&77i64.to_be_bytes());
            b[51..53].copy_from_slice(&3i16.to_be_bytes());
            b[53..57].copy_from_slice(&1234i32.to_be_bytes());
            let crc = crc32c::crc32c(&b[21..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
            let h = header(&b);
            let before =
                decode_batch(Bytes::from(b.clone()), MAX_DECOMPRESSED_BATCH_BYTES).unwrap();
            for (to, name) in [
                (Compression::None, "uncompressed"),
                (Compression::Gzip, "gzip"),
                (Compression::Snappy, "snappy"),
                (Compression::Lz4, "lz4"),
                (Compression::Zstd, "zstd"),
            ] {
                let level = |codec: &str| match codec {
                    "gzip" => 9,
                    "lz4" => 1,
                    _ => -5,
                };
                let target = Codec::from_config(name, level).unwrap();
                let Some(out) = recompress(&h, &b, target, MAX_DECOMPRESSED_BATCH_BYTES).unwrap()
                else {
                    assert_eq!(from, to, "only a batch in the target codec is kept");
                    continue;
                };
                let h2 = header(&out);
                assert_eq!(h2.compression(), target.id, "{from:?} -> {to:?}");
                assert_eq!(
                    (h2.producer_id, h2.producer_epoch, h2.base_sequence),
                    (77, 3, 1234)
                );
                assert_eq!(
                    (h2.record_count, h2.last_offset_delta, h2.max_timestamp),
                    (h.record_count, h.last_offset_delta, h.max_timestamp)
                );
                validate_records(&h2, &out, true, None, MAX_DECOMPRESSED_BATCH_BYTES).unwrap();
                let after = decode_batch(Bytes::from(out), MAX_DECOMPRESSED_BATCH_BYTES).unwrap();
                assert_eq!(after.compression, to);
                assert_eq!(after.records.len(), 3000);
                for (a, b) in before.records.iter().zip(&after.records) {
                    assert_eq!(
                        (
                            a.offset,
                            a.timestamp,
                            &a.key,
                            &a.value,
                            &a.headers,
                            a.sequence
                        ),
                        (
                            b.offset,
                            b.timestamp,
                            &b.key,
                            &b.value,
                            &b.headers,
                            b.sequence
                        ),
                        "{from:?} -> {to:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn recompress_all_rewrites_only_when_a_batch_differs() {
        let lz4 = Codec::from_config("lz4", |_| 9).unwrap();
        let a = make_batch(10, 10, Compression::Lz4);
        let b = make_batch(10, 10, Compression::None);
        let same = [a.clone(), a.clone()].concat();
        let hs = validate_batches(&same, usize::MAX).unwrap();
        assert_eq!(
            recompress_all(&same, &hs, lz4, MAX_DECOMPRESSED_BATCH_BYTES).unwrap(),
            None
        );
        let mixed = [a.clone(), b].concat();
        let hs = validate_batches(&mixed, usize::MAX).unwrap();
        let out = recompress_all(&mixed, &hs, lz4, MAX_DECOMPRESSED_BATCH_BYTES)
            .unwrap()
            .unwrap();
        let hs2 = validate_batches(&out, usize::MAX).unwrap();
        assert_eq!(
            hs2.iter().map(|h| h.compression()).collect::<Vec<_>>(),
            [LZ4, LZ4]
        );
        assert_eq!(
            &out[..a.len()],
            &a[..],
            "the lz4 batch is kept byte for byte"
        );
        assert_eq!(Codec::from_config("producer", |_| 0), None);
    }

    #[test]
    fn bombs_stop_at_the_limit_for_every_codec() {
        let zeros = vec![0u8; 8 << 20];
        let limit = 1 << 20;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&zeros).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&zeros[..], 3).unwrap();
        let mut lz = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        lz.write_all(&zeros).unwrap();
        let lz = lz.finish().0;
        let raw_snappy = snap::raw::Encoder::new().compress_vec(&zeros).unwrap();
        let mut xerial = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        xerial.extend((raw_snappy.len() as u32).to_be_bytes());
        xerial.extend(&raw_snappy);
        for (codec, data) in [
            (GZIP, &gz),
            (ZSTD, &zst),
            (LZ4, &lz),
            (SNAPPY, &raw_snappy),
            (SNAPPY, &xerial),
        ] {
            let e = decompress(codec, data, limit).unwrap_err();
            assert!(matches!(e, BatchError::Undecompressible(_)), "{codec}: {e}");
            assert_eq!(
                decompress(codec, data, 16 << 20).unwrap().len(),
                zeros.len()
            );
        }
    }

    #[test]
    fn lying_sizes_allocate_nothing() {
        // A snappy block claiming 4 GiB (varint 0xffffffff) in 41 bytes, raw and xerial.
        let mut raw = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
        raw.extend([0u8; 36]);
        let mut xerial = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        xerial.extend((raw.len() as u32).to_be_bytes());
        xerial.extend(&raw);
        for data in [&raw, &xerial] {
            assert!(matches!(
                decompress(SNAPPY, data, MAX_DECOMPRESSED_BATCH_BYTES),
                Err(BatchError::Undecompressible(_))
            ));
        }
        // Garbage under every codec is refused, not stored.
        for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
            assert!(decompress(codec, b"\x01\x02garbage-bytes-here", 1 << 20).is_err());
        }
    }

    #[test]
    fn records_must_match_the_header() {
        let b = make_batch(3, 10, Compression::None);
        let h = header(&b);
        validate_records(&h, &b, false, None, MAX_DECOMPRESSED_BATCH_BYTES).unwrap();
        // The header counting more records than the batch holds (and a delta to match).
        let mut lying = h;
        lying.record_count = i32::MAX;
        assert!(matches!(
            validate_records(&lying, &b, false, None, MAX_DECOMPRESSED_BATCH_BYTES),
            Err(BatchError::InvalidRecords(_))
        ));
        lying.record_count = 2;
        assert!(matches!(
            validate_records(&lying, &b, false, None, MAX_DECOMPRESSED_BATCH_BYTES),
            Err(BatchError::InvalidRecords(_))
        ));
        // Garbage records with a valid header.
        let mut garbage = b.to_vec();
        for x in &mut garbage[HEADER_LEN..] {
            *x = 0xee;
        }
        assert!(validate_records(&h, &garbage, false, None, MAX_DECOMPRESSED_BATCH_BYTES).is_err());
    }

    #[test]
    fn compacted_topics_need_keys() {
        let mut r = crate::log::batch::plain_record(0, 1, None, Some(Bytes::from_static(b"v")));
        r.key = None;
        let mut buf = bytes::BytesMut::new();
        kafka_protocol::records::RecordBatchEncoder::encode(
            &mut buf,
            [&r],
            &kafka_protocol::records::RecordEncodeOptions {
                version: 2,
                compression: Compression::Lz4,
            },
        )
        .unwrap();
        let h = header(&buf);
        assert_eq!(
            validate_records(&h, &buf, true, None, MAX_DECOMPRESSED_BATCH_BYTES),
            Err(BatchError::MissingKey { records: vec![0] })
        );
        validate_records(&h, &buf, false, None, MAX_DECOMPRESSED_BATCH_BYTES).unwrap();
    }

    #[test]
    fn each_offending_record_is_named() {
        let record = |i: i64, key: Option<&'static [u8]>, timestamp: i64| {
            crate::log::batch::plain_record(
                i,
                timestamp,
                key.map(Bytes::from_static),
                Some(Bytes::from_static(b"v")),
            )
        };
        // Out of time order: the header's first and greatest timestamps are in range, the
        // middle record is not.
        let records = [
            record(0, None, 1_000),
            record(1, Some(b"k"), 10),
            record(2, None, 1_500),
        ];
        for compression in [Compression::None, Compression::Zstd] {
            let mut buf = bytes::BytesMut::new();
            kafka_protocol::records::RecordBatchEncoder::encode(
                &mut buf,
                records.iter(),
                &kafka_protocol::records::RecordEncodeOptions {
                    version: 2,
                    compression,
                },
            )
            .unwrap();
            let h = header(&buf);
            assert_eq!(
                validate_records(&h, &buf, true, None, MAX_DECOMPRESSED_BATCH_BYTES),
                Err(BatchError::MissingKey {
                    records: vec![0, 2]
                })
            );
            let refused = validate_records(
                &h,
                &buf,
                false,
                Some((500, 2_000)),
                MAX_DECOMPRESSED_BATCH_BYTES,
            )
            .unwrap_err();
            assert_eq!(
                refused,
                BatchError::InvalidTimestamp {
                    min: 500,
                    max: 2_000,
                    records: vec![(1, 10)]
                }
            );
            assert_eq!(refused.error_code(), 32);
            let errors = refused.record_errors();
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].0, 1);
            assert!(
                errors[0]
                    .1
                    .contains("Timestamp 10 of record 1 is out of range"),
                "{errors:?}"
            );
            validate_records(
                &h,
                &buf,
                false,
                Some((0, 2_000)),
                MAX_DECOMPRESSED_BATCH_BYTES,
            )
            .unwrap();
        }
    }

    /// The cost of validating produced batches (docs/benchmarks.md): run with
    /// `cargo test --release -p strom-broker validation_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn validation_cost() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            // librdkafka's default batch.size is 1 MB: 10,000 records of 100 bytes.
            let b = make_batch(10_000, 100, c);
            let h = header(&b);
            let rounds = 50;
            let started = std::time::Instant::now();
            for _ in 0..rounds {
                validate_records(&h, &b, false, None, MAX_DECOMPRESSED_BATCH_BYTES).unwrap();
            }
            let secs = started.elapsed().as_secs_f64();
            let crc_started = std::time::Instant::now();
            for _ in 0..rounds {
                validate_batches(&b, usize::MAX).unwrap();
            }
            let crc_secs = crc_started.elapsed().as_secs_f64();
            let records = 10_000.0 * rounds as f64;
            println!(
                "{c:?}: batch {} bytes; records check {:.0} ns/record ({:.0} MB/s of batch), CRC {:.0} ns/record",
                b.len(),
                secs * 1e9 / records,
                b.len() as f64 * rounds as f64 / secs / 1e6,
                crc_secs * 1e9 / records
            );
        }
    }
}
