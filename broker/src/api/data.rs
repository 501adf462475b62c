//! The data path: Produce, Fetch (with long polling), ListOffsets and DeleteRecords.

use super::msg;
use crate::log::LogError;
use crate::node::Broker;
use crate::partition::selector::{self, ReplicaSelector, ReplicaView};
use crate::protocol::codes;
use bytes::Bytes;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::fetch_response::{
    EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    AllocateProducerIdsRequest, AllocateProducerIdsResponse, DeleteRecordsRequest,
    DeleteRecordsResponse, FetchRequest, FetchResponse, InitProducerIdRequest,
    InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, ProduceRequest, ProduceResponse, ProducerId,
};
use std::time::Duration;

/// Produce: validate and append each partition's batches. acks=0 gets no response, acks=1
/// is answered after the leader's append, acks=all once the high watermark covers the
/// batch (every ISR member has it) or at the request's timeout with REQUEST_TIMED_OUT.
pub async fn produce(
    broker: &Broker,
    req: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    let acks = req.acks;
    let acks_valid = matches!(acks, -1..=1);
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(req.timeout_ms.clamp(0, 900_000) as u64);
    let mut responses = Vec::with_capacity(req.topic_data.len());
    // acks=all partitions appended and waiting for the ISR: (topic, response index, partition,
    // the offset the high watermark must reach).
    let mut waiting = Vec::new();
    for topic in req.topic_data {
        let mut partition_responses = Vec::with_capacity(topic.partition_data.len());
        for pd in topic.partition_data {
            let mut resp = PartitionProduceResponse::default()
                .with_index(pd.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let mut record_errors = Vec::new();
            let outcome: Result<_, (i16, String)> = if !acks_valid {
                Err((
                    codes::INVALID_REQUIRED_ACKS,
                    format!("acks must be -1, 0 or 1, not {acks}"),
                ))
            } else if topic.name.0.as_str() == crate::group::OFFSETS_TOPIC {
                // Only the group coordinator writes its records there, as in Kafka.
                Err((
                    codes::INVALID_TOPIC_EXCEPTION,
                    format!("Cannot append to internal topic {}", topic.name.0.as_str()),
                ))
            } else if let Some(p) = broker.replicas.leader_of(&topic.name.0, pd.index) {
                let records = pd.records.unwrap_or_default();
                if version < 7
                    && crate::log::batch::any_batch_with_codec(&records, crate::log::codec::ZSTD)
                {
                    // As Kafka: zstd came with Produce v7.
                    Err((
                        codes::UNSUPPORTED_COMPRESSION_TYPE,
                        "Produce requests with ZStandard compression must be version 7 or later"
                            .to_string(),
                    ))
                } else {
                    broker
                        .replicas
                        .append(&p, &records, acks)
                        .map(|info| (info, p.log_start_offset(), p.clone()))
                        .map_err(|e| {
                            record_errors = e.record_errors();
                            (e.error_code(), e.to_string())
                        })
                }
            } else {
                let code = not_hosted_code(broker, &topic.name.0, pd.index);
                Err((
                    code,
                    if code == codes::NOT_LEADER_OR_FOLLOWER {
                        "This server is not the leader for that topic-partition.".to_string()
                    } else {
                        "This server does not host this topic-partition.".to_string()
                    },
                ))
            };
            match outcome {
                Ok((info, log_start, p)) => {
                    resp = resp
                        .with_base_offset(info.base_offset)
                        .with_log_append_time_ms(info.log_append_time_ms)
                        .with_log_start_offset(log_start);
                    if acks == -1 {
                        waiting.push((responses.len(), partition_responses.len(), p, info));
                    }
                }
                Err((code, message)) => {
                    if code == codes::KAFKA_STORAGE_ERROR {
                        // Logged at error level by the partition when the failure starts.
                        broker.metrics.storage_error("write_failed");
                    }
                    tracing::debug!(topic = %topic.name.0, partition = pd.index, code, %message, "produce refused");
                    resp = resp.with_error_code(code);
                    if version >= 8 {
                        resp = resp.with_error_message(msg(message)).with_record_errors(
                            record_errors
                                .into_iter()
                                .map(|(index, why)| {
                                    BatchIndexAndErrorMessage::default()
                                        .with_batch_index(index)
                                        .with_batch_index_error_message(msg(why))
                                })
                                .collect(),
                        );
                    }
                }
            }
            partition_responses.push(resp);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partition_responses),
        );
    }
    for (t, i, p, info) in waiting {
        let failure = await_isr(broker, &p, info.last_offset + 1, deadline).await;
        if let Some((code, message)) = failure {
            let resp = &mut responses[t].partition_responses[i];
            resp.error_code = code;
            resp.base_offset = -1;
            if version >= 8 {
                resp.error_message = msg(message);
            }
        }
    }
    (acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

/// Waits until the high watermark of `p` reaches `end` (acks=all). `None` once it has;
/// the error otherwise: the leadership moved, the deadline passed, or the ISR shrank below
/// min.insync.replicas while the batch was replicated.
pub(crate) async fn await_isr(
    broker: &Broker,
    p: &crate::partition::Partition,
    end: i64,
    deadline: tokio::time::Instant,
) -> Option<(i16, String)> {
    let mut hw = p.subscribe_high_watermark();
    let epoch = p.leader_epoch();
    loop {
        hw.mark_unchanged();
        if p.leader() != broker.node_id || p.leader_epoch() != epoch {
            return Some((
                codes::NOT_LEADER_OR_FOLLOWER,
                "Leadership moved before the in-sync replicas had the batch.".into(),
            ));
        }
        if p.high_watermark() >= end {
            let isr = p.isr().len() as i32;
            let min = p.log_config().min_insync_replicas;
            return (isr < min).then(|| {
                (
                    codes::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                    format!("The batch was written with {isr} in-sync replicas, fewer than min.insync.replicas {min}."),
                )
            });
        }
        if tokio::time::timeout_at(deadline, hw.changed())
            .await
            .is_err()
        {
            return Some((
                codes::REQUEST_TIMED_OUT,
                "The in-sync replicas did not all have the batch before the request timed out."
                    .into(),
            ));
        }
    }
}

/// Fetch: read committed data from each partition; wait up to max_wait_ms for min_bytes.
/// Fetch sessions (KIP-227) are not kept: every response has session id 0, which clients
/// take as "sessions unsupported" and answer with full fetch requests.
///
/// A consumer may read from a follower (KIP-392, Fetch v11+), up to the high watermark that
/// follower knows; the leader sends a consumer naming its rack to a replica there when
/// `replica.selector.class` is the rack-aware selector. `listener` is the one the request
/// came in on: a replica the consumer cannot reach on it is never offered.
pub async fn fetch(
    broker: &Broker,
    listener: &str,
    req: FetchRequest,
    version: i16,
) -> FetchResponse {
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(req.max_wait_ms.clamp(0, 300_000) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = response_bytes_cap(broker, &req, version);
    let read_committed = req.isolation_level == 1;
    let image = broker.controller.image();
    // A follower replica's fetch (KIP-903 moved its id into ReplicaState at v15).
    let (follower, follower_epoch) = if version >= 15 {
        (
            req.replica_state.replica_id.0,
            req.replica_state.replica_epoch,
        )
    } else {
        (req.replica_id.0, -1)
    };
    let me = broker.replicas.node_id();
    let from_follower_allowed = follower < 0 && version >= 11;
    let selector = if follower < 0 && version >= 11 && !req.rack_id.is_empty() {
        broker.config.replica_selector()
    } else {
        ReplicaSelector::Leader
    };
    let mut appends = broker.replicas.subscribe_appends();
    loop {
        appends.mark_unchanged();
        let mut total = 0usize;
        let mut any_error = false;
        let mut responses = Vec::with_capacity(req.topics.len());
        for topic in &req.topics {
            let name: Option<String> = if version >= 13 {
                image.topic_by_id(&topic.topic_id).map(|t| t.name.clone())
            } else {
                Some(topic.topic.0.to_string())
            };
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            for fp in &topic.partitions {
                let mut pd = PartitionData::default()
                    .with_partition_index(fp.partition)
                    .with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_log_start_offset(-1)
                    .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1))
                    .with_records(Some(Bytes::new()));
                if read_committed {
                    pd = pd.with_aborted_transactions(Some(Vec::new()));
                }
                let partition = name
                    .as_deref()
                    .and_then(|n| broker.replicas.get(n, fp.partition))
                    .filter(|p| p.leader() == me || from_follower_allowed);
                match partition {
                    None => {
                        any_error = true;
                        pd = pd.with_error_code(match name.as_deref() {
                            None if version >= 13 => codes::UNKNOWN_TOPIC_ID,
                            None => codes::UNKNOWN_TOPIC_OR_PARTITION,
                            Some(n) => not_hosted_code(broker, n, fp.partition),
                        });
                    }
                    Some(p) => {
                        let limit = (fp.partition_max_bytes.max(0) as usize)
                            .min(max_bytes.saturating_sub(total));
                        if let Some(code) = leader_epoch_error(&p, fp.current_leader_epoch) {
                            any_error = true;
                            partitions.push(pd.with_error_code(code));
                            continue;
                        }
                        if follower >= 0 && fp.last_fetched_epoch >= 0 {
                            // KIP-279: a follower whose log diverges from this one is told
                            // where this log's copy of its last epoch ends, and truncates.
                            let (epoch, end) = p.end_offset_for_epoch(fp.last_fetched_epoch);
                            if epoch < fp.last_fetched_epoch || end < fp.fetch_offset {
                                any_error = true;
                                partitions.push(
                                    pd.with_high_watermark(p.high_watermark())
                                        .with_last_stable_offset(p.high_watermark())
                                        .with_log_start_offset(p.log_start_offset())
                                        .with_diverging_epoch(
                                            EpochEndOffset::default()
                                                .with_epoch(epoch)
                                                .with_end_offset(end),
                                        ),
                                );
                                continue;
                            }
                        }
                        if follower >= 0 {
                            let progress = p.on_follower_fetch(
                                follower,
                                follower_epoch,
                                fp.fetch_offset,
                                broker.replicas.now_ms(),
                            );
                            if progress.high_watermark_moved {
                                broker.replicas.wake_fetches();
                            }
                            if progress.may_join_isr {
                                broker.replicas.wake_isr();
                            }
                        } else if p.leader() == me && selector != ReplicaSelector::Leader {
                            if let Some(preferred) = preferred_read_replica(
                                &image,
                                &p,
                                selector,
                                &req.rack_id,
                                listener,
                                fp.fetch_offset,
                                broker.replicas.now_ms(),
                            ) {
                                // The consumer is sent to `preferred` and reads nothing here.
                                partitions.push(
                                    pd.with_high_watermark(p.high_watermark())
                                        .with_last_stable_offset(p.high_watermark())
                                        .with_log_start_offset(p.log_start_offset())
                                        .with_preferred_read_replica(
                                            kafka_protocol::messages::BrokerId(preferred),
                                        ),
                                );
                                any_error = true;
                                continue;
                            }
                        }
                        if follower < 0 && p.leader() == me && !p.high_watermark_settled() {
                            // KIP-207: a new leader's high watermark has not yet reached the
                            // old leader's; showing it would move consumers' view backwards.
                            any_error = true;
                            partitions.push(pd.with_error_code(codes::OFFSET_NOT_AVAILABLE));
                            continue;
                        }
                        let throttled = follower >= 0 && p.leader_throttled_for(follower);
                        let quota = &broker.replicas.quotas().leader;
                        if throttled && quota.exceeded(broker.replicas.now_ms()) {
                            // A throttled move waits for the leader's rate; the follower
                            // hears the high watermark and asks again.
                            partitions.push(
                                pd.with_high_watermark(p.high_watermark())
                                    .with_last_stable_offset(p.high_watermark())
                                    .with_log_start_offset(p.log_start_offset()),
                            );
                            continue;
                        }
                        let read = if follower >= 0 {
                            p.read_for_follower(fp.fetch_offset, limit, total == 0)
                                .inspect(|r| {
                                    if throttled {
                                        quota.record(r.records.len(), broker.replicas.now_ms());
                                    }
                                })
                        } else {
                            p.read(fp.fetch_offset, limit, total == 0)
                        };
                        match read {
                            Ok(read)
                                if version < 10
                                    && follower < 0
                                    && crate::log::batch::any_batch_with_codec(
                                        &read.records,
                                        crate::log::codec::ZSTD,
                                    ) =>
                            {
                                // As Kafka: a consumer that predates zstd (Fetch v10) is
                                // told, not sent batches it may not decode.
                                any_error = true;
                                pd = pd.with_error_code(codes::UNSUPPORTED_COMPRESSION_TYPE);
                            }
                            Ok(read) => {
                                total += read.records.len();
                                if follower < 0 {
                                    broker
                                        .metrics
                                        .consumer_fetched(p.leader() == me, read.records.len());
                                }
                                pd = pd
                                    .with_high_watermark(read.high_watermark)
                                    .with_last_stable_offset(read.high_watermark)
                                    .with_log_start_offset(read.log_start_offset)
                                    .with_records(Some(read.records));
                            }
                            Err(LogError::OffsetOutOfRange { .. })
                                if p.leader() != me
                                    && fp.current_leader_epoch < 0
                                    && fp.fetch_offset > p.log_start_offset() =>
                            {
                                // A v11 consumer without KIP-320 epochs may be on a follower
                                // by mistake (stale metadata) at an offset the follower lacks
                                // yet: Kafka answers nothing rather than a reset.
                                pd = pd
                                    .with_high_watermark(p.high_watermark())
                                    .with_last_stable_offset(p.high_watermark())
                                    .with_log_start_offset(p.log_start_offset());
                            }
                            Err(LogError::OffsetOutOfRange { .. }) => {
                                any_error = true;
                                pd = pd
                                    .with_error_code(codes::OFFSET_OUT_OF_RANGE)
                                    .with_high_watermark(p.high_watermark())
                                    .with_last_stable_offset(p.high_watermark())
                                    .with_log_start_offset(p.log_start_offset());
                            }
                            Err(e) => {
                                any_error = true;
                                pd = pd.with_error_code(read_error_code(broker, &p, &e));
                            }
                        }
                    }
                }
                partitions.push(pd);
            }
            responses.push(
                FetchableTopicResponse::default()
                    .with_topic(topic.topic.clone())
                    .with_topic_id(topic.topic_id)
                    .with_partitions(partitions),
            );
        }
        let done = total >= min_bytes.max(1) || any_error || req.topics.is_empty();
        if done || tokio::time::Instant::now() >= deadline {
            return FetchResponse::default().with_responses(responses);
        }
        // Woken by an append or by the deadline; either way the next pass decides. A closed
        // channel (broker shutting down) also ends the wait.
        let _ = tokio::time::timeout_at(deadline, appends.changed()).await;
    }
}

/// KIP-320: a request that names the leader epoch it expects is refused when this
/// broker's is newer (FENCED_LEADER_EPOCH: the sender is behind) or older
/// (UNKNOWN_LEADER_EPOCH: this broker is behind); -1 means "not checked".
fn leader_epoch_error(p: &crate::partition::Partition, expected: i32) -> Option<i16> {
    let current = p.leader_epoch();
    match expected {
        e if e < 0 || e == current => None,
        e if e < current => Some(codes::FENCED_LEADER_EPOCH),
        _ => Some(codes::UNKNOWN_LEADER_EPOCH),
    }
}

/// The most record bytes one Fetch response assembles: the request's max_bytes, never more
/// than `fetch.max.bytes` for a consumer or `replica.fetch.response.max.bytes` for a follower
/// (as Kafka caps them), so a ~200-byte request asking for 2 GiB cannot make the broker buffer
/// it. (KIP-74's first-batch exception still returns one batch larger than the cap whole.)
fn response_bytes_cap(broker: &Broker, req: &FetchRequest, version: i16) -> usize {
    let replica_id = if version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    let broker_cap = if replica_id >= 0 {
        broker.config.replica_fetch_response_max_bytes()
    } else {
        broker.config.fetch_max_bytes()
    };
    if req.max_bytes <= 0 {
        broker_cap
    } else {
        (req.max_bytes as usize).min(broker_cap)
    }
}

/// The Fetch error for a failed read: CORRUPT_MESSAGE for damaged data (logged and counted
/// once per damaged position by the log), KAFKA_STORAGE_ERROR for a failing disk.
fn read_error_code(broker: &Broker, p: &crate::partition::Partition, e: &LogError) -> i16 {
    match e {
        LogError::Corrupt { first, .. } => {
            if *first {
                broker.metrics.storage_error("corrupt_segment");
            }
            codes::CORRUPT_MESSAGE
        }
        _ => {
            broker.metrics.storage_error("read_failed");
            tracing::error!(cause = %e, topic = %p.topic, partition = p.index, "fetch read failed");
            codes::KAFKA_STORAGE_ERROR
        }
    }
}

/// ListOffsets: earliest (-2), latest (-1), max timestamp (-3), earliest local (-4, the
/// same as earliest without tiered storage), or the first offset at a timestamp.
/// OffsetForLeaderEpoch (KIP-101, KIP-320): where each asked-for leader epoch ends in
/// this leader's log — the start of the next epoch, or the log end for the latest — so a
/// consumer (or replica) can check after a leader change that its position is still on
/// the leader's history. An epoch older than the log's first gives -1/-1, as in Kafka.
pub fn offset_for_leader_epoch(
    broker: &Broker,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    use kafka_protocol::messages::offset_for_leader_epoch_response::{
        EpochEndOffset as Answer, OffsetForLeaderTopicResult,
    };
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let out = Answer::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    match broker.replicas.leader_of(&t.topic, p.partition) {
                        None => out.with_error_code(not_hosted_code(broker, &t.topic, p.partition)),
                        Some(part) => match leader_epoch_error(&part, p.current_leader_epoch) {
                            Some(code) => out.with_error_code(code),
                            None => {
                                let (epoch, end) = part.end_offset_for_epoch(p.leader_epoch);
                                out.with_leader_epoch(epoch).with_end_offset(end)
                            }
                        },
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

pub fn list_offsets(broker: &Broker, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|lp| {
                    let mut r = ListOffsetsPartitionResponse::default()
                        .with_partition_index(lp.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1)
                        .with_leader_epoch(-1);
                    let Some(p) = broker.replicas.leader_of(&t.name.0, lp.partition_index) else {
                        return r.with_error_code(not_hosted_code(
                            broker,
                            &t.name.0,
                            lp.partition_index,
                        ));
                    };
                    if version >= 4 {
                        r = r.with_leader_epoch(p.leader_epoch());
                        if let Some(code) = leader_epoch_error(&p, lp.current_leader_epoch) {
                            return r.with_error_code(code);
                        }
                    }
                    if lp.timestamp == -1 && !p.high_watermark_settled() {
                        // KIP-207: the latest offset is not final until the new leader's
                        // high watermark reaches the old one's.
                        return r.with_error_code(codes::OFFSET_NOT_AVAILABLE);
                    }
                    let found = match lp.timestamp {
                        -1 => Ok(Some((p.high_watermark(), -1))),
                        -2 | -4 => Ok(Some((p.log_start_offset(), -1))),
                        -3 => p.max_timestamp_offset(),
                        ts if ts >= 0 => p.offset_for_timestamp(ts),
                        _ => return r.with_error_code(codes::INVALID_REQUEST),
                    };
                    match found {
                        Ok(Some((offset, ts))) => r.with_offset(offset).with_timestamp(ts),
                        Ok(None) => r,
                        Err(e) => {
                            tracing::error!(cause = %e, "list offsets failed");
                            r.with_error_code(codes::KAFKA_STORAGE_ERROR)
                        }
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// DeleteRecords: advance each partition's log start offset (at most to its high watermark).
pub fn delete_records(broker: &Broker, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|dp| {
                    let r = DeleteRecordsPartitionResult::default()
                        .with_partition_index(dp.partition_index)
                        .with_low_watermark(-1);
                    match broker.replicas.leader_of(&t.name.0, dp.partition_index) {
                        None => r.with_error_code(not_hosted_code(
                            broker,
                            &t.name.0,
                            dp.partition_index,
                        )),
                        Some(p) => {
                            match p.delete_records_before(dp.offset, broker.replicas.now_ms()) {
                                Ok(low) => r.with_low_watermark(low),
                                Err(code) => r.with_error_code(code),
                            }
                        }
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}

/// InitProducerId for the idempotent producer. A null transactional id gets a fresh producer
/// id at epoch 0; one that carries a producer id this cluster handed out and its epoch (v3+,
/// KIP-360) gets the epoch bumped, or a fresh id when the epoch is exhausted. A transactional
/// id is refused with TRANSACTIONAL_ID_AUTHORIZATION_FAILED: transactions are not built,
/// and clients take that code as fatal (librdkafka does, per the e2e test; the Java
/// client's transaction manager does too), so a transactional producer fails at once
/// instead of retrying until it times out. (The response has no message field; the reason
/// is logged.)
pub async fn init_producer_id(
    broker: &Broker,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(txn_id) = &req.transactional_id {
        tracing::info!(transactional_id = %txn_id.0.as_str(), "refused InitProducerId: transactions are not supported by Strom");
        return resp.with_error_code(codes::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    }
    let (id, epoch) = (req.producer_id.0, req.producer_epoch);
    let issued = (0..broker.controller.image().next_producer_id).contains(&id);
    // Epoch i16::MAX is left unused so a bumped epoch is always greater than the last one.
    if issued && (0..i16::MAX - 1).contains(&epoch) {
        return resp
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch + 1);
    }
    match broker.producer_ids.next_id(&broker.controller).await {
        Ok(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            tracing::error!(cause = %e.message, "allocating a producer id block failed");
            resp.with_error_code(e.code)
        }
    }
}

/// AllocateProducerIds (controller listener): a block of producer ids for a broker that
/// is not the active controller, recorded in the metadata log before it is handed out.
pub async fn allocate_producer_ids(
    broker: &Broker,
    _req: AllocateProducerIdsRequest,
) -> AllocateProducerIdsResponse {
    match broker
        .controller
        .allocate_producer_ids(crate::txn::PRODUCER_ID_BLOCK_SIZE)
        .await
    {
        Ok(block) => AllocateProducerIdsResponse::default()
            .with_producer_id_start(ProducerId(block.start))
            .with_producer_id_len((block.end - block.start) as i32),
        Err(e) => AllocateProducerIdsResponse::default()
            .with_error_code(e.code)
            .with_producer_id_start(ProducerId(-1)),
    }
}

/// The error for a partition this broker has no replica of: NOT_LEADER_OR_FOLLOWER when
/// the partition exists (it lives on another broker, or has no leader right now), so
/// clients refresh their metadata and go to the leader; UNKNOWN_TOPIC_OR_PARTITION when
/// the cluster does not know it.
fn not_hosted_code(broker: &Broker, topic: &str, partition: i32) -> i16 {
    if broker.replicas.is_offline(topic, partition) {
        return codes::KAFKA_STORAGE_ERROR;
    }
    let image = broker.controller.image();
    let exists = image
        .topics
        .get(topic)
        .is_some_and(|t| t.partitions.contains_key(&partition));
    if exists {
        codes::NOT_LEADER_OR_FOLLOWER
    } else {
        codes::UNKNOWN_TOPIC_OR_PARTITION
    }
}

/// The replica a consumer in `rack` should read `p` from instead of this leader, if the
/// selector finds one: a registered, unfenced replica reachable on `listener` whose log
/// holds `offset`.
fn preferred_read_replica(
    image: &crate::metadata::MetadataImage,
    p: &crate::partition::Partition,
    selector: ReplicaSelector,
    rack: &str,
    listener: &str,
    offset: i64,
    now_ms: i64,
) -> Option<i32> {
    let rack_of = |id: i32| image.brokers.get(&id).and_then(|b| b.rack.as_deref());
    let leader = ReplicaView {
        id: p.leader(),
        rack: rack_of(p.leader()),
        log_end_offset: p.log_end_offset(),
        since_caught_up_ms: 0,
    };
    let followers: Vec<ReplicaView<'_>> = p
        .followers_holding(offset, now_ms)
        .into_iter()
        .filter(|(id, _, _)| {
            image
                .brokers
                .get(id)
                .is_some_and(|b| !b.fenced && b.endpoint(listener).is_some())
        })
        .map(|(id, leo, since)| ReplicaView {
            id,
            rack: rack_of(id),
            log_end_offset: leo,
            since_caught_up_ms: since,
        })
        .collect();
    selector::select(selector, rack, &leader, &followers)
}

/// DescribeProducers (KIP-664, `kafka-transactions describe-producers`): the idempotent
/// producers the leader of each asked partition keeps state for. Strom has no
/// transactions yet, so no producer has a coordinator epoch or an open transaction (-1).
pub fn describe_producers(
    broker: &Broker,
    req: kafka_protocol::messages::DescribeProducersRequest,
) -> kafka_protocol::messages::DescribeProducersResponse {
    use kafka_protocol::messages::describe_producers_response::{
        PartitionResponse, ProducerState, TopicResponse,
    };
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&index| {
                    let answer = PartitionResponse::default().with_partition_index(index);
                    match broker.replicas.leader_of(&t.name, index) {
                        None => {
                            let code = not_hosted_code(broker, &t.name, index);
                            answer.with_error_code(code)
                        }
                        Some(p) => answer.with_active_producers(
                            p.active_producers()
                                .into_iter()
                                .map(|(id, epoch, last_seq, last_ts)| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(id))
                                        .with_producer_epoch(epoch as i32)
                                        .with_last_sequence(last_seq)
                                        .with_last_timestamp(last_ts)
                                        .with_coordinator_epoch(-1)
                                        .with_current_txn_start_offset(-1)
                                })
                                .collect(),
                        ),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    kafka_protocol::messages::DescribeProducersResponse::default().with_topics(topics)
}
