"""Bad input from the network and from clients: hand-built frames over raw sockets and
requests the broker must refuse with Kafka's error codes. After every raw-socket abuse
the broker must still serve a normal client."""

import itertools
import socket

import pytest
from confluent_kafka import KafkaError, KafkaException

import kafka_wire as w
from support import (
    CLIENT_TIMEOUT_S,
    admin,
    create_topic,
    produce_all,
    producer,
    read_partition,
    wait_for_topic,
    wait_for_topic_gone,
)

MAX_REQUEST_BYTES = 1_048_576
_correlation = itertools.count(1)


@pytest.fixture(scope="module")
def broker(module_broker_factory):
    """This module's broker caps requests at 1 MiB (socket.request.max.bytes)."""
    return module_broker_factory.start({"socket.request.max.bytes": MAX_REQUEST_BYTES})


@pytest.fixture(scope="module")
def no_autocreate_broker(module_broker_factory):
    return module_broker_factory.start({"auto.create.topics.enable": "false"})


def connect(broker) -> w.Connection:
    return w.Connection(broker.host, broker.port)


def api_versions(conn: w.Connection, version: int) -> w.ApiVersionsResponseV0:
    cid = next(_correlation)
    return w.decode_api_versions_response_v0(conn.request(w.api_versions_request(version, cid), cid))


def raw_produce(broker, topic: str, partition: int, batch: bytes, acks: int = -1) -> w.ProducePartitionResponse:
    with connect(broker) as conn:
        cid = next(_correlation)
        body = conn.request(w.produce_request_v3(topic, partition, batch, cid, acks=acks), cid)
    responses = w.decode_produce_response_v3(body)
    assert list(responses) == [(topic, partition)], responses
    return responses[(topic, partition)]


def raw_metadata(broker, topics: list[str]) -> w.MetadataResponseV1:
    with connect(broker) as conn:
        cid = next(_correlation)
        return w.decode_metadata_response_v1(conn.request(w.metadata_request_v1(topics, cid), cid))


def assert_still_serving(broker) -> None:
    """A fresh raw connection gets ApiVersions, and librdkafka gets metadata."""
    with connect(broker) as conn:
        resp = api_versions(conn, 0)
    assert resp.error_code == 0 and w.API_PRODUCE in resp.api_keys
    md = admin(broker.bootstrap).list_topics(timeout=CLIENT_TIMEOUT_S)
    assert [b.id for b in md.brokers.values()] == [1]


def assert_closed(conn: w.Connection, what: str) -> None:
    leftover = conn.wait_closed(timeout_s=10)
    assert leftover is None, f"connection still open 10s after {what} (received {leftover[:64]!r})"


# --- framing ------------------------------------------------------------------------------


def test_frame_over_max_request_size_closes_connection(broker):
    """A frame announcing 2,000,000 bytes (over socket.request.max.bytes = 1 MiB) closes
    the connection without the broker reading the body; the broker keeps serving."""
    with connect(broker) as conn:
        conn.send(w.int32(2_000_000) + w.request_header_v1(w.API_API_VERSIONS, 0, 1) + bytes(64))
        assert_closed(conn, "an oversized frame")
    assert_still_serving(broker)


def test_frame_at_max_request_size_is_not_refused_for_size(broker, topic_name):
    """A Produce of just under 1 MiB (inside socket.request.max.bytes) is read and answered,
    not dropped: the size cap counts the frame, not less."""
    create_topic(broker.bootstrap, topic_name)
    value = b"v" * (MAX_REQUEST_BYTES - 4096)
    resp = raw_produce(broker, topic_name, 0, w.record_batch([w.Record(None, value)]))
    # The batch is also under the topic's default max.message.bytes (1048588).
    assert (resp.error_code, resp.base_offset) == (w.NONE, 0)


def test_truncated_frame_then_close(broker):
    """A frame that announces 100 bytes, sends 10 and hangs up leaves the broker serving."""
    with connect(broker) as conn:
        conn.send(w.int32(100) + w.request_header_v1(w.API_METADATA, 1, 7)[:10])
    with connect(broker) as conn:
        conn.send(w.int32(50))  # only a length prefix
    with connect(broker) as conn:
        conn.send(b"\x00\x00")  # not even a whole length prefix
    assert_still_serving(broker)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff" * 64,  # negative frame length
        w.int32(16) + b"\xab" * 16,  # a frame whose api key is -21589
        b"GET / HTTP/1.1\r\nHost: strom\r\n\r\n",  # an HTTP client on the Kafka port
        w.int32(3) + b"\x00\x12\x00",  # a frame too short to hold a request header
    ],
    ids=["ff-bytes", "bad-api-key", "http", "short-header"],
)
def test_garbage_closes_connection(broker, garbage):
    """Bytes that are not a Kafka request close that connection; the broker keeps
    serving."""
    with connect(broker) as conn:
        conn.send(garbage)
        assert_closed(conn, f"garbage {garbage[:16]!r}")
    assert_still_serving(broker)


