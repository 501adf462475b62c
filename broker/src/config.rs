//! Broker and topic configuration by Kafka property names: the table of supported
//! properties (type, default, documentation, validation), parsing of properties files and
//! `--override` flags, and the topic-level configs with their broker-level synonyms.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Kafka's config value types, with the numbering DescribeConfigs v3+ uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
}

/// One supported property.
pub struct ConfigDef {
    pub name: &'static str,
    pub ty: ConfigType,
    /// The default as Kafka renders it; `None` for a property that is unset by default.
    pub default: Option<&'static str>,
    pub doc: &'static str,
    /// Extra validation beyond the type (ranges, enumerations).
    pub check: fn(&str) -> Result<(), String>,
}

fn throttled_replicas(v: &str) -> Result<(), String> {
    crate::partition::throttle::validate_throttled_replicas(v)
}
fn replica_selector(v: &str) -> Result<(), String> {
    crate::partition::selector::ReplicaSelector::from_class(Some(v)).map(|_| ())
}
fn any(_: &str) -> Result<(), String> {
    Ok(())
}
fn non_negative(v: &str) -> Result<(), String> {
    match v.parse::<f64>() {
        Ok(n) if n >= 0.0 => Ok(()),
        _ => Err("must be at least 0".into()),
    }
}
fn at_least_minus_one(v: &str) -> Result<(), String> {
    match v.parse::<i64>() {
        Ok(n) if n >= -1 => Ok(()),
        _ => Err("must be at least -1".into()),
    }
}
fn non_empty(v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(())
}
fn non_empty_list(v: &str) -> Result<(), String> {
    if v.split(',').all(|s| s.trim().is_empty()) {
        return Err("must name at least one directory".into());
    }
    Ok(())
}
fn positive(v: &str) -> Result<(), String> {
    match v.parse::<f64>() {
        Ok(n) if n >= 1.0 => Ok(()),
        _ => Err("must be at least 1".into()),
    }
}
fn segment_bytes(v: &str) -> Result<(), String> {
    // Kafka's minimum: a segment must hold at least a record batch header.
    match v.parse::<i64>() {
        Ok(n) if n >= 14 => Ok(()),
        _ => Err("must be at least 14".into()),
    }
}
fn ratio(v: &str) -> Result<(), String> {
    match v.parse::<f64>() {
        Ok(n) if (0.0..=1.0).contains(&n) => Ok(()),
        _ => Err("must be between 0 and 1".into()),
    }
}
fn cleanup_policy(v: &str) -> Result<(), String> {
    let items: Vec<&str> = v.split(',').map(str::trim).collect();
    if items.is_empty() || items.iter().any(|i| *i != "delete" && *i != "compact") {
        return Err("must be a list of 'delete' and 'compact'".into());
    }
    Ok(())
}
fn timestamp_type(v: &str) -> Result<(), String> {
    match v {
        "CreateTime" | "LogAppendTime" => Ok(()),
        _ => Err("must be CreateTime or LogAppendTime".into()),
    }
}
fn compression_type(v: &str) -> Result<(), String> {
    match v {
        "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd" => Ok(()),
        _ => Err("must be one of producer, uncompressed, gzip, snappy, lz4, zstd".into()),
    }
}
/// Kafka's bounds for the codec levels (KIP-390): -1 means the codec's own default.
fn gzip_level(v: &str) -> Result<(), String> {
    match v.parse::<i32>() {
        Ok(-1 | 1..=9) => Ok(()),
        _ => Err("must be -1 or between 1 and 9".into()),
    }
}
fn lz4_level(v: &str) -> Result<(), String> {
    match v.parse::<i32>() {
        Ok(1..=17) => Ok(()),
        _ => Err("must be between 1 and 17".into()),
    }
}
fn zstd_level(v: &str) -> Result<(), String> {
    match v.parse::<i32>() {
        Ok(-131072..=22) => Ok(()),
        _ => Err("must be between -131072 and 22".into()),
    }
}
fn per_ip_overrides(v: &str) -> Result<(), String> {
    parse_per_ip_overrides(v).map(|_| ())
}

/// `max.connections.per.ip.overrides`: `ip:count` entries, comma-separated (IPv6 literals
/// may be bracketed).
pub fn parse_per_ip_overrides(
    v: &str,
) -> Result<std::collections::HashMap<std::net::IpAddr, usize>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (host, count) = entry
                .rsplit_once(':')
                .ok_or_else(|| format!("'{entry}' is not ip:count"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let ip = host.parse().map_err(|_| {
                format!("'{host}' is not an IP address (host names are not resolved)")
            })?;
            let count = count
                .parse()
                .map_err(|_| format!("'{count}' in '{entry}' is not a connection count"))?;
            Ok((ip, count))
        })
        .collect()
}
fn process_roles(v: &str) -> Result<(), String> {
    let mut roles: Vec<&str> = v.split(',').map(str::trim).collect();
    roles.sort_unstable();
    match roles.as_slice() {
        ["broker", "controller"] | ["controller"] | ["broker"] => Ok(()),
        _ => Err("must be a list of 'broker' and 'controller'".into()),
    }
}
fn listeners(v: &str) -> Result<(), String> {
    parse_listeners(v).map(|_| ())
}
fn host_ports(v: &str) -> Result<(), String> {
    parse_host_ports(v).map(|_| ())
}
fn voters(v: &str) -> Result<(), String> {
    parse_voters(v).map(|_| ())
}
fn protocol_map(v: &str) -> Result<(), String> {
    parse_protocol_map(v).map(|_| ())
}
fn socket_addr(v: &str) -> Result<(), String> {
    v.parse::<SocketAddr>()
        .map(|_| ())
        .map_err(|_| "must be host:port with a numeric IP address".into())
}

const BOOL: ConfigType = ConfigType::Boolean;
const STR: ConfigType = ConfigType::String;
const INT: ConfigType = ConfigType::Int;
const SHORT: ConfigType = ConfigType::Short;
const LONG: ConfigType = ConfigType::Long;
const DOUBLE: ConfigType = ConfigType::Double;
const LIST: ConfigType = ConfigType::List;

