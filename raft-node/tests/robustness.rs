//! Real `raft-node` processes under abuse and faults (issue 10): hostile
//! peers, oversized requests, greedy clients, damaged disks. Each test shows
//! the cluster still serving, or the node refusing with its sentence, and no
//! acknowledged write lost. Every wait is a condition polled until a deadline.

mod common;

use common::*;
use raft_core::{Message, MessageBody};
use raft_net::wire::Hello;

/// Case 9: a peer sends a transfer vote request for term 2^64-1 and
/// TimeoutNow messages to every node. Before, every node moved to that term
/// (no election could succeed after) and each TimeoutNow forced an election.
/// Now both are refused: the terms stay where they were and the cluster
/// goes on electing and serving.
#[test]
fn a_peer_claiming_the_top_term_or_forcing_elections_moves_nobody() {
    let c = Cluster::start(3, &[]);
    runtime().block_on(async {
        let first = wait_until("a leader", Duration::from_secs(15), async || leader(&c).await).await;
        let token = wait_for_identity(&c).await;
        write_keys(&c, "before", 5).await;
        let follower = (1..=3).find(|&id| id != first.id).unwrap();
        let impostor = (1..=3).find(|&id| id != first.id && id != follower).unwrap();
        for target in 1..=3u64 {
            let from = if target == impostor { follower } else { impostor };
            let mut hello = Hello::new(CLUSTER_ID, Sender::Peer(from));
            hello.cluster_token = token;
            let (mut link, _) = transport::connect_with(&c.addrs[&target], hello).await.unwrap();
            let term = statuses(&c).await.iter().map(|s| s.term).max().unwrap();
            let vote = MessageBody::VoteRequest {
                pre_vote: false,
                last_log_index: u64::MAX,
                last_log_term: u64::MAX,
                transfer: true,
            };
            for (term, body) in [(u64::MAX, vote.clone()), (term + 5, vote), (term, MessageBody::TimeoutNow)]
            {
                transport::send_frame(&mut link, &Message { from, to: target, term, body }).await.unwrap();
            }
            for _ in 0..20 {
                let m = Message { from, to: target, term, body: MessageBody::TimeoutNow };
                transport::send_frame(&mut link, &m).await.unwrap();
            }
        }
        // Whatever the hostile peer sent has been taken in by now if the
        // node still answers a write after it (messages are handled in order
        // per connection, and the write goes through the same event loop).
        write_keys(&c, "after", 5).await;
        let all = statuses(&c).await;
        assert_eq!(all.len(), 3, "a node stopped answering\n{}", c.logs());
        for s in &all {
            assert_eq!(
                s.term,
                first.term,
                "node {} moved from term {} to {}\n{}",
                s.id,
                first.term,
                s.term,
                c.logs()
            );
            assert_eq!(s.leader, Some(first.id), "node {} lost its leader\n{}", s.id, c.logs());
        }
        assert_keys(&c, "before", 5).await;
        assert_keys(&c, "after", 5).await;
    });
}
