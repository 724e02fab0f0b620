//! The node's logic without IO: a `Replica` driven by hand, persisting at
//! once, as `raft-node`'s glue and the simulator drive it.

use std::collections::BTreeMap;

use raft_core::{Config, Membership, Message, NodeId, RaftNode, Snapshot};
use raft_kv::{
    Command, Effect, KvStore, Replica, ReplicaConfig, RequestKind, ResponseKind, WriteLimits, WriteOp,
    WriteResult,
};

fn config(id: NodeId, members: &[NodeId]) -> ReplicaConfig {
    ReplicaConfig {
        id,
        members: members.iter().map(|&m| (m, format!("10.0.0.{m}:7000"))).collect(),
        cluster_id: "test".into(),
        pid: 0,
        limits: WriteLimits::default(),
        snapshot_entries: 10,
        snapshot_log_bytes: u64::MAX,
        token: 0,
        new_token: 0xfeed,
    }
}

/// A replica of a cluster of `members`, bootstrapped.
fn replica(id: NodeId, members: &[NodeId]) -> Replica<u64> {
    let mut core = Config::new(id);
    core.seed = id;
    let node = RaftNode::bootstrap(core, Membership::with_voters(members.iter().copied()).unwrap()).unwrap();
    Replica::new(config(id, members), node, KvStore::new(100))
}

/// Carries out effects as a driver with an instant disk and snapshot
/// thread would; returns the answers, snapshots asked for and messages.
#[derive(Default)]
struct Driven {
    answers: BTreeMap<u64, ResponseKind>,
    snapshots_taken: Vec<u64>,
    sent: Vec<Message>,
    tokens: Vec<u64>,
}

fn drive(r: &mut Replica<u64>, out: &mut Driven) {
    loop {
        let effects: Vec<_> = r.take_effects().expect("no fatal error").collect();
        if effects.is_empty() {
            return;
        }
        for effect in effects {
            match effect {
                Effect::Persist(batch) => r.persisted(batch.id),
                Effect::Send(m) => out.sent.push(m),
                Effect::Answer(handle, answer) => {
                    assert!(out.answers.insert(handle, answer).is_none(), "request {handle} answered twice");
                }
                Effect::TakeSnapshot { kv, meta } => {
                    out.snapshots_taken.push(meta.index);
                    let data_bytes = kv.snapshot_image().unwrap().len();
                    r.snapshot_taken(Snapshot { meta, data_bytes });
                }
                Effect::TokenLearned(token) => out.tokens.push(token),
                Effect::Compact(_)
                | Effect::SendSnapshotChunk { .. }
                | Effect::SaveSnapshotChunk { .. }
                | Effect::CheckSnapshot(_)
                | Effect::SnapshotRejected { .. }
                | Effect::MembersChanged(_)
                | Effect::Removed { .. } => {}
            }
        }
    }
}

fn put(seq: u64, key: &str, value: &str) -> RequestKind {
    RequestKind::Write(Command {
        client_id: 7,
        seq,
        op: WriteOp::Put { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec() },
    })
}

fn leader_of_one() -> (Replica<u64>, Driven) {
    let mut r = replica(1, &[1]);
    let mut out = Driven::default();
    for _ in 0..40 {
        r.tick();
        drive(&mut r, &mut out);
    }
    assert!(r.node().is_leader(), "a one-voter cluster elects itself");
    (r, out)
}

#[test]
fn a_write_is_answered_once_applied_and_reads_see_it() {
    let (mut r, mut out) = leader_of_one();
    r.client(put(1, "x", "5"), 1);
    drive(&mut r, &mut out);
    let ResponseKind::Written { index, result: WriteResult::Done { existed: false } } = out.answers[&1]
    else {
        panic!("the write answered {:?}", out.answers[&1]);
    };
    let entry = r.node().entry(index).map(raft_kv::describe_entry);
    assert_eq!(entry.as_deref(), Some("SET x=5"), "the answer names the write's entry, {index}");
    r.client(RequestKind::Get { key: b"x".to_vec(), stale: false }, 2);
    drive(&mut r, &mut out);
    let applied = r.kv().applied();
    assert!(applied >= index, "applied {applied}, the write is at {index}");
    assert_eq!(out.answers[&2], ResponseKind::Value { index: applied, value: Some(b"5".to_vec()) });
    r.client(put(1, "x", "6"), 3);
    drive(&mut r, &mut out);
    assert_eq!(out.answers[&3], out.answers[&1], "a retried write answers its first result, applied once");
    assert_eq!(r.kv().get(b"x"), Some(&b"5"[..]));
    let counts = r.proposal_counts();
    let commit = r.node().commit_index();
    assert_eq!((counts.committed, counts.applied, counts.failed), (commit, commit, 0), "{counts:?}");
}

