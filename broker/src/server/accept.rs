//! The listeners' accept loop (broker and controller listeners together): connection caps
//! (`max.connections`, `max.connections.per.ip`) that close over-limit connections at
//! once (instead of leaving them connected and unanswered), a back-off when accepting fails
//! (out of file descriptors) instead of a spin, and a shutdown that never waits behind either.

use super::connection::{self, RequestMemory};
use super::{Broker, ListenerKind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How often the same accept-loop warning is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown` resolves and returns the connection tasks, still
/// running, for the caller to drain.
pub(super) async fn accept_connections(
    listeners: &[(TcpListener, ListenerKind)],
    broker: &Arc<Broker>,
    stop: &watch::Receiver<bool>,
    shutdown: impl std::future::Future<Output = ()>,
) -> JoinSet<()> {
    // max.connections: a connection beyond it is closed at once.
    let open = Arc::new(AtomicUsize::new(0));
    let per_ip = PerIp::default();
    let memory = RequestMemory::new(&broker.config);
    let mut tasks = JoinSet::new();
    let mut backoff = Duration::ZERO;
    let mut last_warning: Option<Instant> = None;
    let mut warn_due = move || {
        let due = last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY);
        if due {
            last_warning = Some(Instant::now());
        }
        due
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            (accepted, kind) = accept_any(listeners) => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::ZERO;
                    // The limits as now set: the properties, or dynamic broker configs.
                    let limits = broker.effective_config();
                    // Never wait for room here: a waiting accept loop leaves new clients
                    // connected but unanswered and stops noticing the shutdown signal.
                    let max_connections = limits.max_connections();
                    let Some(permit) = Slot::take(&open, max_connections) else {
                        broker.metrics.requests_refused("max.connections");
                        if warn_due() {
                            tracing::warn!(%peer, max = max_connections, "connection limit reached; closing new connections");
                        }
                        drop(stream);
                        continue;
                    };
                    // Controller listeners carry the quorum's own traffic: not limited.
                    let ip_slot = if kind == ListenerKind::Controller {
                        None
                    } else {
                        match per_ip.take(peer.ip(), limits.connections_per_ip()) {
                            Ok(slot) => Some(slot),
                            Err(max) => {
                                broker.metrics.requests_refused("max.connections.per.ip");
                                if warn_due() {
                                    tracing::warn!(%peer, max, "connection limit of the address reached; closing its new connections");
                                }
                                drop(stream);
                                continue;
                            }
                        }
                    };
                    let broker = broker.clone();
                    let stop = stop.clone();
                    let memory = memory.clone();
                    tasks.spawn(async move {
                        connection::serve(broker, stream, peer, kind, stop, memory).await;
                        drop(ip_slot);
                        drop(permit);
                    });
                }
                Err(e) => {
                    // EMFILE/ENFILE and friends: retrying at once would spin. Back off up to
                    // a second; connections that close meanwhile free descriptors.
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    if warn_due() {
                        let hint = if e.raw_os_error() == Some(24) {
                            format!("; the soft file-descriptor limit is {}: raise it (ulimit -n, LimitNOFILE)", fd_limits().0)
                        } else {
                            String::new()
                        };
                        tracing::warn!(cause = %e, backoff_ms = backoff.as_millis() as u64, "accept failed{hint}");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = &mut shutdown => break,
                    }
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tasks
}

/// One open connection's place in `max.connections`, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

type IpCounts = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// `max.connections.per.ip` (with its overrides): open connections counted by address.
#[derive(Clone, Default)]
struct PerIp {
    open: IpCounts,
}

/// One connection's place in its address's count, given back when dropped.
struct IpSlot {
    ip: std::net::IpAddr,
    open: IpCounts,
}

impl PerIp {
    /// A slot for one more connection from `ip` under `limits` (the default and the
    /// overrides by address), or the limit it would pass.
    fn take(
        &self,
        ip: std::net::IpAddr,
        limits: (usize, std::collections::HashMap<std::net::IpAddr, usize>),
    ) -> Result<IpSlot, usize> {
        let (default_max, overrides) = limits;
        let max = overrides.get(&ip).copied().unwrap_or(default_max);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= max {
            if *count == 0 {
                open.remove(&ip);
            }
            return Err(max);
        }
        *count += 1;
        Ok(IpSlot {
            ip,
            open: self.open.clone(),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The next connection on any of the listeners, with the kind of listener it came to.
async fn accept_any(
    listeners: &[(TcpListener, ListenerKind)],
) -> (
    std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)>,
    ListenerKind,
) {
    if listeners.is_empty() {
        return std::future::pending().await;
    }
    let accepts = listeners
        .iter()
        .map(|(l, kind)| Box::pin(async move { (l.accept().await, kind.clone()) }));
    futures::future::select_all(accepts).await.0
}

/// The soft and hard limits on open file descriptors (0, 0 if they cannot be read).
pub fn fd_limits() -> (u64, u64) {
    rlimit::Resource::NOFILE.get().unwrap_or((0, 0))
}

/// Raises the soft file-descriptor limit to the hard limit, as a broker holding a segment
/// file per partition and a socket per client needs (the usual soft default of 1024 locks
/// out clients at about 960 connections and stops a broker with 1,000 partitions from
/// starting). Returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    let (soft, hard) = fd_limits();
    match rlimit::increase_nofile_limit(hard) {
        Ok(now) => {
            if now > soft {
                tracing::info!(
                    from = soft,
                    to = now,
                    "raised the soft file-descriptor limit"
                );
            }
            now
        }
        Err(e) => {
            tracing::warn!(cause = %e, soft, hard, "could not raise the file-descriptor limit");
            soft
        }
    }
}

/// What is short when the file-descriptor limit cannot hold the open segment files and
/// `max.connections` clients (plus a few for the listeners and the metadata log), for the
/// log and `/readyz`; `None` when the limit is enough.
pub fn fd_shortfall(broker: &Broker) -> Option<String> {
    let (soft, _) = fd_limits();
    if soft == 0 {
        return None;
    }
    let segments: usize = broker
        .replicas
        .all()
        .iter()
        .map(|p| p.segment_count())
        .sum();
    // Segment files beyond the open-files bound are closed and reopened as needed.
    let files = segments.min(crate::log::files::OpenFiles::global().limit());
    let connections = broker.config.max_connections();
    let room = (soft as usize).saturating_sub(files + 64);
    (room < connections).then(|| {
        format!(
            "the soft file-descriptor limit {soft} leaves room for about {room} connections beside up to {files} open segment files (strom.log.open.files.max), fewer than max.connections {connections}: raise the limit (ulimit -n, LimitNOFILE) or lower max.connections"
        )
    })
}
