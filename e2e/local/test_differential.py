"""Differential tests: the same requests to Apache Kafka 4.4 (scripts/kafka-reference, one
KRaft node with Kafka's defaults, started beside Strom) and to Strom, and the answers a
client sees compared field by field — topic config defaults, the errors of bad
CreateTopics, Produce, Fetch, ListOffsets and group requests. A difference is either a bug
to fix or one of KNOWN below, each a line of docs/compatibility.md.

Error messages are not compared (they are free text); error codes, values and sources are."""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType

import kafka_wire as w
from cluster import pick_port
from support import CLIENT_TIMEOUT_S, admin, create_topic

SCRIPT = Path(__file__).resolve().parent.parent.parent / "scripts" / "kafka-reference"
_correlation = itertools.count(1)

# Topic configs that only Kafka has, or whose default or source differs, with why (each a
# line of docs/compatibility.md).
KNOWN_CONFIG_DIFFERENCES = {
    # Tiered storage (KIP-405) is not implemented; its topic configs do not exist in Strom.
    "remote.storage.enable": "tiered storage",
    "local.retention.ms": "tiered storage",
    "local.retention.bytes": "tiered storage",
    "remote.log.copy.disable": "tiered storage",
    "remote.log.delete.on.disable": "tiered storage",
    "remote.copy.lag.bytes": "tiered storage",
    "remote.copy.lag.ms": "tiered storage",
    # Share groups' dead-letter queue (Kafka 4.4): no share groups in Strom.
    "errors.deadletterqueue.group.enable": "share groups",
    # What one batch may decompress to: Strom's default is 64 MiB, Kafka 4.4's 2147483639.
    "max.decompressed.message.bytes": "default",
    # Kafka 4 records min.insync.replicas as a cluster-wide dynamic default when it formats
    # storage (for eligible leader replicas, KIP-966), so a topic shows it with source
    # DYNAMIC_DEFAULT_BROKER_CONFIG; Strom's is the plain default (same value, 1).
    "min.insync.replicas": "source",
}


class Target:
    def __init__(self, name: str, host: str, port: int):
        self.name, self.host, self.port = name, host, port
        self.bootstrap = f"{host}:{port}"


