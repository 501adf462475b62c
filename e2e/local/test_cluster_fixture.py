"""The cluster fixture's own parts, checked without a broker: the link proxy with plain
sockets (forwarding, blackhole cuts one or both ways, heal, dropped connections with FIN
and RST, a target that is down), the link network's direction bookkeeping, and the
properties and voter addresses each planned node would be started with."""

from __future__ import annotations

import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

import kafka_wire as w
from broker_process import LIVE_BROKERS, BrokerStartError
from cluster import LIVE_CLUSTERS, Cluster, ClusterFactory, Timeouts
from link_proxy import DOWN, UP, LinkNetwork, LinkProxy

HERE = Path(__file__).resolve().parent

QUIET_S = 0.4  # how long a blackholed link must stay silent
WAIT_S = 5.0


class EchoServer:
    """Accepts connections on host, echoes every byte back and records what it got."""

    def __init__(self, host: str = "127.0.0.91"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.address = self.sock.getsockname()
        self.peers: list[tuple[str, int]] = []
        self.received = bytearray()
        self.eofs = 0
        self.resets = 0
        self.conns: list[socket.socket] = []
        self._stop = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.peers.append(peer)
                self.conns.append(conn)
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        while not self._stop:
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                with self._lock:
                    self.resets += 1
                return
            except OSError:
                return
            if not data:
                with self._lock:
                    self.eofs += 1
                conn.close()
                return
            with self._lock:
                self.received += data
            try:
                conn.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()
        for conn in self.conns:
            try:
                conn.close()
            except OSError:
                pass


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo):
    p = LinkProxy("test", echo.address, source_host="127.0.0.92")
    yield p
    p.close()


def wait_for(check, what: str, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what}: not true after {timeout_s}s")


def connect(p: LinkProxy) -> socket.socket:
    s = socket.create_connection(p.address, timeout=WAIT_S)
    s.settimeout(WAIT_S)
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise AssertionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def assert_silent(s: socket.socket, seconds: float = QUIET_S) -> None:
    """Nothing arrives, and the connection is neither closed nor reset."""
    s.settimeout(seconds)
    try:
        data = s.recv(1)
    except socket.timeout:
        return
    finally:
        s.settimeout(WAIT_S)
    raise AssertionError(f"expected silence, got {data!r} (b'' is a close)")


def test_forwards_both_ways_from_the_source_host(echo, proxy):
    with connect(proxy) as a, connect(proxy) as b:
        payload = bytes(range(256)) * 1000
        a.sendall(payload)
        assert recv_exactly(a, len(payload)) == payload
        b.sendall(b"hello")
        assert recv_exactly(b, 5) == b"hello"
    assert {peer[0] for peer in echo.peers} == {"127.0.0.92"}
    assert proxy.accepted == 2
    # The proxy counts a chunk after forwarding it, so the client may read it first.
    wait_for(lambda: proxy.bytes[UP] == proxy.bytes[DOWN] == len(payload) + 5, "every byte counted both ways")
    wait_for(lambda: proxy.connections() == 0, "closed connections forgotten")
    wait_for(lambda: echo.eofs == 2, "the client's close reaches the target as a FIN")


def test_blackhole_cut_holds_bytes_and_heal_delivers_them_intact(echo, proxy):
    with connect(proxy) as s:
        s.sendall(b"before")
        assert recv_exactly(s, 6) == b"before"
        proxy.cut()
        s.sendall(b"during")
        assert_silent(s)
        assert bytes(echo.received) == b"before", "a cut link forwarded bytes"
        proxy.heal()
        assert recv_exactly(s, 6) == b"during"
        assert bytes(echo.received) == b"beforeduring"


def test_one_way_cuts(echo, proxy):
    with connect(proxy) as s:
        s.sendall(b"open")  # a round trip first: the connection is through to the target
        assert recv_exactly(s, 4) == b"open"
        echo.received.clear()
        proxy.cut(up=False, down=True)  # requests go through, answers do not
        s.sendall(b"ping")
        wait_for(lambda: bytes(echo.received) == b"ping", "the request reaches the target")
        assert_silent(s)
        proxy.heal()
        assert recv_exactly(s, 4) == b"ping"

        proxy.cut(up=True, down=False)  # requests are held
        s.sendall(b"pong")
        assert_silent(s)
        assert bytes(echo.received) == b"ping"
        proxy.heal()
        assert recv_exactly(s, 4) == b"pong"


