//! Claims of the Raft paper and dissertation, each pinned by a test on a tiny
//! in-memory cluster: messages are delivered in order unless a test cuts a
//! link, persistence completes at once.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use common::SnapshotFiles;

use proptest::prelude::*;
use raft_core::{
    Action, AppendResponse, Config, DurableState, Entry, EntryPayload, Membership, Message, MessageBody,
    NodeId, ProposeError, RaftNode, RestartError, Role, Snapshot, SnapshotMeta, INDEX_MAX, PEER_TERM_MAX,
    TERM_MAX,
};

struct Cluster {
    nodes: BTreeMap<NodeId, RaftNode>,
    durable: BTreeMap<NodeId, DurableState>,
    applied: BTreeMap<NodeId, Vec<Entry>>,
    reads: BTreeMap<NodeId, Vec<(u64, u64)>>,
    failed_reads: BTreeMap<NodeId, Vec<u64>>,
    queue: VecDeque<Message>,
    cut: BTreeSet<(NodeId, NodeId)>,
    sent: Vec<Message>,
    /// Nodes whose driver finds every snapshot bad.
    rejects_snapshots: BTreeSet<NodeId>,
    /// Each node's snapshot bytes (the core keeps only their length).
    files: BTreeMap<NodeId, SnapshotFiles>,
}

fn config(id: NodeId) -> Config {
    let mut c = Config::new(id);
    c.seed = 7;
    c
}

/// The membership of a cluster founded by nodes 1..=n.
fn founders(n: u64) -> Membership {
    Membership::with_voters(1..=n).unwrap()
}

/// What a founding node of an `n`-node cluster has made durable once it
/// bootstrapped: the first configuration, committed.
fn bootstrapped(n: u64) -> DurableState {
    DurableState {
        hard_state: raft_core::HardState { term: 0, vote: None, commit: 1 },
        snapshot: None,
        entries: vec![Entry { index: 1, term: 0, payload: EntryPayload::membership(&founders(n)) }],
    }
}

impl Cluster {
    fn new(n: u64) -> Cluster {
        Cluster::with_config(n, |_| {})
    }

