"""One small request never takes the broker down: counts and sizes from the wire are bounded
before anything is allocated (CreateTopics, CreatePartitions, Fetch), half-sent frames hold
bounded memory and time out, the connection cap closes extra connections at once without
blocking shutdown, and the broker raises its file-descriptor limit. Each test uses hand-made
frames and would fail on a broker that trusts the numbers it is sent."""

import itertools
import resource
import signal
import socket
import subprocess
import threading
import time

import pytest

import kafka_wire as w
from confluent_kafka import TopicPartition

from support import CLIENT_TIMEOUT_S, admin, consumer, create_topic, produce_all, producer, wait_for_topic

_correlation = itertools.count(1)
INVALID_PARTITIONS = 37
POLICY_VIOLATION = 44


def connect(broker, timeout_s: float = 10.0) -> w.Connection:
    return w.Connection(broker.host, broker.port, timeout_s)


def call(broker, make_request):
    with connect(broker) as conn:
        cid = next(_correlation)
        return conn.request(make_request(cid), cid)


def status_kib(broker, field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident) of the broker process, in KiB."""
    with open(f"/proc/{broker.proc.pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{broker.proc.pid}/status")


def assert_serving(broker) -> None:
    md = admin(broker.bootstrap).list_topics(timeout=CLIENT_TIMEOUT_S)
    assert [b.id for b in md.brokers.values()] == [1]


@pytest.fixture(scope="module")
def broker(module_broker_factory):
    # Under a 2 GiB address-space limit an allocation sized from a hostile count fails, and
    # Rust aborts the process, on any host, whatever its overcommit policy.
    b = module_broker_factory.create({"fetch.max.bytes": 100_000})
    b.command_prefix = ["prlimit", f"--as={2 * 1024**3}"]
    return b.start()


@pytest.mark.parametrize("validate_only", [True, False])
def test_create_topics_with_2_31_partitions_is_refused(broker, topic_name, validate_only):
    body = call(broker, lambda cid: w.create_topics_request_v2([(topic_name, 2**31 - 1, 1)], cid, validate_only))
    code, message = w.decode_topic_errors(body)[topic_name]
    assert code == INVALID_PARTITIONS, (code, message)
    assert "partitions" in (message or "")
    assert broker.running()
    assert_serving(broker)


def test_create_topics_over_the_request_bound_is_a_policy_violation(broker, topic_name):
    topics = [(f"{topic_name}-a", 6_000, 1), (f"{topic_name}-b", 6_000, 1)]
    body = call(broker, lambda cid: w.create_topics_request_v2(topics, cid))
    errors = w.decode_topic_errors(body)
    assert {name: code for name, (code, _) in errors.items()} == {name: POLICY_VIOLATION for name, _, _ in topics}
    assert all("excessively large" in (m or "") for _, m in errors.values())
    md = admin(broker.bootstrap).list_topics(timeout=CLIENT_TIMEOUT_S)
    assert not any(t.startswith(topic_name) for t in md.topics)


def test_create_topics_with_2_31_replicas_is_refused(broker, topic_name):
    body = call(broker, lambda cid: w.create_topics_request_v2([(topic_name, 1, 32767)], cid))
    code, message = w.decode_topic_errors(body)[topic_name]
    assert code == 38, (code, message)  # INVALID_REPLICATION_FACTOR
    assert_serving(broker)


@pytest.mark.parametrize("validate_only", [True, False])
def test_create_partitions_to_2_31_is_refused(broker, topic_name, validate_only):
    create_topic(broker.bootstrap, topic_name)
    body = call(broker, lambda cid: w.create_partitions_request_v0(topic_name, 2**31 - 1, cid, validate_only))
    code, message = w.decode_topic_errors(body)[topic_name]
    assert code == INVALID_PARTITIONS, (code, message)
    assert broker.running()
    assert len(admin(broker.bootstrap).list_topics(topic_name, timeout=CLIENT_TIMEOUT_S).topics[topic_name].partitions) == 1


def test_fetch_with_2_31_max_bytes_is_capped_by_fetch_max_bytes(broker, topic_name):
    """The module's broker has fetch.max.bytes = 100000; a fetch asking for 2 GiB (overall
    and per partition) of a 2 MB partition gets about 100 kB."""
    create_topic(broker.bootstrap, topic_name)
    prod = producer(broker.bootstrap, **{"linger.ms": 50, "batch.size": 16384})
    produce_all(prod, topic_name, [{"value": b"x" * 1000} for _ in range(2000)])
    body = call(broker, lambda cid: w.fetch_request_v4(topic_name, 0, 0, cid))
    resp = w.decode_fetch_response_v4(body)[(topic_name, 0)]
    assert resp.error_code == 0
    assert resp.high_watermark == 2000
    assert 0 < len(resp.records) <= 100_000, len(resp.records)
    assert w.read_batch_headers(resp.records)[0].base_offset == 0


@pytest.mark.timeout_s(90)
def test_half_sent_frames_hold_bounded_memory_and_time_out(broker_factory):
    """Ten connections each announce a 100 MB frame and send 30 MB of it, then stall. With
    queued.max.request.bytes = 100 MiB only one frame is received at a time (the others
    wait in their sockets), the broker's resident memory stays far below the 300 MB sent,
    and every stalled connection is closed once strom.request.read.timeout.ms passes."""
    b = broker_factory.start({"queued.max.request.bytes": 100 * 1024**2, "strom.request.read.timeout.ms": 4000})
    rss_before = status_kib(b, "VmRSS")
    socks = []
    senders = []

    def send_part(sock):
        try:
            sock.sendall(w.int32(100_000_000) + b"\0" * 30_000_000)
        except OSError:
            pass  # closed by the broker: what the test wants

    for _ in range(10):
        s = socket.create_connection((b.host, b.port))
        socks.append(s)
        t = threading.Thread(target=send_part, args=(s,), daemon=True)
        t.start()
        senders.append(t)
    time.sleep(2.5)
    grown_mib = (status_kib(b, "VmRSS") - rss_before) / 1024
    assert grown_mib < 150, f"broker grew by {grown_mib:.0f} MiB holding half-sent frames"
    assert_serving(b)
    # Every stalled connection is closed: the one being received when its frame times out,
    # the waiting ones when their wait for room does.
    deadline = time.monotonic() + 30
    for s in socks:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass
        except socket.timeout:
            pytest.fail("a half-sent frame's connection stayed open past strom.request.read.timeout.ms")
        s.close()
    assert "strom.request.read.timeout.ms" in b.log_text()
    assert 'strom_connections_closed_by_limit_total{limit="strom.request.read.timeout.ms"}' in b.metrics()
    assert_serving(b)


@pytest.mark.timeout_s(60)
def test_connection_cap_closes_new_connections_and_sigterm_stays_prompt(broker_factory):
    b = broker_factory.start({"max.connections": 20})
    held = [socket.create_connection((b.host, b.port)) for _ in range(20)]
    time.sleep(0.3)
    extra = socket.create_connection((b.host, b.port))
    extra.settimeout(5)
    try:
        assert extra.recv(1) == b"", "an over-limit connection was answered"
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail("an over-limit connection was left open and unanswered")
    assert 'strom_connections_closed_by_limit_total{limit="max.connections"}' in b.metrics()
    # Held connections are idle; shutdown must not wait for one of them to close.
    started = time.monotonic()
    b.proc.send_signal(signal.SIGTERM)
    b.proc.wait(timeout=15)
    assert time.monotonic() - started < 10
    for s in held:
        s.close()


def test_soft_fd_limit_is_raised_to_the_hard_limit(broker_factory):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard <= 256:
        pytest.skip(f"hard fd limit {hard} leaves nothing to raise")
    b = broker_factory.create()
    b.command_prefix = ["prlimit", f"--nofile=256:{hard}"]
    b.start()
    limits = open(f"/proc/{b.proc.pid}/limits").read()
    line = next(l for l in limits.splitlines() if l.startswith("Max open files"))
    assert line.split()[3:5] == [str(hard), str(hard)], line
    assert "raised the soft file-descriptor limit" in b.log_text()


@pytest.mark.timeout_s(90)
def test_unread_fetch_responses_hold_bounded_memory(broker_factory, topic_name):
    """A client pipelines 100 Fetch requests for a 4 MB partition and never reads the
    answers. Responses queued for it are bounded by fetch.max.bytes (here 4 MiB), not by
    the number of requests: the broker grows by a few responses, not by 100 of them."""
    b = broker_factory.start({"fetch.max.bytes": 4 * 1024 * 1024})
    create_topic(b.bootstrap, topic_name)
    prod = producer(b.bootstrap, **{"linger.ms": 50, "batch.size": 1_000_000})
    produce_all(prod, topic_name, [{"value": b"x" * 1000} for _ in range(4000)])
    rss_before = status_kib(b, "VmRSS")
    s = socket.create_connection((b.host, b.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"".join(w.fetch_request_v4(topic_name, 0, 0, next(_correlation)) for _ in range(100)))
    time.sleep(3)
    grown_mib = (status_kib(b, "VmRSS") - rss_before) / 1024
    assert grown_mib < 40, f"broker grew by {grown_mib:.0f} MiB for responses nobody reads"
    assert_serving(b)
    s.close()
    assert_serving(b)


@pytest.mark.timeout_s(180)
def test_more_segments_than_file_descriptors_are_served_and_survive_kill_9(broker_factory, topic_name):
    """300 partitions, each with a segment file, under a hard limit of 256 descriptors:
    segment files are opened on use and at most strom.log.open.files.max (64) at once, so
    the partitions are created, written, recovered after kill -9 and read back. A broker
    that keeps every segment open fails with `Too many open files`."""
    partitions = 300
    b = broker_factory.create({"strom.log.open.files.max": 64, "max.connections": 100})
    b.command_prefix = ["prlimit", "--nofile=256:256"]
    b.start()
    create_topic(b.bootstrap, topic_name, partitions=partitions)
    wait_for_topic(b.bootstrap, topic_name, partitions)
    prod = producer(b.bootstrap, acks="all")
    reports = produce_all(prod, topic_name, [{"value": f"p{p}".encode(), "partition": p} for p in range(partitions)])
    assert [err for err, _ in reports if err is not None] == []

    def open_files():
        line = next(l for l in b.metrics().splitlines() if l.startswith("strom_log_open_segment_files "))
        return float(line.split()[1])

    assert open_files() <= 64
    b.restart(hard=True)
    c = consumer(b.bootstrap)
    c.assign([TopicPartition(topic_name, p, 0) for p in range(partitions)])
    seen = {}
    deadline = time.monotonic() + 60
    while len(seen) < partitions and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and not msg.error():
            seen[msg.partition()] = msg.value()
    c.close()
    assert seen == {p: f"p{p}".encode() for p in range(partitions)}, f"{len(seen)} of {partitions} read back"
    assert open_files() <= 64
    assert "Too many open files" not in b.log_text()


def test_a_short_fd_limit_is_named_in_readyz_and_the_log(broker_factory):
    b = broker_factory.create()
    b.command_prefix = ["prlimit", "--nofile=512:512"]
    b.start()
    status, body = b.http_get("/readyz")
    assert status == 200 and body.startswith("ready")
    assert "soft file-descriptor limit 512" in body and "max.connections 10000" in body, body
    assert "soft file-descriptor limit 512" in b.log_text()
