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

use std::collections::{BTreeMap, VecDeque};

use crate::action::{Action, PersistBatch};
use crate::config::Config;
use crate::error::{ConfigError, ProposeError, RestartError, SnapshotError, TransferError};
use crate::log::{AppendCheck, RaftLog};
use crate::membership::Membership;
use crate::message::{AppendResponse, Message, MessageBody};
use crate::progress::Mode;
use crate::quorum::VoteResult;
use crate::rng::Rng;
use crate::status::{Counters, Status};
use crate::tracker::ProgressTracker;
use crate::types::{
    DurableState, Entry, EntryPayload, HardState, Index, NodeId, Role, Snapshot, SnapshotMeta, Term,
    INDEX_MAX, TERM_MAX,
};

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

/// What only a leader has (its followers' progress is in the tracker).
#[derive(Debug)]
struct LeaderState {
    /// The latest ReadIndex round started (heartbeats carry it).
    read_round: u64,
    /// Reads queued since the last round started; they join the next round.
    read_round_wanted: bool,
    /// Reads waiting for a heartbeat round to confirm leadership, oldest first.
    pending_reads: VecDeque<PendingRead>,
    /// Reads that arrived before the leader committed an entry of its term.
    reads_before_commit: Vec<u64>,
    /// An ongoing leadership transfer.
    transfer_target: Option<NodeId>,
    /// Bytes ([`Entry::size_bytes`]) of the entries after the commit index.
    uncommitted_bytes: u64,
}

#[derive(Clone, Copy, Debug)]
struct PendingRead {
    ctx: u64,
    index: Index,
    round: u64,
}

/// Role-specific state: a follower cannot touch leader state, by construction.
#[derive(Debug)]
enum RoleState {
    Follower,
    PreCandidate { votes: BTreeMap<NodeId, bool> },
    Candidate { votes: BTreeMap<NodeId, bool> },
    Leader(Box<LeaderState>),
}

/// A persist batch handed to the driver and not yet reported durable.
#[derive(Clone, Copy, Debug)]
struct InflightPersist {
    id: u64,
    /// The last entry written by the batch, if it wrote entries.
    last_entry: Option<(Index, Term)>,
    /// The snapshot index, if the batch wrote a snapshot.
    snapshot_index: Option<Index>,
}

/// A snapshot being received in chunks.
#[derive(Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// One Raft node: feed it inputs, drain its actions. See the crate docs for the
/// driver loop and the safety contract.
#[derive(Debug)]
pub struct RaftNode {
    config: Config,
    id: NodeId,
    /// The membership and every member's progress (this node's included).
    tracker: ProgressTracker,
    /// Every member but this node, in order: whom to send to.
    peers: Vec<NodeId>,

    term: Term,
    vote: Option<NodeId>,
    leader: Option<NodeId>,
    role: RoleState,
    log: RaftLog,

    /// The latest snapshot (taken here or installed from a leader), kept to
    /// send to followers that fell behind the log's first index.
    snapshot: Option<Snapshot>,
    /// Highest index the driver reported applied.
    applied: Index,
    /// Highest index handed out in `Apply`/`ApplySnapshot`.
    apply_emitted: Index,
    /// An installed snapshot, durable, waiting to be handed out for apply.
    snapshot_to_apply: Option<Snapshot>,
    incoming_snapshot: Option<IncomingSnapshot>,
    /// A snapshot received in full, handed to the driver to check
    /// ([`Action::CheckSnapshot`]): who sent it, and what it is.
    snapshot_to_check: Option<(NodeId, SnapshotMeta)>,

    election_elapsed: u32,
    heartbeat_elapsed: u32,
    election_timeout: u32,
    rng: Rng,

    /// The hard state last handed to the driver.
    persisted_hard_state: HardState,
    /// An installed snapshot not yet handed to the driver.
    snapshot_to_persist: Option<Snapshot>,
    next_persist_id: u64,
    persists_inflight: VecDeque<InflightPersist>,
    /// Messages waiting for a persist batch (by id) to become durable.
    msgs_after_persist: VecDeque<(u64, Message)>,

    actions: Vec<Action>,
    counters: Counters,
}

impl RaftNode {
    /// A fresh node with an empty log, a follower in term 0.
    pub fn new(config: Config) -> Result<RaftNode, ConfigError> {
        RaftNode::restart(config, DurableState::default()).map_err(|e| match e {
            RestartError::Config(c) => c,
            other => unreachable!("empty durable state is always valid: {other}"),
        })
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
        let membership = Membership::new_voters(config.voters.iter().map(|&id| (id, Vec::new())))
            .expect("Config::validate checked the voters");
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
        Ok(RaftNode {
            id: config.id,
            tracker,
            peers,
            term: hard_state.term,
            vote: hard_state.vote,
            leader: None,
            role: RoleState::Follower,
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
            config,
        })
    }

    // ---------------------------------------------------------------- inputs