    fn with_config(n: u64, tweak: impl Fn(&mut Config)) -> Cluster {
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let mut c = config(id);
            tweak(&mut c);
            nodes.insert(id, RaftNode::bootstrap(c, founders(n)).unwrap());
        }
        Cluster {
            durable: (1..=n).map(|id| (id, DurableState::default())).collect(),
            applied: (1..=n).map(|id| (id, Vec::new())).collect(),
            reads: BTreeMap::new(),
            failed_reads: BTreeMap::new(),
            nodes,
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            sent: Vec::new(),
            rejects_snapshots: BTreeSet::new(),
            files: BTreeMap::new(),
        }
    }

    /// Node `id` takes a snapshot of `data` at its applied index.
    fn take_snapshot(&mut self, id: NodeId, data: &[u8]) -> u64 {
        let applied = self.node(id).applied_index();
        let len = self.files.entry(id).or_default().keep(applied, data.to_vec());
        self.node(id).snapshot_taken(applied, len).unwrap();
        applied
    }

    /// The bytes of node `id`'s durable snapshot, if it has one.
    fn durable_snapshot_data(&self, id: NodeId) -> Option<Vec<u8>> {
        let index = self.durable[&id].snapshot.as_ref()?.meta.index;
        self.files.get(&id)?.data(index).map(<[u8]>::to_vec)
    }

    fn node(&mut self, id: NodeId) -> &mut RaftNode {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Drains and executes every node's actions until nothing moves.
    fn flush(&mut self) {
        loop {
            let mut moved = false;
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                let actions = self.node(id).take_actions();
                for action in actions {
                    moved = true;
                    match action {
                        Action::Persist(batch) => {
                            let d = self.durable.get_mut(&id).unwrap();
                            if let Some(s) = &batch.snapshot {
                                d.snapshot = Some((**s).clone());
                                d.entries.clear();
                            }
                            if let Some(first) = batch.entries.first() {
                                d.entries.retain(|e| e.index < first.index);
                                d.entries.extend(batch.entries.iter().cloned());
                            }
                            if let Some(hs) = batch.hard_state {
                                d.hard_state = hs;
                            }
                            self.node(id).persisted(batch.id);
                        }
                        Action::Send(m) => {
                            self.sent.push(m.clone());
                            self.queue.push_back(m)
                        }
                        Action::Apply(entries) => {
                            let last = entries.last().unwrap().index;
                            self.applied.get_mut(&id).unwrap().extend(entries);
                            self.node(id).applied(last);
                        }
                        Action::SendSnapshotChunk { message, len } => {
                            let m = self.files.entry(id).or_default().fill(message, len).expect("kept");
                            self.sent.push(m.clone());
                            self.queue.push_back(m)
                        }
                        Action::SaveSnapshotChunk { meta, offset, data } => {
                            self.files.entry(id).or_default().save(meta, offset, &data)
                        }
                        Action::CheckSnapshot(s) if self.rejects_snapshots.contains(&id) => {
                            self.node(id).reject_snapshot(s.meta.index)
                        }
                        Action::CheckSnapshot(s) => {
                            assert!(
                                self.files.entry(id).or_default().complete(&s).is_some(),
                                "{s:?} incomplete"
                            );
                            self.node(id).install_snapshot(s)
                        }
                        Action::ApplySnapshot(s) => {
                            let applied = self.applied.get_mut(&id).unwrap();
                            applied.retain(|e| e.index <= s.meta.index);
                            self.node(id).applied(s.meta.index);
                        }
                        Action::ReadReady { ctx, index } => {
                            self.reads.entry(id).or_default().push((ctx, index))
                        }
                        Action::ReadFailed { ctx, .. } => self.failed_reads.entry(id).or_default().push(ctx),
                        Action::RoleChanged { .. } => {}
                    }
                }
            }
            while let Some(m) = self.queue.pop_front() {
                moved = true;
                if !self.cut.contains(&(m.from, m.to)) {
                    if let Some(node) = self.nodes.get_mut(&m.to) {
                        node.step(m);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn tick_all(&mut self, ticks: u32) {
        for _ in 0..ticks {
            for node in self.nodes.values_mut() {
                node.tick();
            }
            self.flush();
        }
    }

    fn isolate(&mut self, id: NodeId) {
        for &other in self.nodes.keys() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn leaders(&self) -> Vec<NodeId> {
        self.nodes.values().filter(|n| n.is_leader()).map(|n| n.id()).collect()
    }

    fn elect(&mut self, id: NodeId) {
        self.node(id).campaign();
        self.flush();
        assert!(self.node(id).is_leader(), "node {id} did not win the election");
    }

    fn commands(&self, id: NodeId) -> Vec<Vec<u8>> {
        self.applied[&id]
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::Command(d) => Some(d.clone()),
                EntryPayload::Blank | EntryPayload::Membership(_) => None,
            })
            .collect()
    }
}

#[test]
fn a_three_node_cluster_elects_exactly_one_leader_by_timeout() {
    let mut c = Cluster::new(3);
    c.tick_all(60);
    assert_eq!(c.leaders().len(), 1);
    let leader = c.leaders()[0];
    let term = c.node(leader).term();
    for id in 1..=3 {
        assert_eq!(c.node(id).leader(), Some(leader));
        assert_eq!(c.node(id).term(), term);
    }
}

#[test]
fn committed_entries_are_applied_on_every_node_in_order() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for i in 0..5u8 {
        c.node(1).propose(vec![i]).unwrap();
    }
    c.flush();
    c.tick_all(10); // heartbeats carry the commit index to followers
    for id in 1..=3 {
        assert_eq!(c.commands(id), (0..5u8).map(|i| vec![i]).collect::<Vec<_>>(), "node {id}");
    }
}

#[test]
fn proposal_on_a_follower_names_the_leader() {
    let mut c = Cluster::new(3);
    c.elect(2);
    assert_eq!(c.node(1).propose(b"x".to_vec()), Err(ProposeError::NotLeader { leader: Some(2) }));
}

#[test]
fn a_vote_is_granted_only_after_it_is_durable() {
    let mut c = Cluster::new(3);
    c.node(1).campaign();
    // Deliver node 1's pre-votes and the answers, then its real vote request.
    let mut granted_before_persist = false;
    for _ in 0..10 {
        let ids: Vec<NodeId> = (1..=3).collect();
        for id in ids {
            for action in c.node(id).take_actions() {
                // Never report persistence: no real vote may be granted.
                if let Action::Send(m) = action {
                    if let MessageBody::VoteResponse { pre_vote: false, granted: true } = m.body {
                        granted_before_persist = true;
                    }
                    c.queue.push_back(m);
                }
            }
        }
        while let Some(m) = c.queue.pop_front() {
            c.node(m.to).step(m);
        }
    }
    assert!(!granted_before_persist);
    assert!(!c.node(1).is_leader());
}

#[test]
fn leader_counts_its_own_entry_only_once_durable() {
    let mut c = Cluster::new(1);
    c.elect(1);
    let p = c.node(1).propose(b"a".to_vec()).unwrap();
    let actions = c.node(1).take_actions();
    assert!(actions.iter().any(|a| matches!(a, Action::Persist(_))));
    assert!(c.node(1).commit_index() < p.index, "committed before the fsync");
}

#[test]
fn a_candidate_with_a_stale_log_cannot_win() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.node(1).propose(b"a".to_vec()).unwrap();
    c.flush();
    c.heal();
    // Node 3 missed an entry: votes (and pre-votes) are refused (§5.4.1).
    c.node(3).campaign();
    c.flush();
    assert!(!c.node(3).is_leader());
}

#[test]
fn a_partitioned_node_rejoining_does_not_depose_a_healthy_leader() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(1).term();
    c.isolate(3);
    c.tick_all(200); // node 3 times out over and over, PreVote keeps its term
    assert_eq!(c.node(3).term(), term, "PreVote must not raise the term");
    c.heal();
    c.tick_all(50);
    assert_eq!(c.leaders(), vec![1]);
    assert_eq!(c.node(1).term(), term);
}

