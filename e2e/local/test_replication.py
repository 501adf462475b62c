"""Partition replication (issue 11) with the real binary and real clients: followers
fetch from their leader, acks=all is answered once every in-sync replica has the batch,
and the controller moves leadership to an in-sync follower when a leader dies, so
nothing acknowledged is lost.

Every test is marked `cluster`: `pytest e2e/local -m cluster` runs only these.
"""

from __future__ import annotations

import collections
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


def gauges(text: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            out[name] = float(value.split()[0])
    return out


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
    """With one follower stopped (SIGSTOP) but still in the ISR (well within
    replica.lag.time.max.ms and its session), an acks=all produce is not acknowledged (the
    follower cannot have the batch); acks=1 is. After SIGCONT the waiting produce is
    acknowledged."""
    from cluster import Timeouts

    cluster = cluster_factory.start(controllers=1, brokers=3, timeouts=Timeouts(session_ms=30000, heartbeat_ms=500))
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
        metrics = gauges(cluster.nodes[leader].metrics())
        assert metrics["strom_leader_partitions"] >= 1
        assert metrics["strom_replica_max_lag"] >= 1, "the stopped follower's lag is not shown"
        assert metrics["strom_under_replicated_partitions"] == 0, "the ISR shrank within the lag time"
    finally:
        cluster.resume(follower)
    wait_until(lambda: slow.poll(0.1) is not None and reports, CLIENT_TIMEOUT_S, "the acks=all produce acknowledged")
    assert reports[0][0] is None, f"acks=all failed after the follower resumed: {reports[0][0]}"


def produce_acks1(bootstrap: str, topic: str, count: int, tag: str) -> dict[int, bytes]:
    """acks=1 records to partition 0, every one acknowledged; offset -> value."""
    records = [{"partition": 0, "value": f"{tag} {i}".encode()} for i in range(count)]
    reports = produce_all(producer(bootstrap, acks="1"), topic, records, timeout_s=CLIENT_TIMEOUT_S)
    errors = [err for err, _ in reports if err is not None]
    assert not errors, f"{len(errors)} acks=1 records not acknowledged: {errors[:3]}"
    return {msg.offset(): rec["value"] for rec, (_, msg) in zip(records, reports)}


def assert_all_there(cluster: Cluster, topic: str, acked: dict[int, bytes]) -> None:
    """Every acknowledged record of partition 0 is at its offset, read through the leader,
    and every replica holds the same bytes."""
    records = read_partition(cluster.bootstrap(running_only=True), topic, 0, timeout_s=CLIENT_TIMEOUT_S)
    stored = {r.offset: r.value for r in records}
    lost = {o: v for o, v in acked.items() if stored.get(o) != v}
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged records lost or changed: {sorted(lost.items())[:3]}"
    wait_until(
        lambda: len({replica_log_bytes(cluster, b.node_id, topic, 0) for b in cluster.brokers}) == 1,
        CLIENT_TIMEOUT_S,
        "identical bytes on every replica",
    )


def strand_the_leader_and_kill_it(cluster: Cluster, topic: str) -> tuple[int, list[int], dict[int, bytes], dict[int, bytes]]:
    """Partition 0 of an RF 3 topic: writes 20 acks=all records, stops both followers
    until the controller fences them (the ISR is then the leader alone), writes 50 acks=1
    records only the leader has, kills the leader with kill -9 and resumes the followers.
    Returns (leader, followers, the records every replica has, those only the leader had)."""
    leader, replicas, _ = partition_states(cluster, topic)[0]
    followers = [r for r in replicas if r != leader]
    everywhere = produce_acked(cluster.nodes[leader].bootstrap, topic, 1, 20, "all in sync")[0]
    for r in followers:
        cluster.pause(r)
    try:
        wait_until(
            lambda: partition_states(cluster, topic, via=leader)[0][2] == [leader],
            20,
            "the fenced followers out of the ISR",
        )
        alone = produce_acks1(cluster.nodes[leader].bootstrap, topic, 50, "only on the old leader")
        cluster.kill(leader)
    finally:
        for r in followers:
            cluster.resume(r)
    return leader, followers, everywhere, alone


@pytest.mark.timeout_s(180)
def test_a_stopped_follower_leaves_the_isr_after_the_lag_time_and_rejoins_once_caught_up(cluster_factory, topic_name):
    """replica.lag.time.max.ms 2 s and sessions long enough that nothing is fenced: the
    leader itself takes a SIGSTOPped follower out of the ISR (AlterPartition to the
    controller), so acks=all is answered again with two in sync. With both followers
    stopped the ISR is the leader alone, below min.insync.replicas 2: acks=all is refused
    with NOT_ENOUGH_REPLICAS while acks=1 still works. After SIGCONT both catch up and
    rejoin, and every acknowledged record is on every replica, byte for byte."""
    from confluent_kafka import KafkaError

    from cluster import Timeouts

    cluster = cluster_factory.start(
        controllers=1,
        brokers=3,
        timeouts=Timeouts(session_ms=60000, heartbeat_ms=500),
        props={"replica.lag.time.max.ms": 2000},
    )
    topic = topic_name
    create_replicated_topic(cluster, topic, 1, 3, {"min.insync.replicas": "2"})
    leader, replicas, _ = partition_states(cluster, topic)[0]
    a, b = [r for r in replicas if r != leader]
    via_leader = cluster.nodes[leader].bootstrap
    acked = produce_acked(via_leader, topic, 1, 20, "all in sync")[0]
    cluster.pause(a)
    paused = [a]
    try:
        acked.update(produce_acked(via_leader, topic, 1, 20, "one stopped", **{"message.timeout.ms": 30000})[0])
        isr = partition_states(cluster, topic, via=leader)[0][2]
        assert sorted(isr) == sorted([leader, b]), f"ISR {isr} once {a} was stopped"
        metrics = gauges(cluster.nodes[leader].metrics())
        assert metrics["strom_under_replicated_partitions"] == 1
        assert metrics["strom_under_min_isr_partitions"] == 0
        cluster.pause(b)
        paused.append(b)
        # A follower with everything the leader has is in sync however long it is silent
        # (Kafka's rule): only new data makes the stopped one fall behind.
        acked.update(produce_acks1(via_leader, topic, 30, "leader alone"))
        wait_until(
            lambda: partition_states(cluster, topic, via=leader)[0][2] == [leader], 20, "the ISR shrunk to the leader"
        )
        refused = produce_all(producer(via_leader, acks="all", retries=0), topic, [{"partition": 0, "value": b"refused"}])
        err = refused[0][0]
        assert err is not None and err.code() == KafkaError.NOT_ENOUGH_REPLICAS, f"acks=all below min.insync.replicas: {err}"
        assert gauges(cluster.nodes[leader].metrics())["strom_under_min_isr_partitions"] == 1
        acked.update(produce_acks1(via_leader, topic, 30, "still alone"))
    finally:
        for r in paused:
            cluster.resume(r)
    wait_until(lambda: fully_replicated(cluster, topic, 1, 3), CLIENT_TIMEOUT_S, "both followers back in the ISR")
    acked.update(produce_acked(via_leader, topic, 1, 20, "all back")[0])
    metrics = gauges(cluster.nodes[leader].metrics())
    assert metrics["strom_under_replicated_partitions"] == 0
    # Two shrinks happened (one per stopped follower); both may rejoin in one change.
    assert metrics["strom_isr_shrinks_total"] == 2 and metrics["strom_isr_expands_total"] >= 1, metrics
    assert_all_there(cluster, topic, acked)


@pytest.mark.timeout_s(180)
def test_a_partition_whose_only_in_sync_replica_died_waits_for_it_and_loses_nothing(cluster_factory, topic_name):
    """Both followers are stopped until the controller fences them (their sessions expire),
    which takes them out of the ISR: the leader alone is in sync and acks=1 writes go on.
    Then the leader is killed with kill -9 and the followers come back. Neither is in sync,
    so with unclean.leader.election.enable false the partition has no leader rather than a
    leader that lacks acknowledged records. When the old leader restarts it leads again,
    the followers catch up and rejoin, and every acknowledged record is there."""
    cluster = cluster_factory.start(controllers=1, brokers=3)
    topic = topic_name
    create_replicated_topic(cluster, topic, 1, 3, {})
    leader, followers, acked, alone = strand_the_leader_and_kill_it(cluster, topic)
    acked.update(alone)
    witness = followers[0]
    wait_until(
        lambda: cluster.unfenced_brokers(via=witness) == set(followers), 20, f"{leader} fenced, the followers unfenced"
    )
    for _ in range(3):
        state = partition_states(cluster, topic, via=witness)[0]
        assert state[0] == -1 and state[2] == [leader], f"an out-of-sync follower was elected: {state}"
        time.sleep(0.5)
    cluster.start_node(leader)
    states = wait_until(lambda: fully_replicated(cluster, topic, 1, 3), CLIENT_TIMEOUT_S, "every replica back in sync")
    assert states[0][0] == leader, f"led by {states[0][0]}, not by the only replica that had everything"
    assert_all_there(cluster, topic, acked)


@pytest.mark.timeout_s(180)
def test_an_unclean_election_brings_the_partition_back_losing_what_only_the_dead_leader_had(cluster_factory, topic_name):
    """With unclean.leader.election.enable=true on the topic: the followers are stopped
    until fenced (the ISR is the leader alone), the leader takes acks=1 writes, then dies
    (kill -9) as the followers return. An out-of-sync follower is elected, so the partition
    is available again, and the writes only the dead leader had are lost — the documented
    price. When the old leader returns it truncates that divergent tail and its log
    becomes byte-identical to the new leader's; everything replicated before is kept."""
    cluster = cluster_factory.start(controllers=1, brokers=3)
    topic = topic_name
    create_replicated_topic(cluster, topic, 1, 3, {"unclean.leader.election.enable": "true"})
    leader, followers, kept, lost = strand_the_leader_and_kill_it(cluster, topic)
    witness = followers[0]
    new_leader, _, isr = wait_until(
        lambda: (s := partition_states(cluster, topic, via=witness)[0])[0] in followers and s,
        30,
        "an out-of-sync follower elected",
    )
    # The election makes the ISR the new leader alone; the other follower, which has the
    # same records, may already have rejoined by the time Metadata is read.
    assert new_leader in isr and leader not in isr and set(isr) <= set(followers), f"ISR after the unclean election: {isr}"
    after = produce_acked(cluster.nodes[new_leader].bootstrap, topic, 1, 20, "after the election")[0]
    cluster.start_node(leader)
    wait_until(lambda: fully_replicated(cluster, topic, 1, 3), CLIENT_TIMEOUT_S, "every replica back in sync")
    records = read_partition(cluster.bootstrap(running_only=True), topic, 0, timeout_s=CLIENT_TIMEOUT_S)
    stored = {r.offset: r.value for r in records}
    assert sorted(stored) == list(range(len(stored))), "offsets not dense"
    assert all(stored.get(o) == v for o, v in kept.items()), "a record every replica had was lost"
    assert all(stored.get(o) == v for o, v in after.items()), "a record acknowledged after the election was lost"
    assert not set(lost.values()) & set(stored.values()), "records only the dead leader had came back"
    assert len(stored) == len(kept) + len(after)
    wait_until(
        lambda: len({replica_log_bytes(cluster, b.node_id, topic, 0) for b in cluster.brokers}) == 1,
        CLIENT_TIMEOUT_S,
        "the old leader truncated to the new leader's log",
    )


@pytest.mark.timeout_s(120)
def test_leadership_returns_to_the_preferred_replica_once_it_is_back_in_sync(cluster_factory, topic_name):
    """auto.leader.rebalance.enable (Kafka's default) with a 1 s check: a broker killed
    with kill -9 loses its leaderships to in-sync followers; once it has restarted and
    rejoined the ISR, the controller hands each partition back to its preferred (first)
    replica, so leadership spreads over the brokers again as placement intended."""
    cluster = cluster_factory.start(controllers=1, brokers=3, props={"leader.imbalance.check.interval.seconds": 1})
    topic = topic_name
    create_replicated_topic(cluster, topic, 3, 3, {})
    states = partition_states(cluster, topic)
    assert all(leader == replicas[0] for leader, replicas, _ in states.values()), states
    victim = states[0][0]
    produce_acked(cluster.bootstrap(), topic, 3, 20, "before")
    cluster.kill(victim)
    witness = next(b.node_id for b in cluster.brokers if b.node_id != victim)
    wait_until(
        lambda: all(s[0] not in (-1, victim) for s in partition_states(cluster, topic, via=witness).values()),
        CLIENT_TIMEOUT_S,
        f"every partition led by a live broker after {victim} died",
    )
    cluster.start_node(victim)
    wait_until(
        lambda: all(l == r[0] and len(isr) == 3 for l, r, isr in partition_states(cluster, topic).values()),
        CLIENT_TIMEOUT_S,
        "every partition led by its preferred replica again",
    )
    # Nothing acknowledged before was lost by the moves, and acks=all works after them.
    produce_acked(cluster.bootstrap(), topic, 3, 20, "after")
    # Partition 0 was led at epoch 0 (20 records), by another broker at epoch 1 (none),
    # and by the victim again from epoch 2: OffsetForLeaderEpoch tells where each ends.
    import kafka_wire as w

    node = cluster.nodes[victim]

    def ask(current: int, epoch: int) -> tuple[int, int, int]:
        return w.offset_for_leader_epoch(node.host, node.port, topic, [(0, current, epoch)])[(topic, 0)]

    assert ask(-1, 0) == (0, 0, 20), "epoch 0 ends where epoch 2 starts"
    assert ask(-1, 1) == (0, 0, 20), "epoch 1 wrote nothing: the answer is epoch 0's end"
    assert ask(-1, 2) == (0, 2, 40), "the current epoch ends at the log end"
    assert ask(-1, 99) == (0, -1, -1), "an epoch the log has not reached"
    assert ask(0, 0)[0] == 74, "a stale current_leader_epoch is FENCED_LEADER_EPOCH"
    assert ask(5, 0)[0] == 75, "a current_leader_epoch ahead of the leader's is UNKNOWN_LEADER_EPOCH"

    for p in range(3):
        values = [r.value for r in read_partition(cluster.bootstrap(), topic, p, timeout_s=CLIENT_TIMEOUT_S)]
        assert values[:20] == [f"before {p}/{i}".encode() for i in range(20)], f"partition {p}: {values[:3]}"
        assert values[20:] == [f"after {p}/{i}".encode() for i in range(20)]


@pytest.mark.timeout_s(240)
def test_a_leader_cut_off_from_the_controller_and_its_followers_acknowledges_nothing_and_loses_nothing(cluster_factory, topic_name):
    """A network partition: the leader's links to the controller quorum and every
    follower's link into its replication listener are cut (clients still reach it on
    PLAINTEXT). Its session expires, the controller fences it and makes an in-sync
    follower leader, and the followers fetch from the new leader. The cut-off leader still
    believes it leads, but it can neither shrink the ISR (that takes the controller) nor
    advance its high watermark (its followers left), so an acks=all write sent to it is
    never acknowledged, while producers on the majority side go on. A producer writing
    acks=all throughout loses nothing acknowledged; after healing, the old leader
    truncates its unacknowledged tail, catches up and rejoins, and the replicas are
    byte-identical."""
    import threading

    cluster = cluster_factory.start(controllers=1, brokers=3, replication_listener=True)
    topic = topic_name
    create_replicated_topic(cluster, topic, 1, 3, {"min.insync.replicas": "2"})
    leader = partition_states(cluster, topic)[0][0]
    stop = threading.Event()
    acked: dict[int, bytes] = {}
    failures: list = []

    def produce_loop():
        prod = producer(
            cluster.bootstrap(),
            acks="all",
            # Requests parked on the cut-off leader time out in 3 s (its answer), after
            # which the producer finds the new leader from a broker that knows it.
            **{"message.timeout.ms": 60000, "request.timeout.ms": 3000, "topic.metadata.refresh.interval.ms": 1000},
        )
        i = 0

        def report(value):
            def cb(err, msg):
                if err is None and acked.setdefault(msg.offset(), value) != value:
                    failures.append(("one offset acknowledged twice", msg.offset()))

            return cb

        while not stop.is_set():
            value = f"steady {i}".encode()
            try:
                prod.produce(topic, value, partition=0, on_delivery=report(value))
                i += 1
            except BufferError:
                pass
            prod.poll(0.01)
        prod.flush(90)

    writer = threading.Thread(target=produce_loop)
    writer.start()
    try:
        wait_until(lambda: len(acked) >= 100, CLIENT_TIMEOUT_S, "the producer under way")
        cluster.cut(leader, drop=True)
        cluster.cut_replication(leader)
        try:
            witness = next(b.node_id for b in cluster.brokers if b.node_id != leader)
            wait_until(
                lambda: partition_states(cluster, topic, via=witness)[0][0] not in (-1, leader),
                CLIENT_TIMEOUT_S,
                "a follower elected on the controller's side",
            )
            assert partition_states(cluster, topic, via=leader)[0][0] == leader, "the cut-off leader should not know"
            direct = producer(cluster.nodes[leader].bootstrap, acks="all", **{"message.timeout.ms": 6000})
            reports = produce_all(direct, topic, [{"partition": 0, "value": b"to the cut-off leader"}], timeout_s=20)
            assert reports[0][0] is not None, "the cut-off leader acknowledged an acks=all write"
            # Clients that ask the majority side find the new leader and go on. (A client
            # that only ever asks the cut-off broker is told it leads and waits, as with
            # Kafka, which also keeps a broker's last metadata when the quorum is away.)
            majority = cluster.bootstrap(nodes=[b.node_id for b in cluster.brokers if b.node_id != leader])
            for offset, value in produce_acked(majority, topic, 1, 50, "majority side")[0].items():
                if acked.setdefault(offset, value) != value:
                    failures.append(("one offset acknowledged twice", offset))
        finally:
            cluster.heal(leader)
            cluster.heal_replication(leader)
        wait_until(lambda: fully_replicated(cluster, topic, 1, 3), CLIENT_TIMEOUT_S, "the old leader back in the ISR")
        time.sleep(1)
    finally:
        stop.set()
        writer.join(120)
    assert not failures, failures[:5]
    assert_all_there(cluster, topic, acked)
    records = read_partition(cluster.bootstrap(), topic, 0, timeout_s=CLIENT_TIMEOUT_S)
    assert [r.offset for r in records] == list(range(len(records))), "offsets not dense"


@pytest.mark.timeout_s(180)
def test_a_leader_whose_followers_cannot_reach_it_shrinks_its_isr_and_refuses_acks_all_below_min_isr(
    cluster_factory, topic_name
):
    """Brokers with two listeners: clients on PLAINTEXT, replication on REPLICATION
    (inter.broker.listener.name), each advertised at its own address — Metadata answers
    with the addresses of the listener it was asked on. Then the links into the leader's
    REPLICATION listener are cut while its clients and its controller link stay up: the
    followers stop fetching, and once they fall behind for replica.lag.time.max.ms the
    leader takes them out of the ISR through the controller (no election: the leader
    lives). acks=all is refused with NOT_ENOUGH_REPLICAS below min.insync.replicas 2,
    acks=1 goes on; after healing the followers catch up over REPLICATION and rejoin,
    with nothing acknowledged lost and byte-identical replicas."""
    from confluent_kafka import KafkaError

    import kafka_wire as w
    from cluster import REPLICATION, Timeouts

    cluster = cluster_factory.start(
        controllers=1,
        brokers=3,
        replication_listener=True,
        timeouts=Timeouts(session_ms=60000, heartbeat_ms=500),
        props={"replica.lag.time.max.ms": 2000},
    )
    topic = topic_name
    create_replicated_topic(cluster, topic, 1, 3, {"min.insync.replicas": "2"})
    leader, replicas, _ = partition_states(cluster, topic)[0]
    plaintext = {b.node_id: (b.host, b.port) for b in cluster.brokers}
    replication = {b.node_id: tuple(cluster.replication_proxies[b.node_id].address) for b in cluster.brokers}
    md = cluster.metadata(via=leader)
    assert {b[0]: (b[1], b[2]) for b in md.brokers} == plaintext, f"PLAINTEXT clients told {md.brokers}"
    host, port = cluster.nodes[leader].address(REPLICATION)
    md = w.metadata(host, port, [topic], timeout_s=5.0)
    assert {b[0]: (b[1], b[2]) for b in md.brokers} == replication, f"REPLICATION clients told {md.brokers}"
    via_leader = cluster.nodes[leader].bootstrap
    acked = produce_acked(via_leader, topic, 1, 20, "all in sync")[0]
    proxy = cluster.replication_proxies[leader]
    assert proxy.accepted >= 2, f"the followers should replicate through {proxy}"

    cluster.cut_replication(leader)
    try:
        # Followers that have everything stay in sync however long they are silent:
        # new data makes them fall behind.
        acked.update(produce_acks1(via_leader, topic, 30, "followers cut off"))
        wait_until(
            lambda: partition_states(cluster, topic, via=leader)[0][2] == [leader],
            20,
            "the leader alone in the ISR",
        )
        assert partition_states(cluster, topic)[0][0] == leader, "the leader lives: no election"
        refused = produce_all(producer(via_leader, acks="all", retries=0), topic, [{"partition": 0, "value": b"refused"}])
        err = refused[0][0]
        assert err is not None and err.code() == KafkaError.NOT_ENOUGH_REPLICAS, f"acks=all below min.insync.replicas: {err}"
        acked.update(produce_acks1(via_leader, topic, 30, "still cut off"))
    finally:
        cluster.heal_replication(leader)
    wait_until(lambda: fully_replicated(cluster, topic, 1, 3), CLIENT_TIMEOUT_S, "both followers back in the ISR")
    acked.update(produce_acked(via_leader, topic, 1, 20, "healed")[0])
    assert_all_there(cluster, topic, acked)
    for follower in (r for r in replicas if r != leader):
        fetched = gauges(cluster.nodes[follower].metrics())["strom_replica_fetched_bytes_total"]
        assert fetched >= len(b"".join(acked.values())), f"broker {follower} replicated {fetched} bytes"
    assert gauges(cluster.nodes[leader].metrics())["strom_replica_fetched_bytes_total"] == 0


@pytest.mark.timeout_s(120)
def test_elect_leaders_moves_leadership_back_on_request(cluster_factory, topic_name):
    """With auto.leader.rebalance.enable=false a restarted broker stays a follower; an
    ElectLeaders request (confluent-kafka's AdminClient.elect_leaders, what
    kafka-leader-election.sh sends) of type PREFERRED, sent to a broker-only node and
    forwarded to the controller, hands the partition back to its preferred replica. Asking
    again is ELECTION_NOT_NEEDED, and an UNCLEAN election of a led partition too."""
    from confluent_kafka import ElectionType, KafkaError, TopicPartition

    cluster = cluster_factory.start(controllers=1, brokers=3, props={"auto.leader.rebalance.enable": "false"})
    topic = topic_name
    create_replicated_topic(cluster, topic, 1, 3, {})
    preferred = partition_states(cluster, topic)[0][0]
    cluster.kill(preferred)
    witness = next(b.node_id for b in cluster.brokers if b.node_id != preferred)
    wait_until(
        lambda: partition_states(cluster, topic, via=witness)[0][0] not in (-1, preferred),
        CLIENT_TIMEOUT_S,
        "leadership moved off the killed broker",
    )
    cluster.start_node(preferred)
    wait_until(lambda: fully_replicated(cluster, topic, 1, 3), CLIENT_TIMEOUT_S, "the restarted broker back in the ISR")
    time.sleep(1.5)
    assert partition_states(cluster, topic)[0][0] != preferred, "leadership moved back with auto rebalance off"

    client = admin(cluster.nodes[witness].bootstrap)
    tp = TopicPartition(topic, 0)

    def elect(kind):
        # (confluent-kafka 2.16 cannot parse keyword options to elect_leaders.)
        result = client.elect_leaders(kind, [tp]).result(timeout=20)
        [(_, err)] = list(result.items())
        return err

    assert elect(ElectionType.PREFERRED) is None
    wait_until(lambda: partition_states(cluster, topic)[0][0] == preferred, CLIENT_TIMEOUT_S, "the preferred replica leading")
    again = elect(ElectionType.PREFERRED)
    assert again is not None and again.code() == KafkaError.ELECTION_NOT_NEEDED, again
    unclean = elect(ElectionType.UNCLEAN)
    assert unclean is not None and unclean.code() == KafkaError.ELECTION_NOT_NEEDED, unclean
    produce_acked(cluster.bootstrap(), topic, 1, 20, "after the election")


def coordinator_partition(group: str, partitions: int = 50) -> int:
    """Kafka's __consumer_offsets partition of a group: abs(String.hashCode) % partitions."""
    h = 0
    data = group.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i : i + 2], "big")) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    return 0 if h == -(1 << 31) else abs(h) % partitions


