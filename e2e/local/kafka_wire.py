"""Hand-built Kafka wire frames for the bad-input tests.

Only what the tests send and assert on is here: request headers v1 and v2, ApiVersions,
Metadata v1, Produce v3 (non-flexible) with a v2 record batch built byte by byte,
DescribeQuorum v0/v1 (flexible: compact arrays, tagged fields) for the cluster tests, and
decoders for the response fields the tests look at. Everything is big-endian as in the
Kafka protocol; varints in records are zigzag-encoded.

Written from the protocol definitions, independently of any client library, so a test
can send exactly the bytes it means to, including wrong ones.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

API_PRODUCE = 0
API_METADATA = 3
API_API_VERSIONS = 18

# Error codes the tests assert on (Kafka's numbering).
NONE = 0
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
LEADER_NOT_AVAILABLE = 5
MESSAGE_TOO_LARGE = 10
INVALID_TOPIC_EXCEPTION = 17
UNSUPPORTED_VERSION = 35
INVALID_REPLICATION_FACTOR = 38
INVALID_CONFIG = 40


# --- CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, as record batches use --------


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C of data, continuing from crc (0 for a fresh checksum)."""
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --- primitive encoders -------------------------------------------------------------------


def unsigned_varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("unsigned varint must be >= 0")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def varint(n: int) -> bytes:
    """Zigzag-encoded signed varint (varint and varlong share the encoding)."""
    return unsigned_varint((n << 1) ^ (n >> 63))


def int8(n: int) -> bytes:
    return struct.pack(">b", n)


def int16(n: int) -> bytes:
    return struct.pack(">h", n)


def int32(n: int) -> bytes:
    return struct.pack(">i", n)


def int64(n: int) -> bytes:
    return struct.pack(">q", n)


def uint32(n: int) -> bytes:
    return struct.pack(">I", n)


def string(s: str) -> bytes:
    raw = s.encode()
    return int16(len(raw)) + raw


def nullable_string(s: str | None) -> bytes:
    return int16(-1) if s is None else string(s)


def compact_string(s: str) -> bytes:
    raw = s.encode()
    return unsigned_varint(len(raw) + 1) + raw


def compact_array(items: list[bytes] | None) -> bytes:
    return unsigned_varint(0) if items is None else unsigned_varint(len(items) + 1) + b"".join(items)


def kafka_bytes(b: bytes | None) -> bytes:
    return int32(-1) if b is None else int32(len(b)) + b


def array(items: list[bytes] | None) -> bytes:
    return int32(-1) if items is None else int32(len(items)) + b"".join(items)


EMPTY_TAGGED_FIELDS = unsigned_varint(0)


# --- decoding -----------------------------------------------------------------------------


class Reader:
    """Reads big-endian Kafka primitives from a response body."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"response truncated: need {n} bytes at {self.pos}, have {len(self.data)}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def _unpack(self, fmt: str, n: int) -> int:
        return struct.unpack(fmt, self._take(n))[0]

    def int8(self) -> int:
        return self._unpack(">b", 1)

    def int16(self) -> int:
        return self._unpack(">h", 2)

    def int32(self) -> int:
        return self._unpack(">i", 4)

    def int64(self) -> int:
        return self._unpack(">q", 8)

    def boolean(self) -> bool:
        return self.int8() != 0

    def string(self) -> str:
        n = self.int16()
        return self._take(n).decode()

    def nullable_string(self) -> str | None:
        n = self.int16()
        return None if n < 0 else self._take(n).decode()

    def array(self, read_item) -> list | None:
        n = self.int32()
        return None if n < 0 else [read_item(self) for _ in range(n)]

    def unsigned_varint(self) -> int:
        shift = 0
        value = 0
        while True:
            byte = self._take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ValueError("unsigned varint longer than 10 bytes")

    def compact_string(self) -> str:
        n = self.unsigned_varint()
        if n == 0:
            raise ValueError("null compact string where a string is required")
        return self._take(n - 1).decode()

    def compact_nullable_string(self) -> str | None:
        n = self.unsigned_varint()
        return None if n == 0 else self._take(n - 1).decode()

    def compact_array(self, read_item) -> list | None:
        n = self.unsigned_varint()
        return None if n == 0 else [read_item(self) for _ in range(n - 1)]

    def tagged_fields(self) -> dict[int, bytes]:
        """A flexible version's tagged fields, as tag -> raw value bytes."""
        out = {}
        for _ in range(self.unsigned_varint()):
            tag = self.unsigned_varint()
            out[tag] = self._take(self.unsigned_varint())
        return out

    def remaining(self) -> int:
        return len(self.data) - self.pos


