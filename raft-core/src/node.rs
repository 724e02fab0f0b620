//! The Raft node: term and vote handling once in `step`, then one function per role.

use crate::action::Action;
use crate::config::Config;
use crate::error::{ConfigError, ProposeError, RestartError, SnapshotError, TransferError};
use crate::message::Message;
use crate::status::Status;
use crate::types::{DurableState, Entry, HardState, Index, NodeId, Role, SnapshotMeta, Term};

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

/// One Raft node.
pub struct RaftNode {
    _private: (),
}

#[allow(unused_variables, missing_docs)]
impl RaftNode {
    /// A fresh node with an empty log.
    pub fn new(config: Config) -> Result<RaftNode, ConfigError> {
        todo!()
    }
    /// Rebuilds a node from what it had made durable. The driver must have
    /// restored its state machine from `durable.snapshot` (if any) first.
    pub fn restart(config: Config, durable: DurableState) -> Result<RaftNode, RestartError> {
        todo!()
    }
    /// One logical clock tick.
    pub fn tick(&mut self) {
        todo!()
    }
    /// A message from a peer.
    pub fn step(&mut self, message: Message) {
        todo!()
    }
    /// Proposes a command.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<Proposed, ProposeError> {
        todo!()
    }
    /// Requests a linearizable read point; answered by ReadReady/ReadFailed.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        todo!()
    }
    /// Starts handing leadership to `to`.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        todo!()
    }
    /// Starts an election now (skips the election timeout; PreVote still applies).
    pub fn campaign(&mut self) {
        todo!()
    }
    /// The driver made persist batch `id` durable (and every earlier one).
    pub fn persisted(&mut self, id: u64) {
        todo!()
    }
    /// The driver applied entries up to `index`.
    pub fn applied(&mut self, index: Index) {
        todo!()
    }
    /// The driver took a snapshot of the state machine at `index` (<= applied);
    /// the log up to `index` is compacted.
    pub fn snapshot_taken(&mut self, index: Index, data: Vec<u8>) -> Result<(), SnapshotError> {
        todo!()
    }
    /// Drains the actions produced so far, in the order they must be executed.
    #[must_use = "actions must be executed by the driver"]
    pub fn take_actions(&mut self) -> Vec<Action> {
        todo!()
    }
    pub fn id(&self) -> NodeId {
        todo!()
    }
    pub fn role(&self) -> Role {
        todo!()
    }
    pub fn is_leader(&self) -> bool {
        todo!()
    }
    pub fn term(&self) -> Term {
        todo!()
    }
    pub fn leader(&self) -> Option<NodeId> {
        todo!()
    }
    pub fn hard_state(&self) -> HardState {
        todo!()
    }
    pub fn commit_index(&self) -> Index {
        todo!()
    }
    pub fn applied_index(&self) -> Index {
        todo!()
    }
    pub fn first_index(&self) -> Index {
        todo!()
    }
    pub fn last_index(&self) -> Index {
        todo!()
    }
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        todo!()
    }
    pub fn term_at(&self, index: Index) -> Option<Term> {
        todo!()
    }
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        todo!()
    }
    pub fn status(&self) -> Status {
        todo!()
    }
    pub fn check_invariants(&self) -> Result<(), String> {
        todo!()
    }
}
