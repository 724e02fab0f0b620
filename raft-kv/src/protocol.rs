//! The client protocol of a Raft Lite node: a request names what is asked
//! (a write, a read, the node's status or log), and the response says what
//! happened. Carried in frames after a client's hello (see `raft-net`).

use raft_core::{Index, MembershipChange, NodeId, Role, Term};
use serde::{Deserialize, Serialize};

use crate::command::{Command, WriteResult};

/// A request from a client. `id` is echoed in the response so that many
/// requests can be in flight on one connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    /// Echoed in the response.
    pub id: u64,
    /// What is asked.
    pub kind: RequestKind,
}

/// The kinds of client requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestKind {
    /// A write; answered once committed and applied.
    Write(Command),
    /// Read a key: linearizable (through ReadIndex, leader only) unless
    /// `stale`, in which case any node answers from its own state.
    Get {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Accept a possibly stale answer from any node.
        stale: bool,
    },
    /// This node's status.
    Status,
    /// Log entries of this node, from index `from`, at most `limit`.
    Log {
        /// First index wanted.
        from: Index,
        /// Most entries returned.
        limit: u64,
    },
    /// The members as the leader sees them (leader only).
    Members,
    /// Change the membership: add voters or learners (each with the address
    /// it serves on as its context), promote learners, remove members. One
    /// voter changed is a simple change, more a joint one. Answered once the
    /// configuration entry commits (leader only).
    ChangeMembers(MembershipChange),
    /// Hand leadership to `to`; answered once `to` leads, or with why not
    /// (leader only).
    TransferLeader {
        /// The voter to hand over to.
        to: NodeId,
    },
}

/// A response to a [`ClientRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientResponse {
    /// The request's id.
    pub id: u64,
    /// The answer.
    pub result: ResponseKind,
}

/// The kinds of responses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseKind {
    /// A write was applied (exactly once).
    Written {
        /// The log index of the entry that applied it (for a retry that
        /// found the write applied already, the index of the retry's entry).
        index: Index,
        /// What it did.
        result: WriteResult,
    },
    /// A read's value.
    Value {
        /// The store's applied index when it was read: the value is as of
        /// this entry.
        index: Index,
        /// The value, or `None` if the key is absent.
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
    },
    /// This node is not the leader; try `leader` if known.
    NotLeader {
        /// The leader's id and client address, if known.
        leader: Option<(NodeId, String)>,
    },
    /// The write may or may not have been applied (leadership changed while
    /// it was in flight). Retry with the same session and sequence number:
    /// it will apply at most once.
    Unknown {
        /// Why.
        reason: String,
    },
    /// This node's status.
    Status(NodeStatus),
    /// Log entries.
    Log(Vec<LogEntryView>),
    /// The request could not be served now (for example back-pressure);
    /// retrying later may succeed.
    Error {
        /// One sentence.
        message: String,
    },
    /// The request is refused for good: retrying it cannot succeed (a key
    /// or value above the size limits, bookkeeping from a client).
    Invalid {
        /// One sentence naming what is wrong and the limit.
        message: String,
    },
    /// Every member, as the leader sees it.
    Members(Vec<MemberView>),
    /// The membership change is committed, at `index`.
    MembersChanged {
        /// The configuration entry's index.
        index: Index,
    },
    /// Leadership was handed over.
    LeaderTransferred {
        /// The new leader.
        leader: NodeId,
    },
}

/// What `raft-client status` shows for one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id.
    pub id: NodeId,
    /// The address it serves on.
    pub address: String,
    /// Its process id.
    pub pid: u32,
    /// Its role.
    pub role: Role,
    /// Its term.
    pub term: Term,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its commit index.
    pub commit: Index,
    /// Its applied index.
    pub applied: Index,
    /// Its last log index.
    pub last_index: Index,
    /// Its first log index (after the snapshot).
    pub first_index: Index,
    /// Its snapshot index.
    pub snapshot_index: Index,
    /// Number of keys in the state machine.
    pub keys: u64,
    /// The cluster id the node was bootstrapped with.
    pub cluster_id: String,
    /// The cluster token it knows (0: none yet).
    pub cluster_token: u64,
    /// The members known to hold this cluster's data (a member listed here
    /// whose data directory is empty has lost its data).
    pub members_with_data: Vec<NodeId>,
    /// The voters of the membership in force on this node (both halves of
    /// a joint configuration).
    pub voters: Vec<NodeId>,
    /// Its learners.
    pub learners: Vec<NodeId>,
}

/// One log entry as the `log` view shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntryView {
    /// Its index.
    pub index: Index,
    /// Its term.
    pub term: Term,
    /// A readable rendering of the command.
    pub command: String,
    /// Whether it is known committed on this node.
    pub committed: bool,
}

/// What a member is in the configuration in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberRole {
    /// It votes.
    Voter,
    /// It receives the log and does not vote.
    Learner,
}

impl std::fmt::Display for MemberRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemberRole::Voter => "voter",
            MemberRole::Learner => "learner",
        })
    }
}

/// One member as `raft-client member list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Its id.
    pub id: NodeId,
    /// The address it serves on (its context in the configuration).
    pub address: String,
    /// Voter or learner.
    pub role: MemberRole,
    /// Whether it votes only in the outgoing half of a joint configuration
    /// (it is being removed or demoted).
    pub outgoing: bool,
    /// The last index the leader knows it holds (the leader's own durable
    /// index for itself).
    pub match_index: Index,
    /// How many entries it is behind the leader's last index.
    pub lag_entries: u64,
}

impl ResponseKind {
    /// About how many bytes the answer takes while it waits to be written
    /// to its client (the transport bounds what a connection may queue).
    pub fn queued_bytes(&self) -> usize {
        64 + match self {
            ResponseKind::Value { value: Some(v), .. } => v.len(),
            ResponseKind::Written { result: WriteResult::Cas { current: Some(v), .. }, .. } => v.len(),
            ResponseKind::Status(_) | ResponseKind::Log(_) | ResponseKind::Members(_) => 4096,
            _ => 0,
        }
    }
}
