//! Controller-listener APIs of the metadata quorum: Fetch and FetchSnapshot of
//! `__cluster_metadata` for observers (broker-only nodes), BrokerHeartbeat, and
//! AlterPartition (a leader's ISR changes). They need this node's controller only: the
//! quorum's side of a node, served without the broker's state.

use crate::metadata::observer::{METADATA_TOPIC, METADATA_TOPIC_ID};
use crate::metadata::Controller;
use crate::protocol::codes;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::alter_partition_response::{
    PartitionData as AlterPartitionData, TopicData as AlterTopic,
};
use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, LeaderIdAndEpoch, PartitionData, SnapshotId,
};
use kafka_protocol::messages::fetch_snapshot_response::{
    LeaderIdAndEpoch as SnapshotLeader, PartitionSnapshot, SnapshotId as SnapshotIdResp,
    TopicSnapshot,
};
use kafka_protocol::messages::{
    AlterPartitionRequest, AlterPartitionResponse, BrokerHeartbeatRequest, BrokerHeartbeatResponse,
    BrokerId, FetchRequest, FetchResponse, FetchSnapshotRequest, FetchSnapshotResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};
use std::time::Duration;

fn metadata_topic() -> TopicName {
    TopicName(StrBytes::from_static_str(METADATA_TOPIC))
}

/// Fetch of `__cluster_metadata` from an observer: committed entries only (up to the
/// high watermark this voter knows), long-polled up to max_wait_ms; an offset below the
/// log start answers OFFSET_OUT_OF_RANGE with the snapshot to fetch instead.
pub async fn metadata_fetch(
    controller: &Controller,
    req: FetchRequest,
    version: i16,
) -> FetchResponse {
    let wants_metadata = req.topics.iter().any(|t| {
        t.topic.0.as_str() == METADATA_TOPIC || (version >= 13 && t.topic_id == METADATA_TOPIC_ID)
    });
    let offset = req
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .find(|p| p.partition == 0)
        .map(|p| p.fetch_offset);
    let topic = FetchableTopicResponse::default()
        .with_topic(metadata_topic())
        .with_topic_id(METADATA_TOPIC_ID);
    let empty = PartitionData::default()
        .with_partition_index(0)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_preferred_read_replica(BrokerId(-1));
    let (Some(quorum), true, Some(offset)) = (controller.quorum(), wants_metadata, offset) else {
        return FetchResponse::default().with_responses(vec![topic.with_partitions(vec![
            empty.with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION)
        ])]);
    };
    let replica = if version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    if replica >= 0 {
        quorum.observed(replica, offset, controller.now_ms());
    }
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(req.max_wait_ms.clamp(0, 10_000) as u64);
    let mut status_rx = quorum.subscribe_status();
    let (status, entries) = loop {
        let status = status_rx.borrow_and_update().clone();
        let snapshot = quorum.store().snapshot_now();
        let snap = snapshot.get_metadata();
        if (offset as u64) < snap.index || offset < 0 {
            let leader = LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(status.leader_id.unwrap_or(-1)))
                .with_leader_epoch(status.term as i32);
            return FetchResponse::default().with_responses(vec![topic.with_partitions(vec![
                empty
                    .with_error_code(codes::OFFSET_OUT_OF_RANGE)
                    .with_high_watermark(status.commit_index as i64)
                    .with_current_leader(leader)
                    .with_snapshot_id(
                        SnapshotId::default()
                            .with_end_offset(snap.index as i64)
                            .with_epoch(snap.term as i32),
                    ),
            ])]);
        }
        let entries = quorum.store().entries_between(
            offset as u64 + 1,
            status.commit_index + 1,
            req.max_bytes.max(1) as usize,
        );
        if !entries.is_empty() {
            break (status, entries);
        }
        match tokio::time::timeout_at(deadline, status_rx.changed()).await {
            Ok(Ok(())) => continue,
            _ => break (status, entries),
        }
    };
    let mut records = BytesMut::new();
    for e in &entries {
        let mut r =
            crate::log::batch::plain_record(e.index as i64 - 1, 0, None, Some(e.data.clone()));
        r.partition_leader_epoch = e.term as i32;
        let encoded = RecordBatchEncoder::encode(
            &mut records,
            std::iter::once(&r),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        );
        if let Err(err) = encoded {
            tracing::error!(cause = %err, "encoding a metadata batch failed");
            break;
        }
    }
    let leader = LeaderIdAndEpoch::default()
        .with_leader_id(BrokerId(status.leader_id.unwrap_or(-1)))
        .with_leader_epoch(status.term as i32);
    FetchResponse::default().with_responses(vec![topic.with_partitions(vec![empty
        .with_high_watermark(status.commit_index as i64)
        .with_last_stable_offset(status.commit_index as i64)
        .with_log_start_offset(quorum.store().snapshot_now().get_metadata().index as i64)
        .with_current_leader(leader)
        .with_records(Some(Bytes::from(records)))])])
}

