"""Dynamic broker configs beyond the throttles: topic defaults (`log.retention.ms`,
`message.max.bytes`, ...) and connection limits set with IncrementalAlterConfigs on a
broker id or the cluster default ("") apply at once, are described with Kafka's sources
(DYNAMIC_BROKER_CONFIG, DYNAMIC_DEFAULT_BROKER_CONFIG), and a property that cannot change
at run time is refused by name."""

import itertools
import re
import socket
import time

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType

import kafka_wire as w

from support import CLIENT_TIMEOUT_S, admin, consumer, create_topic, produce_all, producer

INVALID_CONFIG = 40
MESSAGE_TOO_LARGE = 10
_correlation = itertools.count(1)


def alter(b, broker: str, op: int, **configs) -> None:
    """IncrementalAlterConfigs on broker `broker` ("" for the cluster default), over the
    wire; raises with the broker's error code and message."""
    cid = next(_correlation)
    changes = [(k.replace("_", "."), op, v if op == w.OP_SET else None) for k, v in configs.items()]
    with w.Connection(b.host, b.port, 10.0) as conn:
        body = conn.request(w.incremental_alter_configs_request_v0(cid, w.RESOURCE_BROKER, broker, changes), cid)
    ((code, message),) = w.decode_incremental_alter_configs_response_v0(body)
    if code:
        raise AlterFailed(code, message)


class AlterFailed(Exception):
    def __init__(self, code: int, message: str | None):
        super().__init__(f"error {code}: {message}")
        self.code, self.message = code, message or ""


def topic_config(bootstrap: str, topic: str, name: str):
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return admin(bootstrap).describe_configs([resource])[resource].result(timeout=CLIENT_TIMEOUT_S)[name]


def log_start(b, topic: str) -> int:
    c = consumer(b.bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=CLIENT_TIMEOUT_S, cached=False)[0]
    finally:
        c.close()


@pytest.fixture
def b(broker_factory):
    return broker_factory.start({"log.retention.check.interval.ms": 300})


