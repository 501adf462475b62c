"""The idempotent producer: InitProducerId hands out producer ids, each partition drops a
retried batch (same producer id, epoch and sequences) and answers it with the original
offsets, refuses a gap with OUT_OF_ORDER_SEQUENCE_NUMBER, and remembers its producers
across kill -9 and restart. Real clients (librdkafka with enable.idempotence=true) and raw
protocol bytes (to send the same batch twice, which a client never does on purpose)."""

import itertools
import time

import pytest
from confluent_kafka import TopicPartition

import kafka_wire as w
from support import CLIENT_TIMEOUT_S, admin, consumer, create_topic, produce_all, producer, read_partition

_correlation = itertools.count(1)
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
INVALID_PRODUCER_EPOCH = 47
INVALID_RECORD = 87


def init_producer_id(broker, transactional_id: str | None = None) -> tuple[int, int, int]:
    with w.Connection(broker.host, broker.port) as conn:
        cid = next(_correlation)
        body = conn.request(w.init_producer_id_request_v0(cid, transactional_id), cid)
    return w.decode_init_producer_id_response_v0(body)


def produce_batch(broker, topic: str, batch: bytes) -> w.ProducePartitionResponse:
    with w.Connection(broker.host, broker.port) as conn:
        cid = next(_correlation)
        body = conn.request(w.produce_request_v3(topic, 0, batch, cid), cid)
    return w.decode_produce_response_v3(body)[(topic, 0)]


def high_watermark(broker, topic: str) -> int:
    c = consumer(broker.bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)[1]
    finally:
        c.close()


def batch(producer_id: int, epoch: int, sequence: int, values: list[bytes]) -> bytes:
    return w.record_batch(
        [w.Record(None, v) for v in values], producer_id=producer_id, producer_epoch=epoch, base_sequence=sequence
    )


def test_librdkafka_idempotent_producer_writes_each_record_once_in_order(broker, topic_name):
    """confluent-kafka with enable.idempotence=true: 500 records acknowledged at offsets
    0..499 and read back once each, in order."""
    create_topic(broker.bootstrap, topic_name)
    records = [{"value": f"idem-{i}".encode(), "partition": 0} for i in range(500)]
    reports = produce_all(producer(broker.bootstrap, enable_idempotence=True, linger_ms=2), topic_name, records)
    assert [err for err, _ in reports if err is not None] == []
    assert [msg.offset() for _, msg in reports] == list(range(500))
    got = read_partition(broker.bootstrap, topic_name)
    assert [(r.offset, r.value) for r in got] == [(i, rec["value"]) for i, rec in enumerate(records)]


def test_init_producer_id_hands_out_distinct_ids_and_refuses_transactions(broker):
    """Two InitProducerId calls get two producer ids at epoch 0; a transactional id gets
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED (fatal to clients: transactions are not built)."""
    e1, id1, epoch1 = init_producer_id(broker)
    e2, id2, epoch2 = init_producer_id(broker)
    assert (e1, e2, epoch1, epoch2) == (0, 0, 0, 0)
    assert id1 >= 0 and id2 >= 0 and id1 != id2
    assert init_producer_id(broker, "txn-1")[0] == TRANSACTIONAL_ID_AUTHORIZATION_FAILED


def test_init_producer_id_v3_bumps_the_epoch_and_the_old_epoch_is_fenced(broker, topic_name):
    """KIP-360: InitProducerId v3 with the producer's id and epoch returns the same id at
    the next epoch. A batch of the new epoch starts again at sequence 0; the old epoch then
    gets INVALID_PRODUCER_EPOCH (47)."""
    create_topic(broker.bootstrap, topic_name)
    _, pid, epoch = init_producer_id(broker)
    assert produce_batch(broker, topic_name, batch(pid, epoch, 0, [b"a", b"b"])).error_code == 0
    with w.Connection(broker.host, broker.port) as conn:
        cid = next(_correlation)
        body = conn.request(w.init_producer_id_request_v3(cid, pid, epoch), cid)
    assert w.decode_init_producer_id_response_v3(body) == (0, pid, epoch + 1)
    assert produce_batch(broker, topic_name, batch(pid, epoch + 1, 1, [b"x"])).error_code == OUT_OF_ORDER_SEQUENCE_NUMBER
    bumped = produce_batch(broker, topic_name, batch(pid, epoch + 1, 0, [b"c"]))
    assert (bumped.error_code, bumped.base_offset) == (0, 2)
    assert produce_batch(broker, topic_name, batch(pid, epoch, 2, [b"old"])).error_code == INVALID_PRODUCER_EPOCH