def test_new_connection_to_a_cut_link_is_held_until_heal(echo, proxy):
    proxy.cut()
    with connect(proxy) as s:
        s.sendall(b"early")
        assert_silent(s)
        assert echo.peers == [], "the target saw a connection over a cut link"
        proxy.heal()
        assert recv_exactly(s, 5) == b"early"
    assert len(echo.peers) == 1


def test_a_client_that_gives_up_during_a_cut_never_reaches_the_target(echo, proxy):
    proxy.cut()
    s = connect(proxy)
    s.sendall(b"stale request")
    s.close()  # on loopback the FIN is in the proxy's receive queue when close() returns
    proxy.heal()
    with connect(proxy) as fresh:
        fresh.sendall(b"fresh")
        assert recv_exactly(fresh, 5) == b"fresh"
    assert bytes(echo.received) == b"fresh"
    assert len(echo.peers) == 1


def test_drop_connections_with_fin_and_with_rst(echo, proxy):
    s1 = connect(proxy)
    s1.sendall(b"x")
    assert recv_exactly(s1, 1) == b"x"
    assert proxy.drop_connections() == 1
    assert s1.recv(1) == b"", "a dropped connection ends with a FIN"
    wait_for(lambda: echo.eofs == 1, "the target side is closed too")
    s1.close()

    s2 = connect(proxy)
    s2.sendall(b"y")
    assert recv_exactly(s2, 1) == b"y"
    proxy.cut(drop=True, reset=True)
    with pytest.raises(ConnectionResetError):
        s2.recv(1)
    wait_for(lambda: echo.resets == 1, "the target side is reset too")
    s2.close()

    # The cut stays: a new connection is held, and heal lets it through.
    with connect(proxy) as s3:
        s3.sendall(b"z")
        assert_silent(s3)
        proxy.heal()
        assert recv_exactly(s3, 1) == b"z"
    assert proxy.connections() <= 1


def test_target_down_refuses_the_client():
    with socket.socket() as probe:
        probe.bind(("127.0.0.93", 0))
        dead = probe.getsockname()
    p = LinkProxy("dead", dead)
    try:
        # The proxy's RST may even beat the end of connect() on loopback.
        try:
            with connect(p) as s:
                data = s.recv(1)
        except ConnectionResetError:
            data = b""
        assert data == b"", "a connection to a stopped target must end, not hang"
    finally:
        p.close()


def test_close_stops_listening():
    server = EchoServer()
    p = LinkProxy("closing", server.address)
    try:
        with connect(p) as s:
            s.sendall(b"a")
            assert recv_exactly(s, 1) == b"a"
            p.close()
            assert s.recv(1) == b""
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(p.address, timeout=1).close()
    finally:
        server.close()


def test_network_directions():
    servers = {n: EchoServer(f"127.0.0.9{n}") for n in (1, 2, 3)}
    net = LinkNetwork()
    try:
        for a in servers:
            for b in servers:
                if a != b:
                    net.add(a, b, servers[b].address)

        def blocked():
            return {
                (src, dst, d) for (src, dst), p in net.proxies.items() for d in (UP, DOWN) if p.blocked(d)
            }

        net.cut(1, 2, direction="out")  # bytes 1 -> 2: requests of 1 to 2, answers of 2 to 1
        assert blocked() == {(1, 2, UP), (2, 1, DOWN)}
        net.heal()
        net.cut(1, 2, direction="in")
        assert blocked() == {(2, 1, UP), (1, 2, DOWN)}
        net.heal(1, 2)
        assert blocked() == set()
        net.cut(1)  # every link of 1, both ways
        assert blocked() == {(s, d, x) for s, d in [(1, 2), (2, 1), (1, 3), (3, 1)] for x in (UP, DOWN)}
        net.heal(2)  # heals only 1-2 among 1's links
        assert blocked() == {(s, d, x) for s, d in [(1, 3), (3, 1)] for x in (UP, DOWN)}
        net.heal()
        assert blocked() == set()

        # Traffic 2 -> 3 keeps flowing while 1 is isolated.
        net.cut(1, drop=True)
        with connect(net.proxy(2, 3)) as s:
            s.sendall(b"ok")
            assert recv_exactly(s, 2) == b"ok"
        with connect(net.proxy(1, 3)) as s:
            s.sendall(b"no")
            assert_silent(s)
    finally:
        net.close()
        for server in servers.values():
            server.close()


