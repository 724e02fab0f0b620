//! What a simulation run looks like: cluster size, seed, length, faults,
//! workload and the core's tuning.

/// Which faults the simulated world injects, and how often. Rates are
/// probabilities per message (`drop_rate`, `dup_rate`, `long_delay_rate`) or
/// per step (`*_rate` of events); durations are in simulation steps.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultConfig {
    /// Probability that a message is lost.
    pub drop_rate: f64,
    /// Probability that a message is delivered twice.
    pub dup_rate: f64,
    /// Messages take `1..=max_delay` steps (random, so they get reordered).
    pub max_delay: u64,
    /// Probability that a message takes up to ten times `max_delay` instead.
    pub long_delay_rate: f64,
    /// An fsync takes `1..=max_fsync_delay` steps (and completes in order).
    pub max_fsync_delay: u64,
    /// Inject random partitions (isolated leader, majority/minority, bridge,
    /// random link cuts, one-way cuts).
    pub partitions: bool,
    /// Probability per step that a partition starts (when none is active).
    pub partition_rate: f64,
    /// How long a partition lasts, in steps (inclusive range).
    pub partition_steps: (u64, u64),
    /// Inject random crashes (with restarts from durable state).
    pub crashes: bool,
    /// Probability per step that a node crashes.
    pub crash_rate: f64,
    /// Probability that a crash takes down the whole cluster.
    pub total_crash_share: f64,
    /// How long a crashed node stays down, in steps (inclusive range).
    pub down_steps: (u64, u64),
    /// Probability that a crash also drops the messages in flight to and from
    /// the node (its connections reset).
    pub crash_drops_inflight: f64,
    /// Probability per step that the leader is asked to transfer leadership
    /// to a random peer.
    pub transfer_rate: f64,
    /// The membership nemesis: new nodes join (empty, as learners, then
    /// promoted), voters leave (the leader included), joint changes of two
    /// or more voters, and crashed nodes are replaced by new ones; between 1
    /// and 7 voters.
    pub membership: bool,
    /// Probability per step that the nemesis starts a membership operation
    /// (when none is under way).
    pub membership_rate: f64,
    /// The nemesis creates nodes up to this many in all (ids `1..=max_nodes`).
    pub max_nodes: usize,
    /// Let the nemesis remove or demote voters by any change the
    /// live-majority rule allows (on in [`FaultConfig::mixed`]). Off, it
    /// keeps to changes where the voters that stay (alive) are a majority of
    /// the old ones, or, from two voters to one, the one leaving is down past
    /// the leader's fsync bound: the removals that raft-core before c7e06d8
    /// recovered from. Before it, the others could deadlock it for good:
    /// nodes that left held the newest configuration entry (the change, or
    /// the entry that leaves a joint one) and the voters that stayed did not
    /// (the leader lost leadership, or crashed before its own write was
    /// durable, before they got it); those voters, still in the older
    /// configuration, needed votes from the nodes that left, whose logs were
    /// ahead of theirs, and those nodes, non-voters in their own latest
    /// configuration, never campaigned (seeds 58, 2501 and 3336 of 3 nodes;
    /// `tests/tests/membership.rs` keeps the first as a scenario).
    pub all_removals: bool,
}

impl FaultConfig {
    /// A well-behaved world: short delays, nothing lost, no partitions, no
    /// crashes. Scenario tests start here and inject faults by hand.
    pub fn none() -> FaultConfig {
        FaultConfig {
            drop_rate: 0.0,
            dup_rate: 0.0,
            max_delay: 5,
            long_delay_rate: 0.0,
            max_fsync_delay: 3,
            partitions: false,
            partition_rate: 0.0,
            partition_steps: (0, 0),
            crashes: false,
            crash_rate: 0.0,
            total_crash_share: 0.0,
            down_steps: (0, 0),
            crash_drops_inflight: 0.0,
            transfer_rate: 0.0,
            membership: false,
            membership_rate: 0.0,
            max_nodes: 9,
            all_removals: false,
        }
    }

    /// Every fault at once: lossy, duplicating, reordering network; random
    /// partitions, crashes, leadership transfers and membership changes.
    pub fn mixed() -> FaultConfig {
        FaultConfig {
            drop_rate: 0.03,
            dup_rate: 0.02,
            max_delay: 15,
            long_delay_rate: 0.01,
            max_fsync_delay: 10,
            partitions: true,
            partition_rate: 1.0 / 600.0,
            partition_steps: (100, 1_500),
            crashes: true,
            crash_rate: 1.0 / 900.0,
            total_crash_share: 0.1,
            down_steps: (20, 1_200),
            crash_drops_inflight: 0.5,
            transfer_rate: 1.0 / 2_500.0,
            membership: true,
            membership_rate: 1.0 / 250.0,
            max_nodes: 9,
            all_removals: true,
        }
    }
}

