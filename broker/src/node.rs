//! A node's services and their lifecycle: the broker's state that request handlers and
//! the server's periodic tasks share (metadata, replicas, groups, metrics, producer ids),
//! how a node opens its storage, registers, heartbeats, applies metadata images and
//! closes. Request handling (`api`) and the listeners and tasks (`server`) build on it;
//! it depends on neither.

use crate::clock::Clock;
use crate::config::BrokerConfig;
use crate::metadata::{Controller, Endpoint, METADATA_LOG_DIR};
use crate::metrics;
use crate::partition::ReplicaManager;
use anyhow::Context;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Written to each log dir on clean shutdown and removed at start: its presence means every
/// log was flushed and its indexes written, so recovery can be skipped.
const CLEAN_SHUTDOWN_FILE: &str = ".strom_clean_shutdown";
const META_PROPERTIES: &str = "meta.properties";

/// Everything a request handler may touch.
pub struct Broker {
    pub node_id: i32,
    pub config: BrokerConfig,
    pub controller: Controller,
    pub replicas: ReplicaManager,
    pub groups: crate::group::GroupCoordinator,
    pub metrics: metrics::Metrics,
    /// Incremental fetch sessions (KIP-227) of consumers and followers.
    pub fetch_sessions: crate::api::fetch_session::FetchSessions,
    pub producer_ids: crate::txn::ProducerIdManager,
    /// Client quotas (KIP-13/55/124) and each client's usage of them.
    pub quotas: crate::quota::ClientQuotas,
    pub(crate) ready: AtomicBool,
    /// This process's registration: a new incarnation per start and whether it is fenced
    /// now (the epoch the controller gave it is kept by the replica manager, whose
    /// fetches and ISR changes carry it).
    pub(crate) incarnation_id: uuid::Uuid,
    pub(crate) fenced: AtomicBool,
    pub(crate) shut_down_granted: AtomicBool,
}

