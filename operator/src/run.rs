//! The operator process around the controllers: which namespaces are watched, the
//! watch streams each controller runs on, leader election on a `coordination.k8s.io`
//! Lease, and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, Client, Resource};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::cluster::desired::{INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGER, NAME_LABEL};
use crate::cluster::reconcile::{error_policy, reconcile, Context};
use crate::crd::{ClusterRef, ConsumerGroup, KafkaCluster, Topic};
use crate::group::reconcile as group;
use crate::topic::reconcile as topic;
use crate::watch::{lenient, tracked, watch_name};

/// How long controllers may take to finish their reconciles after shutdown is asked
/// for; below the chart's 30 s termination grace period, leaving time to release the
/// lease.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    /// Name of the Lease.
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// This replica's identity in the Lease (its pod name).
    pub identity: String,
    /// How long a lease holds without renewal; a standby takes over after this.
    pub lease_duration: Duration,
}

/// Why the operator stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Asked to (SIGTERM, SIGINT).
    Shutdown,
    /// Another replica holds the lease now; this one must not act any longer.
    LostLeadership,
}

/// Runs the controllers, under leader election when `election` is set, until
/// `shutdown` turns true or leadership is lost.
pub async fn run(
    ctx: Arc<Context>,
    namespaces: Vec<String>,
    election: Option<LeaderElection>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Stopped> {
    let Some(election) = election else {
        ctx.metrics.set_leader(true);
        run_controllers(ctx, &namespaces, shutdown).await;
        return Ok(Stopped::Shutdown);
    };

    let seconds = election.lease_duration.as_secs().max(2);
    let manager = LeaseManagerBuilder::new(ctx.client.clone(), &election.lease_name)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(seconds)
        // Renew a third of the way before expiry; this is also the clock skew tolerated.
        .with_grace((seconds / 3).max(1))
        .with_field_manager(format!("{MANAGER}-lease"))
        .build()
        .await?;
    let (mut leading, lease_task) = manager.watch().await;
    info!(lease = %election.lease_name, identity = %election.identity, "waiting for leadership");
    loop {
        if *leading.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leading.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the lease manager stopped");
                }
            }
            // The guard `wait_for` returns is not Send: drop it inside the branch future.
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                drop(leading);
                let _ = lease_task.await;
                return Ok(Stopped::Shutdown);
            }
        }
    }
    info!("leading: starting controllers");
    ctx.metrics.set_leader(true);

    // The controllers stop on shutdown or when leadership goes away, whichever first.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut lost = leading.clone();
    let mut shutdown_watch = shutdown.clone();
    let stopper = tokio::spawn(async move {
        let why = tokio::select! {
            _ = shutdown_watch.wait_for(|stop| *stop) => Stopped::Shutdown,
            _ = lost.wait_for(|leading| !*leading) => Stopped::LostLeadership,
        };
        let _ = stop_tx.send(true);
        why
    });
    run_controllers(ctx.clone(), &namespaces, stop_rx).await;
    // Controllers only end after a stop, but should they end on their own the stopper
    // must not be waited for.
    let why = if stopper.is_finished() {
        stopper.await.unwrap_or(Stopped::Shutdown)
    } else {
        warn!("controllers ended without being asked to");
        stopper.abort();
        Stopped::Shutdown
    };
    ctx.metrics.set_leader(false);
    // Dropping the last receiver makes the lease manager release the lease, so a
    // standby takes over at once rather than after the lease expires.
    drop(leading);
    match lease_task.await {
        Ok(Ok(_)) => info!("lease released"),
        Ok(Err(err)) => warn!(cause = %err, "releasing the lease failed"),
        Err(err) => warn!(cause = %err, "the lease task panicked"),
    }
    if why == Stopped::LostLeadership {
        error!("leadership lost; stopping");
    }
    Ok(why)
}

