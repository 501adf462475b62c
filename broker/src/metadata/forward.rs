//! Forwarding metadata changes to the active controller: a node that is not the Raft
//! leader sends the change as the Kafka request for it (CreateTopics, DeleteTopics,
//! CreatePartitions, IncrementalAlterConfigs/AlterConfigs, AllocateProducerIds,
//! BrokerRegistration, BrokerHeartbeat, AlterPartition, ElectLeaders) to the active controller's controller listener, and turns the
//! answer back into the controller's result type. It tries the leader this node knows of
//! first, then every other voter, until the quorum's request deadline; a controller that
//! is not active answers NOT_CONTROLLER, and the next one is tried.

use super::isr::IsrChange;
use super::membership::{ElectionOutcome, ElectionType};
use super::quorum::QuorumStatus;
use super::records::Endpoint;
use super::{AlterOp, ApiError, IsrOutcome, NewTopic, PartitionImage};
use crate::protocol::codes;
use kafka_protocol::messages::alter_configs_request::{
    AlterConfigsResource as ReplaceResource, AlterableConfig as ReplaceConfig,
};
use kafka_protocol::messages::alter_partition_request::{
    BrokerState as AlterBrokerState, PartitionData as AlterPartitionData, TopicData as AlterTopic,
};
use kafka_protocol::messages::broker_registration_request::Listener as RegistrationListener;
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions as ElectTopic;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    AllocateProducerIdsRequest, AlterConfigsRequest, AlterPartitionRequest, BrokerHeartbeatRequest,
    BrokerId, BrokerRegistrationRequest, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteTopicsRequest, DescribeQuorumRequest, DescribeQuorumResponse, ElectLeadersRequest,
    IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use strom_client::Connection;
use tokio::sync::watch;
use uuid::Uuid;

/// Attempts of one forwarded change span this many request timeouts: long enough to
/// outlast an election, short enough to answer before a client's own request timeout.
const DEADLINE_TIMEOUTS: u32 = 5;

