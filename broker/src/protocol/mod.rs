//! The Kafka wire protocol at the broker's edge: the one table of supported API versions,
//! size-prefixed framing (sans-io: a buffer in, "need more" or a frame out), request header
//! and body decoding with kafka-protocol, and response encoding.

pub mod codes;

/// Config resource types of DescribeConfigs, AlterConfigs and IncrementalAlterConfigs.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::protocol::Encodable;

/// Which listener a connection arrived on: clients and brokers on broker listeners (by
/// name: Metadata answers with the addresses of the listener asked on), peers and brokers
/// on the controller listener (Raft traffic and controller APIs are served only there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerKind {
    Broker(std::sync::Arc<str>),
    Controller,
}

/// Every API the broker implements, with the versions it accepts. ApiVersions is built from
/// this table and dispatch refuses anything outside it, so nothing unimplemented is ever
/// advertised. Floors follow Kafka 4.x (KIP-896); ceilings cover current librdkafka,
/// kafka-python and the Java client.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 2, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
];

/// The APIs a controller listener serves: the admin requests brokers forward, broker
/// registration and heartbeats, ISR changes, producer-id blocks, the quorum's description.
pub const CONTROLLER_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::Fetch, 12, 16),
    (ApiKey::FetchSnapshot, 0, 1),
    (ApiKey::BrokerRegistration, 0, 3),
    (ApiKey::BrokerHeartbeat, 0, 1),
    (ApiKey::AlterPartition, 2, 3),
    (ApiKey::AllocateProducerIds, 0, 0),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
];

/// The `throttle_time_ms` field of a response, for the APIs that have one (every API a
/// client sends but DescribeQuorum). Versions without the field do not encode it.
pub fn throttle_time_ms(resp: &mut ResponseKind) -> Option<&mut i32> {
    macro_rules! field {
        ($($kind:ident),* $(,)?) => {
            match resp {
                $(ResponseKind::$kind(r) => Some(&mut r.throttle_time_ms),)*
                _ => None,
            }
        };
    }
    field!(
        Produce,
        Fetch,
        ListOffsets,
        OffsetForLeaderEpoch,
        Metadata,
        ApiVersions,
        CreateTopics,
        DeleteTopics,
        DeleteRecords,
        DescribeConfigs,
        AlterConfigs,
        CreatePartitions,
        IncrementalAlterConfigs,
        ElectLeaders,
        AlterPartitionReassignments,
        ListPartitionReassignments,
        DescribeCluster,
        FindCoordinator,
        JoinGroup,
        SyncGroup,
        Heartbeat,
        LeaveGroup,
        OffsetCommit,
        OffsetFetch,
        ListGroups,
        DescribeGroups,
        DeleteGroups,
        OffsetDelete,
        InitProducerId,
        DescribeLogDirs,
        DescribeProducers,
        DescribeClientQuotas,
        AlterClientQuotas,
    )
}

/// The table of a listener: a controller listener's, or a broker listener's.
pub fn api_table(controller: bool) -> &'static [(ApiKey, i16, i16)] {
    if controller {
        CONTROLLER_APIS
    } else {
        SUPPORTED_APIS
    }
}

/// The version range of an API key in `table`, if the listener implements it.
pub fn supported_versions(
    table: &[(ApiKey, i16, i16)],
    api_key: i16,
) -> Option<(ApiKey, i16, i16)> {
    table.iter().find(|(k, _, _)| *k as i16 == api_key).copied()
}

/// Why a connection is closed instead of answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds socket.request.max.bytes {max}")]
    TooLarge { size: usize, max: usize },
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("unknown or unsupported API key {0}")]
    UnknownApi(i16),
    #[error("unsupported version {version} of API {api}")]
    UnsupportedVersion { api: i16, version: i16 },
    #[error("malformed request header: {0}")]
    BadHeader(String),
    #[error("malformed {api:?} v{version} request body: {cause}")]
    BadBody {
        api: ApiKey,
        version: i16,
        cause: String,
    },
}