#[test]
fn without_prevote_a_rejoining_node_forces_a_new_term() {
    // The contrast that shows PreVote is what protects the leader above.
    let mut c = Cluster::with_config(3, |cfg| {
        cfg.pre_vote = false;
        cfg.check_quorum = false;
    });
    c.elect(1);
    let term = c.node(1).term();
    c.isolate(3);
    c.tick_all(200);
    assert!(c.node(3).term() > term);
    c.heal();
    c.tick_all(50);
    assert!(c.node(1).term() > term);
}

#[test]
fn isolated_leader_steps_down_after_election_timeout() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    c.tick_all(2 * 30);
    assert_ne!(c.node(1).role(), Role::Leader, "CheckQuorum must depose the isolated leader");
    let others: Vec<NodeId> = c.leaders();
    assert_eq!(others.len(), 1);
    assert_ne!(others[0], 1);
}

#[test]
fn isolated_leader_commits_nothing_and_its_entries_are_replaced_after_healing() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    c.node(1).propose(b"lost".to_vec()).unwrap();
    c.flush();
    let lost_index = c.node(1).last_index();
    // The majority waits out its leader lease, then elects a new leader.
    c.tick_all(60);
    let new_leader = *c.leaders().iter().find(|&&id| id != 1).expect("the majority elects a leader");
    assert!(c.node(1).commit_index() < lost_index);
    c.node(new_leader).propose(b"kept".to_vec()).unwrap();
    c.flush();
    c.heal();
    c.tick_all(40);
    for id in 1..=3 {
        assert_eq!(c.commands(id), vec![b"kept".to_vec()], "node {id}");
    }
}

#[test]
fn leader_commits_only_entries_of_its_term() {
    // Figure 8: an entry of an earlier term stored on a majority is not
    // committed by counting replicas; only an entry of the leader's own term
    // commits it (and everything before it). No leader lease here, so that
    // node 2 can be elected at once.
    let mut c = Cluster::with_config(3, |cfg| cfg.check_quorum = false);
    c.elect(1);
    c.tick_all(1);
    c.isolate(1);
    c.node(1).propose(b"old".to_vec()).unwrap();
    c.flush();
    let old_index = c.node(1).last_index();
    let old_term = c.node(1).term();
    // Node 1 got the old entry to nodes 2 and 3, but never learned of it.
    let prev_term = c.node(1).term_at(old_index - 1).unwrap();
    let entry = c.node(1).entry(old_index).unwrap().clone();
    for to in [2, 3] {
        c.node(to).step(Message {
            from: 1,
            to,
            term: old_term,
            body: MessageBody::Append {
                prev_log_index: old_index - 1,
                prev_log_term: prev_term,
                entries: vec![entry.clone()],
                leader_commit: old_index - 1,
            },
        });
    }
    c.flush();
    assert_eq!(c.node(3).last_index(), old_index);
    // Node 2 wins term 2; its own blank entry stays non-durable for now.
    c.node(2).campaign();
    let mut held = Vec::new();
    loop {
        let mut moved = true;
        while moved {
            moved = false;
            for id in [2, 3] {
                for a in c.node(id).take_actions() {
                    moved = true;
                    match a {
                        Action::Persist(b) if id == 2 && b.entries.iter().any(|e| e.term > old_term) => {
                            held.push(b.id)
                        }
                        Action::Persist(b) => c.node(id).persisted(b.id),
                        Action::Send(m) => c.queue.push_back(m),
                        _ => {}
                    }
                }
            }
        }
        let Some(m) = c.queue.pop_front() else { break };
        if !c.cut.contains(&(m.from, m.to)) {
            c.node(m.to).step(m);
        }
    }
    assert!(c.node(2).is_leader());
    let follower = c.node(2).status().progress.into_iter().find(|p| p.id == 3).unwrap();
    assert!(follower.match_index > old_index, "node 3 acknowledged the old entry and the blank");
    // Nodes 2 and 3 both hold the old entry durably: a majority. Counting
    // would commit it; the rule does not, because it is of an older term.
    assert!(c.node(2).commit_index() < old_index, "committed an old-term entry by counting");
    // Once the new term's blank is durable on node 2 too, both commit.
    for id in held {
        c.node(2).persisted(id);
    }
    c.flush();
    assert!(c.node(2).commit_index() > old_index);
}

