"""Apache Kafka's own `kafka-metadata-quorum` (org.apache.kafka.tools.MetadataQuorumCommand,
the kafka-tools jar from Maven Central at the version e2e/java/pom.xml pins, run on the
machine's Java) against a Strom cluster of three controllers and three brokers.

The tool's output is parsed (the `describe --status` key/value lines with their JSON voter
and observer lists, the `describe --replication` table) and compared with what the
cluster says of itself: the active controller, its epoch and high watermark from
DescribeQuorum (`cluster.active_controller()`), each controller's CONTROLLER listener,
the cluster id in every node's meta.properties. Both of the tool's ways in are checked:
`--bootstrap-server` (a broker forwards DescribeQuorum to the active controller) and
`--bootstrap-controller` (KIP-919: the Java admin client asks a controller for
DescribeCluster with endpoint type CONTROLLER, then sends DescribeQuorum to the leader it
names), before and after the active controller is killed.

The jars come from e2e/java/fetch-kafka-tools.sh (a no-op once e2e/java/lib/ holds them;
scripts/test runs it in its tools stage, and the module fixture runs it again). The tests
are skipped only when no `java` is on PATH; a failing fetch fails them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from cluster import CONTROLLER, Cluster, ClusterFactory, wait_until

JAVA_DIR = Path(__file__).resolve().parent.parent / "java"
FETCH_SCRIPT = JAVA_DIR / "fetch-kafka-tools.sh"
TOOL_CLASS = "org.apache.kafka.tools.MetadataQuorumCommand"
# One run of the tool: JVM start (about a second) plus its admin client's own timeouts
# (TOOL_CLIENT_CONFIG), with room for a loaded 2-core machine.
TOOL_TIMEOUT_S = 40.0
# The admin client gives up on a call after default.api.timeout.ms; kept short so that a
# run against a cluster without a leader fails fast and the test retries it.
TOOL_CLIENT_CONFIG = {"request.timeout.ms": "5000", "default.api.timeout.ms": "10000", "retry.backoff.ms": "100"}
# Fast JVM start for a short-lived command-line tool.
JVM_FLAGS = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xss1m", "-Xmx256m"]
FETCH_TIMEOUT_S = 600.0
# Followers and observers fetch every few hundred ms (the fixture's short timeouts); a
# timestamp in the tool's output further from the test's clock than this is wrong.
FETCH_RECENT_MS = 30_000
# A new leader after kill -9 of the old one: the election timeout (500 ms in the
# fixture) plus fetch timeouts, the tool's JVM and its metadata round trips.
FAILOVER_DEADLINE_S = 45.0
REPLICATION_COLUMNS = ["NodeId", "DirectoryId", "LogEndOffset", "Lag", "LastFetchTimestamp", "LastCaughtUpTimestamp", "Status"]

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(shutil.which("java") is None, reason="java is not on PATH: Kafka's tools need a JDK 17+"),
]


# --- the tool ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tool_classpath() -> str:
    """The tools' classpath, after fetch-kafka-tools.sh made sure the jars are there."""
    proc = subprocess.run([str(FETCH_SCRIPT)], capture_output=True, text=True, timeout=FETCH_TIMEOUT_S)
    assert proc.returncode == 0, f"{FETCH_SCRIPT} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    jars = list((JAVA_DIR / "lib").glob("kafka-tools-*.jar"))
    assert jars, f"no kafka-tools jar in {JAVA_DIR / 'lib'} after {FETCH_SCRIPT}"
    return str(JAVA_DIR / "lib" / "*")


@pytest.fixture(scope="module")
def command_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("kafka-tools") / "admin.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in TOOL_CLIENT_CONFIG.items()))
    return path


class ToolFailed(AssertionError):
    pass