/// Every broker property Strom accepts. Anything else in a config file is refused.
pub static BROKER_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "node.id",
        ty: INT,
        default: Some("1"),
        doc: "This node's id in the cluster.",
        check: non_negative,
    },
    ConfigDef {
        name: "process.roles",
        ty: LIST,
        default: Some("broker,controller"),
        doc: "The roles this process plays.",
        check: process_roles,
    },
    ConfigDef {
        name: "listeners",
        ty: STR,
        default: Some("PLAINTEXT://127.0.0.1:9092"),
        doc: "The listeners, NAME://host:port separated by commas; each name's protocol comes from listener.security.protocol.map. A broker serves every listener not named in controller.listener.names, and clients are told the addresses of the listener they connected to.",
        check: listeners,
    },
    ConfigDef {
        name: "advertised.listeners",
        ty: STR,
        default: None,
        doc: "The addresses published for the broker listeners, NAME://host:port; a listener not named here is published as it listens.",
        check: listeners,
    },
    ConfigDef {
        name: "listener.security.protocol.map",
        ty: STR,
        default: Some("PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"),
        doc: "The security protocol of each listener name, NAME:PROTOCOL; only PLAINTEXT is supported so far.",
        check: protocol_map,
    },
    ConfigDef {
        name: "controller.listener.names",
        ty: LIST,
        default: None,
        doc: "The listener names used by controllers; a controller listens on the first, and other nodes reach the voters through it.",
        check: any,
    },
    ConfigDef {
        name: "inter.broker.listener.name",
        ty: STR,
        default: None,
        doc: "The listener brokers use to reach each other; defaults to the first broker listener.",
        check: any,
    },
    ConfigDef {
        name: "log.dirs",
        ty: LIST,
        default: None,
        doc: "Directories holding the partition logs; defaults to log.dir.",
        check: non_empty_list,
    },
    ConfigDef {
        name: "strom.log.open.files.max",
        ty: INT,
        default: Some("0"),
        doc: "Most segment files open at once; the least recently used are closed and opened again when next read, so a broker with many partitions fits its file-descriptor limit. 0: half the soft file-descriptor limit in force at start (raised to the hard limit first), at least 16. Kafka keeps every segment open.",
        check: non_negative,
    },
    ConfigDef {
        name: "log.dir",
        ty: STR,
        default: Some("./data"),
        doc: "The log directory used when log.dirs is unset.",
        check: non_empty,
    },
    ConfigDef {
        name: "broker.rack",
        ty: STR,
        default: None,
        doc: "The rack (zone) of this broker.",
        check: any,
    },
    ConfigDef {
        name: "replica.selector.class",
        ty: STR,
        default: None,
        doc: "Which replica consumers read from (KIP-392): org.apache.kafka.common.replica.RackAwareReplicaSelector sends a consumer with client.rack to a replica in its rack; unset or LeaderSelector, the leader.",
        check: replica_selector,
    },
    ConfigDef {
        name: "controller.quorum.voters",
        ty: LIST,
        default: None,
        doc: "The controller voters as id@host:port separated by commas (their controller listeners); unset, a single broker,controller node is its own quorum.",
        check: voters,
    },
    ConfigDef {
        name: "controller.quorum.bootstrap.servers",
        ty: LIST,
        default: None,
        doc: "Controller addresses (host:port, separated by commas) a broker-only node asks for the voters when controller.quorum.voters is unset (KIP-853). A controller may name only its own controller listener here: it is then a quorum of one, as after kafka-storage format --standalone. A dynamic quorum of several controllers is not supported.",
        check: host_ports,
    },
    ConfigDef {
        name: "broker.session.timeout.ms",
        ty: INT,
        default: Some("9000"),
        doc: "How long the active controller waits for a broker's heartbeat before it fences the broker (takes its leaderships away and stops offering it to clients).",
        check: positive,
    },
    ConfigDef {
        name: "broker.heartbeat.interval.ms",
        ty: INT,
        default: Some("2000"),
        doc: "How often a broker heartbeats to the active controller.",
        check: positive,
    },
    ConfigDef {
        name: "controller.quorum.election.timeout.ms",
        ty: INT,
        default: Some("1000"),
        doc: "How long a voter waits without hearing from a leader before it starts an election.",
        check: positive,
    },
    ConfigDef {
        name: "controller.quorum.fetch.timeout.ms",
        ty: INT,
        default: Some("2000"),
        doc: "How long a node waits for the active controller before it looks for another.",
        check: positive,
    },
    ConfigDef {
        name: "controller.quorum.request.timeout.ms",
        ty: INT,
        default: Some("2000"),
        doc: "How long one request to a controller may take before it is retried elsewhere.",
        check: positive,
    },
    ConfigDef {
        name: "metadata.log.max.record.bytes.between.snapshots",
        ty: LONG,
        default: Some("20971520"),
        doc: "Bytes of metadata records after which the controller snapshots the image and trims the metadata log.",
        check: positive,
    },
    ConfigDef {
        name: "auto.create.topics.enable",
        ty: BOOL,
        default: Some("true"),
        doc: "Create a topic when a client asks for its metadata.",
        check: any,
    },
    ConfigDef {
        name: "delete.topic.enable",
        ty: BOOL,
        default: Some("true"),
        doc: "Allow DeleteTopics.",
        check: any,
    },
    ConfigDef {
        name: "num.partitions",
        ty: INT,
        default: Some("1"),
        doc: "Partitions of an auto-created topic or a CreateTopics request without a count.",
        check: positive,
    },
    ConfigDef {
        name: "default.replication.factor",
        ty: INT,
        default: Some("1"),
        doc: "Replication factor of an auto-created topic or a CreateTopics request without one.",
        check: positive,
    },
    ConfigDef {
        name: "max.decompressed.message.bytes",
        ty: INT,
        default: Some("67108864"),
        doc: "The most bytes one record batch may decompress to; a produced batch beyond it is \
              refused with INVALID_RECORD (Kafka 4.4's default, 2147483639, sets no bound).",
        check: positive,
    },
    ConfigDef {
        name: "min.insync.replicas",
        ty: INT,
        default: Some("1"),
        doc: "Replicas that must acknowledge an acks=all write.",
        check: positive,
    },
    ConfigDef {
        name: "socket.request.max.bytes",
        ty: INT,
        default: Some("104857600"),
        doc: "The largest request frame accepted; a larger one closes the connection.",
        check: positive,
    },
    ConfigDef {
        name: "max.connections.per.ip",
        ty: INT,
        default: Some("2147483647"),
        doc: "Most connections from one IP address to the broker listeners; one more is closed at once.",
        check: non_negative,
    },
    ConfigDef {
        name: "max.connections.per.ip.overrides",
        ty: STR,
        default: Some(""),
        doc: "Per-address exceptions to max.connections.per.ip: a comma-separated list of ip:count (IP literals; Kafka also takes host names).",
        check: per_ip_overrides,
    },
    ConfigDef {
        name: "connections.max.idle.ms",
        ty: LONG,
        default: Some("600000"),
        doc: "A connection with no request for this long is closed (-1: never).",
        check: at_least_minus_one,
    },
    ConfigDef {
        name: "max.incremental.fetch.session.cache.slots",
        ty: INT,
        default: Some("1000"),
        doc: "Incremental fetch sessions (KIP-227) kept at once; 0 turns sessions off.",
        check: non_negative,
    },
    ConfigDef {
        name: "quota.window.num",
        ty: INT,
        default: Some("11"),
        doc: "Samples that a client quota's usage is measured over (Kafka's: ten whole \
              windows and the current one).",
        check: positive,
    },
    ConfigDef {
        name: "quota.window.size.seconds",
        ty: INT,
        default: Some("1"),
        doc: "Length of one sample of a client quota's usage, in seconds; a request-rate \
              throttle never exceeds one sample.",
        check: positive,
    },
    ConfigDef {
        name: "strom.fetch.session.eviction.ms",
        ty: LONG,
        default: Some("120000"),
        doc: "How long a fetch session is safe from eviction by a new one: idle this long it \
              may be taken by any, older than this by a consumer's with more partitions \
              (Kafka fixes it at 120000).",
        check: non_negative,
    },
    ConfigDef {
        name: "max.connections",
        ty: INT,
        default: Some("10000"),
        doc: "Most client connections served at once; one more is closed at once. Kafka's default is 2147483647.",
        check: positive,
    },
    ConfigDef {
        name: "queued.max.request.bytes",
        ty: LONG,
        default: Some("209715200"),
        doc: "Bytes of requests being received or handled, over all connections; a connection waits for room (at most strom.request.read.timeout.ms). -1: no bound. Kafka's default is -1.",
        check: at_least_minus_one,
    },
    ConfigDef {
        name: "strom.request.read.timeout.ms",
        ty: LONG,
        default: Some("30000"),
        doc: "A request whose first bytes arrived must be complete within this long, or its connection is closed.",
        check: positive,
    },
    ConfigDef {
        name: "fetch.max.bytes",
        ty: INT,
        default: Some("57671680"),
        doc: "Most record bytes in one consumer Fetch response; a larger max_bytes is lowered to it.",
        check: positive,
    },
    ConfigDef {
        name: "replica.fetch.response.max.bytes",
        ty: INT,
        default: Some("10485760"),
        doc: "Most record bytes in one Fetch response to a follower replica.",
        check: positive,
    },
    ConfigDef {
        name: "leader.replication.throttled.rate",
        ty: LONG,
        default: Some("9223372036854775807"),
        doc: "Bytes per second this broker as leader sends to followers of throttled replicas (leader.replication.throttled.replicas) that are out of the ISR; dynamic (IncrementalAlterConfigs on the broker or the cluster default).",
        check: non_negative,
    },
    ConfigDef {
        name: "follower.replication.throttled.rate",
        ty: LONG,
        default: Some("9223372036854775807"),
        doc: "Bytes per second this broker as follower fetches for throttled replicas (follower.replication.throttled.replicas) while out of the ISR; dynamic (IncrementalAlterConfigs on the broker or the cluster default).",
        check: non_negative,
    },
    ConfigDef {
        name: "replica.fetch.max.bytes",
        ty: INT,
        default: Some("1048576"),
        doc: "Record bytes a follower asks for per partition in one fetch (a larger first batch still comes whole).",
        check: positive,
    },
    ConfigDef {
        name: "replica.fetch.min.bytes",
        ty: INT,
        default: Some("1"),
        doc: "Bytes a follower's fetch waits for before the leader answers.",
        check: positive,
    },
    ConfigDef {
        name: "replica.fetch.wait.max.ms",
        ty: INT,
        default: Some("500"),
        doc: "Longest a follower's fetch waits at the leader for replica.fetch.min.bytes.",
        check: non_negative,
    },
    ConfigDef {
        name: "replica.fetch.backoff.ms",
        ty: INT,
        default: Some("1000"),
        doc: "Pause of a follower's fetcher after its leader could not be reached or refused a partition.",
        check: non_negative,
    },
    ConfigDef {
        name: "replica.lag.time.max.ms",
        ty: INT,
        default: Some("30000"),
        doc: "A follower that has not caught up with its leader for this long leaves the ISR; it rejoins once it has.",
        check: positive,
    },
    ConfigDef {
        name: "replica.high.watermark.checkpoint.interval.ms",
        ty: INT,
        default: Some("5000"),
        doc: "How often each log dir's replication-offset-checkpoint records its partitions' high watermarks.",
        check: positive,
    },
    ConfigDef {
        name: "message.max.bytes",
        ty: INT,
        default: Some("1048588"),
        doc: "The largest record batch accepted (topic synonym max.message.bytes).",
        check: non_negative,
    },
    ConfigDef {
        name: "log.segment.bytes",
        ty: INT,
        default: Some("1073741824"),
        doc: "Segment size at which the log rolls (topic synonym segment.bytes).",
        check: segment_bytes,
    },
    ConfigDef {
        name: "log.roll.ms",
        ty: LONG,
        default: None,
        doc: "Segment age at which the log rolls; overrides log.roll.hours.",
        check: positive,
    },
    ConfigDef {
        name: "log.roll.hours",
        ty: INT,
        default: Some("168"),
        doc: "Segment age in hours at which the log rolls.",
        check: positive,
    },
    ConfigDef {
        name: "log.retention.ms",
        ty: LONG,
        default: None,
        doc: "How long to keep a log; -1 keeps it forever. Overrides minutes and hours.",
        check: at_least_minus_one,
    },
    ConfigDef {
        name: "log.retention.minutes",
        ty: INT,
        default: None,
        doc: "How long to keep a log, in minutes; overrides hours.",
        check: at_least_minus_one,
    },
    ConfigDef {
        name: "log.retention.hours",
        ty: INT,
        default: Some("168"),
        doc: "How long to keep a log, in hours.",
        check: at_least_minus_one,
    },
    ConfigDef {
        name: "log.retention.bytes",
        ty: LONG,
        default: Some("-1"),
        doc: "Largest size of a partition's log; -1 for no limit.",
        check: at_least_minus_one,
    },
    ConfigDef {
        name: "log.retention.check.interval.ms",
        ty: LONG,
        default: Some("300000"),
        doc: "How often retention is checked.",
        check: positive,
    },
    ConfigDef {
        name: "log.cleanup.policy",
        ty: LIST,
        default: Some("delete"),
        doc: "Default cleanup.policy of topics.",
        check: cleanup_policy,
    },
    ConfigDef {
        name: "log.index.interval.bytes",
        ty: INT,
        default: Some("4096"),
        doc: "Bytes between offset index entries.",
        check: non_negative,
    },
    ConfigDef {
        name: "log.index.size.max.bytes",
        ty: INT,
        default: Some("10485760"),
        doc: "Largest offset index; the segment rolls when it is full.",
        check: positive,
    },
    ConfigDef {
        name: "log.flush.interval.messages",
        ty: LONG,
        default: Some("9223372036854775807"),
        doc: "Records appended before the log is fsynced.",
        check: positive,
    },
    ConfigDef {
        name: "log.flush.interval.ms",
        ty: LONG,
        default: None,
        doc: "Longest time a record stays in the page cache before fsync.",
        check: non_negative,
    },
    ConfigDef {
        name: "log.message.timestamp.type",
        ty: STR,
        default: Some("CreateTime"),
        doc: "CreateTime or LogAppendTime.",
        check: timestamp_type,
    },
    ConfigDef {
        name: "log.message.timestamp.before.max.ms",
        ty: LONG,
        default: Some("9223372036854775807"),
        doc: "How far in the past a record's timestamp may be.",
        check: non_negative,
    },
    ConfigDef {
        name: "log.message.timestamp.after.max.ms",
        ty: LONG,
        default: Some("3600000"),
        doc: "How far in the future a record's timestamp may be.",
        check: non_negative,
    },
    ConfigDef {
        name: "log.cleaner.delete.retention.ms",
        ty: LONG,
        default: Some("86400000"),
        doc: "How long tombstones are kept on compacted topics.",
        check: non_negative,
    },
    ConfigDef {
        name: "log.cleaner.min.compaction.lag.ms",
        ty: LONG,
        default: Some("0"),
        doc: "Least age of a record before compaction.",
        check: non_negative,
    },
    ConfigDef {
        name: "log.cleaner.max.compaction.lag.ms",
        ty: LONG,
        default: Some("9223372036854775807"),
        doc: "Greatest age of an uncompacted record.",
        check: positive,
    },
    ConfigDef {
        name: "log.cleaner.min.cleanable.ratio",
        ty: DOUBLE,
        default: Some("0.5"),
        doc: "Dirty ratio at which a log is compacted.",
        check: ratio,
    },
    ConfigDef {
        name: "log.cleaner.enable",
        ty: BOOL,
        default: Some("true"),
        doc: "Run the log cleaner that compacts topics with cleanup.policy=compact.",
        check: any,
    },
    ConfigDef {
        name: "log.cleaner.threads",
        ty: INT,
        default: Some("1"),
        doc: "Partitions compacted at the same time.",
        check: positive,
    },
    ConfigDef {
        name: "log.cleaner.backoff.ms",
        ty: LONG,
        default: Some("15000"),
        doc: "How long the cleaner sleeps when there is nothing to clean.",
        check: non_negative,
    },
    ConfigDef {
        name: "log.cleaner.io.max.bytes.per.second",
        ty: DOUBLE,
        default: Some("1.7976931348623157E308"),
        doc: "Read and write rate limit of each cleaner thread.",
        check: positive,
    },
    ConfigDef {
        name: "log.cleaner.dedupe.buffer.size",
        ty: LONG,
        default: Some("134217728"),
        doc: "Memory for the key map of one clean, shared by the cleaner threads.",
        check: positive,
    },
    ConfigDef {
        name: "log.segment.delete.delay.ms",
        ty: LONG,
        default: Some("60000"),
        doc: "Delay before a deleted segment's files are removed.",
        check: non_negative,
    },
    ConfigDef {
        name: "compression.type",
        ty: STR,
        default: Some("producer"),
        doc: "Codec of stored batches (the default for topics that do not set it): \
              'producer' keeps each batch as produced; uncompressed, gzip, snappy, lz4 or \
              zstd recompresses a batch produced with another codec.",
        check: compression_type,
    },
    ConfigDef {
        name: "compression.gzip.level",
        ty: INT,
        default: Some("-1"),
        doc: "gzip level of batches the broker compresses: 1-9, -1 for zlib's default (6).",
        check: gzip_level,
    },
    ConfigDef {
        name: "compression.lz4.level",
        ty: INT,
        default: Some("9"),
        doc: "lz4 level of batches the broker compresses: 1-17.",
        check: lz4_level,
    },
    ConfigDef {
        name: "compression.zstd.level",
        ty: INT,
        default: Some("3"),
        doc: "zstd level of batches the broker compresses: -131072 to 22.",
        check: zstd_level,
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        ty: BOOL,
        default: Some("false"),
        doc: "Whether an out-of-sync replica may become leader when no in-sync replica is \
              live, losing what it lacks (the default for topics that do not set it).",
        check: any,
    },
    ConfigDef {
        name: "auto.leader.rebalance.enable",
        ty: BOOL,
        default: Some("true"),
        doc: "Whether the active controller hands leaderships back to their preferred (first) \
              replica when a broker's share of moved leaderships passes \
              leader.imbalance.per.broker.percentage.",
        check: any,
    },
    ConfigDef {
        name: "leader.imbalance.per.broker.percentage",
        ty: INT,
        default: Some("10"),
        doc: "The share of a broker's preferred partitions that may be led elsewhere before \
              the controller moves them back.",
        check: non_negative,
    },
    ConfigDef {
        name: "leader.imbalance.check.interval.seconds",
        ty: LONG,
        default: Some("300"),
        doc: "How often the active controller checks for leadership imbalance.",
        check: positive,
    },
    ConfigDef {
        name: "offsets.topic.num.partitions",
        ty: INT,
        default: Some("50"),
        doc: "Partitions of the internal __consumer_offsets topic (fixed once it exists).",
        check: positive,
    },
    ConfigDef {
        name: "offsets.topic.replication.factor",
        ty: INT,
        default: None,
        doc: "Replication factor of __consumer_offsets. Unset: 3 (Kafka's default) on a \
              cluster, 1 on a node that is its cluster's only voter and broker (the \
              zero-argument single node). With fewer live brokers than this, group \
              coordination answers COORDINATOR_NOT_AVAILABLE until there are enough.",
        check: positive,
    },
    ConfigDef {
        name: "offsets.commit.timeout.ms",
        ty: INT,
        default: Some("5000"),
        doc: "How long an offset commit waits for every in-sync replica of its \
              __consumer_offsets partition before it is answered COORDINATOR_NOT_AVAILABLE.",
        check: positive,
    },
    // Every Kafka single-node quick-start config sets these two, so a config written
    // for Kafka must start Strom; they are validated like Kafka's but have no effect
    // until transactions (and their __transaction_state topic) exist.
    ConfigDef {
        name: "transaction.state.log.replication.factor",
        ty: SHORT,
        default: Some("3"),
        doc: "Replication factor of __transaction_state (no effect until Strom has transactions).",
        check: positive,
    },
    ConfigDef {
        name: "transaction.state.log.min.isr",
        ty: INT,
        default: Some("2"),
        doc: "min.insync.replicas of __transaction_state (no effect until Strom has transactions).",
        check: positive,
    },
    ConfigDef {
        name: "offsets.topic.segment.bytes",
        ty: INT,
        default: Some("104857600"),
        doc: "Segment size of __consumer_offsets.",
        check: segment_bytes,
    },
    ConfigDef {
        name: "offsets.retention.minutes",
        ty: INT,
        default: Some("10080"),
        doc: "How long the committed offsets of an empty group are kept.",
        check: positive,
    },
    ConfigDef {
        name: "producer.id.expiration.ms",
        ty: INT,
        default: Some("86400000"),
        doc: "How long a partition keeps an idle idempotent producer's state (checked on the retention pass, log.retention.check.interval.ms).",
        check: positive,
    },
    ConfigDef {
        name: "offsets.retention.check.interval.ms",
        ty: LONG,
        default: Some("600000"),
        doc: "How often expired offsets and empty groups are removed.",
        check: positive,
    },
    ConfigDef {
        name: "offset.metadata.max.bytes",
        ty: INT,
        default: Some("4096"),
        doc: "Largest metadata string of a committed offset.",
        check: non_negative,
    },
    ConfigDef {
        name: "group.initial.rebalance.delay.ms",
        ty: INT,
        default: Some("3000"),
        doc: "How long the first rebalance of an empty group waits for more members.",
        check: non_negative,
    },
    ConfigDef {
        name: "group.min.session.timeout.ms",
        ty: INT,
        default: Some("6000"),
        doc: "Smallest session timeout a group member may ask for.",
        check: non_negative,
    },
    ConfigDef {
        name: "group.max.session.timeout.ms",
        ty: INT,
        default: Some("1800000"),
        doc: "Largest session timeout a group member may ask for.",
        check: non_negative,
    },
    ConfigDef {
        name: "group.max.size",
        ty: INT,
        default: Some("2147483647"),
        doc: "Most members of one consumer group.",
        check: positive,
    },
    ConfigDef {
        name: "strom.http.listener",
        ty: STR,
        default: Some("127.0.0.1:9644"),
        doc: "Address of the HTTP listener serving /metrics, /healthz and /readyz.",
        check: socket_addr,
    },
    ConfigDef {
        name: "strom.shutdown.timeout.ms",
        ty: LONG,
        default: Some("30000"),
        doc: "How long a clean shutdown waits for in-flight requests.",
        check: non_negative,
    },
];

