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
use crate::quorum::{self, VoteResult};
use crate::types::{Index, NodeId};

/// The membership and every member's progress.
///
/// Progress sits in a vector sorted by id, with the positions of each
/// half's voters beside it: every quorum question is a pass over a few
/// contiguous entries, with no tree walk and no allocation (this runs once
/// per acknowledgement on the leader's hot path).
#[derive(Clone, Debug)]
pub(crate) struct ProgressTracker {
    membership: Membership,
    /// One entry per member (voters, outgoing voters, learners) and per
    /// departing member (removed by a configuration entry the leader still
    /// replicates; see [`ProgressTracker::set_membership`]), sorted by id;
    /// only a leader's values mean anything.
    progress: Vec<(NodeId, Progress)>,
    /// Positions in `progress` of the incoming voters...
    incoming: Vec<usize>,
    /// ...and of the outgoing ones (empty unless joint).
    outgoing: Vec<usize>,
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
        let mut tracker = ProgressTracker {
            membership,
            progress: Vec::new(),
            incoming: Vec::new(),
            outgoing: Vec::new(),
            inflight_max,
            inflight_bytes_max,
        };
        tracker.reset(next_index);
        tracker
    }

    /// Forgets every member's progress (a new leader knows nothing of its
    /// followers): each probes from `next_index`.
    pub(crate) fn reset(&mut self, next_index: Index) {
        let (inflight_max, bytes_max) = (self.inflight_max, self.inflight_bytes_max);
        // `member_ids` is sorted: so is `progress`.
        self.progress = self
            .membership
            .member_ids()
            .map(|id| (id, Progress::new(next_index, inflight_max, bytes_max)))
            .collect();
        self.index_voters();
    }

    /// The membership in force.
    pub(crate) fn membership(&self) -> &Membership {
        &self.membership
    }

    fn position(&self, id: NodeId) -> Option<usize> {
        self.progress.binary_search_by_key(&id, |(m, _)| *m).ok()
    }

    /// Replaces the membership. Members that stay keep their progress; new
    /// ones probe from `next_index`. Members that left keep theirs too, as
    /// *departing*: they count in no quorum, but the leader goes on
    /// replicating to them until [`ProgressTracker::drop_departed`], so that
    /// a removed node receives the entry that removes it (without it, it
    /// never learned, and campaigned for ever).
    pub(crate) fn set_membership(&mut self, membership: Membership, next_index: Index) {
        let (inflight_max, bytes_max) = (self.inflight_max, self.inflight_bytes_max);
        let mut progress: Vec<(NodeId, Progress)> = std::mem::take(&mut self.progress);
        for id in membership.member_ids() {
            if let Err(at) = progress.binary_search_by_key(&id, |(m, _)| *m) {
                progress.insert(at, (id, Progress::new(next_index, inflight_max, bytes_max)));
            }
        }
        self.progress = progress;
        self.membership = membership;
        self.index_voters();
    }

    /// Forgets the departing members (the change that removed them is
    /// committed). Returns whether there were any.
    pub(crate) fn drop_departed(&mut self) -> bool {
        let before = self.progress.len();
        let membership = &self.membership;
        self.progress.retain(|(id, _)| membership.is_member(*id));
        let dropped = self.progress.len() != before;
        if dropped {
            self.index_voters();
        }
        dropped
    }

    /// Recomputes where each half's voters sit in `progress`.
    fn index_voters(&mut self) {
        let position = |id: NodeId| self.progress.binary_search_by_key(&id, |(m, _)| *m).expect("a member");
        let voters = self.membership.voters();
        self.incoming = voters.incoming.iter().map(position).collect();
        self.outgoing = voters.outgoing.iter().map(position).collect();
    }

    /// Whether `id` votes (in the incoming or the outgoing configuration).
    pub(crate) fn is_voter(&self, id: NodeId) -> bool {
        self.membership.is_voter(id)
    }

    /// Whether `id` is a member at all (a voter or a learner), or a
    /// departing one the leader still replicates to.
    pub(crate) fn is_member(&self, id: NodeId) -> bool {
        self.position(id).is_some()
    }

    /// Every member's id, in order.
    pub(crate) fn member_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.progress.iter().map(|(id, _)| *id)
    }

    /// A member's progress.
    pub(crate) fn get(&self, id: NodeId) -> Option<&Progress> {
        self.position(id).map(|i| &self.progress[i].1)
    }

    /// A member's progress, to update.
    pub(crate) fn get_mut(&mut self, id: NodeId) -> Option<&mut Progress> {
        self.position(id).map(|i| &mut self.progress[i].1)
    }

    /// Every member's progress.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (NodeId, &Progress)> + '_ {
        self.progress.iter().map(|(id, p)| (*id, p))
    }

    /// Every member's progress, to update.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (NodeId, &mut Progress)> + '_ {
        self.progress.iter_mut().map(|(id, p)| (*id, p))
    }

    /// The quorum value of `value` over the voters: the largest that a
    /// majority of each half reaches (an empty outgoing half constrains
    /// nothing). 0 with no voters.
    fn quorum_value(&self, value: impl Fn(&Progress) -> u64) -> u64 {
        if self.incoming.is_empty() {
            return 0;
        }
        let half = |positions: &[usize]| {
            quorum::majority_index(positions.len(), positions.iter().map(|&i| value(&self.progress[i].1)))
        };
        let incoming = half(&self.incoming);
        if self.outgoing.is_empty() {
            incoming
        } else {
            incoming.min(half(&self.outgoing))
        }
    }

    /// The highest index that a quorum of voters (of both halves, when
    /// joint) has acknowledged as durable. 0 with no voters.
    pub(crate) fn committed_index(&self) -> Index {
        self.quorum_value(|p| p.match_index)
    }

    /// The highest ReadIndex round that a quorum of voters has confirmed.
    pub(crate) fn confirmed_read_round(&self) -> u64 {
        self.quorum_value(|p| p.read_round)
    }

    /// How each half's answers stand, combined as a joint vote.
    fn quorum_result(&self, answer: impl Fn(usize) -> Option<bool>) -> VoteResult {
        if self.incoming.is_empty() {
            return VoteResult::Pending;
        }
        let half = |positions: &[usize]| quorum::tally(positions.len(), positions.iter().map(|&i| answer(i)));
        match (half(&self.incoming), half(&self.outgoing)) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    /// Whether a quorum of voters was heard from since the flags were last
    /// cleared (check-quorum).
    pub(crate) fn quorum_active(&self) -> bool {
        self.quorum_result(|i| Some(self.progress[i].1.recently_active)) == VoteResult::Won
    }

    /// How an election stands, given each voter's answer so far (`true`:
    /// granted; absent: not heard).
    pub(crate) fn tally(&self, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        self.quorum_result(|i| votes.get(&self.progress[i].0).copied())
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
    fn joint_results_need_both_halves() {
        let m = Membership::new_voters([1, 2, 3].map(|id| (id, Vec::new()))).unwrap();
        let change = crate::MembershipChange {
            ops: vec![
                crate::ChangeOp::AddVoter { id: 4, context: Vec::new() },
                crate::ChangeOp::AddVoter { id: 5, context: Vec::new() },
                crate::ChangeOp::Remove { id: 1 },
                crate::ChangeOp::Remove { id: 2 },
            ],
        };
        let joint = m.apply(&change).unwrap();
        assert!(joint.is_joint());
        let mut t = ProgressTracker::new(joint, 1, 4, 0);
        // Incoming {3, 4, 5}, outgoing {1, 2, 3}.
        for id in [3, 4, 5] {
            t.get_mut(id).unwrap().acknowledge(9);
        }
        assert_eq!(t.committed_index(), 0, "the outgoing half has only 3 at 9: no majority of {{1, 2, 3}}");
        t.get_mut(1).unwrap().acknowledge(6);
        assert_eq!(t.committed_index(), 6, "both halves have a majority at 6");
        let votes = BTreeMap::from([(3, true), (4, true), (5, true)]);
        assert_eq!(t.tally(&votes), VoteResult::Pending, "the outgoing half has not decided");
        let votes = BTreeMap::from([(3, true), (4, true), (1, false), (2, false)]);
        assert_eq!(t.tally(&votes), VoteResult::Lost, "the outgoing half rejected");
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
