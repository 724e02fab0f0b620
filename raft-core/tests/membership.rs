//! Membership change in the core: simple and joint changes, learners, a
//! node that waits to be added, and the pitfalls the systems we compare
//! with shipped and later fixed, each pinned by a test named after it.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use raft_core::{
    Action, ChangeOp, Config, DurableState, EntryPayload, Membership, MembershipChange, Message, MessageBody,
    NodeId, ProposeError, RaftNode,
};

/// An in-memory cluster: persist at once, deliver in order, cut links.
struct Cluster {
    nodes: BTreeMap<NodeId, RaftNode>,
    durable: BTreeMap<NodeId, DurableState>,
    applied: BTreeMap<NodeId, Vec<Vec<u8>>>,
    queue: VecDeque<Message>,
    cut: BTreeSet<(NodeId, NodeId)>,
    sent: Vec<Message>,
    /// Each node's snapshot bytes (the core keeps only their length).
    files: BTreeMap<NodeId, common::SnapshotFiles>,
}

fn config(id: NodeId) -> Config {
    let mut c = Config::new(id);
    c.seed = 11;
    c
}

/// The first membership of a cluster founded by `voters`.
fn founders(voters: &[NodeId]) -> Membership {
    Membership::with_voters(voters.iter().copied()).unwrap()
}

impl Cluster {
    /// `n` voters 1..=n.
    fn new(n: u64) -> Cluster {
        let voters: Vec<NodeId> = (1..=n).collect();
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            durable: BTreeMap::new(),
            applied: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            sent: Vec::new(),
            files: BTreeMap::new(),
        };
        for &id in &voters {
            c.nodes.insert(id, RaftNode::bootstrap(config(id), founders(&voters)).unwrap());
            c.durable.insert(id, DurableState::default());
            c.applied.insert(id, Vec::new());
        }
        c
    }

    /// Starts a node with no configuration: one waiting to be added.
    fn add_empty_node(&mut self, id: NodeId) {
        self.nodes.insert(id, RaftNode::new(config(id)).unwrap());
        self.durable.insert(id, DurableState::default());
        self.applied.insert(id, Vec::new());
    }

    fn node(&mut self, id: NodeId) -> &mut RaftNode {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Node `id` takes a snapshot of `data` at its applied index.
    fn take_snapshot(&mut self, id: NodeId, data: &[u8]) {
        let applied = self.node(id).applied_index();
        let len = self.files.entry(id).or_default().keep(applied, data.to_vec());
        self.node(id).snapshot_taken(applied, len).unwrap();
    }

    fn flush(&mut self) {
        loop {
            let mut moved = false;
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                for action in self.node(id).take_actions() {
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
                            self.queue.push_back(m);
                        }
                        Action::Apply(entries) => {
                            let last = entries.last().unwrap().index;
                            for e in entries {
                                if let EntryPayload::Command(d) = e.payload {
                                    self.applied.get_mut(&id).unwrap().push(d);
                                }
                            }
                            self.node(id).applied(last);
                        }
                        Action::SendSnapshotChunk { message, len } => {
                            let m = self.files.entry(id).or_default().fill(message, len).expect("kept");
                            self.sent.push(m.clone());
                            self.queue.push_back(m);
                        }
                        Action::SaveSnapshotChunk { meta, offset, data } => {
                            self.files.entry(id).or_default().save(meta, offset, &data)
                        }
                        Action::CheckSnapshot(s) => {
                            assert!(
                                self.files.entry(id).or_default().complete(&s).is_some(),
                                "{s:?} incomplete"
                            );
                            self.node(id).install_snapshot(s)
                        }
                        Action::ApplySnapshot(s) => self.node(id).applied(s.meta.index),
                        _ => {}
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
        let others: Vec<NodeId> = self.nodes.keys().copied().filter(|&o| o != id).collect();
        for other in others {
            self.cut.insert((id, other));
            self.cut.insert((other, id));
        }
    }

    fn leaders(&self) -> Vec<NodeId> {
        self.nodes.values().filter(|n| n.is_leader()).map(|n| n.id()).collect()
    }

    fn elect(&mut self, id: NodeId) {
        self.node(id).campaign();
        self.flush();
        assert!(self.node(id).is_leader(), "node {id} did not win the election");
    }

    /// Proposes a change on `leader` and replicates it (and the automatic
    /// leaving of a joint configuration).
    fn change(&mut self, leader: NodeId, ops: Vec<ChangeOp>) -> Result<(), ProposeError> {
        self.node(leader).propose_membership(&MembershipChange { ops })?;
        self.settle();
        Ok(())
    }

    /// Delivers everything, then a heartbeat round, so that followers learn
    /// the latest commit index.
    fn settle(&mut self) {
        self.flush();
        self.tick_all(6);
    }

    fn voters(&mut self, id: NodeId) -> Vec<NodeId> {
        self.node(id).membership().0.voters().incoming.iter().collect()
    }

    /// Restarts `id` from what it made durable.
    fn restart(&mut self, id: NodeId) {
        let durable = self.durable[&id].clone();
        self.nodes.insert(id, RaftNode::restart(config(id), durable).unwrap());
        self.applied.insert(id, Vec::new());
    }
}

fn add_voter(id: NodeId) -> ChangeOp {
    ChangeOp::AddVoter { id, context: format!("10.0.0.{id}:7000").into_bytes() }
}

fn add_learner(id: NodeId) -> ChangeOp {
    ChangeOp::AddLearner { id, context: format!("10.0.0.{id}:7000").into_bytes() }
}

#[test]
fn a_learner_receives_the_log_never_votes_and_is_promoted() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.add_empty_node(4);
    c.change(1, vec![add_learner(4)]).unwrap();
    c.node(1).propose(b"x".to_vec()).unwrap();
    c.settle();
    assert_eq!(c.applied[&4], vec![b"x".to_vec()], "the learner got the log");
    assert!(c.node(4).membership().0.is_learner(4));
    assert_eq!(
        c.node(4).membership().0.context(4),
        Some(&b"10.0.0.4:7000"[..]),
        "contexts travel in the log"
    );
    // A learner never campaigns, however long it hears nothing.
    c.isolate(4);
    c.tick_all(200);
    assert!(!c.sent.iter().any(|m| m.from == 4 && matches!(m.body, MessageBody::VoteRequest { .. })));
    c.cut.clear();
    c.flush();
    c.change(1, vec![ChangeOp::PromoteLearner { id: 4 }]).unwrap();
    assert_eq!(c.voters(4), vec![1, 2, 3, 4]);
    // Four voters: three make a majority, so two down stop commits.
    c.isolate(3);
    c.isolate(4);
    c.node(1).propose(b"y".to_vec()).unwrap();
    c.flush();
    assert!(!c.applied[&1].contains(&b"y".to_vec()), "committed without a majority of the four voters");
}