#[test]
fn read_index_waits_for_a_heartbeat_round_of_the_current_term() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node(1).propose(b"a".to_vec()).unwrap();
    c.flush();
    c.isolate(1);
    c.node(1).read_index(42).unwrap();
    c.flush();
    assert!(!c.reads.contains_key(&1), "a read must not be released without a quorum round");
    c.heal();
    c.tick_all(6);
    let reads = c.reads.get(&1).cloned().unwrap_or_default();
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].0, 42);
    assert!(reads[0].1 >= c.node(1).last_index());
}

#[test]
fn read_index_on_a_deposed_leader_fails() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    c.node(1).read_index(7).unwrap();
    c.tick_all(60);
    assert_eq!(c.failed_reads.get(&1).cloned(), Some(vec![7]));
}

#[test]
fn leadership_transfer_makes_the_target_leader() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node(1).propose(b"a".to_vec()).unwrap();
    c.flush();
    c.node(1).transfer_leadership(3).unwrap();
    assert_eq!(c.node(1).propose(b"b".to_vec()), Err(ProposeError::TransferInProgress));
    c.flush();
    assert_eq!(c.leaders(), vec![3]);
}

/// Node 1 leads, node 3 is cut off while ten commands commit, then node 1
/// compacts its log into a snapshot (`state-machine-bytes`) sent in chunks
/// of `chunk_bytes`. Returns the cluster (node 3 still cut off) and the
/// snapshot's index.
fn node_3_behind_a_compacted_leader(chunk_bytes: usize) -> (Cluster, u64) {
    let mut c = Cluster::with_config(3, |cfg| cfg.snapshot_chunk_bytes = chunk_bytes);
    c.elect(1);
    c.isolate(3);
    for i in 0..10u8 {
        c.node(1).propose(vec![i]).unwrap();
    }
    c.flush();
    let applied = c.take_snapshot(1, b"state-machine-bytes");
    (c, applied)
}

#[test]
fn a_follower_behind_the_compacted_log_catches_up_by_snapshot() {
    let (mut c, applied) = node_3_behind_a_compacted_leader(3);
    assert_eq!(c.node(1).first_index(), applied + 1);
    c.heal();
    c.tick_all(20);
    let snapshot_chunks = c.sent.iter().filter(|m| matches!(m.body, MessageBody::Snapshot { .. })).count();
    assert!(snapshot_chunks >= 7, "19 bytes in chunks of 3, got {snapshot_chunks} chunks");
    assert_eq!(c.durable_snapshot_data(3).unwrap(), b"state-machine-bytes".to_vec());
    assert_eq!(c.node(3).commit_index(), c.node(1).commit_index());
    assert_eq!(c.node(3).applied_index(), c.node(1).applied_index());
}

#[test]
fn a_restarted_node_recovers_term_vote_and_log() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node(1).propose(b"a".to_vec()).unwrap();
    c.flush();
    c.tick_all(5);
    let before = c.node(2).hard_state();
    let durable = c.durable[&2].clone();
    let node = RaftNode::restart(config(2), durable.clone()).unwrap();
    assert_eq!(node.term(), before.term);
    assert_eq!(node.hard_state().vote, before.vote);
    assert_eq!(node.last_index(), c.node(2).last_index());
    // The commit index is a durable hint that rides along with other writes:
    // it may lag, never lead.
    assert_eq!(node.commit_index(), durable.hard_state.commit);
    assert!(node.commit_index() <= before.commit);
}

