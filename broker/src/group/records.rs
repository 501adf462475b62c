//! The records the group coordinator keeps in `__consumer_offsets`, in Kafka's binary
//! schemas (OffsetCommitKey/Value, GroupMetadataKey/Value), so that Kafka's own tools and
//! anything else that reads the topic can decode it: a key names what a record is about
//! (one committed offset, or one group's metadata), a value holds its state and a missing
//! value is a tombstone. Records of Strom's first, JSON format are still read, so that a
//! log written before this format converts (see `group::replay`).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Deserialize;

/// Key versions: 0 and 1 are an offset commit (OffsetCommitKey), 2 a group's metadata
/// (GroupMetadataKey).
const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
/// The value versions written: OffsetCommitValue v3 (with the leader epoch) and
/// GroupMetadataValue v3 (with static members), Kafka's newest non-flexible ones. Versions
/// 0 to 3 of both are read.
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

/// One member as persisted with its group: enough to resume a stable group after a
/// restart without a rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// The member's metadata for the selected protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's metadata as of its last generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
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

/// A record read back, and whether it was in the JSON format of Strom before Kafka's
/// schemas (which a new leader rewrites).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub record: GroupRecord,
    pub legacy_json: bool,
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
        let mut key = BytesMut::new();
        match self {
            GroupRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => {
                key.put_i16(OFFSET_KEY_VERSION);
                put_str(&mut key, group);
                put_str(&mut key, topic);
                key.put_i32(*partition);
                let value = value.as_ref().map(|v| {
                    let mut b = BytesMut::new();
                    b.put_i16(OFFSET_VALUE_VERSION);
                    b.put_i64(v.offset);
                    b.put_i32(v.leader_epoch);
                    // Kafka's schema has no null metadata: it stores "" for none.
                    put_str(&mut b, v.metadata.as_deref().unwrap_or(""));
                    b.put_i64(v.commit_timestamp_ms);
                    b.freeze()
                });
                (key.freeze(), value)
            }
            GroupRecord::Group { group, value } => {
                key.put_i16(GROUP_KEY_VERSION);
                put_str(&mut key, group);
                let value = value.as_ref().map(|v| {
                    let mut b = BytesMut::new();
                    b.put_i16(GROUP_VALUE_VERSION);
                    put_str(&mut b, v.protocol_type.as_deref().unwrap_or(""));
                    b.put_i32(v.generation);
                    put_nullable_str(&mut b, v.protocol.as_deref());
                    put_nullable_str(&mut b, v.leader.as_deref());
                    b.put_i64(v.state_timestamp_ms);
                    b.put_i32(v.members.len() as i32);
                    for m in &v.members {
                        put_str(&mut b, &m.member_id);
                        put_nullable_str(&mut b, m.group_instance_id.as_deref());
                        put_str(&mut b, &m.client_id);
                        put_str(&mut b, &m.client_host);
                        b.put_i32(m.rebalance_timeout_ms);
                        b.put_i32(m.session_timeout_ms);
                        put_bytes(&mut b, &m.subscription);
                        put_bytes(&mut b, &m.assignment);
                    }
                    b.freeze()
                });
                (key.freeze(), value)
            }
        }
    }

    /// Decodes a record; `Err` names why it is not one of ours (foreign or newer records
    /// are skipped at load, never fatal).
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Decoded, String> {
        if key.first() == Some(&b'{') {
            return legacy::decode(key, value).map(|record| Decoded {
                record,
                legacy_json: true,
            });
        }
        let mut k = Reader(key);
        let record = match k.i16()? {
            0 | 1 => {
                let (group, topic, partition) = (k.str()?, k.str()?, k.i32()?);
                GroupRecord::Offset {
                    group,
                    topic,
                    partition,
                    value: value.map(decode_offset_value).transpose()?,
                }
            }
            2 => GroupRecord::Group {
                group: k.str()?,
                value: value.map(decode_group_value).transpose()?,
            },
            v => return Err(format!("unknown key version {v}")),
        };
        Ok(Decoded {
            record,
            legacy_json: false,
        })
    }
}

fn decode_offset_value(value: &[u8]) -> Result<OffsetValue, String> {
    let mut r = Reader(value);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(format!("unknown offset value version {version}"));
    }
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.str()?;
    let commit_timestamp_ms = r.i64()?;
    // v1 also carries an expire timestamp, which retention does not use.
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata: Some(metadata),
        commit_timestamp_ms,
    })
}

