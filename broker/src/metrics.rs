//! Prometheus metrics of the broker: requests and latency per API, bytes in and out,
//! connections, and (computed when scraped) partitions and log size.

use kafka_protocol::messages::ApiKey;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

type Labels = Vec<(String, String)>;

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Per-API handles created up front, so the request path does no label allocation.
    per_api: Arc<HashMap<i16, (Counter, Histogram)>>,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub connections: Gauge,
    pub retention_deleted_segments: Counter,
    pub isr_shrinks: Counter,
    pub isr_expands: Counter,
    replica_fetched_bytes: Counter,
    /// Record bytes served to consumers as leader and as follower (KIP-392).
    consumer_fetched_as_leader: Counter,
    consumer_fetched_as_follower: Counter,
    /// Bytes of throttled replicas moved, sent as leader and fetched as follower.
    throttled_as_leader: Counter,
    throttled_as_follower: Counter,
    cleaner_bytes: Counter,
    /// Log cleaner threads running now (`log.cleaner.threads`, a dynamic config).
    pub cleaner_threads: Gauge,
    last_clean_time: Family<Labels, Gauge>,
    dirty_ratio: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    partitions: Gauge,
    log_size_bytes: Gauge,
    open_segment_files: Gauge,
    segment_file_opens: Counter,
    replication: [Gauge; 4],
    limit_closures: Family<Labels, Counter>,
    storage_errors: Family<Labels, Counter>,
    invalid_batches: Family<Labels, Counter>,
    pub fetch_sessions: crate::api::fetch_session::SessionMetrics,
    pub quotas: crate::quota::QuotaMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("strom");
        let requests = Family::<Labels, Counter>::default();
        let latency = Family::<Labels, Histogram>::new_with_constructor(|| {
            // 50 µs to about 13 s.
            Histogram::new(exponential_buckets(0.00005, 4.0, 10))
        });
        registry.register("requests", "Requests handled, by API", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time from decoded request to response, by API",
            latency.clone(),
        );
        let bytes_in = Counter::default();
        let bytes_out = Counter::default();
        let connections = Gauge::default();
        let partitions = Gauge::default();
        let log_size_bytes = Gauge::default();
        let open_segment_files = Gauge::default();
        let segment_file_opens = Counter::default();
        registry.register(
            "log_open_segment_files",
            "Segment files open now (at most strom.log.open.files.max)",
            open_segment_files.clone(),
        );
        registry.register(
            "log_segment_file_opens",
            "Segment files opened; a rate that keeps up with reads means strom.log.open.files.max is below the working set",
            segment_file_opens.clone(),
        );
        let fetch_sessions = crate::api::fetch_session::SessionMetrics::default();
        registry.register(
            "fetch_sessions",
            "Incremental fetch sessions (KIP-227) cached now",
            fetch_sessions.sessions.clone(),
        );
        registry.register(
            "fetch_session_partitions",
            "Partitions held by the cached fetch sessions",
            fetch_sessions.partitions.clone(),
        );
        registry.register(
            "fetch_sessions_created",
            "Fetch sessions created",
            fetch_sessions.created.clone(),
        );
        registry.register(
            "fetch_session_evictions",
            "Fetch sessions evicted to make room for a new one",
            fetch_sessions.evictions.clone(),
        );
        let cleaner_threads = Gauge::default();
        registry.register(
            "log_cleaner_threads",
            "Log cleaner threads running (log.cleaner.threads, changeable at run time)",
            cleaner_threads.clone(),
        );
        let quotas = crate::quota::QuotaMetrics::default();
        registry.register(
            "client_quota_throttles",
            "Responses whose client was over a client quota and was throttled, by quota (produce, fetch, request)",
            quotas.throttled.clone(),
        );
        registry.register(
            "client_quota_throttle_ms",
            "Milliseconds of throttle given to clients over a client quota, by quota",
            quotas.throttle_ms.clone(),
        );
        let replication: [Gauge; 4] = Default::default();
        for (g, (name, help)) in replication.iter().zip([
            ("leader_partitions", "Partitions this broker leads"),
            (
                "under_replicated_partitions",
                "Partitions this broker leads whose ISR is smaller than their replica set",
            ),
            (
                "under_min_isr_partitions",
                "Partitions this broker leads whose ISR is smaller than min.insync.replicas",
            ),
            (
                "replica_max_lag",
                "The most offsets any follower of a partition this broker leads is behind",
            ),
        ]) {
            registry.register(name, help, g.clone());
        }
        let retention_deleted_segments = Counter::default();
        let isr_shrinks = Counter::default();
        let isr_expands = Counter::default();
        registry.register(
            "isr_shrinks",
            "ISR shrinks the controller committed for partitions this broker leads",
            isr_shrinks.clone(),
        );
        registry.register(
            "isr_expands",
            "ISR expansions the controller committed for partitions this broker leads",
            isr_expands.clone(),
        );
        let replica_fetched_bytes = Counter::default();
        registry.register(
            "replica_fetched_bytes",
            "Record bytes this broker's replica fetchers appended as a follower",
            replica_fetched_bytes.clone(),
        );
        let consumer_fetched = Family::<Labels, Counter>::default();
        registry.register(
            "consumer_fetched_bytes",
            "Record bytes served to consumers, by the role of this broker's replica (leader, or follower for consumers sent there by client.rack)",
            consumer_fetched.clone(),
        );
        let role = |r: &str| {
            consumer_fetched
                .get_or_create(&vec![("replica".to_string(), r.to_string())])
                .clone()
        };
        let consumer_fetched_as_leader = role("leader");
        let consumer_fetched_as_follower = role("follower");
        let throttled = Family::<Labels, Counter>::default();
        registry.register(
            "replication_throttled_bytes",
            "Record bytes of throttled replicas (the *.replication.throttled.replicas topic configs) replicated while out of the ISR, by side: sent as leader, fetched as follower",
            throttled.clone(),
        );
        let side = |r: &str| {
            throttled
                .get_or_create(&vec![("side".to_string(), r.to_string())])
                .clone()
        };
        let throttled_as_leader = side("leader");
        let throttled_as_follower = side("follower");
        let cleaner_bytes = Counter::default();
        let last_clean_time = Family::<Labels, Gauge>::default();
        let dirty_ratio = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "log_cleaner_bytes_read",
            "Bytes read by the log cleaner",
            cleaner_bytes.clone(),
        );
        registry.register(
            "log_cleaner_last_clean_time_ms",
            "When each compacted partition was last cleaned (Unix ms)",
            last_clean_time.clone(),
        );
        registry.register(
            "log_cleaner_dirty_ratio",
            "Dirty ratio of each compacted partition's cleanable segments",
            dirty_ratio.clone(),
        );
        registry.register(
            "log_retention_deleted_segments",
            "Segments deleted by time or size retention",
            retention_deleted_segments.clone(),
        );
        registry.register(
            "network_in_bytes",
            "Request bytes received",
            bytes_in.clone(),
        );
        registry.register(
            "network_out_bytes",
            "Response bytes sent",
            bytes_out.clone(),
        );
        registry.register(
            "connections",
            "Open client connections",
            connections.clone(),
        );
        registry.register(
            "partitions",
            "Partitions hosted by this broker",
            partitions.clone(),
        );
        registry.register(
            "log_size_bytes",
            "Bytes of all partition logs",
            log_size_bytes.clone(),
        );
        let limit_closures = Family::<Labels, Counter>::default();
        registry.register(
            "connections_closed_by_limit",
            "Connections closed or refused by a limit, by the property that set it",
            limit_closures.clone(),
        );
        let storage_errors = Family::<Labels, Counter>::default();
        registry.register(
            "storage_errors",
            "Storage failures answered with a Kafka error (corrupt data, failed writes), by kind",
            storage_errors.clone(),
        );
        let invalid_batches = Family::<Labels, Counter>::default();
        registry.register(
            "invalid_batches",
            "Produced or stored record batches refused or skipped as invalid, by reason",
            invalid_batches.clone(),
        );
        let per_api = crate::protocol::SUPPORTED_APIS
            .iter()
            .map(|(k, _, _)| {
                let labels = vec![("api".to_string(), format!("{k:?}"))];
                (
                    *k as i16,
                    (
                        requests.get_or_create(&labels).clone(),
                        latency.get_or_create(&labels).clone(),
                    ),
                )
            })
            .collect();
        Metrics {
            registry: Arc::new(registry),
            per_api: Arc::new(per_api),
            bytes_in,
            bytes_out,
            connections,
            retention_deleted_segments,
            isr_shrinks,
            isr_expands,
            replica_fetched_bytes,
            consumer_fetched_as_leader,
            consumer_fetched_as_follower,
            throttled_as_leader,
            throttled_as_follower,
            cleaner_bytes,
            cleaner_threads,
            last_clean_time,
            dirty_ratio,
            partitions,
            log_size_bytes,
            open_segment_files,
            segment_file_opens,
            replication,
            limit_closures,
            storage_errors,
            invalid_batches,
            fetch_sessions,
            quotas,
        }
    }

    /// A connection closed or refused because of the limit set by `property`.
    pub fn requests_refused(&self, property: &str) {
        self.limit_closures
            .get_or_create(&vec![("limit".to_string(), property.to_string())])
            .inc();
    }

    /// A storage failure of `kind` (`corrupt_segment`, `write_failed`, ...).
    /// Record bytes a consumer fetch read here, as leader or as follower.
    pub fn consumer_fetched(&self, as_leader: bool, bytes: usize) {
        let counter = if as_leader {
            &self.consumer_fetched_as_leader
        } else {
            &self.consumer_fetched_as_follower
        };
        counter.inc_by(bytes as u64);
    }

    pub fn storage_error(&self, kind: &str) {
        self.storage_errors
            .get_or_create(&vec![("kind".to_string(), kind.to_string())])
            .inc();
    }

    /// A record batch refused on produce or skipped by the cleaner, for `reason`.
    pub fn invalid_batch(&self, reason: &str, count: u64) {
        self.invalid_batches
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc_by(count);
    }

    pub fn observe(&self, api: ApiKey, elapsed: Duration) {
        if let Some((count, latency)) = self.per_api.get(&(api as i16)) {
            count.inc();
            latency.observe(elapsed.as_secs_f64());
        }
    }

    fn partition_labels(p: &crate::partition::Partition) -> Labels {
        vec![
            ("topic".to_string(), p.topic.clone()),
            ("partition".to_string(), p.index.to_string()),
        ]
    }

    pub fn record_clean(
        &self,
        p: &crate::partition::Partition,
        summary: &crate::partition::CleanSummary,
        now_ms: i64,
    ) {
        self.cleaner_bytes.inc_by(summary.stats.bytes_read);
        let labels = Self::partition_labels(p);
        self.last_clean_time.get_or_create(&labels).set(now_ms);
        self.dirty_ratio
            .get_or_create(&labels)
            .set(summary.dirty_ratio);
    }

    /// Refreshes the dirty ratio of compacted partitions (called when scraped).
    pub fn set_dirty_ratio(&self, p: &crate::partition::Partition, ratio: f64) {
        self.dirty_ratio
            .get_or_create(&Self::partition_labels(p))
            .set(ratio);
    }

    /// The Prometheus text exposition, after refreshing the gauges computed on demand.
    pub fn render(
        &self,
        partitions: &[std::sync::Arc<crate::partition::Partition>],
        counts: &crate::partition::ReplicationCounts,
        quotas: &crate::partition::throttle::ReplicationQuotas,
    ) -> String {
        // Running totals kept by the replica manager; fetch_max keeps the counters
        // monotonic when two scrapes race.
        for (counter, total) in [
            (&self.isr_shrinks, &counts.shrinks),
            (&self.isr_expands, &counts.expands),
            (&self.replica_fetched_bytes, &counts.fetched_bytes),
        ] {
            counter.inner().fetch_max(
                total.load(std::sync::atomic::Ordering::Relaxed),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        for (counter, quota) in [
            (&self.throttled_as_leader, &quotas.leader),
            (&self.throttled_as_follower, &quotas.follower),
        ] {
            counter
                .inner()
                .fetch_max(quota.moved(), std::sync::atomic::Ordering::Relaxed);
        }
        self.partitions.set(partitions.len() as i64);
        let files = crate::log::files::OpenFiles::global();
        self.open_segment_files.set(files.open_count() as i64);
        self.segment_file_opens
            .inner()
            .fetch_max(files.counts().0, std::sync::atomic::Ordering::Relaxed);
        self.log_size_bytes
            .set(partitions.iter().map(|p| p.size_bytes()).sum::<u64>() as i64);
        let (mut led, mut under, mut under_min, mut max_lag) = (0, 0, 0, 0);
        for p in partitions {
            if let Some((isr, replicas, lag)) = p.replication_view() {
                led += 1;
                under += (isr < replicas) as i64;
                under_min += ((isr as i32) < p.log_config().min_insync_replicas) as i64;
                max_lag = max_lag.max(lag);
            }
        }
        for (g, v) in self
            .replication
            .iter()
            .zip([led, under, under_min, max_lag])
        {
            g.set(v);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