#[test]
fn restart_refuses_a_log_with_a_gap() {
    let e = |index, term| Entry { index, term, payload: EntryPayload::Blank };
    let durable = DurableState { entries: vec![e(1, 1), e(3, 1)], ..Default::default() };
    let err = RaftNode::restart(config(1), durable).unwrap_err();
    assert_eq!(err.to_string(), "durable log has a gap: expected index 2, found 3");
}

#[test]
fn same_seed_gives_the_same_trace() {
    let run = || {
        let mut c = Cluster::new(5);
        c.tick_all(100);
        c.sent.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

/// A small number mostly, sometimes one at or near the top of `u64`: the
/// core must refuse those, never overflow on them.
fn v(small: u64) -> BoxedStrategy<u64> {
    prop_oneof![
        8 => 0..small,
        1 => (TERM_MAX - 1)..=(TERM_MAX + 1),
        1 => (u64::MAX - 2)..=u64::MAX,
    ]
    .boxed()
}

fn arbitrary_body() -> impl Strategy<Value = MessageBody> {
    let entry = (v(6), v(8), prop::option::of(prop::collection::vec(any::<u8>(), 0..4))).prop_map(
        |(term, index, data)| Entry {
            term,
            index,
            payload: data.map_or(EntryPayload::Blank, EntryPayload::Command),
        },
    );
    prop_oneof![
        (any::<bool>(), v(10), v(6), any::<bool>()).prop_map(
            |(pre_vote, last_log_index, last_log_term, transfer)| {
                MessageBody::VoteRequest { pre_vote, last_log_index, last_log_term, transfer }
            }
        ),
        (any::<bool>(), any::<bool>())
            .prop_map(|(pre_vote, granted)| MessageBody::VoteResponse { pre_vote, granted }),
        (v(10), v(6), prop::collection::vec(entry, 0..4), v(12)).prop_map(
            |(prev_log_index, prev_log_term, entries, leader_commit)| {
                MessageBody::Append { prev_log_index, prev_log_term, entries, leader_commit }
            }
        ),
        (v(12)).prop_map(|match_index| MessageBody::AppendResponse(AppendResponse::Accepted { match_index })),
        (v(12), prop::option::of(v(6)), v(12)).prop_map(|(rejected_index, conflict_term, conflict_index)| {
            MessageBody::AppendResponse(AppendResponse::Rejected {
                rejected_index,
                conflict_term,
                conflict_index,
            })
        }),
        (v(12), v(4)).prop_map(|(commit, read_round)| MessageBody::Heartbeat { commit, read_round }),
        (v(4)).prop_map(|read_round| MessageBody::HeartbeatResponse { read_round }),
        (v(12), v(6), v(8), prop::collection::vec(any::<u8>(), 0..6), any::<bool>()).prop_map(
            |(index, term, offset, data, done)| {
                MessageBody::Snapshot {
                    meta: SnapshotMeta {
                        index,
                        term,
                        membership: raft_core::Membership::with_voters([1, 2, 3]).unwrap().into(),
                    },
                    offset,
                    data,
                    done,
                }
            }
        ),
        (v(12), v(10)).prop_map(|(index, next_offset)| MessageBody::SnapshotResponse { index, next_offset }),
        Just(MessageBody::TimeoutNow),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// No input from the network makes the core panic or break its invariants.
    #[test]
    fn arbitrary_messages_never_panic_the_core(
        msgs in prop::collection::vec((0u64..5, 0u64..5, 0u64..7, arbitrary_body()), 1..40),
        leader in any::<bool>(),
    ) {
        let mut c = Cluster::new(3);
        if leader {
            c.elect(1);
            c.node(1).propose(b"a".to_vec()).unwrap();
            c.flush();
            c.take_snapshot(1, &[1, 2, 3]);
        }
        for (from, to, term, body) in msgs {
            c.node(1).step(Message { from, to, term, body });
            let actions = c.node(1).take_actions();
            for a in actions {
                match a {
                    Action::Persist(b) => c.node(1).persisted(b.id),
                    Action::Apply(e) => { let last = e.last().unwrap().index; c.node(1).applied(last) }
                    Action::ApplySnapshot(s) => c.node(1).applied(s.meta.index),
                    Action::CheckSnapshot(s) if s.data_bytes % 2 == 0 => c.node(1).install_snapshot(s),
                    Action::CheckSnapshot(s) => c.node(1).reject_snapshot(s.meta.index),
                    _ => {}
                }
            }
            c.node(1).tick();
            prop_assert!(c.node(1).check_invariants().is_ok(), "{:?}", c.node(1).check_invariants());
        }
    }
}

#[test]
fn a_snapshot_restart_applies_only_entries_after_it() {
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: 5,
            term: 2,
            membership: raft_core::Membership::with_voters([1, 2, 3]).unwrap().into(),
        },
        data_bytes: 1,
    };
    let durable = DurableState {
        hard_state: raft_core::HardState { term: 2, vote: None, commit: 6 },
        snapshot: Some(snapshot),
        entries: vec![Entry { index: 6, term: 2, payload: EntryPayload::Command(b"x".to_vec()) }],
    };
    let mut node = RaftNode::restart(config(1), durable).unwrap();
    let applies: Vec<Vec<Entry>> = node
        .take_actions()
        .into_iter()
        .filter_map(|a| if let Action::Apply(e) = a { Some(e) } else { None })
        .collect();
    assert_eq!(applies.len(), 1);
    assert_eq!(applies[0].iter().map(|e| e.index).collect::<Vec<_>>(), vec![6]);
}

/// Figure 2, AppendEntries step 5: `commitIndex = min(leaderCommit, index of
/// last new entry)`. A follower whose log goes on past what the leader sent
/// (stale entries of an older term) must not commit those.
#[test]
fn a_follower_commits_no_further_than_the_entries_the_leader_sent() {
    let e = |index, term| Entry { index, term, payload: EntryPayload::Command(vec![index as u8]) };
    // Entries 4 and 5 are from term 2, a leader whose entries were later replaced.
    let durable = DurableState {
        hard_state: raft_core::HardState { term: 3, vote: None, commit: 2 },
        snapshot: None,
        entries: vec![e(1, 1), e(2, 1), e(3, 1), e(4, 2), e(5, 2)],
    };
    let mut follower = RaftNode::restart(config(2), durable).unwrap();
    let _ = follower.take_actions();
    // The term-3 leader has committed up to 5 (its own 4 and 5), but this
    // append carries only entry 3.
    follower.step(Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::Append {
            prev_log_index: 2,
            prev_log_term: 1,
            entries: vec![e(3, 1)],
            leader_commit: 5,
        },
    });
    let applied: Vec<u64> = follower
        .take_actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Apply(entries) => Some(entries.into_iter().map(|e| e.index).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(follower.commit_index(), 3, "commit stops at the last entry the leader vouched for");
    assert!(applied.iter().all(|&i| i <= 3), "stale entries were applied: {applied:?}");
}

#[test]
fn a_transfer_vote_request_for_a_far_term_does_not_move_a_follower_in_its_lease() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(2).term();
    for far in [term + 2, PEER_TERM_MAX, TERM_MAX] {
        let body = MessageBody::VoteRequest {
            pre_vote: false,
            last_log_index: 99,
            last_log_term: 99,
            transfer: true,
        };
        c.node(2).step(Message { from: 3, to: 2, term: far, body });
        assert_eq!(c.node(2).term(), term, "a transfer vote for term {far} moved node 2 from term {term}");
        assert_eq!(c.node(2).leader(), Some(1));
    }
    let counters = c.node(2).status().counters;
    assert_eq!((counters.dropped_transfer, counters.dropped_out_of_range), (2, 1), "{counters:?}");
    // The real thing still works: a transfer is the term right after the leader's.
    c.node(1).transfer_leadership(2).unwrap();
    c.flush();
    assert_eq!(c.leaders(), vec![2]);
    assert_eq!(c.node(2).term(), term + 1);
}

