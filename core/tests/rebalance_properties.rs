//! Property tests of rebalance planning over seeded random clusters: 1–4 racks, 1–9
//! brokers, some offline or draining, random assignments (skewed, rack-sharing, on offline
//! brokers) and random replication factor goals, from a seeded generator (the case, seed
//! included, is named in every failure). The golden files pin exact plans; these pin the
//! promises of every plan, checked here without the planner's own code.

use std::collections::{BTreeMap, BTreeSet};
use strom_core::rebalance::{plan, Broker, Goals, PartitionAssignment, Plan, RebalanceError};
use strom_core::BrokerId;

/// splitmix64: a tiny seeded generator, so a failing case is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True one time in `n`.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

type Assignment = BTreeMap<(String, i32), (Vec<BrokerId>, u64)>;

struct Case {
    brokers: Vec<Broker>,
    partitions: Vec<PartitionAssignment>,
    goals: Goals,
}

fn partitions_of(assignment: &Assignment) -> Vec<PartitionAssignment> {
    assignment
        .iter()
        .map(
            |((topic, partition), (replicas, size))| PartitionAssignment {
                topic: topic.clone(),
                partition: *partition,
                replicas: replicas.clone(),
                size: *size,
            },
        )
        .collect()
}

fn generate(rng: &mut Rng) -> Case {
    let racks = 1 + rng.below(4);
    let n = racks + rng.below(10 - racks);
    let mut ids = BTreeSet::new();
    while ids.len() < n {
        ids.insert(rng.below(100) as BrokerId);
    }
    let ids: Vec<BrokerId> = ids.into_iter().collect();
    // Every rack gets a broker; the rest go anywhere, so rack sizes are often uneven.
    let mut rack_of: Vec<usize> = (0..n)
        .map(|i| if i < racks { i } else { rng.below(racks) })
        .collect();
    rng.shuffle(&mut rack_of);
    let no_rack = racks == 1 || rng.one_in(6);
    let brokers: Vec<Broker> = ids
        .iter()
        .zip(&rack_of)
        .map(|(&id, &r)| Broker {
            id,
            // One rack may be the rack-less group.
            rack: (!(no_rack && r == 0)).then(|| format!("r{r}")),
            online: !rng.one_in(8),
        })
        .collect();
    let mut goals = Goals {
        balance: !rng.one_in(4),
        ..Goals::default()
    };
    for b in &brokers {
        if rng.one_in(10) {
            goals.drain.insert(b.id);
        }
    }
    // Skewed assignments: half the picks come from a few "hot" brokers.
    let mut hot = ids.clone();
    rng.shuffle(&mut hot);
    hot.truncate(1 + rng.below(n));
    let mut assignment = Assignment::new();
    for t in 0..1 + rng.below(3) {
        let topic = format!("t{t}");
        let rf = 1 + rng.below(n.min(4));
        for p in 0..1 + rng.below(12) {
            let mut replicas = Vec::new();
            while replicas.len() < rf {
                let b = if rng.one_in(2) {
                    hot[rng.below(hot.len())]
                } else {
                    ids[rng.below(n)]
                };
                if !replicas.contains(&b) {
                    replicas.push(b);
                }
            }
            let size = rng.below(10_000) as u64;
            assignment.insert((topic.clone(), p as i32), (replicas, size));
        }
        if rng.one_in(4) {
            goals
                .replication_factors
                .insert(topic, 1 + rng.below(4) as i32);
        }
    }
    let mut partitions = partitions_of(&assignment);
    rng.shuffle(&mut partitions);
    Case {
        brokers,
        partitions,
        goals,
    }
}

/// What the checks need to know of the cluster, computed from the case alone.
struct View {
    rack: BTreeMap<BrokerId, Option<String>>,
    eligible: BTreeSet<BrokerId>,
    eligible_racks: BTreeMap<Option<String>, BTreeSet<BrokerId>>,
}

impl View {
    fn new(case: &Case) -> View {
        let rack: BTreeMap<_, _> = case
            .brokers
            .iter()
            .map(|b| (b.id, b.rack.clone()))
            .collect();
        let eligible: BTreeSet<BrokerId> = case
            .brokers
            .iter()
            .filter(|b| b.online && !case.goals.drain.contains(&b.id))
            .map(|b| b.id)
            .collect();
        let mut eligible_racks: BTreeMap<Option<String>, BTreeSet<BrokerId>> = BTreeMap::new();
        for &b in &eligible {
            eligible_racks
                .entry(rack[&b].clone())
                .or_default()
                .insert(b);
        }
        View {
            rack,
            eligible,
            eligible_racks,
        }
    }

