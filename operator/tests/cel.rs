//! The CEL rules (`x-kubernetes-validations`) of the committed CRDs, evaluated with
//! kube's client-side CEL: what the API server would refuse on create and on update.

use std::path::Path;

use kube::core::cel::Validator;
use serde_json::{json, Value};

/// The `openAPIV3Schema` of `crds/<file>`.
fn schema(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crds")
        .join(file);
    let crd: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&path).expect("CRD file")).expect("CRD YAML");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn cluster_schema() -> Value {
    schema("kafkaclusters.strom.dev.yaml")
}

fn topic_schema() -> Value {
    schema("topics.strom.dev.yaml")
}

fn group_schema() -> Value {
    schema("consumergroups.strom.dev.yaml")
}

fn object(kind: &str, spec: Value) -> Value {
    json!({"apiVersion": "strom.dev/v1alpha1", "kind": kind, "metadata": {"name": "x"}, "spec": spec})
}

/// The messages of the rules that fail, empty when the object is accepted.
fn failures(schema: &Value, new: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(schema, new, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| e.to_string())
            .collect(),
    }
}

fn assert_refused(schema: &Value, new: &Value, old: Option<&Value>, message: &str) {
    let failures = failures(schema, new, old);
    assert!(
        failures.iter().any(|f| f.contains(message)),
        "expected a failure containing {message:?}, got {failures:?}"
    );
}

#[test]
fn topic_partitions_only_grow() {
    let old = object(
        "Topic",
        json!({"clusterRef": {"name": "c"}, "partitions": 6}),
    );
    let more = object(
        "Topic",
        json!({"clusterRef": {"name": "c"}, "partitions": 12}),
    );
    let fewer = object(
        "Topic",
        json!({"clusterRef": {"name": "c"}, "partitions": 3}),
    );
    assert_eq!(
        failures(&topic_schema(), &more, Some(&old)),
        Vec::<String>::new()
    );
    assert_refused(
        &topic_schema(),
        &fewer,
        Some(&old),
        "partitions can only be increased",
    );
}

#[test]
fn cluster_references_never_change() {
    let old = object("Topic", json!({"clusterRef": {"name": "a"}}));
    let moved = object("Topic", json!({"clusterRef": {"name": "b"}}));
    assert_refused(
        &topic_schema(),
        &moved,
        Some(&old),
        "clusterRef is immutable",
    );
    let old = object("ConsumerGroup", json!({"clusterRef": {"name": "a"}}));
    let moved = object("ConsumerGroup", json!({"clusterRef": {"name": "b"}}));
    assert_refused(
        &group_schema(),
        &moved,
        Some(&old),
        "clusterRef is immutable",
    );
}

#[test]
fn topic_and_group_names_never_change() {
    let old = object(
        "Topic",
        json!({"clusterRef": {"name": "a"}, "topicName": "T1"}),
    );
    let renamed = object(
        "Topic",
        json!({"clusterRef": {"name": "a"}, "topicName": "T2"}),
    );
    assert_refused(
        &topic_schema(),
        &renamed,
        Some(&old),
        "topicName is immutable",
    );
    let dropped = object("Topic", json!({"clusterRef": {"name": "a"}}));
    assert_refused(
        &topic_schema(),
        &dropped,
        Some(&old),
        "topicName cannot be added or removed",
    );
    let old = object(
        "ConsumerGroup",
        json!({"clusterRef": {"name": "a"}, "groupId": "g"}),
    );
    let renamed = object(
        "ConsumerGroup",
        json!({"clusterRef": {"name": "a"}, "groupId": "h"}),
    );
    assert_refused(
        &group_schema(),
        &renamed,
        Some(&old),
        "groupId is immutable",
    );
}

#[test]
fn typed_topic_configs_are_not_free_config() {
    let topic = object(
        "Topic",
        json!({"clusterRef": {"name": "a"}, "config": {"retention.ms": "1000"}}),
    );
    assert_refused(&topic_schema(), &topic, None, "use the typed fields");
}

