//! A deterministic simulator for Raft Lite.
//!
//! N nodes, each the very [`Replica`] that `raft-node` runs (the consensus
//! core, the real [`KvStore`] with its exactly-once sessions, the client
//! answers by (index, term), ReadIndex reads, the snapshot policy), are
//! wired through a simulated network (delays, drops, duplicates, reordering,
//! partitions of any shape) and simulated disks (fsyncs that complete later
//! and in order, a crash loses what was not durable; snapshot files written
//! and checked by a simulated snapshot worker, after a delay), driven by
//! concurrent clients that speak the node's client protocol and whose
//! history is checked for linearizability. What `raft-node`'s tokio glue
//! does with each [`Effect`], the simulator does here in simulated time;
//! nothing of the node's logic is copied. Everything runs in discrete steps,
//! one thread, and every random choice comes from one `u64` seed, so a
//! failing seed replays exactly.
//!
//! After every step the safety checkers of [`invariants`] run (Election
//! Safety, Log Matching, Leader Completeness, State Machine Safety, commit
//! monotonicity, and the core's own `check_invariants`). At the end of
//! [`Simulation::run`] every fault stops and liveness is required: a leader
//! within ten election timeouts, then every client's pending operation (and
//! one more each) within a further bound.
//!
//! Two ways to drive it:
//! - [`Simulation::run`]: random faults from [`FaultConfig`] for
//!   [`SimConfig::steps`] steps, then the liveness phase and final checks;
//! - scripts: [`Simulation::crash`], [`Simulation::restart`],
//!   [`Simulation::partition`], [`Simulation::heal`], ...,
//!   [`Simulation::run_until`] with a deadline, then [`Simulation::finish`].
//!
//! ```
//! use raft_tests::sim::{SimConfig, Simulation};
//!
//! let mut cfg = SimConfig::new(3, 42);
//! cfg.steps = 1_500;
//! let report = Simulation::new(cfg).run().unwrap_or_else(|f| panic!("{f}"));
//! assert!(report.ops_ok > 0);
//! ```

mod client;
pub mod config;
pub mod disk;
pub mod hash;
pub mod invariants;
mod nemesis;
pub mod network;
pub mod report;
pub mod rng;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};

use raft_core::quorum::MajorityConfig;
use raft_core::{
    Config, Index, Membership, MembershipChange, Message, MessageBody, NodeId, Proposed, RaftNode, Role,
    Snapshot, SnapshotMeta, Term,
};
use raft_kv::{
    Applied, Command, Effect, KvStore, Replica, ReplicaConfig, RequestKind, ResponseKind, WriteLimits,
    WriteOp, WriteResult, SESSIONS_MAX_DEFAULT,
};

use crate::linearizability::{self, ClientId, History, Op, OpResult, Outcome};
pub use client::VALUE_STRIDE;
use client::{decode_u64, encode_u64, Attempt, Client, Handle, PendingOp};
pub use config::{FaultConfig, SimConfig};
use disk::Disk;
use hash::{digest_entry, digest_payload, hash_effect, StableHasher};
use invariants::{
    CommitMonotonic, ConfigHistory, ElectionSafety, LeaderCompleteness, LogMatching, StateMachineSafety,
};
use network::Network;
pub use report::{Failure, Property, Report};
use rng::SimRng;

/// The client id of operations submitted with [`Simulation::submit`].
pub const SCRIPT_CLIENT: ClientId = 999;

/// The client session of writes sent with [`Simulation::write_on`]
/// (outside the checked history).
pub const DIRECT_CLIENT: ClientId = 998;

/// Why a node refused a request of the nemesis or a script at once, as its
/// answer in the client protocol says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The node is down or does not lead.
    NotLeader,
    /// Not now (no commit in the term yet, a change pending, a transfer
    /// under way): retrying later may succeed.
    Later(String),
    /// Refused for good (a change the membership rules forbid).
    Invalid(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotLeader => f.write_str("not the leader"),
            Refusal::Later(why) => write!(f, "not now: {why}"),
            Refusal::Invalid(why) => write!(f, "invalid: {why}"),
        }
    }
}

impl Refusal {
    fn of(answer: Option<ResponseKind>) -> Refusal {
        match answer {
            Some(ResponseKind::NotLeader { .. }) => Refusal::NotLeader,
            Some(ResponseKind::Invalid { message }) => Refusal::Invalid(message),
            Some(ResponseKind::Error { message }) => Refusal::Later(message),
            other => Refusal::Later(format!("answered {other:?}")),
        }
    }
}

/// A job of a node's snapshot worker, done in the background: it finishes
/// at `due` (lost if the node crashes first).
enum Job {
    /// Write the snapshot file of the replica's store, then report it taken.
    Take { meta: SnapshotMeta, data: Vec<u8> },
    /// A snapshot from the leader was decoded (or not): keep its file if
    /// good, then report the check.
    Check { snapshot: Snapshot, checked: Result<(KvStore, Vec<u8>), String> },
}

/// A fault to inject at a given moment (scripted runs and proptest schedules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultEvent {
    /// Crash this node (no-op if it is down).
    Crash(NodeId),
    /// Crash whichever node is leader now, if any.
    CrashLeader,
    /// Restart this node from its durable state (no-op if it is up).
    Restart(NodeId),
    /// Restart every crashed node.
    RestartAll,
    /// Cut every link of this node.
    Isolate(NodeId),
    /// Cut every link of whichever node is leader now, if any.
    IsolateLeader,
    /// Nodes talk only within their group; nodes in no group are isolated.
    Partition(Vec<Vec<NodeId>>),
    /// Two halves that cannot talk; nodes in neither are bridges to both.
    Bridge(Vec<NodeId>, Vec<NodeId>),
    /// Cut the link between two nodes, both ways.
    Cut(NodeId, NodeId),
    /// Cut only `from -> to`.
    CutOneWay(NodeId, NodeId),
    /// Reconnect every link.
    Heal,
    /// Ask the leader (if any) to hand leadership to this node.
    TransferLeadership(NodeId),
    /// Make this node start an election now.
    Campaign(NodeId),
}

/// A handle to an operation submitted with [`Simulation::submit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpHandle(usize);

/// Which part of a run we are in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Faults are injected; clients may give up on operations.
    Faults,
    /// Faults stopped; every operation must complete.
    Liveness,
}

/// One node as the simulated machine sees it: the replica (core, store,
/// pending answers) and what outlives it, its disk.
struct NodeSlot {
    id: NodeId,
    config: Config,
    /// The founding membership, for a founding node: it bootstraps again
    /// from an empty disk (nothing of the founding was durable yet).
    founders: Option<Membership>,
    /// Stopped for good (removed from the cluster, or crashed to be
    /// replaced): it never restarts.
    retired: bool,
    /// `None` while crashed.
    replica: Option<Replica<Handle>>,
    disk: Disk,
    /// The cluster token its "data directory" recorded
    /// ([`Effect::TokenLearned`]), given back on restart.
    token: u64,
    /// The snapshot worker's jobs (lost in a crash).
    jobs: Vec<(u64, Job)>,
    /// Bumped on every restart.
    incarnation: u64,
    /// The node ticks when `(step + tick_phase) % tick_steps == 0`.
    tick_phase: u64,
    /// The role and term last observed (elections are counted from it).
    seen_role: (Role, Term),
    /// Random fault injection: restart at this step.
    restart_at: Option<u64>,
    /// The commit index last recorded for this incarnation.
    seen_commit: Index,
    /// Log Matching: entries from here on changed since the last check.
    log_dirty_from: Option<Index>,
    /// (first, last, last term) at the last Log Matching check.
    log_shape: (Index, Index, Option<Term>),
}

/// The safety checkers.
struct Checkers {
    election: ElectionSafety,
    log_matching: LogMatching,
    completeness: LeaderCompleteness,
    state_machine: StateMachineSafety,
    commit: CommitMonotonic,
    configs: ConfigHistory,
}

/// Counters that end up in the [`Report`].
#[derive(Default)]
struct Counters {
    elections: u64,
    ops_ok: u64,
    ops_unknown: u64,
    ops_failed: u64,
    snapshots_sent: u64,
    snapshots_installed: u64,
    compactions: u64,
    snapshots_rejected: u64,
    removed: u64,
    crashes: u64,
    partitions: u64,
    transfers: u64,
    membership_proposed: u64,
    membership_refused: u64,
    nodes_added: u64,
    nodes_retired: u64,
    replacements: u64,
}

/// Independent PRNG streams, one per concern.
struct Rngs {
    network: SimRng,
    disk: SimRng,
    faults: SimRng,
    clients: SimRng,
    compaction: SimRng,
    /// The membership nemesis, and the tuning of the nodes it creates
    /// (forked last, so that the streams above are those of runs before it).
    nemesis: SimRng,
}

