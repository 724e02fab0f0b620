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
use crate::types::{EntryPayload, HardState, Index, NodeId, Snapshot, SnapshotMeta, Term};

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
    /// Bytes handed to the driver so far (in `SaveSnapshotChunk`s).
    pub(super) received_bytes: u64,
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
    /// The index of the log entry whose membership is in force; at or
    /// below the snapshot index when it is `base_membership`.
    pub(super) membership_index: Index,
    /// The membership at the snapshot index (the snapshot's, or the
    /// configured voters before any snapshot): what is in force when no
    /// configuration entry after it is in the log.
    pub(super) base_membership: Membership,
    /// The log was truncated at `.1` after batches before `.0` were handed
    /// out: their reports make durable only what lies below it.
    pub(super) rewrite: Option<(u64, Index)>,
    /// This node's own vote became durable in this term: the candidate
    /// counts it (see `RaftNode::count_own_vote`).
    pub(super) own_vote_durable: Option<Term>,
}

impl Shared {
    /// After entries from `from` on were put in the log: the latest
    /// configuration among them, if it is the log's latest, takes effect at
    /// once (dissertation §4.1: a server uses the latest configuration in its
    /// log, committed or not).
    pub(super) fn note_memberships_from(&mut self, from: Index) {
        // (Entries from a leader were checked to decode: `entries_well_formed`.)
        let lowest = from.max(self.membership_index).max(self.log.first_index());
        let latest = (lowest..=self.log.last_index()).rev().find_map(|i| {
            let entry = self.log.entry(i)?;
            matches!(entry.payload, EntryPayload::Membership(_))
                .then(|| Some((i, entry.payload.decode_membership()?.ok()?)))
                .flatten()
        });
        if let Some((index, membership)) = latest {
            self.membership_index = index;
            self.set_membership(membership);
        }
    }

    /// After the log lost its tail (a follower's conflicting entries were
    /// replaced): if the configuration in force was among them, the latest
    /// one left takes effect again.
    pub(super) fn revert_truncated_membership(&mut self) {
        let index = self.membership_index;
        let gone = index > self.log.snapshot_index()
            && !matches!(self.log.entry(index).map(|e| &e.payload), Some(EntryPayload::Membership(_)));
        if gone {
            let (index, membership) = self.scan_membership_at(self.log.last_index());
            self.membership_index = index;
            self.set_membership(membership);
        }
    }

    /// The membership in force at `index`: the latest configuration entry
    /// at or below it, else the base one; and that entry's index.
    pub(super) fn membership_at(&self, index: Index) -> (Index, Membership) {
        if self.membership_index <= index {
            // No configuration entry after `index`: the one in force.
            return (self.membership_index, self.tracker.membership().clone());
        }
        self.scan_membership_at(index)
    }

    /// [`Shared::membership_at`] from the log itself, whatever is in force.
    pub(super) fn scan_membership_at(&self, index: Index) -> (Index, Membership) {
        let mut i = index.min(self.log.last_index());
        while i > self.log.snapshot_index() {
            let entry = self.log.entry(i);
            if let Some(e) = entry.filter(|e| matches!(e.payload, EntryPayload::Membership(_))) {
                if let Some(Ok(m)) = e.payload.decode_membership() {
                    return (i, m);
                }
            }
            i -= 1;
        }
        (self.log.snapshot_index(), self.base_membership.clone())
    }

    /// Whether this node votes in the membership in force (a learner, a
    /// removed node and one not yet added do not, and never campaign).
    pub(super) fn is_voter(&self) -> bool {
        self.tracker.is_voter(self.id)
    }

    /// Whether this node starts elections: a voter in the membership in
    /// force; or a node that the latest configuration entry removed or
    /// demoted, while that entry is not known to be committed, since it may
    /// still be needed to elect the leader that commits it (dissertation
    /// §4.2.2: with the entry in its log and not in the other voters', its
    /// vote goes to no one else, and waiting would leave no electable node).
    /// It does not count its own vote: tallies are over the voters in
    /// force. Learners that were never voters, and nodes not yet added,
    /// never campaign.
    pub(super) fn may_campaign(&self) -> bool {
        if self.is_voter() {
            return true;
        }
        let index = self.membership_index;
        index > self.log.commit()
            && index > self.log.snapshot_index()
            && self.scan_membership_at(index - 1).1.is_voter(self.id)
    }

    /// Puts `membership` in force: the tracker takes it, and the peers to
    /// send to follow it.
    pub(super) fn set_membership(&mut self, membership: Membership) {
        let next = self.log.last_index() + 1;
        self.tracker.set_membership(membership, next);
        self.update_peers();
    }

    /// The peers to send to follow the tracker (departing members included).
    pub(super) fn update_peers(&mut self) {
        let id = self.id;
        self.peers = self.tracker.member_ids().filter(|&m| m != id).collect();
    }

    /// Term, vote and commit index as they are now (not necessarily durable).
    pub(super) fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.commit() }
    }
}
