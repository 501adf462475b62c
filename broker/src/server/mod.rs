//! The broker process: start-up (log dirs, cluster identity, recovery, metadata replay),
//! the Kafka listener with one task per connection, the HTTP listener, periodic flushing,
//! and clean shutdown.

mod accept;
mod connection;
mod http;
mod lock;
pub mod metrics;

use crate::clock::Clock;
use crate::config::BrokerConfig;
use crate::metadata::{Controller, Endpoint, METADATA_LOG_DIR};
use crate::partition::ReplicaManager;
use anyhow::Context;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Written to each log dir on clean shutdown and removed at start: its presence means every
/// log was flushed and its indexes written, so recovery can be skipped.
const CLEAN_SHUTDOWN_FILE: &str = ".strom_clean_shutdown";
const META_PROPERTIES: &str = "meta.properties";

pub use accept::{fd_limits, raise_fd_limit};

/// Everything a request handler may touch.
pub struct Broker {
    pub node_id: i32,
    pub config: BrokerConfig,
    pub controller: Controller,
    pub replicas: ReplicaManager,
    pub groups: crate::group::GroupCoordinator,
    pub metrics: metrics::Metrics,
    pub producer_ids: crate::txn::ProducerIdManager,
    ready: AtomicBool,
    /// This process's registration: a new incarnation per start and whether it is fenced
    /// now (the epoch the controller gave it is kept by the replica manager, whose
    /// fetches and ISR changes carry it).
    incarnation_id: uuid::Uuid,
    fenced: AtomicBool,
    shut_down_granted: AtomicBool,
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
        Ok(Broker {
            node_id,
            config,
            controller,
            replicas,
            groups,
            metrics: metrics::Metrics::new(),
            producer_ids: Default::default(),
            ready: AtomicBool::new(false),
            incarnation_id: uuid::Uuid::new_v4(),
            fenced: AtomicBool::new(true),
            shut_down_granted: AtomicBool::new(false),
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
        // Opening partitions (recovering their logs) blocks; nothing else runs yet.
        self.replicas.apply_image(&image)?;
        self.replicas.remove_strays(&image);
        self.groups.follow_leadership(&self.replicas, &image)?;
        Ok(())
    }

    /// Makes this broker match a metadata image: its partitions (opened, reconfigured,
    /// led or followed, deleted), then the consumer groups of the `__consumer_offsets`
    /// partitions it leads. Blocking (it may open logs and replay groups).
    pub fn apply_image(&self, image: &crate::metadata::MetadataImage) {
        if let Err(e) = self.replicas.apply_image(image) {
            tracing::error!(cause = %e, "applying the metadata image to local partitions failed");
        }
        if let Err(e) = self.groups.follow_leadership(&self.replicas, image) {
            tracing::error!(cause = %e, "loading consumer groups failed");
        }
    }

    /// Registers this broker with the active controller (retrying until it answers): a
    /// new broker epoch, fenced until a heartbeat finds it caught up.
    async fn register(&self) {
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
    async fn heartbeat(&self, want_shut_down: bool) -> bool {
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
            Err(e) if e.code == crate::protocol::codes::STALE_BROKER_EPOCH => {
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
    async fn controlled_shutdown(&self, limit: Duration) {
        if !self.config.roles().broker || self.replicas.broker_epoch() < 0 {
            return;
        }
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if self.heartbeat(true).await && self.shut_down_granted.load(Ordering::Acquire) {
                tracing::info!("controlled shutdown: leaderships moved away");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
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
    fn close(&self) -> anyhow::Result<()> {
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

/// Runs a broker until `shutdown` resolves, then shuts down cleanly: stop accepting, let
/// connections finish the request they are on, flush and close the logs.
pub async fn run(
    config: BrokerConfig,
    clock: Arc<dyn Clock>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let mut config = config;
    if let Some(bootstrap) = config.voters_to_discover() {
        let timeout = Duration::from_millis(config.quorum_request_timeout_ms());
        tokio::select! {
            voters = crate::metadata::observer::discover_voters(&bootstrap, timeout, Duration::from_secs(1)) => {
                config = config.with_discovered_voters(voters);
            }
            _ = &mut shutdown => return Ok(()),
        }
    }
    let roles = config.roles();
    let mut to_bind: Vec<(crate::config::Listener, ListenerKind)> = Vec::new();
    if roles.broker {
        for l in config.broker_listeners() {
            let kind = ListenerKind::Broker(l.name.as_str().into());
            to_bind.push((l, kind));
        }
    }
    if let Some(l) = config.controller_listener().filter(|_| roles.controller) {
        to_bind.push((l, ListenerKind::Controller));
    }
    let http_addr = config.http_listener();
    let shutdown_timeout = Duration::from_millis(config.shutdown_timeout_ms());
    let _locks = lock::lock_log_dirs(&config.log_dirs())?;
    let broker = Arc::new(Broker::open(config, clock)?);
    let mut listeners = Vec::new();
    for (l, kind) in to_bind {
        let addr = l.address();
        let bound = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("listeners: cannot listen on {addr} ({})", l.name))?;
        listeners.push((bound, kind, addr));
    }
    let http_listener = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("strom.http.listener: cannot listen on {http_addr}"))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let http_task = tokio::spawn(http::serve(http_listener, broker.clone(), stop_rx.clone()));

    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let startup = {
        let broker = broker.clone();
        let stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            if let Err(e) = broker.start_serving().await {
                let _ = failed_tx.send(e);
                return;
            }
            let mut tasks = vec![
                tokio::spawn(publish_images(broker.clone(), stop_rx.clone())),
                tokio::spawn(keep_membership(broker.clone(), stop_rx.clone())),
                tokio::spawn(flush_periodically(broker.clone(), stop_rx.clone())),
                tokio::spawn(tick_groups(broker.clone(), stop_rx.clone())),
                tokio::spawn(crate::partition::fetcher::run(
                    broker.clone(),
                    broker.controller.subscribe_image(),
                    broker.config.replica_fetcher_config(),
                    stop_rx.clone(),
                )),
                tokio::spawn(maintain_isrs(broker.clone(), stop_rx.clone())),
                tokio::spawn(retention_periodically(broker.clone(), stop_rx.clone())),
            ];
            if broker.config.cleaner_enabled() {
                for _ in 0..broker.config.cleaner_threads() {
                    tasks.push(tokio::spawn(clean_continuously(
                        broker.clone(),
                        stop_rx.clone(),
                    )));
                }
            }
            if let Some(short) = accept::fd_shortfall(&broker) {
                tracing::warn!("{short}");
            }
            broker.ready.store(true, Ordering::Release);
            tracing::info!(http = %http_addr, "strom-broker ready");
            for t in tasks {
                let _ = t.await;
            }
        })
    };
    for (_, kind, addr) in &listeners {
        tracing::info!(listener = %addr, ?kind, "listening");
    }
    let listeners: Vec<(TcpListener, ListenerKind)> =
        listeners.into_iter().map(|(l, k, _)| (l, k)).collect();
    // Accepting ends at the shutdown signal, or when the start-up failed (a log dir of
    // another cluster, say), which then fails the run.
    let mut failed: Option<anyhow::Error> = None;
    let end = async {
        tokio::select! {
            _ = shutdown => {}
            Ok(e) = failed_rx => failed = Some(e),
        }
    };
    let mut tasks = accept::accept_connections(&listeners, &broker, &stop_rx, end).await;
    drop(listeners);
    if failed.is_none() {
        broker
            .controlled_shutdown(shutdown_timeout.min(Duration::from_secs(10)))
            .await;
    }
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    broker.ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    // Parked JoinGroup/SyncGroup requests would otherwise hold their connections open.
    broker.groups.shutdown();
    let drained = tokio::time::timeout(shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still busy after the shutdown timeout; closing them");
        tasks.abort_all();
    }
    // Its tasks watch the stop signal; start-up itself may still be waiting for a quorum
    // that will never form.
    let mut startup = startup;
    if tokio::time::timeout(Duration::from_secs(1), &mut startup)
        .await
        .is_err()
    {
        startup.abort();
    }
    http_task.abort();
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.close()).await??;
    if let Some(e) = failed {
        return Err(e);
    }
    tracing::info!("shutdown complete");
    Ok(())
}

/// Which listener a connection arrived on: clients and brokers on broker listeners (by
/// name: Metadata answers with the addresses of the listener asked on), peers and brokers
/// on the controller listener (Raft traffic and controller APIs are served only there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerKind {
    Broker(Arc<str>),
    Controller,
}

/// Heartbeats every broker.heartbeat.interval.ms (brokers), and on the active controller
/// fences brokers whose session expired (controllers).
async fn keep_membership(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let roles = broker.config.roles();
    if roles.controller {
        let (broker, mut stop) = (broker.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stop.changed() => return,
                }
                broker.controller.expire_sessions().await;
            }
        });
    }
    if !roles.broker {
        return;
    }
    let beat = Duration::from_millis(broker.config.broker_heartbeat_interval_ms().max(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(beat) => {}
            _ = stop.changed() => return,
        }
        broker.heartbeat(false).await;
    }
}

