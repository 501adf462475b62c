//! The watch streams the controllers run on. Every watch records where it stands for
//! `/readyz` (listed, or failing and why), and custom resources are decoded one object
//! at a time: an object that does not parse is reported on itself (a log line naming it
//! and the field, a `Ready=False` `InvalidSpec` condition, a Warning event) and skipped,
//! never stopping the objects beside it.

use std::fmt::Debug;
use std::sync::Arc;

use futures::{future, Stream, StreamExt};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tracing::{debug, warn};

use crate::cluster::desired::MANAGER;
use crate::cluster::reconcile::Context;
use crate::metrics::{Metrics, WatchState};

/// The reason of the condition and event an unparseable object gets.
pub const INVALID_SPEC: &str = "InvalidSpec";

/// The name a watch has in `/readyz` and the metrics: what it watches, where, for whom.
pub fn watch_name(kind: &str, namespace: Option<&str>, controller: &str) -> String {
    format!("{kind} in {} ({controller})", namespace.unwrap_or("*"))
}

/// `stream` (a watcher), retried with back-off on its own and each of its steps
/// recorded as the state of watch `watch`. Its errors are recorded and logged here and
/// not passed on: a controller backs off *all* its triggers on any error, so one
/// failing watch would otherwise stall the others.
pub fn tracked<K, S>(
    stream: S,
    metrics: Arc<Metrics>,
    watch: String,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: Send,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send,
{
    metrics.set_watch(&watch, WatchState::Listing);
    let mut healthy = false;
    stream.default_backoff().filter(move |step| {
        match step {
            // A relist's objects are on their way; only its end says the list worked.
            Ok(Event::Init | Event::InitApply(_)) => {}
            Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)) => {
                if !healthy {
                    healthy = true;
                    metrics.set_watch(&watch, WatchState::Healthy);
                }
            }
            Err(err) => {
                if healthy {
                    warn!(watch, cause = %err, "watch failing; retrying");
                } else {
                    debug!(watch, cause = %err, "watch failing; retrying");
                }
                healthy = false;
                metrics.set_watch(&watch, WatchState::Failing(err.to_string()));
            }
        }
        future::ready(step.is_ok())
    })
}

/// A watch of custom resource `K` that decodes each object on its own: one that does
/// not parse is reported (see the module) and left out, the others flow on.
pub fn lenient<K>(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    config: watcher::Config,
    controller: &str,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug + Send + 'static,
{
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &resource),
        None => Api::all_with(ctx.client.clone(), &resource),
    };
    let watch = watch_name(&resource.kind, namespace, controller);
    tracked(watcher::watcher(api, config), ctx.metrics.clone(), watch).filter_map(move |step| {
        let decoded = match step {
            Err(err) => Some(Err(err)),
            Ok(Event::Init) => Some(Ok(Event::Init)),
            Ok(Event::InitDone) => Some(Ok(Event::InitDone)),
            Ok(Event::InitApply(object)) => {
                decode_or_report(&ctx, &resource, object).map(|o| Ok(Event::InitApply(o)))
            }
            Ok(Event::Apply(object)) => {
                decode_or_report(&ctx, &resource, object).map(|o| Ok(Event::Apply(o)))
            }
            // Nothing left to report on: an object that never parsed was never seen.
            Ok(Event::Delete(object)) => decode::<K>(&object).ok().map(|o| Ok(Event::Delete(o))),
        };
        future::ready(decoded)
    })
}

/// `object` as a `K`, or why not: the path of the field that does not parse and the
/// reason (`spec.cleanupPolicy: unknown variant ...`).
pub fn decode<K: DeserializeOwned>(object: &DynamicObject) -> Result<K, String> {
    let value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })
}

fn decode_or_report<K: DeserializeOwned>(
    ctx: &Arc<Context>,
    resource: &ApiResource,
    object: DynamicObject,
) -> Option<K> {
    match decode(&object) {
        Ok(decoded) => Some(decoded),
        Err(why) => {
            tokio::spawn(report_invalid(ctx.clone(), resource.clone(), object, why));
            None
        }
    }
}