@pytest.mark.timeout_s(90)
def test_retention_defaults_change_at_run_time(b, topic_name):
    create_topic(b.bootstrap, topic_name, config={"segment.bytes": "2000"})
    produce_all(producer(b.bootstrap, acks="all"), topic_name, [{"value": b"v" * 200, "partition": 0}] * 50)
    assert log_start(b, topic_name) == 0

    alter(b, "", w.OP_SET, log_retention_ms="3600000")
    entry = topic_config(b.bootstrap, topic_name, "retention.ms")
    assert (entry.value, entry.source) == ("3600000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value), entry
    alter(b, "1", w.OP_SET, log_retention_ms="1")
    entry = topic_config(b.bootstrap, topic_name, "retention.ms")
    assert (entry.value, entry.source) == ("1", ConfigSource.DYNAMIC_BROKER_CONFIG.value), entry
    # A 1 ms retention: every closed segment goes at the next retention check.
    deadline = time.monotonic() + 20
    while log_start(b, topic_name) == 0:
        assert time.monotonic() < deadline, "the dynamic log.retention.ms was not applied"
        time.sleep(0.3)

    alter(b, "1", w.OP_DELETE, log_retention_ms="")
    entry = topic_config(b.bootstrap, topic_name, "retention.ms")
    assert (entry.value, entry.source) == ("3600000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)


def test_message_max_bytes_changes_at_run_time(b, topic_name):
    create_topic(b.bootstrap, topic_name)
    alter(b, "1", w.OP_SET, message_max_bytes="1000")
    reports = produce_all(producer(b.bootstrap, acks="all", compression_type="none"), topic_name,
                          [{"value": b"x" * 3000, "partition": 0}])
    assert reports[0][0] is not None and reports[0][0].code() == MESSAGE_TOO_LARGE, reports
    alter(b, "1", w.OP_DELETE, message_max_bytes="")
    reports = produce_all(producer(b.bootstrap, acks="all"), topic_name, [{"value": b"x" * 3000, "partition": 0}])
    assert reports[0][0] is None, reports


def served(b) -> socket.socket | None:
    """A new connection if the broker keeps it (answers a request on it), else None."""
    s = socket.create_connection((b.host, b.port))
    s.settimeout(5)
    cid = next(_correlation)
    try:
        s.sendall(w.api_versions_request(0, cid))
        size = s.recv(4, socket.MSG_WAITALL)
        if len(size) == 4 and s.recv(int.from_bytes(size, "big"), socket.MSG_WAITALL)[:4] == w.int32(cid):
            return s
    except (ConnectionResetError, BrokenPipeError):
        pass
    s.close()
    return None


def test_max_connections_changes_at_run_time(b):
    """Only this test's own connections are open: the cluster-wide max.connections=3 lets
    three be served and closes the fourth; deleted, the limit is gone."""
    alter(b, "", w.OP_SET, max_connections="3")
    time.sleep(0.3)  # the alter's own connection closes
    held = [served(b) for _ in range(3)]
    assert all(held), "three connections are allowed"
    assert served(b) is None, "a fourth connection past the dynamic max.connections was served"
    held.pop().close()
    time.sleep(0.3)
    alter(b, "", w.OP_DELETE, max_connections="")
    more = [served(b) for _ in range(5)]
    assert all(more), "without the dynamic limit, the default applies again"
    for s in held + more:
        s.close()


def cleaner_threads(b) -> int | None:
    m = re.search(r"^strom_log_cleaner_threads (\d+)$", b.metrics(), re.M)
    return int(m.group(1)) if m else None


def wait_for(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.2)


@pytest.mark.timeout_s(120)
def test_the_cleaners_threads_and_back_off_change_at_run_time(broker_factory, topic_name):
    """A broker whose cleaner looks for work every ten minutes: updates to a compacted
    topic stay uncompacted until a dynamic log.cleaner.backoff.ms of 100 ms wakes the
    cleaner; log.cleaner.threads grows to three for the cluster and shrinks to two for this
    broker (its own value wins, described as DYNAMIC_BROKER_CONFIG and not read-only);
    compaction carries on."""
    b = broker_factory.start({"log.cleaner.backoff.ms": 600_000})
    assert cleaner_threads(b) == 1
    compacted = {"cleanup.policy": "compact", "segment.bytes": "16384", "segment.ms": "300",
                 "min.cleanable.dirty.ratio": "0.01", "file.delete.delay.ms": "0"}
    create_topic(b.bootstrap, topic_name, config=compacted)
    prod = producer(b.bootstrap, acks="all")
    updates = [{"key": f"k{k}".encode(), "value": f"v{r}".encode() * 20, "partition": 0} for r in range(30) for k in range(50)]
    produce_all(prod, topic_name, updates, timeout_s=60)
    time.sleep(0.4)
    produce_all(prod, topic_name, [{"key": b"marker", "value": b"m", "partition": 0}])  # closes the dirty segments
    time.sleep(2)
    assert record_count(b, topic_name) == len(updates) + 1, "compacted while the cleaner should be asleep"

    alter(b, "", w.OP_SET, log_cleaner_backoff_ms="100")
    wait_for(lambda: record_count(b, topic_name) == 51, 30, "compaction after the dynamic back-off")

    alter(b, "", w.OP_SET, log_cleaner_threads="3")
    wait_for(lambda: cleaner_threads(b) == 3, 10, "three cleaner threads")
    alter(b, "1", w.OP_SET, log_cleaner_threads="2")
    wait_for(lambda: cleaner_threads(b) == 2, 10, "the broker's own two cleaner threads")
    resource = ConfigResource(ResourceType.BROKER, "1")
    described = admin(b.bootstrap).describe_configs([resource])[resource].result(timeout=CLIENT_TIMEOUT_S)
    entry = described["log.cleaner.threads"]
    assert (entry.value, entry.source, entry.is_read_only) == ("2", ConfigSource.DYNAMIC_BROKER_CONFIG.value, False), entry

    more = [{"key": f"k{k}".encode(), "value": b"last", "partition": 0} for k in range(50)]
    produce_all(prod, topic_name, more)
    time.sleep(0.4)
    produce_all(prod, topic_name, [{"key": b"marker", "value": b"m2", "partition": 0}])
    # The fifty latest values and both markers: the second is in the active segment, which
    # is never compacted, so it does not yet replace the first.
    wait_for(lambda: record_count(b, topic_name) == 52, 30, "compaction with two threads")


def record_count(b, topic: str) -> int:
    """Records left in partition 0 (compaction leaves gaps, so they are counted, not
    subtracted)."""
    c = consumer(b.bootstrap)
    try:
        tp = TopicPartition(topic, 0)
        low, high = c.get_watermark_offsets(tp, timeout=CLIENT_TIMEOUT_S, cached=False)
        c.assign([TopicPartition(topic, 0, low)])
        count = 0
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            count += 1
            if msg.offset() >= high - 1:
                return count
        raise AssertionError(f"did not read up to offset {high - 1} of {topic}")
    finally:
        c.close()


def test_a_static_property_is_refused_by_name(b):
    for broker in ("1", ""):
        with pytest.raises(AlterFailed) as e:
            alter(b, broker, w.OP_SET, log_dirs="/elsewhere")
        assert e.value.code == INVALID_CONFIG and "log.dirs" in e.value.message, e.value