/// A whole simulation: the world, the workload, and the core's tuning.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Cluster size at the start (ids `1..=nodes`, the founding voters).
    pub nodes: usize,
    /// The seed every random choice derives from.
    pub seed: u64,
    /// Length of the fault phase of [`Simulation::run`](crate::sim::Simulation::run), in steps.
    pub steps: u64,
    /// Faults injected during the fault phase.
    pub faults: FaultConfig,
    /// Number of concurrent clients generating random operations.
    pub clients: usize,
    /// Clients use keys `1..=keys`.
    pub keys: u64,
    /// Whether the random clients issue operations (scenario tests can turn
    /// them off and use [`Simulation::submit`](crate::sim::Simulation::submit)).
    pub workload: bool,
    /// A client waits `0..=think_steps_max` steps between operations.
    pub think_steps_max: u64,
    /// Every node ticks once per `tick_steps` steps (with its own phase).
    pub tick_steps: u64,
    /// Compact a node's log after it applied a random `K` in this inclusive
    /// range more entries; `None` never compacts.
    pub compaction: Option<(u64, u64)>,
    /// A client abandons an attempt with no answer after this many ticks and
    /// retries elsewhere.
    pub client_timeout_ticks: u64,
    /// During the fault phase a client gives up an operation after this many
    /// ticks (outcome unknown, or failed if it was never accepted).
    pub op_deadline_ticks: u64,
    /// Election timeout range of the core, in ticks.
    pub election_timeout_ticks: (u32, u32),
    /// Heartbeat interval of the core, in ticks.
    pub heartbeat_interval_ticks: u32,
    /// Core option: PreVote.
    pub pre_vote: bool,
    /// Core option: CheckQuorum and leader lease.
    pub check_quorum: bool,
    /// Draw the core's flow-control limits (in-flight window, append and
    /// snapshot chunk sizes, uncommitted limit) from the seed, small values
    /// included, so that batching and chunking paths get exercised.
    pub randomize_limits: bool,
    /// After the fault phase, heal everything and require a leader and every
    /// client operation to complete within the liveness bounds.
    pub check_liveness: bool,
    /// Check the client history for linearizability at the end.
    pub check_linearizability: bool,
    /// Record one line per event for replay ([`Simulation::trace`](crate::sim::Simulation::trace)).
    pub trace: bool,
}

impl SimConfig {
    /// The randomized-run defaults: `nodes` nodes, every fault on, four
    /// clients over five keys, compaction every 10..=50 entries.
    pub fn new(nodes: usize, seed: u64) -> SimConfig {
        SimConfig {
            nodes,
            seed,
            steps: 4_000,
            faults: FaultConfig::mixed(),
            clients: 4,
            keys: 5,
            workload: true,
            think_steps_max: 20,
            tick_steps: 10,
            compaction: Some((10, 50)),
            client_timeout_ticks: 40,
            op_deadline_ticks: 150,
            election_timeout_ticks: (15, 30),
            heartbeat_interval_ticks: 5,
            pre_vote: true,
            check_quorum: true,
            randomize_limits: true,
            check_liveness: true,
            check_linearizability: true,
            trace: false,
        }
    }

    /// The scenario-test defaults: no random faults (inject them by hand),
    /// default core limits, same clients and compaction.
    pub fn scripted(nodes: usize, seed: u64) -> SimConfig {
        SimConfig { faults: FaultConfig::none(), randomize_limits: false, ..SimConfig::new(nodes, seed) }
    }

    /// Steps in one maximal election timeout.
    pub fn election_timeout_steps(&self) -> u64 {
        u64::from(self.election_timeout_ticks.1) * self.tick_steps
    }

    /// Liveness bound: after the faults stop, a leader must be elected within
    /// ten maximal election timeouts.
    pub fn leader_bound_steps(&self) -> u64 {
        10 * self.election_timeout_steps()
    }

    /// Liveness bound: once a leader is elected, every client's pending
    /// operation (and one more each) must complete within this many steps.
    pub fn client_bound_steps(&self) -> u64 {
        10 * self.election_timeout_steps() + 2 * self.client_timeout_ticks * self.tick_steps
    }
}
