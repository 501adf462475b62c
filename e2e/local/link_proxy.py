"""TCP proxies that stand for the network links between cluster nodes, so a test can cut
one link, or every link of a node, in one or both directions, and heal it again.

Each node is given its own copy of `controller.quorum.voters`, naming for every other
voter the proxy of the link (this node -> that voter) instead of the voter's address, so
every node-to-node connection passes through exactly one `LinkProxy` of this process.

A proxy carries bytes both ways: "up" is from the connecting node to the target (requests),
"down" is back (responses). A cut direction is a blackhole: the proxy stops reading from
that side, sends nothing and resets nothing, so the sender sees silence (its writes fill
the socket buffers, its requests time out), exactly as behind a dropped route. No byte is
ever discarded, so a healed link carries on with an intact stream, as TCP would after the
route comes back. New connections made to a cut link are accepted but held: the proxy
connects to the target only once the link is open in both directions (no handshake could
complete over a half-open route), and not at all if the client gave up and closed in the
meantime (its SYN would never have been answered). Existing connections can also be dropped on request
(`drop_connections`), with a FIN or with an RST, to model a peer that lost its state or a
NAT that forgot the flow.

`LinkNetwork` keeps one proxy per ordered pair of nodes and speaks in nodes: `cut(a, b)`
blocks the bytes a->b and b->a on both proxies of the pair, `cut(a, b, "out")` only those
from a to b, `cut(a)` every link of a.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

POLL_S = 0.05
CONNECT_TIMEOUT_S = 5.0
JOIN_TIMEOUT_S = 2.0
CHUNK = 65536

UP = "up"
DOWN = "down"


def _set_reset_on_close(sock: socket.socket) -> None:
    """SO_LINGER with a zero timeout: close() sends an RST instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


