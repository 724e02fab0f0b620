//! C1: `raft-core` alone, in one process, no IO.
//!
//! A 3-node cluster wired in memory (one `VecDeque` inbox per node). Node 1 is
//! elected, then each *round* proposes `B` entries on the leader and pumps
//! messages until the cluster is quiescent (every node's inbox empty and no
//! node has actions left). Persist batches are "durable" as soon as the
//! actions of one `take_actions` call were executed (their entries are
//! dropped), applies are reported at once, and every node compacts its log
//! (`snapshot_taken` with an empty snapshot) every `--compact-every` committed
//! entries so that memory stays bounded.
//!
//! ```text
//! core-bench [--batch 1,16,64,256,1024] [--duration 3] [--warmup 0.5] [--payload-bytes 100]
//!            [--tick-ms 10] [--compact-every 10000] [--max-uncommitted 65536]
//!            [--no-step-timing] [--json]
//! ```
//!
//! Each batch size runs two phases of `--duration` seconds after a warm-up:
//!
//! 1. **throughput**, no timers inside the loop: committed entries per second
//!    (the leader's commit index advance over wall time), rounds per second,
//!    messages stepped per committed entry, entries per append message, and
//!    `wall ns/msg` = wall time / messages stepped (everything included:
//!    core, driver, allocation);
//! 2. **step timing** (skipped with `--no-step-timing`): the same loop with an
//!    `Instant` pair around every `step`, `take_actions`, `persisted`,
//!    `propose` and `snapshot_taken` call. The bias one pair adds to a timed
//!    interval is measured at start-up and subtracted. It gives the
//!    per-message `step` cost (all messages, and appends / append responses
//!    apart) and the share of each core entry point in the phase's wall time
//!    less the timers' cost; the rest is the driver (queues, dispatching and
//!    dropping actions, payload allocation).
//!
//! The loop is single-threaded and deterministic apart from wall-clock ticks
//! (`--tick-ms`, one `tick()` on every node per period, so that heartbeats and
//! check-quorum run as in a real deployment).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use raft_core::{Action, Config, Membership, Message, MessageBody, NodeId, ProposeError, RaftNode};

/// Cluster size.
const NODES: usize = 3;
/// The node that is elected and proposes.
const LEADER: NodeId = 1;

/// Benchmark C1: raft-core alone, 3 nodes in memory, no IO.
#[derive(Parser, Debug)]
#[command(name = "core-bench")]
struct Args {
    /// Entries proposed per round (comma-separated list: one table row each).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256,1024")]
    batch: Vec<usize>,
    /// Seconds measured per phase and batch size.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Seconds of warm-up per batch size, not measured.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Bytes of each proposed command.
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Milliseconds of wall time per logical tick (every node ticks once); 0: never tick.
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
    /// Compact every node's log after this many committed entries (raft-node's
    /// default snapshot interval is 10,000).
    #[arg(long, default_value_t = 10_000)]
    compact_every: u64,
    /// The leader's `max_uncommitted_entries` (back-pressure); 0 disables it.
    #[arg(long, default_value_t = 65_536)]
    max_uncommitted: u64,
    /// Skip the step-timing phase (throughput only).
    #[arg(long)]
    no_step_timing: bool,
    /// Print one JSON object per row instead of the table.
    #[arg(long)]
    json: bool,
}

/// Message kinds counted apart.
const KINDS: usize = 5;
const KIND_NAMES: [&str; KINDS] = ["append", "append-response", "heartbeat", "heartbeat-response", "other"];

fn kind_slot(body: &MessageBody) -> usize {
    match body {
        MessageBody::Append { .. } => 0,
        MessageBody::AppendResponse(_) => 1,
        MessageBody::Heartbeat { .. } => 2,
        MessageBody::HeartbeatResponse { .. } => 3,
        _ => 4,
    }
}

/// Counters of one phase. The `*_ns` fields are only filled in timed mode and
/// include the timer overhead (subtracted when reported).
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    steps: [u64; KINDS],
    step_ns: [u64; KINDS],
    take_actions: u64,
    take_actions_ns: u64,
    persisted: u64,
    persisted_ns: u64,
    proposes: u64,
    propose_ns: u64,
    appends_sent: u64,
    entries_sent: u64,
    persist_batches: u64,
    backpressure: u64,
    ticks: u64,
    compactions: u64,
    compact_ns: u64,
}

impl Stats {
    fn total_steps(&self) -> u64 {
        self.steps.iter().sum()
    }
}