/// Keeps the ISRs of the partitions this broker leads true: every
/// replica.lag.time.max.ms / 2 (Kafka's period for the shrink check), and at once when a
/// follower caught up, it sends the due changes to the controller in one AlterPartition
/// and applies the answers. A change whose outcome is not known yet is sent again soon.
async fn maintain_isrs(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let lag = broker.config.replica_lag_time_max_ms();
    let period = Duration::from_millis((lag / 2).max(1) as u64);
    let retry = Duration::from_millis(broker.config.replica_fetch_backoff_ms().clamp(1, 1000));
    let mut unsettled = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(if unsettled { retry } else { period }) => {}
            _ = broker.replicas.isr_woken() => {}
            _ = stop.changed() => return,
        }
        unsettled = false;
        let epoch = broker.replicas.broker_epoch();
        if epoch < 0 {
            continue;
        }
        let image = broker.controller.image();
        let eligible = |id: i32, epoch: i64| {
            image
                .brokers
                .get(&id)
                .is_some_and(|b| !b.fenced && (epoch == -1 || b.epoch == epoch))
        };
        let due = broker.replicas.isr_changes_due(lag, &eligible);
        if due.is_empty() {
            continue;
        }
        let changes: Vec<_> = due.iter().map(|(_, _, c)| c.clone()).collect();
        match broker
            .controller
            .alter_partition(broker.node_id, epoch, &changes)
            .await
        {
            Ok(outcomes) => {
                for ((p, sent, _), outcome) in due.iter().zip(&outcomes) {
                    broker
                        .replicas
                        .replication_counts()
                        .record(p.on_isr_answer(sent, outcome));
                }
                unsettled = outcomes.iter().any(|o| o.is_err());
            }
            Err(e) => {
                tracing::debug!(code = e.code, message = %e.message, "AlterPartition failed; retrying");
                unsettled = true;
            }
        }
        broker.replicas.wake_fetches();
    }
}

