//! Who belongs to the cluster, and the pure function that changes it
//! (modelled on etcd's `tracker.Config` and `confchange.Changer`).
//!
//! A [`Membership`] holds the voters as a [`JointConfig`], the learners (who
//! receive the log but do not vote), and an opaque context per member for the
//! driver (its address, say). [`Membership::apply`] computes the membership a
//! [`MembershipChange`] leads to, without touching `self`:
//!
//! - a change that alters the voters by at most one id is *simple*: it takes
//!   effect at once, since any majority of the old voters overlaps any
//!   majority of the new (Raft dissertation §4.1);
//! - any larger change *enters a joint configuration* (§4.3): the old voters
//!   become the outgoing half, the new ones the incoming half, and every
//!   decision needs a majority of both until [`Membership::leave_joint`].
//!
//! Only a non-joint membership can be changed, so a membership is never more
//! than one step away from its last non-joint one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::VOTERS_MAX;
use crate::quorum::{JointConfig, MajorityConfig};
use crate::types::NodeId;

/// The members of the cluster and their roles.
///
/// Invariants (see [`Membership::check_invariants`]): learners vote in
/// neither half; `learners_next` are outgoing voters only, empty outside a
/// joint configuration; `members` has an entry for exactly the voters of
/// either half, the learners and the `learners_next`; there are incoming
/// voters unless the membership is the empty one, [`Membership::default`],
/// which a node has before it is bootstrapped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    /// The voters: `incoming`, and `outgoing` while a change is joint.
    voters: JointConfig,
    /// Members that replicate the log but do not vote.
    learners: BTreeSet<NodeId>,
    /// Outgoing voters that were demoted by the change that entered the joint
    /// configuration: they become learners when it is left (they cannot be
    /// learners before, since they still vote in the outgoing half).
    learners_next: BTreeSet<NodeId>,
    /// The joint configuration is to be left as soon as the entry that
    /// entered it commits, without waiting for an explicit request.
    auto_leave: bool,
    /// The driver's opaque context of every member (etcd's ConfChange
    /// context), such as its address.
    members: BTreeMap<NodeId, Vec<u8>>,
}

/// A set of operations applied together by [`Membership::apply`]. Each id
/// appears at most once, so the order of the operations does not matter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MembershipChange {
    /// The operations.
    pub ops: Vec<ChangeOp>,
}

/// One operation of a [`MembershipChange`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeOp {
    /// Adds a new member as a voter.
    AddVoter {
        /// The new voter.
        id: NodeId,
        /// Its context for the driver.
        #[serde(with = "serde_bytes")]
        context: Vec<u8>,
    },
    /// Adds a new member as a learner, or demotes a voter to learner (its
    /// context is then replaced by `context`).
    AddLearner {
        /// The new learner.
        id: NodeId,
        /// Its context for the driver.
        #[serde(with = "serde_bytes")]
        context: Vec<u8>,
    },
    /// Makes a learner a voter, keeping its context.
    PromoteLearner {
        /// The learner to promote.
        id: NodeId,
    },
    /// Removes a voter or a learner from the cluster.
    Remove {
        /// The member to remove.
        id: NodeId,
    },
}

impl ChangeOp {
    /// The id the operation is about.
    pub fn id(&self) -> NodeId {
        match *self {
            ChangeOp::AddVoter { id, .. }
            | ChangeOp::AddLearner { id, .. }
            | ChangeOp::PromoteLearner { id }
            | ChangeOp::Remove { id } => id,
        }
    }
}

/// Why a membership or a change of it was refused. The membership it was
/// asked of is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipError {
    /// The membership is joint: it must leave the joint configuration before
    /// another change.
    AlreadyJoint {
        /// The outgoing voters.
        outgoing: Vec<NodeId>,
    },
    /// [`Membership::leave_joint`] of a membership that is not joint.
    NotJoint,
    /// A change with no operations.
    EmptyChange,
    /// Node id 0, which is never valid.
    ZeroId,
    /// The same id twice in one change (or one bootstrap).
    DuplicateId {
        /// The repeated id.
        id: NodeId,
    },
    /// Removing or promoting a node that is not a member.
    NotAMember {
        /// The node.
        id: NodeId,
    },
    /// Adding a voter that is already a voter.
    AlreadyVoter {
        /// The voter.
        id: NodeId,
    },
    /// Adding a learner that is already a learner.
    AlreadyLearner {
        /// The learner.
        id: NodeId,
    },
    /// Adding as a voter a node that is a learner: it must be promoted.
    IsLearner {
        /// The learner.
        id: NodeId,
    },
    /// Promoting a member that is not a learner (it is a voter).
    NotALearner {
        /// The voter.
        id: NodeId,
    },
    /// The change (or bootstrap) would leave no voters.
    NoVoters,
    /// The change (or bootstrap) would leave more than
    /// [`VOTERS_MAX`] voters.
    TooManyVoters {
        /// How many voters it would leave.
        count: usize,
    },
}