/// Three nodes and their inboxes.
struct Cluster {
    nodes: Vec<RaftNode>,
    inboxes: Vec<VecDeque<Message>>,
    /// Nodes given an input (proposal, tick) since their actions were last
    /// drained. A node with no new input has no new actions.
    dirty: [bool; NODES],
    timed: bool,
    stats: Stats,
    payload: Vec<u8>,
    compact_every: u64,
    last_compaction: u64,
}

impl Cluster {
    fn new(args: &Args) -> Result<Cluster, String> {
        let voters: Vec<NodeId> = (1..=NODES as NodeId).collect();
        let mut nodes = Vec::with_capacity(NODES);
        for &id in &voters {
            let mut config = Config::new(id);
            config.max_uncommitted_entries = args.max_uncommitted;
            config.seed = 0xC1;
            config.validate().map_err(|e| format!("config of node {id}: {e}"))?;
            let founders = Membership::with_voters(voters.iter().copied()).map_err(|e| e.to_string())?;
            nodes.push(RaftNode::bootstrap(config, founders).map_err(|e| format!("node {id}: {e}"))?);
        }
        Ok(Cluster {
            nodes,
            inboxes: (0..NODES).map(|_| VecDeque::with_capacity(64)).collect(),
            dirty: [false; NODES],
            timed: false,
            stats: Stats::default(),
            payload: vec![0xAB; args.payload_bytes],
            compact_every: args.compact_every.max(1),
            last_compaction: 0,
        })
    }

    fn leader(&self) -> &RaftNode {
        &self.nodes[(LEADER - 1) as usize]
    }

    /// Elects node 1 and lets the cluster settle.
    fn elect(&mut self) -> Result<(), String> {
        self.nodes[(LEADER - 1) as usize].campaign();
        self.dirty[(LEADER - 1) as usize] = true;
        for _ in 0..1000 {
            if !self.pass() && self.leader().is_leader() {
                return Ok(());
            }
        }
        Err(format!("node {LEADER} did not become leader: {:?}", self.leader().status()))
    }

    /// One pass over the nodes: each steps what is in its inbox, then drains
    /// its actions if it had any input. Returns whether anything happened.
    fn pass(&mut self) -> bool {
        let mut busy = false;
        for i in 0..NODES {
            // Stepping produces no deliveries (those happen when actions are
            // executed), so the inbox can be taken out and put back.
            let mut inbox = std::mem::take(&mut self.inboxes[i]);
            if !inbox.is_empty() {
                self.dirty[i] = true;
                for m in inbox.drain(..) {
                    self.step(i, m);
                }
            }
            self.inboxes[i] = inbox;
            if std::mem::take(&mut self.dirty[i]) {
                busy |= self.drive(i);
            }
        }
        busy
    }

    /// Pumps until quiescent.
    fn pump(&mut self) {
        while self.pass() {}
    }

    fn step(&mut self, i: usize, m: Message) {
        let kind = kind_slot(&m.body);
        self.stats.steps[kind] += 1;
        if self.timed {
            let t0 = Instant::now();
            self.nodes[i].step(m);
            self.stats.step_ns[kind] += t0.elapsed().as_nanos() as u64;
        } else {
            self.nodes[i].step(m);
        }
    }

    fn take_actions(&mut self, i: usize) -> Vec<Action> {
        self.stats.take_actions += 1;
        if self.timed {
            let t0 = Instant::now();
            let actions = self.nodes[i].take_actions();
            self.stats.take_actions_ns += t0.elapsed().as_nanos() as u64;
            actions
        } else {
            self.nodes[i].take_actions()
        }
    }

    fn persisted(&mut self, i: usize, id: u64) {
        self.stats.persisted += 1;
        if self.timed {
            let t0 = Instant::now();
            self.nodes[i].persisted(id);
            self.stats.persisted_ns += t0.elapsed().as_nanos() as u64;
        } else {
            self.nodes[i].persisted(id);
        }
    }

    fn propose(&mut self, data: Vec<u8>) -> Result<(), ProposeError> {
        self.stats.proposes += 1;
        let leader = &mut self.nodes[(LEADER - 1) as usize];
        self.dirty[(LEADER - 1) as usize] = true;
        let result = if self.timed {
            let t0 = Instant::now();
            let r = leader.propose(data);
            self.stats.propose_ns += t0.elapsed().as_nanos() as u64;
            r
        } else {
            leader.propose(data)
        };
        result.map(|_| ())
    }

