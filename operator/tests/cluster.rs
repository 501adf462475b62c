//! The KafkaCluster controller's data moves against real `strom-broker` processes (only
//! the Kubernetes side is left out): a three-zone cluster of one controller and three
//! brokers grows to six — the operator's step (`cluster::data::step`, what every reconcile
//! runs) plans with strom-core and reassigns under a throttle until the new brokers hold
//! their share, every partition across three racks — and shrinks back to three only after
//! the brokers it removes are drained, all under an acks=all producer whose acknowledged
//! records must all be read back at the end.
//!
//! Node ids are the operator's own (`1000 × rack + ordinal`, controllers from 9000), so
//! the brokers are those `Layout` names. The broker binary comes from `STROM_BROKER_BIN`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{broker_bin, free_port, log_tail, spawn_logged, CONSUME_TIMEOUT};
use k8s_openapi::jiff::Timestamp;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, TopicPartitionList};
use strom_operator::cluster::data;
use strom_operator::cluster::layout::Layout;
use strom_operator::cluster::roll::{next_restart, PodState, RollStep};
use strom_operator::crd::TopicSpec;
use strom_operator::crd::{
    KafkaCluster, KafkaClusterSpec, KafkaClusterStatus, OperationKind, OperationPhase,
};
use strom_operator::kafka::{Admin, AdminConfig, KafkaAdmin, NewTopic};
use strom_operator::topic::sync as topic_sync;

const TOPIC: &str = "orders";
const PARTITIONS: i32 = 12;
const RACKS: [&str; 3] = ["zone-a", "zone-b", "zone-c"];
/// How long one scale (plan, moves, throttles cleared) may take.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest an acks=all producer may go without an ack while one broker restarts:
/// loose for a loaded 2-core machine, far below the stall an unsafe restart causes.
const ACK_STALL_BOUND: Duration = Duration::from_secs(15);
/// How long a stopping broker gets before it is killed, as a pod's grace period would
/// end it. Short: a broker's SIGTERM shutdown has been seen to hang past 30 s under load
/// (a broker bug, logged when it happens), and a killed broker is what a roll must
/// survive anyway.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Between two steps, as a reconcile's requeue would be (shortened).
const STEP_INTERVAL: Duration = Duration::from_millis(300);

/// One node process, killed (by its pid) when dropped.
struct Node {
    child: Child,
    command: Command,
    log: PathBuf,
}

