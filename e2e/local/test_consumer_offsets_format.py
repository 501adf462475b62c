"""`__consumer_offsets` in Kafka's binary schemas: Kafka's own formatters (the console
consumer with OffsetsMessageFormatter and GroupMetadataMessageFormatter, the Java client)
decode what Strom's group coordinator wrote; records of Strom's earlier JSON format, found
at load, are served and rewritten in Kafka's schema."""

import json
import subprocess
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

import kafka_wire as w
from support import CLIENT_TIMEOUT_S, create_topic, produce_all, producer

OFFSETS = "__consumer_offsets"
ONE_PARTITION = {"offsets.topic.num.partitions": 1}


def commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                  "client.id": "format-test"})
    try:
        c.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        c.close()


def committed(bootstrap: str, group: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return c.committed([TopicPartition(topic, 0)], timeout=CLIENT_TIMEOUT_S)[0].offset
    finally:
        c.close()


def formatted(jars: str, bootstrap: str, formatter: str) -> list[dict]:
    """What Kafka's console consumer prints of __consumer_offsets with `formatter`."""
    proc = subprocess.run(
        ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx256m", "-cp", jars,
         "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", bootstrap,
         "--topic", OFFSETS, "--from-beginning", "--timeout-ms", "8000",
         "--formatter", f"org.apache.kafka.tools.consumer.{formatter}",
         "--command-property", "exclude.internal.topics=false"],
        capture_output=True, text=True, timeout=90,
    )
    assert "Exception" not in proc.stderr.replace("TimeoutException", ""), proc.stderr[-3000:]
    # The formatters print one JSON object per record, with no separator between them.
    out, text, decoder = [], proc.stdout.strip(), json.JSONDecoder()
    while text:
        obj, end = decoder.raw_decode(text)
        out.append(obj)
        text = text[end:].lstrip()
    return out


@pytest.mark.timeout_s(120)
def test_kafkas_formatters_decode_offsets_and_group_metadata(broker_factory, topic_name, kafka_jars):
    b = broker_factory.start(ONE_PARTITION)
    create_topic(b.bootstrap, topic_name)
    produce_all(producer(b.bootstrap), topic_name, [{"value": b"x", "partition": 0}] * 5)
    commit(b.bootstrap, "standalone-group", topic_name, 4)
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "member-group", "client.id": "the-member",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "partition.assignment.strategy": "roundrobin"})
    try:
        c.subscribe([topic_name])
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        got = 0
        while got < 5 and time.monotonic() < deadline:
            m = c.poll(0.5)
            got += m is not None and m.error() is None
        c.commit(asynchronous=False)
    finally:
        c.close()

    offsets = formatted(kafka_jars, b.bootstrap, "OffsetsMessageFormatter")
    by_group = {(o["key"]["data"]["group"], o["key"]["data"]["topic"]): o["value"]["data"]["offset"] for o in offsets if o["value"]}
    assert by_group == {("standalone-group", topic_name): 4, ("member-group", topic_name): 5}, offsets

    groups = formatted(kafka_jars, b.bootstrap, "GroupMetadataMessageFormatter")
    member_group = [g for g in groups if g["key"]["data"]["group"] == "member-group" and g["value"]]
    assert member_group, groups
    # While the member was in it: its generation, protocol and the member as Kafka's
    # formatter reads it; after it left (closing), an empty generation.
    stable = [g["value"]["data"] for g in member_group if g["value"]["data"]["members"]]
    assert stable, member_group
    assert (stable[-1]["protocolType"], stable[-1]["protocol"]) == ("consumer", "roundrobin"), stable[-1]
    (member,) = stable[-1]["members"]
    assert (member["clientId"], member["memberId"] == stable[-1]["leader"]) == ("the-member", True), member
    assert member["assignment"], "the member's assignment is kept"
    empty = member_group[-1]["value"]["data"]
    assert (empty["members"], empty["generation"]) == ([], stable[-1]["generation"] + 1), empty


def json_record(key: dict, value: dict) -> w.Record:
    return w.Record(key=json.dumps(key).encode(), value=json.dumps(value).encode())


@pytest.mark.timeout_s(120)
def test_json_era_records_are_loaded_and_rewritten(broker_factory, topic_name, kafka_jars):
    """A log holding a commit in Strom's JSON format (appended to the segment by hand, as
    the broker before Kafka's schemas wrote it) is loaded after kill -9, the offset is
    served, and the record is rewritten in Kafka's schema for the formatter to read."""
    b = broker_factory.start(ONE_PARTITION)
    create_topic(b.bootstrap, topic_name)
    commit(b.bootstrap, "new-group", topic_name, 1)
    b.kill()
    segment = sorted((b.data_dir / f"{OFFSETS}-0").glob("*.log"))[-1]
    data = segment.read_bytes()
    last = w.read_batch_headers(data)[-1]
    legacy = w.record_batch(
        [
            json_record({"version": 1, "type": "offset", "group": "old-group", "topic": topic_name, "partition": 0},
                        {"version": 1, "offset": 77, "leader_epoch": -1, "metadata": "from json",
                         "commit_timestamp_ms": int(time.time() * 1000)}),
        ],
        base_offset=last.base_offset + last.last_offset_delta + 1,
    )
    with open(segment, "ab") as f:
        f.write(legacy)
    b.start()
    assert committed(b.bootstrap, "old-group", topic_name) == 77
    assert committed(b.bootstrap, "new-group", topic_name) == 1
    assert "rewrote the JSON-era records" in b.log_text()
    offsets = formatted(kafka_jars, b.bootstrap, "OffsetsMessageFormatter")
    old = [o for o in offsets if o["key"]["data"].get("group") == "old-group" and o["value"]]
    assert [(o["value"]["data"]["offset"], o["value"]["data"]["metadata"]) for o in old] == [(77, "from json")], offsets
    # Loaded again (a second restart), the rewritten record is not rewritten twice.
    b.kill()
    b.start()
    assert committed(b.bootstrap, "old-group", topic_name) == 77
    assert b.log_text().count("rewrote the JSON-era records") == 1