    /// One logical clock tick. Followers and candidates count towards an
    /// election; leaders towards a heartbeat and a check-quorum period.
    pub fn tick(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if matches!(self.role, RoleState::Leader(_)) {
            self.tick_leader();
        } else if self.election_elapsed >= self.election_timeout {
            self.election_elapsed = 0;
            self.start_election(false);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        if self.election_elapsed >= self.config.election_timeout_ticks_min {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                // §6.2 of the dissertation: a leader that cannot reach a majority
                // steps down so that clients look for the real leader.
                self.become_follower(self.term, None);
                return;
            }
            self.clear_recently_active();
            let leader = self.leader_state_mut();
            // A transfer that did not finish within an election timeout is abandoned.
            leader.transfer_target = None;
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
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
        if m.to != self.id || m.from == self.id || !self.tracker.is_member(m.from) {
            self.counters.dropped_unknown_peer += 1;
            return;
        }
        if !m.within_bounds() {
            self.counters.dropped_out_of_range += 1;
            return;
        }
        if m.term > self.term {
            match m.body {
                // A transfer vote request skips the lease only for the term
                // right after the leader's own, the only one a TimeoutNow
                // from that leader produces: no peer can jump the cluster to
                // an arbitrary term by setting the flag.
                MessageBody::VoteRequest { transfer: true, .. }
                    if self.in_leader_lease() && m.term != self.term + 1 =>
                {
                    self.counters.dropped_transfer += 1;
                    return;
                }
                MessageBody::VoteRequest { transfer, .. } if !transfer && self.in_leader_lease() => {
                    // A node that heard from a leader within the minimum election
                    // timeout ignores vote requests: the leader is probably alive and
                    // the candidate is partitioned or disruptive (dissertation §4.2.3).
                    self.counters.dropped_in_lease += 1;
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
        } else if m.term < self.term {
            self.counters.dropped_stale_term += 1;
            match m.body {
                // A stale leader must learn the newer term, or it would keep
                // sending forever (with PreVote/CheckQuorum nobody else raises
                // its term to tell it).
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::Snapshot { .. } => {
                    self.send(m.from, MessageBody::HeartbeatResponse { read_round: 0 });
                }
                MessageBody::VoteRequest { pre_vote: true, .. } => {
                    self.send(m.from, MessageBody::VoteResponse { pre_vote: true, granted: false });
                }
                _ => {}
            }
            return;
        }

        match m.body {
            MessageBody::VoteRequest { pre_vote, last_log_index, last_log_term, .. } => {
                self.handle_vote_request(m.from, m.term, pre_vote, last_log_index, last_log_term);
            }
            body => match self.role {
                RoleState::Leader(_) => self.step_leader(m.from, body),
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
                    (self.config.max_uncommitted_entries, self.config.max_uncommitted_bytes);
                let uncommitted = self.log.last_index() - self.log.commit();
                // Past either bound, refused; one entry is always let in, so a
                // command larger than the byte bound can still commit alone.
                let too_many = entries > 0 && uncommitted >= entries;
                let entry_bytes = Entry::payload_size_bytes(data.len()) as u64;
                let too_large =
                    bytes > 0 && l.uncommitted_bytes > 0 && l.uncommitted_bytes + entry_bytes > bytes;
                (too_many || too_large).then_some(ProposeError::Backpressure)
            }
            _ => Some(ProposeError::NotLeader { leader: self.leader }),
        };
        if let Some(error) = refusal {
            self.counters.proposals_refused += 1;
            return Err(error);
        }
        let index = self.log.last_index() + 1;
        let entry = Entry { term: self.term, index, payload: EntryPayload::Command(data) };
        self.leader_state_mut().uncommitted_bytes += entry.size_bytes() as u64;
        self.log.push(entry);
        Ok(Proposed { term: self.term, index })
    }

    /// Asks for a linearizable read point (ReadIndex, dissertation §6.4). The
    /// answer comes later as [`Action::ReadReady`] (serve the read once the
    /// state machine applied `index`) or [`Action::ReadFailed`]. Reads that
    /// arrive together share one heartbeat round.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        let committed_in_term = self.log.term(self.log.commit()) == Some(self.term);
        let commit = self.log.commit();
        let RoleState::Leader(leader) = &mut self.role else {
            return Err(ProposeError::NotLeader { leader: self.leader });
        };
        if !committed_in_term {
            // The leader does not know the commit index of earlier terms until
            // it commits an entry of its own (§6.4 step 1).
            leader.reads_before_commit.push(ctx);
        } else {
            leader.pending_reads.push_back(PendingRead { ctx, index: commit, round: leader.read_round + 1 });
            leader.read_round_wanted = true;
        }
        Ok(())
    }

    /// Starts handing leadership to `to` (dissertation §3.10): proposals are
    /// refused meanwhile; once `to` holds the whole log it is told to start an
    /// election at once. Abandoned after an election timeout.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        if !matches!(self.role, RoleState::Leader(_)) {
            return Err(TransferError::NotLeader { leader: self.leader });
        }
        if to == self.id || !self.tracker.is_voter(to) {
            return Err(TransferError::InvalidTarget(to));
        }
        self.election_elapsed = 0;
        self.leader_state_mut().transfer_target = Some(to);
        let last = self.log.last_index();
        if self.tracker.get(to).is_some_and(|p| p.match_index == last) {
            self.send(to, MessageBody::TimeoutNow);
        } else {
            self.send_append(to, false);
        }
        Ok(())
    }

