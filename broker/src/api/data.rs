//! The data path besides Fetch (api/fetch.rs): Produce, ListOffsets, DeleteRecords,
//! OffsetForLeaderEpoch and the producer-id APIs.

use super::msg;
use crate::node::Broker;
use crate::protocol::codes;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    AllocateProducerIdsRequest, AllocateProducerIdsResponse, DeleteRecordsRequest,
    DeleteRecordsResponse, InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest,
    ListOffsetsResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProduceRequest,
    ProduceResponse, ProducerId,
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

/// KIP-320: a request that names the leader epoch it expects is refused when this
/// broker's is newer (FENCED_LEADER_EPOCH: the sender is behind) or older
/// (UNKNOWN_LEADER_EPOCH: this broker is behind); -1 means "not checked".
pub(super) fn leader_epoch_error(p: &crate::partition::Partition, expected: i32) -> Option<i16> {
    let current = p.leader_epoch();
    match expected {
        e if e < 0 || e == current => None,
        e if e < current => Some(codes::FENCED_LEADER_EPOCH),
        _ => Some(codes::UNKNOWN_LEADER_EPOCH),
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
pub(super) fn not_hosted_code(broker: &Broker, topic: &str, partition: i32) -> i16 {
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
