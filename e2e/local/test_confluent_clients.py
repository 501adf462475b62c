"""confluent-kafka (librdkafka) Producer and Consumer against the broker: acks levels,
assign/seek without a group, watermarks and offsets_for_times."""

import time

import pytest
from confluent_kafka import OFFSET_END, TopicPartition

from kafka_wire import read_batch_headers
from support import CLIENT_TIMEOUT_S, consumer, create_topic, produce_all, producer, read_partition

BASE_TS_MS = 1_700_000_000_000
CODEC_IDS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def keyed_records(n: int, tag: str, partition: int = 0) -> list[dict]:
    return [
        {
            "key": f"{tag}-key-{i}".encode(),
            "value": f"{tag}-value-{i}-".encode() + bytes([i % 256]) * (i % 40),
            "headers": [("index", str(i).encode()), ("tag", tag.encode())],
            "partition": partition,
        }
        for i in range(n)
    ]


def wait_high_watermark(bootstrap: str, topic: str, partition: int, expected: int) -> tuple[int, int]:
    c = consumer(bootstrap)
    try:
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while True:
            low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=5, cached=False)
            if high >= expected or time.monotonic() > deadline:
                return low, high
            time.sleep(0.05)
    finally:
        c.close()


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_producer_acks_levels_round_trip(broker, topic_name, acks):
    """With acks=0, 1 and all every record is delivered without error; with 1 and all the
    delivery reports carry offsets 0..n-1 in order; reading back yields the same keys,
    values and headers at those offsets."""
    create_topic(broker.bootstrap, topic_name)
    records = keyed_records(60, f"acks{acks}")
    reports = produce_all(producer(broker.bootstrap, acks=acks), topic_name, records)

    errors = [(i, err) for i, (err, _) in enumerate(reports) if err is not None]
    assert not errors, errors[:5]
    if acks != "0":
        assert [msg.offset() for _, msg in reports] == list(range(len(records)))
        assert {msg.partition() for _, msg in reports} == {0}

    assert wait_high_watermark(broker.bootstrap, topic_name, 0, len(records)) == (0, len(records))
    got = read_partition(broker.bootstrap, topic_name)
    assert [r.offset for r in got] == list(range(len(records)))
    assert [(r.key, r.value, list(r.headers)) for r in got] == [
        (rec["key"], rec["value"], rec["headers"]) for rec in records
    ]


@pytest.mark.parametrize(
    "codec",
    [
        "gzip",
        "snappy",
        # librdkafka uses lz4 only with brokers that advertise FindCoordinator (group APIs).
        "lz4",
        "zstd",
    ],
)
def test_compressed_batches_are_stored_as_produced(broker, topic_name, codec):
    """Batches produced with compression.type=<codec> land in the partition's first
    segment still compressed with that codec (attributes), with a valid CRC, holding all
    records; reading them back gives every key and value at consecutive offsets."""
    create_topic(broker.bootstrap, topic_name)
    records = [
        {"key": f"c{i}".encode(), "value": f"{codec} record {i} ".encode() + b"abcdefgh" * 16, "partition": 0}
        for i in range(300)
    ]
    prod = producer(broker.bootstrap, acks="all", compression_type=codec, linger_ms=50)
    reports = produce_all(prod, topic_name, records)
    assert [(err, msg.offset()) for err, msg in reports] == [(None, i) for i in range(len(records))]

    segment = broker.data_dir / f"{topic_name}-0" / f"{0:020d}.log"
    batches = read_batch_headers(segment.read_bytes())
    assert sum(b.record_count for b in batches) == len(records), batches
    for b in batches:
        assert (b.magic, b.crc_valid, b.compression) == (2, True, CODEC_IDS[codec]), b

    got = read_partition(broker.bootstrap, topic_name)
    assert [(r.offset, r.key, r.value) for r in got] == [
        (i, rec["key"], rec["value"]) for i, rec in enumerate(records)
    ]


def test_records_go_to_the_partition_asked_for(broker, topic_name):
    """Records produced to explicit partitions 0, 1, 2 of a 3-partition topic are read
    back from exactly those partitions, each starting at offset 0."""
    create_topic(broker.bootstrap, topic_name, partitions=3)
    prod = producer(broker.bootstrap, acks="all")
    for p in range(3):
        records = keyed_records(5 + p, f"p{p}", partition=p)
        reports = produce_all(prod, topic_name, records)
        assert [(err, msg.partition(), msg.offset()) for err, msg in reports] == [
            (None, p, i) for i in range(len(records))
        ]
    for p in range(3):
        got = read_partition(broker.bootstrap, topic_name, partition=p)
        assert [r.key for r in got] == [f"p{p}-key-{i}".encode() for i in range(5 + p)]