#[test]
fn every_topic_codec_is_admitted() {
    // The broker recompresses to a topic's codec; the broker, not admission, checks values.
    for codec in ["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"] {
        let topic = object(
            "Topic",
            json!({"clusterRef": {"name": "a"}, "config": {"compression.type": codec, "compression.lz4.level": "12"}}),
        );
        assert_eq!(
            failures(&topic_schema(), &topic, None),
            Vec::<String>::new(),
            "{codec}"
        );
    }
}

#[test]
fn racks_may_only_be_appended() {
    let racks = |names: &[&str]| {
        object(
            "KafkaCluster",
            json!({"brokers": 3, "racks": {"names": names}}),
        )
    };
    let old = racks(&["a", "b"]);
    assert_eq!(
        failures(&cluster_schema(), &racks(&["a", "b", "c"]), Some(&old)),
        Vec::<String>::new()
    );
    let message = "racks may only be appended";
    assert_refused(&cluster_schema(), &racks(&["b", "a"]), Some(&old), message);
    assert_refused(&cluster_schema(), &racks(&["a"]), Some(&old), message);
    assert_refused(
        &cluster_schema(),
        &racks(&["x", "a", "b"]),
        Some(&old),
        message,
    );
}

#[test]
fn rack_label_and_voter_count_are_immutable() {
    let old = object(
        "KafkaCluster",
        json!({"racks": {"nodeLabel": "zone", "names": ["a"]}, "controllers": {"replicas": 1}}),
    );
    let relabelled = object(
        "KafkaCluster",
        json!({"racks": {"nodeLabel": "rack", "names": ["a"]}, "controllers": {"replicas": 1}}),
    );
    assert_refused(
        &cluster_schema(),
        &relabelled,
        Some(&old),
        "nodeLabel is immutable",
    );
    let more_voters = object(
        "KafkaCluster",
        json!({"racks": {"nodeLabel": "zone", "names": ["a"]}, "controllers": {"replicas": 3}}),
    );
    assert_refused(
        &cluster_schema(),
        &more_voters,
        Some(&old),
        "controller voters cannot change",
    );
}

#[test]
fn combined_mode_allows_one_broker_only() {
    let message = "combined mode (controllers.replicas: 0) allows only brokers: 1";
    let single = object(
        "KafkaCluster",
        json!({"brokers": 1, "controllers": {"replicas": 0}}),
    );
    assert_eq!(
        failures(&cluster_schema(), &single, None),
        Vec::<String>::new()
    );
    // brokers defaults to 1, so leaving it out is a single broker too.
    let defaulted = object("KafkaCluster", json!({"controllers": {"replicas": 0}}));
    assert_eq!(
        failures(&cluster_schema(), &defaulted, None),
        Vec::<String>::new()
    );
    let three = object(
        "KafkaCluster",
        json!({"brokers": 3, "racks": {"names": ["a", "b", "c"]}, "controllers": {"replicas": 0}}),
    );
    assert_refused(&cluster_schema(), &three, None, message);
    // Growing a combined cluster is refused on update as well.
    assert_refused(&cluster_schema(), &three, Some(&single), message);
    // Split mode keeps allowing any broker count.
    let split = object(
        "KafkaCluster",
        json!({"brokers": 3, "controllers": {"replicas": 1}}),
    );
    assert_eq!(
        failures(&cluster_schema(), &split, None),
        Vec::<String>::new()
    );
}

#[test]
fn the_mode_is_fixed_at_creation() {
    let combined = object(
        "KafkaCluster",
        json!({"brokers": 1, "controllers": {"replicas": 0}}),
    );
    let split = object(
        "KafkaCluster",
        json!({"brokers": 1, "controllers": {"replicas": 1}}),
    );
    assert_refused(
        &cluster_schema(),
        &split,
        Some(&combined),
        "controller voters cannot change",
    );
    assert_refused(
        &cluster_schema(),
        &combined,
        Some(&split),
        "controller voters cannot change",
    );
}

#[test]
fn operator_owned_properties_are_refused() {
    let cluster = object(
        "KafkaCluster",
        json!({"config": {"properties": {"node.id": "7", "num.io.threads": "8"}}}),
    );
    assert_refused(
        &cluster_schema(),
        &cluster,
        None,
        "this property is set by the operator",
    );
    let fine = object(
        "KafkaCluster",
        json!({"config": {"properties": {"num.io.threads": "8"}}}),
    );
    assert_eq!(
        failures(&cluster_schema(), &fine, None),
        Vec::<String>::new()
    );
}