    /// The driver checked the snapshot of [`Action::CheckSnapshot`] and it is
    /// good: the node installs it (it replaces the log, is persisted, then
    /// applied) and acknowledges it to the leader once durable. A snapshot
    /// that is no longer the one awaited, or already covered by the commit
    /// index, is ignored.
    pub fn install_snapshot(&mut self, snapshot: Snapshot) {
        let Some((from, meta)) = self.snapshot_to_check.take_if(|(_, m)| *m == snapshot.meta) else {
            self.counters.dropped_unexpected += 1;
            return;
        };
        // Only a follower still following the leader that sent it, whose
        // log does not already hold the snapshot's last entry, installs it.
        let following = matches!(self.role, RoleState::Follower) && self.leader == Some(from);
        if !following || meta.index <= self.log.commit() || self.log.term(meta.index) == Some(meta.term) {
            return;
        }
        self.log.reset_to_snapshot(meta.index, meta.term);
        self.snapshot = Some(snapshot.clone());
        self.snapshot_to_persist = Some(snapshot);
        self.send_after_persist_to(
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
        if self.snapshot_to_check.take_if(|(_, m)| m.index == index).is_none() {
            self.counters.dropped_unexpected += 1;
            return;
        }
        self.counters.snapshots_rejected += 1;
    }

    /// The driver made persist batch `id` durable, and with it every earlier
    /// batch. `id` must be one the node handed out.
    pub fn persisted(&mut self, id: u64) {
        assert!(
            id < self.next_persist_id,
            "persisted({id}) but only {} batches were issued",
            self.next_persist_id - 1
        );
        while let Some(batch) = self.persists_inflight.front().copied() {
            if batch.id > id {
                break;
            }
            self.persists_inflight.pop_front();
            if let Some(index) = batch.snapshot_index {
                self.log.snapshot_stable(index);
                if let Some(snapshot) = &self.snapshot {
                    if snapshot.meta.index == index && self.apply_emitted < index {
                        self.snapshot_to_apply = Some(snapshot.clone());
                    }
                }
            }
            if let Some((index, term)) = batch.last_entry {
                self.log.stable_to(index, term);
            }
        }
        while self.msgs_after_persist.front().is_some_and(|(after, _)| *after <= id) {
            let (_, m) = self.msgs_after_persist.pop_front().expect("checked non-empty");
            self.deliver_durable(m);
        }
        if matches!(self.role, RoleState::Leader(_)) {
            // The leader acknowledges its own durable log like anyone's.
            let (me, stable) = (self.id, self.log.stable());
            self.tracker.get_mut(me).expect("a leader is a member").acknowledge(stable);
            self.maybe_commit();
        }
    }

    /// The driver applied every entry handed out up to `index`.
    pub fn applied(&mut self, index: Index) {
        assert!(
            index <= self.apply_emitted,
            "applied({index}) beyond the entries handed out ({})",
            self.apply_emitted
        );
        self.applied = self.applied.max(index);
    }

    /// The driver serialized its state machine at `index` (at most what it has
    /// applied). The node keeps the snapshot to send to lagging followers and
    /// drops the log up to `index`; the driver may then delete its durable
    /// entries up to `index`.
    pub fn snapshot_taken(
        &mut self,
        index: Index,
        data: impl Into<bytes::Bytes>,
    ) -> Result<(), SnapshotError> {
        if index > self.applied {
            return Err(SnapshotError::NotApplied { index, applied: self.applied });
        }
        if index <= self.log.snapshot_index() {
            return Err(SnapshotError::Stale { index, snapshot_index: self.log.snapshot_index() });
        }
        let term = self.log.term(index).expect("applied entries after the snapshot are in the log");
        self.log.compact_to(index);
        self.snapshot = Some(Snapshot {
            meta: SnapshotMeta { index, term, voters: self.voter_list() },
            data: data.into(),
        });
        Ok(())
    }

    /// The metadata a snapshot of the state machine at `index` must carry
    /// (its term and the membership there), for a driver that serializes it
    /// in the background and hands it over later with
    /// [`RaftNode::snapshot_taken`]; `None` unless `index` is applied and
    /// still in the log.
    pub fn snapshot_meta_at(&self, index: Index) -> Option<SnapshotMeta> {
        if index > self.applied || index <= self.log.snapshot_index() {
            return None;
        }
        let term = self.log.term(index)?;
        Some(SnapshotMeta { index, term, voters: self.voter_list() })
    }

    /// Drains the actions produced so far, in the order they must be executed.
    /// Call it after every batch of inputs: it is also where a leader sends
    /// the entries proposed since the last call (one append per follower for
    /// all of them) and where new state is gathered into one [`PersistBatch`].
    #[must_use = "actions must be executed by the driver"]
    pub fn take_actions(&mut self) -> Vec<Action> {
        if matches!(self.role, RoleState::Leader(_)) {
            if self.leader_state().read_round_wanted {
                let leader = self.leader_state_mut();
                leader.read_round += 1;
                leader.read_round_wanted = false;
                let round = leader.read_round;
                // The leader confirms its own round as it starts it.
                let id = self.id;
                self.tracker.get_mut(id).expect("a leader is a member").read_round = round;
                self.broadcast_heartbeat();
            }
            for i in 0..self.peers.len() {
                self.send_append(self.peers[i], false);
            }
        }
        self.gather_persist_batch();
        self.gather_applies();
        std::mem::take(&mut self.actions)
    }

    fn gather_persist_batch(&mut self) {
        let entries = self.log.take_unpersisted();
        let snapshot = self.snapshot_to_persist.take();
        let hard_state = self.hard_state();
        let vote_changed = (hard_state.term, hard_state.vote)
            != (self.persisted_hard_state.term, self.persisted_hard_state.vote);
        if entries.is_empty() && snapshot.is_none() && !vote_changed {
            // The commit index alone is only a hint: it rides along with the
            // next batch instead of costing an fsync of its own.
            return;
        }
        let id = self.next_persist_id;
        self.next_persist_id += 1;
        self.persists_inflight.push_back(InflightPersist {
            id,
            last_entry: entries.last().map(|e| (e.index, e.term)),
            snapshot_index: snapshot.as_ref().map(|s| s.meta.index),
        });
        let hard_state = (hard_state != self.persisted_hard_state).then_some(hard_state);
        if let Some(hs) = hard_state {
            self.persisted_hard_state = hs;
        }
        self.actions.push(Action::Persist(PersistBatch { id, snapshot, entries, hard_state }));
    }

    fn gather_applies(&mut self) {
        if let Some(snapshot) = self.snapshot_to_apply.take() {
            self.apply_emitted = snapshot.meta.index;
            self.actions.push(Action::ApplySnapshot(snapshot));
        }
        if self.apply_emitted < self.log.snapshot_index() {
            // An installed snapshot is not yet durable: nothing after it may
            // be applied before it.
            return;
        }
        // Apply only what is committed *and* durable here, so that a restart
        // never finds the state machine ahead of the log. (Applying committed
        // entries before the local copy is durable would be safe too, since
        // committed means durable on a majority; measured, it did not make
        // W1 faster, so the simpler invariant stays.)
        let upto = self.log.commit().min(self.log.stable());
        if upto > self.apply_emitted {
            let entries = self.log.slice(self.apply_emitted + 1, upto, usize::MAX);
            self.apply_emitted = upto;
            self.actions.push(Action::Apply(entries));
        }
    }

    // ---------------------------------------------------------------- getters

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
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
        self.term
    }