    fn rack_counts(&self, replicas: &[BrokerId]) -> BTreeMap<Option<String>, usize> {
        let mut counts = BTreeMap::new();
        for b in replicas {
            *counts.entry(self.rack[b].clone()).or_default() += 1;
        }
        counts
    }

    fn spread(&self, replicas: &[BrokerId]) -> usize {
        self.rack_counts(replicas).len()
    }

    fn loads(&self, assignment: &Assignment) -> BTreeMap<BrokerId, usize> {
        let mut loads: BTreeMap<BrokerId, usize> = self.rack.keys().map(|&b| (b, 0)).collect();
        for (replicas, _) in assignment.values() {
            for b in replicas {
                *loads.get_mut(b).unwrap() += 1;
            }
        }
        loads
    }

    /// Why `assignment` misses the balance bound, if it does: brokers of one rack more than
    /// one apart, or two brokers of different racks two or more apart while some replica in
    /// the fuller one's rack could move to the other rack without its partition losing rack
    /// spread (it has another replica in the fuller rack, or none in the emptier one).
    fn bound_violation(&self, assignment: &Assignment) -> Option<String> {
        let loads = self.loads(assignment);
        for (x, &lx) in &loads {
            for (y, &ly) in &loads {
                if !self.eligible.contains(x) || !self.eligible.contains(y) || lx < ly + 2 {
                    continue;
                }
                let (ra, rb) = (&self.rack[x], &self.rack[y]);
                if ra == rb {
                    return Some(format!("{x} holds {lx} and {y} {ly}, in one rack"));
                }
                for ((topic, p), (replicas, _)) in assignment {
                    let counts = self.rack_counts(replicas);
                    let in_a = counts.get(ra).copied().unwrap_or(0);
                    let in_b = counts.get(rb).copied().unwrap_or(0);
                    let room = self.eligible_racks[rb]
                        .iter()
                        .any(|z| !replicas.contains(z));
                    if in_a > 0 && (in_a >= 2 || in_b == 0) && room {
                        return Some(format!(
                            "{x} holds {lx} and {y} {ly}, and {topic}/{p} {replicas:?} could move \
                             from {ra:?} to {rb:?}"
                        ));
                    }
                }
            }
        }
        None
    }

    /// The least max − min of leaders over eligible brokers that reordering replicas can
    /// reach, by trying every choice of leaders (small assignments only).
    fn best_leader_spread(&self, assignment: &Assignment) -> usize {
        fn go(parts: &[&Vec<BrokerId>], counts: &mut BTreeMap<BrokerId, usize>, best: &mut usize) {
            let Some((first, rest)) = parts.split_first() else {
                let max = counts.values().max().unwrap_or(&0);
                let min = counts.values().min().unwrap_or(&0);
                *best = (*best).min(max - min);
                return;
            };
            for b in first.iter() {
                *counts.get_mut(b).unwrap() += 1;
                go(rest, counts, best);
                *counts.get_mut(b).unwrap() -= 1;
            }
        }
        let parts: Vec<&Vec<BrokerId>> = assignment.values().map(|(r, _)| r).collect();
        let mut counts: BTreeMap<BrokerId, usize> = self.eligible.iter().map(|&b| (b, 0)).collect();
        let mut best = usize::MAX;
        go(&parts, &mut counts, &mut best);
        best
    }
}

fn apply(assignment: &Assignment, plan: &Plan) -> Assignment {
    let mut after = assignment.clone();
    for c in &plan.changes {
        let entry = after.get_mut(&(c.topic.clone(), c.partition)).unwrap();
        entry.0 = c.target.clone();
    }
    after
}

fn spread(counts: impl Iterator<Item = usize>) -> usize {
    let counts: Vec<usize> = counts.collect();
    counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0)
}

/// How often each check had something to check, so that a generator change cannot make
/// one vacuous unnoticed.
#[derive(Debug, Default)]
struct Coverage {
    planned: usize,
    refused: usize,
    balanced: usize,
    /// Balance plans whose brokers end two or more apart: the rack constraint at work.
    rack_bound: usize,
    leader_brute_force: usize,
    fewest_moves: usize,
    left_alone: usize,
}

