"""Start-up configuration: a properties file with --override on top, and refusal to start
on an unknown property or an invalid value, naming the property."""

import subprocess

import pytest
from confluent_kafka.admin import ConfigResource, ConfigSource, NewTopic, ResourceType

from broker_process import Broker
from support import CLIENT_TIMEOUT_S, admin, wait_for_topic

EXIT_TIMEOUT_S = 20


def run_to_exit(tmp_path, args: list[str]) -> subprocess.CompletedProcess:
    """Runs the broker with free ports and a private data dir plus args; it must exit."""
    b = Broker(tmp_path)
    cmd = b.command() + args
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=EXIT_TIMEOUT_S, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail(f"broker still running {EXIT_TIMEOUT_S}s after start with {args}: it should refuse to start")


@pytest.mark.parametrize(
    "prop,value",
    [
        ("foo.bar", "1"),
        ("num.partitions", "abc"),
        ("auto.create.topics.enable", "maybe"),
        ("num.partitions", "0"),
        ("compression.type", "brotli"),
        ("compression.lz4.level", "18"),
    ],
)
def test_bad_property_refuses_to_start(tmp_path, prop, value):
    """An unknown property or an invalid value makes the broker exit non-zero with the
    property's name in its output."""
    proc = run_to_exit(tmp_path, ["--override", f"{prop}={value}"])
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"exit code 0 with {prop}={value}\n{output}"
    assert prop in output, f"output does not name {prop}:\n{output}"


def test_missing_config_file_refuses_to_start(tmp_path):
    """--config naming a file that does not exist makes the broker exit non-zero, naming
    the file."""
    missing = tmp_path / "nope.properties"
    proc = run_to_exit(tmp_path, ["--config", str(missing)])
    assert proc.returncode != 0
    assert "nope.properties" in proc.stdout + proc.stderr


def test_config_file_with_overrides_on_top(broker_factory, topic_name):
    """Properties come from the --config file (num.partitions=5 gives new topics five
    partitions, shown as STATIC_BROKER_CONFIG) and --override wins over the file (the
    file's listeners is replaced by the fixture's)."""
    broker = broker_factory.start(
        config_text="# test config\nnum.partitions=5\nlisteners=PLAINTEXT://127.0.0.1:1\n",
    )
    futures = admin(broker.bootstrap).create_topics([NewTopic(topic_name)], request_timeout=CLIENT_TIMEOUT_S)
    futures[topic_name].result(timeout=CLIENT_TIMEOUT_S)
    assert len(wait_for_topic(broker.bootstrap, topic_name).partitions) == 5

    resource = ConfigResource(ResourceType.BROKER, "1")
    configs = admin(broker.bootstrap).describe_configs([resource])[resource].result(timeout=CLIENT_TIMEOUT_S)
    assert configs["num.partitions"].value == "5"
    assert ConfigSource(configs["num.partitions"].source) == ConfigSource.STATIC_BROKER_CONFIG
    assert configs["listeners"].value == f"PLAINTEXT://{broker.bootstrap}"


def test_a_kafka_4_style_standalone_node_and_a_broker_that_bootstraps_from_it(broker_factory, topic_name):
    """Kafka 4's quick-start server.properties names no voters: a combined node whose
    controller.quorum.bootstrap.servers is its own controller listener (advertised too)
    is a quorum of one, as after `kafka-storage format --standalone`. A broker-only node
    given only that bootstrap server learns the voter from it, registers and serves."""
    from broker_process import free_port
    from support import produce_all, producer, read_partition

    node = broker_factory.create()
    cport = free_port()
    node.overrides.update(
        {
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://localhost:{cport}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.quorum.bootstrap.servers": f"localhost:{cport}",
        }
    )
    node.start()
    follower = broker_factory.create(
        {
            "process.roles": "broker",
            "node.id": "2",
            "controller.listener.names": "CONTROLLER",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{cport}",
        }
    )
    follower.start()
    futures = admin(follower.bootstrap).create_topics(
        [NewTopic(topic_name, num_partitions=2, replication_factor=2)], request_timeout=CLIENT_TIMEOUT_S
    )
    futures[topic_name].result(timeout=CLIENT_TIMEOUT_S)
    md = wait_for_topic(node.bootstrap, topic_name)
    assert all(sorted(p.replicas) == [1, 2] for p in md.partitions.values()), md
    reports = produce_all(
        producer(follower.bootstrap, acks="all"),
        topic_name,
        [{"partition": p, "value": f"v{p}".encode()} for p in range(2)],
    )
    assert all(err is None for err, _ in reports), reports
    for p in range(2):
        assert [r.value for r in read_partition(node.bootstrap, topic_name, p)] == [f"v{p}".encode()]
    # The broker goes first: its controlled shutdown needs the controller.
    assert follower.stop() == 0