impl Node {
    /// SIGTERM, as the kubelet stops a pod: the broker shuts down in a controlled way
    /// and deregisters. Killed if it has not stopped within a pod's grace period.
    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < STOP_GRACE {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "{} did not stop within {STOP_GRACE:?} of SIGTERM; killed. Its log:\n{}",
            self.log.display(),
            log_tail(&self.log)
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The pod of a broker the StatefulSet scaled away goes.
    fn terminate(mut self) {
        self.stop();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    controller_port: u16,
    nodes: BTreeMap<i32, Node>,
    ports: BTreeMap<i32, u16>,
}

impl Cluster {
    fn start() -> Cluster {
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            controller_port: free_port(),
            nodes: BTreeMap::new(),
            ports: BTreeMap::new(),
        };
        let port = cluster.controller_port;
        cluster.spawn(
            9000,
            &[
                "process.roles=controller".to_owned(),
                format!("listeners=CONTROLLER://127.0.0.1:{port}"),
            ],
        );
        cluster
    }

    fn spawn(&mut self, id: i32, own: &[String]) {
        let node_dir = self.dir.path().join(format!("node-{id}"));
        std::fs::create_dir_all(&node_dir).expect("node dir");
        let log = node_dir.join("broker.log");
        let mut command = Command::new(broker_bin());
        let mut props = vec![
            format!("node.id={id}"),
            "controller.listener.names=CONTROLLER".to_owned(),
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".to_owned(),
            format!(
                "controller.quorum.voters=9000@127.0.0.1:{}",
                self.controller_port
            ),
            format!("log.dirs={}", node_dir.join("data").display()),
            format!("strom.http.listener=127.0.0.1:{}", free_port()),
            "broker.session.timeout.ms=3000".to_owned(),
            "broker.heartbeat.interval.ms=500".to_owned(),
            "controller.quorum.election.timeout.ms=500".to_owned(),
            "controller.quorum.fetch.timeout.ms=1000".to_owned(),
            "offsets.topic.num.partitions=1".to_owned(),
            "group.initial.rebalance.delay.ms=0".to_owned(),
        ];
        props.extend(own.iter().cloned());
        for p in props {
            command.arg("--override").arg(p);
        }
        let child = spawn_logged(&mut command, &log);
        self.nodes.insert(
            id,
            Node {
                child,
                command,
                log,
            },
        );
    }

    /// What deleting the pod does to a broker of an `OnDelete` StatefulSet: SIGTERM
    /// (controlled shutdown), then the same node starts again on its data.
    fn restart(&mut self, id: i32) {
        let node = self.nodes.get_mut(&id).expect("a running node");
        node.stop();
        node.child = spawn_logged(&mut node.command, &node.log);
    }

    fn start_broker(&mut self, id: i32) {
        let port = free_port();
        self.ports.insert(id, port);
        let rack = RACKS[(id / 1000) as usize];
        self.spawn(
            id,
            &[
                "process.roles=broker".to_owned(),
                format!("listeners=PLAINTEXT://127.0.0.1:{port}"),
                format!("broker.rack={rack}"),
                "auto.create.topics.enable=false".to_owned(),
            ],
        );
    }

    fn bootstrap(&self) -> String {
        self.ports
            .values()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn admin(&self) -> Admin {
        Admin::new(
            self.ports
                .values()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect(),
            AdminConfig {
                request_timeout: Duration::from_secs(10),
                retries: 3,
                ..AdminConfig::default()
            },
        )
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|(id, n)| format!("--- node {id}\n{}", log_tail(&n.log)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until Metadata lists exactly `ids` as live brokers.
    async fn wait_brokers(&self, ids: &[i32]) {
        let admin = self.admin();
        let want: BTreeSet<i32> = ids.iter().copied().collect();
        let started = Instant::now();
        loop {
            if let Ok(view) = admin.describe_cluster().await {
                if view.brokers.iter().map(|b| b.id).collect::<BTreeSet<_>>() == want {
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "brokers {ids:?} not all live in time\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Acknowledged records: (partition, offset) -> payload.
type Acked = Arc<Mutex<BTreeMap<(i32, i64), Vec<u8>>>>;

/// Remembers every acknowledged record, and every delivery failure.
struct Acks(Acked, Arc<Mutex<Vec<String>>>);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                self.0.lock().unwrap().insert(
                    (m.partition(), m.offset()),
                    m.payload().unwrap_or_default().to_vec(),
                );
            }
            Err((e, _)) => self.1.lock().unwrap().push(e.to_string()),
        }
    }
}

/// An acks=all idempotent producer writing to every partition of `TOPIC` from its own
/// thread, remembering what was acknowledged.
struct Load {
    acked: Acked,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Load {
    fn start(cluster: &Cluster) -> Load {
        let acked: Acked = Arc::new(Mutex::new(BTreeMap::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let producer: ThreadedProducer<Acks> = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap())
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "120000")
            .set("linger.ms", "5")
            .create_with_context(Acks(acked.clone(), errors.clone()))
            .expect("producer");
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let payload = format!("record {i}");
                    let partition = (i % PARTITIONS as u64) as i32;
                    let record = BaseRecord::<(), _>::to(TOPIC)
                        .partition(partition)
                        .payload(&payload);
                    if producer.send(record).is_ok() {
                        i += 1;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                producer
                    .flush(Duration::from_secs(120))
                    .expect("every record acknowledged or failed");
            })
        };
        Load {
            acked,
            errors,
            stop,
            thread,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops writing, waits for the last acks, and fails on any delivery failure.
    fn finish(self) -> BTreeMap<(i32, i64), Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("producer thread");
        let errors = self.errors.lock().unwrap();
        assert!(errors.is_empty(), "produce failures: {errors:?}");
        self.acked.lock().unwrap().clone()
    }
}

fn kafka_cluster(brokers: i32, status: Option<KafkaClusterStatus>) -> KafkaCluster {
    let spec: KafkaClusterSpec = serde_json::from_value(serde_json::json!({
        "brokers": brokers,
        "racks": {"names": RACKS},
        "rebalance": {"throttleBytesPerSecond": 20_000_000},
    }))
    .expect("valid spec");
    let mut cluster = KafkaCluster::new("k", spec);
    cluster.status = status;
    cluster
}

/// Runs the operator's data step, as successive reconciles would, until `done` says so;
/// returns every operation status it went through and the last outcome's release flag.
async fn run_steps(
    cluster: &Cluster,
    brokers: i32,
    current: &BTreeMap<String, i32>,
    done: impl Fn(&data::Outcome) -> bool,
) -> Vec<strom_operator::crd::OperationStatus> {
    let admin = cluster.admin();
    let desired = Layout::of(&kafka_cluster(brokers, None));
    let mut status = KafkaClusterStatus::default();
    let mut seen = Vec::new();
    let started = Instant::now();
    loop {
        let outcome = data::step(
            &kafka_cluster(brokers, Some(status.clone())),
            &desired,
            current,
            true,
            Some(&admin as &dyn KafkaAdmin),
            3,
            Timestamp::now(),
        )
        .await;
        if let Some(op) = &outcome.operation {
            if seen.last() != Some(op) {
                seen.push(op.clone());
            }
        }
        if done(&outcome) {
            return seen;
        }
        status.operation = outcome.operation;
        assert!(
            started.elapsed() < OPERATION_TIMEOUT,
            "the operation did not end in time: {seen:#?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(STEP_INTERVAL).await;
    }
}

fn sets(per_rack: i32) -> BTreeMap<String, i32> {
    (0..3)
        .map(|r| (format!("k-broker-{r}"), per_rack))
        .collect()
}

/// One cluster at a time: two of them side by side on two cores make every timing bound
/// a coin toss.
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A controller and brokers 0, 1000 and 2000 in three zones, `TOPIC` on all three
/// (min.insync.replicas 2), and the producer under way with `acks` records acknowledged.
async fn three_zones_under_load(acks: usize) -> (Cluster, Load) {
    let mut cluster = Cluster::start();
    for id in [0, 1000, 2000] {
        cluster.start_broker(id);
    }
    cluster.wait_brokers(&[0, 1000, 2000]).await;
    cluster
        .admin()
        .create_topic(&NewTopic {
            name: TOPIC.into(),
            partitions: PARTITIONS,
            replication_factor: Some(3),
            configs: BTreeMap::from([("min.insync.replicas".to_owned(), "2".to_owned())]),
        })
        .await
        .expect("topic created");
    let load = Load::start(&cluster);
    let started = Instant::now();
    while load.acked() < acks {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the producer got no acks\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (cluster, load)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_zones_grow_to_six_brokers_and_shrink_back_after_the_drain_under_acks_all_load() {
    let _one = ONE_CLUSTER.lock().await;
    let (mut cluster, load) = three_zones_under_load(2000).await;
    let admin = cluster.admin();

    // Scale up: the new brokers start and register; the step rebalances onto them.
    for id in [1, 1001, 2001] {
        cluster.start_broker(id);
    }
    cluster.wait_brokers(&[0, 1, 1000, 1001, 2000, 2001]).await;
    let ops = run_steps(&cluster, 6, &sets(2), |o| {
        o.operation
            .as_ref()
            .is_some_and(|op| op.phase == OperationPhase::Completed)
    })
    .await;
    let first = &ops[0];
    assert_eq!(
        (first.kind, first.phase),
        (OperationKind::Rebalance, OperationPhase::Moving),
        "{ops:#?}"
    );
    assert_eq!(first.brokers, [1, 1001, 2001]);
    assert!(
        first.partitions_total > 0 && !first.throttled_brokers.is_empty(),
        "{first:?}"
    );
    let view = admin.describe_cluster().await.expect("metadata");
    let racks: BTreeMap<i32, String> = view
        .brokers
        .iter()
        .map(|b| (b.id, b.rack.clone().unwrap()))
        .collect();
    let mut counts: BTreeMap<i32, usize> = racks.keys().map(|b| (*b, 0)).collect();
    let topic = view
        .topics
        .iter()
        .find(|t| t.name == TOPIC)
        .expect("the topic");
    for p in &topic.partitions {
        let in_racks: BTreeSet<&String> = p.replicas.iter().map(|r| &racks[r]).collect();
        assert_eq!(
            in_racks.len(),
            3,
            "partition {} shares a rack: {:?}",
            p.partition,
            p.replicas
        );
        for r in &p.replicas {
            *counts.get_mut(r).unwrap() += 1;
        }
    }
    let (max, min) = (
        counts.values().max().unwrap(),
        counts.values().min().unwrap(),
    );
    assert!(
        max - min <= 1,
        "replicas per broker after the rebalance: {counts:?}"
    );
    for b in [1, 1001, 2001] {
        assert!(counts[&b] > 0, "broker {b} got nothing: {counts:?}");
    }
    // Throttles are gone once the operation completed.
    let topic_config = admin.describe_topic_config(TOPIC).await.expect("configs");
    assert!(
        topic_config
            .get("follower.replication.throttled.replicas")
            .is_none_or(|e| e.value.as_deref().unwrap_or_default().is_empty()),
        "{topic_config:?}"
    );

    // A Topic's replication factor 1 -> 3 is a rack-aware reassignment, followed by
    // successive syncs until the topic matches its spec.
    let audit = "audit";
    admin
        .create_topic(&NewTopic {
            name: audit.into(),
            partitions: 4,
            replication_factor: Some(1),
            configs: BTreeMap::new(),
        })
        .await
        .expect("topic created");
    let spec: TopicSpec =
        serde_yaml::from_str("clusterRef: {name: k}\npartitions: 4\nreplicationFactor: 3")
            .expect("valid TopicSpec");
    let first = topic_sync::sync(&admin as &dyn KafkaAdmin, audit, &spec)
        .await
        .expect("sync");
    assert_eq!(
        first.reassigned.map(|(f, t, _)| (f, t)),
        Some((1, 3)),
        "{first:?}"
    );
    let started = Instant::now();
    loop {
        let outcome = topic_sync::sync(&admin as &dyn KafkaAdmin, audit, &spec)
            .await
            .expect("sync");
        assert!(outcome.problems.is_empty(), "{outcome:?}");
        if outcome.reassigning.is_none() {
            for p in &outcome.topic.partitions {
                let in_racks: BTreeSet<&String> = p.replicas.iter().map(|r| &racks[r]).collect();
                assert_eq!((p.replicas.len(), in_racks.len()), (3, 3), "{p:?}");
            }
            break;
        }
        assert!(
            started.elapsed() < OPERATION_TIMEOUT,
            "RF change not done: {outcome:?}"
        );
        tokio::time::sleep(STEP_INTERVAL).await;
    }

    // Scale down: the StatefulSets still have two brokers per rack; the spec wants one.
    // The step drains 1, 1001 and 2001 and only then releases them.
    let ops = run_steps(&cluster, 3, &sets(2), |o| o.release).await;
    let drain = ops
        .iter()
        .find(|op| op.kind == OperationKind::Drain)
        .expect("a drain ran");
    assert_eq!(drain.brokers, [1, 1001, 2001]);
    assert_eq!(
        ops.last().unwrap().phase,
        OperationPhase::Completed,
        "{ops:#?}"
    );
    let view = admin.describe_cluster().await.expect("metadata");
    for p in &view
        .topics
        .iter()
        .find(|t| t.name == TOPIC)
        .unwrap()
        .partitions
    {
        assert!(
            p.replicas.iter().all(|r| [0, 1000, 2000].contains(r)),
            "partition {} still on a removed broker: {:?}",
            p.partition,
            p.replicas
        );
    }
    for b in [1, 1001, 2001] {
        let held = admin.replica_sizes(b).await.expect("log dirs");
        assert!(
            held.is_empty(),
            "broker {b} released while holding {held:?}"
        );
        // The StatefulSet shrinks now: the pod goes.
        cluster.nodes.remove(&b).expect("running").terminate();
        cluster.ports.remove(&b);
    }
    cluster.wait_brokers(&[0, 1000, 2000]).await;

    // Every acknowledged record is there, from the three brokers that remain.
    let acked = load.finish();
    println!(
        "{} records acknowledged across the scale up and down",
        acked.len()
    );
    assert_all_stored(&cluster, &acked);
}

/// Reads every partition of `TOPIC` from the start and fails unless each acknowledged
/// record is stored at its offset.
fn assert_all_stored(cluster: &Cluster, acked: &BTreeMap<(i32, i64), Vec<u8>>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "check")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(TOPIC, p, rdkafka::Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    // librdkafka acknowledges now and then a record without its offset (-1001); such a
    // record must be stored somewhere in its partition, the others at their offset.
    let (placed, unplaced): (Vec<_>, Vec<_>) = acked.iter().partition(|((_, o), _)| *o >= 0);
    let present = |stored: &BTreeMap<(i32, i64), Vec<u8>>,
                   ((p, o), v): &(&(i32, i64), &Vec<u8>)| {
        if *o >= 0 {
            stored.get(&(*p, *o)) == Some(*v)
        } else {
            stored.iter().any(|((sp, _), sv)| sp == p && sv == *v)
        }
    };
    // Read until every acknowledged record has come in (the log may hold more, and
    // transport errors from brokers that just went are retried), or the deadline.
    let mut stored: BTreeMap<(i32, i64), Vec<u8>> = BTreeMap::new();
    let started = Instant::now();
    while started.elapsed() < CONSUME_TIMEOUT
        && !(placed.iter().all(|r| present(&stored, r))
            && unplaced.iter().all(|r| present(&stored, r)))
    {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            stored.insert(
                (m.partition(), m.offset()),
                m.payload().unwrap_or_default().to_vec(),
            );
        }
    }
    println!("{} records acknowledged without an offset", unplaced.len());
    let lost: Vec<_> = placed
        .iter()
        .chain(&unplaced)
        .filter(|r| !present(&stored, r))
        .map(|((p, o), v)| ((p, o), String::from_utf8_lossy(v)))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged records lost or changed, first ((partition, offset), record) {:?}\n{}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)],
        cluster.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_replaces_every_broker_without_any_partition_below_min_isr() {
    let _one = ONE_CLUSTER.lock().await;
    let (mut cluster, load) = three_zones_under_load(1000).await;
    let admin = cluster.admin();

    // Every broker runs an "outdated template"; the operator's rules pick which pod to
    // replace, replacing it is SIGTERM and a start on the same data, as with OnDelete.
    let pods = [
        (0, "k-broker-0-0"),
        (1000, "k-broker-1-0"),
        (2000, "k-broker-2-0"),
    ];
    let mut restarted: BTreeSet<i32> = BTreeSet::new();
    let mut order = Vec::new();
    let mut fewest_in_sync = usize::MAX;
    let (mut last_acked, mut last_ack_at, mut longest_wait) =
        (load.acked(), Instant::now(), Duration::ZERO);
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the roll did not finish: restarted {order:?}\n{}",
            cluster.logs()
        );
        let now_acked = load.acked();
        if now_acked > last_acked {
            longest_wait = longest_wait.max(last_ack_at.elapsed());
            (last_acked, last_ack_at) = (now_acked, Instant::now());
        }
        let Ok(view) = admin.describe_cluster().await else {
            tokio::time::sleep(STEP_INTERVAL).await;
            continue;
        };
        for t in view.topics.iter().filter(|t| t.name == TOPIC) {
            for p in &t.partitions {
                fewest_in_sync = fewest_in_sync.min(p.isr.len());
            }
        }
        let live: BTreeSet<i32> = view.brokers.iter().map(|b| b.id).collect();
        let states: Vec<PodState> = pods
            .iter()
            .map(|(id, name)| PodState {
                name: (*name).to_owned(),
                id: *id,
                controller: false,
                ready: live.contains(id),
                outdated: !restarted.contains(id),
                terminating: false,
            })
            .collect();
        match next_restart(&states, Some(&view), &|_| 2, None) {
            RollStep::UpToDate => break,
            RollStep::Restart { pod, .. } => {
                let id = pods.iter().find(|(_, n)| *n == pod).expect("a known pod").0;
                tokio::task::block_in_place(|| cluster.restart(id));
                restarted.insert(id);
                order.push(id);
            }
            RollStep::Wait(_) => {}
        }
        tokio::time::sleep(STEP_INTERVAL).await;
    }
    assert_eq!(order.len(), 3, "each broker once: {order:?}");
    assert!(
        fewest_in_sync >= 2,
        "a partition fell to {fewest_in_sync} in-sync replicas during the roll"
    );
    println!("restart order {order:?}; longest wait for an ack during the roll: {longest_wait:?}");
    // A restart costs the producer a leader move (about a second here). Restarting a
    // broker before the previous one is back stops acks=all writes until it is: the
    // rules broken show as a wait of tens of seconds.
    assert!(
        longest_wait < ACK_STALL_BOUND,
        "acks=all writes stalled {longest_wait:?} during the roll"
    );
    let acked = load.finish();
    assert_all_stored(&cluster, &acked);
}