    /// The leader of the current term, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Term, vote and commit index as they are now (not necessarily durable).
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.commit() }
    }

    /// Highest index known committed.
    pub fn commit_index(&self) -> Index {
        self.log.commit()
    }

    /// Highest index the driver reported applied.
    pub fn applied_index(&self) -> Index {
        self.applied
    }

    /// First index held in the log.
    pub fn first_index(&self) -> Index {
        self.log.first_index()
    }

    /// Last index held in the log.
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }

    /// The log entry at `index`, if held (not compacted, not past the end).
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// The term at `index`, if known (held, or the snapshot boundary).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }

    /// Metadata of the latest snapshot (index 0 if there is none).
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot.as_ref().map(|s| s.meta.clone()).unwrap_or_default()
    }

    /// The counters of ignored and refused input (as in [`RaftNode::status`],
    /// without building the rest of it).
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// A view of the node for status pages and tests.
    pub fn status(&self) -> Status {
        let progress = match &self.role {
            RoleState::Leader(_) => {
                self.tracker.iter().filter(|&(id, _)| id != self.id).map(|(id, p)| p.status(id)).collect()
            }
            _ => Vec::new(),
        };
        Status {
            id: self.id,
            role: self.role(),
            term: self.term,
            leader: self.leader,
            vote: self.vote,
            commit: self.log.commit(),
            applied: self.applied,
            first_index: self.log.first_index(),
            last_index: self.log.last_index(),
            stable_index: self.log.stable(),
            snapshot_index: self.log.snapshot_index(),
            progress,
            counters: self.counters,
        }
    }

    /// Checks the node's internal invariants; the simulator calls it after
    /// every step. Returns a description of the first one broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.log.check_invariants()?;
        if self.applied > self.apply_emitted
            || self.apply_emitted > self.log.commit().max(self.log.snapshot_index())
        {
            return Err(format!(
                "applied {} <= handed out {} <= commit {} broken",
                self.applied,
                self.apply_emitted,
                self.log.commit()
            ));
        }
        if self.log.last_term() > self.term {
            return Err(format!("last log term {} beyond current term {}", self.log.last_term(), self.term));
        }
        match &self.role {
            RoleState::Leader(_) => {
                if self.leader != Some(self.id) || self.vote != Some(self.id) {
                    return Err(format!(
                        "leader {} has leader {:?} vote {:?}",
                        self.id, self.leader, self.vote
                    ));
                }
                for (id, p) in self.tracker.iter() {
                    if p.match_index >= p.next_index || p.match_index > self.log.last_index() {
                        return Err(format!(
                            "peer {id}: match {} next {} last {}",
                            p.match_index,
                            p.next_index,
                            self.log.last_index()
                        ));
                    }
                }
            }
            RoleState::Candidate { .. } if self.vote != Some(self.id) => {
                return Err(format!("candidate {} voted for {:?}", self.id, self.vote));
            }
            _ => {}
        }
        Ok(())
    }

    // ---------------------------------------------------------------- roles

    fn step_follower(&mut self, from: NodeId, body: MessageBody) {
        match body {
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::Snapshot { .. } => {
                if self.leader.is_some_and(|l| l != from) {
                    // Two leaders in one term: impossible unless a peer is broken.
                    self.counters.dropped_unexpected += 1;
                    return;
                }
                self.election_elapsed = 0;
                self.leader = Some(from);
                match body {
                    MessageBody::Append { prev_log_index, prev_log_term, entries, leader_commit } => {
                        self.handle_append(from, prev_log_index, prev_log_term, entries, leader_commit)
                    }
                    MessageBody::Heartbeat { commit, read_round } => {
                        self.log.commit_to(commit.min(self.log.last_index()));
                        self.send(from, MessageBody::HeartbeatResponse { read_round });
                    }
                    MessageBody::Snapshot { meta, offset, data, done } => {
                        self.handle_snapshot(from, meta, offset, data, done)
                    }
                    _ => unreachable!(),
                }
            }
            // The leader of this term hands over: campaign at once, skipping
            // PreVote and asking voters to ignore their lease (§3.10). From
            // anyone else it would force an election per message.
            MessageBody::TimeoutNow if self.leader == Some(from) => self.start_election(true),
            MessageBody::TimeoutNow => self.counters.dropped_transfer += 1,
            _ => self.counters.dropped_unexpected += 1,
        }
    }

    fn step_candidate(&mut self, from: NodeId, term: Term, body: MessageBody) {
        match body {
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::Snapshot { .. } => {
                // A leader exists in our term (a candidate's term) or in the
                // term a pre-candidate stayed in: follow it.
                self.become_follower(term, Some(from));
                self.step_follower(from, body);
            }
            MessageBody::VoteResponse { pre_vote, granted } => {
                let pre = match &mut self.role {
                    RoleState::PreCandidate { votes } if pre_vote => {
                        votes.insert(from, granted);
                        true
                    }
                    RoleState::Candidate { votes } if !pre_vote => {
                        votes.insert(from, granted);
                        false
                    }
                    _ => {
                        self.counters.dropped_unexpected += 1;
                        return;
                    }
                };
                self.tally_votes(pre);
            }
            _ => self.counters.dropped_unexpected += 1,
        }
    }

    fn step_leader(&mut self, from: NodeId, body: MessageBody) {
        match body {
            MessageBody::AppendResponse(response) => {
                self.tracker.get_mut(from).expect("a member").recently_active = true;
                self.handle_append_response(from, response);
            }
            MessageBody::HeartbeatResponse { read_round } => {
                let current_round = self.leader_state().read_round;
                let last = self.log.last_index();
                let progress = self.tracker.get_mut(from).expect("a member");
                progress.recently_active = true;
                progress.resume();
                progress.read_round = progress.read_round.max(read_round.min(current_round));
                if progress.mode == Mode::Replicate && progress.is_paused() {
                    // Appends may have been lost: free one slot so that the next
                    // append reveals the gap (etcd does the same).
                    progress.free_oldest();
                }
                let behind = progress.match_index < last;
                if behind {
                    self.send_append(from, true);
                }
                self.release_confirmed_reads();
            }
            MessageBody::SnapshotResponse { index, next_offset } => {
                let len = self.snapshot.as_ref().map_or(0, |s| s.data.len() as u64);
                let progress = self.tracker.get_mut(from).expect("a member");
                progress.recently_active = true;
                if let Mode::Snapshot { index: sending, offset, sent, .. } = &mut progress.mode {
                    if *sending == index {
                        *offset = next_offset.min(len);
                        *sent = false;
                        self.send_append(from, false);
                        return;
                    }
                }
                self.counters.dropped_unexpected += 1;
            }
            _ => self.counters.dropped_unexpected += 1,
        }
    }

    // ---------------------------------------------------------------- elections

    fn start_election(&mut self, transfer: bool) {
        if self.config.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    fn become_pre_candidate(&mut self) {
        // No term change and no vote: a PreVote round that fails disturbs nobody.
        let mut votes = BTreeMap::new();
        votes.insert(self.id, true);
        self.role = RoleState::PreCandidate { votes };
        self.leader = None;
        self.reset_election_timer();
        self.emit_role_changed();
        let term = self.term.saturating_add(1);
        self.request_votes(term, true, false);
        self.tally_votes(true);
    }

    fn become_candidate(&mut self, transfer: bool) {
        self.snapshot_to_check = None;
        self.term = self.term.saturating_add(1);
        self.vote = Some(self.id);
        self.leader = None;
        self.role = RoleState::Candidate { votes: BTreeMap::new() };
        self.counters.elections += 1;
        self.reset_election_timer();
        self.emit_role_changed();
        // Our own vote counts once term and vote are durable.
        let own_vote = Message {
            from: self.id,
            to: self.id,
            term: self.term,
            body: MessageBody::VoteResponse { pre_vote: false, granted: true },
        };
        self.send_after_persist(own_vote);
        self.request_votes(self.term, false, transfer);
    }

    fn request_votes(&mut self, term: Term, pre_vote: bool, transfer: bool) {
        let body = MessageBody::VoteRequest {
            pre_vote,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            transfer,
        };
        for &to in &self.peers {
            if self.tracker.is_voter(to) {
                self.actions.push(Action::Send(Message { from: self.id, to, term, body: body.clone() }));
            }
        }
    }

    fn tally_votes(&mut self, pre_vote: bool) {
        let result = match &self.role {
            RoleState::PreCandidate { votes } if pre_vote => self.tracker.tally(votes),
            RoleState::Candidate { votes } if !pre_vote => self.tracker.tally(votes),
            _ => return,
        };
        match result {
            VoteResult::Pending => {}
            VoteResult::Won if pre_vote => self.become_candidate(false),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.term, None),
        }
    }

    fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        pre_vote: bool,
        last_index: Index,
        last_term: Term,
    ) {
        // We may vote for `from` if we already did in this term, or have voted
        // for nobody and know no leader; a PreVote for a future term is free.
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && term > self.term);
        let up_to_date = self.log.is_up_to_date(last_index, last_term);
        if !(can_vote && up_to_date) {
            self.send(from, MessageBody::VoteResponse { pre_vote, granted: false });
            return;
        }
        if pre_vote {
            // Granted PreVotes carry the requested term so that the
            // pre-candidate can tell them from stale answers.
            self.actions.push(Action::Send(Message {
                from: self.id,
                to: from,
                term,
                body: MessageBody::VoteResponse { pre_vote: true, granted: true },
            }));
        } else {
            self.election_elapsed = 0;
            self.vote = Some(from);
            let m = Message {
                from: self.id,
                to: from,
                term: self.term,
                body: MessageBody::VoteResponse { pre_vote: false, granted: true },
            };
            self.send_after_persist(m);
        }
    }

    fn become_leader(&mut self) {
        // Every member's progress starts over; the leader's own match is
        // what its log holds durably (acknowledged like anyone's, in
        // `persisted`, as more becomes durable).
        self.tracker.reset(self.log.last_index() + 1);
        let (id, stable) = (self.id, self.log.stable());
        self.tracker.get_mut(id).expect("a leader is a member").acknowledge(stable);
        self.clear_recently_active();
        self.role = RoleState::Leader(Box::new(LeaderState {
            read_round: 0,
            read_round_wanted: false,
            pending_reads: VecDeque::new(),
            reads_before_commit: Vec::new(),
            transfer_target: None,
            uncommitted_bytes: 0,
        }));
        self.leader = Some(self.id);
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.emit_role_changed();
        // A blank entry of the new term lets the leader commit everything
        // before it (§5.4.2) and learn the commit index for reads (§6.4).
        let index = self.log.last_index() + 1;
        self.log.push(Entry { term: self.term, index, payload: EntryPayload::Blank });
        let uncommitted = self.entry_bytes(self.log.commit() + 1, index);
        self.leader_state_mut().uncommitted_bytes = uncommitted;
        // A single voter commits as soon as the blank is durable.
        self.maybe_commit();
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if let RoleState::Leader(state) = &mut self.role {
            let pending: Vec<u64> = state
                .pending_reads
                .drain(..)
                .map(|r| r.ctx)
                .chain(state.reads_before_commit.drain(..))
                .collect();
            for ctx in pending {
                self.actions.push(Action::ReadFailed { ctx, leader });
            }
        }
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        if self.leader != leader || leader.is_none() {
            // Chunks of another leader's (or term's) snapshot never complete,
            // and one being checked is from a leader that is gone.
            self.incoming_snapshot = None;
            self.snapshot_to_check = None;
        }
        self.role = RoleState::Follower;
        self.leader = leader;
        self.reset_election_timer();
        self.emit_role_changed();
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.election_timeout =
            self.rng.range(self.config.election_timeout_ticks_min, self.config.election_timeout_ticks_max);
    }

    fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && self.leader.is_some()
            && self.election_elapsed < self.config.election_timeout_ticks_min
    }

    fn quorum_recently_active(&self) -> bool {
        self.tracker.quorum_active()
    }

    /// Starts a check-quorum period: nobody heard from yet but the leader
    /// itself (which always hears itself).
    fn clear_recently_active(&mut self) {
        for (_, progress) in self.tracker.iter_mut() {
            progress.recently_active = false;
        }
        let id = self.id;
        if let Some(progress) = self.tracker.get_mut(id) {
            progress.recently_active = true;
        }
    }

    // ---------------------------------------------------------------- replication, follower side

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    ) {
        if prev_index < self.log.commit() {
            // Everything up to our commit index already matches the leader.
            let commit = self.log.commit();
            self.send_after_persist_to(
                from,
                MessageBody::AppendResponse(AppendResponse::Accepted { match_index: commit }),
            );
            return;
        }
        if !entries_well_formed(prev_index, prev_term, self.term, &entries) {
            self.counters.dropped_unexpected += 1;
            return;
        }
        match self.log.try_append(prev_index, prev_term, &entries) {
            AppendCheck::Matched { last } => {
                self.log.commit_to(leader_commit.min(last));
                self.send_after_persist_to(
                    from,
                    MessageBody::AppendResponse(AppendResponse::Accepted { match_index: last }),
                );
            }
            AppendCheck::Mismatch { conflict_term, conflict_index } => {
                self.send(
                    from,
                    MessageBody::AppendResponse(AppendResponse::Rejected {
                        rejected_index: prev_index,
                        conflict_term,
                        conflict_index,
                    }),
                );
            }
            AppendCheck::ConflictsWithCommitted { .. } => self.counters.dropped_unexpected += 1,
        }
    }

    fn handle_snapshot(&mut self, from: NodeId, meta: SnapshotMeta, offset: u64, data: Vec<u8>, done: bool) {
        if meta.index <= self.log.commit() {
            self.incoming_snapshot = None;
            let commit = self.log.commit();
            self.send_after_persist_to(
                from,
                MessageBody::AppendResponse(AppendResponse::Accepted { match_index: commit }),
            );
            return;
        }
        if meta.term > self.term || meta.index == 0 {
            self.counters.dropped_unexpected += 1;
            return;
        }
        if offset == 0 {
            self.incoming_snapshot = Some(IncomingSnapshot { meta: meta.clone(), data: Vec::new() });
        }
        let expected = match &self.incoming_snapshot {
            Some(incoming) if incoming.meta == meta => incoming.data.len() as u64,
            _ => 0,
        };
        if offset != expected || (offset > 0 && self.incoming_snapshot.is_none()) {
            self.send(from, MessageBody::SnapshotResponse { index: meta.index, next_offset: expected });
            return;
        }
        let incoming = self.incoming_snapshot.as_mut().expect("set above");
        let max = self.config.snapshot_bytes_max;
        if max > 0 && incoming.data.len() as u64 + data.len() as u64 > max {
            // Larger than this node takes: dropped, not grown without bound.
            self.incoming_snapshot = None;
            self.counters.snapshots_too_large += 1;
            return;
        }
        incoming.data.extend_from_slice(&data);
        if !done {
            let next_offset = incoming.data.len() as u64;
            self.send(from, MessageBody::SnapshotResponse { index: meta.index, next_offset });
            return;
        }
        let incoming = self.incoming_snapshot.take().expect("set above");
        let index = meta.index;
        if self.log.term(index) == Some(meta.term) {
            // We hold the entries the snapshot covers: just learn the commit.
            self.log.commit_to(index);
            self.send_after_persist_to(
                from,
                MessageBody::AppendResponse(AppendResponse::Accepted { match_index: index }),
            );
            return;
        }
        // Nothing of it is trusted, let alone durable, before the driver has
        // checked it in full: see `install_snapshot` and `reject_snapshot`.
        self.snapshot_to_check = Some((from, meta));
        self.actions
            .push(Action::CheckSnapshot(Snapshot { meta: incoming.meta, data: incoming.data.into() }));
    }

    // ---------------------------------------------------------------- replication, leader side

    fn handle_append_response(&mut self, from: NodeId, response: AppendResponse) {
        let last = self.log.last_index();
        match response {
            AppendResponse::Accepted { match_index } => {
                if match_index > last {
                    self.counters.dropped_unexpected += 1;
                    return;
                }
                let progress = self.tracker.get_mut(from).expect("a member");
                let advanced = progress.acknowledge(match_index);
                match progress.mode {
                    Mode::Probe { .. } if advanced || progress.match_index + 1 == progress.next_index => {
                        progress.become_replicate()
                    }
                    Mode::Snapshot { index, .. } if progress.match_index >= index => {
                        progress.become_replicate()
                    }
                    _ => {}
                }
                let caught_up = progress.match_index == last;
                if advanced {
                    self.maybe_commit();
                }
                if caught_up && self.leader_state().transfer_target == Some(from) {
                    self.send(from, MessageBody::TimeoutNow);
                }
                self.send_append(from, false);
            }
            AppendResponse::Rejected { rejected_index, conflict_term, conflict_index } => {
                if rejected_index > last {
                    self.counters.dropped_unexpected += 1;
                    return;
                }
                let progress = self.tracker.get(from).expect("a member");
                let stale = match progress.mode {
                    Mode::Replicate => rejected_index <= progress.match_index,
                    Mode::Probe { .. } => rejected_index + 1 != progress.next_index,
                    Mode::Snapshot { .. } => true,
                };
                if stale {
                    return;
                }
                // Fast back-off: skip the follower's whole conflicting term.
                let mut next = conflict_index;
                if let Some(term) = conflict_term {
                    if let Some(index) = self.last_index_of_term(term, rejected_index) {
                        next = index + 1;
                    }
                }
                let progress = self.tracker.get_mut(from).expect("a member");
                progress.become_probe();
                progress.next_index =
                    next.clamp(progress.match_index + 1, rejected_index.max(progress.match_index + 1));
                self.send_append(from, false);
            }
        }
    }

    /// Bytes ([`Entry::size_bytes`]) of the log's entries `from..=to`.
    fn entry_bytes(&self, from: Index, to: Index) -> u64 {
        (from..=to).filter_map(|i| self.log.entry(i)).map(|e| e.size_bytes() as u64).sum()
    }

    /// The last index at or below `upto` whose term is `term`, if our log
    /// (after the snapshot) holds one.
    fn last_index_of_term(&self, term: Term, upto: Index) -> Option<Index> {
        let mut index = upto.min(self.log.last_index());
        loop {
            match self.log.term(index) {
                Some(t) if t == term => return Some(index),
                Some(t) if t > term && index > self.log.snapshot_index() => index -= 1,
                _ => return None,
            }
        }
    }

    /// Sends what `to` needs next, if its flow control allows: appends (as
    /// many as the in-flight window and byte budget allow while replicating),
    /// or the next snapshot chunk. With `send_if_empty`, an append with no
    /// entries goes out too (a probe that reveals where the logs diverge).
    fn send_append(&mut self, to: NodeId, send_if_empty: bool) {
        let mut send_if_empty = send_if_empty;
        loop {
            let progress = self.tracker.get(to).expect("a member");
            if let Mode::Snapshot { sent: false, .. } = progress.mode {
                self.send_snapshot_chunk(to);
                return;
            }
            if progress.is_paused() {
                return;
            }
            let next = progress.next_index;
            let is_probe = matches!(progress.mode, Mode::Probe { .. });
            let prev = next - 1;
            let Some(prev_term) = self.log.term(prev) else {
                // The entries the follower needs are compacted: snapshot.
                let index = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
                assert!(index >= next, "no snapshot covers compacted index {prev} (snapshot {index})");
                self.tracker.get_mut(to).expect("a member").become_snapshot(index);
                self.send_snapshot_chunk(to);
                return;
            };
            let last = self.log.last_index();
            let entries = if next <= last {
                self.log.slice(next, last, self.config.max_append_bytes)
            } else {
                Vec::new()
            };
            if entries.is_empty() && !is_probe && !send_if_empty {
                return;
            }
            let sent_last = prev + entries.len() as Index;
            let sent_bytes: u64 = entries.iter().map(|e| e.size_bytes() as u64).sum();
            let body = MessageBody::Append {
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries,
                leader_commit: self.log.commit(),
            };
            self.send(to, body);
            self.tracker.get_mut(to).expect("a member").sent_append(sent_last, sent_bytes);
            if is_probe || sent_last >= last {
                return;
            }
            send_if_empty = false;
        }
    }

    fn send_snapshot_chunk(&mut self, to: NodeId) {
        let snapshot = self.snapshot.as_ref().expect("a snapshot exists when a follower needs one");
        let (meta, len) = (snapshot.meta.clone(), snapshot.data.len() as u64);
        let chunk = self.config.snapshot_chunk_bytes as u64;
        let progress = self.tracker.get_mut(to).expect("a member");
        let Mode::Snapshot { index, offset, sent, waited } = &mut progress.mode else {
            unreachable!("sending a snapshot chunk outside snapshot mode")
        };
        if *index != meta.index {
            // A newer snapshot was taken meanwhile: start over with it.
            *index = meta.index;
            *offset = 0;
        }
        *sent = true;
        *waited = 0;
        let start = (*offset).min(len);
        let end = (start + chunk).min(len);
        let data = self.snapshot.as_ref().expect("checked").data[start as usize..end as usize].to_vec();
        self.send(to, MessageBody::Snapshot { meta, offset: start, data, done: end == len });
    }

    fn broadcast_heartbeat(&mut self) {
        let commit = self.log.commit();
        let round = self.leader_state().read_round;
        for i in 0..self.peers.len() {
            let to = self.peers[i];
            let commit = commit.min(self.tracker.get(to).expect("a member").match_index);
            self.send(to, MessageBody::Heartbeat { commit, read_round: round });
        }
        // (With one voter, the leader's own confirmation is the quorum.)
        self.release_confirmed_reads();
    }

    /// Commits the highest index durable on a majority, if it is of this term
    /// (§5.4.2, Figure 8: earlier terms' entries commit only indirectly).
    fn maybe_commit(&mut self) {
        let index = self.tracker.committed_index();
        if index > self.log.commit() && self.log.term(index) == Some(self.term) {
            let first_in_term = self.log.term(self.log.commit()) != Some(self.term);
            let committed = self.entry_bytes(self.log.commit() + 1, index);
            let leader = self.leader_state_mut();
            leader.uncommitted_bytes = leader.uncommitted_bytes.saturating_sub(committed);
            self.log.commit_to(index);
            if first_in_term {
                let commit = self.log.commit();
                let leader = self.leader_state_mut();
                let round = leader.read_round + 1;
                let waiting: Vec<u64> = leader.reads_before_commit.drain(..).collect();
                for ctx in waiting {
                    leader.pending_reads.push_back(PendingRead { ctx, index: commit, round });
                    leader.read_round_wanted = true;
                }
            }
        }
    }

    /// Releases every read whose heartbeat round a majority has answered.
    fn release_confirmed_reads(&mut self) {
        let confirmed = self.tracker.confirmed_read_round();
        let leader = self.leader_state_mut();
        let mut ready = Vec::new();
        while leader.pending_reads.front().is_some_and(|r| r.round <= confirmed) {
            ready.push(leader.pending_reads.pop_front().expect("checked"));
        }
        for read in ready {
            self.actions.push(Action::ReadReady { ctx: read.ctx, index: read.index });
        }
    }

    // ---------------------------------------------------------------- plumbing

    /// The voters, sorted, as a snapshot's metadata records them.
    fn voter_list(&self) -> Vec<NodeId> {
        self.tracker.voter_ids().collect()
    }

    fn leader_state(&self) -> &LeaderState {
        match &self.role {
            RoleState::Leader(l) => l,
            _ => unreachable!("leader state used by a {}", self.role()),
        }
    }

    fn leader_state_mut(&mut self) -> &mut LeaderState {
        match &mut self.role {
            RoleState::Leader(l) => l,
            _ => unreachable!("leader state used by a non-leader"),
        }
    }

    fn emit_role_changed(&mut self) {
        self.actions.push(Action::RoleChanged { role: self.role(), term: self.term, leader: self.leader });
    }

    /// Sends a message that depends on nothing durable.
    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.actions.push(Action::Send(Message { from: self.id, to, term: self.term, body }));
    }

    fn send_after_persist_to(&mut self, to: NodeId, body: MessageBody) {
        let m = Message { from: self.id, to, term: self.term, body };
        self.send_after_persist(m);
    }

    /// Sends a message once everything that is not yet durable now has become
    /// durable: the next batch if there is unpersisted state, else the last
    /// batch in flight, else at once.
    fn send_after_persist(&mut self, m: Message) {
        let vote_changed =
            (self.term, self.vote) != (self.persisted_hard_state.term, self.persisted_hard_state.vote);
        let unpersisted = vote_changed || self.log.has_unpersisted() || self.snapshot_to_persist.is_some();
        let after = if unpersisted {
            Some(self.next_persist_id)
        } else {
            self.persists_inflight.back().map(|b| b.id)
        };
        match after {
            Some(id) => self.msgs_after_persist.push_back((id, m)),
            None => self.deliver_durable(m),
        }
    }

    /// Delivers a message whose durable dependencies are met: a candidate's
    /// own vote is counted, anything else is sent.
    fn deliver_durable(&mut self, m: Message) {
        if m.to != self.id {
            self.actions.push(Action::Send(m));
            return;
        }
        if m.term == self.term {
            if let RoleState::Candidate { votes } = &mut self.role {
                votes.insert(self.id, true);
                self.tally_votes(false);
            }
        }
    }
}

/// Checks an append's entries before they touch the log: contiguous after
/// `prev_index`, terms never decreasing from `prev_term` and never beyond the
/// leader's `term`. A well-behaved leader always sends such entries; anything
/// else is refused rather than trusted.
fn entries_well_formed(prev_index: Index, prev_term: Term, term: Term, entries: &[Entry]) -> bool {
    let mut last_term = prev_term;
    for (offset, entry) in entries.iter().enumerate() {
        if Some(entry.index) != prev_index.checked_add(1 + offset as Index)
            || entry.term < last_term
            || entry.term > term
        {
            return false;
        }
        last_term = entry.term;
    }
    true
}
