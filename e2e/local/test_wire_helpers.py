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


def test_describe_quorum_request_decodes_with_kafka_python():
    """Our DescribeQuorum request (flexible header v2, compact arrays) is read back by
    kafka-python's schema-driven decoder."""
    from kafka.protocol.admin.cluster import DescribeQuorumRequest

    for version in (0, 1):
        raw = w.describe_quorum_request(42, version)
        assert int.from_bytes(raw[:4], "big") == len(raw) - 4
        req = DescribeQuorumRequest.decode(raw[4:], version=version, header=True)
        assert req._header.request_api_key == 55
        assert req._header.request_api_version == version
        assert req._header.correlation_id == 42
        assert [(t.topic_name, [p.partition_index for p in t.partitions]) for t in req.topics] == [
            ("__cluster_metadata", [0])
        ]


def test_describe_quorum_response_decoding_matches_kafka_python_encoding():
    """A response encoded by kafka-python (v0 and v1) decodes to the same leader, epoch,
    high watermark, voters and observers."""
    from kafka.protocol.admin.cluster import DescribeQuorumResponse as R

    for version in (0, 1):
        extra = {"last_fetch_timestamp": 1700, "last_caught_up_timestamp": 1600} if version else {}
        voters = [R.TopicData.PartitionData.ReplicaState(replica_id=i, log_end_offset=100 + i, **extra) for i in (11, 12, 13)]
        observers = [R.TopicData.PartitionData.ReplicaState(replica_id=21, log_end_offset=99, **extra)]
        part = R.TopicData.PartitionData(
            partition_index=0,
            error_code=0,
            leader_id=12,
            leader_epoch=7,
            high_watermark=101,
            current_voters=voters,
            observers=observers,
        )
        resp = R(error_code=0, topics=[R.TopicData(topic_name="__cluster_metadata", partitions=[part])])
        resp.API_VERSION = version  # before the header: kafka-python's setter expects a request header
        resp.with_header(correlation_id=9)
        raw = resp.encode(header=True)
        assert int.from_bytes(raw[:4], "big") == 9
        got = w.decode_describe_quorum_response(raw[4:], version)
        assert got.error_code == 0
        p = got.metadata_partition()
        assert (p.leader_id, p.leader_epoch, p.high_watermark, p.error_code) == (12, 7, 101, 0)
        assert [(v.replica_id, v.log_end_offset) for v in p.voters] == [(11, 111), (12, 112), (13, 113)]
        assert [(o.replica_id, o.log_end_offset) for o in p.observers] == [(21, 99)]
        if version:
            assert p.voters[0].last_fetch_timestamp == 1700 and p.voters[0].last_caught_up_timestamp == 1600


def test_tagged_fields_and_compact_types_are_read():
    """Unknown tagged fields (e.g. DescribeQuorum v1's HighWatermarkUpdateTimeMs, tag 0)
    are skipped by length; compact strings and arrays carry length + 1, 0 for null."""
    r = w.Reader(b"\x02" + b"\x00\x08" + w.int64(123456) + b"\x05\x01\xff" + b"\x04abc" + b"\x00" + b"\x03" + w.int32(1) + w.int32(2))
    assert r.tagged_fields() == {0: w.int64(123456), 5: b"\xff"}
    assert r.compact_string() == "abc"
    assert r.compact_nullable_string() is None
    assert r.compact_array(w.Reader.int32) == [1, 2]
    assert r.remaining() == 0
    assert w.Reader(w.unsigned_varint(300)).unsigned_varint() == 300