/// FetchSnapshot of `__cluster_metadata`: the bytes of this voter's newest snapshot from
/// `position`, at most max_bytes at a time.
pub fn fetch_snapshot(controller: &Controller, req: FetchSnapshotRequest) -> FetchSnapshotResponse {
    let asked = req
        .topics
        .iter()
        .filter(|t| t.name.0.as_str() == METADATA_TOPIC)
        .flat_map(|t| &t.partitions)
        .find(|p| p.partition == 0);
    let mut out = PartitionSnapshot::default().with_index(0);
    match (controller.quorum(), asked) {
        (Some(quorum), Some(p)) => {
            let snapshot = quorum.store().snapshot_now();
            let meta = snapshot.get_metadata();
            let status = quorum.status();
            out = out.with_current_leader(
                SnapshotLeader::default()
                    .with_leader_id(BrokerId(status.leader_id.unwrap_or(-1)))
                    .with_leader_epoch(status.term as i32),
            );
            if snapshot.data.is_empty() || meta.index as i64 != p.snapshot_id.end_offset {
                out = out.with_error_code(codes::SNAPSHOT_NOT_FOUND);
            } else {
                let size = snapshot.data.len();
                let from = (p.position.max(0) as usize).min(size);
                let to = from.saturating_add(req.max_bytes.max(1) as usize).min(size);
                out = out
                    .with_snapshot_id(
                        SnapshotIdResp::default()
                            .with_end_offset(meta.index as i64)
                            .with_epoch(meta.term as i32),
                    )
                    .with_size(size as i64)
                    .with_position(from as i64)
                    .with_unaligned_records(snapshot.data.slice(from..to));
            }
        }
        _ => out = out.with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION),
    }
    FetchSnapshotResponse::default().with_topics(vec![TopicSnapshot::default()
        .with_name(metadata_topic())
        .with_partitions(vec![out])])
}

/// BrokerHeartbeat: keeps a broker's session and carries fencing, unfencing and
/// controlled shutdown.
pub async fn broker_heartbeat(
    controller: &Controller,
    req: BrokerHeartbeatRequest,
) -> BrokerHeartbeatResponse {
    match controller
        .heartbeat(
            req.broker_id.0,
            req.broker_epoch,
            req.current_metadata_offset,
            req.want_fence,
            req.want_shut_down,
        )
        .await
    {
        Ok(r) => BrokerHeartbeatResponse::default()
            .with_is_caught_up(r.caught_up)
            .with_is_fenced(r.fenced)
            .with_should_shut_down(r.should_shut_down),
        Err(e) => BrokerHeartbeatResponse::default()
            .with_error_code(e.code)
            .with_is_fenced(true),
    }
}

/// AlterPartition (controller listener): the ISR changes a partition leader asks for.
/// v2 carries member ids only, v3 their broker epochs too (KIP-903).
pub async fn alter_partition(
    controller: &Controller,
    req: AlterPartitionRequest,
    version: i16,
) -> AlterPartitionResponse {
    let mut changes = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            let new_isr = if version >= 3 {
                p.new_isr_with_epochs
                    .iter()
                    .map(|b| (b.broker_id.0, b.broker_epoch))
                    .collect()
            } else {
                p.new_isr.iter().map(|b| (b.0, -1)).collect()
            };
            changes.push(crate::metadata::isr::IsrChange {
                topic_id: t.topic_id,
                partition: p.partition_index,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                new_isr,
            });
        }
    }
    let outcomes = match controller
        .alter_partition(req.broker_id.0, req.broker_epoch, &changes)
        .await
    {
        Ok(o) => o,
        Err(e) => return AlterPartitionResponse::default().with_error_code(e.code),
    };
    let mut topics: Vec<AlterTopic> = Vec::new();
    for (c, outcome) in changes.iter().zip(outcomes) {
        let data = match outcome {
            Ok(p) => AlterPartitionData::default()
                .with_partition_index(c.partition)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_isr(p.isr.iter().copied().map(BrokerId).collect())
                .with_partition_epoch(p.partition_epoch),
            Err((code, _)) => AlterPartitionData::default()
                .with_partition_index(c.partition)
                .with_error_code(code),
        };
        match topics.iter_mut().find(|t| t.topic_id == c.topic_id) {
            Some(t) => t.partitions.push(data),
            None => topics.push(
                AlterTopic::default()
                    .with_topic_id(c.topic_id)
                    .with_partitions(vec![data]),
            ),
        }
    }
    AlterPartitionResponse::default().with_topics(topics)
}
