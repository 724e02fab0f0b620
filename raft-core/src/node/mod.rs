//! The Raft node.
//!
//! Structure, after etcd's `raft.go`: [`RaftNode::step`] handles terms once for
//! every message (§5.1: a higher term turns anyone into a follower; a lower
//! term is stale), answers vote requests (the same for every role), then hands
//! the message to one function per role. Ticks drive the election timer
//! (followers and candidates) or heartbeats and check-quorum (leaders).
//!
//! Durability, after etcd's asynchronous storage writes: whatever must become
//! durable (term and vote, new entries, an installed snapshot) accumulates and
//! leaves in one [`PersistBatch`] per [`RaftNode::take_actions`]. Messages
//! that depend on it (vote grants, append acknowledgements, a candidate's vote
//! for itself) wait in `msgs_after_persist` until the driver reports the batch
//! durable with [`RaftNode::persisted`].
//!
//! The node is split by role. [`Shared`](state::Shared) holds what every
//! role has (term, vote, log, the progress tracker, the actions being
//! gathered); [`RoleState`] holds what only one role has, and a leader's
//! work is done by [`LeaderState`](leader::LeaderState) methods that are
//! handed the shared state: no code reaches for a leader's state it might
//! not have. Role changes happen here, in `RaftNode`, and nowhere else.
//!
//! - `candidate.rs`: elections (PreVote, votes, becoming leader or follower);
//! - `follower.rs`: appends, heartbeats and snapshots from the leader;
//! - `leader.rs`: replication, commit, heartbeats, check-quorum;
//! - `reads.rs`: ReadIndex;
//! - `persist.rs`: gathering persist batches and applies, and messages
//!   that wait for durability.

mod candidate;
mod follower;
mod leader;
mod persist;
mod reads;
mod state;

use std::collections::{BTreeMap, VecDeque};

use crate::action::Action;
use crate::config::Config;
use crate::error::{ConfigError, ProposeError, RestartError, SnapshotError, TransferError};
use crate::log::RaftLog;
use crate::membership::{Membership, MembershipChange};
use crate::message::{AppendResponse, Message, MessageBody};
use crate::rng::Rng;
use crate::status::{Counters, Status};
use crate::tracker::ProgressTracker;
use crate::types::{
    DurableState, Entry, EntryPayload, HardState, Index, NodeId, Role, Snapshot, SnapshotMeta, Term,
    INDEX_MAX, TERM_MAX,
};
use leader::LeaderState;
use state::Shared;

/// Where a proposal landed in the log. It is committed if and when an entry
/// with this index *and this term* is applied; an entry at the same index with
/// another term means the proposal was lost to a leader change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Proposed {
    /// The leader's term.
    pub term: Term,
    /// The entry's index.
    pub index: Index,
}

/// Role-specific state: a follower cannot touch leader state, by construction.
#[derive(Debug)]
enum RoleState {
    Follower,
    PreCandidate { votes: BTreeMap<NodeId, bool> },
    Candidate { votes: BTreeMap<NodeId, bool> },
    Leader(Box<LeaderState>),
}

/// One Raft node: feed it inputs, drain its actions. See the crate docs for the
/// driver loop and the safety contract.
#[derive(Debug)]
pub struct RaftNode {
    /// What every role has.
    s: Shared,
    /// What only the current role has.
    role: RoleState,
}

impl RaftNode {
    /// A fresh node with an empty log and no membership, a follower in term
    /// 0: a new member waiting to be added to a running cluster. It never
    /// campaigns; it answers a leader that contacts it, and learns the
    /// membership from the leader's log or snapshot.
    pub fn new(config: Config) -> Result<RaftNode, ConfigError> {
        RaftNode::restart(config, DurableState::default()).map_err(|e| match e {
            RestartError::Config(c) => c,
            other => unreachable!("empty durable state is always valid: {other}"),
        })
    }

