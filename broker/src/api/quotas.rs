//! DescribeClientQuotas and AlterClientQuotas (KIP-546): the client quotas of the metadata
//! image, as `kafka-configs --entity-type users/clients` reads and sets them.

use super::{msg, publish};
use crate::node::Broker;
use crate::protocol::codes;
use crate::quota::{self, QuotaEntity};
use kafka_protocol::messages::alter_client_quotas_response::{
    EntityData as AlteredEntity, EntryData as AlteredEntry,
};
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// DescribeClientQuotas: the entities the filter selects, with their quotas.
pub fn describe_client_quotas(
    broker: &Broker,
    req: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let image = broker.controller.image();
    let components: Vec<(String, i8, Option<String>)> = req
        .components
        .iter()
        .map(|c| {
            (
                c.entity_type.to_string(),
                c.match_type,
                c._match.as_ref().map(|m| m.to_string()),
            )
        })
        .collect();
    match quota::describe(&image.client_quotas, &components, req.strict) {
        Ok(found) => DescribeClientQuotasResponse::default().with_entries(Some(
            found
                .into_iter()
                .map(|(entity, values)| {
                    EntryData::default()
                        .with_entity(
                            entity
                                .iter()
                                .map(|(ty, name)| {
                                    EntityData::default()
                                        .with_entity_type(str_bytes(ty))
                                        .with_entity_name(name.as_deref().map(str_bytes))
                                })
                                .collect(),
                        )
                        .with_values(
                            values
                                .iter()
                                .map(|(k, v)| {
                                    ValueData::default().with_key(str_bytes(k)).with_value(*v)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )),
        Err(e) => DescribeClientQuotasResponse::default()
            .with_error_code(e.code)
            .with_error_message(msg(e.message))
            .with_entries(None),
    }
}

/// One entry's answer: its entity as asked, error code and message.
type Outcome = (Vec<(String, Option<String>)>, i16, Option<String>);

/// AlterClientQuotas: every entry is checked, then all valid ones are applied in one
/// metadata commit (a failed commit fails every entry). A node that is not the active
/// controller forwards the request.
pub async fn alter_client_quotas(
    broker: &Broker,
    req: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let entity_of = |e: &kafka_protocol::messages::alter_client_quotas_request::EntryData| {
        e.entity
            .iter()
            .map(|d| {
                (
                    d.entity_type.to_string(),
                    d.entity_name.as_ref().map(|n| n.to_string()),
                )
            })
            .collect::<Vec<_>>()
    };
    let answer = |entries: &[Outcome]| {
        AlterClientQuotasResponse::default().with_entries(
            entries
                .iter()
                .map(|(entity, code, message)| {
                    AlteredEntry::default()
                        .with_error_code(*code)
                        .with_error_message(message.clone().and_then(msg))
                        .with_entity(
                            entity
                                .iter()
                                .map(|(ty, name)| {
                                    AlteredEntity::default()
                                        .with_entity_type(str_bytes(ty))
                                        .with_entity_name(name.as_deref().map(str_bytes))
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    };
    if !req.validate_only && !broker.controller.is_active() {
        let forwarded = broker
            .controller
            .forward_to_active("AlterClientQuotas", req.clone(), |r| {
                r.entries
                    .iter()
                    .any(|e| e.error_code == codes::NOT_CONTROLLER)
            })
            .await;
        return match forwarded {
            Ok(resp) => resp,
            Err(e) => {
                let failed: Vec<_> = req
                    .entries
                    .iter()
                    .map(|entry| (entity_of(entry), e.code, Some(e.message.clone())))
                    .collect();
                answer(&failed)
            }
        };
    }
    let mut results = Vec::with_capacity(req.entries.len());
    let mut valid: Vec<(QuotaEntity, BTreeMap<String, Option<f64>>)> = Vec::new();
    for entry in &req.entries {
        let entity = entity_of(entry);
        let ops: Vec<(String, Option<f64>)> = entry
            .ops
            .iter()
            .map(|o| (o.key.to_string(), (!o.remove).then_some(o.value)))
            .collect();
        let checked = quota::validate_alteration(&entity, &ops).and_then(|(e, changes)| {
            if valid.iter().any(|(seen, _)| *seen == e) {
                Err(format!(
                    "Ignoring duplicate entity {}",
                    quota::describe_entity(&entity)
                ))
            } else {
                Ok((e, changes))
            }
        });
        match checked {
            Ok(ok) => {
                valid.push(ok);
                results.push((entity, codes::NONE, None));
            }
            Err(message) => results.push((entity, codes::INVALID_REQUEST, Some(message))),
        }
    }
    if !req.validate_only && !valid.is_empty() {
        if let Err(e) = broker.controller.alter_client_quotas(&valid).await {
            for r in results.iter_mut().filter(|r| r.1 == codes::NONE) {
                r.1 = e.code;
                r.2 = Some(e.message.clone());
            }
        }
        publish(broker, &broker.controller.image());
    }
    answer(&results)
}
