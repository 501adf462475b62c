"""Fetch from the nearest replica (issue 12, KIP-392): brokers in three racks with
`replica.selector.class` set to Kafka's RackAwareReplicaSelector; a confluent-kafka
consumer naming its `client.rack` is sent by the leader (`preferred_read_replica`) to the
replica in its rack and reads there (the follower's `strom_consumer_fetched_bytes`
counter, role follower, grows; the leader's does not), and keeps consuming every record
when that follower is killed (librdkafka returns to the leader)."""

from __future__ import annotations

import re
import time

import pytest

from cluster import Cluster, wait_until
from support import consumer, produce_all, producer
from test_replication import create_replicated_topic, partition_states

pytestmark = pytest.mark.cluster

RACK_AWARE = "org.apache.kafka.common.replica.RackAwareReplicaSelector"


def consumer_fetched(cluster: Cluster, node_id: int, role: str) -> float:
    """strom_consumer_fetched_bytes_total{replica=role} of one broker."""
    text = cluster.node(node_id).metrics()
    m = re.search(r'^strom_consumer_fetched_bytes_total\{replica="' + role + r'"\} (\S+)$', text, re.M)
    assert m, "no consumer_fetched_bytes counter in /metrics:\n" + text[:2000]
    return float(m.group(1))


def consume_count(c, want: int, timeout_s: float) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is None or msg.error():
            continue
        got.append(msg.value())
    return got


@pytest.mark.timeout_s(150)
def test_a_consumer_with_client_rack_reads_from_the_replica_in_its_rack_and_survives_its_death(
    cluster_factory, topic_name
):
    cluster = cluster_factory.start(controllers=1, brokers=3, props={"replica.selector.class": RACK_AWARE})
    topic = topic_name
    create_replicated_topic(cluster, topic, 1, 3, {"min.insync.replicas": "1"})
    leader, replicas, _ = partition_states(cluster, topic)[0]
    near = next(r for r in replicas if r != leader)
    rack = cluster.node(near).rack
    assert rack and rack != cluster.node(leader).rack

    first = [{"value": f"near {i}".encode() * 20} for i in range(400)]
    produce_all(producer(cluster.bootstrap(), acks="all"), topic, first)
    leader_before = consumer_fetched(cluster, leader, "leader")

    c = consumer(
        cluster.bootstrap(),
        **{"group.id": f"{topic}-near", "client.rack": rack, "auto.offset.reset": "earliest", "enable.auto.commit": False},
    )
    try:
        c.subscribe([topic])
        got = consume_count(c, len(first), 40.0)
        assert got == [r["value"] for r in first]
        served_by_near = consumer_fetched(cluster, near, "follower")
        assert served_by_near >= sum(len(r["value"]) for r in first), (
            f"broker {near} in rack {rack} served {served_by_near} bytes to consumers as follower"
        )
        # The leader answered with the preferred replica, not with data (a first fetch
        # before the consumer knew its rack's replica may have read a little).
        assert consumer_fetched(cluster, leader, "leader") - leader_before < served_by_near

        cluster.kill(near)
        second = [{"value": f"after {i}".encode()} for i in range(200)]
        produce_all(producer(cluster.bootstrap(), acks="all"), topic, second)
        rest = consume_count(c, len(second), 60.0)
        assert rest == [r["value"] for r in second], (
            f"{len(rest)} of {len(second)} records read after the near replica died"
        )
        wait_until(lambda: consumer_fetched(cluster, leader, "leader") > leader_before, 10.0, "the leader serving reads")
    finally:
        c.close()


def test_without_the_rack_aware_selector_consumers_read_from_the_leader(cluster_factory, topic_name):
    """The default selector: a consumer's client.rack changes nothing, every byte comes
    from the leader."""
    cluster = cluster_factory.start(controllers=1, brokers=3)
    topic = topic_name
    create_replicated_topic(cluster, topic, 1, 3, {})
    leader, replicas, _ = partition_states(cluster, topic)[0]
    near = next(r for r in replicas if r != leader)
    records = [{"value": f"leader {i}".encode()} for i in range(100)]
    produce_all(producer(cluster.bootstrap(), acks="all"), topic, records)
    c = consumer(
        cluster.bootstrap(),
        **{"group.id": f"{topic}-g", "client.rack": cluster.node(near).rack, "auto.offset.reset": "earliest"},
    )
    try:
        c.subscribe([topic])
        assert consume_count(c, len(records), 30.0) == [r["value"] for r in records]
    finally:
        c.close()
    assert consumer_fetched(cluster, near, "follower") == 0
    assert consumer_fetched(cluster, leader, "leader") > 0
