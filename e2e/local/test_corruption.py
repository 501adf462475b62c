"""Damaged files on disk are detected and reported, never served silently, never "repaired"
by deleting data: a corrupted length or a flipped byte in a closed segment answers
CORRUPT_MESSAGE (logged once with file and position, counted in a metric) instead of
stalling consumers; `strom-broker verify-log` names the damage; a second broker on the
same directory, a damaged meta.properties, a log-start checkpoint beyond the log end and an
empty log.dirs refuse the start with a message; unknown partition directories are kept."""

import itertools
import subprocess
import time
from pathlib import Path

import pytest

import kafka_wire as w
from broker_process import BrokerStartError, broker_binary
from confluent_kafka import KafkaError, TopicPartition

from support import consumer, create_topic, read_partition

_correlation = itertools.count(1)
CORRUPT_MESSAGE = 2


def produce_batches(broker, topic: str, batches: int, records: int = 5) -> None:
    with w.Connection(broker.host, broker.port) as conn:
        for b in range(batches):
            batch = w.record_batch([w.Record(key=b"k%d" % i, value=b"v" * 100) for i in range(records)])
            cid = next(_correlation)
            body = conn.request(w.produce_request_v3(topic, 0, batch, cid), cid)
            assert w.decode_produce_response_v3(body)[(topic, 0)].error_code == 0


def fetch(broker, topic: str, offset: int) -> w.FetchPartitionResponse:
    with w.Connection(broker.host, broker.port) as conn:
        cid = next(_correlation)
        body = conn.request(w.fetch_request_v4(topic, 0, offset, cid, max_bytes=1 << 20, partition_max_bytes=1 << 20), cid)
    return w.decode_fetch_response_v4(body)[(topic, 0)]


def segments(broker, topic: str) -> list[Path]:
    return sorted((broker.data_dir / f"{topic}-0").glob("*.log"))


@pytest.fixture
def damaged_topic(broker_factory, topic_name):
    """A stopped broker whose topic has 10 batches of 5 records over several segments."""
    b = broker_factory.start({"log.segment.bytes": 2000})
    create_topic(b.bootstrap, topic_name)
    produce_batches(b, topic_name, 10)
    b.stop()
    assert len(segments(b, topic_name)) >= 3
    return b, topic_name


def corrupted_metric(broker) -> str:
    return next((l for l in broker.metrics().splitlines() if l.startswith('strom_storage_errors_total{kind="corrupt_segment"}')), "")


def test_corrupted_batch_length_is_an_error_not_a_stall(damaged_topic):
    b, topic = damaged_topic
    first = segments(b, topic)[0]
    data = bytearray(first.read_bytes())
    second = 12 + int.from_bytes(data[8:12], "big")
    data[second + 8 : second + 12] = (10_000_000).to_bytes(4, "big")
    first.write_bytes(bytes(data))
    b.start()
    assert fetch(b, topic, 0).error_code == 0
    resp = fetch(b, topic, 5)
    assert resp.error_code == CORRUPT_MESSAGE, resp
    # The segment is never truncated, and the damage is logged with its file and position.
    assert first.read_bytes() == bytes(data)
    log = b.log_text()
    assert str(first) in log and "damaged" in log
    # The later segments still serve.
    assert fetch(b, topic, 45).error_code == 0
    assert corrupted_metric(b).endswith(" 1"), corrupted_metric(b)