def test_unknown_api_key_closes_connection(broker):
    """A request with api key 999 closes the connection; the broker keeps serving."""
    with connect(broker) as conn:
        conn.send(w.frame(w.request_header_v1(999, 0, 5) + bytes(8)))
        assert_closed(conn, "api key 999")
    assert_still_serving(broker)


def test_api_versions_newer_than_supported_answers_v0_form(broker):
    """ApiVersions v127 is answered in v0 form with UNSUPPORTED_VERSION (35) and a
    non-empty list holding at least ApiVersions itself (KIP-511), with the same ranges the
    broker then reports, on the same connection, to ApiVersions v0 (error 0). That table
    has ApiVersions from v0 and Produce from v3 (Kafka 4's floor)."""
    with connect(broker) as conn:
        newer = api_versions(conn, 127)
        assert newer.error_code == w.UNSUPPORTED_VERSION
        assert w.API_API_VERSIONS in newer.api_keys, newer.api_keys
        current = api_versions(conn, 0)
    assert current.error_code == 0
    for key, versions in newer.api_keys.items():
        assert current.api_keys.get(key) == versions, f"api {key}: {versions} vs {current.api_keys.get(key)}"
    assert current.api_keys[w.API_API_VERSIONS][0] == 0 and current.api_keys[w.API_API_VERSIONS][1] >= 3
    assert current.api_keys[w.API_PRODUCE][0] == 3 and current.api_keys[w.API_PRODUCE][1] >= 3
    assert w.API_METADATA in current.api_keys
    for key, (lo, hi) in current.api_keys.items():
        assert 0 <= lo <= hi, f"api {key}: range {lo}..{hi}"


# --- topics and partitions ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["a/b", "x" * 250, "..", "../escape"])
def test_metadata_for_invalid_topic_name_does_not_create_it(broker, name):
    """Metadata v1 (which auto-creates) for an illegal name answers INVALID_TOPIC_EXCEPTION
    (17) for that topic and creates nothing."""
    md = raw_metadata(broker, [name])
    assert md.topics[name].error_code == w.INVALID_TOPIC_EXCEPTION, md.topics[name]
    assert name not in admin(broker.bootstrap).list_topics(timeout=CLIENT_TIMEOUT_S).topics


def test_metadata_v1_auto_creates_valid_topic(broker, topic_name):
    """Metadata v1 for an unknown valid name auto-creates it (num.partitions=1) with
    broker 1 as leader, replica and ISR."""
    raw_metadata(broker, [topic_name])
    wait_for_topic(broker.bootstrap, topic_name, 1)
    md = raw_metadata(broker, [topic_name])
    topic = md.topics[topic_name]
    assert topic.error_code == 0
    assert [(p.partition, p.leader, p.replicas, p.isr) for p in topic.partitions] == [(0, 1, [1], [1])]
    assert [b[0] for b in md.brokers] == [1] and md.controller_id == 1


def test_produce_to_missing_partition(broker, topic_name):
    """Produce to partition 7 of a one-partition topic: the raw Produce v3 answer is
    UNKNOWN_TOPIC_OR_PARTITION (3), and librdkafka's delivery report is an error."""
    create_topic(broker.bootstrap, topic_name)
    resp = raw_produce(broker, topic_name, 7, w.record_batch([w.Record(b"k", b"v")]))
    assert resp.error_code == w.UNKNOWN_TOPIC_OR_PARTITION

    # librdkafka refuses at produce() once it knows the partition count, or reports the
    # failure on delivery if it does not know it yet.
    reports = []
    prod = producer(broker.bootstrap, message_timeout_ms=5000)
    try:
        prod.produce(topic_name, value=b"x", partition=7, on_delivery=lambda err, msg: reports.append(err))
        assert prod.flush(CLIENT_TIMEOUT_S) == 0
        [err] = reports
    except KafkaException as exc:
        err = exc.args[0]
    assert err is not None and err.code() in (w.UNKNOWN_TOPIC_OR_PARTITION, KafkaError._UNKNOWN_PARTITION), err
    assert read_partition(broker.bootstrap, topic_name) == []


