//! The classic "Raft Lite" lab experiments, inside the deterministic simulator:
//! every step is checked for Election Safety, Log Matching, Leader
//! Completeness, State Machine Safety and commit monotonicity, and every run
//! ends with a linearizability check of the client history.

use raft_core::{NodeId, Role};
use raft_tests::linearizability::{Op, OpResult, Outcome};
use raft_tests::sim::{SimConfig, Simulation};

/// Generous deadlines, in steps (one tick is 10 steps; elections take 15–30 ticks).
const ELECTION_DEADLINE: u64 = 3_000;
const OP_DEADLINE: u64 = 6_000;

fn scripted(nodes: usize, seed: u64) -> Simulation {
    let mut cfg = SimConfig::scripted(nodes, seed);
    // Scripted clients only: the assertions below are about our own writes.
    cfg.workload = false;
    Simulation::new(cfg)
}

fn wait_for_leader(sim: &mut Simulation) -> NodeId {
    assert!(
        sim.run_until(|s| s.stable_leader().is_some(), ELECTION_DEADLINE),
        "no leader elected within {ELECTION_DEADLINE} steps: {:?}",
        sim.failure()
    );
    sim.stable_leader().expect("checked above")
}

/// Submits a put through the scripted client and waits for its answer.
fn put(sim: &mut Simulation, key: u64, value: u64) {
    let h = sim.submit(Op::Put { key, value });
    assert!(
        sim.run_until(|s| s.outcome(h).is_some(), OP_DEADLINE),
        "put({key}, {value}) not acknowledged within {OP_DEADLINE} steps: {:?}",
        sim.failure()
    );
    assert_eq!(sim.outcome(h), Some(Outcome::Ok(OpResult::Put)));
}

fn get(sim: &mut Simulation, key: u64) -> Option<u64> {
    let h = sim.submit(Op::Get { key });
    assert!(sim.run_until(|s| s.outcome(h).is_some(), OP_DEADLINE), "get({key}) not answered");
    match sim.outcome(h) {
        Some(Outcome::Ok(OpResult::Get(v))) => v,
        other => panic!("get({key}) ended with {other:?}"),
    }
}

/// Waits until every live node has applied everything the leader committed.
fn wait_caught_up(sim: &mut Simulation, who: NodeId) {
    let caught_up = |s: &Simulation| {
        let Some(leader) = s.stable_leader() else { return false };
        let commit = s.node(leader).map_or(0, |n| n.commit_index());
        s.is_up(who) && s.applied_index(who) >= commit && commit > 0
    };
    assert!(sim.run_until(caught_up, OP_DEADLINE), "node {who} did not catch up: {:?}", sim.failure());
}

fn finish(mut sim: Simulation) {
    if let Err(f) = sim.finish() {
        panic!("{f}");
    }
}

#[test]
fn leader_crash_re_election_writes_continue_and_the_old_leader_catches_up() {
    let mut sim = scripted(3, 1);
    let old = wait_for_leader(&mut sim);
    for k in 1..=5 {
        put(&mut sim, k, 100 + k);
    }
    sim.crash(old);
    let new = wait_for_leader(&mut sim);
    assert_ne!(new, old, "a crashed node cannot lead");
    let old_term = sim.node(new).unwrap().term();
    for k in 6..=30 {
        put(&mut sim, k, 100 + k);
    }
    sim.restart(old);
    wait_caught_up(&mut sim, old);
    // The old leader holds every acknowledged write, as do the others.
    for id in sim.ids() {
        for k in 1..=30 {
            assert_eq!(sim.value(id, k), Some(100 + k), "node {id} key {k}");
        }
    }
    assert_eq!(sim.node(old).unwrap().role(), Role::Follower);
    assert!(old_term > 1, "the new leader's term is later than the first");
    for k in [1, 15, 30] {
        assert_eq!(get(&mut sim, k), Some(100 + k));
    }
    finish(sim);
}

#[test]
fn follower_crash_writes_continue_and_the_follower_catches_up_through_a_snapshot() {
    let mut cfg = SimConfig::scripted(3, 2);
    cfg.workload = false;
    cfg.compaction = Some((5, 5)); // compact often, so the follower needs a snapshot
    let mut sim = Simulation::new(cfg);
    let leader = wait_for_leader(&mut sim);
    let follower = sim.ids().into_iter().find(|&id| id != leader).unwrap();
    put(&mut sim, 1, 1);
    sim.crash(follower);
    for k in 2..=40 {
        put(&mut sim, k, k);
    }
    let first = sim.node(leader).unwrap().first_index();
    assert!(first > sim.durable(follower).entries.last().map_or(0, |e| e.index) + 1, "the log was compacted");
    sim.restart(follower);
    wait_caught_up(&mut sim, follower);
    assert!(sim.report().snapshots_installed >= 1, "the follower caught up through a snapshot");
    for k in 1..=40 {
        assert_eq!(sim.value(follower, k), Some(k), "key {k} on the restarted follower");
    }
    finish(sim);
}

