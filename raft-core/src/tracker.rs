//! The progress tracker (after etcd's `tracker/`): the membership in force
//! and one [`Progress`] per member, the leader's own included.
//!
//! Every quorum question the node asks — what a majority has made durable
//! (commit), which read round a majority has confirmed (ReadIndex), whether
//! a majority was heard from lately (check-quorum), how an election stands —
//! is answered here by the joint quorum of [`crate::quorum`], with the same
//! code for every member. The leader takes part as one member among the
//! others: it acknowledges its own log once it is durable, its own read
//! rounds when it starts them, and counts itself active; nothing here asks
//! which member is the leader.

use std::collections::BTreeMap;

use crate::membership::Membership;
use crate::progress::Progress;
use crate::quorum::VoteResult;
use crate::types::{Index, NodeId};

/// The membership and every member's progress.
#[derive(Clone, Debug)]
pub(crate) struct ProgressTracker {
    membership: Membership,
    /// One entry per member (voters, outgoing voters, learners), kept in
    /// step with `membership`; only a leader's values mean anything.
    progress: BTreeMap<NodeId, Progress>,
    inflight_max: usize,
    inflight_bytes_max: u64,
}

impl ProgressTracker {
    /// A tracker for `membership`, whose progress starts as a new leader's
    /// would at `next_index`; appends in flight are bounded as given.
    pub(crate) fn new(
        membership: Membership,
        next_index: Index,
        inflight_max: usize,
        inflight_bytes_max: u64,
    ) -> ProgressTracker {
        let mut tracker =
            ProgressTracker { membership, progress: BTreeMap::new(), inflight_max, inflight_bytes_max };
        tracker.reset(next_index);
        tracker
    }

    /// Forgets every member's progress (a new leader knows nothing of its
    /// followers): each probes from `next_index`.
    pub(crate) fn reset(&mut self, next_index: Index) {
        let (inflight_max, bytes_max) = (self.inflight_max, self.inflight_bytes_max);
        self.progress = self
            .membership
            .member_ids()
            .map(|id| (id, Progress::new(next_index, inflight_max, bytes_max)))
            .collect();
    }

    /// Whether `id` votes (in the incoming or the outgoing configuration).
    pub(crate) fn is_voter(&self, id: NodeId) -> bool {
        self.membership.is_voter(id)
    }

    /// Whether `id` is a member at all (a voter or a learner).
    pub(crate) fn is_member(&self, id: NodeId) -> bool {
        self.membership.is_member(id)
    }

    /// Every member's id, in order.
    pub(crate) fn member_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.progress.keys().copied()
    }

    /// The voters' ids (both halves of a joint configuration), in order.
    pub(crate) fn voter_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.progress.keys().copied().filter(|&id| self.membership.is_voter(id))
    }

    /// A member's progress.
    pub(crate) fn get(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }

    /// A member's progress, to update.
    pub(crate) fn get_mut(&mut self, id: NodeId) -> Option<&mut Progress> {
        self.progress.get_mut(&id)
    }

    /// Every member's progress.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (NodeId, &Progress)> + '_ {
        self.progress.iter().map(|(&id, p)| (id, p))
    }

    /// Every member's progress, to update.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (NodeId, &mut Progress)> + '_ {
        self.progress.iter_mut().map(|(&id, p)| (id, p))
    }

    /// The highest index that a quorum of voters (of both halves, when
    /// joint) has acknowledged as durable. 0 with no voters.
    pub(crate) fn committed_index(&self) -> Index {
        if self.membership.voters().incoming.is_empty() {
            return 0;
        }
        self.membership.voters().committed_index(|id| self.progress.get(&id).map(|p| p.match_index))
    }

    /// The highest ReadIndex round that a quorum of voters has confirmed.
    pub(crate) fn confirmed_read_round(&self) -> u64 {
        if self.membership.voters().incoming.is_empty() {
            return 0;
        }
        self.membership.voters().committed_index(|id| self.progress.get(&id).map(|p| p.read_round))
    }

    /// Whether a quorum of voters was heard from since the flags were last
    /// cleared (check-quorum).
    pub(crate) fn quorum_active(&self) -> bool {
        let voters = self.membership.voters();
        !voters.incoming.is_empty()
            && voters.vote_result(|id| self.progress.get(&id).map(|p| p.recently_active)) == VoteResult::Won
    }

    /// How an election stands, given each voter's answer so far (`true`:
    /// granted; absent: not heard).
    pub(crate) fn tally(&self, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        if self.membership.voters().incoming.is_empty() {
            return VoteResult::Pending;
        }
        self.membership.voters().vote_result(|id| votes.get(&id).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(voters: &[NodeId]) -> ProgressTracker {
        let membership = Membership::new_voters(voters.iter().map(|&id| (id, Vec::new()))).unwrap();
        ProgressTracker::new(membership, 1, 4, 0)
    }

    #[test]
    fn every_member_has_progress_including_the_leader() {
        let t = tracker(&[1, 2, 3]);
        assert_eq!(t.member_ids().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(t.get(1).is_some(), "no special place for any member");
    }

    #[test]
    fn commit_is_what_a_majority_acknowledged_the_leader_counted_like_anyone() {
        let mut t = tracker(&[1, 2, 3]);
        assert_eq!(t.committed_index(), 0);
        t.get_mut(1).unwrap().acknowledge(7);
        assert_eq!(t.committed_index(), 0, "one of three is no majority");
        t.get_mut(3).unwrap().acknowledge(5);
        assert_eq!(t.committed_index(), 5);
    }

    #[test]
    fn one_voter_is_its_own_quorum() {
        let mut t = tracker(&[4]);
        t.get_mut(4).unwrap().acknowledge(9);
        assert_eq!(t.committed_index(), 9);
        t.get_mut(4).unwrap().read_round = 3;
        assert_eq!(t.confirmed_read_round(), 3);
        t.get_mut(4).unwrap().recently_active = true;
        assert!(t.quorum_active());
        let votes = BTreeMap::from([(4, true)]);
        assert_eq!(t.tally(&votes), VoteResult::Won);
    }

    #[test]
    fn an_empty_membership_never_commits_nor_wins() {
        let t = ProgressTracker::new(Membership::default(), 1, 4, 0);
        assert_eq!(t.committed_index(), 0);
        assert!(!t.quorum_active());
        assert_eq!(t.tally(&BTreeMap::new()), VoteResult::Pending);
    }

    #[test]
    fn quorum_activity_needs_a_majority_of_flags() {
        let mut t = tracker(&[1, 2, 3]);
        t.get_mut(1).unwrap().recently_active = true;
        assert!(!t.quorum_active());
        t.get_mut(2).unwrap().recently_active = true;
        assert!(t.quorum_active());
    }
}
