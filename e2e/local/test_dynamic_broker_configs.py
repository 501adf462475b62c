"""Dynamic broker configs beyond the throttles: topic defaults (`log.retention.ms`,
`message.max.bytes`, ...) and connection limits set with IncrementalAlterConfigs on a
broker id or the cluster default ("") apply at once, are described with Kafka's sources
(DYNAMIC_BROKER_CONFIG, DYNAMIC_DEFAULT_BROKER_CONFIG), and a property that cannot change
at run time is refused by name."""

import itertools
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


def test_a_static_property_is_refused_by_name(b):
    for broker in ("1", ""):
        with pytest.raises(AlterFailed) as e:
            alter(b, broker, w.OP_SET, log_dirs="/elsewhere")
        assert e.value.code == INVALID_CONFIG and "log.dirs" in e.value.message, e.value
