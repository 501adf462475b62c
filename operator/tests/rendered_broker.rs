//! The configuration the operator renders, started with the real `strom-broker` exactly
//! as a pod would start it: the broker StatefulSet's container script run by `/bin/sh`,
//! the ConfigMap's `broker.properties` as the file it reads, the pod's environment as
//! the StatefulSet declares it. Only what must differ on a test machine is changed: the
//! mount paths (a temp dir, `$STROM_BROKER_BIN`) and, through the script's `"$@"`,
//! loopback listeners on free ports and a data directory in the temp dir.
//!
//! Combined mode (`examples/kafkacluster-single.yaml`, what the kind e2e deploys) and
//! split mode (a controller voter StatefulSet plus a broker-only StatefulSet) must start,
//! become ready and carry records.
//!
//! The broker binary comes from `STROM_BROKER_BIN`; without it these tests fail.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{broker_bin, free_port, log_tail, receive, spawn_logged, READY_TIMEOUT};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Container;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use strom_operator::cluster::desired::{
    desired, Defaults, Desired, BROKER_PROPERTIES, CONTROLLER_PROPERTIES,
};
use strom_operator::crd::{ConsumerGroup, KafkaCluster, Topic};
use strom_operator::group::sync as group_sync;
use strom_operator::kafka::{Admin, AdminConfig};
use strom_operator::topic::sync as topic_sync;

/// Where the pod mounts the ConfigMap and finds the binary (see `cluster::desired`).
const CONFIG_MOUNT: &str = "/etc/strom/";
const BROKER_PATH: &str = "/usr/local/bin/strom-broker";
const NAMESPACE: &str = "streaming";

/// A KafkaCluster from a YAML file of the repository, with what the API server adds.
fn cluster(relative: &str) -> KafkaCluster {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut cluster: KafkaCluster =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    cluster.metadata.namespace = Some(NAMESPACE.to_owned());
    cluster.metadata.uid = Some("00000000-0000-0000-0000-0000000000aa".to_owned());
    cluster
}

fn render(cluster: &KafkaCluster) -> Desired {
    desired(
        cluster,
        &Defaults {
            image: "strom:test".to_owned(),
        },
    )
    .expect("desired objects")
}

fn container(set: &StatefulSet) -> &Container {
    let template = &set.spec.as_ref().expect("StatefulSet spec").template;
    &template.spec.as_ref().expect("pod spec").containers[0]
}

