"""Compressed payloads from hostile producers: bombs and lying sizes are refused without
allocating what they claim, garbage under every codec and batches whose records disagree
with their header are refused instead of stored. The broker runs under a 2 GiB address-space
limit (`prlimit --as`), so an allocation sized from the input fails the test (the broker
aborts) on any host, whatever its overcommit policy."""

import gzip
import io
import itertools
import struct
import time

import pytest
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

import kafka_wire as w
from support import CLIENT_TIMEOUT_S, admin, create_topic, read_partition

_correlation = itertools.count(1)
CORRUPT_MESSAGE = 2
INVALID_RECORD = 87
GZIP, SNAPPY, LZ4, ZSTD = 1, 2, 3, 4
XERIAL_HEADER = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)


@pytest.fixture(scope="module")
def broker(module_broker_factory):
    b = module_broker_factory.create({"message.max.bytes": 4 * 1024 * 1024})
    b.command_prefix = ["prlimit", f"--as={2 * 1024**3}"]
    return b.start()


def batch_with(payload: bytes, codec: int, record_count: int = 1) -> bytes:
    """A v2 batch whose records section is `payload`, with `codec` in its attributes and a
    valid CRC: only what is inside can be wrong."""
    now = int(time.time() * 1000)
    after_crc = (
        w.int16(codec)
        + w.int32(record_count - 1)
        + w.int64(now)
        + w.int64(now)
        + w.int64(-1)
        + w.int16(-1)
        + w.int32(-1)
        + w.int32(record_count)
        + payload
    )
    head = w.int32(-1) + w.int8(2) + w.uint32(w.crc32c(after_crc))
    return w.int64(0) + w.int32(len(head) + len(after_crc)) + head + after_crc


def records_section(n: int) -> bytes:
    """The records section (after the header) of an uncompressed batch of n keyed records."""
    return w.record_batch([w.Record(key=b"k%d" % i, value=b"v" * 10) for i in range(n)])[61:]