fn decode_group_value(value: &[u8]) -> Result<GroupValue, String> {
    let mut r = Reader(value);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(format!("unknown group value version {version}"));
    }
    let protocol_type = r.str()?;
    let generation = r.i32()?;
    let protocol = r.nullable_str()?;
    let leader = r.nullable_str()?;
    let state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
    let count = r.i32()?;
    let mut members = Vec::with_capacity(count.clamp(0, 1024) as usize);
    for _ in 0..count.max(0) {
        let member_id = r.str()?;
        let group_instance_id = if version >= 3 {
            r.nullable_str()?
        } else {
            None
        };
        let client_id = r.str()?;
        let client_host = r.str()?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
        let session_timeout_ms = r.i32()?;
        members.push(MemberValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            session_timeout_ms,
            rebalance_timeout_ms: if version >= 1 {
                rebalance_timeout_ms
            } else {
                session_timeout_ms
            },
            subscription: r.bytes()?,
            assignment: r.bytes()?,
        });
    }
    Ok(GroupValue {
        protocol_type: Some(protocol_type).filter(|t| !t.is_empty()),
        generation,
        protocol,
        leader,
        state_timestamp_ms,
        members,
    })
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len().min(i16::MAX as usize) as i16);
    b.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

fn put_nullable_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

/// Reads the big-endian fields of Kafka's non-flexible schemas, refusing what runs short.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err("the record is cut short".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16, String> {
        Ok(self.take(2)?.get_i16())
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(self.take(4)?.get_i32())
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(self.take(8)?.get_i64())
    }
    fn nullable_str(&mut self) -> Result<Option<String>, String> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let raw = self.take(len as usize)?;
        String::from_utf8(raw.to_vec())
            .map(Some)
            .map_err(|_| "a string is not UTF-8".to_string())
    }
    fn str(&mut self) -> Result<String, String> {
        self.nullable_str()?
            .ok_or_else(|| "a string is null".to_string())
    }
    fn bytes(&mut self) -> Result<Bytes, String> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }
}

/// Strom's first format: versioned JSON keys and values (read only).
mod legacy {
    use super::*;

