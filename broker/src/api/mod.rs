//! Request handlers: one function per Kafka API, each turning a decoded request into a
//! response with Kafka's error codes. Data-path handlers (produce, fetch, list offsets) talk
//! to the replica manager; admin handlers go through the controller.

mod admin;
mod configs;
mod data;
mod fetch;
pub mod fetch_session;
pub mod group;
mod quorum;
mod quotas;

use crate::metadata::MetadataImage;
use crate::node::Broker;
use crate::protocol::codes;
use crate::protocol::ListenerKind;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

/// Handles one request. `None` means no response is sent (Produce with acks=0).
pub async fn handle(
    broker: &Broker,
    kind: &ListenerKind,
    header: &RequestHeader,
    peer: std::net::SocketAddr,
    api_key: ApiKey,
    body: RequestKind,
) -> Option<ResponseKind> {
    let v = header.request_api_version;
    // Clients are told the addresses of the listener they asked on.
    let inter_broker;
    let listener: &str = match kind {
        ListenerKind::Broker(name) => name,
        ListenerKind::Controller => {
            inter_broker = broker.config.inter_broker_listener_name();
            &inter_broker
        }
    };
    Some(match body {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions(
            codes::NONE,
            crate::protocol::api_table(*kind == ListenerKind::Controller),
        )),
        RequestKind::BrokerRegistration(r) => {
            ResponseKind::BrokerRegistration(admin::broker_registration(broker, r).await)
        }
        RequestKind::AllocateProducerIds(r) => {
            ResponseKind::AllocateProducerIds(data::allocate_producer_ids(broker, r).await)
        }
        RequestKind::DescribeQuorum(r) => {
            let forward = matches!(kind, ListenerKind::Broker(_));
            ResponseKind::DescribeQuorum(admin::describe_quorum(broker, r, v, forward).await)
        }
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(admin::metadata(broker, listener, r, v).await)
        }
        RequestKind::Produce(r) => {
            return data::produce(broker, r, v).await.map(ResponseKind::Produce)
        }
        RequestKind::Fetch(r) if *kind == ListenerKind::Controller => {
            ResponseKind::Fetch(quorum::metadata_fetch(&broker.controller, r, v).await)
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(
            fetch::fetch(
                broker,
                listener,
                header.client_id.as_deref().unwrap_or(""),
                r,
                v,
            )
            .await,
        ),
        RequestKind::FetchSnapshot(r) => {
            ResponseKind::FetchSnapshot(quorum::fetch_snapshot(&broker.controller, r))
        }
        RequestKind::AlterPartition(r) => {
            ResponseKind::AlterPartition(quorum::alter_partition(&broker.controller, r, v).await)
        }
        RequestKind::BrokerHeartbeat(r) => {
            ResponseKind::BrokerHeartbeat(quorum::broker_heartbeat(&broker.controller, r).await)
        }
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(data::list_offsets(broker, r, v)),
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(data::offset_for_leader_epoch(broker, r))
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(data::delete_records(broker, r))
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(admin::create_topics(broker, r, v).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(admin::delete_topics(broker, r, v).await)
        }
        RequestKind::AlterPartitionReassignments(r) => ResponseKind::AlterPartitionReassignments(
            admin::alter_partition_reassignments(broker, r).await,
        ),
        RequestKind::DescribeLogDirs(r) => {
            ResponseKind::DescribeLogDirs(admin::describe_log_dirs(broker, r))
        }
        RequestKind::DescribeProducers(r) => {
            ResponseKind::DescribeProducers(data::describe_producers(broker, r))
        }
        RequestKind::DescribeClientQuotas(r) => {
            ResponseKind::DescribeClientQuotas(quotas::describe_client_quotas(broker, r))
        }
        RequestKind::AlterClientQuotas(r) => {
            ResponseKind::AlterClientQuotas(quotas::alter_client_quotas(broker, r).await)
        }
        RequestKind::ListPartitionReassignments(r) => {
            ResponseKind::ListPartitionReassignments(admin::list_partition_reassignments(broker, r))
        }
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(admin::elect_leaders(broker, r, v).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(admin::create_partitions(broker, r).await)
        }
        RequestKind::DescribeCluster(r) => ResponseKind::DescribeCluster(admin::describe_cluster(
            broker,
            listener,
            *kind == ListenerKind::Controller,
            r,
            v,
        )),
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(configs::describe_configs(broker, r, v))
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(configs::alter_configs(broker, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            configs::incremental_alter_configs(broker, r).await,
        ),
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(group::find_coordinator(broker, listener, r, v).await)
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(group::join_group(broker, header, peer, r, v).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(group::sync_group(broker, r, v).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(group::heartbeat(broker, r, v)),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(group::leave_group(broker, r, v)),
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(group::offset_commit(broker, r, v).await)
        }
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(group::offset_fetch(broker, r, v)),
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(group::list_groups(broker, r, v)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(group::describe_groups(broker, r, v))
        }
        RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(group::delete_groups(broker, r)),
        RequestKind::OffsetDelete(r) => ResponseKind::OffsetDelete(group::offset_delete(broker, r)),
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(data::init_producer_id(broker, r).await)
        }
        other => {
            // Unreachable: decode_request only decodes APIs in the supported table, and
            // every one of them has an arm above. Answering nothing would hang the client,
            // so log loudly and close the connection by returning no response.
            tracing::error!(?api_key, request = ?std::mem::discriminant(&other), "no handler for a supported API");
            return None;
        }
    })
}

