//! The safety checkers, one small struct per property. Each is fed plain
//! observations (ids, terms, indexes, digests), not nodes, so that its unit
//! tests can feed it a hand-made violating trace and watch it fail: a
//! checker that cannot fail proves nothing.
//!
//! Every method returns `Err(description)` on the first violation it sees.

use std::collections::BTreeMap;

use raft_core::{Entry, Index, Membership, MembershipChange, NodeId, Role, Term};

use crate::sim::hash::digest_payload;

/// Election Safety: at most one leader per term, over the whole run.
#[derive(Clone, Debug, Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<Term, NodeId>,
}

impl ElectionSafety {
    /// A checker that has seen nothing.
    pub fn new() -> ElectionSafety {
        ElectionSafety::default()
    }

    /// `node` is in `role` at `term`.
    pub fn observe(&mut self, node: NodeId, role: Role, term: Term) -> Result<(), String> {
        if role != Role::Leader {
            return Ok(());
        }
        match self.leaders.get(&term) {
            Some(&other) if other != node => {
                Err(format!("term {term} has two leaders: node {other} and node {node}"))
            }
            Some(_) => Ok(()),
            None => {
                self.leaders.insert(term, node);
                Ok(())
            }
        }
    }

    /// Number of terms that had a leader.
    pub fn terms_with_leader(&self) -> usize {
        self.leaders.len()
    }
}

/// What the first node seen holding an entry recorded about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    payload: u64,
    prev_term: Term,
    node: NodeId,
}

/// Log Matching: if two logs hold an entry with the same index and term, the
/// entries are identical, and so are all the entries before it.
///
/// Checked incrementally and across time: the first node seen holding
/// `(index, term)` records the entry's payload digest and the term of the
/// entry before it; every later sighting, on any node, must agree. By
/// induction on the index, agreeing on `(index - 1, prev_term)` at every step
/// means agreeing on the whole prefix. (A leader creates at most one entry per
/// index in its term, so `(index, term)` names one entry for all time.)
#[derive(Clone, Debug, Default)]
pub struct LogMatching {
    seen: BTreeMap<(Index, Term), Fingerprint>,
}

impl LogMatching {
    /// A checker that has seen nothing.
    pub fn new() -> LogMatching {
        LogMatching::default()
    }

    /// `node` holds an entry at (`index`, `term`) with payload digest
    /// `payload`, and the entry before it has term `prev_term`.
    pub fn observe(
        &mut self,
        node: NodeId,
        index: Index,
        term: Term,
        prev_term: Term,
        payload: u64,
    ) -> Result<(), String> {
        let seen = Fingerprint { payload, prev_term, node };
        match self.seen.get(&(index, term)) {
            None => {
                self.seen.insert((index, term), seen);
                Ok(())
            }
            Some(first) if first.payload != payload => Err(format!(
                "index {index} term {term}: node {node} holds a different entry than node {} did",
                first.node
            )),
            Some(first) if first.prev_term != prev_term => Err(format!(
                "index {index} term {term}: node {node} has term {prev_term} at index {} \
                 but node {} had term {} there (the logs differ before a matching entry)",
                index - 1,
                first.node,
                first.prev_term
            )),
            Some(_) => Ok(()),
        }
    }

    /// `node` holds `entries` (contiguous), and the entry before the first has
    /// term `prev_term`.
    pub fn observe_log<'a>(
        &mut self,
        node: NodeId,
        prev_term: Term,
        entries: impl IntoIterator<Item = &'a Entry>,
    ) -> Result<(), String> {
        let mut prev_term = prev_term;
        for e in entries {
            self.observe(node, e.index, e.term, prev_term, digest_payload(&e.payload))?;
            prev_term = e.term;
        }
        Ok(())
    }
}

/// A committed entry, as first recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Committed {
    term: Term,
    payload: u64,
    /// The lowest term of a node seen knowing the entry committed: the entry
    /// was committed in this term or earlier.
    commit_term: Term,
}