impl Broker {
    /// Opens storage and joins the metadata quorum: checks each log dir's identity,
    /// detects a clean previous shutdown and starts this node's voter. Partitions are
    /// opened by [`Broker::start_serving`] once the quorum has an image to open them from.
    pub fn open(config: BrokerConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Broker> {
        let node_id = config.node_id();
        let dirs = config.log_dirs();
        for d in &dirs {
            std::fs::create_dir_all(d)
                .with_context(|| format!("log.dirs: cannot create {}", d.display()))?;
        }
        let stored_cluster_id = stored_cluster_id(&dirs, node_id)?;
        let clean = dirs.iter().all(|d| d.join(CLEAN_SHUTDOWN_FILE).exists());
        for d in &dirs {
            let marker = d.join(CLEAN_SHUTDOWN_FILE);
            if marker.exists() {
                std::fs::remove_file(&marker)?;
                crate::log::sync_dir(d)?;
            }
        }
        tracing::info!(node_id, cluster_id = ?stored_cluster_id, clean_shutdown = clean, voters = ?config.voters(), "opening logs");
        let controller = Controller::start(
            &dirs[0].join(METADATA_LOG_DIR),
            stored_cluster_id,
            config.clone(),
            clean,
            clock.clone(),
        )?;
        let replicas = ReplicaManager::new(node_id, dirs, config.clone(), clean, clock.clone());
        let groups = crate::group::GroupCoordinator::new(
            crate::group::GroupConfig::from_broker(&config),
            clock,
        );
        let metrics = metrics::Metrics::new();
        Ok(Broker {
            node_id,
            controller,
            replicas,
            groups,
            fetch_sessions: crate::api::fetch_session::FetchSessions::new(
                config.fetch_session_slots(),
                config.fetch_session_eviction_ms(),
                metrics.fetch_sessions.clone(),
            ),
            quotas: {
                let (samples, window_ms) = config.quota_windows();
                crate::quota::ClientQuotas::new(samples, window_ms, metrics.quotas.clone())
            },
            metrics,
            producer_ids: Default::default(),
            ready: AtomicBool::new(false),
            incarnation_id: uuid::Uuid::new_v4(),
            fenced: AtomicBool::new(true),
            shut_down_granted: AtomicBool::new(false),
            // Last: the fields above read it.
            config,
        })
    }

    /// Waits for the quorum's image to name the cluster, records the cluster id in every
    /// log dir (refusing a dir formatted for another cluster), registers this broker, and
    /// opens its partitions and consumer groups.
    pub(crate) async fn start_serving(&self) -> anyhow::Result<()> {
        let mut image_rx = self.controller.subscribe_image();
        let mut waited = 0u32;
        let cluster_id = loop {
            let id = image_rx.borrow_and_update().cluster_id.clone();
            if !id.is_empty() {
                break id;
            }
            if tokio::time::timeout(Duration::from_secs(5), image_rx.changed())
                .await
                .is_err()
            {
                waited += 5;
                tracing::warn!(seconds = waited, voters = ?self.config.voters(), "waiting for the controller quorum to elect a leader");
            }
        };
        record_cluster_id(&self.config.log_dirs(), self.node_id, &cluster_id)?;
        if self.config.roles().broker {
            self.register().await;
            // Unfenced once this node has caught up with the log up to its registration.
            while self.fenced.load(Ordering::Acquire) {
                if !self.heartbeat(false).await {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let image = self.controller.image();
        self.quotas.apply(&image.client_quotas);
        // Opening partitions (recovering their logs) blocks; nothing else runs yet.
        self.replicas.apply_image(&image)?;
        self.replicas.remove_strays(&image);
        self.groups.follow_leadership(&self.replicas, &image)?;
        Ok(())
    }

    /// Makes this broker match a metadata image: its partitions (opened, reconfigured,
    /// led or followed, deleted), then the consumer groups of the `__consumer_offsets`
    /// partitions it leads. Blocking (it may open logs and replay groups).
    /// This broker's properties with the dynamic broker configs of the current metadata
    /// image on top (the cluster default, then this broker's own).
    pub fn effective_config(&self) -> BrokerConfig {
        let image = self.controller.image();
        self.config.with_dynamic(
            &image.broker_default_configs,
            image.broker_configs.get(&self.node_id),
        )
    }

    pub fn apply_image(&self, image: &crate::metadata::MetadataImage) {
        self.quotas.apply(&image.client_quotas);
        if let Err(e) = self.replicas.apply_image(image) {
            tracing::error!(cause = %e, "applying the metadata image to local partitions failed");
        }
        if let Err(e) = self.groups.follow_leadership(&self.replicas, image) {
            tracing::error!(cause = %e, "loading consumer groups failed");
        }
    }

    /// Registers this broker with the active controller (retrying until it answers): a
    /// new broker epoch, fenced until a heartbeat finds it caught up.
    pub(crate) async fn register(&self) {
        let endpoints: Vec<Endpoint> = self
            .config
            .advertised_broker_listeners()
            .into_iter()
            .map(|l| Endpoint {
                name: l.name,
                host: l.host,
                port: l.port,
            })
            .collect();
        let mut attempts = 0u32;
        loop {
            match self
                .controller
                .register_broker(
                    self.node_id,
                    self.config.rack(),
                    endpoints.clone(),
                    self.incarnation_id,
                )
                .await
            {
                Ok(epoch) => {
                    self.replicas.set_broker_epoch(epoch);
                    self.fenced.store(true, Ordering::Release);
                    tracing::info!(broker_epoch = epoch, "registered with the controller");
                    return;
                }
                Err(e) => {
                    attempts += 1;
                    // A previous incarnation's session must expire first (kill -9).
                    if attempts % 25 == 1 {
                        tracing::warn!(code = e.code, message = %e.message, "registering with the controller failed; retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// One heartbeat to the active controller; whether it was answered. A stale epoch
    /// (the controller no longer knows this incarnation) registers again.
    pub(crate) async fn heartbeat(&self, want_shut_down: bool) -> bool {
        let offset = self.controller.image().metadata_offset;
        match self
            .controller
            .heartbeat(
                self.node_id,
                self.replicas.broker_epoch(),
                offset,
                false,
                want_shut_down,
            )
            .await
        {
            Ok(reply) => {
                let was = self.fenced.swap(reply.fenced, Ordering::AcqRel);
                if was != reply.fenced {
                    tracing::info!(
                        fenced = reply.fenced,
                        "the controller changed this broker's fencing"
                    );
                }
                if want_shut_down {
                    self.shut_down_granted
                        .store(reply.should_shut_down, Ordering::Release);
                }
                true
            }
            // Stopping, a forgotten broker has nothing left to hand over: registering
            // again would only delay the stop.
            Err(e) if e.code == crate::protocol::codes::STALE_BROKER_EPOCH && !want_shut_down => {
                tracing::warn!(message = %e.message, "the controller forgot this broker; registering again");
                self.register().await;
                false
            }
            Err(e) => {
                tracing::debug!(code = e.code, message = %e.message, "heartbeat failed");
                false
            }
        }
    }

    /// Controlled shutdown: asks the controller to move this broker's leaderships away
    /// and waits (bounded) until it says the broker may stop.
    pub(crate) async fn controlled_shutdown(&self, limit: Duration) {
        if !self.config.roles().broker || self.replicas.broker_epoch() < 0 {
            return;
        }
        tracing::info!(
            limit_ms = limit.as_millis() as u64,
            "controlled shutdown: asking the controller to move leaderships away"
        );
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                break;
            }
            // One heartbeat may wait on a busy controller or a forward that retries
            // across voters: the limit bounds the whole shutdown, not each attempt.
            let answered = tokio::time::timeout(remaining, self.heartbeat(true)).await;
            if answered == Ok(true) && self.shut_down_granted.load(Ordering::Acquire) {
                tracing::info!("controlled shutdown: leaderships moved away");
                return;
            }
            tokio::time::sleep(remaining.min(Duration::from_millis(100))).await;
        }
        tracing::warn!("controlled shutdown did not complete in time; stopping anyway");
    }

    /// Ready (`/readyz`): registered, unfenced, caught up with the metadata log, and every
    /// partition it follows has caught up with its leader's high watermark once since the
    /// start (a controller-only node: the quorum has a leader).
    pub fn is_ready(&self) -> bool {
        if !self.ready.load(Ordering::Acquire) {
            return false;
        }
        if self.config.roles().broker {
            !self.fenced.load(Ordering::Acquire) && self.replicas.lagging_followers() == 0
        } else {
            self.controller.status().leader_id.is_some()
        }
    }

    /// Flushes and closes all logs and marks the log dirs clean.
    pub(crate) fn close(&self) -> anyhow::Result<()> {
        let mut ok = self.replicas.close_all();
        if let Err(e) = self.controller.close(self.replicas.now_ms()) {
            tracing::error!(cause = %e, "closing the metadata log failed");
            ok = false;
        }
        if ok {
            for d in self.config.log_dirs() {
                std::fs::write(d.join(CLEAN_SHUTDOWN_FILE), b"")?;
                crate::log::sync_dir(&d)?;
            }
        }
        Ok(())
    }
}

/// Reads meta.properties in every log dir: the cluster id they share (if one was
/// recorded), and that they belong to this node. A mismatch refuses the start.
fn stored_cluster_id(dirs: &[PathBuf], node_id: i32) -> anyhow::Result<Option<String>> {
    let mut cluster_id: Option<String> = None;
    for d in dirs {
        let path = d.join(META_PROPERTIES);
        let text = match std::fs::read(&path) {
            // Not UTF-8 is damage like any other: check_meta_properties says so.
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => anyhow::bail!("log.dirs: cannot read {}: {e}", path.display()),
        };
        check_meta_properties(&path, &text)?;
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
                .map(str::trim)
        };
        if let Some(n) = get("node.id") {
            if n != node_id.to_string() {
                anyhow::bail!(
                    "node.id: log dir {} belongs to node {n}, but node.id is {node_id}",
                    d.display()
                );
            }
        }
        if let Some(c) = get("cluster.id") {
            match &cluster_id {
                Some(existing) if existing != c => anyhow::bail!(
                    "log.dirs: {} belongs to cluster {c}, other log dirs to {existing}",
                    d.display()
                ),
                _ => cluster_id = Some(c.to_owned()),
            }
        }
    }
    Ok(cluster_id)
}

/// Writes meta.properties where it is missing, once the quorum has named the cluster; a
/// log dir that belongs to another cluster refuses the start (Kafka's check).
fn record_cluster_id(dirs: &[PathBuf], node_id: i32, cluster_id: &str) -> anyhow::Result<()> {
    if let Some(stored) = stored_cluster_id(dirs, node_id)? {
        if stored != cluster_id {
            anyhow::bail!(
                "log.dirs: the log dirs belong to cluster {stored}, but the controller quorum is cluster {cluster_id}; a directory formatted for one cluster cannot join another"
            );
        }
    }
    for d in dirs {
        let path = d.join(META_PROPERTIES);
        if !path.exists() {
            let text = format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
            crate::log::segment::write_atomically(&path, text.as_bytes())?;
            crate::log::sync_dir(d)?;
        }
    }
    Ok(())
}

/// A meta.properties that exists must be whole: a damaged one is refused rather than
/// replaced by a newly invented cluster id on every start.
fn check_meta_properties(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let value = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .map(str::trim)
    };
    let valid = value("cluster.id").is_some_and(|c| !c.is_empty() && c.is_ascii())
        && value("node.id").is_some_and(|n| n.parse::<i32>().is_ok());
    if !valid {
        anyhow::bail!(
            "{} is damaged (it needs cluster.id and node.id): restore it, or remove it only if this directory holds no data of another cluster",
            path.display()
        );
    }
    Ok(())
}

impl AsRef<crate::partition::ReplicaManager> for Broker {
    fn as_ref(&self) -> &crate::partition::ReplicaManager {
        &self.replicas
    }
}