/// A simulated Raft Lite cluster. See the [module docs](self).
pub struct Simulation {
    cfg: SimConfig,
    /// The faults in effect now (quiet in the liveness phase).
    faults: FaultConfig,
    now: u64,
    /// Logical time of history events: strictly increasing, so the real-time
    /// order the linearizability checker sees is exact.
    clock: u64,
    /// Node `id` is `nodes[id - 1]`; the nemesis and scripts add nodes.
    nodes: Vec<NodeSlot>,
    limits: Limits,
    nemesis: nemesis::Nemesis,
    network: Network,
    clients: Vec<Client>,
    history: History,
    script_outcomes: Vec<Option<Outcome>>,
    /// Numbers the next client attempt, and the next admin request.
    next_attempt: u64,
    next_admin: u64,
    /// The answer to an admin request that came at once.
    admin_answer: Option<(u64, ResponseKind)>,
    /// The session sequence of [`Simulation::write_on`].
    direct_seq: u64,
    /// Effects of one replica being carried out (kept for its allocation).
    effects: Vec<Effect<Handle>>,
    rng: Rngs,
    checkers: Checkers,
    phase: Phase,
    workload: bool,
    /// Random fault injection: heal the partition at this step.
    heal_at: Option<u64>,
    /// Nodes that got any input during the current step.
    touched: BTreeSet<NodeId>,
    /// A new committed index was recorded during the current step.
    commits_changed: bool,
    failure: Option<Failure>,
    counters: Counters,
    hasher: StableHasher,
    trace: Vec<String>,
}

impl Simulation {
    /// Builds the world: `cfg.nodes` fresh nodes, `cfg.clients` random clients
    /// and one scripted client. Panics on an invalid configuration.
    pub fn new(cfg: SimConfig) -> Simulation {
        assert!(cfg.nodes >= 1, "a cluster needs at least one node");
        assert!(cfg.tick_steps >= 1, "tick_steps must be at least 1");
        let mut root = SimRng::new(cfg.seed);
        let mut rng = Rngs {
            network: root.fork(),
            disk: root.fork(),
            faults: root.fork(),
            clients: root.fork(),
            compaction: root.fork(),
            nemesis: SimRng::new(0),
        };
        let mut tuning = root.fork();
        rng.nemesis = root.fork();
        let voters: Vec<NodeId> = (1..=cfg.nodes as NodeId).collect();
        let limits = Limits::draw(&cfg, &mut tuning);
        let founders = Membership::with_voters(voters.iter().copied()).expect("1..=nodes voters");
        let mut nodes = Vec::with_capacity(cfg.nodes);
        for &id in &voters {
            let config = core_config(&cfg, &limits, id, tuning.next_u64());
            let raft = RaftNode::bootstrap(config.clone(), founders.clone())
                .unwrap_or_else(|e| panic!("node {id} does not start: {e}"));
            let tick_phase = tuning.below(cfg.tick_steps);
            let mut slot = NodeSlot::new(id, config, Some(founders.clone()), tick_phase);
            slot.replica = Some(new_replica(&cfg, &mut rng.compaction, &slot, raft, empty_store()));
            nodes.push(slot);
        }
        let mut clients: Vec<Client> =
            (1..=cfg.clients as ClientId).map(|id| Client::new(id, true)).collect();
        clients.push(Client::new(SCRIPT_CLIENT, false));
        let mut checkers = Checkers {
            election: ElectionSafety::default(),
            log_matching: LogMatching::default(),
            completeness: LeaderCompleteness::default(),
            state_machine: StateMachineSafety::default(),
            commit: CommitMonotonic::default(),
            configs: ConfigHistory::new(founders),
        };
        for &id in &voters {
            checkers.state_machine.restart(id, 0, empty_store().digest()).expect("fresh nodes agree");
        }
        let mut sim = Simulation {
            faults: cfg.faults.clone(),
            workload: cfg.workload,
            cfg,
            now: 0,
            clock: 0,
            nodes,
            limits,
            nemesis: nemesis::Nemesis::default(),
            network: Network::new(),
            clients,
            history: History::new(),
            script_outcomes: Vec::new(),
            next_attempt: 1,
            next_admin: 1,
            admin_answer: None,
            direct_seq: 0,
            effects: Vec::new(),
            rng,
            checkers,
            phase: Phase::Faults,
            heal_at: None,
            touched: BTreeSet::new(),
            commits_changed: false,
            failure: None,
            counters: Counters::default(),
            hasher: StableHasher::new(),
            trace: Vec::new(),
        };
        if sim.cfg.trace {
            sim.trace_line(
                0,
                format!("config nodes={} seed={} limits={limits:?}", sim.cfg.nodes, sim.cfg.seed),
            );
        }
        sim
    }

    // ------------------------------------------------------------ whole runs

    /// The randomized run: `cfg.steps` steps of random faults, then (if
    /// `cfg.check_liveness`) the liveness phase, then the final checks.
    pub fn run(&mut self) -> Result<Report, Failure> {
        self.run_schedule(&[])
    }

