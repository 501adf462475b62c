//! Which replica a consumer reads from (KIP-392): Kafka's `replica.selector.class`, with the
//! leader-only selector (the default) and the rack-aware one that sends a consumer naming
//! its `client.rack` to a replica in that rack. Pure: the leader passes what it knows of its
//! replicas and gets the broker to name in `preferred_read_replica`.

/// Kafka's class names, the values `replica.selector.class` accepts.
pub const LEADER_SELECTOR: &str = "org.apache.kafka.common.replica.LeaderSelector";
pub const RACK_AWARE_SELECTOR: &str = "org.apache.kafka.common.replica.RackAwareReplicaSelector";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicaSelector {
    /// Consumers read from the leader (Kafka's behaviour without a selector).
    #[default]
    Leader,
    /// Consumers read from a replica in their own rack when one has their offset.
    RackAware,
}

impl ReplicaSelector {
    /// The selector a `replica.selector.class` value names (unset: the leader's).
    pub fn from_class(class: Option<&str>) -> Result<ReplicaSelector, String> {
        match class.map(str::trim) {
            None | Some("") | Some(LEADER_SELECTOR) => Ok(ReplicaSelector::Leader),
            Some(RACK_AWARE_SELECTOR) => Ok(ReplicaSelector::RackAware),
            Some(_) => Err(format!(
                "must be {RACK_AWARE_SELECTOR} or {LEADER_SELECTOR}; other selectors are Java classes Strom cannot load"
            )),
        }
    }
}

/// One replica as the leader sees it when choosing where a consumer reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView<'a> {
    pub id: i32,
    pub rack: Option<&'a str>,
    pub log_end_offset: i64,
    /// How long ago the replica last had everything the leader had (0 for the leader).
    pub since_caught_up_ms: i64,
}

/// The replica other than the leader a consumer in `client_rack` should read from, or
/// `None` to read from the leader. `followers` are the replicas that hold the fetch offset
/// and can be reached on the consumer's listener. As Kafka's RackAwareReplicaSelector: the
/// leader wins when it is in the consumer's rack; otherwise the in-rack replica with the
/// most data, then the most recently caught up, then the lowest id.
pub fn select(
    selector: ReplicaSelector,
    client_rack: &str,
    leader: &ReplicaView<'_>,
    followers: &[ReplicaView<'_>],
) -> Option<i32> {
    if selector != ReplicaSelector::RackAware || client_rack.is_empty() {
        return None;
    }
    if leader.rack == Some(client_rack) {
        return None;
    }
    followers
        .iter()
        .filter(|r| r.rack == Some(client_rack) && r.id != leader.id)
        .min_by_key(|r| (-r.log_end_offset, r.since_caught_up_ms, r.id))
        .map(|r| r.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: i32, rack: Option<&str>, leo: i64, since: i64) -> ReplicaView<'_> {
        ReplicaView {
            id,
            rack,
            log_end_offset: leo,
            since_caught_up_ms: since,
        }
    }

    #[test]
    fn the_rack_aware_selector_prefers_the_leader_then_the_fullest_replica_in_rack() {
        let leader = view(1, Some("a"), 100, 0);
        let followers = [
            view(2, Some("b"), 90, 10),
            view(3, Some("b"), 100, 50),
            view(4, Some("b"), 100, 20),
            view(5, Some("c"), 100, 0),
        ];
        let rack_aware = ReplicaSelector::RackAware;
        assert_eq!(select(rack_aware, "b", &leader, &followers), Some(4));
        assert_eq!(select(rack_aware, "c", &leader, &followers), Some(5));
        assert_eq!(
            select(rack_aware, "a", &leader, &followers),
            None,
            "leader in rack"
        );
        assert_eq!(
            select(rack_aware, "z", &leader, &followers),
            None,
            "no replica in rack"
        );
        assert_eq!(
            select(rack_aware, "", &leader, &followers),
            None,
            "no client.rack"
        );
        assert_eq!(
            select(ReplicaSelector::Leader, "b", &leader, &followers),
            None
        );
    }

    #[test]
    fn only_kafkas_two_selector_classes_are_accepted() {
        assert_eq!(
            ReplicaSelector::from_class(None),
            Ok(ReplicaSelector::Leader)
        );
        assert_eq!(
            ReplicaSelector::from_class(Some(RACK_AWARE_SELECTOR)),
            Ok(ReplicaSelector::RackAware)
        );
        assert_eq!(
            ReplicaSelector::from_class(Some(LEADER_SELECTOR)),
            Ok(ReplicaSelector::Leader)
        );
        assert!(ReplicaSelector::from_class(Some("com.example.Mine")).is_err());
    }
}
