"""Apache Kafka's command-line tools as an operator types them (the kafka-tools jar at the
version e2e/java/pom.xml pins, run with `java -cp`), against one Strom broker, with
assertions on their printed output: kafka-topics (create with configs, list, describe,
alter partitions, delete), kafka-console-producer with keys, kafka-get-offsets,
kafka-console-consumer in a group, kafka-consumer-groups (list, describe with lag,
reset-offsets --dry-run and --execute, delete), kafka-delete-records and the two perf
tools."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

JVM = ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx256m"]
TOOLS = "org.apache.kafka.tools."


def tool(jars: str, cls: str, *args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*JVM, "-cp", jars, TOOLS + cls, *args], input=stdin, capture_output=True, text=True, timeout=120)
    if ok:
        assert proc.returncode == 0, f"{cls} {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def broker(module_broker_factory):
    return module_broker_factory.start({"offsets.topic.num.partitions": 4})


def describe_topic(jars: str, boot: str, topic: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """`kafka-topics --describe`: the topic line's fields and one dict per partition line."""
    out = tool(jars, "TopicCommand", "--bootstrap-server", boot, "--describe", "--topic", topic).stdout
    head, parts = {}, []
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w+):\s*(\S*)", line))
        if "PartitionCount" in fields:
            head = fields
        elif "Partition" in fields:
            parts.append(fields)
    return head, parts


@pytest.mark.timeout_s(300)
def test_topics_producer_offsets_groups_and_records(broker, kafka_jars, topic_name):
    boot = broker.bootstrap
    jars = kafka_jars
    tool(jars, "TopicCommand", "--bootstrap-server", boot, "--create", "--topic", topic_name, "--partitions", "2",
         "--replication-factor", "1", "--config", "retention.ms=86400000")
    assert topic_name in tool(jars, "TopicCommand", "--bootstrap-server", boot, "--list").stdout.split()
    head, parts = describe_topic(jars, boot, topic_name)
    assert (head["PartitionCount"], head["ReplicationFactor"]) == ("2", "1"), head
    assert "retention.ms=86400000" in head["Configs"], head
    assert [(p["Partition"], p["Leader"], p["Isr"]) for p in parts] == [("0", "1", "1"), ("1", "1", "1")], parts
    refused = tool(jars, "TopicCommand", "--bootstrap-server", boot, "--create", "--topic", topic_name,
                   "--partitions", "1", ok=False)
    assert refused.returncode != 0 and "already exists" in refused.stdout + refused.stderr

    lines = "".join(f"k{i}:v{i}\n" for i in range(100))
    tool(jars, "ConsoleProducer", "--bootstrap-server", boot, "--topic", topic_name,
         "--reader-property", "parse.key=true", "--reader-property", "key.separator=:", stdin=lines)
    offsets = tool(jars, "GetOffsetShell", "--bootstrap-server", boot, "--topic", topic_name).stdout
    ends = {int(p): int(o) for t, p, o in (line.split(":") for line in offsets.split())}
    assert sum(ends.values()) == 100 and set(ends) == {0, 1}, offsets
    starts = tool(jars, "GetOffsetShell", "--bootstrap-server", boot, "--topic", topic_name, "--time", "-2").stdout
    assert {line.split(":")[2] for line in starts.split()} == {"0"}, starts

    group = f"cli-{topic_name}"
    out = tool(jars, "consumer.ConsoleConsumer", "--bootstrap-server", boot, "--topic", topic_name, "--group", group,
               "--from-beginning", "--max-messages", "100", "--timeout-ms", "30000",
               "--formatter-property", "print.key=true", "--formatter-property", "key.separator=:").stdout
    assert sorted(out.split()) == sorted(f"k{i}:v{i}" for i in range(100))
    assert group in tool(jars, "consumer.group.ConsumerGroupCommand", "--bootstrap-server", boot, "--list").stdout.split()
    described = group_offsets(jars, boot, group)
    assert {p: (cur, end, lag) for p, (cur, end, lag) in described.items()} == {p: (e, e, 0) for p, e in ends.items()}, described

    dry = tool(jars, "consumer.group.ConsumerGroupCommand", "--bootstrap-server", boot, "--reset-offsets", "--group", group,
               "--topic", topic_name, "--to-earliest", "--dry-run").stdout
    assert group_offsets(jars, boot, group) == described, "--dry-run changed the offsets"
    assert re.search(rf"{re.escape(group)}\s+{re.escape(topic_name)}\s+0\s+0", dry), dry
    tool(jars, "consumer.group.ConsumerGroupCommand", "--bootstrap-server", boot, "--reset-offsets", "--group", group,
         "--topic", f"{topic_name}:0", "--to-offset", "3", "--execute")
    after = group_offsets(jars, boot, group)
    assert after[0] == (3, ends[0], ends[0] - 3) and after[1] == described[1], after

    plan = {"version": 1, "partitions": [{"topic": topic_name, "partition": 0, "offset": 5}]}
    plan_file = broker.data_dir.parent / "delete-records.json"
    plan_file.write_text(json.dumps(plan))
    deleted = tool(jars, "DeleteRecordsCommand", "--bootstrap-server", boot, "--offset-json-file", str(plan_file)).stdout
    assert re.search(rf"partition: {re.escape(topic_name)}-0\s+low_watermark: 5", deleted), deleted
    starts = tool(jars, "GetOffsetShell", "--bootstrap-server", boot, "--topic", topic_name, "--partitions", "0", "--time", "-2").stdout
    assert starts.split() == [f"{topic_name}:0:5"], starts

    tool(jars, "consumer.group.ConsumerGroupCommand", "--bootstrap-server", boot, "--delete", "--group", group)
    assert group not in tool(jars, "consumer.group.ConsumerGroupCommand", "--bootstrap-server", boot, "--list").stdout.split()
    tool(jars, "TopicCommand", "--bootstrap-server", boot, "--alter", "--topic", topic_name, "--partitions", "4")
    assert describe_topic(jars, boot, topic_name)[0]["PartitionCount"] == "4"
    tool(jars, "TopicCommand", "--bootstrap-server", boot, "--delete", "--topic", topic_name)
    assert topic_name not in tool(jars, "TopicCommand", "--bootstrap-server", boot, "--list").stdout.split()


