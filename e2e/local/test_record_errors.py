"""KIP-467: a batch refused for some of its records names them (`record_errors`: each
offending record's index and why, beside the partition's `error_message`), so that a
client fails exactly those records. The Java client (kafka-clients, run from source
with the jars e2e/java/fetch-kafka-tools.sh fetches) acts on it: only the keyless record
of a batch to a compacted topic gets InvalidRecordException, its batch-mates a plain
KafkaException; without record_errors every record of the batch would be blamed. Produce
v8 over the wire shows the per-record timestamp check."""

import itertools
import subprocess
import time
from pathlib import Path

import pytest

import kafka_wire as w
from support import create_topic, read_partition

JAVA_DIR = Path(__file__).resolve().parent.parent / "java"
INVALID_RECORD = 87
INVALID_TIMESTAMP = 32
_correlation = itertools.count(1)


@pytest.fixture(scope="module")
def broker(module_broker_factory):
    return module_broker_factory.start()


@pytest.fixture(scope="module")
def java_classpath(kafka_jars) -> str:
    return kafka_jars


def java_produce(classpath: str, bootstrap: str, topic: str, keys: list[str | None]) -> dict[int, str]:
    """What became of each record of one Java-client batch: index -> "ok <offset>" or
    "<exception class>: <message>"."""
    arg = ",".join("-" if k is None else k for k in keys)
    proc = subprocess.run(
        ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx256m", "-cp", classpath,
         str(JAVA_DIR / "RecordErrors.java"), bootstrap, topic, arg],
        capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, f"RecordErrors.java exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    out = {}
    for line in proc.stdout.splitlines():
        index, _, outcome = line.partition(" ")
        out[int(index)] = outcome
    return out


@pytest.mark.timeout_s(120)
def test_the_java_client_fails_only_the_keyless_record_of_a_batch(broker, java_classpath, topic_name):
    create_topic(broker.bootstrap, topic_name, config={"cleanup.policy": "compact"})
    outcomes = java_produce(java_classpath, broker.bootstrap, topic_name, ["k0", None, "k2"])
    assert outcomes[1].startswith("InvalidRecordException: "), outcomes
    assert "without key" in outcomes[1], outcomes
    for i in (0, 2):
        # Refused with the batch, but not blamed: not an InvalidRecordException.
        assert not outcomes[i].startswith(("ok", "InvalidRecordException")), outcomes
    # The whole batch was refused: nothing of it is in the log.
    assert read_partition(broker.bootstrap, topic_name) == []
    # The keyed records alone are accepted.
    assert java_produce(java_classpath, broker.bootstrap, topic_name, ["k0", "k2"]) == {0: "ok 0", 1: "ok 1"}


def produce_v8(broker, topic: str, batch: bytes) -> w.ProducePartitionResponseV8:
    with w.Connection(broker.host, broker.port, 10.0) as conn:
        cid = next(_correlation)
        body = conn.request(w.produce_request_v8(topic, 0, batch, cid), cid)
    return w.decode_produce_response_v8(body)[(topic, 0)]


def test_each_record_with_a_timestamp_out_of_range_is_named(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, config={"message.timestamp.before.max.ms": "3600000"})
    now = int(time.time() * 1000)
    two_days = 2 * 24 * 3600 * 1000
    # Out of time order: the batch's first and greatest timestamps are fine, records 1
    # and 3 are two days old.
    batch = w.record_batch(
        [w.Record(b"a", b"0"), w.Record(b"b", b"1", timestamp_delta=-two_days),
         w.Record(b"c", b"2"), w.Record(b"d", b"3", timestamp_delta=-two_days)],
        base_timestamp_ms=now,
    )
    resp = produce_v8(broker, topic_name, batch)
    assert resp.error_code == INVALID_TIMESTAMP, resp
    assert [i for i, _ in resp.record_errors] == [1, 3], resp
    assert all("is out of range" in (m or "") for _, m in resp.record_errors), resp
    assert "2 record(s)" in (resp.error_message or ""), resp
    assert read_partition(broker.bootstrap, topic_name) == []
    ok = produce_v8(broker, topic_name, w.record_batch([w.Record(b"a", b"0")], base_timestamp_ms=now))
    assert (ok.error_code, ok.record_errors) == (0, []), ok


def test_keyless_records_on_a_compacted_topic_are_each_named(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, config={"cleanup.policy": "compact"})
    batch = w.record_batch([w.Record(None, b"0"), w.Record(b"k", b"1"), w.Record(None, b"2")])
    resp = produce_v8(broker, topic_name, batch)
    assert resp.error_code == INVALID_RECORD, resp
    assert [i for i, _ in resp.record_errors] == [0, 2], resp
    assert all("without key" in (m or "") for _, m in resp.record_errors), resp
    assert "One or more records have been rejected" in (resp.error_message or ""), resp