#[test]
fn timeout_now_is_honoured_only_from_the_leader_of_the_current_term() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(2).term();
    // From a follower of this term, from anyone with a newer term (then the
    // recipient knows no leader of that term yet): refused, no election.
    for (from, msg_term) in [(3, term), (3, term + 1), (1, term + 1)] {
        c.node(2).step(Message { from, to: 2, term: msg_term, body: MessageBody::TimeoutNow });
        let status = c.node(2).status();
        assert_eq!(status.role, Role::Follower, "TimeoutNow from {from} in term {msg_term}");
        assert_eq!(status.counters.elections, 0, "TimeoutNow from {from} in term {msg_term}");
    }
    assert_eq!(c.node(2).status().counters.dropped_transfer, 3);
    c.queue.clear();
    c.tick_all(60);
    let leader = c.leaders()[0];
    let follower = if leader == 2 { 3 } else { 2 };
    let (term, elections) = (c.node(follower).term(), c.node(follower).status().counters.elections);
    c.node(follower).step(Message { from: leader, to: follower, term, body: MessageBody::TimeoutNow });
    assert_eq!(
        c.node(follower).status().counters.elections,
        elections + 1,
        "from the leader of term {term}, it campaigns"
    );
}

#[test]
fn messages_with_terms_or_indexes_at_the_top_of_u64_are_refused_and_the_cluster_goes_on() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(1).term();
    let meta = SnapshotMeta {
        index: u64::MAX,
        term,
        membership: raft_core::Membership::with_voters([1, 2, 3]).unwrap().into(),
    };
    let bodies = [
        MessageBody::Snapshot { meta, offset: 0, data: vec![1], done: true },
        MessageBody::Append {
            prev_log_index: u64::MAX,
            prev_log_term: term,
            entries: vec![],
            leader_commit: u64::MAX,
        },
        MessageBody::Heartbeat { commit: u64::MAX, read_round: 0 },
    ];
    for body in bodies {
        c.node(2).step(Message { from: 1, to: 2, term, body });
    }
    c.node(2).step(Message { from: 3, to: 2, term: u64::MAX, body: MessageBody::TimeoutNow });
    assert_eq!(c.node(2).status().counters.dropped_out_of_range, 4);
    c.node(1).propose(b"after".to_vec()).unwrap();
    c.tick_all(10);
    assert_eq!(c.commands(2), vec![b"after".to_vec()]);
}

