//! The Fetch handler of consumers and followers: each partition read (or redirected, or
//! refused) on its own, the long poll for min_bytes, and incremental fetch sessions
//! (KIP-227), which decide which partitions a request names and a response carries.

use super::data::{leader_epoch_error, not_hosted_code};
use super::fetch_session::{CachedPartition, FetchContext, PartitionKey, NO_SESSION};
use crate::log::LogError;
use crate::metadata::MetadataImage;
use crate::node::Broker;
use crate::partition::selector::{self, ReplicaSelector, ReplicaView};
use crate::protocol::codes;
use crate::quota::QuotaKind;
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{
    EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::collections::HashMap;
use std::time::Duration;

/// Fetch: read committed data from each partition; wait up to max_wait_ms for min_bytes.
///
/// From v7 a fetcher may keep a session (KIP-227): a full fetch with epoch 0 creates one
/// when the cache has a slot, and the following incremental fetches name only the
/// partitions they add, change or forget, and are answered only with partitions that have
/// records, an error or moved offsets. Partitions answered in an incremental response move
/// to the end of the session's order, so that with a bounded response every partition
/// gets its turn.
///
/// A consumer may read from a follower (KIP-392, Fetch v11+), up to the high watermark that
/// follower knows; the leader sends a consumer naming its rack to a replica there when
/// `replica.selector.class` is the rack-aware selector. `listener` is the one the request
/// came in on: a replica the consumer cannot reach on it is never offered.
///
/// A consumer over its `consumer_byte_rate` quota is answered at once with no partitions
/// and the throttle (its session, if any, unchanged but for the epoch), as Kafka answers;
/// otherwise the response's size counts against the quota, and a response is never larger
/// than the quota's whole window.
pub async fn fetch(
    broker: &Broker,
    listener: &str,
    client_id: &str,
    req: FetchRequest,
    version: i16,
) -> FetchResponse {
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(req.max_wait_ms.clamp(0, 300_000) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let mut max_bytes = response_bytes_cap(broker, &req, version);
    // A follower replica's fetch (KIP-903 moved its id into ReplicaState at v15).
    let (follower, follower_epoch) = if version >= 15 {
        (
            req.replica_state.replica_id.0,
            req.replica_state.replica_epoch,
        )
    } else {
        (req.replica_id.0, -1)
    };
    let uses_topic_ids = version >= 13;
    let key = |topic_id: uuid::Uuid, topic: &TopicName, partition: i32| PartitionKey {
        topic_id: if uses_topic_ids {
            topic_id
        } else {
            uuid::Uuid::nil()
        },
        topic: if uses_topic_ids {
            StrBytes::default()
        } else {
            topic.0.clone()
        },
        partition,
    };
    let now_ms = broker.replicas.now_ms();
    // Before v7 a request has no session fields: the defaults (0, -1) mean sessionless.
    let context = broker.fetch_sessions.open(
        req.session_id,
        req.session_epoch,
        uses_topic_ids,
        req.topics.iter().flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (key(t.topic_id, &t.topic, p.partition), p.clone()))
        }),
        req.forgotten_topics_data.iter().flat_map(|t| {
            t.partitions
                .iter()
                .map(move |&p| key(t.topic_id, &t.topic, p))
        }),
        now_ms,
    );
    let mut context = match context {
        Ok(c) => c,
        Err(code) => {
            return FetchResponse::default()
                .with_error_code(code)
                .with_session_id(NO_SESSION)
        }
    };
    let mut wanted = match &mut context {
        FetchContext::Incremental { partitions, .. } => std::mem::take(partitions),
        FetchContext::Sessionless | FetchContext::Full => req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    CachedPartition::new(key(t.topic_id, &t.topic, p.partition), p.clone())
                })
            })
            .collect(),
    };

    let quota = if follower < 0 {
        broker.quotas.sensor(QuotaKind::Fetch, client_id, now_ms)
    } else {
        None
    };
    if let Some(q) = &quota {
        let throttle_ms = q.throttle_now(now_ms);
        if throttle_ms > 0 {
            let session_id = match context {
                FetchContext::Incremental { id, epoch, .. } => {
                    broker.fetch_sessions.store(id, epoch, wanted);
                    id
                }
                // A full fetch creates no session when throttled: the next one is full too.
                FetchContext::Sessionless | FetchContext::Full => NO_SESSION,
            };
            return FetchResponse::default()
                .with_session_id(session_id)
                .with_throttle_time_ms(throttle_ms as i32);
        }
        max_bytes = max_bytes.min(q.max_in_window().max(1.0) as usize);
    }

    let image = broker.controller.image();
    let serve = Serve {
        broker,
        image: &image,
        listener,
        me: broker.replicas.node_id(),
        follower,
        follower_epoch,
        from_follower_allowed: follower < 0 && version >= 11,
        selector: if follower < 0 && version >= 11 && !req.rack_id.is_empty() {
            broker.config.replica_selector()
        } else {
            ReplicaSelector::Leader
        },
        rack_id: &req.rack_id,
        version,
        read_committed: req.isolation_level == 1,
    };
    // Topic names by id (v13+), looked up once per topic of the request.
    let mut names: HashMap<uuid::Uuid, Option<String>> = HashMap::new();
    let mut appends = broker.replicas.subscribe_appends();
    let served = loop {
        appends.mark_unchanged();
        let mut total = 0usize;
        let mut answer_now = false;
        let mut served = Vec::with_capacity(wanted.len());
        for cp in &wanted {
            let name: Option<&str> = if uses_topic_ids {
                names
                    .entry(cp.key.topic_id)
                    .or_insert_with(|| image.topic_by_id(&cp.key.topic_id).map(|t| t.name.clone()))
                    .as_deref()
            } else {
                Some(cp.key.topic.as_str())
            };
            let limit =
                (cp.fetch.partition_max_bytes.max(0) as usize).min(max_bytes.saturating_sub(total));
            let out = serve.partition(name, &cp.fetch, limit, total == 0);
            total += out.bytes;
            answer_now |= out.answer_now;
            served.push(out.data);
        }
        let done = total >= min_bytes.max(1) || answer_now || wanted.is_empty();
        if done || tokio::time::Instant::now() >= deadline {
            break served;
        }
        // Woken by an append or a moved high watermark, the next pass reads again. At the
        // deadline with neither, this pass is the answer: reading every partition again
        // would find the same (for a consumer of many idle partitions, that second pass was
        // half the broker's work). A closed channel (shutting down) also ends the wait.
        match tokio::time::timeout_at(deadline, appends.changed()).await {
            Err(_deadline) => break served,
            Ok(Ok(())) => {}
            Ok(Err(_closed)) => break served,
        }
    };

    let mut response = match context {
        FetchContext::Sessionless => FetchResponse::default()
            .with_session_id(NO_SESSION)
            .with_responses(by_topic(wanted.into_iter().map(|cp| cp.key).zip(served))),
        FetchContext::Full => {
            for (cp, pd) in wanted.iter_mut().zip(&served) {
                cp.update(pd);
            }
            let keys: Vec<PartitionKey> = wanted.iter().map(|cp| cp.key.clone()).collect();
            let id = broker.fetch_sessions.create(
                follower >= 0,
                uses_topic_ids,
                wanted,
                broker.replicas.now_ms(),
            );
            FetchResponse::default()
                .with_session_id(id)
                .with_responses(by_topic(keys.into_iter().zip(served)))
        }
        FetchContext::Incremental { id, epoch, .. } => {
            // Partitions with something to say are answered and move to the end of the
            // session's order; the others stay, in order, at the front.
            let mut answered = Vec::new();
            let mut order = Vec::with_capacity(wanted.len());
            let mut moved = Vec::new();
            for (mut cp, pd) in wanted.into_iter().zip(served) {
                if cp.update(&pd) {
                    answered.push((cp.key.clone(), pd));
                    moved.push(cp);
                } else {
                    order.push(cp);
                }
            }
            order.extend(moved);
            broker.fetch_sessions.store(id, epoch, order);
            FetchResponse::default()
                .with_session_id(id)
                .with_responses(by_topic(answered.into_iter()))
        }
    };
    if let Some(q) = quota {
        use kafka_protocol::protocol::Encodable;
        let size = response.compute_size(version).unwrap_or(0);
        let throttle_ms = q.record(size as f64, broker.replicas.now_ms());
        if throttle_ms > 0 {
            response.throttle_time_ms = throttle_ms as i32;
        }
    }
    response
}

