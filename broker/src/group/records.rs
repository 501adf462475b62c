//! The records the group coordinator keeps in `__consumer_offsets`: a key names what a
//! record is about (one committed offset, or one group's metadata), a value holds its state
//! and a missing value is a tombstone. Keys and values are versioned JSON, so a compacting
//! cleaner keeps the newest record per key and a reader can refuse versions it does not know.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The only version written so far; a reader skips records of any other version.
pub const RECORD_VERSION: u16 = 1;

/// What a record is about. Its JSON form is the Kafka record key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

#[derive(Serialize, Deserialize)]
struct VersionedKey {
    version: u16,
    #[serde(flatten)]
    key: RecordKey,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetValue {
    pub version: u16,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

/// One member as persisted with its group: enough to resume a stable group after a
/// restart without a rebalance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// The member's metadata for the selected protocol, hex-encoded.
    pub subscription: String,
    /// The member's assignment, hex-encoded.
    pub assignment: String,
}

/// A group's metadata as of its last generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupValue {
    pub version: u16,
    pub protocol_type: Option<String>,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

/// A decoded record of `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRecord {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<OffsetValue>,
    },
    Group {
        group: String,
        value: Option<GroupValue>,
    },
}

impl GroupRecord {
    /// The group the record belongs to (which decides its partition).
    pub fn group(&self) -> &str {
        match self {
            GroupRecord::Offset { group, .. } | GroupRecord::Group { group, .. } => group,
        }
    }

    /// The record as Kafka record key and value (None: tombstone).
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        match self {
            GroupRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => (
                json(&VersionedKey {
                    version: RECORD_VERSION,
                    key: RecordKey::Offset {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                    },
                }),
                value.as_ref().map(json),
            ),
            GroupRecord::Group { group, value } => (
                json(&VersionedKey {
                    version: RECORD_VERSION,
                    key: RecordKey::Group {
                        group: group.clone(),
                    },
                }),
                value.as_ref().map(json),
            ),
        }
    }

    /// Decodes a record; `Err` names why it is not one of ours (foreign or newer records
    /// are skipped at load, never fatal).
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<GroupRecord, String> {
        let k: VersionedKey = serde_json::from_slice(key).map_err(|e| e.to_string())?;
        if k.version != RECORD_VERSION {
            return Err(format!("unknown key version {}", k.version));
        }
        Ok(match k.key {
            RecordKey::Offset {
                group,
                topic,
                partition,
            } => GroupRecord::Offset {
                group,
                topic,
                partition,
                value: match value {
                    None => None,
                    Some(v) => Some(serde_json::from_slice(v).map_err(|e| e.to_string())?),
                },
            },
            RecordKey::Group { group } => GroupRecord::Group {
                group,
                value: match value {
                    None => None,
                    Some(v) => Some(serde_json::from_slice(v).map_err(|e| e.to_string())?),
                },
            },
        })
    }
}

/// Serializing these plain structs cannot fail: every field is a string, number or list.
fn json<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// Lower-case hex, for opaque protocol bytes inside JSON.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// The inverse of [`hex`]; `None` for anything that is not an even run of hex digits.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() & 1 == 1 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_tombstones_have_no_value() {
        let offset = GroupRecord::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
            value: Some(OffsetValue {
                version: RECORD_VERSION,
                offset: 42,
                leader_epoch: -1,
                metadata: Some("m".into()),
                commit_timestamp_ms: 7,
            }),
        };
        let (k, v) = offset.encode();
        assert_eq!(GroupRecord::decode(&k, v.as_deref()).unwrap(), offset);
        let tomb = GroupRecord::Group {
            group: "g".into(),
            value: None,
        };
        let (k, v) = tomb.encode();
        assert!(v.is_none());
        assert_eq!(GroupRecord::decode(&k, None).unwrap(), tomb);
    }

    #[test]
    fn foreign_and_newer_records_are_refused() {
        assert!(GroupRecord::decode(b"\x00\x01binary", None).is_err());
        assert!(GroupRecord::decode(br#"{"version":2,"type":"group","group":"g"}"#, None).is_err());
    }

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00abff").unwrap(), vec![0, 0xab, 0xff]);
        assert!(unhex("0").is_none());
        assert!(unhex("zz").is_none());
    }
}
