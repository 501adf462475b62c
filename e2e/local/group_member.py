"""One consumer-group member in its own process, for test_groups.py.

Usage: python group_member.py '<json settings>'. Settings: bootstrap, group, topic, and
optionally lib ("confluent" or "kafka-python"), assignor (protocol name), instance
(group.instance.id), session_ms, commit (commit each record after processing it).

It reports what happens as JSON lines on stdout, flushed at once:
  {"event": "owned", "partitions": [...]}   the assignment changed (polled every 100 ms)
  {"event": "assign" | "revoke" | "lost", "partitions": [...]}   rebalance callbacks
  {"event": "record", "partition": p, "offset": o, "value": "..."}   a record processed
  {"event": "commit_failed", "error": "..."}   a commit after processing failed
  {"event": "closed"}   the consumer closed cleanly
Closing its stdin makes it close the consumer (a clean leave); SIGKILL is a crash.
"""

from __future__ import annotations

import json
import sys
import threading


def emit(**event) -> None:
    print(json.dumps(event), flush=True)


def run_confluent(cfg: dict, stop: threading.Event) -> None:
    from confluent_kafka import Consumer, KafkaException

    conf = {
        "bootstrap.servers": cfg["bootstrap"],
        "group.id": cfg["group"],
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": cfg.get("session_ms", 6000),
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": cfg.get("assignor", "range"),
        "topic.metadata.refresh.interval.ms": 1000,
    }
    if cfg.get("instance"):
        conf["group.instance.id"] = cfg["instance"]
    consumer = Consumer(conf)

    def callback(name):
        def cb(_consumer, partitions):
            emit(event=name, partitions=sorted(p.partition for p in partitions))

        return cb

    consumer.subscribe(
        [cfg["topic"]], on_assign=callback("assign"), on_revoke=callback("revoke"), on_lost=callback("lost")
    )
    owned = None
    while not stop.is_set():
        msg = consumer.poll(0.1)
        now_owned = sorted(p.partition for p in consumer.assignment())
        if now_owned != owned:
            owned = now_owned
            emit(event="owned", partitions=owned)
        if msg is None or msg.error():
            continue
        emit(event="record", partition=msg.partition(), offset=msg.offset(), value=(msg.value() or b"").decode())
        if cfg.get("commit"):
            try:
                consumer.commit(message=msg, asynchronous=False)
            except KafkaException as exc:
                emit(event="commit_failed", error=str(exc))
    consumer.close()


def run_kafka_python(cfg: dict, stop: threading.Event) -> None:
    from kafka import KafkaConsumer, OffsetAndMetadata
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

    assignors = {
        "range": RangePartitionAssignor,
        "roundrobin": RoundRobinPartitionAssignor,
        "sticky": StickyPartitionAssignor,
    }
    consumer = KafkaConsumer(
        bootstrap_servers=cfg["bootstrap"],
        group_id=cfg["group"],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=cfg.get("session_ms", 6000),
        heartbeat_interval_ms=500,
        partition_assignment_strategy=[assignors[cfg.get("assignor", "range")]],
        metadata_max_age_ms=1000,
    )
    # Load the topic's partitions before subscribing. Otherwise the first assignment can
    # be made without them, and the leader's metadata-triggered rejoin hits a kafka-python
    # 3.0.12 bug: once the leader has computed the new assignment its need_rejoin() turns
    # False, so if poll()'s timeout expires while that JoinGroup/SyncGroup is in flight no
    # later poll awaits it; the member never applies its assignment nor heartbeats again
    # and is expelled (seen as one member owning everything, the other nothing). Real
    # Kafka brokers trigger it the same way; it is not the coordinator's doing.
    consumer.partitions_for_topic(cfg["topic"])
    consumer.subscribe([cfg["topic"]])
    owned = None
    while not stop.is_set():
        batches = consumer.poll(timeout_ms=100)
        now_owned = sorted(tp.partition for tp in consumer.assignment())
        if now_owned != owned:
            owned = now_owned
            emit(event="owned", partitions=owned)
        for tp, msgs in batches.items():
            for m in msgs:
                emit(event="record", partition=tp.partition, offset=m.offset, value=(m.value or b"").decode())
                if cfg.get("commit"):
                    try:
                        consumer.commit({tp: OffsetAndMetadata(m.offset + 1, "", -1)})
                    except Exception as exc:  # noqa: BLE001 - reported, the test decides
                        emit(event="commit_failed", error=repr(exc))
    consumer.close()


def main() -> None:
    cfg = json.loads(sys.argv[1])
    stop = threading.Event()

    def watch_stdin():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    if cfg.get("lib", "confluent") == "confluent":
        run_confluent(cfg, stop)
    else:
        run_kafka_python(cfg, stop)
    emit(event="closed")


if __name__ == "__main__":
    main()
