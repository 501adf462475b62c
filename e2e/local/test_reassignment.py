"""Partition reassignment (issue 12, KIP-455) driven by Apache Kafka's own
`kafka-reassign-partitions` (org.apache.kafka.tools.reassign.ReassignPartitionsCommand, the
kafka-tools jar of e2e/java) against a Strom cluster: `--execute` sends
AlterPartitionReassignments to a broker (which forwards it to the active controller); the
controller adds the new replicas at once, waits until they are in the ISR, moves
leadership off a departing leader and drops the departing replicas. `--list` reads
ListPartitionReassignments. Everything acknowledged before and during the move is still
there afterwards, on every replica of the new set.

Skipped only when no `java` is on PATH (as test_kafka_tools.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading

import pytest

from cluster import Cluster, wait_until
from support import produce_all, producer, read_partition
from test_kafka_tools import JVM_FLAGS, TOOL_TIMEOUT_S, command_config, tool_classpath  # noqa: F401
from test_replication import create_replicated_topic, partition_states, replica_log_bytes

TOOL_CLASS = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"
MOVE_DEADLINE_S = 60.0

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(shutil.which("java") is None, reason="java is not on PATH: Kafka's tools need a JDK 17+"),
]


def reassign(classpath: str, config, bootstrap: str, *args: str) -> str:
    cmd = ["java", *JVM_FLAGS, "-cp", classpath, TOOL_CLASS, "--bootstrap-server", bootstrap, "--command-config", str(config), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    assert proc.returncode == 0, f"kafka-reassign-partitions {' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return proc.stdout


@pytest.mark.timeout_s(180)
def test_kafka_reassign_partitions_moves_a_partition_and_its_leader_under_load(
    cluster_factory, topic_name, tool_classpath, command_config, tmp_path  # noqa: F811
):
    """RF 3 over four brokers: partition 0 moves off its leader onto the fourth broker
    while a producer writes acks=all. The move completes (replicas and ISR are the target,
    the leader one of them), the departing broker drops its copy, every acknowledged
    record is at its offset, and the new replicas hold identical bytes."""
    cluster = cluster_factory.start(controllers=1, brokers=4)
    topic = topic_name
    create_replicated_topic(cluster, topic, 1, 3, {"min.insync.replicas": "2"})
    leader, replicas, _ = partition_states(cluster, topic)[0]
    spare = next(b.node_id for b in cluster.brokers if b.node_id not in replicas)
    target = [spare] + [r for r in replicas if r != leader]
    bootstrap = cluster.bootstrap()

    acked: dict[int, bytes] = {}
    failures: list = []
    stop = threading.Event()

    def produce_loop():
        prod = producer(bootstrap, acks="all", **{"message.timeout.ms": 60000})
        i = 0

        def report(value):
            def cb(err, msg):
                if err is not None:
                    failures.append(str(err))
                elif acked.setdefault(msg.offset(), value) != value:
                    failures.append(("one offset acknowledged twice", msg.offset()))

            return cb

        while not stop.is_set():
            value = f"moving {i}".encode()
            try:
                prod.produce(topic, value, partition=0, on_delivery=report(value))
                i += 1
            except BufferError:
                pass
            prod.poll(0.005)
        prod.flush(60)

    writer = threading.Thread(target=produce_loop)
    writer.start()
    try:
        wait_until(lambda: len(acked) >= 200, 30, "the producer under way")
        plan = tmp_path / "reassignment.json"
        plan.write_text(json.dumps({"version": 1, "partitions": [{"topic": topic, "partition": 0, "replicas": target}]}))
        out = reassign(tool_classpath, command_config, bootstrap, "--reassignment-json-file", str(plan), "--execute")
        assert "Successfully started partition reassignment" in out, out

        def moved():
            leader_now, replicas_now, isr_now = partition_states(cluster, topic)[0]
            done = replicas_now == target and sorted(isr_now) == sorted(target) and leader_now in target
            return (leader_now, replicas_now) if done else None

        new_leader, _ = wait_until(moved, MOVE_DEADLINE_S, f"partition 0 moved to {target}")
        listed = reassign(tool_classpath, command_config, bootstrap, "--list")
        assert "No partition reassignments found" in listed, listed
        count = len(acked)
        wait_until(lambda: len(acked) >= count + 200, 30, "the producer going on after the move")
    finally:
        stop.set()
        writer.join(90)
    assert not failures, failures[:5]
    assert new_leader != leader
    records = read_partition(cluster.bootstrap(), topic, 0, timeout_s=30)
    stored = {r.offset: r.value for r in records}
    lost = {o: v for o, v in acked.items() if stored.get(o) != v}
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged records lost or changed: {sorted(lost.items())[:3]}"
    assert [r.offset for r in records] == list(range(len(records))), "offsets not dense"
    wait_until(
        lambda: len({replica_log_bytes(cluster, r, topic, 0) for r in target}) == 1,
        30,
        "identical bytes on every replica of the new set",
    )
    gone = cluster.nodes[leader].data_dir / f"{topic}-0"
    wait_until(lambda: not gone.exists(), 30, f"broker {leader} dropping its copy of {topic}-0")


def test_a_bad_reassignment_is_refused_with_kafkas_error(cluster_factory, topic_name, tool_classpath, command_config, tmp_path):  # noqa: F811
    """A target naming a broker that does not exist: the tool reports Kafka's
    INVALID_REPLICA_ASSIGNMENT message and nothing changes."""
    cluster = cluster_factory.start(controllers=1, brokers=3)
    create_replicated_topic(cluster, topic_name, 1, 3, {})
    before = partition_states(cluster, topic_name)[0]
    plan = tmp_path / "bad.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [{"topic": topic_name, "partition": 0, "replicas": [21, 22, 99]}]}))
    cmd = ["java", *JVM_FLAGS, "-cp", tool_classpath, TOOL_CLASS, "--bootstrap-server", cluster.bootstrap(),
           "--command-config", str(command_config), "--reassignment-json-file", str(plan), "--execute"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    assert proc.returncode != 0, proc.stdout
    assert "99" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert partition_states(cluster, topic_name)[0] == before