#[test]
fn an_isolated_leader_commits_nothing_and_its_entries_are_replaced_after_healing() {
    let mut sim = scripted(5, 3);
    let old = wait_for_leader(&mut sim);
    put(&mut sim, 1, 1);
    let old_term = sim.node(old).unwrap().term();
    let commit_before = sim.node(old).unwrap().commit_index();
    sim.isolate(old);
    // Writes that reach the old leader cannot commit: it is alone.
    let mut stranded = Vec::new();
    for v in 0..3u64 {
        let index = sim.write_on(old, 1, 1_000 + v).expect("it still believes it leads");
        stranded.push(index);
    }
    assert!(
        sim.run_until(|s| s.stable_leader().is_some_and(|l| l != old), ELECTION_DEADLINE),
        "the majority did not elect a new leader"
    );
    for k in 2..=10 {
        put(&mut sim, k, k);
    }
    // CheckQuorum: the isolated leader notices it lost the majority.
    assert!(
        sim.run_until(|s| s.node(old).is_some_and(|n| !n.is_leader()), ELECTION_DEADLINE),
        "the isolated leader never stepped down"
    );
    assert_eq!(sim.node(old).unwrap().commit_index(), commit_before, "the isolated leader committed nothing");
    sim.heal();
    wait_caught_up(&mut sim, old);
    let node = sim.node(old).unwrap();
    for index in stranded {
        let entry = node.entry(index).map(|e| e.term).or_else(|| node.term_at(index));
        assert_ne!(entry, Some(old_term), "the stranded entry at {index} was replaced");
    }
    for k in 1..=10 {
        assert_eq!(sim.value(old, k), Some(k), "key {k} on the healed old leader");
    }
    finish(sim);
}

#[test]
fn a_node_cut_off_and_healed_does_not_depose_a_healthy_leader() {
    let mut sim = scripted(3, 4);
    let leader = wait_for_leader(&mut sim);
    let term = sim.node(leader).unwrap().term();
    let loner = sim.ids().into_iter().find(|&id| id != leader).unwrap();
    sim.isolate(loner);
    // Many election timeouts pass for the loner: PreVote keeps its term.
    sim.run_for(10 * sim.config().election_timeout_steps());
    assert_eq!(sim.node(loner).unwrap().term(), term, "PreVote: no term inflation while cut off");
    sim.heal();
    put(&mut sim, 1, 1);
    assert_eq!(sim.stable_leader(), Some(leader));
    assert_eq!(sim.node(leader).unwrap().term(), term, "the healthy leader was not deposed");
    finish(sim);
}

#[test]
fn whole_cluster_crash_loses_no_acknowledged_write() {
    let mut sim = scripted(3, 5);
    wait_for_leader(&mut sim);
    for k in 1..=20 {
        put(&mut sim, k, k * 7);
    }
    for id in sim.ids() {
        sim.crash(id);
    }
    for id in sim.ids() {
        sim.restart(id);
    }
    wait_for_leader(&mut sim);
    for k in 1..=20 {
        assert_eq!(get(&mut sim, k), Some(k * 7));
    }
    finish(sim);
}

#[test]
fn leadership_transfer_hands_over_without_losing_writes() {
    let mut sim = scripted(3, 6);
    let from = wait_for_leader(&mut sim);
    put(&mut sim, 1, 1);
    let to = sim.ids().into_iter().find(|&id| id != from).unwrap();
    sim.transfer_leadership(from, to).expect("the leader accepts a transfer to a voter");
    assert!(
        sim.run_until(|s| s.stable_leader() == Some(to), ELECTION_DEADLINE),
        "leadership did not move to {to}"
    );
    put(&mut sim, 2, 2);
    assert_eq!(get(&mut sim, 1), Some(1));
    finish(sim);
}

/// The liveness check is a checker like the others: a world where votes
/// always arrive after the election timer fired again never elects a leader,
/// and the run must fail saying so.
#[test]
fn the_liveness_check_fails_when_no_leader_can_be_elected() {
    let mut cfg = SimConfig::scripted(3, 7);
    cfg.tick_steps = 1;
    cfg.election_timeout_ticks = (15, 16);
    cfg.faults.max_delay = 200; // every message takes far longer than an election timeout...
    cfg.steps = 500;
    let mut sim = Simulation::new(cfg);
    let failure = sim.run().expect_err("no leader can be elected");
    assert_eq!(failure.property, raft_tests::sim::Property::Liveness, "{failure}");
    assert!(failure.detail.contains("no leader"), "{failure}");
}
