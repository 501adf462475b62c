"""Partition replication (issue 11) with the real binary and real clients: followers
fetch from their leader, acks=all is answered once every in-sync replica has the batch,
and the controller moves leadership to an in-sync follower when a leader dies, so
nothing acknowledged is lost.

Every test is marked `cluster`: `pytest e2e/local -m cluster` runs only these.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka.admin import NewTopic

from cluster import Cluster, wait_until
from support import admin, produce_all, producer, read_partition

pytestmark = pytest.mark.cluster

CLIENT_TIMEOUT_S = 30.0


def create_replicated_topic(cluster: Cluster, topic: str, partitions: int, rf: int, config: dict[str, str]) -> None:
    futures = admin(cluster.bootstrap()).create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=rf, config=config)], request_timeout=10
    )
    futures[topic].result(timeout=15)
    wait_until(lambda: fully_replicated(cluster, topic, partitions, rf), CLIENT_TIMEOUT_S, f"{topic} led with {rf} replicas")


def partition_states(cluster: Cluster, topic: str, via=None) -> dict[int, tuple[int, list[int], list[int]]]:
    """partition -> (leader, replicas, isr) as one running broker's Metadata says."""
    md = cluster.metadata(via=via, topics=[topic])
    t = md.topics[topic]
    return {p.partition: (p.leader, list(p.replicas), list(p.isr)) for p in t.partitions}


def fully_replicated(cluster: Cluster, topic: str, partitions: int, rf: int):
    states = partition_states(cluster, topic)
    if len(states) != partitions:
        return None
    for leader, replicas, isr in states.values():
        if leader < 0 or len(replicas) != rf or len(isr) != rf:
            return None
    return states


def produce_acked(bootstrap: str, topic: str, partitions: int, per_partition: int, tag: str, **conf) -> dict[int, dict[int, bytes]]:
    """acks=all records to every partition; every one must be acknowledged. Returns
    partition -> {offset: value} as the acknowledgements said."""
    records = [
        {"partition": p, "value": f"{tag} {p}/{i}".encode()} for i in range(per_partition) for p in range(partitions)
    ]
    prod = producer(bootstrap, acks="all", **conf)
    reports = produce_all(prod, topic, records, timeout_s=CLIENT_TIMEOUT_S)
    errors = [err for err, _ in reports if err is not None]
    assert not errors, f"{len(errors)} records not acknowledged: {errors[:3]}"
    acked: dict[int, dict[int, bytes]] = {p: {} for p in range(partitions)}
    for rec, (_, msg) in zip(records, reports):
        acked[msg.partition()][msg.offset()] = rec["value"]
    return acked


@pytest.mark.timeout_s(240)
def test_acknowledged_records_survive_repeated_leader_kills(cluster_factory, topic_name):
    """RF 3, min.insync.replicas 2, three brokers. Five rounds: confluent-kafka (idempotent)
    produces acks=all to every partition, then the leader of partition 0 is killed with
    kill -9; a follower that was in sync becomes leader, and the killed
    broker restarts and catches up. Afterwards every acknowledged record is at its
    acknowledged offset, offsets are dense, and nothing is duplicated — read through
    whichever replica leads after five leadership changes."""
    cluster = cluster_factory.start(controllers=1, brokers=3)
    topic = topic_name
    partitions = 3
    create_replicated_topic(cluster, topic, partitions, 3, {"min.insync.replicas": "2"})
    acked: dict[int, dict[int, bytes]] = {p: {} for p in range(partitions)}
    for round_ in range(5):
        got = produce_acked(cluster.bootstrap(running_only=True), topic, partitions, 100, f"r{round_}", enable_idempotence=True)
        for p, offsets in got.items():
            overlap = set(offsets) & set(acked[p])
            assert not overlap, f"offsets acknowledged twice in partition {p}: {sorted(overlap)[:5]}"
            acked[p].update(offsets)
        leader, _, isr = partition_states(cluster, topic)[0]
        cluster.kill(leader)

        def moved():
            states = partition_states(cluster, topic, via=next(b for b in cluster.brokers if b.running() and b.node_id != leader))
            new_leader = states[0][0]
            return new_leader if new_leader not in (-1, leader) else None

        new_leader = wait_until(moved, CLIENT_TIMEOUT_S, f"partition 0 led by an in-sync follower after {leader} died")
        assert new_leader in isr, f"new leader {new_leader} was not in the ISR {isr}"
        cluster.start_node(leader)
    wait_until(lambda: fully_replicated(cluster, topic, partitions, 3), CLIENT_TIMEOUT_S, "every replica back in sync")
    bootstrap = cluster.bootstrap(running_only=True)
    for p in range(partitions):
        records = read_partition(bootstrap, topic, p, timeout_s=CLIENT_TIMEOUT_S)
        offsets = [r.offset for r in records]
        assert offsets == list(range(len(offsets))), f"partition {p}: offsets not dense"
        stored = {r.offset: r.value for r in records}
        missing = {o: v for o, v in acked[p].items() if stored.get(o) != v}
        assert not missing, f"partition {p}: {len(missing)} acknowledged records lost or changed, e.g. {list(missing.items())[:3]}"
        assert len(stored) == len(acked[p]), f"partition {p}: {len(stored)} stored, {len(acked[p])} acknowledged"


@pytest.mark.timeout_s(120)
def test_acks_all_waits_for_every_in_sync_replica(cluster_factory, topic_name):
    """With one follower stopped (SIGSTOP) and the ISR unchanged, an acks=all produce is
    not acknowledged (the follower cannot have the batch); acks=1 is. After SIGCONT the
    waiting produce is acknowledged."""
    cluster = cluster_factory.start(controllers=1, brokers=3)
    topic = topic_name
    create_replicated_topic(cluster, topic, 1, 3, {})
    leader, replicas, _ = partition_states(cluster, topic)[0]
    follower = next(r for r in replicas if r != leader)
    cluster.pause(follower)
    try:
        slow = producer(cluster.nodes[leader].bootstrap, acks="all", **{"message.timeout.ms": 60000})
        reports: list = []
        slow.produce(topic, b"needs every replica", partition=0, on_delivery=lambda err, msg: reports.append((err, msg)))
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            slow.poll(0.1)
        assert reports == [], "acks=all answered while an in-sync follower was stopped"
        quick = produce_all(producer(cluster.nodes[leader].bootstrap, acks="1"), topic, [{"partition": 0, "value": b"leader only"}])
        assert quick[0][0] is None, f"acks=1 failed: {quick[0][0]}"
    finally:
        cluster.resume(follower)
    wait_until(lambda: slow.poll(0.1) is not None and reports, CLIENT_TIMEOUT_S, "the acks=all produce acknowledged")
    assert reports[0][0] is None, f"acks=all failed after the follower resumed: {reports[0][0]}"
