//! The operator's Prometheus metrics and the small HTTP server that serves them along
//! with `/healthz` and `/readyz`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{debug, warn};

type Labels = Vec<(String, String)>;

/// Counters and gauges the controllers update.
pub struct Metrics {
    registry: Registry,
    reconciliations: Family<Labels, Counter>,
    reconcile_duration: Histogram,
    leader: Gauge,
    ready: AtomicBool,
    watches: Mutex<BTreeMap<String, WatchState>>,
    watch_failures: Family<Labels, Counter>,
}

/// Where one of the controllers' watches stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchState {
    /// Started, its first list not complete yet.
    Listing,
    /// Listed, and nothing failed since.
    Healthy,
    /// Its last list or watch call failed, for this reason.
    Failing(String),
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("strom_operator");
        let reconciliations = Family::<Labels, Counter>::default();
        registry.register(
            "reconciliations",
            "Reconciles by controller and outcome (ok, or the failing step)",
            reconciliations.clone(),
        );
        // 1 ms to about 16 s.
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            reconcile_duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "Whether this replica holds the leader lease (1) or not (0)",
            leader.clone(),
        );
        let watch_failures = Family::<Labels, Counter>::default();
        registry.register(
            "watch_failures",
            "Failed list or watch calls, by watch (kind, namespace and controller)",
            watch_failures.clone(),
        );
        Self {
            registry,
            reconciliations,
            reconcile_duration,
            leader,
            ready: AtomicBool::new(false),
            watches: Mutex::new(BTreeMap::new()),
            watch_failures,
        }
    }

    /// Records one reconcile of `controller` (the kind it reconciles); `failed_step` is
    /// `None` when it succeeded.
    pub fn observe_reconcile(&self, controller: &str, took: Duration, failed_step: Option<&str>) {
        let outcome = failed_step.unwrap_or("ok").to_owned();
        self.reconciliations
            .get_or_create(&vec![
                ("controller".to_owned(), controller.to_owned()),
                ("outcome".to_owned(), outcome),
            ])
            .inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    /// Marks whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Marks the process ready (connected to the API server and running or standing by).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Records where watch `watch` stands; a watch appears with its first state.
    pub fn set_watch(&self, watch: &str, state: WatchState) {
        if matches!(state, WatchState::Failing(_)) {
            self.watch_failures
                .get_or_create(&vec![("watch".to_owned(), watch.to_owned())])
                .inc();
        }
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches.insert(watch.to_owned(), state);
    }

    /// Forgets every watch: the controllers stopped (shutdown, or leadership lost).
    pub fn clear_watches(&self) {
        self.watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Ready when the process is, and every watch the controllers run has listed and is
    /// not failing; otherwise why not, one line per watch that is not healthy. A replica
    /// standing by for the lease runs no watches and is ready.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.ready.load(Ordering::Relaxed) {
            return Err("starting".to_owned());
        }
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let unhealthy: Vec<String> = watches
            .iter()
            .filter_map(|(watch, state)| match state {
                WatchState::Healthy => None,
                WatchState::Listing => Some(format!("{watch}: listing")),
                WatchState::Failing(why) => Some(format!("{watch}: failing: {why}")),
            })
            .collect();
        if unhealthy.is_empty() {
            Ok(())
        } else {
            Err(unhealthy.join("\n"))
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the listener fails.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(cause = %err, "accepting an HTTP connection failed");
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
            });
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, cause = %err, "HTTP connection ended with an error");
            }
        });
    }
}

/// Binds the HTTP address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

fn respond(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, metrics.encode()),
        (&Method::GET, "/healthz") => (StatusCode::OK, "ok\n".to_owned()),
        (&Method::GET, "/readyz") => match metrics.readiness() {
            Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
            Err(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready\n{why}\n"),
            ),
        },
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// One HTTP/1.1 request over real TCP; returns the status line and the body.
    async fn get(addr: SocketAddr, path: &str) -> (String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response.lines().next().unwrap_or_default().to_owned();
        let body = response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        (status, body)
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics_over_http() {
        let metrics = Arc::new(Metrics::new());
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, metrics.clone()));

        assert_eq!(get(addr, "/healthz").await.0, "HTTP/1.1 200 OK");
        assert_eq!(
            get(addr, "/readyz").await.0,
            "HTTP/1.1 503 Service Unavailable"
        );
        metrics.set_ready(true);
        metrics.set_leader(true);
        assert_eq!(get(addr, "/readyz").await.0, "HTTP/1.1 200 OK");

        // Ready only while every watch has listed and none fails.
        metrics.set_watch("Topic in *", WatchState::Listing);
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert!(body.contains("Topic in *: listing"), "{body}");
        metrics.set_watch("Topic in *", WatchState::Healthy);
        assert_eq!(get(addr, "/readyz").await.0, "HTTP/1.1 200 OK");
        metrics.set_watch("Topic in *", WatchState::Failing("403 forbidden".into()));
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert!(
            body.contains("Topic in *: failing: 403 forbidden"),
            "{body}"
        );
        metrics.clear_watches();
        assert_eq!(get(addr, "/readyz").await.0, "HTTP/1.1 200 OK");
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            body.lines().any(|l| l == "strom_operator_leader 1"),
            "{body}"
        );
        assert!(
            body.lines()
                .any(|l| l == r#"strom_operator_watch_failures_total{watch="Topic in *"} 1"#),
            "{body}"
        );
        assert_eq!(get(addr, "/nope").await.0, "HTTP/1.1 404 Not Found");
        server.abort();
    }

    #[test]
    fn reconciles_are_counted_by_controller_and_outcome() {
        let metrics = Metrics::new();
        metrics.observe_reconcile("KafkaCluster", Duration::from_millis(3), None);
        metrics.observe_reconcile("KafkaCluster", Duration::from_millis(3), Some("apply"));
        metrics.observe_reconcile("Topic", Duration::from_millis(3), Some("kafka"));
        let text = metrics.encode();
        for line in [
            r#"strom_operator_reconciliations_total{controller="KafkaCluster",outcome="ok"} 1"#,
            r#"strom_operator_reconciliations_total{controller="KafkaCluster",outcome="apply"} 1"#,
            r#"strom_operator_reconciliations_total{controller="Topic",outcome="kafka"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
    }
}
