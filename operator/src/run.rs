//! The operator process around the controllers: which namespaces are watched, leader
//! election on a `coordination.k8s.io` Lease, and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::cluster::desired::{INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGER, NAME_LABEL};
use crate::cluster::reconcile::{error_policy, reconcile, Context};
use crate::crd::KafkaCluster;

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

/// One controller per watched namespace (or one over all namespaces), run together.
async fn run_controllers(ctx: Arc<Context>, namespaces: &[String], stop: watch::Receiver<bool>) {
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|ns| Some(ns.as_str())).collect()
    };
    let controllers = scopes.into_iter().map(|namespace| {
        info!(
            namespace = namespace.unwrap_or("*"),
            "watching KafkaClusters"
        );
        cluster_controller(ctx.clone(), namespace, stop.clone())
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

fn owned_config() -> watcher::Config {
    watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"))
}

async fn cluster_controller(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    mut stop: watch::Receiver<bool>,
) {
    let client = &ctx.client;
    let clusters: Api<KafkaCluster> = scoped(client, namespace);
    let pods: Api<Pod> = scoped(client, namespace);
    Controller::new(clusters, watcher::Config::default().any_semantic())
        // Every owned kind is watched, so an object deleted or edited out of band
        // triggers a reconcile that applies it again.
        .owns(scoped::<StatefulSet>(client, namespace), owned_config())
        .owns(scoped::<Service>(client, namespace), owned_config())
        .owns(scoped::<ConfigMap>(client, namespace), owned_config())
        .owns(
            scoped::<PodDisruptionBudget>(client, namespace),
            owned_config(),
        )
        // Pods belong to StatefulSets, not to the cluster; their readiness is status,
        // so they map back to their cluster through the instance label.
        .watches(
            pods,
            watcher::Config::default().labels(&format!("{NAME_LABEL}=strom")),
            pod_to_cluster,
        )
        .graceful_shutdown_on(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(err) = result {
                warn!(cause = %err, "controller error");
            }
        })
        .await;
}

fn pod_to_cluster(pod: Pod) -> Option<ObjectRef<KafkaCluster>> {
    let name = pod.metadata.labels.as_ref()?.get(INSTANCE_LABEL)?;
    Some(ObjectRef::new(name).within(pod.metadata.namespace.as_deref()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures;

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
