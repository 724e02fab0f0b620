//! Randomized simulation: a fixed budget of mixed-fault seeds (membership
//! nemesis included), proptest fault schedules, and determinism (same seed,
//! same trace).
//!
//! The seed budget is `SIM_SEEDS` per cluster size (default 400 for 3 nodes,
//! half that for 5); `simulate --seeds 10000` is the long run.

use proptest::prelude::*;
use raft_core::NodeId;
use raft_tests::sim::{FaultConfig, FaultEvent, Report, SimConfig, Simulation};

fn budget() -> u64 {
    std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(400)
}

/// Runs seeds `first..first + count` and panics with the first failure.
fn run_seeds(nodes: usize, first: u64, count: u64) {
    let mut total = Report::default();
    for seed in first..first + count {
        match Simulation::new(SimConfig::new(nodes, seed)).run() {
            Ok(report) => total.accumulate(&report),
            Err(failure) => panic!("{failure}"),
        }
    }
    let ok = total.ops_ok;
    assert!(ok > count, "clients got answers ({ok} operations over {count} seeds)");
    // The membership nemesis did its work: configurations committed, joint
    // ones among them, nodes added and replaced, from 1 to 7 voters.
    if count >= 50 {
        assert!(total.configs_committed > count, "{total}");
        assert!(total.joint_configs > 0 && total.replacements > 0 && total.nodes_added > 0, "{total}");
        assert!(total.configs_by_voters[1] > 0 && total.configs_by_voters[7] > 0, "{total}");
        assert!(total.membership_refused > 0, "{total}");
    }
}

// Seeds far from the ones `simulate --seeds N` starts with, so CI covers new ground.
#[test]
fn mixed_fault_seeds_three_nodes() {
    run_seeds(3, 1_000_000, budget());
}

#[test]
fn mixed_fault_seeds_five_nodes() {
    run_seeds(5, 2_000_000, budget() / 2);
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    for nodes in [3, 5] {
        let run = |seed| {
            let mut cfg = SimConfig::new(nodes, seed);
            cfg.trace = true;
            let mut sim = Simulation::new(cfg);
            let report = sim.run().unwrap_or_else(|f| panic!("{f}"));
            (report, sim.trace().to_vec())
        };
        let (a, trace_a) = run(42);
        let (b, trace_b) = run(42);
        assert_eq!(a.trace_hash, b.trace_hash);
        assert_eq!(a, b);
        assert_eq!(trace_a, trace_b);
        assert!(trace_a.len() > 100, "the trace records the run");
        let (c, _) = run(43);
        assert_ne!(a.trace_hash, c.trace_hash, "another seed takes another path");
    }
}

#[test]
fn tracing_does_not_change_the_run() {
    let quiet = Simulation::new(SimConfig::new(3, 7)).run().unwrap();
    let mut cfg = SimConfig::new(3, 7);
    cfg.trace = true;
    let traced = Simulation::new(cfg).run().unwrap();
    assert_eq!(quiet, traced);
}

/// A fault in a proptest schedule, over a cluster of `n` nodes.
fn fault(n: u64) -> impl Strategy<Value = FaultEvent> {
    let id = move || (1..=n).prop_map(|i| i as NodeId);
    prop_oneof![
        id().prop_map(FaultEvent::Crash),
        Just(FaultEvent::CrashLeader),
        id().prop_map(FaultEvent::Restart),
        Just(FaultEvent::RestartAll),
        id().prop_map(FaultEvent::Isolate),
        Just(FaultEvent::IsolateLeader),
        (id(), id()).prop_map(|(a, b)| FaultEvent::Cut(a, b)),
        (id(), id()).prop_map(|(a, b)| FaultEvent::CutOneWay(a, b)),
        // A random split into groups (a node may be in none: isolated).
        proptest::collection::vec(0..3u8, n as usize).prop_map(move |groups| {
            let mut parts = vec![Vec::new(); 2];
            for (i, g) in groups.into_iter().enumerate() {
                if let Some(part) = parts.get_mut(g as usize) {
                    part.push(i as NodeId + 1);
                }
            }
            FaultEvent::Partition(parts)
        }),
        // A bridge: node 1 sees both halves.
        Just(FaultEvent::Bridge(vec![2], (3..=n as NodeId).collect())),
        Just(FaultEvent::Heal),
        id().prop_map(FaultEvent::TransferLeadership),
        id().prop_map(FaultEvent::Campaign),
    ]
}

fn schedule(n: u64, steps: u64) -> impl Strategy<Value = Vec<(u64, FaultEvent)>> {
    proptest::collection::vec((0..steps, fault(n)), 0..24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Hand-shaped fault schedules on top of a lossy, reordering network:
    /// every safety property holds, and after the schedule the cluster
    /// recovers and finishes every operation.
    #[test]
    fn arbitrary_fault_schedules_keep_every_property(
        nodes in prop_oneof![Just(3usize), Just(5usize)],
        seed in any::<u64>(),
        events in schedule(5, 3_000),
    ) {
        let mut cfg = SimConfig::new(nodes, seed);
        cfg.steps = 3_000;
        cfg.faults = FaultConfig {
            partitions: false,
            crashes: false,
            transfer_rate: 0.0,
            membership: false,
            ..FaultConfig::mixed()
        };
        let events: Vec<(u64, FaultEvent)> = events
            .into_iter()
            .filter(|(_, e)| ids_of(e).iter().all(|&id| id as usize <= nodes))
            .collect();
        let result = Simulation::new(cfg).run_schedule(&events);
        prop_assert!(result.is_ok(), "{}\nschedule: {:?}", result.unwrap_err(), events);
    }
}

fn ids_of(e: &FaultEvent) -> Vec<NodeId> {
    match e {
        FaultEvent::Crash(a)
        | FaultEvent::Restart(a)
        | FaultEvent::Isolate(a)
        | FaultEvent::TransferLeadership(a)
        | FaultEvent::Campaign(a) => vec![*a],
        FaultEvent::Cut(a, b) | FaultEvent::CutOneWay(a, b) => vec![*a, *b],
        FaultEvent::Partition(groups) => groups.iter().flatten().copied().collect(),
        FaultEvent::Bridge(l, r) => l.iter().chain(r).copied().collect(),
        FaultEvent::CrashLeader | FaultEvent::RestartAll | FaultEvent::IsolateLeader | FaultEvent::Heal => {
            Vec::new()
        }
    }
}