def test_cluster_plan_gives_each_node_its_properties_and_proxied_voters(tmp_path):
    """No process is started: the plan alone (ports, proxies, server.properties)."""
    cluster = Cluster(tmp_path, controllers=3, brokers=3, timeouts=Timeouts(3000, 500, 500, 1000))
    try:
        assert sorted(cluster.nodes) == [11, 12, 13, 21, 22, 23]
        assert [n.node_id for n in cluster.controllers] == [11, 12, 13]
        assert [n.node_id for n in cluster.brokers] == [21, 22, 23]
        c11, b21 = cluster.nodes[11], cluster.nodes[21]
        assert c11.properties["process.roles"] == "controller"
        assert c11.properties["listeners"] == f"CONTROLLER://127.0.0.11:{c11.listeners['CONTROLLER']}"
        assert "inter.broker.listener.name" not in c11.properties
        assert "broker.rack" not in c11.properties
        assert b21.properties["process.roles"] == "broker"
        assert b21.properties["listeners"] == f"PLAINTEXT://127.0.0.21:{b21.port}"
        assert b21.properties["inter.broker.listener.name"] == "PLAINTEXT"
        assert [cluster.nodes[i].properties["broker.rack"] for i in (21, 22, 23)] == ["rack-a", "rack-b", "rack-c"]
        for node in cluster.nodes.values():
            p = node.properties
            assert p["node.id"] == str(node.node_id)
            assert p["controller.listener.names"] == "CONTROLLER"
            assert p["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
            assert p["strom.http.listener"] == f"{node.host}:{node.http_port}"
            assert p["log.dirs"] == str(node.data_dir)
            assert p["broker.session.timeout.ms"] == "3000"
            assert p["broker.heartbeat.interval.ms"] == "500"
            assert p["controller.quorum.election.timeout.ms"] == "500"
            assert p["controller.quorum.fetch.timeout.ms"] == "1000"
            # Each voter is reached through this node's own proxy, itself directly.
            voters = dict(v.split("@") for v in p["controller.quorum.voters"].split(","))
            assert sorted(int(i) for i in voters) == [11, 12, 13]
            for vid, addr in voters.items():
                vid = int(vid)
                if vid == node.node_id:
                    assert addr == f"127.0.0.{vid}:{cluster.nodes[vid].listeners['CONTROLLER']}"
                else:
                    proxy = cluster.links.proxy(node.node_id, vid)
                    assert addr == proxy.addr
                    assert proxy.target == cluster.nodes[vid].controller_address
                    assert proxy.source_host == node.host
            text = node.config_file.read_text()
            assert f"controller.quorum.voters={p['controller.quorum.voters']}\n" in text
            assert node.command() == [node.command()[0], "--config", str(node.config_file)]
        ports = [(n.host, p) for n in cluster.nodes.values() for p in [*n.listeners.values(), n.http_port]]
        assert len(ports) == len(set(ports))
        assert cluster.bootstrap() == ",".join(f"127.0.0.{i}:{cluster.nodes[i].port}" for i in (21, 22, 23))
        # 6 nodes x 3 voters, minus each voter's link to itself.
        assert len(cluster.links.proxies) == 6 * 3 - 3
    finally:
        cluster.close()
    assert not cluster.dir.exists()


def test_combined_plan(tmp_path):
    cluster = Cluster(tmp_path, controllers=0, brokers=0, combined=3, racks=None)
    try:
        assert sorted(cluster.nodes) == [11, 12, 13]
        for node in cluster.nodes.values():
            assert node.properties["process.roles"] == "broker,controller"
            assert node.properties["listeners"] == (
                f"PLAINTEXT://{node.host}:{node.port},CONTROLLER://{node.host}:{node.listeners['CONTROLLER']}"
            )
            assert "broker.rack" not in node.properties
        assert len(cluster.links.proxies) == 6
    finally:
        cluster.close()


# --- the process handling, with fake_node.py standing in for strom-broker ------------------


def _fake_binary(tmp_path: Path, monkeypatch, script: str) -> Path:
    path = tmp_path / "fake-strom-broker"
    path.write_text(f"#!/bin/sh\nPYTHONPATH={HERE} exec {sys.executable} {script}\n")
    path.chmod(0o755)
    monkeypatch.setenv("STROM_BROKER_BIN", str(path))
    return path


@pytest.fixture
def fake_binary(tmp_path, monkeypatch):
    return _fake_binary(tmp_path, monkeypatch, f'{HERE / "fake_node.py"} "$@"')


def test_cluster_lifecycle_with_fake_nodes(fake_binary, cluster_factory):
    cluster = cluster_factory.start(controllers=3, brokers=3, timeout_s=20)
    assert cluster in LIVE_CLUSTERS
    assert all(node in LIVE_BROKERS for node in cluster.nodes.values())

    status = cluster.active_controller(timeout_s=5)
    assert (status.leader_id, status.leader_epoch) == (11, 1)
    assert [v.replica_id for v in status.voters] == [11, 12, 13]
    assert all(status.answers[i].error_code == w.NOT_LEADER_OR_FOLLOWER for i in (12, 13))

    b21 = cluster.nodes[21]
    assert cluster.metadata(via=21).brokers == [(21, "127.0.0.21", b21.port, "rack-a")]
    assert cluster.unfenced_brokers(via=23) == {23}

    # A node process connected straight to a CONTROLLER listener is reported as a bypass;
    # the test process itself (here, a client socket of pytest) is not.
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed")
    assert cluster.direct_voter_connections() == []
    with socket.create_connection(cluster.nodes[12].controller_address, timeout=5):
        assert cluster.direct_voter_connections() == []
    host, port = cluster.nodes[12].controller_address
    cluster.nodes[23].overrides["fake.dial"] = f"{host}:{port}"
    cluster.restart(23)
    [bypass] = cluster.direct_voter_connections()
    assert bypass.startswith("broker 23 127.0.0.23") and f"-> {host}:{port}" in bypass, bypass
    assert cluster.direct_connections() == [bypass]
    assert "direct node-to-node connections (not through a proxy): ['broker 23" in cluster.describe()
    del cluster.nodes[23].overrides["fake.dial"]
    cluster.restart(23)
    assert cluster.direct_voter_connections() == []

    # SIGSTOP: the node is skipped, SIGCONT brings it back.
    cluster.pause(21)
    assert b21.state() == "paused"
    assert cluster.unfenced_brokers() == {22}, "Metadata asks the first running, unpaused broker"
    cluster.resume(21)
    assert cluster.unfenced_brokers(via=21) == {21}

    # kill -9 of the (fake) leader: nobody confirms leadership, active_controller gives up
    # within its bound; back after a restart.
    cluster.kill(11)
    assert cluster.nodes[11].state() == "exited with code -9"
    started = time.monotonic()
    with pytest.raises(AssertionError, match="active controller"):
        cluster.active_controller(timeout_s=0.5)
    assert time.monotonic() - started < 3
    cluster.start_node(11)
    assert cluster.active_controller(timeout_s=5).leader_id == 11

    # SIGTERM, restart, kill -9 and restart, SIGTERM of a paused node.
    assert cluster.stop(22) == 0
    cluster.restart(22)
    cluster.restart(23, hard=True)
    cluster.pause(12)
    assert cluster.stop(12) == 0
    cluster.start_node(12)

    # Every node down hard, then all of them back.
    cluster.kill_all()
    assert cluster.running() == []
    cluster.start(timeout_s=20)
    assert len(cluster.running()) == 6
    assert cluster.nodes[21].starts == 2
    assert cluster.nodes[22].starts == 3
    assert cluster.nodes[23].starts == 5


def test_close_ends_every_process_proxy_and_directory(fake_binary, tmp_path):
    factory = ClusterFactory(tmp_path)
    cluster = factory.start(controllers=3, brokers=2, timeout_s=20)
    cluster.pause(21)  # a stopped process too
    procs = [n.proc for n in cluster.nodes.values()]
    proxies = list(cluster.links.proxies.values())
    started = time.monotonic()
    factory.close()
    assert time.monotonic() - started < 15
    assert all(p.poll() is not None for p in procs)
    assert not cluster.dir.exists()
    assert cluster not in LIVE_CLUSTERS
    assert not any(n in LIVE_BROKERS for n in cluster.nodes.values())
    for proxy in proxies:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(proxy.address, timeout=1).close()


def test_a_node_that_exits_at_start_fails_fast_with_its_log(tmp_path, monkeypatch, cluster_factory):
    _fake_binary(tmp_path, monkeypatch, "-c 'print(\"refusing to start: test\"); raise SystemExit(2)'")
    started = time.monotonic()
    with pytest.raises(BrokerStartError, match="refusing to start: test"):
        cluster_factory.start(controllers=1, brokers=1, timeout_s=20)
    assert time.monotonic() - started < 10
