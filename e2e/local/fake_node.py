"""A stand-in for `strom-broker` in the cluster fixture's self-test: it takes the same
command line (`--config FILE`, `--override key=value`), binds every listener and the HTTP
port, answers /readyz and /healthz with 200, Metadata v1 on a PLAINTEXT listener (itself
as the only broker) and DescribeQuorum v0/v1 on a CONTROLLER listener: the lowest voter id
is the leader at epoch 1, which that voter confirms and every other voter answers with
NOT_LEADER_OR_FOLLOWER, as Kafka does. With `fake.dial=host:port` it holds one
connection to that address (a node bypassing the proxies). SIGTERM exits 0. No consensus, no data: it only
lets the fixture's process handling (start, readiness, kill, pause, restart, cleanup) and
its DescribeQuorum and Metadata plumbing run before the real multi-node broker exists.
"""

from __future__ import annotations

import signal
import socket
import socketserver
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import kafka_wire as w


def parse_args(argv: list[str]) -> dict[str, str]:
    props: dict[str, str] = {}
    i = 0
    while i < len(argv):
        if argv[i] == "--config":
            for line in open(argv[i + 1]):
                line = line.strip()
                if line and not line.startswith("#"):
                    key, _, value = line.partition("=")
                    props[key.strip()] = value.strip()
            i += 2
        elif argv[i] == "--override":
            key, _, value = argv[i + 1].partition("=")
            props[key] = value
            i += 2
        else:
            sys.exit(f"fake_node: unknown argument {argv[i]!r}")
    return props


def host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


class Node:
    def __init__(self, props: dict[str, str]):
        self.props = props
        self.node_id = int(props.get("node.id", "1"))
        self.rack = props.get("broker.rack")
        self.voters = sorted(int(v.split("@")[0]) for v in props.get("controller.quorum.voters", "").split(",") if v)
        self.listeners: dict[str, tuple[str, int]] = {}
        for item in props.get("listeners", "PLAINTEXT://127.0.0.1:9092").split(","):
            name, _, addr = item.partition("://")
            self.listeners[name] = host_port(addr)

    def metadata_v1(self, corr: int) -> bytes:
        host, port = self.listeners["PLAINTEXT"]
        broker = w.int32(self.node_id) + w.string(host) + w.int32(port) + w.nullable_string(self.rack)
        body = w.array([broker]) + w.int32(self.voters[0] if self.voters else -1) + w.array([])
        return w.int32(corr) + body

    def describe_quorum(self, corr: int, version: int) -> bytes:
        leader = self.voters[0] if self.voters else self.node_id
        error = w.NONE if leader == self.node_id else w.NOT_LEADER_OR_FOLLOWER

        def replica(i: int) -> bytes:
            out = w.int32(i) + w.int64(0)
            if version >= 1:
                out += w.int64(-1) + w.int64(-1)
            return out + w.EMPTY_TAGGED_FIELDS

        part = (
            w.int32(0)
            + w.int16(error)
            + w.int32(leader)
            + w.int32(1)
            + w.int64(0)
            + w.compact_array([replica(v) for v in self.voters])
            + w.compact_array([])
            + w.EMPTY_TAGGED_FIELDS
        )
        topic = w.compact_string(w.CLUSTER_METADATA_TOPIC) + w.compact_array([part]) + w.EMPTY_TAGGED_FIELDS
        body = w.int16(w.NONE) + w.compact_array([topic]) + w.EMPTY_TAGGED_FIELDS
        return w.int32(corr) + w.EMPTY_TAGGED_FIELDS + body


def serve_kafka(node: Node, name: str, addr: tuple[str, int]) -> socketserver.ThreadingTCPServer:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            sock: socket.socket = self.request
            while True:
                head = sock.recv(4, socket.MSG_WAITALL)
                if len(head) < 4:
                    return
                size = struct.unpack(">i", head)[0]
                payload = sock.recv(size, socket.MSG_WAITALL)
                if len(payload) < size:
                    return
                api_key, version, corr = struct.unpack(">hhi", payload[:8])
                if api_key == w.API_METADATA and name == "PLAINTEXT":
                    reply = node.metadata_v1(corr)
                elif api_key == w.API_DESCRIBE_QUORUM and name == "CONTROLLER":
                    reply = node.describe_quorum(corr, version)
                else:
                    return  # close: not something this stand-in answers
                sock.sendall(w.frame(reply))

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(addr, Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Http(BaseHTTPRequestHandler):
    def do_GET(self):
        status = 200 if self.path in ("/readyz", "/healthz", "/metrics") else 404
        body = b"ok\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main() -> None:
    node = Node(parse_args(sys.argv[1:]))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    servers = [serve_kafka(node, name, addr) for name, addr in node.listeners.items()]
    http = ThreadingHTTPServer(host_port(node.props.get("strom.http.listener", "127.0.0.1:9644")), Http)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    dialled = []
    if "fake.dial" in node.props:  # the self-test's "node that bypasses the proxies"
        dialled.append(socket.create_connection(host_port(node.props["fake.dial"]), timeout=5))
    print(f"fake node {node.node_id} up: {node.listeners}", flush=True)
    while not done.wait(0.2):
        pass
    print(f"fake node {node.node_id}: SIGTERM, exiting", flush=True)
    for server in servers:
        server.shutdown()
    http.shutdown()


if __name__ == "__main__":
    main()
