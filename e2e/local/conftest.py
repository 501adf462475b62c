"""Fixtures that run the real strom-broker binary on loopback.

- `broker`: one broker per test module, started with default settings (shared, cheap).
- `broker_factory`: a `BrokerFactory` for tests that need their own broker(s):
  `broker_factory.start({"num.partitions": 3})` starts one and waits until /readyz says
  200; the returned `Broker` can be stopped (`stop()`: SIGTERM), killed (`kill()`: SIGKILL)
  and started again (`start()`, `restart(hard=...)`) on the same data directory and ports.
  Every broker it made is stopped at teardown.
- `module_broker_factory`: the same, shared by a module (for brokers with special settings).
- `topic_name`: a fresh, unique topic name per test.
- `kafka_jars`: the classpath of the Java client and Kafka's tools (`e2e/java/lib/*`, fetched
  by e2e/java/fetch-kafka-tools.sh, a no-op once there); skips when no `java` is on PATH.
- `cluster_factory`: a `cluster.ClusterFactory` for multi-node tests:
  `cluster_factory.start(controllers=3, brokers=3)` starts a Raft controller quorum and
  brokers on distinct loopback addresses, every node-to-node link through a proxy the
  test can cut; every cluster it made is stopped and removed at teardown. Tests that use
  it carry `@pytest.mark.cluster` (select them with `-m cluster`, skip with `-m "not cluster"`).

Each test has a time limit (60 s, or `@pytest.mark.timeout_s(N)`), enforced with SIGALRM;
`STROM_E2E_TIMEOUT_SCALE` multiplies every limit on slow machines. When a test fails, the
tail of the log of every broker that was running is attached to its report.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from broker_process import LIVE_BROKERS, Broker, BrokerFactory
from cluster import LIVE_CLUSTERS, ClusterFactory
from support import forget_admin

DEFAULT_TEST_TIMEOUT_S = 60


def _close(factory: BrokerFactory) -> None:
    factory.close()
    for broker in factory.brokers:
        forget_admin(broker.bootstrap)


@pytest.fixture
def broker_factory(tmp_path):
    factory = BrokerFactory(tmp_path)
    yield factory
    _close(factory)


@pytest.fixture(scope="module")
def module_broker_factory(tmp_path_factory):
    factory = BrokerFactory(tmp_path_factory.mktemp("brokers"))
    yield factory
    _close(factory)


@pytest.fixture(scope="module")
def broker(module_broker_factory) -> Broker:
    return module_broker_factory.start()


@pytest.fixture
def cluster_factory(tmp_path):
    factory = ClusterFactory(tmp_path)
    yield factory
    factory.close()


JAVA_DIR = Path(__file__).resolve().parent.parent / "java"


@pytest.fixture(scope="session")
def kafka_jars() -> str:
    if shutil.which("java") is None:
        pytest.skip("java is not on PATH: the Java client and Kafka's tools need a JDK 17+")
    script = JAVA_DIR / "fetch-kafka-tools.sh"
    proc = subprocess.run([str(script)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert list((JAVA_DIR / "lib").glob("kafka-clients-*.jar")), "no kafka-clients jar"
    return str(JAVA_DIR / "lib" / "*")


@pytest.fixture
def topic_name(request) -> str:
    base = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name).strip("-")[:60]
    return f"{base}-{uuid.uuid4().hex[:8]}"


# --- per-test time limit and broker logs on failure -----------------------------------------


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout_s(seconds): time limit for one test (default 60)")
    config.addinivalue_line("markers", "cluster: a multi-node cluster test (controller quorum and brokers)")
    # kafka-python 3.0 loads its protocol schemas with a deprecated importlib API.
    config.addinivalue_line("filterwarnings", "ignore:(read_text|open_text) is deprecated:DeprecationWarning")
    # The non-incremental AlterConfigs API is tested on purpose.
    config.addinivalue_line("filterwarnings", "ignore:alter_configs has been deprecated:DeprecationWarning")


class TimeLimitExceeded(BaseException):
    """BaseException so that no `except Exception` in a test swallows it."""


def _limit_for(item) -> int:
    marker = item.get_closest_marker("timeout_s")
    seconds = marker.args[0] if marker else DEFAULT_TEST_TIMEOUT_S
    scale = float(os.environ.get("STROM_E2E_TIMEOUT_SCALE", "1"))
    return max(1, int(seconds * scale))


def _with_alarm(item, phase: str):
    limit = _limit_for(item)

    def on_alarm(signum, frame):
        raise TimeLimitExceeded(f"{phase} of {item.nodeid} exceeded its time limit of {limit}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    return previous


def _clear_alarm(previous) -> None:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    previous = _with_alarm(item, "setup")
    try:
        yield
    finally:
        _clear_alarm(previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    previous = _with_alarm(item, "call")
    try:
        yield
    finally:
        _clear_alarm(previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    previous = _with_alarm(item, "teardown")
    try:
        yield
    finally:
        _clear_alarm(previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for i, cluster in enumerate(LIVE_CLUSTERS):
            report.sections.append((f"cluster {i}", cluster.describe()))
        for i, broker in enumerate(LIVE_BROKERS):
            state = "running" if broker.running() else f"exited with code {broker.proc.returncode}"
            report.sections.append((f"broker {i} log ({broker.label}, {state})", broker.log_tail()))