/// Groups partition answers into the response's topics, each topic once, in the order its
/// first partition comes.
fn by_topic(
    answers: impl Iterator<Item = (PartitionKey, PartitionData)>,
) -> Vec<FetchableTopicResponse> {
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut index: HashMap<(uuid::Uuid, StrBytes), usize> = HashMap::new();
    for (key, pd) in answers {
        let same_as_last = topics
            .last()
            .is_some_and(|t| t.topic_id == key.topic_id && t.topic.0 == key.topic);
        let i = if same_as_last {
            topics.len() - 1
        } else {
            *index
                .entry((key.topic_id, key.topic.clone()))
                .or_insert_with(|| {
                    topics.push(
                        FetchableTopicResponse::default()
                            .with_topic(TopicName(key.topic))
                            .with_topic_id(key.topic_id),
                    );
                    topics.len() - 1
                })
        };
        topics[i].partitions.push(pd);
    }
    topics
}

/// What one request fixes for every partition it reads.
struct Serve<'a> {
    broker: &'a Broker,
    image: &'a MetadataImage,
    listener: &'a str,
    me: i32,
    /// The fetching replica's id, or -1 for a consumer.
    follower: i32,
    follower_epoch: i64,
    from_follower_allowed: bool,
    selector: ReplicaSelector,
    rack_id: &'a str,
    version: i16,
    read_committed: bool,
}

