//! The node's logic without IO: a deterministic [`Replica`] that owns the
//! consensus core, the key-value store, the client writes and reads waiting
//! for their answers, and the snapshot policy.
//!
//! Events go in ([`Replica::tick`], [`Replica::step`], [`Replica::client`],
//! the reports of the WAL and of the snapshot worker), effects come out
//! ([`Replica::take_effects`]: persist, send, answer, take or check a
//! snapshot, compact the WAL). No clock, no threads, no sockets, no
//! randomness of its own: `raft-node`'s tokio glue moves bytes and time,
//! and the simulator drives the very same `Replica`.
//!
//! Client handles are opaque (`C`): the glue passes its way back to a
//! connection, the simulator an operation id; each comes back exactly once,
//! in [`Effect::Answer`], unless the replica is dropped.

use std::collections::BTreeMap;

use raft_core::{
    Action, Entry, EntryPayload, Index, Message, NodeId, PersistBatch, ProposeError, RaftNode, Role,
    Snapshot, SnapshotMeta, Term,
};
use tracing::{debug, info, warn};

use crate::command::{describe_command, describe_token, Command, IdentityOp, WriteLimits, WriteOp};
use crate::protocol::{LogEntryView, MemberRole, MemberView, NodeStatus, RequestKind, ResponseKind};
use crate::store::KvStore;

/// What a replica needs to know besides its core and store.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// This node's id.
    pub id: NodeId,
    /// Every member and the address clients reach it at, this node
    /// included, as the node started (the flags or the data directory's
    /// identity). Once the membership in force carries an address as a
    /// member's context, that address wins.
    pub members: BTreeMap<NodeId, String>,
    /// The cluster id, as the status shows it.
    pub cluster_id: String,
    /// The process id, as the status shows it (0 in a simulation).
    pub pid: u32,
    /// The size limits of a client write.
    pub limits: WriteLimits,
    /// Take a snapshot after this many applied entries...
    pub snapshot_entries: u64,
    /// ...or once the commands applied since the last one hold this many
    /// bytes.
    pub snapshot_log_bytes: u64,
    /// The cluster token this node knows (0: none yet).
    pub token: u64,
    /// The token this node proposes if it leads a cluster that has none:
    /// random, from the glue (the replica draws nothing itself).
    pub new_token: u64,
}

/// What the replica asks of its driver, in order.
#[derive(Debug)]
pub enum Effect<C> {
    /// Make the batch durable, then report [`Replica::persisted`].
    Persist(PersistBatch),
    /// Send to a peer (best effort).
    Send(Message),
    /// Send a chunk of this node's snapshot to a peer: fill `message`'s
    /// empty `data` with the `len` bytes at its `offset` of the data of the
    /// snapshot its `meta` names (this node's snapshot file), then send it;
    /// drop it if that file is gone (a newer snapshot replaced it).
    SendSnapshotChunk {
        /// A [`raft_core::MessageBody::Snapshot`] with empty `data`.
        message: Message,
        /// How many bytes to put in it.
        len: u64,
    },
    /// Store a chunk of the snapshot a leader is sending (offset 0 starts
    /// it afresh); the whole is checked ([`Effect::CheckSnapshot`]) before
    /// anything of it is trusted.
    SaveSnapshotChunk {
        /// The snapshot being received.
        meta: SnapshotMeta,
        /// Where `data` goes within its data.
        offset: u64,
        /// The chunk.
        data: Vec<u8>,
    },
    /// Record in the WAL that the log is compacted to this snapshot, whose
    /// file the snapshot worker wrote.
    Compact(SnapshotMeta),
    /// The answer to a client request.
    Answer(C, ResponseKind),
    /// Serialize this copy of the store as the snapshot `meta` and write its
    /// file durably, in the background; then report
    /// [`Replica::snapshot_taken`] or [`Replica::snapshot_take_failed`].
    TakeSnapshot {
        /// The store as of `meta.index` (its values shared, not copied).
        kv: Box<KvStore>,
        /// The snapshot's metadata.
        meta: SnapshotMeta,
    },
    /// Every chunk of this snapshot from the leader was saved: decode and
    /// check it in full (its length, then the store it holds), in the
    /// background, keep it as this node's snapshot file if it is good; then
    /// report [`Replica::snapshot_checked`].
    CheckSnapshot(Snapshot),
    /// The log told this node its cluster's token: record it durably (the
    /// data directory's identity) and carry it in every hello.
    TokenLearned(u64),
    /// The membership in force changed: these are now the members and
    /// their addresses (open links to new ones, close those to the gone).
    MembersChanged(BTreeMap<NodeId, String>),
    /// This node was a member and the committed membership no longer holds
    /// it: it takes no further part (the glue says so and stops).
    Removed {
        /// The configuration entry that removed it.
        index: Index,
    },
    /// A snapshot from the leader did not check and was dropped; the node
    /// keeps its log (worth a rate-limited warning).
    SnapshotRejected {
        /// Its index.
        index: Index,
        /// Its size.
        bytes: u64,
        /// Snapshots rejected so far.
        rejected: u64,
        /// Why.
        problem: String,
    },
}