    /// Executes node `i`'s actions: sends go to the recipients' inboxes,
    /// applies are reported at once, and a persist batch is durable once the
    /// actions around it are executed. Reporting it may release messages that
    /// waited for it, so the actions are drained again after `persisted`;
    /// without a persist nothing new can appear until the next input.
    fn drive(&mut self, i: usize) -> bool {
        let mut busy = false;
        loop {
            let actions = self.take_actions(i);
            if actions.is_empty() {
                return busy;
            }
            busy = true;
            let mut durable = None;
            for action in actions {
                match action {
                    Action::Persist(batch) => {
                        // In memory: nobody reads the entries back, they are dropped.
                        self.stats.persist_batches += 1;
                        durable = Some(batch.id);
                    }
                    Action::Send(m) => {
                        if let MessageBody::Append { entries, .. } = &m.body {
                            self.stats.appends_sent += 1;
                            self.stats.entries_sent += entries.len() as u64;
                        }
                        let to = (m.to - 1) as usize;
                        self.inboxes[to].push_back(m);
                    }
                    Action::Apply(entries) => {
                        if let Some(last) = entries.last() {
                            self.nodes[i].applied(last.index);
                        }
                        black_box(entries);
                    }
                    // (Every node compacts at the same index: no follower
                    // ever needs a snapshot, so none is sent or stored.)
                    Action::SendSnapshotChunk { .. } | Action::SaveSnapshotChunk { .. } => {}
                    Action::ApplySnapshot(snapshot) => self.nodes[i].applied(snapshot.meta.index),
                    Action::CheckSnapshot(snapshot) => self.nodes[i].install_snapshot(snapshot),
                    Action::ReadReady { .. } | Action::ReadFailed { .. } | Action::RoleChanged { .. } => {}
                }
            }
            match durable {
                Some(id) => self.persisted(i, id),
                None => return busy,
            }
        }
    }

    /// Proposes `batch` entries on the leader and pumps until quiescent.
    fn round(&mut self, batch: usize) -> Result<(), String> {
        for _ in 0..batch {
            loop {
                match self.propose(self.payload.clone()) {
                    Ok(()) => break,
                    Err(ProposeError::Backpressure) => {
                        self.stats.backpressure += 1;
                        self.pump();
                    }
                    Err(e) => return Err(format!("proposal refused: {e}")),
                }
            }
        }
        self.pump();
        Ok(())
    }

    fn tick_all(&mut self) {
        self.stats.ticks += 1;
        for node in &mut self.nodes {
            node.tick();
        }
        self.dirty = [true; NODES];
        self.pump();
    }

    /// Compacts every node's log up to the lowest applied index (the cluster
    /// is quiescent, so every follower's match is at least that).
    fn maybe_compact(&mut self) {
        let commit = self.leader().commit_index();
        if commit < self.last_compaction + self.compact_every {
            return;
        }
        self.last_compaction = commit;
        let index = self.nodes.iter().map(|n| n.applied_index()).min().unwrap_or(0);
        let t0 = self.timed.then(Instant::now);
        for node in &mut self.nodes {
            if index >= node.first_index() {
                node.snapshot_taken(index, 0).expect("index is applied on every node");
                self.stats.compactions += 1;
            }
        }
        if let Some(t0) = t0 {
            self.stats.compact_ns += t0.elapsed().as_nanos() as u64;
        }
    }

    /// Runs rounds of `batch` for `duration`; returns (rounds, committed, elapsed).
    fn run_for(&mut self, batch: usize, duration: Duration, tick: Option<Duration>) -> Result<Phase, String> {
        let check_every = (64 / batch.max(1)).max(1) as u64;
        let commit0 = self.leader().commit_index();
        let start = Instant::now();
        let mut next_tick = tick.map(|t| start + t);
        let mut rounds = 0u64;
        loop {
            self.round(batch)?;
            self.maybe_compact();
            rounds += 1;
            if rounds % check_every == 0 {
                let now = Instant::now();
                if now - start >= duration {
                    break;
                }
                if let (Some(at), Some(period)) = (next_tick, tick) {
                    if now >= at {
                        self.tick_all();
                        next_tick = Some(at + period);
                    }
                }
            }
        }
        let elapsed = start.elapsed();
        Ok(Phase { rounds, committed: self.leader().commit_index() - commit0, elapsed })
    }

