//! Quorum math over a set of voters, as pure functions that know nothing about
//! messages (modelled on etcd's `quorum/majority.go` and `quorum/joint.go`).
//!
//! A [`MajorityConfig`] is one set of voters decided by simple majority; a
//! [`JointConfig`] is the pair a membership change passes through (Raft
//! dissertation §4.3): a decision needs a majority of the incoming voters *and*
//! a majority of the outgoing ones. The free functions [`committed_index`] and
//! [`vote_result`] are the same math over a slice of voter ids.
//!
//! None of these allocate for up to [`VOTERS_MAX`] voters, the most a
//! configuration may hold: acknowledgements are sorted in a stack array.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::config::VOTERS_MAX;
use crate::types::{Index, NodeId};

/// The outcome of an election so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// Neither a majority of grants nor of rejections yet.
    Pending,
    /// A majority granted.
    Won,
    /// A majority rejected: the election cannot be won.
    Lost,
}

/// The number of voters that form a majority of `voters` (at least one).
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The largest index that a majority of `voters` have acknowledged, where
/// `acked(id)` is what voter `id` acknowledged. With no voters, 0.
///
/// This is the k-th largest acknowledgement for k = majority: at least a
/// majority acknowledged it or more, and no larger index has that property.
pub fn committed_index(voters: &[NodeId], acked: impl Fn(NodeId) -> Index) -> Index {
    if voters.is_empty() {
        return 0;
    }
    majority_index(voters.len(), voters.iter().map(|&id| acked(id)))
}

/// Tallies votes: `vote(id)` is `Some(true)` for a grant, `Some(false)` for a
/// rejection, `None` if voter `id` has not answered. With no voters, `Won`
/// (as [`MajorityConfig::vote_result`]).
pub fn vote_result(voters: &[NodeId], vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
    tally(voters.len(), voters.iter().map(|&id| vote(id)))
}

/// The index that a majority of `count` acknowledgements reach: the k-th
/// largest for k = majority. `acks` yields exactly `count` indexes, `count > 0`.
///
/// The acknowledgements are sorted in a stack array when they fit (they always
/// do for a valid configuration), in a `Vec` otherwise; a small one for the
/// usual cluster sizes, so that a call does not clear 512 bytes it won't use.
pub(crate) fn majority_index(count: usize, acks: impl Iterator<Item = Index>) -> Index {
    assert!(count > 0, "majority_index of no voters");
    let mut small = [0; SMALL_VOTERS];
    let mut stack;
    let mut heap = Vec::new();
    let sorted: &mut [Index] = if count <= SMALL_VOTERS {
        &mut small[..count]
    } else if count <= VOTERS_MAX {
        stack = [0; VOTERS_MAX];
        &mut stack[..count]
    } else {
        heap.resize(count, 0);
        &mut heap
    };
    let mut filled = 0;
    for ack in acks {
        sorted[filled] = ack;
        filled += 1;
    }
    assert_eq!(filled, count, "expected {count} acknowledgements, got {filled}");
    // In place: slice sorting does not allocate.
    sorted.sort_unstable();
    // Ascending order: the k-th largest sits k places from the end.
    sorted[count - majority(count)]
}

/// Configurations up to this size sort their acknowledgements in a small
/// stack array.
const SMALL_VOTERS: usize = 9;

