"""The Java client — kafka-clients, the reference Kafka client most users run — against a
Strom broker: e2e/java/Conformance.java (run from source on the machine's Java, with the
jars e2e/java/fetch-kafka-tools.sh fetches at the pinned version) runs one scenario per
feature and prints `RESULT <scenario> PASS|FAIL <why>`; each scenario is one test here.

Transactions and the KIP-848 consumer protocol are not implemented yet: their scenarios
are expected to fail, and those tests fail the day they pass, so that the expectation is
flipped with the feature."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

JAVA_DIR = Path(__file__).resolve().parent.parent / "java"
PASSING = [
    "producer_codecs",
    "group_range",
    "group_roundrobin",
    "group_sticky",
    "group_cooperative_sticky",
    "seek_and_offsets_for_times",
    "admin_topics",
    "admin_configs",
    "admin_groups",
    "admin_records_and_cluster",
    "admin_reassignments_and_elections",
    "admin_client_quotas",
]
# Not implemented yet: (scenario, what the Java client reports).
NOT_YET = {
    "transactions": "TransactionalIdAuthorizationException",
    "new_consumer_protocol": "UnsupportedVersionException",
}


@pytest.fixture(scope="module")
def results(module_broker_factory, kafka_jars) -> dict[str, str]:
    broker = module_broker_factory.start({"offsets.topic.num.partitions": 4})
    proc = subprocess.run(
        ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx512m", "-cp", kafka_jars,
         str(JAVA_DIR / "Conformance.java"), broker.bootstrap, *PASSING, *NOT_YET],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"Conformance.java exited {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            _, name, verdict = line.split(" ", 2)
            out[name] = verdict
    return out


@pytest.mark.timeout_s(600)
@pytest.mark.parametrize("scenario", PASSING)
def test_java_client(results, scenario):
    assert results.get(scenario) == "PASS", results.get(scenario, "the scenario did not report")


@pytest.mark.timeout_s(600)
@pytest.mark.parametrize("scenario", sorted(NOT_YET))
def test_java_client_not_yet(results, scenario):
    verdict = results.get(scenario, "the scenario did not report")
    assert verdict != "PASS", f"{scenario} passes now: move it to PASSING"
    assert verdict.startswith("FAIL") and NOT_YET[scenario] in verdict, verdict