    /// Like [`Simulation::run`], with `schedule` — `(step, event)` pairs — also
    /// injected during the fault phase (in step order).
    pub fn run_schedule(&mut self, schedule: &[(u64, FaultEvent)]) -> Result<Report, Failure> {
        let mut schedule: Vec<&(u64, FaultEvent)> = schedule.iter().collect();
        schedule.sort_by_key(|(at, _)| *at);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut next = 0;
            while self.now < self.cfg.steps && self.failure.is_none() {
                while next < schedule.len() && schedule[next].0 <= self.now {
                    self.apply_fault(&schedule[next].1);
                    next += 1;
                }
                self.inject_random_faults();
                self.step();
            }
            if self.cfg.check_liveness {
                self.liveness_phase();
            }
            self.final_checks();
        }));
        if let Err(panic) = outcome {
            self.record_panic(panic);
        }
        match &self.failure {
            Some(f) => Err(f.clone()),
            None => Ok(self.report()),
        }
    }

    /// Ends a scripted run: the first failure seen, or else the
    /// linearizability check of the history, then the report.
    pub fn finish(&mut self) -> Result<Report, Failure> {
        self.final_checks();
        match &self.failure {
            Some(f) => Err(f.clone()),
            None => Ok(self.report()),
        }
    }

    fn final_checks(&mut self) {
        if self.failure.is_some() || !self.cfg.check_linearizability {
            return;
        }
        if let Err(v) = linearizability::check(&self.history) {
            self.fail(Property::Linearizability, v.to_string());
        }
    }

    fn record_panic(&mut self, panic: Box<dyn std::any::Any + Send>) {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with a non-string payload".to_string());
        self.fail(Property::NoPanic, format!("panicked: {message}"));
    }

    /// Stops every fault, then requires a leader within
    /// [`SimConfig::leader_bound_steps`] and every client done within
    /// [`SimConfig::client_bound_steps`].
    fn liveness_phase(&mut self) {
        if self.failure.is_some() {
            return;
        }
        self.phase = Phase::Liveness;
        self.faults =
            FaultConfig { drop_rate: 0.0, dup_rate: 0.0, long_delay_rate: 0.0, ..FaultConfig::none() };
        self.faults.max_delay = self.cfg.faults.max_delay;
        self.faults.max_fsync_delay = self.cfg.faults.max_fsync_delay;
        self.heal();
        self.heal_at = None;
        for id in self.ids() {
            self.restart(id);
        }
        let start = self.now;
        let bound = self.cfg.leader_bound_steps();
        if !self.run_until(|s| s.stable_leader().is_some(), bound) {
            if self.failure.is_none() {
                let view = self.describe_nodes();
                self.fail(
                    Property::Liveness,
                    format!(
                        "no leader within {bound} steps (10 election timeouts) after the faults stopped at step {start}; {view}"
                    ),
                );
            }
            return;
        }
        let elected = self.now;
        let bound = self.cfg.client_bound_steps();
        if !self.run_until(|s| s.clients_settled(), bound) {
            if self.failure.is_none() {
                let pending = self.describe_pending_ops();
                self.fail(
                    Property::Liveness,
                    format!(
                        "client operations still pending {bound} steps after a leader was elected at step {elected}: {pending}"
                    ),
                );
            }
            return;
        }
        let served = self.now;
        let bound = self.cfg.leader_bound_steps();
        if !self.run_until(|s| s.membership_converged(), bound) && self.failure.is_none() {
            let (index, last) = self.checkers.configs.last();
            let last = invariants::describe(last);
            let view = self.describe_nodes();
            self.fail(
                Property::Liveness,
                format!(
                    "the members did not converge on the last committed configuration ({last} at index {index}) \
                     within {bound} steps after the clients were served at step {served}; {view}"
                ),
            );
        }
    }

    /// Every live member of the last committed configuration has it in
    /// force, it is not joint, and a stable leader among its voters follows it.
    pub fn membership_converged(&self) -> bool {
        let (index, last) = self.checkers.configs.last();
        if last.is_joint() {
            return false;
        }
        let Some(leader) = self.stable_leader() else {
            return false;
        };
        if !last.is_voter(leader) {
            return false;
        }
        last.member_ids().all(|id| {
            let Some(slot) = self.nodes.get(id as usize - 1) else {
                return false;
            };
            // (After a snapshot, a node gives the snapshot's index as that of
            // its membership: the entry's own index is gone.)
            slot.retired
                || slot.raft().is_some_and(|r| {
                    let (m, at) = r.membership();
                    at >= index && m == last
                })
        })
    }

    /// Every client has nothing pending and, in the liveness phase, has
    /// completed its one extra operation.
    fn clients_settled(&self) -> bool {
        self.clients.iter().all(|c| {
            c.current.is_none() && c.queue.is_empty() && (!c.random || !self.workload || c.final_done)
        })
    }

    fn describe_pending_ops(&self) -> String {
        let mut out = String::new();
        for c in &self.clients {
            if let Some(p) = &c.current {
                let _ = write!(
                    out,
                    "[client {} {} invoked at step {}, attempt {:?}] ",
                    c.id, p.op, p.invoked, p.attempt
                );
            }
        }
        out.push_str(&self.describe_nodes());
        out
    }

    fn describe_nodes(&self) -> String {
        let mut out = String::from("nodes:");
        for slot in &self.nodes {
            match slot.raft() {
                None if slot.retired => {
                    let _ = write!(out, " n{}=retired", slot.id);
                }
                None => {
                    let _ = write!(out, " n{}=down", slot.id);
                }
                Some(n) => {
                    let _ = write!(
                        out,
                        " n{}={}/t{}/leader {:?}/commit {}/last {}",
                        slot.id,
                        n.role(),
                        n.term(),
                        n.leader(),
                        n.commit_index(),
                        n.last_index()
                    );
                    if self.nodes.len() > self.cfg.nodes || self.checkers.configs.len() > 1 {
                        let (m, index) = n.membership();
                        let _ = write!(out, "/config@{index} {}", invariants::describe(m));
                    }
                }
            }
        }
        out
    }

    // ------------------------------------------------------------ stepping

    /// Advances the world by one step: due fsyncs complete, due messages are
    /// delivered, nodes tick, clients act; then every safety check runs.
    /// Does nothing once a property has failed.
    pub fn step(&mut self) {
        if self.failure.is_some() {
            return;
        }
        self.now += 1;
        self.touched.clear();
        self.commits_changed = false;
        self.complete_fsyncs();
        self.deliver_messages();
        self.tick_nodes();
        self.run_clients();
        self.check_step();
    }

    /// Steps until `condition` holds (checked before every step) or
    /// `deadline_steps` steps have passed. True if the condition holds; false
    /// on the deadline or a failure.
    pub fn run_until(&mut self, mut condition: impl FnMut(&Simulation) -> bool, deadline_steps: u64) -> bool {
        let deadline = self.now + deadline_steps;
        loop {
            if self.failure.is_some() {
                return false;
            }
            if condition(self) {
                return true;
            }
            if self.now >= deadline {
                return false;
            }
            self.step();
        }
    }

    /// Steps `steps` times (for "nothing must happen meanwhile" checks; use
    /// [`Simulation::run_until`] to wait for something).
    pub fn run_for(&mut self, steps: u64) {
        for _ in 0..steps {
            self.step();
        }
    }

    /// Fsyncs due now complete, then the snapshot worker's jobs due now.
    fn complete_fsyncs(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].replica.is_none() {
                continue;
            }
            let id = self.nodes[i].id;
            match self.nodes[i].disk.complete_due(self.now) {
                Ok(None) => {}
                Ok(Some(batch)) => {
                    self.trace_event(id, || format!("fsync done up to batch {batch}"));
                    self.replica_mut(id).persisted(batch);
                    self.drain(id);
                }
                Err(e) => self.fail(Property::Durability, format!("node {id}: {e}")),
            }
            while let Some(at) = self.nodes[i].jobs.iter().position(|(due, _)| *due <= self.now) {
                if self.failure.is_some() {
                    return;
                }
                let (_, job) = self.nodes[i].jobs.remove(at);
                self.finish_job(id, job);
            }
        }
    }

    /// What `raft-node`'s snapshot worker reports, once its job is done.
    fn finish_job(&mut self, id: NodeId, job: Job) {
        match job {
            Job::Take { meta, data } => {
                let snapshot = Snapshot { meta, data_bytes: data.len() as u64 };
                let index = snapshot.meta.index;
                self.trace_event(id, || format!("snapshot@{index} written ({} bytes)", snapshot.data_bytes));
                self.slot_mut(id).disk.write_snapshot_file(index, data);
                self.replica_mut(id).snapshot_taken(snapshot);
            }
            Job::Check { snapshot, checked } => {
                let index = snapshot.meta.index;
                let result = match checked {
                    Ok((kv, bytes)) => {
                        // Kept as this node's file before the core may
                        // refer to it (as the worker writes it while
                        // decoding, and keeps it only if it decodes).
                        self.slot_mut(id).disk.write_snapshot_file(index, bytes);
                        Ok(kv)
                    }
                    Err(problem) => Err(problem),
                };
                self.trace_event(id, || format!("snapshot@{index} checked: ok {}", result.is_ok()));
                self.replica_mut(id).snapshot_checked(snapshot, result);
            }
        }
        self.drain(id);
    }

    fn deliver_messages(&mut self) {
        for msg in self.network.take_due(self.now) {
            if self.failure.is_some() {
                return;
            }
            let to = msg.to;
            if !self.is_up(to) {
                self.network.count_undeliverable();
                continue;
            }
            self.network.count_delivered();
            self.trace_event(to, || format!("recv {}", describe_message(&msg)));
            self.replica_mut(to).step(msg);
            self.drain(to);
        }
    }

    fn tick_nodes(&mut self) {
        for i in 0..self.nodes.len() {
            let slot = &self.nodes[i];
            if slot.replica.is_some() && (self.now + slot.tick_phase) % self.cfg.tick_steps == 0 {
                let id = slot.id;
                self.replica_mut(id).tick();
                self.drain(id);
            }
        }
    }

    // ------------------------------------------------------------ the driver

    /// Carries out everything node `id`'s replica asks, in order, until it
    /// asks for nothing more (as `raft-node`'s `execute_effects` does);
    /// records what the checkers need on the way.
    fn drain(&mut self, id: NodeId) {
        self.touched.insert(id);
        let i = self.index_of(id);
        loop {
            if self.failure.is_some() {
                return;
            }
            let Some(replica) = self.nodes[i].replica.as_mut() else {
                return;
            };
            let mut effects = std::mem::take(&mut self.effects);
            let stopped = match replica.take_effects() {
                Ok(drained) => {
                    effects.extend(drained);
                    None
                }
                Err(e) => Some(e.to_string()),
            };
            if let Some(e) = stopped {
                return self.fail(Property::NodeInvariants, format!("node {id} must stop: {e}"));
            }
            // Observed before the effects are carried out: they may compact
            // the log, and the entries newly applied and committed must
            // still be there to be recorded.
            self.observe_applied(id);
            self.observe_node(id);
            if effects.is_empty() {
                self.effects = effects;
                return;
            }
            for effect in effects.drain(..) {
                if self.failure.is_some() {
                    break;
                }
                self.execute(id, effect);
            }
            self.effects = effects;
        }
    }

    fn execute(&mut self, id: NodeId, effect: Effect<Handle>) {
        hash_effect(&mut self.hasher, self.now, id, &effect);
        if self.cfg.trace {
            self.trace_line(id, describe_effect(&effect));
        }
        match effect {
            Effect::Persist(batch) => {
                let slot = self.slot_mut(id);
                if batch.snapshot.is_some() {
                    slot.log_dirty_from = Some(0);
                } else if let Some(first) = batch.entries.first() {
                    let from = slot.log_dirty_from.map_or(first.index, |f| f.min(first.index));
                    slot.log_dirty_from = Some(from);
                }
                let due = self.now + self.rng.disk.range(1, self.faults.max_fsync_delay.max(1));
                self.slot_mut(id).disk.write(batch, due);
            }
            Effect::Send(msg) => self.send(msg),
            Effect::SendSnapshotChunk { mut message, len } => {
                let MessageBody::Snapshot { meta, offset, data, .. } = &mut message.body else {
                    return self.fail(
                        Property::NodeInvariants,
                        format!("node {id} asks to send a snapshot chunk in {message:?}"),
                    );
                };
                // A file a newer snapshot deleted: dropped, as on a node.
                let Some(bytes) = self.slot(id).disk.read_snapshot_range(meta.index, *offset, len) else {
                    return;
                };
                *data = bytes;
                self.send(message);
            }
            Effect::SaveSnapshotChunk { meta, offset, data } => {
                self.slot_mut(id).disk.save_snapshot_chunk(meta, offset, &data)
            }
            Effect::Compact(meta) => {
                let index = meta.index;
                match self.slot_mut(id).disk.compact(meta) {
                    Ok(true) => {
                        self.counters.compactions += 1;
                        self.trace_event(id, || format!("compacted up to {index}"));
                    }
                    Ok(false) => {}
                    Err(e) => self.fail(Property::Durability, format!("node {id}: {e}")),
                }
            }
            Effect::Answer(handle, answer) => self.answer(id, handle, answer),
            Effect::TakeSnapshot { kv, meta } => {
                // Serialized now, from the copy handed out (the replica goes
                // on applying); the file is written when the job is done.
                let data = match kv.snapshot() {
                    Ok(data) => data,
                    Err(e) => {
                        return self.fail(
                            Property::NodeInvariants,
                            format!("node {id} cannot serialize its store at {}: {e}", meta.index),
                        )
                    }
                };
                let due = self.now + self.rng.compaction.range(0, self.faults.max_fsync_delay);
                self.slot_mut(id).jobs.push((due, Job::Take { meta, data }));
            }
            Effect::CheckSnapshot(snapshot) => {
                let bytes = self.slot_mut(id).disk.finish_snapshot(&snapshot.meta);
                let checked = check_received(&snapshot, bytes);
                let due = self.now + self.rng.compaction.range(0, self.faults.max_fsync_delay);
                self.slot_mut(id).jobs.push((due, Job::Check { snapshot, checked }));
            }
            Effect::TokenLearned(token) => self.slot_mut(id).token = token,
            Effect::MembersChanged(_) => {}
            Effect::Removed { .. } => self.counters.removed += 1,
            Effect::SnapshotRejected { .. } => self.counters.snapshots_rejected += 1,
        }
    }

    fn send(&mut self, msg: Message) {
        if let MessageBody::Snapshot { offset: 0, .. } = msg.body {
            self.counters.snapshots_sent += 1;
        }
        self.network.send(msg, self.now, &mut self.rng.network, &self.faults);
    }

    /// Feeds State Machine Safety what node `id`'s store went through: each
    /// entry applied and the store's digest after it, each snapshot
    /// restored (whose configuration must be the one committed there).
    fn observe_applied(&mut self, id: NodeId) {
        let i = self.index_of(id);
        let Some(replica) = self.nodes[i].replica.as_mut() else {
            return;
        };
        for applied in replica.take_applied() {
            match applied {
                Applied::Entry { entry, digest } => {
                    let result =
                        self.checkers.state_machine.apply(id, entry.index, digest_entry(&entry), digest);
                    if let Err(e) = result {
                        return self.fail(Property::StateMachineSafety, e);
                    }
                }
                Applied::Snapshot { meta, digest } => {
                    let index = meta.index;
                    match self.checkers.configs.at(index) {
                        Some((_, m)) if *m == *meta.membership => {}
                        committed => {
                            let committed =
                                committed.map(|(at, m)| format!("{} (index {at})", invariants::describe(m)));
                            let carried = invariants::describe(&meta.membership);
                            return self.fail(
                                Property::Membership,
                                format!(
                                    "node {id} installed a snapshot at index {index} with configuration {carried}, \
                                     but the one committed there is {committed:?}"
                                ),
                            );
                        }
                    }
                    if let Err(e) = self.checkers.state_machine.restore(id, index, digest) {
                        return self.fail(Property::StateMachineSafety, e);
                    }
                    self.counters.snapshots_installed += 1;
                }
            }
        }
    }

    /// Records what node `id` shows now: its role (Election Safety), its
    /// commit index (monotonic) and the entries newly committed (Leader
    /// Completeness).
    fn observe_node(&mut self, id: NodeId) {
        let i = self.index_of(id);
        let Some(raft) = self.nodes[i].raft() else {
            return;
        };
        let (role, term) = (raft.role(), raft.term());
        if let Err(e) = self.checkers.election.observe(id, role, term) {
            return self.fail(Property::ElectionSafety, e);
        }
        if self.nodes[i].seen_role != (role, term) {
            if role == Role::Candidate {
                self.counters.elections += 1;
            }
            self.nodes[i].seen_role = (role, term);
        }
        let Some(raft) = self.nodes[i].raft() else {
            return;
        };
        let commit = raft.commit_index();
        if let Err(e) = self.checkers.commit.observe(id, commit) {
            return self.fail(Property::CommitMonotonic, e);
        }
        let seen = self.nodes[i].seen_commit;
        if commit <= seen {
            return;
        }
        for index in (seen + 1).max(raft.first_index())..=commit {
            let Some(entry) = raft.entry(index) else {
                continue;
            };
            match self.checkers.completeness.record_commit(
                index,
                entry.term,
                digest_payload(&entry.payload),
                term,
            ) {
                Ok(new) => self.commits_changed |= new,
                Err(e) => return self.fail(Property::LeaderCompleteness, e),
            }
            if let Some(decoded) = entry.payload.decode_membership() {
                if let Err(e) = self.checkers.configs.observe(id, index, decoded) {
                    return self.fail(Property::Membership, e);
                }
            }
        }
        self.nodes[i].seen_commit = commit;
    }

    // ------------------------------------------------------------ clients

    fn run_clients(&mut self) {
        for ci in 0..self.clients.len() {
            if self.failure.is_some() {
                return;
            }
            self.client_step(ci);
        }
    }

    fn client_step(&mut self, ci: usize) {
        let now = self.now;
        if self.clients[ci].current.is_none() && !self.start_op(ci) {
            return;
        }
        let timeout = self.cfg.client_timeout_ticks * self.cfg.tick_steps;
        let deadline = self.cfg.op_deadline_ticks * self.cfg.tick_steps;
        let phase = self.phase;
        let client = &mut self.clients[ci];
        let pending = client.current.as_mut().expect("started above");
        if pending.attempt.is_some_and(|a| now.saturating_sub(a.sent) >= timeout) {
            // No answer: the node may be partitioned away. Try elsewhere.
            pending.attempt = None;
            pending.next_attempt = now;
            client.leader_hint = None;
        }
        if phase == Phase::Faults
            && pending.handle.is_none()
            && now.saturating_sub(pending.invoked) >= deadline
        {
            // A read that timed out changed nothing, but we cannot say it
            // failed either: it may have been served. Writes that may have
            // been proposed are possibly applied.
            let outcome = if pending.maybe_applied || pending.op.is_read_only() {
                Outcome::Unknown
            } else {
                Outcome::Failed
            };
            return self.complete_op(ci, outcome);
        }
        if pending.attempt.is_none() && now >= pending.next_attempt {
            self.attempt(ci);
        }
    }

    /// Starts the client's next operation, if it has one. True if it did.
    fn start_op(&mut self, ci: usize) -> bool {
        let now = self.now;
        let liveness = self.phase == Phase::Liveness;
        let client = &mut self.clients[ci];
        let (op, handle) = if let Some((op, handle)) = client.queue.pop_front() {
            (op, Some(handle))
        } else if client.random
            && self.workload
            && now >= client.idle_until
            && !(liveness && client.final_started)
        {
            (client.random_op(&mut self.rng.clients, self.cfg.keys), None)
        } else {
            return false;
        };
        if liveness && handle.is_none() {
            client.final_started = true;
        }
        let seq = if op.is_read_only() {
            0
        } else {
            client.last_seq += 1;
            client.last_seq
        };
        self.clock += 1;
        let history_id = self.history.invoke(client.id, op, self.clock);
        client.current = Some(PendingOp {
            history_id,
            op,
            seq,
            invoked: now,
            in_liveness_phase: liveness,
            attempt: None,
            next_attempt: now,
            maybe_applied: false,
            handle,
        });
        let id = client.id;
        self.trace_event(0, || format!("client {id} invokes {op} (seq {seq})"));
        true
    }

    /// Sends the client's operation to the node it believes leads, as a
    /// request of the client protocol.
    fn attempt(&mut self, ci: usize) {
        let now = self.now;
        let tick = self.cfg.tick_steps;
        let hint = self.clients[ci].leader_hint.filter(|&l| self.is_up(l));
        let target = match hint {
            Some(hint) => hint,
            None => {
                let ids = self.active_ids();
                *self.rng.clients.pick(&ids)
            }
        };
        if !self.is_up(target) {
            // Connection refused: back off a little, then try another node.
            let wait = self.rng.clients.range(1, tick);
            let client = &mut self.clients[ci];
            client.leader_hint = None;
            client.current.as_mut().expect("pending").next_attempt = now + wait;
            return;
        }
        let number = self.next_attempt;
        self.next_attempt += 1;
        let client_id = self.clients[ci].id;
        let pending = self.clients[ci].current.as_mut().expect("pending");
        let request = pending.request(client_id);
        let (op, seq) = (pending.op, pending.seq);
        // Registered first: the answer may come in the drain below.
        pending.attempt = Some(Attempt { node: target, number, sent: now });
        let replica = self.replica_mut(target);
        let before = replica.pending_requests();
        replica.client(request, Handle::Client { ci, attempt: number });
        // Taken (a proposal or a ReadIndex under way) unless answered at once.
        if replica.pending_requests() > before {
            let client = &mut self.clients[ci];
            client.leader_hint = Some(target);
            client.current.as_mut().expect("pending").maybe_applied |= !op.is_read_only();
            self.trace_event(target, || format!("client {client_id} sent {op} seq {seq} (attempt {number})"));
        }
        self.drain(target);
    }

    /// A replica's answer to a client request (or to one of the nemesis or
    /// a script), as a client of `raft-node` takes it.
    fn answer(&mut self, node: NodeId, handle: Handle, answer: ResponseKind) {
        let (ci, number) = match handle {
            Handle::Admin(n) => {
                self.trace_event(node, || format!("answer to request {n}: {answer:?}"));
                self.admin_answer = Some((n, answer));
                return;
            }
            Handle::Client { ci, attempt } => (ci, attempt),
        };
        let Some(pending) = self.clients[ci].current.as_ref() else {
            return;
        };
        if pending.attempt.map(|a| a.number) != Some(number) {
            return; // an earlier attempt's: the client moved on
        }
        let (op, now, tick) = (pending.op, self.now, self.cfg.tick_steps);
        let result = match (op, answer) {
            (Op::Put { .. }, ResponseKind::Written { result: WriteResult::Done { .. }, .. }) => OpResult::Put,
            (Op::Delete { .. }, ResponseKind::Written { result: WriteResult::Done { .. }, .. }) => {
                OpResult::Delete
            }
            (Op::Cas { .. }, ResponseKind::Written { result: WriteResult::Cas { swapped, .. }, .. }) => {
                OpResult::Cas { succeeded: swapped }
            }
            (Op::Get { .. }, ResponseKind::Value { value, .. }) => match value.as_deref().map(decode_u64) {
                None => OpResult::Get(None),
                Some(Some(v)) => OpResult::Get(Some(v)),
                Some(None) => {
                    return self.fail(
                        Property::Linearizability,
                        format!("node {node} answered {op} with a value that is not 8 bytes: {value:?}"),
                    )
                }
            },
            (_, ResponseKind::NotLeader { leader }) => {
                let hint = leader.map(|(id, _)| id).filter(|&l| l != node);
                let wait = if hint.is_some() { 1 } else { self.rng.clients.range(1, 2 * tick) };
                let client = &mut self.clients[ci];
                client.leader_hint = hint;
                let pending = client.current.as_mut().expect("checked above");
                pending.attempt = None;
                pending.next_attempt = now + wait;
                return;
            }
            // Lost to a leader change, or covered by a snapshot: retry at
            // once, same sequence number (it applies once).
            (_, ResponseKind::Unknown { .. }) => return self.lose_attempt(ci),
            // Not now (the uncommitted limit, a full disk): later.
            (_, ResponseKind::Error { .. }) => {
                let wait = self.rng.clients.range(tick, 3 * tick);
                let pending = self.clients[ci].current.as_mut().expect("checked above");
                pending.attempt = None;
                pending.next_attempt = now + wait;
                return;
            }
            (op, answer) => {
                // A stale sequence number among them: a client has one write
                // outstanding, so its current one is never older than the
                // session's last.
                return self.fail(
                    Property::Linearizability,
                    format!("node {node} answered {op} (attempt {number}) with {answer:?}"),
                );
            }
        };
        self.complete_op(ci, Outcome::Ok(result));
    }

    fn lose_attempt(&mut self, ci: usize) {
        let now = self.now;
        if let Some(p) = self.clients[ci].current.as_mut() {
            p.attempt = None;
            p.next_attempt = now;
        }
    }

    fn complete_op(&mut self, ci: usize, outcome: Outcome) {
        let now = self.now;
        let think = self.rng.clients.range(0, self.cfg.think_steps_max);
        let client = &mut self.clients[ci];
        let Some(pending) = client.current.take() else {
            return;
        };
        self.clock += 1;
        self.history.complete(pending.history_id, outcome, self.clock);
        client.learn(&pending.op, &outcome);
        client.idle_until = now + think;
        if pending.in_liveness_phase && pending.handle.is_none() {
            client.final_done = true;
        }
        if let Some(h) = pending.handle {
            self.script_outcomes[h] = Some(outcome);
        }
        match outcome {
            Outcome::Ok(_) => self.counters.ops_ok += 1,
            Outcome::Unknown => self.counters.ops_unknown += 1,
            Outcome::Failed => self.counters.ops_failed += 1,
        }
        let id = client.id;
        let op = pending.op;
        self.trace_event(0, || format!("client {id} completes {op} -> {outcome}"));
    }

    // ------------------------------------------------------------ checks

    /// The per-step checks, on every node that got input this step (a node
    /// that got none is unchanged).
    fn check_step(&mut self) {
        let touched: Vec<NodeId> = self.touched.iter().copied().collect();
        for id in touched {
            if self.failure.is_some() {
                return;
            }
            self.check_node(id);
        }
        if self.commits_changed {
            for id in self.ids() {
                if self.failure.is_some() {
                    return;
                }
                if !self.touched.contains(&id) {
                    self.check_leader_completeness(id);
                }
            }
        }
    }

    fn check_node(&mut self, id: NodeId) {
        let i = self.index_of(id);
        let slot = &mut self.nodes[i];
        let Some(raft) = slot.replica.as_ref().map(Replica::node) else {
            return;
        };
        if let Err(e) = raft.check_invariants() {
            return self.fail(Property::NodeInvariants, format!("node {id}: {e}"));
        }
        let (first, last) = (raft.first_index(), raft.last_index());
        let shape = (first, last, raft.term_at(last));
        let from = match slot.log_dirty_from.take() {
            Some(from) => Some(from),
            None if shape != slot.log_shape => Some(0),
            None => None,
        };
        slot.log_shape = shape;
        if let Some(from) = from {
            let lo = from.max(first);
            if lo <= last {
                let prev_term = raft.term_at(lo - 1).unwrap_or(0);
                let entries = (lo..=last).filter_map(|index| raft.entry(index));
                if let Err(e) = self.checkers.log_matching.observe_log(id, prev_term, entries) {
                    return self.fail(Property::LogMatching, e);
                }
            }
        }
        self.check_leader_completeness(id);
    }

    fn check_leader_completeness(&mut self, id: NodeId) {
        let Some(raft) = self.slot(id).raft() else {
            return;
        };
        if !raft.is_leader() {
            return;
        }
        let result = self.checkers.completeness.check_leader(
            id,
            raft.term(),
            raft.first_index(),
            raft.last_index(),
            |index| raft.entry(index).map(|e| (e.term, digest_payload(&e.payload))),
        );
        if let Err(e) = result {
            self.fail(Property::LeaderCompleteness, e);
        }
    }

    fn fail(&mut self, property: Property, detail: String) {
        if self.failure.is_some() {
            return;
        }
        if self.cfg.trace {
            self.trace_line(0, format!("FAILURE {property}: {detail}"));
        }
        self.failure =
            Some(Failure { seed: self.cfg.seed, nodes: self.cfg.nodes, step: self.now, property, detail });
    }

    // ------------------------------------------------------------ faults

    /// Injects one fault now.
    pub fn apply_fault(&mut self, event: &FaultEvent) {
        match event {
            FaultEvent::Crash(id) => self.crash(*id),
            FaultEvent::CrashLeader => {
                if let Some(l) = self.leader() {
                    self.crash(l);
                }
            }
            FaultEvent::Restart(id) => self.restart(*id),
            FaultEvent::RestartAll => {
                for id in self.ids() {
                    self.restart(id);
                }
            }
            FaultEvent::Isolate(id) => self.isolate(*id),
            FaultEvent::IsolateLeader => {
                if let Some(l) = self.leader() {
                    self.isolate(l);
                }
            }
            FaultEvent::Partition(groups) => {
                let groups: Vec<&[NodeId]> = groups.iter().map(Vec::as_slice).collect();
                self.partition(&groups);
            }
            FaultEvent::Bridge(left, right) => self.bridge(left, right),
            FaultEvent::Cut(a, b) => {
                self.counters.partitions += 1;
                self.trace_event(0, || format!("cut n{a} <-> n{b}"));
                self.network.cut(*a, *b);
            }
            FaultEvent::CutOneWay(from, to) => {
                self.counters.partitions += 1;
                self.trace_event(0, || format!("cut n{from} -> n{to}"));
                self.network.cut_one_way(*from, *to);
            }
            FaultEvent::Heal => self.heal(),
            FaultEvent::TransferLeadership(to) => {
                if let Some(l) = self.leader() {
                    let _ = self.transfer_leadership(l, *to);
                }
            }
            FaultEvent::Campaign(id) => self.campaign(*id),
        }
    }

    /// The random fault process of the fault phase (per [`FaultConfig`]).
    fn inject_random_faults(&mut self) {
        let now = self.now;
        for id in self.ids() {
            if self.slot(id).restart_at.is_some_and(|at| at <= now) {
                self.restart(id);
            }
        }
        if self.heal_at.is_some_and(|at| at <= now) {
            self.heal_at = None;
            self.heal();
        }
        let f = self.cfg.faults.clone();
        if f.crashes && self.rng.faults.chance(f.crash_rate) {
            let victims: Vec<NodeId> = if self.rng.faults.chance(f.total_crash_share) {
                self.ids()
            } else {
                let up: Vec<NodeId> = self.ids().into_iter().filter(|&n| self.is_up(n)).collect();
                if up.is_empty() {
                    Vec::new()
                } else {
                    vec![*self.rng.faults.pick(&up)]
                }
            };
            for id in victims {
                if self.is_up(id) {
                    self.crash(id);
                    let down = self.rng.faults.range(f.down_steps.0, f.down_steps.1);
                    self.slot_mut(id).restart_at = Some(now + down);
                }
            }
        }
        if f.partitions && self.heal_at.is_none() && self.rng.faults.chance(f.partition_rate) {
            self.random_partition();
            let lasts = self.rng.faults.range(f.partition_steps.0, f.partition_steps.1);
            self.heal_at = Some(now + lasts);
        }
        if self.rng.faults.chance(f.transfer_rate) {
            if let Some(leader) = self.leader() {
                let others: Vec<NodeId> = self.active_ids().into_iter().filter(|&n| n != leader).collect();
                if !others.is_empty() {
                    let to = *self.rng.faults.pick(&others);
                    let _ = self.transfer_leadership(leader, to);
                }
            }
        }
        if f.membership {
            self.membership_nemesis();
        }
    }

    /// One random partition shape: isolate the leader, a majority/minority
    /// split, a bridge node between two halves, random link cuts, or one-way
    /// cuts.
    fn random_partition(&mut self) {
        let mut ids = self.active_ids();
        let n = ids.len();
        if n < 2 {
            return;
        }
        self.rng.faults.shuffle(&mut ids);
        match self.rng.faults.below(5) {
            0 => {
                let victim = self.leader().unwrap_or(ids[0]);
                self.isolate(victim);
            }
            1 => {
                let k = self.rng.faults.range(1, n as u64 - 1) as usize;
                let (a, b) = ids.split_at(k);
                self.partition(&[a, b]);
            }
            2 if n >= 3 => {
                // ids[0] bridges the two halves of the rest.
                let k = self.rng.faults.range(1, n as u64 - 2) as usize;
                let (left, right) = ids[1..].split_at(k);
                self.bridge(left, right);
            }
            3 => {
                self.counters.partitions += 1;
                let mut cut_any = false;
                for (x, &a) in ids.iter().enumerate() {
                    for &b in &ids[x + 1..] {
                        if self.rng.faults.chance(0.4) {
                            self.network.cut(a, b);
                            cut_any = true;
                        }
                    }
                }
                if !cut_any {
                    self.network.cut(ids[0], ids[1]);
                }
                self.trace_event(0, || "random link cuts".to_string());
            }
            _ => {
                self.counters.partitions += 1;
                let from = self.leader().unwrap_or(ids[0]);
                let to = *self.rng.faults.pick(&ids);
                if to != from {
                    self.network.cut_one_way(to, from);
                    self.trace_event(0, || format!("cut n{to} -> n{from}"));
                } else {
                    self.network.cut_one_way(ids[1], from);
                    let other = ids[1];
                    self.trace_event(0, || format!("cut n{other} -> n{from}"));
                }
            }
        }
    }

    /// Crashes node `id`: its memory (core, state machine, released reads)
    /// is gone, writes not yet durable are lost, and (at random, with
    /// [`FaultConfig::crash_drops_inflight`]) its messages in flight too.
    /// No-op if it is already down.
    pub fn crash(&mut self, id: NodeId) {
        if !self.is_up(id) {
            return;
        }
        let drop_inflight = self.rng.faults.chance(self.cfg.faults.crash_drops_inflight);
        let slot = self.slot_mut(id);
        slot.replica = None;
        slot.jobs.clear();
        let lost = slot.disk.crash();
        if drop_inflight {
            self.network.drop_involving(id);
        }
        // Clients connected to it see the connection reset.
        for ci in 0..self.clients.len() {
            let on_it =
                self.clients[ci].current.as_ref().and_then(|p| p.attempt).is_some_and(|a| a.node == id);
            if on_it {
                self.clients[ci].leader_hint = None;
                self.lose_attempt(ci);
            }
        }
        self.counters.crashes += 1;
        self.trace_event(id, || {
            format!("CRASH (lost {lost} pending writes, in-flight dropped: {drop_inflight})")
        });
    }

    /// Restarts node `id` from its durable state, as `raft-node` starts:
    /// the store restored from the durable snapshot's file, the core from
    /// [`RaftNode::restart`], the replica from both. No-op if it is up.
    pub fn restart(&mut self, id: NodeId) {
        if self.is_up(id) || self.slot(id).retired || self.failure.is_some() {
            return;
        }
        let seed = self.rng.faults.next_u64();
        let slot = self.slot_mut(id);
        slot.restart_at = None;
        let mut config = slot.config.clone();
        config.seed = seed;
        let durable = slot.disk.durable().clone();
        let (raft, kv, snapshot_index, how) = match (&slot.founders, &durable.snapshot) {
            (Some(founders), None) if durable.entries.is_empty() => {
                // Nothing of the founding was durable: found again (the core
                // made no promise that a disk did not keep).
                match RaftNode::bootstrap(config, founders.clone()) {
                    Ok(raft) => (raft, empty_store(), 0, "with nothing durable: founded again".to_string()),
                    Err(e) => {
                        return self.fail(Property::Durability, format!("node {id} cannot found again: {e}"))
                    }
                }
            }
            (_, snapshot) => {
                let mut kv = empty_store();
                let index = snapshot.as_ref().map_or(0, |s| s.meta.index);
                if snapshot.is_some() {
                    let restored = match slot.disk.snapshot_file(index) {
                        Some(bytes) => kv.restore(bytes).map_err(|e| e.to_string()),
                        None => Err("its file is missing".to_string()),
                    };
                    if let Err(e) = restored {
                        return self.fail(
                            Property::Durability,
                            format!("node {id}'s durable snapshot at {index}: {e}"),
                        );
                    }
                }
                match RaftNode::restart(config, durable) {
                    Ok(raft) => {
                        let how = format!("from snapshot {index}, commit {}", raft.commit_index());
                        (raft, kv, index, how)
                    }
                    Err(e) => {
                        return self.fail(
                            Property::Durability,
                            format!("node {id} cannot restart from its durable state: {e}"),
                        )
                    }
                }
            }
        };
        let commit = raft.commit_index();
        let state = kv.digest();
        let i = self.index_of(id);
        let replica = new_replica(&self.cfg, &mut self.rng.compaction, &self.nodes[i], raft, kv);
        let slot = &mut self.nodes[i];
        slot.replica = Some(replica);
        slot.incarnation += 1;
        slot.seen_commit = snapshot_index;
        slot.log_dirty_from = Some(0);
        if let Err(e) = self.checkers.state_machine.restart(id, snapshot_index, state) {
            return self.fail(Property::StateMachineSafety, e);
        }
        if let Err(e) = self.checkers.commit.restart(id, commit, snapshot_index) {
            return self.fail(Property::CommitMonotonic, e);
        }
        self.trace_event(id, || format!("RESTART {how}"));
        self.drain(id);
    }

    /// Stops node `id` for good: it crashes (if it is up) and never restarts.
    pub fn retire(&mut self, id: NodeId) {
        if self.slot(id).retired {
            return;
        }
        self.crash(id);
        let slot = self.slot_mut(id);
        slot.retired = true;
        slot.restart_at = None;
        self.counters.nodes_retired += 1;
        self.trace_event(id, || "RETIRED (stopped for good)".to_string());
    }

    /// Starts a new node with an empty disk and no membership
    /// ([`RaftNode::new`]): it waits to be added to the cluster. Returns its
    /// id, the next unused one.
    pub fn add_node(&mut self) -> NodeId {
        let id = self.nodes.len() as NodeId + 1;
        let seed = self.rng.nemesis.next_u64();
        let config = core_config(&self.cfg, &self.limits, id, seed);
        let raft = RaftNode::new(config.clone()).unwrap_or_else(|e| panic!("node {id} does not start: {e}"));
        let tick_phase = self.rng.nemesis.below(self.cfg.tick_steps);
        let mut slot = NodeSlot::new(id, config, None, tick_phase);
        slot.replica = Some(new_replica(&self.cfg, &mut self.rng.compaction, &slot, raft, empty_store()));
        slot.log_dirty_from = Some(0);
        self.nodes.push(slot);
        if let Err(e) = self.checkers.state_machine.restart(id, 0, empty_store().digest()) {
            self.fail(Property::StateMachineSafety, e);
        }
        self.counters.nodes_added += 1;
        self.trace_event(id, || "NEW NODE (empty, no membership)".to_string());
        self.drain(id);
        id
    }

    /// Sends an admin request to node `id`'s replica: `Ok` if the replica
    /// took it (its answer comes later, traced), else what it answered at
    /// once.
    fn admin_request(&mut self, id: NodeId, request: RequestKind) -> Result<(), Refusal> {
        let n = self.next_admin;
        self.next_admin += 1;
        let Some(replica) = self.slot_mut(id).replica.as_mut() else {
            return Err(Refusal::NotLeader);
        };
        let before = replica.pending_requests();
        replica.client(request, Handle::Admin(n));
        let taken = replica.pending_requests() > before;
        self.admin_answer = None;
        self.drain(id);
        let answer = self.admin_answer.take().filter(|(m, _)| *m == n).map(|(_, a)| a);
        match (taken, answer) {
            (true, _) => Ok(()),
            (false, Some(ResponseKind::LeaderTransferred { .. })) => Ok(()),
            (false, answer) => Err(Refusal::of(answer)),
        }
    }

    /// Proposes `change` on node `id` through the client protocol
    /// ([`RequestKind::ChangeMembers`], as `raft-client member` does); an
    /// accepted change is recorded for the membership check. Its entry is
    /// the leader's last one.
    pub fn propose_membership_on(
        &mut self,
        id: NodeId,
        change: &MembershipChange,
    ) -> Result<Proposed, Refusal> {
        // Recorded before the drain, in case it is refused: the checker
        // only needs to know of every change that may commit.
        let result = self.admin_request(id, RequestKind::ChangeMembers(change.clone()));
        match &result {
            Ok(()) => {
                self.checkers.configs.propose(change);
                self.counters.membership_proposed += 1;
            }
            Err(_) => self.counters.membership_refused += 1,
        }
        let raft = self.node(id);
        let proposed = raft.map(|r| Proposed { index: r.last_index(), term: r.term() });
        match (&result, proposed) {
            (Ok(()), Some(p)) => {
                self.trace_event(id, || {
                    format!("MEMBERSHIP {:?} proposed at index {} term {}", change.ops, p.index, p.term)
                });
                Ok(p)
            }
            (Ok(()), None) => Err(Refusal::NotLeader),
            (Err(e), _) => {
                self.trace_event(id, || format!("MEMBERSHIP {:?} refused: {e}", change.ops));
                result.map(|()| unreachable!())
            }
        }
    }

    /// The configuration committed at the highest index, and that index.
    pub fn committed_membership(&self) -> (Index, &Membership) {
        self.checkers.configs.last()
    }

    /// Whether node `id` was stopped for good ([`Simulation::retire`]).
    pub fn is_retired(&self, id: NodeId) -> bool {
        self.slot(id).retired
    }

    /// Splits the cluster: nodes talk only within their group; nodes in no
    /// group are isolated.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        let groups: Vec<Vec<NodeId>> = groups.iter().map(|g| g.to_vec()).collect();
        let all = self.ids();
        self.network.partition(&all, &groups);
        self.counters.partitions += 1;
        self.trace_event(0, || format!("PARTITION {groups:?}"));
    }

    /// Cuts every link of `id`.
    pub fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self.ids().into_iter().filter(|&n| n != id).collect();
        self.partition(&[&others]);
    }

    /// `left` and `right` cannot talk to each other; every other node talks
    /// to both (a bridge).
    pub fn bridge(&mut self, left: &[NodeId], right: &[NodeId]) {
        self.network.bridge(left, right);
        self.counters.partitions += 1;
        self.trace_event(0, || format!("BRIDGE {left:?} | {right:?}"));
    }

    /// Reconnects every link.
    pub fn heal(&mut self) {
        if self.network.is_partitioned() {
            self.trace_event(0, || "HEAL".to_string());
        }
        self.network.heal();
    }

    // ------------------------------------------------------------ direct access

    /// Sends a put of `key = value` straight to node `id`, outside the
    /// checked history (session [`DIRECT_CLIENT`]): the index of its entry
    /// if the node took it, else why not.
    pub fn write_on(&mut self, id: NodeId, key: u64, value: u64) -> Result<Index, Refusal> {
        self.direct_seq += 1;
        let op = WriteOp::Put { key: encode_u64(key), value: encode_u64(value) };
        let command = Command { client_id: DIRECT_CLIENT, seq: self.direct_seq, op };
        self.admin_request(id, RequestKind::Write(command))?;
        Ok(self.node(id).map_or(0, RaftNode::last_index))
    }

    /// Asks node `from` to hand leadership to `to`
    /// ([`RequestKind::TransferLeader`], as `raft-client transfer-leader`).
    pub fn transfer_leadership(&mut self, from: NodeId, to: NodeId) -> Result<(), Refusal> {
        let result = self.admin_request(from, RequestKind::TransferLeader { to });
        if result.is_ok() {
            self.counters.transfers += 1;
            self.trace_event(from, || format!("TRANSFER leadership to n{to}"));
        }
        result
    }

    /// Makes node `id` start an election now (PreVote still applies).
    pub fn campaign(&mut self, id: NodeId) {
        if let Some(replica) = self.slot_mut(id).replica.as_mut() {
            replica.campaign();
            self.drain(id);
        }
    }

    /// Submits an operation on the scripted client ([`SCRIPT_CLIENT`]); it
    /// runs after the ones submitted before it, retries until it completes
    /// (it never gives up), and is recorded in the history like any other.
    pub fn submit(&mut self, op: Op) -> OpHandle {
        let handle = self.script_outcomes.len();
        self.script_outcomes.push(None);
        let client =
            self.clients.iter_mut().find(|c| c.id == SCRIPT_CLIENT).expect("the scripted client exists");
        client.queue.push_back((op, handle));
        OpHandle(handle)
    }

    /// The outcome of a submitted operation, once it completed.
    pub fn outcome(&self, handle: OpHandle) -> Option<Outcome> {
        self.script_outcomes[handle.0]
    }

    /// Turns the random clients' workload on or off (operations already
    /// started still complete).
    pub fn set_workload(&mut self, on: bool) {
        self.workload = on;
    }

    /// The node's core, if it is up.
    pub fn node(&self, id: NodeId) -> Option<&RaftNode> {
        self.slot(id).raft()
    }

    /// Whether node `id` is up.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.slot(id).replica.is_some()
    }

    /// Node `id`'s store, if it is up.
    pub fn kv(&self, id: NodeId) -> Option<&KvStore> {
        self.slot(id).replica.as_ref().map(Replica::kv)
    }

    /// The value of `key` in node `id`'s store (`None`: absent, or the node
    /// is down).
    pub fn value(&self, id: NodeId, key: u64) -> Option<u64> {
        self.kv(id)?.get(&encode_u64(key)).and_then(decode_u64)
    }

    /// The last index node `id`'s store reflects (0 while it is down).
    pub fn applied_index(&self, id: NodeId) -> Index {
        self.kv(id).map_or(0, KvStore::applied)
    }

    /// Node `id`'s durable state.
    pub fn durable(&self, id: NodeId) -> &raft_core::DurableState {
        self.slot(id).disk.durable()
    }

    /// Every node id, in order (retired ones included).
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|s| s.id).collect()
    }

    /// Every node id that is not retired, in order.
    pub fn active_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|s| !s.retired).map(|s| s.id).collect()
    }

    /// The live node that is leader in the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(NodeSlot::raft)
            .filter(|r| r.is_leader())
            .max_by_key(|r| r.term())
            .map(|r| r.id())
    }

    /// A leader that a majority of the voters of its membership (of each
    /// half, if joint; itself included) follows in its term, if any.
    pub fn stable_leader(&self) -> Option<NodeId> {
        let leader = self.leader()?;
        let node = self.node(leader)?;
        let term = node.term();
        let follows = |id: NodeId| {
            self.nodes
                .get(id as usize - 1)
                .and_then(NodeSlot::raft)
                .is_some_and(|r| r.term() == term && r.leader() == Some(leader))
        };
        live_majority(node.membership().0, |id| !follows(id)).then_some(leader)
    }

    /// The current step.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The client history so far.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The first property violated, if any.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// The trace lines recorded so far (with [`SimConfig::trace`]).
    pub fn trace(&self) -> &[String] {
        &self.trace
    }

    /// The counts so far.
    pub fn report(&self) -> Report {
        let net = self.network.stats();
        Report {
            seed: self.cfg.seed,
            nodes: self.cfg.nodes,
            steps: self.now,
            elections: self.counters.elections,
            leaders: self.checkers.election.terms_with_leader() as u64,
            committed: self.checkers.completeness.highest(),
            ops_ok: self.counters.ops_ok,
            ops_unknown: self.counters.ops_unknown,
            ops_failed: self.counters.ops_failed,
            snapshots_sent: self.counters.snapshots_sent,
            snapshots_installed: self.counters.snapshots_installed,
            compactions: self.counters.compactions,
            crashes: self.counters.crashes,
            partitions: self.counters.partitions,
            transfers: self.counters.transfers,
            membership_proposed: self.counters.membership_proposed,
            membership_refused: self.counters.membership_refused,
            configs_committed: self.checkers.configs.len() as u64 - 1,
            configs_by_voters: {
                let mut by = [0; 8];
                for (_, m) in self.checkers.configs.after(1) {
                    by[m.voters().incoming.len().min(7)] += 1;
                }
                by
            },
            joint_configs: self.checkers.configs.after(1).filter(|(_, m)| m.is_joint()).count() as u64,
            nodes_added: self.counters.nodes_added,
            nodes_retired: self.counters.nodes_retired,
            replacements: self.counters.replacements,
            messages_sent: net.sent,
            messages_dropped: net.dropped,
            trace_hash: self.hasher.finish(),
        }
    }

    // ------------------------------------------------------------ plumbing

    fn index_of(&self, id: NodeId) -> usize {
        assert!(
            id >= 1 && id as usize <= self.nodes.len(),
            "no node {id} in a cluster of {}",
            self.nodes.len()
        );
        id as usize - 1
    }

    fn slot(&self, id: NodeId) -> &NodeSlot {
        &self.nodes[self.index_of(id)]
    }

    fn slot_mut(&mut self, id: NodeId) -> &mut NodeSlot {
        let i = self.index_of(id);
        &mut self.nodes[i]
    }

    fn replica_mut(&mut self, id: NodeId) -> &mut Replica<Handle> {
        self.slot_mut(id).replica.as_mut().unwrap_or_else(|| panic!("node {id} is down"))
    }

    fn trace_event(&mut self, node: NodeId, event: impl FnOnce() -> String) {
        if self.cfg.trace {
            let line = event();
            self.trace_line(node, line);
        }
    }

    fn trace_line(&mut self, node: NodeId, event: String) {
        let who = if node == 0 { "  --".to_string() } else { format!("  n{node}") };
        self.trace.push(format!("{:>7} {who} {event}", self.now));
    }
}