/// The ApiVersions answer, built from the one supported-versions table.
pub fn api_versions(error_code: i16, table: &[(ApiKey, i16, i16)]) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(
            table
                .iter()
                .map(|(k, min, max)| {
                    ApiVersion::default()
                        .with_api_key(*k as i16)
                        .with_min_version(*min)
                        .with_max_version(*max)
                })
                .collect(),
        )
        .with_finalized_features_epoch(-1)
}

/// A message string for a response field.
fn msg(s: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.into()))
}

/// Publishes a changed image to the replica manager (open new logs, delete removed ones).
fn publish(broker: &Broker, image: &MetadataImage) {
    broker.apply_image(image);
}

#[cfg(test)]
mod tests {
    //! Dispatch against the version tables: every API either table advertises has a
    //! handler that answers a request (default fields) at its lowest and highest version,
    //! with a response that encodes in that version.

    use super::*;
    use crate::protocol::{encode_response, CONTROLLER_APIS, SUPPORTED_APIS};
    use kafka_protocol::messages::*;

    /// A request of every advertised kind with default fields. An API added to a table
    /// must be added here too (the test says so), next to its handler in [`handle`].
    fn default_request(key: ApiKey) -> RequestKind {
        match key {
            // acks=0 is answered with nothing, by design.
            ApiKey::Produce => RequestKind::Produce(ProduceRequest::default().with_acks(1)),
            ApiKey::Fetch => RequestKind::Fetch(FetchRequest::default()),
            ApiKey::ListOffsets => RequestKind::ListOffsets(Default::default()),
            ApiKey::OffsetForLeaderEpoch => RequestKind::OffsetForLeaderEpoch(Default::default()),
            ApiKey::Metadata => RequestKind::Metadata(MetadataRequest::default()),
            ApiKey::ApiVersions => RequestKind::ApiVersions(Default::default()),
            ApiKey::CreateTopics => RequestKind::CreateTopics(Default::default()),
            ApiKey::DeleteTopics => RequestKind::DeleteTopics(Default::default()),
            ApiKey::DeleteRecords => RequestKind::DeleteRecords(Default::default()),
            ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(Default::default()),
            ApiKey::AlterConfigs => RequestKind::AlterConfigs(Default::default()),
            ApiKey::CreatePartitions => RequestKind::CreatePartitions(Default::default()),
            ApiKey::IncrementalAlterConfigs => {
                RequestKind::IncrementalAlterConfigs(Default::default())
            }
            ApiKey::ElectLeaders => RequestKind::ElectLeaders(Default::default()),
            ApiKey::AlterPartitionReassignments => {
                RequestKind::AlterPartitionReassignments(Default::default())
            }
            ApiKey::DescribeLogDirs => RequestKind::DescribeLogDirs(Default::default()),
            ApiKey::DescribeProducers => RequestKind::DescribeProducers(Default::default()),
            ApiKey::DescribeClientQuotas => RequestKind::DescribeClientQuotas(Default::default()),
            ApiKey::AlterClientQuotas => RequestKind::AlterClientQuotas(Default::default()),
            ApiKey::ListPartitionReassignments => {
                RequestKind::ListPartitionReassignments(Default::default())
            }
            ApiKey::DescribeCluster => RequestKind::DescribeCluster(Default::default()),
            ApiKey::FindCoordinator => RequestKind::FindCoordinator(Default::default()),
            ApiKey::JoinGroup => RequestKind::JoinGroup(Default::default()),
            ApiKey::SyncGroup => RequestKind::SyncGroup(Default::default()),
            ApiKey::Heartbeat => RequestKind::Heartbeat(Default::default()),
            ApiKey::LeaveGroup => RequestKind::LeaveGroup(Default::default()),
            ApiKey::OffsetCommit => RequestKind::OffsetCommit(Default::default()),
            ApiKey::OffsetFetch => RequestKind::OffsetFetch(Default::default()),
            ApiKey::ListGroups => RequestKind::ListGroups(Default::default()),
            ApiKey::DescribeGroups => RequestKind::DescribeGroups(Default::default()),
            ApiKey::DeleteGroups => RequestKind::DeleteGroups(Default::default()),
            ApiKey::OffsetDelete => RequestKind::OffsetDelete(Default::default()),
            ApiKey::InitProducerId => RequestKind::InitProducerId(Default::default()),
            ApiKey::DescribeQuorum => RequestKind::DescribeQuorum(Default::default()),
            ApiKey::FetchSnapshot => RequestKind::FetchSnapshot(Default::default()),
            ApiKey::BrokerRegistration => RequestKind::BrokerRegistration(Default::default()),
            ApiKey::BrokerHeartbeat => RequestKind::BrokerHeartbeat(Default::default()),
            ApiKey::AlterPartition => RequestKind::AlterPartition(Default::default()),
            ApiKey::AllocateProducerIds => RequestKind::AllocateProducerIds(Default::default()),
            other => panic!(
                "{other:?} is advertised: add a default request here and a handler in api::handle"
            ),
        }
    }

