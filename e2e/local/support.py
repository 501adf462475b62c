"""Client-side helpers shared by the test modules: topics, producing with delivery
reports and reading a partition back, all through confluent-kafka (librdkafka)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

CLIENT_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Rec:
    """A consumed record, detached from the client library."""

    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int


_ADMINS: dict[str, AdminClient] = {}


def admin(bootstrap: str) -> AdminClient:
    """One AdminClient per broker address, kept for the session: an AdminClient that is
    garbage-collected fails its pending futures, so call sites must not hold the only
    reference."""
    if bootstrap not in _ADMINS:
        _ADMINS[bootstrap] = AdminClient({"bootstrap.servers": bootstrap})
    return _ADMINS[bootstrap]


def forget_admin(bootstrap: str) -> None:
    """Drops the cached AdminClient of a broker that is gone, so it stops reconnecting."""
    _ADMINS.pop(bootstrap, None)


def error_code(exc: BaseException) -> int:
    """The Kafka error code carried by a KafkaException from a future or a call."""
    assert isinstance(exc, KafkaException), f"expected KafkaException, got {exc!r}"
    err = exc.args[0]
    assert isinstance(err, KafkaError), f"KafkaException without KafkaError: {exc!r}"
    return err.code()


def future_error_code(future, timeout_s: float = CLIENT_TIMEOUT_S) -> int:
    """0 when the admin future succeeds, else its Kafka error code."""
    try:
        future.result(timeout=timeout_s)
    except KafkaException as exc:
        return error_code(exc)
    return 0


def wait_for_topic(bootstrap: str, topic: str, partitions: int | None = None, timeout_s: float = CLIENT_TIMEOUT_S):
    """Waits until metadata shows the topic with every partition led; returns its metadata."""
    client = admin(bootstrap)
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        md = client.list_topics(topic=topic, timeout=5)
        last = md.topics.get(topic)
        if (
            last is not None
            and last.error is None
            and last.partitions
            and (partitions is None or len(last.partitions) == partitions)
            and all(p.leader >= 0 and p.error is None for p in last.partitions.values())
        ):
            return last
        time.sleep(0.1)
    raise AssertionError(f"topic {topic} not ready in metadata after {timeout_s}s: {last!r}")


def wait_for_topic_gone(bootstrap: str, topic: str, timeout_s: float = CLIENT_TIMEOUT_S) -> None:
    client = admin(bootstrap)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if topic not in client.list_topics(timeout=5).topics:
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {topic} still listed {timeout_s}s after deletion")


def create_topic(bootstrap: str, topic: str, partitions: int = 1, config: dict[str, str] | None = None):
    futures = admin(bootstrap).create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})],
        request_timeout=CLIENT_TIMEOUT_S,
    )
    futures[topic].result(timeout=CLIENT_TIMEOUT_S)
    return wait_for_topic(bootstrap, topic, partitions)


def producer(bootstrap: str, **conf) -> Producer:
    settings = {"bootstrap.servers": bootstrap, "linger.ms": 5, "message.timeout.ms": 15000}
    settings.update({k.replace("_", "."): v for k, v in conf.items()})
    return Producer(settings)


def produce_all(prod: Producer, topic: str, records: list[dict], timeout_s: float = CLIENT_TIMEOUT_S) -> list:
    """Produces records (dicts of Producer.produce keyword arguments) and returns their
    delivery reports in order as (KafkaError | None, Message)."""
    reports: list = [None] * len(records)

    def on_delivery(index):
        def callback(err, msg):
            reports[index] = (err, msg)

        return callback

    for i, rec in enumerate(records):
        while True:
            try:
                prod.produce(topic, on_delivery=on_delivery(i), **rec)
                break
            except BufferError:
                prod.poll(0.1)
        prod.poll(0)
    remaining = prod.flush(timeout_s)
    assert remaining == 0, f"{remaining} records still queued after {timeout_s}s"
    missing = [i for i, r in enumerate(reports) if r is None]
    assert not missing, f"no delivery report for records {missing[:10]}"
    return reports


def consumer(bootstrap: str, **conf) -> Consumer:
    """A consumer for assign/seek only: librdkafka requires a group.id, but the tests never
    subscribe or commit (no group APIs needed)."""
    settings = {
        "bootstrap.servers": bootstrap,
        "group.id": f"strom-e2e-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
    }
    settings.update({k.replace("_", "."): v for k, v in conf.items()})
    return Consumer(settings)


def _to_rec(msg) -> Rec:
    return Rec(
        offset=msg.offset(),
        key=msg.key(),
        value=msg.value(),
        headers=tuple(msg.headers() or ()),
        timestamp_ms=msg.timestamp()[1],
    )


def read_partition(
    bootstrap: str,
    topic: str,
    partition: int = 0,
    start: int | None = None,
    end: int | None = None,
    timeout_s: float = CLIENT_TIMEOUT_S,
) -> list[Rec]:
    """Reads offsets [start, end) of one partition with assign (start defaults to the log
    start offset, end to the high watermark)."""
    c = consumer(bootstrap)
    try:
        tp = TopicPartition(topic, partition)
        low, high = c.get_watermark_offsets(tp, timeout=timeout_s, cached=False)
        start = low if start is None else start
        end = high if end is None else end
        if end <= start:
            return []
        c.assign([TopicPartition(topic, partition, start)])
        out: dict[int, Rec] = {}
        errors = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is None:
                if out and max(out) >= end - 1:
                    break
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    errors.append(msg.error())
                continue
            if start <= msg.offset() < end:
                out[msg.offset()] = _to_rec(msg)
            if msg.offset() >= end - 1:
                break
        got = [out[o] for o in sorted(out)]
        assert len(got) == end - start, (
            f"read {len(got)} of offsets [{start}, {end}) from {topic}/{partition} in {timeout_s}s; "
            f"first missing: {next((o for o in range(start, end) if o not in out), None)}; errors: {errors[:5]}"
        )
        return got
    finally:
        c.close()
