"""confluent-kafka AdminClient against the broker: topics, partitions, configs and
delete_records, with Kafka's error codes for each refusal."""

import pytest
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

import kafka_wire as w
from support import (
    CLIENT_TIMEOUT_S,
    admin,
    consumer,
    create_topic,
    future_error_code,
    produce_all,
    producer,
    read_partition,
    wait_for_topic,
    wait_for_topic_gone,
)

INVALID_PARTITIONS = 37
TOPIC_ALREADY_EXISTS = 36
DEFAULT_SOURCES = {ConfigSource.DEFAULT_CONFIG, ConfigSource.STATIC_BROKER_CONFIG}


def create_error(bootstrap: str, topic: NewTopic, validate_only: bool = False) -> int:
    futures = admin(bootstrap).create_topics([topic], validate_only=validate_only, request_timeout=CLIENT_TIMEOUT_S)
    return future_error_code(futures[topic.topic])


def describe_topic_configs(bootstrap: str, topic: str) -> dict[str, ConfigEntry]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    futures = admin(bootstrap).describe_configs([resource], request_timeout=CLIENT_TIMEOUT_S)
    return futures[resource].result(timeout=CLIENT_TIMEOUT_S)


def source(entry: ConfigEntry) -> ConfigSource:
    """The entry's source as the enum (the client may hand back a plain int)."""
    return ConfigSource(entry.source)


def topic_names(bootstrap: str) -> set[str]:
    return set(admin(bootstrap).list_topics(timeout=CLIENT_TIMEOUT_S).topics)


def test_create_topic_and_list_topics(broker, topic_name):
    """create_topics with 4 partitions succeeds; list_topics shows the topic with
    partitions 0..3, each led by broker 1, and lists broker 1 at its listener."""
    assert create_error(broker.bootstrap, NewTopic(topic_name, num_partitions=4, replication_factor=1)) == 0
    wait_for_topic(broker.bootstrap, topic_name, 4)
    md = admin(broker.bootstrap).list_topics(timeout=CLIENT_TIMEOUT_S)
    assert sorted(md.topics[topic_name].partitions) == [0, 1, 2, 3]
    assert {p.leader for p in md.topics[topic_name].partitions.values()} == {1}
    assert {b.id: (b.host, b.port) for b in md.brokers.values()} == {1: (broker.host, broker.port)}


def test_create_topic_default_partitions_and_replication(broker, topic_name):
    """A CreateTopics with num_partitions and replication_factor left at -1 uses the broker
    defaults: one partition, one replica."""
    assert create_error(broker.bootstrap, NewTopic(topic_name)) == 0
    md = wait_for_topic(broker.bootstrap, topic_name)
    assert list(md.partitions) == [0]
    assert md.partitions[0].replicas == [1]


def test_create_topic_validate_only_creates_nothing(broker, topic_name):
    """validate_only=True answers success for a valid topic but does not create it."""
    topic = NewTopic(topic_name, num_partitions=2, replication_factor=1, config={"retention.ms": "60000"})
    assert create_error(broker.bootstrap, topic, validate_only=True) == 0
    assert topic_name not in topic_names(broker.bootstrap)


def test_create_topic_validate_only_still_validates(broker, topic_name):
    """validate_only=True reports the same errors as a real create (here an invalid
    config value → INVALID_CONFIG)."""
    topic = NewTopic(topic_name, num_partitions=1, replication_factor=1, config={"retention.ms": "soon"})
    assert create_error(broker.bootstrap, topic, validate_only=True) == w.INVALID_CONFIG


def test_create_existing_topic_fails(broker, topic_name):
    """Creating a topic that exists → TOPIC_ALREADY_EXISTS (36)."""
    create_topic(broker.bootstrap, topic_name)
    assert create_error(broker.bootstrap, NewTopic(topic_name, 1, 1)) == TOPIC_ALREADY_EXISTS


def test_replication_factor_above_broker_count_fails(broker, topic_name):
    """replication_factor 3 on a one-broker cluster → INVALID_REPLICATION_FACTOR (38), and
    no topic is created."""
    assert create_error(broker.bootstrap, NewTopic(topic_name, 1, 3)) == w.INVALID_REPLICATION_FACTOR
    assert topic_name not in topic_names(broker.bootstrap)


@pytest.mark.parametrize("name", ["a/b", "x" * 250, "..", ".", "has space"])
def test_invalid_topic_names_fail(broker, name):
    """Names with illegal characters, longer than 249 chars, or '.'/'..' →
    INVALID_TOPIC_EXCEPTION (17)."""
    assert create_error(broker.bootstrap, NewTopic(name, 1, 1)) == w.INVALID_TOPIC_EXCEPTION


