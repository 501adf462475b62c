"""A multi-node Strom cluster on loopback: C controllers and B brokers (or combined
`broker,controller` nodes), each a real `strom-broker` process on its own loopback
address with its own data directory, log file and HTTP port, every node-to-node link
through a `LinkProxy` of this process so a test can cut and heal it.

Layout (node id = last byte of the node's address, so logs read easily):

- combined nodes, then controllers: ids 11, 12, ... on 127.0.0.11, 127.0.0.12, ...
- brokers: ids 21, 22, ... on 127.0.0.21, 127.0.0.22, ...
- a node with the broker role listens on `PLAINTEXT://<host>:<port>` (clients connect to
  it directly); a node with the controller role on `CONTROLLER://<host>:<port>`.
- node i's `controller.quorum.voters` names, for every voter j != i, the proxy of the link
  i -> j (and its own CONTROLLER listener for itself), so each node-to-voter connection
  crosses exactly one proxy. The test process itself talks to every node directly.

Use (see conftest.py's `cluster_factory`):

    cluster = cluster_factory.start(controllers=3, brokers=3)
    leader = cluster.active_controller().leader_id
    cluster.kill(leader)                     # kill -9; also stop/pause/resume/restart/start_node
    cluster.cut(12)                          # blackhole every link of node 12, both ways
    cluster.cut(12, 13, direction="out")     # only the bytes 12 -> 13
    cluster.heal()                           # every link open again
    cluster.wait_ready()                     # /readyz of every running node is 200
    md = cluster.metadata()                  # Metadata v1 from a running broker
    cluster.bootstrap()                      # "127.0.0.21:p,127.0.0.22:p,..." for clients

Every wait polls with a deadline; `close()` stops every process (SIGTERM, then SIGKILL
after a bounded wait), closes the proxies and removes the cluster's directory
(kept when STROM_E2E_KEEP_CLUSTER_DIRS=1).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import kafka_wire as w
from broker_process import LIVE_BROKERS, READY_TIMEOUT_S, Broker, BrokerStartError
from link_proxy import BOTH, LinkNetwork, LinkProxy

CONTROLLER_HOST_BASE = 11
BROKER_HOST_BASE = 21
PLAINTEXT = "PLAINTEXT"
CONTROLLER = "CONTROLLER"
# The second broker listener of a cluster made with replication_listener=True: brokers
# replicate over it (inter.broker.listener.name), clients use PLAINTEXT.
REPLICATION = "REPLICATION"
DEFAULT_RACKS = ("rack-a", "rack-b", "rack-c")
# Node ports are picked below Linux's ephemeral range (32768+ by default), so no outgoing
# connection (of a node, a proxy or a client) can take a stopped node's port before it
# restarts.
NODE_PORT_RANGE = (20000, 32000)
STOP_GRACE_S = 8.0
POLL_S = 0.05

T = TypeVar("T")

# Clusters alive right now, so a failing test's report can describe them.
LIVE_CLUSTERS: list["Cluster"] = []


@dataclass(frozen=True)
class Timeouts:
    """The cluster timeouts every node gets, short so that tests run fast."""

    session_ms: int = 3000  # broker.session.timeout.ms (Kafka: 9000)
    heartbeat_ms: int = 500  # broker.heartbeat.interval.ms (Kafka: 2000)
    election_ms: int = 500  # controller.quorum.election.timeout.ms (Kafka: 1000)
    fetch_ms: int = 1000  # controller.quorum.fetch.timeout.ms (Kafka: 2000)

    def properties(self) -> dict[str, str]:
        props = {
            "controller.quorum.election.timeout.ms": str(self.election_ms),
            "controller.quorum.fetch.timeout.ms": str(self.fetch_ms),
        }
        props["broker.session.timeout.ms"] = str(self.session_ms)
        props["broker.heartbeat.interval.ms"] = str(self.heartbeat_ms)
        return props


def wait_until(check: Callable[[], T], timeout_s: float, what: str, interval_s: float = POLL_S) -> T:
    """Polls check() until it returns a truthy value (returned) or timeout_s passes
    (AssertionError naming what and the last value or exception)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except (OSError, ValueError, w.ConnectionClosed, AssertionError) as err:
            last = err
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not true after {timeout_s}s (last: {last!r})")
        time.sleep(interval_s)


_USED_PORTS: set[tuple[str, int]] = set()