def test_a_resent_batch_is_a_duplicate_and_a_gap_is_refused(broker, topic_name):
    """The same idempotent batch sent twice: the second answer carries the first base
    offset and the high watermark does not move. A batch that skips sequences gets
    OUT_OF_ORDER_SEQUENCE_NUMBER (45) and appends nothing."""
    create_topic(broker.bootstrap, topic_name)
    _, pid, epoch = init_producer_id(broker)
    first = batch(pid, epoch, 0, [b"a", b"b", b"c"])
    r1 = produce_batch(broker, topic_name, first)
    assert (r1.error_code, r1.base_offset) == (0, 0)
    assert high_watermark(broker, topic_name) == 3
    r2 = produce_batch(broker, topic_name, first)
    assert (r2.error_code, r2.base_offset) == (0, 0)
    assert high_watermark(broker, topic_name) == 3

    gap = produce_batch(broker, topic_name, batch(pid, epoch, 5, [b"x"]))
    assert gap.error_code == OUT_OF_ORDER_SEQUENCE_NUMBER
    nxt = produce_batch(broker, topic_name, batch(pid, epoch, 3, [b"d"]))
    assert (nxt.error_code, nxt.base_offset) == (0, 3)
    assert [r.value for r in read_partition(broker.bootstrap, topic_name)] == [b"a", b"b", b"c", b"d"]


def test_two_idempotent_batches_for_one_partition_are_an_invalid_record(broker, topic_name):
    """Kafka requires one batch per partition in a Produce v3+ request; with idempotent
    batches Strom enforces it (INVALID_RECORD, 87) and appends nothing."""
    create_topic(broker.bootstrap, topic_name)
    _, pid, epoch = init_producer_id(broker)
    two = batch(pid, epoch, 0, [b"a"]) + batch(pid, epoch, 1, [b"b"])
    assert produce_batch(broker, topic_name, two).error_code == INVALID_RECORD
    assert high_watermark(broker, topic_name) == 0


@pytest.mark.timeout_s(90)
def test_a_retry_after_kill_9_and_restart_is_still_a_duplicate(broker_factory, topic_name):
    """An acknowledged idempotent batch, kill -9, restart: resending it is recognised from
    the rebuilt producer state (same base offset, nothing appended), and producer ids handed
    out after the restart are new."""
    broker = broker_factory.start()
    create_topic(broker.bootstrap, topic_name)
    _, pid, epoch = init_producer_id(broker)
    produce_batch(broker, topic_name, batch(pid, epoch, 0, [b"zero"]))
    acked = batch(pid, epoch, 1, [b"one", b"two"])
    r1 = produce_batch(broker, topic_name, acked)
    assert (r1.error_code, r1.base_offset) == (0, 1)

    broker.kill()
    broker.start()
    r2 = produce_batch(broker, topic_name, acked)
    assert (r2.error_code, r2.base_offset) == (0, 1)
    assert high_watermark(broker, topic_name) == 3
    assert produce_batch(broker, topic_name, batch(pid, epoch, 9, [b"gap"])).error_code == OUT_OF_ORDER_SEQUENCE_NUMBER
    err, new_pid, _ = init_producer_id(broker)
    assert err == 0 and new_pid > pid


@pytest.mark.timeout_s(90)
def test_a_producer_whose_batches_were_deleted_is_remembered_across_restarts(broker_factory, topic_name):
    """A producer's only batch is deleted (DeleteRecords past small segments that rolled
    after it); after kill -9 and restart, and after a clean restart, resending that batch is
    still a duplicate answered with its original offset: the state comes from the
    producer-state snapshots, not from the deleted segments."""
    from confluent_kafka import KafkaException

    broker = broker_factory.start()
    create_topic(broker.bootstrap, topic_name, config={"segment.bytes": "1024", "file.delete.delay.ms": "0"})
    _, pid, epoch = init_producer_id(broker)
    acked = batch(pid, epoch, 0, [b"only"])
    assert produce_batch(broker, topic_name, acked).base_offset == 0
    _, other, other_epoch = init_producer_id(broker)
    for seq in range(12):
        r = produce_batch(broker, topic_name, batch(other, other_epoch, seq, [bytes([65 + seq]) * 200]))
        assert r.error_code == 0
    hw = high_watermark(broker, topic_name)
    assert hw == 13
    [fut] = admin(broker.bootstrap).delete_records(
        [TopicPartition(topic_name, 0, hw)], request_timeout=CLIENT_TIMEOUT_S
    ).values()
    try:
        assert fut.result(timeout=CLIENT_TIMEOUT_S).low_watermark == hw
    except KafkaException as exc:
        pytest.fail(f"delete_records failed: {exc!r}")

    for hard in (True, False):
        broker.restart(hard=hard)
        again = produce_batch(broker, topic_name, acked)
        assert (again.error_code, again.base_offset) == (0, 0), f"hard={hard}"
        assert high_watermark(broker, topic_name) == hw


def test_a_transactional_producer_fails_fast(broker):
    """Transactions are not built: librdkafka's init_transactions() fails at once with a
    fatal TRANSACTIONAL_ID_AUTHORIZATION_FAILED carrying Strom's reason (from
    FindCoordinator), instead of retrying until its timeout."""
    from confluent_kafka import KafkaException

    prod = producer(broker.bootstrap, transactional_id="strom-txn")
    start = time.monotonic()
    with pytest.raises(KafkaException) as raised:
        prod.init_transactions(30)
    assert time.monotonic() - start < 20
    err = raised.value.args[0]
    assert (err.code(), err.fatal(), err.retriable()) == (TRANSACTIONAL_ID_AUTHORIZATION_FAILED, True, False), err
    assert "not supported by Strom" in err.str()
