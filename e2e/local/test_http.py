"""The broker's HTTP port: liveness, readiness and Prometheus metrics."""

import re
import time

from support import create_topic, produce_all, producer

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a Prometheus / OpenMetrics text exposition as (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        name, labels, value = m.groups()
        samples.append((name, dict(_LABEL.findall(labels or "")), float(value)))
    return samples


def is_produce_request_counter(name: str, labels: dict[str, str]) -> bool:
    """A per-API request counter sample for Produce: a metric about requests, labelled
    with the API by name ("Produce", "ProduceKey") or by key ("0")."""
    if "request" not in name or name.endswith("_created") or name.endswith("_bucket"):
        return False
    for key, value in labels.items():
        by_name = value.lower().removesuffix("key") == "produce"
        if "api" in key and (by_name or (key.endswith("key") and value == "0")):
            return True
    return False


def produce_requests(text: str) -> float:
    return sum(v for n, labels, v in parse_samples(text) if is_produce_request_counter(n, labels))


def test_healthz_and_readyz(broker):
    """/healthz and /readyz answer 200 on a running, ready broker."""
    assert broker.http_get("/healthz")[0] == 200
    assert broker.http_get("/readyz")[0] == 200


def test_metrics_request_counter_grows_after_produce(broker, topic_name):
    """/metrics is Prometheus text with a per-API request counter; the Produce counter
    grows after records are produced."""
    create_topic(broker.bootstrap, topic_name)
    produce_all(producer(broker.bootstrap, acks="all"), topic_name, [{"value": b"warm-up", "partition": 0}])
    before_text = broker.metrics()
    before = produce_requests(before_text)
    assert before >= 1, "no Produce request counter in /metrics:\n" + before_text[:3000]

    for i in range(3):
        produce_all(producer(broker.bootstrap, acks="all"), topic_name, [{"value": f"m{i}".encode(), "partition": 0}])
    deadline = time.monotonic() + 5
    after = produce_requests(broker.metrics())
    while after < before + 3 and time.monotonic() < deadline:
        time.sleep(0.1)
        after = produce_requests(broker.metrics())
    assert after >= before + 3, f"Produce requests counted {before} before and {after} after three produces"
