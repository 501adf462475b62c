//! Rebalance planning: from the brokers, the current replica assignment and a set of goals
//! (balance, drain brokers, change topics' replication factors), the target assignment that
//! reaches them with the fewest replica moves, keeping partitions rack-aware and preferred
//! leaders even. The result is a [`Plan`]: the changed partitions, measures before and
//! after, Kafka's `kafka-reassign-partitions` JSON and a table for a CLI to print.
//!
//! Planning is a pure function of its inputs, whatever order brokers and partitions come in:
//! every choice is made on a key that ends in (topic, partition, broker id). The golden files
//! under `core/testdata/rebalance/` pin plans down.
//!
//! # Eligible brokers, and offline ones
//!
//! A broker is *eligible* when it is online and not being drained; only eligible brokers
//! receive replicas, and balance and rack spread are measured over them. Replicas on a
//! drained broker move off it. Replicas on an **offline** broker move off it too, whatever
//! the goals: a broker that is gone must not hold the only copies of anything, and a plan
//! that waits for it would not converge. (Kafka's tools move them only when asked.) The new
//! replica copies from the partition's surviving replicas; one whose every replica is offline
//! is reassigned all the same and recovers when a replica comes back.
//!
//! # What every plan does
//!
//! Whatever the goals, a plan repairs each partition: replicas leave ineligible brokers, the
//! replication factor becomes the goal's (growing on the least-loaded brokers in racks the
//! partition does not use yet, shrinking by dropping followers from racks holding two of
//! its replicas first, then from the most-loaded brokers; the leader stays), and replicas
//! that share a rack while an eligible rack holds none of them are spread: afterwards every
//! partition spans `min(replication factor, eligible racks)` racks, which is always possible
//! once there are enough eligible brokers. Only what that requires moves; a replacement
//! takes the position of the replica it replaces, so a moved leader's successor leads.
//! Brokers without a rack form one rack of their own, as in [`crate::placement`].
//!
//! # Balance
//!
//! With [`Goals::balance`], replicas then spread over the eligible brokers (new, empty
//! brokers included: adding brokers is a Balance), one replica move at a time, each
//! choosing the cheapest partition (fewest new bytes: moving a replica this plan added
//! costs nothing, moving it back where it was saves its size; then the smallest):
//!
//! 1. Inside a rack, from its most- to its least-loaded broker while they differ by two or
//!    more. Such a move never changes a partition's racks, and one always exists (the fuller
//!    broker holds a partition the emptier one does not).
//! 2. Once every rack is even, from a rack `A` to a rack `B` whose busiest and idlest brokers
//!    differ by two or more, if some partition can go without losing rack spread (it has
//!    two replicas in `A`, or none in `B`) to a broker of `B` it is not on. Direct moves from
//!    a busiest broker to an idlest one come first; others need a move inside a rack after.
//!
//! Each step lowers a potential (the rack-level sum of squared loads, then the broker-level
//! one), so the loop ends, and it stops only when no step is possible. **The bound**: within
//! a rack, eligible brokers' replica counts differ by at most one; two brokers of different
//! racks differ by two or more only when no replica in the fuller one's rack can move to the
//! other rack without a partition losing rack spread. With racks of equal size (or no
//! racks) that never happens, so max − min ≤ 1 over all eligible brokers. With uneven racks
//! the spread constraint can force load onto a small rack: racks of 3, 2 and 1 brokers and
//! replication factor 3 put one replica of every partition in each rack, so the lone broker
//! holds every partition and the rack of three a third each.
//!
//! With a single rack and nothing to repair the plan moves exactly as few replicas as any
//! plan reaching the bound (no broker both gains and loses replicas); with several racks, a
//! move between racks may need a move inside each rack to finish it.
//!
//! # Leaders
//!
//! Balance also evens preferred leaders (first replicas) by reordering replicas, never by
//! moving them: leadership shifts along a chain of partitions, each led by a broker that is a
//! follower of the next, from a broker with most leaders to one with at least two fewer,
//! shortest chain first, reordering partitions that the plan changes anyway on ties. When no
//! such chain is left, the leader counts are as even as reordering can make them (for max,
//! min and every spread measure at once); with enough partitions, max − min ≤ 1.

use crate::BrokerId;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

/// A broker as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub id: BrokerId,
    /// `broker.rack`; brokers without one form one rack together.
    pub rack: Option<String>,
    /// Whether the broker is registered and running; an offline broker's replicas move off.
    pub online: bool,
}

/// One partition's current assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionAssignment {
    pub topic: String,
    pub partition: i32,
    /// In order: the first is the preferred leader.
    pub replicas: Vec<BrokerId>,
    /// The partition's size in bytes (DescribeLogDirs), what a new replica copies.
    pub size: u64,
}