#[test]
fn a_cluster_near_the_largest_term_still_elects_and_commits() {
    let start = PEER_TERM_MAX - 10;
    let mut c = Cluster::new(3);
    for id in 1..=3 {
        let mut durable = bootstrapped(3);
        durable.hard_state.term = start;
        c.durable.insert(id, durable.clone());
        c.nodes.insert(id, RaftNode::restart(config(id), durable).unwrap());
    }
    c.elect(1);
    c.isolate(1);
    c.tick_all(60);
    let leaders = c.leaders();
    assert_eq!(leaders.iter().filter(|&&l| l != 1).count(), 1, "no new leader near TERM_MAX: {leaders:?}");
    let leader = *leaders.iter().find(|&&l| l != 1).unwrap();
    assert!(c.node(leader).term() > start + 1);
    c.node(leader).propose(b"x".to_vec()).unwrap();
    c.flush();
    assert_eq!(c.commands(leader), vec![b"x".to_vec()]);
}

#[test]
fn restart_refuses_durable_terms_and_indexes_beyond_the_largest_accepted() {
    let snapshot = |index| Snapshot {
        meta: SnapshotMeta {
            index,
            term: 1,
            membership: raft_core::Membership::with_voters([1, 2, 3]).unwrap().into(),
        },
        data_bytes: 0,
    };
    let cases = [
        (DurableState { snapshot: Some(snapshot(u64::MAX)), ..Default::default() }, "snapshot index"),
        (
            DurableState {
                hard_state: raft_core::HardState { term: u64::MAX, ..Default::default() },
                ..Default::default()
            },
            "hard state term",
        ),
        (
            DurableState {
                entries: vec![Entry { index: INDEX_MAX + 1, term: 1, payload: EntryPayload::Blank }],
                ..Default::default()
            },
            "last log index",
        ),
    ];
    for (durable, what) in cases {
        let err = RaftNode::restart(config(1), durable).unwrap_err();
        assert!(matches!(err, RestartError::OutOfRange { what: w, .. } if w == what), "{err}");
        assert!(err.to_string().contains(what), "{err}");
    }
}

