//! A broker-only node's metadata: an observer of the quorum, as KRaft's brokers are. It
//! follows the committed metadata log with Kafka's Fetch on `__cluster_metadata` from the
//! voters' controller listeners (any voter serves what it knows is committed; the leader
//! it names is tried first), installs the leader's snapshot with FetchSnapshot when it is
//! behind the log start, and applies every entry to its own image. It never votes, so
//! brokers joining and leaving never change the quorum.

use super::image::MetadataImage;
use super::quorum::QuorumStatus;
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::fetch_snapshot_request::{
    PartitionSnapshot, SnapshotId, TopicSnapshot,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchSnapshotRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use strom_client::Connection;
use tokio::sync::watch;

/// The metadata log's topic name and fixed topic id, as Kafka names them.
pub const METADATA_TOPIC: &str = "__cluster_metadata";
pub const METADATA_TOPIC_ID: uuid::Uuid = uuid::Uuid::from_u128(1);

/// How long a voter may hold a fetch when nothing new is committed.
const FETCH_MAX_WAIT_MS: i32 = 500;
const FETCH_MAX_BYTES: i32 = 8 * 1024 * 1024;

pub struct Observer {
    images: watch::Receiver<Arc<MetadataImage>>,
    status: watch::Receiver<QuorumStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Observer {
    pub fn start(node_id: i32, voters: BTreeMap<i32, String>, fetch_timeout: Duration) -> Self {
        let (image_tx, images) = watch::channel(Arc::new(MetadataImage::default()));
        let (status_tx, status) = watch::channel(QuorumStatus::default());
        let task = tokio::spawn(follow(node_id, voters, fetch_timeout, image_tx, status_tx));
        Observer {
            images,
            status,
            task,
        }
    }

    pub fn subscribe_image(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.images.clone()
    }

    pub fn subscribe_status(&self) -> watch::Receiver<QuorumStatus> {
        self.status.clone()
    }
}

/// The Fetch of the metadata log at `offset`, shaped for `version` (the replica id moved
/// into `replica_state` in v15, topics are named by id from v13).
fn fetch_request(node_id: i32, offset: i64, version: i16) -> FetchRequest {
    let mut req = FetchRequest::default();
    if version >= 15 {
        req = req.with_replica_state(ReplicaState::default().with_replica_id(BrokerId(node_id)));
    } else {
        req = req.with_replica_id(BrokerId(node_id));
    }
    let mut topic = FetchTopic::default();
    if version >= 13 {
        topic = topic.with_topic_id(METADATA_TOPIC_ID);
    } else {
        topic = topic.with_topic(TopicName(StrBytes::from_static_str(METADATA_TOPIC)));
    }
    req.with_max_wait_ms(FETCH_MAX_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_MAX_BYTES)
        .with_session_epoch(-1)
        .with_topics(vec![topic.with_partitions(vec![FetchPartition::default()
            .with_partition(0)
            .with_fetch_offset(offset)
            .with_current_leader_epoch(-1)
            .with_last_fetched_epoch(-1)
            .with_log_start_offset(-1)
            .with_partition_max_bytes(FETCH_MAX_BYTES)])])
}

async fn follow(
    node_id: i32,
    voters: BTreeMap<i32, String>,
    fetch_timeout: Duration,
    image_tx: watch::Sender<Arc<MetadataImage>>,
    status_tx: watch::Sender<QuorumStatus>,
) {
    let ids: Vec<i32> = voters.keys().copied().collect();
    let mut image = MetadataImage::default();
    let mut conn: Option<(i32, Connection)> = None;
    let mut next_voter = 0usize;
    loop {
        let hint = status_tx
            .borrow()
            .leader_id
            .filter(|l| voters.contains_key(l));
        let target = match &conn {
            Some((id, _)) => *id,
            None => hint.unwrap_or_else(|| ids[next_voter % ids.len()]),
        };
        if conn.is_none() {
            let addr = voters[&target].clone();
            match Connection::connect_with_timeout(addr, "strom-metadata-observer", fetch_timeout)
                .await
            {
                Ok(mut c) => {
                    c.set_timeout(fetch_timeout + Duration::from_millis(FETCH_MAX_WAIT_MS as u64));
                    conn = Some((target, c));
                }
                Err(e) => {
                    tracing::debug!(voter = target, cause = %e, "cannot reach a controller");
                    next_voter += 1;
                    status_tx.send_modify(|s| s.leader_id = None);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let (_, c) = conn.as_mut().expect("connected above");
        let version = c.version_for::<FetchRequest>().unwrap_or(12);
        let resp = match c
            .send(fetch_request(node_id, image.metadata_offset, version))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(voter = target, cause = %e, "metadata fetch failed");
                conn = None;
                next_voter += 1;
                status_tx.send_modify(|s| s.leader_id = None);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(p) = resp
            .responses
            .into_iter()
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == 0)
        else {
            tracing::debug!(
                voter = target,
                "a metadata fetch answer without the partition"
            );
            conn = None;
            next_voter += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let leader = p.current_leader.leader_id.0;
        status_tx.send_if_modified(|s| {
            let l = (leader >= 0).then_some(leader);
            let changed = s.leader_id != l || s.commit_index != p.high_watermark.max(0) as u64;
            s.leader_id = l;
            s.term = p.current_leader.leader_epoch.max(0) as u64;
            s.commit_index = p.high_watermark.max(0) as u64;
            changed
        });
        if p.error_code == crate::protocol::codes::OFFSET_OUT_OF_RANGE
            && p.snapshot_id.end_offset >= 0
        {
            match fetch_snapshot(c, node_id, p.snapshot_id.end_offset, p.snapshot_id.epoch).await {
                Ok(data) => match MetadataImage::from_checkpoint(&data) {
                    Ok(mut snap) => {
                        snap.metadata_offset = p.snapshot_id.end_offset;
                        image = snap;
                        tracing::info!(
                            offset = image.metadata_offset,
                            "installed the metadata snapshot"
                        );
                        let _ = image_tx.send(Arc::new(image.clone()));
                    }
                    Err(e) => {
                        tracing::error!(cause = %e, "the controller's snapshot is unreadable")
                    }
                },
                Err(e) => {
                    tracing::debug!(cause = %e, "fetching the metadata snapshot failed");
                    conn = None;
                    next_voter += 1;
                }
            }
            continue;
        }
        if p.error_code != 0 {
            tracing::debug!(
                voter = target,
                code = p.error_code,
                "metadata fetch refused"
            );
            conn = None;
            next_voter += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let records = p.records.unwrap_or_default();
        if apply_batches(&mut image, records) {
            let _ = image_tx.send(Arc::new(image.clone()));
        }
        // Follow the leader, as Kafka's observers do: it has the newest commits first, and
        // its DescribeQuorum lists the observers that fetch from it.
        if leader >= 0 && leader != target && voters.contains_key(&leader) {
            conn = None;
        }
    }
}

/// Applies the metadata batches of one fetch, in order; whether anything was applied.
fn apply_batches(image: &mut MetadataImage, mut records: Bytes) -> bool {
    let mut applied = false;
    while !records.is_empty() {
        let set = match RecordBatchDecoder::decode(&mut records) {
            Ok(set) => set,
            Err(e) => {
                tracing::error!(cause = %e, "an unreadable metadata batch from a controller");
                return applied;
            }
        };
        for r in set.records {
            let index = r.offset as u64 + 1;
            // A voter never sends below the offset asked for; a repeat would be a bug.
            if index as i64 <= image.metadata_offset {
                continue;
            }
            image.apply_entry(index, &r.value.unwrap_or_default());
            applied = true;
        }
    }
    applied
}

async fn fetch_snapshot(
    conn: &mut Connection,
    node_id: i32,
    end_offset: i64,
    epoch: i32,
) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    loop {
        let req = FetchSnapshotRequest::default()
            .with_replica_id(BrokerId(node_id))
            .with_max_bytes(FETCH_MAX_BYTES)
            .with_topics(vec![TopicSnapshot::default()
                .with_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
                .with_partitions(vec![PartitionSnapshot::default()
                    .with_partition(0)
                    .with_current_leader_epoch(-1)
                    .with_snapshot_id(
                        SnapshotId::default()
                            .with_end_offset(end_offset)
                            .with_epoch(epoch),
                    )
                    .with_position(data.len() as i64)])]);
        let resp = conn.send(req).await.map_err(|e| e.to_string())?;
        let p = resp
            .topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .next()
            .ok_or("no partition in the FetchSnapshot answer")?;
        if p.error_code != 0 {
            return Err(format!("FetchSnapshot error {}", p.error_code));
        }
        data.extend_from_slice(&p.unaligned_records);
        if data.len() as i64 >= p.size || p.unaligned_records.is_empty() {
            return Ok(data);
        }
    }
}

/// Asks the controllers at `bootstrap` (controller.quorum.bootstrap.servers) for the voter
/// set, as DescribeQuorum v2 names it (KIP-853), trying each address in turn until one
/// answers with its voters: id -> the address of each one's controller listener. Retries
/// every `backoff` for as long as no controller answers, as a broker waits for its quorum.
pub async fn discover_voters(
    bootstrap: &[String],
    timeout: Duration,
    backoff: Duration,
) -> BTreeMap<i32, String> {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    use kafka_protocol::messages::DescribeQuorumRequest;
    let request = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
        .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
    let mut rounds = 0u32;
    loop {
        for addr in bootstrap {
            let answer = async {
                let mut c =
                    Connection::connect_with_timeout(addr, "strom-voter-discovery", timeout)
                        .await
                        .map_err(|e| e.to_string())?;
                c.set_timeout(timeout);
                let version = c
                    .version_for::<DescribeQuorumRequest>()
                    .map_err(|e| e.to_string())?;
                if version < 2 {
                    return Err(format!(
                        "DescribeQuorum v{version} names no voter endpoints"
                    ));
                }
                c.send_versioned(request.clone(), version)
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            match answer {
                Ok(resp) => {
                    let voters: BTreeMap<i32, String> = resp
                        .nodes
                        .iter()
                        .filter_map(|n| {
                            let l = n.listeners.first()?;
                            let host = l.host.as_str();
                            let addr = if host.contains(':') {
                                format!("[{host}]:{}", l.port)
                            } else {
                                format!("{host}:{}", l.port)
                            };
                            Some((n.node_id.0, addr))
                        })
                        .collect();
                    if !voters.is_empty() {
                        tracing::info!(%addr, ?voters, "learned the controller voters");
                        return voters;
                    }
                }
                Err(e) => {
                    if rounds.is_multiple_of(20) {
                        tracing::warn!(%addr, cause = %e, "asking a bootstrap controller for the voters failed; retrying");
                    }
                }
            }
        }
        rounds += 1;
        tokio::time::sleep(backoff).await;
    }
}