/// A topic-level property, and the broker property that supplies its default.
pub struct TopicConfigDef {
    pub def: ConfigDef,
    pub broker_synonym: Option<&'static str>,
}

const fn topic(
    name: &'static str,
    ty: ConfigType,
    default: Option<&'static str>,
    doc: &'static str,
    check: fn(&str) -> Result<(), String>,
    broker_synonym: Option<&'static str>,
) -> TopicConfigDef {
    TopicConfigDef {
        def: ConfigDef {
            name,
            ty,
            default,
            doc,
            check,
        },
        broker_synonym,
    }
}

/// Every topic property Strom accepts, with Kafka's defaults.
pub static TOPIC_CONFIGS: &[TopicConfigDef] = &[
    topic(
        "cleanup.policy",
        LIST,
        Some("delete"),
        "delete, compact, or both.",
        cleanup_policy,
        Some("log.cleanup.policy"),
    ),
    topic(
        "compression.type",
        STR,
        Some("producer"),
        "Codec of stored batches: producer (as produced), uncompressed, gzip, snappy, lz4, zstd.",
        compression_type,
        Some("compression.type"),
    ),
    topic(
        "compression.gzip.level",
        INT,
        Some("-1"),
        "gzip level when the broker compresses.",
        gzip_level,
        Some("compression.gzip.level"),
    ),
    topic(
        "compression.lz4.level",
        INT,
        Some("9"),
        "lz4 level when the broker compresses.",
        lz4_level,
        Some("compression.lz4.level"),
    ),
    topic(
        "compression.zstd.level",
        INT,
        Some("3"),
        "zstd level when the broker compresses.",
        zstd_level,
        Some("compression.zstd.level"),
    ),
    topic(
        "delete.retention.ms",
        LONG,
        Some("86400000"),
        "How long tombstones are kept.",
        non_negative,
        Some("log.cleaner.delete.retention.ms"),
    ),
    topic(
        "file.delete.delay.ms",
        LONG,
        Some("60000"),
        "Delay before a deleted segment's files are removed.",
        non_negative,
        Some("log.segment.delete.delay.ms"),
    ),
    topic(
        "flush.messages",
        LONG,
        Some("9223372036854775807"),
        "Records appended before fsync.",
        positive,
        Some("log.flush.interval.messages"),
    ),
    topic(
        "flush.ms",
        LONG,
        Some("9223372036854775807"),
        "Time before fsync.",
        non_negative,
        Some("log.flush.interval.ms"),
    ),
    topic(
        "index.interval.bytes",
        INT,
        Some("4096"),
        "Bytes between offset index entries.",
        non_negative,
        Some("log.index.interval.bytes"),
    ),
    topic(
        "max.compaction.lag.ms",
        LONG,
        Some("9223372036854775807"),
        "Greatest age of an uncompacted record.",
        positive,
        Some("log.cleaner.max.compaction.lag.ms"),
    ),
    topic(
        "max.decompressed.message.bytes",
        INT,
        Some("67108864"),
        "The most bytes one record batch may decompress to.",
        positive,
        Some("max.decompressed.message.bytes"),
    ),
    topic(
        "max.message.bytes",
        INT,
        Some("1048588"),
        "The largest record batch accepted.",
        non_negative,
        Some("message.max.bytes"),
    ),
    topic(
        "message.timestamp.type",
        STR,
        Some("CreateTime"),
        "CreateTime or LogAppendTime.",
        timestamp_type,
        Some("log.message.timestamp.type"),
    ),
    topic(
        "message.timestamp.before.max.ms",
        LONG,
        Some("9223372036854775807"),
        "How far in the past a timestamp may be.",
        non_negative,
        Some("log.message.timestamp.before.max.ms"),
    ),
    topic(
        "message.timestamp.after.max.ms",
        LONG,
        Some("3600000"),
        "How far in the future a timestamp may be.",
        non_negative,
        Some("log.message.timestamp.after.max.ms"),
    ),
    topic(
        "min.cleanable.dirty.ratio",
        DOUBLE,
        Some("0.5"),
        "Dirty ratio at which the log is compacted.",
        ratio,
        Some("log.cleaner.min.cleanable.ratio"),
    ),
    topic(
        "min.compaction.lag.ms",
        LONG,
        Some("0"),
        "Least age of a record before compaction.",
        non_negative,
        Some("log.cleaner.min.compaction.lag.ms"),
    ),
    topic(
        "min.insync.replicas",
        INT,
        Some("1"),
        "Replicas that must acknowledge an acks=all write.",
        positive,
        Some("min.insync.replicas"),
    ),
    topic(
        "preallocate",
        BOOL,
        Some("false"),
        "Preallocate segment files (ignored).",
        any,
        None,
    ),
    topic(
        "retention.bytes",
        LONG,
        Some("-1"),
        "Largest size of a partition's log.",
        at_least_minus_one,
        Some("log.retention.bytes"),
    ),
    topic(
        "retention.ms",
        LONG,
        Some("604800000"),
        "How long records are kept.",
        at_least_minus_one,
        Some("log.retention.ms"),
    ),
    topic(
        "segment.bytes",
        INT,
        Some("1073741824"),
        "Segment size at which the log rolls.",
        segment_bytes,
        Some("log.segment.bytes"),
    ),
    topic(
        "segment.index.bytes",
        INT,
        Some("10485760"),
        "Largest offset index of a segment.",
        positive,
        Some("log.index.size.max.bytes"),
    ),
    topic(
        "segment.jitter.ms",
        LONG,
        Some("0"),
        "Random jitter subtracted from segment.ms.",
        non_negative,
        None,
    ),
    topic(
        "segment.ms",
        LONG,
        Some("604800000"),
        "Segment age at which the log rolls.",
        positive,
        Some("log.roll.ms"),
    ),
    topic(
        "leader.replication.throttled.replicas",
        LIST,
        Some(""),
        "Replicas whose leader-side replication leader.replication.throttled.rate limits while their follower is out of the ISR: partition:broker pairs (the replicas being read from), or * for all.",
        throttled_replicas,
        None,
    ),
    topic(
        "follower.replication.throttled.replicas",
        LIST,
        Some(""),
        "Replicas whose fetching follower.replication.throttled.rate limits while they are out of the ISR: partition:broker pairs (the replicas being added), or * for all.",
        throttled_replicas,
        None,
    ),
    topic(
        "unclean.leader.election.enable",
        BOOL,
        Some("false"),
        "Whether an out-of-sync replica may become leader when no in-sync replica is live, \
         losing what it lacks.",
        any,
        Some("unclean.leader.election.enable"),
    ),
];