/// What a plan should achieve; the default only repairs (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Goals {
    /// Spread replicas and preferred leaders evenly over the eligible brokers.
    pub balance: bool,
    /// Brokers to empty; they receive nothing.
    pub drain: BTreeSet<BrokerId>,
    /// New replication factors, by topic.
    pub replication_factors: BTreeMap<String, i32>,
}

impl Goals {
    /// Just Balance.
    pub fn balance() -> Self {
        Goals {
            balance: true,
            ..Goals::default()
        }
    }
}

/// Why no plan can be made. Each message names what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RebalanceError {
    #[error("Broker {0} is listed more than once; list each broker once.")]
    DuplicateBroker(BrokerId),
    #[error("Cannot drain broker {0}: it is not among the brokers given.")]
    UnknownDrainBroker(BrokerId),
    #[error(
        "Invalid replication factor {replication_factor} for topic {topic}: the replication factor must be positive."
    )]
    InvalidReplicationFactor {
        topic: String,
        replication_factor: i32,
    },
    #[error(
        "Cannot set the replication factor of topic {0}: none of its partitions is in the assignment."
    )]
    UnknownTopic(String),
    #[error("Partition {topic}/{partition} is listed more than once in the assignment.")]
    DuplicatePartition { topic: String, partition: i32 },
    #[error("Partition {topic}/{partition} has no replicas.")]
    EmptyReplicas { topic: String, partition: i32 },
    #[error("Partition {topic}/{partition} lists broker {broker} more than once.")]
    DuplicateReplica {
        topic: String,
        partition: i32,
        broker: BrokerId,
    },
    #[error(
        "Partition {topic}/{partition} has a replica on broker {broker}, which is not among the brokers given; list it (as offline if it is gone)."
    )]
    UnknownReplicaBroker {
        topic: String,
        partition: i32,
        broker: BrokerId,
    },
    #[error(
        "Topic {topic} needs {replication_factor} replicas per partition, but only {eligible} broker(s) are eligible (online and not draining); add brokers, drain fewer or lower its replication factor."
    )]
    NotEnoughBrokers {
        topic: String,
        replication_factor: usize,
        eligible: usize,
    },
}

/// How a broker takes part in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BrokerState {
    /// Online and not draining: it may receive replicas.
    Eligible,
    Draining,
    Offline,
}

/// A broker of the plan, with its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerStatus {
    pub id: BrokerId,
    pub rack: Option<String>,
    pub state: BrokerState,
}

/// A partition whose replicas, or their order, change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub topic: String,
    pub partition: i32,
    pub current: Vec<BrokerId>,
    pub target: Vec<BrokerId>,
    /// `size` × the number of replicas added.
    pub bytes_to_move: u64,
}

impl Change {
    /// Replicas in the target that are not in the current assignment: each copies the data.
    pub fn replicas_added(&self) -> usize {
        self.target
            .iter()
            .filter(|b| !self.current.contains(b))
            .count()
    }
}

/// Counts of one assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measures {
    /// Replicas per broker, every broker listed.
    pub replicas: BTreeMap<BrokerId, usize>,
    /// Preferred leaders (first replicas) per broker, every broker listed.
    pub leaders: BTreeMap<BrokerId, usize>,
    /// Max − min of `replicas` over the eligible brokers.
    pub replica_spread: usize,
    /// Max − min of `leaders` over the eligible brokers.
    pub leader_spread: usize,
    /// Partitions with two replicas in one rack while an eligible rack holds none.
    pub rack_sharing: usize,
}

/// A rebalance plan: what changes, and the measures before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// By id.
    pub brokers: Vec<BrokerStatus>,
    /// By (topic, partition).
    pub changes: Vec<Change>,
    pub before: Measures,
    pub after: Measures,
}

impl Plan {
    /// True when nothing changes.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Replicas added over all partitions: each is a copy of a partition to a new broker.
    pub fn replica_moves(&self) -> usize {
        self.changes.iter().map(Change::replicas_added).sum()
    }

    pub fn bytes_to_move(&self) -> u64 {
        self.changes.iter().map(|c| c.bytes_to_move).sum()
    }