def run_tool(classpath: str, config: Path, *args: str) -> str:
    """Runs `kafka-metadata-quorum <args>`; its stdout, or ToolFailed with both streams."""
    cmd = ["java", *JVM_FLAGS, "-cp", classpath, TOOL_CLASS, "--command-config", str(config), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    if proc.returncode != 0:
        raise ToolFailed(f"kafka-metadata-quorum {' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc.stdout


def parse_status(out: str) -> dict[str, object]:
    """`describe --status`: `Key:   value` lines; numbers as ints, the voter and observer
    lists as JSON."""
    fields: dict[str, object] = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        assert sep, f"not a `Key: value` line in the tool's status: {line!r}\n{out}"
        value = value.strip()
        if key in ("CurrentVoters", "CurrentObservers"):
            fields[key] = json.loads(value)
        elif re.fullmatch(r"-?\d+", value):
            fields[key] = int(value)
        else:
            fields[key] = value
    for key in ("ClusterId", "LeaderId", "LeaderEpoch", "HighWatermark", "MaxFollowerLag", "MaxFollowerLagTimeMs",
                "CurrentVoters", "CurrentObservers"):
        assert key in fields, f"{key} missing from the tool's status:\n{out}"
    return fields


def parse_replication(out: str) -> dict[int, dict[str, str]]:
    """`describe --replication`: a tab-separated table under a header; node id -> row."""
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, "the tool printed no replication table"
    header = [c.strip() for c in lines[0].split("\t") if c.strip()]
    assert header == REPLICATION_COLUMNS, f"unexpected columns {header}\n{out}"
    rows: dict[int, dict[str, str]] = {}
    for line in lines[1:]:
        cells = [c.strip() for c in line.split("\t")][: len(header)]
        assert len(cells) == len(header), f"short row {line!r}\n{out}"
        row = dict(zip(header, cells))
        node = int(row["NodeId"])
        assert node not in rows, f"node {node} listed twice\n{out}"
        rows[node] = row
    return rows


def voter_endpoint(node) -> str:
    host, port = node.controller_address
    return f"{CONTROLLER}://{host}:{port}"


def cluster_id_on_disk(cluster: Cluster) -> str:
    """The cluster id every node wrote into meta.properties (they must agree)."""
    ids = set()
    for node in cluster.nodes.values():
        text = (Path(node.properties["log.dirs"].split(",")[0]) / "meta.properties").read_text()
        [value] = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("cluster.id=")]
        ids.add(value)
    assert len(ids) == 1, f"nodes disagree on the cluster id: {ids}"
    return ids.pop()


def check_status(cluster: Cluster, status: dict, before, after) -> None:
    """The tool's status against DescribeQuorum asked of the active controller just before
    and just after the tool ran (same leader and epoch both times)."""
    assert status["LeaderId"] == before.leader_id, status
    assert status["LeaderEpoch"] == before.leader_epoch, status
    # The high watermark only grows: between the two direct answers.
    assert before.high_watermark <= status["HighWatermark"] <= after.high_watermark, (status, before, after)
    assert status["ClusterId"] == cluster_id_on_disk(cluster), status
    voters = sorted(status["CurrentVoters"], key=lambda v: v["id"])
    # A cluster made with proxied=False: each voter is known by its own CONTROLLER listener.
    assert voters == [{"id": n.node_id, "endpoints": [voter_endpoint(n)]} for n in cluster.controllers], voters
    observers = {o["id"] for o in status["CurrentObservers"]}
    assert {b.node_id for b in cluster.brokers} <= observers, status["CurrentObservers"]
    assert not observers & {c.node_id for c in cluster.controllers}, status["CurrentObservers"]
    assert status["MaxFollowerLag"] >= 0, status


def quiet_status(cluster: Cluster, tool, *args: str) -> tuple[dict, object, object]:
    """Runs `describe --status` until it ran between two DescribeQuorum answers of the same
    leader and epoch, with every broker among the observers (they show up once they have
    fetched from this leader); returns the status and both answers."""

    def attempt():
        before = cluster.active_controller()
        status = parse_status(tool(*args, "describe", "--status"))
        after = cluster.active_controller()
        same = (before.leader_id, before.leader_epoch) == (after.leader_id, after.leader_epoch)
        brokers = {b.node_id for b in cluster.brokers} <= {o["id"] for o in status["CurrentObservers"]}
        return same and brokers and (status, before, after)

    return wait_until(attempt, 30.0, "a describe --status between two answers of one leader", interval_s=0.5)


# --- a shared cluster for the read-only checks ---------------------------------------------


@pytest.fixture(scope="module")
def quorum_cluster(tmp_path_factory):
    """Three controllers and three brokers, every node reached at its own listeners
    (proxied=False), so the voter endpoints the tool prints are the controllers' own."""
    factory = ClusterFactory(tmp_path_factory.mktemp("quorum-cluster"))
    try:
        cluster = factory.start(controllers=3, brokers=3, proxied=False)
        cluster.wait_brokers([b.node_id for b in cluster.brokers])
        yield cluster
    finally:
        factory.close()


@pytest.fixture
def tool(tool_classpath, command_config):
    return lambda *args: run_tool(tool_classpath, command_config, *args)


def test_status_via_broker(quorum_cluster, tool):
    """`--bootstrap-server <a broker> describe --status`: the broker forwards DescribeQuorum
    to the active controller, and the tool prints that controller as LeaderId with its
    epoch, a high watermark between two direct DescribeQuorum answers, the three
    controllers as CurrentVoters at their CONTROLLER listeners, every broker among the
    observers and the cluster id of meta.properties. Asked through each broker in turn."""
    for broker in quorum_cluster.brokers:
        status, before, after = quiet_status(quorum_cluster, tool, "--bootstrap-server", broker.bootstrap)
        check_status(quorum_cluster, status, before, after)


def test_replication_via_broker(quorum_cluster, tool):
    """`describe --replication` lists every voter and every observer once: the active
    controller as Leader, the other controllers as Followers, the brokers as Observers;
    log end offsets no further than the leader's with Lag = leader's offset - own, fetch
    and caught-up times recent (the followers and brokers fetch every few hundred ms);
    with --human-readable the times read `N ms ago`."""
    cluster = quorum_cluster
    leader = cluster.active_controller().leader_id
    bootstrap = cluster.brokers[0].bootstrap

    def listed():
        rows = parse_replication(tool("--bootstrap-server", bootstrap, "describe", "--replication"))
        return {b.node_id for b in cluster.brokers} <= set(rows) and rows

    rows = wait_until(listed, 30.0, "every broker in the replication table", interval_s=0.5)
    now_ms = time.time() * 1000
    expected = {c.node_id: "Follower" for c in cluster.controllers}
    expected[leader] = "Leader"
    expected.update({b.node_id: "Observer" for b in cluster.brokers})
    assert {n: r["Status"] for n, r in rows.items()} == expected, rows
    leader_end = int(rows[leader]["LogEndOffset"])
    assert leader_end > 0, rows[leader]
    for node, row in rows.items():
        end = int(row["LogEndOffset"])
        assert 0 <= end <= leader_end, row
        assert int(row["Lag"]) == leader_end - end, row
        for column in ("LastFetchTimestamp", "LastCaughtUpTimestamp"):
            assert abs(now_ms - int(row[column])) < FETCH_RECENT_MS, (column, row, now_ms)

    human = parse_replication(tool("--bootstrap-server", bootstrap, "describe", "--replication", "--human-readable"))
    assert set(human) >= set(expected), human
    for row in human.values():
        for column in ("LastFetchTimestamp", "LastCaughtUpTimestamp"):
            m = re.fullmatch(r"(\d+) ms ago", row[column])
            assert m and int(m.group(1)) < FETCH_RECENT_MS, (column, row)


def test_status_and_replication_via_controller(quorum_cluster, tool):
    """`--bootstrap-controller <controller>` (KIP-919): the admin client asks that
    controller for DescribeCluster with endpoint type CONTROLLER, learns the controllers
    and the leader from it, and sends DescribeQuorum to the leader. Through the leader and
    through a follower, the status is the same as through a broker, and the replication
    table lists all voters and observers."""
    cluster = quorum_cluster
    leader = cluster.active_controller().leader_id
    follower = next(c for c in cluster.controllers if c.node_id != leader)
    for via in (cluster.node(leader), follower):
        address = "%s:%d" % via.controller_address
        status, before, after = quiet_status(cluster, tool, "--bootstrap-controller", address)
        check_status(cluster, status, before, after)
        rows = parse_replication(tool("--bootstrap-controller", address, "describe", "--replication"))
        assert rows[leader]["Status"] == "Leader", rows
        assert {c.node_id for c in cluster.controllers} | {b.node_id for b in cluster.brokers} <= set(rows), rows


def test_wrong_listener_is_refused_by_name(quorum_cluster, tool):
    """`--bootstrap-controller` pointed at a broker listener: DescribeCluster asks for
    endpoint type CONTROLLER there and gets MISMATCHED_ENDPOINT_TYPE, which the tool
    reports as such (as against a Kafka broker), instead of taking the brokers for
    controllers."""
    with pytest.raises(ToolFailed) as failed:
        tool("--bootstrap-controller", quorum_cluster.brokers[0].bootstrap, "describe", "--status")
    assert "MismatchedEndpointTypeException" in str(failed.value), failed.value
    assert "endpoint of type BROKER" in str(failed.value), failed.value


# --- failover ------------------------------------------------------------------------------


@pytest.mark.timeout_s(150)
def test_new_leader_after_kill(cluster_factory, tool):
    """kill -9 of the active controller: the tool, retried until a deadline, reports the
    new leader (the one DescribeQuorum confirms among the survivors) with a higher epoch,
    through a broker and through a surviving controller. In the replication table the
    dead controller is a Follower that the new leader has not heard from in its epoch:
    log end offset -1 and no fetch time (-1), as a Kafka leader reports a silent voter,
    with Lag = leader's offset - (-1)."""
    cluster = cluster_factory.start(controllers=3, brokers=3, proxied=False)
    cluster.wait_brokers([b.node_id for b in cluster.brokers])
    old = cluster.active_controller()
    status, _, _ = quiet_status(cluster, tool, "--bootstrap-server", cluster.brokers[0].bootstrap)
    assert status["LeaderId"] == old.leader_id, status

    cluster.kill(old.leader_id)
    survivor = next(c for c in cluster.controllers if c.node_id != old.leader_id)
    new = cluster.active_controller(timeout_s=FAILOVER_DEADLINE_S, exclude=[old.leader_id])
    assert new.leader_id != old.leader_id and new.leader_epoch > old.leader_epoch, (old, new)

    for args in (("--bootstrap-server", cluster.brokers[1].bootstrap),
                 ("--bootstrap-controller", "%s:%d" % survivor.controller_address)):

        def reports_new_leader():
            status = parse_status(tool(*args, "describe", "--status"))
            if status["LeaderId"] == old.leader_id:
                raise AssertionError(f"still the old leader: {status}")
            return status

        status = wait_until(reports_new_leader, FAILOVER_DEADLINE_S, f"the tool via {args} naming a new leader",
                            interval_s=0.5)
        current = cluster.active_controller(exclude=[old.leader_id])
        assert (status["LeaderId"], status["LeaderEpoch"]) == (current.leader_id, current.leader_epoch), (status, current)
        assert {v["id"] for v in status["CurrentVoters"]} == {c.node_id for c in cluster.controllers}, status

    rows = parse_replication(tool("--bootstrap-server", cluster.brokers[2].bootstrap, "describe", "--replication"))
    current = cluster.active_controller(exclude=[old.leader_id])
    assert rows[current.leader_id]["Status"] == "Leader", rows
    dead = rows[old.leader_id]
    assert dead["Status"] == "Follower", rows
    assert (dead["LogEndOffset"], dead["LastFetchTimestamp"], dead["LastCaughtUpTimestamp"]) == ("-1", "-1", "-1"), dead
    assert int(dead["Lag"]) == int(rows[current.leader_id]["LogEndOffset"]) + 1, rows


def test_kafka_transactions_describe_producers_lists_the_idempotent_producers(quorum_cluster, tool_classpath, command_config):
    """`kafka-transactions describe-producers` (DescribeProducers, KIP-664) on a topic
    written by an idempotent confluent-kafka producer: the leader lists that producer with
    its epoch and last sequence (Strom has no transactions yet: no coordinator epoch and
    no open transaction)."""
    from support import create_topic, produce_all, producer

    topic = f"producers-{uuid.uuid4().hex[:8]}"
    bootstrap = quorum_cluster.bootstrap()
    create_topic(bootstrap, topic, partitions=1, config={})
    reports = produce_all(producer(bootstrap, acks="all", **{"enable.idempotence": True}), topic, [{"value": f"v{i}".encode()} for i in range(10)])
    assert all(err is None for err, _ in reports)
    cmd = ["java", *JVM_FLAGS, "-cp", tool_classpath, "org.apache.kafka.tools.TransactionsCommand",
           "--bootstrap-server", bootstrap, "--command-config", str(command_config),
           "describe-producers", "--topic", topic, "--partition", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [l.split() for l in proc.stdout.splitlines() if l.strip()]
    header, rows = lines[0], lines[1:]
    assert header[:2] == ["ProducerId", "ProducerEpoch"], proc.stdout
    assert len(rows) == 1, proc.stdout
    row = dict(zip(header, rows[0]))
    assert int(row["ProducerId"]) >= 0 and row["ProducerEpoch"] == "0", row
    assert row["LastSequence"] == "9", row
    assert row["CurrentTransactionStartOffset"] == "None", row


def test_kafka_log_dirs_describes_sizes_and_space_per_broker(quorum_cluster, tool_classpath, command_config):
    """`kafka-log-dirs --describe` (DescribeLogDirs) on a topic of three replicas: every
    broker lists its log dir, the partition's size holds what was produced and is equal on
    the replicas (in sync after acks=all), no offset lag and no future replica; and each
    dir's file system total and usable bytes are those `statvfs` gives."""
    import os

    from confluent_kafka.admin import NewTopic

    from support import CLIENT_TIMEOUT_S, admin, produce_all, producer

    topic = f"logdirs-{uuid.uuid4().hex[:8]}"
    bootstrap = quorum_cluster.bootstrap()
    for f in admin(bootstrap).create_topics([NewTopic(topic, num_partitions=1, replication_factor=3)], request_timeout=CLIENT_TIMEOUT_S).values():
        f.result(timeout=CLIENT_TIMEOUT_S)
    reports = produce_all(producer(bootstrap, acks="all"), topic, [{"value": b"x" * 1000} for _ in range(50)])
    assert all(err is None for err, _ in reports)
    broker_ids = sorted(b.node_id for b in quorum_cluster.brokers)
    cmd = ["java", *JVM_FLAGS, "-cp", tool_classpath, "org.apache.kafka.tools.LogDirsCommand",
           "--bootstrap-server", bootstrap, "--command-config", str(command_config),
           "--describe", "--topic-list", topic, "--broker-list", ",".join(map(str, broker_ids))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The JSON is the last line; the lines before it say what is being queried.
    answer = json.loads([l for l in proc.stdout.splitlines() if l.startswith("{")][-1])
    by_broker = {b["broker"]: b for b in answer["brokers"]}
    assert sorted(by_broker) == broker_ids, answer
    sizes = set()
    for node in quorum_cluster.brokers:
        dirs = by_broker[node.node_id]["logDirs"]
        assert len(dirs) == 1 and dirs[0]["error"] is None, dirs
        d = dirs[0]
        st = os.statvfs(d["logDir"])
        (part,) = d["partitions"]
        assert part["partition"] == f"{topic}-0" and part["offsetLag"] == 0 and part["isFuture"] is False, part
        assert part["size"] >= 50 * 1000, part
        sizes.add(part["size"])
    assert len(sizes) == 1, f"replicas in sync differ in size: {answer}"

    # The tool prints no space figures; kafka-python (DescribeLogDirs v4, KIP-827) reads them.
    from kafka import KafkaAdminClient

    client = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        answers = client.describe_log_dirs(brokers=broker_ids)
    finally:
        client.close()
    assert sorted(a["broker"] for a in answers) == broker_ids, answers
    for a in answers:
        (d,) = a["log_dirs"]
        st = os.statvfs(d["log_dir"])
        assert d["total_bytes"] == st.f_blocks * st.f_frsize, d
        # Usable space moves as the machine writes; it is a real figure, not -1.
        assert 0 < d["usable_bytes"] <= d["total_bytes"], d