def test_assign_and_seek_without_group(broker, topic_name):
    """A consumer assigned at offset 5 first sees offset 5 (a position inside a batch);
    after seek to 15 the next record is offset 15; no group APIs are needed."""
    create_topic(broker.bootstrap, topic_name)
    records = keyed_records(20, "seek")
    produce_all(producer(broker.bootstrap, acks="all", linger_ms=50), topic_name, records)

    c = consumer(broker.bootstrap)
    try:
        c.assign([TopicPartition(topic_name, 0, 5)])
        first = poll_one(c)
        assert (first.offset(), first.key()) == (5, b"seek-key-5")
        c.seek(TopicPartition(topic_name, 0, 15))
        after_seek = poll_one(c)
        assert (after_seek.offset(), after_seek.key(), after_seek.headers()) == (
            15,
            b"seek-key-15",
            [("index", b"15"), ("tag", b"seek")],
        )
    finally:
        c.close()


def test_assign_at_end_sees_only_new_records(broker, topic_name):
    """Assigned at the logical end offset (ListOffsets latest), the consumer sees only a
    record produced afterwards, at offset 3."""
    create_topic(broker.bootstrap, topic_name)
    prod = producer(broker.bootstrap, acks="all")
    produce_all(prod, topic_name, keyed_records(3, "old"))

    c = consumer(broker.bootstrap)
    try:
        c.assign([TopicPartition(topic_name, 0, OFFSET_END)])
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        # Wait until the consumer has resolved its position to the end offset.
        while time.monotonic() < deadline:
            msg = c.poll(0.1)
            assert msg is None or msg.error(), f"unexpected old record at {msg.offset()}"
            if c.position([TopicPartition(topic_name, 0)])[0].offset == 3:
                break
        produce_all(prod, topic_name, [{"key": b"new", "value": b"fresh", "partition": 0}])
        msg = poll_one(c)
        assert (msg.offset(), msg.key(), msg.value()) == (3, b"new", b"fresh")
    finally:
        c.close()


def test_watermark_offsets(broker, topic_name):
    """get_watermark_offsets is (0, 0) on an empty partition and (0, 7) after seven
    records."""
    create_topic(broker.bootstrap, topic_name)
    c = consumer(broker.bootstrap)
    try:
        tp = TopicPartition(topic_name, 0)
        assert c.get_watermark_offsets(tp, timeout=CLIENT_TIMEOUT_S, cached=False) == (0, 0)
        produce_all(producer(broker.bootstrap, acks="all"), topic_name, keyed_records(7, "wm"))
        assert c.get_watermark_offsets(tp, timeout=CLIENT_TIMEOUT_S, cached=False) == (0, 7)
    finally:
        c.close()


def test_offsets_for_times(broker, topic_name):
    """offsets_for_times returns the first offset whose timestamp is >= the query: records
    at BASE+i*1000 ms, so BASE-1 -> 0, BASE+2500 -> 3, BASE+9000 -> 9, and a time after
    every record -> -1 (end)."""
    create_topic(broker.bootstrap, topic_name)
    records = [
        {"key": f"t{i}".encode(), "value": b"x", "partition": 0, "timestamp": BASE_TS_MS + i * 1000}
        for i in range(10)
    ]
    produce_all(producer(broker.bootstrap, acks="all", linger_ms=20), topic_name, records)

    c = consumer(broker.bootstrap)
    try:
        queries = {BASE_TS_MS - 1: 0, BASE_TS_MS + 2500: 3, BASE_TS_MS + 9000: 9, BASE_TS_MS + 60_000: -1}
        for ts, expected in queries.items():
            [tp] = c.offsets_for_times([TopicPartition(topic_name, 0, ts)], timeout=CLIENT_TIMEOUT_S)
            assert tp.error is None, tp.error
            assert tp.offset == expected, f"timestamp {ts}: offset {tp.offset}, expected {expected}"
    finally:
        c.close()

    got = read_partition(broker.bootstrap, topic_name)
    assert [r.timestamp_ms for r in got] == [BASE_TS_MS + i * 1000 for i in range(10)]


def poll_one(c, timeout_s: float = CLIENT_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    errors = []
    while time.monotonic() < deadline:
        msg = c.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            errors.append(msg.error())
            continue
        return msg
    raise AssertionError(f"no record within {timeout_s}s; errors: {errors[:5]}")
