"""Incremental fetch sessions (KIP-227): a full fetch with epoch 0 creates a session; the
next fetches name only what changed and are answered only with partitions that have
something new; wrong ids and epochs get FETCH_SESSION_ID_NOT_FOUND and
INVALID_FETCH_SESSION_EPOCH; `max.incremental.fetch.session.cache.slots` bounds the cache
and an idle session is evicted for a new one. kafka-python and the Java client (Kafka's
console consumer) both keep sessions and read every record of a 200-partition topic
through them."""

import itertools
import re
import subprocess
import time

import pytest
from kafka import KafkaConsumer, TopicPartition

import kafka_wire as w
from support import CLIENT_TIMEOUT_S, create_topic, produce_all, producer

FETCH_SESSION_ID_NOT_FOUND = 70
INVALID_FETCH_SESSION_EPOCH = 71
_correlation = itertools.count(1)


def fetch(broker, session_id, epoch, topics, forgotten=(), conn=None) -> w.FetchResponseV11:
    correlation = next(_correlation)
    request = w.fetch_request_v11(correlation, session_id, epoch, topics, list(forgotten))
    if conn is not None:
        return w.decode_fetch_response_v11(conn.request(request, correlation))
    with w.Connection(broker.host, broker.port, 10.0) as c:
        return w.decode_fetch_response_v11(c.request(request, correlation))


