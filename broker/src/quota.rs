//! Client quotas (Kafka's KIP-13, KIP-55 and KIP-124): byte rates for produce and fetch and
//! a share of request-handling time, per user and client id, set with AlterClientQuotas and
//! kept in the metadata log. Usage is measured as Kafka measures it — a rate over
//! `quota.window.num` samples of `quota.window.size.seconds` — and a client over its quota
//! is told how long to wait (`throttle_time_ms`) and is not read from for that long.

use crate::metadata::ApiError;
use crate::protocol::codes;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A quota entity: entity type (`user`, `client-id`, `ip`) → name, `None` for the type's
/// default entity.
pub type QuotaEntity = BTreeMap<String, Option<String>>;

/// One entity's quotas: quota key → value.
pub type QuotaValues = BTreeMap<String, f64>;

/// Every entity's quotas.
pub type QuotaTable = BTreeMap<QuotaEntity, QuotaValues>;

pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
pub const IP: &str = "ip";

pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
pub const CONTROLLER_MUTATION_RATE: &str = "controller_mutation_rate";

/// The principal of every client: Strom's listeners are PLAINTEXT, where Kafka's principal
/// is `User:ANONYMOUS`, so user quotas apply to the user `ANONYMOUS` (or the default user).
pub const ANONYMOUS: &str = "ANONYMOUS";

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// Bytes of Produce requests per second.
    Produce = 0,
    /// Bytes of consumer Fetch responses per second.
    Fetch = 1,
    /// Time handling requests, in percent of one thread.
    Request = 2,
}

impl QuotaKind {
    pub const ALL: [QuotaKind; 3] = [QuotaKind::Produce, QuotaKind::Fetch, QuotaKind::Request];

    /// The quota's key in AlterClientQuotas / DescribeClientQuotas.
    pub fn key(self) -> &'static str {
        match self {
            QuotaKind::Produce => PRODUCER_BYTE_RATE,
            QuotaKind::Fetch => CONSUMER_BYTE_RATE,
            QuotaKind::Request => REQUEST_PERCENTAGE,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            QuotaKind::Produce => "produce",
            QuotaKind::Fetch => "fetch",
            QuotaKind::Request => "request",
        }
    }
}

/// A map keyed by quota entity, written to a checkpoint as a list of (entity, value) pairs
/// (JSON object keys must be strings).
pub mod entity_map {
    use super::QuotaEntity;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer, V: Serialize>(
        map: &BTreeMap<QuotaEntity, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
        d: D,
    ) -> Result<BTreeMap<QuotaEntity, V>, D::Error> {
        let pairs: Vec<(QuotaEntity, V)> = Vec::deserialize(d)?;
        Ok(pairs.into_iter().collect())
    }
}

/// Checks one AlterClientQuotas entry as Kafka's controller does — its entity's types and
/// names, the keys that entity may carry, each value's type — and returns the entity with
/// each key's new value (`None`: remove). Every error is INVALID_REQUEST with this message.
pub fn validate_alteration(
    entity: &[(String, Option<String>)],
    ops: &[(String, Option<f64>)],
) -> Result<(QuotaEntity, BTreeMap<String, Option<f64>>), String> {
    let mut changes = BTreeMap::new();
    for (key, value) in ops {
        if changes.insert(key.clone(), *value).is_some() {
            return Err(format!(
                "Duplicate quota key {key} not updating quota for this entity {}",
                describe_entity(entity)
            ));
        }
    }
    if entity.is_empty() {
        return Err("Invalid empty client quota entity".into());
    }
    let mut out = QuotaEntity::new();
    for (ty, name) in entity {
        if out.contains_key(ty) {
            return Err(format!(
                "Invalid client quota entity: the entity type {ty} appears more than once"
            ));
        }
        if ty != USER && ty != CLIENT_ID && ty != IP {
            return Err(format!("Unhandled client quota entity type: {ty}"));
        }
        if name.as_deref() == Some("") {
            return Err(format!("Empty {ty} not supported"));
        }
        out.insert(ty.clone(), name.clone());
    }
    if out.contains_key(IP) {
        if out.len() > 1 {
            return Err(
                "Invalid client quota entity: ip cannot be combined with user or client-id".into(),
            );
        }
        return Err("Strom does not enforce ip quotas (connection_creation_rate) yet; limit connections per address with max.connections.per.ip".into());
    }
    for (key, value) in &changes {
        let integral = match key.as_str() {
            PRODUCER_BYTE_RATE | CONSUMER_BYTE_RATE => true,
            REQUEST_PERCENTAGE => false,
            CONTROLLER_MUTATION_RATE => {
                return Err("Strom does not enforce controller_mutation_rate (KIP-599) yet".into())
            }
            _ => return Err(format!("Invalid configuration key {key}")),
        };
        let Some(v) = value else { continue };
        if integral && (v.fract().abs() > 1e-6 || !v.is_finite()) {
            return Err(format!("Configuration {key} must be a Long value"));
        }
        if !v.is_finite() || *v <= 0.0 {
            return Err(format!("Configuration {key} must be positive, not {v}"));
        }
    }
    Ok((out, changes))
}

