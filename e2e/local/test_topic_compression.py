"""A topic's `compression.type` other than `producer` (and the broker's default of it):
batches produced with another codec are stored recompressed in the topic's codec, at the
level `compression.<codec>.level` says, keeping offsets, timestamps, headers and the
idempotent producer's id and sequence; every client reads them back (librdkafka, the Java
client through Kafka's console consumer, kafka-python for the codecs its install decodes).
As Kafka, a zstd batch is refused from Produce before v7 and not served to Fetch before
v10 (UNSUPPORTED_COMPRESSION_TYPE)."""

import itertools
import random
import struct
import subprocess

import pytest
from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType
from kafka import KafkaConsumer, TopicPartition

import kafka_wire as w
from support import CLIENT_TIMEOUT_S, admin, create_topic, produce_all, producer, read_partition

CODEC_IDS = {"uncompressed": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
UNSUPPORTED_COMPRESSION_TYPE = 76
INVALID_CONFIG = 40
COUNT = 2000
_correlation = itertools.count(1)


def segment_batches(broker, topic: str) -> list[bytes]:
    """The raw batches of partition 0's first segment."""
    data = (broker.data_dir / f"{topic}-0" / f"{0:020d}.log").read_bytes()
    out, pos = [], 0
    for h in w.read_batch_headers(data):
        out.append(data[pos : pos + 12 + h.length])
        pos += 12 + h.length
    return out


def records(tag: str) -> list[dict]:
    rnd = random.Random(tag)
    words = [b"alpha", b"bravo", b"charlie", b"delta", b"echo", b"foxtrot", b"golf", b"hotel"]
    return [
        {
            "key": f"{tag}-{i}".encode(),
            "value": b" ".join(rnd.choice(words) for _ in range(20)),
            "headers": [("i", str(i).encode())],
            "partition": 0,
        }
        for i in range(COUNT)
    ]


def console_consume(jars: str, bootstrap: str, topic: str, count: int) -> list[tuple[str, str]]:
    """(key, value) of the first `count` records as Kafka's console consumer (the Java
    client) prints them."""
    proc = subprocess.run(
        ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx256m", "-cp", jars,
         "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", bootstrap,
         "--topic", topic, "--partition", "0", "--offset", "earliest", "--max-messages", str(count),
         "--timeout-ms", "30000", "--formatter-property", "print.key=true", "--formatter-property", "key.separator=|"],
        capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, f"console consumer exited {proc.returncode}\n{proc.stderr[-3000:]}"
    return [tuple(line.split("|", 1)) for line in proc.stdout.splitlines()]


def kafka_python_consume(bootstrap: str, topic: str, count: int) -> list:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        got = []
        for _ in range(60):
            for batch in c.poll(timeout_ms=500).values():
                got.extend(batch)
            if len(got) >= count:
                break
        return got
    finally:
        c.close()


@pytest.mark.timeout_s(150)
@pytest.mark.parametrize("target", ["uncompressed", "gzip", "snappy", "lz4", "zstd"])
def test_batches_are_stored_in_the_topics_codec_and_read_by_every_client(broker, topic_name, kafka_jars, target):
    """An idempotent librdkafka producer using another codec (none, or lz4 for an
    uncompressed topic) produces 2,000 records with keys and headers: every stored batch
    has the topic's codec, a valid CRC and the producer's id; librdkafka, the Java client
    and (uncompressed, gzip) kafka-python read every record back at its offset."""
    create_topic(broker.bootstrap, topic_name, config={"compression.type": target})
    sent = records(target)
    codec = "lz4" if target == "uncompressed" else "none"
    prod = producer(broker.bootstrap, acks="all", enable_idempotence=True, compression_type=codec, linger_ms=20, batch_size=20_000)
    reports = produce_all(prod, topic_name, sent)
    assert [(err, m.offset()) for err, m in reports] == [(None, i) for i in range(COUNT)]

    batches = segment_batches(broker, topic_name)
    assert len(batches) > 1, "the producer's batches were not split: nothing to check across batches"
    headers = [w.read_batch_headers(b)[0] for b in batches]
    assert {(h.compression, h.crc_valid) for h in headers} == {(CODEC_IDS[target], True)}, headers
    assert sum(h.record_count for h in headers) == COUNT
    producer_ids = {struct.unpack(">q", b[43:51])[0] for b in batches}
    assert len(producer_ids) == 1 and min(producer_ids) >= 0, producer_ids
    # Sequences run on across batches as the producer numbered them.
    sequences = [struct.unpack(">i", b[53:57])[0] for b in batches]
    assert sequences == [h.base_offset for h in headers], (sequences, headers)

    got = read_partition(broker.bootstrap, topic_name)
    assert [(r.offset, r.key, r.value) for r in got] == [(i, r["key"], r["value"]) for i, r in enumerate(sent)]
    assert [list(r.headers) for r in got] == [[("i", str(i).encode())] for i in range(COUNT)]

    assert console_consume(kafka_jars, broker.bootstrap, topic_name, COUNT) == [
        (r["key"].decode(), r["value"].decode()) for r in sent
    ]
    if target in ("uncompressed", "gzip"):
        kp = kafka_python_consume(broker.bootstrap, topic_name, COUNT)
        assert [(r.offset, r.key, r.value) for r in kp] == [(i, r["key"], r["value"]) for i, r in enumerate(sent)]


@pytest.mark.parametrize("codec,low,high", [("gzip", "1", "9"), ("zstd", "-5", "19"), ("lz4", "1", "17")])
def test_the_codec_level_is_the_topics(broker, topic_name, codec, low, high):
    """The same records to two topics of one codec at a low and a high
    `compression.<codec>.level`: the high level's segment is smaller, and both read back."""
    sizes = {}
    for level in (low, high):
        topic = f"{topic_name}-{level}"
        create_topic(broker.bootstrap, topic, config={"compression.type": codec, f"compression.{codec}.level": level})
        sent = records("levels")
        produce_all(producer(broker.bootstrap, acks="all", linger_ms=50, batch_size=1_000_000), topic, sent)
        sizes[level] = sum(len(b) for b in segment_batches(broker, topic))
        got = read_partition(broker.bootstrap, topic)
        assert [r.value for r in got] == [r["value"] for r in sent]
    assert sizes[high] < sizes[low], sizes


def test_invalid_codecs_and_levels_are_refused_by_name(broker, topic_name):
    """CreateTopics with an unknown codec or a level out of Kafka's range answers
    INVALID_CONFIG naming the property."""
    for name, value in [("compression.type", "brotli"), ("compression.lz4.level", "18"), ("compression.gzip.level", "0")]:
        fut = admin(broker.bootstrap).create_topics(
            [NewTopic(topic_name, 1, 1, config={name: value})], request_timeout=CLIENT_TIMEOUT_S
        )[topic_name]
        with pytest.raises(Exception) as e:
            fut.result(timeout=CLIENT_TIMEOUT_S)
        err = e.value.args[0]
        assert err.code() == INVALID_CONFIG and name in err.str(), err


def roundtrip(broker, make_request) -> bytes:
    correlation = next(_correlation)
    with w.Connection(broker.host, broker.port, 10.0) as conn:
        return conn.request(make_request(correlation), correlation)


def test_the_broker_default_codec_and_zstd_for_old_clients(module_broker_factory, topic_name):
    """A broker started with compression.type=zstd stores a topic without an override in
    zstd (described as the topic's compression.type); Fetch v4 of that partition answers
    UNSUPPORTED_COMPRESSION_TYPE instead of zstd batches, and a zstd batch sent with
    Produce v3 is refused with it, as Kafka does."""
    b = module_broker_factory.start({"compression.type": "zstd", "compression.zstd.level": "10"})
    create_topic(b.bootstrap, topic_name)
    sent = records("default")[:200]
    produce_all(producer(b.bootstrap, acks="all", linger_ms=20), topic_name, sent)
    batches = segment_batches(b, topic_name)
    assert {w.read_batch_headers(x)[0].compression for x in batches} == {CODEC_IDS["zstd"]}
    assert [r.value for r in read_partition(b.bootstrap, topic_name)] == [r["value"] for r in sent]

    resource = ConfigResource(ResourceType.TOPIC, topic_name)
    configs = admin(b.bootstrap).describe_configs([resource])[resource].result(timeout=CLIENT_TIMEOUT_S)
    assert configs["compression.type"].value == "zstd"
    assert configs["compression.zstd.level"].value == "10"

    fetched = w.decode_fetch_response_v4(roundtrip(b, lambda c: w.fetch_request_v4(topic_name, 0, 0, c)))
    assert fetched[(topic_name, 0)].error_code == UNSUPPORTED_COMPRESSION_TYPE
    assert fetched[(topic_name, 0)].records == b""

    produced = w.decode_produce_response_v3(
        roundtrip(b, lambda c: w.produce_request_v3(topic_name, 0, batches[0], c))
    )
    assert produced[(topic_name, 0)].error_code == UNSUPPORTED_COMPRESSION_TYPE
