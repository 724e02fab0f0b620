//! Static configuration of a node, validated once.

use crate::error::ConfigError;
use crate::types::NodeId;

/// Largest cluster the core accepts. Bounds per-node state and keeps quorum
/// math on small stack arrays meaningful.
pub const VOTERS_MAX: usize = 64;

/// Configuration of one node. Timeouts are in ticks: the driver decides how
/// long a tick is (for example 10 ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id (non-zero). Who the members are is not configuration:
    /// it is given once, when a cluster is bootstrapped
    /// ([`RaftNode::bootstrap`](crate::RaftNode::bootstrap)), and from then on
    /// lives in the log and in snapshots.
    pub id: NodeId,
    /// Lower bound of the randomized election timeout, in ticks (§5.2).
    pub election_timeout_ticks_min: u32,
    /// Upper bound (exclusive) of the randomized election timeout, in ticks.
    pub election_timeout_ticks_max: u32,
    /// Ticks between heartbeats from a leader; must be below the election timeout.
    pub heartbeat_interval_ticks: u32,
    /// Run a PreVote round before raising the term (dissertation §9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a majority for an election timeout
    /// steps down, and followers that hear from a leader ignore vote requests
    /// for a minimum election timeout (leader lease, dissertation §6.2 / §9.6).
    pub check_quorum: bool,
    /// Most append messages in flight to one follower while replicating.
    pub max_inflight_appends: usize,
    /// Most bytes of entries in flight to one follower while replicating
    /// (one append is always let out). `0` disables the limit.
    pub max_inflight_bytes: u64,
    /// Byte budget of the entries in one append message (at least one entry is
    /// always sent).
    pub max_append_bytes: usize,
    /// Size of one snapshot chunk, in bytes.
    pub snapshot_chunk_bytes: usize,
    /// Most entries the leader accepts beyond its commit index before refusing
    /// proposals (back-pressure). `0` disables the limit.
    pub max_uncommitted_entries: u64,
    /// Most bytes ([`crate::Entry::size_bytes`]) of entries the leader holds
    /// beyond its commit index before refusing proposals; one entry is always
    /// let in. `0` disables the limit.
    pub max_uncommitted_bytes: u64,
    /// Most bytes of a snapshot this node takes from a leader; one growing
    /// past it while it arrives is dropped (and counted). `0`: no limit.
    pub snapshot_bytes_max: u64,
    /// Seed of the node's PRNG (election timeout jitter). Nodes may share it:
    /// each derives its own stream from the seed and its `id`, independent
    /// of every other id's.
    pub seed: u64,
}

impl Config {
    /// A configuration with the defaults for a LAN: with a 10 ms tick, elections
    /// after 150–300 ms and heartbeats every 50 ms; at most 16,384 entries or
    /// 64 MiB uncommitted on a leader.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_timeout_ticks_min: 15,
            election_timeout_ticks_max: 30,
            heartbeat_interval_ticks: 5,
            pre_vote: true,
            check_quorum: true,
            max_inflight_appends: 256,
            max_inflight_bytes: 8 << 20,
            max_append_bytes: 1 << 20,
            snapshot_chunk_bytes: 1 << 20,
            max_uncommitted_entries: 16_384,
            max_uncommitted_bytes: 64 << 20,
            snapshot_bytes_max: 0,
            seed: 0,
        }
    }

    /// Checks the configuration; every later assumption of the core rests on it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError::ZeroId);
        }
        if self.heartbeat_interval_ticks == 0 {
            return Err(ConfigError::Timeouts("heartbeat interval must be at least one tick"));
        }
        if self.election_timeout_ticks_min <= self.heartbeat_interval_ticks {
            return Err(ConfigError::Timeouts(
                "the minimum election timeout must exceed the heartbeat interval",
            ));
        }
        if self.election_timeout_ticks_max <= self.election_timeout_ticks_min {
            return Err(ConfigError::Timeouts("the maximum election timeout must exceed the minimum"));
        }
        if self.max_inflight_appends == 0 {
            return Err(ConfigError::Limits("max_inflight_appends must be at least 1"));
        }
        if self.max_append_bytes == 0 || self.snapshot_chunk_bytes == 0 {
            return Err(ConfigError::Limits("max_append_bytes and snapshot_chunk_bytes must be at least 1"));
        }
        Ok(())
    }
}