    /// A fresh node of a new cluster whose first membership is `membership`
    /// (this node among its voters). Every node the cluster starts with is
    /// bootstrapped with the same membership; nodes added later start with
    /// [`RaftNode::new`].
    ///
    /// The membership becomes the log's first entry: a configuration entry at
    /// index 1 and term 0, committed, which the first
    /// [`Action::Persist`](crate::Action::Persist) hands to the driver like any
    /// other. From then on the membership lives in the log and in snapshots:
    /// [`RaftNode::restart`] needs nothing else (as etcd's raft bootstraps
    /// with configuration entries).
    pub fn bootstrap(config: Config, membership: Membership) -> Result<RaftNode, ConfigError> {
        let check = match membership.voters().incoming.is_empty() {
            true => Err("it has no voters".to_string()),
            false => membership.check_invariants(),
        };
        check.map_err(ConfigError::Membership)?;
        if !membership.voters().incoming.contains(config.id) {
            return Err(ConfigError::NotAVoter(config.id));
        }
        let mut node = RaftNode::new(config)?;
        let entry = Entry { index: 1, term: 0, payload: EntryPayload::membership(&membership) };
        node.s.log.push(entry.clone());
        node.s.note_memberships_from(entry.index);
        // Committed by construction: every founding member starts with it.
        node.s.log.commit_to(1);
        Ok(node)
    }

    /// Rebuilds a node from what it had made durable. The driver must already
    /// have restored its state machine from `durable.snapshot`, if any: the
    /// node treats the snapshot as applied and hands out only later entries.
    pub fn restart(config: Config, durable: DurableState) -> Result<RaftNode, RestartError> {
        config.validate().map_err(RestartError::Config)?;
        let (snapshot_index, snapshot_term) =
            durable.snapshot.as_ref().map_or((0, 0), |s| (s.meta.index, s.meta.term));
        let last = durable.entries.last().map_or((0, 0), |e| (e.index, e.term));
        for (what, value, max) in [
            ("hard state term", durable.hard_state.term, TERM_MAX),
            ("commit index", durable.hard_state.commit, INDEX_MAX),
            ("snapshot index", snapshot_index, INDEX_MAX),
            ("snapshot term", snapshot_term, TERM_MAX),
            ("last log index", last.0, INDEX_MAX),
            ("last log term", last.1, TERM_MAX),
        ] {
            if value > max {
                return Err(RestartError::OutOfRange { what, value, max });
            }
        }
        let entries: Vec<Entry> = durable.entries.into_iter().filter(|e| e.index > snapshot_index).collect();
        let mut term = snapshot_term;
        for (expected, entry) in (snapshot_index + 1..).zip(entries.iter()) {
            if entry.index != expected {
                return Err(RestartError::Gap { expected, found: entry.index });
            }
            if entry.term < term {
                return Err(RestartError::TermRegression { index: entry.index });
            }
            term = entry.term;
        }
        if durable.hard_state.term < term {
            return Err(RestartError::TermBehindLog);
        }
        let log = RaftLog::restore(snapshot_index, snapshot_term, entries, durable.hard_state.commit);
        // The membership: the latest configuration entry in the log, else
        // the snapshot's (none: a node waiting to be added).
        let base_membership = match durable.snapshot.as_ref().map(|s| &s.meta.membership) {
            Some(m) => {
                m.check_invariants()
                    .map_err(|reason| RestartError::Membership { index: snapshot_index, reason })?;
                Membership::clone(m)
            }
            None => Membership::default(),
        };
        // (One scan, which refuses a configuration entry that does not
        // decode; `Shared::scan_membership_at` reads logs already checked.)
        let latest = (snapshot_index + 1..=log.last_index())
            .rev()
            .find_map(|i| Some((i, log.entry(i)?.payload.decode_membership()?)));
        let (membership_index, membership) = match latest {
            Some((index, Ok(m))) => (index, m),
            Some((index, Err(reason))) => return Err(RestartError::Membership { index, reason }),
            None => (snapshot_index, base_membership.clone()),
        };
        let tracker = ProgressTracker::new(
            membership,
            log.last_index() + 1,
            config.max_inflight_appends,
            config.max_inflight_bytes,
        );
        let peers = tracker.member_ids().filter(|&id| id != config.id).collect();
        let mut rng = Rng::for_node(config.seed, config.id);
        let election_timeout =
            rng.range(config.election_timeout_ticks_min, config.election_timeout_ticks_max);
        let hard_state = HardState { commit: log.commit(), ..durable.hard_state };
        let s = Shared {
            id: config.id,
            tracker,
            peers,
            term: hard_state.term,
            vote: hard_state.vote,
            leader: None,
            log,
            snapshot: durable.snapshot,
            applied: snapshot_index,
            apply_emitted: snapshot_index,
            snapshot_to_apply: None,
            incoming_snapshot: None,
            snapshot_to_check: None,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            election_timeout,
            rng,
            persisted_hard_state: hard_state,
            snapshot_to_persist: None,
            next_persist_id: 1,
            persists_inflight: VecDeque::new(),
            msgs_after_persist: VecDeque::new(),
            actions: Vec::new(),
            counters: Counters::default(),
            own_vote_durable: None,
            rewrite: None,
            membership_index,
            base_membership,
            config,
        };
        Ok(RaftNode { s, role: RoleState::Follower })
    }