# --- headers and frames -------------------------------------------------------------------


def request_header_v1(api_key: int, api_version: int, correlation_id: int, client_id: str | None = "strom-e2e") -> bytes:
    return int16(api_key) + int16(api_version) + int32(correlation_id) + nullable_string(client_id)


def request_header_v2(api_key: int, api_version: int, correlation_id: int, client_id: str | None = "strom-e2e") -> bytes:
    # v2 adds tagged fields; client_id stays a (non-compact) nullable string.
    return request_header_v1(api_key, api_version, correlation_id, client_id) + EMPTY_TAGGED_FIELDS


def frame(payload: bytes) -> bytes:
    return int32(len(payload)) + payload


# --- ApiVersions --------------------------------------------------------------------------


def api_versions_request(version: int, correlation_id: int, client_id: str = "strom-e2e") -> bytes:
    """A framed ApiVersions request. v3+ is flexible: header v2 and a body with the
    client software name and version (KIP-511)."""
    if version < 3:
        return frame(request_header_v1(API_API_VERSIONS, version, correlation_id, client_id))
    body = compact_string("strom-e2e") + compact_string("0.1.0") + EMPTY_TAGGED_FIELDS
    return frame(request_header_v2(API_API_VERSIONS, version, correlation_id, client_id) + body)


@dataclass
class ApiVersionsResponseV0:
    error_code: int
    api_keys: dict[int, tuple[int, int]]  # api key -> (min version, max version)


def decode_api_versions_response_v0(body: bytes) -> ApiVersionsResponseV0:
    """ApiVersions in v0 form: error_code, [api_key, min_version, max_version]."""
    r = Reader(body)
    error_code = r.int16()
    keys = r.array(lambda r: (r.int16(), r.int16(), r.int16())) or []
    return ApiVersionsResponseV0(error_code, {k: (lo, hi) for k, lo, hi in keys})


# --- Metadata v1 --------------------------------------------------------------------------


def metadata_request_v1(topics: list[str] | None, correlation_id: int) -> bytes:
    """A framed Metadata v1 request; topics=None asks for all topics."""
    body = array(None if topics is None else [string(t) for t in topics])
    return frame(request_header_v1(API_METADATA, 1, correlation_id) + body)


@dataclass
class PartitionMetadata:
    error_code: int
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]


@dataclass
class TopicMetadata:
    error_code: int
    name: str
    is_internal: bool
    partitions: list[PartitionMetadata]


@dataclass
class MetadataResponseV1:
    brokers: list[tuple[int, str, int, str | None]]
    controller_id: int
    topics: dict[str, TopicMetadata] = field(default_factory=dict)


def decode_metadata_response_v1(body: bytes) -> MetadataResponseV1:
    r = Reader(body)
    brokers = r.array(lambda r: (r.int32(), r.string(), r.int32(), r.nullable_string())) or []
    controller_id = r.int32()

    def partition(r: Reader) -> PartitionMetadata:
        return PartitionMetadata(
            error_code=r.int16(),
            partition=r.int32(),
            leader=r.int32(),
            replicas=r.array(Reader.int32) or [],
            isr=r.array(Reader.int32) or [],
        )

    def topic(r: Reader) -> TopicMetadata:
        return TopicMetadata(
            error_code=r.int16(), name=r.string(), is_internal=r.boolean(), partitions=r.array(partition) or []
        )

    topics = r.array(topic) or []
    return MetadataResponseV1(brokers, controller_id, {t.name: t for t in topics})


# --- record batch v2 ----------------------------------------------------------------------

# Byte offsets inside a v2 record batch (the CRC covers everything from attributes on).
BATCH_LENGTH_OFFSET = 8
BATCH_MAGIC_OFFSET = 16
BATCH_CRC_OFFSET = 17
BATCH_ATTRIBUTES_OFFSET = 21
BATCH_HEADER_SIZE = 61


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    timestamp_delta: int = 0