#[test]
fn plans_keep_their_promises_on_random_clusters() {
    let mut cov = Coverage::default();
    for k in 0..1500u64 {
        let seed = 0x5EED_0000 + k;
        let mut rng = Rng(seed);
        let case = generate(&mut rng);
        check_case(&case, &mut rng, seed, &mut cov);
    }
    eprintln!("{cov:?}");
    assert!(
        cov.planned > 1000
            && cov.refused > 20
            && cov.balanced > 600
            && cov.rack_bound > 20
            && cov.leader_brute_force > 100
            && cov.fewest_moves > 50
            && cov.left_alone > 20,
        "{cov:?}"
    );
}

/// Checks one case, the planner's refusal included.
fn check_case(case: &Case, rng: &mut Rng, seed: u64, cov: &mut Coverage) {
    let view = View::new(case);
    let assignment: Assignment = case
        .partitions
        .iter()
        .map(|p| ((p.topic.clone(), p.partition), (p.replicas.clone(), p.size)))
        .collect();
    let brokers: Vec<String> = case
        .brokers
        .iter()
        .map(|b| {
            format!(
                "{}:{}{}",
                b.id,
                b.rack.as_deref().unwrap_or("-"),
                if b.online { "" } else { "(offline)" }
            )
        })
        .collect();
    let described = format!(
        "seed={seed} brokers={} goals={:?} assign={:?}",
        brokers.join(","),
        case.goals,
        assignment
    );
    let rf_of = |topic: &str, replicas: &[BrokerId]| match case.goals.replication_factors.get(topic)
    {
        Some(&rf) => rf as usize,
        None => replicas.len(),
    };
    let needed = assignment
        .iter()
        .map(|((t, _), (r, _))| rf_of(t, r))
        .max()
        .unwrap_or(0);
    let got = plan(&case.brokers, &case.partitions, &case.goals);
    if needed > view.eligible.len() {
        assert!(
            matches!(got, Err(RebalanceError::NotEnoughBrokers { .. })),
            "{described}: {got:?}"
        );
        cov.refused += 1;
        return;
    }
    cov.planned += 1;
    let got = got.unwrap_or_else(|e| panic!("{described}: {e}"));
    let case_name = described;
    let described = &case_name;

    // Deterministic: another listing of the same input gives the same plan.
    let (mut brokers, mut partitions) = (case.brokers.clone(), case.partitions.clone());
    rng.shuffle(&mut brokers);
    rng.shuffle(&mut partitions);
    assert_eq!(
        plan(&brokers, &partitions, &case.goals).as_ref(),
        Ok(&got),
        "{described}: depends on input order"
    );

    for c in &got.changes {
        let (current, size) = &assignment[&(c.topic.clone(), c.partition)];
        assert_eq!(&c.current, current, "{described}: {c:?}");
        assert_ne!(c.current, c.target, "{described}: {c:?} changes nothing");
        assert_eq!(
            c.bytes_to_move,
            size * c.replicas_added() as u64,
            "{described}: {c:?}"
        );
    }
    let after = apply(&assignment, &got);
    let full_racks = view.eligible_racks.len();
    for ((topic, p), (replicas, _)) in &after {
        let before = &assignment[&(topic.clone(), *p)].0;
        let rf = rf_of(topic, before);
        let distinct: BTreeSet<_> = replicas.iter().collect();
        assert_eq!(
            distinct.len(),
            replicas.len(),
            "{described}: {topic}/{p} {replicas:?}"
        );
        assert_eq!(
            replicas.len(),
            rf,
            "{described}: {topic}/{p} {replicas:?} lost its RF"
        );
        assert!(
            replicas.iter().all(|b| view.eligible.contains(b)),
            "{described}: {topic}/{p} {replicas:?} on an ineligible broker"
        );
        // Full spread: never less than before (as far as the eligible racks allow), and
        // rack sharing fixed wherever a rack is free.
        assert_eq!(
            view.spread(replicas),
            rf.min(full_racks),
            "{described}: {topic}/{p} {before:?} -> {replicas:?} spans too few racks"
        );
    }
    let loads = view.loads(&after);
    assert_eq!(got.after.replicas, loads, "{described}: measures");
    assert_eq!(got.after.rack_sharing, 0, "{described}");
    assert_eq!(
        got.after.replica_spread,
        spread(view.eligible.iter().map(|b| loads[b])),
        "{described}"
    );

    // Idempotent: a plan reaches a fixed point of its goals.
    let again = plan(&case.brokers, &partitions_of(&after), &case.goals)
        .unwrap_or_else(|e| panic!("{described}: replanning: {e}"));
    assert!(
        again.is_empty(),
        "{described}: replanning changes {:?}",
        again.changes
    );

    // Minimal repairs: partition by partition, keeping the eligible replicas that fit (up to
    // the RF, as many racks as possible) and adding the rest, spread over free racks. A
    // repair adds max(free slots, racks missing) replicas and no plan can add fewer.
    let repairs: usize = assignment
        .iter()
        .map(|((topic, _), (replicas, _))| {
            let rf = rf_of(topic, replicas);
            let kept: Vec<BrokerId> = replicas
                .iter()
                .copied()
                .filter(|b| view.eligible.contains(b))
                .collect();
            let kept_count = kept.len().min(rf);
            let kept_spread = view.spread(&kept).min(rf);
            (rf - kept_count).max(rf.min(full_racks) - kept_spread)
        })
        .sum();
    if case.goals.balance {
        cov.balanced += 1;
        cov.rack_bound += usize::from(got.after.replica_spread >= 2);
        assert!(got.replica_moves() >= repairs, "{described}");
        if let Some(why) = view.bound_violation(&after) {
            panic!("{described}: misses the balance bound: {why}");
        }
        let sizes: BTreeSet<usize> = view.eligible_racks.values().map(BTreeSet::len).collect();
        if sizes.len() == 1 {
            assert!(
                got.after.replica_spread <= 1,
                "{described}: even racks, {loads:?}"
            );
        }
        check_leaders(&view, &after, &got, described, cov);
        check_minimal_balance(case, &view, &assignment, &got, described, cov);
    } else {
        assert_eq!(
            got.replica_moves(),
            repairs,
            "{described}: more than repairs"
        );
    }
}