@pytest.mark.timeout_s(240)
def test_a_consumer_group_carries_on_when_its_coordinator_is_killed(cluster_factory, topic_name):
    """Three confluent-kafka members of one group consume an RF 3 topic, committing
    synchronously after what they processed, while the broker coordinating the group
    (the leader of its __consumer_offsets partition, RF 3 on a cluster) is killed with
    kill -9. Another replica of that partition takes over the group with its committed
    offsets: a watcher polling the committed offsets throughout never sees one go
    backwards, every record is processed (at least once), and the final commits reach the
    end of every partition."""
    import threading

    from confluent_kafka import Consumer, TopicPartition

    cluster = cluster_factory.start(controllers=1, brokers=3)
    topic = topic_name
    partitions = 3
    create_replicated_topic(cluster, topic, partitions, 3, {"min.insync.replicas": "2"})
    per_partition = 1500
    acked = produce_acked(cluster.bootstrap(), topic, partitions, per_partition, "rec")
    ends = {p: max(offsets) + 1 for p, offsets in acked.items()}
    group = f"{topic}-group"
    bootstrap = cluster.bootstrap()
    stop = threading.Event()
    processed: dict[tuple[int, int], int] = collections.Counter()
    lock = threading.Lock()
    failures: list = []

    def member():
        c = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 500,
            }
        )
        c.subscribe([topic])
        try:
            while not stop.is_set():
                msgs = c.consume(50, 0.2)
                good = [m for m in msgs if not m.error()]
                if not good:
                    continue
                time.sleep(0.02)  # the processing
                with lock:
                    for m in good:
                        processed[(m.partition(), m.offset())] += 1
                try:
                    c.commit(asynchronous=False)
                except Exception as exc:  # a commit refused mid-failover is retried by the next one
                    if "UNKNOWN_MEMBER_ID" not in str(exc) and "REBALANCE" not in str(exc):
                        print("commit failed:", exc)
        finally:
            c.close()

    committed_seen: dict[int, int] = {}

    def watch():
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        try:
            while not stop.is_set():
                try:
                    got = c.committed(tps, timeout=5)
                except Exception:  # the coordinator is moving: ask again
                    time.sleep(0.2)
                    continue
                for tp in got:
                    if tp.error or tp.offset < 0:
                        if tp.offset < 0 and committed_seen.get(tp.partition, -1) >= 0 and not tp.error:
                            failures.append(("committed offset vanished", tp.partition, committed_seen[tp.partition]))
                        continue
                    before = committed_seen.get(tp.partition, -1)
                    if tp.offset < before:
                        failures.append(("committed offset went backwards", tp.partition, before, tp.offset))
                    committed_seen[tp.partition] = max(before, tp.offset)
                time.sleep(0.1)
        finally:
            c.close()

    threads = [threading.Thread(target=member) for _ in range(3)] + [threading.Thread(target=watch)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(processed) >= partitions * per_partition // 3, 60, "a third of the records processed")
        offsets_index = coordinator_partition(group)
        coordinator, offsets_replicas, _ = partition_states(cluster, "__consumer_offsets")[offsets_index]
        assert coordinator in (21, 22, 23), f"no coordinator for {group}: {coordinator}"
        assert len(offsets_replicas) == 3, f"__consumer_offsets is not RF 3 on a cluster: {offsets_replicas}"
        before_kill = dict(committed_seen)
        assert before_kill, "nothing was committed before the coordinator was killed"
        cluster.kill(coordinator)
        wait_until(
            lambda: partition_states(cluster, "__consumer_offsets", via=next(b for b in cluster.brokers if b.running()))[offsets_index][0]
            not in (-1, coordinator),
            CLIENT_TIMEOUT_S,
            "the group's offsets partition led by another replica",
        )
        wait_until(lambda: len(processed) == partitions * per_partition, 90, "every record processed")
        wait_until(lambda: all(committed_seen.get(p) == ends[p] for p in range(partitions)), 60, f"commits at the ends {ends}")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not failures, failures[:5]
    missing = [(p, o) for p in range(partitions) for o in acked[p] if (p, o) not in processed]
    assert not missing, f"{len(missing)} records never processed, e.g. {missing[:5]}"
    for p, offset in before_kill.items():
        assert committed_seen[p] >= offset


def replica_log_bytes(cluster: Cluster, node_id: int, topic: str, partition: int) -> bytes:
    """The concatenated segment files of one replica, oldest first: followers store their
    leader's batches byte for byte, so in-sync replicas hold identical bytes."""
    d = cluster.nodes[node_id].data_dir / f"{topic}-{partition}"
    segments = sorted(d.glob("*.log"), key=lambda p: int(p.stem))
    return b"".join(s.read_bytes() for s in segments)


@pytest.mark.timeout_s(420)
def test_nothing_acknowledged_is_lost_while_leaders_are_killed_under_load(cluster_factory, topic_name):
    """Producers write acks=all as fast as they go — confluent-kafka idempotent and not,
    and kafka-python — while the leader of partition 0 is killed with kill -9 and restarted,
    twenty times in a row. A consumer reads partition 0 throughout. Afterwards every acknowledged
    record is at its acknowledged offset exactly once; offsets are dense; the consumer
    never saw one offset with two contents; and every replica's log is byte-identical."""
    import threading

    from kafka import KafkaProducer

    cluster = cluster_factory.start(controllers=1, brokers=3)
    topic = topic_name
    partitions = 2
    create_replicated_topic(cluster, topic, partitions, 3, {"min.insync.replicas": "2"})
    bootstrap = cluster.bootstrap()
    stop = threading.Event()
    acked: dict[tuple[int, int], bytes] = {}
    acked_lock = threading.Lock()
    failures: list = []

    def confluent_loop(tag: str, idempotent: bool):
        prod = producer(bootstrap, acks="all", enable_idempotence=idempotent, **{"message.timeout.ms": 120000})
        i = 0

        def report(value):
            def cb(err, msg):
                if err is None:
                    with acked_lock:
                        prev = acked.setdefault((msg.partition(), msg.offset()), value)
                        if prev != value:
                            failures.append(("one offset acknowledged twice", msg.partition(), msg.offset()))

            return cb

        while not stop.is_set():
            value = f"{tag}-{i}".encode()
            try:
                prod.produce(topic, value, partition=i % partitions, on_delivery=report(value))
                i += 1
            except BufferError:
                prod.poll(0.05)
            prod.poll(0)
            if i % 50 == 0:
                time.sleep(0.01)
        assert prod.flush(120) == 0, f"{tag}: records left unacknowledged"

    def kafka_python_loop():
        prod = KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=1000, request_timeout_ms=30000, max_in_flight_requests_per_connection=1)
        i = 0
        pending = []
        while not stop.is_set():
            value = f"kp-{i}".encode()
            pending.append((value, prod.send(topic, value, partition=i % partitions)))
            i += 1
            if len(pending) >= 100:
                for v, fut in pending:
                    try:
                        md = fut.get(timeout=120)
                    except Exception:  # a failed send was not acknowledged: nothing to check
                        continue
                    with acked_lock:
                        prev = acked.setdefault((md.partition, md.offset), v)
                        if prev != v:
                            failures.append(("one offset acknowledged twice", md.partition, md.offset))
                pending = []
        prod.flush(120)
        for v, fut in pending:
            try:
                md = fut.get(timeout=120)
            except Exception:
                continue
            with acked_lock:
                acked.setdefault((md.partition, md.offset), v)
        prod.close(10)

    seen: dict[int, bytes] = {}

    def consume_loop():
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-watch", "enable.auto.commit": False})
        c.assign([TopicPartition(topic, 0, 0)])
        while not stop.is_set():
            msg = c.poll(0.2)
            if msg is None or msg.error():
                continue
            prev = seen.setdefault(msg.offset(), msg.value())
            if prev != msg.value():
                failures.append(("the consumer saw offset with two contents", msg.offset()))
        c.close()

    threads = [
        threading.Thread(target=confluent_loop, args=("ci", True)),
        threading.Thread(target=confluent_loop, args=("cp", False)),
        threading.Thread(target=kafka_python_loop),
        threading.Thread(target=consume_loop),
    ]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            time.sleep(1.0)
            leader = partition_states(cluster, topic)[0][0]
            if leader < 0:
                continue
            cluster.kill(leader)
            wait_until(
                lambda: partition_states(cluster, topic, via=next(b for b in cluster.brokers if b.running() and b.node_id != leader))[0][0] not in (-1, leader),
                CLIENT_TIMEOUT_S,
                f"partition 0 led again after {leader} died",
            )
            cluster.start_node(leader)
    finally:
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(180)
    assert not failures, failures[:5]
    wait_until(lambda: fully_replicated(cluster, topic, partitions, 3), CLIENT_TIMEOUT_S, "every replica back in sync")
    assert len(acked) > 500, f"only {len(acked)} records acknowledged"
    print(f"{len(acked)} records acknowledged across 20 leader kills")
    for p in range(partitions):
        records = read_partition(cluster.bootstrap(running_only=True), topic, p, timeout_s=CLIENT_TIMEOUT_S)
        stored = {r.offset: r.value for r in records}
        assert sorted(stored) == list(range(len(stored))), f"partition {p}: offsets not dense"
        mine = {o: v for (q, o), v in acked.items() if q == p}
        lost = {o: v for o, v in mine.items() if stored.get(o) != v}
        assert not lost, f"partition {p}: {len(lost)} of {len(mine)} acknowledged records lost or changed: {sorted(lost.items())[:3]}"
        counts = collections.Counter(stored.values())
        # Idempotent producers never duplicate; retried plain sends may (at least once).
        dup = [v for v, n in counts.items() if n > 1 and v.startswith(b"ci-")]
        assert not dup, f"partition {p}: idempotent records duplicated: {dup[:3]}"
        if p == 0:
            assert seen, "the consumer saw nothing of partition 0"
            changed = {o: v for o, v in seen.items() if stored.get(o) != v}
            assert not changed, f"the consumer saw offsets the log now holds otherwise: {sorted(changed.items())[:3]}"
        wait_until(
            lambda: len({replica_log_bytes(cluster, b.node_id, topic, p) for b in cluster.brokers}) == 1,
            CLIENT_TIMEOUT_S,
            f"partition {p}: identical bytes on every replica",
        )