    /// The plan as `kafka-reassign-partitions --reassignment-json-file` reads it.
    pub fn reassignment_json(&self) -> String {
        let mut out = String::from(r#"{"version":1,"partitions":["#);
        for (k, c) in self.changes.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            out.push_str(r#"{"topic":""#);
            escape_json(&c.topic, &mut out);
            let replicas: Vec<String> = c.target.iter().map(ToString::to_string).collect();
            let dirs = vec![r#""any""#; c.target.len()];
            write!(
                out,
                r#"","partition":{},"replicas":[{}],"log_dirs":[{}]}}"#,
                c.partition,
                replicas.join(","),
                dirs.join(",")
            )
            .unwrap();
        }
        out.push_str("]}");
        out
    }

    /// The measures as an aligned text table: per broker, replicas and leaders before and
    /// after, their spread over eligible brokers, then the plan's totals.
    pub fn measures_table(&self) -> String {
        let (b, a) = (&self.before, &self.after);
        let arrow = |column: &[(usize, usize)]| -> Vec<String> {
            let wb = column.iter().map(|c| c.0.to_string().len()).max();
            let wa = column.iter().map(|c| c.1.to_string().len()).max();
            let (wb, wa) = (wb.unwrap_or(0), wa.unwrap_or(0));
            column
                .iter()
                .map(|(x, y)| format!("{x:>wb$} -> {y:>wa$}"))
                .collect()
        };
        let mut replicas: Vec<(usize, usize)> = Vec::new();
        let mut leaders: Vec<(usize, usize)> = Vec::new();
        for s in &self.brokers {
            replicas.push((b.replicas[&s.id], a.replicas[&s.id]));
            leaders.push((b.leaders[&s.id], a.leaders[&s.id]));
        }
        replicas.push((b.replica_spread, a.replica_spread));
        leaders.push((b.leader_spread, a.leader_spread));
        let (replicas, leaders) = (arrow(&replicas), arrow(&leaders));
        let mut rows: Vec<[String; 5]> = vec![[
            "broker".into(),
            "rack".into(),
            "state".into(),
            "replicas".into(),
            "leaders".into(),
        ]];
        for (k, s) in self.brokers.iter().enumerate() {
            let state = match s.state {
                BrokerState::Eligible => "online",
                BrokerState::Draining => "draining",
                BrokerState::Offline => "offline",
            };
            rows.push([
                s.id.to_string(),
                s.rack.clone().unwrap_or_else(|| "-".into()),
                state.into(),
                replicas[k].clone(),
                leaders[k].clone(),
            ]);
        }
        let n = self.brokers.len();
        rows.push([
            "max-min".into(),
            String::new(),
            "eligible".into(),
            replicas[n].clone(),
            leaders[n].clone(),
        ]);
        let mut out = String::new();
        let widths: Vec<usize> = (0..5)
            .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                // Text to the left, counts to the right, so that digits line up.
                if c < 3 {
                    write!(line, "{cell:<w$}", w = widths[c]).unwrap();
                } else {
                    write!(line, "{cell:>w$}", w = widths[c]).unwrap();
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let totals = [
            (
                "partitions sharing a rack",
                format!("{} -> {}", b.rack_sharing, a.rack_sharing),
            ),
            ("partitions changed", self.changes.len().to_string()),
            ("replica moves", self.replica_moves().to_string()),
            ("bytes to move", self.bytes_to_move().to_string()),
        ];
        let w = totals.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in totals {
            writeln!(out, "{k:<w$}  {v}").unwrap();
        }
        out
    }
}

fn escape_json(s: &str, out: &mut String) {
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
}

/// The brokers by index (sorted by id), with rack indices and eligibility.
struct Cluster {
    ids: Vec<BrokerId>,
    rack: Vec<usize>,
    eligible: Vec<bool>,
    /// Eligible brokers of each rack, by id; a rack without any is not eligible.
    members: Vec<Vec<usize>>,
    eligible_racks: usize,
}

impl Cluster {
    fn racks(&self) -> usize {
        self.members.len()
    }

    /// How many of `replicas` each rack holds.
    fn rack_counts(&self, replicas: impl IntoIterator<Item = usize>) -> Vec<usize> {
        let mut counts = vec![0; self.racks()];
        for b in replicas {
            counts[self.rack[b]] += 1;
        }
        counts
    }

    fn measures(&self, assignment: &[&[usize]]) -> Measures {
        let n = self.ids.len();
        let (mut replicas, mut leaders) = (vec![0; n], vec![0; n]);
        let mut rack_sharing = 0;
        for rs in assignment {
            for &b in *rs {
                replicas[b] += 1;
            }
            leaders[rs[0]] += 1;
            let counts = self.rack_counts(rs.iter().copied());
            let shared = counts.iter().any(|&c| c >= 2);
            let unused = (0..self.racks()).any(|r| counts[r] == 0 && !self.members[r].is_empty());
            rack_sharing += usize::from(shared && unused);
        }
        let spread = |v: &[usize]| {
            let eligible = || (0..n).filter(|&b| self.eligible[b]).map(|b| v[b]);
            eligible().max().unwrap_or(0) - eligible().min().unwrap_or(0)
        };
        let by_id = |v: &[usize]| (0..n).map(|b| (self.ids[b], v[b])).collect();
        Measures {
            replica_spread: spread(&replicas),
            leader_spread: spread(&leaders),
            replicas: by_id(&replicas),
            leaders: by_id(&leaders),
            rack_sharing,
        }
    }
}

/// A partition being planned: brokers as indices into the cluster.
struct Part<'a> {
    topic: &'a str,
    partition: i32,
    size: u64,
    original: Vec<usize>,
    replicas: Vec<usize>,
    rf: usize,
}

impl Part<'_> {
    /// New bytes a move of one replica from `x` to `y` costs: the partition's size when
    /// `y` was not an original replica, less it when `x` was not one either.
    fn move_cost(&self, x: usize, y: usize) -> i128 {
        let cost = |b: usize| {
            if self.original.contains(&b) {
                0
            } else {
                i128::from(self.size)
            }
        };
        cost(y) - cost(x)
    }
}

struct Planner<'a> {
    cluster: &'a Cluster,
    parts: Vec<Part<'a>>,
    /// Replicas per broker in the assignment being built.
    load: Vec<usize>,
}