@pytest.mark.parametrize(
    "config",
    [{"retention.ms": "abc"}, {"cleanup.policy": "shred"}, {"max.message.bytes": "-5"}, {"no.such.config": "1"}],
    ids=["not-a-number", "bad-enum", "out-of-range", "unknown-name"],
)
def test_create_topic_with_invalid_config_fails(broker, topic_name, config):
    """An invalid config value or unknown topic config name on create → INVALID_CONFIG
    (40), and no topic is created."""
    assert create_error(broker.bootstrap, NewTopic(topic_name, 1, 1, config=config)) == w.INVALID_CONFIG
    assert topic_name not in topic_names(broker.bootstrap)


def test_delete_topics(broker, topic_name):
    """delete_topics removes the topic from metadata; deleting it again →
    UNKNOWN_TOPIC_OR_PARTITION (3); a new topic of the same name starts empty."""
    create_topic(broker.bootstrap, topic_name)
    produce_all(producer(broker.bootstrap), topic_name, [{"value": b"old", "partition": 0}])
    client = admin(broker.bootstrap)
    assert future_error_code(client.delete_topics([topic_name], request_timeout=CLIENT_TIMEOUT_S)[topic_name]) == 0
    wait_for_topic_gone(broker.bootstrap, topic_name)
    again = client.delete_topics([topic_name], request_timeout=CLIENT_TIMEOUT_S)[topic_name]
    assert future_error_code(again) == w.UNKNOWN_TOPIC_OR_PARTITION

    create_topic(broker.bootstrap, topic_name)
    c = consumer(broker.bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=CLIENT_TIMEOUT_S, cached=False) == (0, 0)
    finally:
        c.close()


def test_create_partitions_increase_and_decrease(broker, topic_name):
    """create_partitions 1 → 3 adds partitions 1 and 2 (usable for produce); asking for 2
    afterwards → INVALID_PARTITIONS (37) and the topic keeps 3."""
    create_topic(broker.bootstrap, topic_name)
    client = admin(broker.bootstrap)
    fut = client.create_partitions([NewPartitions(topic_name, 3)], request_timeout=CLIENT_TIMEOUT_S)[topic_name]
    assert future_error_code(fut) == 0
    wait_for_topic(broker.bootstrap, topic_name, 3)
    [(err, msg)] = produce_all(producer(broker.bootstrap), topic_name, [{"value": b"p2", "partition": 2}])
    assert (err, msg.partition(), msg.offset()) == (None, 2, 0)

    fut = client.create_partitions([NewPartitions(topic_name, 2)], request_timeout=CLIENT_TIMEOUT_S)[topic_name]
    assert future_error_code(fut) == INVALID_PARTITIONS
    assert len(wait_for_topic(broker.bootstrap, topic_name).partitions) == 3


def test_describe_topic_configs_sources(broker, topic_name):
    """describe_configs on a topic: an override set at creation shows its value with source
    DYNAMIC_TOPIC_CONFIG; an untouched config shows Kafka's default (segment.bytes
    1073741824, cleanup.policy delete) with a default/static source."""
    create_topic(broker.bootstrap, topic_name, config={"retention.ms": "3600000", "cleanup.policy": "compact"})
    configs = describe_topic_configs(broker.bootstrap, topic_name)

    for name, value in {"retention.ms": "3600000", "cleanup.policy": "compact"}.items():
        assert configs[name].value == value, configs[name]
        assert source(configs[name]) == ConfigSource.DYNAMIC_TOPIC_CONFIG, configs[name]
        assert not configs[name].is_default
    segment = configs["segment.bytes"]
    assert segment.value == "1073741824", segment
    assert source(segment) in DEFAULT_SOURCES, segment
    assert configs["max.message.bytes"].value == "1048588"


def test_describe_broker_configs(broker):
    """describe_configs on broker 1: num.partitions is Kafka's default 1 (DEFAULT_CONFIG),
    log.dirs is what the broker was started with (STATIC_BROKER_CONFIG), and
    auto.create.topics.enable is true."""
    resource = ConfigResource(ResourceType.BROKER, "1")
    futures = admin(broker.bootstrap).describe_configs([resource], request_timeout=CLIENT_TIMEOUT_S)
    configs = futures[resource].result(timeout=CLIENT_TIMEOUT_S)
    assert configs["num.partitions"].value == "1"
    assert source(configs["num.partitions"]) == ConfigSource.DEFAULT_CONFIG
    assert configs["log.dirs"].value == str(broker.data_dir)
    assert source(configs["log.dirs"]) == ConfigSource.STATIC_BROKER_CONFIG
    assert configs["auto.create.topics.enable"].value == "true"