/// The core's flow-control limits for one run.
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_inflight_appends: usize,
    max_append_bytes: usize,
    snapshot_chunk_bytes: usize,
    max_uncommitted_entries: u64,
}

impl Limits {
    fn draw(cfg: &SimConfig, rng: &mut SimRng) -> Limits {
        let defaults = Config::new(1);
        if !cfg.randomize_limits {
            return Limits {
                max_inflight_appends: defaults.max_inflight_appends,
                max_append_bytes: defaults.max_append_bytes,
                snapshot_chunk_bytes: defaults.snapshot_chunk_bytes,
                max_uncommitted_entries: defaults.max_uncommitted_entries,
            };
        }
        Limits {
            max_inflight_appends: *rng.pick(&[1, 2, 4, 16, defaults.max_inflight_appends]),
            max_append_bytes: *rng.pick(&[1, 64, 256, defaults.max_append_bytes]),
            snapshot_chunk_bytes: *rng.pick(&[7, 32, 128, defaults.snapshot_chunk_bytes]),
            max_uncommitted_entries: *rng.pick(&[0, 0, 4, 32]),
        }
    }
}

impl NodeSlot {
    /// A slot with an empty disk and no replica yet.
    fn new(id: NodeId, config: Config, founders: Option<Membership>, tick_phase: u64) -> NodeSlot {
        NodeSlot {
            id,
            config,
            founders,
            retired: false,
            replica: None,
            disk: Disk::new(),
            token: 0,
            jobs: Vec::new(),
            incarnation: 0,
            tick_phase,
            seen_role: (Role::Follower, 0),
            restart_at: None,
            seen_commit: 0,
            log_dirty_from: None,
            log_shape: (1, 0, Some(0)),
        }
    }