#[test]
fn a_node_with_no_configuration_never_campaigns_and_answers_a_leader() {
    let mut c = Cluster::new(1);
    c.elect(1);
    c.add_empty_node(2);
    c.tick_all(200);
    assert!(!c.sent.iter().any(|m| m.from == 2), "a node waiting to be added spoke first");
    c.change(1, vec![add_voter(2)]).unwrap();
    c.node(1).propose(b"x".to_vec()).unwrap();
    c.settle();
    assert_eq!(c.applied[&2], vec![b"x".to_vec()]);
    assert_eq!(c.voters(2), vec![1, 2]);
}

/// Pitfall 1 (Ongaro, raft-dev 2015, the single-server change bug).
#[test]
fn a_new_leader_proposes_no_change_before_committing_an_entry_of_its_term() {
    let mut c = Cluster::new(3);
    c.node(1).campaign();
    // Run the election by hand, holding back every append answer.
    for _ in 0..20 {
        let ids: Vec<NodeId> = c.nodes.keys().copied().collect();
        for id in ids {
            for action in c.node(id).take_actions() {
                match action {
                    Action::Persist(b) => c.node(id).persisted(b.id),
                    Action::Send(m) if !matches!(m.body, MessageBody::AppendResponse(_)) => {
                        c.queue.push_back(m)
                    }
                    _ => {}
                }
            }
        }
        while let Some(m) = c.queue.pop_front() {
            let to = m.to;
            c.node(to).step(m);
        }
    }
    assert!(c.node(1).is_leader());
    let refused = c.node(1).propose_membership(&MembershipChange { ops: vec![add_voter(4)] });
    assert_eq!(refused, Err(ProposeError::NoCommitInTerm));
    // Once the blank commits, the same change goes through.
    c.settle();
    c.change(1, vec![add_learner(4)]).unwrap();
}

