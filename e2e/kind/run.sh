#!/usr/bin/env bash
# End-to-end test in kind: build the image, load it, install the chart, apply the
# examples, wait for the cluster to be Ready, then produce and consume with kcat.
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
# The single-broker combined-mode cluster: the broker is its own controller, which is
# what today's single-node broker runs. The three-zone example needs replication and
# the multi-node broker (split mode: process.roles=broker / controller), not built yet,
# so its pods would refuse to start; it stays schema-validated by scripts/test-operator.
kubectl -n "$NAMESPACE" apply -f examples/kafkacluster-single.yaml
# The Topic and ConsumerGroup examples as a user would apply them, pointed at that
# cluster, and with the topic's replication factor fitting one broker: the Topic
# controller creates the topic this test produces to (auto-creation stays off), the
# ConsumerGroup resets its offsets.
for example in examples/topic-retention.yaml examples/consumergroup.yaml; do
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

if [[ "${KEEP:-0}" != 1 ]]; then
    step "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER"
fi
echo "e2e/kind: passed"