def pick_port(host: str) -> int:
    """A port free on host right now, below the ephemeral range, never handed out twice
    in this process."""
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(*NODE_PORT_RANGE)
        if (host, port) in _USED_PORTS:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _USED_PORTS.add((host, port))
        return port
    raise RuntimeError(f"no free port on {host} in {NODE_PORT_RANGE}")


class Node(Broker):
    """One cluster node: a Broker process with a node id, roles, a rack and a
    server.properties file holding its whole configuration."""

    def __init__(
        self,
        workdir: Path,
        node_id: int,
        roles: tuple[str, ...],
        host: str,
        rack: str | None,
        replication_listener: bool = False,
    ):
        listeners = {}
        if "broker" in roles:
            listeners[PLAINTEXT] = pick_port(host)
            if replication_listener:
                listeners[REPLICATION] = pick_port(host)
        if "controller" in roles:
            listeners[CONTROLLER] = pick_port(host)
        kind = "combined" if len(roles) == 2 else roles[0]
        super().__init__(
            workdir,
            config_file=workdir / "server.properties",
            host=host,
            listeners=listeners,
            http_port=pick_port(host),
            name=f"{kind} {node_id}",
        )
        self.node_id = node_id
        self.roles = roles
        self.rack = rack
        # Everything goes into server.properties; `overrides` stays for a test that wants
        # to change a property for the next start (`node.overrides[key] = value`).
        self.base_properties = dict(self.overrides)
        self.overrides = {}
        self.properties: dict[str, str] = {}

    @property
    def is_broker(self) -> bool:
        return "broker" in self.roles

    @property
    def is_controller(self) -> bool:
        return "controller" in self.roles

    @property
    def controller_address(self) -> tuple[str, int]:
        return self.address(CONTROLLER)

    def write_config(self, properties: dict[str, str]) -> None:
        self.properties = dict(properties)
        lines = [f"# node {self.node_id} ({','.join(self.roles)}), written by e2e/local/cluster.py"]
        lines += [f"{k}={v}" for k, v in self.properties.items()]
        self.config_file.write_text("\n".join(lines) + "\n")

    def state(self) -> str:
        if self.proc is None:
            return "never started"
        if self.running():
            return "paused" if self.paused else "running"
        return f"exited with code {self.proc.returncode}"


@dataclass
class QuorumStatus:
    """The quorum as the active controller reports it (DescribeQuorum), plus every
    controller's own answer (a QuorumPartition, or the exception it raised)."""

    leader_id: int
    leader_epoch: int
    high_watermark: int
    voters: list[w.ReplicaState]
    observers: list[w.ReplicaState]
    answers: dict[int, object] = field(default_factory=dict)


NodeRef = "int | Node"