/// Broker properties besides the topic defaults that IncrementalAlterConfigs may change at
/// run time, per broker or as the cluster default (Kafka's dynamic broker configs that
/// Strom applies live).
const DYNAMIC_BROKER_CONFIGS: &[&str] = &[
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
    "max.connections",
    "max.connections.per.ip",
    "max.connections.per.ip.overrides",
    // The cleaner's own settings (Kafka reconfigures its cleaner with them).
    "log.cleaner.threads",
    "log.cleaner.backoff.ms",
    "log.cleaner.io.max.bytes.per.second",
    "log.cleaner.dedupe.buffer.size",
    // The other spellings of topic defaults' broker synonyms.
    "log.retention.minutes",
    "log.retention.hours",
    "log.roll.hours",
];

/// Whether a broker property may be changed at run time (AlterConfigs on a BROKER
/// resource): the defaults of topic configs (`log.retention.ms`, `message.max.bytes`,
/// `log.cleaner.min.cleanable.ratio`, ... every topic config's broker synonym), the
/// replication throttles, the connection limits and the log cleaner's own settings.
pub fn is_dynamic_broker_config(name: &str) -> bool {
    DYNAMIC_BROKER_CONFIGS.contains(&name)
        || TOPIC_CONFIGS.iter().any(|t| t.broker_synonym == Some(name))
}

/// The broker properties a topic config's default comes from (its synonym, and the other
/// spellings of the retention and roll times).
pub fn topic_default_sources(name: &str) -> Vec<&'static str> {
    match name {
        "retention.ms" => vec![
            "log.retention.ms",
            "log.retention.minutes",
            "log.retention.hours",
        ],
        "segment.ms" => vec!["log.roll.ms", "log.roll.hours"],
        _ => topic_def(name)
            .and_then(|d| d.broker_synonym)
            .into_iter()
            .collect(),
    }
}

impl BrokerConfig {
    /// This configuration with the dynamic broker configs on top (the cluster-wide
    /// defaults, then the broker's own), as if its properties had set them.
    pub fn with_dynamic(
        &self,
        cluster_default: &BTreeMap<String, String>,
        own: Option<&BTreeMap<String, String>>,
    ) -> BrokerConfig {
        let mut out = self.clone();
        for (k, v) in cluster_default.iter().chain(own.into_iter().flatten()) {
            if is_dynamic_broker_config(k) {
                out.explicit.insert(k.clone(), v.clone());
            }
        }
        out
    }
}

pub fn broker_def(name: &str) -> Option<&'static ConfigDef> {
    BROKER_CONFIGS.iter().find(|d| d.name == name)
}

pub fn topic_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.def.name == name)
}

/// Checks `value` against a definition's type and its own rule; the error names neither the
/// property nor the value, so callers can phrase it for their context.
pub fn validate(def: &ConfigDef, value: &str) -> Result<(), String> {
    let v = value.trim();
    let typed = match def.ty {
        ConfigType::Boolean => matches!(v, "true" | "false")
            .then_some(())
            .ok_or_else(|| "must be true or false".to_string()),
        ConfigType::Int => v
            .parse::<i32>()
            .map(|_| ())
            .map_err(|_| "must be a 32-bit integer".to_string()),
        ConfigType::Short => v
            .parse::<i16>()
            .map(|_| ())
            .map_err(|_| "must be a 16-bit integer".to_string()),
        ConfigType::Long => v
            .parse::<i64>()
            .map(|_| ())
            .map_err(|_| "must be a 64-bit integer".to_string()),
        ConfigType::Double => v
            .parse::<f64>()
            .map(|_| ())
            .map_err(|_| "must be a number".to_string()),
        ConfigType::String | ConfigType::List => Ok(()),
    };
    typed.and_then(|_| (def.check)(v))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown property '{0}'")]
    Unknown(String),
    #[error("invalid value '{value}' for property '{name}': {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
    #[error("malformed line {line} in {file}: expected key=value")]
    Malformed { file: String, line: usize },
    #[error("cannot read config file {file}: {cause}")]
    Read { file: String, cause: std::io::Error },
    #[error("{}", join_errors(.0))]
    Several(Vec<ConfigError>),
}

