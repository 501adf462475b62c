//! Incremental fetch sessions (KIP-227): the cache of fetchers' partition sets by session
//! id, which lets a consumer or follower send only the partitions that changed and be
//! answered only with the partitions that have something new.

use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::protocol::StrBytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::sync::Mutex;

use crate::protocol::codes;

/// The session id of a fetch that has none.
pub const NO_SESSION: i32 = 0;
/// The epoch that asks for a full fetch and a new session.
const INITIAL_EPOCH: i32 = 0;
/// The epoch that closes a session (or asks for none).
const FINAL_EPOCH: i32 = -1;

/// A partition as a session holds it: by topic id from Fetch v13 (the name empty), by name
/// before it (the id nil).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    pub topic_id: uuid::Uuid,
    pub topic: StrBytes,
    pub partition: i32,
}

/// One partition of a session: what the fetcher last asked for and what it was last told,
/// so that an incremental response can leave it out when nothing changed.
#[derive(Debug, Clone)]
pub struct CachedPartition {
    pub key: PartitionKey,
    pub fetch: FetchPartition,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
}

impl CachedPartition {
    /// A partition the session has not answered for yet: its first response always
    /// carries it.
    pub fn new(key: PartitionKey, fetch: FetchPartition) -> CachedPartition {
        CachedPartition {
            key,
            fetch,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
        }
    }

    /// Records what a response says of the partition; true when an incremental response
    /// must carry it (Kafka's rule: records, an error, a moved high watermark, last stable
    /// or log start offset, or a redirect of some kind).
    pub fn update(&mut self, pd: &kafka_protocol::messages::fetch_response::PartitionData) -> bool {
        let changed = self.high_watermark != pd.high_watermark
            || self.last_stable_offset != pd.last_stable_offset
            || self.log_start_offset != pd.log_start_offset;
        self.high_watermark = pd.high_watermark;
        self.last_stable_offset = pd.last_stable_offset;
        self.log_start_offset = pd.log_start_offset;
        changed
            || pd.error_code != codes::NONE
            || pd.records.as_ref().is_some_and(|r| !r.is_empty())
            || pd.preferred_read_replica.0 >= 0
            || pd.diverging_epoch.epoch >= 0
    }
}

/// How one Fetch request is served.
#[derive(Debug)]
pub enum FetchContext {
    /// Every partition of the request, answered in full, with no session (epoch -1).
    Sessionless,
    /// Every partition of the request, answered in full; a session is created from the
    /// answer if the cache takes it (epoch 0).
    Full,
    /// The session's partitions after the request's changes; the response carries only
    /// those with something new. `epoch` is the session's epoch after this request.
    Incremental {
        id: i32,
        epoch: i32,
        partitions: Vec<CachedPartition>,
    },
}

struct Session {
    /// The epoch the next request must carry.
    epoch: i32,
    /// A follower's session, which may evict consumers' sessions.
    privileged: bool,
    /// Whether the session was made by Fetch v13+ (topic ids) or before.
    uses_topic_ids: bool,
    created_ms: i64,
    last_used_ms: i64,
    partitions: Vec<CachedPartition>,
}

/// The broker's fetch sessions: at most `max.incremental.fetch.session.cache.slots`, each
/// evicted as Kafka does when a new one needs its slot.
pub struct FetchSessions {
    slots: usize,
    eviction_ms: i64,
    sessions: Mutex<HashMap<i32, Session>>,
    metrics: SessionMetrics,
}

/// The cache's metrics, kept up to date as sessions come and go.
#[derive(Clone, Default)]
pub struct SessionMetrics {
    pub sessions: Gauge,
    pub partitions: Gauge,
    pub created: Counter,
    pub evictions: Counter,
}

fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