/// Leader Completeness: an entry committed in some term is in the log of
/// every leader of every later term.
///
/// Also checks that an index is never committed with two different entries.
#[derive(Clone, Debug, Default)]
pub struct LeaderCompleteness {
    committed: BTreeMap<Index, Committed>,
}

impl LeaderCompleteness {
    /// A checker that has seen nothing.
    pub fn new() -> LeaderCompleteness {
        LeaderCompleteness::default()
    }

    /// A node in term `observer_term` knows the entry (`index`, `term`,
    /// payload digest `payload`) committed. Returns whether the index was new.
    pub fn record_commit(
        &mut self,
        index: Index,
        term: Term,
        payload: u64,
        observer_term: Term,
    ) -> Result<bool, String> {
        match self.committed.get_mut(&index) {
            None => {
                self.committed.insert(index, Committed { term, payload, commit_term: observer_term });
                Ok(true)
            }
            Some(c) if c.term != term || c.payload != payload => Err(format!(
                "index {index} committed twice with different entries: term {} then term {term}",
                c.term
            )),
            Some(c) => {
                c.commit_term = c.commit_term.min(observer_term);
                Ok(false)
            }
        }
    }

    /// The highest index known committed.
    pub fn highest(&self) -> Index {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }

    /// Checks leader `node` of `term`, whose log holds `first_index..=last_index`
    /// and answers `entry_at(index) -> (term, payload digest)`. Entries below
    /// `first_index` are covered by its snapshot and skipped.
    pub fn check_leader(
        &self,
        node: NodeId,
        term: Term,
        first_index: Index,
        last_index: Index,
        entry_at: impl Fn(Index) -> Option<(Term, u64)>,
    ) -> Result<(), String> {
        for (&index, c) in self.committed.range(first_index..) {
            if c.commit_term >= term {
                continue;
            }
            match entry_at(index) {
                Some((t, p)) if t == c.term && p == c.payload => {}
                Some((t, _)) => {
                    return Err(format!(
                        "leader {node} of term {term} holds term {t} at index {index}, \
                         but the entry of term {} there was committed by term {}",
                        c.term, c.commit_term
                    ))
                }
                None => {
                    return Err(format!(
                        "leader {node} of term {term} (log {first_index}..={last_index}) lacks \
                         index {index} (term {}), committed by term {}",
                        c.term, c.commit_term
                    ))
                }
            }
        }
        Ok(())
    }
}

/// State Machine Safety: every node applies a prefix of one global sequence
/// of entries, one index after another, across crashes and restarts; and at
/// every index every node's state machine is in the same state (which also
/// checks snapshots: a state restored from one must be the state at its index).
#[derive(Clone, Debug, Default)]
pub struct StateMachineSafety {
    /// Global index -> (entry digest, node that applied it first).
    entries: BTreeMap<Index, (u64, NodeId)>,
    /// Global index -> state digest after applying it.
    states: BTreeMap<Index, u64>,
    /// Per node: the last index its state machine reflects.
    applied: BTreeMap<NodeId, Index>,
}

impl StateMachineSafety {
    /// A checker that has seen nothing.
    pub fn new() -> StateMachineSafety {
        StateMachineSafety::default()
    }

    /// `node` (re)started with its state machine rebuilt from a durable
    /// snapshot at `index` (0: empty) whose state digest is `state`.
    pub fn restart(&mut self, node: NodeId, index: Index, state: u64) -> Result<(), String> {
        self.applied.insert(node, index);
        self.check_state(node, index, state)
    }

    /// `node` applied `entry` (digest `entry`) at `index`, reaching state `state`.
    pub fn apply(&mut self, node: NodeId, index: Index, entry: u64, state: u64) -> Result<(), String> {
        let last = self.applied.get(&node).copied().unwrap_or(0);
        if index != last + 1 {
            return Err(format!("node {node} applied index {index} right after index {last}"));
        }
        self.applied.insert(node, index);
        match self.entries.get(&index) {
            None => {
                self.entries.insert(index, (entry, node));
            }
            Some(&(first, first_node)) if first != entry => {
                return Err(format!(
                    "node {node} applied a different entry at index {index} than node {first_node} did"
                ))
            }
            Some(_) => {}
        }
        self.check_state(node, index, state)
    }

