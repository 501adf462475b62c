"""franz-go, the most thorough Go client, against Strom (modules from the Go module proxy at
the versions e2e/go/go.mod pins):

- its own kgo integration tests (the `pkg/kgo` test binary, built from the module cache and
  run in its source directory, with `KGO_SEEDS` pointing at Strom and `KGO_TEST_RF` the
  replication factor the test topics get) on one broker and on three;
- e2e/go/kadmcheck, a run of kadm admin calls (topics, configs, offsets, records, groups
  and lag, client quotas, brokers, log dirs), each checked as Kafka answers it.

Not run: TestTxnEtl (transactions are not implemented yet; the test waits for them until its
timeout). kgo skips by itself the tests of share groups (KIP-932), SASL (SCRAM, OAuth) and
KIP-848 regex subscriptions, which Strom does not offer; the suite must skip exactly those.
Skipped when no Go 1.26+ is on PATH."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

GO_DIR = Path(__file__).resolve().parent.parent / "go"
NOT_RUN = ["TestTxnEtl"]
SKIPPED_BY_KGO = {
    "TestShareGroup", "TestShareGroupETL", "TestShareGroupAckOnClose", "TestShareGroupOffsetsAdmin",
    "TestConsumeRegexShareSkipsInternal", "Test848RegexBrokerResolves",
    "TestSCRAMAuth", "TestSCRAMAuthBadCredentials", "TestOAuthAuth",
}
KADM_STEPS = [
    "create_topics", "list_topics", "describe_topic_configs", "alter_topic_configs", "produce", "list_end_offsets",
    "delete_records", "group_consume", "list_groups", "lag", "commit_and_fetch_offsets", "delete_groups",
    "client_quotas", "list_brokers", "describe_log_dirs", "create_partitions", "delete_topics",
]

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="go is not on PATH: franz-go needs Go 1.26+")


def go(*args: str, cwd: Path = GO_DIR, timeout: float = 600) -> str:
    proc = subprocess.run(["go", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"go {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def binaries(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("franz-go")
    go("build", "-o", str(out / "kadmcheck"), "./kadmcheck")
    go("test", "-c", "-o", str(out / "kgo.test"), "github.com/twmb/franz-go/pkg/kgo")
    source = Path(go("list", "-f", "{{.Dir}}", "github.com/twmb/franz-go/pkg/kgo").strip())
    return {"kadmcheck": out / "kadmcheck", "kgo.test": out / "kgo.test", "kgo_source": source}


def run_kgo_suite(binaries, seeds: str, rf: int) -> dict[str, set[str]]:
    env = dict(os.environ, KGO_SEEDS=seeds, KGO_TEST_RF=str(rf))
    proc = subprocess.run(
        [str(binaries["kgo.test"]), "-test.v", "-test.timeout", "480s", "-test.skip", "|".join(f"^{t}$" for t in NOT_RUN)],
        cwd=binaries["kgo_source"], env=env, capture_output=True, text=True, timeout=540,
    )
    verdicts: dict[str, set[str]] = {"PASS": set(), "FAIL": set(), "SKIP": set()}
    for m in re.finditer(r"^--- (PASS|FAIL|SKIP): (\S+)", proc.stdout, re.M):
        if "/" not in m.group(2):
            verdicts[m.group(1)].add(m.group(2))
    failed_lines = [line for line in proc.stdout.splitlines() if "FAIL" in line or "panic" in line][:40]
    assert proc.returncode == 0 and not verdicts["FAIL"], (
        f"kgo tests failed ({proc.returncode}): {sorted(verdicts['FAIL'])}\n" + "\n".join(failed_lines) + proc.stderr[-2000:]
    )
    return verdicts


@pytest.mark.timeout_s(600)
def test_kadm_admin_calls(module_broker_factory, binaries):
    broker = module_broker_factory.start({"offsets.topic.num.partitions": 4})
    proc = subprocess.run([str(binaries["kadmcheck"]), broker.bootstrap], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-2000:]}"
    assert [line.split()[1] for line in proc.stdout.splitlines()] == KADM_STEPS, proc.stdout


@pytest.mark.timeout_s(600)
def test_kgo_integration_tests_on_one_broker(broker_factory, binaries):
    broker = broker_factory.start({"offsets.topic.num.partitions": 4})
    verdicts = run_kgo_suite(binaries, broker.bootstrap, rf=1)
    assert verdicts["SKIP"] == SKIPPED_BY_KGO, sorted(verdicts["SKIP"] ^ SKIPPED_BY_KGO)
    assert len(verdicts["PASS"]) >= 140, f"only {len(verdicts['PASS'])} kgo tests passed"


@pytest.mark.cluster
@pytest.mark.timeout_s(600)
def test_kgo_integration_tests_on_three_brokers(cluster_factory, binaries):
    cluster = cluster_factory.start(controllers=1, brokers=3)
    verdicts = run_kgo_suite(binaries, cluster.bootstrap(), rf=3)
    assert verdicts["SKIP"] == SKIPPED_BY_KGO, sorted(verdicts["SKIP"] ^ SKIPPED_BY_KGO)
    assert len(verdicts["PASS"]) >= 140, f"only {len(verdicts['PASS'])} kgo tests passed"
