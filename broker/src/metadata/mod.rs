//! Cluster metadata as a log of records applied to an immutable in-memory image (KRaft's
//! design). The controller validates admin requests, turns them into records, commits them
//! to the metadata log and publishes the new image. With one voter, committing is an fsynced
//! append to the local metadata log; a Raft quorum will replicate that same log.

mod forward;
pub mod image;
pub mod isr;
pub mod membership;
pub mod observer;
pub mod quorum;
pub mod reassign;
pub mod records;

use crate::config::{validate_topic_config, BrokerConfig};
use crate::protocol::codes;
pub use image::{MetadataImage, PartitionImage, TopicImage};
use quorum::{ProposeError, Quorum, QuorumConfig, QuorumStatus};
pub use records::{ConfigResource, Endpoint, MetadataRecord};

/// One partition's answer to an ISR change: its state after it, or the refusing code and why.
pub type IsrOutcome = Result<PartitionImage, (i16, String)>;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use strom_core::{placement, BrokerInfo};
use tokio::sync::watch;
use uuid::Uuid;

/// The directory of the metadata log inside the first log dir, named as Kafka names it.
pub const METADATA_LOG_DIR: &str = "__cluster_metadata-0";

/// Kafka's topic-name rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > 249 {
        return Err(format!(
            "Topic name is illegal, it can't be longer than 249 characters, topic name: {name}"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        return Err(format!(
            "Topic name {name} is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// A refused metadata change: the Kafka error code and a message for the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: i16,
    pub message: String,
}

impl ApiError {
    pub fn new(code: i16, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

/// One topic to create, as CreateTopics (or auto-creation) asks for it.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1 for the broker default.
    pub num_partitions: i32,
    /// -1 for the broker default.
    pub replication_factor: i16,
    /// Explicit replica assignment by partition, if given.
    pub assignments: Vec<Vec<i32>>,
    pub configs: BTreeMap<String, String>,
}

/// An incremental config operation (IncrementalAlterConfigs' SET, DELETE, APPEND, SUBTRACT;
/// AlterConfigs is expressed as "replace all").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlterOp {
    Set,
    Delete,
    Append,
    Subtract,
}

/// The metadata service of one node: the image it serves, and the changes it asks for.
/// On the active controller (the Raft leader) a change is validated against the image
/// and committed through the quorum; anywhere else it is forwarded to the active
/// controller, as Kafka's brokers forward admin requests. A broker-only node has no
/// voter: its image comes from an [`observer`] that follows the committed log.
pub struct Controller {
    node_id: i32,
    broker_config: BrokerConfig,
    quorum: Option<Arc<Quorum>>,
    /// Kept alive for the observer's task on broker-only nodes.
    _observer: Option<observer::Observer>,
    images: watch::Receiver<Arc<MetadataImage>>,
    status: watch::Receiver<QuorumStatus>,
    forward: forward::ControllerClient,
    /// Serialises validate-then-commit on the active controller, so two changes never
    /// validate against the same image (two CreateTopics of one name).
    changes: tokio::sync::Mutex<()>,
    membership: std::sync::Mutex<MembershipState>,
    clock: Arc<dyn crate::clock::Clock>,
}

/// What the active controller knows of broker sessions: the last heartbeat of each, reset
/// when it becomes active (a new controller gives every broker a full session).
#[derive(Default)]
struct MembershipState {
    term: u64,
    last_heartbeat_ms: BTreeMap<i32, i64>,
    /// When the next preferred-leader check is due (0: one interval from now).
    next_rebalance_ms: i64,
}

/// The answer to a broker heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub caught_up: bool,
    pub fenced: bool,
    pub should_shut_down: bool,
}

impl Controller {
    /// Starts this node's metadata: on a controller, its voter (opening the metadata log in
    /// `dir`); on a broker-only node, an observer of the voters' committed log.
    pub fn start(
        dir: &Path,
        cluster_id_hint: Option<String>,
        broker_config: BrokerConfig,
        clean: bool,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> anyhow::Result<Controller> {
        let voters = broker_config.voters();
        let node_id = broker_config.node_id();
        let (quorum, observer, images, status) = if broker_config.roles().controller {
            let quorum = Quorum::start(
                QuorumConfig {
                    node_id,
                    voters: voters.clone(),
                    election_timeout_ms: broker_config.election_timeout_ms(),
                    snapshot_bytes: broker_config.snapshot_bytes(),
                },
                dir,
                clean,
                cluster_id_hint,
                clock.clone(),
            )?;
            let (images, status) = (quorum.subscribe_image(), quorum.subscribe_status());
            (Some(quorum), None, images, status)
        } else {
            let observer = observer::Observer::start(
                node_id,
                voters.clone(),
                std::time::Duration::from_millis(broker_config.quorum_fetch_timeout_ms()),
            );
            let (images, status) = (observer.subscribe_image(), observer.subscribe_status());
            (None, Some(observer), images, status)
        };
        let forward = forward::ControllerClient::new(
            node_id,
            voters,
            std::time::Duration::from_millis(broker_config.quorum_request_timeout_ms()),
            Some(status.clone()),
        );
        Ok(Controller {
            node_id,
            broker_config,
            quorum,
            _observer: observer,
            images,
            status,
            forward,
            changes: tokio::sync::Mutex::new(()),
            membership: std::sync::Mutex::new(MembershipState::default()),
            clock,
        })
    }

    /// The current image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.images.borrow().clone()
    }

    pub fn subscribe_image(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.images.clone()
    }

    /// This node's voter, if it is a controller.
    pub fn quorum(&self) -> Option<&Arc<Quorum>> {
        self.quorum.as_ref()
    }

    /// The quorum as this node sees it (on a broker-only node: the leader it last heard of).
    pub fn status(&self) -> QuorumStatus {
        self.status.borrow().clone()
    }

    pub fn broker_config(&self) -> &BrokerConfig {
        &self.broker_config
    }

    /// Whether this node is the active controller right now.
    pub fn is_active(&self) -> bool {
        self.quorum.is_some() && self.status.borrow().is_leader
    }

    /// The node id of the active controller, if one is known.
    pub fn active_controller(&self) -> Option<i32> {
        self.status.borrow().leader_id
    }

    /// Waits (bounded) until the local image satisfies `done`: after a change committed
    /// elsewhere, so that a response describes what was just done.
    pub async fn wait_for_image(&self, done: impl Fn(&MetadataImage) -> bool) -> bool {
        let mut rx = self.images.clone();
        let wait = async {
            loop {
                if done(&rx.borrow_and_update()) {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        let limit =
            std::time::Duration::from_millis(self.broker_config.quorum_request_timeout_ms());
        tokio::time::timeout(limit, wait).await.unwrap_or(false)
    }

    /// Commits records through the quorum; resolves once they are applied here.
    async fn commit(&self, records: Vec<MetadataRecord>) -> Result<(), ApiError> {
        if records.is_empty() {
            return Ok(());
        }
        let Some(quorum) = &self.quorum else {
            return Err(self.not_active());
        };
        match quorum.propose(records).await {
            Ok(_) => Ok(()),
            Err(ProposeError::NotLeader { leader }) => Err(ApiError::new(
                codes::NOT_CONTROLLER,
                format!(
                    "This node is not the active controller (the active controller is {leader:?})."
                ),
            )),
            Err(e) => Err(ApiError::new(codes::REQUEST_TIMED_OUT, e.to_string())),
        }
    }

    /// The error of a change asked of a controller that is not the active one.
    fn not_active(&self) -> ApiError {
        ApiError::new(
            codes::NOT_CONTROLLER,
            format!(
                "Node {} is not the active controller (the active controller is {:?}).",
                self.node_id,
                self.active_controller()
            ),
        )
    }

    /// The membership state, reset when this controller's term changed (it just became
    /// active, or became active again): every broker gets a full session from now.
    fn membership(&self) -> std::sync::MutexGuard<'_, MembershipState> {
        let term = self.status.borrow().term;
        let now = self.clock.now_ms();
        let mut m = self.membership.lock().expect("membership lock");
        if m.term != term {
            m.term = term;
            m.last_heartbeat_ms = self.image().brokers.keys().map(|id| (*id, now)).collect();
            m.next_rebalance_ms = 0;
        }
        m
    }

    fn session_alive(&self, broker: i32) -> bool {
        let now = self.clock.now_ms();
        let timeout = self.broker_config.broker_session_timeout_ms();
        self.membership()
            .last_heartbeat_ms
            .get(&broker)
            .is_some_and(|t| now.saturating_sub(*t) <= timeout)
    }

    /// Registers a broker (BrokerRegistration): it starts fenced, and its broker epoch is
    /// the offset of the registration. A retry of the same incarnation is answered with
    /// the same epoch; another live incarnation of the same id is refused.
    pub async fn register_broker(
        &self,
        id: i32,
        rack: Option<String>,
        endpoints: Vec<Endpoint>,
        incarnation_id: Uuid,
    ) -> Result<i64, ApiError> {
        if endpoints.is_empty() {
            return Err(ApiError::new(
                codes::INVALID_REQUEST,
                "A broker registers at least one listener.",
            ));
        }
        if !self.is_active() {
            return self
                .forward
                .register_broker(id, rack, endpoints, incarnation_id)
                .await;
        }
        let _guard = self.changes.lock().await;
        if !self.is_active() {
            return Err(self.not_active());
        }
        let image = self.image();
        if let Some(b) = image.brokers.get(&id) {
            if b.incarnation_id == Some(incarnation_id) {
                return Ok(b.epoch);
            }
            // This node's own broker cannot have another live incarnation: the voter and
            // the broker are one process.
            if id != self.node_id && !b.fenced && self.session_alive(id) {
                return Err(ApiError::new(
                    codes::DUPLICATE_BROKER_REGISTRATION,
                    format!("Another broker is registered with id {id} and its session is alive."),
                ));
            }
        }
        let mut records = vec![MetadataRecord::RegisterBroker {
            id,
            rack,
            endpoints,
            incarnation_id: Some(incarnation_id),
        }];
        // A new incarnation starts fenced and its log may be behind: the old one's
        // leaderships and ISR places go now; its leaders add it back once it catches up.
        records.extend(membership::leaves(&image, id));
        self.commit(records).await?;
        self.membership()
            .last_heartbeat_ms
            .insert(id, self.clock.now_ms());
        Ok(self.image().brokers.get(&id).map_or(-1, |b| b.epoch))
    }

    /// A broker's heartbeat (BrokerHeartbeat): keeps its session, unfences it once it has
    /// caught up with the metadata log, fences it on request, and answers a controlled
    /// shutdown once its leaderships are gone.
    pub async fn heartbeat(
        &self,
        id: i32,
        epoch: i64,
        metadata_offset: i64,
        want_fence: bool,
        want_shut_down: bool,
    ) -> Result<HeartbeatReply, ApiError> {
        if !self.is_active() {
            return self
                .forward
                .heartbeat(id, epoch, metadata_offset, want_fence, want_shut_down)
                .await;
        }
        let _guard = self.changes.lock().await;
        if !self.is_active() {
            return Err(self.not_active());
        }
        let image = self.image();
        let Some(b) = image.brokers.get(&id) else {
            return Err(ApiError::new(
                codes::STALE_BROKER_EPOCH,
                format!("Broker {id} is not registered."),
            ));
        };
        if b.epoch != epoch {
            return Err(ApiError::new(
                codes::STALE_BROKER_EPOCH,
                format!("Broker {id} has epoch {}, not {epoch}.", b.epoch),
            ));
        }
        self.membership()
            .last_heartbeat_ms
            .insert(id, self.clock.now_ms());
        let caught_up = metadata_offset >= b.epoch;
        let records = if (want_shut_down || want_fence) && !b.fenced {
            membership::fence(&image, id)
        } else if b.fenced && caught_up && !want_fence && !want_shut_down {
            membership::unfence(&image, id)
        } else {
            Vec::new()
        };
        self.commit(records).await?;
        let fenced = self.image().brokers.get(&id).is_none_or(|b| b.fenced);
        Ok(HeartbeatReply {
            caught_up,
            fenced,
            should_shut_down: want_shut_down && fenced,
        })
    }

    /// AlterPartition: ISR changes from the leader `broker` (at `broker_epoch`), each
    /// checked and committed as Kafka's controller does ([`isr::check`]); one outcome per
    /// change, in order. A stale broker epoch refuses the whole request.
    pub async fn alter_partition(
        &self,
        broker: i32,
        broker_epoch: i64,
        changes: &[isr::IsrChange],
    ) -> Result<Vec<IsrOutcome>, ApiError> {
        if !self.is_active() {
            return self
                .forward
                .alter_partition(broker, broker_epoch, changes)
                .await;
        }
        let _guard = self.changes.lock().await;
        if !self.is_active() {
            return Err(self.not_active());
        }
        let image = self.image();
        match image.brokers.get(&broker) {
            Some(b) if b.epoch == broker_epoch => {}
            other => {
                return Err(ApiError::new(
                    codes::STALE_BROKER_EPOCH,
                    format!(
                        "Broker {broker} has epoch {:?}, not {broker_epoch}.",
                        other.map(|b| b.epoch)
                    ),
                ))
            }
        }
        let (outcomes, records) = isr::alter_partition(&image, broker, changes);
        for (c, o) in changes.iter().zip(&outcomes) {
            match o {
                Ok(p) => {
                    tracing::info!(broker, topic_id = %c.topic_id, partition = c.partition, isr = ?p.isr, partition_epoch = p.partition_epoch, "ISR change")
                }
                Err((code, why)) => {
                    tracing::info!(broker, topic_id = %c.topic_id, partition = c.partition, code, %why, "ISR change refused")
                }
            }
        }
        self.commit(records).await?;
        Ok(outcomes)
    }

    /// The time on this node's clock (the controller's decisions are made against it).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// AlterPartitionReassignments on the active controller: one outcome per change, in
    /// order (a later change to the same partition is planned on top of an earlier one);
    /// the accepted ones commit together. Any other node answers NOT_CONTROLLER (its
    /// handler forwards the request whole). `allow_rf_change: false` refuses targets of
    /// another length (AlterPartitionReassignments v1).
    pub async fn alter_reassignments(
        &self,
        changes: &[(String, i32, Option<Vec<i32>>)],
        allow_rf_change: bool,
    ) -> Result<Vec<Result<(), ApiError>>, ApiError> {
        if !self.is_active() {
            return Err(self.not_active());
        }
        let _guard = self.changes.lock().await;
        if !self.is_active() {
            return Err(self.not_active());
        }
        let mut image = (*self.image()).clone();
        let mut records = Vec::new();
        let mut outcomes = Vec::with_capacity(changes.len());
        for (topic, partition, target) in changes {
            match reassign::plan(
                &image,
                topic,
                *partition,
                target.as_deref(),
                allow_rf_change,
            ) {
                Ok(planned) => {
                    for r in &planned {
                        image.apply(r);
                    }
                    records.extend(planned);
                    outcomes.push(Ok(()));
                }
                Err(e) => outcomes.push(Err(e)),
            }
        }
        self.commit(records).await?;
        Ok(outcomes)
    }

    /// Forwards a whole request to the active controller and returns its answer.
    pub async fn forward_to_active<R>(
        &self,
        what: &str,
        req: R,
        not_controller: impl Fn(&R::Response) -> bool,
    ) -> Result<R::Response, ApiError>
    where
        R: kafka_protocol::protocol::Request + Clone,
    {
        self.forward.call(what, req, not_controller).await
    }

    /// DescribeQuorum asked of the active controller, wherever it is.
    pub async fn describe_quorum_of_active(
        &self,
        req: kafka_protocol::messages::DescribeQuorumRequest,
    ) -> Result<kafka_protocol::messages::DescribeQuorumResponse, ApiError> {
        self.forward.describe_quorum(req).await
    }

    /// ElectLeaders: preferred or unclean elections for the asked-for partitions (every
    /// partition for `None`); one outcome per partition (see [`membership::elect_leaders`]).
    pub async fn elect_leaders(
        &self,
        kind: membership::ElectionType,
        asked: Option<Vec<(String, i32)>>,
    ) -> Result<Vec<(String, i32, membership::ElectionOutcome)>, ApiError> {
        if !self.is_active() {
            return self.forward.elect_leaders(kind, asked.as_deref()).await;
        }
        let _guard = self.changes.lock().await;
        if !self.is_active() {
            return Err(self.not_active());
        }
        let image = self.image();
        let (outcomes, records) = membership::elect_leaders(&image, kind, asked.as_deref());
        if !records.is_empty() {
            tracing::info!(
                partitions = records.len(),
                ?kind,
                "electing leaders as asked"
            );
        }
        self.commit(records).await?;
        Ok(outcomes)
    }

    /// Fences brokers whose session expired; the active controller calls it periodically.
    pub async fn expire_sessions(&self) {
        if !self.is_active() {
            return;
        }
        let _guard = self.changes.lock().await;
        let image = self.image();
        let expired = {
            let m = self.membership();
            membership::expired_sessions(
                &image,
                &m.last_heartbeat_ms,
                self.clock.now_ms(),
                self.broker_config.broker_session_timeout_ms(),
            )
        };
        for id in expired {
            let image = self.image();
            tracing::warn!(broker = id, "fencing a broker whose session expired");
            if let Err(e) = self.commit(membership::fence(&image, id)).await {
                tracing::warn!(broker = id, code = e.code, message = %e.message, "fencing failed");
                return;
            }
        }
        // Leaderless partitions whose topic allows it get an out-of-sync leader; checked
        // here, every tick, so it follows fencing, unfencing and config changes alike.
        let image = self.image();
        let default = self.broker_config.get("unclean.leader.election.enable") == Some("true");
        let allowed = |topic: &str| {
            image
                .topic_configs
                .get(topic)
                .and_then(|c| c.get("unclean.leader.election.enable"))
                .map_or(default, |v| v == "true")
        };
        let elections = membership::unclean_elections(&image, &allowed);
        // Reassignments whose new replicas have caught up end here, like elections.
        let done = reassign::completions(&image);
        if !done.is_empty() {
            tracing::info!(
                partitions = done.len() / 2,
                "partition reassignments complete"
            );
            if let Err(e) = self.commit(done).await {
                tracing::warn!(code = e.code, message = %e.message, "completing reassignments failed");
            }
        }
        if !elections.is_empty() {
            tracing::warn!(
                partitions = elections.len(),
                "unclean leader election: out-of-sync replicas lead, and what they lack is lost"
            );
            if let Err(e) = self.commit(elections).await {
                tracing::warn!(code = e.code, message = %e.message, "unclean leader election failed");
            }
        }
        if self.rebalance_due() {
            let image = self.image();
            let percent = self
                .broker_config
                .int("leader.imbalance.per.broker.percentage");
            let moves = membership::preferred_elections(&image, percent);
            if !moves.is_empty() {
                tracing::info!(
                    partitions = moves.len(),
                    "moving leaderships back to their preferred replicas"
                );
                if let Err(e) = self.commit(moves).await {
                    tracing::warn!(code = e.code, message = %e.message, "preferred leader election failed");
                }
            }
        }
    }

    /// Whether a preferred-leader check is due now (auto.leader.rebalance.enable, every
    /// leader.imbalance.check.interval.seconds, the first one interval after this
    /// controller became active).
    fn rebalance_due(&self) -> bool {
        if self.broker_config.get("auto.leader.rebalance.enable") != Some("true") {
            return false;
        }
        let interval = self
            .broker_config
            .int("leader.imbalance.check.interval.seconds")
            .saturating_mul(1000);
        let now = self.clock.now_ms();
        let mut m = self.membership();
        if m.next_rebalance_ms == 0 {
            m.next_rebalance_ms = now.saturating_add(interval);
        }
        if now < m.next_rebalance_ms {
            return false;
        }
        m.next_rebalance_ms = now.saturating_add(interval);
        true
    }

    /// Validates and (unless `validate_only`) creates topics; one result per topic, in order.
    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Vec<Result<Uuid, ApiError>> {
        if !self.is_active() {
            let results = self.forward.create_topics(topics, validate_only).await;
            if !validate_only {
                let created: Vec<&str> = topics
                    .iter()
                    .zip(&results)
                    .filter(|(_, r)| r.is_ok())
                    .map(|(t, _)| t.name.as_str())
                    .collect();
                self.wait_for_image(|i| created.iter().all(|n| i.topics.contains_key(*n)))
                    .await;
            }
            return results;
        }
        let _guard = self.changes.lock().await;
        if !self.is_active() {
            return topics.iter().map(|_| Err(self.not_active())).collect();
        }
        let mut results = Vec::with_capacity(topics.len());
        let mut records = Vec::new();
        let image = self.image();
        // New replicas go only to live (unfenced) brokers.
        let brokers: Vec<BrokerInfo> = image
            .live_brokers()
            .map(|b| BrokerInfo {
                id: b.id,
                rack: b.rack.clone(),
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        for t in topics {
            let result = self.plan_topic(&image, &brokers, t, &mut seen);
            match result {
                Ok(recs) => {
                    let id = match recs.first() {
                        Some(MetadataRecord::Topic { topic_id, .. }) => *topic_id,
                        _ => Uuid::nil(),
                    };
                    if !validate_only {
                        records.extend(recs);
                    }
                    results.push(Ok(id));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if let Err(e) = self.commit(records).await {
            return topics.iter().map(|_| Err(e.clone())).collect();
        }
        results
    }

    fn plan_topic(
        &self,
        image: &MetadataImage,
        brokers: &[BrokerInfo],
        t: &NewTopic,
        seen: &mut std::collections::HashSet<String>,
    ) -> Result<Vec<MetadataRecord>, ApiError> {
        validate_topic_name(&t.name)
            .map_err(|m| ApiError::new(codes::INVALID_TOPIC_EXCEPTION, m))?;
        if image.topics.contains_key(&t.name) || !seen.insert(t.name.clone()) {
            return Err(ApiError::new(
                codes::TOPIC_ALREADY_EXISTS,
                format!("Topic '{}' already exists.", t.name),
            ));
        }
        for (k, v) in &t.configs {
            validate_topic_config(k, v).map_err(|m| ApiError::new(codes::INVALID_CONFIG, m))?;
        }
        let assignments = if !t.assignments.is_empty() {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                return Err(ApiError::new(
                    codes::INVALID_REQUEST,
                    "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.",
                ));
            }
            let rf = t.assignments[0].len();
            for (p, replicas) in t.assignments.iter().enumerate() {
                let distinct: std::collections::BTreeSet<_> = replicas.iter().collect();
                if replicas.is_empty() || distinct.len() != replicas.len() || replicas.len() != rf {
                    return Err(ApiError::new(
                        codes::INVALID_REPLICA_ASSIGNMENT,
                        format!("Partition {p} has an invalid replica assignment {replicas:?}"),
                    ));
                }
                if let Some(b) = replicas.iter().find(|b| !image.brokers.contains_key(b)) {
                    return Err(ApiError::new(
                        codes::INVALID_REPLICA_ASSIGNMENT,
                        format!("Partition {p} is assigned to broker {b}, which does not exist"),
                    ));
                }
            }
            t.assignments.clone()
        } else {
            let partitions = if t.num_partitions == -1 {
                self.broker_config.num_partitions()
            } else {
                t.num_partitions
            };
            let rf = if t.replication_factor == -1 {
                self.broker_config.default_replication_factor()
            } else {
                t.replication_factor
            };
            if partitions < 1 {
                return Err(ApiError::new(
                    codes::INVALID_PARTITIONS,
                    "Number of partitions must be larger than 0.",
                ));
            }
            if rf < 1 {
                return Err(ApiError::new(
                    codes::INVALID_REPLICATION_FACTOR,
                    "Replication factor must be larger than 0.",
                ));
            }
            let start = image.topics.len();
            placement::assign_replicas(brokers, 0, partitions, rf as i32, start)
                .map_err(|e| placement_error(&e))?
        };
        let topic_id = Uuid::new_v4();
        let mut recs = vec![MetadataRecord::Topic {
            name: t.name.clone(),
            topic_id,
        }];
        for (p, replicas) in assignments.into_iter().enumerate() {
            recs.push(MetadataRecord::Partition {
                topic_id,
                partition: p as i32,
                leader: replicas[0],
                isr: replicas.clone(),
                replicas,
                leader_epoch: 0,
                partition_epoch: 0,
            });
        }
        for (k, v) in &t.configs {
            recs.push(MetadataRecord::Config {
                resource: ConfigResource::Topic(t.name.clone()),
                name: k.clone(),
                value: Some(v.clone()),
            });
        }
        Ok(recs)
    }

    /// Deletes topics by name; one result per name.
    pub async fn delete_topics(&self, names: &[String]) -> Vec<Result<Uuid, ApiError>> {
        if !self.is_active() {
            let results = self.forward.delete_topics(names).await;
            let gone: Vec<Uuid> = results
                .iter()
                .filter_map(|r| r.as_ref().ok().copied())
                .collect();
            self.wait_for_image(|i| gone.iter().all(|id| i.topic_by_id(id).is_none()))
                .await;
            return results;
        }
        let _guard = self.changes.lock().await;
        if !self.is_active() {
            return names.iter().map(|_| Err(self.not_active())).collect();
        }
        let image = self.image();
        let mut records = Vec::new();
        let mut results = Vec::new();
        for name in names {
            if !self.broker_config.delete_topic_enable() {
                results.push(Err(ApiError::new(
                    codes::TOPIC_DELETION_DISABLED,
                    "Topic deletion is disabled.",
                )));
                continue;
            }
            match image.topics.get(name) {
                Some(t) => {
                    if !records.contains(&MetadataRecord::RemoveTopic { topic_id: t.id }) {
                        records.push(MetadataRecord::RemoveTopic { topic_id: t.id });
                    }
                    results.push(Ok(t.id));
                }
                None => results.push(Err(ApiError::new(
                    codes::UNKNOWN_TOPIC_OR_PARTITION,
                    "This server does not host this topic-partition.",
                ))),
            }
        }
        if let Err(e) = self.commit(records).await {
            return names.iter().map(|_| Err(e.clone())).collect();
        }
        results
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        if !self.is_active() {
            self.forward
                .create_partitions(name, count, assignments, validate_only)
                .await?;
            if !validate_only {
                self.wait_for_image(|i| {
                    i.topics
                        .get(name)
                        .is_some_and(|t| t.partitions.len() as i32 >= count)
                })
                .await;
            }
            return Ok(());
        }
        let _guard = self.changes.lock().await;
        if !self.is_active() {
            return Err(self.not_active());
        }
        let image = self.image();
        let topic = image.topics.get(name).ok_or_else(|| {
            ApiError::new(
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                format!("The topic '{name}' does not exist."),
            )
        })?;
        let current = topic.partitions.len() as i32;
        if count < current {
            return Err(ApiError::new(
                codes::INVALID_PARTITIONS,
                format!("The topic {name} currently has {current} partition(s); {count} would not be an increase."),
            ));
        }
        if count == current {
            return Err(ApiError::new(
                codes::INVALID_PARTITIONS,
                format!("Topic already has {current} partition(s)."),
            ));
        }
        let rf = topic
            .partitions
            .values()
            .next()
            .map_or(1, |p| p.replicas.len()) as i32;
        // New replicas go only to live (unfenced) brokers.
        let brokers: Vec<BrokerInfo> = image
            .live_brokers()
            .map(|b| BrokerInfo {
                id: b.id,
                rack: b.rack.clone(),
            })
            .collect();
        let new = match assignments {
            Some(a) => {
                if a.len() as i32 != count - current {
                    return Err(ApiError::new(
                        codes::INVALID_REPLICA_ASSIGNMENT,
                        format!("Increasing the number of partitions by {} but {} assignments provided.", count - current, a.len()),
                    ));
                }
                for replicas in &a {
                    if replicas.len() as i32 != rf
                        || replicas.iter().any(|b| !image.brokers.contains_key(b))
                    {
                        return Err(ApiError::new(
                            codes::INVALID_REPLICA_ASSIGNMENT,
                            format!("Invalid replica assignment {replicas:?}"),
                        ));
                    }
                }
                a
            }
            None => {
                let existing: Vec<Vec<i32>> = topic
                    .partitions
                    .values()
                    .map(|p| p.replicas.clone())
                    .collect();
                let start = placement::continuing_start(&brokers, &existing);
                placement::assign_replicas(&brokers, current, count - current, rf, start)
                    .map_err(|e| placement_error(&e))?
            }
        };
        if validate_only {
            return Ok(());
        }
        let records: Vec<MetadataRecord> = new
            .into_iter()
            .enumerate()
            .map(|(i, replicas)| MetadataRecord::Partition {
                topic_id: topic.id,
                partition: current + i as i32,
                leader: replicas[0],
                isr: replicas.clone(),
                replicas,
                leader_epoch: 0,
                partition_epoch: 0,
            })
            .collect();
        self.commit(records).await
    }

    /// Changes a topic's configuration. `replace_all` is AlterConfigs' semantics (the given
    /// set becomes the whole set of overrides); otherwise each op applies incrementally.
    pub async fn alter_topic_configs(
        &self,
        topic: &str,
        ops: &[(String, AlterOp, Option<String>)],
        replace_all: bool,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        if !self.is_active() {
            return self
                .forward
                .alter_configs(
                    crate::protocol::RESOURCE_TOPIC,
                    topic,
                    ops,
                    replace_all,
                    validate_only,
                )
                .await;
        }
        let _guard = self.changes.lock().await;
        if !self.is_active() {
            return Err(self.not_active());
        }
        let image = self.image();
        if !image.topics.contains_key(topic) {
            return Err(ApiError::new(
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                format!("The topic '{topic}' does not exist."),
            ));
        }
        let current = image.topic_configs.get(topic).cloned().unwrap_or_default();
        let mut next = if replace_all {
            BTreeMap::new()
        } else {
            current.clone()
        };
        for (name, op, value) in ops {
            let def = crate::config::topic_def(name).ok_or_else(|| {
                ApiError::new(
                    codes::INVALID_CONFIG,
                    format!("Unknown topic config name: {name}"),
                )
            })?;
            match op {
                AlterOp::Set => {
                    let v = value.clone().unwrap_or_default();
                    validate_topic_config(name, &v)
                        .map_err(|m| ApiError::new(codes::INVALID_CONFIG, m))?;
                    next.insert(name.clone(), v);
                }
                AlterOp::Delete => {
                    next.remove(name);
                }
                AlterOp::Append | AlterOp::Subtract => {
                    if def.def.ty != crate::config::ConfigType::List {
                        return Err(ApiError::new(
                            codes::INVALID_CONFIG,
                            format!("Config value append/subtract is not allowed for config key {name} which is not a list"),
                        ));
                    }
                    let base = next
                        .get(name)
                        .cloned()
                        .or_else(|| self.broker_config.topic_default(name).map(|(v, _)| v))
                        .unwrap_or_default();
                    let mut items: Vec<String> = base
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect();
                    for v in value
                        .as_deref()
                        .unwrap_or("")
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                    {
                        if *op == AlterOp::Append {
                            if !items.iter().any(|i| i == v) {
                                items.push(v.to_owned());
                            }
                        } else {
                            items.retain(|i| i != v);
                        }
                    }
                    let joined = items.join(",");
                    validate_topic_config(name, &joined)
                        .map_err(|m| ApiError::new(codes::INVALID_CONFIG, m))?;
                    next.insert(name.clone(), joined);
                }
            }
        }
        if validate_only {
            return Ok(());
        }
        let mut records = Vec::new();
        for (k, v) in &next {
            if current.get(k) != Some(v) {
                records.push(MetadataRecord::Config {
                    resource: ConfigResource::Topic(topic.to_owned()),
                    name: k.clone(),
                    value: Some(v.clone()),
                });
            }
        }
        for k in current.keys() {
            if !next.contains_key(k) {
                records.push(MetadataRecord::Config {
                    resource: ConfigResource::Topic(topic.to_owned()),
                    name: k.clone(),
                    value: None,
                });
            }
        }
        self.commit(records).await
    }

    /// Changes dynamic broker configs of one broker (`name` its id) or the cluster-wide
    /// default (`name` empty): only [`crate::config::is_dynamic_broker_config`] ones may change;
    /// `replace_all` is AlterConfigs' semantics.
    pub async fn alter_broker_configs(
        &self,
        name: &str,
        ops: &[(String, AlterOp, Option<String>)],
        replace_all: bool,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        let resource = if name.is_empty() {
            ConfigResource::BrokerDefault
        } else {
            match name.parse::<i32>() {
                Ok(id) if id >= 0 => ConfigResource::Broker(id),
                _ => {
                    return Err(ApiError::new(
                        codes::INVALID_REQUEST,
                        format!("Invalid broker name {name}: a broker resource is named by its id, or empty for the cluster default."),
                    ))
                }
            }
        };
        if !self.is_active() {
            return self
                .forward
                .alter_configs(
                    crate::protocol::RESOURCE_BROKER,
                    name,
                    ops,
                    replace_all,
                    validate_only,
                )
                .await;
        }
        let _guard = self.changes.lock().await;
        if !self.is_active() {
            return Err(self.not_active());
        }
        let image = self.image();
        let empty = BTreeMap::new();
        let current = match &resource {
            ConfigResource::Broker(id) => image.broker_configs.get(id).unwrap_or(&empty),
            _ => &image.broker_default_configs,
        };
        let mut next = if replace_all {
            BTreeMap::new()
        } else {
            current.clone()
        };
        for (key, op, value) in ops {
            if *op == AlterOp::Delete {
                // Removing what is not set is nothing to do, whatever the name: Kafka's
                // tools clear every throttle they know of (kafka-reassign-partitions
                // --verify also clears replica.alter.log.dirs.io.max.bytes.per.second).
                next.remove(key);
                continue;
            }
            let Some(def) = crate::config::broker_def(key) else {
                return Err(ApiError::new(
                    codes::INVALID_CONFIG,
                    format!("Unknown broker config name: {key}"),
                ));
            };
            if !crate::config::is_dynamic_broker_config(key) {
                return Err(ApiError::new(
                    codes::INVALID_CONFIG,
                    format!("Cannot update these configs dynamically: {key}; set it in the broker's properties and restart it (dynamic: the defaults of topic configs, the replication throttles, the connection limits and the log cleaner's threads, rate, dedupe buffer and back-off)"),
                ));
            }
            match op {
                AlterOp::Set => {
                    let v = value.clone().unwrap_or_default();
                    crate::config::validate(def, &v).map_err(|reason| {
                        ApiError::new(
                            codes::INVALID_CONFIG,
                            format!("Invalid value {v} for configuration {key}: {reason}"),
                        )
                    })?;
                    next.insert(key.clone(), v.trim().to_owned());
                }
                AlterOp::Delete => {
                    next.remove(key);
                }
                AlterOp::Append | AlterOp::Subtract => {
                    return Err(ApiError::new(
                        codes::INVALID_CONFIG,
                        format!("Config value append/subtract is not allowed for config key {key} which is not a list"),
                    ))
                }
            }
        }
        if validate_only {
            return Ok(());
        }
        let mut records = Vec::new();
        for (k, v) in &next {
            if current.get(k) != Some(v) {
                records.push(MetadataRecord::Config {
                    resource: resource.clone(),
                    name: k.clone(),
                    value: Some(v.clone()),
                });
            }
        }
        for k in current.keys() {
            if !next.contains_key(k) {
                records.push(MetadataRecord::Config {
                    resource: resource.clone(),
                    name: k.clone(),
                    value: None,
                });
            }
        }
        self.commit(records).await
    }

    /// Applies validated client quota alterations (each an entity and, per key, its new
    /// value or `None` to remove it) in one commit: all of them or none, as Kafka. Only the
    /// active controller changes quotas; callers on other nodes forward the request.
    pub async fn alter_client_quotas(
        &self,
        entries: &[(crate::quota::QuotaEntity, BTreeMap<String, Option<f64>>)],
    ) -> Result<(), ApiError> {
        let _guard = self.changes.lock().await;
        if !self.is_active() {
            return Err(self.not_active());
        }
        let image = self.image();
        let empty = BTreeMap::new();
        let mut records = Vec::new();
        for (entity, changes) in entries {
            let current = image.client_quotas.get(entity).unwrap_or(&empty);
            for (key, value) in changes {
                let changed = match value {
                    Some(v) => current.get(key) != Some(v),
                    None => current.contains_key(key),
                };
                if changed {
                    records.push(MetadataRecord::ClientQuota {
                        entity: entity.clone(),
                        key: key.clone(),
                        value: *value,
                    });
                }
            }
        }
        self.commit(records).await
    }

    /// Claims the next block of `size` producer ids, recorded (and fsynced) in the metadata
    /// log before any id of it is handed out.
    pub async fn allocate_producer_ids(&self, size: i64) -> Result<std::ops::Range<i64>, ApiError> {
        if !self.is_active() {
            return self.forward.allocate_producer_ids(self.node_id, size).await;
        }
        let _guard = self.changes.lock().await;
        if !self.is_active() {
            return Err(self.not_active());
        }
        let start = self.image().next_producer_id;
        let end = start.checked_add(size).ok_or_else(|| {
            ApiError::new(codes::UNKNOWN_SERVER_ERROR, "producer ids are exhausted")
        })?;
        self.commit(vec![MetadataRecord::ProducerIds {
            next_producer_id: end,
        }])
        .await?;
        Ok(start..end)
    }

    /// Closes the metadata log for a clean shutdown.
    pub fn close(&self, now_ms: i64) -> anyhow::Result<()> {
        match &self.quorum {
            Some(q) => q.stop(now_ms),
            None => Ok(()),
        }
    }
}

/// The Kafka error for a placement that cannot be made.
fn placement_error(e: &placement::PlacementError) -> ApiError {
    use placement::PlacementError as P;
    let code = match e {
        P::InvalidReplicationFactor(_) | P::NotEnoughBrokers { .. } => {
            codes::INVALID_REPLICATION_FACTOR
        }
        P::InvalidPartitionRange { .. } | P::TooManyPartitions { .. } => codes::INVALID_PARTITIONS,
        _ => codes::INVALID_REPLICA_ASSIGNMENT,
    };
    ApiError::new(code, e.to_string())
}

/// Kafka's textual form of ids (cluster id, topic ids): URL-safe base64 without padding.
pub fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    /// A one-voter controller (this node alone is the quorum), registered as broker 1.
    async fn controller(dir: &Path) -> Controller {
        let c = Controller::start(
            dir,
            Some("test-cluster".into()),
            BrokerConfig::default(),
            true,
            Arc::new(ManualClock::new(0)),
        )
        .unwrap();
        assert!(c.wait_for_image(|i| !i.cluster_id.is_empty()).await);
        wait_until_active(&c).await;
        assert_eq!(c.image().cluster_id, "test-cluster");
        let epoch = c
            .register_broker(
                1,
                None,
                Endpoint::plaintext("127.0.0.1", 9092),
                Uuid::new_v4(),
            )
            .await
            .unwrap();
        // Registered brokers start fenced; a caught-up heartbeat unfences it.
        let offset = c.image().metadata_offset;
        let reply = c.heartbeat(1, epoch, offset, false, false).await.unwrap();
        assert!(!reply.fenced && reply.caught_up);
        c
    }

    /// A restarted voter publishes the image it replayed (the cluster id included) before
    /// the status that says it leads: wait for both, as a broker's registration retries.
    async fn wait_until_active(c: &Controller) {
        let mut status = c.status.clone();
        let became = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            status.wait_for(|s| s.is_leader),
        )
        .await;
        assert!(matches!(became, Ok(Ok(_))), "the lone voter never led");
    }

    fn new_topic(name: &str, partitions: i32, rf: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            num_partitions: partitions,
            replication_factor: rf,
            assignments: vec![],
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn base64_matches_kafka_form() {
        assert_eq!(base64_url(b"hello world!"), "aGVsbG8gd29ybGQh");
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64_url(&[0u8; 16]).len(), 22);
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_a-b").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
    }

    #[tokio::test]
    async fn membership_fences_expired_sessions_and_unfences_caught_up_brokers() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(0));
        let config = BrokerConfig::load(None, &["broker.session.timeout.ms=3000".into()]).unwrap();
        let c = Controller::start(dir.path(), None, config, true, clock.clone()).unwrap();
        assert!(c.wait_for_image(|i| !i.cluster_id.is_empty()).await);
        wait_until_active(&c).await;
        let join = |id: i32| {
            let c = &c;
            async move {
                let incarnation = Uuid::new_v4();
                let epoch = c
                    .register_broker(id, None, Endpoint::plaintext("h", 1), incarnation)
                    .await
                    .unwrap();
                assert!(
                    c.image().brokers[&id].fenced,
                    "a new registration starts fenced"
                );
                // Not caught up with its own registration yet: stays fenced.
                let behind = c
                    .heartbeat(id, epoch, epoch - 1, false, false)
                    .await
                    .unwrap();
                assert!(behind.fenced && !behind.caught_up);
                let offset = c.image().metadata_offset;
                let r = c.heartbeat(id, epoch, offset, false, false).await.unwrap();
                assert!(!r.fenced && r.caught_up);
                (epoch, incarnation)
            }
        };
        let (e2, inc2) = join(2).await;
        let (e3, _) = join(3).await;
        c.create_topics(&[new_topic("t", 2, 1)], false).await[0]
            .clone()
            .unwrap();
        let leaders = |c: &Controller| -> Vec<i32> {
            c.image().topics["t"]
                .partitions
                .values()
                .map(|p| p.leader)
                .collect()
        };
        let before = leaders(&c);
        assert_eq!(
            before
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            2
        );

        // Another process claiming a live id is refused; a retry of the same one is not.
        let dup = c
            .register_broker(2, None, Endpoint::plaintext("h", 1), Uuid::new_v4())
            .await
            .unwrap_err();
        assert_eq!(dup.code, codes::DUPLICATE_BROKER_REGISTRATION);
        assert_eq!(
            c.register_broker(2, None, Endpoint::plaintext("h", 1), inc2)
                .await
                .unwrap(),
            e2
        );

        // Broker 3 keeps heartbeating; broker 2 falls silent past the session timeout.
        clock.advance(2000);
        let offset = c.image().metadata_offset;
        c.heartbeat(3, e3, offset, false, false).await.unwrap();
        clock.advance(1500);
        c.expire_sessions().await;
        let image = c.image();
        assert!(image.brokers[&2].fenced && !image.brokers[&3].fenced);
        let p2 = image.topics["t"]
            .partitions
            .values()
            .find(|p| p.replicas == vec![2])
            .unwrap();
        assert_eq!((p2.leader, p2.leader_epoch), (-1, 1));
        assert_eq!(
            image.live_brokers().map(|b| b.id).collect::<Vec<_>>(),
            vec![3]
        );
        // New topics go to live brokers only.
        c.create_topics(&[new_topic("u", 3, 1)], false).await[0]
            .clone()
            .unwrap();
        assert!(c.image().topics["u"]
            .partitions
            .values()
            .all(|p| p.replicas == vec![3]));

        // The old epoch is stale once it registers again; the new incarnation is unfenced
        // when caught up and leads its partition again.
        let e2b = c
            .register_broker(2, None, Endpoint::plaintext("h", 1), Uuid::new_v4())
            .await
            .unwrap();
        assert!(e2b > e2);
        let stale = c.heartbeat(2, e2, offset, false, false).await.unwrap_err();
        assert_eq!(stale.code, codes::STALE_BROKER_EPOCH);
        let offset = c.image().metadata_offset;
        assert!(
            !c.heartbeat(2, e2b, offset, false, false)
                .await
                .unwrap()
                .fenced
        );
        assert_eq!(leaders(&c), before);

        // Controlled shutdown: fenced at once, leadership gone, allowed to stop.
        let r = c.heartbeat(3, e3, offset, false, true).await.unwrap();
        assert!(r.fenced && r.should_shut_down);
        assert!(!leaders(&c).contains(&3));
        c.close(0).unwrap();
    }

    #[tokio::test]
    async fn metadata_survives_restart_by_replaying_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path()).await;
        let mut t = new_topic("orders", 3, -1);
        t.configs.insert("retention.ms".into(), "1000".into());
        let id = c.create_topics(&[t], false).await.remove(0).unwrap();
        c.create_partitions("orders", 5, None, false).await.unwrap();
        c.create_topics(&[new_topic("gone", 1, 1)], false).await;
        c.delete_topics(&["gone".into()]).await;
        c.alter_topic_configs(
            "orders",
            &[(
                "cleanup.policy".into(),
                AlterOp::Set,
                Some("compact".into()),
            )],
            false,
            false,
        )
        .await
        .unwrap();
        c.close(0).unwrap();
        let c = controller(dir.path()).await;
        let image = c.image();
        let t = &image.topics["orders"];
        assert_eq!(t.id, id);
        assert_eq!(t.partitions.len(), 5);
        assert!(!image.topics.contains_key("gone"));
        let cfg = &image.topic_configs["orders"];
        assert_eq!(cfg["retention.ms"], "1000");
        assert_eq!(cfg["cleanup.policy"], "compact");
    }

    #[tokio::test]
    async fn producer_id_blocks_never_overlap_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path()).await;
        let ids = crate::txn::ProducerIdManager::default();
        let mut first = Vec::new();
        for _ in 0..3 {
            first.push(ids.next_id(&c).await.unwrap());
        }
        assert_eq!(first, vec![0, 1, 2]);
        assert_eq!(c.image().next_producer_id, 1000);
        c.close(0).unwrap();
        // A restart skips what is left of the block: ids 3..999 are never handed out.
        let c = controller(dir.path()).await;
        assert_eq!(c.image().next_producer_id, 1000);
        let ids = crate::txn::ProducerIdManager::default();
        assert_eq!(ids.next_id(&c).await.unwrap(), 1000);
        assert_eq!(c.allocate_producer_ids(10).await.unwrap(), 2000..2010);
    }

    #[tokio::test]
    async fn create_topics_refuses_bad_requests_with_kafka_codes() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path()).await;
        let mut bad_cfg = new_topic("b", 1, 1);
        bad_cfg.configs.insert("retention.ms".into(), "soon".into());
        let results = c
            .create_topics(
                &[
                    new_topic("a", 1, 3),
                    new_topic("a/b", 1, 1),
                    bad_cfg,
                    new_topic("ok", 2, 1),
                    new_topic("ok", 2, 1),
                    new_topic("zero", 0, 1),
                ],
                false,
            )
            .await;
        let codes: Vec<i16> = results
            .iter()
            .map(|r| r.as_ref().err().map_or(0, |e| e.code))
            .collect();
        assert_eq!(
            codes,
            vec![
                codes::INVALID_REPLICATION_FACTOR,
                codes::INVALID_TOPIC_EXCEPTION,
                codes::INVALID_CONFIG,
                codes::NONE,
                codes::TOPIC_ALREADY_EXISTS,
                codes::INVALID_PARTITIONS
            ]
        );
        assert!(c.create_topics(&[new_topic("v", 1, 1)], true).await[0].is_ok());
        assert!(!c.image().topics.contains_key("v"));
        assert_eq!(
            c.create_partitions("ok", 1, None, false)
                .await
                .unwrap_err()
                .code,
            codes::INVALID_PARTITIONS
        );
    }

    #[tokio::test]
    async fn incremental_alter_appends_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path()).await;
        c.create_topics(&[new_topic("t", 1, 1)], false).await;
        c.alter_topic_configs(
            "t",
            &[(
                "cleanup.policy".into(),
                AlterOp::Append,
                Some("compact".into()),
            )],
            false,
            false,
        )
        .await
        .unwrap();
        assert_eq!(
            c.image().topic_configs["t"]["cleanup.policy"],
            "delete,compact"
        );
        c.alter_topic_configs(
            "t",
            &[("cleanup.policy".into(), AlterOp::Delete, None)],
            false,
            false,
        )
        .await
        .unwrap();
        assert!(!c
            .image()
            .topic_configs
            .get("t")
            .is_some_and(|m| m.contains_key("cleanup.policy")));
        let e = c
            .alter_topic_configs(
                "t",
                &[("retention.ms".into(), AlterOp::Append, Some("1".into()))],
                false,
                false,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, codes::INVALID_CONFIG);
    }
}
