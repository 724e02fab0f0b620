//! A read-only view of a node, for status pages, logs and tests.

use crate::types::{Index, NodeId, Role, Term};

/// How the leader is replicating to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// Sends one append at a time until it finds where the logs match.
    Probe,
    /// Streams appends optimistically within the in-flight window.
    Replicate,
    /// Sends a snapshot because the entries the follower needs are compacted.
    Snapshot,
}

/// The leader's view of one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The follower's id.
    pub id: NodeId,
    /// Highest index known replicated on the follower.
    pub match_index: Index,
    /// Next index to send.
    pub next_index: Index,
    /// Replication mode.
    pub state: ReplicationState,
    /// Append messages sent and not yet acknowledged.
    pub inflight: usize,
    /// Whether the follower was heard from in the current check-quorum period.
    pub recently_active: bool,
}

/// Counters of inputs the core ignored or refused. Network input never makes
/// the core panic; it is counted here instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages from ids that are not voters, or addressed to another node.
    pub dropped_unknown_peer: u64,
    /// Messages from an older term.
    pub dropped_stale_term: u64,
    /// Vote requests ignored because a leader was heard from recently (lease).
    pub dropped_in_lease: u64,
    /// Messages that made no sense in the current role or state (for example
    /// an append response on a follower, or entries conflicting with committed ones).
    pub dropped_unexpected: u64,
    /// Messages carrying a term or index beyond [`crate::TERM_MAX`] or
    /// [`crate::INDEX_MAX`].
    pub dropped_out_of_range: u64,
    /// `TimeoutNow` messages and transfer vote requests refused because they
    /// did not come from (or right after) the current term's leader.
    pub dropped_transfer: u64,
    /// Snapshots from a leader that the driver found bad ([`crate::RaftNode::reject_snapshot`]).
    pub snapshots_rejected: u64,
    /// Snapshots from a leader dropped while arriving because they grew past
    /// [`crate::Config::snapshot_bytes_max`].
    pub snapshots_too_large: u64,
    /// Proposals refused.
    pub proposals_refused: u64,
    /// Elections started (real, not PreVote).
    pub elections: u64,
}

/// A snapshot of a node's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node's id.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// The leader it knows of in this term.
    pub leader: Option<NodeId>,
    /// Whom it voted for in this term.
    pub vote: Option<NodeId>,
    /// Highest index known committed.
    pub commit: Index,
    /// Highest index the driver reported applied.
    pub applied: Index,
    /// First index still in the log (after the snapshot).
    pub first_index: Index,
    /// Last index in the log.
    pub last_index: Index,
    /// Last index known durable.
    pub stable_index: Index,
    /// Index of the latest snapshot (0 if none).
    pub snapshot_index: Index,
    /// On a leader: each follower's progress, by id (learners included: a
    /// driver promotes a learner once its match index is close enough).
    pub progress: Vec<PeerStatus>,
    /// The membership in force (voters, outgoing voters, learners).
    pub membership: crate::membership::Membership,
    /// The index of the configuration entry that set it.
    pub membership_index: Index,
    /// Ignored and refused inputs.
    pub counters: Counters,
}