fn join_errors(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One parsed `NAME://host:port` listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Listener {
    /// `host:port`, with brackets around an IPv6 host.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn parse_listeners(v: &str) -> Result<Vec<Listener>, String> {
    let mut out: Vec<Listener> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, rest) = item
            .split_once("://")
            .ok_or_else(|| format!("{item} must be NAME://host:port"))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "{item}: the listener name must be letters, digits and '_'"
            ));
        }
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("{item} must be NAME://host:port"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{item}: the port must be a number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if out.iter().any(|l| l.name == name) {
            return Err(format!("the listener name {name} appears twice"));
        }
        out.push(Listener {
            name: name.to_owned(),
            host: host.to_owned(),
            port,
        });
    }
    if out.is_empty() {
        return Err("at least one listener is needed".into());
    }
    Ok(out)
}

fn parse_host_ports(v: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (_, port) = item
            .rsplit_once(':')
            .ok_or_else(|| format!("{item} must be host:port"))?;
        port.parse::<u16>()
            .map_err(|_| format!("{item}: the port must be a number"))?;
        out.push(item.to_owned());
    }
    if out.is_empty() {
        return Err("at least one host:port is needed".into());
    }
    Ok(out)
}

fn parse_voters(v: &str) -> Result<BTreeMap<i32, String>, String> {
    let mut out = BTreeMap::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('@')
            .ok_or_else(|| format!("{item} must be id@host:port"))?;
        let id: i32 = id
            .parse()
            .ok()
            .filter(|i| *i >= 0)
            .ok_or_else(|| format!("{item}: the voter id must be a non-negative number"))?;
        let (_, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("{item} must be id@host:port"))?;
        port.parse::<u16>()
            .map_err(|_| format!("{item}: the port must be a number"))?;
        if out.insert(id, addr.to_owned()).is_some() {
            return Err(format!("voter {id} appears twice"));
        }
    }
    Ok(out)
}

fn parse_protocol_map(v: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, protocol) = item
            .split_once(':')
            .ok_or_else(|| format!("{item} must be NAME:PROTOCOL"))?;
        match protocol {
            "PLAINTEXT" => {}
            "SSL" | "SASL_PLAINTEXT" | "SASL_SSL" => {
                return Err(format!(
                    "{name}: security protocol {protocol} is not supported yet (only PLAINTEXT)"
                ))
            }
            other => return Err(format!("{name}: unknown security protocol {other}")),
        }
        out.insert(name.to_owned(), protocol.to_owned());
    }
    Ok(out)
}

/// The roles of `process.roles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

/// The broker's configuration: the properties set explicitly (by file or override), and
/// typed accessors that fall back to the defaults of the table.
#[derive(Debug, Clone, Default)]
pub struct BrokerConfig {
    explicit: BTreeMap<String, String>,
    /// The voters a broker-only node learned from controller.quorum.bootstrap.servers.
    discovered_voters: Option<BTreeMap<i32, String>>,
}

impl BrokerConfig {
    /// Builds a configuration from a properties file's text (if any) and `key=value`
    /// overrides, refusing unknown properties and invalid values.
    pub fn load(file: Option<(&str, &str)>, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut explicit = BTreeMap::new();
        if let Some((name, text)) = file {
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                    continue;
                }
                let (k, v) = line
                    .split_once('=')
                    .or_else(|| line.split_once(':'))
                    .ok_or_else(|| ConfigError::Malformed {
                        file: name.to_owned(),
                        line: i + 1,
                    })?;
                explicit.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
        for o in overrides {
            let (k, v) = o.split_once('=').ok_or_else(|| ConfigError::Malformed {
                file: "--override".to_owned(),
                line: 0,
            })?;
            explicit.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        // Every refused property at once, so that fixing a config file (say, one written
        // for a multi-node Kafka) takes one attempt rather than one per property.
        let mut errors: Vec<ConfigError> = explicit
            .iter()
            .filter_map(|(k, v)| match broker_def(k) {
                None => Some(ConfigError::Unknown(k.clone())),
                Some(def) => validate(def, v).err().map(|reason| ConfigError::Invalid {
                    name: k.clone(),
                    value: v.clone(),
                    reason,
                }),
            })
            .collect();
        if errors.is_empty() {
            errors.extend(
                BrokerConfig {
                    explicit: explicit.clone(),
                    discovered_voters: None,
                }
                .cross_check(),
            );
        }
        match errors.len() {
            0 => Ok(BrokerConfig {
                explicit,
                discovered_voters: None,
            }),
            1 => Err(errors.remove(0)),
            _ => Err(ConfigError::Several(errors)),
        }
    }

    /// The value set explicitly, if any.
    pub fn explicit(&self, name: &str) -> Option<&str> {
        self.explicit.get(name).map(String::as_str)
    }

    /// The effective value: explicit, else the table's default.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.explicit(name)
            .or_else(|| broker_def(name).and_then(|d| d.default))
    }

