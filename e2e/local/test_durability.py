"""Nothing acknowledged is lost: kill -9 after and during acks=all production, and a
clean SIGTERM shutdown, each followed by a restart on the same data directory."""

import threading
import time

import pytest
from confluent_kafka.admin import ConfigResource, ResourceType

from support import admin, create_topic, produce_all, producer, read_partition, wait_for_topic

N = 2000
BASE_TS_MS = 1_650_000_000_000


def durable_records(n: int) -> list[dict]:
    return [
        {
            "key": f"key-{i:05d}".encode(),
            "value": f"value-{i}-".encode() + bytes([i % 251]) * (i % 97),
            "headers": [("seq", str(i).encode()), ("parity", b"odd" if i % 2 else b"even")],
            "timestamp": BASE_TS_MS + i * 7,
            "partition": 0,
        }
        for i in range(n)
    ]


def produce_acked(broker, topic: str, records: list[dict]) -> None:
    reports = produce_all(producer(broker.bootstrap, acks="all", linger_ms=10), topic, records, timeout_s=30)
    errors = [(i, err) for i, (err, _) in enumerate(reports) if err is not None]
    assert not errors, errors[:5]
    assert [msg.offset() for _, msg in reports] == list(range(len(records)))


def assert_all_present(broker, topic: str, records: list[dict]) -> None:
    got = read_partition(broker.bootstrap, topic, timeout_s=30)
    assert len(got) == len(records), f"{len(got)} records after restart, {len(records)} acknowledged"
    for rec, expected in zip(got, records):
        assert (rec.key, rec.value, list(rec.headers), rec.timestamp_ms) == (
            expected["key"],
            expected["value"],
            expected["headers"],
            expected["timestamp"],
        ), f"record at offset {rec.offset} differs after restart"
    assert [r.offset for r in got] == list(range(len(records)))


@pytest.mark.timeout_s(120)
def test_kill_9_after_acks_all_loses_nothing(broker_factory, topic_name):
    """2000 records acknowledged with acks=all (keys, values, headers, explicit
    timestamps) survive kill -9 and restart: same offsets, bytes and timestamps; the
    restarted broker appends after them."""
    broker = broker_factory.start()
    create_topic(broker.bootstrap, topic_name)
    records = durable_records(N)
    produce_acked(broker, topic_name, records)

    broker.kill()
    broker.start()
    assert_all_present(broker, topic_name, records)

    [(err, msg)] = produce_all(producer(broker.bootstrap, acks="all"), topic_name, [{"value": b"after", "partition": 0}])
    assert (err, msg.offset()) == (None, N)


@pytest.mark.timeout_s(120)
def test_sigterm_restart_preserves_everything(broker_factory, topic_name):
    """After a clean SIGTERM shutdown (exit code 0) and restart, every record, the topic's
    partitions and its config override are still there."""
    broker = broker_factory.start()
    create_topic(broker.bootstrap, f"{topic_name}-3p", partitions=3, config={"retention.ms": "86400000"})
    create_topic(broker.bootstrap, topic_name)
    records = durable_records(500)
    produce_acked(broker, topic_name, records)

    assert broker.stop() == 0, f"SIGTERM exit code {broker.proc.returncode}\n{broker.log_tail()}"
    broker.start()
    assert_all_present(broker, topic_name, records)

    assert len(wait_for_topic(broker.bootstrap, f"{topic_name}-3p").partitions) == 3
    resource = ConfigResource(ResourceType.TOPIC, f"{topic_name}-3p")
    configs = admin(broker.bootstrap).describe_configs([resource])[resource].result(timeout=15)
    assert configs["retention.ms"].value == "86400000"


@pytest.mark.timeout_s(150)
def test_kill_9_during_production_keeps_every_acked_record(broker_factory, topic_name):
    """A producer keeps sending with acks=all while the broker is killed with -9 and
    restarted; every record it got an acknowledgement for (before or after the crash) is
    present after the restart at its acknowledged offset with its key and value."""
    broker = broker_factory.start()
    create_topic(broker.bootstrap, topic_name)

    acked: dict[int, tuple[bytes, bytes]] = {}
    failures: list = []
    conflicts: list = []
    stop = threading.Event()
    lock = threading.Lock()

    def on_delivery(err, msg):
        if err is not None:
            failures.append(err)
            return
        with lock:
            previous = acked.setdefault(msg.offset(), (msg.key(), msg.value()))
        if previous != (msg.key(), msg.value()):
            conflicts.append((msg.offset(), previous, msg.key()))

    def produce_until_stopped():
        prod = producer(broker.bootstrap, acks="all", linger_ms=2, message_timeout_ms=10000)
        i = 0
        while not stop.is_set():
            try:
                prod.produce(topic_name, key=f"k{i}".encode(), value=f"v{i}".encode() * 8, partition=0,
                             on_delivery=on_delivery)
                i += 1
            except BufferError:
                pass
            prod.poll(0.001)  # about 1000 records/s: the queue stays small while the broker is down
        prod.flush(15)

    thread = threading.Thread(target=produce_until_stopped, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(acked) >= 1500, 30, "1500 acknowledgements before the crash", failures)
        broker.kill()
        acked_before_crash = len(acked)
        broker.start()
        wait_until(lambda: len(acked) >= acked_before_crash + 300, 45, "300 acknowledgements after the restart", failures)
    finally:
        stop.set()
        thread.join(40)
    assert not thread.is_alive(), "producer thread did not finish"
    assert not conflicts, f"one offset acknowledged for two different records: {conflicts[:5]}"

    with lock:
        expected = dict(acked)
    top = max(expected)
    got = {r.offset: r for r in read_partition(broker.bootstrap, topic_name, end=top + 1, timeout_s=30)}
    missing = [o for o in sorted(expected) if o not in got]
    assert not missing, f"{len(missing)} acknowledged offsets missing, first {missing[:10]}"
    wrong = [o for o, (k, v) in expected.items() if (got[o].key, got[o].value) != (k, v)]
    assert not wrong, f"{len(wrong)} acknowledged offsets hold other records, first {sorted(wrong)[:10]}"


def wait_until(condition, timeout_s: float, what: str, failures: list) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what}; "
                f"{len(failures)} delivery failures, last: {failures[-3:]}"
            )
        time.sleep(0.02)
