//! Replication throttles (Kafka's KIP-73): a byte rate per broker for what leaders send to
//! throttled followers (`leader.replication.throttled.rate`) and what followers fetch for
//! throttled partitions (`follower.replication.throttled.rate`), applied only to the
//! replicas a topic lists in `leader.replication.throttled.replicas` /
//! `follower.replication.throttled.replicas` and only while they are out of the ISR — so a
//! throttled move never slows the replication acks=all waits for.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Bits of a partition's throttle flags: listed in leader / follower throttled replicas.
pub const LEADER: u8 = 1;
pub const FOLLOWER: u8 = 2;

/// What a rate of "no limit" is written as (Kafka's default, Long.MAX_VALUE).
pub const UNLIMITED: u64 = i64::MAX as u64;

/// A byte-rate limit as a token bucket holding at most one second of bytes: a read may
/// go ahead while the bucket is not in debt, and what it moved is charged after, so the
/// average rate stays at the limit whatever the size of single reads (a 1 MiB fetch under
/// a 100 KB/s limit waits ten seconds before the next).
#[derive(Debug)]
pub struct Quota {
    limit: AtomicU64,
    bucket: Mutex<Bucket>,
    /// Bytes moved under this quota (throttled replicas only).
    moved: AtomicU64,
}

#[derive(Debug)]
struct Bucket {
    tokens: i64,
    at_ms: i64,
}

impl Default for Quota {
    fn default() -> Quota {
        Quota {
            limit: AtomicU64::new(UNLIMITED),
            bucket: Mutex::new(Bucket {
                tokens: 0,
                at_ms: i64::MIN,
            }),
            moved: AtomicU64::new(0),
        }
    }
}

impl Quota {
    pub fn set_limit(&self, bytes_per_s: u64) {
        self.limit.store(bytes_per_s, Ordering::Relaxed);
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Bytes moved by throttled replicas so far.
    pub fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    fn refill(&self, b: &mut Bucket, now_ms: i64, limit: u64) {
        let cap = limit.min(i64::MAX as u64 / 2) as i64;
        if b.at_ms == i64::MIN {
            b.tokens = cap;
        } else if now_ms > b.at_ms {
            let gained = limit as i128 * (now_ms - b.at_ms) as i128 / 1000;
            b.tokens = (b.tokens as i128 + gained).min(cap as i128) as i64;
        }
        b.at_ms = b.at_ms.max(now_ms);
    }

    /// Whether a throttled replica must wait now (the bucket is in debt).
    pub fn exceeded(&self, now_ms: i64) -> bool {
        let limit = self.limit();
        if limit >= UNLIMITED {
            return false;
        }
        let mut b = self.bucket.lock().expect("quota lock");
        self.refill(&mut b, now_ms, limit);
        b.tokens < 0
    }

    /// Charges bytes a throttled replica moved.
    pub fn record(&self, bytes: usize, now_ms: i64) {
        if bytes == 0 {
            return;
        }
        self.moved.fetch_add(bytes as u64, Ordering::Relaxed);
        let limit = self.limit();
        if limit >= UNLIMITED {
            return;
        }
        let mut b = self.bucket.lock().expect("quota lock");
        self.refill(&mut b, now_ms, limit);
        b.tokens = b.tokens.saturating_sub(bytes as i64);
    }
}

/// The two quotas of one broker.
#[derive(Debug, Default)]
pub struct ReplicationQuotas {
    pub leader: Quota,
    pub follower: Quota,
}

/// The partitions of a topic whose replica on `broker` a throttled-replicas value names
/// (`*`: every partition; else `partition:broker` pairs, as kafka-reassign-partitions
/// writes them). `None` means all.
pub fn throttled_partitions(value: &str, broker: i32) -> Option<BTreeSet<i32>> {
    let value = value.trim();
    if value == "*" {
        return None;
    }
    Some(
        value
            .split(',')
            .filter_map(|pair| {
                let (p, b) = pair.trim().split_once(':')?;
                let (p, b) = (p.trim().parse::<i32>().ok()?, b.trim().parse::<i32>().ok()?);
                (b == broker).then_some(p)
            })
            .collect(),
    )
}

/// Kafka's ThrottledReplicaListValidator: empty, `*`, or `partition:broker` pairs.
pub fn validate_throttled_replicas(value: &str) -> Result<(), String> {
    let value = value.trim();
    if value.is_empty() || value == "*" {
        return Ok(());
    }
    let well_formed = value.split(',').all(|pair| {
        pair.trim().split_once(':').is_some_and(|(p, b)| {
            p.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok()
        })
    });
    if well_formed {
        Ok(())
    } else {
        Err("must be the wildcard (*) or a list of partitionId:brokerId, such as 0:101,0:102,1:101,1:102".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_lets_through_its_rate_on_average_and_nothing_limits_unlimited() {
        let q = Quota::default();
        assert!(!q.exceeded(0));
        q.record(10_000_000, 0);
        assert!(!q.exceeded(1), "unlimited");
        q.set_limit(1000);
        let mut now = 1_000;
        let mut moved = 0usize;
        // Reads of 300 bytes whenever the quota allows, for 10 s: about 10 × 1000 bytes
        // (plus the first second's full bucket and one read of overshoot).
        while now < 11_000 {
            if !q.exceeded(now) {
                q.record(300, now);
                moved += 300;
            }
            now += 10;
        }
        assert!((10_000..=11_400).contains(&moved), "moved {moved}");
        // A big read puts the bucket in debt for as long as it takes to pay it back: the
        // bucket held between -300 and 1000 tokens before it.
        q.record(5_000, now);
        assert!(q.exceeded(now + 3_900));
        assert!(!q.exceeded(now + 5_300));
    }

    #[test]
    fn throttled_replica_lists_name_partitions_per_broker() {
        assert_eq!(throttled_partitions("*", 3), None);
        assert_eq!(
            throttled_partitions("0:1,0:2,1:2, 2:3", 2),
            Some(BTreeSet::from([0, 1]))
        );
        assert_eq!(throttled_partitions("", 2), Some(BTreeSet::new()));
        for ok in ["", "*", "0:1", "0:1, 1:2"] {
            assert!(validate_throttled_replicas(ok).is_ok(), "{ok}");
        }
        for bad in ["x", "0", "0:a", "0:1,", "*,0:1", "-1:2"] {
            assert!(validate_throttled_replicas(bad).is_err(), "{bad}");
        }
    }
}