/// The namespaces to watch, from `--namespace` / `STROM_WATCH_NAMESPACES`: `None` is
/// every namespace. Blank entries are dropped, so the empty value the chart renders by
/// default means every namespace, not the namespace named "".
pub fn watch_scopes(namespaces: &[String]) -> Vec<Option<String>> {
    let named: Vec<Option<String>> = namespaces
        .iter()
        .map(|ns| ns.trim())
        .filter(|ns| !ns.is_empty())
        .map(|ns| Some(ns.to_owned()))
        .collect();
    if named.is_empty() {
        vec![None]
    } else {
        named
    }
}

/// The subscriber behind `--log-format json`: one JSON object per line, with the
/// fields of the spans around the event (a reconcile's `namespace` and `object`).
pub fn json_logs<W>(
    filter: tracing_subscriber::EnvFilter,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(writer)
        .finish()
}

/// One controller per watched namespace (or one over all namespaces), run together.
async fn run_controllers(ctx: Arc<Context>, namespaces: &[String], stop: watch::Receiver<bool>) {
    let scopes = watch_scopes(namespaces);
    let controllers = scopes.iter().map(Option::as_deref).flat_map(|namespace| {
        info!(
            namespace = namespace.unwrap_or("*"),
            "watching KafkaClusters, Topics and ConsumerGroups"
        );
        [
            cluster_controller(ctx.clone(), namespace, stop.clone()).boxed(),
            topic_controller(ctx.clone(), namespace, stop.clone()).boxed(),
            group_controller(ctx.clone(), namespace, stop.clone()).boxed(),
        ]
    });
    let all = futures::future::join_all(controllers);
    tokio::pin!(all);
    let mut stop = stop;
    tokio::select! {
        _ = &mut all => {}
        _ = async { let _ = stop.wait_for(|stop| *stop).await; } => {
            // kube's graceful shutdown lets running reconciles finish, but a controller
            // still waiting for its first list (API server unreachable) never returns:
            // bound the wait so that shutdown always completes.
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut all).await.is_err() {
                warn!(grace = ?SHUTDOWN_GRACE, "controllers did not stop in time; stopping anyway");
            }
        }
    }
    ctx.metrics.clear_watches();
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The metadata of the objects of kind `K` the operator manages, for the cluster
/// controller's `owns`.
fn owned<K>(
    ctx: &Context,
    namespace: Option<&str>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let config = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    let watch = watch_name(&K::kind(&()), namespace, "KafkaCluster");
    tracked(
        // Metadata only: the reconcile reads what it needs itself.
        watcher(
            scoped::<PartialObjectMeta<K>>(&ctx.client, namespace),
            config,
        ),
        ctx.metrics.clone(),
        watch,
    )
    .touched_objects()
}

async fn cluster_controller(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    mut stop: watch::Receiver<bool>,
) {
    let (reader, writer) = reflector::store();
    let clusters = lenient::<KafkaCluster>(
        ctx.clone(),
        namespace,
        watcher::Config::default().any_semantic(),
        "KafkaCluster",
    )
    .reflect(writer)
    .applied_objects();
    let pods = tracked(
        watcher(
            scoped::<Pod>(&ctx.client, namespace),
            watcher::Config::default().labels(&format!("{NAME_LABEL}=strom")),
        ),
        ctx.metrics.clone(),
        watch_name("Pod", namespace, "KafkaCluster"),
    )
    .touched_objects();
    Controller::for_stream(clusters, reader)
        // Every owned kind is watched, so an object deleted or edited out of band
        // triggers a reconcile that applies it again.
        .owns_stream(owned::<StatefulSet>(&ctx, namespace))
        .owns_stream(owned::<Service>(&ctx, namespace))
        .owns_stream(owned::<ConfigMap>(&ctx, namespace))
        .owns_stream(owned::<PodDisruptionBudget>(&ctx, namespace))
        // Pods belong to StatefulSets, not to the cluster; their readiness is status,
        // so they map back to their cluster through the instance label.
        .watches_stream(pods, pod_to_cluster)
        .graceful_shutdown_on(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move { log_controller_error(result) })
        .await;
}