class Cluster:
    """Plans the nodes and links at construction (ports, proxies, server.properties);
    `start()` launches them. Node ids are the keys of `nodes`."""

    def __init__(
        self,
        base_dir: Path,
        controllers: int = 3,
        brokers: int = 3,
        combined: int = 0,
        racks: Iterable[str] | None = DEFAULT_RACKS,
        timeouts: Timeouts = Timeouts(),
        props: dict[str, object] | None = None,
        node_props: dict[int, dict[str, object]] | None = None,
        proxied: bool = True,
        replication_listener: bool = False,
        brokers_bootstrap: bool = False,
    ):
        """brokers_bootstrap: broker-only nodes get controller.quorum.bootstrap.servers
        (every voter) instead of controller.quorum.voters and learn the voters from a
        controller (KIP-853's DescribeQuorum v2); needs proxied=False, since a controller
        names the voters as it reaches them. replication_listener: brokers also listen on REPLICATION, advertised through
        one proxy in front of each broker's REPLICATION listener (every follower's
        connections to that broker cross it), and replicate over it; clients keep
        PLAINTEXT, which no proxy carries. `cut_replication` blackholes those proxies."""
        if controllers + combined < 1:
            raise ValueError("a cluster needs at least one voter")
        self.dir = Path(tempfile.mkdtemp(prefix="cluster-", dir=base_dir))
        self.timeouts = timeouts
        self.proxied = proxied
        if brokers_bootstrap and proxied:
            raise ValueError("brokers_bootstrap needs proxied=False")
        self.brokers_bootstrap = brokers_bootstrap
        self.links = LinkNetwork()
        self.nodes: dict[int, Node] = {}
        racks = list(racks) if racks else []
        specs: list[tuple[int, tuple[str, ...]]] = []
        for i in range(combined):
            specs.append((CONTROLLER_HOST_BASE + i, ("broker", "controller")))
        for i in range(controllers):
            specs.append((CONTROLLER_HOST_BASE + combined + i, ("controller",)))
        for i in range(brokers):
            specs.append((BROKER_HOST_BASE + i, ("broker",)))
        broker_index = 0
        for node_id, roles in specs:
            rack = None
            if "broker" in roles and racks:
                rack = racks[broker_index % len(racks)]
                broker_index += 1
            workdir = self.dir / f"node-{node_id}"
            workdir.mkdir()
            self.nodes[node_id] = Node(
                workdir, node_id, roles, f"127.0.0.{node_id}", rack, replication_listener and "broker" in roles
            )

        voters = [n for n in self.nodes.values() if n.is_controller]
        # Into each broker's REPLICATION listener: one proxy shared by every follower (a
        # broker advertises one address per listener, so links cannot be told apart).
        self.replication_proxies: dict[int, LinkProxy] = {
            n.node_id: LinkProxy(f"replication-into-{n.node_id}", n.address(REPLICATION))
            for n in self.nodes.values()
            if REPLICATION in n.listeners
        }
        if proxied:
            for src in self.nodes.values():
                for dst in voters:
                    if dst is not src:
                        self.links.add(src.node_id, dst.node_id, dst.controller_address, source_host=src.host)
        for node in self.nodes.values():
            node.write_config(self._properties(node, voters, props or {}, (node_props or {}).get(node.node_id, {})))
        LIVE_CLUSTERS.append(self)

    def _voter_address(self, src: Node, voter: Node) -> str:
        if self.proxied and voter is not src:
            return self.links.proxy(src.node_id, voter.node_id).addr
        host, port = voter.controller_address
        return f"{host}:{port}"

    def _properties(self, node: Node, voters: list[Node], props: dict, own: dict) -> dict[str, str]:
        p = {
            "process.roles": ",".join(node.roles),
            "node.id": str(node.node_id),
            "listeners": node.base_properties["listeners"],
            "controller.listener.names": CONTROLLER,
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        }
        if node.is_broker:
            p["inter.broker.listener.name"] = PLAINTEXT
        if node.node_id in self.replication_proxies:
            p["listener.security.protocol.map"] += f",{REPLICATION}:PLAINTEXT"
            p["inter.broker.listener.name"] = REPLICATION
            proxy = self.replication_proxies[node.node_id]
            p["advertised.listeners"] = (
                f"{PLAINTEXT}://{node.host}:{node.listeners[PLAINTEXT]},{REPLICATION}://{proxy.addr}"
            )
        if self.brokers_bootstrap and not node.is_controller:
            p["controller.quorum.bootstrap.servers"] = ",".join(self._voter_address(node, v) for v in voters)
        else:
            p["controller.quorum.voters"] = ",".join(f"{v.node_id}@{self._voter_address(node, v)}" for v in voters)
        if node.rack is not None:
            p["broker.rack"] = node.rack
        p["log.dirs"] = node.base_properties["log.dirs"]
        p["strom.http.listener"] = node.base_properties["strom.http.listener"]
        p.update(self.timeouts.properties())
        p.update({k: str(v) for k, v in props.items()})
        p.update({k: str(v) for k, v in own.items()})
        return p

    # -- node sets ---------------------------------------------------------------------

    def node(self, ref: NodeRef) -> Node:
        return ref if isinstance(ref, Node) else self.nodes[ref]

    def _many(self, refs: Iterable[NodeRef] | None) -> list[Node]:
        return list(self.nodes.values()) if refs is None else [self.node(r) for r in refs]

    @property
    def controllers(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.is_controller]

    @property
    def brokers(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.is_broker]

    def running(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.running()]

    def bootstrap(self, nodes: Iterable[NodeRef] | None = None, running_only: bool = False) -> str:
        """The PLAINTEXT addresses of the given brokers (default: every broker)."""
        chosen = [n for n in (self._many(nodes) if nodes is not None else self.brokers) if n.is_broker]
        if running_only:
            chosen = [n for n in chosen if n.running() and not n.paused]
        return ",".join(n.bootstrap for n in chosen)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, nodes: Iterable[NodeRef] | None = None, wait: bool = True, timeout_s: float = 45.0) -> "Cluster":
        """Starts the given nodes (default: all that are not running), controllers first,
        and waits until every one of them is ready."""
        chosen = [n for n in self._many(nodes) if not n.running()]
        chosen.sort(key=lambda n: not n.is_controller)
        for node in chosen:
            node.start(wait_ready=False)
        if wait:
            self.wait_ready(chosen, timeout_s)
        return self

    def start_node(self, ref: NodeRef, wait: bool = True, timeout_s: float = READY_TIMEOUT_S) -> Node:
        node = self.node(ref)
        node.start(wait_ready=False)
        if wait:
            self.wait_ready([node], timeout_s)
        return node

    def stop(self, ref: NodeRef, timeout_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM (a controlled shutdown), wait up to timeout_s, then SIGKILL; the exit code."""
        return self.node(ref).stop(timeout_s)

    def kill(self, ref: NodeRef) -> None:
        """kill -9."""
        self.node(ref).kill()

    def pause(self, ref: NodeRef) -> None:
        """SIGSTOP: alive but frozen; its sockets stay open and silent."""
        self.node(ref).pause()

    def resume(self, ref: NodeRef) -> None:
        """SIGCONT."""
        self.node(ref).resume()

    def restart(self, ref: NodeRef, hard: bool = False, wait: bool = True, timeout_s: float = READY_TIMEOUT_S) -> Node:
        node = self.node(ref)
        node.kill() if hard else node.stop(STOP_GRACE_S)
        return self.start_node(node, wait, timeout_s)

    def kill_all(self) -> None:
        for node in self.nodes.values():
            node.kill()

    def wait_ready(self, nodes: Iterable[NodeRef] | None = None, timeout_s: float = 45.0) -> None:
        """Waits until /readyz answers 200 on every given node (default: every running
        node); fails at once if one of them exits."""
        chosen = self._many(nodes) if nodes is not None else self.running()
        pending = {n.node_id: n for n in chosen}
        last: dict[int, str] = {}
        deadline = time.monotonic() + timeout_s
        while pending:
            for node_id, node in list(pending.items()):
                if node.proc is None or node.proc.poll() is not None:
                    code = None if node.proc is None else node.proc.returncode
                    raise BrokerStartError(f"{node.label} is not running (exit code {code})\n{node.log_tail(60)}")
                try:
                    status, body = node.http_get("/readyz", timeout_s=1.0)
                    if status == 200:
                        del pending[node_id]
                        continue
                    last[node_id] = f"HTTP {status} {body.strip()[:200]}"
                except OSError as err:
                    last[node_id] = repr(err)
            if not pending:
                return
            if time.monotonic() >= deadline:
                detail = "\n".join(f"  {pending[i].label}: {last.get(i, 'no answer')}" for i in pending)
                raise BrokerStartError(f"not ready after {timeout_s}s:\n{detail}")
            time.sleep(POLL_S)

    def close(self) -> None:
        """Stops every process (brokers first, SIGTERM then SIGKILL after a bounded wait),
        closes the proxies and removes the cluster directory."""
        try:
            for group in (
                [n for n in self.nodes.values() if not n.is_controller],
                [n for n in self.nodes.values() if n.is_controller],
            ):
                live = [n for n in group if n.running()]
                for node in live:
                    node.proc.terminate()
                    if node.paused:
                        node.resume()
                deadline = time.monotonic() + STOP_GRACE_S
                for node in live:
                    try:
                        node.proc.wait(max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        node.kill()
            for node in self.nodes.values():
                node.kill()
                if node in LIVE_BROKERS:
                    LIVE_BROKERS.remove(node)
        finally:
            self.links.close()
            for proxy in self.replication_proxies.values():
                proxy.close()
            self._forget_admins()
            if self in LIVE_CLUSTERS:
                LIVE_CLUSTERS.remove(self)
            if os.environ.get("STROM_E2E_KEEP_CLUSTER_DIRS") != "1":
                shutil.rmtree(self.dir, ignore_errors=True)

    def _forget_admins(self) -> None:
        import support

        addresses = [n.bootstrap for n in self.brokers]
        for key in list(support._ADMINS):
            if any(a in key.split(",") for a in addresses):
                support.forget_admin(key)

    # -- links -------------------------------------------------------------------------

    def cut(
        self, a: NodeRef, b: NodeRef | None = None, direction: str = BOTH, drop: bool = False, reset: bool = False
    ) -> None:
        """Blackholes the link between a and b, or every link of a; direction is "both",
        "out" (bytes from a) or "in" (bytes to a); drop also ends open connections (with
        an RST when reset). Client connections to brokers are never cut."""
        self._need_proxies()
        self.links.cut(self.node(a).node_id, None if b is None else self.node(b).node_id, direction, drop, reset)

    def cut_replication(self, ref: NodeRef, drop: bool = True) -> None:
        """Blackholes every follower's connections into a broker's REPLICATION listener
        (both directions; drop also ends the open ones). Its clients and its links to the
        controllers stay up."""
        self.replication_proxies[self.node(ref).node_id].cut(drop=drop)

    def heal_replication(self, ref: NodeRef | None = None) -> None:
        for node_id, proxy in self.replication_proxies.items():
            if ref is None or self.node(ref).node_id == node_id:
                proxy.heal()

    def isolate(self, ref: NodeRef, drop: bool = True) -> None:
        """Cuts every link of a node both ways and drops its open connections."""
        self.cut(ref, drop=drop)

    def heal(self, a: NodeRef | None = None, b: NodeRef | None = None) -> None:
        """Opens the link a-b, every link of a, or every link."""
        self._need_proxies()
        self.links.heal(None if a is None else self.node(a).node_id, None if b is None else self.node(b).node_id)

    def drop_connections(self, a: NodeRef, b: NodeRef | None = None, reset: bool = False) -> int:
        self._need_proxies()
        return self.links.drop(self.node(a).node_id, None if b is None else self.node(b).node_id, reset)

    def direct_connections(self, listener: str | None = None) -> list[str]:
        """Established connections from one node process straight to a listener of
        another node (only `listener`'s, e.g. CONTROLLER, when given), read from
        `ss -tnp`: traffic that no proxy carries, so no cut stops it."""
        if shutil.which("ss") is None:
            raise RuntimeError("ss not found on PATH (apt-get install iproute2)")
        out = subprocess.run(["ss", "-Htnp", "state", "established"], capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            raise RuntimeError(f"ss failed: {out.stderr}")
        by_pid = {n.proc.pid: n for n in self.running()}
        targets = {
            f"{n.host}:{port}": (n, name)
            for n in self.nodes.values()
            for name, port in n.listeners.items()
            if listener is None or name == listener
        }
        found = []
        for line in out.stdout.splitlines():
            fields = line.split()
            # Recv-Q Send-Q Local Peer [Process]
            if len(fields) < 5 or fields[3] not in targets:
                continue
            target, name = targets[fields[3]]
            for pid_text in fields[4].split("pid=")[1:]:
                node = by_pid.get(int(pid_text.split(",")[0]))
                if node is not None and node is not target:
                    found.append(f"{node.label} -> {target.label} {name} ({fields[2]} -> {fields[3]})")
        return found

    def direct_voter_connections(self) -> list[str]:
        """Node connections straight to another node's CONTROLLER listener, bypassing the
        proxies. Empty when every node dials voters only through the addresses its own
        controller.quorum.voters names."""
        return self.direct_connections(CONTROLLER)

    def _need_proxies(self) -> None:
        if not self.proxied:
            raise RuntimeError("this cluster was made with proxied=False: its links cannot be cut")

    # -- the quorum --------------------------------------------------------------------

    def describe_quorum(self, ref: NodeRef, timeout_s: float = 1.0) -> w.QuorumPartition:
        """The metadata partition of one controller's DescribeQuorum answer (v1), asked
        directly on its CONTROLLER listener; a top-level error raises AssertionError."""
        node = self.node(ref)
        resp = w.describe_quorum(*node.controller_address, version=1, timeout_s=timeout_s)
        part = resp.metadata_partition()
        if resp.error_code != w.NONE or part is None:
            raise AssertionError(f"DescribeQuorum on {node.label}: error {resp.error_code}, partitions {resp.partitions}")
        return part

    def quorum_answers(self, exclude: Iterable[NodeRef] = ()) -> dict[int, object]:
        """Every running, unpaused controller's DescribeQuorum answer (or the exception)."""
        skip = {self.node(r).node_id for r in exclude}
        out: dict[int, object] = {}
        for node in self.controllers:
            if node.node_id in skip or not node.running() or node.paused:
                continue
            try:
                out[node.node_id] = self.describe_quorum(node)
            except (OSError, ValueError, AssertionError, w.ConnectionClosed) as err:
                out[node.node_id] = err
        return out

    def active_controller(self, timeout_s: float = 10.0, exclude: Iterable[NodeRef] = ()) -> QuorumStatus:
        """The active controller: the leader of the highest epoch that some controller
        reports, once that leader confirms it in its own DescribeQuorum answer (a stale
        leader cut off from the quorum may still claim an older epoch). Retries until
        timeout_s; `exclude` skips nodes (e.g. an isolated one)."""

        def find() -> QuorumStatus | None:
            answers = self.quorum_answers(exclude)
            claims = [
                a for a in answers.values() if isinstance(a, w.QuorumPartition) and a.error_code == w.NONE and a.leader_id >= 0
            ]
            if not claims:
                return None
            epoch = max(a.leader_epoch for a in claims)
            leader = next(a.leader_id for a in claims if a.leader_epoch == epoch)
            own = answers.get(leader)
            if (
                isinstance(own, w.QuorumPartition)
                and own.error_code == w.NONE
                and own.leader_id == leader
                and own.leader_epoch == epoch
            ):
                return QuorumStatus(leader, epoch, own.high_watermark, own.voters, own.observers, answers)
            return None

        return wait_until(find, timeout_s, "an active controller confirmed by DescribeQuorum")

    # -- cluster metadata through a broker ---------------------------------------------

    def metadata(self, via: NodeRef | None = None, topics: list[str] | None = None, timeout_s: float = 10.0) -> w.MetadataResponseV1:
        """Metadata v1 from the given broker, or from the first running broker that
        answers (retried until timeout_s)."""
        candidates = [self.node(via)] if via is not None else self.brokers

        def ask() -> w.MetadataResponseV1 | None:
            for node in candidates:
                if node.running() and not node.paused:
                    try:
                        return w.metadata(node.host, node.port, topics, timeout_s=2.0)
                    except (OSError, ValueError, w.ConnectionClosed):
                        continue
            return None

        return wait_until(ask, timeout_s, "a Metadata answer from a running broker")

    def unfenced_brokers(self, via: NodeRef | None = None) -> set[int]:
        """The broker ids Metadata lists (Metadata lists only unfenced brokers)."""
        return {b[0] for b in self.metadata(via).brokers}

    def partition_leaders(self, topic: str, via: NodeRef | None = None) -> dict[int, int]:
        """partition -> leader id (-1 when leaderless) of one topic, from Metadata."""
        md = self.metadata(via, [topic])
        t = md.topics.get(topic)
        if t is None or t.error_code not in (w.NONE, w.LEADER_NOT_AVAILABLE):
            raise AssertionError(f"topic {topic} not in metadata: {t!r}")
        return {p.partition: p.leader for p in t.partitions}

    def wait_brokers(self, expected: Iterable[int], via: NodeRef | None = None, timeout_s: float = 20.0) -> set[int]:
        """Waits until Metadata lists exactly the expected unfenced broker ids."""
        want = set(expected)

        def check() -> set[int] | None:
            got = self.unfenced_brokers(via)
            if got != want:
                raise AssertionError(f"Metadata lists brokers {sorted(got)}")
            return got or {-1}

        wait_until(check, timeout_s, f"Metadata lists exactly brokers {sorted(want)}")
        return want

    # -- reports -----------------------------------------------------------------------

    def describe(self) -> str:
        lines = [f"cluster in {self.dir}; timeouts {self.timeouts}"]
        for node in self.nodes.values():
            listeners = ", ".join(f"{k}://{node.host}:{p}" for k, p in node.listeners.items())
            lines.append(
                f"  {node.label}: {node.state()}, rack {node.rack}, {listeners}, http {node.host}:{node.http_port}, "
                f"log {node.log_path}"
            )
        try:
            direct = self.direct_connections() if self.running() else []
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as err:
            direct = [f"(ss failed: {err})"]
        lines.append(f"  direct node-to-node connections (not through a proxy): {direct or 'none'}")
        if self.proxied:
            for (src, dst), proxy in sorted(self.links.proxies.items()):
                lines.append(
                    f"  link {src}->{dst}: {proxy!r}, {proxy.accepted} accepted, {proxy.connections()} open, "
                    f"bytes up {proxy.bytes['up']} down {proxy.bytes['down']}"
                )
        return "\n".join(lines)


class ClusterFactory:
    """Makes clusters under one base directory and closes all of them on close."""

    def __init__(self, base: Path):
        self.base = base
        self.clusters: list[Cluster] = []

    def create(self, **kwargs) -> Cluster:
        cluster = Cluster(self.base, **kwargs)
        self.clusters.append(cluster)
        return cluster

    def start(self, timeout_s: float = 45.0, **kwargs) -> Cluster:
        return self.create(**kwargs).start(timeout_s=timeout_s)

    def close(self) -> None:
        for cluster in self.clusters:
            cluster.close()