def _encode_record(offset_delta: int, rec: Record) -> bytes:
    body = bytearray()
    body += int8(0)  # attributes (unused)
    body += varint(rec.timestamp_delta)
    body += varint(offset_delta)
    body += varint(-1) if rec.key is None else varint(len(rec.key)) + rec.key
    body += varint(-1) if rec.value is None else varint(len(rec.value)) + rec.value
    body += varint(len(rec.headers))
    for hkey, hvalue in rec.headers:
        raw_key = hkey.encode()
        body += varint(len(raw_key)) + raw_key
        body += varint(-1) if hvalue is None else varint(len(hvalue)) + hvalue
    return varint(len(body)) + bytes(body)


def record_batch(
    records: list[Record],
    base_timestamp_ms: int | None = None,
    base_offset: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytes:
    """An uncompressed, non-transactional v2 record batch with a correct CRC-32C; with a
    producer id, epoch and base sequence, an idempotent producer's batch."""
    if not records:
        raise ValueError("a record batch needs at least one record")
    if base_timestamp_ms is None:
        base_timestamp_ms = int(time.time() * 1000)
    max_timestamp = base_timestamp_ms + max(r.timestamp_delta for r in records)
    encoded = b"".join(_encode_record(i, r) for i, r in enumerate(records))
    after_crc = (
        int16(0)  # attributes: no compression, CreateTime, not transactional, not control
        + int32(len(records) - 1)  # last offset delta
        + int64(base_timestamp_ms)
        + int64(max_timestamp)
        + int64(producer_id)
        + int16(producer_epoch)
        + int32(base_sequence)
        + int32(len(records))
        + encoded
    )
    partition_leader_epoch = int32(-1)
    magic = int8(2)
    crc = uint32(crc32c(after_crc))
    batch_length = len(partition_leader_epoch) + len(magic) + len(crc) + len(after_crc)
    return int64(base_offset) + int32(batch_length) + partition_leader_epoch + magic + crc + after_crc


@dataclass
class BatchHeader:
    base_offset: int
    length: int  # bytes after the length field
    magic: int
    crc_valid: bool
    attributes: int
    last_offset_delta: int
    record_count: int

    @property
    def compression(self) -> int:
        """0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd."""
        return self.attributes & 0x7


def read_batch_headers(data: bytes) -> list[BatchHeader]:
    """The headers of the v2 record batches laid end to end in data (a segment file or a
    records field); a torn batch at the end is ignored."""
    out = []
    pos = 0
    while pos + BATCH_HEADER_SIZE <= len(data):
        base_offset, length = struct.unpack(">qi", data[pos : pos + 12])
        end = pos + 12 + length
        if length <= 0 or end > len(data):
            break
        batch = data[pos:end]
        out.append(
            BatchHeader(
                base_offset=base_offset,
                length=length,
                magic=batch[BATCH_MAGIC_OFFSET],
                crc_valid=batch_crc_is_valid(batch),
                attributes=struct.unpack(">h", batch[21:23])[0],
                last_offset_delta=struct.unpack(">i", batch[23:27])[0],
                record_count=struct.unpack(">i", batch[57:61])[0],
            )
        )
        pos = end
    return out


def batch_crc_is_valid(batch: bytes) -> bool:
    stored = struct.unpack(">I", batch[BATCH_CRC_OFFSET:BATCH_ATTRIBUTES_OFFSET])[0]
    return stored == crc32c(batch[BATCH_ATTRIBUTES_OFFSET:])


def corrupt_batch(batch: bytes) -> bytes:
    """The same batch with one byte of the last record's value flipped: sizes still add
    up, only the CRC no longer matches."""
    damaged = bytearray(batch)
    damaged[-2] ^= 0xFF
    return bytes(damaged)


# --- Produce v3 ---------------------------------------------------------------------------


def produce_request_v3(
    topic: str,
    partition: int,
    records: bytes,
    correlation_id: int,
    acks: int = -1,
    timeout_ms: int = 10_000,
    version: int = 3,
    client_id: str = "strom-e2e",
) -> bytes:
    """A framed Produce v3 request carrying one batch for one partition (v4 to v8 share
    its body)."""
    partition_data = int32(partition) + kafka_bytes(records)
    topic_data = string(topic) + array([partition_data])
    body = nullable_string(None) + int16(acks) + int32(timeout_ms) + array([topic_data])
    return frame(request_header_v1(API_PRODUCE, version, correlation_id, client_id) + body)


@dataclass
class ProducePartitionResponse:
    error_code: int
    base_offset: int
    log_append_time_ms: int


def decode_produce_response_v3(body: bytes) -> dict[tuple[str, int], ProducePartitionResponse]:
    r = Reader(body)

    def partition(r: Reader) -> tuple[int, ProducePartitionResponse]:
        index = r.int32()
        return index, ProducePartitionResponse(r.int16(), r.int64(), r.int64())

    def topic(r: Reader) -> tuple[str, list]:
        return r.string(), r.array(partition) or []

    out = {}
    for name, partitions in r.array(topic) or []:
        for index, resp in partitions:
            out[(name, index)] = resp
    r.int32()  # throttle_time_ms
    return out


def produce_request_v8(
    topic: str, partition: int, records: bytes, correlation_id: int, acks: int = -1, client_id: str = "strom-e2e"
) -> bytes:
    """A framed Produce v8 request (the body is v3's; the response adds KIP-467's errors)."""
    return produce_request_v3(topic, partition, records, correlation_id, acks, version=8, client_id=client_id)


def produce_throttle_time_ms(body: bytes) -> int:
    """The throttle_time_ms of a Produce v3-v8 response: its last field."""
    return struct.unpack(">i", body[-4:])[0]


@dataclass
class ProducePartitionResponseV8:
    error_code: int
    base_offset: int
    record_errors: list[tuple[int, str | None]]
    error_message: str | None


def decode_produce_response_v8(body: bytes) -> dict[tuple[str, int], ProducePartitionResponseV8]:
    r = Reader(body)

    def record_error(r: Reader) -> tuple[int, str | None]:
        return r.int32(), r.nullable_string()

    def partition(r: Reader) -> tuple[int, ProducePartitionResponseV8]:
        index, code, base_offset = r.int32(), r.int16(), r.int64()
        r.int64()  # log_append_time_ms
        r.int64()  # log_start_offset
        errors = r.array(record_error) or []
        return index, ProducePartitionResponseV8(code, base_offset, errors, r.nullable_string())

    def topic(r: Reader) -> tuple[str, list]:
        return r.string(), r.array(partition) or []

    out = {}
    for name, partitions in r.array(topic) or []:
        for index, resp in partitions:
            out[(name, index)] = resp
    r.int32()  # throttle_time_ms
    return out


# --- InitProducerId v0 ---------------------------------------------------------------------

API_INIT_PRODUCER_ID = 22


def init_producer_id_request_v0(correlation_id: int, transactional_id: str | None = None) -> bytes:
    body = nullable_string(transactional_id) + int32(60_000)
    return frame(request_header_v1(API_INIT_PRODUCER_ID, 0, correlation_id) + body)


def init_producer_id_request_v3(correlation_id: int, producer_id: int, producer_epoch: int) -> bytes:
    """A flexible InitProducerId v3 without a transactional id, carrying an existing
    producer id and epoch (KIP-360: asks for the epoch to be bumped)."""
    body = unsigned_varint(0) + int32(60_000) + int64(producer_id) + int16(producer_epoch) + unsigned_varint(0)
    return frame(request_header_v2(API_INIT_PRODUCER_ID, 3, correlation_id) + body)


def decode_init_producer_id_response_v3(body: bytes) -> tuple[int, int, int]:
    """(error code, producer id, producer epoch) after the flexible header's tagged fields."""
    assert body[0] == 0, "no tagged fields expected in the response header"
    return decode_init_producer_id_response_v0(body[1:])


def decode_init_producer_id_response_v0(body: bytes) -> tuple[int, int, int]:
    """(error code, producer id, producer epoch)."""
    r = Reader(body)
    r.int32()  # throttle_time_ms
    return r.int16(), r.int64(), r.int16()


# --- DescribeQuorum v0 and v1 (flexible from v0) -----------------------------------------

API_DESCRIBE_QUORUM = 55
NOT_LEADER_OR_FOLLOWER = 6
CLUSTER_METADATA_TOPIC = "__cluster_metadata"


def describe_quorum_request(
    correlation_id: int, version: int = 1, topic: str = CLUSTER_METADATA_TOPIC, partition: int = 0
) -> bytes:
    """A framed DescribeQuorum request for one partition of the metadata log. Every
    version is flexible: header v2; compact arrays and strings; tagged fields at the end
    of every struct. The request is the same in v0, v1 and v2 (they add response fields)."""
    if version not in (0, 1, 2):
        raise ValueError("only DescribeQuorum v0 to v2 are encoded here")
    partitions = compact_array([int32(partition) + EMPTY_TAGGED_FIELDS])
    topics = compact_array([compact_string(topic) + partitions + EMPTY_TAGGED_FIELDS])
    body = topics + EMPTY_TAGGED_FIELDS
    return frame(request_header_v2(API_DESCRIBE_QUORUM, version, correlation_id) + body)


@dataclass
class ReplicaState:
    replica_id: int
    log_end_offset: int
    last_fetch_timestamp: int = -1  # v1+
    last_caught_up_timestamp: int = -1  # v1+


@dataclass
class QuorumPartition:
    partition: int
    error_code: int
    leader_id: int
    leader_epoch: int
    high_watermark: int
    voters: list[ReplicaState]
    observers: list[ReplicaState]


@dataclass
class DescribeQuorumResponse:
    error_code: int
    partitions: dict[tuple[str, int], QuorumPartition]
    # v2 (KIP-853): node id -> [(listener name, host, port)]
    nodes: dict[int, list[tuple[str, str, int]]] = field(default_factory=dict)

    def metadata_partition(self) -> QuorumPartition | None:
        return self.partitions.get((CLUSTER_METADATA_TOPIC, 0))


def decode_describe_quorum_response(body: bytes, version: int = 1) -> DescribeQuorumResponse:
    """Decodes a DescribeQuorum v0-v2 response body, starting with the tagged fields of the
    flexible response header (v1) that `Connection.recv_response` leaves in the body."""
    r = Reader(body)
    r.tagged_fields()  # response header v1

    def replica(r: Reader) -> ReplicaState:
        replica_id = r.int32()
        if version >= 2:
            r._take(16)  # ReplicaDirectoryId
        state = ReplicaState(replica_id, r.int64())
        if version >= 1:
            state.last_fetch_timestamp = r.int64()
            state.last_caught_up_timestamp = r.int64()
        r.tagged_fields()
        return state

    def partition(r: Reader) -> QuorumPartition:
        index, code = r.int32(), r.int16()
        if version >= 2:
            r.compact_nullable_string()  # ErrorMessage
        p = QuorumPartition(
            partition=index,
            error_code=code,
            leader_id=r.int32(),
            leader_epoch=r.int32(),
            high_watermark=r.int64(),
            voters=r.compact_array(replica) or [],
            observers=r.compact_array(replica) or [],
        )
        r.tagged_fields()  # v1: HighWatermarkUpdateTimeMs (tag 0), ignored
        return p

    error_code = r.int16()
    if version >= 2:
        r.compact_nullable_string()  # ErrorMessage
    out: dict[tuple[str, int], QuorumPartition] = {}
    for _ in range((r.unsigned_varint() or 1) - 1):
        name = r.compact_string()
        for p in r.compact_array(partition) or []:
            out[(name, p.partition)] = p
        r.tagged_fields()
    nodes: dict[int, list[tuple[str, str, int]]] = {}
    if version >= 2:

        def listener(r: Reader) -> tuple[str, str, int]:
            item = (r.compact_string(), r.compact_string(), r._unpack(">H", 2))
            r.tagged_fields()
            return item

        def node(r: Reader) -> None:
            node_id = r.int32()
            nodes[node_id] = r.compact_array(listener) or []
            r.tagged_fields()

        r.compact_array(node)
    r.tagged_fields()
    return DescribeQuorumResponse(error_code, out, nodes)


def describe_quorum(host: str, port: int, version: int = 1, timeout_s: float = 2.0) -> DescribeQuorumResponse:
    """One DescribeQuorum round trip on a fresh connection (a controller's CONTROLLER
    listener, or a broker's)."""
    with Connection(host, port, timeout_s) as conn:
        return decode_describe_quorum_response(conn.request(describe_quorum_request(1, version), 1), version)


def metadata(host: str, port: int, topics: list[str] | None = None, timeout_s: float = 5.0) -> MetadataResponseV1:
    """One Metadata v1 round trip on a fresh connection; topics=None asks for all."""
    with Connection(host, port, timeout_s) as conn:
        return decode_metadata_response_v1(conn.request(metadata_request_v1(topics, 1), 1))


# --- a blocking connection ----------------------------------------------------------------


class ConnectionClosed(Exception):
    pass


class Connection:
    """One TCP connection to the broker; requests are framed bytes, responses come back
    as (correlation_id, body) with a v0 response header (all APIs used here)."""

    def __init__(self, host: str, port: int, timeout_s: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock.settimeout(timeout_s)

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except ConnectionResetError as err:
                raise ConnectionClosed(f"reset after {len(buf)} of {n} bytes") from err
            if not chunk:
                raise ConnectionClosed(f"closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def recv_response(self) -> tuple[int, bytes]:
        size = struct.unpack(">i", self._read_exact(4))[0]
        payload = self._read_exact(size)
        return struct.unpack(">i", payload[:4])[0], payload[4:]

    def request(self, data: bytes, correlation_id: int) -> bytes:
        self.send(data)
        got, body = self.recv_response()
        if got != correlation_id:
            raise AssertionError(f"correlation id {got} in response, expected {correlation_id}")
        return body

    def wait_closed(self, timeout_s: float = 10.0) -> bytes | None:
        """Waits for the peer to close. Returns None when it did, or the bytes it sent
        instead (a response where none was expected) if it stays open until timeout."""
        deadline = time.monotonic() + timeout_s
        received = bytearray()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(received)
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return None
            except socket.timeout:
                return bytes(received)
            if not chunk:
                return None
            received += chunk


# --- CreateTopics v2, CreatePartitions v0, Fetch v4 (test_hostile_input.py) --------------

API_FETCH = 1
API_CREATE_TOPICS = 19
API_CREATE_PARTITIONS = 37


def create_topics_request_v2(
    topics: list[tuple[str, int, int]], correlation_id: int, validate_only: bool = False
) -> bytes:
    """A framed CreateTopics v2 request for (name, num_partitions, replication_factor)s."""
    items = [string(name) + int32(n) + int16(rf) + array([]) + array([]) for name, n, rf in topics]
    body = array(items) + int32(10_000) + int8(1 if validate_only else 0)
    return frame(request_header_v1(API_CREATE_TOPICS, 2, correlation_id) + body)


def create_partitions_request_v0(topic: str, count: int, correlation_id: int, validate_only: bool = False) -> bytes:
    body = array([string(topic) + int32(count) + int32(-1)]) + int32(10_000) + int8(1 if validate_only else 0)
    return frame(request_header_v1(API_CREATE_PARTITIONS, 0, correlation_id) + body)


def decode_topic_errors(body: bytes) -> dict[str, tuple[int, str | None]]:
    """CreateTopics v2 and CreatePartitions v0 responses: throttle time, then per topic its
    name, error code and error message."""
    r = Reader(body)
    r.int32()
    return {name: (code, message) for name, code, message in r.array(lambda r: (r.string(), r.int16(), r.nullable_string())) or []}


def fetch_request_v4(
    topic: str,
    partition: int,
    offset: int,
    correlation_id: int,
    max_bytes: int = 2**31 - 1,
    partition_max_bytes: int = 2**31 - 1,
    max_wait_ms: int = 0,
) -> bytes:
    partitions = array([int32(partition) + int64(offset) + int32(partition_max_bytes)])
    body = int32(-1) + int32(max_wait_ms) + int32(1) + int32(max_bytes) + int8(0) + array([string(topic) + partitions])
    return frame(request_header_v1(API_FETCH, 4, correlation_id) + body)


@dataclass
class FetchPartitionResponse:
    error_code: int
    high_watermark: int
    records: bytes


def decode_fetch_response_v4(body: bytes) -> dict[tuple[str, int], FetchPartitionResponse]:
    r = Reader(body)
    r.int32()  # throttle_time_ms

    def partition(r: Reader):
        index, code, hw = r.int32(), r.int16(), r.int64()
        r.int64()  # last stable offset
        r.array(lambda r: (r.int64(), r.int64()))
        size = r.int32()
        return index, FetchPartitionResponse(code, hw, r._take(size) if size > 0 else b"")

    out = {}
    for name, partitions in r.array(lambda r: (r.string(), r.array(partition) or [])) or []:
        for index, resp in partitions:
            out[(name, index)] = resp
    return out


# --- Fetch v11 with a session (KIP-227, test_fetch_sessions.py) ---------------------------


def fetch_request_v11(
    correlation_id: int,
    session_id: int,
    session_epoch: int,
    topics: list[tuple[str, list[tuple[int, int]]]],
    forgotten: list[tuple[str, list[int]]] = (),
    max_wait_ms: int = 0,
    min_bytes: int = 1,
    replica_id: int = -1,
    partition_max_bytes: int = 1 << 20,
) -> bytes:
    """A framed Fetch v11: `topics` are (name, [(partition, fetch_offset)]) to add or change,
    `forgotten` (name, [partition]) to leave the session."""

    def partition(p: tuple[int, int]) -> bytes:
        index, offset = p
        return int32(index) + int32(-1) + int64(offset) + int64(-1) + int32(partition_max_bytes)

    body = (
        int32(replica_id)
        + int32(max_wait_ms)
        + int32(min_bytes)
        + int32(50 << 20)
        + int8(0)
        + int32(session_id)
        + int32(session_epoch)
        + array([string(t) + array([partition(p) for p in ps]) for t, ps in topics])
        + array([string(t) + array([int32(p) for p in ps]) for t, ps in forgotten])
        + string("")
    )
    return frame(request_header_v1(API_FETCH, 11, correlation_id) + body)


@dataclass
class FetchResponseV11:
    error_code: int
    session_id: int
    partitions: dict[tuple[str, int], FetchPartitionResponse]
    order: list[tuple[str, int]]


def decode_fetch_response_v11(body: bytes) -> FetchResponseV11:
    r = Reader(body)
    r.int32()  # throttle_time_ms
    error_code, session_id = r.int16(), r.int32()

    def partition(r: Reader):
        index, code, hw = r.int32(), r.int16(), r.int64()
        r.int64()  # last stable offset
        r.int64()  # log start offset
        r.array(lambda r: (r.int64(), r.int64()))
        r.int32()  # preferred read replica
        size = r.int32()
        return index, FetchPartitionResponse(code, hw, r._take(size) if size > 0 else b"")

    out, order = {}, []
    for name, partitions in r.array(lambda r: (r.string(), r.array(partition) or [])) or []:
        for index, resp in partitions:
            out[(name, index)] = resp
            order.append((name, index))
    return FetchResponseV11(error_code, session_id, out, order)


# --- IncrementalAlterConfigs v0 (test_dynamic_broker_configs.py) --------------------------

API_INCREMENTAL_ALTER_CONFIGS = 44
RESOURCE_BROKER = 4
OP_SET, OP_DELETE = 0, 1


def incremental_alter_configs_request_v0(
    correlation_id: int, resource_type: int, name: str, configs: list[tuple[str, int, str | None]]
) -> bytes:
    """One resource's (config name, operation, value) changes. The broker resource "" is
    the cluster-wide default, which confluent-kafka and kafka-python cannot name."""
    entries = array([string(k) + int8(op) + nullable_string(v) for k, op, v in configs])
    body = array([int8(resource_type) + string(name) + entries]) + int8(0)
    return frame(request_header_v1(API_INCREMENTAL_ALTER_CONFIGS, 0, correlation_id) + body)


def decode_incremental_alter_configs_response_v0(body: bytes) -> list[tuple[int, str | None]]:
    r = Reader(body)
    r.int32()  # throttle_time_ms

    def resource(r: Reader):
        code, message = r.int16(), r.nullable_string()
        r.int8()
        r.string()
        return code, message

    return r.array(resource) or []


# --- OffsetForLeaderEpoch v2 (test_replication.py) ----------------------------------------

API_OFFSET_FOR_LEADER_EPOCH = 23


def offset_for_leader_epoch_request_v2(
    topic: str, partitions: list[tuple[int, int, int]], correlation_id: int
) -> bytes:
    """A framed OffsetForLeaderEpoch v2 request for (partition, current_leader_epoch,
    leader_epoch)s of one topic."""
    items = [int32(p) + int32(current) + int32(epoch) for p, current, epoch in partitions]
    body = array([string(topic) + array(items)])
    return frame(request_header_v1(API_OFFSET_FOR_LEADER_EPOCH, 2, correlation_id) + body)


def decode_offset_for_leader_epoch_response_v2(body: bytes) -> dict[tuple[str, int], tuple[int, int, int]]:
    """(topic, partition) -> (error code, leader epoch, end offset)."""
    r = Reader(body)
    r.int32()  # throttle time
    out = {}
    for topic, parts in r.array(lambda r: (r.string(), r.array(lambda r: (r.int16(), r.int32(), r.int32(), r.int64())))) or []:
        for code, partition, epoch, end in parts or []:
            out[(topic, partition)] = (code, epoch, end)
    return out


def offset_for_leader_epoch(host: str, port: int, topic: str, partitions: list[tuple[int, int, int]], timeout_s: float = 5.0):
    """One OffsetForLeaderEpoch v2 round trip on a fresh connection."""
    with Connection(host, port, timeout_s) as conn:
        body = conn.request(offset_for_leader_epoch_request_v2(topic, partitions, 7), 7)
    return decode_offset_for_leader_epoch_response_v2(body)


# --- client quotas (KIP-546) and a throttle probe -------------------------------------------

API_LIST_GROUPS = 16
API_DESCRIBE_CLIENT_QUOTAS = 48
API_ALTER_CLIENT_QUOTAS = 49
MATCH_EXACT, MATCH_DEFAULT, MATCH_SPECIFIED = 0, 1, 2


def list_groups_request_v1(correlation_id: int, client_id: str) -> bytes:
    """ListGroups v1 (an empty body); its response starts with throttle_time_ms."""
    return frame(request_header_v1(API_LIST_GROUPS, 1, correlation_id, client_id))


def describe_client_quotas_request_v0(
    correlation_id: int, components: list[tuple[str, int, str | None]], strict: bool
) -> bytes:
    body = array([string(t) + int8(m) + nullable_string(n) for t, m, n in components]) + int8(1 if strict else 0)
    return frame(request_header_v1(API_DESCRIBE_CLIENT_QUOTAS, 0, correlation_id) + body)


def decode_describe_client_quotas_response_v0(body: bytes):
    """(error code, message, [(entity {type: name}, {key: value})])."""
    r = Reader(body)
    r.int32()  # throttle_time_ms
    code, message = r.int16(), r.nullable_string()

    def entry(r: Reader):
        entity = dict(r.array(lambda r: (r.string(), r.nullable_string())) or [])
        values = dict(r.array(lambda r: (r.string(), struct.unpack(">d", r._take(8))[0])) or [])
        return entity, values

    return code, message, r.array(entry)


def alter_client_quotas_request_v0(
    correlation_id: int,
    entries: list[tuple[list[tuple[str, str | None]], list[tuple[str, float | None]]]],
    validate_only: bool = False,
) -> bytes:
    """Each entry: its entity's (type, name or None for the default) and its (key, value or
    None to remove) ops."""

    def op(key: str, value: float | None) -> bytes:
        return string(key) + struct.pack(">d", value or 0.0) + int8(1 if value is None else 0)

    encoded = [
        array([string(t) + nullable_string(n) for t, n in entity]) + array([op(k, v) for k, v in ops])
        for entity, ops in entries
    ]
    body = array(encoded) + int8(1 if validate_only else 0)
    return frame(request_header_v1(API_ALTER_CLIENT_QUOTAS, 0, correlation_id) + body)


def decode_alter_client_quotas_response_v0(body: bytes) -> list[tuple[int, str | None, dict]]:
    r = Reader(body)
    r.int32()  # throttle_time_ms

    def entry(r: Reader):
        code, message = r.int16(), r.nullable_string()
        return code, message, dict(r.array(lambda r: (r.string(), r.nullable_string())) or [])

    return r.array(entry) or []
