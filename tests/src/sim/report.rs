//! What a run produces: a [`Report`] of counts on success, a [`Failure`]
//! naming the seed and the first violated property otherwise.

use std::fmt;

/// A property the simulator checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Property {
    /// At most one leader per term (Raft Figure 3).
    ElectionSafety,
    /// Same index and term means same entry and same history (Figure 3).
    LogMatching,
    /// Committed entries are in every later leader's log (Figure 3).
    LeaderCompleteness,
    /// Every node applies a prefix of one sequence, and reaches the same
    /// state at the same index (Figure 3).
    StateMachineSafety,
    /// A live node's commit index never moves back.
    CommitMonotonic,
    /// `RaftNode::check_invariants` holds.
    NodeInvariants,
    /// The core's persist batches keep the durable log restartable, and a
    /// node restarts from it.
    Durability,
    /// The core did not panic.
    NoPanic,
    /// The client history is linearizable.
    Linearizability,
    /// After the faults stop, a leader is elected, every client finishes,
    /// and the members converge on the last committed configuration.
    Liveness,
    /// Every committed configuration is valid, one the membership function
    /// makes of the one before, and the same on every node.
    Membership,
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Property::ElectionSafety => "Election Safety",
            Property::LogMatching => "Log Matching",
            Property::LeaderCompleteness => "Leader Completeness",
            Property::StateMachineSafety => "State Machine Safety",
            Property::CommitMonotonic => "Commit Monotonic",
            Property::NodeInvariants => "Node Invariants",
            Property::Durability => "Durability",
            Property::NoPanic => "No Panic",
            Property::Linearizability => "Linearizability",
            Property::Liveness => "Liveness",
            Property::Membership => "Membership Safety",
        })
    }
}

/// The first property a run violated, with everything needed to replay it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The seed of the run.
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// The step at which the violation was seen.
    pub step: u64,
    /// The property violated.
    pub property: Property,
    /// What exactly went wrong, with the numbers.
    pub detail: String,
}

impl Failure {
    /// The command that replays this failure.
    pub fn replay_command(&self) -> String {
        format!("simulate --seed {} --nodes {}", self.seed, self.nodes)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} ({} nodes), step {}: {} violated: {}\nreplay with: {}",
            self.seed,
            self.nodes,
            self.step,
            self.property,
            self.detail,
            self.replay_command()
        )
    }
}

impl std::error::Error for Failure {}

/// Counts of what happened in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The seed of the run.
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// Steps simulated (fault and liveness phases).
    pub steps: u64,
    /// Elections started (nodes becoming candidates, PreVote rounds not counted).
    pub elections: u64,
    /// Distinct terms that had a leader.
    pub leaders: u64,
    /// Highest index known committed.
    pub committed: u64,
    /// Client operations that completed with a result.
    pub ops_ok: u64,
    /// Client operations whose outcome is unknown (timed out, gave up).
    pub ops_unknown: u64,
    /// Client operations that definitely did not take effect.
    pub ops_failed: u64,
    /// Snapshots sent to lagging followers (first chunks).
    pub snapshots_sent: u64,
    /// Snapshots installed by followers (`ApplySnapshot`).
    pub snapshots_installed: u64,
    /// Log compactions (snapshots taken by the driver).
    pub compactions: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Leadership transfers started.
    pub transfers: u64,
    /// Membership changes a leader accepted.
    pub membership_proposed: u64,
    /// Membership changes refused (not the leader, pending change, no
    /// commit in the term yet, invalid change).
    pub membership_refused: u64,
    /// Configurations committed after the founding one.
    pub configs_committed: u64,
    /// Committed configurations by number of (incoming) voters, 0..=7 (8+ in the last).
    pub configs_by_voters: [u64; 8],
    /// Committed configurations that were joint.
    pub joint_configs: u64,
    /// Nodes created after the founding ones.
    pub nodes_added: u64,
    /// Nodes stopped for good (removed, or crashed to be replaced).
    pub nodes_retired: u64,
    /// Voters crashed for good to be replaced.
    pub replacements: u64,
    /// Messages handed to the network.
    pub messages_sent: u64,
    /// Messages lost.
    pub messages_dropped: u64,
    /// Fingerprint of every action every node emitted, in order, with its
    /// step and node: two runs with the same seed must agree on it.
    pub trace_hash: u64,
}

impl Report {
    /// Adds another run's counts to these (for summaries); keeps this seed.
    pub fn accumulate(&mut self, other: &Report) {
        self.steps += other.steps;
        self.elections += other.elections;
        self.leaders += other.leaders;
        self.committed += other.committed;
        self.ops_ok += other.ops_ok;
        self.ops_unknown += other.ops_unknown;
        self.ops_failed += other.ops_failed;
        self.snapshots_sent += other.snapshots_sent;
        self.snapshots_installed += other.snapshots_installed;
        self.compactions += other.compactions;
        self.crashes += other.crashes;
        self.partitions += other.partitions;
        self.transfers += other.transfers;
        self.membership_proposed += other.membership_proposed;
        self.membership_refused += other.membership_refused;
        self.configs_committed += other.configs_committed;
        for (mine, theirs) in self.configs_by_voters.iter_mut().zip(other.configs_by_voters) {
            *mine += theirs;
        }
        self.joint_configs += other.joint_configs;
        self.nodes_added += other.nodes_added;
        self.nodes_retired += other.nodes_retired;
        self.replacements += other.replacements;
        self.messages_sent += other.messages_sent;
        self.messages_dropped += other.messages_dropped;
        self.trace_hash ^= other.trace_hash;
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "steps={} elections={} leaders={} committed={} ops ok={} unknown={} failed={} \
             snapshots sent={} installed={} compactions={} crashes={} partitions={} transfers={} \
             membership proposed={} refused={} configs committed={} (joint {}, by voters {:?}) \
             nodes added={} retired={} replacements={} messages sent={} dropped={} trace_hash={:016x}",
            self.steps,
            self.elections,
            self.leaders,
            self.committed,
            self.ops_ok,
            self.ops_unknown,
            self.ops_failed,
            self.snapshots_sent,
            self.snapshots_installed,
            self.compactions,
            self.crashes,
            self.partitions,
            self.transfers,
            self.membership_proposed,
            self.membership_refused,
            self.configs_committed,
            self.joint_configs,
            self.configs_by_voters,
            self.nodes_added,
            self.nodes_retired,
            self.replacements,
            self.messages_sent,
            self.messages_dropped,
            self.trace_hash
        )
    }
}