/// One partition's answer: what it adds to the response's record bytes, and whether it
/// ends the long poll at once (an error or a redirect).
struct Served {
    data: PartitionData,
    bytes: usize,
    answer_now: bool,
}

impl Served {
    fn now(data: PartitionData) -> Served {
        Served {
            data,
            bytes: 0,
            answer_now: true,
        }
    }
}

impl Serve<'_> {
    /// Reads (at most `limit` bytes, or one whole batch when `first`) or refuses one
    /// partition of the request; `name` is its topic, `None` when the topic id is unknown.
    fn partition(
        &self,
        name: Option<&str>,
        fp: &FetchPartition,
        limit: usize,
        first: bool,
    ) -> Served {
        let broker = self.broker;
        let me = self.me;
        let mut pd = PartitionData::default()
            .with_partition_index(fp.partition)
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            .with_log_start_offset(-1)
            .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1))
            .with_records(Some(Bytes::new()));
        if self.read_committed {
            pd = pd.with_aborted_transactions(Some(Vec::new()));
        }
        let partition = name
            .and_then(|n| broker.replicas.get(n, fp.partition))
            .filter(|p| p.leader() == me || self.from_follower_allowed);
        let Some(p) = partition else {
            return Served::now(pd.with_error_code(match name {
                None if self.version >= 13 => codes::UNKNOWN_TOPIC_ID,
                None => codes::UNKNOWN_TOPIC_OR_PARTITION,
                Some(n) => not_hosted_code(broker, n, fp.partition),
            }));
        };
        // Offsets as this replica knows them, for answers that carry no records.
        let offsets = |pd: PartitionData| {
            pd.with_high_watermark(p.high_watermark())
                .with_last_stable_offset(p.high_watermark())
                .with_log_start_offset(p.log_start_offset())
        };
        if let Some(code) = leader_epoch_error(&p, fp.current_leader_epoch) {
            return Served::now(pd.with_error_code(code));
        }
        let follower = self.follower;
        if follower >= 0 && fp.last_fetched_epoch >= 0 {
            // KIP-279: a follower whose log diverges from this one is told where this
            // log's copy of its last epoch ends, and truncates.
            let (epoch, end) = p.end_offset_for_epoch(fp.last_fetched_epoch);
            if epoch < fp.last_fetched_epoch || end < fp.fetch_offset {
                return Served::now(
                    offsets(pd).with_diverging_epoch(
                        EpochEndOffset::default()
                            .with_epoch(epoch)
                            .with_end_offset(end),
                    ),
                );
            }
        }
        if follower >= 0 {
            let progress = p.on_follower_fetch(
                follower,
                self.follower_epoch,
                fp.fetch_offset,
                broker.replicas.now_ms(),
            );
            if progress.high_watermark_moved {
                broker.replicas.wake_fetches();
            }
            if progress.may_join_isr {
                broker.replicas.wake_isr();
            }
        } else if p.leader() == me && self.selector != ReplicaSelector::Leader {
            if let Some(preferred) = preferred_read_replica(
                self.image,
                &p,
                self.selector,
                self.rack_id,
                self.listener,
                fp.fetch_offset,
                broker.replicas.now_ms(),
            ) {
                // The consumer is sent to `preferred` and reads nothing here.
                return Served::now(
                    offsets(pd)
                        .with_preferred_read_replica(kafka_protocol::messages::BrokerId(preferred)),
                );
            }
        }
        if follower < 0 && p.leader() == me && !p.high_watermark_settled() {
            // KIP-207: a new leader's high watermark has not yet reached the old leader's;
            // showing it would move consumers' view backwards.
            return Served::now(pd.with_error_code(codes::OFFSET_NOT_AVAILABLE));
        }
        let throttled = follower >= 0 && p.leader_throttled_for(follower);
        let quota = &broker.replicas.quotas().leader;
        if throttled && quota.exceeded(broker.replicas.now_ms()) {
            // A throttled move waits for the leader's rate; the follower hears the high
            // watermark and asks again.
            return Served {
                data: offsets(pd),
                bytes: 0,
                answer_now: false,
            };
        }
        let read = if follower >= 0 {
            p.read_for_follower(fp.fetch_offset, limit, first)
                .inspect(|r| {
                    if throttled {
                        quota.record(r.records.len(), broker.replicas.now_ms());
                    }
                })
        } else {
            p.read(fp.fetch_offset, limit, first)
        };
        match read {
            Ok(read)
                if self.version < 10
                    && follower < 0
                    && crate::log::batch::any_batch_with_codec(
                        &read.records,
                        crate::log::codec::ZSTD,
                    ) =>
            {
                // As Kafka: a consumer that predates zstd (Fetch v10) is told, not sent
                // batches it may not decode.
                Served::now(pd.with_error_code(codes::UNSUPPORTED_COMPRESSION_TYPE))
            }
            Ok(read) => {
                if follower < 0 {
                    broker
                        .metrics
                        .consumer_fetched(p.leader() == me, read.records.len());
                }
                Served {
                    bytes: read.records.len(),
                    data: pd
                        .with_high_watermark(read.high_watermark)
                        .with_last_stable_offset(read.high_watermark)
                        .with_log_start_offset(read.log_start_offset)
                        .with_records(Some(read.records)),
                    answer_now: false,
                }
            }
            Err(LogError::OffsetOutOfRange { .. })
                if p.leader() != me
                    && fp.current_leader_epoch < 0
                    && fp.fetch_offset > p.log_start_offset() =>
            {
                // A v11 consumer without KIP-320 epochs may be on a follower by mistake
                // (stale metadata) at an offset the follower lacks yet: Kafka answers
                // nothing rather than a reset.
                Served {
                    data: offsets(pd),
                    bytes: 0,
                    answer_now: false,
                }
            }
            // A consumer hears only the error, with unknown (-1) offsets as from Kafka (it
            // resets with ListOffsets); a Strom follower is also told the leader's log start
            // and high watermark, which it truncates or skips ahead to.
            Err(LogError::OffsetOutOfRange { .. }) if follower < 0 => Served::now(
                pd.with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_log_start_offset(-1)
                    .with_error_code(codes::OFFSET_OUT_OF_RANGE),
            ),
            Err(LogError::OffsetOutOfRange { .. }) => {
                Served::now(offsets(pd).with_error_code(codes::OFFSET_OUT_OF_RANGE))
            }
            Err(e) => Served::now(pd.with_error_code(read_error_code(broker, &p, &e))),
        }
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
