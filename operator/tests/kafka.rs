//! The operator's Kafka side against a real `strom-broker` process: topics created,
//! altered, grown and deleted, config drift reverted, and consumer groups whose offsets
//! real librdkafka consumers (the engine of confluent-kafka) committed — their lag, an
//! offset reset that moves a consumer's position, and a reset refused while a member is
//! active.
//!
//! The broker binary comes from `STROM_BROKER_BIN` (`scripts/test` and
//! `scripts/test-operator` build it and set it); without it these tests fail and say
//! how to build it, rather than skip.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{
    broker_bin, consume, free_port, log_tail, produce, spawn_logged, CONSUME_TIMEOUT, READY_TIMEOUT,
};
use kafka_protocol::error::ResponseError;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::BaseProducer;
use strom_operator::crd::{OffsetReset, TopicSpec};
use strom_operator::group::sync as group_sync;
use strom_operator::kafka::{Admin, AdminConfig, ConfigOp, ConfigSource, KafkaAdmin};
use strom_operator::topic::sync as topic_sync;

/// One broker on loopback with its own data directory, killed (by its pid) when dropped.
struct Broker {
    child: Child,
    command: Command,
    bootstrap: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    async fn start() -> Broker {
        let binary = broker_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let http_port = free_port();
        let log = dir.path().join("broker.log");
        let mut command = Command::new(&binary);
        for o in [
            format!("listeners=PLAINTEXT://127.0.0.1:{port}"),
            format!("log.dirs={}", dir.path().join("data").display()),
            format!("strom.http.listener=127.0.0.1:{http_port}"),
            // No waiting for more members before a group's first rebalance.
            "group.initial.rebalance.delay.ms=0".to_owned(),
            "offsets.topic.num.partitions=1".to_owned(),
            "auto.create.topics.enable=false".to_owned(),
        ] {
            command.arg("--override").arg(o);
        }
        let child = Self::spawn(&mut command, &log);
        let broker = Broker {
            child,
            command,
            bootstrap: format!("127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        broker.wait_ready().await;
        broker
    }

    fn spawn(command: &mut Command, log: &std::path::Path) -> Child {
        spawn_logged(command, log)
    }

    async fn wait_ready(&self) {
        let admin = self.admin();
        let started = Instant::now();
        while admin.describe_topic("probe").await.is_err() {
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "broker not ready within {READY_TIMEOUT:?}; log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the broker (SIGKILL, by pid) and starts it again on the same port and data.
    async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&mut self.command, &self.log);
        self.wait_ready().await;
    }

    fn admin(&self) -> Admin {
        Admin::new(
            vec![self.bootstrap.clone()],
            AdminConfig {
                request_timeout: Duration::from_secs(10),
                retries: 3,
                ..AdminConfig::default()
            },
        )
    }

    fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    fn producer(&self) -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("producer")
    }

    fn consumer(&self, group: &str) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Only this broker: by its own pid, never by name.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn topic_spec(yaml: &str) -> TopicSpec {
    serde_yaml::from_str(yaml).expect("valid TopicSpec")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_altered_grown_and_deleted() {
    let broker = Broker::start().await;
    let admin = broker.admin();
    let spec = topic_spec(
        "clusterRef: {name: dev}\npartitions: 2\nretentionMs: 3600000\ncleanupPolicy: compact\n\
         config: {segment.ms: '600000'}",
    );

    let created = topic_sync::sync(&admin, "orders", &spec)
        .await
        .expect("sync");
    assert!(created.created);
    assert_eq!(created.topic.partitions.len(), 2);
    assert_eq!(created.topic.topic_id.len(), 22, "Kafka's base64 topic id");
    let config = admin.describe_topic_config("orders").await.expect("config");
    for (key, value) in [
        ("retention.ms", "3600000"),
        ("cleanup.policy", "compact"),
        ("segment.ms", "600000"),
    ] {
        assert_eq!(config[key].value.as_deref(), Some(value), "{key}");
        assert_eq!(config[key].source, ConfigSource::DynamicTopic, "{key}");
    }

    // A second sync of the same spec changes nothing.
    let again = topic_sync::sync(&admin, "orders", &spec)
        .await
        .expect("sync");
    assert!(
        !again.created && again.grown.is_none() && again.altered.is_empty(),
        "{again:?}"
    );
    assert_eq!(again.topic.topic_id, created.topic.topic_id);

    // Grow to 4 partitions, change retention, drop segment.ms from the spec.
    let changed = topic_spec(
        "clusterRef: {name: dev}\npartitions: 4\nretentionMs: 7200000\ncleanupPolicy: compact",
    );
    let altered = topic_sync::sync(&admin, "orders", &changed)
        .await
        .expect("sync");
    assert_eq!(altered.grown, Some((2, 4)));
    assert_eq!(
        altered.altered,
        [
            ConfigOp::Set("retention.ms".into(), "7200000".into()),
            ConfigOp::Delete("segment.ms".into()),
        ]
    );
    assert_eq!(altered.topic.partitions.len(), 4);
    let config = admin.describe_topic_config("orders").await.expect("config");
    assert_eq!(config["retention.ms"].value.as_deref(), Some("7200000"));
    assert_ne!(
        config.get("segment.ms").map(|e| e.source),
        Some(ConfigSource::DynamicTopic),
        "a key removed from the spec returns to its default"
    );

    // Many topics in one DescribeConfigs, only the keys asked for; a missing topic is
    // answered on its own.
    let topics = ["orders".to_owned(), "missing".to_owned()];
    let answers = admin
        .describe_topic_configs(&topics, Some(&["retention.ms", "min.insync.replicas"]))
        .await
        .expect("batched config");
    let orders = answers["orders"].as_ref().expect("orders' config");
    assert_eq!(
        orders.keys().collect::<Vec<_>>(),
        ["min.insync.replicas", "retention.ms"]
    );
    assert_eq!(orders["retention.ms"].value.as_deref(), Some("7200000"));
    let missing = answers["missing"].as_ref().expect_err("no such topic");
    assert_eq!(
        missing.kafka_error(),
        Some(ResponseError::UnknownTopicOrPartition),
        "{missing}"
    );

    assert!(topic_sync::delete(&admin, "orders").await.expect("delete"));
    assert_eq!(
        admin.describe_topic("orders").await.expect("describe"),
        None
    );
    // Deleting again is not an error: the topic is gone either way.
    assert!(!topic_sync::delete(&admin, "orders")
        .await
        .expect("delete again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_topic_is_adopted_and_drift_is_reverted() {
    let broker = Broker::start().await;
    let admin = broker.admin();
    // Created outside the operator, with a config the spec does not have.
    admin
        .create_topic(&strom_operator::kafka::NewTopic {
            name: "payments".into(),
            partitions: 3,
            replication_factor: None,
            configs: BTreeMap::from([("retention.ms".into(), "1000".into())]),
        })
        .await
        .expect("create");
    let spec = topic_spec("clusterRef: {name: dev}\npartitions: 3\nretentionBytes: 1048576");
    let adopted = topic_sync::sync(&admin, "payments", &spec)
        .await
        .expect("sync");
    assert!(!adopted.created, "adopted, not created");
    assert_eq!(
        adopted.altered,
        [
            ConfigOp::Set("retention.bytes".into(), "1048576".into()),
            ConfigOp::Delete("retention.ms".into()),
        ]
    );

    // Someone changes the topic in Kafka; the next (periodic) sync undoes it.
    admin
        .alter_topic_config(
            "payments",
            &[ConfigOp::Set("retention.bytes".into(), "1".into())],
        )
        .await
        .expect("out-of-band alter");
    let reverted = topic_sync::sync(&admin, "payments", &spec)
        .await
        .expect("sync");
    assert_eq!(
        reverted.altered,
        [ConfigOp::Set("retention.bytes".into(), "1048576".into())]
    );
    let config = admin
        .describe_topic_config("payments")
        .await
        .expect("config");
    assert_eq!(config["retention.bytes"].value.as_deref(), Some("1048576"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_resets_and_refusals_with_real_consumers() {
    let broker = Broker::start().await;
    let admin = broker.admin();
    let spec = topic_spec("clusterRef: {name: dev}\npartitions: 2");
    topic_sync::sync(&admin, "events", &spec)
        .await
        .expect("create topic");
    let producer = broker.producer();
    let first = [(0, 10), (1, 6)];
    produce(&producer, "events", &first);

    // A real consumer reads everything and commits, then leaves the group.
    {
        let consumer = broker.consumer("billing");
        consumer.subscribe(&["events"]).expect("subscribe");
        let read = consume(&consumer, 16);
        assert_eq!(read.len(), 16);
        consumer
            .commit_consumer_state(CommitMode::Sync)
            .expect("commit");
    }
    let second = [(0, 5), (1, 2)];
    produce(&producer, "events", &second);

    let view = group_sync::observe(&admin, "billing")
        .await
        .expect("observe");
    assert_eq!(view.info.state, "Empty");
    let committed_of = |p: i32| first.iter().find(|(q, _)| *q == p).map(|(_, n)| *n as i64);
    let expected_lag: i64 = second.iter().map(|(_, n)| *n as i64).sum();
    for partition in [0, 1] {
        let tp = ("events".to_owned(), partition);
        assert_eq!(view.committed.get(&tp).copied(), committed_of(partition));
        let produced: usize = first
            .iter()
            .chain(&second)
            .filter(|(q, _)| *q == partition)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(view.log_end.get(&tp).copied(), Some(produced as i64));
    }
    let (offsets, total) = strom_operator::group::plan::lag(&view.committed, &view.log_end);
    assert_eq!(total, expected_lag);
    assert_eq!(offsets.iter().map(|p| p.lag).collect::<Vec<_>>(), [5, 2]);

    // Reset to the earliest offsets while the group is empty.
    let earliest: OffsetReset =
        serde_yaml::from_str("{id: replay, to: Earliest, topics: [events]}").unwrap();
    let done = group_sync::reset(&admin, "billing", &earliest)
        .await
        .expect("reset");
    assert_eq!(
        done.before,
        BTreeMap::from([(("events".into(), 0), 10), (("events".into(), 1), 6)])
    );
    assert_eq!(
        done.after,
        BTreeMap::from([(("events".into(), 0), 0), (("events".into(), 1), 0)])
    );

    // Explicit offset on one partition, the end on the other.
    let explicit: OffsetReset = serde_yaml::from_str(
        "{id: fix, to: Offset, offset: 1000, offsets: [{topic: events, partition: 0, offset: 12}]}",
    )
    .unwrap();
    let done = group_sync::reset(&admin, "billing", &explicit)
        .await
        .expect("reset");
    assert_eq!(
        done.after,
        BTreeMap::from([(("events".into(), 0), 12), (("events".into(), 1), 8)]),
        "explicit offset on p0; 1000 clamped to the log end on p1"
    );

    // A real consumer of the group now starts where the reset put it: p0 at 12.
    let consumer = broker.consumer("billing");
    consumer.subscribe(&["events"]).expect("subscribe");
    let read = consume(&consumer, 3);
    let mut from_p0: Vec<i64> = read
        .iter()
        .filter(|(p, _)| *p == 0)
        .map(|(_, o)| *o)
        .collect();
    from_p0.sort_unstable();
    assert_eq!(
        from_p0,
        [12, 13, 14],
        "the consumer resumed at the reset offset"
    );
    assert!(
        read.iter().all(|(p, _)| *p == 0),
        "p1 was reset to its end: {read:?}"
    );

    // While that consumer is a member, a reset is refused and nothing moves.
    let view = group_sync::observe(&admin, "billing")
        .await
        .expect("observe");
    assert_eq!(view.info.members.len(), 1);
    let member = &view.info.members[0];
    assert!(!member.client_id.is_empty() && !member.host.is_empty());
    let assigned: Vec<i32> = member.assignment.get("events").cloned().unwrap_or_default();
    assert_eq!(assigned, [0, 1], "the one member has both partitions");
    let committed_before = view.committed.clone();
    let refused = group_sync::reset(&admin, "billing", &earliest).await;
    match refused {
        Err(group_sync::ResetError::GroupActive(message)) => {
            assert!(message.contains("1 active member"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let after_refusal = admin.fetch_offsets("billing").await.expect("fetch");
    assert_eq!(after_refusal, committed_before);

    let listed = admin.list_groups().await.expect("list groups");
    let billing = listed
        .iter()
        .find(|g| g.group_id == "billing")
        .expect("ListGroups lists the group");
    assert_eq!(
        (billing.protocol_type.as_str(), billing.state.as_str()),
        ("consumer", "Stable")
    );

    // Deleting a group with a member is refused by Kafka; once it leaves, it works.
    let err = group_sync::delete(&admin, "billing").await.unwrap_err();
    assert_eq!(
        err.kafka_error(),
        Some(kafka_protocol::error::ResponseError::NonEmptyGroup),
        "{err}"
    );
    drop(consumer);
    let started = Instant::now();
    while KafkaAdmin::describe_group(&admin, "billing")
        .await
        .expect("describe")
        .state
        != "Empty"
    {
        assert!(started.elapsed() < CONSUME_TIMEOUT, "the member never left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // OffsetDelete drops one partition's committed offset of the now empty group.
    admin
        .delete_offsets("billing", &[("events".to_owned(), 1)])
        .await
        .expect("delete offsets");
    let left = admin.fetch_offsets("billing").await.expect("fetch");
    assert_eq!(
        left.keys().cloned().collect::<Vec<_>>(),
        [("events".to_owned(), 0)]
    );
    assert!(group_sync::delete(&admin, "billing").await.expect("delete"));
    assert!(admin
        .fetch_offsets("billing")
        .await
        .expect("fetch")
        .is_empty());
    let gone = KafkaAdmin::describe_group(&admin, "billing")
        .await
        .expect("describe");
    assert_eq!(gone.state, "Dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_reset_finds_the_first_newer_record() {
    let broker = Broker::start().await;
    let admin = broker.admin();
    let spec = topic_spec("clusterRef: {name: dev}\npartitions: 1");
    topic_sync::sync(&admin, "audit", &spec)
        .await
        .expect("create topic");
    let producer = broker.producer();
    produce(&producer, "audit", &[(0, 4)]);
    // Records carry their producer's clock (CreateTime); the next ones are newer.
    std::thread::sleep(Duration::from_millis(20));
    let between = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    std::thread::sleep(Duration::from_millis(20));
    produce(&producer, "audit", &[(0, 3)]);

    // The group has never existed: Kafka describes it as Dead, and a reset may run.
    let reset = |yaml: String| serde_yaml::from_str::<OffsetReset>(&yaml).unwrap();
    let done = group_sync::reset(
        &admin,
        "auditors",
        &reset(format!(
            "{{id: t, to: Timestamp, timestampMs: {between}, topics: [audit]}}"
        )),
    )
    .await
    .expect("reset");
    assert!(done.before.is_empty(), "nothing was committed before");
    assert_eq!(done.after, BTreeMap::from([(("audit".into(), 0), 4)]));

    // Newer than every record: the log end.
    let future = between + 3_600_000;
    let done = group_sync::reset(
        &admin,
        "auditors",
        &reset(format!("{{id: t2, to: Timestamp, timestampMs: {future}}}")),
    )
    .await
    .expect("reset");
    assert_eq!(done.before, BTreeMap::from([(("audit".into(), 0), 4)]));
    assert_eq!(done.after, BTreeMap::from([(("audit".into(), 0), 7)]));

    // A topic that does not exist fails the reset with a typed error.
    let missing = group_sync::reset(
        &admin,
        "auditors",
        &reset("{id: t3, to: Earliest, topics: [nope]}".into()),
    )
    .await;
    assert!(
        matches!(missing, Err(group_sync::ResetError::UnknownTopic(ref t)) if t == "nope"),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_client_reconnects_after_a_broker_restart() {
    let mut broker = Broker::start().await;
    let admin = broker.admin();
    let spec = topic_spec("clusterRef: {name: dev}\npartitions: 1");
    let created = topic_sync::sync(&admin, "durable", &spec)
        .await
        .expect("create");
    // A bootstrap list whose first address is dead still reaches the cluster.
    let dead = format!("127.0.0.1:{}", free_port());
    let listed = Admin::new(vec![dead, broker.bootstrap.clone()], AdminConfig::default());
    assert!(listed
        .describe_topic("durable")
        .await
        .expect("describe")
        .is_some());

    broker.restart().await;
    // The same client: its old connection is dead, the retry connects anew.
    let described = admin
        .describe_topic("durable")
        .await
        .expect("describe after restart")
        .expect("the topic survived the restart");
    assert_eq!(described.topic_id, created.topic.topic_id);
}

/// A stand-in API server for the reconcile tests below: it answers the KafkaCluster
/// `dev` (with `bootstrap` in its status), an empty Topic list, status applies (echoing
/// the status) and events, and records every request as (method, path, body).
/// The requests a fake API server saw: (method, path, JSON body).
type SeenRequests = std::sync::Arc<std::sync::Mutex<Vec<(String, String, serde_json::Value)>>>;

fn fake_api_server(bootstrap: String) -> (kube::Client, SeenRequests) {
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::json;

    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen: SeenRequests = std::sync::Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().path().to_owned();
            let bytes = request
                .into_body()
                .collect_bytes()
                .await
                .unwrap_or_default();
            let body: serde_json::Value =
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            let base = "/apis/strom.dev/v1alpha1/namespaces/default";
            let answer = if path == format!("{base}/kafkaclusters/dev") {
                json!({
                    "apiVersion": "strom.dev/v1alpha1", "kind": "KafkaCluster",
                    "metadata": {"name": "dev", "namespace": "default"},
                    "spec": {}, "status": {"bootstrap": bootstrap},
                })
            } else if path == format!("{base}/topics") {
                json!({"apiVersion": "strom.dev/v1alpha1", "kind": "TopicList", "metadata": {}, "items": []})
            } else if path.ends_with("/status") {
                json!({
                    "apiVersion": "strom.dev/v1alpha1", "kind": body["kind"],
                    "metadata": {"name": "x", "namespace": "default"},
                    "spec": {"clusterRef": {"name": "dev"}}, "status": body["status"],
                })
            } else {
                // Events: echoed, as the API server does.
                body.clone()
            };
            record.lock().unwrap().push((method, path, body));
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
    });
    (kube::Client::new(service, "default"), seen)
}

fn context(client: kube::Client) -> std::sync::Arc<strom_operator::cluster::reconcile::Context> {
    use kube::runtime::events::Reporter;
    use strom_operator::events::Events;
    let recorder = Events::new(
        client.clone(),
        Reporter {
            controller: "strom-operator".into(),
            instance: None,
        },
    );
    std::sync::Arc::new(strom_operator::cluster::reconcile::Context {
        client,
        recorder: std::sync::Arc::new(recorder),
        defaults: strom_operator::cluster::desired::Defaults {
            image: "strom:test".into(),
        },
        metrics: std::sync::Arc::new(strom_operator::metrics::Metrics::new()),
        now: k8s_openapi::jiff::Timestamp::now,
        kafka: std::sync::Arc::new(strom_operator::kafka::Admins::new(AdminConfig::default())),
    })
}

/// The whole Topic and ConsumerGroup reconciles — bootstrap address from the cluster's
/// status, the pooled admin client, status and events — against a real broker, with
/// only the Kubernetes API faked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciles_act_on_a_real_broker() {
    use serde_json::json;
    use strom_operator::crd::{ConsumerGroup, Topic};

    let broker = Broker::start().await;
    let admin = broker.admin();
    let (client, seen) = fake_api_server(broker.bootstrap.clone());
    let ctx = context(client);

    let topic = |status: serde_json::Value| -> Topic {
        serde_json::from_value(json!({
            "apiVersion": "strom.dev/v1alpha1", "kind": "Topic",
            "metadata": {"name": "orders", "namespace": "default", "uid": "u1", "generation": 1,
                         "creationTimestamp": "2024-01-01T00:00:00Z",
                         "finalizers": ["strom.dev/topic"]},
            "spec": {"clusterRef": {"name": "dev"}, "partitions": 2, "retentionMs": 60000},
            "status": status,
        }))
        .unwrap()
    };
    strom_operator::topic::reconcile::reconcile(std::sync::Arc::new(topic(json!({}))), ctx.clone())
        .await
        .expect("topic reconcile");
    let described = admin
        .describe_topic("orders")
        .await
        .unwrap()
        .expect("created in Kafka");
    assert_eq!(described.partitions.len(), 2);
    let status = {
        let seen = seen.lock().unwrap();
        let (_, _, body) = seen
            .iter()
            .find(|(m, p, _)| m == "PATCH" && p.ends_with("/topics/orders/status"))
            .expect("a status apply");
        assert!(
            seen.iter()
                .any(|(m, _, body)| m == "POST" && body["reason"] == "TopicCreated"),
            "a TopicCreated event"
        );
        body["status"].clone()
    };
    assert_eq!(status["topicId"], json!(described.topic_id));
    assert_eq!(status["partitions"], 2);

    // Drift in Kafka, then the periodic reconcile with the status it wrote.
    admin
        .alter_topic_config(
            "orders",
            &[ConfigOp::Set("retention.ms".into(), "1".into())],
        )
        .await
        .unwrap();
    seen.lock().unwrap().clear();
    strom_operator::topic::reconcile::reconcile(std::sync::Arc::new(topic(status)), ctx.clone())
        .await
        .expect("topic reconcile");
    let config = admin.describe_topic_config("orders").await.unwrap();
    assert_eq!(config["retention.ms"].value.as_deref(), Some("60000"));
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .any(|(_, _, body)| body["reason"] == "ConfigUpdated"));

    // A group whose offsets a real consumer committed: lag in status.
    produce(&broker.producer(), "orders", &[(0, 4), (1, 1)]);
    {
        let consumer = broker.consumer("readers");
        consumer.subscribe(&["orders"]).expect("subscribe");
        consume(&consumer, 5);
        consumer
            .commit_consumer_state(CommitMode::Sync)
            .expect("commit");
    }
    produce(&broker.producer(), "orders", &[(1, 2)]);
    let group: ConsumerGroup = serde_json::from_value(json!({
        "apiVersion": "strom.dev/v1alpha1", "kind": "ConsumerGroup",
        "metadata": {"name": "readers", "namespace": "default", "uid": "u2", "generation": 1,
                     "finalizers": ["strom.dev/consumergroup"]},
        "spec": {"clusterRef": {"name": "dev"}},
    }))
    .unwrap();
    seen.lock().unwrap().clear();
    strom_operator::group::reconcile::reconcile(std::sync::Arc::new(group), ctx)
        .await
        .expect("group reconcile");
    let seen = seen.lock().unwrap();
    let (_, _, body) = seen
        .iter()
        .find(|(m, p, _)| m == "PATCH" && p.ends_with("/consumergroups/readers/status"))
        .expect("a status apply");
    assert_eq!(body["status"]["state"], "Empty");
    assert_eq!(body["status"]["totalLag"], 2);
    assert_eq!(
        body["status"]["offsets"],
        json!([
            {"topic": "orders", "partition": 0, "committedOffset": 4, "logEndOffset": 4, "lag": 0},
            {"topic": "orders", "partition": 1, "committedOffset": 1, "logEndOffset": 3, "lag": 2},
        ])
    );
}
