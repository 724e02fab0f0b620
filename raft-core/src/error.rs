//! Expected refusals, as named errors. Invariant violations are not errors:
//! they are bugs and panic with the numbers involved.

use std::fmt;

use crate::types::{Index, NodeId};

/// Why a proposal was refused. The caller may retry elsewhere or later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This node is not the leader; `leader` is the leader it knows of, if any.
    NotLeader {
        /// The last leader this node heard from in its current term.
        leader: Option<NodeId>,
    },
    /// The leader is handing leadership over and accepts no proposals meanwhile.
    TransferInProgress,
    /// Too many entries await commit (`Config::max_uncommitted_entries`).
    Backpressure,
    /// A membership change waits for the leader to commit an entry of its
    /// own term first (a new leader does not yet know that the last change
    /// of an earlier term is committed: Ongaro, raft-dev 2015).
    NoCommitInTerm,
    /// Another membership change, at `index`, is not committed yet (or a
    /// joint configuration not yet left): one at a time.
    MembershipChangePending {
        /// The index of the pending change.
        index: Index,
    },
    /// The change does not apply to the current membership.
    Membership(crate::membership::MembershipError),
}

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposeError::NotLeader { leader: Some(id) } => {
                write!(f, "not the leader; node {id} is")
            }
            ProposeError::NotLeader { leader: None } => f.write_str("not the leader, and no leader is known"),
            ProposeError::TransferInProgress => f.write_str("leadership transfer in progress"),
            ProposeError::Backpressure => f.write_str("too many uncommitted entries"),
            ProposeError::NoCommitInTerm => {
                f.write_str("the leader has not yet committed an entry of its term; retry shortly")
            }
            ProposeError::MembershipChangePending { index } => write!(
                f,
                "the membership change at index {index} is not committed (or its joint configuration not left) \
                 yet; one change at a time"
            ),
            ProposeError::Membership(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ProposeError {}

/// Why a leadership transfer could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferError {
    /// Only a leader can transfer leadership.
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// The target is not another voter of the cluster.
    InvalidTarget(NodeId),
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::NotLeader { .. } => f.write_str("not the leader"),
            TransferError::InvalidTarget(id) => write!(f, "node {id} is not another voter"),
        }
    }
}

impl std::error::Error for TransferError {}

/// Why a snapshot reported by the driver was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotError {
    /// The snapshot index is beyond what has been applied.
    NotApplied {
        /// The snapshot's index.
        index: Index,
        /// What the driver had reported applied.
        applied: Index,
    },
    /// The log was already compacted at or beyond this index.
    Stale {
        /// The snapshot's index.
        index: Index,
        /// The current snapshot index.
        snapshot_index: Index,
    },
    /// This node does not know the membership at `index` (it joined, and
    /// the cluster's first configuration is not in its log): a snapshot
    /// there would carry none, which every follower refuses. A later index,
    /// past a configuration entry, can be snapshotted.
    MembershipUnknown {
        /// The snapshot's index.
        index: Index,
    },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::NotApplied { index, applied } => {
                write!(f, "snapshot index {index} is beyond applied index {applied}")
            }
            SnapshotError::Stale { index, snapshot_index } => {
                write!(f, "snapshot index {index} is not past the current snapshot at {snapshot_index}")
            }
            SnapshotError::MembershipUnknown { index } => {
                write!(f, "the membership at index {index} is not known here; snapshot at a later index")
            }
        }
    }
}

impl std::error::Error for SnapshotError {}

/// An invalid [`Config`](crate::Config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A node id of 0.
    ZeroId,
    /// The membership a cluster is bootstrapped with does not name this
    /// node as a voter.
    NotAVoter(NodeId),
    /// The membership a cluster is bootstrapped with breaks an invariant of
    /// [`Membership`](crate::Membership) (no voters, for one).
    Membership(String),
    /// Inconsistent timeouts.
    Timeouts(&'static str),
    /// A zero limit.
    Limits(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroId => f.write_str("node ids must be non-zero"),
            ConfigError::NotAVoter(id) => {
                write!(f, "node {id} is not among the voters of the membership it is bootstrapped with")
            }
            ConfigError::Membership(why) => write!(f, "cannot bootstrap with this membership: {why}"),
            ConfigError::Timeouts(why) | ConfigError::Limits(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Durable state that cannot be restarted from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestartError {
    /// The configuration is invalid.
    Config(ConfigError),
    /// The log entries are not contiguous after the snapshot.
    Gap {
        /// The index that was expected next.
        expected: Index,
        /// The index found.
        found: Index,
    },
    /// An entry's term is below its predecessor's (Leader Append-Only broken on disk).
    TermRegression {
        /// The index of the offending entry.
        index: Index,
    },
    /// The hard state's term is below the term of the last log entry.
    TermBehindLog,
    /// A durable term or index is beyond [`crate::TERM_MAX`] / [`crate::INDEX_MAX`].
    OutOfRange {
        /// What was out of range ("hard state term", "snapshot index", ...).
        what: &'static str,
        /// Its value.
        value: u64,
        /// The largest accepted.
        max: u64,
    },
    /// The durable snapshot's membership, or a configuration entry's, is
    /// invalid.
    Membership {
        /// The snapshot's or the entry's index.
        index: Index,
        /// The invariant broken.
        reason: String,
    },
}

impl fmt::Display for RestartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartError::Config(e) => write!(f, "invalid configuration: {e}"),
            RestartError::Gap { expected, found } => {
                write!(f, "durable log has a gap: expected index {expected}, found {found}")
            }
            RestartError::TermRegression { index } => {
                write!(f, "durable log term goes backwards at index {index}")
            }
            RestartError::Membership { index, reason } => {
                write!(f, "the durable membership at index {index} is invalid: {reason}")
            }
            RestartError::TermBehindLog => {
                f.write_str("durable hard state term is below the last log entry's term")
            }
            RestartError::OutOfRange { what, value, max } => {
                write!(f, "durable {what} {value} is beyond the largest the core accepts ({max})")
            }
        }
    }
}

impl std::error::Error for RestartError {}
