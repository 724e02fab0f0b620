//! A deterministic simulator for Raft Lite.
//!
//! N [`RaftNode`]s are wired through a simulated network (delays, drops,
//! duplicates, reordering, partitions of any shape), simulated disks (fsyncs
//! that complete later and in order; a crash loses what was not durable) and
//! a key-value state machine with exactly-once sessions, driven by concurrent
//! clients whose history is checked for linearizability. Everything runs in
//! discrete steps, one thread, and every random choice comes from one `u64`
//! seed, so a failing seed replays exactly.
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
pub mod kv;
mod nemesis;
pub mod network;
pub mod report;
pub mod rng;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};

use raft_core::quorum::MajorityConfig;
use raft_core::{
    Action, Config, Entry, EntryPayload, Index, Membership, MembershipChange, Message, MessageBody, NodeId,
    ProposeError, Proposed, RaftNode, Role, Snapshot, SnapshotError, Term, TransferError,
};

use crate::linearizability::{self, ClientId, History, Op, OpResult, Outcome};
pub use client::VALUE_STRIDE;
use client::{Attempt, Client, PendingOp};
pub use config::{FaultConfig, SimConfig};
use disk::Disk;
use hash::{digest_entry, digest_payload, hash_action, StableHasher};
use invariants::{
    CommitMonotonic, ConfigHistory, ElectionSafety, LeaderCompleteness, LogMatching, StateMachineSafety,
};
use kv::{ApplyOutcome, Command, KvStore};
use network::Network;
pub use report::{Failure, Property, Report};
use rng::SimRng;

/// The client id of operations submitted with [`Simulation::submit`].
pub const SCRIPT_CLIENT: ClientId = 999;

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

