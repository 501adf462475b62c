"""A strom-broker process on loopback, for the e2e fixtures and tests.

The binary is `target/release/strom-broker` under the repository root (or
`$CARGO_TARGET_DIR/release/strom-broker`); `STROM_BROKER_BIN` overrides it.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 150
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def broker_binary() -> Path:
    override = os.environ.get("STROM_BROKER_BIN")
    if override:
        return Path(override)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
    if not target.is_absolute():
        target = REPO_ROOT / target
    return target / "release" / "strom-broker"


_HANDED_OUT: set = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at host right now (any address of 127.0.0.0/8 works) and
    that this process has not handed out before: the kernel may offer a probed port again,
    and two brokers of one cluster given the same port make one fail to start."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port left that this test process has not used")


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: a broker must not outlive a crashed pytest."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


class BrokerStartError(Exception):
    pass


# Brokers alive right now, so a failing test's report can show their logs.
LIVE_BROKERS: list["Broker"] = []


class Broker:
    """One strom-broker process with fixed ports, data directory and log file; it can be
    started, stopped, killed, paused and restarted any number of times.

    By default it listens on 127.0.0.1 with one PLAINTEXT listener on a free port. A
    cluster node passes its own `host` and `listeners` (listener name -> port, e.g.
    {"CONTROLLER": 40002} for a controller, both names for a combined node); `port` is
    the PLAINTEXT listener's port (the first listener's when there is none) and `name`
    labels the node in reports."""

    def __init__(
        self,
        workdir: Path,
        overrides: dict[str, str] | None = None,
        config_file: Path | None = None,
        host: str = "127.0.0.1",
        listeners: dict[str, int] | None = None,
        http_port: int | None = None,
        name: str | None = None,
    ):
        self.workdir = workdir
        self.config_file = config_file
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "broker.log"
        self.host = host
        self.listeners = dict(listeners) if listeners else {"PLAINTEXT": free_port(host)}
        self.port = self.listeners.get("PLAINTEXT", next(iter(self.listeners.values())))
        self.http_port = http_port if http_port is not None else free_port(host)
        self.name = name
        self.overrides = {
            "listeners": ",".join(f"{n}://{host}:{p}" for n, p in self.listeners.items()),
            "log.dirs": str(self.data_dir),
            "strom.http.listener": f"{self.host}:{self.http_port}",
        }
        self.overrides.update(overrides or {})
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.paused = False
        # Prepended to the command, e.g. ["prlimit", "--as=2147483648"] (which execs the
        # broker, so proc.pid stays the broker's).
        self.command_prefix: list[str] = []

    # -- addresses ---------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def address(self, listener: str) -> tuple[str, int]:
        return self.host, self.listeners[listener]

    @property
    def label(self) -> str:
        return f"{self.name} {self.bootstrap}" if self.name else self.bootstrap

    @property
    def http_base(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def command(self) -> list[str]:
        cmd = [*self.command_prefix, str(broker_binary())]
        if self.config_file is not None:
            cmd += ["--config", str(self.config_file)]
        for key, value in self.overrides.items():
            cmd += ["--override", f"{key}={value}"]
        return cmd

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, wait_ready: bool = True, timeout_s: float = READY_TIMEOUT_S) -> "Broker":
        if self.running():
            raise RuntimeError(f"broker {self.label} already running")
        binary = broker_binary()
        if not binary.exists():
            raise BrokerStartError(f"broker binary {binary} not found: build it (cargo build --release -p strom-broker)")
        self.starts += 1
        self.paused = False
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        if self not in LIVE_BROKERS:
            LIVE_BROKERS.append(self)
        if wait_ready:
            self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise BrokerStartError(
                    f"broker {self.label} exited with code {self.proc.returncode} before it was ready\n{self.log_tail()}"
                )
            try:
                status, _ = self.http_get("/readyz", timeout_s=1.0)
                if status == 200:
                    return
                last = f"HTTP {status}"
            except OSError as err:
                last = repr(err)
            time.sleep(0.05)
        raise BrokerStartError(f"broker {self.label} not ready after {timeout_s}s (/readyz: {last})\n{self.log_tail()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait, then SIGKILL if it is still running. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.paused:
                self.resume()  # a stopped process handles SIGTERM only once continued
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9: no chance to flush or write a clean-shutdown marker."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def pause(self) -> None:
        """SIGSTOP: the process stays alive but runs no code (a stalled node)."""
        if self.running():
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        """SIGCONT after pause()."""
        if self.running():
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def restart(self, hard: bool = False) -> "Broker":
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self in LIVE_BROKERS:
            LIVE_BROKERS.remove(self)

    # -- HTTP and logs -----------------------------------------------------------------

    def http_get(self, path: str, timeout_s: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.http_base + path, timeout=timeout_s) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")

    def metrics(self) -> str:
        status, body = self.http_get("/metrics")
        assert status == 200, f"/metrics answered {status}: {body[:500]}"
        return body

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        text = _ANSI_ESCAPE.sub("", self.log_text()).splitlines()[-lines:]
        return f"--- {self.log_path} (last {len(text)} lines) ---\n" + "\n".join(text)


class BrokerFactory:
    """Makes brokers in fresh temporary directories and stops all of them on close."""

    def __init__(self, base: Path):
        self.base = base
        self.brokers: list[Broker] = []

    def create(self, props: dict[str, object] | None = None, config_text: str | None = None) -> Broker:
        """A broker that is not started yet, with extra `--override` properties and, given
        config_text, a `--config` properties file holding it."""
        workdir = Path(tempfile.mkdtemp(prefix=f"broker{len(self.brokers)}-", dir=self.base))
        config_file = None
        if config_text is not None:
            config_file = workdir / "server.properties"
            config_file.write_text(config_text)
        broker = Broker(workdir, {k: str(v) for k, v in (props or {}).items()}, config_file)
        self.brokers.append(broker)
        return broker

    def start(self, props: dict[str, object] | None = None, config_text: str | None = None) -> Broker:
        return self.create(props, config_text).start()

    def close(self) -> None:
        for broker in self.brokers:
            broker.close()
