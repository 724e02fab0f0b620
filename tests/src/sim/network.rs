//! The simulated network: every message gets a random delay (so messages are
//! reordered), may be dropped or duplicated, and links can be cut in any
//! shape (isolation, majority/minority, a bridge node, single links, one-way).

use std::collections::{BTreeMap, BTreeSet};

use raft_core::{Message, NodeId};

use crate::sim::config::FaultConfig;
use crate::sim::rng::SimRng;

/// Message counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages handed to the network.
    pub sent: u64,
    /// Messages delivered to a live node.
    pub delivered: u64,
    /// Messages lost: random drops, cut links, crashed endpoints.
    pub dropped: u64,
    /// Extra copies injected.
    pub duplicated: u64,
}

/// Messages in flight and the state of every link.
#[derive(Clone, Debug, Default)]
pub struct Network {
    /// In flight, keyed by (delivery step, sequence number): iteration order is
    /// delivery order, and ties keep sending order.
    inflight: BTreeMap<(u64, u64), Message>,
    next_seq: u64,
    /// Directed links that lose everything: (from, to).
    blocked: BTreeSet<(NodeId, NodeId)>,
    stats: NetStats,
}

impl Network {
    /// A fully connected network with nothing in flight.
    pub fn new() -> Network {
        Network::default()
    }

    /// Message counts so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Number of messages in flight.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Whether messages from `from` to `to` are lost.
    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Whether any link is cut.
    pub fn is_partitioned(&self) -> bool {
        !self.blocked.is_empty()
    }

    /// Sends `msg` at step `now`: it is dropped with `faults.drop_rate` (or if
    /// its link is cut), delivered after `1..=max_delay` steps (occasionally
    /// much later), and duplicated with `faults.dup_rate`.
    pub fn send(&mut self, msg: Message, now: u64, rng: &mut SimRng, faults: &FaultConfig) {
        self.stats.sent += 1;
        if self.is_blocked(msg.from, msg.to) || rng.chance(faults.drop_rate) {
            self.stats.dropped += 1;
            return;
        }
        if rng.chance(faults.dup_rate) {
            self.stats.duplicated += 1;
            let delay = Self::delay(rng, faults);
            self.enqueue(msg.clone(), now + delay);
        }
        let delay = Self::delay(rng, faults);
        self.enqueue(msg, now + delay);
    }

    fn delay(rng: &mut SimRng, faults: &FaultConfig) -> u64 {
        let max = faults.max_delay.max(1);
        if rng.chance(faults.long_delay_rate) {
            rng.range(max, 10 * max)
        } else {
            rng.range(1, max)
        }
    }

    fn enqueue(&mut self, msg: Message, due: u64) {
        self.inflight.insert((due, self.next_seq), msg);
        self.next_seq += 1;
    }

    /// Removes and returns the messages due by `now`, in delivery order;
    /// messages whose link has been cut meanwhile are lost.
    pub fn take_due(&mut self, now: u64) -> Vec<Message> {
        let later = self.inflight.split_off(&(now + 1, 0));
        let due = std::mem::replace(&mut self.inflight, later);
        let mut out = Vec::with_capacity(due.len());
        for msg in due.into_values() {
            if self.is_blocked(msg.from, msg.to) {
                self.stats.dropped += 1;
            } else {
                out.push(msg);
            }
        }
        out
    }

    /// Counts a due message that found its recipient crashed.
    pub fn count_undeliverable(&mut self) {
        self.stats.dropped += 1;
    }

    /// Counts a delivered message.
    pub fn count_delivered(&mut self) {
        self.stats.delivered += 1;
    }

    /// Drops every message in flight to or from `node` (its connections reset).
    pub fn drop_involving(&mut self, node: NodeId) {
        let before = self.inflight.len();
        self.inflight.retain(|_, m| m.from != node && m.to != node);
        self.stats.dropped += (before - self.inflight.len()) as u64;
    }