/// What the store went through, one record per applied entry or restored
/// snapshot, for a checker that compares replicas (the simulator's State
/// Machine Safety). Kept only once [`Replica::record_applied`] turned it
/// on; off (as in `raft-node`), nothing is recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// This entry was applied, leaving the store with this
    /// [`KvStore::digest`].
    Entry {
        /// The entry.
        entry: Entry,
        /// The store's digest after it.
        digest: u64,
    },
    /// The store was replaced by a snapshot from the leader.
    Snapshot {
        /// The snapshot's metadata.
        meta: SnapshotMeta,
        /// The store's digest after it.
        digest: u64,
    },
}

/// A replica that cannot go on; the node must stop.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// A snapshot is to be applied whose checked store is not at hand.
    #[error("a snapshot cannot be applied: {0}")]
    SnapshotRestore(String),
    /// The log carries another cluster's token than the one this node
    /// holds data of.
    #[error(
        "the log of cluster token {learned} reached node {node} whose data belongs to cluster token {known}; \
         this node holds data of two clusters: stop it and give it an empty data directory"
    )]
    TwoClusters {
        /// This node.
        node: NodeId,
        /// The token in the log.
        learned: String,
        /// The token of this node's data.
        known: String,
    },
}

struct PendingWrite<C> {
    term: Term,
    handle: C,
}

struct PendingRead<C> {
    key: Vec<u8>,
    handle: C,
}

/// A leadership transfer waiting for its target to lead.
struct PendingTransfer<C> {
    to: NodeId,
    handle: C,
    ticks_left: u32,
}

/// Bytes of answers (read values, mostly) the replica buffers before it
/// hands its effects out: the driver sends them, and drops those of a client
/// past its budget, before more are made.
const ANSWER_BYTES_PER_BATCH: usize = 8 << 20;

/// Ticks a leadership transfer may take before it is reported failed (at
/// raft-node's 10 ms tick, 3 s: several election timeouts).
const TRANSFER_TICKS_MAX: u32 = 300;

/// Running totals of what the replica's proposals came to, for metrics
/// (etcd's `proposals_committed_total` and the rest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProposalCounts {
    /// Entries this node learned committed: its commit index's advance
    /// past the index it had applied when it started (a snapshot's jump
    /// included).
    pub committed: u64,
    /// Entries applied to the store one by one (not those a snapshot
    /// covered).
    pub applied: u64,
    /// Client writes and membership changes this node proposed whose
    /// outcome it could not report: leadership lost, the entry replaced or
    /// covered by a snapshot (answered `Unknown`), or the core refused the
    /// proposal.
    pub failed: u64,
}

/// The node's logic: see the module docs.
pub struct Replica<C> {
    config: ReplicaConfig,
    node: RaftNode,
    kv: KvStore,
    effects: Vec<Effect<C>>,
    /// The core's actions not yet carried out (see [`Replica::take_effects`]).
    actions: std::collections::VecDeque<Action>,
    writes: BTreeMap<Index, PendingWrite<C>>,
    reads: BTreeMap<u64, PendingRead<C>>,
    /// Reads released by ReadIndex, waiting for apply to reach their index.
    ready_reads: Vec<(Index, PendingRead<C>)>,
    next_read_ctx: u64,
    last_snapshot_index: Index,
    role: Role,
    /// Identity records this leader proposed in `identity_term` (once each
    /// per term; a lost one is proposed again by the next leader).
    identity_proposed: Vec<IdentityOp>,
    identity_term: Term,
    /// A snapshot of this node's is being taken in the background.
    snapshot_taking: bool,
    /// A snapshot from the leader is being checked in the background...
    snapshot_checking: bool,
    /// ...and the newest one that arrived meanwhile waits its turn.
    snapshot_to_check: Option<Snapshot>,
    /// A snapshot from the leader that decoded and checked, as the store it
    /// becomes once the core hands it back to apply (decoded once).
    checked_snapshot: Option<(Index, KvStore)>,
    /// Snapshots from a leader that did not check.
    snapshots_rejected: u64,
    /// Why the WAL cannot write now (a full disk), if it cannot.
    disk_full: Option<String>,
    /// Bytes of commands applied since the last snapshot.
    log_bytes_since_snapshot: u64,
    /// Bytes of answers among the effects not yet handed out...
    answer_bytes_buffered: usize,
    /// ...and whether a persist batch or a message is among them.
    io_effects_buffered: bool,
    /// Membership changes waiting for their entry to commit, by index.
    changes: BTreeMap<Index, PendingWrite<C>>,
    /// A leadership transfer waiting for its target to lead.
    transfer: Option<PendingTransfer<C>>,
    /// The index of the membership last reported in [`Effect::MembersChanged`].
    membership_reported: Option<Index>,
    /// What the store went through since the last
    /// [`Replica::take_applied`], if recorded ([`Replica::record_applied`]).
    applied_log: Option<Vec<Applied>>,
    /// This node has been a member (so a membership without it means it was
    /// removed, not that it waits to be added)...
    was_member: bool,
    /// ...and its removal was reported.
    removed_reported: bool,
    /// What the proposals came to, and the commit index they were counted to.
    proposals: ProposalCounts,
    commit_counted: Index,
}

impl<C> std::fmt::Debug for Replica<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.config.id)
            .field("role", &self.role)
            .field("applied", &self.kv.applied())
            .field("writes", &self.writes.len())
            .field("reads", &(self.reads.len() + self.ready_reads.len()))
            .finish_non_exhaustive()
    }
}

