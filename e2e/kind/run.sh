#!/usr/bin/env bash
# End-to-end test in kind: build the image, load it, install the chart, apply the
# examples, wait for the clusters to be Ready, produce and consume with kcat; then grow
# the three-zone cluster 3 -> 6 -> 3 and roll it under a producer's load.
# Needs Docker, kind, kubectl and helm on PATH. Idempotent: reuses the kind cluster
# (KEEP=1 keeps it afterwards; by default it is deleted on success).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

CLUSTER="${CLUSTER:-strom-e2e}"
IMAGE="${IMAGE:-strom:e2e}"
NAMESPACE="${NAMESPACE:-e2e}"
KCAT_IMAGE="${KCAT_IMAGE:-edenhill/kcat:1.7.1}"
TIMEOUT="${TIMEOUT:-600s}"

step() { printf '\n== %s\n' "$*"; }

for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null || { echo "e2e/kind needs $tool on PATH" >&2; exit 2; }
done

step "kind cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
    kind create cluster --name "$CLUSTER" --config e2e/kind/kind-config.yaml --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

step "image $IMAGE"
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "helm install"
helm upgrade --install strom charts/strom \
    --namespace strom-system --create-namespace \
    --set image.repository="${IMAGE%%:*}" --set image.tag="${IMAGE##*:}" \
    --set image.pullPolicy=Never \
    --set logFormat=text \
    --wait --timeout "$TIMEOUT"

step "examples into namespace $NAMESPACE"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
# Combined mode first: one broker that is its own controller (the three-zone split-mode
# cluster follows below, in a namespace of its own).
kubectl -n "$NAMESPACE" apply -f examples/kafkacluster-single.yaml
# The Topic and ConsumerGroup examples as a user would apply them, pointed at that
# cluster, and with the topic's replication factor fitting one broker: the Topic
# controller creates the topic this test produces to (auto-creation stays off), the
# ConsumerGroup observes its group and then (the second step) resets its offsets.
for example in examples/topic-retention.yaml examples/consumergroup.yaml examples/consumergroup-reset.yaml; do
    sed -e 's/^\(    name:\) events$/\1 single/' -e 's/^\(  replicationFactor:\) 3$/\1 1/' "$example"
    echo ---
done | kubectl -n "$NAMESPACE" apply -f -

step "waiting for KafkaCluster single to be Ready"
if ! kubectl -n "$NAMESPACE" wait kafkacluster/single --for=condition=Ready --timeout="$TIMEOUT"; then
    kubectl -n "$NAMESPACE" get kafkacluster,statefulsets,pods -o wide || true
    kubectl -n "$NAMESPACE" describe kafkacluster single || true
    kubectl -n "$NAMESPACE" logs single-broker-0-0 --tail=50 || true
    kubectl -n strom-system logs deployment/strom --tail=100 || true
    exit 1
fi
kubectl -n "$NAMESPACE" get kafkacluster single -o wide

step "combined mode: one broker, no controllers"
ids="$(kubectl -n "$NAMESPACE" get kafkacluster single -o jsonpath='{.status.brokers[*].id}')"
[[ "$ids" == "0" ]] || { echo "FAIL: broker ids are '$ids'" >&2; exit 1; }
controllers="$(kubectl -n "$NAMESPACE" get kafkacluster single -o jsonpath='{.status.controllers}')"
[[ -z "$controllers" ]] || { echo "FAIL: status lists controllers '$controllers'" >&2; exit 1; }
if kubectl -n "$NAMESPACE" get statefulset single-controller >/dev/null 2>&1; then
    echo "FAIL: combined mode created a controller StatefulSet" >&2; exit 1
fi

step "an object deleted out of band comes back"
kubectl -n "$NAMESPACE" delete service single-bootstrap --wait=true
for _ in $(seq 60); do
    kubectl -n "$NAMESPACE" get service single-bootstrap >/dev/null 2>&1 && break
    sleep 2
done
kubectl -n "$NAMESPACE" get service single-bootstrap

