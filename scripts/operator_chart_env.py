#!/usr/bin/env python3
"""The operator binary started with exactly the environment the Helm chart renders.

Renders charts/strom with helm (default values; only `metricsPort` is set, to a free
port), takes the operator container's environment from the Deployment, and starts the
real `strom-operator` binary with it against a fake Kubernetes API server on loopback
(lists answer empty, watches stay open, a Lease is kept in memory). Checks:

1. The default install watches every namespace: its lists go to the cluster-wide paths
   (`/apis/strom.dev/v1alpha1/kafkaclusters`), never to `/namespaces//...`, and
   `/readyz` turns 200 once every watch has listed.
2. While the API server refuses the lists (403), `/readyz` answers 503 and names the
   failing watches; once the lists are allowed again it turns 200.

Usage: operator_chart_env.py HELM OPERATOR_BIN
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "strom-system"
POD_NAME = "strom-operator-7d9f-abcde"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chart_env(helm, metrics_port):
    rendered = subprocess.run(
        [helm, "template", "strom", str(ROOT / "charts/strom"), "--namespace", NAMESPACE,
         "--set", f"metricsPort={metrics_port}"],
        check=True, capture_output=True, text=True).stdout
    deployments = [d for d in yaml.safe_load_all(rendered) if d and d.get("kind") == "Deployment"]
    assert len(deployments) == 1, f"expected one Deployment, got {len(deployments)}"
    container = next(c for c in deployments[0]["spec"]["template"]["spec"]["containers"]
                     if c["name"] == "operator")
    env = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        field = var["valueFrom"]["fieldRef"]["fieldPath"]
        env[var["name"]] = {"metadata.name": POD_NAME, "metadata.namespace": NAMESPACE}[field]
    return env


class FakeApi:
    """What the operator asks of the API server, answered from memory."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        self.forbid_lists = False
        self.stopping = threading.Event()
        self.leases = {}
        self.version = 0

    def handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def status(self, code, reason, message):
                self.reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "reason": reason, "code": code, "message": message})

            def body(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                return json.loads(raw) if raw else None

            def handle_any(self):
                path, _, query = self.path.partition("?")
                with api.lock:
                    api.requests.append((self.command, path, query))
                if "/leases" in path:
                    return self.lease(path)
                if self.command == "POST" and path.endswith("/events"):
                    return self.reply(201, self.body())
                if self.command != "GET":
                    return self.status(405, "MethodNotAllowed", f"{self.command} {path}")
                if "//" in path:
                    # What a real API server answers for an empty namespace segment.
                    return self.status(404, "NotFound", f"the server could not find {path}")
                if "watch=true" in query:
                    return self.watch()
                if api.forbid_lists:
                    return self.status(403, "Forbidden", f"cannot list {path}")
                self.reply(200, {"kind": "List", "apiVersion": "v1",
                                 "metadata": {"resourceVersion": "1"}, "items": []})

            def watch(self):
                # Open and silent until the test ends.
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                while not api.stopping.wait(0.2):
                    pass
                self.wfile.write(b"0\r\n\r\n")

            def lease(self, path):
                body = self.body()
                with api.lock:
                    api.version += 1
                    if self.command == "POST":
                        body["metadata"]["resourceVersion"] = str(api.version)
                        body["metadata"]["namespace"] = NAMESPACE
                        api.leases[path + "/" + body["metadata"]["name"]] = body
                        return self.reply(201, body)
                    stored = api.leases.get(path)
                    if stored is None:
                        return self.status(404, "NotFound", f"{path} not found")
                    if self.command in ("PATCH", "PUT"):
                        merge(stored, body)
                        stored["metadata"]["resourceVersion"] = str(api.version)
                    return self.reply(200, stored)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = handle_any

        return Handler

    def paths(self, method="GET"):
        with self.lock:
            return [p for m, p, _ in self.requests if m == method]


def merge(target, patch):
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = value


def readyz(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def wait_for(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def start_operator(binary, env, workdir, api_port):
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{api_port}"}}],
        "users": [{"name": "fake", "user": {"token": "test"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
    }))
    full_env = {"PATH": os.environ.get("PATH", ""), "KUBECONFIG": str(kubeconfig), **env}
    log = open(workdir / "operator.log", "w")
    return subprocess.Popen([binary], env=full_env, stdout=log, stderr=subprocess.STDOUT), workdir / "operator.log"


def run_case(binary, helm, workdir, forbid_first):
    api = FakeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), api.handler())
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    metrics_port = free_port()
    env = chart_env(helm, metrics_port)
    api.forbid_lists = forbid_first
    process, log = start_operator(binary, env, workdir, server.server_address[1])
    try:
        if forbid_first:
            # Every watch must be seen failing, and readiness must stay false meanwhile.
            def refused():
                code, body = readyz(metrics_port)
                return code == 503 and body.count("failing") >= 3 and (code, body)
            code, body = wait_for("/readyz to report failing watches", refused, 30)
            assert "Topic in * (Topic): failing" in body, body
            time.sleep(2)
            code, body = readyz(metrics_port)
            assert code == 503, f"ready while every list is refused: {code} {body}"
            api.forbid_lists = False
        # Ready as a standby too: wait for the lead, then for every watch to list.
        wait_for("leadership (the controllers' first lists)",
                 lambda: any("/strom.dev/" in p for p in api.paths()), 60)
        wait_for("/readyz 200", lambda: readyz(metrics_port)[0] == 200, 60)
        lists = api.paths()
        for kind in ("kafkaclusters", "topics", "consumergroups"):
            wanted = f"/apis/strom.dev/v1alpha1/{kind}"
            assert wanted in lists, f"no cluster-wide list of {kind}: {lists}"
        bad = [p for p in lists if "//" in p]
        assert not bad, f"requests with an empty namespace: {bad}"
        held = [p for p in api.paths("POST") if "/leases" in p]
        assert held, "the chart enables leader election: a Lease must be created"
    except BaseException:
        print(log.read_text()[-4000:], file=sys.stderr)
        print(api.requests[-40:], file=sys.stderr)
        raise
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        api.stopping.set()
        server.shutdown()
        server.server_close()


def main():
    helm, binary = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        run_case(binary, helm, Path(tmp), forbid_first=False)
        print("ok: the chart's default environment watches every namespace and is ready")
        run_case(binary, helm, Path(tmp), forbid_first=True)
        print("ok: /readyz is 503 while the watches fail and 200 once they list")


if __name__ == "__main__":
    main()