/// Tallies `count` answers. No voters at all is `Won`: nobody can object.
pub(crate) fn tally(count: usize, votes: impl Iterator<Item = Option<bool>>) -> VoteResult {
    let (mut granted, mut missing) = (0, 0);
    for vote in votes {
        match vote {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    if count == 0 || granted >= majority(count) {
        VoteResult::Won
    } else if granted + missing >= majority(count) {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// A set of voters decided by simple majority, kept sorted by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MajorityConfig {
    voters: BTreeSet<NodeId>,
}

impl MajorityConfig {
    /// An empty configuration (see [`MajorityConfig::committed_index`] for
    /// what an empty one decides).
    pub fn new() -> MajorityConfig {
        MajorityConfig::default()
    }

    /// Adds voter `id`; false if it was already there.
    pub fn insert(&mut self, id: NodeId) -> bool {
        self.voters.insert(id)
    }

    /// Removes voter `id`; false if it was not there.
    pub fn remove(&mut self, id: NodeId) -> bool {
        self.voters.remove(&id)
    }

    /// Whether `id` is one of the voters.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// The number of voters.
    pub fn len(&self) -> usize {
        self.voters.len()
    }

    /// Whether there are no voters.
    pub fn is_empty(&self) -> bool {
        self.voters.is_empty()
    }

    /// The voters in increasing id order.
    pub fn iter(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().copied()
    }

    /// The voters as a set.
    pub fn as_set(&self) -> &BTreeSet<NodeId> {
        &self.voters
    }

    /// The largest index that a majority of the voters have acknowledged;
    /// `acked(id)` is what voter `id` acknowledged, and `None` counts as 0.
    ///
    /// An empty configuration imposes no constraint and returns `Index::MAX`
    /// (as in etcd): a [`JointConfig`] whose outgoing half is empty is then
    /// decided by its incoming half alone. A caller with a single
    /// configuration that may be empty must not take `Index::MAX` as an index.
    pub fn committed_index(&self, acked: impl Fn(NodeId) -> Option<Index>) -> Index {
        if self.voters.is_empty() {
            return Index::MAX;
        }
        majority_index(self.voters.len(), self.iter().map(|id| acked(id).unwrap_or(0)))
    }

    /// Tallies votes: `vote(id)` is `Some(true)` for a grant, `Some(false)`
    /// for a rejection, `None` if voter `id` has not answered.
    ///
    /// An empty configuration is `Won`, for the same reason its committed
    /// index is unconstrained: it leaves a joint decision to the other half.
    pub fn vote_result(&self, vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        tally(self.voters.len(), self.iter().map(vote))
    }
}

impl FromIterator<NodeId> for MajorityConfig {
    fn from_iter<I: IntoIterator<Item = NodeId>>(ids: I) -> MajorityConfig {
        MajorityConfig { voters: ids.into_iter().collect() }
    }
}

/// The voters during a membership change: a decision needs a majority of
/// `incoming` and a majority of `outgoing`. Outside a change `outgoing` is
/// empty and the incoming majority decides alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JointConfig {
    /// The voters being moved to (the only voters outside a change).
    pub incoming: MajorityConfig,
    /// The voters being moved away from; empty outside a change.
    pub outgoing: MajorityConfig,
}

impl JointConfig {
    /// Whether `outgoing` is non-empty, i.e. a change is under way.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Whether `id` votes in either half.
    pub fn contains(&self, id: NodeId) -> bool {
        self.incoming.contains(id) || self.outgoing.contains(id)
    }

    /// Every voter of either half, once each, in increasing id order.
    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.incoming.as_set().union(self.outgoing.as_set()).copied()
    }

    /// The largest index that a majority of each half has acknowledged: the
    /// smaller of the two halves' [`MajorityConfig::committed_index`].
    pub fn committed_index(&self, acked: impl Fn(NodeId) -> Option<Index>) -> Index {
        self.incoming.committed_index(&acked).min(self.outgoing.committed_index(&acked))
    }

    /// `Won` only if both halves won, `Lost` if either lost, else `Pending`.
    pub fn vote_result(&self, vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        match (self.incoming.vote_result(&vote), self.outgoing.vote_result(&vote)) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn naive_committed(acks: &[Index]) -> Index {
        // The largest candidate index that at least a majority acknowledged.
        let need = majority(acks.len());
        let mut best = 0;
        for &candidate in acks {
            if acks.iter().filter(|&&a| a >= candidate).count() >= need {
                best = best.max(candidate);
            }
        }
        best
    }

    /// Whether at least a majority of `voters` acknowledged `candidate` or
    /// more (vacuously true of no voters); a missing acknowledgement is 0.
    fn naive_reaches(voters: &BTreeSet<NodeId>, acks: &BTreeMap<NodeId, Index>, candidate: Index) -> bool {
        let reached = voters.iter().filter(|id| acks.get(id).copied().unwrap_or(0) >= candidate).count();
        voters.is_empty() || 2 * reached > voters.len()
    }

    /// The largest index that a majority of every one of `halves` reached, by
    /// trying every candidate (`Index::MAX` when every half is empty).
    fn naive_joint_committed(halves: &[&BTreeSet<NodeId>], acks: &BTreeMap<NodeId, Index>) -> Index {
        let candidates = acks.values().copied().chain([0, Index::MAX]);
        candidates.filter(|&c| halves.iter().all(|half| naive_reaches(half, acks, c))).max().unwrap()
    }

    /// The election outcome of one half by counting: won with more than half
    /// the grants, lost once the grants plus the silent cannot be more than half.
    fn naive_vote(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        let n = voters.len();
        let yes = voters.iter().filter(|id| votes.get(id) == Some(&true)).count();
        let no = voters.iter().filter(|id| votes.get(id) == Some(&false)).count();
        if 2 * yes > n || n == 0 {
            VoteResult::Won
        } else if 2 * (n - no) <= n {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }

    /// A set of up to `max` distinct voter ids out of 1..=12.
    fn voter_set(max: usize) -> impl Strategy<Value = BTreeSet<NodeId>> {
        proptest::collection::btree_set(1u64..=12, 0..=max)
    }

    /// Acknowledgements from some of the ids 1..=12 (the others are silent).
    fn acks() -> impl Strategy<Value = BTreeMap<NodeId, Index>> {
        proptest::collection::btree_map(1u64..=12, 0u64..50, 0..=12)
    }

    fn votes() -> impl Strategy<Value = BTreeMap<NodeId, bool>> {
        proptest::collection::btree_map(1u64..=12, any::<bool>(), 0..=12)
    }

    #[test]
    fn majority_of_small_clusters() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(2), 2);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
    }

    #[test]
    fn committed_index_is_the_median_of_three() {
        let acks = [(1, 10), (2, 5), (3, 7)];
        let voters: Vec<NodeId> = acks.iter().map(|a| a.0).collect();
        let got = committed_index(&voters, |id| acks.iter().find(|a| a.0 == id).unwrap().1);
        assert_eq!(got, 7);
        let config: MajorityConfig = voters.iter().copied().collect();
        let got = config.committed_index(|id| acks.iter().find(|a| a.0 == id).map(|a| a.1));
        assert_eq!(got, 7);
    }

    #[test]
    fn a_silent_voter_counts_as_acknowledging_nothing() {
        let config: MajorityConfig = [1, 2, 3].into_iter().collect();
        assert_eq!(config.committed_index(|id| (id == 1).then_some(9)), 0);
        assert_eq!(config.committed_index(|id| (id != 3).then_some(9)), 9);
    }

    #[test]
    fn an_empty_configuration_constrains_nothing() {
        let empty = MajorityConfig::new();
        assert_eq!(empty.committed_index(|_| Some(3)), Index::MAX);
        assert_eq!(empty.vote_result(|_| Some(false)), VoteResult::Won);
        assert_eq!(committed_index(&[], |_| 3), 0);
        assert_eq!(vote_result(&[], |_| Some(false)), VoteResult::Won);
        let joint = JointConfig::default();
        assert_eq!(joint.committed_index(|_| Some(3)), Index::MAX);
        assert_eq!(joint.vote_result(|_| None), VoteResult::Won);
    }

    #[test]
    fn configurations_beyond_the_stack_array_are_counted_too() {
        // 70 voters, acknowledging 1..=70: a majority (36) reached 35.
        let voters: Vec<NodeId> = (1..=70).collect();
        assert_eq!(committed_index(&voters, |id| id), 35);
        let config: MajorityConfig = voters.iter().copied().collect();
        assert_eq!(config.committed_index(Some), 35);
    }

    #[test]
    fn election_is_lost_once_a_majority_rejects() {
        let voters = [1, 2, 3, 4, 5];
        let result = vote_result(&voters, |id| match id {
            1 => Some(true),
            2..=4 => Some(false),
            _ => None,
        });
        assert_eq!(result, VoteResult::Lost);
        let result = vote_result(&voters, |id| match id {
            1 => Some(true),
            2 | 3 => Some(false),
            _ => None,
        });
        assert_eq!(result, VoteResult::Pending);
    }

    #[test]
    fn a_joint_election_needs_both_halves() {
        let joint = JointConfig {
            incoming: [1, 2, 3].into_iter().collect(),
            outgoing: [3, 4, 5].into_iter().collect(),
        };
        // 1, 2 and 3 grant: the incoming half won, the outgoing is pending.
        assert_eq!(joint.vote_result(|id| (id <= 3).then_some(true)), VoteResult::Pending);
        // 4 and 5 reject as well: the outgoing half is lost.
        assert_eq!(joint.vote_result(|id| Some(id <= 3)), VoteResult::Lost);
        assert_eq!(joint.vote_result(|id| Some(id <= 4)), VoteResult::Won);
    }

    proptest! {
        #[test]
        fn committed_index_matches_naive_version(acks in proptest::collection::vec(0u64..50, 1..=9)) {
            let voters: Vec<NodeId> = (1..=acks.len() as u64).collect();
            let got = committed_index(&voters, |id| acks[(id - 1) as usize]);
            prop_assert_eq!(got, naive_committed(&acks));
        }

        #[test]
        fn committed_index_beyond_the_stack_array_matches_naive_version(
            acks in proptest::collection::vec(0u64..50, VOTERS_MAX - 2..VOTERS_MAX + 6)
        ) {
            let voters: Vec<NodeId> = (1..=acks.len() as u64).collect();
            let got = committed_index(&voters, |id| acks[(id - 1) as usize]);
            prop_assert_eq!(got, naive_committed(&acks));
        }

        #[test]
        fn vote_result_matches_counting(votes in proptest::collection::vec(proptest::option::of(any::<bool>()), 1..9)) {
            let voters: Vec<NodeId> = (1..=votes.len() as u64).collect();
            let got = vote_result(&voters, |id| votes[(id - 1) as usize]);
            let n = votes.len();
            let yes = votes.iter().filter(|v| **v == Some(true)).count();
            let no = votes.iter().filter(|v| **v == Some(false)).count();
            let expected = if 2 * yes > n { VoteResult::Won } else if 2 * (n - no) <= n { VoteResult::Lost } else { VoteResult::Pending };
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn majority_committed_index_is_the_largest_a_majority_reached(voters in voter_set(9), acks in acks()) {
            let config: MajorityConfig = voters.iter().copied().collect();
            let got = config.committed_index(|id| acks.get(&id).copied());
            prop_assert_eq!(got, naive_joint_committed(&[&voters], &acks));
        }

        #[test]
        fn majority_vote_result_matches_counting(voters in voter_set(9), votes in votes()) {
            let config: MajorityConfig = voters.iter().copied().collect();
            let got = config.vote_result(|id| votes.get(&id).copied());
            prop_assert_eq!(got, naive_vote(&voters, &votes));
        }

        #[test]
        fn joint_committed_index_is_what_both_majorities_reached(
            incoming in voter_set(9), outgoing in voter_set(9), acks in acks()
        ) {
            let joint = JointConfig {
                incoming: incoming.iter().copied().collect(),
                outgoing: outgoing.iter().copied().collect(),
            };
            let acked = |id| acks.get(&id).copied();
            let got = joint.committed_index(acked);
            let halves = joint.incoming.committed_index(acked).min(joint.outgoing.committed_index(acked));
            prop_assert_eq!(got, halves);
            prop_assert_eq!(got, naive_joint_committed(&[&incoming, &outgoing], &acks));
        }

        #[test]
        fn joint_vote_result_needs_both_majorities(
            incoming in voter_set(9), outgoing in voter_set(9), votes in votes()
        ) {
            let joint = JointConfig {
                incoming: incoming.iter().copied().collect(),
                outgoing: outgoing.iter().copied().collect(),
            };
            let got = joint.vote_result(|id| votes.get(&id).copied());
            let expected = match (naive_vote(&incoming, &votes), naive_vote(&outgoing, &votes)) {
                (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
                (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
                _ => VoteResult::Pending,
            };
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn a_joint_config_with_no_outgoing_half_is_its_incoming_majority(
            incoming in voter_set(9), acks in acks(), votes in votes()
        ) {
            let joint = JointConfig { incoming: incoming.iter().copied().collect(), outgoing: MajorityConfig::new() };
            let acked = |id| acks.get(&id).copied();
            let vote = |id| votes.get(&id).copied();
            prop_assert_eq!(joint.committed_index(acked), joint.incoming.committed_index(acked));
            prop_assert_eq!(joint.vote_result(vote), joint.incoming.vote_result(vote));
        }
    }
}