    /// One logical clock tick. Followers and candidates count towards an
    /// election; leaders towards a heartbeat and a check-quorum period.
    pub fn tick(&mut self) {
        self.s.election_elapsed = self.s.election_elapsed.saturating_add(1);
        if let RoleState::Leader(leader) = &mut self.role {
            if !leader.tick(&mut self.s) {
                let term = self.s.term;
                self.become_follower(term, None);
            }
        } else if self.s.election_elapsed >= self.s.election_timeout && self.s.may_campaign() {
            self.s.election_elapsed = 0;
            self.start_election(false);
        }
        // (A learner's timer runs on past its timeout without campaigning,
        // so that it leaves its leader lease and answers a candidate that
        // knows it to be a voter already: etcd's campaign_learner_must_vote.)
    }

    /// Starts an election now, as if the election timer had fired. With
    /// PreVote on, a PreVote round comes first.
    pub fn campaign(&mut self) {
        if !matches!(self.role, RoleState::Leader(_)) {
            self.start_election(false);
        }
    }

    /// A message from a peer. Messages from unknown nodes, for another node,
    /// from stale terms or that make no sense now are counted and ignored;
    /// nothing a peer sends makes this panic.
    pub fn step(&mut self, m: Message) {
        // Requests may come from a node this one does not know yet (a
        // leader or candidate added by a configuration not yet in this
        // log); answers only from members, the only ones asked.
        let request = matches!(
            m.body,
            MessageBody::VoteRequest { .. }
                | MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Snapshot { .. }
                | MessageBody::TimeoutNow
        );
        if m.to != self.s.id || m.from == self.s.id || (!request && !self.s.tracker.is_member(m.from)) {
            self.s.counters.dropped_unknown_peer += 1;
            return;
        }
        if !m.within_bounds() {
            self.s.counters.dropped_out_of_range += 1;
            return;
        }
        if m.term > self.s.term {
            match m.body {
                // A transfer vote request skips the lease only for the term
                // right after the leader's own, the only one a TimeoutNow
                // from that leader produces: no peer can jump the cluster to
                // an arbitrary term by setting the flag.
                MessageBody::VoteRequest { transfer: true, .. }
                    if self.s.in_leader_lease() && m.term != self.s.term + 1 =>
                {
                    self.s.counters.dropped_transfer += 1;
                    return;
                }
                MessageBody::VoteRequest { transfer, .. } if !transfer && self.s.in_leader_lease() => {
                    // A node that heard from a leader within the minimum election
                    // timeout ignores vote requests: the leader is probably alive and
                    // the candidate is partitioned or disruptive (dissertation §4.2.3).
                    self.s.counters.dropped_in_lease += 1;
                    return;
                }
                // Never change term for a PreVote, nor for a granted PreVote
                // answer, which carries the term the candidate *would* use.
                MessageBody::VoteRequest { pre_vote: true, .. } => {}
                MessageBody::VoteResponse { pre_vote: true, granted: true } => {}
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::Snapshot { .. } => {
                    self.become_follower(m.term, Some(m.from));
                }
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.s.term {
            self.s.counters.dropped_stale_term += 1;
            match m.body {
                // A stale leader must learn the newer term, or it would keep
                // sending forever (with PreVote/CheckQuorum nobody else raises
                // its term to tell it).
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::Snapshot { .. } => {
                    self.s.send(m.from, MessageBody::HeartbeatResponse { read_round: 0 });
                }
                MessageBody::VoteRequest { pre_vote: true, .. } => {
                    self.s.send(m.from, MessageBody::VoteResponse { pre_vote: true, granted: false });
                }
                _ => {}
            }
            return;
        }

        match m.body {
            MessageBody::VoteRequest { pre_vote, last_log_index, last_log_term, .. } => {
                self.s.handle_vote_request(m.from, m.term, pre_vote, last_log_index, last_log_term);
            }
            body => match &mut self.role {
                RoleState::Leader(leader) => leader.step(&mut self.s, m.from, body),
                RoleState::Candidate { .. } | RoleState::PreCandidate { .. } => {
                    self.step_candidate(m.from, m.term, body)
                }
                RoleState::Follower => self.step_follower(m.from, body),
            },
        }
    }

    /// Proposes a command. On success the entry is in the leader's log (not
    /// yet durable nor committed); see [`Proposed`] for how to learn its fate.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<Proposed, ProposeError> {
        let refusal = match &self.role {
            RoleState::Leader(l) if l.transfer_target.is_some() => Some(ProposeError::TransferInProgress),
            RoleState::Leader(l) => {
                let (entries, bytes) =
                    (self.s.config.max_uncommitted_entries, self.s.config.max_uncommitted_bytes);
                let uncommitted = self.s.log.last_index() - self.s.log.commit();
                // Past either bound, refused; one entry is always let in, so a
                // command larger than the byte bound can still commit alone.
                let too_many = entries > 0 && uncommitted >= entries;
                let entry_bytes = Entry::payload_size_bytes(data.len()) as u64;
                let too_large =
                    bytes > 0 && l.uncommitted_bytes > 0 && l.uncommitted_bytes + entry_bytes > bytes;
                (too_many || too_large).then_some(ProposeError::Backpressure)
            }
            _ => Some(ProposeError::NotLeader { leader: self.s.leader }),
        };
        if let Some(error) = refusal {
            self.s.counters.proposals_refused += 1;
            return Err(error);
        }
        let index = self.s.log.last_index() + 1;
        let entry = Entry { term: self.s.term, index, payload: EntryPayload::Command(data) };
        if let RoleState::Leader(leader) = &mut self.role {
            leader.uncommitted_bytes += entry.size_bytes() as u64;
        }
        self.s.log.push(entry);
        Ok(Proposed { term: self.s.term, index })
    }

    /// Proposes a membership change (dissertation §4): any set of
    /// add-voter, add-learner, promote and remove operations. A change of
    /// one voter at most takes effect directly; a larger one enters a joint
    /// configuration (§4.3), which the leader leaves by itself once the
    /// joint entry commits. The new membership is in force on each node as
    /// soon as the entry is in its log. Refused, each with its own error:
    /// by a non-leader, during a leadership transfer, before the leader
    /// committed an entry of its term, while another change is not
    /// committed (or its joint configuration not left), and any change
    /// [`Membership::apply`] refuses.
    pub fn propose_membership(&mut self, change: &MembershipChange) -> Result<Proposed, ProposeError> {
        let RoleState::Leader(leader) = &mut self.role else {
            return Err(ProposeError::NotLeader { leader: self.s.leader });
        };
        let refusal = if leader.transfer_target.is_some() {
            Err(ProposeError::TransferInProgress)
        } else if self.s.log.term(self.s.log.commit()) != Some(self.s.term) {
            Err(ProposeError::NoCommitInTerm)
        } else if !self.s.is_voter() {
            // Removed (its next `take_actions` hands over): not its call.
            Err(ProposeError::NotLeader { leader: None })
        } else if self.s.membership_index > self.s.log.commit() || self.s.tracker.membership().is_joint() {
            Err(ProposeError::MembershipChangePending { index: self.s.membership_index })
        } else {
            self.s.tracker.membership().apply(change).map_err(ProposeError::Membership)
        };
        let membership = match refusal {
            Ok(membership) => membership,
            Err(e) => {
                self.s.counters.proposals_refused += 1;
                return Err(e);
            }
        };
        let index = leader.append_membership(&mut self.s, membership);
        Ok(Proposed { term: self.s.term, index })
    }

    /// The membership in force on this node (the latest in its log), and
    /// the index of the entry that set it; when that entry is compacted
    /// away (the node restarted from, or installed, a snapshot since), the
    /// snapshot's index, which is where the membership is known from.
    pub fn membership(&self) -> (&Membership, Index) {
        (self.s.tracker.membership(), self.s.membership_index)
    }

    /// Asks for a linearizable read point (ReadIndex, dissertation §6.4). The
    /// answer comes later as [`Action::ReadReady`] (serve the read once the
    /// state machine applied `index`) or [`Action::ReadFailed`]. Reads that
    /// arrive together share one heartbeat round.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        let committed_in_term = self.s.log.term(self.s.log.commit()) == Some(self.s.term);
        let commit = self.s.log.commit();
        let RoleState::Leader(leader) = &mut self.role else {
            return Err(ProposeError::NotLeader { leader: self.s.leader });
        };
        leader.read_index(ctx, committed_in_term, commit);
        Ok(())
    }