/// A node started from a rendered StatefulSet, killed (by its pid) when dropped.
struct Node {
    child: Child,
    log: PathBuf,
    /// Holds the config file and the data directory until the node is gone.
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        // Only this process: `exec` made the shell the broker, so its pid is the broker's.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs ordinal 0 of `set` the way its pod would; see `start_ordinal`.
fn start(desired: &Desired, set: &StatefulSet, extra: impl FnOnce(&Path) -> Vec<String>) -> Node {
    start_ordinal(desired, set, 0, extra)
}

/// Runs pod `ordinal` of `set` the way it would run: the container's `/bin/sh -c`
/// script with the ConfigMap's files in a temp dir, the declared environment, and
/// `extra` (given a fresh data directory) appended to the script's arguments.
fn start_ordinal(
    desired: &Desired,
    set: &StatefulSet,
    ordinal: usize,
    extra: impl FnOnce(&Path) -> Vec<String>,
) -> Node {
    let container = container(set);
    let command = container.command.as_ref().expect("container command");
    assert_eq!(command.len(), 3, "{command:?}");
    assert_eq!(&command[..2], ["/bin/sh", "-c"]);
    let script = &command[2];
    // The substitutions below must hit, and the test's overrides must reach the broker.
    for needle in [CONFIG_MOUNT, BROKER_PATH, "\"$@\""] {
        assert!(script.contains(needle), "no {needle} in script:\n{script}");
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let config_dir = dir.path().join("config");
    std::fs::create_dir(&config_dir).unwrap();
    // The ConfigMap volume: every key a file.
    for (key, value) in desired.config_map.data.as_ref().expect("ConfigMap data") {
        std::fs::write(config_dir.join(key), value).unwrap();
    }
    let script = script
        .replace(CONFIG_MOUNT, &format!("{}/", config_dir.display()))
        .replace(
            BROKER_PATH,
            &shell_quote(&broker_bin().display().to_string()),
        );

    let pod = format!("{}-{ordinal}", set.metadata.name.as_deref().expect("name"));
    let mut sh = Command::new("/bin/sh");
    sh.arg("-c").arg(&script).arg("sh").env_clear();
    for var in container.env.as_ref().expect("container env") {
        let value = match (&var.value, &var.value_from) {
            (Some(value), None) => value.clone(),
            (None, Some(from)) => {
                let field = &from
                    .field_ref
                    .as_ref()
                    .expect("a field reference")
                    .field_path;
                // What the downward API fills in.
                match field.as_str() {
                    "metadata.name" => pod.clone(),
                    "metadata.namespace" => NAMESPACE.to_owned(),
                    other => panic!("env {} refers to {other}, unknown to this test", var.name),
                }
            }
            _ => panic!("env {} has no single source: {var:?}", var.name),
        };
        sh.env(&var.name, value);
    }
    let data = dir.path().join("data");
    for arg in extra(&data) {
        sh.arg("--override").arg(arg);
    }
    let log = dir.path().join("broker.log");
    let child = spawn_logged(&mut sh, &log);
    Node {
        child,
        log,
        _dir: dir,
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The status code of `GET path` on `addr`, if anything answers.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// Waits until `/readyz` answers 200, failing early (with the log) if the broker exits.
fn wait_ready(node: &mut Node, http: &str) {
    let started = Instant::now();
    loop {
        if let Some(status) = node.child.try_wait().expect("try_wait") {
            panic!(
                "the broker exited ({status}) instead of becoming ready; log:\n{}",
                log_tail(&node.log)
            );
        }
        if http_status(http, "/readyz") == Some(200) {
            return;
        }
        assert!(
            started.elapsed() < READY_TIMEOUT,
            "/readyz not 200 within {READY_TIMEOUT:?}; log:\n{}",
            log_tail(&node.log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What must differ on a test machine: loopback ports and a data directory of its own.
fn loopback_overrides(port: u16, http_port: u16, data: &Path) -> Vec<String> {
    vec![
        format!("listeners=PLAINTEXT://127.0.0.1:{port}"),
        format!("advertised.listeners=PLAINTEXT://127.0.0.1:{port}"),
        format!("log.dirs={}", data.display()),
        format!("strom.http.listener=127.0.0.1:{http_port}"),
    ]
}

#[test]
fn combined_single_broker_config_starts_the_real_broker() {
    let cluster = cluster("../examples/kafkacluster-single.yaml");
    assert!(
        cluster.spec.controllers.combined(),
        "the example is combined"
    );
    let desired = render(&cluster);
    assert!(desired.controller_set.is_none());
    let data = desired.config_map.data.as_ref().unwrap();
    assert!(!data.contains_key(CONTROLLER_PROPERTIES), "{data:?}");
    assert!(data[BROKER_PROPERTIES].contains("process.roles=broker,controller\n"));
    assert_eq!(desired.broker_sets.len(), 1);

    let (port, http_port) = (free_port(), free_port());
    let mut node = start(&desired, &desired.broker_sets[0], |data| {
        loopback_overrides(port, http_port, data)
    });
    let http = format!("127.0.0.1:{http_port}");
    wait_ready(&mut node, &http);

    let bootstrap = format!("127.0.0.1:{port}");

    // The example enables auto-creation: producing creates the topic with the
    // rendered default replication factor, which must fit the single broker.
    let topic = "rendered-config";
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .create()
        .expect("producer");
    let payload = "hello from the rendered config";
    producer
        .send(BaseRecord::<(), _>::to(topic).payload(payload))
        .map_err(|(e, _)| e)
        .expect("enqueue");
    producer.flush(Duration::from_secs(30)).unwrap_or_else(|e| {
        panic!(
            "record not acknowledged: {e}; log:\n{}",
            log_tail(&node.log)
        )
    });

    // The node id the script derived from the pod name is the voter the ConfigMap names.
    let metadata = producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let ids: Vec<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let voters = data[BROKER_PROPERTIES]
        .lines()
        .find_map(|l| l.strip_prefix("controller.quorum.voters="))
        .expect("controller.quorum.voters");
    assert!(
        voters.starts_with(&format!("{}@single-broker-0-0.", ids[0])),
        "voters {voters}, broker id {}",
        ids[0]
    );

    // A group member that commits: __consumer_offsets is created with the rendered
    // offsets.topic.replication.factor.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "rendered-config")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let received = receive(&consumer, 1);
    assert_eq!(
        received[0].payload.as_deref(),
        Some(payload.as_bytes()),
        "{received:?}"
    );
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .unwrap_or_else(|e| panic!("commit: {e}; log:\n{}", log_tail(&node.log)));
}

#[test]
fn split_mode_configs_form_a_cluster_and_carry_records() {
    // The single-broker example with a separate controller voter: split mode, the two
    // StatefulSets' scripts run as their pods would.
    let mut cluster = cluster("../examples/kafkacluster-single.yaml");
    cluster.spec.controllers.replicas = 1;
    let desired = render(&cluster);
    let controller_set = desired
        .controller_set
        .as_ref()
        .expect("split mode has controllers");
    let data = desired.config_map.data.as_ref().unwrap();
    assert!(data[BROKER_PROPERTIES].contains("process.roles=broker\n"));
    assert!(data[CONTROLLER_PROPERTIES].contains("process.roles=controller\n"));
    // The voter the ConfigMap names (its pod DNS name does not resolve here).
    let voter_id: String = data[CONTROLLER_PROPERTIES]
        .lines()
        .find_map(|l| l.strip_prefix("controller.quorum.voters="))
        .and_then(|v| v.split('@').next())
        .expect("a voter")
        .to_owned();
    let controller_port = free_port();
    let voters = format!("controller.quorum.voters={voter_id}@127.0.0.1:{controller_port}");

    let controller_http = free_port();
    let mut controller = start(&desired, controller_set, |dir| {
        vec![
            format!("listeners=CONTROLLER://127.0.0.1:{controller_port}"),
            voters.clone(),
            format!("log.dirs={}", dir.display()),
            format!("strom.http.listener=127.0.0.1:{controller_http}"),
        ]
    });
    let (port, http_port) = (free_port(), free_port());
    let mut broker = start(&desired, &desired.broker_sets[0], |dir| {
        let mut o = loopback_overrides(port, http_port, dir);
        o.push(voters.clone());
        o
    });
    wait_ready(&mut controller, &format!("127.0.0.1:{controller_http}"));
    wait_ready(&mut broker, &format!("127.0.0.1:{http_port}"));

    let bootstrap = format!("127.0.0.1:{port}");
    let topic = "rendered-split-config";
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .create()
        .expect("producer");
    let payload = "hello from split mode";
    producer
        .send(BaseRecord::<(), _>::to(topic).payload(payload))
        .map_err(|(e, _)| e)
        .expect("enqueue");
    producer.flush(Duration::from_secs(30)).unwrap_or_else(|e| {
        panic!(
            "record not acknowledged: {e}; broker log:\n{}\ncontroller log:\n{}",
            log_tail(&broker.log),
            log_tail(&controller.log)
        )
    });
    // Only the broker is offered to clients; the controller voter is not a broker.
    let metadata = producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let ids: Vec<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_ne!(ids[0].to_string(), voter_id);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "rendered-split")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let received = receive(&consumer, 1);
    assert_eq!(
        received[0].payload.as_deref(),
        Some(payload.as_bytes()),
        "{received:?}; broker log:\n{}",
        log_tail(&broker.log)
    );
}

/// An example manifest of the repository, parsed as the API server would hand it over.
fn example<K: serde::de::DeserializeOwned>(file: &str) -> K {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_zone_example_runs_the_topic_and_group_examples_as_written() {
    // examples/kafkacluster-three-zones.yaml: three controller voters (ordinals 0-2 of
    // the controller StatefulSet) and one broker per zone StatefulSet, every script run
    // as its pod would run it.
    let cluster = cluster("../examples/kafkacluster-three-zones.yaml");
    let desired = render(&cluster);
    let controller_set = desired.controller_set.as_ref().expect("split mode");
    assert_eq!(
        desired.broker_sets.len(),
        3,
        "one broker StatefulSet per zone"
    );
    let data = desired.config_map.data.as_ref().unwrap();
    let voter_ids: Vec<String> = data[CONTROLLER_PROPERTIES]
        .lines()
        .find_map(|l| l.strip_prefix("controller.quorum.voters="))
        .expect("voters")
        .split(',')
        .map(|v| v.split('@').next().unwrap().to_owned())
        .collect();
    assert_eq!(voter_ids, ["9000", "9001", "9002"]);
    let ports: Vec<u16> = voter_ids.iter().map(|_| free_port()).collect();
    let voters = format!(
        "controller.quorum.voters={}",
        voter_ids
            .iter()
            .zip(&ports)
            .map(|(id, port)| format!("{id}@127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut nodes = Vec::new();
    for (ordinal, port) in ports.iter().enumerate() {
        let http = free_port();
        let node = start_ordinal(&desired, controller_set, ordinal, |dir| {
            vec![
                format!("listeners=CONTROLLER://127.0.0.1:{port}"),
                voters.clone(),
                format!("log.dirs={}", dir.display()),
                format!("strom.http.listener=127.0.0.1:{http}"),
            ]
        });
        nodes.push((node, http));
    }
    let mut bootstrap = Vec::new();
    for set in &desired.broker_sets {
        let (port, http) = (free_port(), free_port());
        let node = start(&desired, set, |dir| {
            let mut o = loopback_overrides(port, http, dir);
            o.push(voters.clone());
            o
        });
        nodes.push((node, http));
        bootstrap.push(format!("127.0.0.1:{port}"));
    }
    for (node, http) in &mut nodes {
        wait_ready(node, &format!("127.0.0.1:{http}"));
    }
    let admin = Admin::new(
        bootstrap.clone(),
        AdminConfig {
            request_timeout: Duration::from_secs(10),
            retries: 5,
            ..AdminConfig::default()
        },
    );

    // examples/topic-retention.yaml, as written: six partitions, replication factor 3.
    let topic: Topic = example("topic-retention.yaml");
    let name = topic.kafka_name().to_owned();
    let created = topic_sync::sync(&admin, &name, &topic.spec)
        .await
        .unwrap_or_else(|e| panic!("the Topic example: {e:?}"));
    assert!(created.created);
    assert_eq!(created.problems, Vec::<String>::new());
    assert_eq!(created.topic.partitions.len(), 6);
    for partition in &created.topic.partitions {
        let mut racks: Vec<i32> = partition.replicas.iter().map(|id| id / 1000).collect();
        racks.sort_unstable();
        assert_eq!(racks, [0, 1, 2], "one replica per zone: {partition:?}");
    }
    let config = admin.describe_topic_config(&name).await.expect("config");
    for (key, value) in [
        ("retention.ms", "86400000"),
        ("retention.bytes", "1073741824"),
        ("segment.bytes", "104857600"),
        ("min.insync.replicas", "2"),
    ] {
        assert_eq!(
            config.get(key).and_then(|c| c.value.as_deref()),
            Some(value),
            "{key}"
        );
    }
    // Nothing left to do the second time.
    let again = topic_sync::sync(&admin, &name, &topic.spec)
        .await
        .expect("resync");
    assert!(
        !again.created && again.grown.is_none() && again.altered.is_empty(),
        "{again:?}"
    );

    // Records for the group to read.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap.join(","))
        .set("acks", "all")
        .create()
        .expect("producer");
    for i in 0..12 {
        producer
            .send(
                BaseRecord::<str, _>::to(&name)
                    .key(&format!("k{i}"))
                    .payload("order"),
            )
            .map_err(|(e, _)| e)
            .expect("enqueue");
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("acknowledged");

    // examples/consumergroup.yaml (step 1) only observes: a consumer of that group reads
    // everything and commits; the group shows no lag once it has left.
    let group: ConsumerGroup = example("consumergroup.yaml");
    assert!(group.spec.offset_reset.is_none(), "step 1 changes nothing");
    {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap.join(","))
            .set("group.id", group.group_id())
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        consumer.subscribe(&[&name]).expect("subscribe");
        receive(&consumer, 12);
        consumer
            .commit_consumer_state(CommitMode::Sync)
            .expect("commit");
    }
    let observed = group_sync::observe(&admin, group.group_id())
        .await
        .expect("observe");
    let (_, lag) = strom_operator::group::plan::lag(&observed.committed, &observed.log_end);
    assert_eq!(lag, 0, "{observed:?}");

    // examples/consumergroup-reset.yaml (step 2): back to the earliest offsets.
    let reset: ConsumerGroup = example("consumergroup-reset.yaml");
    assert_eq!(
        reset.metadata.name, group.metadata.name,
        "the same resource, step 2"
    );
    let wanted = reset.spec.offset_reset.as_ref().expect("a reset");
    let done = group_sync::reset(&admin, reset.group_id(), wanted)
        .await
        .unwrap_or_else(|e| panic!("the reset example: {e:?}"));
    assert_eq!(done.after.len(), 6, "{done:?}");
    assert!(done.after.values().all(|&o| o == 0), "{done:?}");
    let observed = group_sync::observe(&admin, group.group_id())
        .await
        .expect("observe");
    let (_, lag) = strom_operator::group::plan::lag(&observed.committed, &observed.log_end);
    assert_eq!(lag, 12, "every record is to be read again");
}