/// Looks at the start of `buf` for one size-prefixed frame: `Ok(None)` if more bytes are
/// needed, `Ok(Some(n))` if the first `4 + n` bytes hold a whole frame.
pub fn check_frame(buf: &[u8], max_size: usize) -> Result<Option<usize>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = (&buf[..4]).get_i32();
    if size < 0 || size as usize > max_size {
        return Err(FrameError::TooLarge {
            size: size.max(0) as usize,
            max: max_size,
        });
    }
    let size = size as usize;
    Ok((buf.len() >= 4 + size).then_some(size))
}

/// A decoded request.
#[derive(Debug)]
pub enum Request {
    Api {
        header: RequestHeader,
        api_key: ApiKey,
        body: Box<RequestKind>,
    },
    /// An ApiVersions request of a version newer than ours: per KIP-511 it is answered in
    /// the v0 form with UNSUPPORTED_VERSION and our ranges, so the client can downgrade.
    ApiVersionsTooNew { correlation_id: i32 },
}

/// Decodes one frame's payload (without the size prefix).
pub fn decode_request(
    mut frame: Bytes,
    table: &[(ApiKey, i16, i16)],
) -> Result<Request, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::TooShort(frame.len()));
    }
    let api = (&frame[0..2]).get_i16();
    let version = (&frame[2..4]).get_i16();
    let correlation_id = (&frame[4..8]).get_i32();
    let (api_key, min, max) = supported_versions(table, api).ok_or(FrameError::UnknownApi(api))?;
    if version > max && api_key == ApiKey::ApiVersions {
        return Ok(Request::ApiVersionsTooNew { correlation_id });
    }
    if version < min || version > max {
        return Err(FrameError::UnsupportedVersion { api, version });
    }
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(|e| FrameError::BadHeader(e.to_string()))?;
    let body =
        RequestKind::decode(api_key, &mut frame, version).map_err(|e| FrameError::BadBody {
            api: api_key,
            version,
            cause: e.to_string(),
        })?;
    Ok(Request::Api {
        header,
        api_key,
        body: Box::new(body),
    })
}