    pub fn int(&self, name: &str) -> i64 {
        // Every name passed here has a numeric default in the table and was validated.
        self.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    pub fn node_id(&self) -> i32 {
        self.int("node.id") as i32
    }
    pub fn roles(&self) -> Roles {
        let v = self.get("process.roles").unwrap_or_default();
        Roles {
            broker: v.split(',').any(|r| r.trim() == "broker"),
            controller: v.split(',').any(|r| r.trim() == "controller"),
        }
    }

    /// Every listener, as configured.
    pub fn listeners(&self) -> Vec<Listener> {
        parse_listeners(self.get("listeners").unwrap_or_default()).expect("validated at load")
    }

    /// The controller listener names (`controller.listener.names`).
    pub fn controller_listener_names(&self) -> Vec<String> {
        self.get("controller.listener.names")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The listeners that serve Kafka clients (every listener that is not a controller's).
    pub fn broker_listeners(&self) -> Vec<Listener> {
        let controller = self.controller_listener_names();
        self.listeners()
            .into_iter()
            .filter(|l| !controller.contains(&l.name))
            .collect()
    }

    /// The listener this controller serves its peers and brokers on, if it has one.
    pub fn controller_listener(&self) -> Option<Listener> {
        let names = self.controller_listener_names();
        let first = names.first()?;
        self.listeners().into_iter().find(|l| &l.name == first)
    }

    /// The first broker listener (what clients connect to when there is one).
    pub fn listener(&self) -> Listener {
        self.broker_listeners()
            .into_iter()
            .next()
            .or_else(|| self.listeners().into_iter().next())
            .expect("validated at load")
    }

    /// The listener brokers reach each other on: `inter.broker.listener.name`, else the
    /// first broker listener.
    pub fn inter_broker_listener_name(&self) -> String {
        self.explicit("inter.broker.listener.name")
            .map(str::to_owned)
            .unwrap_or_else(|| self.listener().name)
    }

    /// Every broker listener at the address it is published with.
    pub fn advertised_broker_listeners(&self) -> Vec<Listener> {
        self.broker_listeners()
            .iter()
            .map(|l| self.advertised(l))
            .collect()
    }

    /// The address published for a broker listener: its `advertised.listeners` entry of
    /// the same name, else where it listens.
    pub fn advertised(&self, listener: &Listener) -> Listener {
        self.explicit("advertised.listeners")
            .and_then(|v| parse_listeners(v).ok())
            .and_then(|all| all.into_iter().find(|l| l.name == listener.name))
            .unwrap_or_else(|| listener.clone())
    }

    pub fn advertised_listener(&self) -> Listener {
        self.advertised(&self.listener())
    }

    /// The controller voters by node id, with the address of each one's controller
    /// listener: controller.quorum.voters, else what a broker-only node learned from
    /// controller.quorum.bootstrap.servers; unset on a controller, it is the only voter
    /// (the zero-argument start, or a standalone quorum named by the bootstrap servers).
    pub fn voters(&self) -> BTreeMap<i32, String> {
        if let Some(found) = &self.discovered_voters {
            return found.clone();
        }
        match self.explicit("controller.quorum.voters") {
            Some(v) => parse_voters(v).expect("validated at load"),
            None => {
                let me = self
                    .controller_listener()
                    .unwrap_or_else(|| self.listener());
                BTreeMap::from([(self.node_id(), me.address())])
            }
        }
    }

    /// The controller.quorum.bootstrap.servers of a broker-only node that must learn the
    /// voters from them (`None` when the voters are configured or known).
    pub fn voters_to_discover(&self) -> Option<Vec<String>> {
        if self.discovered_voters.is_some()
            || self.roles().controller
            || self.explicit("controller.quorum.voters").is_some()
        {
            return None;
        }
        self.explicit("controller.quorum.bootstrap.servers")
            .map(|v| parse_host_ports(v).expect("validated at load"))
    }

    /// This configuration with the voters a bootstrap server named.
    pub fn with_discovered_voters(mut self, voters: BTreeMap<i32, String>) -> BrokerConfig {
        self.discovered_voters = Some(voters);
        self
    }

    pub fn broker_session_timeout_ms(&self) -> i64 {
        self.int("broker.session.timeout.ms")
    }
    pub fn broker_heartbeat_interval_ms(&self) -> u64 {
        self.int("broker.heartbeat.interval.ms") as u64
    }
    pub fn election_timeout_ms(&self) -> u64 {
        self.int("controller.quorum.election.timeout.ms") as u64
    }
    pub fn quorum_fetch_timeout_ms(&self) -> u64 {
        self.int("controller.quorum.fetch.timeout.ms") as u64
    }
    pub fn quorum_request_timeout_ms(&self) -> u64 {
        self.int("controller.quorum.request.timeout.ms") as u64
    }
    pub fn snapshot_bytes(&self) -> u64 {
        self.int("metadata.log.max.record.bytes.between.snapshots") as u64
    }

    /// Whether controller.quorum.bootstrap.servers names exactly this controller's own
    /// controller listener (Kafka 4's quick-start configuration): by port, with a host it
    /// listens or advertises on, or a loopback or wildcard name.
    fn bootstrap_names_only_me(&self, bootstrap: &str) -> bool {
        let Ok(servers) = parse_host_ports(bootstrap) else {
            return false;
        };
        let Some(me) = self.controller_listener() else {
            return false;
        };
        let advertised = self.advertised(&me);
        let [only] = servers.as_slice() else {
            return false;
        };
        let Some((host, port)) = only.rsplit_once(':') else {
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        port.parse::<u16>().ok() == Some(me.port)
            && (host == me.host
                || host == advertised.host
                || matches!(host, "localhost" | "0.0.0.0" | "::" | "::1" | "")
                || host.starts_with("127."))
    }

    /// Checks the properties against each other, as Kafka's KafkaConfig validation does;
    /// each problem names the property to change.
    fn cross_check(&self) -> Vec<ConfigError> {
        let invalid = |name: &str, reason: String| ConfigError::Invalid {
            name: name.to_owned(),
            value: self.get(name).unwrap_or_default().to_owned(),
            reason,
        };
        let mut errors = Vec::new();
        let roles = self.roles();
        let listeners = self.listeners();
        let controller_names = self.controller_listener_names();
        let map = parse_protocol_map(
            self.get("listener.security.protocol.map")
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        for l in &listeners {
            if !map.contains_key(&l.name) {
                errors.push(invalid(
                    "listener.security.protocol.map",
                    format!("no security protocol for listener {}", l.name),
                ));
            }
        }
        let voters_set = self.explicit("controller.quorum.voters").is_some();
        let voters = self.voters();
        if roles.controller {
            if voters_set && !voters.contains_key(&self.node_id()) {
                errors.push(invalid(
                    "controller.quorum.voters",
                    format!(
                        "node.id {} is a controller but not one of the voters",
                        self.node_id()
                    ),
                ));
            }
            if let Some(bootstrap) = self.explicit("controller.quorum.bootstrap.servers") {
                if !voters_set && !self.bootstrap_names_only_me(bootstrap) {
                    errors.push(invalid(
                        "controller.quorum.bootstrap.servers",
                        "a dynamic quorum of several controllers (KIP-853) is not supported: name the voters in controller.quorum.voters (a controller may name only its own controller listener here, a quorum of one)".into(),
                    ));
                }
            }
            let multi = voters.len() > 1;
            if (multi || !roles.broker) && self.controller_listener().is_none() {
                errors.push(invalid(
                    "controller.listener.names",
                    "a controller in a quorum of several voters (or a controller-only node) needs a listener named in controller.listener.names".into(),
                ));
            }
        } else if !voters_set
            && self
                .explicit("controller.quorum.bootstrap.servers")
                .is_none()
        {
            errors.push(invalid(
                "controller.quorum.voters",
                "a broker-only node must name the controller voters it follows (or controller.quorum.bootstrap.servers to ask them)".into(),
            ));
        } else if voters_set && voters.contains_key(&self.node_id()) {
            errors.push(invalid(
                "controller.quorum.voters",
                format!(
                    "node.id {} is a voter but process.roles has no controller",
                    self.node_id()
                ),
            ));
        }
        if roles.controller && !roles.broker {
            if let Some(l) = listeners
                .iter()
                .find(|l| !controller_names.contains(&l.name))
            {
                errors.push(invalid(
                    "listeners",
                    format!(
                        "a controller-only node cannot have the broker listener {}",
                        l.name
                    ),
                ));
            }
        }
        if roles.broker && self.broker_listeners().is_empty() {
            errors.push(invalid(
                "listeners",
                "a broker needs a listener that is not a controller listener".into(),
            ));
        }
        if let Some(name) = self.explicit("inter.broker.listener.name") {
            if !self.broker_listeners().iter().any(|l| l.name == name) {
                errors.push(invalid(
                    "inter.broker.listener.name",
                    format!("{name} is not one of the broker listeners"),
                ));
            }
        }
        if let Some(v) = self.explicit("advertised.listeners") {
            if let Ok(adv) = parse_listeners(v) {
                // A controller listener may be advertised too (Kafka 3.9+, KIP-853); it is
                // never offered to clients.
                for a in adv {
                    if !listeners.iter().any(|l| l.name == a.name) {
                        errors.push(invalid(
                            "advertised.listeners",
                            format!("{} is not one of the listeners", a.name),
                        ));
                    }
                }
            }
        }
        errors
    }

    pub fn log_dirs(&self) -> Vec<PathBuf> {
        let raw = self
            .explicit("log.dirs")
            .or_else(|| self.get("log.dir"))
            .unwrap_or("./data");
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect()
    }
    pub fn rack(&self) -> Option<String> {
        self.explicit("broker.rack").map(str::to_owned)
    }
    pub fn replica_selector(&self) -> crate::partition::selector::ReplicaSelector {
        // Checked when the config was loaded.
        crate::partition::selector::ReplicaSelector::from_class(
            self.explicit("replica.selector.class"),
        )
        .unwrap_or_default()
    }
    pub fn auto_create_topics(&self) -> bool {
        self.get("auto.create.topics.enable") == Some("true")
    }
    pub fn delete_topic_enable(&self) -> bool {
        self.get("delete.topic.enable") == Some("true")
    }
    pub fn num_partitions(&self) -> i32 {
        self.int("num.partitions") as i32
    }
    pub fn default_replication_factor(&self) -> i16 {
        self.int("default.replication.factor") as i16
    }
    pub fn socket_request_max_bytes(&self) -> usize {
        self.int("socket.request.max.bytes") as usize
    }
    /// `strom.log.open.files.max` in force given the soft file-descriptor limit `fd_limit`.
    pub fn open_files_max(&self, fd_limit: u64) -> usize {
        match self.int("strom.log.open.files.max") {
            0 => usize::try_from(fd_limit / 2).unwrap_or(usize::MAX),
            set => set as usize,
        }
        .max(crate::log::files::MIN_LIMIT)
    }
    pub fn fetch_session_slots(&self) -> usize {
        self.int("max.incremental.fetch.session.cache.slots").max(0) as usize
    }
    /// `quota.window.num` and `quota.window.size.seconds` (in milliseconds).
    pub fn quota_windows(&self) -> (u32, i64) {
        (
            self.int("quota.window.num").clamp(1, 1000) as u32,
            self.int("quota.window.size.seconds").clamp(1, 3600) * 1000,
        )
    }
    pub fn fetch_session_eviction_ms(&self) -> i64 {
        self.int("strom.fetch.session.eviction.ms")
    }
    /// `max.connections.per.ip` and its overrides.
    pub fn connections_per_ip(
        &self,
    ) -> (usize, std::collections::HashMap<std::net::IpAddr, usize>) {
        (
            self.int("max.connections.per.ip").max(0) as usize,
            parse_per_ip_overrides(self.get("max.connections.per.ip.overrides").unwrap_or(""))
                .unwrap_or_default(),
        )
    }
    /// `None` when connections may idle forever (-1).
    pub fn connections_max_idle(&self) -> Option<std::time::Duration> {
        let ms = self.int("connections.max.idle.ms");
        (ms >= 0).then(|| std::time::Duration::from_millis(ms as u64))
    }
    pub fn max_connections(&self) -> usize {
        self.int("max.connections") as usize
    }
    /// `None` when unbounded (-1).
    pub fn queued_max_request_bytes(&self) -> Option<usize> {
        usize::try_from(self.int("queued.max.request.bytes")).ok()
    }
    pub fn request_read_timeout_ms(&self) -> u64 {
        self.int("strom.request.read.timeout.ms") as u64
    }
    pub fn fetch_max_bytes(&self) -> usize {
        self.int("fetch.max.bytes") as usize
    }
    pub fn replica_fetch_response_max_bytes(&self) -> usize {
        self.int("replica.fetch.response.max.bytes") as usize
    }
    pub fn replica_fetch_max_bytes(&self) -> i32 {
        self.int("replica.fetch.max.bytes").min(i32::MAX as i64) as i32
    }
    pub fn replica_fetch_min_bytes(&self) -> i32 {
        self.int("replica.fetch.min.bytes").min(i32::MAX as i64) as i32
    }
    pub fn replica_fetch_wait_max_ms(&self) -> i32 {
        self.int("replica.fetch.wait.max.ms").min(i32::MAX as i64) as i32
    }
    pub fn replica_fetch_backoff_ms(&self) -> u64 {
        self.int("replica.fetch.backoff.ms") as u64
    }
    pub fn replica_fetcher_config(&self) -> crate::partition::fetcher::FetcherConfig {
        crate::partition::fetcher::FetcherConfig {
            listener: self.inter_broker_listener_name().into(),
            max_bytes_per_partition: self.replica_fetch_max_bytes(),
            response_max_bytes: self
                .replica_fetch_response_max_bytes()
                .min(i32::MAX as usize) as i32,
            min_bytes: self.replica_fetch_min_bytes(),
            max_wait_ms: self.replica_fetch_wait_max_ms(),
            backoff: std::time::Duration::from_millis(self.replica_fetch_backoff_ms()),
        }
    }
    pub fn replica_high_watermark_checkpoint_interval_ms(&self) -> i64 {
        self.int("replica.high.watermark.checkpoint.interval.ms")
    }
    pub fn replica_lag_time_max_ms(&self) -> i64 {
        self.int("replica.lag.time.max.ms")
    }
    pub fn http_listener(&self) -> SocketAddr {
        self.get("strom.http.listener")
            .and_then(|v| v.parse().ok())
            .expect("validated at load")
    }
    pub fn shutdown_timeout_ms(&self) -> u64 {
        self.int("strom.shutdown.timeout.ms") as u64
    }
    /// Reads an integer property of the group coordinator (validated at load).
    /// offsets.topic.replication.factor, or its default for this node (see the table).
    pub fn offsets_topic_replication_factor(&self) -> i16 {
        if let Some(v) = self.explicit("offsets.topic.replication.factor") {
            return v.parse().unwrap_or(3);
        }
        let voters = self.voters();
        let alone =
            self.roles().broker && voters.len() == 1 && voters.contains_key(&self.node_id());
        if alone {
            1
        } else {
            3
        }
    }
    pub fn group_int(&self, name: &str) -> i64 {
        self.int(name)
    }
    pub fn cleaner_enabled(&self) -> bool {
        self.get("log.cleaner.enable") == Some("true")
    }
    pub fn cleaner_threads(&self) -> usize {
        self.int("log.cleaner.threads").max(1) as usize
    }
    pub fn cleaner_backoff_ms(&self) -> u64 {
        self.int("log.cleaner.backoff.ms") as u64
    }
    pub fn cleaner_io_max_bytes_per_second(&self) -> f64 {
        self.get("log.cleaner.io.max.bytes.per.second")
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::MAX)
    }
    pub fn cleaner_dedupe_buffer_size(&self) -> usize {
        self.int("log.cleaner.dedupe.buffer.size") as usize
    }
    pub fn producer_id_expiration_ms(&self) -> i64 {
        self.int("producer.id.expiration.ms")
    }
    pub fn retention_check_interval_ms(&self) -> u64 {
        self.int("log.retention.check.interval.ms") as u64
    }

    /// The broker-level default of a topic property, as Kafka derives it from the broker
    /// synonym (for example retention.ms from log.retention.ms, .minutes or .hours), and
    /// whether that default was set explicitly on this broker.
    pub fn topic_default(&self, name: &str) -> Option<(String, bool)> {
        let def = topic_def(name)?;
        let ms = |ms: &str, minutes: Option<&str>, hours: &str| -> (String, bool) {
            if let Some(v) = self.explicit(ms) {
                return (v.to_owned(), true);
            }
            if let Some(m) = minutes.and_then(|m| self.explicit(m)) {
                let m: i64 = m.parse().unwrap_or(0);
                return ((if m < 0 { -1 } else { m * 60_000 }).to_string(), true);
            }
            let explicit = self.explicit(hours).is_some();
            let h: i64 = self.get(hours).and_then(|h| h.parse().ok()).unwrap_or(168);
            (
                (if h < 0 { -1 } else { h * 3_600_000 }).to_string(),
                explicit,
            )
        };
        match name {
            "retention.ms" => Some(ms(
                "log.retention.ms",
                Some("log.retention.minutes"),
                "log.retention.hours",
            )),
            "segment.ms" => Some(ms("log.roll.ms", None, "log.roll.hours")),
            "flush.ms" => Some(match self.explicit("log.flush.interval.ms") {
                Some(v) => (v.to_owned(), true),
                None => (def.def.default.unwrap_or_default().to_owned(), false),
            }),
            _ => match def.broker_synonym {
                Some(syn) => Some(match self.explicit(syn) {
                    Some(v) => (v.to_owned(), true),
                    None => (
                        self.get(syn)
                            .or(def.def.default)
                            .unwrap_or_default()
                            .to_owned(),
                        false,
                    ),
                }),
                None => Some((def.def.default.unwrap_or_default().to_owned(), false)),
            },
        }
    }
}

/// Typed topic configuration used by the log and the request handlers; built from a topic's
/// overrides on top of the broker defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub index_interval_bytes: u64,
    pub segment_index_bytes: u64,
    pub max_message_bytes: usize,
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub log_append_time: bool,
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub compact: bool,
    pub delete: bool,
    pub min_insync_replicas: i32,
    pub file_delete_delay_ms: i64,
    pub delete_retention_ms: i64,
    pub min_compaction_lag_ms: i64,
    pub max_compaction_lag_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    /// The codec every stored batch must have (`compression.type` other than `producer`),
    /// with its level; `None` keeps batches as produced.
    pub compression: Option<crate::log::codec::Codec>,
    /// `max.decompressed.message.bytes`: the most one batch may decompress to.
    pub max_decompressed_bytes: usize,
}

impl LogConfig {
    /// Resolves every topic property: the topic's override, else the broker default.
    pub fn resolve(broker: &BrokerConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
        let get = |name: &str| -> String {
            overrides
                .get(name)
                .cloned()
                .or_else(|| broker.topic_default(name).map(|(v, _)| v))
                .unwrap_or_default()
        };
        let num = |name: &str| -> i64 { get(name).trim().parse().unwrap_or(i64::MAX) };
        let policy = get("cleanup.policy");
        LogConfig {
            segment_bytes: num("segment.bytes").max(14) as u64,
            segment_ms: num("segment.ms"),
            index_interval_bytes: num("index.interval.bytes").max(0) as u64,
            segment_index_bytes: num("segment.index.bytes").max(8) as u64,
            max_message_bytes: num("max.message.bytes").max(0) as usize,
            flush_messages: num("flush.messages"),
            flush_ms: num("flush.ms"),
            log_append_time: get("message.timestamp.type") == "LogAppendTime",
            timestamp_before_max_ms: num("message.timestamp.before.max.ms"),
            timestamp_after_max_ms: num("message.timestamp.after.max.ms"),
            retention_ms: num("retention.ms"),
            retention_bytes: num("retention.bytes"),
            compact: policy.split(',').any(|p| p.trim() == "compact"),
            delete: policy.split(',').any(|p| p.trim() == "delete"),
            min_insync_replicas: num("min.insync.replicas") as i32,
            file_delete_delay_ms: num("file.delete.delay.ms"),
            delete_retention_ms: num("delete.retention.ms"),
            min_compaction_lag_ms: num("min.compaction.lag.ms"),
            max_compaction_lag_ms: num("max.compaction.lag.ms"),
            min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio")
                .trim()
                .parse()
                .unwrap_or(0.5),
            compression: crate::log::codec::Codec::from_config(&get("compression.type"), |codec| {
                num(&format!("compression.{codec}.level")) as i32
            }),
            max_decompressed_bytes: num("max.decompressed.message.bytes").max(1) as usize,
        }
    }
}

/// Validates one topic property as CreateTopics, AlterConfigs and IncrementalAlterConfigs
/// must: unknown names and invalid values are refused with a message naming them.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), String> {
    let def = topic_def(name).ok_or_else(|| format!("Unknown topic config name: {name}"))?;
    validate(&def.def, value)
        .map_err(|reason| format!("Invalid value {value} for configuration {name}: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_overrides_take_ip_literals_only() {
        let o = parse_per_ip_overrides(" 127.0.0.2:5, [::1]:0 ,").unwrap();
        assert_eq!(o[&"127.0.0.2".parse::<std::net::IpAddr>().unwrap()], 5);
        assert_eq!(o[&"::1".parse::<std::net::IpAddr>().unwrap()], 0);
        assert!(parse_per_ip_overrides("").unwrap().is_empty());
        for bad in ["host:5", "127.0.0.1", "127.0.0.1:many"] {
            assert!(parse_per_ip_overrides(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_start_a_single_node() {
        let c = BrokerConfig::load(None, &[]).unwrap();
        assert_eq!(c.node_id(), 1);
        assert_eq!(
            c.listener(),
            Listener {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9092
            }
        );
        assert_eq!(c.advertised_listener(), c.listener());
        assert_eq!(c.log_dirs(), vec![PathBuf::from("./data")]);
        assert!(c.auto_create_topics());
        assert_eq!(c.socket_request_max_bytes(), 104_857_600);
    }

    #[test]
    fn file_then_overrides() {
        let text = "# comment\nnode.id=3\nlog.dirs = /a,/b\nnum.partitions=4\n";
        let c = BrokerConfig::load(
            Some(("server.properties", text)),
            &["num.partitions=6".into()],
        )
        .unwrap();
        assert_eq!(c.node_id(), 3);
        assert_eq!(c.num_partitions(), 6);
        assert_eq!(c.log_dirs(), vec![PathBuf::from("/a"), PathBuf::from("/b")]);
    }

    #[test]
    fn refuses_unknown_and_invalid_properties_by_name() {
        let e = BrokerConfig::load(None, &["foo.bar=1".into()]).unwrap_err();
        assert!(e.to_string().contains("foo.bar"), "{e}");
        let e = BrokerConfig::load(None, &["num.partitions=abc".into()]).unwrap_err();
        assert!(e.to_string().contains("num.partitions"), "{e}");
        let e = BrokerConfig::load(None, &["listeners=SSL://x:1".into()]).unwrap_err();
        assert!(
            e.to_string().contains("listener.security.protocol.map"),
            "{e}"
        );
        let e = BrokerConfig::load(None, &["listeners=PLAINTEXT//x:1".into()]).unwrap_err();
        assert!(e.to_string().contains("listeners"), "{e}");
        for empty in ["log.dirs=", "log.dirs= , ", "log.dir="] {
            let e = BrokerConfig::load(None, &[empty.into()]).unwrap_err();
            assert!(e.to_string().contains("log.dir"), "{empty}: {e}");
        }
        let e = BrokerConfig::load(Some(("f", "nonsense\n")), &[]).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn every_refused_property_is_named() {
        let e = BrokerConfig::load(
            Some((
                "broker.properties",
                "process.roles=brokers\nlistener.security.protocol.map=PLAINTEXT:SSL\nnum.partitions=0\n",
            )),
            &[],
        )
        .unwrap_err();
        let text = e.to_string();
        for name in [
            "process.roles",
            "listener.security.protocol.map",
            "num.partitions",
        ] {
            assert!(text.contains(name), "{name} missing: {text}");
        }
    }

    #[test]
    fn transaction_state_properties_are_validated() {
        // The values Kafka's single-node quick-start config sets.
        let c = BrokerConfig::load(
            Some((
                "server.properties",
                "transaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\n",
            )),
            &[],
        )
        .unwrap();
        assert_eq!(c.get("transaction.state.log.replication.factor"), Some("1"));
        assert_eq!(c.get("transaction.state.log.min.isr"), Some("1"));
        for bad in [
            "transaction.state.log.replication.factor=0",
            "transaction.state.log.replication.factor=40000",
            "transaction.state.log.min.isr=0",
            "transaction.state.log.min.isr=x",
        ] {
            let e = BrokerConfig::load(None, &[bad.into()]).unwrap_err();
            let name = bad.split('=').next().unwrap();
            assert!(e.to_string().contains(name), "{bad}: {e}");
        }
    }

    #[test]
    fn broker_only_nodes_need_the_voters() {
        let e = BrokerConfig::load(None, &["process.roles=broker".into()]).unwrap_err();
        assert!(e.to_string().contains("controller.quorum.voters"), "{e}");
        let ok = BrokerConfig::load(
            None,
            &[
                "process.roles=broker".into(),
                "node.id=4".into(),
                "controller.quorum.voters=1@127.0.0.1:9093".into(),
                "controller.listener.names=CONTROLLER".into(),
            ],
        )
        .unwrap();
        assert!(ok.roles().broker && !ok.roles().controller);
    }

    #[test]
    fn quorum_and_listener_combinations_are_checked_by_name() {
        let load = |props: &[&str]| {
            BrokerConfig::load(
                None,
                &props.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        let three = "controller.quorum.voters=1@127.0.0.1:9093,2@127.0.0.2:9093,3@127.0.0.3:9093";
        let ok = load(&[
            "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
            "controller.listener.names=CONTROLLER",
            three,
        ])
        .unwrap();
        assert_eq!(ok.voters().len(), 3);
        assert_eq!(ok.listener().port, 9092);
        assert_eq!(ok.controller_listener().unwrap().port, 9093);
        for (props, name) in [
            // A voter id not in the voter set.
            (
                vec![
                    "node.id=7",
                    "listeners=PLAINTEXT://h:1,CONTROLLER://h:2",
                    "controller.listener.names=CONTROLLER",
                    three,
                ],
                "controller.quorum.voters",
            ),
            // Several voters but no controller listener.
            (vec![three], "controller.listener.names"),
            // A controller-only node with a broker listener.
            (
                vec![
                    "process.roles=controller",
                    "listeners=PLAINTEXT://h:1,CONTROLLER://h:2",
                    "controller.listener.names=CONTROLLER",
                    three,
                ],
                "listeners",
            ),
            // Other security protocols are refused by name.
            (
                vec![
                    "listeners=SSL://h:1",
                    "listener.security.protocol.map=SSL:SSL",
                ],
                "listener.security.protocol.map",
            ),
            // A listener without a protocol.
            (
                vec!["listeners=INTERNAL://h:1"],
                "listener.security.protocol.map",
            ),
            (
                vec!["inter.broker.listener.name=INTERNAL"],
                "inter.broker.listener.name",
            ),
            (
                vec!["controller.quorum.voters=1@nowhere"],
                "controller.quorum.voters",
            ),
            // A dynamic quorum of several controllers (KIP-853).
            (
                vec![
                    "process.roles=controller",
                    "listeners=CONTROLLER://h:2",
                    "controller.listener.names=CONTROLLER",
                    "controller.quorum.bootstrap.servers=h:2,g:2",
                ],
                "controller.quorum.bootstrap.servers",
            ),
            (
                vec!["controller.quorum.bootstrap.servers=h"],
                "controller.quorum.bootstrap.servers",
            ),
        ] {
            let e = load(&props).unwrap_err();
            assert!(e.to_string().contains(name), "{props:?}: {e}");
        }
        // The zero-argument node is its own voter on its client listener.
        let alone = load(&[]).unwrap();
        assert_eq!(
            alone.voters(),
            BTreeMap::from([(1, "127.0.0.1:9092".to_string())])
        );
        assert!(alone.roles().broker && alone.roles().controller);
    }

    #[test]
    fn bootstrap_servers_name_the_voters_to_ask_or_a_standalone_controller() {
        let load = |props: &[&str]| {
            BrokerConfig::load(
                None,
                &props.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        // Kafka 4's quick-start server.properties: a combined node whose bootstrap server
        // is its own controller listener, advertised too.
        let standalone = load(&[
            "listeners=PLAINTEXT://:9092,CONTROLLER://:9093",
            "advertised.listeners=PLAINTEXT://localhost:9092,CONTROLLER://localhost:9093",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.quorum.bootstrap.servers=localhost:9093",
        ])
        .unwrap();
        assert_eq!(standalone.voters().keys().copied().collect::<Vec<_>>(), [1]);
        assert_eq!(standalone.voters_to_discover(), None);
        // A broker-only node learns its voters from the bootstrap servers.
        let broker = load(&[
            "process.roles=broker",
            "node.id=7",
            "controller.quorum.bootstrap.servers=c1:9093, c2:9093",
            "controller.listener.names=CONTROLLER",
        ])
        .unwrap();
        assert_eq!(
            broker.voters_to_discover(),
            Some(vec!["c1:9093".to_string(), "c2:9093".to_string()])
        );
        let found = BTreeMap::from([(1, "c1:9093".to_string()), (2, "c2:9093".to_string())]);
        let broker = broker.with_discovered_voters(found.clone());
        assert_eq!(broker.voters(), found);
        assert_eq!(broker.voters_to_discover(), None);
        assert_eq!(broker.offsets_topic_replication_factor(), 3);
    }

    #[test]
    fn topic_defaults_follow_broker_synonyms() {
        let c = BrokerConfig::load(None, &[]).unwrap();
        assert_eq!(
            c.topic_default("retention.ms"),
            Some(("604800000".into(), false))
        );
        let c = BrokerConfig::load(None, &["log.retention.minutes=2".into()]).unwrap();
        assert_eq!(
            c.topic_default("retention.ms"),
            Some(("120000".into(), true))
        );
        let c = BrokerConfig::load(None, &["message.max.bytes=2000".into()]).unwrap();
        let lc = LogConfig::resolve(&c, &BTreeMap::new());
        assert_eq!(lc.max_message_bytes, 2000);
        let mut o = BTreeMap::new();
        o.insert("cleanup.policy".to_string(), "compact,delete".to_string());
        o.insert("segment.bytes".to_string(), "1000".to_string());
        let lc = LogConfig::resolve(&c, &o);
        assert!(lc.compact && lc.delete);
        assert_eq!(lc.segment_bytes, 1000);
    }

    #[test]
    fn topic_config_validation() {
        assert!(validate_topic_config("retention.ms", "1000").is_ok());
        assert!(validate_topic_config("retention.ms", "-2").is_err());
        assert!(validate_topic_config("retention.ms", "abc").is_err());
        assert!(validate_topic_config("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_topic_config("cleanup.policy", "forever").is_err());
        assert!(validate_topic_config("no.such.config", "1").is_err());
        assert!(validate_topic_config("min.cleanable.dirty.ratio", "1.5").is_err());
    }
}

/// The property tables of docs/configuration.md, rendered from the definitions above so
/// the documentation cannot drift from the code (a test compares them).
pub fn render_markdown_tables() -> String {
    let cell = |s: Option<&str>| match s {
        Some("") => "(empty)".to_string(),
        Some(v) => format!("`{v}`"),
        None => "(unset)".to_string(),
    };
    let mut out =
        String::from("### Broker properties\n\n| property | default | meaning |\n|---|---|---|\n");
    for d in BROKER_CONFIGS {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            d.name,
            cell(d.default),
            d.doc
        ));
    }
    out.push_str("\n### Topic properties\n\nA topic without an override takes the broker property in the last column.\n\n| property | Kafka default | meaning | broker default from |\n|---|---|---|---|\n");
    for t in TOPIC_CONFIGS {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            t.def.name,
            cell(t.def.default),
            t.def.doc,
            t.broker_synonym
                .map_or("—".to_string(), |s| format!("`{s}`"))
        ));
    }
    out
}

#[cfg(test)]
mod doc_tests {
    /// docs/configuration.md holds the rendered tables between two markers; set
    /// STROM_BLESS=1 to rewrite them after changing a property.
    #[test]
    fn configuration_doc_matches_the_property_tables() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
        let doc = std::fs::read_to_string(&path).expect("docs/configuration.md exists");
        let (begin, end) = ("<!-- BEGIN GENERATED -->\n", "<!-- END GENERATED -->");
        let start = doc.find(begin).expect("begin marker") + begin.len();
        let stop = doc.find(end).expect("end marker");
        let rendered = super::render_markdown_tables();
        if std::env::var_os("STROM_BLESS").is_some() {
            let new = format!("{}{}{}", &doc[..start], rendered, &doc[stop..]);
            std::fs::write(&path, new).unwrap();
            return;
        }
        assert_eq!(
            &doc[start..stop],
            rendered,
            "docs/configuration.md is stale: run STROM_BLESS=1 cargo test -p strom-broker configuration_doc"
        );
    }
}
