"""A full disk, on a 64 MiB tmpfs the test mounts (it runs as root) and fills with a filler
file: every produce that cannot be written is answered KAFKA_STORAGE_ERROR at once, logged
at error level once per partition and state change, and counted; DeleteRecords and
CreateTopics apply completely or not at all; a broker killed on the full disk starts again,
serves every acknowledged record and refuses writes; once space returns, produce works
again without a restart."""

import itertools
import os
import subprocess
import time

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic, OffsetSpec

import kafka_wire as w
from support import CLIENT_TIMEOUT_S, admin, create_topic, error_code, read_partition

_correlation = itertools.count(1)
KAFKA_STORAGE_ERROR = 56


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk) -> None:
    """Fills what is left of the disk with a filler file."""
    with open(disk / "filler", "wb", buffering=0) as f:
        chunk = b"\xaa" * (1 << 20)
        try:
            while True:
                f.write(chunk)

        except OSError:
            pass
        small = b"\xaa" * 4096
        try:
            while True:
                f.write(small)

        except OSError:
            pass


def produce(broker, topic: str, n: int = 10, partition: int = 0) -> tuple[int, float]:
    batch = w.record_batch([w.Record(key=b"k%d" % i, value=b"v" * 1000) for i in range(n)])
    started = time.monotonic()
    with w.Connection(broker.host, broker.port) as conn:
        cid = next(_correlation)
        body = conn.request(w.produce_request_v3(topic, partition, batch, cid), cid)
    return w.decode_produce_response_v3(body)[(topic, partition)].error_code, time.monotonic() - started


def earliest(broker, topic: str) -> int:
    fut = admin(broker.bootstrap).list_offsets({TopicPartition(topic, 0): OffsetSpec.earliest()})
    return next(iter(fut.values())).result(timeout=CLIENT_TIMEOUT_S).offset


def write_failures(broker) -> int:
    line = next((l for l in broker.metrics().splitlines() if l.startswith('strom_storage_errors_total{kind="write_failed"}')), None)
    return int(float(line.split()[-1])) if line else 0


@pytest.mark.timeout_s(120)
def test_full_disk_sequence(broker_factory, small_disk, topic_name):
    b = broker_factory.create({"log.dirs": str(small_disk / "data"), "log.segment.bytes": 262144})
    b.start()
    create_topic(b.bootstrap, topic_name)
    acked = 0
    for _ in range(30):
        code, _ = produce(b, topic_name)
        assert code == 0
        acked += 10
    fill(small_disk)

    # Every produce that cannot be written: KAFKA_STORAGE_ERROR, promptly.
    codes = []
    for _ in range(30):
        code, took = produce(b, topic_name)
        assert took < 2, f"a produce on the full disk took {took:.1f}s"
        codes.append(code)
        acked += 10 if code == 0 else 0
    assert codes[-20:] == [KAFKA_STORAGE_ERROR] * 20, codes
    assert set(codes) <= {0, KAFKA_STORAGE_ERROR}, codes
    log = b.log_text()
    failing = [l for l in log.splitlines() if "ERROR" in l and "cannot write" in l and topic_name in l]
    assert len(failing) == 1, failing
    assert write_failures(b) >= 20

    # DeleteRecords: all or nothing, and the response says which.
    fut = admin(b.bootstrap).delete_records([TopicPartition(topic_name, 0, 100)])
    try:
        next(iter(fut.values())).result(timeout=CLIENT_TIMEOUT_S)
        deleted = True
    except Exception as err:  # noqa: BLE001 - the code is checked
        assert error_code(err) == KAFKA_STORAGE_ERROR, err
        deleted = False
    start = 100 if deleted else 0
    assert earliest(b, topic_name) == start
    assert len(read_partition(b.bootstrap, topic_name, 0)) == acked - start

    # CreateTopics with 8 partitions: the metadata change is whole (all 8 partitions exist
    # in the cluster's metadata, or none); a partition this broker cannot create on its
    # full disk answers KAFKA_STORAGE_ERROR, as a partition on a failed log dir does.
    new = f"{topic_name}-new"
    fut = admin(b.bootstrap).create_topics([NewTopic(new, num_partitions=8, replication_factor=1)])
    try:
        fut[new].result(timeout=CLIENT_TIMEOUT_S)
        created = True
    except Exception as err:  # noqa: BLE001
        assert error_code(err) == KAFKA_STORAGE_ERROR, err
        created = False
    md = admin(b.bootstrap).list_topics(timeout=CLIENT_TIMEOUT_S)
    if created:
        assert len(md.topics[new].partitions) == 8
        for p in range(8):
            if not (small_disk / "data" / f"{new}-{p}").is_dir():
                assert produce(b, new, 1, p)[0] == KAFKA_STORAGE_ERROR, p
    else:
        assert new not in md.topics
        assert not any(p.name.startswith(new) for p in (small_disk / "data").iterdir())

    print(f"full-disk: produce codes {codes}, DeleteRecords applied: {deleted}, CreateTopics applied: {created}")
    # kill -9 on the full disk: the broker starts, serves reads, refuses writes.
    b.kill()
    b.start()
    assert len(read_partition(b.bootstrap, topic_name, 0)) == acked - start
    # To vote and append its new term's entry the metadata quorum released the 1 MiB it
    # reserves on this disk (and said so); fill that too, and writes are refused again.
    assert "released the space reserved for it" in b.log_text()
    fill(small_disk)
    assert produce(b, topic_name)[0] == KAFKA_STORAGE_ERROR

    # Space returns: produce works again, without a restart.
    os.remove(small_disk / "filler")
    code, _ = produce(b, topic_name)
    assert code == 0
    acked += 10
    assert len(read_partition(b.bootstrap, topic_name, 0)) == acked - start
    assert "can write again" in b.log_text()
    b.stop()


@pytest.mark.timeout_s(120)
def test_disk_filled_by_producers_loses_no_acknowledged_record(broker_factory, small_disk, topic_name):
    """Producers fill the disk themselves (segments roll, indexes and snapshots are written
    on the way): every record acknowledged with code 0 is readable, before and after a
    kill -9 and restart on the full disk."""
    b = broker_factory.create({"log.dirs": str(small_disk / "data"), "log.segment.bytes": 1048576})
    b.start()
    create_topic(b.bootstrap, topic_name, partitions=2)
    acked = {0: 0, 1: 0}
    failures = 0
    for i in range(2000):
        p = i % 2
        code, took = produce(b, topic_name, n=50, partition=p)
        assert code in (0, KAFKA_STORAGE_ERROR), code
        assert took < 2
        if code == 0:
            acked[p] += 50
        else:
            failures += 1
            if failures >= 20:
                break
    assert failures >= 20, "the 64 MiB disk never filled"
    for p in (0, 1):
        assert len(read_partition(b.bootstrap, topic_name, p)) == acked[p]
    b.kill()
    b.start()
    for p in (0, 1):
        assert len(read_partition(b.bootstrap, topic_name, p)) == acked[p]
    # Recovery may have freed a little (a torn tail); writes are refused once it is used.
    for _ in range(50):
        code, _ = produce(b, topic_name, n=50)
        assert code in (0, KAFKA_STORAGE_ERROR)
        if code != 0:
            break
        acked[0] += 50
    assert code == KAFKA_STORAGE_ERROR
    assert len(read_partition(b.bootstrap, topic_name, 0)) == acked[0]
    b.stop()
