//! Replica fetchers: a follower pulls its partitions from each leader with Fetch (one task
//! per source broker, batching every partition it follows there, as Kafka's
//! ReplicaFetcherThread does), appends the leader's batches unchanged, learns the high
//! watermark and log start from the answers, and truncates where its log diverges
//! (KIP-279's DivergingEpoch).

use super::state::truncation_offset;
use super::{Partition, ReplicaManager};
use crate::metadata::MetadataImage;
use crate::protocol::codes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::{BrokerId, FetchRequest};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use strom_client::Connection;
use tokio::sync::watch;

/// How often a fetcher whose every partition is held by the follower throttle looks again.
const THROTTLE_RECHECK: Duration = Duration::from_millis(100);

/// How a follower fetches (Kafka's replica.fetch.* properties).
#[derive(Debug, Clone)]
pub struct FetcherConfig {
    /// The leader's listener to fetch from (`inter.broker.listener.name`).
    pub listener: std::sync::Arc<str>,
    pub max_bytes_per_partition: i32,
    pub response_max_bytes: i32,
    pub min_bytes: i32,
    pub max_wait_ms: i32,
    pub backoff: Duration,
}

/// Keeps one fetcher task per broker that leads a partition this broker follows; a task
/// ends by itself when this broker follows nothing there any more.
pub async fn run<H: AsRef<ReplicaManager> + Send + Sync + 'static>(
    host: Arc<H>,
    mut images: watch::Receiver<Arc<MetadataImage>>,
    config: FetcherConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut tasks: HashMap<i32, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        let replicas = (*host).as_ref();
        tasks.retain(|_, t| !t.is_finished());
        let me = replicas.node_id();
        let mut leaders: Vec<i32> = replicas
            .all()
            .iter()
            .map(|p| p.leader())
            .filter(|l| *l >= 0 && *l != me)
            .collect();
        leaders.sort_unstable();
        leaders.dedup();
        for leader in leaders {
            tasks.entry(leader).or_insert_with(|| {
                tokio::spawn(fetch_from(
                    leader,
                    host.clone(),
                    images.clone(),
                    config.clone(),
                    stop.clone(),
                ))
            });
        }
        // Partitions are opened from an image by the publisher, which may run after this
        // wakes; a short recheck catches up without a second signal.
        tokio::select! {
            changed = images.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The partitions this broker follows on `leader`.
fn followed(replicas: &ReplicaManager, leader: i32) -> Vec<Arc<Partition>> {
    replicas
        .all()
        .into_iter()
        .filter(|p| p.leader() == leader && leader != replicas.node_id())
        .collect()
}

async fn fetch_from<H: AsRef<ReplicaManager> + Send + Sync + 'static>(
    leader: i32,
    host: Arc<H>,
    images: watch::Receiver<Arc<MetadataImage>>,
    config: FetcherConfig,
    mut stop: watch::Receiver<bool>,
) {
    let replicas = (*host).as_ref();
    let mut conn: Option<Connection> = None;
    let request_timeout = Duration::from_millis(config.max_wait_ms.max(0) as u64 + 30_000);
    loop {
        if *stop.borrow() {
            return;
        }
        let all = followed(replicas, leader);
        if all.is_empty() {
            return;
        }
        // Out-of-ISR replicas listed in follower.replication.throttled.replicas wait while
        // this broker's follower throttle is spent; in-sync ones are never held back.
        let me = replicas.node_id();
        let quota = &replicas.quotas().follower;
        let held = quota.exceeded(replicas.now_ms());
        let partitions: Vec<Arc<Partition>> = all
            .into_iter()
            .filter(|p| !(held && p.follower_throttled(me)))
            .collect();
        if partitions.is_empty() {
            backoff(&mut stop, THROTTLE_RECHECK).await;
            continue;
        }
        if conn.is_none() {
            let endpoint = images
                .borrow()
                .brokers
                .get(&leader)
                .and_then(|b| b.endpoint(&config.listener))
                .map(|e| format!("{}:{}", e.host, e.port));
            let Some(addr) = endpoint else {
                backoff(&mut stop, config.backoff).await;
                continue;
            };
            match Connection::connect_with_timeout(&addr, "strom-replica-fetcher", request_timeout)
                .await
            {
                Ok(mut c) => {
                    c.set_timeout(request_timeout);
                    conn = Some(c);
                }
                Err(e) => {
                    tracing::debug!(leader, %addr, cause = %e, "cannot reach the leader to replicate from");
                    backoff(&mut stop, config.backoff).await;
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        let version = c.version_for::<FetchRequest>().unwrap_or(12).clamp(12, 16);
        let req = fetch_request(
            replicas.node_id(),
            replicas.broker_epoch(),
            &partitions,
            &config,
            version,
        );
        let resp = tokio::select! {
            r = c.send_versioned(req, version) => r,
            _ = stop.changed() => return,
        };
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(leader, cause = %e, "replica fetch failed");
                conn = None;
                backoff(&mut stop, config.backoff).await;
                continue;
            }
        };
        let mut refused = false;
        let now = replicas.now_ms();
        for topic in resp.responses {
            for pd in topic.partitions {
                let Some(p) = partitions.iter().find(|p| {
                    let topic_matches = if version >= 13 {
                        p.topic_id == topic.topic_id
                    } else {
                        topic.topic.0.as_str() == p.topic
                    };
                    topic_matches && p.index == pd.partition_index
                }) else {
                    continue;
                };
                if p.leader() != leader {
                    // The image moved the leadership while the fetch was out.
                    continue;
                }
                let throttled = p.follower_throttled(me);
                match apply_answer(p, pd, now) {
                    Ok(bytes) => {
                        if throttled {
                            quota.record(bytes, now);
                        }
                        replicas
                            .replication_counts()
                            .fetched_bytes
                            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => {
                        refused = true;
                        tracing::debug!(leader, topic = %p.topic, partition = p.index, cause = %e, "a replicated partition could not take its leader's answer");
                    }
                }
            }
        }
        replicas.wake_fetches();
        if refused {
            backoff(&mut stop, config.backoff.min(Duration::from_millis(200))).await;
        }
    }
}

/// Applies one partition's fetch answer to the follower's replica; returns the record
/// bytes appended.
fn apply_answer(
    p: &Partition,
    pd: kafka_protocol::messages::fetch_response::PartitionData,
    now_ms: i64,
) -> anyhow::Result<usize> {
    match pd.error_code {
        codes::NONE => {}
        codes::OFFSET_OUT_OF_RANGE if p.log_end_offset() < pd.log_start_offset => {
            // The leader no longer has what follows this log (retention or DeleteRecords
            // while this replica was away): start again at its log start.
            tracing::info!(topic = %p.topic, partition = p.index, from = p.log_end_offset(), to = pd.log_start_offset, "replica behind its leader's log start starts again there");
            p.reset_to(pd.log_start_offset, now_ms)?;
            return Ok(0);
        }
        code => anyhow::bail!("the leader answered error code {code}"),
    }
    if pd.diverging_epoch.epoch >= 0 || pd.diverging_epoch.end_offset >= 0 {
        let mine = p.end_offset_for_epoch(pd.diverging_epoch.epoch);
        let to = truncation_offset(pd.diverging_epoch.end_offset, mine);
        let before = p.log_end_offset();
        let leo = p.truncate_to(to, now_ms)?;
        tracing::info!(topic = %p.topic, partition = p.index, from = before, to = leo, epoch = pd.diverging_epoch.epoch, "replica truncated where its log diverges from its leader's");
        return Ok(0);
    }
    let records = pd.records.unwrap_or_default();
    if !records.is_empty() {
        p.append_as_follower(&records, now_ms)?;
    }
    p.set_follower_high_watermark(pd.high_watermark);
    p.follow_log_start(pd.log_start_offset, now_ms)?;
    Ok(records.len())
}

fn fetch_request(
    node_id: i32,
    broker_epoch: i64,
    partitions: &[Arc<Partition>],
    config: &FetcherConfig,
    version: i16,
) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for p in partitions {
        let fp = FetchPartition::default()
            .with_partition(p.index)
            .with_current_leader_epoch(p.leader_epoch())
            .with_fetch_offset(p.log_end_offset())
            .with_last_fetched_epoch(p.latest_log_epoch())
            .with_log_start_offset(p.log_start_offset())
            .with_partition_max_bytes(config.max_bytes_per_partition);
        let same = |t: &&mut FetchTopic| {
            if version >= 13 {
                t.topic_id == p.topic_id
            } else {
                t.topic.0.as_str() == p.topic
            }
        };
        match topics.iter_mut().find(same) {
            Some(t) => t.partitions.push(fp),
            // Topics are named by id from v13 and by name before; a version's encoder
            // refuses a field it lacks.
            None if version >= 13 => topics.push(
                FetchTopic::default()
                    .with_topic_id(p.topic_id)
                    .with_partitions(vec![fp]),
            ),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(kafka_protocol::messages::TopicName(p.topic.clone().into()))
                    .with_partitions(vec![fp]),
            ),
        }
    }
    let mut req = FetchRequest::default()
        .with_max_wait_ms(config.max_wait_ms)
        .with_min_bytes(config.min_bytes)
        .with_max_bytes(config.response_max_bytes)
        .with_topics(topics);
    if version >= 15 {
        req = req.with_replica_state(
            ReplicaState::default()
                .with_replica_id(BrokerId(node_id))
                .with_replica_epoch(broker_epoch),
        );
    } else {
        req = req.with_replica_id(BrokerId(node_id));
    }
    req
}

async fn backoff(stop: &mut watch::Receiver<bool>, period: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(period) => {}
        _ = stop.changed() => {}
    }
}
