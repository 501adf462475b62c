//! Kubernetes events about the operator's objects (`events.k8s.io/v1`). kube's
//! `Recorder` folds every event of one reason and action about one object into a single
//! series and keeps the first one's message, so a later `ConfigUpdated` showed an
//! earlier change's text. Here an event joins a series only when its message is the
//! same too; a different change is an event of its own.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, Reporter};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::Mutex;

/// How long an event may grow a series; Kubernetes' own recorders use the same window.
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// What makes two events the same occurrence repeated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    type_: String,
    reason: String,
    action: String,
    note: Option<String>,
    regarding: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
}

/// Publishes events; repeats of one (same object, type, reason, action and message)
/// within the series window update that event's count instead of adding events.
pub struct Events {
    client: Client,
    reporter: Reporter,
    sent: Mutex<HashMap<Key, K8sEvent>>,
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Events {
            client,
            reporter,
            sent: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes `event` about `regarding`.
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = Key {
            type_: format!("{:?}", event.type_),
            reason: event.reason.clone(),
            action: event.action.clone(),
            note: event.note.clone(),
            regarding: (
                regarding.kind.clone(),
                regarding.namespace.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ),
        };
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let mut sent = self.sent.lock().await;
        sent.retain(|_, e| last_seen(e).is_some_and(|t| t + SERIES_WINDOW > now));
        if let Some(previous) = sent.get_mut(&key) {
            let series = EventSeries {
                count: previous.series.as_ref().map_or(2, |s| s.count + 1),
                last_observed_time: MicroTime(now),
            };
            let name = previous.metadata.name.clone().unwrap_or_default();
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "series": series })),
            )
            .await?;
            previous.series = Some(series);
            return Ok(());
        }
        let created = K8sEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.clone(),
            type_: Some(format!("{:?}", event.type_)),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            metadata: ObjectMeta {
                namespace: Some(namespace.to_owned()),
                name: Some(format!(
                    "{}.{:x}",
                    regarding
                        .name
                        .as_deref()
                        .unwrap_or(&self.reporter.controller),
                    now.as_nanosecond()
                )),
                ..ObjectMeta::default()
            },
            ..K8sEvent::default()
        };
        api.create(&PostParams::default(), &created).await?;
        sent.insert(key, created);
        Ok(())
    }
}

fn last_seen(event: &K8sEvent) -> Option<Timestamp> {
    match &event.series {
        Some(series) => Some(series.last_observed_time.0),
        None => event.event_time.as_ref().map(|t| t.0),
    }
}

#[cfg(test)]
mod tests {
    use http::{Method, Request, Response};
    use kube::client::Body;
    use kube::runtime::events::EventType;
    use serde_json::Value;

    use super::*;

    fn event(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.to_owned(),
            note: Some(note.to_owned()),
            action: "Sync".to_owned(),
            secondary: None,
        }
    }

    #[tokio::test]
    async fn an_event_with_another_message_is_not_folded_into_the_first() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let events = Events::new(
            Client::new(service, "default"),
            Reporter {
                controller: "strom-operator".into(),
                instance: None,
            },
        );
        let seen = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                let method = request.method().clone();
                let path = request.uri().path().to_owned();
                let body = request.into_body().collect_bytes().await.unwrap();
                let body: Value = serde_json::from_slice(&body).unwrap();
                send.send_response(Response::new(Body::from(
                    serde_json::to_vec(&body).unwrap(),
                )));
                seen.push((method, path, body));
            }
            seen
        });
        let topic = ObjectReference {
            kind: Some("Topic".into()),
            namespace: Some("default".into()),
            name: Some("orders".into()),
            uid: Some("u1".into()),
            ..ObjectReference::default()
        };
        let first = event(
            "ConfigUpdated",
            "config of orders: segment.bytes back to default",
        );
        let second = event("ConfigUpdated", "config of orders: segment.ms=60000");
        events.publish(&first, &topic).await.unwrap();
        events.publish(&second, &topic).await.unwrap();
        events.publish(&second, &topic).await.unwrap();
        drop(events);
        let seen = seen.await.unwrap();
        let summary: Vec<(Method, Value)> = seen
            .iter()
            .map(|(m, _, b)| {
                (
                    m.clone(),
                    b.get("note")
                        .cloned()
                        .unwrap_or(b["series"]["count"].clone()),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    Method::POST,
                    json!("config of orders: segment.bytes back to default")
                ),
                (Method::POST, json!("config of orders: segment.ms=60000")),
                // The same change again: the second event's series.
                (Method::PATCH, json!(2)),
            ]
        );
        assert_eq!(seen[0].2["reason"], "ConfigUpdated");
        assert_eq!(seen[1].2["regarding"]["name"], "orders");
        let second_name = seen[1].2["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            seen[2].1,
            format!("/apis/events.k8s.io/v1/namespaces/default/events/{second_name}")
        );
    }
}