/// Topics: reconciled on every change and every `topic::reconcile::RESYNC`, which is
/// what reverts changes made in Kafka behind the operator's back.
async fn topic_controller(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    mut stop: watch::Receiver<bool>,
) {
    let (reader, writer) = reflector::store();
    let topics = lenient::<Topic>(
        ctx.clone(),
        namespace,
        watcher::Config::default().any_semantic(),
        "Topic",
    )
    .reflect(writer)
    .applied_objects();
    let clusters =
        lenient::<KafkaCluster>(ctx.clone(), namespace, watcher::Config::default(), "Topic")
            .touched_objects();
    let store = reader.clone();
    Controller::for_stream(topics, reader)
        // A cluster that changes (gets its bootstrap address, becomes ready) is news
        // for its Topics, which may be waiting for it.
        .watches_stream(clusters, move |cluster| {
            referring(&store.state(), &cluster, |t: &Topic| &t.spec.cluster_ref)
        })
        .graceful_shutdown_on(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .run(topic::reconcile, topic::error_policy, ctx.clone())
        .for_each(|result| async move { log_controller_error(result) })
        .await;
}

/// ConsumerGroups: reconciled on every change and every `group::reconcile::REFRESH`,
/// since lag and membership change in Kafka without any Kubernetes event.
async fn group_controller(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    mut stop: watch::Receiver<bool>,
) {
    let (reader, writer) = reflector::store();
    let groups = lenient::<ConsumerGroup>(
        ctx.clone(),
        namespace,
        watcher::Config::default().any_semantic(),
        "ConsumerGroup",
    )
    .reflect(writer)
    .applied_objects();
    let clusters = lenient::<KafkaCluster>(
        ctx.clone(),
        namespace,
        watcher::Config::default(),
        "ConsumerGroup",
    )
    .touched_objects();
    let store = reader.clone();
    Controller::for_stream(groups, reader)
        .watches_stream(clusters, move |cluster| {
            referring(&store.state(), &cluster, |g: &ConsumerGroup| {
                &g.spec.cluster_ref
            })
        })
        .graceful_shutdown_on(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .run(group::reconcile, group::error_policy, ctx.clone())
        .for_each(|result| async move { log_controller_error(result) })
        .await;
}

/// Logs what a controller reports besides successful reconciles. A failed reconcile
/// was logged by its `error_policy` already, and an object that is gone by the time
/// its queued reconcile runs is the ordinary end of a deletion: both only at debug.
fn log_controller_error<T, E: std::error::Error>(
    result: Result<T, kube::runtime::controller::Error<E, watcher::Error>>,
) {
    use kube::runtime::controller::Error;
    match result {
        Ok(_) => {}
        Err(err @ (Error::ReconcilerFailed(..) | Error::ObjectNotFound(_))) => {
            debug!(cause = %err, "controller");
        }
        Err(err) => warn!(cause = %err, "controller error"),
    }
}

/// The objects among `objects` that refer to `cluster` (same namespace and name).
fn referring<K>(
    objects: &[Arc<K>],
    cluster: &KafkaCluster,
    cluster_ref: impl Fn(&K) -> &ClusterRef,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()>,
{
    let name = cluster.metadata.name.as_deref();
    let namespace = cluster.metadata.namespace.as_deref();
    objects
        .iter()
        .filter(|o| {
            o.meta().namespace.as_deref() == namespace && Some(cluster_ref(o).name.as_str()) == name
        })
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

fn pod_to_cluster(pod: Pod) -> Option<ObjectRef<KafkaCluster>> {
    let name = pod.metadata.labels.as_ref()?.get(INSTANCE_LABEL)?;
    Some(ObjectRef::new(name).within(pod.metadata.namespace.as_deref()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures;

    #[test]
    fn blank_namespaces_mean_every_namespace() {
        // What clap makes of the chart's default `STROM_WATCH_NAMESPACES: ""`.
        assert_eq!(watch_scopes(&["".to_owned()]), vec![None]);
        assert_eq!(watch_scopes(&[]), vec![None]);
        assert_eq!(
            watch_scopes(&["a".into(), " ".into(), " b ".into()]),
            vec![Some("a".to_owned()), Some("b".to_owned())]
        );
    }

    #[test]
    fn a_cluster_maps_to_the_topics_that_refer_to_it() {
        let topic = |namespace: &str, name: &str, cluster: &str| {
            Arc::new(
                serde_json::from_value::<Topic>(serde_json::json!({
                    "apiVersion": "strom.dev/v1alpha1", "kind": "Topic",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"clusterRef": {"name": cluster}},
                }))
                .unwrap(),
            )
        };
        let topics = [
            topic("default", "a", "dev"),
            topic("default", "b", "prod"),
            topic("other", "c", "dev"),
            topic("default", "d", "dev"),
        ];
        let cluster = fixtures::cluster(serde_json::json!({}), None);
        let refs = referring(&topics, &cluster, |t: &Topic| &t.spec.cluster_ref);
        let names: Vec<&str> = refs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "d"]);
    }

    // Paused time: the grace period passes as soon as everything else is idle.
    #[tokio::test(start_paused = true)]
    async fn controllers_stop_on_shutdown() {
        // The mock API server never answers, so the controllers are stuck in their first
        // list calls: shutdown must still end them, within the grace period.
        let (ctx, _api) = fixtures::context();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let running = tokio::spawn(run(ctx, vec!["a".into(), "b".into()], None, shutdown_rx));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!running.is_finished(), "controllers run until told to stop");
        shutdown_tx.send(true).unwrap();
        let stopped = tokio::time::timeout(SHUTDOWN_GRACE * 2, running)
            .await
            .expect("controllers stop within the grace period")
            .unwrap()
            .unwrap();
        assert_eq!(stopped, Stopped::Shutdown);
    }
}

/// Leader election against a fake Lease: the fake API server keeps one Lease in memory
/// and applies creates and patches to it (JSON merge semantics, which is what strategic
/// merge and apply amount to for a Lease); the controllers' lists find nothing and
/// their watches stay open.
#[cfg(test)]
mod election_tests {
    use std::sync::Mutex;

    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{json, Value};

    use super::*;
    use crate::cluster::fixtures;

    const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/strom";

    fn merge(target: &mut Value, patch: &Value) {
        match (target, patch) {
            (Value::Object(target), Value::Object(patch)) => {
                for (key, value) in patch {
                    if value.is_null() {
                        target.remove(key);
                    } else {
                        merge(target.entry(key.clone()).or_insert(Value::Null), value);
                    }
                }
            }
            (target, patch) => *target = patch.clone(),
        }
    }

    fn respond(status: StatusCode, body: &Value) -> Response<Body> {
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap()
    }

    /// Serves the Lease until the client goes away; returns the final Lease.
    async fn fake_lease_server(
        mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
        lease: SharedLease,
    ) {
        let mut unanswered = Vec::new();
        let mut version = 0;
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let watch = request
                .uri()
                .query()
                .unwrap_or_default()
                .contains("watch=true");
            let body = request.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let is_lease = path == LEASE_PATH || path == LEASE_PATH.trim_end_matches("/strom");
            if !is_lease {
                if watch || method != Method::GET {
                    // Watches stay open with nothing to say.
                    unanswered.push(send);
                } else {
                    // The controllers' initial lists: nothing there.
                    let empty = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []});
                    send.send_response(respond(StatusCode::OK, &empty));
                }
                continue;
            }
            let mut stored = lease.lock().unwrap();
            version += 1;
            let response = match (method, stored.as_mut()) {
                (Method::GET, Some(current)) => respond(StatusCode::OK, current),
                (Method::GET | Method::PATCH, None) => respond(
                    StatusCode::NOT_FOUND,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
                (Method::POST, _) => {
                    let mut created = body;
                    created["metadata"]["resourceVersion"] = json!(version.to_string());
                    created["metadata"]["namespace"] = json!("ops");
                    *stored = Some(created.clone());
                    respond(StatusCode::CREATED, &created)
                }
                (Method::PATCH, Some(current)) => {
                    merge(current, &body);
                    current["metadata"]["resourceVersion"] = json!(version.to_string());
                    respond(StatusCode::OK, current)
                }
                (method, _) => panic!("unexpected {method} on the Lease"),
            };
            send.send_response(response);
        }
    }

    type Running = tokio::task::JoinHandle<anyhow::Result<Stopped>>;
    /// The fake API server's Lease, `None` until created.
    type SharedLease = Arc<Mutex<Option<Value>>>;

    /// Starts `run` under leader election against the fake Lease server.
    fn start(
        lease_duration: Duration,
    ) -> (Arc<Context>, SharedLease, watch::Sender<bool>, Running) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let (fixture_ctx, _unused) = fixtures::context();
        let ctx = Arc::new(Context {
            client: kube::Client::new(service, "ops"),
            recorder: fixture_ctx.recorder.clone(),
            defaults: fixture_ctx.defaults.clone(),
            metrics: fixture_ctx.metrics.clone(),
            now: fixture_ctx.now,
            kafka: fixture_ctx.kafka.clone(),
        });
        let lease = Arc::new(Mutex::new(None));
        tokio::spawn(fake_lease_server(handle, lease.clone()));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let election = LeaderElection {
            lease_name: "strom".into(),
            namespace: "ops".into(),
            identity: "replica-a".into(),
            lease_duration,
        };
        let running = tokio::spawn(run(ctx.clone(), vec![], Some(election), shutdown_rx));
        (ctx, lease, shutdown_tx, running)
    }

    fn leader_gauge(ctx: &Context) -> Option<String> {
        ctx.metrics
            .encode()
            .lines()
            .find(|l| l.starts_with("strom_operator_leader "))
            .map(str::to_owned)
    }

    /// Leadership shows in the metrics once the lease is held.
    async fn wait_until_leading(ctx: &Context) {
        let leading = async {
            while leader_gauge(ctx).as_deref() != Some("strom_operator_leader 1") {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), leading)
            .await
            .expect("became leader");
    }

    #[tokio::test]
    async fn the_leader_runs_controllers_and_releases_the_lease_on_shutdown() {
        let (ctx, lease, shutdown_tx, running) = start(Duration::from_secs(15));
        wait_until_leading(&ctx).await;
        let holder = lease.lock().unwrap().clone().unwrap();
        assert_eq!(holder["spec"]["holderIdentity"], "replica-a");

        shutdown_tx.send(true).unwrap();
        let stopped = tokio::time::timeout(SHUTDOWN_GRACE * 2, running)
            .await
            .expect("stopped")
            .unwrap()
            .unwrap();
        assert_eq!(stopped, Stopped::Shutdown);
        let released = lease.lock().unwrap().clone().unwrap();
        assert!(
            released["spec"].get("holderIdentity").is_none(),
            "the lease is released on shutdown: {released}"
        );
        assert_eq!(
            leader_gauge(&ctx).as_deref(),
            Some("strom_operator_leader 0")
        );
    }

    #[tokio::test]
    async fn losing_the_lease_stops_the_controllers() {
        // A short lease, so that the renewal that notices the loss comes within a second.
        let (ctx, lease, _shutdown_tx, running) = start(Duration::from_secs(3));
        wait_until_leading(&ctx).await;

        // Another replica takes the lease over (as after a network partition).
        {
            let mut stored = lease.lock().unwrap();
            let current = stored.as_mut().unwrap();
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            current["spec"]["holderIdentity"] = json!("replica-b");
            current["spec"]["renewTime"] = json!(now);
            current["spec"]["acquireTime"] = json!(now);
            current["spec"]["leaseDurationSeconds"] = json!(60);
        }
        let stopped = tokio::time::timeout(Duration::from_secs(20), running)
            .await
            .expect("stopped after losing the lease")
            .unwrap()
            .unwrap();
        assert_eq!(stopped, Stopped::LostLeadership);
        assert_eq!(
            lease.lock().unwrap().as_ref().unwrap()["spec"]["holderIdentity"],
            "replica-b",
            "the new holder keeps the lease"
        );
    }
}

