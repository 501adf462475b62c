//! Test fixtures: a mock API server (kube's `tower-test` pair) that the reconciler talks
//! to, with a verifier that expects requests in order and answers each as the API
//! server would. A missing request times out; an unexpected one fails its assertion.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::events::Reporter;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock::{Handle, SendResponse};

use super::desired::Defaults;
use super::reconcile::Context;
use crate::crd::KafkaCluster;
use crate::kafka::fake::{FakeKafka, FakePool};
use crate::metrics::Metrics;

/// The fixed time the tests' clock returns.
pub const NOW_SECONDS: i64 = 1_700_000_000;

pub fn now() -> Timestamp {
    Timestamp::from_second(NOW_SECONDS).expect("valid timestamp")
}

/// A reconcile context whose client talks to the returned verifier.
pub fn context() -> (Arc<Context>, ApiServerVerifier) {
    let (ctx, api, _kafka) = context_with_kafka();
    (ctx, api)
}

/// A reconcile context whose client talks to the returned verifier and whose Kafka is
/// the returned in-memory cluster.
pub fn context_with_kafka() -> (Arc<Context>, ApiServerVerifier, FakePool) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let pool = FakePool {
        kafka: FakeKafka::new(),
        ..FakePool::default()
    };
    let recorder = crate::events::Events::new(
        client.clone(),
        Reporter {
            controller: "strom-operator".into(),
            instance: Some("test".into()),
        },
    );
    let ctx = Context {
        client,
        recorder: Arc::new(recorder),
        defaults: Defaults {
            image: "strom:test".into(),
        },
        metrics: Arc::new(Metrics::new()),
        now,
        kafka: Arc::new(pool.clone()),
    };
    (Arc::new(ctx), ApiServerVerifier(handle), pool)
}

/// A cluster as the API server would hand it to the controller.
pub fn cluster(spec: Value, status: Option<Value>) -> KafkaCluster {
    let mut object = json!({
        "apiVersion": "strom.dev/v1alpha1",
        "kind": "KafkaCluster",
        "metadata": {
            "name": "dev",
            "namespace": "default",
            "uid": "00000000-0000-0000-0000-00000000000a",
            "generation": 2,
        },
        "spec": spec,
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    serde_json::from_value(object).expect("valid KafkaCluster")
}

/// A pod of the cluster `dev`, ready or not.
pub fn pod(name: &str, ready: bool) -> Value {
    json!({
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"app.kubernetes.io/name": "strom", "app.kubernetes.io/instance": "dev"},
        },
        "status": {
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        },
    })
}

/// The other end of the mock client.
pub struct ApiServerVerifier(Handle<Request<Body>, Response<Body>>);

/// A request as the verifier saw it.
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

impl ApiServerVerifier {
    async fn next(&mut self) -> (Seen, SendResponse<Response<Body>>) {
        let (request, send) = self
            .0
            .next_request()
            .await
            .expect("the reconciler made no further request");
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .expect("readable body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        let seen = Seen {
            method,
            path,
            query,
            content_type,
            body,
        };
        (seen, send)
    }