#[test]
fn a_snapshot_the_driver_finds_bad_is_neither_persisted_nor_applied_and_is_sent_again() {
    let (mut c, _) = node_3_behind_a_compacted_leader(4);
    let before = c.node(3).last_index();
    c.rejects_snapshots.insert(3);
    c.heal();
    c.tick_all(30);
    let rejected = c.node(3).status().counters.snapshots_rejected;
    assert!(
        (2..=10).contains(&rejected),
        "{rejected} snapshots rejected in 30 ticks: sent again at heartbeat pace"
    );
    assert!(c.durable[&3].snapshot.is_none(), "a rejected snapshot was persisted");
    assert_eq!(c.node(3).last_index(), before, "a rejected snapshot changed the log");
    assert_eq!(c.node(3).snapshot_meta().index, 0);
    // The leader starts over; once the driver is happy, it installs.
    c.rejects_snapshots.clear();
    c.tick_all(20);
    assert!(c.node(3).status().counters.snapshots_rejected >= rejected);
    assert_eq!(c.durable_snapshot_data(3).unwrap(), b"state-machine-bytes".to_vec());
    assert_eq!(c.node(3).applied_index(), c.node(1).applied_index());
}

#[test]
fn chunks_of_a_snapshot_from_an_old_term_are_dropped_when_the_term_changes() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(2).term();
    let meta = SnapshotMeta {
        index: 50,
        term,
        membership: raft_core::Membership::with_voters([1, 2, 3]).unwrap().into(),
    };
    let chunk =
        |offset: u64| MessageBody::Snapshot { meta: meta.clone(), offset, data: vec![0; 10], done: false };
    c.node(2).step(Message { from: 1, to: 2, term, body: chunk(0) });
    c.node(2).step(Message { from: 1, to: 2, term, body: chunk(10) });
    // A new leader in a new term: the half-received snapshot is forgotten,
    // so a continuation of it is not taken in.
    c.node(2).step(Message {
        from: 3,
        to: 2,
        term: term + 1,
        body: MessageBody::Heartbeat { commit: 0, read_round: 0 },
    });
    let _ = c.node(2).take_actions();
    let meta3 = SnapshotMeta { term: term + 1, ..meta.clone() };
    c.node(2).step(Message {
        from: 3,
        to: 2,
        term: term + 1,
        body: MessageBody::Snapshot { meta: meta3, offset: 20, data: vec![0; 10], done: true },
    });
    let actions = c.node(2).take_actions();
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::Send(Message { body: MessageBody::SnapshotResponse { next_offset: 0, .. }, .. })
        )),
        "the follower should ask for the snapshot from offset 0: {actions:?}"
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::CheckSnapshot(_))));
}

#[test]
fn a_leader_refuses_proposals_past_its_uncommitted_byte_bound_and_takes_them_once_committed() {
    let mut c = Cluster::with_config(3, |cfg| cfg.max_uncommitted_bytes = 1000);
    c.elect(1);
    c.isolate(1);
    // Nothing commits while cut off: 300-byte commands fill the bound.
    let mut taken = 0;
    while c.node(1).propose(vec![7; 300]).is_ok() {
        taken += 1;
        assert!(taken < 10, "the byte bound is not enforced");
    }
    assert_eq!(taken, 3, "3 commands of 324 bytes fit in 1000, the 4th does not");
    assert_eq!(c.node(1).propose(vec![7; 300]), Err(ProposeError::Backpressure));
    // A single command above the bound still gets in once the log is committed.
    c.heal();
    c.tick_all(10);
    assert_eq!(c.leaders(), vec![1]);
    c.node(1).propose(vec![8; 5000]).unwrap();
    c.tick_all(10);
    assert_eq!(c.commands(2).len(), 4);
    for _ in 0..3 {
        c.node(1).propose(vec![9; 300]).unwrap();
    }
}

/// A follower cut off while the leader's window of bytes in flight to it
/// filled (and whose appends were lost) is probed again at the next
/// heartbeat answer, not left paused forever; here it then needs a snapshot.
#[test]
fn a_follower_whose_byte_window_filled_while_away_catches_up_when_it_answers_again() {
    let mut c = Cluster::with_config(3, |cfg| cfg.max_inflight_bytes = 1000);
    c.elect(1);
    c.node(1).propose(b"warm".to_vec()).unwrap();
    c.flush();
    c.isolate(3);
    for i in 0..10u8 {
        c.node(1).propose(vec![i; 300]).unwrap();
        c.flush();
    }
    c.take_snapshot(1, b"state");
    c.heal();
    c.tick_all(40);
    assert_eq!(c.node(3).applied_index(), c.node(1).applied_index(), "node 3 stayed behind");
    assert_eq!(c.durable_snapshot_data(3), Some(b"state".to_vec()));
}