/// The controllers against a fake API server whose lists hold objects that do not parse
/// next to ones that do: each bad object gets its InvalidSpec report, every good one is
/// reconciled (its finalizer added), and the watches are healthy.
#[cfg(test)]
mod lenient_tests {
    use std::sync::Mutex;

    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{json, Value};

    use super::*;
    use crate::cluster::fixtures;

    const STROM: &str = "/apis/strom.dev/v1alpha1/namespaces/default";

    fn object(kind: &str, name: &str, spec: Value) -> Value {
        json!({
            "apiVersion": "strom.dev/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                         "generation": 1, "resourceVersion": "5",
                         "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": spec,
        })
    }

    fn list(items: Vec<Value>) -> Value {
        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "7"}, "items": items})
    }

    /// Serves lists from `lists` (by path; others are empty), holds watches open, and
    /// records every write as (method, path, body). With `forbid_lists`, every list is
    /// refused with 403 instead.
    async fn fake_api_server(
        mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
        lists: Vec<(String, Value)>,
        writes: Arc<Mutex<Vec<(Method, String, Value)>>>,
        forbid_lists: bool,
    ) {
        let mut open_watches = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let watching = request
                .uri()
                .query()
                .unwrap_or_default()
                .contains("watch=true");
            let body = request.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if watching {
                open_watches.push(send);
                continue;
            }
            if forbid_lists && method == Method::GET {
                let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "Forbidden", "code": 403, "message": format!("cannot list {path}")});
                let response = Response::builder()
                    .status(StatusCode::FORBIDDEN)
                    .body(Body::from(serde_json::to_vec(&status).unwrap()))
                    .unwrap();
                send.send_response(response);
                continue;
            }
            let answer = if method == Method::GET {
                lists
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, l)| l.clone())
                    .unwrap_or_else(|| list(vec![]))
            } else {
                writes.lock().unwrap().push((method, path, body.clone()));
                body
            };
            let response = Response::builder()
                .status(StatusCode::OK)
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    }

    fn context(service: tower_test::mock::Mock<Request<Body>, Response<Body>>) -> Arc<Context> {
        let (fixture_ctx, _unused) = fixtures::context();
        let client = kube::Client::new(service, "default");
        let ctx = Arc::new(Context {
            client: client.clone(),
            recorder: Arc::new(crate::events::Events::new(client, "strom-operator".into())),
            defaults: fixture_ctx.defaults.clone(),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            now: fixture_ctx.now,
            kafka: fixture_ctx.kafka.clone(),
        });
        ctx.metrics.set_ready(true);
        ctx
    }

    // Paused time: the watches' back-off and the shutdown grace pass at once.
    #[tokio::test(start_paused = true)]
    async fn readiness_is_false_while_the_watches_fail() {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let ctx = context(service);
        let writes = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(fake_api_server(handle, vec![], writes, true));
        let (stop_tx, stop_rx) = watch::channel(false);
        let running = tokio::spawn(run(ctx.clone(), vec![], None, stop_rx));
        let failing = async {
            loop {
                if let Err(why) = ctx.metrics.readiness() {
                    if [
                        "KafkaCluster",
                        "Topic",
                        "ConsumerGroup",
                        "StatefulSet",
                        "Pod",
                    ]
                    .iter()
                    .all(|kind| why.contains(&format!("{kind} in * (")))
                        && !why.contains("listing")
                    {
                        return why;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let why = tokio::time::timeout(Duration::from_secs(20), failing)
            .await
            .unwrap_or_else(|_| panic!("watches not failing: {:?}", ctx.metrics.readiness()));
        assert!(why.contains("failing"), "{why}");
        assert!(
            why.contains("cannot list /apis/strom.dev/v1alpha1/topics"),
            "{why}"
        );
        stop_tx.send(true).unwrap();
        tokio::time::timeout(SHUTDOWN_GRACE * 2, running)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            ctx.metrics.readiness(),
            Ok(()),
            "stopped controllers watch nothing"
        );
    }

    #[tokio::test]
    async fn an_object_that_does_not_parse_stops_only_itself() {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let ctx = context(service);
        let dev = json!({"name": "dev"});
        let lists = vec![
            (
                format!("{STROM}/topics"),
                list(vec![
                    object(
                        "Topic",
                        "bad",
                        json!({"clusterRef": dev, "cleanupPolicy": "compactt"}),
                    ),
                    object("Topic", "good", json!({"clusterRef": dev})),
                ]),
            ),
            (
                format!("{STROM}/consumergroups"),
                list(vec![
                    object("ConsumerGroup", "no-cluster", json!({"groupId": "g"})),
                    object(
                        "ConsumerGroup",
                        "fine",
                        json!({"clusterRef": dev, "groupId": "f"}),
                    ),
                ]),
            ),
        ];
        let writes = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(fake_api_server(handle, lists, writes.clone(), false));
        let (stop_tx, stop_rx) = watch::channel(false);
        let running = tokio::spawn(run(ctx.clone(), vec!["default".into()], None, stop_rx));

        let wanted = [
            (Method::PATCH, format!("{STROM}/topics/bad/status")),
            (Method::PATCH, format!("{STROM}/topics/good")),
            (
                Method::PATCH,
                format!("{STROM}/consumergroups/no-cluster/status"),
            ),
            (Method::PATCH, format!("{STROM}/consumergroups/fine")),
        ];
        let all_seen = async {
            loop {
                let seen = writes.lock().unwrap().clone();
                if wanted
                    .iter()
                    .all(|(m, p)| seen.iter().any(|(sm, sp, _)| sm == m && sp == p))
                {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let seen = tokio::time::timeout(Duration::from_secs(20), all_seen)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "not every object was dealt with: {:?}",
                    writes.lock().unwrap()
                )
            });

        let report = |path: &str| {
            seen.iter()
                .find(|(_, p, _)| p == path)
                .map(|(_, _, body)| body["status"]["conditions"][0].clone())
                .unwrap()
        };
        let bad = report(&format!("{STROM}/topics/bad/status"));
        assert_eq!(bad["reason"], "InvalidSpec");
        assert_eq!(bad["status"], "False");
        assert!(
            bad["message"]
                .as_str()
                .unwrap()
                .contains("spec.cleanupPolicy: unknown variant `compactt`"),
            "{bad}"
        );
        let no_cluster = report(&format!("{STROM}/consumergroups/no-cluster/status"));
        assert!(
            no_cluster["message"]
                .as_str()
                .unwrap()
                .contains("clusterRef"),
            "{no_cluster}"
        );
        // The good ones got their finalizers: they are being reconciled.
        for name in ["topics/good", "consumergroups/fine"] {
            let (_, _, patch) = seen
                .iter()
                .find(|(_, p, _)| *p == format!("{STROM}/{name}"))
                .unwrap();
            assert!(patch.to_string().contains("finalizers"), "{name}: {patch}");
        }
        assert_eq!(ctx.metrics.readiness(), Ok(()), "every watch listed");

        stop_tx.send(true).unwrap();
        tokio::time::timeout(SHUTDOWN_GRACE * 2, running)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