    /// Starts handing leadership to `to` (dissertation §3.10): proposals are
    /// refused meanwhile; once `to` holds the whole log it is told to start an
    /// election at once. Abandoned after an election timeout.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        let RoleState::Leader(leader) = &mut self.role else {
            return Err(TransferError::NotLeader { leader: self.s.leader });
        };
        if to == self.s.id || !self.s.tracker.is_voter(to) {
            return Err(TransferError::InvalidTarget(to));
        }
        self.s.election_elapsed = 0;
        leader.transfer_target = Some(to);
        let last = self.s.log.last_index();
        if self.s.tracker.get(to).is_some_and(|p| p.match_index == last) {
            self.s.send(to, MessageBody::TimeoutNow);
        } else {
            self.s.send_append(to, false);
        }
        Ok(())
    }

    /// The driver checked the snapshot of [`Action::CheckSnapshot`] and it is
    /// good: the node installs it (it replaces the log, is persisted, then
    /// applied) and acknowledges it to the leader once durable. A snapshot
    /// that is no longer the one awaited, or already covered by the commit
    /// index, is ignored.
    pub fn install_snapshot(&mut self, snapshot: Snapshot) {
        let Some((from, meta)) = self.s.snapshot_to_check.take_if(|(_, m)| *m == snapshot.meta) else {
            self.s.counters.dropped_unexpected += 1;
            return;
        };
        // Only a follower still following the leader that sent it, whose
        // log does not already hold the snapshot's last entry, installs it.
        let following = matches!(self.role, RoleState::Follower) && self.s.leader == Some(from);
        if !following || meta.index <= self.s.log.commit() || self.s.log.term(meta.index) == Some(meta.term) {
            return;
        }
        self.s.log.reset_to_snapshot(meta.index, meta.term);
        // The snapshot's membership replaces this node's (it was checked
        // when the last chunk arrived).
        self.s.base_membership = Membership::clone(&meta.membership);
        self.s.membership_index = meta.index;
        self.s.set_membership(Membership::clone(&meta.membership));
        self.s.snapshot = Some(snapshot.clone());
        self.s.snapshot_to_persist = Some(snapshot);
        self.s.send_after_persist_to(
            from,
            MessageBody::AppendResponse(AppendResponse::Accepted { match_index: meta.index }),
        );
    }

    /// The driver checked the snapshot at `index` of [`Action::CheckSnapshot`]
    /// and it is bad: it is dropped and counted, and the node keeps its log.
    /// Nothing is answered: the leader sends it again from the start at its
    /// heartbeat pace (a snapshot damaged on the way gets another chance,
    /// without a hot loop).
    pub fn reject_snapshot(&mut self, index: Index) {
        if self.s.snapshot_to_check.take_if(|(_, m)| m.index == index).is_none() {
            self.s.counters.dropped_unexpected += 1;
            return;
        }
        self.s.counters.snapshots_rejected += 1;
    }

    /// The driver made persist batch `id` durable, and with it every earlier
    /// batch. `id` must be one the node handed out.
    pub fn persisted(&mut self, id: u64) {
        assert!(
            id < self.s.next_persist_id,
            "persisted({id}) but only {} batches were issued",
            self.s.next_persist_id - 1
        );
        while let Some(batch) = self.s.persists_inflight.front().copied() {
            if batch.id > id {
                break;
            }
            self.s.persists_inflight.pop_front();
            if let Some(index) = batch.snapshot_index {
                self.s.log.snapshot_stable(index);
                if let Some(snapshot) = &self.s.snapshot {
                    if snapshot.meta.index == index && self.s.apply_emitted < index {
                        self.s.snapshot_to_apply = Some(snapshot.clone());
                    }
                }
            }
            match (batch.last_entry, self.s.rewrite) {
                (Some((index, _)), Some((first, truncated))) if batch.id < first => {
                    self.s.log.stable_below(index, truncated)
                }
                (Some((index, term)), _) => self.s.log.stable_to(index, term),
                (None, _) => {}
            }
            if self.s.rewrite.is_some_and(|(first, _)| batch.id >= first) {
                self.s.rewrite = None;
            }
        }
        while self.s.msgs_after_persist.front().is_some_and(|(after, _)| *after <= id) {
            let (_, m) = self.s.msgs_after_persist.pop_front().expect("checked non-empty");
            self.s.deliver_durable(m);
        }
        self.count_own_vote();
        if let RoleState::Leader(leader) = &mut self.role {
            // The leader acknowledges its own durable log like anyone's.
            // (A leader removed by the entry it is committing is no longer
            // a member: nothing of its own to count.)
            let (me, stable) = (self.s.id, self.s.log.stable());
            if let Some(progress) = self.s.tracker.get_mut(me) {
                progress.acknowledge(stable);
            }
            leader.maybe_commit(&mut self.s);
        }
    }

    /// The driver applied every entry handed out up to `index`.
    pub fn applied(&mut self, index: Index) {
        assert!(
            index <= self.s.apply_emitted,
            "applied({index}) beyond the entries handed out ({})",
            self.s.apply_emitted
        );
        self.s.applied = self.s.applied.max(index);
    }

    /// The driver serialized its state machine at `index` (at most what it has
    /// applied) into `data_bytes` bytes it keeps (a file) and can read ranges
    /// of for [`Action::SendSnapshotChunk`]. The node keeps the snapshot's
    /// metadata to send it to lagging followers and
    /// drops the log up to `index`; the driver may then delete its durable
    /// entries up to `index`.
    pub fn snapshot_taken(&mut self, index: Index, data_bytes: u64) -> Result<(), SnapshotError> {
        if index > self.s.applied {
            return Err(SnapshotError::NotApplied { index, applied: self.s.applied });
        }
        if index <= self.s.log.snapshot_index() {
            return Err(SnapshotError::Stale { index, snapshot_index: self.s.log.snapshot_index() });
        }
        let term = self.s.log.term(index).expect("applied entries after the snapshot are in the log");
        // The membership at `index`, which a later configuration entry may
        // have replaced since: it becomes the base once the log is compacted.
        let (_, membership) = self.s.membership_at(index);
        if membership.voters().incoming.is_empty() {
            return Err(SnapshotError::MembershipUnknown { index });
        }
        self.s.log.compact_to(index);
        self.s.base_membership = membership.clone();
        self.s.snapshot =
            Some(Snapshot { meta: SnapshotMeta { index, term, membership: membership.into() }, data_bytes });
        Ok(())
    }

    /// The metadata a snapshot of the state machine at `index` must carry
    /// (its term and the membership there), for a driver that serializes it
    /// in the background and hands it over later with
    /// [`RaftNode::snapshot_taken`]; `None` unless `index` is applied and
    /// still in the log.
    pub fn snapshot_meta_at(&self, index: Index) -> Option<SnapshotMeta> {
        if index > self.s.applied || index <= self.s.log.snapshot_index() {
            return None;
        }
        let term = self.s.log.term(index)?;
        let membership = self.s.membership_at(index).1;
        (!membership.voters().incoming.is_empty()).then_some(SnapshotMeta {
            index,
            term,
            membership: membership.into(),
        })
    }

    /// Drains the actions produced so far, in the order they must be executed.
    /// Call it after every batch of inputs: it is also where a leader sends
    /// the entries proposed since the last call (one append per follower for
    /// all of them) and where new state is gathered into one [`PersistBatch`](crate::PersistBatch).
    #[must_use = "actions must be executed by the driver"]
    pub fn take_actions(&mut self) -> Vec<Action> {
        if let RoleState::Leader(leader) = &mut self.role {
            // (Checked here, inline: this runs at every call.)
            let settled = leader.membership_settled == Some(self.s.membership_index);
            if !settled && leader.after_commit(&mut self.s) {
                let term = self.s.term;
                self.become_follower(term, None);
            }
        }
        if let RoleState::Leader(leader) = &mut self.role {
            leader.start_wanted_read_round(&mut self.s);
            for i in 0..self.s.peers.len() {
                self.s.send_append(self.s.peers[i], false);
            }
        }
        self.s.gather_persist_batch();
        self.s.gather_applies();
        std::mem::take(&mut self.s.actions)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.s.id
    }

    /// The current role.
    pub fn role(&self) -> Role {
        match self.role {
            RoleState::Follower => Role::Follower,
            RoleState::PreCandidate { .. } => Role::PreCandidate,
            RoleState::Candidate { .. } => Role::Candidate,
            RoleState::Leader(_) => Role::Leader,
        }
    }

    /// True if this node is the leader.
    pub fn is_leader(&self) -> bool {
        matches!(self.role, RoleState::Leader(_))
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.s.term
    }

    /// The leader of the current term, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.s.leader
    }

    /// Term, vote and commit index as they are now (not necessarily durable).
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.s.term, vote: self.s.vote, commit: self.s.log.commit() }
    }

    /// Highest index known committed.
    pub fn commit_index(&self) -> Index {
        self.s.log.commit()
    }

    /// Highest index the driver reported applied.
    pub fn applied_index(&self) -> Index {
        self.s.applied
    }

    /// First index held in the log.
    pub fn first_index(&self) -> Index {
        self.s.log.first_index()
    }

    /// Last index held in the log.
    pub fn last_index(&self) -> Index {
        self.s.log.last_index()
    }

    /// The log entry at `index`, if held (not compacted, not past the end).
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.s.log.entry(index)
    }

    /// The term at `index`, if known (held, or the snapshot boundary).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.s.log.term(index)
    }

    /// Metadata of the latest snapshot (index 0 if there is none).
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.s.snapshot.as_ref().map(|s| s.meta.clone()).unwrap_or_default()
    }

    /// The counters of ignored and refused input (as in [`RaftNode::status`],
    /// without building the rest of it).
    pub fn counters(&self) -> Counters {
        self.s.counters
    }

    /// A view of the node for status pages and tests.
    pub fn status(&self) -> Status {
        let progress = match &self.role {
            RoleState::Leader(_) => {
                self.s.tracker.iter().filter(|&(id, _)| id != self.s.id).map(|(id, p)| p.status(id)).collect()
            }
            _ => Vec::new(),
        };
        Status {
            id: self.s.id,
            role: self.role(),
            term: self.s.term,
            leader: self.s.leader,
            vote: self.s.vote,
            commit: self.s.log.commit(),
            applied: self.s.applied,
            first_index: self.s.log.first_index(),
            last_index: self.s.log.last_index(),
            stable_index: self.s.log.stable(),
            snapshot_index: self.s.log.snapshot_index(),
            progress,
            membership: self.s.tracker.membership().clone(),
            membership_index: self.s.membership_index,
            counters: self.s.counters,
        }
    }

    /// Checks the node's internal invariants; the simulator calls it after
    /// every step. Returns a description of the first one broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.s.log.check_invariants()?;
        if self.s.applied > self.s.apply_emitted
            || self.s.apply_emitted > self.s.log.commit().max(self.s.log.snapshot_index())
        {
            return Err(format!(
                "applied {} <= handed out {} <= commit {} broken",
                self.s.applied,
                self.s.apply_emitted,
                self.s.log.commit()
            ));
        }
        if self.s.log.last_term() > self.s.term {
            return Err(format!(
                "last log term {} beyond current term {}",
                self.s.log.last_term(),
                self.s.term
            ));
        }
        match &self.role {
            RoleState::Leader(_) => {
                if self.s.leader != Some(self.s.id) || self.s.vote != Some(self.s.id) {
                    return Err(format!(
                        "leader {} has leader {:?} vote {:?}",
                        self.s.id, self.s.leader, self.s.vote
                    ));
                }
                for (id, p) in self.s.tracker.iter() {
                    if p.match_index >= p.next_index || p.match_index > self.s.log.last_index() {
                        return Err(format!(
                            "peer {id}: match {} next {} last {}",
                            p.match_index,
                            p.next_index,
                            self.s.log.last_index()
                        ));
                    }
                }
            }
            RoleState::Candidate { .. } if self.s.vote != Some(self.s.id) => {
                return Err(format!("candidate {} voted for {:?}", self.s.id, self.s.vote));
            }
            _ => {}
        }
        Ok(())
    }

    /// Counts this node's own vote once it is durable, if it is still a
    /// candidate of that term.
    fn count_own_vote(&mut self) {
        let Some(term) = self.s.own_vote_durable.take() else { return };
        if term == self.s.term {
            if let RoleState::Candidate { votes } = &mut self.role {
                votes.insert(self.s.id, true);
                self.tally_votes(false);
            }
        }
    }
}