/// Pitfall 2.
#[test]
fn at_most_one_membership_change_is_pending() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(2);
    c.isolate(3);
    c.node(1).propose_membership(&MembershipChange { ops: vec![add_learner(4)] }).unwrap();
    let second = c.node(1).propose_membership(&MembershipChange { ops: vec![add_learner(5)] });
    assert!(matches!(second, Err(ProposeError::MembershipChangePending { .. })), "{second:?}");
    c.cut.clear();
    c.flush();
    c.change(1, vec![add_learner(5)]).unwrap();
    let m = c.node(1).membership().0.clone();
    assert!(m.is_learner(4) && m.is_learner(5));
}

/// Pitfall 3 (etcd #11038, raft-rs #584).
#[test]
fn a_removed_leader_keeps_leading_until_the_removal_commits_then_hands_over() {
    let mut c = Cluster::new(3);
    c.elect(1);
    // Proposed, not yet committed: node 1 still leads.
    c.isolate(2);
    c.isolate(3);
    c.node(1).propose_membership(&MembershipChange { ops: vec![ChangeOp::Remove { id: 1 }] }).unwrap();
    c.flush();
    assert_eq!(c.leaders(), vec![1], "the removed leader stopped leading before the removal committed");
    c.cut.clear();
    // Committed (at the next heartbeat): it hands over, and a remaining
    // voter leads at once, with fewer ticks than any election timeout.
    c.tick_all(6);
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    assert_ne!(leaders[0], 1, "the removed node still leads");
    let leader = leaders[0];
    assert_eq!(c.voters(leader), vec![2, 3]);
    c.node(leader).propose(b"after".to_vec()).unwrap();
    c.flush();
    assert!(c.applied[&leader].contains(&b"after".to_vec()));
}

/// Pitfall 4 (hashicorp/raft #524).
#[test]
fn a_removed_node_cannot_disrupt_the_cluster() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.change(1, vec![ChangeOp::Remove { id: 3 }]).unwrap();
    c.cut.clear();
    let term = c.node(1).term();
    // Node 3 never learned it was removed: it campaigns, and is ignored.
    for _ in 0..20 {
        c.node(3).campaign();
        c.tick_all(10);
    }
    assert_eq!(c.leaders(), vec![1], "the removed node deposed the leader");
    assert_eq!(c.node(1).term(), term, "the removed node's term spread");
    assert_eq!(c.node(2).term(), term, "the removed node's term spread");
}

/// Pitfall 5 (etcd `campaign_learner_must_vote`).
#[test]
fn a_node_promoted_but_not_yet_told_still_votes_when_asked() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.add_empty_node(4);
    c.change(1, vec![add_learner(4)]).unwrap();
    // 4 is promoted on 1, 2, 3 but hears nothing of it.
    c.isolate(4);
    c.change(1, vec![ChangeOp::PromoteLearner { id: 4 }]).unwrap();
    assert!(c.node(4).membership().0.is_learner(4));
    // Leader 1 goes down: of voters {1, 2, 3, 4}, a new leader needs three
    // votes, so 4's (which still thinks itself a learner) among them.
    c.cut.clear();
    c.isolate(1);
    c.tick_all(150);
    let leaders: Vec<NodeId> = c.leaders().into_iter().filter(|&l| l != 1).collect();
    assert_eq!(leaders.len(), 1, "no leader without node 4's vote: {leaders:?}");
    assert!(c
        .sent
        .iter()
        .any(|m| m.from == 4 && matches!(m.body, MessageBody::VoteResponse { granted: true, .. })));
}