fn check_leaders(view: &View, after: &Assignment, got: &Plan, described: &str, cov: &mut Coverage) {
    let leaders = &got.after.leaders;
    // No single reordering helps...
    for ((topic, p), (replicas, _)) in after {
        for y in &replicas[1..] {
            assert!(
                leaders[&replicas[0]] < leaders[y] + 2,
                "{described}: {topic}/{p} {replicas:?} could be led by {y}: {leaders:?}"
            );
        }
    }
    // ...and on small assignments, no choice of leaders at all does better.
    let choices: f64 = after.values().map(|(r, _)| r.len() as f64).product();
    if choices <= 5000.0 {
        cov.leader_brute_force += 1;
        assert_eq!(
            got.after.leader_spread,
            view.best_leader_spread(after),
            "{described}: leaders {leaders:?}"
        );
    }
}

/// Minimal balance moves, where they can be stated independently.
fn check_minimal_balance(
    case: &Case,
    view: &View,
    before: &Assignment,
    got: &Plan,
    described: &str,
    cov: &mut Coverage,
) {
    // An assignment that needs no repair (nothing to drop either) and already meets the
    // bound moves nothing.
    let repaired = before.iter().all(|((topic, _), (replicas, _))| {
        let rf = case
            .goals
            .replication_factors
            .get(topic)
            .map_or(replicas.len(), |&rf| rf as usize);
        replicas.len() == rf
            && replicas.iter().all(|b| view.eligible.contains(b))
            && view.spread(replicas) == rf.min(view.eligible_racks.len())
    });
    if repaired && view.bound_violation(before).is_none() {
        cov.left_alone += 1;
        assert_eq!(
            got.replica_moves(),
            0,
            "{described}: moved a balanced cluster"
        );
    }
    // One rack, every broker eligible, no RF goal: any plan with max − min ≤ 1 ends with
    // q or q + 1 replicas per broker (q = total / brokers, `extra` brokers at q + 1), and
    // needs at least one move per replica above that target; the target that gives q + 1 to
    // the brokers holding most needs fewest: sum of (load − target) over brokers above it.
    // The planner must need no more.
    let one_rack = view.rack.values().collect::<BTreeSet<_>>().len() == 1;
    if one_rack
        && view.eligible.len() == view.rack.len()
        && case.goals.replication_factors.is_empty()
    {
        let mut loads: Vec<usize> = view.loads(before).into_values().collect();
        loads.sort_unstable_by(|a, b| b.cmp(a));
        let total: usize = loads.iter().sum();
        let (q, extra) = (total / loads.len(), total % loads.len());
        let least: usize = loads
            .iter()
            .enumerate()
            .map(|(i, &l)| l.saturating_sub(q + usize::from(i < extra)))
            .sum();
        cov.fewest_moves += 1;
        assert_eq!(
            got.replica_moves(),
            least,
            "{described}: not the fewest moves"
        );
    }
}