#[test]
fn at_most_a_thousand_brokers_per_rack() {
    let crowded = object("KafkaCluster", json!({"brokers": 1001}));
    assert_refused(
        &cluster_schema(),
        &crowded,
        None,
        "at most 1000 brokers per rack",
    );
    let spread = object(
        "KafkaCluster",
        json!({"brokers": 1001, "racks": {"names": ["a", "b"]}}),
    );
    assert_eq!(
        failures(&cluster_schema(), &spread, None),
        Vec::<String>::new()
    );
}

#[test]
fn offset_resets_carry_their_target() {
    let reset = |extra: Value| {
        let mut offset_reset = json!({"id": "r1", "to": "Timestamp"});
        offset_reset
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        object(
            "ConsumerGroup",
            json!({"clusterRef": {"name": "a"}, "offsetReset": offset_reset}),
        )
    };
    assert_refused(
        &group_schema(),
        &reset(json!({})),
        None,
        "to: Timestamp needs timestampMs",
    );
    let with_time = reset(json!({"timestampMs": 1_700_000_000_000_i64}));
    assert_eq!(
        failures(&group_schema(), &with_time, None),
        Vec::<String>::new()
    );
}

#[test]
fn offset_resets_to_an_offset_name_it() {
    let reset = |offset_reset: Value| {
        object(
            "ConsumerGroup",
            json!({"clusterRef": {"name": "a"}, "offsetReset": offset_reset}),
        )
    };
    assert_refused(
        &group_schema(),
        &reset(json!({"id": "r1", "to": "Offset"})),
        None,
        "to: Offset needs offset or offsets",
    );
    for accepted in [
        json!({"id": "r1", "to": "Offset", "offset": 5}),
        json!({"id": "r1", "to": "Offset", "offsets": [{"topic": "t", "partition": 0, "offset": 5}]}),
    ] {
        assert_eq!(
            failures(&group_schema(), &reset(accepted), None),
            Vec::<String>::new()
        );
    }
}

#[test]
fn examples_pass_every_rule() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).expect("examples/") {
        let path = entry.expect("entry").path();
        let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let schema = match doc["kind"].as_str() {
            Some("KafkaCluster") => cluster_schema(),
            Some("Topic") => topic_schema(),
            Some("ConsumerGroup") => group_schema(),
            other => panic!("{}: unexpected kind {other:?}", path.display()),
        };
        let failures = failures(&schema, &doc, None);
        assert!(failures.is_empty(), "{}: {failures:?}", path.display());
        // Re-applying an unchanged manifest passes every transition rule too.
        let failures = failures_on_update(&schema, &doc);
        assert!(
            failures.is_empty(),
            "{} (update): {failures:?}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 3);
}

fn failures_on_update(schema: &Value, doc: &Value) -> Vec<String> {
    failures(schema, doc, Some(doc))
}

#[test]
fn volume_sizes_are_immutable() {
    // A StatefulSet's claim templates cannot change; the schema says so up front
    // instead of the apply failing later.
    let old = object(
        "KafkaCluster",
        json!({"storage": {"size": "10Gi", "storageClassName": "a"}, "controllers": {"storageSize": "1Gi"}}),
    );
    let bigger = object(
        "KafkaCluster",
        json!({"storage": {"size": "20Gi", "storageClassName": "a"}, "controllers": {"storageSize": "1Gi"}}),
    );
    assert_refused(
        &cluster_schema(),
        &bigger,
        Some(&old),
        "storage.size is immutable",
    );
    let other_class = object(
        "KafkaCluster",
        json!({"storage": {"size": "10Gi", "storageClassName": "b"}, "controllers": {"storageSize": "1Gi"}}),
    );
    assert_refused(
        &cluster_schema(),
        &other_class,
        Some(&old),
        "storageClassName is immutable",
    );
    let bigger_voters = object(
        "KafkaCluster",
        json!({"storage": {"size": "10Gi", "storageClassName": "a"}, "controllers": {"storageSize": "2Gi"}}),
    );
    assert_refused(
        &cluster_schema(),
        &bigger_voters,
        Some(&old),
        "storageSize is immutable",
    );
}
