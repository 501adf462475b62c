"""Log compaction with real clients against the real broker: a compacted topic converges
to the latest value per key, tombstoned keys disappear after delete.retention.ms, and a
record without a key is refused with INVALID_RECORD."""

from __future__ import annotations

import time

import pytest

from confluent_kafka import TopicPartition

from support import CLIENT_TIMEOUT_S, consumer, create_topic, produce_all, producer

INVALID_RECORD = 87


@pytest.fixture(scope="module")
def cbroker(module_broker_factory):
    """A broker whose cleaner looks for work every 100 ms instead of every 15 s."""
    return module_broker_factory.start({"log.cleaner.backoff.ms": 100})


COMPACTED = {
    "cleanup.policy": "compact",
    "segment.bytes": "16384",
    "segment.ms": "300",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "1000",
    "file.delete.delay.ms": "0",
}


def roll_active_segment(bootstrap: str, topic: str) -> None:
    """The active segment is never compacted: wait past segment.ms and append a marker so
    everything before it sits in closed segments."""
    time.sleep(0.4)
    assert produce_all(producer(bootstrap, acks="all"), topic, [{"key": b"marker", "value": b"m"}])[0][0] is None


def read_partition(bootstrap: str, topic: str):
    """Every record of partition 0 up to the high watermark. Unlike support.read_partition
    this expects gaps: compaction removes offsets."""
    c = consumer(bootstrap)
    try:
        tp = TopicPartition(topic, 0)
        low, high = c.get_watermark_offsets(tp, timeout=CLIENT_TIMEOUT_S, cached=False)
        if high <= low:
            return []
        c.assign([TopicPartition(topic, 0, low)])
        out = []
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            out.append(Rec(msg.offset(), msg.key(), msg.value()))
            if msg.offset() >= high - 1:
                return out
        raise AssertionError(f"did not reach offset {high - 1} of {topic}; got {len(out)} records")
    finally:
        c.close()


class Rec:
    def __init__(self, offset, key, value):
        self.offset, self.key, self.value = offset, key, value

    def __repr__(self):
        return f"Rec({self.offset}, {self.key!r}, {self.value!r})"


def latest_by_key(records) -> dict[bytes, bytes | None]:
    out: dict[bytes, bytes | None] = {}
    for r in records:
        out[r.key] = r.value
    return out


def wait_until(predicate, timeout_s: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        ok, last = predicate()
        if ok:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached in {timeout_s}s; last: {last}")


def test_updates_converge_to_one_record_per_key_then_tombstones_vanish(cbroker, topic_name):
    """5,000 updates over 100 keys leave exactly one record per key, holding its latest
    value at its original offset; after tombstones for 10 keys and delete.retention.ms,
    those keys are gone entirely."""
    create_topic(cbroker.bootstrap, topic_name, config=COMPACTED)
    prod = producer(cbroker.bootstrap, acks="all")
    updates = [
        {"key": f"key-{k:03d}".encode(), "value": f"v{r}-{k}".encode()}
        for r in range(50)
        for k in range(100)
    ]
    reports = produce_all(prod, topic_name, updates, timeout_s=60)
    assert all(err is None for err, _ in reports)
    offset_of_latest = {m.key(): m.offset() for _, m in reports}
    roll_active_segment(cbroker.bootstrap, topic_name)

    def compacted():
        recs = read_partition(cbroker.bootstrap, topic_name)
        keyed = [r for r in recs if r.key != b"marker"]
        return len(keyed) == 100, len(keyed)

    wait_until(compacted, what="compaction to 100 records")
    recs = [r for r in read_partition(cbroker.bootstrap, topic_name) if r.key != b"marker"]
    assert sorted(r.key for r in recs) == sorted({u["key"] for u in updates})
    for r in recs:
        k = int(r.key.decode().split("-")[1])
        assert r.value == f"v49-{k}".encode(), r
        assert r.offset == offset_of_latest[r.key], r

    tombstones = [{"key": f"key-{k:03d}".encode(), "value": None} for k in range(10)]
    assert all(err is None for err, _ in produce_all(prod, topic_name, tombstones))
    roll_active_segment(cbroker.bootstrap, topic_name)

    def tombstones_gone():
        recs = [r for r in read_partition(cbroker.bootstrap, topic_name) if r.key != b"marker"]
        keys = {r.key for r in recs}
        gone = all(f"key-{k:03d}".encode() not in keys for k in range(10))
        return gone and len(recs) == 90, len(recs)

    wait_until(tombstones_gone, what="tombstoned keys to disappear")
    left = latest_by_key(r for r in read_partition(cbroker.bootstrap, topic_name) if r.key != b"marker")
    assert sorted(left) == [f"key-{k:03d}".encode() for k in range(10, 100)]


def test_record_without_key_is_refused_on_a_compacted_topic(cbroker, topic_name):
    """Kafka refuses keyless records on compacted topics with INVALID_RECORD; a keyed
    record in the same topic is accepted."""
    create_topic(cbroker.bootstrap, topic_name, config=COMPACTED)
    prod = producer(cbroker.bootstrap, acks="all", retries=0)
    (err, _), = produce_all(prod, topic_name, [{"value": b"no key"}])
    assert err is not None and err.code() == INVALID_RECORD, err
    (err, msg), = produce_all(prod, topic_name, [{"key": b"k", "value": b"keyed"}])
    assert err is None and msg.offset() >= 0
