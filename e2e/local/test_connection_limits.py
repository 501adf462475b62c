"""Connection limits: `max.connections.per.ip` (with `max.connections.per.ip.overrides`)
closes an address's connections past its limit at once while other addresses connect;
`connections.max.idle.ms` closes connections that send nothing; thousands of idle and
half-sent connections leave a normal client served."""

import itertools
import resource
import socket
import time

import pytest

import kafka_wire as w
from broker_process import BrokerStartError
from support import create_topic, produce_all, producer, read_partition

_correlation = itertools.count(1)


def connect_from(broker, source: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    s.bind((source, 0))
    s.connect((broker.host, broker.port))
    return s


def answered(s: socket.socket) -> bool:
    """Whether the broker answers an ApiVersions request on `s` (False: it closed it)."""
    cid = next(_correlation)
    try:
        s.sendall(w.api_versions_request(0, cid))
        size = s.recv(4, socket.MSG_WAITALL)
        if len(size) < 4:
            return False
        body = s.recv(int.from_bytes(size, "big"), socket.MSG_WAITALL)
    except (ConnectionResetError, BrokenPipeError):
        return False
    return int.from_bytes(body[:4], "big") == cid


def closed_by_peer(s: socket.socket, timeout_s: float) -> bool:
    s.settimeout(timeout_s)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_per_ip_limits_and_their_overrides(broker_factory):
    b = broker_factory.start({"max.connections.per.ip": 3, "max.connections.per.ip.overrides": "127.0.0.2:5"})
    first = [connect_from(b, "127.0.0.1") for _ in range(3)]
    assert all(answered(s) for s in first)
    assert not answered(connect_from(b, "127.0.0.1")), "a 4th connection from 127.0.0.1 was served"
    others = [connect_from(b, "127.0.0.2") for _ in range(5)]
    assert all(answered(s) for s in others), "127.0.0.2 may have 5"
    assert not answered(connect_from(b, "127.0.0.2"))
    assert answered(connect_from(b, "127.0.0.3")), "another address is not limited by these"
    # A closed connection gives its place back.
    first.pop().close()
    deadline = time.monotonic() + 5
    while not answered(connect_from(b, "127.0.0.1")):
        assert time.monotonic() < deadline, "the freed place was not given back"
        time.sleep(0.1)
    assert 'strom_connections_closed_by_limit_total{limit="max.connections.per.ip"}' in b.metrics()


def test_bad_overrides_refuse_the_start(broker_factory):
    b = broker_factory.create({"max.connections.per.ip.overrides": "broker-host:5"})
    with pytest.raises(BrokerStartError):
        b.start(timeout_s=10)
    assert "max.connections.per.ip.overrides" in b.log_text()


def test_idle_connections_are_closed(broker_factory):
    b = broker_factory.start({"connections.max.idle.ms": 1000})
    idle = connect_from(b, "127.0.0.1")
    busy = connect_from(b, "127.0.0.1")
    started = time.monotonic()
    while time.monotonic() - started < 3:
        assert answered(busy), "a connection that keeps sending requests was closed"
        time.sleep(0.3)
    assert closed_by_peer(idle, 0.1), "an idle connection stayed open past connections.max.idle.ms"
    assert 'strom_connections_closed_by_limit_total{limit="connections.max.idle.ms"}' in b.metrics()


@pytest.mark.timeout_s(120)
def test_thousands_of_idle_and_half_sent_connections_leave_a_client_served(broker_factory, topic_name):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4500:
        pytest.skip(f"the hard file-descriptor limit {hard} is below what the test holds")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4500), hard))
    b = broker_factory.start()
    create_topic(b.bootstrap, topic_name)
    held = []
    try:
        for i in range(4000):
            s = connect_from(b, f"127.0.{1 + i % 3}.{1 + i % 250}")
            if i % 2:
                s.sendall(w.int32(1000))  # a frame announced and never sent
            held.append(s)
        records = [{"value": f"v{i}".encode(), "partition": 0} for i in range(100)]
        produce_all(producer(b.bootstrap, acks="all"), topic_name, records)
        assert [r.value for r in read_partition(b.bootstrap, topic_name)] == [r["value"] for r in records]
        connections = float(next(l.split()[1] for l in b.metrics().splitlines() if l.startswith("strom_connections ")))
        assert connections >= 4000, connections
    finally:
        for s in held:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
