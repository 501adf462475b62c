//! Property tests of replica placement over every split of 1–9 brokers into 1–4 racks,
//! with scrambled broker ids and input orders from a seeded generator (the case, seed
//! included, is named in every failure). The golden files pin exact outputs; these pin the
//! promises callers rely on, for shapes the golden files do not list.

use std::collections::{BTreeMap, BTreeSet};
use strom_core::placement::{assign_replicas, check_assignment};
use strom_core::{BrokerId, BrokerInfo};

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

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// Every way to split `n` brokers into `racks` non-empty racks, largest first.
fn splits(n: usize, racks: usize) -> Vec<Vec<usize>> {
    fn go(rest: usize, left: usize, max: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if left == 0 {
            if rest == 0 {
                out.push(cur.clone());
            }
            return;
        }
        for size in (1..=rest.min(max)).rev() {
            cur.push(size);
            go(rest - size, left - 1, size, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    go(n, racks, n, &mut Vec::new(), &mut out);
    out
}

/// A cluster of the given rack sizes with distinct, scrambled ids, listed in a random order.
/// One rack means brokers without `broker.rack`.
fn cluster(sizes: &[usize], rng: &mut Rng) -> Vec<BrokerInfo> {
    let mut ids = BTreeSet::new();
    while ids.len() < sizes.iter().sum() {
        ids.insert(rng.below(1000) as BrokerId);
    }
    let mut ids: Vec<BrokerId> = ids.into_iter().collect();
    rng.shuffle(&mut ids);
    let mut ids = ids.into_iter();
    let mut brokers = Vec::new();
    for (r, &size) in sizes.iter().enumerate() {
        for id in ids.by_ref().take(size) {
            let rack = (sizes.len() > 1).then(|| format!("rack-{r}"));
            brokers.push(BrokerInfo { id, rack });
        }
    }
    rng.shuffle(&mut brokers);
    brokers
}

fn spread(counts: impl Iterator<Item = usize>) -> usize {
    let counts: Vec<usize> = counts.collect();
    counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0)
}

#[test]
fn placement_keeps_its_promises_for_every_rack_split() {
    let mut cases = 0;
    for n in 1..=9usize {
        for racks in 1..=n.min(4) {
            for sizes in splits(n, racks) {
                for rf in 1..=n.min(4) {
                    for k in 1..=3 {
                        let seed = (n * 1_000_000 + racks * 10_000 + rf * 100 + k) as u64;
                        check_case(&sizes, rf, k, seed);
                        cases += 1;
                    }
                }
            }
        }
    }
    assert!(cases > 500, "only {cases} cases ran");
}

fn check_case(sizes: &[usize], rf: usize, k: usize, seed: u64) {
    let mut rng = Rng(seed);
    let brokers = cluster(sizes, &mut rng);
    let n = brokers.len();
    let start = rng.below(4 * n);
    let first = rng.below(3 * n) as i32;
    let count = (k * n) as i32;
    let case = format!(
        "sizes={sizes:?} rf={rf} partitions={count} start={start} first={first} seed={seed}"
    );
    let rack_of: BTreeMap<BrokerId, Option<&str>> =
        brokers.iter().map(|b| (b.id, b.rack.as_deref())).collect();
    let rack_sizes: BTreeMap<Option<&str>, usize> =
        rack_of.values().fold(BTreeMap::new(), |mut m, r| {
            *m.entry(*r).or_default() += 1;
            m
        });

    let got = assign_replicas(&brokers, first, count, rf as i32, start).unwrap();
    assert_eq!(got.len(), k * n, "{case}");

    // Deterministic: another listing of the same brokers gives the same plan.
    let mut again = brokers.clone();
    rng.shuffle(&mut again);
    assert_eq!(
        assign_replicas(&again, first, count, rf as i32, start).unwrap(),
        got,
        "{case}: depends on input order"
    );
    check_assignment(&brokers, &got).unwrap_or_else(|e| panic!("{case}: {e}"));

    let mut leaders: BTreeMap<BrokerId, usize> = rack_of.keys().map(|&b| (b, 0)).collect();
    let mut followers = leaders.clone();
    for replicas in &got {
        let distinct: BTreeSet<_> = replicas.iter().collect();
        assert_eq!(distinct.len(), rf, "{case}: {replicas:?} not distinct");
        assert!(
            replicas.iter().all(|b| rack_of.contains_key(b)),
            "{case}: {replicas:?} names an unknown broker"
        );
        let mut per_rack: BTreeMap<Option<&str>, usize> = BTreeMap::new();
        for b in replicas {
            *per_rack.entry(rack_of[b]).or_default() += 1;
        }
        assert_eq!(
            per_rack.len(),
            rf.min(rack_sizes.len()),
            "{case}: {replicas:?} spans too few racks"
        );
        // Beyond one replica per rack, racks fill evenly: no rack holds two more of the
        // partition than a rack that still has a broker to spare.
        for (rack, &size) in &rack_sizes {
            let here = per_rack.get(rack).copied().unwrap_or(0);
            if here < size {
                assert!(
                    per_rack.values().all(|&c| c <= here + 1),
                    "{case}: {replicas:?} piles onto one rack"
                );
            }
        }
        *leaders.get_mut(&replicas[0]).unwrap() += 1;
        for b in &replicas[1..] {
            *followers.get_mut(b).unwrap() += 1;
        }
    }

    // k·n partitions give every broker exactly k leaderships, however uneven the racks.
    assert!(
        leaders.values().all(|&c| c == k),
        "{case}: leaders {leaders:?}"
    );
    // Followers spread evenly within each rack; with racks of one size, over all brokers.
    for rack in rack_sizes.keys() {
        let in_rack = followers
            .iter()
            .filter(|(b, _)| rack_of[b] == *rack)
            .map(|(_, &c)| c);
        assert!(spread(in_rack) <= 1, "{case}: followers {followers:?}");
    }
    if sizes.iter().all(|&s| s == sizes[0]) {
        assert!(
            spread(followers.values().copied()) <= 1,
            "{case}: followers {followers:?}"
        );
    }
}

#[test]
fn leaders_stay_within_one_for_any_partition_count() {
    let mut rng = Rng(7);
    for n in 1..=9 {
        for sizes in (1..=n.min(3)).flat_map(|r| splits(n, r)) {
            let brokers = cluster(&sizes, &mut rng);
            for count in 0..=(2 * n as i32 + 1) {
                let start = rng.below(100);
                let got = assign_replicas(&brokers, 0, count, 1, start).unwrap();
                let mut leaders: BTreeMap<BrokerId, usize> =
                    brokers.iter().map(|b| (b.id, 0)).collect();
                for replicas in &got {
                    *leaders.get_mut(&replicas[0]).unwrap() += 1;
                }
                assert!(
                    spread(leaders.values().copied()) <= 1,
                    "sizes={sizes:?} count={count} start={start}: {leaders:?}"
                );
            }
        }
    }
}

#[test]
fn added_partitions_continue_the_leader_rotation() {
    // CreatePartitions places `first..first + count`; its leaders are the ones the topic
    // would have had had it been created with all partitions at once (same `start`).
    let mut rng = Rng(11);
    for sizes in [vec![3], vec![2, 2], vec![3, 2, 1], vec![4, 1]] {
        let brokers = cluster(&sizes, &mut rng);
        let all = assign_replicas(&brokers, 0, 20, 2, 5).unwrap();
        for first in 0..20 {
            let tail = assign_replicas(&brokers, first, 20 - first, 2, 5).unwrap();
            let want: Vec<BrokerId> = all[first as usize..].iter().map(|r| r[0]).collect();
            let got: Vec<BrokerId> = tail.iter().map(|r| r[0]).collect();
            assert_eq!(got, want, "sizes={sizes:?} first={first}");
        }
    }
}

#[test]
fn partitions_sharing_a_leader_fail_over_to_different_brokers() {
    // When a leader fails, its partitions fail over to their second replica. A broker's k
    // leaderships name min(k, n - 1) different second replicas with one follower, and at
    // least min(k, rf - 1) with more, so the failover load spreads instead of landing on
    // one broker.
    let mut rng = Rng(13);
    for n in 2..=9 {
        let brokers = cluster(&[n], &mut rng);
        for rf in 2..=n.min(4) {
            for k in 1..=n {
                let start = rng.below(100);
                let got = assign_replicas(&brokers, 0, (k * n) as i32, rf as i32, start).unwrap();
                let mut next: BTreeMap<BrokerId, BTreeSet<BrokerId>> = BTreeMap::new();
                for replicas in &got {
                    next.entry(replicas[0]).or_default().insert(replicas[1]);
                }
                let want = if rf == 2 { k.min(n - 1) } else { k.min(rf - 1) };
                for (leader, successors) in &next {
                    assert!(
                        successors.len() >= want,
                        "n={n} rf={rf} k={k} start={start}: {leader} fails over to {successors:?}"
                    );
                }
            }
        }
    }
}