def test_record_over_max_message_bytes(broker, topic_name):
    """On a topic with max.message.bytes=1000, a 5000-byte record is refused with
    MESSAGE_TOO_LARGE (10), both raw and through librdkafka; a 200-byte record is stored."""
    create_topic(broker.bootstrap, topic_name, config={"max.message.bytes": "1000"})
    resp = raw_produce(broker, topic_name, 0, w.record_batch([w.Record(None, b"L" * 5000)]))
    assert resp.error_code == w.MESSAGE_TOO_LARGE

    # Two produce calls, each flushed, so librdkafka cannot put both records in one batch.
    prod = producer(broker.bootstrap, acks="all")
    [(big_err, _)] = produce_all(prod, topic_name, [{"value": b"L" * 5000, "partition": 0}])
    [(small_err, small)] = produce_all(prod, topic_name, [{"value": b"s" * 200, "partition": 0}])
    assert big_err is not None and big_err.code() == w.MESSAGE_TOO_LARGE, big_err
    assert small_err is None and small.offset() == 0
    assert [r.value for r in read_partition(broker.bootstrap, topic_name)] == [b"s" * 200]


def test_bad_crc_is_corrupt_message(broker, topic_name):
    """A hand-built v2 batch with a correct CRC-32C is accepted (error 0, base offset 0);
    the same batch with one flipped byte is refused with CORRUPT_MESSAGE (2) and never
    becomes readable."""
    create_topic(broker.bootstrap, topic_name)
    records = [w.Record(b"k0", b"good-0", [("h", b"1")]), w.Record(b"k1", b"good-1", [], 3)]
    good = w.record_batch(records, base_timestamp_ms=1_700_000_000_000)

    resp = raw_produce(broker, topic_name, 0, good)
    assert (resp.error_code, resp.base_offset) == (w.NONE, 0)
    resp = raw_produce(broker, topic_name, 0, w.corrupt_batch(good))
    assert resp.error_code == w.CORRUPT_MESSAGE

    got = read_partition(broker.bootstrap, topic_name)
    assert [(r.offset, r.key, r.value, list(r.headers), r.timestamp_ms) for r in got] == [
        (0, b"k0", b"good-0", [("h", b"1")], 1_700_000_000_000),
        (1, b"k1", b"good-1", [], 1_700_000_000_003),
    ]


def test_produce_acks_0_bad_batch_gets_no_response_and_broker_serves(broker, topic_name):
    """A corrupt batch sent with acks=0 gets no answer (acks=0 never does); the broker
    keeps serving and stores nothing from it."""
    create_topic(broker.bootstrap, topic_name)
    with connect(broker) as conn:
        conn.send(w.produce_request_v3(topic_name, 0, w.corrupt_batch(w.record_batch([w.Record(None, b"x")])), 99, acks=0))
        conn.sock.settimeout(1.0)
        try:
            data = conn.sock.recv(4)
        except socket.timeout:
            data = None
        assert not data, f"unexpected response bytes to acks=0: {data!r}"
    assert_still_serving(broker)
    assert read_partition(broker.bootstrap, topic_name) == []


def test_produce_to_deleted_topic_without_auto_create(no_autocreate_broker, topic_name):
    """With auto.create.topics.enable=false, once a topic is deleted a Produce to it is
    refused with UNKNOWN_TOPIC_OR_PARTITION (3) and Metadata does not bring it back."""
    broker = no_autocreate_broker
    create_topic(broker.bootstrap, topic_name)
    assert raw_produce(broker, topic_name, 0, w.record_batch([w.Record(None, b"before")])).error_code == 0

    futures = admin(broker.bootstrap).delete_topics([topic_name], request_timeout=CLIENT_TIMEOUT_S)
    futures[topic_name].result(timeout=CLIENT_TIMEOUT_S)
    wait_for_topic_gone(broker.bootstrap, topic_name)

    resp = raw_produce(broker, topic_name, 0, w.record_batch([w.Record(None, b"after")]))
    assert resp.error_code == w.UNKNOWN_TOPIC_OR_PARTITION
    md = raw_metadata(broker, [topic_name])
    assert md.topics[topic_name].error_code == w.UNKNOWN_TOPIC_OR_PARTITION
    assert topic_name not in admin(broker.bootstrap).list_topics(timeout=CLIENT_TIMEOUT_S).topics
