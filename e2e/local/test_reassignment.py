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
import re
import shutil
import subprocess
import threading
import time

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


def start_move_to_a_stopped_broker(cluster: Cluster, topic: str, tool, tmp_path) -> tuple[list[int], list[int], int]:
    """Partition 0 of an RF 3 topic with 100 acknowledged records is moved onto the spare
    broker, which is SIGSTOPped first so the move cannot complete. Returns (the replicas
    before, the target, the spare), once Metadata shows the spare added."""
    create_replicated_topic(cluster, topic, 1, 3, {"min.insync.replicas": "2"})
    leader, replicas, _ = partition_states(cluster, topic)[0]
    spare = next(b.node_id for b in cluster.brokers if b.node_id not in replicas)
    reports = produce_all(producer(cluster.bootstrap(), acks="all"), topic, [{"partition": 0, "value": f"v{i}".encode()} for i in range(100)])
    assert all(err is None for err, _ in reports)
    target = [spare] + [r for r in replicas if r != leader]
    cluster.pause(spare)
    plan = tmp_path / "move.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [{"topic": topic, "partition": 0, "replicas": target}]}))
    tool("--reassignment-json-file", str(plan), "--execute")
    running = [n for n in cluster.brokers if n.node_id != spare]
    wait_until(
        lambda: partition_states(cluster, topic, via=running[0])[0][1] == target + [leader],
        30,
        "the spare added to the replicas, the leaving leader listed last",
    )
    listed = tool("--list")
    assert f"{topic}-0" in listed, listed
    return replicas, target, spare


@pytest.mark.timeout_s(150)
def test_a_reassignment_cancelled_half_way_reverts(cluster_factory, topic_name, tool_classpath, command_config, tmp_path):  # noqa: F811
    """A move whose new replica cannot catch up (SIGSTOPped) is cancelled with
    `--cancel`: the partition is back on its replicas and ISR from before, nothing is in
    progress, the records are all there, and the would-be replica drops what it had."""
    cluster = cluster_factory.start(controllers=1, brokers=4)
    tool = lambda *args: reassign(tool_classpath, command_config, cluster.bootstrap(nodes=[b for b in cluster.brokers if not b.paused]), *args)  # noqa: E731
    before, _, spare = start_move_to_a_stopped_broker(cluster, topic_name, tool, tmp_path)
    try:
        tool("--reassignment-json-file", str(tmp_path / "move.json"), "--cancel", "--preserve-throttles")
        wait_until(
            lambda: (s := partition_states(cluster, topic_name, via=before[0])[0])[1] == before and sorted(s[2]) == sorted(before),
            30,
            f"partition 0 back on {before}",
        )
        assert "No partition reassignments found" in tool("--list")
    finally:
        cluster.resume(spare)
    gone = cluster.nodes[spare].data_dir / f"{topic_name}-0"
    wait_until(lambda: not gone.exists(), 30, f"broker {spare} dropping the copy it began")
    values = [r.value for r in read_partition(cluster.bootstrap(), topic_name, 0, timeout_s=30)]
    assert values == [f"v{i}".encode() for i in range(100)]


@pytest.mark.timeout_s(180)
def test_a_reassignment_survives_the_active_controller_being_killed(cluster_factory, topic_name, tool_classpath, command_config, tmp_path):  # noqa: F811
    """Mid-move (the new replica SIGSTOPped), the active controller is killed with
    kill -9: the move is state in the metadata log, so once the new replica resumes the
    new active controller completes it."""
    cluster = cluster_factory.start(controllers=3, brokers=4)
    tool = lambda *args: reassign(tool_classpath, command_config, cluster.bootstrap(nodes=[b for b in cluster.brokers if not b.paused]), *args)  # noqa: E731
    _, target, spare = start_move_to_a_stopped_broker(cluster, topic_name, tool, tmp_path)
    old = cluster.active_controller().leader_id
    cluster.kill(old)
    cluster.active_controller(timeout_s=20, exclude=[old])
    cluster.resume(spare)
    wait_until(
        lambda: (s := partition_states(cluster, topic_name)[0])[1] == target and sorted(s[2]) == sorted(target),
        60,
        f"the move to {target} completed by the new active controller",
    )
    values = [r.value for r in read_partition(cluster.bootstrap(), topic_name, 0, timeout_s=30)]
    assert values == [f"v{i}".encode() for i in range(100)]


def replica_size(cluster: Cluster, node_id: int, topic: str, partition: int) -> int:
    d = cluster.nodes[node_id].data_dir / f"{topic}-{partition}"
    return sum(p.stat().st_size for p in d.glob("*.log")) if d.exists() else 0