impl<C> Replica<C> {
    /// A replica of a core and a store restored from the same durable state
    /// (the store from its snapshot, if any).
    pub fn new(config: ReplicaConfig, node: RaftNode, kv: KvStore) -> Replica<C> {
        let last_snapshot_index = node.snapshot_meta().index;
        // (Counted from what is applied: the entries a restart applies again
        // count as committed and applied alike.)
        let commit_counted = node.applied_index();
        let id = config.id;
        let was_member = node.snapshot_meta().membership.is_member(id)
            || (node.first_index()..=node.last_index()).any(|i| {
                node.entry(i)
                    .and_then(|e| e.payload.decode_membership())
                    .is_some_and(|m| m.is_ok_and(|m| m.is_member(id)))
            });
        Replica {
            config,
            node,
            kv,
            effects: Vec::new(),
            actions: std::collections::VecDeque::new(),
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            ready_reads: Vec::new(),
            next_read_ctx: 1,
            last_snapshot_index,
            role: Role::Follower,
            identity_proposed: Vec::new(),
            identity_term: 0,
            snapshot_taking: false,
            snapshot_checking: false,
            snapshot_to_check: None,
            checked_snapshot: None,
            snapshots_rejected: 0,
            disk_full: None,
            log_bytes_since_snapshot: 0,
            answer_bytes_buffered: 0,
            io_effects_buffered: false,
            changes: BTreeMap::new(),
            transfer: None,
            membership_reported: None,
            applied_log: None,
            was_member,
            removed_reported: false,
            proposals: ProposalCounts::default(),
            commit_counted,
        }
    }

    /// The consensus core (read-only: every input goes through the replica).
    pub fn node(&self) -> &RaftNode {
        &self.node
    }

    /// The key-value store.
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// The replica's configuration.
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// Client requests waiting for their answers.
    pub fn pending_requests(&self) -> usize {
        self.writes.len()
            + self.reads.len()
            + self.ready_reads.len()
            + self.changes.len()
            + usize::from(self.transfer.is_some())
    }

    /// What this node's proposals came to since it started.
    pub fn proposal_counts(&self) -> ProposalCounts {
        self.proposals
    }

    /// Records every entry applied and snapshot restored from now on, with
    /// the store's digest after it, for [`Replica::take_applied`] (`false`
    /// stops and forgets). For a checker that compares replicas: it costs a
    /// pass over the store per entry.
    pub fn record_applied(&mut self, on: bool) {
        self.applied_log = on.then(Vec::new);
    }

