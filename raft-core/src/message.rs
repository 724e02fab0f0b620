//! Messages exchanged between nodes. They are plain data (serde-serializable);
//! `raft-net` frames them, the simulator passes them around in memory.

use serde::{Deserialize, Serialize};

use crate::types::{Entry, Index, NodeId, SnapshotMeta, Term, PEER_INDEX_MAX, PEER_TERM_MAX};

/// A message from one node to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// The sender's term. For a PreVote request it is the term the sender
    /// would campaign in (its term + 1), which it has not adopted.
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// RequestVote (§5.2) or, with `pre_vote`, a PreVote (dissertation §9.6).
    VoteRequest {
        /// True for a PreVote: the voter neither changes its term nor records a vote.
        pre_vote: bool,
        /// Index of the candidate's last log entry (§5.4.1).
        last_log_index: Index,
        /// Term of the candidate's last log entry (§5.4.1).
        last_log_term: Term,
        /// True when the election was started by a leadership transfer
        /// (TimeoutNow): voters then ignore their leader lease.
        transfer: bool,
    },
    /// The answer to a [`MessageBody::VoteRequest`].
    VoteResponse {
        /// Echoes the request's `pre_vote`.
        pre_vote: bool,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries (§5.3): entries following `prev_log_index`.
    Append {
        /// Index of the entry just before `entries`.
        prev_log_index: Index,
        /// Term of that entry.
        prev_log_term: Term,
        /// The entries, possibly empty (a probe).
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: Index,
    },
    /// The answer to an [`MessageBody::Append`] or a finished snapshot.
    AppendResponse(AppendResponse),
    /// A heartbeat: asserts leadership, carries the commit index the follower
    /// may adopt, and a ReadIndex round number.
    Heartbeat {
        /// `min(leader commit, follower match)`: never beyond what the follower holds.
        commit: Index,
        /// The ReadIndex round this heartbeat confirms (dissertation §6.4).
        read_round: u64,
    },
    /// The answer to a heartbeat.
    HeartbeatResponse {
        /// Echoes the heartbeat's round.
        read_round: u64,
    },
    /// One chunk of a snapshot (InstallSnapshot, Raft paper Figure 13).
    Snapshot {
        /// The snapshot being sent.
        meta: SnapshotMeta,
        /// Byte offset of `data` within the snapshot.
        offset: u64,
        /// The chunk.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// True on the last chunk.
        done: bool,
    },
    /// Acknowledges a snapshot chunk that was not the last; names the offset
    /// the follower expects next.
    SnapshotResponse {
        /// The index of the snapshot being received.
        index: Index,
        /// The next byte offset the follower wants.
        next_offset: u64,
    },
    /// Tells the recipient to start an election at once (leadership transfer,
    /// dissertation §3.10).
    TimeoutNow,
}

/// The answer to an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResponse {
    /// The follower's log matches the leader's up to `match_index`, durably.
    Accepted {
        /// The highest index known to match the leader's log.
        match_index: Index,
    },
    /// The consistency check failed at `rejected_index` (the append's
    /// `prev_log_index`). The hints let the leader skip a whole term at once
    /// (fast back-off, dissertation §5.3 / Figure 5.x optimisation).
    Rejected {
        /// The `prev_log_index` that did not match.
        rejected_index: Index,
        /// The term the follower holds at `rejected_index`, or `None` if its
        /// log is shorter than that.
        conflict_term: Option<Term>,
        /// With a `conflict_term`: the first index the follower holds of that
        /// term. Without: the follower's last index + 1.
        conflict_index: Index,
    },
}

impl Message {
    /// Whether every term and index the message carries is within
    /// [`PEER_TERM_MAX`] and [`PEER_INDEX_MAX`]; the core refuses a message
    /// that is not.
    pub fn within_bounds(&self) -> bool {
        let term = |t: Term| t <= PEER_TERM_MAX;
        let index = |i: Index| i <= PEER_INDEX_MAX;
        term(self.term)
            && match &self.body {
                MessageBody::VoteRequest { last_log_index, last_log_term, .. } => {
                    index(*last_log_index) && term(*last_log_term)
                }
                MessageBody::VoteResponse { .. }
                | MessageBody::HeartbeatResponse { .. }
                | MessageBody::TimeoutNow => true,
                MessageBody::Append { prev_log_index, prev_log_term, entries, leader_commit } => {
                    index(*prev_log_index)
                        && term(*prev_log_term)
                        && index(*leader_commit)
                        && entries.iter().all(|e| index(e.index) && term(e.term))
                }
                MessageBody::AppendResponse(AppendResponse::Accepted { match_index }) => index(*match_index),
                MessageBody::AppendResponse(AppendResponse::Rejected {
                    rejected_index,
                    conflict_term,
                    conflict_index,
                }) => index(*rejected_index) && conflict_term.is_none_or(term) && index(*conflict_index),
                MessageBody::Heartbeat { commit, .. } => index(*commit),
                MessageBody::Snapshot { meta, .. } => index(meta.index) && term(meta.term),
                MessageBody::SnapshotResponse { index: i, .. } => index(*i),
            }
    }
}

impl MessageBody {
    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageBody::VoteRequest { pre_vote: true, .. } => "pre-vote",
            MessageBody::VoteRequest { .. } => "vote",
            MessageBody::VoteResponse { pre_vote: true, .. } => "pre-vote-response",
            MessageBody::VoteResponse { .. } => "vote-response",
            MessageBody::Append { .. } => "append",
            MessageBody::AppendResponse(_) => "append-response",
            MessageBody::Heartbeat { .. } => "heartbeat",
            MessageBody::HeartbeatResponse { .. } => "heartbeat-response",
            MessageBody::Snapshot { .. } => "snapshot",
            MessageBody::SnapshotResponse { .. } => "snapshot-response",
            MessageBody::TimeoutNow => "timeout-now",
        }
    }
}