    /// Checks that nothing went wrong: node 1 still leads in its term, the
    /// nodes' invariants hold, and the followers agree with the leader on the
    /// term of their commit index.
    fn check(&self, term: u64) -> Result<(), String> {
        if !self.leader().is_leader() || self.leader().term() != term {
            return Err(format!(
                "leadership changed during the run (term {term} -> {}, role {})",
                self.leader().term(),
                self.leader().role()
            ));
        }
        for node in &self.nodes {
            node.check_invariants().map_err(|e| format!("node {}: {e}", node.id()))?;
            let commit = node.commit_index();
            if commit > self.leader().commit_index()
                || (commit >= self.leader().first_index()
                    && node.term_at(commit) != self.leader().term_at(commit))
            {
                return Err(format!("node {} disagrees with the leader at commit {commit}", node.id()));
            }
        }
        Ok(())
    }
}

/// What a phase did.
#[derive(Clone, Copy, Debug)]
struct Phase {
    rounds: u64,
    committed: u64,
    elapsed: Duration,
}

/// One table row.
#[derive(Clone, Copy, Debug)]
struct Row {
    batch: usize,
    throughput: Phase,
    plain: Stats,
    timed: Option<(Phase, Stats)>,
}

/// What timing a call costs, in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
struct TimerCost {
    /// The bias one `Instant` pair adds to a timed interval: the mean reading
    /// of `t0.elapsed()` around an empty region.
    bias: f64,
    /// The whole cost of one pair to the loop around it.
    pair: f64,
}

fn timer_cost() -> TimerCost {
    let n = 100_000u64;
    for _ in 0..10_000 {
        black_box(Instant::now().elapsed());
    }
    // The least of several samples: preemption by other work only adds.
    let mut best = TimerCost { bias: f64::INFINITY, pair: f64::INFINITY };
    for _ in 0..10 {
        let mut sum = 0u64;
        let start = Instant::now();
        for _ in 0..n {
            let t0 = Instant::now();
            sum += black_box(t0.elapsed().as_nanos() as u64);
        }
        let pair = start.elapsed().as_nanos() as f64 / n as f64;
        best.bias = best.bias.min(sum as f64 / n as f64);
        best.pair = best.pair.min(pair);
    }
    best
}

/// Derived numbers of a row.
struct Report {
    entries_per_sec: f64,
    rounds_per_sec: f64,
    us_per_round: f64,
    msgs_per_entry: f64,
    entries_per_append: f64,
    wall_ns_per_msg: f64,
    timed: Option<TimedReport>,
}

struct TimedReport {
    entries_per_sec: f64,
    step_ns: f64,
    step_ns_kind: [Option<f64>; KINDS],
    take_actions_ns: f64,
    persisted_ns: f64,
    propose_ns: f64,
    pct_step: f64,
    pct_take_actions: f64,
    pct_persisted: f64,
    pct_propose: f64,
    pct_compact: f64,
    pct_driver: f64,
}

fn report(row: &Row, timer: TimerCost) -> Report {
    let p = row.throughput;
    let s = row.plain;
    let secs = p.elapsed.as_secs_f64();
    let steps = s.total_steps();
    let timed = row.timed.map(|(tp, ts)| {
        // Shares are of the timed phase's wall time less what the timers
        // themselves cost, so that they are not counted anywhere.
        let step_count = ts.total_steps();
        let timed_calls = step_count + ts.take_actions + ts.persisted + ts.proposes;
        let wall = (tp.elapsed.as_nanos() as f64 - timed_calls as f64 * timer.pair).max(1.0);
        let net = |ns: u64, count: u64| (ns as f64 - count as f64 * timer.bias).max(0.0);
        let step_net: f64 = (0..KINDS).map(|k| net(ts.step_ns[k], ts.steps[k])).sum();
        let take_net = net(ts.take_actions_ns, ts.take_actions);
        let persisted_net = net(ts.persisted_ns, ts.persisted);
        let propose_net = net(ts.propose_ns, ts.proposes);
        let per = |total: f64, count: u64| if count == 0 { 0.0 } else { total / count as f64 };
        let mut step_ns_kind = [None; KINDS];
        for (k, slot) in step_ns_kind.iter_mut().enumerate() {
            if ts.steps[k] > 0 {
                *slot = Some(per(net(ts.step_ns[k], ts.steps[k]), ts.steps[k]));
            }
        }
        let pct = |x: f64| 100.0 * x / wall;
        let compact = ts.compact_ns as f64;
        let core = step_net + take_net + persisted_net + propose_net + compact;
        TimedReport {
            entries_per_sec: tp.committed as f64 * 1e9 / wall,
            step_ns: per(step_net, step_count),
            step_ns_kind,
            take_actions_ns: per(take_net, ts.take_actions),
            persisted_ns: per(persisted_net, ts.persisted),
            propose_ns: per(propose_net, ts.proposes),
            pct_step: pct(step_net),
            pct_take_actions: pct(take_net),
            pct_persisted: pct(persisted_net),
            pct_propose: pct(propose_net),
            pct_compact: pct(compact),
            pct_driver: (100.0 - pct(core)).max(0.0),
        }
    });
    Report {
        entries_per_sec: p.committed as f64 / secs,
        rounds_per_sec: p.rounds as f64 / secs,
        us_per_round: secs * 1e6 / p.rounds.max(1) as f64,
        msgs_per_entry: steps as f64 / p.committed.max(1) as f64,
        entries_per_append: s.entries_sent as f64 / s.appends_sent.max(1) as f64,
        wall_ns_per_msg: p.elapsed.as_nanos() as f64 / steps.max(1) as f64,
        timed,
    }
}