def test_alter_configs_replaces_topic_overrides(broker, topic_name):
    """alter_configs (non-incremental) sets retention.ms=12345, visible in describe as
    DYNAMIC_TOPIC_CONFIG, and drops the earlier cleanup.policy override back to default."""
    create_topic(broker.bootstrap, topic_name, config={"cleanup.policy": "compact"})
    resource = ConfigResource(ResourceType.TOPIC, topic_name, set_config={"retention.ms": "12345"})
    fut = admin(broker.bootstrap).alter_configs([resource], request_timeout=CLIENT_TIMEOUT_S)[resource]
    assert future_error_code(fut) == 0

    configs = describe_topic_configs(broker.bootstrap, topic_name)
    assert (configs["retention.ms"].value, source(configs["retention.ms"])) == ("12345", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert configs["cleanup.policy"].value == "delete"
    assert source(configs["cleanup.policy"]) in DEFAULT_SOURCES


def test_incremental_alter_configs_set_and_delete(broker, topic_name):
    """incremental_alter_configs SET retention.ms=54321 and DELETE the cleanup.policy
    override: describe shows the new value (DYNAMIC_TOPIC_CONFIG) and cleanup.policy back
    at its default, while the untouched segment.ms override stays."""
    create_topic(broker.bootstrap, topic_name, config={"cleanup.policy": "compact", "segment.ms": "600000"})
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic_name,
        incremental_configs=[
            ConfigEntry("retention.ms", "54321", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("cleanup.policy", None, incremental_operation=AlterConfigOpType.DELETE),
        ],
    )
    fut = admin(broker.bootstrap).incremental_alter_configs([resource], request_timeout=CLIENT_TIMEOUT_S)[resource]
    assert future_error_code(fut) == 0

    configs = describe_topic_configs(broker.bootstrap, topic_name)
    assert (configs["retention.ms"].value, source(configs["retention.ms"])) == ("54321", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert configs["cleanup.policy"].value == "delete"
    assert source(configs["cleanup.policy"]) in DEFAULT_SOURCES
    assert (configs["segment.ms"].value, source(configs["segment.ms"])) == ("600000", ConfigSource.DYNAMIC_TOPIC_CONFIG)


@pytest.mark.parametrize("incremental", [False, True], ids=["alter_configs", "incremental_alter_configs"])
def test_alter_configs_invalid_value_fails(broker, topic_name, incremental):
    """An invalid value (retention.ms=abc) through either alter API → INVALID_CONFIG (40)
    and the topic's configs are unchanged."""
    create_topic(broker.bootstrap, topic_name, config={"retention.ms": "3600000"})
    if incremental:
        resource = ConfigResource(
            ResourceType.TOPIC,
            topic_name,
            incremental_configs=[ConfigEntry("retention.ms", "abc", incremental_operation=AlterConfigOpType.SET)],
        )
        fut = admin(broker.bootstrap).incremental_alter_configs([resource], request_timeout=CLIENT_TIMEOUT_S)[resource]
    else:
        resource = ConfigResource(ResourceType.TOPIC, topic_name, set_config={"retention.ms": "abc"})
        fut = admin(broker.bootstrap).alter_configs([resource], request_timeout=CLIENT_TIMEOUT_S)[resource]
    assert future_error_code(fut) == w.INVALID_CONFIG
    assert describe_topic_configs(broker.bootstrap, topic_name)["retention.ms"].value == "3600000"


def test_delete_records_moves_log_start_offset(broker, topic_name):
    """delete_records before offset 4 of a 10-record partition reports low watermark 4;
    watermarks become (4, 10) and reading from the beginning starts at offset 4."""
    create_topic(broker.bootstrap, topic_name)
    records = [{"key": f"k{i}".encode(), "value": f"v{i}".encode(), "partition": 0} for i in range(10)]
    produce_all(producer(broker.bootstrap, acks="all"), topic_name, records)

    tp = TopicPartition(topic_name, 0, 4)
    futures = admin(broker.bootstrap).delete_records([tp], request_timeout=CLIENT_TIMEOUT_S)
    [fut] = futures.values()
    try:
        deleted = fut.result(timeout=CLIENT_TIMEOUT_S)
    except KafkaException as exc:
        pytest.fail(f"delete_records failed: {exc!r}")
    assert deleted.low_watermark == 4

    c = consumer(broker.bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=CLIENT_TIMEOUT_S, cached=False) == (4, 10)
    finally:
        c.close()
    got = read_partition(broker.bootstrap, topic_name)
    assert [(r.offset, r.key) for r in got] == [(i, f"k{i}".encode()) for i in range(4, 10)]