impl fmt::Display for MembershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipError::AlreadyJoint { outgoing } => write!(
                f,
                "the membership is joint (outgoing voters {outgoing:?}): leave the joint \
                 configuration before another change"
            ),
            MembershipError::NotJoint => {
                f.write_str("the membership is not joint: there is nothing to leave")
            }
            MembershipError::EmptyChange => f.write_str("the membership change has no operations"),
            MembershipError::ZeroId => f.write_str("node id 0 is not a valid member"),
            MembershipError::DuplicateId { id } => {
                write!(f, "node {id} appears more than once in one change")
            }
            MembershipError::NotAMember { id } => write!(f, "node {id} is not a member"),
            MembershipError::AlreadyVoter { id } => write!(f, "node {id} is already a voter"),
            MembershipError::AlreadyLearner { id } => write!(f, "node {id} is already a learner"),
            MembershipError::IsLearner { id } => {
                write!(f, "node {id} is a learner: promote it rather than add it as a voter")
            }
            MembershipError::NotALearner { id } => {
                write!(f, "node {id} is a voter, not a learner: there is nothing to promote")
            }
            MembershipError::NoVoters => f.write_str("the membership would have no voters"),
            MembershipError::TooManyVoters { count } => {
                write!(f, "the membership would have {count} voters, more than the {VOTERS_MAX} allowed")
            }
        }
    }
}

impl std::error::Error for MembershipError {}

impl Membership {
    /// The membership of a new cluster: `voters`, each with its context, as
    /// the only members. Refuses an empty list, id 0, an id listed twice and
    /// more than [`VOTERS_MAX`] voters.
    pub fn new_voters(
        voters: impl IntoIterator<Item = (NodeId, Vec<u8>)>,
    ) -> Result<Membership, MembershipError> {
        let mut membership = Membership::default();
        for (id, context) in voters {
            if id == 0 {
                return Err(MembershipError::ZeroId);
            }
            if membership.members.insert(id, context).is_some() {
                return Err(MembershipError::DuplicateId { id });
            }
            membership.voters.incoming.insert(id);
        }
        membership.check_voter_count()?;
        debug_assert_eq!(membership.check_invariants(), Ok(()));
        Ok(membership)
    }

    /// [`Membership::new_voters`] with no context for anyone (tests, and
    /// drivers that keep addresses elsewhere).
    pub fn with_voters(ids: impl IntoIterator<Item = NodeId>) -> Result<Membership, MembershipError> {
        Membership::new_voters(ids.into_iter().map(|id| (id, Vec::new())))
    }

    /// Whether a change is under way: there are outgoing voters.
    pub fn is_joint(&self) -> bool {
        self.voters.is_joint()
    }

    /// The voters, for quorum decisions.
    pub fn voters(&self) -> &JointConfig {
        &self.voters
    }

    /// The learners (not counting `learners_next`, who still vote in the
    /// outgoing half).
    pub fn learners(&self) -> &BTreeSet<NodeId> {
        &self.learners
    }

    /// The outgoing voters that become learners when the joint configuration
    /// is left.
    pub fn learners_next(&self) -> &BTreeSet<NodeId> {
        &self.learners_next
    }

    /// Whether the joint configuration is to be left as soon as the entry that
    /// entered it commits.
    pub fn auto_leave(&self) -> bool {
        self.auto_leave
    }