    /// The core, if the node is up (read-only: inputs go through the replica).
    fn raft(&self) -> Option<&RaftNode> {
        self.replica.as_ref().map(Replica::node)
    }
}

/// A store as a node starts one, before any snapshot.
fn empty_store() -> KvStore {
    KvStore::new(SESSIONS_MAX_DEFAULT)
}

/// The replica of the node in `slot` over `raft` and `kv`, as `raft-node`
/// builds it, with this incarnation's snapshot thresholds: after a number
/// of entries drawn from [`SimConfig::compaction`], or now and then after a
/// few hundred bytes of commands (never, without compaction).
fn new_replica(
    cfg: &SimConfig,
    rng: &mut SimRng,
    slot: &NodeSlot,
    raft: RaftNode,
    kv: KvStore,
) -> Replica<Handle> {
    let (snapshot_entries, snapshot_log_bytes) = match cfg.compaction {
        Some((lo, hi)) => {
            let entries = rng.range(lo.max(1), hi.max(lo.max(1)));
            let bytes = if rng.chance(0.25) { rng.range(100, 2_000) } else { u64::MAX };
            (entries, bytes)
        }
        None => (u64::MAX, u64::MAX),
    };
    let address = |id: NodeId| (id, format!("sim:n{id}"));
    let members = match &slot.founders {
        Some(founders) => founders.member_ids().map(address).collect(),
        None => [address(slot.id)].into_iter().collect(),
    };
    let config = ReplicaConfig {
        id: slot.id,
        members,
        cluster_id: "sim".to_string(),
        pid: 0,
        limits: WriteLimits::default(),
        snapshot_entries,
        snapshot_log_bytes,
        token: slot.token,
        new_token: rng.next_u64().max(1),
    };
    let mut replica = Replica::new(config, raft, kv);
    replica.record_applied(true);
    replica
}