def dynamic_broker_configs(bootstrap: str, broker_ids: list[int]) -> dict[int, dict[str, str]]:
    """Each broker's dynamic broker configs (source DYNAMIC_BROKER_CONFIG)."""
    from confluent_kafka.admin import ConfigResource, ConfigSource
    from support import admin

    out = {}
    for b in broker_ids:
        res = ConfigResource(ConfigResource.Type.BROKER, str(b))
        entries = admin(bootstrap).describe_configs([res])[res].result(timeout=15)
        out[b] = {k: e.value for k, e in entries.items() if e.source == ConfigSource.DYNAMIC_BROKER_CONFIG.value}
    return out


@pytest.mark.timeout_s(240)
def test_a_throttled_move_is_bounded_by_its_rate_never_slows_acks_all_and_finishes_once_lifted(
    cluster_factory, topic_name, tool_classpath, command_config, tmp_path  # noqa: F811
):
    """kafka-reassign-partitions --throttle 500000 moves a ~6 MB partition onto a fourth
    broker: the tool sets the brokers' leader/follower.replication.throttled.rate and the
    topic's throttled replicas; the new replica then grows at about the throttle (sampled
    over several seconds, bounded well below what an unthrottled loopback move does),
    while acks=all produces to the same partition are answered as usual (in-sync
    replication is never throttled). Lifting the rates (IncrementalAlterConfigs DELETE on
    the broker resources, from confluent-kafka) lets the move finish; --verify then clears
    every throttle, and the replicas hold identical bytes."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
    from support import admin

    rate = 500_000
    cluster = cluster_factory.start(controllers=1, brokers=4)
    topic = topic_name
    create_replicated_topic(cluster, topic, 1, 3, {"min.insync.replicas": "2"})
    leader, replicas, _ = partition_states(cluster, topic)[0]
    spare = next(b.node_id for b in cluster.brokers if b.node_id not in replicas)
    bootstrap = cluster.bootstrap()
    payload = b"x" * 1000
    reports = produce_all(
        producer(bootstrap, acks="all", **{"linger.ms": 20}), topic, [{"partition": 0, "value": payload} for _ in range(6000)]
    )
    assert all(err is None for err, _ in reports)
    full = replica_size(cluster, leader, topic, 0)
    assert full > 5_000_000

    target = [spare] + [r for r in replicas if r != leader]
    plan = tmp_path / "throttled.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [{"topic": topic, "partition": 0, "replicas": target}]}))
    out = reassign(tool_classpath, command_config, bootstrap, "--reassignment-json-file", str(plan), "--execute", "--throttle", str(rate))
    assert "Successfully started partition reassignment" in out, out
    brokers = sorted(b.node_id for b in cluster.brokers)
    configs = dynamic_broker_configs(bootstrap, brokers)
    for b in set(replicas) | {spare}:
        assert configs[b].get("leader.replication.throttled.rate") == str(rate), configs
        assert configs[b].get("follower.replication.throttled.rate") == str(rate), configs

    # The new replica's growth over a few seconds, measured once it has started.
    wait_until(lambda: replica_size(cluster, spare, topic, 0) > 0, 20, "the new replica starting to copy")
    t0, s0 = time.monotonic(), replica_size(cluster, spare, topic, 0)
    # acks=all meanwhile: the in-sync replicas are not throttled.
    started = time.monotonic()
    more = produce_all(producer(bootstrap, acks="all"), topic, [{"partition": 0, "value": f"during {i}".encode()} for i in range(50)])
    produce_s = time.monotonic() - started
    assert all(err is None for err, _ in more), more[:3]
    time.sleep(max(0.0, 4.0 - (time.monotonic() - t0)))
    t1, s1 = time.monotonic(), replica_size(cluster, spare, topic, 0)
    observed = (s1 - s0) / (t1 - t0)
    assert s1 < full, "the throttled move finished within seconds"
    # One bucket's worth (a second of the rate) and one fetch (replica.fetch.max.bytes)
    # may come at once; beyond that the rate holds.
    assert observed < 3 * rate, f"the new replica grew {observed:.0f} B/s under a {rate} B/s throttle"
    assert produce_s < 10, f"50 acks=all produces took {produce_s:.1f} s during the throttled move"
    metrics = cluster.node(leader).metrics()
    assert re.search(r'^strom_replication_throttled_bytes_total\{side="leader"\} [1-9]', metrics, re.M), metrics[:3000]

    # Lift the throttle: the move completes.
    lift = []
    for b in brokers:
        res = ConfigResource(
            ConfigResource.Type.BROKER,
            str(b),
            incremental_configs=[
                ConfigEntry("leader.replication.throttled.rate", None, incremental_operation=AlterConfigOpType.DELETE),
                ConfigEntry("follower.replication.throttled.rate", None, incremental_operation=AlterConfigOpType.DELETE),
            ],
        )
        lift.append(res)
    # librdkafka sends a BROKER resource to that broker: one per call.
    for res in lift:
        for fut in admin(bootstrap).incremental_alter_configs([res]).values():
            fut.result(timeout=15)

    def moved():
        leader_now, replicas_now, isr_now = partition_states(cluster, topic)[0]
        return replicas_now == target and sorted(isr_now) == sorted(target)

    wait_until(moved, MOVE_DEADLINE_S, f"the move to {target} finishing once the throttle is lifted")
    verified = reassign(tool_classpath, command_config, bootstrap, "--reassignment-json-file", str(plan), "--verify")
    assert "Clearing" in verified and "throttle" in verified, verified
    topic_cfg = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin(bootstrap).describe_configs([topic_cfg])[topic_cfg].result(timeout=15)
    assert entries["leader.replication.throttled.replicas"].value == "", entries["leader.replication.throttled.replicas"]
    assert entries["follower.replication.throttled.replicas"].value == ""
    wait_until(
        lambda: len({replica_log_bytes(cluster, r, topic, 0) for r in target}) == 1,
        30,
        "identical bytes on every replica of the new set",
    )


@pytest.mark.timeout_s(200)
def test_a_move_whose_source_leader_is_killed_mid_way_completes_once_it_returns(
    cluster_factory, topic_name, tool_classpath, command_config, tmp_path  # noqa: F811
):
    """A throttled move (so it is still copying) off the partition's leader: the leader is
    killed with kill -9 mid-move. Leadership passes to an in-sync replica, the new replica
    goes on copying from it, acks=all keeps working; the old leader restarts, the throttle
    is lifted, and the move completes with every acknowledged record on every replica."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
    from support import admin

    cluster = cluster_factory.start(controllers=1, brokers=4)
    topic = topic_name
    create_replicated_topic(cluster, topic, 1, 3, {"min.insync.replicas": "2"})
    leader, replicas, _ = partition_states(cluster, topic)[0]
    spare = next(b.node_id for b in cluster.brokers if b.node_id not in replicas)
    before = produce_all(
        producer(cluster.bootstrap(), acks="all", **{"linger.ms": 20}),
        topic,
        [{"partition": 0, "value": f"before {i}".encode() * 40} for i in range(4000)],
    )
    assert all(err is None for err, _ in before)
    target = [spare] + [r for r in replicas if r != leader]
    plan = tmp_path / "move.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [{"topic": topic, "partition": 0, "replicas": target}]}))
    reassign(tool_classpath, command_config, cluster.bootstrap(), "--reassignment-json-file", str(plan), "--execute", "--throttle", "200000")
    wait_until(lambda: replica_size(cluster, spare, topic, 0) > 0, 20, "the new replica copying")

    cluster.kill(leader)
    survivors = [b for b in cluster.brokers if b.node_id != leader]
    wait_until(
        lambda: (s := partition_states(cluster, topic, via=survivors[0])[0])[0] not in (-1, leader),
        30,
        "a new leader among the in-sync replicas",
    )
    during = produce_all(
        producer(cluster.bootstrap(nodes=survivors), acks="all"),
        topic,
        [{"partition": 0, "value": f"during {i}".encode()} for i in range(100)],
    )
    assert all(err is None for err, _ in during), during[:3]
    assert partition_states(cluster, topic, via=survivors[0])[0][1] != target, "the throttled move finished before the kill"
    cluster.start_node(leader)
    for b in sorted(n.node_id for n in cluster.brokers):
        res = ConfigResource(
            ConfigResource.Type.BROKER,
            str(b),
            incremental_configs=[
                ConfigEntry(name, None, incremental_operation=AlterConfigOpType.DELETE)
                for name in ("leader.replication.throttled.rate", "follower.replication.throttled.rate")
            ],
        )
        for fut in admin(cluster.bootstrap()).incremental_alter_configs([res]).values():
            fut.result(timeout=15)
    wait_until(
        lambda: (s := partition_states(cluster, topic)[0])[1] == target and sorted(s[2]) == sorted(target),
        MOVE_DEADLINE_S,
        f"the move to {target} completing",
    )
    acked = {m.offset(): m.value() for _, m in before + during}
    stored = {r.offset: r.value for r in read_partition(cluster.bootstrap(), topic, 0, timeout_s=30)}
    lost = {o for o, v in acked.items() if stored.get(o) != v}
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged records lost"
    wait_until(
        lambda: len({replica_log_bytes(cluster, r, topic, 0) for r in target}) == 1,
        30,
        "identical bytes on every replica of the new set",
    )