/// An entity as Kafka's tools print it: `user 'alice', client-id <default>`.
pub fn describe_entity(entity: &[(String, Option<String>)]) -> String {
    entity
        .iter()
        .map(|(ty, name)| match name {
            Some(n) => format!("{ty} '{n}'"),
            None => format!("{ty} <default>"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// DescribeClientQuotas filter component match types (KIP-546).
pub const MATCH_EXACT: i8 = 0;
pub const MATCH_DEFAULT: i8 = 1;
pub const MATCH_SPECIFIED: i8 = 2;

/// The entities a DescribeClientQuotas filter selects, as Kafka's image answers it: each
/// component narrows by one entity type (an exact name, the default, or any entity of that
/// type); `strict` keeps only entities with no other types.
pub fn describe<'a>(
    quotas: &'a QuotaTable,
    components: &[(String, i8, Option<String>)],
    strict: bool,
) -> Result<Vec<(&'a QuotaEntity, &'a QuotaValues)>, ApiError> {
    let invalid = |m: String| ApiError::new(codes::INVALID_REQUEST, m);
    let mut exact: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    let mut any: BTreeSet<&str> = BTreeSet::new();
    for (ty, match_type, name) in components {
        if ty.is_empty() {
            return Err(invalid("Invalid empty entity type.".into()));
        }
        if exact.contains_key(ty.as_str()) || any.contains(ty.as_str()) {
            return Err(invalid(format!(
                "Entity type {ty} cannot appear more than once in the filter."
            )));
        }
        if ty != USER && ty != CLIENT_ID && ty != IP {
            return Err(ApiError::new(
                codes::UNSUPPORTED_VERSION,
                format!("Unsupported entity type {ty}"),
            ));
        }
        match *match_type {
            MATCH_EXACT => match name {
                None => {
                    return Err(invalid(
                        "Request specified MATCH_TYPE_EXACT, but set match string to null.".into(),
                    ))
                }
                Some(n) => {
                    exact.insert(ty, Some(n));
                }
            },
            MATCH_DEFAULT | MATCH_SPECIFIED if name.is_some() => {
                let which = if *match_type == MATCH_DEFAULT {
                    "MATCH_TYPE_DEFAULT"
                } else {
                    "MATCH_TYPE_SPECIFIED"
                };
                return Err(invalid(format!(
                    "Request specified {which}, but also specified a match string."
                )));
            }
            MATCH_DEFAULT => {
                exact.insert(ty, None);
            }
            MATCH_SPECIFIED => {
                any.insert(ty);
            }
            other => return Err(invalid(format!("Unknown match type {other}"))),
        }
    }
    let has = |ty: &str| exact.contains_key(ty) || any.contains(ty);
    if has(IP) && (has(USER) || has(CLIENT_ID)) {
        return Err(invalid("Invalid entity filter component combination. IP filter component should not be used with user or clientId filter component.".into()));
    }
    if exact.is_empty() && any.is_empty() && strict {
        return Ok(Vec::new());
    }
    Ok(quotas
        .iter()
        .filter(|(entity, _)| {
            exact
                .iter()
                .all(|(ty, name)| entity.get(*ty).is_some_and(|n| n.as_deref() == *name))
                // As Kafka's image does, "any entity of this type" includes its default.
                && any.iter().all(|ty| entity.contains_key(*ty))
                && (!strict || entity.len() == exact.len() + any.len())
        })
        .collect())
}

/// Usage of one quota as Kafka's sampled `Rate` measures it: values fall in samples of
/// `window_ms`, samples older than all of them together are dropped, and the rate divides
/// what is left by the time they span — never less than all but one whole window, so a
/// client's first burst is measured over the full window, not over the instant it took.
#[derive(Debug, Default)]
struct Rate {
    /// (start ms, value) of each sample.
    samples: Vec<(i64, f64)>,
    current: usize,
}

impl Rate {
    fn record(&mut self, value: f64, now_ms: i64, samples: u32, window_ms: i64) {
        if self.samples.is_empty() {
            self.samples.push((now_ms, 0.0));
        }
        if now_ms - self.samples[self.current].0 >= window_ms {
            self.current = (self.current + 1) % samples as usize;
            if self.current >= self.samples.len() {
                self.samples.push((now_ms, 0.0));
            } else {
                self.samples[self.current] = (now_ms, 0.0);
            }
        }
        self.samples[self.current].1 += value;
    }

    /// The rate per second now and the window (ms) it is measured over.
    fn measure(&mut self, now_ms: i64, samples: u32, window_ms: i64) -> (f64, i64) {
        let expire = samples as i64 * window_ms;
        for s in &mut self.samples {
            if now_ms - s.0 >= expire {
                *s = (now_ms, 0.0);
            }
        }
        let total: f64 = self.samples.iter().map(|s| s.1).sum();
        let oldest = self.samples.iter().map(|s| s.0).min().unwrap_or(now_ms);
        let mut elapsed = (now_ms - oldest).max(0);
        let full = elapsed / window_ms;
        let min_full = samples as i64 - 1;
        if full < min_full {
            elapsed += (min_full - full) * window_ms;
        }
        let elapsed = elapsed.max(1);
        (total * 1000.0 / elapsed as f64, elapsed)
    }
}

/// The usage of one quota by the clients it applies to together (Kafka's quota sensor,
/// named by its metric tags).
#[derive(Debug)]
pub struct Sensor {
    kind: QuotaKind,
    /// The quota (f64 bits): bytes per second, or percent of one thread.
    bound: AtomicU64,
    rate: Mutex<Rate>,
    last_ms: AtomicI64,
    samples: u32,
    window_ms: i64,
    /// This kind's throttle counters (`strom_client_quota_throttles_total{quota}` and the
    /// milliseconds), resolved once.
    throttles: prometheus_client::metrics::counter::Counter,
    throttled_ms: prometheus_client::metrics::counter::Counter,
}

impl Sensor {
    pub fn bound(&self) -> f64 {
        f64::from_bits(self.bound.load(Ordering::Relaxed))
    }

    /// The time to bring an observed rate back to the quota, assuming nothing more is
    /// recorded: at rate O against quota T over window W, a wait X with O·W/(W+X) = T,
    /// so X = (O−T)/T·W. A request-time throttle never exceeds one sample (as Kafka). A
    /// byte-rate throttle never exceeds all samples together: responses are capped at a
    /// window's worth, so only a single batch larger than that could ask for more, and a
    /// connection is not held silent (unable to notice its client leave) for longer.
    fn throttle(&self, rate: f64, window_ms: i64) -> u32 {
        let bound = self.bound();
        if rate <= bound {
            return 0;
        }
        let cap = match self.kind {
            QuotaKind::Request => self.window_ms,
            QuotaKind::Produce | QuotaKind::Fetch => self.samples as i64 * self.window_ms,
        };
        let ms = ((rate - bound) / bound * window_ms as f64).round();
        ms.clamp(0.0, cap.min(i32::MAX as i64) as f64) as u32
    }

    /// Records `value` now and returns the throttle it leads to (0 within the quota); the
    /// caller gives the client that throttle.
    pub fn record(&self, value: f64, now_ms: i64) -> u32 {
        self.last_ms.store(now_ms, Ordering::Relaxed);
        let mut rate = self.rate.lock().expect("quota rate lock");
        rate.record(value, now_ms, self.samples, self.window_ms);
        let (r, w) = rate.measure(now_ms, self.samples, self.window_ms);
        drop(rate);
        self.counted(self.throttle(r, w))
    }

    /// The throttle that the usage so far calls for now, recording nothing.
    pub fn throttle_now(&self, now_ms: i64) -> u32 {
        let (r, w) = self.rate.lock().expect("quota rate lock").measure(
            now_ms,
            self.samples,
            self.window_ms,
        );
        self.counted(self.throttle(r, w))
    }

    /// A throttle given to a client, counted when there is one.
    fn counted(&self, ms: u32) -> u32 {
        if ms > 0 {
            self.throttles.inc();
            self.throttled_ms.inc_by(ms as u64);
        }
        ms
    }

    /// The most one response may carry: more than a whole window's worth would be
    /// throttled however idle the client had been (Kafka caps a throttled consumer's
    /// fetch size with this).
    pub fn max_in_window(&self) -> f64 {
        self.bound() * (self.samples.max(2) - 1) as f64 * self.window_ms as f64 / 1000.0
    }
}

/// Which entity level a quota is set at: (user part, client-id part); in each, `None` is
/// no such part and `Some(None)` the default entity.
type Level = (Option<Option<String>>, Option<Option<String>>);

#[derive(Default)]
struct State {
    /// The quotas of the metadata image, by level, one value per kind.
    table: HashMap<Level, [Option<f64>; 3]>,
    /// What the table was built from.
    source: QuotaTable,
    /// Sensors by kind and metric tags (user, client id): the clients a quota counts
    /// together share one.
    by_tags: HashMap<(QuotaKind, String, String), Arc<Sensor>>,
    /// Each client id's sensors, resolved once (a cache, cleared when quotas change).
    by_client: HashMap<String, [Option<Arc<Sensor>>; 3]>,
    last_sweep_ms: i64,
}

/// Client ids whose resolved sensors are kept at most; beyond, the cache starts over (a
/// client sending a new client id with every request must not grow it without bound).
const MAX_CACHED_CLIENTS: usize = 100_000;

/// The broker's client quotas: the configured values (from the metadata image) and the
/// usage of every client a quota applies to.
pub struct ClientQuotas {
    samples: u32,
    window_ms: i64,
    /// Whether any quota of each kind is set: when none is, requests pay one atomic load.
    enabled: [AtomicBool; 3],
    state: Mutex<State>,
    metrics: QuotaMetrics,
}

/// Throttles, counted by quota kind.
#[derive(Clone, Default)]
pub struct QuotaMetrics {
    pub throttled: prometheus_client::metrics::family::Family<
        Vec<(String, String)>,
        prometheus_client::metrics::counter::Counter,
    >,
    pub throttle_ms: prometheus_client::metrics::family::Family<
        Vec<(String, String)>,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl ClientQuotas {
    pub fn new(samples: u32, window_ms: i64, metrics: QuotaMetrics) -> ClientQuotas {
        ClientQuotas {
            samples: samples.max(1),
            window_ms: window_ms.max(1),
            enabled: Default::default(),
            state: Mutex::new(State::default()),
            metrics,
        }
    }

    pub fn enabled(&self, kind: QuotaKind) -> bool {
        self.enabled[kind as usize].load(Ordering::Relaxed)
    }

    /// Takes the quotas of a new metadata image (nothing to do when they did not change).
    pub fn apply(&self, quotas: &QuotaTable) {
        let mut state = self.state.lock().expect("quota state lock");
        if state.source == *quotas {
            return;
        }
        let mut table: HashMap<Level, [Option<f64>; 3]> = HashMap::new();
        for (entity, values) in quotas {
            let level = (entity.get(USER).cloned(), entity.get(CLIENT_ID).cloned());
            if level == (None, None) {
                continue;
            }
            let slot = table.entry(level).or_default();
            for kind in QuotaKind::ALL {
                slot[kind as usize] = values.get(kind.key()).copied();
            }
        }
        for kind in QuotaKind::ALL {
            let any = table.values().any(|v| v[kind as usize].is_some());
            self.enabled[kind as usize].store(any, Ordering::Relaxed);
        }
        state.table = table;
        state.source = quotas.clone();
        state.by_client.clear();
    }

    /// The quota of `kind` that applies to a client of `client_id` (all clients are the
    /// user [`ANONYMOUS`]), with its usage: the most specific entity setting it, in Kafka's
    /// order — user and client id, user and default client, user, default user and client
    /// id, default user and default client, default user, client id, default client.
    pub fn sensor(&self, kind: QuotaKind, client_id: &str, now_ms: i64) -> Option<Arc<Sensor>> {
        if !self.enabled(kind) {
            return None;
        }
        let mut state = self.state.lock().expect("quota state lock");
        if now_ms - state.last_sweep_ms >= 2 * self.samples as i64 * self.window_ms {
            self.sweep(&mut state, now_ms);
        }
        if let Some(cached) = state.by_client.get(client_id) {
            return cached[kind as usize].clone();
        }
        if state.by_client.len() >= MAX_CACHED_CLIENTS {
            state.by_client.clear();
        }
        let resolved: [Option<Arc<Sensor>>; 3] =
            QuotaKind::ALL.map(|k| self.resolve(&mut state, k, client_id, now_ms));
        let out = resolved[kind as usize].clone();
        state.by_client.insert(client_id.to_owned(), resolved);
        out
    }

    fn resolve(
        &self,
        state: &mut State,
        kind: QuotaKind,
        client_id: &str,
        now_ms: i64,
    ) -> Option<Arc<Sensor>> {
        let user = || Some(Some(ANONYMOUS.to_owned()));
        let client = || Some(Some(client_id.to_owned()));
        let default = || Some(None);
        let (u, c) = (ANONYMOUS, client_id);
        let levels: [(Level, (&str, &str)); 8] = [
            ((user(), client()), (u, c)),
            ((user(), default()), (u, c)),
            ((user(), None), (u, "")),
            ((default(), client()), (u, c)),
            ((default(), default()), (u, c)),
            ((default(), None), (u, "")),
            ((None, client()), ("", c)),
            ((None, default()), ("", c)),
        ];
        let (bound, (tag_user, tag_client)) = levels.into_iter().find_map(|(level, tags)| {
            state
                .table
                .get(&level)
                .and_then(|v| v[kind as usize])
                .map(|b| (b, tags))
        })?;
        let labels = vec![("quota".to_string(), kind.label().to_string())];
        let sensor = state
            .by_tags
            .entry((kind, tag_user.to_owned(), tag_client.to_owned()))
            .or_insert_with(|| {
                Arc::new(Sensor {
                    kind,
                    bound: AtomicU64::new(0),
                    rate: Mutex::new(Rate::default()),
                    last_ms: AtomicI64::new(now_ms),
                    samples: self.samples,
                    window_ms: self.window_ms,
                    throttles: self.metrics.throttled.get_or_create(&labels).clone(),
                    throttled_ms: self.metrics.throttle_ms.get_or_create(&labels).clone(),
                })
            });
        sensor.bound.store(bound.to_bits(), Ordering::Relaxed);
        Some(sensor.clone())
    }

    /// Drops the sensors that measured nothing for longer than all samples together: their
    /// rate is zero, so a new sensor measures the same.
    fn sweep(&self, state: &mut State, now_ms: i64) {
        state.last_sweep_ms = now_ms;
        let idle = self.samples as i64 * self.window_ms;
        state.by_client.clear();
        state
            .by_tags
            .retain(|_, s| now_ms - s.last_ms.load(Ordering::Relaxed) < idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(parts: &[(&str, Option<&str>)]) -> QuotaEntity {
        parts
            .iter()
            .map(|(t, n)| (t.to_string(), n.map(str::to_string)))
            .collect()
    }

    /// An entity as (type, name) pairs, `None` for a default.
    type Parts<'a> = &'a [(&'a str, Option<&'a str>)];

    fn quotas(set: &[(Parts, &str, f64)]) -> ClientQuotas {
        let q = ClientQuotas::new(11, 1000, QuotaMetrics::default());
        let mut map = QuotaTable::new();
        for (e, k, v) in set {
            map.entry(entity(e)).or_default().insert(k.to_string(), *v);
        }
        q.apply(&map);
        q
    }

    #[test]
    fn the_most_specific_entity_setting_the_quota_applies() {
        let q = quotas(&[
            (&[(CLIENT_ID, None)], PRODUCER_BYTE_RATE, 1.0),
            (&[(CLIENT_ID, Some("a"))], PRODUCER_BYTE_RATE, 2.0),
            (&[(USER, None)], PRODUCER_BYTE_RATE, 3.0),
            (
                &[(USER, Some(ANONYMOUS)), (CLIENT_ID, Some("b"))],
                PRODUCER_BYTE_RATE,
                4.0,
            ),
            // A user quota of another kind does not hide the client-id default's.
            (&[(USER, Some(ANONYMOUS))], CONSUMER_BYTE_RATE, 5.0),
        ]);
        let bound = |kind, c| q.sensor(kind, c, 0).map(|s| s.bound());
        assert_eq!(bound(QuotaKind::Produce, "b"), Some(4.0));
        // The default user outranks every client-id entity.
        assert_eq!(bound(QuotaKind::Produce, "a"), Some(3.0));
        assert_eq!(bound(QuotaKind::Fetch, "a"), Some(5.0));
        assert_eq!(bound(QuotaKind::Request, "a"), None);
        let q = quotas(&[
            (&[(CLIENT_ID, None)], PRODUCER_BYTE_RATE, 1.0),
            (&[(CLIENT_ID, Some("a"))], PRODUCER_BYTE_RATE, 2.0),
        ]);
        assert_eq!(q.sensor(QuotaKind::Produce, "a", 0).unwrap().bound(), 2.0);
        assert_eq!(q.sensor(QuotaKind::Produce, "z", 0).unwrap().bound(), 1.0);
        assert!(!q.enabled(QuotaKind::Fetch));
    }

    #[test]
    fn clients_share_a_user_quota_but_each_has_its_own_default_client_quota() {
        let q = quotas(&[(&[(USER, None)], PRODUCER_BYTE_RATE, 10.0)]);
        let a = q.sensor(QuotaKind::Produce, "a", 0).unwrap();
        let b = q.sensor(QuotaKind::Produce, "b", 0).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let q = quotas(&[(&[(CLIENT_ID, None)], PRODUCER_BYTE_RATE, 10.0)]);
        let a = q.sensor(QuotaKind::Produce, "a", 0).unwrap();
        let b = q.sensor(QuotaKind::Produce, "b", 0).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn throttle_brings_the_rate_back_to_the_quota() {
        let q = quotas(&[(&[(CLIENT_ID, None)], PRODUCER_BYTE_RATE, 1000.0)]);
        let s = q.sensor(QuotaKind::Produce, "a", 0).unwrap();
        // 10 whole windows of 1,000 B/s: 10,000 bytes at once are within the quota.
        assert_eq!(s.record(10_000.0, 0), 0);
        // 20,000 over a 10 s window is 2,000 B/s: (2000-1000)/1000 * 10 s = 10 s.
        assert_eq!(s.record(10_000.0, 0), 10_000);
        assert_eq!(s.throttle_now(0), 10_000);
        // Past every sample's worth, the throttle stops at all samples together (11 s).
        assert_eq!(s.record(100_000.0, 0), 11_000);
        // Once the samples expire, nothing is owed.
        assert_eq!(s.throttle_now(11_000), 0);
        assert_eq!(s.max_in_window(), 10_000.0);
    }

    #[test]
    fn a_request_time_throttle_is_at_most_one_window() {
        let q = quotas(&[(&[(CLIENT_ID, None)], REQUEST_PERCENTAGE, 1.0)]);
        let s = q.sensor(QuotaKind::Request, "a", 0).unwrap();
        assert_eq!(s.record(500.0, 0), 1000);
    }

    #[test]
    fn sensors_idle_past_every_sample_are_dropped() {
        let q = quotas(&[(&[(CLIENT_ID, None)], PRODUCER_BYTE_RATE, 1000.0)]);
        let s = q.sensor(QuotaKind::Produce, "a", 0).unwrap();
        s.record(50_000.0, 0);
        drop(s);
        let s = q.sensor(QuotaKind::Produce, "a", 30_000).unwrap();
        assert_eq!(s.throttle_now(30_000), 0);
        assert_eq!(q.state.lock().unwrap().by_tags.len(), 1);
    }

    #[test]
    fn alterations_are_checked_as_kafka_checks_them() {
        let e = |parts: &[(&str, Option<&str>)]| -> Vec<(String, Option<String>)> {
            parts
                .iter()
                .map(|(t, n)| (t.to_string(), n.map(str::to_string)))
                .collect()
        };
        let op = |k: &str, v: Option<f64>| (k.to_string(), v);
        let ok = validate_alteration(
            &e(&[(USER, Some("alice")), (CLIENT_ID, None)]),
            &[
                op(PRODUCER_BYTE_RATE, Some(1024.0)),
                op(REQUEST_PERCENTAGE, None),
            ],
        )
        .unwrap();
        assert_eq!(ok.0, entity(&[(USER, Some("alice")), (CLIENT_ID, None)]));
        assert_eq!(ok.1[REQUEST_PERCENTAGE], None);
        let err = |entity: &[(&str, Option<&str>)], ops: &[(String, Option<f64>)]| {
            validate_alteration(&e(entity), ops).unwrap_err()
        };
        let one = [op(PRODUCER_BYTE_RATE, Some(1.0))];
        assert_eq!(err(&[], &one), "Invalid empty client quota entity");
        assert_eq!(
            err(&[("group", Some("g"))], &one),
            "Unhandled client quota entity type: group"
        );
        assert_eq!(err(&[(USER, Some(""))], &one), "Empty user not supported");
        assert!(err(&[(IP, Some("10.0.0.1"))], &one).contains("ip quotas"));
        assert_eq!(
            err(
                &[(CLIENT_ID, Some("c"))],
                &[op("consumer_bytes", Some(1.0))]
            ),
            "Invalid configuration key consumer_bytes"
        );
        assert_eq!(
            err(
                &[(CLIENT_ID, Some("c"))],
                &[op(PRODUCER_BYTE_RATE, Some(1.5))]
            ),
            "Configuration producer_byte_rate must be a Long value"
        );
        assert!(err(
            &[(CLIENT_ID, Some("c"))],
            &[op(REQUEST_PERCENTAGE, Some(0.0))]
        )
        .contains("must be positive"));
        assert!(err(
            &[(CLIENT_ID, Some("c"))],
            &[
                op(PRODUCER_BYTE_RATE, Some(1.0)),
                op(PRODUCER_BYTE_RATE, None)
            ]
        )
        .starts_with("Duplicate quota key producer_byte_rate"));
    }

    #[test]
    fn describe_filters_as_kafka_does() {
        let mut map = QuotaTable::new();
        for e in [
            entity(&[(CLIENT_ID, Some("a"))]),
            entity(&[(CLIENT_ID, None)]),
            entity(&[(USER, Some("u")), (CLIENT_ID, Some("a"))]),
            entity(&[(USER, None)]),
        ] {
            map.insert(e, BTreeMap::from([(PRODUCER_BYTE_RATE.to_string(), 1.0)]));
        }
        let c = |ty: &str, m: i8, n: Option<&str>| (ty.to_string(), m, n.map(str::to_string));
        let found = |components: &[(String, i8, Option<String>)], strict| {
            describe(&map, components, strict)
                .unwrap()
                .into_iter()
                .map(|(e, _)| e.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            found(&[c(CLIENT_ID, MATCH_EXACT, Some("a"))], true),
            vec![entity(&[(CLIENT_ID, Some("a"))])]
        );
        assert_eq!(
            found(&[c(CLIENT_ID, MATCH_EXACT, Some("a"))], false).len(),
            2
        );
        assert_eq!(
            found(&[c(CLIENT_ID, MATCH_DEFAULT, None)], true),
            vec![entity(&[(CLIENT_ID, None)])]
        );
        assert_eq!(found(&[c(CLIENT_ID, MATCH_SPECIFIED, None)], true).len(), 2);
        assert_eq!(found(&[], false).len(), 4);
        assert!(found(&[], true).is_empty());
        let err = |components: &[(String, i8, Option<String>)]| {
            describe(&map, components, false).unwrap_err()
        };
        assert_eq!(
            err(&[c(CLIENT_ID, MATCH_EXACT, None)]).code,
            codes::INVALID_REQUEST
        );
        assert_eq!(
            err(&[c("group", MATCH_SPECIFIED, None)]).code,
            codes::UNSUPPORTED_VERSION
        );
        assert_eq!(
            err(&[c(IP, MATCH_SPECIFIED, None), c(USER, MATCH_SPECIFIED, None)]).code,
            codes::INVALID_REQUEST
        );
    }
}