/// What `raft-node`'s snapshot worker makes of a snapshot received from the
/// leader: the store it decodes to, at the index its metadata says, with
/// the bytes to keep as the file; or why it is refused.
fn check_received(snapshot: &Snapshot, bytes: Option<Vec<u8>>) -> Result<(KvStore, Vec<u8>), String> {
    let index = snapshot.meta.index;
    let Some(bytes) = bytes else {
        return Err(format!("no snapshot at {index} was received"));
    };
    if bytes.len() as u64 != snapshot.data_bytes {
        return Err(format!("{} bytes were stored of a snapshot of {}", bytes.len(), snapshot.data_bytes));
    }
    let mut kv = empty_store();
    kv.restore(&bytes).map_err(|e| e.to_string())?;
    if kv.applied() != index {
        return Err(format!("its state is at index {} but its metadata says {index}", kv.applied()));
    }
    Ok((kv, bytes))
}

/// The core's configuration of node `id`.
fn core_config(cfg: &SimConfig, limits: &Limits, id: NodeId, seed: u64) -> Config {
    let mut config = Config::new(id);
    config.election_timeout_ticks_min = cfg.election_timeout_ticks.0;
    config.election_timeout_ticks_max = cfg.election_timeout_ticks.1;
    config.heartbeat_interval_ticks = cfg.heartbeat_interval_ticks;
    config.pre_vote = cfg.pre_vote;
    config.check_quorum = cfg.check_quorum;
    config.max_inflight_appends = limits.max_inflight_appends;
    config.max_append_bytes = limits.max_append_bytes;
    config.snapshot_chunk_bytes = limits.snapshot_chunk_bytes;
    config.max_uncommitted_entries = limits.max_uncommitted_entries;
    config.seed = seed;
    if let Err(e) = config.validate() {
        panic!("invalid core configuration for node {id}: {e}");
    }
    config
}