def test_flipped_byte_is_corrupt_message_logged_once_and_counted(damaged_topic):
    b, topic = damaged_topic
    first = segments(b, topic)[0]
    data = bytearray(first.read_bytes())
    data[100] ^= 0x10
    first.write_bytes(bytes(data))
    b.start()
    for _ in range(3):
        assert fetch(b, topic, 0).error_code == CORRUPT_MESSAGE
    log = b.log_text()
    assert log.count("CRC-32C mismatch") == 1, "logged once, not per fetch"
    assert f"file={first}" in log and "position=0" in log
    assert corrupted_metric(b).endswith(" 1"), corrupted_metric(b)
    # A real consumer gets the error instead of waiting at the damage.
    c = consumer(b.bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 15
        err = None
        while err is None and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None:
                assert msg.error() is not None, f"record {msg.offset()} served from a damaged batch"
                err = msg.error()
        assert err is not None and err.code() == KafkaError.INVALID_MSG, err
    finally:
        c.close()


def test_verify_log_names_the_damage(damaged_topic):
    b, topic = damaged_topic
    partition_dir = b.data_dir / f"{topic}-0"
    ok = subprocess.run([str(broker_binary()), "verify-log", str(partition_dir)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ": ok" in ok.stdout
    first = segments(b, topic)[0]
    data = bytearray(first.read_bytes())
    data[-3] ^= 0xFF
    first.write_bytes(bytes(data))
    bad = subprocess.run([str(broker_binary()), "verify-log", str(b.data_dir)], capture_output=True, text=True)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    damage = [l for l in bad.stdout.splitlines() if l.startswith("DAMAGE")]
    assert len(damage) == 1 and str(first) in damage[0] and "CRC" in damage[0], bad.stdout


def test_damaged_index_loses_no_record(damaged_topic):
    b, topic = damaged_topic
    first = segments(b, topic)[0]
    index = first.with_suffix(".index")
    data = bytearray(index.read_bytes())
    assert data, "the closed segment has an index"
    for i in range(0, len(data), 8):
        pos = int.from_bytes(data[i + 4 : i + 8], "big") + 7
        data[i + 4 : i + 8] = pos.to_bytes(4, "big")
    index.write_bytes(bytes(data))
    b.start()
    assert [r.offset for r in read_partition(b.bootstrap, topic, 0)] == list(range(50))


def test_second_broker_on_the_same_dir_is_refused(broker_factory):
    first = broker_factory.start()
    second = broker_factory.create({"log.dirs": str(first.data_dir)})
    with pytest.raises(BrokerStartError):
        second.start()
    assert f"locked by another broker process (pid {first.proc.pid})" in second.log_text()
    assert first.running()


def test_garbage_meta_properties_refuses_to_start(broker_factory):
    b = broker_factory.start()
    b.stop()
    cluster_before = (b.data_dir / "meta.properties").read_text()
    (b.data_dir / "meta.properties").write_bytes(b"\x00\xffgarbage\n")
    with pytest.raises(BrokerStartError):
        b.start()
    assert "meta.properties is damaged" in b.log_text()
    assert "cluster.id" in cluster_before


def test_log_start_checkpoint_beyond_log_end_refuses_and_keeps_segments(damaged_topic):
    b, topic = damaged_topic
    before = segments(b, topic)
    (b.data_dir / f"{topic}-0" / "log-start-offset").write_text("100000")
    with pytest.raises(BrokerStartError):
        b.start()
    assert "beyond the log end offset 50" in b.log_text()
    assert segments(b, topic) == before


@pytest.mark.parametrize("value", ["", " , "])
def test_empty_log_dirs_refuses_without_panicking(tmp_path, value):
    r = subprocess.run([str(broker_binary()), "--override", f"log.dirs={value}"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert "log.dirs" in r.stderr and "panicked" not in r.stderr


def test_unknown_partition_directories_are_kept(broker_factory):
    b = broker_factory.start()
    b.stop()
    stray = b.data_dir / "not-in-metadata-0"
    stray.mkdir()
    (stray / "partition.metadata").write_text("version: 0\ntopic_id: 00000000-0000-0000-0000-000000000001\n")
    (stray / "00000000000000000000.log").write_bytes(b"precious")
    b.start()
    assert (stray / "00000000000000000000.log").read_bytes() == b"precious"
    assert "left untouched" in b.log_text()


def test_damaged_metadata_log_refuses_to_start_and_destroys_nothing(damaged_topic):
    """A byte flipped in the first batch of `__cluster_metadata-0` after kill -9 (with the
    topic's records after it): the broker refuses to start naming the file and position,
    cuts nothing from the metadata log, and deletes no partition directory."""
    b, topic = damaged_topic
    b.start()
    b.kill()
    log = b.data_dir / "__cluster_metadata-0" / "00000000000000000000.log"
    data = bytearray(log.read_bytes())
    data[61 + 3] ^= 0xFF  # inside the first batch's records, past its 61-byte header
    log.write_bytes(bytes(data))
    partition_dirs = sorted(p.name for p in b.data_dir.iterdir() if p.is_dir())
    with pytest.raises(BrokerStartError):
        b.start()
    text = b.log_text()
    assert f"{log} at position 0" in text and "damaged batch" in text, text[-2000:]
    assert log.read_bytes() == bytes(data)
    assert sorted(p.name for p in b.data_dir.iterdir() if p.is_dir()) == partition_dirs
    assert segments(b, topic)
