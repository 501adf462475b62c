"""Client quotas (KIP-13, KIP-55, KIP-124; set and read with KIP-546's AlterClientQuotas and
DescribeClientQuotas): Kafka's own `kafka-configs` sets, describes and deletes quotas of
client ids and users; a librdkafka producer over its `producer_byte_rate` and a kafka-python
consumer over its `consumer_byte_rate` are slowed to the quota (and told so in
`throttle_time_ms`) while clients of other ids run at full speed, and lose nothing; a
client over its `request_percentage` is throttled and not read from meanwhile; quotas
survive kill -9; replication is never throttled by a client quota.

Every client is the user ANONYMOUS: Strom's listeners are PLAINTEXT, as Kafka's are with
no SASL. Time assertions are lower bounds that the quota forces (the throttled run cannot
be faster than the quota allows, less a generous margin), and an unthrottled client of
the same work is faster and never throttled; nothing here measures speed."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import time

import pytest
from confluent_kafka import Producer
from kafka import KafkaConsumer
from kafka import TopicPartition as KTopicPartition

import kafka_wire as w

from support import CLIENT_TIMEOUT_S, create_topic, produce_all, producer
from test_replication import create_replicated_topic

INVALID_REQUEST = 42
_correlation = itertools.count(1)

# One sample is 1 s and the rate spans at least (samples - 1) of them: with 3 samples, a
# fresh client may send two seconds' worth at once, then waits for the rest.
QUOTA_PROPS = {"quota.window.num": 3, "quota.window.size.seconds": 1}
BYTE_RATE = 200_000
PAYLOAD = 1_200_000
# At BYTE_RATE the payload needs (PAYLOAD - 2 s of quota) / BYTE_RATE = 4 s at the least.
THROTTLED_AT_LEAST_S = 2.5


def config_command(jars: str, bootstrap: str, *args: str) -> subprocess.CompletedProcess:
    """Kafka's `kafka-configs` (org.apache.kafka.tools.ConfigCommand) from the kafka-tools jar."""
    return subprocess.run(
        ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx256m", "-cp", jars,
         "org.apache.kafka.tools.ConfigCommand", "--bootstrap-server", bootstrap, *args],
        capture_output=True, text=True, timeout=90,
    )


def configs_ok(jars: str, bootstrap: str, *args: str) -> str:
    proc = config_command(jars, bootstrap, *args)
    assert proc.returncode == 0, f"kafka-configs {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc.stdout


def described(out: str) -> dict[str, dict[str, float]]:
    """`Quota configs for <entity> are k=v, k=v` lines, by entity text."""
    found = {}
    for line in out.splitlines():
        m = re.match(r"Quota configs for (.+) are (.*)$", line.strip())
        if m:
            found[m.group(1)] = {k: float(v) for k, v in (kv.split("=", 1) for kv in m.group(2).split(", ") if kv)}
    return found


def alter_quotas(b, entries, validate_only: bool = False) -> list[tuple[int, str | None, dict]]:
    cid = next(_correlation)
    with w.Connection(b.host, b.port, 10.0) as conn:
        body = conn.request(w.alter_client_quotas_request_v0(cid, entries, validate_only), cid)
    return w.decode_alter_client_quotas_response_v0(body)


def set_quota(b, entity: list[tuple[str, str | None]], **values: float) -> None:
    ((code, message, _),) = alter_quotas(b, [(entity, list(values.items()))])
    assert code == 0, f"AlterClientQuotas failed: {code} {message}"


def describe_quotas(b, components, strict: bool = False):
    cid = next(_correlation)
    with w.Connection(b.host, b.port, 10.0) as conn:
        body = conn.request(w.describe_client_quotas_request_v0(cid, components, strict), cid)
    return w.decode_describe_client_quotas_response_v0(body)


@pytest.fixture
def b(broker_factory):
    return broker_factory.start(QUOTA_PROPS)