/// Encodes a response frame (size prefix, header, body).
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, api_key.response_header_version(version))?;
    body.encode(&mut buf, version)?;
    let len = (buf.len() - 4) as i32;
    (&mut buf[..4]).put_i32(len);
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_need_their_whole_length() {
        assert_eq!(check_frame(&[0, 0], 100), Ok(None));
        assert_eq!(check_frame(&[0, 0, 0, 3, 1, 2], 100), Ok(None));
        assert_eq!(check_frame(&[0, 0, 0, 2, 1, 2], 100), Ok(Some(2)));
        assert_eq!(
            check_frame(&[0, 0, 1, 0], 100),
            Err(FrameError::TooLarge {
                size: 256,
                max: 100
            })
        );
        assert!(check_frame(&[0xff, 0xff, 0xff, 0xff], 100).is_err());
    }

    #[test]
    fn refuses_unknown_apis_versions_and_garbage() {
        let frame = |api: i16, version: i16, rest: &[u8]| {
            let mut b = BytesMut::new();
            b.put_i16(api);
            b.put_i16(version);
            b.put_i32(7);
            b.put_slice(rest);
            b.freeze()
        };
        assert_eq!(
            decode_request(frame(999, 0, &[]), SUPPORTED_APIS).unwrap_err(),
            FrameError::UnknownApi(999)
        );
        assert_eq!(
            decode_request(frame(0, 2, &[]), SUPPORTED_APIS).unwrap_err(),
            FrameError::UnsupportedVersion { api: 0, version: 2 }
        );
        assert!(matches!(
            decode_request(frame(18, 99, &[]), SUPPORTED_APIS).unwrap(),
            Request::ApiVersionsTooNew { correlation_id: 7 }
        ));
        assert!(decode_request(frame(3, 1, &[0xff; 3]), SUPPORTED_APIS).is_err());
        assert!(decode_request(Bytes::from_static(&[0, 3]), SUPPORTED_APIS).is_err());
    }

    #[test]
    fn hostile_array_counts_are_refused_without_allocating_them() {
        // A Metadata v1 request claiming 2^31-1 topics in a 12-byte frame: the vendored
        // kafka-protocol patch caps the reservation; unpatched, this aborts the process.
        let mut b = BytesMut::new();
        b.put_i16(3);
        b.put_i16(1);
        b.put_i32(5);
        b.put_i16(-1);
        b.put_i32(i32::MAX);
        assert!(matches!(
            decode_request(b.freeze(), SUPPORTED_APIS),
            Err(FrameError::BadBody { .. })
        ));
        // The same for a flexible version's compact array (unsigned varint count).
        let mut b = BytesMut::new();
        b.put_i16(3);
        b.put_i16(12);
        b.put_i32(5);
        b.put_i16(-1);
        b.put_u8(0); // no header tagged fields
        b.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode_request(b.freeze(), SUPPORTED_APIS).is_err());
    }

    /// A seeded mutation fuzzer over valid requests of every supported API and version:
    /// truncations, byte flips and random tails must give an error or a request, never a
    /// panic or an abort. (Deterministic, so a failure reproduces; the seed is printed.)
    #[test]
    fn mutated_frames_never_panic() {
        use kafka_protocol::messages::*;
        let mut seed: u64 = 0x5eed_5170_f00d;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut corpus: Vec<Bytes> = Vec::new();
        for (key, min, max) in SUPPORTED_APIS {
            for v in *min..=*max {
                let mut b = BytesMut::new();
                let header = RequestHeader::default()
                    .with_request_api_key(*key as i16)
                    .with_request_api_version(v)
                    .with_correlation_id(1);
                header
                    .encode(&mut b, key.request_header_version(v))
                    .unwrap();
                let body = match key {
                    ApiKey::Produce => RequestKind::Produce(ProduceRequest::default()),
                    ApiKey::Fetch => RequestKind::Fetch(FetchRequest::default()),
                    ApiKey::ListOffsets => RequestKind::ListOffsets(ListOffsetsRequest::default()),
                    ApiKey::Metadata => RequestKind::Metadata(MetadataRequest::default()),
                    ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
                    ApiKey::CreateTopics => {
                        RequestKind::CreateTopics(CreateTopicsRequest::default())
                    }
                    ApiKey::DeleteTopics => {
                        RequestKind::DeleteTopics(DeleteTopicsRequest::default())
                    }
                    ApiKey::DeleteRecords => {
                        RequestKind::DeleteRecords(DeleteRecordsRequest::default())
                    }
                    ApiKey::DescribeConfigs => {
                        RequestKind::DescribeConfigs(DescribeConfigsRequest::default())
                    }
                    ApiKey::AlterConfigs => {
                        RequestKind::AlterConfigs(AlterConfigsRequest::default())
                    }
                    ApiKey::CreatePartitions => {
                        RequestKind::CreatePartitions(CreatePartitionsRequest::default())
                    }
                    ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(
                        IncrementalAlterConfigsRequest::default(),
                    ),
                    ApiKey::DescribeCluster => {
                        RequestKind::DescribeCluster(DescribeClusterRequest::default())
                    }
                    ApiKey::InitProducerId => {
                        RequestKind::InitProducerId(InitProducerIdRequest::default())
                    }
                    _ => continue,
                };
                body.encode(&mut b, v).unwrap();
                corpus.push(b.freeze());
            }
        }
        assert!(corpus.len() > 50);
        for round in 0..20_000u64 {
            let base = &corpus[(next() % corpus.len() as u64) as usize];
            let mut m = base.to_vec();
            match next() % 4 {
                0 => m.truncate((next() % (m.len() as u64 + 1)) as usize),
                1 => {
                    for _ in 0..1 + next() % 4 {
                        let i = (next() % m.len() as u64) as usize;
                        m[i] = next() as u8;
                    }
                }
                2 => m.extend((0..next() % 64).map(|_| next() as u8)),
                _ => {
                    // A huge length or count somewhere past the header.
                    if m.len() > 10 {
                        let i = 8 + (next() % (m.len() as u64 - 9)) as usize;
                        m[i] = 0x7f;
                        m[i + 1] = 0xff;
                    }
                }
            }
            let result =
                std::panic::catch_unwind(|| decode_request(Bytes::from(m.clone()), SUPPORTED_APIS));
            assert!(result.is_ok(), "round {round}: panic decoding {m:02x?}");
        }
    }

    #[test]
    fn every_advertised_version_is_one_kafka_protocol_can_decode() {
        use kafka_protocol::messages::*;
        use kafka_protocol::protocol::Message;
        for (key, min, max) in SUPPORTED_APIS.iter().chain(CONTROLLER_APIS) {
            let (lo, hi) = match key {
                ApiKey::Produce => (ProduceRequest::VERSIONS.min, ProduceRequest::VERSIONS.max),
                ApiKey::Fetch => (FetchRequest::VERSIONS.min, FetchRequest::VERSIONS.max),
                ApiKey::ListOffsets => (
                    ListOffsetsRequest::VERSIONS.min,
                    ListOffsetsRequest::VERSIONS.max,
                ),
                ApiKey::ElectLeaders => (
                    kafka_protocol::messages::ElectLeadersRequest::VERSIONS.min,
                    kafka_protocol::messages::ElectLeadersRequest::VERSIONS.max,
                ),
                ApiKey::OffsetForLeaderEpoch => (
                    kafka_protocol::messages::OffsetForLeaderEpochRequest::VERSIONS.min,
                    kafka_protocol::messages::OffsetForLeaderEpochRequest::VERSIONS.max,
                ),
                ApiKey::Metadata => (MetadataRequest::VERSIONS.min, MetadataRequest::VERSIONS.max),
                ApiKey::ApiVersions => (
                    ApiVersionsRequest::VERSIONS.min,
                    ApiVersionsRequest::VERSIONS.max,
                ),
                ApiKey::CreateTopics => (
                    CreateTopicsRequest::VERSIONS.min,
                    CreateTopicsRequest::VERSIONS.max,
                ),
                ApiKey::DeleteTopics => (
                    DeleteTopicsRequest::VERSIONS.min,
                    DeleteTopicsRequest::VERSIONS.max,
                ),
                ApiKey::DeleteRecords => (
                    DeleteRecordsRequest::VERSIONS.min,
                    DeleteRecordsRequest::VERSIONS.max,
                ),
                ApiKey::DescribeConfigs => (
                    DescribeConfigsRequest::VERSIONS.min,
                    DescribeConfigsRequest::VERSIONS.max,
                ),
                ApiKey::AlterConfigs => (
                    AlterConfigsRequest::VERSIONS.min,
                    AlterConfigsRequest::VERSIONS.max,
                ),
                ApiKey::CreatePartitions => (
                    CreatePartitionsRequest::VERSIONS.min,
                    CreatePartitionsRequest::VERSIONS.max,
                ),
                ApiKey::IncrementalAlterConfigs => (
                    IncrementalAlterConfigsRequest::VERSIONS.min,
                    IncrementalAlterConfigsRequest::VERSIONS.max,
                ),
                ApiKey::DescribeCluster => (
                    DescribeClusterRequest::VERSIONS.min,
                    DescribeClusterRequest::VERSIONS.max,
                ),
                ApiKey::FindCoordinator => (
                    FindCoordinatorRequest::VERSIONS.min,
                    FindCoordinatorRequest::VERSIONS.max,
                ),
                ApiKey::JoinGroup => (
                    JoinGroupRequest::VERSIONS.min,
                    JoinGroupRequest::VERSIONS.max,
                ),
                ApiKey::SyncGroup => (
                    SyncGroupRequest::VERSIONS.min,
                    SyncGroupRequest::VERSIONS.max,
                ),
                ApiKey::Heartbeat => (
                    HeartbeatRequest::VERSIONS.min,
                    HeartbeatRequest::VERSIONS.max,
                ),
                ApiKey::LeaveGroup => (
                    LeaveGroupRequest::VERSIONS.min,
                    LeaveGroupRequest::VERSIONS.max,
                ),
                ApiKey::OffsetCommit => (
                    OffsetCommitRequest::VERSIONS.min,
                    OffsetCommitRequest::VERSIONS.max,
                ),
                ApiKey::OffsetFetch => (
                    OffsetFetchRequest::VERSIONS.min,
                    OffsetFetchRequest::VERSIONS.max,
                ),
                ApiKey::ListGroups => (
                    ListGroupsRequest::VERSIONS.min,
                    ListGroupsRequest::VERSIONS.max,
                ),
                ApiKey::DescribeGroups => (
                    DescribeGroupsRequest::VERSIONS.min,
                    DescribeGroupsRequest::VERSIONS.max,
                ),
                ApiKey::DeleteGroups => (
                    DeleteGroupsRequest::VERSIONS.min,
                    DeleteGroupsRequest::VERSIONS.max,
                ),
                ApiKey::OffsetDelete => (
                    OffsetDeleteRequest::VERSIONS.min,
                    OffsetDeleteRequest::VERSIONS.max,
                ),
                ApiKey::InitProducerId => (
                    InitProducerIdRequest::VERSIONS.min,
                    InitProducerIdRequest::VERSIONS.max,
                ),
                ApiKey::DescribeQuorum => (
                    kafka_protocol::messages::DescribeQuorumRequest::VERSIONS.min,
                    kafka_protocol::messages::DescribeQuorumRequest::VERSIONS.max,
                ),
                ApiKey::BrokerRegistration => (
                    kafka_protocol::messages::BrokerRegistrationRequest::VERSIONS.min,
                    kafka_protocol::messages::BrokerRegistrationRequest::VERSIONS.max,
                ),
                ApiKey::FetchSnapshot => (
                    kafka_protocol::messages::FetchSnapshotRequest::VERSIONS.min,
                    kafka_protocol::messages::FetchSnapshotRequest::VERSIONS.max,
                ),
                ApiKey::BrokerHeartbeat => (
                    kafka_protocol::messages::BrokerHeartbeatRequest::VERSIONS.min,
                    kafka_protocol::messages::BrokerHeartbeatRequest::VERSIONS.max,
                ),
                ApiKey::AlterPartition => (
                    kafka_protocol::messages::AlterPartitionRequest::VERSIONS.min,
                    kafka_protocol::messages::AlterPartitionRequest::VERSIONS.max,
                ),
                ApiKey::AllocateProducerIds => (
                    kafka_protocol::messages::AllocateProducerIdsRequest::VERSIONS.min,
                    kafka_protocol::messages::AllocateProducerIdsRequest::VERSIONS.max,
                ),
                ApiKey::AlterPartitionReassignments => (
                    kafka_protocol::messages::AlterPartitionReassignmentsRequest::VERSIONS.min,
                    kafka_protocol::messages::AlterPartitionReassignmentsRequest::VERSIONS.max,
                ),
                ApiKey::DescribeLogDirs => (
                    kafka_protocol::messages::DescribeLogDirsRequest::VERSIONS.min,
                    kafka_protocol::messages::DescribeLogDirsRequest::VERSIONS.max,
                ),
                ApiKey::ListPartitionReassignments => (
                    kafka_protocol::messages::ListPartitionReassignmentsRequest::VERSIONS.min,
                    kafka_protocol::messages::ListPartitionReassignmentsRequest::VERSIONS.max,
                ),
                ApiKey::DescribeProducers => (
                    kafka_protocol::messages::DescribeProducersRequest::VERSIONS.min,
                    kafka_protocol::messages::DescribeProducersRequest::VERSIONS.max,
                ),
                ApiKey::DescribeClientQuotas => (
                    kafka_protocol::messages::DescribeClientQuotasRequest::VERSIONS.min,
                    kafka_protocol::messages::DescribeClientQuotasRequest::VERSIONS.max,
                ),
                ApiKey::AlterClientQuotas => (
                    kafka_protocol::messages::AlterClientQuotasRequest::VERSIONS.min,
                    kafka_protocol::messages::AlterClientQuotasRequest::VERSIONS.max,
                ),
                other => panic!("{other:?} has no version check"),
            };
            assert!(
                lo <= *min && *max <= hi,
                "{key:?} {min}..{max} outside {lo}..{hi}"
            );
        }
    }
}