impl AsRef<crate::partition::ReplicaManager> for Broker {
    fn as_ref(&self) -> &crate::partition::ReplicaManager {
        &self.replicas
    }
}

/// The one place that turns a new metadata image into local changes: partitions to open
/// or delete, configs to apply.
async fn publish_images(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut images = broker.controller.subscribe_image();
    loop {
        tokio::select! {
            changed = images.changed() => {
                if changed.is_err() {
                    return;
                }
                let image = images.borrow_and_update().clone();
                let b = broker.clone();
                let _ = tokio::task::spawn_blocking(move || b.apply_image(&image)).await;
            }
            _ = stop.changed() => return,
        }
    }
}

/// Applies retention every log.retention.check.interval.ms, off the async workers (it
/// renames and deletes files).
async fn retention_periodically(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let period = Duration::from_millis(broker.config.retention_check_interval_ms().max(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let b = broker.clone();
                if let Ok(deleted) = tokio::task::spawn_blocking(move || b.replicas.apply_retention()).await {
                    broker.metrics.retention_deleted_segments.inc_by(deleted as u64);
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// One log cleaner thread: compacts the dirtiest due partition, or sleeps
/// log.cleaner.backoff.ms when none is due. The work runs on the blocking pool.
async fn clean_continuously(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let backoff = Duration::from_millis(broker.config.cleaner_backoff_ms());
    // Each thread gets its share of the dedupe buffer, as Kafka splits it.
    let budget = broker.config.cleaner_dedupe_buffer_size() / broker.config.cleaner_threads();
    let io_limit = broker.config.cleaner_io_max_bytes_per_second();
    loop {
        let b = broker.clone();
        let cleaned =
            tokio::task::spawn_blocking(move || b.replicas.clean_dirtiest(budget, io_limit))
                .await
                .ok()
                .flatten();
        if let Some((p, summary)) = &cleaned {
            broker
                .metrics
                .record_clean(p, summary, broker.replicas.now_ms());
            if summary.stats.batches_skipped > 0 {
                broker
                    .metrics
                    .invalid_batch("cleaner_skipped", summary.stats.batches_skipped);
            }
            tracing::info!(
                topic = %p.topic,
                partition = p.index,
                bytes_read = summary.stats.bytes_read,
                bytes_written = summary.stats.bytes_written,
                records_removed = summary.stats.records_removed,
                "compacted"
            );
        }
        let pause = if cleaned.is_some() {
            Duration::ZERO
        } else {
            backoff
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn flush_periodically(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(1000));
    let checkpoint_every = broker
        .config
        .replica_high_watermark_checkpoint_interval_ms()
        .max(1);
    let mut last_checkpoint = broker.replicas.now_ms();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let b = broker.clone();
                let due = b.replicas.now_ms() - last_checkpoint >= checkpoint_every;
                if due {
                    last_checkpoint = b.replicas.now_ms();
                }
                let _ = tokio::task::spawn_blocking(move || {
                    b.replicas.flush_due();
                    if due {
                        b.replicas.checkpoint_high_watermarks();
                    }
                })
                .await;
            }
            _ = stop.changed() => return,
        }
    }
}

/// Drives the group coordinator's timeouts (sessions, rebalances, offset retention).
async fn tick_groups(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => crate::api::group::tick(&broker),
            _ = stop.changed() => return,
        }
    }
}