    #[derive(Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Key {
        Offset {
            group: String,
            topic: String,
            partition: i32,
        },
        Group {
            group: String,
        },
    }

    #[derive(Deserialize)]
    struct VersionedKey {
        version: u16,
        #[serde(flatten)]
        key: Key,
    }

    #[derive(Deserialize)]
    struct Offset {
        offset: i64,
        leader_epoch: i32,
        metadata: Option<String>,
        commit_timestamp_ms: i64,
    }

    #[derive(Deserialize)]
    struct Member {
        member_id: String,
        group_instance_id: Option<String>,
        client_id: String,
        client_host: String,
        session_timeout_ms: i32,
        rebalance_timeout_ms: i32,
        subscription: String,
        assignment: String,
    }

    #[derive(Deserialize)]
    struct Group {
        protocol_type: Option<String>,
        generation: i32,
        protocol: Option<String>,
        leader: Option<String>,
        state_timestamp_ms: i64,
        members: Vec<Member>,
    }

    fn json<T: serde::de::DeserializeOwned>(v: &[u8]) -> Result<T, String> {
        serde_json::from_slice(v).map_err(|e| e.to_string())
    }

    pub(super) fn decode(key: &[u8], value: Option<&[u8]>) -> Result<GroupRecord, String> {
        let k: VersionedKey = serde_json::from_slice(key).map_err(|e| e.to_string())?;
        if k.version != 1 {
            return Err(format!("unknown JSON key version {}", k.version));
        }
        Ok(match k.key {
            Key::Offset {
                group,
                topic,
                partition,
            } => GroupRecord::Offset {
                group,
                topic,
                partition,
                value: value.map(json).transpose()?.map(|o: Offset| OffsetValue {
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    metadata: o.metadata,
                    commit_timestamp_ms: o.commit_timestamp_ms,
                }),
            },
            Key::Group { group } => GroupRecord::Group {
                group,
                value: value.map(json).transpose()?.map(|g: Group| GroupValue {
                    protocol_type: g.protocol_type,
                    generation: g.generation,
                    protocol: g.protocol,
                    leader: g.leader,
                    state_timestamp_ms: g.state_timestamp_ms,
                    members: g
                        .members
                        .into_iter()
                        .map(|m| MemberValue {
                            member_id: m.member_id,
                            group_instance_id: m.group_instance_id,
                            client_id: m.client_id,
                            client_host: m.client_host,
                            session_timeout_ms: m.session_timeout_ms,
                            rebalance_timeout_ms: m.rebalance_timeout_ms,
                            subscription: Bytes::from(unhex(&m.subscription).unwrap_or_default()),
                            assignment: Bytes::from(unhex(&m.assignment).unwrap_or_default()),
                        })
                        .collect(),
                }),
            },
        })
    }

    /// The inverse of the lower-case hex the JSON format kept protocol bytes in; `None`
    /// for anything that is not an even run of hex digits.
    pub(super) fn unhex(s: &str) -> Option<Vec<u8>> {
        if s.len() & 1 == 1 {
            return None;
        }
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        s.as_bytes()
            .chunks(2)
            .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(metadata: &str) -> GroupRecord {
        GroupRecord::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
            value: Some(OffsetValue {
                offset: 42,
                leader_epoch: 7,
                metadata: Some(metadata.into()),
                commit_timestamp_ms: 1_700_000_000_000,
            }),
        }
    }

    fn group() -> GroupRecord {
        GroupRecord::Group {
            group: "g".into(),
            value: Some(GroupValue {
                protocol_type: Some("consumer".into()),
                generation: 5,
                protocol: Some("range".into()),
                leader: Some("m-1".into()),
                state_timestamp_ms: 99,
                members: vec![MemberValue {
                    member_id: "m-1".into(),
                    group_instance_id: Some("static".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    session_timeout_ms: 45_000,
                    rebalance_timeout_ms: 300_000,
                    subscription: Bytes::from_static(b"\x00\x01sub"),
                    assignment: Bytes::from_static(b"\x00\x01asg"),
                }],
            }),
        }
    }

    #[test]
    fn records_round_trip_and_tombstones_have_no_value() {
        for rec in [offset("m"), group()] {
            let (k, v) = rec.encode();
            let d = GroupRecord::decode(&k, v.as_deref()).unwrap();
            assert_eq!((d.record, d.legacy_json), (rec, false));
        }
        let tomb = GroupRecord::Group {
            group: "g".into(),
            value: None,
        };
        let (k, v) = tomb.encode();
        assert!(v.is_none());
        assert_eq!(GroupRecord::decode(&k, None).unwrap().record, tomb);
    }

    #[test]
    fn the_bytes_are_kafkas_schemas() {
        // OffsetCommitKey v1: version, group, topic, partition.
        let (k, v) = offset("").encode();
        assert_eq!(&k[..], b"\x00\x01\x00\x01g\x00\x01t\x00\x00\x00\x03");
        // OffsetCommitValue v3: version, offset, leader epoch, metadata, commit timestamp.
        let mut expected = vec![0, 3];
        expected.extend(42i64.to_be_bytes());
        expected.extend(7i32.to_be_bytes());
        expected.extend([0, 0]);
        expected.extend(1_700_000_000_000i64.to_be_bytes());
        assert_eq!(v.unwrap().to_vec(), expected);
        // GroupMetadataKey v2: version, group.
        let (k, v) = group().encode();
        assert_eq!(&k[..], b"\x00\x02\x00\x01g");
        let v = v.unwrap();
        assert_eq!(&v[..2], [0, 3]);
        assert_eq!(&v[2..12], b"\x00\x08consumer");
    }

    #[test]
    fn older_value_versions_are_read() {
        // OffsetCommitValue v1 (Kafka before 2.1): offset, metadata, commit and expire time.
        let mut v1 = vec![0, 1];
        v1.extend(9i64.to_be_bytes());
        v1.extend(b"\x00\x02md");
        v1.extend(5i64.to_be_bytes());
        v1.extend((-1i64).to_be_bytes());
        let (k, _) = offset("").encode();
        let d = GroupRecord::decode(&k, Some(&v1)).unwrap();
        let GroupRecord::Offset { value: Some(o), .. } = d.record else {
            panic!("{d:?}")
        };
        assert_eq!(
            (
                o.offset,
                o.leader_epoch,
                o.metadata.as_deref(),
                o.commit_timestamp_ms
            ),
            (9, -1, Some("md"), 5)
        );
    }

    #[test]
    fn json_era_records_are_read_and_marked() {
        let key = br#"{"version":1,"type":"offset","group":"g","topic":"t","partition":3}"#;
        let value = br#"{"version":1,"offset":42,"leader_epoch":7,"metadata":"m","commit_timestamp_ms":1700000000000}"#;
        let d = GroupRecord::decode(key, Some(value)).unwrap();
        assert_eq!((d.record, d.legacy_json), (offset("m"), true));
        let key = br#"{"version":1,"type":"group","group":"g"}"#;
        let value = br#"{"version":1,"protocol_type":"consumer","generation":5,"protocol":"range","leader":"m-1","state_timestamp_ms":99,"members":[{"member_id":"m-1","group_instance_id":"static","client_id":"c","client_host":"/127.0.0.1","session_timeout_ms":45000,"rebalance_timeout_ms":300000,"subscription":"000173756","assignment":"0001617367"}]}"#;
        // An odd hex run is refused as no subscription at all, not a panic.
        let d = GroupRecord::decode(key, Some(value)).unwrap();
        assert!(d.legacy_json);
        assert_eq!(legacy::unhex("00abff").unwrap(), vec![0, 0xab, 0xff]);
        assert!(legacy::unhex("zz").is_none());
    }

    #[test]
    fn foreign_newer_and_short_records_are_refused() {
        assert!(GroupRecord::decode(b"\x00\x09whatever", None).is_err());
        assert!(GroupRecord::decode(b"\x00\x01\x00\x05g", None).is_err());
        assert!(GroupRecord::decode(br#"{"version":2,"type":"group","group":"g"}"#, None).is_err());
        let (k, _) = group().encode();
        assert!(GroupRecord::decode(&k, Some(b"\x00\x07")).is_err());
    }
}