/// The message of the condition an object that does not parse gets.
fn invalid_message(why: &str) -> String {
    format!("the object does not parse, so nothing is done with it until it is fixed: {why}")
}

/// Whether `object` already carries the report for `why` at its generation: the status
/// patch below is itself a change the watch sees, which must not be reported again.
fn already_reported(object: &DynamicObject, message: &str) -> bool {
    let conditions = object
        .data
        .pointer("/status/conditions")
        .and_then(Value::as_array);
    conditions.into_iter().flatten().any(|c| {
        c["type"] == "Ready"
            && c["reason"] == INVALID_SPEC
            && c["message"] == message
            && c["observedGeneration"].as_i64() == object.metadata.generation
    })
}

/// Reports an object that does not parse: WARN naming it and the field, a Ready=False
/// `InvalidSpec` condition on its status, a Warning event. Failures are logged only:
/// the report is a courtesy, and the next change of the object tries again.
async fn report_invalid(
    ctx: Arc<Context>,
    resource: ApiResource,
    object: DynamicObject,
    why: String,
) {
    let message = invalid_message(&why);
    let namespace = object.namespace();
    let name = object.name_any();
    if already_reported(&object, &message) {
        debug!(
            kind = resource.kind,
            namespace,
            object = name,
            why,
            "still does not parse"
        );
        return;
    }
    warn!(
        kind = resource.kind,
        namespace,
        object = name,
        why,
        "object does not parse; skipped"
    );
    let api: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &resource),
        None => Api::all_with(ctx.client.clone(), &resource),
    };
    let now = (ctx.now)().to_string();
    let patch = json!({
        "status": {
            "observedGeneration": object.metadata.generation,
            "conditions": [{
                "type": "Ready",
                "status": "False",
                "reason": INVALID_SPEC,
                "message": message,
                "lastTransitionTime": now,
                "observedGeneration": object.metadata.generation,
            }],
        },
    });
    let params = PatchParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PatchParams::default()
    };
    if let Err(err) = api
        .patch_status(&name, &params, &Patch::Merge(&patch))
        .await
    {
        warn!(kind = resource.kind, namespace, object = name, cause = %err, "setting the InvalidSpec condition failed");
    }
    let event = KubeEvent {
        type_: EventType::Warning,
        reason: INVALID_SPEC.to_owned(),
        note: Some(message),
        action: "Decode".to_owned(),
        secondary: None,
    };
    if let Err(err) = ctx
        .recorder
        .publish(&event, &object.object_ref(&resource))
        .await
    {
        warn!(cause = %err, "publishing event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Topic;

    fn object(spec: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "strom.dev/v1alpha1", "kind": "Topic",
            "metadata": {"name": "orders", "namespace": "default", "generation": 2},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn decoding_names_the_field_that_does_not_parse() {
        let bad = object(json!({"clusterRef": {"name": "dev"}, "cleanupPolicy": "compactt"}));
        let why = decode::<Topic>(&bad).unwrap_err();
        assert!(
            why.starts_with("spec.cleanupPolicy: unknown variant `compactt`"),
            "{why}"
        );
        let missing = object(json!({"partitions": 3}));
        let why = decode::<Topic>(&missing).unwrap_err();
        assert!(why.contains("clusterRef"), "{why}");
        let good = object(json!({"clusterRef": {"name": "dev"}}));
        assert_eq!(decode::<Topic>(&good).unwrap().spec.cluster_ref.name, "dev");
    }

    #[test]
    fn a_report_is_recognised_at_the_same_generation_only() {
        let mut bad = object(json!({"cleanupPolicy": "compactt"}));
        let message = invalid_message("spec.cleanupPolicy: unknown variant");
        assert!(!already_reported(&bad, &message));
        bad.data["status"] = json!({"conditions": [{
            "type": "Ready", "status": "False", "reason": INVALID_SPEC,
            "message": message, "observedGeneration": 2,
        }]});
        assert!(already_reported(&bad, &message));
        assert!(!already_reported(&bad, "another message"));
        bad.metadata.generation = Some(3);
        assert!(!already_reported(&bad, &message));
    }
}