@pytest.mark.timeout_s(120)
def test_a_restarted_follower_is_ready_only_once_it_has_caught_up(cluster_factory, topic_name):
    """/readyz of a restarted broker stays 503 while a partition it follows has data it
    lacks and cannot fetch (its leader is stopped, not yet fenced), and turns 200 once it
    has caught up — the rule the operator's rolling restart waits for."""
    from cluster import Timeouts

    cluster = cluster_factory.start(controllers=1, brokers=2, timeouts=Timeouts(session_ms=20000, heartbeat_ms=500))
    topic = topic_name
    create_replicated_topic(cluster, topic, 1, 2, {})
    leader, replicas, _ = partition_states(cluster, topic)[0]
    follower = next(r for r in replicas if r != leader)
    cluster.kill(follower)
    # The follower is dead but still in the ISR (its session has not expired), so acks=1.
    reports = produce_all(producer(cluster.nodes[leader].bootstrap, acks="1"), topic, [{"partition": 0, "value": b"x" * 100}] * 200)
    assert all(err is None for err, _ in reports)
    cluster.pause(leader)
    try:
        cluster.start_node(follower, wait=False)
        node = cluster.nodes[follower]
        # Registered, unfenced and serving Metadata, yet not ready.
        wait_until(lambda: follower in cluster.unfenced_brokers(via=follower), 15, "the restarted follower unfenced")
        time.sleep(1.0)
        status, body = node.http_get("/readyz", timeout_s=1.0)
        assert status == 503, f"ready while lacking its leader's data: {status} {body!r}"
    finally:
        cluster.resume(leader)
    cluster.wait_ready([follower], timeout_s=CLIENT_TIMEOUT_S)
