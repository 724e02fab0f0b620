//! Terms and indexes near the top of their range: whatever a peer sends,
//! the state a node makes durable is one that `RaftNode::restart` takes.
//! (Found by `fuzz_step.rs`: at the old bound, a peer's term or snapshot
//! index equal to the durable limit was accepted, and the node's own next
//! election or blank entry went one past it, so the node could never
//! restart after a crash.)

use raft_core::*;

/// Executes a lone node's actions the way a driver does, into `durable`.
fn drive(node: &mut RaftNode, durable: &mut DurableState) {
    loop {
        let actions = node.take_actions();
        if actions.is_empty() {
            return;
        }
        for action in actions {
            match action {
                Action::Persist(b) => {
                    if let Some(s) = &b.snapshot {
                        durable.snapshot = Some(Snapshot::clone(s));
                        durable.entries.clear();
                    }
                    if let Some(first) = b.entries.first() {
                        durable.entries.retain(|e| e.index < first.index);
                        durable.entries.extend(b.entries.iter().cloned());
                    }
                    if let Some(hs) = b.hard_state {
                        durable.hard_state = hs;
                    }
                    node.persisted(b.id);
                }
                Action::CheckSnapshot(s) => node.install_snapshot(s),
                Action::Apply(e) => node.applied(e.last().expect("non-empty").index),
                Action::ApplySnapshot(s) => node.applied(s.meta.index),
                _ => {}
            }
        }
    }
}

/// The first membership of a cluster of `ids`.
fn voters(ids: &[NodeId]) -> raft_core::Membership {
    raft_core::Membership::with_voters(ids.iter().copied()).unwrap()
}

fn from_2(term: Term, body: MessageBody) -> Message {
    Message { from: 2, to: 1, term, body }
}

#[test]
fn a_peer_term_at_the_durable_limit_cannot_make_a_node_unrestartable() {
    let config = Config::new(1);
    for term in [TERM_MAX, PEER_TERM_MAX + 1, PEER_TERM_MAX] {
        let mut node = RaftNode::bootstrap(config.clone(), voters(&[1, 2, 3])).unwrap();
        let mut durable = DurableState::default();
        node.step(from_2(term, MessageBody::Heartbeat { commit: 0, read_round: 0 }));
        node.step(from_2(term, MessageBody::TimeoutNow));
        drive(&mut node, &mut durable);
        if term > PEER_TERM_MAX {
            assert_eq!(node.term(), 0, "term {term} from a peer was taken");
        } else {
            assert_eq!(node.term(), term + 1, "the leader's TimeoutNow at term {term} started an election");
        }
        RaftNode::restart(config.clone(), durable)
            .unwrap_or_else(|e| panic!("after a peer's term {term}, the node cannot restart: {e}"));
    }
}

#[test]
fn a_snapshot_at_the_index_limit_cannot_make_a_node_unrestartable() {
    let config = Config::new(1);
    for index in [INDEX_MAX, PEER_INDEX_MAX + 1, PEER_INDEX_MAX] {
        let mut node = RaftNode::bootstrap(config.clone(), voters(&[1, 2])).unwrap();
        let mut durable = DurableState::default();
        let meta = SnapshotMeta {
            index,
            term: 1,
            membership: raft_core::Membership::with_voters([1, 2]).unwrap().into(),
        };
        node.step(from_2(1, MessageBody::Snapshot { meta, offset: 0, data: vec![], done: true }));
        drive(&mut node, &mut durable);
        if index > PEER_INDEX_MAX {
            assert_eq!(node.last_index(), 1, "a snapshot at {index} from a peer was taken");
        } else {
            node.step(from_2(1, MessageBody::TimeoutNow));
            drive(&mut node, &mut durable);
            node.step(from_2(2, MessageBody::VoteResponse { pre_vote: false, granted: true }));
            drive(&mut node, &mut durable);
            assert!(node.is_leader(), "node 1 was not elected after the snapshot at {index}");
            assert_eq!(
                node.last_index(),
                index + 1,
                "the new leader's blank entry after the snapshot at {index}"
            );
        }
        RaftNode::restart(config.clone(), durable)
            .unwrap_or_else(|e| panic!("after a snapshot at {index}, the node cannot restart: {e}"));
    }
}

/// Found by `fuzz_step.rs`: a batch's durability was matched on its last
/// (index, term) alone. A peer that breaks Log Matching (same last entry,
/// another entry before it) then got entries applied that were not durable.
#[test]
fn a_batch_written_before_a_truncation_makes_durable_only_what_lies_below_it() {
    fn append(e: &[(Index, Term)]) -> Message {
        let entries =
            e.iter().map(|&(index, term)| Entry { term, index, payload: EntryPayload::Blank }).collect();
        Message {
            from: 1,
            to: 2,
            term: 2,
            body: MessageBody::Append { prev_log_index: 0, prev_log_term: 0, leader_commit: 0, entries },
        }
    }
    let persist = |n: &mut RaftNode| {
        n.take_actions().into_iter().find_map(|a| match a {
            Action::Persist(b) => Some(b),
            _ => None,
        })
    };
    // (A node waiting to be added: its log is empty, as the appends assume.)
    let mut n = RaftNode::new(Config::new(2)).unwrap();
    n.step(append(&[(1, 1), (2, 2)]));
    let first = persist(&mut n).expect("a batch");
    n.step(append(&[(1, 2), (2, 2)]));
    let _second = persist(&mut n).expect("a batch");
    n.persisted(first.id); // only (1,1),(2,2) is durable
    n.step(Message { from: 1, to: 2, term: 2, body: MessageBody::Heartbeat { commit: 2, read_round: 0 } });
    let applied: Vec<Entry> = n
        .take_actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Apply(entries) => Some(entries),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(applied.is_empty(), "applied entries that are not durable here: {applied:?}");
    assert_eq!(n.status().stable_index, 0);
}
