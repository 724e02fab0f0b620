//! Runs the deterministic simulator over many seeds, or replays one.
//!
//! ```text
//! simulate --seeds 10000 [--nodes 3|5|both] [--first-seed S] [--steps N] [--jobs J]
//! simulate --seed S [--nodes 3|5] [--quiet]      # replay one seed and print its trace
//! (either with --restricted-removals: only the removals raft-core recovered from before c7e06d8)
//! ```
//!
//! A failing seed prints the seed, the first violated property and the command
//! that replays it, and the process exits with status 1.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use raft_tests::sim::{Failure, Report, SimConfig, Simulation};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Nodes {
    #[value(name = "3")]
    Three,
    #[value(name = "5")]
    Five,
    Both,
}

impl Nodes {
    fn sizes(self) -> &'static [usize] {
        match self {
            Nodes::Three => &[3],
            Nodes::Five => &[5],
            Nodes::Both => &[3, 5],
        }
    }
}

/// Deterministic simulation of Raft Lite clusters under random faults.
#[derive(Parser, Debug)]
#[command(name = "simulate")]
struct Args {
    /// Run this many seeds (per cluster size), all faults on.
    #[arg(long, conflicts_with = "seed")]
    seeds: Option<u64>,
    /// The first seed of a `--seeds` run.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Replay one seed and print its trace.
    #[arg(long)]
    seed: Option<u64>,
    /// Cluster size: 3, 5 or both (replays default to 3).
    #[arg(long, value_enum, default_value = "both")]
    nodes: Nodes,
    /// Steps of the fault phase of each run (default: the simulator's).
    #[arg(long)]
    steps: Option<u64>,
    /// Worker threads for `--seeds` (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// With `--seed`: print only the outcome, not the trace.
    #[arg(long)]
    quiet: bool,
    /// Keep the membership nemesis to the removals raft-core recovered from
    /// before c7e06d8 (`FaultConfig::all_removals` off).
    #[arg(long)]
    restricted_removals: bool,
}

fn config(args: &Args, nodes: usize, seed: u64) -> SimConfig {
    let mut cfg = SimConfig::new(nodes, seed);
    if let Some(steps) = args.steps {
        cfg.steps = steps;
    }
    cfg.faults.all_removals &= !args.restricted_removals;
    cfg
}

fn main() -> ExitCode {
    let args = Args::parse();
    match (args.seed, args.seeds) {
        (Some(seed), _) => replay(&args, seed),
        (None, Some(count)) => many(&args, count),
        (None, None) => {
            eprintln!("simulate: give --seeds N to run many seeds or --seed S to replay one");
            ExitCode::from(2)
        }
    }
}

fn replay(args: &Args, seed: u64) -> ExitCode {
    let nodes = match args.nodes {
        Nodes::Five => 5,
        _ => 3,
    };
    let mut cfg = config(args, nodes, seed);
    cfg.trace = !args.quiet;
    let mut sim = Simulation::new(cfg);
    let result = sim.run();
    if !args.quiet {
        for line in sim.trace() {
            println!("{line}");
        }
    }
    match result {
        Ok(report) => {
            println!("seed {seed} ({nodes} nodes): ok: {report}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("FAILED {failure}");
            ExitCode::FAILURE
        }
    }
}

fn many(args: &Args, count: u64) -> ExitCode {
    let jobs =
        args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let mut failed = false;
    for &nodes in args.nodes.sizes() {
        let start = Instant::now();
        let next = AtomicU64::new(args.first_seed);
        let end = args.first_seed + count;
        let stop = AtomicBool::new(false);
        let failures: Mutex<Vec<Failure>> = Mutex::new(Vec::new());
        let total: Mutex<Report> = Mutex::new(Report::default());
        let done = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(|| {
                    let mut local = Report::default();
                    while !stop.load(Ordering::Relaxed) {
                        let seed = next.fetch_add(1, Ordering::Relaxed);
                        if seed >= end {
                            break;
                        }
                        match Simulation::new(config(args, nodes, seed)).run() {
                            Ok(report) => local.accumulate(&report),
                            Err(f) => {
                                failures.lock().expect("no panics hold this lock").push(f);
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if n % 1000 == 0 {
                            eprintln!(
                                "  {nodes} nodes: {n}/{count} seeds, {:.1} s",
                                start.elapsed().as_secs_f64()
                            );
                        }
                    }
                    total.lock().expect("no panics hold this lock").accumulate(&local);
                });
            }
        });
        let elapsed = start.elapsed().as_secs_f64();
        let mut failures = failures.into_inner().expect("no panics hold this lock");
        failures.sort_by_key(|f| f.seed);
        if let Some(first) = failures.first() {
            println!("FAILED {first}");
            failed = true;
            break;
        }
        let total = total.into_inner().expect("no panics hold this lock");
        println!(
            "{nodes} nodes: {count} seeds ({}..{end}) passed in {elapsed:.1} s ({:.1} seeds/s, {jobs} threads)",
            args.first_seed,
            count as f64 / elapsed
        );
        println!(
            "  totals: steps={} elections={} committed={} ops ok={} unknown={} failed={} crashes={} partitions={} \
             transfers={} snapshots installed={} compactions={} messages sent={} dropped={}\n  \
             membership: proposed={} refused={} configs committed={} (joint {}; by voters 0..=7: {:?}) \
             nodes added={} retired={} replacements={}",
            total.steps,
            total.elections,
            total.committed,
            total.ops_ok,
            total.ops_unknown,
            total.ops_failed,
            total.crashes,
            total.partitions,
            total.transfers,
            total.snapshots_installed,
            total.compactions,
            total.messages_sent,
            total.messages_dropped,
            total.membership_proposed,
            total.membership_refused,
            total.configs_committed,
            total.joint_configs,
            total.configs_by_voters,
            total.nodes_added,
            total.nodes_retired,
            total.replacements
        );
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