/// Pitfall 6: two voters to one, and one voter to two.
#[test]
fn removing_one_of_two_voters_and_adding_to_a_one_voter_cluster_work() {
    let mut c = Cluster::new(1);
    c.elect(1);
    c.add_empty_node(2);
    c.change(1, vec![add_voter(2)]).unwrap();
    assert_eq!(c.voters(1), vec![1, 2]);
    c.node(1).propose(b"two".to_vec()).unwrap();
    c.settle();
    assert_eq!(c.applied[&2], vec![b"two".to_vec()]);
    c.change(1, vec![ChangeOp::Remove { id: 2 }]).unwrap();
    assert_eq!(c.voters(1), vec![1]);
    c.isolate(2);
    c.node(1).propose(b"one".to_vec()).unwrap();
    c.flush();
    assert!(c.applied[&1].contains(&b"one".to_vec()), "the single voter left cannot commit");
}

/// Pitfall 7: a joint configuration is always left, even when its leader
/// crashes right after the joint entry commits.
#[test]
fn a_joint_configuration_is_left_even_if_its_leader_crashes_after_it_commits() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for id in [4, 5] {
        c.add_empty_node(id);
    }
    c.change(1, vec![add_learner(4), add_learner(5)]).unwrap();
    // Joint: {1,2,3} -> {3,4,5}. Deliver the joint entry and its commit,
    // then cut the leader off before its leave entry reaches anyone.
    let joint = c
        .node(1)
        .propose_membership(&MembershipChange {
            ops: vec![
                ChangeOp::PromoteLearner { id: 4 },
                ChangeOp::PromoteLearner { id: 5 },
                ChangeOp::Remove { id: 1 },
                ChangeOp::Remove { id: 2 },
            ],
        })
        .unwrap();
    assert!(c.node(1).membership().0.is_joint());
    // Rounds of actions and deliveries until the joint entry is committed
    // on 1: the next round would carry its leave entry; it never goes out.
    for _ in 0..50 {
        if c.node(1).commit_index() >= joint.index {
            break;
        }
        c.flush_once();
    }
    assert!(c.node(1).commit_index() >= joint.index, "the joint entry did not commit");
    c.isolate(1);
    c.tick_all(300);
    let leaders: Vec<NodeId> = c.leaders().into_iter().filter(|&l| l != 1).collect();
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    let leader = leaders[0];
    let (m, _) = c.node(leader).membership();
    assert!(!m.is_joint(), "the new leader did not leave the joint configuration: {m:?}");
    assert_eq!(m.voters().incoming.iter().collect::<Vec<_>>(), vec![3, 4, 5]);
}

/// Pitfall 8: membership in a snapshot installed on a follower replaces the
/// follower's.
#[test]
fn membership_in_an_installed_snapshot_replaces_the_followers() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.add_empty_node(4);
    c.change(1, vec![add_learner(4)]).unwrap();
    c.node(1).propose(b"x".to_vec()).unwrap();
    c.flush();
    c.take_snapshot(1, b"state");
    c.take_snapshot(2, b"state");
    assert!(!c.node(3).membership().0.is_learner(4));
    c.cut.clear();
    c.tick_all(20);
    assert!(c.node(3).membership().0.is_learner(4), "the snapshot's membership did not replace node 3's");
    // And it survives a restart from the snapshot alone.
    c.restart(3);
    assert!(c.node(3).membership().0.is_learner(4));
}

#[test]
fn membership_on_restart_comes_from_the_log_and_a_truncated_change_is_undone() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.add_empty_node(4);
    c.change(1, vec![add_learner(4)]).unwrap();
    c.restart(2);
    assert!(c.node(2).membership().0.is_learner(4), "the configuration entry in the log is not in force");
    // A change appended on an isolated leader and never committed is
    // replaced by the next leader's log: the old leader reverts.
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    c.node(1).propose_membership(&MembershipChange { ops: vec![add_learner(4)] }).unwrap();
    c.flush();
    assert!(c.node(1).membership().0.is_learner(4), "in force once in the log");
    c.tick_all(100);
    let leader = *c.leaders().iter().find(|&&l| l != 1).unwrap();
    c.node(leader).propose(b"y".to_vec()).unwrap();
    c.flush();
    c.cut.clear();
    c.tick_all(20);
    assert_eq!(c.leaders(), vec![leader]);
    for id in [1, 2, 3] {
        assert!(!c.node(id).membership().0.is_learner(4), "node {id} kept a change that was never committed");
    }
}