@pytest.mark.timeout_s(240)
def test_kafka_configs_sets_describes_and_deletes_quotas_and_they_survive_kill_9(b, kafka_jars):
    boot = b.bootstrap
    configs_ok(kafka_jars, boot, "--alter", "--entity-type", "clients", "--entity-name", "alpha",
               "--add-config", "producer_byte_rate=1024,consumer_byte_rate=2048")
    configs_ok(kafka_jars, boot, "--alter", "--entity-type", "clients", "--entity-default",
               "--add-config", "request_percentage=25.5")
    configs_ok(kafka_jars, boot, "--alter", "--entity-type", "users", "--entity-name", "ANONYMOUS",
               "--entity-type", "clients", "--entity-name", "beta", "--add-config", "producer_byte_rate=4096")

    alpha = described(configs_ok(kafka_jars, boot, "--describe", "--entity-type", "clients", "--entity-name", "alpha"))
    assert alpha == {"client-id 'alpha'": {"producer_byte_rate": 1024.0, "consumer_byte_rate": 2048.0}}, alpha
    every_client = described(configs_ok(kafka_jars, boot, "--describe", "--entity-type", "clients"))
    assert every_client == {
        "client-id 'alpha'": {"producer_byte_rate": 1024.0, "consumer_byte_rate": 2048.0},
        "the default client-id": {"request_percentage": 25.5},
    }, every_client
    beta = described(configs_ok(kafka_jars, boot, "--describe", "--entity-type", "users", "--entity-name", "ANONYMOUS",
                                "--entity-type", "clients", "--entity-name", "beta"))
    assert beta == {"user-principal 'ANONYMOUS', client-id 'beta'": {"producer_byte_rate": 4096.0}}, beta

    configs_ok(kafka_jars, boot, "--alter", "--entity-type", "clients", "--entity-name", "alpha",
               "--delete-config", "producer_byte_rate")
    alpha = described(configs_ok(kafka_jars, boot, "--describe", "--entity-type", "clients", "--entity-name", "alpha"))
    assert alpha == {"client-id 'alpha'": {"consumer_byte_rate": 2048.0}}, alpha

    refused = config_command(kafka_jars, boot, "--alter", "--entity-type", "clients", "--entity-name", "alpha",
                             "--add-config", "producer_byte_rate=1.5")
    assert refused.returncode != 0
    assert "producer_byte_rate must be a Long value" in refused.stdout + refused.stderr, refused.stderr[-2000:]

    b.restart(hard=True)
    code, message, entries = describe_quotas(b, [], strict=False)
    assert code == 0, message
    assert sorted((json.dumps(e, sort_keys=True), v) for e, v in entries) == sorted([
        (json.dumps({"client-id": "alpha"}), {"consumer_byte_rate": 2048.0}),
        (json.dumps({"client-id": None}), {"request_percentage": 25.5}),
        (json.dumps({"client-id": "beta", "user": "ANONYMOUS"}, sort_keys=True), {"producer_byte_rate": 4096.0}),
    ]), entries


def test_bad_alterations_and_filters_get_invalid_request_with_a_message(b):
    results = alter_quotas(b, [
        ([("client-id", "a")], [("producer_byte_rate", 100.0)]),
        ([("group", "g")], [("producer_byte_rate", 100.0)]),
        ([("client-id", "c")], [("consumer_bytes", 100.0)]),
        ([("client-id", "d")], [("request_percentage", -1.0)]),
    ], validate_only=True)
    assert [(code, entity) for code, _, entity in results] == [
        (0, {"client-id": "a"}), (INVALID_REQUEST, {"group": "g"}),
        (INVALID_REQUEST, {"client-id": "c"}), (INVALID_REQUEST, {"client-id": "d"}),
    ]
    assert results[1][1] == "Unhandled client quota entity type: group"
    assert results[2][1] == "Invalid configuration key consumer_bytes"
    assert "must be positive" in results[3][1]
    # validate_only changed nothing.
    assert describe_quotas(b, [], strict=False)[2] == []
    code, message, entries = describe_quotas(b, [("client-id", w.MATCH_EXACT, None)])
    assert (code, entries) == (INVALID_REQUEST, None)
    assert message == "Request specified MATCH_TYPE_EXACT, but set match string to null."