/// One node as the simulated machine sees it: the core, its state machine,
/// its disk.
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
    raft: Option<RaftNode>,
    kv: KvStore,
    /// The last index the state machine reflects.
    applied: Index,
    disk: Disk,
    /// Bumped on every restart: answers from an earlier incarnation are void.
    incarnation: u64,
    /// The node ticks when `(step + tick_phase) % tick_steps == 0`.
    tick_phase: u64,
    /// Reads released by ReadIndex, waiting for `applied >= index`.
    ready_reads: Vec<(u64, Index)>,
    /// Compact the log once `applied` reaches this.
    next_compaction: Index,
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
    next_ctx: u64,
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
            let next_compaction = next_compaction(&cfg, &mut rng.compaction, 0);
            nodes.push(NodeSlot::new(id, config, Some(founders.clone()), raft, tick_phase, next_compaction));
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
            checkers.state_machine.restart(id, 0, KvStore::new().digest()).expect("fresh nodes agree");
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
            next_ctx: 1,
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
                || slot.raft.as_ref().is_some_and(|r| {
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
            match &slot.raft {
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

    fn complete_fsyncs(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].raft.is_none() {
                continue;
            }
            let id = self.nodes[i].id;
            match self.nodes[i].disk.complete_due(self.now) {
                Ok(None) => {}
                Ok(Some(batch)) => {
                    self.trace_event(id, || format!("fsync done up to batch {batch}"));
                    self.raft_mut(id).persisted(batch);
                    self.drain(id);
                }
                Err(e) => self.fail(Property::Durability, format!("node {id}: {e}")),
            }
        }
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
            self.raft_mut(to).step(msg);
            self.drain(to);
        }
    }

    fn tick_nodes(&mut self) {
        for i in 0..self.nodes.len() {
            let slot = &self.nodes[i];
            if slot.raft.is_some() && (self.now + slot.tick_phase) % self.cfg.tick_steps == 0 {
                let id = slot.id;
                self.raft_mut(id).tick();
                self.drain(id);
            }
        }
    }

    // ------------------------------------------------------------ the driver

    /// Executes everything node `id` asks for, in order, until it asks for
    /// nothing more; records what the checkers need on the way.
    fn drain(&mut self, id: NodeId) {
        self.touched.insert(id);
        loop {
            if self.failure.is_some() {
                return;
            }
            let Some(raft) = self.slot_mut(id).raft.as_mut() else {
                return;
            };
            let actions = raft.take_actions();
            // Observe before executing: applying may compact the log, and the
            // entries newly committed must still be there to be recorded.
            self.observe_node(id);
            if actions.is_empty() {
                return;
            }
            for action in actions {
                self.execute(id, action);
                if self.failure.is_some() {
                    return;
                }
            }
        }
    }

    fn execute(&mut self, id: NodeId, action: Action) {
        hash_action(&mut self.hasher, self.now, id, &action);
        if self.cfg.trace {
            self.trace_line(id, describe_action(&action));
        }
        match action {
            Action::Persist(batch) => {
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
            Action::Send(msg) => {
                if let MessageBody::Snapshot { offset: 0, .. } = msg.body {
                    self.counters.snapshots_sent += 1;
                }
                self.network.send(msg, self.now, &mut self.rng.network, &self.faults);
            }
            Action::Apply(entries) => self.apply_entries(id, entries),
            Action::SendSnapshotChunk { mut message, len } => {
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
                self.execute(id, Action::Send(message));
            }
            Action::SaveSnapshotChunk { meta, offset, data } => {
                self.slot_mut(id).disk.save_snapshot_chunk(meta, offset, &data)
            }
            Action::ApplySnapshot(snapshot) => self.apply_snapshot(id, snapshot),
            Action::CheckSnapshot(snapshot) => {
                let index = snapshot.meta.index;
                let bytes = self.slot_mut(id).disk.finish_snapshot(&snapshot.meta);
                match bytes {
                    Some(bytes)
                        if bytes.len() as u64 == snapshot.data_bytes && KvStore::decode(&bytes).is_ok() =>
                    {
                        self.slot_mut(id).disk.keep_snapshot_file(index, bytes);
                        self.raft_mut(id).install_snapshot(snapshot);
                    }
                    _ => self.raft_mut(id).reject_snapshot(index),
                }
            }
            Action::ReadReady { ctx, index } => {
                self.slot_mut(id).ready_reads.push((ctx, index));
                self.serve_reads(id);
            }
            Action::ReadFailed { ctx, leader } => self.read_failed(ctx, leader),
            Action::RoleChanged { role, term, .. } => {
                if role == Role::Candidate {
                    self.counters.elections += 1;
                }
                if let Err(e) = self.checkers.election.observe(id, role, term) {
                    self.fail(Property::ElectionSafety, e);
                }
            }
        }
    }

    /// Records what node `id` shows now: its role (Election Safety), its
    /// commit index (monotonic) and the entries newly committed (Leader
    /// Completeness).
    fn observe_node(&mut self, id: NodeId) {
        let i = self.index_of(id);
        let Some(raft) = self.nodes[i].raft.as_ref() else {
            return;
        };
        if let Err(e) = self.checkers.election.observe(id, raft.role(), raft.term()) {
            return self.fail(Property::ElectionSafety, e);
        }
        let commit = raft.commit_index();
        if let Err(e) = self.checkers.commit.observe(id, commit) {
            return self.fail(Property::CommitMonotonic, e);
        }
        let seen = self.nodes[i].seen_commit;
        if commit <= seen {
            return;
        }
        let term = raft.term();
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

    fn apply_entries(&mut self, id: NodeId, entries: Vec<Entry>) {
        let Some(last) = entries.last().map(|e| e.index) else {
            return;
        };
        for entry in &entries {
            let applied = match &entry.payload {
                EntryPayload::Blank | EntryPayload::Membership(_) => None,
                EntryPayload::Command(bytes) => match Command::decode(bytes) {
                    Ok(cmd) => {
                        let outcome = self.slot_mut(id).kv.apply(&cmd);
                        Some((cmd, outcome))
                    }
                    Err(e) => {
                        return self.fail(
                            Property::StateMachineSafety,
                            format!("node {id} applied an undecodable command at index {}: {e}", entry.index),
                        )
                    }
                },
            };
            let slot = self.slot_mut(id);
            slot.applied = entry.index;
            let state = slot.kv.digest();
            if let Err(e) = self.checkers.state_machine.apply(id, entry.index, digest_entry(entry), state) {
                return self.fail(Property::StateMachineSafety, e);
            }
            self.write_applied(id, entry.index, applied);
        }
        self.raft_mut(id).applied(last);
        self.serve_reads(id);
        self.maybe_compact(id);
    }

    fn apply_snapshot(&mut self, id: NodeId, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        let data = self.slot(id).disk.snapshot_file(index).unwrap_or_default();
        let kv = match KvStore::decode(data) {
            Ok(kv) => kv,
            Err(e) => {
                return self.fail(
                    Property::StateMachineSafety,
                    format!("node {id} got a snapshot at index {index} that does not decode: {e}"),
                )
            }
        };
        match self.checkers.configs.at(index) {
            Some((_, m)) if *m == *snapshot.meta.membership => {}
            committed => {
                let committed = committed.map(|(at, m)| format!("{} (index {at})", invariants::describe(m)));
                let carried = invariants::describe(&snapshot.meta.membership);
                return self.fail(
                    Property::Membership,
                    format!(
                        "node {id} installed a snapshot at index {index} with configuration {carried}, \
                         but the one committed there is {committed:?}"
                    ),
                );
            }
        }
        let state = kv.digest();
        let slot = self.slot_mut(id);
        slot.kv = kv;
        slot.applied = index;
        if let Err(e) = self.checkers.state_machine.restore(id, index, state) {
            return self.fail(Property::StateMachineSafety, e);
        }
        self.counters.snapshots_installed += 1;
        self.snapshot_resolves_writes(id, index);
        self.raft_mut(id).applied(index);
        self.serve_reads(id);
        let next = next_compaction(&self.cfg, &mut self.rng.compaction, index);
        self.slot_mut(id).next_compaction = next;
    }

    /// Log compaction: after `K` more applied entries, serialize the state
    /// machine, hand it to the core, and store it durably.
    fn maybe_compact(&mut self, id: NodeId) {
        let i = self.index_of(id);
        let applied = self.nodes[i].applied;
        if self.cfg.compaction.is_none() || applied < self.nodes[i].next_compaction {
            return;
        }
        let data = self.nodes[i].kv.encode();
        let raft = self.nodes[i].raft.as_mut().expect("compacting a live node");
        match raft.snapshot_taken(applied, data.len() as u64) {
            Ok(()) => {
                let meta = raft.snapshot_meta();
                if meta.index != applied {
                    return self.fail(
                        Property::NodeInvariants,
                        format!("node {id} took a snapshot at {applied} but reports one at {}", meta.index),
                    );
                }
                self.nodes[i].disk.store_snapshot(meta, data);
                self.counters.compactions += 1;
                self.trace_event(id, || format!("compacted up to {applied}"));
            }
            Err(SnapshotError::Stale { .. }) => {}
            Err(e) => {
                return self.fail(
                    Property::NodeInvariants,
                    format!("node {id} refused a snapshot at its applied index {applied}: {e}"),
                )
            }
        }
        let next = next_compaction(&self.cfg, &mut self.rng.compaction, applied);
        self.nodes[i].next_compaction = next;
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
        if pending.attempt.is_some_and(|a| now.saturating_sub(a.sent()) >= timeout) {
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

    /// Sends the client's operation to the node it believes leads.
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
        let incarnation = self.slot(target).incarnation;
        let client_id = self.clients[ci].id;
        let pending = self.clients[ci].current.as_ref().expect("pending");
        let command = pending.command(client_id);
        let op = pending.op;
        let result = match command {
            Some(cmd) => match self.raft_mut(target).propose(cmd.encode()) {
                Ok(proposed) => {
                    let pending = self.clients[ci].current.as_mut().expect("pending");
                    pending.attempt = Some(Attempt::Write { node: target, incarnation, proposed, sent: now });
                    pending.maybe_applied = true;
                    self.trace_event(target, || {
                        format!(
                            "client {client_id} proposed {op} seq {} at index {} term {}",
                            cmd.seq, proposed.index, proposed.term
                        )
                    });
                    Ok(())
                }
                Err(e) => Err(e),
            },
            None => {
                let ctx = self.next_ctx;
                self.next_ctx += 1;
                // Registered first: the answer may come in this very drain.
                self.clients[ci].current.as_mut().expect("pending").attempt =
                    Some(Attempt::Read { node: target, incarnation, ctx, sent: now });
                match self.raft_mut(target).read_index(ctx) {
                    Ok(()) => {
                        self.trace_event(target, || format!("client {client_id} read {op} ctx {ctx}"));
                        Ok(())
                    }
                    Err(e) => {
                        self.clients[ci].current.as_mut().expect("pending").attempt = None;
                        Err(e)
                    }
                }
            }
        };
        match result {
            Ok(()) => {
                self.clients[ci].leader_hint = Some(target);
                self.drain(target);
            }
            Err(ProposeError::NotLeader { leader }) => {
                let hint = leader.filter(|&l| l != target);
                let wait = if hint.is_some() { 1 } else { self.rng.clients.range(1, 2 * tick) };
                let client = &mut self.clients[ci];
                client.leader_hint = hint;
                client.current.as_mut().expect("pending").next_attempt = now + wait;
            }
            // (Membership errors come only from propose_membership; a retry
            // later is right for any refusal.)
            Err(_) => {
                let wait = self.rng.clients.range(tick, 3 * tick);
                self.clients[ci].current.as_mut().expect("pending").next_attempt = now + wait;
            }
        }
    }

    /// Node `id` applied `index`; `applied` is the command there and how the
    /// session table took it. Answers the client waiting on this node, or
    /// tells it its attempt was lost (another entry took the index).
    fn write_applied(&mut self, id: NodeId, index: Index, applied: Option<(Command, ApplyOutcome)>) {
        let incarnation = self.slot(id).incarnation;
        for ci in 0..self.clients.len() {
            let client = &self.clients[ci];
            let Some(pending) = &client.current else {
                continue;
            };
            let Some(Attempt::Write { node, proposed, .. }) = pending.attempt else {
                continue;
            };
            if pending.attempt.map(|a| a.node()) != Some((id, incarnation)) {
                continue;
            }
            debug_assert_eq!(node, id);
            if let Some((cmd, outcome)) = applied {
                if cmd.client == client.id && cmd.seq == pending.seq {
                    if let Some(result) = outcome.result() {
                        self.complete_op(ci, Outcome::Ok(result.to_op_result()));
                        continue;
                    }
                }
            }
            if proposed.index == index {
                // Another entry took our index: the proposal was lost to a
                // leader change. Retry (same seq) at once.
                self.lose_attempt(ci);
            }
        }
    }

    /// Node `id` jumped to a snapshot at `index`: attempts waiting there for
    /// an index it covers learn their fate from the restored session table.
    fn snapshot_resolves_writes(&mut self, id: NodeId, index: Index) {
        let incarnation = self.slot(id).incarnation;
        for ci in 0..self.clients.len() {
            let client = &self.clients[ci];
            let Some(pending) = &client.current else {
                continue;
            };
            let Some(Attempt::Write { proposed, .. }) = pending.attempt else {
                continue;
            };
            if pending.attempt.map(|a| a.node()) != Some((id, incarnation)) || proposed.index > index {
                continue;
            }
            match self.slot(id).kv.session(client.id) {
                Some(s) if s.seq == pending.seq => {
                    let result = s.result.to_op_result();
                    self.complete_op(ci, Outcome::Ok(result));
                }
                _ => self.lose_attempt(ci),
            }
        }
    }

    fn lose_attempt(&mut self, ci: usize) {
        let now = self.now;
        if let Some(p) = self.clients[ci].current.as_mut() {
            p.attempt = None;
            p.next_attempt = now;
        }
    }

    /// Serves the released reads of node `id` that its state machine has caught up with.
    fn serve_reads(&mut self, id: NodeId) {
        let i = self.index_of(id);
        let applied = self.nodes[i].applied;
        if !self.nodes[i].ready_reads.iter().any(|&(_, at)| at <= applied) {
            return;
        }
        let incarnation = self.nodes[i].incarnation;
        let (ready, waiting): (Vec<_>, Vec<_>) =
            self.nodes[i].ready_reads.iter().partition(|&&(_, at)| at <= applied);
        self.nodes[i].ready_reads = waiting;
        for (ctx, _) in ready {
            let Some(ci) = self.client_with_read(ctx) else {
                continue;
            };
            let pending = self.clients[ci].current.as_ref().expect("found above");
            if pending.attempt.map(|a| a.node()) != Some((id, incarnation)) {
                continue;
            }
            let value = self.nodes[i].kv.get(pending.op.key());
            self.complete_op(ci, Outcome::Ok(OpResult::Get(value)));
        }
    }

    fn read_failed(&mut self, ctx: u64, leader: Option<NodeId>) {
        if let Some(ci) = self.client_with_read(ctx) {
            self.clients[ci].leader_hint = leader;
            self.lose_attempt(ci);
        }
    }

    fn client_with_read(&self, ctx: u64) -> Option<usize> {
        self.clients.iter().position(|c| {
            c.current
                .as_ref()
                .is_some_and(|p| matches!(p.attempt, Some(Attempt::Read { ctx: c, .. }) if c == ctx))
        })
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
        let Some(raft) = slot.raft.as_ref() else {
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
        let Some(raft) = self.slot(id).raft.as_ref() else {
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
        slot.raft = None;
        slot.kv = KvStore::new();
        slot.applied = 0;
        slot.ready_reads.clear();
        let lost = slot.disk.crash();
        if drop_inflight {
            self.network.drop_involving(id);
        }
        // Clients connected to it see the connection reset.
        for ci in 0..self.clients.len() {
            let on_it =
                self.clients[ci].current.as_ref().and_then(|p| p.attempt).is_some_and(|a| a.node().0 == id);
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

    /// Restarts node `id` from its durable state: the state machine is
    /// rebuilt from the durable snapshot and the core from
    /// [`RaftNode::restart`]. No-op if it is up.
    pub fn restart(&mut self, id: NodeId) {
        if self.is_up(id) || self.slot(id).retired || self.failure.is_some() {
            return;
        }
        let seed = self.rng.faults.next_u64();
        let slot = self.slot_mut(id);
        slot.restart_at = None;
        let durable = slot.disk.durable().clone();
        if durable.entries.is_empty() && durable.snapshot.is_none() {
            if let Some(founders) = slot.founders.clone() {
                // Nothing of the founding was durable: found again (the core
                // made no promise that a disk did not keep).
                let mut config = slot.config.clone();
                config.seed = seed;
                let raft = match RaftNode::bootstrap(config, founders) {
                    Ok(raft) => raft,
                    Err(e) => {
                        return self.fail(Property::Durability, format!("node {id} cannot found again: {e}"))
                    }
                };
                let slot = self.slot_mut(id);
                slot.raft = Some(raft);
                slot.kv = KvStore::new();
                slot.applied = 0;
                slot.incarnation += 1;
                slot.ready_reads.clear();
                slot.seen_commit = 0;
                slot.log_dirty_from = Some(0);
                let next = next_compaction(&self.cfg, &mut self.rng.compaction, 0);
                self.slot_mut(id).next_compaction = next;
                if let Err(e) = self.checkers.state_machine.restart(id, 0, KvStore::new().digest()) {
                    return self.fail(Property::StateMachineSafety, e);
                }
                if let Err(e) = self.checkers.commit.restart(id, 0, 0) {
                    return self.fail(Property::CommitMonotonic, e);
                }
                self.trace_event(id, || "RESTART with nothing durable: founded again".to_string());
                return self.drain(id);
            }
        }
        let (snapshot_index, kv) = match &durable.snapshot {
            None => (0, Ok(KvStore::new())),
            Some(s) => {
                (s.meta.index, KvStore::decode(slot.disk.snapshot_file(s.meta.index).unwrap_or_default()))
            }
        };
        let kv = match kv {
            Ok(kv) => kv,
            Err(e) => {
                return self
                    .fail(Property::Durability, format!("node {id}'s durable snapshot does not decode: {e}"))
            }
        };
        let mut config = slot.config.clone();
        config.seed = seed;
        let raft = match RaftNode::restart(config, durable) {
            Ok(raft) => raft,
            Err(e) => {
                return self.fail(
                    Property::Durability,
                    format!("node {id} cannot restart from its durable state: {e}"),
                )
            }
        };
        let commit = raft.commit_index();
        let state = kv.digest();
        slot.raft = Some(raft);
        slot.kv = kv;
        slot.applied = snapshot_index;
        slot.incarnation += 1;
        slot.ready_reads.clear();
        slot.seen_commit = snapshot_index;
        slot.log_dirty_from = Some(0);
        let next = next_compaction(&self.cfg, &mut self.rng.compaction, snapshot_index);
        self.slot_mut(id).next_compaction = next;
        if let Err(e) = self.checkers.state_machine.restart(id, snapshot_index, state) {
            return self.fail(Property::StateMachineSafety, e);
        }
        if let Err(e) = self.checkers.commit.restart(id, commit, snapshot_index) {
            return self.fail(Property::CommitMonotonic, e);
        }
        self.trace_event(id, || format!("RESTART from snapshot {snapshot_index}, commit {commit}"));
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
        let next = next_compaction(&self.cfg, &mut self.rng.compaction, 0);
        self.nodes.push(NodeSlot::new(id, config, None, raft, tick_phase, next));
        self.slot_mut(id).log_dirty_from = Some(0);
        if let Err(e) = self.checkers.state_machine.restart(id, 0, KvStore::new().digest()) {
            self.fail(Property::StateMachineSafety, e);
        }
        self.counters.nodes_added += 1;
        self.trace_event(id, || "NEW NODE (empty, no membership)".to_string());
        self.drain(id);
        id
    }

    /// Proposes `change` on node `id` (as an operator would on the leader);
    /// an accepted change is recorded for the membership check.
    pub fn propose_membership_on(
        &mut self,
        id: NodeId,
        change: &MembershipChange,
    ) -> Result<Proposed, ProposeError> {
        let Some(raft) = self.slot_mut(id).raft.as_mut() else {
            return Err(ProposeError::NotLeader { leader: None });
        };
        let result = raft.propose_membership(change);
        match &result {
            Ok(p) => {
                self.checkers.configs.propose(change);
                self.counters.membership_proposed += 1;
                self.trace_event(id, || {
                    format!("MEMBERSHIP {:?} proposed at index {} term {}", change.ops, p.index, p.term)
                });
            }
            Err(e) => {
                self.counters.membership_refused += 1;
                self.trace_event(id, || format!("MEMBERSHIP {:?} refused: {e}", change.ops));
            }
        }
        self.drain(id);
        result
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

    /// Proposes `data` directly on node `id` (as if a client reached it).
    pub fn propose_on(&mut self, id: NodeId, data: Vec<u8>) -> Result<Proposed, ProposeError> {
        let Some(raft) = self.slot_mut(id).raft.as_mut() else {
            return Err(ProposeError::NotLeader { leader: None });
        };
        let result = raft.propose(data);
        self.drain(id);
        result
    }

    /// Asks node `from` to hand leadership to `to`.
    pub fn transfer_leadership(&mut self, from: NodeId, to: NodeId) -> Result<(), TransferError> {
        let Some(raft) = self.slot_mut(from).raft.as_mut() else {
            return Err(TransferError::NotLeader { leader: None });
        };
        let result = raft.transfer_leadership(to);
        if result.is_ok() {
            self.counters.transfers += 1;
            self.trace_event(from, || format!("TRANSFER leadership to n{to}"));
        }
        self.drain(from);
        result
    }

    /// Makes node `id` start an election now (PreVote still applies).
    pub fn campaign(&mut self, id: NodeId) {
        if let Some(raft) = self.slot_mut(id).raft.as_mut() {
            raft.campaign();
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

    /// The node, if it is up.
    pub fn node(&self, id: NodeId) -> Option<&RaftNode> {
        self.slot(id).raft.as_ref()
    }

    /// Whether node `id` is up.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.slot(id).raft.is_some()
    }

    /// Node `id`'s state machine (empty while it is down).
    pub fn kv(&self, id: NodeId) -> &KvStore {
        &self.slot(id).kv
    }

    /// The last index node `id`'s state machine reflects.
    pub fn applied_index(&self, id: NodeId) -> Index {
        self.slot(id).applied
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
            .filter_map(|s| s.raft.as_ref())
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
                .and_then(|s| s.raft.as_ref())
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

    fn raft_mut(&mut self, id: NodeId) -> &mut RaftNode {
        self.slot_mut(id).raft.as_mut().unwrap_or_else(|| panic!("node {id} is down"))
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
    fn new(
        id: NodeId,
        config: Config,
        founders: Option<Membership>,
        raft: RaftNode,
        tick_phase: u64,
        next_compaction: Index,
    ) -> NodeSlot {
        NodeSlot {
            id,
            config,
            founders,
            retired: false,
            raft: Some(raft),
            kv: KvStore::new(),
            applied: 0,
            disk: Disk::new(),
            incarnation: 0,
            tick_phase,
            ready_reads: Vec::new(),
            next_compaction,
            restart_at: None,
            seen_commit: 0,
            log_dirty_from: None,
            log_shape: (1, 0, Some(0)),
        }
    }
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

fn next_compaction(cfg: &SimConfig, rng: &mut SimRng, applied: Index) -> Index {
    match cfg.compaction {
        Some((lo, hi)) => applied + rng.range(lo.max(1), hi.max(lo.max(1))),
        None => Index::MAX,
    }
}

/// One line for a trace.
fn describe_action(action: &Action) -> String {
    match action {
        Action::Persist(b) => {
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
        Action::Send(m) => format!("send {}", describe_message(m)),
        Action::SendSnapshotChunk { message, len } => {
            format!("send {} (+{len} bytes from the file)", describe_message(message))
        }
        Action::SaveSnapshotChunk { meta, offset, data } => {
            format!("save snapshot@{}/t{} chunk at {offset}, {} bytes", meta.index, meta.term, data.len())
        }
        Action::Apply(entries) => match (entries.first(), entries.last()) {
            (Some(f), Some(l)) => format!("apply {}..={}", f.index, l.index),
            _ => "apply nothing".to_string(),
        },
        Action::ApplySnapshot(s) => {
            format!("apply snapshot@{}/t{}", s.meta.index, s.meta.term)
        }
        Action::CheckSnapshot(s) => format!("check snapshot@{}/t{}", s.meta.index, s.meta.term),
        Action::ReadReady { ctx, index } => format!("read ready ctx {ctx} at {index}"),
        Action::ReadFailed { ctx, leader } => format!("read failed ctx {ctx} leader {leader:?}"),
        Action::RoleChanged { role, term, leader } => {
            format!("becomes {role} in term {term} (leader {leader:?})")
        }
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