    /// Expects a `method` request at `path`, answers `status` with `answer(&request)`,
    /// and returns the request.
    pub async fn handle(
        &mut self,
        method: Method,
        path: &str,
        status: StatusCode,
        answer: impl FnOnce(&Seen) -> Value,
    ) -> Seen {
        let (seen, send) = self.next().await;
        assert_eq!(
            (&seen.method, seen.path.as_str()),
            (&method, path),
            "expected {method} {path}; body {}",
            seen.body
        );
        let body = answer(&seen);
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&body).expect("JSON")))
                .expect("response"),
        );
        seen
    }

    /// Expects a server-side apply at `path` by the operator's field manager and answers
    /// with the applied object plus `status` (what the API server returns).
    pub async fn expect_apply(&mut self, path: &str, status: Option<Value>) -> Value {
        let (seen, send) = self.next().await;
        assert_eq!(
            (&seen.method, seen.path.as_str()),
            (&Method::PATCH, path),
            "expected an apply of {path}"
        );
        assert_eq!(seen.content_type, "application/apply-patch+yaml");
        assert!(
            seen.query.contains("fieldManager=strom-operator") && seen.query.contains("force=true"),
            "apply must use the operator's field manager with force: {}",
            seen.query
        );
        let mut answer = seen.body.clone();
        answer["metadata"]["generation"] = json!(1);
        if let Some(status) = status {
            answer["status"] = status;
        }
        send.send_response(ok(&answer));
        seen.body
    }

    /// Expects an apply at `path` and fails it with `code`.
    pub async fn fail_apply(&mut self, path: &str, code: StatusCode) {
        let (seen, send) = self.next().await;
        assert_eq!((&seen.method, seen.path.as_str()), (&Method::PATCH, path));
        let status = json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "message": "injected failure", "reason": "Forbidden", "code": code.as_u16(),
        });
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&status).expect("JSON")))
                .expect("response"),
        );
    }

    /// Expects the list of cluster `dev`'s broker StatefulSets and answers with
    /// StatefulSets of these names and replica counts.
    pub async fn expect_statefulset_list(&mut self, sets: &[(&str, i32)]) {
        let without_status: Vec<(&str, i32, Option<i32>)> =
            sets.iter().map(|(n, r)| (*n, *r, None)).collect();
        self.expect_statefulset_list_with(&without_status).await;
    }

    /// As `expect_statefulset_list`, with every listed StatefulSet's pods all ready.
    pub async fn expect_ready_statefulset_list(&mut self, sets: &[(&str, i32)]) {
        let ready: Vec<(&str, i32, Option<i32>)> =
            sets.iter().map(|(n, r)| (*n, *r, Some(*r))).collect();
        self.expect_statefulset_list_with(&ready).await;
    }

    /// (name, replicas, ready replicas in status).
    async fn expect_statefulset_list_with(&mut self, sets: &[(&str, i32, Option<i32>)]) {
        let (seen, send) = self.next().await;
        assert_eq!(
            (&seen.method, seen.path.as_str()),
            (
                &Method::GET,
                "/apis/apps/v1/namespaces/default/statefulsets"
            )
        );
        assert!(
            seen.query.contains(
                "labelSelector=app.kubernetes.io%2Fcomponent%3Dbroker%2Capp.kubernetes.io%2Finstance%3Ddev%2Capp.kubernetes.io%2Fname%3Dstrom"
            ),
            "broker StatefulSets are listed by the cluster's labels: {}",
            seen.query
        );
        let items: Vec<Value> = sets
            .iter()
            .map(|(name, replicas, ready)| {
                let mut set = json!({
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {
                        "replicas": replicas,
                        "selector": {},
                        "serviceName": "dev-headless",
                        "template": {},
                    },
                });
                if let Some(ready) = ready {
                    set["status"] = json!({"replicas": replicas, "readyReplicas": ready});
                }
                set
            })
            .collect();
        let list = json!({"apiVersion": "apps/v1", "kind": "StatefulSetList", "metadata": {}, "items": items});
        send.send_response(ok(&list));
    }

    /// Expects the pod list of cluster `dev` and answers with `pods`.
    pub async fn expect_pod_list(&mut self, pods: Vec<Value>) {
        let (seen, send) = self.next().await;
        assert_eq!(
            (&seen.method, seen.path.as_str()),
            (&Method::GET, "/api/v1/namespaces/default/pods")
        );
        assert!(
            seen.query
                .contains("labelSelector=app.kubernetes.io%2Finstance%3Ddev%2Capp.kubernetes.io%2Fname%3Dstrom"),
            "pods are listed by the cluster's labels: {}",
            seen.query
        );
        let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods});
        send.send_response(ok(&list));
    }

    /// Expects the status apply of cluster `dev` and returns the status sent.
    pub async fn expect_status(&mut self) -> Value {
        let (seen, send) = self.next().await;
        assert_eq!(
            (&seen.method, seen.path.as_str()),
            (
                &Method::PATCH,
                "/apis/strom.dev/v1alpha1/namespaces/default/kafkaclusters/dev/status"
            )
        );
        assert_eq!(seen.content_type, "application/apply-patch+yaml");
        assert_eq!(seen.body["kind"], "KafkaCluster");
        let mut answer = serde_json::to_value(cluster(json!({}), None)).expect("JSON");
        answer["status"] = seen.body["status"].clone();
        send.send_response(ok(&answer));
        seen.body["status"].clone()
    }

    /// Expects an event about the object named `name` and returns it.
    pub async fn expect_event_about(&mut self, name: &str) -> Value {
        let (seen, send) = self.next().await;
        assert_eq!(
            (&seen.method, seen.path.as_str()),
            (
                &Method::POST,
                "/apis/events.k8s.io/v1/namespaces/default/events"
            ),
            "expected an event; got body {}",
            seen.body
        );
        assert_eq!(seen.body["regarding"]["name"], name);
        send.send_response(ok(&seen.body));
        seen.body
    }

    /// Expects no further request within a short wait.
    pub async fn expect_nothing_more(&mut self) {
        let next =
            tokio::time::timeout(std::time::Duration::from_millis(100), self.0.next_request())
                .await;
        if let Ok(Some((request, _))) = next {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }

    /// Expects an event about cluster `dev` and returns it: a new one (POST) or, when the
    /// recorder has already sent one like it, the series' update (PATCH, whose body is
    /// then only the series; `reason` is filled in from the event it updates).
    pub async fn expect_event(&mut self) -> Value {
        let events = "/apis/events.k8s.io/v1/namespaces/default/events";
        let (seen, send) = self.next().await;
        if seen.method == Method::PATCH && seen.path.starts_with(&format!("{events}/")) {
            send.send_response(ok(&seen.body));
            let mut body = seen.body;
            body["reason"] = json!(SERIES_UPDATE);
            return body;
        }
        assert_eq!((&seen.method, seen.path.as_str()), (&Method::POST, events));
        assert_eq!(seen.body["regarding"]["name"], "dev");
        send.send_response(ok(&seen.body));
        seen.body
    }
}

/// The reason `expect_event` reports for an update of an event series (the recorder
/// sends no reason there).
pub const SERIES_UPDATE: &str = "(series update)";

/// A 404 as the API server answers it.
pub fn not_found() -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

fn ok(body: &Value) -> Response<Body> {
    Response::builder()
        .body(Body::from(serde_json::to_vec(body).expect("JSON")))
        .expect("response")
}