def group_offsets(jars: str, boot: str, group: str) -> dict[int, tuple[int, int, int]]:
    """`kafka-consumer-groups --describe`: partition -> (current offset, log end, lag)."""
    out = tool(jars, "consumer.group.ConsumerGroupCommand", "--bootstrap-server", boot, "--describe", "--group", group).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    header = next(r for r in rows if "CURRENT-OFFSET" in r)
    col = {name: i for i, name in enumerate(header)}
    found = {}
    for r in rows:
        if r is header or len(r) < len(header) or r[col["GROUP"]] != group:
            continue
        found[int(r[col["PARTITION"]])] = (int(r[col["CURRENT-OFFSET"]]), int(r[col["LOG-END-OFFSET"]]), int(r[col["LAG"]]))
    return found


@pytest.mark.timeout_s(300)
def test_producer_and_consumer_perf_tools(broker, kafka_jars, topic_name):
    boot = broker.bootstrap
    out = tool(kafka_jars, "ProducerPerformance", "--topic", topic_name, "--num-records", "20000", "--record-size", "100",
               "--throughput", "-1", "--producer-props", f"bootstrap.servers={boot}", "acks=all").stdout
    assert re.search(r"^20000 records sent, ", out, re.M), out
    out = tool(kafka_jars, "ConsumerPerformance", "--bootstrap-server", boot, "--topic", topic_name,
               "--num-records", "20000", "--timeout", "30000").stdout
    header, values = [line for line in out.splitlines() if line.strip()][-2:]
    row = dict(zip((h.strip() for h in header.split(",")), (v.strip() for v in values.split(","))))
    assert row["data.consumed.in.nMsg"] == "20000", row
    assert float(row["data.consumed.in.MB"]) == pytest.approx(20000 * 100 / (1024 * 1024), rel=0.01), row
