//! Persist before you count: a candidate's own vote and a leader's own
//! entries count towards a quorum only once the driver has reported them
//! durable. Each test holds one persist batch back and shows that the
//! quorum waits for it. (Found missing by a mutation sweep: neither
//! mutation was caught by a named test, and the first by no simulator seed
//! in 33,000.)

use raft_core::*;

fn node(id: NodeId) -> RaftNode {
    let mut config = Config::new(id);
    config.pre_vote = false;
    config.check_quorum = false;
    RaftNode::bootstrap(config, Membership::with_voters([1, 2, 3]).unwrap()).unwrap()
}

/// Takes the node's actions: persist batches are returned, not reported,
/// messages collected; nothing else matters here.
fn take(node: &mut RaftNode) -> (Vec<PersistBatch>, Vec<Message>) {
    let (mut batches, mut sent) = (Vec::new(), Vec::new());
    for action in node.take_actions() {
        match action {
            Action::Persist(b) => batches.push(b),
            Action::Send(m) => sent.push(m),
            _ => {}
        }
    }
    (batches, sent)
}

/// Reports every batch durable, in order, and takes the actions that follow.
fn persist_all(node: &mut RaftNode, batches: Vec<PersistBatch>) -> (Vec<PersistBatch>, Vec<Message>) {
    for b in batches {
        node.persisted(b.id);
    }
    take(node)
}

/// Node 2's vote for node 1 in `term`.
fn vote_from_2(term: Term) -> Message {
    Message { from: 2, to: 1, term, body: MessageBody::VoteResponse { pre_vote: false, granted: true } }
}

#[test]
fn a_candidate_counts_its_own_vote_only_once_its_term_and_vote_are_durable() {
    let mut n = node(1);
    let (batches, _) = take(&mut n);
    let (_, _) = persist_all(&mut n, batches); // the bootstrap entry
    n.campaign();
    let (vote_batch, asks) = take(&mut n);
    assert!(asks.iter().any(|m| matches!(m.body, MessageBody::VoteRequest { .. })), "{asks:?}");
    let term = n.term();
    // Node 2's vote arrives before node 1's own term and vote are durable:
    // one vote of three, so node 1 must not lead yet.
    n.step(vote_from_2(term));
    let _ = take(&mut n);
    assert!(!n.is_leader(), "elected on a vote of its own that a crash could lose");
    // Durable now: its own vote counts, and with node 2's it wins.
    let _ = persist_all(&mut n, vote_batch);
    assert!(n.is_leader(), "not elected once its vote was durable");
}

#[test]
fn a_leader_counts_its_own_entries_only_once_they_are_durable() {
    let mut n = node(1);
    let (batches, _) = take(&mut n);
    let _ = persist_all(&mut n, batches);
    n.campaign();
    let (batches, _) = take(&mut n);
    let _ = persist_all(&mut n, batches);
    let term = n.term();
    n.step(vote_from_2(term));
    let (batches, _) = take(&mut n);
    let _ = persist_all(&mut n, batches); // the blank entry
    assert!(n.is_leader());
    let ack = |index| Message {
        from: 2,
        to: 1,
        term,
        body: MessageBody::AppendResponse(AppendResponse::Accepted { match_index: index }),
    };
    n.step(ack(n.last_index()));
    let _ = take(&mut n);
    let committed = n.commit_index();
    assert_eq!(committed, n.last_index(), "the blank entry commits with node 2");
    // Two commands, each in a batch of its own; node 2 acknowledges both.
    // Node 1 reports the first batch durable, not the second: two durable
    // copies of x, one of y. x commits, y must not.
    let x = n.propose(b"x".to_vec()).unwrap();
    let (first, _) = take(&mut n);
    let y = n.propose(b"y".to_vec()).unwrap();
    let (second, _) = take(&mut n);
    n.step(ack(y.index));
    let _ = take(&mut n);
    assert_eq!(
        n.commit_index(),
        committed,
        "committed on one durable copy: the leader counted its unsynced log"
    );
    let _ = persist_all(&mut n, first);
    assert_eq!(
        n.commit_index(),
        x.index,
        "y committed with only node 2's copy durable (the leader counted its log past what was reported durable)"
    );
    let _ = persist_all(&mut n, second);
    assert_eq!(n.commit_index(), y.index, "not committed once the leader's copy was durable");
}
