//! The broker process: start-up (log dirs, cluster identity, recovery, metadata replay),
//! the Kafka listener with one task per connection, the HTTP listener, periodic flushing,
//! and clean shutdown.

mod accept;
mod connection;
mod http;
mod lock;

pub use crate::node::Broker;
pub use crate::protocol::ListenerKind;
pub use accept::{fd_limits, raise_fd_limit};

use crate::clock::Clock;
use crate::config::BrokerConfig;
use anyhow::Context;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

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
                tasks.push(tokio::spawn(run_cleaners(broker.clone(), stop_rx.clone())));
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

/// Keeps `log.cleaner.threads` cleaner threads running. The setting is a dynamic broker
/// config: each new metadata image (and a one-second tick, for threads that stopped
/// meanwhile) brings the count to it; a thread beyond the count stops after its clean.
async fn run_cleaners(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut images = broker.controller.subscribe_image();
    let mut workers: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = 0;
    loop {
        let threads = broker.effective_config().cleaner_threads();
        if threads != last {
            tracing::info!(threads, "log cleaner threads");
            last = threads;
        }
        workers.retain(|w| !w.is_finished());
        while workers.len() < threads {
            workers.push(tokio::spawn(clean_continuously(
                broker.clone(),
                stop.clone(),
                workers.len(),
            )));
        }
        broker.metrics.cleaner_threads.set(workers.len() as i64);
        tokio::select! {
            changed = images.changed() => if changed.is_err() { break },
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
    }
    for w in workers {
        let _ = w.await;
    }
}

/// One log cleaner thread, the `index`th: compacts the dirtiest due partition, or sleeps
/// log.cleaner.backoff.ms when none is due (a change of its settings wakes it). The work runs
/// on the blocking pool. Its settings (dynamic broker configs) are read before each clean;
/// it stops once `log.cleaner.threads` is `index` or fewer.
async fn clean_continuously(broker: Arc<Broker>, mut stop: watch::Receiver<bool>, index: usize) {
    let mut images = broker.controller.subscribe_image();
    loop {
        let config = broker.effective_config();
        let threads = config.cleaner_threads();
        if index >= threads {
            return;
        }
        let backoff = Duration::from_millis(config.cleaner_backoff_ms());
        // Each thread gets its share of the dedupe buffer, as Kafka splits it.
        let budget = config.cleaner_dedupe_buffer_size() / threads;
        let io_limit = config.cleaner_io_max_bytes_per_second();
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
        // Asleep, a thread wakes early only for a change of its own settings.
        let settings = |c: &crate::config::BrokerConfig| {
            (
                c.cleaner_threads(),
                c.cleaner_backoff_ms(),
                c.cleaner_dedupe_buffer_size(),
                c.cleaner_io_max_bytes_per_second().to_bits(),
            )
        };
        let mine = settings(&config);
        let wake = tokio::time::Instant::now() + pause;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => break,
                changed = images.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if settings(&broker.effective_config()) != mine {
                        break;
                    }
                }
                _ = stop.changed() => return,
            }
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
