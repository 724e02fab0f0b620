//! Basic vocabulary shared by every module: ids, terms, indexes, log entries,
//! hard state and snapshots.

use serde::{Deserialize, Serialize};

use crate::membership::Membership;

/// Identifier of a node in the cluster. `0` is never a valid id.
pub type NodeId = u64;
/// A Raft term (§5.1). Terms start at 0 on a fresh node and only grow.
pub type Term = u64;
/// A log index. The first real entry has index 1; index 0 is the empty prefix.
pub type Index = u64;

/// The largest term the core accepts from disk: half the range of `u64`, so
/// that every `term + 1` the core computes is exact. Durable state beyond it
/// is refused, never wrapped or saturated (a term stuck at `u64::MAX` could
/// never hold another election).
pub const TERM_MAX: Term = u64::MAX / 2;
/// The largest index the core accepts from disk, for the same reason as
/// [`TERM_MAX`].
pub const INDEX_MAX: Index = u64::MAX / 2;
/// The largest term the core accepts from a peer: half of [`TERM_MAX`], so
/// that a node whose term a peer raised that far still has 2^62 elections of
/// its own before its durable term could reach [`TERM_MAX`] (at the limit
/// itself, one election made a hard state that no restart would take).
pub const PEER_TERM_MAX: Term = TERM_MAX / 2;
/// The largest index the core accepts from a peer, half of [`INDEX_MAX`],
/// for the same reason as [`PEER_TERM_MAX`]: a snapshot at the limit
/// itself, then one blank entry of a new leader, made a log that no restart
/// would take.
pub const PEER_INDEX_MAX: Index = INDEX_MAX / 2;

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryPayload {
    /// The empty entry a new leader appends to commit entries of earlier terms
    /// (Raft paper §5.4.2, dissertation §6.4). The state machine ignores it.
    Blank,
    /// An opaque command for the state machine.
    Command(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A new membership, in force from the moment the entry is in a log
    /// (dissertation §4.1), committed or not. The state machine ignores it;
    /// a driver may read the members' contexts (their addresses) from it.
    ///
    /// Held encoded ([`EntryPayload::membership`] and
    /// [`EntryPayload::decode_membership`]), so that an entry is cloned and
    /// dropped like a command: with a decoded membership in the enum, every
    /// copy of every entry went through a larger clone and drop, and C1
    /// lost a fifth of its speed.
    /// (A boxed slice, not a `Vec`, so that it fits beside a command's
    /// `Vec` and an entry stays 40 bytes.)
    Membership(#[serde(with = "serde_bytes")] Box<[u8]>),
}

/// The most bytes an encoded membership may take (64 voters and learners
/// with their contexts fit many times over).
const MEMBERSHIP_BYTES_MAX: usize = 1 << 20;

fn membership_codec() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MEMBERSHIP_BYTES_MAX>()
}

impl EntryPayload {
    /// The payload of a configuration entry for `membership`.
    pub fn membership(membership: &Membership) -> EntryPayload {
        let bytes = bincode::serde::encode_to_vec(membership, membership_codec())
            .expect("a membership always encodes");
        EntryPayload::Membership(bytes.into_boxed_slice())
    }

    /// The membership of a configuration entry, decoded and checked; `None`
    /// for other entries. Bytes that do not decode, or decode to a
    /// membership with no voters or one that breaks an invariant, are an
    /// error (a leader never writes them).
    pub fn decode_membership(&self) -> Option<Result<Membership, String>> {
        let EntryPayload::Membership(bytes) = self else { return None };
        let decoded = bincode::serde::decode_from_slice::<Membership, _>(bytes, membership_codec());
        Some(match decoded {
            Ok((m, used)) if used == bytes.len() => {
                if m.voters().incoming.is_empty() {
                    Err("a configuration with no voters".to_string())
                } else {
                    m.check_invariants().map(|()| m)
                }
            }
            Ok((_, used)) => Err(format!("{} bytes after the configuration", bytes.len() - used)),
            Err(e) => Err(format!("the configuration does not decode: {e}")),
        })
    }
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The position of the entry in the log.
    pub index: Index,
    /// The command, or a blank.
    pub payload: EntryPayload,
}

impl Entry {
    /// Approximate size in bytes, used for batching by a byte budget.
    pub fn size_bytes(&self) -> usize {
        Entry::payload_size_bytes(match &self.payload {
            EntryPayload::Blank => 0,
            EntryPayload::Command(data) => data.len(),
            EntryPayload::Membership(bytes) => bytes.len(),
        })
    }

    /// [`Entry::size_bytes`] of an entry whose command is `command_bytes` long.
    pub fn payload_size_bytes(command_bytes: usize) -> usize {
        24 + command_bytes
    }
}

/// The state that must be durable before the node may act on it (Raft paper,
/// Figure 2, "persistent state on all servers"), plus the commit index, which
/// is durable as a hint so that a restarted node can apply without waiting for
/// the leader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest index known committed when this state was written.
    pub commit: Index,
}

/// Where a snapshot sits in the log, and the configuration at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The index of the last entry the snapshot covers.
    pub index: Index,
    /// The term of that entry.
    pub term: Term,
    /// The membership in force at that point (the latest configuration in
    /// the log up to `index`): a node restarting from, or installing, the
    /// snapshot takes it. (Shared: a membership is 128 bytes, and inline it
    /// doubled the size of every message and action.)
    pub membership: std::sync::Arc<Membership>,
}

/// A snapshot of the state machine as the core knows it: where it sits and
/// how many bytes its data has.
///
/// The bytes themselves (the state machine's serialized state at
/// `meta.index`, possibly gigabytes) live with the driver, in a file or a
/// buffer of its own; the core never holds them. A leader asks for ranges
/// of them to send ([`Action::SendSnapshotChunk`](crate::Action::SendSnapshotChunk)),
/// and a follower hands the driver each range it receives
/// ([`Action::SaveSnapshotChunk`](crate::Action::SaveSnapshotChunk)).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Snapshot {
    /// Where the snapshot sits in the log.
    pub meta: SnapshotMeta,
    /// The length of the snapshot's data, in bytes.
    pub data_bytes: u64,
}

/// Everything a node had made durable when it stopped: what
/// [`RaftNode::restart`](crate::RaftNode::restart) rebuilds the node from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableState {
    /// The last durable hard state.
    pub hard_state: HardState,
    /// The last durable snapshot, if any was ever taken or installed.
    pub snapshot: Option<Snapshot>,
    /// The durable log entries after the snapshot, contiguous and in order.
    /// Entries at or below the snapshot index are ignored.
    pub entries: Vec<Entry>,
}

/// The role a node plays (Raft paper §5.1, dissertation §9.6 for PreCandidate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Follows a leader; becomes a (pre-)candidate when its election timer fires.
    Follower,
    /// Asks whether it could win an election without raising its term (PreVote).
    PreCandidate,
    /// Asks for votes in a new term.
    Candidate,
    /// Accepts proposals and replicates the log.
    Leader,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        })
    }
}
