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
use crate::metadata::{base64_url, Controller, METADATA_LOG_DIR};
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
}

impl Broker {
    /// Opens storage and metadata: checks each log dir's identity, detects a clean previous
    /// shutdown, replays the metadata log, registers this broker and opens its partitions.
    pub fn open(config: BrokerConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Broker> {
        let node_id = config.node_id();
        let dirs = config.log_dirs();
        for d in &dirs {
            std::fs::create_dir_all(d)
                .with_context(|| format!("log.dirs: cannot create {}", d.display()))?;
        }
        let cluster_id = cluster_identity(&dirs, node_id)?;
        let clean = dirs.iter().all(|d| d.join(CLEAN_SHUTDOWN_FILE).exists());
        for d in &dirs {
            let marker = d.join(CLEAN_SHUTDOWN_FILE);
            if marker.exists() {
                std::fs::remove_file(&marker)?;
                crate::log::sync_dir(d)?;
            }
        }
        tracing::info!(node_id, %cluster_id, clean_shutdown = clean, "opening logs");
        let controller = Controller::open(
            &dirs[0].join(METADATA_LOG_DIR),
            cluster_id,
            config.clone(),
            clean,
            clock.clone(),
        )?;
        let advertised = config.advertised_listener();
        let image = controller
            .register_broker(node_id, config.rack(), advertised.host, advertised.port)
            .map_err(|e| anyhow::anyhow!("registering the broker failed: {}", e.message))?;
        let replicas = ReplicaManager::new(node_id, dirs, config.clone(), clean, clock.clone());
        replicas.apply_image(&image)?;
        replicas.remove_strays(&image);
        let groups = crate::group::GroupCoordinator::new(
            crate::group::GroupConfig::from_broker(&config),
            clock,
        );
        if let Some(t) = image.topics.get(crate::group::OFFSETS_TOPIC) {
            let loaded = groups.load(&replicas, t.partitions.len() as i32)?;
            tracing::info!(records = loaded, "loaded consumer groups");
        }
        Ok(Broker {
            node_id,
            config,
            controller,
            replicas,
            groups,
            metrics: metrics::Metrics::new(),
            producer_ids: Default::default(),
            ready: AtomicBool::new(false),
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Flushes and closes all logs and marks the log dirs clean.
    fn close(&self) -> anyhow::Result<()> {
        let mut ok = self.replicas.close_all();
        if let Err(e) = self.controller.close() {
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

/// Reads (or, on first start, writes) meta.properties in every log dir: the cluster id all
/// dirs share, and the node id they belong to. A mismatch refuses the start.
fn cluster_identity(dirs: &[PathBuf], node_id: i32) -> anyhow::Result<String> {
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
    let cluster_id = cluster_id.unwrap_or_else(|| base64_url(uuid::Uuid::new_v4().as_bytes()));
    for d in dirs {
        let path = d.join(META_PROPERTIES);
        if !path.exists() {
            let text = format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
            crate::log::segment::write_atomically(&path, text.as_bytes())?;
        }
    }
    Ok(cluster_id)
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
    let listener_cfg = config.listener();
    let kafka_addr = format!("{}:{}", listener_cfg.host, listener_cfg.port);
    let http_addr = config.http_listener();
    let shutdown_timeout = Duration::from_millis(config.shutdown_timeout_ms());
    let _locks = lock::lock_log_dirs(&config.log_dirs())?;
    let broker = Arc::new(Broker::open(config, clock)?);
    let listener = TcpListener::bind(&kafka_addr)
        .await
        .with_context(|| format!("listeners: cannot listen on {kafka_addr}"))?;
    let http_listener = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("strom.http.listener: cannot listen on {http_addr}"))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let http_task = tokio::spawn(http::serve(http_listener, broker.clone(), stop_rx.clone()));
    let flusher = tokio::spawn(flush_periodically(broker.clone(), stop_rx.clone()));
    let group_ticker = tokio::spawn(tick_groups(broker.clone(), stop_rx.clone()));
    let retention = tokio::spawn(retention_periodically(broker.clone(), stop_rx.clone()));
    let mut cleaners = Vec::new();
    if broker.config.cleaner_enabled() {
        for _ in 0..broker.config.cleaner_threads() {
            cleaners.push(tokio::spawn(clean_continuously(
                broker.clone(),
                stop_rx.clone(),
            )));
        }
    }
    if let Some(short) = accept::fd_shortfall(&broker) {
        tracing::warn!("{short}");
    }
    broker.ready.store(true, Ordering::Release);
    tracing::info!(listener = %kafka_addr, http = %http_addr, "strom-broker ready");

    let mut tasks = accept::accept_connections(&listener, &broker, &stop_rx, shutdown).await;
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    broker.ready.store(false, Ordering::Release);
    drop(listener);
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
    let _ = flusher.await;
    let _ = group_ticker.await;
    let _ = retention.await;
    for c in cleaners {
        let _ = c.await;
    }
    http_task.abort();
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.close()).await??;
    tracing::info!("shutdown complete");
    Ok(())
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
    loop {
        tokio::select! {
            _ = tick.tick() => broker.replicas.flush_due(),
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