/// Computes the plan that reaches `goals` from the current `partitions` on `brokers`; see
/// the module documentation for what it does and the bound it reaches. Problems with the
/// input are reported in (broker id, topic, partition) order, the first only.
pub fn plan(
    brokers: &[Broker],
    partitions: &[PartitionAssignment],
    goals: &Goals,
) -> Result<Plan, RebalanceError> {
    let mut sorted: Vec<&Broker> = brokers.iter().collect();
    sorted.sort_by_key(|b| b.id);
    if let Some(w) = sorted.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(RebalanceError::DuplicateBroker(w[0].id));
    }
    let index: BTreeMap<BrokerId, usize> =
        sorted.iter().enumerate().map(|(i, b)| (b.id, i)).collect();
    if let Some(&id) = goals.drain.iter().find(|id| !index.contains_key(id)) {
        return Err(RebalanceError::UnknownDrainBroker(id));
    }
    let rack_names: BTreeSet<Option<&str>> = sorted.iter().map(|b| b.rack.as_deref()).collect();
    let rack_index: BTreeMap<Option<&str>, usize> = rack_names
        .iter()
        .enumerate()
        .map(|(i, &r)| (r, i))
        .collect();
    let state = |b: &Broker| match (b.online, goals.drain.contains(&b.id)) {
        (false, _) => BrokerState::Offline,
        (true, true) => BrokerState::Draining,
        (true, false) => BrokerState::Eligible,
    };
    let mut cluster = Cluster {
        ids: sorted.iter().map(|b| b.id).collect(),
        rack: sorted
            .iter()
            .map(|b| rack_index[&b.rack.as_deref()])
            .collect(),
        eligible: sorted
            .iter()
            .map(|b| state(b) == BrokerState::Eligible)
            .collect(),
        members: vec![Vec::new(); rack_names.len()],
        eligible_racks: 0,
    };
    for b in 0..cluster.ids.len() {
        if cluster.eligible[b] {
            cluster.members[cluster.rack[b]].push(b);
        }
    }
    cluster.eligible_racks = cluster.members.iter().filter(|m| !m.is_empty()).count();
    let eligible = cluster.eligible.iter().filter(|&&e| e).count();

    let mut input: Vec<&PartitionAssignment> = partitions.iter().collect();
    input.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    for (topic, &rf) in &goals.replication_factors {
        if rf < 1 {
            return Err(RebalanceError::InvalidReplicationFactor {
                topic: topic.clone(),
                replication_factor: rf,
            });
        }
        if !input.iter().any(|p| &p.topic == topic) {
            return Err(RebalanceError::UnknownTopic(topic.clone()));
        }
    }
    let mut parts = Vec::with_capacity(input.len());
    for (k, p) in input.iter().enumerate() {
        let (topic, partition) = (p.topic.clone(), p.partition);
        if k > 0 && input[k - 1].topic == p.topic && input[k - 1].partition == p.partition {
            return Err(RebalanceError::DuplicatePartition { topic, partition });
        }
        if p.replicas.is_empty() {
            return Err(RebalanceError::EmptyReplicas { topic, partition });
        }
        let mut original = Vec::with_capacity(p.replicas.len());
        for &broker in &p.replicas {
            let Some(&b) = index.get(&broker) else {
                return Err(RebalanceError::UnknownReplicaBroker {
                    topic,
                    partition,
                    broker,
                });
            };
            if original.contains(&b) {
                return Err(RebalanceError::DuplicateReplica {
                    topic,
                    partition,
                    broker,
                });
            }
            original.push(b);
        }
        let rf = match goals.replication_factors.get(&p.topic) {
            Some(&rf) => rf as usize,
            None => original.len(),
        };
        if rf > eligible {
            return Err(RebalanceError::NotEnoughBrokers {
                topic,
                replication_factor: rf,
                eligible,
            });
        }
        parts.push(Part {
            topic: &p.topic,
            partition,
            size: p.size,
            replicas: original.clone(),
            original,
            rf,
        });
    }

    let mut load = vec![0; cluster.ids.len()];
    for p in &parts {
        for &b in &p.original {
            load[b] += 1;
        }
    }
    let mut planner = Planner {
        cluster: &cluster,
        parts,
        load,
    };
    for i in 0..planner.parts.len() {
        planner.repair(i);
    }
    if goals.balance {
        planner.balance_replicas();
        planner.balance_leaders();
    }

    let parts = planner.parts;
    let original: Vec<&[usize]> = parts.iter().map(|p| p.original.as_slice()).collect();
    let target: Vec<&[usize]> = parts.iter().map(|p| p.replicas.as_slice()).collect();
    let ids = |v: &[usize]| -> Vec<BrokerId> { v.iter().map(|&b| cluster.ids[b]).collect() };
    let changes = parts
        .iter()
        .filter(|p| p.replicas != p.original)
        .map(|p| {
            let added = p.replicas.iter().filter(|b| !p.original.contains(b));
            Change {
                topic: p.topic.to_owned(),
                partition: p.partition,
                current: ids(&p.original),
                target: ids(&p.replicas),
                bytes_to_move: p.size.saturating_mul(added.count() as u64),
            }
        })
        .collect();
    Ok(Plan {
        brokers: sorted
            .iter()
            .map(|b| BrokerStatus {
                id: b.id,
                rack: b.rack.clone(),
                state: state(b),
            })
            .collect(),
        changes,
        before: cluster.measures(&original),
        after: cluster.measures(&target),
    })
}