def throttles(stats: list[dict]) -> int:
    """The largest throttle librdkafka's statistics report for any broker."""
    return max((bs.get("throttle", {}).get("max", 0) for s in stats for bs in s.get("brokers", {}).values()), default=0)


def timed_produce(bootstrap: str, topic: str, client_id: str) -> tuple[float, list, list[dict]]:
    stats: list[dict] = []
    prod = Producer({"bootstrap.servers": bootstrap, "acks": "all", "client.id": client_id, "linger.ms": 5,
                     "batch.size": 64_000, "statistics.interval.ms": 200,
                     "stats_cb": lambda s: stats.append(json.loads(s))})
    sent = [{"value": f"{i:06d}".encode() * 1_000, "partition": 0} for i in range(PAYLOAD // 6_000)]
    started = time.monotonic()
    reports = produce_all(prod, topic, sent, timeout_s=60)
    elapsed = time.monotonic() - started
    prod.poll(0.5)  # one more statistics report
    return elapsed, [(err, m.offset(), m.value()) for err, m in reports], stats


@pytest.mark.timeout_s(120)
def test_a_producer_over_its_byte_rate_is_slowed_to_it_and_others_are_not(b, topic_name):
    create_topic(b.bootstrap, topic_name)
    set_quota(b, [("client-id", "slow-producer")], producer_byte_rate=BYTE_RATE)
    fast_elapsed, fast, fast_stats = timed_produce(b.bootstrap, topic_name, "fast-producer")
    slow_elapsed, slow, stats = timed_produce(b.bootstrap, topic_name, "slow-producer")
    count = len(fast)
    assert [(e, o) for e, o, _ in fast] == [(None, i) for i in range(count)]
    assert [(e, o) for e, o, _ in slow] == [(None, count + i) for i in range(count)]
    assert slow_elapsed >= THROTTLED_AT_LEAST_S, f"{PAYLOAD} bytes at {BYTE_RATE} B/s took {slow_elapsed:.1f} s"
    assert slow_elapsed > fast_elapsed, (slow_elapsed, fast_elapsed)
    assert throttles(stats) > 0, "librdkafka saw no throttle_time_ms"
    assert throttles(fast_stats) == 0, "a client id without a quota was throttled"
    assert re.search(r'strom_client_quota_throttles_total\{quota="produce"\} [1-9]', b.metrics())


def kafka_python_read(bootstrap: str, topic: str, client_id: str, count: int, max_s: float = 60) -> tuple[float, list]:
    c = KafkaConsumer(bootstrap_servers=bootstrap, client_id=client_id, group_id=None, enable_auto_commit=False,
                      fetch_max_bytes=1_000_000, max_partition_fetch_bytes=1_000_000)
    try:
        tp = KTopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        got = []
        started = time.monotonic()
        deadline = started + max_s
        while len(got) < count and time.monotonic() < deadline:
            for batch in c.poll(timeout_ms=500).values():
                got.extend(batch)
        return time.monotonic() - started, got
    finally:
        c.close()


@pytest.mark.timeout_s(150)
def test_a_kafka_python_consumer_over_its_byte_rate_is_slowed_to_it_and_reads_everything(b, topic_name):
    create_topic(b.bootstrap, topic_name)
    sent = [{"value": f"{i:06d}".encode() * 1_000, "partition": 0} for i in range(PAYLOAD // 6_000)]
    produce_all(producer(b.bootstrap, acks="all", linger_ms=5), topic_name, sent)
    set_quota(b, [("user", None)], consumer_byte_rate=BYTE_RATE)
    # A client-id quota of its own outranks no user quota: the default user's applies to
    # both clients, so the fast one is freed by a more specific user+client-id entity.
    set_quota(b, [("user", "ANONYMOUS"), ("client-id", "fast-consumer")], consumer_byte_rate=1e12)
    fast_elapsed, fast = kafka_python_read(b.bootstrap, topic_name, "fast-consumer", len(sent))
    slow_elapsed, slow = kafka_python_read(b.bootstrap, topic_name, "slow-consumer", len(sent))
    for got in (fast, slow):
        assert [(r.offset, r.value) for r in got] == [(i, s["value"]) for i, s in enumerate(sent)]
    assert slow_elapsed >= THROTTLED_AT_LEAST_S, f"{PAYLOAD} bytes at {BYTE_RATE} B/s took {slow_elapsed:.1f} s"
    assert slow_elapsed > fast_elapsed, (slow_elapsed, fast_elapsed)
    assert re.search(r'strom_client_quota_throttles_total\{quota="fetch"\} [1-9]', b.metrics())


def test_a_throttled_connection_is_not_read_from_until_its_throttle_ends(b, topic_name):
    """Produce v8 over the wire: a request past the quota is appended and answered at once
    with throttle_time_ms; the next request on the connection is answered only after it."""
    create_topic(b.bootstrap, topic_name)
    set_quota(b, [("client-id", "wire-producer")], producer_byte_rate=20_000)
    batch = w.record_batch([w.Record(key=None, value=b"x" * 50_000)])
    with w.Connection(b.host, b.port, 20.0) as conn:
        cid = next(_correlation)
        sent_at = time.monotonic()
        body = conn.request(w.produce_request_v8(topic_name, 0, batch, cid, client_id="wire-producer"), cid)
        throttle_ms = w.produce_throttle_time_ms(body)
        assert w.decode_produce_response_v8(body)[(topic_name, 0)].error_code == 0
        # 50,000 bytes against 20,000 B/s over a 2 s window: 25,000 B/s, a 500 ms throttle.
        assert 300 <= throttle_ms <= 2_000, throttle_ms
        cid = next(_correlation)
        conn.request(w.list_groups_request_v1(cid, "wire-producer"), cid)
        assert time.monotonic() - sent_at >= throttle_ms / 1000 * 0.9


def test_a_client_over_its_request_percentage_is_throttled(b):
    """A request_percentage of 0.0001 (a microsecond of handling per second): a few
    ListGroups requests use it up, and the next answers carry throttle_time_ms — at most one
    quota window (1 s), as Kafka bounds request-time throttles."""
    set_quota(b, [("client-id", "busy")], request_percentage=0.0001)
    seen = []
    with w.Connection(b.host, b.port, 20.0) as conn:
        for _ in range(200):
            cid = next(_correlation)
            body = conn.request(w.list_groups_request_v1(cid, "busy"), cid)
            seen.append(w.Reader(body).int32())
            if seen[-1] > 0:
                break
    assert seen[-1] > 0, f"no throttle in {len(seen)} ListGroups answers: {seen}"
    assert max(seen) <= 1_000, seen
    with w.Connection(b.host, b.port, 20.0) as conn:
        cid = next(_correlation)
        body = conn.request(w.list_groups_request_v1(cid, "idle"), cid)
        assert w.Reader(body).int32() == 0, "a client without a quota was throttled"


@pytest.mark.cluster
@pytest.mark.timeout_s(150)
def test_replication_is_not_throttled_by_a_client_quota(cluster_factory, topic_name):
    """A consumer_byte_rate of 1 byte/s for every user: followers still replicate at full
    speed (acks=all completes in client time), while a consumer is throttled."""
    cluster = cluster_factory.start(controllers=1, brokers=3)
    broker = cluster.brokers[0]
    set_quota(broker, [("user", None)], consumer_byte_rate=1)
    create_replicated_topic(cluster, topic_name, 1, 3, {"min.insync.replicas": "3"})
    sent = [{"value": b"r" * 1_000, "partition": 0} for _ in range(500)]
    started = time.monotonic()
    prod = producer(cluster.bootstrap(), acks="all", linger_ms=5, batch_size=10_000)
    reports = produce_all(prod, topic_name, sent, timeout_s=CLIENT_TIMEOUT_S)
    assert [(err, m.offset()) for err, m in reports] == [(None, i) for i in range(len(sent))]
    assert time.monotonic() - started < CLIENT_TIMEOUT_S
    # A consumer is held to the quota: an answer carries at most a window's worth (two
    # bytes, so one batch of about ten records), then the consumer waits out its throttle.
    _, got = kafka_python_read(cluster.bootstrap(), topic_name, "throttled", len(sent), max_s=5)
    assert len(got) < len(sent), "a consumer at 1 byte/s read everything"