fn json_row(args: &Args, row: &Row, r: &Report, timer: TimerCost) -> String {
    let mut out = String::new();
    let p = row.throughput;
    let _ = write!(
        out,
        "{{\"bench\":\"c1-core\",\"nodes\":{NODES},\"batch\":{},\"payload_bytes\":{},\"duration_s\":{:.3},\
         \"rounds\":{},\"committed\":{},\"entries_per_sec\":{:.0},\"rounds_per_sec\":{:.0},\"us_per_round\":{:.3},\
         \"msgs_per_entry\":{:.4},\"entries_per_append\":{:.2},\"wall_ns_per_msg\":{:.1},\"messages\":{},\
         \"take_actions_calls\":{},\"persisted_calls\":{},\"persist_batches\":{},\"backpressure\":{},\"ticks\":{},\"compactions\":{}",
        row.batch,
        args.payload_bytes,
        p.elapsed.as_secs_f64(),
        p.rounds,
        p.committed,
        r.entries_per_sec,
        r.rounds_per_sec,
        r.us_per_round,
        r.msgs_per_entry,
        r.entries_per_append,
        r.wall_ns_per_msg,
        row.plain.total_steps(),
        row.plain.take_actions,
        row.plain.persisted,
        row.plain.persist_batches,
        row.plain.backpressure,
        row.plain.ticks,
        row.plain.compactions,
    );
    if let Some(t) = &r.timed {
        let _ = write!(
            out,
            ",\"timer_bias_ns\":{:.1},\"timer_pair_ns\":{:.1},\"timed_entries_per_sec\":{:.0},\"step_ns\":{:.1},\
             \"take_actions_ns\":{:.1},\"persisted_ns\":{:.1},\"propose_ns\":{:.1},\"pct_step\":{:.1},\
             \"pct_take_actions\":{:.1},\"pct_persisted\":{:.1},\"pct_propose\":{:.1},\"pct_compact\":{:.1},\"pct_driver\":{:.1}",
            timer.bias,
            timer.pair,
            t.entries_per_sec,
            t.step_ns,
            t.take_actions_ns,
            t.persisted_ns,
            t.propose_ns,
            t.pct_step,
            t.pct_take_actions,
            t.pct_persisted,
            t.pct_propose,
            t.pct_compact,
            t.pct_driver,
        );
        let _ = write!(out, ",\"step_ns_by_kind\":{{");
        let mut first = true;
        for (k, ns) in t.step_ns_kind.iter().enumerate() {
            if let Some(ns) = ns {
                let sep = if first { "" } else { "," };
                let _ = write!(out, "{sep}\"{}\":{ns:.1}", KIND_NAMES[k]);
                first = false;
            }
        }
        out.push('}');
    }
    out.push('}');
    out
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"))
}