    /// `node` replaced its state machine with a snapshot at `index` whose
    /// state digest is `state`.
    pub fn restore(&mut self, node: NodeId, index: Index, state: u64) -> Result<(), String> {
        let last = self.applied.get(&node).copied().unwrap_or(0);
        if index < last {
            return Err(format!(
                "node {node} restored a snapshot at index {index}, behind its applied index {last}"
            ));
        }
        self.applied.insert(node, index);
        self.check_state(node, index, state)
    }

    fn check_state(&mut self, node: NodeId, index: Index, state: u64) -> Result<(), String> {
        match self.states.get(&index) {
            None => {
                self.states.insert(index, state);
                Ok(())
            }
            Some(&s) if s != state => Err(format!(
                "node {node} has a different state machine state at index {index} than the first node there"
            )),
            Some(_) => Ok(()),
        }
    }
}

/// The commit index of a live node never moves back. After a restart it may
/// start lower (from the durable hard state), but never below the snapshot.
#[derive(Clone, Debug, Default)]
pub struct CommitMonotonic {
    commit: BTreeMap<NodeId, Index>,
}

impl CommitMonotonic {
    /// A checker that has seen nothing.
    pub fn new() -> CommitMonotonic {
        CommitMonotonic::default()
    }

    /// `node` reports commit index `commit`.
    pub fn observe(&mut self, node: NodeId, commit: Index) -> Result<(), String> {
        let last = self.commit.get(&node).copied().unwrap_or(0);
        if commit < last {
            return Err(format!("node {node}'s commit index went back from {last} to {commit}"));
        }
        self.commit.insert(node, commit);
        Ok(())
    }

    /// `node` restarted (a new incarnation) with commit index `commit` and
    /// snapshot index `snapshot_index`.
    pub fn restart(&mut self, node: NodeId, commit: Index, snapshot_index: Index) -> Result<(), String> {
        if commit < snapshot_index {
            return Err(format!(
                "node {node} restarted with commit {commit} below its snapshot at {snapshot_index}"
            ));
        }
        self.commit.insert(node, commit);
        Ok(())
    }
}

/// Membership safety: every committed configuration is one the membership
/// function accepted, and every node commits the same configuration at the
/// same index.
///
/// Fed with every configuration entry a node knows committed (decoded, or
/// the decoding error) and with every change a leader accepted. A committed
/// configuration must decode, pass [`Membership::check_invariants`], and be
/// reachable from the committed configuration before it (by index) through
/// [`Membership::leave_joint`] or [`Membership::apply`] of an accepted change.
/// The founding configuration is committed at index 1.
#[derive(Clone, Debug)]
pub struct ConfigHistory {
    /// Changes some leader accepted, without repeats.
    proposed: Vec<MembershipChange>,
    /// Index -> (committed configuration, node that first reported it; 0 for
    /// the founding one).
    committed: BTreeMap<Index, (Membership, NodeId)>,
}

impl ConfigHistory {
    /// A history whose only configuration is `founders`, at index 1.
    pub fn new(founders: Membership) -> ConfigHistory {
        ConfigHistory { proposed: Vec::new(), committed: BTreeMap::from([(1, (founders, 0))]) }
    }

    /// A leader accepted `change` (its configuration entry may or may not
    /// commit).
    pub fn propose(&mut self, change: &MembershipChange) {
        if !self.proposed.contains(change) {
            self.proposed.push(change.clone());
        }
    }