def metric(broker, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", broker.metrics(), re.M)
    assert m, f"no {name} in /metrics"
    return float(m.group(1))


def produce_to(broker, topic: str, partition: int, n: int) -> None:
    records = [{"value": f"p{partition}-{i}".encode(), "partition": partition} for i in range(n)]
    produce_all(producer(broker.bootstrap, acks="all"), topic, records)


def test_a_session_answers_only_what_changed(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, partitions=3)
    produce_to(broker, topic_name, 0, 5)
    t = topic_name
    with w.Connection(broker.host, broker.port, 10.0) as conn:
        full = fetch(broker, 0, 0, [(t, [(0, 0), (1, 0), (2, 0)])], conn=conn)
        assert full.error_code == 0 and full.session_id != 0, full
        assert sorted(full.partitions) == [(t, 0), (t, 1), (t, 2)], "a full fetch answers every partition"
        assert [h.record_count for h in w.read_batch_headers(full.partitions[(t, 0)].records)] == [5]
        sid = full.session_id

        # Nothing named: the session's offsets are still 0, so partition 0 has records
        # again; 1 and 2 have nothing new and are left out.
        again = fetch(broker, sid, 1, [], conn=conn)
        assert (again.error_code, again.session_id, again.order) == (0, sid, [(t, 0)])

        # Partition 0 moved to its end: nothing anywhere is new.
        assert fetch(broker, sid, 2, [(t, [(0, 5)])], conn=conn).order == []
        produce_to(broker, topic_name, 1, 3)
        got = fetch(broker, sid, 3, [], conn=conn)
        assert got.order == [(t, 1)], "only the partition that was written to"
        assert got.partitions[(t, 1)].high_watermark == 3

        # Forgotten, partition 1 is never answered again, whatever is written to it.
        assert fetch(broker, sid, 4, [(t, [(1, 3)])], forgotten=[(t, [1])], conn=conn).order == []
        produce_to(broker, topic_name, 1, 2)
        produce_to(broker, topic_name, 2, 1)
        assert fetch(broker, sid, 5, [], conn=conn).order == [(t, 2)]

    # A replayed epoch, an unknown id, and after closing (epoch -1) the id is gone.
    assert fetch(broker, sid, 5, []).error_code == INVALID_FETCH_SESSION_EPOCH
    assert fetch(broker, sid + 1 if sid < 2**31 - 1 else 1, 1, []).error_code == FETCH_SESSION_ID_NOT_FOUND
    closed = fetch(broker, sid, -1, [(t, [(0, 0)])])
    assert (closed.error_code, closed.session_id, closed.order) == (0, 0, [(t, 0)])
    assert fetch(broker, sid, 6, []).error_code == FETCH_SESSION_ID_NOT_FOUND


def test_the_cache_is_bounded_and_an_idle_session_makes_room(broker_factory, topic_name):
    b = broker_factory.start(
        {"max.incremental.fetch.session.cache.slots": 1, "strom.fetch.session.eviction.ms": 1000}
    )
    create_topic(b.bootstrap, topic_name)
    first = fetch(b, 0, 0, [(topic_name, [(0, 0)])])
    assert first.session_id != 0
    second = fetch(b, 0, 0, [(topic_name, [(0, 0)])])
    assert (second.error_code, second.session_id) == (0, 0), "no slot: a full fetch without a session"
    assert metric(b, "strom_fetch_sessions") == 1
    time.sleep(1.5)
    third = fetch(b, 0, 0, [(topic_name, [(0, 0)])])
    assert third.session_id not in (0, first.session_id), "the idle session's slot was taken"
    assert fetch(b, first.session_id, 1, []).error_code == FETCH_SESSION_ID_NOT_FOUND
    assert metric(b, "strom_fetch_session_evictions_total") == 1
    assert metric(b, "strom_fetch_sessions") == 1


PARTITIONS = 200
PER_PARTITION = 10


def all_records(tag: str) -> list[dict]:
    return [
        {"key": f"{p}-{i}".encode(), "value": f"{tag}-{p}-{i}".encode(), "partition": p}
        for p in range(PARTITIONS)
        for i in range(PER_PARTITION)
    ]


@pytest.mark.timeout_s(150)
def test_real_consumers_read_many_partitions_through_sessions(broker_factory, topic_name, kafka_jars):
    """kafka-python reads every record of 200 partitions, then the records produced while
    it keeps polling (incremental fetches pick them up); the Java console consumer reads
    them all too, through a session it closes when it stops."""
    b = broker_factory.start()
    create_topic(b.bootstrap, topic_name, partitions=PARTITIONS)
    first = all_records("a")
    produce_all(producer(b.bootstrap, acks="all", linger_ms=20), topic_name, first)

    c = KafkaConsumer(bootstrap_servers=b.bootstrap, group_id=None, enable_auto_commit=False)
    try:
        c.unsubscribe()
        c.assign([TopicPartition(topic_name, p) for p in range(PARTITIONS)])
        c.seek_to_beginning()
        seen: dict[tuple[int, int], bytes] = {}

        def poll_until(n: int) -> None:
            deadline = time.monotonic() + CLIENT_TIMEOUT_S * 3
            while len(seen) < n and time.monotonic() < deadline:
                for batch in c.poll(timeout_ms=500).values():
                    for r in batch:
                        assert (r.partition, r.offset) not in seen, f"record {r.partition}/{r.offset} twice"
                        seen[(r.partition, r.offset)] = r.value
            assert len(seen) == n, f"kafka-python read {len(seen)} of {n}"

        poll_until(len(first))
        # A client leaves out of its fetches the partitions it still holds records of,
        # so the session need not hold all 200 at this moment.
        assert metric(b, "strom_fetch_sessions") == 1
        assert metric(b, "strom_fetch_sessions_created_total") == 1
        assert metric(b, "strom_fetch_session_partitions") > 0
        second = all_records("b")
        produce_all(producer(b.bootstrap, acks="all", linger_ms=20), topic_name, second)
        poll_until(len(first) + len(second))
    finally:
        c.close()
    for p in range(PARTITIONS):
        values = [seen[(p, o)] for o in range(2 * PER_PARTITION)]
        assert values == [f"a-{p}-{i}".encode() for i in range(PER_PARTITION)] + [
            f"b-{p}-{i}".encode() for i in range(PER_PARTITION)
        ], p

    proc = subprocess.run(
        ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx256m", "-cp", kafka_jars,
         "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", b.bootstrap,
         "--topic", topic_name, "--from-beginning", "--max-messages", str(2 * len(first)),
         "--timeout-ms", "30000"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert sorted(lines) == sorted(f"{t}-{p}-{i}" for t in "ab" for p in range(PARTITIONS) for i in range(PER_PARTITION))
    # The Java consumer fetched through a session of its own and closed it (epoch -1) as
    # it closed; kafka-python's stays until evicted.
    assert metric(b, "strom_fetch_sessions_created_total") == 2
    assert metric(b, "strom_fetch_sessions") == 1