step "the Topic controller created the topic"
if ! kubectl -n "$NAMESPACE" wait topic/orders --for=condition=Ready --timeout="$TIMEOUT"; then
    kubectl -n "$NAMESPACE" describe topic orders || true
    kubectl -n strom-system logs deployment/strom --tail=100 || true
    exit 1
fi
kubectl -n "$NAMESPACE" get topics -o wide
partitions="$(kubectl -n "$NAMESPACE" get topic orders -o jsonpath='{.status.partitions}')"
[[ "$partitions" == 6 ]] || { echo "FAIL: topic has '$partitions' partitions" >&2; exit 1; }

step "produce and consume with kcat"
bootstrap="$(kubectl -n "$NAMESPACE" get kafkacluster single -o jsonpath='{.status.bootstrap}')"
topic="Orders_v1"
printf 'one\ntwo\nthree\n' | kubectl -n "$NAMESPACE" run kcat-produce --rm -i --restart=Never \
    --image="$KCAT_IMAGE" -- -b "$bootstrap" -t "$topic" -P -X acks=all
consumed="$(kubectl -n "$NAMESPACE" run kcat-consume --rm -i --restart=Never \
    --image="$KCAT_IMAGE" -- -b "$bootstrap" -t "$topic" -C -o beginning -c 3 -e -q -f '%s\n' | sort)"
expected="$(printf 'one\nthree\ntwo')"
if [[ "$consumed" != "$expected" ]]; then
    echo "FAIL: consumed '$consumed'" >&2
    exit 1
fi
echo "ok: consumed what was produced"

step "the ConsumerGroup reset its offsets and reports the lag"
# The reset committed offset 0 on every partition of Orders_v1 while the group was
# empty; the three records produced since are its lag once status refreshes (30 s).
for _ in $(seq 60); do
    lag="$(kubectl -n "$NAMESPACE" get consumergroup orders-processor -o jsonpath='{.status.totalLag}')"
    [[ "$lag" == 3 ]] && break
    sleep 2
done
kubectl -n "$NAMESPACE" get consumergroups -o wide
result="$(kubectl -n "$NAMESPACE" get consumergroup orders-processor -o jsonpath='{.status.lastReset.result}')"
[[ "$result" == Succeeded ]] || { echo "FAIL: reset result '$result'" >&2; exit 1; }
[[ "$lag" == 3 ]] || { echo "FAIL: lag '$lag', expected 3" >&2; exit 1; }

# ---------------------------------------------------------------------------------
# Three zones, split mode: three controller voters and brokers in one StatefulSet per
# zone. Under a producer's load that runs through every step, the cluster grows from 3
# brokers to 6 (rebalance), shrinks back to 3 (drain first) and rolls every pod for a
# config change; at the end every record the producer sent is read back.
ZONES_NAMESPACE="${ZONES_NAMESPACE:-e2e-zones}"
kz() { kubectl -n "$ZONES_NAMESPACE" "$@"; }
events_status() { kz get kafkacluster events -o jsonpath="{.status.$1}"; }

# wait_until SECONDS DESCRIPTION COMMAND...: runs COMMAND every 5 s until it succeeds;
# on timeout prints what the cluster looks like and fails.
wait_until() {
    local seconds="$1" what="$2"
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            echo "FAIL: timed out after ${seconds}s waiting for: $what" >&2
            kz get kafkacluster,statefulsets,pods -o wide || true
            kz get kafkacluster events -o jsonpath='{.status}' || true
            echo
            kz get events --sort-by=.lastTimestamp | tail -30 || true
            kubectl -n strom-system logs deployment/strom --tail=100 || true
            exit 1
        fi
        sleep 5
    done
}

ready_with_brokers() {
    [[ "$(events_status 'conditions[?(@.type=="Ready")].status')" == True ]] &&
        [[ "$(events_status readyBrokers)" == "$1" ]] &&
        [[ "$(events_status 'brokers[*].id')" == "$2" ]]
}
operation_is() {
    [[ "$(events_status operation.kind)" == "$1" ]] && [[ "$(events_status operation.phase)" == "$2" ]]
}
fully_replicated() { [[ "$(events_status underReplicatedPartitions)" == 0 ]]; }
operation_kind_is() { [[ "$(events_status operation.kind)" == "$1" ]]; }
pod_phase_is() { [[ "$(kz get pod "$1" -o jsonpath='{.status.phase}')" == "$2" ]]; }