fn print_table(rows: &[(Row, Report)]) {
    println!(
        "{:>6} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9} | {:>7} {:>7} {:>7} {:>8} {:>8} | {:>5} {:>5} {:>5} {:>5} {:>5} {:>6}",
        "batch",
        "entries/s",
        "rounds/s",
        "us/round",
        "msgs/ent",
        "ent/app",
        "wall ns/m",
        "step ns",
        "app ns",
        "resp ns",
        "take ns",
        "pers ns",
        "%step",
        "%take",
        "%pers",
        "%prop",
        "%cmpt",
        "%drvr",
    );
    for (row, r) in rows {
        let mut line = format!(
            "{:>6} {:>12.0} {:>10.0} {:>9.2} {:>9.4} {:>9.1} {:>9.1} |",
            row.batch,
            r.entries_per_sec,
            r.rounds_per_sec,
            r.us_per_round,
            r.msgs_per_entry,
            r.entries_per_append,
            r.wall_ns_per_msg,
        );
        match &r.timed {
            Some(t) => {
                let _ = write!(
                    line,
                    " {:>7.0} {:>7} {:>7} {:>8.0} {:>8.0} | {:>5.1} {:>5.1} {:>5.1} {:>5.1} {:>5.1} {:>6.1}",
                    t.step_ns,
                    fmt_opt(t.step_ns_kind[0]),
                    fmt_opt(t.step_ns_kind[1]),
                    t.take_actions_ns,
                    t.persisted_ns,
                    t.pct_step,
                    t.pct_take_actions,
                    t.pct_persisted,
                    t.pct_propose,
                    t.pct_compact,
                    t.pct_driver,
                );
            }
            None => line.push_str(" (step timing skipped)"),
        }
        println!("{line}");
    }
}

fn run(args: &Args) -> Result<(), String> {
    if args.batch.is_empty() || args.batch.contains(&0) {
        return Err("--batch needs sizes of at least 1".into());
    }
    if !args.duration.is_finite() || args.duration <= 0.0 || !args.warmup.is_finite() || args.warmup < 0.0 {
        return Err("--duration must be positive and --warmup not negative".into());
    }
    let timer = if args.no_step_timing { TimerCost::default() } else { timer_cost() };
    let tick = (args.tick_ms > 0).then(|| Duration::from_millis(args.tick_ms));
    let duration = Duration::from_secs_f64(args.duration);
    let warmup = Duration::from_secs_f64(args.warmup);

    let mut cluster = Cluster::new(args)?;
    cluster.elect()?;
    let term = cluster.leader().term();

    if !args.json {
        println!(
            "core-bench (C1): raft-core alone, {NODES} nodes in memory, no IO; payload {} B; {:.1} s per phase \
             (+{:.1} s warm-up); tick {}; compaction every {} entries{}",
            args.payload_bytes,
            args.duration,
            args.warmup,
            tick.map_or_else(|| "off".to_string(), |t| format!("{} ms", t.as_millis())),
            args.compact_every,
            if args.no_step_timing {
                String::new()
            } else {
                format!(
                    "; timer: {:.1} ns bias per timed call, {:.1} ns per pair (both subtracted)",
                    timer.bias, timer.pair
                )
            },
        );
    }

    let mut rows = Vec::new();
    for &batch in &args.batch {
        if warmup > Duration::ZERO {
            cluster.run_for(batch, warmup, tick)?;
        }
        cluster.stats = Stats::default();
        let throughput = cluster.run_for(batch, duration, tick)?;
        let plain = cluster.stats;
        let timed = if args.no_step_timing {
            None
        } else {
            cluster.stats = Stats::default();
            cluster.timed = true;
            let phase = cluster.run_for(batch, duration, tick)?;
            cluster.timed = false;
            Some((phase, cluster.stats))
        };
        cluster.check(term)?;
        let row = Row { batch, throughput, plain, timed };
        let r = report(&row, timer);
        if args.json {
            println!("{}", json_row(args, &row, &r, timer));
        }
        rows.push((row, r));
    }

    if !args.json {
        print_table(&rows);
        println!();
        println!(
            "entries/s, rounds/s, msgs/ent (messages stepped per committed entry), ent/app (entries per append \
             message) and wall ns/m (wall time / messages stepped) come from the untimed phase; step ns (all \
             kinds), app ns (append), resp ns (append response), take ns (take_actions), pers ns (persisted) \
             come from the timed phase, timer bias subtracted. The % columns are the time in each core entry \
             point (%cmpt: snapshot_taken, i.e. log compaction) over the timed phase's wall time less the \
             timers' cost; %drvr is the rest: queues, action dispatch, dropping the entries of persist, apply and \
             append actions, payload allocation."
        );
        let best = rows.iter().map(|(_, r)| r.entries_per_sec).fold(0.0, f64::max);
        let first_ok = rows.iter().find(|(_, r)| r.entries_per_sec >= 1e6).map(|(row, _)| row.batch);
        match first_ok {
            Some(b) => {
                println!("target >= 1,000,000 committed entries/s: met from batch {b} (best {best:.0}/s)")
            }
            None => println!("target >= 1,000,000 committed entries/s: NOT met (best {best:.0}/s)"),
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("core-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