pub struct ControllerClient {
    node_id: i32,
    voters: BTreeMap<i32, String>,
    timeout: Duration,
    status: Option<watch::Receiver<QuorumStatus>>,
    /// The connection to the controller that answered last.
    conn: tokio::sync::Mutex<Option<(i32, Connection)>>,
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn timed_out(what: &str) -> ApiError {
    ApiError::new(
        codes::REQUEST_TIMED_OUT,
        format!("No active controller answered {what} in time; the quorum may be electing a leader. Retry."),
    )
}

/// One topic's outcome in a controller's answer: its id, or its error with the message.
fn topic_result(answer: Option<(i16, &Option<StrBytes>, Uuid)>) -> Result<Uuid, ApiError> {
    match answer {
        None => Err(ApiError::new(
            codes::UNKNOWN_SERVER_ERROR,
            "The controller did not answer for this topic.",
        )),
        Some((code, message, _)) if code != codes::NONE => Err(ApiError::new(
            code,
            message.as_ref().map(|m| m.to_string()).unwrap_or_default(),
        )),
        Some((_, _, id)) => Ok(id),
    }
}

impl ControllerClient {
    pub fn new(
        node_id: i32,
        voters: BTreeMap<i32, String>,
        timeout: Duration,
        status: Option<watch::Receiver<QuorumStatus>>,
    ) -> Self {
        ControllerClient {
            node_id,
            voters,
            timeout,
            status,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// The voters to try, the known leader first; this node is never among them.
    fn candidates(&self) -> Vec<i32> {
        let leader = self
            .status
            .as_ref()
            .and_then(|s| s.borrow().leader_id)
            .filter(|l| *l != self.node_id);
        let mut out: Vec<i32> = leader.into_iter().collect();
        out.extend(
            self.voters
                .keys()
                .copied()
                .filter(|id| *id != self.node_id && Some(*id) != leader),
        );
        out
    }

    /// Sends `req` to the active controller; `not_controller` says whether an answer came
    /// from a controller that is not active (so another must be tried).
    pub async fn call<R>(
        &self,
        what: &str,
        req: R,
        not_controller: impl Fn(&R::Response) -> bool,
    ) -> Result<R::Response, ApiError>
    where
        R: Request + Clone,
    {
        self.call_shaped(what, |_| req.clone(), not_controller)
            .await
    }

    /// As [`Self::call`], with the request built by `build` for the version the
    /// controller it goes to supports (fields differ between versions).
    async fn call_shaped<R>(
        &self,
        what: &str,
        build: impl Fn(i16) -> R,
        not_controller: impl Fn(&R::Response) -> bool,
    ) -> Result<R::Response, ApiError>
    where
        R: Request,
    {
        let deadline = Instant::now() + self.timeout * DEADLINE_TIMEOUTS;
        let mut round = 0usize;
        loop {
            let candidates = self.candidates();
            if candidates.is_empty() {
                return Err(ApiError::new(
                    codes::NOT_CONTROLLER,
                    "This node is the only voter and it is not the active controller.",
                ));
            }
            let target = candidates[round % candidates.len()];
            round += 1;
            match self.send_to(target, &build).await {
                Ok(resp) if !not_controller(&resp) => return Ok(resp),
                Ok(_) => tracing::debug!(target, what, "not the active controller; trying another"),
                Err(e) => {
                    tracing::debug!(target, what, cause = %e, "forwarding to the controller failed")
                }
            }
            if Instant::now() >= deadline {
                return Err(timed_out(what));
            }
            if round.is_multiple_of(candidates.len()) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    async fn send_to<R: Request>(
        &self,
        target: i32,
        build: &impl Fn(i16) -> R,
    ) -> Result<R::Response, strom_client::Error> {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_none_or(|(id, _)| *id != target) {
            let addr = self.voters.get(&target).cloned().unwrap_or_default();
            let conn =
                Connection::connect_with_timeout(addr, "strom-controller-forward", self.timeout)
                    .await?;
            *guard = Some((target, conn));
        }
        let (_, conn) = guard.as_mut().expect("connected above");
        let result = match conn.version_for::<R>() {
            Ok(version) => conn.send_versioned(build(version), version).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            *guard = None;
        }
        result
    }

    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Vec<Result<Uuid, ApiError>> {
        let req = CreateTopicsRequest::default()
            .with_validate_only(validate_only)
            .with_timeout_ms(self.timeout.as_millis() as i32)
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        CreatableTopic::default()
                            .with_name(TopicName(str_bytes(&t.name)))
                            .with_num_partitions(t.num_partitions)
                            .with_replication_factor(t.replication_factor)
                            .with_assignments(
                                t.assignments
                                    .iter()
                                    .enumerate()
                                    .map(|(p, brokers)| {
                                        CreatableReplicaAssignment::default()
                                            .with_partition_index(p as i32)
                                            .with_broker_ids(
                                                brokers.iter().copied().map(BrokerId).collect(),
                                            )
                                    })
                                    .collect(),
                            )
                            .with_configs(
                                t.configs
                                    .iter()
                                    .map(|(k, v)| {
                                        CreatableTopicConfig::default()
                                            .with_name(str_bytes(k))
                                            .with_value(Some(str_bytes(v)))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let resp = self
            .call("CreateTopics", req, |r| {
                r.topics
                    .iter()
                    .any(|t| t.error_code == codes::NOT_CONTROLLER)
            })
            .await;
        match resp {
            Err(e) => topics.iter().map(|_| Err(e.clone())).collect(),
            Ok(resp) => topics
                .iter()
                .map(|t| {
                    let r = resp.topics.iter().find(|r| r.name.0.as_str() == t.name);
                    topic_result(r.map(|r| (r.error_code, &r.error_message, r.topic_id)))
                })
                .collect(),
        }
    }

    pub async fn delete_topics(&self, names: &[String]) -> Vec<Result<Uuid, ApiError>> {
        let req = DeleteTopicsRequest::default()
            .with_timeout_ms(self.timeout.as_millis() as i32)
            // Named in `topics` (v6+, what Strom controllers speak); `topic_names` is the
            // v0-5 field and may not be set along with it.
            .with_topics(
                names
                    .iter()
                    .map(|n| {
                        kafka_protocol::messages::delete_topics_request::DeleteTopicState::default()
                            .with_name(Some(TopicName(str_bytes(n))))
                    })
                    .collect(),
            );
        let resp = self
            .call("DeleteTopics", req, |r| {
                r.responses
                    .iter()
                    .any(|t| t.error_code == codes::NOT_CONTROLLER)
            })
            .await;
        match resp {
            Err(e) => names.iter().map(|_| Err(e.clone())).collect(),
            Ok(resp) => names
                .iter()
                .map(|n| {
                    let r = resp
                        .responses
                        .iter()
                        .find(|r| r.name.as_ref().is_some_and(|x| x.0.as_str() == n));
                    topic_result(r.map(|r| (r.error_code, &r.error_message, r.topic_id)))
                })
                .collect(),
        }
    }

    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        let topic = CreatePartitionsTopic::default()
            .with_name(TopicName(str_bytes(name)))
            .with_count(count)
            .with_assignments(assignments.map(|a| {
                a.into_iter()
                    .map(|b| {
                        CreatePartitionsAssignment::default()
                            .with_broker_ids(b.into_iter().map(BrokerId).collect())
                    })
                    .collect()
            }));
        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(self.timeout.as_millis() as i32)
            .with_validate_only(validate_only)
            .with_topics(vec![topic]);
        let resp = self
            .call("CreatePartitions", req, |r| {
                r.results
                    .iter()
                    .any(|t| t.error_code == codes::NOT_CONTROLLER)
            })
            .await?;
        match resp.results.first() {
            Some(r) if r.error_code != codes::NONE => Err(ApiError::new(
                r.error_code,
                r.error_message
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            )),
            Some(_) => Ok(()),
            None => Err(ApiError::new(
                codes::UNKNOWN_SERVER_ERROR,
                "The controller did not answer for this topic.",
            )),
        }
    }

    /// AlterConfigs (`replace_all`) or IncrementalAlterConfigs of one resource (a topic,
    /// or a broker id or "" for the cluster's broker default) on the active controller.
    pub async fn alter_configs(
        &self,
        resource_type: i8,
        name: &str,
        ops: &[(String, AlterOp, Option<String>)],
        replace_all: bool,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        let (code, message) = if replace_all {
            let req = AlterConfigsRequest::default()
                .with_validate_only(validate_only)
                .with_resources(vec![ReplaceResource::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(str_bytes(name))
                    .with_configs(
                        ops.iter()
                            .map(|(k, _, v)| {
                                ReplaceConfig::default()
                                    .with_name(str_bytes(k))
                                    .with_value(v.as_deref().map(str_bytes))
                            })
                            .collect(),
                    )]);
            let resp = self
                .call("AlterConfigs", req, |r| {
                    r.responses
                        .iter()
                        .any(|t| t.error_code == codes::NOT_CONTROLLER)
                })
                .await?;
            let r = resp.responses.into_iter().next();
            r.map(|r| (r.error_code, r.error_message))
                .unwrap_or((codes::UNKNOWN_SERVER_ERROR, None))
        } else {
            let req = IncrementalAlterConfigsRequest::default()
                .with_validate_only(validate_only)
                .with_resources(vec![AlterConfigsResource::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(str_bytes(name))
                    .with_configs(
                        ops.iter()
                            .map(|(k, op, v)| {
                                AlterableConfig::default()
                                    .with_name(str_bytes(k))
                                    .with_config_operation(match op {
                                        AlterOp::Set => 0,
                                        AlterOp::Delete => 1,
                                        AlterOp::Append => 2,
                                        AlterOp::Subtract => 3,
                                    })
                                    .with_value(v.as_deref().map(str_bytes))
                            })
                            .collect(),
                    )]);
            let resp = self
                .call("IncrementalAlterConfigs", req, |r| {
                    r.responses
                        .iter()
                        .any(|t| t.error_code == codes::NOT_CONTROLLER)
                })
                .await?;
            let r = resp.responses.into_iter().next();
            r.map(|r| (r.error_code, r.error_message))
                .unwrap_or((codes::UNKNOWN_SERVER_ERROR, None))
        };
        if code == codes::NONE {
            Ok(())
        } else {
            Err(ApiError::new(
                code,
                message.map(|m| m.to_string()).unwrap_or_default(),
            ))
        }
    }

    pub async fn allocate_producer_ids(
        &self,
        broker_id: i32,
        _size: i64,
    ) -> Result<std::ops::Range<i64>, ApiError> {
        let req = AllocateProducerIdsRequest::default()
            .with_broker_id(BrokerId(broker_id))
            .with_broker_epoch(-1);
        let resp = self
            .call("AllocateProducerIds", req, |r| {
                r.error_code == codes::NOT_CONTROLLER
            })
            .await?;
        if resp.error_code != codes::NONE {
            return Err(ApiError::new(
                resp.error_code,
                "The controller refused to allocate producer ids.",
            ));
        }
        let start = resp.producer_id_start.0;
        Ok(start..start + resp.producer_id_len as i64)
    }

    pub async fn register_broker(
        &self,
        id: i32,
        rack: Option<String>,
        endpoints: Vec<Endpoint>,
        incarnation_id: Uuid,
    ) -> Result<i64, ApiError> {
        let req = BrokerRegistrationRequest::default()
            .with_broker_id(BrokerId(id))
            .with_incarnation_id(incarnation_id)
            .with_rack(rack.as_deref().map(str_bytes))
            .with_listeners(
                endpoints
                    .iter()
                    .map(|e| {
                        // Security protocol 0 is PLAINTEXT, the only one served yet.
                        RegistrationListener::default()
                            .with_name(str_bytes(&e.name))
                            .with_host(str_bytes(&e.host))
                            .with_port(e.port)
                            .with_security_protocol(0)
                    })
                    .collect(),
            );
        let resp = self
            .call("BrokerRegistration", req, |r| {
                r.error_code == codes::NOT_CONTROLLER
            })
            .await?;
        if resp.error_code != codes::NONE {
            return Err(ApiError::new(
                resp.error_code,
                "The controller refused the registration.",
            ));
        }
        Ok(resp.broker_epoch)
    }

    pub async fn heartbeat(
        &self,
        id: i32,
        epoch: i64,
        metadata_offset: i64,
        want_fence: bool,
        want_shut_down: bool,
    ) -> Result<super::HeartbeatReply, ApiError> {
        let req = BrokerHeartbeatRequest::default()
            .with_broker_id(BrokerId(id))
            .with_broker_epoch(epoch)
            .with_current_metadata_offset(metadata_offset)
            .with_want_fence(want_fence)
            .with_want_shut_down(want_shut_down);
        let resp = self
            .call("BrokerHeartbeat", req, |r| {
                r.error_code == codes::NOT_CONTROLLER
            })
            .await?;
        if resp.error_code != codes::NONE {
            return Err(ApiError::new(
                resp.error_code,
                "The controller refused the heartbeat.",
            ));
        }
        Ok(super::HeartbeatReply {
            caught_up: resp.is_caught_up,
            fenced: resp.is_fenced,
            should_shut_down: resp.should_shut_down,
        })
    }

    /// AlterPartition: a leader's ISR changes; one outcome per change, in order.
    pub async fn alter_partition(
        &self,
        broker: i32,
        broker_epoch: i64,
        changes: &[IsrChange],
    ) -> Result<Vec<IsrOutcome>, ApiError> {
        let build = |version: i16| {
            let mut topics: Vec<AlterTopic> = Vec::new();
            for c in changes {
                let mut data = AlterPartitionData::default()
                    .with_partition_index(c.partition)
                    .with_leader_epoch(c.leader_epoch)
                    .with_partition_epoch(c.partition_epoch);
                // v3 carries each member's broker epoch (KIP-903); v2 only the ids.
                if version >= 3 {
                    data.new_isr_with_epochs = c
                        .new_isr
                        .iter()
                        .map(|(id, epoch)| {
                            AlterBrokerState::default()
                                .with_broker_id(BrokerId(*id))
                                .with_broker_epoch(*epoch)
                        })
                        .collect();
                } else {
                    data.new_isr = c.new_isr.iter().map(|(id, _)| BrokerId(*id)).collect();
                }
                match topics.iter_mut().find(|t| t.topic_id == c.topic_id) {
                    Some(t) => t.partitions.push(data),
                    None => topics.push(
                        AlterTopic::default()
                            .with_topic_id(c.topic_id)
                            .with_partitions(vec![data]),
                    ),
                }
            }
            AlterPartitionRequest::default()
                .with_broker_id(BrokerId(broker))
                .with_broker_epoch(broker_epoch)
                .with_topics(topics)
        };
        let resp = self
            .call_shaped("AlterPartition", build, |r| {
                r.error_code == codes::NOT_CONTROLLER
            })
            .await?;
        if resp.error_code != codes::NONE {
            return Err(ApiError::new(
                resp.error_code,
                "The controller refused the AlterPartition request.",
            ));
        }
        Ok(changes
            .iter()
            .map(|c| {
                let answer = resp
                    .topics
                    .iter()
                    .filter(|t| t.topic_id == c.topic_id)
                    .flat_map(|t| t.partitions.iter())
                    .find(|p| p.partition_index == c.partition);
                match answer {
                    None => Err((
                        codes::UNKNOWN_SERVER_ERROR,
                        "The controller did not answer for this partition.".to_string(),
                    )),
                    Some(p) if p.error_code != codes::NONE => {
                        Err((p.error_code, "Refused by the controller.".to_string()))
                    }
                    Some(p) => Ok(PartitionImage {
                        replicas: Vec::new(),
                        isr: p.isr.iter().map(|b| b.0).collect(),
                        leader: p.leader_id.0,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                        ..Default::default()
                    }),
                }
            })
            .collect())
    }

    /// ElectLeaders: one outcome per partition the controller answered for.
    /// DescribeQuorum, answered by the active controller (a voter that does not lead
    /// answers NOT_LEADER_OR_FOLLOWER, so the next one is tried).
    pub async fn describe_quorum(
        &self,
        req: DescribeQuorumRequest,
    ) -> Result<DescribeQuorumResponse, ApiError> {
        self.call("DescribeQuorum", req, |r| {
            r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .any(|p| p.error_code == codes::NOT_LEADER_OR_FOLLOWER)
        })
        .await
    }

    pub async fn elect_leaders(
        &self,
        kind: ElectionType,
        asked: Option<&[(String, i32)]>,
    ) -> Result<Vec<(String, i32, ElectionOutcome)>, ApiError> {
        let topics = asked.map(|list| {
            let mut topics: Vec<ElectTopic> = Vec::new();
            for (topic, partition) in list {
                match topics
                    .iter_mut()
                    .find(|t| t.topic.0.as_str() == topic.as_str())
                {
                    Some(t) => t.partitions.push(*partition),
                    None => topics.push(
                        ElectTopic::default()
                            .with_topic(TopicName(str_bytes(topic)))
                            .with_partitions(vec![*partition]),
                    ),
                }
            }
            topics
        });
        let req = ElectLeadersRequest::default()
            .with_election_type(match kind {
                ElectionType::Preferred => 0,
                ElectionType::Unclean => 1,
            })
            .with_topic_partitions(topics)
            .with_timeout_ms(self.timeout.as_millis() as i32);
        let resp = self
            .call("ElectLeaders", req, |r| {
                r.error_code == codes::NOT_CONTROLLER
            })
            .await?;
        if resp.error_code != codes::NONE {
            return Err(ApiError::new(
                resp.error_code,
                "The controller refused the ElectLeaders request.",
            ));
        }
        Ok(resp
            .replica_election_results
            .into_iter()
            .flat_map(|t| {
                let topic = t.topic.0.to_string();
                t.partition_result.into_iter().map(move |p| {
                    let outcome = if p.error_code == codes::NONE {
                        Ok(())
                    } else {
                        Err((
                            p.error_code,
                            p.error_message.map(|m| m.to_string()).unwrap_or_default(),
                        ))
                    };
                    (topic.clone(), p.partition_id, outcome)
                })
            })
            .collect())
    }
}