    /// Reconnects every link.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.blocked.insert((a, b));
        self.blocked.insert((b, a));
    }

    /// Cuts only the direction `from -> to`.
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    /// Splits `all` into `groups`: nodes talk only within their group; nodes
    /// in no group are isolated. Replaces any earlier partition.
    pub fn partition(&mut self, all: &[NodeId], groups: &[Vec<NodeId>]) {
        self.heal();
        let group_of = |n: NodeId| groups.iter().position(|g| g.contains(&n));
        for &a in all {
            for &b in all {
                if a != b && (group_of(a).is_none() || group_of(a) != group_of(b)) {
                    self.blocked.insert((a, b));
                }
            }
        }
    }

    /// Two halves that cannot talk to each other; every node in neither half
    /// is a bridge that talks to both. Replaces any earlier partition.
    pub fn bridge(&mut self, left: &[NodeId], right: &[NodeId]) {
        self.heal();
        for &a in left {
            for &b in right {
                self.cut(a, b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::MessageBody;

    fn msg(from: NodeId, to: NodeId, round: u64) -> Message {
        Message { from, to, term: 1, body: MessageBody::HeartbeatResponse { read_round: round } }
    }

    fn faults(drop_rate: f64, dup_rate: f64, max_delay: u64) -> FaultConfig {
        FaultConfig { drop_rate, dup_rate, max_delay, long_delay_rate: 0.0, ..FaultConfig::none() }
    }

    #[test]
    fn messages_arrive_within_the_delay_bound_and_get_reordered() {
        let mut net = Network::new();
        let mut rng = SimRng::new(1);
        let f = faults(0.0, 0.0, 10);
        for round in 0..100 {
            net.send(msg(1, 2, round), 0, &mut rng, &f);
        }
        assert!(net.take_due(0).is_empty(), "nothing arrives instantly");
        let got: Vec<u64> = net
            .take_due(10)
            .into_iter()
            .map(|m| match m.body {
                MessageBody::HeartbeatResponse { read_round } => read_round,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(got.len(), 100);
        assert!(got.windows(2).any(|w| w[0] > w[1]), "no reordering at all");
        assert_eq!(net.inflight_len(), 0);
    }

    #[test]
    fn drops_and_duplicates_follow_their_rates() {
        let mut net = Network::new();
        let mut rng = SimRng::new(2);
        let f = faults(0.5, 0.5, 1);
        for round in 0..1_000 {
            net.send(msg(1, 2, round), 0, &mut rng, &f);
        }
        let got = net.take_due(1).len();
        let stats = net.stats();
        assert!((400..600).contains(&stats.dropped), "{stats:?}");
        assert!((150..350).contains(&stats.duplicated), "{stats:?}");
        assert_eq!(got as u64, 1_000 - stats.dropped + stats.duplicated);
    }

    #[test]
    fn a_partition_blocks_exactly_the_links_between_groups() {
        let mut net = Network::new();
        let all = [1, 2, 3, 4, 5];
        net.partition(&all, &[vec![1, 2], vec![3, 4]]);
        assert!(!net.is_blocked(1, 2) && !net.is_blocked(4, 3));
        assert!(net.is_blocked(1, 3) && net.is_blocked(3, 1));
        assert!(net.is_blocked(5, 1) && net.is_blocked(1, 5), "ungrouped is isolated");
        net.heal();
        assert!(!net.is_partitioned());
    }

    #[test]
    fn a_bridge_node_talks_to_both_halves_that_cannot_talk_to_each_other() {
        let mut net = Network::new();
        net.bridge(&[1, 2], &[4, 5]);
        assert!(net.is_blocked(1, 4) && net.is_blocked(5, 2));
        for n in [1, 2, 4, 5] {
            assert!(!net.is_blocked(3, n) && !net.is_blocked(n, 3));
        }
        assert!(!net.is_blocked(1, 2) && !net.is_blocked(4, 5));
    }

    #[test]
    fn messages_in_flight_on_a_link_cut_later_are_lost() {
        let mut net = Network::new();
        let mut rng = SimRng::new(3);
        net.send(msg(1, 2, 0), 0, &mut rng, &faults(0.0, 0.0, 5));
        net.cut_one_way(1, 2);
        assert!(net.take_due(100).is_empty());
        assert!(!net.is_blocked(2, 1), "one-way cut");
        assert_eq!(net.stats().dropped, 1);
    }
}
