"""The hand-built frames themselves, checked without a broker: if these were wrong, the
bad-input tests would test nothing."""

from kafka.record.default_records import DefaultRecordBatch

import kafka_wire as w


def test_crc32c_known_vectors():
    """CRC-32C matches the standard check value and RFC 3720's test vectors."""
    assert w.crc32c(b"123456789") == 0xE3069283
    assert w.crc32c(b"") == 0
    assert w.crc32c(bytes(32)) == 0x8A9136AA
    assert w.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert w.crc32c(bytes(range(32))) == 0x46DD794E
    assert w.crc32c(b"6789", w.crc32c(b"12345")) == 0xE3069283


def test_zigzag_varints():
    """Record fields use zigzag varints: 0→00, -1→01, 1→02, 63→7e, -64→7f, 64→8001, 300→d804."""
    assert w.varint(0) == b"\x00"
    assert w.varint(-1) == b"\x01"
    assert w.varint(1) == b"\x02"
    assert w.varint(63) == b"\x7e"
    assert w.varint(-64) == b"\x7f"
    assert w.varint(64) == b"\x80\x01"
    assert w.varint(300) == b"\xd8\x04"
    assert w.unsigned_varint(300) == b"\xac\x02"


def test_record_batch_decodes_with_independent_parser():
    """Our v2 batch is read back by kafka-python's own record parser, CRC included, and a
    flipped byte breaks exactly the CRC."""
    records = [
        w.Record(b"k0", b"v0", [("h", b"x")], 0),
        w.Record(None, b"v1" * 50, [], 7),
        w.Record(b"k2", None, [("a", b"1"), ("b", None)], 9),
    ]
    batch = w.record_batch(records, base_timestamp_ms=1_700_000_000_000)
    assert w.batch_crc_is_valid(batch)
    assert batch[w.BATCH_MAGIC_OFFSET] == 2
    assert int.from_bytes(batch[w.BATCH_LENGTH_OFFSET : w.BATCH_LENGTH_OFFSET + 4], "big") == len(batch) - 12

    parsed = DefaultRecordBatch(batch)
    assert parsed.validate_crc()
    got = [(r.offset, r.key, r.value, list(r.headers), r.timestamp) for r in parsed]
    assert got == [
        (0, b"k0", b"v0", [("h", b"x")], 1_700_000_000_000),
        (1, None, b"v1" * 50, [], 1_700_000_000_007),
        (2, b"k2", None, [("a", b"1"), ("b", None)], 1_700_000_000_009),
    ]

    bad = w.corrupt_batch(batch)
    assert len(bad) == len(batch)
    assert not w.batch_crc_is_valid(bad)
    assert not DefaultRecordBatch(bad).validate_crc()


def test_produce_v3_frame_layout():
    """Produce v3 frame: length prefix, header v1 (key 0, version 3), null transactional
    id, acks, timeout, one topic with one partition and the batch as bytes."""
    batch = w.record_batch([w.Record(b"k", b"v")], base_timestamp_ms=0)
    frame = w.produce_request_v3("t", 4, batch, correlation_id=9, acks=1, timeout_ms=500)
    r = w.Reader(frame)
    assert r.int32() == len(frame) - 4
    assert (r.int16(), r.int16(), r.int32(), r.nullable_string()) == (0, 3, 9, "strom-e2e")
    assert r.nullable_string() is None
    assert (r.int16(), r.int32()) == (1, 500)
    assert r.int32() == 1 and r.string() == "t"
    assert r.int32() == 1 and r.int32() == 4
    assert r.int32() == len(batch)
    assert frame[r.pos :] == batch


def test_api_versions_response_v0_decoding():
    """The v0 ApiVersions decoder reads error code and ranges."""
    body = w.int16(35) + w.int32(2) + w.int16(0) + w.int16(3) + w.int16(10) + w.int16(18) + w.int16(0) + w.int16(4)
    resp = w.decode_api_versions_response_v0(body)
    assert resp.error_code == 35
    assert resp.api_keys == {0: (3, 10), 18: (0, 4)}


def test_read_batch_headers_walks_consecutive_batches():
    """Batch headers are read back from batches laid end to end, and a torn tail is
    ignored."""
    first = w.record_batch([w.Record(b"a", b"1"), w.Record(b"b", b"2")], base_offset=0)
    second = w.record_batch([w.Record(None, b"3")], base_offset=2)
    headers = w.read_batch_headers(first + second + second[:30])
    assert [(h.base_offset, h.magic, h.crc_valid, h.compression, h.last_offset_delta, h.record_count)
            for h in headers] == [(0, 2, True, 0, 1, 2), (2, 2, True, 0, 0, 1)]
