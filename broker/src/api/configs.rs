//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics and brokers, with
//! Kafka's config sources (dynamic topic override, static broker config, default) and
//! synonyms.

use super::{msg, publish};
use crate::config::{ConfigDef, BROKER_CONFIGS, TOPIC_CONFIGS};
use crate::metadata::{AlterOp, ApiError};
use crate::node::Broker;
use crate::protocol::codes;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResourceResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;

use crate::protocol::{RESOURCE_BROKER, RESOURCE_TOPIC};

const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// One described config entry, before it is shaped into a response type.
pub struct Entry {
    pub name: StrBytes,
    pub value: Option<StrBytes>,
    pub read_only: bool,
    pub config_source: i8,
    pub is_sensitive: bool,
    pub synonyms: Vec<(String, String, i8)>,
    pub config_type: i8,
    pub documentation: &'static str,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

/// The entries of a topic with the given overrides: every topic config, or those in `keys`.
pub fn topic_entries(
    broker: &Broker,
    overrides: &BTreeMap<String, String>,
    keys: Option<&[StrBytes]>,
    synonyms: bool,
    _documentation: bool,
) -> Vec<Entry> {
    // Topic defaults may be dynamic broker configs, the broker's own or the cluster's.
    let image = broker.controller.image();
    let own = image.broker_configs.get(&broker.node_id);
    let cluster = &image.broker_default_configs;
    let effective = broker.config.with_dynamic(cluster, own);
    TOPIC_CONFIGS
        .iter()
        .filter(|d| keys.is_none_or(|k| k.iter().any(|k| k.as_str() == d.def.name)))
        .map(|d| {
            let name = d.def.name;
            let (default_value, broker_explicit) =
                effective.topic_default(name).unwrap_or_default();
            let sources = crate::config::topic_default_sources(name);
            let set_in = |m: Option<&BTreeMap<String, String>>| {
                sources
                    .iter()
                    .any(|s| m.is_some_and(|m| m.contains_key(*s)))
            };
            let default_source = if set_in(own) {
                SOURCE_DYNAMIC_BROKER
            } else if set_in(Some(cluster)) {
                SOURCE_DYNAMIC_DEFAULT_BROKER
            } else if broker_explicit {
                SOURCE_STATIC_BROKER
            } else {
                SOURCE_DEFAULT
            };
            let (value, source) = match overrides.get(name) {
                Some(v) => (v.clone(), SOURCE_DYNAMIC_TOPIC),
                None => (default_value.clone(), default_source),
            };
            let mut syn = Vec::new();
            if synonyms {
                if let Some(v) = overrides.get(name) {
                    syn.push((name.to_owned(), v.clone(), SOURCE_DYNAMIC_TOPIC));
                }
                if let Some(b) = d.broker_synonym {
                    if broker_explicit {
                        syn.push((b.to_owned(), default_value.clone(), default_source));
                    }
                    if let Some(def) = crate::config::broker_def(b).and_then(|x| x.default) {
                        syn.push((b.to_owned(), def.to_owned(), SOURCE_DEFAULT));
                    }
                }
            }
            Entry {
                name: s(name),
                value: Some(s(&value)),
                read_only: false,
                config_source: source,
                is_sensitive: false,
                synonyms: syn,
                config_type: d.def.ty as i8,
                documentation: d.def.doc,
            }
        })
        .collect()
}

fn broker_entries(
    broker: &Broker,
    image: &crate::metadata::MetadataImage,
    keys: Option<&[StrBytes]>,
    synonyms: bool,
) -> Vec<Entry> {
    BROKER_CONFIGS
        .iter()
        .filter(|d| keys.is_none_or(|k| k.iter().any(|k| k.as_str() == d.name)))
        .map(|d: &ConfigDef| {
            let dynamic = crate::config::is_dynamic_broker_config(d.name);
            let own = image
                .broker_configs
                .get(&broker.node_id)
                .and_then(|c| c.get(d.name));
            let cluster = image.broker_default_configs.get(d.name);
            let explicit = broker.config.explicit(d.name);
            // Kafka's precedence: the broker's dynamic value, the cluster's dynamic
            // default, the properties file, the default.
            let mut layers: Vec<(String, i8)> = Vec::new();
            if let Some(v) = own {
                layers.push((v.clone(), SOURCE_DYNAMIC_BROKER));
            }
            if let Some(v) = cluster {
                layers.push((v.clone(), SOURCE_DYNAMIC_DEFAULT_BROKER));
            }
            if let Some(v) = explicit {
                layers.push((v.to_owned(), SOURCE_STATIC_BROKER));
            }
            if let Some(v) = d.default {
                layers.push((v.to_owned(), SOURCE_DEFAULT));
            }
            let (value, source) = match layers.first() {
                Some((v, src)) => (Some(s(v)), *src),
                None => (None, SOURCE_DEFAULT),
            };
            let syn = if synonyms {
                layers
                    .into_iter()
                    .map(|(v, src)| (d.name.to_owned(), v, src))
                    .collect()
            } else {
                Vec::new()
            };
            Entry {
                name: s(d.name),
                value,
                read_only: !dynamic,
                config_source: source,
                is_sensitive: false,
                synonyms: syn,
                config_type: d.ty as i8,
                documentation: d.doc,
            }
        })
        .collect()
}

/// The cluster-wide dynamic broker defaults that are set (Kafka lists only those).
fn broker_default_entries(
    image: &crate::metadata::MetadataImage,
    keys: Option<&[StrBytes]>,
) -> Vec<Entry> {
    image
        .broker_default_configs
        .iter()
        .filter(|(n, _)| keys.is_none_or(|k| k.iter().any(|k| k.as_str() == n.as_str())))
        .filter_map(|(n, v)| {
            let d = crate::config::broker_def(n)?;
            Some(Entry {
                name: s(n),
                value: Some(s(v)),
                read_only: false,
                config_source: SOURCE_DYNAMIC_DEFAULT_BROKER,
                is_sensitive: false,
                synonyms: vec![(n.clone(), v.clone(), SOURCE_DYNAMIC_DEFAULT_BROKER)],
                config_type: d.ty as i8,
                documentation: d.doc,
            })
        })
        .collect()
}

pub fn describe_configs(
    broker: &Broker,
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let image = broker.controller.image();
    let empty = BTreeMap::new();
    let results = req
        .resources
        .iter()
        .map(|r| {
            let keys = r.configuration_keys.as_deref();
            let entries: Result<Vec<Entry>, ApiError> = match r.resource_type {
                RESOURCE_TOPIC => {
                    if image.topics.contains_key(r.resource_name.as_str()) {
                        let overrides = image
                            .topic_configs
                            .get(r.resource_name.as_str())
                            .unwrap_or(&empty);
                        Ok(topic_entries(
                            broker,
                            overrides,
                            keys,
                            req.include_synonyms,
                            req.include_documentation,
                        ))
                    } else {
                        Err(ApiError::new(
                            codes::UNKNOWN_TOPIC_OR_PARTITION,
                            format!("Topic '{}' does not exist.", r.resource_name),
                        ))
                    }
                }
                RESOURCE_BROKER => {
                    if r.resource_name.is_empty() {
                        Ok(broker_default_entries(&image, keys))
                    } else if r.resource_name.as_str() == broker.node_id.to_string() {
                        Ok(broker_entries(broker, &image, keys, req.include_synonyms))
                    } else {
                        Err(ApiError::new(
                            codes::INVALID_REQUEST,
                            format!(
                                "Unexpected broker id, expected {} but received {}",
                                broker.node_id, r.resource_name
                            ),
                        ))
                    }
                }
                other => Err(ApiError::new(
                    codes::INVALID_REQUEST,
                    format!("Unsupported resource type {other}"),
                )),
            };
            let mut out = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match entries {
                Ok(entries) => {
                    out = out.with_configs(
                        entries
                            .into_iter()
                            .map(|e| {
                                let mut c = DescribeConfigsResourceResult::default()
                                    .with_name(e.name)
                                    .with_value(e.value)
                                    .with_read_only(e.read_only)
                                    .with_config_source(e.config_source)
                                    .with_is_sensitive(e.is_sensitive)
                                    .with_synonyms(
                                        e.synonyms
                                            .into_iter()
                                            .map(|(n, v, src)| {
                                                DescribeConfigsSynonym::default()
                                                    .with_name(s(&n))
                                                    .with_value(Some(s(&v)))
                                                    .with_source(src)
                                            })
                                            .collect(),
                                    );
                                if version >= 3 {
                                    c = c.with_config_type(e.config_type);
                                    if req.include_documentation {
                                        c = c.with_documentation(Some(s(e.documentation)));
                                    }
                                }
                                c
                            })
                            .collect(),
                    );
                }
                Err(e) => {
                    out = out
                        .with_error_code(e.code)
                        .with_error_message(msg(e.message));
                }
            }
            out
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// The outcome of altering one resource.
async fn alter_resource(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    ops: &[(String, AlterOp, Option<String>)],
    replace_all: bool,
    validate_only: bool,
) -> Result<(), ApiError> {
    match resource_type {
        RESOURCE_TOPIC => {
            broker
                .controller
                .alter_topic_configs(name, ops, replace_all, validate_only)
                .await
        }
        RESOURCE_BROKER => {
            broker
                .controller
                .alter_broker_configs(name, ops, replace_all, validate_only)
                .await
        }
        other => Err(ApiError::new(
            codes::INVALID_REQUEST,
            format!("Unsupported resource type {other}"),
        )),
    }
}

pub async fn alter_configs(broker: &Broker, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in &req.resources {
        responses.push({
            let ops: Vec<_> = r
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), AlterOp::Set, Some(v.to_string())))
                })
                .collect();
            let result = alter_resource(
                broker,
                r.resource_type,
                &r.resource_name,
                &ops,
                true,
                req.validate_only,
            )
            .await;
            let mut out = AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            if let Err(e) = result {
                out = out
                    .with_error_code(e.code)
                    .with_error_message(msg(e.message));
            }
            out
        });
    }
    if !req.validate_only {
        publish(broker, &broker.controller.image());
    }
    AlterConfigsResponse::default().with_responses(responses)
}

pub async fn incremental_alter_configs(
    broker: &Broker,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in &req.resources {
        responses.push({
            let ops: Result<Vec<_>, ApiError> = r
                .configs
                .iter()
                .map(|c| {
                    let op = match c.config_operation {
                        0 => AlterOp::Set,
                        1 => AlterOp::Delete,
                        2 => AlterOp::Append,
                        3 => AlterOp::Subtract,
                        other => {
                            return Err(ApiError::new(
                                codes::INVALID_REQUEST,
                                format!("Unknown config operation {other}"),
                            ))
                        }
                    };
                    Ok((
                        c.name.to_string(),
                        op,
                        c.value.as_ref().map(|v| v.to_string()),
                    ))
                })
                .collect();
            let result = match ops {
                Ok(ops) => {
                    alter_resource(
                        broker,
                        r.resource_type,
                        &r.resource_name,
                        &ops,
                        false,
                        req.validate_only,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            let mut out = IncrementalResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            if let Err(e) = result {
                out = out
                    .with_error_code(e.code)
                    .with_error_message(msg(e.message));
            }
            out
        });
    }
    if !req.validate_only {
        publish(broker, &broker.controller.image());
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