/// Whether a majority of each half of `m`'s voters is not in `dead`.
fn live_majority(m: &Membership, dead: impl Fn(NodeId) -> bool) -> bool {
    let half_ok = |half: &MajorityConfig| {
        half.is_empty() || half.iter().filter(|&id| !dead(id)).count() > half.len() / 2
    };
    half_ok(&m.voters().incoming) && half_ok(&m.voters().outgoing)
}

/// One line for a trace.
fn describe_effect(effect: &Effect<Handle>) -> String {
    match effect {
        Effect::Persist(b) => {
            let mut s = format!("persist #{}", b.id);
            if let Some(snap) = &b.snapshot {
                let _ = write!(s, " snapshot@{}/t{}", snap.meta.index, snap.meta.term);
            }
            if let (Some(first), Some(last)) = (b.entries.first(), b.entries.last()) {
                let _ = write!(s, " entries {}..={} (t{})", first.index, last.index, last.term);
            }
            if let Some(hs) = b.hard_state {
                let _ = write!(s, " hard_state t{} vote {:?} commit {}", hs.term, hs.vote, hs.commit);
            }
            s
        }
        Effect::Send(m) => format!("send {}", describe_message(m)),
        Effect::SendSnapshotChunk { message, len } => {
            format!("send {} (+{len} bytes from the file)", describe_message(message))
        }
        Effect::SaveSnapshotChunk { meta, offset, data } => {
            format!("save snapshot@{}/t{} chunk at {offset}, {} bytes", meta.index, meta.term, data.len())
        }
        Effect::Compact(meta) => format!("compact to snapshot@{}/t{}", meta.index, meta.term),
        Effect::Answer(handle, answer) => format!("answer {handle:?}: {answer:?}"),
        Effect::TakeSnapshot { meta, .. } => format!("take snapshot@{}/t{}", meta.index, meta.term),
        Effect::CheckSnapshot(s) => format!("check snapshot@{}/t{}", s.meta.index, s.meta.term),
        Effect::TokenLearned(token) => format!("learned cluster token {token:#x}"),
        Effect::MembersChanged(members) => format!("members now {:?}", members.keys().collect::<Vec<_>>()),
        Effect::Removed { index } => format!("REMOVED by the configuration entry at {index}"),
        Effect::SnapshotRejected { index, problem, .. } => format!("rejected snapshot@{index}: {problem}"),
    }
}

fn describe_message(m: &Message) -> String {
    let body = match &m.body {
        MessageBody::Append { prev_log_index, prev_log_term, entries, leader_commit } => {
            match (entries.first(), entries.last()) {
                (Some(f), Some(l)) => format!(
                    "append prev {prev_log_index}/t{prev_log_term} entries {}..={} commit {leader_commit}",
                    f.index, l.index
                ),
                _ => format!("append prev {prev_log_index}/t{prev_log_term} (probe) commit {leader_commit}"),
            }
        }
        MessageBody::Snapshot { meta, offset, data, done } => {
            format!("snapshot@{}/t{} offset {offset} len {} done {done}", meta.index, meta.term, data.len())
        }
        other => format!("{other:?}"),
    };
    format!("n{} -> n{} t{} {body}", m.from, m.to, m.term)
}