# Replica counts per broker within one of each other, and no partition with two replicas
# in one rack (rack index = broker id / 1000), from the status and from kcat's metadata.
check_balanced() {
    local counts
    counts="$(events_status 'brokers[*].partitions')"
    echo "replicas per broker: $counts"
    awk -v counts="$counts" 'BEGIN { n = split(counts, c, " "); min = c[1]; max = c[1]
        for (i = 2; i <= n; i++) { if (c[i] < min) min = c[i]; if (c[i] > max) max = c[i] }
        exit (n == 0 || max - min > 1) }' ||
        { echo "FAIL: replicas per broker are not balanced: $counts" >&2; exit 1; }
    kz run kcat-metadata --rm -i --restart=Never --image="$KCAT_IMAGE" -- -b "$bootstrap" -L |
        awk '/^ *partition [0-9]+,/ {
                 match($0, /replicas: [0-9,]+/); list = substr($0, RSTART + 10, RLENGTH - 10)
                 sub(/,$/, "", list); split(list, r, ",")
                 delete seen
                 for (i in r) { rack = int(r[i] / 1000); if (rack in seen) { print "FAIL: two replicas in rack " rack ": " $0; bad = 1 }; seen[rack] = 1 }
                 checked++ }
             END { print checked " partitions checked for rack spread"; exit (bad || checked == 0) }' ||
        { echo "FAIL: a partition has two replicas in one rack" >&2; exit 1; }
}

step "three zones: KafkaCluster events (split mode) into namespace $ZONES_NAMESPACE"
kubectl create namespace "$ZONES_NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kz apply -f examples/kafkacluster-three-zones.yaml
kz apply -f examples/topic-retention.yaml
wait_until 600 "3 ready brokers, one per zone" ready_with_brokers 3 "0 1000 2000"
kz get kafkacluster events -o wide
racks="$(events_status 'brokers[*].rack')"
[[ "$racks" == "zone-a zone-b zone-c" ]] || { echo "FAIL: broker racks are '$racks'" >&2; exit 1; }
voters="$(events_status 'controllers[*].id')"
[[ "$voters" == "9000 9001 9002" ]] || { echo "FAIL: controller ids are '$voters'" >&2; exit 1; }
[[ -n "$(events_status clusterId)" ]] || { echo "FAIL: status has no clusterId" >&2; exit 1; }
for node in $(kz get pods -l app.kubernetes.io/instance=events -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort -u); do
    kubectl get node "$node" -o jsonpath='{.metadata.name}: {.metadata.labels.topology\.kubernetes\.io/zone}{"\n"}'
done
if ! kz wait topic/orders --for=condition=Ready --timeout="$TIMEOUT"; then
    kz describe topic orders || true
    exit 1
fi
bootstrap="$(events_status bootstrap)"

step "three zones: a producer (acks=all, idempotent) runs through every step"
# Batches of 100 numbered records a second until /tmp/stop exists; the number of
# batches sent goes to the pod's log, so the check at the end knows every record to expect.
kz delete pod kcat-load --ignore-not-found --wait=true
kz run kcat-load --restart=Never --image="$KCAT_IMAGE" --command -- sh -c "
    (
        b=0
        while [ ! -e /tmp/stop ]; do seq \$((b * 100 + 1)) \$((b * 100 + 100)); b=\$((b + 1)); sleep 1; done
        echo batches=\$b >&2
    ) | kcat -P -b '$bootstrap' -t Orders_v1 -X acks=all -X enable.idempotence=true -X linger.ms=20"
kz wait pod/kcat-load --for=condition=Ready --timeout=120s