impl FetchSessions {
    pub fn new(slots: usize, eviction_ms: i64, metrics: SessionMetrics) -> FetchSessions {
        FetchSessions {
            slots,
            eviction_ms,
            sessions: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Opens the context of a Fetch request (its session id and epoch, the partitions it
    /// adds or changes and those it forgets), or the top-level error that answers it:
    /// FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH, or
    /// FETCH_SESSION_TOPIC_ID_ERROR when the request's version disagrees with the session's
    /// on topic ids.
    pub fn open(
        &self,
        id: i32,
        epoch: i32,
        uses_topic_ids: bool,
        changes: impl Iterator<Item = (PartitionKey, FetchPartition)>,
        forgotten: impl Iterator<Item = PartitionKey>,
        now_ms: i64,
    ) -> Result<FetchContext, i16> {
        let mut sessions = self.sessions.lock().expect("fetch sessions lock");
        if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
            if id != NO_SESSION {
                self.remove(&mut sessions, id);
            }
            return Ok(if epoch == FINAL_EPOCH {
                FetchContext::Sessionless
            } else {
                FetchContext::Full
            });
        }
        let session = sessions
            .get_mut(&id)
            .ok_or(codes::FETCH_SESSION_ID_NOT_FOUND)?;
        if session.epoch != epoch {
            return Err(codes::INVALID_FETCH_SESSION_EPOCH);
        }
        if session.uses_topic_ids != uses_topic_ids {
            return Err(codes::FETCH_SESSION_TOPIC_ID_ERROR);
        }
        let before = session.partitions.len();
        let mut index: HashMap<PartitionKey, usize> = session
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| (p.key.clone(), i))
            .collect();
        for (key, fetch) in changes {
            match index.get(&key) {
                Some(&i) => session.partitions[i].fetch = fetch,
                None => {
                    index.insert(key.clone(), session.partitions.len());
                    session.partitions.push(CachedPartition::new(key, fetch));
                }
            }
        }
        let forgotten: std::collections::HashSet<PartitionKey> = forgotten.collect();
        if !forgotten.is_empty() {
            session.partitions.retain(|p| !forgotten.contains(&p.key));
        }
        session.epoch = next_epoch(session.epoch);
        session.last_used_ms = now_ms;
        let after = session.partitions.len();
        self.metrics.partitions.inc_by(after as i64 - before as i64);
        Ok(FetchContext::Incremental {
            id,
            epoch: session.epoch,
            partitions: session.partitions.clone(),
        })
    }

    /// Stores an incremental fetch's partitions back (with what its response told the
    /// fetcher, in their new order), unless a later request on the session came first.
    pub fn store(&self, id: i32, epoch: i32, partitions: Vec<CachedPartition>) {
        let mut sessions = self.sessions.lock().expect("fetch sessions lock");
        if let Some(s) = sessions.get_mut(&id).filter(|s| s.epoch == epoch) {
            s.partitions = partitions;
        }
    }

    /// Creates a session from a full fetch's partitions (with what the response told the
    /// fetcher) if the cache has a slot, or one to take: the least recently used session
    /// once it has been idle for the eviction time; for a follower, else, the consumer
    /// session with the fewest partitions; for a consumer, a consumer session older than
    /// the eviction time with fewer partitions than the new one. Returns the new session's
    /// id, or [`NO_SESSION`] when none was made (the fetcher keeps sending full fetches).
    pub fn create(
        &self,
        privileged: bool,
        uses_topic_ids: bool,
        partitions: Vec<CachedPartition>,
        now_ms: i64,
    ) -> i32 {
        if partitions.is_empty() || self.slots == 0 {
            return NO_SESSION;
        }
        let mut sessions = self.sessions.lock().expect("fetch sessions lock");
        if sessions.len() >= self.slots {
            let Some(victim) = self.victim(&sessions, privileged, partitions.len(), now_ms) else {
                return NO_SESSION;
            };
            self.remove(&mut sessions, victim);
            self.metrics.evictions.inc();
        }
        let id = loop {
            let id = (uuid::Uuid::new_v4().as_u128() as i32) & i32::MAX;
            if id != NO_SESSION && !sessions.contains_key(&id) {
                break id;
            }
        };
        self.metrics.sessions.inc();
        self.metrics.created.inc();
        self.metrics.partitions.inc_by(partitions.len() as i64);
        sessions.insert(
            id,
            Session {
                epoch: 1,
                privileged,
                uses_topic_ids,
                created_ms: now_ms,
                last_used_ms: now_ms,
                partitions,
            },
        );
        id
    }

    fn victim(
        &self,
        sessions: &HashMap<i32, Session>,
        privileged: bool,
        size: usize,
        now_ms: i64,
    ) -> Option<i32> {
        let (&lru, least_recent) = sessions.iter().min_by_key(|(_, s)| s.last_used_ms)?;
        if now_ms - least_recent.last_used_ms > self.eviction_ms {
            return Some(lru);
        }
        sessions
            .iter()
            .filter(|(_, s)| !s.privileged)
            .filter(|(_, s)| {
                privileged
                    || (now_ms - s.created_ms > self.eviction_ms && s.partitions.len() < size)
            })
            .min_by_key(|(_, s)| (s.partitions.len(), s.last_used_ms))
            .map(|(&id, _)| id)
    }

    fn remove(&self, sessions: &mut HashMap<i32, Session>, id: i32) {
        if let Some(s) = sessions.remove(&id) {
            self.metrics.sessions.dec();
            self.metrics.partitions.dec_by(s.partitions.len() as i64);
        }
    }

    #[cfg(test)]
    fn ids(&self) -> Vec<i32> {
        let mut ids: Vec<i32> = self
            .sessions
            .lock()
            .expect("fetch sessions lock")
            .keys()
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(topic: &str, partition: i32) -> PartitionKey {
        PartitionKey {
            topic_id: uuid::Uuid::nil(),
            topic: StrBytes::from_string(topic.to_string()),
            partition,
        }
    }

    fn fetch(offset: i64) -> FetchPartition {
        FetchPartition::default().with_fetch_offset(offset)
    }

    fn cached(n: i32) -> Vec<CachedPartition> {
        (0..n)
            .map(|p| CachedPartition::new(key("t", p), fetch(0)))
            .collect()
    }

    fn incremental(
        s: &FetchSessions,
        id: i32,
        epoch: i32,
        changes: Vec<(PartitionKey, FetchPartition)>,
        forgotten: Vec<PartitionKey>,
    ) -> Result<(i32, Vec<CachedPartition>), i16> {
        touch(s, id, epoch, changes, forgotten, 0)
    }

    fn touch(
        s: &FetchSessions,
        id: i32,
        epoch: i32,
        changes: Vec<(PartitionKey, FetchPartition)>,
        forgotten: Vec<PartitionKey>,
        now_ms: i64,
    ) -> Result<(i32, Vec<CachedPartition>), i16> {
        match s.open(
            id,
            epoch,
            false,
            changes.into_iter(),
            forgotten.into_iter(),
            now_ms,
        )? {
            FetchContext::Incremental {
                epoch, partitions, ..
            } => Ok((epoch, partitions)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn epochs_advance_and_a_wrong_epoch_or_id_is_refused() {
        let s = FetchSessions::new(10, 1000, SessionMetrics::default());
        let id = s.create(false, false, cached(2), 0);
        assert_ne!(id, NO_SESSION);
        assert_eq!(
            incremental(&s, id, 2, vec![], vec![]).unwrap_err(),
            codes::INVALID_FETCH_SESSION_EPOCH
        );
        let (epoch, parts) = incremental(&s, id, 1, vec![], vec![]).unwrap();
        assert_eq!((epoch, parts.len()), (2, 2));
        assert_eq!(
            incremental(&s, id, 1, vec![], vec![]).unwrap_err(),
            codes::INVALID_FETCH_SESSION_EPOCH,
            "a replayed epoch"
        );
        assert_eq!(
            incremental(&s, id + 1, 1, vec![], vec![]).unwrap_err(),
            codes::FETCH_SESSION_ID_NOT_FOUND
        );
        assert_eq!(
            s.open(id, 2, true, std::iter::empty(), std::iter::empty(), 0)
                .unwrap_err(),
            codes::FETCH_SESSION_TOPIC_ID_ERROR
        );
        assert_eq!(next_epoch(i32::MAX), 1);
    }

    #[test]
    fn changes_add_and_update_and_forgotten_partitions_leave() {
        let s = FetchSessions::new(10, 1000, SessionMetrics::default());
        let id = s.create(false, false, cached(3), 0);
        let (_, parts) = incremental(
            &s,
            id,
            1,
            vec![(key("t", 1), fetch(50)), (key("u", 0), fetch(7))],
            vec![key("t", 0)],
        )
        .unwrap();
        let view: Vec<(String, i32, i64)> = parts
            .iter()
            .map(|p| {
                (
                    p.key.topic.to_string(),
                    p.key.partition,
                    p.fetch.fetch_offset,
                )
            })
            .collect();
        assert_eq!(
            view,
            [("t".into(), 1, 50), ("t".into(), 2, 0), ("u".into(), 0, 7)]
        );
        assert_eq!(s.metrics.partitions.get(), 3);
    }

    #[test]
    fn epoch_zero_or_minus_one_closes_the_session() {
        let m = SessionMetrics::default();
        let s = FetchSessions::new(10, 1000, m.clone());
        let a = s.create(false, false, cached(2), 0);
        let b = s.create(false, false, cached(2), 0);
        assert_eq!(m.sessions.get(), 2);
        assert!(matches!(
            s.open(a, 0, false, std::iter::empty(), std::iter::empty(), 0),
            Ok(FetchContext::Full)
        ));
        assert!(matches!(
            s.open(b, -1, false, std::iter::empty(), std::iter::empty(), 0),
            Ok(FetchContext::Sessionless)
        ));
        assert!(s.ids().is_empty());
        assert_eq!((m.sessions.get(), m.partitions.get()), (0, 0));
    }

    #[test]
    fn a_store_after_a_newer_request_is_dropped() {
        let s = FetchSessions::new(10, 1000, SessionMetrics::default());
        let id = s.create(false, false, cached(1), 0);
        let (e1, mut parts) = incremental(&s, id, 1, vec![], vec![]).unwrap();
        let (_e2, _) = incremental(&s, id, e1, vec![], vec![]).unwrap();
        parts[0].high_watermark = 99;
        s.store(id, e1, parts);
        let (_, now) = incremental(&s, id, e1 + 1, vec![], vec![]).unwrap();
        assert_eq!(now[0].high_watermark, -1);
    }

    #[test]
    fn eviction_follows_kafkas_rules() {
        let m = SessionMetrics::default();
        let s = FetchSessions::new(2, 1000, m.clone());
        let small = s.create(false, false, cached(1), 0);
        let big = s.create(false, false, cached(5), 0);
        // Full, nothing idle or old enough: a consumer gets no session.
        assert_eq!(s.create(false, false, cached(9), 10), NO_SESSION);
        // A follower takes the consumer session with the fewest partitions.
        let follower = s.create(true, false, cached(1), 20);
        assert_ne!(follower, NO_SESSION);
        let mut expected = vec![big, follower];
        expected.sort_unstable();
        assert_eq!(s.ids(), expected);
        assert!(!s.ids().contains(&small));
        touch(&s, big, 1, vec![], vec![], 900).unwrap();
        touch(&s, follower, 1, vec![], vec![], 900).unwrap();
        // Nothing idle long enough; a consumer cannot evict a follower, nor a consumer
        // session with as many partitions as its own or more.
        assert_eq!(s.create(false, false, cached(2), 1500), NO_SESSION);
        // `big` is older than the eviction time and smaller than the new one: evicted.
        let bigger = s.create(false, false, cached(6), 1500);
        assert_ne!(bigger, NO_SESSION);
        assert!(!s.ids().contains(&big));
        // Idle past the eviction time, even a follower's session goes.
        let late = s.create(false, false, cached(1), 5000);
        assert_ne!(late, NO_SESSION);
        assert!(!s.ids().contains(&follower));
        assert_eq!(m.evictions.get(), 3);
        assert_eq!((m.sessions.get(), m.partitions.get()), (2, 7));
    }

    #[test]
    fn no_slots_or_no_partitions_make_no_session() {
        let s = FetchSessions::new(0, 1000, SessionMetrics::default());
        assert_eq!(s.create(false, false, cached(3), 0), NO_SESSION);
        let s = FetchSessions::new(5, 1000, SessionMetrics::default());
        assert_eq!(s.create(false, false, vec![], 0), NO_SESSION);
    }
}