def gzip_zeros(total: int) -> bytes:
    """gzip of `total` zero bytes, compressed in 1 MiB steps (~1 KB per MiB)."""
    out = io.BytesIO()
    chunk = b"\0" * (1024 * 1024)
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as f:
        for _ in range(total // len(chunk)):
            f.write(chunk)
    return out.getvalue()


def zstd_rle_bomb(total: int) -> bytes:
    """A zstd frame of RLE blocks (4 bytes each for 128 KiB of zeros): ~30 KB per GiB."""
    block = 128 * 1024
    out = bytearray(struct.pack("<I", 0xFD2FB528) + bytes([0x00, 0x38]))  # no size; 128 KiB window
    blocks = total // block
    for i in range(blocks):
        last = 1 if i == blocks - 1 else 0
        out += (last | (1 << 1) | (block << 3)).to_bytes(3, "little") + b"\x00"
    return bytes(out)


def snappy_claiming(size: int) -> bytes:
    """A raw snappy block whose varint length claims `size` bytes, followed by junk."""
    varint = bytearray()
    while True:
        b = size & 0x7F
        size >>= 7
        if size:
            varint.append(b | 0x80)
        else:
            varint.append(b)
            break
    return bytes(varint) + b"\x00" * 36


def produce(broker, topic: str, batch: bytes) -> int:
    """Produce v8: zstd batches need v7 or later (before it Kafka refuses them unread)."""
    with w.Connection(broker.host, broker.port, timeout_s=30) as conn:
        cid = next(_correlation)
        body = conn.request(w.produce_request_v8(topic, 0, batch, cid), cid)
    return w.decode_produce_response_v8(body)[(topic, 0)].error_code


def peak_rss_mib(broker) -> float:
    with open(f"/proc/{broker.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def assert_alive_and_empty(broker, topic: str) -> None:
    assert broker.running(), broker.log_tail()
    md = admin(broker.bootstrap).list_topics(topic, timeout=CLIENT_TIMEOUT_S)
    assert md.topics[topic].error is None
    assert read_partition(broker.bootstrap, topic, 0) == []


@pytest.mark.parametrize("compacted", [False, True], ids=["plain", "compacted"])
@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("codec", [GZIP, ZSTD], ids=["gzip-900MiB", "zstd-4GiB"])
def test_bombs_are_refused_in_bounded_memory(broker, topic_name, codec, compacted):
    payload = gzip_zeros(900 * 1024**2) if codec == GZIP else zstd_rle_bomb(4 * 1024**3)
    create_topic(broker.bootstrap, topic_name, config={"cleanup.policy": "compact"} if compacted else None)
    code = produce(broker, topic_name, batch_with(payload, codec))
    assert code == INVALID_RECORD, code
    assert peak_rss_mib(broker) < 400, f"peak RSS {peak_rss_mib(broker):.0f} MiB"
    assert_alive_and_empty(broker, topic_name)


@pytest.mark.parametrize(
    "payload",
    [snappy_claiming(2**32 - 1), XERIAL_HEADER + struct.pack(">i", 41) + snappy_claiming(2**32 - 1)],
    ids=["raw", "xerial"],
)
def test_snappy_claiming_4_GiB_is_refused_without_allocating(broker, topic_name, payload):
    create_topic(broker.bootstrap, topic_name)
    assert produce(broker, topic_name, batch_with(payload, SNAPPY)) == INVALID_RECORD
    assert peak_rss_mib(broker) < 400
    assert_alive_and_empty(broker, topic_name)


@pytest.mark.parametrize("codec", [GZIP, SNAPPY, LZ4, ZSTD], ids=["gzip", "snappy", "lz4", "zstd"])
def test_garbage_under_every_codec_is_refused(broker, topic_name, codec):
    create_topic(broker.bootstrap, topic_name)
    garbage = bytes((i * 97 + 13) % 256 for i in range(4096))
    assert produce(broker, topic_name, batch_with(garbage, codec)) in (CORRUPT_MESSAGE, INVALID_RECORD)
    assert_alive_and_empty(broker, topic_name)


def test_gzip_records_must_match_the_header(broker, topic_name):
    """A gzip batch holding three good records but a header counting two is refused."""
    create_topic(broker.bootstrap, topic_name)
    payload = gzip.compress(records_section(3))
    assert produce(broker, topic_name, batch_with(payload, GZIP, record_count=2)) == INVALID_RECORD
    assert produce(broker, topic_name, batch_with(payload, GZIP, record_count=3)) == 0
    assert [r.key for r in read_partition(broker.bootstrap, topic_name, 0)] == [b"k0", b"k1", b"k2"]


def test_max_decompressed_message_bytes_is_the_topics_bound(broker, topic_name):
    """A gzip batch of 30,000 records (about 600 KB decompressed, 40 KB compressed): refused
    with INVALID_RECORD on a topic whose max.decompressed.message.bytes is 100 KB, stored
    whole on a topic with the default (64 MiB) — and again once the first topic's bound is
    raised at run time."""
    payload = gzip.compress(records_section(30_000))
    small, default = f"{topic_name}-small", f"{topic_name}-default"
    create_topic(broker.bootstrap, small, config={"max.decompressed.message.bytes": "100000"})
    create_topic(broker.bootstrap, default)
    batch = batch_with(payload, GZIP, record_count=30_000)
    assert produce(broker, small, batch) == INVALID_RECORD
    assert_alive_and_empty(broker, small)
    assert produce(broker, default, batch) == 0
    assert len(read_partition(broker.bootstrap, default, 0)) == 30_000
    resource = ConfigResource(ConfigResource.Type.TOPIC, small, incremental_configs=[
        ConfigEntry("max.decompressed.message.bytes", "1000000", incremental_operation=AlterConfigOpType.SET)])
    admin(broker.bootstrap).incremental_alter_configs([resource])[resource].result(timeout=CLIENT_TIMEOUT_S)
    assert produce(broker, small, batch) == 0


def test_batch_claiming_2_31_records_with_one_inside_is_refused(broker, topic_name):
    create_topic(broker.bootstrap, topic_name)
    assert produce(broker, topic_name, batch_with(records_section(1), 0, record_count=2**31 - 1)) == INVALID_RECORD
    # Offsets stay consecutive: a later valid record gets offset 0 and is readable.
    assert produce(broker, topic_name, batch_with(records_section(1), 0)) == 0
    assert [r.offset for r in read_partition(broker.bootstrap, topic_name, 0)] == [0]


COMPACTED = {
    "cleanup.policy": "compact",
    "segment.bytes": "16384",
    "segment.ms": "300",
    "min.cleanable.dirty.ratio": "0.01",
    "file.delete.delay.ms": "0",
}


@pytest.mark.timeout_s(90)
def test_a_stored_bomb_is_skipped_by_the_cleaner_not_a_crash_loop(broker_factory, topic_name):
    """A zstd bomb already in a compacted topic's log (written before the produce-side check
    existed, here appended to the segment by hand) used to abort the broker through the
    cleaner seconds after every start. The cleaner now skips it (logged, counted), keeps it,
    and the broker stays up, under a 2 GiB address-space limit."""
    b = broker_factory.create({"log.cleaner.backoff.ms": 100})
    b.command_prefix = ["prlimit", f"--as={2 * 1024**3}"]
    b.start()
    create_topic(b.bootstrap, topic_name, config=COMPACTED)
    assert produce(b, topic_name, w.record_batch([w.Record(key=b"k%d" % i, value=b"v") for i in range(20)])) == 0
    b.stop()
    segment = sorted((b.data_dir / f"{topic_name}-0").glob("*.log"))[-1]
    bomb = bytearray(batch_with(zstd_rle_bomb(4 * 1024**3), ZSTD))
    bomb[0:8] = struct.pack(">q", 20)  # the next offset: the bomb is the log's record 20
    with open(segment, "ab") as f:
        f.write(bytes(bomb))
    b.start()
    # More records, then a roll, so the bomb sits in a closed, dirty segment.
    assert produce(b, topic_name, w.record_batch([w.Record(key=b"k%d" % i, value=b"w") for i in range(20)])) == 0
    time.sleep(0.5)
    assert produce(b, topic_name, w.record_batch([w.Record(key=b"marker", value=b"m")])) == 0
    deadline = time.monotonic() + 30
    while "skips a batch it cannot decode" not in b.log_text():
        assert b.running(), b.log_tail()
        assert time.monotonic() < deadline, "the cleaner never reached the bomb"
        time.sleep(0.2)
    time.sleep(2)
    assert b.running(), b.log_tail()
    assert 'strom_invalid_batches_total{reason="cleaner_skipped"}' in b.metrics()
    assert peak_rss_mib(b) < 400
