"""kafka-python, an implementation of the protocol independent of librdkafka, against the
broker. It negotiates versions through ApiVersions: no api_version is ever passed."""

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import TopicAlreadyExistsError

from support import create_topic, produce_all, producer, read_partition, wait_for_topic, wait_for_topic_gone

TIMEOUT_S = 15


@pytest.fixture
def kp_admin(broker):
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT_S * 1000)
    yield client
    client.close()


def kp_consume(broker, topic: str, partition: int, count: int) -> list:
    """assign + seek_to_beginning + poll, without a group, until `count` records."""
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=TIMEOUT_S * 1000 + 1000,
    )
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        records = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        assert len(records) == count, f"kafka-python read {len(records)} of {count} records in {TIMEOUT_S}s"
        return records
    finally:
        consumer.close()


def test_produce_with_keys_and_headers_and_consume(broker, topic_name):
    """KafkaProducer (acks=all) sends keyed records with headers and gets offsets 0..n-1;
    KafkaConsumer with assign + seek_to_beginning reads them back exactly, and librdkafka
    reads the same bytes."""
    create_topic(broker.bootstrap, topic_name)
    # kafka-python 3 producers are idempotent by default (InitProducerId); that default is
    # covered by test_default_idempotent_producer below.
    prod = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5, enable_idempotence=False)
    try:
        futures = [
            prod.send(
                topic_name,
                key=f"kp-{i}".encode(),
                value=f"value {i}".encode() * (1 + i % 3),
                headers=[("n", str(i).encode()), ("empty", b"")],
                partition=0,
                timestamp_ms=1_600_000_000_000 + i,
            )
            for i in range(25)
        ]
        metadata = [f.get(timeout=TIMEOUT_S) for f in futures]
    finally:
        prod.close(timeout=TIMEOUT_S)
    assert [(m.partition, m.offset) for m in metadata] == [(0, i) for i in range(25)]

    records = kp_consume(broker, topic_name, 0, 25)
    assert [(r.offset, r.key, r.value, list(r.headers), r.timestamp) for r in records] == [
        (i, f"kp-{i}".encode(), f"value {i}".encode() * (1 + i % 3), [("n", str(i).encode()), ("empty", b"")],
         1_600_000_000_000 + i)
        for i in range(25)
    ]
    other = read_partition(broker.bootstrap, topic_name)
    assert [(r.key, r.value) for r in other] == [(r.key, r.value) for r in records]


def test_default_idempotent_producer(broker, topic_name):
    """A KafkaProducer with default settings (idempotent: it first asks InitProducerId for a
    producer id) gets 30 records acknowledged at offsets 0..29, and a consumer reads each
    back exactly once, in order, with the producer id and sequences in the batches."""
    create_topic(broker.bootstrap, topic_name)
    prod = KafkaProducer(bootstrap_servers=broker.bootstrap)
    try:
        futures = [prod.send(topic_name, value=f"i{i}".encode(), partition=0) for i in range(30)]
        offsets = [f.get(timeout=TIMEOUT_S).offset for f in futures]
    finally:
        prod.close(timeout=5)
    assert offsets == list(range(30))
    records = kp_consume(broker, topic_name, 0, 30)
    assert [(r.offset, r.value) for r in records] == [(i, f"i{i}".encode()) for i in range(30)]


def test_consume_gzip_batches_from_librdkafka(broker, topic_name):
    """Records that librdkafka produced gzip-compressed are read by kafka-python with the
    same keys, values and offsets (compressed batches are served as stored)."""
    create_topic(broker.bootstrap, topic_name)
    records = [{"key": f"g{i}".encode(), "value": b"zip " * 30 + str(i).encode(), "partition": 0} for i in range(40)]
    produce_all(producer(broker.bootstrap, acks="all", compression_type="gzip", linger_ms=50), topic_name, records)
    got = kp_consume(broker, topic_name, 0, 40)
    assert [(r.offset, r.key, r.value) for r in got] == [(i, rec["key"], rec["value"]) for i, rec in enumerate(records)]


def test_admin_create_describe_delete_topic(broker, topic_name, kp_admin):
    """KafkaAdminClient creates a 2-partition topic with a retention.ms override (visible
    in metadata and in describe_configs as DYNAMIC_TOPIC_CONFIG), refuses to create it
    again (TopicAlreadyExistsError), and deletes it."""
    result = kp_admin.create_topics(
        {topic_name: {"num_partitions": 2, "replication_factor": 1, "configs": {"retention.ms": "7200000"}}}
    )
    assert [(t["name"], t["error_code"]) for t in result["topics"]] == [(topic_name, 0)]
    wait_for_topic(broker.bootstrap, topic_name, 2)
    assert topic_name in kp_admin.list_topics()

    described = kp_admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic_name)], config_filter="all")
    configs = described["topic"][topic_name]
    assert configs["retention.ms"]["value"] == "7200000"
    assert configs["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
    assert configs["cleanup.policy"]["value"] == "delete"

    with pytest.raises(TopicAlreadyExistsError):
        kp_admin.create_topics({topic_name: {"num_partitions": 1, "replication_factor": 1}})

    deleted = kp_admin.delete_topics([topic_name])
    assert [(t["name"], t["error_code"]) for t in deleted["topics"]] == [(topic_name, 0)]
    wait_for_topic_gone(broker.bootstrap, topic_name)
    assert topic_name not in kp_admin.list_topics()


def test_admin_describe_broker_configs(broker, kp_admin):
    """KafkaAdminClient describe_configs for broker 1 returns its configs, including
    num.partitions=1 and the log.dirs it was started with."""
    described = kp_admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")], config_filter="all")
    configs = described["broker"]["1"]
    assert configs["num.partitions"]["value"] == "1"
    assert configs["log.dirs"]["value"] == str(broker.data_dir)