#[test]
fn the_first_leader_commits_a_cluster_token_and_learns_it() {
    let (r, out) = leader_of_one();
    assert_eq!(out.tokens, vec![0xfeed]);
    assert_eq!(r.status().cluster_token, 0xfeed);
}

#[test]
fn a_follower_names_the_leader_and_its_address() {
    let mut r = replica(2, &[1, 2, 3]);
    let mut out = Driven::default();
    let heartbeat = Message {
        from: 1,
        to: 2,
        term: 1,
        body: raft_core::MessageBody::Heartbeat { commit: 0, read_round: 0 },
    };
    r.step(heartbeat);
    r.client(put(1, "x", "5"), 1);
    r.client(RequestKind::Get { key: b"x".to_vec(), stale: false }, 2);
    drive(&mut r, &mut out);
    let expected = ResponseKind::NotLeader { leader: Some((1, "10.0.0.1:7000".to_string())) };
    assert_eq!(out.answers[&1], expected);
    assert_eq!(out.answers[&2], expected);
    r.client(RequestKind::Get { key: b"x".to_vec(), stale: true }, 3);
    drive(&mut r, &mut out);
    assert_eq!(
        out.answers[&3],
        ResponseKind::Value { index: r.kv().applied(), value: None },
        "a stale read is served by anyone"
    );
}

#[test]
fn writes_are_refused_while_the_disk_is_full_and_taken_again_after() {
    let (mut r, mut out) = leader_of_one();
    r.set_disk_full(Some("no space left on /data".into()));
    r.client(put(1, "x", "5"), 1);
    drive(&mut r, &mut out);
    assert!(
        matches!(&out.answers[&1], ResponseKind::Error { message } if message.contains("no space left")),
        "{:?}",
        out.answers[&1]
    );
    r.set_disk_full(None);
    r.client(put(1, "x", "5"), 2);
    drive(&mut r, &mut out);
    assert!(matches!(out.answers[&2], ResponseKind::Written { .. }));
}

#[test]
fn a_write_over_the_limits_is_refused_for_good() {
    let (mut r, mut out) = leader_of_one();
    r.client(put(1, "x", &"v".repeat((1 << 20) + 1)), 1);
    drive(&mut r, &mut out);
    assert!(matches!(out.answers[&1], ResponseKind::Invalid { .. }), "{:?}", out.answers[&1]);
}

#[test]
fn a_snapshot_is_taken_every_snapshot_entries_and_compacts_the_log() {
    let (mut r, mut out) = leader_of_one();
    for seq in 1..=25 {
        r.client(put(seq, &format!("k{seq}"), "v"), seq);
        drive(&mut r, &mut out);
    }
    assert!(out.snapshots_taken.len() >= 2, "snapshots at {:?}", out.snapshots_taken);
    assert!(out.snapshots_taken.windows(2).all(|w| w[1] >= w[0] + 10), "{:?}", out.snapshots_taken);
    let last = *out.snapshots_taken.last().unwrap();
    assert_eq!(r.node().snapshot_meta().index, last, "the core compacted to the last snapshot");
    assert_eq!(r.kv().len(), 25);
}

#[test]
fn writes_in_flight_when_leadership_is_lost_are_answered_unknown() {
    let mut r = replica(1, &[1, 2, 3]);
    let mut out = Driven::default();
    r.tick();
    // Elect node 1 by hand: campaign, then votes from 2.
    for _ in 0..80 {
        r.tick();
        drive(&mut r, &mut out);
        let asks: Vec<Message> = out.sent.drain(..).collect();
        for m in asks {
            if let raft_core::MessageBody::VoteRequest { pre_vote, .. } = m.body {
                r.step(Message {
                    from: m.to,
                    to: 1,
                    term: m.term,
                    body: raft_core::MessageBody::VoteResponse { pre_vote, granted: true },
                });
            }
        }
        drive(&mut r, &mut out);
        if r.node().is_leader() {
            break;
        }
    }
    assert!(r.node().is_leader());
    r.client(put(1, "x", "5"), 1);
    drive(&mut r, &mut out);
    assert!(!out.answers.contains_key(&1), "not committed: no follower acknowledged it");
    assert_eq!(r.proposal_counts().failed, 0);
    // A higher term from a peer: node 1 steps down.
    let term = r.node().term() + 1;
    r.step(Message {
        from: 2,
        to: 1,
        term,
        body: raft_core::MessageBody::Heartbeat { commit: 0, read_round: 0 },
    });
    drive(&mut r, &mut out);
    assert!(
        matches!(&out.answers[&1], ResponseKind::Unknown { reason } if reason.contains("leadership lost")),
        "{:?}",
        out.answers.get(&1)
    );
    assert_eq!(r.pending_requests(), 0);
    assert_eq!(r.proposal_counts().failed, 1, "the write lost with the leadership is a failed proposal");
}