impl Cluster {
    /// One round of actions and deliveries.
    fn flush_once(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            for action in self.node(id).take_actions() {
                match action {
                    Action::Persist(b) => self.node(id).persisted(b.id),
                    Action::Send(m) => self.queue.push_back(m),
                    Action::Apply(e) => {
                        let last = e.last().unwrap().index;
                        self.node(id).applied(last);
                    }
                    _ => {}
                }
            }
        }
        let pending: Vec<Message> = self.queue.drain(..).collect();
        for m in pending {
            if let Some(node) = self.nodes.get_mut(&m.to) {
                node.step(m);
            }
        }
    }
}

/// Found in review: a leader removed by an uncommitted entry has no progress
/// of its own; a read on it panicked ("a leader is a member"). And once its
/// removal is committed it takes no further change.
#[test]
fn a_leader_being_removed_serves_reads_and_takes_no_change_once_removed() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(2);
    c.isolate(3);
    c.node(1).propose_membership(&MembershipChange { ops: vec![ChangeOp::Remove { id: 1 }] }).unwrap();
    c.flush();
    c.node(1).read_index(7).unwrap();
    c.flush();
    c.cut.clear();
    c.tick_all(6);
    assert_ne!(c.leaders(), vec![1]);
    let refused = c.node(1).propose_membership(&MembershipChange { ops: vec![add_learner(9)] });
    assert!(matches!(refused, Err(ProposeError::NotLeader { .. })), "{refused:?}");
}

/// Found in review: the leader forgot a removed follower the moment it
/// appended the change, so the follower never received its removal and
/// campaigned for ever; without PreVote and CheckQuorum it deposed the
/// leader again and again.
#[test]
fn a_removed_follower_receives_its_removal_and_stops_campaigning() {
    let mut c = Cluster::new(3);
    for id in 1..=3 {
        let mut config = config(id);
        config.pre_vote = false;
        config.check_quorum = false;
        c.nodes.insert(id, RaftNode::bootstrap(config, founders(&[1, 2, 3])).unwrap());
    }
    c.elect(1);
    c.change(1, vec![ChangeOp::Remove { id: 3 }]).unwrap();
    assert!(!c.node(3).membership().0.is_member(3), "node 3 never received the entry that removed it");
    let term = c.node(1).term();
    c.tick_all(500);
    assert_eq!(c.leaders(), vec![1]);
    assert_eq!(c.node(1).term(), term, "the removed node deposed the leader");
    assert!(c.node(1).status().progress.iter().all(|p| p.id != 3), "the leader still replicates to node 3");
}

