//! What the core asks its driver to do.
//!
//! The driver drains actions with [`RaftNode::take_actions`](crate::RaftNode::take_actions)
//! and executes them **in order**. The order already encodes every safety rule:
//! a message that depends on durable state is not in the batch until the driver
//! has called [`RaftNode::persisted`](crate::RaftNode::persisted) for the
//! [`PersistBatch`] it depends on. The driver may therefore write a
//! `Persist`, send the messages after it without waiting for the fsync (they do
//! not depend on it), fsync once for the whole batch (group commit), and then
//! report `persisted`.

use crate::message::Message;
use crate::types::{Entry, HardState, Index, NodeId, Snapshot};

/// One thing for the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Make this state durable, then call
    /// [`RaftNode::persisted(batch.id)`](crate::RaftNode::persisted).
    /// Batches must become durable in id order.
    Persist(PersistBatch),
    /// Send this message to `message.to`. Delivery may fail; Raft retransmits.
    Send(Message),
    /// Send a chunk of this node's snapshot: `message` is a
    /// [`MessageBody::Snapshot`](crate::MessageBody::Snapshot) whose `data`
    /// is left empty; fill it with the `len` bytes at its `offset` of the
    /// data of the snapshot its `meta` names (the one this node last took
    /// or installed), then send it like [`Action::Send`]. If those bytes
    /// cannot be read any more (a newer snapshot replaced that one), drop
    /// the chunk: the leader sends again.
    SendSnapshotChunk {
        /// The chunk's message, with empty `data`.
        message: Message,
        /// How many bytes of the snapshot's data to put in it.
        len: u64,
    },
    /// Store `data` at `offset` of the data of the snapshot `meta` that a
    /// leader is sending this node (offset 0 starts it, dropping what was
    /// stored of any other). Chunks come in order and without gaps. Nothing
    /// of it needs to be durable, or is trusted, before
    /// [`Action::CheckSnapshot`] names it complete.
    SaveSnapshotChunk {
        /// The snapshot being received.
        meta: crate::types::SnapshotMeta,
        /// Where `data` goes within the snapshot's data.
        offset: u64,
        /// The chunk.
        data: Vec<u8>,
    },
    /// Apply these committed entries to the state machine, in order, then
    /// report [`RaftNode::applied`](crate::RaftNode::applied). Each committed
    /// entry is handed out exactly once (again only after a restart).
    /// Only entries durable on this node are handed out.
    Apply(Vec<Entry>),
    /// A snapshot from the leader arrived in full (every chunk was handed
    /// out in a [`Action::SaveSnapshotChunk`]). Check it entirely (its
    /// length, and decode it as the state machine would), then call
    /// [`RaftNode::install_snapshot`](crate::RaftNode::install_snapshot) with
    /// it if it is good, or
    /// [`RaftNode::reject_snapshot`](crate::RaftNode::reject_snapshot) if not.
    /// Until then nothing of it is durable and the log is unchanged.
    CheckSnapshot(Snapshot),
    /// Replace the state machine with this snapshot (its data checked, and
    /// made durable by an earlier `Persist`), then report
    /// `applied(snapshot.meta.index)`.
    ApplySnapshot(Snapshot),
    /// The linearizable read `ctx` may be served once the state machine has
    /// applied `index` (ReadIndex, dissertation §6.4).
    ReadReady {
        /// The caller's context from [`RaftNode::read_index`](crate::RaftNode::read_index).
        ctx: u64,
        /// The read point.
        index: Index,
    },
    /// The read `ctx` cannot be served by this node: it is no longer leader.
    /// The caller should retry at `leader`, if known.
    ReadFailed {
        /// The caller's context.
        ctx: u64,
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// This node changed role or term (for logs and metrics; no action needed).
    RoleChanged {
        /// The new role.
        role: crate::types::Role,
        /// The current term.
        term: crate::types::Term,
        /// The known leader.
        leader: Option<NodeId>,
    },
}

/// State to make durable as one unit.
///
/// The driver writes, in this order: the snapshot (if any; it replaces the
/// durable snapshot and discards every durable entry), then the log change
/// (every durable entry with index `>= entries[0].index` is discarded, then
/// `entries` appended), then the hard state (if any). Then it makes all of it
/// durable (fsync) and reports [`RaftNode::persisted(id)`](crate::RaftNode::persisted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistBatch {
    /// Monotonically increasing id of this batch.
    pub id: u64,
    /// A snapshot received from the leader, to store before the entries.
    /// (Boxed: it is rare, and inline it made every [`Action`] larger.)
    pub snapshot: Option<Box<Snapshot>>,
    /// Entries to write; they replace any durable entries at or after the
    /// first one's index.
    pub entries: Vec<Entry>,
    /// The new hard state, if it changed.
    pub hard_state: Option<HardState>,
}

impl PersistBatch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }
}