@pytest.fixture(scope="module")
def kafka(tmp_path_factory):
    if shutil.which("java") is None or shutil.which("mvn") is None:
        pytest.skip("java and mvn are needed to run Apache Kafka beside Strom")
    fetch = subprocess.run([str(SCRIPT), "fetch"], capture_output=True, text=True, timeout=600)
    assert fetch.returncode == 0, fetch.stderr
    port, cport = pick_port("127.0.0.1"), pick_port("127.0.0.1")
    workdir = tmp_path_factory.mktemp("kafka-reference")
    log = open(workdir / "kafka.log", "w")
    proc = subprocess.Popen([str(SCRIPT), "run", str(workdir / "node"), str(port), str(cport)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"Kafka exited {proc.returncode}: {(workdir / 'kafka.log').read_text()[-3000:]}"
            try:
                w.metadata("127.0.0.1", port, timeout_s=2.0)
                break
            except (OSError, ValueError, w.ConnectionClosed):
                assert time.monotonic() < deadline, "Apache Kafka did not start in 90 s"
                time.sleep(0.5)
        yield Target("kafka", "127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def strom(module_broker_factory):
    b = module_broker_factory.start()
    return Target("strom", b.host, b.port)


def both(kafka: Target, strom: Target, scenario) -> tuple[object, object]:
    return scenario(kafka), scenario(strom)


def config_defaults(t: Target) -> dict[str, tuple[str | None, int]]:
    name = f"diff-defaults-{time.monotonic_ns()}"
    create_topic(t.bootstrap, name)
    resource = ConfigResource(ResourceType.TOPIC, name)
    entries = admin(t.bootstrap).describe_configs([resource])[resource].result(timeout=CLIENT_TIMEOUT_S)
    return {k: (e.value, e.source) for k, e in entries.items()}


def test_topic_config_defaults_match_kafka(kafka, strom):
    k, s = both(kafka, strom, config_defaults)
    only_kafka = sorted(set(k) - set(s) - set(KNOWN_CONFIG_DIFFERENCES))
    only_strom = sorted(set(s) - set(k) - set(KNOWN_CONFIG_DIFFERENCES))
    differing = {n: (k[n], s[n]) for n in sorted(set(k) & set(s)) if k[n] != s[n] and n not in KNOWN_CONFIG_DIFFERENCES}
    assert (only_kafka, only_strom, differing) == ([], [], {}), (only_kafka, only_strom, differing)


def create_error(t: Target, topic: str, partitions: int = 1, rf: int = 1, config: dict | None = None) -> int:
    futures = admin(t.bootstrap).create_topics([NewTopic(topic, partitions, rf, config=config or {})], operation_timeout=10)
    try:
        futures[topic].result(timeout=CLIENT_TIMEOUT_S)
        return 0
    except KafkaException as e:
        return e.args[0].code()


BAD_CREATES = [
    ("dot", dict(topic=".")),
    ("dots", dict(topic="..")),
    ("too_long", dict(topic="a" * 250)),
    ("space", dict(topic="bad name")),
    ("slash", dict(topic="bad/name")),
    ("zero_partitions", dict(topic="diff-zero", partitions=0)),
    ("rf_above_brokers", dict(topic="diff-rf", rf=2)),
    ("unknown_config", dict(topic="diff-unknown-config", config={"no.such.config": "1"})),
    ("bad_number", dict(topic="diff-bad-number", config={"retention.ms": "abc"})),
    ("bad_policy", dict(topic="diff-bad-policy", config={"cleanup.policy": "bogus"})),
    ("bad_codec", dict(topic="diff-bad-codec", config={"compression.type": "brotli"})),
    ("min_isr_zero", dict(topic="diff-min-isr", config={"min.insync.replicas": "0"})),
]


@pytest.mark.parametrize("case", [c for c, _ in BAD_CREATES])
def test_bad_create_topics_get_kafkas_error_codes(kafka, strom, case):
    args = dict(BAD_CREATES)[case]
    k, s = both(kafka, strom, lambda t: create_error(t, **args))
    assert k != 0, f"Kafka accepted {args}"
    assert s == k, f"{case}: Kafka {k}, Strom {s}"


def produce_codes(t: Target) -> dict[str, int]:
    topic = f"diff-produce-{time.monotonic_ns()}"
    create_topic(t.bootstrap, topic)
    batch = w.record_batch([w.Record(key=None, value=b"v")])
    big = w.record_batch([w.Record(key=None, value=b"x" * 1_100_000)])
    out = {}
    for name, request in [
        ("ok", lambda cid: w.produce_request_v8(topic, 0, batch, cid)),
        ("unknown_partition", lambda cid: w.produce_request_v8(topic, 7, batch, cid)),
        ("unknown_topic", lambda cid: w.produce_request_v8(topic + "-none", 0, batch, cid)),
        ("too_large", lambda cid: w.produce_request_v8(topic, 0, big, cid)),
        ("acks_2", lambda cid: w.produce_request_v8(topic, 0, batch, cid, acks=2)),
    ]:
        cid = next(_correlation)
        with w.Connection(t.host, t.port, 20.0) as conn:
            body = conn.request(request(cid), cid)
        (resp,) = w.decode_produce_response_v8(body).values()
        out[name] = resp.error_code
    return out


def test_produce_errors_match_kafka(kafka, strom):
    k, s = both(kafka, strom, produce_codes)
    # With auto-creation on (the default on both), an unknown topic is created and the first
    # produce may still find it without a leader: either answer is Kafka's.
    k_unknown, s_unknown = k.pop("unknown_topic"), s.pop("unknown_topic")
    assert s == k
    assert {k_unknown, s_unknown} <= {0, 3, 6}, (k_unknown, s_unknown)


def fetch_and_offsets(t: Target) -> dict[str, object]:
    topic = f"diff-fetch-{time.monotonic_ns()}"
    create_topic(t.bootstrap, topic)
    out: dict[str, object] = {}
    for name, (top, part, offset) in {
        "empty": (topic, 0, 0),
        "out_of_range": (topic, 0, 5),
        "unknown_partition": (topic, 3, 0),
        "unknown_topic": (topic + "-none", 0, 0),
    }.items():
        cid = next(_correlation)
        with w.Connection(t.host, t.port, 20.0) as conn:
            body = conn.request(w.fetch_request_v4(top, part, offset, cid), cid)
        got = w.decode_fetch_response_v4(body)
        out[name] = [(p.error_code, p.high_watermark, len(p.records)) for p in got.values()]
    return out


def test_fetch_errors_match_kafka(kafka, strom):
    k, s = both(kafka, strom, fetch_and_offsets)
    assert s == k


def warm_up_group_coordinator(t: Target) -> None:
    """__consumer_offsets exists and its coordinator answers: both create it on first use,
    and a fresh Kafka answers NOT_COORDINATOR while it loads, which is not what is compared."""
    a = admin(t.bootstrap)
    group = f"diff-warm-{time.monotonic_ns()}"
    deadline = time.monotonic() + 60
    while True:
        try:
            a.describe_consumer_groups([group])[group].result(timeout=CLIENT_TIMEOUT_S)
            return
        except KafkaException:
            assert time.monotonic() < deadline, f"{t.name}'s group coordinator never answered"
            time.sleep(0.5)


def group_answers(t: Target) -> dict[str, object]:
    warm_up_group_coordinator(t)
    a = admin(t.bootstrap)
    out: dict[str, object] = {}
    group = f"diff-none-{time.monotonic_ns()}"
    try:
        a.delete_consumer_groups([group])[group].result(timeout=CLIENT_TIMEOUT_S)
        out["delete_unknown"] = 0
    except KafkaException as e:
        out["delete_unknown"] = e.args[0].code()
    described = a.describe_consumer_groups([group])[group]
    try:
        d = described.result(timeout=CLIENT_TIMEOUT_S)
        out["describe_unknown"] = (str(d.state), len(d.members))
    except KafkaException as e:
        out["describe_unknown"] = e.args[0].code()
    try:
        topic = f"diff-no-topic-{time.monotonic_ns()}"
        a.delete_topics([topic], operation_timeout=10)[topic].result(timeout=CLIENT_TIMEOUT_S)
        out["delete_unknown_topic"] = 0
    except KafkaException as e:
        out["delete_unknown_topic"] = e.args[0].code()
    return out


def test_group_and_topic_not_found_answers_match_kafka(kafka, strom):
    k, s = both(kafka, strom, group_answers)
    assert s == k


def test_the_reference_is_apache_kafka(kafka):
    """Guards the fixture: what answers on the reference port is Kafka (its ApiVersions
    lists APIs Strom does not implement, such as the transaction APIs)."""
    with socket.create_connection((kafka.host, kafka.port), timeout=5):
        pass
    cid = next(_correlation)
    with w.Connection(kafka.host, kafka.port, 10.0) as conn:
        body = conn.request(w.api_versions_request(0, cid), cid)
    keys = set(w.decode_api_versions_response_v0(body).api_keys)
    assert {24, 25, 26} <= keys, sorted(keys)  # AddPartitionsToTxn, AddOffsetsToTxn, EndTxn