/// The first membership is given once, at bootstrap, and lives in the log
/// from then on: the first persist batch holds it, and a restart from what
/// was persisted needs nothing else.
#[test]
fn a_bootstrapped_node_persists_its_first_membership_and_restarts_from_it() {
    let mut node = RaftNode::bootstrap(config(2), founders(&[1, 2, 3])).unwrap();
    assert_eq!(node.membership().0.voters().incoming.iter().collect::<Vec<_>>(), vec![1, 2, 3]);
    let mut durable = DurableState::default();
    for action in node.take_actions() {
        if let Action::Persist(batch) = action {
            durable.entries.extend(batch.entries.iter().cloned());
            durable.hard_state = batch.hard_state.unwrap_or(durable.hard_state);
            node.persisted(batch.id);
        }
    }
    assert_eq!(durable.entries.len(), 1, "the first batch holds the configuration entry");
    assert!(matches!(durable.entries[0].payload, EntryPayload::Membership(_)));
    assert_eq!((durable.entries[0].index, durable.entries[0].term), (1, 0));
    let restarted = RaftNode::restart(config(2), durable).unwrap();
    assert_eq!(restarted.membership().0.voters().incoming.iter().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(restarted.membership().1, 1);
}

#[test]
fn bootstrap_refuses_a_membership_without_this_node_as_a_voter_and_one_without_voters() {
    let err = RaftNode::bootstrap(config(4), founders(&[1, 2, 3])).unwrap_err();
    assert_eq!(err, raft_core::ConfigError::NotAVoter(4));
    let err = RaftNode::bootstrap(config(1), Membership::default()).unwrap_err();
    assert!(matches!(err, raft_core::ConfigError::Membership(_)), "{err}");
    assert!(err.to_string().contains("no voters"), "{err}");
}

/// Joint consensus (dissertation §4.3): while joint, an entry commits only
/// with a majority of the outgoing voters *and* of the incoming ones. Here
/// {1, 2, 3} moves to {1, 4, 5} with 2 and 3 cut off: the incoming half
/// alone would have a majority (1, 4, 5), and must not be enough.
#[test]
fn a_joint_configuration_commits_only_with_a_majority_of_both_halves() {
    let mut c = Cluster::new(3);
    c.add_empty_node(4);
    c.add_empty_node(5);
    c.elect(1);
    c.node(1).propose(b"before".to_vec()).unwrap();
    c.settle();
    for cut in [2, 3] {
        c.isolate(cut);
    }
    let commit = c.node(1).commit_index();
    let joint = MembershipChange {
        ops: vec![add_voter(4), add_voter(5), ChangeOp::Remove { id: 2 }, ChangeOp::Remove { id: 3 }],
    };
    let proposed = c.node(1).propose_membership(&joint).unwrap();
    c.node(1).propose(b"while joint".to_vec()).unwrap();
    c.flush();
    c.tick_all(3);
    assert!(c.node(1).membership().0.is_joint(), "the leader is in the joint configuration");
    assert_eq!(
        c.node(1).commit_index(),
        commit,
        "the joint entry at {} committed with only the incoming half (1, 4, 5) behind it",
        proposed.index
    );
    assert!(c.node(4).last_index() > proposed.index, "the incoming voters have the entries");
    // The outgoing half back: both majorities now, so it commits and the
    // joint configuration is left.
    c.cut.clear();
    c.tick_all(12);
    assert!(c.node(1).commit_index() > proposed.index + 1, "commits once both halves have a majority");
    assert!(!c.node(1).membership().0.is_joint());
    assert_eq!(c.voters(1), vec![1, 4, 5]);
}

/// Dissertation §4.2.2: a node that the latest configuration entry removed
/// or demoted still campaigns while it does not know that entry committed.
/// Here the leader of {1, 2} demotes itself; 2 never got the entry when 1
/// restarts. 2, in the old configuration, needs 1's vote, refused since 1's
/// log is longer; had 1 waited as a learner, no node could ever be elected.
/// 1 campaigns instead (not counting its own vote: the voters in force are
/// {2}), wins with 2's vote, commits the entry, and hands over to 2.
#[test]
fn a_node_demoted_by_an_entry_not_yet_committed_still_campaigns() {
    let mut c = Cluster::new(2);
    c.elect(1);
    c.node(1).propose(b"x".to_vec()).unwrap();
    c.settle();
    c.isolate(2);
    c.node(1).propose_membership(&MembershipChange { ops: vec![add_learner(1)] }).unwrap();
    c.flush();
    assert!(!c.node(1).membership().0.is_voter(1), "demoted in its own log");
    assert!(c.node(2).membership().0.is_voter(1), "2 never got the entry");
    c.restart(1);
    c.cut.clear();
    c.tick_all(200);
    let leaders = c.leaders();
    assert_eq!(leaders, vec![2], "the cluster elects 2 in the end (leaders now: {leaders:?})");
    assert!(c.node(2).membership().0.is_learner(1));
    assert!(c.node(2).commit_index() >= c.node(2).membership().1, "the demotion committed");
    // Once it knows the demotion committed, 1 campaigns no more.
    let elections = c.node(1).counters().elections;
    c.isolate(2);
    c.tick_all(200);
    assert_eq!(c.node(1).counters().elections, elections, "a learner that knows it campaigned again");
}