    /// `node` knows the configuration entry at `index` committed, and it
    /// decoded to `decoded`. Returns whether the index was new.
    pub fn observe(
        &mut self,
        node: NodeId,
        index: Index,
        decoded: Result<Membership, String>,
    ) -> Result<bool, String> {
        let membership = decoded.map_err(|e| {
            format!("node {node} committed a configuration at index {index} that is invalid: {e}")
        })?;
        membership.check_invariants().map_err(|e| {
            format!("node {node} committed a configuration at index {index} that breaks an invariant: {e}")
        })?;
        if let Some((first, first_node)) = self.committed.get(&index) {
            if *first != membership {
                return Err(format!(
                    "node {node} committed configuration {} at index {index}, node {first_node} {}",
                    describe(&membership),
                    describe(first)
                ));
            }
            return Ok(false);
        }
        if let Some((&before, (prev, _))) = self.committed.range(..index).next_back() {
            if !self.reachable(prev, &membership) {
                return Err(format!(
                    "node {node} committed configuration {} at index {index}, which no accepted change \
                     nor leaving the joint configuration makes of {} (committed at index {before})",
                    describe(&membership),
                    describe(prev)
                ));
            }
        }
        if let Some((&after, (next, _))) = self.committed.range(index + 1..).next() {
            if !self.reachable(&membership, next) {
                return Err(format!(
                    "configuration {} committed at index {after} is not reachable from {} committed at index {index}",
                    describe(next),
                    describe(&membership)
                ));
            }
        }
        self.committed.insert(index, (membership, node));
        Ok(true)
    }

    fn reachable(&self, prev: &Membership, next: &Membership) -> bool {
        prev.leave_joint().as_ref() == Ok(next)
            || self.proposed.iter().any(|change| prev.apply(change).as_ref() == Ok(next))
    }

    /// The configuration committed at the highest index, and that index.
    pub fn last(&self) -> (Index, &Membership) {
        let (&index, (m, _)) = self.committed.iter().next_back().expect("the founding configuration");
        (index, m)
    }

    /// The committed configuration in force at `index`: the one at the
    /// highest index not above it.
    pub fn at(&self, index: Index) -> Option<(Index, &Membership)> {
        self.committed.range(..=index).next_back().map(|(&i, (m, _))| (i, m))
    }

    /// The committed configurations at indexes above `index`, in order.
    pub fn after(&self, index: Index) -> impl Iterator<Item = (Index, &Membership)> {
        self.committed.range(index + 1..).map(|(&i, (m, _))| (i, m))
    }

    /// Number of committed configurations recorded, the founding one included.
    pub fn len(&self) -> usize {
        self.committed.len()
    }

    /// Never true: the founding configuration is always there.
    pub fn is_empty(&self) -> bool {
        self.committed.is_empty()
    }
}

