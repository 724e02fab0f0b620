//! What every role has: term, vote, log, the progress tracker, timers, the
//! persist bookkeeping and the actions being gathered.

use std::collections::VecDeque;

use crate::action::Action;
use crate::config::Config;
use crate::log::RaftLog;
use crate::membership::Membership;
use crate::message::Message;
use crate::rng::Rng;
use crate::status::Counters;
use crate::tracker::ProgressTracker;
use crate::types::{HardState, Index, NodeId, Snapshot, SnapshotMeta, Term};

/// A persist batch handed to the driver and not yet reported durable.
#[derive(Clone, Copy, Debug)]
pub(super) struct InflightPersist {
    pub(super) id: u64,
    /// The last entry written by the batch, if it wrote entries.
    pub(super) last_entry: Option<(Index, Term)>,
    /// The snapshot index, if the batch wrote a snapshot.
    pub(super) snapshot_index: Option<Index>,
}

/// A snapshot being received in chunks.
#[derive(Debug)]
pub(super) struct IncomingSnapshot {
    pub(super) meta: SnapshotMeta,
    pub(super) data: Vec<u8>,
}

/// The state every role shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) id: NodeId,
    /// The membership and every member's progress (this node's included).
    pub(super) tracker: ProgressTracker,
    /// Every member but this node, in order: whom to send to.
    pub(super) peers: Vec<NodeId>,

    pub(super) term: Term,
    pub(super) vote: Option<NodeId>,
    pub(super) leader: Option<NodeId>,
    pub(super) log: RaftLog,

    /// The latest snapshot (taken here or installed from a leader), kept to
    /// send to followers that fell behind the log's first index.
    pub(super) snapshot: Option<Snapshot>,
    /// Highest index the driver reported applied.
    pub(super) applied: Index,
    /// Highest index handed out in `Apply`/`ApplySnapshot`.
    pub(super) apply_emitted: Index,
    /// An installed snapshot, durable, waiting to be handed out for apply.
    pub(super) snapshot_to_apply: Option<Snapshot>,
    pub(super) incoming_snapshot: Option<IncomingSnapshot>,
    /// A snapshot received in full, handed to the driver to check
    /// ([`Action::CheckSnapshot`]): who sent it, and what it is.
    pub(super) snapshot_to_check: Option<(NodeId, SnapshotMeta)>,

    pub(super) election_elapsed: u32,
    pub(super) heartbeat_elapsed: u32,
    pub(super) election_timeout: u32,
    pub(super) rng: Rng,

    /// The hard state last handed to the driver.
    pub(super) persisted_hard_state: HardState,
    /// An installed snapshot not yet handed to the driver.
    pub(super) snapshot_to_persist: Option<Snapshot>,
    pub(super) next_persist_id: u64,
    pub(super) persists_inflight: VecDeque<InflightPersist>,
    /// Messages waiting for a persist batch (by id) to become durable.
    pub(super) msgs_after_persist: VecDeque<(u64, Message)>,

    pub(super) actions: Vec<Action>,
    pub(super) counters: Counters,
    /// This node's own vote became durable in this term: the candidate
    /// counts it (see `RaftNode::count_own_vote`).
    pub(super) own_vote_durable: Option<Term>,
}

impl Shared {
    /// Puts `membership` in force: the tracker takes it, and the peers to
    /// send to follow it.
    pub(super) fn set_membership(&mut self, membership: Membership) {
        let next = self.log.last_index() + 1;
        self.tracker.set_membership(membership, next);
        let id = self.id;
        self.peers = self.tracker.member_ids().filter(|&m| m != id).collect();
    }

    /// Term, vote and commit index as they are now (not necessarily durable).
    pub(super) fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.commit() }
    }
}