impl Planner<'_> {
    /// Moves partition `i` off ineligible brokers, to its target replication factor and to
    /// full rack spread, changing no more replicas than that takes.
    fn repair(&mut self, i: usize) {
        let c = self.cluster;
        let rf = self.parts[i].rf;
        let full_spread = rf.min(c.eligible_racks);
        let mut slots: Vec<Option<usize>> = Vec::with_capacity(rf);
        for &b in &self.parts[i].replicas {
            if c.eligible[b] {
                slots.push(Some(b));
            } else {
                self.load[b] -= 1;
                slots.push(None);
            }
        }
        // Shrink: a replica that must move anyway goes first (the first one, so that a
        // surviving replica rather than a new, empty one takes the lead); then a follower in
        // a rack holding two, from the busiest broker.
        while slots.len() > rf {
            if let Some(pos) = slots.iter().position(Option::is_none) {
                slots.remove(pos);
                continue;
            }
            let counts = c.rack_counts(slots.iter().flatten().copied());
            let pos = (1..slots.len())
                .min_by_key(|&pos| {
                    let b = slots[pos].expect("all slots are filled");
                    (counts[c.rack[b]] < 2, Reverse(self.load[b]), c.ids[b])
                })
                .expect("more slots than rf >= 1 leaves a follower");
            self.load[slots[pos].expect("filled")] -= 1;
            slots.remove(pos);
        }
        // Spread: free a replica in a shared rack until the free slots can reach the
        // partition's full spread; a follower and the busiest broker first.
        loop {
            let counts = c.rack_counts(slots.iter().flatten().copied());
            let spread = counts.iter().filter(|&&n| n > 0).count();
            let free = rf - slots.iter().flatten().count();
            if spread + free >= full_spread {
                break;
            }
            let pos = (0..slots.len())
                .filter(|&pos| slots[pos].is_some_and(|b| counts[c.rack[b]] >= 2))
                .min_by_key(|&pos| {
                    let b = slots[pos].expect("filtered on filled slots");
                    (pos == 0, Reverse(self.load[b]), c.ids[b])
                })
                .expect("fewer racks than replicas: some rack holds two");
            self.load[slots[pos].expect("filled")] -= 1;
            slots[pos] = None;
        }
        // Fill free slots and grow: racks the partition uses least, then the least-loaded
        // broker.
        slots.resize(rf, None);
        for pos in 0..rf {
            if slots[pos].is_some() {
                continue;
            }
            let counts = c.rack_counts(slots.iter().flatten().copied());
            let b = (0..c.ids.len())
                .filter(|&b| c.eligible[b] && !slots.contains(&Some(b)))
                .min_by_key(|&b| (counts[c.rack[b]], self.load[b], c.ids[b]))
                .expect("rf <= eligible brokers was checked");
            self.load[b] += 1;
            slots[pos] = Some(b);
        }
        self.parts[i].replicas = slots.into_iter().flatten().collect();
    }

    /// Balance steps until none is possible (the module documentation's two kinds).
    fn balance_replicas(&mut self) {
        while let Some((i, pos, y)) = self.within_rack_move().or_else(|| self.cross_rack_move()) {
            let x = self.parts[i].replicas[pos];
            self.load[x] -= 1;
            self.load[y] += 1;
            self.parts[i].replicas[pos] = y;
        }
    }

    /// The extremes of eligible load in each rack (`None` for a rack without eligible
    /// brokers).
    fn rack_extremes(&self) -> Vec<Option<(usize, usize)>> {
        let c = self.cluster;
        c.members
            .iter()
            .map(|m| {
                let loads = || m.iter().map(|&b| self.load[b]);
                Some((loads().max()?, loads().min()?))
            })
            .collect()
    }

    /// A move from a busiest to an idlest broker of a rack whose loads differ by two or more:
    /// (partition, position, target broker). The widest rack first, then the cheapest move.
    fn within_rack_move(&self) -> Option<(usize, usize, usize)> {
        let c = self.cluster;
        let extremes = self.rack_extremes();
        let mut best = None;
        for (i, p) in self.parts.iter().enumerate() {
            for (pos, &x) in p.replicas.iter().enumerate() {
                let r = c.rack[x];
                let Some((max, min)) = extremes[r] else {
                    continue;
                };
                if max < min + 2 || self.load[x] != max {
                    continue;
                }
                for &y in &c.members[r] {
                    if self.load[y] != min || p.replicas.contains(&y) {
                        continue;
                    }
                    let key = (
                        Reverse(max - min),
                        p.move_cost(x, y),
                        p.size,
                        i,
                        c.ids[x],
                        c.ids[y],
                    );
                    if best.as_ref().is_none_or(|(k, _)| key < *k) {
                        best = Some((key, (i, pos, y)));
                    }
                }
            }
        }
        best.map(|(_, m)| m)
    }

    /// With every rack even, a move from a rack to another whose busiest and idlest brokers
    /// differ by two or more, keeping the partition's rack spread. Moves that need no
    /// follow-up inside a rack first, then the widest gap, then the cheapest move.
    fn cross_rack_move(&self) -> Option<(usize, usize, usize)> {
        let c = self.cluster;
        let extremes = self.rack_extremes();
        let mut best = None;
        for (i, p) in self.parts.iter().enumerate() {
            let counts = c.rack_counts(p.replicas.iter().copied());
            for (pos, &x) in p.replicas.iter().enumerate() {
                let a = c.rack[x];
                let Some((max_a, _)) = extremes[a] else {
                    continue;
                };
                for (b, ext) in extremes.iter().enumerate() {
                    let Some((_, min_b)) = *ext else { continue };
                    if b == a || max_a < min_b + 2 || (counts[a] < 2 && counts[b] > 0) {
                        continue;
                    }
                    for &y in &c.members[b] {
                        if p.replicas.contains(&y) {
                            continue;
                        }
                        let follow_ups =
                            usize::from(self.load[x] < max_a) + usize::from(self.load[y] > min_b);
                        let key = (
                            follow_ups,
                            Reverse(self.load[x] as i64 - self.load[y] as i64),
                            p.move_cost(x, y),
                            p.size,
                            i,
                            c.ids[x],
                            c.ids[y],
                        );
                        if best.as_ref().is_none_or(|(k, _)| key < *k) {
                            best = Some((key, (i, pos, y)));
                        }
                    }
                }
            }
        }
        best.map(|(_, m)| m)
    }

    /// Evens preferred leaders by reordering replicas along chains of partitions (see the
    /// module documentation).
    fn balance_leaders(&mut self) {
        let c = self.cluster;
        let n = c.ids.len();
        loop {
            let mut leaders = vec![0usize; n];
            // Partitions the plan changes anyway come first, so that a tie between chains
            // reorders those.
            let mut order: Vec<usize> = (0..self.parts.len()).collect();
            order.sort_by_key(|&i| (self.parts[i].replicas == self.parts[i].original, i));
            let mut led: Vec<Vec<usize>> = vec![Vec::new(); n];
            for i in order {
                let leader = self.parts[i].replicas[0];
                leaders[leader] += 1;
                led[leader].push(i);
            }
            let mut sources: Vec<usize> = (0..n).filter(|&b| c.eligible[b]).collect();
            let min = sources.iter().map(|&b| leaders[b]).min().unwrap_or(0);
            sources.sort_by_key(|&b| (Reverse(leaders[b]), c.ids[b]));
            let chain = sources
                .iter()
                .take_while(|&&s| leaders[s] >= min + 2)
                .find_map(|&s| self.leader_chain(s, &leaders, &led));
            let Some(chain) = chain else { break };
            for (i, v) in chain {
                let replicas = &mut self.parts[i].replicas;
                let pos = replicas
                    .iter()
                    .position(|&b| b == v)
                    .expect("a chain follows replicas");
                replicas.swap(0, pos);
            }
        }
    }

    /// The shortest chain from `s` to a broker with at least two fewer leaders, as the
    /// partitions to reorder and their new leaders; the target with fewest leaders, then
    /// the smallest id, among the nearest.
    fn leader_chain(
        &self,
        s: usize,
        leaders: &[usize],
        led: &[Vec<usize>],
    ) -> Option<Vec<(usize, usize)>> {
        let c = self.cluster;
        let n = c.ids.len();
        let mut parent: Vec<Option<(usize, usize)>> = vec![None; n];
        let mut dist = vec![usize::MAX; n];
        dist[s] = 0;
        let mut queue = VecDeque::from([s]);
        while let Some(u) = queue.pop_front() {
            for &i in &led[u] {
                for &v in &self.parts[i].replicas[1..] {
                    if dist[v] == usize::MAX {
                        dist[v] = dist[u] + 1;
                        parent[v] = Some((u, i));
                        queue.push_back(v);
                    }
                }
            }
        }
        let t = (0..n)
            .filter(|&v| v != s && dist[v] != usize::MAX && leaders[v] + 2 <= leaders[s])
            .min_by_key(|&v| (dist[v], leaders[v], c.ids[v]))?;
        let mut chain = Vec::new();
        let mut v = t;
        while let Some((u, i)) = parent[v] {
            chain.push((i, v));
            v = u;
        }
        Some(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(spec: &[(BrokerId, Option<&str>)]) -> Vec<Broker> {
        spec.iter()
            .map(|&(id, rack)| Broker {
                id,
                rack: rack.map(str::to_owned),
                online: true,
            })
            .collect()
    }

    fn part(topic: &str, partition: i32, replicas: &[BrokerId]) -> PartitionAssignment {
        PartitionAssignment {
            topic: topic.to_owned(),
            partition,
            replicas: replicas.to_vec(),
            size: 100,
        }
    }

    fn targets(plan: &Plan) -> Vec<(i32, Vec<BrokerId>)> {
        plan.changes
            .iter()
            .map(|c| (c.partition, c.target.clone()))
            .collect()
    }

    #[test]
    fn a_balanced_cluster_needs_no_plan() {
        let b = brokers(&[(1, None), (2, None)]);
        let p = vec![part("t", 0, &[1, 2]), part("t", 1, &[2, 1])];
        let plan = plan(&b, &p, &Goals::balance()).unwrap();
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!(plan.before, plan.after);
        assert_eq!(plan.reassignment_json(), r#"{"version":1,"partitions":[]}"#);
    }

    #[test]
    fn balance_moves_to_a_new_broker_and_evens_leaders() {
        let b = brokers(&[(1, None), (2, None), (3, None)]);
        let p: Vec<_> = (0..3).map(|i| part("t", i, &[1, 2])).collect();
        let plan = plan(&b, &p, &Goals::balance()).unwrap();
        assert_eq!(plan.replica_moves(), 2);
        assert_eq!(plan.bytes_to_move(), 200);
        assert_eq!(plan.after.replica_spread, 0);
        assert_eq!(plan.after.leader_spread, 0);
        assert_eq!(
            targets(&plan),
            vec![(0, vec![3, 2]), (1, vec![1, 3]), (2, vec![2, 1])]
        );
    }

    #[test]
    fn drain_moves_only_the_drained_replicas() {
        let b = brokers(&[(1, Some("a")), (2, Some("b")), (3, Some("a"))]);
        let p = vec![part("t", 0, &[1, 2]), part("t", 1, &[2, 3])];
        let goals = Goals {
            drain: [1].into(),
            ..Goals::default()
        };
        let plan = plan(&b, &p, &goals).unwrap();
        assert_eq!(targets(&plan), vec![(0, vec![3, 2])]);
        assert_eq!(plan.after.replicas[&1], 0);
    }

    #[test]
    fn offline_replicas_move_and_rack_sharing_is_fixed_without_balance() {
        let mut b = brokers(&[(1, Some("a")), (2, Some("a")), (3, Some("b")), (4, None)]);
        b[3].online = false;
        // t/0 shares rack a; t/1 has a replica on the offline broker 4.
        let p = vec![part("t", 0, &[1, 2]), part("t", 1, &[3, 4])];
        let plan = plan(&b, &p, &Goals::default()).unwrap();
        assert_eq!(targets(&plan), vec![(0, vec![1, 3]), (1, vec![3, 2])]);
        assert_eq!(plan.before.rack_sharing, 1);
        assert_eq!(plan.after.rack_sharing, 0);
    }

    #[test]
    fn replication_factor_grows_across_racks_and_shrinks_keeping_the_leader() {
        let b = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("c")),
        ]);
        let grow = Goals {
            replication_factors: [("t".to_owned(), 3)].into(),
            ..Goals::default()
        };
        let got = plan(&b, &[part("t", 0, &[2])], &grow).unwrap();
        assert_eq!(targets(&got), vec![(0, vec![2, 3, 4])]);
        assert_eq!(got.bytes_to_move(), 200);
        let shrink = Goals {
            replication_factors: [("t".to_owned(), 2)].into(),
            ..Goals::default()
        };
        // Dropping 1 (rack a, like the leader 2) rather than 3 keeps both racks.
        let got = plan(&b, &[part("t", 0, &[2, 1, 3])], &shrink).unwrap();
        assert_eq!(targets(&got), vec![(0, vec![2, 3])]);
        assert_eq!(got.bytes_to_move(), 0);
    }

    #[test]
    fn the_plan_does_not_depend_on_input_order() {
        let b = brokers(&[
            (1, Some("a")),
            (2, Some("b")),
            (3, Some("a")),
            (4, Some("b")),
        ]);
        let p: Vec<_> = (0..6).map(|i| part("t", i, &[1, 2])).collect();
        let goals = Goals::balance();
        let (mut rb, mut rp) = (b.clone(), p.clone());
        rb.reverse();
        rp.reverse();
        assert_eq!(plan(&b, &p, &goals), plan(&rb, &rp, &goals));
    }

    #[test]
    fn errors_name_what_to_fix() {
        let b = brokers(&[(1, None), (2, None)]);
        let p = vec![part("t", 0, &[1, 2])];
        let rf = |topic: &str, rf| Goals {
            replication_factors: [(topic.to_owned(), rf)].into(),
            ..Goals::default()
        };
        let err = |b: &[Broker], p: &[PartitionAssignment], g: &Goals| {
            plan(b, p, g).unwrap_err().to_string()
        };
        assert_eq!(
            err(&b, &p, &rf("t", 3)),
            "Topic t needs 3 replicas per partition, but only 2 broker(s) are eligible (online \
             and not draining); add brokers, drain fewer or lower its replication factor."
        );
        assert_eq!(
            err(&b, &p, &rf("u", 1)),
            "Cannot set the replication factor of topic u: none of its partitions is in the \
             assignment."
        );
        assert_eq!(
            err(&b, &p, &rf("t", 0)),
            "Invalid replication factor 0 for topic t: the replication factor must be positive."
        );
        let drain = Goals {
            drain: [9].into(),
            ..Goals::default()
        };
        assert_eq!(
            err(&b, &p, &drain),
            "Cannot drain broker 9: it is not among the brokers given."
        );
        let drain = Goals {
            drain: [2].into(),
            ..Goals::default()
        };
        assert!(matches!(
            plan(&b, &p, &drain),
            Err(RebalanceError::NotEnoughBrokers { eligible: 1, .. })
        ));
        assert_eq!(
            err(&b, &[part("t", 0, &[1, 9])], &Goals::default()),
            "Partition t/0 has a replica on broker 9, which is not among the brokers given; \
             list it (as offline if it is gone)."
        );
        assert_eq!(
            plan(&b, &[part("t", 0, &[1, 1])], &Goals::default()),
            Err(RebalanceError::DuplicateReplica {
                topic: "t".into(),
                partition: 0,
                broker: 1
            })
        );
        assert_eq!(
            plan(&b, &[part("t", 0, &[])], &Goals::default()),
            Err(RebalanceError::EmptyReplicas {
                topic: "t".into(),
                partition: 0
            })
        );
        assert!(matches!(
            plan(
                &b,
                &[part("t", 0, &[1]), part("t", 0, &[2])],
                &Goals::default()
            ),
            Err(RebalanceError::DuplicatePartition { .. })
        ));
        assert_eq!(
            plan(&brokers(&[(1, None), (1, None)]), &p, &Goals::default()),
            Err(RebalanceError::DuplicateBroker(1))
        );
    }

    #[test]
    fn reassignment_json_escapes_topic_names() {
        let b = brokers(&[(1, None), (2, None)]);
        let p = vec![part("a\"b\\c", 3, &[1])];
        let goals = Goals {
            drain: [1].into(),
            ..Goals::default()
        };
        assert_eq!(
            plan(&b, &p, &goals).unwrap().reassignment_json(),
            r#"{"version":1,"partitions":[{"topic":"a\"b\\c","partition":3,"replicas":[2],"log_dirs":["any"]}]}"#
        );
    }

    #[test]
    fn measures_table_is_aligned() {
        let mut b = brokers(&[(1, Some("a")), (2, Some("b")), (10, None)]);
        b[2].online = false;
        let p = vec![part("t", 0, &[10, 1]), part("t", 1, &[1, 2])];
        let plan = plan(&b, &p, &Goals::balance()).unwrap();
        assert_eq!(
            plan.measures_table(),
            "\
broker   rack  state     replicas  leaders
1        a     online      2 -> 2   1 -> 1
2        b     online      1 -> 2   0 -> 1
10       -     offline     1 -> 0   1 -> 0
max-min        eligible    1 -> 0   1 -> 0
partitions sharing a rack  0 -> 0
partitions changed         1
replica moves              1
bytes to move              100
"
        );
    }
}