    /// Whether `id` votes, in the incoming or the outgoing half.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(id)
    }

    /// Whether `id` is a learner (a `learners_next` node is not one yet).
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    /// Whether `id` is a member in any role.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }

    /// The driver's context of member `id`, if it is one.
    pub fn context(&self, id: NodeId) -> Option<&[u8]> {
        self.members.get(&id).map(Vec::as_slice)
    }

    /// Every member's id, in increasing order.
    pub fn member_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.keys().copied()
    }

    /// Every member with its context, in increasing id order.
    pub fn members(&self) -> &BTreeMap<NodeId, Vec<u8>> {
        &self.members
    }

    /// Checks the invariants listed on [`Membership`], for a membership read
    /// from disk or from the network; what [`Membership::apply`] and
    /// [`Membership::leave_joint`] return always passes.
    pub fn check_invariants(&self) -> Result<(), String> {
        let (incoming, outgoing) = (self.voters.incoming.as_set(), self.voters.outgoing.as_set());
        if let Some(id) = self.learners.intersection(incoming).next() {
            return Err(format!("learner {id} is an incoming voter"));
        }
        if let Some(id) = self.learners.intersection(outgoing).next() {
            return Err(format!("learner {id} is an outgoing voter"));
        }
        if let Some(id) = self.learners_next.difference(outgoing).next() {
            return Err(format!("next learner {id} is not an outgoing voter"));
        }
        if let Some(id) = self.learners_next.intersection(incoming).next() {
            return Err(format!("next learner {id} is an incoming voter"));
        }
        if let Some(id) = self.learners_next.intersection(&self.learners).next() {
            return Err(format!("next learner {id} is a learner"));
        }
        if !self.is_joint() && self.auto_leave {
            return Err("auto_leave is set outside a joint configuration".to_string());
        }
        let mut all: BTreeSet<NodeId> = self.voters.ids().collect();
        all.extend(&self.learners);
        all.extend(&self.learners_next);
        if !all.iter().eq(self.members.keys()) {
            let keys: Vec<NodeId> = self.member_ids().collect();
            return Err(format!("members {keys:?} are not the voters and learners {all:?}"));
        }
        if all.contains(&0) {
            return Err("node id 0 is a member".to_string());
        }
        if incoming.is_empty() && !all.is_empty() {
            return Err(format!("no incoming voters, yet members {all:?}"));
        }
        for half in [incoming, outgoing] {
            if half.len() > VOTERS_MAX {
                return Err(format!("{} voters in one half, more than {VOTERS_MAX}", half.len()));
            }
        }
        Ok(())
    }

    /// The membership `change` leads to. A change that alters the voters by at
    /// most one id (or that starts from no voters at all) applies directly;
    /// any other enters a joint configuration with the current voters as its
    /// outgoing half and `auto_leave` set. A voter demoted to learner by a
    /// change that enters a joint configuration becomes a learner only when
    /// it is left (it is in `learners_next` meanwhile).
    ///
    /// Refused: a change of a joint membership, an empty change, id 0, an id
    /// twice, an operation that does not fit the member's current role (see
    /// [`MembershipError`]), and a change leaving no voters or too many.
    pub fn apply(&self, change: &MembershipChange) -> Result<Membership, MembershipError> {
        if self.is_joint() {
            return Err(MembershipError::AlreadyJoint { outgoing: self.voters.outgoing.iter().collect() });
        }
        if change.ops.is_empty() {
            return Err(MembershipError::EmptyChange);
        }
        let mut seen = BTreeSet::new();
        let mut next = self.clone();
        for op in &change.ops {
            let id = op.id();
            if id == 0 {
                return Err(MembershipError::ZeroId);
            }
            if !seen.insert(id) {
                return Err(MembershipError::DuplicateId { id });
            }
            next.apply_op(op)?;
        }
        next.check_voter_count()?;
        let old = self.voters.incoming.as_set();
        let changed = old.symmetric_difference(next.voters.incoming.as_set()).count();
        if changed > 1 && !old.is_empty() {
            next.voters.outgoing = self.voters.incoming.clone();
            let demoted: Vec<NodeId> = next.learners.intersection(old).copied().collect();
            for id in demoted {
                next.learners.remove(&id);
                next.learners_next.insert(id);
            }
            next.auto_leave = true;
        }
        next.drop_former_members();
        debug_assert_eq!(next.check_invariants(), Ok(()));
        Ok(next)
    }

    /// Leaves the joint configuration: the incoming voters stay, the outgoing
    /// ones go, `learners_next` become learners, and members that are in no
    /// role any more are dropped.
    pub fn leave_joint(&self) -> Result<Membership, MembershipError> {
        if !self.is_joint() {
            return Err(MembershipError::NotJoint);
        }
        let mut next = self.clone();
        next.voters.outgoing = MajorityConfig::new();
        next.learners.append(&mut next.learners_next);
        next.auto_leave = false;
        next.drop_former_members();
        debug_assert_eq!(next.check_invariants(), Ok(()));
        Ok(next)
    }

    /// Applies one operation to the incoming voters and the learners of a
    /// non-joint membership being changed. A removed member keeps its context
    /// until [`Membership::drop_former_members`], as an outgoing voter needs it.
    fn apply_op(&mut self, op: &ChangeOp) -> Result<(), MembershipError> {
        let incoming = &mut self.voters.incoming;
        match *op {
            ChangeOp::AddVoter { id, ref context } => {
                if incoming.contains(id) {
                    return Err(MembershipError::AlreadyVoter { id });
                }
                if self.learners.contains(&id) {
                    return Err(MembershipError::IsLearner { id });
                }
                incoming.insert(id);
                self.members.insert(id, context.clone());
            }
            ChangeOp::AddLearner { id, ref context } => {
                if self.learners.contains(&id) {
                    return Err(MembershipError::AlreadyLearner { id });
                }
                incoming.remove(id);
                self.learners.insert(id);
                self.members.insert(id, context.clone());
            }
            ChangeOp::PromoteLearner { id } => {
                if incoming.contains(id) {
                    return Err(MembershipError::NotALearner { id });
                }
                if !self.learners.remove(&id) {
                    return Err(MembershipError::NotAMember { id });
                }
                incoming.insert(id);
            }
            ChangeOp::Remove { id } => {
                if !incoming.remove(id) && !self.learners.remove(&id) {
                    return Err(MembershipError::NotAMember { id });
                }
            }
        }
        Ok(())
    }

    /// Refuses an incoming half with no voters or more than [`VOTERS_MAX`].
    fn check_voter_count(&self) -> Result<(), MembershipError> {
        match self.voters.incoming.len() {
            0 => Err(MembershipError::NoVoters),
            count if count > VOTERS_MAX => Err(MembershipError::TooManyVoters { count }),
            _ => Ok(()),
        }
    }

    /// Drops the context of every member that is in no role any more.
    fn drop_former_members(&mut self) {
        let Membership { voters, learners, learners_next, members, .. } = self;
        members.retain(|id, _| voters.contains(*id) || learners.contains(id) || learners_next.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::VoteResult;
    use proptest::prelude::*;

    fn context(id: NodeId) -> Vec<u8> {
        format!("10.0.0.{id}:7000").into_bytes()
    }

    /// Voters `voters` and learners `learners`, each with [`context`].
    fn membership(voters: &[NodeId], learners: &[NodeId]) -> Membership {
        let m = Membership::new_voters(voters.iter().map(|&id| (id, context(id)))).unwrap();
        if learners.is_empty() {
            return m;
        }
        let ops = learners.iter().map(|&id| ChangeOp::AddLearner { id, context: context(id) }).collect();
        let m = m.apply(&MembershipChange { ops }).unwrap();
        assert!(!m.is_joint());
        m
    }

    fn change(ops: Vec<ChangeOp>) -> MembershipChange {
        MembershipChange { ops }
    }

    fn add_voter(id: NodeId) -> ChangeOp {
        ChangeOp::AddVoter { id, context: context(id) }
    }

    fn add_learner(id: NodeId) -> ChangeOp {
        ChangeOp::AddLearner { id, context: context(id) }
    }

    fn incoming(m: &Membership) -> Vec<NodeId> {
        m.voters().incoming.iter().collect()
    }

    fn outgoing(m: &Membership) -> Vec<NodeId> {
        m.voters().outgoing.iter().collect()
    }

    fn ids(set: &BTreeSet<NodeId>) -> Vec<NodeId> {
        set.iter().copied().collect()
    }

    #[test]
    fn bootstrap_makes_every_listed_node_a_voter() {
        let m = membership(&[1, 2, 3], &[]);
        assert_eq!(incoming(&m), [1, 2, 3]);
        assert!(!m.is_joint());
        assert!(m.is_voter(2) && m.is_member(2) && !m.is_learner(2));
        assert_eq!(m.context(3), Some(context(3).as_slice()));
        assert_eq!(m.context(4), None);
        assert_eq!(m.member_ids().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(m.check_invariants(), Ok(()));
    }

    #[test]
    fn bootstrap_refuses_no_voters_id_zero_duplicates_and_too_many() {
        assert_eq!(Membership::new_voters([]), Err(MembershipError::NoVoters));
        assert_eq!(Membership::new_voters([(1, vec![]), (0, vec![])]), Err(MembershipError::ZeroId));
        assert_eq!(
            Membership::new_voters([(1, vec![]), (1, vec![])]),
            Err(MembershipError::DuplicateId { id: 1 })
        );
        let many = (1..=VOTERS_MAX as NodeId + 1).map(|id| (id, vec![]));
        assert_eq!(
            Membership::new_voters(many),
            Err(MembershipError::TooManyVoters { count: VOTERS_MAX + 1 })
        );
    }

    #[test]
    fn the_empty_membership_is_valid_and_not_joint() {
        let m = Membership::default();
        assert_eq!(m.check_invariants(), Ok(()));
        assert!(!m.is_joint());
        assert_eq!(m.member_ids().count(), 0);
    }

    #[test]
    fn adding_one_voter_is_a_simple_change() {
        let m = membership(&[1, 2, 3], &[]).apply(&change(vec![add_voter(4)])).unwrap();
        assert!(!m.is_joint() && !m.auto_leave());
        assert_eq!(incoming(&m), [1, 2, 3, 4]);
        assert_eq!(m.context(4), Some(context(4).as_slice()));
    }

    #[test]
    fn learners_do_not_count_towards_the_simple_change_limit() {
        let m = membership(&[1, 2, 3], &[4]);
        let m = m.apply(&change(vec![ChangeOp::Remove { id: 4 }, add_learner(5), add_voter(6)])).unwrap();
        assert!(!m.is_joint());
        assert_eq!(incoming(&m), [1, 2, 3, 6]);
        assert_eq!(ids(m.learners()), [5]);
        assert!(!m.is_member(4));
    }

    #[test]
    fn promoting_and_demoting_one_voter_are_simple_changes() {
        let m =
            membership(&[1, 2, 3], &[4]).apply(&change(vec![ChangeOp::PromoteLearner { id: 4 }])).unwrap();
        assert!(!m.is_joint());
        assert_eq!(incoming(&m), [1, 2, 3, 4]);
        assert!(m.learners().is_empty());
        let m = m.apply(&change(vec![ChangeOp::AddLearner { id: 2, context: b"new".to_vec() }])).unwrap();
        assert!(!m.is_joint());
        assert_eq!(incoming(&m), [1, 3, 4]);
        assert_eq!(ids(m.learners()), [2]);
        assert_eq!(m.context(2), Some(&b"new"[..]));
    }

    #[test]
    fn replacing_a_voter_enters_a_joint_configuration() {
        let old = membership(&[1, 2, 3], &[]);
        let m = old.apply(&change(vec![ChangeOp::Remove { id: 3 }, add_voter(4)])).unwrap();
        assert!(m.is_joint() && m.auto_leave());
        assert_eq!(incoming(&m), [1, 2, 4]);
        assert_eq!(outgoing(&m), [1, 2, 3]);
        // The removed voter still votes in the outgoing half and keeps its context.
        assert!(m.is_voter(3));
        assert_eq!(m.context(3), Some(context(3).as_slice()));
        let left = m.leave_joint().unwrap();
        assert!(!left.is_joint() && !left.auto_leave());
        assert_eq!(incoming(&left), [1, 2, 4]);
        assert!(!left.is_member(3));
        assert_eq!(left.context(3), None);
    }

    #[test]
    fn a_voter_demoted_while_entering_joint_is_a_learner_only_once_it_is_left() {
        let m = membership(&[1, 2, 3], &[]).apply(&change(vec![add_learner(3), add_voter(4)])).unwrap();
        assert!(m.is_joint());
        assert_eq!(incoming(&m), [1, 2, 4]);
        assert_eq!(outgoing(&m), [1, 2, 3]);
        assert_eq!(ids(m.learners_next()), [3]);
        assert!(m.learners().is_empty());
        assert!(m.is_voter(3) && !m.is_learner(3));
        let left = m.leave_joint().unwrap();
        assert_eq!(ids(left.learners()), [3]);
        assert!(left.learners_next().is_empty());
        assert!(!left.is_voter(3) && left.is_learner(3) && left.is_member(3));
        assert_eq!(incoming(&left), [1, 2, 4]);
    }

    #[test]
    fn a_change_from_no_voters_applies_directly() {
        let m = Membership::default().apply(&change(vec![add_voter(1), add_voter(2), add_voter(3)])).unwrap();
        assert!(!m.is_joint() && !m.auto_leave());
        assert_eq!(incoming(&m), [1, 2, 3]);
    }

    #[test]
    fn a_joint_membership_refuses_another_change() {
        let m = membership(&[1, 2], &[]).apply(&change(vec![add_voter(3), add_voter(4)])).unwrap();
        let err = m.apply(&change(vec![add_voter(5)])).unwrap_err();
        assert_eq!(err, MembershipError::AlreadyJoint { outgoing: vec![1, 2] });
        assert!(err.to_string().contains("[1, 2]"), "{err}");
    }

    #[test]
    fn leaving_a_non_joint_membership_is_refused() {
        assert_eq!(membership(&[1], &[]).leave_joint(), Err(MembershipError::NotJoint));
    }

    #[test]
    fn a_change_without_operations_is_refused() {
        assert_eq!(membership(&[1], &[]).apply(&change(vec![])), Err(MembershipError::EmptyChange));
    }

    #[test]
    fn node_id_zero_is_refused() {
        assert_eq!(membership(&[1], &[]).apply(&change(vec![add_voter(0)])), Err(MembershipError::ZeroId));
    }

    #[test]
    fn the_same_id_twice_in_one_change_is_refused() {
        let err =
            membership(&[1], &[]).apply(&change(vec![add_learner(2), ChangeOp::PromoteLearner { id: 2 }]));
        assert_eq!(err, Err(MembershipError::DuplicateId { id: 2 }));
    }

    #[test]
    fn removing_or_promoting_a_stranger_is_refused() {
        let m = membership(&[1, 2, 3], &[]);
        assert_eq!(
            m.apply(&change(vec![ChangeOp::Remove { id: 9 }])),
            Err(MembershipError::NotAMember { id: 9 })
        );
        assert_eq!(
            m.apply(&change(vec![ChangeOp::PromoteLearner { id: 9 }])),
            Err(MembershipError::NotAMember { id: 9 })
        );
    }

    #[test]
    fn adding_a_member_in_the_role_it_has_is_refused() {
        let m = membership(&[1, 2, 3], &[4]);
        assert_eq!(m.apply(&change(vec![add_voter(2)])), Err(MembershipError::AlreadyVoter { id: 2 }));
        assert_eq!(m.apply(&change(vec![add_learner(4)])), Err(MembershipError::AlreadyLearner { id: 4 }));
    }

    #[test]
    fn adding_a_learner_as_a_voter_is_refused() {
        let m = membership(&[1, 2, 3], &[4]);
        assert_eq!(m.apply(&change(vec![add_voter(4)])), Err(MembershipError::IsLearner { id: 4 }));
    }

    #[test]
    fn promoting_a_voter_is_refused() {
        let m = membership(&[1, 2, 3], &[]);
        assert_eq!(
            m.apply(&change(vec![ChangeOp::PromoteLearner { id: 1 }])),
            Err(MembershipError::NotALearner { id: 1 })
        );
    }

    #[test]
    fn a_change_leaving_no_voters_is_refused() {
        let m = membership(&[1], &[2]);
        assert_eq!(m.apply(&change(vec![ChangeOp::Remove { id: 1 }])), Err(MembershipError::NoVoters));
        assert_eq!(m.apply(&change(vec![add_learner(1)])), Err(MembershipError::NoVoters));
    }

    #[test]
    fn a_change_leaving_too_many_voters_is_refused() {
        let m = membership(&(1..=VOTERS_MAX as NodeId).collect::<Vec<_>>(), &[]);
        let too_many = change(vec![add_voter(VOTERS_MAX as NodeId + 1)]);
        assert_eq!(m.apply(&too_many), Err(MembershipError::TooManyVoters { count: VOTERS_MAX + 1 }));
    }

    /// Asserts that `good`, broken by `breaks`, fails `check_invariants` with
    /// a message containing `expected`.
    fn assert_broken(good: &Membership, expected: &str, breaks: impl FnOnce(&mut Membership)) {
        let mut m = good.clone();
        breaks(&mut m);
        match m.check_invariants() {
            Err(why) => assert!(why.contains(expected), "expected {expected:?}, got {why:?}"),
            Ok(()) => panic!("expected {expected:?}, but {m:?} passes"),
        }
    }

    #[test]
    fn check_invariants_catches_each_broken_rule() {
        // Voters 1, 2, 5 coming in, 1, 2, 3 going out; 3 demoted; learner 4.
        let good = membership(&[1, 2, 3], &[4]).apply(&change(vec![add_learner(3), add_voter(5)])).unwrap();
        assert_eq!(good.check_invariants(), Ok(()));
        assert_broken(&good, "learner 1 is an incoming voter", |m| {
            m.learners.insert(1);
        });
        assert_broken(&good, "learner 3 is an outgoing voter", |m| {
            m.learners.insert(3);
        });
        assert_broken(&good, "next learner 4 is not an outgoing voter", |m| {
            m.learners_next.insert(4);
        });
        assert_broken(&good, "next learner 1 is an incoming voter", |m| {
            m.learners_next.insert(1);
        });
        assert_broken(&good, "members [1, 2, 3, 5] are not", |m| {
            m.members.remove(&4);
        });
        assert_broken(&good, "members [1, 2, 3, 4, 5, 9] are not", |m| {
            m.members.insert(9, vec![]);
        });
        assert_broken(&good, "node id 0 is a member", |m| {
            m.learners.insert(0);
            m.members.insert(0, vec![]);
        });
        assert_broken(&good, "no incoming voters", |m| {
            *m = Membership::default();
            m.learners.insert(4);
            m.members.insert(4, vec![]);
        });
        assert_broken(&good, "auto_leave is set outside", |m| {
            *m = m.leave_joint().unwrap().with_auto_leave()
        });
        assert_broken(&good, "next learner 3 is not an outgoing voter", |m| {
            *m = m.leave_joint().unwrap();
            m.learners.remove(&3);
            m.learners_next.insert(3);
        });
        assert_broken(&good, &format!("more than {VOTERS_MAX}"), |m| {
            for id in 100..=100 + VOTERS_MAX as NodeId {
                m.voters.outgoing.insert(id);
                m.members.insert(id, vec![]);
            }
        });
    }

    impl Membership {
        fn with_auto_leave(mut self) -> Membership {
            self.auto_leave = true;
            self
        }
    }

    #[test]
    fn the_voters_of_a_simple_membership_decide_as_its_incoming_majority() {
        let m = membership(&[1, 2, 3], &[4]);
        let acked = |id: NodeId| Some(id * 10);
        assert_eq!(m.voters().committed_index(acked), m.voters().incoming.committed_index(acked));
        assert_eq!(m.voters().committed_index(acked), 20);
        let vote = |id: NodeId| (id != 3).then_some(true);
        assert_eq!(m.voters().vote_result(vote), VoteResult::Won);
        assert_eq!(m.voters().vote_result(vote), m.voters().incoming.vote_result(vote));
    }

    /// A random operation on an id among 1..=7 (7 is rarely a member) or,
    /// rarely, the invalid 0.
    fn op() -> impl Strategy<Value = ChangeOp> {
        let id = prop_oneof![1 => Just(0u64), 20 => 1u64..=7];
        prop_oneof![
            (id.clone(), any::<u8>()).prop_map(|(id, c)| ChangeOp::AddVoter { id, context: vec![c] }),
            (id.clone(), any::<u8>()).prop_map(|(id, c)| ChangeOp::AddLearner { id, context: vec![c] }),
            id.clone().prop_map(|id| ChangeOp::PromoteLearner { id }),
            id.prop_map(|id| ChangeOp::Remove { id }),
        ]
    }

    /// A random valid starting point: voters among 1..=6, learners among the
    /// rest of 1..=6.
    fn start() -> impl Strategy<Value = Membership> {
        (proptest::collection::btree_set(1u64..=6, 1..=5), proptest::collection::btree_set(1u64..=6, 0..=3))
            .prop_map(|(voters, learners)| {
                let m = Membership::new_voters(voters.iter().map(|&id| (id, context(id)))).unwrap();
                let ops: Vec<ChangeOp> = learners
                    .difference(&voters)
                    .map(|&id| ChangeOp::AddLearner { id, context: context(id) })
                    .collect();
                if ops.is_empty() {
                    m
                } else {
                    m.apply(&MembershipChange { ops }).unwrap()
                }
            })
    }

    /// Checks what `m.apply(change)` returned against what the change asked.
    fn check_apply(m: &Membership, change: &MembershipChange, result: &Result<Membership, MembershipError>) {
        let next = match result {
            Ok(next) => next,
            Err(err) => {
                let id = match *err {
                    MembershipError::AlreadyJoint { ref outgoing } => {
                        assert!(m.is_joint());
                        outgoing.first().copied()
                    }
                    MembershipError::EmptyChange => {
                        assert!(change.ops.is_empty());
                        None
                    }
                    MembershipError::ZeroId => {
                        assert!(change.ops.iter().any(|op| op.id() == 0));
                        None
                    }
                    MembershipError::NoVoters | MembershipError::TooManyVoters { .. } => None,
                    MembershipError::DuplicateId { id } => {
                        assert!(change.ops.iter().filter(|op| op.id() == id).count() > 1);
                        Some(id)
                    }
                    MembershipError::NotAMember { id } => {
                        assert!(!m.is_member(id));
                        Some(id)
                    }
                    MembershipError::AlreadyVoter { id } | MembershipError::NotALearner { id } => {
                        assert!(m.is_voter(id));
                        Some(id)
                    }
                    MembershipError::AlreadyLearner { id } | MembershipError::IsLearner { id } => {
                        assert!(m.is_learner(id));
                        Some(id)
                    }
                    MembershipError::NotJoint => panic!("apply refused with {err:?}"),
                };
                if let Some(id) = id {
                    assert!(err.to_string().contains(&id.to_string()), "{err}");
                }
                if !matches!(err, MembershipError::AlreadyJoint { .. }) {
                    assert!(!m.is_joint(), "{err:?} from a joint membership");
                }
                return;
            }
        };
        assert_eq!(next.check_invariants(), Ok(()), "{next:?}");
        assert!(!m.is_joint());
        // Every id the change names ends up in the role it asked for.
        for op in &change.ops {
            match *op {
                ChangeOp::AddVoter { id, ref context } => {
                    assert!(next.voters.incoming.contains(id));
                    assert_eq!(next.context(id), Some(context.as_slice()));
                }
                ChangeOp::AddLearner { id, ref context } => {
                    assert!(!next.voters.incoming.contains(id));
                    assert!(next.learners.contains(&id) || next.learners_next.contains(&id));
                    assert_eq!(next.learners_next.contains(&id), next.is_joint() && m.is_voter(id));
                    assert_eq!(next.context(id), Some(context.as_slice()));
                }
                ChangeOp::PromoteLearner { id } => {
                    assert!(next.voters.incoming.contains(id) && !next.is_learner(id));
                    assert_eq!(next.context(id), m.context(id));
                }
                ChangeOp::Remove { id } => {
                    assert!(!next.voters.incoming.contains(id) && !next.is_learner(id));
                    assert_eq!(next.is_member(id), next.voters.outgoing.contains(id));
                }
            }
        }
        // Every other member keeps its role and context.
        for id in m.member_ids().filter(|&id| change.ops.iter().all(|op| op.id() != id)) {
            assert_eq!(next.voters.incoming.contains(id), m.voters.incoming.contains(id));
            assert_eq!(next.is_learner(id), m.is_learner(id));
            assert_eq!(next.context(id), m.context(id));
        }
        let changed = m.voters.incoming.as_set().symmetric_difference(next.voters.incoming.as_set()).count();
        let joint = changed > 1 && !m.voters.incoming.is_empty();
        assert_eq!(next.is_joint(), joint);
        assert_eq!(next.auto_leave(), joint);
        if joint {
            assert_eq!(next.voters.outgoing, m.voters.incoming);
        }
        let left = if joint { next.leave_joint().unwrap() } else { next.clone() };
        assert_eq!(left.check_invariants(), Ok(()), "{left:?}");
        assert!(!left.is_joint() && !left.auto_leave());
        assert_eq!(left.voters.incoming, next.voters.incoming);
        let learners: BTreeSet<NodeId> = next.learners.union(&next.learners_next).copied().collect();
        assert_eq!(left.learners, learners);
    }

    proptest! {
        // Most random changes are refused; enough cases that hundreds enter a
        // joint configuration.
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn every_change_is_either_applied_with_invariants_kept_or_refused_by_name(
            start in start(),
            steps in proptest::collection::vec(
                (prop_oneof![1 => Just(vec![]), 20 => proptest::collection::vec(op(), 1..=3)], any::<bool>()),
                1..=12,
            ),
        ) {
            let mut m = start;
            for (ops, leave) in steps {
                let change = MembershipChange { ops };
                let result = m.apply(&change);
                check_apply(&m, &change, &result);
                if let Ok(next) = result {
                    m = next;
                }
                if leave {
                    match m.leave_joint() {
                        Ok(left) => {
                            prop_assert!(m.is_joint());
                            m = left;
                        }
                        Err(err) => {
                            prop_assert!(!m.is_joint());
                            prop_assert_eq!(err, MembershipError::NotJoint);
                        }
                    }
                }
            }
        }
    }
}