/// A short description of a membership: voters (both halves) and learners.
pub fn describe(m: &Membership) -> String {
    let v = m.voters();
    let incoming: Vec<NodeId> = v.incoming.iter().collect();
    let mut out = format!("voters {incoming:?}");
    if m.is_joint() {
        let outgoing: Vec<NodeId> = v.outgoing.iter().collect();
        out.push_str(&format!(" & {outgoing:?}"));
    }
    if !m.learners().is_empty() {
        out.push_str(&format!(" learners {:?}", m.learners()));
    }
    if !m.learners_next().is_empty() {
        out.push_str(&format!(" next learners {:?}", m.learners_next()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::hash::digest_entry;
    use raft_core::EntryPayload;

    fn entry(index: Index, term: Term, data: &str) -> Entry {
        Entry { index, term, payload: EntryPayload::Command(data.as_bytes().to_vec()) }
    }

    fn payload(data: &str) -> u64 {
        digest_payload(&EntryPayload::Command(data.as_bytes().to_vec()))
    }

    #[test]
    fn election_safety_accepts_one_leader_per_term() {
        let mut c = ElectionSafety::new();
        c.observe(1, Role::Leader, 1).unwrap();
        c.observe(1, Role::Leader, 1).unwrap();
        c.observe(2, Role::Follower, 1).unwrap();
        c.observe(2, Role::Candidate, 2).unwrap();
        c.observe(2, Role::Leader, 2).unwrap();
        assert_eq!(c.terms_with_leader(), 2);
    }

    #[test]
    fn election_safety_catches_two_leaders_in_one_term() {
        let mut c = ElectionSafety::new();
        c.observe(1, Role::Leader, 3).unwrap();
        c.observe(1, Role::Follower, 4).unwrap();
        // Node 2 leads term 3 later: too late, node 1 already did.
        let err = c.observe(2, Role::Leader, 3).unwrap_err();
        assert!(err.contains("two leaders"), "{err}");
    }

    #[test]
    fn log_matching_accepts_logs_that_share_a_prefix_and_then_diverge() {
        let mut c = LogMatching::new();
        let a = [entry(1, 1, "x"), entry(2, 1, "y"), entry(3, 2, "z")];
        let b = [entry(1, 1, "x"), entry(2, 1, "y"), entry(3, 3, "w")];
        c.observe_log(1, 0, &a).unwrap();
        c.observe_log(2, 0, &b).unwrap();
        // A third node holding a suffix after its snapshot at index 1.
        c.observe_log(3, 1, &b[1..]).unwrap();
    }

    #[test]
    fn log_matching_catches_two_entries_with_the_same_index_and_term() {
        let mut c = LogMatching::new();
        c.observe_log(1, 0, &[entry(1, 1, "x"), entry(2, 1, "y")]).unwrap();
        let err = c.observe_log(2, 0, &[entry(1, 1, "x"), entry(2, 1, "OTHER")]).unwrap_err();
        assert!(err.contains("index 2 term 1"), "{err}");
    }

    #[test]
    fn log_matching_catches_matching_entries_over_different_prefixes() {
        let mut c = LogMatching::new();
        c.observe_log(1, 0, &[entry(1, 1, "x"), entry(2, 3, "y")]).unwrap();
        // Same (2, 3) entry, but node 2 holds term 2 at index 1.
        let err = c.observe_log(2, 0, &[entry(1, 2, "q"), entry(2, 3, "y")]).unwrap_err();
        assert!(err.contains("logs differ before a matching entry"), "{err}");
    }

    #[test]
    fn leader_completeness_accepts_a_later_leader_holding_every_committed_entry() {
        let mut c = LeaderCompleteness::new();
        c.record_commit(1, 1, payload("a"), 1).unwrap();
        c.record_commit(2, 1, payload("b"), 2).unwrap();
        let log = [entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 3, "c")];
        let at = |i: Index| log.get(i as usize - 1).map(|e| (e.term, digest_payload(&e.payload)));
        c.check_leader(2, 3, 1, 3, at).unwrap();
        // A stale leader of term 1 is not bound by commits seen in term 2.
        c.check_leader(1, 1, 1, 1, |_| None).unwrap();
        // Entries below the leader's snapshot are covered by it.
        c.check_leader(3, 4, 3, 3, at).unwrap();
        assert_eq!(c.highest(), 2);
    }

    #[test]
    fn leader_completeness_catches_a_leader_missing_a_committed_entry() {
        let mut c = LeaderCompleteness::new();
        c.record_commit(1, 1, payload("a"), 1).unwrap();
        c.record_commit(2, 1, payload("b"), 1).unwrap();
        let log = [entry(1, 1, "a")];
        let at = |i: Index| log.get(i as usize - 1).map(|e| (e.term, digest_payload(&e.payload)));
        let err = c.check_leader(2, 2, 1, 1, at).unwrap_err();
        assert!(err.contains("lacks index 2"), "{err}");
    }

    #[test]
    fn leader_completeness_catches_a_leader_holding_another_entry_at_a_committed_index() {
        let mut c = LeaderCompleteness::new();
        c.record_commit(1, 1, payload("a"), 1).unwrap();
        let log = [entry(1, 2, "other")];
        let at = |i: Index| log.get(i as usize - 1).map(|e| (e.term, digest_payload(&e.payload)));
        let err = c.check_leader(3, 2, 1, 1, at).unwrap_err();
        assert!(err.contains("holds term 2 at index 1"), "{err}");
    }

    #[test]
    fn leader_completeness_catches_an_index_committed_twice_differently() {
        let mut c = LeaderCompleteness::new();
        assert_eq!(c.record_commit(5, 2, payload("a"), 2), Ok(true));
        assert_eq!(c.record_commit(5, 2, payload("a"), 3), Ok(false));
        let err = c.record_commit(5, 3, payload("b"), 3).unwrap_err();
        assert!(err.contains("committed twice"), "{err}");
    }

    #[test]
    fn state_machine_safety_accepts_prefixes_of_one_sequence_across_restarts() {
        let mut c = StateMachineSafety::new();
        let (e1, e2) = (digest_entry(&entry(1, 1, "a")), digest_entry(&entry(2, 1, "b")));
        c.restart(1, 0, 100).unwrap();
        c.apply(1, 1, e1, 101).unwrap();
        c.apply(1, 2, e2, 102).unwrap();
        c.apply(2, 1, e1, 101).unwrap();
        // Node 2 crashes and restarts from a snapshot at index 1.
        c.restart(2, 1, 101).unwrap();
        c.apply(2, 2, e2, 102).unwrap();
        // Node 3 installs a snapshot at index 2.
        c.restore(3, 2, 102).unwrap();
    }

    #[test]
    fn state_machine_safety_catches_two_nodes_applying_different_entries() {
        let mut c = StateMachineSafety::new();
        c.apply(1, 1, digest_entry(&entry(1, 1, "a")), 1).unwrap();
        let err = c.apply(2, 1, digest_entry(&entry(1, 2, "b")), 1).unwrap_err();
        assert!(err.contains("different entry at index 1"), "{err}");
    }

    #[test]
    fn state_machine_safety_catches_a_skipped_or_repeated_index() {
        let mut c = StateMachineSafety::new();
        c.apply(1, 1, 11, 1).unwrap();
        let err = c.apply(1, 3, 13, 3).unwrap_err();
        assert!(err.contains("applied index 3 right after index 1"), "{err}");
        let mut c = StateMachineSafety::new();
        c.apply(1, 1, 11, 1).unwrap();
        assert!(c.apply(1, 1, 11, 1).is_err(), "applying twice");
    }

    #[test]
    fn state_machine_safety_catches_a_snapshot_with_the_wrong_state() {
        let mut c = StateMachineSafety::new();
        c.apply(1, 1, 11, 500).unwrap();
        let err = c.restore(2, 1, 999).unwrap_err();
        assert!(err.contains("different state machine state"), "{err}");
    }

    #[test]
    fn state_machine_safety_catches_a_snapshot_that_moves_a_node_back() {
        let mut c = StateMachineSafety::new();
        c.apply(1, 1, 11, 1).unwrap();
        c.apply(1, 2, 12, 2).unwrap();
        let err = c.restore(1, 1, 1).unwrap_err();
        assert!(err.contains("behind its applied index 2"), "{err}");
    }

    #[test]
    fn commit_monotonic_accepts_growth_and_a_restart_from_durable_state() {
        let mut c = CommitMonotonic::new();
        c.observe(1, 3).unwrap();
        c.observe(1, 3).unwrap();
        c.observe(1, 7).unwrap();
        c.restart(1, 5, 5).unwrap();
        c.observe(1, 6).unwrap();
    }

    #[test]
    fn commit_monotonic_catches_a_commit_index_moving_back() {
        let mut c = CommitMonotonic::new();
        c.observe(2, 9).unwrap();
        let err = c.observe(2, 8).unwrap_err();
        assert!(err.contains("went back from 9 to 8"), "{err}");
    }

    #[test]
    fn commit_monotonic_catches_a_restart_below_the_snapshot() {
        let mut c = CommitMonotonic::new();
        let err = c.restart(3, 4, 10).unwrap_err();
        assert!(err.contains("below its snapshot"), "{err}");
    }

    fn change(ops: Vec<raft_core::ChangeOp>) -> MembershipChange {
        MembershipChange { ops }
    }

    #[test]
    fn config_history_accepts_proposed_changes_and_leaving_a_joint_configuration() {
        use raft_core::ChangeOp;
        let founders = Membership::with_voters([1, 2, 3]).unwrap();
        let mut c = ConfigHistory::new(founders.clone());
        assert_eq!(c.observe(1, 1, Ok(founders.clone())), Ok(false));
        let add = change(vec![ChangeOp::AddLearner { id: 4, context: Vec::new() }]);
        c.propose(&add);
        let with_learner = founders.apply(&add).unwrap();
        assert_eq!(c.observe(2, 5, Ok(with_learner.clone())), Ok(true));
        let joint_change = change(vec![ChangeOp::PromoteLearner { id: 4 }, ChangeOp::Remove { id: 1 }]);
        c.propose(&joint_change);
        let joint = with_learner.apply(&joint_change).unwrap();
        assert!(joint.is_joint());
        c.observe(3, 9, Ok(joint.clone())).unwrap();
        // Left by the leader on its own: no change proposed for it.
        let left = joint.leave_joint().unwrap();
        c.observe(4, 10, Ok(left.clone())).unwrap();
        assert_eq!(c.last(), (10, &left));
        assert_eq!(c.at(9), Some((9, &joint)));
        assert_eq!(c.at(8), Some((5, &with_learner)));
        assert_eq!(c.after(5).count(), 2);
        assert_eq!(c.observe(2, 10, Ok(left)), Ok(false));
    }

    #[test]
    fn config_history_catches_a_configuration_no_change_makes() {
        use raft_core::ChangeOp;
        let founders = Membership::with_voters([1, 2, 3]).unwrap();
        let mut c = ConfigHistory::new(founders.clone());
        c.propose(&change(vec![ChangeOp::Remove { id: 3 }]));
        // Removing two voters at once (directly, not joint) was never proposed.
        let err = c.observe(1, 4, Ok(Membership::with_voters([1]).unwrap())).unwrap_err();
        assert!(err.contains("which no accepted change"), "{err}");
        // Nor may a change apply to a configuration it was not proposed for.
        let err = c.observe(1, 4, Ok(Membership::with_voters([1, 2, 4]).unwrap())).unwrap_err();
        assert!(err.contains("which no accepted change"), "{err}");
    }

    #[test]
    fn config_history_catches_two_nodes_committing_different_configurations() {
        use raft_core::ChangeOp;
        let founders = Membership::with_voters([1, 2, 3]).unwrap();
        let mut c = ConfigHistory::new(founders.clone());
        let (a, b) = (change(vec![ChangeOp::Remove { id: 3 }]), change(vec![ChangeOp::Remove { id: 2 }]));
        c.propose(&a);
        c.propose(&b);
        c.observe(1, 4, Ok(founders.apply(&a).unwrap())).unwrap();
        let err = c.observe(2, 4, Ok(founders.apply(&b).unwrap())).unwrap_err();
        assert!(err.contains("node 2 committed configuration voters [1, 3] at index 4"), "{err}");
        let err = c.observe(2, 1, Ok(Membership::with_voters([1]).unwrap())).unwrap_err();
        assert!(err.contains("at index 1"), "{err}");
    }

    #[test]
    fn config_history_catches_an_invalid_configuration() {
        let mut c = ConfigHistory::new(Membership::with_voters([1]).unwrap());
        let err = c.observe(1, 2, Err("damaged".to_string())).unwrap_err();
        assert!(err.contains("invalid: damaged"), "{err}");
    }

    #[test]
    fn config_history_checks_a_configuration_recorded_late_against_its_successor() {
        use raft_core::ChangeOp;
        let founders = Membership::with_voters([1, 2, 3]).unwrap();
        let mut c = ConfigHistory::new(founders.clone());
        let add = change(vec![ChangeOp::AddVoter { id: 4, context: Vec::new() }]);
        c.propose(&add);
        let four = founders.apply(&add).unwrap();
        c.observe(1, 6, Ok(four)).unwrap();
        // Index 3 seen later: reachable from index 1's, but index 6's is not
        // reachable from it.
        let remove = change(vec![ChangeOp::Remove { id: 3 }]);
        c.propose(&remove);
        let err = c.observe(2, 3, Ok(founders.apply(&remove).unwrap())).unwrap_err();
        assert!(err.contains("committed at index 6 is not reachable from voters [1, 2]"), "{err}");
    }
}