    #[tokio::test]
    async fn every_advertised_api_is_handled_at_its_lowest_and_highest_version() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::BrokerConfig::load(
            None,
            &[
                format!("log.dirs={}", dir.path().display()),
                "offsets.topic.num.partitions=1".into(),
            ],
        )
        .unwrap();
        let broker = Broker::open(config, std::sync::Arc::new(crate::clock::SystemClock)).unwrap();
        broker.start_serving().await.unwrap();
        let peer: std::net::SocketAddr = "127.0.0.1:5555".parse().unwrap();
        for (table, kind) in [
            (SUPPORTED_APIS, ListenerKind::Broker("PLAINTEXT".into())),
            (CONTROLLER_APIS, ListenerKind::Controller),
        ] {
            for &(key, min, max) in table {
                for v in [min, max] {
                    let header = RequestHeader::default().with_request_api_version(v);
                    let answer = tokio::time::timeout(
                        std::time::Duration::from_secs(20),
                        handle(&broker, &kind, &header, peer, key, default_request(key)),
                    )
                    .await
                    .unwrap_or_else(|_| panic!("{key:?} v{v} on {kind:?}: no answer in 20 s"));
                    let Some(mut resp) = answer else {
                        panic!("{key:?} v{v} on {kind:?}: no handler answered");
                    };
                    // A client quota's throttle reaches the client in every response that
                    // has the field (KIP-219); only the inter-node APIs lack it.
                    let client_api =
                        kind != ListenerKind::Controller && !matches!(key, ApiKey::DescribeQuorum);
                    if client_api {
                        assert!(
                            crate::protocol::throttle_time_ms(&mut resp).is_some(),
                            "{key:?}: add its response to protocol::throttle_time_ms"
                        );
                    }
                    if let Err(e) = encode_response(key, v, 1, &resp) {
                        panic!("{key:?} v{v} on {kind:?}: the response does not encode: {e}");
                    }
                }
            }
        }
    }
}
