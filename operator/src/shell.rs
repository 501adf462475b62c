//! Kubernetes helpers the Topic and ConsumerGroup controllers share: finding a
//! cluster's bootstrap address, applying a status, publishing events.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::warn;

use crate::cluster::desired::MANAGER;
use crate::cluster::reconcile::Context;
use crate::crd::KafkaCluster;

/// Where a resource's cluster stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterAccess {
    /// No KafkaCluster of that name in the namespace.
    Missing,
    /// The cluster exists but has published no bootstrap address yet.
    NotReady,
    /// The address to bootstrap admin clients from.
    Bootstrap(String),
}

/// Reads the referenced KafkaCluster's `status.bootstrap`.
pub async fn cluster_access(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
) -> Result<ClusterAccess, kube::Error> {
    // Untyped: only the status's address is read, and a cluster whose spec does not
    // parse (reported on the cluster itself) still has a usable address.
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        namespace,
        &ApiResource::erase::<KafkaCluster>(&()),
    );
    Ok(match api.get_opt(cluster).await? {
        None => ClusterAccess::Missing,
        Some(found) => match found
            .data
            .pointer("/status/bootstrap")
            .and_then(|b| b.as_str())
        {
            Some(bootstrap) if !bootstrap.is_empty() => {
                ClusterAccess::Bootstrap(bootstrap.to_owned())
            }
            _ => ClusterAccess::NotReady,
        },
    })
}

/// Server-side applies `status` to `object`'s status subresource, with the operator's
/// field manager.
pub async fn apply_status<K, S>(ctx: &Context, object: &K, status: &S) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize,
    S: Serialize,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Whether a finalizer patch failed only because the object changed since it was read
/// (its `resourceVersion` test fails: 422, or 409): harmless, the next reconcile reads
/// the newer object. Common when a Topic and its cluster are applied together.
pub fn is_finalizer_conflict<E: std::error::Error>(
    err: &kube::runtime::finalizer::Error<E>,
) -> bool {
    use kube::runtime::finalizer::Error;
    match err {
        Error::AddFinalizer(kube::Error::Api(status))
        | Error::RemoveFinalizer(kube::Error::Api(status)) => {
            status.code == 422 || status.code == 409
        }
        _ => false,
    }
}

/// How soon an object whose finalizer patch conflicted is reconciled again.
pub const REQUEUE_CONFLICT: std::time::Duration = std::time::Duration::from_secs(1);

/// Publishes an event about `object`; a failure is logged, never fatal: events are a
/// courtesy to the user.
pub async fn publish<K>(
    ctx: &Context,
    object: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        warn!(cause = %err, reason, "publishing event failed");
    }
}