step "three zones: scale up 3 -> 6, the operator rebalances"
kz patch kafkacluster events --type merge -p '{"spec":{"brokers":6}}'
wait_until 600 "6 ready brokers" ready_with_brokers 6 "0 1 1000 1001 2000 2001"
wait_until 900 "the rebalance to complete" operation_is Rebalance Completed
wait_until 300 "no under-replicated partition" fully_replicated
events_status operation && echo
kz get events --field-selector involvedObject.name=events,reason=RebalanceCompleted -o name | grep -q . ||
    { echo "FAIL: no RebalanceCompleted event" >&2; exit 1; }
check_balanced

step "three zones: scale down 6 -> 3, drained before the StatefulSets shrink"
kz patch kafkacluster events --type merge -p '{"spec":{"brokers":3}}'
# The gate: while the drain of brokers 1, 1001 and 2001 is under way, every broker
# StatefulSet keeps its 2 pods.
drain_done_with_gate_held() {
    local phase sizes
    phase="$(events_status operation.phase)"
    if [[ "$(events_status operation.kind)" == Drain && "$phase" == Moving ]]; then
        sizes="$(kz get statefulsets -l app.kubernetes.io/component=broker -o jsonpath='{.items[*].spec.replicas}')"
        [[ "$sizes" == "2 2 2" ]] ||
            { echo "FAIL: broker StatefulSets shrank while the drain was moving: replicas '$sizes'" >&2; exit 1; }
        echo "draining: $(events_status operation.partitionsDone)/$(events_status operation.partitionsTotal) partitions moved, StatefulSets held at 2"
    fi
    operation_is Drain Completed
}
wait_until 900 "the drain to complete" drain_done_with_gate_held
wait_until 600 "3 ready brokers after the drain" ready_with_brokers 3 "0 1000 2000"
wait_until 300 "no under-replicated partition" fully_replicated
check_balanced

step "three zones: a config change rolls every pod, one at a time"
before="$(kz get pods -l app.kubernetes.io/instance=events -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.uid}{"\n"}{end}')"
kz patch kafkacluster events --type merge -p '{"spec":{"config":{"logRetentionMs":86400000}}}'
wait_until 120 "the roll to start" operation_kind_is Roll
wait_until 1200 "the roll to complete" operation_is Roll Completed
wait_until 600 "3 ready brokers after the roll" ready_with_brokers 3 "0 1000 2000"
while IFS='=' read -r pod uid; do
    now="$(kz get pod "$pod" -o jsonpath='{.metadata.uid}')"
    [[ -n "$now" && "$now" != "$uid" ]] || { echo "FAIL: pod $pod was not restarted by the roll" >&2; exit 1; }
done <<<"$before"
kz get configmap events-config -o jsonpath='{.data.broker\.properties}' | grep -qx 'log.retention.ms=86400000' ||
    { echo "FAIL: broker.properties lacks the new log.retention.ms" >&2; exit 1; }
wait_until 300 "no under-replicated partition" fully_replicated

step "three zones: every record the producer sent is there"
kz exec kcat-load -- touch /tmp/stop
wait_until 360 "the producer to flush and exit" pod_phase_is kcat-load Succeeded
batches="$(kz logs kcat-load | sed -n 's/^batches=//p')"
[[ "$batches" -gt 0 ]] || { echo "FAIL: the producer reported no batches" >&2; kz logs kcat-load >&2; exit 1; }
expected=$((batches * 100))
missing="$(comm -23 <(seq 1 "$expected" | sort) \
    <(kz run kcat-check --rm -i --restart=Never --image="$KCAT_IMAGE" -- \
        -b "$bootstrap" -t Orders_v1 -C -o beginning -e -q -f '%s\n' | tr -d '\r' | sort -u) | wc -l)"
[[ "$missing" == 0 ]] || { echo "FAIL: $missing of $expected records produced under load are missing" >&2; exit 1; }
echo "ok: all $expected records produced across scale up, scale down and the roll were read back"
kz delete pod kcat-load --wait=false

if [[ "${KEEP:-0}" != 1 ]]; then
    step "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER"
fi
echo "e2e/kind: passed"