    /// What the store went through since the last call, in order (empty
    /// unless [`Replica::record_applied`] is on).
    pub fn take_applied(&mut self) -> Vec<Applied> {
        self.applied_log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Starts an election now, as [`RaftNode::campaign`] (PreVote first, if
    /// on). No client request does this (an operator hands leadership over
    /// with [`RequestKind::TransferLeader`]): it is for tests and the
    /// simulator's faults, which make a node campaign out of turn.
    pub fn campaign(&mut self) {
        self.node.campaign();
    }

    /// One logical clock tick.
    pub fn tick(&mut self) {
        self.node.tick();
        self.maintain_identity();
        if let Some(transfer) = &mut self.transfer {
            transfer.ticks_left = transfer.ticks_left.saturating_sub(1);
        }
        self.settle_transfer();
    }

    /// The members in force and their addresses: each member's context if
    /// it holds one, else the address the node was started with.
    pub fn member_addresses(&self) -> BTreeMap<NodeId, String> {
        let membership = self.node.membership().0;
        membership
            .member_ids()
            .map(|id| {
                let context = membership.context(id).filter(|c| !c.is_empty());
                let address = context
                    .and_then(|c| std::str::from_utf8(c).ok())
                    .map(str::to_string)
                    .or_else(|| self.config.members.get(&id).cloned())
                    .unwrap_or_default();
                (id, address)
            })
            .collect()
    }

    /// Every member as the leader sees it (any node can compute it; only
    /// the leader's match indexes are current).
    pub fn members_view(&self) -> Vec<MemberView> {
        let status = self.node.status();
        let membership = &status.membership;
        let addresses = self.member_addresses();
        membership
            .member_ids()
            .map(|id| {
                let match_index = if id == self.config.id {
                    status.stable_index
                } else {
                    status.progress.iter().find(|p| p.id == id).map_or(0, |p| p.match_index)
                };
                let incoming = membership.voters().incoming.contains(id);
                MemberView {
                    id,
                    address: addresses.get(&id).cloned().unwrap_or_default(),
                    role: if membership.is_voter(id) { MemberRole::Voter } else { MemberRole::Learner },
                    outgoing: membership.voters().outgoing.contains(id) && !incoming,
                    match_index,
                    lag_entries: status.last_index.saturating_sub(match_index),
                }
            })
            .collect()
    }

    /// Answers a leadership transfer once its target leads, or once it has
    /// taken too long.
    fn settle_transfer(&mut self) {
        let Some(transfer) = &self.transfer else { return };
        let answer = match self.node.leader() {
            Some(leader) if leader == transfer.to => ResponseKind::LeaderTransferred { leader },
            _ if transfer.ticks_left > 0 => return,
            leader => ResponseKind::Error {
                message: format!(
                    "node {} did not take over in time (the leader is now {}); it may be behind or down",
                    transfer.to,
                    leader.map_or("unknown".to_string(), |l| format!("node {l}"))
                ),
            },
        };
        let transfer = self.transfer.take().expect("checked above");
        self.answer(transfer.handle, answer);
    }

    /// A message from a peer.
    pub fn step(&mut self, m: Message) {
        self.node.step(m);
    }

    /// The WAL made the batch `id` durable.
    pub fn persisted(&mut self, id: u64) {
        self.node.persisted(id);
    }

    /// The WAL cannot write (`Some(why)`: a full disk) or can again
    /// (`None`): client writes are refused meanwhile.
    pub fn set_disk_full(&mut self, why: Option<String>) {
        self.disk_full = why;
    }

    /// A client request; its answer comes back as [`Effect::Answer`] with
    /// `handle`.
    pub fn client(&mut self, request: RequestKind, handle: C) {
        match request {
            RequestKind::Write(command) => {
                if let Err(message) = self.config.limits.check(&command.op) {
                    return self.answer(handle, ResponseKind::Invalid { message });
                }
                if let Some(why) = &self.disk_full {
                    let message = format!("node {} cannot take writes: {why}", self.config.id);
                    return self.answer(handle, ResponseKind::Error { message });
                }
                let data = match raft_codec::encode(&command) {
                    Ok(d) => d,
                    Err(e) => return self.answer(handle, ResponseKind::Error { message: e.to_string() }),
                };
                match self.node.propose(data) {
                    Ok(p) => {
                        self.writes.insert(p.index, PendingWrite { term: p.term, handle });
                    }
                    Err(ProposeError::NotLeader { .. }) => {
                        let answer = self.not_leader();
                        self.answer(handle, answer)
                    }
                    Err(e) => {
                        self.proposals.failed += 1;
                        self.answer(handle, ResponseKind::Error { message: format!("{e}; retry shortly") })
                    }
                }
            }
            RequestKind::Get { key, stale: true } => {
                let value = self.kv.get(&key).map(<[u8]>::to_vec);
                let index = self.kv.applied();
                self.answer(handle, ResponseKind::Value { index, value });
            }
            RequestKind::Get { key, stale: false } => {
                let ctx = self.next_read_ctx;
                self.next_read_ctx += 1;
                match self.node.read_index(ctx) {
                    Ok(()) => {
                        self.reads.insert(ctx, PendingRead { key, handle });
                    }
                    Err(_) => {
                        let answer = self.not_leader();
                        self.answer(handle, answer)
                    }
                }
            }
            RequestKind::Status => {
                let status = self.status();
                self.answer(handle, ResponseKind::Status(status))
            }
            RequestKind::Log { from, limit } => {
                let log = self.log_view(from, limit);
                self.answer(handle, ResponseKind::Log(log))
            }
            RequestKind::Members if self.node.is_leader() => {
                let members = self.members_view();
                self.answer(handle, ResponseKind::Members(members))
            }
            RequestKind::ChangeMembers(change) if self.node.is_leader() => {
                match self.node.propose_membership(&change) {
                    Ok(p) => {
                        self.changes.insert(p.index, PendingWrite { term: p.term, handle });
                    }
                    Err(ProposeError::NotLeader { .. }) => {
                        let answer = self.not_leader();
                        self.answer(handle, answer)
                    }
                    Err(e @ ProposeError::Membership(_)) => {
                        self.answer(handle, ResponseKind::Invalid { message: e.to_string() })
                    }
                    Err(e) => self.answer(handle, ResponseKind::Error { message: e.to_string() }),
                }
            }
            RequestKind::TransferLeader { to } if self.node.is_leader() => {
                if self.transfer.is_some() {
                    let message = "another leadership transfer is under way; retry shortly".to_string();
                    return self.answer(handle, ResponseKind::Error { message });
                }
                if to == self.config.id {
                    return self.answer(handle, ResponseKind::LeaderTransferred { leader: to });
                }
                match self.node.transfer_leadership(to) {
                    Ok(()) => {
                        self.transfer = Some(PendingTransfer { to, handle, ticks_left: TRANSFER_TICKS_MAX })
                    }
                    Err(e) => self.answer(
                        handle,
                        ResponseKind::Invalid {
                            message: format!("cannot hand leadership to node {to}: {e}"),
                        },
                    ),
                }
            }
            RequestKind::Members | RequestKind::ChangeMembers(_) | RequestKind::TransferLeader { .. } => {
                let answer = self.not_leader();
                self.answer(handle, answer)
            }
        }
    }

    /// The snapshot worker wrote the snapshot's file durably
    /// (`snapshot.data_bytes` bytes of data): the core
    /// compacts its log and keeps the snapshot to send, and the WAL records
    /// the compaction (refused there too if it is stale: a leader's
    /// snapshot, installed meanwhile, is newer).
    pub fn snapshot_taken(&mut self, snapshot: Snapshot) {
        self.snapshot_taking = false;
        let index = snapshot.meta.index;
        match self.node.snapshot_taken(index, snapshot.data_bytes) {
            Ok(()) => debug_assert_eq!(self.node.snapshot_meta(), snapshot.meta, "the core's metadata"),
            Err(e) => debug!(node = self.config.id, error = %e, "snapshot not taken by the core"),
        }
        self.effects.push(Effect::Compact(snapshot.meta));
    }

    /// The snapshot at `index` could not be taken (a full disk, an encoding
    /// failure): the log is kept, and one is tried again at the next
    /// threshold.
    pub fn snapshot_take_failed(&mut self, index: Index, error: &str) {
        self.snapshot_taking = false;
        warn!(
            node = self.config.id,
            index, "could not take a snapshot: {error}; keeping the log, trying again later"
        );
    }

    /// The snapshot worker decoded a snapshot from the leader: the store it
    /// holds, or why it is refused.
    pub fn snapshot_checked(&mut self, snapshot: Snapshot, result: Result<KvStore, String>) {
        self.snapshot_checking = false;
        let index = snapshot.meta.index;
        match result {
            Ok(kv) => {
                let meta = snapshot.meta.clone();
                self.node.install_snapshot(snapshot);
                // Kept for the apply only if the core took it.
                if self.node.snapshot_meta() == meta {
                    self.checked_snapshot = Some((index, kv));
                }
            }
            Err(problem) => {
                self.snapshots_rejected += 1;
                self.effects.push(Effect::SnapshotRejected {
                    index,
                    bytes: snapshot.data_bytes,
                    rejected: self.snapshots_rejected,
                    problem,
                });
                self.node.reject_snapshot(index);
            }
        }
        if let Some(next) = self.snapshot_to_check.take() {
            self.check_snapshot(next);
        }
    }

    /// Runs the core's actions and hands out what the driver must do, in
    /// order (drained from a buffer the replica keeps, so that no effect
    /// list is allocated per event). Call it until it hands out nothing:
    /// it returns early, before applying committed entries, when effects
    /// the driver can start on are ready (a persist batch, messages), so
    /// that the WAL writes and the peers receive while this node applies.
    pub fn take_effects(&mut self) -> Result<std::vec::Drain<'_, Effect<C>>, ReplicaError> {
        self.answer_bytes_buffered = 0;
        self.io_effects_buffered = false;
        loop {
            if self.serve_ready_reads() {
                // Answers enough for one go: the driver sends them (and
                // drops those of a client past its budget) before more are
                // made, so that reads of large values never pile up here.
                return Ok(self.effects.drain(..));
            }
            if self.actions.is_empty() {
                self.actions.extend(self.node.take_actions());
                if self.actions.is_empty() {
                    self.after_round()?;
                    if self.actions.is_empty() && !self.reads_servable() {
                        break;
                    }
                    continue;
                }
            }
            while let Some(action) = self.actions.pop_front() {
                if self.io_effects_buffered && matches!(action, Action::Apply(_)) {
                    self.actions.push_front(action);
                    return Ok(self.effects.drain(..));
                }
                self.act(action)?;
            }
            self.after_round()?;
        }
        Ok(self.effects.drain(..))
    }

    /// What follows a round of the core's actions (each step does nothing
    /// when there is nothing to do).
    fn after_round(&mut self) -> Result<(), ReplicaError> {
        let commit = self.node.commit_index();
        self.proposals.committed += commit.saturating_sub(self.commit_counted);
        self.commit_counted = self.commit_counted.max(commit);
        self.maybe_snapshot();
        self.settle_transfer();
        self.note_membership();
        // (A restarted node's state machine knows no token until it has
        // applied the token entry again: 0 there is not a mismatch.)
        let learned = self.kv.identity().token;
        if learned != 0 && learned != self.config.token {
            self.learn_token()?;
        }
        Ok(())
    }

    /// Carries out one of the core's actions.
    fn act(&mut self, action: Action) -> Result<(), ReplicaError> {
        match action {
            Action::Persist(batch) => {
                self.io_effects_buffered = true;
                self.effects.push(Effect::Persist(batch));
            }
            Action::Send(m) => {
                self.log_send(&m);
                self.io_effects_buffered = true;
                self.effects.push(Effect::Send(m));
            }
            Action::SendSnapshotChunk { message, len } => {
                self.io_effects_buffered = true;
                self.effects.push(Effect::SendSnapshotChunk { message, len });
            }
            Action::SaveSnapshotChunk { meta, offset, data } => {
                self.effects.push(Effect::SaveSnapshotChunk { meta, offset, data })
            }
            Action::Apply(entries) => self.apply(entries),
            Action::CheckSnapshot(snapshot) => self.check_snapshot(snapshot),
            Action::ApplySnapshot(snapshot) => {
                // The core applies only a snapshot it installed, and it
                // installs only one that was checked: the store is here.
                match self.checked_snapshot.take() {
                    Some((index, kv)) if index == snapshot.meta.index => self.kv = kv,
                    other => {
                        return Err(ReplicaError::SnapshotRestore(format!(
                            "the snapshot at {} is to be applied but the store checked is {:?}",
                            snapshot.meta.index,
                            other.map(|(index, _)| index)
                        )))
                    }
                }
                self.last_snapshot_index = snapshot.meta.index;
                self.log_bytes_since_snapshot = 0;
                if let Some(log) = &mut self.applied_log {
                    log.push(Applied::Snapshot { meta: snapshot.meta.clone(), digest: self.kv.digest() });
                }
                self.snapshot_covers_requests(snapshot.meta.index);
                info!(
                    node = self.config.id,
                    index = snapshot.meta.index,
                    bytes = snapshot.data_bytes,
                    "installed snapshot from leader"
                );
                self.node.applied(snapshot.meta.index);
            }
            Action::ReadReady { ctx, index } => {
                if let Some(read) = self.reads.remove(&ctx) {
                    self.ready_reads.push((index, read));
                }
            }
            Action::ReadFailed { ctx, .. } => {
                if let Some(read) = self.reads.remove(&ctx) {
                    let answer = self.not_leader();
                    self.answer(read.handle, answer);
                }
            }
            Action::RoleChanged { role, term, leader } => self.role_changed(role, term, leader),
        }
        Ok(())
    }

    /// Reports a change of the membership in force, and this node's
    /// removal once the entry that removed it is committed.
    fn note_membership(&mut self) {
        let (membership, index) = self.node.membership();
        let is_member = membership.is_member(self.config.id);
        let removed = !is_member && self.was_member && index <= self.node.commit_index();
        self.was_member |= is_member;
        if self.membership_reported != Some(index) {
            self.membership_reported = Some(index);
            let addresses = self.member_addresses();
            self.effects.push(Effect::MembersChanged(addresses));
        }
        if removed && !self.removed_reported {
            self.removed_reported = true;
            info!(
                node = self.config.id,
                index, "removed from the cluster by the configuration entry at {index}"
            );
            self.effects.push(Effect::Removed { index });
        }
    }

    /// This node's status.
    pub fn status(&self) -> NodeStatus {
        let s = self.node.status();
        NodeStatus {
            id: s.id,
            address: self.config.members.get(&self.config.id).cloned().unwrap_or_default(),
            pid: self.config.pid,
            role: s.role,
            term: s.term,
            leader: s.leader,
            commit: s.commit,
            applied: s.applied,
            last_index: s.last_index,
            first_index: s.first_index,
            snapshot_index: s.snapshot_index,
            keys: self.kv.len() as u64,
            cluster_id: self.config.cluster_id.clone(),
            cluster_token: self.config.token,
            members_with_data: self.kv.identity().members_with_data.iter().copied().collect(),
            voters: s.membership.voters().ids().collect(),
            learners: s.membership.learners().iter().copied().collect(),
        }
    }

    fn answer(&mut self, handle: C, answer: ResponseKind) {
        self.answer_bytes_buffered += answer.queued_bytes();
        self.effects.push(Effect::Answer(handle, answer));
    }

    fn not_leader(&self) -> ResponseKind {
        let leader = self.node.leader().filter(|&l| l != self.config.id);
        let address = |id: NodeId| {
            self.member_addresses().get(&id).cloned().or_else(|| self.config.members.get(&id).cloned())
        };
        ResponseKind::NotLeader { leader: leader.and_then(|id| address(id).map(|a| (id, a))) }
    }

    fn log_view(&self, from: Index, limit: u64) -> Vec<LogEntryView> {
        let first = from.max(self.node.first_index());
        let last = self.node.last_index().min(first.saturating_add(limit.min(10_000)).saturating_sub(1));
        let commit = self.node.commit_index();
        (first..=last)
            .filter_map(|i| self.node.entry(i))
            .map(|e| LogEntryView {
                index: e.index,
                term: e.term,
                command: describe_entry(e),
                committed: e.index <= commit,
            })
            .collect()
    }

    /// Has a snapshot from the leader decoded and checked in full (in the
    /// background) before the core may persist or apply it; one arriving
    /// while another is checked waits, and only the newest waits.
    fn check_snapshot(&mut self, snapshot: Snapshot) {
        if self.snapshot_checking {
            self.snapshot_to_check = Some(snapshot);
            return;
        }
        self.snapshot_checking = true;
        self.effects.push(Effect::CheckSnapshot(snapshot));
    }

    /// The log has told this node its cluster's token. A log whose token
    /// differs from the one this node's data belongs to means two clusters'
    /// data met: stop.
    fn learn_token(&mut self) -> Result<(), ReplicaError> {
        let (learned, known) = (self.kv.identity().token, self.config.token);
        if known != 0 {
            return Err(ReplicaError::TwoClusters {
                node: self.config.id,
                learned: describe_token(learned),
                known: describe_token(known),
            });
        }
        self.config.token = learned;
        info!(node = self.config.id, cluster_token = %describe_token(learned), "learned the cluster token");
        self.effects.push(Effect::TokenLearned(learned));
        Ok(())
    }

    /// On the leader: commit a cluster token if the cluster has none, and
    /// record each member once it holds the token entry durably, so that an
    /// empty data directory under that member's id can later be told from a
    /// new member. Costs nothing once every member is recorded.
    fn maintain_identity(&mut self) {
        if !self.node.is_leader() {
            return;
        }
        let identity = self.kv.identity();
        let members: Vec<NodeId> = self.node.membership().0.member_ids().collect();
        if identity.token != 0 && members.iter().all(|id| identity.members_with_data.contains(id)) {
            return;
        }
        let term = self.node.term();
        if self.identity_term != term {
            self.identity_term = term;
            self.identity_proposed.clear();
        }
        let mut wanted = Vec::new();
        if identity.token == 0 {
            wanted.push(IdentityOp::Token(self.config.new_token.max(1)));
        } else {
            let status = self.node.status();
            for &id in members.iter().filter(|id| !identity.members_with_data.contains(id)) {
                let durable = if id == self.config.id {
                    status.stable_index
                } else {
                    status.progress.iter().find(|p| p.id == id).map_or(0, |p| p.match_index)
                };
                if durable >= identity.token_index {
                    wanted.push(IdentityOp::MemberHasData(id));
                }
            }
        }
        for op in wanted {
            let already = self.identity_proposed.iter().any(|p| match (p, &op) {
                (IdentityOp::Token(_), IdentityOp::Token(_)) => true,
                (a, b) => a == b,
            });
            if already {
                continue;
            }
            let command = Command { client_id: 0, seq: 0, op: WriteOp::Identity(op) };
            let Ok(data) = raft_codec::encode(&command) else { continue };
            if self.node.propose(data).is_ok() {
                self.identity_proposed.push(op);
            }
        }
    }

    /// One line per message worth seeing: votes at info, appends and
    /// heartbeats at debug (checked before any formatting).
    fn log_send(&self, m: &Message) {
        use raft_core::MessageBody;
        let (node, role, term, to) = (self.config.id, self.role, m.term, m.to);
        match &m.body {
            MessageBody::VoteResponse { pre_vote: false, granted: true } => {
                info!(node, role = %role, term, candidate = to, "granted vote")
            }
            MessageBody::VoteResponse { pre_vote, granted } => {
                debug!(node, role = %role, term, candidate = to, pre_vote, granted, "vote answer")
            }
            MessageBody::VoteRequest { pre_vote, last_log_index, last_log_term, .. } => {
                debug!(node, role = %role, term, to, pre_vote, last_log_index, last_log_term, "asking for a vote")
            }
            MessageBody::Append { prev_log_index, entries, leader_commit, .. } => debug!(
                node, role = %role, term, to, prev = prev_log_index, entries = entries.len(),
                commit = leader_commit, "append"
            ),
            MessageBody::Heartbeat { commit, .. } => {
                debug!(node, role = %role, term, to, commit, "heartbeat")
            }
            _ => {}
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        let (Some(first), Some(last)) = (entries.first().map(|e| e.index), entries.last().map(|e| e.index))
        else {
            return;
        };
        self.proposals.applied += entries.len() as u64;
        let mut last_command = None;
        let mut commands = 0usize;
        for entry in &entries {
            let result = match &entry.payload {
                // A configuration entry changes nothing in the store.
                EntryPayload::Blank | EntryPayload::Membership(_) => {
                    self.kv.apply_blank(entry.index);
                    None
                }
                EntryPayload::Command(data) => match raft_codec::decode::<Command>(data) {
                    Ok(command) => {
                        self.log_bytes_since_snapshot += data.len() as u64;
                        if tracing::enabled!(tracing::Level::DEBUG) {
                            debug!(node = self.config.id, index = entry.index, cmd = %describe_command(&command), "applied");
                        }
                        commands += 1;
                        last_command = Some(entry);
                        Some(self.kv.apply_indexed(entry.index, command))
                    }
                    Err(e) => {
                        // Every replica sees the same bytes and skips them alike.
                        warn!(node = self.config.id, index = entry.index, error = %e, "skipping undecodable command");
                        self.kv.apply_blank(entry.index);
                        None
                    }
                },
            };
            if let Some(log) = &mut self.applied_log {
                log.push(Applied::Entry { entry: entry.clone(), digest: self.kv.digest() });
            }
            if let Some(change) = self.changes.remove(&entry.index) {
                let response = match entry.payload {
                    EntryPayload::Membership(_) if change.term == entry.term => {
                        ResponseKind::MembersChanged { index: entry.index }
                    }
                    _ => {
                        self.proposals.failed += 1;
                        ResponseKind::Unknown {
                            reason: "the change was replaced after a leader change; check `member list`"
                                .to_string(),
                        }
                    }
                };
                self.answer(change.handle, response);
            }
            if let Some(write) = self.writes.remove(&entry.index) {
                let response = match result {
                    Some((index, result)) if write.term == entry.term => {
                        ResponseKind::Written { index, result }
                    }
                    _ => {
                        self.proposals.failed += 1;
                        ResponseKind::Unknown {
                            reason: "the entry was replaced after a leader change; retry".to_string(),
                        }
                    }
                };
                self.answer(write.handle, response);
            }
        }
        // One line per batch the leader commits, with counts and indexes but
        // no values (they are user data); every command at debug level.
        if let (true, Some(entry)) = (self.node.is_leader(), last_command) {
            let term = self.node.term();
            if first == last {
                info!(node = self.config.id, role = %Role::Leader, term, index = entry.index, commands, "committed");
            } else {
                info!(
                    node = self.config.id, role = %Role::Leader, term, index = %format_args!("{first}..={last}"),
                    commands, "committed"
                );
            }
        }
        self.node.applied(last);
    }

    /// A snapshot from the leader replaced the store up to `index`: the
    /// writes and membership changes waiting for an entry it covers will
    /// never see their entry applied here. Their clients learn the outcome
    /// by retrying (a write applies once; `member list` shows a change).
    /// (Rare: a former leader with committed entries not yet applied.)
    fn snapshot_covers_requests(&mut self, index: Index) {
        let after = self.writes.split_off(&(index + 1));
        let covered = std::mem::replace(&mut self.writes, after);
        let after = self.changes.split_off(&(index + 1));
        let covered_changes = std::mem::replace(&mut self.changes, after);
        self.proposals.failed += (covered.len() + covered_changes.len()) as u64;
        for (_, write) in covered {
            let reason = "a snapshot from the leader covered the entry; retry (it applies once)".to_string();
            self.answer(write.handle, ResponseKind::Unknown { reason });
        }
        for (_, change) in covered_changes {
            let reason = "a snapshot from the leader covered the change; check `member list`".to_string();
            self.answer(change.handle, ResponseKind::Unknown { reason });
        }
    }

    /// Whether a released read can be answered now.
    fn reads_servable(&self) -> bool {
        let applied = self.node.applied_index();
        self.ready_reads.iter().any(|(i, _)| *i <= applied)
            && self.answer_bytes_buffered < ANSWER_BYTES_PER_BATCH
    }

    /// Answers the released reads the store has caught up with, until
    /// [`ANSWER_BYTES_PER_BATCH`] of answers are buffered; true if some are
    /// left for the next batch.
    fn serve_ready_reads(&mut self) -> bool {
        if self.ready_reads.is_empty() {
            return false;
        }
        let applied = self.node.applied_index();
        let mut i = 0;
        while i < self.ready_reads.len() {
            if self.ready_reads[i].0 > applied {
                i += 1;
                continue;
            }
            if self.answer_bytes_buffered >= ANSWER_BYTES_PER_BATCH {
                return true;
            }
            let (_, read) = self.ready_reads.remove(i);
            let value = self.kv.get(&read.key).map(<[u8]>::to_vec);
            self.answer(read.handle, ResponseKind::Value { index: applied, value });
        }
        false
    }

    fn role_changed(&mut self, role: Role, term: Term, leader: Option<NodeId>) {
        match role {
            Role::Leader => info!(node = self.config.id, role = %role, term, "became leader"),
            Role::Candidate => {
                info!(node = self.config.id, role = %role, term, "election timeout; campaigning")
            }
            Role::PreCandidate => {
                debug!(node = self.config.id, role = %role, term, "election timeout; pre-vote")
            }
            Role::Follower => {
                if self.role != Role::Follower || leader.is_some() {
                    info!(node = self.config.id, role = %role, term, leader = ?leader, "following")
                }
            }
        }
        if self.role == Role::Leader && role != Role::Leader {
            // Writes in flight may still commit under the next leader: the
            // client retries with the same sequence number, applied once.
            // Those already committed stay, and are answered when applied
            // (a removed leader steps down in the batch that commits its
            // removal, before it applies it).
            let commit = self.node.commit_index();
            let uncommitted = self.writes.split_off(&(commit + 1));
            let uncommitted_changes = self.changes.split_off(&(commit + 1));
            self.proposals.failed += (uncommitted.len() + uncommitted_changes.len()) as u64;
            for (_, write) in uncommitted {
                self.effects.push(Effect::Answer(
                    write.handle,
                    ResponseKind::Unknown { reason: "leadership lost; retry".to_string() },
                ));
            }
            for (_, change) in uncommitted_changes {
                self.effects.push(Effect::Answer(
                    change.handle,
                    ResponseKind::Unknown {
                        reason: "leadership lost before the change committed; check `member list`"
                            .to_string(),
                    },
                ));
            }
        }
        self.role = role;
    }

    /// Starts a snapshot in the background when enough entries or bytes
    /// were applied since the last one: the driver gets a copy of the store
    /// (its values shared, not copied) to serialize and goes on;
    /// [`Replica::snapshot_taken`] compacts the log once the file is
    /// durable. One at a time; one that fails is tried again at the next
    /// threshold.
    fn maybe_snapshot(&mut self) {
        let applied = self.kv.applied();
        let by_entries = applied >= self.last_snapshot_index.saturating_add(self.config.snapshot_entries);
        let by_bytes = self.log_bytes_since_snapshot >= self.config.snapshot_log_bytes
            && applied > self.last_snapshot_index;
        if self.snapshot_taking || !(by_entries || by_bytes) {
            return;
        }
        let Some(meta) = self.node.snapshot_meta_at(applied) else {
            return;
        };
        self.log_bytes_since_snapshot = 0;
        self.last_snapshot_index = applied;
        self.snapshot_taking = true;
        debug!(node = self.config.id, index = applied, "taking a snapshot in the background");
        self.effects.push(Effect::TakeSnapshot { kv: Box::new(self.kv.clone()), meta });
    }
}

/// Renders an entry for the `log` view.
pub fn describe_entry(entry: &Entry) -> String {
    match &entry.payload {
        EntryPayload::Blank => "(leader blank)".to_string(),
        EntryPayload::Membership(_) => match entry.payload.decode_membership() {
            Some(Ok(m)) => format!(
                "(membership: voters {:?}, outgoing {:?}, learners {:?})",
                m.voters().incoming.iter().collect::<Vec<_>>(),
                m.voters().outgoing.iter().collect::<Vec<_>>(),
                m.learners()
            ),
            _ => "(membership, undecodable)".to_string(),
        },
        EntryPayload::Command(data) => match raft_codec::decode::<Command>(data) {
            Ok(c) => describe_command(&c),
            Err(_) => format!("<{} undecodable bytes>", data.len()),
        },
    }
}