def _close(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


class _Pipe:
    """One proxied connection: the accepted client socket and, once the link is open,
    the socket to the target; one thread per direction pumps the bytes."""

    def __init__(self, proxy: "LinkProxy", client: socket.socket, peer: tuple[str, int]):
        self.proxy = proxy
        self.client = client
        self.peer = peer
        self.upstream: socket.socket | None = None
        self.held = False  # accepted while the link was cut (or healed meanwhile)
        self.aborted = False
        self.reset = False
        self.threads: list[threading.Thread] = []
        self._ended = 0
        self._lock = threading.Lock()
        self.closed = threading.Event()
        client.settimeout(POLL_S)

    def start(self) -> None:
        t = threading.Thread(target=self._run, name=f"{self.proxy.name}-conn", daemon=True)
        self.threads.append(t)
        t.start()

    def _run(self) -> None:
        # Held until the link is open both ways: no handshake completes over a cut link.
        if not self.proxy._wait_open(self, (UP, DOWN)):
            self._finish()
            return
        pending = b""
        if self.held:
            # Its SYN would never have been answered: a client that gave up meanwhile
            # never reaches the target; one still waiting gets through with its bytes.
            pending = self._drain_client()
            if pending is None:
                self._finish()
                return
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if self.proxy.source_host is not None:
                upstream.bind((self.proxy.source_host, 0))
            upstream.settimeout(CONNECT_TIMEOUT_S)
            upstream.connect(self.proxy.target)
        except OSError:
            # The target is down: refuse the client as the kernel would, with an RST.
            _close(upstream)
            self.reset = True
            self._finish()
            return
        upstream.settimeout(POLL_S)
        self.upstream = upstream
        if pending and not self._send(upstream, pending, UP):
            self.aborted = True
            self._finish()
            return
        up = threading.Thread(target=self._pump, args=(self.client, upstream, UP), daemon=True)
        down = threading.Thread(target=self._pump, args=(upstream, self.client, DOWN), daemon=True)
        self.threads += [up, down]
        up.start()
        down.start()

    def _drain_client(self) -> bytes | None:
        """What a held client has sent so far, or None if it closed in the meantime."""
        buf = bytearray()
        self.client.setblocking(False)
        try:
            while True:
                chunk = self.client.recv(CHUNK)
                if not chunk:
                    return None
                buf += chunk
        except BlockingIOError:
            return bytes(buf)
        except OSError:
            return None
        finally:
            try:
                self.client.settimeout(POLL_S)
            except OSError:
                pass

    def _send(self, dst: socket.socket, data: bytes, direction: str) -> bool:
        view = memoryview(data)
        while view:
            if self.aborted:
                return False
            try:
                n = dst.send(view)
            except socket.timeout:
                continue
            except OSError:
                return False
            view = view[n:]
            self.proxy._count(direction, n)
        return True

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        clean_eof = False
        while True:
            if not self.proxy._wait_open(self, (direction,)):
                break
            try:
                data = src.recv(CHUNK)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                clean_eof = True
                break
            # Bytes read just before a cut are held, not dropped, until the link heals.
            if not self.proxy._wait_open(self, (direction,)):
                break
            if not self._send(dst, data, direction):
                break
        if clean_eof and not self.aborted:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            with self._lock:
                self._ended += 1
                both = self._ended == 2
            if both:
                self._finish()
        else:
            # A reset or an abort ends the whole connection, both directions.
            self.aborted = True
            self._finish()

    def abort(self, reset: bool) -> None:
        self.reset = self.reset or reset
        self.aborted = True

    def _finish(self) -> None:
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
        if self.reset:
            _set_reset_on_close(self.client)
            if self.upstream is not None:
                _set_reset_on_close(self.upstream)
        _close(self.client)
        _close(self.upstream)
        self.proxy._forget(self)


class LinkProxy:
    """Listens on listen_host (a free port) and forwards every connection to target,
    optionally connecting from source_host so the target sees the real source node."""

    def __init__(
        self,
        name: str,
        target: tuple[str, int],
        listen_host: str = "127.0.0.1",
        source_host: str | None = None,
    ):
        self.name = name
        self.target = target
        self.source_host = source_host
        self._cond = threading.Condition()
        self._blocked = {UP: False, DOWN: False}
        self._heals = 0
        self._pipes: set[_Pipe] = set()
        self._closed = False
        self.accepted = 0
        self.bytes = {UP: 0, DOWN: 0}
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((listen_host, 0))
        self._listener.listen(128)
        self._listener.settimeout(POLL_S)
        self.address: tuple[str, int] = self._listener.getsockname()
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"{name}-accept", daemon=True)
        self._acceptor.start()

    def __repr__(self) -> str:
        state = ",".join(d for d, b in self._blocked.items() if b) or "open"
        return f"LinkProxy({self.name} {self.address[0]}:{self.address[1]} -> {self.target[0]}:{self.target[1]}, {state})"

    @property
    def addr(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    # -- state -------------------------------------------------------------------------

    def blocked(self, direction: str) -> bool:
        return self._blocked[direction]

    def set_blocked(self, up: bool | None = None, down: bool | None = None) -> None:
        """Blocks (True) or opens (False) one or both directions; None leaves it."""
        with self._cond:
            was_blocked = any(self._blocked.values())
            if up is not None:
                self._blocked[UP] = up
            if down is not None:
                self._blocked[DOWN] = down
            if was_blocked and not any(self._blocked.values()):
                self._heals += 1
            self._cond.notify_all()

    def cut(self, up: bool = True, down: bool = True, drop: bool = False, reset: bool = False) -> None:
        """Blackholes the given directions; with drop, also ends the open connections
        (FIN, or RST with reset)."""
        self.set_blocked(up=True if up else None, down=True if down else None)
        if drop:
            self.drop_connections(reset=reset)

    def heal(self) -> None:
        self.set_blocked(up=False, down=False)

    def connections(self) -> int:
        with self._cond:
            return len(self._pipes)

    def drop_connections(self, reset: bool = False) -> int:
        """Ends every open connection through this proxy, both sides, and returns how many
        there were; new connections are still accepted (and held while the link is cut)."""
        with self._cond:
            pipes = list(self._pipes)
            for pipe in pipes:
                pipe.abort(reset)
            self._cond.notify_all()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for pipe in pipes:
            pipe.closed.wait(max(0.0, deadline - time.monotonic()))
            if not pipe.closed.is_set():
                pipe._finish()
        return len(pipes)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._acceptor.join(JOIN_TIMEOUT_S)
        _close(self._listener)
        self.drop_connections(reset=False)

    # -- internals ---------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed:
            with self._cond:
                heals = self._heals
                was_blocked = any(self._blocked.values())
            try:
                client, peer = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._closed:
                    return
                time.sleep(POLL_S)
                continue
            pipe = _Pipe(self, client, peer)
            with self._cond:
                if self._closed:
                    _close(client)
                    return
                # The handshake may have completed while the link was cut, even if it is
                # open again by now: then the client is treated as held.
                pipe.held = was_blocked or heals != self._heals or any(self._blocked.values())
                self._pipes.add(pipe)
                self.accepted += 1
            pipe.start()

    def _wait_open(self, pipe: _Pipe, directions: tuple[str, ...]) -> bool:
        """Blocks while any of the directions is cut; False once the pipe is aborted."""
        with self._cond:
            while not pipe.aborted and not self._closed and any(self._blocked[d] for d in directions):
                self._cond.wait(POLL_S)
            return not pipe.aborted and not self._closed

    def _count(self, direction: str, n: int) -> None:
        with self._cond:
            self.bytes[direction] += n

    def _forget(self, pipe: _Pipe) -> None:
        with self._cond:
            self._pipes.discard(pipe)


BOTH = "both"
OUT = "out"  # bytes from a to b
IN = "in"  # bytes from b to a


class LinkNetwork:
    """One LinkProxy per ordered pair of node ids (src, dst): the connections src opens
    to dst. Cuts and heals are expressed per pair of nodes and direction of the bytes."""

    def __init__(self):
        self.proxies: dict[tuple[int, int], LinkProxy] = {}

    def add(self, src: int, dst: int, target: tuple[str, int], source_host: str | None = None) -> LinkProxy:
        if (src, dst) in self.proxies:
            raise ValueError(f"link {src}->{dst} exists")
        proxy = LinkProxy(f"link-{src}-{dst}", target, source_host=source_host)
        self.proxies[(src, dst)] = proxy
        return proxy

    def proxy(self, src: int, dst: int) -> LinkProxy:
        return self.proxies[(src, dst)]

    def _peers(self, a: int, b: int | None) -> list[int]:
        nodes = {n for pair in self.proxies for n in pair}
        if b is not None:
            return [b]
        return sorted(n for n in nodes if n != a)

    def _set(self, src: int, dst: int, blocked: bool) -> None:
        """The bytes src -> dst: up on proxy(src->dst), down on proxy(dst->src)."""
        if (src, dst) in self.proxies:
            self.proxies[(src, dst)].set_blocked(up=blocked)
        if (dst, src) in self.proxies:
            self.proxies[(dst, src)].set_blocked(down=blocked)

    def cut(self, a: int, b: int | None = None, direction: str = BOTH, drop: bool = False, reset: bool = False) -> None:
        """Blackholes the link(s) between a and b (every peer of a when b is None):
        direction "both", "out" (only bytes from a) or "in" (only bytes to a). With drop,
        the connections on those links are also ended (RST with reset)."""
        if direction not in (BOTH, OUT, IN):
            raise ValueError(f"direction must be both, out or in, not {direction!r}")
        for peer in self._peers(a, b):
            if direction in (BOTH, OUT):
                self._set(a, peer, True)
            if direction in (BOTH, IN):
                self._set(peer, a, True)
            if drop:
                self.drop(a, peer, reset=reset)

    def heal(self, a: int | None = None, b: int | None = None) -> None:
        """Opens the links between a and b, every link of a, or (no arguments) all links."""
        for (src, dst), proxy in self.proxies.items():
            if a is None or (b is None and a in (src, dst)) or {src, dst} == {a, b}:
                proxy.heal()

    def drop(self, a: int, b: int | None = None, reset: bool = False) -> int:
        """Ends the open connections between a and b (or every peer of a), both ways."""
        n = 0
        for peer in self._peers(a, b):
            for pair in ((a, peer), (peer, a)):
                if pair in self.proxies:
                    n += self.proxies[pair].drop_connections(reset=reset)
        return n

    def describe(self) -> str:
        return "\n".join(repr(p) for _, p in sorted(self.proxies.items()))

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()
